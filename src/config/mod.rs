//! Step 1 of the flow: read the TOML configuration, validate it completely and
//! produce a [`Config`]. Every error names `file:line:col`, what is wrong and,
//! where possible, what was meant. Nothing downstream runs on a config error.
//!
//! The schema is documented in `docs/config.md`; `examples/metacircular.toml`
//! is a complete example.

mod checks;
mod duration;
mod error;
mod fields;
pub mod files;
mod graph;
mod keys;
mod load;
mod metrics;
mod model;
mod net;
mod platform;
mod raw;
mod service;
mod tomlerr;
mod validate;
mod watch;

pub use error::{ConfigError, Location};
pub use files::{FileKind, FileProblem, FileRef, Severity};
pub use keys::known_keys;
pub use metrics::{MetricsConfig, DEFAULT_TEXTFILE_INTERVAL};
pub use model::*;

use std::path::Path;

/// Default configuration path.
pub const DEFAULT_PATH: &str = "/etc/mcrecover/mcrecover.toml";

/// Read and validate the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_files(path).map(|l| l.config)
}

/// Validate configuration text `src` that was read from `path`.
pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_with_files(src, path).map(|l| l.config)
}

/// A validated configuration with the files it names (CA bundles,
/// programs), which loading does not touch.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// The files it names, in file order.
    pub files: Vec<FileRef>,
}

impl Loaded {
    /// What this machine says about the named files ([`files::inspect`]).
    pub fn inspect_files(&self) -> Vec<FileProblem> {
        files::inspect(&self.config.source, &self.files)
    }
}

/// [`load`], keeping the files the configuration names.
pub fn load_with_files(path: &Path) -> Result<Loaded, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, &e))?;
    parse_with_files(&src, path)
}

/// [`parse`], keeping the files the configuration names.
pub fn parse_with_files(src: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let (config, files) = load::parse(src, path)?;
    Ok(Loaded { config, files })
}
