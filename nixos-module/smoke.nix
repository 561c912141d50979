# A smoke evaluation of the module's `config` without nixpkgs: ./default.nix
# is called with a stub `lib` (mkIf/mkMerge/mkDefault resolved directly) and
# stub `pkgs` (derivations are strings), for a rootless and a rootful
# platform, and the resulting configuration is returned as JSON.
#
#   nix-instantiate --eval --strict --json nixos-module/smoke.nix
#
# It catches what parsing cannot: a misspelt attribute of the module's own
# configuration, a wrong wiring (user, linger, units, D-Bus policy). It does
# not type-check against NixOS (only the VM test does). Run by
# scripts/check-nix.
let
  tag = kind: { _stubType = kind; };
  types = {
    str = tag "str";
    bool = tag "bool";
    int = tag "int";
    path = tag "path";
    port = tag "port";
    package = tag "package";
    ints = {
      u32 = tag "u32";
      unsigned = tag "unsigned";
      positive = tag "positive";
      between = lo: hi: tag "between";
    };
    strMatching = re: tag "strMatching";
    enum = values: tag "enum";
    either = a: b: tag "either";
    nullOr = t: tag "nullOr";
    listOf = t: tag "listOf";
    nonEmptyListOf = t: tag "listOf";
    attrsOf = t: tag "attrsOf";
    submodule = m: tag "submodule";
  };

  # Definitions are merged with `//` per top-level path (enough for this
  # module, whose mkMerge parts touch disjoint leaves or whole attribute sets).
  resolve =
    v:
    if builtins.isAttrs v && v ? _if then
      (if v._if then resolve v.content else { })
    else if builtins.isAttrs v && v ? _merge then
      builtins.foldl' recursiveUpdate { } (map resolve v._merge)
    else if builtins.isAttrs v && v ? _default then
      resolve v.content
    else if builtins.isAttrs v && !(v ? outPath) then
      builtins.mapAttrs (_: resolve) v
    else
      v;
  recursiveUpdate =
    a: b:
    a
    // builtins.mapAttrs (
      n: v: if builtins.isAttrs v && a ? ${n} && builtins.isAttrs a.${n} then recursiveUpdate a.${n} v else v
    ) b;

  lib = {
    inherit types;
    mkOption = args: args;
    mkEnableOption = what: { description = what; };
    mkIf = cond: content: {
      _if = cond;
      inherit content;
    };
    mkMerge = parts: { _merge = parts; };
    mkDefault = content: {
      _default = true;
      inherit content;
    };
    literalExpression = text: text;
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalString = c: s: if c then s else "";
    optionalAttrs = c: s: if c then s else { };
    concatStringsSep = builtins.concatStringsSep;
    mapAttrs = builtins.mapAttrs;
    filterAttrs =
      pred: set:
      builtins.listToAttrs (
        map (n: {
          name = n;
          value = set.${n};
        }) (builtins.filter (n: pred n set.${n}) (builtins.attrNames set))
      );
  };

  pkgs = {
    formats.toml = _: {
      type = tag "toml";
      generate = name: value: "/nix/store/stub-${name}:${builtins.toJSON value}";
    };
    runCommand = name: attrs: script: "/nix/store/stub-${name}";
    writeTextDir = path: text: "/nix/store/stub-${baseNameOf path}";
    util-linux = "/nix/store/stub-util-linux";
    iproute2 = "/nix/store/stub-iproute2";
    coreutils = "/nix/store/stub-coreutils";
  };

  # The module's own options are passed back in as `config` with the values
  # a user would set; `settings` as the module system would see them after
  # the module's own mkDefaults (not applied here: only the user's values).
  evalWith =
    mcrecover:
    let
      module = import ./default.nix {
        inherit lib pkgs;
        config = {
          services.mcrecover = {
            enable = true;
            package = "/nix/store/stub-mcrecover";
            configFile = null;
            createUser = true;
            subIdRange = null;
            unprivilegedPortStart = 53;
            userManagerPath = true;
            wantedBy = [ "multi-user.target" ];
            extraDaemonArgs = [ ];
          } // mcrecover;
          virtualisation.podman.package = "/nix/store/stub-podman";
          systemd.package = "/nix/store/stub-systemd";
        };
      };
    in
    resolve module.config;

  platformDefaults = {
    node = null;
    gid = null;
    home = null;
    image_prefix = null;
    image_archive = null;
    pull = null;
    registry_service = null;
    quadlet_dir = null;
    unit_dir = null;
    podman = null;
    mcrecover = null;
    config_path = null;
    prerequisites = null;
  };
in
{
  rootless = evalWith {
    settings = {
      platform = platformDefaults // {
        name = "metacircular";
        mode = "rootless";
        backend = "service";
        user = "mcp";
        uid = 850;
        home = "/srv/mcp";
      };
      stages = [
        {
          name = "foundation";
          services = [ "mcns" ];
          timeout = null;
          on_failure = null;
        }
      ];
      services.mcns = {
        image = "mcns:v1.2.0";
        ports = null;
      };
    };
  };
  rootful = evalWith {
    settings = {
      platform = platformDefaults // {
        name = "demo";
        mode = "rootful";
        backend = "quadlet";
        user = null;
        uid = null;
      };
    };
  };
}
