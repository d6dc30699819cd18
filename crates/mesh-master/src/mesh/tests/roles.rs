//! Roles are granted, not claimed: a node without a grant waits with nothing; auto-approval
//! grants what a new node asks for, once; a granted role never changes by what a node says.

use super::*;

fn ann(id: &str, role: Role, port: u16) -> Announce {
    Announce {
        node_id: id.into(),
        role,
        rtmp_url: format!("rtmp://127.0.0.1:{port}"),
        http_url: String::new(),
        version: "t".into(),
        capabilities: Capabilities { transcode: true, hls: true, dash: true },
    }
}

fn hb(m: &Mesh, id: &str, role: Role, streams: &[&str]) -> Heartbeat {
    Heartbeat {
        node_id: id.into(),
        role,
        table_version: m.table_version(id),
        streams: streams
            .iter()
            .map(|s| StreamStat {
                stream: s.to_string(),
                source: "broadcaster".into(),
                viewers: 0,
                in_kbps: 1,
            })
            .collect(),
        ..Heartbeat::empty(id, role)
    }
}

#[test]
fn a_node_without_a_grant_waits_with_nothing() {
    let mut m = mesh_granting(Config::default());
    let done = m.announce(&ann("edge-1", Role::Relay, 1938), 1);
    assert_eq!(done, Announced { role: None, granted_now: false });
    check(&m);
    assert!(m.nodes.is_empty(), "not in the mesh");
    assert_eq!(m.pending["edge-1"].announce.role, Role::Relay);
    assert!(m.table("edge-1").is_none(), "no table, so no viewer keys");
    assert_eq!(m.check_known("edge-1"), Err(MeshError::Pending));
    assert_eq!(m.route("edge-1", "cam1", 1), Err(MeshError::Pending));
    // A waiting ingest's heartbeat touches no stream.
    m.announce(&ann("ingest-1", Role::Ingest, 1935), 1);
    assert_eq!(m.heartbeat(&hb(&m, "ingest-1", Role::Ingest, &["cam1"]), 2), Err(MeshError::Pending));
    assert!(m.streams.is_empty());
    assert_eq!(m.pending["ingest-1"].last_seen, 2);
    // Waiting nodes not heard from for the node timeout are forgotten.
    m.sweep(40);
    assert!(m.pending.is_empty());
}

#[test]
fn an_admin_grant_lets_a_waiting_node_in() {
    let mut m = mesh_granting(Config::default());
    m.announce(&ann("ingest-1", Role::Ingest, 1935), 1);
    m.announce(&ann("root-1", Role::RootRelay, 1936), 1);
    m.announce(&ann("edge-1", Role::Relay, 1938), 1);
    for (id, role) in [("ingest-1", Role::Ingest), ("root-1", Role::RootRelay), ("edge-1", Role::Relay)] {
        m.set_role(id, Some(role), 2);
        check(&m);
    }
    assert!(m.pending.is_empty());
    let edge = table(&m, "edge-1");
    assert_eq!(edge.role, Some(Role::Relay));
    assert!(!edge.viewer_keys.is_empty(), "a granted relay gets the viewer keys");
    m.heartbeat(&hb(&m, "ingest-1", Role::Ingest, &["cam1"]), 3).unwrap();
    check(&m);
    assert_eq!(m.streams["cam1"].edges[0].to, "edge-1");
}

#[test]
fn auto_approval_grants_the_first_role_asked_only() {
    let mut m = mesh_granting(Config { auto_approve: vec![Role::Ingest], ..Config::default() });
    let done = m.announce(&ann("ingest-1", Role::Ingest, 1935), 1);
    assert_eq!(done, Announced { role: Some(Role::Ingest), granted_now: true });
    // Asking for another role later changes nothing: an admin must.
    let again = m.announce(&ann("ingest-1", Role::RootRelay, 1935), 2);
    assert_eq!(again, Announced { role: Some(Role::Ingest), granted_now: false });
    assert_eq!(m.nodes["ingest-1"].role, Role::Ingest);
    assert_eq!(table(&m, "ingest-1").role, Some(Role::Ingest));
    // A role not auto-approved waits.
    assert_eq!(m.announce(&ann("edge-1", Role::Relay, 1938), 1).role, None);
    check(&m);
}

#[test]
fn a_claimed_role_never_brings_viewer_keys_or_streams() {
    let mut m = four(Config::default());
    m.set_role("edge-1", Some(Role::Ingest), 1);
    // An ingest announcing and heartbeating as a relay (or standalone) stays an ingest.
    for claim in [Role::Relay, Role::Standalone] {
        assert_eq!(m.announce(&ann("edge-1", claim, 1938), 2).role, Some(Role::Ingest));
        assert_eq!(m.heartbeat(&hb(&m, "edge-1", claim, &[]), 2), Ok(Role::Ingest));
        check(&m);
        let t = table(&m, "edge-1");
        assert_eq!(t.role, Some(Role::Ingest));
        assert!(t.viewer_keys.is_empty(), "no viewer keys for a claimed {claim}");
    }
    // A root relay claiming to be an ingest starts no stream; an edge claiming root_relay
    // attracts none.
    m.heartbeat(&hb(&m, "root-1", Role::Ingest, &["cam2"]), 3).unwrap();
    assert!(!m.streams.contains_key("cam2"));
    m.heartbeat(&hb(&m, "ingest-1", Role::Ingest, &["cam1"]), 3).unwrap();
    m.announce(&ann("edge-2", Role::RootRelay, 1939), 3);
    check(&m);
    assert!(m.streams["cam1"].roots.iter().all(|h| h.to != "edge-2"));
    assert_eq!(m.nodes["edge-2"].announced_role, Role::RootRelay);
    assert_eq!(m.nodes["edge-2"].role, Role::Relay);
}

#[test]
fn a_role_taken_back_takes_the_node_out() {
    let mut m = four(Config::default());
    m.heartbeat(&hb(&m, "ingest-1", Role::Ingest, &["cam1"]), 1).unwrap();
    check(&m);
    let edge = m.streams["cam1"].edges[0].to.clone();
    m.set_role(&edge, None, 2);
    check(&m);
    assert!(m.table(&edge).is_none());
    assert!(m.streams["cam1"].edges.iter().all(|h| h.to != edge));
    assert_eq!(m.heartbeat(&hb(&m, &edge, Role::Relay, &[]), 3), Err(MeshError::Pending));
    // The ingest taken back: its streams end.
    m.set_role("ingest-1", None, 3);
    check(&m);
    assert!(m.streams.is_empty());
}

#[test]
fn waiting_nodes_are_capped() {
    let mut m = mesh_granting(Config::default());
    for i in 0..PENDING_MAX + 10 {
        m.announce(&ann(&format!("n-{i}"), Role::Relay, 2000), i as u64);
    }
    assert_eq!(m.pending.len(), PENDING_MAX);
    assert!(!m.pending.contains_key("n-0") && m.pending.contains_key(&format!("n-{}", PENDING_MAX + 9)));
}
