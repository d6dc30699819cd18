//! Signatures between node and master (docs/protocol.md, "Node → master").
//!
//! Request:  hex HMAC-SHA256(MASTER_KEY, METHOD "\n" PATH?QUERY "\n" TIMESTAMP "\n" hex sha256(body))
//! Response: hex HMAC-SHA256(MASTER_KEY, STATUS "\n" TIMESTAMP "\n" hex sha256(body))
//!
//! `PATH?QUERY` is the path alone when there is no query. A message is used only when its
//! signature verifies and its timestamp is within [`MAX_SKEW_S`] of the receiver's clock.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Largest accepted distance between a message's timestamp and the receiver's clock.
pub const MAX_SKEW_S: u64 = 300;

/// Header names.
pub const H_NODE: &str = "X-Mesh-Node";
pub const H_TIMESTAMP: &str = "X-Mesh-Timestamp";
pub const H_SIGNATURE: &str = "X-Mesh-Signature";

/// Why a signed message was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigError {
    Missing,
    BadTimestamp,
    /// Timestamp outside [`MAX_SKEW_S`].
    Skew,
    BadSignature,
}

impl std::fmt::Display for SigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigError::Missing => "missing signature",
            SigError::BadTimestamp => "bad timestamp",
            SigError::Skew => "timestamp outside 300 s",
            SigError::BadSignature => "bad signature",
        })
    }
}

/// Hex sha256 of a body.
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// HMAC-SHA256 of `parts` joined by newlines (request and response signatures, viewer tokens).
pub(crate) fn mac<P: AsRef<[u8]>>(key: &[u8], parts: &[P]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            m.update(b"\n");
        }
        m.update(p.as_ref());
    }
    m
}

fn sign(key: &[u8], parts: &[&str]) -> String {
    hex::encode(mac(key, parts).finalize().into_bytes())
}

/// Signature of a request.
pub fn sign_request(key: &[u8], method: &str, path_query: &str, ts: u64, body: &[u8]) -> String {
    sign(key, &[method, path_query, &ts.to_string(), &body_sha256_hex(body)])
}

/// Signature of a response.
pub fn sign_response(key: &[u8], status: u16, ts: u64, body: &[u8]) -> String {
    sign(key, &[&status.to_string(), &ts.to_string(), &body_sha256_hex(body)])
}

/// A message's `X-Mesh-Timestamp` and `X-Mesh-Signature` headers, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stamp<'a> {
    pub ts: Option<&'a str>,
    pub sig: Option<&'a str>,
}

/// Check `stamp` against the signed text that `parts` makes from the timestamp as received.
/// The signature is checked before the clock, so a forgery learns nothing.
fn verify(
    key: &[u8],
    stamp: Stamp<'_>,
    now: u64,
    parts: impl FnOnce(&str) -> Vec<String>,
) -> Result<(), SigError> {
    let ts = stamp.ts.ok_or(SigError::Missing)?.trim();
    let sig = stamp.sig.ok_or(SigError::Missing)?.trim();
    let parts = parts(ts);
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let mut raw = [0u8; 32];
    if sig.len() != 64 || hex::decode_to_slice(sig, &mut raw).is_err() {
        return Err(SigError::BadSignature);
    }
    mac(key, &parts).verify_slice(&raw).map_err(|_| SigError::BadSignature)?;
    let t: u64 = ts.parse().map_err(|_| SigError::BadTimestamp)?;
    if t.abs_diff(now) > MAX_SKEW_S {
        return Err(SigError::Skew);
    }
    Ok(())
}

/// Verify a response against its status and body, at time `now`.
pub fn verify_response(
    key: &[u8],
    status: u16,
    stamp: Stamp<'_>,
    body: &[u8],
    now: u64,
) -> Result<(), SigError> {
    verify(key, stamp, now, |ts| vec![status.to_string(), ts.to_string(), body_sha256_hex(body)])
}

/// Verify a request (the master's side: the reference master and the tests).
pub fn verify_request(
    key: &[u8],
    method: &str,
    path_query: &str,
    stamp: Stamp<'_>,
    body: &[u8],
    now: u64,
) -> Result<(), SigError> {
    verify(key, stamp, now, |ts| {
        vec![method.to_string(), path_query.to_string(), ts.to_string(), body_sha256_hex(body)]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"1234567890-SUPER-STRONG-KEY";

    #[test]
    fn known_vectors() {
        // python3: hmac.new(KEY, b"POST\n/announce\n1000\n" + sha256(b"{}").hexdigest().encode(), sha256)
        assert_eq!(body_sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(
            sign_request(KEY, "POST", "/announce", 1000, b"{}"),
            "e96d68f55e47792c8a20ab99f281d8cd2c0cc32d75ca213b81b27047837b53b5"
        );
        assert_eq!(
            sign_response(KEY, 200, 1000, b"{}"),
            "6de73935dfacbe8a3781ec246e4616731ab5d910256aaea671f847a7e9d2b852"
        );
    }

    /// The exchange in docs/protocol.md.
    #[test]
    fn documented_exchange() {
        let key = b"1234567890-SUPER-STRONG-KEY";
        let ts = 1_795_400_000;
        let announce = br#"{"node_id":"edge-1","role":"relay","rtmp_url":"rtmp://10.0.0.3:1935","http_url":"http://10.0.0.3:8080","version":"0.1.0","capabilities":{"transcode":false,"hls":false,"dash":false}}"#;
        assert_eq!(announce.len(), 181);
        assert_eq!(
            sign_request(key, "POST", "/announce", ts, announce),
            "3a9750d574d1953613ced5e50bec72d2e558c6874bce90764fccff8da8c96ac7"
        );
        assert_eq!(
            sign_response(
                key,
                200,
                ts,
                br#"{"role":"relay","heartbeat_interval_s":10,"table_refresh_s":25}"#
            ),
            "fabba5c81709324a649a3f330f5038e8b5ce1dea1b4ab37c1627eb23170b460a"
        );
        assert_eq!(
            sign_request(key, "GET", "/streams?node_id=edge-1&since=41&wait=25", ts, b""),
            "bc05447022d4e2d21be45e883b6bd65da0ffc886532443db915d8f9e57b2364c"
        );
        let table = br#"{"version":42,"role":"relay","relay":{"cam1":[{"node_id":"edge-1","node_url":"rtmp://10.0.0.3:1935/relay","node_key":"k-root1-edge1-cam1"}]},"viewer_keys":[{"id":"k1","secret":"0123456789abcdef"}],"max_token_ttl_s":86400,"streams":{"cam1":{"id":"5f0c2a9e"}}}"#;
        assert_eq!(table.len(), 258);
        assert_eq!(
            sign_response(key, 200, ts, table),
            "aded434b844a79ade537163cd73bd54f3ae9ed84b9ecd1968a4c0dff93c6eb1e"
        );
        let t = crate::Table::parse(table).expect("the documented table is valid");
        // The documented token verifies with it (docs/protocol.md, "Viewer tokens").
        let token = "v2.k1.1795403600.676f0845be96e59df5b243fd4f477a8985f89c612fb2aa18ff07f3ff371ede1a";
        assert_eq!(t.verify_viewer("cam1", token, ts), Ok(()));
        assert_eq!(
            sign_response(key, 304, ts, b""),
            "45e43beb54a430a617bc114f63a2db777aa5d402ef3119693c25c75f1413d85b"
        );
        let hb = br#"{"node_id":"edge-1","role":"relay","table_version":42,"uptime_s":3600,"streams":[{"stream":"cam1","source":"root-1","viewers":3,"in_kbps":2500}],"pushes":[],"transcodes":[],"load":{"connections":5,"in_kbps":2500,"out_kbps":7500}}"#;
        assert_eq!(
            sign_request(key, "POST", "/heartbeat", ts, hb),
            "14fb035dffa113fc6c3660372a07af56a04abe5729771b25765233439555fb6d"
        );
        assert_eq!(
            sign_response(key, 200, ts, br#"{"table_version":42}"#),
            "25ad3d23b5c0c2ff5fd28ff101917ff94a2708b7d3387a831c3bf465a2a1e8a5"
        );
    }

    #[test]
    fn round_trips() {
        let s = sign_request(KEY, "GET", "/streams?node_id=a&since=1&wait=25", 5000, b"");
        assert_eq!(
            verify_request(
                KEY,
                "GET",
                "/streams?node_id=a&since=1&wait=25",
                Stamp { ts: Some("5000"), sig: Some(&s) },
                b"",
                5100
            ),
            Ok(())
        );
        let r = sign_response(KEY, 200, 5000, b"{\"version\":1}");
        assert_eq!(
            verify_response(KEY, 200, Stamp { ts: Some("5000"), sig: Some(&r) }, b"{\"version\":1}", 4800),
            Ok(())
        );
    }

    #[test]
    fn refusals() {
        let body = b"{\"version\":1}";
        let r = sign_response(KEY, 200, 5000, body);
        let v = |status, ts: Option<&str>, sig: Option<&str>, body: &[u8], now| {
            verify_response(KEY, status, Stamp { ts, sig }, body, now)
        };
        assert_eq!(v(200, None, Some(&r), body, 5000), Err(SigError::Missing));
        assert_eq!(v(200, Some("5000"), None, body, 5000), Err(SigError::Missing));
        assert_eq!(v(200, Some("5000"), Some(&r), b"{\"version\":2}", 5000), Err(SigError::BadSignature));
        assert_eq!(v(304, Some("5000"), Some(&r), body, 5000), Err(SigError::BadSignature));
        assert_eq!(v(200, Some("5001"), Some(&r), body, 5000), Err(SigError::BadSignature));
        assert_eq!(v(200, Some("5000"), Some("zz"), body, 5000), Err(SigError::BadSignature));
        assert_eq!(v(200, Some("5000"), Some(&r), body, 5301), Err(SigError::Skew));
        assert_eq!(v(200, Some("5000"), Some(&r), body, 4699), Err(SigError::Skew));
        assert_eq!(v(200, Some("5000"), Some(&r), body, 5300), Ok(()));
        let wrong_key = verify_response(b"other", 200, Stamp { ts: Some("5000"), sig: Some(&r) }, body, 5000);
        assert_eq!(wrong_key, Err(SigError::BadSignature));
        let s = sign_request(KEY, "POST", "/auth", 5000, b"x");
        assert_eq!(
            verify_request(KEY, "POST", "/route", Stamp { ts: Some("5000"), sig: Some(&s) }, b"x", 5000),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            verify_request(KEY, "GET", "/auth", Stamp { ts: Some("5000"), sig: Some(&s) }, b"x", 5000),
            Err(SigError::BadSignature)
        );
        let bad_ts = sign_request(KEY, "POST", "/auth", 0, b"x");
        assert_eq!(
            verify_request(KEY, "POST", "/auth", Stamp { ts: Some("x1"), sig: Some(&bad_ts) }, b"x", 5000),
            Err(SigError::BadSignature)
        );
    }
}
