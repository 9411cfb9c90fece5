//! A small HTTP/1.1 server for tests of the HTTP sinks (conserver, webhook): it records every
//! request (method, path and query, headers, body, connection number) and answers with
//! scripted [`Reply`]s, then with a rule, then with a default (`201 {}`).
//!
//! ```ignore
//! mod http_support;
//! use http_support::{FakeServer, Reply};
//! let srv = FakeServer::start(vec![Reply::status(422).body(r#"{"detail":"no"}"#)]).await;
//! let url = format!("conserver+http://{}/api?ingress=default", srv.addr());
//! // … deliver through the sink …
//! assert_eq!(srv.requests().len(), 1);
//! ```
//!
//! Hand-written on tokio's `TcpListener` (no HTTP server crate in the dev tree): keep-alive,
//! `Content-Length` and chunked request bodies, `Connection: close`, per-reply delays.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the server answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response body (sent with `Content-Type: application/json`).
    pub body: String,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Wait this long before answering (to provoke client timeouts).
    pub delay: Duration,
    /// Answer with `Connection: close` and close the connection.
    pub close: bool,
}

impl Reply {
    /// A reply with this status and an empty JSON object body (none for 204/304).
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            body: if matches!(status, 204 | 304) {
                String::new()
            } else {
                "{}".into()
            },
            headers: Vec::new(),
            delay: Duration::ZERO,
            close: false,
        }
    }

    /// Sets the body.
    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_string();
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Delays the answer.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Closes the connection after answering.
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }
}

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST`, `GET`, …
    pub method: String,
    /// Path and query exactly as sent (`/api/vcon?ingress_lists=a&ingress_lists=b`).
    pub target: String,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body bytes (chunked bodies de-chunked).
    pub body: Vec<u8>,
    /// Which TCP connection carried it (1, 2, …): shows connection reuse.
    pub conn: u64,
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The raw query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Every (percent-decoded) value of a query parameter, in order.
    pub fn query_all(&self, key: &str) -> Vec<String> {
        url::form_urlencoded::parse(self.query().unwrap_or("").as_bytes())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .collect()
    }

    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

type Rule = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

struct State {
    script: VecDeque<Reply>,
    rule: Option<Rule>,
    default: Reply,
    requests: Vec<Request>,
}

/// The fake server; stops when dropped.
pub struct FakeServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// Starts on a free loopback port: `script` answers the first requests in arrival
    /// order, then every request gets `201 {}`.
    pub async fn start(script: Vec<Reply>) -> FakeServer {
        Self::spawn(script, None).await
    }

    /// Starts with a rule computing each reply from the request (after `script` runs out).
    pub async fn start_with(
        script: Vec<Reply>,
        rule: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> FakeServer {
        Self::spawn(script, Some(Arc::new(rule))).await
    }

    async fn spawn(script: Vec<Reply>, rule: Option<Rule>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the fake HTTP server");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            rule,
            default: Reply::status(201),
            requests: Vec::new(),
        }));
        let st = state.clone();
        let conns = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let st = st.clone();
                let conn = conns.fetch_add(1, Ordering::Relaxed) + 1;
                tokio::spawn(async move {
                    let _ = serve(stream, st, conn).await;
                });
            }
        });
        FakeServer { addr, state, task }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().expect("state").requests.clone()
    }

    /// Queues more scripted replies.
    pub fn push_replies(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().expect("state").script.extend(replies);
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.state.lock().expect("state").requests.clear();
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

async fn serve(stream: TcpStream, st: Arc<Mutex<State>>, conn: u64) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let Some(req) = read_request(&mut rd, conn).await? else {
            return Ok(());
        };
        let client_close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let reply = {
            let mut s = st.lock().expect("state");
            s.requests.push(req.clone());
            match s.script.pop_front() {
                Some(r) => r,
                None => match &s.rule {
                    Some(rule) => rule(&req),
                    None => s.default.clone(),
                },
            }
        };
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-length: {}\r\n",
            reply.status,
            reason(reply.status),
            reply.body.len()
        );
        if !reply.body.is_empty() {
            head.push_str("content-type: application/json\r\n");
        }
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if reply.close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        // One write per answer (with Nagle off): a split head and body would meet the
        // client's delayed ACK and cost 40 ms a request.
        head.push_str(&reply.body);
        wr.write_all(head.as_bytes()).await?;
        wr.flush().await?;
        if reply.close || client_close {
            wr.shutdown().await?;
            return Ok(());
        }
    }
}

async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    rd: &mut R,
    conn: u64,
) -> std::io::Result<Option<Request>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    if rd.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut total = 0usize;
    loop {
        line.clear();
        let n = rd.read_line(&mut line).await?;
        total += n;
        if n == 0 || total > 64 * 1024 {
            return Err(bad("truncated or oversized header"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| bad("header without colon"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            rd.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers (none expected) up to the empty line.
                loop {
                    line.clear();
                    if rd.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            rd.read_exact(&mut body[start..]).await?;
            line.clear();
            rd.read_line(&mut line).await?;
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        body.resize(len, 0);
        rd.read_exact(&mut body).await?;
    }
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
        conn,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        425 => "Too Early",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
