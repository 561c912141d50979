//! Running podman against the RIGHT image storage: root's in rootful mode;
//! the platform user's in rootless mode. Archives are opened by us and
//! streamed through stdin (`load`) or read from podman's stdout (`save`), so
//! podman never needs to see a path of the archive directory.
//!
//! Where podman runs ([`PodmanRunner`]):
//! - [`PodmanRunner::Direct`]: as our child process (the CLI run by an
//!   operator): through `runuser` with the user's `XDG_RUNTIME_DIR` and
//!   `HOME` when we are root and the platform is rootless, directly when we
//!   are root (rootful) or the platform user (rootless);
//! - [`PodmanRunner::Transient`]: as a transient unit of a service manager
//!   (the daemon, whose hardened unit forbids what podman needs): the
//!   platform user's own manager when we are that user, the system manager
//!   as root (with `User=` when the platform is rootless). See
//!   [`crate::drive::Systemd::run_transient`].
//!
//! Every run is bounded: its output (1 MiB kept) and its duration (per
//! action, see the `*_TIMEOUT` constants).

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::ImagesError;
use crate::config::{Config, Mode, PlatformUser};
use crate::drive::transient::read_bounded;
use crate::drive::{Systemd, TransientError, TransientSpec, DEFAULT_OUTPUT_LIMIT};

/// `podman image exists` (and other quick queries): normally ~0.1 s.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// `podman load`, `save`, `pull`: whole images.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Standard output kept of a query run directly ([`Podman::query`]): a
/// `podman ps --all` of thousands of containers fits.
const QUERY_OUTPUT_LIMIT: usize = 16 << 20;

/// Where podman is run.
///
/// ```no_run
/// # async fn f(cfg: &mcrecover::config::Config, services: &[String]) -> anyhow::Result<()> {
/// use mcrecover::drive::{BusTarget, Systemd};
/// use mcrecover::images::{ensure_images_via, PodmanRunner};
/// // The daemon: its own connection to the platform's manager.
/// let sd = Systemd::connect(&BusTarget::User).await?;
/// ensure_images_via(cfg, services, &PodmanRunner::Transient(sd)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub enum PodmanRunner {
    /// As a child process of this one: the CLI run by an operator (root or
    /// the platform user, in an ordinary session).
    #[default]
    Direct,
    /// As transient units (`Type=oneshot`) of the manager this connection
    /// talks to, outside this process's own sandbox: for the daemon. Connect
    /// it to the platform user's manager in rootless mode
    /// (`BusTarget::User`, as that user) and to the system manager in
    /// rootful mode (as root).
    Transient(Systemd),
}

impl PodmanRunner {
    /// `directly` or `as transient units of the manager at ADDRESS`, for messages.
    pub fn describe(&self) -> String {
        match self {
            PodmanRunner::Direct => "directly".to_owned(),
            PodmanRunner::Transient(sd) => {
                format!("as transient units of the manager at {}", sd.address())
            }
        }
    }
}

/// What one podman command did (bounded output).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodmanOutput {
    /// Its exit status; `None` when it did not exit (killed by a signal).
    pub code: Option<i32>,
    /// How it ended, for messages: `exit status 125`, `killed by SIGKILL`.
    pub status: String,
    /// Its output, lossy UTF-8, trimmed, at most 1 MiB (saying so when
    /// more was dropped): stderr when run directly; stdout and stderr
    /// interleaved when run as a transient unit.
    pub output: String,
    /// The transient unit it ran in, if any (gone by now; its journal stays).
    pub unit: Option<String>,
}

impl PodmanOutput {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The output, or the status when there is none; plus the unit.
    pub fn detail(&self) -> String {
        let text = if self.output.is_empty() {
            self.status.clone()
        } else if self.code != Some(0) {
            format!("{} ({})", self.output, self.status)
        } else {
            self.output.clone()
        };
        match &self.unit {
            Some(unit) => format!("{text} [transient unit {unit}]"),
            None => text,
        }
    }
}

/// What podman's stdin is.
pub(crate) enum Input {
    /// `/dev/null`.
    Null,
    /// This open file (e.g. a verified archive for `podman load`).
    File(File),
}

/// How to invoke podman for the configured platform.
#[derive(Debug, Clone)]
pub(crate) struct Podman {
    bin: PathBuf,
    /// Run as this user (rootless platform, we are root): through `runuser`
    /// directly, `User=` in a transient unit.
    run_as: Option<PlatformUser>,
    /// The platform user (rootless), for messages and the environment.
    user: Option<PlatformUser>,
    /// Where podman runs.
    runner: PodmanRunner,
}

impl Podman {
    /// The podman of `cfg`'s platform, for the current process's user, run
    /// as our child process.
    pub(crate) fn for_config(cfg: &Config) -> Result<Podman, ImagesError> {
        Podman::for_config_via(cfg, &PodmanRunner::Direct)
    }

    /// The podman of `cfg`'s platform, for the current process's user, run
    /// by `runner`.
    pub(crate) fn for_config_via(
        cfg: &Config,
        runner: &PodmanRunner,
    ) -> Result<Podman, ImagesError> {
        let euid = nix::unistd::geteuid();
        let bin = cfg.platform.podman.clone();
        let runner = runner.clone();
        match (cfg.platform.mode, &cfg.platform.user) {
            (Mode::Rootful, _) => {
                if !euid.is_root() {
                    return Err(ImagesError::WrongUser(
                        "rootful platform: images live in root's podman storage; run this as root"
                            .into(),
                    ));
                }
                Ok(Podman {
                    bin,
                    run_as: None,
                    user: None,
                    runner,
                })
            }
            (Mode::Rootless, Some(u)) => {
                if euid.is_root() {
                    Ok(Podman {
                        bin,
                        run_as: Some(u.clone()),
                        user: Some(u.clone()),
                        runner,
                    })
                } else if euid.as_raw() == u.uid {
                    Ok(Podman {
                        bin,
                        run_as: None,
                        user: Some(u.clone()),
                        runner,
                    })
                } else {
                    Err(ImagesError::WrongUser(format!(
                        "rootless platform: images live in {}'s podman storage; run this as {} or root (uid {} is neither)",
                        u.name,
                        u.name,
                        euid.as_raw()
                    )))
                }
            }
            (Mode::Rootless, None) => Err(ImagesError::WrongUser(
                "rootless platform without a user in [platform]".into(),
            )),
        }
    }

    /// The uid of the storage's owner when it is not root's (rootless).
    pub(crate) fn storage_owner(&self) -> Option<u32> {
        self.user.as_ref().map(|u| u.uid)
    }

    /// `mcp's podman storage` / `root's podman storage`.
    pub(crate) fn storage_name(&self) -> String {
        match &self.user {
            Some(u) => format!("{}'s podman storage", u.name),
            None => "root's podman storage".into(),
        }
    }

    /// The command to run on another machine's side of `ssh` to load into this storage.
    pub(crate) fn remote_load(&self) -> String {
        match &self.user {
            Some(u) => format!("sudo -u {} podman load", u.name),
            None => "sudo podman load".into(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match (&self.run_as, &self.user) {
            (Some(u), _) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &u.name, "--", "env"])
                    .arg(format!("XDG_RUNTIME_DIR=/run/user/{}", u.uid))
                    .arg(format!("HOME={}", u.home.display()))
                    .arg(&self.bin);
                c
            }
            (None, Some(u)) => {
                let mut c = Command::new(&self.bin);
                if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
                    c.env("XDG_RUNTIME_DIR", format!("/run/user/{}", u.uid));
                }
                c
            }
            (None, None) => Command::new(&self.bin),
        };
        cmd.args(args).current_dir("/").kill_on_drop(true);
        cmd
    }

    /// The transient unit for `podman ARGS`: the platform user's
    /// environment (rootless), `User=` when we are root on a rootless
    /// platform (system manager), root's `HOME` (rootful).
    fn transient_spec(&self, args: &[&str], timeout: Duration) -> TransientSpec {
        let mut argv = vec![self.bin.to_string_lossy().into_owned()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let mut spec = TransientSpec::new(argv)
            .timeout(timeout)
            .output_limit(DEFAULT_OUTPUT_LIMIT)
            .name_prefix("mcrecover-podman");
        match &self.user {
            Some(u) => {
                spec = spec
                    .env("XDG_RUNTIME_DIR", format!("/run/user/{}", u.uid))
                    .env("HOME", u.home.display().to_string());
            }
            None => {
                let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0))
                    .ok()
                    .flatten()
                    .map_or_else(|| PathBuf::from("/root"), |u| u.dir);
                spec = spec.env("HOME", home.display().to_string());
            }
        }
        if let Some(u) = &self.run_as {
            spec = spec.user(u.name.clone());
        }
        spec
    }

    /// Runs `podman ARGS` where the runner says, within `timeout`.
    ///
    /// `Err(Spawn)`: podman could not be started at all (no such program,
    /// or the transient unit refused or lost). `Err(Podman)` with
    /// `action`/`image`: it did not finish within `timeout`. Otherwise its
    /// exit status and output, whatever they are.
    pub(crate) async fn run(
        &self,
        args: &[&str],
        stdin: Input,
        timeout: Duration,
        action: &'static str,
        image: &str,
    ) -> Result<PodmanOutput, ImagesError> {
        let timed_out = || ImagesError::Podman {
            action,
            image: image.to_owned(),
            detail: format!(
                "no answer within {} s ({})",
                timeout.as_secs(),
                self.runner.describe()
            ),
        };
        match &self.runner {
            PodmanRunner::Direct => {
                match tokio::time::timeout(timeout, self.run_direct(args, stdin, None)).await {
                    Ok(r) => r,
                    // kill_on_drop: the child is killed with the dropped future.
                    Err(_) => Err(timed_out()),
                }
            }
            PodmanRunner::Transient(sd) => {
                let mut spec = self.transient_spec(args, timeout);
                if let Input::File(f) = stdin {
                    spec = spec.stdin(f);
                }
                match sd.run_transient(&spec).await {
                    Ok(out) => Ok(PodmanOutput {
                        code: out.code(),
                        status: out.exit.to_string(),
                        output: out.text(),
                        unit: Some(out.unit),
                    }),
                    Err(TransientError::Timeout { .. }) => Err(timed_out()),
                    Err(e) => Err(ImagesError::Spawn {
                        program: self.bin.clone(),
                        source: std::io::Error::other(e),
                    }),
                }
            }
        }
    }

    /// Runs `podman ARGS` for what it prints (queries such as `ps` or
    /// `images` with `--format`), where the runner says, within `timeout`.
    /// Returns the run, its standard output (lossy UTF-8, at most
    /// `QUERY_OUTPUT_LIMIT` bytes kept) and whether that output was cut:
    /// run directly, stdout alone (stderr is in the run's `output`); as a
    /// transient unit, stdout and stderr interleaved (the unit's output, at
    /// most 1 MiB), so callers should mark the lines they parse (e.g. a
    /// fixed prefix in the `--format` template).
    pub(crate) async fn query(
        &self,
        args: &[&str],
        timeout: Duration,
        what: &str,
    ) -> Result<(PodmanOutput, String, bool), ImagesError> {
        if let PodmanRunner::Transient(_) = self.runner {
            let out = self.run(args, Input::Null, timeout, "query", what).await?;
            let stdout = out.output.clone();
            // TransientOutput::text() ends a cut output with this note.
            let truncated = stdout.contains(" [output truncated: ");
            return Ok((out, stdout, truncated));
        }
        let spawn_err = |source| ImagesError::Spawn {
            program: self.bin.clone(),
            source,
        };
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let work = async {
            let read_out = async {
                match stdout {
                    Some(s) => read_bounded(s, QUERY_OUTPUT_LIMIT).await,
                    None => Ok((Vec::new(), 0)),
                }
            };
            let read_err = async {
                match stderr {
                    Some(s) => read_bounded(s, DEFAULT_OUTPUT_LIMIT).await,
                    None => Ok((Vec::new(), 0)),
                }
            };
            tokio::join!(read_out, read_err, child.wait())
        };
        let Ok((out, err, status)) = tokio::time::timeout(timeout, work).await else {
            // kill_on_drop: the child is killed with the dropped future.
            return Err(ImagesError::Podman {
                action: "query",
                image: what.to_owned(),
                detail: format!(
                    "no answer within {} s ({})",
                    timeout.as_secs(),
                    self.runner.describe()
                ),
            });
        };
        let status = status.map_err(spawn_err)?;
        let (out, dropped) =
            out.unwrap_or_else(|e| (format!("(reading stdout: {e})").into_bytes(), 0));
        let (err, _) = err.unwrap_or_else(|e| (format!("(reading stderr: {e})").into_bytes(), 0));
        let mut stdout = String::from_utf8_lossy(&out).into_owned();
        if dropped > 0 {
            stdout.push_str(&format!(
                "\n[output truncated: {dropped} more bytes not kept]"
            ));
        }
        Ok((
            PodmanOutput {
                code: status.code(),
                status: status.to_string(),
                output: String::from_utf8_lossy(&err).trim().to_owned(),
                unit: None,
            },
            stdout,
            dropped > 0,
        ))
    }

    /// podman as our child: stdin as given, stdout `stdout` when given (else
    /// read and dropped), stderr kept (bounded).
    async fn run_direct(
        &self,
        args: &[&str],
        stdin: Input,
        stdout: Option<OwnedFd>,
    ) -> Result<PodmanOutput, ImagesError> {
        let spawn_err = |source| ImagesError::Spawn {
            program: self.bin.clone(),
            source,
        };
        let mut cmd = self.command(args);
        let stdin = match stdin {
            Input::Null => Stdio::null(),
            Input::File(f) => Stdio::from(f),
        };
        let stdout = stdout.map_or_else(Stdio::piped, Stdio::from);
        cmd.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
        let spawned = cmd.spawn();
        // Our copies of the child's stdio (e.g. a pipe's write end) are
        // closed now, so a reader sees the end when the child exits.
        drop(cmd);
        let mut child = spawned.map_err(spawn_err)?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let drain_out = async {
            match stdout {
                // Read (bounded) and dropped: podman's stdout is not needed.
                Some(s) => read_bounded(s, 0).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let read_err = async {
            match stderr {
                Some(s) => read_bounded(s, DEFAULT_OUTPUT_LIMIT).await,
                None => Ok((Vec::new(), 0)),
            }
        };
        let (out, err, status) = tokio::join!(drain_out, read_err, child.wait());
        let status = status.map_err(spawn_err)?;
        if let Err(e) = out {
            tracing::debug!(error = %e, "reading podman's stdout");
        }
        let (stderr, dropped) =
            err.unwrap_or_else(|e| (format!("(reading stderr: {e})").into_bytes(), 0));
        let mut output = String::from_utf8_lossy(&stderr).trim().to_owned();
        if dropped > 0 {
            output.push_str(&format!(
                " [output truncated: {dropped} more bytes not kept]"
            ));
        }
        Ok(PodmanOutput {
            code: status.code(),
            status: status.to_string(),
            output,
            unit: None,
        })
    }

    /// `podman image exists IMAGE`: `Ok(true)` present, `Ok(false)` absent
    /// (podman answered: exit status 1 and no message but warnings). Anything else
    /// is an `Err` (`Podman` or `Spawn`): podman could not tell, e.g. it
    /// could not create its user namespace, its storage was read-only, or
    /// it could not be started. Never "absent" on doubt.
    pub(crate) async fn exists(&self, image: &str) -> Result<bool, ImagesError> {
        let out = self
            .run(
                &["image", "exists", image],
                Input::Null,
                QUERY_TIMEOUT,
                "image exists",
                image,
            )
            .await?;
        match out.code {
            Some(0) => Ok(true),
            Some(1) if quiet(&out.output) => Ok(false),
            _ => Err(ImagesError::Podman {
                action: "image exists",
                image: image.to_string(),
                detail: out.detail(),
            }),
        }
    }

    /// `podman load` with the archive of `image` on stdin (the open file
    /// itself, so the archive's path need not be visible to podman).
    pub(crate) async fn load(&self, image: &str, archive: File) -> Result<(), ImagesError> {
        let out = self
            .run(
                &["load", "-q"],
                Input::File(archive),
                TRANSFER_TIMEOUT,
                "load",
                image,
            )
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(ImagesError::Podman {
                action: "load",
                image: image.to_string(),
                detail: out.detail(),
            })
        }
    }

    /// `podman save --format docker-archive IMAGE`, run directly, with its
    /// stdout a pipe this process reads: every byte is hashed and written to
    /// `out` (a new file of ours that podman never sees; `out_path` names it
    /// in messages), which is fsynced at the end. Returns the SHA-256, the
    /// size and `out`. (podman run as the platform user gets only the pipe:
    /// no file or path of the archive directory is handed to that user.)
    pub(crate) async fn save_to(
        &self,
        image: &str,
        out: File,
        out_path: &Path,
    ) -> Result<(String, u64, File), ImagesError> {
        if let PodmanRunner::Transient(_) = self.runner {
            return Err(ImagesError::Spawn {
                program: self.bin.clone(),
                source: std::io::Error::other(
                    "podman save is run directly only (not as a transient unit)",
                ),
            });
        }
        let (rd, wr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ImagesError::Spawn {
                program: self.bin.clone(),
                source: e.into(),
            })?;
        let copy = tokio::task::spawn_blocking(move || copy_hashing(File::from(rd), out));
        let args = ["save", "-q", "--format", "docker-archive", image];
        let run = tokio::time::timeout(
            TRANSFER_TIMEOUT,
            self.run_direct(&args, Input::Null, Some(wr)),
        )
        .await;
        let res = match run {
            // The copy ends by itself once the pipe is closed.
            Err(_) => {
                return Err(ImagesError::Podman {
                    action: "save",
                    image: image.to_owned(),
                    detail: format!(
                        "no answer within {} s ({})",
                        TRANSFER_TIMEOUT.as_secs(),
                        self.runner.describe()
                    ),
                })
            }
            Ok(r) => r?,
        };
        let copied = copy
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        if !res.success() {
            return Err(ImagesError::Podman {
                action: "save",
                image: image.to_string(),
                detail: res.detail(),
            });
        }
        copied.map_err(|source| ImagesError::Io {
            path: out_path.to_path_buf(),
            source,
        })
    }

    /// `podman pull IMAGE`.
    pub(crate) async fn pull(&self, image: &str) -> Result<(), ImagesError> {
        let out = self
            .run(
                &["pull", "-q", image],
                Input::Null,
                TRANSFER_TIMEOUT,
                "pull",
                image,
            )
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(ImagesError::Podman {
                action: "pull",
                image: image.to_string(),
                detail: out.detail(),
            })
        }
    }
}

/// Copies everything from `from` to `out`, hashing it (SHA-256), then
/// fsyncs `out`. Returns the lower-case hex digest, the size and `out`.
fn copy_hashing(mut from: File, mut out: File) -> std::io::Result<(String, u64, File)> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        ctx.update(chunk);
        out.write_all(chunk)?;
        size += n as u64;
    }
    out.sync_all()?;
    let hex = super::archive::hex_digest(ctx);
    Ok((hex, size, out))
}

/// Whether podman's output is empty or warnings/notices only (logrus
/// `WARN[...]`/`INFO[...]`, `level=warning`/`level=info`). podman exits 1
/// both for "no such image" (silently) and for failures of its own setup
/// (e.g. `Failed to obtain podman configuration: runroot must be set`,
/// `cannot re-exec process`), and `runuser`/`env` exit 1 when they cannot
/// run it: only a silent exit 1 is an answer.
pub(crate) fn quiet(output: &str) -> bool {
    output.lines().map(str::trim).all(|l| {
        l.is_empty()
            || l.starts_with("WARN[")
            || l.starts_with("INFO[")
            || l.contains("level=warning")
            || l.contains("level=info")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_silent_exit_is_an_answer() {
        assert!(quiet(""));
        assert!(quiet("\n"));
        assert!(quiet(
            "WARN[0000] Failed to add pause process to systemd sandbox cgroup"
        ));
        assert!(quiet(
            "time=\"2026-01-01T00:00:00Z\" level=warning msg=\"x\""
        ));
        assert!(!quiet(
            "Error: cannot set user namespace: operation not permitted"
        ));
        assert!(!quiet("ERRO[0000] cannot re-exec process"));
        assert!(!quiet(
            "Failed to obtain podman configuration: runroot must be set"
        ));
        assert!(!quiet("runuser: user mcp does not exist"));
        // Rootless podman inside the daemon's hardened unit (issue 11): exit 1.
        assert!(!quiet(
            "Failed to set rlimits: setting new rlimits: operation not permitted\n\
             cannot set user namespace"
        ));
        assert!(!quiet("WARN[0000] x\nsomething else"));
    }

    #[test]
    fn output_detail_names_status_and_unit() {
        let o = PodmanOutput {
            code: Some(125),
            status: "exit status 125".into(),
            output: "Error: read-only file system".into(),
            unit: Some("mcrecover-podman-1-0.service".into()),
        };
        assert_eq!(
            o.detail(),
            "Error: read-only file system (exit status 125) [transient unit mcrecover-podman-1-0.service]"
        );
        let o = PodmanOutput {
            code: Some(2),
            status: "exit status: 2".into(),
            output: String::new(),
            unit: None,
        };
        assert_eq!(o.detail(), "exit status: 2");
    }
}
