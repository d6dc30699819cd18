//! The sessions this worker admitted, so that a new table or role can be applied to them:
//! each is checked again and dropped when the new state refuses it, and publishers' pushes are
//! reconciled. Event loop only (a thread-local), never touched by the background threads.
//!
//! An entry holds its session's handle: it leaves the registry when the session's context is
//! dropped (with the connection), so every handle here is a live session.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use mesh_core::admission::Admitted;
use mesh_core::handles::Handle;
use mesh_core::wire::{Load, StreamStat};

use crate::nginx::rtmp::Session;

#[derive(Debug)]
pub struct Entry {
    pub s: Session,
    /// What the session is, how it was let in (mesh-core re-checks it).
    pub admitted: Admitted,
    /// The auth question asked about it again, while one is out.
    pub recheck: Option<Handle>,
    /// Byte counters at the last stats tick (for rates).
    last_in: u32,
    last_out: u32,
    pub in_kbps: u64,
    pub out_kbps: u64,
}

impl Entry {
    pub fn new(s: Session, admitted: Admitted) -> Entry {
        Entry { s, admitted, recheck: None, last_in: 0, last_out: 0, in_kbps: 0, out_kbps: 0 }
    }

    pub fn stream(&self) -> &str {
        &self.admitted.stream
    }

    pub fn is_publisher(&self) -> bool {
        self.admitted.is_publisher()
    }

    /// The node a pushed stream came from.
    pub fn source(&self) -> Option<&str> {
        self.admitted.source()
    }
}

#[derive(Default)]
struct Registry {
    next: u64,
    entries: HashMap<u64, Entry>,
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

/// Register an admitted session; the id goes in its ctx, whose drop calls [`remove`].
pub fn add(e: Entry) -> u64 {
    REGISTRY.with_borrow_mut(|r| {
        r.next += 1;
        let id = r.next;
        r.entries.insert(id, e);
        id
    })
}

/// The session left (or its admission ended): its entry goes, and a re-check question still
/// out is taken back.
pub fn remove(id: u64) {
    // try_with: a ctx may be dropped while the thread's locals are being torn down.
    let e = REGISTRY.try_with(|r| r.borrow_mut().entries.remove(&id)).ok().flatten();
    if let Some(h) = e.and_then(|e| e.recheck) {
        crate::auth::cancel(h);
    }
}

/// Run `f` on an entry.
pub fn with<R>(id: u64, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
    REGISTRY.with_borrow_mut(|r| r.entries.get_mut(&id).map(f))
}

/// Is `stream` published on this worker?
pub fn has_publisher(stream: &str) -> bool {
    REGISTRY.with_borrow(|r| r.entries.values().any(|e| e.is_publisher() && e.stream() == stream))
}

/// Streams RTMP viewers play on this worker with nothing published or pushed into it here:
/// they wait for a feed.
pub fn starved() -> Vec<String> {
    REGISTRY.with_borrow(|r| {
        let fed: HashSet<&str> = r.entries.values().filter(|e| e.is_publisher()).map(Entry::stream).collect();
        let mut out: Vec<String> = r
            .entries
            .values()
            .filter(|e| !e.is_publisher() && !fed.contains(e.stream()))
            .map(|e| e.stream().to_string())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    })
}

/// RTMP viewers of `stream` on this worker.
pub fn rtmp_viewers(stream: &str) -> usize {
    REGISTRY.with_borrow(|r| r.entries.values().filter(|e| !e.is_publisher() && e.stream() == stream).count())
}

/// Ids and sessions of every entry, with `f`'s verdict for each (collected first, so that
/// acting on a verdict never runs inside the registry's borrow).
pub fn sweep<T>(mut f: impl FnMut(&Entry) -> T) -> Vec<(u64, Session, T)> {
    REGISTRY.with_borrow(|r| r.entries.iter().map(|(id, e)| (*id, e.s, f(e))).collect())
}

/// Update every entry's rates from its session's byte counters (`secs` since the last tick).
pub fn tick_rates(secs: u64) {
    REGISTRY.with_borrow_mut(|r| {
        for e in r.entries.values_mut() {
            let (i, o) = e.s.bytes();
            let rate = |now: u32, last: u32| u64::from(now.wrapping_sub(last)) * 8 / 1000 / secs.max(1);
            e.in_kbps = rate(i, e.last_in);
            e.out_kbps = rate(o, e.last_out);
            e.last_in = i;
            e.last_out = o;
        }
    })
}

/// This worker's live figures: the streams published into it (with this worker's viewers),
/// its viewers by stream (of its own streams and of its copies), and its load.
pub fn figures() -> (Vec<StreamStat>, BTreeMap<String, u64>, Load) {
    REGISTRY.with_borrow(|r| {
        // One pass to count viewers per stream: this runs every second on the event loop.
        let mut viewers: BTreeMap<String, u64> = BTreeMap::new();
        let mut load = Load::default();
        for e in r.entries.values() {
            // A copy's bytes go between two workers of this node: not the node's load.
            if e.admitted.is_copy() {
                continue;
            }
            load.in_kbps += e.in_kbps;
            load.out_kbps += e.out_kbps;
            if !e.is_publisher() {
                *viewers.entry(e.stream().to_string()).or_insert(0) += 1;
            }
        }
        let mut streams: Vec<StreamStat> = r
            .entries
            .values()
            .filter(|e| e.is_publisher() && !e.admitted.is_copy())
            .map(|e| StreamStat {
                stream: e.stream().to_string(),
                source: e.source().unwrap_or("broadcaster").to_string(),
                viewers: viewers.get(e.stream()).copied().unwrap_or(0),
                in_kbps: e.in_kbps,
            })
            .collect();
        streams.sort_by(|a, b| a.stream.cmp(&b.stream));
        (streams, viewers, load)
    })
}

/// Publishers' sessions with their streams (for push figures; copies push nothing).
pub fn publishers() -> Vec<(Session, String)> {
    REGISTRY.with_borrow(|r| {
        r.entries.values().filter(|e| e.is_publisher()).map(|e| (e.s, e.stream().to_string())).collect()
    })
}
