//! A node's state as one snapshot: id, role, table, and the dialable form of every target URL.
//! Swapped whole when the table or the role changes.

use std::collections::HashMap;

use crate::admission::Context;
use crate::push::{push_targets, push_url};
use crate::role::Role;
use crate::table::{Table, Target};

#[derive(Debug, Clone)]
pub struct Node {
    pub node_id: String,
    pub role: Role,
    pub table: Table,
    /// `node_url` → the same URL with its host resolved to an IP, made when the table was
    /// loaded (never on the event loop). A URL missing here did not resolve.
    pub dial: HashMap<String, String>,
}

/// One push the node should run: the target's id and, if its host resolved, the URL to publish
/// to (with `?node=&key=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPush {
    pub node_id: String,
    pub url: Option<String>,
}

impl Node {
    /// The embedded default: a standalone node with an empty table.
    pub fn standalone() -> Node {
        Node {
            node_id: "standalone".into(),
            role: Role::Standalone,
            table: Table::default(),
            dial: HashMap::new(),
        }
    }

    /// The same node with another role (the master said so).
    pub fn with_role(&self, role: Role) -> Node {
        Node { role, ..self.clone() }
    }

    /// Admission context at time `now`.
    pub fn context(&self, now: u64) -> Context<'_> {
        Context { table: &self.table, role: self.role, node_id: &self.node_id, now }
    }

    /// The pushes for `stream` published here (coming from `source`, if pushed).
    pub fn plan_pushes(&self, stream: &str, source: Option<&str>) -> Vec<PlannedPush> {
        push_targets(&self.table, self.role, &self.node_id, stream, source)
            .into_iter()
            .map(|t| PlannedPush {
                node_id: t.node_id.clone(),
                url: self.dial.get(&t.node_url).map(|dial| {
                    let via = Target { node_url: dial.clone(), ..t.clone() };
                    push_url(&via, stream, &self.node_id)
                }),
            })
            .collect()
    }

    /// Target URLs this node may push to (the ones worth resolving).
    pub fn target_urls(table: &Table) -> impl Iterator<Item = &String> {
        table.ingest.values().chain(table.relay.values()).flatten().map(|t| &t.node_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_use_the_resolved_url() {
        let table = Table::parse(
            br#"{"ingest": {"cam1": [
                {"node_id": "root-1", "node_url": "rtmp://root-1.mesh:1936/relay", "node_key": "a"},
                {"node_id": "root-2", "node_url": "rtmp://nowhere/relay", "node_key": "b"}]}}"#,
        )
        .unwrap();
        let mut dial = HashMap::new();
        dial.insert("rtmp://root-1.mesh:1936/relay".to_string(), "rtmp://10.1.2.3:1936/relay".to_string());
        let node = Node { node_id: "ingest-1".into(), role: Role::Ingest, table, dial };
        assert_eq!(
            node.plan_pushes("cam1", None),
            vec![
                PlannedPush {
                    node_id: "root-1".into(),
                    url: Some("rtmp://10.1.2.3:1936/relay/cam1?node=ingest-1&key=a".into())
                },
                PlannedPush { node_id: "root-2".into(), url: None },
            ]
        );
        assert!(node.with_role(Role::Relay).plan_pushes("cam1", None).is_empty());
        assert_eq!(Node::target_urls(&node.table).count(), 2);
    }
}
