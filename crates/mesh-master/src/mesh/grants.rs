//! Roles are granted, never claimed: a node's role in force is the one an admin granted (or
//! auto-approval, at its first announce, for the roles the operator listed). A node without one
//! waits here: no table, no keys, no hops; its heartbeats touch nothing.

use mesh_core::role::Role;
use mesh_core::wire::Announce;

use super::{Mesh, MeshError, PendingNode, PENDING_MAX};

impl Mesh {
    /// A node without a granted role waits (at most [`PENDING_MAX`] of them: past it the one
    /// seen longest ago is forgotten).
    pub(super) fn wait(&mut self, a: &Announce, now: u64) {
        if let Some(p) = self.pending.get_mut(&a.node_id) {
            p.announce = a.clone();
            p.last_seen = now;
            return;
        }
        if self.pending.len() >= PENDING_MAX {
            let stalest =
                self.pending.values().min_by_key(|p| p.last_seen).map(|p| p.announce.node_id.clone());
            if let Some(id) = stalest {
                self.pending.remove(&id);
            }
        }
        self.pending
            .insert(a.node_id.clone(), PendingNode { announce: a.clone(), first_seen: now, last_seen: now });
    }

    /// An admin grants a role (a waiting node joins at once), or takes it back (None): the
    /// node then waits again, out of every placement, without a table.
    pub fn set_role(&mut self, node_id: &str, role: Option<Role>, now: u64) {
        let Some(r) = role else {
            self.roles.remove(node_id);
            self.ungrant(node_id, now);
            return;
        };
        self.roles.insert(node_id.to_string(), r);
        if let Some(p) = self.pending.get(node_id) {
            let (a, seen) = (p.announce.clone(), p.last_seen);
            self.announce(&a, now);
            if let Some(n) = self.nodes.get_mut(node_id) {
                n.last_seen = seen.max(now);
            }
            return;
        }
        if let Some(n) = self.nodes.get_mut(node_id) {
            if n.role != r {
                n.role = r;
                self.drop_node_hops(node_id);
                self.tables.nodes.insert(node_id.to_string());
                self.index.up.push(node_id.to_string());
            }
        }
        self.settle(now);
    }

    /// A node whose role was taken back leaves the mesh and waits.
    fn ungrant(&mut self, node_id: &str, now: u64) {
        let Some(n) = self.nodes.get_mut(node_id) else { return };
        // Out of every placement first (no longer a candidate), then forgotten.
        n.alive = false;
        let a = Announce {
            node_id: n.node_id.clone(),
            role: n.announced_role,
            rtmp_url: n.rtmp_url.clone(),
            http_url: n.http_url.clone(),
            version: n.version.clone(),
            capabilities: mesh_core::wire::Capabilities { transcode: false, hls: false, dash: false },
        };
        let seen = n.last_seen;
        self.drop_node_hops(node_id);
        self.settle(now);
        self.nodes.remove(node_id);
        self.index.up.retain(|id| id != node_id);
        self.tables.forget(node_id);
        self.wait(&a, seen);
    }

    /// Why a node not in the mesh is refused: waiting for a role, or never announced.
    pub(super) fn unknown(&self, node_id: &str) -> MeshError {
        if self.pending.contains_key(node_id) {
            MeshError::Pending
        } else {
            MeshError::NotAnnounced
        }
    }

    /// Whether a node may fetch its table: in the mesh (with a granted role).
    pub fn check_known(&self, node_id: &str) -> Result<(), MeshError> {
        if self.nodes.contains_key(node_id) {
            Ok(())
        } else {
            Err(self.unknown(node_id))
        }
    }
}
