//! Tables and nodes the admission tests share.

use std::collections::HashMap;

use crate::node::Node;
use crate::role::Role;
use crate::table::Table;
use crate::token::key_sha256_hex;

/// Viewer key `k2` (and `k1`, retired at 999), stream `cam1` of identity `gen-2`.
pub const V2_SECRET: &str = "edge-viewer-key-0123456789";
pub const RETIRED_SECRET: &str = "retired-key-0123456789";

/// The table of the rules' tests: `cam1` with broadcaster key `bkey`, an ingest entry for
/// `root-1`, relay entries for `edge-1` and `edge-9` (from `edge-1`); `viewer_secret` "vs" when
/// `with_secret`.
pub fn table(with_secret: bool) -> Table {
    let mut v = serde_json::json!({
        "ingest": {"cam1": [{"node_id": "root-1", "node_url": "rtmp://r1/relay", "node_key": "k-i-r1"}]},
        "relay": {"cam1": [
            {"node_id": "edge-1", "node_url": "rtmp://e1/relay", "node_key": "k-r-e1"},
            {"node_id": "edge-9", "node_url": "rtmp://e9/relay", "node_key": "k-e1-e9", "from": "edge-1"}
        ]},
        "publish": {"cam1": {"key_sha256": key_sha256_hex("bkey")}}
    });
    if with_secret {
        v["viewer_secret"] = "vs".into();
    }
    Table::parse(v.to_string().as_bytes()).unwrap()
}

/// A table with v2 viewer keys; `cam1`'s identity is `id`.
pub fn v2_table(id: &str) -> Table {
    let v = serde_json::json!({
        "viewer_keys": [{"id": "k2", "secret": V2_SECRET}, {"id": "k1", "secret": RETIRED_SECRET, "not_after": 999}],
        "streams": {"cam1": {"id": id}}
    });
    Table::parse(v.to_string().as_bytes()).unwrap()
}

pub fn node(id: &str, role: Role, table: Table) -> Node {
    Node { node_id: id.into(), role, table, dial: HashMap::new() }
}
