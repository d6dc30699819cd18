//! Failures the data plane reports (crate::mesh::suspect): a failed push makes its target a
//! suspect, never dead on a peer's word.

use super::*;
use mesh_core::wire::PushStat;

/// A heartbeat from `id` carrying `live` and its pushes down (`stream`, `to`).
fn beat_down(m: &mut Mesh, id: &str, live: &[(&str, &str, u64)], down: &[(&str, &str)], now: u64) {
    let mut hb = Heartbeat::empty(id, m.nodes[id].role);
    hb.table_version = m.table_version(id);
    hb.streams = live
        .iter()
        .map(|(s, src, v)| StreamStat {
            stream: s.to_string(),
            source: src.to_string(),
            viewers: *v,
            in_kbps: 1,
        })
        .collect();
    hb.pushes = down
        .iter()
        .map(|(s, to)| PushStat { stream: s.to_string(), to: to.to_string(), state: "retrying".into() })
        .collect();
    m.heartbeat(&hb, now).unwrap();
    check(m);
}

const LIVE: &[(&str, &str, u64)] = &[("cam1", "broadcaster", 0)];

#[test]
fn a_failed_push_makes_a_suspect_confirmed_by_a_failed_connect() {
    let mut m = four(Config { heartbeat_interval_s: 1, node_timeout_s: 3, ..Config::default() });
    beat(&mut m, "ingest-1", LIVE, 10);
    let root = m.streams["cam1"].roots[0].to.clone();
    let edge = m.streams["cam1"].edges[0].to.clone();
    assert_eq!(m.take_probes(), vec![], "nothing suspect");
    beat_down(&mut m, "ingest-1", LIVE, &[("cam1", &root)], 10);
    let url = m.nodes[&root].rtmp_url.clone();
    assert_eq!(m.take_probes(), vec![(root.clone(), url)], "the root relay is probed");
    assert_eq!(m.take_probes(), vec![], "once");
    assert!(m.nodes[&root].alive, "suspected only");
    // Probed again at most once a second while the push stays down.
    beat_down(&mut m, "ingest-1", LIVE, &[("cam1", &root)], 10);
    assert_eq!(m.take_probes().len(), 0);
    beat_down(&mut m, "ingest-1", LIVE, &[("cam1", &root)], 11);
    assert_eq!(m.take_probes().len(), 1);
    // Its RTMP port refused the master: dead now, the edge kept, fed by the other root relay.
    assert!(m.confirm_dead(&root, 11));
    check(&m);
    assert!(!m.nodes[&root].alive);
    let p = &m.streams["cam1"];
    assert_eq!(p.roots.len(), 1);
    assert_ne!(p.roots[0].to, root);
    assert!(p.edges.iter().any(|h| h.to == edge && h.from == p.roots[0].to), "{p:?}");
    assert!(!m.confirm_dead(&root, 11), "once");
}

#[test]
fn a_liar_cannot_evict_a_node_that_beats() {
    let mut m = four(Config { heartbeat_interval_s: 1, node_timeout_s: 3, ..Config::default() });
    beat(&mut m, "ingest-1", LIVE, 10);
    let root = m.streams["cam1"].roots[0].to.clone();
    let edge = m.streams["cam1"].edges[0].to.clone();
    let other = if edge == "edge-1" { "edge-2" } else { "edge-1" };
    // Nodes it does not push that stream to: not its word to give.
    beat_down(&mut m, "ingest-1", LIVE, &[("cam1", &edge), ("cam1", other), ("cam9", &root)], 10);
    beat_down(&mut m, other, &[], &[("cam1", &edge)], 10);
    beat_down(&mut m, &edge, &[], &[("cam1", &edge)], 10);
    assert_eq!(m.take_probes(), vec![]);
    // Its own feed's target: suspected; the suspect beats, and is cleared.
    beat_down(&mut m, "ingest-1", LIVE, &[("cam1", &root)], 10);
    beat(&mut m, &root, &[], 11);
    assert!(!m.confirm_dead(&root, 11), "a suspect that beat is not confirmed dead");
    assert!(m.nodes[&root].alive);
    // Suspected again, and it keeps beating: the sweeps leave it alone.
    beat_down(&mut m, "ingest-1", LIVE, &[("cam1", &root)], 12);
    let other_root = if root == "root-1" { "root-2" } else { "root-1" };
    for t in 12..20 {
        beat(&mut m, &root, &[], t);
        beat(&mut m, other_root, &[], t);
        beat(&mut m, &edge, &[], t);
        beat(&mut m, other, &[], t);
        beat_down(&mut m, "ingest-1", LIVE, &[("cam1", &root)], t);
        assert_eq!(m.sweep(t), Vec::<String>::new());
    }
    assert_eq!(m.streams["cam1"].roots[0].to, root);
}

#[test]
fn a_suspect_that_goes_silent_dies_after_one_interval_not_the_timeout() {
    let mut m = four(Config { heartbeat_interval_s: 2, node_timeout_s: 10, ..Config::default() });
    for id in ["root-1", "root-2", "edge-1", "edge-2"] {
        beat(&mut m, id, &[], 10);
    }
    beat(&mut m, "ingest-1", LIVE, 10);
    let root = m.streams["cam1"].roots[0].to.clone();
    beat_down(&mut m, "ingest-1", LIVE, &[("cam1", &root)], 11);
    assert_eq!(m.sweep(13), Vec::<String>::new(), "a beat late by less than a second");
    assert_eq!(m.sweep(14), vec![root.clone()], "silent for more than the interval and a second");
    check(&m);
    assert_ne!(m.streams["cam1"].roots[0].to, root);
    // Unsuspected nodes wait out the timeout.
    assert_eq!(m.sweep(20), Vec::<String>::new());
}

#[test]
fn a_restarted_master_keeps_the_edges_whose_heartbeats_show_viewers() {
    // A new master: it never saw edge-2's route request. Its heartbeat (viewers of cam1,
    // which it still has) comes before or after the ingest's: either way it keeps cam1.
    for edge_first in [true, false] {
        let mut m = four(Config { edge_fanout: 1, ..Config::default() });
        let watched: &[(&str, &str, u64)] = &[("cam1", "root-1", 3)];
        if edge_first {
            beat(&mut m, "edge-2", watched, 1);
            beat(&mut m, "ingest-1", LIVE, 1);
        } else {
            beat(&mut m, "ingest-1", LIVE, 1);
            beat(&mut m, "edge-2", watched, 1);
        }
        let p = &m.streams["cam1"];
        assert!(p.edges.iter().any(|h| h.to == "edge-2"), "edge first: {edge_first}: {p:?}");
        assert!(p.edges.iter().any(|h| h.to == "edge-1" && !h.by_route), "the fan-out as before");
        // No viewers there any more: it leaves after --edge-idle, as a routed edge does.
        beat(&mut m, "edge-2", &[("cam1", "root-1", 0)], 2);
        let idle = m.cfg.edge_idle_s;
        beat(&mut m, "edge-2", &[("cam1", "root-1", 0)], 2 + idle);
        assert!(!m.streams["cam1"].edges.iter().any(|h| h.to == "edge-2"));
    }
}

/// `beat_down` with the pushes `stalled` rather than `retrying`.
fn beat_stalled(m: &mut Mesh, id: &str, live: &[(&str, &str, u64)], stalled: &[(&str, &str)], now: u64) {
    let mut hb = Heartbeat::empty(id, m.nodes[id].role);
    hb.table_version = m.table_version(id);
    hb.streams = live
        .iter()
        .map(|(s, src, v)| StreamStat {
            stream: s.to_string(),
            source: src.to_string(),
            viewers: *v,
            in_kbps: 1,
        })
        .collect();
    hb.pushes = stalled
        .iter()
        .map(|(s, to)| PushStat { stream: s.to_string(), to: to.to_string(), state: "stalled".into() })
        .collect();
    m.heartbeat(&hb, now).unwrap();
    check(m);
}

#[test]
fn a_stalled_push_to_a_node_that_answers_moves_that_hop_only() {
    let mut m = four(Config { heartbeat_interval_s: 1, node_timeout_s: 3, ..Config::default() });
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0), ("cam2", "broadcaster", 0)], 10);
    let root = m.streams["cam1"].roots[0].to.clone();
    let other_root = if root == "root-1" { "root-2" } else { "root-1" };
    let edge = m.streams["cam1"].edges[0].to.clone();
    let cam2_root = m.streams["cam2"].roots[0].to.clone();
    let live: &[(&str, &str, u64)] = &[("cam1", "broadcaster", 0), ("cam2", "broadcaster", 0)];
    // The path ingest-1 → root stalls for cam1: root is probed, it answers.
    beat_stalled(&mut m, "ingest-1", live, &[("cam1", &root)], 11);
    let url = m.nodes[&root].rtmp_url.clone();
    assert_eq!(m.take_probes(), vec![(root.clone(), url)]);
    let before = m.table_version(&edge);
    assert_eq!(m.path_dead(&root, 11), vec![("cam1".to_string(), other_root.to_string())]);
    check(&m);
    assert!(m.nodes[&root].alive, "never evicted: it answers");
    let p = &m.streams["cam1"];
    assert_eq!(p.roots.len(), 1);
    assert_eq!(p.roots[0].to, other_root, "the hop moved: {p:?}");
    assert!(p.edges.iter().any(|h| h.to == edge && h.from == other_root), "the edge kept, fed anew: {p:?}");
    assert!(m.table_version(&edge) > before, "the edge's table says so");
    assert_eq!(m.streams["cam2"].roots[0].to, cam2_root, "its other streams stay");
    assert_eq!(m.path_dead(&root, 11), vec![], "once");
}

#[test]
fn a_stalled_push_moves_only_the_reporters_root_hop_and_only_while_fresh() {
    let mut m = four(Config { heartbeat_interval_s: 1, node_timeout_s: 3, ..Config::default() });
    beat(&mut m, "ingest-1", LIVE, 10);
    let root = m.streams["cam1"].roots[0].to.clone();
    let edge = m.streams["cam1"].edges[0].to.clone();
    let other = if edge == "edge-1" { "edge-2" } else { "edge-1" };
    // Not its hop (an edge, a stream it does not ingest, a node it does not feed): nothing.
    beat_stalled(&mut m, other, &[], &[("cam1", &edge), ("cam1", &root)], 10);
    beat_stalled(&mut m, &edge, &[], &[("cam1", &root)], 10);
    beat_stalled(&mut m, "ingest-1", LIVE, &[("cam9", &root), ("cam1", &edge)], 10);
    assert_eq!(m.path_dead(&root, 10), vec![]);
    assert_eq!(m.path_dead(&edge, 10), vec![]);
    assert_eq!(m.streams["cam1"].roots[0].to, root);
    // A root relay's stalled push to an edge it does not feed: not even a suspect.
    let other_root = if root == "root-1" { "root-2" } else { "root-1" };
    beat_stalled(&mut m, other_root, &[], &[("cam1", &edge)], 10);
    assert!(!m.take_probes().iter().any(|(id, _)| *id == edge));
    assert_eq!(m.path_dead(&edge, 10), vec![]);
    // Its own hop, but the report is stale by the time the probe answers: nothing.
    beat_stalled(&mut m, "ingest-1", LIVE, &[("cam1", &root)], 12);
    assert_eq!(m.path_dead(&root, 15), vec![]);
    assert_eq!(m.streams["cam1"].roots[0].to, root);
    // No other root relay alive: the hop stays where it is.
    for t in 16..20 {
        beat(&mut m, &root, &[], t);
        beat(&mut m, &edge, &[], t);
        beat(&mut m, "ingest-1", LIVE, t);
    }
    m.sweep(20);
    assert!(!m.nodes[other_root].alive);
    beat_stalled(&mut m, "ingest-1", LIVE, &[("cam1", &root)], 20);
    assert_eq!(m.path_dead(&root, 20), vec![]);
    check(&m);
    assert_eq!(m.streams["cam1"].roots[0].to, root);
}

/// An ingest whose path to its root relay is cut reports every push of it `stalled`, in
/// every heartbeat until one makes progress: with 10,000 streams that heartbeat costs about
/// what the same one with the pushes `retrying` costs. Red team: each report was looked up
/// in a list of the reports before it (10,000²/2 comparisons under the mesh's lock; 20,000
/// pushes, the cap, held it 0.34 s in a release build, every heartbeat).
#[test]
fn many_stalled_pushes_cost_what_as_many_retrying_ones_do() {
    let cost = |state: &str| {
        let mut m = mesh(Config { heartbeat_interval_s: 1, node_timeout_s: 3, ..Config::default() });
        announce(&mut m, "ingest-1", Role::Ingest, 1935);
        announce(&mut m, "root-1", Role::RootRelay, 1936);
        let names: Vec<String> = (0..10_000).map(|i| format!("cam{i}")).collect();
        m.set_publish(names.iter().map(|s| (s.clone(), "ab".repeat(32))).collect());
        let mut hb = Heartbeat::empty("ingest-1", Role::Ingest);
        hb.streams = names
            .iter()
            .map(|s| StreamStat { stream: s.clone(), source: "broadcaster".into(), viewers: 0, in_kbps: 1 })
            .collect();
        m.heartbeat(&hb, 10).unwrap();
        hb.table_version = m.table_version("ingest-1");
        hb.pushes = names
            .iter()
            .map(|s| PushStat { stream: s.clone(), to: "root-1".into(), state: state.into() })
            .collect();
        let t = std::time::Instant::now();
        m.heartbeat(&hb, 11).unwrap();
        m.heartbeat(&hb, 12).unwrap();
        t.elapsed()
    };
    let (retrying, stalled) = (cost("retrying"), cost("stalled"));
    assert!(
        stalled < retrying * 3 + std::time::Duration::from_millis(50),
        "{stalled:?} against {retrying:?}"
    );
}

/// The path root relay → edge is cut (the root relay's push to it stalled, the edge answers
/// the probe and keeps beating): the edge keeps the stream, fed by a root relay placed on the
/// stream for it; the root relay, the edge's other streams and other reporters' hops stay.
#[test]
fn a_stalled_push_to_an_edge_that_answers_moves_its_feed_only() {
    let mut m = four(Config { heartbeat_interval_s: 1, node_timeout_s: 3, ..Config::default() });
    let live: &[(&str, &str, u64)] = &[("cam1", "broadcaster", 0), ("cam2", "broadcaster", 0)];
    beat(&mut m, "ingest-1", live, 10);
    let root = m.streams["cam1"].roots[0].to.clone();
    let other_root = if root == "root-1" { "root-2" } else { "root-1" };
    let edge = m.streams["cam1"].edges[0].to.clone();
    let cam2 = m.streams["cam2"].clone();
    // Reports about hops the reporter does not feed move nothing: the other root relay, the
    // ingest, the other edge.
    let other_edge = if edge == "edge-1" { "edge-2" } else { "edge-1" };
    beat_stalled(&mut m, other_root, &[], &[("cam1", &edge)], 11);
    beat_stalled(&mut m, "ingest-1", live, &[("cam1", &edge)], 11);
    beat_stalled(&mut m, other_edge, &[], &[("cam1", &edge)], 11);
    assert_eq!(m.path_dead(&edge, 11), vec![]);
    assert_eq!(m.streams["cam1"].edges[0].from, root);
    // Its own feed: the edge is probed, answers, and is fed by the other root relay.
    beat_stalled(&mut m, &root, &[], &[("cam1", &edge)], 11);
    let url = m.nodes[&edge].rtmp_url.clone();
    assert_eq!(m.take_probes(), vec![(edge.clone(), url)]);
    let by_route = m.streams["cam1"].edges[0].by_route;
    let before = m.table_version(&edge);
    assert_eq!(m.path_dead(&edge, 11), vec![("cam1".to_string(), other_root.to_string())]);
    check(&m);
    assert!(m.nodes[&edge].alive, "never evicted: it answers");
    let p = &m.streams["cam1"];
    assert!(p.roots.iter().any(|h| h.to == root), "the root relay keeps the stream: {p:?}");
    assert!(p.roots.iter().any(|h| h.to == other_root), "placed on the other one for the edge: {p:?}");
    let fed: Vec<&Hop> = p.edges.iter().filter(|h| h.to == edge).collect();
    assert_eq!(fed.len(), 1, "one feed: {p:?}");
    assert_eq!((fed[0].from.as_str(), fed[0].by_route), (other_root, by_route), "{p:?}");
    assert!(m.table_version(&edge) > before, "the edge's table says so");
    assert_eq!(m.streams["cam2"], cam2, "its other streams stay");
    assert_eq!(m.path_dead(&edge, 11), vec![], "once");
    // Placed again (a heartbeat): the extra root relay and the moved feed stay.
    beat(&mut m, "ingest-1", live, 12);
    assert_eq!(
        m.streams["cam1"].edges.iter().find(|h| h.to == edge).map(|h| h.from.as_str()),
        Some(other_root)
    );
}

/// With two root relays on the stream, the cut edge is fed by the other one; nothing else
/// changes. Without another live root relay, nothing moves.
#[test]
fn a_cut_edge_is_fed_by_the_streams_other_root_relay_or_stays() {
    let mut m =
        four(Config { heartbeat_interval_s: 1, node_timeout_s: 3, root_fanout: 2, ..Config::default() });
    beat(&mut m, "ingest-1", LIVE, 10);
    let roots = m.streams["cam1"].roots.clone();
    assert_eq!(roots.len(), 2);
    let edge = m.streams["cam1"].edges[0].to.clone();
    let root = m.streams["cam1"].edges[0].from.clone();
    let other_root = if root == "root-1" { "root-2" } else { "root-1" };
    beat_stalled(&mut m, &root, &[], &[("cam1", &edge)], 11);
    assert_eq!(m.path_dead(&edge, 11), vec![("cam1".to_string(), other_root.to_string())]);
    check(&m);
    let p = &m.streams["cam1"];
    assert_eq!(p.roots, roots, "the root relays stay");
    assert!(p.edges.iter().all(|h| h.to != edge || h.from == other_root), "{p:?}");
    // The first root relay dies: the other's stalled push to the edge has nowhere to move.
    for t in 12..20 {
        beat(&mut m, other_root, &[], t);
        beat(&mut m, &edge, &[], t);
        beat(&mut m, "ingest-1", LIVE, t);
    }
    m.sweep(20);
    assert!(!m.nodes[&root].alive);
    beat_stalled(&mut m, other_root, &[], &[("cam1", &edge)], 20);
    let p = m.streams["cam1"].clone();
    assert_eq!(m.path_dead(&edge, 20), vec![]);
    check(&m);
    assert_eq!(m.streams["cam1"], p, "nothing moved");
}
