//! End-to-end test of the daemon's Prometheus metrics (issue 16, part 1,
//! docs/metrics.md) with the clients operators use, Debian's `prometheus`
//! package: the daemon runs as the SHIPPED `units/mcrecover.service` in a
//! real systemd sandbox (tests/daemon_support) with both outputs on (the
//! node_exporter textfile in /var/lib/prometheus/node-exporter, writable by
//! the shipped unit's `ReadWritePaths=`, and the HTTP endpoint on loopback).
//!
//! - `promtool check metrics` finds nothing to say about the textfile and
//!   the endpoint's body (a lint warning fails it);
//! - a real Prometheus server in the sandbox scrapes the endpoint every
//!   second; its query API shows `up == 1`, and the restart counter of a
//!   service whose container was killed going up by exactly one;
//! - the values match the daemon's status (`mcrecover status --json`:
//!   `total_restarts`, `state`) after the kill and the restart, on the
//!   endpoint, in the textfile and in Prometheus.
//!
//! Needs root and the packages of `scripts/install-deps` (`prometheus` for
//! promtool and the server); with MCRECOVER_REQUIRE_E2E=1 a missing
//! prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod daemon_support;

use std::path::Path;
use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::Value;

const LISTEN: &str = "127.0.0.1:9464";
const TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";
const TEXTFILE: &str = "/var/lib/prometheus/node-exporter/mcrecover.prom";
const PROM_DIR: &str = "/srv/prometheus-test";
const PROM_LISTEN: &str = "127.0.0.1:19090";
const VICTIM: &str = "mcq";

fn config() -> String {
    format!(
        "{}\n[metrics]\ntextfile = \"{TEXTFILE}\"\ntextfile_interval = \"1s\"\nlisten = \"{LISTEN}\"\n",
        daemon_config(10, |t| t)
    )
}

/// promtool and prometheus are there, or the test is skipped (a failure
/// under MCRECOVER_REQUIRE_E2E=1).
fn have_prometheus() -> bool {
    let missing: Vec<&str> = ["/usr/bin/promtool", "/usr/bin/prometheus"]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("MCRECOVER_REQUIRE_E2E").as_deref() != Ok("1"),
        "metrics_e2e: {} missing and MCRECOVER_REQUIRE_E2E=1 (apt-get install prometheus; scripts/install-deps)",
        missing.join(", ")
    );
    eprintln!(
        "SKIP metrics_e2e: {} missing (apt-get install prometheus)",
        missing.join(", ")
    );
    false
}

/// `sh -c SCRIPT` inside the sandbox: (exit code, stdout, stderr).
fn sh(p: &Platform, script: &str) -> (Option<i32>, String, String) {
    let out = p.sb.run(&["sh", "-c", script]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GET `url` inside the sandbox (busybox wget: installed by install-deps).
fn get(p: &Platform, url: &str) -> Option<String> {
    let (code, out, _) = sh(p, &format!("busybox wget -q -O - '{url}'"));
    (code == Some(0)).then_some(out)
}

/// `promtool check metrics` on `file` inside the sandbox: what it said
/// (nothing, exit 0, when it has no complaint).
fn promtool(p: &Platform, file: &str) -> String {
    let (code, out, err) = sh(p, &format!("promtool check metrics < {file}"));
    format!("exit {code:?}\n{out}{err}")
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// One instant query of the sandbox's Prometheus: its `data.result`.
fn query_raw(p: &Platform, promql: &str) -> Option<Value> {
    let enc: String = promql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = get(p, &format!("http://{PROM_LISTEN}/api/v1/query?query={enc}"))?;
    let v: Value = serde_json::from_str(&body).ok()?;
    (v["status"] == "success").then(|| v["data"]["result"].clone())
}

/// The value of the first result of an instant query, if any.
fn query(p: &Platform, promql: &str) -> Option<f64> {
    query_raw(p, promql)?[0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
}

/// Every sample Prometheus holds of `selector` over the last 5 minutes
/// (one series), oldest first.
fn history(p: &Platform, selector: &str) -> Vec<f64> {
    let r = query_raw(p, &format!("{selector}[5m]")).unwrap_or(Value::Null);
    assert!(
        r.as_array().is_some_and(|a| a.len() == 1),
        "one series of {selector}: {r:#}"
    );
    r[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[1].as_str().unwrap().parse().unwrap())
        .collect()
}

fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Where `text` (the endpoint's body or the textfile) differs from the
/// status `st` (every service's `total_restarts` and state); `None` when
/// it agrees.
fn mismatch(st: &Value, text: &str) -> Option<String> {
    for s in st["services"].as_array()? {
        let name = s["name"].as_str()?;
        let stage = s["stage"].as_str().unwrap_or("");
        let labels = format!("service=\"{name}\",stage=\"{stage}\"");
        let restarts = sample(
            text,
            &format!("mcrecover_service_restarts_total{{{labels}}}"),
        );
        let want = s["total_restarts"].as_u64().map(|n| n as f64);
        if restarts != want {
            return Some(format!("restarts of {name}: {restarts:?}, status {want:?}"));
        }
        let state = s["state"].as_str()?;
        let current = sample(
            text,
            &format!("mcrecover_service_state{{{labels},state=\"{state}\"}}"),
        );
        if current != Some(1.0) {
            return Some(format!("state {state} of {name}: {current:?}"));
        }
    }
    None
}

/// Waits until `read()` agrees with the daemon's status.
fn wait_agrees(p: &Platform, what: &str, mut read: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = p.status().expect("status");
        let text = read().unwrap_or_default();
        match mismatch(&st, &text) {
            None => return,
            Some(why) => assert!(
                Instant::now() < deadline,
                "{what} disagrees with the status after 30 s: {why}\n{st:#}\n{text}"
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_scrapes_the_daemon_and_sees_a_restart() {
    if !have_prometheus() {
        return;
    }
    let started = Instant::now();
    let prom_config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: mcrecover\n    static_configs:\n      - targets: ['{LISTEN}']\n"
    );
    let Some(p) = Platform::boot_with("metrics-e2e", &config(), true, |sb| {
        // node_exporter's directory (Debian's path), in the sandbox's own
        // /var/lib, before the daemon starts (ReadWritePaths=- skips a
        // missing one).
        sb.run_ok(&["mkdir", "-p", TEXTFILE_DIR]).unwrap();
        sb.run_ok(&["mkdir", "-p", &format!("{PROM_DIR}/data")])
            .unwrap();
        sb.write_file(
            &format!("{PROM_DIR}/prometheus.yml"),
            prom_config.as_bytes(),
        )
        .unwrap();
    }) else {
        return;
    };
    eprintln!("platform healthy after {:?}", started.elapsed());

    // The endpoint answers, and only GET /metrics.
    let body = get(&p, &format!("http://{LISTEN}/metrics")).expect("the endpoint answers");
    assert_eq!(sample(&body, "mcrecover_up "), Some(1.0), "{body}");
    let (code, _, err) = sh(&p, &format!("busybox wget -q -O - 'http://{LISTEN}/other'"));
    assert_ne!(code, Some(0), "/other must be 404: {err}");

    // promtool on both outputs: no complaint at all.
    sh(
        &p,
        &format!("busybox wget -q -O /srv/endpoint.prom 'http://{LISTEN}/metrics'"),
    );
    assert_eq!(
        promtool(&p, "/srv/endpoint.prom"),
        "exit Some(0)\n",
        "endpoint"
    );
    wait_for("the textfile", 30, || {
        std::fs::read_to_string(p.sb.host_path(TEXTFILE))
            .is_ok_and(|t| t.contains("mcrecover_recovering 0\n"))
    });
    assert_eq!(promtool(&p, TEXTFILE), "exit Some(0)\n", "textfile");
    let (_, mode, _) = sh(&p, &format!("stat -c %a {TEXTFILE}"));
    assert_eq!(mode.trim(), "644", "node_exporter's user must read it");

    // A real Prometheus server scrapes the endpoint.
    let out = p.sb.run(&[
        "systemd-run",
        "--unit=test-prometheus",
        "/usr/bin/prometheus",
        &format!("--config.file={PROM_DIR}/prometheus.yml"),
        &format!("--storage.tsdb.path={PROM_DIR}/data"),
        &format!("--web.listen-address={PROM_LISTEN}"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("Prometheus: up{job=\"mcrecover\"} == 1", 90, || {
        query(&p, "up{job=\"mcrecover\"}") == Some(1.0)
    });
    assert_eq!(query(&p, "mcrecover_up"), Some(1.0));

    let st = p.status().expect("status");
    assert!(all_healthy(&st), "{st:#}");
    let before = service(&st, VICTIM)["total_restarts"].as_u64().unwrap();
    let series = format!("mcrecover_service_restarts_total{{service=\"{VICTIM}\"}}");
    wait_for("Prometheus has the restart counter", 30, || {
        query(&p, &series) == Some(before as f64)
    });

    // A few scrapes of the value before the kill.
    wait_for("Prometheus holds 3 samples before the kill", 30, || {
        query(&p, &format!("count_over_time({series}[5m])")).is_some_and(|n| n >= 3.0)
    });

    // Kill the container: the daemon restarts it once.
    p.kill_container(VICTIM);
    p.wait_status("mcq healthy again after one restart", 90, |st| {
        state_of(st, VICTIM) == "healthy"
            && service(st, VICTIM)["total_restarts"].as_u64() == Some(before + 1)
            && all_healthy(st)
    });
    wait_for("Prometheus sees the counter go up by one", 30, || {
        query(&p, &series) == Some((before + 1) as f64)
    });
    // What Prometheus scraped: `before` for a while, then `before + 1`,
    // nothing else.
    let seen = history(&p, &series);
    eprintln!("Prometheus' samples of {series}: {seen:?}");
    let (b, a) = (before as f64, (before + 1) as f64);
    let first_after = seen.iter().position(|&v| v == a).unwrap_or(seen.len());
    assert!(
        first_after > 0
            && seen[..first_after].iter().all(|&v| v == b)
            && seen[first_after..].iter().all(|&v| v == a)
            && first_after < seen.len(),
        "the restart counter went {b} -> {a} once: {seen:?}"
    );
    // The restart is counted when it is issued; healthy comes a scrape later.
    let healthy = format!("mcrecover_service_state{{service=\"{VICTIM}\",state=\"healthy\"}}");
    wait_for("Prometheus sees mcq healthy again", 30, || {
        query(&p, &healthy) == Some(1.0)
    });
    assert_eq!(query(&p, "up{job=\"mcrecover\"}"), Some(1.0));

    // The endpoint and the textfile say what the status says.
    wait_agrees(&p, "the endpoint", || {
        get(&p, &format!("http://{LISTEN}/metrics"))
    });
    wait_agrees(&p, "the textfile", || {
        std::fs::read_to_string(p.sb.host_path(TEXTFILE)).ok()
    });
    let body = get(&p, &format!("http://{LISTEN}/metrics")).expect("the endpoint answers");
    assert!(
        body.contains("mcrecover_check_duration_seconds_bucket{"),
        "probe durations: {body}"
    );
    assert!(
        body.contains("mcrecover_stage_last_recovery_duration_seconds{stage=\"services\"}"),
        "{body}"
    );
    sh(
        &p,
        &format!("busybox wget -q -O /srv/endpoint.prom 'http://{LISTEN}/metrics'"),
    );
    assert_eq!(
        promtool(&p, "/srv/endpoint.prom"),
        "exit Some(0)\n",
        "endpoint after the restart"
    );
    assert_eq!(
        promtool(&p, TEXTFILE),
        "exit Some(0)\n",
        "textfile after the restart"
    );

    // An operator's restart (`mcrecover restart`, counted like the
    // daemon's own) and a refused, then a done, reload: the metrics follow
    // the status; counters survive the reload (a fresh engine).
    let other = "mcdoc";
    let n = service(&p.status().expect("status"), other)["total_restarts"]
        .as_u64()
        .unwrap();
    let out = p.mcrecover(None, &["restart", other]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.wait_status("mcdoc restarted and healthy", 90, |st| {
        service(st, other)["total_restarts"].as_u64() == Some(n + 1) && all_healthy(st)
    });
    wait_agrees(&p, "the endpoint after `mcrecover restart`", || {
        get(&p, &format!("http://{LISTEN}/metrics"))
    });
    let metric = |name: &str| {
        get(&p, &format!("http://{LISTEN}/metrics")).and_then(|b| sample(&b, &format!("{name} ")))
    };
    assert_eq!(metric("mcrecover_config_last_reload_successful"), Some(1.0));
    let good = config();
    ok(
        &p.sb,
        p.sb.write_file(CONFIG, b"[platform]\nname = \"broken\n"),
    );
    let out = p.mcrecover(None, &["reload"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "an invalid configuration is refused"
    );
    assert_eq!(metric("mcrecover_config_last_reload_successful"), Some(0.0));
    ok(&p.sb, p.sb.write_file(CONFIG, good.as_bytes()));
    let out = p.mcrecover(None, &["reload"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(metric("mcrecover_config_last_reload_successful"), Some(1.0));
    p.wait_status("healthy after the reload", 90, all_healthy);
    wait_agrees(&p, "the endpoint after a reload", || {
        get(&p, &format!("http://{LISTEN}/metrics"))
    });
    assert_eq!(
        metric(&format!(
            "mcrecover_service_restarts_total{{service=\"{VICTIM}\",stage=\"services\"}}"
        )),
        Some((before + 1) as f64),
        "the counter survives the reload"
    );

    // Metrics on, scraped every second: inside the unit's limits. The
    // debug build's peak is about 33 MiB here, 32.4 MiB in daemon_e2e's
    // crash loop without metrics (that test keeps its 4x rule): 3x room here.
    let (hwm_kib, threads) = p.footprint();
    let max: u64 = p.prop(DAEMON, "MemoryMax").parse().unwrap_or(u64::MAX);
    eprintln!("FOOTPRINT metrics on, scraped every second: peak RSS {hwm_kib} KiB, {threads} threads; MemoryMax={max}");
    assert!(
        hwm_kib * 1024 * 3 <= max,
        "peak RSS {hwm_kib} KiB vs MemoryMax={max}"
    );

    // Stopped, the daemon leaves `mcrecover_up 0` in the textfile.
    let _ = p.sb.run(&["systemctl", "stop", "test-prometheus"]);
    let out = p.sb.run(&["systemctl", "stop", DAEMON]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(p.sb.host_path(TEXTFILE)).unwrap();
    assert_eq!(sample(&text, "mcrecover_up "), Some(0.0), "{text}");
    eprintln!("metrics_e2e done after {:?}", started.elapsed());
}
