//! Gathering the facts of a drift report: two podman queries on the
//! platform's storage (`podman ps --all` for every container's image,
//! `podman images` for every reference's ID and digest), the archive's
//! `index.json` ([`crate::images::read_index`]) and the MCP service
//! definitions ([`crate::import::read_definitions`]).
//!
//! podman is run as the images module runs it ([`crate::images::podman_query_via`]):
//! as root for a rootful platform; for a rootless one as the platform user
//! (through `runuser` when we are root), so the platform's own storage is
//! asked. The daemon passes [`PodmanRunner::Transient`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    bare_id, normalize, repository, running_differs, ArchiveFact, ArchivedImage, Context,
    DriftError, DriftReport, McpFact, RunningDrift, RunningImage, ServiceFacts,
};
use crate::config::{Config, Mode};
use crate::images::{self, Index, PodmanRunner};
use crate::import;

/// How long one podman query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Marks the lines of our `--format` templates (a transient unit's output
/// has podman's warnings interleaved).
const MARK: &str = "mcrecover-drift";

/// What the podman queries found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gathered {
    /// Container name -> its image.
    pub containers: BTreeMap<String, RunningImage>,
    /// Normalised reference -> image ID (hex).
    pub ids: BTreeMap<String, String>,
}

/// Runs one podman query and returns the lines our template marked, split
/// at `|` (without the mark).
async fn query(
    cfg: &Config,
    runner: &PodmanRunner,
    what: &'static str,
    args: &[&str],
) -> Result<Vec<Vec<String>>, DriftError> {
    let q = images::podman_query_via(cfg, runner, args, QUERY_TIMEOUT).await?;
    if !q.run.success() {
        return Err(DriftError::Podman {
            what,
            detail: q.run.detail(),
        });
    }
    if q.truncated {
        // Missing lines would read as "not running" / "not in storage".
        return Err(DriftError::Podman {
            what,
            detail: "its output was cut at the size limit; lines are missing".into(),
        });
    }
    Ok(marked_lines(&q.stdout))
}

/// The lines of `output` that start with the mark, split at `|`.
fn marked_lines(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix(MARK))
        .filter_map(|l| l.strip_prefix('|'))
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// Parses `podman ps` lines (`name|image|image ID|state`) and `podman
/// images` lines (`ID|digest|repository|tag`) into [`Gathered`].
fn parse(ps: &[Vec<String>], imgs: &[Vec<String>]) -> Gathered {
    let mut digests: BTreeMap<String, String> = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for l in imgs {
        let [id, digest, repo, tag] = l.as_slice() else {
            continue;
        };
        let id = bare_id(id).to_owned();
        if !digest.is_empty() && digest != "<none>" {
            digests.entry(id.clone()).or_insert_with(|| digest.clone());
        }
        if repo != "<none>" && tag != "<none>" {
            ids.insert(normalize(&format!("{repo}:{tag}")), id);
        }
    }
    let mut containers = BTreeMap::new();
    for l in ps {
        let [names, image, id, state] = l.as_slice() else {
            continue;
        };
        let id = bare_id(id).to_owned();
        let run = RunningImage {
            state: state.clone(),
            image: image.clone(),
            digest: digests.get(&id).cloned(),
            id,
        };
        for name in names.split(',').filter(|n| !n.is_empty()) {
            containers.insert(name.to_owned(), run.clone());
        }
    }
    Gathered { containers, ids }
}

/// Every container of the platform's storage with its image, and every
/// tagged image's ID: two podman queries run by `runner`.
/// (`.ListContainer.State` is the raw state, `running`; `.State` is
/// the human one, `Up 5 seconds ago`.)
pub async fn podman_facts(cfg: &Config, runner: &PodmanRunner) -> Result<Gathered, DriftError> {
    let ps_format = format!(
        "{MARK}|{{{{.Names}}}}|{{{{.Image}}}}|{{{{.ImageID}}}}|{{{{.ListContainer.State}}}}"
    );
    let ps = query(
        cfg,
        runner,
        "ps",
        &["ps", "--all", "--no-trunc", "--format", &ps_format],
    )
    .await?;
    let img_format = format!("{MARK}|{{{{.ID}}}}|{{{{.Digest}}}}|{{{{.Repository}}}}|{{{{.Tag}}}}");
    let imgs = query(
        cfg,
        runner,
        "images",
        &["images", "--no-trunc", "--format", &img_format],
    )
    .await?;
    Ok(parse(&ps, &imgs))
}

/// The services with a container, in stage order, then the others by name.
fn services_in_order(cfg: &Config) -> Vec<&crate::config::Service> {
    let mut names: Vec<&str> = cfg
        .stages
        .iter()
        .flat_map(|s| s.services.iter().map(String::as_str))
        .collect();
    for n in cfg.services.keys() {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    let mut seen = Vec::new();
    names
        .into_iter()
        .filter_map(|n| cfg.services.get(n))
        .filter(|s| !s.is_external())
        .filter(|s| {
            let new = !seen.contains(&s.name);
            seen.push(s.name.clone());
            new
        })
        .collect()
}

/// Per service with a container whose container runs another image than
/// the configured one (see [`super::running_differs`]): two podman queries,
/// run by `runner` (the daemon: [`PodmanRunner::Transient`]). Feed the
/// result to a [`super::DriftTracker`] to log each drift once per change.
pub async fn running_vs_configured(
    cfg: &Config,
    runner: &PodmanRunner,
) -> Result<Vec<RunningDrift>, DriftError> {
    let g = podman_facts(cfg, runner).await?;
    let mut out = Vec::new();
    for s in services_in_order(cfg) {
        let Some(c) = &s.container else { continue };
        let Some(run) = g.containers.get(&c.name) else {
            continue;
        };
        let id = g.ids.get(&normalize(&c.image)).map(String::as_str);
        if running_differs(&c.image, id, run) {
            out.push(RunningDrift {
                service: s.name.clone(),
                configured: c.image.clone(),
                running: run.clone(),
            });
        }
    }
    Ok(out)
}

/// What the archive index says about `image`.
fn archive_fact(dir: &Path, index: &Index, image: &str) -> ArchiveFact {
    let archived = |(name, e): (&String, &images::IndexEntry)| ArchivedImage {
        image: name.clone(),
        file: e.file.clone(),
        saved_at: e.saved_at.clone(),
        file_present: std::fs::symlink_metadata(dir.join(&e.file)).is_ok_and(|m| m.is_file()),
    };
    if let Some(e) = index.get_key_value(image) {
        return ArchiveFact::Archived { entry: archived(e) };
    }
    let repo = repository(image);
    ArchiveFact::NotArchived {
        other: index
            .iter()
            .filter(|(name, _)| repository(name) == repo)
            .map(archived)
            .collect(),
    }
}

/// `image` as the configuration resolves it: `image_prefix` in front of a
/// reference that names no path.
fn with_prefix(cfg: &Config, image: &str) -> String {
    let prefix = &cfg.platform.image_prefix;
    if image.contains('/') || prefix.is_empty() {
        image.to_owned()
    } else if prefix.ends_with('/') {
        format!("{prefix}{image}")
    } else {
        format!("{prefix}/{image}")
    }
}

/// Container name -> (image, definition file) of the MCP definitions in
/// `dirs` for this configuration's node (`platform.node`, else
/// [`import::DEFAULT_NODE`]): active services whose node is that one or unset.
fn mcp_images(
    cfg: &Config,
    dirs: &[PathBuf],
) -> Result<BTreeMap<String, (String, PathBuf)>, DriftError> {
    let node = cfg
        .platform
        .node
        .clone()
        .unwrap_or_else(|| import::DEFAULT_NODE.to_owned());
    let mut out = BTreeMap::new();
    for def in import::read_definitions(dirs)? {
        if !def.active || def.node.as_ref().is_some_and(|n| *n != node) {
            continue;
        }
        for comp in &def.components {
            out.entry(import::container_name(&def.name, &comp.name))
                .or_insert_with(|| (with_prefix(cfg, &comp.image), def.file.clone()));
        }
    }
    Ok(out)
}

/// Every fact of every service with a container: podman (run by `runner`),
/// the archive index (`platform.image_archive`), the MCP definitions in
/// `mcp_dirs` (none: not compared). Reads files synchronously.
pub async fn gather(
    cfg: &Config,
    runner: &PodmanRunner,
    mcp_dirs: &[PathBuf],
) -> Result<Vec<ServiceFacts>, DriftError> {
    let mcp = if mcp_dirs.is_empty() {
        None
    } else {
        Some(mcp_images(cfg, mcp_dirs)?)
    };
    let archive = match &cfg.platform.image_archive {
        Some(dir) => Some((dir.clone(), images::read_index(dir)?)),
        None => None,
    };
    let g = podman_facts(cfg, runner).await?;
    let mut out = Vec::new();
    for s in services_in_order(cfg) {
        let Some(c) = &s.container else { continue };
        let mcp = mcp
            .as_ref()
            .map(|m| match m.get(&s.name).or_else(|| m.get(&c.name)) {
                Some((image, file)) => McpFact::Defined {
                    image: image.clone(),
                    file: file.clone(),
                },
                None => McpFact::Absent,
            });
        out.push(ServiceFacts {
            service: s.name.clone(),
            container: c.name.clone(),
            configured: c.image.clone(),
            configured_id: g.ids.get(&normalize(&c.image)).cloned(),
            running: g.containers.get(&c.name).cloned(),
            archive: match &archive {
                Some((dir, index)) => archive_fact(dir, index, &c.image),
                None => ArchiveFact::NotConfigured,
            },
            mcp,
        });
    }
    Ok(out)
}

/// `mcrecover drift`: [`gather`], then [`super::compare`] each service.
/// Remedies name `config_path` (the configuration file as the operator
/// gave it).
pub async fn report(
    cfg: &Config,
    config_path: &Path,
    runner: &PodmanRunner,
    mcp_dirs: &[PathBuf],
) -> Result<DriftReport, DriftError> {
    // The MCP definitions are read first: an invalid one is the operator's
    // input error (exit 2) whoever runs this.
    let facts = gather(cfg, runner, mcp_dirs).await?;
    let storage = images::storage_name(cfg)?;
    let prefix = &cfg.platform.image_prefix;
    let ctx = Context {
        config: config_path.to_path_buf(),
        mcp_dirs: mcp_dirs.to_vec(),
        user: match cfg.platform.mode {
            Mode::Rootless => cfg.platform.user.as_ref().map(|u| u.name.clone()),
            Mode::Rootful => None,
        },
        image_prefix: if prefix.is_empty() || prefix.ends_with('/') {
            prefix.clone()
        } else {
            format!("{prefix}/")
        },
    };
    Ok(DriftReport::new(
        facts,
        ctx,
        storage,
        cfg.platform.image_archive.clone(),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn podman_lines_are_parsed_and_warnings_ignored() {
        let ps = "WARN[0000] something\n\
            mcrecover-drift|mcq|reg:8443/mcq:v0.4.3|23d4c376|running\n\
            mcrecover-drift|kls|reg:8443/kls:v0.2.0|sha256:a265|exited\n\
            garbage|x\n";
        let imgs = "mcrecover-drift|sha256:23d4c376|sha256:0a9e|reg:8443/mcq|v0.4.2\n\
            mcrecover-drift|sha256:23d4c376|sha256:0a9e|reg:8443/mcq|v0.4.3\n\
            mcrecover-drift|sha256:a265|<none>|reg:8443/kls|v0.2.0\n\
            mcrecover-drift|sha256:ffff||<none>|<none>\n";
        let g = parse(&marked_lines(ps), &marked_lines(imgs));
        assert_eq!(g.containers.len(), 2);
        let mcq = &g.containers["mcq"];
        assert_eq!(mcq.image, "reg:8443/mcq:v0.4.3");
        assert_eq!(mcq.id, "23d4c376");
        assert_eq!(mcq.digest.as_deref(), Some("sha256:0a9e"));
        assert_eq!(mcq.state, "running");
        assert_eq!(g.containers["kls"].id, "a265");
        assert_eq!(g.containers["kls"].digest, None);
        assert_eq!(g.ids["reg:8443/mcq:v0.4.2"], "23d4c376");
        assert_eq!(g.ids.len(), 3);
    }

    #[test]
    fn archive_facts_from_an_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mcq_v0.4.1.tar"), b"x").unwrap();
        let mut index = Index::new();
        let e = |file: &str| images::IndexEntry {
            file: file.into(),
            sha256: "00".into(),
            size: 1,
            saved_at: "2026-01-01T00:00:00Z".into(),
        };
        index.insert("r/mcq:v0.4.1".into(), e("mcq_v0.4.1.tar"));
        index.insert("r/kls:v1".into(), e("kls_v1.tar"));
        assert_eq!(
            archive_fact(dir.path(), &index, "r/mcq:v0.4.2"),
            ArchiveFact::NotArchived {
                other: vec![ArchivedImage {
                    image: "r/mcq:v0.4.1".into(),
                    file: "mcq_v0.4.1.tar".into(),
                    saved_at: "2026-01-01T00:00:00Z".into(),
                    file_present: true,
                }]
            }
        );
        let ArchiveFact::Archived { entry } = archive_fact(dir.path(), &index, "r/kls:v1") else {
            panic!("kls is archived");
        };
        assert!(!entry.file_present);
        assert_eq!(
            archive_fact(dir.path(), &index, "r/other:1"),
            ArchiveFact::NotArchived { other: vec![] }
        );
    }
}
