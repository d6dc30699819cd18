//! How long the master's decisions take at scale, each with the tables it changes brought up
//! to date:
//!
//! 1. a mesh of 4 ingest nodes, 8 root relays and 80 edges carrying N live streams: one ingest
//!    heartbeat that changes nothing, one that adds a stream, an edge heartbeat, a route
//!    request, and a root relay's death (its streams placed again);
//! 2. streams fanned out to every relay (476, 716, 956 of them): one heartbeat that makes 5
//!    streams live;
//! 3. 1,000 nodes and 10,000 streams, fan-out 1 and 100: the same decisions as in 1, and a
//!    relay joining.
//!
//!     cargo run --release -p mesh-master --example placement_scale [1|2|2b|3]...
//!
//! (the tables named, or all of them).

use std::time::Instant;

use mesh_core::role::Role;
use mesh_core::wire::{Announce, Capabilities, Heartbeat, StreamStat};
use mesh_master::mesh::{Config, Keys, Mesh};

struct Counted(u64);
impl Keys for Counted {
    fn hop_key(&mut self) -> String {
        self.0 += 1;
        format!("{:032x}", self.0)
    }
}

fn announce(m: &mut Mesh, id: &str, role: Role, port: u32) {
    m.announce(
        &Announce {
            node_id: id.into(),
            role,
            rtmp_url: format!("rtmp://10.0.{}.{}:1935", port / 250, port % 250),
            http_url: String::new(),
            version: "bench".into(),
            capabilities: Capabilities { transcode: true, hls: true, dash: true },
        },
        0,
    );
}

fn beat(id: &str, role: Role, streams: &[String], now: u64) -> Heartbeat {
    let mut hb = Heartbeat::empty(id, role);
    hb.uptime_s = now;
    hb.streams = streams
        .iter()
        .map(|s| StreamStat { stream: s.clone(), source: "broadcaster".into(), viewers: 0, in_kbps: 1000 })
        .collect();
    hb
}

/// The median of 7 runs of a decision that changes nothing the second time.
fn median(mut f: impl FnMut() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..7).map(|_| f()).collect();
    v.sort_by(f64::total_cmp);
    v[3]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn mesh(cfg: Config, ingests: usize, roots: usize, edges: usize) -> Mesh {
    let mut m = Mesh::new(Config { auto_approve: Role::ALL.to_vec(), ..cfg }, 0, Box::new(Counted(0)));
    let mut port = 0;
    let mut add = |m: &mut Mesh, prefix: &str, count: usize, role: Role| {
        for i in 0..count {
            port += 1;
            announce(m, &format!("{prefix}-{i}"), role, port);
        }
    };
    add(&mut m, "ingest", ingests, Role::Ingest);
    add(&mut m, "root", roots, Role::RootRelay);
    add(&mut m, "edge", edges, Role::Relay);
    m
}

/// N streams spread over the ingests, all live.
fn live(m: &mut Mesh, ingests: usize, n: usize) -> Vec<Vec<String>> {
    let streams: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let mut keys: std::collections::BTreeMap<String, String> =
        streams.iter().map(|s| (s.clone(), "ab".repeat(32))).collect();
    for i in 0..64 {
        keys.insert(format!("new-{i}"), "ab".repeat(32));
    }
    m.set_publish(keys);
    let per: Vec<Vec<String>> =
        (0..ingests).map(|k| streams.iter().skip(k).step_by(ingests).cloned().collect()).collect();
    for (k, s) in per.iter().enumerate() {
        m.heartbeat(&beat(&format!("ingest-{k}"), Role::Ingest, s, 1), 1).unwrap();
    }
    assert_eq!(m.streams().len(), n);
    per
}

/// The five decisions of table 1 (and 3), in ms.
fn decisions(m: &mut Mesh, per: &[Vec<String>]) -> [f64; 5] {
    let same = beat("ingest-0", Role::Ingest, &per[0], 2);
    let quiet = median(|| {
        let t = Instant::now();
        m.heartbeat(&same, 2).unwrap();
        ms(t)
    });
    let mut more = per[0].clone();
    more.push("new-0".into());
    let t = Instant::now();
    m.heartbeat(&beat("ingest-0", Role::Ingest, &more, 3), 3).unwrap();
    let new = ms(t);
    let edge = median(|| {
        let t = Instant::now();
        m.heartbeat(&Heartbeat::empty("edge-7", Role::Relay), 3).unwrap();
        ms(t)
    });
    let t = Instant::now();
    m.route("edge-9", "s1", 3).unwrap();
    let route = ms(t);
    // Everyone but root-0 beats; then root-0 is declared dead.
    let ids: Vec<(String, Role)> = m.nodes().values().map(|n| (n.node_id.clone(), n.role)).collect();
    for (id, role) in ids.iter().filter(|(id, _)| id != "root-0") {
        let s = match id.strip_prefix("ingest-") {
            Some("0") => more.clone(),
            Some(k) => per[k.parse::<usize>().expect("ingest-<n>")].clone(),
            None => vec![],
        };
        m.heartbeat(&beat(id, *role, &s, 20), 20).unwrap();
    }
    let t = Instant::now();
    let died = m.sweep(40);
    let death = ms(t);
    assert_eq!(died, ["root-0"]);
    [quiet, new, edge, route, death]
}

fn main() {
    let only: Vec<String> = std::env::args().skip(1).collect();
    let run = |t: &str| only.is_empty() || only.iter().any(|a| a == t);
    if run("1") {
        one();
    }
    if run("2") {
        two();
    }
    if run("2b") {
        joins();
    }
    if run("3") {
        three();
    }
}

fn one() {
    println!("1. 4 ingest nodes, 8 root relays, 80 edges\n");
    println!("| live streams | nodes | ingest heartbeat, nothing new | ingest heartbeat, one new stream | edge heartbeat | route request | root relay dies (its streams placed again) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in [100usize, 1000, 5000] {
        let mut m = mesh(Config { node_timeout_s: 30, ..Config::default() }, 4, 8, 80);
        let per = live(&mut m, 4, n);
        let [quiet, new, edge, route, death] = decisions(&mut m, &per);
        println!("| {n} | 92 | {quiet:.2} ms | {new:.2} ms | {edge:.2} ms | {route:.2} ms | {death:.2} ms |");
    }
}

fn two() {
    println!("\n2. fan-out to every relay: 4 ingest nodes, 8 root relays, 100 live streams\n");
    println!("| relays | one heartbeat makes 5 streams live | hops placed |");
    println!("|---:|---:|---:|");
    for relays in [476usize, 716, 956] {
        let cfg = Config { node_timeout_s: 30, edge_fanout: usize::MAX, ..Config::default() };
        let mut m = mesh(cfg, 4, 8, relays);
        let per = live(&mut m, 4, 100);
        let mut more = per[0].clone();
        more.extend((0..5).map(|i| format!("new-{i}")));
        let t = Instant::now();
        m.heartbeat(&beat("ingest-0", Role::Ingest, &more, 3), 3).unwrap();
        let five = ms(t);
        let hops: usize = m.streams().values().map(|p| p.roots.len() + p.edges.len()).sum();
        println!("| {relays} | {five:.2} ms | {hops} |");
    }
}

fn joins() {
    println!("\n2b. fan-out to every relay, relays joining after the streams are live (as in the load example): 20 ingest nodes, 50 root relays, 1,000 live streams\n");
    println!("| relays joined | the last 100 joins, each | hops placed |");
    println!("|---:|---:|---:|");
    {
        let cfg = Config { node_timeout_s: 30, edge_fanout: usize::MAX, ..Config::default() };
        let mut m = mesh(cfg, 20, 50, 0);
        live(&mut m, 20, 1000);
        let mut t = Instant::now();
        for i in 0..930u32 {
            announce(&mut m, &format!("edge-{i}"), Role::Relay, 100 + i);
            if i % 310 == 309 {
                let hops: usize = m.streams().values().map(|p| p.roots.len() + p.edges.len()).sum();
                println!("| {} | {:.2} ms | {hops} |", i + 1, ms(t) / 100.0);
            }
            if i % 310 == 209 {
                t = Instant::now();
            }
        }
    }
}

fn three() {
    println!("\n3. 1,000 nodes (20 ingest nodes, 50 root relays, 930 edges), 10,000 live streams\n");
    println!("| edge fan-out | ingest heartbeat, nothing new | ingest heartbeat, one new stream | edge heartbeat | route request | root relay dies | a relay joins |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for fanout in [1usize, 100] {
        let cfg = Config { node_timeout_s: 30, edge_fanout: fanout, ..Config::default() };
        let mut m = mesh(cfg, 20, 50, 930);
        let per = live(&mut m, 20, 10_000);
        let [quiet, new, edge, route, death] = decisions(&mut m, &per);
        let t = Instant::now();
        announce(&mut m, "edge-new", Role::Relay, 9999);
        let join = ms(t);
        println!("| {fanout} | {quiet:.2} ms | {new:.2} ms | {edge:.2} ms | {route:.2} ms | {death:.2} ms | {join:.2} ms |");
    }
}
