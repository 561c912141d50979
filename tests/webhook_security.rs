//! Issue 12 item 9: the escalation webhook's URL (which often carries a
//! token) never appears in its result or its log lines, whatever the
//! outcome; and without `webhook_ca_file` the system's trust store is used
//! (here `$SSL_CERT_FILE`, the first place looked at), not only the web roots
//! built into mcrecover.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod check_support;

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use url::Url;

use check_support::Pki;
use mcrecover::watch::escalate::{webhook, Event, EventKind};

const SECRETS: &[&str] = &[
    "hookuser",
    "hookpass",
    "PATHTOKEN",
    "QUERYTOKEN",
    "FRAGTOKEN",
];

fn event() -> Event {
    Event {
        kind: EventKind::Escalated,
        id: "mcr-1".into(),
        platform: "p".into(),
        service: "mcr".into(),
        unit: "mcr.service".into(),
        stage: None,
        restarts: 5,
        window: Duration::from_secs(600),
        reason: "unit failed".into(),
        diagnoses: Vec::new(),
        remedy: String::new(),
        at: UNIX_EPOCH + Duration::from_secs(1_795_572_900),
    }
}

/// A local HTTPS server answering 204 and forwarding each request's target
/// (path and query) to the returned channel.
async fn server(pki: &Pki) -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(pki.server_config(&[b"http/1.1"]));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<Incoming>| {
                    let _ = tx.send(req.uri().to_string());
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(StatusCode::NO_CONTENT)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, rx)
}

/// Captures what the daemon would log.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows {s}: {text}");
    }
}

/// Every log line of this test binary (a global subscriber: callsite
/// interest is global, so a per-thread one could miss lines).
fn logs() -> Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}

#[tokio::test]
async fn the_webhook_url_is_never_shown() {
    let logs = logs();
    let pki = Pki::new();
    let (port, mut rx) = server(&pki).await;
    let secret_url = |host: &str| -> Url {
        format!("https://hookuser:hookpass@{host}/hooks/PATHTOKEN?token=QUERYTOKEN#FRAGTOKEN")
            .parse()
            .unwrap()
    };
    let ev = event();

    // Delivered: the POST goes to the real path and query ...
    let url = secret_url(&format!("localhost:{port}"));
    let res = webhook::post(&url, Some(&pki.ca_file), Duration::from_secs(10), &ev).await;
    eprintln!("{res:?}");
    assert!(res.ok, "{res:?}");
    assert_eq!(
        rx.recv().await.unwrap(),
        "/hooks/PATHTOKEN?token=QUERYTOKEN"
    );
    // ... but the result says only where, without them.
    assert_eq!(
        res.detail,
        format!("HTTP 204 from https://localhost:{port}/…")
    );
    assert_no_secret("the result", &res.detail);

    // Untrusted certificate, nothing listening, no answer in time: the same.
    let other = pki.other_ca_file.clone();
    let res = webhook::post(&url, Some(&other), Duration::from_secs(10), &ev).await;
    assert!(!res.ok && res.detail.contains("TLS"), "{res:?}");
    assert_no_secret("a TLS failure", &res.detail);
    let closed = check_support::closed_port();
    let res = webhook::post(
        &secret_url(&closed.to_string()),
        Some(&pki.ca_file),
        Duration::from_secs(10),
        &ev,
    )
    .await;
    assert!(!res.ok, "{res:?}");
    assert_no_secret("a refused connection", &res.detail);
    let hang = check_support::hanging_tcp_server().await;
    let res = webhook::post(
        &secret_url(&hang.to_string()),
        Some(&pki.ca_file),
        Duration::from_millis(500),
        &ev,
    )
    .await;
    assert!(!res.ok && res.detail.contains("within"), "{res:?}");
    assert_no_secret("a time-out", &res.detail);

    let logged = logs.text();
    eprintln!("--- logged ---\n{logged}");
    assert!(logged.contains("escalation webhook"), "{logged}");
    assert_no_secret("the log", &logged);
}

#[tokio::test]
async fn without_webhook_ca_file_the_system_trust_store_is_used() {
    // The test CA as the system trust store ($SSL_CERT_FILE, looked at
    // first). The old code trusted only the built-in web roots here.
    let _logs = logs();
    let pki = Pki::new();
    std::env::set_var("SSL_CERT_FILE", &pki.ca_file);
    let (port, _rx) = server(&pki).await;
    let url: Url = format!("https://localhost:{port}/hook").parse().unwrap();
    let res = webhook::post(&url, None, Duration::from_secs(10), &event()).await;
    eprintln!("{res:?}");
    assert!(res.ok, "{res:?}");

    // A store that does not know the server's CA: refused, and the detail
    // names the store that was trusted.
    std::env::set_var("SSL_CERT_FILE", &pki.other_ca_file);
    let res = webhook::post(&url, None, Duration::from_secs(10), &event()).await;
    eprintln!("{res:?}");
    assert!(!res.ok, "{res:?}");
    assert!(
        res.detail.contains(&format!(
            "trusting the system trust store {}",
            pki.other_ca_file.display()
        )),
        "{res:?}"
    );
    std::env::remove_var("SSL_CERT_FILE");
}
