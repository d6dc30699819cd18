//! The master's figures in Prometheus' text format (`GET /admin/metrics`, behind the admin
//! token): gauges read from the mesh when asked, counters kept as requests go by.

use parking_lot::Mutex;
use std::collections::BTreeMap;

use mesh_core::status::write_family;

use crate::mesh::Mesh;

/// Counters by name and label set (`action="publish",result="deny"`).
#[derive(Default)]
pub struct Counters {
    by_name: Mutex<BTreeMap<&'static str, BTreeMap<String, u64>>>,
}

/// The counters' help texts; a counter not listed here is not kept.
const HELP: &[(&str, &str)] = &[
    ("mesh_master_announces_total", "Announces taken."),
    ("mesh_master_heartbeats_total", "Heartbeats taken, by node."),
    ("mesh_master_auth_total", "Auth answers, by action and result."),
    ("mesh_master_routes_total", "Route requests, by answer."),
    ("mesh_master_tables_sent_total", "Tables sent to long polls."),
    ("mesh_master_requests_refused_total", "Node requests refused before use, by reason."),
    ("mesh_master_node_deaths_total", "Nodes declared dead after a silence."),
    ("mesh_master_paths_dead_total", "Hops moved: the push to a node that answers the master stalled."),
    ("mesh_master_announces_pending_total", "Announces of nodes without a granted role, answered 403."),
    (
        "mesh_master_role_claims_ignored_total",
        "Heartbeats naming another role than the granted one (taken as the granted one).",
    ),
    ("mesh_master_requests_invalid_total", "Node requests refused with 400 for a bad field, by endpoint."),
    ("mesh_master_requests_limited_total", "Node requests refused with 429 past the node's rate, by class."),
    ("mesh_master_connections_evicted_total", "Idle or unfinished connections closed to make room."),
    ("mesh_master_connections_refused_total", "Connections closed at once: the cap reached, none idle."),
    (
        "mesh_master_tls_handshakes_failed_total",
        "TLS handshakes that failed or did not finish in the header timeout.",
    ),
    ("mesh_master_plain_http_refused_total", "Plain-HTTP requests on the TLS port, answered 400 and closed."),
    ("mesh_master_poll_wakeups_total", "Long polls woken because their node's table changed."),
];

impl Counters {
    pub fn inc(&self, name: &'static str, labels: &str) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &'static str, labels: &str, n: u64) {
        debug_assert!(HELP.iter().any(|(h, _)| *h == name), "{name} has no help text");
        *self.by_name.lock().entry(name).or_default().entry(labels.to_string()).or_default() += n;
    }

    /// One counter's value (tests).
    pub fn get(&self, name: &str, labels: &str) -> u64 {
        self.by_name.lock().get(name).and_then(|m| m.get(labels)).copied().unwrap_or(0)
    }

    fn snapshot(&self) -> BTreeMap<&'static str, BTreeMap<String, u64>> {
        self.by_name.lock().clone()
    }
}

/// Everything, as Prometheus text.
pub fn render(mesh: &Mesh, counters: &Counters) -> String {
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        write_family(&mut o, "", name, kind, help, rows)
    };
    let mut nodes: BTreeMap<(String, bool), u64> = BTreeMap::new();
    for n in mesh.nodes().values() {
        *nodes.entry((n.role.to_string(), n.alive)).or_default() += 1;
    }
    metric(
        "mesh_master_nodes",
        "gauge",
        "Registered nodes, by role and liveness.",
        nodes
            .into_iter()
            .map(|((role, alive), c)| (format!("role=\"{role}\",alive=\"{alive}\""), c.to_string()))
            .collect(),
    );
    metric(
        "mesh_master_nodes_pending",
        "gauge",
        "Nodes that announced without a granted role (waiting for an admin).",
        vec![(String::new(), mesh.pending().len().to_string())],
    );
    metric(
        "mesh_master_streams_live",
        "gauge",
        "Live streams placed.",
        vec![(String::new(), mesh.streams().len().to_string())],
    );
    let (roots, edges) =
        mesh.streams().values().fold((0, 0), |(r, e), p| (r + p.roots.len(), e + p.edges.len()));
    metric(
        "mesh_master_hops",
        "gauge",
        "Hops placed, ingest to root relay and root relay to edge.",
        vec![("kind=\"root\"".into(), roots.to_string()), ("kind=\"edge\"".into(), edges.to_string())],
    );
    metric(
        "mesh_master_table_version",
        "gauge",
        "Highest table version handed out.",
        vec![(String::new(), mesh.version().to_string())],
    );
    let snapshot = counters.snapshot();
    for (name, help) in HELP {
        let rows = snapshot
            .get(name)
            .map(|m| m.iter().map(|(l, v)| (l.clone(), v.to_string())).collect())
            .unwrap_or_default();
        metric(name, "counter", help, rows);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{Config, Keys};
    use mesh_core::role::Role;
    use mesh_core::wire::{Announce, Capabilities};

    struct K;
    impl Keys for K {
        fn hop_key(&mut self) -> String {
            "k".into()
        }
    }

    #[test]
    fn gauges_and_counters() {
        let mut m =
            Mesh::new(Config { auto_approve: vec![Role::Relay], ..Config::default() }, 0, Box::new(K));
        m.announce(
            &Announce {
                node_id: "edge-1".into(),
                role: Role::Relay,
                rtmp_url: "rtmp://127.0.0.1:1935".into(),
                http_url: String::new(),
                version: "t".into(),
                capabilities: Capabilities { transcode: true, hls: true, dash: true },
            },
            0,
        );
        let c = Counters::default();
        c.inc("mesh_master_auth_total", "action=\"publish\",result=\"deny\"");
        c.inc("mesh_master_auth_total", "action=\"publish\",result=\"deny\"");
        let text = render(&m, &c);
        assert!(text.contains("mesh_master_nodes{role=\"relay\",alive=\"true\"} 1\n"), "{text}");
        assert!(text.contains("mesh_master_streams_live 0\n"), "{text}");
        assert!(text.contains("mesh_master_auth_total{action=\"publish\",result=\"deny\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE mesh_master_routes_total counter\n"), "{text}");
    }
}
