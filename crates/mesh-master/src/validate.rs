//! Every field of a node's request checked before the master acts on it (docs/protocol.md,
//! "Field rules"): URLs that parse and have a host, ids of the name rules, numbers up to 2^53,
//! capped lists and strings. A refusal is a 400 whose reason is [`Invalid`]'s text; it names
//! the field, never echoes what was sent.

use std::collections::HashSet;
use std::fmt;

use mesh_core::name::is_valid_id;
use mesh_core::role::Role;
use mesh_core::wire::caps::*;
use mesh_core::wire::{Announce, AuthRequest, Heartbeat, RouteRequest};

/// Why a request's body was refused, in nginx's short lowercase words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// `invalid rtmp_url: no host`
    Url { field: &'static str, why: &'static str },
    /// `no rtmp_url for a relay node`: a node others push to must say where.
    NoUrl { field: &'static str, role: Role },
    /// `invalid id in streams[3].stream`
    Id(String),
    /// `version longer than 64 bytes`
    TooLong { field: &'static str, max: usize },
    /// `more than 10000 entries in streams`
    TooMany { field: &'static str, max: usize },
    /// `table_version larger than 9007199254740992`
    TooLarge(String),
    /// `duplicate stream in streams[4]`
    Duplicate(String),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Url { field, why } => write!(f, "invalid {field}: {why}"),
            Invalid::NoUrl { field, role } => write!(f, "no {field} for a {role} node"),
            Invalid::Id(at) => write!(f, "invalid id in {at}"),
            Invalid::TooLong { field, max } => write!(f, "{field} longer than {max} bytes"),
            Invalid::TooMany { field, max } => write!(f, "more than {max} entries in {field}"),
            Invalid::TooLarge(at) => write!(f, "{at} larger than {MAX_NUMBER}"),
            Invalid::Duplicate(at) => write!(f, "duplicate stream in {at}"),
        }
    }
}

impl std::error::Error for Invalid {}

/// An announce, with the role it will have (an admin's assignment wins over the announced one).
pub fn announce(a: &Announce, role: Role) -> Result<(), Invalid> {
    id(&a.node_id, || "node_id".into())?;
    if a.rtmp_url.is_empty() {
        if matches!(role, Role::RootRelay | Role::Relay) {
            return Err(Invalid::NoUrl { field: "rtmp_url", role });
        }
    } else {
        url(&a.rtmp_url, "rtmp_url", &["rtmp://"])?;
    }
    if !a.http_url.is_empty() {
        url(&a.http_url, "http_url", &["http://", "https://"])?;
    }
    text(&a.version, "version", MAX_VERSION_LEN)
}

pub fn heartbeat(hb: &Heartbeat) -> Result<(), Invalid> {
    id(&hb.node_id, || "node_id".into())?;
    number(hb.table_version, || "table_version".into())?;
    number(hb.uptime_s, || "uptime_s".into())?;
    for (v, name) in
        [(hb.load.connections, "connections"), (hb.load.in_kbps, "in_kbps"), (hb.load.out_kbps, "out_kbps")]
    {
        number(v, || format!("load.{name}"))?;
    }
    count(hb.streams.len(), "streams", MAX_STREAMS)?;
    count(hb.pushes.len(), "pushes", MAX_PUSHES)?;
    count(hb.transcodes.len(), "transcodes", MAX_TRANSCODES)?;
    let mut seen = HashSet::with_capacity(hb.streams.len());
    for (i, s) in hb.streams.iter().enumerate() {
        id(&s.stream, || format!("streams[{i}].stream"))?;
        if s.source != "broadcaster" {
            id(&s.source, || format!("streams[{i}].source"))?;
        }
        number(s.viewers, || format!("streams[{i}].viewers"))?;
        number(s.in_kbps, || format!("streams[{i}].in_kbps"))?;
        if !seen.insert(s.stream.as_str()) {
            return Err(Invalid::Duplicate(format!("streams[{i}]")));
        }
    }
    for (i, p) in hb.pushes.iter().enumerate() {
        id(&p.stream, || format!("pushes[{i}].stream"))?;
        id(&p.to, || format!("pushes[{i}].to"))?;
        text(&p.state, "pushes.state", MAX_STATE_LEN)?;
    }
    for (i, t) in hb.transcodes.iter().enumerate() {
        id(&t.stream, || format!("transcodes[{i}].stream"))?;
        text(&t.state, "transcodes.state", MAX_STATE_LEN)?;
        number(t.restarts, || format!("transcodes[{i}].restarts"))?;
    }
    Ok(())
}

pub fn auth(a: &AuthRequest) -> Result<(), Invalid> {
    id(&a.node_id, || "node_id".into())?;
    id(&a.stream, || "stream".into())?;
    for (v, field) in [(&a.key, "key"), (&a.token, "token")] {
        if let Some(v) = v {
            text(v, field, MAX_CREDENTIAL_LEN)?;
        }
    }
    text(&a.addr, "addr", MAX_ADDR_LEN)
}

pub fn route(r: &RouteRequest) -> Result<(), Invalid> {
    id(&r.node_id, || "node_id".into())?;
    id(&r.stream, || "stream".into())
}

/// The `since` of a streams long poll.
pub fn since(v: u64) -> Result<(), Invalid> {
    number(v, || "since".into())
}

fn id(s: &str, at: impl FnOnce() -> String) -> Result<(), Invalid> {
    if is_valid_id(s) {
        Ok(())
    } else {
        Err(Invalid::Id(at()))
    }
}

fn number(v: u64, at: impl FnOnce() -> String) -> Result<(), Invalid> {
    if v <= MAX_NUMBER {
        Ok(())
    } else {
        Err(Invalid::TooLarge(at()))
    }
}

fn count(n: usize, field: &'static str, max: usize) -> Result<(), Invalid> {
    if n <= max {
        Ok(())
    } else {
        Err(Invalid::TooMany { field, max })
    }
}

/// Printable ASCII, at most `max` bytes.
fn text(s: &str, field: &'static str, max: usize) -> Result<(), Invalid> {
    if s.len() > max {
        return Err(Invalid::TooLong { field, max });
    }
    if !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(Invalid::Url { field, why: "not printable ascii" });
    }
    Ok(())
}

/// `scheme://host[:port][/path]`: one of `schemes`, a host (a name of `[A-Za-z0-9._-]` as
/// container names have, an IPv4 address or a bracketed IPv6 one), a port of 1-65535, no user, query, fragment, `..` or spaces.
fn url(u: &str, field: &'static str, schemes: &[&str]) -> Result<(), Invalid> {
    let bad = |why| Err(Invalid::Url { field, why });
    if u.len() > MAX_URL_LEN {
        return Err(Invalid::TooLong { field, max: MAX_URL_LEN });
    }
    let Some(rest) = schemes.iter().find_map(|s| u.strip_prefix(s)) else {
        return bad(if field == "rtmp_url" {
            "not an rtmp:// url"
        } else {
            "not an http:// or https:// url"
        });
    };
    if !u.bytes().all(|b| b.is_ascii_graphic()) || u.contains(['?', '#', '\\', '"', '@']) {
        return bad("invalid character");
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let Some((addr, after)) = v6.split_once(']') else { return bad("invalid host") };
            if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                return bad("invalid host");
            }
            match after {
                "" => (addr, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (addr, Some(p)),
                    None => return bad("invalid host"),
                },
            }
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return bad("no host");
    }
    if !authority.starts_with('[')
        && (host.starts_with(['-', '.'])
            || !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
    {
        return bad("invalid host");
    }
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return bad("invalid port");
        }
        if !(1..=65535).contains(&p.parse::<u32>().unwrap_or(0)) {
            return bad("invalid port");
        }
    }
    if path.split('/').any(|seg| seg == "..") {
        return bad("invalid path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::wire::{Capabilities, PushStat, StreamStat};

    fn ann(rtmp: &str, http: &str) -> Announce {
        Announce {
            node_id: "edge-1".into(),
            role: Role::Relay,
            rtmp_url: rtmp.into(),
            http_url: http.into(),
            version: "0.1.0".into(),
            capabilities: Capabilities { transcode: false, hls: false, dash: false },
        }
    }

    #[test]
    fn urls() {
        let ok =
            ["rtmp://10.0.0.3:1935", "rtmp://edge-1.example/relay", "rtmp://[::1]:1935/relay", "rtmp://h/"];
        for u in ok {
            assert_eq!(announce(&ann(u, ""), Role::Relay), Ok(()), "{u}");
        }
        let bad: &[(&str, &str)] = &[
            ("http://x:1", "invalid rtmp_url: not an rtmp:// url"),
            ("rtmp://", "invalid rtmp_url: no host"),
            ("rtmp:///relay", "invalid rtmp_url: no host"),
            ("rtmp://:1935", "invalid rtmp_url: no host"),
            ("rtmp://h:0", "invalid rtmp_url: invalid port"),
            ("rtmp://h:65536", "invalid rtmp_url: invalid port"),
            ("rtmp://h:x", "invalid rtmp_url: invalid port"),
            ("rtmp://h:", "invalid rtmp_url: invalid port"),
            ("rtmp://u@h", "invalid rtmp_url: invalid character"),
            ("rtmp://h/a?b", "invalid rtmp_url: invalid character"),
            ("rtmp://h /a", "invalid rtmp_url: invalid character"),
            ("rtmp://h!1", "invalid rtmp_url: invalid host"),
            ("rtmp://-h", "invalid rtmp_url: invalid host"),
            ("rtmp://h%1", "invalid rtmp_url: invalid host"),
            ("rtmp://[zz]:1", "invalid rtmp_url: invalid host"),
            ("rtmp://h/../x", "invalid rtmp_url: invalid path"),
        ];
        for (u, why) in bad {
            assert_eq!(announce(&ann(u, ""), Role::Relay).unwrap_err().to_string(), *why, "{u}");
        }
        let long = format!("rtmp://{}", "h".repeat(600));
        assert_eq!(
            announce(&ann(&long, ""), Role::Ingest).unwrap_err().to_string(),
            "rtmp_url longer than 512 bytes"
        );
        assert_eq!(
            announce(&ann("rtmp://h", "rtmp://h"), Role::Relay).unwrap_err().to_string(),
            "invalid http_url: not an http:// or https:// url"
        );
        assert_eq!(announce(&ann("rtmp://h", "https://h:8443/p"), Role::Relay), Ok(()));
    }

    #[test]
    fn an_empty_rtmp_url_only_for_nodes_nobody_pushes_to() {
        assert_eq!(announce(&ann("", ""), Role::Ingest), Ok(()));
        assert_eq!(announce(&ann("", ""), Role::Standalone), Ok(()));
        assert_eq!(
            announce(&ann("", ""), Role::Relay).unwrap_err().to_string(),
            "no rtmp_url for a relay node"
        );
        assert_eq!(
            announce(&ann("", ""), Role::RootRelay).unwrap_err().to_string(),
            "no rtmp_url for a root_relay node"
        );
        let mut a = ann("rtmp://h", "");
        a.version = "v".repeat(65);
        assert_eq!(announce(&a, Role::Relay).unwrap_err().to_string(), "version longer than 64 bytes");
        a.version = "1\n".into();
        assert!(announce(&a, Role::Relay).is_err());
    }

    fn stat(s: &str) -> StreamStat {
        StreamStat { stream: s.into(), source: "broadcaster".into(), viewers: 0, in_kbps: 0 }
    }

    #[test]
    fn heartbeats() {
        let hb = |f: &dyn Fn(&mut Heartbeat)| {
            let mut h = Heartbeat::empty("ingest-1", Role::Ingest);
            h.streams = vec![stat("cam1")];
            f(&mut h);
            heartbeat(&h).err().map(|e| e.to_string())
        };
        assert_eq!(hb(&|_| {}), None);
        assert_eq!(hb(&|h| h.table_version = MAX_NUMBER), None);
        type Patch = Box<dyn Fn(&mut Heartbeat)>;
        let cases: Vec<(Patch, &str)> = vec![
            (Box::new(|h| h.table_version = u64::MAX - 1), "table_version larger than 9007199254740992"),
            (Box::new(|h| h.uptime_s = MAX_NUMBER + 1), "uptime_s larger than 9007199254740992"),
            (Box::new(|h| h.load.out_kbps = u64::MAX), "load.out_kbps larger than 9007199254740992"),
            (Box::new(|h| h.streams[0].stream = "../x".into()), "invalid id in streams[0].stream"),
            (Box::new(|h| h.streams[0].source = "a b".into()), "invalid id in streams[0].source"),
            (
                Box::new(|h| h.streams[0].viewers = u64::MAX),
                "streams[0].viewers larger than 9007199254740992",
            ),
            (Box::new(|h| h.streams.push(stat("cam1"))), "duplicate stream in streams[1]"),
            (
                Box::new(|h| h.streams = (0..=MAX_STREAMS).map(|i| stat(&format!("s{i}"))).collect()),
                "more than 10000 entries in streams",
            ),
            (
                Box::new(|h| {
                    h.pushes =
                        vec![PushStat { stream: "cam1".into(), to: "".into(), state: "connected".into() }]
                }),
                "invalid id in pushes[0].to",
            ),
            (
                Box::new(|h| {
                    h.pushes = vec![PushStat { stream: "cam1".into(), to: "e".into(), state: "x".repeat(33) }]
                }),
                "pushes.state longer than 32 bytes",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(hb(&*f).as_deref(), Some(want));
        }
    }

    #[test]
    fn auth_and_route() {
        let a = AuthRequest {
            node_id: "ingest-1".into(),
            action: mesh_core::wire::Action::Publish,
            stream: "cam1".into(),
            key: Some("k".into()),
            token: None,
            addr: "192.0.2.1".into(),
        };
        assert_eq!(auth(&a), Ok(()));
        let long = AuthRequest { key: Some("k".repeat(2000)), ..a.clone() };
        assert_eq!(auth(&long).unwrap_err().to_string(), "key longer than 1024 bytes");
        let bad = AuthRequest { stream: "a/b".into(), ..a };
        assert_eq!(auth(&bad).unwrap_err().to_string(), "invalid id in stream");
        let r = RouteRequest { node_id: "edge-1".into(), stream: "".into() };
        assert_eq!(route(&r).unwrap_err().to_string(), "invalid id in stream");
    }
}
