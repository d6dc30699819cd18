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
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::AbortHandle;
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

/// Serve `router` on `listener` until `shutdown` resolves; then stop accepting, let requests in
/// flight finish (up to [`SHUTDOWN_WAIT`]) and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    counters: Arc<dyn Fn(&'static str) + Send + Sync>,
    shutdown: impl Future<Output = ()>,
) {
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
        let connection = http.serve_connection(TokioIo::new(stream), svc);
        let mut stop = stop_rx.clone();
        let registered = Registered(registry.clone(), id);
        // Registered before the task can end, so that its guard always finds itself.
        let mut conns = registry.conns.lock();
        let task = tokio::spawn(async move {
            let _registered = registered;
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
