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
}

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
                continue;
            };
            told.insert(id.clone(), Told { role: node.role, version, doc });
        }
    }

    /// What `id` was last told (None: a node the master does not know).
    pub(crate) fn get(&self, id: &str) -> Option<Told> {
        self.told.lock().get(id).cloned()
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
