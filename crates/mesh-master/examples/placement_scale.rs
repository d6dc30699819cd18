//! How long the master's decisions take at scale: a mesh of 4 ingest nodes, 8 root relays and
//! 80 edges carrying N live streams. Times one ingest heartbeat that changes nothing, one that
//! adds a stream, an edge heartbeat, a route request, and a root relay's death (its streams
//! placed again), each with every node's table rendered and compared.
//!
//!     cargo run --release -p mesh-master --example placement_scale

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

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    println!("| live streams | nodes | ingest heartbeat, nothing new | ingest heartbeat, one new stream | edge heartbeat | route request | root relay dies (its streams placed again) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in [100usize, 1000, 5000] {
        let mut m = Mesh::new(Config { node_timeout_s: 30, ..Config::default() }, 0, Box::new(Counted(0)));
        let mut port = 0;
        let mut add = |m: &mut Mesh, prefix: &str, count: usize, role: Role| {
            for i in 0..count {
                port += 1;
                announce(m, &format!("{prefix}-{i}"), role, port);
            }
        };
        add(&mut m, "ingest", 4, Role::Ingest);
        add(&mut m, "root", 8, Role::RootRelay);
        add(&mut m, "edge", 80, Role::Relay);
        let streams: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        m.set_publish(streams.iter().map(|s| (s.clone(), "ab".repeat(32))).collect());
        let per: Vec<Vec<String>> =
            (0..4).map(|k| streams.iter().skip(k).step_by(4).cloned().collect()).collect();
        for (k, s) in per.iter().enumerate() {
            m.heartbeat(&beat(&format!("ingest-{k}"), Role::Ingest, s, 1), 1).unwrap();
        }
        assert_eq!(m.streams.len(), n);
        let same = beat("ingest-0", Role::Ingest, &per[0], 2);
        let t = Instant::now();
        m.heartbeat(&same, 2).unwrap();
        let quiet = ms(t);
        let mut more = per[0].clone();
        more.push("new-stream".into());
        let t = Instant::now();
        m.heartbeat(&beat("ingest-0", Role::Ingest, &more, 3), 3).unwrap();
        let new = ms(t);
        let t = Instant::now();
        m.heartbeat(&Heartbeat::empty("edge-7", Role::Relay), 3).unwrap();
        let edge = ms(t);
        let t = Instant::now();
        m.route("edge-9", "s1", 3).unwrap();
        let route = ms(t);
        // Everyone but root-0 beats; then root-0 is declared dead.
        let ids: Vec<(String, Role)> = m.nodes.values().map(|n| (n.node_id.clone(), n.role)).collect();
        for (id, role) in ids.iter().filter(|(id, _)| id != "root-0") {
            let s = match id.strip_prefix("ingest-") {
                Some(k) => per[k.parse::<usize>().expect("ingest-<n>")].clone(),
                None => vec![],
            };
            m.heartbeat(&beat(id, *role, &s, 20), 20).unwrap();
        }
        let t = Instant::now();
        let died = m.sweep(40);
        let death = ms(t);
        assert_eq!(died, ["root-0"]);
        println!("| {n} | 92 | {quiet:.2} ms | {new:.2} ms | {edge:.2} ms | {route:.2} ms | {death:.2} ms |");
    }
}
