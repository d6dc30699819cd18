//! Name resolution of target URLs, done when a table is loaded (blocking: never on the event
//! loop).

use std::collections::HashMap;
use std::net::ToSocketAddrs;

use mesh_core::node::Node;
use mesh_core::table::parse_node_url;
use mesh_core::Table;

/// `node_url` → dialable URL (host replaced by its first address), and the URLs that failed
/// with why.
pub fn resolve_targets(table: &Table) -> (HashMap<String, String>, Vec<(String, String)>) {
    let mut dial = HashMap::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for url in Node::target_urls(table) {
        if dial.contains_key(url) || failed.iter().any(|(u, _)| u == url) {
            continue;
        }
        match resolve_url(url) {
            Ok(d) => {
                dial.insert(url.clone(), d);
            }
            Err(e) => failed.push((url.clone(), e)),
        }
    }
    (dial, failed)
}

fn resolve_url(url: &str) -> Result<String, String> {
    let u = parse_node_url(url)?;
    let mut addrs = (u.host, u.port).to_socket_addrs().map_err(|e| e.to_string())?;
    let addr = addrs.next().ok_or_else(|| "no address".to_string())?;
    Ok(u.with_ip(addr.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_localhost_resolve_without_a_network() {
        let t = Table::parse(
            br#"{"ingest": {"a": [
                {"node_id": "r1", "node_url": "rtmp://127.0.0.1:1936/relay", "node_key": "k"},
                {"node_id": "r2", "node_url": "rtmp://localhost/relay", "node_key": "k"},
                {"node_id": "r3", "node_url": "rtmp://[::1]:7/relay", "node_key": "k"},
                {"node_id": "r4", "node_url": "rtmp://no-such-host.invalid/relay", "node_key": "k"}]}}"#,
        )
        .unwrap();
        let (dial, failed) = resolve_targets(&t);
        assert_eq!(dial["rtmp://127.0.0.1:1936/relay"], "rtmp://127.0.0.1:1936/relay");
        assert!(dial["rtmp://localhost/relay"].ends_with(":1935/relay"), "{dial:?}");
        assert_eq!(dial["rtmp://[::1]:7/relay"], "rtmp://[::1]:7/relay");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "rtmp://no-such-host.invalid/relay");
    }
}
