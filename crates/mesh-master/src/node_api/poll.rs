//! The streams endpoint of docs/protocol.md: a node's long poll for its table, answered at
//! once when the master has a newer one than the node holds, else when the node's table changes
//! (or at the poll's deadline: 304).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use tracing::info;

use super::{invalid, node_call, not_announced, refuse};
use crate::guards::Polling;
use crate::mesh::{self, MeshError};
use crate::rates::Class;
use crate::server::{now, App};
use crate::validate;

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
    // Each poll holds a connection that is never closed for room: one node's key must not hold
    // a third of them (5/s for 60 s).
    let Some(_poll) = Polling::start(&call.node) else {
        let mut r = app.signed_error(&call.reply, StatusCode::TOO_MANY_REQUESTS, "too many long polls");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let q: PollQuery = match Query::try_from_uri(&call.uri) {
        Ok(Query(q)) => q,
        Err(_) => {
            return app.signed_error(&call.reply, StatusCode::BAD_REQUEST, "bad query: node_id, since, wait")
        }
    };
    if q.node_id != call.node {
        return app.signed_error(&call.reply, StatusCode::BAD_REQUEST, "node_id differs from X-Mesh-Node");
    }
    if let Err(e) = validate::since(q.since) {
        return invalid(&app, &call, &e.to_string());
    }
    if app.published.get(&q.node_id).is_none() {
        // Not told anything yet: the mesh says why (not announced, or awaiting approval).
        let known = app.mesh.lock().check_known(&q.node_id);
        return not_announced(&app, &call, known.err().unwrap_or(MeshError::NotAnnounced));
    }
    // Woken when this node's table changes (or it is cut off), nothing else's.
    let mut waiter = app.published.wait(&q.node_id);
    let mut closing = app.changed.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(app.max_poll_wait_s));
    loop {
        // Revoked, or its key rotated, while the poll waited: no table for it.
        if app.creds.get(&call.node) != call.cred {
            let why = if app.creds.get(&call.node).revoked { "node revoked" } else { "node key rotated" };
            return refuse(&app, &call.reply, &call.node, call.uri.path(), StatusCode::UNAUTHORIZED, why);
        }
        if app.serving_tables() {
            // What the node was last told (the heartbeat's answer says the same version); the
            // document is shared, made JSON here, off every lock.
            // A big table (megabytes at 10,000 streams) is written and signed on the blocking
            // pool, not on the threads that answer heartbeats.
            if app.published.get(&q.node_id).is_some_and(|t| t.version > q.since) {
                // A burst of changes is one table (crate::published::TABLE_EVERY).
                if let Some(d) = app.published.hold(&q.node_id, std::time::Instant::now()) {
                    tokio::time::sleep(d).await;
                }
                let _one = app.published.writers.acquire().await;
                // The latest, read once the writer is ours: changes made while this poll
                // waited for it are in the one table it sends.
                let Some(t) = app.published.get(&q.node_id) else { continue };
                app.published.sent(&q.node_id, std::time::Instant::now());
                let (app, to) = (app.clone(), call.reply.clone());
                let node = q.node_id.clone();
                let signed = tokio::task::spawn_blocking(move || {
                    let (v, body) = mesh::table_json(t.version, &t.doc)?;
                    info!(node = %node, version = v, "table sent");
                    app.counters.inc("mesh_master_tables_sent_total", "");
                    Some(app.signed(&to, StatusCode::OK, with_epoch(body, &app.epoch)))
                });
                if let Ok(Some(r)) = signed.await {
                    return r;
                }
            }
        }
        // Woken by a change, at the deadline, or when tables start being served.
        let wake_at = match app.serve_tables_at.saturating_sub(now()) {
            0 => deadline,
            grace => deadline.min(tokio::time::Instant::now() + Duration::from_secs(grace)),
        };
        let wake = tokio::time::sleep_until(wake_at);
        tokio::select! {
            r = waiter.changes.changed() => {
                if r.is_err() { break }
                app.counters.inc("mesh_master_poll_wakeups_total", "");
            }
            r = closing.changed() => if r.is_err() { break },
            _ = wake => {}
        }
        if tokio::time::Instant::now() >= deadline || app.closing() {
            break;
        }
    }
    app.signed(&call.reply, StatusCode::NOT_MODIFIED, Vec::new())
}

#[cfg(test)]
pub(crate) fn tests_with_epoch(body: Vec<u8>, epoch: &str) -> Vec<u8> {
    with_epoch(body, epoch)
}

/// A table body with the master's epoch in it (signed with the body).
fn with_epoch(body: Vec<u8>, epoch: &str) -> Vec<u8> {
    let Some(rest) = body.strip_prefix(b"{") else { return body };
    let rest = rest.trim_ascii_start();
    let mut out = format!("{{\"epoch\":{}", serde_json::Value::from(epoch)).into_bytes();
    if !rest.starts_with(b"}") {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}
