//! The node's state, with one writer: every change (a role from the master, a table from the
//! master or the table file) goes through [`NodeState::apply`], which merges it into the
//! snapshot in force under one lock and hands the result to the event loop in the order
//! applied. Nothing copies the snapshot, changes it elsewhere and writes it back, so a role
//! change can never undo a table installed meanwhile (nor the reverse).
//!
//! A table from the master older than the one in force in the same master epoch is refused (no
//! rollback), logged once per version; one of another epoch (a new master database: its
//! versions count from anew) is taken. A table file is the operator's word and is taken
//! whatever its version.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_core::node::Node;
use mesh_core::Role;
use parking_lot::{Condvar, Mutex};

use crate::agent::{Change, Event, Level, Sink};
use crate::load::write_atomic;

/// Where a table comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    Master,
    File(&'a Path),
}

impl Source<'_> {
    fn name(&self) -> String {
        match self {
            Source::Master => "master".into(),
            Source::File(p) => format!("\"{}\"", p.display()),
        }
    }
}

/// What [`NodeState::apply`] did with a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// In force now (the version it replaced).
    Installed { was: u64 },
    /// Nothing to do: the same table, or the role already in force.
    Same,
    /// Refused: older than the table in force (its version).
    Older { running: u64 },
}

/// One change to the node state.
pub(crate) enum Update<'a> {
    /// The master set the role.
    Role(Role),
    /// A validated table, its hosts resolved (its role still to be merged).
    Table(Box<Node>, Source<'a>),
}

struct Inner {
    node: Arc<Node>,
    /// The last older table refused (logged once).
    refused: Option<u64>,
}

pub(crate) struct NodeState {
    inner: Mutex<Inner>,
    /// Notified after each change.
    changed: Condvar,
    /// The version last written to the table file: writes happen outside the lock, and one
    /// racing another never leaves an older table on disk.
    saved: Mutex<Option<(Option<String>, u64)>>,
}

impl NodeState {
    pub(crate) fn new(initial: Arc<Node>) -> NodeState {
        NodeState {
            inner: Mutex::new(Inner { node: initial, refused: None }),
            changed: Condvar::new(),
            saved: Mutex::new(None),
        }
    }

    pub(crate) fn node(&self) -> Arc<Node> {
        self.inner.lock().node.clone()
    }

    pub(crate) fn version(&self) -> u64 {
        self.inner.lock().node.table.version
    }

    /// The master epoch of the table in force (None: a table file, or from before epochs).
    pub(crate) fn epoch(&self) -> Option<String> {
        self.inner.lock().node.table.epoch.clone()
    }

    /// Whether the table in force is of `epoch` (when given) and at least `version`.
    pub(crate) fn has(&self, epoch: Option<&str>, version: u64) -> bool {
        has(&self.inner.lock().node, epoch, version)
    }

    /// Whether a table of `version` in `epoch` from `source` would be refused as older
    /// (checked again by [`NodeState::apply`]; this spares resolving the hosts of a table never
    /// applied).
    pub(crate) fn is_older(&self, version: u64, epoch: Option<&str>, source: Source<'_>) -> bool {
        let inner = self.inner.lock();
        is_rollback(&inner.node, version, epoch, source)
    }

    /// The one step that changes the node state: merge `update` into the snapshot in force,
    /// log it, and hand the new snapshot to the event loop (under the lock, so events arrive
    /// in the order applied).
    pub(crate) fn apply(&self, sink: &dyn Sink, update: Update<'_>) -> Applied {
        let mut inner = self.inner.lock();
        let current = inner.node.clone();
        let (node, change) = match update {
            Update::Role(role) if role == current.role => return Applied::Same,
            Update::Role(role) => {
                let msg = format!("mesh: master sets role \"{role}\" (was \"{}\")", current.role);
                sink.send(Event::Log(Level::Notice, msg));
                (current.with_role(role), Change::Role(role))
            }
            Update::Table(mut node, source) => {
                let (version, running) = (node.table.version, current.table.version);
                if is_rollback(&current, version, node.table.epoch.as_deref(), source) {
                    if inner.refused != Some(version) {
                        inner.refused = Some(version);
                        let msg = format!(
                            "mesh: table version {version} from master refused: older than version {running} in force (no rollback)"
                        );
                        sink.send(Event::Log(Level::Warn, msg));
                    }
                    return Applied::Older { running };
                }
                if version == running && node.table == current.table {
                    return Applied::Same;
                }
                // The table's role wins; else the role in force now (a role the master set
                // while this table was being resolved stays).
                node.role = node.table.role.unwrap_or(current.role);
                let msg =
                    format!("mesh: table version {version} from {} in force (was {running})", source.name());
                sink.send(Event::Log(Level::Notice, msg));
                if let (Source::Master, Some(e)) = (source, &node.table.epoch) {
                    if current.table.epoch.as_ref().is_some_and(|was| was != e) {
                        let was = current.table.epoch.as_deref().unwrap_or("");
                        let msg = format!(
                            "mesh: master epoch {e} (was {was}): a new master database, its table versions count anew"
                        );
                        sink.send(Event::Log(Level::Notice, msg));
                    }
                }
                (*node, Change::Table(version))
            }
        };
        let was = current.table.version;
        let node = Arc::new(node);
        inner.node = node.clone();
        sink.send(Event::Node(node, change));
        drop(inner);
        self.changed.notify_all();
        Applied::Installed { was }
    }

    /// Wait up to `d` for a table of at least `version` (in `epoch`, when given); whether it
    /// is in force.
    pub(crate) fn wait_version(&self, epoch: Option<&str>, version: u64, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut inner = self.inner.lock();
        while !has(&inner.node, epoch, version) {
            if self.changed.wait_until(&mut inner, deadline).timed_out() {
                break;
            }
        }
        has(&inner.node, epoch, version)
    }

    /// Write the body of table `version` of `epoch` to `path` (the epoch is in the body, so a
    /// restart knows it), unless a newer one of that epoch was written already.
    pub(crate) fn save(
        &self,
        path: &Path,
        epoch: Option<&str>,
        version: u64,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        let mut saved = self.saved.lock();
        if saved.as_ref().is_some_and(|(e, v)| e.as_deref() == epoch && *v > version) {
            return Ok(());
        }
        write_atomic(path, bytes)?;
        *saved = Some((epoch.map(str::to_string), version));
        Ok(())
    }
}

fn has(node: &Node, epoch: Option<&str>, version: u64) -> bool {
    node.table.version >= version && epoch.is_none_or(|e| node.table.epoch.as_deref() == Some(e))
}

/// A table from the master older than the one in force, in the same epoch.
fn is_rollback(current: &Node, version: u64, epoch: Option<&str>, source: Source<'_>) -> bool {
    matches!(source, Source::Master)
        && version < current.table.version
        && epoch == current.table.epoch.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Collect;
    use mesh_core::Table;
    use std::thread;

    fn node(version: u64, role: Option<&str>) -> Node {
        let role = role.map_or(String::new(), |r| format!(r#", "role": "{r}""#));
        let table = Table::parse(format!(r#"{{"version": {version}{role}}}"#).as_bytes()).unwrap();
        Node { node_id: "edge-1".into(), role: Role::Standalone, table, dial: Default::default() }
    }

    #[test]
    fn an_older_table_is_refused_once_and_the_role_merges() {
        let sink = Collect::default();
        let st = NodeState::new(Arc::new(node(11, None)));
        assert_eq!(st.apply(&sink, Update::Role(Role::Relay)), Applied::Installed { was: 11 });
        assert_eq!(st.apply(&sink, Update::Role(Role::Relay)), Applied::Same);
        // No role in the table: the master's role stays.
        assert_eq!(
            st.apply(&sink, Update::Table(Box::new(node(13, None)), Source::Master)),
            Applied::Installed { was: 11 }
        );
        assert_eq!(st.node().role, Role::Relay);
        assert_eq!(st.apply(&sink, Update::Table(Box::new(node(13, None)), Source::Master)), Applied::Same);
        for _ in 0..3 {
            assert_eq!(
                st.apply(&sink, Update::Table(Box::new(node(12, None)), Source::Master)),
                Applied::Older { running: 13 }
            );
        }
        assert!(st.is_older(12, None, Source::Master));
        let logs = sink.logs();
        assert_eq!(
            logs.iter()
                .filter(|l| l.contains("version 12 from master refused: older than version 13"))
                .count(),
            1,
            "{logs:?}"
        );
        assert_eq!(
            logs.iter().filter(|l| l.contains("table version 13 from master in force (was 11)")).count(),
            1
        );
        // The operator's file is taken whatever its version; its role wins.
        let f = Path::new("/t.json");
        assert!(!st.is_older(2, None, Source::File(f)));
        assert_eq!(
            st.apply(&sink, Update::Table(Box::new(node(2, Some("ingest"))), Source::File(f))),
            Applied::Installed { was: 13 }
        );
        assert_eq!(st.node().role, Role::Ingest);
        assert_eq!(sink.changes(), vec![Change::Role(Role::Relay), Change::Table(13), Change::Table(2)]);
    }

    fn in_epoch(version: u64, epoch: Option<&str>) -> Node {
        let e = epoch.map_or(String::new(), |e| format!(r#", "epoch": "{e}""#));
        let table = Table::parse(format!(r#"{{"version": {version}{e}}}"#).as_bytes()).unwrap();
        Node { node_id: "edge-1".into(), role: Role::Standalone, table, dial: Default::default() }
    }

    /// No rollback within an epoch; a new epoch (a new master database) is taken whatever its
    /// version, and then its own versions never go back either.
    #[test]
    fn versions_compare_within_an_epoch() {
        let sink = Collect::default();
        let st = NodeState::new(Arc::new(in_epoch(500, Some("a"))));
        let apply = |v, e| st.apply(&sink, Update::Table(Box::new(in_epoch(v, e)), Source::Master));
        assert_eq!(apply(499, Some("a")), Applied::Older { running: 500 });
        assert!(st.is_older(499, Some("a"), Source::Master));
        assert!(!st.is_older(3, Some("b"), Source::Master));
        assert_eq!(apply(3, Some("b")), Applied::Installed { was: 500 });
        assert_eq!(st.epoch().as_deref(), Some("b"));
        assert!(st.has(Some("b"), 3) && !st.has(Some("a"), 3) && !st.has(Some("b"), 4));
        assert_eq!(apply(2, Some("b")), Applied::Older { running: 3 });
        assert_eq!(apply(4, Some("b")), Applied::Installed { was: 3 });
        // A table of no epoch after one of an epoch (an operator's file from before epochs).
        assert_eq!(apply(1, None), Applied::Installed { was: 4 });
        assert!(sink.logs().iter().any(|l| l.contains("master epoch b (was a)")), "{:?}", sink.logs());
    }

    /// The race of issue 13: a role change from a heartbeat while a table is installed. With a
    /// copy-and-write-back, some role changes put the old table back; here the table in force
    /// and every snapshot handed to the event loop after it are the newest.
    #[test]
    fn a_role_change_racing_tables_never_rolls_the_table_back() {
        let sink = Arc::new(Collect::default());
        let st = Arc::new(NodeState::new(Arc::new(node(0, None))));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s2, k2, d2) = (st.clone(), sink.clone(), done.clone());
        let roles = thread::spawn(move || {
            let mut i = 0u64;
            while !d2.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                s2.apply(&*k2, Update::Role(if i.is_multiple_of(2) { Role::Relay } else { Role::Ingest }));
            }
            i
        });
        for v in 1..=300 {
            st.apply(&*sink, Update::Table(Box::new(node(v, None)), Source::Master));
            thread::sleep(Duration::from_micros(200));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(roles.join().unwrap() > 300, "the roles raced the tables");
        assert_eq!(st.version(), 300);
        let versions: Vec<u64> = sink.nodes().iter().map(|n| n.table.version).collect();
        assert!(versions.windows(2).all(|w| w[0] <= w[1]), "a snapshot went back: {versions:?}");
        assert_eq!(sink.logs().iter().filter(|l| l.contains("table version 300 from master")).count(), 1);
    }

    #[test]
    fn saves_never_go_back_and_waits_end() {
        let dir = std::env::temp_dir().join(format!("mesh-agent-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("table.json");
        let st = NodeState::new(Arc::new(node(1, None)));
        st.save(&file, None, 5, b"five").unwrap();
        st.save(&file, None, 4, b"four").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"five");
        st.save(&file, None, 5, b"five again").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"five again");
        st.save(&file, Some("e2"), 1, b"new epoch").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new epoch", "a new epoch is saved whatever its version");
        st.save(&file, Some("e2"), 0, b"older").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new epoch");
        std::fs::remove_dir_all(dir).unwrap();

        let t = Instant::now();
        assert!(!st.wait_version(None, 2, Duration::from_millis(50)));
        assert!(t.elapsed() >= Duration::from_millis(50));
        let st = Arc::new(st);
        let s = st.clone();
        let waiter = thread::spawn(move || s.wait_version(None, 2, Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(20));
        st.apply(&Collect::default(), Update::Table(Box::new(node(2, None)), Source::Master));
        assert!(waiter.join().unwrap());
    }
}
