//! Step 3 of the flow: render a [`Plan`] into unit files and write them.
//!
//! Two backends ([`Backend`]; the config's `auto` is resolved by the caller):
//!
//! - **quadlet**: one `<service>.container` per non-external service, written
//!   to `platform.quadlet_dir`; podman's quadlet generator turns it into
//!   `<service>.service` on daemon-reload.
//! - **service**: one `<service>.service` running
//!   `podman run --replace --rm --name NAME --cgroups=no-conmon --sdnotify=conmon -d ...`
//!   with `Type=notify` (the shape of `podman generate systemd --new`, but
//!   addressing the container by name instead of a cid file); in rootful
//!   mode also `Wants=`/`After=network-online.target`, as quadlet adds.
//!
//! Container settings: `network = "bridge"` writes no network option (podman's
//! default network, as the runbook's `podman run` without `--network`;
//! `--network bridge` would switch rootless podman 4 from slirp4netns to a
//! rootless bridge), `host` writes `Network=host` / `--network=host`, a named
//! network its name. `user = "U:G"` becomes quadlet `User=U` + `Group=G`
//! (`--user U:G`). `Pull=never` (`--pull=never`) unless `platform.pull =
//! "missing"`. `TimeoutStartSec=` is the longest check start period +
//! [`START_PERIOD_MARGIN`], at least [`MIN_START_TIMEOUT`]. Escaping rules
//! (and what quadlet cannot carry: a lone `;` or an empty argument) are in
//! [`escape`].
//!
//! `Restart=` of container units: with `[watch] restart_owner = "mcrecover"`
//! (the default) always `Restart=no`, because the daemon restarts exited
//! units itself (with backoff, and stops at escalation; a systemd restart
//! would bypass both); with `restart_owner = "systemd"` the service's
//! `restart` key mapped by [`RestartPolicy::systemd_value`].
//!
//! Both backends also write, to `platform.unit_dir`:
//! - `<platform>-<stage>.target` per stage: `Wants=` its services,
//!   `Requires=` + `After=` its gate (so starting the target waits for the
//!   verdict, and fails when the gate fails);
//! - `<platform>-<stage>-gate.service`: `Type=oneshot`, `RemainAfterExit=yes`,
//!   runs `<mcrecover> gate --stage NAME --config <config_path>`, `After=` and
//!   `Wants=` the stage's services, `After=` the previous gate, `Requires=` +
//!   `After=` the stage's *blocking gate* (see below), `TimeoutStartSec=` the
//!   stage timeout + [`GATE_MARGIN`];
//! - `<platform>.target`: `Wants=` every stage target, `Requires=` the gate of
//!   every `block` stage and `Wants=` the gate of every `continue` stage,
//!   `After=` every stage target and every `block` gate. So
//!   `systemctl start <platform>.target` fails (job result `dependency`)
//!   when a `block` stage's gate fails, and succeeds although a `continue`
//!   stage's gate failed.
//!
//! The *blocking gate* of stage N is the gate of the last stage before N
//! whose policy is `block` (none for the first stage, nor when every earlier
//! stage is `continue`). Because it is a `Requires=`, a failed `block` gate
//! fails the start jobs of every later gate (result `dependency`, transitively
//! through the chain of blocking gates) before they run their checks, also
//! across `continue` stages in between; a failed `continue` gate is only an
//! `After=` for the next gate and fails nothing.
//!
//! Every service of stage N+1 gets `After=<gate N>` plus `Requires=<gate N>`
//! (stage N policy `block`) or `Wants=<gate N>` (`continue`), and
//! `Requires=` + `After=` its stage's blocking gate when that is not already
//! `<gate N>` (stage N `continue` after an earlier `block` stage, or stage N
//! empty), so no service of a stage after a failed `block` stage is started.
//! Config `after` gives `After=`, `requires` gives `Requires=` + `After=`
//! (edges to external services have no unit and are not rendered; the gate
//! checks them).
//!
//! Manager choice: in rootless mode all units belong to the platform user's
//! manager (`systemctl --user`; quadlet reads the user's quadlet directory),
//! in rootful mode to the system manager. No `User=` is written (quadlet
//! rejects it; the user manager already runs as the user). The top target
//! has no `[Install]` section: it is started explicitly (by mcrecover), never
//! through `default.target`/`multi-user.target`. Container units carry
//! `[Install] WantedBy=<stage target>`, which quadlet turns into a `.wants`
//! link and which is harmless (redundant with the target's `Wants=`) for the
//! service backend.
//!
//! Every file starts with [`HEADER_PREFIX`]`<config source>; do not edit.`;
//! [`write()`] uses that header to spot stale files it generated earlier.
//! Output is deterministic: same config, byte-identical files.

pub mod escape;
pub mod rules;
pub mod unit;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{
    BackendChoice, Config, Container, FailurePolicy, Mode, Network, PullPolicy, RestartOwner,
    RestartPolicy, Service,
};
use crate::plan::{EdgeKind, Plan, PlanService};

pub use escape::EscapeError;
pub use unit::{Section, UnitFile};

/// First bytes of every generated file.
pub const HEADER_PREFIX: &str = "# Generated by mcrecover from ";

/// Margin added to a stage's timeout for its gate's `TimeoutStartSec=`.
pub const GATE_MARGIN: Duration = Duration::from_secs(30);

/// Minimum `TimeoutStartSec=` of a container unit.
pub const MIN_START_TIMEOUT: Duration = Duration::from_secs(90);

/// Margin added to the longest check start period for a container unit.
pub const START_PERIOD_MARGIN: Duration = Duration::from_secs(30);

/// Which kind of container unit to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Quadlet `.container` files.
    Quadlet,
    /// Plain `.service` units running `podman run`.
    Service,
}

impl Backend {
    /// Resolve the config's choice: `auto` is quadlet when the caller found a
    /// usable quadlet generator (podman >= 4.4), else the service backend.
    pub fn resolve(choice: BackendChoice, quadlet_available: bool) -> Backend {
        match choice {
            BackendChoice::Quadlet => Backend::Quadlet,
            BackendChoice::Service => Backend::Service,
            BackendChoice::Auto if quadlet_available => Backend::Quadlet,
            BackendChoice::Auto => Backend::Service,
        }
    }
}

/// Where a rendered file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    /// `platform.quadlet_dir` (`.container` files).
    QuadletDir,
    /// `platform.unit_dir` (`.service` / `.target` units).
    UnitDir,
}

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedFile {
    /// Destination directory kind.
    pub dest: Destination,
    /// File name.
    pub name: String,
    /// Full contents.
    pub contents: String,
}

/// Everything rendered for one plan, sorted by (destination, name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    /// Backend used.
    pub backend: Backend,
    /// The files.
    pub files: Vec<RenderedFile>,
}

impl Rendered {
    /// The file called `name`, if rendered.
    pub fn get(&self, name: &str) -> Option<&RenderedFile> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// Rendering or writing failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A value cannot be written into a unit file. The reason is part of
    /// the message and deliberately not a `source()`: error chains print it
    /// once.
    #[error("service {service}: {field}: {reason}")]
    Escape {
        /// Service (or unit) the value belongs to.
        service: String,
        /// Which field, e.g. `argument 3 of command`.
        field: String,
        /// What is wrong.
        reason: EscapeError,
    },
    /// The plan does not match the config (a service of the plan is missing).
    #[error("plan and config disagree: {0}")]
    Inconsistent(String),
    /// A file to be written exists but was not generated by mcrecover.
    #[error("{path} exists and was not generated by mcrecover (no \"{HEADER_PREFIX}...\" header); refusing to overwrite it: move it away first")]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// Something else than a regular file is at a unit's path (a symbolic
    /// link is not followed, a FIFO not read): neither read nor replaced.
    #[error("{path} is a {kind}, not a unit file written by mcrecover; it is neither followed nor replaced: move it away first")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is: `symbolic link`, `FIFO`, `directory`, ...
        kind: &'static str,
    },
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl RenderError {
    /// True when the configuration is at fault (exit code 2), false for the
    /// file system (a foreign file in the way, I/O).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            RenderError::Escape { .. } | RenderError::Inconsistent(_)
        )
    }
}

fn esc(
    service: &str,
    field: impl Into<String>,
    r: Result<String, EscapeError>,
) -> Result<String, RenderError> {
    r.map_err(|reason| RenderError::Escape {
        service: service.to_string(),
        field: field.into(),
        reason,
    })
}

fn esc_line(
    service: &str,
    what: &str,
    argv: &[String],
    r: Result<String, (usize, EscapeError)>,
) -> Result<String, RenderError> {
    r.map_err(|(i, reason)| RenderError::Escape {
        service: service.to_string(),
        field: format!(
            "argument {} of {what} ({:?})",
            i + 1,
            argv.get(i).map_or("", |s| s.as_str())
        ),
        reason,
    })
}

/// Whole seconds, rounded up, as a systemd time span.
fn secs(d: Duration) -> String {
    let mut s = d.as_secs();
    if d.subsec_nanos() > 0 {
        s += 1;
    }
    format!("{s}s")
}

/// The `Restart=` value of a container unit (see the module docs).
fn restart_value(cfg: &Config, c: &Container) -> &'static str {
    match cfg.watch.restart_owner {
        RestartOwner::Mcrecover => RestartPolicy::No.systemd_value(),
        RestartOwner::Systemd => c.restart.systemd_value(),
    }
}

fn header(cfg: &Config) -> Vec<String> {
    vec![format!(
        "Generated by mcrecover from {}; do not edit.",
        escape::comment(&cfg.source.display().to_string())
    )]
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Render every unit file for `plan` with `backend`.
pub fn render(cfg: &Config, plan: &Plan, backend: Backend) -> Result<Rendered, RenderError> {
    let mut files = Vec::new();
    let hdr = header(cfg);
    let platform = &plan.platform;
    let blockers = blocking_gates(plan);

    for name in &plan.order {
        let psvc = plan.services.get(name).ok_or_else(|| {
            RenderError::Inconsistent(format!("service {name} in order but not in plan"))
        })?;
        let svc = cfg
            .services
            .get(name)
            .ok_or_else(|| RenderError::Inconsistent(format!("service {name} not in config")))?;
        if psvc.unit.is_none() || svc.container.is_none() {
            continue;
        }
        let Some(stage) = psvc.stage.and_then(|i| plan.stages.get(i)) else {
            // A container service in no stage is never started; nothing to render.
            tracing::warn!(service = %name, "container service is in no stage; no unit rendered");
            continue;
        };
        // The configuration loader has applied the same rules (with
        // locations); this is the backstop for other configurations and
        // for `render --backend` overriding the configured backend.
        rules::check_service(svc, backend).map_err(|(field, reason)| RenderError::Escape {
            service: name.clone(),
            field: field.to_string(),
            reason,
        })?;
        let mut u = match backend {
            Backend::Quadlet => UnitFile::new(format!("{name}.container"), hdr.clone()),
            Backend::Service => UnitFile::new(format!("{name}.service"), hdr.clone()),
        };
        let desc = svc
            .description
            .clone()
            .unwrap_or_else(|| format!("{platform} {} service {name}", stage.name));
        let desc = esc(name, "description", escape::plain(&desc))?;
        u.section("Unit").add("Description", desc);
        let blocker = psvc.stage.and_then(|i| blockers.get(i).copied().flatten());
        unit_edges(&mut u, psvc, blocker);
        match backend {
            Backend::Quadlet => quadlet_body(&mut u, cfg, svc)?,
            Backend::Service => service_body(&mut u, cfg, svc)?,
        }
        let start_timeout = svc
            .checks
            .iter()
            .map(|c| c.start_period + START_PERIOD_MARGIN)
            .fold(MIN_START_TIMEOUT, Duration::max);
        u.section("Service")
            .add("TimeoutStartSec", secs(start_timeout));
        u.section("Install").add("WantedBy", stage.target.clone());
        let dest = match backend {
            Backend::Quadlet => Destination::QuadletDir,
            Backend::Service => Destination::UnitDir,
        };
        files.push(RenderedFile {
            dest,
            name: u.name.clone(),
            contents: u.to_text(),
        });
    }

    let mcrecover = path_str(&cfg.platform.mcrecover);
    let config_path = path_str(&cfg.platform.config_path);
    let mut top = UnitFile::new(plan.top_target.clone(), hdr.clone());
    top.section("Unit").add(
        "Description",
        esc(
            platform,
            "platform name",
            escape::plain(&format!("{platform} platform (all stages)")),
        )?,
    );
    for (i, st) in plan.stages.iter().enumerate() {
        let members: Vec<&PlanService> = plan
            .stage_services(i)
            .filter(|s| s.unit.is_some())
            .collect();
        // Gate.
        let mut g = UnitFile::new(st.gate.clone(), hdr.clone());
        let desc = format!("{platform} stage {} health gate", st.name);
        let us = g.section("Unit");
        us.add(
            "Description",
            esc(platform, "stage name", escape::plain(&desc))?,
        );
        let prev = i.checked_sub(1).and_then(|p| plan.stages.get(p));
        if let Some(prev) = prev {
            us.add("After", prev.gate.clone());
        }
        if let Some(b) = blockers.get(i).copied().flatten() {
            if prev.is_none_or(|p| p.gate != b) {
                us.add("After", b);
            }
            us.add("Requires", b);
        }
        for m in &members {
            if let Some(unit) = &m.unit {
                us.add("Wants", unit.clone());
                us.add("After", unit.clone());
            }
        }
        let argv = vec![
            mcrecover.clone(),
            "gate".to_string(),
            "--stage".to_string(),
            st.name.clone(),
            "--config".to_string(),
            config_path.clone(),
        ];
        let exec = esc_line(&st.gate, "gate command", &argv, escape::exec_line(&argv))?;
        g.section("Service")
            .add("Type", "oneshot")
            .add("RemainAfterExit", "yes")
            .add("ExecStart", exec)
            .add("TimeoutStartSec", secs(st.timeout + GATE_MARGIN));
        files.push(RenderedFile {
            dest: Destination::UnitDir,
            name: g.name.clone(),
            contents: g.to_text(),
        });
        // Stage target.
        let mut t = UnitFile::new(st.target.clone(), hdr.clone());
        let desc = format!("{platform} stage {}", st.name);
        let ts = t.section("Unit");
        ts.add(
            "Description",
            esc(platform, "stage name", escape::plain(&desc))?,
        );
        for m in &members {
            if let Some(unit) = &m.unit {
                ts.add("Wants", unit.clone());
            }
        }
        ts.add("Requires", st.gate.clone());
        ts.add("After", st.gate.clone());
        files.push(RenderedFile {
            dest: Destination::UnitDir,
            name: t.name.clone(),
            contents: t.to_text(),
        });
        let gate_dep = match st.policy {
            FailurePolicy::Block => "Requires",
            FailurePolicy::Continue => "Wants",
        };
        top.section("Unit")
            .add("Wants", st.target.clone())
            .add(gate_dep, st.gate.clone());
    }
    for st in &plan.stages {
        top.section("Unit").add("After", st.target.clone());
    }
    for st in plan
        .stages
        .iter()
        .filter(|st| st.policy == FailurePolicy::Block)
    {
        top.section("Unit").add("After", st.gate.clone());
    }
    files.push(RenderedFile {
        dest: Destination::UnitDir,
        name: top.name.clone(),
        contents: top.to_text(),
    });
    files.sort_by(|a, b| (a.dest, &a.name).cmp(&(b.dest, &b.name)));
    Ok(Rendered { backend, files })
}

/// The blocking gate of every stage, by stage index: the gate unit of the
/// last earlier stage whose policy is `block` (`None` for the first stage and
/// when every earlier stage is `continue`). Empty stages count like any other:
/// their gate passes at once unless its own blocking gate failed.
fn blocking_gates(plan: &Plan) -> Vec<Option<&str>> {
    let mut last_block = None;
    plan.stages
        .iter()
        .map(|st| {
            let blocker = last_block;
            if st.policy == FailurePolicy::Block {
                last_block = Some(st.gate.as_str());
            }
            blocker
        })
        .collect()
}

/// `[Unit]` dependency lines for a container service; `blocker` is its
/// stage's blocking gate (see [`blocking_gates`]).
fn unit_edges(u: &mut UnitFile, psvc: &PlanService, blocker: Option<&str>) {
    let s = u.section("Unit");
    let mut after: BTreeSet<&str> = BTreeSet::new();
    let mut requires: BTreeSet<&str> = BTreeSet::new();
    for e in &psvc.edges {
        let Some(via) = e.via_unit.as_deref() else {
            continue;
        };
        match e.kind {
            EdgeKind::After => {
                after.insert(via);
            }
            EdgeKind::Requires => {
                after.insert(via);
                requires.insert(via);
            }
        }
    }
    if let Some(se) = &psvc.stage_edge {
        s.add("After", se.gate.as_str());
        match se.policy {
            FailurePolicy::Continue => s.add("Wants", se.gate.as_str()),
            FailurePolicy::Block => s.add("Requires", se.gate.as_str()),
        };
    }
    // After a `continue` (or empty) stage, a failed earlier `block` stage must
    // still keep this service from starting.
    if let Some(b) = blocker {
        let covered = psvc
            .stage_edge
            .as_ref()
            .is_some_and(|se| se.gate == b && se.policy == FailurePolicy::Block);
        if !covered {
            s.add("After", b);
            s.add("Requires", b);
        }
    }
    for a in after {
        s.add("After", a);
    }
    for r in requires {
        s.add("Requires", r);
    }
}

fn quadlet_body(u: &mut UnitFile, cfg: &Config, svc: &Service) -> Result<(), RenderError> {
    let name = svc.name.as_str();
    let Some(c) = &svc.container else {
        return Ok(());
    };
    let s = u.section("Container");
    s.add(
        "Image",
        esc(
            name,
            "image",
            escape::quadlet_raw(&c.image, "quadlet Image="),
        )?,
    );
    s.add(
        "ContainerName",
        esc(
            name,
            "container name",
            escape::quadlet_raw(&c.name, "quadlet ContainerName="),
        )?,
    );
    match &c.network {
        // Podman's default network (slirp4netns/pasta rootless, the default
        // bridge rootful): write nothing, as `podman run` without --network.
        Network::Bridge => {}
        Network::Host => {
            s.add("Network", "host");
        }
        Network::Named(n) => {
            s.add(
                "Network",
                esc(name, "network", escape::quadlet_raw(n, "quadlet Network="))?,
            );
        }
    }
    for p in &c.ports {
        s.add(
            "PublishPort",
            esc(
                name,
                format!("port {:?}", p.raw),
                escape::quadlet_raw(&p.raw, "quadlet PublishPort="),
            )?,
        );
    }
    for v in &c.volumes {
        s.add(
            "Volume",
            esc(
                name,
                format!("volume {:?}", v.raw),
                escape::quadlet_raw(&v.raw, "quadlet Volume="),
            )?,
        );
    }
    if let Some(user) = &c.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        s.add(
            "User",
            esc(name, "user", escape::quadlet_raw(uid, "quadlet User="))?,
        );
        if let Some(g) = gid {
            s.add(
                "Group",
                esc(name, "user", escape::quadlet_raw(g, "quadlet Group="))?,
            );
        }
    }
    for (k, v) in &c.env {
        let kv = format!("{k}={v}");
        s.add(
            "Environment",
            esc(
                name,
                format!("environment variable {k}"),
                escape::quadlet_exec_word(&kv),
            )?,
        );
    }
    s.add(
        "Pull",
        match cfg.platform.pull {
            PullPolicy::Never => "never",
            PullPolicy::Missing => "missing",
        },
    );
    if !c.podman_args.is_empty() {
        let line = esc_line(
            name,
            "podman_args",
            &c.podman_args,
            escape::quadlet_exec_line(&c.podman_args),
        )?;
        s.add("PodmanArgs", line);
    }
    if !c.command.is_empty() {
        let line = esc_line(
            name,
            "command",
            &c.command,
            escape::quadlet_exec_line(&c.command),
        )?;
        s.add("Exec", line);
    }
    u.section("Service").add("Restart", restart_value(cfg, c));
    Ok(())
}

/// The `podman run` argv of the service backend, without the executable
/// (`run --replace --rm --name NAME ... IMAGE COMMAND...`); empty for an
/// external service. This is exactly what the rendered `ExecStart=` passes
/// after `platform.podman`.
pub fn podman_run_argv(cfg: &Config, svc: &Service) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let Some(c) = &svc.container else { return a };
    for s in ["run", "--replace", "--rm", "--name"] {
        a.push(s.into());
    }
    a.push(c.name.clone());
    for s in ["--cgroups=no-conmon", "--sdnotify=conmon", "-d"] {
        a.push(s.into());
    }
    a.push(
        match cfg.platform.pull {
            PullPolicy::Never => "--pull=never",
            PullPolicy::Missing => "--pull=missing",
        }
        .into(),
    );
    match &c.network {
        Network::Bridge => {}
        Network::Host => a.push("--network=host".into()),
        Network::Named(n) => a.push(format!("--network={n}")),
    }
    for p in &c.ports {
        a.push("--publish".into());
        a.push(p.raw.clone());
    }
    for v in &c.volumes {
        a.push("--volume".into());
        a.push(v.raw.clone());
    }
    if let Some(u) = &c.user {
        a.push("--user".into());
        a.push(u.clone());
    }
    for (k, v) in &c.env {
        a.push("--env".into());
        a.push(format!("{k}={v}"));
    }
    a.extend(c.podman_args.iter().cloned());
    a.push(c.image.clone());
    a.extend(c.command.iter().cloned());
    a
}

fn service_body(u: &mut UnitFile, cfg: &Config, svc: &Service) -> Result<(), RenderError> {
    let name = svc.name.as_str();
    let Some(c) = &svc.container else {
        return Ok(());
    };
    if cfg.platform.mode == Mode::Rootful {
        // As quadlet does for rootful units: published host addresses must
        // exist before podman binds them. (The user manager has no such target.)
        u.section("Unit")
            .add("Wants", "network-online.target")
            .add("After", "network-online.target");
    }
    let podman = path_str(&cfg.platform.podman);
    let mut run = vec![podman.clone()];
    run.extend(podman_run_argv(cfg, svc));
    // Stop and remove only the container this unit started: its name AND
    // the label podman gives what it runs from this unit. A container of
    // the same name started by another controller (e.g. `mcp deploy`'s
    // `podman run --replace`, which ends this unit's container and so this
    // unit) is left alone (issue 13: never fight another controller).
    let only_ours = [
        "--filter".to_owned(),
        format!("name=^{}$", regex_literal(&c.name)),
        "--filter".to_owned(),
        format!(
            "label=PODMAN_SYSTEMD_UNIT={}",
            crate::plan::service_unit(name)
        ),
    ];
    let mut stop = vec![podman.clone(), "stop".into(), "-t".into(), "10".into()];
    stop.extend(only_ours.iter().cloned());
    let mut rm = vec![podman, "rm".into(), "-f".into()];
    rm.extend(only_ours.iter().cloned());
    let s = u.section("Service");
    s.add("Type", "notify")
        .add("NotifyAccess", "all")
        .add("Environment", "PODMAN_SYSTEMD_UNIT=%n")
        .add(
            "ExecStart",
            esc_line(name, "podman run command", &run, escape::exec_line(&run))?,
        )
        .add(
            "ExecStop",
            esc_line(name, "podman stop command", &stop, escape::exec_line(&stop))?,
        )
        .add(
            "ExecStopPost",
            esc_line(name, "podman rm command", &rm, escape::exec_line(&rm))?,
        )
        .add("Restart", restart_value(cfg, c))
        .add("TimeoutStopSec", "70s");
    Ok(())
}

/// `name` as a regular expression matching exactly it (podman's `name=`
/// filter is a regular expression; container names may contain `.`).
fn regex_literal(name: &str) -> String {
    name.replace('.', "\\.")
}

/// What [`write()`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriteReport {
    /// Files that did not exist.
    pub created: Vec<PathBuf>,
    /// Files whose contents changed.
    pub changed: Vec<PathBuf>,
    /// Files already up to date (not touched).
    pub unchanged: Vec<PathBuf>,
    /// Files carrying our header that are no longer rendered (not deleted).
    pub stale: Vec<PathBuf>,
}

impl WriteReport {
    /// True if anything was (or would be) created or changed.
    pub fn modified(&self) -> bool {
        !self.created.is_empty() || !self.changed.is_empty()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RenderError + '_ {
    move |source| RenderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `rendered` into `quadlet_dir` / `unit_dir`. Only changed files are
/// written, each atomically, in batches: every changed file is first written
/// to a temporary file in its directory and fsynced, then all are renamed
/// over their names, then each directory that received a file is fsynced
/// once (two directories at most instead of one fsync per file). A crash
/// leaves each name with either its old or its new contents (never a partial
/// file); it may leave some names old and others new, and, before the
/// renames, temporary files `.<name>.mcrecover-*.tmp`, which are not units
/// and are ignored. Files of our own (header
/// [`HEADER_PREFIX`]) that are no longer rendered are reported as stale, never
/// deleted. An existing file that differs and does not carry our header is
/// never overwritten: [`RenderError::Foreign`], and nothing is written; nor
/// is anything else than a regular file at a unit's path, which is not even
/// read ([`RenderError::NotAFile`]; see `read_existing`). With
/// `dry_run` nothing is created or written; the report says what would
/// happen.
pub fn write(
    rendered: &Rendered,
    quadlet_dir: &Path,
    unit_dir: &Path,
    dry_run: bool,
) -> Result<WriteReport, RenderError> {
    let mut report = WriteReport::default();
    let dir_of = |d: Destination| match d {
        Destination::QuadletDir => quadlet_dir,
        Destination::UnitDir => unit_dir,
    };
    let mut ours: BTreeSet<PathBuf> = BTreeSet::new();
    // First decide everything (so a foreign file stops the whole write before
    // anything is touched), then write.
    let mut todo = Vec::new();
    for f in &rendered.files {
        let dir = dir_of(f.dest);
        let path = dir.join(&f.name);
        ours.insert(path.clone());
        let existing = read_existing(&path)?;
        match existing {
            Some(b) if b == f.contents.as_bytes() => {
                report.unchanged.push(path);
                continue;
            }
            Some(b) if !b.starts_with(HEADER_PREFIX.as_bytes()) => {
                return Err(RenderError::Foreign { path });
            }
            Some(_) => report.changed.push(path.clone()),
            None => report.created.push(path.clone()),
        }
        todo.push((dir, f, path));
    }
    if !dry_run && !todo.is_empty() {
        let batch: Vec<(&Path, &str, &[u8])> = todo
            .iter()
            .map(|(dir, f, _)| (*dir, f.name.as_str(), f.contents.as_bytes()))
            .collect();
        atomic_write_all(&batch)?;
        for (_, f, path) in &todo {
            tracing::info!(unit = %f.name, path = %path.display(), "wrote unit file");
        }
    }
    let dirs: BTreeSet<&Path> = [quadlet_dir, unit_dir].into_iter().collect();
    for dir in dirs {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            let is_unit = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "container" | "service" | "target"));
            if !is_unit
                || ours.contains(&path)
                || !entry.file_type().map_err(io_err(&path))?.is_file()
            {
                continue;
            }
            if is_generated(&path) {
                report.stale.push(path);
            }
        }
    }
    for v in [
        &mut report.created,
        &mut report.changed,
        &mut report.unchanged,
        &mut report.stale,
    ] {
        v.sort();
    }
    Ok(report)
}

/// The largest existing file at a unit's path that is read: every unit we
/// render is far smaller, so a larger file is not ours ([`RenderError::Foreign`]).
pub const MAX_EXISTING_BYTES: u64 = 1 << 20;

/// The contents of the existing file at a unit's `path`, `None` when there
/// is none. It is opened without following a symbolic link and without
/// waiting on a FIFO (`O_NOFOLLOW | O_NONBLOCK`), must be a regular file
/// ([`RenderError::NotAFile`] otherwise: a link, e.g. a masked unit's link to
/// `/dev/null`, or a FIFO is never read or replaced) and is read up to
/// [`MAX_EXISTING_BYTES`] (a larger file is [`RenderError::Foreign`]).
fn read_existing(path: &Path) -> Result<Option<Vec<u8>>, RenderError> {
    use crate::safe_fs::{open_regular, read_bounded, OpenError};
    match open_regular(path).and_then(|(f, _)| read_bounded(f, MAX_EXISTING_BYTES)) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(OpenError::NotRegular(kind)) => Err(RenderError::NotAFile {
            path: path.to_path_buf(),
            kind,
        }),
        Err(OpenError::TooLarge(_)) => Err(RenderError::Foreign {
            path: path.to_path_buf(),
        }),
        Err(OpenError::Io(e)) => Err(io_err(path)(e)),
    }
}

/// Whether the file at `path` is a regular file (not followed when it is a
/// symbolic link, not waited on when it is a FIFO) starting with our header.
fn is_generated(path: &Path) -> bool {
    use std::io::Read as _;
    let mut buf = vec![0u8; HEADER_PREFIX.len()];
    crate::safe_fs::open_regular(path)
        .ok()
        .is_some_and(|(mut f, _)| f.read_exact(&mut buf).is_ok() && buf == HEADER_PREFIX.as_bytes())
}

/// From this many files on, [`atomic_write_all`] flushes the temporary files
/// with one `syncfs(2)` per directory instead of one fsync per file (1000
/// fsyncs cost 2–3 s on a shared disk; a syncfs costs tens of ms).
const SYNCFS_FROM: usize = 32;

/// Write every `(dir, name, contents)` atomically: (1) each to a new
/// temporary file in `dir`, mode 0644, made durable (fsync per file, or for
/// [`SYNCFS_FROM`] files and more one `syncfs` of each directory's file
/// system, which also reports writeback errors on Linux >= 5.8); (2) each
/// temporary file renamed over `dir/name`; (3) each distinct `dir` fsynced
/// once, so the renames are durable. On an error, temporary files not yet
/// renamed are removed; files already renamed keep their (complete) new
/// contents.
fn atomic_write_all(files: &[(&Path, &str, &[u8])]) -> Result<(), RenderError> {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dirs: BTreeSet<&Path> = files.iter().map(|(dir, _, _)| *dir).collect();
    for dir in &dirs {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    // (1) Temporary files, written and fsynced.
    let mut temps: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(files.len());
    let remove_temps = |temps: &[(PathBuf, PathBuf)]| {
        for (tmp, _) in temps {
            let _ = fs::remove_file(tmp);
        }
    };
    let batch = files.len() >= SYNCFS_FROM;
    for (dir, name, contents) in files {
        let target = dir.join(name);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.mcrecover-{}-{n}.tmp", std::process::id()));
        let written = (|| -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(contents)?;
            {
                use std::os::unix::fs::PermissionsExt as _;
                f.set_permissions(fs::Permissions::from_mode(0o644))?;
            }
            if batch {
                Ok(())
            } else {
                f.sync_all()
            }
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            remove_temps(&temps);
            return Err(io_err(&target)(e));
        }
        temps.push((tmp, target));
    }
    if batch {
        for dir in &dirs {
            let synced = fs::File::open(dir)
                .and_then(|d| nix::unistd::syncfs(&d).map_err(std::io::Error::from));
            if let Err(e) = synced {
                remove_temps(&temps);
                return Err(io_err(dir)(e));
            }
        }
    }
    // (2) Renames.
    for (i, (tmp, target)) in temps.iter().enumerate() {
        if let Err(e) = fs::rename(tmp, target) {
            remove_temps(temps.get(i..).unwrap_or_default());
            return Err(io_err(target)(e));
        }
    }
    // (3) One fsync per directory.
    for dir in dirs {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
