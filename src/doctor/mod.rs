//! `mcrecover doctor`: checks that this machine can run the configured
//! platform BEFORE recovery starts (the runbook's "Prerequisites", and the
//! causes of its "Common Errors"), and says what to do about each problem.
//!
//! [`run`] checks everything; [`preflight_stage`] checks only what one stage
//! needs (bind addresses, free ports, cached images), for `recover` to call
//! before starting that stage. Every finding has a status, an explanation
//! and (unless ok) a remedy.

pub mod backend;
mod controllers;
pub mod net;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Config, Mode, PlatformUser, PullPolicy, Service};
use crate::drive::{BusTarget, Systemd};

pub use backend::detect_backend;

/// Free space below this is a warning.
pub const WARN_FREE_BYTES: u64 = 2 << 30;
/// Free space below this is a failure.
pub const FAIL_FREE_BYTES: u64 = 500 << 20;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Recovery may work, but something is off.
    Warn,
    /// Recovery will fail (or lose data) unless this is fixed.
    Fail,
}

impl Status {
    /// `ok`, `WARN`, `FAIL` as printed in the text table.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Check name, e.g. `hostname`, `bind-ip 100.95.252.120`, `port 127.0.0.1:28443/tcp`.
    pub check: String,
    /// Ok, warn or fail.
    pub status: Status,
    /// What was found, in words.
    pub explanation: String,
    /// What to do (absent when ok).
    pub remedy: Option<String>,
}

impl Finding {
    fn ok(check: impl Into<String>, explanation: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            status: Status::Ok,
            explanation: explanation.into(),
            remedy: None,
        }
    }

    fn bad(
        status: Status,
        check: impl Into<String>,
        explanation: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Self {
        Self {
            check: check.into(),
            status,
            explanation: explanation.into(),
            remedy: Some(remedy.into()),
        }
    }
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Bus of the system manager, for the prerequisite units.
    pub system_bus: BusTarget,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            system_bus: BusTarget::System,
        }
    }
}

/// Everything the doctor found.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// True when no finding failed.
    pub ok: bool,
    /// The worst status.
    pub worst: Status,
    /// Findings, in check order.
    pub findings: Vec<Finding>,
}

impl DoctorReport {
    fn new(findings: Vec<Finding>) -> Self {
        let worst = findings
            .iter()
            .map(|f| f.status)
            .max()
            .unwrap_or(Status::Ok);
        Self {
            ok: worst != Status::Fail,
            worst,
            findings,
        }
    }

    /// Process exit code: 1 when any finding failed, else 0.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.ok)
    }

    /// The findings as a table: status, check, explanation, and the remedy
    /// on the next line.
    pub fn to_text(&self) -> String {
        let width = self
            .findings
            .iter()
            .map(|f| f.check.len())
            .max()
            .unwrap_or(5)
            .clamp(5, 34);
        let mut out = format!("{:<6} {:<width$}  EXPLANATION\n", "STATUS", "CHECK");
        for f in &self.findings {
            let _ = writeln!(
                out,
                "{:<6} {:<width$}  {}",
                f.status.label(),
                f.check,
                f.explanation
            );
            if let Some(r) = &f.remedy {
                let _ = writeln!(out, "{:<6} {:<width$}  -> {r}", "", "");
            }
        }
        let count = |s: Status| self.findings.iter().filter(|f| f.status == s).count();
        let _ = writeln!(
            out,
            "{} ok, {} warnings, {} failures",
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail)
        );
        out
    }
}

/// Runs every check against this machine.
pub async fn run(cfg: &Config, opts: &DoctorOptions) -> DoctorReport {
    let mut f = Vec::new();
    f.push(check_hostname(cfg));
    if let Some(user) = &cfg.platform.user {
        f.push(check_user(user));
        if cfg.platform.mode == Mode::Rootless {
            f.extend(check_subids(user));
            f.push(check_user_manager(user));
        }
    }
    let containers: Vec<&Service> = cfg.services.values().filter(|s| !s.is_external()).collect();
    f.extend(check_bind_ips(&containers));
    f.extend(check_ports(&containers));
    f.extend(check_unprivileged_ports(cfg, &containers));
    f.extend(check_prerequisites(cfg, &opts.system_bus).await);
    f.extend(check_podman(cfg));
    f.extend(check_images(cfg, &containers).await);
    f.extend(controllers::check_restart_policies(cfg).await);
    f.extend(check_space(cfg));
    DoctorReport::new(f)
}

/// The host checks of [`preflight_stage`] (bind addresses, ports; no images)
/// for just these services, e.g. the ones of a stage not running yet.
pub async fn preflight_services(cfg: &Config, services: &[String]) -> Vec<Finding> {
    let containers: Vec<&Service> = services
        .iter()
        .filter_map(|n| cfg.services.get(n))
        .filter(|s| !s.is_external())
        .collect();
    let mut f = check_bind_ips(&containers);
    f.extend(check_ports(&containers));
    f
}

/// What one stage needs before it starts: its bind addresses present, its
/// ports free of foreign holders, and (with `images`) its images cached.
/// Only problems and one summary line per kind are returned. `recover`
/// uses [`preflight_services`] for the stage's services not running yet,
/// after loading their images (`crate::images`).
pub async fn preflight_stage(cfg: &Config, stage_name: &str, images: bool) -> Vec<Finding> {
    let Some(stage) = cfg.stages.iter().find(|s| s.name == stage_name) else {
        return vec![Finding::bad(
            Status::Fail,
            format!("stage {stage_name}"),
            format!("no stage `{stage_name}` in the configuration"),
            "use one of the configured stage names",
        )];
    };
    let mut f = preflight_services(cfg, &stage.services).await;
    if images {
        let containers: Vec<&Service> = stage
            .services
            .iter()
            .filter_map(|n| cfg.services.get(n))
            .filter(|s| !s.is_external())
            .collect();
        f.extend(check_images(cfg, &containers).await);
    }
    f
}

fn check_hostname(cfg: &Config) -> Finding {
    let Some(node) = &cfg.platform.node else {
        return Finding::ok("hostname", "no platform.node configured: any host");
    };
    match nix::unistd::gethostname() {
        Ok(h) => {
            let host = h.to_string_lossy().into_owned();
            let short = host.split('.').next().unwrap_or(&host);
            if short == node || host == *node {
                Finding::ok("hostname", format!("this machine is {host}, as configured"))
            } else {
                Finding::bad(
                    Status::Fail,
                    "hostname",
                    format!("this machine is {host}, the config is for {node}"),
                    format!(
                        "run mcrecover on {node}, or use a configuration written for {host} \
                         (platform.node)"
                    ),
                )
            }
        }
        Err(e) => Finding::bad(
            Status::Warn,
            "hostname",
            format!("cannot read the hostname: {e}"),
            "check `hostname`",
        ),
    }
}

fn check_user(user: &PlatformUser) -> Finding {
    let check = format!("user {}", user.name);
    match nix::unistd::User::from_name(&user.name) {
        Ok(Some(u)) if u.uid.as_raw() == user.uid && u.gid.as_raw() == user.gid => Finding::ok(
            check,
            format!(
                "uid={} gid={}, home {}",
                user.uid,
                user.gid,
                u.dir.display()
            ),
        ),
        Ok(Some(u)) => Finding::bad(
            Status::Fail,
            check,
            format!(
                "{} has uid={} gid={}, the config says uid={} gid={}: rootless podman's storage \
                 belongs to the configured uid (a uid change emptied it once)",
                user.name,
                u.uid.as_raw(),
                u.gid.as_raw(),
                user.uid,
                user.gid
            ),
            format!(
                "restore the uid (`usermod -u {} {}`, `groupmod -g {} {}`; fix file ownership) \
                 rather than changing the config",
                user.uid, user.name, user.gid, user.name
            ),
        ),
        Ok(None) => Finding::bad(
            Status::Fail,
            check,
            format!("user {} does not exist", user.name),
            format!(
                "create it with its fixed ids: `groupadd -g {gid} {n} && useradd -u {uid} -g {gid} \
                 -d {home} {n}` (on NixOS: users.users.{n}.uid = {uid})",
                gid = user.gid,
                uid = user.uid,
                n = user.name,
                home = user.home.display()
            ),
        ),
        Err(e) => Finding::bad(
            Status::Warn,
            check,
            format!("cannot look up {}: {e}", user.name),
            "check `id USER`",
        ),
    }
}

/// The subordinate id ranges of `name`/`uid` in an `/etc/subuid`-style text.
pub fn subid_ranges(text: &str, name: &str, uid: u32) -> Vec<(u64, u64)> {
    let uid_s = uid.to_string();
    text.lines()
        .filter_map(|l| {
            let mut p = l.trim().split(':');
            let (who, start, count) = (p.next()?, p.next()?, p.next()?);
            if who != name && who != uid_s {
                return None;
            }
            Some((start.parse().ok()?, count.parse().ok()?))
        })
        .collect()
}

fn check_subids(user: &PlatformUser) -> Vec<Finding> {
    ["subuid", "subgid"]
        .iter()
        .map(|kind| {
            let path = format!("/etc/{kind}");
            let check = format!("{kind} {}", user.name);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let ranges = subid_ranges(&text, &user.name, user.uid);
            let total: u64 = ranges.iter().map(|r| r.1).sum();
            let fix = format!(
                "`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {n}` (NixOS: \
                 users.users.{n}.autoSubUidGidRange = true), then `podman system migrate` as {n}",
                n = user.name
            );
            if ranges.is_empty() {
                Finding::bad(
                    Status::Fail,
                    check,
                    format!(
                        "no range for {} in {path}: rootless podman cannot start containers",
                        user.name
                    ),
                    fix,
                )
            } else if total < 65536 {
                Finding::bad(
                    Status::Warn,
                    check,
                    format!(
                        "only {total} ids in {path}; images with ids above that fail to unpack"
                    ),
                    fix,
                )
            } else {
                let r: Vec<String> = ranges.iter().map(|(s, c)| format!("{s}+{c}")).collect();
                Finding::ok(check, format!("{path}: {}", r.join(", ")))
            }
        })
        .collect()
}

fn check_user_manager(user: &PlatformUser) -> Finding {
    let linger = Path::new("/var/lib/systemd/linger")
        .join(&user.name)
        .exists();
    let bus = PathBuf::from(format!("/run/user/{}/bus", user.uid));
    let running = bus.exists();
    let check = format!("user manager {}", user.name);
    match (linger, running) {
        (true, true) => Finding::ok(check, format!("linger enabled, {} exists", bus.display())),
        (false, true) => Finding::bad(
            Status::Warn,
            check,
            format!(
                "user@{}.service is running but linger is off: after a reboot nothing starts \
                 {}'s manager, so no container comes back by itself",
                user.uid, user.name
            ),
            format!("`loginctl enable-linger {}`", user.name),
        ),
        (true, false) => Finding::bad(
            Status::Fail,
            check,
            format!(
                "linger is on but {} is missing: the user manager is not running",
                bus.display()
            ),
            format!(
                "`systemctl start user@{}.service`; then `journalctl -u user@{}.service`",
                user.uid, user.uid
            ),
        ),
        (false, false) => Finding::bad(
            Status::Fail,
            check,
            format!(
                "no linger and no user manager for {} ({} missing): rootless units cannot run",
                user.name,
                bus.display()
            ),
            format!(
                "`loginctl enable-linger {}` (starts user@{}.service now and at boot)",
                user.name, user.uid
            ),
        ),
    }
}

/// Every (ip, service) pair of explicit bind addresses.
fn bind_ips(containers: &[&Service]) -> BTreeMap<IpAddr, BTreeSet<String>> {
    let mut out: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    for s in containers {
        for p in s.container.iter().flat_map(|c| &c.ports) {
            if let Some(ip) = p.host_ip.filter(|ip| !ip.is_unspecified()) {
                out.entry(ip).or_default().insert(s.name.clone());
            }
        }
    }
    out
}

fn check_bind_ips(containers: &[&Service]) -> Vec<Finding> {
    let wanted = bind_ips(containers);
    if wanted.is_empty() {
        return Vec::new();
    }
    let local = match net::local_addresses() {
        Ok(l) => l,
        Err(e) => {
            return vec![Finding::bad(
                Status::Warn,
                "bind addresses",
                format!("cannot list interface addresses: {e}"),
                "check `ip -brief addr`",
            )]
        }
    };
    let mut f = Vec::new();
    let mut present = Vec::new();
    for (ip, services) in &wanted {
        if local.contains(ip) {
            present.push(ip.to_string());
            continue;
        }
        let users = services.iter().cloned().collect::<Vec<_>>().join(", ");
        let (why, fix) = if net::is_tailnet(*ip) {
            (
                format!(
                    "{ip} (Tailnet, 100.64.0.0/10) is not on any interface: Tailscale is down; \
                     needed by {users} (\"cannot assign requested address\")"
                ),
                "`systemctl start tailscaled && tailscale up`, then `tailscale status --self` \
                 shows the address"
                    .to_string(),
            )
        } else {
            (
                format!(
                    "{ip} is not on any interface; needed by {users} \
                     (\"cannot assign requested address\")"
                ),
                format!("bring up the interface that has {ip} (`ip -brief addr`), or fix the port binding"),
            )
        };
        f.push(Finding::bad(
            Status::Fail,
            format!("bind-ip {ip}"),
            why,
            fix,
        ));
    }
    if !present.is_empty() {
        f.insert(
            0,
            Finding::ok("bind addresses", format!("present: {}", present.join(", "))),
        );
    }
    f
}

fn check_ports(containers: &[&Service]) -> Vec<Finding> {
    let local = net::local_addresses().unwrap_or_default();
    let mut f = Vec::new();
    let mut free = 0usize;
    for s in containers {
        for p in s.container.iter().flat_map(|c| &c.ports) {
            let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            if !ip.is_unspecified() && !local.contains(&ip) {
                continue; // reported by check_bind_ips
            }
            let proto = match p.proto {
                crate::config::Proto::Tcp => "tcp",
                crate::config::Proto::Udp => "udp",
            };
            let check = format!("port {}:{}/{proto} ({})", fmt_ip(ip), p.host_port, s.name);
            if p.host_port == 53 && ip.is_unspecified() {
                f.push(Finding::bad(
                    Status::Warn,
                    check.clone(),
                    "publishes port 53 on all addresses: systemd-resolved holds 127.0.0.53:53, \
                     so this bind fails with \"address already in use\" where resolved runs",
                    "bind specific IPs, e.g. \"192.168.88.181:53:53\" and \"100.95.252.120:53:53\"",
                ));
            }
            match net::try_bind(ip, p.host_port, p.proto) {
                net::BindProbe::Free => free += 1,
                probe => {
                    let holders = net::holders(ip, p.host_port, p.proto);
                    if matches!(probe, net::BindProbe::Other(_))
                        && holders.is_empty()
                        && net::sockets_on(ip, p.host_port, p.proto).is_empty()
                    {
                        // e.g. EACCES below 1024 as a normal user: no listener seen.
                        free += 1;
                        continue;
                    }
                    f.push(port_finding(check, p.host_port, &s.name, &holders));
                }
            }
        }
    }
    if free > 0 {
        f.insert(
            0,
            Finding::ok("ports", format!("{free} published ports are free")),
        );
    }
    f
}

/// Rootless podman can publish a port below
/// `net.ipv4.ip_unprivileged_port_start` (default 1024) only if that sysctl
/// allows it: MCNS's port 53 needs it lowered.
fn check_unprivileged_ports(cfg: &Config, containers: &[&Service]) -> Vec<Finding> {
    if cfg.platform.mode != Mode::Rootless {
        return Vec::new();
    }
    let path = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    let Some(start) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u16>().ok())
    else {
        return Vec::new();
    };
    let low: BTreeSet<(u16, &str)> = containers
        .iter()
        .flat_map(|s| {
            s.container
                .iter()
                .flat_map(|c| &c.ports)
                .filter(|p| p.host_port < start)
                .map(|p| (p.host_port, s.name.as_str()))
        })
        .collect();
    let Some(lowest) = low.iter().map(|(p, _)| *p).min() else {
        return vec![Finding::ok(
            "unprivileged ports",
            format!("ip_unprivileged_port_start = {start}: every published port is allowed"),
        )];
    };
    let which: Vec<String> = low.iter().map(|(p, s)| format!("{p} ({s})")).collect();
    vec![Finding::bad(
        Status::Fail,
        "unprivileged ports",
        format!(
            "ip_unprivileged_port_start = {start}: rootless podman cannot publish {}",
            which.join(", ")
        ),
        format!(
            "`sysctl -w net.ipv4.ip_unprivileged_port_start={lowest}` and persist it \
             (NixOS: boot.kernel.sysctl.\"net.ipv4.ip_unprivileged_port_start\" = {lowest})"
        ),
    )]
}

fn fmt_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn port_finding(check: String, port: u16, service: &str, holders: &[net::Holder]) -> Finding {
    if holders.is_empty() {
        return Finding::bad(
            Status::Fail,
            check,
            format!(
                "already in use by a process this user cannot see; {service} will fail with \
                 \"address already in use\""
            ),
            format!("run `mcrecover doctor` as root to name it, or `ss -ltnup 'sport = :{port}'`"),
        );
    }
    if holders.iter().all(net::Holder::is_container_plumbing) {
        let who: Vec<String> = holders
            .iter()
            .map(|h| format!("{} (pid {})", h.comm, h.pid))
            .collect();
        return Finding::ok(
            check,
            format!(
                "held by podman's port forwarding {}: a container (presumably {service}) already \
                 publishes it",
                who.join(", ")
            ),
        );
    }
    let who: Vec<String> = holders
        .iter()
        .map(|h| format!("{} (pid {}, `{}`) on {}", h.comm, h.pid, h.cmdline, h.local))
        .collect();
    let mut why = format!(
        "held by {}; {service} will fail with \"address already in use\"",
        who.join(", ")
    );
    let mut fix = format!(
        "stop that process (`systemctl status {}` names its unit), or change {service}'s port binding",
        holders[0].pid
    );
    if port == 53 || holders.iter().any(net::Holder::is_resolved) {
        why.push_str(
            ". systemd-resolved holds port 53 on 127.0.0.53/127.0.0.54; a container must bind \
             specific IPs, never 0.0.0.0:53",
        );
        fix = "bind mcns to specific IPs (\"192.168.88.181:53:53\", \"100.95.252.120:53:53\"); \
               if another DNS server holds the IP, stop it"
            .into();
    }
    Finding::bad(Status::Fail, check, why, fix)
}

async fn check_prerequisites(cfg: &Config, bus: &BusTarget) -> Vec<Finding> {
    let units = &cfg.platform.prerequisites;
    if units.is_empty() {
        return Vec::new();
    }
    let sd = match Systemd::connect(bus).await {
        Ok(sd) => sd,
        Err(e) => {
            return vec![Finding::bad(
                Status::Warn,
                "prerequisites",
                format!(
                    "cannot reach the system manager at {} to check {}: {e}",
                    bus.address(),
                    units.join(", ")
                ),
                "check with `systemctl status UNIT` by hand",
            )]
        }
    };
    let mut f = Vec::new();
    for unit in units {
        let check = format!("unit {unit}");
        match sd.unit_state(unit).await {
            Ok(st) if st.is_active() => f.push(Finding::ok(check, "active")),
            Err(crate::drive::DriveError::UnitNotFound { .. }) => f.push(Finding::bad(
                Status::Fail,
                check,
                format!("{unit} is not installed (LoadState not-found)"),
                format!("install/enable {unit}, or remove it from platform.prerequisites"),
            )),
            Ok(st) => f.push(Finding::bad(
                Status::Fail,
                check,
                format!("{unit} is {} ({})", st.active_state, st.sub_state),
                format!("`systemctl restart {unit}`; see `journalctl -u {unit}`"),
            )),
            Err(e) => f.push(Finding::bad(
                Status::Warn,
                check,
                format!("cannot read its state: {e}"),
                format!("`systemctl status {unit}`"),
            )),
        }
    }
    f
}

fn check_podman(cfg: &Config) -> Vec<Finding> {
    let podman = &cfg.platform.podman;
    let mut f = Vec::new();
    match backend::podman_version(podman) {
        Ok(v) => f.push(Finding::ok(
            "podman",
            format!("{} ({})", v.line, podman.display()),
        )),
        Err(e) => f.push(Finding::bad(
            Status::Fail,
            "podman",
            e,
            format!(
                "install podman, or set platform.podman to its path (now {})",
                podman.display()
            ),
        )),
    }
    let gens = backend::quadlet_generators(cfg.platform.mode);
    f.push(match gens.first() {
        Some(g) => Finding::ok("quadlet", format!("generator at {}", g.display())),
        None => Finding::ok("quadlet", "no quadlet generator installed"),
    });
    let (chosen, why) = detect_backend(cfg);
    let name = match chosen {
        crate::render::Backend::Quadlet => "quadlet",
        crate::render::Backend::Service => "service",
    };
    f.push(Finding::ok("backend", format!("{name}: {why}")));
    f
}

/// How to run podman against the storage the containers use.
enum PodmanAs {
    /// Run it directly (we are that user).
    Direct,
    /// Run it through `runuser` as the platform user (we are root).
    Runuser(PlatformUser),
    /// We cannot see that storage.
    Cannot(String),
}

fn podman_as(cfg: &Config) -> PodmanAs {
    let euid = nix::unistd::geteuid();
    match (cfg.platform.mode, &cfg.platform.user) {
        (Mode::Rootless, Some(u)) if euid.as_raw() == u.uid => PodmanAs::Direct,
        (Mode::Rootless, Some(u)) if euid.is_root() => PodmanAs::Runuser(u.clone()),
        (Mode::Rootless, Some(u)) => PodmanAs::Cannot(format!(
            "the images are in {}'s storage; run doctor as {} or root",
            u.name, u.name
        )),
        _ if euid.is_root() => PodmanAs::Direct,
        _ => PodmanAs::Cannot("rootful storage: run doctor as root".into()),
    }
}

async fn image_exists(cfg: &Config, how: &PodmanAs, image: &str) -> Result<bool, String> {
    let podman = cfg.platform.podman.as_os_str();
    let mut cmd = match how {
        PodmanAs::Direct => {
            let mut c = tokio::process::Command::new(podman);
            c.args(["image", "exists", image]);
            c
        }
        PodmanAs::Runuser(u) => {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", &u.name, "--", "env"])
                .arg(format!("HOME={}", u.home.display()))
                .arg(format!("XDG_RUNTIME_DIR=/run/user/{}", u.uid))
                .arg(podman)
                .args(["image", "exists", image])
                .current_dir(if u.home.is_dir() {
                    u.home.as_path()
                } else {
                    Path::new("/")
                });
            c
        }
        PodmanAs::Cannot(why) => return Err(why.clone()),
    };
    let out = cmd
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run podman: {e}"))?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(format!(
            "podman image exists failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

async fn check_images(cfg: &Config, containers: &[&Service]) -> Vec<Finding> {
    let images: BTreeSet<&str> = containers
        .iter()
        .filter_map(|s| s.container.as_ref().map(|c| c.image.as_str()))
        .collect();
    if images.is_empty() {
        return Vec::new();
    }
    let how = podman_as(cfg);
    let whose = match (&how, &cfg.platform.user) {
        (PodmanAs::Direct | PodmanAs::Runuser(_), Some(u))
            if cfg.platform.mode == Mode::Rootless =>
        {
            format!("{}'s rootless storage", u.name)
        }
        _ => "root's storage".to_string(),
    };
    let short = |image: &str| -> String {
        image
            .strip_prefix(cfg.platform.image_prefix.as_str())
            .filter(|_| !cfg.platform.image_prefix.is_empty())
            .unwrap_or(image)
            .to_string()
    };
    let mut missing: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut present = 0usize;
    for image in &images {
        match image_exists(cfg, &how, image).await {
            Ok(true) => present += 1,
            Ok(false) => {
                let users: Vec<&str> = containers
                    .iter()
                    .filter(|s| s.container.as_ref().is_some_and(|c| c.image == *image))
                    .map(|s| s.name.as_str())
                    .collect();
                missing.push((image, users));
            }
            Err(e) => {
                return vec![Finding::bad(
                    Status::Warn,
                    "images",
                    format!("cannot check images: {e}"),
                    "run `podman image exists IMAGE` as the platform user",
                )];
            }
        }
    }
    let mut f = Vec::new();
    if present > 0 {
        f.push(Finding::ok(
            "images",
            format!("{present} of {} present in {whose}", images.len()),
        ));
    }
    if missing.is_empty() {
        return f;
    }
    let node = cfg.platform.node.as_deref().unwrap_or("HOST");
    let (as_user, ssh) = match (&cfg.platform.user, cfg.platform.mode) {
        (Some(u), Mode::Rootless) => (format!("as {}: ", u.name), format!("{}@{node}", u.name)),
        _ => (String::new(), node.to_string()),
    };
    // Missing images that the archive (platform.image_archive) has: recover
    // loads those itself before their stage (crate::images::ensure_images).
    let archived: BTreeMap<&str, PathBuf> = match &cfg.platform.image_archive {
        Some(dir) => {
            let index = crate::images::read_index(dir).unwrap_or_default();
            missing
                .iter()
                .filter_map(|(image, _)| {
                    let entry = index.get(*image)?;
                    let path = dir.join(&entry.file);
                    path.is_file().then_some((*image, path))
                })
                .collect()
        }
        None => BTreeMap::new(),
    };
    let (loadable, lost): (Vec<_>, Vec<_>) = missing
        .iter()
        .partition(|(image, _)| archived.contains_key(image));
    let hard = if cfg.platform.pull == PullPolicy::Never {
        Status::Fail
    } else {
        Status::Warn
    };
    let why = if cfg.platform.pull == PullPolicy::Never {
        "not archived either, and pull = never (the registry, MCR, is part of this platform)"
    } else {
        "not archived; it will be pulled, which needs the registry"
    };
    let archive_fix = "to keep it, `mcrecover images save` once it is present";
    if loadable.len() + lost.len() <= 3 {
        for (image, users) in &loadable {
            let path = archived
                .get(*image)
                .map_or(String::new(), |p| p.display().to_string());
            f.push(Finding::bad(
                Status::Warn,
                format!("image {}", short(image)),
                format!(
                    "not in {whose} (used by {}), but archived in {path}: `mcrecover recover` \
                     loads it before its stage",
                    users.join(", ")
                ),
                format!("nothing, or load it now: {as_user}`podman load -i {path}`"),
            ));
        }
        for (image, users) in &lost {
            f.push(Finding::bad(
                hard,
                format!("image {}", short(image)),
                format!("not in {whose} (used by {}); {why}", users.join(", ")),
                format!(
                    "from a machine that has it: `podman save {image} | ssh {ssh} podman load`; \
                     {archive_fix}"
                ),
            ));
        }
        return f;
    }
    let names = |v: &[&(&str, Vec<&str>)]| -> String {
        v.iter()
            .map(|(i, _)| short(i))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !loadable.is_empty() {
        let dir = cfg
            .platform
            .image_archive
            .as_ref()
            .map_or(String::new(), |d| d.display().to_string());
        f.push(Finding::bad(
            Status::Warn,
            "images archived",
            format!(
                "{} images are not in {whose} but archived in {dir}: {}; `mcrecover recover` \
                 loads them before their stages",
                loadable.len(),
                names(&loadable)
            ),
            format!("nothing, or see `mcrecover images status`; load by hand {as_user}`podman load -i {dir}/FILE`"),
        ));
    }
    if !lost.is_empty() {
        f.push(Finding::bad(
            hard,
            "images missing",
            format!(
                "{} of {} images are not in {whose}: {}; {why}",
                lost.len(),
                images.len(),
                names(&lost)
            ),
            format!(
                "a cold start (runbook \"Cold Start\"): from a machine that has them, \
                 `podman save IMAGE | ssh {ssh} podman load` for each{}; {archive_fix}",
                if cfg.platform.image_prefix.is_empty() {
                    String::new()
                } else {
                    format!(" (IMAGE = {}NAME:TAG)", cfg.platform.image_prefix)
                }
            ),
        ));
    }
    f
}

/// Where container storage lives for this config.
fn graphroot(cfg: &Config) -> PathBuf {
    match (cfg.platform.mode, &cfg.platform.user) {
        (Mode::Rootless, Some(u)) => u.home.join(".local/share/containers"),
        _ => PathBuf::from("/var/lib/containers"),
    }
}

/// The nearest existing ancestor of `p` (itself included).
fn existing(p: &Path) -> Option<&Path> {
    p.ancestors().find(|a| a.exists())
}

fn check_space(cfg: &Config) -> Vec<Finding> {
    let mut paths: Vec<(String, PathBuf)> = vec![("storage".into(), graphroot(cfg))];
    for s in cfg.services.values() {
        for v in s.container.iter().flat_map(|c| &c.volumes) {
            if v.host.starts_with('/') {
                paths.push((format!("volume {}", s.name), PathBuf::from(&v.host)));
            }
        }
    }
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut f = Vec::new();
    for (what, path) in paths {
        let Some(at) = existing(&path) else { continue };
        let st = match nix::sys::statvfs::statvfs(at) {
            Ok(st) => st,
            Err(e) => {
                f.push(Finding::bad(
                    Status::Warn,
                    format!("space {}", path.display()),
                    format!("statvfs {}: {e}", at.display()),
                    "check `df -h`",
                ));
                continue;
            }
        };
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let fsid = st.filesystem_id() as u64;
        if !seen.insert(fsid) {
            continue;
        }
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
        let check = format!("space {}", at.display());
        let human = format!(
            "{:.1} GiB free on the filesystem of {} ({what})",
            free as f64 / f64::from(1u32 << 30),
            path.display()
        );
        let fix = "free space (`podman image prune` as the platform user, old logs, `journalctl --vacuum-size=`); podman and SQLite fail on a full disk".to_string();
        f.push(if free < FAIL_FREE_BYTES {
            Finding::bad(Status::Fail, check, human, fix)
        } else if free < WARN_FREE_BYTES {
            Finding::bad(Status::Warn, check, human, fix)
        } else {
            Finding::ok(check, human)
        });
    }
    f
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn holder(comm: &str, local: &str) -> net::Holder {
        net::Holder {
            pid: 42,
            comm: comm.into(),
            cmdline: format!("/usr/lib/systemd/{comm}"),
            local: local.into(),
        }
    }

    #[test]
    fn port_holders_explained() {
        let f = port_finding(
            "port 0.0.0.0:53/udp (mcns)".into(),
            53,
            "mcns",
            &[holder("systemd-resolve", "127.0.0.53:53")],
        );
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.explanation.contains("held by systemd-resolve (pid 42"),
            "{f:?}"
        );
        assert!(
            f.explanation.contains("systemd-resolved holds port 53"),
            "{f:?}"
        );
        assert!(f
            .remedy
            .as_deref()
            .unwrap_or("")
            .contains("192.168.88.181:53:53"));

        let f = port_finding(
            "p".into(),
            48116,
            "mcat",
            &[holder("rootlessport", "127.0.0.1:48116")],
        );
        assert_eq!(f.status, Status::Ok);
        assert!(f
            .explanation
            .contains("podman's port forwarding rootlessport (pid 42)"));
        let f = port_finding(
            "p".into(),
            28443,
            "mcr-api",
            &[holder("conmon", "127.0.0.1:28443")],
        );
        assert_eq!(f.status, Status::Ok);

        let f = port_finding(
            "p".into(),
            28443,
            "mcr-api",
            &[holder("nginx", "0.0.0.0:28443")],
        );
        assert_eq!(f.status, Status::Fail);
        assert!(f.explanation.contains("held by nginx (pid 42"), "{f:?}");
        assert!(f
            .explanation
            .contains("mcr-api will fail with \"address already in use\""));

        let f = port_finding("p".into(), 28443, "mcr-api", &[]);
        assert_eq!(f.status, Status::Fail);
        assert!(f.remedy.as_deref().unwrap_or("").contains("as root"));
    }

    #[test]
    fn subid_lines() {
        let text = "root:100000:65536\nmcp:165536:65536\n850:300000:1000\n# x\nbad\n";
        assert_eq!(
            subid_ranges(text, "mcp", 850),
            vec![(165536, 65536), (300000, 1000)]
        );
        assert!(subid_ranges(text, "nobody", 65534).is_empty());
    }

    #[test]
    fn report_worst_and_text() {
        let r = DoctorReport::new(vec![
            Finding::ok("hostname", "this machine is rift, as configured"),
            Finding::bad(
                Status::Fail,
                "bind-ip 100.95.252.120",
                "Tailscale is down",
                "`tailscale up`",
            ),
        ]);
        assert!(!r.ok);
        assert_eq!(r.worst, Status::Fail);
        assert_eq!(r.exit_code(), 1);
        let t = r.to_text();
        assert!(
            t.contains("FAIL   bind-ip 100.95.252.120  Tailscale is down"),
            "{t}"
        );
        assert!(t.contains("-> `tailscale up`"), "{t}");
        assert!(t.ends_with("1 ok, 0 warnings, 1 failures\n"), "{t}");
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["findings"][1]["status"], "fail");
        assert_eq!(DoctorReport::new(vec![]).exit_code(), 0);
    }
}
