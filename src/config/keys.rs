//! Every configuration key the loader accepts, as dotted paths (`*` stands for
//! any service name, stage or check). Read from the loader's own serde
//! structs, so the list cannot drift from what `check-config` accepts; the
//! NixOS module's drift test and the docs test compare against it.

use super::checks::{all_check_keys, fields_of};
use super::raw::{RawPlatform, RawRemedy, RawSchedule, RawService, RawStage, RawWatch};

/// All accepted keys, sorted: `platform.name`, `services.*.checks.*.url`, ...
pub fn known_keys() -> Vec<String> {
    let mut keys = Vec::new();
    let mut add = |prefix: &str, fields: &[&str]| {
        keys.extend(fields.iter().map(|f| format!("{prefix}.{f}")));
    };
    add("platform", fields_of::<RawPlatform>());
    add("check_defaults", fields_of::<RawSchedule>());
    add("watch", fields_of::<RawWatch>());
    add("metrics", fields_of::<super::metrics::RawMetrics>());
    add("stages.*", fields_of::<RawStage>());
    let service: Vec<&str> = fields_of::<RawService>()
        .iter()
        .copied()
        .filter(|f| *f != "checks" && *f != "remedy")
        .collect();
    add("services.*", &service);
    add("services.*.remedy", fields_of::<RawRemedy>());
    let checks: Vec<&str> = all_check_keys().into_iter().collect();
    add("services.*.checks.*", &checks);
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::known_keys;

    #[test]
    fn lists_every_section() {
        let keys = known_keys();
        for k in [
            "platform.name",
            "check_defaults.interval",
            "watch.escalate_after",
            "stages.*.on_failure",
            "services.*.image",
            "services.*.remedy.quarantine",
            "services.*.checks.*.kind",
            "services.*.checks.*.url",
            "services.*.checks.*.argv",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
        assert!(!keys.iter().any(|x| x == "services.*.checks"));
    }
}
