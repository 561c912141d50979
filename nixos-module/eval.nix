# Evaluates ./default.nix with nixpkgs' real module system, without the rest
# of nixpkgs: `lib.evalModules` of the vendored nixpkgs `lib`, the NixOS
# options the module touches (./nixos-options.nix) and a minimal `pkgs`
# (./minimal-pkgs.nix). The option types, defaults, priorities (mkDefault)
# and merging of `services.mcrecover.*` are therefore the real ones.
#
#   nix-instantiate --eval --strict --json -E '
#     import ./nixos-module/eval.nix {
#       lib = import ../shared/vendor/nixpkgs-lib/lib;
#       config.services.mcrecover = { enable = true; settings = ...; };
#     }'
#
# Returns the parts of the NixOS configuration the module sets, in a form
# `--json` can print (derivations as their store paths), plus:
#  - `failedAssertions`: the messages of the false `assertions`, as NixOS's
#    top level computes them; `system` throws them as NixOS's
#    `system.build.toplevel` does ("Failed assertions: ..."), and otherwise
#    is the whole summary below;
#  - `toml`: the JSON text of the value the module hands `formats.toml`
#    (null in `configFile` mode), and `configSource`, what the rendered
#    derivation copies to share/mcrecover/mcrecover.toml (-> /etc).
# Used by tests/nix_module.rs (and scripts/check-nix when
# MCRECOVER_NIXPKGS_LIB is set).
{
  lib,
  # The user's configuration: an attribute set or a module.
  config ? { },
  # Extra modules, e.g. to override a default of ./nixos-options.nix.
  modules ? [ ],
}:
let
  pkgs = import ./minimal-pkgs.nix { inherit lib; };

  evaluated = lib.evalModules {
    modules = [
      ./nixos-options.nix
      ./default.nix
      { _module.args.pkgs = pkgs; }
      config
    ]
    ++ modules;
  };

  c = evaluated.config;
  cfg = c.services.mcrecover;

  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);

  # The daemon's unit is the one with the module's drop-in.
  daemon = lib.findFirst (n: c.systemd.services.${n}.overrideStrategy == "asDropin") null (
    builtins.attrNames c.systemd.services
  );
  # reloadTriggers = [ configSource rendered ] (./default.nix).
  triggers = if daemon == null then [ ] else c.systemd.services.${daemon}.reloadTriggers;
  configSource = builtins.elemAt triggers 0;
  rendered = builtins.elemAt triggers 1;

  name = d: if builtins.isAttrs d then d.name else toString d;

  summary = {
    inherit failedAssertions daemon;
    inherit (c) warnings assertions;
    enable = cfg.enable;
    # Ignored in `configFile` mode (and `platform.name` has no value there).
    settings = if cfg.configFile == null then cfg.settings else null;

    users = c.users.users;
    groups = c.users.groups;
    etc = lib.mapAttrs (_: e: {
      inherit (e)
        enable
        target
        text
        mode
        ;
      source = toString e.source;
    }) c.environment.etc;
    systemPackages = map toString c.environment.systemPackages;
    systemdPackages = map toString c.systemd.packages;
    systemdPackageNames = map name c.systemd.packages;
    services = c.systemd.services;
    targets = c.systemd.targets;
    generators = c.systemd.generators;
    userGenerators = c.systemd.user.generators;
    userExtraConfig = c.systemd.user.extraConfig;
    dbusPackages = map toString c.services.dbus.packages;
    # The D-Bus policies the module writes itself (writeTextDir), by file.
    dbusPolicies = builtins.listToAttrs (
      map (p: {
        name = p.destination;
        value = p.text;
      }) (builtins.filter (p: builtins.isAttrs p && p ? destination) c.services.dbus.packages)
    );
    sysctl = c.boot.kernel.sysctl;
    podman = c.virtualisation.podman.enable;

    configSource = toString configSource;
    toml = if builtins.isAttrs configSource && configSource ? value then configSource.value else null;
    rendered = toString rendered;
    renderScript = rendered.buildCommand or null;
  };
in
summary
// {
  system =
    if failedAssertions != [ ] then
      throw "\nFailed assertions:\n${lib.concatMapStringsSep "\n" (m: "- ${m}") failedAssertions}"
    else
      summary;
}
