//! The master's picture of the mesh and its decisions: which nodes are alive, where each live
//! stream goes (ingest → root relays → relays), the key of every hop, and the table each node
//! gets. Pure: no I/O, no clock (callers pass `now` in unix seconds), so every rule is tested
//! here.
//!
//! Placement rules (docs/master.md says the same for operators):
//! - A stream is live when an ingest (or standalone) node's heartbeat lists it with source
//!   `broadcaster`; it is placed at once and removed when that node stops listing it.
//! - Root relays: `root_fanout` of them per stream, the least loaded first. Relays (edges):
//!   `edge_fanout` per stream, plus every edge that asked for it with a route request; each edge
//!   hop comes from the stream's least busy root relay.
//! - "Least loaded": fewest hops placed on the node, then the lower outbound bandwidth, then
//!   fewer connections (both from its last heartbeat), then the node id.
//! - A node is dead after `node_timeout_s` without a heartbeat; its hops leave every table and
//!   the streams it carried are placed again on the others.
//! - Every hop (stream, from, to) gets its own random key when it is made; a hop that moves is a
//!   new hop with a new key, so a route change rotates keys. The key source ([`Keys`]) may keep
//!   keys across a restart: a restarted master placing the same hop again hands out its key.
//!
//! Cost: every decision does work in proportion to what it changes, never to nodes × streams
//! × hops. `place` keeps the indexes that make this so (the streams each node takes part in,
//! the hops placed on each node, the streams short of their fan-out) and places only the
//! streams a change touched; `tables` brings each node's table up to date for the (stream,
//! node) pairs that changed, and gives a changed table the next version.

mod grants;
mod model;
mod place;
mod suspect;
mod table_json;
mod tables;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use mesh_core::role::Role;
use mesh_core::viewer::{StreamId, ViewerKey, Viewers};
use mesh_core::wire::{Announce, Heartbeat, RouteStatus};

use crate::store::StreamRow;

pub use model::{
    node_url, Config, Hop, Keys, MeshError, Node, PendingNode, Placement, FOLLOW_MAX, PENDING_MAX,
    PENDING_REASON,
};
pub use table_json::{table_json, Cached};
pub use tables::{Entry, PublishKey, StreamDoc, TableDoc};

/// What an announce did: the node's granted role (None: it waits for one), and whether it
/// was granted now (by auto-approval: the caller stores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    pub role: Option<Role>,
    pub granted_now: bool,
}

/// The mesh.
pub struct Mesh {
    pub cfg: Config,
    nodes: BTreeMap<String, Node>,
    /// Granted roles (by an admin, or auto-approval; kept in the database).
    roles: HashMap<String, Role>,
    /// Nodes that announced without a granted role.
    pending: BTreeMap<String, PendingNode>,
    streams: BTreeMap<String, Placement>,
    /// stream → edge → until: route requests for streams not live yet.
    wants: HashMap<String, HashMap<String, u64>>,
    /// Broadcaster keys: stream → hex sha256.
    publish: BTreeMap<String, String>,
    /// The same, as the tables carry them.
    publish_doc: Arc<Cached<BTreeMap<String, PublishKey>>>,
    /// Every stream's identity, as the tables carry them.
    streams_doc: Arc<Cached<BTreeMap<String, StreamDoc>>>,
    /// The signing key first.
    viewer_keys: Arc<Vec<ViewerKey>>,
    /// The last version handed out; every changed table takes the next one.
    version: u64,
    keys: Box<dyn Keys + Send>,
    /// The placement's indexes and pending work.
    index: place::Index,
    /// Every node's table, and what must be brought up to date in them.
    tables: tables::Tables,
    /// Nodes a peer's failed push made suspect (crate::mesh::suspect).
    suspects: suspect::Suspects,
}

impl Mesh {
    pub fn new(cfg: Config, version: u64, keys: Box<dyn Keys + Send>) -> Mesh {
        Mesh {
            cfg,
            nodes: BTreeMap::new(),
            roles: HashMap::new(),
            pending: BTreeMap::new(),
            streams: BTreeMap::new(),
            wants: HashMap::new(),
            publish: BTreeMap::new(),
            publish_doc: Arc::default(),
            streams_doc: Arc::default(),
            viewer_keys: Arc::default(),
            version,
            keys,
            index: place::Index::default(),
            tables: tables::Tables::default(),
            suspects: suspect::Suspects::default(),
        }
    }

    /// The highest version handed out so far (the caller keeps it safe across restarts).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The registered nodes.
    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// The live streams and where they go.
    pub fn streams(&self) -> &BTreeMap<String, Placement> {
        &self.streams
    }

    /// The role granted to a node, if any.
    pub fn assigned_role(&self, node_id: &str) -> Option<Role> {
        self.roles.get(node_id).copied()
    }

    /// The nodes waiting for a role.
    pub fn pending(&self) -> &BTreeMap<String, PendingNode> {
        &self.pending
    }

    /// The role a node's announce is checked against: the one granted, else the one it asks
    /// for (which it is granted only by auto-approval).
    pub fn role_for(&self, a: &Announce) -> Role {
        self.assigned_role(&a.node_id).unwrap_or(a.role)
    }

    /// The viewer keys and limits tokens are made and checked by (the same as the tables').
    pub fn viewers(&self) -> Viewers<'_> {
        Viewers { keys: &self.viewer_keys, legacy_secret: None, max_ttl_s: self.cfg.max_token_ttl_s }
    }

    /// A stream's identity: `Unknown` when no account has it.
    pub fn stream_identity(&self, stream: &str) -> StreamId<'_> {
        self.streams_doc.get(stream).map_or(StreamId::Unknown, |d| StreamId::Id(&d.id))
    }

    /// The viewer keys as stored, the signing key first.
    pub fn set_viewer_keys(&mut self, keys: Vec<ViewerKey>) {
        if *self.viewer_keys != keys {
            self.viewer_keys = Arc::new(keys);
            self.tables.shared = true;
            self.settle(0);
        }
    }

    /// Keys whose grace ended before `now` leave the tables. Returns whether one did.
    pub fn drop_retired_viewer_keys(&mut self, now: u64) -> bool {
        if self.viewer_keys.iter().all(|k| k.usable_at(now)) {
            return false;
        }
        self.viewer_keys = Arc::new(self.viewer_keys.iter().filter(|k| k.usable_at(now)).cloned().collect());
        self.tables.shared = true;
        self.settle(now);
        true
    }

    /// The streams as stored: broadcaster keys (hex sha256) and identities.
    pub fn set_streams(&mut self, streams: BTreeMap<String, StreamRow>) {
        self.publish_doc = Arc::new(Cached::new(
            streams
                .iter()
                .map(|(s, r)| (s.clone(), PublishKey { key_sha256: r.key_sha256.clone() }))
                .collect(),
        ));
        self.streams_doc = Arc::new(Cached::new(
            streams.iter().map(|(s, r)| (s.clone(), StreamDoc { id: r.id.clone() })).collect(),
        ));
        self.publish = streams.into_iter().map(|(s, r)| (s, r.key_sha256)).collect();
        self.tables.shared = true;
        self.settle(0);
    }

    /// Broadcaster keys alone (stream → hex sha256), each stream's identity its name: for
    /// tests and benchmarks that need no tokens.
    pub fn set_publish(&mut self, publish: BTreeMap<String, String>) {
        self.set_streams(
            publish.into_iter().map(|(s, k)| (s.clone(), StreamRow { key_sha256: k, id: s })).collect(),
        );
    }

    pub fn publish_key(&self, stream: &str) -> Option<&str> {
        self.publish.get(stream).map(String::as_str)
    }

    /// A node announces itself (at start, or again after losing us). Its role in force is the
    /// one granted; a node without one is granted the role it asks for when that role is
    /// auto-approved, else it waits ([`Mesh::pending`]). The role it asks for changes nothing
    /// once one is granted. A node that announces again with the same role and URL keeps
    /// every hop and its table.
    pub fn announce(&mut self, a: &Announce, now: u64) -> Announced {
        let mut granted_now = false;
        let role = match self.roles.get(&a.node_id) {
            Some(r) => *r,
            None if self.cfg.auto_approve.contains(&a.role) => {
                self.roles.insert(a.node_id.clone(), a.role);
                granted_now = true;
                a.role
            }
            None => {
                self.wait(a, now);
                return Announced { role: None, granted_now: false };
            }
        };
        self.pending.remove(&a.node_id);
        let node_url = node_url(&a.rtmp_url, &self.cfg.relay_app);
        let prev = self.nodes.get(&a.node_id);
        let was_candidate = prev.is_some_and(place::is_candidate);
        let node = Node {
            node_id: a.node_id.clone(),
            role,
            announced_role: a.role,
            rtmp_url: a.rtmp_url.clone(),
            http_url: a.http_url.clone(),
            node_url,
            version: a.version.clone(),
            announced_at: now,
            last_seen: now,
            alive: true,
            load: prev.map(|n| n.load.clone()).unwrap_or_default(),
            table_version: prev.map_or(0, |n| n.table_version),
            streams: prev.map(|n| n.streams.clone()).unwrap_or_default(),
        };
        let moved = prev.is_some_and(|p| p.node_url != node.node_url || p.role != role);
        let new = prev.is_none();
        self.nodes.insert(a.node_id.clone(), node);
        if moved {
            // Its URL or role changed: every hop to or from it is made anew (new keys).
            self.drop_node_hops(&a.node_id);
        }
        if new || moved {
            self.tables.nodes.insert(a.node_id.clone());
        }
        if moved || !was_candidate {
            self.index.up.push(a.node_id.clone());
        }
        self.settle(now);
        Announced { role: Some(role), granted_now }
    }

    /// A heartbeat: figures, liveness, and the streams it carries.
    /// The role it names is ignored: it is taken as its granted role (returned, and in the
    /// answer). A node without one gets [`MeshError::Pending`] and changes nothing.
    pub fn heartbeat(&mut self, hb: &Heartbeat, now: u64) -> Result<Role, MeshError> {
        let Some(node) = self.nodes.get_mut(&hb.node_id) else {
            return Err(match self.pending.get_mut(&hb.node_id) {
                Some(p) => {
                    p.last_seen = now;
                    MeshError::Pending
                }
                None => MeshError::NotAnnounced,
            });
        };
        node.announced_role = hb.role;
        // Most heartbeats change nothing that placement depends on: then nothing is redone.
        let revived = !node.alive;
        node.last_seen = now;
        node.alive = true;
        node.load = hb.load.clone();
        node.table_version = hb.table_version;
        node.streams = hb.streams.iter().map(|s| (s.stream.clone(), s.viewers)).collect();
        let role = node.role;
        let id = hb.node_id.clone();
        if revived {
            self.index.up.push(id.clone());
        }
        let follow = hb.table_version.min(FOLLOW_MAX);
        if follow > self.version {
            // The node holds a version this master never handed out (its database was lost, or
            // is another master's): number every table past it, or the node never takes one.
            // Only up to 2^52: past it, 2^52 versions stay before the 2^53 every node may
            // report, so no heartbeat can make the counter reach a version it refuses.
            self.version = follow;
            self.tables.renumber = true;
        }
        if matches!(role, Role::Ingest | Role::Standalone) {
            let live: BTreeSet<&str> =
                hb.streams.iter().filter(|s| s.source == "broadcaster").map(|s| s.stream.as_str()).collect();
            // Streams that ended here.
            let ended: Vec<String> = self
                .index
                .streams_of(&id)
                .filter(|s| {
                    self.streams.get(*s).is_some_and(|p| p.ingest == id) && !live.contains(s.as_str())
                })
                .cloned()
                .collect();
            for s in &ended {
                self.end_stream(s);
            }
            // Streams that started here (or moved here from an ingest that lost them).
            for s in live {
                let placed_elsewhere = self.streams.get(s).is_some_and(|p| {
                    p.ingest != id
                        && self.nodes.get(&p.ingest).is_some_and(|n| n.alive && n.streams.contains_key(s))
                });
                if !placed_elsewhere && self.streams.get(s).is_none_or(|p| p.ingest != id) {
                    self.start_stream(s, &id);
                }
            }
        }
        if role == Role::Relay {
            self.track_edge_viewers(&id, now);
            self.keep_watched(&id, now);
        }
        // Its pushes that are down make their targets suspect; it is none itself.
        self.heard_from(&id);
        self.note_pushes(hb, now);
        self.settle(now);
        Ok(role)
    }

    /// An edge asks for a stream a viewer wants.
    pub fn route(&mut self, edge: &str, stream: &str, now: u64) -> Result<(RouteStatus, u64), MeshError> {
        let node = self.nodes.get(edge).ok_or_else(|| self.unknown(edge))?;
        if !node.role.serves_viewers() || node.role == Role::Standalone {
            return Ok((RouteStatus::Denied, self.table_version(edge)));
        }
        if !self.publish.contains_key(stream) && !self.streams.contains_key(stream) {
            return Ok((RouteStatus::Unknown, self.table_version(edge)));
        }
        match self.streams.get(stream) {
            Some(p) if p.edges.iter().any(|h| h.to == edge) => {}
            Some(_) => {
                self.route_edge(stream, edge);
                self.settle(now);
            }
            None => {
                // Not live yet: placed here as soon as it is.
                self.wants
                    .entry(stream.to_string())
                    .or_default()
                    .insert(edge.to_string(), now.saturating_add(self.cfg.want_ttl_s));
                return Ok((RouteStatus::Unknown, self.table_version(edge)));
            }
        }
        let routed = self.streams.get(stream).is_some_and(|p| p.edges.iter().any(|h| h.to == edge));
        let status = if routed { RouteStatus::Routed } else { RouteStatus::Unknown };
        Ok((status, self.table_version(edge)))
    }

    /// Mark nodes that went silent as dead and place their streams again. Returns the ids of the
    /// nodes that died now.
    pub fn sweep(&mut self, now: u64) -> Vec<String> {
        let timeout = self.cfg.node_timeout_s;
        let mut died = Vec::new();
        for n in self.nodes.values_mut() {
            if n.alive && now.saturating_sub(n.last_seen) > timeout {
                n.alive = false;
                died.push(n.node_id.clone());
            }
        }
        // Suspects (a peer's push to them failed) that went silent die sooner.
        for id in self.silent_suspects(now) {
            if let Some(n) = self.nodes.get_mut(&id).filter(|n| n.alive) {
                n.alive = false;
                died.push(id);
            }
        }
        for id in &died {
            self.drop_node_hops(id);
        }
        self.pending.retain(|_, p| now.saturating_sub(p.last_seen) <= timeout);
        self.wants.retain(|_, edges| {
            edges.retain(|_, until| *until > now);
            !edges.is_empty()
        });
        self.settle(now);
        died
    }

    /// The master was behind for `secs` (busy or stopped, not hearing heartbeats): that time
    /// counts toward no node's silence. Never past `now`.
    pub fn excuse(&mut self, secs: u64, now: u64) {
        if secs == 0 {
            return;
        }
        for n in self.nodes.values_mut().filter(|n| n.alive && n.last_seen > 0) {
            n.last_seen = n.last_seen.saturating_add(secs).min(now);
        }
    }

    /// A node cut off (revoked): as if never seen, so the next sweep declares it dead and
    /// places its streams again.
    pub fn never_seen(&mut self, node_id: &str) {
        if let Some(n) = self.nodes.get_mut(node_id) {
            n.last_seen = 0;
        }
    }

    /// Place what a change left to place, then bring the tables that changed up to date.
    fn settle(&mut self, now: u64) {
        self.place(now);
        self.drop_keys();
        self.keys.commit(now);
        self.write_tables();
    }

    /// The version of a node's table (0 before it has one).
    pub fn table_version(&self, id: &str) -> u64 {
        self.tables.version(id)
    }

    /// A node's table with its version; [`table_json`] makes it the protocol's JSON (outside
    /// the caller's lock: the document is shared, not copied).
    pub fn table(&self, id: &str) -> Option<(u64, Arc<TableDoc>)> {
        self.tables.get(id)
    }

    /// A node's table as JSON, with its version.
    pub fn table_json(&self, id: &str) -> Option<(u64, Vec<u8>)> {
        let (v, doc) = self.table(id)?;
        table_json(v, &doc)
    }

    /// The nodes whose table took a new version since the last call: the long polls to wake.
    pub fn take_changed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.tables.changed).into_iter().collect()
    }

    pub fn is_known(&self, id: &str) -> bool {
        self.nodes.contains_key(id)
    }
}
