//! Every node's table, kept up to date by what changed: the placement marks the (stream, node)
//! pairs whose entries may differ, a node whose role changed (or a new one) gets its shared
//! parts anew, and a change of the shared parts (broadcaster keys, viewer keys, identities)
//! reaches every table. A table that changed takes the next version; one that did not keeps
//! its own. Documents are shared (`Arc`), so a long poll takes one under the lock and
//! serializes it after.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use mesh_core::role::Role;
use mesh_core::viewer::ViewerKey;

use super::table_json::{Cached, Entries, EntryJson};
use super::{Hop, Mesh};

/// One node's table as sent (the protocol's shape), without its version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableDoc {
    pub role: Option<Role>,
    pub ingest: BTreeMap<Arc<str>, Entries>,
    pub relay: BTreeMap<Arc<str>, Entries>,
    /// Shared by every ingest node's table.
    pub publish: Arc<Cached<BTreeMap<String, PublishKey>>>,
    /// Nodes that serve viewers: the keys, the lifetime and every stream's identity (shared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer_keys: Option<Arc<Vec<ViewerKey>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_token_ttl_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<Arc<Cached<BTreeMap<String, StreamDoc>>>>,
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
    #[serde(skip)]
    pub json: EntryJson,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishKey {
    pub key_sha256: String,
}

#[derive(Debug, Default)]
pub(super) struct Tables {
    docs: HashMap<String, (u64, Arc<TableDoc>)>,
    /// stream → the nodes whose entries for it may have changed.
    pairs: BTreeMap<String, BTreeSet<String>>,
    /// Nodes whose role and shared parts are set anew (new, or another role).
    pub(super) nodes: BTreeSet<String>,
    /// The shared parts changed: every table takes them.
    pub(super) shared: bool,
    /// The counter jumped: every table takes a version past it.
    pub(super) renumber: bool,
    /// Nodes whose table took a new version since the last [`Mesh::take_changed`].
    pub(super) changed: BTreeSet<String>,
    /// hop key → its entry, without `from` and with it ([`Mesh::entry`]).
    entries: RefCell<[HashMap<String, Arc<Entry>>; 2]>,
    /// More entries than this: those of hops that are gone are forgotten.
    entries_limit: usize,
    /// stream → node → the edges that came or went at either end, in order: a root relay's
    /// out-list and a relay's own entries are patched by them, not rebuilt (a relay joining 1,000 streams fanned out to 1,000
    /// relays adds one entry to a list of 1,000 per stream, bench/README.md 3d).
    outs: HashMap<String, HashMap<String, Vec<Out>>>,
}

/// A change to a node's edges of one stream (a root relay's out-list, a relay's own).
#[derive(Debug)]
pub(super) enum Out {
    /// An edge fed by it, pushed last (`Placement::edges` order).
    Add(Hop),
    /// The edge with this key, to this node, went away.
    Remove { key: String, to: String },
}

impl Out {
    fn key(&self) -> &str {
        match self {
            Out::Add(h) => &h.key,
            Out::Remove { key, .. } => key,
        }
    }
}

/// More changes than this to one out-list: it is rebuilt whole.
const PATCH_MAX: usize = 32;

impl Tables {
    pub(super) fn touch(&mut self, s: &str, id: &str) {
        if let Some(set) = self.pairs.get_mut(s) {
            if !set.contains(id) {
                set.insert(id.to_string());
            }
        } else {
            self.pairs.insert(s.to_string(), BTreeSet::from([id.to_string()]));
        }
    }

    /// Node `id`'s edges of stream `s` changed by `out` (and nothing else of its entries for
    /// `s`, else [`Tables::touch`]).
    pub(super) fn touch_out(&mut self, s: &str, id: &str, out: Out) {
        let per = match self.outs.get_mut(s) {
            Some(per) => per,
            None => self.outs.entry(s.to_string()).or_default(),
        };
        match per.get_mut(id) {
            Some(v) => v.push(out),
            None => {
                per.insert(id.to_string(), vec![out]);
            }
        }
    }

    pub(super) fn version(&self, id: &str) -> u64 {
        self.docs.get(id).map_or(0, |(v, _)| *v)
    }

    /// A node left the mesh: its table goes.
    pub(super) fn forget(&mut self, id: &str) {
        // Changed: what it was told goes too (crate::published).
        self.changed.insert(id.to_string());
        self.docs.remove(id);
        self.nodes.remove(id);
        for set in self.pairs.values_mut() {
            set.remove(id);
        }
        for per in self.outs.values_mut() {
            per.remove(id);
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<(u64, Arc<TableDoc>)> {
        self.docs.get(id).map(|(v, d)| (*v, d.clone()))
    }
}

/// At most this many nodes asked about one stream: their hops are found by comparison.
const SMALL: usize = 8;

/// A node's entries for one stream: under `ingest` and under `relay`.
type Slot = (Option<Vec<Arc<Entry>>>, Option<Vec<Arc<Entry>>>);

impl Mesh {
    /// Bring the tables up to date with what changed; a table that changed takes the next
    /// version.
    pub(super) fn write_tables(&mut self) {
        let mut changed = BTreeSet::new();
        let base: Vec<String> = if std::mem::take(&mut self.tables.shared) {
            self.tables.nodes.clear();
            self.nodes.keys().cloned().collect()
        } else {
            std::mem::take(&mut self.tables.nodes).into_iter().collect()
        };
        for id in base {
            if self.write_base(&id) {
                changed.insert(id);
            }
        }
        let mut pairs = std::mem::take(&mut self.tables.pairs);
        for (s, per) in std::mem::take(&mut self.tables.outs) {
            for (id, outs) in per {
                if pairs.get(&s).is_some_and(|ids| ids.contains(&id)) {
                    continue; // rebuilt whole anyway
                }
                match (outs.len() <= PATCH_MAX).then(|| self.patch_out(&s, &id, outs)).flatten() {
                    Some(true) => {
                        changed.insert(id);
                    }
                    Some(false) => {}
                    None => {
                        pairs.entry(s.clone()).or_default().insert(id);
                    }
                }
            }
        }
        for (s, ids) in pairs {
            for (id, slot) in self.slots(&s, ids) {
                if self.write_entries(&s, &id, slot) {
                    changed.insert(id);
                }
            }
        }
        self.forget_old_entries();
        if std::mem::take(&mut self.tables.renumber) {
            changed.extend(self.tables.docs.keys().cloned());
        }
        for id in changed {
            if let Some((v, _)) = self.tables.docs.get_mut(&id) {
                self.version = self.version.saturating_add(1);
                *v = self.version;
                self.tables.changed.insert(id);
            }
        }
    }

    /// A node's role and the shared parts its role carries. Returns whether they changed.
    fn write_base(&mut self, id: &str) -> bool {
        let Some(node) = self.nodes.get(id) else { return false };
        let role = node.role;
        let takes_keys = matches!(role, Role::Ingest | Role::Standalone);
        let serves = matches!(role, Role::Relay | Role::Standalone);
        let publish = if takes_keys { self.publish_doc.clone() } else { Arc::default() };
        let viewer_keys = serves.then(|| self.viewer_keys.clone());
        let ttl = serves.then_some(self.cfg.max_token_ttl_s);
        let streams = serves.then(|| self.streams_doc.clone());
        let (_, doc) = self.tables.docs.entry(id.to_string()).or_default();
        let same = doc.role == Some(role)
            && doc.publish == publish
            && doc.viewer_keys == viewer_keys
            && doc.max_token_ttl_s == ttl
            && doc.streams == streams;
        if same {
            return false;
        }
        let d = Arc::make_mut(doc);
        d.role = Some(role);
        d.publish = publish;
        d.viewer_keys = viewer_keys;
        d.max_token_ttl_s = ttl;
        d.streams = streams;
        true
    }

    /// A node's entries for one stream. Returns whether they changed.
    fn write_entries(&mut self, s: &str, id: &str, (ingest, relay): Slot) -> bool {
        let created = !self.tables.docs.contains_key(id) && self.write_base(id);
        let Some((_, doc)) = self.tables.docs.get_mut(id) else { return false };
        let same = |kept: Option<&Entries>, v: &Option<Vec<Arc<Entry>>>| kept.map(|e| &***e) == v.as_ref();
        if same(doc.ingest.get(s), &ingest) && same(doc.relay.get(s), &relay) {
            return created;
        }
        // Copies the document's maps when a long poll holds it (pointers, not entries).
        let d = Arc::make_mut(doc);
        for (map, v) in [(&mut d.ingest, ingest), (&mut d.relay, relay)] {
            match v {
                Some(v) => map.insert(Arc::from(s), Arc::new(Cached::new(v))),
                None => map.remove(s),
            };
        }
        true
    }

    /// Node `id`'s edges of stream `s` (a root relay's out-list, a relay's own edges: its
    /// `relay` entries for `s`) patched by `outs`. Returns whether they changed, or None when
    /// they cannot be patched (another role, or a root relay that is not one of `s` in its kept
    /// table): then they are rebuilt whole.
    fn patch_out(&mut self, s: &str, id: &str, outs: Vec<Out>) -> Option<bool> {
        let role = self.nodes.get(id)?.role;
        if !self.streams.contains_key(s) {
            return None;
        }
        let (_, doc) = self.tables.docs.get(id)?;
        match role {
            Role::RootRelay => doc.ingest.get(s).map(drop)?,
            Role::Relay => {}
            _ => return None,
        }
        // An edge that came and went in the same change may leave the list as it was: compared.
        let mut seen = HashSet::new();
        let back = outs.iter().any(|o| !seen.insert(o.key()));
        if back {
            let old = doc.relay.get(s);
            let mut v: Vec<Arc<Entry>> = old.map(|e| (***e).clone()).unwrap_or_default();
            self.apply(&mut v, outs);
            if old.map_or(v.is_empty(), |e| ***e == v) {
                return Some(false);
            }
            self.set_relay(s, id, v);
            return Some(true);
        }
        // Each edge came or went once: the list changed. Taken, not copied, when no older
        // version holds it.
        let (_, doc) = self.tables.docs.get_mut(id)?;
        let kept = Arc::make_mut(doc).relay.remove(s);
        let mut v = kept
            .map(|e| Arc::try_unwrap(e).map_or_else(|e| (**e).clone(), Cached::into_inner))
            .unwrap_or_default();
        self.apply(&mut v, outs);
        self.set_relay(s, id, v);
        Some(true)
    }

    fn apply(&self, v: &mut Vec<Arc<Entry>>, outs: Vec<Out>) {
        for out in outs {
            match out {
                Out::Add(h) => v.push(self.entry(&h, true)),
                Out::Remove { key, to } => v.retain(|e| e.node_key != key || e.node_id != to),
            }
        }
    }

    fn set_relay(&mut self, s: &str, id: &str, v: Vec<Arc<Entry>>) {
        let Some((_, doc)) = self.tables.docs.get_mut(id) else { return };
        let d = Arc::make_mut(doc);
        if v.is_empty() {
            d.relay.remove(s);
        } else {
            d.relay.insert(Arc::from(s), Arc::new(Cached::new(v)));
        }
    }

    /// What the tables of `ids` say of one stream, from one pass over the stream's hops.
    fn slots(&self, s: &str, ids: BTreeSet<String>) -> Vec<(String, Slot)> {
        let Some(p) = self.streams.get(s) else {
            // Gone: no table says anything of it.
            return ids.into_iter().map(|id| (id, (None, None))).collect();
        };
        let role = |id: &str| self.nodes.get(id).map(|n| n.role);
        let mut here: HashMap<&str, Vec<&Hop>> = HashMap::new();
        let mut out: HashMap<&str, Vec<&Hop>> = HashMap::new();
        // Only the hops of the nodes asked about: a stream fanned out to 1,000 relays, of
        // which one changed, is one pass of comparisons, not a map of 1,000 hops.
        let asked: Option<Vec<&str>> = (ids.len() <= SMALL).then(|| ids.iter().map(String::as_str).collect());
        let wanted = |id: &str| asked.as_ref().is_none_or(|a| a.contains(&id));
        for h in p.roots.iter().filter(|h| wanted(&h.to)) {
            here.entry(h.to.as_str()).or_default().push(h);
        }
        for h in &p.edges {
            if wanted(&h.from) {
                out.entry(h.from.as_str()).or_default().push(h);
            }
            if wanted(&h.to) {
                here.entry(h.to.as_str()).or_default().push(h);
            }
        }
        let entries = |hops: Option<&Vec<&Hop>>, with_from: bool| -> Option<Vec<Arc<Entry>>> {
            let v: Vec<Arc<Entry>> = hops.into_iter().flatten().map(|h| self.entry(h, with_from)).collect();
            (!v.is_empty()).then_some(v)
        };
        ids.into_iter()
            .map(|id| {
                let slot = match role(&id) {
                    Some(Role::Ingest | Role::Standalone) if p.ingest == id => {
                        (Some(p.roots.iter().map(|h| self.entry(h, false)).collect()), None)
                    }
                    Some(Role::RootRelay) => match entries(here.get(id.as_str()), false) {
                        Some(h) => (Some(h), entries(out.get(id.as_str()), true)),
                        None => (None, None),
                    },
                    Some(Role::Relay) => (None, entries(here.get(id.as_str()), true)),
                    _ => (None, None),
                };
                (id, slot)
            })
            .collect()
    }

    /// A hop's entry, made once per hop (its key is its own: a hop that moves, or whose
    /// node's URL changes, is a new hop) and shared by every list and version that has it.
    fn entry(&self, h: &Hop, with_from: bool) -> Arc<Entry> {
        let url = self.nodes.get(&h.to).map_or("", |n| n.node_url.as_str());
        let mut made = self.tables.entries.borrow_mut();
        let side = &mut made[usize::from(with_from)];
        let same = |e: &&Arc<Entry>| {
            e.node_id == h.to && e.node_url == url && (!with_from || e.from.as_ref() == Some(&h.from))
        };
        if let Some(e) = side.get(&h.key).filter(same) {
            return e.clone();
        }
        let e = Arc::new(self.new_entry(h, with_from));
        side.insert(h.key.clone(), e.clone());
        e
    }

    /// Entries of hops that are gone are forgotten once they are as many as the rest.
    pub(super) fn forget_old_entries(&mut self) {
        let made = self.tables.entries.get_mut();
        let n = made[0].len() + made[1].len();
        if n <= self.tables.entries_limit {
            return;
        }
        let live: std::collections::HashSet<&str> = self
            .streams
            .values()
            .flat_map(|p| p.roots.iter().chain(&p.edges))
            .map(|h| h.key.as_str())
            .collect();
        for side in made.iter_mut() {
            side.retain(|k, _| live.contains(k.as_str()));
        }
        self.tables.entries_limit = (2 * (made[0].len() + made[1].len())).max(1024);
    }

    fn new_entry(&self, h: &Hop, with_from: bool) -> Entry {
        Entry {
            node_id: h.to.clone(),
            node_url: self.nodes.get(&h.to).map(|n| n.node_url.clone()).unwrap_or_default(),
            node_key: h.key.clone(),
            from: with_from.then(|| h.from.clone()),
            json: EntryJson::default(),
        }
    }

    /// What a node's table says of one stream, node by node: the tests' reference for
    /// [`Mesh::slots`], written apart from it.
    #[cfg(test)]
    fn slot(&self, s: &str, id: &str) -> Slot {
        let (Some(p), Some(node)) = (self.streams.get(s), self.nodes.get(id)) else { return (None, None) };
        let entry = |h: &Hop, with_from: bool| Arc::new(self.new_entry(h, with_from));
        let some = |v: Vec<Arc<Entry>>| (!v.is_empty()).then_some(v);
        match node.role {
            Role::Ingest | Role::Standalone if p.ingest == id => {
                (Some(p.roots.iter().map(|h| entry(h, false)).collect()), None)
            }
            Role::Ingest | Role::Standalone => (None, None),
            Role::RootRelay => {
                let here = some(p.roots.iter().filter(|h| h.to == id).map(|h| entry(h, false)).collect());
                match here {
                    Some(here) => {
                        let out = p.edges.iter().filter(|h| h.from == id).map(|h| entry(h, true)).collect();
                        (Some(here), some(out))
                    }
                    None => (None, None),
                }
            }
            Role::Relay => {
                (None, some(p.edges.iter().filter(|h| h.to == id).map(|h| entry(h, true)).collect()))
            }
        }
    }

    /// Every node's table rendered from nothing (tests check the kept ones against these).
    #[cfg(test)]
    pub(super) fn tables_from_scratch(&self) -> HashMap<String, TableDoc> {
        let mut out = HashMap::new();
        for (id, node) in &self.nodes {
            let mut t = TableDoc { role: Some(node.role), ..TableDoc::default() };
            if matches!(node.role, Role::Ingest | Role::Standalone) {
                t.publish = self.publish_doc.clone();
            }
            if matches!(node.role, Role::Relay | Role::Standalone) {
                t.viewer_keys = Some(self.viewer_keys.clone());
                t.max_token_ttl_s = Some(self.cfg.max_token_ttl_s);
                t.streams = Some(self.streams_doc.clone());
            }
            for s in self.streams.keys() {
                let (ingest, relay) = self.slot(s, id);
                if let Some(v) = ingest {
                    t.ingest.insert(Arc::from(s.as_str()), Arc::new(Cached::new(v)));
                }
                if let Some(v) = relay {
                    t.relay.insert(Arc::from(s.as_str()), Arc::new(Cached::new(v)));
                }
            }
            out.insert(id.clone(), t);
        }
        out
    }

    /// The kept tables; each one's JSON checked against its document's `Serialize`.
    #[cfg(test)]
    pub(super) fn tables_kept(&self) -> HashMap<String, TableDoc> {
        for (id, (v, d)) in &self.tables.docs {
            let (_, json) = super::table_json(*v, d).expect("a table");
            assert_eq!(
                String::from_utf8_lossy(&json),
                String::from_utf8_lossy(&super::table_json::table_json_by_serde(*v, d)),
                "{id}'s JSON"
            );
        }
        self.tables.docs.iter().map(|(id, (_, d))| (id.clone(), (**d).clone())).collect()
    }
}
