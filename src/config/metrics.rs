//! `[metrics]`: where the daemon exposes its Prometheus metrics
//! (docs/metrics.md): a node_exporter textfile-collector file and/or an HTTP
//! endpoint. Every key is optional; without any, no metrics are kept.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use super::error::{ConfigError, Ctx};
use super::fields::{abs_path, nonzero_duration};
use super::net::parse_socket_addr;
use super::raw::{OptStr, S};

/// Default of `textfile_interval`.
pub const DEFAULT_TEXTFILE_INTERVAL: Duration = Duration::from_secs(15);

/// `[metrics]`: the daemon's Prometheus outputs (both opt-in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsConfig {
    /// node_exporter textfile-collector file (`*.prom`), rewritten
    /// atomically on change and at most every `textfile_interval`.
    pub textfile: Option<PathBuf>,
    /// Least time between two writes of `textfile`.
    #[serde(serialize_with = "secs")]
    pub textfile_interval: Duration,
    /// Address of the HTTP endpoint (`GET /metrics`); none by default.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            textfile: None,
            textfile_interval: DEFAULT_TEXTFILE_INTERVAL,
            listen: None,
        }
    }
}

impl MetricsConfig {
    /// Whether any output is configured (else the daemon keeps no metrics).
    pub fn enabled(&self) -> bool {
        self.textfile.is_some() || self.listen.is_some()
    }
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// `[metrics]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub(crate) textfile: OptStr,
    pub(crate) textfile_interval: OptStr,
    pub(crate) listen: OptStr,
}

/// `[metrics]`; every key is optional.
pub(crate) fn load_metrics(
    ctx: &Ctx<'_>,
    raw: Option<&S<RawMetrics>>,
) -> Result<MetricsConfig, ConfigError> {
    let mut m = MetricsConfig::default();
    let Some(raw) = raw.map(S::get_ref) else {
        return Ok(m);
    };
    if let Some(v) = &raw.textfile {
        let path = abs_path(ctx, v, "textfile")?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if v.get_ref().ends_with('/') || !name.ends_with(".prom") || name.len() <= ".prom".len() {
            return Err(ctx.err(
                v.span(),
                format!("textfile `{}` is not a `*.prom` file", v.get_ref()),
                "node_exporter's textfile collector reads only files named *.prom in its directory, e.g. textfile = \"/var/lib/prometheus/node-exporter/mcrecover.prom\"",
            ));
        }
        if name.starts_with('.') {
            return Err(ctx.err(
                v.span(),
                format!("textfile `{}` is a hidden file", v.get_ref()),
                "the file is written through a hidden temporary file in the same directory; name it e.g. mcrecover.prom",
            ));
        }
        m.textfile = Some(path);
    }
    if let Some(v) = &raw.textfile_interval {
        m.textfile_interval = nonzero_duration(ctx, v, "textfile_interval")?;
        if m.textfile.is_none() {
            return Err(ctx.err(
                v.span(),
                "`textfile_interval` is set but there is no `textfile`",
                "add textfile = \"/var/lib/prometheus/node-exporter/mcrecover.prom\", or remove textfile_interval",
            ));
        }
    }
    if let Some(v) = &raw.listen {
        let addr = parse_socket_addr(v.get_ref()).map_err(|msg| {
            ctx.err(
                v.span(),
                format!("listen: {msg}"),
                "write an ip:port address, e.g. listen = \"127.0.0.1:9464\" (IPv6: \"[::1]:9464\")",
            )
        })?;
        if addr.port() == 0 {
            return Err(ctx.err(
                v.span(),
                "listen: port 0 is not a fixed port",
                "Prometheus must know where to scrape: give a port, e.g. listen = \"127.0.0.1:9464\"",
            ));
        }
        m.listen = Some(addr);
    }
    Ok(m)
}
