{
  # mcrecover: brings a podman platform back from zero on a systemd machine,
  # in dependency order, health-gated, and keeps it healthy.
  #
  #   nix build                      the package (binary, units, D-Bus policy, man pages, completions)
  #   nix develop                    a shell with the Rust toolchain and podman
  #   nix flake check                builds the package and runs the NixOS VM test (checks.<system>.vm)
  #   imports = [ mcrecover.nixosModules.default ];   then services.mcrecover.* (docs/operator-guide.md)
  #
  # No flake.lock is committed yet: run `nix flake lock` once on a machine
  # with Nix and commit the result.
  description = "mcrecover: recover a podman platform on systemd, in dependency order, health-gated, and keep it healthy";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);
    in
    {
      overlays.default = final: prev: {
        mcrecover = final.callPackage ./nixos-module/package.nix {
          src = self;
          version = cargoToml.package.version;
        };
      };

      packages = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nixos-module/package.nix {
          src = self;
          version = cargoToml.package.version;
        };
        mcrecover = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      });

      # The module, with the package of this flake as its default.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nixos-module ];
          services.mcrecover.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      nixosModules.mcrecover = self.nixosModules.default;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            rust-analyzer
            pkg-config
            podman
            nix # nix-instantiate for scripts/check-nix
          ];
          RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
        };
      });

      checks = forAllSystems (
        pkgs:
        {
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          vm = import ./nixos-module/test.nix {
            inherit pkgs;
            module = self.nixosModules.default;
          };
        }
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
