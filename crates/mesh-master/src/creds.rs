//! Node credentials: each node signs with its own key, derived from the master secret and the
//! node id ([`mesh_core::sign::node_key`]) at the node's key generation, unless the node is
//! revoked. Generations and revocations are kept in the database ([`crate::store`]); the secret
//! never leaves this struct.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::Serialize;

/// What the database says of a node's credential (nothing: generation 0, not revoked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NodeCred {
    pub generation: u64,
    pub revoked: bool,
}

pub struct Creds {
    secret: Vec<u8>,
    nodes: Mutex<HashMap<String, NodeCred>>,
}

impl Creds {
    pub fn new(secret: Vec<u8>, nodes: impl IntoIterator<Item = (String, NodeCred)>) -> Creds {
        Creds { secret, nodes: Mutex::new(nodes.into_iter().collect()) }
    }

    pub fn get(&self, id: &str) -> NodeCred {
        self.nodes.lock().get(id).copied().unwrap_or_default()
    }

    pub fn set(&self, id: &str, c: NodeCred) {
        self.nodes.lock().insert(id.to_string(), c);
    }

    /// The key node `id` signs with now, and its credential.
    pub fn key(&self, id: &str) -> (Vec<u8>, NodeCred) {
        let c = self.get(id);
        (mesh_core::sign::node_key(&self.secret, id, c.generation).into_bytes(), c)
    }

    /// Whether a request signature verifies with the master secret itself: the node was given
    /// the secret (the shared key of protocol v1), not its key.
    pub fn is_the_secret(&self, check: impl FnOnce(&[u8]) -> bool) -> bool {
        check(&self.secret)
    }
}
