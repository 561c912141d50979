//! Podman version and quadlet detection, and the resolution of
//! `backend = "auto"` (shared by `mcrecover render/install/recover` and the
//! doctor, so both say the same thing).

use std::path::{Path, PathBuf};

use crate::config::{BackendChoice, Config, Mode};
use crate::render::Backend;

/// Where the quadlet generator is installed, system and user.
pub const QUADLET_GENERATORS: &[&str] = &[
    "/usr/lib/systemd/system-generators/podman-system-generator",
    "/run/systemd/system-generators/podman-system-generator",
    "/etc/systemd/system-generators/podman-system-generator",
    "/usr/lib/systemd/user-generators/podman-user-generator",
    "/run/systemd/user-generators/podman-user-generator",
    "/etc/systemd/user-generators/podman-user-generator",
];

/// Output of `podman --version`, parsed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodmanVersion {
    /// The whole line, e.g. `podman version 4.3.1`.
    pub line: String,
    /// (major, minor, patch); missing parts are 0.
    pub version: (u32, u32, u32),
}

/// Parses `podman version 4.3.1` (or any line whose last word is a version).
pub fn parse_podman_version(text: &str) -> Option<PodmanVersion> {
    let line = text.lines().next()?.trim().to_string();
    let word = line.split_whitespace().last()?;
    let mut parts = word.split(['.', '-', '+']).map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some(PodmanVersion {
        line,
        version: (major, minor, patch),
    })
}

/// Runs `PODMAN --version`.
pub fn podman_version(podman: &Path) -> Result<PodmanVersion, String> {
    let out = std::process::Command::new(podman)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", podman.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_podman_version(&text).ok_or_else(|| {
        format!(
            "{} --version printed no version: {:?}",
            podman.display(),
            text.trim()
        )
    })
}

/// The installed quadlet generators (for the config's mode: system generators
/// for rootful, user generators for rootless; either counts as a fallback).
pub fn quadlet_generators(mode: Mode) -> Vec<PathBuf> {
    let kind = match mode {
        Mode::Rootful => "system-generators",
        Mode::Rootless => "user-generators",
    };
    let found: Vec<PathBuf> = QUADLET_GENERATORS
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    let (mine, other): (Vec<PathBuf>, Vec<PathBuf>) = found
        .into_iter()
        .partition(|p| p.to_string_lossy().contains(kind));
    mine.into_iter().chain(other).collect()
}

/// Resolves the configured backend: `quadlet`/`service` as written; `auto`
/// is quadlet when a quadlet generator is installed and podman >= 4.4, else
/// service. Returns the backend and a one-line reason.
pub fn detect_backend(cfg: &Config) -> (Backend, String) {
    match cfg.platform.backend {
        BackendChoice::Quadlet => (
            Backend::Quadlet,
            "backend = \"quadlet\" in the config".into(),
        ),
        BackendChoice::Service => (
            Backend::Service,
            "backend = \"service\" in the config".into(),
        ),
        BackendChoice::Auto => {
            let gens = quadlet_generators(cfg.platform.mode);
            let Some(generator) = gens.first() else {
                return (
                    Backend::Service,
                    "auto: no quadlet generator installed (podman-system-generator / \
                     podman-user-generator), so plain .service units"
                        .into(),
                );
            };
            match podman_version(&cfg.platform.podman) {
                Ok(v) if v.version >= (4, 4, 0) => (
                    Backend::Quadlet,
                    format!(
                        "auto: quadlet generator at {} and {} (>= 4.4)",
                        generator.display(),
                        v.line
                    ),
                ),
                Ok(v) => (
                    Backend::Service,
                    format!(
                        "auto: {} is older than 4.4 (quadlet needs 4.4), so plain .service units",
                        v.line
                    ),
                ),
                Err(e) => (
                    Backend::Service,
                    format!("auto: {e}, so plain .service units"),
                ),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn podman_versions() {
        let v = parse_podman_version("podman version 4.3.1\n").expect("parses");
        assert_eq!(v.version, (4, 3, 1));
        assert_eq!(v.line, "podman version 4.3.1");
        let v = parse_podman_version("podman version 5.4.2-dev").expect("parses");
        assert_eq!(v.version, (5, 4, 2));
        assert_eq!(
            parse_podman_version("podman version 5").map(|v| v.version),
            Some((5, 0, 0))
        );
        assert!(parse_podman_version("").is_none());
        assert!(parse_podman_version("podman version unknown").is_none());
    }
}
