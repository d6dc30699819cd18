//! The relay table: parsed and validated as a whole. Any error refuses the whole table, so a
//! caller keeps its last good one.
//!
//! The JSON shape is the protocol's (docs/protocol.md); unknown fields are ignored.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use crate::name::{for_log, is_valid_id};
use crate::role::Role;
use crate::token::{is_valid_kid, is_valid_stream_id};
use crate::viewer::{ViewerKey, MAX_SECRET_LEN, MAX_TTL_CEILING_S, MIN_SECRET_LEN};

/// Largest table document accepted, in bytes.
pub const MAX_TABLE_BYTES: usize = 64 << 20;

/// One push target: a node, where it listens, and the key for this (stream, hop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node_id: String,
    /// `rtmp://host[:port]/app`, checked.
    pub node_url: String,
    pub node_key: String,
    /// For `relay` entries: the node that pushes to this target (absent: a root relay).
    pub from: Option<String>,
}

/// A validated relay table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub version: u64,
    /// This node's role, when the table says it.
    pub role: Option<Role>,
    pub ingest: HashMap<String, Vec<Target>>,
    pub relay: HashMap<String, Vec<Target>>,
    /// Stream id → sha256 of the broadcaster's stream key.
    pub publish: HashMap<String, [u8; 32]>,
    /// Legacy tokens verify against it (docs/protocol-notes.md: operators' tables keep working).
    pub viewer_secret: Option<String>,
    /// Keys v2 tokens name (`viewer_keys`); the first without `not_after` signs.
    pub viewer_keys: Vec<ViewerKey>,
    /// `max_token_ttl_s`, when the table says it (else [`crate::viewer::DEFAULT_MAX_TTL_S`]).
    pub max_token_ttl_s: Option<u64>,
    /// Stream → its identity (`streams.S.id`), when the table names them: tokens are bound to
    /// it, and a stream not named refuses every token.
    pub stream_ids: Option<HashMap<String, String>>,
    /// The master's epoch (its database's random id): versions compare only within one epoch
    /// (docs/protocol.md, "Epochs").
    pub epoch: Option<String>,
}

/// Why a table was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    /// Not JSON, or JSON of the wrong type somewhere.
    Syntax {
        line: usize,
        column: usize,
        msg: String,
    },
    /// Well-formed JSON that breaks a rule; `path` names the field (`relay.cam1[0].node_key`).
    Invalid {
        path: String,
        msg: String,
    },
    TooLarge(usize),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Syntax { line, column, msg } => {
                write!(f, "line {line}, column {column}: {msg}")
            }
            TableError::Invalid { path, msg } => write!(f, "{path}: {msg}"),
            TableError::TooLarge(n) => {
                write!(f, "table of {n} bytes is larger than {MAX_TABLE_BYTES}")
            }
        }
    }
}

impl std::error::Error for TableError {}

#[derive(Deserialize)]
struct RawTable {
    version: Option<serde_json::Value>,
    role: Option<String>,
    #[serde(default)]
    ingest: HashMap<String, Vec<RawTarget>>,
    #[serde(default)]
    relay: HashMap<String, Vec<RawTarget>>,
    #[serde(default)]
    publish: HashMap<String, RawPublish>,
    viewer_secret: Option<String>,
    viewer_keys: Option<Vec<RawViewerKey>>,
    max_token_ttl_s: Option<serde_json::Value>,
    streams: Option<HashMap<String, RawStream>>,
    epoch: Option<String>,
}

#[derive(Deserialize)]
struct RawViewerKey {
    id: Option<String>,
    secret: Option<String>,
    not_after: Option<u64>,
}

#[derive(Deserialize)]
struct RawStream {
    id: Option<String>,
}

#[derive(Deserialize)]
struct RawTarget {
    node_id: Option<String>,
    node_url: Option<String>,
    node_key: Option<String>,
    from: Option<String>,
}

#[derive(Deserialize)]
struct RawPublish {
    key_sha256: Option<String>,
}

fn invalid(path: impl Into<String>, msg: impl Into<String>) -> TableError {
    TableError::Invalid { path: path.into(), msg: msg.into() }
}

impl Table {
    /// Parse and validate a table document.
    pub fn parse(bytes: &[u8]) -> Result<Table, TableError> {
        if bytes.len() > MAX_TABLE_BYTES {
            return Err(TableError::TooLarge(bytes.len()));
        }
        let raw: RawTable = serde_json::from_slice(bytes).map_err(|e| TableError::Syntax {
            line: e.line(),
            column: e.column(),
            msg: strip_position(&e.to_string()),
        })?;
        raw.validate()
    }

    /// Targets of `kind` ("ingest" or "relay") for a stream.
    pub fn entries(&self, kind: EntryKind, stream: &str) -> &[Target] {
        let map = match kind {
            EntryKind::Ingest => &self.ingest,
            EntryKind::Relay => &self.relay,
        };
        map.get(stream).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Number of streams named anywhere in the table.
    pub fn stream_count(&self) -> usize {
        let mut n = self.publish.len();
        n += self.ingest.keys().filter(|s| !self.publish.contains_key(*s)).count();
        n += self
            .relay
            .keys()
            .filter(|s| !self.publish.contains_key(*s) && !self.ingest.contains_key(*s))
            .count();
        n
    }
}

/// The two lists of targets in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Ingest,
    Relay,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Ingest => "ingest",
            EntryKind::Relay => "relay",
        }
    }
}

/// serde_json appends " at line L column C"; we report the position ourselves. It also quotes
/// the value it did not expect (`invalid type: integer `9876543210`, expected a string`): that
/// value may be a secret put in the wrong place (a hop key written as a number, a viewer key
/// where an object goes), and the message goes to the error log, so only its kind is kept.
fn strip_position(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((what, expected)) = msg.strip_prefix(prefix).and_then(|r| r.split_once(", expected")) {
            let kind = what.split(['"', '`']).next().unwrap_or("").trim_end();
            return format!("{prefix}{kind}, expected{expected}");
        }
    }
    msg.to_string()
}

impl RawTable {
    fn validate(self) -> Result<Table, TableError> {
        let version = match self.version {
            None => 0,
            Some(v) => {
                v.as_u64().ok_or_else(|| invalid("version", format!("not a non-negative integer: {v}")))?
            }
        };
        let role = match self.role {
            None => None,
            Some(r) => Some(
                r.parse::<Role>()
                    .map_err(|()| invalid("role", format!("unknown role \"{}\"", for_log(&r))))?,
            ),
        };
        let ingest = validate_targets(EntryKind::Ingest, self.ingest)?;
        let relay = validate_targets(EntryKind::Relay, self.relay)?;
        let mut publish = HashMap::with_capacity(self.publish.len());
        for (stream, p) in self.publish {
            check_stream_id("publish", &stream)?;
            let path = format!("publish.{stream}.key_sha256");
            let hex = p.key_sha256.ok_or_else(|| invalid(&path, "missing"))?;
            let mut digest = [0u8; 32];
            if hex.len() != 64 || hex::decode_to_slice(&hex, &mut digest).is_err() {
                return Err(invalid(path, "not 64 hex digits"));
            }
            publish.insert(stream, digest);
        }
        if let Some(secret) = &self.viewer_secret {
            if secret.is_empty() {
                return Err(invalid("viewer_secret", "empty"));
            }
        }
        let viewer_keys = match self.viewer_keys {
            None => Vec::new(),
            Some(keys) => validate_viewer_keys(keys)?,
        };
        let max_token_ttl_s = match self.max_token_ttl_s {
            None => None,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_TTL_CEILING_S).contains(&n) => Some(n),
                _ => {
                    return Err(invalid(
                        "max_token_ttl_s",
                        format!("not 1 to {MAX_TTL_CEILING_S} seconds: {v}"),
                    ))
                }
            },
        };
        let stream_ids = match self.streams {
            None => None,
            Some(streams) => {
                let mut ids = HashMap::with_capacity(streams.len());
                for (stream, s) in streams {
                    check_stream_id("streams", &stream)?;
                    let path = format!("streams.{stream}.id");
                    let id = s.id.ok_or_else(|| invalid(&path, "missing"))?;
                    if !is_valid_stream_id(&id) {
                        return Err(invalid(path, "invalid stream identity (1-64 of A-Z a-z 0-9 _ -)"));
                    }
                    ids.insert(stream, id);
                }
                Some(ids)
            }
        };
        if let Some(e) = &self.epoch {
            if !is_valid_stream_id(e) {
                return Err(invalid("epoch", "invalid epoch (1-64 of A-Z a-z 0-9 _ -)"));
            }
        }
        Ok(Table {
            epoch: self.epoch,
            version,
            role,
            ingest,
            relay,
            publish,
            viewer_secret: self.viewer_secret,
            viewer_keys,
            max_token_ttl_s,
            stream_ids,
        })
    }
}

fn validate_viewer_keys(raw: Vec<RawViewerKey>) -> Result<Vec<ViewerKey>, TableError> {
    if raw.is_empty() {
        return Err(invalid("viewer_keys", "empty (leave it out for no keys)"));
    }
    let mut keys: Vec<ViewerKey> = Vec::with_capacity(raw.len());
    for (i, k) in raw.into_iter().enumerate() {
        let at = |field: &str| format!("viewer_keys[{i}].{field}");
        let id = k.id.ok_or_else(|| invalid(at("id"), "missing"))?;
        if !is_valid_kid(&id) {
            return Err(invalid(at("id"), "invalid key id (1-32 of A-Z a-z 0-9 _ -)"));
        }
        if keys.iter().any(|o| o.id == id) {
            return Err(invalid(at("id"), format!("duplicate key id \"{id}\"")));
        }
        let secret = k.secret.ok_or_else(|| invalid(at("secret"), "missing"))?;
        if secret.len() < MIN_SECRET_LEN || secret.len() > MAX_SECRET_LEN {
            return Err(invalid(at("secret"), format!("not {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes")));
        }
        keys.push(ViewerKey { id, secret, not_after: k.not_after });
    }
    Ok(keys)
}

fn check_stream_id(kind: &str, stream: &str) -> Result<(), TableError> {
    if is_valid_id(stream) {
        Ok(())
    } else {
        Err(invalid(
            format!("{kind}.\"{}\"", for_log(stream)),
            "invalid stream id (1-128 of A-Z a-z 0-9 _ -)",
        ))
    }
}

fn validate_targets(
    kind: EntryKind,
    raw: HashMap<String, Vec<RawTarget>>,
) -> Result<HashMap<String, Vec<Target>>, TableError> {
    let mut out = HashMap::with_capacity(raw.len());
    for (stream, list) in raw {
        check_stream_id(kind.as_str(), &stream)?;
        let mut targets = Vec::with_capacity(list.len());
        for (i, t) in list.into_iter().enumerate() {
            let at = |field: &str| format!("{}.{stream}[{i}].{field}", kind.as_str());
            let node_id = t.node_id.ok_or_else(|| invalid(at("node_id"), "missing"))?;
            if !is_valid_id(&node_id) {
                return Err(invalid(at("node_id"), format!("invalid node id \"{}\"", for_log(&node_id))));
            }
            let node_url = t.node_url.ok_or_else(|| invalid(at("node_url"), "missing"))?;
            check_node_url(&node_url).map_err(|m| invalid(at("node_url"), m))?;
            let node_key = t.node_key.ok_or_else(|| invalid(at("node_key"), "missing"))?;
            if !is_valid_key(&node_key) {
                return Err(invalid(at("node_key"), "invalid key (1-100 of A-Z a-z 0-9 _ - . ~)"));
            }
            if let Some(from) = &t.from {
                if kind == EntryKind::Ingest {
                    return Err(invalid(at("from"), "only relay entries have \"from\""));
                }
                if !is_valid_id(from) {
                    return Err(invalid(at("from"), format!("invalid node id \"{}\"", for_log(from))));
                }
            }
            targets.push(Target { node_id, node_url, node_key, from: t.from });
        }
        out.insert(stream, targets);
    }
    Ok(out)
}

/// Longest node key. nginx-rtmp keeps a publish's arguments in 256 bytes and cuts the rest
/// silently: `node=<128>&key=<100>` must fit.
pub const MAX_KEY_LEN: usize = 100;

/// Node keys travel in an RTMP query string: URL-safe characters only, and short enough that
/// nginx-rtmp does not truncate them.
pub fn is_valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY_LEN
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~'))
}

/// A checked `node_url`, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeUrl<'a> {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: &'a str,
    pub port: u16,
    /// Everything after the host: `/app[/more]`.
    pub path: &'a str,
}

impl NodeUrl<'_> {
    /// The same URL with the host replaced by `ip` (after name resolution).
    pub fn with_ip(&self, ip: std::net::IpAddr) -> String {
        match ip {
            std::net::IpAddr::V4(a) => format!("rtmp://{a}:{}{}", self.port, self.path),
            std::net::IpAddr::V6(a) => format!("rtmp://[{a}]:{}{}", self.port, self.path),
        }
    }
}

/// `rtmp://host[:port]/app[/more]`: no query, no whitespace, an app part.
pub fn parse_node_url(url: &str) -> Result<NodeUrl<'_>, String> {
    let rest =
        url.strip_prefix("rtmp://").ok_or_else(|| format!("\"{}\" is not an rtmp:// URL", for_log(url)))?;
    let bad = |why: &str| format!("\"{}\": {why}", for_log(url));
    if rest.bytes().any(|b| !b.is_ascii_graphic() || matches!(b, b'?' | b'#' | b'&' | b'"')) {
        return Err(bad("forbidden character"));
    }
    let slash = rest.find('/').ok_or_else(|| bad("no application"))?;
    let (authority, path) = rest.split_at(slash);
    if path.trim_matches('/').is_empty() {
        return Err(bad("no application"));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("invalid host"))?;
            (h, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None => 1935,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad("invalid port")),
        },
    };
    Ok(NodeUrl { host, port, path: path.trim_end_matches('/') })
}

fn check_node_url(url: &str) -> Result<(), String> {
    parse_node_url(url).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "8a5edab282632443219e051e4ade2d1d5bbc671c781051bf1437897cbdfea0f1";

    fn good() -> serde_json::Value {
        serde_json::json!({
            "version": 42,
            "role": "relay",
            "ingest": {"cam1": [{"node_id": "root-1", "node_url": "rtmp://10.0.0.2:1935/relay", "node_key": "k-ingest-root1-cam1"}]},
            "relay": {"cam1": [
                {"node_id": "edge-1", "node_url": "rtmp://10.0.0.3:1935/relay", "node_key": "k-root1-edge1-cam1"},
                {"node_id": "edge-9", "node_url": "rtmp://10.0.0.9/relay", "node_key": "k-edge1-edge9-cam1", "from": "edge-1"}
            ]},
            "publish": {"cam1": {"key_sha256": SHA}},
            "viewer_secret": "s3cret",
            "viewer_keys": [{"id": "k2", "secret": "0123456789abcdef"},
                            {"id": "k1", "secret": "fedcba9876543210", "not_after": 1800000000}],
            "max_token_ttl_s": 3600,
            "streams": {"cam1": {"id": "5f0c2a9e"}},
            "future_field": {"ignored": true}
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Table, TableError> {
        Table::parse(v.to_string().as_bytes())
    }

    #[test]
    fn protocol_example_parses() {
        let t = parse(&good()).unwrap();
        assert_eq!(t.version, 42);
        assert_eq!(t.role, Some(Role::Relay));
        assert_eq!(t.entries(EntryKind::Relay, "cam1").len(), 2);
        assert_eq!(t.entries(EntryKind::Relay, "cam1")[1].from.as_deref(), Some("edge-1"));
        assert_eq!(t.entries(EntryKind::Ingest, "nope").len(), 0);
        assert_eq!(hex::encode(t.publish["cam1"]), SHA);
        assert_eq!(t.viewer_secret.as_deref(), Some("s3cret"));
        assert_eq!(t.viewer_keys.len(), 2);
        assert_eq!((t.viewer_keys[1].id.as_str(), t.viewer_keys[1].not_after), ("k1", Some(1_800_000_000)));
        assert_eq!(t.max_token_ttl_s, Some(3600));
        assert_eq!(t.stream_ids.as_ref().unwrap()["cam1"], "5f0c2a9e");
        assert_eq!(t.stream_count(), 1);
    }

    #[test]
    fn empty_object_is_an_empty_table() {
        let t = Table::parse(b"{}").unwrap();
        assert_eq!(t, Table::default());
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let e = Table::parse(b"{\n  \"version\": 1,\n  \"relay\": [\n").unwrap_err();
        match e {
            TableError::Syntax { line, .. } => assert_eq!(line, 3),
            other => panic!("{other:?}"),
        }
        assert!(matches!(Table::parse(b""), Err(TableError::Syntax { .. })));
        assert!(matches!(Table::parse(b"[]"), Err(TableError::Syntax { .. })));
        let e = Table::parse(br#"{"relay": {"cam1": {"node_id": "x"}}}"#).unwrap_err();
        assert!(e.to_string().starts_with("line 1, column "), "{e}");
    }

    #[test]
    fn syntax_errors_never_quote_a_value() {
        // Red team: serde_json quotes the value it did not expect, and the message goes to the
        // error log (`mesh_table_file`, a table from the master, `mesh-tool check`): a secret in
        // the wrong place was logged whole.
        for (doc, kind) in [
            (r#"{"viewer_keys": ["very-secret-viewer-key-0123"]}"#, "invalid type: string, expected struct"),
            (r#"{"viewer_secret": 42424242}"#, "invalid type: integer, expected a string"),
            (
                r#"{"relay": {"cam1": [{"node_id": "a", "node_url": "rtmp://h/app", "node_key": 9876543210}]}}"#,
                "invalid type: integer, expected a string",
            ),
            (
                r#"{"viewer_keys": [{"id": "k1", "secret": 4.2424242e8}]}"#,
                "invalid type: floating point, expected",
            ),
            (
                r#"{"viewer_keys": [{"id": "k1", "not_after": -424242}]}"#,
                "invalid value: integer, expected u64",
            ),
            (r#"{"viewer_secret": ["a"b-secret"]}"#, "invalid type: sequence, expected a string"),
            (
                r#"{"publish": {"cam1": "secret-in-the-wrong-place"}}"#,
                "invalid type: string, expected struct",
            ),
        ] {
            let e = Table::parse(doc.as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with("line 1, column ") && e.contains(kind), "{doc}: {e}");
            for secret in ["very-secret", "4242", "9876543210", "secret-in", "b-secret"] {
                assert!(!e.contains(secret), "{doc}: {e}");
            }
        }
    }

    /// Each mutation of the good table must be refused with the given field path.
    #[test]
    fn invalid_tables_are_refused_with_the_field() {
        type Mutation = fn(&mut serde_json::Value);
        let cases: Vec<(Mutation, &str)> = vec![
            (|v| v["role"] = "edge".into(), "role: unknown role \"edge\""),
            (|v| v["version"] = (-1).into(), "version:"),
            (|v| v["version"] = "1".into(), "version:"),
            (
                |v| v["relay"]["cam1"][0]["node_key"] = serde_json::Value::Null,
                "relay.cam1[0].node_key: missing",
            ),
            (|v| v["relay"]["cam1"][0]["node_key"] = "".into(), "relay.cam1[0].node_key: invalid key"),
            (
                |v| {
                    v["relay"]["cam1"][0].as_object_mut().unwrap().remove("node_key");
                },
                "relay.cam1[0].node_key: missing",
            ),
            (
                |v| {
                    v["ingest"]["cam1"][0].as_object_mut().unwrap().remove("node_id");
                },
                "ingest.cam1[0].node_id: missing",
            ),
            (
                |v| {
                    v["ingest"]["cam1"][0].as_object_mut().unwrap().remove("node_url");
                },
                "ingest.cam1[0].node_url: missing",
            ),
            (|v| v["ingest"]["cam1"][0]["node_id"] = "a b".into(), "ingest.cam1[0].node_id: invalid node id"),
            (|v| v["ingest"]["cam1"][0]["node_key"] = "k&x=1".into(), "ingest.cam1[0].node_key: invalid key"),
            (|v| v["ingest"]["cam1"][0]["node_url"] = "http://x/relay".into(), "is not an rtmp:// URL"),
            (|v| v["ingest"]["cam1"][0]["node_url"] = "rtmp://x".into(), "no application"),
            (|v| v["ingest"]["cam1"][0]["node_url"] = "rtmp://x:99999/a".into(), "invalid port"),
            (|v| v["ingest"]["cam1"][0]["node_url"] = "rtmp://x/a?k=1".into(), "forbidden character"),
            (|v| v["ingest"]["cam1"][0]["node_url"] = "rtmp:///a".into(), "no host"),
            (|v| v["ingest"]["cam1"][0]["from"] = "edge-1".into(), "ingest.cam1[0].from: only relay"),
            (|v| v["relay"]["cam1"][1]["from"] = "../x".into(), "relay.cam1[1].from: invalid node id"),
            (|v| v["ingest"]["../etc"] = serde_json::json!([]), "ingest.\"../etc\": invalid stream id"),
            (|v| v["relay"]["a b"] = serde_json::json!([]), "relay.\"a b\": invalid stream id"),
            (|v| v["publish"][&"x".repeat(129)] = serde_json::json!({"key_sha256": SHA}), "publish.\"xxx"),
            (|v| v["publish"]["cam1"]["key_sha256"] = "abc".into(), "publish.cam1.key_sha256: not 64 hex"),
            (
                |v| {
                    v["publish"]["cam1"].as_object_mut().unwrap().remove("key_sha256");
                },
                "publish.cam1.key_sha256: missing",
            ),
            (|v| v["viewer_secret"] = "".into(), "viewer_secret: empty"),
            (|v| v["viewer_keys"] = serde_json::json!([]), "viewer_keys: empty"),
            (
                |v| {
                    v["viewer_keys"][1].as_object_mut().unwrap().remove("id");
                },
                "viewer_keys[1].id: missing",
            ),
            (|v| v["viewer_keys"][0]["id"] = "k.2".into(), "viewer_keys[0].id: invalid key id"),
            (|v| v["viewer_keys"][1]["id"] = "k2".into(), "viewer_keys[1].id: duplicate key id \"k2\""),
            (
                |v| {
                    v["viewer_keys"][0].as_object_mut().unwrap().remove("secret");
                },
                "viewer_keys[0].secret: missing",
            ),
            (
                |v| v["viewer_keys"][1]["secret"] = "short".into(),
                "viewer_keys[1].secret: not 16 to 1024 bytes",
            ),
            (|v| v["viewer_keys"][1]["secret"] = "x".repeat(1025).into(), "viewer_keys[1].secret: not 16"),
            (|v| v["max_token_ttl_s"] = 0.into(), "max_token_ttl_s: not 1 to 31622400 seconds: 0"),
            (|v| v["max_token_ttl_s"] = 31_622_401.into(), "max_token_ttl_s: not 1 to"),
            (|v| v["max_token_ttl_s"] = "60".into(), "max_token_ttl_s: not 1 to"),
            (|v| v["streams"]["a/b"] = serde_json::json!({"id": "x"}), "streams.\"a/b\": invalid stream id"),
            (|v| v["streams"]["cam1"] = serde_json::json!({}), "streams.cam1.id: missing"),
            (|v| v["streams"]["cam1"]["id"] = "".into(), "streams.cam1.id: invalid stream identity"),
            (|v| v["streams"]["cam1"]["id"] = "a\nb".into(), "streams.cam1.id: invalid stream identity"),
            (
                |v| v["streams"]["cam1"]["id"] = "f".repeat(65).into(),
                "streams.cam1.id: invalid stream identity",
            ),
        ];
        for (i, (mutate, want)) in cases.into_iter().enumerate() {
            let mut v = good();
            mutate(&mut v);
            let err = parse(&v).expect_err(&format!("case {i} ({want}) accepted"));
            assert!(err.to_string().contains(want), "case {i}: {err} does not contain {want}");
        }
    }

    #[test]
    fn wrong_types_are_syntax_errors() {
        for doc in [
            r#"{"relay": {"cam1": "x"}}"#,
            r#"{"publish": {"cam1": []}}"#,
            r#"{"role": 3}"#,
            r#"{"ingest": {"cam1": [{"node_id": 1}]}}"#,
            r#"{"viewer_keys": {"id": "k1"}}"#,
            r#"{"viewer_keys": [{"id": "k1", "secret": "0123456789abcdef", "not_after": -1}]}"#,
            r#"{"viewer_keys": [{"id": "k1", "secret": "0123456789abcdef", "not_after": "soon"}]}"#,
            r#"{"streams": {"cam1": "id"}}"#,
            r#"{"streams": {"cam1": {"id": 7}}}"#,
        ] {
            assert!(matches!(Table::parse(doc.as_bytes()), Err(TableError::Syntax { .. })), "{doc}");
        }
    }

    #[test]
    fn node_urls_split() {
        let u = parse_node_url("rtmp://10.0.0.2:1936/relay/").unwrap();
        assert_eq!(u, NodeUrl { host: "10.0.0.2", port: 1936, path: "/relay" });
        let u = parse_node_url("rtmp://root.example/relay").unwrap();
        assert_eq!((u.host, u.port), ("root.example", 1935));
        let u = parse_node_url("rtmp://[::1]:2000/a/b").unwrap();
        assert_eq!((u.host, u.port, u.path), ("::1", 2000, "/a/b"));
        assert_eq!(u.with_ip("::1".parse().unwrap()), "rtmp://[::1]:2000/a/b");
        let u = parse_node_url("rtmp://localhost/relay").unwrap();
        assert_eq!(u.with_ip("127.0.0.1".parse().unwrap()), "rtmp://127.0.0.1:1935/relay");
        for bad in ["rtmp://[::1/a", "rtmp://h:0/a", "rtmp://h:/a", "rtmp://h//", "rtmp://:1/a"] {
            assert!(parse_node_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn too_large_is_refused_before_parsing() {
        let big = vec![b' '; MAX_TABLE_BYTES + 1];
        assert_eq!(Table::parse(&big), Err(TableError::TooLarge(MAX_TABLE_BYTES + 1)));
    }
}
