//! Configuration errors with a source location and an optional hint.

use std::fmt;
use std::path::{Path, PathBuf};

use super::files::{FileKind, FileRef};

/// A 1-based line and column in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
}

impl Location {
    /// Compute the location of byte offset `offset` in `src`.
    pub fn from_offset(src: &str, offset: usize) -> Location {
        let offset = offset.min(src.len());
        let before = &src[..floor_char_boundary(src, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        Location { line, col }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A configuration error: where, what, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// Where in the file (absent for whole-file problems such as I/O).
    pub location: Option<Location>,
    /// What is wrong.
    pub message: String,
    /// What was probably meant, or what to do.
    pub help: Option<String>,
}

impl ConfigError {
    /// An error at a location.
    pub fn at(
        file: &Path,
        location: Option<Location>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            location,
            message: message.into(),
            help,
        }
    }

    /// The file could not be read.
    pub fn io(file: &Path, err: &std::io::Error) -> Self {
        ConfigError::at(
            file,
            None,
            format!("cannot read configuration: {err}"),
            None,
        )
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(Location { line, col }) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)?
            }
            None => write!(f, "{}: {}", self.file.display(), self.message)?,
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// The source text and path being parsed: turns byte spans into located
/// errors, and collects the files the configuration refers to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// The configuration text.
    pub(crate) src: &'a str,
    /// Where it was read from.
    pub(crate) path: &'a Path,
    /// Files named so far (see [`super::files`]).
    pub(crate) files: &'a std::cell::RefCell<Vec<FileRef>>,
}

impl Ctx<'_> {
    /// Note that the value at `span` (key `key`) names a file of `kind`.
    pub(crate) fn refer(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        path: &Path,
        kind: FileKind,
    ) {
        self.files.borrow_mut().push(FileRef {
            key: key.to_string(),
            path: path.to_path_buf(),
            kind,
            location: Location::from_offset(self.src, span.start),
        });
    }

    /// An error at byte span `span` with a help text.
    pub(crate) fn err(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> ConfigError {
        ConfigError::at(
            self.path,
            Some(Location::from_offset(self.src, span.start)),
            message,
            Some(help.into()),
        )
    }

    /// The 1-based line of byte offset `offset` (for "first defined at line N" hints).
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        Location::from_offset(self.src, offset).line
    }
}
