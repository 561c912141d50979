//! `[services.<name>]`: the service name, the external flag and the container
//! (image, network, ports, volumes, command, env, restart) and its remedy.

use std::collections::BTreeMap;
use std::ops::Range;

use super::error::{ConfigError, Ctx};
use super::fields::{argv, choice, is_name_part, is_unit_safe, no_control, nonzero_duration, text};
use super::model::{
    BackendChoice, Check, Container, Network, Platform, RestartPolicy, Service, ServiceGate,
};
use super::net::{is_podman_name, parse_port, parse_volume, PORT_FORMS, VOLUME_FORMS};
use super::raw::{RawService, S};
use super::watch::load_remedy;
use crate::render::escape::EscapeError;
use crate::render::rules::{self, Field};
use crate::render::Backend;

/// Longest service name accepted (unit names are limited to 255 bytes).
const MAX_SERVICE_NAME: usize = 200;

/// The keys that describe a container (not allowed on external services).
fn container_keys(raw: &RawService) -> [(&'static str, Option<Range<usize>>); 11] {
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
        ("remedy", raw.remedy.as_ref().map(S::span)),
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
pub(crate) fn load_service(
    ctx: &Ctx<'_>,
    key: &S<String>,
    raw: &RawService,
    platform: &Platform,
    checks: Vec<Check>,
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
    let mut remedy = None;
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
        let container = load_container(ctx, key, raw, platform)?;
        remedy = raw
            .remedy
            .as_ref()
            .map(|r| load_remedy(ctx, &name, r, &container))
            .transpose()?;
        Some(container)
    };
    let gate = match &raw.gate {
        Some(v) => choice(
            ctx,
            v,
            "gate",
            &[
                ("healthy", ServiceGate::Healthy),
                ("running", ServiceGate::Running),
            ],
        )?,
        None => ServiceGate::Healthy,
    };
    if gate == ServiceGate::Running && !checks.iter().any(|c| c.operator_wait.is_some()) {
        if let Some(v) = &raw.gate {
            return Err(ctx.err(
                v.span(),
                format!("`gate = \"running\"` on service `{name}`, but none of its checks has `operator_wait`"),
                "gate = \"running\" lets the stage proceed while the service waits for an operator, which only an `operator_wait` rule can say: add one to a check (e.g. operator_wait = { status = [503], remedy = \"unseal it\" }), or remove `gate`",
            ));
        }
    }
    let rto = raw
        .rto
        .as_ref()
        .map(|v| nonzero_duration(ctx, v, "rto"))
        .transpose()?;
    let service = Service {
        name,
        description,
        container,
        checks,
        after,
        requires,
        remedy,
        gate,
        rto,
    };
    unit_syntax(ctx, key, raw, platform, &service)?;
    Ok(service)
}

/// The backend whose rules a service must satisfy: `auto` may resolve to
/// quadlet, whose rules include the service backend's.
fn strictest_backend(choice: BackendChoice) -> Backend {
    match choice {
        BackendChoice::Service => Backend::Service,
        BackendChoice::Quadlet | BackendChoice::Auto => Backend::Quadlet,
    }
}

/// Everything render would refuse for this service ([`rules::check_service`],
/// the function render itself calls), as an error at the offending value.
fn unit_syntax(
    ctx: &Ctx<'_>,
    key: &S<String>,
    raw: &RawService,
    platform: &Platform,
    service: &Service,
) -> Result<(), ConfigError> {
    let Err((field, reason)) = rules::check_service(service, strictest_backend(platform.backend))
    else {
        return Ok(());
    };
    let nth = |list: &Option<S<Vec<S<String>>>>, i: usize| {
        list.as_ref().and_then(|l| l.get_ref().get(i).map(S::span))
    };
    let (name, span) = match &field {
        Field::Description => (
            "description".to_string(),
            raw.description.as_ref().map(S::span),
        ),
        Field::Image => ("image".to_string(), raw.image.as_ref().map(S::span)),
        Field::ContainerName => (
            "container_name".to_string(),
            raw.container_name.as_ref().map(S::span),
        ),
        Field::Network => ("network".to_string(), raw.network.as_ref().map(S::span)),
        Field::Port(i) => (format!("ports[{i}]"), nth(&raw.ports, *i)),
        Field::Volume(i) => (format!("volumes[{i}]"), nth(&raw.volumes, *i)),
        Field::User => ("user".to_string(), raw.user.as_ref().map(S::span)),
        Field::Env(k) => (
            format!("env.{k}"),
            raw.env.as_ref().and_then(|t| {
                t.get_ref()
                    .iter()
                    .find(|(name, _)| name.get_ref() == k)
                    .map(|(_, v)| v.span())
            }),
        ),
        Field::PodmanArg(i) => (format!("podman_args[{i}]"), nth(&raw.podman_args, *i)),
        Field::Command(i) => (format!("command[{i}]"), nth(&raw.command, *i)),
    };
    let quadlet_help = match platform.backend {
        BackendChoice::Auto => "backend = \"auto\" renders quadlet .container files where podman >= 4.4 is installed, and quadlet cannot carry this value: set backend = \"service\" in [platform] (plain `podman run` units carry any argument), or change the value",
        _ => "quadlet cannot carry this value: set backend = \"service\" in [platform] (plain `podman run` units carry any argument), or change the value",
    };
    let help = match &reason {
        EscapeError::ControlChar { .. } => {
            "remove it: control characters cannot be written into unit files".to_string()
        }
        EscapeError::TrailingBackslash { .. } => "remove the trailing backslash: a unit file has no way to write one at the end of a line".to_string(),
        EscapeError::LeadingDash { what, .. } => format!(
            "write the {what} itself; podman options belong in podman_args"
        ),
        EscapeError::Forbidden { .. }
        | EscapeError::NotRepresentable { .. }
        | EscapeError::QuadletReference { .. }
        | EscapeError::Malformed(_) => quadlet_help.to_string(),
    };
    Err(ctx.err(
        span.unwrap_or_else(|| key.span()),
        format!("{name}: {reason}"),
        help,
    ))
}

/// An image reference (or `image_prefix`, `what`): registry, path, tag and
/// digest characters only, starting with a letter, a digit or `[` (an IPv6
/// registry address). In particular never `-`: podman would read the image
/// as an option (`image = "--privileged"`).
pub(crate) fn image_chars(ctx: &Ctx<'_>, value: &S<String>, what: &str) -> Result<(), ConfigError> {
    let text = value.get_ref();
    let example = "write an image reference such as \"mcns:v1.2.0\" or \"registry.example:8443/mcns@sha256:...\"";
    if text.contains(char::is_whitespace) {
        return Err(ctx.err(
            value.span(),
            format!("{what} `{text}` contains whitespace"),
            example,
        ));
    }
    if text.starts_with('-') {
        return Err(ctx.err(
            value.span(),
            format!("{what} `{text}` starts with `-`: podman would read it as an option"),
            format!("{example}; podman options belong in podman_args"),
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._/:@-[]".contains(*c)))
    {
        return Err(ctx.err(
            value.span(),
            format!("{what} `{text}` contains `{c}`, which an image reference cannot contain"),
            example,
        ));
    }
    if !text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '[')
    {
        return Err(ctx.err(
            value.span(),
            format!("{what} `{text}` must start with a letter, a digit or `[`"),
            example,
        ));
    }
    Ok(())
}

/// `user` of a container: `USER` or `USER:GROUP`, each a name or a number.
fn container_user(ctx: &Ctx<'_>, value: &S<String>) -> Result<String, ConfigError> {
    let user = text(ctx, value, "user")?;
    let ok = match user.split_once(':') {
        Some((u, g)) => is_name_part(u) && is_name_part(g),
        None => is_name_part(&user),
    };
    if !ok {
        return Err(ctx.err(
            value.span(),
            format!("invalid user `{user}`"),
            "write a user name or uid, optionally with a group name or gid: \"0:0\", \"1000\", \"postgres:postgres\" (letters, digits, `_`, `.` and `-`, not starting with `-` or `.`)",
        ));
    }
    Ok(user)
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
    image_chars(ctx, image_value, "image")?;
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
        .map(|v| container_user(ctx, v))
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
