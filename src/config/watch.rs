//! `[watch]` (the daemon's restart, backoff and escalation policy) and
//! `[services.<name>.remedy]` (what the daemon may do to an escalated
//! service: move listed files of its volumes into quarantine).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::duration::format_duration;
use super::error::{ConfigError, Ctx};
use super::fields::{abs_path, argv, choice, did_you_mean, no_control, nonzero_duration};
use super::files::FileKind;
use super::model::{Container, ForeignPolicy, Remedy, RestartOwner, WatchPolicy};
use super::raw::{RawRemedy, RawWatch, S};
use crate::diagnose;

/// `[watch]`; every key is optional (defaults: [`WatchPolicy::default`]).
pub(crate) fn load_watch(
    ctx: &Ctx<'_>,
    raw: Option<&S<RawWatch>>,
) -> Result<WatchPolicy, ConfigError> {
    let mut policy = WatchPolicy::default();
    let Some(raw) = raw.map(S::get_ref) else {
        return Ok(policy);
    };
    if let Some(v) = &raw.restart_owner {
        policy.restart_owner = choice(
            ctx,
            v,
            "restart_owner",
            &[
                ("mcrecover", RestartOwner::Mcrecover),
                ("systemd", RestartOwner::Systemd),
            ],
        )?;
    }
    if let Some(v) = &raw.foreign {
        policy.foreign = choice(
            ctx,
            v,
            "foreign",
            &[
                ("leave", ForeignPolicy::Leave),
                ("take-over", ForeignPolicy::TakeOver),
            ],
        )?;
    }
    let durations: [(&Option<S<String>>, &str, &mut Duration); 7] = [
        (
            &raw.backoff_initial,
            "backoff_initial",
            &mut policy.backoff_initial,
        ),
        (&raw.backoff_max, "backoff_max", &mut policy.backoff_max),
        (
            &raw.backoff_reset,
            "backoff_reset",
            &mut policy.backoff_reset,
        ),
        (
            &raw.escalate_window,
            "escalate_window",
            &mut policy.escalate_window,
        ),
        (&raw.hook_timeout, "hook_timeout", &mut policy.hook_timeout),
        (
            &raw.webhook_timeout,
            "webhook_timeout",
            &mut policy.webhook_timeout,
        ),
        (
            &raw.wait_reminder,
            "wait_reminder",
            &mut policy.wait_reminder,
        ),
    ];
    for (value, key, slot) in durations {
        if let Some(v) = value {
            *slot = nonzero_duration(ctx, v, key)?;
        }
    }
    if policy.backoff_initial > policy.backoff_max {
        let (initial, max) = (
            format_duration(policy.backoff_initial),
            format_duration(policy.backoff_max),
        );
        let (span, max_note) = match (&raw.backoff_initial, &raw.backoff_max) {
            (Some(v), Some(_)) => (v.span(), String::new()),
            (Some(v), None) => (v.span(), ", the default".to_string()),
            (None, Some(v)) => (v.span(), String::new()),
            (None, None) => (0..0, String::new()),
        };
        return Err(ctx.err(
            span,
            format!("backoff_initial ({initial}) is greater than backoff_max ({max}{max_note})"),
            "the delay starts at backoff_initial and doubles up to backoff_max: lower backoff_initial or raise backoff_max",
        ));
    }
    if let Some(v) = &raw.escalate_after {
        if *v.get_ref() == 0 {
            return Err(ctx.err(
                v.span(),
                "escalate_after must be at least 1",
                "set escalate_after to the number of restarts within escalate_window after which the service is escalated, e.g. 5",
            ));
        }
        policy.escalate_after = *v.get_ref();
    }
    policy.state_dir = raw
        .state_dir
        .as_ref()
        .map(|v| abs_path(ctx, v, "state_dir"))
        .transpose()?;
    if let Some(list) = &raw.hook {
        policy.hook = load_hook(ctx, list)?;
    }
    if let Some(v) = &raw.webhook {
        policy.webhook = Some(load_webhook(ctx, v)?);
    }
    if let Some(v) = &raw.webhook_ca_file {
        let path = abs_path(ctx, v, "webhook_ca_file")?;
        ctx.refer(v.span(), "webhook_ca_file", &path, FileKind::CaBundle);
        policy.webhook_ca_file = Some(path);
        if policy.webhook.is_none() {
            return Err(ctx.err(
                v.span(),
                "`webhook_ca_file` is set but there is no `webhook`",
                "add webhook = \"https://...\", or remove webhook_ca_file",
            ));
        }
    }
    Ok(policy)
}

/// `hook`: an argv whose first element is an absolute path.
fn load_hook(ctx: &Ctx<'_>, list: &S<Vec<S<String>>>) -> Result<Vec<String>, ConfigError> {
    let Some(first) = list.get_ref().first() else {
        return Err(ctx.err(
            list.span(),
            "hook is empty",
            "give the command to run on escalation, e.g. hook = [\"/usr/local/bin/page-operator\", \"--urgent\"], or remove the key",
        ));
    };
    let argv = argv(ctx, list.get_ref(), "hook")?;
    if !first.get_ref().starts_with('/') {
        return Err(ctx.err(
            first.span(),
            format!("hook command `{}` is not an absolute path", first.get_ref()),
            "the hook runs without a shell or PATH lookup: write the program as an absolute path, e.g. \"/usr/local/bin/page-operator\"",
        ));
    }
    ctx.refer(
        first.span(),
        "hook",
        Path::new(first.get_ref()),
        FileKind::Program,
    );
    Ok(argv)
}

/// `webhook`: an https:// URL with a host.
fn load_webhook(ctx: &Ctx<'_>, value: &S<String>) -> Result<Url, ConfigError> {
    no_control(ctx, value, "webhook")?;
    let example =
        "write an https URL, e.g. webhook = \"https://alerts.example.net/hooks/mcrecover\"";
    let url = Url::parse(value.get_ref()).map_err(|e| {
        ctx.err(
            value.span(),
            format!("invalid webhook URL `{}`: {e}", value.get_ref()),
            example,
        )
    })?;
    if url.scheme() != "https" {
        return Err(ctx.err(
            value.span(),
            format!("webhook must be an https:// URL, not {}://", url.scheme()),
            "the escalation event is posted with TLS only; use https:// (and webhook_ca_file for a private CA)",
        ));
    }
    if url.host().is_none() {
        return Err(ctx.err(value.span(), "the webhook URL has no host", example));
    }
    Ok(url)
}

/// `[services.<name>.remedy]` of a container service.
pub(crate) fn load_remedy(
    ctx: &Ctx<'_>,
    name: &str,
    raw_span: &S<RawRemedy>,
    container: &Container,
) -> Result<Remedy, ConfigError> {
    let raw = raw_span.get_ref();
    let list = match &raw.quarantine {
        None => {
            return Err(ctx.err(
                raw_span.span(),
                format!("remedy of `{name}` has no `quarantine`"),
                "list the files to move aside, e.g. quarantine = [\"/srv/app/app.db\"]",
            ))
        }
        Some(l) if l.get_ref().is_empty() => {
            return Err(ctx.err(
                l.span(),
                format!("remedy of `{name}` has an empty `quarantine`"),
                "list at least one file to move aside, or remove the remedy table",
            ))
        }
        Some(l) => l,
    };
    // Host directories of bind mounts (named volumes live in podman's storage).
    let dirs: Vec<&Path> = container
        .volumes
        .iter()
        .filter(|v| v.host.starts_with('/'))
        .map(|v| Path::new(v.host.as_str()))
        .collect();
    let mut quarantine: Vec<PathBuf> = Vec::with_capacity(list.get_ref().len());
    for value in list.get_ref() {
        let path = abs_path(ctx, value, "quarantine path")?;
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(ctx.err(
                value.span(),
                format!("quarantine path `{}` contains `..`", value.get_ref()),
                "write the path without `..` components",
            ));
        }
        let Some(dir) = dirs.iter().find(|d| path.starts_with(d)) else {
            let help = if dirs.is_empty() {
                format!("`{name}` has no bind-mounted host directory: add it to `volumes`, e.g. \"/srv/{name}:/srv/{name}\"")
            } else {
                let shown: Vec<String> =
                    dirs.iter().map(|d| format!("`{}`", d.display())).collect();
                format!(
                    "name a file inside one of the service's volume host directories: {}",
                    shown.join(", ")
                )
            };
            return Err(ctx.err(
                value.span(),
                format!(
                    "quarantine path `{}` is not inside a volume of `{name}`",
                    value.get_ref()
                ),
                help,
            ));
        };
        if path.components().eq(dir.components()) {
            return Err(ctx.err(
                value.span(),
                format!(
                    "quarantine path `{}` is the whole volume `{}`",
                    value.get_ref(),
                    dir.display()
                ),
                "name the files to move aside (e.g. the database files), not the volume directory",
            ));
        }
        if path.starts_with(dir.join("quarantine")) {
            return Err(ctx.err(
                value.span(),
                format!(
                    "quarantine path `{}` is inside `{}`",
                    value.get_ref(),
                    dir.join("quarantine").display()
                ),
                "that directory receives the quarantined files; name the live files instead",
            ));
        }
        if quarantine
            .iter()
            .any(|q| q.components().eq(path.components()))
        {
            return Err(ctx.err(
                value.span(),
                format!("quarantine path `{}` is listed twice", value.get_ref()),
                "remove the duplicate",
            ));
        }
        quarantine.push(path);
    }
    let mut on = Vec::new();
    for id in raw
        .on
        .as_ref()
        .map(|l| l.get_ref().as_slice())
        .unwrap_or_default()
    {
        let text = id.get_ref().as_str();
        let ids = diagnose::SIGNATURES.iter().map(|s| s.id);
        match diagnose::signature(text) {
            None => {
                let known: Vec<&str> = ids.clone().filter(|i| !is_benign(i)).collect();
                return Err(ctx.err(
                    id.span(),
                    format!("unknown diagnosis `{text}` in `on`"),
                    format!(
                        "{}known diagnosis ids: {}",
                        did_you_mean(text, ids),
                        known.join(", ")
                    ),
                ));
            }
            Some(sig) if sig.benign => {
                return Err(ctx.err(
                    id.span(),
                    format!("diagnosis `{text}` is benign and never triggers a remedy"),
                    "remove it from `on`",
                ))
            }
            Some(_) => {}
        }
        if !on.iter().any(|o: &String| o == text) {
            on.push(text.to_string());
        }
    }
    Ok(Remedy { quarantine, on })
}

/// Whether the signature `id` is a known harmless message.
fn is_benign(id: &str) -> bool {
    diagnose::signature(id).is_some_and(|s| s.benign)
}
