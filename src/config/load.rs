//! From text to a validated [`Config`]: parse the spanned document, take the
//! checks out of it, deserialize the rest into the raw structs, validate each
//! table, then hand over to `validate` for the cross-references.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::checks::{load_checks, Schedule};
use super::error::{ConfigError, Ctx};
use super::fields::{
    abs_path, argv, choice, did_you_mean, is_unit_safe, no_control, nonzero_duration, span_or, text,
};
use super::model::{
    BackendChoice, Config, Container, FailurePolicy, Mode, Network, Platform, PlatformUser,
    PullPolicy, RestartPolicy, Service, Stage,
};
use super::net::{is_podman_name, parse_port, parse_volume, PORT_FORMS, VOLUME_FORMS};
use super::raw::{RawConfig, RawPlatform, RawService, RawStage, S};
use super::validate;

/// Longest service name accepted (unit names are limited to 255 bytes).
const MAX_SERVICE_NAME: usize = 200;

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

/// Convert a toml error (syntax or deserialization) into a [`ConfigError`].
/// `extra_keys` are keys also valid in the table, for suggestions.
pub(crate) fn toml_error(ctx: &Ctx<'_>, err: &toml::de::Error, extra_keys: &[&str]) -> ConfigError {
    let span = err.span().unwrap_or(0..0);
    let msg = err.message().trim_end();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let mut valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        valid.extend(extra_keys.iter().copied());
        valid.sort_unstable();
        valid.dedup();
        return ctx.err(
            span,
            format!("unknown key `{field}`"),
            format!(
                "{}valid keys here: {}",
                did_you_mean(field, valid.iter().copied()),
                valid.join(", ")
            ),
        );
    }
    if msg == "duplicate key" {
        let key = ctx.src.get(span.clone()).unwrap_or("").trim_matches('"');
        let line_start = ctx.src[..span.start.min(ctx.src.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line = ctx.src[line_start..]
            .lines()
            .next()
            .unwrap_or("")
            .trim_start();
        if line.starts_with("[services.")
            && !line.starts_with("[services.\"\"")
            && line[10..].starts_with(key)
        {
            return ctx.err(
                span,
                format!("service `{key}` is defined twice"),
                "each [services.NAME] table may appear once; rename one service or merge the two tables",
            );
        }
        return ctx.err(
            span,
            format!("duplicate key `{key}`"),
            "a key may appear only once per table; remove or rename one of them",
        );
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return ctx.err(
            span,
            format!("missing required key `{field}`"),
            format!("add `{field} = ...` to this table"),
        );
    }
    if msg.starts_with("invalid type:") || msg.starts_with("invalid value:") {
        let key = key_before(ctx, span.start);
        let help = if msg.ends_with("expected a string")
            && matches!(key, Some("interval" | "timeout" | "start_period"))
        {
            format!(
                "durations are quoted strings with a unit, e.g. {} = \"2s\"",
                key.unwrap_or_default()
            )
        } else if msg.ends_with("expected a string") {
            "quote the value, e.g. \"...\"".to_string()
        } else if msg.ends_with("expected u32") {
            "write a non-negative whole number without quotes".to_string()
        } else if msg.ends_with("expected a boolean") {
            "write true or false without quotes".to_string()
        } else if msg.ends_with("expected a sequence") {
            "write an array, e.g. [\"a\", \"b\"]".to_string()
        } else if msg.ends_with("expected a map") || msg.contains("expected struct") {
            "write a table, e.g. { key = \"value\" } or a [section]".to_string()
        } else {
            "see docs/config.md for the expected type".to_string()
        };
        return ctx.err(span, msg.to_string(), help);
    }
    ctx.err(
        span,
        msg.to_string(),
        "fix the TOML syntax (see https://toml.io/en/v1.0.0)",
    )
}

/// The `key` of a `key = value` line whose value starts at `offset`, if any.
fn key_before<'s>(ctx: &Ctx<'s>, offset: usize) -> Option<&'s str> {
    let before = ctx.src.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let (key, _) = line.rsplit_once('=')?;
    let key = key.trim().rsplit(['{', ',', '.']).next()?.trim();
    (!key.is_empty()).then_some(key)
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

/// Parse and validate configuration text.
pub(crate) fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
    let ctx = Ctx { src, path };
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
    for raw_stage in raw_stages {
        let stage = load_stage(&ctx, &raw_stage)?;
        if let Some(first) = stages.iter().find(|s| s.stage.name == stage.name) {
            return Err(ctx.err(
                span_or(raw_stage.get_ref().name.as_ref(), &raw_stage.span()),
                format!("stage `{}` is defined twice", stage.name),
                format!(
                    "the first one is at line {}; give each stage a unique name",
                    ctx.line_of(first.raw.span().start)
                ),
            ));
        }
        stages.push(LoadedStage {
            raw: raw_stage,
            stage,
        });
    }

    validate::cross_check(&ctx, &services, &stages)?;

    Ok(Config {
        source: path.to_path_buf(),
        platform,
        stages: stages.into_iter().map(|s| s.stage).collect(),
        services: services
            .into_iter()
            .map(|s| (s.service.name.clone(), s.service))
            .collect(),
    })
}

/// `[platform]`.
fn load_platform(
    ctx: &Ctx<'_>,
    raw: Option<&S<RawPlatform>>,
    path: &Path,
) -> Result<Platform, ConfigError> {
    let Some(raw_span) = raw else {
        return Err(ctx.err(
            0..0,
            "missing [platform] table",
            "add a [platform] table with at least name = \"...\"",
        ));
    };
    let span = raw_span.span();
    let raw = raw_span.get_ref();
    let name_value = raw.name.as_ref().ok_or_else(|| {
        ctx.err(
            span.clone(),
            "[platform] has no `name`",
            "add e.g. name = \"metacircular\" (used as the unit name prefix)",
        )
    })?;
    let name = name_value.get_ref();
    let mut chars = name.chars();
    let name_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !name_ok {
        return Err(ctx.err(
            name_value.span(),
            format!("invalid platform name `{name}`"),
            "use lowercase letters, digits, `_` and `-`, starting with a letter or digit (it prefixes unit names)",
        ));
    }
    let node = raw
        .node
        .as_ref()
        .map(|v| text(ctx, v, "node"))
        .transpose()?;
    let mode = match &raw.mode {
        None => Mode::Rootless,
        Some(v) => choice(
            ctx,
            v,
            "mode",
            &[("rootless", Mode::Rootless), ("rootful", Mode::Rootful)],
        )?,
    };
    let user = load_platform_user(ctx, raw, &span, mode)?;
    let backend = match &raw.backend {
        None => BackendChoice::Auto,
        Some(v) => choice(
            ctx,
            v,
            "backend",
            &[
                ("quadlet", BackendChoice::Quadlet),
                ("service", BackendChoice::Service),
                ("auto", BackendChoice::Auto),
            ],
        )?,
    };
    let image_prefix = match &raw.image_prefix {
        None => String::new(),
        Some(v) => {
            no_control(ctx, v, "image_prefix")?;
            if v.get_ref().contains(char::is_whitespace) {
                return Err(ctx.err(
                    v.span(),
                    "image_prefix contains whitespace",
                    "write a registry prefix such as \"registry.example:8443/\"",
                ));
            }
            v.get_ref().clone()
        }
    };
    let image_archive = raw
        .image_archive
        .as_ref()
        .map(|v| abs_path(ctx, v, "image_archive"))
        .transpose()?;
    let pull = match &raw.pull {
        None => PullPolicy::Never,
        Some(v) => choice(
            ctx,
            v,
            "pull",
            &[
                ("never", PullPolicy::Never),
                ("missing", PullPolicy::Missing),
            ],
        )?,
    };
    let path_or =
        |value: Option<&S<String>>, key: &str, default: PathBuf| -> Result<PathBuf, ConfigError> {
            value.map_or(Ok(default), |v| abs_path(ctx, v, key))
        };
    let (default_quadlet, default_units) = match (mode, &user) {
        (Mode::Rootless, Some(u)) => (
            PathBuf::from(format!("/etc/containers/systemd/users/{}", u.uid)),
            u.home.join(".config/systemd/user"),
        ),
        _ => (
            PathBuf::from("/etc/containers/systemd"),
            PathBuf::from("/etc/systemd/system"),
        ),
    };
    let quadlet_dir = path_or(raw.quadlet_dir.as_ref(), "quadlet_dir", default_quadlet)?;
    let unit_dir = path_or(raw.unit_dir.as_ref(), "unit_dir", default_units)?;
    let podman = path_or(
        raw.podman.as_ref(),
        "podman",
        PathBuf::from("/usr/bin/podman"),
    )?;
    let mcrecover = path_or(
        raw.mcrecover.as_ref(),
        "mcrecover",
        PathBuf::from("/usr/bin/mcrecover"),
    )?;
    let config_path = match &raw.config_path {
        Some(v) => abs_path(ctx, v, "config_path")?,
        None => std::path::absolute(path).map_err(|e| ConfigError::io(path, &e))?,
    };
    Ok(Platform {
        name: name.clone(),
        node,
        mode,
        user,
        backend,
        image_prefix,
        image_archive,
        pull,
        quadlet_dir,
        unit_dir,
        podman,
        mcrecover,
        config_path,
    })
}

/// `user`, `uid`, `gid`, `home` of `[platform]`.
fn load_platform_user(
    ctx: &Ctx<'_>,
    raw: &RawPlatform,
    span: &Range<usize>,
    mode: Mode,
) -> Result<Option<PlatformUser>, ConfigError> {
    match (&raw.user, &raw.uid) {
        (Some(user), Some(uid)) => {
            let name = text(ctx, user, "user")?;
            let mut chars = name.chars();
            let ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok {
                return Err(ctx.err(
                    user.span(),
                    format!("invalid user name `{name}`"),
                    "write the login name, e.g. user = \"mcp\"",
                ));
            }
            let home = match &raw.home {
                Some(v) => abs_path(ctx, v, "home")?,
                None => PathBuf::from(format!("/home/{name}")),
            };
            Ok(Some(PlatformUser {
                name,
                uid: *uid.get_ref(),
                gid: raw.gid.as_ref().map_or(*uid.get_ref(), |g| *g.get_ref()),
                home,
            }))
        }
        (Some(user), None) => Err(ctx.err(
            user.span(),
            "`user` is set but `uid` is missing",
            "add uid = <number> (the user's numeric id, e.g. 850)",
        )),
        (None, Some(uid)) => Err(ctx.err(
            uid.span(),
            "`uid` is set but `user` is missing",
            "add user = \"<login name>\", e.g. user = \"mcp\"",
        )),
        (None, None) => {
            if mode == Mode::Rootless {
                return Err(ctx.err(
                    span.clone(),
                    "rootless mode needs `user` and `uid` in [platform]",
                    "add e.g. user = \"mcp\" and uid = 850, or set mode = \"rootful\"",
                ));
            }
            if let Some(v) = raw
                .gid
                .as_ref()
                .map(S::span)
                .or_else(|| raw.home.as_ref().map(S::span))
            {
                return Err(ctx.err(
                    v,
                    "`gid`/`home` need `user` and `uid`",
                    "add user and uid, or remove gid and home",
                ));
            }
            Ok(None)
        }
    }
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
    Ok(Stage {
        name: name.clone(),
        services,
        timeout,
        on_failure,
    })
}

/// The keys that describe a container (not allowed on external services).
fn container_keys(raw: &RawService) -> [(&'static str, Option<Range<usize>>); 10] {
    [
        ("image", raw.image.as_ref().map(S::span)),
        ("container_name", raw.container_name.as_ref().map(S::span)),
        ("network", raw.network.as_ref().map(S::span)),
        ("ports", raw.ports.as_ref().map(S::span)),
        ("volumes", raw.volumes.as_ref().map(S::span)),
        ("user", raw.user.as_ref().map(S::span)),
        ("command", raw.command.as_ref().map(S::span)),
        ("env", raw.env.as_ref().map(S::span)),
        ("restart", raw.restart.as_ref().map(S::span)),
        ("podman_args", raw.podman_args.as_ref().map(S::span)),
    ]
}

/// Validate a service name as a unit name stem.
fn service_name(ctx: &Ctx<'_>, key: &S<String>) -> Result<(), ConfigError> {
    let name = key.get_ref();
    let help = "service names become unit names: use letters, digits, `_`, `.` and `-`, starting with a letter or digit";
    if name.contains('@') {
        return Err(ctx.err(
            key.span(),
            format!("invalid service name `{name}`: `@` is reserved for unit templates"),
            help,
        ));
    }
    if name.len() > MAX_SERVICE_NAME {
        return Err(ctx.err(
            key.span(),
            format!(
                "service name is {} characters long (at most {MAX_SERVICE_NAME})",
                name.len()
            ),
            "use a shorter name",
        ));
    }
    if !is_unit_safe(name, true) {
        return Err(ctx.err(key.span(), format!("invalid service name `{name}`"), help));
    }
    Ok(())
}

/// One `[services.<name>]` table with its checks.
fn load_service(
    ctx: &Ctx<'_>,
    key: &S<String>,
    raw: &RawService,
    platform: &Platform,
    checks: Vec<super::model::Check>,
) -> Result<Service, ConfigError> {
    service_name(ctx, key)?;
    let name = key.get_ref().clone();
    let description = raw
        .description
        .as_ref()
        .map(|v| text(ctx, v, "description"))
        .transpose()?;
    let external = raw.external.as_ref().is_some_and(|v| *v.get_ref());
    let after = raw
        .after
        .as_ref()
        .map(|l| l.get_ref().iter().map(|s| s.get_ref().clone()).collect())
        .unwrap_or_default();
    let requires = raw
        .requires
        .as_ref()
        .map(|l| l.get_ref().iter().map(|s| s.get_ref().clone()).collect())
        .unwrap_or_default();
    let container = if external {
        if let Some((k, span)) = container_keys(raw)
            .into_iter()
            .find_map(|(k, s)| s.map(|s| (k, s)))
        {
            return Err(ctx.err(
                span,
                format!("`{k}` cannot be set on external service `{name}`"),
                format!("external services run elsewhere and are only checked: remove `{k}`, or remove `external = true`"),
            ));
        }
        if let Some(v) = raw.after.as_ref().or(raw.requires.as_ref()) {
            return Err(ctx.err(
                v.span(),
                format!("external service `{name}` cannot have `after`/`requires`"),
                "it has no unit to order; remove the key",
            ));
        }
        if checks.is_empty() {
            return Err(ctx.err(
                key.span(),
                format!("external service `{name}` has no checks"),
                format!("an external entry exists only to be checked: add a [[services.{name}.checks]] table"),
            ));
        }
        None
    } else {
        Some(load_container(ctx, key, raw, platform)?)
    };
    Ok(Service {
        name,
        description,
        container,
        checks,
        after,
        requires,
    })
}

/// The container part of a service.
fn load_container(
    ctx: &Ctx<'_>,
    key: &S<String>,
    raw: &RawService,
    platform: &Platform,
) -> Result<Container, ConfigError> {
    let name = key.get_ref();
    let image_value = raw.image.as_ref().ok_or_else(|| {
        ctx.err(
            key.span(),
            format!("service `{name}` has no `image`"),
            "add image = \"name:tag\", or set external = true for a service that runs elsewhere",
        )
    })?;
    let image = text(ctx, image_value, "image")?;
    if image.contains(char::is_whitespace) {
        return Err(ctx.err(
            image_value.span(),
            format!("image `{image}` contains whitespace"),
            "write an image reference such as \"mcns:v1.2.0\"",
        ));
    }
    let image = if image.contains('/') || platform.image_prefix.is_empty() {
        image
    } else if platform.image_prefix.ends_with('/') {
        format!("{}{image}", platform.image_prefix)
    } else {
        format!("{}/{image}", platform.image_prefix)
    };
    let container_name = match &raw.container_name {
        None => name.clone(),
        Some(v) => {
            if !is_podman_name(v.get_ref()) {
                return Err(ctx.err(
                    v.span(),
                    format!("invalid container name `{}`", v.get_ref()),
                    "use letters, digits, `_`, `.` and `-`, starting with a letter or digit",
                ));
            }
            v.get_ref().clone()
        }
    };
    let network = match raw.network.as_ref() {
        None => Network::Bridge,
        Some(v) => match v.get_ref().as_str() {
            "bridge" => Network::Bridge,
            "host" => Network::Host,
            other if is_podman_name(other) => Network::Named(other.to_string()),
            other => {
                return Err(ctx.err(
                    v.span(),
                    format!("invalid network `{other}`"),
                    "use \"bridge\", \"host\" or the name of a podman network",
                ))
            }
        },
    };
    let mut ports = Vec::new();
    if let Some(list) = &raw.ports {
        if network == Network::Host && !list.get_ref().is_empty() {
            return Err(ctx.err(
                list.span(),
                format!("service `{name}` uses network = \"host\", where podman ignores `ports`"),
                "remove `ports` (the service binds host ports itself), or use network = \"bridge\"",
            ));
        }
        for p in list.get_ref() {
            no_control(ctx, p, "port")?;
            ports.push(parse_port(p.get_ref()).map_err(|msg| ctx.err(p.span(), msg, PORT_FORMS))?);
        }
    }
    let mut volumes = Vec::new();
    for v in raw
        .volumes
        .as_ref()
        .map(|l| l.get_ref().as_slice())
        .unwrap_or_default()
    {
        no_control(ctx, v, "volume")?;
        volumes
            .push(parse_volume(v.get_ref()).map_err(|msg| ctx.err(v.span(), msg, VOLUME_FORMS))?);
    }
    let user = raw
        .user
        .as_ref()
        .map(|v| text(ctx, v, "user"))
        .transpose()?;
    let command = raw
        .command
        .as_ref()
        .map(|l| argv(ctx, l.get_ref(), "command"))
        .transpose()?
        .unwrap_or_default();
    let podman_args = raw
        .podman_args
        .as_ref()
        .map(|l| argv(ctx, l.get_ref(), "podman_args"))
        .transpose()?
        .unwrap_or_default();
    let mut env = BTreeMap::new();
    if let Some(table) = &raw.env {
        for (k, v) in table.get_ref() {
            let mut chars = k.get_ref().chars();
            let ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(ctx.err(
                    k.span(),
                    format!("invalid environment variable name `{}`", k.get_ref()),
                    "use letters, digits and `_`, not starting with a digit",
                ));
            }
            no_control(ctx, v, &format!("env.{}", k.get_ref()))?;
            env.insert(k.get_ref().clone(), v.get_ref().clone());
        }
    }
    let restart = match &raw.restart {
        None => RestartPolicy::UnlessStopped,
        Some(v) => choice(
            ctx,
            v,
            "restart",
            &[
                ("no", RestartPolicy::No),
                ("on-failure", RestartPolicy::OnFailure),
                ("always", RestartPolicy::Always),
                ("unless-stopped", RestartPolicy::UnlessStopped),
            ],
        )?,
    };
    Ok(Container {
        image,
        name: container_name,
        network,
        ports,
        volumes,
        user,
        command,
        env,
        restart,
        podman_args,
    })
}
