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

    // [watch] spells out the defaults; only mcr-api has a remedy (the runbook's
    // fchmod / readonly database fix, as a quarantine).
    assert_eq!(
        serde_json::to_value(&cfg.watch).ok(),
        serde_json::to_value(config::WatchPolicy::default()).ok()
    );
    let remedies: Vec<(&str, Vec<String>, Vec<String>)> = cfg
        .services
        .values()
        .filter_map(|s| {
            s.remedy.as_ref().map(|r| {
                let paths = r
                    .quarantine
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                (s.name.as_str(), paths, r.on.clone())
            })
        })
        .collect();
    assert_eq!(
        remedies,
        [(
            "mcr-api",
            vec![
                "/srv/mcr/mcr.db".to_string(),
                "/srv/mcr/mcr.db-wal".to_string(),
                "/srv/mcr/mcr.db-shm".to_string()
            ],
            vec!["fchmod-readonly-db".to_string()]
        )]
    );
    assert!(mcrecover::diagnose::signature("fchmod-readonly-db").is_some());
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

#[test]
fn docs_example_loads() {
    let doc = std::fs::read_to_string(repo().join("docs/config.md")).unwrap_or_default();
    let start = doc
        .find("```toml\n[platform]")
        .map(|i| i + "```toml\n".len());
    let block = start.and_then(|s| doc[s..].find("```").map(|e| &doc[s..s + e]));
    let Some(block) = block else {
        panic!("docs/config.md has no ```toml example")
    };
    if let Err(e) = config::parse(block, Path::new("docs/config.md")) {
        panic!("docs example does not load:\n{e}");
    }
}

/// Every kind and most optional keys, with the values they produce.
#[test]
fn every_key_is_accepted() {
    let src = r#"
[platform]
name = "lab"
mode = "rootful"
backend = "service"
pull = "missing"
image_prefix = "registry.example:5000"

[check_defaults]
interval = "1m30s"
start_period = "500ms"

[[stages]]
name = "only"
services = ["web", "db"]
timeout = "5m"
on_failure = "continue"

[services.db]
image = "postgres:16"
container_name = "db-main"
network = "labnet"
volumes = ["pgdata:/var/lib/postgresql/data:Z", "/etc/tz:/etc/tz:ro"]
env = { POSTGRES_PASSWORD = "x", TZ = "UTC" }
restart = "on-failure"
podman_args = ["--shm-size", "256m"]

[[services.db.checks]]
kind = "exec"
argv = ["/usr/bin/pg_isready", "-h", "127.0.0.1"]
user = "postgres"

[services.web]
image = "other.example/web:1"
ports = ["8080:80", "[::1]:8443:443/tcp", "127.0.0.1:5353:53/udp"]
user = "1000:1000"
after = ["db"]
requires = ["db"]

[[services.web.checks]]
kind = "http"
url = "http://127.0.0.1:8080/"
status = [200, 204]
body_contains = "ok"
timeout = "20s"
failure_threshold = 5
success_threshold = 2

[[services.web.checks]]
kind = "https"
url = "https://web.example:8443/"
insecure = true
connect_to = "[::1]:8443"

[[services.web.checks]]
kind = "grpc"
address = "127.0.0.1:9000"
service = "web.Health"

[[services.web.checks]]
kind = "dns"
server = "[::1]:5353"
query = "web.example"
record = "AAAA"
transport = "tcp"
expect_cidr = "fd00::/8"

[[services.web.checks]]
kind = "dns"
server = "127.0.0.1"
query = "web.example"
expect_address = "10.0.0.1"
"#;
    let cfg = match config::parse(src, Path::new("/etc/lab.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        cfg.platform.quadlet_dir,
        Path::new("/etc/containers/systemd")
    );
    assert_eq!(cfg.platform.unit_dir, Path::new("/etc/systemd/system"));
    assert!(cfg.platform.user.is_none());
    assert_eq!(cfg.stages[0].timeout, std::time::Duration::from_secs(300));
    let db = cfg.services["db"]
        .container
        .as_ref()
        .map(|c| (c.name.clone(), c.image.clone(), c.network.clone()));
    assert_eq!(
        db,
        Some((
            "db-main".into(),
            "registry.example:5000/postgres:16".into(),
            Network::Named("labnet".into())
        ))
    );
    let web = &cfg.services["web"];
    assert_eq!(
        web.container.as_ref().map(|c| c.image.as_str()),
        Some("other.example/web:1")
    );
    let names: Vec<&str> = web.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["http", "https", "grpc", "dns", "dns-2"]);
    let http = &web.checks[0];
    assert_eq!(http.interval, std::time::Duration::from_secs(90));
    assert_eq!(http.start_period, std::time::Duration::from_millis(500));
    assert_eq!((http.failure_threshold, http.success_threshold), (5, 2));
    match &http.kind {
        CheckKind::Http(h) => assert!(h.status.accepts(204) && !h.status.accepts(301)),
        other => panic!("{other:?}"),
    }
    match &web.checks[1].kind {
        CheckKind::Http(h) => assert!(h.tls.insecure && h.connect_to.is_some_and(|a| a.is_ipv6())),
        other => panic!("{other:?}"),
    }
    match &web.checks[2].kind {
        CheckKind::Grpc(g) => assert!(g.tls.is_none() && g.service == "web.Health"),
        other => panic!("{other:?}"),
    }
    let db_checks = &cfg.services["db"].checks;
    assert!(
        matches!(&db_checks[0].kind, CheckKind::Exec(e) if e.argv.len() == 3 && e.user.as_deref() == Some("postgres"))
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Mangled versions of the example (a line dropped, duplicated or
    /// truncated) never panic, and every error points inside the file.
    #[test]
    fn mangled_example_never_panics(line in 0usize..400, op in 0u8..3, cut in 0usize..40) {
        let src = std::fs::read_to_string(repo().join("examples/metacircular.toml")).unwrap_or_default();
        let mut lines: Vec<String> = src.lines().map(str::to_string).collect();
        let i = line % lines.len();
        match op {
            0 => { lines.remove(i); }
            1 => { let l = lines[i].clone(); lines.insert(i, l); }
            _ => { let keep: String = lines[i].chars().take(cut).collect(); lines[i] = keep; }
        }
        let text = lines.join("\n");
        if let Err(e) = config::parse(&text, Path::new("m.toml")) {
            let loc = e.location.map_or(1, |l| l.line);
            proptest::prop_assert!(loc <= lines.len() + 1, "{e}");
            proptest::prop_assert!(e.help.is_some(), "{e}");
        }
    }
}

/// `[watch]` with every key and a `remedy` load with the values written;
/// without `[watch]` the documented defaults apply.
#[test]
fn watch_and_remedy_load() {
    use mcrecover::config::{RestartOwner, WatchPolicy};
    use std::time::Duration;

    let src = r#"
[platform]
name = "lab"
mode = "rootful"

[[stages]]
name = "only"
services = ["db", "cache"]

[services.db]
image = "db:1"
volumes = ["/srv/db:/var/lib/db:Z", "dbsock:/run/db", "/etc/db/:/etc/db:ro"]

[services.db.remedy]
quarantine = ["/srv/db/db.sqlite", "/srv/db/db.sqlite-wal", "/etc/db/state/x"]
on = ["fchmod-readonly-db", "address-in-use", "fchmod-readonly-db"]

[services.cache]
image = "cache:1"
volumes = ["/srv/cache:/cache"]

[services.cache.remedy]
quarantine = ["/srv/cache/index"]

[watch]
restart_owner = "systemd"
backoff_initial = "500ms"
backoff_max = "2m"
backoff_reset = "1h"
escalate_after = 3
escalate_window = "15m"
state_dir = "/var/lib/mcrecover-lab"
hook = ["/usr/local/bin/page", "--service", "all"]
hook_timeout = "1m"
webhook = "https://alerts.example.net:8443/hooks/mcrecover"
webhook_ca_file = "/etc/mcrecover/alerts-ca.pem"
webhook_timeout = "5s"
"#;
    let cfg = match config::parse(src, Path::new("/etc/lab.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let w = &cfg.watch;
    assert_eq!(w.restart_owner, RestartOwner::Systemd);
    assert_eq!(w.backoff_initial, Duration::from_millis(500));
    assert_eq!(w.backoff_max, Duration::from_secs(120));
    assert_eq!(w.backoff_reset, Duration::from_secs(3600));
    assert_eq!(w.escalate_after, 3);
    assert_eq!(w.escalate_window, Duration::from_secs(900));
    assert_eq!(
        w.state_dir.as_deref(),
        Some(Path::new("/var/lib/mcrecover-lab"))
    );
    assert_eq!(w.hook, ["/usr/local/bin/page", "--service", "all"]);
    assert_eq!(w.hook_timeout, Duration::from_secs(60));
    assert_eq!(
        w.webhook.as_ref().map(url::Url::as_str),
        Some("https://alerts.example.net:8443/hooks/mcrecover")
    );
    assert_eq!(
        w.webhook_ca_file.as_deref(),
        Some(Path::new("/etc/mcrecover/alerts-ca.pem"))
    );
    assert_eq!(w.webhook_timeout, Duration::from_secs(5));

    let db = cfg.services["db"]
        .remedy
        .as_ref()
        .map(|r| (&r.quarantine, &r.on));
    let want_paths: Vec<PathBuf> = [
        "/srv/db/db.sqlite",
        "/srv/db/db.sqlite-wal",
        "/etc/db/state/x",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let want_on: Vec<String> = vec!["fchmod-readonly-db".into(), "address-in-use".into()];
    assert_eq!(db, Some((&want_paths, &want_on)));
    let cache = cfg.services["cache"].remedy.as_ref();
    assert!(cache
        .is_some_and(|r| r.on.is_empty() && r.quarantine == [PathBuf::from("/srv/cache/index")]));

    // No [watch] at all: the defaults of the contract.
    let plain = src.split("[watch]").next().unwrap_or_default();
    let cfg = match config::parse(plain, Path::new("/etc/lab.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let d = WatchPolicy::default();
    assert_eq!(cfg.watch.restart_owner, RestartOwner::Mcrecover);
    assert_eq!(
        (
            cfg.watch.backoff_initial,
            cfg.watch.backoff_max,
            cfg.watch.backoff_reset
        ),
        (
            Duration::from_secs(1),
            Duration::from_secs(300),
            Duration::from_secs(600)
        )
    );
    assert_eq!(
        (cfg.watch.escalate_after, cfg.watch.escalate_window),
        (d.escalate_after, d.escalate_window)
    );
    assert!(
        cfg.watch.hook.is_empty() && cfg.watch.webhook.is_none() && cfg.watch.state_dir.is_none()
    );
}

/// Issue 12 item 3: `image = "--privileged"` would become a podman option;
/// the configuration's own path (the gate units' `--config`) must be
/// writable into a unit.
#[test]
fn option_lookalikes_and_unwritable_paths_are_rejected() {
    let base = "[platform]\nname = \"p\"\nmode = \"rootful\"\n\n[[stages]]\nname = \"s\"\nservices = [\"a\"]\n\n[services.a]\n";
    for (value, want) in [
        (
            "image = \"--privileged\"",
            "image `--privileged` starts with `-`",
        ),
        ("image = \"-x/y:1\"", "image `-x/y:1` starts with `-`"),
        ("image = \"a:1\"\nuser = \"-u\"", "invalid user `-u`"),
        (
            "image = \"a:1\"\ncontainer_name = \"--rm\"",
            "invalid container name `--rm`",
        ),
        (
            "image = \"a:1\"\nnetwork = \"--net\"",
            "invalid network `--net`",
        ),
    ] {
        let src = format!("{base}{value}\n");
        match config::parse(&src, Path::new("/etc/p.toml")) {
            Ok(_) => panic!("{value}: loaded"),
            Err(e) => {
                assert!(e.message.contains(want), "{value}: {e}");
                assert!(e.location.is_some_and(|l| l.line >= 10), "{value}: {e}");
            }
        }
    }
    let src = format!("{base}image = \"a:1\"\n");
    let err = config::parse(&src, Path::new("/etc/odd\nname.toml"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("contains a control character") && err.contains("help: set config_path"),
        "{err}"
    );
    let with_path = src.replace("[[stages]]", "config_path = \"/etc/p.toml\"\n\n[[stages]]");
    assert!(config::parse(&with_path, Path::new("/etc/odd\nname.toml")).is_ok());
}

/// A TOML string literal.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn awkward_word() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        Just(String::new()),
        Just(";".to_string()),
        Just("-x".to_string()),
        Just("x.network".to_string()),
        proptest::collection::vec(
            proptest::sample::select(vec![
                "a", "Z", "0", " ", "\\", "\"", "'", "%", "%n", "$", "${X}", ";", "-", ".", "/",
                ":", "é", "#", "[", "]", "\\\\",
            ]),
            1..6
        )
        .prop_map(|v| v.concat()),
    ]
}

/// Mostly nothing (the value stays valid), sometimes an awkward suffix.
fn sometimes_awkward() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![3 => Just(String::new()), 1 => awkward_word()]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Issue 12 item 13: whatever `check-config` accepts, render accepts with
    /// every backend the configuration may use (`auto`: both).
    #[test]
    fn what_loads_renders(
        backend in proptest::sample::select(vec!["auto", "quadlet", "service"]),
        description in awkward_word(),
        command in proptest::collection::vec(awkward_word(), 0..4),
        podman_arg in awkward_word(),
        env_value in awkward_word(),
        volume_host in sometimes_awkward(),
        user in sometimes_awkward(),
        network in sometimes_awkward(),
        image in sometimes_awkward(),
    ) {
        use mcrecover::render::{self, Backend};
        let list = |v: &[String]| v.iter().map(|w| toml_str(w)).collect::<Vec<_>>().join(", ");
        let src = format!(
            "[platform]\nname = \"p\"\nmode = \"rootful\"\nbackend = \"{backend}\"\n\n\
             [[stages]]\nname = \"s\"\nservices = [\"a\"]\n\n\
             [services.a]\ndescription = {}\nimage = {}\ncommand = [{}]\npodman_args = [{}]\n\
             env = {{ V = {} }}\nvolumes = [{}]\nuser = {}\nnetwork = {}\n",
            toml_str(&description),
            toml_str(&format!("img{image}")),
            list(&command),
            toml_str(&podman_arg),
            toml_str(&env_value),
            toml_str(&format!("/srv/{volume_host}:/data")),
            toml_str(&format!("u{user}")),
            toml_str(&format!("n{network}")),
        );
        if let Ok(cfg) = config::parse(&src, Path::new("/etc/p.toml")) {
            let plan = mcrecover::plan::build(&cfg).unwrap_or_else(|e| panic!("{e}"));
            let backends: &[Backend] = match backend {
                "service" => &[Backend::Service],
                "quadlet" => &[Backend::Quadlet],
                _ => &[Backend::Quadlet, Backend::Service],
            };
            for b in backends {
                if let Err(e) = render::render(&cfg, &plan, *b) {
                    panic!("loaded but render ({b:?}) refuses it: {e}\n{src}");
                }
            }
        }
    }
}
