//! What the nodes are told, apart from the mesh: every node's table and role as of the last
//! decision (a long poll and a heartbeat's answer read it under a short lock of its own, never
//! the mesh's), the heartbeats that came in while a decision held the mesh (applied in a batch
//! by whoever holds it next), and one wake-up per node with a long poll waiting (a decision
//! wakes only the nodes whose table changed).
//!
//! A heartbeat's answer and a long poll read the same map, filled after each decision from the
//! mesh: a node is never told a version it cannot fetch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use mesh_core::role::Role;
use mesh_core::wire::Heartbeat;

use crate::mesh::{Mesh, TableDoc};

/// A node's table and role as last decided.
#[derive(Clone)]
pub(crate) struct Told {
    pub role: Role,
    pub version: u64,
    pub doc: Arc<TableDoc>,
}

pub(crate) struct Published {
    /// Tables written (JSON) and signed one at a time, on the blocking pool: a change that
    /// sends every relay its megabytes keeps the other core for the heartbeats.
    pub writers: tokio::sync::Semaphore,
    told: Mutex<HashMap<String, Told>>,
    /// node → (its wake-up, the polls waiting on it): an entry only while a poll waits.
    waiters: Mutex<HashMap<String, (watch::Sender<u64>, usize)>>,
    /// Heartbeats not applied yet, with when they came (the last of each node: it says all
    /// a heartbeat says). Only nodes the master knows: at most one per node.
    pending: Mutex<HashMap<String, (Heartbeat, u64)>>,
    /// node → when it was last sent a table (nodes the master tells something only).
    sent: Mutex<HashMap<String, Instant>>,
}

/// A node is sent a table at most this often: a burst of changes (a placement that runs
/// over many heartbeats) becomes one table, not one per change. The first change after a
/// quiet spell is sent at once.
pub(crate) const TABLE_EVERY: Duration = Duration::from_millis(250);

/// A poll waiting for its node's table to change; dropping it forgets the wake-up when it was
/// the node's last.
pub(crate) struct Waiter<'a> {
    published: &'a Published,
    node: String,
    pub changes: watch::Receiver<u64>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut w = self.published.waiters.lock();
        if let Some((_, n)) = w.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.node);
            }
        }
    }
}

impl Default for Published {
    fn default() -> Published {
        Published {
            writers: tokio::sync::Semaphore::new(1),
            told: Mutex::default(),
            waiters: Mutex::default(),
            pending: Mutex::default(),
            sent: Mutex::default(),
        }
    }
}

impl Published {
    /// The tables and roles of `ids` as `m` has them now (called under the mesh's lock, so
    /// decisions are published in their order).
    pub(crate) fn publish<'a>(&self, m: &Mesh, ids: impl IntoIterator<Item = &'a String>) {
        let mut told = self.told.lock();
        for id in ids {
            let (Some((version, doc)), Some(node)) = (m.table(id), m.nodes().get(id)) else {
                // Left the mesh (its grant taken back): told nothing any more.
                told.remove(id);
                self.sent.lock().remove(id);
                continue;
            };
            told.insert(id.clone(), Told { role: node.role, version, doc });
        }
    }

    /// What `id` was last told (None: a node the master does not know).
    pub(crate) fn get(&self, id: &str) -> Option<Told> {
        self.told.lock().get(id).cloned()
    }

    /// How long `id`'s next table waits so that it comes [`TABLE_EVERY`] after its last.
    pub(crate) fn hold(&self, id: &str, now: Instant) -> Option<Duration> {
        let last = *self.sent.lock().get(id)?;
        TABLE_EVERY.checked_sub(now.saturating_duration_since(last)).filter(|d| !d.is_zero())
    }

    /// `id` was sent a table now (a node the master tells something: one entry per node).
    pub(crate) fn sent(&self, id: &str, now: Instant) {
        if self.told.lock().contains_key(id) {
            self.sent.lock().insert(id.to_string(), now);
        }
    }

    /// Wake the polls waiting for these nodes.
    pub(crate) fn wake<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let w = self.waiters.lock();
        if w.is_empty() {
            return;
        }
        for id in ids {
            if let Some((tx, _)) = w.get(id) {
                tx.send_modify(|g| *g += 1);
            }
        }
    }

    /// A poll of `node` starts waiting (subscribed before it looks at the table, so a change
    /// in between wakes it).
    pub(crate) fn wait(&self, node: &str) -> Waiter<'_> {
        let mut w = self.waiters.lock();
        let (tx, n) = w.entry(node.to_string()).or_insert_with(|| (watch::Sender::new(0), 0));
        *n += 1;
        let changes = tx.subscribe();
        Waiter { published: self, node: node.to_string(), changes }
    }

    /// Nodes with a poll waiting.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.lock().len()
    }

    pub(crate) fn queue(&self, hb: Heartbeat, now: u64) {
        self.pending.lock().insert(hb.node_id.clone(), (hb, now));
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.lock().is_empty()
    }

    pub(crate) fn take_pending(&self) -> Vec<(Heartbeat, u64)> {
        let mut v: Vec<_> = std::mem::take(&mut *self.pending.lock()).into_values().collect();
        v.sort_by(|(a, at), (b, bt)| at.cmp(bt).then_with(|| a.node_id.cmp(&b.node_id)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::Config;

    #[test]
    fn a_node_is_sent_a_table_at_most_every_table_every() {
        let mut m = Mesh::new(
            Config { auto_approve: Role::ALL.to_vec(), ..Config::default() },
            0,
            Box::new(crate::server::RandomKeys),
        );
        let a = mesh_core::wire::Announce {
            node_id: "edge-1".into(),
            role: Role::Relay,
            rtmp_url: "rtmp://127.0.0.1:1935".into(),
            http_url: String::new(),
            version: "t".into(),
            capabilities: mesh_core::wire::Capabilities { transcode: false, hls: false, dash: false },
        };
        m.announce(&a, 1);
        let p = Published::default();
        let t0 = Instant::now();
        p.sent("stranger", t0);
        assert_eq!(p.hold("stranger", t0), None, "only nodes told something are remembered");
        p.publish(&m, [&"edge-1".to_string()]);
        assert_eq!(p.hold("edge-1", t0), None, "the first table goes at once");
        p.sent("edge-1", t0);
        assert_eq!(p.hold("edge-1", t0), Some(TABLE_EVERY));
        assert_eq!(p.hold("edge-1", t0 + TABLE_EVERY / 2), Some(TABLE_EVERY / 2));
        assert_eq!(p.hold("edge-1", t0 + TABLE_EVERY), None);
    }
}
