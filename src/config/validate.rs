//! Cross-references between services and stages: container names, stage
//! membership, `after`/`requires` targets, dependency cycles (stage order
//! included) and host port conflicts.
//!
//! External (check-only) services may be stage members and `after`/`requires`
//! targets: a member gates its stage (the stage is healthy only while its
//! checks pass), an edge makes the dependent wait for (and be held by) it.
//! Neither renders a systemd dependency (an external service has no unit);
//! ordering rules, cycles included, are the same as for container services.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::Range;

use super::error::{ConfigError, Ctx};
use super::fields::did_you_mean;
use super::graph::{first_cycle, Graph};
use super::load::{LoadedService, LoadedStage};
use super::model::{PortMapping, Proto};
use super::raw::S;

/// Run every cross-check; the first failure is returned.
pub(crate) fn cross_check(
    ctx: &Ctx<'_>,
    services: &[LoadedService],
    stages: &[LoadedStage],
) -> Result<(), ConfigError> {
    container_names(ctx, services)?;
    let stage_of = membership(ctx, services, stages)?;
    dependency_targets(ctx, services)?;
    cycles(ctx, services, stages, &stage_of)?;
    port_conflicts(ctx, services)
}

fn names(services: &[LoadedService]) -> impl Iterator<Item = &str> + Clone {
    services.iter().map(|s| s.key.get_ref().as_str())
}

/// Services by name, to look members and edge targets up without a linear
/// scan each (1000 services: 500 000 string comparisons otherwise).
fn by_name(services: &[LoadedService]) -> HashMap<&str, &LoadedService> {
    services
        .iter()
        .map(|s| (s.key.get_ref().as_str(), s))
        .collect()
}

fn container_names(ctx: &Ctx<'_>, services: &[LoadedService]) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<&str, &LoadedService> = BTreeMap::new();
    for s in services {
        let Some(c) = &s.service.container else {
            continue;
        };
        if let Some(first) = seen.insert(c.name.as_str(), s) {
            let span = s
                .raw
                .get_ref()
                .container_name
                .as_ref()
                .map_or_else(|| s.key.span(), S::span);
            return Err(ctx.err(
                span,
                format!(
                    "services `{}` and `{}` both use container name `{}`",
                    first.key.get_ref(),
                    s.key.get_ref(),
                    c.name
                ),
                "give one of them a different `container_name` (the default is the service name)",
            ));
        }
    }
    Ok(())
}

/// Check stage members; return each service's stage index.
fn membership(
    ctx: &Ctx<'_>,
    services: &[LoadedService],
    stages: &[LoadedStage],
) -> Result<BTreeMap<String, usize>, ConfigError> {
    let mut stage_of: BTreeMap<String, usize> = BTreeMap::new();
    let index_of = by_name(services);
    for (index, stage) in stages.iter().enumerate() {
        let Some(list) = &stage.raw.get_ref().services else {
            continue;
        };
        for member in list.get_ref() {
            let name = member.get_ref();
            if !index_of.contains_key(name.as_str()) {
                return Err(ctx.err(
                    member.span(),
                    format!(
                        "stage `{}` lists unknown service `{name}`",
                        stage.stage.name
                    ),
                    format!(
                        "{}define [services.{name}] or remove it from the stage",
                        did_you_mean(name, names(services))
                    ),
                ));
            }
            if let Some(&first) = stage_of.get(name.as_str()) {
                let message = if first == index {
                    format!(
                        "service `{name}` is listed twice in stage `{}`",
                        stage.stage.name
                    )
                } else {
                    format!(
                        "service `{name}` is in two stages: `{}` and `{}`",
                        stages[first].stage.name, stage.stage.name
                    )
                };
                return Err(ctx.err(
                    member.span(),
                    message,
                    "a service belongs to exactly one stage; remove one entry",
                ));
            }
            stage_of.insert(name.clone(), index);
        }
    }
    for s in services {
        if !s.service.is_external() && !stage_of.contains_key(s.key.get_ref().as_str()) {
            return Err(ctx.err(
                s.key.span(),
                format!("service `{}` is not in any stage", s.key.get_ref()),
                "add it to the `services` of a [[stages]] table, or set external = true if it runs elsewhere",
            ));
        }
    }
    Ok(stage_of)
}

/// An explicit ordering edge `from -> to` written in `key` at `span`.
struct Edge<'a> {
    from: &'a str,
    to: &'a str,
    key: &'static str,
    span: Range<usize>,
}

fn explicit_edges(services: &[LoadedService]) -> Vec<Edge<'_>> {
    let mut edges = Vec::new();
    for s in services {
        let raw = s.raw.get_ref();
        for (key, list) in [("after", &raw.after), ("requires", &raw.requires)] {
            for target in list.iter().flat_map(|l| l.get_ref()) {
                edges.push(Edge {
                    from: s.key.get_ref(),
                    to: target.get_ref(),
                    key,
                    span: target.span(),
                });
            }
        }
    }
    edges.sort_by_key(|e| e.span.start);
    edges
}

fn dependency_targets(ctx: &Ctx<'_>, services: &[LoadedService]) -> Result<(), ConfigError> {
    let index_of = by_name(services);
    for edge in explicit_edges(services) {
        if !index_of.contains_key(edge.to) {
            return Err(ctx.err(
                edge.span,
                format!(
                    "`{}` of service `{}` names unknown service `{}`",
                    edge.key, edge.from, edge.to
                ),
                format!(
                    "{}define [services.{}] or remove it from `{}`",
                    did_you_mean(edge.to, names(services)),
                    edge.to,
                    edge.key
                ),
            ));
        }
        if edge.from == edge.to {
            return Err(ctx.err(
                edge.span,
                format!("service `{}` lists itself in `{}`", edge.from, edge.key),
                "remove it: a service cannot wait for itself",
            ));
        }
    }
    Ok(())
}

fn cycles(
    ctx: &Ctx<'_>,
    services: &[LoadedService],
    stages: &[LoadedStage],
    stage_of: &BTreeMap<String, usize>,
) -> Result<(), ConfigError> {
    let edges = explicit_edges(services);
    let index_of: HashMap<&str, usize> = names(services).enumerate().map(|(i, n)| (n, i)).collect();
    // An edge to an unknown service cannot close a cycle (and
    // `dependency_targets` has refused it already).
    let known: Vec<(&Edge<'_>, usize, usize)> = edges
        .iter()
        .filter_map(|e| Some((e, *index_of.get(e.from)?, *index_of.get(e.to)?)))
        .collect();
    let graph = Graph {
        names: names(services).collect(),
        stage: names(services).map(|n| stage_of.get(n).copied()).collect(),
        edges: known.iter().map(|&(e, f, t)| (f, t, e.key)).collect(),
    };
    let Some(cycle) = first_cycle(&graph) else {
        return Ok(());
    };
    let Some(&(edge, _, _)) = known.get(cycle.edge) else {
        return Ok(());
    };
    // path: [(edge.to, how to next), ..., (edge.from, None)]; prepend edge.from.
    let path: Vec<(&str, Option<&'static str>)> = cycle
        .path
        .iter()
        .map(|&(i, how)| (graph.names[i], how))
        .collect();
    let mut chain = vec![edge.from];
    let mut reasons = vec![format!(
        "`{}` lists `{}` in `{}`",
        edge.from, edge.to, edge.key
    )];
    for window in path.windows(2) {
        let (x, how) = window[0];
        let (y, _) = window[1];
        chain.push(x);
        reasons.push(match how {
            Some(key) => format!("`{x}` lists `{y}` in `{key}`"),
            None => format!(
                "`{x}` is in stage `{}`, which starts after stage `{}` of `{y}`",
                stage_name(stages, stage_of, x),
                stage_name(stages, stage_of, y)
            ),
        });
    }
    chain.push(edge.from);
    let via_stage = path
        .iter()
        .take(path.len().saturating_sub(1))
        .any(|(_, how)| how.is_none());
    Err(ctx.err(
        edge.span.clone(),
        format!("dependency cycle: {}", chain.join(" -> ")),
        format!(
            "`a -> b` means a starts after b: {}; {}",
            reasons.join(", "),
            if via_stage {
                format!("remove this `{}` entry or move the services so that dependencies point to the same or an earlier stage", edge.key)
            } else {
                "remove one of these entries".to_string()
            }
        ),
    ))
}

fn stage_name<'a>(
    stages: &'a [LoadedStage],
    stage_of: &BTreeMap<String, usize>,
    service: &str,
) -> &'a str {
    stage_of
        .get(service)
        .and_then(|&i| stages.get(i))
        .map_or("?", |s| s.stage.name.as_str())
}

fn describe(p: &PortMapping) -> String {
    let proto = match p.proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    match p.host_ip {
        None => format!("*:{}/{proto}", p.host_port),
        Some(ip) if ip.is_ipv6() => format!("[{ip}]:{}/{proto}", p.host_port),
        Some(ip) => format!("{ip}:{}/{proto}", p.host_port),
    }
}

/// A published host port mapping: service, mapping, span of the entry.
type Mapping<'a> = (&'a str, &'a PortMapping, Range<usize>);

/// The mappings published so far on one host port and protocol, indexed so
/// that the first one a new mapping clashes with is found without a scan:
/// a wildcard mapping (no IP, or 0.0.0.0 / ::) clashes with the first of
/// them all, one on an address with the first wildcard one or the first on
/// the same address, whichever came first.
#[derive(Default)]
struct OnPort<'a> {
    /// (position in file order, mapping)
    first: Option<(usize, Mapping<'a>)>,
    first_wildcard: Option<(usize, Mapping<'a>)>,
    first_on: HashMap<IpAddr, (usize, Mapping<'a>)>,
}

fn is_wildcard(p: &PortMapping) -> bool {
    p.host_ip.is_none_or(|ip| ip.is_unspecified())
}

impl<'a> OnPort<'a> {
    fn clash(&self, port: &PortMapping) -> Option<&Mapping<'a>> {
        let found = match port.host_ip.filter(|_| !is_wildcard(port)) {
            None => self.first.as_ref(),
            Some(ip) => match (self.first_wildcard.as_ref(), self.first_on.get(&ip)) {
                (Some(w), Some(o)) => Some(if w.0 < o.0 { w } else { o }),
                (w, o) => w.or(o),
            },
        };
        found.map(|(_, m)| m)
    }

    fn add(&mut self, position: usize, m: Mapping<'a>) {
        let port = m.1;
        match port.host_ip.filter(|_| !is_wildcard(port)) {
            None => {
                self.first_wildcard
                    .get_or_insert_with(|| (position, m.clone()));
            }
            Some(ip) => {
                self.first_on
                    .entry(ip)
                    .or_insert_with(|| (position, m.clone()));
            }
        }
        self.first.get_or_insert((position, m));
    }
}

fn port_conflicts(ctx: &Ctx<'_>, services: &[LoadedService]) -> Result<(), ConfigError> {
    // Only mappings of the same host port and protocol can clash.
    let mut published: HashMap<(u16, Proto), OnPort<'_>> = HashMap::new();
    let mut position = 0;
    for s in services {
        let (Some(c), Some(raw_ports)) = (&s.service.container, &s.raw.get_ref().ports) else {
            continue;
        };
        for (port, raw) in c.ports.iter().zip(raw_ports.get_ref()) {
            let on_port = published.entry((port.host_port, port.proto)).or_default();
            if let Some((other, q, first)) = on_port.clash(port) {
                let whom = format!("service `{other}` already publishes it");
                return Err(ctx.err(
                    raw.span(),
                    format!("host port {} conflicts with {} (`{}`): {whom}", describe(port), describe(q), q.raw),
                    format!(
                        "the other mapping is at line {}; use a different host port or IP (a mapping without an IP binds every address)",
                        ctx.line_of(first.start)
                    ),
                ));
            }
            on_port.add(position, (s.key.get_ref(), port, raw.span()));
            position += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// [`OnPort`] finds the mapping the linear scan it replaced found:
        /// the first earlier one on the same port and protocol where either
        /// is a wildcard or both bind the same address.
        #[test]
        fn port_index_agrees_with_a_scan(
            list in proptest::collection::vec((1u16..4, any::<bool>(), 0usize..7), 0..24)
        ) {
            let ips: [Option<IpAddr>; 7] = [
                None,
                "0.0.0.0".parse().ok(),
                "::".parse().ok(),
                "127.0.0.1".parse().ok(),
                "127.0.0.2".parse().ok(),
                "::1".parse().ok(),
                "::ffff:127.0.0.1".parse().ok(),
            ];
            let ports: Vec<PortMapping> = list
                .iter()
                .map(|&(host_port, udp, ip)| PortMapping {
                    host_ip: ips[ip],
                    host_port,
                    container_port: 80,
                    proto: if udp { Proto::Udp } else { Proto::Tcp },
                    raw: String::new(),
                })
                .collect();
            let mut published: HashMap<(u16, Proto), OnPort<'_>> = HashMap::new();
            for (i, port) in ports.iter().enumerate() {
                let scan = ports[..i].iter().position(|q| {
                    q.host_port == port.host_port
                        && q.proto == port.proto
                        && (is_wildcard(q) || is_wildcard(port) || q.host_ip == port.host_ip)
                });
                let on_port = published.entry((port.host_port, port.proto)).or_default();
                let indexed = on_port.clash(port).map(|m| m.2.start);
                prop_assert_eq!(indexed, scan);
                on_port.add(i, ("s", port, i..i + 1));
            }
        }
    }
}
