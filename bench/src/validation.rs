//! Item `scale-validation` (issue 15 item 5): check-config + plan + render
//! of generated configurations with dependency edges, the real binary, each
//! a process (spawn included), median of N after one warm-up. The services
//! are scale-config's (a port, a volume, an env and a tcp or http check
//! each) plus `after`/`requires` entries:
//!
//! - 1000 services in 20 stages, 1000 edges: each service but the first
//!   lists one random earlier service (same or earlier stage), the last one
//!   a second; fixed seed;
//! - the same in one stage;
//! - a chain of 500 in 20 stages: each service lists the one before it;
//! - that chain closed into a cycle by one more edge (first to last):
//!   `check-config` alone, which must refuse it (exit 2) naming the cycle.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::report::{fmt_num, summarize, Row};
use crate::scale::{generated_config_with, time_cmd};
use crate::Ctx;

/// Edge shapes of the generated configurations.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// One random earlier upstream each (the last service two): as many
    /// edges as services.
    Random,
    /// Service `i` after service `i - 1`.
    Chain,
    /// [`Shape::Chain`] plus the first service after the last: one cycle
    /// through every service.
    Cycle,
}

/// A deterministic pseudo-random sequence (SplitMix64): the same
/// configuration on every run, no dependency.
fn splitmix(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The upstreams of every service for `shape`, and the number of edges.
pub(crate) fn upstreams(services: usize, shape: Shape) -> (Vec<Vec<usize>>, usize) {
    let mut next = splitmix(15);
    let mut below = |i: usize| (next() % i as u64) as usize;
    let mut ups: Vec<Vec<usize>> = vec![Vec::new(); services];
    for (i, u) in ups.iter_mut().enumerate().skip(1) {
        match shape {
            Shape::Random => u.push(below(i)),
            Shape::Chain | Shape::Cycle => u.push(i - 1),
        }
    }
    if let (Shape::Random, Some(last)) = (shape, ups.last_mut()) {
        // A second, different earlier service for the last one (1000
        // services, 1000 edges).
        if let Some(&first) = last.first() {
            let i = services - 1;
            if i > 1 {
                last.push(if first == 0 { i - 1 } else { first - 1 });
            }
        }
    }
    if let (Shape::Cycle, Some(first)) = (shape, ups.first_mut()) {
        first.push(services.saturating_sub(1));
    }
    let edges = ups.iter().map(Vec::len).sum();
    (ups, edges)
}

/// The configuration text for `services` in `stages` with `shape` edges.
pub(crate) fn config(services: usize, stages: usize, shape: Shape) -> (String, usize) {
    let (ups, edges) = upstreams(services, shape);
    let text = generated_config_with(services, stages, true, "standin:v1", &|i| {
        ups.get(i).cloned().unwrap_or_default()
    });
    (text, edges)
}

/// `mcbench __gen-config FILE SERVICES STAGES random|chain|cycle`.
pub(crate) fn gen_main(file: &str, services: usize, stages: usize, shape: &str) -> Result<()> {
    let shape = match shape {
        "random" => Shape::Random,
        "chain" => Shape::Chain,
        "cycle" => Shape::Cycle,
        other => bail!("unknown edge shape `{other}` (random, chain, cycle)"),
    };
    std::fs::write(file, config(services, stages, shape).0)?;
    Ok(())
}

/// `check-config` that must fail with exit 2 and name a dependency cycle.
fn time_refusal(bin: &Path, cfg: &str) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new(bin)
        .args(["check-config", "--config", cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !stderr.contains("dependency cycle: ") {
        bail!(
            "check-config of the cyclic configuration: {} ({})",
            out.status,
            stderr.trim()
        );
    }
    Ok(ms)
}

/// One valid case: rows total + split.
struct Case {
    label: &'static str,
    key: &'static str,
    services: usize,
    stages: usize,
    shape: Shape,
}

const CASES: &[Case] = &[
    Case {
        label: "1000 svc / 1000 edges / 20 stages",
        key: "random_20",
        services: 1000,
        stages: 20,
        shape: Shape::Random,
    },
    Case {
        label: "1000 svc / 1000 edges / 1 stage",
        key: "random_1",
        services: 1000,
        stages: 1,
        shape: Shape::Random,
    },
    Case {
        label: "chain of 500 / 20 stages",
        key: "chain_500",
        services: 500,
        stages: 20,
        shape: Shape::Chain,
    },
];

/// The item.
pub(crate) fn run(ctx: &mut Ctx) -> Result<Vec<Row>> {
    let n = ctx.trials.unwrap_or(if ctx.quick { 5 } else { 21 });
    let dir = Path::new("/dev/shm").join(format!("mcbench-validation-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(ctx, &dir, n);
    std::fs::remove_dir_all(&dir).ok();
    result
}

fn run_in(ctx: &mut Ctx, dir: &Path, n: usize) -> Result<Vec<Row>> {
    let bin = ctx.mcrecover.clone();
    let mut rows = Vec::new();
    let mut raw = serde_json::Map::new();
    for case in CASES {
        let (text, edges) = config(case.services, case.stages, case.shape);
        let cfg = dir.join(format!("{}.toml", case.key));
        std::fs::write(&cfg, text)?;
        let cfg_s = cfg.to_string_lossy().to_string();
        // One warm-up (page cache), not counted.
        time_cmd(&bin, &["check-config", "--config", &cfg_s])?;
        let (mut cc, mut pl, mut re, mut tot) = (vec![], vec![], vec![], vec![]);
        for i in 0..n {
            let out = dir.join(format!("out-{}-{i}", case.key));
            let out_s = out.to_string_lossy().to_string();
            let a = time_cmd(&bin, &["check-config", "--config", &cfg_s])?;
            let b = time_cmd(&bin, &["plan", "--config", &cfg_s])?;
            let c = time_cmd(&bin, &["render", "--config", &cfg_s, "--out", &out_s])?;
            std::fs::remove_dir_all(&out).ok();
            cc.push(a);
            pl.push(b);
            re.push(c);
            tot.push(a + b + c);
        }
        raw.insert(
            case.key.into(),
            serde_json::json!({"services": case.services, "stages": case.stages, "edges": edges,
                "check_config_ms": cc, "plan_ms": pl, "render_tmpfs_ms": re, "total_ms": tot}),
        );
        let t = summarize(&tot);
        rows.push(
            Row::new(
                "scale-validation",
                &format!("check-config + plan + render, {}", case.label),
                "≤ 200 ms",
            )
            .summary(t, "ms")
            .pass(t.is_some_and(|t| t.median <= 200.0))
            .ratio(
                t.map(|t| format!("{}× target", fmt_num(t.median / 200.0)))
                    .unwrap_or_default(),
            )
            .note(format!(
                "{} services, {edges} `after`/`requires` edges ({}), {} stage{}; scale-config's services (a port, a volume, an env, a check each); `check-config`, `plan`, `render --out` into tmpfs, each a process, spawn included, after 1 warm-up",
                case.services,
                match case.shape {
                    Shape::Random => "each service one random earlier one, fixed seed",
                    Shape::Chain | Shape::Cycle => "each service the one before it",
                },
                case.stages,
                if case.stages == 1 { "" } else { "s" }
            )),
        );
        let med = |v: &[f64]| summarize(v).map_or("-".to_string(), |s| fmt_num(s.median));
        let range = |v: &[f64]| {
            summarize(v).map_or(String::new(), |s| {
                format!("{}–{}", fmt_num(s.min), fmt_num(s.max))
            })
        };
        let mut split = Row::new(
            "scale-validation",
            "  check-config / plan / render (tmpfs)",
            "",
        );
        split.measured = format!("{} / {} / {} ms", med(&cc), med(&pl), med(&re));
        split.spread = format!("{} / {} / {} (n={n})", range(&cc), range(&pl), range(&re));
        rows.push(split);
    }

    // The daemon's engine for such a platform: built at start and on every
    // reload (`World::new`, the upstream sets), in-process, the library as
    // the binary has it.
    for (services, stages) in [(1000, 20), (4000, 20)] {
        let (text, edges) = config(services, stages, Shape::Random);
        let path = dir.join(format!("engine_{services}.toml"));
        std::fs::write(&path, &text)?;
        let cfg = mcrecover::config::load(&path)
            .map_err(|e| anyhow::anyhow!("generated configuration refused: {e}"))?;
        let plan = mcrecover::plan::build(&cfg)
            .map_err(|e| anyhow::anyhow!("generated configuration not planned: {e}"))?;
        let history = mcrecover::engine::history::PersistedState::default();
        let build = || {
            let t = Instant::now();
            let w = mcrecover::engine::World::new(
                &cfg,
                &plan,
                mcrecover::engine::Goal::Daemon,
                &history,
            );
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let entries: usize = w
                .services
                .iter()
                .map(|s| s.info.upstreams.iter().count())
                .sum();
            (ms, entries)
        };
        let (_, entries) = build();
        let times: Vec<f64> = (0..n).map(|_| build().0).collect();
        raw.insert(
            format!("engine_{services}"),
            serde_json::json!({"services": services, "stages": stages, "edges": edges,
                "upstream_entries": entries, "world_new_ms": times}),
        );
        rows.push(
            Row::new(
                "scale-validation",
                &format!("  the daemon's engine for {services} svc / {edges} edges / {stages} stages (World::new)"),
                "",
            )
            .summary(summarize(&times), "ms")
            .note(format!(
                "built at the daemon's start and on every reload, on the event loop: every service's transitive upstreams ({entries} in all) as one bitset each; in-process (mcbench links the library), after 1 warm-up"
            )),
        );
    }

    // The chain closed into a cycle: check-config must refuse it.
    let (text, edges) = config(500, 20, Shape::Cycle);
    let cfg = dir.join("cycle_500.toml");
    std::fs::write(&cfg, text)?;
    let cfg_s = cfg.to_string_lossy().to_string();
    time_refusal(&bin, &cfg_s)?;
    let mut refusals = Vec::with_capacity(n);
    for _ in 0..n {
        refusals.push(time_refusal(&bin, &cfg_s)?);
    }
    raw.insert(
        "cycle_500".into(),
        serde_json::json!({"services": 500, "stages": 20, "edges": edges, "check_config_ms": refusals}),
    );
    rows.push(
        Row::new(
            "scale-validation",
            "  check-config refusing the 500-chain closed into a cycle",
            "",
        )
        .summary(summarize(&refusals), "ms")
        .note(format!(
            "the chain of 500 / 20 stages plus one edge from the first service to the last ({edges} edges): exit 2, `dependency cycle: ...` naming the services of the cycle"
        )),
    );
    ctx.raw
        .insert("scale-validation".into(), serde_json::Value::Object(raw));
    Ok(rows)
}
