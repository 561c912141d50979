# The NixOS options ./default.nix sets or reads, declared for ./eval.nix
# (nixpkgs' `lib` has the module system but not NixOS's option declarations).
# Written for this project, with the types NixOS declares as far as they
# matter here: list options concatenate, attribute sets of submodules merge
# per name, unit names must look like unit names, `environment.etc` entries
# get `target` from their name and `source` from `text`, `users.users`
# entries are passwd-safe strings, systemd unit settings (`serviceConfig`,
# `reloadTriggers`) merge like NixOS's "systemd option" type (lists
# concatenate, equal scalars merge, different scalars conflict).
# What is left out: options this module does not touch, and NixOS's own
# consistency checks (its assertions on users, uid clashes and the like).
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  # A systemd unit setting.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    check = v: builtins.isBool v || builtins.isInt v || lib.isStringLike v || builtins.isList v;
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.any (d: builtins.isList d.value) defs' then
        lib.concatMap (d: lib.toList d.value) defs'
      else
        lib.mergeEqualOption loc defs';
  };

  unitName = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  unitNames = mkOption {
    type = types.listOf unitName;
    default = [ ];
  };

  # The options every unit (service, target) has.
  unitOptions = {
    enable = mkOption {
      type = types.bool;
      default = true;
    };
    description = mkOption {
      type = types.singleLineStr;
      default = "";
    };
    wants = unitNames;
    requires = unitNames;
    after = unitNames;
    before = unitNames;
    wantedBy = unitNames;
    requiredBy = unitNames;
    partOf = unitNames;
    unitConfig = mkOption {
      type = types.attrsOf unitOption;
      default = { };
    };
    overrideStrategy = mkOption {
      type = types.enum [
        "asDropinIfExists"
        "asDropin"
      ];
      default = "asDropinIfExists";
    };
  };

  serviceOptions = unitOptions // {
    environment = mkOption {
      type = types.attrsOf (
        types.nullOr (
          types.oneOf [
            types.str
            types.path
            types.package
          ]
        )
      );
      default = { };
    };
    path = mkOption {
      type = types.listOf (
        types.oneOf [
          types.package
          types.str
        ]
      );
      default = [ ];
    };
    serviceConfig = mkOption {
      type = types.attrsOf unitOption;
      default = { };
    };
    script = mkOption {
      type = types.lines;
      default = "";
    };
    restartTriggers = mkOption {
      type = types.listOf unitOption;
      default = [ ];
    };
    reloadTriggers = mkOption {
      type = types.listOf unitOption;
      default = [ ];
    };
    restartIfChanged = mkOption {
      type = types.bool;
      default = true;
    };
  };

  etcEntry = types.submodule (
    { name, config, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        target = mkOption {
          type = types.str;
        };
        text = mkOption {
          type = types.nullOr types.lines;
          default = null;
        };
        source = mkOption {
          type = types.path;
        };
        mode = mkOption {
          type = types.str;
          default = "symlink";
        };
        user = mkOption {
          type = types.str;
          default = "+0";
        };
        group = mkOption {
          type = types.str;
          default = "+0";
        };
      };
      config = {
        target = lib.mkDefault name;
        source = lib.mkIf (config.text != null) (
          lib.mkDefault (pkgs.writeText ("etc-" + lib.replaceStrings [ "/" ] [ "-" ] name) config.text)
        );
      };
    }
  );

  subIdRange =
    startName:
    types.submodule {
      options = {
        ${startName} = mkOption { type = types.int; };
        count = mkOption {
          type = types.int;
          default = 1;
        };
      };
    };

  userEntry = types.submodule (
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.passwdEntry types.str;
          default = name;
        };
        uid = mkOption {
          type = types.nullOr types.int;
          default = null;
        };
        group = mkOption {
          type = types.str;
          default = "";
        };
        extraGroups = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        description = mkOption {
          type = types.passwdEntry types.str;
          default = "";
        };
        home = mkOption {
          type = types.passwdEntry types.path;
          default = "/var/empty";
        };
        createHome = mkOption {
          type = types.bool;
          default = false;
        };
        isSystemUser = mkOption {
          type = types.bool;
          default = false;
        };
        isNormalUser = mkOption {
          type = types.bool;
          default = false;
        };
        linger = mkOption {
          type = types.nullOr types.bool;
          default = null;
        };
        autoSubUidGidRange = mkOption {
          type = types.bool;
          default = false;
        };
        subUidRanges = mkOption {
          type = types.listOf (subIdRange "startUid");
          default = [ ];
        };
        subGidRanges = mkOption {
          type = types.listOf (subIdRange "startGid");
          default = [ ];
        };
      };
    }
  );

  groupEntry = types.submodule (
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.passwdEntry types.str;
          default = name;
        };
        gid = mkOption {
          type = types.nullOr types.int;
          default = null;
        };
        members = mkOption {
          type = types.listOf (types.passwdEntry types.str);
          default = [ ];
        };
      };
    }
  );
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
      internal = true;
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
      internal = true;
    };

    environment.etc = mkOption {
      type = types.attrsOf etcEntry;
      default = { };
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };

    systemd.package = mkOption {
      type = types.package;
      default = pkgs.systemd;
    };
    systemd.packages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    systemd.services = mkOption {
      type = types.attrsOf (types.submodule { options = serviceOptions; });
      default = { };
    };
    systemd.targets = mkOption {
      type = types.attrsOf (types.submodule { options = unitOptions; });
      default = { };
    };
    systemd.generators = mkOption {
      type = types.attrsOf types.path;
      default = { };
    };
    systemd.user.extraConfig = mkOption {
      type = types.lines;
      default = "";
    };
    systemd.user.generators = mkOption {
      type = types.attrsOf types.path;
      default = { };
    };

    users.users = mkOption {
      type = types.attrsOf userEntry;
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf groupEntry;
      default = { };
    };

    services.dbus.packages = mkOption {
      type = types.listOf types.path;
      default = [ ];
    };

    virtualisation.podman.enable = mkOption {
      type = types.bool;
      default = false;
    };
    virtualisation.podman.package = mkOption {
      type = types.package;
      default = pkgs.podman;
    };

    boot.kernel.sysctl = mkOption {
      type = types.attrsOf (
        types.nullOr (
          types.oneOf [
            types.bool
            types.str
            types.int
          ]
        )
      );
      default = { };
    };
  };
}
