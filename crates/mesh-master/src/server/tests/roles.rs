//! Roles are granted, not claimed, through the endpoints: a node without a grant gets 403
//! "awaiting approval" and nothing else (no table, no allow, no stream of its heartbeats);
//! the admin lists it as pending and grants it a role; auto-approval grants the first role
//! asked for, persisted, and never another.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, StatusCode};
use mesh_core::role::Role;
use mesh_core::wire::{Heartbeat, StreamStat};
use tower::ServiceExt;

use super::{announce_body, app_granting, call, signed_req};
use crate::mesh::PENDING_REASON;
use crate::server::{now, MAX_BODY};

fn reason(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body).unwrap()["error"].as_str().unwrap_or("").to_string()
}

async fn admin(r: &axum::Router, method: &str, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
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

fn beat(id: &str, role: Role, streams: &[&str]) -> Vec<u8> {
    let mut hb = Heartbeat::empty(id, role);
    hb.streams = streams
        .iter()
        .map(|s| StreamStat { stream: s.to_string(), source: "broadcaster".into(), viewers: 0, in_kbps: 1 })
        .collect();
    serde_json::to_vec(&hb).unwrap()
}

async fn post(r: &axum::Router, path: &str, id: &str, body: &[u8]) -> (StatusCode, Vec<u8>) {
    call(r, signed_req("POST", path, id, body, now())).await
}

#[tokio::test]
async fn a_node_without_a_grant_waits_until_an_admin_grants_one() {
    let (app, r) = app_granting(&[]);
    let (st, body) = post(&r, "/announce", "edge-1", &announce_body("edge-1", Role::Relay)).await;
    assert_eq!((st, reason(&body).as_str()), (StatusCode::FORBIDDEN, PENDING_REASON));
    // Nothing for it: no table, no heartbeat taken, no allow.
    let pq = "/streams?node_id=edge-1&since=0&wait=0";
    let (st, body) = call(&r, signed_req("GET", pq, "edge-1", b"", now())).await;
    assert_eq!((st, reason(&body).as_str()), (StatusCode::FORBIDDEN, PENDING_REASON));
    let (st, _) = post(&r, "/heartbeat", "edge-1", &beat("edge-1", Role::Relay, &[])).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let auth = br#"{"node_id":"edge-1","action":"play","stream":"cam1","addr":"1.2.3.4","token":"x"}"#;
    let (st, body) = post(&r, "/auth", "edge-1", auth).await;
    assert_eq!(st, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((v["allow"].as_bool(), v["reason"].as_str()), (Some(false), Some(PENDING_REASON)));
    // A waiting ingest's heartbeat makes no stream live.
    let (st, _) = post(&r, "/announce", "ingest-1", &announce_body("ingest-1", Role::Ingest)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = post(&r, "/heartbeat", "ingest-1", &beat("ingest-1", Role::Ingest, &["cam1"])).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(app.mesh.lock().streams().is_empty());
    // The admin sees them pending, and grants.
    let (_, nodes) = admin(&r, "GET", "/admin/nodes", "").await;
    let edge = nodes["nodes"].as_array().unwrap().iter().find(|n| n["node_id"] == "edge-1").unwrap().clone();
    assert_eq!((edge["pending"].as_bool(), edge["granted_role"].is_null()), (Some(true), true));
    assert_eq!(edge["announced_role"], "relay");
    let (st, _) = admin(&r, "PUT", "/admin/nodes/edge-1/role", r#"{"role":"relay"}"#).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(app.store.lock().roles().unwrap(), [("edge-1".to_string(), Role::Relay)], "kept");
    let (st, _) = post(&r, "/announce", "edge-1", &announce_body("edge-1", Role::Relay)).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = call(&r, signed_req("GET", pq, "edge-1", b"", now())).await;
    assert_eq!(st, StatusCode::OK);
    let t: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(t["role"], "relay");
    assert!(t["viewer_keys"].as_array().is_some_and(|k| !k.is_empty()), "a granted relay has the keys");
    let (_, nodes) = admin(&r, "GET", "/admin/nodes", "").await;
    let edge = nodes["nodes"].as_array().unwrap().iter().find(|n| n["node_id"] == "edge-1").unwrap().clone();
    assert_eq!((edge["pending"].as_bool(), edge["granted_role"].as_str()), (Some(false), Some("relay")));
}

#[tokio::test]
async fn auto_approval_grants_the_first_role_and_claims_are_ignored() {
    let (app, r) = app_granting(&[Role::Ingest]);
    let (st, _) = post(&r, "/announce", "ingest-1", &announce_body("ingest-1", Role::Ingest)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(app.store.lock().roles().unwrap(), [("ingest-1".to_string(), Role::Ingest)], "kept");
    // Asking relay, or standalone, later: still an ingest, never the viewer keys.
    for claim in [Role::Relay, Role::Standalone, Role::RootRelay] {
        let (st, body) = post(&r, "/announce", "ingest-1", &announce_body("ingest-1", claim)).await;
        assert_eq!(st, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["role"], "ingest");
        let (st, body) = post(&r, "/heartbeat", "ingest-1", &beat("ingest-1", claim, &[])).await;
        assert_eq!(st, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["role"], "ingest", "the heartbeat's role is ignored");
    }
    let pq = "/streams?node_id=ingest-1&since=0&wait=0";
    let (st, body) = call(&r, signed_req("GET", pq, "ingest-1", b"", now())).await;
    assert_eq!(st, StatusCode::OK);
    let t: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(t["role"], "ingest");
    assert!(t.get("viewer_keys").is_none(), "{t}");
    // A role not auto-approved waits.
    let (st, _) = post(&r, "/announce", "edge-1", &announce_body("edge-1", Role::Relay)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let text = crate::metrics::render(&app.mesh.lock(), &app.counters);
    assert!(text.contains("mesh_master_role_claims_ignored_total 3"), "{text}");
    assert!(text.contains("mesh_master_nodes_pending 1"), "{text}");
}
