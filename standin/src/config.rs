//! Run-time configuration of the stand-in, read from the environment (argv is ignored on
//! purpose: the image's ENTRYPOINT is `/standin` and the runbook's real command line is
//! appended after it).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// DNS over UDP and TCP on the same port.
    Dns,
    /// Plain HTTP/1.1.
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// Accept, write `standin NAME\n`, close.
    Tcp,
    /// Plaintext (h2c) gRPC health service.
    Grpc,
    /// gRPC health service over TLS.
    Grpcs,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "dns" => Self::Dns,
            "http" => Self::Http,
            "https" => Self::Https,
            "tcp" => Self::Tcp,
            "grpc" => Self::Grpc,
            "grpcs" => Self::Grpcs,
            _ => return None,
        })
    }

    /// Whether this kind needs the TLS leaf certificate.
    pub(crate) fn needs_tls(self) -> bool {
        matches!(self, Self::Https | Self::Grpcs)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dns => "dns",
            Self::Http => "http",
            Self::Https => "https",
            Self::Tcp => "tcp",
            Self::Grpc => "grpc",
            Self::Grpcs => "grpcs",
        })
    }
}

/// One `KIND:PORT` entry of `STANDIN_LISTEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listen {
    /// Protocol.
    pub kind: Kind,
    /// Port (the same port for UDP and TCP with `dns`).
    pub port: u16,
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.port)
    }
}

/// Parses `STANDIN_LISTEN` (`KIND:PORT[,KIND:PORT...]`; blanks and empty items are ignored).
pub(crate) fn parse_listen(s: &str) -> anyhow::Result<Vec<Listen>> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((kind, port)) = item.split_once(':') else {
            bail!("listen entry {item:?} is not KIND:PORT");
        };
        let Some(kind) = Kind::parse(kind) else {
            bail!("listen entry {item:?}: unknown kind (dns, http, https, tcp, grpc, grpcs)");
        };
        let port: u16 = port
            .trim()
            .parse()
            .with_context(|| format!("listen entry {item:?}: bad port"))?;
        if port == 0 {
            bail!("listen entry {item:?}: port 0");
        }
        let l = Listen { kind, port };
        if out.contains(&l) {
            bail!("listen entry {item:?} given twice");
        }
        out.push(l);
    }
    Ok(out)
}

/// Parses a delay in milliseconds (surrounding whitespace allowed).
pub(crate) fn parse_delay_ms(s: &str) -> Option<Duration> {
    s.trim().parse::<u64>().ok().map(Duration::from_millis)
}

/// Everything the stand-in needs to know, taken from the environment.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Service name for logs and the `tcp` banner (`STANDIN_NAME`, default `standin`).
    pub name: String,
    /// Data directory (`STANDIN_DIR`, default `/srv/standin`).
    pub dir: PathBuf,
    /// Listeners (`STANDIN_LISTEN`).
    pub listen: Vec<Listen>,
    /// Address every listener binds (`STANDIN_BIND`, default `0.0.0.0`).
    pub bind: IpAddr,
    /// Raw `STANDIN_READY_DELAY_MS` (the file `$STANDIN_DIR/ready-delay-ms` wins; see [`Config::ready_delay`]).
    pub env_ready_delay: Option<String>,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let name = var("STANDIN_NAME").unwrap_or_else(|| "standin".to_owned());
        let dir = PathBuf::from(var("STANDIN_DIR").unwrap_or_else(|| "/srv/standin".to_owned()));
        let listen =
            parse_listen(&var("STANDIN_LISTEN").unwrap_or_default()).context("STANDIN_LISTEN")?;
        let bind = match var("STANDIN_BIND") {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(b) => b
                .trim()
                .parse()
                .with_context(|| format!("STANDIN_BIND {b:?} is not an IP address"))?,
        };
        Ok(Self {
            name,
            dir,
            listen,
            bind,
            env_ready_delay: var("STANDIN_READY_DELAY_MS"),
        })
    }

    /// `$STANDIN_DIR/.standin`: where the stand-in writes its state and reads its CA.
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.join(".standin")
    }

    /// `$STANDIN_DIR/unseal` when the stand-in starts sealed (`$STANDIN_DIR/sealed` exists or
    /// `STANDIN_SEALED=1`), else `None`.
    pub(crate) fn unseal_file(&self) -> Option<PathBuf> {
        let env = std::env::var("STANDIN_SEALED").is_ok_and(|v| v.trim() == "1");
        (env || self.dir.join("sealed").exists()).then(|| self.dir.join("unseal"))
    }

    /// `$STANDIN_DIR/fault`.
    pub(crate) fn fault_file(&self) -> PathBuf {
        self.dir.join("fault")
    }

    /// The ready delay and where it came from. The file `$STANDIN_DIR/ready-delay-ms` wins
    /// over `STANDIN_READY_DELAY_MS`; an unparsable value is reported and counts as 0.
    pub(crate) fn ready_delay(&self) -> (Duration, String) {
        resolve_delay(
            &self.dir.join("ready-delay-ms"),
            self.env_ready_delay.as_deref(),
        )
    }
}

fn resolve_delay(file: &Path, env: Option<&str>) -> (Duration, String) {
    if let Ok(text) = std::fs::read_to_string(file) {
        return match parse_delay_ms(&text) {
            Some(d) => (d, "file".to_owned()),
            None => (Duration::ZERO, format!("file-invalid:{:?}", text.trim())),
        };
    }
    match env {
        None => (Duration::ZERO, "none".to_owned()),
        Some(v) => match parse_delay_ms(v) {
            Some(d) => (d, "env".to_owned()),
            None => (Duration::ZERO, format!("env-invalid:{:?}", v.trim())),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn listen_parses_all_kinds() {
        let l = parse_listen(" dns:53, https:8443,tcp:9443,http:8080,grpc:1,GRPCS:9555,").unwrap();
        assert_eq!(
            l.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "dns:53",
                "https:8443",
                "tcp:9443",
                "http:8080",
                "grpc:1",
                "grpcs:9555"
            ]
        );
        assert!(parse_listen("").unwrap().is_empty());
    }

    #[test]
    fn listen_rejects_garbage() {
        for bad in [
            "dns",
            "ftp:21",
            "http:x",
            "http:0",
            "http:70000",
            "tcp:1,tcp:1",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn delay_file_wins_over_env() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ready-delay-ms");
        assert_eq!(resolve_delay(&f, Some("250")).0, Duration::from_millis(250));
        assert_eq!(resolve_delay(&f, None).0, Duration::ZERO);
        std::fs::write(&f, "40\n").unwrap();
        assert_eq!(
            resolve_delay(&f, Some("250")),
            (Duration::from_millis(40), "file".into())
        );
        std::fs::write(&f, "soon").unwrap();
        assert_eq!(resolve_delay(&f, Some("250")).0, Duration::ZERO);
    }
}
