# Typed options of `services.mcrecover.settings` (RFC 42): the main keys of
# mcrecover's configuration file (docs/config.md), so that a misspelt key, a
# wrong enum value or a relative path fails at evaluation time instead of at
# boot. Everything else is still accepted through `freeformType` and checked
# at build time by `mcrecover check-config`.
#
# Kept free of `pkgs` and of the rest of the module so that the drift test
# (tests/nix_module.rs, via ./option-keys.nix) can evaluate the option tree
# with a stub `lib` and compare it with `mcrecover config-keys`.
#
# Every typed option defaults to `null` ("not set": the binary's default
# applies); the module removes nulls before writing the TOML file.
{ lib, freeformType }:
let
  inherit (lib) mkOption types;

  # `null` = not set: mcrecover's own default applies.
  opt =
    type: description:
    mkOption {
      type = types.nullOr type;
      default = null;
      inherit description;
    };

  # Value formats of docs/config.md.
  duration = types.strMatching "([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?";
  absPath = types.strMatching "/.*";
  name = types.strMatching "[A-Za-z0-9][A-Za-z0-9_.-]*";
  count = types.ints.positive;
  names = types.listOf types.str;

  schedule = {
    interval = opt duration "Time between check attempts (mcrecover default `10s`).";
    timeout = opt duration "Per-attempt timeout (default `2s`).";
    failure_threshold = opt count "Consecutive failures before a check counts as failing (default 3).";
    success_threshold = opt count "Consecutive successes before a check counts as passing (default 1).";
    start_period = opt duration "Grace period after start during which failures do not count (default `0s`).";
  };

  operatorWait = types.submodule {
    inherit freeformType;
    options = {
      status = opt (types.listOf (types.ints.between 100 599)) "http/https: the answer's status is one of these (e.g. `[ 503 ]`).";
      body_contains = opt types.str "http/https: the body contains this text.";
      json_true = opt types.str "http/https: this top-level JSON field (or pointer starting with `/`) is `true` (e.g. `sealed`).";
      grpc_status = opt names "grpc: one of these health statuses or call codes (e.g. `[ \"NOT_SERVING\" ]`).";
      exit_codes = opt (types.listOf (types.ints.between 1 255)) "exec: one of these exit codes.";
      remedy = mkOption {
        type = types.str;
        description = "What the operator must do (journal, hook, webhook, status).";
      };
    };
  };

  check = types.submodule {
    inherit freeformType;
    options = schedule // {
      kind = mkOption {
        type = types.enum [
          "dns"
          "http"
          "https"
          "tcp"
          "grpc"
          "exec"
        ];
        description = "What to probe.";
      };
      name = opt name "Check name, unique per service (default: the kind, numbered when repeated).";
      # kind = "dns"
      server = opt types.str "dns: server to ask, `ip` or `ip:port`.";
      query = opt types.str "dns: name to resolve.";
      record = opt (types.enum [
        "A"
        "AAAA"
        "CNAME"
        "TXT"
        "MX"
        "NS"
        "SOA"
        "SRV"
        "PTR"
      ]) "dns: record type (default `A`).";
      transport = opt (types.enum [
        "udp"
        "tcp"
      ]) "dns: transport (default `udp`).";
      expect_address = opt types.str "dns: an answer must be exactly this address.";
      expect_cidr = opt types.str "dns: an answer address must be in this network.";
      # kind = "http" / "https"
      url = opt types.str "http/https: URL to GET.";
      status = opt (types.either (types.enum [ "any" ]) (
        types.listOf (types.ints.between 100 599)
      )) "http/https: accepted statuses, `\"any\"` or a list (default 200-399).";
      body_contains = opt types.str "http/https: the body must contain this text.";
      connect_to = opt types.str "http/https: connect to this `ip:port` instead of resolving the URL host.";
      # https and grpc with TLS
      ca_file = opt absPath "https/grpc: PEM CA bundle to trust.";
      insecure = opt types.bool "https/grpc: skip certificate verification.";
      server_name = opt types.str "https/grpc: SNI and verification name.";
      # kind = "tcp" / "grpc"
      address = opt types.str "tcp/grpc: `ip:port` to connect to.";
      service = opt types.str "grpc: grpc.health.v1 service name (default: the whole server).";
      tls = opt types.bool "grpc: use TLS (default plaintext h2c).";
      # kind = "exec"
      argv = opt (types.nonEmptyListOf types.str) "exec: command run on the host; exit 0 passes.";
      user = opt types.str "exec: run as this user (mcrecover running as root only).";
      operator_wait = opt operatorWait "Answers that mean \"waiting for an operator\" (e.g. a sealed vault): never restarted for them (docs/config.md).";
    };
  };

  remedy = types.submodule {
    inherit freeformType;
    options = {
      quarantine = opt (types.nonEmptyListOf absPath) "Files moved into `<volume>/quarantine/<timestamp>/` after an escalation (never deleted); each inside one of the service's volume host directories.";
      on = opt names "Only when the diagnosis matched one of these signature ids (src/diagnose SIGNATURES); empty or unset = any.";
    };
  };

  stage = types.submodule {
    inherit freeformType;
    options = {
      name = mkOption {
        type = types.strMatching "[A-Za-z0-9][A-Za-z0-9_-]*";
        description = "Stage name (part of unit names).";
      };
      services = mkOption {
        type = types.nonEmptyListOf types.str;
        description = "Member services; an external member (`external = true`) is only checked and gates the stage.";
      };
      timeout = opt duration "How long the stage may take to become healthy (default `120s`).";
      on_failure = opt (types.enum [
        "block"
        "continue"
      ]) "`block`: later stages wait (default); `continue`: they start anyway.";
      rto = opt duration "Recovery time objective of the stage, measured by `mcrecover drill --stage`.";
    };
  };

  service = types.submodule {
    inherit freeformType;
    options = {
      description = opt types.str "Free text (unit `Description=`).";
      image = opt types.str "Image; `platform.image_prefix` is applied unless it contains `/`. Required unless external.";
      container_name = opt name "podman `--name` (default: the service name).";
      network = opt types.str "`bridge` (default), `host` or a podman network name.";
      ports = opt names "Published ports `[ip:]hostport:containerport[/tcp|udp]`.";
      volumes = opt names "Bind mounts `host:container[:options]`.";
      user = opt types.str "podman `--user`, e.g. `0:0`.";
      command = opt names "Arguments after the image, passed exactly.";
      env = opt (types.attrsOf types.str) "Environment variables.";
      restart = opt (types.enum [
        "no"
        "on-failure"
        "always"
        "unless-stopped"
      ]) "Restart policy (default `unless-stopped`); `no`: the daemon never restarts it either.";
      podman_args = opt names "Extra `podman run` arguments, verbatim.";
      after = opt names "Start after these services (in addition to stage order).";
      requires = opt names "Require these services (implies `after`).";
      external = opt types.bool "Check-only entry for something running elsewhere.";
      checks = opt (types.listOf check) "Health checks of the service.";
      remedy = opt remedy "What the daemon may do once the service is escalated.";
      gate = opt (types.enum [
        "healthy"
        "running"
      ]) "What its stage waits for: `healthy` (default), or `running`: also while it waits for an operator.";
      rto = opt duration "Recovery time objective, measured by `mcrecover drill`.";
    };
  };
in
{
  platform = {
    name = mkOption {
      type = types.strMatching "[a-z0-9][a-z0-9_-]*";
      example = "metacircular";
      description = "Platform name: prefix of every generated unit (`<name>.target`, `<name>-<stage>.target`); also the system target the module starts at boot.";
    };
    node = opt types.str "Host name this configuration is meant for (checked by `mcrecover doctor`).";
    mode = mkOption {
      type = types.enum [
        "rootless"
        "rootful"
      ];
      default = "rootless";
      description = "Rootless: containers run in `user`'s systemd manager (the module creates the user with linger and subordinate ids). Rootful: in the system manager.";
    };
    user = opt types.str "Platform user owning the containers (required when rootless).";
    uid = opt types.ints.u32 "Numeric uid of `user` (required when rootless).";
    gid = opt types.ints.u32 "Numeric gid of `user` (default: `uid`).";
    home = opt absPath "Home of `user` (default `/home/<user>`); rootless podman storage lives below it.";
    backend = mkOption {
      type = types.enum [
        "quadlet"
        "service"
        "auto"
      ];
      default = "service";
      description = "Unit backend. On NixOS the units are rendered at build time, where nothing can be detected: `auto` is rendered as `service` (plain units running `podman run`, no generator needed). `quadlet` installs `.container` files and enables podman's generators.";
    };
    image_prefix = opt types.str "Prepended to every image that contains no `/`.";
    image_archive = opt absPath "Directory of `podman save` archives used for a cold start.";
    pull = opt (types.enum [
      "never"
      "missing"
    ]) "Whether podman may pull images (default `never`).";
    registry_service = opt types.str "The container service that serves the registry of `image_prefix`.";
    quadlet_dir = opt absPath "Where `.container` files are installed (set by the module).";
    unit_dir = opt absPath "Where `.service`/`.target` units are installed (set by the module).";
    podman = opt absPath "podman binary used in generated units (the module sets the system's podman).";
    mcrecover = opt absPath "mcrecover binary used by the stage gate units (the module sets the package's).";
    config_path = opt absPath "Configuration path as the gate units see it (the module sets `/etc/mcrecover/mcrecover.toml`).";
    prerequisites = opt names "System units that must be active before recovery, e.g. `mcp-agent.service` (checked by `mcrecover doctor`).";
  };

  check_defaults = schedule;

  watch = {
    restart_owner = opt (types.enum [
      "mcrecover"
      "systemd"
    ]) "Who restarts exited containers: the daemon with backoff (default; units get `Restart=no`) or systemd.";
    backoff_initial = opt duration "Delay before the second restart in a row (default `1s`; the first is immediate); doubles on every further restart.";
    backoff_max = opt duration "Upper bound of the restart delay (default `5m`).";
    backoff_reset = opt duration "Healthy this long: backoff and restart history reset (default `10m`).";
    escalate_after = opt count "Escalate after this many restarts ... (default 5)";
    escalate_window = opt duration "... within this window (default `10m`).";
    state_dir = opt absPath "Persistent state directory (default: `$STATE_DIRECTORY`, else `/var/lib/mcrecover`).";
    hook = opt (types.nonEmptyListOf types.str) "Exec hook run on escalation: argv, first element an absolute path.";
    hook_timeout = opt duration "Time limit of the hook (default `30s`).";
    webhook = opt (types.strMatching "https://.+") "HTTPS endpoint that receives the escalation event as a JSON POST.";
    webhook_ca_file = opt absPath "CA bundle for the webhook (default: the system roots).";
    webhook_timeout = opt duration "Time limit of the webhook POST (default `10s`).";
    wait_reminder = opt duration "A service still waiting for an operator this long gets one reminder (default `1h`).";
    foreign = opt (types.enum [
      "leave"
      "take-over"
    ]) "A container of a service's name that its unit did not start (e.g. `mcp deploy`): `leave` it alone as `external` until `mcrecover adopt` (default), or `take-over` (its unit replaces it at once).";
  };

  metrics = {
    textfile = opt (types.strMatching "/.*[.]prom") "node_exporter textfile-collector file the daemon writes its Prometheus metrics to, e.g. `/var/lib/prometheus/node-exporter/mcrecover.prom` (docs/metrics.md).";
    textfile_interval = opt duration "Least time between two writes of `textfile` (default `15s`).";
    listen = opt types.str "Address of the metrics HTTP endpoint (`GET /metrics`), e.g. `127.0.0.1:9464`; none by default.";
  };

  stages = mkOption {
    type = types.listOf stage;
    default = [ ];
    description = "Boot stages, in order; every non-external service belongs to exactly one.";
  };

  services = mkOption {
    type = types.attrsOf service;
    default = { };
    description = "Services by name (the unit name stem).";
  };
}
