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

/// Item 14: a CA bundle that is missing here is a warning at its key (exit
/// 0; `--strict`: exit 2); one that exists but holds no certificate is an
/// error (exit 2), also without `--strict`.
#[test]
fn check_config_looks_at_named_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    let key = dir.path().join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let missing = format!(
        "{SERVICE}\n[[services.a.checks]]\nkind = \"https\"\nurl = \"https://a.example/\"\nca_file = \"/nonexistent/ca.pem\"\n"
    );
    std::fs::write(&cfg, &missing).unwrap();
    let out = mcrecover(&cfg, &["check-config"], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:15:11: warning: ca_file `/nonexistent/ca.pem` does not exist on this machine",
            cfg.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("\n  help: "), "{stderr}");
    assert!(
        text(&out.stdout).contains(": ok ("),
        "{}",
        text(&out.stdout)
    );

    let out = mcrecover(&cfg, &["check-config", "--strict"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    let wrong = missing.replace("/nonexistent/ca.pem", &key.display().to_string());
    std::fs::write(&cfg, wrong).unwrap();
    let out = mcrecover(&cfg, &["check-config"], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(":15:11: error: ca_file `") && stderr.contains("holds a private key"),
        "{stderr}"
    );
}

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

/// Item 15: log lines carry no ANSI colour codes when stderr is not a
/// terminal (`recover -q 2>file` wrote them).
#[test]
fn no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    std::fs::write(&cfg, SERVICE).unwrap();
    let out_dir = dir.path().join("out");
    let out = mcrecover(
        &cfg,
        &[
            "render",
            "--backend",
            "service",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[("MCRECOVER_LOG", "info")],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("wrote unit file"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

/// Issue 12, item 11: the shipped `mcrecover@.service` writes a rootless
/// platform user's home only below /srv or /home; check-config warns (at the
/// `home` key, with the drop-in that fixes it) about a home elsewhere.
#[test]
fn check_config_warns_about_a_home_the_rootless_unit_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    let text_for = |home: &str| {
        format!(
            "[platform]\nname = \"p\"\nmode = \"rootless\"\nuser = \"mcp\"\nuid = 850\ngid = 850\n\
             home = \"{home}\"\n\n[[stages]]\nname = \"s\"\nservices = [\"a\"]\n\n\
             [services.a]\nimage = \"a:1\"\n"
        )
    };
    std::fs::write(&cfg, text_for("/var/lib/mcp")).unwrap();
    let out = mcrecover(&cfg, &["check-config"], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("{}:7:1: warning: platform.home", cfg.display())),
        "{err}"
    );
    assert!(err.contains("ReadWritePaths=/var/lib/mcp"), "{err}");
    let out = mcrecover(&cfg, &["check-config", "--strict"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    for home in ["/home/mcp", "/srv/mcp"] {
        std::fs::write(&cfg, text_for(home)).unwrap();
        let out = mcrecover(&cfg, &["check-config", "--strict"], &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{home}: {err}");
        assert!(!err.contains("platform.home"), "{home}: {err}");
    }
}

/// `install` as root for a rootless configuration is refused before it
/// writes anything (it could not reload the platform user's manager, and
/// what it wrote into that user's directories would belong to root).
#[test]
fn install_as_root_for_a_rootless_platform_writes_nothing() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "install_as_root_for_a_rootless_platform_writes_nothing: not root; nothing to test"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (units, quadlets) = (dir.path().join("units"), dir.path().join("quadlets"));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/metacircular.toml");
    let out = mcrecover(
        &example,
        &[
            "install",
            "--unit-dir",
            units.to_str().unwrap(),
            "--quadlet-dir",
            quadlets.to_str().unwrap(),
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("runuser -u mcp -- mcrecover"), "{err}");
    assert!(
        !units.exists() && !quadlets.exists(),
        "install wrote files: {err}"
    );
}
