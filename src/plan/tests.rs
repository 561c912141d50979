//! Pure-logic tests of plan building on hand-made configs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::config::{
    BackendChoice, Check, Container, Network, Platform, PlatformUser, PortMapping, Proto,
    PullPolicy, RestartPolicy, Service, Stage, TcpCheck,
};

pub(crate) fn container(name: &str, image: &str) -> Container {
    Container {
        image: format!("mcr.svc.mcp.metacircular.net:8443/{image}"),
        name: name.to_string(),
        network: Network::Bridge,
        ports: vec![],
        volumes: vec![],
        user: None,
        command: vec![
            "server".into(),
            "--config".into(),
            format!("/srv/{name}/{name}.toml"),
        ],
        env: BTreeMap::new(),
        restart: RestartPolicy::UnlessStopped,
        podman_args: vec![],
    }
}

pub(crate) fn tcp_check(port: u16) -> Check {
    Check {
        name: "tcp".into(),
        kind: CheckKind::Tcp(TcpCheck {
            address: format!("127.0.0.1:{port}")
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        }),
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(2),
        failure_threshold: 3,
        success_threshold: 1,
        start_period: Duration::from_secs(0),
        operator_wait: Default::default(),
    }
}

pub(crate) fn service(name: &str, port: u16) -> Service {
    let mut c = container(name, &format!("{name}:v1"));
    c.ports.push(PortMapping {
        host_ip: Some([127, 0, 0, 1].into()),
        host_port: port,
        container_port: 8080,
        proto: Proto::Tcp,
        raw: format!("127.0.0.1:{port}:8080"),
    });
    Service {
        name: name.to_string(),
        description: None,
        container: Some(c),
        checks: vec![tcp_check(port)],
        after: vec![],
        requires: vec![],
        remedy: None,
        gate: Default::default(),
        rto: None,
    }
}

pub(crate) fn stage(name: &str, members: &[&str], policy: FailurePolicy) -> Stage {
    Stage {
        name: name.to_string(),
        services: members.iter().map(|s| s.to_string()).collect(),
        timeout: Duration::from_secs(120),
        on_failure: policy,
        rto: None,
    }
}

/// A small three-stage platform with one external service and extra edges.
pub(crate) fn sample() -> Config {
    let mut services = BTreeMap::new();
    for (n, p) in [
        ("dns", 53),
        ("proxy", 443),
        ("reg", 28443),
        ("app", 48080),
        ("web", 38080),
    ] {
        services.insert(n.to_string(), service(n, p));
    }
    services.insert(
        "idp".into(),
        Service {
            name: "idp".into(),
            description: Some("identity provider elsewhere".into()),
            container: None,
            checks: vec![tcp_check(8443)],
            after: vec![],
            requires: vec![],
            remedy: None,
            gate: Default::default(),
            rto: None,
        },
    );
    if let Some(s) = services.get_mut("web") {
        s.requires.push("app".into());
    }
    if let Some(s) = services.get_mut("reg") {
        s.after.push("proxy".into());
    }
    Config {
        source: PathBuf::from("examples/sample.toml"),
        platform: Platform {
            name: "metacircular".into(),
            node: Some("rift".into()),
            mode: Mode::Rootless,
            user: Some(PlatformUser {
                name: "mcp".into(),
                uid: 850,
                gid: 850,
                home: "/srv/mcp".into(),
            }),
            backend: BackendChoice::Auto,
            image_prefix: "mcr.svc.mcp.metacircular.net:8443/".into(),
            image_archive: None,
            pull: PullPolicy::Never,
            registry_service: None,
            quadlet_dir: "/srv/mcp/.config/containers/systemd".into(),
            unit_dir: "/srv/mcp/.config/systemd/user".into(),
            podman: "/usr/bin/podman".into(),
            prerequisites: Vec::new(),
            mcrecover: "/usr/local/bin/mcrecover".into(),
            config_path: "/etc/mcrecover/mcrecover.toml".into(),
        },
        stages: vec![
            stage("foundation", &["dns"], FailurePolicy::Block),
            stage("core", &["proxy", "reg"], FailurePolicy::Block),
            stage("services", &["web", "app"], FailurePolicy::Continue),
        ],
        services,
        watch: crate::config::WatchPolicy::default(),
        metrics: Default::default(),
    }
}

#[test]
fn names_and_stages() {
    let plan = build(&sample()).unwrap();
    assert_eq!(plan.top_target, "metacircular.target");
    assert_eq!(plan.stages.len(), 3);
    assert_eq!(plan.stages[1].target, "metacircular-core.target");
    assert_eq!(plan.stages[1].gate, "metacircular-core-gate.service");
    let reg = &plan.services["reg"];
    assert_eq!(reg.stage, Some(1));
    assert_eq!(reg.unit.as_deref(), Some("reg.service"));
    assert_eq!(reg.container_name.as_deref(), Some("reg"));
    let idp = &plan.services["idp"];
    assert_eq!(idp.stage, None);
    assert_eq!(idp.unit, None);
}

#[test]
fn edges_go_through_previous_gate() {
    let plan = build(&sample()).unwrap();
    let reg = &plan.services["reg"];
    assert_eq!(
        reg.stage_edge,
        Some(StageEdge {
            stage: 0,
            name: "foundation".into(),
            gate: "metacircular-foundation-gate.service".into(),
            policy: FailurePolicy::Block,
        })
    );
    assert_eq!(
        reg.edges,
        vec![Edge {
            kind: EdgeKind::After,
            upstream: "proxy".into(),
            via_unit: Some("proxy.service".into()),
        }]
    );
    assert_eq!(plan.services["dns"].stage_edge, None);
    assert!(plan.services["dns"].edges.is_empty());
    assert_eq!(plan.services["idp"].stage_edge, None);
    let web = &plan.services["web"];
    assert_eq!(
        web.stage_edge.as_ref().map(|e| (e.stage, e.gate.as_str())),
        Some((1, "metacircular-core-gate.service"))
    );
    let kinds: Vec<_> = web
        .edges
        .iter()
        .map(|e| (e.kind, e.upstream.as_str()))
        .collect();
    assert_eq!(kinds, vec![(EdgeKind::Requires, "app")]);
    // The stage edge stands for every member of the previous stage.
    let ups: Vec<&str> = plan.direct_upstreams(web).collect();
    assert_eq!(ups, vec!["proxy", "reg", "app"]);
}

#[test]
fn stage_after_an_empty_stage_has_no_stage_edge() {
    let mut cfg = sample();
    cfg.stages
        .insert(2, stage("empty", &[], FailurePolicy::Block));
    let plan = build(&cfg).unwrap();
    assert_eq!(plan.services["web"].stage_edge, None);
    assert_eq!(plan.services["app"].stage_edge, None);
    assert_eq!(plan.order, vec!["idp", "dns", "proxy", "reg", "app", "web"]);
}

/// Upstreams as the plan stated them before stage edges were collapsed: one
/// edge per (service, member of an earlier stage) pair plus the explicit
/// edges, expanded transitively. Every earlier stage, also for the services
/// reached on the way: an empty stage in between does not cut the order
/// (the list before issue 15's bitsets cut it for those, so a service
/// `after` a member of the stage behind an empty one missed the stages
/// before it; the property test below found it).
fn upstreams_from_pairs(plan: &Plan) -> BTreeMap<String, Vec<String>> {
    let direct = |name: &str| -> Vec<String> {
        let svc = &plan.services[name];
        let mut ups = Vec::new();
        for st in plan.stages.iter().take(svc.stage.unwrap_or(0)) {
            ups.extend(st.services.iter().cloned());
        }
        ups.extend(svc.edges.iter().map(|e| e.upstream.clone()));
        ups
    };
    let pos = |n: &str| plan.order.iter().position(|x| x == n).unwrap();
    let mut out = BTreeMap::new();
    for (name, svc) in &plan.services {
        // An external service holds for nothing (never restarted).
        if svc.unit.is_none() {
            out.insert(name.clone(), Vec::new());
            continue;
        }
        let mut seen: std::collections::BTreeSet<String> = Default::default();
        let mut todo = vec![name.clone()];
        for st in plan.stages.iter().take(svc.stage.unwrap_or(0)) {
            for m in &st.services {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        while let Some(n) = todo.pop() {
            for up in direct(&n) {
                if seen.insert(up.clone()) {
                    todo.push(up);
                }
            }
        }
        seen.remove(name);
        let mut list: Vec<String> = seen.into_iter().collect();
        list.sort_by_key(|n| pos(n));
        out.insert(name.clone(), list);
    }
    out
}

#[test]
fn watch_upstreams_are_unchanged_by_collapsed_stage_edges() {
    use crate::engine::policy::upstreams;
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let plan = build(&sample()).unwrap();
    let ups = upstreams(&plan);
    assert_eq!(ups, upstreams_from_pairs(&plan));
    assert_eq!(ups["dns"], list(&[]));
    assert_eq!(ups["idp"], list(&[]));
    assert_eq!(ups["proxy"], list(&["dns"]));
    assert_eq!(ups["reg"], list(&["dns", "proxy"]));
    assert_eq!(ups["app"], list(&["dns", "proxy", "reg"]));
    assert_eq!(ups["web"], list(&["dns", "proxy", "reg", "app"]));

    // An external service has no upstreams even when ordered after a staged
    // one (it is never restarted: nothing to hold); an empty stage in between
    // cuts the stage edge of the next stage (the earlier stages still count).
    let mut cfg = sample();
    cfg.services
        .get_mut("idp")
        .unwrap()
        .after
        .push("reg".into());
    cfg.stages
        .insert(2, stage("empty", &[], FailurePolicy::Block));
    let plan = build(&cfg).unwrap();
    let ups = upstreams(&plan);
    assert_eq!(ups, upstreams_from_pairs(&plan));
    assert_eq!(ups["idp"], list(&[]));
    assert_eq!(ups["web"], list(&["dns", "proxy", "reg", "app"]));
}

#[test]
fn order_is_stage_then_name_respecting_edges() {
    let plan = build(&sample()).unwrap();
    // web requires app, so app comes first even though both are in stage 3.
    assert_eq!(plan.order, vec!["idp", "dns", "proxy", "reg", "app", "web"]);
}

#[test]
fn order_respects_edges_against_name_order() {
    let mut cfg = sample();
    // Within stage 2 "proxy" < "reg" by name; make proxy come after reg.
    cfg.services.get_mut("reg").unwrap().after.clear();
    cfg.services
        .get_mut("proxy")
        .unwrap()
        .after
        .push("reg".into());
    let plan = build(&cfg).unwrap();
    let pos = |n: &str| plan.order.iter().position(|x| x == n).unwrap();
    assert!(pos("reg") < pos("proxy"));
    assert!(pos("dns") < pos("reg"));
}

#[test]
fn cycle_is_an_error_not_a_hang() {
    let mut cfg = sample();
    cfg.services
        .get_mut("app")
        .unwrap()
        .requires
        .push("web".into());
    let err = build(&cfg).unwrap_err();
    match err {
        PlanError::Cycle { services } => {
            assert_eq!(services, vec!["app".to_string(), "web".to_string()]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn backwards_edge_across_stages_is_a_cycle() {
    let mut cfg = sample();
    cfg.services
        .get_mut("dns")
        .unwrap()
        .after
        .push("app".into());
    assert!(matches!(build(&cfg), Err(PlanError::Cycle { .. })));
}

#[test]
fn self_edge_is_a_cycle() {
    let mut cfg = sample();
    cfg.services
        .get_mut("dns")
        .unwrap()
        .after
        .push("dns".into());
    assert!(matches!(build(&cfg), Err(PlanError::Cycle { .. })));
}

#[test]
fn unknown_names_are_errors() {
    let mut cfg = sample();
    cfg.services
        .get_mut("dns")
        .unwrap()
        .after
        .push("nope".into());
    assert_eq!(
        build(&cfg).unwrap_err(),
        PlanError::UnknownService {
            from: "service dns".into(),
            to: "nope".into()
        }
    );
    let mut cfg = sample();
    cfg.stages[0].services.push("ghost".into());
    assert!(matches!(build(&cfg), Err(PlanError::UnknownService { .. })));
    let mut cfg = sample();
    cfg.stages[2].services.push("dns".into());
    assert!(matches!(
        build(&cfg),
        Err(PlanError::DuplicateMember { .. })
    ));
}

#[test]
fn edge_to_external_has_no_unit() {
    let mut cfg = sample();
    cfg.services
        .get_mut("app")
        .unwrap()
        .after
        .push("idp".into());
    let plan = build(&cfg).unwrap();
    let e = plan.services["app"]
        .edges
        .iter()
        .find(|e| e.upstream == "idp")
        .unwrap();
    assert_eq!(e.via_unit, None);
}

#[test]
fn outputs_are_deterministic_and_mention_everything() {
    let a = build(&sample()).unwrap();
    let b = build(&sample()).unwrap();
    assert_eq!(a.to_text(), b.to_text());
    assert_eq!(a.to_dot(), b.to_dot());
    assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
    let text = a.to_text();
    for needle in [
        "metacircular-core-gate.service",
        "reg.service",
        "check tcp [tcp]: tcp connect 127.0.0.1:28443",
        "<- app via app.service (requires)",
        "<- stage core via metacircular-core-gate.service (stage, requires)",
        "order: idp -> dns -> proxy -> reg -> app -> web",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let dot = a.to_dot();
    assert!(dot.contains("subgraph \"cluster_core\""));
    assert!(dot.contains("\"metacircular-core-gate.service\" -> \"web\";"));
    assert!(dot.contains("\"dns\" -> \"metacircular-foundation-gate.service\";"));
    let json: serde_json::Value = serde_json::from_str(&a.to_json().unwrap()).unwrap();
    assert_eq!(json["stages"][0]["timeout"], 120.0);
    assert_eq!(json["services"]["web"]["edges"][0]["kind"], "requires");
    assert_eq!(
        json["services"]["web"]["stage_edge"]["gate"],
        "metacircular-core-gate.service"
    );
    assert_eq!(json["services"]["web"]["stage_edge"]["policy"], "block");
    assert_eq!(json["order"][0], "idp");
}

#[test]
fn continue_policy_shows_as_wants_and_dashed() {
    let mut cfg = sample();
    cfg.stages[1].on_failure = FailurePolicy::Continue;
    let plan = build(&cfg).unwrap();
    assert!(plan
        .to_text()
        .contains("<- stage core via metacircular-core-gate.service (stage, wants)"));
    assert!(plan
        .to_dot()
        .contains("\"metacircular-core-gate.service\" -> \"web\" [style=dashed];"));
}

/// `sample()` with the external `idp` as the only member of a stage of its
/// own between `foundation` and `core`, and `app` requiring it.
pub(crate) fn sample_with_external_stage() -> Config {
    let mut cfg = sample();
    cfg.stages
        .insert(1, stage("identity", &["idp"], FailurePolicy::Block));
    cfg.services
        .get_mut("app")
        .unwrap()
        .requires
        .push("idp".into());
    cfg
}

#[test]
fn external_stage_member_gates_its_stage_without_a_unit() {
    let plan = build(&sample_with_external_stage()).unwrap();
    let idp = &plan.services["idp"];
    assert_eq!(idp.stage, Some(1));
    assert_eq!(idp.unit, None);
    assert_eq!(idp.container_name, None);
    // Its stage is gated after the previous one, like any member's.
    assert_eq!(
        idp.stage_edge.as_ref().map(|e| e.gate.as_str()),
        Some("metacircular-foundation-gate.service")
    );
    assert_eq!(plan.stages[1].services, ["idp"]);
    // The next stage waits for it through the identity gate.
    let proxy = &plan.services["proxy"];
    assert_eq!(
        proxy.stage_edge.as_ref().map(|e| e.gate.as_str()),
        Some("metacircular-identity-gate.service")
    );
    assert_eq!(
        plan.direct_upstreams(proxy).collect::<Vec<_>>(),
        vec!["idp"]
    );
    // The explicit edge to it names no unit.
    let e = plan.services["app"]
        .edges
        .iter()
        .find(|e| e.upstream == "idp")
        .unwrap();
    assert_eq!((e.kind, e.via_unit.as_deref()), (EdgeKind::Requires, None));
    // Order: by stage, the external member in its own.
    assert_eq!(plan.order, vec!["dns", "idp", "proxy", "reg", "app", "web"]);
    // Upstreams (the engine's hold relation) include it for every later
    // service; it has none of its own (never restarted, so never held: when
    // its checks fail it is reported down).
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let ups = crate::engine::policy::upstreams(&plan);
    assert_eq!(ups, upstreams_from_pairs(&plan));
    assert_eq!(ups["idp"], list(&[]));
    assert_eq!(ups["proxy"], list(&["dns", "idp"]));
    assert_eq!(ups["app"], list(&["dns", "idp", "proxy", "reg"]));
    let text = plan.to_text();
    assert!(
        text.contains("stage 2 identity (target metacircular-identity.target"),
        "{text}"
    );
    assert!(text.contains("  idp  unit (no unit)"), "{text}");
    assert!(
        text.contains("<- idp via (external, no unit) (requires)"),
        "{text}"
    );
}

proptest::proptest! {
    /// The bitset upstreams (`engine::policy::upstream_sets`, one pass)
    /// equal the pairwise expansion on random platforms: up to 14 services
    /// in up to 5 stages (some empty, some services in none), external
    /// services, and `after`/`requires` edges to earlier services.
    #[test]
    fn upstream_sets_match_the_pairwise_expansion(
        specs in proptest::collection::vec(
            (0usize..6, proptest::bool::weighted(0.2), proptest::collection::vec((0usize..64, proptest::bool::ANY), 0..3)),
            1..14,
        ),
    ) {
        let mut cfg = sample();
        cfg.services.clear();
        cfg.stages = (0..5)
            .map(|k| stage(&format!("s{k}"), &[], FailurePolicy::Block))
            .collect();
        // Stage index nondecreasing along the list (5 = no stage), edges
        // only to earlier services: acyclic by construction.
        let mut last_stage = 0usize;
        for (i, (st, external, edges)) in specs.iter().enumerate() {
            let name = format!("svc{i:02}");
            let mut s = service(&name, 20000 + i as u16);
            if *external {
                s.container = None;
            }
            if i > 0 {
                for (to, requires) in edges {
                    let up = format!("svc{:02}", to % i);
                    if *requires { s.requires.push(up) } else { s.after.push(up) }
                }
            }
            let st = (*st).max(last_stage);
            if st < 5 {
                last_stage = st;
                cfg.stages[st].services.push(name.clone());
            }
            cfg.services.insert(name, s);
        }
        let Ok(plan) = build(&cfg) else {
            // Refused (e.g. an unstaged service after a staged one): nothing to compare.
            return Ok(());
        };
        proptest::prop_assert_eq!(crate::engine::policy::upstreams(&plan), upstreams_from_pairs(&plan));
    }
}
