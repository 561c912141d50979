//! Drift: where what runs, what is archived and what the MCP definitions say
//! differ from the configuration (`mcrecover drift`, docs/drift.md).
//!
//! Per service with a container (external services are skipped), four
//! images: the one configured; the one of the container of that name in
//! the platform's podman storage (name, image ID, digest; or none); the
//! configured image's entry in `platform.image_archive`'s `index.json`;
//! and, when directories of MCP service definitions are given, the one
//! there. Each difference comes with what to do about it.
//!
//! The comparison is pure ([`compare`], [`DriftTracker`]) and works on
//! [`ServiceFacts`]; [`gather`] collects the facts (podman, the archive
//! index, the MCP definitions) and [`report`] does both. The daemon can call
//! [`running_vs_configured`] (podman only) and feed the result to a
//! [`DriftTracker`] to log each drift once per change.

mod gather;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

pub use gather::{gather, podman_facts, report, running_vs_configured, Gathered};

/// Why the facts could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// podman could not be run, may not be run by this user, or the archive
    /// index could not be read.
    #[error(transparent)]
    Images(#[from] crate::images::ImagesError),
    /// A podman query ran but failed.
    #[error("podman {what} failed: {detail}")]
    Podman {
        /// The query (`ps`, `images`).
        what: &'static str,
        /// Its exit status and messages.
        detail: String,
    },
    /// The MCP service definitions could not be read.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
}

/// The image of the container named like a service's, as podman lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunningImage {
    /// Container state as podman says it (`running`, `exited`, `created`, ...).
    pub state: String,
    /// The image reference the container was started from (podman's `ImageName`).
    pub image: String,
    /// The image's ID (hex, without `sha256:`).
    pub id: String,
    /// The image's manifest digest (`sha256:...`), when podman knows one.
    pub digest: Option<String>,
}

/// One entry of the archive's `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchivedImage {
    /// The image reference (the index's key).
    pub image: String,
    /// The archive file name.
    pub file: String,
    /// When it was saved (RFC 3339).
    pub saved_at: String,
    /// Whether that file is in the archive directory (a regular file).
    pub file_present: bool,
}

/// What the archive holds for a service's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ArchiveFact {
    /// No `platform.image_archive` is configured.
    NotConfigured,
    /// The index has an entry for the configured image.
    Archived {
        /// The entry.
        entry: ArchivedImage,
    },
    /// The index has no entry for the configured image; `other` lists its
    /// entries for other tags of the same repository (old saves).
    NotArchived {
        /// Entries of the same repository, another tag or digest.
        other: Vec<ArchivedImage>,
    },
}

/// What the MCP service definitions say about a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum McpFact {
    /// No definition of this node defines a container of that name.
    Absent,
    /// A definition does.
    Defined {
        /// Its image, as the configuration would resolve it (`image_prefix`
        /// applied to a reference without a registry).
        image: String,
        /// The definition file.
        file: PathBuf,
    },
}

/// Everything known about one service, gathered by [`gather`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceFacts {
    /// The service.
    pub service: String,
    /// Its container name.
    pub container: String,
    /// The configured image reference (prefix applied).
    pub configured: String,
    /// The ID the configured reference has in the storage now (hex), if it is there.
    pub configured_id: Option<String>,
    /// The container of that name; `None` when there is none ("not running").
    pub running: Option<RunningImage>,
    /// The archive's entry.
    pub archive: ArchiveFact,
    /// The MCP definitions' image; `None` when no definitions were given.
    pub mcp: Option<McpFact>,
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// The container runs another image than the configured one.
    RunningDiffers,
    /// The archive has no entry for the configured image (nor for its repository).
    ArchiveMissing,
    /// The archive has only other (older) tags of the configured image's repository.
    ArchiveStale,
    /// The archive's index names a file that is not there.
    ArchiveFileMissing,
    /// The MCP definitions name another image.
    McpDiffers,
}

/// One difference and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// What kind.
    pub kind: DriftKind,
    /// What differs, with both images.
    pub detail: String,
    /// What to do.
    pub remedy: String,
}

/// One service in the report: its facts and differences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDrift {
    /// The facts.
    #[serde(flatten)]
    pub facts: ServiceFacts,
    /// The differences (empty: no drift).
    pub differences: Vec<Difference>,
}

/// What the remedies need to name: the configuration, the MCP directories,
/// how the units are restarted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Context {
    /// The configuration file.
    pub config: PathBuf,
    /// The directories of MCP definitions given (empty: none).
    pub mcp_dirs: Vec<PathBuf>,
    /// The platform user whose manager runs the units (rootless), or `None` (rootful).
    pub user: Option<String>,
    /// `platform.image_prefix`, normalised with a trailing `/` (empty: none);
    /// the text table shows images without it.
    pub image_prefix: String,
}

impl Context {
    /// The command that restarts `service`'s unit.
    fn restart(&self, service: &str) -> String {
        match &self.user {
            Some(u) => format!("systemctl --user restart {service}.service` as {u}"),
            None => format!("systemctl restart {service}.service`"),
        }
    }

    /// `image` without the image prefix, for the text table.
    fn short<'a>(&self, image: &'a str) -> &'a str {
        if self.image_prefix.is_empty() {
            return image;
        }
        image.strip_prefix(&self.image_prefix).unwrap_or(image)
    }
}

/// `mcrecover drift`: every service with a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftReport {
    /// Whether anything differs.
    pub drift: bool,
    /// Which podman storage was looked at (`mcp's podman storage`).
    pub storage: String,
    /// `platform.image_archive`, if configured.
    pub archive_dir: Option<PathBuf>,
    /// The context of the remedies.
    pub context: Context,
    /// Per service, in stage order (services in no stage last, by name).
    pub services: Vec<ServiceDrift>,
}

/// A reference with the tag podman assumes when none is given: `x` is `x:latest`.
pub fn normalize(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') || last.contains('@') {
        reference.to_owned()
    } else {
        format!("{reference}:latest")
    }
}

/// The repository of a reference: without its tag or digest
/// (`reg:5000/a/b:1` -> `reg:5000/a/b`).
pub fn repository(reference: &str) -> &str {
    let without_digest = reference.split_once('@').map_or(reference, |(r, _)| r);
    let slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest.get(slash..).and_then(|l| l.rfind(':')) {
        Some(colon) => without_digest
            .get(..slash + colon)
            .unwrap_or(without_digest),
        None => without_digest,
    }
}

/// An image ID without `sha256:`, for comparisons.
pub fn bare_id(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

fn short_id(id: &str) -> &str {
    let id = bare_id(id);
    id.get(..12).unwrap_or(id)
}

/// Whether the container runs something else than the configured image:
/// another reference, or the same reference whose tag has since moved to
/// another image (both IDs known and different). The same image under
/// another tag is drift: the configuration and what runs name different
/// images, and a restart of the unit would switch back.
pub fn running_differs(
    configured: &str,
    configured_id: Option<&str>,
    running: &RunningImage,
) -> bool {
    if normalize(configured) != normalize(&running.image) {
        return true;
    }
    configured_id.is_some_and(|id| bare_id(id) != bare_id(&running.id))
}

/// The differences of one service.
pub fn compare(facts: &ServiceFacts, ctx: &Context) -> Vec<Difference> {
    let mut out = Vec::new();
    let svc = &facts.service;
    let conf = &facts.configured;
    if let Some(run) = &facts.running {
        if running_differs(conf, facts.configured_id.as_deref(), run) {
            let detail = if normalize(conf) == normalize(&run.image) {
                format!(
                    "container {} ({}) runs {} as image {}, but that tag now names image {}",
                    facts.container,
                    run.state,
                    run.image,
                    short_id(&run.id),
                    facts.configured_id.as_deref().map_or("?", short_id)
                )
            } else {
                let same = facts
                    .configured_id
                    .as_deref()
                    .is_some_and(|id| bare_id(id) == bare_id(&run.id));
                format!(
                    "container {} ({}) runs {} (image {}), the configuration says {}{}",
                    facts.container,
                    run.state,
                    run.image,
                    short_id(&run.id),
                    conf,
                    if same {
                        " (the same image ID under another name)"
                    } else {
                        ""
                    }
                )
            };
            out.push(Difference {
                kind: DriftKind::RunningDiffers,
                detail,
                remedy: format!(
                    "the running container was deployed outside mcrecover (another image): adopt it \
                     into the config (image = \"{}\" in [services.{svc}]) or restart the unit \
                     (`{}) to run the configured image",
                    ctx.short(&run.image),
                    ctx.restart(svc)
                ),
            });
        }
    }
    let save = "`mcrecover images save` (as root or the platform user)";
    match &facts.archive {
        ArchiveFact::NotConfigured => {}
        ArchiveFact::Archived { entry } if !entry.file_present => out.push(Difference {
            kind: DriftKind::ArchiveFileMissing,
            detail: format!(
                "the archive's index lists {} for {conf}, but that file is missing",
                entry.file
            ),
            remedy: format!("save it again: {save}"),
        }),
        ArchiveFact::Archived { .. } => {}
        ArchiveFact::NotArchived { other } if other.is_empty() => out.push(Difference {
            kind: DriftKind::ArchiveMissing,
            detail: format!("{conf} is not in the image archive"),
            remedy: format!("archive it: {save}"),
        }),
        ArchiveFact::NotArchived { other } => out.push(Difference {
            kind: DriftKind::ArchiveStale,
            detail: format!(
                "the image archive has {} but not {conf}",
                other
                    .iter()
                    .map(|e| format!("{} (saved {})", e.image, e.saved_at))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            remedy: format!("archive the configured image: {save}"),
        }),
    }
    if let Some(McpFact::Defined { image, file }) = &facts.mcp {
        if normalize(image) != normalize(conf) {
            let dirs = ctx
                .mcp_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" ");
            let config = ctx.config.display();
            out.push(Difference {
                kind: DriftKind::McpDiffers,
                detail: format!(
                    "the MCP definition {} says {image}, the configuration says {conf}",
                    file.display()
                ),
                remedy: format!(
                    "take the MCP definitions into the configuration: `mcrecover import-mcp \
                     --merge {config} {dirs} --out {config}.new`, review, then move it over {config}"
                ),
            });
        }
    }
    out
}

impl DriftReport {
    /// The report of `facts` (already in display order).
    pub fn new(
        facts: Vec<ServiceFacts>,
        ctx: Context,
        storage: String,
        archive_dir: Option<PathBuf>,
    ) -> DriftReport {
        let services: Vec<ServiceDrift> = facts
            .into_iter()
            .map(|f| {
                let differences = compare(&f, &ctx);
                ServiceDrift {
                    facts: f,
                    differences,
                }
            })
            .collect();
        DriftReport {
            drift: services.iter().any(|s| !s.differences.is_empty()),
            storage,
            archive_dir,
            context: ctx,
            services,
        }
    }

    /// 1 on any drift, 0 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.drift)
    }

    /// A table (service, configured, running, archived, MCP), then each
    /// difference with its remedy.
    pub fn to_text(&self) -> String {
        let ctx = &self.context;
        let mut out = String::new();
        let archive = self
            .archive_dir
            .as_ref()
            .map_or_else(|| "no image_archive".into(), |d| d.display().to_string());
        let _ = write!(out, "storage: {}; archive: {archive}", self.storage);
        if !ctx.mcp_dirs.is_empty() {
            let dirs: Vec<String> = ctx
                .mcp_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            let _ = write!(out, "; MCP definitions: {}", dirs.join(" "));
        }
        out.push('\n');
        if !ctx.image_prefix.is_empty() {
            let _ = writeln!(out, "images below are relative to {}", ctx.image_prefix);
        }
        let mut rows = vec![[
            "SERVICE".to_owned(),
            "CONFIGURED".to_owned(),
            "RUNNING".to_owned(),
            "ARCHIVED".to_owned(),
            "MCP".to_owned(),
        ]];
        for s in &self.services {
            let f = &s.facts;
            let running = match &f.running {
                None => "not running".to_owned(),
                Some(r) => format!("{} @{} ({})", ctx.short(&r.image), short_id(&r.id), r.state),
            };
            let archived = match &f.archive {
                ArchiveFact::NotConfigured => "-".to_owned(),
                ArchiveFact::Archived { entry } if entry.file_present => "yes".to_owned(),
                ArchiveFact::Archived { .. } => "FILE MISSING".to_owned(),
                ArchiveFact::NotArchived { other } if other.is_empty() => "NO".to_owned(),
                ArchiveFact::NotArchived { other } => format!(
                    "OLD: {}",
                    other
                        .iter()
                        .map(|e| ctx.short(&e.image))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let mcp = match &f.mcp {
                None => "-".to_owned(),
                Some(McpFact::Absent) => "not defined".to_owned(),
                Some(McpFact::Defined { image, .. }) => ctx.short(image).to_owned(),
            };
            let configured = match &f.configured_id {
                Some(id) => format!("{} @{}", ctx.short(&f.configured), short_id(id)),
                None => format!("{} (not in storage)", ctx.short(&f.configured)),
            };
            rows.push([f.service.clone(), configured, running, archived, mcp]);
        }
        let widths: Vec<usize> = (0..5)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    let w = widths.get(i).copied().unwrap_or(0);
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let count: usize = self.services.iter().map(|s| s.differences.len()).sum();
        if count == 0 {
            let _ = writeln!(out, "no drift");
            return out;
        }
        let _ = writeln!(out, "\ndrift:");
        for s in &self.services {
            for d in &s.differences {
                let _ = writeln!(out, "  {}: {}", s.facts.service, d.detail);
                let _ = writeln!(out, "    -> {}", d.remedy);
            }
        }
        let services = self
            .services
            .iter()
            .filter(|s| !s.differences.is_empty())
            .count();
        let _ = writeln!(
            out,
            "{count} difference{} in {services} service{}",
            if count == 1 { "" } else { "s" },
            if services == 1 { "" } else { "s" }
        );
        out
    }
}

/// A service whose container runs another image than the configured one
/// (what [`running_vs_configured`] returns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunningDrift {
    /// The service.
    pub service: String,
    /// The configured image reference.
    pub configured: String,
    /// What runs.
    pub running: RunningImage,
}

/// A change in running-vs-configured drift, for the daemon to log once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum DriftChange {
    /// The service's container now runs another image than configured
    /// (first seen, or another one than last time).
    Drifted(RunningDrift),
    /// The service's container runs the configured image again, or is gone.
    Resolved {
        /// The service.
        service: String,
    },
}

/// Remembers the last running-vs-configured drift per service, so that each
/// drift is reported once per change (the daemon's journal).
///
/// ```
/// use mcrecover::drift::{DriftTracker, RunningDrift, RunningImage};
/// let d = RunningDrift {
///     service: "mcq".into(),
///     configured: "r/mcq:1".into(),
///     running: RunningImage { state: "running".into(), image: "r/mcq:2".into(), id: "ab".into(), digest: None },
/// };
/// let mut t = DriftTracker::default();
/// assert_eq!(t.update(std::slice::from_ref(&d)).len(), 1);
/// assert!(t.update(&[d]).is_empty());
/// assert_eq!(t.update(&[]).len(), 1); // resolved
/// ```
#[derive(Debug, Clone, Default)]
pub struct DriftTracker {
    last: BTreeMap<String, RunningDrift>,
}

impl DriftTracker {
    /// Takes the drift seen now (every drifting service; the ones not in
    /// `now` count as not drifting) and returns what changed since the
    /// last call: new or different drift, and drift that went away.
    pub fn update(&mut self, now: &[RunningDrift]) -> Vec<DriftChange> {
        let mut changes = Vec::new();
        let mut next = BTreeMap::new();
        for d in now {
            let same = self.last.get(&d.service).is_some_and(|prev| {
                prev.configured == d.configured
                    && prev.running.image == d.running.image
                    && prev.running.id == d.running.id
            });
            if !same {
                changes.push(DriftChange::Drifted(d.clone()));
            }
            next.insert(d.service.clone(), d.clone());
        }
        for service in self.last.keys() {
            if !next.contains_key(service) {
                changes.push(DriftChange::Resolved {
                    service: service.clone(),
                });
            }
        }
        self.last = next;
        changes
    }

    /// Forgets `service` (e.g. removed from the configuration).
    pub fn forget(&mut self, service: &str) {
        self.last.remove(service);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MCQ: &str = "reg:8443/mcq:v0.4.2";

    fn ctx() -> Context {
        Context {
            config: PathBuf::from("/etc/mcrecover/p.toml"),
            mcp_dirs: vec![PathBuf::from("/srv/mcp/.config/mcp/services")],
            user: Some("mcp".into()),
            image_prefix: "reg:8443/".into(),
        }
    }

    fn running(image: &str, id: &str) -> RunningImage {
        RunningImage {
            state: "running".into(),
            image: image.into(),
            id: id.into(),
            digest: Some("sha256:d1".into()),
        }
    }

    fn entry(image: &str) -> ArchivedImage {
        ArchivedImage {
            image: image.into(),
            file: "mcq.tar".into(),
            saved_at: "2026-12-01T00:00:00Z".into(),
            file_present: true,
        }
    }

    fn facts() -> ServiceFacts {
        ServiceFacts {
            service: "mcq".into(),
            container: "mcq".into(),
            configured: MCQ.into(),
            configured_id: Some("aaaa".into()),
            running: Some(running(MCQ, "sha256:aaaa")),
            archive: ArchiveFact::Archived { entry: entry(MCQ) },
            mcp: Some(McpFact::Defined {
                image: MCQ.into(),
                file: PathBuf::from("mcq.toml"),
            }),
        }
    }

    fn kinds(f: &ServiceFacts) -> Vec<DriftKind> {
        compare(f, &ctx()).into_iter().map(|d| d.kind).collect()
    }

    #[test]
    fn all_agree_is_no_drift() {
        assert!(kinds(&facts()).is_empty());
        let mut f = facts();
        f.running = None;
        f.mcp = None;
        f.archive = ArchiveFact::NotConfigured;
        assert!(kinds(&f).is_empty(), "not running is not image drift");
        f.mcp = Some(McpFact::Absent);
        assert!(
            kinds(&f).is_empty(),
            "a service MCP does not define is shown, not drift"
        );
    }

    #[test]
    fn another_tag_running_is_drift_even_for_the_same_image() {
        let mut f = facts();
        f.running = Some(running("reg:8443/mcq:v0.4.3", "aaaa"));
        let d = compare(&f, &ctx());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, DriftKind::RunningDiffers);
        assert!(d[0].detail.contains("reg:8443/mcq:v0.4.3") && d[0].detail.contains(MCQ));
        assert!(
            d[0].detail
                .ends_with("(the same image ID under another name)"),
            "{}",
            d[0].detail
        );
        assert!(d[0].remedy.contains("deployed outside mcrecover"));
        assert!(d[0].remedy.contains("image = \"mcq:v0.4.3\""));
        assert!(
            d[0].remedy
                .contains("(`systemctl --user restart mcq.service` as mcp)"),
            "{}",
            d[0].remedy
        );
    }

    #[test]
    fn a_moved_tag_is_drift() {
        let mut f = facts();
        f.running = Some(running(MCQ, "bbbb"));
        let d = compare(&f, &ctx());
        assert_eq!(d[0].kind, DriftKind::RunningDiffers);
        assert!(
            d[0].detail.contains("now names image aaaa"),
            "{}",
            d[0].detail
        );
        // The configured image not in storage: only names count.
        f.configured_id = None;
        assert!(kinds(&f).is_empty());
    }

    #[test]
    fn implicit_latest_is_the_same_reference() {
        assert_eq!(normalize("busybox"), "busybox:latest");
        assert_eq!(normalize("reg:5000/busybox"), "reg:5000/busybox:latest");
        assert_eq!(normalize("reg:5000/b:1"), "reg:5000/b:1");
        assert_eq!(normalize("r/b@sha256:ab"), "r/b@sha256:ab");
        assert!(!running_differs("r/b", None, &running("r/b:latest", "x")));
    }

    #[test]
    fn repositories() {
        assert_eq!(repository("reg:5000/a/b:1"), "reg:5000/a/b");
        assert_eq!(repository("reg:5000/a/b"), "reg:5000/a/b");
        assert_eq!(repository("b@sha256:ab"), "b");
        assert_eq!(repository("b:1@sha256:ab"), "b");
        assert_eq!(repository("b"), "b");
    }

    #[test]
    fn archive_differences() {
        let mut f = facts();
        f.archive = ArchiveFact::NotArchived { other: vec![] };
        let d = compare(&f, &ctx());
        assert_eq!(d[0].kind, DriftKind::ArchiveMissing);
        assert!(d[0].remedy.contains("mcrecover images save"));
        f.archive = ArchiveFact::NotArchived {
            other: vec![entry("reg:8443/mcq:v0.4.1")],
        };
        let d = compare(&f, &ctx());
        assert_eq!(d[0].kind, DriftKind::ArchiveStale);
        assert!(d[0]
            .detail
            .contains("reg:8443/mcq:v0.4.1 (saved 2026-12-01T00:00:00Z)"));
        let mut e = entry(MCQ);
        e.file_present = false;
        f.archive = ArchiveFact::Archived { entry: e };
        assert_eq!(kinds(&f), vec![DriftKind::ArchiveFileMissing]);
    }

    #[test]
    fn mcp_difference_names_the_merge() {
        let mut f = facts();
        f.mcp = Some(McpFact::Defined {
            image: "reg:8443/mcq:v0.5.0".into(),
            file: PathBuf::from("/srv/mcp/.config/mcp/services/mcq.toml"),
        });
        let d = compare(&f, &ctx());
        assert_eq!(d[0].kind, DriftKind::McpDiffers);
        assert_eq!(
            d[0].remedy,
            "take the MCP definitions into the configuration: `mcrecover import-mcp --merge \
             /etc/mcrecover/p.toml /srv/mcp/.config/mcp/services --out /etc/mcrecover/p.toml.new`, \
             review, then move it over /etc/mcrecover/p.toml"
        );
    }

    #[test]
    fn report_text_and_exit_code() {
        let ok = DriftReport::new(vec![facts()], ctx(), "mcp's podman storage".into(), None);
        assert_eq!(ok.exit_code(), 0);
        let text = ok.to_text();
        assert!(text.contains("no drift"), "{text}");
        assert!(text.contains("mcq:v0.4.2 @aaaa"), "{text}");
        let mut f = facts();
        f.running = Some(running("reg:8443/mcq:v0.4.3", "aaaa"));
        let mut g = facts();
        g.service = "kls".into();
        g.running = None;
        let bad = DriftReport::new(
            vec![f, g],
            ctx(),
            "s".into(),
            Some("/srv/mcp/images".into()),
        );
        assert_eq!(bad.exit_code(), 1);
        let text = bad.to_text();
        assert!(text.contains("not running"), "{text}");
        assert!(text.contains("1 difference in 1 service"), "{text}");
        let json = serde_json::to_value(&bad).unwrap();
        assert_eq!(json["drift"], true);
        assert_eq!(json["services"][0]["service"], "mcq");
        assert_eq!(
            json["services"][0]["running"]["image"],
            "reg:8443/mcq:v0.4.3"
        );
        assert_eq!(json["services"][0]["configured"], MCQ);
        assert_eq!(
            json["services"][0]["differences"][0]["kind"],
            "running_differs"
        );
        assert_eq!(json["services"][1]["running"], serde_json::Value::Null);
        assert_eq!(json["services"][0]["archive"]["state"], "archived");
    }

    #[test]
    fn tracker_reports_each_change_once() {
        let d = |img: &str| RunningDrift {
            service: "mcq".into(),
            configured: MCQ.into(),
            running: running(img, "aaaa"),
        };
        let mut t = DriftTracker::default();
        assert!(t.update(&[]).is_empty());
        assert_eq!(
            t.update(&[d("r/mcq:2")]),
            vec![DriftChange::Drifted(d("r/mcq:2"))]
        );
        assert!(t.update(&[d("r/mcq:2")]).is_empty());
        assert_eq!(
            t.update(&[d("r/mcq:3")]),
            vec![DriftChange::Drifted(d("r/mcq:3"))]
        );
        assert_eq!(
            t.update(&[]),
            vec![DriftChange::Resolved {
                service: "mcq".into()
            }]
        );
        assert!(t.update(&[]).is_empty());
        t.update(&[d("r/mcq:2")]);
        t.forget("mcq");
        assert_eq!(t.update(&[d("r/mcq:2")]).len(), 1);
    }
}
