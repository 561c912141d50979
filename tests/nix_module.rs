//! The NixOS module and the flake stay valid and in step with the binary:
//! every `.nix` file parses (`scripts/check-nix`, Debian's `nix-bin`), and
//! the typed options of `services.mcrecover.settings` (nixos-module/settings.nix,
//! listed by nixos-module/option-keys.nix without nixpkgs) are exactly the
//! configuration keys `mcrecover config-keys` accepts, so the module cannot
//! drift from the schema.
//!
//! Needs `nix-instantiate`: skipped when it is missing, a failure when
//! `MCRECOVER_REQUIRE_E2E=1` (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether nix-instantiate runs; panics when it does not and it is required.
fn have_nix(test: &str) -> bool {
    let ok = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var("MCRECOVER_REQUIRE_E2E").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{test}: nix-instantiate is missing and MCRECOVER_REQUIRE_E2E=1 \
             (Debian/Ubuntu: apt-get install -y nix-bin)"
        );
        eprintln!("{test}: skipped, nix-instantiate is missing (apt-get install -y nix-bin)");
    }
    ok
}

#[test]
fn every_nix_file_parses() {
    if !have_nix("every_nix_file_parses") {
        return;
    }
    let out = Command::new(root().join("scripts/check-nix"))
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/check-nix failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The typed option keys of the module, e.g. `platform.name`,
/// `services.*.checks.*.url`.
fn module_keys() -> BTreeSet<String> {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(root().join("nixos-module/option-keys.nix"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nixos-module/option-keys.nix does not evaluate:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    keys.into_iter().collect()
}

/// The keys the binary accepts, one dotted key per line.
fn binary_keys() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_mcrecover"))
        .arg("config-keys")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`mcrecover config-keys` failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// `a` and `b` name the same key, or one is a table containing the other
/// (`services.*.env` typed as an attribute set vs `services.*.env.*`).
fn related(a: &str, b: &str) -> bool {
    a == b
        || b.strip_prefix(a).is_some_and(|rest| rest.starts_with('.'))
        || a.strip_prefix(b).is_some_and(|rest| rest.starts_with('.'))
}

#[test]
fn module_options_match_config_keys() {
    if !have_nix("module_options_match_config_keys") {
        return;
    }
    let module = module_keys();
    let binary = binary_keys();
    assert!(
        module.contains("platform.name") && module.contains("watch.backoff_initial"),
        "option-keys.nix lists too little: {module:?}"
    );

    // Every typed option is a key the binary accepts (a typo in the module,
    // or a key the binary dropped).
    let unknown: Vec<&String> = module
        .iter()
        .filter(|m| !binary.iter().any(|k| related(m, k)))
        .collect();

    // Every key of the binary has a typed option (a key added to the binary
    // but not to nixos-module/settings.nix). All sections are typed; the
    // brief's minimum is platform, check_defaults and watch.
    let untyped: Vec<&String> = binary
        .iter()
        .filter(|k| !module.iter().any(|m| related(m, k)))
        .collect();

    assert!(
        unknown.is_empty() && untyped.is_empty(),
        "the NixOS module drifted from the configuration schema\n\
         typed in nixos-module/settings.nix but not accepted by `mcrecover config-keys`: {unknown:?}\n\
         accepted by the binary but not typed in nixos-module/settings.nix: {untyped:?}"
    );
    for section in ["platform.", "check_defaults.", "watch."] {
        assert!(
            binary.iter().any(|k| k.starts_with(section)),
            "`mcrecover config-keys` lists no {section}* key: {binary:?}"
        );
    }
}

#[test]
fn related_keys() {
    assert!(related("platform.name", "platform.name"));
    assert!(related("services.*.env", "services.*.env.*"));
    assert!(related("services.*.checks", "services.*.checks.*.url"));
    assert!(!related("platform.name", "platform.node"));
    assert!(!related("watch.hook", "watch.hook_timeout"));
}
