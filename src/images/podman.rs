//! Running podman against the RIGHT image storage: root's in rootful mode;
//! the platform user's in rootless mode (through `runuser` with that user's
//! `XDG_RUNTIME_DIR` and `HOME` when we are root, directly when we are that
//! user). Archives are opened by us and streamed through stdin/stdout, so the
//! platform user never needs access to the archive directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::ImagesError;
use crate::config::{Config, Mode, PlatformUser};

/// How to invoke podman for the configured platform.
#[derive(Debug, Clone)]
pub(crate) struct Podman {
    bin: PathBuf,
    /// Run through `runuser` as this user (rootless platform, we are root).
    run_as: Option<PlatformUser>,
    /// The platform user (rootless), for messages and the environment.
    user: Option<PlatformUser>,
}

impl Podman {
    /// The podman of `cfg`'s platform, for the current process's user.
    pub(crate) fn for_config(cfg: &Config) -> Result<Podman, ImagesError> {
        let euid = nix::unistd::geteuid();
        let bin = cfg.platform.podman.clone();
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
                })
            }
            (Mode::Rootless, Some(u)) => {
                if euid.is_root() {
                    Ok(Podman {
                        bin,
                        run_as: Some(u.clone()),
                        user: Some(u.clone()),
                    })
                } else if euid.as_raw() == u.uid {
                    Ok(Podman {
                        bin,
                        run_as: None,
                        user: Some(u.clone()),
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

    async fn run(
        &self,
        args: &[&str],
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<std::process::Output, ImagesError> {
        let mut cmd = self.command(args);
        cmd.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
        cmd.output().await.map_err(|source| ImagesError::Spawn {
            program: self.bin.clone(),
            source,
        })
    }

    /// `podman image exists IMAGE`.
    pub(crate) async fn exists(&self, image: &str) -> Result<bool, ImagesError> {
        let out = self
            .run(&["image", "exists", image], Stdio::null(), Stdio::piped())
            .await?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(ImagesError::Podman {
                action: "image exists",
                image: image.to_string(),
                detail: stderr_of(&out),
            }),
        }
    }

    /// `podman load` with the archive of `image` on stdin.
    pub(crate) async fn load(&self, image: &str, archive: File) -> Result<(), ImagesError> {
        let out = self
            .run(&["load", "-q"], Stdio::from(archive), Stdio::piped())
            .await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ImagesError::Podman {
                action: "load",
                image: image.to_string(),
                detail: stderr_of(&out),
            })
        }
    }

    /// `podman save --format docker-archive -o PATH IMAGE`. `path` must be an
    /// empty file we created: it is handed to the platform user for the save
    /// (podman writes it as that user) and back to root afterwards. (Writing
    /// to a stdout we opened gives an empty archive under rootless podman.)
    pub(crate) async fn save(&self, image: &str, path: &Path) -> Result<(), ImagesError> {
        let chown = |uid: u32, gid: u32| {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| ImagesError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        if let Some(u) = &self.run_as {
            chown(u.uid, u.gid)?;
        }
        let p = path.to_string_lossy();
        let res = self
            .run(
                &["save", "-q", "--format", "docker-archive", "-o", &p, image],
                Stdio::null(),
                Stdio::piped(),
            )
            .await?;
        if self.run_as.is_some() {
            chown(0, 0)?;
        }
        if res.status.success() {
            Ok(())
        } else {
            Err(ImagesError::Podman {
                action: "save",
                image: image.to_string(),
                detail: stderr_of(&res),
            })
        }
    }

    /// `podman pull IMAGE`.
    pub(crate) async fn pull(&self, image: &str) -> Result<(), ImagesError> {
        let out = self
            .run(&["pull", "-q", image], Stdio::null(), Stdio::piped())
            .await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ImagesError::Podman {
                action: "pull",
                image: image.to_string(),
                detail: stderr_of(&out),
            })
        }
    }
}

fn stderr_of(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if text.is_empty() {
        format!("exit status {}", out.status)
    } else {
        text
    }
}
