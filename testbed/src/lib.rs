//! mcrecover's testbed: throwaway REAL systemd instances (PID 1 of new pid+mount+net+uts
//! namespaces) with podman configured for the machine, the production addresses on loopback,
//! optionally the real quadlet generator and a rootless platform user, locally made images and a
//! run-time test CA. Used by the end-to-end tests and the demo (`testbed` binary).
//!
//! ```no_run
//! use mcrecover_testbed::{Sandbox, SandboxOptions};
//! let sb = Sandbox::boot(SandboxOptions::default())?;
//! sb.run_ok(&["systemctl", "is-system-running"])?;
//! # Ok::<(), mcrecover_testbed::TestbedError>(())
//! ```

mod ca;
mod error;
mod host;
mod images;
mod sandbox;

pub use ca::TestCa;
pub use error::TestbedError;
pub use host::{
    check_prerequisites, e2e_gate, e2e_required, ensure_host_user, quadlet_binary, target_dir,
    testbed_dir, trixie_missing, trixie_rootfs, workspace_root, RootlessUser, QUADLET_ENV,
    REQUIRE_E2E_ENV, STANDIN_ENV, TRIXIE_BUILD_COMMAND, TRIXIE_ROOTFS_ENV,
};
pub use images::{
    metacircular_service, metacircular_srv_dirs, shared_libraries, standin_binary, ImageSet,
    ImageSpec, StandinService, INDEX_HTML, MCIAS_SERVICE, METACIRCULAR_REGISTRY,
    METACIRCULAR_SERVICES,
};
pub use sandbox::{
    process_start, processes_in_namespace, reap_stale, Base, Sandbox, SandboxInfo, SandboxOptions,
    CIDFILE_DROPIN, CONTAINERS_CONF, CONTAINERS_CONF_TRIXIE, RIFT_ADDRESSES, SVC_ADDRESS,
};
