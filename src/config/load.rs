//! From text to a validated [`Config`]: parse the spanned document, take the
//! checks out of it, deserialize the rest into the raw structs, validate each
//! table, then hand over to `validate` for the cross-references.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::checks::{load_checks, Schedule};
use super::error::{ConfigError, Ctx};
use super::fields::{choice, is_unit_safe, nonzero_duration, span_or};
use super::files::FileRef;
use super::model::{Config, FailurePolicy, Service, Stage};
use super::platform::load_platform;
use super::raw::{RawConfig, RawService, RawStage, S};
use super::service::load_service;
use super::tomlerr::toml_error;
use super::validate;
use super::watch::load_watch;

/// A service with the spans validation needs.
#[derive(Debug)]
pub(crate) struct LoadedService {
    /// The table key, with its span.
    pub(crate) key: S<String>,
    /// The raw table (for spans of `after`, `ports`, ...).
    pub(crate) raw: S<RawService>,
    /// The validated service.
    pub(crate) service: Service,
}

/// A stage with the spans validation needs.
#[derive(Debug)]
pub(crate) struct LoadedStage {
    /// The raw table.
    pub(crate) raw: S<RawStage>,
    /// The validated stage.
    pub(crate) stage: Stage,
}

/// Take every `services.<name>.checks` value out of the document.
fn take_checks<'i>(root: &mut DeTable<'i>) -> Vec<(String, S<DeValue<'i>>)> {
    let mut out = Vec::new();
    if let Some(services) = root.get_mut("services") {
        if let DeValue::Table(services) = services.get_mut() {
            for (name, service) in services.iter_mut() {
                if let DeValue::Table(table) = service.get_mut() {
                    if let Some(checks) = table.remove("checks") {
                        out.push((name.get_ref().to_string(), checks));
                    }
                }
            }
        }
    }
    out
}

/// Parse and validate configuration text; also return the files it names.
pub(crate) fn parse(src: &str, path: &Path) -> Result<(Config, Vec<FileRef>), ConfigError> {
    let files = std::cell::RefCell::new(Vec::new());
    let ctx = Ctx {
        src,
        path,
        files: &files,
    };
    let config = parse_in(&ctx, path)?;
    let mut files = files.into_inner();
    files.sort_by_key(|f| (f.location.line, f.location.col));
    Ok((config, files))
}

fn parse_in(ctx: &Ctx<'_>, path: &Path) -> Result<Config, ConfigError> {
    let src = ctx.src;
    let ctx = *ctx;
    let doc = DeTable::parse(src).map_err(|e| toml_error(&ctx, &e, &[]))?;
    let root_span = doc.span();
    let mut root = doc.into_inner();
    let mut checks: BTreeMap<String, S<DeValue<'_>>> = take_checks(&mut root).into_iter().collect();
    let raw = RawConfig::deserialize(ValueDeserializer::from(S::new(
        root_span.clone(),
        DeValue::Table(root),
    )))
    .map_err(|e| toml_error(&ctx, &e, &[]))?;

    let platform = load_platform(&ctx, raw.platform.as_ref(), path)?;
    let watch = load_watch(&ctx, raw.watch.as_ref())?;
    let metrics = super::metrics::load_metrics(&ctx, raw.metrics.as_ref())?;
    let defaults = match &raw.check_defaults {
        Some(d) => Schedule::default().overlay(&ctx, d.get_ref())?,
        None => Schedule::default(),
    };

    let mut raw_services: Vec<(S<String>, S<RawService>)> = raw
        .services
        .map(|s| s.into_inner().into_iter().collect())
        .unwrap_or_default();
    raw_services.sort_by_key(|(k, _)| k.span().start);
    let mut services = Vec::with_capacity(raw_services.len());
    for (key, raw_service) in raw_services {
        let service_checks = match checks.remove(key.get_ref()) {
            Some(c) => load_checks(&ctx, key.get_ref(), c, defaults)?,
            None => Vec::new(),
        };
        let service = load_service(&ctx, &key, raw_service.get_ref(), &platform, service_checks)?;
        services.push(LoadedService {
            key,
            raw: raw_service,
            service,
        });
    }

    let raw_stages = raw.stages.map(S::into_inner).unwrap_or_default();
    if raw_stages.is_empty() {
        return Err(ctx.err(
            root_span.start..root_span.start,
            "the configuration defines no stages",
            "add at least one [[stages]] table with `name` and `services`",
        ));
    }
    let mut stages: Vec<LoadedStage> = Vec::with_capacity(raw_stages.len());
    // Stage names seen so far, with their index (not a scan per stage).
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(raw_stages.len());
    for raw_stage in raw_stages {
        let stage = load_stage(&ctx, &raw_stage)?;
        if let Some(first) = seen.get(&stage.name).and_then(|&i| stages.get(i)) {
            return Err(ctx.err(
                span_or(raw_stage.get_ref().name.as_ref(), &raw_stage.span()),
                format!("stage `{}` is defined twice", stage.name),
                format!(
                    "the first one is at line {}; give each stage a unique name",
                    ctx.line_of(first.raw.span().start)
                ),
            ));
        }
        seen.insert(stage.name.clone(), stages.len());
        stages.push(LoadedStage {
            raw: raw_stage,
            stage,
        });
    }

    validate::cross_check(&ctx, &services, &stages)?;
    if let Some(reg) = raw
        .platform
        .as_ref()
        .and_then(|p| p.get_ref().registry_service.as_ref())
    {
        let ok = services
            .iter()
            .any(|s| &s.service.name == reg.get_ref() && !s.service.is_external());
        if !ok {
            return Err(ctx.err(
                reg.span(),
                format!(
                    "registry_service `{}` is not a container service",
                    reg.get_ref()
                ),
                "name the [services.*] entry that serves the image registry, e.g. \"mcr-api\"",
            ));
        }
    }

    Ok(Config {
        source: path.to_path_buf(),
        platform,
        stages: stages.into_iter().map(|s| s.stage).collect(),
        services: services
            .into_iter()
            .map(|s| (s.service.name.clone(), s.service))
            .collect(),
        watch,
        metrics,
    })
}

/// One `[[stages]]` table (membership is checked in `validate`).
fn load_stage(ctx: &Ctx<'_>, raw_span: &S<RawStage>) -> Result<Stage, ConfigError> {
    let span = raw_span.span();
    let raw = raw_span.get_ref();
    let name_value = raw.name.as_ref().ok_or_else(|| {
        ctx.err(
            span.clone(),
            "stage has no `name`",
            "add e.g. name = \"foundation\"",
        )
    })?;
    let name = name_value.get_ref();
    if !is_unit_safe(name, false) {
        return Err(ctx.err(
            name_value.span(),
            format!("invalid stage name `{name}`"),
            "use letters, digits, `_` and `-`, starting with a letter or digit (it becomes part of a unit name)",
        ));
    }
    let services = match &raw.services {
        None => {
            return Err(ctx.err(
                span,
                format!("stage `{name}` has no `services`"),
                "add services = [\"...\"] listing its services",
            ))
        }
        Some(list) if list.get_ref().is_empty() => {
            return Err(ctx.err(
                list.span(),
                format!("stage `{name}` is empty"),
                "list at least one service, or remove the stage",
            ))
        }
        Some(list) => list.get_ref().iter().map(|s| s.get_ref().clone()).collect(),
    };
    let timeout = match &raw.timeout {
        None => std::time::Duration::from_secs(120),
        Some(v) => nonzero_duration(ctx, v, "timeout")?,
    };
    let on_failure = match &raw.on_failure {
        None => FailurePolicy::Block,
        Some(v) => choice(
            ctx,
            v,
            "on_failure",
            &[
                ("block", FailurePolicy::Block),
                ("continue", FailurePolicy::Continue),
            ],
        )?,
    };
    let rto = raw
        .rto
        .as_ref()
        .map(|v| nonzero_duration(ctx, v, "rto"))
        .transpose()?;
    Ok(Stage {
        name: name.clone(),
        services,
        timeout,
        on_failure,
        rto,
    })
}
