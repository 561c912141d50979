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
mod keys;
mod load;
mod model;
mod net;
mod platform;
mod raw;
mod service;
mod tomlerr;
mod validate;
mod watch;

pub use error::{ConfigError, Location};
pub use keys::known_keys;
pub use model::*;

use std::path::Path;

/// Default configuration path.
pub const DEFAULT_PATH: &str = "/etc/mcrecover/mcrecover.toml";

/// Read and validate the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, &e))?;
    parse(&src, path)
}

/// Validate configuration text `src` that was read from `path`.
pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
    load::parse(src, path)
}
