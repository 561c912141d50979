//! The configuration loader against the example runbook and a directory of
//! broken configurations. Each file in `tests/bad-configs/` starts with
//! `# expect: LINE:COL: MESSAGE` (and optionally `# help: TEXT` on the next
//! line); loading it must fail with exactly that location and message (and
//! a help text containing TEXT). Adding a case = adding a file.

use std::path::{Path, PathBuf};

use mcrecover::config::{self, CheckKind, FailurePolicy, Network};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn example_runbook_loads() {
    let path = repo().join("examples/metacircular.toml");
    let cfg = match config::load(&path) {
        Ok(cfg) => cfg,
        Err(e) => panic!("example does not load:\n{e}"),
    };
    assert_eq!(cfg.platform.name, "metacircular");
    assert_eq!(cfg.platform.node.as_deref(), Some("rift"));
    let user = cfg
        .platform
        .user
        .as_ref()
        .map(|u| (u.name.as_str(), u.uid, u.gid, u.home.clone()));
    assert_eq!(user, Some(("mcp", 850, 850, PathBuf::from("/srv/mcp"))));
    assert_eq!(
        cfg.platform.quadlet_dir,
        Path::new("/etc/containers/systemd/users/850")
    );
    assert_eq!(
        cfg.platform.unit_dir,
        Path::new("/srv/mcp/.config/systemd/user")
    );
    assert_eq!(cfg.platform.config_path, path);

    let containers: Vec<&str> = cfg
        .services
        .values()
        .filter_map(|s| s.container.as_ref().map(|c| c.name.as_str()))
        .collect();
    assert_eq!(containers.len(), 12, "{containers:?}");
    assert!(cfg.services["mcias"].is_external());
    assert_eq!(cfg.services.len(), 13);

    let stages: Vec<(&str, usize, FailurePolicy)> = cfg
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.services.len(), s.on_failure))
        .collect();
    assert_eq!(
        stages,
        [
            ("foundation", 1, FailurePolicy::Block),
            ("core", 5, FailurePolicy::Block),
            ("management", 1, FailurePolicy::Block),
            ("services", 5, FailurePolicy::Continue),
        ]
    );

    let mcns = cfg.services["mcns"]
        .container
        .as_ref()
        .map(|c| (c.image.as_str(), c.ports.len()));
    assert_eq!(
        mcns,
        Some(("mcr.svc.mcp.metacircular.net:8443/mcns:v1.2.0", 5))
    );
    let names: Vec<&str> = cfg.services["mcns"]
        .checks
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["dns", "dns-2", "https"]);
    let web = cfg.services["mcr-web"]
        .container
        .as_ref()
        .and_then(|c| c.user.as_deref());
    assert_eq!(web, Some("0:0"));
    let cmd = |s: &str| {
        cfg.services[s]
            .container
            .as_ref()
            .map(|c| c.command.clone())
            .unwrap_or_default()
    };
    assert_eq!(cmd("metacrypt-web")[0], "--config");
    assert_eq!(cmd("kls"), ["-f", "/srv/kls/kls.conf"]);
    assert_eq!(cmd("sgardd")[0], "--repo");
    let net = cfg.services["mc-proxy"]
        .container
        .as_ref()
        .map(|c| c.network.clone());
    assert_eq!(net, Some(Network::Host));
    assert!(
        matches!(cfg.services["mcp-master"].checks[0].kind, CheckKind::Grpc(ref g) if g.tls.is_some())
    );
}

/// Parse the `# expect:` / `# help:` header of a bad config.
fn expectation(src: &str, file: &Path) -> (String, Option<String>) {
    let mut lines = src.lines();
    let expect = lines
        .next()
        .and_then(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| {
            panic!(
                "{}: first line must be `# expect: LINE:COL: MESSAGE`",
                file.display()
            )
        });
    let help = lines
        .next()
        .and_then(|l| l.strip_prefix("# help: "))
        .map(str::to_string);
    (expect.to_string(), help)
}

#[test]
fn bad_configs_fail_with_exact_locations() {
    let dir = repo().join("tests/bad-configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "only {} bad configs", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let src =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let (expect, help) = expectation(&src, file);
        match config::parse(&src, file) {
            Ok(_) => failures.push(format!("{}: loaded, expected `{expect}`", file.display())),
            Err(err) => {
                let got = match err.location {
                    Some(l) => format!("{}:{}: {}", l.line, l.col, err.message),
                    None => err.message.clone(),
                };
                if got != expect {
                    failures.push(format!(
                        "{}:\n  expected: {expect}\n  got:      {got}",
                        file.display()
                    ));
                }
                if let Some(help) = &help {
                    let got_help = err.help.clone().unwrap_or_default();
                    if !got_help.contains(help.as_str()) {
                        failures.push(format!(
                            "{}:\n  help should contain: {help}\n  got: {got_help}",
                            file.display()
                        ));
                    }
                }
                if err.help.is_none() {
                    failures.push(format!("{}: no help text", file.display()));
                }
                let shown = err.to_string();
                assert!(
                    shown.starts_with(&format!("{}:", file.display())),
                    "{shown}"
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad configs wrong:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn missing_file_is_reported() {
    let err = config::load(Path::new("/nonexistent/mcrecover.toml"))
        .err()
        .map(|e| e.to_string());
    assert!(err
        .is_some_and(|e| e.starts_with("/nonexistent/mcrecover.toml: cannot read configuration")));
}
