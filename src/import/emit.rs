//! Building the output document (merged or skeleton) and writing it as TOML
//! text in a fixed, readable order with `# warning:` / `# TODO:` comments.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use toml::{Table, Value};

use super::{one_line, Base, Converted, Warning, CONTAINER_KEYS, OTHER_STAGE, RUNBOOK_STAGES};

/// Arrays whose one-line form is longer than this are written one element per line.
const WRAP_AT: usize = 88;

const PLATFORM_ORDER: &[&str] = &[
    "name",
    "node",
    "mode",
    "user",
    "uid",
    "gid",
    "home",
    "backend",
    "image_prefix",
    "pull",
    "image_archive",
];
const DEFAULTS_ORDER: &[&str] = &[
    "interval",
    "timeout",
    "failure_threshold",
    "success_threshold",
    "start_period",
];
const STAGE_ORDER: &[&str] = &["name", "services", "timeout", "on_failure"];
const SERVICE_ORDER: &[&str] = &[
    "description",
    "external",
    "image",
    "container_name",
    "network",
    "user",
    "ports",
    "volumes",
    "command",
    "env",
    "restart",
    "podman_args",
    "after",
    "requires",
];
const CHECK_ORDER: &[&str] = &[
    "kind",
    "name",
    "server",
    "query",
    "record",
    "transport",
    "expect_address",
    "expect_cidr",
    "url",
    "address",
    "service",
    "tls",
    "status",
    "body_contains",
    "connect_to",
    "server_name",
    "ca_file",
    "insecure",
    "argv",
    "user",
    "interval",
    "timeout",
    "failure_threshold",
    "success_threshold",
    "start_period",
];

/// The output document before it is written.
#[derive(Debug)]
pub(super) struct Doc {
    platform: Table,
    check_defaults: Option<Table>,
    stages: Vec<Table>,
    /// Services in output order (stage order, then the rest by name).
    services: Vec<(String, Table)>,
    /// True when the platform and stages are the skeleton (no `--merge`).
    skeleton: bool,
}

fn table_of(v: Option<&Value>) -> Option<Table> {
    match v {
        Some(Value::Table(t)) => Some(t.clone()),
        _ => None,
    }
}

fn skeleton_platform(node: &str) -> Table {
    let mut t = Table::new();
    let s = |v: &str| Value::String(v.to_string());
    t.insert("name".into(), s("metacircular"));
    t.insert("node".into(), s(node));
    t.insert("mode".into(), s("rootless"));
    t.insert("user".into(), s("mcp"));
    t.insert("uid".into(), Value::Integer(850));
    t.insert("gid".into(), Value::Integer(850));
    t.insert("home".into(), s("/srv/mcp"));
    t.insert("backend".into(), s("auto"));
    t.insert("pull".into(), s("never"));
    t
}

fn stage_table(name: &str, members: &[String], on_failure: &str) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), Value::String(name.to_string()));
    t.insert(
        "services".into(),
        Value::Array(members.iter().cloned().map(Value::String).collect()),
    );
    t.insert("timeout".into(), Value::String("120s".into()));
    t.insert("on_failure".into(), Value::String(on_failure.to_string()));
    t
}

fn stage_members(stage: &Table) -> Vec<String> {
    match stage.get("services") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Merge the converted containers into `base` (or a skeleton) and decide stages.
pub(super) fn assemble(
    base: Option<&Base>,
    node: &str,
    converted: &[Converted],
    warnings: &mut Vec<Warning>,
) -> Doc {
    let raw = base.map(|b| &b.raw);
    let platform = raw
        .and_then(|r| table_of(r.get("platform")))
        .unwrap_or_else(|| skeleton_platform(node));
    let check_defaults = raw.and_then(|r| table_of(r.get("check_defaults")));
    let mut stages: Vec<Table> = match raw.and_then(|r| r.get("stages")) {
        Some(Value::Array(a)) => a.iter().filter_map(|v| table_of(Some(v))).collect(),
        _ => Vec::new(),
    };
    let mut services: BTreeMap<String, Table> = raw
        .and_then(|r| table_of(r.get("services")))
        .map(|t| {
            t.into_iter()
                .filter_map(|(k, v)| table_of(Some(&v)).map(|t| (k, t)))
                .collect()
        })
        .unwrap_or_default();

    for c in converted {
        let table = match services.get_mut(&c.key) {
            Some(existing) => {
                if existing.get("external").and_then(Value::as_bool) == Some(true) {
                    warnings.push(Warning {
                        subject: c.key.clone(),
                        message: "was `external = true` in the merged config: now a container \
                                  (from the MCP definition)"
                            .into(),
                    });
                }
                for k in CONTAINER_KEYS {
                    existing.remove(*k);
                }
                existing
            }
            None => {
                let mut t = Table::new();
                let what = if c.key == c.service {
                    c.service.clone()
                } else {
                    format!("{}: component {}", c.service, c.component)
                };
                t.insert(
                    "description".into(),
                    Value::String(format!("{what} (imported from {})", c.file)),
                );
                services.entry(c.key.clone()).or_insert(t)
            }
        };
        table.extend(c.container_table());
    }

    let skeleton = base.is_none();
    if skeleton {
        let keys: Vec<String> = converted.iter().map(|c| c.key.clone()).collect();
        let mut placed = BTreeSet::new();
        for (name, members, on_failure) in RUNBOOK_STAGES {
            let m: Vec<String> = members
                .iter()
                .filter(|s| keys.iter().any(|k| k == *s))
                .map(|s| s.to_string())
                .collect();
            if !m.is_empty() {
                placed.extend(m.iter().cloned());
                stages.push(stage_table(name, &m, on_failure));
            }
        }
        let rest: Vec<String> = keys.into_iter().filter(|k| !placed.contains(k)).collect();
        for k in &rest {
            warnings.push(Warning {
                subject: k.clone(),
                message: format!(
                    "not in the runbook's stages: put in the last stage `{OTHER_STAGE}`; move it \
                     where it belongs"
                ),
            });
        }
        if !rest.is_empty() {
            stages.push(stage_table(OTHER_STAGE, &rest, "continue"));
        }
    } else {
        let staged: BTreeSet<String> = stages.iter().flat_map(stage_members).collect();
        let last = stages.len().saturating_sub(1);
        for c in converted {
            if staged.contains(&c.key) {
                continue;
            }
            let Some(stage) = stages.get_mut(last) else {
                break;
            };
            let stage_name = stage
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            if let Some(Value::Array(a)) = stage.get_mut("services") {
                a.push(Value::String(c.key.clone()));
            }
            warnings.push(Warning {
                subject: c.key.clone(),
                message: format!(
                    "new service, in no stage of the merged config: appended to the last stage \
                     `{stage_name}`; move it where it belongs"
                ),
            });
        }
    }

    let mut order: Vec<String> = Vec::new();
    for stage in &stages {
        for m in stage_members(stage) {
            if services.contains_key(&m) && !order.contains(&m) {
                order.push(m);
            }
        }
    }
    let rest: Vec<String> = services
        .keys()
        .filter(|k| !order.contains(k))
        .cloned()
        .collect();
    order.extend(rest);
    let services = order
        .into_iter()
        .filter_map(|k| services.remove(&k).map(|t| (k, t)))
        .collect();
    Doc {
        platform,
        check_defaults,
        stages,
        services,
        skeleton,
    }
}

/// Write the document as TOML text.
pub(super) fn render(doc: &Doc, merged: Option<&Path>, node: &str, warnings: &[Warning]) -> String {
    let mut out = String::new();
    out.push_str("# mcrecover configuration generated by `mcrecover import-mcp`\n");
    let _ = writeln!(
        out,
        "# from MCP service definitions, for node `{}`.",
        one_line(node)
    );
    match merged {
        Some(p) => {
            let _ = writeln!(
                out,
                "# Merged into {}: its [platform], [check_defaults], stages and checks are kept\n\
                 # (its comments are not); container settings come from the MCP definitions.",
                one_line(&p.display().to_string())
            );
        }
        None => out.push_str(
            "# TODO: review the [platform] skeleton and the stage assignment, and add\n\
             # health checks to every service: a stage is only as good as its checks.\n",
        ),
    }
    if !warnings.is_empty() {
        out.push_str("#\n");
        for w in warnings {
            // `Warning`'s Display is one line (control characters escaped).
            let _ = writeln!(out, "# warning: {w}");
        }
    }
    if doc.skeleton {
        out.push_str(
            "\n# Skeleton: check user, uid and home; set image_prefix and image_archive.\n",
        );
    } else {
        out.push('\n');
    }
    write_table(&mut out, "[platform]", &doc.platform, PLATFORM_ORDER);
    if let Some(d) = &doc.check_defaults {
        out.push('\n');
        write_table(&mut out, "[check_defaults]", d, DEFAULTS_ORDER);
    }
    for stage in &doc.stages {
        out.push('\n');
        write_table(&mut out, "[[stages]]", stage, STAGE_ORDER);
    }
    for (name, table) in &doc.services {
        let key = format_key(name);
        out.push('\n');
        let body: Table = table
            .iter()
            .filter(|(k, _)| k.as_str() != "checks")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        write_table(&mut out, &format!("[services.{key}]"), &body, SERVICE_ORDER);
        let checks: Vec<&Table> = match table.get("checks") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_table).collect(),
            _ => Vec::new(),
        };
        if checks.is_empty() {
            let _ = writeln!(
                out,
                "# TODO: no health checks: add [[services.{key}.checks]] (docs/config.md)"
            );
        }
        for check in checks {
            out.push('\n');
            write_table(
                &mut out,
                &format!("[[services.{key}.checks]]"),
                check,
                CHECK_ORDER,
            );
        }
    }
    out
}

/// `header`, then `key = value` lines: keys of `order` first, the rest by name.
fn write_table(out: &mut String, header: &str, t: &Table, order: &[&str]) {
    let _ = writeln!(out, "{header}");
    let mut keys: Vec<&String> = order
        .iter()
        .filter_map(|k| t.get_key_value(*k).map(|(k, _)| k))
        .collect();
    let mut rest: Vec<&String> = t.keys().filter(|k| !order.contains(&k.as_str())).collect();
    rest.sort();
    keys.extend(rest);
    for k in keys {
        if let Some(v) = t.get(k) {
            let _ = writeln!(out, "{} = {}", format_key(k), format_value(v));
        }
    }
}

/// A bare key when possible, else a quoted one.
fn format_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

/// A value in TOML syntax; long arrays one element per line.
fn format_value(v: &Value) -> String {
    let one_line = v.to_string();
    match v {
        Value::Array(items) if one_line.len() > WRAP_AT && !items.is_empty() => {
            let mut s = String::from("[\n");
            for item in items {
                let _ = writeln!(s, "  {},", item);
            }
            s.push(']');
            s
        }
        _ => one_line,
    }
}
