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
//!   new hop with a new key, so a route change rotates keys.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use mesh_core::role::Role;
use mesh_core::viewer::{StreamId, ViewerKey, Viewers, DEFAULT_MAX_TTL_S};
use mesh_core::wire::{Announce, Heartbeat, Load, RouteStatus};

use crate::store::StreamRow;

/// What the placement needs to know, from flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub heartbeat_interval_s: u64,
    pub node_timeout_s: u64,
    pub root_fanout: usize,
    pub edge_fanout: usize,
    /// Application appended to an announced `rtmp_url` that has no path.
    pub relay_app: String,
    /// A route-requested edge without viewers for this long is taken off the stream.
    pub edge_idle_s: u64,
    /// How long a route request for a stream that is not live yet is remembered.
    pub want_ttl_s: u64,
    /// Longest viewer token lifetime (minted here, and told to the nodes in their tables).
    pub max_token_ttl_s: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            heartbeat_interval_s: 10,
            node_timeout_s: 30,
            root_fanout: 1,
            edge_fanout: 1,
            relay_app: "relay".into(),
            edge_idle_s: 300,
            want_ttl_s: 60,
            max_token_ttl_s: DEFAULT_MAX_TTL_S,
        }
    }
}

/// A registered node.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub node_id: String,
    /// Its role in force: the admin's assignment, else what it announced.
    pub role: Role,
    pub announced_role: Role,
    pub rtmp_url: String,
    pub http_url: String,
    /// Where other nodes push to it.
    pub node_url: String,
    pub version: String,
    pub announced_at: u64,
    pub last_seen: u64,
    pub alive: bool,
    pub load: Load,
    /// The table version it last reported.
    pub table_version: u64,
    /// Streams it reported, with their viewers.
    pub streams: BTreeMap<String, u64>,
}

/// One hop of a stream: from a node to a node, with its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub from: String,
    pub to: String,
    pub key: String,
    /// Edges only: added by a route request (else by fan-out).
    pub by_route: bool,
    /// Edges only: since when the edge has reported no viewer.
    #[serde(skip)]
    pub idle_since: Option<u64>,
}

/// Where a live stream goes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Placement {
    pub ingest: String,
    pub roots: Vec<Hop>,
    pub edges: Vec<Hop>,
}

/// One node's table as sent (the protocol's shape), without its version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableDoc {
    pub role: Option<Role>,
    pub ingest: BTreeMap<String, Vec<Entry>>,
    pub relay: BTreeMap<String, Vec<Entry>>,
    /// Shared by every ingest node's table (and compared by pointer first).
    pub publish: Arc<BTreeMap<String, PublishKey>>,
    /// Nodes that serve viewers: the keys, the lifetime and every stream's identity (shared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer_keys: Option<Arc<Vec<ViewerKey>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_token_ttl_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<Arc<BTreeMap<String, StreamDoc>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamDoc {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub node_id: String,
    pub node_url: String,
    pub node_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishKey {
    pub key_sha256: String,
}

/// Why a node's request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshError {
    /// The node has not announced itself (or the master restarted): it must announce again.
    NotAnnounced,
    BadNode(String),
}

impl std::fmt::Display for MeshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeshError::NotAnnounced => f.write_str("node not announced"),
            MeshError::BadNode(why) => f.write_str(why),
        }
    }
}

/// A source of hop keys (random in the master, counted in tests).
pub trait Keys {
    fn hop_key(&mut self) -> String;
}

/// The mesh.
pub struct Mesh {
    pub cfg: Config,
    pub nodes: BTreeMap<String, Node>,
    /// Admin role assignments (kept in the database).
    pub roles: HashMap<String, Role>,
    pub streams: BTreeMap<String, Placement>,
    /// stream → edge → until: route requests for streams not live yet.
    wants: HashMap<String, HashMap<String, u64>>,
    /// Broadcaster keys: stream → hex sha256.
    publish: BTreeMap<String, String>,
    /// The same, as the tables carry them.
    publish_doc: Arc<BTreeMap<String, PublishKey>>,
    /// Every stream's identity, as the tables carry them.
    streams_doc: Arc<BTreeMap<String, StreamDoc>>,
    /// The signing key first.
    viewer_keys: Arc<Vec<ViewerKey>>,
    /// The last version handed out; every changed table takes the next one.
    version: u64,
    tables: HashMap<String, (u64, TableDoc)>,
    keys: Box<dyn Keys + Send>,
}

impl Mesh {
    pub fn new(cfg: Config, version: u64, keys: Box<dyn Keys + Send>) -> Mesh {
        Mesh {
            cfg,
            nodes: BTreeMap::new(),
            roles: HashMap::new(),
            streams: BTreeMap::new(),
            wants: HashMap::new(),
            publish: BTreeMap::new(),
            publish_doc: Arc::default(),
            streams_doc: Arc::default(),
            viewer_keys: Arc::default(),
            version,
            tables: HashMap::new(),
            keys,
        }
    }

    /// The highest version handed out so far (the caller keeps it safe across restarts).
    pub fn version(&self) -> u64 {
        self.version
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
            self.refresh();
        }
    }

    /// Keys whose grace ended before `now` leave the tables. Returns whether one did.
    pub fn drop_retired_viewer_keys(&mut self, now: u64) -> bool {
        if self.viewer_keys.iter().all(|k| k.usable_at(now)) {
            return false;
        }
        self.viewer_keys = Arc::new(self.viewer_keys.iter().filter(|k| k.usable_at(now)).cloned().collect());
        self.refresh();
        true
    }

    /// The streams as stored: broadcaster keys (hex sha256) and identities.
    pub fn set_streams(&mut self, streams: BTreeMap<String, StreamRow>) {
        self.publish_doc = Arc::new(
            streams
                .iter()
                .map(|(s, r)| (s.clone(), PublishKey { key_sha256: r.key_sha256.clone() }))
                .collect(),
        );
        self.streams_doc =
            Arc::new(streams.iter().map(|(s, r)| (s.clone(), StreamDoc { id: r.id.clone() })).collect());
        self.publish = streams.into_iter().map(|(s, r)| (s, r.key_sha256)).collect();
        self.refresh();
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

    /// A node announces itself (at start, or again after losing us). Returns its role in force.
    /// A live node announcing again as it is (its next voice, after a reload or an upgrade)
    /// changes nothing: no placement redone, no table renumbered.
    pub fn announce(&mut self, a: &Announce, now: u64) -> Role {
        let role = self.roles.get(&a.node_id).copied().unwrap_or(a.role);
        let node_url = node_url(&a.rtmp_url, &self.cfg.relay_app);
        if let Some(n) = self.nodes.get_mut(&a.node_id).filter(|n| {
            n.alive && n.announced_role == a.role && n.rtmp_url == a.rtmp_url && n.http_url == a.http_url
        }) {
            (n.last_seen, n.announced_at) = (now, now);
            n.version.clone_from(&a.version);
            return n.role;
        }
        let prev = self.nodes.get(&a.node_id);
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
        self.nodes.insert(a.node_id.clone(), node);
        if moved {
            // Its URL or role changed: every hop to or from it is made anew (new keys).
            self.drop_node_hops(&a.node_id);
        }
        self.repair(now);
        role
    }

    /// A heartbeat: figures, liveness, and the streams it carries.
    pub fn heartbeat(&mut self, hb: &Heartbeat, now: u64) -> Result<Role, MeshError> {
        let node = self.nodes.get_mut(&hb.node_id).ok_or(MeshError::NotAnnounced)?;
        // Most heartbeats change nothing that placement depends on: then nothing is redone.
        let mut changed = !node.alive;
        node.last_seen = now;
        node.alive = true;
        node.load = hb.load.clone();
        node.table_version = hb.table_version;
        node.streams = hb.streams.iter().map(|s| (s.stream.clone(), s.viewers)).collect();
        let role = node.role;
        let id = hb.node_id.clone();
        let follow = hb.table_version.min(FOLLOW_MAX);
        if follow > self.version {
            // The node holds a version this master never handed out (its database was lost, or
            // is another master's): number every table past it, or the node never takes one.
            // Only up to 2^52: past it, 2^52 versions stay before the 2^53 every node may
            // report, so no heartbeat can make the counter reach a version it refuses.
            self.version = follow;
            self.tables.clear();
            changed = true;
        }
        if matches!(role, Role::Ingest | Role::Standalone) {
            let live: BTreeSet<&str> =
                hb.streams.iter().filter(|s| s.source == "broadcaster").map(|s| s.stream.as_str()).collect();
            // Streams that ended here.
            let before = self.streams.len();
            self.streams.retain(|s, p| p.ingest != id || live.contains(s.as_str()));
            changed |= self.streams.len() != before;
            // Streams that started here (or moved here from an ingest that lost them).
            for s in live {
                let placed_elsewhere = self.streams.get(s).is_some_and(|p| {
                    p.ingest != id
                        && self.nodes.get(&p.ingest).is_some_and(|n| n.alive && n.streams.contains_key(s))
                });
                if !placed_elsewhere && self.streams.get(s).is_none_or(|p| p.ingest != id) {
                    self.streams
                        .insert(s.to_string(), Placement { ingest: id.clone(), ..Placement::default() });
                    changed = true;
                }
            }
        }
        if role == Role::Relay {
            changed |= self.track_edge_viewers(&id, now);
        }
        if changed {
            self.repair(now);
        }
        Ok(role)
    }

    /// Route-added edges that have had no viewer for `edge_idle_s` leave the stream.
    /// Returns whether an edge left a stream.
    fn track_edge_viewers(&mut self, edge: &str, now: u64) -> bool {
        let Some(node) = self.nodes.get(edge) else { return false };
        let idle_s = self.cfg.edge_idle_s;
        let mut left = false;
        for (s, p) in self.streams.iter_mut() {
            let viewers = node.streams.get(s).copied().unwrap_or(0);
            p.edges.retain_mut(|h| {
                if h.to != edge || !h.by_route {
                    return true;
                }
                if viewers > 0 {
                    h.idle_since = None;
                    return true;
                }
                let since = *h.idle_since.get_or_insert(now);
                let keep = now.saturating_sub(since) < idle_s;
                left |= !keep;
                keep
            });
        }
        left
    }

    /// An edge asks for a stream a viewer wants.
    pub fn route(&mut self, edge: &str, stream: &str, now: u64) -> Result<(RouteStatus, u64), MeshError> {
        let node = self.nodes.get(edge).ok_or(MeshError::NotAnnounced)?;
        if !node.role.serves_viewers() || node.role == Role::Standalone {
            return Ok((RouteStatus::Denied, self.table_version(edge)));
        }
        if !self.publish.contains_key(stream) && !self.streams.contains_key(stream) {
            return Ok((RouteStatus::Unknown, self.table_version(edge)));
        }
        match self.streams.get(stream) {
            Some(p) if p.edges.iter().any(|h| h.to == edge) => {}
            Some(_) => {
                self.add_edge(stream, edge, true);
                self.repair(now);
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
        for id in &died {
            self.drop_node_hops(id);
        }
        self.wants.retain(|_, edges| {
            edges.retain(|_, until| *until > now);
            !edges.is_empty()
        });
        if !died.is_empty() {
            self.repair(now);
        }
        died
    }

    /// An admin assigns a role (None: back to what the node announced).
    pub fn set_role(&mut self, node_id: &str, role: Option<Role>, now: u64) {
        match role {
            Some(r) => self.roles.insert(node_id.to_string(), r),
            None => self.roles.remove(node_id),
        };
        if let Some(n) = self.nodes.get_mut(node_id) {
            let r = role.unwrap_or(n.announced_role);
            if n.role != r {
                n.role = r;
                self.drop_node_hops(node_id);
            }
        }
        self.repair(now);
    }

    /// Take a node out of every placement (dead, moved, or given another role).
    fn drop_node_hops(&mut self, id: &str) {
        self.streams.retain(|_, p| p.ingest != id);
        for p in self.streams.values_mut() {
            p.roots.retain(|h| h.to != id);
            p.edges.retain(|h| h.to != id && h.from != id);
        }
    }

    fn alive_with(&self, role: Role) -> impl Iterator<Item = &Node> {
        // A node with no URL to push to is never a hop (an admin may give one a relay role).
        self.nodes.values().filter(move |n| n.alive && n.role == role && !n.node_url.is_empty())
    }

    /// Hops placed on each node (as receiver, and for root relays as sender too).
    fn hop_counts(&self) -> HashMap<String, usize> {
        let mut c: HashMap<String, usize> = HashMap::new();
        for p in self.streams.values() {
            for h in p.roots.iter().chain(&p.edges) {
                *c.entry(h.to.clone()).or_default() += 1;
            }
            for h in &p.edges {
                *c.entry(h.from.clone()).or_default() += 1;
            }
        }
        c
    }

    /// The least loaded of the live nodes of `role` not in `have`, by `counts` of hops placed.
    fn least_loaded(&self, counts: &HashMap<String, usize>, role: Role, have: &[Hop]) -> Option<String> {
        self.alive_with(role)
            .filter(|n| !have.iter().any(|h| h.to == n.node_id))
            .min_by_key(|n| {
                (
                    counts.get(&n.node_id).copied().unwrap_or(0),
                    n.load.out_kbps,
                    n.load.connections,
                    &n.node_id,
                )
            })
            .map(|n| n.node_id.clone())
    }

    /// Put `edge` on `stream`, fed by the stream's root relay with the fewest edges of it.
    /// Returns that root relay.
    fn add_edge(&mut self, stream: &str, edge: &str, by_route: bool) -> Option<String> {
        let p = self.streams.get(stream)?;
        let root = p
            .roots
            .iter()
            .min_by_key(|r| (p.edges.iter().filter(|e| e.from == r.to).count(), &r.to))
            .map(|r| r.to.clone())?;
        let key = self.keys.hop_key();
        let p = self.streams.get_mut(stream).expect("checked");
        p.edges.push(Hop { from: root.clone(), to: edge.to_string(), key, by_route, idle_since: None });
        Some(root)
    }

    /// Bring every placement to the rules: hops only to live nodes of the right role, enough
    /// root relays and edges, waiting route requests served; then the tables.
    fn repair(&mut self, now: u64) {
        let alive =
            |m: &Mesh, id: &str, role: Role| m.nodes.get(id).is_some_and(|n| n.alive && n.role == role);
        // First what must go: streams whose source is gone, hops to nodes gone or changed.
        let nodes = &self.nodes;
        let up = |id: &str, role: Role| nodes.get(id).is_some_and(|n| n.alive && n.role == role);
        self.streams.retain(|s, p| {
            nodes.get(&p.ingest).is_some_and(|n| {
                n.alive && matches!(n.role, Role::Ingest | Role::Standalone) && n.streams.contains_key(s)
            })
        });
        for p in self.streams.values_mut() {
            p.roots.retain(|h| up(&h.to, Role::RootRelay));
            let roots = &p.roots;
            p.edges.retain(|h| up(&h.to, Role::Relay) && roots.iter().any(|r| r.to == h.from));
        }
        // Then what is missing, counting hops as they are placed.
        let mut counts = self.hop_counts();
        let ids: Vec<String> = self.streams.keys().cloned().collect();
        for s in &ids {
            while self.streams[s].roots.len() < self.cfg.root_fanout {
                let Some(root) = self.least_loaded(&counts, Role::RootRelay, &self.streams[s].roots) else {
                    break;
                };
                *counts.entry(root.clone()).or_default() += 1;
                let key = self.keys.hop_key();
                let p = self.streams.get_mut(s).expect("listed");
                p.roots.push(Hop {
                    from: p.ingest.clone(),
                    to: root,
                    key,
                    by_route: false,
                    idle_since: None,
                });
            }
            if self.streams[s].roots.is_empty() {
                continue;
            }
            // Edges: those waiting for it, then up to the fan-out.
            let waiting: Vec<String> = self
                .wants
                .remove(s)
                .map(|w| w.into_iter().filter(|(_, u)| *u > now).map(|(e, _)| e).collect())
                .unwrap_or_default();
            let mut wanted: Vec<(String, bool)> = waiting
                .into_iter()
                .filter(|e| alive(self, e, Role::Relay) && !self.streams[s].edges.iter().any(|h| h.to == *e))
                .map(|e| (e, true))
                .collect();
            loop {
                let (edge, by_route) = match wanted.pop() {
                    Some(w) => w,
                    None if self.streams[s].edges.iter().filter(|h| !h.by_route).count()
                        < self.cfg.edge_fanout =>
                    {
                        match self.least_loaded(&counts, Role::Relay, &self.streams[s].edges) {
                            Some(e) => (e, false),
                            None => break,
                        }
                    }
                    None => break,
                };
                if let Some(root) = self.add_edge(s, &edge, by_route) {
                    *counts.entry(root).or_default() += 1;
                    *counts.entry(edge).or_default() += 1;
                }
            }
        }
        self.refresh();
    }

    /// Recompute the tables; a table that changed takes the next version. One pass over the
    /// placements finds what concerns each node, so each table costs only its own entries.
    fn refresh(&mut self) {
        let mut mine: HashMap<&str, Vec<&str>> = HashMap::new();
        for (s, p) in &self.streams {
            let mut touch = |id: &str| {
                let v = mine.entry(self.nodes.get_key_value(id).map_or("", |(k, _)| k.as_str())).or_default();
                if v.last() != Some(&s.as_str()) {
                    v.push(s.as_str());
                }
            };
            touch(&p.ingest);
            for h in p.roots.iter().chain(&p.edges) {
                touch(&h.to);
            }
        }
        let docs: Vec<(String, TableDoc)> = self
            .nodes
            .keys()
            .map(|id| (id.clone(), self.render(id, mine.get(id.as_str()).map_or(&[][..], Vec::as_slice))))
            .filter(|(id, doc)| self.tables.get(id).is_none_or(|(_, d)| d != doc))
            .collect();
        for (id, doc) in docs {
            self.version = self.version.saturating_add(1);
            self.tables.insert(id, (self.version, doc));
        }
    }

    /// A node's table as it should be now, from the streams that concern it.
    fn render(&self, id: &str, streams: &[&str]) -> TableDoc {
        let Some(node) = self.nodes.get(id) else { return TableDoc::default() };
        let mut t = TableDoc { role: Some(node.role), ..TableDoc::default() };
        let mine =
            streams.iter().filter_map(|s| self.streams.get_key_value(*s)).map(|(s, p)| (s.as_str(), p));
        let url = |n: &str| self.nodes.get(n).map(|n| n.node_url.clone()).unwrap_or_default();
        let entry = |h: &Hop, with_from: bool| Entry {
            node_id: h.to.clone(),
            node_url: url(&h.to),
            node_key: h.key.clone(),
            from: with_from.then(|| h.from.clone()),
        };
        match node.role {
            Role::Ingest | Role::Standalone => {
                t.publish = self.publish_doc.clone();
                for (s, p) in mine.clone().filter(|(_, p)| p.ingest == id) {
                    t.ingest.insert(s.to_string(), p.roots.iter().map(|h| entry(h, false)).collect());
                }
                if node.role == Role::Standalone {
                    self.viewer_fields(&mut t);
                }
            }
            Role::RootRelay => {
                for (s, p) in mine {
                    let here: Vec<Entry> =
                        p.roots.iter().filter(|h| h.to == id).map(|h| entry(h, false)).collect();
                    if here.is_empty() {
                        continue;
                    }
                    t.ingest.insert(s.to_string(), here);
                    let out: Vec<Entry> =
                        p.edges.iter().filter(|h| h.from == id).map(|h| entry(h, true)).collect();
                    if !out.is_empty() {
                        t.relay.insert(s.to_string(), out);
                    }
                }
            }
            Role::Relay => {
                for (s, p) in mine {
                    let here: Vec<Entry> =
                        p.edges.iter().filter(|h| h.to == id).map(|h| entry(h, true)).collect();
                    if !here.is_empty() {
                        t.relay.insert(s.to_string(), here);
                    }
                }
                self.viewer_fields(&mut t);
            }
        }
        t
    }

    /// What a node that serves viewers needs to check their tokens.
    fn viewer_fields(&self, t: &mut TableDoc) {
        t.viewer_keys = Some(self.viewer_keys.clone());
        t.max_token_ttl_s = Some(self.cfg.max_token_ttl_s);
        t.streams = Some(self.streams_doc.clone());
    }

    /// The version of a node's table (0 before it has one).
    pub fn table_version(&self, id: &str) -> u64 {
        self.tables.get(id).map_or(0, |(v, _)| *v)
    }

    /// A node's table as JSON, with its version.
    pub fn table_json(&self, id: &str) -> Option<(u64, Vec<u8>)> {
        let (v, doc) = self.tables.get(id)?;
        let mut value = serde_json::to_value(doc).ok()?;
        value.as_object_mut()?.insert("version".into(), (*v).into());
        Some((*v, serde_json::to_vec(&value).ok()?))
    }

    pub fn is_known(&self, id: &str) -> bool {
        self.nodes.contains_key(id)
    }
}

/// Highest reported table version the counter follows (2^52).
pub const FOLLOW_MAX: u64 = mesh_core::wire::caps::MAX_NUMBER / 2;

/// Where other nodes push to a node: its announced RTMP URL, with the relay application when
/// the URL names none.
pub fn node_url(rtmp_url: &str, app: &str) -> String {
    if rtmp_url.is_empty() {
        return String::new();
    }
    let rest = rtmp_url.strip_prefix("rtmp://").unwrap_or(rtmp_url);
    match rest.split_once('/') {
        Some((_, path)) if !path.trim_matches('/').is_empty() => rtmp_url.trim_end_matches('/').to_string(),
        _ => format!("{}/{app}", rtmp_url.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::admission::{PublishRequest, SessionKind};
    use mesh_core::table::Table;
    use mesh_core::wire::{Capabilities, StreamStat};

    struct Counted(u32);
    impl Keys for Counted {
        fn hop_key(&mut self) -> String {
            self.0 += 1;
            format!("k{}", self.0)
        }
    }

    fn mesh(cfg: Config) -> Mesh {
        let mut m = Mesh::new(cfg, 100, Box::new(Counted(0)));
        m.set_viewer_keys(vec![ViewerKey {
            id: "k1".into(),
            secret: "secret-0123456789".into(),
            not_after: None,
        }]);
        m.set_publish([("cam1".to_string(), "ab".repeat(32)), ("cam2".to_string(), "cd".repeat(32))].into());
        m
    }

    fn announce(m: &mut Mesh, id: &str, role: Role, port: u16) {
        m.announce(
            &Announce {
                node_id: id.into(),
                role,
                rtmp_url: format!("rtmp://127.0.0.1:{port}"),
                http_url: String::new(),
                version: "t".into(),
                capabilities: Capabilities { transcode: true, hls: true, dash: true },
            },
            0,
        );
    }

    fn beat(m: &mut Mesh, id: &str, streams: &[(&str, &str, u64)], now: u64) {
        let hb = Heartbeat {
            node_id: id.into(),
            role: m.nodes[id].role,
            table_version: m.table_version(id),
            uptime_s: now,
            streams: streams
                .iter()
                .map(|(s, src, v)| StreamStat {
                    stream: s.to_string(),
                    source: src.to_string(),
                    viewers: *v,
                    in_kbps: 1000,
                })
                .collect(),
            pushes: vec![],
            transcodes: vec![],
            load: Load::default(),
        };
        m.heartbeat(&hb, now).unwrap();
    }

    /// Four nodes: ingest, two root relays, two edges.
    fn four(cfg: Config) -> Mesh {
        let mut m = mesh(cfg);
        announce(&mut m, "ingest-1", Role::Ingest, 1935);
        announce(&mut m, "root-1", Role::RootRelay, 1936);
        announce(&mut m, "root-2", Role::RootRelay, 1937);
        announce(&mut m, "edge-1", Role::Relay, 1938);
        announce(&mut m, "edge-2", Role::Relay, 1939);
        m
    }

    /// The table a node would load: the master's JSON through the node's own parser.
    fn table(m: &Mesh, id: &str) -> Table {
        let (v, json) = m.table_json(id).expect("a table");
        let t = Table::parse(&json).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(t.version, v);
        t
    }

    fn node(m: &Mesh, id: &str) -> mesh_core::node::Node {
        let table = table(m, id);
        let dial = mesh_core::node::Node::target_urls(&table).map(|u| (u.clone(), u.clone())).collect();
        mesh_core::node::Node { node_id: id.into(), role: m.nodes[id].role, table, dial }
    }

    /// Follow a stream's pushes from `from` (fed by `source`) through the nodes' own admission:
    /// returns every node that admitted a push of it.
    fn walk(m: &Mesh, stream: &str, from: &str, source: Option<&str>, seen: &mut Vec<String>) {
        for p in node(m, from).plan_pushes(stream, source) {
            let url = p.url.expect("dialable");
            let args = url.split_once('?').unwrap().1.to_string();
            let to = node(m, &p.node_id);
            let d = to.context(0).publish(PublishRequest { stream, args: &args });
            assert_eq!(d, Ok(SessionKind::NodePush { from: from.to_string() }), "{from} → {}", p.node_id);
            seen.push(p.node_id.clone());
            walk(m, stream, &p.node_id, Some(from), seen);
        }
    }

    fn reached(m: &Mesh, stream: &str) -> Vec<String> {
        let mut seen = vec![];
        let ingest = m.streams[stream].ingest.clone();
        walk(m, stream, &ingest, None, &mut seen);
        seen.sort();
        seen
    }

    #[test]
    fn a_live_stream_is_placed_and_every_hop_admits_the_next() {
        let mut m = four(Config::default());
        beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
        assert_eq!(reached(&m, "cam1"), ["edge-1", "root-1"]);
        let ingest = table(&m, "ingest-1");
        assert_eq!(ingest.role, Some(Role::Ingest));
        assert_eq!(ingest.publish.len(), 2, "every broadcaster key");
        assert!(
            !ingest.checks_viewer_tokens() && ingest.stream_ids.is_none(),
            "ingest nodes serve no viewers"
        );
        let edge = table(&m, "edge-1");
        assert_eq!(edge.viewer_keys[0].secret, "secret-0123456789");
        assert!(edge.viewer_secret.is_none(), "the master sends no legacy secret");
        assert_eq!(edge.max_token_ttl_s, Some(DEFAULT_MAX_TTL_S));
        assert_eq!(edge.stream_ids.as_ref().unwrap().len(), 2, "every stream's identity");
        assert!(table(&m, "root-1").stream_ids.is_none());
        assert!(table(&m, "edge-2").relay.is_empty());
        let keys: BTreeSet<String> =
            m.streams["cam1"].roots.iter().chain(&m.streams["cam1"].edges).map(|h| h.key.clone()).collect();
        assert_eq!(keys.len(), 2, "a key per hop");
        // A push with another hop's key is refused.
        let root = node(&m, "root-1");
        let edge_key = &m.streams["cam1"].edges[0].key;
        let args = format!("node=ingest-1&key={edge_key}");
        assert!(root.context(0).publish(PublishRequest { stream: "cam1", args: &args }).is_err());
    }

    #[test]
    fn viewer_tokens_follow_rotations_and_re_created_streams() {
        use mesh_core::viewer::TokenError;
        let mut m = four(Config { max_token_ttl_s: 600, ..Config::default() });
        let row = |id: &str| StreamRow { key_sha256: "ab".repeat(32), id: id.into() };
        let key = |id: &str, not_after| ViewerKey {
            id: id.into(),
            secret: format!("{id}-secret-0123456789"),
            not_after,
        };
        m.set_streams([("cam1".to_string(), row("gen1"))].into());
        m.set_viewer_keys(vec![key("k1", None)]);
        let (old, _) = m.viewers().mint("cam1", m.stream_identity("cam1"), 600, 1_000).unwrap();
        assert_eq!(m.viewers().mint("cam1", m.stream_identity("cam1"), 601, 1_000), Err(TokenError::TooLong));
        let edge = table(&m, "edge-1");
        assert_eq!(edge.max_token_ttl_s, Some(600));
        assert_eq!(edge.verify_viewer("cam1", &old, 1_000), Ok(()));
        // Rotated: the edges' tables change; the old key's tokens verify until its grace ends.
        let v = m.table_version("edge-1");
        let untouched = m.table_version("root-1");
        m.set_viewer_keys(vec![key("k2", None), key("k1", Some(1_500))]);
        assert!(m.table_version("edge-1") > v);
        assert_eq!(m.table_version("root-1"), untouched, "root relays carry no viewer keys");
        let edge = table(&m, "edge-1");
        assert_eq!(edge.verify_viewer("cam1", &old, 1_500), Ok(()));
        assert_eq!(edge.verify_viewer("cam1", &old, 1_501), Err(TokenError::RetiredKey));
        let (new, _) = m.viewers().mint("cam1", m.stream_identity("cam1"), 600, 1_000).unwrap();
        assert!(new.starts_with("v2.k2."), "{new}");
        assert!(!m.drop_retired_viewer_keys(1_500));
        assert!(m.drop_retired_viewer_keys(1_501));
        assert_eq!(table(&m, "edge-1").viewer_keys.len(), 1);
        assert_eq!(table(&m, "edge-1").verify_viewer("cam1", &old, 1_000), Err(TokenError::UnknownKey));
        // Deleted and created again: a new identity, and the tokens of the old stream fail.
        m.set_streams([("cam1".to_string(), row("gen2"))].into());
        assert_eq!(table(&m, "edge-1").verify_viewer("cam1", &new, 1_000), Err(TokenError::BadSignature));
        m.set_streams(BTreeMap::new());
        assert_eq!(m.stream_identity("cam1"), StreamId::Unknown);
        assert_eq!(
            m.viewers().verify("cam1", m.stream_identity("cam1"), &new, 1_000),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn streams_spread_over_the_least_loaded_nodes() {
        let mut m = four(Config::default());
        beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0), ("cam2", "broadcaster", 0)], 1);
        let roots: BTreeSet<&str> = m.streams.values().map(|p| p.roots[0].to.as_str()).collect();
        let edges: BTreeSet<&str> = m.streams.values().map(|p| p.edges[0].to.as_str()).collect();
        assert_eq!(roots.len(), 2, "{roots:?}");
        assert_eq!(edges.len(), 2, "{edges:?}");
    }

    #[test]
    fn fanout_is_configurable() {
        let mut m = four(Config { root_fanout: 2, edge_fanout: 2, ..Config::default() });
        beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
        assert_eq!(reached(&m, "cam1"), ["edge-1", "edge-2", "root-1", "root-2"]);
        assert_ne!(
            m.streams["cam1"].edges[0].from, m.streams["cam1"].edges[1].from,
            "edges spread over roots"
        );
    }

    #[test]
    fn a_route_request_adds_the_edge_or_waits_for_the_stream() {
        let mut m = four(Config::default());
        assert_eq!(m.route("edge-2", "nope", 1).unwrap().0, RouteStatus::Unknown);
        assert_eq!(m.route("root-1", "cam1", 1).unwrap().0, RouteStatus::Denied);
        assert_eq!(m.route("ghost", "cam1", 1), Err(MeshError::NotAnnounced));
        // Not live yet: remembered, and placed there when it goes live.
        assert_eq!(m.route("edge-2", "cam2", 1).unwrap().0, RouteStatus::Unknown);
        beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0), ("cam2", "broadcaster", 0)], 2);
        assert!(reached(&m, "cam2").contains(&"edge-2".to_string()));
        // Live: added at once, with the version of its new table.
        let before = m.table_version("edge-2");
        let edge_of_cam1 = m.streams["cam1"].edges[0].to.clone();
        let other = if edge_of_cam1 == "edge-1" { "edge-2" } else { "edge-1" };
        let (status, v) = m.route(other, "cam1", 3).unwrap();
        assert_eq!(status, RouteStatus::Routed);
        assert_eq!(v, m.table_version(other));
        assert!(v > before);
        assert_eq!(reached(&m, "cam1"), ["edge-1", "edge-2", "root-1"]);
        // Asking again changes nothing.
        let v0 = m.version();
        assert_eq!(m.route(other, "cam1", 4).unwrap().0, RouteStatus::Routed);
        assert_eq!(m.version(), v0);
    }

    #[test]
    fn a_dead_root_relay_is_replaced_with_new_keys() {
        let mut m = four(Config { node_timeout_s: 5, ..Config::default() });
        beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
        let old = m.streams["cam1"].clone();
        assert_eq!(old.roots[0].to, "root-1");
        // Everyone but root-1 keeps beating.
        for id in ["ingest-1", "root-2", "edge-1", "edge-2"] {
            beat(&mut m, id, if id == "ingest-1" { &[("cam1", "broadcaster", 0)] } else { &[] }, 5);
        }
        assert_eq!(m.sweep(7), ["root-1"]);
        let new = &m.streams["cam1"];
        assert_eq!(new.roots[0].to, "root-2");
        assert_eq!(new.edges[0].from, "root-2");
        assert_ne!(new.roots[0].key, old.roots[0].key);
        assert_ne!(new.edges[0].key, old.edges[0].key);
        assert_eq!(reached(&m, "cam1"), ["edge-1", "root-2"]);
        assert!(m.table_json("root-1").is_some(), "a dead node keeps its last table");
        // It comes back: alive again, and placed on when needed.
        announce(&mut m, "root-1", Role::RootRelay, 1936);
        assert!(m.nodes["root-1"].alive);
    }

    #[test]
    fn a_dead_edge_leaves_its_streams_and_another_takes_the_fanout() {
        let mut m = four(Config { node_timeout_s: 5, ..Config::default() });
        beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
        for id in ["ingest-1", "root-1", "root-2", "edge-2"] {
            beat(&mut m, id, if id == "ingest-1" { &[("cam1", "broadcaster", 0)] } else { &[] }, 5);
        }
        m.sweep(7);
        assert_eq!(reached(&m, "cam1"), ["edge-2", "root-1"]);
    }

    #[test]
    fn an_ended_stream_leaves_every_table() {
        let mut m = four(Config::default());
        beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
        let v = m.table_version("root-1");
        let untouched = m.table_version("root-2");
        beat(&mut m, "ingest-1", &[], 2);
        assert!(m.streams.is_empty());
        assert!(table(&m, "root-1").ingest.is_empty() && table(&m, "edge-1").relay.is_empty());
        assert!(m.table_version("root-1") > v, "a changed table takes a newer version");
        assert_eq!(m.table_version("root-2"), untouched, "an unchanged one keeps its version");
    }

    #[test]
    fn streams_pushed_in_do_not_count_as_broadcasts() {
        let mut m = four(Config::default());
        beat(&mut m, "ingest-1", &[("cam1", "root-9", 0)], 1);
        assert!(m.streams.is_empty());
        assert_eq!(
            m.heartbeat(&Heartbeat { node_id: "ghost".into(), ..hb0() }, 1),
            Err(MeshError::NotAnnounced)
        );
    }

    fn hb0() -> Heartbeat {
        Heartbeat::empty("", Role::Relay)
    }

    #[test]
    fn an_admin_role_change_moves_the_streams() {
        let mut m = four(Config::default());
        beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
        m.set_role("root-1", Some(Role::Relay), 2);
        assert_eq!(table(&m, "root-1").role, Some(Role::Relay));
        assert_eq!(m.streams["cam1"].roots[0].to, "root-2");
        // A re-announce keeps the admin's role.
        announce(&mut m, "root-1", Role::RootRelay, 1936);
        assert_eq!(m.nodes["root-1"].role, Role::Relay);
        m.set_role("root-1", None, 3);
        assert_eq!(m.nodes["root-1"].role, Role::RootRelay);
    }

    #[test]
    fn a_route_requested_edge_leaves_when_idle() {
        let mut m = four(Config { edge_idle_s: 10, ..Config::default() });
        beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
        let fan = m.streams["cam1"].edges[0].to.clone();
        let other = if fan == "edge-1" { "edge-2" } else { "edge-1" };
        m.route(other, "cam1", 1).unwrap();
        beat(&mut m, other, &[("cam1", "root-1", 3)], 2);
        beat(&mut m, other, &[("cam1", "root-1", 0)], 5);
        beat(&mut m, other, &[("cam1", "root-1", 0)], 14);
        assert_eq!(m.streams["cam1"].edges.len(), 2, "idle 9 s: kept");
        beat(&mut m, other, &[("cam1", "root-1", 0)], 16);
        assert_eq!(m.streams["cam1"].edges.len(), 1, "idle 11 s: gone");
        beat(&mut m, &fan, &[("cam1", "root-1", 0)], 100);
        assert_eq!(m.streams["cam1"].edges.len(), 1, "the fan-out edge stays");
    }

    #[test]
    fn versions_go_past_what_a_node_holds() {
        let mut m = four(Config::default());
        let hb = Heartbeat { node_id: "edge-1".into(), table_version: 5000, ..hb0() };
        m.heartbeat(&hb, 1).unwrap();
        assert!(m.table_version("edge-1") > 5000);
        assert!(m.table_version("root-1") > 5000);
    }

    #[test]
    fn a_version_near_2_64_never_wraps_the_counter() {
        let mut m = four(Config::default());
        let hb = Heartbeat { node_id: "edge-1".into(), table_version: u64::MAX - 1, ..hb0() };
        m.heartbeat(&hb, 1).unwrap();
        assert!(m.version() <= FOLLOW_MAX + 10, "followed up to 2^52 (+ the tables renumbered)");
        let v = m.table_version("root-1");
        assert!(v > FOLLOW_MAX && v < mesh_core::wire::caps::MAX_NUMBER);
        announce(&mut m, "edge-9", Role::Relay, 1999);
        assert!(m.table_version("edge-9") > v, "tables go on being numbered upwards");
    }

    #[test]
    fn a_live_node_announcing_again_as_it_is_changes_nothing() {
        let mut m = four(Config::default());
        beat(&mut m, "ingest-1", &[("cam1", "broadcaster", 0)], 1);
        let live = m.streams.get("cam1").cloned().expect("placed");
        let (v, versions) = (m.version(), m.nodes.keys().map(|id| m.table_version(id)).collect::<Vec<_>>());
        for id in ["ingest-1", "root-1", "root-2", "edge-1", "edge-2"] {
            let port = m.nodes[id].rtmp_url.rsplit(':').next().unwrap().parse().unwrap();
            let role = m.nodes[id].announced_role;
            announce(&mut m, id, role, port);
        }
        assert_eq!(m.version(), v, "no table renumbered");
        assert_eq!(m.nodes.keys().map(|id| m.table_version(id)).collect::<Vec<_>>(), versions);
        let again = &m.streams["cam1"];
        assert_eq!((&again.roots, &again.edges), (&live.roots, &live.edges), "the same hops, the same keys");
        // Another URL is another node: its hops are made anew.
        announce(&mut m, "root-1", Role::RootRelay, 2936);
        assert!(m.version() > v);
    }

    #[test]
    fn node_urls_get_the_relay_application() {
        assert_eq!(node_url("rtmp://10.0.0.3:1935", "relay"), "rtmp://10.0.0.3:1935/relay");
        assert_eq!(node_url("rtmp://10.0.0.3:1935/", "relay"), "rtmp://10.0.0.3:1935/relay");
        assert_eq!(node_url("rtmp://10.0.0.3:1935/edge", "relay"), "rtmp://10.0.0.3:1935/edge");
        assert_eq!(node_url("", "relay"), "", "no URL: never \"/relay\"");
    }
}
