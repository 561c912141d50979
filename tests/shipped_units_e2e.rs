//! The SHIPPED daemon units, deployed the way docs/operator-guide.md tells an
//! operator, in a REAL sandboxed systemd with real podman (issue 17):
//!
//! 1. rootless: `units/mcrecover@.service` + `units/metacircular.target`,
//!    the D-Bus policy, `loginctl enable-linger mcp`, `systemctl enable
//!    mcrecover@850.service`, `systemctl start metacircular.target` as the
//!    boot -> all 12 services healthy; `mcrecover status` as mcp and as root
//!    over the system bus (the name owned by uid 850); a killed container
//!    restarted by the daemon; a container killed while its stage is gated
//!    during a boot recovery restarted; the daemon SIGKILLed, restarted by
//!    systemd, resuming;
//! 2. rootful: `units/mcrecover.service` + the target `mcrecover install`
//!    renders -> the same checks;
//! 3. a cold start for both: images gone from podman's storage, present in
//!    `platform.image_archive` (written by the guide's `mcrecover images
//!    save`) -> the daemon loads them through transient units and the
//!    platform comes up;
//! 4. the units as the NixOS module wires them: the module's drop-in
//!    (`--no-install`, its `ExecReload`, ...) runs in both sandboxes, and
//!    `nixos_module_wires_the_units_these_tests_run` evaluates
//!    nixos-module/default.nix on the configurations deployed here and checks
//!    that its unit files, ExecStart, User=, state directory, config and
//!    D-Bus policy paths are the ones these tests use.
//!
//! The guide's command blocks are run LINE BY LINE inside the sandbox (a copy
//! of the checkout under /srv/src, this build's binary at
//! target/release/mcrecover in it); `operator_guide_blocks_are_what_the_tests_run`
//! checks that the guide still says exactly these lines. Lines the sandbox
//! cannot run as written (building, creating the user on the host's shared
//! /etc/passwd) are marked with the reason and done by the testbed instead.
//! What the sandbox itself requires, and nothing else, is set up before:
//! private overlays over the host directories the guide writes into (the
//! sandbox shares the host's /usr, /etc and /var).
//!
//! The time from `systemctl start metacircular.target` to all healthy is
//! printed for each boot (`TIMING ...` lines; asserted only loosely).
//!
//! Needs root and the packages of `scripts/install-deps` (nix-bin for the
//! module test); with MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails
//! instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcrecover_testbed::{
    e2e_gate, e2e_required, workspace_root, ImageSet, Sandbox, SandboxOptions, TestbedError,
    METACIRCULAR_SERVICES,
};
use serde_json::Value;

const EXAMPLE: &str = include_str!("../examples/metacircular.toml");
const GUIDE: &str = include_str!("../docs/operator-guide.md");
const UID: u32 = 850;
/// The checkout inside the sandbox (the real one may be invisible there,
/// e.g. below /tmp, which every sandbox mounts a tmpfs over).
const SRC: &str = "/srv/src";
/// Where the operator guide (and the shipped units) put the configuration.
const CONFIG: &str = "/etc/mcrecover/mcrecover.toml";
/// Restart issued by the daemon (priority 5).
const RESTART_ID: &str = "5e8a0b3c2d1f4e6a9b7c8d0e1f2a3b4c";
const API: &str = "net.metacircular.Recovery1";
/// The stage names of examples/metacircular.toml, in order.
const STAGES: [&str; 4] = ["foundation", "core", "management", "services"];

// ---------------------------------------------------------------------------
// The operator guide's blocks, line by line.
// ---------------------------------------------------------------------------

/// How the test carries out one line of the guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Do {
    /// Run it as written (`sh -c`, in the checkout, as root).
    Run,
    /// Not run: the reason, and what the testbed does instead.
    Skip(&'static str),
    /// The boot: `systemctl start metacircular.target`, timed.
    Boot,
    /// A status command, run once the platform is healthy: exit 0, all healthy.
    Status,
}

/// One line of a guide block.
#[derive(Debug, Clone, Copy)]
struct Step {
    line: &'static str,
    what: Do,
}

const fn run(line: &'static str) -> Step {
    Step {
        line,
        what: Do::Run,
    }
}

const fn skip(line: &'static str, why: &'static str) -> Step {
    Step {
        line,
        what: Do::Skip(why),
    }
}

const BUILT: &str = "cargo test built this checkout's mcrecover; the sandbox's copy of the \
                     checkout has it at target/release/mcrecover";
const HOST_USER: &str = "a sandbox shares the host's /etc/passwd, /etc/subuid and /etc/subgid: \
                         the testbed creates mcp (uid = gid = 850, home /srv/mcp, a subordinate \
                         range) on the host before the sandbox boots";

/// docs/operator-guide.md, "Install on Debian", rootless (the runbook's host).
const ROOTLESS_MARKER: &str = "<!-- tested: tests/shipped_units_e2e.rs ROOTLESS_STEPS -->";
const ROOTLESS_STEPS: &[Step] = &[
    skip("cargo build --release -p mcrecover", BUILT),
    run("install -m 0755 target/release/mcrecover /usr/bin/mcrecover"),
    run("install -D -m 0644 examples/metacircular.toml /etc/mcrecover/mcrecover.toml   # then edit it for this host"),
    run("install -m 0644 units/mcrecover@.service units/metacircular.target /etc/systemd/system/"),
    run("install -m 0644 units/dbus/net.metacircular.Recovery1.conf units/dbus/net.metacircular.Recovery1-rootless.conf /etc/dbus-1/system.d/"),
    run("systemctl reload dbus"),
    skip("groupadd -g 850 mcp", HOST_USER),
    skip("useradd -u 850 -g 850 -d /srv/mcp -m -s /usr/sbin/nologin mcp", HOST_USER),
    skip("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 mcp", HOST_USER),
    run("loginctl enable-linger mcp"),
    run("sysctl -w net.ipv4.ip_unprivileged_port_start=53"),
    run("echo net.ipv4.ip_unprivileged_port_start=53 > /etc/sysctl.d/50-mcrecover.conf"),
    run("runuser -u mcp -- mcrecover images save"),
    run("systemctl daemon-reload"),
    run("systemctl enable mcrecover@850.service"),
    run("systemctl enable metacircular.target"),
    Step {
        line: "systemctl start metacircular.target",
        what: Do::Boot,
    },
    Step {
        line: "mcrecover status",
        what: Do::Status,
    },
    Step {
        line: "runuser -u mcp -- mcrecover status",
        what: Do::Status,
    },
];

/// docs/operator-guide.md, "Install on Debian", rootful.
const ROOTFUL_MARKER: &str = "<!-- tested: tests/shipped_units_e2e.rs ROOTFUL_STEPS -->";
const ROOTFUL_STEPS: &[Step] = &[
    skip("cargo build --release -p mcrecover", BUILT),
    run("install -m 0755 target/release/mcrecover /usr/bin/mcrecover"),
    run("install -D -m 0644 examples/metacircular.toml /etc/mcrecover/mcrecover.toml   # then edit it: mode = \"rootful\""),
    run("install -m 0644 units/mcrecover.service /etc/systemd/system/"),
    run("install -m 0644 units/dbus/net.metacircular.Recovery1.conf /etc/dbus-1/system.d/"),
    run("systemctl reload dbus"),
    run("mcrecover images save"),
    run("mcrecover install"),
    run("systemctl enable mcrecover.service"),
    run("systemctl add-wants multi-user.target metacircular.target"),
    Step {
        line: "systemctl start metacircular.target",
        what: Do::Boot,
    },
    Step {
        line: "mcrecover status",
        what: Do::Status,
    },
];

/// docs/operator-guide.md's way to stop the whole rootless platform (the
/// daemon first): every unit by name, since nothing is `PartOf=` the targets.
const STOP_ROOTLESS: &str = "runuser -u mcp -- env XDG_RUNTIME_DIR=/run/user/850 systemctl --user stop metacircular.target 'metacircular-*' mcns mc-proxy mcr-api mcr-web metacrypt-api metacrypt-web mcp-master mcq mcdoc mcat kls sgardd";
/// The same for the rootful platform (system manager).
const STOP_ROOTFUL: &str = "systemctl stop metacircular.target 'metacircular-*' mcns mc-proxy mcr-api mcr-web metacrypt-api metacrypt-web mcp-master mcq mcdoc mcat kls sgardd";

/// The drop-in nixos-module/default.nix makes for `mcrecover@850.service`
/// (rootless, `platform.uid = 850`), with its store paths replaced by this
/// sandbox's (`<package>/bin/mcrecover` -> /usr/bin/mcrecover,
/// `<systemd>/bin/systemctl` -> /bin/systemctl, `<coreutils>/bin/kill` ->
/// /bin/kill). The module's `path` (Environment=PATH=... of store paths) is
/// left out: the Debian paths are on the unit's default PATH.
/// `nixos_module_wires_the_units_these_tests_run` checks it against the
/// evaluated module.
const NIXOS_ROOTLESS_DROPIN: &str = "\
[Unit]
Wants=network-online.target
After=network-online.target

[Service]
Environment=DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/850/bus
Environment=XDG_RUNTIME_DIR=/run/user/850
ExecStart=
ExecStart=/usr/bin/mcrecover daemon --config /etc/mcrecover/mcrecover.toml --no-install --bus-address unix:path=/run/user/850/bus
ExecReload=
ExecReload=/bin/systemctl --user daemon-reload
ExecReload=/bin/kill -HUP $MAINPID
";

/// The same for `mcrecover.service` (rootful).
const NIXOS_ROOTFUL_DROPIN: &str = "\
[Unit]
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=
ExecStart=/usr/bin/mcrecover daemon --config /etc/mcrecover/mcrecover.toml --no-install
ExecReload=
ExecReload=/bin/kill -HUP $MAINPID
";

// ---------------------------------------------------------------------------
// The two deployments.
// ---------------------------------------------------------------------------

/// What differs between the rootless and the rootful deployment.
#[derive(Debug, Clone, Copy)]
struct Kind {
    name: &'static str,
    rootless: bool,
    daemon: &'static str,
    steps: &'static [Step],
    marker: &'static str,
    state_file: &'static str,
    nixos_dropin: &'static str,
}

const ROOTLESS: Kind = Kind {
    name: "rootless",
    rootless: true,
    daemon: "mcrecover@850.service",
    steps: ROOTLESS_STEPS,
    marker: ROOTLESS_MARKER,
    state_file: "/var/lib/mcrecover/850/state.json",
    nixos_dropin: NIXOS_ROOTLESS_DROPIN,
};

const ROOTFUL: Kind = Kind {
    name: "rootful",
    rootless: false,
    daemon: "mcrecover.service",
    steps: ROOTFUL_STEPS,
    marker: ROOTFUL_MARKER,
    state_file: "/var/lib/mcrecover/state.json",
    nixos_dropin: NIXOS_ROOTFUL_DROPIN,
};

/// The configuration each deployment installs as
/// /etc/mcrecover/mcrecover.toml: the example, "then edit"ed the way the
/// sandbox needs and nothing else: without MCIAS (it runs on another host,
/// unreachable from a sandbox; an external service is only checked, and a
/// check that can never pass would keep the platform from "all healthy");
/// rootful: `mode = "rootful"`.
fn deployed_config(kind: Kind) -> String {
    let cut = EXAMPLE
        .find("# MCIAS runs on svc")
        .expect("the example's mcias section moved");
    let text = EXAMPLE[..cut].to_string();
    if kind.rootless {
        return text;
    }
    let rootful = text.replacen("mode = \"rootless\"", "mode = \"rootful\"", 1);
    assert_ne!(
        rootful, text,
        "the example no longer says mode = \"rootless\""
    );
    rootful
}

/// The example's container services (12), in plan order.
fn services() -> Vec<&'static str> {
    METACIRCULAR_SERVICES.iter().map(|s| s.service).collect()
}

fn now_usec() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// A journal entry's wall-clock time in microseconds (0 if absent).
fn usec(e: &Value) -> u128 {
    e["__REALTIME_TIMESTAMP"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn field(e: &Value, name: &str) -> String {
    e[name].as_str().unwrap_or("").to_string()
}

fn secs(from_us: u128, to_us: u128) -> f64 {
    to_us.saturating_sub(from_us) as f64 / 1e6
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One deployment's sandbox. Dropped during a panic, it prints the daemon's
/// journal and the tail of the whole journal first.
struct Deployment {
    kind: Kind,
    sb: Sandbox,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "=== {}: journal of {} ===\n{}\n=== last 300 lines of the whole journal ===\n{}",
                self.kind.name,
                self.kind.daemon,
                self.sb.journal(self.kind.daemon),
                self.sb.journal_tail(300)
            );
            // The containers' ports as podman, the firewall and conntrack
            // see them (a published port that stops answering).
            let ps = [
                "podman",
                "ps",
                "-a",
                "--format",
                "{{.Names}} {{.Status}} {{.Ports}}",
            ];
            let out = self.exec(self.kind.rootless, &ps);
            let nat = self.sb.run(&["iptables", "-t", "nat", "-S"]);
            let ct = self.sb.run(&[
                "sh",
                "-c",
                "grep -E 'dport=53 ' /proc/net/nf_conntrack | head -40",
            ]);
            eprintln!(
                "=== podman ps ===\n{}\n=== iptables -t nat -S ===\n{}\n=== conntrack dport=53 ===\n{}",
                text(&out),
                text(&nat),
                text(&ct)
            );
        }
    }
}

impl Deployment {
    fn ok<T>(&self, r: Result<T, TestbedError>) -> T {
        r.unwrap_or_else(|e| panic!("{}: {e}", self.kind.name))
    }

    /// Runs `argv` inside as root, or as mcp when `as_mcp`.
    fn exec(&self, as_mcp: bool, argv: &[&str]) -> Output {
        if as_mcp {
            self.sb.run_as(UID, argv)
        } else {
            self.sb.run(argv)
        }
    }

    /// `argv` as root, which must succeed; returns stdout.
    fn root(&self, argv: &[&str]) -> String {
        self.ok(self.sb.run_ok(argv))
    }

    /// `podman ARGS` in the platform's storage: as mcp (rootless) or root.
    fn podman(&self, args: &[&str]) -> String {
        let mut argv = vec!["podman"];
        argv.extend_from_slice(args);
        let out = self.exec(self.kind.rootless, &argv);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl ARGS` of the containers' manager: mcp's user manager
    /// (rootless) or the system manager.
    fn containers_systemctl(&self, args: &[&str]) -> Output {
        let mut argv = vec!["systemctl"];
        if self.kind.rootless {
            argv.push("--user");
        }
        argv.extend_from_slice(args);
        self.exec(self.kind.rootless, &argv)
    }

    /// A container unit's property.
    fn unit_prop(&self, unit: &str, name: &str) -> String {
        let out = self.containers_systemctl(&["show", "-P", name, unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A system unit's property (the daemon's unit).
    fn sys_prop(&self, unit: &str, name: &str) -> String {
        let out = self.sb.run(&["systemctl", "show", "-P", name, unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn main_pid(&self) -> u32 {
        self.sys_prop(self.kind.daemon, "MainPID")
            .parse()
            .unwrap_or(0)
    }

    /// The daemon's snapshot over the system bus (`mcrecover status --json`,
    /// no configuration needed when the daemon answers), as root or mcp.
    fn status_as(&self, as_mcp: bool) -> Option<Value> {
        let out = self.exec(as_mcp, &["/usr/bin/mcrecover", "status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v.get("phase").is_some() && v["services"].is_array()).then_some(v)
    }

    fn status(&self) -> Option<Value> {
        self.status_as(false)
    }

    /// Polls the status (every 100 ms) until `pred` holds; panics with the
    /// last one after `secs`. Returns it and when it was seen (µs).
    fn wait_status(
        &self,
        what: &str,
        secs: u64,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> (Value, u128) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = None;
        loop {
            if let Some(st) = self.status() {
                if pred(&st) {
                    return (st, now_usec());
                }
                last = Some(st);
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out after {secs} s waiting for {what}; last status: {:#}",
                self.kind.name,
                last.unwrap_or(Value::Null)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait(&self, what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "{}: timed out after {secs} s waiting for {what}; status: {:#}",
                self.kind.name,
                self.status().unwrap_or(Value::Null)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's restart entries (MESSAGE_ID=5e8a...) for `unit` since `since` µs.
    fn restarts_of(&self, unit: &str, since: u128) -> Vec<Value> {
        self.sb
            .journal_json(&[&format!("MESSAGE_ID={RESTART_ID}")])
            .into_iter()
            .filter(|e| e["UNIT"] == unit && usec(e) >= since)
            .collect()
    }

    /// Every restart the daemon issued since `since` µs.
    fn all_restarts(&self, since: u128) -> Vec<String> {
        self.sb
            .journal_json(&[&format!("MESSAGE_ID={RESTART_ID}")])
            .into_iter()
            .filter(|e| usec(e) >= since)
            .map(|e| format!("{}: {}", field(&e, "UNIT"), field(&e, "REASON")))
            .collect()
    }

    /// The daemon's own journal entries with MESSAGE=`message` since `since` µs.
    fn daemon_entries(&self, message: &str, since: u128) -> Vec<Value> {
        self.sb
            .journal_json(&["-u", self.kind.daemon, &format!("MESSAGE={message}")])
            .into_iter()
            .filter(|e| usec(e) >= since)
            .collect()
    }

    /// SIGKILLs the main process of `svc`'s container (the pid from
    /// `podman inspect`, in the platform's storage; killed by its owner:
    /// mcp for rootless). Returns when (µs).
    fn kill_container(&self, svc: &str) -> u128 {
        let pid = self.podman(&["inspect", "--format", "{{.State.Pid}}", svc]);
        let pid = pid.trim().to_string();
        assert!(
            pid.parse::<u32>().is_ok_and(|p| p > 0),
            "{svc}: pid {pid:?}"
        );
        let at = now_usec();
        let out = self.exec(self.kind.rootless, &["kill", "-KILL", &pid]);
        assert!(out.status.success(), "kill -KILL {pid}: {}", text(&out));
        eprintln!("{}: killed {svc}'s main process {pid}", self.kind.name);
        at
    }

    /// Starts `systemctl start metacircular.target` (the boot) without
    /// waiting for it (rootful, the rendered target waits for the stage
    /// gates); returns when it was started (µs) and the child.
    fn boot(&self) -> (u128, Child) {
        let t0 = now_usec();
        let child = self
            .sb
            .command_root(&["systemctl", "start", "metacircular.target"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        (t0, child)
    }

    /// Waits for the boot started at `t0`: all healthy (polled), the
    /// daemon's "recovery finished; watching" entry, and `systemctl start`
    /// returning 0. Prints and returns the times from `t0` (s): to the
    /// journal entry and to the status first seen all healthy.
    fn until_healthy(&self, label: &str, t0: u128, mut start: Child) -> (f64, f64) {
        let (st, seen) = self.wait_status(&format!("{label}: all healthy"), 300, all_healthy);
        assert_eq!(
            st["services"].as_array().unwrap().len(),
            12,
            "12 container services: {st:#}"
        );
        let done = self.daemon_entries("recovery finished; watching", t0);
        assert!(
            !done.is_empty(),
            "no 'recovery finished; watching' since the boot"
        );
        assert!(
            done.iter().all(|e| field(e, "OUTCOME") == "AllHealthy"),
            "{done:#?}"
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        let code = loop {
            if let Some(s) = start.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "systemctl start metacircular.target hangs"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = start.wait_with_output().unwrap();
        assert!(
            code.success(),
            "systemctl start metacircular.target: {}",
            text(&out)
        );
        let journal_s = secs(t0, usec(&done[0]));
        let seen_s = secs(t0, seen);
        // Where the time went: the daemon's first line and its "recovery
        // starting" (the engine's t0, from which TOTAL_S counts).
        let at = |m: &str| {
            self.daemon_entries(m, t0)
                .first()
                .map_or(f64::NAN, |e| secs(t0, usec(e)))
        };
        eprintln!(
            "TIMING {} {label}: `systemctl start metacircular.target` -> all healthy: \
             {journal_s:.2} s (daemon's 'recovery finished' entry; its first line at {:.2} s, \
             'recovery starting' at {:.2} s, TOTAL_S={}), {seen_s:.2} s (first `mcrecover status` \
             all healthy)",
            self.kind.name,
            at("state loaded"),
            at("recovery starting"),
            field(&done[0], "TOTAL_S"),
        );
        (journal_s, seen_s)
    }

    /// The state after a power loss, minus the reboot: the daemon stopped,
    /// then every unit of the platform, with the guide's own lines ("A whole
    /// recovery"), and the system's `metacircular.target`, so that the next
    /// `systemctl start metacircular.target` is a boot's.
    fn stop_platform(&self) {
        self.root(&["systemctl", "stop", self.kind.daemon]);
        let line = if self.kind.rootless {
            STOP_ROOTLESS
        } else {
            STOP_ROOTFUL
        };
        let out = self.sb.run(&["sh", "-c", line]);
        assert!(out.status.success(), "{line}: {}", text(&out));
        self.root(&["systemctl", "stop", "metacircular.target"]);
        let _ = self.containers_systemctl(&["reset-failed"]);
        let mut units: Vec<String> = vec!["metacircular.target".into()];
        for stage in STAGES {
            units.push(format!("metacircular-{stage}.target"));
            units.push(format!("metacircular-{stage}-gate.service"));
        }
        units.extend(services().iter().map(|s| format!("{s}.service")));
        for unit in units {
            let state = self.unit_prop(&unit, "ActiveState");
            assert!(
                state == "inactive" || state == "failed",
                "{unit} is {state} after: {line}"
            );
        }
    }
}

fn all_healthy(st: &Value) -> bool {
    st["phase"] == "watching"
        && st["services"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["state"] == "healthy"))
}

fn service<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in status: {st:#}"))
}

fn state_of(st: &Value, name: &str) -> String {
    service(st, name)["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Boots the sandbox and prepares what the sandbox itself needs (never what
/// the guide does): private overlays over the host directories the guide
/// writes into, a private /var/lib, the checkout copied in.
fn prepare(kind: Kind) -> Option<Deployment> {
    let name = format!("shipped-{}", kind.name);
    if !e2e_gate(&name, &[]) {
        return None;
    }
    let mut opts = SandboxOptions::metacircular(&name);
    // Debian 12's podman (4.3) has no quadlet: the operator's host does not
    // either (backend "auto" resolves to plain units).
    opts.quadlet_generator = None;
    if !kind.rootless {
        opts.rootless_user = None;
    }
    let d = Deployment {
        kind,
        sb: Sandbox::boot(opts).unwrap(),
    };
    let sb = &d.sb;
    // The sandbox shares the host's /usr, /etc and /var: everything the
    // guide writes there goes into an overlay of this sandbox's own mount
    // namespace (the host is untouched). /etc/mcrecover is created (empty)
    // on the host as the overlay's mount point if it does not exist.
    for dir in [
        "/usr/bin",
        "/etc/mcrecover",
        "/etc/systemd/system",
        "/etc/dbus-1/system.d",
        "/etc/sysctl.d",
    ] {
        d.ok(sb.overlay_dir(dir));
    }
    // StateDirectory=mcrecover and logind's linger files per sandbox, empty
    // (and the host's lingering users, if any, are not started in here).
    d.ok(sb.private_var_lib(&["mcrecover"]));
    d.root(&["rm", "-rf", "/var/lib/systemd/linger"]);
    // The checkout: the shipped units and policy as they are, the example
    // as deployed, this build's binary.
    let root = workspace_root();
    for f in [
        "units/mcrecover.service",
        "units/mcrecover@.service",
        "units/metacircular.target",
        "units/dbus/net.metacircular.Recovery1.conf",
        "units/dbus/net.metacircular.Recovery1-rootless.conf",
    ] {
        d.ok(sb.copy_in(&root.join(f), &format!("{SRC}/{f}"), 0o644, None));
    }
    d.ok(sb.write_file(
        &format!("{SRC}/examples/metacircular.toml"),
        deployed_config(kind).as_bytes(),
    ));
    d.ok(sb.copy_in(
        Path::new(env!("CARGO_BIN_EXE_mcrecover")),
        &format!("{SRC}/target/release/mcrecover"),
        0o755,
        None,
    ));
    if !kind.rootless {
        // The platform's images in root's storage (the runbook's host has
        // them; no registry is reachable from a sandbox).
        d.ok(sb.load_images(&ImageSet::metacircular().unwrap(), None));
    }
    Some(d)
}

/// The guide's block, line by line, up to and including the boot; returns
/// the boot's start time and child. The status lines come after.
fn install_as_the_guide_says(d: &Deployment) -> (u128, Child) {
    for step in d.kind.steps {
        match step.what {
            Do::Skip(why) => eprintln!("{}: (not run: {why}) {}", d.kind.name, step.line),
            Do::Run => {
                let out =
                    d.sb.run(&["sh", "-c", &format!("cd {SRC} && {}", step.line)]);
                eprintln!(
                    "{}: $ {}\n{}",
                    d.kind.name,
                    step.line,
                    text(&out).trim_end()
                );
                assert!(
                    out.status.success(),
                    "{}: {} failed",
                    d.kind.name,
                    step.line
                );
                if step.line == "loginctl enable-linger mcp" {
                    // Linger starts mcp's manager (logind, at once and at
                    // every boot). Then the runbook host's state: the
                    // platform's images in mcp's storage.
                    d.ok(d.sb.wait_until(
                        "user@850.service (linger)",
                        Duration::from_secs(60),
                        || {
                            let out =
                                d.sb.run_as(UID, &["systemctl", "--user", "is-system-running"]);
                            let s = String::from_utf8_lossy(&out.stdout);
                            Ok(matches!(s.trim(), "running" | "degraded"))
                        },
                    ));
                    d.ok(d
                        .sb
                        .load_images(&ImageSet::metacircular().unwrap(), Some(UID)));
                }
            }
            Do::Boot => {
                eprintln!("{}: $ {} (the boot)", d.kind.name, step.line);
                return d.boot();
            }
            Do::Status => unreachable!("status lines come after the boot"),
        }
    }
    panic!("{}: the guide's block has no boot line", d.kind.name);
}

/// The guide's status lines: exit 0, all 12 healthy.
fn guide_status_lines(d: &Deployment) {
    for step in d.kind.steps.iter().filter(|s| s.what == Do::Status) {
        let out =
            d.sb.run(&["sh", "-c", &format!("cd {SRC} && {}", step.line)]);
        eprintln!(
            "{}: $ {}\n{}",
            d.kind.name,
            step.line,
            text(&out).trim_end()
        );
        assert_eq!(out.status.code(), Some(0), "{}", step.line);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("watching 12 services: 12 healthy"),
            "{}: {}",
            step.line,
            text(&out)
        );
    }
}

/// The daemon runs as shipped: the unit file is the repository's, the only
/// drop-in is the testbed's cidfile one (all services of a sandbox get it),
/// it runs as the right user, owns the API name on the system bus, answers
/// root and mcp, and keeps its state where StateDirectory= says.
fn assert_shipped_daemon(d: &Deployment) {
    let kind = d.kind;
    let file = if kind.rootless {
        "mcrecover@.service"
    } else {
        "mcrecover.service"
    };
    assert_eq!(
        d.sys_prop(kind.daemon, "FragmentPath"),
        format!("/etc/systemd/system/{file}")
    );
    let installed = std::fs::read(d.sb.host_path(&format!("/etc/systemd/system/{file}"))).unwrap();
    let shipped = std::fs::read(workspace_root().join("units").join(file)).unwrap();
    assert!(
        installed == shipped,
        "the installed {file} is not the shipped one"
    );
    assert_eq!(
        d.sys_prop(kind.daemon, "DropInPaths"),
        "/run/systemd/system/service.d/10-cidfile.conf",
        "only the testbed's drop-in for every service"
    );
    let uid = if kind.rootless { UID } else { 0 };
    let pid = d.main_pid();
    assert!(pid > 0);
    let owner = d.root(&[
        "busctl",
        "--system",
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetConnectionUnixUser",
        "s",
        API,
    ]);
    assert_eq!(owner.trim(), format!("u {uid}"), "{API} owned by uid {uid}");
    let owner_pid = d.root(&[
        "busctl",
        "--system",
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetConnectionUnixProcessID",
        "s",
        API,
    ]);
    assert_eq!(
        owner_pid.trim(),
        format!("u {pid}"),
        "{API} owned by the daemon"
    );
    for as_mcp in [false, true] {
        let st = d
            .status_as(as_mcp)
            .unwrap_or_else(|| panic!("no status as {}", if as_mcp { "mcp" } else { "root" }));
        assert_eq!(st["pid"].as_u64(), Some(u64::from(pid)), "{st:#}");
        assert_eq!(st["config"], CONFIG, "{st:#}");
        assert!(all_healthy(&st), "{st:#}");
    }
    // StateDirectory=: created for the daemon's user (state.json is
    // written at the first change, see sigkill_daemon_resumes).
    let state_dir = Path::new(kind.state_file).parent().unwrap();
    let meta = std::fs::metadata(d.sb.host_path(&state_dir.to_string_lossy())).unwrap();
    assert!(meta.is_dir(), "{}", state_dir.display());
    assert_eq!(meta.uid(), uid, "{}", state_dir.display());
    // The containers run where the deployment says: rootless in mcp's
    // manager and storage.
    let ps = d.podman(&["ps", "--format", "{{.Names}}"]);
    for s in services() {
        assert!(ps.lines().any(|l| l == s), "{s} not in podman ps: {ps}");
        assert_eq!(
            d.unit_prop(&format!("{s}.service"), "ActiveState"),
            "active"
        );
    }
}

/// A container killed with SIGKILL is restarted by the daemon (its restart
/// entry names the unit), and only that one.
fn kill_is_restarted(d: &Deployment) {
    let unit = "mcq.service";
    assert_eq!(
        d.unit_prop(unit, "Restart"),
        "no",
        "the daemon owns restarts"
    );
    let invocation = d.unit_prop(unit, "InvocationID");
    let before = service(&d.status().unwrap(), "mcq")["total_restarts"]
        .as_u64()
        .unwrap();
    let killed = d.kill_container("mcq");
    d.wait("the daemon's restart of mcq", 60, || {
        !d.restarts_of(unit, killed).is_empty()
    });
    let e = d.restarts_of(unit, killed)[0].clone();
    assert_eq!(field(&e, "SERVICE"), "mcq", "{e:#}");
    assert_eq!(field(&e, "PRIORITY"), "5", "{e:#}");
    eprintln!(
        "TIMING {}: mcq killed -> restart issued {:.3} s (REACTION_MS={})",
        d.kind.name,
        secs(killed, usec(&e)),
        field(&e, "REACTION_MS")
    );
    d.wait_status("mcq healthy after its restart", 90, |st| {
        state_of(st, "mcq") == "healthy"
            && service(st, "mcq")["total_restarts"].as_u64() == Some(before + 1)
    });
    assert_ne!(d.unit_prop(unit, "InvocationID"), invocation, "a new run");
    assert_eq!(
        d.unit_prop(unit, "NRestarts"),
        "0",
        "systemd did not restart it"
    );
    let others: Vec<String> = d
        .all_restarts(killed)
        .into_iter()
        .filter(|r| !r.starts_with("mcq.service"))
        .collect();
    assert!(others.is_empty(), "other restarts: {others:#?}");
}

/// `systemctl kill -s KILL` of the daemon: systemd restarts it
/// (Restart=on-failure), the new one answers from its own PID, all healthy,
/// with its persisted counts, and restarts no container.
fn sigkill_daemon_resumes(d: &Deployment) {
    let daemon = d.kind.daemon;
    let old = d.main_pid();
    let nrestarts: u64 = d.sys_prop(daemon, "NRestarts").parse().unwrap();
    let invocations: BTreeMap<&str, String> = services()
        .into_iter()
        .map(|s| (s, d.unit_prop(&format!("{s}.service"), "InvocationID")))
        .collect();
    let mcq_total = service(&d.status().unwrap(), "mcq")["total_restarts"].clone();
    // The restart of mcq (kill_is_restarted) was persisted where
    // StateDirectory= says, by the daemon's user.
    let state = d.sb.host_path(d.kind.state_file);
    assert!(state.is_file(), "no {}", d.kind.state_file);
    let uid = if d.kind.rootless { UID } else { 0 };
    assert_eq!(
        std::fs::metadata(&state).unwrap().uid(),
        uid,
        "{}",
        d.kind.state_file
    );
    let killed = now_usec();
    d.root(&["systemctl", "kill", "-s", "KILL", daemon]);
    d.wait("systemd to restart the daemon", 60, || {
        let pid = d.main_pid();
        pid != 0 && pid != old && d.sys_prop(daemon, "ActiveState") == "active"
    });
    let new = d.main_pid();
    let (st, seen) = d.wait_status("the new daemon: all healthy", 120, |st| {
        st["pid"].as_u64() == Some(u64::from(new)) && all_healthy(st)
    });
    eprintln!(
        "TIMING {}: daemon SIGKILLed -> new daemon (pid {new}) answers all healthy: {:.2} s",
        d.kind.name,
        secs(killed, seen)
    );
    let n: u64 = d.sys_prop(daemon, "NRestarts").parse().unwrap();
    assert_eq!(
        n,
        nrestarts + 1,
        "systemd's Restart=on-failure restarted it"
    );
    assert_eq!(
        service(&st, "mcq")["total_restarts"],
        mcq_total,
        "persisted"
    );
    for (s, inv) in &invocations {
        assert_eq!(
            &d.unit_prop(&format!("{s}.service"), "InvocationID"),
            inv,
            "{s} was restarted after the daemon's SIGKILL"
        );
    }
    assert!(
        d.all_restarts(killed).is_empty(),
        "{:#?}",
        d.all_restarts(killed)
    );
}

/// A boot recovery with stage management gated (mcp-master binds nothing
/// for 8 s): its container is killed while gated and the daemon restarts
/// it; then all healthy.
fn crash_during_boot_recovery(d: &Deployment) {
    d.stop_platform();
    let delay = "/srv/mcp-master/ready-delay-ms";
    d.ok(d.sb.write_file(delay, b"8000"));
    let (t0, start) = d.boot();
    d.wait(
        "mcp-master running while stage management is gated",
        120,
        || {
            d.unit_prop("mcp-master.service", "ActiveState") == "active"
                && d.status().is_some_and(|st| {
                    st["phase"] == "recovering" && state_of(&st, "mcp-master") == "starting"
                })
        },
    );
    let killed = d.kill_container("mcp-master");
    d.wait("the daemon's restart of mcp-master", 30, || {
        !d.restarts_of("mcp-master.service", killed).is_empty()
    });
    let e = d.restarts_of("mcp-master.service", killed)[0].clone();
    eprintln!(
        "TIMING {}: mcp-master killed while gated -> restart issued {:.3} s (REACTION_MS={})",
        d.kind.name,
        secs(killed, usec(&e)),
        field(&e, "REACTION_MS")
    );
    assert!(
        secs(killed, usec(&e)) < 10.0,
        "restart issued {:.1} s after the kill",
        secs(killed, usec(&e))
    );
    d.ok(d.sb.remove(delay));
    d.until_healthy(
        "boot, mcp-master killed while its stage was gated",
        t0,
        start,
    );
    let st = d.status().unwrap();
    assert!(service(&st, "mcp-master")["total_restarts"].as_u64() >= Some(1));
}

/// The images gone from the storage (and the containers), the archives the
/// guide's `images save` wrote still in /srv/mcp/images: the daemon loads
/// them, through transient units of the containers' manager, and the
/// platform comes up.
fn cold_start(d: &Deployment) {
    d.stop_platform();
    d.podman(&["rm", "-a", "-f"]);
    d.podman(&["rmi", "-a", "-f"]);
    assert_eq!(d.podman(&["images", "-q"]).trim(), "", "storage not empty");
    let index = d.sb.host_path("/srv/mcp/images/index.json");
    assert!(
        index.is_file(),
        "the guide's `images save` wrote no archive"
    );
    let (t0, start) = d.boot();
    d.until_healthy(
        "cold start (12 images loaded from /srv/mcp/images)",
        t0,
        start,
    );
    let loaded = d.daemon_entries("image loaded from archive", t0);
    assert_eq!(loaded.len(), 12, "{loaded:#?}");
    // podman ran outside the daemon's sandbox: `podman load` as transient
    // units of the containers' manager (mcp's for rootless: uid 850).
    let manager_uid = if d.kind.rootless { "850" } else { "0" };
    let loads: Vec<Value> =
        d.sb.journal_json(&["SYSLOG_IDENTIFIER=systemd", &format!("_UID={manager_uid}")])
            .into_iter()
            .filter(|e| {
                usec(e) >= t0 && {
                    let m = field(e, "MESSAGE");
                    m.starts_with("Finished mcrecover-podman-") && m.contains("podman load")
                }
            })
            .collect();
    assert_eq!(loads.len(), 12, "transient `podman load` units: {loads:#?}");
    let images = d.podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(images.lines().count(), 12, "{images}");
    let failed = d.daemon_entries("preflight failed", t0);
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The daemon with the NixOS module's drop-in (`--no-install`, the module's
/// ExecReload): restarted, it resumes without writing units; a reload
/// (`systemctl reload`, what `nixos-rebuild switch` does) goes through.
fn nixos_wiring(d: &Deployment) {
    let daemon = d.kind.daemon;
    let dir = format!("/etc/systemd/system/{daemon}.d");
    d.ok(d.sb.write_file(
        &format!("{dir}/overrides.conf"),
        d.kind.nixos_dropin.as_bytes(),
    ));
    d.root(&["systemctl", "daemon-reload"]);
    let since = now_usec();
    d.root(&["systemctl", "restart", daemon]);
    let pid = d.main_pid();
    // Generous: once (1 of ~20 rootful runs) mcns's published UDP port 53
    // stopped answering here and the new daemon's ramp restarted mcns only
    // at the stage timeout (120 s); the platform then came back by itself.
    let (_, seen) = d.wait_status("the NixOS-wired daemon: all healthy", 240, |st| {
        st["pid"].as_u64() == Some(u64::from(pid)) && all_healthy(st)
    });
    if secs(since, seen) > 30.0 {
        eprintln!(
            "WARNING {}: the restarted daemon took {:.1} s to see all healthy; restarts: {:#?}",
            d.kind.name,
            secs(since, seen),
            d.all_restarts(since)
        );
    }
    let cmd = d.sys_prop(daemon, "ExecStart");
    assert!(cmd.contains("--no-install"), "{cmd}");
    assert!(
        d.daemon_entries("units installed", since).is_empty(),
        "--no-install wrote units"
    );
    let reload_at = now_usec();
    d.root(&["systemctl", "reload", daemon]);
    d.wait("the daemon's SIGHUP reload", 30, || {
        !d.daemon_entries("SIGHUP: reloading configuration", reload_at)
            .is_empty()
    });
    assert_eq!(d.sys_prop(daemon, "ActiveState"), "active");
    assert_eq!(d.main_pid(), pid, "a reload, not a restart");
    let (st, _) = d.wait_status("all healthy after the reload", 60, all_healthy);
    assert_eq!(st["pid"].as_u64(), Some(u64::from(pid)));
    if secs(since, seen) <= 30.0 {
        assert!(
            d.all_restarts(since).is_empty(),
            "{:#?}",
            d.all_restarts(since)
        );
    }
}

fn deployment(kind: Kind) {
    let Some(d) = prepare(kind) else {
        return;
    };
    let (t0, start) = install_as_the_guide_says(&d);
    let (warm, _) = d.until_healthy("boot", t0, start);
    guide_status_lines(&d);
    assert_shipped_daemon(&d);
    kill_is_restarted(&d);
    sigkill_daemon_resumes(&d);
    crash_during_boot_recovery(&d);
    cold_start(&d);
    nixos_wiring(&d);
    eprintln!(
        "TIMING {} summary: systemctl start metacircular.target -> all healthy in {warm:.2} s",
        kind.name
    );
}

#[test]
fn rootless_deployment_as_the_operator_guide_says() {
    deployment(ROOTLESS);
}

#[test]
fn rootful_deployment_as_the_operator_guide_says() {
    deployment(ROOTFUL);
}

// ---------------------------------------------------------------------------
// Without a sandbox.
// ---------------------------------------------------------------------------

/// The lines of the ```sh block right after `marker` in the guide.
fn guide_block(marker: &str) -> Vec<&'static str> {
    let at = GUIDE
        .find(marker)
        .unwrap_or_else(|| panic!("docs/operator-guide.md has no {marker}"));
    let rest = &GUIDE[at + marker.len()..];
    let open = rest
        .find("```sh\n")
        .expect("a ```sh block after the marker");
    assert!(
        rest[..open].trim().is_empty(),
        "the ```sh block must follow {marker} directly"
    );
    let body = &rest[open + "```sh\n".len()..];
    let close = body.find("```").expect("the block's end");
    body[..close]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[test]
fn operator_guide_blocks_are_what_the_tests_run() {
    for kind in [ROOTLESS, ROOTFUL] {
        let doc = guide_block(kind.marker);
        let test: Vec<&str> = kind.steps.iter().map(|s| s.line).collect();
        assert_eq!(
            doc, test,
            "docs/operator-guide.md's {} block and tests/shipped_units_e2e.rs differ",
            kind.name
        );
    }
    // The guide's stop line (by hand, and the "whole recovery" drill) is the
    // one the tests stop the platform with, and names every service.
    assert!(
        GUIDE.lines().filter(|l| *l == STOP_ROOTLESS).count() >= 2,
        "docs/operator-guide.md no longer says: {STOP_ROOTLESS}"
    );
    for line in [STOP_ROOTLESS, STOP_ROOTFUL] {
        let named: Vec<&str> = line
            .split_whitespace()
            .skip_while(|w| *w != "'metacircular-*'")
            .skip(1)
            .collect();
        assert_eq!(named, services(), "{line}");
    }
}

#[test]
fn deployed_configurations_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [ROOTLESS, ROOTFUL] {
        let path = dir.path().join(format!("{}.toml", kind.name));
        std::fs::write(&path, deployed_config(kind)).unwrap();
        let cfg = mcrecover::config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", kind.name));
        let names: Vec<&str> = cfg.services.keys().map(String::as_str).collect();
        let mut want = services();
        want.sort_unstable();
        assert_eq!(
            names, want,
            "{}: the 12 container services, nothing else",
            kind.name
        );
    }
}

/// `KEY=VALUE` lines of a unit file's section (`[Service]`), in order.
fn unit_settings(unit: &str, section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in unit.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == format!("[{section}]");
            continue;
        }
        if !inside || line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

fn setting(unit: &str, section: &str, key: &str) -> Vec<String> {
    unit_settings(unit, section)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// Evaluates nixos-module/default.nix's `config` for the configuration
/// file `config_file` (the module's `configFile` option), with stubbed
/// `lib`/`pkgs` as nixos-module/smoke.nix does (no nixpkgs here): JSON.
fn eval_module(config_file: &Path) -> Value {
    let module = workspace_root().join("nixos-module/default.nix");
    let expr = format!(
        r#"
let
  tag = kind: {{ _stubType = kind; }};
  resolve = v:
    if builtins.isAttrs v && v ? _if then (if v._if then resolve v.content else {{ }})
    else if builtins.isAttrs v && v ? _merge then builtins.foldl' merge {{ }} (map resolve v._merge)
    else if builtins.isAttrs v && v ? _default then resolve v.content
    else if builtins.isAttrs v then builtins.mapAttrs (_: resolve) v
    else v;
  merge = a: b: a // builtins.mapAttrs (n: v:
    if builtins.isAttrs v && a ? ${{n}} && builtins.isAttrs a.${{n}} then merge a.${{n}} v else v) b;
  types = {{
    str = tag "str"; bool = tag "bool"; int = tag "int"; path = tag "path"; port = tag "port";
    package = tag "package"; ints = {{ u32 = tag "u32"; unsigned = tag "unsigned"; positive = tag "positive"; }};
    enum = _: tag "enum"; nullOr = _: tag "nullOr"; listOf = _: tag "listOf"; attrsOf = _: tag "attrsOf";
    submodule = _: tag "submodule"; either = _: _: tag "either"; strMatching = _: tag "strMatching";
  }};
  lib = {{
    inherit types;
    mkOption = a: a; mkEnableOption = d: {{ description = d; }};
    mkIf = c: content: {{ _if = c; inherit content; }};
    mkMerge = parts: {{ _merge = parts; }};
    mkDefault = content: {{ _default = true; inherit content; }};
    literalExpression = t: t;
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalString = c: s: if c then s else "";
    optionalAttrs = c: s: if c then s else {{ }};
    concatStringsSep = builtins.concatStringsSep;
    mapAttrs = builtins.mapAttrs;
    filterAttrs = pred: set: builtins.listToAttrs (map (n: {{ name = n; value = set.${{n}}; }})
      (builtins.filter (n: pred n set.${{n}}) (builtins.attrNames set)));
  }};
  pkgs = {{
    formats.toml = _: {{ type = tag "toml"; generate = name: value: "/nix/store/stub-${{name}}"; }};
    runCommand = name: attrs: script: "/nix/store/stub-${{name}}";
    writeTextDir = path: text: {{ _writeTextDir = path; _text = text; }};
    util-linux = "/nix/store/stub-util-linux";
    iproute2 = "/nix/store/stub-iproute2";
    coreutils = "/nix/store/stub-coreutils";
  }};
  module = import {module} {{
    inherit lib pkgs;
    config = {{
      services.mcrecover = {{
        enable = true;
        package = "/nix/store/stub-mcrecover";
        settings = {{ }};
        configFile = "{config}";
        createUser = true;
        subIdRange = null;
        unprivilegedPortStart = 53;
        userManagerPath = true;
        wantedBy = [ "multi-user.target" ];
        extraDaemonArgs = [ ];
      }};
      virtualisation.podman.package = "/nix/store/stub-podman";
      systemd.package = "/nix/store/stub-systemd";
    }};
  }};
in resolve module.config
"#,
        module = module.display(),
        config = config_file.display(),
    );
    let state = tempfile::tempdir().unwrap();
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .env("NIX_STATE_DIR", state.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nixos-module/default.nix does not evaluate for {}:\n{}",
        config_file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The module's drop-in for the daemon as a unit file, store paths replaced
/// by the sandbox's (see [`NIXOS_ROOTLESS_DROPIN`]).
fn module_dropin(svc: &Value) -> String {
    let debian = |s: &str| {
        s.replace("/nix/store/stub-mcrecover/bin/", "/usr/bin/")
            .replace("/nix/store/stub-systemd/bin/", "/bin/")
            .replace("/nix/store/stub-coreutils/bin/", "/bin/")
    };
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    let mut text = String::from("[Unit]\n");
    for w in list(&svc["wants"]) {
        text += &format!("Wants={w}\n");
    }
    for a in list(&svc["after"]) {
        text += &format!("After={a}\n");
    }
    text += "\n[Service]\n";
    if let Some(env) = svc["environment"].as_object() {
        for (k, v) in env {
            text += &format!("Environment={k}={}\n", v.as_str().unwrap());
        }
    }
    let sc = svc["serviceConfig"].as_object().unwrap();
    for key in ["ExecStart", "ExecReload"] {
        for v in list(&sc[key]) {
            text += &format!("{key}={}\n", debian(&v));
        }
    }
    text
}

#[test]
fn nixos_module_wires_the_units_these_tests_run() {
    let have_nix = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_nix {
        assert!(
            !e2e_required(),
            "nix-instantiate is missing and MCRECOVER_REQUIRE_E2E=1 (apt-get install -y nix-bin)"
        );
        eprintln!("SKIP nixos_module_wires_the_units_these_tests_run: no nix-instantiate");
        return;
    }
    let root = workspace_root();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();

    // The package installs the shipped files unchanged but for the binary's
    // path: units/mcrecover{,@}.service -> lib/systemd/system, the policy ->
    // share/dbus-1/system.d (which services.dbus.packages installs).
    let package = read("nixos-module/package.nix");
    let words = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let package_words = words(&package);
    for needle in [
        "for u in units/mcrecover.service units/mcrecover@.service; do",
        r#"install -Dm644 "$u" "$out/lib/systemd/system/$(basename "$u")""#,
        r"install -Dm644 units/dbus/net.metacircular.Recovery1.conf \ $out/share/dbus-1/system.d/net.metacircular.Recovery1.conf",
        r#"sed -i "s|/usr/bin/mcrecover|$out/bin/mcrecover|g" "$f""#,
    ] {
        assert!(
            package_words.contains(needle),
            "nixos-module/package.nix no longer says {needle:?}"
        );
    }
    let sed_lines = package.lines().filter(|l| l.contains("sed -i")).count();
    assert_eq!(
        sed_lines, 1,
        "package.nix edits the units only to name its binary"
    );

    let dir = tempfile::tempdir().unwrap();
    for kind in [ROOTLESS, ROOTFUL] {
        let cfg = dir.path().join(format!("{}.toml", kind.name));
        std::fs::write(&cfg, deployed_config(kind)).unwrap();
        let c = eval_module(&cfg);
        let ctx = kind.name;
        let unit_file = if kind.rootless {
            "mcrecover@.service"
        } else {
            "mcrecover.service"
        };
        let shipped = read(&format!("units/{unit_file}"));
        let daemon_name = kind.daemon.trim_end_matches(".service");

        // Units from the package: the shipped files.
        assert!(
            c["systemd"]["packages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "/nix/store/stub-mcrecover"),
            "{ctx}: systemd.packages lacks the package: {c:#}"
        );
        // The daemon: a drop-in over the packaged unit, and only ExecStart
        // and ExecReload in it: User=, StateDirectory= and the hardening are
        // the shipped file's, as in these tests.
        let services = c["systemd"]["services"].as_object().unwrap();
        assert_eq!(
            services.keys().collect::<Vec<_>>(),
            vec![daemon_name],
            "{ctx}: the module's daemon unit is the one these tests enable"
        );
        let svc = &services[daemon_name];
        assert_eq!(svc["overrideStrategy"], "asDropin", "{ctx}");
        let keys: Vec<&String> = svc["serviceConfig"].as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["ExecReload", "ExecStart"], "{ctx}: {svc:#}");
        assert_eq!(
            module_dropin(svc),
            kind.nixos_dropin,
            "{ctx}: the module's drop-in (left) is not what the sandbox runs (right)"
        );
        // Its ExecStart is the shipped one plus --no-install (and the bus
        // address the shipped rootless unit gives in its environment).
        let exec = setting(&shipped, "Service", "ExecStart");
        assert_eq!(
            exec,
            vec![format!("/usr/bin/mcrecover daemon --config {CONFIG}")],
            "{ctx}"
        );
        let module_exec = svc["serviceConfig"]["ExecStart"][1].as_str().unwrap();
        let module_exec = module_exec.replace("/nix/store/stub-mcrecover/bin/", "/usr/bin/");
        assert!(
            module_exec.starts_with(&format!("{} --no-install", exec[0])),
            "{ctx}: {module_exec}"
        );
        let env = setting(&shipped, "Service", "Environment");
        if kind.rootless {
            assert_eq!(setting(&shipped, "Service", "User"), vec!["%i"]);
            assert_eq!(
                setting(&shipped, "Service", "StateDirectory"),
                vec!["mcrecover/%i"]
            );
            assert_eq!(
                env,
                vec![
                    "XDG_RUNTIME_DIR=/run/user/%i",
                    "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/%i/bus",
                    "MALLOC_ARENA_MAX=1"
                ]
            );
            assert!(module_exec.ends_with("--bus-address unix:path=/run/user/850/bus"));
            for (k, v) in svc["environment"].as_object().unwrap() {
                let line = format!("{k}={}", v.as_str().unwrap()).replace("850", "%i");
                assert!(env.contains(&line), "{ctx}: {line} not in the shipped unit");
            }
        } else {
            assert!(setting(&shipped, "Service", "User").is_empty());
            assert_eq!(env, vec!["MALLOC_ARENA_MAX=1"], "{ctx}");
            assert_eq!(
                setting(&shipped, "Service", "StateDirectory"),
                vec!["mcrecover"]
            );
            assert_eq!(module_exec, format!("{} --no-install", exec[0]));
        }
        // The system target wants exactly the daemon the tests enable.
        let target = &c["systemd"]["targets"]["metacircular"];
        assert_eq!(
            target["wants"],
            serde_json::json!([kind.daemon]),
            "{ctx}: {target:#}"
        );
        assert_eq!(
            target["wantedBy"],
            serde_json::json!(["multi-user.target"]),
            "{ctx}"
        );
        // The configuration where the shipped unit and the tests have it.
        assert!(
            c["environment"]["etc"]["mcrecover/mcrecover.toml"].is_object(),
            "{ctx}: no /etc/mcrecover/mcrecover.toml"
        );
        // D-Bus policy: the package's (= units/dbus/..., installed by these
        // tests); rootless also the module's own, for the same user.
        let dbus = c["services"]["dbus"]["packages"].as_array().unwrap();
        assert_eq!(dbus[0], "/nix/store/stub-mcrecover", "{ctx}");
        if kind.rootless {
            assert_eq!(dbus.len(), 2, "{ctx}: {dbus:#?}");
            let policy = dbus[1]["_text"].as_str().unwrap();
            assert!(
                policy.contains(r#"<policy user="mcp">"#)
                    && policy.contains(r#"<allow own="net.metacircular.Recovery1"/>"#),
                "{policy}"
            );
            assert_eq!(
                dbus[1]["_writeTextDir"],
                "share/dbus-1/system.d/net.metacircular.Recovery1.metacircular.conf"
            );
            // The user the tests have: uid 850, home /srv/mcp, lingering.
            let mcp = &c["users"]["users"]["mcp"];
            assert_eq!(mcp["uid"], 850, "{mcp:#}");
            assert_eq!(mcp["home"], "/srv/mcp", "{mcp:#}");
            assert_eq!(mcp["linger"], true, "{mcp:#}");
            assert_eq!(c["users"]["groups"]["mcp"]["gid"], 850);
            assert_eq!(
                c["boot"]["kernel"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"],
                53
            );
        } else {
            assert_eq!(dbus.len(), 1, "{ctx}: {dbus:#?}");
            assert_eq!(c["users"]["users"], serde_json::json!({}), "{ctx}");
        }
        // The shipped policy lets the daemon's user own the name (rootless:
        // the extra rootless policy, the one the module generates likewise).
        let policy = if kind.rootless {
            read("units/dbus/net.metacircular.Recovery1-rootless.conf")
        } else {
            read("units/dbus/net.metacircular.Recovery1.conf")
        };
        let owner = if kind.rootless { "mcp" } else { "root" };
        let block = policy
            .split(&format!("<policy user=\"{owner}\">"))
            .nth(1)
            .and_then(|b| b.split("</policy>").next())
            .unwrap_or_else(|| panic!("no <policy user=\"{owner}\"> in the shipped policy"));
        assert!(
            block.contains(r#"<allow own="net.metacircular.Recovery1"/>"#),
            "{block}"
        );
    }
}
