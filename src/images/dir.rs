//! The archive directory, opened once: every file in it is read, created
//! and renamed relative to that descriptor (docs/security.md, "Image
//! archives").
//!
//! - Saving ([`ArchiveDir::for_save`]): the path is opened from `/` one
//!   component at a time, none of them a symbolic link, missing ones
//!   created. Run as root, a path that someone else than root could change
//!   is refused, except a directory of the platform user's own (the
//!   documented `/srv/mcp/images`): then only root and that user may be
//!   able to change the path, and directories created in a path the user
//!   controls are handed to the user. Temporary files are new files
//!   (`O_EXCL | O_NOFOLLOW`), root's while root writes them, made 0644 on
//!   the descriptor and renamed with `renameat`.
//! - Reading ([`ArchiveDir::open`]): the directory path is root's
//!   configuration and is followed; `index.json` and each archive are
//!   opened with `O_NOFOLLOW | O_NONBLOCK` and must be regular files. An
//!   archive is loaded only when nobody but a trusted owner could change its
//!   contents after the checksum ([`Trust`]): it is hashed and handed to
//!   podman as the same open file.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sys::stat::{FileStat, Mode};
use nix::unistd::{Gid, Uid};

use super::archive::{parse_index, Index, INDEX_FILE};
use super::ImagesError;
use crate::config::PlatformUser;
use crate::safe_fs::{self, OpenError, Step, WalkError};

/// `index.json` larger than this is not read.
const MAX_INDEX_BYTES: u64 = 16 << 20;

/// An archive directory, open.
#[derive(Debug)]
pub(crate) struct ArchiveDir {
    path: PathBuf,
    fd: OwnedFd,
}

/// Who may own (and so change) an archive that is loaded: root, this
/// process's user, and the owner of the storage it is loaded into.
#[derive(Debug, Clone)]
pub(crate) struct Trust {
    uids: Vec<u32>,
    /// For messages: whose storage (`mcp's podman storage`).
    storage: String,
}

impl Trust {
    /// Root, the current user, and `storage_owner` (the platform user of a
    /// rootless platform, whose own storage the archive goes into).
    pub(crate) fn new(storage_owner: Option<u32>, storage: String) -> Trust {
        let mut uids = vec![0, nix::unistd::geteuid().as_raw()];
        uids.extend(storage_owner);
        uids.sort_unstable();
        uids.dedup();
        Trust { uids, storage }
    }

    /// Why an archive with status `st` is not trusted, if it is not: owned
    /// by someone else, or writable by a group or everyone.
    fn refusal(&self, st: &FileStat) -> Option<String> {
        let owners = self
            .uids
            .iter()
            .map(|u| match *u {
                0 => "root".to_owned(),
                u => format!("uid {u}"),
            })
            .collect::<Vec<_>>()
            .join(" or ");
        let why = if !self.uids.contains(&st.st_uid) {
            format!("it belongs to uid {}", st.st_uid)
        } else if st.st_mode & 0o002 != 0 {
            "everyone may write it".to_owned()
        } else if st.st_mode & 0o020 != 0 && st.st_gid != 0 {
            format!("group {} may write it", st.st_gid)
        } else {
            return None;
        };
        Some(format!(
            "{why}, so its contents could change after the checksum; only an archive owned by {owners} that no one else may write is loaded into {} (chown it to root and chmod 0644, or save it again with `mcrecover images save`)",
            self.storage
        ))
    }
}

/// Why an archive was not opened.
#[derive(Debug)]
pub(crate) enum ArchiveOpen {
    /// No such file.
    Missing,
    /// Not a regular file, or not trusted: the reason.
    Refused(String),
    /// Another error.
    Io(std::io::Error),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ImagesError + '_ {
    move |source| ImagesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Who could replace an entry of directory `parent` (other than root):
/// its owner, a group that may write it, everyone (unless it is sticky:
/// then only the entry's owner). `child` is the entry.
fn controllers(parent: &FileStat, child: &FileStat) -> Vec<Controller> {
    let mut out = Vec::new();
    if parent.st_uid != 0 {
        out.push(Controller::Uid(parent.st_uid));
    }
    if parent.st_mode & 0o020 != 0 && parent.st_gid != 0 {
        out.push(Controller::Group(parent.st_gid));
    }
    if parent.st_mode & 0o002 != 0 {
        if parent.st_mode & 0o1000 == 0 {
            out.push(Controller::Everyone);
        } else if child.st_uid != 0 {
            out.push(Controller::Uid(child.st_uid));
        }
    }
    out
}

/// Someone other than root who can change a directory's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Uid(u32),
    Group(u32),
    Everyone,
}

impl Controller {
    fn describe(self, user: Option<&PlatformUser>) -> String {
        match self {
            Controller::Uid(u) => match user {
                Some(p) if p.uid == u => format!("{} (uid {u})", p.name),
                _ => format!("uid {u}"),
            },
            Controller::Group(g) => format!("the members of group {g}"),
            Controller::Everyone => "every user".to_owned(),
        }
    }
}

/// Checks (as root) that nobody but root, and the platform user for a
/// directory of its own, could have changed the path walked in `steps`;
/// directories this walk created in a path the platform user controls are
/// handed to that user first. `Err` is the reason, with the fix.
fn check_save_path(steps: &[Step], user: Option<&PlatformUser>) -> Result<(), String> {
    let p_uid = user.map(|u| u.uid);
    let Some(last) = steps.last() else {
        return Err("empty path".into());
    };
    let fix = format!(
        "Use an archive directory whose every component belongs to root and is writable by root only{}, or fix the owner and mode of the component named.",
        user.map_or_else(String::new, |u| format!(
            " (or, below such a path or the platform user's own directories, a directory that belongs to {})",
            u.name
        ))
    );
    let mut user_controls: Option<PathBuf> = None;
    for pair in steps.windows(2) {
        let [parent, child] = pair else { continue };
        for c in controllers(&parent.stat, &child.stat) {
            match c {
                Controller::Uid(u) if Some(u) == p_uid => {
                    if user_controls.is_none() {
                        user_controls = Some(parent.path.clone());
                    }
                }
                other => {
                    return Err(format!(
                        "{} can be replaced by {} ({} is writable by them): as root, mcrecover does not save images into a directory another user could redirect. {fix}",
                        child.path.display(),
                        other.describe(user),
                        parent.path.display()
                    ))
                }
            }
        }
    }
    // The directory itself: nobody else may change what is in it.
    let own = &last.stat;
    let mut others = Vec::new();
    if own.st_mode & 0o002 != 0 {
        others.push("every user");
    }
    let group = format!("group {}", own.st_gid);
    if own.st_mode & 0o020 != 0 && own.st_gid != 0 {
        others.push(group.as_str());
    }
    if !others.is_empty() {
        return Err(format!(
            "it is writable by {}: chmod go-w it. {fix}",
            others.join(" and ")
        ));
    }
    match (own.st_uid, &user_controls) {
        (0, None) => Ok(()),
        (0, Some(by)) => Err(format!(
            "it belongs to root, but {} belongs to {} who could have put any directory of root's there: chown {} {}, the platform user's archive directory. {fix}",
            by.display(),
            user.map_or_else(|| "another user".to_owned(), |u| u.name.clone()),
            user.map_or_else(|| "USER".to_owned(), |u| format!("{}:", u.name)),
            last.path.display()
        )),
        (u, _) if Some(u) == p_uid => Ok(()),
        (u, _) => Err(format!(
            "it belongs to uid {u}, who is neither root nor the platform user. {fix}"
        )),
    }
}

impl ArchiveDir {
    /// The directory's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `path` for reading (load, status): followed if it is a
    /// symbolic link (it is root's configuration). `None` when it does not
    /// exist.
    pub(crate) fn open(path: &Path) -> Result<Option<ArchiveDir>, ImagesError> {
        match safe_fs::open_dir(path) {
            Ok(fd) => Ok(Some(ArchiveDir {
                path: path.to_path_buf(),
                fd,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(path)(e)),
        }
    }

    /// Opens (creating what is missing, mode 0755) the directory to save
    /// into, no symbolic link followed. Run as root, refused
    /// ([`ImagesError::Unsafe`]) when someone else than root could change
    /// the path, unless the directory is the platform user's own and only
    /// that user could (see the module doc).
    pub(crate) fn for_save(
        path: &Path,
        user: Option<&PlatformUser>,
    ) -> Result<ArchiveDir, ImagesError> {
        let abs = std::path::absolute(path).map_err(io_at(path))?;
        let root = nix::unistd::geteuid().is_root();
        let mut steps =
            safe_fs::walk(&abs, Some(Mode::from_bits_truncate(0o755))).map_err(|e| match e {
                WalkError::Io { path, source } => ImagesError::Io { path, source },
                other => ImagesError::Unsafe {
                    path: abs.clone(),
                    reason: other.to_string(),
                },
            })?;
        if root {
            hand_over_created(&mut steps, user)?;
            check_save_path(&steps, user).map_err(|reason| ImagesError::Unsafe {
                path: abs.clone(),
                reason,
            })?;
        }
        let last = steps.pop().ok_or_else(|| ImagesError::Unsafe {
            path: abs.clone(),
            reason: "empty path".into(),
        })?;
        Ok(ArchiveDir {
            path: path.to_path_buf(),
            fd: last.fd,
        })
    }

    /// `index.json` (a regular file, at most 16 MiB, not followed if it is a
    /// symbolic link); a missing one is an empty index.
    pub(crate) fn read_index(&self) -> Result<Index, ImagesError> {
        let path = self.path.join(INDEX_FILE);
        let read = safe_fs::open_regular_at(&self.fd, OsStr::new(INDEX_FILE))
            .and_then(|(f, _)| safe_fs::read_bounded(f, MAX_INDEX_BYTES));
        match read {
            Ok(bytes) => parse_index(&path, &bytes),
            Err(e) if e.is_not_found() => Ok(Index::new()),
            Err(OpenError::Io(source)) => Err(ImagesError::Io { path, source }),
            Err(e) => Err(ImagesError::Unsafe {
                reason: format!("it {e}"),
                path,
            }),
        }
    }

    /// A new temporary file `base` (or `base-N` when that name is taken by
    /// anything), mode 0600, this process's.
    pub(crate) fn create_temp(&self, base: &str) -> Result<(File, OsString), ImagesError> {
        safe_fs::create_temp_at(&self.fd, base, Mode::from_bits_truncate(0o600))
            .map_err(io_at(&self.path.join(base)))
    }

    /// Makes the temporary file `tmp` (open as `file`) durable, mode 0644
    /// (on the descriptor), and renames it to `name`.
    pub(crate) fn commit(&self, file: &File, tmp: &OsStr, name: &str) -> Result<(), ImagesError> {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp_path = self.path.join(tmp);
        file.sync_all().map_err(io_at(&tmp_path))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io_at(&tmp_path))?;
        safe_fs::rename_at(&self.fd, tmp, OsStr::new(name)).map_err(io_at(&self.path.join(name)))
    }

    /// Removes our temporary file `tmp` (the entry, never followed).
    pub(crate) fn remove_temp(&self, tmp: &OsStr) {
        let _ = safe_fs::unlink_at(&self.fd, tmp);
    }

    /// fsync of the directory.
    pub(crate) fn sync(&self) -> Result<(), ImagesError> {
        safe_fs::sync(&self.fd).map_err(io_at(&self.path))
    }

    /// Writes `index.json` atomically: a new temporary file, fsync, mode
    /// 0644, `renameat`, fsync of the directory.
    pub(crate) fn write_index(&self, index: &Index) -> Result<(), ImagesError> {
        let path = self.path.join(INDEX_FILE);
        let mut text =
            serde_json::to_string_pretty(index).map_err(|source| ImagesError::Index {
                path: path.clone(),
                source,
            })?;
        text.push('\n');
        let (mut f, tmp) = self.create_temp(&format!(".{INDEX_FILE}.tmp{}", std::process::id()))?;
        let written = f
            .write_all(text.as_bytes())
            .map_err(io_at(&self.path.join(&tmp)))
            .and_then(|()| self.commit(&f, &tmp, INDEX_FILE));
        if written.is_err() {
            self.remove_temp(&tmp);
        }
        written?;
        self.sync()
    }

    /// Opens archive `file` for loading: a regular file (not followed, not
    /// waited on), whose contents only `trust`ed users could change.
    pub(crate) fn open_archive(&self, file: &str, trust: &Trust) -> Result<File, ArchiveOpen> {
        let (f, st) = match safe_fs::open_regular_at(&self.fd, OsStr::new(file)) {
            Ok(x) => x,
            Err(e) if e.is_not_found() => return Err(ArchiveOpen::Missing),
            Err(OpenError::Io(e)) => return Err(ArchiveOpen::Io(e)),
            Err(e) => return Err(ArchiveOpen::Refused(format!("it {e}"))),
        };
        match trust.refusal(&st) {
            Some(why) => Err(ArchiveOpen::Refused(why)),
            None => Ok(f),
        }
    }
}

/// Directories this walk created (root's) in a path the platform user
/// controls are handed to that user: the archive directory belongs to it.
fn hand_over_created(steps: &mut [Step], user: Option<&PlatformUser>) -> Result<(), ImagesError> {
    let Some(u) = user else { return Ok(()) };
    let mut user_controls = false;
    for i in 1..steps.len() {
        let (before, rest) = steps.split_at_mut(i);
        let (Some(parent), Some(child)) = (before.last(), rest.first_mut()) else {
            continue;
        };
        if controllers(&parent.stat, &child.stat).contains(&Controller::Uid(u.uid)) {
            user_controls = true;
        }
        if child.created && user_controls {
            nix::unistd::fchown(
                &child.fd,
                Some(Uid::from_raw(u.uid)),
                Some(Gid::from_raw(u.gid)),
            )
            .map_err(|e| ImagesError::Io {
                path: child.path.clone(),
                source: e.into(),
            })?;
            child.stat = safe_fs::stat(&child.fd).map_err(io_at(&child.path))?;
        }
    }
    Ok(())
}
