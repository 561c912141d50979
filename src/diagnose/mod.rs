//! Known failure signatures: turns error text (podman's stderr, a unit's
//! journal, a failed check's detail) into a stable diagnosis id with an
//! explanation and a remedy. One table, [`SIGNATURES`], shared by `doctor`,
//! `recover` and the daemon; adding a signature is adding one entry.
//!
//! The remedies follow the runbook (`disaster-recovery.md`, "Common Errors"),
//! except where the runbook loses data: a `readonly database` is never fixed
//! by deleting the database here, it is quarantined (moved aside).

use serde::Serialize;

/// One recognised failure in a text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    /// Stable identifier, e.g. `fchmod-readonly-db` (safe to match on).
    pub id: &'static str,
    /// One line: what went wrong.
    pub summary: String,
    /// Why it happens on this platform.
    pub explanation: String,
    /// What to do about it.
    pub remedy: String,
    /// The first line of the text that matched (trimmed).
    pub matched_line: String,
    /// True for known messages that need no action (e.g. `podman` missing on svc).
    pub benign: bool,
}

/// A known failure signature: a line matches when, for any group in `any`,
/// the line (lower-cased) contains every needle of that group.
#[derive(Debug)]
pub struct Signature {
    /// Stable identifier.
    pub id: &'static str,
    /// Groups of lower-case needles; one whole group must match.
    pub any: &'static [&'static [&'static str]],
    /// One-line summary.
    pub summary: &'static str,
    /// Explanation.
    pub explanation: &'static str,
    /// Remedy.
    pub remedy: &'static str,
    /// Known and harmless.
    pub benign: bool,
}

/// Every known signature, most specific first.
pub const SIGNATURES: &[Signature] = &[
    Signature {
        id: "fchmod-readonly-db",
        any: &[
            &["fchmod"],
            &["chmod", "operation not permitted"],
            &["readonly database"],
            &["read-only database"],
        ],
        summary: "SQLite database cannot be written (fchmod denied / readonly database)",
        explanation: "modernc.org/sqlite calls fchmod() on its database files; inside a rootless \
            podman user namespace that is denied when the files are owned by an id outside the \
            namespace (e.g. after a uid change or a copy as root). A newly created database only \
            logs the fchmod warning; an existing one fails with `readonly database`. Deleting the \
            database (the old runbook fix) LOSES DATA: MCR's tag metadata, Metacrypt's secrets, \
            issued-cert tracking and CA state.",
        remedy: "NEVER delete the database. Stop the unit (`systemctl --user stop <service>.service`), \
            move the db files aside: `ts=$(date -u +%Y%m%dT%H%M%SZ); mkdir -p <volume>/quarantine/$ts && \
            mv <volume>/<name>.db <volume>/<name>.db-wal <volume>/<name>.db-shm <volume>/quarantine/$ts/`, \
            then start the unit. The service creates a fresh database; the quarantined files keep \
            the old data for a later repair (fix ownership with `podman unshare chown`, then restore).",
        benign: false,
    },
    Signature {
        id: "address-in-use",
        any: &[&["address already in use"]],
        summary: "a published port is already held by another process",
        explanation: "Another listener holds the ip:port (or a wildcard 0.0.0.0/:: bind covers it). \
            For port 53: systemd-resolved listens on 127.0.0.53/127.0.0.54:53 on the host, so a \
            container publishing 0.0.0.0:53 (or 127.0.0.1:53) conflicts with it.",
        remedy: "Find the holder (`ss -ltnup 'sport = :PORT'`, or `mcrecover doctor`). For DNS bind \
            specific IPs, never 0.0.0.0:53: `-p 192.168.88.181:53:53 -p 100.95.252.120:53:53`. If the \
            holder is an old copy of the container, stop it (`podman rm -f NAME`).",
        benign: false,
    },
    Signature {
        id: "bind-ip-missing",
        any: &[&["cannot assign requested address"]],
        summary: "a port binding uses an IP address that is not on any interface",
        explanation: "The kernel refuses to bind an address this host does not have. On rift the \
            Tailnet address (100.64.0.0/10, e.g. 100.95.252.120) only exists while Tailscale is up; \
            the LAN address (192.168.88.181) needs the LAN link up.",
        remedy: "Check `ip -brief addr`. For a 100.x address: `systemctl start tailscaled && \
            tailscale up`, then `tailscale status --self`. Otherwise fix the interface or the port \
            binding in the configuration.",
        benign: false,
    },
    Signature {
        id: "registry-unreachable",
        any: &[
            &["connection refused", "registry"],
            &["connection refused", "/v2/"],
            &["connection refused", "mcr.svc.mcp.metacircular.net"],
            &["no such host", "registry"],
        ],
        summary: "the container registry (MCR) cannot be reached",
        explanation: "MCR (mcr.svc.mcp.metacircular.net:8443) is itself a service of this platform, so \
            it is down during a recovery. Images are cached in podman's storage; nothing needs to be \
            pulled.",
        remedy: "Do not pull: start from the cache (`pull = \"never\"`, `--pull=never`). If an image \
            is not cached, load it from the image archive (`podman load -i ARCHIVE`) or from another \
            machine: `podman save IMAGE | ssh rift podman load`.",
        benign: false,
    },
    Signature {
        id: "image-missing",
        any: &[
            &["image not known"],
            &["no such image"],
            &["unable to find image"],
            &["image not found"],
            &["manifest unknown"],
        ],
        summary: "the container image is not in podman's local storage",
        explanation: "With pull = never the image must already be cached in the storage of the user \
            that runs the container (rootless: the platform user's ~/.local/share/containers, not \
            root's). A uid change or storage reset empties it.",
        remedy: "Load it into the right storage, as the platform user: `mcrecover recover` loads \
            archived images from platform.image_archive itself (`mcrecover images status` shows \
            what is archived); by hand `podman load -i <image_archive>/<file>.tar`, or from \
            another machine: `podman save IMAGE | ssh mcp@rift podman load`. Check with \
            `podman image exists IMAGE`.",
        benign: false,
    },
    Signature {
        id: "no-subuid-ranges",
        any: &[&["no subuid ranges"], &["no subgid ranges"]],
        summary: "the platform user has no subordinate uid/gid ranges",
        explanation: "Rootless podman maps container ids through /etc/subuid and /etc/subgid; without \
            a range for the user it cannot create the user namespace.",
        remedy: "Add ranges (`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER`, \
            or the NixOS `users.users.USER.subUidRanges`), then `podman system migrate` as the user.",
        benign: false,
    },
    Signature {
        id: "podman-missing-svc",
        any: &[&["podman", "executable file not found"]],
        summary: "podman is not installed on this node",
        explanation: "Expected on svc, an edge node that runs Docker (MCIAS), not podman: the agent \
            warns about it there and nothing else is affected.",
        remedy: "None on svc. On rift this would be real: install podman.",
        benign: true,
    },
];

/// Every known failure found in `text`, at most one per signature, in the
/// order of their first matching line.
pub fn diagnose(text: &str) -> Vec<Diagnosis> {
    let mut found: Vec<(usize, Diagnosis)> = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let lower = line.to_lowercase();
        for sig in SIGNATURES {
            if found.iter().any(|(_, d)| d.id == sig.id) {
                continue;
            }
            if sig
                .any
                .iter()
                .any(|group| group.iter().all(|needle| lower.contains(needle)))
            {
                found.push((idx, to_diagnosis(sig, line)));
            }
        }
    }
    found.sort_by_key(|(idx, _)| *idx);
    found.into_iter().map(|(_, d)| d).collect()
}

/// The last `lines` journal lines of `unit` (the system manager's, or with
/// `user` the calling user's manager's), as plain text; empty when journalctl
/// is missing, refuses or takes longer than 5 s.
pub async fn unit_journal(unit: &str, user: bool, lines: usize) -> String {
    let mut cmd = tokio::process::Command::new("journalctl");
    cmd.args(["--no-pager", "--quiet", "--output=cat", "--lines"])
        .arg(lines.to_string())
        .arg(if user { "--user-unit" } else { "--unit" })
        .arg(unit)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(std::time::Duration::from_secs(5), cmd.output()).await {
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => String::new(),
    }
}

/// Diagnoses of a unit that failed: its recent journal plus any extra text
/// (e.g. the start job's error), benign matches left out.
pub async fn diagnose_unit(unit: &str, user: bool, extra: &str) -> Vec<Diagnosis> {
    let mut text = unit_journal(unit, user, 60).await;
    text.push('\n');
    text.push_str(extra);
    diagnose(&text).into_iter().filter(|d| !d.benign).collect()
}

/// The signature with this id, if any.
pub fn signature(id: &str) -> Option<&'static Signature> {
    SIGNATURES.iter().find(|s| s.id == id)
}

fn to_diagnosis(sig: &Signature, line: &str) -> Diagnosis {
    Diagnosis {
        id: sig.id,
        summary: sig.summary.to_string(),
        explanation: sig.explanation.to_string(),
        remedy: sig.remedy.to_string(),
        matched_line: line.trim().to_string(),
        benign: sig.benign,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ids(text: &str) -> Vec<&'static str> {
        diagnose(text).into_iter().map(|d| d.id).collect()
    }

    #[test]
    fn runbook_and_podman_texts() {
        let cases: &[(&str, &str)] = &[
            ("chmod: operation not permitted", "fchmod-readonly-db"),
            (
                "level=WARN msg=\"fchmod /srv/mcr/mcr.db: operation not permitted\"",
                "fchmod-readonly-db",
            ),
            (
                "Error: open db: attempt to write a readonly database (8)",
                "fchmod-readonly-db",
            ),
            (
                "Error: cannot listen on the UDP port: listen udp4 0.0.0.0:53: bind: address already in use",
                "address-in-use",
            ),
            (
                "Error: rootlessport listen tcp 10.99.99.99:8080: bind: cannot assign requested address",
                "bind-ip-missing",
            ),
            (
                "Error: initializing source docker://mcr.svc.mcp.metacircular.net:8443/mcq:v0.4.2: pinging container registry mcr.svc.mcp.metacircular.net:8443: Get \"https://mcr.svc.mcp.metacircular.net:8443/v2/\": dial tcp 100.95.252.120:8443: connect: connection refused",
                "registry-unreachable",
            ),
            ("Error: nosuch:1: image not known", "image-missing"),
            ("Error: No such image: foo:1", "image-missing"),
            (
                "Unable to find image 'mcq:v0.4.2' locally",
                "image-missing",
            ),
            (
                "WARN exec: \"podman\": executable file not found in $PATH",
                "podman-missing-svc",
            ),
            (
                "Error: cannot find UID/GID for user mcp: no subuid ranges found for user \"mcp\" in /etc/subuid",
                "no-subuid-ranges",
            ),
        ];
        for (text, id) in cases {
            assert_eq!(ids(text), vec![*id], "{text}");
        }
    }

    #[test]
    fn journal_with_several_errors_in_line_order() {
        let journal = "Nov 25 18:00:01 rift podman[1]: starting\n\
            Nov 25 18:00:02 rift mcr[2]: fchmod /srv/mcr/mcr.db: operation not permitted\n\
            Nov 25 18:00:02 rift mcr[2]: readonly database\n\
            Nov 25 18:00:03 rift podman[3]: Error: nosuch:1: image not known\n";
        let d = diagnose(journal);
        assert_eq!(
            d.iter().map(|d| d.id).collect::<Vec<_>>(),
            ["fchmod-readonly-db", "image-missing"]
        );
        assert!(d[0].matched_line.contains("fchmod /srv/mcr/mcr.db"));
        assert!(d[0].remedy.contains("NEVER delete"));
        assert!(d[0].remedy.contains("quarantine/"));
    }

    #[test]
    fn clean_text_and_connection_refused_elsewhere() {
        assert!(diagnose("").is_empty());
        assert!(diagnose("all services healthy\n").is_empty());
        // A refused health check is not the registry.
        assert!(diagnose("tcp 127.0.0.1:28080: connection refused").is_empty());
    }

    #[test]
    fn table_is_well_formed() {
        for (i, s) in SIGNATURES.iter().enumerate() {
            assert!(!s.any.is_empty() && s.any.iter().all(|g| !g.is_empty()));
            for g in s.any {
                for n in *g {
                    assert_eq!(*n, n.to_lowercase(), "{}: needles are lower case", s.id);
                }
            }
            assert!(SIGNATURES[..i].iter().all(|o| o.id != s.id), "dup {}", s.id);
            assert_eq!(signature(s.id).map(|x| x.id), Some(s.id));
        }
    }
}
