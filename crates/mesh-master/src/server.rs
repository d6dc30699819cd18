//! The master's HTTP side: the node endpoints of docs/protocol.md (every request's signature
//! checked, every response signed, the streams endpoint a long poll), and the admin API behind
//! a bearer token.

// Early returns carry a whole response (axum's `Response` is 128 bytes); it is the cold path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use mesh_core::name::is_valid_id;
use mesh_core::role::Role;
use mesh_core::sign::{sign_response, verify_request, Stamp, H_NODE, H_SIGNATURE, H_TIMESTAMP};
use mesh_core::status::label;
use mesh_core::token::{ct_eq, key_sha256_hex};
pub use mesh_core::wire::Paths;
use mesh_core::wire::{
    Action, Announce, AnnounceReply, AuthReply, AuthRequest, Heartbeat, HeartbeatReply, RouteReply,
    RouteRequest,
};

use crate::admin_viewers;
use crate::mesh::{Mesh, MeshError};
use crate::metrics::{self, Counters};
use crate::store::{Store, StoreError, VERSION_BLOCK};

/// Largest request body taken from a node or an admin.
const MAX_BODY: usize = 1 << 20;
/// How long an auth answer may be cached by a node.
const AUTH_TTL_S: u64 = 60;

/// Everything a request handler reaches.
pub struct App {
    pub mesh: Mutex<Mesh>,
    pub store: Mutex<Store>,
    pub master_key: Vec<u8>,
    pub admin_token: String,
    /// Tables are not served before this (unix s): after a restart, nodes keep their last
    /// tables until the heartbeats have told the new master where streams are.
    pub serve_tables_at: u64,
    pub max_poll_wait_s: u64,
    /// Bumped on every change of any table: long polls wake up and look.
    changed: watch::Sender<u64>,
    ceiling: Mutex<u64>,
    /// Shutting down: long polls answer at once.
    closing: std::sync::atomic::AtomicBool,
    pub counters: Counters,
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Random bytes as hex (keys, secrets).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS random source");
    hex::encode(b)
}

/// Hop keys from the OS's random source.
pub struct RandomKeys;

impl crate::mesh::Keys for RandomKeys {
    fn hop_key(&mut self) -> String {
        random_hex(16)
    }
}

impl App {
    pub fn new(
        mesh: Mesh,
        store: Store,
        master_key: Vec<u8>,
        admin_token: String,
        serve_tables_at: u64,
        max_poll_wait_s: u64,
    ) -> Arc<App> {
        let ceiling = mesh.version();
        let app = Arc::new(App {
            mesh: Mutex::new(mesh),
            store: Mutex::new(store),
            master_key,
            admin_token,
            serve_tables_at,
            max_poll_wait_s,
            changed: watch::Sender::new(0),
            ceiling: Mutex::new(ceiling),
            closing: Default::default(),
            counters: Counters::default(),
        });
        app.reserve_versions(ceiling);
        app
    }

    /// After a change: keep the version ceiling ahead of what was handed out, wake long polls.
    fn changed(&self, version: u64) {
        self.reserve_versions(version);
        self.changed.send_modify(|g| *g += 1);
    }

    fn reserve_versions(&self, version: u64) {
        let mut ceiling = self.ceiling.lock();
        if version + 1 >= *ceiling {
            let next = version + VERSION_BLOCK;
            match self.store.lock().set_version_ceiling(next) {
                Ok(()) => *ceiling = next,
                Err(e) => warn!(error = %e, "cannot save the version ceiling"),
            }
        }
    }

    /// Run `f` on the mesh, then publish what changed.
    fn with_mesh<R>(&self, f: impl FnOnce(&mut Mesh) -> R) -> R {
        let (r, before, after) = {
            let mut m = self.mesh.lock();
            let before = m.version();
            let r = f(&mut m);
            (r, before, m.version())
        };
        if after != before {
            self.changed(after);
        }
        r
    }

    /// Shutting down: answer the long polls now (a graceful shutdown waits for them).
    pub fn close(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::Relaxed);
        self.changed.send_modify(|g| *g += 1);
    }

    fn closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Once a second: nodes gone silent, viewer keys whose grace has ended.
    pub fn sweep(&self) {
        let t = now();
        let died = self.with_mesh(|m| m.sweep(t));
        self.counters.add("mesh_master_node_deaths_total", "", died.len() as u64);
        for id in died {
            warn!(node = %id, "node dead: no heartbeat; its streams are placed again");
        }
        if self.with_mesh(|m| m.drop_retired_viewer_keys(t)) {
            let dropped = self.store.lock().drop_retired_viewer_keys(t);
            match dropped {
                Ok(ids) => {
                    for id in ids {
                        info!(key = %id, "viewer key dropped: its grace has ended");
                    }
                }
                Err(e) => warn!(error = %e, "cannot drop retired viewer keys"),
            }
        }
    }

    /// Streams changed in the database (keys, identities): the tables follow.
    pub(crate) fn reload_publish(&self) {
        let streams = self.store.lock().streams();
        match streams {
            Ok(s) => self.with_mesh(|m| m.set_streams(s)),
            Err(e) => warn!(error = %e, "cannot read the streams"),
        }
    }

    /// Viewer keys changed in the database: the tables of nodes that serve viewers follow.
    pub(crate) fn reload_viewer_keys(&self) -> Result<(), StoreError> {
        let keys = self.store.lock().viewer_keys()?;
        self.with_mesh(|m| m.set_viewer_keys(keys));
        Ok(())
    }

    fn serving_tables(&self) -> bool {
        now() >= self.serve_tables_at
    }

    /// A signed response.
    fn signed(&self, status: StatusCode, body: Vec<u8>) -> Response {
        let ts = now();
        let sig = sign_response(&self.master_key, status.as_u16(), ts, &body);
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(H_TIMESTAMP, HeaderValue::from(ts));
        h.insert(H_SIGNATURE, HeaderValue::from_str(&sig).expect("hex"));
        r
    }

    fn signed_json(&self, status: StatusCode, v: &impl Serialize) -> Response {
        self.signed(status, serde_json::to_vec(v).unwrap_or_default())
    }

    fn signed_error(&self, status: StatusCode, why: &str) -> Response {
        self.signed_json(status, &json!({ "error": why }))
    }
}

/// A node's request, its signature checked: the node's id and the body.
struct NodeCall {
    node: String,
    uri: axum::http::Uri,
    body: Bytes,
}

async fn node_call(app: &App, req: Request) -> Result<NodeCall, Response> {
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| app.signed_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"))?;
    let h = &parts.headers;
    let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let path_query =
        parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_string(), |pq| pq.as_str().to_string());
    let stamp = Stamp { ts: text(H_TIMESTAMP), sig: text(H_SIGNATURE) };
    let node = text(H_NODE).unwrap_or("").to_string();
    if let Err(e) = verify_request(&app.master_key, parts.method.as_str(), &path_query, stamp, &body, now()) {
        warn!(node = %node, path = %parts.uri.path(), error = %e, "request refused");
        app.counters
            .inc("mesh_master_requests_refused_total", &format!("reason=\"{}\"", label(&e.to_string())));
        return Err(app.signed_error(StatusCode::UNAUTHORIZED, &e.to_string()));
    }
    if !is_valid_id(&node) {
        return Err(app.signed_error(StatusCode::BAD_REQUEST, "bad X-Mesh-Node"));
    }
    Ok(NodeCall { node, uri: parts.uri, body })
}

/// The body as `T`, naming the same node as the header.
fn payload<T: for<'de> Deserialize<'de>>(
    app: &App,
    call: &NodeCall,
    id: impl Fn(&T) -> &str,
) -> Result<T, Response> {
    let v: T = serde_json::from_slice(&call.body)
        .map_err(|e| app.signed_error(StatusCode::BAD_REQUEST, &format!("bad body: {e}")))?;
    if id(&v) != call.node {
        return Err(app.signed_error(StatusCode::BAD_REQUEST, "node_id differs from X-Mesh-Node"));
    }
    Ok(v)
}

fn not_announced(app: &App, e: MeshError) -> Response {
    app.signed_error(StatusCode::NOT_FOUND, &e.to_string())
}

async fn announce(State(app): State<Arc<App>>, req: Request) -> Response {
    let call = match node_call(&app, req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let a: Announce = match payload(&app, &call, |a: &Announce| &a.node_id) {
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

async fn heartbeat(State(app): State<Arc<App>>, req: Request) -> Response {
    let call = match node_call(&app, req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let hb: Heartbeat = match payload(&app, &call, |h: &Heartbeat| &h.node_id) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match app.with_mesh(|m| m.heartbeat(&hb, now()).map(|role| (role, m.table_version(&hb.node_id)))) {
        Ok((role, version)) => {
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

async fn streams(State(app): State<Arc<App>>, req: Request) -> Response {
    let call = match node_call(&app, req).await {
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

async fn auth(State(app): State<Arc<App>>, req: Request) -> Response {
    let call = match node_call(&app, req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let a: AuthRequest = match payload(&app, &call, |a: &AuthRequest| &a.node_id) {
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

async fn route(State(app): State<Arc<App>>, req: Request) -> Response {
    let call = match node_call(&app, req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r: RouteRequest = match payload(&app, &call, |r: &RouteRequest| &r.node_id) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !is_valid_id(&r.stream) {
        return app.signed_error(StatusCode::BAD_REQUEST, "bad stream name");
    }
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

// --- admin API ---------------------------------------------------------------------------

/// Every admin call needs the bearer token.
async fn require_admin(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !app.admin_token.is_empty() && ct_eq(given.as_bytes(), app.admin_token.as_bytes()) {
        next.run(req).await
    } else {
        warn!(path = %req.uri().path(), "admin API: request without a valid token refused");
        admin_error(StatusCode::UNAUTHORIZED, "admin token required")
    }
}

pub(crate) fn admin_error(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(json!({ "error": why }))).into_response()
}

pub(crate) fn store_error(e: StoreError) -> Response {
    warn!(error = %e, "database");
    admin_error(StatusCode::INTERNAL_SERVER_ERROR, "database error")
}

/// The answer to a change of stream keys in the database: done (the ingest tables follow),
/// nothing of that name (404), or a database error.
fn keys_changed(
    app: &App,
    r: Result<bool, StoreError>,
    missing: &str,
    done: impl FnOnce() -> Response,
) -> Response {
    match r {
        Ok(true) => {
            app.reload_publish();
            done()
        }
        Ok(false) => admin_error(StatusCode::NOT_FOUND, missing),
        Err(e) => store_error(e),
    }
}

pub(crate) async fn admin_body<T: for<'de> Deserialize<'de>>(body: Body) -> Result<T, Response> {
    let bytes = to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| admin_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| admin_error(StatusCode::BAD_REQUEST, &format!("bad body: {e}")))
}

async fn admin_nodes(State(app): State<Arc<App>>) -> Response {
    let m = app.mesh.lock();
    let nodes: Vec<_> = m
        .nodes
        .values()
        .map(|n| {
            let mut v = serde_json::to_value(n).unwrap_or_default();
            v["table_version_sent"] = m.table_version(&n.node_id).into();
            v
        })
        .collect();
    axum::Json(json!({ "nodes": nodes })).into_response()
}

#[derive(Deserialize)]
struct RoleBody {
    role: Option<Role>,
}

async fn admin_set_role(State(app): State<Arc<App>>, Path(id): Path<String>, body: Body) -> Response {
    if !is_valid_id(&id) {
        return admin_error(StatusCode::BAD_REQUEST, "bad node id");
    }
    let b: RoleBody = match admin_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = app.store.lock().set_role(&id, b.role) {
        return store_error(e);
    }
    app.with_mesh(|m| m.set_role(&id, b.role, now()));
    info!(node = %id, role = ?b.role, "admin: role assigned");
    axum::Json(json!({ "node_id": id, "role": b.role })).into_response()
}

async fn admin_streams(State(app): State<Arc<App>>) -> Response {
    let m = app.mesh.lock();
    axum::Json(json!({ "live": m.streams })).into_response()
}

#[derive(Deserialize)]
struct AccountBody {
    name: String,
}

async fn admin_accounts(State(app): State<Arc<App>>) -> Response {
    match app.store.lock().accounts() {
        Ok(a) => axum::Json(json!({ "accounts": a })).into_response(),
        Err(e) => store_error(e),
    }
}

async fn admin_create_account(State(app): State<Arc<App>>, body: Body) -> Response {
    let b: AccountBody = match admin_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !is_valid_id(&b.name) {
        return admin_error(StatusCode::BAD_REQUEST, "bad account name: 1-128 of [A-Za-z0-9_-]");
    }
    match app.store.lock().create_account(&b.name, now()) {
        Ok(true) => {
            info!(account = %b.name, "admin: account created");
            (StatusCode::CREATED, axum::Json(json!({ "name": b.name }))).into_response()
        }
        Ok(false) => admin_error(StatusCode::CONFLICT, "account exists"),
        Err(e) => store_error(e),
    }
}

async fn admin_delete_account(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let r = app.store.lock().delete_account(&name);
    keys_changed(&app, r, "no such account", || {
        info!(account = %name, "admin: account deleted, with its streams");
        StatusCode::NO_CONTENT.into_response()
    })
}

#[derive(Deserialize)]
struct StreamBody {
    stream: String,
    account: String,
}

/// A new stream key: shown once, stored hashed.
async fn admin_create_stream(State(app): State<Arc<App>>, body: Body) -> Response {
    let b: StreamBody = match admin_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !is_valid_id(&b.stream) {
        return admin_error(StatusCode::BAD_REQUEST, "bad stream name: 1-128 of [A-Za-z0-9_-]");
    }
    let key = random_hex(24);
    // A new identity each time the stream is created: tokens of an earlier stream of this name
    // are refused.
    let id = random_hex(8);
    let r = {
        let store = app.store.lock();
        match store.account_exists(&b.account) {
            Ok(true) => {
                store.create_stream(&b.stream, &b.account, &key_sha256_hex(&key), &id, now()).map(Some)
            }
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        }
    };
    match r {
        Ok(Some(true)) => {
            app.reload_publish();
            info!(stream = %b.stream, account = %b.account, id = %id, "admin: stream created");
            let body = json!({ "stream": b.stream, "account": b.account, "key": key, "id": id });
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        Ok(Some(false)) => admin_error(StatusCode::CONFLICT, "stream exists"),
        Ok(None) => admin_error(StatusCode::NOT_FOUND, "no such account"),
        Err(e) => store_error(e),
    }
}

/// A new key for a stream; the old one stops working with the next table.
async fn admin_rotate_key(State(app): State<Arc<App>>, Path(stream): Path<String>) -> Response {
    let key = random_hex(24);
    let r = app.store.lock().set_stream_key(&stream, &key_sha256_hex(&key));
    keys_changed(&app, r, "no such stream", || {
        info!(stream = %stream, "admin: stream key rotated");
        axum::Json(json!({ "stream": stream, "key": key })).into_response()
    })
}

async fn admin_delete_stream(State(app): State<Arc<App>>, Path(stream): Path<String>) -> Response {
    let r = app.store.lock().delete_stream(&stream);
    keys_changed(&app, r, "no such stream", || {
        info!(stream = %stream, "admin: stream deleted");
        StatusCode::NO_CONTENT.into_response()
    })
}

/// Prometheus text: `GET /admin/metrics` (scrape it with the admin token as a bearer token).
async fn admin_metrics(State(app): State<Arc<App>>) -> Response {
    let text = metrics::render(&app.mesh.lock(), &app.counters);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The whole HTTP surface.
pub fn router(app: Arc<App>, paths: &Paths) -> Router {
    let admin = Router::new()
        .route("/admin/nodes", get(admin_nodes))
        .route("/admin/nodes/{id}/role", put(admin_set_role))
        .route("/admin/streams", get(admin_streams).post(admin_create_stream))
        .route("/admin/streams/{stream}", axum::routing::delete(admin_delete_stream))
        .route("/admin/streams/{stream}/key", post(admin_rotate_key))
        .route("/admin/accounts", get(admin_accounts).post(admin_create_account))
        .route("/admin/accounts/{name}", axum::routing::delete(admin_delete_account))
        .route("/admin/tokens", post(admin_viewers::mint))
        .route("/admin/viewer-keys", get(admin_viewers::list).post(admin_viewers::rotate))
        .route("/admin/viewer-keys/{id}", axum::routing::delete(admin_viewers::drop_key))
        .route("/admin/metrics", get(admin_metrics))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_admin));
    Router::new()
        .route(&paths.announce, post(announce))
        .route(&paths.heartbeat, post(heartbeat))
        .route(&paths.streams, get(streams))
        .route(&paths.auth, post(auth))
        .route(&paths.route, post(route))
        .route("/healthz", get(healthz))
        .merge(admin)
        .with_state(app)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mesh::Config;
    use mesh_core::sign::{sign_request, verify_response};
    use mesh_core::table::Table;
    use mesh_core::token::make_token_v2;
    use mesh_core::wire::Capabilities;
    use tower::ServiceExt;

    pub(crate) const KEY: &[u8] = b"test-master-key";

    pub(crate) fn app() -> (Arc<App>, Router) {
        let store = Store::memory().unwrap();
        store.create_account("acme", 0).unwrap();
        store.create_stream("cam1", "acme", &key_sha256_hex("k1"), "gen1", 0).unwrap();
        let mut mesh =
            Mesh::new(Config { max_token_ttl_s: 7200, ..Config::default() }, 0, Box::new(RandomKeys));
        mesh.set_viewer_keys(store.viewer_keys_or_make(0, || random_hex(32)).unwrap().0);
        mesh.set_streams(store.streams().unwrap());
        let app = App::new(mesh, store, KEY.to_vec(), "adm".into(), 0, 60);
        let router = router(app.clone(), &Paths::default());
        (app, router)
    }

    pub(crate) fn signed_req(method: &str, pq: &str, node: &str, body: &[u8], ts: u64) -> Request {
        let sig = sign_request(KEY, method, pq, ts, body);
        Request::builder()
            .method(method)
            .uri(pq)
            .header(H_NODE, node)
            .header(H_TIMESTAMP, ts.to_string())
            .header(H_SIGNATURE, sig)
            .body(Body::from(body.to_vec()))
            .unwrap()
    }

    /// Send; check the response's signature; status and body.
    pub(crate) async fn call(r: &Router, req: Request) -> (StatusCode, Vec<u8>) {
        let resp = r.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let h = resp.headers().clone();
        let body = to_bytes(resp.into_body(), MAX_BODY).await.unwrap().to_vec();
        let stamp = Stamp {
            ts: h.get(H_TIMESTAMP).and_then(|v| v.to_str().ok()),
            sig: h.get(H_SIGNATURE).and_then(|v| v.to_str().ok()),
        };
        verify_response(KEY, status.as_u16(), stamp, &body, now()).expect("every response is signed");
        (status, body)
    }

    pub(crate) async fn announce_as(r: &Router, id: &str, role: Role) {
        let (status, _) = call(r, signed_req("POST", "/announce", id, &announce_body(id, role), now())).await;
        assert_eq!(status, StatusCode::OK);
    }

    fn announce_body(id: &str, role: Role) -> Vec<u8> {
        serde_json::to_vec(&Announce {
            node_id: id.into(),
            role,
            rtmp_url: "rtmp://127.0.0.1:1935".into(),
            http_url: String::new(),
            version: "t".into(),
            capabilities: Capabilities { transcode: false, hls: false, dash: false },
        })
        .unwrap()
    }

    #[tokio::test]
    async fn unsigned_forged_and_stale_requests_are_refused() {
        let (_, r) = app();
        let body = announce_body("ingest-1", Role::Ingest);
        let unsigned = Request::post("/announce").body(Body::from(body.clone())).unwrap();
        assert_eq!(call(&r, unsigned).await.0, StatusCode::UNAUTHORIZED);
        let mut forged = signed_req("POST", "/announce", "ingest-1", &body, now());
        forged.headers_mut().insert(H_SIGNATURE, HeaderValue::from_static("00"));
        assert_eq!(call(&r, forged).await.0, StatusCode::UNAUTHORIZED);
        let stale = signed_req("POST", "/announce", "ingest-1", &body, now() - 301);
        assert_eq!(call(&r, stale).await.0, StatusCode::UNAUTHORIZED);
        let other_node = signed_req("POST", "/announce", "ingest-2", &body, now());
        assert_eq!(call(&r, other_node).await.0, StatusCode::BAD_REQUEST);
        let ok = signed_req("POST", "/announce", "ingest-1", &body, now());
        let (status, reply) = call(&r, ok).await;
        assert_eq!(status, StatusCode::OK);
        let reply: AnnounceReply = serde_json::from_slice(&reply).unwrap();
        assert_eq!(reply.role, Some(Role::Ingest));
        assert_eq!(reply.heartbeat_interval_s, Some(10));
    }

    #[tokio::test]
    async fn the_streams_endpoint_long_polls_the_nodes_own_table() {
        let (_, r) = app();
        let unknown = signed_req("GET", "/streams?node_id=ingest-1&since=0&wait=1", "ingest-1", b"", now());
        assert_eq!(call(&r, unknown).await.0, StatusCode::NOT_FOUND, "announce first");
        announce_as(&r, "ingest-1", Role::Ingest).await;
        let (status, body) =
            call(&r, signed_req("GET", "/streams?node_id=ingest-1&since=0&wait=1", "ingest-1", b"", now()))
                .await;
        assert_eq!(status, StatusCode::OK);
        let t = Table::parse(&body).unwrap();
        assert_eq!(t.role, Some(Role::Ingest));
        assert!(t.publish.contains_key("cam1"));
        let pq = format!("/streams?node_id=ingest-1&since={}&wait=1", t.version);
        let started = std::time::Instant::now();
        let (status, body) = call(&r, signed_req("GET", &pq, "ingest-1", b"", now())).await;
        assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0), "nothing newer: 304, signed");
        assert!(started.elapsed() >= Duration::from_millis(900), "held for the wait");
        let spy = signed_req("GET", "/streams?node_id=ingest-1&since=0", "root-1", b"", now());
        assert_eq!(call(&r, spy).await.0, StatusCode::BAD_REQUEST, "a node reads its own table only");
    }

    #[tokio::test]
    async fn a_change_wakes_a_waiting_poll() {
        let (app, r) = app();
        announce_as(&r, "ingest-1", Role::Ingest).await;
        let poll = waiting_poll(&app, &r, 30).await;
        app.store.lock().create_stream("cam2", "acme", &key_sha256_hex("k2"), "gen2", 0).unwrap();
        app.reload_publish();
        let (status, body) =
            tokio::time::timeout(Duration::from_secs(5), poll).await.expect("woken").unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(Table::parse(&body).unwrap().publish.contains_key("cam2"));
    }

    #[tokio::test]
    async fn closing_answers_waiting_polls() {
        let (app, r) = app();
        announce_as(&r, "ingest-1", Role::Ingest).await;
        let poll = waiting_poll(&app, &r, 60).await;
        app.close();
        let (status, _) =
            tokio::time::timeout(Duration::from_secs(5), poll).await.expect("answered").unwrap();
        assert_eq!(status, StatusCode::NOT_MODIFIED);
    }

    /// A long poll of ingest-1 for a table newer than its current one, under way.
    async fn waiting_poll(
        app: &App,
        r: &Router,
        wait: u64,
    ) -> tokio::task::JoinHandle<(StatusCode, Vec<u8>)> {
        let v = app.mesh.lock().table_version("ingest-1");
        let req = signed_req(
            "GET",
            &format!("/streams?node_id=ingest-1&since={v}&wait={wait}"),
            "ingest-1",
            b"",
            now(),
        );
        let r = r.clone();
        let poll = tokio::spawn(async move { call(&r, req).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        poll
    }

    #[tokio::test]
    async fn auth_checks_keys_and_tokens() {
        let (app, r) = app();
        announce_as(&r, "ingest-1", Role::Ingest).await;
        announce_as(&r, "edge-1", Role::Relay).await;
        let ask = |node: &str, action: Action, key: Option<&str>, token: Option<&str>| {
            let body = serde_json::to_vec(&AuthRequest {
                node_id: node.into(),
                action,
                stream: "cam1".into(),
                key: key.map(str::to_string),
                token: token.map(str::to_string),
                addr: "192.0.2.1".into(),
            })
            .unwrap();
            signed_req("POST", "/auth", node, &body, now())
        };
        let reply = |b: Vec<u8>| serde_json::from_slice::<AuthReply>(&b).unwrap();
        assert!(reply(call(&r, ask("ingest-1", Action::Publish, Some("k1"), None)).await.1).allow);
        let no = reply(call(&r, ask("ingest-1", Action::Publish, Some("k2"), None)).await.1);
        assert_eq!((no.allow, no.reason.as_deref()), (false, Some("wrong key")));
        let no = reply(call(&r, ask("edge-1", Action::Publish, Some("k1"), None)).await.1);
        assert_eq!(no.reason.as_deref(), Some("wrong role"));
        let secret = app.mesh.lock().viewers().keys[0].secret.clone();
        let token = make_token_v2(&secret, "k1", "cam1", "gen1", now() + 60);
        assert!(reply(call(&r, ask("edge-1", Action::Play, None, Some(&token))).await.1).allow);
        let old = make_token_v2(&secret, "k1", "cam1", "gen1", now() - 1);
        assert_eq!(
            reply(call(&r, ask("edge-1", Action::Play, None, Some(&old))).await.1).reason.as_deref(),
            Some("expired token")
        );
        let far = make_token_v2(&secret, "k1", "cam1", "gen1", now() + 7200 + 400);
        assert_eq!(
            reply(call(&r, ask("edge-1", Action::Play, None, Some(&far))).await.1).reason.as_deref(),
            Some("token lifetime too long")
        );
        let legacy = mesh_core::token::make_viewer_token(&secret, "cam1", now() + 60);
        assert!(
            !reply(call(&r, ask("edge-1", Action::Play, None, Some(&legacy))).await.1).allow,
            "no legacy"
        );
    }

    #[tokio::test]
    async fn metrics_count_what_went_by_behind_the_admin_token() {
        let (_, r) = app();
        announce_as(&r, "edge-1", Role::Relay).await;
        let unsigned = Request::post("/auth").body(Body::from("{}")).unwrap();
        assert_eq!(call(&r, unsigned).await.0, StatusCode::UNAUTHORIZED);
        let get = |token: Option<&str>| {
            let b = Request::get("/admin/metrics");
            let b = match token {
                Some(t) => b.header(header::AUTHORIZATION, format!("Bearer {t}")),
                None => b,
            };
            b.body(Body::empty()).unwrap()
        };
        assert_eq!(r.clone().oneshot(get(None)).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        let resp = r.clone().oneshot(get(Some("adm"))).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let text = String::from_utf8(to_bytes(resp.into_body(), MAX_BODY).await.unwrap().to_vec()).unwrap();
        assert!(text.contains("mesh_master_announces_total 1\n"), "{text}");
        assert!(
            text.contains("mesh_master_requests_refused_total{reason=\"missing signature\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("mesh_master_nodes{role=\"relay\",alive=\"true\"} 1\n"), "{text}");
    }

    #[tokio::test]
    async fn a_heartbeat_from_a_node_the_master_does_not_know_asks_for_an_announce() {
        let (_, r) = app();
        let hb = br#"{"node_id":"edge-1","role":"relay","table_version":0}"#;
        assert_eq!(
            call(&r, signed_req("POST", "/heartbeat", "edge-1", hb, now())).await.0,
            StatusCode::NOT_FOUND
        );
    }
}
