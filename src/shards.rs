//! The HTTP API's connections, spread over per-thread runtimes ("shards").
//!
//! One acceptor task takes connections from the listening socket and hands each, round
//! robin, to one of N threads, each running its own single-threaded tokio runtime with
//! `axum::serve` on the same router; the connection (and a WebSocket it upgrades to) stays
//! on that thread for its life. TLS handshakes run on the shard that got the socket.
//!
//! Why not one multi-threaded runtime (what `axum::serve` gives): the live API's hot path is
//! a fan-out — one engine event wakes every subscriber's task from a thread outside the
//! runtime. tokio then unparks one worker, which wakes a second only once it has started
//! running tasks; on a 2-vCPU machine the second often arrived after the first had written
//! to all 100 subscribers alone (`benches/live_api.rs`, `VCONTAP_BENCH_DEBUG`), doubling the
//! p99. With shards, the event's broadcast wakes each shard's thread directly (its own
//! runtime's unpark), so all of them write to their share of the subscribers at once — as a
//! thread-per-core server does. Idle shards cost nothing (parked in `epoll_wait`).
//!
//! Queues: each shard takes at most [`SHARD_QUEUE`] accepted sockets not yet picked up
//! (policy: the acceptor waits, i.e. accept backpressure); TLS: at most
//! [`MAX_HANDSHAKES`] handshakes in flight per shard, each given [`HANDSHAKE_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Accepted sockets waiting for their shard.
const SHARD_QUEUE: usize = 64;
/// TLS handshakes in flight per shard.
const MAX_HANDSHAKES: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After `stop`, how long open connections (SSE streams ending with the hub) may take
/// before a shard's runtime is dropped with them.
const DRAIN: Duration = Duration::from_secs(5);

/// How many shards: one per core the process may use, at most 8 (the API is not where the
/// daemon should spend most of its cores).
pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
}

/// A connection as a shard serves it: plain TCP or TLS over TCP.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// Wraps every connection a shard adopts (after TLS): the benchmark's write timer.
pub type Tap = Arc<dyn Fn(Box<dyn Conn>) -> Box<dyn Conn> + Send + Sync>;

/// Run on each shard's thread, inside its runtime, before it serves (the live API starts
/// the shard's event relay there).
pub type OnStart = Arc<dyn Fn() + Send + Sync>;

/// How to serve: shard count, thread names, an optional [`Tap`] and [`OnStart`].
#[derive(Clone)]
pub struct Options {
    /// Threads (each a runtime); at least 1.
    pub shards: usize,
    /// Thread names are `<name>-<i>`.
    pub name: String,
    /// Wraps each connection (None in the daemon).
    pub tap: Option<Tap>,
    /// Per-shard start-up.
    pub on_start: Option<OnStart>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shards: default_shards(),
            name: "vcontap-api".into(),
            tap: None,
            on_start: None,
        }
    }
}

/// Serves `app` on `tcp` on `opts.shards` threads until `stop` turns true. The acceptor
/// runs on `rt`. Returns once every shard's runtime is up.
pub fn serve(
    rt: &tokio::runtime::Handle,
    tcp: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    opts: Options,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let (shards, name) = (opts.shards.max(1), opts.name.as_str());
    let mut queues = Vec::with_capacity(shards);
    for i in 0..shards {
        let (tx, rx) = mpsc::channel::<(std::net::TcpStream, SocketAddr)>(SHARD_QUEUE);
        let (app, tls, stop, tap) = (app.clone(), tls.clone(), stop.clone(), opts.tap.clone());
        let on_start = opts.on_start.clone();
        let (up_tx, up_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
        std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = up_tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = up_tx.send(Ok(()));
                rt.block_on(async move {
                    if let Some(f) = on_start {
                        f();
                    }
                    shard(rx, tls, tap, app, stop).await
                });
            })
            .context("starting an API thread")?;
        up_rx
            .recv()
            .context("an API thread died at start")?
            .context("starting an API runtime")?;
        queues.push(tx);
    }
    rt.spawn(accept(tcp, queues, stop));
    Ok(())
}

/// Takes connections and deals them out, round robin, skipping a shard whose queue is full.
async fn accept(
    tcp: TcpListener,
    queues: Vec<mpsc::Sender<(std::net::TcpStream, SocketAddr)>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = 0usize;
    loop {
        let (stream, peer) = tokio::select! {
            r = tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: do not spin.
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => return,
        };
        // Events are small writes that should leave at once: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let Ok(std) = stream.into_std() else {
            continue;
        };
        let mut item = Some((std, peer));
        let n = queues.len();
        for k in 0..n {
            let Some(it) = item.take() else { break };
            match queues[(next + k) % n].try_send(it) {
                Ok(()) => next = (next + k + 1) % n,
                Err(mpsc::error::TrySendError::Full(x)) => item = Some(x),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        if let Some(it) = item {
            // Every shard is behind: wait for this one (accept backpressure).
            if queues[next].send(it).await.is_err() {
                return;
            }
            next = (next + 1) % n;
        }
    }
}

/// One shard: its connections, served by `axum::serve` on this thread's runtime.
async fn shard(
    rx: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    tls: Option<Arc<rustls::ServerConfig>>,
    tap: Option<Tap>,
    app: axum::Router,
    stop: watch::Receiver<bool>,
) {
    let (ready_tx, ready_rx) = mpsc::channel(SHARD_QUEUE);
    tokio::spawn(adopt(rx, tls, tap, ready_tx));
    let mut on_stop = stop.clone();
    let serve =
        axum::serve(ShardListener { rx: ready_rx }, app).with_graceful_shutdown(async move {
            let _ = on_stop.wait_for(|s| *s).await;
        });
    let mut stop = stop;
    tokio::select! {
        r = serve => {
            if let Err(e) = r {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        }
        _ = async {
            let _ = stop.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN).await;
        } => {}
    }
}

/// Registers sockets with this shard's reactor (and runs their TLS handshake).
async fn adopt(
    mut rx: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    tls: Option<Arc<rustls::ServerConfig>>,
    tap: Option<Tap>,
    ready: mpsc::Sender<(Box<dyn Conn>, SocketAddr)>,
) {
    let wrap = move |c: Box<dyn Conn>| match &tap {
        Some(t) => t(c),
        None => c,
    };
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    while let Some((std, peer)) = rx.recv().await {
        let tcp = match TcpStream::from_std(std) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "could not adopt a connection");
                continue;
            }
        };
        let Some(acceptor) = acceptor.clone() else {
            if ready.send((wrap(Box::new(tcp)), peer)).await.is_err() {
                return;
            }
            continue;
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (ready, wrap) = (ready.clone(), wrap.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => {
                    let _ = ready.send((wrap(Box::new(s)), peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// What `axum::serve` accepts from on a shard: connections this shard adopted.
struct ShardListener {
    rx: mpsc::Receiver<(Box<dyn Conn>, SocketAddr)>,
}

impl axum::serve::Listener for ShardListener {
    type Io = Box<dyn Conn>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The acceptor is gone (stopping): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        // Only for axum's logging; the bound address is the caller's.
        Ok(SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// One request on a new connection; the body (the serving thread's name).
    fn get(addr: SocketAddr) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out.rsplit("\r\n\r\n").next().unwrap().to_string()
    }

    #[test]
    fn connections_are_dealt_round_robin_to_shard_threads_and_stop_ends_accepting() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let tcp = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = tcp.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|| async {
                std::thread::current().name().unwrap_or("?").to_string()
            }),
        );
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s2 = started.clone();
        let (stop_tx, stop) = watch::channel(false);
        let opts = Options {
            shards: 3,
            name: "t-shard".into(),
            tap: None,
            on_start: Some(Arc::new(move || {
                // Inside the shard's runtime: a task can be spawned there.
                tokio::spawn(async {});
                s2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })),
        };
        serve(rt.handle(), tcp, None, app, opts, stop).unwrap();
        let names: Vec<String> = (0..6).map(|_| get(addr)).collect();
        assert_eq!(
            names,
            [
                "t-shard-0",
                "t-shard-1",
                "t-shard-2",
                "t-shard-0",
                "t-shard-1",
                "t-shard-2"
            ]
        );
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 3);
        stop_tx.send(true).unwrap();
        // The acceptor drops the listening socket: new connections are refused.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "still accepting after stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
