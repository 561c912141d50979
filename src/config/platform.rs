//! `[platform]`: names, user, backend, paths and their mode-dependent defaults.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Ctx};
use super::fields::{abs_path, choice, is_name_part, is_unit_safe, no_control, text};
use super::model::{BackendChoice, Mode, Platform, PlatformUser, PullPolicy};
use super::raw::{RawPlatform, S};
use super::service::image_chars;

/// `[platform]`.
pub(crate) fn load_platform(
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
            if !v.get_ref().is_empty() {
                image_chars(ctx, v, "image_prefix")?;
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
    let registry_service = raw
        .registry_service
        .as_ref()
        .map(|v| text(ctx, v, "registry_service"))
        .transpose()?;
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
        None => {
            let own = std::path::absolute(path).map_err(|e| ConfigError::io(path, &e))?;
            // The gate units run `mcrecover gate --config <this path>`.
            let problem = match own.to_str() {
                None => Some("is not valid UTF-8"),
                Some(p) if p.chars().any(char::is_control) => Some("contains a control character"),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                return Err(ctx.err(
                    span.start..span.start,
                    format!(
                        "the configuration's own path {:?} {problem}: it cannot be written into the gate units",
                        own.display().to_string()
                    ),
                    "set config_path = \"/etc/mcrecover/mcrecover.toml\" in [platform] (the path the gate units read), or rename the file",
                ));
            }
            own
        }
    };
    let prerequisites = load_prerequisites(ctx, raw)?;
    Ok(Platform {
        name: name.clone(),
        node,
        mode,
        user,
        backend,
        image_prefix,
        image_archive,
        pull,
        registry_service,
        quadlet_dir,
        unit_dir,
        podman,
        mcrecover,
        config_path,
        prerequisites,
    })
}

/// `prerequisites`: full unit names such as `mcp-agent.service`.
fn load_prerequisites(ctx: &Ctx<'_>, raw: &RawPlatform) -> Result<Vec<String>, ConfigError> {
    let Some(list) = &raw.prerequisites else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for unit in list.get_ref() {
        let name = unit.get_ref();
        let typed = name
            .rsplit_once('.')
            .is_some_and(|(stem, suffix)| !stem.is_empty() && !suffix.is_empty());
        if !typed || !is_unit_safe(name.replace('@', "-").as_str(), true) {
            return Err(ctx.err(
                unit.span(),
                format!("invalid prerequisite unit `{name}`"),
                "write a full unit name with its type, e.g. \"mcp-agent.service\"",
            ));
        }
        out.push(name.clone());
    }
    Ok(out)
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
            if !is_name_part(&name) {
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
