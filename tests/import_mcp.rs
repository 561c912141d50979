//! `mcrecover import-mcp`: MCP service definitions (fixtures under
//! tests/import-mcp/, written from the documented format) converted into
//! mcrecover services, alone and merged into examples/metacircular.toml.
//! Pure: no sandbox needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mcrecover::config::{self, Config, Container, Network};
use mcrecover::import::{self, Base, ImportError, Imported};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import-mcp/services")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/metacircular.toml")
}

fn skeleton(node: Option<&str>) -> Imported {
    let defs = import::read_definitions(&[fixtures()]).unwrap();
    import::convert(
        &defs,
        None,
        node,
        Path::new("/etc/mcrecover/mcrecover.toml"),
    )
    .unwrap()
}

fn merged() -> (Base, Imported) {
    let base = Base::load(&example()).unwrap();
    let defs = import::read_definitions(&[fixtures()]).unwrap();
    let out = import::convert(&defs, Some(&base), None, Path::new("/tmp/merged.toml")).unwrap();
    (base, out)
}

fn container<'a>(cfg: &'a Config, name: &str) -> &'a Container {
    cfg.services[name]
        .container
        .as_ref()
        .unwrap_or_else(|| panic!("{name} is not a container"))
}

fn warned(out: &Imported, subject: &str, needle: &str) -> bool {
    out.warnings
        .iter()
        .any(|w| w.subject == subject && w.message.contains(needle))
}

fn reparse(out: &Imported) -> Config {
    config::parse(&out.text, Path::new("/tmp/reparsed.toml"))
        .unwrap_or_else(|e| panic!("output does not parse: {e}\n{}", out.text))
}

#[test]
fn container_names_follow_service_and_component() {
    assert_eq!(import::container_name("metacrypt", "api"), "metacrypt-api");
    assert_eq!(import::container_name("mcq", "mcq"), "mcq");
    assert_eq!(import::container_name("notes", "app"), "notes-app");
}

#[test]
fn skeleton_converts_every_field() {
    let out = skeleton(None);
    let keys: Vec<&str> = out.converted.iter().map(|c| c.key.as_str()).collect();
    // Files in name order, components in file order; exo (inactive) and mcias (svc) skipped.
    assert_eq!(
        keys,
        [
            "mc-proxy",
            "mcdoc",
            "mcq",
            "metacrypt-api",
            "metacrypt-web",
            "notes-app"
        ]
    );
    let cfg = reparse(&out);
    assert_eq!(cfg.services.len(), 6);

    let api = container(&cfg, "metacrypt-api");
    assert_eq!(
        api.image,
        "mcr.svc.mcp.metacircular.net:8443/metacrypt:v1.3.1"
    );
    assert_eq!(api.name, "metacrypt-api");
    assert_eq!(api.network, Network::Named("mcpnet".into()));
    assert_eq!(api.user.as_deref(), Some("0:0"));
    let ports: Vec<&str> = api.ports.iter().map(|p| p.raw.as_str()).collect();
    assert_eq!(ports, ["127.0.0.1:18443:8443", "127.0.0.1:19443:9443"]);
    let vols: Vec<&str> = api.volumes.iter().map(|v| v.raw.as_str()).collect();
    assert_eq!(vols, ["/srv/metacrypt:/srv/metacrypt"]);
    assert_eq!(
        api.command,
        ["server", "--config", "/srv/metacrypt/metacrypt.toml"]
    );

    let web = container(&cfg, "metacrypt-web");
    assert_eq!(web.user, None);
    assert_eq!(web.command, ["--config", "/srv/metacrypt/metacrypt.toml"]);

    let mcq = container(&cfg, "mcq");
    assert_eq!(mcq.network, Network::Bridge);
    assert_eq!(format!("{:?}", mcq.restart), "Always");

    let mcdoc = container(&cfg, "mcdoc");
    assert_eq!(mcdoc.env.get("TZ").map(String::as_str), Some("UTC"));
    assert_eq!(mcdoc.env.get("MCDOC_LOG").map(String::as_str), Some("info"));
    assert_eq!(mcdoc.volumes[0].options.as_deref(), Some("ro"));

    // env as KEY=VALUE strings; value keeps its own `=`.
    let notes = container(&cfg, "notes-app");
    assert_eq!(notes.image, "docker.io/library/notes:2.1");
    assert_eq!(
        notes.env.get("NOTES_URL").map(String::as_str),
        Some("https://notes.metacircular.net/?a=b")
    );
    assert_eq!(format!("{:?}", notes.restart), "UnlessStopped");

    let proxy = container(&cfg, "mc-proxy");
    assert_eq!(proxy.network, Network::Host);
    assert!(proxy.ports.is_empty());
}

#[test]
fn skeleton_platform_and_stages() {
    let out = skeleton(None);
    let cfg = reparse(&out);
    assert_eq!(cfg.platform.name, "metacircular");
    assert_eq!(cfg.platform.node.as_deref(), Some("rift"));
    let user = cfg.platform.user.as_ref().unwrap();
    assert_eq!((user.name.as_str(), user.uid, user.gid), ("mcp", 850, 850));
    let stages: Vec<(&str, Vec<&str>)> = cfg
        .stages
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.services.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        [
            ("core", vec!["mc-proxy", "metacrypt-api", "metacrypt-web"]),
            ("services", vec!["mcq", "mcdoc"]),
            ("other", vec!["notes-app"]),
        ]
    );
    assert!(warned(&out, "notes-app", "last stage `other`"));
    assert!(out.text.contains("# TODO: review the [platform] skeleton"));
    assert!(out
        .text
        .contains("# TODO: no health checks: add [[services.mcq.checks]]"));
}

#[test]
fn warnings_for_everything_not_mapped() {
    let out = skeleton(None);
    assert!(warned(&out, "exo.toml", "inactive"));
    assert!(warned(&out, "mcias.toml", "runs on node `svc`, not `rift`"));
    assert!(warned(&out, "mcdoc.toml", "unknown key `owner`"));
    assert!(warned(&out, "mcdoc.toml", "tier = services"));
    assert!(warned(
        &out,
        "mcdoc.toml",
        "unknown component key `healthcheck`"
    ));
    assert!(warned(
        &out,
        "mcdoc.toml",
        "route `web` (port 8080, mode l7, hostname docs.metacircular.net, public)"
    ));
    assert!(warned(
        &out,
        "mcdoc.toml",
        "route `grpc` (port 9443, mode l4"
    ));
    assert!(warned(&out, "mc-proxy.toml", "dropped"));
    assert!(warned(&out, "notes.toml", "restart = \"sometimes\""));
    assert_eq!(out.warnings.len(), 10, "{:#?}", out.warnings);
    // Every warning is also a comment in the output.
    for w in &out.warnings {
        assert!(
            out.text.contains(&format!("# warning: {w}")),
            "missing comment for {w}"
        );
    }
}

#[test]
fn node_selects_services() {
    let out = skeleton(Some("svc"));
    let keys: Vec<&str> = out.converted.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["mcias"]);
    assert!(warned(
        &out,
        "metacrypt.toml",
        "runs on node `rift`, not `svc`"
    ));
    let cfg = reparse(&out);
    assert_eq!(cfg.platform.node.as_deref(), Some("svc"));
    assert_eq!(cfg.stages.len(), 1);
    assert_eq!(cfg.stages[0].name, "other");
}

#[test]
fn merge_keeps_platform_stages_and_checks() {
    let (base, out) = merged();
    let cfg = reparse(&out);
    let ex = &base.config;

    // Platform and check defaults are the example's.
    assert_eq!(
        serde_json::to_value(&cfg.platform.image_prefix).unwrap(),
        serde_json::to_value(&ex.platform.image_prefix).unwrap()
    );
    assert_eq!(cfg.platform.node, ex.platform.node);
    assert_eq!(cfg.platform.user, ex.platform.user);
    assert_eq!(cfg.platform.image_archive, ex.platform.image_archive);

    // Stages are the example's; the one new service went to the last stage.
    assert_eq!(cfg.stages.len(), ex.stages.len());
    for (got, want) in cfg.stages.iter().zip(&ex.stages) {
        assert_eq!(got.name, want.name);
        assert_eq!(got.on_failure, want.on_failure);
        let mut want_members = want.services.clone();
        if got.name == "services" {
            want_members.push("notes-app".into());
        }
        assert_eq!(got.services, want_members);
    }
    assert!(warned(
        &out,
        "notes-app",
        "appended to the last stage `services`"
    ));

    // Every service of the example is still there, with exactly its checks
    // (schedules included) and description.
    for (name, want) in &ex.services {
        let got = &cfg.services[name];
        assert_eq!(
            serde_json::to_value(&got.checks).unwrap(),
            serde_json::to_value(&want.checks).unwrap(),
            "checks of {name}"
        );
        assert_eq!(got.description, want.description, "description of {name}");
    }
    assert!(cfg.services["mcias"].is_external());
    assert_eq!(cfg.services.len(), ex.services.len() + 1);

    // Imported containers replace the example's: prefix stripped in the text,
    // new versions and fields from the definitions.
    let mcq = out.converted.iter().find(|c| c.key == "mcq").unwrap();
    assert_eq!(mcq.image, "mcq:v0.4.3");
    assert!(out.text.contains("image = \"mcq:v0.4.3\""));
    assert_eq!(
        container(&cfg, "mcq").image,
        "mcr.svc.mcp.metacircular.net:8443/mcq:v0.4.3"
    );
    assert_eq!(
        container(&cfg, "metacrypt-api").network,
        Network::Named("mcpnet".into())
    );
    assert_eq!(
        container(&cfg, "metacrypt-api").user.as_deref(),
        Some("0:0")
    );
    assert_eq!(
        container(&cfg, "mcdoc").image,
        "mcr.svc.mcp.metacircular.net:8443/mcdoc:v0.2.0"
    );
    // Another registry keeps its full name.
    assert!(out.text.contains("image = \"docker.io/library/notes:2.1\""));
    // Services the definitions do not cover are untouched.
    let sg = container(&cfg, "sgardd");
    let sg_ex = container(ex, "sgardd");
    assert_eq!(
        serde_json::to_value(sg).unwrap(),
        serde_json::to_value(sg_ex).unwrap()
    );
}

#[test]
fn output_is_deterministic() {
    let (_, a) = merged();
    let (_, b) = merged();
    assert_eq!(a.text, b.text);
    assert_eq!(skeleton(None).text, skeleton(None).text);
}

#[test]
fn invalid_output_is_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import-mcp/clash");
    let defs = import::read_definitions(&[dir]).unwrap();
    let err = import::convert(&defs, None, None, Path::new("/tmp/x.toml")).unwrap_err();
    let ImportError::Invalid { error, line } = &err else {
        panic!("expected Invalid, got {err}");
    };
    assert!(line.contains("127.0.0.1:40000:80"), "{line}");
    assert!(error.to_string().contains("40000"), "{error}");
}

#[test]
fn bad_definitions_are_errors() {
    let p = Path::new("x.toml");
    let err = import::mcp::parse("node = \"rift\"\n", p).unwrap_err();
    assert!(
        err.to_string().contains("missing top-level `name`"),
        "{err}"
    );
    let err = import::mcp::parse("name = \"x\"\n[[components]]\nname = \"a\"\n", p).unwrap_err();
    assert!(err.to_string().contains("has no `image`"), "{err}");
    let err = import::mcp::parse(
        "name = \"x\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nports = \"80:80\"\n",
        p,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("`ports` must be an array of strings"),
        "{err}"
    );
    let err = import::mcp::parse("name = [", p).unwrap_err();
    assert!(matches!(err, ImportError::Toml { .. }), "{err}");
}

#[test]
fn nothing_to_import_is_an_error() {
    let defs = vec![import::mcp::parse(
        "name = \"x\"\nactive = false\n[[components]]\nname = \"x\"\nimage = \"i\"\n",
        Path::new("x.toml"),
    )
    .unwrap()];
    let err = import::convert(&defs, None, None, Path::new("/tmp/x.toml")).unwrap_err();
    assert!(matches!(err, ImportError::Nothing { .. }), "{err}");
}

/// The binary end to end: write with --out, then `check-config` accepts the file.
#[test]
fn binary_writes_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mcrecover.toml");
    let bin = env!("CARGO_BIN_EXE_mcrecover");
    let run = Command::new(bin)
        .arg("import-mcp")
        .arg(fixtures())
        .arg("--merge")
        .arg(example())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("mcrecover: warning: exo.toml"), "{stderr}");
    let check = Command::new(bin)
        .arg("-c")
        .arg(&out)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // An invalid result exits 2 and writes nothing.
    let bad = dir.path().join("bad.toml");
    let run = Command::new(bin)
        .arg("import-mcp")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import-mcp/clash"))
        .arg("--out")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(!bad.exists());
}

/// A definition skipped on merge leaves the config's entry alone, and says so.
#[test]
fn merge_keeps_entries_of_skipped_definitions() {
    let base = Base::load(&example()).unwrap();
    let defs = import::read_definitions(&[fixtures()]).unwrap();
    let out = import::convert(&defs, Some(&base), None, Path::new("/tmp/m.toml")).unwrap();
    // mcias (node svc) is external in the example: kept, with a note.
    assert!(warned(
        &out,
        "mcias.toml",
        "the merged config's `mcias` left as is (external: checked from this node, never started here)"
    ));
    assert!(reparse(&out).services["mcias"].is_external());
}

/// One set of definitions, one configuration per node
/// (examples/two-nodes/, docs/operator-guide.md "One daemon per node"):
/// merged into rift's, MCIAS (node svc) stays the external entry that gates
/// stage `identity` and that mcr-api requires; merged into svc's, it is
/// svc's container, and rift's services are skipped.
#[test]
fn one_set_of_definitions_makes_each_nodes_configuration() {
    let two = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/two-nodes");
    let defs = import::read_definitions(&[fixtures()]).unwrap();

    let rift = Base::load(&two.join("rift.toml")).unwrap();
    let out = import::convert(&defs, Some(&rift), None, Path::new("/tmp/rift.toml")).unwrap();
    assert!(warned(
        &out,
        "mcias.toml",
        "runs on node `svc`, not `rift`: skipped (use --node svc to import it); the merged config's `mcias` left as is (external"
    ));
    let cfg = reparse(&out);
    assert_eq!(cfg.platform.node.as_deref(), Some("rift"));
    assert!(cfg.services["mcias"].is_external());
    let identity = cfg.stages.iter().find(|s| s.name == "identity").unwrap();
    assert_eq!(identity.services, ["mcias"]);
    assert_eq!(cfg.services["mcr-api"].requires, ["mcias"]);
    assert!(cfg.services["metacrypt-api"].container.is_some());

    let svc = Base::load(&two.join("svc.toml")).unwrap();
    let out = import::convert(&defs, Some(&svc), None, Path::new("/tmp/svc.toml")).unwrap();
    assert!(warned(
        &out,
        "metacrypt.toml",
        "runs on node `rift`, not `svc`"
    ));
    let cfg = reparse(&out);
    assert_eq!(cfg.platform.node.as_deref(), Some("svc"));
    let mcias = container(&cfg, "mcias");
    assert_eq!(
        mcias.image,
        "mcr.svc.mcp.metacircular.net:8443/mcias:v1.0.0"
    );
    assert_eq!(mcias.ports[0].raw, "0.0.0.0:8443:8443");
    assert_eq!(cfg.stages[0].services, ["mcias"]);
    assert!(!cfg.services.contains_key("metacrypt-api"));
}

fn convert_one(src: &str) -> Result<Imported, ImportError> {
    let defs = vec![import::mcp::parse(src, Path::new("def.toml")).unwrap()];
    import::convert(&defs, None, Some("rift"), Path::new("/tmp/x.toml"))
}

/// Issue 12 item 3: the definitions belong to the platform user; what they
/// say goes through the same validation as a hand-written configuration,
/// so a value podman would read as an option (or one quadlet cannot carry)
/// is refused, with the generated line.
#[test]
fn definitions_cannot_smuggle_podman_options() {
    for (key, value, want) in [
        ("image", "\"--privileged\"", "starts with `-`"),
        ("image", "\"x:1\\\\\"", "cannot contain"),
        ("user", "\"--privileged\"", "invalid user"),
        ("network", "\"--network=host\"", "invalid network"),
        ("volumes", "[\"--volume=/:/host\"]", "invalid volume"),
        (
            "cmd",
            "[\"serve\", \";\"]",
            "cannot be passed through a quadlet",
        ),
    ] {
        let image = if key == "image" {
            ""
        } else {
            "image = \"x:1\"\n"
        };
        let src = format!(
            "name = \"x\"\nnode = \"rift\"\n[[components]]\nname = \"x\"\n{image}{key} = {value}\n"
        );
        match convert_one(&src) {
            Ok(out) => panic!("{key} = {value}: imported\n{}", out.text),
            Err(ImportError::Invalid { error, line }) => {
                assert!(error.message.contains(want), "{key} = {value}: {error}");
                assert!(
                    line.starts_with(if key == "cmd" { "command" } else { key }),
                    "{line}"
                );
            }
            Err(other) => panic!("{key} = {value}: {other}"),
        }
    }
}

/// Issue 12 item 3: text of a definition that ends up in a `# warning:`
/// comment (an unknown key, a tier, a route) cannot end the comment and
/// inject configuration lines; the warnings printed on the terminal carry no
/// control characters either.
#[test]
fn warnings_cannot_inject_lines() {
    let src =
        "name = \"x\"\nnode = \"rift\"\ntier = \"a\\n[services.evil]\\nimage = \\\"evil:1\\\"\"\n\
               \"k\\n[watch]\\nhook = [\\\"/bin/sh\\\"]\" = 1\n\
               [[components]]\nname = \"x\"\nimage = \"x:1\"\n\
               [[components.routes]]\nname = \"r\\u001b[2J\"\nport = 1\n";
    let out = convert_one(src).unwrap();
    for line in out.text.lines() {
        assert!(
            line.is_empty()
                || line.starts_with('#')
                || !line.contains("evil:1") && !line.contains("/bin/sh"),
            "injected line {line:?} in\n{}",
            out.text
        );
    }
    assert!(!out.text.contains("\n[watch]"), "{}", out.text);
    assert!(!out.text.contains('\u{1b}'), "{}", out.text);
    let cfg = reparse(&out);
    assert!(!cfg.services.contains_key("evil"));
    assert!(cfg.watch.hook.is_empty());
    for w in &out.warnings {
        let shown = w.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
    }
}
