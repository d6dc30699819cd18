//! The master's memory of request nonces (docs/protocol.md, "Nonces"): a nonce is refused a
//! second time for as long as its request's timestamp is within the signature window
//! ([`MAX_SKEW_S`]), so a recorded request replayed is refused. Only requests whose signature
//! verified are remembered (only a key holder can make the master keep anything), and the
//! memory is bounded: [`PER_NODE`] nonces per node and [`GLOBAL`] in all, past which a request
//! is refused (503 `too many nonces`) until older ones expire.

use std::collections::HashMap;

use mesh_core::sign::MAX_SKEW_S;

/// Nonces kept per node: above what a node can send in a window within its request budgets
/// (crate::rates: about 35,000 at a 1 s heartbeat interval).
pub const PER_NODE: usize = 40_000;
/// Nonces kept in all (about 40 MB).
pub const GLOBAL: usize = 1_000_000;

/// Why a nonce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    /// Seen before, within the window.
    Replay,
    /// The node's share, or the whole memory, is full of nonces still in their window.
    Full,
}

impl std::fmt::Display for NonceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NonceError::Replay => "nonce already used",
            NonceError::Full => "too many nonces",
        })
    }
}

pub struct Nonces {
    /// Node → nonce → until when (unix s) it is remembered.
    by_node: HashMap<String, HashMap<u128, u64>>,
    total: usize,
    per_node: usize,
    global: usize,
}

impl Default for Nonces {
    fn default() -> Nonces {
        Nonces::new(PER_NODE, GLOBAL)
    }
}

impl Nonces {
    pub fn new(per_node: usize, global: usize) -> Nonces {
        Nonces { by_node: HashMap::new(), total: 0, per_node, global }
    }

    /// Take `nonce` of a verified request of `node` signed at `ts`, at time `now`.
    pub fn take(&mut self, node: &str, nonce: u128, ts: u64, now: u64) -> Result<(), NonceError> {
        let until = ts.saturating_add(MAX_SKEW_S);
        if let Some(seen) = self.by_node.get(node).and_then(|m| m.get(&nonce)) {
            if *seen >= now {
                return Err(NonceError::Replay);
            }
        }
        if self.by_node.get(node).is_some_and(|m| m.len() >= self.per_node) {
            self.prune_node(node, now);
            if self.by_node.get(node).is_some_and(|m| m.len() >= self.per_node) {
                return Err(NonceError::Full);
            }
        }
        if self.total >= self.global {
            self.prune(now);
            if self.total >= self.global && !self.make_room(node) {
                return Err(NonceError::Full);
            }
        }
        let m = self.by_node.entry(node.to_string()).or_default();
        if m.insert(nonce, until).is_none() {
            self.total += 1;
        }
        Ok(())
    }

    /// The whole memory is full: a node holding fewer nonces than the one holding most takes
    /// the place of one of that one's (a few keys that fill the memory cannot shut every other
    /// node out; the node losing a nonce is the one sending most). False when `node` is that one.
    fn make_room(&mut self, node: &str) -> bool {
        let mine = self.by_node.get(node).map_or(0, HashMap::len);
        let Some((top, m)) = self.by_node.iter_mut().max_by_key(|(_, m)| m.len()) else { return false };
        if top == node || m.len() <= mine + 1 {
            return false;
        }
        let Some(&victim) = m.keys().next() else { return false };
        m.remove(&victim);
        self.total -= 1;
        true
    }

    fn prune_node(&mut self, node: &str, now: u64) {
        if let Some(m) = self.by_node.get_mut(node) {
            let before = m.len();
            m.retain(|_, until| *until >= now);
            self.total -= before - m.len();
        }
    }

    /// Forget the nonces whose window has passed (the sweep, once a second).
    pub fn prune(&mut self, now: u64) {
        let mut total = 0;
        self.by_node.retain(|_, m| {
            m.retain(|_, until| *until >= now);
            total += m.len();
            !m.is_empty()
        });
        self.total = total;
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_taken_once_within_its_window() {
        let mut n = Nonces::default();
        assert_eq!(n.take("a", 1, 1000, 1000), Ok(()));
        assert_eq!(n.take("a", 1, 1000, 1000), Err(NonceError::Replay));
        assert_eq!(n.take("a", 1, 1000, 1000 + MAX_SKEW_S), Err(NonceError::Replay), "to the window's end");
        assert_eq!(n.take("b", 1, 1000, 1000), Ok(()), "per node");
        // Past the window the request is refused for its timestamp anyway; the memory lets go.
        n.prune(1001 + MAX_SKEW_S);
        assert!(n.is_empty());
        // A timestamp ahead of the clock is remembered until its own window ends.
        assert_eq!(n.take("a", 2, 1300, 1000), Ok(()));
        n.prune(1000 + MAX_SKEW_S + 1);
        assert_eq!(n.take("a", 2, 1300, 1000 + MAX_SKEW_S + 1), Err(NonceError::Replay));
    }

    /// The nonce is taken before the rate budget: 25 node keys sending 40,000 signed requests
    /// each within the window (refused 429 past their budgets, their nonces kept all the same)
    /// filled the 1,000,000, and every other node got `503 too many nonces` for up to 300 s.
    #[test]
    fn a_few_keys_cannot_fill_the_memory_for_every_other_node() {
        let mut n = Nonces::default();
        for node in 0..25 {
            for i in 0..PER_NODE as u128 {
                let _ = n.take(&format!("thief-{node}"), i, 1000, 1000);
            }
        }
        assert_eq!(n.take("honest", 1, 1000, 1000), Ok(()), "a node with no nonce kept is not refused");
    }

    #[test]
    fn bounded_per_node_and_in_all() {
        let mut n = Nonces::new(3, 5);
        for i in 0..3 {
            assert_eq!(n.take("a", i, 1000, 1000), Ok(()));
        }
        assert_eq!(n.take("a", 9, 1000, 1000), Err(NonceError::Full), "the node's share");
        assert_eq!(n.take("b", 1, 1000, 1000), Ok(()), "another node is not hurt");
        assert_eq!(n.take("b", 2, 1000, 1000), Ok(()));
        // The whole memory full: a node with fewer takes the place of one of the top holder's.
        assert_eq!(n.take("c", 1, 1000, 1000), Ok(()), "c takes one of a's places");
        assert_eq!(n.len(), 5);
        assert_eq!(n.take("b", 3, 1000, 1000), Err(NonceError::Full), "b holds as many as a, now");
        assert_eq!(n.take("a", 8, 1000, 1000), Err(NonceError::Full), "the top holder is refused");
        // Expired ones make room at once, without waiting for the sweep.
        assert_eq!(n.take("a", 9, 1400, 1000 + MAX_SKEW_S + 1), Ok(()));
        assert_eq!(n.take("d", 1, 1400, 1400), Ok(()));
        assert_eq!(n.len(), 2, "the full memory let the expired go at once");
        n.prune(1400);
        assert_eq!(n.len(), 2);
    }
}
