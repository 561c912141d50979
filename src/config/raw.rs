//! The configuration as written: serde structs that keep the span of every
//! value later validation may need to point at. Unknown keys are rejected here
//! (`deny_unknown_fields`); checks are read separately (see `checks.rs`).

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::Spanned;

/// A value with its byte span in the source.
pub(crate) type S<T> = Spanned<T>;
/// An optional spanned string.
pub(crate) type OptStr = Option<S<String>>;
/// An optional spanned list of spanned strings.
pub(crate) type OptList = Option<S<Vec<S<String>>>>;

/// The whole document (minus the checks, which `load` removes first).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) platform: Option<S<RawPlatform>>,
    pub(crate) check_defaults: Option<S<RawCheckDefaults>>,
    pub(crate) stages: Option<S<Vec<S<RawStage>>>>,
    pub(crate) services: Option<S<BTreeMap<S<String>, S<RawService>>>>,
    pub(crate) watch: Option<S<RawWatch>>,
    pub(crate) metrics: Option<S<super::metrics::RawMetrics>>,
}

/// `[watch]`: the daemon's restart, backoff and escalation policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWatch {
    pub(crate) restart_owner: OptStr,
    pub(crate) backoff_initial: OptStr,
    pub(crate) backoff_max: OptStr,
    pub(crate) backoff_reset: OptStr,
    pub(crate) escalate_after: Option<S<u32>>,
    pub(crate) escalate_window: OptStr,
    pub(crate) state_dir: OptStr,
    pub(crate) hook: OptList,
    pub(crate) hook_timeout: OptStr,
    pub(crate) webhook: OptStr,
    pub(crate) webhook_ca_file: OptStr,
    pub(crate) webhook_timeout: OptStr,
    pub(crate) wait_reminder: OptStr,
    pub(crate) foreign: OptStr,
}

/// `[services.<name>.remedy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemedy {
    pub(crate) quarantine: OptList,
    pub(crate) on: OptList,
}

/// `[platform]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlatform {
    pub(crate) name: OptStr,
    pub(crate) node: OptStr,
    pub(crate) mode: OptStr,
    pub(crate) user: OptStr,
    pub(crate) uid: Option<S<u32>>,
    pub(crate) gid: Option<S<u32>>,
    pub(crate) home: OptStr,
    pub(crate) backend: OptStr,
    pub(crate) image_prefix: OptStr,
    pub(crate) image_archive: OptStr,
    pub(crate) pull: OptStr,
    pub(crate) registry_service: OptStr,
    pub(crate) quadlet_dir: OptStr,
    pub(crate) unit_dir: OptStr,
    pub(crate) podman: OptStr,
    pub(crate) mcrecover: OptStr,
    pub(crate) config_path: OptStr,
    pub(crate) prerequisites: OptList,
}

/// `[check_defaults]`, also the schedule keys of every check.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub(crate) interval: OptStr,
    pub(crate) timeout: OptStr,
    pub(crate) failure_threshold: Option<S<u32>>,
    pub(crate) success_threshold: Option<S<u32>>,
    pub(crate) start_period: OptStr,
}

/// `[check_defaults]`.
pub(crate) type RawCheckDefaults = RawSchedule;

/// One `[[stages]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStage {
    pub(crate) name: OptStr,
    pub(crate) services: OptList,
    pub(crate) timeout: OptStr,
    pub(crate) on_failure: OptStr,
    pub(crate) rto: OptStr,
}

/// One `[services.<name>]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) description: OptStr,
    pub(crate) image: OptStr,
    pub(crate) container_name: OptStr,
    pub(crate) network: OptStr,
    pub(crate) ports: OptList,
    pub(crate) volumes: OptList,
    pub(crate) user: OptStr,
    pub(crate) command: OptList,
    pub(crate) env: Option<S<BTreeMap<S<String>, S<String>>>>,
    pub(crate) restart: OptStr,
    pub(crate) podman_args: OptList,
    pub(crate) after: OptList,
    pub(crate) requires: OptList,
    pub(crate) external: Option<S<bool>>,
    pub(crate) remedy: Option<S<RawRemedy>>,
    pub(crate) gate: OptStr,
    pub(crate) rto: OptStr,
    /// Read from the spanned document instead (`checks.rs`); listed so that
    /// unknown-key suggestions know it.
    #[allow(dead_code)]
    pub(crate) checks: Option<IgnoredAny>,
}
