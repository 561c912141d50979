# The mcrecover package: the binary, the daemon's units, the D-Bus policy,
# man pages and shell completions. Called by flake.nix (packages.default and
# the overlay) with `src` = the repository.
{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
  pkg-config,
  src,
  version,
}:
rustPlatform.buildRustPackage {
  pname = "mcrecover";
  inherit version;

  src = lib.cleanSourceWith {
    inherit src;
    # Build inputs only: no target/, .cache/, docs changes do not rebuild.
    filter =
      path: type:
      let
        rel = lib.removePrefix (toString src + "/") (toString path);
      in
      !(lib.hasPrefix "target" rel || lib.hasPrefix ".cache" rel || lib.hasPrefix "nixos-module" rel || rel == "flake.nix" || rel == "flake.lock");
  };

  cargoLock.lockFile = ../Cargo.lock;

  # The workspace also holds the test stand-in and the testbed: only the
  # daemon/CLI is packaged.
  cargoBuildFlags = [
    "--package"
    "mcrecover"
  ];
  # Unit tests only: the end-to-end tests need a systemd + podman sandbox
  # (root, network namespaces), which the Nix build sandbox is not. The NixOS
  # VM test (checks.<system>.vm) is the end-to-end test here.
  cargoTestFlags = [
    "--package"
    "mcrecover"
    "--lib"
    "--bins"
  ];

  nativeBuildInputs = [
    installShellFiles
    pkg-config
  ];

  postInstall = ''
    # The daemon's units. metacircular.target is NOT installed as a unit: the
    # NixOS module declares <platform name>.target itself (it differs between
    # rootful and rootless); the shipped file stays available as a reference.
    if [ -d units ]; then
      for u in units/mcrecover.service units/mcrecover@.service; do
        if [ -f "$u" ]; then
          install -Dm644 "$u" "$out/lib/systemd/system/$(basename "$u")"
        fi
      done
      install -d $out/share/mcrecover/units
      find units -maxdepth 1 -type f -exec install -m644 -t $out/share/mcrecover/units {} +
      if [ -f units/dbus/net.metacircular.Recovery1.conf ]; then
        install -Dm644 units/dbus/net.metacircular.Recovery1.conf \
          $out/share/dbus-1/system.d/net.metacircular.Recovery1.conf
      fi
      # The units name /usr/bin/mcrecover (Debian and others).
      for f in $out/lib/systemd/system/* $out/share/mcrecover/units/*; do
        [ -f "$f" ] && sed -i "s|/usr/bin/mcrecover|$out/bin/mcrecover|g" "$f"
      done
    fi
  ''
  + lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    # Man pages and completions from the binary itself (clap_mangen,
    # clap_complete); skipped when cross-compiling.
    if $out/bin/mcrecover generate --help >/dev/null 2>&1; then
      $out/bin/mcrecover generate man --out man
      installManPage man/*.1
      for sh in bash zsh fish; do
        $out/bin/mcrecover generate completions $sh --out completions
      done
      installShellCompletion --bash completions/mcrecover.bash
      installShellCompletion --zsh completions/_mcrecover
      installShellCompletion --fish completions/mcrecover.fish
    fi
  '';

  meta = {
    description = "Brings a podman platform back from zero on a systemd machine, in dependency order, health-gated, and keeps it healthy";
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "mcrecover";
    platforms = lib.platforms.linux;
  };
}
