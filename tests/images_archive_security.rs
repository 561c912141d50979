//! Issue 12 item 1: `mcrecover images save` and the archive loading, run as
//! root, with an archive directory that another user controls. Nothing the
//! platform user plants there (symbolic links where the temporary files or
//! `index.json` go) makes root write, chown or chmod another file; a path
//! another user could redirect is refused with the reason; an archive whose
//! contents someone else could change after the checksum (or that is not a
//! regular file) is not loaded.
//!
//! podman is a stand-in script (`platform.podman`), run as the platform user
//! `mcp` (uid 850) through `runuser` like the real one. Needs root and the
//! user `mcp` (uid 850, as `scripts/install-deps` makes it); skipped
//! otherwise, failed with MCRECOVER_REQUIRE_E2E=1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use mcrecover::config::{self, Config};
use mcrecover::images::{self, ImageAction, ImagesError};

const UID: u32 = 850;
const NOBODY: u32 = 65534;
const IMAGE: &str = "localhost/busybox:1";
const FILE: &str = "busybox_1.tar";

/// Root and the user `mcp` (uid 850) are needed.
fn gate(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let mcp = nix::unistd::User::from_name("mcp")
        .ok()
        .flatten()
        .is_some_and(|u| u.uid.as_raw() == UID);
    if root && mcp {
        return true;
    }
    let why = format!("{test}: needs root and the user mcp (uid {UID})");
    assert!(
        std::env::var("MCRECOVER_REQUIRE_E2E").as_deref() != Ok("1"),
        "{why}"
    );
    eprintln!("skipped: {why}");
    false
}

/// A stand-in podman: `image exists` answers from a marker file, `save`
/// prints (or, with `-o`, writes) an archive naming the uid it ran as,
/// `load` keeps its stdin.
const PODMAN: &str = r#"#!/bin/sh
state=$(dirname "$0")
case "$1 $2" in
"image exists")
    if [ -e "$state/present" ]; then exit 0; else exit 1; fi ;;
esac
case "$1" in
save)
    out=
    while [ $# -gt 0 ]; do
        if [ "$1" = -o ]; then out=$2; shift; fi
        shift
    done
    if [ -n "$out" ]; then
        printf 'ARCHIVE-DATA uid=%s\n' "$(id -u)" > "$out"
    else
        printf 'ARCHIVE-DATA uid=%s\n' "$(id -u)"
    fi
    exit 0 ;;
load)
    cat > "$state/loaded-input"
    touch "$state/present"
    exit 0 ;;
esac
echo "stand-in podman: unexpected $*" >&2
exit 125
"#;

struct Fixture {
    root: tempfile::TempDir,
}

impl Fixture {
    /// A world-traversable temporary directory with the stand-in podman in
    /// `bin/` (executable by mcp).
    fn new() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        chmod(root.path(), 0o755);
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        chmod(&bin, 0o755);
        std::fs::write(bin.join("podman"), PODMAN).unwrap();
        chmod(&bin.join("podman"), 0o755);
        Fixture { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// The stand-in's state directory (writable by mcp).
    fn bin(&self) -> PathBuf {
        self.path("bin")
    }

    fn config(&self, rootless: bool, archive: Option<&Path>) -> Config {
        let mode = if rootless {
            format!("mode = \"rootless\"\nuser = \"mcp\"\nuid = {UID}\ngid = {UID}\nhome = \"/srv/mcp\"")
        } else {
            "mode = \"rootful\"".to_owned()
        };
        let archive = archive
            .map(|a| format!("image_archive = \"{}\"\n", a.display()))
            .unwrap_or_default();
        let text = format!(
            r#"
[platform]
name = "t"
{mode}
podman = "{}"
pull = "never"
{archive}
[[stages]]
name = "one"
services = ["a"]

[services.a]
image = "{IMAGE}"
"#,
            self.bin().join("podman").display()
        );
        config::parse(&text, Path::new("/etc/t.toml")).unwrap()
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// (contents, mode, uid) of a file, not following a link.
fn snapshot(p: &Path) -> (Vec<u8>, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (std::fs::read(p).unwrap(), m.mode() & 0o7777, m.uid())
}

#[test]
fn save_as_root_never_writes_through_links_the_platform_user_planted() {
    if !gate("save_as_root_never_writes_through_links_the_platform_user_planted") {
        return;
    }
    let fx = Fixture::new();
    std::fs::write(fx.bin().join("present"), b"").unwrap();
    // Root's own files, out of mcp's reach.
    let secret = fx.path("secret");
    std::fs::create_dir(&secret).unwrap();
    chmod(&secret, 0o700);
    let victims = [secret.join("shadow-like"), secret.join("other")];
    for v in &victims {
        std::fs::write(v, b"root only\n").unwrap();
        chmod(v, 0o600);
    }
    // mcp's archive directory, with links where the save's temporary
    // files go (pid = this process's).
    let archive = fx.path("archive");
    std::fs::create_dir(&archive).unwrap();
    chown(&archive, UID);
    let pid = std::process::id();
    let planted = [
        archive.join(format!(".{FILE}.tmp{pid}")),
        archive.join(format!(".index.json.tmp{pid}")),
    ];
    for (link, victim) in planted.iter().zip(&victims) {
        symlink(victim, link).unwrap();
        chown(link, UID);
    }
    let before: Vec<_> = victims.iter().map(|v| snapshot(v)).collect();

    let cfg = fx.config(true, None);
    let report = block_on(images::save(&cfg, &archive));
    eprintln!("{report:#?}");
    let after: Vec<_> = victims.iter().map(|v| snapshot(v)).collect();
    assert_eq!(
        before, after,
        "root's files were written, chowned or chmodded through mcp's links"
    );
    let report = report.unwrap();
    assert_eq!(report.saved.len(), 1);
    // The archive: a regular file of root's, 0644, what podman (as mcp) wrote.
    let tar = archive.join(FILE);
    let meta = std::fs::symlink_metadata(&tar).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o644));
    assert_eq!(
        std::fs::read_to_string(&tar).unwrap(),
        format!("ARCHIVE-DATA uid={UID}\n")
    );
    let (sha, size) = images::sha256_file(&tar).unwrap();
    assert_eq!(
        (&report.saved[0].1.sha256, report.saved[0].1.size),
        (&sha, size)
    );
    let index = archive.join("index.json");
    let meta = std::fs::symlink_metadata(&index).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o644));
    assert_eq!(images::read_index(&archive).unwrap()[IMAGE].sha256, sha);
    // The planted links are left alone, and no temporary file is left.
    for link in &planted {
        assert!(link.is_symlink(), "{}", link.display());
    }
    let mut names: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want = vec![
        FILE.to_owned(),
        "index.json".to_owned(),
        format!(".{FILE}.tmp{pid}"),
        format!(".index.json.tmp{pid}"),
    ];
    want.sort();
    assert_eq!(names, want);

    // index.json itself a link to a root file: not followed, refused.
    std::fs::remove_file(&index).unwrap();
    symlink(&victims[0], &index).unwrap();
    let err = block_on(images::save(&cfg, &archive)).unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(&err, ImagesError::Unsafe { reason, .. } if reason.contains("symbolic link")),
        "{err:?}"
    );
    assert_eq!(snapshot(&victims[0]), before[0]);
}

#[test]
fn save_as_root_refuses_a_path_another_user_could_redirect() {
    if !gate("save_as_root_refuses_a_path_another_user_could_redirect") {
        return;
    }
    let fx = Fixture::new();
    std::fs::write(fx.bin().join("present"), b"").unwrap();
    let cfg = fx.config(true, None);
    let mkdir = |rel: &str, uid: u32, mode: u32| {
        let p = fx.path(rel);
        std::fs::create_dir(&p).unwrap();
        chown(&p, uid);
        chmod(&p, mode);
        p
    };
    let refused = |dir: &Path, why: &str| {
        let err = block_on(images::save(&cfg, dir)).unwrap_err();
        eprintln!("{err}");
        assert!(
            matches!(&err, ImagesError::Unsafe { reason, .. } if reason.contains(why)),
            "{}: {err:?}",
            dir.display()
        );
        assert!(!dir.join(FILE).exists(), "{}", dir.display());
    };
    // A parent another user owns: they could swap the directory.
    mkdir("nobodys", NOBODY, 0o755);
    let inside = mkdir("nobodys/archive", 0, 0o755);
    refused(&inside, &format!("can be replaced by uid {NOBODY}"));
    // A symbolic link on the way.
    let real = mkdir("real", 0, 0o755);
    symlink(&real, fx.path("link")).unwrap();
    refused(&fx.path("link"), "symbolic link");
    // A directory of another user than root and the platform user.
    let theirs = mkdir("theirs", NOBODY, 0o755);
    refused(&theirs, &format!("belongs to uid {NOBODY}"));
    // A world-writable parent (not sticky), a world-writable directory.
    mkdir("open", 0, 0o777);
    let below = mkdir("open/archive", 0, 0o755);
    refused(&below, "every user");
    let open2 = mkdir("open2", 0, 0o757);
    refused(&open2, "writable by every user");
    // A root directory in a path mcp controls: mcp could have put any
    // directory of root's there.
    mkdir("mcphome", UID, 0o755);
    let rootdir = mkdir("mcphome/images", 0, 0o755);
    refused(&rootdir, "belongs to root, but");

    // What is allowed: mcp's own directory in mcp's home, created there by
    // this save (and handed to mcp), and a root path all the way.
    let created = fx.path("mcphome/new/images");
    let report = block_on(images::save(&cfg, &created)).unwrap();
    assert_eq!(report.saved.len(), 1);
    for p in [fx.path("mcphome/new"), created] {
        assert_eq!(std::fs::metadata(&p).unwrap().uid(), UID, "{}", p.display());
    }
    let rooted = fx.path("rooted/images");
    block_on(images::save(&cfg, &rooted)).unwrap();
    assert_eq!(std::fs::metadata(&rooted).unwrap().uid(), 0);
}

/// `ensure_images` on another thread, `None` if it did not return within 20 s.
fn ensure_within(cfg: Config) -> Option<Result<Vec<ImageAction>, ImagesError>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = block_on(images::ensure_images(&cfg, &["a".to_owned()]));
        let _ = tx.send(r);
    });
    rx.recv_timeout(Duration::from_secs(20)).ok()
}

#[test]
fn loading_as_root_takes_only_archives_nobody_else_can_change() {
    if !gate("loading_as_root_takes_only_archives_nobody_else_can_change") {
        return;
    }
    let fx = Fixture::new();
    let archive = fx.path("archive");
    std::fs::create_dir(&archive).unwrap();
    let tar = archive.join(FILE);
    let data = b"ARCHIVE-DATA uid=0\n";
    std::fs::write(&tar, data).unwrap();
    let (sha, size) = images::sha256_file(&tar).unwrap();
    std::fs::write(
        archive.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            IMAGE: {"file": FILE, "sha256": sha, "size": size, "saved_at": "2026-01-01T00:00:00Z"}
        }))
        .unwrap(),
    )
    .unwrap();
    // Rootful: the archive goes into root's storage.
    let cfg = fx.config(false, Some(&archive));
    let refused = |why: &str| {
        let res = ensure_within(cfg.clone()).expect("ensure_images returned (no hang)");
        let err = res.unwrap_err();
        eprintln!("{err}");
        assert!(
            matches!(&err, ImagesError::Unavailable(f) if f[0].message.contains(why)),
            "{err:?}"
        );
        assert!(!fx.bin().join("loaded-input").exists(), "it was loaded");
    };

    // Owned by another user, who could rewrite it after the checksum.
    chown(&tar, NOBODY);
    refused(&format!("belongs to uid {NOBODY}"));
    let st = block_on(images::status(&cfg)).unwrap();
    assert!(
        matches!(&st.images[0].archive, images::ArchiveState::Refused { reason, .. } if reason.contains("belongs to uid")),
        "{st:?}"
    );
    // Root's, but anyone may write it.
    chown(&tar, 0);
    chmod(&tar, 0o666);
    refused("everyone may write it");
    chmod(&tar, 0o644);
    // A link to a root file with the same contents: not followed.
    let elsewhere = fx.path("elsewhere.tar");
    std::fs::rename(&tar, &elsewhere).unwrap();
    symlink(&elsewhere, &tar).unwrap();
    refused("symbolic link");
    // A FIFO: not waited on.
    std::fs::remove_file(&tar).unwrap();
    nix::unistd::mkfifo(&tar, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    refused("FIFO");
    // Root's own regular file: loaded, the verified bytes on podman's stdin.
    std::fs::remove_file(&tar).unwrap();
    std::fs::rename(&elsewhere, &tar).unwrap();
    let actions = ensure_within(cfg).unwrap().unwrap();
    assert!(
        matches!(&actions[..], [ImageAction::Loaded { image, .. }] if image == IMAGE),
        "{actions:?}"
    );
    assert_eq!(std::fs::read(fx.bin().join("loaded-input")).unwrap(), data);
}
