//! The suspect probe (crate::probe) and `--suspect-probe off`: a root relay its ingest cannot
//! push to, at an RTMP address that refuses connections, dies by the probe when it is on and
//! stays (it dies only by its silence) when it is off.

use std::time::Duration;

use axum::http::StatusCode;
use mesh_core::role::Role;
use mesh_core::wire::{Announce, Capabilities, Heartbeat, PushStat, StreamStat};

use super::tests::{announce_as, app, call, signed_req};
use super::*;

/// `root-1`'s RTMP port refuses: nothing listens on port 1 of the loopback.
const REFUSING: &str = "rtmp://127.0.0.1:1";

fn beat(id: &str, down_to: Option<&str>) -> Vec<u8> {
    let streams =
        vec![StreamStat { stream: "cam1".into(), source: "broadcaster".into(), viewers: 0, in_kbps: 1 }];
    let pushes = down_to
        .map(|to| PushStat { stream: "cam1".into(), to: to.into(), state: "retrying".into() })
        .into_iter()
        .collect();
    serde_json::to_vec(&Heartbeat { streams, pushes, ..Heartbeat::empty(id, Role::Ingest) }).unwrap()
}

/// An ingest, a root relay at [`REFUSING`], an edge; cam1 live through them; then the
/// ingest reports its push to the root relay down. Whether the root relay is alive after.
async fn root_alive_after_a_failed_push(probe: bool) -> bool {
    let (mut app, _) = app();
    Arc::get_mut(&mut app).expect("not shared yet").suspect_probe = probe;
    let r = router(app.clone(), &Paths::default());
    announce_as(&r, "ingest-1", Role::Ingest).await;
    announce_as(&r, "edge-1", Role::Relay).await;
    let a = Announce {
        node_id: "root-1".into(),
        role: Role::RootRelay,
        rtmp_url: REFUSING.into(),
        http_url: String::new(),
        version: "t".into(),
        capabilities: Capabilities { transcode: false, hls: false, dash: false },
    };
    let body = serde_json::to_vec(&a).unwrap();
    assert_eq!(call(&r, signed_req("POST", "/announce", "root-1", &body, now())).await.0, StatusCode::OK);
    let (st, _) =
        call(&r, signed_req("POST", "/heartbeat", "ingest-1", &beat("ingest-1", None), now())).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(app.mesh.lock().streams()["cam1"].roots[0].to, "root-1");
    let down = beat("ingest-1", Some("root-1"));
    let (st, _) = call(&r, signed_req("POST", "/heartbeat", "ingest-1", &down, now())).await;
    assert_eq!(st, StatusCode::OK);
    // A refused connect is seen at once; the probe's timeout is 500 ms.
    for _ in 0..30 {
        if !app.mesh.lock().nodes()["root-1"].alive {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alive = app.mesh.lock().nodes()["root-1"].alive;
    assert!(app.mesh.lock().take_probes().is_empty(), "no probe left waiting");
    alive
}

#[tokio::test]
async fn a_suspect_that_refuses_the_probe_dies() {
    assert!(!root_alive_after_a_failed_push(true).await, "the probe confirms the death");
}

#[tokio::test]
async fn with_the_probe_off_a_suspect_is_never_connected_to() {
    assert!(root_alive_after_a_failed_push(false).await, "no probe: it dies only by its silence");
}

/// With the probe off, an ingest whose push to its root relay stalled (the path cut, the root
/// relay beating on) gets its hop moved to the other root relay, the root relay never
/// connected to nor evicted. Red team: the hop stayed on the cut path for as long as the root
/// relay beat (the stalled report's only way out was the probe's answer).
#[tokio::test]
async fn with_the_probe_off_a_stalled_push_still_moves_its_hop() {
    let (mut app, _) = app();
    Arc::get_mut(&mut app).expect("not shared yet").suspect_probe = false;
    let r = router(app.clone(), &Paths::default());
    announce_as(&r, "ingest-1", Role::Ingest).await;
    announce_as(&r, "edge-1", Role::Relay).await;
    for id in ["root-1", "root-2"] {
        let a = Announce {
            node_id: id.into(),
            role: Role::RootRelay,
            rtmp_url: REFUSING.into(),
            http_url: String::new(),
            version: "t".into(),
            capabilities: Capabilities { transcode: false, hls: false, dash: false },
        };
        let body = serde_json::to_vec(&a).unwrap();
        assert_eq!(call(&r, signed_req("POST", "/announce", id, &body, now())).await.0, StatusCode::OK);
    }
    let (st, _) =
        call(&r, signed_req("POST", "/heartbeat", "ingest-1", &beat("ingest-1", None), now())).await;
    assert_eq!(st, StatusCode::OK);
    let root = app.mesh.lock().streams()["cam1"].roots[0].to.clone();
    let other = if root == "root-1" { "root-2" } else { "root-1" };
    let mut hb: Heartbeat = serde_json::from_slice(&beat("ingest-1", Some(&root))).unwrap();
    hb.pushes[0].state = "stalled".into();
    let body = serde_json::to_vec(&hb).unwrap();
    let (st, _) = call(&r, signed_req("POST", "/heartbeat", "ingest-1", &body, now())).await;
    assert_eq!(st, StatusCode::OK);
    let mut moved = false;
    for _ in 0..40 {
        if app.mesh.lock().streams()["cam1"].roots.iter().any(|h| h.to == other) {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(moved, "the hop moved off the cut path to {other}");
    assert!(app.mesh.lock().nodes()[&root].alive, "the root relay stays: never probed, still beating");
}
