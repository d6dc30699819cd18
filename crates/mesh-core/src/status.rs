//! What a node reports about itself (`mesh_status`): the figures, as JSON (serde) and in
//! Prometheus' text format. Pure: the glue fills it from the live state.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Status {
    pub node_id: String,
    pub role: String,
    pub table: TableStatus,
    /// None without a master.
    pub master: Option<Vec<LinkStatus>>,
    pub streams: Vec<StreamStatus>,
    pub pushes: Vec<PushStatus>,
    pub transcodes: Vec<TranscodeStatus>,
    /// `(action, reason)` → sessions refused or dropped since the worker started.
    pub refusals: Vec<RefusalCount>,
    /// Questions waiting for the master's auth endpoint.
    pub auth: AuthStatus,
    /// Manifest requests held until their stream is ready.
    pub held: HeldStatus,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HeldStatus {
    /// Held now, and since the worker started.
    pub now: u64,
    pub total: u64,
    /// Refused with 503: the worker's cap, a client address's cap.
    pub busy_worker: u64,
    pub busy_client: u64,
    /// Ended by their client before an answer.
    pub client_closed: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AuthStatus {
    /// Questions out (queued or asked), of every kind.
    pub pending: u64,
    /// Of those, questions about credentials the master never allowed (capped by
    /// `mesh_auth_pending_max`).
    pub pending_unknown: u64,
    /// RTMP sessions suspended in publish or play.
    pub suspended: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TableStatus {
    pub version: u64,
    /// Seconds since this table came into force.
    pub age_s: u64,
    /// Microseconds the event loop spent taking the last table or role (swap, sessions checked
    /// again, pushes reconciled), and the most since the worker started.
    pub apply_us_last: u64,
    pub apply_us_max: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LinkStatus {
    /// `announce`, `heartbeat` or `streams`.
    pub link: String,
    /// None before the first call.
    pub up: Option<bool>,
    pub last_success_unix: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// The delay before the next try, while failing.
    pub backoff_ms: u64,
    /// On the `streams` link: the table version a signed heartbeat answer says the master
    /// holds for this node, while it is newer than the one in force and the node could not
    /// fetch it yet (the node is behind: a revocation may not be in force). None when in step.
    pub behind_version: Option<u64>,
    /// When the node learned it was behind (Unix time).
    pub behind_since_unix: Option<u64>,
    /// On the `announce` link: the master answered that no role is granted to this node yet
    /// (docs/protocol.md, "Roles"): it announces again every heartbeat interval.
    #[serde(default)]
    pub awaiting_approval: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StreamStatus {
    pub stream: String,
    pub source: String,
    pub viewers: u64,
    pub in_kbps: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PushStatus {
    pub stream: String,
    pub target: String,
    pub state: String,
    pub reconnects: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TranscodeStatus {
    pub stream: String,
    pub state: String,
    pub restarts: u64,
    pub renditions: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RefusalCount {
    pub action: String,
    pub reason: String,
    pub count: u64,
}

/// A Prometheus label value, escaped.
/// A label value, escaped for Prometheus' text format.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One metric family in Prometheus' text format: its HELP and TYPE lines, then a sample per
/// row. A row's labels (`,k="v"...`) follow the `common` ones (which may be empty).
pub fn write_family(
    o: &mut String,
    common: &str,
    name: &str,
    kind: &str,
    help: &str,
    rows: Vec<(String, String)>,
) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
    for (labels, value) in rows {
        let all = format!("{common}{labels}");
        match all.trim_start_matches(',') {
            "" => writeln!(o, "{name} {value}"),
            all => writeln!(o, "{name}{{{all}}} {value}"),
        }
        .expect("writing to a String");
    }
}

impl Status {
    /// The figures in Prometheus' text exposition format (names in its conventions: a
    /// `mesh_` prefix, units in the names, `_total` for counters).
    pub fn prometheus(&self) -> String {
        let mut o = String::new();
        let node = format!("node=\"{}\",role=\"{}\"", label(&self.node_id), label(&self.role));
        let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            write_family(&mut o, &node, name, kind, help, rows)
        };
        metric("mesh_node_info", "gauge", "This node, by id and role.", vec![(String::new(), "1".into())]);
        metric(
            "mesh_table_version",
            "gauge",
            "Version of the relay table in force.",
            vec![(String::new(), self.table.version.to_string())],
        );
        metric(
            "mesh_table_age_seconds",
            "gauge",
            "Seconds since the table in force arrived.",
            vec![(String::new(), self.table.age_s.to_string())],
        );
        let secs = |us: u64| format!("{:.6}", us as f64 / 1e6);
        metric(
            "mesh_table_apply_seconds",
            "gauge",
            "Event-loop time taken by the last table or role change.",
            vec![(String::new(), secs(self.table.apply_us_last))],
        );
        metric(
            "mesh_table_apply_max_seconds",
            "gauge",
            "Longest event-loop time taken by a table or role change since the worker started.",
            vec![(String::new(), secs(self.table.apply_us_max))],
        );
        if let Some(links) = &self.master {
            let up = links
                .iter()
                .map(|l| (format!(",link=\"{}\"", label(&l.link)), u8::from(l.up == Some(true)).to_string()))
                .collect();
            metric(
                "mesh_master_link_up",
                "gauge",
                "Whether the last call on a link to the master succeeded.",
                up,
            );
            let fails = links
                .iter()
                .map(|l| (format!(",link=\"{}\"", label(&l.link)), l.consecutive_failures.to_string()))
                .collect();
            metric(
                "mesh_master_link_consecutive_failures",
                "gauge",
                "Failed calls in a row on a link to the master.",
                fails,
            );
            let backoff = links
                .iter()
                .map(|l| {
                    (format!(",link=\"{}\"", label(&l.link)), format!("{:.3}", l.backoff_ms as f64 / 1000.0))
                })
                .collect();
            metric(
                "mesh_master_link_backoff_seconds",
                "gauge",
                "Delay before the next try on a failing link.",
                backoff,
            );
            let last = links
                .iter()
                .filter_map(|l| {
                    l.last_success_unix.map(|t| (format!(",link=\"{}\"", label(&l.link)), t.to_string()))
                })
                .collect();
            let behind = links
                .iter()
                .map(|l| {
                    (
                        format!(",link=\"{}\"", label(&l.link)),
                        u8::from(l.behind_version.is_some()).to_string(),
                    )
                })
                .collect();
            metric(
                "mesh_master_link_behind",
                "gauge",
                "Whether the master holds a newer table for this node than the one in force, not fetched yet.",
                behind,
            );
            let awaiting = links.iter().any(|l| l.awaiting_approval);
            metric(
                "mesh_master_awaiting_approval",
                "gauge",
                "Whether the master has granted this node no role yet (it waits for an admin).",
                vec![(String::new(), u8::from(awaiting).to_string())],
            );
            metric(
                "mesh_master_link_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the last successful call.",
                last,
            );
        }
        let s =
            |st: &StreamStatus| format!(",stream=\"{}\",source=\"{}\"", label(&st.stream), label(&st.source));
        metric(
            "mesh_stream_viewers",
            "gauge",
            "Viewers of a live stream on this node.",
            self.streams.iter().map(|st| (s(st), st.viewers.to_string())).collect(),
        );
        metric(
            "mesh_stream_in_bits_per_second",
            "gauge",
            "Incoming bitrate of a live stream.",
            self.streams.iter().map(|st| (s(st), (st.in_kbps * 1000).to_string())).collect(),
        );
        let p =
            |pu: &PushStatus| format!(",stream=\"{}\",target=\"{}\"", label(&pu.stream), label(&pu.target));
        metric(
            "mesh_push_connected",
            "gauge",
            "Whether a push to a target is connected.",
            self.pushes.iter().map(|pu| (p(pu), u8::from(pu.state == "connected").to_string())).collect(),
        );
        metric(
            "mesh_push_reconnects_total",
            "counter",
            "Times a push to a target was started again.",
            self.pushes.iter().map(|pu| (p(pu), pu.reconnects.to_string())).collect(),
        );
        let t = |tc: &TranscodeStatus| format!(",stream=\"{}\"", label(&tc.stream));
        metric(
            "mesh_transcode_running",
            "gauge",
            "Whether a stream's transcode runs.",
            self.transcodes.iter().map(|tc| (t(tc), u8::from(tc.state == "running").to_string())).collect(),
        );
        metric(
            "mesh_transcode_restarts_total",
            "counter",
            "Restarts of a stream's transcode after ffmpeg died.",
            self.transcodes.iter().map(|tc| (t(tc), tc.restarts.to_string())).collect(),
        );
        metric(
            "mesh_auth_pending",
            "gauge",
            "Questions waiting for the master's auth endpoint: all, and of unknown credentials.",
            vec![
                (",kind=\"all\"".into(), self.auth.pending.to_string()),
                (",kind=\"unknown\"".into(), self.auth.pending_unknown.to_string()),
            ],
        );
        metric(
            "mesh_held_requests",
            "gauge",
            "Manifest requests held until their stream is ready.",
            vec![(String::new(), self.held.now.to_string())],
        );
        metric(
            "mesh_held_requests_total",
            "counter",
            "Manifest requests held, refused past a cap (503), or ended by their client.",
            vec![
                (",outcome=\"held\"".into(), self.held.total.to_string()),
                (",outcome=\"busy_worker\"".into(), self.held.busy_worker.to_string()),
                (",outcome=\"busy_client\"".into(), self.held.busy_client.to_string()),
                (",outcome=\"client_closed\"".into(), self.held.client_closed.to_string()),
            ],
        );
        metric(
            "mesh_refusals_total",
            "counter",
            "Sessions refused or dropped, by action and reason.",
            self.refusals
                .iter()
                .map(|r| {
                    (
                        format!(",action=\"{}\",reason=\"{}\"", label(&r.action), label(&r.reason)),
                        r.count.to_string(),
                    )
                })
                .collect(),
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            node_id: "edge-1".into(),
            role: "relay".into(),
            table: TableStatus { version: 7, age_s: 12, apply_us_last: 250, apply_us_max: 1500 },
            master: Some(vec![LinkStatus {
                link: "streams".into(),
                up: Some(false),
                last_success_unix: Some(1_795_400_000),
                last_error: Some("timed out".into()),
                consecutive_failures: 3,
                backoff_ms: 2500,
                behind_version: Some(9),
                behind_since_unix: Some(1_795_400_010),
                awaiting_approval: true,
            }]),
            streams: vec![StreamStatus {
                stream: "cam1".into(),
                source: "root-1".into(),
                viewers: 3,
                in_kbps: 2500,
            }],
            pushes: vec![PushStatus {
                stream: "cam1".into(),
                target: "edge-9".into(),
                state: "connected".into(),
                reconnects: 2,
            }],
            transcodes: vec![TranscodeStatus {
                stream: "cam1".into(),
                state: "running".into(),
                restarts: 1,
                renditions: vec!["source".into(), "360p".into()],
            }],
            refusals: vec![RefusalCount { action: "publish".into(), reason: "wrong key".into(), count: 4 }],
            auth: AuthStatus { pending: 5, pending_unknown: 3, suspended: 4 },
            held: HeldStatus { now: 2, total: 9, busy_worker: 0, busy_client: 3, client_closed: 1 },
        }
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["table"]["version"], 7);
        assert_eq!(v["master"][0]["last_error"], "timed out");
        assert_eq!(v["master"][0]["behind_version"], 9);
        assert_eq!(v["master"][0]["awaiting_approval"], true);
        assert_eq!(v["transcodes"][0]["renditions"][1], "360p");
        assert_eq!(v["refusals"][0]["reason"], "wrong key");
        let standalone = Status { master: None, ..sample() };
        assert!(serde_json::to_value(standalone).unwrap()["master"].is_null());
    }

    #[test]
    fn prometheus_text() {
        let p = sample().prometheus();
        for line in [
            "# TYPE mesh_refusals_total counter",
            r#"mesh_refusals_total{node="edge-1",role="relay",action="publish",reason="wrong key"} 4"#,
            r#"mesh_auth_pending{node="edge-1",role="relay",kind="unknown"} 3"#,
            r#"mesh_held_requests_total{node="edge-1",role="relay",outcome="busy_client"} 3"#,
            r#"mesh_table_version{node="edge-1",role="relay"} 7"#,
            r#"mesh_master_link_up{node="edge-1",role="relay",link="streams"} 0"#,
            r#"mesh_master_link_behind{node="edge-1",role="relay",link="streams"} 1"#,
            r#"mesh_master_awaiting_approval{node="edge-1",role="relay"} 1"#,
            r#"mesh_master_link_backoff_seconds{node="edge-1",role="relay",link="streams"} 2.500"#,
            r#"mesh_stream_in_bits_per_second{node="edge-1",role="relay",stream="cam1",source="root-1"} 2500000"#,
            r#"mesh_push_reconnects_total{node="edge-1",role="relay",stream="cam1",target="edge-9"} 2"#,
            r#"mesh_transcode_running{node="edge-1",role="relay",stream="cam1"} 1"#,
        ] {
            assert!(p.lines().any(|l| l == line), "missing {line:?} in\n{p}");
        }
        // every sample line is `name{labels} value`
        for l in p.lines().filter(|l| !l.starts_with('#')) {
            let (head, value) = l.rsplit_once(' ').unwrap();
            assert!(head.ends_with('}') && value.parse::<f64>().is_ok(), "{l}");
        }
        assert!(!Status { master: None, ..sample() }.prometheus().contains("mesh_master_link"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
