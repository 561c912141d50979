//! Step 2 of the flow: turn a validated [`Config`] into a [`Plan`], the
//! dependency graph every later step follows.
//!
//! The plan names every unit (see the shared naming rules: service `X` runs
//! as `X.service` — generated from `X.container` by quadlet or written
//! directly —, stage `S` has the target `<platform>-S.target` and the gate
//! `<platform>-S-gate.service`, the whole platform is `<platform>.target`),
//! lists each service's upstream edges, orders the services topologically
//! (stage first, then name, ties broken deterministically) and lists the
//! health checks of each service.
//!
//! Edges: every service of stage N+1 depends on every service of stage N
//! *through the gate of stage N* (the gate orders after them and passes only
//! when they are healthy). The plan states that once per service, as one
//! [`StageEdge`] to stage N and its gate ([`PlanService::stage_edge`]); the
//! members of stage N are listed once, in [`PlanStage::services`] (so a stage
//! boundary costs one edge per service, not one per pair of services).
//! `after` adds an ordering edge and `requires` a requirement edge (which
//! implies ordering); these explicit edges are listed per service
//! ([`PlanService::edges`]). [`Plan::direct_upstreams`] expands both into
//! service names. An external (check-only) service may be a stage member
//! (it then gates its stage: [`PlanService::stage`] is set, [`PlanService::unit`]
//! is `None`) and an edge's upstream ([`Edge::via_unit`] `None`): the plan
//! keeps the relation, render writes no systemd dependency for it, and the
//! engine's upstreams ([`Plan::direct_upstreams`]) include it, so a dependent
//! failing while it is down is held, not restarted.
//! Config validation already rejects cycles and unknown names,
//! but [`build`] re-checks and returns a [`PlanError`] instead of looping or
//! panicking.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::config::{CheckKind, Config, DnsExpect, FailurePolicy, Mode, StatusExpect};

/// Errors found while building a plan (normally caught by config validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The dependency graph (stages + after/requires edges) has a cycle.
    #[error("dependency cycle among services: {}", services.join(", "))]
    Cycle {
        /// Services that could not be ordered (the cycle and what hangs off it).
        services: Vec<String>,
    },
    /// An edge or stage names a service that does not exist.
    #[error("{from} refers to unknown service {to:?}")]
    UnknownService {
        /// Who refers (`service X` or `stage S`).
        from: String,
        /// The unknown name.
        to: String,
    },
    /// A service is listed in more than one stage (or twice in one).
    #[error("service {service:?} is listed in stage {first:?} and again in stage {second:?}")]
    DuplicateMember {
        /// The service.
        service: String,
        /// First stage listing it.
        first: String,
        /// Second stage listing it.
        second: String,
    },
}

/// Unit name of the top target, `<platform>.target`.
pub fn top_target_unit(platform: &str) -> String {
    format!("{platform}.target")
}

/// Unit name of a stage target, `<platform>-<stage>.target`.
pub fn stage_target_unit(platform: &str, stage: &str) -> String {
    format!("{platform}-{stage}.target")
}

/// Unit name of a stage gate, `<platform>-<stage>-gate.service`.
pub fn gate_unit(platform: &str, stage: &str) -> String {
    format!("{platform}-{stage}-gate.service")
}

/// Unit name of a service's container unit, `<service>.service`.
pub fn service_unit(service: &str) -> String {
    format!("{service}.service")
}

/// The whole plan: stages, services, order.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Platform name (unit prefix).
    pub platform: String,
    /// Rootless (user manager) or rootful (system manager).
    pub mode: Mode,
    /// Where the plan came from (config source path, for headers).
    pub source: String,
    /// The top target, `<platform>.target`.
    pub top_target: String,
    /// Stages in boot order.
    pub stages: Vec<PlanStage>,
    /// Every service (external ones included), keyed by name.
    pub services: BTreeMap<String, PlanService>,
    /// Deterministic topological order of all services (external first, then
    /// by stage, then by name, respecting every edge).
    pub order: Vec<String>,
}

/// One stage of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanStage {
    /// 0-based position in boot order.
    pub index: usize,
    /// Stage name.
    pub name: String,
    /// The stage's target unit.
    pub target: String,
    /// The stage's gate unit (passes when every member is healthy).
    pub gate: String,
    /// Time the stage may take to become healthy.
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
    /// What later stages do if this one fails.
    pub policy: FailurePolicy,
    /// Member services, in config order.
    pub services: Vec<String>,
}

/// A service's dependency on the stage before its own: on every member of
/// that stage, expressed on the stage's gate unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageEdge {
    /// Index of the upstream stage (the service's own stage index − 1).
    pub stage: usize,
    /// Name of the upstream stage.
    pub name: String,
    /// The upstream stage's gate unit, which the dependency is expressed on.
    pub gate: String,
    /// The upstream stage's failure policy (block = `Requires=`, continue =
    /// `Wants=` on the gate).
    pub policy: FailurePolicy,
}

/// Why a service depends on another (explicit edges only; stage
/// dependencies are [`StageEdge`]s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// Config `after`: ordering only.
    After,
    /// Config `requires`: requirement plus ordering.
    Requires,
}

/// One explicit (`after` / `requires`) upstream edge of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// Kind of the edge.
    pub kind: EdgeKind,
    /// The upstream service.
    pub upstream: String,
    /// The unit the dependency is expressed on: the upstream's own unit
    /// (`None` when the upstream is external and has no unit).
    pub via_unit: Option<String>,
}

/// A health check as listed in the plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanCheck {
    /// Check name.
    pub name: String,
    /// Kind (`dns`, `http`, ...).
    pub kind: String,
    /// One-line human description of what is probed.
    pub summary: String,
    /// Grace period after start.
    #[serde(serialize_with = "ser_secs")]
    pub start_period: Duration,
    /// Interval between attempts.
    #[serde(serialize_with = "ser_secs")]
    pub interval: Duration,
    /// Per-attempt timeout.
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
}

/// One service of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanService {
    /// Service name.
    pub name: String,
    /// Index of its stage; `None` for an external (check-only) service
    /// that no stage lists.
    pub stage: Option<usize>,
    /// Its unit (`<name>.service`); `None` for external services.
    pub unit: Option<String>,
    /// Container name; `None` for external services.
    pub container_name: Option<String>,
    /// Dependency on the previous stage (every member of it, through its
    /// gate). `None` in the first stage, for services in no stage, and when
    /// the previous stage has no members. An external stage member has one
    /// too (its stage is gated after the previous one) although no unit
    /// carries it.
    pub stage_edge: Option<StageEdge>,
    /// Explicit upstream edges (`after`, `requires`), sorted (kind, upstream).
    pub edges: Vec<Edge>,
    /// Health checks.
    pub checks: Vec<PlanCheck>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Build the plan for a validated configuration.
pub fn build(cfg: &Config) -> Result<Plan, PlanError> {
    let platform = cfg.platform.name.clone();

    // Stage membership.
    let mut stage_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, st) in cfg.stages.iter().enumerate() {
        for m in &st.services {
            if !cfg.services.contains_key(m) {
                return Err(PlanError::UnknownService {
                    from: format!("stage {}", st.name),
                    to: m.clone(),
                });
            }
            if let Some(&first) = stage_of.get(m.as_str()) {
                return Err(PlanError::DuplicateMember {
                    service: m.clone(),
                    first: cfg.stages[first].name.clone(),
                    second: st.name.clone(),
                });
            }
            stage_of.insert(m, i);
        }
    }

    let stages: Vec<PlanStage> = cfg
        .stages
        .iter()
        .enumerate()
        .map(|(index, st)| PlanStage {
            index,
            name: st.name.clone(),
            target: stage_target_unit(&platform, &st.name),
            gate: gate_unit(&platform, &st.name),
            timeout: st.timeout,
            policy: st.on_failure,
            services: st.services.clone(),
        })
        .collect();

    let mut services = BTreeMap::new();
    for (name, svc) in &cfg.services {
        // An external service listed in a stage is a member like any other
        // (it gates the stage); it only has no unit.
        let stage = stage_of.get(name.as_str()).copied();
        let stage_edge = stage
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| stages.get(i))
            .filter(|prev| !prev.services.is_empty())
            .map(|prev| StageEdge {
                stage: prev.index,
                name: prev.name.clone(),
                gate: prev.gate.clone(),
                policy: prev.policy,
            });
        let mut edges = Vec::new();
        for (kind, list) in [
            (EdgeKind::After, &svc.after),
            (EdgeKind::Requires, &svc.requires),
        ] {
            for up in list {
                let Some(target) = cfg.services.get(up) else {
                    return Err(PlanError::UnknownService {
                        from: format!("service {name}"),
                        to: up.clone(),
                    });
                };
                edges.push(Edge {
                    kind,
                    upstream: up.clone(),
                    via_unit: (!target.is_external()).then(|| service_unit(up)),
                });
            }
        }
        edges.sort_by(|a, b| (a.kind, &a.upstream).cmp(&(b.kind, &b.upstream)));
        edges.dedup();
        let checks = svc
            .checks
            .iter()
            .map(|c| PlanCheck {
                name: c.name.clone(),
                kind: c.kind.kind_name().to_string(),
                summary: check_summary(&c.kind),
                start_period: c.start_period,
                interval: c.interval,
                timeout: c.timeout,
            })
            .collect();
        services.insert(
            name.clone(),
            PlanService {
                name: name.clone(),
                stage,
                unit: (!svc.is_external()).then(|| service_unit(name)),
                container_name: svc.container.as_ref().map(|c| c.name.clone()),
                stage_edge,
                edges,
                checks,
            },
        );
    }

    let order = topo_order(&services, &stages)?;
    Ok(Plan {
        platform: platform.clone(),
        mode: cfg.platform.mode,
        source: cfg.source.display().to_string(),
        top_target: top_target_unit(&platform),
        stages,
        services,
        order,
    })
}

/// Kahn's algorithm with a priority of (stage, name); external services
/// (no stage) sort first. A stage dependency is one extra node per stage
/// ("stage k done", never listed): it waits for every member of stage k and
/// releases every service whose [`StageEdge`] points at stage k, so a stage
/// boundary costs members + dependants instead of their product, and the
/// order is the one per-pair edges would give. Never loops: every round
/// removes one node or stops.
fn topo_order(
    services: &BTreeMap<String, PlanService>,
    stages: &[PlanStage],
) -> Result<Vec<String>, PlanError> {
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    let stage_of: Vec<Option<usize>> = services.values().map(|s| s.stage).collect();
    let idx: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let n = names.len();
    // Nodes 0..n are the services, n + k is "stage k done".
    let mut indegree = vec![0usize; n + stages.len()];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n + stages.len()];
    for (i, svc) in services.values().enumerate() {
        let mut ups: BTreeSet<usize> = svc
            .edges
            .iter()
            .filter_map(|e| idx.get(e.upstream.as_str()).copied())
            .collect();
        if let Some(se) = &svc.stage_edge {
            ups.insert(n + se.stage);
        }
        for up in ups {
            downstream[up].push(i);
            indegree[i] += 1;
        }
    }
    for st in stages {
        let members: BTreeSet<usize> = st
            .services
            .iter()
            .filter_map(|m| idx.get(m.as_str()).copied())
            .collect();
        for m in members {
            downstream[m].push(n + st.index);
            indegree[n + st.index] += 1;
        }
    }
    let mut ready: BTreeSet<(Option<usize>, &str, usize)> = (0..n)
        .filter(|&i| indegree[i] == 0)
        .map(|i| (stage_of[i], names[i], i))
        .collect();
    let mut order = Vec::with_capacity(n);
    let mut released = Vec::new();
    while let Some((_, name, i)) = ready.pop_first() {
        order.push(name.to_string());
        released.push(i);
        // Stage nodes are passed through at once: they are never listed.
        while let Some(u) = released.pop() {
            for &d in &downstream[u] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    if d < n {
                        ready.insert((stage_of[d], names[d], d));
                    } else {
                        released.push(d);
                    }
                }
            }
        }
    }
    if order.len() != services.len() {
        let done: BTreeSet<&str> = order.iter().map(String::as_str).collect();
        let rest = services
            .keys()
            .filter(|k| !done.contains(k.as_str()))
            .cloned()
            .collect();
        return Err(PlanError::Cycle { services: rest });
    }
    Ok(order)
}

/// One-line description of a check target.
fn check_summary(kind: &CheckKind) -> String {
    match kind {
        CheckKind::Dns(d) => {
            let expect = match &d.expect {
                DnsExpect::AnyAnswer => "any answer".to_string(),
                DnsExpect::Address(a) => format!("= {a}"),
                DnsExpect::InCidr(n) => format!("in {n}"),
            };
            let transport = match d.transport {
                crate::config::DnsTransport::Udp => "udp",
                crate::config::DnsTransport::Tcp => "tcp",
            };
            format!(
                "dns {transport} @{} {} {:?} -> {expect}",
                d.server, d.query, d.record
            )
        }
        CheckKind::Http(h) => {
            let mut s = format!("GET {}", h.url);
            if let Some(c) = h.connect_to {
                let _ = write!(s, " (connect to {c})");
            }
            let _ = match &h.status {
                StatusExpect::Any => write!(s, " status any"),
                StatusExpect::Success => write!(s, " status 2xx/3xx"),
                StatusExpect::Codes(codes) => write!(s, " status {codes:?}"),
            };
            if let Some(n) = &h.tls.server_name {
                let _ = write!(s, " server name {n}");
            }
            if let Some(b) = &h.body_contains {
                let _ = write!(s, " body contains {b:?}");
            }
            s
        }
        CheckKind::Tcp(t) => format!("tcp connect {}", t.address),
        CheckKind::Grpc(g) => {
            let tls = if g.tls.is_some() { "tls" } else { "plaintext" };
            let svc = if g.service.is_empty() {
                "(server)".to_string()
            } else {
                g.service.clone()
            };
            let mut s = format!("grpc health {} {tls} service {svc}", g.address);
            if let Some(n) = g.tls.as_ref().and_then(|t| t.server_name.as_ref()) {
                let _ = write!(s, " server name {n}");
            }
            s
        }
        CheckKind::Exec(e) => format!("exec {:?}", e.argv),
    }
}

impl Plan {
    /// Services of the given stage index, in config order.
    pub fn stage_services(&self, stage: usize) -> impl Iterator<Item = &PlanService> {
        self.stages
            .get(stage)
            .into_iter()
            .flat_map(|st| st.services.iter())
            .filter_map(|n| self.services.get(n))
    }

    /// The services `svc` waits for directly: every member of the previous
    /// stage (when it has a [`StageEdge`]), then the upstreams of its
    /// explicit edges. Transitive upstreams follow by applying this again.
    pub fn direct_upstreams<'a>(&'a self, svc: &'a PlanService) -> impl Iterator<Item = &'a str> {
        svc.stage_edge
            .as_ref()
            .and_then(|se| self.stages.get(se.stage))
            .into_iter()
            .flat_map(|st| st.services.iter())
            .chain(svc.edges.iter().map(|e| &e.upstream))
            .map(String::as_str)
    }

    /// Human-readable plan: stages, services, units, edges, checks.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "plan for platform {} ({}, from {})",
            self.platform,
            match self.mode {
                Mode::Rootless => "rootless",
                Mode::Rootful => "rootful",
            },
            self.source
        );
        let _ = writeln!(s, "top target: {}", self.top_target);
        for st in &self.stages {
            let policy = match st.policy {
                FailurePolicy::Block => "block",
                FailurePolicy::Continue => "continue",
            };
            let _ = writeln!(
                s,
                "\nstage {} {} (target {}, gate {}, timeout {}s, on failure {policy})",
                st.index + 1,
                st.name,
                st.target,
                st.gate,
                st.timeout.as_secs_f64()
            );
            for svc in self.stage_services(st.index) {
                self.service_text(&mut s, svc);
            }
        }
        let externals: Vec<&PlanService> = self
            .services
            .values()
            .filter(|s| s.stage.is_none())
            .collect();
        if !externals.is_empty() {
            let _ = writeln!(s, "\nexternal / unstaged (checked, no unit started)");
            for svc in externals {
                self.service_text(&mut s, svc);
            }
        }
        let _ = writeln!(s, "\norder: {}", self.order.join(" -> "));
        s
    }

    fn service_text(&self, s: &mut String, svc: &PlanService) {
        let unit = svc.unit.as_deref().unwrap_or("(no unit)");
        let _ = write!(s, "  {}  unit {unit}", svc.name);
        if let Some(c) = &svc.container_name {
            let _ = write!(s, "  container {c}");
        }
        let _ = writeln!(s);
        if let Some(se) = &svc.stage_edge {
            let what = match se.policy {
                FailurePolicy::Block => "requires",
                FailurePolicy::Continue => "wants",
            };
            let _ = writeln!(
                s,
                "    <- stage {} via {} (stage, {what})",
                se.name, se.gate
            );
        }
        for e in &svc.edges {
            let via = e.via_unit.as_deref().unwrap_or("(external, no unit)");
            let what = match e.kind {
                EdgeKind::After => "after",
                EdgeKind::Requires => "requires",
            };
            let _ = writeln!(s, "    <- {} via {via} ({what})", e.upstream);
        }
        for c in &svc.checks {
            let _ = writeln!(
                s,
                "    check {} [{}]: {} (every {}s, timeout {}s, start period {}s)",
                c.name,
                c.kind,
                c.summary,
                c.interval.as_secs_f64(),
                c.timeout.as_secs_f64(),
                c.start_period.as_secs_f64()
            );
        }
    }

    /// The plan as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The plan as a Graphviz digraph: one cluster per stage (its services and
    /// its gate), external services outside, stage edges go member -> gate ->
    /// next stage's members (dashed when the stage's policy is `continue`).
    pub fn to_dot(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "digraph {} {{", dot_id(&self.platform));
        let _ = writeln!(s, "  rankdir=LR;");
        let _ = writeln!(s, "  node [shape=box];");
        for st in &self.stages {
            let _ = writeln!(
                s,
                "  subgraph {} {{",
                dot_id(&format!("cluster_{}", st.name))
            );
            let _ = writeln!(
                s,
                "    label={};",
                dot_id(&format!("{} ({})", st.name, st.target))
            );
            for m in &st.services {
                let _ = writeln!(s, "    {};", dot_id(m));
            }
            let _ = writeln!(
                s,
                "    {} [shape=hexagon, label={}];",
                dot_id(&st.gate),
                dot_id(&format!("{} gate", st.name))
            );
            let _ = writeln!(s, "  }}");
        }
        for svc in self.services.values().filter(|s| s.stage.is_none()) {
            let _ = writeln!(s, "  {} [shape=note, style=dashed];", dot_id(&svc.name));
        }
        for st in &self.stages {
            for m in &st.services {
                let _ = writeln!(s, "  {} -> {};", dot_id(m), dot_id(&st.gate));
            }
        }
        for name in &self.order {
            let Some(svc) = self.services.get(name) else {
                continue;
            };
            if let Some(se) = &svc.stage_edge {
                let style = match se.policy {
                    FailurePolicy::Continue => " [style=dashed]",
                    FailurePolicy::Block => "",
                };
                let _ = writeln!(s, "  {} -> {}{style};", dot_id(&se.gate), dot_id(name));
            }
            for e in &svc.edges {
                match e.kind {
                    EdgeKind::After => {
                        let _ = writeln!(
                            s,
                            "  {} -> {} [label=after, style=dotted];",
                            dot_id(&e.upstream),
                            dot_id(name)
                        );
                    }
                    EdgeKind::Requires => {
                        let _ = writeln!(
                            s,
                            "  {} -> {} [label=requires];",
                            dot_id(&e.upstream),
                            dot_id(name)
                        );
                    }
                }
            }
        }
        let _ = writeln!(s, "}}");
        s
    }
}

/// A quoted Graphviz ID.
fn dot_id(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
pub(crate) mod tests;
