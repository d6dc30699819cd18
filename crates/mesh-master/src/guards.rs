//! What a node request may hold before and while it is served, in all: the bodies read
//! before their signatures can be checked, and each node's long polls (docs/master.md,
//! "Limits").

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::server::MAX_BODY;

/// Bodies up to this size are read at once; larger ones (or of no declared length) take
/// their size from [`LARGE_BODY_BUDGET`] while they are read.
const SMALL_BODY: usize = 64 * 1024;
/// Bytes of large request bodies being read, before their signatures are checked, in all.
const LARGE_BODY_BUDGET: usize = 32 * MAX_BODY;
static LARGE_BODIES: AtomicUsize = AtomicUsize::new(0);

/// A large body's share of [`LARGE_BODY_BUDGET`], given back when dropped.
pub struct LargeBody(usize);

impl LargeBody {
    /// The share for a body of `declared` length (`MAX_BODY` when not declared): none needed
    /// for a small one; `None` when the budget has no room for it.
    pub fn reserve(declared: Option<usize>) -> Option<LargeBody> {
        let n = declared.unwrap_or(MAX_BODY).min(MAX_BODY);
        if n <= SMALL_BODY {
            return Some(LargeBody(0));
        }
        LARGE_BODIES
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= LARGE_BODY_BUDGET).then_some(used + n)
            })
            .ok()
            .map(|_| LargeBody(n))
    }
}

impl Drop for LargeBody {
    fn drop(&mut self) {
        LARGE_BODIES.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// Long polls of one node at once (its own, a resync's fetch, another generation's at a
/// binary upgrade); past it `429 too many long polls`.
const POLLS_PER_NODE: usize = 4;
static POLLS: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

/// A long poll of a node in progress, counted until dropped.
pub struct Polling(String);

impl Polling {
    pub fn start(node: &str) -> Option<Polling> {
        let mut polls = POLLS.lock();
        let n = polls.get_or_insert_with(Default::default).entry(node.to_string()).or_default();
        if *n >= POLLS_PER_NODE {
            return None;
        }
        *n += 1;
        Some(Polling(node.to_string()))
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        let mut polls = POLLS.lock();
        if let Some(m) = polls.as_mut() {
            if let Some(n) = m.get_mut(&self.0) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_share_a_budget_small_ones_never_wait() {
        let held: Vec<_> =
            (0..LARGE_BODY_BUDGET / MAX_BODY).map(|_| LargeBody::reserve(None).unwrap()).collect();
        assert!(LargeBody::reserve(Some(MAX_BODY)).is_none(), "the budget is spent");
        assert!(LargeBody::reserve(Some(SMALL_BODY)).is_some(), "a small body is read all the same");
        drop(held);
        assert!(LargeBody::reserve(Some(2 * SMALL_BODY)).is_some(), "given back");
    }

    #[test]
    fn polls_per_node() {
        let held: Vec<_> = (0..POLLS_PER_NODE).map(|_| Polling::start("guards-a").unwrap()).collect();
        assert!(Polling::start("guards-a").is_none());
        assert!(Polling::start("guards-b").is_some(), "another node is not hurt");
        drop(held);
        assert!(Polling::start("guards-a").is_some());
        assert!(POLLS.lock().as_ref().is_some_and(|m| !m.contains_key("guards-b")), "forgotten at 0");
    }
}
