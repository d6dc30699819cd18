//! A change wakes only the long polls of the nodes whose table it changed, and a heartbeat is
//! answered while a decision holds the mesh (issue 13, item 8).

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use mesh_core::role::Role;
use mesh_core::table::Table;
use mesh_core::wire::{Heartbeat, HeartbeatReply, StreamStat};

use super::tests::{announce_as, app, call, signed_req};
use super::*;

fn beat(id: &str, role: Role, live: &[&str]) -> Vec<u8> {
    let streams = live
        .iter()
        .map(|s| StreamStat { stream: s.to_string(), source: "broadcaster".into(), viewers: 0, in_kbps: 1 })
        .collect();
    serde_json::to_vec(&Heartbeat { streams, ..Heartbeat::empty(id, role) }).unwrap()
}

/// A long poll of `id` for a table newer than the one it has, under way.
fn poll(app: &App, r: &Router, id: &str) -> tokio::task::JoinHandle<(StatusCode, Vec<u8>)> {
    let v = app.published.get(id).unwrap().version;
    let req = signed_req("GET", &format!("/streams?node_id={id}&since={v}&wait=30"), id, b"", now());
    let r = r.clone();
    tokio::spawn(async move { call(&r, req).await })
}

fn wakeups(app: &App) -> u64 {
    app.counters.get("mesh_master_poll_wakeups_total", "")
}

#[tokio::test]
async fn a_new_stream_wakes_the_polls_of_its_nodes_only() {
    let (app, r) = app();
    let nodes = [("ingest-1", Role::Ingest), ("root-1", Role::RootRelay), ("edge-1", Role::Relay)];
    for (id, role) in nodes.iter().chain(&[("edge-2", Role::Relay)]) {
        announce_as(&r, id, *role).await;
    }
    let polls: Vec<_> = ["ingest-1", "root-1", "edge-1", "edge-2"].map(|id| (id, poll(&app, &r, id))).into();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.published.waiting(), 4, "one wake-up per node with a poll waiting");
    let before = wakeups(&app);
    // cam1 goes live: edge fan-out 1, so one edge of the two takes it.
    let (st, _) = call(
        &r,
        signed_req("POST", "/heartbeat", "ingest-1", &beat("ingest-1", Role::Ingest, &["cam1"]), now()),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let edge = app.mesh.lock().streams()["cam1"].edges[0].to.clone();
    let other = if edge == "edge-1" { "edge-2" } else { "edge-1" };
    let mut left = None;
    for (id, p) in polls {
        if id == other {
            left = Some(p);
            continue;
        }
        let (st, body) = tokio::time::timeout(Duration::from_secs(5), p).await.expect("woken").unwrap();
        assert_eq!(st, StatusCode::OK, "{id}");
        let t = Table::parse(&body).unwrap();
        assert!(t.ingest.contains_key("cam1") || t.relay.contains_key("cam1"), "{id} carries cam1");
    }
    let left = left.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!left.is_finished(), "{other}'s table did not change: its poll still waits");
    assert_eq!(wakeups(&app) - before, 3, "ingest-1, root-1 and {edge} woken; {other} not");
    assert_eq!(app.published.waiting(), 1, "the wake-ups of polls that ended are gone");
    left.abort();
    let _ = left.await;
    assert_eq!(app.published.waiting(), 0, "nothing kept for a poll that went away");
}

#[tokio::test]
async fn a_heartbeat_is_answered_while_a_decision_holds_the_mesh() {
    let (app, r) = app();
    announce_as(&r, "ingest-1", Role::Ingest).await;
    announce_as(&r, "root-1", Role::RootRelay).await;
    let told = app.published.get("ingest-1").unwrap().version;
    // A long decision (a root relay's death at scale takes 150 ms; here 1.5 s).
    let held = {
        let app = app.clone();
        std::thread::spawn(move || app.with_mesh(|_| std::thread::sleep(Duration::from_millis(1500))))
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let (st, body) = call(
        &r,
        signed_req("POST", "/heartbeat", "ingest-1", &beat("ingest-1", Role::Ingest, &["cam1"]), now()),
    )
    .await;
    assert!(t.elapsed() < Duration::from_millis(500), "answered at once: {:?}", t.elapsed());
    assert_eq!(st, StatusCode::OK);
    let reply: HeartbeatReply = serde_json::from_slice(&body).unwrap();
    assert_eq!((reply.table_version, reply.role), (Some(told), Some(Role::Ingest)), "what it was last told");
    held.join().unwrap();
    // The decision that held the mesh applied the heartbeat when it let go: no other request.
    assert!(app.mesh.lock().streams().contains_key("cam1"), "placed once the mesh was free");
    let now_told = app.published.get("ingest-1").unwrap().version;
    assert!(now_told > told, "its table took the stream");
    // What a heartbeat says can be fetched: the poll serves the same version.
    let pq = format!("/streams?node_id=ingest-1&since={told}&wait=1");
    let (st, body) = call(&r, signed_req("GET", &pq, "ingest-1", b"", now())).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(Table::parse(&body).unwrap().version, now_told);
    let (_, body) = call(
        &r,
        signed_req("POST", "/heartbeat", "ingest-1", &beat("ingest-1", Role::Ingest, &["cam1"]), now()),
    )
    .await;
    let reply: HeartbeatReply = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply.table_version, Some(now_told));
}
