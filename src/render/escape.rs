//! Escaping of values written into unit files and quadlet files.
//!
//! Rules (systemd.syntax(7), systemd.service(5) "Command lines", and what the
//! real quadlet 5.4 generator was observed to do):
//!
//! - Specifiers (`%n`, `%h`, ...) are expanded in almost every setting, so a
//!   literal `%` is always written `%%`.
//! - In command lines (`ExecStart=`, quadlet `Exec=`/`PodmanArgs=`/
//!   `Environment=`, which quadlet copies into `ExecStart=`), `$VAR` and
//!   `${VAR}` are expanded, so a literal `$` is written `$$`; a word that is a
//!   lone `;` separates commands and is written `\;`; a word containing
//!   whitespace, quotes or backslashes is written in `"..."` with `\` and `"`
//!   escaped; the empty word is `""`.
//! - Control characters (newline, tab, ...) are rejected: they would end the
//!   line or be reinterpreted, and no real argument needs them.
//! - Quadlet splits `Exec=`/`PodmanArgs=` itself and re-quotes the words for
//!   the generated `ExecStart=`; it drops an empty word and emits a lone `;`
//!   unescaped (observed with quadlet 5.4.2), so those two cannot be passed
//!   through a `.container` file and are rejected for it
//!   ([`quadlet_exec_word`]).
//! - Quadlet copies `Volume=`, `PublishPort=`, `Image=`, `ContainerName=`
//!   as raw strings (and `Volume=` paths into `RequiresMountsFor=`, which
//!   splits on whitespace): such values may not contain whitespace, quotes,
//!   backslashes or `$` ([`quadlet_raw`]).
//! - A line that ends in a backslash continues on the next line, in systemd
//!   (an odd number of trailing backslashes) and in quadlet (any trailing
//!   backslash, also after trailing whitespace, which quadlet strips first).
//!   No escape exists for it in a plain value such as `Description=`, so a
//!   plain value ending in `\` is rejected ([`plain`]): it would swallow the
//!   next line of the unit (an `After=`, or quadlet's `[Container]` header).
//!   Command-line words never end a line with a backslash: a word with a
//!   backslash is quoted.
//! - Quadlet reads a value ending in `.image`/`.build` (`Image=`), `.network`
//!   (`Network=`) or a volume source ending in `.volume` (`Volume=`) as a
//!   reference to another quadlet unit ([`quadlet_unit_suffix`]).
//! - A value podman receives as an argument of its own (the image, the value
//!   of `--user`, ...) must not start with `-`: podman would parse it as an
//!   option (`image = "--privileged"`) ([`podman_operand`]).
//!
//! [`super::rules`] applies these to every value of a service; the
//! configuration loader calls the same function, so what render refuses is
//! refused by `check-config` first, with a location.

use std::fmt::Write as _;

/// Why a value cannot be written into a unit file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscapeError {
    /// The value contains a control character.
    #[error("{value:?} contains the control character U+{:04X}, which cannot be written into a unit file", u32::from(*ch))]
    ControlChar {
        /// The offending value.
        value: String,
        /// The control character.
        ch: char,
    },
    /// The value contains a character not allowed in this setting.
    #[error("{value:?} contains {ch:?}, which is not allowed in {setting}")]
    Forbidden {
        /// The offending value.
        value: String,
        /// The character.
        ch: char,
        /// The setting (e.g. `quadlet Volume=`).
        setting: &'static str,
    },
    /// The word cannot survive quadlet's re-quoting.
    #[error("{value:?} cannot be passed through a quadlet .container file ({reason}); use backend = \"service\"")]
    NotRepresentable {
        /// The offending value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A plain value ends in a backslash: the line would continue on the next.
    #[error("{value:?} ends with a backslash, which systemd and quadlet read as a line continuation (the next line of the unit would be joined to it)")]
    TrailingBackslash {
        /// The offending value.
        value: String,
    },
    /// A value podman takes as an argument of its own starts with `-`.
    #[error("{value:?} starts with `-`: podman would read it as an option, not as the {what}")]
    LeadingDash {
        /// The offending value.
        value: String,
        /// What it should be, e.g. `image`.
        what: &'static str,
    },
    /// Quadlet reads the value as a reference to another quadlet unit.
    #[error("{value:?} ends with `{suffix}`, which quadlet reads as a reference to a {suffix} unit in {setting}")]
    QuadletReference {
        /// The offending value.
        value: String,
        /// The suffix, e.g. `.network`.
        suffix: &'static str,
        /// The setting, e.g. `quadlet Network=`.
        setting: &'static str,
    },
    /// (Parsing only) malformed command line.
    #[error("malformed command line: {0}")]
    Malformed(String),
}

fn check_control(value: &str) -> Result<(), EscapeError> {
    match value.chars().find(|c| c.is_control()) {
        Some(ch) => Err(EscapeError::ControlChar {
            value: value.to_string(),
            ch,
        }),
        None => Ok(()),
    }
}

/// Escape a plain setting value (e.g. `Description=`, a path in a setting
/// that is not a command line): `%` -> `%%`; control characters and a
/// trailing backslash (a line continuation, also before trailing whitespace)
/// rejected.
pub fn plain(value: &str) -> Result<String, EscapeError> {
    check_control(value)?;
    if value.trim_end().ends_with('\\') {
        return Err(EscapeError::TrailingBackslash {
            value: value.to_string(),
        });
    }
    Ok(value.replace('%', "%%"))
}

/// A value podman receives as an argument of its own (`what`: the image,
/// the value of `--user`, a container name, ...) must not be empty or start
/// with `-`.
pub fn podman_operand(value: &str, what: &'static str) -> Result<(), EscapeError> {
    if value.is_empty() {
        return Err(EscapeError::NotRepresentable {
            value: String::new(),
            reason: "empty value",
        });
    }
    if value.starts_with('-') {
        return Err(EscapeError::LeadingDash {
            value: value.to_string(),
            what,
        });
    }
    Ok(())
}

/// A value quadlet would read as a reference to another quadlet unit: one
/// ending in any of `suffixes` (e.g. `.network` in `Network=`).
pub fn quadlet_unit_suffix(
    value: &str,
    suffixes: &[&'static str],
    setting: &'static str,
) -> Result<(), EscapeError> {
    match suffixes.iter().find(|s| value.ends_with(**s)) {
        Some(suffix) => Err(EscapeError::QuadletReference {
            value: value.to_string(),
            suffix,
            setting,
        }),
        None => Ok(()),
    }
}

/// Escape one word of a systemd command line (`ExecStart=` and friends).
pub fn exec_word(word: &str) -> Result<String, EscapeError> {
    check_control(word)?;
    if word.is_empty() {
        return Ok("\"\"".to_string());
    }
    if word == ";" {
        return Ok("\\;".to_string());
    }
    let needs_quotes = word
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'));
    let mut out = String::with_capacity(word.len() + 2);
    if needs_quotes {
        out.push('"');
    }
    for c in word.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\\' if needs_quotes => out.push_str("\\\\"),
            '"' if needs_quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    if needs_quotes {
        out.push('"');
    }
    Ok(out)
}

/// Escape a whole argv into a command line, words separated by one space.
/// On error, returns the index of the offending word with the error.
pub fn exec_line<S: AsRef<str>>(argv: &[S]) -> Result<String, (usize, EscapeError)> {
    let mut out = String::new();
    for (i, w) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&exec_word(w.as_ref()).map_err(|e| (i, e))?);
    }
    Ok(out)
}

/// Escape one word of a quadlet `Exec=`/`PodmanArgs=`/`Environment=` list:
/// like [`exec_word`], but an empty word or a lone `;` is rejected (quadlet
/// would drop or mis-quote it).
pub fn quadlet_exec_word(word: &str) -> Result<String, EscapeError> {
    if word.is_empty() {
        return Err(EscapeError::NotRepresentable {
            value: String::new(),
            reason: "quadlet drops empty arguments",
        });
    }
    if word == ";" {
        return Err(EscapeError::NotRepresentable {
            value: word.to_string(),
            reason:
                "quadlet emits a lone ';' unescaped, which systemd reads as a command separator",
        });
    }
    exec_word(word)
}

/// Escape a quadlet argument list; on error, the index of the offending word.
pub fn quadlet_exec_line<S: AsRef<str>>(argv: &[S]) -> Result<String, (usize, EscapeError)> {
    let mut out = String::new();
    for (i, w) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&quadlet_exec_word(w.as_ref()).map_err(|e| (i, e))?);
    }
    Ok(out)
}

/// Escape a value that quadlet copies verbatim (`Image=`, `ContainerName=`,
/// `PublishPort=`, `Volume=`, `User=`, `Network=`): `%` -> `%%`; whitespace,
/// quotes, backslashes, `$` and control characters are rejected.
pub fn quadlet_raw(value: &str, setting: &'static str) -> Result<String, EscapeError> {
    check_control(value)?;
    if let Some(ch) = value
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '$'))
    {
        return Err(EscapeError::Forbidden {
            value: value.to_string(),
            ch,
            setting,
        });
    }
    if value.is_empty() {
        return Err(EscapeError::NotRepresentable {
            value: String::new(),
            reason: "empty value",
        });
    }
    Ok(value.replace('%', "%%"))
}

/// Make a string safe for a `#` comment line (control characters become `?`).
pub fn comment(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Split a command line the way systemd does (the inverse of [`exec_line`]):
/// `%%` -> `%`, words split on whitespace, `"..."`/`'...'` quoting, C escapes,
/// a lone `\;` is the word `;`, then `$$` -> `$` per word. Other specifiers
/// and `$VAR` references are rejected (they would be expanded). Used by tests
/// and the end-to-end verification to check the round trip.
pub fn split_exec(line: &str) -> Result<Vec<String>, EscapeError> {
    // Specifiers first (systemd expands them over the whole line).
    let mut s = String::with_capacity(line.len());
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        if c == '%' {
            match it.next() {
                Some('%') => s.push('%'),
                other => {
                    return Err(EscapeError::Malformed(format!(
                        "specifier %{} would be expanded",
                        other.map(String::from).unwrap_or_default()
                    )))
                }
            }
        } else {
            s.push(c);
        }
    }
    let chars: Vec<char> = s.chars().collect();
    let mut words = Vec::new();
    let mut i = 0;
    let ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    loop {
        while i < chars.len() && ws(chars[i]) {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        if chars[i] == '\\'
            && chars.get(i + 1) == Some(&';')
            && chars.get(i + 2).is_none_or(|c| ws(*c))
        {
            words.push(";".to_string());
            i += 2;
            continue;
        }
        if chars[i] == ';' && chars.get(i + 1).is_none_or(|c| ws(*c)) {
            return Err(EscapeError::Malformed(
                "a lone ';' separates commands".into(),
            ));
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            match (quote, c) {
                (None, c) if ws(c) => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => {
                    i += 1;
                    let e = chars
                        .get(i)
                        .ok_or_else(|| EscapeError::Malformed("trailing backslash".into()))?;
                    word.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'a' => '\u{7}',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'v' => '\u{b}',
                        's' => ' ',
                        '\\' | '"' | '\'' | ' ' | ';' => *e,
                        other => {
                            return Err(EscapeError::Malformed(format!(
                                "unsupported escape \\{other}"
                            )))
                        }
                    });
                }
                (_, c) => word.push(c),
            }
            i += 1;
        }
        if quote.is_some() {
            return Err(EscapeError::Malformed("unterminated quote".into()));
        }
        words.push(unescape_dollars(&word)?);
    }
    Ok(words)
}

fn unescape_dollars(word: &str) -> Result<String, EscapeError> {
    let mut out = String::with_capacity(word.len());
    let mut it = word.chars();
    while let Some(c) = it.next() {
        if c == '$' {
            match it.next() {
                Some('$') => out.push('$'),
                other => {
                    let mut msg = String::from("variable reference $");
                    if let Some(o) = other {
                        let _ = write!(msg, "{o}");
                    }
                    msg.push_str(" would be expanded");
                    return Err(EscapeError::Malformed(msg));
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_words_stay_plain() {
        assert_eq!(exec_word("server").unwrap(), "server");
        assert_eq!(exec_word("--config").unwrap(), "--config");
        assert_eq!(
            exec_word("/srv/mcns/mcns.toml").unwrap(),
            "/srv/mcns/mcns.toml"
        );
        assert_eq!(exec_word("a;b").unwrap(), "a;b");
    }

    #[test]
    fn specials() {
        assert_eq!(exec_word("").unwrap(), "\"\"");
        assert_eq!(exec_word(";").unwrap(), "\\;");
        assert_eq!(exec_word("100%").unwrap(), "100%%");
        assert_eq!(exec_word("%h").unwrap(), "%%h");
        assert_eq!(exec_word("$HOME").unwrap(), "$$HOME");
        assert_eq!(exec_word("${X}").unwrap(), "$${X}");
        assert_eq!(exec_word("a b").unwrap(), "\"a b\"");
        assert_eq!(exec_word("a\"b").unwrap(), "\"a\\\"b\"");
        assert_eq!(exec_word("it's").unwrap(), "\"it's\"");
        assert_eq!(exec_word("back\\slash").unwrap(), "\"back\\\\slash\"");
        assert_eq!(exec_word("a b $X 5%").unwrap(), "\"a b $$X 5%%\"");
    }

    #[test]
    fn control_chars_are_rejected() {
        for bad in ["a\nb", "tab\there", "\u{7f}", "x\0"] {
            let err = exec_word(bad).unwrap_err();
            assert!(matches!(err, EscapeError::ControlChar { .. }), "{bad:?}");
            assert!(err.to_string().contains("control character"));
        }
        assert!(plain("line\nbreak").is_err());
    }

    #[test]
    fn plain_rejects_a_line_continuation() {
        for bad in ["trailing \\", "two \\\\", "space after \\ ", "\\"] {
            assert!(
                matches!(plain(bad), Err(EscapeError::TrailingBackslash { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(plain("a \\ in the middle").unwrap(), "a \\ in the middle");
        assert_eq!(plain("50% \"q\" $X").unwrap(), "50%% \"q\" $X");
    }

    #[test]
    fn operands_and_quadlet_references() {
        assert!(podman_operand("mcns:v1", "image").is_ok());
        assert!(matches!(
            podman_operand("--privileged", "image"),
            Err(EscapeError::LeadingDash { what: "image", .. })
        ));
        assert!(podman_operand("", "image").is_err());
        assert!(quadlet_unit_suffix("mcpnet", &[".network"], "Network=").is_ok());
        let err = quadlet_unit_suffix("x.network", &[".network"], "Network=").unwrap_err();
        assert!(
            err.to_string().contains("reference to a .network unit"),
            "{err}"
        );
    }

    #[test]
    fn exec_line_reports_index() {
        let (i, _) = exec_line(&["a", "b", "c\nd"]).unwrap_err();
        assert_eq!(i, 2);
        assert_eq!(
            exec_line(&["/usr/bin/podman", "run", "a b", ";"]).unwrap(),
            "/usr/bin/podman run \"a b\" \\;"
        );
    }

    #[test]
    fn quadlet_rules() {
        assert!(matches!(
            quadlet_exec_word(";"),
            Err(EscapeError::NotRepresentable { .. })
        ));
        assert!(matches!(
            quadlet_exec_word(""),
            Err(EscapeError::NotRepresentable { .. })
        ));
        assert_eq!(quadlet_exec_word("a b").unwrap(), "\"a b\"");
        assert_eq!(
            quadlet_raw("/srv/mcns:/srv/mcns:Z", "Volume=").unwrap(),
            "/srv/mcns:/srv/mcns:Z"
        );
        assert_eq!(quadlet_raw("/srv/100%", "Volume=").unwrap(), "/srv/100%%");
        for bad in ["/srv/a b:/x", "/srv/$x:/x", "/srv/\"q\":/x", ""] {
            assert!(quadlet_raw(bad, "Volume=").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn split_inverts_known_lines() {
        assert_eq!(
            split_exec("/usr/bin/podman run \"a b\" \\; $$HOME %%h 'x y' \"q\\\"\"").unwrap(),
            vec![
                "/usr/bin/podman",
                "run",
                "a b",
                ";",
                "$HOME",
                "%h",
                "x y",
                "q\""
            ]
        );
        assert!(split_exec("a ; b").is_err());
        assert!(split_exec("a $HOME").is_err());
        assert!(split_exec("a %h").is_err());
    }

    proptest! {
        #[test]
        fn round_trip(argv in proptest::collection::vec(
            "([a-zA-Z0-9 ;%$\"'\\\\=:/,.{}~#*?!&|<>()\\[\\]-]|é|ü|\u{a0}){0,12}", 0..8))
        {
            let line = exec_line(&argv).unwrap();
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(split_exec(&line).unwrap(), argv);
        }

        #[test]
        fn quadlet_round_trip_or_reject(argv in proptest::collection::vec(
            "([a-z ;%$\"'\\\\]){0,6}", 1..6))
        {
            match quadlet_exec_line(&argv) {
                Ok(line) => prop_assert_eq!(split_exec(&line).unwrap(), argv),
                Err((i, _)) => prop_assert!(argv[i].is_empty() || argv[i] == ";"),
            }
        }

        #[test]
        fn control_chars_never_pass(prefix in "[a-z]{0,4}", c in proptest::char::range('\0', '\u{1f}'), suffix in "[a-z ]{0,4}") {
            let word = format!("{prefix}{c}{suffix}");
            prop_assert!(exec_word(&word).is_err());
            prop_assert!(plain(&word).is_err());
        }
    }
}
