//! The escaping round trip through a REAL systemd: rendered units (service
//! backend) and quadlet-generated units (quadlet backend) are loaded by a
//! throwaway systemd (PID 1 of its own pid+mount namespaces, the recipe of
//! the sandbox notes), started, and their executables are replaced by a tiny
//! script that records the argv it receives. The recorded argv must be
//! exactly the one we meant: this checks systemd's own parsing of quoting,
//! `%%`, `$$` and `\;` (and quadlet's re-quoting) instead of ours.
//!
//! Needs root, `unshare`, `nsenter`, `/lib/systemd/systemd` and the quadlet
//! binary (see `render_verify.rs`); when missing, fails under
//! `MCRECOVER_REQUIRE_E2E=1` and skips otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mcrecover::config::{self, Config};
use mcrecover::plan;
use mcrecover::render::{self, Backend};

const NASTY: &str = include_str!("golden/nasty/nasty.toml");

fn require_e2e() -> bool {
    std::env::var("MCRECOVER_REQUIRE_E2E").is_ok_and(|v| v == "1")
}

fn missing(what: &str) {
    if require_e2e() {
        panic!("MCRECOVER_REQUIRE_E2E=1 but {what}");
    }
    eprintln!("SKIP render_systemd: {what} (set MCRECOVER_REQUIRE_E2E=1 to make this a failure)");
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn quadlet_bin() -> Option<PathBuf> {
    let p = std::env::var_os("MCRECOVER_QUADLET").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/quadlet/quadlet"),
        PathBuf::from,
    );
    is_executable(&p).then_some(p)
}

/// A throwaway systemd; SIGKILLed (with everything in it) on drop.
struct Sandbox {
    unshare: Child,
    pid: i32,
    _dir: tempfile::TempDir,
}

impl Sandbox {
    fn boot() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init");
        fs::write(
            &init,
            "#!/bin/sh\n\
             mount --make-rprivate /\n\
             mount -t tmpfs tmpfs /run\n\
             mount -t tmpfs tmpfs /tmp\n\
             umount -l /sys/fs/cgroup; mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
             mkdir -p /run/systemd/system\n\
             printf '[Unit]\\nDescription=render test sandbox\\n' > /run/systemd/system/sandbox.target\n\
             export container=render-test\n\
             exec /lib/systemd/systemd --system --unit=sandbox.target\n",
        )
        .unwrap();
        fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).unwrap();
        let unshare = Command::new("setsid")
            .args(["unshare", "--pid", "--fork", "--mount", "--mount-proc"])
            .arg(&init)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The namespace's PID 1 is unshare's only child.
        let mut pid = 0;
        for _ in 0..200 {
            let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
                .unwrap_or_default();
            if let Some(p) = children.split_whitespace().next() {
                pid = p.parse().unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(pid > 0, "sandbox systemd did not start");
        let sb = Sandbox {
            unshare,
            pid,
            _dir: dir,
        };
        let mut state = String::new();
        for _ in 0..300 {
            let out = sb.ctl(&["is-system-running"]);
            state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                return sb;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sandbox systemd never came up (last state {state:?})");
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        // `timeout` only guards against a hung job; it asserts nothing.
        Command::new("timeout")
            .args([
                "120",
                "nsenter",
                "-t",
                &self.pid.to_string(),
                "-m",
                "-p",
                "systemctl",
            ])
            .args(args)
            .output()
            .unwrap()
    }

    /// The sandbox's `/run/systemd/system`, seen from outside.
    fn unit_dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/run/systemd/system", self.pid))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.unshare.wait();
    }
}

/// A script that records its argv (NUL-separated) once per unit.
fn argv_recorder(dir: &Path) -> PathBuf {
    let script = dir.join("record-argv");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             unit=$(sed -n 's|^0::.*/||p' /proc/self/cgroup)\n\
             set -C\n\
             printf '%s\\0' \"$0\" \"$@\" > '{}'/\"$unit\".argv 2>/dev/null\n\
             exit 0\n",
            dir.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn recorded(dir: &Path, unit: &str) -> Vec<String> {
    let raw = fs::read(dir.join(format!("{unit}.argv")))
        .unwrap_or_else(|e| panic!("{unit} did not run the recorder: {e}"));
    let mut v: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    assert_eq!(v.pop().as_deref(), Some(""), "argv not NUL-terminated");
    v
}

fn preconditions() -> Option<PathBuf> {
    if !nix::unistd::Uid::effective().is_root() {
        missing("not running as root (a throwaway systemd needs namespaces)");
        return None;
    }
    for tool in [
        "/usr/bin/unshare",
        "/usr/bin/nsenter",
        "/usr/bin/setsid",
        "/lib/systemd/systemd",
    ] {
        if !is_executable(Path::new(tool)) {
            missing(&format!("{tool} is missing"));
            return None;
        }
    }
    let Some(q) = quadlet_bin() else {
        missing("the quadlet generator is not available (run scripts/fetch-quadlet)");
        return None;
    };
    Some(q)
}

fn start_all(sb: &Sandbox, units: &[String]) {
    // Per-unit drop-ins (never global: they would hit the sandbox's own
    // journald): the recorder is not podman and never notifies, so run each
    // unit as a oneshot that stays active; start waits for the recorder.
    for u in units {
        let d = sb.unit_dir().join(format!("{u}.d"));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("10-render-test.conf"),
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nRestart=no\n",
        )
        .unwrap();
    }
    let out = sb.ctl(&["daemon-reload"]);
    assert!(
        out.status.success(),
        "daemon-reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for u in units {
        let out = sb.ctl(&["start", u]);
        if !out.status.success() {
            let status = sb.ctl(&["status", "--no-pager", "-l", u]);
            eprintln!(
                "start {u}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&status.stdout)
            );
        }
    }
}

fn config(recorder: &Path) -> Config {
    let mut cfg = config::parse(NASTY, Path::new("tests/golden/nasty/nasty.toml")).unwrap();
    cfg.platform.podman = recorder.to_path_buf();
    cfg.platform.mcrecover = recorder.to_path_buf();
    cfg.platform.mode = config::Mode::Rootful;
    let beta = cfg
        .services
        .get_mut("beta")
        .unwrap()
        .container
        .as_mut()
        .unwrap();
    beta.command = vec![
        "x".into(),
        ";".into(),
        String::new(),
        "100%".into(),
        "$1".into(),
    ];
    // Random services: argv, env values and podman args over the characters
    // that matter for escaping.
    let template = cfg.services["gamma"].clone();
    for i in 0..RANDOM_SERVICES {
        let name = format!("r{i:02}");
        let mut svc = template.clone();
        svc.name = name.clone();
        svc.after.clear();
        let c = svc.container.as_mut().unwrap();
        c.name = name.clone();
        c.command = random_words(i, 6);
        c.env = random_words(1000 + i, 3)
            .into_iter()
            .enumerate()
            .map(|(j, v)| (format!("V{j}"), v))
            .collect();
        c.podman_args = vec![
            "--label".into(),
            format!("k={}", random_words(2000 + i, 1)[0]),
        ];
        cfg.services.insert(name.clone(), svc);
        cfg.stages[1].services.push(name);
    }
    cfg
}

const RANDOM_SERVICES: u64 = 20;

/// Deterministic pseudo-random words (no control characters).
fn random_words(seed: u64, count: usize) -> Vec<String> {
    const ALPHABET: &[char] = &[
        'a', 'b', 'Z', '0', ' ', '"', '\'', '\\', '$', '%', ';', '{', '}', '=', 'é', '*', '#', '~',
        '!', '&', '|', '<', '>', '(', ')', '`', ':', ',', '.', '/', '-', '\u{a0}',
    ];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..count)
        .map(|_| {
            let len = next() % 9;
            (0..len)
                .map(|_| ALPHABET[next() % ALPHABET.len()])
                .collect()
        })
        .collect()
}

/// Names of the container services of `cfg`.
fn containers(cfg: &Config) -> Vec<String> {
    cfg.services
        .values()
        .filter(|s| !s.is_external())
        .map(|s| s.name.clone())
        .collect()
}

#[test]
fn systemd_executes_exactly_the_intended_argv() {
    let Some(quadlet) = preconditions() else {
        return;
    };
    let work = tempfile::Builder::new()
        .prefix("render-systemd-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let recorder = argv_recorder(work.path());
    let cfg = config(&recorder);
    let plan = plan::build(&cfg).unwrap();
    let sb = Sandbox::boot();

    // Service backend: our own ExecStart lines, gates included.
    let rendered = render::render(&cfg, &plan, Backend::Service).unwrap();
    render::write(&rendered, &sb.unit_dir(), &sb.unit_dir(), false).unwrap();
    let names = containers(&cfg);
    let mut units: Vec<String> = names.iter().map(|s| format!("{s}.service")).collect();
    units.extend(plan.stages.iter().map(|s| s.gate.clone()));
    start_all(&sb, &units);
    for name in &names {
        let mut want = vec![recorder.display().to_string()];
        want.extend(render::podman_run_argv(&cfg, &cfg.services[name]));
        assert_eq!(
            recorded(work.path(), &format!("{name}.service")),
            want,
            "{name}"
        );
    }
    for st in &plan.stages {
        assert_eq!(
            recorded(work.path(), &st.gate),
            vec![
                recorder.display().to_string(),
                "gate".into(),
                "--stage".into(),
                st.name.clone(),
                "--config".into(),
                cfg.platform.config_path.display().to_string(),
            ]
        );
    }

    // Quadlet backend (beta's `;` and empty word cannot pass quadlet: drop
    // them): quadlet generates the units, systemd runs them.
    let mut cfg = cfg;
    for svc in cfg.services.values_mut() {
        if let Some(c) = svc.container.as_mut() {
            c.command.retain(|w| !w.is_empty() && w != ";");
        }
    }
    let rendered = render::render(&cfg, &plan, Backend::Quadlet).unwrap();
    let qdir = work.path().join("quadlet");
    let gen = work.path().join("generated");
    render::write(&rendered, &qdir, &gen, false).unwrap();
    let out = Command::new(&quadlet)
        .args(["-no-kmsg-log", &gen.display().to_string()])
        .env("QUADLET_UNIT_DIRS", &qdir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "quadlet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in &names {
        let unit = fs::read_to_string(gen.join(format!("{name}.service"))).unwrap();
        // Quadlet hard-codes /usr/bin/podman; record instead. Quadlet's own
        // cid-file specifier stays (systemd expands it).
        let unit = unit.replace(
            "ExecStart=/usr/bin/podman ",
            &format!("ExecStart={} ", recorder.display()),
        );
        fs::write(sb.unit_dir().join(format!("q-{name}.service")), unit).unwrap();
    }
    let qunits: Vec<String> = names.iter().map(|s| format!("q-{s}.service")).collect();
    start_all(&sb, &qunits);
    for name in &names {
        let name = name.as_str();
        let got = recorded(work.path(), &format!("q-{name}.service"));
        let c = cfg.services[name].container.as_ref().unwrap();
        let mut tail = vec![c.image.clone()];
        tail.extend(c.command.iter().cloned());
        assert!(
            got.ends_with(&tail),
            "{name}: {got:?} does not end with {tail:?}"
        );
        for (k, v) in &c.env {
            let kv = format!("{k}={v}");
            assert!(
                got.windows(2).any(|w| w[0] == "--env" && w[1] == kv),
                "{name}: --env {kv} missing in {got:?}"
            );
        }
        if !c.podman_args.is_empty() {
            assert!(
                got.windows(c.podman_args.len())
                    .any(|w| w == c.podman_args.as_slice()),
                "{name}: podman_args missing in {got:?}"
            );
        }
        let cid = format!("--cidfile=/run/q-{name}.cid");
        assert!(got.contains(&cid), "{cid} missing in {got:?}");
    }
    drop(sb);
}
