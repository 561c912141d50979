//! One line per event on stdout (`standin name=NAME event=EVENT key=value...`), never per request.
//! Writes ignore errors: a closed stdout must not kill PID 1.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static NAME: OnceLock<String> = OnceLock::new();

/// Sets the service name used in every line (first call wins).
pub(crate) fn set_name(name: &str) {
    let _ = NAME.set(name.to_owned());
}

/// Logs one event line.
pub(crate) fn event(event: &str, fields: &str) {
    let name = NAME.get().map_or("standin", String::as_str);
    let line = if fields.is_empty() {
        format!("standin name={name} event={event}\n")
    } else {
        format!("standin name={name} event={event} {fields}\n")
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// Milliseconds since the unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
