//! Small validators shared by the loaders: choices, durations, paths,
//! names, control characters and "did you mean" suggestions.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use super::duration::{parse_duration, DURATION_FORMS};
use super::error::{ConfigError, Ctx};
use super::raw::S;

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&word.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `` did you mean `x`? `` (with a trailing space) or nothing.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    suggest(word, candidates).map_or_else(String::new, |s| format!("did you mean `{s}`? "))
}

/// Render a list as `` `a`, `b` or `c` ``.
pub(crate) fn one_of(options: &[&str]) -> String {
    let quoted: Vec<String> = options.iter().map(|o| format!("`{o}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Map a string value onto one of `options`.
pub(crate) fn choice<T: Copy>(
    ctx: &Ctx<'_>,
    value: &S<String>,
    key: &str,
    options: &[(&str, T)],
) -> Result<T, ConfigError> {
    let text = value.get_ref().as_str();
    if let Some((_, v)) = options.iter().find(|(name, _)| *name == text) {
        return Ok(*v);
    }
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    Err(ctx.err(
        value.span(),
        format!("invalid {key} `{text}`"),
        format!(
            "{}{key} must be {}",
            did_you_mean(text, names.iter().copied()),
            one_of(&names)
        ),
    ))
}

/// Parse a duration value.
pub(crate) fn duration(
    ctx: &Ctx<'_>,
    value: &S<String>,
    key: &str,
) -> Result<Duration, ConfigError> {
    parse_duration(value.get_ref())
        .map_err(|msg| ctx.err(value.span(), format!("{key}: {msg}"), DURATION_FORMS))
}

/// Parse a duration value that must not be zero.
pub(crate) fn nonzero_duration(
    ctx: &Ctx<'_>,
    value: &S<String>,
    key: &str,
) -> Result<Duration, ConfigError> {
    let d = duration(ctx, value, key)?;
    if d.is_zero() {
        return Err(ctx.err(
            value.span(),
            format!("{key} must be greater than 0"),
            format!("give {key} a positive duration, e.g. \"5s\""),
        ));
    }
    Ok(d)
}

/// A threshold (count) that must be at least 1.
pub(crate) fn threshold(ctx: &Ctx<'_>, value: &S<u32>, key: &str) -> Result<u32, ConfigError> {
    if *value.get_ref() == 0 {
        return Err(ctx.err(
            value.span(),
            format!("{key} must be at least 1"),
            format!("set {key} to 1 or more (it counts consecutive results)"),
        ));
    }
    Ok(*value.get_ref())
}

/// An absolute path.
pub(crate) fn abs_path(
    ctx: &Ctx<'_>,
    value: &S<String>,
    key: &str,
) -> Result<PathBuf, ConfigError> {
    let text = value.get_ref();
    no_control(ctx, value, key)?;
    if !text.starts_with('/') {
        return Err(ctx.err(
            value.span(),
            format!("{key} `{text}` is not an absolute path"),
            format!("write {key} as an absolute path starting with `/`"),
        ));
    }
    Ok(PathBuf::from(text))
}

/// A human name for a control character.
fn control_name(c: char) -> String {
    let name = match c {
        '\n' => "line feed",
        '\r' => "carriage return",
        '\t' => "tab",
        '\0' => "NUL",
        '\x1b' => "escape",
        '\x7f' => "delete",
        _ => "control character",
    };
    format!("U+{:04X} {name}", u32::from(c))
}

/// Reject control characters (they cannot be written into unit files).
pub(crate) fn no_control(ctx: &Ctx<'_>, value: &S<String>, what: &str) -> Result<(), ConfigError> {
    if let Some(c) = value.get_ref().chars().find(|c| c.is_control()) {
        return Err(ctx.err(
            value.span(),
            format!("{what} contains a control character ({})", control_name(c)),
            "remove it: control characters cannot be written into unit files",
        ));
    }
    Ok(())
}

/// A non-empty string without control characters.
pub(crate) fn text(ctx: &Ctx<'_>, value: &S<String>, what: &str) -> Result<String, ConfigError> {
    if value.get_ref().is_empty() {
        return Err(ctx.err(
            value.span(),
            format!("{what} is empty"),
            format!("give {what} a value or remove the key"),
        ));
    }
    no_control(ctx, value, what)?;
    Ok(value.get_ref().clone())
}

/// Every element of a list: no control characters (named `key[i]`).
pub(crate) fn argv(
    ctx: &Ctx<'_>,
    list: &[S<String>],
    key: &str,
) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            no_control(ctx, v, &format!("{key}[{i}]"))?;
            Ok(v.get_ref().clone())
        })
        .collect()
}

/// Whether `name` matches `[A-Za-z0-9][A-Za-z0-9_.-]*`.
pub(crate) fn is_unit_safe(name: &str, allow_dot: bool) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (allow_dot && c == '.'))
}

/// Whether `name` is a user or group name or a numeric id as podman and
/// `runuser` take it: `[A-Za-z0-9_][A-Za-z0-9_.-]*` (never starting with
/// `-`, so it cannot be read as an option).
pub(crate) fn is_name_part(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The span of an optional value, or `fallback`.
pub(crate) fn span_or<T>(value: Option<&S<T>>, fallback: &Range<usize>) -> Range<usize> {
    value.map_or_else(|| fallback.clone(), S::span)
}
