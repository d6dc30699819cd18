//! Failures seen by the data plane: a node whose push of a stream to the next hop went down says
//! so in its heartbeat (`pushes[].state` `retrying`), and asks for that heartbeat at once. The
//! node it pushes to is then *suspected*, never declared dead on that word alone: a peer's key
//! lets it speak for itself, not for another node. A suspect is confirmed dead
//!
//! - when the master cannot connect to its announced RTMP address (the caller probes it:
//!   [`Mesh::take_probes`], then [`Mesh::confirm_dead`] on a failed connect), or
//! - when it has been silent for more than one heartbeat interval and a second (instead of the
//!   node timeout),
//!
//! and its hops are placed again at once, as a silent node's are. A suspect that beats again is
//! cleared. Only a node placed to push a stream to the suspect can suspect it, so a liar can make
//! the master look at the nodes it feeds, no more: one that answers stays.
//!
//! A push that was up and stopped making progress (`pushes[].state` `stalled`: the path to the
//! node is cut, packets dropped, the connection still open) makes its target a suspect the same
//! way. When the suspect answers the probe it is alive and the path is what is dead: the
//! reporter's own hop of that stream moves ([`Mesh::path_dead`]), and the suspect keeps
//! everything else. An ingest's hop to a root relay moves to another root relay; a root
//! relay's hop to an edge moves to another root relay of the stream (or one placed on it for
//! that edge): the edge keeps the stream and its viewers. A reporter can so move only the hops
//! it feeds, and only to another live root relay.

use std::collections::{BTreeMap, HashMap};

use mesh_core::wire::Heartbeat;

use super::Mesh;

/// The same suspect is probed at most once in this many seconds.
const PROBE_EVERY_S: u64 = 1;

#[derive(Debug, Default)]
pub(super) struct Suspects {
    /// node → when it was first suspected.
    since: HashMap<String, u64>,
    /// node → when it was last handed out for a probe.
    probed: HashMap<String, u64>,
    /// Nodes to probe (their ids), taken by [`Mesh::take_probes`].
    probe: Vec<String>,
    /// node → the streams whose push to it stalled: (stream, the reporter: its ingest, or the
    /// root relay feeding it there) → when reported. At most one entry per hop the reporter feeds, found in a sorted map (an
    /// ingest may report 20,000 stalled pushes in every heartbeat).
    stalled: HashMap<String, BTreeMap<(String, String), u64>>,
}

impl Mesh {
    /// `hb`'s node reports the pushes it has down: each node it is placed to push that stream
    /// to becomes a suspect.
    pub(super) fn note_pushes(&mut self, hb: &Heartbeat, now: u64) {
        for p in hb.pushes.iter().filter(|p| p.state == "retrying" || p.state == "stalled") {
            let Some(pl) = self.streams.get(&p.stream) else { continue };
            let root_hop = pl.ingest == hb.node_id && pl.roots.iter().any(|h| h.to == p.to);
            let feeds = root_hop || pl.edges.iter().any(|h| h.from == hb.node_id && h.to == p.to);
            if !feeds || p.to == hb.node_id || !self.nodes.get(&p.to).is_some_and(|n| n.alive) {
                continue;
            }
            let sus = &mut self.suspects;
            if p.state == "stalled" {
                let paths = sus.stalled.entry(p.to.clone()).or_default();
                paths.insert((p.stream.clone(), hb.node_id.clone()), now);
            }
            sus.since.entry(p.to.clone()).or_insert(now);
            let due = sus.probed.get(&p.to).is_none_or(|t| now >= t.saturating_add(PROBE_EVERY_S));
            if due && !sus.probe.contains(&p.to) {
                sus.probed.insert(p.to.clone(), now);
                sus.probe.push(p.to.clone());
            }
        }
    }

    /// A heartbeat from `id`: it is not dead, whatever a peer said.
    pub(super) fn heard_from(&mut self, id: &str) {
        if self.suspects.since.remove(id).is_some() {
            self.suspects.probed.remove(id);
        }
    }

    /// The suspects to probe now: (node id, its announced RTMP URL).
    pub fn take_probes(&mut self) -> Vec<(String, String)> {
        let ids = std::mem::take(&mut self.suspects.probe);
        ids.into_iter()
            .filter_map(|id| self.nodes.get(&id).filter(|n| n.alive).map(|n| (id, n.rtmp_url.clone())))
            .collect()
    }

    /// A suspect's RTMP address refused the master (or did not answer): dead now, its streams
    /// placed again. Does nothing for a node that is not suspected (it beat since). Returns
    /// whether it died.
    pub fn confirm_dead(&mut self, id: &str, now: u64) -> bool {
        if !self.suspects.since.contains_key(id) {
            return false;
        }
        self.suspects.since.remove(id);
        self.suspects.probed.remove(id);
        self.suspects.stalled.remove(id);
        let Some(n) = self.nodes.get_mut(id).filter(|n| n.alive) else { return false };
        n.alive = false;
        self.drop_node_hops(id);
        self.settle(now);
        true
    }

    /// A suspect's RTMP address answered the master: it is alive, so the paths to it that were
    /// reported stalled (within a heartbeat interval and a second) are what is dead. Each such
    /// stream's hop to it moves, if there is another root relay: a root relay's to another
    /// root relay, an edge's feed to another root relay of the stream (or one placed on it for
    /// that edge). It keeps its other streams. Returns the streams moved, each with the root
    /// relay that now takes the hop (for an edge: that feeds it).
    pub fn path_dead(&mut self, id: &str, now: u64) -> Vec<(String, String)> {
        let Some(paths) = self.suspects.stalled.remove(id) else { return Vec::new() };
        if !self.nodes.get(id).is_some_and(|n| n.alive) {
            return Vec::new();
        }
        let fresh = self.cfg.heartbeat_interval_s.saturating_add(1);
        let mut moved = Vec::new();
        for ((s, from), when) in paths {
            let Some(p) = self.streams.get(&s).filter(|_| now.saturating_sub(when) <= fresh) else {
                continue;
            };
            // Still the reporter's hop (the stream did not move to another ingest, nor the edge
            // to another root relay, since).
            let new = if p.ingest == from {
                self.move_root_hop(&s, id)
            } else if p.edges.iter().any(|h| h.from == from && h.to == id) {
                self.move_edge_feed(&s, &from, id)
            } else {
                None
            };
            if let Some(new) = new {
                moved.push((s, new));
            }
        }
        if !moved.is_empty() {
            self.settle(now);
        }
        moved
    }

    /// Suspects silent for more than one heartbeat interval and a second (a late beat is not a
    /// death): dead (the sweep adds them to the
    /// nodes that died). Suspicions older than the node timeout are forgotten.
    pub(super) fn silent_suspects(&mut self, now: u64) -> Vec<String> {
        let (interval, timeout) = (self.cfg.heartbeat_interval_s, self.cfg.node_timeout_s);
        let nodes = &self.nodes;
        let mut dead = Vec::new();
        self.suspects.since.retain(|id, since| {
            let Some(n) = nodes.get(id).filter(|n| n.alive) else { return false };
            if now.saturating_sub(n.last_seen) > interval.saturating_add(1) {
                dead.push(id.clone());
                return false;
            }
            now.saturating_sub(*since) <= timeout
        });
        for id in &dead {
            self.suspects.probed.remove(id);
            self.suspects.stalled.remove(id);
        }
        // Stalled paths never probed (the suspect died, or was probed a moment before): forgotten.
        let fresh = interval.saturating_add(1);
        self.suspects.stalled.retain(|_, paths| {
            paths.retain(|_, when| now.saturating_sub(*when) <= fresh);
            !paths.is_empty()
        });
        dead
    }
}
