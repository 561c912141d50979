//! The NixOS module and the flake stay valid and in step with the binary:
//! - every `.nix` file parses (`scripts/check-nix`, Debian's `nix-bin`);
//! - the typed options of `services.mcrecover.settings` (nixos-module/settings.nix,
//!   listed by nixos-module/option-keys.nix without nixpkgs) are exactly the
//!   configuration keys `mcrecover config-keys` accepts, so the module cannot
//!   drift from the schema;
//! - nixos-module/default.nix evaluated with nixpkgs' real module system
//!   (`lib.evalModules` of the vendored nixpkgs `lib`, see nixos-module/eval.nix):
//!   real option types, defaults, priorities and merging of `services.mcrecover.*`,
//!   the NixOS options the module sets declared by nixos-module/nixos-options.nix,
//!   a minimal `pkgs` (nixos-module/minimal-pkgs.nix). Rootless and rootful
//!   evaluations of examples/metacircular.toml, type errors, the assertion,
//!   `configFile` mode, and the configuration the module writes accepted by
//!   `mcrecover check-config`.
//!
//! Needs `nix-instantiate`, and for the evaluations the nixpkgs `lib` named by
//! `MCRECOVER_NIXPKGS_LIB` (the directory holding `lib/`; `.ci/run` sets
//! `../shared/vendor/nixpkgs-lib`): skipped when missing, a failure when
//! `MCRECOVER_REQUIRE_E2E=1` (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn required() -> bool {
    std::env::var("MCRECOVER_REQUIRE_E2E").is_ok_and(|v| v == "1")
}

/// Whether nix-instantiate runs; panics when it does not and it is required.
fn have_nix(test: &str) -> bool {
    let ok = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !required(),
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

// ---------------------------------------------------------------------------
// The module evaluated with nixpkgs' real `lib` (nixos-module/eval.nix).
// ---------------------------------------------------------------------------

/// The nixpkgs `lib` directory (the one holding modules.nix) named by
/// `MCRECOVER_NIXPKGS_LIB`, which is the directory holding `lib/` (or `lib/`
/// itself). None (skip) when unset or not a nixpkgs lib; panics instead under
/// `MCRECOVER_REQUIRE_E2E=1`.
fn nixpkgs_lib(test: &str) -> Option<PathBuf> {
    if !have_nix(test) {
        return None;
    }
    let var = std::env::var_os("MCRECOVER_NIXPKGS_LIB").filter(|v| !v.is_empty());
    let found = var.as_ref().and_then(|v| {
        let dir = Path::new(v);
        [dir.join("lib"), dir.to_path_buf()]
            .into_iter()
            .find(|d| d.join("modules.nix").is_file() && d.join("default.nix").is_file())
    });
    if found.is_none() {
        let why = match &var {
            None => "MCRECOVER_NIXPKGS_LIB is not set".to_string(),
            Some(v) => format!(
                "MCRECOVER_NIXPKGS_LIB={} holds no nixpkgs lib (lib/modules.nix)",
                Path::new(v).display()
            ),
        };
        assert!(
            !required(),
            "{test}: {why} and MCRECOVER_REQUIRE_E2E=1 \
             (.ci/run sets it to ../shared/vendor/nixpkgs-lib)"
        );
        eprintln!(
            "{test}: skipped, {why} (e.g. MCRECOVER_NIXPKGS_LIB=../shared/vendor/nixpkgs-lib)"
        );
    }
    found.map(|p| p.canonicalize().unwrap())
}

/// Runs `nix-instantiate --eval --strict --json` on `expr`, in which `LIB`
/// is the nixpkgs lib, `EVAL` nixos-module/eval.nix and `EXAMPLE` the
/// settings of examples/metacircular.toml.
fn nix_eval(lib: &Path, expr: &str) -> Output {
    let state = tempfile::tempdir().unwrap();
    let example = root().join("examples/metacircular.toml");
    let full = format!(
        "let\n  LIB = import {lib};\n  EVAL = args: import {eval} ({{ lib = LIB; }} // args);\n  \
         EXAMPLE = builtins.fromTOML (builtins.readFile {example});\nin\n{expr}",
        lib = lib.display(),
        eval = root().join("nixos-module/eval.nix").display(),
        example = example.display(),
    );
    Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &full])
        .env("NIX_STATE_DIR", state.path())
        .current_dir(root())
        .output()
        .unwrap()
}

/// [`nix_eval`] that must succeed: its JSON.
fn eval_ok(lib: &Path, expr: &str) -> Value {
    let out = nix_eval(lib, expr);
    assert!(
        out.status.success(),
        "evaluation failed:\n{expr}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// [`nix_eval`] that must fail: its error output.
fn eval_err(lib: &Path, expr: &str) -> String {
    let out = nix_eval(lib, expr);
    assert!(
        !out.status.success(),
        "evaluation succeeded but should not:\n{expr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The example as a rootless platform (as written), with the port sysctl.
const ROOTLESS: &str = r#"(EVAL {
  config.services.mcrecover = {
    enable = true;
    settings = EXAMPLE;
    unprivilegedPortStart = 53;
  };
}).system"#;

/// The example as a rootful quadlet platform: the file's values, overridden
/// with `mkForce` in a second module (real priorities).
const ROOTFUL: &str = r#"(EVAL {
  config.services.mcrecover = {
    enable = true;
    settings = EXAMPLE;
    unprivilegedPortStart = 53;
  };
  modules = [
    {
      services.mcrecover.settings.platform.mode = LIB.mkForce "rootful";
      services.mcrecover.settings.platform.backend = LIB.mkForce "quadlet";
    }
  ];
}).system"#;

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap_or_else(|| panic!("not a string: {x}")))
        .collect()
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an attribute set: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// A store path of the minimal pkgs' derivation `name`.
fn is_store(path: &str, name: &str) -> bool {
    path.strip_prefix("/nix/store/")
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(hash, rest)| hash.len() == 32 && rest == name)
}

#[test]
fn rootless_example_with_nixpkgs_lib() {
    let Some(lib) = nixpkgs_lib("rootless_example_with_nixpkgs_lib") else {
        return;
    };
    let c = eval_ok(&lib, ROOTLESS);
    assert_eq!(c["failedAssertions"], serde_json::json!([]));
    assert_eq!(c["warnings"], serde_json::json!([]));

    // The platform user: fixed uid, linger, subordinate ids, its group.
    assert_eq!(keys(&c["users"]), ["mcp"]);
    let mcp = &c["users"]["mcp"];
    assert_eq!(mcp["uid"], 850);
    assert_eq!(mcp["group"], "mcp");
    assert_eq!(mcp["home"], "/srv/mcp");
    assert_eq!(mcp["isSystemUser"], true);
    assert_eq!(mcp["createHome"], true);
    assert_eq!(mcp["linger"], true);
    assert_eq!(mcp["autoSubUidGidRange"], true);
    assert_eq!(mcp["subUidRanges"], serde_json::json!([]));
    assert_eq!(mcp["description"], "mcrecover platform metacircular");
    assert_eq!(keys(&c["groups"]), ["mcp"]);
    assert_eq!(c["groups"]["mcp"]["gid"], 850);

    // The daemon's drop-in: the instance of the uid, on the user's bus.
    assert_eq!(c["daemon"], "mcrecover@850");
    assert_eq!(keys(&c["services"]), ["mcrecover@850"]);
    let svc = &c["services"]["mcrecover@850"];
    assert_eq!(svc["overrideStrategy"], "asDropin");
    assert_eq!(strs(&svc["wants"]), ["network-online.target"]);
    assert_eq!(strs(&svc["after"]), ["network-online.target"]);
    assert_eq!(svc["environment"]["XDG_RUNTIME_DIR"], "/run/user/850");
    assert_eq!(
        svc["environment"]["DBUS_SESSION_BUS_ADDRESS"],
        "unix:path=/run/user/850/bus"
    );
    let exec = strs(&svc["serviceConfig"]["ExecStart"]);
    assert_eq!(exec.len(), 2, "{exec:?}");
    assert_eq!(exec[0], "");
    let (bin, args) = exec[1].split_once(' ').unwrap();
    assert!(
        is_store(
            bin.strip_suffix("/bin/mcrecover").unwrap(),
            "mcrecover-0-minimal"
        ),
        "{bin}"
    );
    assert_eq!(
        args,
        "daemon --config /etc/mcrecover/mcrecover.toml --no-install \
         --bus-address unix:path=/run/user/850/bus"
    );
    let reload = strs(&svc["serviceConfig"]["ExecReload"]);
    assert_eq!(reload.len(), 3, "{reload:?}");
    assert!(reload[1].ends_with("-systemd-0-minimal/bin/systemctl --user daemon-reload"));
    assert!(reload[2].ends_with("-coreutils-0-minimal/bin/kill -HUP $MAINPID"));
    let path = strs(&svc["path"]);
    assert_eq!(path[0], "/run/wrappers");
    assert!(is_store(path[1], "podman-0-minimal"), "{path:?}");
    assert!(is_store(path[2], "systemd-0-minimal"), "{path:?}");
    assert_eq!(
        strs(&svc["reloadTriggers"]),
        [
            c["configSource"].as_str().unwrap(),
            c["rendered"].as_str().unwrap()
        ]
    );

    // The system target that starts the daemon at boot.
    assert_eq!(keys(&c["targets"]), ["metacircular"]);
    let target = &c["targets"]["metacircular"];
    assert_eq!(target["description"], "Platform metacircular (mcrecover)");
    assert_eq!(strs(&target["wants"]), ["mcrecover@850.service"]);
    assert_eq!(strs(&target["after"]), ["network-online.target"]);
    assert_eq!(strs(&target["wantedBy"]), ["multi-user.target"]);

    // The units: the package's and the rendered ones (user manager).
    assert_eq!(
        strs(&c["systemdPackageNames"]),
        ["mcrecover-0-minimal", "mcrecover-metacircular-units"]
    );
    let rendered = c["rendered"].as_str().unwrap();
    assert!(
        is_store(rendered, "mcrecover-metacircular-units"),
        "{rendered}"
    );
    let script = c["renderScript"].as_str().unwrap();
    let source = c["configSource"].as_str().unwrap();
    assert!(is_store(source, "mcrecover.toml"), "{source}");
    for line in [
        format!("mcrecover --config {source} check-config"),
        format!("mcrecover --config {source} render --backend service --out rendered"),
        format!("cp {source} $out/share/mcrecover/mcrecover.toml"),
        "mkdir -p $out/share/mcrecover/quadlet $out/lib/systemd/user".to_string(),
    ] {
        assert!(
            script.lines().any(|l| l == line),
            "{line:?} not in\n{script}"
        );
    }

    // /etc: only the configuration, from the rendered (validated) copy.
    assert_eq!(keys(&c["etc"]), ["mcrecover/mcrecover.toml"]);
    let etc = &c["etc"]["mcrecover/mcrecover.toml"];
    assert_eq!(etc["target"], "mcrecover/mcrecover.toml");
    assert_eq!(etc["enable"], true);
    assert_eq!(
        etc["source"].as_str().unwrap(),
        format!("{rendered}/share/mcrecover/mcrecover.toml")
    );

    // D-Bus: the package's policy and the platform user's.
    let dbus = strs(&c["dbusPackages"]);
    assert_eq!(dbus.len(), 2, "{dbus:?}");
    assert!(is_store(dbus[0], "mcrecover-0-minimal"), "{dbus:?}");
    assert!(
        is_store(dbus[1], "net.metacircular.Recovery1.metacircular.conf"),
        "{dbus:?}"
    );
    let policies = c["dbusPolicies"].as_object().unwrap();
    let policy = policies["/share/dbus-1/system.d/net.metacircular.Recovery1.metacircular.conf"]
        .as_str()
        .unwrap();
    for needle in [
        "<policy user=\"mcp\">",
        "<allow own=\"net.metacircular.Recovery1\"/>",
        "<policy group=\"mcp\">",
    ] {
        assert!(policy.contains(needle), "{needle} not in\n{policy}");
    }

    // Rootless extras: the port sysctl, the user managers' PATH, podman.
    assert_eq!(
        c["sysctl"],
        serde_json::json!({ "net.ipv4.ip_unprivileged_port_start": 53 })
    );
    assert_eq!(
        c["userExtraConfig"],
        "DefaultEnvironment=\"PATH=/run/wrappers/bin:/run/current-system/sw/bin\"\n"
    );
    assert_eq!(c["podman"], true);
    // backend = "auto" is rendered as plain units: no generators.
    assert_eq!(c["generators"], serde_json::json!({}));
    assert_eq!(c["userGenerators"], serde_json::json!({}));
    assert_eq!(strs(&c["systemPackages"]), [dbus[0]]);

    // The module's mkDefaults next to the example's own values.
    let platform = &c["settings"]["platform"];
    assert_eq!(platform["podman"], "/run/current-system/sw/bin/podman");
    assert_eq!(platform["config_path"], "/etc/mcrecover/mcrecover.toml");
    assert_eq!(platform["unit_dir"], "/etc/systemd/user");
    assert_eq!(platform["quadlet_dir"], "/etc/containers/systemd/users/850");
    assert_eq!(
        platform["image_prefix"],
        "mcr.svc.mcp.metacircular.net:8443/"
    );
}

#[test]
fn rootful_example_with_nixpkgs_lib() {
    let Some(lib) = nixpkgs_lib("rootful_example_with_nixpkgs_lib") else {
        return;
    };
    let c = eval_ok(&lib, ROOTFUL);
    assert_eq!(c["failedAssertions"], serde_json::json!([]));
    assert_eq!(c["warnings"], serde_json::json!([]));
    assert_eq!(c["settings"]["platform"]["mode"], "rootful");

    // No platform user; the system instance of the daemon.
    assert_eq!(c["users"], serde_json::json!({}));
    assert_eq!(c["groups"], serde_json::json!({}));
    assert_eq!(c["daemon"], "mcrecover");
    assert_eq!(keys(&c["services"]), ["mcrecover"]);
    let svc = &c["services"]["mcrecover"];
    assert_eq!(svc["overrideStrategy"], "asDropin");
    assert_eq!(svc["environment"], serde_json::json!({}));
    let exec = strs(&svc["serviceConfig"]["ExecStart"]);
    assert_eq!(exec[0], "");
    assert!(
        exec[1].ends_with(
            "-mcrecover-0-minimal/bin/mcrecover daemon --config /etc/mcrecover/mcrecover.toml --no-install"
        ),
        "{exec:?}"
    );
    let reload = strs(&svc["serviceConfig"]["ExecReload"]);
    assert_eq!(reload.len(), 2, "{reload:?}");
    assert!(reload[1].ends_with("-coreutils-0-minimal/bin/kill -HUP $MAINPID"));

    let target = &c["targets"]["metacircular"];
    assert_eq!(strs(&target["wants"]), ["mcrecover.service"]);
    assert_eq!(strs(&target["wantedBy"]), ["multi-user.target"]);

    // Quadlet: the .container files in /etc/containers/systemd, the
    // generators, the units of the system manager.
    let rendered = c["rendered"].as_str().unwrap();
    let mut etc = keys(&c["etc"]);
    etc.sort_unstable();
    assert_eq!(etc, ["containers/systemd", "mcrecover/mcrecover.toml"]);
    assert_eq!(
        c["etc"]["containers/systemd"]["source"].as_str().unwrap(),
        format!("{rendered}/share/mcrecover/quadlet")
    );
    assert_eq!(
        c["etc"]["mcrecover/mcrecover.toml"]["source"]
            .as_str()
            .unwrap(),
        format!("{rendered}/share/mcrecover/mcrecover.toml")
    );
    let generator = c["generators"]["podman-system-generator"].as_str().unwrap();
    assert!(
        generator
            .ends_with("-podman-0-minimal/lib/systemd/system-generators/podman-system-generator"),
        "{generator}"
    );
    let user_generator = c["userGenerators"]["podman-user-generator"]
        .as_str()
        .unwrap();
    assert!(
        user_generator
            .ends_with("-podman-0-minimal/lib/systemd/user-generators/podman-user-generator"),
        "{user_generator}"
    );
    let script = c["renderScript"].as_str().unwrap();
    assert!(
        script.contains(" render --backend quadlet --out rendered\n"),
        "{script}"
    );
    assert!(script.contains("mkdir -p $out/share/mcrecover/quadlet $out/lib/systemd/system\n"));

    // The package's D-Bus policy covers root: nothing else. No rootless
    // sysctl or user manager PATH even though unprivilegedPortStart is set.
    let dbus = strs(&c["dbusPackages"]);
    assert_eq!(dbus.len(), 1, "{dbus:?}");
    assert!(is_store(dbus[0], "mcrecover-0-minimal"));
    assert_eq!(c["sysctl"], serde_json::json!({}));
    assert_eq!(c["userExtraConfig"], "");
    assert_eq!(c["podman"], true);

    let platform = &c["settings"]["platform"];
    assert_eq!(platform["unit_dir"], "/etc/systemd/system");
    assert_eq!(platform["quadlet_dir"], "/etc/containers/systemd");
}

/// Definitions from several modules merge as NixOS merges them: lists
/// concatenate (in `mkBefore`/`mkAfter` order), attribute sets of services
/// merge by name, an explicit value
/// beats the module's `mkDefault`, `subIdRange` fills the user's ranges.
#[test]
fn definitions_merge_with_nixpkgs_lib() {
    let Some(lib) = nixpkgs_lib("definitions_merge_with_nixpkgs_lib") else {
        return;
    };
    let c = eval_ok(
        &lib,
        r#"(EVAL {
  config.services.mcrecover = {
    enable = true;
    settings = EXAMPLE;
    extraDaemonArgs = [ "--api-bus" ];
    subIdRange.start = 200000;
    wantedBy = [ ];
  };
  modules = [
    {
      services.mcrecover.extraDaemonArgs = LIB.mkAfter [ "system" ];
      services.mcrecover.settings.platform.podman = "/opt/podman/bin/podman";
      services.mcrecover.settings.services.extra = { image = "extra:1"; };
      services.mcrecover.settings.stages = LIB.mkAfter [ { name = "extras"; services = [ "extra" ]; } ];
    }
  ];
}).system"#,
    );
    let exec = strs(&c["services"]["mcrecover@850"]["serviceConfig"]["ExecStart"]);
    assert!(
        exec[1].ends_with(" --bus-address unix:path=/run/user/850/bus --api-bus system"),
        "{exec:?}"
    );
    let settings = &c["settings"];
    assert_eq!(settings["platform"]["podman"], "/opt/podman/bin/podman");
    assert_eq!(settings["services"]["extra"]["image"], "extra:1");
    assert_eq!(settings["services"]["mcns"]["image"], "mcns:v1.2.0");
    let stages: Vec<&str> = settings["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(stages.last(), Some(&"extras"), "{stages:?}");
    assert!(stages.len() > 1, "{stages:?}");
    let mcp = &c["users"]["mcp"];
    assert_eq!(mcp["autoSubUidGidRange"], false);
    assert_eq!(
        mcp["subUidRanges"],
        serde_json::json!([{ "startUid": 200000, "count": 65536 }])
    );
    assert_eq!(
        mcp["subGidRanges"],
        serde_json::json!([{ "startGid": 200000, "count": 65536 }])
    );
    assert_eq!(
        c["targets"]["metacircular"]["wantedBy"],
        serde_json::json!([])
    );
    // No unprivilegedPortStart: no sysctl.
    assert_eq!(c["sysctl"], serde_json::json!({}));
}

#[test]
fn wrong_types_name_the_option() {
    let Some(lib) = nixpkgs_lib("wrong_types_name_the_option") else {
        return;
    };
    for (definition, option) in [
        (
            r#"settings.platform.uid = "850";"#,
            "services.mcrecover.settings.platform.uid",
        ),
        (
            r#"settings.platform.mode = "rootles";"#,
            "services.mcrecover.settings.platform.mode",
        ),
        (
            r#"settings.watch.backoff_max = "five minutes";"#,
            "services.mcrecover.settings.watch.backoff_max",
        ),
        (
            r#"wantedBy = "multi-user.target";"#,
            "services.mcrecover.wantedBy",
        ),
    ] {
        let err = eval_err(
            &lib,
            &format!(
                r#"(EVAL {{
  config.services.mcrecover = {{ enable = true; settings = EXAMPLE; }};
  modules = [ {{ services.mcrecover.{definition} }} ];
}}).system"#
            ),
        );
        assert!(
            err.contains(&format!("option `{option}'")) && err.contains("is not of type"),
            "{definition}: the error does not name `{option}` as not of its type:\n{err}"
        );
    }
}

#[test]
fn rootless_without_user_fails_the_assertion() {
    let Some(lib) = nixpkgs_lib("rootless_without_user_fails_the_assertion") else {
        return;
    };
    let message =
        "services.mcrecover: rootless mode needs settings.platform.user and settings.platform.uid";
    let config = r#"config.services.mcrecover = {
    enable = true;
    settings.platform = { name = "demo"; mode = "rootless"; };
  };"#;
    // The false assertions, as NixOS's top level collects them.
    let failed = eval_ok(&lib, &format!("(EVAL {{ {config} }}).failedAssertions"));
    assert_eq!(failed, serde_json::json!([message]));
    // ... and the system does not evaluate, with that message.
    let err = eval_err(&lib, &format!("(EVAL {{ {config} }}).system"));
    assert!(
        err.contains("Failed assertions:") && err.contains(&format!("- {message}")),
        "{err}"
    );
    // With user and uid the assertion holds.
    let failed = eval_ok(
        &lib,
        r#"(EVAL { config.services.mcrecover = {
    enable = true;
    settings.platform = { name = "demo"; user = "mcp"; uid = 850; };
  }; }).failedAssertions"#,
    );
    assert_eq!(failed, serde_json::json!([]));
}

#[test]
fn config_file_mode_with_nixpkgs_lib() {
    let Some(lib) = nixpkgs_lib("config_file_mode_with_nixpkgs_lib") else {
        return;
    };
    // The example as it is: its [platform] drives the wiring; it names no
    // podman/mcrecover/config_path, so the module warns.
    let c = eval_ok(
        &lib,
        &format!(
            r#"(EVAL {{ config.services.mcrecover = {{
    enable = true;
    configFile = {};
  }}; }}).system"#,
            root().join("examples/metacircular.toml").display()
        ),
    );
    assert_eq!(c["failedAssertions"], serde_json::json!([]));
    assert_eq!(c["toml"], Value::Null, "configFile: nothing is generated");
    assert_eq!(c["daemon"], "mcrecover@850");
    assert_eq!(c["users"]["mcp"]["uid"], 850);
    assert_eq!(c["users"]["mcp"]["home"], "/srv/mcp");
    assert_eq!(
        strs(&c["targets"]["metacircular"]["wants"]),
        ["mcrecover@850.service"]
    );
    let rendered = c["rendered"].as_str().unwrap();
    assert_eq!(
        c["etc"]["mcrecover/mcrecover.toml"]["source"]
            .as_str()
            .unwrap(),
        format!("{rendered}/share/mcrecover/mcrecover.toml")
    );
    // The file goes through the store into the rendered derivation.
    let script = c["renderScript"].as_str().unwrap();
    let copied = script
        .lines()
        .find_map(|l| l.strip_prefix("mcrecover --config "))
        .and_then(|l| l.strip_suffix(" check-config"))
        .unwrap_or_else(|| panic!("no check-config in\n{script}"));
    assert!(is_store(copied, "metacircular.toml"), "{copied}");
    let warnings = strs(&c["warnings"]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("services.mcrecover.configFile: set platform.podman"),
        "{warnings:?}"
    );

    // A file that sets them: no warning; a rootful one: no user.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("platform.toml");
    std::fs::write(
        &file,
        "[platform]\nname = \"edge\"\nmode = \"rootful\"\n\
         podman = \"/run/current-system/sw/bin/podman\"\n\
         mcrecover = \"/run/current-system/sw/bin/mcrecover\"\n\
         config_path = \"/etc/mcrecover/mcrecover.toml\"\n",
    )
    .unwrap();
    let c = eval_ok(
        &lib,
        &format!(
            r#"(EVAL {{ config.services.mcrecover = {{
    enable = true;
    configFile = {};
  }}; }}).system"#,
            file.display()
        ),
    );
    assert_eq!(c["warnings"], serde_json::json!([]));
    assert_eq!(c["daemon"], "mcrecover");
    assert_eq!(c["users"], serde_json::json!({}));
    assert_eq!(keys(&c["targets"]), ["edge"]);
}

/// The JSON the module hands `pkgs.formats.toml` as TOML. nixpkgs converts
/// it with remarshal's `json2toml` at build time; here the `toml` crate does.
fn json_to_toml(json: &str) -> String {
    let value: toml::Value = serde_json::from_str(json).unwrap();
    toml::to_string(&value).unwrap()
}

#[test]
fn generated_configuration_passes_check_config() {
    let Some(lib) = nixpkgs_lib("generated_configuration_passes_check_config") else {
        return;
    };
    let example: toml::Table = std::fs::read_to_string(root().join("examples/metacircular.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (kind, expr) in [("rootless", ROOTLESS), ("rootful", ROOTFUL)] {
        let c = eval_ok(&lib, expr);
        let json = c["toml"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind}: no generated configuration"));
        assert!(!json.contains("null"), "{kind}: nulls are dropped: {json}");
        let text = json_to_toml(json);
        let file = dir.path().join(format!("{kind}.toml"));
        std::fs::write(&file, &text).unwrap();

        // What the module sets for NixOS is in the file.
        let parsed: toml::Table = text.parse().unwrap();
        let platform = parsed["platform"].as_table().unwrap();
        assert_eq!(
            platform["config_path"].as_str(),
            Some("/etc/mcrecover/mcrecover.toml")
        );
        assert_eq!(
            platform["podman"].as_str(),
            Some("/run/current-system/sw/bin/podman")
        );
        assert!(platform["mcrecover"]
            .as_str()
            .unwrap()
            .ends_with("-mcrecover-0-minimal/bin/mcrecover"));
        assert_eq!(platform["mode"].as_str(), Some(kind));
        let names = |t: &toml::Table| {
            t["services"]
                .as_table()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&parsed),
            names(&example),
            "{kind}: every service of the example"
        );

        let out = Command::new(env!("CARGO_BIN_EXE_mcrecover"))
            .arg("--config")
            .arg(&file)
            .arg("check-config")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{kind}: `mcrecover check-config` rejects the module's configuration ({}):\n{}{}\n{text}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
