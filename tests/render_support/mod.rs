//! Shared helpers for the render end-to-end tests (`render_verify`,
//! `render_systemd`): the nasty golden config, the deterministic random words
//! and random services that stress escaping, the expected argv pieces, and the
//! e2e gate that also finds (or fetches) the real quadlet binary.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mcrecover::config::{self, Config, Container};
use mcrecover_testbed::{e2e_gate, e2e_required, quadlet_binary, workspace_root, QUADLET_ENV};

/// The nasty golden config (every awkward character the config accepts).
pub const NASTY: &str = include_str!("../golden/nasty/nasty.toml");

/// The nasty golden config, parsed.
pub fn nasty() -> Config {
    config::parse(NASTY, Path::new("tests/golden/nasty/nasty.toml")).unwrap()
}

/// The testbed's e2e gate for `test` (root and the sandbox programs, podman
/// included), plus the real quadlet binary and the caller's `extra` problems.
/// Under `MCRECOVER_REQUIRE_E2E` a missing quadlet is fetched first with
/// `scripts/fetch-quadlet` (unless `MCRECOVER_QUADLET` names it) and anything
/// still missing fails the test; otherwise the test is skipped (`None`).
pub fn quadlet_gate(test: &str, extra: &[String]) -> Option<PathBuf> {
    let quadlet = quadlet_binary().or_else(fetch_quadlet);
    let mut problems = extra.to_vec();
    if quadlet.is_none() {
        problems.push(
            "the quadlet binary is missing (set MCRECOVER_QUADLET or run scripts/fetch-quadlet)"
                .into(),
        );
    }
    if !e2e_gate(test, &problems) {
        return None;
    }
    quadlet
}

/// Runs `scripts/fetch-quadlet` when e2e tests are required and no explicit
/// binary was named; a failing fetch fails the test.
fn fetch_quadlet() -> Option<PathBuf> {
    if !e2e_required() || std::env::var_os(QUADLET_ENV).is_some() {
        return None;
    }
    let out = Command::new(workspace_root().join("scripts/fetch-quadlet"))
        .output()
        .expect("run scripts/fetch-quadlet");
    assert!(
        out.status.success(),
        "scripts/fetch-quadlet failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    quadlet_binary()
}

/// Deterministic pseudo-random words over the characters that matter for
/// escaping (no control characters: those are rejected by config and render).
/// With `quadlet_safe`, the words quadlet cannot carry (empty, a lone `;`)
/// become `x`.
pub fn random_words(seed: u64, count: usize, quadlet_safe: bool) -> Vec<String> {
    const ALPHABET: &[char] = &[
        'a', 'b', 'Z', '0', ' ', '"', '\'', '\\', '$', '%', ';', '{', '}', '=', 'é', '*', '#', '~',
        '!', '&', '|', '<', '>', '(', ')', '`', ':', ',', '.', '/', '-', '\u{a0}',
    ];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..count)
        .map(|_| {
            let len = next() % 9;
            let w: String = (0..len)
                .map(|_| ALPHABET[next() % ALPHABET.len()])
                .collect();
            if quadlet_safe && (w.is_empty() || w == ";") {
                "x".to_string()
            } else {
                w
            }
        })
        .collect()
}

/// Adds `count` services `r00`.. (copies of `gamma`) to the second stage, with
/// random commands (quadlet-safe if `quadlet_safe_command`), env values and a
/// podman `--label` argument.
pub fn add_random_services(cfg: &mut Config, count: u64, quadlet_safe_command: bool) {
    let template = cfg.services["gamma"].clone();
    for i in 0..count {
        let name = format!("r{i:02}");
        let mut svc = template.clone();
        svc.name = name.clone();
        svc.after.clear();
        let c = svc.container.as_mut().unwrap();
        c.name = name.clone();
        c.command = random_words(i, 6, quadlet_safe_command);
        c.env = random_words(1000 + i, 3, false)
            .into_iter()
            .enumerate()
            .map(|(j, v)| (format!("V{j}"), v))
            .collect();
        c.podman_args = vec![
            "--label".into(),
            format!("k={}", random_words(2000 + i, 1, false)[0]),
        ];
        cfg.services.insert(name.clone(), svc);
        cfg.stages[1].services.push(name);
    }
}

/// The end of every podman argv of `c`: the image, then the command.
pub fn image_and_command(c: &Container) -> Vec<String> {
    let mut tail = vec![c.image.clone()];
    tail.extend(c.command.iter().cloned());
    tail
}

/// Whether `argv` holds `c`'s podman args in sequence (trivially, if none).
pub fn has_podman_args(argv: &[String], c: &Container) -> bool {
    c.podman_args.is_empty()
        || argv
            .windows(c.podman_args.len())
            .any(|w| w == c.podman_args.as_slice())
}

/// The exact argv the gate unit of `stage` runs.
pub fn gate_argv(cfg: &Config, stage: &str) -> Vec<String> {
    vec![
        cfg.platform.mcrecover.display().to_string(),
        "gate".into(),
        "--stage".into(),
        stage.to_string(),
        "--config".into(),
        cfg.platform.config_path.display().to_string(),
    ]
}

/// The container of service `name` of `cfg`, to edit.
pub fn container_mut<'a>(cfg: &'a mut Config, name: &str) -> &'a mut Container {
    cfg.services
        .get_mut(name)
        .and_then(|s| s.container.as_mut())
        .unwrap_or_else(|| panic!("no container service {name}"))
}
