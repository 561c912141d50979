//! Item `peer-gating` (issue 15 item 7): stage gating by podman's own
//! mechanism, side by side with `mcrecover recover` in one sandbox and run.
//!
//! The peer: the example's services as quadlet `.container` files
//! (`peer-<svc>.container`, rendered by `mcrecover render --backend
//! quadlet`, then edited) with `Notify=healthy` and a `HealthCmd` that
//! passes once the stand-in is ready (its `.standin/ready` file; podman
//! runs it from a transient timer of the manager every `HealthInterval`),
//! and each stage's units `After=`/`Requires=` every unit of the stage
//! before: a unit is active only once healthy, so systemd alone starts the
//! stages in order, health-gated, what `systemctl start` of a target waits
//! for. Needs podman >= 5.0 (`Notify=healthy`): run with `--base trixie`.
//! Both sides start from zero with the same stand-ins and ready delays as
//! the `recovery` item; time to all healthy is spawn → exit of `recover`
//! and of `systemctl start peer.target`.

use anyhow::{bail, Context, Result};
use mcrecover_testbed::metacircular_service;
use serde_json::{json, Value};

use crate::recovery::{analyse, example_sandbox, from_zero, Trial, STAGES};
use crate::report::{fmt_num, summarize, Row};
use crate::sandbox::{self, now_ms, UNIT_DIR};
use crate::Ctx;

/// The peer's health check interval (podman's default is 30 s).
const HEALTH_INTERVAL: &str = "1s";

/// `text` (a rendered `.container`) as the peer's unit of a service of
/// stage `stage`: no gate units, ordered after every unit of the stage
/// before, `Notify=healthy` with a ready-file `HealthCmd`.
fn peer_container(text: &str, stage: usize, standin_dir: &str) -> String {
    let mut out = String::new();
    let mut section = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            section = line.to_string();
            if section == "[Install]" {
                break;
            }
        }
        if line.contains("-gate.service") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if section == "[Unit]" && line == "[Unit]" && stage > 0 {
            for s in STAGES[stage - 1].1 {
                out.push_str(&format!(
                    "After=peer-{s}.service\nRequires=peer-{s}.service\n"
                ));
            }
        }
        if line == "[Container]" {
            out.push_str(&format!(
                "Notify=healthy\nHealthCmd=/bin/sh -c 'test -f {standin_dir}/.standin/ready'\nHealthInterval={HEALTH_INTERVAL}\nHealthRetries=1000\n"
            ));
        }
    }
    out
}

/// Item 7 (peer mechanisms): quadlet `Notify=healthy` vs `mcrecover recover`.
pub(crate) fn run(ctx: &mut Ctx) -> Result<Vec<Row>> {
    if ctx.base.is_none() {
        bail!("needs podman >= 5.0 for Notify=healthy: run with --base trixie");
    }
    let trials = ctx.trials.unwrap_or(if ctx.quick { 1 } else { 5 });
    let (sb, config) = example_sandbox(ctx, "bench-peers")?;
    let out_dir = "/run/mcbench-quadlet";
    sandbox::run_ok(
        &sb,
        &[
            "mcrecover",
            "render",
            "--config",
            &config,
            "--backend",
            "quadlet",
            "--out",
            out_dir,
        ],
    )?;
    let mut all_units: Vec<String> = Vec::new();
    let mut wants = String::from("[Unit]\nDescription=mcbench peer gating\n");
    for (i, (_, svcs)) in STAGES.iter().enumerate() {
        for s in *svcs {
            let text = std::fs::read_to_string(sb.host_path(&format!("{out_dir}/{s}.container")))
                .with_context(|| format!("rendered {s}.container"))?;
            let dir = metacircular_service(s)
                .map(|x| x.standin_dir)
                .context("service")?;
            sb.write_file(
                &format!("/etc/containers/systemd/peer-{s}.container"),
                peer_container(&text, i, dir).as_bytes(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            wants.push_str(&format!("Wants=peer-{s}.service\nAfter=peer-{s}.service\n"));
            all_units.push(format!("{s}.service"));
            all_units.push(format!("peer-{s}.service"));
        }
    }
    sb.write_file(&format!("{UNIT_DIR}/peer.target"), wants.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (st, _) in STAGES {
        all_units.push(format!("metacircular-{st}-gate.service"));
        all_units.push(format!("metacircular-{st}.target"));
    }
    all_units.push("metacircular.target".into());
    all_units.push("peer.target".into());
    sandbox::run_ok(&sb, &["systemctl", "daemon-reload"])?;
    let loaded = sandbox::run_ok(
        &sb,
        &["systemctl", "show", "-P", "LoadState", "peer-mcq.service"],
    )?;
    if loaded.trim() != "loaded" {
        bail!(
            "the quadlet generator made no peer-mcq.service ({})",
            loaded.trim()
        );
    }

    let mut results: Vec<Trial> = Vec::new();
    let mut raw = Vec::new();
    for trial in 0..trials {
        let order = if trial % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            from_zero(&sb, &all_units)?;
            let argv: Vec<&str> = if which == 0 {
                sandbox::recover_argv(&config)
            } else {
                vec!["systemctl", "start", "peer.target"]
            };
            let (who, prefix) = if which == 0 {
                ("mcrecover", "")
            } else {
                ("quadlet", "peer-")
            };
            let t0 = now_ms();
            let out = sb.run(&argv);
            let t1 = now_ms();
            sandbox::check(&argv, &out)?;
            let t = analyse(&sb, who, prefix, t0, t1)?;
            eprintln!(
                "mcbench: peer-gating trial {trial} {who}: total {:.0} ms, critical path {:.0} ms, overhead {:.0} ms",
                t.total_ms, t.critical_ms, t.overhead_ms
            );
            raw.push(json!({"trial": trial, "who": who, "analysis": t}));
            results.push(t);
        }
    }
    let _ = sandbox::reset(&sb, &all_units);
    ctx.raw.insert("peer-gating".into(), Value::Array(raw));
    let pick = |who: &str, f: fn(&Trial) -> f64| -> Vec<f64> {
        results.iter().filter(|t| t.who == who).map(f).collect()
    };
    let m = summarize(&pick("mcrecover", |t| t.total_ms));
    let q = summarize(&pick("quadlet", |t| t.total_ms));
    let mo = summarize(&pick("mcrecover", |t| t.overhead_ms));
    let qo = summarize(&pick("quadlet", |t| t.overhead_ms));
    let mut rows = vec![
        Row::new("peer-gating", "time to all healthy, quadlet Notify=healthy + HealthCmd", "")
            .summary(q, "ms")
            .note(format!("the example's 12 stand-ins as quadlet units with Notify=healthy, HealthCmd = test -f the stand-in's ready file, HealthInterval={HEALTH_INTERVAL}; each stage After=/Requires= every unit of the stage before; `systemctl start peer.target`, spawn → exit; same ready delays as the recovery item")),
        Row::new("peer-gating", "time to all healthy, mcrecover recover (same run)", "")
            .summary(m, "ms")
            .note("`mcrecover recover --no-install`, service backend, paired trials, order alternating"),
        Row::new("peer-gating", "  quadlet: overhead over the critical path", "")
            .summary(qo, "ms"),
        Row::new("peer-gating", "  mcrecover: overhead over the critical path", "")
            .summary(mo, "ms"),
    ];
    if let (Some(q), Some(m)) = (q, m) {
        let mut r = Row::new(
            "peer-gating",
            "quadlet time to all healthy ÷ mcrecover's",
            "≥ 1×",
        );
        r.measured = format!("{}×", fmt_num(q.median / m.median));
        r.spread = format!("medians of {trials} paired runs");
        rows.push(r.pass(q.median >= m.median));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_units_drop_the_gates_and_wait_for_health() {
        let text = "[Unit]\nDescription=MCQ\nAfter=metacircular-management-gate.service\nRequires=metacircular-management-gate.service\n\n[Container]\nImage=x\nContainerName=mcq\n\n[Service]\nRestart=no\n\n[Install]\nWantedBy=metacircular-services.target\n";
        let out = peer_container(text, 3, "/srv/mcq");
        assert!(!out.contains("gate"), "{out}");
        assert!(!out.contains("[Install]"), "{out}");
        assert!(out.contains("After=peer-mcp-master.service\nRequires=peer-mcp-master.service\n"));
        assert!(out
            .contains("Notify=healthy\nHealthCmd=/bin/sh -c 'test -f /srv/mcq/.standin/ready'\n"));
    }
}
