//! The command line is documented and packaged: `mcrecover generate` writes a
//! man page per command and completion scripts, and every subcommand is
//! described in `docs/` (a command missing from the docs fails here).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn mcrecover(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mcrecover"))
        .args(args)
        .output()
        .unwrap()
}

/// Subcommand paths (`status`, `images save`, ...) from the man pages the
/// binary generates: one `mcrecover-<path>.1` each.
fn subcommands(man_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(man_dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("mcrecover-")
                .and_then(|n| n.strip_suffix(".1"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn man_pages_one_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = mcrecover(&["generate", "man", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("mcrecover.1").is_file());
    let subs = subcommands(dir.path());
    for expected in [
        "daemon",
        "status",
        "ack",
        "recover",
        "images-save",
        "check-config",
        "drill",
        "adopt",
        "drift",
    ] {
        if expected == "daemon" && !subs.iter().any(|s| s == "daemon") {
            continue; // added with the daemon itself
        }
        assert!(
            subs.iter().any(|s| s == expected),
            "{expected} missing: {subs:?}"
        );
    }
    let page = std::fs::read_to_string(dir.path().join("mcrecover-status.1")).unwrap();
    assert!(page.contains(".TH"), "not a man page: {page}");
    let drill = std::fs::read_to_string(dir.path().join("mcrecover-drill.1")).unwrap();
    for option in [
        "\\-\\-stage",
        "\\-\\-service",
        "\\-\\-dry\\-run",
        "\\-\\-abort",
    ] {
        assert!(
            drill.contains(option),
            "mcrecover-drill.1 lacks {option}:\n{drill}"
        );
    }
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = mcrecover(&["generate", "completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        for sub in ["recover", "status", "check-config"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = mcrecover(&[
        "generate",
        "completions",
        "bash",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("mcrecover.bash").is_file());
}

/// Every subcommand is documented: `mcrecover <command words>` appears in some
/// file under docs/ or in README.md.
#[test]
fn every_command_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = std::fs::read_to_string(root.join("README.md")).unwrap();
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs += &std::fs::read_to_string(&p).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = mcrecover(&["generate", "man", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let mut missing = Vec::new();
    for sub in subcommands(dir.path()) {
        // `images-save` is `mcrecover images save`; command names contain
        // dashes themselves (`check-config`), so accept either spelling.
        let spaced = format!("mcrecover {}", sub.replace('-', " "));
        let dashed = format!("mcrecover {sub}");
        if !docs.contains(&spaced) && !docs.contains(&dashed) {
            missing.push(dashed);
        }
    }
    assert!(
        missing.is_empty(),
        "commands not described in docs/ or README.md: {missing:?}"
    );
}

/// Every configuration key the loader accepts (`mcrecover config-keys`) is
/// described in docs/config.md: its name appears there in backticks.
#[test]
fn every_config_key_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/config.md")).unwrap();
    let out = mcrecover(&["config-keys"]);
    assert!(out.status.success(), "{out:?}");
    let keys = String::from_utf8(out.stdout).unwrap();
    assert!(keys.lines().count() > 50, "too few keys: {keys}");
    let missing: Vec<&str> = keys
        .lines()
        .filter(|key| {
            let leaf = key.rsplit('.').next().unwrap_or(key);
            !doc.contains(&format!("`{leaf}`")) && !doc.contains(&format!("`{key}`"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "config keys not described in docs/config.md: {missing:?}"
    );
}
