//! A restarted master hands a hop it places again the key it had ([`crate::hop_keys`]), so no
//! push reconnects across the restart; a hop that moved, or was taken away, gets a new one.

use super::*;
use crate::hop_keys::KeptKeys;
use mesh_core::wire::PushStat;
use std::collections::BTreeMap;

const LIVE: &[(&str, &str, u64)] = &[("cam1", "broadcaster", 0)];

/// A database of its own, removed at the end.
struct Db(std::path::PathBuf);
impl Drop for Db {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn db(name: &str) -> (Db, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("mesh-restart-keys-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("master.db");
    crate::store::Store::open(&path).unwrap();
    (Db(dir), path)
}

/// One run of the master on the database at `path`: the five nodes but `down` announce again.
fn run(path: &std::path::Path, until: u64, down: &[&str]) -> Mesh {
    let cfg = Config { auto_approve: Role::ALL.to_vec(), ..Config::default() };
    let mut m = Mesh::new(cfg, 100, Box::new(KeptKeys::open(path, until).unwrap()));
    m.set_publish([("cam1".to_string(), "ab".repeat(32))].into());
    for (i, (id, role)) in [
        ("ingest-1", Role::Ingest),
        ("root-1", Role::RootRelay),
        ("root-2", Role::RootRelay),
        ("edge-1", Role::Relay),
        ("edge-2", Role::Relay),
    ]
    .into_iter()
    .enumerate()
    .filter(|(_, (id, _))| !down.contains(id))
    {
        announce(&mut m, id, role, 1935 + i as u16);
    }
    m
}

/// cam1's hops: (from, to) → key.
fn hops(m: &Mesh) -> BTreeMap<(String, String), String> {
    let p = &m.streams["cam1"];
    p.roots.iter().chain(&p.edges).map(|h| ((h.from.clone(), h.to.clone()), h.key.clone())).collect()
}

#[test]
fn a_restarted_master_hands_out_the_keys_of_the_hops_it_places_again() {
    let (_db, path) = db("again");
    let mut m = run(&path, 0, &[]);
    beat(&mut m, "ingest-1", LIVE, 1);
    beat(&mut m, "edge-2", &[("cam1", "root-1", 2)], 1);
    let before = hops(&m);
    assert_eq!(before.len(), 3, "{before:?}");
    drop(m);
    // The restart: the same heartbeats (in another order) place the same hops, with the same keys.
    let mut m = run(&path, 100, &[]);
    beat(&mut m, "edge-2", &[("cam1", "root-1", 2)], 50);
    beat(&mut m, "ingest-1", LIVE, 50);
    assert_eq!(hops(&m), before, "every hop with the key it had");
    // A hop that moves is a new hop: root-1 is cut off, edge-1 and edge-2 are fed by root-2.
    beat(&mut m, "root-2", &[], 50);
    beat(&mut m, "edge-1", &[], 50);
    m.never_seen("root-1");
    m.sweep(51);
    check(&m);
    let moved = hops(&m);
    assert_eq!(moved.len(), 3, "{moved:?}");
    assert!(moved.keys().all(|(from, to)| from != "root-1" && to != "root-1"), "{moved:?}");
    for ((from, to), key) in &moved {
        assert!(!before.values().any(|k| k == key), "{from} → {to}: a new key");
    }
    drop(m);
    // The next restart hands out the moved hops' keys, not the ones taken away.
    let mut m = run(&path, 200, &["root-1"]);
    beat(&mut m, "ingest-1", LIVE, 150);
    beat(&mut m, "edge-2", &[("cam1", "root-2", 2)], 150);
    assert_eq!(hops(&m), moved);
    // The stream ends: its keys go; it comes back with new ones.
    beat(&mut m, "ingest-1", &[], 151);
    drop(m);
    let mut m = run(&path, 300, &["root-1"]);
    beat(&mut m, "ingest-1", LIVE, 250);
    assert_eq!(hops(&m).len(), 2);
    for ((from, to), key) in hops(&m) {
        assert!(!moved.values().any(|k| *k == key), "{from} → {to}: a new key after the stream ended");
    }
}

#[test]
fn a_restarted_master_takes_the_root_relay_a_stream_had() {
    // The last run placed cam1 on root-2 (root-1 was down then); both are up after the restart:
    // the least loaded rule alone would take root-1 (the id), and the push would move.
    let (_db, path) = db("root");
    let mut m = run(&path, 0, &["root-1"]);
    beat(&mut m, "ingest-1", LIVE, 1);
    let before = hops(&m);
    assert!(before.contains_key(&("ingest-1".to_string(), "root-2".to_string())), "{before:?}");
    drop(m);
    let mut m = run(&path, 100, &[]);
    beat(&mut m, "ingest-1", LIVE, 50);
    assert_eq!(hops(&m), before, "the same root relay, with the same key");
    // The stream ends and comes back: placed anew, by load again.
    beat(&mut m, "ingest-1", &[], 51);
    beat(&mut m, "ingest-1", LIVE, 100);
    assert!(hops(&m).contains_key(&("ingest-1".to_string(), "root-1".to_string())));
}

#[test]
fn a_root_hop_moved_off_a_dead_path_keeps_its_key_across_a_restart() {
    // cam1's ingest → root path stalls while the root answers: the hop moves (Mesh::path_dead).
    // The moved hop is a placed hop like any other: a restarted master hands back its key, so
    // its push goes on across the restart (red team: it was made with a key never kept).
    let (_db, path) = db("path-dead");
    let mut m = run(&path, 0, &[]);
    beat(&mut m, "ingest-1", LIVE, 1);
    let root = m.streams["cam1"].roots[0].to.clone();
    let other = if root == "root-1" { "root-2" } else { "root-1" };
    let mut hb = Heartbeat::empty("ingest-1", Role::Ingest);
    hb.table_version = m.table_version("ingest-1");
    hb.streams =
        vec![StreamStat { stream: "cam1".into(), source: "broadcaster".into(), viewers: 0, in_kbps: 1 }];
    hb.pushes = vec![PushStat { stream: "cam1".into(), to: root.clone(), state: "stalled".into() }];
    m.heartbeat(&hb, 2).unwrap();
    assert_eq!(m.path_dead(&root, 2), vec![("cam1".to_string(), other.to_string())]);
    check(&m);
    let moved = hops(&m);
    assert!(moved.contains_key(&("ingest-1".to_string(), other.to_string())), "{moved:?}");
    drop(m);
    let mut m = run(&path, 100, &[]);
    beat(&mut m, "ingest-1", LIVE, 50);
    let again = hops(&m);
    let key =
        |h: &BTreeMap<(String, String), String>| h.get(&("ingest-1".to_string(), other.to_string())).cloned();
    assert!(key(&again).is_some(), "the restarted master keeps the stream on {other}: {again:?}");
    assert_eq!(key(&again), key(&moved), "the moved root hop's key handed back");
}
