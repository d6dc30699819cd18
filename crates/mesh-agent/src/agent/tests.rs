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
        resync_grace: Duration::from_millis(50),
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
        epoch: None,
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

/// A node without a granted role: the master answers its announce 403 "awaiting approval";
/// the agent says so once (status too), announces again every interval, sends no heartbeat,
/// and goes on when a role is granted.
#[test]
fn a_node_awaiting_approval_logs_once_and_announces_until_granted() {
    let m = Arc::new(Scripted::default());
    let pending = || {
        Err(CallError::Refused {
            status: 403,
            reason: "awaiting approval: no role granted to this node".into(),
        })
    };
    m.announce.lock().extend([pending(), pending(), pending()]);
    let (agent, sink) = start(m.clone(), cfg());
    let announce_link = |a: &Agent| a.links().into_iter().find(|l| l.link == "announce");
    assert!(sink.wait_for(|_| announce_link(&agent).is_some_and(|l| l.awaiting_approval)));
    assert_eq!(*m.heartbeats.lock(), 0, "no heartbeat while awaiting approval");
    m.announce.lock().push_back(Ok(AnnounceReply {
        role: Some(Role::Relay),
        heartbeat_interval_s: None,
        table_refresh_s: None,
        epoch: None,
    }));
    assert!(sink.wait_for(|s| s.changes().contains(&Change::Role(Role::Relay))));
    assert!(sink.wait_for(|_| *m.heartbeats.lock() >= 1), "heartbeats once granted");
    assert!(!announce_link(&agent).unwrap().awaiting_approval);
    agent.stop(Duration::from_secs(2));
    let logs = sink.logs();
    assert_eq!(logs.iter().filter(|l| l.contains("awaiting approval")).count(), 1, "{logs:?}");
    assert_eq!(
        logs.iter().filter(|l| l.contains("approved by the master: role \"relay\"")).count(),
        1,
        "{logs:?}"
    );
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

fn streams_link(agent: &Agent) -> mesh_core::status::LinkStatus {
    agent.links().into_iter().find(|l| l.link == "streams").expect("a streams link")
}

/// A master that recovered but lost the node's long poll (a stall, a restart): the heartbeat
/// answer says a newer table is there, the poll never brings it, the agent fetches it at once.
#[test]
fn a_lost_long_poll_is_dropped_and_the_table_fetched_at_once() {
    let m = Arc::new(Scripted::default());
    m.lose_polls.store(true, Ordering::Relaxed);
    let (agent, sink) = start(m.clone(), cfg());
    assert!(sink.wait_for(|_| *m.heartbeats.lock() >= 2));
    m.set_table(2, r#"{"version": 2, "role": "relay"}"#);
    let t = Instant::now();
    assert!(sink.wait_for(|s| s.changes().contains(&Change::Table(2))), "{:?}", sink.logs());
    assert!(t.elapsed() < Duration::from_secs(1), "fetched at once ({:?})", t.elapsed());
    assert!(m.polls.lock().contains(&(0, Duration::ZERO)), "a fetch, not a poll: {:?}", m.polls.lock());
    thread::sleep(Duration::from_millis(200));
    agent.stop(Duration::from_secs(2));
    let logs = sink.logs();
    let resync = "master holds table version 2 for this node, which runs 0: the long poll has not brought it, fetching it now";
    assert_eq!(logs.iter().filter(|l| l.contains(resync)).count(), 1, "{logs:?}");
    assert_eq!(sink.changes(), vec![Change::Table(2)], "once: {logs:?}");
    assert!(!logs.iter().any(|l| l.contains("cannot be fetched")), "{logs:?}");
}

/// Behind and unable to fetch: said once in the log, shown on the streams link until the
/// table comes.
#[test]
fn a_node_behind_that_cannot_fetch_says_so() {
    let m = Arc::new(Scripted::default());
    m.lose_polls.store(true, Ordering::Relaxed);
    *m.fetch_error.lock() = Some(CallError::Status(500));
    let (agent, sink) = start(m.clone(), cfg());
    m.set_table(3, r#"{"version": 3}"#);
    assert!(sink.wait_for(|s| s.logs().iter().any(|l| l.contains("cannot be fetched"))));
    assert!(sink.wait_for(|_| streams_link(&agent).behind_version == Some(3)));
    let hb = *m.heartbeats.lock();
    assert!(sink.wait_for(|_| *m.heartbeats.lock() >= hb + 3), "tried again at each heartbeat");
    let link = streams_link(&agent);
    assert!(link.behind_since_unix.is_some());
    let logs = sink.logs();
    let want = "mesh: master holds table version 3 for this node but it cannot be fetched: unexpected status 500; keeping table version 0, trying again at each heartbeat";
    assert_eq!(logs.iter().filter(|l| *l == want).count(), 1, "once: {logs:?}");
    *m.fetch_error.lock() = None;
    assert!(sink.wait_for(|s| s.changes().contains(&Change::Table(3))));
    assert_eq!(streams_link(&agent).behind_version, None, "in step again");
    agent.stop(Duration::from_secs(2));
}

#[test]
fn an_older_table_from_the_master_is_refused_once() {
    let m = Arc::new(Scripted::default());
    m.streams.lock().extend([
        Ok(Some(br#"{"version": 5}"#.to_vec())),
        Ok(Some(br#"{"version": 3, "role": "ingest"}"#.to_vec())),
        Ok(Some(br#"{"version": 3, "role": "ingest"}"#.to_vec())),
        Ok(Some(br#"{"version": 5}"#.to_vec())),
    ]);
    let (agent, sink) = start(m.clone(), cfg());
    assert!(sink.wait_for(|s| s.logs().iter().any(|l| l.contains("version 3 from master refused"))));
    assert!(sink.wait_for(|_| m.streams.lock().is_empty()));
    thread::sleep(Duration::from_millis(100));
    agent.stop(Duration::from_secs(2));
    assert_eq!(sink.changes(), vec![Change::Table(5)]);
    let logs = sink.logs();
    let want = "mesh: table version 3 from master refused: older than version 5 in force (no rollback)";
    assert_eq!(logs.iter().filter(|l| *l == want).count(), 1, "{logs:?}");
    assert!(!logs.iter().any(|l| l.contains("streams failed")), "{logs:?}");
}

/// Heartbeats that keep setting the role while tables arrive: the table in force only goes
/// forward (issue 13: a role change wrote an old table back).
#[test]
fn roles_from_heartbeats_never_roll_a_table_back() {
    let m = Arc::new(Scripted::default());
    let (agent, sink) = start(m.clone(), Config { heartbeat_interval: Duration::from_millis(1), ..cfg() });
    for v in 1..=40u64 {
        *m.role.lock() = Some(if v % 2 == 0 { Role::Relay } else { Role::Ingest });
        m.set_table(v, &format!(r#"{{"version": {v}}}"#));
        thread::sleep(Duration::from_millis(5));
    }
    assert!(sink.wait_for(|s| s.changes().contains(&Change::Table(40))));
    thread::sleep(Duration::from_millis(100));
    agent.stop(Duration::from_secs(2));
    let versions: Vec<u64> = sink.nodes().iter().map(|n| n.table.version).collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "went back: {versions:?}");
    let logs = sink.logs();
    assert!(logs.iter().any(|l| l.contains("master sets role \"ingest\"")), "{logs:?}");
    for v in 1..=40 {
        let n = logs
            .iter()
            .filter(|l| l.starts_with(&format!("mesh: table version {v} from master in force")))
            .count();
        assert!(n <= 1, "version {v} taken {n} times: {logs:?}");
    }
}

/// A master back after an outage: the poll waiting out a long backoff goes at once.
#[test]
fn the_masters_return_wakes_the_poll() {
    let m = Arc::new(Scripted::default());
    let errs = (0..6).map(|_| Err(CallError::Transport("connection refused".into())));
    m.streams.lock().extend(errs);
    m.announce.lock().extend((0..6).map(|_| Err(CallError::Transport("connection refused".into()))));
    let cfg =
        Config { backoff_base: Duration::from_millis(100), backoff_cap: Duration::from_secs(30), ..cfg() };
    let (agent, sink) = start(m.clone(), cfg);
    // The streams link backs off (100 ms, 200, 400, … with jitter); the announce retries at
    // least once per heartbeat interval; once the master answers, the poll goes at once.
    assert!(sink.wait_for(|_| m.streams.lock().is_empty() && m.announce.lock().is_empty()));
    m.set_table(7, r#"{"version": 7}"#);
    let t = Instant::now();
    assert!(sink.wait_for(|s| s.changes().contains(&Change::Table(7))));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    agent.stop(Duration::from_secs(2));
}

/// A new master epoch (a new database, versions from anew): the node asks from version 0 and
/// takes the new epoch's table, lower version and all; the old epoch's versions never block it.
#[test]
fn a_new_master_epoch_is_taken_whatever_its_version() {
    let m = Arc::new(Scripted::default());
    m.lose_polls.store(true, Ordering::Relaxed);
    *m.epoch.lock() = Some("e-new".into());
    m.set_table(3, r#"{"version": 3, "epoch": "e-new"}"#);
    let sink = Arc::new(Collect::default());
    let table = mesh_core::Table::parse(br#"{"version": 500, "epoch": "e-old"}"#).unwrap();
    let node = Arc::new(Node { node_id: "edge-1".into(), table, ..Node::standalone() });
    let agent = Agent::start_master(cfg(), node, m.clone(), sink.clone()).unwrap();
    assert!(sink.wait_for(|s| s.changes().contains(&Change::Table(3))), "{:?}", sink.logs());
    assert!(m.polls.lock().iter().any(|(since, _)| *since == 0), "asked from 0: {:?}", m.polls.lock());
    assert!(sink.wait_for(|_| streams_link(&agent).behind_version.is_none()));
    agent.stop(Duration::from_secs(2));
    let logs = sink.logs();
    assert!(logs.iter().any(|l| l.contains("master epoch e-new (was e-old)")), "{logs:?}");
    assert!(!logs.iter().any(|l| l.contains("refused")), "{logs:?}");
}

/// Two generations of a node's worker 0 and another worker: one voice at a time, the others
/// follow the file it writes; when the voice resigns the next one speaks and the first says
/// nothing more to the master.
#[test]
fn one_voice_at_a_time_and_the_others_follow_its_file() {
    let dir = std::env::temp_dir().join(format!("mesh-agent-voice-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("table.json");
    std::fs::write(&file, r#"{"version": 1}"#).unwrap();
    let lock = dir.join("table.json.voice");
    let cfg = || Config { table_file: Some(file.clone()), voice_lock: Some(lock.clone()), ..cfg() };
    let node = || Arc::new(Node { node_id: "edge-1".into(), ..Node::standalone() });
    let voice = |m: &Arc<Scripted>| Some(Voice { master: m.clone() });
    let (calls, old_m, new_m) =
        (Arc::new(Scripted::default()), Arc::new(Scripted::default()), Arc::new(Scripted::default()));
    let (old_s, new_s, other_s) =
        (Arc::new(Collect::default()), Arc::new(Collect::default()), Arc::new(Collect::default()));
    let old = Agent::start_node(cfg(), node(), calls.clone(), voice(&old_m), old_s.clone()).unwrap();
    assert!(old_s.wait_for(|_| old.is_voice() && *old_m.heartbeats.lock() >= 2));
    let new = Agent::start_node(cfg(), node(), calls.clone(), voice(&new_m), new_s.clone()).unwrap();
    let other = Agent::start_node(cfg(), node(), calls.clone(), None, other_s.clone()).unwrap();
    thread::sleep(Duration::from_millis(50));
    old_m.set_table(7, r#"{"version": 7, "role": "relay"}"#);
    assert!(
        new_s.wait_for(|s| s.changes().contains(&Change::Table(7))),
        "the waiting voice follows the file"
    );
    assert!(
        other_s.wait_for(|s| s.changes().contains(&Change::Table(7))),
        "so does a worker that never speaks"
    );
    assert!(new_s.logs().iter().any(|l| l.contains("another process speaks for the node")));
    thread::sleep(Duration::from_millis(300));
    assert!(!new.is_voice() && !other.is_voice());
    assert_eq!(*new_m.heartbeats.lock(), 0, "one voice");
    assert!(new.has_master(), "calls go out from any worker");

    assert!(old.resign(), "it was speaking");
    assert!(!old.resign());
    let beats = *old_m.heartbeats.lock();
    assert!(new_s.wait_for(|_| new.is_voice() && *new_m.heartbeats.lock() >= 2), "the next voice speaks");
    assert!(new_s.logs().iter().any(|l| l.contains("this worker speaks for the node now")));
    thread::sleep(Duration::from_millis(200));
    assert!(*old_m.heartbeats.lock() <= beats + 1, "the old voice said nothing more");
    assert!(!old.is_voice());
    // The new voice's tables reach the old one (still serving its sessions) through the file.
    new_m.set_table(8, r#"{"version": 8, "role": "relay"}"#);
    assert!(old_s.wait_for(|s| s.changes().contains(&Change::Table(8))));
    assert!(other_s.wait_for(|s| s.changes().contains(&Change::Table(8))));
    assert_eq!(read_table(&file).unwrap().version, 8);
    for a in [old, new, other] {
        a.stop(Duration::from_secs(2));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Under a master the table file is the voice's: a worker following it takes it only as the
/// voice writes it (this user's, writable by no one else).
#[test]
fn a_follower_takes_only_the_voices_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("mesh-agent-follow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("table.json");
    std::fs::write(&file, r#"{"version": 1}"#).unwrap();
    let cfg =
        Config { table_file: Some(file.clone()), voice_lock: Some(dir.join("table.json.voice")), ..cfg() };
    let sink = Arc::new(Collect::default());
    let node = Arc::new(Node { node_id: "edge-1".into(), ..Node::standalone() });
    let agent = Agent::start_node(cfg, node, Arc::new(Scripted::default()), None, sink.clone()).unwrap();
    thread::sleep(Duration::from_millis(60));
    // Planted whole (made writable by others before it is put in place: the follower never
    // sees it half-made).
    let planted = dir.join("planted.json");
    std::fs::write(&planted, r#"{"version": 2, "viewer_secret": "planted"}"#).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::rename(&planted, &file).unwrap();
    assert!(sink.wait_for(|s| s.logs().iter().any(|l| l.contains("refused: not written by this node"))));
    crate::load::write_atomic(&file, br#"{"version": 3}"#).unwrap();
    assert!(sink.wait_for(|s| s.changes().contains(&Change::Table(3))));
    agent.stop(Duration::from_secs(2));
    assert_eq!(sink.changes(), vec![Change::Table(3)]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The event loop saw a push go down: a heartbeat goes at once, not at the next interval, and
/// never more often than every 250 ms however often it is asked.
#[test]
fn a_heartbeat_asked_for_now_goes_at_once_a_few_a_second_at_most() {
    let m = Arc::new(Scripted::default());
    let (agent, sink) = start(m.clone(), Config { heartbeat_interval: Duration::from_secs(30), ..cfg() });
    assert!(sink.wait_for(|_| *m.heartbeats.lock() >= 1), "the first heartbeat");
    thread::sleep(Duration::from_millis(300));
    let before = *m.heartbeats.lock();
    let asked = Instant::now();
    agent.beat_now();
    assert!(sink.wait_for(|_| *m.heartbeats.lock() > before), "asked for: it goes");
    assert!(asked.elapsed() < Duration::from_secs(2), "at once, not after the 30 s interval");
    // Asked for 20 times in 200 ms: one heartbeat per 250 ms at most.
    let before = *m.heartbeats.lock();
    for _ in 0..20 {
        agent.beat_now();
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(300));
    let sent = *m.heartbeats.lock() - before;
    assert!((1..=2).contains(&sent), "{sent} heartbeats");
    agent.stop(Duration::from_secs(2));
}
