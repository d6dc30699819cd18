//! The master, behind a trait: one method per endpoint, typed replies, typed errors. The HTTP
//! implementation signs every request and uses a response only when its signature and
//! timestamp verify (docs/protocol.md).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::sign::{
    nonce_hex, sign_request, verify_response, Bound, SigError, Stamp, H_NODE, H_NONCE, H_SIGNATURE,
    H_TIMESTAMP, NONCE_BYTES,
};
use mesh_core::wire::{
    Announce, AnnounceReply, AuthReply, AuthRequest, Heartbeat, HeartbeatReply, RouteReply, RouteRequest,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use ureq::RequestExt;

use crate::tls::{self, MasterCa};

/// Why a call to the master failed. `Display` is a short lowercase phrase for the error log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Refused, reset, unreachable, name not found…
    Transport(String),
    Timeout,
    Status(u16),
    /// A signed 4xx with the master's reason (`{"error": "..."}`): printable, at most 200 bytes.
    Refused {
        status: u16,
        reason: String,
    },
    Signature(SigError),
    TooLarge(usize),
    BadJson(String),
    /// The client was shut down (the worker is exiting).
    Stopped,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Transport(e) => write!(f, "{e}"),
            CallError::Timeout => f.write_str("timed out"),
            CallError::Status(s) => write!(f, "unexpected status {s}"),
            CallError::Refused { status, reason } => write!(f, "refused: {reason} ({status})"),
            CallError::Signature(e) => write!(f, "response refused: {e}"),
            CallError::TooLarge(n) => write!(f, "response body larger than {n} bytes"),
            CallError::BadJson(e) => write!(f, "invalid response: {e}"),
            CallError::Stopped => f.write_str("stopped"),
        }
    }
}

impl std::error::Error for CallError {}

/// The master's endpoints, as a node calls them.
pub trait Master: Send + Sync {
    fn announce(&self, req: &Announce) -> Result<AnnounceReply, CallError>;
    fn heartbeat(&self, req: &Heartbeat) -> Result<HeartbeatReply, CallError>;
    /// Long poll: `Ok(None)` when nothing is newer than `since` within `wait` (304);
    /// `Ok(Some(body))` is a signature-checked table body, still to be validated.
    fn streams(&self, since: u64, wait: Duration) -> Result<Option<Vec<u8>>, CallError>;
    fn auth(&self, req: &AuthRequest) -> Result<AuthReply, CallError>;
    fn route(&self, req: &RouteRequest) -> Result<RouteReply, CallError>;
    /// Interrupt calls in flight and refuse new ones (the worker is exiting).
    fn shutdown(&self);
}

pub use mesh_core::wire::Paths;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `http://host[:port]` or `https://…`, without a trailing slash.
    pub base: String,
    /// This node's key (`mesh_master_key`): it signs requests and verifies answers.
    pub key: Vec<u8>,
    pub node_id: String,
    pub paths: Paths,
    /// Whole-request timeout (a long poll adds its `wait`).
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_body: usize,
    /// `mesh_master_ca`: the CA an https master is verified against; `None`: the public roots
    /// ureq carries (webpki-roots, Mozilla's).
    pub ca: Option<MasterCa>,
}

pub struct HttpMaster {
    cfg: HttpConfig,
    agent: parking_lot::Mutex<Option<ureq::Agent>>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A fresh request nonce: 128 bits from the OS.
fn fresh_nonce() -> Result<String, CallError> {
    let mut b = [0u8; NONCE_BYTES];
    getrandom::fill(&mut b).map_err(|e| CallError::Transport(format!("no random nonce: {e}")))?;
    Ok(nonce_hex(b))
}

impl HttpMaster {
    pub fn new(cfg: HttpConfig) -> HttpMaster {
        let mut tls_config = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &cfg.ca {
            tls_config = tls_config.root_certs(ca.root_certs());
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls_config.build())
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_connect(Some(cfg.timeout))
            .timeout_global(Some(cfg.timeout))
            .user_agent(concat!("ngx_rtmp_mesh/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        HttpMaster { cfg, agent: parking_lot::Mutex::new(Some(agent)) }
    }

    fn agent(&self) -> Result<ureq::Agent, CallError> {
        self.agent.lock().clone().ok_or(CallError::Stopped)
    }

    /// One signed call; returns the status and the body, verified as the answer to this very
    /// request (its signature covers the request's nonce, method and path).
    fn call(
        &self,
        method: &str,
        path_query: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), CallError> {
        let agent = self.agent()?;
        let url = format!("{}{}", self.cfg.base, path_query);
        let ts = now();
        let nonce = fresh_nonce()?;
        let sig = sign_request(&self.cfg.key, method, path_query, ts, &nonce, body.unwrap_or_default());
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header(H_NODE, &self.cfg.node_id)
            .header(H_TIMESTAMP, ts.to_string())
            .header(H_NONCE, &nonce)
            .header(H_SIGNATURE, &sig);
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req =
            req.body(body.unwrap_or_default().to_vec()).map_err(|e| CallError::Transport(e.to_string()))?;
        let result = req.with_agent(&agent).configure().timeout_global(Some(timeout)).run();
        let mut resp = result.map_err(|e| self.map_err(e))?;
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (rts, rsig) = (header(H_TIMESTAMP), header(H_SIGNATURE));
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(self.cfg.max_body as u64)
            .read_to_vec()
            .map_err(|e| self.map_err(e))?;
        let verified = verify_response(
            &self.cfg.key,
            Bound { method, path_query, nonce: &nonce },
            status,
            Stamp { ts: rts.as_deref(), sig: rsig.as_deref(), nonce: None },
            &bytes,
            now(),
        );
        if !(200..300).contains(&status) && status != 304 {
            // The master's reason, when the refusal is its own (signed): a 400 names the field.
            let reason = (400..500).contains(&status) && verified.is_ok();
            return Err(match reason.then(|| refusal_reason(&bytes)).flatten() {
                Some(reason) => CallError::Refused { status, reason },
                None => CallError::Status(status),
            });
        }
        verified.map_err(CallError::Signature)?;
        Ok((status, bytes))
    }

    fn map_err(&self, e: ureq::Error) -> CallError {
        if let Some(r) = tls::rustls_error(&e) {
            return CallError::Transport(tls::describe(&self.cfg.base, r));
        }
        match e {
            ureq::Error::Timeout(_) => CallError::Timeout,
            ureq::Error::BodyExceedsLimit(_) => CallError::TooLarge(self.cfg.max_body),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => CallError::Timeout,
            ureq::Error::Io(io) if self.agent.lock().is_none() => {
                let _ = io;
                CallError::Stopped
            }
            ureq::Error::Io(io) => CallError::Transport(io.to_string()),
            other => CallError::Transport(other.to_string()),
        }
    }

    fn post_json<Q: Serialize, R: DeserializeOwned>(&self, path: &str, req: &Q) -> Result<R, CallError> {
        let body = serde_json::to_vec(req).map_err(|e| CallError::BadJson(e.to_string()))?;
        let (status, bytes) = self.call("POST", path, Some(&body), self.cfg.timeout)?;
        if status == 304 {
            return Err(CallError::Status(304));
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::BadJson(e.to_string()))
    }
}

/// The `error` of a refusal's body, as printable ASCII of at most 200 bytes.
fn refusal_reason(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let why = v.get("error")?.as_str()?;
    Some(
        why.bytes()
            .take(200)
            .map(|b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' })
            .collect(),
    )
}

impl Master for HttpMaster {
    fn announce(&self, req: &Announce) -> Result<AnnounceReply, CallError> {
        self.post_json(&self.cfg.paths.announce, req)
    }

    fn heartbeat(&self, req: &Heartbeat) -> Result<HeartbeatReply, CallError> {
        self.post_json(&self.cfg.paths.heartbeat, req)
    }

    fn streams(&self, since: u64, wait: Duration) -> Result<Option<Vec<u8>>, CallError> {
        let path = format!(
            "{}?node_id={}&since={since}&wait={}",
            self.cfg.paths.streams,
            self.cfg.node_id,
            wait.as_secs()
        );
        let (status, body) = self.call("GET", &path, None, self.cfg.timeout + wait)?;
        Ok(if status == 304 { None } else { Some(body) })
    }

    fn auth(&self, req: &AuthRequest) -> Result<AuthReply, CallError> {
        self.post_json(&self.cfg.paths.auth, req)
    }

    fn route(&self, req: &RouteRequest) -> Result<RouteReply, CallError> {
        self.post_json(&self.cfg.paths.route, req)
    }

    fn shutdown(&self) {
        if let Some(agent) = self.agent.lock().take() {
            agent.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::sign::{sign_response, verify_request};
    use mesh_core::wire::{Action, RouteStatus};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    const KEY: &[u8] = b"test-master-key";

    /// What the test server saw: method, path, whether the request's signature verified.
    type Seen = (String, String, bool);

    /// A one-connection HTTP server: reads one request, answers with `reply(status, body)`
    /// after `delay`, signed with `sign` (or not).
    fn serve(
        status: u16,
        body: &'static [u8],
        sign: Option<&'static [u8]>,
        delay: Duration,
    ) -> (String, mpsc::Receiver<Seen>) {
        serve_for(status, body, sign, delay, None)
    }

    /// Method, path and nonce to sign an answer for, instead of the request's.
    type Other = (Option<&'static str>, Option<&'static str>, Option<&'static str>);

    /// As [`serve`], the answer signed for another request (`method`, `path`, `nonce`) when
    /// `other` says so: a recorded answer replayed.
    fn serve_for(
        status: u16,
        body: &'static [u8],
        sign: Option<&'static [u8]>,
        delay: Duration,
        other: Option<Other>,
    ) -> (String, mpsc::Receiver<Seen>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap().to_string(), parts.next().unwrap().to_string());
            let (mut ts, mut sig, mut nonce, mut len) = (None, None, None, 0usize);
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(": ").unwrap();
                match k.to_ascii_lowercase().as_str() {
                    "x-mesh-timestamp" => ts = Some(v.to_string()),
                    "x-mesh-signature" => sig = Some(v.to_string()),
                    "x-mesh-nonce" => nonce = Some(v.to_string()),
                    "content-length" => len = v.parse().unwrap(),
                    _ => {}
                }
            }
            let mut reqbody = vec![0; len];
            r.read_exact(&mut reqbody).unwrap();
            let ok = verify_request(
                KEY,
                &method,
                &path,
                Stamp { ts: ts.as_deref(), sig: sig.as_deref(), nonce: nonce.as_deref() },
                &reqbody,
                now(),
            )
            .is_ok();
            let _ = tx.send((method.clone(), path.clone(), ok));
            thread::sleep(delay);
            let ts = now();
            let mut w = s;
            let mut head =
                format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            let nonce = nonce.unwrap_or_default();
            let (m, p, n) = other.unwrap_or_default();
            let to = Bound {
                method: m.unwrap_or(&method),
                path_query: p.unwrap_or(&path),
                nonce: n.unwrap_or(&nonce),
            };
            if let Some(k) = sign {
                head += &format!(
                    "X-Mesh-Timestamp: {ts}\r\nX-Mesh-Signature: {}\r\n",
                    sign_response(k, to, status, ts, body)
                );
            }
            let _ = w.write_all(head.as_bytes());
            let _ = w.write_all(b"\r\n");
            let _ = w.write_all(body);
        });
        (base, rx)
    }

    fn master(base: String) -> HttpMaster {
        HttpMaster::new(HttpConfig {
            base,
            key: KEY.to_vec(),
            node_id: "edge-1".into(),
            paths: Paths::default(),
            timeout: Duration::from_secs(2),
            max_body: 1024,
            ca: None,
        })
    }

    fn route() -> RouteRequest {
        RouteRequest { node_id: "edge-1".into(), stream: "cam1".into() }
    }

    #[test]
    fn signed_round_trip() {
        let (base, seen) = serve(200, br#"{"status":"routed","table_version":3}"#, Some(KEY), Duration::ZERO);
        let r = master(base).route(&route()).unwrap();
        assert_eq!((r.status, r.table_version), (RouteStatus::Routed, Some(3)));
        assert_eq!(seen.recv().unwrap(), ("POST".into(), "/route".into(), true));
    }

    /// An answer signed for another request (another nonce, method or path: recorded and
    /// replayed by a man in the middle) is refused.
    #[test]
    fn an_answer_to_another_request_is_refused() {
        let body = br#"{"status":"routed","table_version":3}"#;
        let n0 = "00000000000000000000000000000000";
        for other in [(None, None, Some(n0)), (Some("GET"), None, None), (None, Some("/auth"), None)] {
            let (base, seen) = serve_for(200, body, Some(KEY), Duration::ZERO, Some(other));
            assert_eq!(
                master(base).route(&route()).unwrap_err(),
                CallError::Signature(SigError::BadSignature)
            );
            assert!(seen.recv().unwrap().2, "the request was good");
        }
        let (base, _) = serve_for(200, body, Some(KEY), Duration::ZERO, Some((None, None, None)));
        assert!(master(base).route(&route()).is_ok(), "its own answer");
    }

    #[test]
    fn long_poll_path_and_304() {
        let (base, seen) = serve(304, b"", Some(KEY), Duration::ZERO);
        assert_eq!(master(base).streams(41, Duration::from_secs(1)).unwrap(), None);
        assert_eq!(
            seen.recv().unwrap(),
            ("GET".into(), "/streams?node_id=edge-1&since=41&wait=1".into(), true)
        );
    }

    #[test]
    fn refusals() {
        type Case = (u16, &'static [u8], Option<&'static [u8]>, CallError);
        let cases: Vec<Case> = vec![
            (200, br#"{"status":"routed"}"#, None, CallError::Signature(SigError::Missing)),
            (
                200,
                br#"{"status":"routed"}"#,
                Some(b"other-key"),
                CallError::Signature(SigError::BadSignature),
            ),
            (500, b"oops", Some(KEY), CallError::Status(500)),
            (
                400,
                br#"{"error":"no rtmp_url for a relay node\n"}"#,
                Some(KEY),
                CallError::Refused { status: 400, reason: "no rtmp_url for a relay node?".into() },
            ),
            (
                429,
                br#"{"error":"too many requests"}"#,
                Some(KEY),
                CallError::Refused { status: 429, reason: "too many requests".into() },
            ),
            (400, br#"{"error":"forged"}"#, None, CallError::Status(400)),
            (400, br#"{"error":"forged"}"#, Some(b"other-key"), CallError::Status(400)),
            (
                200,
                br#"{"status":"#,
                Some(KEY),
                CallError::BadJson("EOF while parsing a value at line 1 column 10".into()),
            ),
            (200, &[b'x'; 2000], Some(KEY), CallError::TooLarge(1024)),
        ];
        for (status, body, sign, want) in cases {
            let (base, _) = serve(status, body, sign, Duration::ZERO);
            assert_eq!(master(base).route(&route()).unwrap_err(), want);
        }
    }

    #[test]
    fn stall_times_out_and_shutdown_interrupts() {
        let (base, _) = serve(200, b"{}", Some(KEY), Duration::from_secs(5));
        assert_eq!(master(base).route(&route()).unwrap_err(), CallError::Timeout);

        let (base, seen) = serve(200, b"{}", Some(KEY), Duration::from_secs(30));
        let m = std::sync::Arc::new(master(base));
        let m2 = m.clone();
        let t = thread::spawn(move || {
            let started = std::time::Instant::now();
            let r = m2.streams(0, Duration::from_secs(25));
            (r, started.elapsed())
        });
        seen.recv().unwrap();
        m.shutdown();
        let (r, took) = t.join().unwrap();
        assert!(r.is_err());
        assert!(took < Duration::from_secs(5), "shutdown interrupted the poll ({took:?})");
        let auth = AuthRequest {
            node_id: "n".into(),
            action: Action::Play,
            stream: "s".into(),
            key: None,
            token: Some("t".into()),
            addr: "a".into(),
        };
        assert_eq!(m.auth(&auth).unwrap_err(), CallError::Stopped);
    }

    #[test]
    fn refused_connection_is_a_transport_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        assert!(matches!(master(base).route(&route()).unwrap_err(), CallError::Transport(_)));
    }
}
