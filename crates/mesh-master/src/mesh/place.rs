//! Placement: which root relays and edges carry each live stream. Every change goes through
//! the functions here, which keep three indexes right as hops come and go, so that a decision
//! costs what it changes:
//!
//! - `part`: the streams each node takes part in (as their ingest or at either end of a hop),
//!   so a node's death, an edge's heartbeat or an ingest's streams touch only their streams;
//! - `load`: the hops placed on each node, the first key of "least loaded";
//! - `short`: the streams that have fewer root relays or edges than their fan-out because every
//!   live candidate already carries them. When a node becomes a candidate, it is the only new
//!   one, so those streams are offered that node alone instead of being placed again.
//!
//! Every hop placed or removed also marks the (stream, node) pairs whose table entries change.

use std::collections::{BTreeSet, HashMap, HashSet};

use mesh_core::role::Role;

use super::tables::{Out, Tables};
use super::{Hop, Mesh, Node, Placement};

/// node → streams.
type Streams = HashMap<String, BTreeSet<String>>;

#[derive(Debug, Default)]
pub(super) struct Index {
    part: Streams,
    load: HashMap<String, usize>,
    short: BTreeSet<String>,
    /// edge → the streams it was put on by a route request (its viewers keep it there).
    routed: Streams,
    /// stream → the edges that lost the root relay feeding them: they keep the stream and are
    /// fed by another root relay as soon as it has one (their viewers stay).
    orphans: HashMap<String, Vec<(String, bool)>>,
    /// Streams to place (new, or a hop of theirs went away).
    pub(super) fill: BTreeSet<String>,
    /// Nodes that became candidates (alive with a URL, or a new role) since the last placement.
    pub(super) up: Vec<String>,
    /// Hops taken away since the last placement, (stream, from, to): their keys go.
    pub(super) dropped: Vec<(String, String, String)>,
}

impl Index {
    /// The streams a node takes part in.
    pub(super) fn streams_of<'a>(&'a self, id: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.part.get(id).into_iter().flatten()
    }

    fn join(&mut self, id: &str, s: &str) {
        if let Some(set) = self.part.get_mut(id) {
            set.insert(s.to_string());
        } else {
            self.part.insert(id.to_string(), BTreeSet::from([s.to_string()]));
        }
    }

    fn leave(&mut self, id: &str, s: &str) {
        if let Some(set) = self.part.get_mut(id) {
            set.remove(s);
            if set.is_empty() {
                self.part.remove(id);
            }
        }
    }

    fn add_load(&mut self, id: &str) {
        *self.load.entry(id.to_string()).or_default() += 1;
    }

    fn sub_load(&mut self, id: &str) {
        if let Some(c) = self.load.get_mut(id) {
            *c -= 1;
            if *c == 0 {
                self.load.remove(id);
            }
        }
    }

    /// Hops placed on a node (as receiver, and for root relays as sender of edges too).
    pub(super) fn load(&self, id: &str) -> usize {
        self.load.get(id).copied().unwrap_or(0)
    }
}

/// Whether a node can be given hops at all (its role decides which).
pub(super) fn is_candidate(n: &Node) -> bool {
    // A node with no URL to push to is never a hop (an admin may give one a relay role).
    n.alive && !n.node_url.is_empty()
}

fn takes_part(p: &Placement, id: &str) -> bool {
    p.ingest == id || p.roots.iter().any(|h| h.to == id) || p.edges.iter().any(|h| h.to == id || h.from == id)
}

/// A hop was placed on stream `s`.
fn added(index: &mut Index, tables: &mut Tables, s: &str, ingest: &str, h: &Hop, edge: bool) {
    if h.by_route {
        index.routed.entry(h.to.clone()).or_default().insert(s.to_string());
    }
    index.add_load(&h.to);
    index.join(&h.to, s);
    if edge {
        index.add_load(&h.from);
        tables.touch_out(s, &h.from, Out::Add(h.clone()));
        tables.touch_out(s, &h.to, Out::Add(h.clone()));
    } else {
        // The ingest's entry lists every root relay.
        tables.touch(s, &h.to);
        tables.touch(s, ingest);
    }
}

/// A hop of stream `s` was taken away (`forget` afterwards drops the nodes that left it).
fn removed(index: &mut Index, tables: &mut Tables, s: &str, ingest: &str, h: &Hop, edge: bool) {
    index.dropped.push((s.to_string(), h.from.clone(), h.to.clone()));
    if h.by_route {
        if let Some(set) = index.routed.get_mut(&h.to) {
            set.remove(s);
            if set.is_empty() {
                index.routed.remove(&h.to);
            }
        }
    }
    index.sub_load(&h.to);
    if edge {
        index.sub_load(&h.from);
        tables.touch_out(s, &h.from, Out::Remove { key: h.key.clone(), to: h.to.clone() });
        tables.touch_out(s, &h.to, Out::Remove { key: h.key.clone(), to: h.to.clone() });
    } else {
        tables.touch(s, &h.to);
        tables.touch(s, ingest);
    }
}

/// After hops left `p`: the nodes in `gone` that no longer take part in it leave the index.
fn forget(index: &mut Index, s: &str, p: &Placement, gone: &[String]) {
    if gone.len() <= 4 {
        for id in gone.iter().filter(|id| !takes_part(p, id)) {
            index.leave(id, s);
        }
        return;
    }
    let left: HashSet<&str> = std::iter::once(p.ingest.as_str())
        .chain(p.roots.iter().chain(&p.edges).flat_map(|h| [h.to.as_str(), h.from.as_str()]))
        .collect();
    for id in gone.iter().filter(|id| !left.contains(id.as_str())) {
        index.leave(id, s);
    }
}

impl Mesh {
    /// A stream goes live at `ingest` (replacing a placement from another ingest).
    pub(super) fn start_stream(&mut self, s: &str, ingest: &str) {
        self.end_stream(s);
        self.streams.insert(s.to_string(), Placement { ingest: ingest.to_string(), ..Placement::default() });
        self.index.join(ingest, s);
        self.tables.touch(s, ingest);
        self.index.fill.insert(s.to_string());
    }

    /// A stream leaves every node.
    pub(super) fn end_stream(&mut self, s: &str) {
        let Some(p) = self.streams.remove(s) else { return };
        let (index, tables) = (&mut self.index, &mut self.tables);
        for h in &p.roots {
            removed(index, tables, s, &p.ingest, h, false);
        }
        for h in &p.edges {
            removed(index, tables, s, &p.ingest, h, true);
        }
        index.leave(&p.ingest, s);
        tables.touch(s, &p.ingest);
        for h in p.roots.iter().chain(&p.edges) {
            index.leave(&h.to, s);
            index.leave(&h.from, s);
        }
        index.short.remove(s);
        index.fill.remove(s);
        index.orphans.remove(s);
    }

    /// Take a node out of every placement (dead, moved, or given another role); the streams
    /// it was part of are placed again.
    pub(super) fn drop_node_hops(&mut self, id: &str) {
        let mine: Vec<String> = self.index.streams_of(id).cloned().collect();
        for s in mine {
            if self.streams.get(&s).is_some_and(|p| p.ingest == id) {
                self.end_stream(&s);
                continue;
            }
            let Some(p) = self.streams.get_mut(&s) else { continue };
            let (index, tables) = (&mut self.index, &mut self.tables);
            let mut gone = vec![id.to_string()];
            let ingest = p.ingest.clone();
            p.roots.retain(|h| {
                let keep = h.to != id;
                if !keep {
                    removed(index, tables, &s, &ingest, h, false);
                }
                keep
            });
            let mut lost = Vec::new();
            p.edges.retain(|h| {
                let keep = h.to != id && h.from != id;
                if !keep {
                    removed(index, tables, &s, &ingest, h, true);
                    if h.to != id {
                        // Its feed went away, not the edge: it keeps the stream.
                        lost.push((h.to.clone(), h.by_route));
                    }
                    gone.push(h.to.clone());
                    gone.push(h.from.clone());
                }
                keep
            });
            if !lost.is_empty() {
                index.orphans.entry(s.clone()).or_default().extend(lost);
            }
            forget(index, &s, p, &gone);
            index.fill.insert(s);
        }
    }

    /// The path from stream `s`'s ingest to its root relay `to` is dead (its push stalled,
    /// `to` answers the master): that hop moves to the least loaded root relay not on the
    /// stream, and the edges `to` fed keep the stream, fed by the stream's root relays (by the
    /// new one when it is the only one). `to` keeps its other streams. Without another root
    /// relay the hop stays. Returns the new root relay.
    pub(super) fn move_root_hop(&mut self, s: &str, to: &str) -> Option<String> {
        let p = self.streams.get(s)?;
        if !p.roots.iter().any(|h| h.to == to) {
            return None;
        }
        let new = self.pick(s, Role::RootRelay, 1, &p.roots, None, None).pop()?;
        let p = self.streams.get_mut(s).expect("listed");
        // A placed hop like any other: its key kept (a restarted master hands it back).
        let key = self.keys.key_of(s, &p.ingest, &new);
        let (index, tables) = (&mut self.index, &mut self.tables);
        let ingest = p.ingest.clone();
        p.roots.retain(|h| {
            let keep = h.to != to;
            if !keep {
                removed(index, tables, s, &ingest, h, false);
            }
            keep
        });
        let h = Hop { from: ingest.clone(), to: new.clone(), key, by_route: false, idle_since: None };
        added(index, tables, s, &ingest, &h, false);
        p.roots.push(h);
        let mut gone = vec![to.to_string()];
        let mut fed = Vec::new();
        p.edges.retain(|h| {
            let keep = h.from != to;
            if !keep {
                removed(index, tables, s, &ingest, h, true);
                fed.push((h.to.clone(), h.by_route));
                gone.push(h.to.clone());
            }
            keep
        });
        forget(index, s, p, &gone);
        self.add_edges(s, fed);
        Some(new)
    }

    /// The path from stream `s`'s root relay `from` to its edge `edge` is dead (the push
    /// stalled, `edge` answers the master): the edge keeps the stream (and its viewers), fed by
    /// another root relay of the stream (the one feeding the fewest edges of it), or else by
    /// the least loaded root relay not on it, placed on it for this (beyond the fan-out). The
    /// hop keeps how it came (fan-out or route); `from` keeps the stream and its other edges.
    /// Without another root relay the hop stays. Returns the edge's new feed.
    pub(super) fn move_edge_feed(&mut self, s: &str, from: &str, edge: &str) -> Option<String> {
        let p = self.streams.get(s)?;
        let at = p.edges.iter().position(|h| h.from == from && h.to == edge)?;
        let fed_by = |r: &str| p.edges.iter().filter(|e| e.from == r).count();
        let other = p.roots.iter().filter(|r| r.to != from).map(|r| (fed_by(&r.to), r.to.clone())).min();
        let new = match other {
            Some((_, r)) => r,
            None => {
                let root = self.pick(s, Role::RootRelay, 1, &p.roots, None, None).pop()?;
                let p = self.streams.get_mut(s).expect("listed");
                let key = self.keys.key_of(s, &p.ingest, &root);
                let h =
                    Hop { from: p.ingest.clone(), to: root.clone(), key, by_route: false, idle_since: None };
                added(&mut self.index, &mut self.tables, s, &p.ingest, &h, false);
                p.roots.push(h);
                root
            }
        };
        let p = self.streams.get_mut(s).expect("listed");
        let old = p.edges.remove(at);
        let (index, tables) = (&mut self.index, &mut self.tables);
        removed(index, tables, s, &p.ingest, &old, true);
        let key = self.keys.key_of(s, &new, edge);
        let h = Hop {
            from: new.clone(),
            to: edge.to_string(),
            key,
            by_route: old.by_route,
            idle_since: old.idle_since,
        };
        added(index, tables, s, &p.ingest, &h, true);
        p.edges.push(h);
        forget(index, s, p, &[from.to_string(), edge.to_string()]);
        Some(new)
    }

    /// Route-added edges that have had no viewer for `edge_idle_s` leave the stream.
    pub(super) fn track_edge_viewers(&mut self, edge: &str, now: u64) {
        let Some(node) = self.nodes.get(edge) else { return };
        let idle_s = self.cfg.edge_idle_s;
        let mine: Vec<String> = self.index.routed.get(edge).into_iter().flatten().cloned().collect();
        for s in mine {
            let viewers = node.streams.get(&s).copied().unwrap_or(0);
            let Some(p) = self.streams.get_mut(&s) else { continue };
            let (index, tables) = (&mut self.index, &mut self.tables);
            let mut gone = Vec::new();
            let ingest = p.ingest.clone();
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
                if !keep {
                    removed(index, tables, &s, &ingest, h, true);
                    gone.push(h.to.clone());
                    gone.push(h.from.clone());
                }
                keep
            });
            if !gone.is_empty() {
                forget(index, &s, p, &gone);
                index.fill.insert(s);
            }
        }
    }

    /// An edge's heartbeat shows viewers of a stream it is not placed on (a restarted master
    /// that has not seen its route request, or a fan-out that moved): it keeps the stream, by
    /// route, as if it had asked; waiting for it when the stream is not placed yet.
    pub(super) fn keep_watched(&mut self, edge: &str, now: u64) {
        let Some(node) = self.nodes.get(edge) else { return };
        let watched: Vec<String> =
            node.streams.iter().filter(|(_, v)| **v > 0).map(|(s, _)| s.clone()).collect();
        for s in watched {
            match self.streams.get(&s) {
                Some(p) if p.edges.iter().any(|h| h.to == edge) => {}
                Some(p) if !p.roots.is_empty() => self.route_edge(&s, edge),
                _ if self.publish.contains_key(&s) => {
                    let until = now.saturating_add(self.cfg.want_ttl_s);
                    self.wants.entry(s).or_default().insert(edge.to_string(), until);
                }
                _ => {}
            }
        }
    }

    /// The keys of the hops taken away since the last call are never handed out again.
    pub(super) fn drop_keys(&mut self) {
        for (s, from, to) in std::mem::take(&mut self.index.dropped) {
            self.keys.dropped(&s, &from, &to);
        }
    }

    /// An edge asked for a live stream: put it on, by route.
    pub(super) fn route_edge(&mut self, s: &str, edge: &str) {
        self.add_edges(s, vec![(edge.to_string(), true)]);
    }

    /// Place what the changes since the last call left to place.
    pub(super) fn place(&mut self, now: u64) {
        // Keys of the hops taken away go first: a hop placed again now is a new one.
        self.drop_keys();
        for s in std::mem::take(&mut self.index.fill) {
            self.fill(&s, None, now);
        }
        for id in std::mem::take(&mut self.index.up) {
            let Some(n) = self.nodes.get(&id).filter(|n| is_candidate(n)) else { continue };
            if !matches!(n.role, Role::RootRelay | Role::Relay) {
                continue;
            }
            let short: Vec<String> = self.index.short.iter().cloned().collect();
            for s in short {
                self.fill(&s, Some(&id), now);
            }
        }
    }

    /// Bring one stream to its fan-out: root relays, then the edges waiting for it, then edges
    /// up to the fan-out, each time the least loaded. `only`: the one node that became a
    /// candidate since the stream was last filled (the others are all on it already).
    fn fill(&mut self, s: &str, only: Option<&str>, now: u64) {
        let Some(p) = self.streams.get(s) else { return };
        let had_roots = !p.roots.is_empty();
        let need = self.cfg.root_fanout.saturating_sub(p.roots.len());
        // A restarted master takes the root relays the stream had (their hop keys kept), so
        // that its pushes go on.
        let last_run = Some((s, p.ingest.as_str()));
        for root in self.pick(s, Role::RootRelay, need, &p.roots, only, last_run) {
            let p = self.streams.get_mut(s).expect("listed");
            let key = self.keys.key_of(s, &p.ingest, &root);
            let h = Hop { from: p.ingest.clone(), to: root, key, by_route: false, idle_since: None };
            added(&mut self.index, &mut self.tables, s, &p.ingest, &h, false);
            p.roots.push(h);
        }
        let p = &self.streams[s];
        if !p.roots.is_empty() {
            // Edges: those that lost their feed, those waiting for it, then up to the fan-out.
            let alive_relay = |e: &str| self.nodes.get(e).is_some_and(|n| n.alive && n.role == Role::Relay);
            let orphans: Vec<(String, bool)> = self
                .index
                .orphans
                .remove(s)
                .unwrap_or_default()
                .into_iter()
                .filter(|(e, _)| alive_relay(e) && !p.edges.iter().any(|h| h.to == *e))
                .fold(Vec::new(), |mut v: Vec<(String, bool)>, o| {
                    if !v.iter().any(|(e, _)| *e == o.0) {
                        v.push(o);
                    }
                    v
                });
            self.add_edges(s, orphans);
            let p = &self.streams[s];
            let waiting: Vec<(String, bool)> = self
                .wants
                .remove(s)
                .map(|w| w.into_iter().filter(|(_, u)| *u > now).map(|(e, _)| e).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .filter(|e| {
                    self.nodes.get(e).is_some_and(|n| n.alive && n.role == Role::Relay)
                        && !p.edges.iter().any(|h| h.to == *e)
                })
                .rev()
                .map(|e| (e, true))
                .collect();
            self.add_edges(s, waiting);
            let p = &self.streams[s];
            let fanned = p.edges.iter().filter(|h| !h.by_route).count();
            let need = self.cfg.edge_fanout.saturating_sub(fanned);
            // Roots were missing: the edges were never placed, every relay is a candidate.
            let only = if had_roots { only } else { None };
            let picked = self.pick(s, Role::Relay, need, &p.edges, only, None);
            self.add_edges(s, picked.into_iter().map(|e| (e, false)).collect());
        }
        let p = &self.streams[s];
        let fanned = p.edges.iter().filter(|h| !h.by_route).count();
        let short =
            p.roots.len() < self.cfg.root_fanout || (!p.roots.is_empty() && fanned < self.cfg.edge_fanout);
        if short {
            self.index.short.insert(s.to_string());
        } else {
            self.index.short.remove(s);
        }
    }

    /// Put edges on `s`, each fed by the stream's root relay with the fewest edges of it.
    fn add_edges(&mut self, s: &str, edges: Vec<(String, bool)>) {
        if edges.is_empty() {
            return;
        }
        let Some(p) = self.streams.get_mut(s) else { return };
        // With one root relay, every edge is fed by it: no need to count.
        let count =
            |r: &Hop| if p.roots.len() == 1 { 0 } else { p.edges.iter().filter(|e| e.from == r.to).count() };
        let mut per_root: Vec<(usize, String)> = p.roots.iter().map(|r| (count(r), r.to.clone())).collect();
        for (edge, by_route) in edges {
            let Some(least) = per_root.iter_mut().min() else { return };
            least.0 += 1;
            let key = self.keys.key_of(s, &least.1, &edge);
            let h = Hop { from: least.1.clone(), to: edge, key, by_route, idle_since: None };
            added(&mut self.index, &mut self.tables, s, &p.ingest, &h, true);
            p.edges.push(h);
        }
    }

    /// The `need` least loaded live nodes of `role` not in `have`: fewest hops placed, then the
    /// lower outbound bandwidth, then fewer connections (both from the last heartbeat), then
    /// the id. `only`: that node alone is a candidate. `last_run`: (stream, from): the nodes
    /// that had a hop of it from there in the last run of the master come first.
    fn pick<'a>(
        &'a self,
        s: &str,
        role: Role,
        need: usize,
        have: &[Hop],
        only: Option<&str>,
        last_run: Option<(&str, &str)>,
    ) -> Vec<String> {
        if need == 0 {
            return Vec::new();
        }
        // One candidate (a node that joined) is looked for in the stream's hops, not a set
        // made of them: a join offered to 1,000 streams fanned out to 1,000 relays.
        let taken: HashSet<&str> =
            if only.is_some() { HashSet::new() } else { have.iter().map(|h| h.to.as_str()).collect() };
        let on = |id: &str| match only {
            // On a hop of `s` only if it takes part in `s` (mostly not: it just joined).
            Some(_) => {
                self.index.part.get(id).is_some_and(|set| set.contains(s)) && have.iter().any(|h| h.to == id)
            }
            None => taken.contains(id),
        };
        let fits = |n: &&Node| is_candidate(n) && n.role == role && !on(n.node_id.as_str());
        let had = |n: &Node| last_run.is_some_and(|(s, from)| self.keys.had(s, from, &n.node_id));
        let key = |n: &'a Node| {
            (!had(n), self.index.load(&n.node_id), n.load.out_kbps, n.load.connections, n.node_id.as_str())
        };
        let mut c: Vec<_> = match only {
            Some(id) => self.nodes.get(id).filter(fits).map(key).into_iter().collect(),
            None => self.nodes.values().filter(fits).map(key).collect(),
        };
        if c.len() > need {
            c.select_nth_unstable(need - 1);
            c.truncate(need);
        }
        c.sort_unstable();
        c.into_iter().map(|k| k.4.to_string()).collect()
    }

    /// The indexes recomputed from the placements (tests check the kept ones against these).
    #[cfg(test)]
    pub(super) fn index_from_scratch(&self) -> (Streams, HashMap<String, usize>) {
        let mut part = Streams::new();
        let mut load: HashMap<String, usize> = HashMap::new();
        for (s, p) in &self.streams {
            part.entry(p.ingest.clone()).or_default().insert(s.clone());
            for h in p.roots.iter().chain(&p.edges) {
                part.entry(h.to.clone()).or_default().insert(s.clone());
                part.entry(h.from.clone()).or_default().insert(s.clone());
                *load.entry(h.to.clone()).or_default() += 1;
            }
            for h in &p.edges {
                *load.entry(h.from.clone()).or_default() += 1;
            }
        }
        (part, load)
    }

    #[cfg(test)]
    pub(super) fn index_kept(&self) -> (&Streams, &HashMap<String, usize>) {
        (&self.index.part, &self.index.load)
    }

    /// The route-added edges, recomputed and as kept.
    #[cfg(test)]
    pub(super) fn routed(&self) -> (Streams, &Streams) {
        let mut fresh = Streams::new();
        for (s, p) in &self.streams {
            for h in p.edges.iter().filter(|h| h.by_route) {
                fresh.entry(h.to.clone()).or_default().insert(s.clone());
            }
        }
        (fresh, &self.index.routed)
    }
}
