//! The metrics model and its encoding: what the daemon exposes to Prometheus
//! (docs/metrics.md), kept as plain values that the daemon loop updates from
//! the engine's [`World`] and the status [`Snapshot`] after every event, plus
//! per-check probe durations recorded lock-free by the probe tasks
//! ([`CheckTimes`]). Encoded on demand (a scrape, a textfile write) into
//! Prometheus' classic text format (0.0.4) by the `prometheus` crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder as _, TextEncoder};

use crate::engine::{Life, StagePhase, World};
use crate::watch::types::{ServiceState, Snapshot};

/// Upper bounds (seconds) of the check duration histogram's buckets.
pub const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every state a service can be in, in the order they are exposed.
pub const STATES: [ServiceState; 9] = [
    ServiceState::Pending,
    ServiceState::Blocked,
    ServiceState::Starting,
    ServiceState::Healthy,
    ServiceState::Unhealthy,
    ServiceState::Held,
    ServiceState::Escalated,
    ServiceState::Waiting,
    ServiceState::External,
];

/// The durations of one check's probes: written by the probe task (atomics,
/// no lock, no allocation), read when the metrics are encoded.
#[derive(Debug, Default)]
pub struct CheckTimes {
    /// Probes recorded.
    count: AtomicU64,
    /// Sum of their durations (µs).
    sum_us: AtomicU64,
    /// The latest probe's duration (µs).
    last_us: AtomicU64,
    /// Probes per bucket (not cumulative; the last one is `+Inf`).
    buckets: [AtomicU64; BUCKETS.len() + 1],
}

impl CheckTimes {
    /// Records one probe that took `d`.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.last_us.store(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Release);
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

/// One check of a service.
#[derive(Debug)]
pub(crate) struct CheckEntry {
    name: String,
    times: Arc<CheckTimes>,
    /// The latest result the engine took (`None`: not probed yet).
    last_ok: Option<bool>,
    /// When it came (Unix ms).
    last_at_ms: u64,
}

/// One service.
#[derive(Debug)]
pub(crate) struct SvcEntry {
    name: String,
    stage: String,
    state: Option<ServiceState>,
    restarts: u64,
    escalations: u64,
    waits: u64,
    /// Time to healthy in the last recovery (s, from its stage's start).
    healthy_s: Option<f64>,
    checks: Vec<CheckEntry>,
}

/// One stage.
#[derive(Debug)]
pub(crate) struct StageEntry {
    name: String,
    blocked: bool,
    healthy: bool,
    /// Duration of its last recovery (s).
    recovery_s: Option<f64>,
}

/// Everything the daemon exposes.
#[derive(Debug)]
pub struct Model {
    version: &'static str,
    start_time_s: f64,
    pub(crate) up: bool,
    reload_ok: bool,
    reload_success_at_s: f64,
    systemd_connected: bool,
    recovering: bool,
    /// Stage recovery figures are taken from the current engine (false
    /// after a reload: its ramp of running units is no recovery).
    pub(crate) record_ramps: bool,
    services: Vec<SvcEntry>,
    stages: Vec<StageEntry>,
    /// A recovery drill runs.
    drilling: bool,
    /// Drills finished, per outcome.
    drills: std::collections::BTreeMap<&'static str, u64>,
    /// Per scope (`kind`, `name`): the last drill's RTO (s, if recovered)
    /// and whether it passed.
    drill_scopes: std::collections::BTreeMap<(String, String), (Option<f64>, bool)>,
    /// Per service: its RTO in the last drill that covered it (s).
    drill_services: std::collections::BTreeMap<String, f64>,
}

impl Model {
    /// An empty model of a daemon started at `start_time_s` (Unix seconds).
    pub fn new(start_time_s: f64) -> Model {
        Model {
            version: env!("CARGO_PKG_VERSION"),
            start_time_s,
            up: true,
            reload_ok: true,
            reload_success_at_s: start_time_s,
            systemd_connected: false,
            recovering: true,
            record_ramps: true,
            services: Vec::new(),
            stages: Vec::new(),
            drilling: false,
            drills: std::collections::BTreeMap::new(),
            drill_scopes: std::collections::BTreeMap::new(),
            drill_services: std::collections::BTreeMap::new(),
        }
    }

    /// Follows the world's services, checks and stages (a reload may have
    /// changed them); counters, probe durations and recovery figures of
    /// names that stay are kept. Cheap when nothing changed (one name
    /// comparison per entry).
    pub(crate) fn sync(&mut self, w: &World) {
        let same = self.services.len() == w.services.len()
            && self.stages.len() == w.stages.len()
            && self.services.iter().zip(&w.services).all(|(e, s)| {
                e.name == s.info.name
                    && e.checks.len() == s.checks.len()
                    && e.checks
                        .iter()
                        .zip(&s.checks)
                        .all(|(c, r)| c.name == r.spec.name)
            })
            && self
                .stages
                .iter()
                .zip(&w.stages)
                .all(|(e, s)| e.name == s.info.name);
        if same {
            return;
        }
        let mut old = std::mem::take(&mut self.services);
        self.services = w
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let prev = old
                    .iter()
                    .position(|e| e.name == s.info.name)
                    .map(|p| old.swap_remove(p));
                let mut prev_checks = prev.as_ref().map(|p| &p.checks);
                let checks = s
                    .checks
                    .iter()
                    .map(|c| CheckEntry {
                        name: c.spec.name.clone(),
                        times: prev_checks
                            .as_mut()
                            .and_then(|pc| pc.iter().find(|e| e.name == c.spec.name))
                            .map_or_else(Arc::default, |e| Arc::clone(&e.times)),
                        last_ok: None,
                        last_at_ms: 0,
                    })
                    .collect();
                SvcEntry {
                    name: s.info.name.clone(),
                    stage: w.stage_name(i).unwrap_or_default().to_owned(),
                    state: None,
                    restarts: prev.as_ref().map_or(0, |p| p.restarts),
                    escalations: prev.as_ref().map_or(0, |p| p.escalations),
                    waits: prev.as_ref().map_or(0, |p| p.waits),
                    healthy_s: prev.as_ref().and_then(|p| p.healthy_s),
                    checks,
                }
            })
            .collect();
        let old_stages = std::mem::take(&mut self.stages);
        self.stages = w
            .stages
            .iter()
            .map(|st| StageEntry {
                name: st.info.name.clone(),
                blocked: false,
                healthy: false,
                recovery_s: old_stages
                    .iter()
                    .find(|e| e.name == st.info.name)
                    .and_then(|e| e.recovery_s),
            })
            .collect();
    }

    /// The probe duration recorders of the world's checks, by service id
    /// and check index (what the runner's probe hook writes into).
    pub(crate) fn times(&self) -> Vec<Vec<Arc<CheckTimes>>> {
        self.services
            .iter()
            .map(|s| s.checks.iter().map(|c| Arc::clone(&c.times)).collect())
            .collect()
    }

    /// Takes the values of `w` and `snap` (the status the daemon serves,
    /// built from `w`); returns whether anything changed.
    pub(crate) fn update(&mut self, w: &World, snap: &Snapshot) -> bool {
        self.sync(w);
        let mut changed = replace(&mut self.systemd_connected, w.bus_up);
        changed |= replace(&mut self.drilling, w.drill.is_some());
        changed |= replace(&mut self.recovering, snap.phase == "recovering");
        let record = self.record_ramps;
        for (i, e) in self.services.iter_mut().enumerate() {
            let (Some(s), Some(st)) = (w.services.get(i), snap.services.get(i)) else {
                continue;
            };
            if st.name != e.name {
                continue;
            }
            changed |= replace(&mut e.state, Some(st.state));
            // A counter never goes down (a restored state file could say less).
            let restarts = st.total_restarts.max(e.restarts);
            changed |= replace(&mut e.restarts, restarts);
            for (c, run) in e.checks.iter_mut().zip(&s.checks) {
                if let Some(l) = &run.last {
                    changed |= replace(&mut c.last_ok, Some(l.ok));
                    changed |= replace(&mut c.last_at_ms, l.at);
                }
            }
            if record && matches!(s.life, Life::Healthy { .. }) {
                let start = s
                    .info
                    .stage
                    .and_then(|st| w.stages.get(st))
                    .and_then(|st| st.started_at);
                if let (Some(t), Some(start)) = (s.report.healthy_at, start) {
                    let v = Some(secs(t.saturating_sub(start)));
                    changed |= replace(&mut e.healthy_s, v);
                }
            }
        }
        for (e, st) in self.stages.iter_mut().zip(&w.stages) {
            let blocked = matches!(st.phase, StagePhase::Blocked { .. });
            let healthy = st.phase == StagePhase::Healthy;
            changed |= replace(&mut e.blocked, blocked);
            changed |= replace(&mut e.healthy, healthy);
            if record && healthy {
                if let Some(end) = st.ended_at {
                    let v = Some(secs(end.saturating_sub(st.attempt_at)));
                    changed |= replace(&mut e.recovery_s, v);
                }
            }
        }
        changed
    }

    /// Counts an escalation of service `svc` (named `name`).
    pub(crate) fn escalated(&mut self, svc: usize, name: &str) -> bool {
        match self.services.get_mut(svc).filter(|e| e.name == name) {
            Some(e) => {
                e.escalations += 1;
                true
            }
            None => false,
        }
    }

    /// Counts a waiting episode of service `svc` (named `name`).
    pub(crate) fn operator_wait(&mut self, svc: usize, name: &str) -> bool {
        match self.services.get_mut(svc).filter(|e| e.name == name) {
            Some(e) => {
                e.waits += 1;
                true
            }
            None => false,
        }
    }

    /// Records a finished drill.
    pub(crate) fn drill_done(&mut self, r: &crate::engine::DrillResult) {
        *self.drills.entry(r.outcome.as_str()).or_insert(0) += 1;
        self.drill_scopes.insert(
            (r.scope_kind.clone(), r.scope.clone()),
            (
                r.rto_ms.map(secs),
                r.outcome == crate::engine::DrillOutcome::Passed,
            ),
        );
        for s in &r.services {
            if let Some(ms) = s.rto_ms {
                self.drill_services.insert(s.name.clone(), secs(ms));
            }
        }
    }

    /// A reload was done (`ok`) or refused, at `at_s` (Unix seconds).
    pub(crate) fn reloaded(&mut self, ok: bool, at_s: f64) {
        self.reload_ok = ok;
        if ok {
            self.reload_success_at_s = at_s;
            self.record_ramps = false;
        }
    }

    /// The metric families, in a stable order (families without a sample
    /// are left out: the text format has no empty family).
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut out = Vec::with_capacity(24);
        let mut push = |name: &str, help: &str, ty: MetricType, metrics: Vec<Metric>| {
            if metrics.is_empty() {
                return;
            }
            let mut f = MetricFamily::default();
            f.set_name(name.to_owned());
            f.set_help(help.to_owned());
            f.set_field_type(ty);
            f.set_metric(metrics);
            out.push(f);
        };
        let g = MetricType::GAUGE;
        let c = MetricType::COUNTER;
        push(
            "mcrecover_up",
            "Whether the mcrecover daemon runs (0 is written to the textfile when it stops).",
            g,
            vec![gauge(&[], flag(self.up))],
        );
        push(
            "mcrecover_build_info",
            "The daemon's version (always 1).",
            g,
            vec![gauge(&[("version", self.version)], 1.0)],
        );
        push(
            "mcrecover_start_time_seconds",
            "When the daemon started (Unix time).",
            g,
            vec![gauge(&[], self.start_time_s)],
        );
        push(
            "mcrecover_config_last_reload_successful",
            "Whether the last configuration reload was done (1) or refused (0).",
            g,
            vec![gauge(&[], flag(self.reload_ok))],
        );
        push(
            "mcrecover_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded (Unix time).",
            g,
            vec![gauge(&[], self.reload_success_at_s)],
        );
        push(
            "mcrecover_systemd_connected",
            "Whether the daemon reaches the service manager it drives.",
            g,
            vec![gauge(&[], flag(self.systemd_connected))],
        );
        push(
            "mcrecover_recovering",
            "Whether a stage is on its way up (1) or the daemon watches (0).",
            g,
            vec![gauge(&[], flag(self.recovering))],
        );

        let svc_labels = |e: &SvcEntry| [("service", e.name.clone()), ("stage", e.stage.clone())];
        let mut states = Vec::with_capacity(self.services.len() * STATES.len());
        for e in self.services.iter().filter(|e| e.state.is_some()) {
            for st in STATES {
                let [s, g] = svc_labels(e);
                states.push(gauge(
                    &[
                        (s.0, s.1.as_str()),
                        (g.0, g.1.as_str()),
                        ("state", st.as_str()),
                    ],
                    flag(e.state == Some(st)),
                ));
            }
        }
        push(
            "mcrecover_service_state",
            "The daemon's state of the service: 1 for the current state, 0 for the others.",
            g,
            states,
        );
        let per_service = |value: &dyn Fn(&SvcEntry) -> Option<f64>, counter_kind: bool| {
            self.services
                .iter()
                .filter_map(|e| {
                    let v = value(e)?;
                    let labels = [("service", e.name.as_str()), ("stage", e.stage.as_str())];
                    Some(if counter_kind {
                        counter(&labels, v)
                    } else {
                        gauge(&labels, v)
                    })
                })
                .collect::<Vec<_>>()
        };
        push(
            "mcrecover_service_restarts_total",
            "Restarts the daemon issued for the service (persisted across daemon restarts; what status calls total_restarts).",
            c,
            per_service(&|e| Some(e.restarts as f64), true),
        );
        push(
            "mcrecover_service_escalations_total",
            "Escalations of the service since the daemon started.",
            c,
            per_service(&|e| Some(e.escalations as f64), true),
        );
        push(
            "mcrecover_service_operator_waits_total",
            "Episodes in which the service waited for an operator (state waiting) since the daemon started.",
            c,
            per_service(&|e| Some(e.waits as f64), true),
        );
        push(
            "mcrecover_service_last_recovery_healthy_seconds",
            "Time to healthy of the service in its stage's last recovery, from the stage's start.",
            g,
            per_service(&|e| e.healthy_s, false),
        );

        let per_check = |value: &dyn Fn(&CheckEntry) -> Option<f64>| {
            let mut v = Vec::new();
            for e in &self.services {
                for ch in &e.checks {
                    if let Some(x) = value(ch) {
                        v.push(gauge(
                            &[("service", e.name.as_str()), ("check", ch.name.as_str())],
                            x,
                        ));
                    }
                }
            }
            v
        };
        push(
            "mcrecover_check_last_success",
            "Whether the check's latest probe passed (1) or not (0).",
            g,
            per_check(&|ch| ch.last_ok.map(flag)),
        );
        push(
            "mcrecover_check_last_run_timestamp_seconds",
            "When the check's latest probe result came (Unix time).",
            g,
            per_check(&|ch| ch.last_ok.map(|_| ch.last_at_ms as f64 / 1000.0)),
        );
        push(
            "mcrecover_check_last_duration_seconds",
            "How long the check's latest probe took.",
            g,
            per_check(&|ch| {
                (ch.times.count() > 0)
                    .then(|| ch.times.last_us.load(Ordering::Relaxed) as f64 / 1e6)
            }),
        );
        let mut hists = Vec::new();
        for e in &self.services {
            for ch in &e.checks {
                hists.push(histogram(
                    &[("service", e.name.as_str()), ("check", ch.name.as_str())],
                    &ch.times,
                ));
            }
        }
        push(
            "mcrecover_check_duration_seconds",
            "How long the check's probes took.",
            MetricType::HISTOGRAM,
            hists,
        );

        let per_stage = |value: &dyn Fn(&StageEntry) -> Option<f64>| {
            self.stages
                .iter()
                .filter_map(|e| Some(gauge(&[("stage", e.name.as_str())], value(e)?)))
                .collect::<Vec<_>>()
        };
        push(
            "mcrecover_stage_blocked",
            "Whether the stage waits for a failed earlier `block` stage.",
            g,
            per_stage(&|e| Some(flag(e.blocked))),
        );
        push(
            "mcrecover_stage_healthy",
            "Whether the stage is healthy (every member healthy once; later stages are wanted).",
            g,
            per_stage(&|e| Some(flag(e.healthy))),
        );
        push(
            "mcrecover_stage_last_recovery_duration_seconds",
            "How long the stage's last recovery took, from its start to healthy.",
            g,
            per_stage(&|e| e.recovery_s),
        );
        push(
            "mcrecover_drill_in_progress",
            "Whether a recovery drill (`mcrecover drill`) runs.",
            g,
            vec![gauge(&[], flag(self.drilling))],
        );
        push(
            "mcrecover_drills_total",
            "Recovery drills finished, by outcome (passed, exceeded, timed-out, aborted).",
            c,
            self.drills
                .iter()
                .map(|(o, n)| counter(&[("outcome", o)], *n as f64))
                .collect(),
        );
        push(
            "mcrecover_drill_last_rto_seconds",
            "The last drill of the scope: from its units stopped to every service healthy again.",
            g,
            self.drill_scopes
                .iter()
                .filter_map(|((k, n), (rto, _))| {
                    Some(gauge(
                        &[("scope_kind", k.as_str()), ("scope", n.as_str())],
                        (*rto)?,
                    ))
                })
                .collect(),
        );
        push(
            "mcrecover_drill_last_passed",
            "Whether the last drill of the scope met every recovery time objective.",
            g,
            self.drill_scopes
                .iter()
                .map(|((k, n), (_, ok))| {
                    gauge(
                        &[("scope_kind", k.as_str()), ("scope", n.as_str())],
                        flag(*ok),
                    )
                })
                .collect(),
        );
        push(
            "mcrecover_drill_service_rto_seconds",
            "The service's recovery time in the last drill that covered it.",
            g,
            self.drill_services
                .iter()
                .map(|(n, v)| gauge(&[("service", n.as_str())], *v))
                .collect(),
        );
        out
    }

    /// The model in Prometheus' text format (0.0.4).
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::with_capacity(8 * 1024);
        TextEncoder::new().encode(&self.families(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// `*slot = v`; whether it changed.
fn replace<T: PartialEq>(slot: &mut T, v: T) -> bool {
    if *slot == v {
        false
    } else {
        *slot = v;
        true
    }
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name((*n).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn gauge(pairs: &[(&str, &str)], v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_label(labels(pairs));
    m.set_gauge(g);
    m
}

fn counter(pairs: &[(&str, &str)], v: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

fn histogram(pairs: &[(&str, &str)], t: &CheckTimes) -> Metric {
    // Count first: a probe recorded meanwhile is then at most missing from
    // the count, never counted in a bucket beyond it.
    let count = t.count();
    let mut cumulative = 0u64;
    let mut buckets = Vec::with_capacity(BUCKETS.len());
    for (i, &bound) in BUCKETS.iter().enumerate() {
        cumulative += t.buckets[i].load(Ordering::Relaxed);
        let mut b = Bucket::default();
        b.set_upper_bound(bound);
        b.set_cumulative_count(cumulative.min(count));
        buckets.push(b);
    }
    let mut h = Histogram::default();
    h.set_sample_count(count);
    h.set_sample_sum(t.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
    h.set_bucket(buckets);
    let mut m = Metric::from_label(labels(pairs));
    m.set_histogram(h);
    m
}
