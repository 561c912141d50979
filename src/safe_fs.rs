//! File operations that another user cannot redirect (docs/security.md).
//!
//! Everything here works on directory file descriptors: a directory is
//! opened once, and files in it are opened, created and renamed relative to
//! that descriptor, never by a path that is resolved again later. The last
//! component is never followed when it is a symbolic link (`O_NOFOLLOW`);
//! new files are created with `O_EXCL` (a planted symlink or file makes the
//! creation fail instead of being written through); existing files are
//! opened with `O_NONBLOCK` (a FIFO cannot hang the open) and must be
//! regular files; reads are bounded. [`walk`] opens an absolute path
//! component by component, none of them a symbolic link, and reports each
//! component's owner and mode so that callers can decide who could have
//! changed the path; [`open_beneath`] walks a relative path the same way
//! below a directory (the equivalent of `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, on any kernel).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, openat, renameat, FcntlArg, OFlag};
use nix::sys::stat::{fstat, mkdirat, FileStat, Mode, SFlag};

/// Errors of opening an existing file that must be a regular file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// The open (or read) failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// It is not a regular file (a symbolic link is not followed).
    #[error("is a {0}, not a regular file (not followed, not read)")]
    NotRegular(&'static str),
    /// It is larger than the caller's bound.
    #[error("is larger than {0} bytes (not read)")]
    TooLarge(u64),
}

impl OpenError {
    /// Whether the file does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, OpenError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

fn io_err(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// What kind of file `st` describes, for messages.
pub(crate) fn kind(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symbolic link",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        _ => "special file",
    }
}

fn is_regular(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
}

/// The status of an open descriptor.
pub(crate) fn stat(fd: impl AsFd) -> io::Result<FileStat> {
    fstat(fd).map_err(io_err)
}

/// Opens the directory at `path`, following symbolic links (for paths that
/// only root's configuration names, such as the state directory).
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags(OFlag::O_DIRECTORY | OFlag::O_CLOEXEC))
        .open(path)?;
    Ok(OwnedFd::from(f))
}

fn libc_flags(f: OFlag) -> i32 {
    f.bits()
}

/// Opens directory `name` (one component) in `dir`; a symbolic link is not
/// followed (`ELOOP`), anything else than a directory is `ENOTDIR`.
pub(crate) fn open_dir_at(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)
}

/// Creates directory `name` in `dir` with `mode` (an existing entry is
/// fine) and opens it without following a symbolic link. Returns whether
/// this call created it.
pub(crate) fn mkdir_open_at(
    dir: impl AsFd,
    name: &OsStr,
    mode: Mode,
) -> io::Result<(OwnedFd, bool)> {
    let created = match mkdirat(dir.as_fd(), name, mode) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(io_err(e)),
    };
    Ok((open_dir_at(dir, name)?, created))
}

/// The plain names of `rel`; `None` if it has anything else (a root, `.`,
/// `..`, a prefix) or is empty.
pub(crate) fn plain_components(rel: &Path) -> Option<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Opens the directory `rel` below `dir`, component by component, none of
/// them followed when it is a symbolic link, never leaving `dir` (`rel` has
/// plain names only, else [`WalkError::NotPlain`]). With `create`, missing
/// directories are made with that mode. An empty `rel` opens `dir` itself
/// again. `base` is `dir`'s path, for messages.
pub(crate) fn open_beneath(
    dir: impl AsFd,
    base: &Path,
    rel: &Path,
    create: Option<Mode>,
) -> Result<OwnedFd, WalkError> {
    let names: Vec<&OsStr> = if rel.as_os_str().is_empty() {
        Vec::new()
    } else {
        plain_components(rel).ok_or_else(|| WalkError::NotPlain(base.join(rel)))?
    };
    let mut cur = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| WalkError::Io {
        path: base.to_path_buf(),
        source: io_err(e),
    })?;
    let mut here = base.to_path_buf();
    for name in names {
        here.push(name);
        cur = step_into(&cur, name, create, &here)?.0;
    }
    Ok(cur)
}

/// Opens (and with `create` makes) directory `name` in `dir` without
/// following a symbolic link; `here` is its path, for messages.
fn step_into(
    dir: impl AsFd,
    name: &OsStr,
    create: Option<Mode>,
    here: &Path,
) -> Result<(OwnedFd, bool), WalkError> {
    let opened = match create {
        Some(mode) => mkdir_open_at(dir.as_fd(), name, mode),
        None => open_dir_at(dir.as_fd(), name).map(|fd| (fd, false)),
    };
    match opened {
        Ok(x) => Ok(x),
        Err(e)
            if e.raw_os_error() == Some(Errno::ELOOP as i32)
                || e.raw_os_error() == Some(Errno::ENOTDIR as i32) =>
        {
            // O_NOFOLLOW | O_DIRECTORY on a symbolic link gives ENOTDIR
            // (or ELOOP): say which it is.
            let is_link = nix::sys::stat::fstatat(
                dir.as_fd(),
                name,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|s| kind(&s) == "symbolic link");
            Err(if is_link {
                WalkError::Symlink(here.to_path_buf())
            } else {
                WalkError::NotDir(here.to_path_buf())
            })
        }
        Err(source) => Err(WalkError::Io {
            path: here.to_path_buf(),
            source,
        }),
    }
}

/// One component of a [`walk`]: its path so far, its open descriptor and
/// its status.
#[derive(Debug)]
pub(crate) struct Step {
    /// The path up to and including this component (`/` first).
    pub(crate) path: PathBuf,
    /// The directory, open.
    pub(crate) fd: OwnedFd,
    /// Its owner, group and mode.
    pub(crate) stat: FileStat,
    /// Whether this walk created it.
    pub(crate) created: bool,
}

/// Why a [`walk`] stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WalkError {
    /// The path is not absolute or has `.`/`..` components.
    #[error("{0}: not an absolute path without `.` or `..`")]
    NotPlain(PathBuf),
    /// A component is a symbolic link.
    #[error(
        "{0} is a symbolic link, which is not followed here: give the real path (`readlink -f`)"
    )]
    Symlink(PathBuf),
    /// A component is not a directory.
    #[error("{0} is not a directory")]
    NotDir(PathBuf),
    /// Another error on a component.
    #[error("{path}: {source}")]
    Io {
        /// The component.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl WalkError {
    /// Whether a component does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, WalkError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Opens the absolute `path` as a directory from `/`, one component at a
/// time with `O_NOFOLLOW` (a symbolic link anywhere is refused), creating
/// missing components with mode `create` when given. Returns every step,
/// `/` first and the directory itself last.
pub(crate) fn walk(path: &Path, create: Option<Mode>) -> Result<Vec<Step>, WalkError> {
    let mut comps = path.components();
    if comps.next() != Some(Component::RootDir) {
        return Err(WalkError::NotPlain(path.to_path_buf()));
    }
    let names: Vec<&OsStr> = match comps.clone().next() {
        None => Vec::new(),
        Some(_) => plain_components(comps.as_path())
            .ok_or_else(|| WalkError::NotPlain(path.to_path_buf()))?,
    };
    let root = PathBuf::from("/");
    let io_at = |p: &Path| {
        let p = p.to_path_buf();
        move |source: io::Error| WalkError::Io { path: p, source }
    };
    let fd = open_dir(&root).map_err(io_at(&root))?;
    let st = stat(&fd).map_err(io_at(&root))?;
    let mut steps = vec![Step {
        path: root,
        fd,
        stat: st,
        created: false,
    }];
    for name in names {
        let Some(last) = steps.last() else { break };
        let here = last.path.join(name);
        let (fd, created) = step_into(&last.fd, name, create, &here)?;
        let st = stat(&fd).map_err(io_at(&here))?;
        steps.push(Step {
            path: here,
            fd,
            stat: st,
            created,
        });
    }
    Ok(steps)
}

/// Opens the existing regular file `name` in `dir` for reading: a symbolic
/// link is not followed, a FIFO or device is not waited for
/// (`O_NONBLOCK`, cleared again once it is known to be a regular file).
pub(crate) fn open_regular_at(dir: impl AsFd, name: &OsStr) -> Result<(File, FileStat), OpenError> {
    let fd = match openat(
        dir,
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) => return Err(OpenError::NotRegular("symbolic link")),
        Err(Errno::ENXIO) => return Err(OpenError::NotRegular("socket or device")),
        Err(e) => return Err(OpenError::Io(io_err(e))),
    };
    regular(fd)
}

/// [`open_regular_at`] for a path: its last component is not followed (the
/// directories above it are).
pub(crate) fn open_regular(path: &Path) -> Result<(File, FileStat), OpenError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags(
            OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        ))
        .open(path);
    match opened {
        Ok(f) => regular(OwnedFd::from(f)),
        Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => {
            Err(OpenError::NotRegular("symbolic link"))
        }
        Err(e) if e.raw_os_error() == Some(Errno::ENXIO as i32) => {
            Err(OpenError::NotRegular("socket or device"))
        }
        Err(e) => Err(OpenError::Io(e)),
    }
}

fn regular(fd: OwnedFd) -> Result<(File, FileStat), OpenError> {
    let st = stat(&fd)?;
    if !is_regular(&st) {
        return Err(OpenError::NotRegular(kind(&st)));
    }
    fcntl(&fd, FcntlArg::F_SETFL(OFlag::empty())).map_err(io_err)?;
    Ok((File::from(fd), st))
}

/// Reads all of `file`, at most `limit` bytes ([`OpenError::TooLarge`] beyond).
pub(crate) fn read_bounded(file: File, limit: u64) -> Result<Vec<u8>, OpenError> {
    let mut buf = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(OpenError::TooLarge(limit));
    }
    Ok(buf)
}

/// Creates the new file `name` in `dir` for writing with `mode`: fails with
/// `EEXIST` when anything (a file, a symbolic link) is already there.
pub(crate) fn create_new_at(dir: impl AsFd, name: &OsStr, mode: Mode) -> io::Result<File> {
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode,
    )
    .map_err(io_err)?;
    Ok(File::from(fd))
}

/// Creates a new temporary file in `dir` named `base`, or `base-1`,
/// `base-2`, ... when that name is taken (by anything: it is never opened,
/// followed or removed). Returns the file and its name.
pub(crate) fn create_temp_at(
    dir: impl AsFd,
    base: &str,
    mode: Mode,
) -> io::Result<(File, OsString)> {
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for n in 0..100u32 {
        let name = if n == 0 {
            OsString::from(base)
        } else {
            OsString::from(format!("{base}-{n}"))
        };
        match create_new_at(dir.as_fd(), &name, mode) {
            Ok(f) => return Ok((f, name)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Renames `from` to `to`, both in `dir` (replacing `to`, which is never
/// followed).
pub(crate) fn rename_at(dir: impl AsFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
    renameat(dir.as_fd(), from, dir.as_fd(), to).map_err(io_err)
}

/// Removes the entry `name` of `dir` (the entry itself, never what a
/// symbolic link points to). For our own temporary files only.
pub(crate) fn unlink_at(dir: impl AsFd, name: &OsStr) -> io::Result<()> {
    nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(io_err)
}

/// fsync of a directory descriptor (makes renames in it durable).
pub(crate) fn sync(fd: impl AsFd) -> io::Result<()> {
    nix::unistd::fsync(fd).map_err(io_err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn regular_files_only_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let d = open_dir(dir.path()).unwrap();
        std::fs::write(dir.path().join("f"), b"hello").unwrap();
        symlink(dir.path().join("f"), dir.path().join("l")).unwrap();
        symlink("/dev/zero", dir.path().join("z")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("p"), Mode::from_bits_truncate(0o600)).unwrap();
        let (f, _) = open_regular_at(&d, OsStr::new("f")).unwrap();
        assert_eq!(read_bounded(f, 5).unwrap(), b"hello");
        let (f, _) = open_regular_at(&d, OsStr::new("f")).unwrap();
        assert!(matches!(read_bounded(f, 4), Err(OpenError::TooLarge(4))));
        for (name, what) in [
            ("l", "symbolic link"),
            ("z", "symbolic link"),
            ("p", "FIFO"),
        ] {
            match open_regular_at(&d, OsStr::new(name)) {
                Err(OpenError::NotRegular(k)) => assert_eq!(k, what, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
            match open_regular(&dir.path().join(name)) {
                Err(OpenError::NotRegular(k)) => assert_eq!(k, what, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(open_regular_at(&d, OsStr::new("nope"))
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn creation_never_writes_through_a_planted_name() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        symlink(&victim, dir.path().join("t")).unwrap();
        let d = open_dir(dir.path()).unwrap();
        let err = create_new_at(&d, OsStr::new("t"), Mode::from_bits_truncate(0o600)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let (mut f, name) = create_temp_at(&d, "t", Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(name, "t-1");
        std::io::Write::write_all(&mut f, b"new").unwrap();
        rename_at(&d, &name, OsStr::new("t")).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(dir.path().join("t")).unwrap(), b"new");
        assert!(!dir.path().join("t").is_symlink());
    }

    #[test]
    fn walks_refuse_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        symlink(dir.path().join("a"), dir.path().join("l")).unwrap();
        let steps = walk(&dir.path().join("a/b"), None).unwrap();
        assert_eq!(steps.last().unwrap().path, dir.path().join("a/b"));
        assert!(matches!(
            walk(&dir.path().join("l/b"), None),
            Err(WalkError::Symlink(p)) if p == dir.path().join("l")
        ));
        assert!(matches!(
            walk(Path::new("relative"), None),
            Err(WalkError::NotPlain(_))
        ));
        let created = walk(
            &dir.path().join("a/new/deeper"),
            Some(Mode::from_bits_truncate(0o755)),
        )
        .unwrap();
        assert!(created.last().unwrap().created);
        let d = open_dir(dir.path()).unwrap();
        assert!(open_beneath(&d, dir.path(), Path::new("a/b"), None).is_ok());
        assert!(matches!(
            open_beneath(&d, dir.path(), Path::new("l/b"), None),
            Err(WalkError::Symlink(p)) if p == dir.path().join("l")
        ));
        assert!(matches!(
            open_beneath(&d, dir.path(), Path::new("../x"), None),
            Err(WalkError::NotPlain(_))
        ));
    }
}
