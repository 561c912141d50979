//! Pure parsers for network-ish strings: published ports, volume mounts,
//! `ip:port` addresses and DNS servers. Errors are plain strings saying what
//! is wrong; the caller attaches the location and a help text.

use std::net::{IpAddr, SocketAddr};

use super::model::{PortMapping, Proto, VolumeMount};

/// Help text for port syntax.
pub(crate) const PORT_FORMS: &str = "write \"[ip:]hostport:containerport[/tcp|udp]\", e.g. \"127.0.0.1:8080:80\", \"53:53/udp\" or \"[::1]:8080:80\"";

/// Help text for volume syntax.
pub(crate) const VOLUME_FORMS: &str = "write \"/host/path:/container/path[:options]\" or \"volume-name:/container/path[:options]\", e.g. \"/srv/mcns:/srv/mcns:ro\"";

/// Mount options podman accepts in `-v` (plus `idmap=...`).
const VOLUME_OPTIONS: &[&str] = &[
    "ro",
    "rw",
    "z",
    "Z",
    "U",
    "O",
    "copy",
    "nocopy",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
    "unbindable",
    "runbindable",
    "exec",
    "noexec",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "idmap",
    "bind",
    "rbind",
    "notmpcopyup",
];

fn parse_port_number(text: &str, what: &str) -> Result<u16, String> {
    if text.is_empty() {
        return Err(format!("missing {what} port"));
    }
    if text.contains('-') {
        return Err(format!("port ranges are not supported (`{text}`)"));
    }
    match text.parse::<u16>() {
        Ok(0) => Err(format!("{what} port must be between 1 and 65535, not 0")),
        Ok(p) => Ok(p),
        Err(_) if text.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("{what} port `{text}` is out of range (1-65535)"))
        }
        Err(_) => Err(format!("{what} port `{text}` is not a number")),
    }
}

/// Parse a published port `[ip:]host:container[/tcp|udp]` (IPv6 in brackets).
pub(crate) fn parse_port(raw: &str) -> Result<PortMapping, String> {
    let (spec, proto) = match raw.rsplit_once('/') {
        Some((spec, "tcp")) => (spec, Proto::Tcp),
        Some((spec, "udp")) => (spec, Proto::Udp),
        Some((_, other)) => {
            return Err(format!(
                "invalid port `{raw}`: unknown protocol `{other}` (expected tcp or udp)"
            ))
        }
        None => (raw, Proto::Tcp),
    };
    let wrap = |msg: String| format!("invalid port `{raw}`: {msg}");
    let (host_ip, ports) =
        if let Some(after_bracket) = spec.strip_prefix('[') {
            let (ip, rest) = after_bracket
                .split_once(']')
                .ok_or_else(|| wrap("missing `]` after the IPv6 address".to_string()))?;
            let ip: std::net::Ipv6Addr = ip
                .parse()
                .map_err(|_| wrap(format!("`{ip}` is not an IPv6 address")))?;
            let rest = rest
                .strip_prefix(':')
                .ok_or_else(|| wrap("expected `:` after `]`".to_string()))?;
            (Some(IpAddr::V6(ip)), rest)
        } else {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.len() {
                1 => {
                    return Err(wrap(
                        "both a host port and a container port are required".to_string(),
                    ))
                }
                2 if parts[0].parse::<IpAddr>().is_ok() => return Err(wrap(
                    "an address and one port: both a host port and a container port are required"
                        .to_string(),
                )),
                2 => (None, spec),
                3 => {
                    let ip = parts[0];
                    let ip: std::net::Ipv4Addr = ip
                        .parse()
                        .map_err(|_| wrap(format!("`{ip}` is not an IPv4 address")))?;
                    (Some(IpAddr::V4(ip)), &spec[parts[0].len() + 1..])
                }
                _ => {
                    return Err(wrap(
                        "too many `:` (write IPv6 addresses in brackets, e.g. \"[::1]:80:80\")"
                            .to_string(),
                    ))
                }
            }
        };
    let (host, container) = ports
        .split_once(':')
        .ok_or_else(|| wrap("both a host port and a container port are required".to_string()))?;
    if container.contains(':') {
        return Err(wrap("too many `:`".to_string()));
    }
    Ok(PortMapping {
        host_ip,
        host_port: parse_port_number(host, "host").map_err(wrap)?,
        container_port: parse_port_number(container, "container").map_err(wrap)?,
        proto,
        raw: raw.to_string(),
    })
}

/// Whether `name` is a valid podman name (containers, networks, volumes).
pub(crate) fn is_podman_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Parse a volume mount `host:container[:options]`.
pub(crate) fn parse_volume(raw: &str) -> Result<VolumeMount, String> {
    let wrap = |msg: String| format!("invalid volume `{raw}`: {msg}");
    let parts: Vec<&str> = raw.split(':').collect();
    let (host, container, options) = match parts.as_slice() {
        [host, container] => (*host, *container, None),
        [host, container, options] => (*host, *container, Some(*options)),
        [_] => {
            return Err(wrap(
                "expected `host:container` (a host path or volume name, then a container path)"
                    .to_string(),
            ))
        }
        _ => return Err(wrap("too many `:`".to_string())),
    };
    if host.is_empty() {
        return Err(wrap("the host path is empty".to_string()));
    }
    if !host.starts_with('/') && !is_podman_name(host) {
        return Err(wrap(format!(
            "host side `{host}` is neither an absolute path nor a volume name"
        )));
    }
    if !container.starts_with('/') {
        return Err(wrap(format!(
            "container path `{container}` is not absolute"
        )));
    }
    if let Some(options) = options {
        for option in options.split(',') {
            let name = option.split_once('=').map_or(option, |(n, _)| n);
            if !VOLUME_OPTIONS.contains(&name) {
                return Err(wrap(format!(
                    "unknown mount option `{option}` (known: {})",
                    VOLUME_OPTIONS.join(", ")
                )));
            }
        }
    }
    Ok(VolumeMount {
        host: host.to_string(),
        container: container.to_string(),
        options: options.map(str::to_string),
        raw: raw.to_string(),
    })
}

/// Parse `ip:port` (IPv6 as `[::1]:443`).
pub(crate) fn parse_socket_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse::<SocketAddr>().map_err(|_| {
        if raw.parse::<IpAddr>().is_ok() {
            format!("`{raw}` has no port")
        } else {
            format!("`{raw}` is not an `ip:port` address")
        }
    })
}

/// Parse a DNS server: `ip` (port 53) or `ip:port`.
pub(crate) fn parse_dns_server(raw: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    raw.parse::<SocketAddr>()
        .map_err(|_| format!("`{raw}` is not an `ip` or `ip:port` address"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn port(raw: &str) -> PortMapping {
        parse_port(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn ports_parse() {
        let p = port("192.168.88.181:53:53/udp");
        assert_eq!(p.host_ip, Some("192.168.88.181".parse().unwrap()));
        assert_eq!(
            (p.host_port, p.container_port, p.proto),
            (53, 53, Proto::Udp)
        );
        assert_eq!(p.raw, "192.168.88.181:53:53/udp");
        let p = port("127.0.0.1:38443:8443");
        assert_eq!(
            (p.host_port, p.container_port, p.proto),
            (38443, 8443, Proto::Tcp)
        );
        let p = port("8080:80/tcp");
        assert_eq!((p.host_ip, p.host_port, p.container_port), (None, 8080, 80));
        let p = port("[::1]:80:8080");
        assert_eq!(p.host_ip, Some("::1".parse().unwrap()));
        assert_eq!((p.host_port, p.container_port), (80, 8080));
        let p = port("[fd00::1]:53:53/udp");
        assert_eq!(p.host_ip, Some("fd00::1".parse().unwrap()));
        assert_eq!(p.proto, Proto::Udp);
    }

    #[test]
    fn bad_ports_are_rejected() {
        for bad in [
            "80",
            "80/tcp",
            ":80",
            "80:",
            "0:80",
            "80:0",
            "65536:80",
            "a:80",
            "1.2.3:80:80",
            "::1:80:80",
            "[::1:80:80",
            "[::1]80:80",
            "[1.2.3.4]:80:80",
            "80:80/sctp",
            "8000-8010:8000-8010",
            "127.0.0.1::80",
            "1:2:3:4",
            "[::1]:80:80:90",
        ] {
            assert!(parse_port(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            parse_port("80:80/sctp").unwrap_err(),
            "invalid port `80:80/sctp`: unknown protocol `sctp` (expected tcp or udp)"
        );
        assert_eq!(
            parse_port("::1:80:80").unwrap_err(),
            "invalid port `::1:80:80`: too many `:` (write IPv6 addresses in brackets, e.g. \"[::1]:80:80\")"
        );
    }

    #[test]
    fn volumes_parse() {
        let v = parse_volume("/srv/mcns:/srv/mcns").unwrap();
        assert_eq!(
            (v.host.as_str(), v.container.as_str(), v.options),
            ("/srv/mcns", "/srv/mcns", None)
        );
        let v = parse_volume("data:/var/lib/data:ro,Z").unwrap();
        assert_eq!(v.host, "data");
        assert_eq!(v.options.as_deref(), Some("ro,Z"));
        assert_eq!(v.raw, "data:/var/lib/data:ro,Z");
        assert!(parse_volume("/a:/b:idmap=uids=0-1-10").is_ok());
    }

    #[test]
    fn bad_volumes_are_rejected() {
        for bad in [
            "/srv",
            "srv/x:/x",
            "./x:/x",
            "/a:b",
            "/a:/b:rw,bogus",
            "/a:/b:ro:z",
            ":/b",
            "/a:",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(parse_socket_addr("127.0.0.1:443").unwrap().port(), 443);
        assert_eq!(parse_socket_addr("[::1]:443").unwrap().port(), 443);
        assert!(parse_socket_addr("127.0.0.1").is_err());
        assert!(parse_socket_addr("localhost:80").is_err());
        assert_eq!(parse_dns_server("192.168.88.181").unwrap().port(), 53);
        assert_eq!(parse_dns_server("::1").unwrap().port(), 53);
        assert_eq!(parse_dns_server("127.0.0.1:5353").unwrap().port(), 5353);
        assert!(parse_dns_server("ns1.example").is_err());
    }

    proptest::proptest! {
        /// Every well-formed mapping parses back to its parts.
        #[test]
        fn well_formed_ports_roundtrip(ip in proptest::option::of(proptest::prelude::any::<IpAddr>()),
                                       host in 1u16.., container in 1u16.., udp in proptest::prelude::any::<bool>()) {
            let ip_part = match ip {
                None => String::new(),
                Some(IpAddr::V4(v4)) => format!("{v4}:"),
                Some(IpAddr::V6(v6)) => format!("[{v6}]:"),
            };
            let raw = format!("{ip_part}{host}:{container}{}", if udp { "/udp" } else { "" });
            let p = parse_port(&raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            proptest::prop_assert_eq!(p.host_ip, ip);
            proptest::prop_assert_eq!((p.host_port, p.container_port), (host, container));
            proptest::prop_assert_eq!(p.proto, if udp { Proto::Udp } else { Proto::Tcp });
        }

        /// Arbitrary text never panics.
        #[test]
        fn port_and_volume_never_panic(text in "\\PC{0,24}") {
            let _ = parse_port(&text);
            let _ = parse_volume(&text);
            let _ = parse_dns_server(&text);
        }
    }
}
