//! The shipped units (`units/`): every unit passes `systemd-analyze verify`
//! with an EMPTY stderr (the template as the instance `mcrecover@850.service`,
//! `ExecStart=` pointed at the mcrecover binary under test since verify wants
//! an executable), both daemon services reach the hardening target (exposure
//! <= 2.5 in `systemd-analyze security --offline=true`), and the D-Bus policy
//! is a configuration a real dbus-daemon accepts.
//!
//! Needs `systemd-analyze` and `dbus-daemon`; with MCRECOVER_REQUIRE_E2E=1 a
//! missing tool fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const EXPOSURE_TARGET: f64 = 2.5;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("units")
}

fn tool(test: &str, name: &str) -> Option<PathBuf> {
    let found = ["/usr/bin", "/bin", "/usr/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists());
    if found.is_none() {
        let required = std::env::var("MCRECOVER_REQUIRE_E2E").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{test}: MCRECOVER_REQUIRE_E2E=1 but {name} is missing"
        );
        eprintln!("SKIP {test}: {name} is missing");
    }
    found
}

/// The units copied into a temp dir, ExecStart= pointed at the binary under
/// test, the template also as instance 850.
fn staged() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_mcrecover");
    let mut units = Vec::new();
    for e in fs::read_dir(units_dir()).unwrap() {
        let p = e.unwrap().path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if !(name.ends_with(".service") || name.ends_with(".target")) {
            continue;
        }
        let text = fs::read_to_string(&p).unwrap();
        assert!(
            !name.ends_with(".service") || text.contains("ExecStart=/usr/bin/mcrecover daemon"),
            "{name}: ExecStart must run /usr/bin/mcrecover daemon"
        );
        let text = text.replace("/usr/bin/mcrecover", bin);
        fs::write(dir.path().join(&name), &text).unwrap();
        if name == "mcrecover@.service" {
            fs::write(dir.path().join("mcrecover@850.service"), &text).unwrap();
            units.push(dir.path().join("mcrecover@850.service"));
        } else {
            units.push(dir.path().join(&name));
        }
    }
    units.sort();
    (dir, units)
}

#[test]
fn units_pass_systemd_analyze_verify_with_empty_stderr() {
    let Some(analyze) = tool("units_verify", "systemd-analyze") else {
        return;
    };
    let (dir, units) = staged();
    let names: Vec<String> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "mcrecover.service",
            "mcrecover@850.service",
            "metacircular.target"
        ]
    );
    for unit in &units {
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(unit)
            .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "verify {}: {:?} {stderr}",
            unit.display(),
            out.status.code()
        );
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {}: exit {:?}\n{stderr}",
            unit.display(),
            out.status.code()
        );
    }
}

/// `→ Overall exposure level for X: 1.8 OK` -> 1.8
fn exposure(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let (_, rest) = line.rsplit_once(": ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn daemon_services_meet_the_exposure_target() {
    let Some(analyze) = tool("units_verify", "systemd-analyze") else {
        return;
    };
    let (_dir, units) = staged();
    for unit in units.iter().filter(|u| u.extension().unwrap() == "service") {
        let out = Command::new(&analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit)
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score = exposure(&text).unwrap_or_else(|| {
            panic!(
                "no exposure in the output for {}:\n{text}\n{}",
                unit.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        eprintln!(
            "exposure of {}: {score}",
            unit.file_name().unwrap().to_string_lossy()
        );
        assert!(
            score <= EXPOSURE_TARGET,
            "{}: exposure {score} > {EXPOSURE_TARGET}\n{text}",
            unit.display()
        );
    }
}

#[test]
fn dbus_policy_is_accepted_by_dbus_daemon() {
    let Some(daemon) = tool("units_verify", "dbus-daemon") else {
        return;
    };
    for file in [
        "dbus/net.metacircular.Recovery1.conf",
        "dbus/net.metacircular.Recovery1-rootless.conf",
    ] {
        policy_is_accepted(&daemon, &units_dir().join(file));
    }
}

/// dbus-daemon starts with `policy` included and says nothing about it.
fn policy_is_accepted(daemon: &Path, policy: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus");
    let config = dir.path().join("bus.conf");
    fs::write(
        &config,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_destination="org.freedesktop.DBus"/>
  </policy>
  <include>{}</include>
</busconfig>
"#,
            socket.display(),
            policy.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(daemon)
        .arg(format!("--config-file={}", config.display()))
        .args(["--nofork", "--nopidfile", "--nosyslog", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("dbus-daemon with {}: {line} {stderr}", policy.display());
    assert!(
        line.starts_with("unix:path="),
        "dbus-daemon refused the policy:\n{stderr}"
    );
    // What dbus-daemon says about the policy. It also warns when, as root
    // without CAP_SYS_RESOURCE (as on these machines), it cannot raise its
    // fd limit to 65536: that is about the process, not the policy.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("rror") && !l.contains("Failed to set fd limit"))
        .collect();
    assert!(
        complaints.is_empty(),
        "dbus-daemon complained about the policy:\n{stderr}"
    );
}

#[test]
fn exposure_is_parsed() {
    assert_eq!(
        exposure("x\n→ Overall exposure level for a.service: 1.8 OK 🙂\n"),
        Some(1.8)
    );
    assert_eq!(exposure("nothing"), None);
}

/// `units/NAME` turned into a oneshot probe with the same hardening: the
/// daemon-specific lines (notify, watchdog, restart, ExecStart) replaced.
fn probe_unit(name: &str, exec: &str) -> String {
    let text = fs::read_to_string(units_dir().join(name)).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("");
        match key {
            "Type" => out.push("Type=oneshot".to_owned()),
            "NotifyAccess" | "WatchdogSec" | "ExecReload" | "Restart" | "RestartSec" => {}
            "ExecStart" => out.push(format!("ExecStart={exec}")),
            "WantedBy" => {}
            _ => out.push(line.to_owned()),
        }
    }
    out.join("\n") + "\n"
}

fn sandbox_service_output(sb: &mcrecover_testbed::Sandbox, unit: &str) -> String {
    sb.journal(unit)
}

/// The hardened services, started by a real systemd (testbed sandbox), can
/// still do what the daemon does: restart a unit over D-Bus (as root without
/// capabilities / as the platform user against its user manager), read the
/// journal, write rendered units and the state directory, move files inside
/// a volume owned by the platform user, and run the mcrecover binary itself
/// (syscall filter, MemoryDenyWriteExecute).
#[test]
fn hardened_services_can_still_do_the_daemons_work() {
    use mcrecover_testbed::{e2e_gate, Sandbox, SandboxOptions};
    if !e2e_gate("units_verify::hardened", &[]) {
        return;
    }
    let mut opts = SandboxOptions::metacircular("units_hardened");
    opts.quadlet_generator = None;
    opts.srv_dirs = Vec::new();
    let sb = Sandbox::boot(opts).unwrap();
    sb.install_bin(Path::new(env!("CARGO_BIN_EXE_mcrecover")), "mcrecover")
        .unwrap();
    // The sandbox shares the host's /etc and /var/lib: give it its own
    // /etc/systemd/system (the probes write rendered units there) and
    // /var/lib (StateDirectory=), so nothing lands on the host.
    sb.overlay_dir("/etc/systemd/system").unwrap();
    sb.private_var_lib(&["mcrecover"]).unwrap();
    sb.run_ok(&["systemctl", "daemon-reload"]).unwrap();

    // ---- rootful
    sb.write_file(
        "/etc/systemd/system/probe-target.service",
        b"[Service]\nExecStart=/bin/sleep infinity\n",
    )
    .unwrap();
    sb.run_ok(&["mkdir", "-p", "/srv/vol", "/etc/containers/systemd"])
        .unwrap();
    sb.write_file("/srv/vol/data.db", b"precious").unwrap();
    sb.run_ok(&["chown", "-R", "850:850", "/srv/vol"]).unwrap();
    sb.run_ok(&["chmod", "0700", "/srv/vol"]).unwrap();
    let script = "set -ex
systemctl restart probe-target.service
systemctl is-active probe-target.service
busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager GetUnit s probe-target.service
journalctl -n 3 --no-pager -u probe-target.service
echo '# rendered' > /etc/systemd/system/probe-rendered.service
echo '# rendered' > /etc/containers/systemd/probe.container
mkdir -p /srv/vol/quarantine/T
mv /srv/vol/data.db /srv/vol/quarantine/T/data.db
echo ok > \"$STATE_DIRECTORY/probe\"
/usr/bin/mcrecover --version
echo PROBE-DONE
";
    sb.write_file("/srv/probe.sh", script.as_bytes()).unwrap();
    sb.write_file(
        "/etc/systemd/system/mcrecover-probe.service",
        probe_unit("mcrecover.service", "/bin/sh /srv/probe.sh").as_bytes(),
    )
    .unwrap();
    sb.run_ok(&["systemctl", "daemon-reload"]).unwrap();
    let out = sb.run(&["systemctl", "start", "mcrecover-probe.service"]);
    let log = sandbox_service_output(&sb, "mcrecover-probe.service");
    eprintln!("{log}");
    assert!(
        out.status.success() && log.contains("PROBE-DONE"),
        "hardened rootful probe failed: {}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sb.host_path("/srv/vol/quarantine/T/data.db").exists());
    assert!(sb.host_path("/var/lib/mcrecover/probe").exists());

    // ---- rootless (mcrecover@850)
    sb.start_user_manager(850).unwrap();
    sb.run_ok(&[
        "mkdir",
        "-p",
        "/srv/mcp/.config/systemd/user",
        "/srv/mcp/vol",
    ])
    .unwrap();
    sb.write_file(
        "/srv/mcp/.config/systemd/user/probe-user.service",
        b"[Service]\nExecStart=/bin/sleep infinity\n",
    )
    .unwrap();
    sb.write_file("/srv/mcp/vol/data.db", b"precious").unwrap();
    sb.run_ok(&["chown", "-R", "850:850", "/srv/mcp/.config", "/srv/mcp/vol"])
        .unwrap();
    let script = "set -ex
id -u
systemctl --user daemon-reload
systemctl --user restart probe-user.service
systemctl --user is-active probe-user.service
journalctl --user -n 3 --no-pager || true
echo '# rendered' > /srv/mcp/.config/containers-probe
mkdir -p /srv/mcp/vol/quarantine/T
mv /srv/mcp/vol/data.db /srv/mcp/vol/quarantine/T/data.db
echo ok > \"$STATE_DIRECTORY/probe\"
/usr/bin/mcrecover --version
echo PROBE-DONE
";
    sb.write_file("/srv/probe-user.sh", script.as_bytes())
        .unwrap();
    sb.write_file(
        "/etc/systemd/system/mcrecover-probe@.service",
        probe_unit("mcrecover@.service", "/bin/sh /srv/probe-user.sh").as_bytes(),
    )
    .unwrap();
    sb.run_ok(&["systemctl", "daemon-reload"]).unwrap();
    let out = sb.run(&["systemctl", "start", "mcrecover-probe@850.service"]);
    let log = sandbox_service_output(&sb, "mcrecover-probe@850.service");
    eprintln!("{log}");
    assert!(
        out.status.success() && log.contains("PROBE-DONE"),
        "hardened rootless probe failed: {}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sb.host_path("/srv/mcp/vol/quarantine/T/data.db").exists());
    assert!(sb.host_path("/var/lib/mcrecover/850/probe").exists());

    // ---- rootless with the home under /home (issue 12, item 11): the
    // user's own home is there and writable (its quadlet directory), /root
    // is still hidden. /home is the sandbox's own overlay.
    let user = mcrecover_testbed::RootlessUser {
        name: "mchome".into(),
        uid: 851,
        home: "/home/mchome".into(),
    };
    mcrecover_testbed::ensure_host_user(&user).unwrap();
    sb.overlay_dir("/home").unwrap();
    sb.run_ok(&["mkdir", "-p", "/home/mchome"]).unwrap();
    sb.run_ok(&["chown", "851:851", "/home/mchome"]).unwrap();
    let script = "set -ex
test \"$HOME\" = /home/mchome
mkdir -p \"$HOME/.config/containers/systemd\"
echo '# rendered' > \"$HOME/.config/containers/systemd/probe.container\"
test -z \"$(ls -A /root)\"
echo PROBE-DONE
";
    sb.write_file("/srv/probe-home.sh", script.as_bytes())
        .unwrap();
    sb.write_file(
        "/etc/systemd/system/mcrecover-probehome@.service",
        probe_unit("mcrecover@.service", "/bin/sh /srv/probe-home.sh").as_bytes(),
    )
    .unwrap();
    sb.run_ok(&["systemctl", "daemon-reload"]).unwrap();
    let out = sb.run(&["systemctl", "start", "mcrecover-probehome@851.service"]);
    let log = sandbox_service_output(&sb, "mcrecover-probehome@851.service");
    eprintln!("{log}");
    assert!(
        out.status.success() && log.contains("PROBE-DONE"),
        "hardened rootless probe with its home in /home failed: {}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    sb.run_ok(&[
        "test",
        "-s",
        "/home/mchome/.config/containers/systemd/probe.container",
    ])
    .unwrap();
}
