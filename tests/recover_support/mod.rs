//! Shared helpers of the recovery end-to-end tests (tests/e2e_recover.rs
//! on the host base, tests/trixie_e2e.rs on trixie): unit properties read
//! in the sandbox, and the stage order a recovery must keep.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use mcrecover_testbed::Sandbox;
use serde_json::Value;

/// The example's stages, in order.
pub const STAGES: [&str; 4] = ["foundation", "core", "management", "services"];

/// A unit's property (`systemctl show -P`), system or user manager.
pub fn prop(sb: &Sandbox, uid: Option<u32>, unit: &str, prop: &str) -> String {
    let out = match uid {
        Some(uid) => sb.run_as(uid, &["systemctl", "--user", "show", "-P", prop, unit]),
        None => sb.run(&["systemctl", "show", "-P", prop, unit]),
    };
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A unit's timestamp property in microseconds since the epoch (0 when
/// unset), read over D-Bus (`systemctl show` prints it as a date).
pub fn prop_usec(sb: &Sandbox, uid: Option<u32>, unit: &str, prop: &str) -> u64 {
    let path: String = unit
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("_{b:02x}")
            }
        })
        .collect();
    let path = format!("/org/freedesktop/systemd1/unit/{path}");
    let argv = [
        "busctl",
        "get-property",
        "org.freedesktop.systemd1",
        &path,
        "org.freedesktop.systemd1.Unit",
        prop,
    ];
    let out = match uid {
        Some(uid) => {
            let mut user = vec!["busctl", "--user"];
            user.extend_from_slice(&argv[1..]);
            sb.run_as(uid, &user)
        }
        None => sb.run(&argv),
    };
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("t ")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A unit's property as an integer (0 when unset).
pub fn prop_u64(sb: &Sandbox, uid: Option<u32>, unit: &str, name: &str) -> u64 {
    prop(sb, uid, unit, name).parse().unwrap_or(0)
}

pub fn services_of(rep: &Value, stage: &str) -> Vec<String> {
    rep["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == stage)
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Every stage's gate unit became active, and no service of stage N+1 left
/// `inactive` before every stand-in of stage N was ready (its own
/// `.standin/ready` timestamp: the first moment a check could pass). The
/// engine starts the next stage on its own verdict; its gate unit confirms
/// that verdict in systemd moments later (a unit whose dependencies are all
/// settled but that gate starts without waiting for it, docs/recovery.md).
pub fn assert_stage_order(sb: &Sandbox, uid: Option<u32>, rep: &Value) {
    for pair in STAGES.windows(2) {
        let gate = format!("metacircular-{}-gate.service", pair[0]);
        let gate_ok = prop_u64(sb, uid, &gate, "ActiveEnterTimestampMonotonic");
        assert!(gate_ok > 0, "{gate} never became active");
        let ready_us: Vec<(String, u64)> = services_of(rep, pair[0])
            .into_iter()
            .filter_map(|svc| {
                let s = mcrecover_testbed::METACIRCULAR_SERVICES
                    .iter()
                    .find(|s| s.service == svc)?;
                let path = sb.host_path(&format!("{}/.standin/ready", s.standin_dir));
                let ms: f64 = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
                Some((svc, (ms * 1000.0) as u64))
            })
            .collect();
        assert!(
            !ready_us.is_empty(),
            "no stand-in of stage {} wrote its ready time",
            pair[0]
        );
        for svc in services_of(rep, pair[1]) {
            let unit = format!("{svc}.service");
            let started = prop_usec(sb, uid, &unit, "InactiveExitTimestamp");
            assert!(started > 0, "{unit} never started");
            for (up, ready) in &ready_us {
                assert!(
                    started >= *ready,
                    "{unit} started at {started} before {up} (stage {}) was ready at {ready} (realtime usec)",
                    pair[0]
                );
            }
        }
    }
}
