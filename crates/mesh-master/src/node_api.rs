//! The node endpoints of docs/protocol.md: every request's signature checked, then the
//! node's rate (429 past it) and every field of its body (400 with a reason); every response
//! signed; the streams endpoint a long poll.

// Early returns carry a whole response (axum's `Response` is 128 bytes); it is the cold path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use tracing::{debug, info, warn};

use mesh_core::name::{for_log, is_valid_id};
use mesh_core::sign::{verify_request, Stamp, H_NODE, H_SIGNATURE, H_TIMESTAMP};
use mesh_core::status::label;
use mesh_core::token::{ct_eq, key_sha256_hex};
use mesh_core::wire::{
    Action, Announce, AnnounceReply, AuthReply, AuthRequest, Heartbeat, HeartbeatReply, RouteReply,
    RouteRequest,
};

use crate::listener::{Busy, Conn};
use crate::mesh::MeshError;
use crate::rates::Class;
use crate::server::{now, App, BODY_TIMEOUT, MAX_BODY};
use crate::validate::{self, Invalid};

/// How long an auth answer may be cached by a node.
const AUTH_TTL_S: u64 = 60;

/// A node's request, its signature checked and its rate taken: the node's id and the body.
struct NodeCall {
    node: String,
    uri: axum::http::Uri,
    body: Bytes,
    /// Its connection is not closed to make room while the request runs (a long poll, say).
    _busy: Option<Busy>,
}

async fn node_call(app: &App, req: Request, class: Class) -> Result<NodeCall, Response> {
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(BODY_TIMEOUT, to_bytes(body, MAX_BODY)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return Err(app.signed_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large")),
        Err(_) => return Err(app.signed_error(StatusCode::REQUEST_TIMEOUT, "body timed out")),
    };
    let h = &parts.headers;
    let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let path_query =
        parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_string(), |pq| pq.as_str().to_string());
    let stamp = Stamp { ts: text(H_TIMESTAMP), sig: text(H_SIGNATURE) };
    let node = text(H_NODE).unwrap_or("").to_string();
    if let Err(e) = verify_request(&app.master_key, parts.method.as_str(), &path_query, stamp, &body, now()) {
        warn!(node = %for_log(&node), path = %for_log(parts.uri.path()), error = %e, "request refused");
        app.counters
            .inc("mesh_master_requests_refused_total", &format!("reason=\"{}\"", label(&e.to_string())));
        return Err(app.signed_error(StatusCode::UNAUTHORIZED, &e.to_string()));
    }
    if !is_valid_id(&node) {
        return Err(app.signed_error(StatusCode::BAD_REQUEST, "bad X-Mesh-Node"));
    }
    if !app.rates.take(&node, class, std::time::Instant::now()) {
        app.counters.inc("mesh_master_requests_limited_total", &format!("class=\"{}\"", class.label()));
        debug!(node = %node, class = class.label(), "request refused: too many requests");
        let mut r = app.signed_error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(r);
    }
    let busy = parts.extensions.get::<Arc<Conn>>().map(Conn::busy);
    Ok(NodeCall { node, uri: parts.uri, body, _busy: busy })
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
        return Err(app.signed_error(StatusCode::BAD_REQUEST, "node_id differs from X-Mesh-Node"));
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
    app.signed_error(StatusCode::BAD_REQUEST, why)
}

fn not_announced(app: &App, e: MeshError) -> Response {
    app.signed_error(StatusCode::NOT_FOUND, &e.to_string())
}

pub(crate) async fn announce(State(app): State<Arc<App>>, req: Request) -> Response {
    let call = match node_call(&app, req, Class::Beat).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let role_in_force = |a: &Announce| app.mesh.lock().roles.get(&a.node_id).copied().unwrap_or(a.role);
    let a: Announce =
        match payload(&app, &call, |a: &Announce| &a.node_id, |a| validate::announce(a, role_in_force(a))) {
            Ok(a) => a,
            Err(r) => return r,
        };
    let role = app.with_mesh(|m| m.announce(&a, now()));
    app.counters.inc("mesh_master_announces_total", "");
    let interval = app.mesh.lock().cfg.heartbeat_interval_s;
    info!(node = %a.node_id, role = %role, rtmp_url = %a.rtmp_url, version = %a.version, "node announced");
    app.signed_json(
        StatusCode::OK,
        &AnnounceReply {
            role: Some(role),
            heartbeat_interval_s: Some(interval),
            table_refresh_s: Some(app.max_poll_wait_s),
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
    match app.with_mesh(|m| m.heartbeat(&hb, now()).map(|role| (role, m.table_version(&hb.node_id)))) {
        Ok((role, version)) => {
            app.counters.inc("mesh_master_heartbeats_total", &format!("node=\"{}\"", hb.node_id));
            let table_version = app.serving_tables().then_some(version);
            app.signed_json(StatusCode::OK, &HeartbeatReply { table_version, role: Some(role) })
        }
        Err(e) => not_announced(&app, e),
    }
}

#[derive(Deserialize)]
struct PollQuery {
    node_id: String,
    #[serde(default)]
    since: u64,
    #[serde(default)]
    wait: u64,
}

pub(crate) async fn streams(State(app): State<Arc<App>>, req: Request) -> Response {
    let call = match node_call(&app, req, Class::Poll).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q: PollQuery = match Query::try_from_uri(&call.uri) {
        Ok(Query(q)) => q,
        Err(_) => return app.signed_error(StatusCode::BAD_REQUEST, "bad query: node_id, since, wait"),
    };
    if q.node_id != call.node {
        return app.signed_error(StatusCode::BAD_REQUEST, "node_id differs from X-Mesh-Node");
    }
    if let Err(e) = validate::since(q.since) {
        return invalid(&app, &call, &e.to_string());
    }
    if !app.mesh.lock().is_known(&q.node_id) {
        return not_announced(&app, MeshError::NotAnnounced);
    }
    let mut changes = app.changed.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(app.max_poll_wait_s));
    loop {
        if app.serving_tables() {
            let table = app.mesh.lock().table_json(&q.node_id);
            if let Some((v, body)) = table.filter(|(v, _)| *v > q.since) {
                info!(node = %q.node_id, version = v, "table sent");
                app.counters.inc("mesh_master_tables_sent_total", "");
                return app.signed(StatusCode::OK, body);
            }
        }
        // Woken by a change, at the deadline, or when tables start being served.
        let wake_at = match app.serve_tables_at.saturating_sub(now()) {
            0 => deadline,
            grace => deadline.min(tokio::time::Instant::now() + Duration::from_secs(grace)),
        };
        let wake = tokio::time::sleep_until(wake_at);
        tokio::select! {
            r = changes.changed() => if r.is_err() { break },
            _ = wake => {}
        }
        if tokio::time::Instant::now() >= deadline || app.closing() {
            break;
        }
    }
    app.signed(StatusCode::NOT_MODIFIED, Vec::new())
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
    app.signed_json(StatusCode::OK, &reply)
}

fn decide(app: &App, a: &AuthRequest) -> AuthReply {
    let deny = |why: &str| AuthReply { allow: false, ttl_s: Some(AUTH_TTL_S), reason: Some(why.into()) };
    let m = app.mesh.lock();
    let Some(node) = m.nodes.get(&a.node_id) else { return deny("node not announced") };
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
    match app.with_mesh(|m| m.route(&r.node_id, &r.stream, now())) {
        Ok((status, version)) => {
            info!(node = %r.node_id, stream = %r.stream, status = ?status, "route request");
            let answer = serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            app.counters.inc("mesh_master_routes_total", &format!("status=\"{answer}\""));
            app.signed_json(StatusCode::OK, &RouteReply { status, table_version: Some(version) })
        }
        Err(e) => not_announced(&app, e),
    }
}
