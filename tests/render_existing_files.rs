//! Issue 12 item 6: what `render`/`install` find at a unit's path is read
//! only when it is a regular file, and only up to a bound: a symbolic link
//! (e.g. to `/dev/zero`, which grew the old code to 4 GB) is not followed, a
//! FIFO does not hang the write, an oversized file is "not ours". Plain
//! files behave as before (unchanged / changed / foreign).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use mcrecover::config;
use mcrecover::plan;
use mcrecover::render::{self, Backend, RenderError, Rendered, WriteReport, HEADER_PREFIX};

fn rendered() -> Rendered {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/metacircular.toml");
    let cfg = config::load(&path).unwrap();
    let plan = plan::build(&cfg).unwrap();
    render::render(&cfg, &plan, Backend::Service).unwrap()
}

/// `render::write` into `dir` on another thread: `None` when it has not
/// returned within 10 s (the old code blocked forever on a FIFO).
fn write_within(r: &Rendered, dir: &Path) -> Option<Result<WriteReport, RenderError>> {
    let (tx, rx) = mpsc::channel();
    let (r, dir) = (r.clone(), dir.to_path_buf());
    std::thread::spawn(move || {
        let _ = tx.send(render::write(&r, &dir, &dir, false));
    });
    rx.recv_timeout(Duration::from_secs(10)).ok()
}

fn unit_name(r: &Rendered) -> String {
    r.files
        .iter()
        .find(|f| f.name.ends_with(".service") && !f.name.contains("gate"))
        .unwrap()
        .name
        .clone()
}

#[test]
fn a_fifo_at_a_unit_path_is_refused_at_once() {
    let r = rendered();
    let dir = tempfile::tempdir().unwrap();
    let name = unit_name(&r);
    let fifo = dir.path().join(&name);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let res = write_within(&r, dir.path()).expect("write returned (it hung on the FIFO before)");
    let err = res.unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(&err, RenderError::NotAFile { path, kind: "FIFO" } if *path == fifo),
        "{err:?}"
    );
    assert!(err.to_string().contains("move it away"), "{err}");
    // Nothing written.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_symlink_at_a_unit_path_is_not_followed() {
    let r = rendered();
    let name = unit_name(&r);
    let contents = r.get(&name).unwrap().contents.clone();
    let elsewhere = tempfile::tempdir().unwrap();
    // A symlink to a file with our header (the old code read it through the
    // link), and one to /dev/zero (the old code read until memory ran out;
    // not tried with the old code).
    let target = elsewhere.path().join("target.service");
    std::fs::write(&target, format!("{HEADER_PREFIX}elsewhere\n")).unwrap();
    for to in [target.clone(), PathBuf::from("/dev/zero")] {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join(&name);
        std::os::unix::fs::symlink(&to, &link).unwrap();
        let res = write_within(&r, dir.path()).expect("write returned");
        let err = res.unwrap_err();
        eprintln!("{err}");
        assert!(
            matches!(&err, RenderError::NotAFile { path, kind: "symbolic link" } if *path == link),
            "{err:?}"
        );
        assert!(link.is_symlink(), "the link is left in place");
    }
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        format!("{HEADER_PREFIX}elsewhere\n")
    );
    // An identical regular file is still simply unchanged.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(&name), &contents).unwrap();
    let rep = write_within(&r, dir.path()).unwrap().unwrap();
    assert!(rep.unchanged.contains(&dir.path().join(&name)));
}

#[test]
fn an_oversized_file_is_not_ours() {
    let r = rendered();
    let name = unit_name(&r);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(&name);
    // Starts with our header, but no unit we render is 2 MiB: the old code
    // read all of it and replaced it.
    let mut big = format!("{HEADER_PREFIX}x\n").into_bytes();
    big.resize(2 << 20, b'#');
    std::fs::write(&path, &big).unwrap();
    let err = write_within(&r, dir.path()).unwrap().unwrap_err();
    assert!(
        matches!(&err, RenderError::Foreign { path: p } if *p == path),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), big);
    // Our own, smaller, outdated file is replaced as before.
    std::fs::write(&path, format!("{HEADER_PREFIX}old\n")).unwrap();
    let rep = write_within(&r, dir.path()).unwrap().unwrap();
    assert_eq!(rep.changed, vec![path.clone()]);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        r.get(&name).unwrap().contents
    );
}
