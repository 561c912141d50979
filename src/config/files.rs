//! Files the configuration refers to (CA bundles, programs) and what
//! `check-config` finds out about them on this machine.
//!
//! Loading a configuration never touches these files ([`super::parse`] is a
//! pure function of the text): the configuration may be validated where the
//! files do not exist yet, e.g. when NixOS builds the units
//! (`mcrecover check-config` in the build sandbox). [`inspect`] looks at them
//! and sorts what it finds by how certain it is that the configuration is
//! wrong:
//!
//! - **warning**: the file does not exist, or cannot be read by this user
//!   (it may exist, or be readable, where and as whom mcrecover runs);
//! - **error**: the file exists but cannot be what the key needs: not a
//!   regular file, a CA bundle without a usable PEM certificate (e.g. a
//!   private key), too large, a program that is not executable.
//!
//! `check-config --strict` counts warnings as errors (for the machine that
//! runs the platform).

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::error::Location;

/// Largest CA bundle read (the system bundle is about 200 KiB).
const MAX_CA_BUNDLE: u64 = 16 * 1024 * 1024;

/// What a referenced file must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A PEM bundle of CA certificates (`ca_file`, `webhook_ca_file`).
    CaBundle,
    /// A program run without a shell (`hook`, an exec check's absolute `argv[0]`).
    Program,
}

/// A file named by the configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The key, e.g. `ca_file` or `argv[0]`.
    pub key: String,
    /// The path as written.
    pub path: PathBuf,
    /// What it must be.
    pub kind: FileKind,
    /// Where the path is written.
    pub location: Location,
}

/// How certain a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// May be fine where mcrecover runs (missing, unreadable here).
    Warning,
    /// Wrong wherever it runs.
    Error,
}

/// A finding about one referenced file, at the key that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The configuration file.
    pub config: PathBuf,
    /// Where the path is written in it.
    pub location: Location,
    /// Warning or error.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub help: String,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Location { line, col } = self.location;
        let severity = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(
            f,
            "{}:{line}:{col}: {severity}: {}\n  help: {}",
            self.config.display(),
            self.message,
            self.help
        )
    }
}

/// Look at every referenced file; one finding per problem file, in file
/// order, at its first mention (the other lines naming it are listed).
pub fn inspect(config: &Path, refs: &[FileRef]) -> Vec<FileProblem> {
    let mut out = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let same = |o: &FileRef| o.path == r.path && o.kind == r.kind;
        if refs.get(..i).unwrap_or_default().iter().any(same) {
            continue;
        }
        let Some((severity, mut message, help)) = inspect_one(r) else {
            continue;
        };
        let also: Vec<String> = refs
            .get(i + 1..)
            .unwrap_or_default()
            .iter()
            .filter(|o| same(o))
            .map(|o| o.location.line.to_string())
            .collect();
        if !also.is_empty() {
            message.push_str(&format!(" (also named at line {})", also.join(", ")));
        }
        out.push(FileProblem {
            config: config.to_path_buf(),
            location: r.location,
            severity,
            message,
            help,
        });
    }
    out
}

fn inspect_one(r: &FileRef) -> Option<(Severity, String, String)> {
    let what = format!("{} `{}`", r.key, r.path.display());
    let uid = nix::unistd::geteuid();
    // `metadata` follows symbolic links: the target is what will be read.
    let meta = match std::fs::metadata(&r.path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some((
                Severity::Warning,
                format!("{what} does not exist on this machine"),
                "create it before mcrecover runs, or fix the path (a warning because the \
                 configuration may be checked elsewhere, e.g. in a NixOS build; \
                 `check-config --strict` makes it an error)"
                    .to_string(),
            ));
        }
        Err(e) => {
            return Some((
                Severity::Warning,
                format!("{what} cannot be examined by uid {uid}: {e}"),
                "check the permissions of the directories on its path for the user mcrecover \
                 runs as"
                    .to_string(),
            ));
        }
    };
    if !meta.is_file() {
        return Some((
            Severity::Error,
            format!("{what} is not a regular file"),
            match r.kind {
                FileKind::CaBundle => "name a PEM file of CA certificates",
                FileKind::Program => "name the program's executable file",
            }
            .to_string(),
        ));
    }
    match r.kind {
        FileKind::Program => {
            if meta.permissions().mode() & 0o111 == 0 {
                return Some((
                    Severity::Error,
                    format!("{what} is not executable"),
                    format!("chmod +x {}, or name the program itself", r.path.display()),
                ));
            }
            None
        }
        FileKind::CaBundle => inspect_ca_bundle(r, &what, meta.len()),
    }
}

fn inspect_ca_bundle(r: &FileRef, what: &str, len: u64) -> Option<(Severity, String, String)> {
    let help = "name a PEM file of CA certificates (`-----BEGIN CERTIFICATE-----` blocks), \
                e.g. the CA that issued the server's certificate";
    if len > MAX_CA_BUNDLE {
        return Some((
            Severity::Error,
            format!("{what} is {len} bytes long, too large for a CA bundle"),
            help.to_string(),
        ));
    }
    let mut pem = Vec::new();
    let read =
        std::fs::File::open(&r.path).and_then(|f| f.take(MAX_CA_BUNDLE).read_to_end(&mut pem));
    if let Err(e) = read {
        return Some((
            Severity::Warning,
            format!(
                "{what} cannot be read by uid {}: {e}",
                nix::unistd::geteuid()
            ),
            "make it readable by the user that runs the checks (the daemon, `verify`, the gate \
             units)"
                .to_string(),
        ));
    }
    match ca_certificates(&pem) {
        Ok(_) => None,
        Err(reason) => Some((
            Severity::Error,
            format!("{what} {reason}"),
            help.to_string(),
        )),
    }
}

/// How many CA certificates a PEM bundle holds, the way the checks load it
/// (every `CERTIFICATE` block parsed and added as a trust anchor), or why
/// it holds none that can be used.
fn ca_certificates(pem: &[u8]) -> Result<usize, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut problem = None;
    let mut reader = pem;
    for cert in rustls_pemfile::certs(&mut reader) {
        match cert {
            Ok(cert) => {
                if let Err(e) = roots.add(cert) {
                    problem = Some(format!("holds a certificate that cannot be used: {e}"));
                }
            }
            Err(e) => problem = Some(format!("is not valid PEM: {e}")),
        }
    }
    if !roots.is_empty() {
        return Ok(roots.len());
    }
    if let Some(p) = problem {
        return Err(p);
    }
    let mut reader = pem;
    let key = rustls_pemfile::read_all(&mut reader).any(|item| {
        matches!(
            item,
            Ok(rustls_pemfile::Item::Pkcs1Key(_)
                | rustls_pemfile::Item::Pkcs8Key(_)
                | rustls_pemfile::Item::Sec1Key(_))
        )
    });
    Err(if key {
        "holds a private key, not a certificate".to_string()
    } else {
        "holds no PEM certificate".to_string()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn refer(path: &Path, kind: FileKind) -> FileRef {
        FileRef {
            key: "ca_file".into(),
            path: path.to_path_buf(),
            kind,
            location: Location { line: 3, col: 9 },
        }
    }

    fn one(path: &Path, kind: FileKind) -> Option<FileProblem> {
        let mut p = inspect(Path::new("/etc/m.toml"), &[refer(path, kind)]);
        assert!(p.len() <= 1);
        p.pop()
    }

    #[test]
    fn missing_is_a_warning_with_location() {
        let p = one(Path::new("/nonexistent/ca.pem"), FileKind::CaBundle).unwrap();
        assert_eq!(p.severity, Severity::Warning);
        let shown = p.to_string();
        assert!(
            shown.starts_with(
                "/etc/m.toml:3:9: warning: ca_file `/nonexistent/ca.pem` does not exist"
            ),
            "{shown}"
        );
        assert!(shown.contains("\n  help: "), "{shown}");
    }

    #[test]
    fn wrong_contents_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8], &str); 3] = [
            ("text.pem", b"not a certificate\n", "holds no PEM certificate"),
            (
                "key.pem",
                b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n",
                "holds a private key, not a certificate",
            ),
            (
                "garbage.pem",
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "cannot be used",
            ),
        ];
        for (name, contents, want) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            let p = one(&path, FileKind::CaBundle).unwrap();
            assert_eq!(p.severity, Severity::Error, "{name}: {p}");
            assert!(p.message.contains(want), "{name}: {p}");
        }
        let p = one(dir.path(), FileKind::CaBundle).unwrap();
        assert_eq!(p.severity, Severity::Error);
        assert!(p.message.contains("is not a regular file"), "{p}");
    }

    #[test]
    fn one_finding_per_file() {
        let mut second = refer(Path::new("/nonexistent/ca.pem"), FileKind::CaBundle);
        second.location = Location { line: 8, col: 9 };
        let refs = [
            refer(Path::new("/nonexistent/ca.pem"), FileKind::CaBundle),
            refer(Path::new("/nonexistent/other.pem"), FileKind::CaBundle),
            second,
        ];
        let found = inspect(Path::new("/etc/m.toml"), &refs);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].message.ends_with("(also named at line 8)"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn a_real_ca_passes() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".to_string()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        assert_eq!(one(&path, FileKind::CaBundle), None);
    }

    #[test]
    fn programs_must_be_executable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let p = one(&path, FileKind::Program).unwrap();
        assert_eq!(p.severity, Severity::Error);
        assert!(p.message.contains("is not executable"), "{p}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(one(&path, FileKind::Program), None);
    }
}
