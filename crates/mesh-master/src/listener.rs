//! The master's listener: its own accept loop over hyper's HTTP/1 connections, so that
//! strangers cannot exhaust it (docs/master.md, "Limits").
//!
//! - A connection cap, kept under the open-file limit. At the cap, a new connection makes room
//!   by closing the connection idle longest that no request is in progress on, those that never
//!   carried a signed request (or an admin's) first; only when every connection is at work is
//!   the new one closed. A real node's connections thus outlive idle and slow strangers.
//! - A header read timeout (which is also the keep-alive idle timeout): a connection that does
//!   not send a whole request head in time is closed. Bodies have their own timeout where they
//!   are read ([`crate::server::BODY_TIMEOUT`]).
//! - With TLS ([`crate::tls`]), the handshake is held to the same timeout and counts in the
//!   same cap: a stranger that connects and never finishes a handshake is closed as a slow
//!   header is. A plain-HTTP request on the TLS port gets a short 400 saying so, then the close.
//! - Caps on the request head (buffer, header count).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// How the listener guards itself.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Largest request head buffer and header count.
const MAX_HEAD_BUF: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// Open files kept free of connections (the database, the log, the listener, accept's spare).
const FD_RESERVE: usize = 32;
/// How long a shutdown waits for connections to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// One connection, as its requests see it (a request extension).
pub struct Conn {
    /// Requests at work on it (a verified node request, an admin call).
    busy: AtomicUsize,
    /// It has carried a signed node request or an admin call.
    trusted: AtomicBool,
    /// When it last accepted or finished work.
    idle_since: Mutex<Instant>,
}

/// A request at work on its connection: the connection is not closed to make room meanwhile.
pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since.lock() = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Conn {
    fn new() -> Conn {
        Conn {
            busy: AtomicUsize::new(0),
            trusted: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    /// The request passed its signature or token check: hold the connection while it runs.
    pub fn busy(self: &Arc<Conn>) -> Busy {
        self.trusted.store(true, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// The open connections.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, (Arc<Conn>, AbortHandle)>>,
    next: AtomicU64,
}

impl Registry {
    fn len(&self) -> usize {
        self.conns.lock().len()
    }

    /// Close the connection that makes room best; false when every one is at work.
    fn evict_one(&self) -> bool {
        let mut conns = self.conns.lock();
        let victim = conns
            .iter()
            .filter(|(_, (c, _))| c.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|(_, (c, _))| (c.trusted.load(Ordering::Relaxed), *c.idle_since.lock()))
            .map(|(id, _)| *id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some((_, task)) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

/// Removes its connection from the registry when the task ends or is aborted.
struct Registered(Arc<Registry>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.conns.lock().remove(&self.1);
    }
}

/// The soft open-file limit of this process (Linux: /proc/self/limits), if known.
pub fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The connection cap for `wanted` under an open-file limit of `nofile`.
pub fn connection_cap(wanted: usize, nofile: Option<usize>) -> usize {
    match nofile {
        Some(n) if n > 2 * FD_RESERVE => wanted.min(n - FD_RESERVE),
        Some(n) => wanted.min(n / 2).max(1),
        None => wanted,
    }
}

/// The counters the listener bumps (by name).
pub type Count = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Serve `router` on `listener` (over TLS with `tls`) until `shutdown` resolves; then stop
/// accepting, let requests in flight finish (up to [`SHUTDOWN_WAIT`]) and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<ServerConfig>>,
    counters: Count,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BUF)
        .max_headers(MAX_HEADERS);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors (EMFILE, ENFILE) or a connection gone before it
                    // was taken: make room if there is some, and do not spin.
                    debug!(error = %e, "accept failed");
                    if registry.evict_one() {
                        counters("mesh_master_connections_evicted_total");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        while registry.len() >= limits.max_connections {
            if registry.evict_one() {
                counters("mesh_master_connections_evicted_total");
            } else {
                break;
            }
        }
        if registry.len() >= limits.max_connections {
            counters("mesh_master_connections_refused_total");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn::new());
        let id = registry.next.fetch_add(1, Ordering::Relaxed);
        let svc = Service { router: router.clone(), conn: conn.clone() };
        let mut stop = stop_rx.clone();
        let registered = Registered(registry.clone(), id);
        let (http, acceptor, count) = (http.clone(), acceptor.clone(), counters.clone());
        let handshake_timeout = limits.header_timeout;
        // Registered before the task can end, so that its guard always finds itself.
        let mut conns = registry.conns.lock();
        let task = tokio::spawn(async move {
            let _registered = registered;
            let Some(acceptor) = acceptor else {
                return drive(&http, stream, svc, &mut stop).await;
            };
            let accepted = tokio::select! {
                r = tokio::time::timeout(handshake_timeout, handshake(&acceptor, stream)) => r,
                _ = stop.changed() => return,
            };
            match accepted {
                Ok(Ok(Hello::Tls(tls))) => drive(&http, *tls, svc, &mut stop).await,
                Ok(Ok(Hello::Plain)) => count("mesh_master_plain_http_refused_total"),
                Ok(Ok(Hello::Closed)) => {}
                Ok(Err(e)) => {
                    debug!(error = %e, "TLS handshake failed");
                    count("mesh_master_tls_handshakes_failed_total");
                }
                Err(_) => {
                    debug!("TLS handshake timed out");
                    count("mesh_master_tls_handshakes_failed_total");
                }
            }
        });
        conns.insert(id, (conn, task.abort_handle()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = registry.len();
    if open > 0 {
        info!(connections = open, "waiting for requests in flight");
    }
    let deadline = Instant::now() + SHUTDOWN_WAIT;
    while registry.len() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if registry.len() > 0 {
        warn!(connections = registry.len(), "connections still open at shutdown: closed");
    }
}

/// Serve HTTP/1 on one connection until it ends, or gracefully once `stop` changes.
async fn drive<I>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    svc: Service,
    stop: &mut watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = http.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(connection);
    let r = tokio::select! {
        r = connection.as_mut() => r,
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = r {
        debug!(error = %e, "connection ended");
    }
}

/// How a connection to the TLS port began.
enum Hello {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// It spoke something else first (plain HTTP), and was answered so.
    Plain,
    /// It closed before a byte.
    Closed,
}

/// The TLS handshake on a new connection (the caller bounds its time). A client that speaks
/// anything but TLS first (plain HTTP) is answered [`crate::tls::PLAIN_HTTP_ANSWER`].
async fn handshake(acceptor: &TlsAcceptor, stream: TcpStream) -> std::io::Result<Hello> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(Hello::Closed);
    }
    if first[0] != crate::tls::HANDSHAKE_RECORD {
        refuse_plain(stream).await;
        return Ok(Hello::Plain);
    }
    Ok(Hello::Tls(Box::new(acceptor.accept(stream).await?)))
}

/// Answer a plain-HTTP request on the TLS port: read its head (a little of it at most), say
/// why in a 400 and close, draining what the client still sends so that the close is no reset
/// that would lose the answer.
async fn refuse_plain(mut stream: TcpStream) {
    let mut buf = vec![0u8; 8192];
    let mut got = 0;
    while got < buf.len() && !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[got..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got += n,
        }
    }
    if stream.write_all(crate::tls::PLAIN_HTTP_ANSWER).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The router, with the connection as a request extension.
#[derive(Clone)]
struct Service {
    router: Router,
    conn: Arc<Conn>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = tower::util::Oneshot<Router, hyper::Request<Incoming>>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.conn.clone());
        tower::ServiceExt::oneshot(self.router.clone(), req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_under_the_open_file_limit() {
        assert_eq!(connection_cap(1024, Some(256)), 224);
        assert_eq!(connection_cap(100, Some(256)), 100);
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(40)), 20);
        assert!(open_file_limit().is_some_and(|n| n > 0));
    }

    #[tokio::test]
    async fn eviction_takes_idle_strangers_first_and_never_work_in_progress() {
        let r = Registry::default();
        let mut tasks = vec![];
        let mut add = |c: Arc<Conn>| {
            let t = tokio::spawn(std::future::pending::<()>());
            let id = r.next.fetch_add(1, Ordering::Relaxed);
            r.conns.lock().insert(id, (c, t.abort_handle()));
            tasks.push(t);
            id
        };
        let node = Arc::new(Conn::new());
        drop(node.busy()); // carried a signed request, idle now
        let node_id = add(node);
        let working = Arc::new(Conn::new());
        let held = working.busy();
        let working_id = add(working);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let stranger_id = add(Arc::new(Conn::new()));
        assert!(r.evict_one());
        assert!(!r.conns.lock().contains_key(&stranger_id), "the stranger first, though newer");
        assert!(r.evict_one());
        assert!(!r.conns.lock().contains_key(&node_id), "then the idle node connection");
        assert!(!r.evict_one(), "never one at work");
        assert!(r.conns.lock().contains_key(&working_id));
        drop(held);
        assert!(r.evict_one());
    }
}
