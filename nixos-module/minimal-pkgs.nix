# A minimal `pkgs` for evaluating ./default.nix without nixpkgs (used by
# ./eval.nix): just the attributes the module uses, each a real (never built)
# derivation, so that `types.package`, string interpolation and store paths
# behave as they do with nixpkgs. The derivations keep their inputs as
# attributes (like nixpkgs' do), so an evaluation can look inside them:
#  - `runCommand name env script`: `.buildCommand` is the script;
#  - `writeText`, `writeTextDir`: `.text` is the file's text;
#  - `formats.toml { }`: `.type` is a TOML value type like nixpkgs' (bool,
#    int, float, string, path, attribute sets and lists of these, null);
#    `.generate name value` is a derivation whose `.value` is
#    `builtins.toJSON value`, which nixpkgs' generator also computes and then
#    converts with remarshal's `json2toml` at build time. Nothing here runs
#    json2toml: tests/nix_module.rs converts that JSON to TOML with the `toml`
#    crate and checks the result with `mcrecover check-config`.
#
# Building any of these derivations fails on purpose: they exist to be
# evaluated (`nix-instantiate --eval`), not realised.
{ lib }:
let
  system = "x86_64-linux";

  drv =
    name: attrs:
    derivation (
      {
        inherit name system;
        builder = "/bin/sh";
        args = [
          "-c"
          "echo 'nixos-module/minimal-pkgs.nix: for evaluation only, not for building' >&2; exit 1"
        ];
      }
      // attrs
    );

  # Packages the module refers to by name.
  package = pname: drv "${pname}-0-minimal" { inherit pname; };

  tomlValue =
    let
      valueType =
        lib.types.nullOr (
          lib.types.oneOf [
            lib.types.bool
            lib.types.int
            lib.types.float
            lib.types.str
            lib.types.path
            (lib.types.attrsOf valueType)
            (lib.types.listOf valueType)
          ]
        )
        // {
          description = "TOML value";
        };
    in
    valueType;

  remarshal = package "remarshal";
in
{
  runCommand =
    name: env: buildCommand:
    drv name (env // { inherit buildCommand; });

  writeText =
    name: text:
    drv name {
      inherit text;
      passAsFile = [ "text" ];
    };

  writeTextDir =
    path: text:
    drv (baseNameOf path) {
      inherit text;
      destination = "/${path}";
      passAsFile = [ "text" ];
    };

  formats.toml = _: {
    type = tomlValue;
    generate =
      name: value:
      drv name {
        value = builtins.toJSON value;
        passAsFile = [ "value" ];
        nativeBuildInputs = [ remarshal ];
        buildCommand = ''json2toml "$valuePath" "$out"'';
      };
  };

  mcrecover = package "mcrecover";
  podman = package "podman";
  systemd = package "systemd";
  util-linux = package "util-linux";
  iproute2 = package "iproute2";
  coreutils = package "coreutils";
}
