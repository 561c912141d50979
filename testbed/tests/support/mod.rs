//! Helpers shared by the testbed's own tests (tests/sandbox.rs on the host
//! base, tests/trixie.rs on the trixie base).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mcrecover_testbed::{processes_in_namespace, ImageSet, ImageSpec, Sandbox, INDEX_HTML};

/// The image both tests serve.
pub const IMAGE: &str = "mcr.svc.mcp.metacircular.net:8443/metacrypt-web:v1.4.1";
/// How long a URL may take to answer.
pub const WAIT: Duration = Duration::from_secs(60);

/// One busybox httpd image under [`IMAGE`].
pub fn images() -> ImageSet {
    ImageSet::busybox(vec![ImageSpec::busybox_httpd(IMAGE, 8080)])
}

/// The processes of a PID namespace, with start times (namespace inode numbers are recycled
/// once a namespace is gone, so "the namespace is empty" is checked on these exact processes).
pub fn members(ns: &str) -> Vec<(u32, u64)> {
    processes_in_namespace(ns)
        .into_iter()
        .filter_map(|pid| Some((pid, mcrecover_testbed::process_start(pid)?)))
        .collect()
}

/// Which of `procs` still run.
pub fn still_running(procs: &[(u32, u64)]) -> Vec<u32> {
    procs
        .iter()
        .filter(|(pid, start)| mcrecover_testbed::process_start(*pid) == Some(*start))
        .map(|(pid, _)| *pid)
        .collect()
}

/// Unwraps `r`, or fails the test with the sandbox's whole journal.
pub fn ok<T>(sb: &Sandbox, r: Result<T, mcrecover_testbed::TestbedError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}\njournal:\n{}", sb.journal_all()))
}

/// Polls `url` from inside the sandbox (as `uid` or root) until it serves the images' index page.
pub fn wait_http(sb: &Sandbox, uid: Option<u32>, url: &str) {
    // (no `-T`: this busybox's wget segfaults with it; `timeout` instead: on the trixie base a
    // connection made while the port was being set up once hung forever)
    let argv = ["timeout", "5", "busybox", "wget", "-q", "-O", "-", url];
    let res = sb.wait_until(&format!("{url} to answer"), WAIT, || {
        let out = match uid {
            Some(uid) => sb.run_as(uid, &argv),
            None => sb.run(&argv),
        };
        Ok(out.status.success() && out.stdout == INDEX_HTML.as_bytes())
    });
    if let Err(e) = res {
        panic!("{e}\njournal:\n{}", sb.journal_all());
    }
}
