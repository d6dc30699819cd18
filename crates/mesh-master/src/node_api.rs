//! The node endpoints of docs/protocol.md: every request's signature checked, then the
//! node's rate (429 past it) and every field of its body (400 with a reason); every response
//! signed; the streams endpoint a long poll.

// Early returns carry a whole response (axum's `Response` is 128 bytes); it is the cold path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::{to_bytes, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use tracing::{debug, error, info, warn};

use mesh_core::name::{for_log, is_valid_id};
use mesh_core::sign::{
    parse_nonce, verify_request, SigError, Stamp, H_NODE, H_NONCE, H_SIGNATURE, H_TIMESTAMP,
};
use mesh_core::status::label;
use mesh_core::token::{ct_eq, key_sha256_hex};
use mesh_core::wire::{
    Action, Announce, AnnounceReply, AuthReply, AuthRequest, Heartbeat, HeartbeatReply, RouteReply,
    RouteRequest,
};

use crate::creds::NodeCred;
use crate::guards::LargeBody;
use crate::listener::{Busy, Conn};
use crate::mesh::{self, MeshError};
use crate::nonces::NonceError;
use crate::rates::Class;
use crate::server::{now, unsigned, App, Reply, BODY_TIMEOUT, MAX_BODY};
use crate::validate::{self, Invalid};

mod poll;
pub(crate) use poll::streams;
#[cfg(test)]
pub(crate) use poll::tests_with_epoch;

/// How long an auth answer may be cached by a node.
const AUTH_TTL_S: u64 = 60;

/// A node's request, its signature checked with the node's key, its nonce taken and its rate
/// taken: the node's id, the body, and what its answers are signed for.
struct NodeCall {
    node: String,
    /// The node's credential when the request was checked (a long poll checks it again).
    cred: NodeCred,
    uri: axum::http::Uri,
    body: Bytes,
    reply: Reply,
    /// Its connection is not closed to make room while the request runs (a long poll, say).
    _busy: Option<Busy>,
}

/// Count a refused request and answer it, signed for it.
fn refuse(app: &App, to: &Reply, node: &str, path: &str, status: StatusCode, why: &str) -> Response {
    warn!(node = %for_log(node), path = %for_log(path), error = %why, "request refused");
    app.counters.inc("mesh_master_requests_refused_total", &format!("reason=\"{}\"", label(why)));
    app.signed_error(to, status, why)
}

async fn node_call(app: &App, req: Request, class: Class) -> Result<NodeCall, Response> {
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let path_query =
        parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_string(), |pq| pq.as_str().to_string());
    let node = text(H_NODE).unwrap_or("").to_string();
    let path = parts.uri.path().to_string();
    if !is_valid_id(&node) {
        // No node, no key to sign with.
        warn!(node = %for_log(&node), path = %for_log(&path), "request refused: bad X-Mesh-Node");
        app.counters.inc("mesh_master_requests_refused_total", "reason=\"bad_x_mesh_node\"");
        return Err(unsigned(StatusCode::UNAUTHORIZED, br#"{"error":"bad X-Mesh-Node"}"#.to_vec()));
    }
    let (key, cred) = app.creds.key(&node);
    let nonce = text(H_NONCE).filter(|n| parse_nonce(n).is_some()).unwrap_or("").to_string();
    let reply = Reply { key, method: parts.method.as_str().to_string(), path_query, nonce };
    // The body is read before its signature can be checked: a large one draws on a budget
    // shared by all, so strangers cannot make the master hold a MiB per connection.
    let declared = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let Some(large) = LargeBody::reserve(declared) else {
        let mut r = app.signed_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "too many large bodies");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(r);
    };
    let body = match tokio::time::timeout(BODY_TIMEOUT, to_bytes(body, MAX_BODY)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return Err(app.signed_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "body too large")),
        Err(_) => return Err(app.signed_error(&reply, StatusCode::REQUEST_TIMEOUT, "body timed out")),
    };
    drop(large);
    let stamp = Stamp { ts: text(H_TIMESTAMP), sig: text(H_SIGNATURE), nonce: text(H_NONCE) };
    let t = now();
    let verified = match verify_request(&reply.key, &reply.method, &reply.path_query, stamp, &body, t) {
        Ok(v) => v,
        Err(e) => {
            let with_secret =
                |k: &[u8]| verify_request(k, &reply.method, &reply.path_query, stamp, &body, t).is_ok();
            if e == SigError::BadSignature && app.creds.is_the_secret(with_secret) {
                error!(node = %node, "request signed with the master secret: give the node its own key \
                       (mesh-tool node-key), never the master secret");
            }
            return Err(refuse(app, &reply, &node, &path, StatusCode::UNAUTHORIZED, &e.to_string()));
        }
    };
    if cred.revoked {
        return Err(refuse(app, &reply, &node, &path, StatusCode::UNAUTHORIZED, "node revoked"));
    }
    if verified.ts <= app.started_at {
        let why = "timestamp before the master started";
        return Err(refuse(app, &reply, &node, &path, StatusCode::UNAUTHORIZED, why));
    }
    if let Err(e) = app.nonces.lock().take(&node, verified.nonce, verified.ts, t) {
        let mut r = refuse(app, &reply, &node, &path, nonce_status(e), &e.to_string());
        if e == NonceError::Full {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        return Err(r);
    }
    if !app.rates.take(&node, class, std::time::Instant::now()) {
        app.counters.inc("mesh_master_requests_limited_total", &format!("class=\"{}\"", class.label()));
        debug!(node = %node, class = class.label(), "request refused: too many requests");
        let mut r = app.signed_error(&reply, StatusCode::TOO_MANY_REQUESTS, "too many requests");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(r);
    }
    let busy = parts.extensions.get::<Arc<Conn>>().map(Conn::busy);
    Ok(NodeCall { node, cred, uri: parts.uri, body, reply, _busy: busy })
}

fn nonce_status(e: NonceError) -> StatusCode {
    match e {
        NonceError::Replay => StatusCode::UNAUTHORIZED,
        NonceError::Full => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The body as `T`, naming the same node as the header, its fields passing `check`.
fn payload<T: for<'de> Deserialize<'de>>(
    app: &App,
    call: &NodeCall,
    id: impl Fn(&T) -> &str,
    check: impl FnOnce(&T) -> Result<(), Invalid>,
) -> Result<T, Response> {
    let v: T = serde_json::from_slice(&call.body)
        .map_err(|e| invalid(app, call, &printable(&format!("bad body: {e}"), 200)))?;
    if id(&v) != call.node {
        return Err(app.signed_error(
            &call.reply,
            StatusCode::BAD_REQUEST,
            "node_id differs from X-Mesh-Node",
        ));
    }
    check(&v).map_err(|e| invalid(app, call, &e.to_string()))?;
    Ok(v)
}

/// At most `max` bytes of `s`, every byte outside printable ASCII as `?` (serde's messages
/// quote what was sent).
fn printable(s: &str, max: usize) -> String {
    s.bytes().take(max).map(|b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' }).collect()
}

/// A 400 for a bad field: counted, logged (the node logs it too, once).
fn invalid(app: &App, call: &NodeCall, why: &str) -> Response {
    let endpoint = for_log(call.uri.path().trim_start_matches('/'));
    app.counters.inc("mesh_master_requests_invalid_total", &format!("endpoint=\"{}\"", label(&endpoint)));
    info!(node = %call.node, path = %for_log(call.uri.path()), reason = %why, "request refused: invalid field");
    app.signed_error(&call.reply, StatusCode::BAD_REQUEST, why)
}

/// Not in the mesh: never announced (404: announce), or waiting for a role (403).
fn not_announced(app: &App, call: &NodeCall, e: MeshError) -> Response {
    let status = if e == MeshError::Pending { StatusCode::FORBIDDEN } else { StatusCode::NOT_FOUND };
    app.signed_error(&call.reply, status, &e.to_string())
}

pub(crate) async fn announce(State(app): State<Arc<App>>, req: Request) -> Response {
    let call = match node_call(&app, req, Class::Beat).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let role_in_force = |a: &Announce| app.mesh.lock().role_for(a);
    let a: Announce =
        match payload(&app, &call, |a: &Announce| &a.node_id, |a| validate::announce(a, role_in_force(a))) {
            Ok(a) => a,
            Err(r) => return r,
        };
    // On the blocking pool: a decision under way holds the mesh, never a thread that answers
    // heartbeats.
    let decided = {
        let (app, a) = (app.clone(), a.clone());
        tokio::task::spawn_blocking(move || {
            app.with_mesh(|m| (m.announce(&a, now()), m.cfg.heartbeat_interval_s))
        })
    };
    let Ok((done, interval)) = decided.await else {
        return app.signed_error(&call.reply, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    app.counters.inc("mesh_master_announces_total", "");
    let Some(role) = done.role else {
        // No table, no keys, no hops: it announces again at its heartbeat interval.
        info!(node = %a.node_id, asks = %a.role, "node announced, awaiting approval (no role granted)");
        app.counters.inc("mesh_master_announces_pending_total", "");
        return app.signed_error(&call.reply, StatusCode::FORBIDDEN, mesh::PENDING_REASON);
    };
    if done.granted_now {
        if let Err(e) = app.store.lock().set_role(&a.node_id, Some(role)) {
            error!(node = %a.node_id, error = %e, "database: cannot keep an auto-approved role");
        }
        info!(node = %a.node_id, role = %role, "role granted by auto-approval");
    } else if a.role != role {
        info!(node = %a.node_id, asks = %a.role, role = %role, "announced role ignored: the granted one is in force");
    }
    info!(node = %a.node_id, role = %role, rtmp_url = %a.rtmp_url, version = %a.version, "node announced");
    app.signed_json(
        &call.reply,
        StatusCode::OK,
        &AnnounceReply {
            role: Some(role),
            heartbeat_interval_s: Some(interval),
            table_refresh_s: Some(app.max_poll_wait_s),
            epoch: Some(app.epoch.clone()),
        },
    )
}

pub(crate) async fn heartbeat(State(app): State<Arc<App>>, req: Request) -> Response {
    let call = match node_call(&app, req, Class::Beat).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let hb: Heartbeat = match payload(&app, &call, |h: &Heartbeat| &h.node_id, validate::heartbeat) {
        Ok(h) => h,
        Err(r) => return r,
    };
    // Applied now if the mesh is free, else by the decision holding it: the answer is what the
    // node was last told, never a wait behind another node's decision.
    // On the blocking pool: when it applies (its own and the queued ones), the decision holds
    // no thread that answers requests.
    let (id, claimed) = (hb.node_id.clone(), hb.role);
    let applied = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || app.heartbeat(hb, now())).await
    };
    let Ok(applied) = applied else {
        return app.signed_error(&call.reply, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    // Pushes it reports down: their targets probed now (crate::probe).
    crate::probe::suspects(&app);
    match applied {
        Ok(told) => {
            app.counters.inc("mesh_master_heartbeats_total", &format!("node=\"{id}\""));
            if claimed != told.role {
                // Taken as its granted role (the answer says which); never as the one it names.
                app.counters.inc("mesh_master_role_claims_ignored_total", "");
                info!(node = %id, asks = %claimed, role = %told.role,
                      "heartbeat role ignored: the granted one is in force");
            }
            let table_version = app.serving_tables().then_some(told.version);
            let epoch = Some(app.epoch.clone());
            app.signed_json(
                &call.reply,
                StatusCode::OK,
                &HeartbeatReply { table_version, role: Some(told.role), epoch },
            )
        }
        Err(e) => not_announced(&app, &call, e),
    }
}

pub(crate) async fn auth(State(app): State<Arc<App>>, req: Request) -> Response {
    let call = match node_call(&app, req, Class::Call).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let a: AuthRequest = match payload(&app, &call, |a: &AuthRequest| &a.node_id, validate::auth) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let reply = decide(&app, &a);
    let action = match a.action {
        Action::Publish => "publish",
        Action::Play => "play",
    };
    let result = if reply.allow { "allow" } else { "deny" };
    app.counters.inc("mesh_master_auth_total", &format!("action=\"{action}\",result=\"{result}\""));
    if !reply.allow {
        info!(node = %a.node_id, action = ?a.action, stream = %a.stream, addr = %a.addr,
              reason = reply.reason.as_deref().unwrap_or(""), "auth: denied");
    }
    app.signed_json(&call.reply, StatusCode::OK, &reply)
}

fn decide(app: &App, a: &AuthRequest) -> AuthReply {
    let deny = |why: &str| AuthReply { allow: false, ttl_s: Some(AUTH_TTL_S), reason: Some(why.into()) };
    let m = app.mesh.lock();
    let Some(node) = m.nodes().get(&a.node_id) else {
        return deny(if m.pending().contains_key(&a.node_id) {
            mesh::PENDING_REASON
        } else {
            "node not announced"
        });
    };
    match a.action {
        Action::Publish => {
            if !node.role.takes_broadcasters() {
                return deny("wrong role");
            }
            let Some(want) = m.publish_key(&a.stream) else { return deny("unknown stream") };
            match &a.key {
                None => deny("no key"),
                Some(k) if ct_eq(key_sha256_hex(k).as_bytes(), want.as_bytes()) => {
                    AuthReply { allow: true, ttl_s: Some(AUTH_TTL_S), reason: Some("stream key".into()) }
                }
                Some(_) => deny("wrong key"),
            }
        }
        Action::Play => {
            if !node.role.serves_viewers() {
                return deny("wrong role");
            }
            let Some(token) = &a.token else { return deny("no token") };
            // The rules of the nodes' tables: the same keys, identities and lifetime.
            let t = now();
            match m.viewers().verify(&a.stream, m.stream_identity(&a.stream), token, t) {
                Ok(()) => AuthReply {
                    allow: true,
                    ttl_s: Some(allow_ttl(&m.viewers(), token, t)),
                    reason: Some("token".into()),
                },
                Err(e) => deny(&e.to_string()),
            }
        }
    }
}

/// How long a node may keep an allow for a good `token`: [`AUTH_TTL_S`], but never past the
/// token's expiry or the end of its key's grace (a node caches the answer and admits with it:
/// a token with 1 s to live was good for a minute more, as was one of a retiring key).
fn allow_ttl(v: &mesh_core::viewer::Viewers<'_>, token: &str, now: u64) -> u64 {
    use mesh_core::token::{parse_token, Parsed};
    let Ok(p) = parse_token(token) else { return 1 };
    let mut until = p.expiry();
    if let Parsed::V2 { kid, .. } = p {
        if let Some(end) = v.keys.iter().find(|k| k.id == kid).and_then(|k| k.not_after) {
            until = until.min(end);
        }
    }
    until.saturating_sub(now).clamp(1, AUTH_TTL_S)
}

pub(crate) async fn route(State(app): State<Arc<App>>, req: Request) -> Response {
    let call = match node_call(&app, req, Class::Call).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r: RouteRequest = match payload(&app, &call, |r: &RouteRequest| &r.node_id, validate::route) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let decided = {
        let (app, edge, stream) = (app.clone(), r.node_id.clone(), r.stream.clone());
        tokio::task::spawn_blocking(move || app.with_mesh(|m| m.route(&edge, &stream, now()))).await
    };
    let Ok(decided) = decided else {
        return app.signed_error(&call.reply, StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    match decided {
        Ok((status, version)) => {
            info!(node = %r.node_id, stream = %r.stream, status = ?status, "route request");
            let answer = serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            app.counters.inc("mesh_master_routes_total", &format!("status=\"{answer}\""));
            app.signed_json(&call.reply, StatusCode::OK, &RouteReply { status, table_version: Some(version) })
        }
        Err(e) => not_announced(&app, &call, e),
    }
}
