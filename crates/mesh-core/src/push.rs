//! Which targets a node pushes a stream to, and the URL of each push.

use crate::role::Role;
use crate::table::{EntryKind, Table, Target};

/// Targets for `stream` published on this node (`self_id`, `role`). `source` is the node the
/// stream came from, if it was pushed here. Never this node, never back to the source, one push
/// per target node.
pub fn push_targets<'t>(
    table: &'t Table,
    role: Role,
    self_id: &str,
    stream: &str,
    source: Option<&str>,
) -> Vec<&'t Target> {
    let kind = match role {
        Role::Ingest | Role::Standalone => EntryKind::Ingest,
        Role::RootRelay | Role::Relay => EntryKind::Relay,
    };
    let mut out: Vec<&Target> = Vec::new();
    for t in table.entries(kind, stream) {
        if !pushed_by(role, t.from.as_deref(), self_id)
            || t.node_id == self_id
            || Some(t.node_id.as_str()) == source
            || out.iter().any(|o| o.node_id == t.node_id)
        {
            continue;
        }
        out.push(t);
    }
    out
}

/// Does a node of `role` called `me` push to an entry whose `from` is `from`?
/// Root relays push `relay` entries with no `from` (or naming them); relays only those naming
/// them; `ingest` entries have no `from`.
fn pushed_by(role: Role, from: Option<&str>, me: &str) -> bool {
    match role {
        Role::Ingest | Role::Standalone => true,
        Role::RootRelay => from.is_none_or(|f| f == me),
        Role::Relay => from == Some(me),
    }
}

/// `node_url/stream?node=self&key=node_key`: what the receiver parses (docs/protocol.md).
pub fn push_url(target: &Target, stream: &str, self_id: &str) -> String {
    format!("{}/{stream}?node={self_id}&key={}", target.node_url.trim_end_matches('/'), target.node_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::parse(
            serde_json::json!({
                "ingest": {"cam1": [
                    {"node_id": "root-1", "node_url": "rtmp://r1/relay/", "node_key": "a"},
                    {"node_id": "root-2", "node_url": "rtmp://r2:1936/relay", "node_key": "b"},
                    {"node_id": "root-1", "node_url": "rtmp://r1/relay", "node_key": "dup"},
                    {"node_id": "ingest-1", "node_url": "rtmp://i1/relay", "node_key": "self"}
                ]},
                "relay": {"cam1": [
                    {"node_id": "edge-1", "node_url": "rtmp://e1/relay", "node_key": "c"},
                    {"node_id": "edge-2", "node_url": "rtmp://e2/relay", "node_key": "d", "from": "root-2"},
                    {"node_id": "edge-9", "node_url": "rtmp://e9/relay", "node_key": "e", "from": "edge-1"},
                    {"node_id": "root-1", "node_url": "rtmp://r1/relay", "node_key": "f", "from": "edge-9"}
                ]}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn ids(role: Role, me: &str, source: Option<&str>) -> Vec<String> {
        let t = table();
        push_targets(&t, role, me, "cam1", source).iter().map(|t| t.node_id.clone()).collect()
    }

    #[test]
    fn selection_per_role() {
        assert_eq!(ids(Role::Ingest, "ingest-1", None), ["root-1", "root-2"]);
        assert_eq!(ids(Role::Standalone, "ingest-1", None), ["root-1", "root-2"]);
        assert_eq!(ids(Role::RootRelay, "root-1", Some("ingest-1")), ["edge-1"]);
        assert_eq!(ids(Role::RootRelay, "root-2", Some("ingest-1")), ["edge-1", "edge-2"]);
        assert_eq!(ids(Role::Relay, "edge-1", Some("root-1")), ["edge-9"]);
        assert_eq!(ids(Role::Relay, "edge-2", Some("root-2")), Vec::<String>::new());
        // never back to where it came from
        assert_eq!(ids(Role::Relay, "edge-9", Some("root-1")), Vec::<String>::new());
        assert_eq!(ids(Role::RootRelay, "root-2", Some("edge-1")), ["edge-2"]);
        // unknown stream: nothing
        assert!(push_targets(&table(), Role::Ingest, "ingest-1", "cam2", None).is_empty());
    }

    #[test]
    fn url() {
        let t = table();
        let targets = push_targets(&t, Role::Ingest, "ingest-1", "cam1", None);
        assert_eq!(push_url(targets[0], "cam1", "ingest-1"), "rtmp://r1/relay/cam1?node=ingest-1&key=a");
        assert_eq!(push_url(targets[1], "cam1", "ingest-1"), "rtmp://r2:1936/relay/cam1?node=ingest-1&key=b");
    }
}
