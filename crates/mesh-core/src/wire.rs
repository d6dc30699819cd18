//! Node ↔ master request and response bodies (docs/protocol.md). Unknown fields are ignored;
//! every response field a node can do without is optional.

use serde::{Deserialize, Serialize};

use crate::role::Role;

/// Caps on what a node may send the master (docs/protocol.md, "Field rules"); past them the
/// master answers 400 with a reason.
pub mod caps {
    /// Largest table version, and largest figure (counts, kbit/s, seconds) in a request: 2^53,
    /// exact in every JSON implementation.
    pub const MAX_NUMBER: u64 = 1 << 53;
    /// Longest `rtmp_url` or `http_url`.
    pub const MAX_URL_LEN: usize = 512;
    /// Longest `version` string.
    pub const MAX_VERSION_LEN: usize = 64;
    /// Longest push or transcode `state`.
    pub const MAX_STATE_LEN: usize = 32;
    /// Entries in a heartbeat's `streams`, `pushes` and `transcodes` lists.
    pub const MAX_STREAMS: usize = 10_000;
    pub const MAX_PUSHES: usize = 20_000;
    pub const MAX_TRANSCODES: usize = 10_000;
    /// Longest stream key or viewer token in an auth request.
    pub const MAX_CREDENTIAL_LEN: usize = 1024;
    /// Longest client address in an auth request.
    pub const MAX_ADDR_LEN: usize = 64;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Capabilities {
    pub transcode: bool,
    pub hls: bool,
    pub dash: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Announce {
    pub node_id: String,
    pub role: Role,
    pub rtmp_url: String,
    pub http_url: String,
    pub version: String,
    pub capabilities: Capabilities,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AnnounceReply {
    pub role: Option<Role>,
    pub heartbeat_interval_s: Option<u64>,
    pub table_refresh_s: Option<u64>,
    /// The master's epoch (docs/protocol.md, "Epochs").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamStat {
    pub stream: String,
    /// `broadcaster`, or the id of the node that pushes it here.
    pub source: String,
    pub viewers: u64,
    pub in_kbps: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PushStat {
    pub stream: String,
    pub to: String,
    /// `connected`, `retrying` (down) or `stalled` (up, but nothing heard from the target).
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TranscodeStat {
    pub stream: String,
    pub state: String,
    pub restarts: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Load {
    pub connections: u64,
    pub in_kbps: u64,
    pub out_kbps: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub node_id: String,
    pub role: Role,
    pub table_version: u64,
    #[serde(default)]
    pub uptime_s: u64,
    #[serde(default)]
    pub streams: Vec<StreamStat>,
    #[serde(default)]
    pub pushes: Vec<PushStat>,
    #[serde(default)]
    pub transcodes: Vec<TranscodeStat>,
    #[serde(default)]
    pub load: Load,
}

impl Heartbeat {
    /// A heartbeat with no figures yet.
    pub fn empty(node_id: &str, role: Role) -> Heartbeat {
        Heartbeat {
            node_id: node_id.into(),
            role,
            table_version: 0,
            uptime_s: 0,
            streams: vec![],
            pushes: vec![],
            transcodes: vec![],
            load: Load::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeartbeatReply {
    pub table_version: Option<u64>,
    pub role: Option<Role>,
    /// The epoch `table_version` counts in (docs/protocol.md, "Epochs").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Publish,
    Play,
}

/// Endpoint paths on the master (defaults: the protocol's; the `.env` names ANNOUNCE_ENDPOINT
/// and friends set them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub announce: String,
    pub heartbeat: String,
    pub streams: String,
    pub auth: String,
    pub route: String,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            announce: "/announce".into(),
            heartbeat: "/heartbeat".into(),
            streams: "/streams".into(),
            auth: "/auth".into(),
            route: "/route".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthRequest {
    pub node_id: String,
    pub action: Action,
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthReply {
    pub allow: bool,
    pub ttl_s: Option<u64>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteRequest {
    pub node_id: String,
    pub stream: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RouteStatus {
    Routed,
    Unknown,
    Denied,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteReply {
    pub status: RouteStatus,
    pub table_version: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_have_the_protocol_shape() {
        let a = Announce {
            node_id: "edge-1".into(),
            role: Role::Relay,
            rtmp_url: "rtmp://10.0.0.3:1935".into(),
            http_url: "http://10.0.0.3:8080".into(),
            version: "0.1.0".into(),
            capabilities: Capabilities { transcode: false, hls: false, dash: false },
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"node_id": "edge-1", "role": "relay", "rtmp_url": "rtmp://10.0.0.3:1935",
                   "http_url": "http://10.0.0.3:8080", "version": "0.1.0",
                   "capabilities": {"transcode": false, "hls": false, "dash": false}})
        );
        let r = AuthRequest {
            node_id: "i".into(),
            action: Action::Publish,
            stream: "cam1".into(),
            key: Some("k".into()),
            token: None,
            addr: "192.0.2.1".into(),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"node_id": "i", "action": "publish", "stream": "cam1", "key": "k", "addr": "192.0.2.1"})
        );
        let h = Heartbeat {
            node_id: "n".into(),
            role: Role::RootRelay,
            table_version: 3,
            uptime_s: 9,
            streams: vec![StreamStat {
                stream: "s".into(),
                source: "ingest-1".into(),
                viewers: 0,
                in_kbps: 900,
            }],
            pushes: vec![PushStat { stream: "s".into(), to: "edge-1".into(), state: "connected".into() }],
            transcodes: vec![],
            load: Load { connections: 2, in_kbps: 900, out_kbps: 900 },
        };
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["role"], "root_relay");
        assert_eq!(v["streams"][0]["source"], "ingest-1");
        assert_eq!(v["pushes"][0]["state"], "connected");
        assert_eq!(v["load"]["connections"], 2);
    }

    #[test]
    fn replies_parse_leniently() {
        let r: AnnounceReply = serde_json::from_str(r#"{"role":"relay","extra":1}"#).unwrap();
        assert_eq!(
            r,
            AnnounceReply {
                role: Some(Role::Relay),
                heartbeat_interval_s: None,
                table_refresh_s: None,
                epoch: None
            }
        );
        let r: HeartbeatReply = serde_json::from_str(r#"{"table_version": 7}"#).unwrap();
        assert_eq!(r.table_version, Some(7));
        assert!(serde_json::from_str::<HeartbeatReply>(r#"{"role":"edge"}"#).is_err());
        let r: AuthReply = serde_json::from_str(r#"{"allow": true, "ttl_s": 60}"#).unwrap();
        assert!(r.allow);
        assert!(serde_json::from_str::<AuthReply>(r#"{"ttl_s": 60}"#).is_err(), "allow is required");
        let r: RouteReply = serde_json::from_str(r#"{"status":"routed","table_version":4}"#).unwrap();
        assert_eq!(r.status, RouteStatus::Routed);
    }
}
