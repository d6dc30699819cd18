//! Viewer tokens the table's keys verified, remembered per worker so that a player's every
//! playlist and segment request does not verify its token again (an HMAC, a hex decode and the
//! table's rules each time). An entry holds for the node snapshot it was verified under (a new
//! table or role forgets them all: keys rotate, streams change identity), for its stream only,
//! and only until [`mesh_core::Table::viewer_good_until`] (the token's expiry, or its key's end
//! of grace): after that the token is checked in full again, and refused. Found by a keyed hash
//! (the process's random SipHash keys) of stream and token, then the token compared in constant
//! time. Bounded: [`MAX`] entries; past it, the expired go, and if none has, all of them.
//! Refusals are never remembered.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Weak};

use mesh_core::node::Node;
use mesh_core::token::ct_eq;

/// Most tokens remembered per worker.
pub const MAX: usize = 4096;

struct Entry {
    stream: Box<str>,
    token: Box<str>,
    until: u64,
}

struct Cache {
    /// The snapshot the entries were verified under. A `Weak` keeps its allocation (not the
    /// table) alive, so that no later snapshot can be at the same address.
    node: Weak<Node>,
    keys: RandomState,
    map: HashMap<u64, Entry>,
}

thread_local! {
    static CACHE: RefCell<Cache> =
        RefCell::new(Cache { node: Weak::new(), keys: RandomState::new(), map: HashMap::new() });
}

impl Cache {
    /// The entries, emptied first if they belong to another snapshot than `node`.
    fn of(&mut self, node: &Arc<Node>) -> &mut HashMap<u64, Entry> {
        if !std::ptr::eq(self.node.as_ptr(), Arc::as_ptr(node)) {
            self.map.clear();
            self.node = Arc::downgrade(node);
        }
        &mut self.map
    }

    fn key(&self, stream: &str, token: &str) -> u64 {
        self.keys.hash_one((stream, token))
    }
}

/// Was `token` verified for `stream` under `node`, and is it still good at `now`?
pub fn holds(node: &Arc<Node>, stream: &str, token: &str, now: u64) -> bool {
    CACHE.with_borrow_mut(|c| {
        let key = c.key(stream, token);
        let map = c.of(node);
        match map.get(&key) {
            Some(e) if *e.stream == *stream && ct_eq(e.token.as_bytes(), token.as_bytes()) => {
                if now <= e.until {
                    return true;
                }
                map.remove(&key);
                false
            }
            _ => false,
        }
    })
}

/// `token` was just verified for `stream` under `node` by the table's keys: remember it.
pub fn remember(node: &Arc<Node>, stream: &str, token: &str, now: u64) {
    let Some(until) = node.table.viewer_good_until(token) else { return };
    if until < now {
        return;
    }
    CACHE.with_borrow_mut(|c| {
        let key = c.key(stream, token);
        let map = c.of(node);
        if map.len() >= MAX && !map.contains_key(&key) {
            map.retain(|_, e| now <= e.until);
            if map.len() >= MAX {
                map.clear();
            }
        }
        map.insert(key, Entry { stream: stream.into(), token: token.into(), until });
    })
}
