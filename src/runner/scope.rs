//! Which container a service's unit runs, so that the container's own
//! death (its transient `libpod-<id>.scope` unloaded by systemd, about a
//! millisecond after its last process exited) can be told to the engine
//! before podman's cleanup and conmon's exit end the unit, 50-200 ms later
//! (issue 15). Only for units whose container gets a scope of its own:
//! the service backend (`--cgroups=no-conmon`); quadlet's `--cgroups=split`
//! keeps the container inside the unit's cgroup, with no unit to watch.
//!
//! The container id is read from the command line of the unit's main
//! process, conmon (`--sdnotify=conmon` makes it the main process;
//! `conmon ... -c <id> ... -n <name>`): a bounded read of
//! `/proc/<pid>/cmdline`, which belongs to the container's user.

use std::io::Read;

/// At most this much of a command line is read.
const CMDLINE_LIMIT: u64 = 64 * 1024;

/// The container id conmon `pid` monitors, if its command line says so
/// and names `container`.
pub(super) fn conmon_container(pid: u32, container: &str) -> Option<String> {
    let file = std::fs::File::open(format!("/proc/{pid}/cmdline")).ok()?;
    let mut buf = Vec::new();
    file.take(CMDLINE_LIMIT).read_to_end(&mut buf).ok()?;
    container_of(&buf, container)
}

/// The `-c <id>` of a conmon command line (NUL-separated), when its
/// program is conmon and its `-n <name>` is `container`.
fn container_of(cmdline: &[u8], container: &str) -> Option<String> {
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let prog = args.first()?;
    if !prog.ends_with(b"conmon") {
        return None;
    }
    let value = |flag: &[u8]| {
        args.windows(2)
            .find(|w| w[0] == flag)
            .and_then(|w| std::str::from_utf8(w[1]).ok())
    };
    let id = value(b"-c")?;
    if value(b"-n")? != container {
        return None;
    }
    let hex = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| id.to_owned())
}

/// The container id of a container scope unit's name.
pub(super) fn scope_container(unit: &str) -> Option<&str> {
    unit.strip_prefix("libpod-")?.strip_suffix(".scope")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ID: &str = "da0160d8e098a35a77c76943a90ce471fdf4a9432a7ec96a710278c72cde365a";

    fn cmdline(args: &[&str]) -> Vec<u8> {
        let mut v = args.join("\0").into_bytes();
        v.push(0);
        v
    }

    #[test]
    fn conmon_names_its_container() {
        let c = cmdline(&[
            "/usr/bin/conmon",
            "--api-version",
            "1",
            "-c",
            ID,
            "-u",
            ID,
            "-n",
            "mcns",
            "-s",
        ]);
        assert_eq!(container_of(&c, "mcns").as_deref(), Some(ID));
        // Another container's conmon, another program, a short id: none.
        assert_eq!(container_of(&c, "mcq"), None);
        let other = cmdline(&["/usr/bin/podman", "-c", ID, "-n", "mcns"]);
        assert_eq!(container_of(&other, "mcns"), None);
        let short = cmdline(&["/usr/bin/conmon", "-c", "da0160d8", "-n", "mcns"]);
        assert_eq!(container_of(&short, "mcns"), None);
        assert_eq!(container_of(b"", "mcns"), None);
    }

    #[test]
    fn scope_names() {
        assert_eq!(scope_container(&format!("libpod-{ID}.scope")), Some(ID));
        assert_eq!(scope_container("libpod-conmon-x.scope"), Some("conmon-x"));
        assert_eq!(scope_container("mcns.service"), None);
    }
}
