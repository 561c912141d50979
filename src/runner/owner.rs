//! Who runs a service's container: its unit, or another controller (issue
//! 13, "never fight another controller").
//!
//! podman labels every container it runs from a systemd unit with
//! `PODMAN_SYSTEMD_UNIT=<unit>`: both backends' units set
//! `Environment=PODMAN_SYSTEMD_UNIT=%n` (quadlet writes it itself), and
//! podman copies that variable into the label (verified with podman 4.3 and
//! 5.4, for quadlet and the service backend). A container of the service's
//! container name that is present (running, created, starting, paused,
//! stopping) and whose label is missing or names another unit was started
//! by someone else: `mcp deploy` (`podman run -d --replace --name NAME`), an
//! operator, podman-restart.service at boot. Its unit's `--replace` would
//! kill it and bring back the configured image: a silent rollback.
//!
//! One query per look: `podman ps --all --filter name=^NAME$` with a marked
//! `--format` line per container (bounded output), run where the runner
//! runs podman ([`PodmanRunner`]: as transient units of the manager for the
//! daemon, directly for `recover`; as the platform user on a rootless
//! platform). Only when a foreign container is found, one `podman container
//! inspect` adds its restart policy to the detail (best effort).

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::images::{self, PodmanRunner};

/// How long one ownership query may take before it counts as failed (the
/// job then runs: a broken check never blocks a restart).
pub const OWNER_TIMEOUT: Duration = Duration::from_secs(10);

/// Marks the lines of our `--format` template (a transient unit's output
/// has podman's warnings interleaved).
const MARK: &str = "mcrecover-owner";

/// States of a container that occupies its name and runs (or is about to):
/// anything but these. `exited`/`stopped`/`dead`/`removing` containers run
/// nothing; a unit's `--replace` may remove them.
const GONE_STATES: [&str; 5] = ["exited", "stopped", "dead", "removing", "unknown"];

/// A container of a service's name that its unit did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignContainer {
    /// Its name.
    pub name: String,
    /// Its full ID.
    pub id: String,
    /// Its image reference.
    pub image: String,
    /// Its state (`running`, `created`, ...).
    pub state: String,
    /// Its `PODMAN_SYSTEMD_UNIT` label: the unit that started it, if any.
    pub unit: Option<String>,
    /// When it was created (podman's text).
    pub created: String,
    /// Its restart policy, when it was looked up (`unless-stopped`, ...).
    pub restart_policy: Option<String>,
}

impl ForeignContainer {
    /// One line for status, journal and reports: `container 1a2b3c4d5e6f
    /// (image reg/mcq:v0.4.3, running, started outside any systemd unit,
    /// restart policy unless-stopped, created 2026-12-07 02:22:55)`.
    pub fn detail(&self) -> String {
        let who = match &self.unit {
            Some(u) => format!("started by unit {u}"),
            None => "started outside any systemd unit".to_owned(),
        };
        let mut out = format!(
            "container {} (image {}, {}, {who}",
            self.id.get(..12).unwrap_or(&self.id),
            self.image,
            self.state
        );
        if let Some(p) = self.restart_policy.as_deref().filter(|p| !p.is_empty()) {
            out.push_str(&format!(", restart policy {p}"));
        }
        if !self.created.is_empty() {
            // `2026-12-07 02:22:55.481941741 +0000 UTC` -> seconds.
            let created = self.created.split('.').next().unwrap_or(&self.created);
            out.push_str(&format!(", created {created}"));
        }
        out.push(')');
        out
    }
}

/// Why podman could not tell who runs a container.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// podman could not be run (or not as the platform's user).
    #[error(transparent)]
    Podman(#[from] images::ImagesError),
    /// podman ran and failed.
    #[error("podman ps failed: {0}")]
    Failed(String),
    /// Its output was cut: lines may be missing.
    #[error("podman ps output was cut at its size limit")]
    Truncated,
}

/// `name` as a regular expression matching exactly it (podman's `name=`
/// filter is a regular expression; names may contain `.`).
fn exact(name: &str) -> String {
    format!("^{}$", name.replace('.', "\\."))
}

/// The `--format` template: `MARK|names|id|image|state|label|created`.
fn template() -> String {
    format!(
        "{MARK}|{{{{.Names}}}}|{{{{.ID}}}}|{{{{.Image}}}}|{{{{.ListContainer.State}}}}|{{{{index .Labels \"PODMAN_SYSTEMD_UNIT\"}}}}|{{{{.CreatedAt}}}}"
    )
}

/// The containers in `output` (marked lines only), by name.
fn parse(output: &str) -> Vec<ForeignContainer> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix(MARK))
        .filter_map(|l| l.strip_prefix('|'))
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(6, '|').collect();
            let [names, id, image, state, label, created] = f.as_slice() else {
                return None;
            };
            let label = label.trim();
            Some(ForeignContainer {
                name: (*names).to_owned(),
                id: (*id).to_owned(),
                image: (*image).to_owned(),
                state: state.trim().to_owned(),
                unit: (!label.is_empty() && label != "<no value>").then(|| label.to_owned()),
                created: created.trim().to_owned(),
                restart_policy: None,
            })
        })
        .collect()
}

/// The container of `containers` named `name` that occupies the name and
/// was not started by `unit`.
fn foreign_of(
    containers: Vec<ForeignContainer>,
    name: &str,
    unit: &str,
) -> Option<ForeignContainer> {
    containers.into_iter().find(|c| {
        c.name.split(',').any(|n| n == name)
            && !GONE_STATES.contains(&c.state.as_str())
            && c.unit.as_deref() != Some(unit)
    })
}

/// One `podman ps --all` query with `args` added; the containers it lists.
async fn ps(
    cfg: &Config,
    runner: &PodmanRunner,
    filters: &[String],
) -> Result<Vec<ForeignContainer>, OwnerError> {
    let fmt = template();
    let mut args: Vec<&str> = vec!["ps", "--all", "--no-trunc"];
    for f in filters {
        args.push("--filter");
        args.push(f);
    }
    args.push("--format");
    args.push(&fmt);
    let q = images::podman_query_via(cfg, runner, &args, OWNER_TIMEOUT).await?;
    if !q.run.success() {
        return Err(OwnerError::Failed(q.run.detail()));
    }
    if q.truncated {
        return Err(OwnerError::Truncated);
    }
    Ok(parse(&q.stdout))
}

/// Adds the restart policy (one `podman container inspect`, best effort).
async fn with_restart_policy(
    cfg: &Config,
    runner: &PodmanRunner,
    mut c: ForeignContainer,
) -> ForeignContainer {
    let fmt = format!("{MARK}|{{{{.HostConfig.RestartPolicy.Name}}}}");
    let args = ["container", "inspect", "--format", &fmt, &c.id];
    if let Ok(q) = images::podman_query_via(cfg, runner, &args, OWNER_TIMEOUT).await {
        if q.run.success() {
            c.restart_policy = q
                .stdout
                .lines()
                .filter_map(|l| l.trim().strip_prefix(MARK))
                .filter_map(|l| l.strip_prefix('|'))
                .map(|p| p.trim().to_owned())
                .find(|p| !p.is_empty());
        }
    }
    c
}

/// Whether a container named `container` runs that `unit` did not start:
/// `Ok(Some(..))` with what it is, `Ok(None)` when the name is free or
/// the unit's own, `Err` when podman could not tell (the caller then goes
/// ahead: an unknown owner is not a foreign one). One `podman ps`
/// (46-66 ms as a transient unit in the sandbox, more while many run at
/// once: see docs/daemon.md).
pub async fn foreign_container(
    cfg: &Config,
    runner: &PodmanRunner,
    container: &str,
    unit: &str,
) -> Result<Option<ForeignContainer>, OwnerError> {
    let found = ps(cfg, runner, &[format!("name={}", exact(container))]).await?;
    match foreign_of(found, container, unit) {
        Some(c) => Ok(Some(with_restart_policy(cfg, runner, c).await)),
        None => Ok(None),
    }
}

/// Every configured service (name, container name, unit) whose container
/// name is taken by a container its unit did not start: one `podman ps
/// --all` for all of them (the daemon's periodic look).
pub async fn scan(
    cfg: &Config,
    runner: &PodmanRunner,
    services: &[(String, String, String)],
) -> Result<Vec<(String, ForeignContainer)>, OwnerError> {
    if services.is_empty() {
        return Ok(Vec::new());
    }
    let all = ps(cfg, runner, &[]).await?;
    let mut out = Vec::new();
    for (svc, container, unit) in services {
        if let Some(c) = foreign_of(all.clone(), container, unit) {
            out.push((svc.clone(), with_restart_policy(cfg, runner, c).await));
        }
    }
    Ok(out)
}

/// [`foreign_container`] for a job about to run: the detail to send with
/// [`crate::engine::Event::Foreign`] if a foreign container was found;
/// `None` when the job may run (also when podman could not tell: logged).
pub(super) async fn check_before_job(
    cfg: &Config,
    runner: &PodmanRunner,
    service: &str,
    container: &str,
    unit: &str,
) -> Option<String> {
    let t0 = Instant::now();
    let r = foreign_container(cfg, runner, container, unit).await;
    let check_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    match r {
        Ok(Some(c)) => {
            tracing::info!(service, unit, container, check_ms, owner = %c.detail(),
                "ownership check: another controller's container holds the name; left alone (no start, restart or stop)");
            Some(c.detail())
        }
        Ok(None) => {
            tracing::info!(
                service,
                unit,
                container,
                check_ms,
                "ownership check: the name is free or the unit's own"
            );
            None
        }
        Err(e) => {
            tracing::warn!(service, unit, container, check_ms, error = %e,
                "ownership check failed; running the job anyway");
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ours_others_and_gone_containers() {
        let out = "WARN[0000] something\n\
            mcrecover-owner|mcq|aaaa|reg/mcq:v1|running|mcq.service|2026-12-07 02:22:55.4 +0000 UTC\n\
            mcrecover-owner|mcq|bbbb|reg/mcq:v2|running||2026-12-07 02:22:56.4 +0000 UTC\n\
            mcrecover-owner|kls|cccc|reg/kls:v1|created|other.service|x\n\
            mcrecover-owner|web|dddd|reg/web:v1|exited||x\n\
            mcrecover-owner|web.x|eeee|reg/web:v1|running|<no value>|x\n";
        let all = parse(out);
        assert_eq!(all.len(), 5);
        // Ours: not foreign.
        assert_eq!(foreign_of(all[..1].to_vec(), "mcq", "mcq.service"), None);
        // No label: foreign.
        let c = foreign_of(all.clone(), "mcq", "mcq.service").unwrap();
        assert_eq!(c.id, "bbbb");
        assert_eq!(c.unit, None);
        assert!(
            c.detail().contains("started outside any systemd unit"),
            "{}",
            c.detail()
        );
        assert!(
            c.detail().contains("created 2026-12-07 02:22:56)"),
            "{}",
            c.detail()
        );
        // Another unit's label: foreign, named.
        let c = foreign_of(all.clone(), "kls", "kls.service").unwrap();
        assert!(c.detail().contains("started by unit other.service"));
        // Exited: the name is not held by anything that runs.
        assert_eq!(foreign_of(all.clone(), "web", "web.service"), None);
        // `<no value>` (podman's missing key) is no label.
        assert_eq!(
            foreign_of(all, "web.x", "web.x.service").unwrap().unit,
            None
        );
        assert_eq!(exact("web.x"), "^web\\.x$");
    }

    #[test]
    fn detail_with_restart_policy() {
        let c = ForeignContainer {
            name: "mcq".into(),
            id: "0123456789abcdef".into(),
            image: "reg/mcq:v2".into(),
            state: "running".into(),
            unit: None,
            created: String::new(),
            restart_policy: Some("unless-stopped".into()),
        };
        assert_eq!(
            c.detail(),
            "container 0123456789ab (image reg/mcq:v2, running, started outside any systemd unit, restart policy unless-stopped)"
        );
    }
}
