//! A throwaway REAL systemd: PID 1 of new pid+mount+net+uts namespaces, booted to a minimal
//! `sandbox.target` (journald + dbus), with its own `/run`, `/tmp`, `/srv`, `/etc/containers`,
//! loopback addresses 192.168.88.181 + 100.95.252.120 (rift's; [`SandboxOptions::addresses`]),
//! podman configured for the machine, and optionally the real quadlet generator and a rootless
//! platform user. Dropping a [`Sandbox`] SIGKILLs its PID 1 (which ends every process in it) and
//! removes its host-side state. Two sandboxes (two nodes) can be joined by a network
//! ([`Sandbox::link`]).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::ca::TestCa;
use crate::host::{check_output, ensure_host_user, render, testbed_dir, RootlessUser};
use crate::images::ImageSet;
use crate::TestbedError;

const INIT_SCRIPT: &str = include_str!("init.sh");
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Run by `nsenter` inside the sandbox before `argv`: joins the sandbox's `testbed-exec` cgroup
/// (while still in the host's cgroup namespace, which can see both ends), then the sandbox's
/// cgroup namespace, so commands see the same `/proc/self/cgroup` paths as the sandbox's systemd.
const EXEC_WRAPPER: &str =
    "echo 0 > /sys/fs/cgroup/testbed-exec/cgroup.procs 2>/dev/null; exec nsenter -t 1 -C -- \"$@\"";
const POLL: Duration = Duration::from_millis(100);

/// `containers.conf` for podman inside a sandbox (rootful and rootless): no pids controller in the
/// sandbox's cgroup v2 view, bounded ulimits (no CAP_SYS_RESOURCE), runc (crun raises MEMLOCK).
pub const CONTAINERS_CONF: &str = "[containers]\npids_limit = 0\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\n[engine]\nruntime = \"runc\"\nevents_logger = \"journald\"\n";

/// `containers.conf` for podman 5.4 on the [`Base::Trixie`] root filesystem: crun (its default
/// runtime; runc is not installed there), no pids controller, bounded ulimits.
pub const CONTAINERS_CONF_TRIXIE: &str = "[containers]\npids_limit = 0\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\n[engine]\nevents_logger = \"journald\"\n";

/// The root filesystem a sandbox's systemd boots on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// The host's own root filesystem (Debian bookworm here: systemd 252, podman 4.3 with runc,
    /// the fetched quadlet 5.4 generator plus the cidfile drop-in), with tmpfs over `/run`, `/tmp`,
    /// `/srv`, `/etc/containers`. The default.
    #[default]
    Host,
    /// A Debian trixie root filesystem built by `scripts/build-trixie-rootfs` (systemd 257, podman
    /// 5.4 with crun and pasta, its NATIVE quadlet generator; no cidfile drop-in): the read-only
    /// lower layer of an overlay whose upper layer is a tmpfs of this sandbox, entered with
    /// `pivot_root`. Rootful podman storage stays on the host's disk (bind-mounted state dir:
    /// overlay storage cannot live on overlayfs); the rootless user (or, in a rootful sandbox,
    /// `mcp`, the example's platform user that rootful hooks and exec checks run as) is added to
    /// the sandbox's copies of `/etc/passwd`, `group`, `shadow`, `subuid`, `subgid`.
    Trixie(PathBuf),
}

impl Base {
    /// The trixie base with the root filesystem [`crate::trixie_rootfs`] finds, or a
    /// [`TestbedError::Prerequisite`] naming the command that builds it.
    pub fn trixie() -> Result<Base, TestbedError> {
        crate::host::trixie_rootfs()
            .map(Base::Trixie)
            .ok_or_else(|| {
                TestbedError::Prerequisite(crate::host::trixie_missing().unwrap_or_default())
            })
    }

    /// `host` or `trixie` (the `testbed up --base` names).
    pub fn name(&self) -> &'static str {
        match self {
            Base::Host => "host",
            Base::Trixie(_) => "trixie",
        }
    }

    /// The base named `host` or `trixie`.
    pub fn from_name(name: &str) -> Result<Base, TestbedError> {
        match name {
            "host" => Ok(Base::Host),
            "trixie" => Base::trixie(),
            other => Err(TestbedError::Sandbox(format!(
                "unknown base {other:?} (host or trixie)"
            ))),
        }
    }

    /// Whether quadlet is the base's own (trixie) rather than a copied-in generator.
    pub fn native_quadlet(&self) -> bool {
        matches!(self, Base::Trixie(_))
    }
}

/// rift's production addresses, on every sandbox's loopback unless
/// [`SandboxOptions::addresses`] says otherwise.
pub const RIFT_ADDRESSES: [&str; 2] = ["192.168.88.181", "100.95.252.120"];

/// The address the testbed gives node `svc` (where MCIAS runs) in a two-node test: one of the
/// platform's tailnet addresses next to rift's `100.95.252.120` (the real one is not in the
/// public documentation; `examples/two-nodes/` uses the same).
pub const SVC_ADDRESS: &str = "100.95.252.121";

/// The harness-only drop-in fixing quadlet 5.x units on podman 4.3 (stale `%t/%N.cid`), installed
/// for all system services and, when there is a rootless user, all user services.
pub const CIDFILE_DROPIN: &str = "[Service]\nExecStartPre=-/bin/rm -f %t/%N.cid\n";

/// How to build a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// The root filesystem to boot ([`Base::Host`] by default).
    pub base: Base,
    /// The platform user for rootless podman (created on the host if missing; home on the
    /// sandbox's `/srv` tmpfs, owned by it, with `~/.config/containers/storage.conf`).
    pub rootless_user: Option<RootlessUser>,
    /// A quadlet binary to install as the system AND user generator (host base only; ignored on
    /// [`Base::Trixie`], whose podman has its own generator).
    pub quadlet_generator: Option<PathBuf>,
    /// Directories to create under `/srv` (relative, e.g. `mcns`, `mcr/web`); each gets
    /// `.standin/ca.pem` + `.standin/ca.key`; owned by the rootless user when there is one.
    pub srv_dirs: Vec<String>,
    /// Hostname inside (own UTS namespace; `/etc/hostname` is bind-mounted).
    pub hostname: String,
    /// Limit for `systemctl is-system-running` to report `running`.
    pub boot_timeout: Duration,
    /// Label used in the state directory's name (tests: the test's name).
    pub name: String,
    /// The node's addresses, put on its loopback (IPv4 `/32`, IPv6 `/128`): what its services
    /// publish ports on and, over a [`Sandbox::link`], what other nodes reach it at. Default
    /// [`RIFT_ADDRESSES`].
    pub addresses: Vec<String>,
    /// The test CA to use instead of a fresh one: sandboxes of one platform (several nodes)
    /// share one, as the platform's nodes share its CA, so each node's checks trust the
    /// others' stand-ins. `None`: a fresh CA per sandbox.
    pub ca: Option<TestCa>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            base: Base::Host,
            rootless_user: None,
            quadlet_generator: None,
            srv_dirs: Vec::new(),
            hostname: "rift".into(),
            boot_timeout: Duration::from_secs(60),
            name: "sandbox".into(),
            addresses: RIFT_ADDRESSES.iter().map(|a| (*a).to_string()).collect(),
            ca: None,
        }
    }
}

impl SandboxOptions {
    /// The example platform's shape: rootless `mcp` (850, `/srv/mcp`), every stand-in `/srv` dir,
    /// and the quadlet generator when [`crate::quadlet_binary`] finds one.
    pub fn metacircular(name: &str) -> Self {
        Self {
            rootless_user: Some(RootlessUser::mcp()),
            quadlet_generator: crate::host::quadlet_binary(),
            srv_dirs: crate::images::metacircular_srv_dirs(),
            name: name.into(),
            ..Self::default()
        }
    }

    /// [`SandboxOptions::metacircular`] on `base`: on [`Base::Trixie`] the native quadlet generator
    /// is used (no binary is copied in).
    pub fn metacircular_on(name: &str, base: Base) -> Self {
        let mut opts = Self::metacircular(name);
        if base.native_quadlet() {
            opts.quadlet_generator = None;
        }
        opts.base = base;
        opts
    }

    /// Whether the sandbox will have a quadlet generator (copied in, or the base's own).
    pub fn has_quadlet(&self) -> bool {
        self.base.native_quadlet() || self.quadlet_generator.is_some()
    }
}

/// What identifies a running sandbox; `state.json` in its state directory, and what `testbed up`
/// prints.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SandboxInfo {
    /// Host PID of the sandbox's systemd (its namespace PID 1).
    pub pid: u32,
    /// That process's start time (clock ticks since boot), guards against PID reuse.
    pub pid_start: u64,
    /// `pid:[inode]` of the sandbox's PID namespace.
    pub pid_namespace: String,
    /// D-Bus address of the sandbox's system bus, usable from the host as root.
    pub bus_address: String,
    /// Host-side state directory (seed files, rootful podman storage, logs).
    pub state_dir: PathBuf,
    /// Hostname inside.
    pub hostname: String,
    /// The rootless platform user, if any.
    pub rootless_user: Option<RootlessUser>,
    /// Whether a quadlet generator is there (installed, or the base's own).
    pub quadlet: bool,
    /// The root filesystem it booted (`host` when absent from an older `state.json`).
    #[serde(default)]
    pub base: Base,
    /// The `/srv` directories created.
    pub srv_dirs: Vec<String>,
    /// Host path of the CA certificate (also at `/srv/mcp/ca.pem` inside).
    pub ca_pem: PathBuf,
    /// Owning process (PID, start time) of a sandbox that must die with it; `None` once detached.
    pub owner: Option<(u32, u64)>,
    /// The sandbox's cgroup, relative to the host's cgroup v2 root (the root of its cgroup
    /// namespace: its systemd's `/system.slice` etc. live below it).
    pub cgroup: String,
    /// The node's addresses on its loopback ([`RIFT_ADDRESSES`] when absent from an older
    /// `state.json`).
    #[serde(default = "rift_addresses")]
    pub addresses: Vec<String>,
}

fn rift_addresses() -> Vec<String> {
    RIFT_ADDRESSES.iter().map(|a| (*a).to_string()).collect()
}

/// A running sandbox. Dropping it tears it down (SIGKILL of its PID 1, state dir removed), also
/// during a panic; [`Sandbox::detach`] leaves it running.
#[derive(Debug)]
pub struct Sandbox {
    info: SandboxInfo,
    opts: SandboxOptions,
    unshare: Option<Child>,
    ca: TestCa,
    detached: bool,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> TestbedError + 'a {
    move |e| TestbedError::io(action, path, e)
}

fn mkdir(path: &Path) -> Result<(), TestbedError> {
    std::fs::create_dir_all(path).map_err(io("create dir", path))
}

fn write_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), TestbedError> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    std::fs::write(path, contents).map_err(io("write", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
}

fn chown(path: &Path, uid: u32) -> Result<(), TestbedError> {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).map_err(io("chown", path))
}

/// Start time (field 22 of `/proc/PID/stat`) of a live process.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn parent_pid(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Host PIDs of every process whose PID namespace is `ns` (`pid:[inode]`). Namespace inode
/// numbers are reused once a namespace is gone: after a teardown, check the exact processes
/// (PID + [`process_start`]) seen before it rather than the namespace.
pub fn processes_in_namespace(ns: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                .is_ok_and(|l| l.to_string_lossy() == ns)
        })
        .collect()
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            let pid: u32 = name.parse().ok()?;
            (parent_pid(name)? == parent).then_some(pid)
        })
        .collect()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn sandboxes_dir() -> PathBuf {
    testbed_dir().join("sandboxes")
}

/// Kills sandboxes whose owning process is gone (a test binary that was killed) and removes their
/// state. Detached sandboxes (`testbed up`) are left alone. Returns how many were reaped.
pub fn reap_stale() -> usize {
    let Ok(dir) = std::fs::read_dir(sandboxes_dir()) else {
        return 0;
    };
    let mut reaped = 0;
    for entry in dir.filter_map(Result::ok) {
        let state = entry.path().join("state.json");
        let Ok(text) = std::fs::read_to_string(&state) else {
            continue;
        };
        let Ok(info) = serde_json::from_str::<SandboxInfo>(&text) else {
            continue;
        };
        let Some((owner, owner_start)) = info.owner else {
            continue;
        };
        if process_start(owner) == Some(owner_start) {
            continue;
        }
        kill_info(&info);
        let _ = std::fs::remove_dir_all(entry.path());
        reaped += 1;
    }
    reaped
}

/// Where the host mounts the cgroup v2 hierarchy (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`).
fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if !right.starts_with("cgroup2 ") {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Removes a dead sandbox's cgroup tree (depth first; cgroup directories go with `rmdir`).
fn remove_cgroup(rel: &str) {
    if rel.is_empty() || rel.contains("..") {
        return;
    }
    fn rmdir_tree(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_tree(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    if let Some(root) = cgroup2_mount() {
        rmdir_tree(&root.join(rel));
    }
}

fn kill_info(info: &SandboxInfo) {
    if process_start(info.pid) == Some(info.pid_start) {
        if let Ok(pid) = i32::try_from(info.pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_start(info.pid) == Some(info.pid_start) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    remove_cgroup(&info.cgroup);
}

/// The trixie root filesystem's `/etc/passwd`, `group`, `shadow`, `subuid` and `subgid` plus
/// `user` (uid = gid, home, no login, member of `systemd-journal` so rootless `podman logs` and
/// `journalctl --user` work, the same subordinate ranges as on the host), written to `dir`: the
/// sandbox's init copies them into its overlay's `/etc` (the root filesystem stays untouched).
fn write_user_db(rootfs: &Path, dir: &Path, user: &RootlessUser) -> Result<(), TestbedError> {
    let read = |name: &str| -> Result<String, TestbedError> {
        let p = rootfs.join("etc").join(name);
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(TestbedError::io("read", &p, e)),
        }
    };
    let (name, uid) = (&user.name, user.uid);
    let not_the_user = |l: &&str| {
        let first = l.split(':').next().unwrap_or("");
        first != name && first != uid.to_string()
    };
    let keep = |text: &str| -> String {
        text.lines()
            .filter(not_the_user)
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let passwd = format!(
        "{}{name}:x:{uid}:{uid}::{}:/usr/sbin/nologin\n",
        keep(&read("passwd")?),
        user.home.display()
    );
    let mut group = String::new();
    for line in read("group")?.lines().filter(not_the_user) {
        if line.starts_with("systemd-journal:") {
            let sep = if line.ends_with(':') { "" } else { "," };
            group.push_str(&format!("{line}{sep}{name}\n"));
        } else {
            group.push_str(line);
            group.push('\n');
        }
    }
    group.push_str(&format!("{name}:x:{uid}:\n"));
    let shadow = format!("{}{name}:!:20000::::::\n", keep(&read("shadow")?));
    let start = 1_000_000 + u64::from(uid) * 65_536;
    let sub = format!("{name}:{start}:65536\n");
    for (file, text, mode) in [
        ("passwd", passwd, 0o644),
        ("group", group, 0o644),
        ("shadow", shadow, 0o640),
        ("subuid", format!("{}{sub}", keep(&read("subuid")?)), 0o644),
        ("subgid", format!("{}{sub}", keep(&read("subgid")?)), 0o644),
    ] {
        write_mode(&dir.join(file), text.as_bytes(), mode)?;
    }
    Ok(())
}

impl Sandbox {
    /// Boots a sandbox and waits until its `systemctl is-system-running` says `running` (or
    /// `degraded`, with a warning on stderr).
    pub fn boot(opts: SandboxOptions) -> Result<Sandbox, TestbedError> {
        crate::host::check_prerequisites()?;
        reap_stale();
        if let Some(user) = &opts.rootless_user {
            if !user.home.starts_with("/srv") {
                return Err(TestbedError::Sandbox(format!(
                    "rootless user's home {} must be under /srv",
                    user.home.display()
                )));
            }
            ensure_host_user(user)?;
        }
        let me = std::process::id();
        let owner_start = process_start(me).unwrap_or(0);
        let label: String = opts
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let state_dir = sandboxes_dir().join(format!(
            "{label}-{me}-{}",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&state_dir);
        mkdir(&state_dir)?;
        for a in &opts.addresses {
            if a.parse::<std::net::IpAddr>().is_err() {
                return Err(TestbedError::Sandbox(format!(
                    "sandbox address {a:?} is not an IP address"
                )));
            }
        }
        let ca = match &opts.ca {
            Some(ca) => ca.clone(),
            None => TestCa::generate()?,
        };
        let mut sandbox = Sandbox {
            info: SandboxInfo {
                pid: 0,
                pid_start: 0,
                pid_namespace: String::new(),
                bus_address: String::new(),
                state_dir: state_dir.clone(),
                hostname: opts.hostname.clone(),
                rootless_user: opts.rootless_user.clone(),
                quadlet: opts.has_quadlet(),
                base: opts.base.clone(),
                srv_dirs: opts.srv_dirs.clone(),
                ca_pem: state_dir.join("ca.pem"),
                owner: Some((me, owner_start)),
                cgroup: format!(
                    "mcrecover-testbed/{}",
                    state_dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
                addresses: opts.addresses.clone(),
            },
            unshare: None,
            ca,
            detached: false,
            opts: SandboxOptions::default(),
        };
        // From here on, Drop cleans up whatever was made.
        sandbox.write_seed(&opts)?;
        sandbox.opts = opts;
        sandbox.start()?;
        Ok(sandbox)
    }

    fn write_seed(&self, opts: &SandboxOptions) -> Result<(), TestbedError> {
        let state = &self.info.state_dir;
        let seed = state.join("seed");
        write_mode(&seed.join("cgroup"), self.info.cgroup.as_bytes(), 0o644)?;
        write_mode(
            &seed.join("hostname"),
            format!("{}\n", opts.hostname).as_bytes(),
            0o644,
        )?;
        let mut addresses = opts.addresses.join("\n");
        addresses.push('\n');
        write_mode(&seed.join("addresses"), addresses.as_bytes(), 0o644)?;
        let run = seed.join("run");
        write_mode(
            &run.join("systemd/system/sandbox.target"),
            b"[Unit]\nDescription=mcrecover testbed sandbox\nRequires=dbus.socket dbus.service\nAfter=dbus.socket dbus.service\n",
            0o644,
        )?;
        let trixie = match &opts.base {
            Base::Host => None,
            Base::Trixie(rootfs) => Some(rootfs),
        };
        if let Some(rootfs) = trixie {
            write_mode(
                &seed.join("rootfs"),
                rootfs.to_string_lossy().as_bytes(),
                0o644,
            )?;
            // No kernel modules can be loaded in a container: the unit would only fail (and the
            // manager report `degraded`).
            mkdir(&run.join("systemd/system"))?;
            let mask = run.join("systemd/system/systemd-modules-load.service");
            std::os::unix::fs::symlink("/dev/null", &mask).map_err(io("symlink", &mask))?;
            // Rootless quadlet units of podman >= 5.3 want podman-user-wait-network-online.service,
            // which polls the SYSTEM's network-online.target for up to 90 s: with nothing pulling
            // that target in, every start of a rootless container unit took 90 s. On a host it is
            // reached at boot; here nothing waits for it (no network manager), so it is reached at
            // once.
            write_mode(
                &run.join("systemd/system/sandbox.target.d/10-network-online.conf"),
                b"[Unit]\nWants=network-online.target\nAfter=network-online.target\n",
                0o644,
            )?;
        } else {
            // Quadlet 5.4 units on podman 4.3 only (see CIDFILE_DROPIN).
            write_mode(
                &run.join("systemd/system/service.d/10-cidfile.conf"),
                CIDFILE_DROPIN.as_bytes(),
                0o644,
            )?;
            write_mode(
                &run.join("systemd/user/service.d/10-cidfile.conf"),
                CIDFILE_DROPIN.as_bytes(),
                0o644,
            )?;
        }
        // The sandbox's journal is on a tmpfs over /var/log/journal (see init.sh); kernel
        // messages are the host's and stay out of it.
        write_mode(
            &run.join("systemd/journald.conf.d/10-testbed.conf"),
            b"[Journal]\nStorage=persistent\nSystemMaxUse=64M\nReadKMsg=no\n",
            0o644,
        )?;
        mkdir(&run.join("containers/systemd"))?;
        if let (Some(quadlet), None) = (&opts.quadlet_generator, trixie) {
            for dest in [
                "systemd/system-generators/podman-system-generator",
                "systemd/user-generators/podman-user-generator",
            ] {
                let to = run.join(dest);
                if let Some(parent) = to.parent() {
                    mkdir(parent)?;
                }
                std::fs::copy(quadlet, &to).map_err(io("copy", quadlet))?;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
                    .map_err(io("chmod", &to))?;
            }
        }
        let etc = seed.join("etc-containers");
        let containers_conf = if trixie.is_some() {
            CONTAINERS_CONF_TRIXIE
        } else {
            CONTAINERS_CONF
        };
        write_mode(
            &etc.join("containers.conf"),
            containers_conf.as_bytes(),
            0o644,
        )?;
        let storage = state.join("storage");
        mkdir(&storage)?;
        write_mode(
            &etc.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"/run/containers/storage\"\n",
                storage.display()
            )
            .as_bytes(),
            0o644,
        )?;
        for f in ["policy.json", "registries.conf"] {
            let from = Path::new("/etc/containers").join(f);
            if from.is_file() {
                std::fs::copy(&from, etc.join(f)).map_err(io("copy", &from))?;
            } else if f == "policy.json" {
                write_mode(
                    &etc.join(f),
                    br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
                    0o644,
                )?;
            }
        }
        mkdir(&etc.join("registries.conf.d"))?;
        mkdir(&etc.join("systemd"))?;
        let srv = seed.join("srv");
        mkdir(&srv)?;
        std::fs::set_permissions(&srv, std::fs::Permissions::from_mode(0o755))
            .map_err(io("chmod", &srv))?;
        let owner = opts.rootless_user.as_ref().map(|u| u.uid);
        let own = |p: &Path| -> Result<(), TestbedError> {
            match owner {
                Some(uid) => chown(p, uid),
                None => Ok(()),
            }
        };
        for dir in &opts.srv_dirs {
            let rel = dir.trim_start_matches("/srv/").trim_matches('/');
            if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
                return Err(TestbedError::Sandbox(format!("bad srv dir {dir:?}")));
            }
            let mut p = srv.clone();
            for comp in rel.split('/') {
                p.push(comp);
                mkdir(&p)?;
                own(&p)?;
            }
            let standin = p.join(".standin");
            mkdir(&standin)?;
            own(&standin)?;
            for (name, body, mode) in [
                ("ca.pem", &self.ca.cert_pem, 0o644),
                ("ca.key", &self.ca.key_pem, 0o600),
            ] {
                let f = standin.join(name);
                write_mode(&f, body.as_bytes(), mode)?;
                own(&f)?;
            }
        }
        let mcp = srv.join("mcp");
        mkdir(&mcp)?;
        if let Some(user) = &opts.rootless_user {
            let home = srv.join(user.home.strip_prefix("/srv").unwrap_or(&user.home));
            mkdir(&home)?;
            let conf = home.join(".config/containers");
            write_mode(
                &conf.join("storage.conf"),
                b"[storage]\ndriver = \"overlay\"\n",
                0o644,
            )?;
            for p in [
                home.clone(),
                home.join(".config"),
                conf.clone(),
                conf.join("storage.conf"),
            ] {
                chown(&p, user.uid)?;
            }
            if trixie.is_none() {
                write_mode(
                    &seed.join("cgroup-owner"),
                    user.uid.to_string().as_bytes(),
                    0o644,
                )?;
            }
            // Quadlet's rootless directory for this uid.
            mkdir(&etc.join(format!("systemd/users/{}", user.uid)))?;
        }
        if let Some(rootfs) = trixie {
            // The platform user exists in a rootful sandbox too, as on the host (where
            // `ensure_host_user` made it): rootful mcrecover runs hooks and exec checks as it.
            let user = opts.rootless_user.clone().unwrap_or_else(RootlessUser::mcp);
            write_user_db(rootfs, &seed.join("etc-base"), &user)?;
        }
        let ca_in_srv = mcp.join("ca.pem");
        write_mode(&ca_in_srv, self.ca.cert_pem.as_bytes(), 0o644)?;
        own(&ca_in_srv)?;
        write_mode(&self.info.ca_pem, self.ca.cert_pem.as_bytes(), 0o644)?;
        // The key too (root only), so that a sandbox attached later (`testbed up --ca-from`)
        // can hand the same CA to another node.
        write_mode(&state.join("ca.key"), self.ca.key_pem.as_bytes(), 0o600)?;
        write_mode(&state.join("init.sh"), INIT_SCRIPT.as_bytes(), 0o755)
    }

    fn start(&mut self) -> Result<(), TestbedError> {
        let state = self.info.state_dir.clone();
        let log_path = state.join("unshare.log");
        let log = File::create(&log_path).map_err(io("create", &log_path))?;
        let log2 = log.try_clone().map_err(io("dup", &log_path))?;
        let init = state.join("init.sh");
        let child = Command::new("setsid")
            .args([
                "unshare",
                "--kill-child=SIGKILL",
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "--net",
                "--uts",
                "/bin/sh",
            ])
            .arg(&init)
            .arg(&state)
            .env_clear()
            .env("PATH", PATH)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| TestbedError::Spawn {
                program: "setsid unshare".into(),
                source,
            })?;
        let unshare_pid = child.id();
        self.unshare = Some(child);
        let deadline = Instant::now() + self.opts.boot_timeout;
        // The namespace's PID 1 is unshare's only child.
        let pid = loop {
            if let Some(pid) = children_of(unshare_pid).first() {
                break *pid;
            }
            self.check_unshare(&log_path)?;
            if Instant::now() > deadline {
                return Err(self.timeout("the namespace PID 1", &tail(&log_path)));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.info.pid = pid;
        self.info.pid_start = process_start(pid).unwrap_or(0);
        self.info.bus_address = format!("unix:path=/proc/{pid}/root/run/dbus/system_bus_socket");
        self.info.pid_namespace = std::fs::read_link(format!("/proc/{pid}/ns/pid"))
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.save_state()?;
        while !state.join("init-ready").exists() {
            self.check_unshare(&log_path)?;
            if Instant::now() > deadline {
                return Err(self.timeout("the sandbox's init script", &tail(&log_path)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        loop {
            self.check_unshare(&log_path)?;
            let out = self.run(&["systemctl", "is-system-running"]);
            let last = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match last.as_str() {
                "running" => break,
                "degraded" => {
                    let failed = self.run(&["systemctl", "--failed", "--no-legend", "--plain"]);
                    eprintln!(
                        "testbed: sandbox {} booted degraded: {}",
                        state.display(),
                        String::from_utf8_lossy(&failed.stdout).trim()
                    );
                    break;
                }
                _ => {}
            }
            if Instant::now() > deadline {
                let jobs = self.run(&["systemctl", "list-jobs", "--no-legend"]);
                return Err(self.timeout(
                    "`systemctl is-system-running` = running",
                    &format!(
                        "last state {last:?}; jobs: {}",
                        String::from_utf8_lossy(&jobs.stdout).trim()
                    ),
                ));
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    fn timeout(&self, what: &str, detail: &str) -> TestbedError {
        TestbedError::Timeout {
            what: what.into(),
            seconds: self.opts.boot_timeout.as_secs(),
            detail: format!(" ({}): {detail}", self.info.state_dir.display()),
        }
    }

    fn check_unshare(&mut self, log: &Path) -> Result<(), TestbedError> {
        if let Some(child) = self.unshare.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(TestbedError::Sandbox(format!(
                    "namespace init exited ({status}): {}",
                    tail(log)
                )));
            }
        }
        Ok(())
    }

    fn save_state(&self) -> Result<(), TestbedError> {
        let path = self.info.state_dir.join("state.json");
        let text =
            serde_json::to_string_pretty(&self.info).map_err(|source| TestbedError::State {
                path: path.clone(),
                source,
            })?;
        std::fs::write(&path, text).map_err(io("write", &path))
    }

    /// Re-attaches to a running sandbox from its state directory (e.g. one left by `testbed up`).
    /// The returned handle owns it again: dropping it tears the sandbox down.
    pub fn attach(state_dir: &Path) -> Result<Sandbox, TestbedError> {
        let path = state_dir.join("state.json");
        let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
        let info: SandboxInfo =
            serde_json::from_str(&text).map_err(|source| TestbedError::State {
                path: path.clone(),
                source,
            })?;
        if process_start(info.pid) != Some(info.pid_start) {
            return Err(TestbedError::Sandbox(format!(
                "sandbox {} is not running (PID {} gone)",
                state_dir.display(),
                info.pid
            )));
        }
        let key_path = Path::new("/proc")
            .join(info.pid.to_string())
            .join("root/srv/mcp/ca.pem");
        let cert_pem = std::fs::read_to_string(&info.ca_pem)
            .or_else(|_| std::fs::read_to_string(&key_path))
            .unwrap_or_default();
        let key_pem = std::fs::read_to_string(state_dir.join("ca.key")).unwrap_or_default();
        Ok(Sandbox {
            info,
            unshare: None,
            ca: TestCa { cert_pem, key_pem },
            detached: false,
            opts: SandboxOptions::default(),
        })
    }

    /// Leaves the sandbox running after this handle is gone (no owner: [`reap_stale`] will not
    /// touch it) and returns what identifies it; `Sandbox::attach(&info.state_dir)` takes it back.
    pub fn detach(mut self) -> Result<SandboxInfo, TestbedError> {
        self.info.owner = None;
        self.save_state()?;
        self.detached = true;
        Ok(self.info.clone())
    }

    /// Tears the sandbox down now (same as dropping it).
    pub fn shutdown(self) {
        drop(self);
    }

    /// Host PID of the sandbox's systemd.
    pub fn pid(&self) -> u32 {
        self.info.pid
    }

    /// D-Bus address of the sandbox's system bus (`unix:path=/proc/PID/root/run/dbus/system_bus_socket`).
    pub fn bus_address(&self) -> String {
        self.info.bus_address.clone()
    }

    /// The options it was booted with (defaults after [`Sandbox::attach`]).
    pub fn options(&self) -> &SandboxOptions {
        &self.opts
    }

    /// Everything that identifies the sandbox.
    pub fn info(&self) -> &SandboxInfo {
        &self.info
    }

    /// The host-side state directory.
    pub fn state_dir(&self) -> &Path {
        &self.info.state_dir
    }

    /// The sandbox's run-time test CA (also at `/srv/mcp/ca.pem` and `/srv/<dir>/.standin/`).
    /// After [`Sandbox::attach`] of a sandbox booted by an older testbed only `cert_pem` is
    /// known.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The host path of `path_inside` (through `/proc/PID/root`; root only).
    pub fn host_path(&self, path_inside: &str) -> PathBuf {
        Path::new("/proc")
            .join(self.info.pid.to_string())
            .join("root")
            .join(path_inside.trim_start_matches('/'))
    }

    fn command(&self, argv: &[&str]) -> Command {
        let pid = self.info.pid.to_string();
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "-t",
            &pid,
            "-m",
            "-p",
            "-n",
            "-u",
            "--",
            "/bin/sh",
            "-c",
            EXEC_WRAPPER,
        ])
        .arg("testbed-exec")
        .args(argv)
        .env_clear()
        .env("PATH", PATH)
        .env("LANG", "C.UTF-8")
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0")
        .current_dir("/")
        .stdin(Stdio::null());
        cmd
    }

    fn output(mut cmd: Command) -> Output {
        cmd.output().unwrap_or_else(|e| {
            use std::os::unix::process::ExitStatusExt;
            Output {
                status: std::process::ExitStatus::from_raw(127 << 8),
                stdout: Vec::new(),
                stderr: format!("cannot run nsenter: {e}").into_bytes(),
            }
        })
    }

    /// Runs `argv` inside the sandbox as root (`nsenter -t PID -m -p -n -u`, then the sandbox's
    /// cgroup namespace and its `/testbed-exec` cgroup), cwd `/`.
    pub fn run(&self, argv: &[&str]) -> Output {
        Self::output(self.command_root(argv))
    }

    /// The command [`Sandbox::run`] runs, for callers that want its stdio (e.g. live output).
    pub fn command_root(&self, argv: &[&str]) -> Command {
        let mut cmd = self.command(argv);
        cmd.env("HOME", "/root");
        cmd
    }

    /// Where [`Sandbox::install_example`] puts the example configuration inside.
    pub const EXAMPLE_INSIDE: &'static str = "/srv/metacircular.toml";

    /// Copies the repository's `examples/metacircular.toml`, unchanged, to
    /// [`Sandbox::EXAMPLE_INSIDE`] (readable by everyone) and returns that
    /// path: the checkout itself may be invisible inside (e.g. below `/tmp`).
    pub fn install_example(&self) -> Result<String, TestbedError> {
        let host = crate::host::workspace_root().join("examples/metacircular.toml");
        self.copy_in(&host, Self::EXAMPLE_INSIDE, 0o644, None)?;
        Ok(Self::EXAMPLE_INSIDE.to_string())
    }

    /// Makes the host executable `host` available as `/usr/bin/NAME` inside the sandbox only:
    /// an overlay over `/usr/bin` in the sandbox's own mount namespace (the host's `/usr/bin`
    /// is untouched). Used to put the mcrecover under test where generated gate units run it.
    pub fn install_bin(&self, host: &Path, name: &str) -> Result<(), TestbedError> {
        let mounted = self.run(&["mountpoint", "-q", "/usr/bin"]).status.success();
        if !mounted {
            self.run_ok(&[
                "mkdir",
                "-p",
                "/run/testbed-bin/upper",
                "/run/testbed-bin/work",
            ])?;
            let opts =
                "lowerdir=/usr/bin,upperdir=/run/testbed-bin/upper,workdir=/run/testbed-bin/work";
            self.run_ok(&["mount", "-t", "overlay", "overlay", "-o", opts, "/usr/bin"])?;
        }
        // Written through the overlay: lands in its upper dir.
        self.copy_in(host, &format!("/usr/bin/{name}"), 0o755, None)?;
        Ok(())
    }

    /// [`Sandbox::run`], returning stdout, or an error carrying stderr on a non-zero exit.
    pub fn run_ok(&self, argv: &[&str]) -> Result<String, TestbedError> {
        check_output(render(argv), &self.run(argv))
    }

    /// Runs `argv` inside the sandbox as `uid` (its primary gid and groups, via `setpriv`), with
    /// `HOME`, `USER`, `XDG_RUNTIME_DIR=/run/user/UID` and `DBUS_SESSION_BUS_ADDRESS` set, so
    /// `systemctl --user` and rootless podman work.
    pub fn run_as(&self, uid: u32, argv: &[&str]) -> Output {
        Self::output(self.command_as(uid, argv))
    }

    /// The command [`Sandbox::run_as`] runs, for callers that want its stdio (e.g. live output).
    pub fn command_as(&self, uid: u32, argv: &[&str]) -> Command {
        let (name, gid, home) = match &self.info.rootless_user {
            Some(u) if u.uid == uid => (u.name.clone(), uid, u.home.clone()),
            _ => match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
                Ok(Some(u)) => (u.name, u.gid.as_raw(), u.dir),
                _ => (uid.to_string(), uid, PathBuf::from("/")),
            },
        };
        let reuid = format!("--reuid={uid}");
        let regid = format!("--regid={gid}");
        let mut full: Vec<&str> = vec!["setpriv", &reuid, &regid, "--init-groups"];
        if nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .is_none()
        {
            full.pop();
            full.push("--clear-groups");
        }
        full.extend_from_slice(argv);
        let mut cmd = self.command(&full);
        let runtime = format!("/run/user/{uid}");
        cmd.env("HOME", home)
            .env("USER", &name)
            .env("LOGNAME", &name)
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={runtime}/bus"),
            )
            .env("XDG_RUNTIME_DIR", runtime);
        cmd
    }

    /// [`Sandbox::run_as`], returning stdout, or an error carrying stderr on a non-zero exit.
    pub fn run_as_ok(&self, uid: u32, argv: &[&str]) -> Result<String, TestbedError> {
        check_output(
            format!("(uid {uid}) {}", render(argv)),
            &self.run_as(uid, argv),
        )
    }

    /// `systemctl start user@UID.service`, then waits until the user's bus exists and its manager
    /// reports `running` (or `degraded`).
    pub fn start_user_manager(&self, uid: u32) -> Result<(), TestbedError> {
        let unit = format!("user@{uid}.service");
        self.run_ok(&["systemctl", "start", &unit])?;
        let bus = self.host_path(&format!("/run/user/{uid}/bus"));
        self.wait_until(
            &format!("{unit} to be running"),
            Duration::from_secs(60),
            || {
                if !bus.exists() {
                    return Ok(false);
                }
                let out = self.run_as(uid, &["systemctl", "--user", "is-system-running"]);
                let state = String::from_utf8_lossy(&out.stdout);
                Ok(matches!(state.trim(), "running" | "degraded"))
            },
        )
    }

    /// Polls `cond` every 100 ms until it returns `Ok(true)` (done), an error (returned), or
    /// `timeout` passes ([`TestbedError::Timeout`]).
    #[allow(clippy::needless_pass_by_value)] // closures are taken by value, idiomatically
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut() -> Result<bool, TestbedError>,
    ) -> Result<(), TestbedError> {
        let deadline = Instant::now() + timeout;
        loop {
            if cond()? {
                return Ok(());
            }
            if process_start(self.info.pid) != Some(self.info.pid_start) {
                return Err(TestbedError::Sandbox(format!(
                    "sandbox PID 1 died while waiting for {what}"
                )));
            }
            if Instant::now() > deadline {
                return Err(TestbedError::Timeout {
                    what: what.into(),
                    seconds: timeout.as_secs(),
                    detail: String::new(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until system unit `unit` is `active`; fails early (with its journal) if it
    /// becomes `failed`.
    pub fn wait_active(&self, unit: &str, timeout: Duration) -> Result<(), TestbedError> {
        self.wait_unit(None, unit, timeout)
    }

    /// Waits until user unit `unit` of `uid`'s manager is `active`; fails early if `failed`.
    pub fn wait_user_active(
        &self,
        uid: u32,
        unit: &str,
        timeout: Duration,
    ) -> Result<(), TestbedError> {
        self.wait_unit(Some(uid), unit, timeout)
    }

    fn wait_unit(
        &self,
        uid: Option<u32>,
        unit: &str,
        timeout: Duration,
    ) -> Result<(), TestbedError> {
        let res = self.wait_until(&format!("{unit} to be active"), timeout, || {
            let out = match uid {
                None => self.run(&["systemctl", "is-active", unit]),
                Some(uid) => self.run_as(uid, &["systemctl", "--user", "is-active", unit]),
            };
            match String::from_utf8_lossy(&out.stdout).trim() {
                "active" => Ok(true),
                "failed" => Err(TestbedError::Sandbox(format!("{unit} failed"))),
                _ => Ok(false),
            }
        });
        res.map_err(|e| {
            let journal = match uid {
                None => self.journal(unit),
                Some(_) => self.user_journal(unit),
            };
            let lines: Vec<&str> = journal.lines().collect();
            TestbedError::Sandbox(format!(
                "{e}; journal of {unit}:\n{}",
                lines[lines.len().saturating_sub(25)..].join("\n")
            ))
        })
    }

    /// Writes `contents` to `path_inside` (through `/proc/PID/root`), creating parent directories
    /// (as root); the file is root-owned, mode 0644.
    pub fn write_file(&self, path_inside: &str, contents: &[u8]) -> Result<(), TestbedError> {
        write_mode(&self.host_path(path_inside), contents, 0o644)
    }

    /// Copies host file `host` to `path_inside` (creating parents) with `mode`, owned by `uid` when
    /// given: e.g. the mcrecover binary, so any user inside can run it from a sandbox path.
    pub fn copy_in(
        &self,
        host: &Path,
        path_inside: &str,
        mode: u32,
        uid: Option<u32>,
    ) -> Result<(), TestbedError> {
        let to = self.host_path(path_inside);
        if let Some(parent) = to.parent() {
            mkdir(parent)?;
        }
        std::fs::copy(host, &to).map_err(io("copy", host))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
            .map_err(io("chmod", &to))?;
        match uid {
            Some(uid) => self.chown(path_inside, uid),
            None => Ok(()),
        }
    }

    /// Changes `path_inside`'s owner to `uid` and that user's group (uid = gid is assumed for
    /// unknown users).
    pub fn chown(&self, path_inside: &str, uid: u32) -> Result<(), TestbedError> {
        let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or(uid, |u| u.gid.as_raw());
        let p = self.host_path(path_inside);
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(io("chown", &p))
    }

    /// Removes `path_inside` if it exists (file, or directory recursively).
    pub fn remove(&self, path_inside: &str) -> Result<(), TestbedError> {
        let p = self.host_path(path_inside);
        let res = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match res {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(TestbedError::io("remove", &p, e))
            }
            _ => Ok(()),
        }
    }

    /// Loads every image of `images` into this sandbox's podman storage: root's (`None`) or the
    /// rootless storage of `as_uid`. The archive is built once and cached (see
    /// [`ImageSet::archive`]).
    pub fn load_images(&self, images: &ImageSet, as_uid: Option<u32>) -> Result<(), TestbedError> {
        let archive = images.archive()?;
        let inside = format!(
            "/tmp/testbed-images-{}.tar",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let host = self.host_path(&inside);
        std::fs::copy(&archive, &host).map_err(io("copy", &archive))?;
        let result = match as_uid {
            None => self.run_ok(&["podman", "load", "-q", "-i", &inside]),
            Some(uid) => {
                self.chown(&inside, uid)?;
                self.run_as_ok(uid, &["podman", "load", "-q", "-i", &inside])
            }
        };
        let _ = std::fs::remove_file(&host);
        result.map(|_| ())
    }

    /// Copies the multi-image docker-archive of `images` (what `podman save -m` writes; `podman
    /// load -i` restores every image in it) to `dir_inside/testbed-images.tar`, owned by `uid`
    /// when given: the cold-start material for a platform's `image_archive` directory. Returns the
    /// path inside the sandbox.
    pub fn install_image_archive(
        &self,
        images: &ImageSet,
        dir_inside: &str,
        uid: Option<u32>,
    ) -> Result<String, TestbedError> {
        let archive = images.archive()?;
        let dir = dir_inside.trim_end_matches('/');
        let inside = format!("{dir}/testbed-images.tar");
        let host_dir = self.host_path(dir);
        mkdir(&host_dir)?;
        let host = self.host_path(&inside);
        std::fs::copy(&archive, &host).map_err(io("copy", &archive))?;
        if let Some(uid) = uid {
            self.chown(dir, uid)?;
            self.chown(&inside, uid)?;
        }
        Ok(inside)
    }

    /// The sandbox journal's lines for system unit `unit` (`journalctl -u`; the sandbox's journal
    /// is its own, on a tmpfs over `/var/log/journal`). Errors are returned as text.
    pub fn journal(&self, unit: &str) -> String {
        self.journal_args(&["-u", unit])
    }

    /// The sandbox journal's lines for user unit `unit` (`journalctl --user-unit`).
    pub fn user_journal(&self, unit: &str) -> String {
        self.journal_args(&["--user-unit", unit])
    }

    /// The sandbox's whole journal (for dumping after a failure).
    pub fn journal_all(&self) -> String {
        self.journal_args(&[])
    }

    /// The sandbox journal's lines (`short-precise`) for `journalctl ARGS`
    /// (e.g. `["-t", "mcrecover"]`: one syslog identifier, any manager).
    pub fn journal_args(&self, args: &[&str]) -> String {
        let mut argv = vec!["journalctl", "--no-pager", "-q", "-o", "short-precise"];
        argv.extend_from_slice(args);
        let out = self.run(&argv);
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        text
    }

    /// Installs the D-Bus policy file `host` as `/etc/dbus-1/system.d/NAME` inside the sandbox
    /// only (an overlay over that directory in the sandbox's mount namespace; the host's is
    /// untouched), then makes the sandbox's system bus reload its configuration.
    pub fn install_dbus_policy(&self, host: &Path) -> Result<(), TestbedError> {
        let name = host
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| TestbedError::Sandbox(format!("no file name in {}", host.display())))?;
        self.overlay_dir("/etc/dbus-1/system.d")?;
        self.copy_in(host, &format!("/etc/dbus-1/system.d/{name}"), 0o644, None)?;
        self.run_ok(&[
            "busctl",
            "--system",
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "ReloadConfig",
        ])?;
        Ok(())
    }
}

/// Two sandboxes as nodes of one platform.
impl Sandbox {
    /// The node's addresses (on its loopback; see [`SandboxOptions::addresses`]).
    pub fn addresses(&self) -> &[String] {
        &self.info.addresses
    }

    /// Joins this sandbox's network to `peer`'s, as two hosts on one network: a veth pair, one
    /// end in each network namespace (named `tb-<other hostname>`, up), and on each side a host
    /// route to every address of the other node through it, with the node's own first address
    /// as source. Each node then reaches the other's services at their production addresses
    /// (and sees the other's address as the client's); nothing is visible from the host or from
    /// other sandboxes. The link goes away with either sandbox.
    pub fn link(&self, peer: &Sandbox) -> Result<(), TestbedError> {
        if self.info.pid == peer.info.pid {
            return Err(TestbedError::Sandbox(
                "a sandbox cannot be linked to itself".into(),
            ));
        }
        let here = link_name(&peer.info.hostname);
        let there = link_name(&self.info.hostname);
        let pid = self.info.pid.to_string();
        let peer_pid = peer.info.pid.to_string();
        // Made in this sandbox's network namespace, the peer end moved straight into the
        // peer's (`netns PID` is resolved in the host's /proc: only the network namespace is
        // entered): nothing is ever created in the host's network namespace.
        crate::host::host_command(&[
            "nsenter", "-t", &pid, "-n", "--", "ip", "link", "add", &here, "type", "veth", "peer",
            "name", &there, "netns", &peer_pid,
        ])?;
        for (node, link, other) in [(self, &here, peer), (peer, &there, self)] {
            node.run_ok(&["ip", "link", "set", link, "up"])?;
            let src = node.info.addresses.iter().find(|a| !a.contains(':'));
            for a in other.info.addresses.iter().filter(|a| !a.contains(':')) {
                let dest = format!("{a}/32");
                let mut argv = vec!["ip", "route", "add", &dest, "dev", link.as_str()];
                if let Some(src) = src {
                    argv.extend_from_slice(&["src", src]);
                }
                node.run_ok(&argv)?;
            }
            for a in other.info.addresses.iter().filter(|a| a.contains(':')) {
                let dest = format!("{a}/128");
                node.run_ok(&["ip", "-6", "route", "add", &dest, "dev", link])?;
            }
        }
        Ok(())
    }
}

/// The interface name of a link to the node `hostname`: `tb-` and the hostname's first 12
/// characters that are letters, digits, `-` or `_` (interface names have at most 15).
fn link_name(hostname: &str) -> String {
    let tail: String = hostname
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(12)
        .collect();
    format!("tb-{tail}")
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if self.info.pid != 0 {
            kill_info(&self.info);
        }
        if let Some(mut child) = self.unshare.take() {
            // PID 1 is dead (or never came): unshare exits by itself; make sure, then reap it.
            if matches!(child.try_wait(), Ok(None)) && self.info.pid == 0 {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.info.state_dir);
    }
}

/// Helpers for running the mcrecover daemon as a real service inside a sandbox (tests/daemon_e2e.rs).
impl Sandbox {
    /// Mounts a writable overlay over the host directory `dir` in the sandbox's mount namespace
    /// only (upper and work dirs on the sandbox's `/run` tmpfs): what is written there inside is
    /// invisible on the host. Idempotent.
    pub fn overlay_dir(&self, dir: &str) -> Result<(), TestbedError> {
        if self.run(&["mountpoint", "-q", dir]).status.success() {
            return Ok(());
        }
        let key: String = dir
            .trim_matches('/')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let upper = format!("/run/testbed-overlay/{key}/upper");
        let work = format!("/run/testbed-overlay/{key}/work");
        self.run_ok(&["mkdir", "-p", dir, &upper, &work])?;
        let opts = format!("lowerdir={dir},upperdir={upper},workdir={work}");
        self.run_ok(&["mount", "-t", "overlay", "overlay", "-o", &opts, dir])?;
        Ok(())
    }

    /// Gives the sandbox a `/var/lib` of its own (an overlay over the host's, see
    /// [`Sandbox::overlay_dir`]) and removes `/var/lib/NAME` in it for each of `fresh`: services
    /// with `StateDirectory=` then keep their state per sandbox, never on the host, and start
    /// empty even when the host has such a directory.
    pub fn private_var_lib(&self, fresh: &[&str]) -> Result<(), TestbedError> {
        self.overlay_dir("/var/lib")?;
        for name in fresh {
            if name.is_empty() || name.contains('/') || name.contains("..") {
                return Err(TestbedError::Sandbox(format!("bad /var/lib name {name:?}")));
            }
            self.run_ok(&["rm", "-rf", &format!("/var/lib/{name}")])?;
        }
        Ok(())
    }

    /// Writes `contents` to `path_inside` with `mode` (root-owned), creating parent directories:
    /// e.g. an executable hook script.
    pub fn write_file_mode(
        &self,
        path_inside: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<(), TestbedError> {
        write_mode(&self.host_path(path_inside), contents, mode)
    }

    /// The sandbox journal's entries matching `args` (journalctl matches such as
    /// `MESSAGE_ID=...`, or options such as `-p crit`), one JSON object per entry
    /// (`journalctl -o json`), oldest first. Lines that are not JSON are skipped.
    pub fn journal_json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut argv = vec!["journalctl", "--no-pager", "-q", "-o", "json"];
        argv.extend_from_slice(args);
        let out = self.run(&argv);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The last `lines` lines of the sandbox's whole journal (for dumping after a failure).
    pub fn journal_tail(&self, lines: usize) -> String {
        let n = lines.to_string();
        self.journal_args(&["-n", &n])
    }
}
