//! Network facts for the doctor: which addresses this host has, whether a
//! port can be bound, and which process holds a port (`/proc/net/*` socket
//! inode -> `/proc/PID/fd`).

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

use crate::config::Proto;

/// The addresses assigned to this host's interfaces (in this network namespace).
pub fn local_addresses() -> Result<BTreeSet<IpAddr>, nix::Error> {
    let mut out = BTreeSet::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(addr) = ifa.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            out.insert(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            out.insert(IpAddr::V6(v6.ip()));
        }
    }
    Ok(out)
}

/// Whether `ip` is in Tailscale's CGNAT range 100.64.0.0/10.
pub fn is_tailnet(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 100 && (o[1] & 0xC0) == 64
        }
        IpAddr::V6(_) => false,
    }
}

/// Result of trying to bind a port ourselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindProbe {
    /// Bound and released: nobody holds it.
    Free,
    /// `EADDRINUSE`.
    InUse,
    /// Some other error (e.g. `EACCES` for a privileged port when not root).
    Other(String),
}

/// Tries to bind `ip:port/proto` and releases it at once.
pub fn try_bind(ip: IpAddr, port: u16, proto: Proto) -> BindProbe {
    let addr = SocketAddr::new(ip, port);
    let result = match proto {
        Proto::Tcp => TcpListener::bind(addr).map(drop),
        Proto::Udp => UdpSocket::bind(addr).map(drop),
    };
    match result {
        Ok(()) => BindProbe::Free,
        Err(e) if e.kind() == ErrorKind::AddrInUse => BindProbe::InUse,
        Err(e) => BindProbe::Other(e.to_string()),
    }
}

/// One socket line of `/proc/net/{tcp,udp,tcp6,udp6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSocket {
    /// Local address.
    pub local: SocketAddr,
    /// Kernel state (`0A` = TCP LISTEN, `07` = closed/unconnected UDP).
    pub state: u8,
    /// Owner uid.
    pub uid: u32,
    /// Socket inode (matches `socket:[INODE]` links in `/proc/PID/fd`).
    pub inode: u64,
}

/// Parses one `/proc/net/{tcp,udp}[6]` data line (not the header).
pub fn parse_proc_net_line(line: &str) -> Option<ProcSocket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 10 || !fields[0].ends_with(':') {
        return None;
    }
    let local = parse_hex_addr(fields[1])?;
    let state = u8::from_str_radix(fields[3], 16).ok()?;
    let uid = fields[7].parse().ok()?;
    let inode = fields[9].parse().ok()?;
    Some(ProcSocket {
        local,
        state,
        uid,
        inode,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits + port (IPv6), as the kernel
/// prints them: each 32-bit word in host byte order.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip_hex, port_hex) = s.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = ip_hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(w, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip_hex.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether a socket bound to `local` conflicts with binding `want`.
fn covers(local: IpAddr, want: IpAddr) -> bool {
    if local.is_unspecified() || want.is_unspecified() || local == want {
        return true;
    }
    match (local, want) {
        (IpAddr::V6(l), IpAddr::V4(w)) => l.to_ipv4_mapped() == Some(w),
        _ => false,
    }
}

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    /// PID.
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub comm: String,
    /// `/proc/PID/cmdline`, spaces between arguments (truncated).
    pub cmdline: String,
    /// The local address of the socket.
    pub local: String,
}

impl Holder {
    /// Whether the holder is podman's own port forwarder for a container
    /// (conmon, rootlessport, podman, slirp4netns, pasta): i.e. one of our
    /// containers already publishes this port.
    pub fn is_container_plumbing(&self) -> bool {
        matches!(
            self.comm.as_str(),
            "conmon" | "rootlessport" | "rootlessport-ch" | "podman" | "slirp4netns" | "pasta"
        ) || self.comm.starts_with("rootlessport")
    }

    /// Whether the holder is systemd-resolved (`comm` is truncated to 15 chars).
    pub fn is_resolved(&self) -> bool {
        self.comm.starts_with("systemd-resolve")
    }
}

/// The sockets bound to `ip:port/proto` (or covering it) in this network namespace.
pub fn sockets_on(ip: IpAddr, port: u16, proto: Proto) -> Vec<ProcSocket> {
    let files: &[&str] = match proto {
        Proto::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Proto::Udp => &["/proc/net/udp", "/proc/net/udp6"],
    };
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for s in text.lines().skip(1).filter_map(parse_proc_net_line) {
            let listening = match proto {
                Proto::Tcp => s.state == 0x0A,
                Proto::Udp => true,
            };
            if listening && s.local.port() == port && covers(s.local.ip(), ip) {
                out.push(s);
            }
        }
    }
    out
}

/// The processes holding `ip:port/proto` (needs root to see other users' fds).
pub fn holders(ip: IpAddr, port: u16, proto: Proto) -> Vec<Holder> {
    let sockets = sockets_on(ip, port, proto);
    if sockets.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            let Some(inode) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(s) = sockets.iter().find(|s| s.inode == inode) {
                let read = |f: &str| std::fs::read(entry.path().join(f)).unwrap_or_default();
                let comm = String::from_utf8_lossy(&read("comm")).trim().to_string();
                let mut cmdline: String = String::from_utf8_lossy(&read("cmdline"))
                    .split('\0')
                    .filter(|a| !a.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                if cmdline.len() > 120 {
                    let mut cut = 120;
                    while !cmdline.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    cmdline.truncate(cut);
                    cmdline.push_str("...");
                }
                if !out.iter().any(|h: &Holder| h.pid == pid) {
                    out.push(Holder {
                        pid,
                        comm,
                        cmdline,
                        local: s.local.to_string(),
                    });
                }
                break;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp_v4_listen() {
        let line = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0";
        let s = parse_proc_net_line(line).expect("parses");
        if cfg!(target_endian = "little") {
            assert_eq!(s.local, "127.0.0.1:8080".parse().expect("addr"));
        }
        assert_eq!((s.state, s.uid, s.inode), (0x0A, 0, 123456));
    }

    #[test]
    fn parses_proc_net_udp6_and_resolved() {
        // systemd-resolved's stub: 127.0.0.53:53 udp, state 07.
        let v4 = "  1: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 2222 2 0000000000000000 0";
        let s = parse_proc_net_line(v4).expect("parses");
        if cfg!(target_endian = "little") {
            assert_eq!(s.local, "127.0.0.53:53".parse().expect("addr"));
        }
        assert_eq!((s.state, s.uid), (7, 101));
        // [::]:53 and [::1]:8443
        let any6 = "  2: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3333 2 0000000000000000 0";
        let s = parse_proc_net_line(any6).expect("parses");
        assert_eq!(s.local, "[::]:53".parse().expect("addr"));
        let lo6 = "  3: 00000000000000000000000001000000:20FB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   850        0 4444 1 0000000000000000 100 0 0 10 0";
        let s = parse_proc_net_line(lo6).expect("parses");
        if cfg!(target_endian = "little") {
            assert_eq!(s.local, "[::1]:8443".parse().expect("addr"));
        }
        assert_eq!(s.uid, 850);
    }

    #[test]
    fn rejects_header_and_garbage() {
        assert!(parse_proc_net_line("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode").is_none());
        assert!(parse_proc_net_line("").is_none());
        assert!(parse_proc_net_line("  0: zz:1 00000000:0000 0A 0:0 0:0 0 0 0 1").is_none());
    }

    #[test]
    fn coverage_and_tailnet() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(covers(ip("0.0.0.0"), ip("192.168.88.181")));
        assert!(covers(ip("::"), ip("127.0.0.1")));
        assert!(covers(ip("::ffff:127.0.0.1"), ip("127.0.0.1")));
        assert!(!covers(ip("127.0.0.53"), ip("127.0.0.1")));
        assert!(is_tailnet(ip("100.95.252.120")));
        assert!(is_tailnet(ip("100.64.0.1")));
        assert!(!is_tailnet(ip("100.128.0.1")));
        assert!(!is_tailnet(ip("192.168.88.181")));
    }

    #[test]
    fn finds_our_own_listener_and_names_us() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let ip = ip4();
        assert_eq!(try_bind(ip, port, Proto::Tcp), BindProbe::InUse);
        let h = holders(ip, port, Proto::Tcp);
        let me = std::process::id();
        assert!(h.iter().any(|h| h.pid == me), "{h:?}");
        drop(l);
        assert_eq!(try_bind(ip, port, Proto::Tcp), BindProbe::Free);
    }

    fn ip4() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}
