//! End-to-end tests of the `standin` binary: each test runs the real binary on free local
//! ports with a temporary STANDIN_DIR and talks to it with real clients (`dig`, `curl`, a
//! tonic-health client, a plain TCP socket). Tools that are missing make a test skip (print
//! why), or FAIL when MCRECOVER_REQUIRE_E2E=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const BIN: &str = env!("CARGO_BIN_EXE_standin");

/// Returns false (test should return) when a tool is missing and e2e is not required.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("MCRECOVER_REQUIRE_E2E").as_deref() == Ok("1") {
            panic!("{tool} is required (MCRECOVER_REQUIRE_E2E=1) but not installed");
        }
        eprintln!("SKIP: {tool} not installed");
    }
    found
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A port free for TCP and UDP on 127.0.0.1 (probed, then released).
fn free_port() -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// Polls `cond` every 50 ms for at most `limit`; panics with `what` when it never holds.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Standin {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Standin {
    /// Prepares a STANDIN_DIR; `prep` may write files into it before the process starts.
    fn start(
        name: &str,
        listen: &str,
        extra_env: &[(&str, &str)],
        prep: impl FnOnce(&Path),
    ) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("srv");
        std::fs::create_dir_all(dir.join(".standin")).unwrap();
        prep(&dir);
        let log = tmp.path().join("stdout.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(BIN);
        // argv must be ignored: pass a runbook-like command line.
        cmd.args(["--config", "/srv/mcns/mcns.toml", "server"])
            .env("STANDIN_NAME", name)
            .env("STANDIN_DIR", &dir)
            .env("STANDIN_BIND", "127.0.0.1")
            .env("STANDIN_LISTEN", listen)
            .env_remove("STANDIN_READY_DELAY_MS")
            .stdout(out)
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Self {
            child: Some(child),
            dir,
            log,
            _tmp: tmp,
        }
    }

    fn state(&self, file: &str) -> PathBuf {
        self.dir.join(".standin").join(file)
    }

    fn wait_ready(&self) {
        let ready = self.state("ready");
        wait_for("ready file", Duration::from_secs(30), || ready.exists());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes the fault file (None = remove) and waits for the stand-in to log it.
    fn fault(&self, fault: Option<&str>) {
        let f = self.dir.join("fault");
        let expect = match fault {
            Some(v) => {
                std::fs::write(&f, format!("{v}\n")).unwrap();
                format!("event=fault fault={v}")
            }
            None => {
                std::fs::remove_file(&f).unwrap();
                "event=fault fault=none".to_owned()
            }
        };
        let before = self.log().matches(&expect).count();
        wait_for(&expect, Duration::from_secs(10), || {
            self.log().matches(&expect).count() > before
        });
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            assert!(start.elapsed() < limit, "standin did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a signal, waits for the exit and logs (does not assert) how long it took.
    fn signal_and_wait(&mut self, sig: &str) -> ExitStatus {
        let start = Instant::now();
        kill(sig, self.pid());
        let status = self.wait_exit(Duration::from_secs(10));
        eprintln!(
            "standin exited {status} {:?} after SIG{sig}",
            start.elapsed()
        );
        status
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn kill(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn dig(port: u16, args: &[&str]) -> (String, bool) {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

/// `curl -s`; returns (body, http code, curl exit code).
fn curl(args: &[&str]) -> (String, String, i32) {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (
        body.to_owned(),
        code.to_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn tcp_banner(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// One gRPC health Check; `tls` = (CA PEM, server name).
async fn grpc_check(
    port: u16,
    tls: Option<(&str, &str)>,
    service: &str,
) -> Result<ServingStatus, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    if let Some((ca, domain)) = tls {
        ep = ep
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name(domain),
            )
            .unwrap();
    }
    let channel = ep.connect().await.map_err(|e| format!("connect: {e:?}"))?;
    grpc_check_on(channel, service).await
}

/// One gRPC health Check on an existing channel (an HTTP/2 connection kept open).
async fn grpc_check_on(
    channel: tonic::transport::Channel,
    service: &str,
) -> Result<ServingStatus, String> {
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|s| format!("status: {:?} {}", s.code(), s.message()))?;
    ServingStatus::try_from(resp.into_inner().status).map_err(|e| e.to_string())
}

fn check_dns(port: u16) {
    for proto in ["+notcp", "+tcp"] {
        let (out, ok) = dig(
            port,
            &[proto, "+short", "mcq.svc.mcp.metacircular.net", "A"],
        );
        assert!(ok);
        assert_eq!(out.trim(), "100.95.252.120", "{proto}");
        let (out, ok) = dig(port, &[proto, "+short", "google.com", "A"]);
        assert!(ok);
        assert_eq!(out.trim(), "93.184.216.34", "{proto}");
    }
    let (out, _) = dig(port, &["mcq.svc.mcp.metacircular.net", "AAAA"]);
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("ANSWER: 0"), "{out}");
}

/// HTTPS answers with the given CA and server names.
fn check_https(port: u16, ca: &Path) {
    let ca = ca.to_str().unwrap();
    for host in [
        "mcq.svc.mcp.metacircular.net",
        "mcias.metacircular.net",
        "localhost",
    ] {
        let resolve = format!("{host}:{port}:127.0.0.1");
        let (body, code, rc) = curl(&[
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            &format!("https://{host}:{port}/v1/health"),
        ]);
        assert_eq!(
            (body.as_str(), code.as_str(), rc),
            ("{\"status\":\"ok\"}", "200", 0),
            "{host}"
        );
    }
    let (body, code, _) = curl(&["--cacert", ca, &format!("https://127.0.0.1:{port}/v2/")]);
    assert_eq!((body.as_str(), code.as_str()), ("{}", "200"));
    let (_, code, _) = curl(&["--cacert", ca, &format!("https://127.0.0.1:{port}/")]);
    assert_eq!(code, "404");
    // A name outside the leaf's SANs must fail verification.
    let resolve = format!("example.com:{port}:127.0.0.1");
    let (_, _, rc) = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        &format!("https://example.com:{port}/"),
    ]);
    assert_ne!(rc, 0, "certificate must not be valid for example.com");
}

/// Runs every protocol against a stand-in whose CA files were written by `write_ca`.
async fn all_protocols(write_ca: impl FnOnce(&Path), ca_file: &str) {
    let (dns, http, https, tcp, grpc, grpcs) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let listen = format!("dns:{dns},http:{http},https:{https},tcp:{tcp},grpc:{grpc},grpcs:{grpcs}");
    let mut s = Standin::start("mcns", &listen, &[], write_ca);
    s.wait_ready();
    let ca_path = s.state(ca_file);

    check_dns(dns);
    let (body, code, _) = curl(&[&format!("http://127.0.0.1:{http}/v1/health")]);
    assert_eq!(
        (body.as_str(), code.as_str()),
        ("{\"status\":\"ok\"}", "200")
    );
    check_https(https, &ca_path);
    assert_eq!(tcp_banner(tcp).unwrap(), "standin mcns\n");

    assert_eq!(grpc_check(grpc, None, "").await, Ok(ServingStatus::Serving));
    assert_eq!(
        grpc_check(grpc, None, "mcp.v1.Master").await,
        Ok(ServingStatus::Serving)
    );
    let ca = std::fs::read_to_string(&ca_path).unwrap();
    let tls = Some((ca.as_str(), "mcp-master.svc.mcp.metacircular.net"));
    assert_eq!(grpc_check(grpcs, tls, "").await, Ok(ServingStatus::Serving));
    assert_eq!(
        grpc_check(grpcs, tls, "sgard.v1.Sgard").await,
        Ok(ServingStatus::Serving)
    );

    let log = s.log();
    assert!(log.contains("event=started"), "{log}");
    assert!(log.contains("event=ready"), "{log}");
    assert_eq!(
        log.lines().count(),
        3,
        "one line per event, none per request:\n{log}"
    );
    let status = s.signal_and_wait("TERM");
    assert_eq!(status.code(), Some(0));
    assert!(s.log().contains("event=exit code=0 reason=SIGTERM"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_answers_with_an_openssl_ca() {
    if !have("dig") || !have("curl") || !have("openssl") {
        return;
    }
    all_protocols(
        |dir| {
            let st = dir.join(".standin");
            let ok = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                ])
                .args(["-days", "2", "-subj", "/CN=mcrecover test CA/O=test"])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(st.join("ca.key"))
                .arg("-out")
                .arg(st.join("ca.pem"))
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok, "openssl req");
        },
        "ca.pem",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_answers_with_an_rcgen_ca() {
    if !have("dig") || !have("curl") {
        return;
    }
    all_protocols(
        |dir| {
            let st = dir.join(".standin");
            let mut params = rcgen::CertificateParams::default();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "rcgen test CA");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
            ];
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            std::fs::write(st.join("ca.pem"), cert.pem()).unwrap();
            std::fs::write(st.join("ca.key"), key.serialize_pem()).unwrap();
        },
        "ca.pem",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_files_it_generates_a_ca_and_says_so() {
    if !have("dig") || !have("curl") {
        return;
    }
    all_protocols(|_| {}, "generated-ca.pem").await;
}

#[test]
fn a_lone_ca_file_is_a_clear_error() {
    let port = free_port();
    let mut s = Standin::start("mcq", &format!("https:{port}"), &[], |dir| {
        std::fs::write(dir.join(".standin/ca.pem"), "not used").unwrap();
    });
    let status = s.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
    let log = s.log();
    assert!(
        log.contains("event=error") && log.contains("ca.key is missing"),
        "{log}"
    );
    assert!(!s.state("ready").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_apply_live() {
    if !have("dig") || !have("curl") {
        return;
    }
    let (dns, http, tcp, grpc) = (free_port(), free_port(), free_port(), free_port());
    let listen = format!("dns:{dns},http:{http},tcp:{tcp},grpc:{grpc}");
    let mut s = Standin::start("mcq", &listen, &[], |_| {});
    s.wait_ready();
    let health = format!("http://127.0.0.1:{http}/v1/health");

    s.fault(Some("500"));
    let (body, code, _) = curl(&[&health]);
    assert_eq!(code, "500", "{body}");
    let (_, code, _) = curl(&[&format!("http://127.0.0.1:{http}/v2/")]);
    assert_eq!(code, "500");
    let (out, _) = dig(dns, &["google.com", "A"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    let (out, _) = dig(dns, &["+tcp", "mcq.svc.mcp.metacircular.net", "A"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    assert_eq!(
        grpc_check(grpc, None, "").await,
        Ok(ServingStatus::NotServing)
    );
    assert_eq!(
        tcp_banner(tcp).unwrap(),
        "standin mcq\n",
        "tcp has no error semantics: still answers"
    );

    // A connection opened before `hang` (HTTP/2 kept alive) gets no answer either.
    let kept = Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
        .unwrap()
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    assert_eq!(
        grpc_check_on(kept.clone(), "").await,
        Ok(ServingStatus::NotServing)
    );

    s.fault(Some("hang"));
    let e = grpc_check_on(kept.clone(), "").await.unwrap_err();
    assert!(
        e.contains("Cancelled") || e.contains("DeadlineExceeded"),
        "{e}"
    );
    let (_, code, rc) = curl(&["-m", "1", &health]);
    assert_eq!((code.as_str(), rc), ("000", 28), "curl must time out");
    let (out, ok) = dig(dns, &["+time=1", "google.com", "A"]);
    assert!(
        !ok && !out.contains("status:"),
        "dns must not answer: {out}"
    );
    let (out, ok) = dig(dns, &["+tcp", "+time=1", "google.com", "A"]);
    assert!(
        !ok && !out.contains("status:"),
        "dns/tcp must not answer: {out}"
    );
    let e = grpc_check(grpc, None, "").await.unwrap_err();
    assert!(
        e.contains("Cancelled") || e.contains("DeadlineExceeded") || e.contains("connect"),
        "{e}"
    );
    // TCP: the connection is accepted but nothing is ever written.
    let mut c = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 16];
    let r = c.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "{r:?}"
    );

    s.fault(None);
    let (body, code, _) = curl(&[&health]);
    assert_eq!(
        (body.as_str(), code.as_str()),
        ("{\"status\":\"ok\"}", "200")
    );
    let (out, _) = dig(dns, &["+short", "google.com", "A"]);
    assert_eq!(out.trim(), "93.184.216.34");
    assert_eq!(grpc_check(grpc, None, "").await, Ok(ServingStatus::Serving));
    // The connection parked during `hang` is released (closed) without an answer.
    let r = c.read(&mut buf);
    assert!(matches!(r, Ok(0)), "{r:?}");

    std::fs::write(s.dir.join("fault"), "exit").unwrap();
    let status = s.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    let log = s.log();
    assert!(
        log.contains("event=fault fault=exit") && log.contains("event=exit code=1 reason=fault"),
        "{log}"
    );
}

#[test]
fn an_exit_fault_present_at_start_exits_at_once() {
    let port = free_port();
    let mut s = Standin::start("kls", &format!("http:{port}"), &[], |dir| {
        std::fs::write(dir.join("fault"), "exit").unwrap();
    });
    assert_eq!(s.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(!s.state("ready").exists());
}

#[test]
fn ready_delay_file_wins_and_nothing_is_bound_before_it() {
    let port = free_port();
    let mut s = Standin::start(
        "mcdoc",
        &format!("http:{port},tcp:{}", free_port()),
        &[("STANDIN_READY_DELAY_MS", "60000")],
        |dir| {
            std::fs::write(dir.join("ready-delay-ms"), "3000\n").unwrap();
            std::fs::write(dir.join(".standin/ready"), "1").unwrap(); // stale, from a previous run
        },
    );
    let started = s.state("started");
    wait_for("started file", Duration::from_secs(20), || started.exists());
    let refused = TcpStream::connect(("127.0.0.1", port)).is_err();
    let ready_after_connect = s.state("ready").exists();
    if !ready_after_connect {
        assert!(
            refused,
            "a listener was bound before the ready delay elapsed"
        );
    }
    s.wait_ready();
    let started_ms: u128 = std::fs::read_to_string(&started)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ready_ms: u128 = std::fs::read_to_string(s.state("ready"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        ready_ms >= started_ms + 3000,
        "ready {ready_ms} started {started_ms}"
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    let log = s.log();
    assert!(
        log.contains("ready_delay_ms=3000 ready_delay_source=file"),
        "{log}"
    );
    // SIGINT ends it too.
    assert_eq!(s.signal_and_wait("INT").code(), Some(0));
    assert!(s.log().contains("reason=SIGINT"));
}

#[test]
fn sigterm_during_the_ready_delay_exits() {
    let mut s = Standin::start(
        "mcat",
        &format!("https:{}", free_port()),
        &[("STANDIN_READY_DELAY_MS", "60000")],
        |_| {},
    );
    let started = s.state("started");
    wait_for("started file", Duration::from_secs(20), || started.exists());
    assert_eq!(s.signal_and_wait("TERM").code(), Some(0));
    assert!(!s.state("ready").exists());
}

#[test]
fn bad_listen_spec_exits_2() {
    let mut s = Standin::start("x", "smtp:25", &[], |_| {});
    assert_eq!(s.wait_exit(Duration::from_secs(10)).code(), Some(2));
    assert!(s.log().contains("event=error"));
}

/// As PID 1 of its own PID namespace (like in a container) the kernel drops signals that have
/// no handler: SIGTERM must still end it.
#[test]
fn sigterm_ends_it_as_pid_1() {
    if !have("unshare") {
        return;
    }
    if !is_root() {
        if std::env::var("MCRECOVER_REQUIRE_E2E").as_deref() == Ok("1") {
            panic!("root is required (MCRECOVER_REQUIRE_E2E=1)");
        }
        eprintln!("SKIP: not root, cannot unshare a PID namespace");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("srv");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let log = std::fs::File::create(tmp.path().join("stdout.log")).unwrap();
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", BIN])
        .env("STANDIN_NAME", "pid1")
        .env("STANDIN_DIR", &dir)
        .env("STANDIN_BIND", "127.0.0.1")
        .env("STANDIN_LISTEN", format!("http:{port}"))
        .stdout(log)
        .spawn()
        .unwrap();
    let ready = dir.join(".standin/ready");
    wait_for("ready file", Duration::from_secs(20), || ready.exists());
    let log_text = std::fs::read_to_string(tmp.path().join("stdout.log")).unwrap();
    assert!(log_text.contains("pid=1 "), "{log_text}");
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id())).unwrap();
    let pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let start = Instant::now();
    kill("TERM", pid);
    let status = loop {
        if let Some(s) = unshare.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = unshare.kill();
            panic!("PID 1 standin ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!(
        "PID-1 standin exited {status} {:?} after SIGTERM",
        start.elapsed()
    );
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_standin_answers_503_until_unsealed_and_seals_again_after_a_restart() {
    let (http, grpc) = (free_port(), free_port());
    let listen = format!("http:{http},grpc:{grpc}");
    let health = format!("http://127.0.0.1:{http}/v1/health");
    let s = Standin::start("metacrypt", &listen, &[], |dir| {
        std::fs::write(dir.join("sealed"), "").unwrap();
        // Left over from an earlier run: must not unseal this one.
        std::fs::write(dir.join("unseal"), "").unwrap();
    });
    s.wait_ready();
    let (body, code, _) = curl(&[&health]);
    assert_eq!(
        (body.as_str(), code.as_str()),
        ("{\"status\":\"sealed\",\"sealed\":true}", "503")
    );
    assert_eq!(
        grpc_check(grpc, None, "").await,
        Ok(ServingStatus::NotServing)
    );
    std::fs::write(s.dir.join("unseal"), "").unwrap();
    wait_for("unsealed", Duration::from_secs(10), || {
        s.log().contains("event=unsealed")
    });
    wait_for("healthy answer", Duration::from_secs(10), || {
        curl(&[&health]).1 == "200"
    });
    assert_eq!(grpc_check(grpc, None, "").await, Ok(ServingStatus::Serving));
    // A restart (same directory) seals it again.
    let dir = s.dir.clone();
    let mut s = s;
    s.signal_and_wait("TERM");
    let again = Standin::start("metacrypt", &listen, &[], |d| {
        for f in ["sealed", "unseal"] {
            if dir.join(f).exists() {
                std::fs::write(d.join(f), "").unwrap();
            }
        }
    });
    again.wait_ready();
    assert_eq!(curl(&[&health]).1, "503", "sealed again after a restart");
}
