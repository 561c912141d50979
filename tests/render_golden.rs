//! Golden tests: the rendered units (and plan outputs) of the example config
//! and of the escaping stress config are compared byte for byte with the
//! files under `tests/golden/`. `UPDATE_GOLDEN=1 cargo test --test
//! render_golden` rewrites them; review the diff before committing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use mcrecover::config::{self, Config};
use mcrecover::plan;
use mcrecover::render::{self, Backend};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn update() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

/// Make the config independent of where the checkout lives: the default
/// `config_path` is the absolutised source path; replace it by the default
/// install path (an explicit `config_path` in the file is kept).
fn normalise(mut cfg: Config) -> Config {
    if std::path::absolute(&cfg.source).ok().as_deref() == Some(cfg.platform.config_path.as_path())
    {
        cfg.platform.config_path = PathBuf::from(config::DEFAULT_PATH);
    }
    cfg
}

/// A small line diff (LCS) for readable failures.
fn diff(want: &str, got: &str) -> String {
    let a: Vec<&str> = want.lines().collect();
    let b: Vec<&str> = got.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            let _ = writeln!(out, "+{}", b[j]);
            j += 1;
        } else {
            let _ = writeln!(out, "-{}", a[i]);
            i += 1;
        }
    }
    if want.ends_with('\n') != got.ends_with('\n') {
        out.push_str("(trailing newline differs)\n");
    }
    out
}

/// Compare (or with UPDATE_GOLDEN=1 rewrite) `dir` against `files`.
fn golden(dir: &Path, files: &BTreeMap<String, String>) {
    if update() {
        if dir.exists() {
            fs::remove_dir_all(dir).unwrap();
        }
        fs::create_dir_all(dir).unwrap();
        for (name, contents) in files {
            fs::write(dir.join(name), contents).unwrap();
        }
        eprintln!("updated {}", dir.display());
        return;
    }
    let mut problems = String::new();
    let existing: BTreeMap<String, String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect(),
        Err(_) => BTreeMap::new(),
    };
    for (name, got) in files {
        match existing.get(name) {
            None => {
                let _ = writeln!(problems, "missing golden file {name}");
            }
            Some(want) if want != got => {
                let _ = writeln!(
                    problems,
                    "--- {name} (golden) / +++ rendered\n{}",
                    diff(want, got)
                );
            }
            Some(_) => {}
        }
    }
    for name in existing.keys().filter(|n| !files.contains_key(*n)) {
        let _ = writeln!(problems, "golden file {name} is no longer rendered");
    }
    assert!(
        problems.is_empty(),
        "{} differs from the rendered output (UPDATE_GOLDEN=1 to accept):\n{problems}",
        dir.display()
    );
}

fn check_config(cfg: &Config, golden_root: &Path) {
    let plan = plan::build(cfg).unwrap();
    let mut plan_files = BTreeMap::new();
    plan_files.insert("plan.txt".to_string(), plan.to_text());
    plan_files.insert("plan.json".to_string(), plan.to_json().unwrap() + "\n");
    plan_files.insert("plan.dot".to_string(), plan.to_dot());
    golden(&golden_root.join("plan"), &plan_files);
    graphviz_accepts(&plan_files["plan.dot"]);
    for (backend, sub) in [(Backend::Quadlet, "quadlet"), (Backend::Service, "service")] {
        let rendered = render::render(cfg, &plan, backend).unwrap();
        let files: BTreeMap<String, String> = rendered
            .files
            .iter()
            .map(|f| (f.name.clone(), f.contents.clone()))
            .collect();
        assert_eq!(files.len(), rendered.files.len(), "duplicate file names");
        // Rendering twice gives byte-identical output.
        assert_eq!(render::render(cfg, &plan, backend).unwrap(), rendered);
        golden(&golden_root.join(sub), &files);
    }
}

#[test]
fn example_matches_golden() {
    let path = Path::new("examples/metacircular.toml");
    if !manifest_dir().join(path).exists() {
        eprintln!("SKIP: examples/metacircular.toml not present yet");
        return;
    }
    let cfg = normalise(config::load(path).unwrap());
    check_config(&cfg, &manifest_dir().join("tests/golden"));
}

#[test]
fn nasty_matches_golden() {
    let path = Path::new("tests/golden/nasty/nasty.toml");
    let cfg = normalise(config::load(path).unwrap());
    check_config(&cfg, &manifest_dir().join("tests/golden/nasty"));
}

#[test]
fn diff_shows_changes() {
    let d = diff("a\nb\nc\n", "a\nB\nc\nd\n");
    assert_eq!(d, "+B\n-b\n+d\n");
}

/// If Graphviz is installed, it must accept the dot output (optional tool:
/// not installed by CI, so its absence only skips this one check).
fn graphviz_accepts(dot: &str) {
    use std::io::Write as _;
    let Ok(mut child) = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("graphviz `dot` not installed; plan.dot syntax not checked");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "dot rejected plan.dot:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
