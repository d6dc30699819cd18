//! Placement at any fan-out, and the kept state checked against a fresh render through long
//! random runs.

use super::*;

#[test]
fn fan_out_to_every_relay_places_each_once() {
    let mut m = mesh(Config { edge_fanout: usize::MAX, ..Config::default() });
    announce(&mut m, "ingest-1", Role::Ingest, 1935);
    announce(&mut m, "root-1", Role::RootRelay, 1936);
    for i in 0..20 {
        announce(&mut m, &format!("edge-{i:02}"), Role::Relay, 2000 + i);
    }
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0), ("cam2", "broadcaster", 0)], 1);
    assert_eq!(m.streams["cam1"].edges.len(), 20);
    // A relay that joins later is put on every stream; one that dies leaves them.
    announce(&mut m, "edge-99", Role::Relay, 2099);
    assert!(m.streams.values().all(|p| p.edges.len() == 21 && p.edges.iter().any(|h| h.to == "edge-99")));
    for id in m.nodes.keys().cloned().collect::<Vec<_>>() {
        if id != "edge-03" {
            let live: &[(&str, &str, u64)] = if id == "ingest-1" {
                &[("cam1", "broadcaster", 0), ("cam2", "broadcaster", 0)]
            } else {
                &[]
            };
            beat(&mut m, &id, live, 40);
        }
    }
    m.sweep(45);
    check(&m);
    assert!(m.streams.values().all(|p| p.edges.len() == 20 && p.edges.iter().all(|h| h.to != "edge-03")));
}

/// A long run of random announces, heartbeats, route requests, role changes and deaths: after
/// each, the kept indexes and tables are the ones made from nothing.
#[test]
fn kept_state_matches_a_fresh_render_through_random_changes() {
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for fanout in [(1, 1), (2, 3), (1, usize::MAX)] {
        let mut m = mesh(Config {
            root_fanout: fanout.0,
            edge_fanout: fanout.1,
            node_timeout_s: 5,
            ..Config::default()
        });
        let streams = ["cam1", "cam2", "cam3", "cam4"];
        m.set_publish(streams.iter().map(|s| (s.to_string(), "ab".repeat(32))).collect());
        let ids: Vec<(String, Role)> = (0..12)
            .map(|i| {
                let role = match i % 4 {
                    0 => Role::Ingest,
                    1 => Role::RootRelay,
                    _ => Role::Relay,
                };
                (format!("n{i}"), role)
            })
            .collect();
        let mut now = 1;
        for _ in 0..600 {
            now += next(3);
            let (id, role) = &ids[next(ids.len() as u64) as usize];
            match next(10) {
                0 => announce(&mut m, id, *role, 3000 + next(2) as u16),
                1 => {
                    let r = [None, Some(Role::Relay), Some(Role::RootRelay), Some(Role::Ingest)]
                        [next(4) as usize];
                    m.set_role(id, r, now);
                    check(&m);
                }
                2 => {
                    m.sweep(now);
                    check(&m);
                }
                3 => {
                    if m.nodes.contains_key(id.as_str()) {
                        let _ = m.route(id, streams[next(4) as usize], now);
                        check(&m);
                    }
                }
                _ if m.nodes.contains_key(id.as_str()) => {
                    let source =
                        if m.nodes[id.as_str()].role == Role::Ingest { "broadcaster" } else { "root" };
                    let mut live: Vec<(&str, &str, u64)> = Vec::new();
                    for s in streams {
                        if next(2) == 0 {
                            live.push((s, source, next(2)));
                        }
                    }
                    beat(&mut m, id, &live, now);
                }
                _ => announce(&mut m, id, *role, 3000),
            }
        }
        assert!(!m.streams.is_empty() || m.version() > 100, "the run placed something");
    }
}

/// A root relay dies: each edge keeps the stream (its viewers stay); only its feed moves, to
/// another root relay, with a new key. Placing anew would pick the less busy edge instead.
#[test]
fn a_root_relay_death_keeps_the_edges_and_moves_their_feed() {
    let mut m = four(Config { node_timeout_s: 5, edge_fanout: 1, ..Config::default() });
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
    let before = m.streams["cam1"].clone();
    assert_eq!((before.roots[0].to.as_str(), before.edges[0].to.as_str()), ("root-1", "edge-1"));
    // edge-1 is busy with the stream's viewers; edge-2 idles.
    let mut hb = Heartbeat::empty("edge-1", Role::Relay);
    hb.streams =
        vec![StreamStat { stream: "cam1".into(), source: "root-1".into(), viewers: 40, in_kbps: 1000 }];
    hb.load = Load { connections: 41, in_kbps: 1000, out_kbps: 40_000 };
    hb.uptime_s = 4;
    m.heartbeat(&hb, 4).unwrap();
    for id in ["ingest-1", "root-2", "edge-2"] {
        beat(&mut m, id, if id == "ingest-1" { &[("cam1", "broadcaster", 0)] } else { &[] }, 4);
    }
    let v = m.table_version("edge-1");
    assert_eq!(m.sweep(7), ["root-1"]);
    check(&m);
    let after = &m.streams["cam1"];
    assert_eq!(after.edges.len(), 1);
    let e = &after.edges[0];
    assert_eq!((e.to.as_str(), e.from.as_str()), ("edge-1", "root-2"), "the watched edge keeps the stream");
    assert_ne!(e.key, before.edges[0].key, "a moved hop is a new hop: a new key");
    assert!(m.table_version("edge-1") > v);
    assert_eq!(table(&m, "edge-1").relay["cam1"][0].from.as_deref(), Some("root-2"));
    assert!(table(&m, "edge-2").relay.is_empty());
    // No root relay left at all: the edge waits for one, and is fed by the first to come.
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 10);
    beat(&mut m, "edge-1", &[("cam1", "root-2", 40)], 10);
    beat(&mut m, "edge-2", &[], 10);
    assert_eq!(m.sweep(13), ["root-2"]);
    check(&m);
    assert!(m.streams["cam1"].edges.is_empty());
    announce(&mut m, "root-1", Role::RootRelay, 1936);
    let e = &m.streams["cam1"].edges[0];
    assert_eq!((e.to.as_str(), e.from.as_str()), ("edge-1", "root-1"));
}

/// Relays joining and leaving streams fanned out to every relay, with one and two root relays
/// per stream: each root relay's out-list and each relay's own entries are patched by the
/// edges that came or went (in place, or copied when an older version is held by a reader),
/// and never differ from a fresh render; a held version never changes.
#[test]
fn patched_edge_lists_match_a_fresh_render_as_relays_join_and_leave() {
    for roots in [1, 2] {
        let cfg =
            Config { root_fanout: roots, edge_fanout: usize::MAX, node_timeout_s: 5, ..Config::default() };
        let mut m = mesh(cfg);
        announce(&mut m, "ingest-1", Role::Ingest, 1935);
        announce(&mut m, "root-1", Role::RootRelay, 1936);
        announce(&mut m, "root-2", Role::RootRelay, 1937);
        let live = [("cam1", "broadcaster", 0), ("cam2", "broadcaster", 0)];
        beat(&mut m, "ingest-1", &live, 1);
        let mut held = Vec::new();
        for i in 0..80u16 {
            let id = format!("edge-{i:02}");
            announce(&mut m, &id, Role::Relay, 2000 + i);
            if i % 7 == 0 {
                for id in ["root-1", "root-2", id.as_str()] {
                    let (v, doc) = m.table(id).expect("a table");
                    held.push((v, (*doc).clone(), doc));
                }
            }
        }
        assert!(m.streams.values().all(|p| p.edges.len() == 80));
        // An edge moves (a new URL: new hops), another comes back the same (nothing changes).
        announce(&mut m, "edge-05", Role::Relay, 2999);
        announce(&mut m, "edge-06", Role::Relay, 2006);
        // root-1 and two edges die: with two root relays, root-2 feeds all 78 edges left
        // (more than a patch takes at once); with one, each stream's edges move as one.
        for id in m.nodes.keys().cloned().collect::<Vec<_>>() {
            if !["root-1", "edge-10", "edge-11"].contains(&id.as_str()) {
                let l: &[(&str, &str, u64)] = if id == "ingest-1" { &live } else { &[] };
                beat(&mut m, &id, l, 10);
            }
        }
        m.sweep(10);
        check(&m);
        assert!(m
            .streams
            .values()
            .all(|p| p.edges.len() == 78 && p.edges.iter().all(|h| h.from == "root-2")));
        // A stream ends and comes back: every list goes and is made again.
        beat(&mut m, "ingest-1", &live[..1], 11);
        beat(&mut m, "ingest-1", &live, 12);
        for (v, was, doc) in held {
            assert_eq!(*doc, was, "version {v} changed while held");
        }
    }
}
