//! Cold start from image archives, end to end, in REAL sandboxes (systemd +
//! rootless podman as `mcp`, uid 850): `mcrecover images save` exports the
//! example's twelve stand-in images with a verified index; a fresh sandbox
//! with NO images then reports the exact remedy when there is no archive,
//! refuses a corrupted archive, and with the archives in `image_archive`
//! (`/srv/mcp/images`) `mcrecover recover` loads them and gets all healthy.
//!
//! Needs root and the packages of `scripts/install-deps`; with
//! MCRECOVER_REQUIRE_E2E=1 a missing prerequisite fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use mcrecover_testbed::{e2e_gate, ImageSet, Sandbox, SandboxOptions, TestbedError};
use serde_json::Value;

const UID: u32 = 850;
const ARCHIVE: &str = "/srv/mcp/images";
const MCNS: &str = "mcr.svc.mcp.metacircular.net:8443/mcns:v1.2.0";

fn config() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/metacircular.toml")
        .to_string_lossy()
        .into_owned()
}

fn ok<T>(sb: &Sandbox, r: Result<T, TestbedError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}\njournal:\n{}", sb.journal_all()))
}

/// A rootless example sandbox (service backend, no quadlet), `mcp`'s manager
/// running, this build's mcrecover at /usr/bin/mcrecover.
fn sandbox(name: &str) -> Sandbox {
    let mut opts = SandboxOptions::metacircular(name);
    opts.quadlet_generator = None;
    let sb = Sandbox::boot(opts).unwrap();
    ok(
        &sb,
        sb.install_bin(Path::new(env!("CARGO_BIN_EXE_mcrecover")), "mcrecover"),
    );
    ok(&sb, sb.start_user_manager(UID));
    sb
}

/// Runs mcrecover inside the sandbox as root (`None`) or `uid`, on the
/// example (copied into the sandbox).
fn mcrecover(sb: &Sandbox, uid: Option<u32>, args: &[&str]) -> Output {
    let cfg = sb.install_example().unwrap();
    let mut argv = vec!["/usr/bin/mcrecover", "--config", &cfg];
    argv.extend_from_slice(args);
    let out = match uid {
        Some(uid) => sb.run_as(uid, &argv),
        None => sb.run(&argv),
    };
    eprintln!(
        "$ mcrecover {}\n-> {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `mcrecover recover --json` as mcp with the service backend.
fn recover(sb: &Sandbox) -> (Option<i32>, Value) {
    let out = mcrecover(
        sb,
        Some(UID),
        &["recover", "--json", "--backend", "service"],
    );
    (out.status.code(), json(&out))
}

fn service<'a>(rep: &'a Value, name: &str) -> &'a Value {
    rep["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {rep:#}"))
}

/// `sha256sum` of a host file.
fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn remedy(image: &str) -> String {
    format!("On a machine that has it: podman save {image} | ssh rift \"sudo -u mcp podman load\"")
}

#[test]
fn save_then_cold_start_from_archives() {
    if !e2e_gate("save_then_cold_start_from_archives", &[]) {
        return;
    }
    let images = ImageSet::metacircular().unwrap();
    let saved = tempfile::tempdir().unwrap();

    // (1) images save, run as root: podman runs as mcp (runuser), on mcp's storage.
    {
        let sb = sandbox("images-save");
        ok(&sb, sb.load_images(&images, Some(UID)));
        let out = mcrecover(&sb, None, &["images", "save", ARCHIVE]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("12 saved, 0 missing"), "{text}");
        let dir = sb.host_path(ARCHIVE);
        let index: BTreeMap<String, Value> =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index.keys().map(String::as_str).collect::<Vec<_>>(), {
            let mut r = images.references();
            r.sort_unstable();
            r
        });
        assert_eq!(index[MCNS]["file"], "mcns_v1.2.0.tar");
        for (image, e) in &index {
            let file = dir.join(e["file"].as_str().unwrap());
            assert_eq!(e["sha256"], sha256sum(&file), "{image}");
            assert_eq!(
                e["size"].as_u64().unwrap(),
                std::fs::metadata(&file).unwrap().len()
            );
            assert!(e["size"].as_u64().unwrap() > 100_000, "{image}: {e}");
            assert!(e["saved_at"].as_str().unwrap().ends_with('Z'));
        }
        // Only the archives and the index, no temporary files left.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 13);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), saved.path().join(entry.file_name())).unwrap();
        }
    }

    // A fresh machine: no images in mcp's storage.
    let sb = sandbox("images-cold");

    // (4) No image and no archive: the stage fails with the filled-in remedy.
    let (code, rep) = recover(&sb);
    assert_eq!(code, Some(3), "{rep:#}");
    assert_eq!(rep["stages"][0]["status"], "failed");
    assert_eq!(rep["stages"][1]["status"], "blocked");
    let err = service(&rep, "mcns")["start_error"].as_str().unwrap();
    assert_eq!(
        err,
        format!(
            "image {MCNS} is not in mcp's podman storage and not in {ARCHIVE}. {}",
            remedy(MCNS)
        )
    );
    let out = mcrecover(&sb, Some(UID), &["images", "status"]);
    assert_eq!(out.status.code(), Some(1));

    // pull = "missing", but MCR (stage core, the example's registry_service) serves the
    // registry: no pull before it is healthy.
    let example = std::fs::read_to_string(config()).unwrap();
    assert!(example.contains("registry_service = \"mcr-api\""));
    let pulling = example.replacen("pull = \"never\"", "pull = \"missing\"", 1);
    assert_ne!(
        pulling, example,
        "the example no longer says pull = \"never\""
    );
    ok(
        &sb,
        sb.write_file("/srv/mcrecover-pull.toml", pulling.as_bytes()),
    );
    let out = sb.run_as(
        UID,
        &[
            "/usr/bin/mcrecover",
            "recover",
            "--json",
            "--backend",
            "service",
            "--config",
            "/srv/mcrecover-pull.toml",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    let rep = json(&out);
    let err = service(&rep, "mcns")["start_error"].as_str().unwrap();
    assert!(
        err.contains("Not pulling it: its registry is served by mcr-api (stage core)")
            && err.ends_with(&remedy(MCNS)),
        "{err}"
    );

    // Archives in place: status shows missing + archived (checksum ok).
    for entry in std::fs::read_dir(saved.path()).unwrap() {
        let entry = entry.unwrap();
        let inside = format!("{ARCHIVE}/{}", entry.file_name().to_string_lossy());
        ok(&sb, sb.copy_in(&entry.path(), &inside, 0o644, None));
    }
    let out = mcrecover(&sb, Some(UID), &["images", "status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let st = json(&out);
    assert_eq!(st["storage"], "mcp's podman storage");
    assert_eq!(st["images"].as_array().unwrap().len(), 12);
    for i in st["images"].as_array().unwrap() {
        assert_eq!(i["present"], false, "{i:#}");
        assert_eq!(i["archive"]["state"], "ok", "{i:#}");
    }
    let text = String::from_utf8_lossy(&mcrecover(&sb, Some(UID), &["images", "status"]).stdout)
        .into_owned();
    let line = text.lines().find(|l| l.starts_with(MCNS)).unwrap();
    assert!(
        line.contains("missing") && line.contains("archived, checksum ok: mcns_v1.2.0.tar"),
        "{text}"
    );

    // (3) One flipped byte: refused with the checksum message, stage fails with the remedy.
    let mcns_tar = sb.host_path(&format!("{ARCHIVE}/mcns_v1.2.0.tar"));
    let good = std::fs::read(&mcns_tar).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&mcns_tar, &bad).unwrap();
    let (code, rep) = recover(&sb);
    assert_eq!(code, Some(3), "{rep:#}");
    let err = service(&rep, "mcns")["start_error"].as_str().unwrap();
    assert!(
        err.contains(&format!(
            "image {MCNS}: archive {ARCHIVE}/mcns_v1.2.0.tar fails its checksum"
        )) && err.contains("refusing to load it")
            && err.ends_with(&remedy(MCNS)),
        "{err}"
    );
    let exists = sb.run_as(UID, &["podman", "image", "exists", MCNS]);
    assert_eq!(
        exists.status.code(),
        Some(1),
        "a corrupted archive was loaded"
    );
    let st = json(&mcrecover(&sb, Some(UID), &["images", "status", "--json"]));
    assert_eq!(st["images"][0]["image"], MCNS);
    assert_eq!(st["images"][0]["archive"]["state"], "checksum_mismatch");

    // (2) Intact archives: recover loads every image into mcp's storage and gets all healthy.
    std::fs::write(&mcns_tar, &good).unwrap();
    let (code, rep) = recover(&sb);
    assert_eq!(code, Some(0), "{rep:#}\n{}", sb.journal_all());
    assert_eq!(rep["outcome"], "all_healthy");
    for s in rep["services"].as_array().unwrap() {
        assert_eq!(s["status"], "healthy", "{s:#}");
    }
    let st = json(&mcrecover(&sb, Some(UID), &["images", "status", "--json"]));
    for i in st["images"].as_array().unwrap() {
        assert_eq!(i["present"], true, "{i:#}");
    }
}
