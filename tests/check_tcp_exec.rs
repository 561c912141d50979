//! TCP checks against real local listeners, and exec checks running real
//! processes (success, failure with stderr, timeout kill of the whole group).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod check_support;

use std::time::Duration;

use mcrecover::check::probe;
use mcrecover::config::{CheckKind, ExecCheck, TcpCheck};

use check_support::{check, closed_port};

const T: Duration = Duration::from_secs(5);

fn exec(argv: &[&str]) -> CheckKind {
    CheckKind::Exec(ExecCheck {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        user: None,
    })
}

#[tokio::test]
async fn tcp_connects_and_refuses() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let out = probe(&check(CheckKind::Tcp(TcpCheck { address: addr }), T)).await;
    assert!(out.ok, "{out}");
    assert_eq!(out.detail, "connected");
    drop(listener);

    let addr = closed_port();
    let out = probe(&check(CheckKind::Tcp(TcpCheck { address: addr }), T)).await;
    assert!(!out.ok);
    assert_eq!(
        out.detail,
        format!("TCP connect to {addr}: connection refused")
    );
}

#[tokio::test]
async fn exec_success() {
    let out = probe(&check(exec(&["true"]), T)).await;
    assert!(out.ok, "{out}");
    assert_eq!(out.detail, "exit 0");
}

#[tokio::test]
async fn exec_failure_reports_last_stderr_line() {
    let out = probe(&check(
        exec(&[
            "sh",
            "-c",
            "echo progress; echo first >&2; echo db is locked >&2; exit 3",
        ]),
        T,
    ))
    .await;
    assert!(!out.ok);
    assert_eq!(
        out.detail,
        "exec `sh -c 'echo progress; echo first >&2; echo db is locked >&2; exit 3'` exited 3: db is locked"
    );

    // Without stderr, the last stdout line explains.
    let out = probe(&check(exec(&["sh", "-c", "echo not ready; exit 1"]), T)).await;
    assert_eq!(
        out.detail,
        "exec `sh -c 'echo not ready; exit 1'` exited 1: not ready"
    );
}

#[tokio::test]
async fn exec_missing_program() {
    let out = probe(&check(exec(&["/nonexistent/mcrecover-probe"]), T)).await;
    assert!(!out.ok);
    assert_eq!(
        out.detail,
        "exec `/nonexistent/mcrecover-probe` could not start: no such file or directory"
    );
}

#[tokio::test]
async fn exec_timeout_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // The shell records the pid of a grandchild, then waits on it.
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let out = probe(&check(
        exec(&["sh", "-c", &script]),
        Duration::from_millis(500),
    ))
    .await;
    assert!(!out.ok);
    assert_eq!(
        out.detail,
        format!("exec `sh -c '{script}'` killed after timeout 500ms")
    );

    // The grandchild `sleep` is gone too (it was in the killed group).
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for init to reap it.
        if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "sleep {pid} survived the timeout kill");
}

#[tokio::test]
async fn exec_as_other_user() {
    let root = nix::unistd::geteuid().is_root();
    let out = probe(&check(
        CheckKind::Exec(ExecCheck {
            argv: vec![
                "sh".to_owned(),
                "-c".to_owned(),
                "test \"$(id -un)\" = nobody".to_owned(),
            ],
            user: Some("nobody".to_owned()),
        }),
        T,
    ))
    .await;
    if root {
        assert!(out.ok, "{out}");
    } else {
        assert!(!out.ok);
        assert!(out.detail.contains("not running as root"), "{}", out.detail);
    }
}
