//! The testbed's error type: every fallible operation of the crate returns [`TestbedError`].

use std::path::PathBuf;

/// Why a testbed operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// The machine lacks something the testbed needs (root, a package, a binary).
    #[error("testbed prerequisite missing: {0}")]
    Prerequisite(String),
    /// A file or directory operation on the host failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("write", "create dir", ...).
        action: &'static str,
        /// The host path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A helper program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program's name.
        program: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A helper program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for the message.
        command: String,
        /// Its exit status, rendered.
        status: String,
        /// The tail of its stderr (and stdout when stderr was empty).
        stderr: String,
    },
    /// The sandbox did not reach the expected state in time.
    #[error("timed out after {seconds}s waiting for {what}{detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The wait's limit.
        seconds: u64,
        /// Extra diagnostics (last state seen, log tail), may be empty.
        detail: String,
    },
    /// The sandbox's systemd or its namespace PID 1 died or misbehaved.
    #[error("sandbox failed: {0}")]
    Sandbox(String),
    /// Generating the run-time test CA failed.
    #[error("test CA: {0}")]
    Ca(#[from] rcgen::Error),
    /// Reading or writing the sandbox state file failed.
    #[error("state file {path}: {source}")]
    State {
        /// The state file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

impl TestbedError {
    /// Builds an [`TestbedError::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
