//! Shared helpers of the daemon's end-to-end tests (tests/daemon_e2e.rs,
//! tests/chaos_soak.rs): a sandbox with the example platform (rootful,
//! service backend, stand-in images) under the SHIPPED `units/mcrecover.service`
//! plus a test drop-in, the daemon's status and journal, faults, and file
//! hashes.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcrecover_testbed::{e2e_gate, workspace_root, ImageSet, Sandbox, SandboxOptions};
use serde_json::Value;

pub const EXAMPLE: &str = include_str!("../../examples/metacircular.toml");
pub const DAEMON: &str = "mcrecover.service";
pub const CONFIG: &str = "/srv/daemon-test.toml";
pub const HOOK: &str = "/srv/hook.sh";
pub const HOOK_DIR: &str = "/srv/hook-runs";
/// Restart issued (priority 5).
pub const RESTART_ID: &str = "5e8a0b3c2d1f4e6a9b7c8d0e1f2a3b4c";
/// Escalation (priority 2).
pub const ESCALATE_ID: &str = "9d2f1c4e7b3a4f0e8c6d5b2a1f0e9c87";

/// Records its environment and stdin per event id, and one line per run;
/// also who it ran as, whether it could write the daemon's unit directory
/// (it must not), and the pid of a process it leaves behind in a new
/// session (killed with the hook's unit: issue 12, items 5 and 8).
pub const HOOK_SCRIPT: &str = r#"#!/bin/sh
d=/srv/hook-runs
mkdir -p "$d"
env | grep '^MCRECOVER_' | sort > "$d/$MCRECOVER_EVENT_ID.env"
cat > "$d/$MCRECOVER_EVENT_ID.json"
id -u > "$d/$MCRECOVER_EVENT_ID.uid"
if touch /etc/systemd/system/mcrecover-hook-was-here 2>/dev/null; then echo written; else echo read-only; fi > "$d/$MCRECOVER_EVENT_ID.etc"
setsid sleep 1002 </dev/null >/dev/null 2>&1 &
echo $! > "$d/$MCRECOVER_EVENT_ID.leftover"
echo "$MCRECOVER_EVENT_ID" >> "$d/runs.log"
"#;

/// What a hook or check that must not write the daemon's unit directory
/// would have left there (the sandbox shares the host's /etc: removed by
/// [`Platform::drop`] if a regression ever wrote it).
pub const UNIT_DIR_PROBES: [&str; 2] = [
    "/etc/systemd/system/mcrecover-hook-was-here",
    "/etc/systemd/system/mcrecover-check-was-here",
];

pub fn shipped_unit() -> PathBuf {
    workspace_root().join("units/mcrecover.service")
}

pub fn shipped_policy() -> PathBuf {
    workspace_root().join("units/dbus/net.metacircular.Recovery1.conf")
}

/// A sandbox with the example platform (rootful, service backend) under the
/// daemon. Dropped during a panic, it prints the journal first.
pub struct Platform {
    pub sb: Sandbox,
}

impl Drop for Platform {
    fn drop(&mut self) {
        for f in UNIT_DIR_PROBES {
            let _ = std::fs::remove_file(f);
        }
        if std::thread::panicking() {
            eprintln!(
                "=== journal of {DAEMON} (with fields) ===\n{}\n=== last 400 lines of the whole journal ===\n{}",
                daemon_journal(&self.sb),
                self.sb.journal_tail(400)
            );
        }
    }
}

/// The daemon's journal, one line per entry with its own fields (the
/// structured ones the short formats hide).
pub fn daemon_journal(sb: &Sandbox) -> String {
    let skip = [
        "MESSAGE",
        "PRIORITY",
        "SYSLOG_IDENTIFIER",
        "TARGET",
        "CODE_FILE",
        "CODE_LINE",
    ];
    sb.journal_json(&["-u", DAEMON])
        .iter()
        .map(|e| {
            let mut line = format!(
                "{} {} [{}] {}",
                usec(e),
                field(e, "SYSLOG_IDENTIFIER"),
                field(e, "PRIORITY"),
                field(e, "MESSAGE")
            );
            if let Some(obj) = e.as_object() {
                for (k, v) in obj {
                    if !k.starts_with('_') && !skip.contains(&k.as_str()) {
                        line.push_str(&format!(" {k}={}", v.as_str().unwrap_or("?")));
                    }
                }
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn ok<T>(sb: &Sandbox, r: Result<T, mcrecover_testbed::TestbedError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}\njournal (tail):\n{}", sb.journal_tail(300)))
}

/// The rootful example with 1 s checks (without the external mcias, which
/// cannot be reached from a sandbox), a `[watch]` section with short
/// backoffs, `escalate_after` and the hook, and `edit` applied.
pub fn daemon_config(escalate_after: u32, edit: impl FnOnce(String) -> String) -> String {
    let text = EXAMPLE.replacen("mode = \"rootless\"", "mode = \"rootful\"", 1);
    assert_ne!(
        text, EXAMPLE,
        "the example no longer says mode = \"rootless\""
    );
    let defaults = "interval = \"10s\"\ntimeout = \"2s\"";
    assert!(
        text.contains(defaults),
        "the example's check_defaults changed"
    );
    let text = text.replacen(defaults, "interval = \"1s\"\ntimeout = \"1s\"", 1);
    let cut = text
        .find("# MCIAS runs on svc")
        .expect("the example's mcias section moved");
    let text = edit(without_watch(&text[..cut]));
    format!(
        "{text}\n[watch]\nbackoff_initial = \"200ms\"\nbackoff_max = \"2s\"\n\
         escalate_after = {escalate_after}\nescalate_window = \"2m\"\n\
         hook = [\"{HOOK}\"]\nhook_timeout = \"10s\"\n"
    )
}

/// `text` without its `[watch]` table (if any): the tests write their own.
pub fn without_watch(text: &str) -> String {
    let Some(start) = text.find("\n[watch]\n") else {
        return text.to_string();
    };
    let body = start + "\n[watch]\n".len();
    let end = text[body..].find("\n[").map_or(text.len(), |i| body + i);
    format!("{}{}", &text[..start], &text[end..])
}

impl Platform {
    /// Boots the sandbox, installs everything and starts the daemon
    /// (`systemctl start`, or `--no-block` when `block` is false). With
    /// `block`, waits until the daemon watches a healthy platform.
    pub fn boot(name: &str, config: &str, block: bool) -> Option<Platform> {
        Self::boot_with(name, config, block, |_| {})
    }

    /// [`Platform::boot`], running `setup` just before the daemon starts.
    pub fn boot_with(
        name: &str,
        config: &str,
        block: bool,
        setup: impl FnOnce(&Sandbox),
    ) -> Option<Platform> {
        let mut needs = Vec::new();
        for f in [shipped_unit(), shipped_policy()] {
            if !f.is_file() {
                needs.push(format!("{} (the shipped units)", f.display()));
            }
        }
        if !e2e_gate(name, &needs) {
            return None;
        }
        let mut opts = SandboxOptions::metacircular(name);
        opts.quadlet_generator = None;
        Some(Self::boot_on(opts, "service", config, block, setup))
    }

    /// The sandbox `opts` (its base, name, ...; rootful: its rootless user
    /// is dropped) with everything installed and the daemon started on
    /// `backend` (`service`: units in /run/systemd/system; `quadlet`:
    /// .container files in /etc/containers/systemd). Hooks and exec checks
    /// run as the platform user (mcp): it must exist (a host-base sandbox
    /// shares the host's /etc/passwd). The caller has gated the test.
    pub fn boot_on(
        opts: SandboxOptions,
        backend: &str,
        config: &str,
        block: bool,
        setup: impl FnOnce(&Sandbox),
    ) -> Platform {
        let p = Self::prepare_on(opts, backend, config, &ImageSet::metacircular().unwrap());
        setup(&p.sb);
        p.start_daemon(block);
        p
    }

    /// [`Platform::boot_on`] up to the daemon's start, with `images`
    /// loaded into root's storage: everything installed, the daemon's unit
    /// loaded, nothing started ([`Platform::start_daemon`] starts it).
    pub fn prepare_on(
        mut opts: SandboxOptions,
        backend: &str,
        config: &str,
        images: &ImageSet,
    ) -> Platform {
        mcrecover_testbed::ensure_host_user(&mcrecover_testbed::RootlessUser::mcp()).unwrap();
        opts.rootless_user = None;
        let sb = Sandbox::boot(opts).unwrap();
        let p = Platform { sb };
        let sb = &p.sb;
        ok(
            sb,
            sb.install_bin(Path::new(env!("CARGO_BIN_EXE_mcrecover")), "mcrecover"),
        );
        ok(sb, sb.load_images(images, None));
        // StateDirectory=mcrecover: per sandbox, empty at start.
        ok(sb, sb.private_var_lib(&["mcrecover"]));
        ok(sb, sb.write_file_mode(HOOK, HOOK_SCRIPT.as_bytes(), 0o755));
        ok(sb, sb.run_ok(&["mkdir", "-p", HOOK_DIR]).map(|_| ()));
        ok(sb, sb.run_ok(&["chown", "850:850", HOOK_DIR]).map(|_| ()));
        ok(sb, sb.write_file(CONFIG, config.as_bytes()));
        ok(
            sb,
            sb.copy_in(
                &shipped_unit(),
                "/run/systemd/system/mcrecover.service",
                0o644,
                None,
            ),
        );
        // The test's command line; the unit's hardening stays as shipped,
        // plus write access to where this test puts units (a sandbox has no
        // /etc of its own).
        let dropin = format!(
            "[Service]\nExecStart=\nExecStart=/usr/bin/mcrecover daemon --config {CONFIG} \
             --backend {backend} --unit-dir /run/systemd/system\n\
             ReadWritePaths=/run/systemd/system\n"
        );
        ok(
            sb,
            sb.write_file(
                "/run/systemd/system/mcrecover.service.d/50-testbed.conf",
                dropin.as_bytes(),
            ),
        );
        ok(sb, sb.install_dbus_policy(&shipped_policy()));
        ok(sb, sb.run_ok(&["systemctl", "daemon-reload"]).map(|_| ()));
        p
    }

    /// Starts the daemon (`systemctl start`, or `--no-block` when `block`
    /// is false). With `block`, waits until it watches a healthy platform.
    pub fn start_daemon(&self, block: bool) {
        let sb = &self.sb;
        let start: &[&str] = if block {
            &["systemctl", "start", DAEMON]
        } else {
            &["systemctl", "start", "--no-block", DAEMON]
        };
        let out = sb.run(start);
        assert!(
            out.status.success(),
            "systemctl start {DAEMON}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(
                &sb.run(&["systemctl", "status", "--no-pager", DAEMON])
                    .stdout
            )
        );
        if block {
            self.wait_status("the daemon watching a healthy platform", 180, all_healthy);
        }
    }

    /// `mcrecover ARGS` inside, as root or as `uid`.
    pub fn mcrecover(&self, uid: Option<u32>, args: &[&str]) -> Output {
        let mut argv = vec!["/usr/bin/mcrecover", "--config", CONFIG];
        argv.extend_from_slice(args);
        let out = match uid {
            Some(uid) => self.sb.run_as(uid, &argv),
            None => self.sb.run(&argv),
        };
        eprintln!(
            "$ {}mcrecover {} -> {:?}\n{}",
            uid.map(|u| format!("(uid {u}) ")).unwrap_or_default(),
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        out
    }

    /// The daemon's snapshot (`mcrecover status --json`), if it answered.
    pub fn status(&self) -> Option<Value> {
        let out = self
            .sb
            .run(&["/usr/bin/mcrecover", "--config", CONFIG, "status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v.get("phase").is_some() && v["services"].is_array()).then_some(v)
    }

    /// Polls the status until `pred` holds; panics with the last one after
    /// `secs` seconds.
    pub fn wait_status(
        &self,
        what: &str,
        secs: u64,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = None;
        loop {
            if let Some(st) = self.status() {
                if pred(&st) {
                    return st;
                }
                last = Some(st);
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s waiting for {what}; last status: {:#}",
                last.unwrap_or(Value::Null)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Polls `cond` until it holds; panics after `secs` seconds.
    pub fn wait(&self, what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s waiting for {what}; status: {:#}",
                self.status().unwrap_or(Value::Null)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A system unit's property.
    pub fn prop(&self, unit: &str, name: &str) -> String {
        let out = self.sb.run(&["systemctl", "show", "-P", name, unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The daemon's peak RSS (KiB, `VmHWM`) and thread count now, from
    /// /proc of its main process.
    pub fn footprint(&self) -> (u64, u64) {
        let pid = self.prop(DAEMON, "MainPID");
        let out = self.sb.run(&["cat", &format!("/proc/{pid}/status")]);
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{status}"))
        };
        (field("VmHWM:"), field("Threads:"))
    }

    /// Checks that the shipped unit's `MemoryMax=` and `TasksMax=` leave
    /// at least 4x room above what the daemon used so far (peak RSS,
    /// threads), and prints the figures (`FOOTPRINT ...`).
    pub fn assert_limits_have_room(&self, what: &str) {
        let (hwm_kib, threads) = self.footprint();
        let max: u64 = self.prop(DAEMON, "MemoryMax").parse().unwrap_or(u64::MAX);
        let tasks: u64 = self.prop(DAEMON, "TasksMax").parse().unwrap_or(u64::MAX);
        eprintln!(
            "FOOTPRINT {what}: peak RSS {hwm_kib} KiB, {threads} threads; MemoryMax={max} TasksMax={tasks}"
        );
        assert!(
            hwm_kib * 1024 * 4 <= max,
            "{what}: peak RSS {hwm_kib} KiB vs MemoryMax={max}"
        );
        assert!(
            threads * 4 <= tasks,
            "{what}: {threads} threads vs TasksMax={tasks}"
        );
    }

    /// The daemon's "restart issued" entries for `unit`, oldest first.
    pub fn restarts_of(&self, unit: &str) -> Vec<Value> {
        self.entries(RESTART_ID)
            .into_iter()
            .filter(|e| e["UNIT"] == unit)
            .collect()
    }

    /// The daemon's restart entries for `unit` at or after `since_usec`.
    pub fn restarts_since(&self, unit: &str, since_usec: u128) -> Vec<Value> {
        self.restarts_of(unit)
            .into_iter()
            .filter(|e| usec(e) >= since_usec)
            .collect()
    }

    /// The journal entries with MESSAGE_ID=`id`.
    pub fn entries(&self, id: &str) -> Vec<Value> {
        self.sb.journal_json(&[&format!("MESSAGE_ID={id}")])
    }

    /// The `crit` escalation entries for `unit`.
    pub fn escalations_of(&self, unit: &str) -> Vec<Value> {
        self.sb
            .journal_json(&["-p", "crit", &format!("MESSAGE_ID={ESCALATE_ID}")])
            .into_iter()
            .filter(|e| e["UNIT"] == unit)
            .collect()
    }

    /// Event ids the hook ran for, one per run, in order.
    pub fn hook_runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.sb.host_path(&format!("{HOOK_DIR}/runs.log")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Whether the process `pid` (in the sandbox) runs a command line
    /// containing `needle`.
    pub fn alive(&self, pid: &str, needle: &str) -> bool {
        let cmdline = format!("/proc/{}/cmdline", pid.trim());
        self.sb
            .run(&[
                "sh",
                "-c",
                &format!("tr '\\0' ' ' < {cmdline} | grep -q '{needle}'"),
            ])
            .status
            .success()
    }

    /// Kills the main process of `svc`'s container with SIGKILL (from the
    /// sandbox's PID namespace, as an OOM kill would).
    pub fn kill_container(&self, svc: &str) {
        let pid = ok(
            &self.sb,
            self.sb
                .run_ok(&["podman", "inspect", "--format", "{{.State.Pid}}", svc]),
        );
        let pid = pid.trim();
        assert!(
            pid.parse::<u32>().is_ok_and(|p| p > 0),
            "{svc}: pid {pid:?}"
        );
        ok(
            &self.sb,
            self.sb.run_ok(&["kill", "-KILL", pid]).map(|_| ()),
        );
        eprintln!("killed {svc}'s main process {pid}");
    }

    pub fn fault(&self, dir: &str, what: &str) {
        ok(
            &self.sb,
            self.sb.write_file(&format!("{dir}/fault"), what.as_bytes()),
        );
    }

    pub fn clear_fault(&self, dir: &str) {
        ok(&self.sb, self.sb.remove(&format!("{dir}/fault")));
    }
}

/// Boot recoveries of the daemon that did not end `AllHealthy` (journal
/// entries "recovery finished; watching" with their OUTCOME), and every
/// "preflight failed" ERROR: empty when each recovery went through.
pub fn recovery_problems(sb: &Sandbox) -> Vec<String> {
    let mut out: Vec<String> = sb
        .journal_json(&["-u", DAEMON, "MESSAGE=recovery finished; watching"])
        .iter()
        .filter(|e| e.get("OUTCOME").is_some() && field(e, "OUTCOME") != "AllHealthy")
        .map(|e| format!("recovery at {}: {}", usec(e), field(e, "OUTCOME")))
        .collect();
    out.extend(
        sb.journal_json(&["-u", DAEMON, "MESSAGE=preflight failed"])
            .iter()
            .map(|e| format!("preflight failed at {}: {}", usec(e), field(e, "ERROR"))),
    );
    out
}

pub fn service<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in status: {st:#}"))
}

pub fn state_of(st: &Value, name: &str) -> String {
    service(st, name)["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

pub fn all_healthy(st: &Value) -> bool {
    st["phase"] == "watching"
        && st["services"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["state"] == "healthy"))
}

/// A journal entry's wall-clock time in microseconds.
pub fn usec(e: &Value) -> u128 {
    e["__REALTIME_TIMESTAMP"].as_str().unwrap().parse().unwrap()
}

pub fn now_usec() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

pub fn field(e: &Value, name: &str) -> String {
    e[name].as_str().unwrap_or("").to_string()
}

pub fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    ring::digest::digest(&ring::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every regular file below `dir` (relative path -> sha256).
pub fn tree_hashes(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(root, &p, out);
            } else if t.is_file() {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), sha256(&p));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// mcq's https check every `interval_s` s, `threshold` failures before a
/// restart (the HTTP 500 tests on both bases).
pub fn https_500_config(escalate_after: u32, interval_s: u64, threshold: u64) -> String {
    daemon_config(escalate_after, |t| {
        let old = "body_contains = '\"status\":\"ok\"'\n";
        assert!(t.contains(old), "the example's mcq check changed");
        t.replacen(
            old,
            &format!("{old}interval = \"{interval_s}s\"\nfailure_threshold = {threshold}\n"),
            1,
        )
    })
}

/// mcq answers HTTP 500 (its config from [`https_500_config`] with
/// `interval_s`, `threshold`): no restart for the first failure, one after
/// `threshold` failures `interval_s` apart (never earlier), healthy again
/// once the fault is gone, never escalated. Shared by both bases.
pub fn https_500_restarts_only_after_the_threshold(p: &Platform, interval_s: u64, threshold: u64) {
    let unit = "mcq.service";
    let invocation = p.prop(unit, "InvocationID");
    let before = service(&p.status().unwrap(), "mcq")["total_restarts"].clone();
    let faulted_at = now_usec();
    let since_fault = || -> Vec<Value> {
        p.restarts_of(unit)
            .into_iter()
            .filter(|e| usec(e) >= faulted_at)
            .collect()
    };
    p.fault("/srv/mcq", "500");

    // The first failing result: not restarted for it.
    let st = p.wait_status("mcq's check to fail", 60, |st| {
        service(st, "mcq")["health"]["ok"] == false
    });
    let mcq = service(&st, "mcq");
    assert_eq!(mcq["total_restarts"], before, "{mcq:#}");
    assert!(since_fault().is_empty(), "restarted on the first failure");
    assert_eq!(p.prop(unit, "InvocationID"), invocation);

    p.wait("the restart of mcq", 90, || !since_fault().is_empty());
    let e = since_fault()[0].clone();
    p.clear_fault("/srv/mcq");
    // threshold consecutive failures at least interval_s apart, all after
    // the fault was written: the restart cannot come earlier (0.5 s slack
    // for timer granularity).
    let min_us = u128::from((threshold - 1) * interval_s) * 1_000_000 - 500_000;
    assert!(
        usec(&e) - faulted_at >= min_us,
        "restart issued {} ms after the fault, before {threshold} checks {interval_s} s apart could fail: {e:#}",
        (usec(&e) - faulted_at) / 1000
    );
    assert!(field(&e, "REASON").contains("500"), "{e:#}");
    p.wait_status("mcq healthy after the fault is gone", 90, |st| {
        state_of(st, "mcq") == "healthy"
    });
    assert_ne!(p.prop(unit, "InvocationID"), invocation);
    assert!(p.escalations_of(unit).is_empty());
}
