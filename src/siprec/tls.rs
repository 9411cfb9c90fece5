//! SIP over TLS for the SIPREC server (`--tls-listen ADDR --cert F --key F`, `[siprec]
//! tls_listen`): rustls with the ring provider through the same certificate loading as the
//! API's HTTPS ([`crate::tls::server_config`], minus its `http/1.1` ALPN). No new crate:
//! `tokio-rustls` is already the API's.
//!
//! One tokio task per connection does the handshake (bounded time), then both directions:
//! bytes read go to the loop's input queue as a stream (framing is TCP's, the core's
//! `handle_stream`), and replies the loop hands to [`Writers::send`] come through a small
//! bounded queue and are written with a timeout. A connection whose queue is full or whose
//! write times out is closed (a stuck SRC must not hold replies to the others), as a TCP
//! connection whose blocking write times out is.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use vcontap_siprec::uas::{Peer, Transport};

use super::{allowed, Counters, Input, Net, MAX_TCP_CONNECTIONS, TCP_WRITE_TIMEOUT};

/// A handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies waiting for one connection's writer; beyond, the connection is closed.
const WRITE_QUEUE: usize = 64;
/// How long a reader waits before it retries a full input queue.
const FULL_RETRY: Duration = Duration::from_millis(1);

/// The writer queues of the open TLS connections, by connection id.
#[derive(Clone, Default)]
pub(crate) struct Writers(Arc<Mutex<HashMap<u64, mpsc::Sender<Vec<u8>>>>>);

impl Writers {
    /// Queues `bytes` for connection `conn`; `close` closes it instead (as for TCP, the
    /// core asks to close without sending).
    pub(crate) fn send(&self, conn: u64, bytes: Vec<u8>, close: bool) {
        let Ok(mut m) = self.0.lock() else { return };
        let drop_it = match m.get(&conn) {
            Some(_) if close => true,
            Some(tx) => tx.try_send(bytes).is_err(),
            None => false,
        };
        if drop_it {
            // The task sees its queue closed and shuts the connection down.
            m.remove(&conn);
        }
    }

    pub(crate) fn remove(&self, conn: u64) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&conn);
        }
    }
}

/// What the connection tasks share with the shell.
pub(crate) struct Shared {
    pub tx: SyncSender<Input>,
    pub writers: Writers,
    pub counters: Arc<Counters>,
    pub acl: Arc<Vec<Net>>,
    pub next_conn: Arc<AtomicU64>,
}

/// Binds `addr` now (a port in use is a start-up error) and accepts on `rt`.
pub(crate) fn listen(
    rt: &tokio::runtime::Handle,
    addr: SocketAddr,
    cert: &Path,
    key: &Path,
    sh: Shared,
) -> Result<SocketAddr> {
    let cfg = crate::tls::server_config(cert, key).context("SIP TLS")?;
    let mut cfg = (*cfg).clone();
    cfg.alpn_protocols.clear();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let std = std::net::TcpListener::bind(addr).with_context(|| format!("SIP {addr} (TLS)"))?;
    std.set_nonblocking(true)?;
    let local = std.local_addr()?;
    let listener = {
        let _g = rt.enter();
        tokio::net::TcpListener::from_std(std)?
    };
    let sh = Arc::new(sh);
    rt.spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "SIP TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if !allowed(&sh.acl, peer.ip()) {
                sh.counters.acl_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if sh.counters.tcp_connections.load(Ordering::Relaxed) >= MAX_TCP_CONNECTIONS {
                tracing::warn!("too many SIP TCP/TLS connections; refusing one");
                continue;
            }
            let _ = stream.set_nodelay(true);
            sh.counters.tcp_connections.fetch_add(1, Ordering::Relaxed);
            let (acceptor, sh) = (acceptor.clone(), sh.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => serve(s, peer, &sh).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "SIP TLS handshake failed"),
                    Err(_) => tracing::debug!("SIP TLS handshake timed out"),
                }
                sh.counters.tcp_connections.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    Ok(local)
}

/// Hands `msg` to the loop, waiting while its queue is full (a stream cannot lose bytes);
/// false when the loop is gone.
async fn forward(tx: &SyncSender<Input>, mut msg: Input) -> bool {
    loop {
        match tx.try_send(msg) {
            Ok(()) => return true,
            Err(TrySendError::Full(m)) => {
                msg = m;
                tokio::time::sleep(FULL_RETRY).await;
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
    }
}

/// One connection after its handshake, until either side closes it.
async fn serve(
    mut stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    addr: SocketAddr,
    sh: &Shared,
) {
    let conn = sh.next_conn.fetch_add(1, Ordering::Relaxed);
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    if let Ok(mut m) = sh.writers.0.lock() {
        m.insert(conn, wtx);
    }
    let peer = Peer {
        transport: Transport::Tls,
        addr,
        conn,
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let bytes = buf.get(..n).unwrap_or(&[]).to_vec();
                    if !forward(&sh.tx, Input::Sip(peer, bytes)).await {
                        break;
                    }
                }
            },
            out = wrx.recv() => match out {
                Some(b) => {
                    let w = async {
                        stream.write_all(&b).await?;
                        stream.flush().await
                    };
                    if !matches!(tokio::time::timeout(TCP_WRITE_TIMEOUT, w).await, Ok(Ok(()))) {
                        break;
                    }
                }
                // The loop dropped the queue: close.
                None => break,
            },
        }
    }
    sh.writers.remove(conn);
    let _ = forward(&sh.tx, Input::Closed(conn)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}
