//! The admin API behind a bearer token: nodes and their roles, accounts, streams and their
//! keys, metrics (viewer tokens and keys: [`crate::admin_viewers`]).

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use mesh_core::name::is_valid_id;
use mesh_core::role::Role;
use mesh_core::token::{ct_eq, key_sha256_hex};

use crate::listener::Conn;
use crate::metrics;
use crate::server::{now, random_hex, App, BODY_TIMEOUT, MAX_BODY};
use crate::store::StoreError;

/// Every admin call needs the bearer token.
pub(crate) async fn require_admin(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !app.admin_token.is_empty() && ct_eq(given.as_bytes(), app.admin_token.as_bytes()) {
        let _busy = req.extensions().get::<Arc<Conn>>().map(Conn::busy);
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
pub(crate) fn keys_changed(
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
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, to_bytes(body, MAX_BODY)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return Err(admin_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large")),
        Err(_) => return Err(admin_error(StatusCode::REQUEST_TIMEOUT, "body timed out")),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| admin_error(StatusCode::BAD_REQUEST, &format!("bad body: {e}")))
}

/// Every node: those in the mesh with their granted role, then those waiting for one
/// (`pending`, the role they ask for in `announced_role`).
pub(crate) async fn admin_nodes(State(app): State<Arc<App>>) -> Response {
    let m = app.mesh.lock();
    let creds = |v: &mut serde_json::Value, id: &str| {
        let c = app.creds.get(id);
        v["revoked"] = c.revoked.into();
        v["key_generation"] = c.generation.into();
    };
    let mut nodes: Vec<_> = m
        .nodes()
        .values()
        .map(|n| {
            let mut v = serde_json::to_value(n).unwrap_or_default();
            v["table_version_sent"] = m.table_version(&n.node_id).into();
            v["granted_role"] = json!(n.role);
            v["pending"] = false.into();
            creds(&mut v, &n.node_id);
            v
        })
        .collect();
    nodes.extend(m.pending().values().map(|p| {
        let a = &p.announce;
        let mut v = json!({
            "node_id": a.node_id, "role": null, "granted_role": null, "pending": true,
            "announced_role": a.role, "rtmp_url": a.rtmp_url, "http_url": a.http_url,
            "version": a.version, "first_seen": p.first_seen, "last_seen": p.last_seen, "alive": false,
        });
        creds(&mut v, &a.node_id);
        v
    }));
    axum::Json(json!({ "nodes": nodes })).into_response()
}

#[derive(Deserialize)]
struct RoleBody {
    role: Option<Role>,
}

pub(crate) async fn admin_set_role(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
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
    match b.role {
        Some(r) => info!(node = %id, role = %r, "admin: role granted"),
        None => info!(node = %id, "admin: role taken back, the node waits for approval"),
    }
    axum::Json(json!({ "node_id": id, "role": b.role })).into_response()
}

pub(crate) async fn admin_streams(State(app): State<Arc<App>>) -> Response {
    let m = app.mesh.lock();
    axum::Json(json!({ "live": m.streams() })).into_response()
}

#[derive(Deserialize)]
struct AccountBody {
    name: String,
}

pub(crate) async fn admin_accounts(State(app): State<Arc<App>>) -> Response {
    match app.store.lock().accounts() {
        Ok(a) => axum::Json(json!({ "accounts": a })).into_response(),
        Err(e) => store_error(e),
    }
}

pub(crate) async fn admin_create_account(State(app): State<Arc<App>>, body: Body) -> Response {
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

pub(crate) async fn admin_delete_account(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
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
pub(crate) async fn admin_create_stream(State(app): State<Arc<App>>, body: Body) -> Response {
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
pub(crate) async fn admin_rotate_key(State(app): State<Arc<App>>, Path(stream): Path<String>) -> Response {
    let key = random_hex(24);
    let r = app.store.lock().set_stream_key(&stream, &key_sha256_hex(&key));
    keys_changed(&app, r, "no such stream", || {
        info!(stream = %stream, "admin: stream key rotated");
        axum::Json(json!({ "stream": stream, "key": key })).into_response()
    })
}

pub(crate) async fn admin_delete_stream(State(app): State<Arc<App>>, Path(stream): Path<String>) -> Response {
    let r = app.store.lock().delete_stream(&stream);
    keys_changed(&app, r, "no such stream", || {
        info!(stream = %stream, "admin: stream deleted");
        StatusCode::NO_CONTENT.into_response()
    })
}

/// Prometheus text: `GET /admin/metrics` (scrape it with the admin token as a bearer token).
pub(crate) async fn admin_metrics(State(app): State<Arc<App>>) -> Response {
    let text = metrics::render(&app.mesh.lock(), &app.counters);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
