//! The sessions this worker admitted, so that a new table or role can be applied to them:
//! each is checked again and dropped when the new state refuses it, and publishers' pushes are
//! reconciled. Event loop only (a thread-local), never touched by the background threads.
//!
//! An entry holds its session's handle: it leaves the registry when the session's context is
//! dropped (with the connection), so every handle here is a live session.

use std::cell::RefCell;
use std::collections::HashMap;

use mesh_core::handles::Handle;
use mesh_core::node::Node;
use mesh_core::wire::{Load, StreamStat};
use mesh_core::{Refusal, SessionKind};

use crate::nginx::rtmp::Session;

/// How a session was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// By the table: checked again in full on every change.
    Table,
    /// By the master's auth endpoint, valid until then (unix s): role rules apply at once, the
    /// endpoint is asked again when it runs out (the entry's `recheck` while it is asked).
    Auth { until: u64 },
}

#[derive(Debug)]
pub struct Entry {
    pub s: Session,
    pub kind: SessionKind,
    pub stream: String,
    pub args: String,
    pub via: Via,
    /// The auth question asked about it again, while one is out.
    pub recheck: Option<Handle>,
    /// Byte counters at the last stats tick (for rates).
    last_in: u32,
    last_out: u32,
    pub in_kbps: u64,
    pub out_kbps: u64,
}

impl Entry {
    pub fn new(s: Session, kind: SessionKind, stream: String, args: String, via: Via) -> Entry {
        Entry { s, kind, stream, args, via, recheck: None, last_in: 0, last_out: 0, in_kbps: 0, out_kbps: 0 }
    }

    pub fn is_publisher(&self) -> bool {
        !matches!(self.kind, SessionKind::Viewer)
    }

    /// The node a pushed stream came from.
    pub fn source(&self) -> Option<&str> {
        match &self.kind {
            SessionKind::NodePush { from } => Some(from),
            _ => None,
        }
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
    REGISTRY.with_borrow(|r| r.entries.values().any(|e| e.is_publisher() && e.stream == stream))
}

/// RTMP viewers of `stream` on this worker.
pub fn rtmp_viewers(stream: &str) -> usize {
    REGISTRY.with_borrow(|r| r.entries.values().filter(|e| !e.is_publisher() && e.stream == stream).count())
}

/// What the auth endpoint was asked to admit a session: the action and the credential (the
/// key of a publisher, the token of a viewer).
pub fn credential(e: &Entry) -> (mesh_core::wire::Action, Option<String>) {
    let a = mesh_core::args::MeshArgs::parse(&e.args);
    match e.kind {
        SessionKind::Viewer => (mesh_core::wire::Action::Play, a.token.map(str::to_string)),
        _ => (mesh_core::wire::Action::Publish, a.key.map(str::to_string)),
    }
}

/// The auth question that admitted a session (asked again when its answer runs out).
pub fn question(e: &Entry) -> crate::auth::Question {
    let (action, credential) = credential(e);
    crate::auth::Question::new(action, &e.stream, credential.as_deref())
}

/// What a re-check decided for one session.
pub enum Verdict {
    Keep,
    Drop(Refusal),
}

/// Check a session again against a new node state, in-process.
pub fn recheck(e: &Entry, node: &Node, now: u64) -> Verdict {
    let ctx = node.context(now);
    let role_ok = match e.kind {
        SessionKind::Viewer => node.role.serves_viewers(),
        SessionKind::Broadcaster => node.role.takes_broadcasters(),
        SessionKind::NodePush { .. } => true,
    };
    if !role_ok {
        return Verdict::Drop(Refusal::WrongRole);
    }
    let req = mesh_core::PublishRequest { stream: &e.stream, args: &e.args };
    match (&e.kind, e.via) {
        // A viewer's token is checked again for what a table change can take away (its key,
        // its stream's identity), not for its expiry: it admitted the viewer at the start.
        (SessionKind::Viewer, Via::Table) if node.table.checks_viewer_tokens() => {
            match mesh_core::args::MeshArgs::parse(&e.args).token {
                None => Verdict::Drop(Refusal::NoToken),
                Some(t) => match node.table.verify_viewer(&e.stream, t, now) {
                    Ok(()) | Err(mesh_core::token::TokenError::Expired) => Verdict::Keep,
                    Err(why) => Verdict::Drop(mesh_core::admission::refusal(why)),
                },
            }
        }
        (SessionKind::Viewer, _) => Verdict::Keep,
        (_, Via::Auth { .. }) => Verdict::Keep,
        (_, Via::Table) => match ctx.publish(req) {
            Ok(_) => Verdict::Keep,
            Err(r) => Verdict::Drop(r),
        },
    }
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

/// The live figures of a heartbeat: streams with their sources and viewers, and load.
pub fn figures() -> (Vec<StreamStat>, Load) {
    REGISTRY.with_borrow(|r| {
        // One pass to count viewers per stream: this runs every second on the event loop.
        let mut viewers: HashMap<&str, u64> = HashMap::new();
        let mut load = Load::default();
        for e in r.entries.values() {
            load.in_kbps += e.in_kbps;
            load.out_kbps += e.out_kbps;
            if !e.is_publisher() {
                *viewers.entry(e.stream.as_str()).or_insert(0) += 1;
            }
        }
        let mut streams: Vec<StreamStat> = r
            .entries
            .values()
            .filter(|e| e.is_publisher())
            .map(|e| StreamStat {
                stream: e.stream.clone(),
                source: e.source().unwrap_or("broadcaster").to_string(),
                viewers: viewers.get(e.stream.as_str()).copied().unwrap_or(0),
                in_kbps: e.in_kbps,
            })
            .collect();
        streams.sort_by(|a, b| a.stream.cmp(&b.stream));
        (streams, load)
    })
}

/// Publishers' sessions with their streams (for push figures).
pub fn publishers() -> Vec<(Session, String)> {
    REGISTRY.with_borrow(|r| {
        r.entries.values().filter(|e| e.is_publisher()).map(|e| (e.s, e.stream.clone())).collect()
    })
}
