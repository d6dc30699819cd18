//! The master under load, over HTTP (bench/README.md, 3d): the real `mesh-master` binary and
//! N simulated nodes signing as real nodes (protocol v2: each its own key from the master
//! secret, a fresh nonce per request), each announcing, heartbeating every interval and holding
//! its long poll; optionally thousands of idle TCP connections held open (reopened when the
//! master closes them). Reports heartbeat p50/p99, the master's CPU (from /proc), and the time
//! one change (a new stream; a root relay's death) takes to reach every affected node's poll.
//!
//! `cargo run --release -p mesh-master --example load -- --bin target/release/mesh-master
//!  --nodes 1000 --streams 1000 --edge-fanout 100 --idle 10000`
//! (mind `ulimit -n`: 2 per node and 1 per idle connection, here and in the master).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_core::role::Role;
use mesh_core::sign::{node_key, nonce_hex, sign_request, NONCE_BYTES};
use mesh_core::wire::{Announce, Capabilities, Heartbeat, Load, StreamStat};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SECRET: &str = "load-bench-master-secret";
const ADMIN: &str = "load-bench-admin";

struct Opts {
    bin: String,
    port: u16,
    nodes: usize,
    streams: usize,
    edge_fanout: String,
    idle: usize,
    interval: u64,
    secs: u64,
}

fn opts() -> Opts {
    let mut o = Opts {
        bin: "target/release/mesh-master".into(),
        port: 18601,
        nodes: 100,
        streams: 1000,
        edge_fanout: "100".into(),
        idle: 0,
        interval: 2,
        secs: 20,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.chunks(2) {
        let v = w.get(1).cloned().unwrap_or_default();
        match w[0].as_str() {
            "--bin" => o.bin = v,
            "--port" => o.port = v.parse().expect("--port"),
            "--nodes" => o.nodes = v.parse().expect("--nodes"),
            "--streams" => o.streams = v.parse().expect("--streams"),
            "--edge-fanout" => o.edge_fanout = v,
            "--idle" => o.idle = v.parse().expect("--idle"),
            "--interval" => o.interval = v.parse().expect("--interval"),
            "--secs" => o.secs = v.parse().expect("--secs"),
            f => panic!("unknown flag {f}"),
        }
    }
    o
}

/// One keep-alive HTTP/1.1 connection to the master.
struct Conn {
    r: BufReader<TcpStream>,
    port: u16,
}

impl Conn {
    async fn open(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        Ok(Conn { r: BufReader::new(s), port })
    }

    /// A signed request of `node`; the status and the body. Reconnects once if the master
    /// closed the connection.
    async fn call(&mut self, method: &str, pq: &str, node: &str, key: &str, body: &[u8]) -> (u16, Vec<u8>) {
        for _ in 0..2 {
            match self.try_call(method, pq, node, key, body).await {
                Ok(r) => return r,
                Err(_) => match Conn::open(self.port).await {
                    Ok(c) => *self = c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                },
            }
        }
        (0, Vec::new())
    }

    async fn try_call(
        &mut self,
        method: &str,
        pq: &str,
        node: &str,
        key: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let mut n = [0u8; NONCE_BYTES];
        getrandom::fill(&mut n).expect("random");
        let nonce = nonce_hex(n);
        let sig = sign_request(key.as_bytes(), method, pq, ts, &nonce, body);
        let head = format!(
            "{method} {pq} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-mesh-node: {node}\r\nx-mesh-timestamp: {ts}\r\n\
             x-mesh-nonce: {nonce}\r\nx-mesh-signature: {sig}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        let s = self.r.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut line = String::new();
        if self.r.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// A table's version, without parsing the whole JSON.
fn version_of(body: &[u8]) -> u64 {
    let pat = b"\"version\":";
    let Some(i) = body.windows(pat.len()).rposition(|w| w == pat) else { return 0 };
    body[i + pat.len()..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0, |v, b| v * 10 + u64::from(b - b'0'))
}

fn mentions(body: &[u8], id: &str) -> bool {
    std::str::from_utf8(body).is_ok_and(|b| b.contains(&format!("\"{id}\"")))
}

/// node → whether its last table mentions the watched id, and when it came.
type Seen = HashMap<String, (bool, Instant)>;

struct Sim {
    port: u16,
    interval: u64,
    /// Heartbeat latencies (ms) while measuring.
    beats: Mutex<Vec<f64>>,
    measuring: AtomicBool,
    failed: AtomicU64,
    /// node → whether its last table mentions the watched id, and when that table came.
    watch: Mutex<Option<(String, Seen)>>,
    /// node → whether its last table names root-0 (the relay that dies).
    last: Mutex<HashMap<String, bool>>,
    /// When the last table came.
    quiet: Mutex<Instant>,
    /// Extra streams an ingest reports (the "new stream" change).
    extra: Mutex<HashMap<String, Vec<String>>>,
    stopped: Mutex<Vec<String>>,
    beat_now: tokio::sync::Notify,
    /// The long polls and idle connections run here, the heartbeats on the main runtime: the
    /// tables a change sends (megabytes) never delay a heartbeat's clock.
    polls: tokio::runtime::Handle,
}

async fn node(sim: Arc<Sim>, id: String, role: Role, streams: Vec<String>) {
    let key = node_key(SECRET.as_bytes(), &id, 0);
    let mut c = Conn::open(sim.port).await.expect("connect");
    let a = Announce {
        node_id: id.clone(),
        role,
        rtmp_url: format!("rtmp://{id}.test:1935"),
        http_url: String::new(),
        version: "load".into(),
        capabilities: Capabilities { transcode: false, hls: true, dash: false },
    };
    let (st, _) = c.call("POST", "/announce", &id, &key, &serde_json::to_vec(&a).unwrap()).await;
    assert_eq!(st, 200, "announce of {id}");
    let version = Arc::new(AtomicU64::new(0));
    sim.polls.spawn(poll(sim.clone(), id.clone(), key.clone(), version.clone()));
    // Spread the heartbeats over the interval.
    let jitter = u64::from(getrandom::u32().unwrap()) % (sim.interval * 1000);
    tokio::time::sleep(Duration::from_millis(jitter)).await;
    loop {
        if sim.stopped.lock().contains(&id) {
            return;
        }
        let mut all = streams.clone();
        all.extend(sim.extra.lock().get(&id).cloned().unwrap_or_default());
        let stat =
            |s: String| StreamStat { stream: s, source: "broadcaster".into(), viewers: 0, in_kbps: 2500 };
        let hb = Heartbeat {
            table_version: version.load(Ordering::Relaxed),
            streams: all.into_iter().map(stat).collect(),
            load: Load { connections: 10, in_kbps: 1000, out_kbps: 1000 },
            ..Heartbeat::empty(&id, role)
        };
        let body = serde_json::to_vec(&hb).unwrap();
        let t = Instant::now();
        let (st, _) = c.call("POST", "/heartbeat", &id, &key, &body).await;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if st != 200 {
            sim.failed.fetch_add(1, Ordering::Relaxed);
        }
        if sim.measuring.load(Ordering::Relaxed) {
            sim.beats.lock().push(ms);
        }
        let wait = tokio::time::sleep(Duration::from_secs(sim.interval));
        if role == Role::Ingest {
            tokio::select! { _ = wait => {}, _ = sim.beat_now.notified() => {} }
        } else {
            wait.await;
        }
    }
}

async fn poll(sim: Arc<Sim>, id: String, key: String, version: Arc<AtomicU64>) {
    let mut c = Conn::open(sim.port).await.expect("connect");
    loop {
        if sim.stopped.lock().contains(&id) {
            return;
        }
        let v = version.load(Ordering::Relaxed);
        let pq = format!("/streams?node_id={id}&since={v}&wait=30");
        let (st, body) = c.call("GET", &pq, &id, &key, b"").await;
        let at = Instant::now();
        match st {
            200 => {
                version.store(version_of(&body), Ordering::Relaxed);
                if let Some((w, seen)) = sim.watch.lock().as_mut() {
                    seen.insert(id.clone(), (mentions(&body, w), at));
                }
                sim.last.lock().insert(id.clone(), mentions(&body, "root-0"));
                *sim.quiet.lock() = Instant::now();
            }
            304 => {}
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Hold `n` idle connections open: each reopened when the master closes it.
async fn idle(port: u16, n: usize) {
    for _ in 0..n {
        tokio::spawn(async move {
            loop {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let mut b = [0u8; 64];
                let _ = s.read(&mut b).await;
            }
        });
        tokio::task::yield_now().await;
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn metric(port: u16, name: &str) -> u64 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else { return 0 };
    let req = format!("GET /admin/metrics HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\nconnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Wait until every node that will see the change has seen it: the first and the last arrival
/// after `t0` of a table for which `done` holds, over the nodes in `affected` (None: whichever
/// nodes' tables come to mention the watched id).
async fn spread(sim: &Sim, t0: Instant, affected: Option<&[String]>, want: bool) -> (usize, f64, f64) {
    let deadline = t0 + Duration::from_secs(40);
    let mut stable = 0;
    let mut last_n = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let w = sim.watch.lock();
        let seen = &w.as_ref().unwrap().1;
        let hits: Vec<Instant> = seen
            .iter()
            .filter(|(id, (m, at))| *m == want && *at > t0 && affected.is_none_or(|a| a.contains(id)))
            .map(|(_, (_, at))| *at)
            .collect();
        let n = hits.len();
        let full = affected.is_some_and(|a| n >= a.len());
        stable = if n == last_n && n > 0 { stable + 1 } else { 0 };
        last_n = n;
        if full || stable >= 12 || Instant::now() > deadline {
            let first = hits.iter().min().map_or(f64::NAN, |t| (*t - t0).as_secs_f64() * 1000.0);
            let lastt = hits.iter().max().map_or(f64::NAN, |t| (*t - t0).as_secs_f64() * 1000.0);
            return (n, first, lastt);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let o = opts();
    let ingests = (o.nodes / 50).max(2);
    let roots = (o.nodes / 20).max(4);
    let relays = o.nodes - ingests - roots;
    let fanout = if o.edge_fanout == "all" { relays.to_string() } else { o.edge_fanout.clone() };
    let dir = std::env::temp_dir().join(format!("mesh-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cap = 2 * o.nodes + o.idle + 200;
    let mut master = std::process::Command::new(&o.bin)
        .args(["--listen", &format!("127.0.0.1:{}", o.port), "--db", dir.join("db").to_str().unwrap()])
        .args(["--heartbeat-interval", &o.interval.to_string(), "--edge-fanout", &fanout])
        .args(["--startup-grace", "0", "--max-connections", &cap.to_string(), "--log-level", "warn"])
        .args(["--auto-approve", "all"])
        .env("MASTER_KEY", SECRET)
        .env("ADMIN_TOKEN", ADMIN)
        .stderr(std::fs::File::create(dir.join("master.log")).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("mesh-master");
    let pid = master.id();
    let polls = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", o.port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The master refuses requests signed in the second it started in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let sim = Arc::new(Sim {
        port: o.port,
        interval: o.interval,
        beats: Mutex::default(),
        measuring: AtomicBool::new(false),
        failed: AtomicU64::new(0),
        watch: Mutex::new(None),
        last: Mutex::default(),
        extra: Mutex::default(),
        quiet: Mutex::new(Instant::now()),
        stopped: Mutex::default(),
        beat_now: tokio::sync::Notify::new(),
        polls: polls.handle().clone(),
    });
    if o.idle > 0 {
        polls.spawn(idle(o.port, o.idle));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut ids = Vec::new();
    for i in 0..o.nodes {
        let (id, role) = if i < ingests {
            (format!("ingest-{i}"), Role::Ingest)
        } else if i < ingests + roots {
            (format!("root-{}", i - ingests), Role::RootRelay)
        } else {
            (format!("edge-{}", i - ingests - roots), Role::Relay)
        };
        let streams: Vec<String> = if role == Role::Ingest {
            (i..o.streams).step_by(ingests).map(|s| format!("s{s}")).collect()
        } else {
            vec![]
        };
        ids.push(id.clone());
        tokio::spawn(node(sim.clone(), id, role, streams));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Settle: every stream placed and every table fetched (no table sent for 3 s).
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(3 * o.interval)).await;
    while sim.quiet.lock().elapsed() < Duration::from_secs(3) && start.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle = start.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid);
    let sent0 = metric(o.port, "mesh_master_tables_sent_total").await;
    sim.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    sim.measuring.store(false, Ordering::Relaxed);
    let quiet_sent = metric(o.port, "mesh_master_tables_sent_total").await - sent0;
    let cpu = (cpu_ticks(pid) - c0) as f64 / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
    let mut beats = std::mem::take(&mut *sim.beats.lock());
    let (p50, p99, max) = (pct(&mut beats, 0.5), pct(&mut beats, 0.99), pct(&mut beats, 1.0));

    // A new stream on ingest-0: every node whose table comes to carry it.
    *sim.watch.lock() = Some(("new-1".into(), HashMap::new()));
    sim.extra.lock().insert("ingest-0".into(), vec!["new-1".into()]);
    sim.measuring.store(true, Ordering::Relaxed);
    let t1 = Instant::now();
    sim.beat_now.notify_waiters();
    let (n_new, new_first, new_ms) = spread(&sim, t1, None, true).await;

    // A root relay dies: every node whose table named it, until a table without it came.
    let dead = "root-0".to_string();
    let affected: Vec<String> =
        sim.last.lock().iter().filter(|(id, m)| **id != dead && **m).map(|(id, _)| id.clone()).collect();
    *sim.watch.lock() = Some((dead.clone(), HashMap::new()));
    sim.stopped.lock().push(dead.clone());
    let t2 = Instant::now();
    let (n_dead, first, last) = spread(&sim, t2, Some(&affected), false).await;
    sim.measuring.store(false, Ordering::Relaxed);
    let mut during = std::mem::take(&mut *sim.beats.lock());
    let deaths = metric(o.port, "mesh_master_node_deaths_total").await;
    println!(
        "nodes {} ({ingests} ingest, {roots} root, {relays} relays) streams {} edge-fanout {fanout} idle {} (settled in {settle:.0} s): \
         heartbeat p50 {p50:.2} ms p99 {p99:.2} ms max {max:.1} ms ({} beats, {} refused), master CPU {cpu:.1} % \
         of one core, {quiet_sent} tables sent; new stream in {n_new} tables {new_first:.0}..{new_ms:.0} ms; root-0's death: {n_dead}/{} tables \
         {first:.0}..{last:.0} ms after it stopped (spread {:.0} ms), heartbeat p99 meanwhile {:.2} ms; \
         node deaths {deaths} (1 expected)",
        o.nodes,
        o.streams,
        o.idle,
        beats.len(),
        sim.failed.load(Ordering::Relaxed),
        affected.len(),
        last - first,
        pct(&mut during, 0.99),
    );
    let _ = master.kill();
    polls.shutdown_background();
    let _ = master.wait();
    let _ = std::fs::remove_dir_all(&dir);
    std::process::exit(0);
}
