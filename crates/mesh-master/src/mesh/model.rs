//! What the mesh is made of: its settings, nodes, hops and placements, and its errors.

use std::collections::BTreeMap;

use serde::Serialize;

use mesh_core::role::Role;
use mesh_core::viewer::DEFAULT_MAX_TTL_S;
use mesh_core::wire::{Announce, Load};

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
    /// Roles granted to a node without a role at its first announce, as it asks (the operator's
    /// `--auto-approve`); any other role waits for an admin.
    pub auto_approve: Vec<Role>,
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
            auto_approve: Vec::new(),
        }
    }
}

/// A registered node.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub node_id: String,
    /// Its role in force: the one granted (by an admin, or by auto-approval at its first
    /// announce). Never what it asks for: a node without a grant is a [`PendingNode`].
    pub role: Role,
    /// The role it last asked for (announce or heartbeat): shown, never used.
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

/// A node that announced without a granted role: it gets no table, no keys, no hops, and its
/// heartbeats touch nothing until an admin grants it one.
#[derive(Debug, Clone, Serialize)]
pub struct PendingNode {
    /// Its last announce (its role what it asks for).
    pub announce: Announce,
    pub first_seen: u64,
    pub last_seen: u64,
}

/// Most nodes waiting for approval (each holds a valid node key); past it the one seen
/// longest ago is forgotten.
pub const PENDING_MAX: usize = 4096;

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub ingest: String,
    pub roots: Vec<Hop>,
    pub edges: Vec<Hop>,
}

/// Why a node's request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshError {
    /// The node has not announced itself (or the master restarted): it must announce again.
    NotAnnounced,
    /// The node announced, but no role is granted to it (an admin must, `PUT
    /// /admin/nodes/{id}/role`).
    Pending,
    BadNode(String),
}

impl std::fmt::Display for MeshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeshError::NotAnnounced => f.write_str("node not announced"),
            MeshError::Pending => f.write_str(PENDING_REASON),
            MeshError::BadNode(why) => f.write_str(why),
        }
    }
}

/// The reason a node without a granted role is given (docs/protocol.md, "Roles").
pub const PENDING_REASON: &str = "awaiting approval: no role granted to this node";

/// A source of hop keys (random and kept across restarts in the master,
/// [`crate::hop_keys`]; counted in tests).
pub trait Keys {
    /// A new key.
    fn hop_key(&mut self) -> String;
    /// The key of hop (stream, from, to), being placed: a new one, unless the source kept one
    /// for that hop (a restarted master placing a hop of its last run again).
    fn key_of(&mut self, _stream: &str, _from: &str, _to: &str) -> String {
        self.hop_key()
    }
    /// Whether hop (stream, from, to) was placed in the master's last run and not yet again
    /// (a restarted master places it again first, so its push goes on).
    fn had(&self, _stream: &str, _from: &str, _to: &str) -> bool {
        false
    }
    /// Hop (stream, from, to) was taken away: its key is never handed out again.
    fn dropped(&mut self, _stream: &str, _from: &str, _to: &str) {}
    /// The placement settled: save what changed (before a table with the keys goes out).
    fn commit(&mut self, _now: u64) {}
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
