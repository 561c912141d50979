//! `standin`: a small stand-in for the platform's services in mcrecover's end-to-end tests and
//! demo. It runs as PID 1 in a busybox-static container, ignores argv, takes its configuration
//! from `STANDIN_*` environment variables, serves DNS / HTTP(S) / TCP / gRPC health after an
//! optional ready delay, and obeys the fault file `$STANDIN_DIR/fault` live.

mod config;
mod dns;
mod fault;
mod grpc;
mod http;
mod log;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Kind, Listen};
use crate::fault::Fault;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::event("error", &format!("runtime={e}"));
            std::process::exit(1);
        }
    };
    // Exit without waiting for the runtime to wind down: parked (hung) connections and
    // in-flight requests are simply dropped, so SIGTERM ends PID 1 at once.
    let code = rt.block_on(run());
    std::process::exit(code);
}

async fn run() -> i32 {
    // PID 1 gets no default signal actions: install the handlers before anything else.
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            log::event("error", &format!("signal_handlers={e}"));
            return 1;
        }
    };
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            log::event("error", &format!("config={:?}", format!("{e:#}")));
            return 2;
        }
    };
    log::set_name(&cfg.name);
    prepare_state_dir(&cfg);
    let (delay, delay_source) = cfg.ready_delay();
    let listen = cfg
        .listen
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    log::event(
        "started",
        &format!(
            "pid={} dir={} listen={listen} bind={} ready_delay_ms={} ready_delay_source={delay_source}",
            std::process::id(),
            cfg.dir.display(),
            cfg.bind,
            delay.as_millis(),
        ),
    );
    let (faults, poller) = fault::start(cfg.fault_file(), cfg.unseal_file());
    tokio::spawn(poller);

    let stop = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        r = serve(cfg, delay, faults) => match r {
            Ok(()) => "done",
            Err(e) => {
                log::event("error", &format!("fatal={:?}", format!("{e:#}")));
                log::event("exit", "code=1 reason=error");
                return 1;
            }
        },
    };
    log::event("exit", &format!("code=0 reason={stop}"));
    0
}

/// Creates `$STANDIN_DIR/.standin`, removes a stale `ready` and writes `started`.
/// Failures are logged, not fatal (a read-only volume must not stop the service).
fn prepare_state_dir(cfg: &Config) {
    let state = cfg.state_dir();
    if let Err(e) = std::fs::create_dir_all(&state) {
        log::event(
            "warning",
            &format!("state_dir={} error={e:?}", state.display()),
        );
        return;
    }
    let _ = std::fs::remove_file(state.join("ready"));
    if let Err(e) = write_atomic(&state, "started", &log::unix_ms().to_string()) {
        log::event("warning", &format!("started_file error={e:?}"));
    }
}

/// Writes `dir/name` through a temporary file and a rename, so a reader never sees it half written.
fn write_atomic(dir: &Path, name: &str, contents: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// What an accepted TCP connection is handed to.
enum Proto {
    Tcp(Arc<[u8]>),
    Http,
    Https(TlsAcceptor),
    Grpc(mpsc::Sender<TcpStream>),
    Grpcs(TlsAcceptor, mpsc::Sender<TlsStream<TcpStream>>),
}

/// A bound listener waiting to be served.
enum Bound {
    Dns(UdpSocket, TcpListener),
    Stream(TcpListener),
}

async fn serve(cfg: Config, delay: Duration, faults: watch::Receiver<Fault>) -> anyhow::Result<()> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let tls = if cfg.listen.iter().any(|l| l.kind.needs_tls()) {
        Some(tls::build(&cfg.state_dir(), &cfg.name).context("tls")?)
    } else {
        None
    };

    let mut bound = Vec::new();
    for l in &cfg.listen {
        let addr = SocketAddr::new(cfg.bind, l.port);
        let b = match l.kind {
            Kind::Dns => Bound::Dns(
                UdpSocket::bind(addr)
                    .await
                    .with_context(|| format!("bind {l} udp {addr}"))?,
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("bind {l} tcp {addr}"))?,
            ),
            _ => Bound::Stream(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("bind {l} {addr}"))?,
            ),
        };
        bound.push((*l, b));
    }

    for (l, b) in bound {
        match b {
            Bound::Dns(udp, tcp) => {
                tokio::spawn(dns::serve(udp, tcp, faults.clone(), l.port));
            }
            Bound::Stream(listener) => {
                let proto = match (l.kind, tls.as_ref()) {
                    (Kind::Tcp, _) => {
                        Proto::Tcp(Arc::from(format!("standin {}\n", cfg.name).into_bytes()))
                    }
                    (Kind::Http, _) => Proto::Http,
                    (Kind::Https, Some(t)) => Proto::Https(TlsAcceptor::from(t.https.clone())),
                    (Kind::Grpc, _) => Proto::Grpc(grpc::start(faults.clone(), l.port)),
                    (Kind::Grpcs, Some(t)) => Proto::Grpcs(
                        TlsAcceptor::from(t.grpcs.clone()),
                        grpc::start(faults.clone(), l.port),
                    ),
                    (Kind::Dns | Kind::Https | Kind::Grpcs, _) => {
                        anyhow::bail!("internal: no handler for {l}")
                    }
                };
                tokio::spawn(accept_loop(listener, l, proto, faults.clone()));
            }
        }
    }

    let now = log::unix_ms();
    let state = cfg.state_dir();
    let note = match write_atomic(&state, "ready", &now.to_string()) {
        Ok(()) => String::new(),
        Err(e) => format!(" ready_file_error={e:?}"),
    };
    log::event("ready", &format!("unix_ms={now}{note}"));
    std::future::pending::<()>().await;
    Ok(())
}

/// Holds a connection open without answering until the `hang` fault is lifted, then drops it.
async fn park<T>(conn: T, faults: watch::Receiver<Fault>) {
    fault::hang_released(&faults).await;
    drop(conn);
}

async fn accept_loop(
    listener: TcpListener,
    l: Listen,
    proto: Proto,
    faults: watch::Receiver<Fault>,
) {
    let mut accept_errors = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: log the first one, back off, keep serving.
                if accept_errors == 0 {
                    log::event("warning", &format!("listener={l} accept_error={e:?}"));
                }
                accept_errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if fault::is_hang(&faults) {
            tokio::spawn(park(stream, faults.clone()));
            continue;
        }
        let f = faults.clone();
        match &proto {
            Proto::Tcp(banner) => {
                let banner = banner.clone();
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = stream.write_all(&banner).await;
                    let _ = stream.shutdown().await;
                });
            }
            Proto::Http => {
                tokio::spawn(http::serve(stream, f));
            }
            Proto::Https(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        http::serve(tls, f).await;
                    }
                });
            }
            Proto::Grpc(tx) => {
                let _ = tx.send(stream).await;
            }
            Proto::Grpcs(acceptor, tx) => {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        let _ = tx.send(tls).await;
                    }
                });
            }
        }
    }
}
