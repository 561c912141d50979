//! Issue 12 item 2: the quarantine remedy never follows a symbolic link
//! below a volume's host directory (the container controls what is there).
//! The old code checked only the last component: a container could make the
//! daemon move another service's files into its volume, or move its own
//! files out of it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcrecover::config::{self, Remedy, Service};
use mcrecover::watch::escalate;

/// Service `mcr` with one bind-mount volume `vol` and a remedy quarantining `files`.
fn service(vol: &Path, files: &[PathBuf]) -> (Service, Remedy) {
    let list: Vec<String> = files
        .iter()
        .map(|f| format!("{:?}", f.display().to_string()))
        .collect();
    let text = format!(
        r#"
[platform]
name = "q"
mode = "rootful"

[[stages]]
name = "one"
services = ["mcr"]

[services.mcr]
image = "localhost/mcr:1"
volumes = ["{}:/data"]

[services.mcr.remedy]
quarantine = [{}]
"#,
        vol.display(),
        list.join(", ")
    );
    let cfg = config::parse(&text, Path::new("/etc/q.toml")).unwrap();
    let svc = cfg.services["mcr"].clone();
    let remedy = svc.remedy.clone().unwrap();
    (svc, remedy)
}

fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_572_900)
}

#[test]
fn a_symlinked_directory_below_the_volume_is_not_followed() {
    let root = tempfile::tempdir().unwrap();
    let vol = root.path().join("srv/mcr");
    let other = root.path().join("srv/other/db");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("mcr.db"), b"another service's database").unwrap();
    // The container made its `db` a link to another service's directory.
    symlink(&other, vol.join("db")).unwrap();
    let (svc, remedy) = service(&vol, &[vol.join("db/mcr.db")]);
    let err = escalate::quarantine(&svc, &remedy, at()).unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.path, vol.join("db/mcr.db"));
    assert!(err.reason.contains("symbolic link"), "{err}");
    assert_eq!(
        std::fs::read(other.join("mcr.db")).unwrap(),
        b"another service's database",
        "the other service's file stays where it is"
    );
    assert!(!vol.join("quarantine/20261125T021500Z/db/mcr.db").exists());
}

#[test]
fn a_symlinked_quarantine_directory_is_not_followed() {
    let root = tempfile::tempdir().unwrap();
    let vol = root.path().join("srv/mcr");
    let elsewhere = root.path().join("etc-like");
    std::fs::create_dir_all(vol.join("db")).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(vol.join("db/mcr.db"), b"db").unwrap();
    // The container made `quarantine` a link out of its volume.
    symlink(&elsewhere, vol.join("quarantine")).unwrap();
    let (svc, remedy) = service(&vol, &[vol.join("db/mcr.db")]);
    let err = escalate::quarantine(&svc, &remedy, at()).unwrap_err();
    eprintln!("{err}");
    assert!(err.reason.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(vol.join("db/mcr.db")).unwrap(), b"db");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing was created or placed outside the volume"
    );
}

#[test]
fn a_symlink_planted_inside_the_timestamp_directory_is_not_followed() {
    // A quarantine directory of an earlier run at the same second, where the
    // container replaced a subdirectory with a link: a new run takes
    // `<stamp>-2` and creates its own directories there.
    let root = tempfile::tempdir().unwrap();
    let vol = root.path().join("srv/mcr");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(vol.join("db")).unwrap();
    std::fs::create_dir_all(vol.join("quarantine/20261125T021500Z")).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    symlink(&elsewhere, vol.join("quarantine/20261125T021500Z/db")).unwrap();
    std::fs::write(vol.join("db/mcr.db"), b"db").unwrap();
    let (svc, remedy) = service(&vol, &[vol.join("db/mcr.db")]);
    let report = escalate::quarantine(&svc, &remedy, at()).unwrap();
    assert_eq!(
        report.moved,
        vec![(
            vol.join("db/mcr.db"),
            vol.join("quarantine/20261125T021500Z-2/db/mcr.db")
        )]
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    // The listed file itself a link: the link is moved, its target untouched.
    let target = root.path().join("target");
    std::fs::write(&target, b"t").unwrap();
    symlink(&target, vol.join("db/mcr.db")).unwrap();
    let later = at() + Duration::from_secs(60);
    let report = escalate::quarantine(&svc, &remedy, later).unwrap();
    let (_, to) = &report.moved[0];
    assert!(to.is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"t");
}
