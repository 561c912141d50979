//! The engine's stage verdict, handed to the stage's gate unit (issue 15,
//! stage transitions).
//!
//! When `recover` or the daemon has just seen every member of a stage
//! healthy, it starts the stage's gate unit (`mcrecover gate --stage`), and
//! the next stage's units wait for that unit (`After=`/`Requires=`). The
//! gate would probe every check of the stage once more: about 50 ms on the
//! path from one stage to the next for an answer the engine had a moment
//! ago. So the runner writes a one-line verdict file just before it starts
//! the gate unit, and `mcrecover gate` accepts a fresh one instead of
//! probing: same stage, same checks (a digest of the stage's members and
//! their checks, and of this binary's version), written less than
//! [`VERDICT_TTL`] ago. The gate removes the file it used (one use).
//! Without a usable verdict (none, stale, other checks, other owner, a
//! systemd-only boot) the gate probes as always.
//!
//! Where: `/run/mcrecover` for root; for another user
//! `$XDG_RUNTIME_DIR/mcrecover` when that is set and writable (a login
//! shell, the user manager's units), else `/run/mcrecover/<uid>` (the
//! rootless daemon's `RuntimeDirectory=mcrecover/%i`: its sandbox keeps
//! `/run/user` read-only). The writer takes the first it can create or
//! write, the gate reads them in the same order. Directories and files
//! must belong to the user and not be writable by others; opened by
//! descriptor with `O_NOFOLLOW`, read bounded.

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::stat::Mode;

use crate::config::Config;
use crate::safe_fs;

/// How old a verdict may be when the gate reads it.
pub const VERDICT_TTL: Duration = Duration::from_secs(10);

/// The longest verdict file read.
const MAX_LEN: u64 = 512;

/// The first word of a verdict line (its format's version).
const MAGIC: &str = "mcrecover-verdict-1";

/// A digest of what a verdict vouches for: this binary's version, the
/// stage's name, and every member with its checks.
pub fn digest(cfg: &Config, stage: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(env!("CARGO_PKG_VERSION").as_bytes());
    ctx.update(b"\0");
    ctx.update(stage.as_bytes());
    if let Some(st) = cfg.stages.iter().find(|s| s.name == stage) {
        for m in &st.services {
            ctx.update(b"\0");
            ctx.update(m.as_bytes());
            if let Some(s) = cfg.services.get(m) {
                ctx.update(format!("{:?}", s.checks).as_bytes());
            }
        }
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The directories a verdict may be in, in order.
fn dirs() -> Vec<PathBuf> {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return vec![PathBuf::from("/run/mcrecover")];
    }
    let mut out = Vec::new();
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        out.push(PathBuf::from(x).join("mcrecover"));
    }
    out.push(PathBuf::from("/run/mcrecover").join(uid.to_string()));
    out
}

fn file_name(stage: &str) -> String {
    format!("gate-{stage}")
}

fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The directory opened, when it belongs to us and others cannot write it.
fn open_own_dir(path: &std::path::Path) -> Option<OwnedFd> {
    let fd = safe_fs::open_dir(path).ok()?;
    let st = safe_fs::stat(&fd).ok()?;
    let mine = st.st_uid == nix::unistd::geteuid().as_raw();
    (mine && st.st_mode & 0o022 == 0).then_some(fd)
}

/// Record that `stage` was just seen healthy. Best effort: `Err` says why
/// no directory took it (the gate then probes).
pub fn write(cfg: &Config, stage: &str) -> Result<PathBuf, String> {
    let line = format!("{MAGIC} {} {}\n", digest(cfg, stage), now_usec());
    let mut why = Vec::new();
    for dir in dirs() {
        match write_in(&dir, stage, &line) {
            Ok(()) => return Ok(dir.join(file_name(stage))),
            Err(e) => why.push(format!("{}: {e}", dir.display())),
        }
    }
    Err(why.join("; "))
}

fn write_in(dir: &std::path::Path, stage: &str, line: &str) -> std::io::Result<()> {
    if open_own_dir(dir).is_none() {
        // Create it (0700) below its parent when missing.
        let parent = dir.parent().unwrap_or(dir);
        let name = dir.file_name().unwrap_or(OsStr::new("mcrecover"));
        let pfd = safe_fs::open_dir(parent)?;
        safe_fs::mkdir_open_at(&pfd, name, Mode::from_bits_truncate(0o700))?;
    }
    let Some(dfd) = open_own_dir(dir) else {
        return Err(std::io::Error::other(
            "not a directory of this user, or writable by others",
        ));
    };
    let name = file_name(stage);
    let (mut tmp, tmp_name) = safe_fs::create_temp_at(
        &dfd,
        &format!(".{name}.new"),
        Mode::from_bits_truncate(0o600),
    )?;
    tmp.write_all(line.as_bytes())?;
    drop(tmp);
    safe_fs::rename_at(&dfd, OsStr::new(&tmp_name), OsStr::new(&name))
}

/// A fresh verdict for `stage` with the checks of `cfg`: how old it is.
/// The file used is removed. `None`: none usable (the gate probes).
pub fn take(cfg: &Config, stage: &str) -> Option<Duration> {
    let want = digest(cfg, stage);
    dirs()
        .iter()
        .find_map(|dir| take_in(dir, &file_name(stage), &want))
}

/// The verdict in `dir`, if there is one, it is ours and it is usable
/// (removed once read, usable or not).
fn take_in(dir: &std::path::Path, name: &str, want: &str) -> Option<Duration> {
    let dfd = open_own_dir(dir)?;
    let (file, st) = safe_fs::open_regular_at(&dfd, OsStr::new(name)).ok()?;
    if st.st_uid != nix::unistd::geteuid().as_raw() {
        return None;
    }
    let text = safe_fs::read_bounded(file, MAX_LEN).ok();
    let _ = safe_fs::unlink_at(&dfd, OsStr::new(name));
    let text = String::from_utf8(text?).ok()?;
    let mut words = text.split_whitespace();
    let (Some(MAGIC), Some(d), Some(at)) = (words.next(), words.next(), words.next()) else {
        return None;
    };
    let at: u64 = at.parse().ok()?;
    let age = Duration::from_micros(now_usec().checked_sub(at)?);
    (d == want && age <= VERDICT_TTL).then_some(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(check_port: u16) -> Config {
        let text = format!(
            r#"
[platform]
name = "p"
mode = "rootful"

[[stages]]
name = "core"
services = ["a"]

[services.a]
image = "a:1"
checks = [{{ kind = "tcp", address = "127.0.0.1:{check_port}" }}]
"#
        );
        crate::config::parse(&text, std::path::Path::new("/etc/t.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_verdict_is_used_once_and_only_when_fresh_and_for_the_same_checks() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().join("mcrecover");
        let line = |d: &str, at: u64| format!("{MAGIC} {d} {at}\n");
        write_in(&dir, "core", &line("abc", now_usec())).unwrap_or_else(|e| panic!("{e}"));
        let age = take_in(&dir, "gate-core", "abc");
        assert!(age.is_some_and(|a| a < VERDICT_TTL), "{age:?}");
        assert_eq!(take_in(&dir, "gate-core", "abc"), None, "used once");
        write_in(&dir, "core", &line("other", now_usec())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(take_in(&dir, "gate-core", "abc"), None, "other checks");
        let old = now_usec() - 2 * VERDICT_TTL.as_micros() as u64;
        write_in(&dir, "core", &line("abc", old)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(take_in(&dir, "gate-core", "abc"), None, "stale");
        // A directory others may write is not trusted.
        write_in(&dir, "core", &line("abc", now_usec())).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            take_in(&dir, "gate-core", "abc"),
            None,
            "group/world-writable"
        );
    }

    #[test]
    fn the_digest_follows_the_checks() {
        assert_eq!(digest(&cfg(1), "core"), digest(&cfg(1), "core"));
        assert_ne!(digest(&cfg(1), "core"), digest(&cfg(2), "core"));
        assert_ne!(digest(&cfg(1), "core"), digest(&cfg(1), "other"));
    }
}
