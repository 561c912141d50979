//! The validated configuration model: what every later step (plan, render,
//! drive, watch) consumes. Values here are already checked; a `Config` can
//! only be obtained through [`crate::config::load`] / [`crate::config::parse`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;
use url::Url;

/// A whole, validated mcrecover configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Path the configuration was read from (as given, used in generated headers).
    pub source: PathBuf,
    /// Platform-wide settings.
    pub platform: Platform,
    /// Stages in boot order.
    pub stages: Vec<Stage>,
    /// Services keyed by name (sorted; stage order is in `stages`).
    pub services: BTreeMap<String, Service>,
    /// `[watch]`: the daemon's restart, backoff and escalation policy.
    pub watch: WatchPolicy,
    /// `[metrics]`: the daemon's Prometheus outputs (docs/metrics.md).
    pub metrics: super::metrics::MetricsConfig,
}

/// Whether containers run under a user's systemd manager or the system manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Rootless podman, units in the platform user's manager.
    Rootless,
    /// Rootful podman, units in the system manager.
    Rootful,
}

/// Which kind of unit to generate for containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// Podman quadlet `.container` files (podman >= 4.4).
    Quadlet,
    /// Plain `.service` units running `podman run`.
    Service,
    /// Quadlet when available, else service.
    Auto,
}

/// Whether images may be pulled from a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Never pull (`Pull=never`): images must be cached or loaded from archives.
    Never,
    /// Pull when missing.
    Missing,
}

/// The platform user (rootless mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformUser {
    /// User name, e.g. `mcp`.
    pub name: String,
    /// Numeric uid, e.g. 850.
    pub uid: u32,
    /// Numeric gid, e.g. 850.
    pub gid: u32,
    /// Home directory (rootless podman storage lives below it).
    pub home: PathBuf,
}

/// `[platform]`: settings that apply to every service.
#[derive(Debug, Clone, Serialize)]
pub struct Platform {
    /// Unit prefix, e.g. `metacircular` (gives `metacircular.target`).
    pub name: String,
    /// Expected hostname, e.g. `rift`.
    pub node: Option<String>,
    /// Rootless or rootful.
    pub mode: Mode,
    /// The platform user; required for rootless mode.
    pub user: Option<PlatformUser>,
    /// Requested backend.
    pub backend: BackendChoice,
    /// Prefix applied to every image that names no registry.
    pub image_prefix: String,
    /// Directory of image archives for a cold start.
    pub image_archive: Option<PathBuf>,
    /// Pull policy for images.
    pub pull: PullPolicy,
    /// The service that serves the registry of `image_prefix` (e.g. `mcr-api`): images of
    /// that registry are never pulled before that service's stage is healthy.
    pub registry_service: Option<String>,
    /// Where `.container` files are written (default depends on mode).
    pub quadlet_dir: PathBuf,
    /// Where `.service`/`.target` units are written (default depends on mode).
    pub unit_dir: PathBuf,
    /// Absolute path of the podman binary used in generated units.
    pub podman: PathBuf,
    /// Absolute path of the mcrecover binary used by gate units.
    pub mcrecover: PathBuf,
    /// Absolute path of the config as seen by gate units (default: `source`, absolutised).
    pub config_path: PathBuf,
    /// System units that must be active before recovery (e.g. `mcp-agent.service`);
    /// checked by `mcrecover doctor`. Default: none.
    pub prerequisites: Vec<String>,
}

/// What later stages do when a stage does not become healthy in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Later stages wait (`Requires=` on the gate).
    Block,
    /// Later stages start anyway (`Wants=` on the gate); failure is reported.
    Continue,
}

/// One boot stage.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// Stage name, e.g. `foundation`.
    pub name: String,
    /// Member services, in the order given.
    pub services: Vec<String>,
    /// How long the stage may take to become healthy.
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    /// What happens to later stages on failure.
    pub on_failure: FailurePolicy,
    /// Recovery time objective of the whole stage (`mcrecover drill`).
    #[serde(with = "opt_duration_secs")]
    pub rto: Option<Duration>,
}

/// A service: a container (with a unit) or an external check-only entry.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// Service name (the config key); also the unit name stem.
    pub name: String,
    /// Free-text description.
    pub description: Option<String>,
    /// Container to run; `None` for `external = true` entries.
    pub container: Option<Container>,
    /// Health checks.
    pub checks: Vec<Check>,
    /// Extra ordering edges: start after these services.
    pub after: Vec<String>,
    /// Extra requirement edges: require these services (implies after).
    pub requires: Vec<String>,
    /// `[services.NAME.remedy]`: what the daemon may do once this service is escalated.
    pub remedy: Option<Remedy>,
    /// When its stage may proceed: once it is healthy (the default), or also
    /// while it waits for an operator (`gate = "running"`).
    pub gate: ServiceGate,
    /// Recovery time objective: healthy this long after a drill stopped it
    /// (`mcrecover drill`).
    #[serde(with = "opt_duration_secs")]
    pub rto: Option<Duration>,
}

/// `gate` of a service: what its stage waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceGate {
    /// The stage proceeds once the service is healthy.
    #[default]
    Healthy,
    /// The stage also proceeds while the service runs and waits for an
    /// operator (a check answered `operator_wait`, e.g. a sealed vault);
    /// its dependents that fail meanwhile are held, not restarted.
    Running,
}

/// `operator_wait` of a check: answers that mean "the service runs and
/// waits for an operator" (e.g. a sealed vault) rather than "broken". Every
/// condition given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OperatorWait {
    /// HTTP(S): one of these statuses.
    pub status: Vec<u16>,
    /// HTTP(S): the body contains this text.
    pub body_contains: Option<String>,
    /// HTTP(S): the body is JSON and this top-level field is `true` (e.g. `sealed`).
    pub json_true: Option<String>,
    /// gRPC: one of these health statuses (`NOT_SERVING`, `SERVICE_UNKNOWN`,
    /// `UNKNOWN`) or call codes (`UNAVAILABLE`, `FAILED_PRECONDITION`, ...).
    pub grpc_status: Vec<String>,
    /// exec: one of these exit codes.
    pub exit_codes: Vec<i32>,
    /// What the operator must do, for the journal, hook and status.
    pub remedy: String,
}

impl Service {
    /// True for check-only entries that have no unit (e.g. MCIAS on svc).
    pub fn is_external(&self) -> bool {
        self.container.is_none()
    }
}

/// Container network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Podman's default bridge network.
    Bridge,
    /// The host's network namespace.
    Host,
    /// A named podman network.
    Named(String),
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A published port `ip:host:container[/proto]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortMapping {
    /// Host address to bind; `None` binds all addresses.
    pub host_ip: Option<IpAddr>,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// Protocol.
    pub proto: Proto,
    /// The mapping exactly as written in the config.
    pub raw: String,
}

/// A bind mount `host:container[:options]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeMount {
    /// Absolute host path (or named volume).
    pub host: String,
    /// Absolute container path.
    pub container: String,
    /// Mount options such as `ro`, `Z`.
    pub options: Option<String>,
    /// The mount exactly as written in the config.
    pub raw: String,
}

/// Restart policy, in podman's vocabulary, mapped onto systemd's `Restart=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Restart on failure only.
    OnFailure,
    /// Always restart.
    Always,
    /// Podman's `unless-stopped`: restart unless stopped by the operator.
    UnlessStopped,
}

impl RestartPolicy {
    /// The systemd `Restart=` value for this policy.
    pub fn systemd_value(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always | RestartPolicy::UnlessStopped => "always",
        }
    }
}

/// How to run one container.
#[derive(Debug, Clone, Serialize)]
pub struct Container {
    /// Full image reference (prefix applied).
    pub image: String,
    /// Container name (default: the service name).
    pub name: String,
    /// Network.
    pub network: Network,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Bind mounts.
    pub volumes: Vec<VolumeMount>,
    /// `--user` override, e.g. `0:0`.
    pub user: Option<String>,
    /// Command argv exactly as given (appended after the image).
    pub command: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Extra arguments passed to `podman run` verbatim (escape hatch).
    pub podman_args: Vec<String>,
}

/// One health check with its schedule.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Check name, unique within its service (default: the kind, numbered if repeated).
    pub name: String,
    /// What to probe.
    pub kind: CheckKind,
    /// Time between attempts once running (default 10 s).
    #[serde(with = "duration_secs")]
    pub interval: Duration,
    /// Per-attempt timeout (default 2 s).
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    /// Consecutive failures before the check counts as failing (default 3).
    pub failure_threshold: u32,
    /// Consecutive successes before the check counts as passing (default 1).
    pub success_threshold: u32,
    /// Grace period after start during which failures do not count (default 0 s).
    #[serde(with = "duration_secs")]
    pub start_period: Duration,
    /// Answers that mean "waiting for an operator" instead of a failure.
    pub operator_wait: Option<OperatorWait>,
}

/// The kinds of health checks. Adding a kind: one new struct + one variant.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CheckKind {
    /// A DNS query against a given server.
    Dns(DnsCheck),
    /// An HTTP or HTTPS request.
    Http(HttpCheck),
    /// A TCP connect.
    Tcp(TcpCheck),
    /// A grpc.health.v1 `Check` call.
    Grpc(GrpcCheck),
    /// A command run on the host.
    Exec(ExecCheck),
}

impl CheckKind {
    /// Short kind name as used in the config (`dns`, `http`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            CheckKind::Dns(_) => "dns",
            CheckKind::Http(_) => "http",
            CheckKind::Tcp(_) => "tcp",
            CheckKind::Grpc(_) => "grpc",
            CheckKind::Exec(_) => "exec",
        }
    }
}

/// DNS transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsTransport {
    /// UDP (default).
    Udp,
    /// TCP.
    Tcp,
}

/// DNS record types a check can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Canonical name.
    Cname,
    /// Text.
    Txt,
    /// Mail exchanger.
    Mx,
    /// Name server.
    Ns,
    /// Start of authority.
    Soa,
    /// Service locator.
    Srv,
    /// Pointer.
    Ptr,
}

/// What a DNS answer must contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsExpect {
    /// Any non-empty answer (NOERROR with at least one record).
    AnyAnswer,
    /// An answer record with exactly this address.
    Address(IpAddr),
    /// An answer address inside this network.
    InCidr(IpNet),
}

/// `kind = "dns"`.
#[derive(Debug, Clone, Serialize)]
pub struct DnsCheck {
    /// Server to ask, `ip:port` (port defaults to 53).
    pub server: SocketAddr,
    /// Name to resolve.
    pub query: String,
    /// Record type (default A).
    pub record: RecordType,
    /// UDP or TCP (default UDP).
    pub transport: DnsTransport,
    /// Expectation on the answer.
    pub expect: DnsExpect,
}

/// TLS options shared by HTTPS and gRPC checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsOptions {
    /// PEM CA bundle to trust instead of the built-in web roots.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification entirely (must be explicit).
    pub insecure: bool,
    /// Server name for SNI and verification (default: the URL host).
    pub server_name: Option<String>,
}

/// Accepted HTTP statuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusExpect {
    /// Any response at all counts (mc-proxy answering 404 is healthy).
    Any,
    /// 200..=399 (default).
    Success,
    /// Exactly one of these codes.
    Codes(Vec<u16>),
}

impl StatusExpect {
    /// Whether `status` is accepted.
    pub fn accepts(&self, status: u16) -> bool {
        match self {
            StatusExpect::Any => true,
            StatusExpect::Success => (200..400).contains(&status),
            StatusExpect::Codes(codes) => codes.contains(&status),
        }
    }
}

/// `kind = "http"` (or `"https"`, an alias).
#[derive(Debug, Clone, Serialize)]
pub struct HttpCheck {
    /// URL to GET (`http://` or `https://`).
    pub url: Url,
    /// Accepted statuses.
    pub status: StatusExpect,
    /// Substring the body must contain.
    pub body_contains: Option<String>,
    /// TLS options (https only).
    pub tls: TlsOptions,
    /// Connect to this address instead of resolving the URL host (curl `--resolve`).
    pub connect_to: Option<SocketAddr>,
}

/// `kind = "tcp"`.
#[derive(Debug, Clone, Serialize)]
pub struct TcpCheck {
    /// Address to connect to.
    pub address: SocketAddr,
}

/// `kind = "grpc"`.
#[derive(Debug, Clone, Serialize)]
pub struct GrpcCheck {
    /// Address to connect to.
    pub address: SocketAddr,
    /// grpc.health.v1 service name (empty: the whole server).
    pub service: String,
    /// TLS options; `None` means plaintext (h2c).
    pub tls: Option<TlsOptions>,
}

/// `kind = "exec"`.
#[derive(Debug, Clone, Serialize)]
pub struct ExecCheck {
    /// Command argv (absolute path or looked up in `PATH`).
    pub argv: Vec<String>,
    /// Run as this user (root only); default: the current user.
    pub user: Option<String>,
}

/// Who restarts a container unit whose process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartOwner {
    /// The daemon: units are rendered with `Restart=no`; `mcrecover daemon`
    /// restarts with backoff and escalates (the default).
    Mcrecover,
    /// systemd: units keep `Restart=` from the service's `restart` key; the
    /// daemon only restarts on failing health checks.
    Systemd,
}

/// `[watch]`: the daemon's policy (docs/daemon.md).
#[derive(Debug, Clone, Serialize)]
pub struct WatchPolicy {
    /// Who restarts exited containers.
    pub restart_owner: RestartOwner,
    /// First restart delay; doubles on every further restart.
    #[serde(with = "duration_secs")]
    pub backoff_initial: Duration,
    /// Upper bound of the restart delay.
    #[serde(with = "duration_secs")]
    pub backoff_max: Duration,
    /// Healthy this long: backoff and restart history are reset.
    #[serde(with = "duration_secs")]
    pub backoff_reset: Duration,
    /// Escalate after this many restarts ...
    pub escalate_after: u32,
    /// ... within this window.
    #[serde(with = "duration_secs")]
    pub escalate_window: Duration,
    /// Persistent state directory (default: `$STATE_DIRECTORY`, else `/var/lib/mcrecover`).
    pub state_dir: Option<PathBuf>,
    /// Exec hook run on escalation (argv; empty = none).
    pub hook: Vec<String>,
    /// Time limit of the hook.
    #[serde(with = "duration_secs")]
    pub hook_timeout: Duration,
    /// HTTPS endpoint that receives a JSON POST on escalation.
    pub webhook: Option<Url>,
    /// CA bundle for the webhook (default: the system roots).
    pub webhook_ca_file: Option<PathBuf>,
    /// Time limit of the webhook POST.
    #[serde(with = "duration_secs")]
    pub webhook_timeout: Duration,
    /// A service still waiting for an operator this long gets one reminder.
    #[serde(with = "duration_secs")]
    pub wait_reminder: Duration,
    /// What to do with a container another controller started under a
    /// service's name.
    pub foreign: ForeignPolicy,
}

/// `[watch] foreign`: a container of a service's name that its unit did not
/// start (e.g. `podman run` by an orchestrator deploying a new image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForeignPolicy {
    /// Leave it alone: checked and reported (`external`), never stopped,
    /// replaced or restarted, until `mcrecover adopt` (the default).
    #[default]
    Leave,
    /// Replace it with the unit's container (a restart of the unit).
    TakeOver,
}

impl Default for WatchPolicy {
    fn default() -> Self {
        WatchPolicy {
            restart_owner: RestartOwner::Mcrecover,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            backoff_reset: Duration::from_secs(600),
            escalate_after: 5,
            escalate_window: Duration::from_secs(600),
            state_dir: None,
            hook: Vec::new(),
            hook_timeout: Duration::from_secs(30),
            webhook: None,
            webhook_ca_file: None,
            webhook_timeout: Duration::from_secs(10),
            wait_reminder: Duration::from_secs(3600),
            foreign: ForeignPolicy::Leave,
        }
    }
}

/// `[services.NAME.remedy]`: an automatic remedy tried once after escalation,
/// followed by one more restart. Files are MOVED into
/// `<volume>/quarantine/<timestamp>/`, never deleted.
#[derive(Debug, Clone, Serialize)]
pub struct Remedy {
    /// Absolute host paths, each inside one of the service's volume host directories.
    pub quarantine: Vec<PathBuf>,
    /// Only when the diagnosis matched one of these signature ids (empty = always).
    pub on: Vec<String>,
}

/// Serialize durations as fractional seconds in JSON output.
mod duration_secs {
    use serde::Serializer;
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Serialize optional durations as fractional seconds (or null).
mod opt_duration_secs {
    use serde::Serializer;
    use std::time::Duration;

    #[allow(clippy::ref_option)]
    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}
