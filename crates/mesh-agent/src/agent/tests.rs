//! The agent as a whole, driven by a scripted master.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mesh_core::node::Node;
use mesh_core::wire::{AnnounceReply, AuthRequest, RouteRequest};
use mesh_core::Role;

use super::*;
use crate::load::read_table;
use crate::testing::{Collect, Scripted};

fn cfg() -> Config {
    Config {
        node_id: "edge-1".into(),
        heartbeat_interval: Duration::from_millis(50),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(40),
        watch_interval: Duration::from_millis(20),
        ..Config::default()
    }
}

fn start(m: Arc<Scripted>, cfg: Config) -> (Agent, Arc<Collect>) {
    let sink = Arc::new(Collect::default());
    let node = Arc::new(Node { node_id: "edge-1".into(), ..Node::standalone() });
    (Agent::start_master(cfg, node, m, sink.clone()).unwrap(), sink)
}

#[test]
fn announce_retries_logs_once_and_applies_the_role() {
    let m = Arc::new(Scripted::default());
    m.announce.lock().extend([
        Err(CallError::Status(500)),
        Err(CallError::Timeout),
        Err(CallError::Status(500)),
    ]);
    m.announce.lock().push_back(Ok(AnnounceReply {
        role: Some(Role::Relay),
        heartbeat_interval_s: None,
        table_refresh_s: None,
    }));
    let (agent, sink) = start(m.clone(), cfg());
    assert!(sink.wait_for(|s| s.changes().contains(&Change::Role(Role::Relay))));
    assert!(sink.wait_for(|_| *m.heartbeats.lock() >= 2), "heartbeats follow the announce");
    assert_eq!(agent.stop(Duration::from_secs(2)), 6, "control, poll, three call threads, janitor");
    let logs = sink.logs();
    // One line when the link went down, one when it came back: not one per retry.
    assert_eq!(logs.iter().filter(|l| l.contains("announce failed")).count(), 1, "{logs:?}");
    assert_eq!(logs.iter().filter(|l| l.contains("announce is back")).count(), 1, "{logs:?}");
}

#[test]
fn tables_are_validated_swapped_and_saved() {
    let dir = std::env::temp_dir().join(format!("mesh-agent-poll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("table.json");
    let m = Arc::new(Scripted::default());
    m.streams.lock().extend([
        Ok(Some(br#"{"version": 5, "relay": {"../x": []}}"#.to_vec())),
        Ok(Some(br#"{"version": 5, "relay": {"../x": []}}"#.to_vec())),
        Err(CallError::Transport("connection refused".into())),
        Ok(Some(br#"{"version": 6, "role": "relay"}"#.to_vec())),
    ]);
    let (agent, sink) = start(m, Config { table_file: Some(file.clone()), ..cfg() });
    assert!(sink.wait_for(|s| s.changes().contains(&Change::Table(6))));
    agent.stop(Duration::from_secs(2));
    assert_eq!(sink.changes(), vec![Change::Table(6)], "the invalid table never reached the loop");
    let logs = sink.logs();
    assert_eq!(
        logs.iter().filter(|l| l.contains("table from master refused: relay.\"../x\"")).count(),
        1,
        "{logs:?}"
    );
    // The link was already down (refused table): the transport error is no new state.
    assert!(!logs.iter().any(|l| l.contains("master streams failed")), "{logs:?}");
    assert_eq!(logs.iter().filter(|l| l.contains("master streams is back")).count(), 1, "{logs:?}");
    assert_eq!(read_table(&file).unwrap().version, 6, "saved for a restart");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stop_does_not_wait_for_a_hung_master() {
    let m = Arc::new(Scripted::default());
    m.stall.store(true, Ordering::Relaxed);
    let (agent, _sink) = start(m, Config { heartbeat_interval: Duration::from_secs(60), ..cfg() });
    thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    assert_eq!(agent.stop(Duration::from_secs(2)), 6, "every thread joined");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn calls_come_back_as_events() {
    let (agent, sink) = start(Arc::new(Scripted::default()), cfg());
    let req = AuthRequest {
        node_id: "edge-1".into(),
        action: mesh_core::wire::Action::Play,
        stream: "s".into(),
        key: None,
        token: None,
        addr: "a".into(),
    };
    assert!(agent.call(Call::Auth { id: 7, req, known: false }).is_ok());
    assert!(agent.call(Call::Route(RouteRequest { node_id: "edge-1".into(), stream: "s".into() })).is_ok());
    assert!(sink.wait_for(|s| s
        .0
        .lock()
        .iter()
        .any(|e| matches!(e, Event::Auth { id: 7, result: Ok(r) } if r.allow))));
    assert!(sink.wait_for(|s| s
        .0
        .lock()
        .iter()
        .any(|e| matches!(e, Event::Route { result: Err(CallError::Timeout), .. }))));
    agent.stop(Duration::from_secs(2));
}

#[test]
fn watch_reloads_the_file_and_refuses_bad_edits() {
    let dir = std::env::temp_dir().join(format!("mesh-agent-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("table.json");
    std::fs::write(&file, r#"{"version": 1}"#).unwrap();
    let sink = Arc::new(Collect::default());
    let agent = Agent::start_watch(
        Config { table_file: Some(file.clone()), ..cfg() },
        Arc::new(Node::standalone()),
        sink.clone(),
    )
    .unwrap();
    thread::sleep(Duration::from_millis(60));
    std::fs::write(&file, r#"{"version": 2, "role": "edge"}"#).unwrap();
    assert!(
        sink.wait_for(|s| s.logs().iter().any(|l| l.contains("refused: invalid table: role: unknown role")))
    );
    std::fs::write(&file, r#"{"version": 3, "viewer_secret": "s"}"#).unwrap();
    assert!(sink.wait_for(|s| s.changes().contains(&Change::Table(3))));
    assert!(!agent.has_master());
    agent.stop(Duration::from_secs(2));
    assert_eq!(sink.changes(), vec![Change::Table(3)]);
    std::fs::remove_dir_all(dir).unwrap();
}
