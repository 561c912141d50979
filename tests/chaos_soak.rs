//! A seeded chaos soak of `mcrecover daemon` (issue 11): the example platform
//! (examples/metacircular.toml: 12 services in 4 stages, rootful, service
//! backend, stand-in containers) under the SHIPPED `units/mcrecover.service`
//! in a real systemd (see tests/daemon_support and `testbed/`), hit for
//! `MCRECOVER_CHAOS_SECS` seconds (default 150) by random faults drawn from a
//! PRNG seeded with `MCRECOVER_CHAOS_SEED` (default fixed):
//!
//! - SIGKILL of a container's main process (as an OOM kill would);
//! - `podman stop` of a container (from outside systemd: the unit goes
//!   inactive with success);
//! - a stand-in fault file (`500` or `hang`) for 3 to 6 s;
//! - SIGKILL of the daemon itself (systemd restarts it, `Restart=on-failure`).
//!
//! The fault rate stays under the escalation threshold: at most
//! `MAX_FAULTS_PER_WINDOW` faults per service within the escalation window,
//! a fault every 3 to 7 s, a daemon kill at most every 70 s. After the last
//! fault it asserts: the platform converges (phase `watching`, every service
//! `healthy`, every unit `active`, stable for a while) within one backoff
//! period + one check round + slack; per service, the daemon's restart
//! entries are at most the faults injected on it + 2; no escalation (entry or
//! hook run); systemd restarted the daemon exactly once per daemon kill; and
//! every file under the sandbox's `/srv` is intact (sha256 before and after,
//! the stand-ins' own run files and the fault files excepted). It prints the
//! figures: faults by kind and by service, restarts by service, time to
//! converge.
//!
//! The seed fixes the sequence of draws, not the run: a draw whose target is
//! not running at that moment (being restarted) is skipped, which shifts what
//! follows. `scripts/chaos --minutes 60 --seed N` runs it by hand; see
//! docs/chaos.md.
//!
//! Needs root and the packages of `scripts/install-deps`; with
//! MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod daemon_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daemon_support::*;
use mcrecover_testbed::metacircular_service;
use serde_json::Value;

const SEED_ENV: &str = "MCRECOVER_CHAOS_SEED";
const SECS_ENV: &str = "MCRECOVER_CHAOS_SECS";
/// "mcrecove" in ASCII.
const DEFAULT_SEED: u64 = 0x6d63_7265_636f_7665;
const DEFAULT_SECS: u64 = 150;

// The configuration's numbers (written into the config below and used for
// the bounds).
const CHECK_INTERVAL_S: u64 = 2;
const CHECK_TIMEOUT_S: u64 = 3;
/// The example's `failure_threshold`.
const FAILURE_THRESHOLD: u64 = 3;
const BACKOFF_INITIAL_S: u64 = 1;
const BACKOFF_MAX_S: u64 = 8;
const ESCALATE_AFTER: u64 = 5;
const ESCALATE_WINDOW_S: u64 = 120;

// The fault plan.
/// Faults on one service within the escalation window. Each fault costs at
/// most one restart, two when a restart is needed again right after (a
/// restarted container meeting the rest of a fault file): 2 faults stay
/// below `ESCALATE_AFTER` restarts with room for one more.
const MAX_FAULTS_PER_WINDOW: usize = 2;
const GAP_MS: (u64, u64) = (3_000, 7_000);
/// A fault file's duration: at most 3 failing probes 2 s apart fit in it,
/// so a `500` costs at most one restart (and a `hang`, whose probes take
/// the 3 s timeout, none).
const FILE_FAULT_MS: (u64, u64) = (3_000, 6_000);
/// systemd refuses an 11th start within 10 min (`StartLimitBurst=10`).
const DAEMON_KILL_SPACING_S: u64 = 70;

// The convergence bound after the last fault: one backoff period, one round
// of checks to turn passing again, slack for a loaded CI machine.
const SLACK_S: u64 = 60;
/// Converged = all healthy and active in every poll for this long.
const STABLE_S: u64 = 3 * CHECK_INTERVAL_S;

const CONFIG_CHECK_DEFAULTS: &str = "interval = \"10s\"\ntimeout = \"2s\"";

/// The example, rootful, without the external mcias (unreachable from a
/// sandbox), checks every 2 s with a 3 s timeout, a short-backoff `[watch]`
/// with the hook (which must never run).
fn chaos_config() -> String {
    let text = EXAMPLE.replacen("mode = \"rootless\"", "mode = \"rootful\"", 1);
    assert_ne!(
        text, EXAMPLE,
        "the example no longer says mode = \"rootless\""
    );
    assert!(
        text.contains(CONFIG_CHECK_DEFAULTS),
        "the example's check_defaults changed"
    );
    assert!(
        text.contains(&format!("failure_threshold = {FAILURE_THRESHOLD}\n")),
        "the example's failure_threshold changed"
    );
    let text = text.replacen(
        CONFIG_CHECK_DEFAULTS,
        &format!("interval = \"{CHECK_INTERVAL_S}s\"\ntimeout = \"{CHECK_TIMEOUT_S}s\""),
        1,
    );
    let cut = text
        .find("# MCIAS runs on svc")
        .expect("the example's mcias section moved");
    format!(
        "{}\n[watch]\nbackoff_initial = \"{BACKOFF_INITIAL_S}s\"\nbackoff_max = \"{BACKOFF_MAX_S}s\"\n\
         escalate_after = {ESCALATE_AFTER}\nescalate_window = \"{ESCALATE_WINDOW_S}s\"\n\
         hook = [\"{HOOK}\"]\nhook_timeout = \"10s\"\n",
        without_watch(&text[..cut])
    )
}

/// xorshift64* (Vigna): small, seeded, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // xorshift's state must not be 0.
        Rng(if seed == 0 { DEFAULT_SEED } else { seed })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) if v.trim().is_empty() => default,
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                None => v.replace('_', "").parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={v:?}: not a number: {e}"))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    KillMain,
    PodmanStop,
    Fault500,
    FaultHang,
    KillDaemon,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::KillMain => "SIGKILL container main process",
            Kind::PodmanStop => "podman stop",
            Kind::Fault500 => "fault file 500",
            Kind::FaultHang => "fault file hang",
            Kind::KillDaemon => "SIGKILL daemon",
        }
    }

    /// Weighted draw: container kills most, then stops and fault files, the
    /// daemon least.
    fn draw(rng: &mut Rng) -> Kind {
        match rng.below(100) {
            0..=34 => Kind::KillMain,
            35..=54 => Kind::PodmanStop,
            55..=74 => Kind::Fault500,
            75..=86 => Kind::FaultHang,
            _ => Kind::KillDaemon,
        }
    }
}

/// A fault file to remove at `until`.
struct FileFault {
    service: String,
    path: String,
    until: Instant,
}

/// The soak's bookkeeping.
struct Soak<'a> {
    p: &'a Platform,
    rng: Rng,
    start: Instant,
    /// Injected faults per service, with their times.
    times: BTreeMap<String, Vec<Instant>>,
    by_kind: BTreeMap<Kind, u32>,
    by_service: BTreeMap<String, u32>,
    skipped: u32,
    files: Vec<FileFault>,
    daemon_kills: u32,
    last_daemon_kill: Option<Instant>,
    /// When the last fault ended (a kill: when it was done; a fault file:
    /// when it was removed).
    last_fault_end: Instant,
}

impl Soak<'_> {
    fn log(&self, what: &str) {
        eprintln!("[{:7.1} s] {what}", self.start.elapsed().as_secs_f64());
    }

    fn faults_in_window(&self, svc: &str, now: Instant) -> usize {
        self.times.get(svc).map_or(0, |t| {
            t.iter()
                .filter(|t| now.duration_since(**t) < Duration::from_secs(ESCALATE_WINDOW_S))
                .count()
        })
    }

    fn record(&mut self, kind: Kind, svc: &str, now: Instant) {
        *self.by_kind.entry(kind).or_default() += 1;
        if kind != Kind::KillDaemon {
            *self.by_service.entry(svc.to_string()).or_default() += 1;
            self.times.entry(svc.to_string()).or_default().push(now);
        }
    }

    /// Removes the fault files whose time is up (all with `all`).
    fn clear_files(&mut self, all: bool) {
        let now = Instant::now();
        let (done, keep): (Vec<FileFault>, Vec<FileFault>) = std::mem::take(&mut self.files)
            .into_iter()
            .partition(|f| all || f.until <= now);
        self.files = keep;
        for f in done {
            ok(&self.p.sb, self.p.sb.remove(&f.path));
            self.last_fault_end = Instant::now();
            self.log(&format!("{}: fault file removed", f.service));
        }
    }

    /// One draw: a kind and a target; injects it if the target is there to
    /// be hit. Returns whether a fault was injected.
    fn inject(&mut self, services: &[String]) -> bool {
        let kind = Kind::draw(&mut self.rng);
        let now = Instant::now();
        if kind == Kind::KillDaemon {
            let spaced = self.last_daemon_kill.is_none_or(|t| {
                now.duration_since(t) >= Duration::from_secs(DAEMON_KILL_SPACING_S)
            });
            if !spaced || self.p.prop(DAEMON, "ActiveState") != "active" {
                self.skipped += 1;
                return false;
            }
            let pid = self.p.prop(DAEMON, "MainPID");
            ok(
                &self.p.sb,
                self.p
                    .sb
                    .run_ok(&["systemctl", "kill", "-s", "KILL", DAEMON])
                    .map(|_| ()),
            );
            self.daemon_kills += 1;
            self.last_daemon_kill = Some(now);
            self.last_fault_end = Instant::now();
            self.record(kind, "daemon", now);
            self.log(&format!("SIGKILL daemon (pid {pid})"));
            return true;
        }
        let svc = services[self.rng.below(services.len() as u64) as usize].clone();
        let duration = self.rng.between(FILE_FAULT_MS);
        if self.faults_in_window(&svc, now) >= MAX_FAULTS_PER_WINDOW
            || self.files.iter().any(|f| f.service == svc)
        {
            self.skipped += 1;
            return false;
        }
        let unit = format!("{svc}.service");
        if self.p.prop(&unit, "ActiveState") != "active" {
            self.skipped += 1;
            self.log(&format!("{svc}: {} skipped: unit not active", kind.name()));
            return false;
        }
        let sb = &self.p.sb;
        let done = match kind {
            Kind::KillMain => {
                let out = sb.run(&["podman", "inspect", "--format", "{{.State.Pid}}", &svc]);
                let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !out.status.success() || !pid.parse::<u32>().is_ok_and(|p| p > 0) {
                    None
                } else if sb.run(&["kill", "-KILL", &pid]).status.success() {
                    Some(format!("(pid {pid})"))
                } else {
                    None
                }
            }
            Kind::PodmanStop => {
                let out = sb.run(&["podman", "stop", "-t", "5", &svc]);
                out.status.success().then(String::new)
            }
            Kind::Fault500 | Kind::FaultHang => {
                let what = if kind == Kind::Fault500 {
                    "500"
                } else {
                    "hang"
                };
                let dir = metacircular_service(&svc)
                    .unwrap_or_else(|| panic!("{svc}: not a stand-in service"))
                    .standin_dir;
                let path = format!("{dir}/fault");
                ok(sb, sb.write_file(&path, what.as_bytes()));
                self.files.push(FileFault {
                    service: svc.clone(),
                    path,
                    until: Instant::now() + Duration::from_millis(duration),
                });
                Some(format!("for {:.1} s", duration as f64 / 1000.0))
            }
            Kind::KillDaemon => unreachable!(),
        };
        match done {
            Some(detail) => {
                self.record(kind, &svc, now);
                self.last_fault_end = Instant::now();
                self.log(&format!("{svc}: {} {detail}", kind.name()));
                true
            }
            None => {
                self.skipped += 1;
                self.log(&format!("{svc}: {} skipped: not running", kind.name()));
                false
            }
        }
    }
}

/// Every unit's `ActiveState`, by unit.
fn active_states(p: &Platform, units: &[String]) -> BTreeMap<String, String> {
    let mut argv = vec!["systemctl", "show", "-p", "Id", "-p", "ActiveState"];
    argv.extend(units.iter().map(String::as_str));
    let out = p.sb.run(&argv);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut states = BTreeMap::new();
    for block in text.split("\n\n") {
        let mut id = None;
        let mut state = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("Id=") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("ActiveState=") {
                state = Some(v.to_string());
            }
        }
        if let (Some(id), Some(state)) = (id, state) {
            states.insert(id, state);
        }
    }
    states
}

/// Every file below the sandbox's `/srv` with its sha256, except what the
/// stand-ins write themselves (`.standin/`: started, ready, generated CA),
/// the fault files this test writes, and the hook's records (checked on
/// their own).
fn srv_hashes(p: &Platform) -> BTreeMap<PathBuf, String> {
    tree_hashes(&p.sb.host_path("/srv"))
        .into_iter()
        .filter(|(rel, _)| {
            !rel.components().any(|c| c.as_os_str() == ".standin")
                && rel.file_name().is_none_or(|n| n != "fault")
                && !Path::new("/srv").join(rel).starts_with(HOOK_DIR)
        })
        .collect()
}

/// Operator data in every volume: a few KiB of seeded bytes per file, one
/// at the top and one in a subdirectory. Returns how many files.
fn seed_data(p: &Platform, rng: &mut Rng) -> usize {
    let mut vols: Vec<&str> = mcrecover_testbed::METACIRCULAR_SERVICES
        .iter()
        .map(|s| s.volume)
        .collect();
    vols.dedup();
    let mut written = 0;
    for vol in vols {
        for name in ["chaos-data.db", "data/chaos-data.db-wal"] {
            let len = 4096 + rng.below(60 * 1024) as usize;
            let bytes: Vec<u8> = (0..len.div_ceil(8))
                .flat_map(|_| rng.next().to_le_bytes())
                .take(len)
                .collect();
            ok(&p.sb, p.sb.write_file(&format!("{vol}/{name}"), &bytes));
            written += 1;
        }
    }
    written
}

#[test]
fn seeded_chaos_converges_without_escalation_or_data_loss() {
    let seed = env_u64(SEED_ENV, DEFAULT_SEED);
    let secs = env_u64(SECS_ENV, DEFAULT_SECS);
    let Some(p) = Platform::boot("chaos-soak", &chaos_config(), true) else {
        return;
    };
    let st = p.status().expect("the daemon's status");
    let services: Vec<String> = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    let units: Vec<String> = services.iter().map(|s| format!("{s}.service")).collect();
    assert_eq!(
        services.len(),
        12,
        "the example's 12 services: {services:?}"
    );
    let mut rng = Rng::new(seed);
    let seeded = seed_data(&p, &mut rng);
    let before = srv_hashes(&p);
    let found = before
        .keys()
        .filter(|rel| rel.to_string_lossy().contains("chaos-data.db"))
        .count();
    assert_eq!(found, seeded, "seeded files missing: {before:#?}");
    let restarts_at_boot = p.entries(RESTART_ID).len();
    let soak_start_usec = now_usec();

    eprintln!(
        "chaos soak: seed {seed:#x} ({SEED_ENV}), {secs} s of faults ({SECS_ENV}), \
         {} services, {} files under /srv hashed",
        services.len(),
        before.len()
    );
    let start = Instant::now();
    let mut soak = Soak {
        p: &p,
        rng,
        start,
        times: BTreeMap::new(),
        by_kind: BTreeMap::new(),
        by_service: BTreeMap::new(),
        skipped: 0,
        files: Vec::new(),
        daemon_kills: 0,
        last_daemon_kill: None,
        last_fault_end: start,
    };
    // Faults are injected while the next one is due before `end`; the
    // convergence is measured from the end of the last one (not from `end`).
    let end = start + Duration::from_secs(secs);
    let mut next = start;
    while next < end {
        soak.clear_files(false);
        if Instant::now() >= next {
            // A draw whose target is not there to be hit: draw again.
            for _ in 0..5 {
                if soak.inject(&services) {
                    break;
                }
            }
            next = Instant::now() + Duration::from_millis(soak.rng.between(GAP_MS));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The fault files still in force run their course.
    while !soak.files.is_empty() {
        std::thread::sleep(Duration::from_millis(100));
        soak.clear_files(false);
    }
    let last_fault_end = soak.last_fault_end;
    soak.log("last fault over; waiting for convergence");

    // Converged: phase watching, every service healthy, every unit active,
    // in every poll for STABLE_S; the run must start within the bound.
    let bound = Duration::from_secs(
        BACKOFF_MAX_S + FAILURE_THRESHOLD * CHECK_INTERVAL_S + CHECK_TIMEOUT_S + SLACK_S,
    );
    let mut stable_since: Option<Instant> = None;
    let mut last = (None, BTreeMap::new());
    let converged_at = loop {
        let st = p.status();
        let states = active_states(&p, &units);
        let good = st.as_ref().is_some_and(all_healthy)
            && units
                .iter()
                .all(|u| states.get(u).is_some_and(|s| s == "active"));
        let now = Instant::now();
        if good {
            let since = *stable_since.get_or_insert(now);
            if now.duration_since(since) >= Duration::from_secs(STABLE_S) {
                break since;
            }
        } else {
            stable_since = None;
            last = (st, states);
        }
        assert!(
            stable_since.is_some_and(|s| s <= last_fault_end + bound)
                || now <= last_fault_end + bound,
            "not converged {} s after the last fault (bound: backoff_max {BACKOFF_MAX_S} s + \
             {FAILURE_THRESHOLD} checks every {CHECK_INTERVAL_S} s + timeout {CHECK_TIMEOUT_S} s + \
             slack {SLACK_S} s); last bad status: {:#}\nunit states: {:#?}",
            bound.as_secs(),
            last.0.unwrap_or(Value::Null),
            last.1
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let converge = converged_at.saturating_duration_since(last_fault_end);
    let st = p.status().expect("the daemon's status after convergence");

    // Restarts by service, from the daemon's journal and its status.
    let entries: Vec<Value> = p
        .entries(RESTART_ID)
        .into_iter()
        .filter(|e| usec(e) >= soak_start_usec)
        .collect();
    let mut restarts: BTreeMap<String, usize> = BTreeMap::new();
    for e in &entries {
        *restarts.entry(field(e, "UNIT")).or_default() += 1;
    }
    let escalations = p.entries(ESCALATE_ID);
    let after = srv_hashes(&p);

    // The figures.
    eprintln!("\n=== chaos soak figures (seed {seed:#x}, {secs} s) ===");
    eprintln!("faults by kind:");
    let total: u32 = soak.by_kind.values().sum();
    for (k, n) in &soak.by_kind {
        eprintln!("  {:<32} {n:>4}", k.name());
    }
    eprintln!(
        "  {:<32} {total:>4}  ({} draws skipped)",
        "total", soak.skipped
    );
    eprintln!(
        "{:<16} {:>6} {:>16} {:>14}",
        "service", "faults", "restart entries", "total_restarts"
    );
    for svc in &services {
        eprintln!(
            "{:<16} {:>6} {:>16} {:>14}",
            svc,
            soak.by_service.get(svc).copied().unwrap_or(0),
            restarts
                .get(&format!("{svc}.service"))
                .copied()
                .unwrap_or(0),
            service(&st, svc)["total_restarts"].to_string()
        );
    }
    eprintln!(
        "daemon: {} SIGKILLs, systemd NRestarts {}",
        soak.daemon_kills,
        p.prop(DAEMON, "NRestarts")
    );
    eprintln!(
        "time to converge after the last fault: {:.1} s (bound {} s; stable for {STABLE_S} s)",
        converge.as_secs_f64(),
        bound.as_secs()
    );
    eprintln!(
        "files under /srv: {} before, {} after",
        before.len(),
        after.len()
    );
    eprintln!("restart entries before the soak (boot recovery): {restarts_at_boot}");

    // The assertions.
    assert!(total > 0, "no fault injected in {secs} s");
    for svc in &services {
        let unit = format!("{svc}.service");
        let n = restarts.get(&unit).copied().unwrap_or(0);
        let faults = soak.by_service.get(svc).copied().unwrap_or(0) as usize;
        assert!(
            n <= faults + 2,
            "{svc}: {n} restarts for {faults} faults: {:#?}",
            entries
                .iter()
                .filter(|e| e["UNIT"] == unit.as_str())
                .map(|e| format!(
                    "{} {}: {}",
                    usec(e),
                    field(e, "TRIGGER"),
                    field(e, "REASON")
                ))
                .collect::<Vec<_>>()
        );
    }
    assert!(escalations.is_empty(), "escalations: {escalations:#?}");
    assert!(
        p.hook_runs().is_empty(),
        "the hook ran: {:?}",
        p.hook_runs()
    );
    assert_eq!(
        p.prop(DAEMON, "NRestarts"),
        soak.daemon_kills.to_string(),
        "systemd restarted the daemon more often than it was killed (watchdog? crash?)"
    );
    assert_eq!(p.prop(DAEMON, "ActiveState"), "active");
    let changed: Vec<String> = before
        .iter()
        .filter(|(rel, hash)| after.get(*rel) != Some(*hash))
        .map(|(rel, _)| format!("changed or gone: /srv/{}", rel.display()))
        .chain(
            after
                .keys()
                .filter(|rel| !before.contains_key(*rel))
                .map(|rel| format!("new: /srv/{}", rel.display())),
        )
        .collect();
    assert!(changed.is_empty(), "files under /srv: {changed:#?}");
}

// The configuration above, checked by the real parser (no sandbox) ------------

#[test]
fn chaos_configuration_is_valid() {
    let text = chaos_config();
    if let Err(e) = mcrecover::config::parse(&text, Path::new(CONFIG)) {
        panic!("{e}\n--- config ---\n{text}");
    }
}

#[test]
fn rng_is_seeded_and_in_range() {
    let draws = |seed| {
        let mut r = Rng::new(seed);
        (0..64).map(|_| r.between((3, 7))).collect::<Vec<_>>()
    };
    assert_eq!(draws(42), draws(42));
    assert_ne!(draws(42), draws(43));
    assert!(draws(0).iter().all(|d| (3..=7).contains(d)));
    let mut r = Rng::new(7);
    let kinds: std::collections::BTreeSet<Kind> = (0..500).map(|_| Kind::draw(&mut r)).collect();
    assert_eq!(kinds.len(), 5, "every kind is drawn: {kinds:?}");
}
