//! Reading the operator's MCP service definitions
//! (`~/.config/mcp/services/<service>.toml`) into plain structs, keeping every
//! key that has no mcrecover equivalent so the converter can warn about it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::ImportError;

/// One MCP service definition file.
#[derive(Debug, Clone, PartialEq)]
pub struct McpService {
    /// The file it was read from.
    pub file: PathBuf,
    /// Top-level `name`.
    pub name: String,
    /// Top-level `node` (`None` when absent).
    pub node: Option<String>,
    /// Top-level `active` (absent counts as `true`).
    pub active: bool,
    /// Top-level `tier`, as written (no mcrecover equivalent).
    pub tier: Option<String>,
    /// `[[components]]`, in file order.
    pub components: Vec<McpComponent>,
    /// Top-level keys this importer does not know, sorted.
    pub unknown: Vec<String>,
}

/// One `[[components]]` entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct McpComponent {
    /// Component `name` (e.g. `api`).
    pub name: String,
    /// Full image reference.
    pub image: String,
    /// podman network (`host`, `bridge` or a network name).
    pub network: Option<String>,
    /// `--user`.
    pub user: Option<String>,
    /// podman restart policy as written.
    pub restart: Option<String>,
    /// Published ports, as written.
    pub ports: Vec<String>,
    /// Volumes, as written.
    pub volumes: Vec<String>,
    /// Command arguments after the image.
    pub cmd: Vec<String>,
    /// Environment (`env` as a table, or as an array of `KEY=VALUE`).
    pub env: BTreeMap<String, String>,
    /// Component-level `tier`, as written.
    pub tier: Option<String>,
    /// `[[components.routes]]`.
    pub routes: Vec<McpRoute>,
    /// Component keys this importer does not know, sorted.
    pub unknown: Vec<String>,
}

/// One `[[components.routes]]` entry (mc-proxy route; host port assigned by the agent).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct McpRoute {
    /// Route `name`.
    pub name: Option<String>,
    /// Container `port`.
    pub port: Option<i64>,
    /// `mode`: `l4` or `l7`.
    pub mode: Option<String>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `public`.
    pub public: bool,
}

const SERVICE_KEYS: &[&str] = &["name", "node", "active", "tier", "components"];
const COMPONENT_KEYS: &[&str] = &[
    "name", "image", "network", "user", "restart", "ports", "volumes", "cmd", "env", "tier",
    "routes",
];

/// Read one definition file.
pub fn read_file(path: &Path) -> Result<McpService, ImportError> {
    let src = std::fs::read_to_string(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&src, path)
}

/// Every `*.toml` file of `dir`, sorted by name; a file argument is returned as is.
pub fn definition_files(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let io = |source| ImportError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.is_dir() {
        // A single file, or a missing path (reported when it is read).
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parse definition text `src` read from `path`.
pub fn parse(src: &str, path: &Path) -> Result<McpService, ImportError> {
    let table: Table = src
        .parse()
        .map_err(|e: toml::de::Error| ImportError::Toml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let f = Fields {
        path,
        at: String::new(),
    };
    let name = f
        .string(&table, "name")?
        .ok_or_else(|| f.err("missing top-level `name`"))?;
    let node = f.string(&table, "node")?;
    let active = match table.get("active") {
        None => true,
        Some(Value::Boolean(b)) => *b,
        Some(_) => return Err(f.err("`active` must be true or false")),
    };
    let tier = table.get("tier").map(scalar_text);
    let mut components = Vec::new();
    match table.get("components") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Value::Table(t) = item else {
                    return Err(f.err("`components` must be an array of tables ([[components]])"));
                };
                let cf = Fields {
                    path,
                    at: format!("components[{i}]: "),
                };
                components.push(component(&cf, t)?);
            }
        }
        Some(_) => return Err(f.err("`components` must be an array of tables ([[components]])")),
    }
    Ok(McpService {
        file: path.to_path_buf(),
        name,
        node,
        active,
        tier,
        components,
        unknown: unknown_keys(&table, SERVICE_KEYS),
    })
}

fn component(f: &Fields<'_>, t: &Table) -> Result<McpComponent, ImportError> {
    let name = f
        .string(t, "name")?
        .ok_or_else(|| f.err("missing component `name`"))?;
    let image = f
        .string(t, "image")?
        .ok_or_else(|| f.err(&format!("component `{name}` has no `image`")))?;
    let env = match t.get("env") {
        None => BTreeMap::new(),
        Some(Value::Table(env)) => env
            .iter()
            .map(|(k, v)| (k.clone(), scalar_text(v)))
            .collect(),
        Some(Value::Array(_)) => f
            .strings(t, "env")?
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => Ok((k.to_string(), v.to_string())),
                None => Err(f.err(&format!("`env` entry `{kv}` is not KEY=VALUE"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(f.err("`env` must be a table or an array of \"KEY=VALUE\" strings"));
        }
    };
    let mut routes = Vec::new();
    match t.get("routes") {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                let Value::Table(r) = item else {
                    return Err(f.err("`routes` must be an array of tables"));
                };
                routes.push(McpRoute {
                    name: f.string(r, "name")?,
                    port: r.get("port").and_then(Value::as_integer),
                    mode: f.string(r, "mode")?,
                    hostname: f.string(r, "hostname")?,
                    public: r.get("public").and_then(Value::as_bool).unwrap_or(false),
                });
            }
        }
        Some(_) => return Err(f.err("`routes` must be an array of tables")),
    }
    Ok(McpComponent {
        name,
        image,
        network: f.string(t, "network")?,
        user: f.string(t, "user")?,
        restart: f.string(t, "restart")?,
        ports: f.strings(t, "ports")?,
        volumes: f.strings(t, "volumes")?,
        cmd: f.strings(t, "cmd")?,
        env,
        tier: t.get("tier").map(scalar_text),
        routes,
        unknown: unknown_keys(t, COMPONENT_KEYS),
    })
}

/// Strings as themselves, anything else as TOML text.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn unknown_keys(t: &Table, known: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = t
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Typed field access with errors naming the file and the component.
struct Fields<'a> {
    path: &'a Path,
    at: String,
}

impl Fields<'_> {
    fn err(&self, message: &str) -> ImportError {
        ImportError::Definition {
            path: self.path.to_path_buf(),
            message: format!("{}{message}", self.at),
        }
    }

    fn string(&self, t: &Table, key: &str) -> Result<Option<String>, ImportError> {
        match t.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(&format!("`{key}` must be a string"))),
        }
    }

    fn strings(&self, t: &Table, key: &str) -> Result<Vec<String>, ImportError> {
        match t.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(self.err(&format!("`{key}` must be an array of strings"))),
                })
                .collect(),
            Some(_) => Err(self.err(&format!("`{key}` must be an array of strings"))),
        }
    }
}
