//! Table scale: parse + validate, snapshot swap and drop, for 1k, 10k and 100k streams with 3
//! targets each; time (median of runs) and memory (resident memory the first table added).
//! See bench/README.md.
//!
//!   cargo run --release -p mesh-core --example table_scale

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mesh_core::node::Node;
use mesh_core::{Role, Table};

/// Resident memory of this process, from /proc (bytes).
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn table_json(streams: usize) -> String {
    let mut s = String::from("{\"version\": 1, \"role\": \"root_relay\", \"relay\": {");
    for i in 0..streams {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("\"stream-{i:06}\": ["));
        for t in 0..3 {
            if t > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"node_id\": \"edge-{t}\", \"node_url\": \"rtmp://10.0.{t}.{}:1935/relay\", \"node_key\": \"k-{i:06}-{t}-0123456789abcdef0123456789abcdef\"}}",
                i % 250 + 1
            ));
        }
        s.push(']');
    }
    s.push_str("}}");
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    println!("| streams × 3 targets | JSON size | parse + validate | swap (lock + Arc) | drop old snapshot | table memory |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for streams in [1_000usize, 10_000, 100_000] {
        let json = table_json(streams);
        let runs = if streams >= 100_000 { 5 } else { 11 };
        let mut parse = Vec::new();
        let mut swap = Vec::new();
        let mut drop_t = Vec::new();
        let mut mem = 0;
        let slot: RwLock<Option<Arc<Node>>> = RwLock::new(None);
        for run in 0..runs {
            let before = rss();
            let t0 = Instant::now();
            let table = Table::parse(json.as_bytes()).expect("valid");
            parse.push(t0.elapsed());
            if run == 0 {
                mem = rss().saturating_sub(before);
            }
            let node = Arc::new(Node {
                node_id: "root-1".into(),
                role: Role::RootRelay,
                table,
                dial: Default::default(),
            });
            let t1 = Instant::now();
            let old = slot.write().unwrap().replace(node);
            swap.push(t1.elapsed());
            let t2 = Instant::now();
            drop(old);
            drop_t.push(t2.elapsed());
        }
        println!(
            "| {streams} | {:.1} MB | {:.2} ms | {:.3} µs | {:.2} ms | {:.1} MB |",
            json.len() as f64 / 1e6,
            median(parse).as_secs_f64() * 1e3,
            median(swap).as_secs_f64() * 1e6,
            median(drop_t[1..].to_vec()).as_secs_f64() * 1e3,
            mem as f64 / 1e6
        );
    }
}
