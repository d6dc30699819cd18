//! The admin API of node credentials: revoke a node (refused at its next request, its streams
//! placed again at once) or let it back in, and rotate its key (a new generation: the old key
//! is refused from now on). Kept in the database; docs/master.md, "Node keys".

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use mesh_core::name::is_valid_id;

use crate::admin::{admin_body, admin_error, store_error};
use crate::creds::NodeCred;
use crate::server::App;
use crate::store::StoreError;

#[derive(Deserialize)]
struct RevokedBody {
    revoked: bool,
}

/// Save `c` for `id` and put it in force; a node cut off is taken out of every placement now.
fn change(app: &App, id: &str, c: NodeCred, cut_off: bool) -> Result<(), StoreError> {
    app.store.lock().set_node_cred(id, c)?;
    app.creds.set(id, c);
    if cut_off {
        // Seen never: the sweep declares it dead and places its streams again.
        app.with_mesh(|m| m.never_seen(id));
        app.sweep();
    }
    // Its long polls wake and look again: a node cut off gets no table.
    app.published.wake([&id.to_string()]);
    Ok(())
}

/// `PUT /admin/nodes/{id}/revoked` `{"revoked": true|false}`.
pub(crate) async fn set_revoked(State(app): State<Arc<App>>, Path(id): Path<String>, body: Body) -> Response {
    if !is_valid_id(&id) {
        return admin_error(StatusCode::BAD_REQUEST, "bad node id");
    }
    let b: RevokedBody = match admin_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let c = NodeCred { revoked: b.revoked, ..app.creds.get(&id) };
    if let Err(e) = change(&app, &id, c, b.revoked) {
        return store_error(e);
    }
    info!(node = %id, revoked = b.revoked, "admin: node {}", if b.revoked { "revoked" } else { "let back in" });
    axum::Json(json!({ "node_id": id, "revoked": c.revoked, "generation": c.generation })).into_response()
}

/// `POST /admin/nodes/{id}/key`: the node's key of a new generation, shown once (mesh-tool
/// node-key --generation N derives it too). The old key is refused from now on.
pub(crate) async fn rotate_key(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    if !is_valid_id(&id) {
        return admin_error(StatusCode::BAD_REQUEST, "bad node id");
    }
    let old = app.creds.get(&id);
    let c = NodeCred { generation: old.generation.saturating_add(1), ..old };
    if let Err(e) = change(&app, &id, c, true) {
        return store_error(e);
    }
    let key = String::from_utf8(app.creds.key(&id).0).unwrap_or_default();
    info!(node = %id, generation = c.generation, "admin: node key rotated");
    axum::Json(json!({ "node_id": id, "generation": c.generation, "revoked": c.revoked, "key": key }))
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{to_bytes, Body};
    use axum::extract::Request;
    use axum::http::{header, StatusCode};
    use mesh_core::role::Role;
    use mesh_core::sign::node_key;
    use mesh_core::wire::HeartbeatReply;
    use tower::ServiceExt;

    use crate::server::tests::{announce_as, app, call, nonce, signed_req, signed_with, EPOCH, KEY};
    use crate::server::{now, MAX_BODY};

    fn reason(body: &[u8]) -> String {
        serde_json::from_slice::<serde_json::Value>(body).unwrap()["error"].as_str().unwrap_or("").to_string()
    }

    fn beat(id: &str) -> Vec<u8> {
        serde_json::to_vec(&mesh_core::wire::Heartbeat::empty(id, Role::Relay)).unwrap()
    }

    async fn admin(
        r: &axum::Router,
        method: &str,
        path: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, "Bearer adm")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = r.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let b = to_bytes(resp.into_body(), MAX_BODY).await.unwrap();
        (status, serde_json::from_slice(&b).unwrap_or_default())
    }

    #[tokio::test]
    async fn a_node_signs_as_itself_only() {
        let (_, r) = app();
        announce_as(&r, "edge-a", Role::Relay).await;
        announce_as(&r, "edge-b", Role::Relay).await;
        let b_key = node_key(KEY, "edge-b", 0);
        // B's key naming A: refused (signed for A, who did not ask: B cannot read it either).
        let as_a =
            signed_with(b_key.as_bytes(), "POST", "/heartbeat", "edge-a", &beat("edge-a"), now(), &nonce());
        let resp = r.clone().oneshot(as_a).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        // B asking for A's table as itself: refused.
        let pq = "/streams?node_id=edge-a&since=0&wait=0";
        let (st, body) = call(&r, signed_req("GET", pq, "edge-b", b"", now())).await;
        assert_eq!(
            (st, reason(&body).as_str()),
            (StatusCode::BAD_REQUEST, "node_id differs from X-Mesh-Node")
        );
        // The master secret itself is no node's key.
        let with_secret = signed_with(KEY, "POST", "/heartbeat", "edge-a", &beat("edge-a"), now(), &nonce());
        assert_eq!(call(&r, with_secret).await.0, StatusCode::UNAUTHORIZED);
        // Its own: fine, and the answer carries the epoch.
        let (st, body) = call(&r, signed_req("POST", "/heartbeat", "edge-a", &beat("edge-a"), now())).await;
        assert_eq!(st, StatusCode::OK);
        let hb: HeartbeatReply = serde_json::from_slice(&body).unwrap();
        assert_eq!(hb.epoch.as_deref(), Some(EPOCH));
    }

    #[tokio::test]
    async fn a_replayed_request_is_refused() {
        let (_, r) = app();
        announce_as(&r, "edge-a", Role::Relay).await;
        let key = node_key(KEY, "edge-a", 0);
        let n = nonce();
        let send = || signed_with(key.as_bytes(), "POST", "/heartbeat", "edge-a", &beat("edge-a"), now(), &n);
        assert_eq!(call(&r, send()).await.0, StatusCode::OK);
        let (st, body) = call(&r, send()).await;
        assert_eq!((st, reason(&body).as_str()), (StatusCode::UNAUTHORIZED, "nonce already used"));
        // A request signed before this master started (whose nonce it cannot know).
        let old =
            signed_with(key.as_bytes(), "POST", "/heartbeat", "edge-a", &beat("edge-a"), now() - 5, &nonce());
        let (st, body) = call(&r, old).await;
        assert_eq!(
            (st, reason(&body).as_str()),
            (StatusCode::UNAUTHORIZED, "timestamp before the master started")
        );
        // No nonce, or not one.
        let (st, body) = call(
            &r,
            signed_with(key.as_bytes(), "POST", "/heartbeat", "edge-a", &beat("edge-a"), now(), "abc"),
        )
        .await;
        assert_eq!((st, reason(&body).as_str()), (StatusCode::UNAUTHORIZED, "bad nonce"));
    }

    #[tokio::test]
    async fn a_table_carries_the_epoch() {
        let (_, r) = app();
        announce_as(&r, "edge-a", Role::Relay).await;
        let (st, body) =
            call(&r, signed_req("GET", "/streams?node_id=edge-a&since=0&wait=0", "edge-a", b"", now())).await;
        assert_eq!(st, StatusCode::OK);
        let t = mesh_core::Table::parse(&body).unwrap();
        assert_eq!(t.epoch.as_deref(), Some(EPOCH));
        assert_eq!(super::super::node_api::tests_with_epoch(b"{}".to_vec(), "e"), br#"{"epoch":"e"}"#);
    }

    /// A long poll waiting when its node is revoked gets no table: the revocation wakes it and
    /// it is refused.
    #[tokio::test]
    async fn a_waiting_poll_of_a_node_revoked_gets_no_table() {
        let (app, r) = app();
        announce_as(&r, "ingest-1", Role::Ingest).await;
        let poll = crate::server::tests::waiting_poll(&app, &r, 30).await;
        admin(&r, "PUT", "/admin/nodes/ingest-1/revoked", r#"{"revoked": true}"#).await;
        let (st, body) =
            tokio::time::timeout(std::time::Duration::from_secs(5), poll).await.expect("woken").unwrap();
        assert_eq!((st, reason(&body).as_str()), (StatusCode::UNAUTHORIZED, "node revoked"));
    }

    #[tokio::test]
    async fn a_revoked_node_is_cut_off_and_a_rotated_key_replaces_the_old() {
        let (app, r) = app();
        announce_as(&r, "edge-a", Role::Relay).await;
        let (st, v) = admin(&r, "PUT", "/admin/nodes/edge-a/revoked", r#"{"revoked": true}"#).await;
        assert_eq!((st, v["revoked"].as_bool()), (StatusCode::OK, Some(true)));
        assert!(!app.mesh.lock().nodes()["edge-a"].alive, "out of every placement at once");
        let (st, body) = call(&r, signed_req("POST", "/heartbeat", "edge-a", &beat("edge-a"), now())).await;
        assert_eq!((st, reason(&body).as_str()), (StatusCode::UNAUTHORIZED, "node revoked"));
        assert!(app.store.lock().node_creds().unwrap()[0].1.revoked, "kept in the database");
        admin(&r, "PUT", "/admin/nodes/edge-a/revoked", r#"{"revoked": false}"#).await;
        announce_as(&r, "edge-a", Role::Relay).await;
        // A new key: the old one is refused.
        let (st, v) = admin(&r, "POST", "/admin/nodes/edge-a/key", "").await;
        assert_eq!((st, v["generation"].as_u64()), (StatusCode::OK, Some(1)));
        let new = node_key(KEY, "edge-a", 1);
        assert_eq!(v["key"].as_str(), Some(new.as_str()));
        let resp =
            r.clone().oneshot(signed_req("POST", "/heartbeat", "edge-a", &beat("edge-a"), now())).await;
        assert_eq!(resp.unwrap().status(), StatusCode::UNAUTHORIZED);
        let ok = signed_with(
            new.as_bytes(),
            "POST",
            "/announce",
            "edge-a",
            &crate::server::tests::announce_body("edge-a", Role::Relay),
            now(),
            &nonce(),
        );
        assert_eq!(r.clone().oneshot(ok).await.unwrap().status(), StatusCode::OK);
    }
}
