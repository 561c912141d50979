//! What the command line prints (issue 12 items 13-15): findings about the
//! files a configuration names, each reason once, and no colour codes when
//! stderr is not a terminal. Runs the real binary; no systemd needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn mcrecover(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcrecover"));
    cmd.arg("--config").arg(config).args(args);
    // stderr is a pipe here, never a terminal; whatever the caller's
    // environment says about colour, this is what must decide.
    cmd.env_remove("NO_COLOR").env_remove("MCRECOVER_LOG");
    cmd.env("TERM", "xterm-256color");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SERVICE: &str = "[platform]\nname = \"p\"\nmode = \"rootful\"\n\n\
                       [[stages]]\nname = \"s\"\nservices = [\"a\"]\n\n\
                       [services.a]\nimage = \"a:1\"\n";

/// Item 13: the reason render refuses a value is printed once, by `render`
/// and by `install` (whose error wraps render's).
#[test]
fn render_and_install_say_the_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    let src = SERVICE.replace(
        "mode = \"rootful\"",
        "mode = \"rootful\"\nbackend = \"service\"",
    ) + "command = [\"sh\", \";\"]\n";
    std::fs::write(&cfg, src).unwrap();
    let out_dir = dir.path().join("out");
    let out_dir = out_dir.to_str().unwrap();
    let q = dir.path().join("q");
    let u = dir.path().join("u");
    for args in [
        vec!["render", "--backend", "quadlet", "--out", out_dir],
        vec![
            "install",
            "--dry-run",
            "--backend",
            "quadlet",
            "--quadlet-dir",
            q.to_str().unwrap(),
            "--unit-dir",
            u.to_str().unwrap(),
        ],
    ] {
        let out = mcrecover(&cfg, &args, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.matches("cannot be passed through a quadlet").count(),
            1,
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("service a: argument 2 of command"),
            "{stderr}"
        );
    }
}
