//! The placement rules, and the kept indexes and tables checked against ones made from nothing.

mod behind;
mod kept;
mod restart_keys;
mod roles;
mod suspect;

use super::*;
use mesh_core::admission::{PublishRequest, SessionKind};
use mesh_core::table::Table;
use mesh_core::viewer::DEFAULT_MAX_TTL_S;
use mesh_core::wire::{Capabilities, Load, StreamStat};
use std::collections::BTreeSet;

struct Counted(u32);
impl Keys for Counted {
    fn hop_key(&mut self) -> String {
        self.0 += 1;
        format!("k{}", self.0)
    }
}

/// A mesh that grants every node the role it asks for (roles.rs tests the grants).
fn mesh(cfg: Config) -> Mesh {
    mesh_granting(Config { auto_approve: Role::ALL.to_vec(), ..cfg })
}

fn mesh_granting(cfg: Config) -> Mesh {
    let mut m = Mesh::new(cfg, 100, Box::new(Counted(0)));
    m.set_viewer_keys(vec![ViewerKey {
        id: "k1".into(),
        secret: "secret-0123456789".into(),
        not_after: None,
    }]);
    m.set_publish([("cam1".to_string(), "ab".repeat(32)), ("cam2".to_string(), "cd".repeat(32))].into());
    m
}

/// The indexes and tables kept as changes came are the ones made from the placements alone.
pub(super) fn check(m: &Mesh) {
    let (part, load) = m.index_from_scratch();
    let (kept_part, kept_load) = m.index_kept();
    assert_eq!(kept_part, &part, "who takes part in which stream");
    assert_eq!(kept_load, &load, "hops placed on each node");
    let (routed, kept_routed) = m.routed();
    assert_eq!(kept_routed, &routed, "route-added edges");
    let fresh = m.tables_from_scratch();
    let kept = m.tables_kept();
    for (id, t) in &fresh {
        assert_eq!(kept.get(id), Some(t), "{id}'s table");
    }
    assert_eq!(kept.len(), fresh.len(), "a table per node");
    // Every table has its own version, none above the counter.
    let versions: BTreeSet<u64> = m.nodes.keys().map(|id| m.table_version(id)).collect();
    assert_eq!(versions.len(), m.nodes.len(), "one version per table");
    assert!(versions.iter().all(|v| *v <= m.version()));
    // Every stream short of a fan-out has every candidate of that role already.
    let candidates =
        |role: Role| m.nodes.values().filter(move |n| n.alive && n.role == role && !n.node_url.is_empty());
    for (s, p) in &m.streams {
        if p.roots.len() < m.cfg.root_fanout {
            for n in candidates(Role::RootRelay) {
                assert!(p.roots.iter().any(|h| h.to == n.node_id), "{s}: root relay {} left out", n.node_id);
            }
        }
        let fanned = p.edges.iter().filter(|h| !h.by_route).count();
        if !p.roots.is_empty() && fanned < m.cfg.edge_fanout {
            for n in candidates(Role::Relay) {
                assert!(p.edges.iter().any(|h| h.to == n.node_id), "{s}: edge {} left out", n.node_id);
            }
        }
    }
}

fn announce(m: &mut Mesh, id: &str, role: Role, port: u16) {
    announce_url(m, id, role, &format!("rtmp://127.0.0.1:{port}"));
}

fn announce_url(m: &mut Mesh, id: &str, role: Role, rtmp_url: &str) {
    m.announce(
        &Announce {
            node_id: id.into(),
            role,
            rtmp_url: rtmp_url.into(),
            http_url: String::new(),
            version: "t".into(),
            capabilities: Capabilities { transcode: true, hls: true, dash: true },
        },
        0,
    );
    check(m);
}

fn beat(m: &mut Mesh, id: &str, streams: &[(&str, &str, u64)], now: u64) {
    let hb = Heartbeat {
        node_id: id.into(),
        role: m.nodes[id].role,
        table_version: m.table_version(id),
        uptime_s: now,
        streams: streams
            .iter()
            .map(|(s, src, v)| StreamStat {
                stream: s.to_string(),
                source: src.to_string(),
                viewers: *v,
                in_kbps: 1000,
            })
            .collect(),
        pushes: vec![],
        transcodes: vec![],
        load: Load::default(),
    };
    m.heartbeat(&hb, now).unwrap();
    check(m);
}

/// Four nodes: ingest, two root relays, two edges.
fn four(cfg: Config) -> Mesh {
    let mut m = mesh(cfg);
    announce(&mut m, "ingest-1", Role::Ingest, 1935);
    announce(&mut m, "root-1", Role::RootRelay, 1936);
    announce(&mut m, "root-2", Role::RootRelay, 1937);
    announce(&mut m, "edge-1", Role::Relay, 1938);
    announce(&mut m, "edge-2", Role::Relay, 1939);
    m
}

/// The table a node would load: the master's JSON through the node's own parser.
fn table(m: &Mesh, id: &str) -> Table {
    let (v, json) = m.table_json(id).expect("a table");
    let t = Table::parse(&json).unwrap_or_else(|e| panic!("{id}: {e}"));
    assert_eq!(t.version, v);
    t
}

fn node(m: &Mesh, id: &str) -> mesh_core::node::Node {
    let table = table(m, id);
    let dial = mesh_core::node::Node::target_urls(&table).map(|u| (u.clone(), u.clone())).collect();
    mesh_core::node::Node { node_id: id.into(), role: m.nodes[id].role, table, dial }
}

/// Follow a stream's pushes from `from` (fed by `source`) through the nodes' own admission:
/// returns every node that admitted a push of it.
fn walk(m: &Mesh, stream: &str, from: &str, source: Option<&str>, seen: &mut Vec<String>) {
    for p in node(m, from).plan_pushes(stream, source) {
        let url = p.url.expect("dialable");
        let args = url.split_once('?').unwrap().1.to_string();
        let to = node(m, &p.node_id);
        let d = to.context(0).publish(PublishRequest { stream, args: &args });
        assert_eq!(d, Ok(SessionKind::NodePush { from: from.to_string() }), "{from} → {}", p.node_id);
        seen.push(p.node_id.clone());
        walk(m, stream, &p.node_id, Some(from), seen);
    }
}

fn reached(m: &Mesh, stream: &str) -> Vec<String> {
    let mut seen = vec![];
    let ingest = m.streams[stream].ingest.clone();
    walk(m, stream, &ingest, None, &mut seen);
    seen.sort();
    seen
}

#[test]
fn a_live_stream_is_placed_and_every_hop_admits_the_next() {
    let mut m = four(Config::default());
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
    assert_eq!(reached(&m, "cam1"), ["edge-1", "root-1"]);
    let ingest = table(&m, "ingest-1");
    assert_eq!(ingest.role, Some(Role::Ingest));
    assert_eq!(ingest.publish.len(), 2, "every broadcaster key");
    assert!(!ingest.checks_viewer_tokens() && ingest.stream_ids.is_none(), "ingest nodes serve no viewers");
    let edge = table(&m, "edge-1");
    assert_eq!(edge.viewer_keys[0].secret, "secret-0123456789");
    assert!(edge.viewer_secret.is_none(), "the master sends no legacy secret");
    assert_eq!(edge.max_token_ttl_s, Some(DEFAULT_MAX_TTL_S));
    assert_eq!(edge.stream_ids.as_ref().unwrap().len(), 2, "every stream's identity");
    assert!(table(&m, "root-1").stream_ids.is_none());
    assert!(table(&m, "edge-2").relay.is_empty());
    let keys: BTreeSet<String> =
        m.streams["cam1"].roots.iter().chain(&m.streams["cam1"].edges).map(|h| h.key.clone()).collect();
    assert_eq!(keys.len(), 2, "a key per hop");
    // A push with another hop's key is refused.
    let root = node(&m, "root-1");
    let edge_key = &m.streams["cam1"].edges[0].key;
    let args = format!("node=ingest-1&key={edge_key}");
    assert!(root.context(0).publish(PublishRequest { stream: "cam1", args: &args }).is_err());
}

#[test]
fn viewer_tokens_follow_rotations_and_re_created_streams() {
    use mesh_core::viewer::TokenError;
    let mut m = four(Config { max_token_ttl_s: 600, ..Config::default() });
    let row = |id: &str| StreamRow { key_sha256: "ab".repeat(32), id: id.into() };
    let key = |id: &str, not_after| ViewerKey {
        id: id.into(),
        secret: format!("{id}-secret-0123456789"),
        not_after,
    };
    m.set_streams([("cam1".to_string(), row("gen1"))].into());
    m.set_viewer_keys(vec![key("k1", None)]);
    let (old, _) = m.viewers().mint("cam1", m.stream_identity("cam1"), 600, 1_000).unwrap();
    assert_eq!(m.viewers().mint("cam1", m.stream_identity("cam1"), 601, 1_000), Err(TokenError::TooLong));
    let edge = table(&m, "edge-1");
    assert_eq!(edge.max_token_ttl_s, Some(600));
    assert_eq!(edge.verify_viewer("cam1", &old, 1_000), Ok(()));
    // Rotated: the edges' tables change; the old key's tokens verify until its grace ends.
    let v = m.table_version("edge-1");
    let untouched = m.table_version("root-1");
    m.set_viewer_keys(vec![key("k2", None), key("k1", Some(1_500))]);
    assert!(m.table_version("edge-1") > v);
    assert_eq!(m.table_version("root-1"), untouched, "root relays carry no viewer keys");
    let edge = table(&m, "edge-1");
    assert_eq!(edge.verify_viewer("cam1", &old, 1_500), Ok(()));
    assert_eq!(edge.verify_viewer("cam1", &old, 1_501), Err(TokenError::RetiredKey));
    let (new, _) = m.viewers().mint("cam1", m.stream_identity("cam1"), 600, 1_000).unwrap();
    assert!(new.starts_with("v2.k2."), "{new}");
    assert!(!m.drop_retired_viewer_keys(1_500));
    assert!(m.drop_retired_viewer_keys(1_501));
    assert_eq!(table(&m, "edge-1").viewer_keys.len(), 1);
    assert_eq!(table(&m, "edge-1").verify_viewer("cam1", &old, 1_000), Err(TokenError::UnknownKey));
    // Deleted and created again: a new identity, and the tokens of the old stream fail.
    m.set_streams([("cam1".to_string(), row("gen2"))].into());
    assert_eq!(table(&m, "edge-1").verify_viewer("cam1", &new, 1_000), Err(TokenError::BadSignature));
    m.set_streams(BTreeMap::new());
    assert_eq!(m.stream_identity("cam1"), StreamId::Unknown);
    assert_eq!(
        m.viewers().verify("cam1", m.stream_identity("cam1"), &new, 1_000),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn streams_spread_over_the_least_loaded_nodes() {
    let mut m = four(Config::default());
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0), ("cam2", "broadcaster", 0)], 1);
    let roots: BTreeSet<&str> = m.streams.values().map(|p| p.roots[0].to.as_str()).collect();
    let edges: BTreeSet<&str> = m.streams.values().map(|p| p.edges[0].to.as_str()).collect();
    assert_eq!(roots.len(), 2, "{roots:?}");
    assert_eq!(edges.len(), 2, "{edges:?}");
}

#[test]
fn fanout_is_configurable() {
    let mut m = four(Config { root_fanout: 2, edge_fanout: 2, ..Config::default() });
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
    assert_eq!(reached(&m, "cam1"), ["edge-1", "edge-2", "root-1", "root-2"]);
    assert_ne!(m.streams["cam1"].edges[0].from, m.streams["cam1"].edges[1].from, "edges spread over roots");
}

#[test]
fn a_route_request_adds_the_edge_or_waits_for_the_stream() {
    let mut m = four(Config::default());
    assert_eq!(m.route("edge-2", "nope", 1).unwrap().0, RouteStatus::Unknown);
    assert_eq!(m.route("root-1", "cam1", 1).unwrap().0, RouteStatus::Denied);
    assert_eq!(m.route("ghost", "cam1", 1), Err(MeshError::NotAnnounced));
    // Not live yet: remembered, and placed there when it goes live.
    assert_eq!(m.route("edge-2", "cam2", 1).unwrap().0, RouteStatus::Unknown);
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0), ("cam2", "broadcaster", 0)], 2);
    assert!(reached(&m, "cam2").contains(&"edge-2".to_string()));
    // Live: added at once, with the version of its new table.
    let before = m.table_version("edge-2");
    let edge_of_cam1 = m.streams["cam1"].edges[0].to.clone();
    let other = if edge_of_cam1 == "edge-1" { "edge-2" } else { "edge-1" };
    let (status, v) = m.route(other, "cam1", 3).unwrap();
    assert_eq!(status, RouteStatus::Routed);
    assert_eq!(v, m.table_version(other));
    assert!(v > before);
    assert_eq!(reached(&m, "cam1"), ["edge-1", "edge-2", "root-1"]);
    // Asking again changes nothing.
    let v0 = m.version();
    assert_eq!(m.route(other, "cam1", 4).unwrap().0, RouteStatus::Routed);
    assert_eq!(m.version(), v0);
}

#[test]
fn a_dead_root_relay_is_replaced_with_new_keys() {
    let mut m = four(Config { node_timeout_s: 5, ..Config::default() });
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
    let old = m.streams["cam1"].clone();
    assert_eq!(old.roots[0].to, "root-1");
    // Everyone but root-1 keeps beating.
    for id in ["ingest-1", "root-2", "edge-1", "edge-2"] {
        beat(&mut m, id, if id == "ingest-1" { &[("cam1", "broadcaster", 0)] } else { &[] }, 5);
    }
    assert_eq!(m.sweep(7), ["root-1"]);
    let new = &m.streams["cam1"];
    assert_eq!(new.roots[0].to, "root-2");
    assert_eq!(new.edges[0].from, "root-2");
    assert_ne!(new.roots[0].key, old.roots[0].key);
    assert_ne!(new.edges[0].key, old.edges[0].key);
    assert_eq!(reached(&m, "cam1"), ["edge-1", "root-2"]);
    assert!(m.table_json("root-1").is_some(), "a dead node keeps its last table");
    // It comes back: alive again, and placed on when needed.
    announce(&mut m, "root-1", Role::RootRelay, 1936);
    assert!(m.nodes["root-1"].alive);
}

#[test]
fn a_dead_edge_leaves_its_streams_and_another_takes_the_fanout() {
    let mut m = four(Config { node_timeout_s: 5, ..Config::default() });
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
    for id in ["ingest-1", "root-1", "root-2", "edge-2"] {
        beat(&mut m, id, if id == "ingest-1" { &[("cam1", "broadcaster", 0)] } else { &[] }, 5);
    }
    m.sweep(7);
    assert_eq!(reached(&m, "cam1"), ["edge-2", "root-1"]);
}

#[test]
fn an_ended_stream_leaves_every_table() {
    let mut m = four(Config::default());
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
    let v = m.table_version("root-1");
    let untouched = m.table_version("root-2");
    beat(&mut m, "ingest-1", &[], 2);
    assert!(m.streams.is_empty());
    assert!(table(&m, "root-1").ingest.is_empty() && table(&m, "edge-1").relay.is_empty());
    assert!(m.table_version("root-1") > v, "a changed table takes a newer version");
    assert_eq!(m.table_version("root-2"), untouched, "an unchanged one keeps its version");
}

#[test]
fn streams_pushed_in_do_not_count_as_broadcasts() {
    let mut m = four(Config::default());
    beat(&mut m, "ingest-1", &[("cam1", "root-9", 0)], 1);
    assert!(m.streams.is_empty());
    assert_eq!(m.heartbeat(&Heartbeat { node_id: "ghost".into(), ..hb0() }, 1), Err(MeshError::NotAnnounced));
}

fn hb0() -> Heartbeat {
    Heartbeat::empty("", Role::Relay)
}

#[test]
fn an_admin_role_change_moves_the_streams() {
    let mut m = four(Config::default());
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
    m.set_role("root-1", Some(Role::Relay), 2);
    assert_eq!(table(&m, "root-1").role, Some(Role::Relay));
    assert_eq!(m.streams["cam1"].roots[0].to, "root-2");
    // A re-announce keeps the admin's role.
    announce(&mut m, "root-1", Role::RootRelay, 1936);
    assert_eq!(m.nodes["root-1"].role, Role::Relay);
    // Taken back: the node waits, out of the mesh, until it announces again (auto-approval
    // here grants it what it asks for then).
    m.set_role("root-1", None, 3);
    check(&m);
    assert!(!m.nodes.contains_key("root-1") && m.pending.contains_key("root-1"));
    assert!(m.table("root-1").is_none());
    announce(&mut m, "root-1", Role::RootRelay, 1936);
    assert_eq!(m.nodes["root-1"].role, Role::RootRelay);
}

#[test]
fn a_route_requested_edge_leaves_when_idle() {
    let mut m = four(Config { edge_idle_s: 10, ..Config::default() });
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
    let fan = m.streams["cam1"].edges[0].to.clone();
    let other = if fan == "edge-1" { "edge-2" } else { "edge-1" };
    m.route(other, "cam1", 1).unwrap();
    beat(&mut m, other, &[("cam1", "root-1", 3)], 2);
    beat(&mut m, other, &[("cam1", "root-1", 0)], 5);
    beat(&mut m, other, &[("cam1", "root-1", 0)], 14);
    assert_eq!(m.streams["cam1"].edges.len(), 2, "idle 9 s: kept");
    beat(&mut m, other, &[("cam1", "root-1", 0)], 16);
    assert_eq!(m.streams["cam1"].edges.len(), 1, "idle 11 s: gone");
    beat(&mut m, &fan, &[("cam1", "root-1", 0)], 100);
    assert_eq!(m.streams["cam1"].edges.len(), 1, "the fan-out edge stays");
}

#[test]
fn versions_go_past_what_a_node_holds() {
    let mut m = four(Config::default());
    let hb = Heartbeat { node_id: "edge-1".into(), table_version: 5000, ..hb0() };
    m.heartbeat(&hb, 1).unwrap();
    assert!(m.table_version("edge-1") > 5000);
    assert!(m.table_version("root-1") > 5000);
}

#[test]
fn a_version_near_2_64_never_wraps_the_counter() {
    let mut m = four(Config::default());
    let hb = Heartbeat { node_id: "edge-1".into(), table_version: u64::MAX - 1, ..hb0() };
    m.heartbeat(&hb, 1).unwrap();
    assert!(m.version() <= FOLLOW_MAX + 10, "followed up to 2^52 (+ the tables renumbered)");
    let v = m.table_version("root-1");
    assert!(v > FOLLOW_MAX && v < mesh_core::wire::caps::MAX_NUMBER);
    announce(&mut m, "edge-9", Role::Relay, 1999);
    assert!(m.table_version("edge-9") > v, "tables go on being numbered upwards");
}

#[test]
fn node_urls_get_the_relay_application() {
    assert_eq!(node_url("rtmp://10.0.0.3:1935", "relay"), "rtmp://10.0.0.3:1935/relay");
    assert_eq!(node_url("rtmp://10.0.0.3:1935/", "relay"), "rtmp://10.0.0.3:1935/relay");
    assert_eq!(node_url("rtmp://10.0.0.3:1935/edge", "relay"), "rtmp://10.0.0.3:1935/edge");
    assert_eq!(node_url("", "relay"), "", "no URL: never \"/relay\"");
}

#[test]
fn a_node_that_announces_again_unchanged_keeps_its_hops_and_every_table() {
    let mut m = four(Config { root_fanout: 2, edge_fanout: 2, ..Config::default() });
    beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
    let placed = m.streams["cam1"].clone();
    let versions: Vec<u64> = m.nodes.keys().map(|id| m.table_version(id)).collect();
    let v0 = m.version();
    // A reload or a new worker announcing for the node: same role, same URL.
    for id in ["ingest-1", "root-1", "edge-2"] {
        let (role, port) = (m.nodes[id].role, m.nodes[id].rtmp_url.clone());
        announce_url(&mut m, id, role, &port);
    }
    assert_eq!(m.streams["cam1"], placed, "no hop moved, no key changed");
    assert_eq!(m.nodes.keys().map(|id| m.table_version(id)).collect::<Vec<_>>(), versions);
    assert_eq!(m.version(), v0, "no table handed out again");
    // Another URL is another node to push to: its hops are made anew.
    announce_url(&mut m, "root-1", Role::RootRelay, "rtmp://127.0.0.1:2936");
    assert!(m.streams["cam1"].roots.iter().all(|h| !placed.roots.contains(h) || h.to != "root-1"));
    assert!(m.version() > v0);
}
