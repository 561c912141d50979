//! Prometheus metrics of the daemon (docs/metrics.md): an edge concern of
//! the daemon shell. [`Metrics`] holds the model ([`model`]) that the
//! daemon updates after every event and that the probe tasks write their
//! durations into; [`Exporter`] runs the configured outputs, a node_exporter
//! textfile-collector file ([`textfile`]) and an HTTP endpoint ([`http`]),
//! both opt-in (`[metrics]`). Without `[metrics]` the daemon keeps none of it.

pub mod http;
pub mod model;
pub mod textfile;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::MetricsConfig;
use crate::engine::{Effect, World};
use crate::runner::ProbeTimer;
use crate::watch::types::Snapshot;

pub use model::{CheckTimes, Model, BUCKETS};

/// Why an output could not be served or written.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The HTTP endpoint's address could not be bound.
    #[error("metrics endpoint {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// What bind said.
        source: std::io::Error,
    },
    /// The textfile could not be written.
    #[error("metrics textfile {path}: {source}")]
    Write {
        /// The configured file.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The encoder refused the model (a bug).
    #[error("encoding the metrics: {0}")]
    Encode(#[from] prometheus::Error),
}

/// The shared metrics model (cheap to clone).
#[derive(Debug, Clone)]
pub struct Metrics {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    model: Mutex<Model>,
    /// Something changed since the textfile writer last looked.
    changed: Notify,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty model of a daemon that starts now.
    pub fn new() -> Metrics {
        Metrics {
            shared: Arc::new(Shared {
                model: Mutex::new(Model::new(unix_now())),
                changed: Notify::new(),
            }),
        }
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        // A panic while holding the lock leaves plain values behind: use them.
        self.shared
            .model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn changed(&self) {
        self.shared.changed.notify_one();
    }

    /// Takes the values of `w` and of the status built from it.
    pub fn update(&self, w: &World, snap: &Snapshot) {
        if self.model().update(w, snap) {
            self.changed();
        }
    }

    /// Counts what the effects the daemon carries out tell: escalations
    /// (`Effect::Escalate`), waiting episodes (`Effect::OperatorWait`
    /// without `reminder`) and drill results (`Effect::DrillDone`).
    pub fn effects(&self, w: &World, fx: &[Effect]) {
        let mut any = false;
        for e in fx {
            if let Effect::DrillDone(r) = e {
                self.model().drill_done(r);
                any = true;
                continue;
            }
            let (svc, wait) = match e {
                Effect::Escalate { svc, .. } => (*svc, false),
                Effect::OperatorWait {
                    svc,
                    reminder: false,
                    ..
                } => (*svc, true),
                _ => continue,
            };
            let Some(name) = w.services.get(svc).map(|s| s.info.name.as_str()) else {
                continue;
            };
            let mut m = self.model();
            m.sync(w);
            any |= if wait {
                m.operator_wait(svc, name)
            } else {
                m.escalated(svc, name)
            };
        }
        if any {
            self.changed();
        }
    }

    /// A configuration reload was done (`ok`) or refused.
    pub fn reloaded(&self, ok: bool) {
        self.model().reloaded(ok, unix_now());
        self.changed();
    }

    /// The runner's probe hook for the checks of `w`: records each probe's
    /// duration into its check's [`CheckTimes`] (atomics; no lock, no
    /// allocation per probe).
    pub fn probe_timer(&self, w: &World) -> ProbeTimer {
        let table = {
            let mut m = self.model();
            m.sync(w);
            m.times()
        };
        let shared = Arc::clone(&self.shared);
        Arc::new(move |svc: usize, check: usize, elapsed: Duration| {
            if let Some(t) = table.get(svc).and_then(|c| c.get(check)) {
                t.record(elapsed);
                shared.changed.notify_one();
            }
        })
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> Result<String, MetricsError> {
        let families = self.model().families();
        let mut buf = Vec::with_capacity(8 * 1024);
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Waits until something changed since the last call.
    pub(crate) async fn wait_changed(&self) {
        self.shared.changed.notified().await;
    }

    fn set_up(&self, up: bool) {
        self.model().up = up;
        self.changed();
    }
}

/// The configured outputs, running: the textfile writer and the HTTP
/// endpoint, each a task.
#[derive(Debug)]
pub struct Exporter {
    metrics: Metrics,
    config: MetricsConfig,
    textfile: Option<JoinHandle<()>>,
    http: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Starts the outputs of `config`; `None` when it configures none. An
    /// output that cannot start is logged, never fatal: the daemon's job is
    /// the platform.
    pub async fn start(config: &MetricsConfig) -> Option<Exporter> {
        if !config.enabled() {
            return None;
        }
        let mut ex = Exporter {
            metrics: Metrics::new(),
            config: MetricsConfig::default(),
            textfile: None,
            http: None,
        };
        ex.configure(config).await;
        Some(ex)
    }

    /// The model the outputs show.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Applies a (reloaded) configuration: outputs whose settings changed
    /// are restarted, the others keep running.
    pub async fn configure(&mut self, config: &MetricsConfig) {
        let textfile_changed = config.textfile != self.config.textfile
            || config.textfile_interval != self.config.textfile_interval;
        if textfile_changed {
            if let Some(t) = self.textfile.take() {
                t.abort();
            }
            if let Some(path) = &config.textfile {
                info!(path = %path.display(), interval_s = config.textfile_interval.as_secs_f64(),
                    "metrics: writing the textfile");
                self.textfile = Some(tokio::spawn(textfile::run(
                    self.metrics.clone(),
                    path.clone(),
                    config.textfile_interval,
                )));
            }
        }
        if config.listen != self.config.listen {
            if let Some(t) = self.http.take() {
                t.abort();
            }
            if let Some(addr) = config.listen {
                match http::bind(addr).await {
                    Ok(listener) => {
                        info!(address = %addr, "metrics: serving http://{addr}/metrics");
                        self.http = Some(tokio::spawn(http::serve(listener, self.metrics.clone())));
                    }
                    Err(e) => error!(error = %e, "metrics endpoint not served"),
                }
            }
        }
        self.config = config.clone();
    }

    /// The daemon stops: the textfile says `mcrecover_up 0` (node_exporter
    /// would otherwise show the last values as current), the endpoint closes.
    pub fn shutdown(self) {
        if let Some(t) = &self.textfile {
            t.abort();
        }
        if let Some(t) = &self.http {
            t.abort();
        }
        self.metrics.set_up(false);
        if let Some(path) = &self.config.textfile {
            if let Err(e) = textfile::write(&self.metrics, path) {
                warn!(error = %e, "metrics textfile not updated at stop");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
