//! The escaping round trip through a REAL systemd: rendered units (service
//! backend) and quadlet-generated units (quadlet backend) are loaded by a
//! throwaway systemd (a testbed sandbox), started, and their executables are
//! replaced by a tiny script that records the argv it receives. The recorded
//! argv must be exactly the one we meant: this checks systemd's own parsing of
//! quoting, `%%`, `$$` and `\;` (and quadlet's re-quoting) instead of ours.
//!
//! The property test does the same for ~48 random argv vectors, and also reads
//! each unit's `ExecStart=` back from systemd over D-Bus (the words as systemd
//! parsed them from the unit file), including the units the real quadlet
//! generator makes inside the sandbox.
//!
//! Needs root, the testbed's programs and the quadlet binary
//! (`MCRECOVER_QUADLET` or `.cache/quadlet/quadlet`); when missing, fails
//! under `MCRECOVER_REQUIRE_E2E=1` and skips otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use mcrecover::config::{self, Config};
use mcrecover::plan;
use mcrecover::render::escape::{self, EscapeError};
use mcrecover::render::{self, Backend, Destination, RenderError};
use mcrecover_testbed::{Sandbox, SandboxOptions};
use proptest::strategy::{Just, Strategy, ValueTree};
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use zbus::proxy::CacheProperties;
use zbus_systemd::systemd1::{ManagerProxy, ServiceProxy, UnitProxy};

mod render_support;
use render_support::{
    add_random_services, container_mut, gate_argv, has_podman_args, image_and_command,
    quadlet_gate, NASTY,
};

/// Inside the sandbox: the argv recorder and where it writes.
const RECORDER: &str = "/run/render-test/record-argv";
const ARGV_DIR: &str = "/run/render-test/argv";
/// Inside the sandbox: system units, and the quadlet generator's input.
const UNIT_DIR: &str = "/run/systemd/system";
const QUADLET_DIR: &str = "/run/containers/systemd";

/// One sandbox at a time in this test binary (CI has 2 cores).
static SANDBOXES: Mutex<()> = Mutex::new(());

/// The e2e gate of the testbed, plus the quadlet binary.
fn gate(test: &str) -> Option<PathBuf> {
    quadlet_gate(test, &[])
}

fn boot(name: &str, quadlet_generator: Option<PathBuf>) -> Sandbox {
    let sb = Sandbox::boot(SandboxOptions {
        name: name.into(),
        quadlet_generator,
        ..SandboxOptions::default()
    })
    .unwrap();
    install_recorder(&sb);
    sb
}

/// A script that records its argv (NUL-separated) once per unit, named after
/// the unit of its cgroup.
fn install_recorder(sb: &Sandbox) {
    let script = format!(
        "#!/bin/sh\n\
         unit=$(sed -n 's|^0::.*/||p' /proc/self/cgroup)\n\
         set -C\n\
         printf '%s\\0' \"$0\" \"$@\" > '{ARGV_DIR}'/\"$unit\".argv 2>/dev/null\n\
         exit 0\n"
    );
    sb.write_file(RECORDER, script.as_bytes()).unwrap();
    std::fs::set_permissions(
        sb.host_path(RECORDER),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::create_dir_all(sb.host_path(ARGV_DIR)).unwrap();
}

fn recorded(sb: &Sandbox, unit: &str) -> Vec<String> {
    let raw = std::fs::read(sb.host_path(&format!("{ARGV_DIR}/{unit}.argv")))
        .unwrap_or_else(|e| panic!("{unit} did not run the recorder: {e}"));
    let mut v: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    assert_eq!(v.pop().as_deref(), Some(""), "argv not NUL-terminated");
    v
}

/// Per-unit drop-ins (never global: they would hit the sandbox's own
/// journald): the recorder is not podman and never notifies, so each unit runs
/// as a oneshot that stays active; start waits for the recorder.
fn oneshot_dropins(sb: &Sandbox, units: &[String]) {
    for u in units {
        sb.write_file(
            &format!("{UNIT_DIR}/{u}.d/10-render-test.conf"),
            b"[Service]\nType=oneshot\nRemainAfterExit=yes\nRestart=no\n",
        )
        .unwrap();
    }
}

/// Starts `units` in one job transaction; failures are printed (the
/// recordings are what the tests assert on).
fn start_all(sb: &Sandbox, units: &[String]) {
    let mut argv = vec!["systemctl", "start"];
    argv.extend(units.iter().map(String::as_str));
    let out = sb.run(&argv);
    if !out.status.success() {
        eprintln!("systemctl start: {}", String::from_utf8_lossy(&out.stderr));
        for u in units {
            let status = sb.run(&["systemctl", "status", "--no-pager", "-l", u]);
            if !status.status.success() {
                eprintln!("{}", String::from_utf8_lossy(&status.stdout));
            }
        }
    }
}

fn daemon_reload(sb: &Sandbox) {
    sb.run_ok(&["systemctl", "daemon-reload"]).unwrap();
}

/// Runs the real quadlet over the `.container` files of `files` (written to a
/// host temporary directory) and returns the generated units by name.
fn run_quadlet(quadlet: &Path, files: &[(String, String)]) -> BTreeMap<String, String> {
    let work = tempfile::Builder::new()
        .prefix("render-systemd-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let qdir = work.path().join("quadlet");
    let gen = work.path().join("generated");
    std::fs::create_dir_all(&qdir).unwrap();
    std::fs::create_dir_all(&gen).unwrap();
    for (name, contents) in files {
        std::fs::write(qdir.join(name), contents).unwrap();
    }
    let out = Command::new(quadlet)
        .args(["-no-kmsg-log", &gen.display().to_string()])
        .env("QUADLET_UNIT_DIRS", &qdir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "quadlet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    files
        .iter()
        .map(|(name, _)| {
            let unit = name.replace(".container", ".service");
            let text = std::fs::read_to_string(gen.join(&unit))
                .unwrap_or_else(|e| panic!("quadlet made no {unit}: {e}"));
            (unit, text)
        })
        .collect()
}

/// A quadlet-generated unit running the recorder instead of podman (quadlet
/// hard-codes /usr/bin/podman). Quadlet's own cid-file specifier stays
/// (systemd expands it).
fn with_recorder(unit: &str) -> String {
    assert!(unit.contains("ExecStart=/usr/bin/podman "), "{unit}");
    unit.replace(
        "ExecStart=/usr/bin/podman ",
        &format!("ExecStart={RECORDER} "),
    )
}

/// The nasty platform, rootful, its podman and mcrecover replaced by the
/// recorder.
fn recorder_nasty() -> Config {
    let mut cfg = render_support::nasty();
    cfg.platform.podman = PathBuf::from(RECORDER);
    cfg.platform.mcrecover = PathBuf::from(RECORDER);
    cfg.platform.mode = config::Mode::Rootful;
    cfg
}

fn config() -> Config {
    let mut cfg = recorder_nasty();
    let beta = container_mut(&mut cfg, "beta");
    beta.command = vec![
        "x".into(),
        ";".into(),
        String::new(),
        "100%".into(),
        "$1".into(),
    ];
    // Random services: argv, env values and podman args over the characters
    // that matter for escaping.
    add_random_services(&mut cfg, RANDOM_SERVICES, false);
    cfg
}

const RANDOM_SERVICES: u64 = 20;

/// Names of the container services of `cfg`.
fn containers(cfg: &Config) -> Vec<String> {
    cfg.services
        .values()
        .filter(|s| !s.is_external())
        .map(|s| s.name.clone())
        .collect()
}

#[test]
fn systemd_executes_exactly_the_intended_argv() {
    let Some(quadlet) = gate("render_systemd::systemd_executes_exactly_the_intended_argv") else {
        return;
    };
    let _serial = SANDBOXES.lock().unwrap_or_else(PoisonError::into_inner);
    let cfg = config();
    let plan = plan::build(&cfg).unwrap();
    let sb = boot("render_systemd-argv", None);
    let unit_dir = sb.host_path(UNIT_DIR);

    // Service backend: our own ExecStart lines, gates included.
    let rendered = render::render(&cfg, &plan, Backend::Service).unwrap();
    render::write(&rendered, &unit_dir, &unit_dir, false).unwrap();
    let names = containers(&cfg);
    let mut units: Vec<String> = names.iter().map(|s| format!("{s}.service")).collect();
    units.extend(plan.stages.iter().map(|s| s.gate.clone()));

    // Quadlet backend (beta's `;` and empty word cannot pass quadlet: drop
    // them): quadlet generates the units, systemd runs them.
    let mut qcfg = cfg.clone();
    for svc in qcfg.services.values_mut() {
        if let Some(c) = svc.container.as_mut() {
            c.command.retain(|w| !w.is_empty() && w != ";");
        }
    }
    let rendered = render::render(&qcfg, &plan, Backend::Quadlet).unwrap();
    let containers_files: Vec<(String, String)> = rendered
        .files
        .iter()
        .filter(|f| f.dest == Destination::QuadletDir)
        .map(|f| (f.name.clone(), f.contents.clone()))
        .collect();
    let generated = run_quadlet(&quadlet, &containers_files);
    for name in &names {
        let unit = &generated[&format!("{name}.service")];
        sb.write_file(
            &format!("{UNIT_DIR}/q-{name}.service"),
            with_recorder(unit).as_bytes(),
        )
        .unwrap();
    }
    let qunits: Vec<String> = names.iter().map(|s| format!("q-{s}.service")).collect();

    oneshot_dropins(&sb, &units);
    oneshot_dropins(&sb, &qunits);
    daemon_reload(&sb);
    start_all(&sb, &units);
    start_all(&sb, &qunits);

    for name in &names {
        let mut want = vec![RECORDER.to_string()];
        want.extend(render::podman_run_argv(&cfg, &cfg.services[name]));
        assert_eq!(recorded(&sb, &format!("{name}.service")), want, "{name}");
    }
    for st in &plan.stages {
        assert_eq!(recorded(&sb, &st.gate), gate_argv(&cfg, &st.name));
    }
    for name in &names {
        let name = name.as_str();
        let got = recorded(&sb, &format!("q-{name}.service"));
        let c = qcfg.services[name].container.as_ref().unwrap();
        let tail = image_and_command(c);
        assert!(
            got.ends_with(&tail),
            "{name}: {got:?} does not end with {tail:?}"
        );
        for (k, v) in &c.env {
            let kv = format!("{k}={v}");
            assert!(
                got.windows(2).any(|w| w[0] == "--env" && w[1] == kv),
                "{name}: --env {kv} missing in {got:?}"
            );
        }
        assert!(
            has_podman_args(&got, c),
            "{name}: podman_args missing in {got:?}"
        );
        let cid = format!("--cidfile=/run/q-{name}.cid");
        assert!(got.contains(&cid), "{cid} missing in {got:?}");
    }
    drop(sb);
}

// ---------------------------------------------------------------------------
// Property test: random argv -> rendered ExecStart -> parsed back by systemd.

/// How many random argv vectors.
const CASES: u32 = 48;

/// Single characters that stress escaping (no control characters: those are
/// rejected by design, see `control_characters_are_rejected`).
const CHARS: &[char] = &[
    'a', 'Z', '0', '-', '=', '/', '.', ' ', '"', '\'', '\\', '%', '$', ';', '{', '}', '#', '*',
    '~', '`', '!', '&', '|', '<', '>', '(', ')', 'é', '✓', 'ß', '\u{a0}', '\u{2028}', '😀',
];

/// Multi-character pieces systemd or a shell would interpret.
const PIECES: &[&str] = &[
    "%h", "%n", "%%", "$HOME", "${X}", "$$", "$1", "\\;", "\\n", "\\\\", "\"\"", "''", "--flag",
    "a b", "%{", "${", "\\x41", "\\u00e9",
];

/// A word: empty, a lone `;`, or a concatenation of characters and pieces.
fn word() -> impl Strategy<Value = String> {
    let piece = proptest::prop_oneof![
        3 => proptest::sample::select(CHARS).prop_map(String::from),
        1 => proptest::sample::select(PIECES).prop_map(String::from),
    ];
    proptest::prop_oneof![
        1 => Just(String::new()),
        1 => Just(";".to_string()),
        10 => proptest::collection::vec(piece, 1..8).prop_map(|p| p.concat()),
    ]
}

/// `CASES` argv vectors of 1-6 words, the same on every run (fixed seed).
fn random_argvs() -> Vec<Vec<String>> {
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig {
            cases: CASES,
            ..ProptestConfig::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = proptest::collection::vec(word(), 1..=6);
    (0..runner.config().cases)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// Whether quadlet can carry `argv` (no empty word, no lone `;`).
fn quadlet_can_carry(argv: &[String]) -> bool {
    !argv.iter().any(|w| w.is_empty() || w == ";")
}

/// The nasty platform reduced to one stage of services `p00`.. running the
/// recorder with `argvs` as their commands (a template without ports,
/// volumes, env or podman args: the argv is what is under test).
fn property_config(argvs: &[Vec<String>]) -> Config {
    let mut cfg = recorder_nasty();
    let template = cfg.services["gamma"].clone();
    cfg.services.retain(|_, s| s.is_external());
    cfg.stages.truncate(1);
    cfg.stages[0].services.clear();
    for (i, argv) in argvs.iter().enumerate() {
        let name = format!("p{i:02}");
        let mut svc = template.clone();
        svc.name = name.clone();
        svc.after.clear();
        svc.requires.clear();
        let c = svc.container.as_mut().unwrap();
        c.name = name.clone();
        c.command = argv.clone();
        cfg.services.insert(name.clone(), svc);
        cfg.stages[0].services.push(name);
    }
    cfg
}

/// What systemd holds for one `ExecStart=` line: (path, argv).
type ExecLine = (String, Vec<String>);

/// Reads `ExecStart` of every unit from the sandbox's systemd over D-Bus
/// (loading each unit, which must load cleanly).
fn exec_starts(sb: &Sandbox, units: &[String]) -> BTreeMap<String, Vec<ExecLine>> {
    let address = sb.bus_address();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .unwrap();
        let manager = ManagerProxy::new(&conn).await.unwrap();
        let mut out = BTreeMap::new();
        for u in units {
            let path = manager.load_unit(u.clone()).await.unwrap();
            let unit = UnitProxy::builder(&conn)
                .path(path.clone())
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .unwrap();
            assert_eq!(unit.load_state().await.unwrap(), "loaded", "{u}");
            let service = ServiceProxy::builder(&conn)
                .path(path)
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .unwrap();
            let lines = service
                .exec_start()
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.0, e.1))
                .collect();
            out.insert(u.clone(), lines);
        }
        out
    })
}

/// systemd parses quoting, C escapes and specifiers when it loads a unit, but
/// expands `$VAR`/`${VAR}` and turns `$$` into `$` only when it runs the
/// command; the `ExecStart` property holds the words before that last step.
/// This applies it, for words that must reference no variable.
fn exec_time_dollars(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut it = word.chars();
    while let Some(c) = it.next() {
        if c == '$' {
            assert_eq!(
                it.next(),
                Some('$'),
                "{word:?}: systemd would expand a variable here"
            );
        }
        out.push(c);
    }
    out
}

/// The one `ExecStart=` argv of `unit`, after the exec-time `$$` step.
fn single_argv(lines: &BTreeMap<String, Vec<ExecLine>>, unit: &str) -> ExecLine {
    let l = &lines[unit];
    assert_eq!(l.len(), 1, "{unit}: ExecStart {l:?}");
    let (path, argv) = &l[0];
    (
        path.clone(),
        argv.iter().map(|w| exec_time_dollars(w)).collect(),
    )
}

#[test]
fn random_argv_round_trips_through_systemd() {
    let Some(quadlet) = gate("render_systemd::random_argv_round_trips_through_systemd") else {
        return;
    };
    let argvs = random_argvs();
    // The generator covers what it is meant to (the seed is fixed, so this
    // only guards the strategy).
    let all: Vec<&String> = argvs.iter().flatten().collect();
    for needle in [" ", "\"", "'", "\\", "%", "$", ";", "{", "é", "✓"] {
        assert!(
            all.iter()
                .any(|w| w.contains(needle) && w.as_str() != needle),
            "no word contains {needle:?} with more"
        );
    }
    assert!(all.iter().any(|w| w.is_empty()), "no empty word");
    assert!(all.iter().any(|w| w.as_str() == ";"), "no lone ;");
    assert!(argvs.iter().any(|a| quadlet_can_carry(a)));
    assert!(argvs.iter().any(|a| !quadlet_can_carry(a)));
    assert!(argvs.iter().all(|a| (1..=6).contains(&a.len())));

    let _serial = SANDBOXES.lock().unwrap_or_else(PoisonError::into_inner);
    let cfg = property_config(&argvs);
    let plan = plan::build(&cfg).unwrap();
    let names: Vec<String> = (0..argvs.len()).map(|i| format!("p{i:02}")).collect();

    // Quadlet: the argv it can carry; the others are refused when rendering.
    let mut qcfg = cfg.clone();
    for (name, argv) in names.iter().zip(&argvs) {
        let c = qcfg.services[name].container.as_ref().unwrap();
        let line = escape::quadlet_exec_line(&c.command);
        if quadlet_can_carry(argv) {
            assert!(line.is_ok(), "{name}: {argv:?}: {line:?}");
        } else {
            assert!(
                matches!(line, Err((_, EscapeError::NotRepresentable { .. }))),
                "{name}: {argv:?}: {line:?}"
            );
            let one = property_config(std::slice::from_ref(argv));
            let one_plan = plan::build(&one).unwrap();
            let res = render::render(&one, &one_plan, Backend::Quadlet);
            assert!(
                matches!(
                    res,
                    Err(RenderError::Escape {
                        reason: EscapeError::NotRepresentable { .. },
                        ..
                    })
                ),
                "{name}: {argv:?}: {res:?}"
            );
            qcfg.services.remove(name);
            qcfg.stages[0].services.retain(|s| s != name);
        }
    }
    let qnames: Vec<String> = names
        .iter()
        .filter(|n| qcfg.services.contains_key(*n))
        .cloned()
        .collect();
    let qplan = plan::build(&qcfg).unwrap();
    let qrendered = render::render(&qcfg, &qplan, Backend::Quadlet).unwrap();
    let containers_files: Vec<(String, String)> = qnames
        .iter()
        .map(|n| {
            let f = qrendered.get(&format!("{n}.container")).unwrap();
            (format!("q-{n}.container"), f.contents.clone())
        })
        .collect();
    // Quadlet run here, its units running the recorder (`qr-*`).
    let generated = run_quadlet(&quadlet, &containers_files);

    let sb = boot("render_systemd-prop", Some(quadlet));
    // Service backend: all units of the one config (`p*`).
    let unit_dir = sb.host_path(UNIT_DIR);
    let rendered = render::render(&cfg, &plan, Backend::Service).unwrap();
    render::write(&rendered, &unit_dir, &unit_dir, false).unwrap();
    // The real quadlet generator of the sandbox's systemd (`q-*`; loaded, not
    // started: they would run podman).
    for (name, contents) in &containers_files {
        sb.write_file(&format!("{QUADLET_DIR}/{name}"), contents.as_bytes())
            .unwrap();
    }
    for (unit, text) in &generated {
        sb.write_file(
            &format!("{UNIT_DIR}/qr-{}", unit.strip_prefix("q-").unwrap()),
            with_recorder(text).as_bytes(),
        )
        .unwrap();
    }
    let units: Vec<String> = names.iter().map(|n| format!("{n}.service")).collect();
    let gen_units: Vec<String> = qnames.iter().map(|n| format!("q-{n}.service")).collect();
    let rec_units: Vec<String> = qnames.iter().map(|n| format!("qr-{n}.service")).collect();
    oneshot_dropins(&sb, &units);
    oneshot_dropins(&sb, &rec_units);
    daemon_reload(&sb);

    let mut all_units = units.clone();
    all_units.extend(gen_units.iter().cloned());
    all_units.extend(rec_units.iter().cloned());
    let lines = exec_starts(&sb, &all_units);

    // What systemd parsed from our ExecStart= lines: exactly the argv.
    for (name, argv) in names.iter().zip(&argvs) {
        let unit = format!("{name}.service");
        let (path, got) = single_argv(&lines, &unit);
        assert_eq!(path, RECORDER, "{unit}");
        let mut want = vec![RECORDER.to_string()];
        want.extend(render::podman_run_argv(&cfg, &cfg.services[name]));
        assert_eq!(got, want, "{unit}");
        assert_eq!(&got[got.len() - argv.len()..], argv.as_slice(), "{unit}");
    }
    // What systemd parsed from quadlet's ExecStart= lines: the image, then
    // exactly the argv.
    for name in &qnames {
        let c = qcfg.services[name].container.as_ref().unwrap();
        let tail = image_and_command(c);
        for (unit, exe) in [
            (format!("q-{name}.service"), "/usr/bin/podman"),
            (format!("qr-{name}.service"), RECORDER),
        ] {
            let (path, got) = single_argv(&lines, &unit);
            assert_eq!(path, exe, "{unit}");
            assert!(
                got.ends_with(&tail),
                "{unit}: {got:?} does not end with {tail:?}"
            );
        }
    }

    // And what the executables actually receive.
    let mut to_start = units;
    to_start.extend(rec_units.iter().cloned());
    start_all(&sb, &to_start);
    for name in &names {
        let unit = format!("{name}.service");
        let mut want = vec![RECORDER.to_string()];
        want.extend(render::podman_run_argv(&cfg, &cfg.services[name]));
        assert_eq!(recorded(&sb, &unit), want, "{unit}");
    }
    for name in &qnames {
        let unit = format!("qr-{name}.service");
        let c = qcfg.services[name].container.as_ref().unwrap();
        let tail = image_and_command(c);
        let got = recorded(&sb, &unit);
        assert!(
            got.ends_with(&tail),
            "{unit}: {got:?} does not end with {tail:?}"
        );
        assert_eq!(got[0], RECORDER, "{unit}");
    }
    drop(sb);
}

/// Control characters are rejected by design (config parsing and rendering,
/// both backends): they would end the line or be reinterpreted.
#[test]
fn control_characters_are_rejected() {
    /// (command, env, podman_args) of the service under test.
    type Variant = (Vec<String>, BTreeMap<String, String>, Vec<String>);
    for escaped in ["\\t", "\\n", "\\r", "\\u001b", "\\u007f"] {
        let toml = NASTY.replace(
            "command = [\"--flag\"]",
            &format!("command = [\"--flag\", \"a{escaped}b\"]"),
        );
        assert_ne!(toml, NASTY);
        let err = config::parse(&toml, Path::new("nasty.toml")).unwrap_err();
        assert!(
            err.to_string().contains("control character"),
            "{escaped}: {err}"
        );
    }
    for ch in ['\t', '\n', '\r', '\0', '\u{1b}', '\u{7f}', '\u{85}'] {
        let mut cfg = property_config(&[vec!["ok".into()]]);
        let plan = plan::build(&cfg).unwrap();
        // Inside a word, alone, in an env value, in a podman argument.
        let variants: [Variant; 4] = [
            (
                vec!["ok".into(), format!("a{ch}b")],
                BTreeMap::new(),
                vec![],
            ),
            (vec![ch.to_string()], BTreeMap::new(), vec![]),
            (
                vec![],
                BTreeMap::from([("V".into(), format!("x{ch}"))]),
                vec![],
            ),
            (vec![], BTreeMap::new(), vec![format!("--label=x{ch}")]),
        ];
        for (command, env, podman_args) in variants {
            let c = container_mut(&mut cfg, "p00");
            c.command = command;
            c.env = env;
            c.podman_args = podman_args;
            for backend in [Backend::Service, Backend::Quadlet] {
                match render::render(&cfg, &plan, backend) {
                    Err(RenderError::Escape {
                        reason: EscapeError::ControlChar { ch: got, .. },
                        ..
                    }) => assert_eq!(got, ch),
                    other => panic!("{ch:?} ({backend:?}): {other:?}"),
                }
            }
        }
    }
}

/// Descriptions systemd and quadlet must carry as written (no trailing
/// backslash: refused, see below).
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "alpha",
        "100% of $HOME and ${X}: \"quoted\" 'single' back\\slash \\n literal",
    ),
    ("beta", "ünïcödé ✓ [Container] ; # not a comment %n %%"),
    ("gamma", "ends with a quote\" and a backslash \\ then text"),
];

/// A configuration path every unit-file syntax rule applies to.
const ODD_CONFIG_PATH: &str = "/etc/odd dir/100%/$HOME/q\"uote/it's;/end\\";

/// What systemd holds for a loaded unit.
#[derive(Debug)]
struct UnitProps {
    load_state: String,
    description: String,
    after: Vec<String>,
    requires: Vec<String>,
}

fn unit_props(sb: &Sandbox, units: &[String]) -> BTreeMap<String, UnitProps> {
    let address = sb.bus_address();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .unwrap();
        let manager = ManagerProxy::new(&conn).await.unwrap();
        let mut out = BTreeMap::new();
        for u in units {
            let path = manager.load_unit(u.clone()).await.unwrap();
            let unit = UnitProxy::builder(&conn)
                .path(path)
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .unwrap();
            out.insert(
                u.clone(),
                UnitProps {
                    load_state: unit.load_state().await.unwrap(),
                    description: unit.description().await.unwrap(),
                    after: unit.after().await.unwrap(),
                    requires: unit.requires().await.unwrap(),
                },
            );
        }
        out
    })
}

/// Issue 12 item 3: every value that reaches a unit line reads back from a
/// real systemd exactly as written, for both backends (quadlet: the
/// sandbox's real generator): descriptions with `%`, `$`, quotes,
/// backslashes and header look-alikes, the gate's `--config` path with
/// spaces, `%`, `$`, quotes, `;` and a trailing backslash. The stage
/// ordering edges survive every description (a trailing backslash used to
/// swallow the `After=` below it), and a description that would continue
/// the line is refused before anything is written.
#[test]
fn unit_values_read_back_from_systemd() {
    let Some(quadlet) = gate("render_systemd::unit_values_read_back_from_systemd") else {
        return;
    };
    let _serial = SANDBOXES.lock().unwrap_or_else(PoisonError::into_inner);
    let mut cfg = recorder_nasty();
    for (name, desc) in DESCRIPTIONS {
        cfg.services.get_mut(*name).unwrap().description = Some((*desc).to_string());
    }
    cfg.platform.config_path = PathBuf::from(ODD_CONFIG_PATH);
    let plan = plan::build(&cfg).unwrap();

    // A line continuation never reaches a unit, whatever the backend.
    let mut bad = cfg.clone();
    bad.services.get_mut("beta").unwrap().description = Some("trailing \\".into());
    for backend in [Backend::Service, Backend::Quadlet] {
        assert!(
            matches!(
                render::render(&bad, &plan, backend),
                Err(RenderError::Escape {
                    reason: EscapeError::TrailingBackslash { .. },
                    ..
                })
            ),
            "{backend:?}"
        );
    }

    let sb = boot("render_systemd-values", Some(quadlet));
    let unit_dir = sb.host_path(UNIT_DIR);
    let rendered = render::render(&cfg, &plan, Backend::Service).unwrap();
    render::write(&rendered, &unit_dir, &unit_dir, false).unwrap();
    // Quadlet: the same services as `q-<name>.container`, generated by the
    // sandbox's quadlet on daemon-reload.
    let qrendered = render::render(&cfg, &plan, Backend::Quadlet).unwrap();
    for f in qrendered
        .files
        .iter()
        .filter(|f| f.dest == Destination::QuadletDir)
    {
        sb.write_file(
            &format!("{QUADLET_DIR}/q-{}", f.name),
            f.contents.as_bytes(),
        )
        .unwrap();
    }
    daemon_reload(&sb);

    let names = containers(&cfg);
    let mut units: Vec<String> = Vec::new();
    for n in &names {
        units.push(format!("{n}.service"));
        units.push(format!("q-{n}.service"));
    }
    let gates: Vec<String> = plan.stages.iter().map(|s| s.gate.clone()).collect();
    units.extend(gates.iter().cloned());
    let props = unit_props(&sb, &units);
    let first_gate = &plan.stages[0].gate;
    for n in &names {
        let want = cfg.services[n.as_str()].description.clone().unwrap();
        let second = plan.services[n.as_str()].stage == Some(1);
        for unit in [format!("{n}.service"), format!("q-{n}.service")] {
            let p = &props[&unit];
            assert_eq!(p.load_state, "loaded", "{unit}: {p:?}");
            assert_eq!(p.description, want, "{unit}");
            if second {
                assert!(p.after.contains(first_gate), "{unit}: {p:?}");
                assert!(p.requires.contains(first_gate), "{unit}: {p:?}");
            }
        }
    }
    // The gates run exactly `mcrecover gate --stage S --config <odd path>`.
    let lines = exec_starts(&sb, &gates);
    for st in &plan.stages {
        let (path, argv) = single_argv(&lines, &st.gate);
        assert_eq!(path, RECORDER);
        assert_eq!(argv, gate_argv(&cfg, &st.name), "{}", st.gate);
        assert_eq!(argv.last().map(String::as_str), Some(ODD_CONFIG_PATH));
    }
    drop(sb);
}
