//! End to end: `mcrecover recover --timeline FILE.svg` of the example
//! (`examples/metacircular.toml`, rootless as `mcp`, service backend) in a
//! REAL systemd + podman sandbox (see `testbed/`, as tests/e2e_recover.rs):
//! the SVG is valid XML with one row per service under its stage, a healthy
//! bar each and a time axis, and `rsvg-convert` (Debian `librsvg2-bin`,
//! installed by scripts/install-deps) renders it to a PNG of plausible size.
//!
//! With `MCRECOVER_TIMELINE_OUT=DIR` the SVG and PNG are also copied to
//! `DIR/recovery-timeline.{svg,png}` (how scripts/timeline-picture makes
//! docs/recovery-timeline.*).
//!
//! Needs root and the packages of `scripts/install-deps`; with
//! MCRECOVER_REQUIRE_E2E=1 a missing prerequisite (rsvg-convert included)
//! fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::process::Command;

use mcrecover_testbed::{e2e_gate, ImageSet, Sandbox, SandboxOptions};

const UID: u32 = 850;
const STAGES: [&str; 4] = ["foundation", "core", "management", "services"];
const RSVG: &str = "/usr/bin/rsvg-convert";

fn ok<T>(sb: &Sandbox, r: Result<T, mcrecover_testbed::TestbedError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}\njournal:\n{}", sb.journal_all()))
}

fn classes<'a>(n: &roxmltree::Node<'a, 'a>) -> Vec<&'a str> {
    n.attribute("class")
        .map(|c| c.split(' ').collect())
        .unwrap_or_default()
}

#[test]
fn recover_writes_the_timeline_of_the_example() {
    let mut needs = Vec::new();
    if !Path::new(RSVG).exists() {
        needs.push(format!(
            "{RSVG} (package librsvg2-bin; run scripts/install-deps)"
        ));
    }
    if !e2e_gate("timeline_e2e", &needs) {
        return;
    }
    let sb = Sandbox::boot(SandboxOptions::metacircular("e2e-timeline")).unwrap();
    ok(
        &sb,
        sb.install_bin(Path::new(env!("CARGO_BIN_EXE_mcrecover")), "mcrecover"),
    );
    ok(&sb, sb.start_user_manager(UID));
    ok(
        &sb,
        sb.load_images(&ImageSet::metacircular().unwrap(), Some(UID)),
    );
    let config = ok(&sb, sb.install_example());
    // A directory mcp may write into (the file is renamed into place).
    ok(&sb, sb.run_ok(&["mkdir", "-p", "/srv/out"]));
    ok(&sb, sb.chown("/srv/out", UID));
    let svg_inside = "/srv/out/timeline.svg";
    let out = sb.run_as(
        UID,
        &[
            "/usr/bin/mcrecover",
            "recover",
            "--json",
            "--config",
            &config,
            "--backend",
            "service",
            "--timeline",
            svg_inside,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("recover -> {:?}\n{stderr}", out.status.code());
    if out.status.code() != Some(0) {
        eprintln!("journal:\n{}", sb.journal_all());
    }
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json still prints the report ({e})"));
    assert_eq!(report["outcome"], "all_healthy");
    assert!(
        stderr.contains(&format!("timeline written to {svg_inside}")),
        "says where"
    );

    let svg_path = sb.host_path(svg_inside);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the timeline is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert!(!svg.contains("<script") && !svg.contains("@font-face"));

    // 4 stage headers in order, 12 service rows, each in the report's stage.
    let stages: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("g") && classes(n).contains(&"stage"))
        .filter_map(|n| n.attribute("data-stage"))
        .collect();
    assert_eq!(stages, STAGES);
    let rows: Vec<roxmltree::Node<'_, '_>> = doc
        .descendants()
        .filter(|n| n.has_tag_name("g") && classes(n).contains(&"row"))
        .collect();
    assert_eq!(rows.len(), 12, "one row per service of the example");
    let services = report["services"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.attribute("data-service"))
        .collect();
    let expected: Vec<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, expected, "rows in the report's (stage) order");
    for r in &rows {
        let healthy = r
            .children()
            .filter(|c| c.has_tag_name("rect") && classes(c).contains(&"healthy"))
            .count();
        assert_eq!(
            healthy,
            1,
            "one healthy bar for {:?}",
            r.attribute("data-service")
        );
    }
    let critical = rows
        .iter()
        .filter(|r| classes(r).contains(&"critical"))
        .count();
    assert_eq!(critical, 4, "one critical service per stage");
    let gates = doc
        .descendants()
        .filter(|n| n.has_tag_name("g") && classes(n).contains(&"gate"))
        .count();
    assert_eq!(gates, 4);
    let axis = doc
        .descendants()
        .find(|n| n.has_tag_name("g") && classes(n).contains(&"axis"))
        .expect("a time axis");
    let ticks = axis
        .children()
        .filter(|c| c.has_tag_name("line") && classes(c).contains(&"tick"))
        .count();
    assert!(ticks >= 2, "{ticks} ticks");
    assert!(
        axis.descendants()
            .any(|n| n.text() == Some("0 s") || n.text() == Some("0.0 s")),
        "the axis starts at 0 s"
    );

    // Rendered by a real SVG renderer.
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("timeline.png");
    let conv = Command::new(RSVG)
        .arg("-o")
        .arg(&png)
        .arg(&svg_path)
        .output()
        .unwrap();
    assert!(conv.status.success(), "rsvg-convert: {conv:?}");
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 10 * 1024, "PNG of {} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!(width >= 800, "PNG {width}x{height}");
    assert!(height >= 12 * 20, "PNG {width}x{height}");

    if let Ok(out_dir) = std::env::var("MCRECOVER_TIMELINE_OUT") {
        let out_dir = Path::new(&out_dir);
        std::fs::create_dir_all(out_dir).unwrap();
        std::fs::write(out_dir.join("recovery-timeline.svg"), &svg).unwrap();
        std::fs::write(out_dir.join("recovery-timeline.png"), &bytes).unwrap();
        eprintln!("copied the timeline to {}", out_dir.display());
    }
}
