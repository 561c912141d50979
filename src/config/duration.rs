//! Duration strings such as `"500ms"`, `"120s"`, `"5m"`, `"1h"` and
//! combinations like `"1m30s"` (units largest first, each at most once).

use std::time::Duration;

/// The accepted forms, for help texts.
pub(crate) const DURATION_FORMS: &str =
    "write a whole number followed by a unit (ms, s, m, h), largest unit first, e.g. \"500ms\", \"120s\", \"5m\", \"1h\" or \"1m30s\"";

/// Units in the order they must appear, with their length in milliseconds.
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Parse a duration string; the error says what is wrong (without the help).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    // Index into UNITS of the next unit allowed (units must strictly decrease).
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration `{text}`: expected a number at `{rest}`"
            ));
        }
        let (number, tail) = rest.split_at(digits);
        let letters = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(letters);
        if unit.is_empty() {
            return Err(if tail.is_empty() {
                format!("invalid duration `{text}`: `{number}` has no unit")
            } else {
                format!("invalid duration `{text}`: unexpected `{tail}`")
            });
        }
        let Some(pos) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!("invalid duration `{text}`: unknown unit `{unit}`"));
        };
        if pos < next_unit {
            return Err(format!(
                "invalid duration `{text}`: unit `{unit}` is repeated or out of order"
            ));
        }
        next_unit = pos + 1;
        let value: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration `{text}`: number too large"))?;
        total_ms = value
            .checked_mul(UNITS[pos].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("invalid duration `{text}`: too large"))?;
        rest = tail;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Format a duration in the accepted syntax, largest unit first (`"1m30s"`,
/// `"500ms"`, `"0s"`); `parse_duration` gives it back.
pub(crate) fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, factor) in UNITS {
        if ms >= factor {
            out.push_str(&format!("{}{unit}", ms / factor));
            ms %= factor;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_documented_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("1h2m3s4ms"),
            Ok(Duration::from_millis(3_723_004))
        );
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn rejects_other_forms() {
        for bad in [
            "",
            "10",
            "1.5s",
            "10 s",
            " 10s",
            "10s ",
            "10sec",
            "s",
            "30s1m",
            "1m1m",
            "-1s",
            "1d",
            "1m30",
            "99999999999999999999s",
            "18446744073709551615h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn messages_say_what_is_wrong() {
        assert_eq!(
            parse_duration("10").unwrap_err(),
            "invalid duration `10`: `10` has no unit"
        );
        assert_eq!(
            parse_duration("10sec").unwrap_err(),
            "invalid duration `10sec`: unknown unit `sec`"
        );
        assert_eq!(
            parse_duration("30s1m").unwrap_err(),
            "invalid duration `30s1m`: unit `m` is repeated or out of order"
        );
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(90_500)), "1m30s500ms");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }

    proptest::proptest! {
        /// Formatting then parsing gives the same duration (ms precision).
        #[test]
        fn format_parses_back(ms in 0u64..1_000_000_000) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }


        /// Any combination of units, largest first, parses to the sum.
        #[test]
        fn combinations_add_up(h in 0u64..48, m in 0u64..600, sec in 0u64..600, ms in 0u64..5000,
                               mask in 1u8..16) {
            let mut text = String::new();
            let mut total = 0;
            for (bit, value, unit, factor) in [(8, h, "h", 3_600_000), (4, m, "m", 60_000), (2, sec, "s", 1_000), (1, ms, "ms", 1)] {
                if mask & bit != 0 {
                    text.push_str(&format!("{value}{unit}"));
                    total += value * factor;
                }
            }
            proptest::prop_assert_eq!(parse_duration(&text), Ok(Duration::from_millis(total)));
        }

        /// Arbitrary text never panics.
        #[test]
        fn never_panics(text in "\\PC{0,12}") {
            let _ = parse_duration(&text);
        }
    }
}
