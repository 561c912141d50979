//! Item 1, recovery overhead. The example platform (12 stand-ins, 4 stages,
//! rootful, plain `.service` units) with known readiness delays
//! (`/srv/<svc>/ready-delay-ms`), recovered from zero by `mcrecover recover`
//! and, in the same run, by a compose-like baseline (`mcbench __baseline`
//! inside the sandbox: `systemctl start` of the stage's units, then every
//! check once per second until all pass, then the next stage; the same unit
//! files minus the gate dependency, as `bl-<svc>.service`).
//!
//! The intrinsic critical path is the sum over stages of the slowest
//! stand-in's own time from process start to ready (its `.standin/started`
//! and `.standin/ready`, unix ms), so podman and systemd time is overhead.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mcrecover_testbed::{metacircular_service, Sandbox};
use serde_json::{json, Value};

use crate::report::{fmt_num, summarize, Row};
use crate::sandbox::{self, now_ms, UNIT_DIR};
use crate::Ctx;

/// Readiness delay (ms) of every stand-in: known, different within a stage,
/// and the slowest of each stage not a multiple of 1 s (a 1 s poller's
/// detection delay then varies per stage: 700, 900, 300, 400 ms here).
pub(crate) const DELAYS: &[(&str, u64)] = &[
    ("mcns", 1300),
    ("mc-proxy", 600),
    ("mcr-api", 2100),
    ("mcr-web", 400),
    ("metacrypt-api", 1500),
    ("metacrypt-web", 900),
    ("mcp-master", 1700),
    ("mcq", 800),
    ("mcdoc", 500),
    ("mcat", 2600),
    ("kls", 1200),
    ("sgardd", 1900),
];

pub(crate) const STAGES: &[(&str, &[&str])] = &[
    ("foundation", &["mcns"]),
    (
        "core",
        &[
            "mc-proxy",
            "mcr-api",
            "mcr-web",
            "metacrypt-api",
            "metacrypt-web",
        ],
    ),
    ("management", &["mcp-master"]),
    ("services", &["mcq", "mcdoc", "mcat", "kls", "sgardd"]),
];

/// One recovery measured from outside.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Trial {
    pub(crate) who: &'static str,
    /// Wall time, spawn to exit (ms).
    pub(crate) total_ms: f64,
    /// Sum over stages of the slowest stand-in's ready − started.
    pub(crate) critical_ms: f64,
    pub(crate) overhead_ms: f64,
    /// Σ over stages: first container process start − previous stage ready (or t0).
    gap_ms: f64,
    /// Of `gap_ms`: previous stage ready (or t0) → first unit of the stage leaves inactive.
    detect_ms: f64,
    /// Of `gap_ms`: first unit leaves inactive → first stand-in process starts (systemd + podman).
    launch_ms: f64,
    /// Σ over stages: start skew inside the stage.
    skew_ms: f64,
    /// Last stage ready → command exit.
    tail_ms: f64,
    /// Of `detect_ms`: time the previous stage's gate unit (`mcrecover gate`,
    /// pulled in by Requires=) ran: InactiveExit → ActiveEnter (mcrecover only).
    gate_unit_ms: f64,
    /// Per stage: [detect, launch, slowest ready − started, skew] (ms).
    stages: Vec<(String, [f64; 4])>,
}

fn read_ms(sb: &Sandbox, path: &str) -> Option<f64> {
    std::fs::read_to_string(sb.host_path(path))
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
}

/// Decomposes one run from the stand-ins' timestamps and the units' start times.
pub(crate) fn analyse(
    sb: &Sandbox,
    who: &'static str,
    prefix: &str,
    t0: f64,
    t1: f64,
) -> Result<Trial> {
    let mut units = Vec::new();
    for (_, svcs) in STAGES {
        for s in *svcs {
            units.push(format!("{prefix}{s}.service"));
        }
    }
    let unit_start = sandbox::unit_times_rt(sb, &units, "InactiveExitTimestamp");
    let gates: Vec<String> = STAGES
        .iter()
        .map(|(st, _)| format!("metacircular-{st}-gate.service"))
        .collect();
    let gate_start = sandbox::unit_times_rt(sb, &gates, "InactiveExitTimestamp");
    let gate_done = sandbox::unit_times_rt(sb, &gates, "ActiveEnterTimestamp");
    let mut gate_unit = 0.0;
    let mut per_stage = Vec::new();
    let (mut critical, mut gap, mut detect, mut launch, mut skew) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut boundary = t0;
    for (i, (stage, svcs)) in STAGES.iter().enumerate() {
        if prefix.is_empty() && i > 0 {
            let g = &gates[i - 1];
            if let (Some(Some(a)), Some(Some(b))) = (gate_start.get(g), gate_done.get(g)) {
                // Only this run's gate (a stale one from an earlier run would predate t0).
                if *a >= t0 {
                    gate_unit += b - a;
                }
            }
        }
        let mut times = Vec::new();
        let mut first_unit = f64::INFINITY;
        for s in *svcs {
            let dir = metacircular_service(s)
                .map(|x| x.standin_dir)
                .context("unknown service")?;
            let started = read_ms(sb, &format!("{dir}/.standin/started"));
            let ready = read_ms(sb, &format!("{dir}/.standin/ready"));
            match (started, ready) {
                (Some(a), Some(b)) if a >= t0 - 1.0 => times.push((a, b)),
                _ => bail!(
                    "{who}: stand-in {s} of stage {stage} has no fresh started/ready timestamps"
                ),
            }
            if let Some(Some(u)) = unit_start.get(&format!("{prefix}{s}.service")) {
                first_unit = first_unit.min(*u);
            }
        }
        let max_dur = times.iter().map(|(a, b)| b - a).fold(0.0, f64::max);
        let min_started = times.iter().map(|t| t.0).fold(f64::INFINITY, f64::min);
        let max_ready = times.iter().map(|t| t.1).fold(0.0, f64::max);
        critical += max_dur;
        gap += min_started - boundary;
        let (d, l) = if first_unit.is_finite() {
            (first_unit - boundary, min_started - first_unit)
        } else {
            (f64::NAN, f64::NAN)
        };
        detect += d;
        launch += l;
        skew += max_ready - min_started - max_dur;
        per_stage.push((
            stage.to_string(),
            [d, l, max_dur, max_ready - min_started - max_dur],
        ));
        boundary = max_ready;
    }
    let total = t1 - t0;
    Ok(Trial {
        who,
        total_ms: total,
        critical_ms: critical,
        overhead_ms: total - critical,
        gap_ms: gap,
        detect_ms: detect,
        launch_ms: launch,
        skew_ms: skew,
        tail_ms: t1 - boundary,
        gate_unit_ms: gate_unit,
        stages: per_stage,
    })
}

/// Every unit of `units` stopped, no container left, the stand-ins'
/// timestamps removed, then a short settle: the start of a trial.
pub(crate) fn from_zero(sb: &Sandbox, units: &[String]) -> Result<()> {
    sandbox::reset(sb, units)?;
    clear_standin_files(sb);
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

fn clear_standin_files(sb: &Sandbox) {
    for (s, _) in DELAYS {
        if let Some(x) = metacircular_service(s) {
            let _ =
                std::fs::remove_file(sb.host_path(&format!("{}/.standin/ready", x.standin_dir)));
            let _ =
                std::fs::remove_file(sb.host_path(&format!("{}/.standin/started", x.standin_dir)));
        }
    }
}

/// A sandbox `name` with the rootful example at `/srv/NAME.toml`, the
/// stand-ins' ready delays ([`DELAYS`]) and its units installed; the
/// configuration's path.
pub(crate) fn example_sandbox(ctx: &Ctx, name: &str) -> Result<(Sandbox, String)> {
    let sb = sandbox::platform(name, ctx)?;
    let config = sandbox::rootful_example(&sb, &format!("/srv/{name}.toml"))?;
    for (s, ms) in DELAYS {
        let dir = metacircular_service(s)
            .map(|x| x.standin_dir)
            .context("service")?;
        sb.write_file(&format!("{dir}/ready-delay-ms"), ms.to_string().as_bytes())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    sandbox::install(&sb, &config)?;
    Ok((sb, config))
}

/// Item 1.
pub(crate) fn run(ctx: &mut Ctx) -> Result<Vec<Row>> {
    let trials = ctx.trials.unwrap_or(if ctx.quick { 1 } else { 5 });
    let (sb, config) = example_sandbox(ctx, "bench-recovery")?;
    // Baseline units: the same files without the dependency on the previous stage's gate.
    let mut all_units: Vec<String> = Vec::new();
    for (_, svcs) in STAGES {
        for s in *svcs {
            let text = std::fs::read_to_string(sb.host_path(&format!("{UNIT_DIR}/{s}.service")))
                .with_context(|| format!("rendered {s}.service"))?;
            let bl: String = text
                .lines()
                .filter(|l| !l.contains("-gate.service"))
                .map(|l| format!("{l}\n"))
                .collect();
            sb.write_file(&format!("{UNIT_DIR}/bl-{s}.service"), bl.as_bytes())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            all_units.push(format!("{s}.service"));
            all_units.push(format!("bl-{s}.service"));
        }
    }
    for (st, _) in STAGES {
        all_units.push(format!("metacircular-{st}-gate.service"));
        all_units.push(format!("metacircular-{st}.target"));
    }
    all_units.push("metacircular.target".into());
    sandbox::run_ok(&sb, &["systemctl", "daemon-reload"])?;

    let mut results: Vec<Trial> = Vec::new();
    let mut raw = Vec::new();
    for trial in 0..trials {
        let order = if trial % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            from_zero(&sb, &all_units)?;
            let t0 = now_ms();
            let (out, argv, who, prefix) = if which == 0 {
                // MCBENCH_RECOVER_LOG=<filter>: run with MCRECOVER_LOG=<filter>, stderr into --raw.
                let log = std::env::var("MCBENCH_RECOVER_LOG")
                    .ok()
                    .map(|f| format!("MCRECOVER_LOG={f}"));
                let mut argv = sandbox::recover_argv(&config);
                if let Some(l) = &log {
                    argv.insert(0, l);
                    argv.insert(0, "env");
                }
                (sb.run(&argv), argv.join(" "), "mcrecover", "")
            } else {
                let argv = [
                    "mcbench",
                    "__baseline",
                    "--config",
                    &config,
                    "--prefix",
                    "bl-",
                    "--interval-ms",
                    "1000",
                ];
                (sb.run(&argv), argv.join(" "), "baseline", "bl-")
            };
            let t1 = now_ms();
            if !out.status.success() {
                bail!(
                    "`{argv}` exited {:?}: {}\n{}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if which == 0 && report["outcome"] != "all_healthy" {
                bail!("recover outcome {}", report["outcome"]);
            }
            let t = analyse(&sb, who, prefix, t0, t1)?;
            eprintln!(
                "mcbench: recovery trial {trial} {who}: total {:.0} ms, critical path {:.0} ms, overhead {:.0} ms (detect {:.0}, launch {:.0}, skew {:.0}, tail {:.0})",
                t.total_ms, t.critical_ms, t.overhead_ms, t.detect_ms, t.launch_ms, t.skew_ms, t.tail_ms
            );
            for (st, v) in &t.stages {
                eprintln!(
                    "mcbench:   {st:<11} detect {:>5.0}  launch {:>5.0}  slowest {:>5.0}  skew {:>4.0}",
                    v[0], v[1], v[2], v[3]
                );
            }
            if which == 0 {
                eprintln!(
                    "mcbench:   gate units ran {:.0} ms in total",
                    t.gate_unit_ms
                );
            }
            raw.push(
                json!({"trial": trial, "who": who, "t0_ms": t0, "analysis": t, "report": report,
                "stderr": String::from_utf8_lossy(&out.stderr)}),
            );
            results.push(t);
        }
    }
    let _ = sandbox::reset(&sb, &all_units);
    // Issue 15 item 3: the launch floor with nothing else running.
    let floor_n = if ctx.quick { 3 } else { 7 };
    let floor = launch_floor(&sb, &all_units, floor_n)?;
    raw.push(
        json!({"launch_floor_podman_ms": floor.podman, "launch_floor_unit_ms": floor.unit,
        "launch_floor_create_ms": floor.created, "launch_floor_start_ms": floor.started_only}),
    );
    ctx.raw.insert("recovery".into(), Value::Array(raw));

    let pick = |who: &str, f: fn(&Trial) -> f64| -> Vec<f64> {
        results.iter().filter(|t| t.who == who).map(f).collect()
    };
    let m_total = summarize(&pick("mcrecover", |t| t.total_ms));
    let m_cp = summarize(&pick("mcrecover", |t| t.critical_ms));
    let m_over = summarize(&pick("mcrecover", |t| t.overhead_ms));
    let b_total = summarize(&pick("baseline", |t| t.total_ms));
    let b_over = summarize(&pick("baseline", |t| t.overhead_ms));
    let mut rows = Vec::new();
    rows.push(
        Row::new("recovery", "time to all healthy, mcrecover recover", "")
            .summary(m_total, "ms")
            .note(format!(
                "12 stand-ins, 4 stages, ready delays {} ms; rootful sandbox, plain .service units, installed beforehand (--no-install); wall time spawn→exit seen from the host",
                DELAYS.iter().map(|(s, d)| format!("{s}={d}")).collect::<Vec<_>>().join(" ")
            )),
    );
    rows.push(
        Row::new("recovery", "intrinsic critical path (stand-ins' own timestamps)", "")
            .summary(m_cp, "ms")
            .note("Σ over stages of max(ready − started) of the stage's stand-ins (CLOCK_REALTIME ms they write to .standin/)"),
    );
    let (ok, ratio) = match (m_over, m_cp) {
        (Some(o), Some(c)) => (
            o.median <= 500.0 || o.median <= 0.05 * c.median,
            format!(
                "{} % of critical path",
                fmt_num(100.0 * o.median / c.median)
            ),
        ),
        _ => (false, String::new()),
    };
    rows.push(
        Row::new(
            "recovery",
            "overhead = time to all healthy − critical path",
            "≤ 5 % of critical path or ≤ 500 ms",
        )
        .summary(m_over, "ms")
        .pass(ok)
        .ratio(ratio),
    );
    for (name, f) in [
        (
            "  of which: stage ready → next stage's units start (gate detection)",
            (|t: &Trial| t.detect_ms) as fn(&Trial) -> f64,
        ),
        (
            "    of that: the gate units (`mcrecover gate` pulled in by Requires=)",
            |t: &Trial| t.gate_unit_ms,
        ),
        (
            "  of which: unit start → stand-in process start (systemd + podman)",
            |t: &Trial| t.launch_ms,
        ),
        ("  of which: start skew inside stages", |t: &Trial| {
            t.skew_ms
        }),
        (
            "  of which: last ready → exit (last gate + report)",
            |t: &Trial| t.tail_ms,
        ),
    ] {
        rows.push(Row::new("recovery", name, "").summary(summarize(&pick("mcrecover", f)), "ms"));
    }
    // Issue 15 item 2: each stage transition (stage ready → the next
    // stage's first unit leaves inactive), the first stage's start excluded.
    let transitions: Vec<f64> = results
        .iter()
        .filter(|t| t.who == "mcrecover")
        .flat_map(|t| t.stages.iter().skip(1).map(|(_, v)| v[0]))
        .filter(|d| d.is_finite())
        .collect();
    let tr = summarize(&transitions);
    rows.push(
        Row::new(
            "recovery",
            "stage ready → next stage's first unit starts, per transition",
            "≤ 50 ms",
        )
        .summary(tr, "ms")
        .pass(tr.is_some_and(|t| t.median <= 50.0))
        .note("the slowest stand-in of a stage writes .standin/ready → InactiveExitTimestamp of the next stage's first unit; 3 transitions per run; includes the last probe's detection, the engine, the gate unit on the engine's verdict and systemd's start job"),
    );
    let fp = summarize(&floor.podman);
    let fu = summarize(&floor.unit);
    rows.push(
        Row::new("recovery", "launch floor: `podman run -d` of one stand-in alone", "")
            .summary(fp, "ms")
            .note("mcq's own podman run line (no --sdnotify, another name), nothing else running: command spawn → the stand-in's process start (.standin/started); then removed"),
    );
    rows.push(
        Row::new("recovery", "launch floor: `systemctl start` of one unit alone", "")
            .summary(fu, "ms")
            .note("mcq.service with job mode ignore-dependencies, nothing else running: spawn → the stand-in's process start"),
    );
    rows.push(
        Row::new("recovery", "launch floor split: `podman create` of the same line", "")
            .summary(summarize(&floor.created), "ms")
            .note("the podman run row's line as `podman create` (no -d), nothing else running: spawn → exit; the part a create ahead of the stage would take off the critical path"),
    );
    rows.push(
        Row::new("recovery", "launch floor split: `podman start` of the created container", "")
            .summary(summarize(&floor.started_only), "ms")
            .note("spawn → the stand-in's process start: what would stay on the critical path with the container created ahead"),
    );
    if let (Some(total), Some(cp), Some(f)) = (m_total, m_cp, fu) {
        let n = STAGES.len() as f64;
        let goal = cp.median + n * (f.median + 50.0);
        let mut r = Row::new(
            "recovery",
            "time to all healthy vs critical path + per stage (unit launch floor + 50 ms)",
            "≤ 1.00×",
        );
        r.measured = format!("{} ms vs {} ms", fmt_num(total.median), fmt_num(goal));
        r.spread = format!("medians (n={})", total.n);
        r = r
            .ratio(format!("{}×", fmt_num(total.median / goal)))
            .pass(total.median <= goal)
            .note("issue 15 item 3, read per stage: each stage pays one launch (its units start in parallel); the floor is the systemctl start row above");
        rows.push(r);
    }
    rows.push(
        Row::new("recovery", "time to all healthy, 1 s polling baseline", "")
            .summary(b_total, "ms")
            .note("same units minus the gate dependency; per stage `systemctl start` (waits for the jobs), then all the stage's checks once a second (first poll 1 s after the jobs finished) via mcrecover::check::probe, inside the sandbox"),
    );
    rows.push(
        Row::new("recovery", "  baseline: gate detection part", "")
            .summary(summarize(&pick("baseline", |t| t.detect_ms)), "ms"),
    );
    let (ok2, ratio2) = match (b_over, m_over) {
        (Some(b), Some(m)) if m.median > 0.0 => (
            b.median >= 10.0 * m.median,
            format!("{}×", fmt_num(b.median / m.median)),
        ),
        _ => (false, String::new()),
    };
    rows.push(
        Row::new("recovery", "overhead of the 1 s polling baseline", "").summary(b_over, "ms"),
    );
    rows.push({
        let mut r = Row::new(
            "recovery",
            "baseline overhead ÷ mcrecover overhead",
            "≥ 10×",
        );
        r.measured = ratio2.clone();
        r.spread = format!("medians of {trials} paired runs");
        r.pass(ok2 && !ratio2.is_empty())
    });
    Ok(rows)
}

/// The launch floor, `n` times each with nothing else running: (`podman
/// run -d` of mcq's own command line under another name, `systemctl start`
/// of mcq.service with dependencies ignored), spawn → the stand-in's
/// process start (its `.standin/started`), in ms.
fn launch_floor(sb: &Sandbox, all_units: &[String], n: usize) -> Result<Floor> {
    let unit_text = std::fs::read_to_string(sb.host_path(&format!("{UNIT_DIR}/mcq.service")))
        .context("rendered mcq.service")?;
    let exec = unit_text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .context("mcq.service has no ExecStart=")?
        .replace(" --sdnotify=conmon", "")
        .replace("--name mcq ", "--name mcbench-floor ");
    let dir = metacircular_service("mcq")
        .map(|x| x.standin_dir)
        .context("mcq")?;
    let started = sb.host_path(&format!("{dir}/.standin/started"));
    let wait_started = |t0: f64| -> Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(t) = std::fs::read_to_string(&started)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .filter(|&t| t >= t0 - 1.0)
            {
                return Ok(t - t0);
            }
            if Instant::now() > deadline {
                bail!("the stand-in did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    // The same line as `podman create` + `podman start`: what creating the
    // container ahead (while the stage before is gated) would leave on the
    // critical path.
    let create = exec.replacen(" run ", " create ", 1).replace(" -d ", " ");
    let (mut podman, mut unit) = (Vec::new(), Vec::new());
    let (mut created, mut started_only) = (Vec::new(), Vec::new());
    for _ in 0..n {
        sandbox::reset(sb, all_units)?;
        let _ = std::fs::remove_file(&started);
        std::thread::sleep(Duration::from_millis(300));
        let t0 = now_ms();
        sandbox::run_ok(sb, &["sh", "-c", &exec])?;
        podman.push(wait_started(t0)?);
        let _ = sb.run(&["podman", "rm", "-f", "-t", "0", "mcbench-floor"]);
        let _ = std::fs::remove_file(&started);
        std::thread::sleep(Duration::from_millis(300));
        let t0 = now_ms();
        sandbox::run_ok(sb, &["sh", "-c", &create])?;
        created.push(now_ms() - t0);
        std::thread::sleep(Duration::from_millis(300));
        let t0 = now_ms();
        sandbox::run_ok(sb, &["podman", "start", "mcbench-floor"])?;
        started_only.push(wait_started(t0)?);
        let _ = sb.run(&["podman", "rm", "-f", "-t", "0", "mcbench-floor"]);
        let _ = std::fs::remove_file(&started);
        std::thread::sleep(Duration::from_millis(300));
        let t0 = now_ms();
        sandbox::run_ok(
            sb,
            &[
                "systemctl",
                "start",
                "--no-block",
                "--job-mode=ignore-dependencies",
                "mcq.service",
            ],
        )?;
        unit.push(wait_started(t0)?);
    }
    sandbox::reset(sb, all_units)?;
    Ok(Floor {
        podman,
        unit,
        created,
        started_only,
    })
}

/// What [`launch_floor`] measured, ms each.
struct Floor {
    /// `podman run -d`: spawn → the stand-in's process start.
    podman: Vec<f64>,
    /// `systemctl start` of the unit: spawn → the stand-in's process start.
    unit: Vec<f64>,
    /// `podman create` of the same line: spawn → exit.
    created: Vec<f64>,
    /// `podman start` of the created container: spawn → the stand-in's process start.
    started_only: Vec<f64>,
}

/// `mcbench __baseline --config P --prefix bl- --interval-ms 1000`, run inside
/// the sandbox: the compose-like gate. Prints a JSON summary.
pub(crate) fn baseline_main(args: &[String]) -> Result<()> {
    let mut config = None;
    let mut prefix = String::new();
    let mut interval = 1000u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = it.next().cloned(),
            "--prefix" => prefix = it.next().cloned().unwrap_or_default(),
            "--interval-ms" => interval = it.next().context("--interval-ms value")?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    let config = config.context("--config")?;
    let cfg = mcrecover::config::load(Path::new(&config)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let t0 = Instant::now();
    let mut stages = Vec::new();
    for stage in &cfg.stages {
        let svcs: Vec<&mcrecover::config::Service> = stage
            .services
            .iter()
            .filter_map(|n| cfg.services.get(n))
            .collect();
        let units: Vec<String> = svcs
            .iter()
            .map(|s| format!("{prefix}{}.service", s.name))
            .collect();
        let started = t0.elapsed().as_secs_f64() * 1000.0;
        let out = std::process::Command::new("systemctl")
            .arg("start")
            .args(&units)
            .output()?;
        if !out.status.success() {
            bail!(
                "systemctl start {}: {}",
                units.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let jobs_done = t0.elapsed().as_secs_f64() * 1000.0;
        let checks: Vec<mcrecover::config::Check> =
            svcs.iter().flat_map(|s| s.checks.iter().cloned()).collect();
        let mut polls = 0u32;
        loop {
            std::thread::sleep(Duration::from_millis(interval));
            polls += 1;
            let ok = rt.block_on(async {
                let mut set = Vec::new();
                for c in &checks {
                    let c = c.clone();
                    set.push(tokio::spawn(
                        async move { mcrecover::check::probe(&c).await.ok },
                    ));
                }
                let mut all = true;
                for h in set {
                    all &= h.await.unwrap_or(false);
                }
                all
            });
            if ok {
                break;
            }
            if t0.elapsed().as_secs_f64() * 1000.0 - started > stage.timeout.as_secs_f64() * 1000.0
            {
                bail!(
                    "stage {} not healthy within {:?}",
                    stage.name,
                    stage.timeout
                );
            }
        }
        stages.push(
            json!({"stage": stage.name, "start_ms": started, "jobs_done_ms": jobs_done,
            "healthy_ms": t0.elapsed().as_secs_f64() * 1000.0, "polls": polls}),
        );
    }
    let mut m = BTreeMap::new();
    m.insert("stages", json!(stages));
    m.insert("total_ms", json!(t0.elapsed().as_secs_f64() * 1000.0));
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}
