//! Sandbox plumbing shared by the items that need real systemd + podman
//! (testbed sandboxes, rootful, plain `.service` backend), and item 4c
//! (200 units in one stage: `mcrecover recover` vs `systemctl start`).

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mcrecover_testbed::{ImageSet, Sandbox, SandboxOptions};

use crate::report::{fmt_num, summarize, Row};
use crate::Ctx;

/// Unit directory used inside sandboxes (the sandbox's own /run).
pub(crate) const UNIT_DIR: &str = "/run/systemd/system";

/// A rootful sandbox shaped like the example platform (every stand-in /srv
/// dir, test CA), stand-in images in root's storage, `mcrecover` and `mcbench`
/// in /usr/bin inside. No quadlet (plain `.service` units).
pub(crate) fn platform(name: &str, ctx: &Ctx) -> Result<Sandbox> {
    mcrecover_testbed::check_prerequisites().map_err(|e| anyhow::anyhow!("{e}"))?;
    // MCBENCH_NAME_SUFFIX: lets two runs of the same item share the machine.
    let name = &format!(
        "{name}{}",
        std::env::var("MCBENCH_NAME_SUFFIX").unwrap_or_default()
    );
    let mut opts = match &ctx.base {
        Some(base) => SandboxOptions::metacircular_on(name, base.clone()),
        None => SandboxOptions::metacircular(name),
    };
    opts.rootless_user = None;
    opts.quadlet_generator = None;
    let t = Instant::now();
    let sb = Sandbox::boot(opts).map_err(|e| anyhow::anyhow!("sandbox boot: {e}"))?;
    sb.install_bin(&ctx.mcrecover, "mcrecover")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    sb.install_bin(&ctx.mcbench, "mcbench")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let images = ImageSet::metacircular().map_err(|e| anyhow::anyhow!("{e}"))?;
    sb.load_images(&images, None)
        .map_err(|e| anyhow::anyhow!("load images: {e}"))?;
    eprintln!(
        "mcbench: sandbox {name} up with images in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(sb)
}

/// `argv` inside the sandbox as root; error with stderr on failure.
pub(crate) fn run_ok(sb: &Sandbox, argv: &[&str]) -> Result<String> {
    let out = sb.run(argv);
    check(argv, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Error unless `out` succeeded.
pub(crate) fn check(argv: &[&str], out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "`{}` inside the sandbox exited {:?}: {}{}",
            argv.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}

/// The example configuration made rootful, written inside; returns its path.
pub(crate) fn rootful_example(sb: &Sandbox, path: &str) -> Result<String> {
    let text = std::fs::read_to_string(
        mcrecover_testbed::workspace_root().join("examples/metacircular.toml"),
    )?;
    let text = text.replacen("mode = \"rootless\"", "mode = \"rootful\"", 1);
    sb.write_file(path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(path.to_string())
}

/// `mcrecover install` (render + daemon-reload) of `config`, service backend, /run units.
pub(crate) fn install(sb: &Sandbox, config: &str) -> Result<()> {
    run_ok(
        sb,
        &[
            "mcrecover",
            "install",
            "--config",
            config,
            "--backend",
            "service",
            "--unit-dir",
            UNIT_DIR,
        ],
    )?;
    Ok(())
}

/// The `mcrecover recover` argv used by every item (no install: done once before).
pub(crate) fn recover_argv(config: &str) -> Vec<&str> {
    vec![
        "mcrecover",
        "recover",
        "--json",
        "--quiet",
        "--no-install",
        "--config",
        config,
        "--backend",
        "service",
        "--unit-dir",
        UNIT_DIR,
    ]
}

/// Stops `units` (and anything matching the patterns), resets failed state,
/// and waits until no container runs.
pub(crate) fn reset(sb: &Sandbox, units: &[String]) -> Result<()> {
    let mut argv = vec!["systemctl", "stop"];
    argv.extend(units.iter().map(String::as_str));
    let _ = sb.run(&argv);
    let _ = sb.run(&["systemctl", "reset-failed"]);
    let t = Instant::now();
    loop {
        let ps = run_ok(sb, &["podman", "ps", "-aq"])?;
        if ps.trim().is_empty() {
            return Ok(());
        }
        if t.elapsed().as_secs() > 120 {
            bail!("containers still present after stop: {ps}");
        }
        let _ = sb.run(&["podman", "rm", "-af"]);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Unix ms of a systemd `us+utc` timestamp (`Thu 2026-11-26 01:44:13.123456 UTC`).
pub(crate) fn parse_utc_us(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let first = it.next()?;
    let date = if first.contains('-') {
        first
    } else {
        it.next()?
    };
    let time = it.next()?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + t[0] * 3600 + t[1] * 60 + t[2];
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    Some((secs as f64 + frac) * 1000.0)
}

/// Unix ms now.
pub(crate) fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// `prop` (a realtime `...Timestamp` property) of each unit, as unix ms (None if unset).
pub(crate) fn unit_times_rt(
    sb: &Sandbox,
    units: &[String],
    prop: &str,
) -> BTreeMap<String, Option<f64>> {
    let mut argv = vec![
        "systemctl",
        "show",
        "--timestamp=us+utc",
        "-p",
        "Id",
        "-p",
        prop,
    ];
    argv.extend(units.iter().map(String::as_str));
    let out = String::from_utf8_lossy(&sb.run(&argv).stdout).into_owned();
    let mut map = BTreeMap::new();
    for block in out.split("\n\n") {
        let mut id = None;
        let mut v = None;
        for l in block.lines() {
            if let Some(x) = l.strip_prefix("Id=") {
                id = Some(x.to_string());
            } else if let Some(x) = l.strip_prefix(&format!("{prop}=")) {
                v = parse_utc_us(x);
            }
        }
        if let Some(id) = id {
            map.insert(id, v);
        }
    }
    map
}

/// 4c: N units (200; 40 with --quick) in one stage, no checks: `mcrecover
/// recover` vs `systemctl start` of a target that Wants= and is After= them all.
pub(crate) fn scale_start(ctx: &mut Ctx) -> Result<Vec<Row>> {
    let n = if ctx.quick { 40 } else { 200 };
    let trials = ctx.trials.unwrap_or(if ctx.quick { 1 } else { 3 });
    let sb = platform("bench-scale-start", ctx)?;
    let image = "mcr.svc.mcp.metacircular.net:8443/kls:v0.2.0";
    let mut cfg = String::from("# Generated by mcbench (scale-start).\n[platform]\nname = \"scale\"\nnode = \"rift\"\nmode = \"rootful\"\nbackend = \"service\"\npull = \"never\"\n\n");
    let names: Vec<String> = (0..n).map(|i| format!("u{i:03}")).collect();
    cfg.push_str(&format!(
        "[[stages]]\nname = \"one\"\nservices = [{}]\ntimeout = \"600s\"\n\n",
        names
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for (i, s) in names.iter().enumerate() {
        cfg.push_str(&format!(
            "[services.{s}]\nimage = \"{image}\"\nnetwork = \"host\"\nenv = {{ STANDIN_NAME = \"{s}\", STANDIN_LISTEN = \"tcp:{}\", STANDIN_BIND = \"127.0.0.1\" }}\n\n",
            30000 + i
        ));
    }
    let path = "/srv/bench-scale-start.toml";
    sb.write_file(path, cfg.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    install(&sb, path)?;
    let units: Vec<String> = names.iter().map(|s| format!("{s}.service")).collect();
    let mut target =
        String::from("[Unit]\nDescription=mcbench: the same units, one systemctl start\n");
    for u in &units {
        target.push_str(&format!("Wants={u}\nAfter={u}\n"));
    }
    sb.write_file(&format!("{UNIT_DIR}/bench-scale.target"), target.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    run_ok(&sb, &["systemctl", "daemon-reload"])?;
    let mut all_units = units;
    all_units.push("bench-scale.target".into());
    all_units.push("scale.target".into());
    all_units.push("scale-one.target".into());
    let (mut rec, mut sys) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        for which in if trial % 2 == 0 { [0, 1] } else { [1, 0] } {
            reset(&sb, &all_units)?;
            let t = Instant::now();
            if which == 0 {
                let argv = recover_argv(path);
                let out = sb.run(&argv);
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                check(&argv, &out)?;
                let rep: serde_json::Value =
                    serde_json::from_slice(&out.stdout).context("recover --json report")?;
                if rep["outcome"] != "all_healthy" {
                    bail!("recover outcome {}", rep["outcome"]);
                }
                eprintln!("mcbench: scale-start trial {trial}: mcrecover recover {ms:.0} ms");
                rec.push(ms);
            } else {
                let argv = ["systemctl", "start", "bench-scale.target"];
                let out = sb.run(&argv);
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                check(&argv, &out)?;
                let active = run_ok(
                    &sb,
                    &[
                        "sh",
                        "-c",
                        "systemctl list-units --state=active --no-legend 'u[0-9]*.service' | wc -l",
                    ],
                )?;
                eprintln!(
                    "mcbench: scale-start trial {trial}: systemctl start {ms:.0} ms ({} active)",
                    active.trim()
                );
                sys.push(ms);
            }
        }
    }
    let _ = reset(&sb, &all_units);
    ctx.raw.insert(
        "scale-start".into(),
        serde_json::json!({"units": n, "recover_ms": rec, "systemctl_ms": sys}),
    );
    let (r, s) = (summarize(&rec), summarize(&sys));
    let ratio = match (r, s) {
        (Some(r), Some(s)) => format!("{}× systemctl", fmt_num(r.median / s.median)),
        _ => String::new(),
    };
    let note = format!(
        "{n} Type=notify podman units (stand-in, host network, one tcp port each, no checks) in one stage; rootful sandbox; wall time of `mcrecover recover --no-install` vs `systemctl start` of a target with Wants=+After= every unit; containers removed between runs; order alternates"
    );
    Ok(vec![
        Row::new(
            "scale-start",
            &format!("{n} units, one stage: mcrecover recover"),
            "",
        )
        .summary(r.map(scale_s), "s")
        .ratio(ratio)
        .note(note),
        Row::new(
            "scale-start",
            &format!("{n} units: systemctl start target"),
            "",
        )
        .summary(s.map(scale_s), "s"),
    ])
}

fn scale_s(mut s: crate::report::Summary) -> crate::report::Summary {
    s.median /= 1000.0;
    s.min /= 1000.0;
    s.max /= 1000.0;
    s.p99 /= 1000.0;
    s
}

#[cfg(test)]
// A failed unwrap is the test failure (as in the root crate's test modules).
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn systemd_utc_timestamps() {
        let ms = super::parse_utc_us("Thu 2026-11-26 01:44:13.123456 UTC").unwrap();
        assert!((ms - 1_795_657_453_123.456).abs() < 0.01, "{ms}");
        assert_eq!(super::parse_utc_us("n/a"), None);
        assert_eq!(super::parse_utc_us(""), None);
    }
}
