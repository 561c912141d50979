//! Container images for sandboxes, made locally (no registry is reachable): a busybox-static rootfs,
//! optionally plus the stand-in binary and the shared libraries `ldd` lists, imported under any
//! names with an entrypoint and environment, saved once per content into one multi-image
//! docker-archive under `<target>/testbed/images/`, and loaded into each sandbox's storage.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::host::{
    check_output, host_command, host_output, testbed_dir, workspace_root, STANDIN_ENV,
};
use crate::TestbedError;

/// Registry prefix of every image of the example platform.
pub const METACIRCULAR_REGISTRY: &str = "mcr.svc.mcp.metacircular.net:8443";

/// How the stand-in plays one service of the example platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandinService {
    /// Service (container) name, e.g. `mcr-api`.
    pub service: &'static str,
    /// Image name and tag without the registry prefix, e.g. `mcr:v1.2.1`.
    pub image: &'static str,
    /// The service's volume on the host and in the container (`-v V:V`), e.g. `/srv/mcr`.
    pub volume: &'static str,
    /// `STANDIN_DIR`: where the stand-in reads `fault` / `ready-delay-ms` and writes `.standin/ready`,
    /// and where the testbed puts `.standin/ca.pem` + `.standin/ca.key`. Equal to `volume`, except for
    /// the two web components that share a volume with their API (`/srv/mcr/web`,
    /// `/srv/metacrypt/web`), so faults and ready files of the two stay separate.
    pub standin_dir: &'static str,
    /// `STANDIN_LISTEN`: comma-separated `proto:port` the stand-in serves inside the container
    /// (proto one of `dns` (udp+tcp), `http`, `https`, `tcp`, `grpcs`).
    pub listen: &'static str,
}

impl StandinService {
    /// The full image reference, e.g. `mcr.svc.mcp.metacircular.net:8443/mcr:v1.2.1`.
    pub fn reference(&self) -> String {
        format!("{METACIRCULAR_REGISTRY}/{}", self.image)
    }

    /// `standin_dir` relative to `/srv` (what [`crate::SandboxOptions::srv_dirs`] takes).
    pub fn srv_dir(&self) -> &'static str {
        self.standin_dir.trim_start_matches("/srv/")
    }
}

/// The example platform's services (examples/metacircular.toml), as the stand-in plays them.
pub const METACIRCULAR_SERVICES: &[StandinService] = &[
    svc(
        "mcns",
        "mcns:v1.2.0",
        "/srv/mcns",
        "/srv/mcns",
        "dns:53,https:8443",
    ),
    svc(
        "mc-proxy",
        "mc-proxy:v1.2.2",
        "/srv/mc-proxy",
        "/srv/mc-proxy",
        "https:443",
    ),
    svc(
        "mcr-api",
        "mcr:v1.2.1",
        "/srv/mcr",
        "/srv/mcr",
        "https:8443,tcp:9443",
    ),
    svc(
        "mcr-web",
        "mcr-web:v1.3.2",
        "/srv/mcr",
        "/srv/mcr/web",
        "http:8080",
    ),
    svc(
        "metacrypt-api",
        "metacrypt:v1.3.1",
        "/srv/metacrypt",
        "/srv/metacrypt",
        "https:8443,tcp:9443",
    ),
    svc(
        "metacrypt-web",
        "metacrypt-web:v1.4.1",
        "/srv/metacrypt",
        "/srv/metacrypt/web",
        "http:8080",
    ),
    svc(
        "mcp-master",
        "mcp-master:v0.10.3",
        "/srv/mcp-master",
        "/srv/mcp-master",
        "grpcs:9555",
    ),
    svc("mcq", "mcq:v0.4.2", "/srv/mcq", "/srv/mcq", "https:8080"),
    svc(
        "mcdoc",
        "mcdoc:v0.1.0",
        "/srv/mcdoc",
        "/srv/mcdoc",
        "http:8080",
    ),
    svc(
        "mcat",
        "mcat:v1.2.0",
        "/srv/mcat",
        "/srv/mcat",
        "https:8443",
    ),
    svc("kls", "kls:v0.2.0", "/srv/kls", "/srv/kls", "http:8080"),
    svc(
        "sgardd",
        "sgardd:v3.2.0",
        "/srv/sgard",
        "/srv/sgard",
        "grpcs:9473",
    ),
];

/// MCIAS, the platform's identity service, as the stand-in plays it on node `svc` (it is not part
/// of rift's platform: `examples/two-nodes/svc.toml`).
pub const MCIAS_SERVICE: StandinService = svc(
    "mcias",
    "mcias:v1.0.0",
    "/srv/mcias",
    "/srv/mcias",
    "https:8443",
);

const fn svc(
    service: &'static str,
    image: &'static str,
    volume: &'static str,
    standin_dir: &'static str,
    listen: &'static str,
) -> StandinService {
    StandinService {
        service,
        image,
        volume,
        standin_dir,
        listen,
    }
}

/// Looks up an example service by name.
pub fn metacircular_service(name: &str) -> Option<&'static StandinService> {
    METACIRCULAR_SERVICES.iter().find(|s| s.service == name)
}

/// Every `/srv` directory the example's stand-ins need (relative to `/srv`, e.g. `mcr`, `mcr/web`).
pub fn metacircular_srv_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    for s in METACIRCULAR_SERVICES {
        for d in [s.volume.trim_start_matches("/srv/"), s.srv_dir()] {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_string());
            }
        }
    }
    dirs
}

/// One image to make: a reference plus image config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageSpec {
    /// Full reference, `name:tag`.
    pub reference: String,
    /// `ENTRYPOINT` (exec form).
    pub entrypoint: Vec<String>,
    /// `ENV` entries.
    pub env: Vec<(String, String)>,
}

impl ImageSpec {
    /// An image running busybox `httpd` in the foreground on `port`, serving `/www` (whose
    /// `index.html` is `mcrecover testbed\n`). Note: busybox httpd ignores SIGTERM (stops take
    /// podman's stop timeout); fine for tests that never stop it gracefully.
    pub fn busybox_httpd(reference: &str, port: u16) -> Self {
        Self {
            reference: reference.to_string(),
            entrypoint: [
                "/bin/busybox",
                "httpd",
                "-f",
                "-p",
                &port.to_string(),
                "-h",
                "/www",
            ]
            .map(String::from)
            .to_vec(),
            env: Vec::new(),
        }
    }
}

/// A set of images sharing one rootfs (busybox-static, plus the stand-in binary if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// The images.
    pub images: Vec<ImageSpec>,
    /// Stand-in binary copied to `/standin` in the rootfs, with its shared libraries.
    pub standin: Option<PathBuf>,
}

/// Content of `/www/index.html` in every testbed image.
pub const INDEX_HTML: &str = "mcrecover testbed\n";

impl ImageSet {
    /// Images with only busybox in the rootfs.
    pub fn busybox(images: Vec<ImageSpec>) -> Self {
        Self {
            images,
            standin: None,
        }
    }

    /// The example platform's twelve images (exact names), each `ENTRYPOINT ["/standin"]` with
    /// `STANDIN_NAME`, `STANDIN_DIR`, `STANDIN_LISTEN` per [`METACIRCULAR_SERVICES`], using the
    /// stand-in from [`standin_binary`] (env `MCRECOVER_STANDIN` or `cargo build --release -p
    /// mcrecover-standin`).
    pub fn metacircular() -> Result<Self, TestbedError> {
        Ok(Self::metacircular_with(standin_binary()?))
    }

    /// [`ImageSet::metacircular`] with an explicit stand-in binary.
    pub fn metacircular_with(standin: PathBuf) -> Self {
        Self::standins(METACIRCULAR_SERVICES, standin)
    }

    /// One stand-in image per service of `services` (exact names), as
    /// [`ImageSet::metacircular`] makes them: e.g. `&[MCIAS_SERVICE]` for node `svc`.
    pub fn standins(services: &[StandinService], standin: PathBuf) -> Self {
        let images = services
            .iter()
            .map(|s| ImageSpec {
                reference: s.reference(),
                entrypoint: vec!["/standin".to_string()],
                env: vec![
                    ("STANDIN_NAME".into(), s.service.into()),
                    ("STANDIN_DIR".into(), s.standin_dir.into()),
                    ("STANDIN_LISTEN".into(), s.listen.into()),
                ],
            })
            .collect();
        Self {
            images,
            standin: Some(standin),
        }
    }

    /// The image references.
    pub fn references(&self) -> Vec<&str> {
        self.images.iter().map(|i| i.reference.as_str()).collect()
    }

    /// The multi-image docker-archive holding every image of the set, built on first use and cached
    /// under `<target>/testbed/images/<content hash>.tar` (safe across threads and processes).
    pub fn archive(&self) -> Result<PathBuf, TestbedError> {
        static BUILD: Mutex<()> = Mutex::new(());
        let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
        let key = self.cache_key()?;
        let dir = testbed_dir().join("images");
        let archive = dir.join(format!("{key:016x}.tar"));
        if archive.is_file() {
            return Ok(archive);
        }
        std::fs::create_dir_all(&dir).map_err(|e| TestbedError::io("create dir", &dir, e))?;
        let work = dir.join(format!("build-{key:016x}-{}", std::process::id()));
        let result = self.build(&work, &archive);
        let _ = std::fs::remove_dir_all(&work);
        result.map(|()| archive)
    }

    fn cache_key(&self) -> Result<u64, TestbedError> {
        let mut h = DefaultHasher::new();
        self.images.hash(&mut h);
        INDEX_HTML.hash(&mut h);
        for file in [Some(Path::new("/bin/busybox")), self.standin.as_deref()]
            .into_iter()
            .flatten()
        {
            let bytes = std::fs::read(file).map_err(|e| TestbedError::io("read", file, e))?;
            bytes.hash(&mut h);
        }
        Ok(h.finish())
    }

    fn build(&self, work: &Path, archive: &Path) -> Result<(), TestbedError> {
        let _ = std::fs::remove_dir_all(work);
        let rootfs = work.join("rootfs");
        make_rootfs(&rootfs, self.standin.as_deref())?;
        let tar = work.join("rootfs.tar");
        host_command(&[
            "tar",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "-C",
            &rootfs.to_string_lossy(),
            "-cf",
            &tar.to_string_lossy(),
            ".",
        ])?;
        let root = work.join("storage").to_string_lossy().into_owned();
        // podman refuses a runroot longer than 50 characters: keep it short, outside `work`.
        let runroot_dir = std::env::temp_dir().join(format!("mcr-tb-{}", std::process::id()));
        let runroot = runroot_dir.to_string_lossy().into_owned();
        let podman = |args: &[&str]| -> Result<String, TestbedError> {
            let mut argv = vec![
                "podman",
                "--root",
                &root,
                "--runroot",
                &runroot,
                "--storage-driver",
                "vfs",
                "--events-backend",
                "none",
                "--cgroup-manager",
                "cgroupfs",
            ];
            argv.extend_from_slice(args);
            host_output(&argv)
        };
        let tar_s = tar.to_string_lossy().into_owned();
        for image in &self.images {
            let entrypoint =
                serde_json::to_string(&image.entrypoint).map_err(|source| TestbedError::State {
                    path: tar.clone(),
                    source,
                })?;
            let mut changes = vec![format!("ENTRYPOINT {entrypoint}")];
            changes.extend(image.env.iter().map(|(k, v)| format!("ENV {k}={v}")));
            let mut args = vec!["import", "-q"];
            for c in &changes {
                args.push("--change");
                args.push(c);
            }
            args.push(&tar_s);
            args.push(&image.reference);
            podman(&args)?;
        }
        let tmp = archive.with_extension(format!("tmp{}", std::process::id()));
        let tmp_s = tmp.to_string_lossy().into_owned();
        let mut args = vec![
            "save",
            "-q",
            "-m",
            "--format",
            "docker-archive",
            "-o",
            &tmp_s,
        ];
        args.extend(self.references());
        let saved = podman(&args);
        let _ = std::fs::remove_dir_all(&runroot_dir);
        saved?;
        std::fs::rename(&tmp, archive).map_err(|e| TestbedError::io("rename", &tmp, e))
    }
}

fn write(path: &Path, contents: &[u8]) -> Result<(), TestbedError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| TestbedError::io("create dir", parent, e))?;
    }
    std::fs::write(path, contents).map_err(|e| TestbedError::io("write", path, e))
}

fn copy_exec(from: &Path, to: &Path) -> Result<(), TestbedError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| TestbedError::io("create dir", parent, e))?;
    }
    std::fs::copy(from, to).map_err(|e| TestbedError::io("copy", from, e))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| TestbedError::io("chmod", to, e))
}

fn make_rootfs(rootfs: &Path, standin: Option<&Path>) -> Result<(), TestbedError> {
    use std::os::unix::fs::PermissionsExt;
    for d in [
        "bin", "etc", "root", "srv", "proc", "sys", "dev", "run", "tmp", "www",
    ] {
        let p = rootfs.join(d);
        std::fs::create_dir_all(&p).map_err(|e| TestbedError::io("create dir", &p, e))?;
    }
    let tmp = rootfs.join("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| TestbedError::io("chmod", &tmp, e))?;
    copy_exec(Path::new("/bin/busybox"), &rootfs.join("bin/busybox"))?;
    for applet in host_output(&["/bin/busybox", "--list"])?.lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = rootfs.join("bin").join(applet);
        std::os::unix::fs::symlink("busybox", &link)
            .map_err(|e| TestbedError::io("symlink", &link, e))?;
    }
    write(
        &rootfs.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/sh\n",
    )?;
    write(&rootfs.join("etc/group"), b"root:x:0:\n")?;
    write(&rootfs.join("www/index.html"), INDEX_HTML.as_bytes())?;
    if let Some(bin) = standin {
        copy_exec(bin, &rootfs.join("standin"))?;
        for lib in shared_libraries(bin)? {
            let rel = lib.strip_prefix("/").unwrap_or(&lib);
            copy_exec(&lib, &rootfs.join(rel))?;
        }
    }
    Ok(())
}

/// The absolute paths `ldd` lists for `binary` (empty for a static binary).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, TestbedError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| TestbedError::Spawn {
            program: "ldd".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        check_output(format!("ldd {}", binary.display()), &out)?;
    }
    Ok(text
        .split_whitespace()
        .filter(|t| t.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

/// The stand-in binary: env `MCRECOVER_STANDIN`, else `cargo build --release -p mcrecover-standin`
/// (a no-op when up to date) and `<target>/release/standin`.
pub fn standin_binary() -> Result<PathBuf, TestbedError> {
    if let Some(p) = std::env::var_os(STANDIN_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(TestbedError::Prerequisite(format!(
                "{STANDIN_ENV}={} is not a file",
                p.display()
            )))
        };
    }
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["build", "--release", "-p", "mcrecover-standin"])
        .current_dir(workspace_root())
        .output()
        .map_err(|source| TestbedError::Spawn {
            program: cargo.clone(),
            source,
        })?;
    check_output(
        format!("{cargo} build --release -p mcrecover-standin"),
        &out,
    )?;
    let bin = crate::host::target_dir().join("release/standin");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(TestbedError::Sandbox(format!(
            "cargo built the stand-in but {} is missing",
            bin.display()
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metacircular_table_is_complete() {
        assert_eq!(METACIRCULAR_SERVICES.len(), 12);
        let set = ImageSet::metacircular_with(PathBuf::from("/nonexistent"));
        assert!(set
            .references()
            .contains(&"mcr.svc.mcp.metacircular.net:8443/mcr-web:v1.3.2"));
        let dirs = metacircular_srv_dirs();
        for d in [
            "mcns",
            "mcr",
            "mcr/web",
            "metacrypt/web",
            "sgard",
            "mcp-master",
        ] {
            assert!(dirs.iter().any(|x| x == d), "{d} missing from {dirs:?}");
        }
        assert_eq!(metacircular_service("mcq").unwrap().listen, "https:8080");
    }

    #[test]
    fn ldd_of_static_busybox_is_empty() {
        if Path::new("/bin/busybox").exists() {
            assert!(shared_libraries(Path::new("/bin/busybox"))
                .unwrap()
                .is_empty());
        }
    }
}
