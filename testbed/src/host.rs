//! Host-side facts and preparation: where the workspace and caches are, whether the machine can run
//! sandboxes at all (and the end-to-end gate `MCRECOVER_REQUIRE_E2E`), the platform user on the host,
//! and small helpers to run host commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use crate::TestbedError;

/// Environment variable that turns a missing prerequisite into a test failure instead of a skip.
pub const REQUIRE_E2E_ENV: &str = "MCRECOVER_REQUIRE_E2E";
/// Environment variable naming the quadlet binary (overrides `<workspace>/.cache/quadlet/quadlet`).
pub const QUADLET_ENV: &str = "MCRECOVER_QUADLET";
/// Environment variable naming a prebuilt stand-in binary (skips `cargo build -p mcrecover-standin`).
pub const STANDIN_ENV: &str = "MCRECOVER_STANDIN";
/// Environment variable naming the Debian trixie root filesystem of [`crate::Base::Trixie`] (what
/// `scripts/build-trixie-rootfs` prints; `.ci/run` exports it).
pub const TRIXIE_ROOTFS_ENV: &str = "MCRECOVER_TRIXIE_ROOTFS";
/// The command that builds the trixie root filesystem and prints its path.
pub const TRIXIE_BUILD_COMMAND: &str = "scripts/build-trixie-rootfs";

/// Programs a sandbox needs on the host, with the Debian package that provides each.
const REQUIRED_PROGRAMS: &[(&str, &str)] = &[
    ("/lib/systemd/systemd", "systemd"),
    ("/usr/bin/unshare", "util-linux"),
    ("/usr/bin/nsenter", "util-linux"),
    ("/usr/bin/setpriv", "util-linux"),
    ("/usr/bin/setsid", "util-linux"),
    ("/usr/bin/dbus-daemon", "dbus"),
    ("/usr/bin/podman", "podman"),
    ("/usr/sbin/runc", "runc"),
    ("/usr/bin/newuidmap", "uidmap"),
    ("/usr/bin/slirp4netns", "slirp4netns"),
    ("/bin/busybox", "busybox-static"),
    ("/sbin/ip", "iproute2"),
];

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The testbed's own cache and state directory: `<target>/testbed`, unless the
/// target directory lies below a path every sandbox mounts a tmpfs over
/// (`/tmp`, `/run`, `/srv`, `/etc/containers`; e.g. a checkout in `/tmp`):
/// the sandbox could not see its own state there, so `/var/tmp/mcrecover-testbed`
/// is used instead.
pub fn testbed_dir() -> PathBuf {
    const MASKED: [&str; 4] = ["/tmp", "/run", "/srv", "/etc/containers"];
    let dir = target_dir().join("testbed");
    if MASKED.iter().any(|m| dir.starts_with(m)) {
        PathBuf::from("/var/tmp/mcrecover-testbed")
    } else {
        dir
    }
}

/// The real quadlet binary if present: env `MCRECOVER_QUADLET`, else `<workspace>/.cache/quadlet/quadlet`.
pub fn quadlet_binary() -> Option<PathBuf> {
    let path = std::env::var_os(QUADLET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/quadlet/quadlet"));
    path.is_file().then_some(path)
}

/// The trixie root filesystem built by `scripts/build-trixie-rootfs`: env `MCRECOVER_TRIXIE_ROOTFS`
/// if set, else the newest complete tree `/var/tmp/mcrecover-trixie-*/rootfs` (the script's default
/// place; the script removes trees of older recipes). `None` unless it holds `/lib/systemd/systemd`.
pub fn trixie_rootfs() -> Option<PathBuf> {
    let usable =
        |p: &Path| p.join("lib/systemd/systemd").exists() && p.join("usr/bin/podman").exists();
    if let Some(env) = std::env::var_os(TRIXIE_ROOTFS_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(env);
        return usable(&p).then_some(p);
    }
    let dir = std::fs::read_dir("/var/tmp").ok()?;
    let mut trees: Vec<(std::time::SystemTime, PathBuf)> = dir
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("mcrecover-trixie-")
        })
        .filter_map(|e| {
            let stamp = std::fs::metadata(e.path().join(".complete")).ok()?;
            Some((stamp.modified().ok()?, e.path().join("rootfs")))
        })
        .filter(|(_, p)| usable(p))
        .collect();
    trees.sort();
    trees.pop().map(|(_, p)| p)
}

/// Why the trixie base cannot be used here (with the command that fixes it), or `None`.
pub fn trixie_missing() -> Option<String> {
    if trixie_rootfs().is_some() {
        return None;
    }
    let root = workspace_root();
    Some(match std::env::var_os(TRIXIE_ROOTFS_ENV) {
        Some(v) if !v.is_empty() => format!(
            "{TRIXIE_ROOTFS_ENV}={} is not a trixie root filesystem (no lib/systemd/systemd or usr/bin/podman); build it with `{}/{TRIXIE_BUILD_COMMAND}` (as root, ~5 min) and export {TRIXIE_ROOTFS_ENV}=<the path it prints>",
            PathBuf::from(v).display(),
            root.display()
        ),
        _ => format!(
            "no Debian trixie root filesystem; build it with `export {TRIXIE_ROOTFS_ENV}=$({}/{TRIXIE_BUILD_COMMAND})` (as root, ~5 min)",
            root.display()
        ),
    })
}

/// Whether `MCRECOVER_REQUIRE_E2E` is set to something other than empty/`0`.
pub fn e2e_required() -> bool {
    std::env::var(REQUIRE_E2E_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Checks that sandboxes can run here: root, and every required program present.
pub fn check_prerequisites() -> Result<(), TestbedError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(TestbedError::Prerequisite(
            "must run as root (sandboxes need new pid/mount/net namespaces)".into(),
        ));
    }
    let missing: Vec<String> = REQUIRED_PROGRAMS
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(path, pkg)| format!("{path} (package {pkg})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TestbedError::Prerequisite(format!(
            "missing {}; run scripts/install-deps",
            missing.join(", ")
        )))
    }
}

/// The gate for end-to-end tests. Returns `true` when `test` can run. When a prerequisite is
/// missing it panics if `MCRECOVER_REQUIRE_E2E` is set (the test FAILS), otherwise prints why the
/// test is skipped and returns `false`.
///
/// `extra` lists additional problems the caller found (e.g. "no quadlet binary"); they are treated
/// like missing prerequisites.
pub fn e2e_gate(test: &str, extra: &[String]) -> bool {
    let mut problems: Vec<String> = extra.to_vec();
    if let Err(e) = check_prerequisites() {
        problems.push(e.to_string());
    }
    if problems.is_empty() {
        return true;
    }
    let why = problems.join("; ");
    if e2e_required() {
        panic!("{test}: {REQUIRE_E2E_ENV} is set but: {why}");
    }
    eprintln!("SKIP {test}: {why} (set {REQUIRE_E2E_ENV}=1 to make this a failure)");
    false
}

/// A platform user on the host (the production shape: `mcp`, uid = gid = 850, home `/srv/mcp`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootlessUser {
    /// User and group name.
    pub name: String,
    /// Numeric uid (also used as the gid).
    pub uid: u32,
    /// Home directory; inside the sandbox it lives on the sandbox's `/srv` tmpfs when under `/srv`.
    pub home: PathBuf,
}

impl RootlessUser {
    /// The example platform's user: `mcp`, 850, `/srv/mcp`.
    pub fn mcp() -> Self {
        Self {
            name: "mcp".into(),
            uid: 850,
            home: PathBuf::from("/srv/mcp"),
        }
    }
}

static HOST_SETUP: Mutex<()> = Mutex::new(());

/// Makes the host ready for rootless podman as `user`: group and user with the fixed ids (no login,
/// home not created on the host), member of `systemd-journal` (so `podman logs` can read the
/// journal), `/etc/subuid` + `/etc/subgid` ranges, `/dev/net/tun` mode 0666.
/// Idempotent; fails if a user of that name exists with another uid/gid.
pub fn ensure_host_user(user: &RootlessUser) -> Result<(), TestbedError> {
    let _guard = HOST_SETUP.lock().unwrap_or_else(|p| p.into_inner());
    let uid = user.uid.to_string();
    match nix::unistd::Group::from_name(&user.name) {
        Ok(Some(g)) if g.gid.as_raw() == user.uid => {}
        Ok(Some(g)) => {
            return Err(TestbedError::Prerequisite(format!(
                "host group {} has gid {}, expected {}",
                user.name, g.gid, user.uid
            )))
        }
        _ => host_command(&["groupadd", "-g", &uid, &user.name])?,
    }
    match nix::unistd::User::from_name(&user.name) {
        Ok(Some(u)) if u.uid.as_raw() == user.uid && u.gid.as_raw() == user.uid => {}
        Ok(Some(u)) => {
            return Err(TestbedError::Prerequisite(format!(
                "host user {} has uid {} gid {}, expected {}",
                user.name, u.uid, u.gid, user.uid
            )))
        }
        _ => {
            let home = user.home.to_string_lossy();
            host_command(&[
                "useradd",
                "-u",
                &uid,
                "-g",
                &uid,
                "-d",
                &home,
                "-M",
                "-s",
                "/usr/sbin/nologin",
                &user.name,
            ])?;
        }
    }
    // uid < 1000 logs into the system journal: membership of systemd-journal lets the user read
    // it, so rootless `podman logs` (journald log driver) works (harness-only convenience).
    if let Ok(Some(g)) = nix::unistd::Group::from_name("systemd-journal") {
        if !g.mem.iter().any(|m| m == &user.name) {
            host_command(&["usermod", "-a", "-G", "systemd-journal", &user.name])?;
        }
    }
    // Ranges far above normal allocations, distinct per uid.
    let start = 1_000_000 + u64::from(user.uid) * 65_536;
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let has = text.lines().any(|l| {
            let first = l.split(':').next().unwrap_or("");
            first == user.name || first == uid
        });
        if !has {
            let mut new = text;
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str(&format!("{}:{start}:65536\n", user.name));
            std::fs::write(file, new).map_err(|e| TestbedError::io("write", file, e))?;
        }
    }
    let tun = Path::new("/dev/net/tun");
    if tun.exists() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tun)
            .map_err(|e| TestbedError::io("stat", tun, e))?
            .permissions()
            .mode();
        if mode & 0o666 != 0o666 {
            std::fs::set_permissions(tun, std::fs::Permissions::from_mode(0o666))
                .map_err(|e| TestbedError::io("chmod", tun, e))?;
        }
    } else {
        return Err(TestbedError::Prerequisite(
            "/dev/net/tun is missing (slirp4netns needs it)".into(),
        ));
    }
    Ok(())
}

/// Renders an argv for messages.
pub(crate) fn render(argv: &[&str]) -> String {
    argv.join(" ")
}

/// Turns a finished command into `Ok(stdout)` or a [`TestbedError::Command`].
pub(crate) fn check_output(command: String, out: &Output) -> Result<String, TestbedError> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if msg.is_empty() {
        msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    let tail: String = if msg.len() > 4000 {
        let cut = msg.len() - 4000;
        let cut = (cut..msg.len())
            .find(|i| msg.is_char_boundary(*i))
            .unwrap_or(cut);
        format!("...{}", &msg[cut..])
    } else {
        msg
    };
    Err(TestbedError::Command {
        command,
        status: out.status.to_string(),
        stderr: tail,
    })
}

/// Runs a host command to completion, failing on a non-zero exit.
pub(crate) fn host_command(argv: &[&str]) -> Result<(), TestbedError> {
    host_output(argv).map(|_| ())
}

/// Runs a host command and returns its stdout, failing on a non-zero exit.
pub(crate) fn host_output(argv: &[&str]) -> Result<String, TestbedError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| TestbedError::Sandbox("empty command".into()))?;
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| TestbedError::Spawn {
            program: (*program).to_string(),
            source,
        })?;
    check_output(render(argv), &out)
}
