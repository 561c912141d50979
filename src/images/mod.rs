//! Cold start from image archives: make sure every service's image is in the
//! right podman storage before its stage starts (load it from the verified
//! archive in `platform.image_archive`, or pull it when allowed), export the
//! configured images into such an archive (`mcrecover images save`), and show
//! what is present and archived (`mcrecover images status`).
//! Layout and rules: docs/images.md.
//!
//! # Where podman runs
//!
//! Every function has a `*_via` form taking a [`PodmanRunner`]; the plain
//! form is [`PodmanRunner::Direct`] (podman as our child process: the CLI
//! run by an operator, as root or the platform user). The daemon runs under a
//! hardened unit where podman cannot work (no user namespaces, read-only
//! storage), so it passes [`PodmanRunner::Transient`] with its own
//! connection to the platform's manager (the platform user's for rootless,
//! the system manager for rootful): podman then runs as a transient unit of
//! that manager, outside the daemon's sandbox (docs/daemon.md, "Podman
//! outside the daemon's sandbox"):
//!
//! - [`ensure_images_via`]: present, else load from the archive (the
//!   verified open file is podman's stdin), else pull when allowed;
//! - [`all_present_via`]: whether every image is there (loads nothing);
//! - [`presence_via`]: per image `present`, `absent` or `unknown`;
//! - [`podman_via`]: any other podman command (e.g. `inspect`), bounded.
//! - [`podman_query_via`]: a podman query whose standard output is wanted
//!   (`ps`, `images` with `--format`), bounded.
//!
//! # "Absent" versus "cannot tell"
//!
//! An image is absent only when podman answered so (`podman image exists`
//! exited 1 and printed nothing but warnings: podman also exits 1 when it
//! cannot set itself up, e.g. `cannot set user namespace`). When podman could not answer, the
//! functions return [`ImagesError::Podman`] or [`ImagesError::Spawn`]
//! ([`ImagesError::cannot_tell`] is true for both), never "absent": callers
//! treat that as "unknown" (the recovery starts the units anyway and lets a
//! truly missing image fail the unit, see `recover::preflight`).

mod archive;
mod dir;
mod podman;

pub use podman::{PodmanOutput, PodmanRunner};

pub use archive::{
    archive_file_name, archive_file_names, read_index, sha256_file, verify, write_index,
    ArchiveState, Index, IndexEntry, INDEX_FILE,
};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Config, PullPolicy};
use dir::{ArchiveDir, ArchiveOpen, Trust};
use podman::Podman;

/// Errors of the image step.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// Some images are neither present nor loadable; each failure says what to do.
    #[error("{}", .0.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("\n"))]
    Unavailable(Vec<ImageFailure>),
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `index.json` is not valid.
    #[error("{}: invalid image index: {source}", path.display())]
    Index {
        /// The index file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// `index.json` names a file outside its directory.
    #[error("{}: entry for {image} names `{file}`, which is not a plain file name", path.display())]
    BadEntry {
        /// The index file.
        path: PathBuf,
        /// The image.
        image: String,
        /// The offending file name.
        file: String,
    },
    /// podman could not be started: no such program, or (with
    /// [`PodmanRunner::Transient`]) the transient unit was refused or its
    /// manager lost; `source` then wraps the
    /// [`crate::drive::TransientError`]. "Cannot tell": says nothing about
    /// the images.
    #[error("cannot run {}: {source}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A podman command ran but failed or did not answer in time. For
    /// `image exists` this is "cannot tell" (an absent image is not an
    /// error: podman's plain exit 1 is `Ok(false)`), e.g. rootless podman
    /// that cannot create its user namespace, or read-only storage.
    #[error("podman {action} {image} failed: {detail}")]
    Podman {
        /// `load`, `save`, `pull`, `image exists`, or the first argument
        /// given to [`podman_via`].
        action: &'static str,
        /// The image.
        image: String,
        /// podman's stderr.
        detail: String,
    },
    /// We run as a user whose podman storage is not the platform's.
    #[error("{0}")]
    WrongUser(String),
    /// `images save` without a directory and no `image_archive` configured.
    #[error("no archive directory: pass one, or set image_archive in [platform]")]
    NoArchiveDir,
    /// A path another user could redirect, or a file that is not what it
    /// must be (a symbolic link, a FIFO): refused, with the reason and fix.
    #[error("refusing {}: {reason}", path.display())]
    Unsafe {
        /// The path.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
}

impl ImagesError {
    /// Whether this error means podman could not answer ([`ImagesError::Spawn`],
    /// [`ImagesError::Podman`]): the images' presence is unknown, not
    /// absent. Callers must not report such an image as missing.
    pub fn cannot_tell(&self) -> bool {
        matches!(self, ImagesError::Spawn { .. } | ImagesError::Podman { .. })
    }

    /// The message to report for each of `services`: the failure of the
    /// service's own image, or (for the others, and for errors that concern
    /// every image) the whole error.
    pub fn by_service(&self, services: &[String]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self {
            ImagesError::Unavailable(failures) => {
                for svc in services {
                    let msg = failures
                        .iter()
                        .find(|f| f.services.contains(svc))
                        .map_or_else(
                            || {
                                let imgs: Vec<&str> =
                                    failures.iter().map(|f| f.image.as_str()).collect();
                                format!(
                                    "not started: images of this stage are unavailable ({})",
                                    imgs.join(", ")
                                )
                            },
                            |f| f.message.clone(),
                        );
                    out.insert(svc.clone(), msg);
                }
            }
            other => {
                for svc in services {
                    out.insert(svc.clone(), format!("images: {other}"));
                }
            }
        }
        out
    }
}

/// One image that could not be made available.
#[derive(Debug, Clone, Serialize)]
pub struct ImageFailure {
    /// The image reference.
    pub image: String,
    /// Services using it.
    pub services: Vec<String>,
    /// What went wrong and the remedy, filled in.
    pub message: String,
}

/// What [`ensure_images`] did for one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ImageAction {
    /// Already in storage.
    Present {
        /// The image reference.
        image: String,
        /// Services using it.
        services: Vec<String>,
    },
    /// Loaded from a verified archive.
    Loaded {
        /// The image reference.
        image: String,
        /// Services using it.
        services: Vec<String>,
        /// The archive file.
        archive: PathBuf,
    },
    /// Pulled from its registry (`pull = "missing"`).
    Pulled {
        /// The image reference.
        image: String,
        /// Services using it.
        services: Vec<String>,
    },
}

/// The images of `services` (external ones skipped), in order, each with its services.
fn images_of(cfg: &Config, services: &[String]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for name in services {
        let Some(c) = cfg.services.get(name).and_then(|s| s.container.as_ref()) else {
            continue;
        };
        match out.iter_mut().find(|(img, _)| *img == c.image) {
            Some((_, svcs)) => svcs.push(name.clone()),
            None => out.push((c.image.clone(), vec![name.clone()])),
        }
    }
    out
}

/// Index of the stage `service` belongs to.
fn stage_index(cfg: &Config, service: &str) -> Option<usize> {
    cfg.stages
        .iter()
        .position(|st| st.services.iter().any(|s| s == service))
}

/// The registry host (`host[:port]`) of an image reference, if it names one
/// (first component containing `.` or `:`, or `localhost`).
pub fn registry_host(reference: &str) -> Option<&str> {
    let (first, rest) = reference.split_once('/')?;
    (!rest.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost"))
        .then_some(first)
}

/// Why `image` (used by `services`) must not be pulled yet: its registry is
/// the one of `platform.image_prefix`, served by `platform.registry_service`,
/// whose stage is not earlier than the requesting service's stage. Returns
/// `(registry service, its stage)`.
pub fn pull_blocked_by(cfg: &Config, image: &str, services: &[String]) -> Option<(String, String)> {
    let reg_svc = cfg.platform.registry_service.as_ref()?;
    let probe = format!("{}x", cfg.platform.image_prefix);
    let served = registry_host(&probe);
    if served.is_some() && registry_host(image) != served {
        return None;
    }
    let reg_stage = stage_index(cfg, reg_svc);
    let blocked = services
        .iter()
        .any(|s| match (reg_stage, stage_index(cfg, s)) {
            (Some(r), Some(i)) => r >= i,
            _ => true,
        });
    blocked.then(|| {
        let stage = reg_stage
            .and_then(|i| cfg.stages.get(i))
            .map_or_else(|| "(none)".to_string(), |s| s.name.clone());
        (reg_svc.clone(), stage)
    })
}

fn node_name(cfg: &Config) -> String {
    cfg.platform.node.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "this-host".into())
    })
}

/// The operator's remedy for an image that cannot be loaded here.
fn remedy(cfg: &Config, pm: &Podman, image: &str) -> String {
    format!(
        "On a machine that has it: podman save {image} | ssh {} \"{}\"",
        node_name(cfg),
        pm.remote_load()
    )
}

/// Whether the image of every service in `services` is in the platform's
/// podman storage already (one `podman image exists` per image, all at
/// once). Loads and pulls nothing: [`ensure_images`] does that. Podman run
/// directly ([`all_present_via`] says where).
pub async fn all_present(cfg: &Config, services: &[String]) -> Result<bool, ImagesError> {
    all_present_via(cfg, services, &PodmanRunner::Direct).await
}

/// [`all_present`], podman run by `runner`. `Ok(false)`: podman said an
/// image is absent; an `Err` with [`ImagesError::cannot_tell`]: it could
/// not answer.
pub async fn all_present_via(
    cfg: &Config,
    services: &[String],
    runner: &PodmanRunner,
) -> Result<bool, ImagesError> {
    let wanted = images_of(cfg, services);
    if wanted.is_empty() {
        return Ok(true);
    }
    let pm = Podman::for_config_via(cfg, runner)?;
    for p in exists_each(&pm, &wanted).await {
        if !p? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `podman image exists` for each wanted image, all at once (each is a podman
/// process start, ~0.1 s; a stage waits for them before any unit starts).
async fn exists_each(
    pm: &Podman,
    wanted: &[(String, Vec<String>)],
) -> Vec<Result<bool, ImagesError>> {
    futures_util::future::join_all(wanted.iter().map(|(image, _)| pm.exists(image))).await
}

/// Makes sure the image of every service in `services` is in the platform's
/// podman storage (root's when rootful, the platform user's when rootless):
/// present already; else loaded from `platform.image_archive` after its
/// SHA-256 matched `index.json`; else pulled when `pull = "missing"` and its
/// registry is not served by a service of the same or a later stage; else a
/// failure naming the exact remedy. Every image is attempted; failures are
/// returned together in [`ImagesError::Unavailable`]. Podman run directly
/// ([`ensure_images_via`] says where).
///
/// When podman cannot tell whether an image is present, the error is
/// [`ImagesError::Podman`]/[`ImagesError::Spawn`] ([`ImagesError::cannot_tell`]),
/// never `Unavailable`.
pub async fn ensure_images(
    cfg: &Config,
    services: &[String],
) -> Result<Vec<ImageAction>, ImagesError> {
    ensure_images_via(cfg, services, &PodmanRunner::Direct).await
}

/// [`ensure_images`], podman run by `runner`: for the daemon,
/// [`PodmanRunner::Transient`] with its connection to the platform's
/// manager, so that the checks, loads and pulls run outside its sandbox.
/// Archives are opened (and verified) by this process and handed to podman
/// as its stdin.
pub async fn ensure_images_via(
    cfg: &Config,
    services: &[String],
    runner: &PodmanRunner,
) -> Result<Vec<ImageAction>, ImagesError> {
    let wanted = images_of(cfg, services);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let pm = Podman::for_config_via(cfg, runner)?;
    let dir = cfg.platform.image_archive.as_deref();
    let trust = Trust::new(pm.storage_owner(), pm.storage_name());
    // The archive directory, opened once (when an image is absent), and its index.
    let mut archive: Option<(Option<ArchiveDir>, Index)> = None;
    let mut actions = Vec::new();
    let mut failures = Vec::new();
    let present = exists_each(&pm, &wanted).await;
    for ((image, svcs), present) in wanted.into_iter().zip(present) {
        if present? {
            actions.push(ImageAction::Present {
                image,
                services: svcs,
            });
            continue;
        }
        let mut why = match dir {
            Some(d) => format!(
                "image {image} is not in {} and not in {}.",
                pm.storage_name(),
                d.display()
            ),
            None => format!(
                "image {image} is not in {} and no image_archive is configured.",
                pm.storage_name()
            ),
        };
        if let Some(d) = dir {
            if archive.is_none() {
                let opened = ArchiveDir::open(d)?;
                let idx = match &opened {
                    Some(a) => a.read_index()?,
                    None => Index::new(),
                };
                archive = Some((opened, idx));
            }
            let (adir, idx) = match &archive {
                Some((Some(a), idx)) => (Some(a), idx.clone()),
                _ => (None, Index::new()),
            };
            let loaded = match adir {
                Some(a) => load_archived(&pm, a, &idx, &image, &trust).await,
                None => Ok(None),
            };
            match loaded {
                Ok(Some(path)) => {
                    info!(image = %image, services = ?svcs, archive = %path.display(), "image loaded from archive");
                    actions.push(ImageAction::Loaded {
                        image,
                        services: svcs,
                        archive: path,
                    });
                    continue;
                }
                Ok(None) => {}
                Err(LoadFailure::Refused(msg)) => {
                    warn!(image = %image, reason = %msg, "archive refused");
                    let message = format!("{msg} {}", remedy(cfg, &pm, &image));
                    failures.push(ImageFailure {
                        image,
                        services: svcs,
                        message,
                    });
                    continue;
                }
                Err(LoadFailure::Hard(e)) => return Err(e),
            }
            if let Some(e) = idx.get(&image) {
                why = format!(
                    "image {image} is not in {}, and {} lists {} for it but that file is missing.",
                    pm.storage_name(),
                    d.join(INDEX_FILE).display(),
                    e.file
                );
            }
        }
        if cfg.platform.pull == PullPolicy::Missing {
            match pull_blocked_by(cfg, &image, &svcs) {
                Some((reg, stage)) => {
                    why.push_str(&format!(
                        " Not pulling it: its registry is served by {reg} (stage {stage}), which is not healthy before this stage."
                    ));
                }
                None => match pm.pull(&image).await {
                    Ok(()) => {
                        info!(image = %image, services = ?svcs, "image pulled");
                        actions.push(ImageAction::Pulled {
                            image,
                            services: svcs,
                        });
                        continue;
                    }
                    Err(e) => why.push_str(&format!(" Pulling it failed: {e}.")),
                },
            }
        }
        let message = format!("{why} {}", remedy(cfg, &pm, &image));
        warn!(image = %image, services = ?svcs, "image unavailable");
        failures.push(ImageFailure {
            image,
            services: svcs,
            message,
        });
    }
    if failures.is_empty() {
        Ok(actions)
    } else {
        Err(ImagesError::Unavailable(failures))
    }
}

/// What podman says about one image ([`presence_via`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Presence {
    /// In the platform's storage.
    Present,
    /// Not in the platform's storage: podman answered so.
    Absent,
    /// podman could not answer (the error says why): NOT absent.
    Unknown {
        /// The podman error, e.g. `cannot set user namespace`.
        reason: String,
    },
}

/// One image of [`presence_via`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImagePresence {
    /// The image reference.
    pub image: String,
    /// Services using it.
    pub services: Vec<String>,
    /// Present, absent or unknown.
    pub presence: Presence,
}

/// Per image of `services` (external ones skipped, each image once), whether
/// it is in the platform's storage, with podman run by `runner` (all at
/// once). A podman that cannot answer gives [`Presence::Unknown`] for that
/// image. Errors only when this process may not look at that storage at all
/// ([`ImagesError::WrongUser`]).
pub async fn presence_via(
    cfg: &Config,
    services: &[String],
    runner: &PodmanRunner,
) -> Result<Vec<ImagePresence>, ImagesError> {
    let wanted = images_of(cfg, services);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let pm = Podman::for_config_via(cfg, runner)?;
    let found = exists_each(&pm, &wanted).await;
    Ok(wanted
        .into_iter()
        .zip(found)
        .map(|((image, services), r)| {
            let presence = match r {
                Ok(true) => Presence::Present,
                Ok(false) => Presence::Absent,
                Err(e) => {
                    warn!(image = %image, error = %e, "podman cannot tell whether the image is present");
                    Presence::Unknown {
                        reason: e.to_string(),
                    }
                }
            };
            ImagePresence {
                image,
                services,
                presence,
            }
        })
        .collect())
}

/// Runs `podman ARGS` (e.g. `["image", "inspect", IMAGE]`) against the
/// platform's storage, podman run by `runner`, within `timeout`; stdin is
/// `/dev/null`, the output is bounded (1 MiB). Returns its exit status and
/// output whatever they are; `Err` ([`ImagesError::cannot_tell`]) when it
/// could not be run or did not finish in time.
pub async fn podman_via(
    cfg: &Config,
    runner: &PodmanRunner,
    args: &[&str],
    timeout: std::time::Duration,
) -> Result<PodmanOutput, ImagesError> {
    let pm = Podman::for_config_via(cfg, runner)?;
    let what = args.join(" ");
    pm.run(args, podman::Input::Null, timeout, "command", &what)
        .await
}

/// What [`podman_query_via`] got: the run (exit status, stderr) and what
/// podman printed on its standard output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodmanQuery {
    /// The run: exit status, stderr (run directly), transient unit.
    pub run: PodmanOutput,
    /// Standard output, lossy UTF-8; run as a transient unit it is the
    /// unit's whole output (stdout and stderr interleaved): parse only the
    /// lines a `--format` template marks.
    pub stdout: String,
    /// Whether the output was cut at its limit (16 MiB run directly, 1 MiB
    /// as a transient unit): lines are missing.
    pub truncated: bool,
}

/// Runs `podman ARGS` for its output (e.g. `["ps", "--all", "--format",
/// TEMPLATE]`) against the platform's storage, podman run by `runner` (as
/// [`podman_via`]: through `runuser` as the platform user when we are root
/// on a rootless platform), within `timeout`; stdin is `/dev/null`.
/// `Err` ([`ImagesError::cannot_tell`]) when it could not be run or did not
/// finish in time; otherwise its status and output whatever they are.
pub async fn podman_query_via(
    cfg: &Config,
    runner: &PodmanRunner,
    args: &[&str],
    timeout: std::time::Duration,
) -> Result<PodmanQuery, ImagesError> {
    let pm = Podman::for_config_via(cfg, runner)?;
    let what = args.join(" ");
    let (run, stdout, truncated) = pm.query(args, timeout, &what).await?;
    Ok(PodmanQuery {
        run,
        stdout,
        truncated,
    })
}

/// The storage [`podman_query_via`] and the other functions look at, for
/// messages: `mcp's podman storage`, `root's podman storage`. Errors when
/// this process may not look at it ([`ImagesError::WrongUser`]).
pub fn storage_name(cfg: &Config) -> Result<String, ImagesError> {
    Ok(Podman::for_config(cfg)?.storage_name())
}

enum LoadFailure {
    /// This image's archive cannot be used (message, without remedy).
    Refused(String),
    /// Something that concerns every image.
    Hard(ImagesError),
}

/// Loads `image` from its archive if the index lists it and the file exists:
/// opens it once (a regular file, not followed, whose contents only a
/// `trust`ed owner could change), hashes the open file, refuses on a
/// mismatch, then feeds the same open file to `podman load` and checks the
/// image is now present.
async fn load_archived(
    pm: &Podman,
    dir: &ArchiveDir,
    index: &Index,
    image: &str,
    trust: &Trust,
) -> Result<Option<PathBuf>, LoadFailure> {
    let Some(entry) = index.get(image) else {
        return Ok(None);
    };
    let path = dir.path().join(&entry.file);
    let mut file = match dir.open_archive(&entry.file, trust) {
        Ok(f) => f,
        Err(ArchiveOpen::Missing) => return Ok(None),
        Err(ArchiveOpen::Refused(why)) => {
            return Err(LoadFailure::Refused(format!(
                "image {image}: archive {} is not loaded: {why}.",
                path.display()
            )))
        }
        Err(ArchiveOpen::Io(source)) => {
            return Err(LoadFailure::Hard(ImagesError::Io { path, source }))
        }
    };
    let hashed = {
        let f = file.try_clone();
        tokio::task::spawn_blocking(move || f.and_then(archive::sha256_of))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
    };
    let (actual, _) = hashed.map_err(|source| {
        LoadFailure::Hard(ImagesError::Io {
            path: path.clone(),
            source,
        })
    })?;
    if actual != entry.sha256 {
        return Err(LoadFailure::Refused(format!(
            "image {image}: archive {} fails its checksum (sha256 {actual}, {} says {}): refusing to load it.",
            path.display(),
            INDEX_FILE,
            entry.sha256
        )));
    }
    file.seek(SeekFrom::Start(0)).map_err(|source| {
        LoadFailure::Hard(ImagesError::Io {
            path: path.clone(),
            source,
        })
    })?;
    if let Err(e) = pm.load(image, file).await {
        return Err(LoadFailure::Refused(format!(
            "image {image}: loading {} failed: {e}.",
            path.display()
        )));
    }
    match pm.exists(image).await {
        Ok(true) => Ok(Some(path)),
        Ok(false) => Err(LoadFailure::Refused(format!(
            "image {image}: {} was loaded but does not contain that image.",
            path.display()
        ))),
        Err(e) => Err(LoadFailure::Hard(e)),
    }
}

/// What `mcrecover images save` did.
#[derive(Debug, Clone, Serialize)]
pub struct SaveReport {
    /// The archive directory.
    pub dir: PathBuf,
    /// Images saved, with their new index entries.
    pub saved: Vec<(String, IndexEntry)>,
    /// Configured images not in storage (not saved; old entries kept).
    pub missing: Vec<String>,
}

impl SaveReport {
    /// Human summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (image, e) in &self.saved {
            let _ = writeln!(
                out,
                "saved {image} -> {} ({} bytes, sha256 {})",
                e.file, e.size, e.sha256
            );
        }
        for image in &self.missing {
            let _ = writeln!(out, "NOT SAVED {image}: not in podman storage");
        }
        let _ = writeln!(
            out,
            "{} saved, {} missing; index: {}",
            self.saved.len(),
            self.missing.len(),
            self.dir.join(INDEX_FILE).display()
        );
        out
    }

    /// 0 when every configured image was saved, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.missing.is_empty())
    }
}

/// The archive directory: `dir` if given, else `platform.image_archive`.
pub fn archive_dir(cfg: &Config, dir: Option<&Path>) -> Result<PathBuf, ImagesError> {
    dir.map(Path::to_path_buf)
        .or_else(|| cfg.platform.image_archive.clone())
        .ok_or(ImagesError::NoArchiveDir)
}

/// Exports every configured image (non-external services) from the platform's
/// storage into `dir`: one docker-archive per image, then `index.json`
/// atomically. Entries of images not saved this time are kept.
///
/// The directory is opened once ([`ArchiveDir::for_save`]: no symbolic link
/// followed; as root, refused when someone else than root could change its
/// path, unless it is the platform user's own directory). Each archive is
/// a new temporary file of ours in it (`O_EXCL | O_NOFOLLOW`): podman writes
/// the archive to a pipe, and this process hashes it and writes it to that
/// file, fsyncs it, makes it 0644 and renames it into place, all on
/// descriptors. podman never sees a path of the archive directory.
pub async fn save(cfg: &Config, dir: &Path) -> Result<SaveReport, ImagesError> {
    let pm = Podman::for_config(cfg)?;
    let adir = ArchiveDir::for_save(dir, cfg.platform.user.as_ref())?;
    let all: Vec<String> = cfg.services.keys().cloned().collect();
    let images = images_of(cfg, &all);
    let names = archive_file_names(images.iter().map(|(i, _)| i.as_str()));
    let mut index = adir.read_index()?;
    let mut report = SaveReport {
        dir: dir.to_path_buf(),
        saved: Vec::new(),
        missing: Vec::new(),
    };
    for (image, _) in images {
        if !pm.exists(&image).await? {
            report.missing.push(image);
            continue;
        }
        let Some(file) = names.get(&image).cloned() else {
            continue;
        };
        let (out, tmp) = adir.create_temp(&format!(".{file}.tmp{}", std::process::id()))?;
        let tmp_path = dir.join(&tmp);
        let (sha256, size, out) = match pm.save_to(&image, out, &tmp_path).await {
            Ok(x) => x,
            Err(e) => {
                adir.remove_temp(&tmp);
                return Err(e);
            }
        };
        if size == 0 {
            adir.remove_temp(&tmp);
            return Err(ImagesError::Podman {
                action: "save",
                image,
                detail: "it wrote an empty archive".into(),
            });
        }
        if let Err(e) = adir.commit(&out, &tmp, &file) {
            adir.remove_temp(&tmp);
            return Err(e);
        }
        let entry = IndexEntry {
            file,
            sha256,
            size,
            saved_at: archive::now_rfc3339(),
        };
        info!(image = %image, file = %entry.file, size, "image saved");
        index.insert(image.clone(), entry.clone());
        report.saved.push((image, entry));
    }
    adir.sync()?;
    adir.write_index(&index)?;
    Ok(report)
}

/// One image in `mcrecover images status`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageStatus {
    /// The image reference.
    pub image: String,
    /// Services using it.
    pub services: Vec<String>,
    /// In the platform's podman storage.
    pub present: bool,
    /// Its archive.
    pub archive: ArchiveState,
}

/// `mcrecover images status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Which storage was looked at (`mcp's podman storage`).
    pub storage: String,
    /// The archive directory, if configured.
    pub archive_dir: Option<PathBuf>,
    /// Per image, in stage order.
    pub images: Vec<ImageStatus>,
    /// Every image is present, or archived with a matching checksum.
    pub ok: bool,
}

impl StatusReport {
    /// A table: image, storage state, archive state.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let dir = self
            .archive_dir
            .as_ref()
            .map_or_else(|| "no image_archive".into(), |d| d.display().to_string());
        let _ = writeln!(out, "storage: {}; archive: {dir}", self.storage);
        let width = self.images.iter().map(|i| i.image.len()).max().unwrap_or(5);
        let _ = writeln!(out, "{:<width$}  {:<8}  ARCHIVE", "IMAGE", "STORAGE");
        for i in &self.images {
            let storage = if i.present { "present" } else { "missing" };
            let archive = match &i.archive {
                ArchiveState::NoArchiveDir => "-".to_string(),
                ArchiveState::NotArchived => "not archived".to_string(),
                ArchiveState::FileMissing { path } => {
                    format!("FILE MISSING {}", path.display())
                }
                ArchiveState::ChecksumMismatch {
                    path,
                    expected,
                    actual,
                } => format!(
                    "CHECKSUM MISMATCH {} (index {expected}, file {actual})",
                    path.display()
                ),
                ArchiveState::Refused { path, reason } => {
                    format!("REFUSED {}: {reason}", path.display())
                }
                ArchiveState::Ok { path, saved_at, .. } => format!(
                    "archived, checksum ok: {} ({saved_at})",
                    path.file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                ),
            };
            let _ = writeln!(out, "{:<width$}  {storage:<8}  {archive}", i.image);
        }
        let _ = writeln!(
            out,
            "{}",
            if self.ok {
                "every image is present or archived"
            } else {
                "some images are neither present nor loadable from the archive"
            }
        );
        out
    }

    /// 0 when [`StatusReport::ok`], else 1.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.ok)
    }
}

/// Per configured image: present in the platform's storage? archived, and
/// does the archive's SHA-256 match `index.json`?
pub async fn status(cfg: &Config) -> Result<StatusReport, ImagesError> {
    let pm = Podman::for_config(cfg)?;
    let ordered: Vec<String> = cfg
        .stages
        .iter()
        .flat_map(|s| s.services.iter().cloned())
        .chain(cfg.services.keys().cloned())
        .collect();
    let mut seen = Vec::new();
    for s in ordered {
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    let dir = cfg.platform.image_archive.clone();
    let adir = match &dir {
        Some(d) => ArchiveDir::open(d)?.map(std::sync::Arc::new),
        None => None,
    };
    let index = match &adir {
        Some(a) => a.read_index()?,
        None => Index::new(),
    };
    let trust = Trust::new(pm.storage_owner(), pm.storage_name());
    let mut images = Vec::new();
    for (image, services) in images_of(cfg, &seen) {
        let present = pm.exists(&image).await?;
        let archive = match (&dir, &adir) {
            (None, _) => ArchiveState::NoArchiveDir,
            (Some(_), None) => ArchiveState::NotArchived,
            (Some(_), Some(a)) => {
                let (a, idx, img, trust) = (a.clone(), index.clone(), image.clone(), trust.clone());
                tokio::task::spawn_blocking(move || archive::verify_in(&a, &idx, &img, &trust))
                    .await
                    .map_err(|e| ImagesError::Io {
                        path: PathBuf::from(INDEX_FILE),
                        source: std::io::Error::other(e.to_string()),
                    })??
            }
        };
        images.push(ImageStatus {
            image,
            services,
            present,
            archive,
        });
    }
    let ok = images
        .iter()
        .all(|i| i.present || matches!(i.archive, ArchiveState::Ok { .. }));
    Ok(StatusReport {
        storage: pm.storage_name(),
        archive_dir: dir,
        images,
        ok,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[platform]
name = "p"
mode = "rootful"
image_prefix = "reg.example:8443/"
pull = "missing"
registry_service = "reg"

[[stages]]
name = "one"
services = ["dns"]

[[stages]]
name = "two"
services = ["reg", "other"]

[[stages]]
name = "three"
services = ["app"]

[services.dns]
image = "dns:1"
[services.reg]
image = "reg:1"
[services.other]
image = "docker.io/library/other:1"
[services.app]
image = "app:1"
"#;

    fn cfg() -> Config {
        crate::config::parse(BASE, Path::new("/etc/p.toml")).unwrap()
    }

    #[test]
    fn registry_hosts() {
        assert_eq!(
            registry_host("mcr.svc.mcp.metacircular.net:8443/mcns:v1.2.0"),
            Some("mcr.svc.mcp.metacircular.net:8443")
        );
        assert_eq!(registry_host("localhost/x"), Some("localhost"));
        assert_eq!(registry_host("library/x:1"), None);
        assert_eq!(registry_host("x:1"), None);
    }

    #[test]
    fn pull_waits_for_the_registry_stage() {
        let c = cfg();
        let svcs = |s: &str| vec![s.to_string()];
        // Earlier and same stage as the registry: refused, naming it.
        assert_eq!(
            pull_blocked_by(&c, "reg.example:8443/dns:1", &svcs("dns")),
            Some(("reg".into(), "two".into()))
        );
        assert!(pull_blocked_by(&c, "reg.example:8443/reg:1", &svcs("reg")).is_some());
        // A later stage may pull; another registry may always be pulled.
        assert_eq!(
            pull_blocked_by(&c, "reg.example:8443/app:1", &svcs("app")),
            None
        );
        assert_eq!(
            pull_blocked_by(&c, "docker.io/library/other:1", &svcs("other")),
            None
        );
        // Without registry_service nothing is blocked.
        let mut c2 = c;
        c2.platform.registry_service = None;
        assert_eq!(
            pull_blocked_by(&c2, "reg.example:8443/dns:1", &svcs("dns")),
            None
        );
    }

    #[test]
    fn registry_service_must_be_a_container() {
        let bad = BASE.replace("registry_service = \"reg\"", "registry_service = \"nope\"");
        let err = crate::config::parse(&bad, Path::new("/etc/p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("registry_service `nope`"), "{err}");
    }

    #[test]
    fn errors_map_to_services() {
        let e = ImagesError::Unavailable(vec![ImageFailure {
            image: "r/a:1".into(),
            services: vec!["a".into()],
            message: "image r/a:1 is missing. On a machine ...".into(),
        }]);
        let m = e.by_service(&["a".to_string(), "b".to_string()]);
        assert!(m["a"].starts_with("image r/a:1 is missing"));
        assert!(m["b"].contains("not started") && m["b"].contains("r/a:1"));
        assert_eq!(e.to_string(), "image r/a:1 is missing. On a machine ...");
    }

    #[test]
    fn images_deduplicate_and_skip_external() {
        let c = cfg();
        let all: Vec<String> = c.services.keys().cloned().collect();
        let imgs = images_of(&c, &all);
        assert_eq!(imgs.len(), 4);
        assert!(imgs
            .iter()
            .any(|(i, s)| i == "reg.example:8443/dns:1" && s == &vec!["dns".to_string()]));
    }
}
