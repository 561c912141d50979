//! `mcrecover import-mcp`: convert the operator's MCP service definitions
//! (`~/.config/mcp/services/*.toml`) into mcrecover `[services.*]` tables,
//! either as a complete configuration skeleton or merged into an existing
//! configuration (keeping its platform, check defaults, stages and checks).
//!
//! The output is TOML text with `# warning:` comments for everything that
//! could not be mapped; it is validated with [`crate::config::parse`] before
//! it is handed back. The format and rules are documented in
//! `docs/import-mcp.md`.

mod emit;
pub mod mcp;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::config::{self, Config, ConfigError};
pub use mcp::{McpComponent, McpRoute, McpService};

/// Node used when neither `--node` nor the merged config's `platform.node` names one.
pub const DEFAULT_NODE: &str = "rift";

/// Name of the stage that takes imported services the runbook's stages do not name
/// (skeleton mode only).
pub const OTHER_STAGE: &str = "other";

/// The runbook's four stages: name, members, `on_failure` (skeleton mode).
pub const RUNBOOK_STAGES: &[(&str, &[&str], &str)] = &[
    ("foundation", &["mcns"], "block"),
    (
        "core",
        &[
            "mc-proxy",
            "mcr-api",
            "mcr-web",
            "metacrypt-api",
            "metacrypt-web",
        ],
        "block",
    ),
    ("management", &["mcp-master"], "block"),
    (
        "services",
        &["mcq", "mcdoc", "mcat", "kls", "sgardd", "exo"],
        "continue",
    ),
];

/// Service keys the import replaces in a merged service (its container keys).
const CONTAINER_KEYS: &[&str] = &[
    "image",
    "container_name",
    "network",
    "ports",
    "volumes",
    "user",
    "command",
    "env",
    "restart",
    "external",
];

/// Restart policies mcrecover accepts.
const RESTART_POLICIES: &[&str] = &["no", "on-failure", "always", "unless-stopped"];

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file or directory could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A definition file is not valid TOML.
    #[error("{}: not valid TOML: {message}", path.display())]
    Toml {
        /// The definition file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A definition file is TOML but not an MCP service definition.
    #[error("{}: {message}", path.display())]
    Definition {
        /// The definition file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The configuration given with `--merge` is invalid.
    #[error("the configuration to merge into is invalid: {0}")]
    Merge(ConfigError),
    /// No definition produced a container for this node.
    #[error("no service to import for node `{node}` (see the warnings)")]
    Nothing {
        /// The node imported for.
        node: String,
    },
    /// The generated configuration does not pass `check-config`.
    #[error("the generated configuration is invalid (nothing written): {error}\n  generated line: {line}")]
    Invalid {
        /// The validation error (its location is in the generated text).
        error: ConfigError,
        /// The generated line the error points at.
        line: String,
    },
}

/// Something of a definition that could not be carried over, or a choice made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Definition file name (e.g. `metacrypt.toml`) or mcrecover service name.
    pub subject: String,
    /// What happened.
    pub message: String,
}

impl fmt::Display for Warning {
    /// One line without control characters (they are shown escaped): the
    /// text comes from the definitions, which the platform user owns, and
    /// goes into `# warning:` comments of the output and onto the terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            one_line(&self.subject),
            one_line(&self.message)
        )
    }
}

/// `text` on one line: control characters (line breaks, escape sequences)
/// written as escapes (`\n`, `\u{1b}`), so the text can neither end a TOML
/// comment nor drive a terminal.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// The configuration to merge into: its text, path, raw tables and validated form.
#[derive(Debug, Clone)]
pub struct Base {
    /// Where it was read from.
    pub path: PathBuf,
    /// The raw document (comments are not kept).
    pub raw: Table,
    /// The validated configuration.
    pub config: Config,
}

impl Base {
    /// Read and validate the configuration at `path`.
    pub fn load(path: &Path) -> Result<Base, ImportError> {
        let src = std::fs::read_to_string(path).map_err(|source| ImportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Base::parse(&src, path)
    }

    /// Validate configuration text `src` read from `path`.
    pub fn parse(src: &str, path: &Path) -> Result<Base, ImportError> {
        let config = config::parse(src, path).map_err(ImportError::Merge)?;
        let raw: Table = src.parse().map_err(|e: toml::de::Error| {
            ImportError::Merge(ConfigError::at(path, None, e.to_string(), None))
        })?;
        Ok(Base {
            path: path.to_path_buf(),
            raw,
            config,
        })
    }
}

/// One container converted from an MCP component.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// mcrecover service name = container name (`<service>-<component>`, or
    /// `<service>` when the component has the service's name).
    pub key: String,
    /// MCP service name.
    pub service: String,
    /// MCP component name.
    pub component: String,
    /// Definition file name.
    pub file: String,
    /// Image (prefix stripped when it matches the merged config's `image_prefix`).
    pub image: String,
    /// Network, when the definition names one.
    pub network: Option<String>,
    /// `--user`.
    pub user: Option<String>,
    /// Restart policy, when set and valid.
    pub restart: Option<String>,
    /// Published ports.
    pub ports: Vec<String>,
    /// Volumes.
    pub volumes: Vec<String>,
    /// Command (`cmd`).
    pub command: Vec<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The configuration text (TOML with comments).
    pub text: String,
    /// The same text, validated.
    pub config: Config,
    /// The converted containers, in import order.
    pub converted: Vec<Converted>,
    /// Everything that was skipped or could not be mapped.
    pub warnings: Vec<Warning>,
}

/// Read every definition under `inputs` (directories: their `*.toml` files in name
/// order; files: themselves), in argument order.
pub fn read_definitions(inputs: &[PathBuf]) -> Result<Vec<McpService>, ImportError> {
    let mut defs = Vec::new();
    for input in inputs {
        for file in mcp::definition_files(input)? {
            defs.push(mcp::read_file(&file)?);
        }
    }
    Ok(defs)
}

/// The whole command: read `inputs`, optionally merge into the config at `merge`,
/// convert for `node`, validate as if written to `out` (default
/// [`config::DEFAULT_PATH`]).
pub fn import_paths(
    inputs: &[PathBuf],
    merge: Option<&Path>,
    node: Option<&str>,
    out: Option<&Path>,
) -> Result<Imported, ImportError> {
    let defs = read_definitions(inputs)?;
    let base = merge.map(Base::load).transpose()?;
    let out = out.unwrap_or(Path::new(config::DEFAULT_PATH));
    convert(&defs, base.as_ref(), node, out)
}

/// Convert definitions into a configuration (merged into `base` when given) and
/// validate it as the file `out`.
pub fn convert(
    defs: &[McpService],
    base: Option<&Base>,
    node: Option<&str>,
    out: &Path,
) -> Result<Imported, ImportError> {
    let node = node
        .map(str::to_string)
        .or_else(|| base.and_then(|b| b.config.platform.node.clone()))
        .unwrap_or_else(|| DEFAULT_NODE.to_string());
    let prefix = base
        .map(|b| normalized_prefix(&b.config.platform.image_prefix))
        .unwrap_or_default();
    let mut warnings = Vec::new();
    let existing: Vec<(String, bool)> = base
        .map(|b| {
            b.config
                .services
                .iter()
                .map(|(k, s)| (k.clone(), s.is_external()))
                .collect()
        })
        .unwrap_or_default();
    let converted = convert_all(defs, &node, &prefix, &existing, &mut warnings);
    if converted.is_empty() {
        return Err(ImportError::Nothing { node });
    }
    let doc = emit::assemble(base, &node, &converted, &mut warnings);
    let text = emit::render(&doc, base.map(|b| b.path.as_path()), &node, &warnings);
    let config = config::parse(&text, out).map_err(|error| {
        let line = error
            .location
            .and_then(|l| text.lines().nth(l.line.saturating_sub(1)))
            .unwrap_or("")
            .to_string();
        ImportError::Invalid { error, line }
    })?;
    Ok(Imported {
        text,
        config,
        converted,
        warnings,
    })
}

/// `image_prefix` as the config applies it (with a trailing `/`), or empty.
fn normalized_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

/// The container name of a component: `<service>-<component>`, or `<service>`
/// when the component is named like its service.
pub fn container_name(service: &str, component: &str) -> String {
    if service == component {
        service.to_string()
    } else {
        format!("{service}-{component}")
    }
}

fn convert_all(
    defs: &[McpService],
    node: &str,
    prefix: &str,
    existing: &[(String, bool)],
    warnings: &mut Vec<Warning>,
) -> Vec<Converted> {
    let mut out: Vec<Converted> = Vec::new();
    for def in defs {
        let file = def.file.file_name().map_or_else(
            || def.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut warn = |message: String| {
            warnings.push(Warning {
                subject: file.clone(),
                message,
            });
        };
        for key in &def.unknown {
            warn(format!(
                "service `{}`: unknown key `{key}` ignored",
                def.name
            ));
        }
        // Entries of the merged config that a skipped definition would have
        // replaced: containers (which may have to go) and external entries
        // (another node's service, checked from here: as intended).
        let mut kept = String::new();
        for external in [false, true] {
            let names: Vec<String> = def
                .components
                .iter()
                .map(|c| container_name(&def.name, &c.name))
                .filter(|k| existing.iter().any(|(e, x)| e == k && *x == external))
                .map(|k| format!("`{k}`"))
                .collect();
            if names.is_empty() {
                continue;
            }
            kept.push_str(&format!(
                "; the merged config's {} left as is ({})",
                names.join(", "),
                if external {
                    "external: checked from this node, never started here"
                } else {
                    "remove by hand if it must not run"
                }
            ));
        }
        if !def.active {
            warn(format!(
                "service `{}` is inactive (active = false): skipped{kept}",
                def.name
            ));
            continue;
        }
        match &def.node {
            Some(n) if n != node => {
                warn(format!(
                    "service `{}` runs on node `{n}`, not `{node}`: skipped (use --node {n} to import it){kept}",
                    def.name
                ));
                continue;
            }
            Some(_) => {}
            None => warn(format!(
                "service `{}` names no node: imported for node `{node}`",
                def.name
            )),
        }
        if let Some(tier) = &def.tier {
            warn(format!(
                "service `{}`: tier = {tier} has no mcrecover equivalent (stages order the boot): ignored",
                def.name
            ));
        }
        if def.components.is_empty() {
            warn(format!(
                "service `{}` has no [[components]]: nothing imported",
                def.name
            ));
        }
        for comp in &def.components {
            let key = container_name(&def.name, &comp.name);
            if out.iter().any(|c| c.key == key) {
                warn(format!(
                    "container `{key}` is defined more than once: kept the first definition, skipped this one"
                ));
                continue;
            }
            let c = convert_component(def, comp, key, &file, prefix, &mut warn);
            out.push(c);
        }
    }
    out
}

fn convert_component(
    def: &McpService,
    comp: &McpComponent,
    key: String,
    file: &str,
    prefix: &str,
    warn: &mut impl FnMut(String),
) -> Converted {
    for k in &comp.unknown {
        warn(format!("`{key}`: unknown component key `{k}` ignored"));
    }
    if let Some(tier) = &comp.tier {
        warn(format!(
            "`{key}`: tier = {tier} has no mcrecover equivalent (stages order the boot): ignored"
        ));
    }
    for r in &comp.routes {
        warn(format!(
            "`{key}`: route `{}` (port {}, mode {}, hostname {}{}) not mapped: the MCP agent assigns \
             route host ports; add a `ports` entry and a check by hand if it must be reachable",
            r.name.as_deref().unwrap_or("?"),
            r.port.map_or_else(|| "?".to_string(), |p| p.to_string()),
            r.mode.as_deref().unwrap_or("?"),
            r.hostname.as_deref().unwrap_or("?"),
            if r.public { ", public" } else { "" },
        ));
    }
    let image = match comp.image.strip_prefix(prefix) {
        Some(short) if !prefix.is_empty() && !short.contains('/') && !short.is_empty() => {
            short.to_string()
        }
        _ => comp.image.clone(),
    };
    let restart = match comp.restart.as_deref() {
        Some(r) if RESTART_POLICIES.contains(&r) => Some(r.to_string()),
        Some(r) => {
            warn(format!(
                "`{key}`: restart = \"{r}\" is not one of {}: left at the default (unless-stopped)",
                RESTART_POLICIES.join(", ")
            ));
            None
        }
        None => None,
    };
    let mut ports = comp.ports.clone();
    if comp.network.as_deref() == Some("host") && !ports.is_empty() {
        warn(format!(
            "`{key}`: ports {ports:?} dropped: with network = \"host\" the container binds host ports itself"
        ));
        ports.clear();
    }
    Converted {
        key,
        service: def.name.clone(),
        component: comp.name.clone(),
        file: file.to_string(),
        image,
        network: comp.network.clone(),
        user: comp.user.clone(),
        restart,
        ports,
        volumes: comp.volumes.clone(),
        command: comp.cmd.clone(),
        env: comp.env.clone(),
    }
}

impl Converted {
    /// The container keys of the mcrecover service table.
    fn container_table(&self) -> Table {
        let mut t = Table::new();
        let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
        t.insert("image".into(), Value::String(self.image.clone()));
        if let Some(n) = &self.network {
            t.insert("network".into(), Value::String(n.clone()));
        }
        if let Some(u) = &self.user {
            t.insert("user".into(), Value::String(u.clone()));
        }
        if !self.ports.is_empty() {
            t.insert("ports".into(), strings(&self.ports));
        }
        if !self.volumes.is_empty() {
            t.insert("volumes".into(), strings(&self.volumes));
        }
        if !self.command.is_empty() {
            t.insert("command".into(), strings(&self.command));
        }
        if !self.env.is_empty() {
            let env: Table = self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            t.insert("env".into(), Value::Table(env));
        }
        if let Some(r) = &self.restart {
            t.insert("restart".into(), Value::String(r.clone()));
        }
        t
    }
}
