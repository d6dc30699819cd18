//! Signatures between node and master (docs/protocol.md, "Node → master").
//!
//! Each node has its own key ([`node_key`]: derived by the master from its secret and the node
//! id). With `K` that key and `H(x)` the hex sha256 of `x`:
//!
//! Request:  hex HMAC-SHA256(K, "mesh-request-v2" "\n" METHOD "\n" PATH?QUERY "\n" TIMESTAMP "\n" NONCE "\n" H(body))
//! Response: hex HMAC-SHA256(K, "mesh-response-v2" "\n" STATUS "\n" TIMESTAMP "\n" NONCE "\n" METHOD "\n" PATH?QUERY "\n" H(body))
//!
//! `NONCE` is the request's `X-Mesh-Nonce` (32 lowercase hex digits, 128 random bits): the
//! response signature covers it and the request's method and path, so an answer is good for
//! the one request it answers. `PATH?QUERY` is the path alone when there is no query. A message
//! is used only when its signature verifies and its timestamp is within [`MAX_SKEW_S`] of the
//! receiver's clock; the master also refuses a nonce it has seen within that window.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Largest accepted distance between a message's timestamp and the receiver's clock.
pub const MAX_SKEW_S: u64 = 300;

/// Header names.
pub const H_NODE: &str = "X-Mesh-Node";
pub const H_TIMESTAMP: &str = "X-Mesh-Timestamp";
pub const H_SIGNATURE: &str = "X-Mesh-Signature";
pub const H_NONCE: &str = "X-Mesh-Nonce";

/// Random bytes in a nonce (hex on the wire: twice as many digits).
pub const NONCE_BYTES: usize = 16;

/// The label a node key is derived under (docs/protocol.md, "Node keys").
pub const NODE_KEY_LABEL: &str = "ngx_rtmp_mesh node key v1";

const REQUEST_LABEL: &str = "mesh-request-v2";
const RESPONSE_LABEL: &str = "mesh-response-v2";

/// Why a signed message was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigError {
    Missing,
    BadTimestamp,
    /// Timestamp outside [`MAX_SKEW_S`].
    Skew,
    BadSignature,
    /// No nonce of 32 lowercase hex digits.
    BadNonce,
}

impl std::fmt::Display for SigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigError::Missing => "missing signature",
            SigError::BadTimestamp => "bad timestamp",
            SigError::Skew => "timestamp outside 300 s",
            SigError::BadSignature => "bad signature",
            SigError::BadNonce => "bad nonce",
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

/// The key of node `node_id` (generation `generation`, 0 until the admin API rotates it):
/// hex HMAC-SHA256(master secret, NODE_KEY_LABEL "\n" node_id "\n" generation). The node signs
/// with the 64 ASCII characters of this hex string as its HMAC key.
pub fn node_key(master_secret: &[u8], node_id: &str, generation: u64) -> String {
    sign(master_secret, &[NODE_KEY_LABEL, node_id, &generation.to_string()])
}

/// A nonce as it goes on the wire: 32 lowercase hex digits.
pub fn nonce_hex(random: [u8; NONCE_BYTES]) -> String {
    hex::encode(random)
}

/// The 128 bits of a nonce as sent, when it is 32 lowercase hex digits.
pub fn parse_nonce(s: &str) -> Option<u128> {
    if s.len() != 2 * NONCE_BYTES || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

/// The request an answer is bound to: what the response signature covers of it.
#[derive(Debug, Clone, Copy)]
pub struct Bound<'a> {
    pub method: &'a str,
    pub path_query: &'a str,
    pub nonce: &'a str,
}

/// Signature of a request.
pub fn sign_request(key: &[u8], method: &str, path_query: &str, ts: u64, nonce: &str, body: &[u8]) -> String {
    sign(key, &[REQUEST_LABEL, method, path_query, &ts.to_string(), nonce, &body_sha256_hex(body)])
}

/// Signature of the response to request `to`.
pub fn sign_response(key: &[u8], to: Bound<'_>, status: u16, ts: u64, body: &[u8]) -> String {
    sign(
        key,
        &[
            RESPONSE_LABEL,
            &status.to_string(),
            &ts.to_string(),
            to.nonce,
            to.method,
            to.path_query,
            &body_sha256_hex(body),
        ],
    )
}

/// A message's `X-Mesh-Timestamp` and `X-Mesh-Signature` headers (and a request's
/// `X-Mesh-Nonce`), as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stamp<'a> {
    pub ts: Option<&'a str>,
    pub sig: Option<&'a str>,
    pub nonce: Option<&'a str>,
}

/// Check `stamp` against the signed text that `parts` makes from the timestamp as received.
/// The signature is checked before the clock, so a forgery learns nothing.
fn verify(
    key: &[u8],
    stamp: Stamp<'_>,
    now: u64,
    parts: impl FnOnce(&str) -> Vec<String>,
) -> Result<u64, SigError> {
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
    Ok(t)
}

/// Verify the response to request `to` against its status and body, at time `now`.
pub fn verify_response(
    key: &[u8],
    to: Bound<'_>,
    status: u16,
    stamp: Stamp<'_>,
    body: &[u8],
    now: u64,
) -> Result<(), SigError> {
    verify(key, stamp, now, |ts| {
        vec![
            RESPONSE_LABEL.to_string(),
            status.to_string(),
            ts.to_string(),
            to.nonce.to_string(),
            to.method.to_string(),
            to.path_query.to_string(),
            body_sha256_hex(body),
        ]
    })
    .map(|_| ())
}

/// A request that verified: its timestamp (as signed) and its nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ts: u64,
    pub nonce: u128,
}

/// Verify a request (the master's side: the reference master and the tests). The caller
/// still has to refuse a nonce it has seen (the master's nonce memory).
pub fn verify_request(
    key: &[u8],
    method: &str,
    path_query: &str,
    stamp: Stamp<'_>,
    body: &[u8],
    now: u64,
) -> Result<Verified, SigError> {
    let nonce_text = stamp.nonce.ok_or(SigError::Missing)?.trim();
    let ts = verify(key, stamp, now, |ts| {
        vec![
            REQUEST_LABEL.to_string(),
            method.to_string(),
            path_query.to_string(),
            ts.to_string(),
            nonce_text.to_string(),
            body_sha256_hex(body),
        ]
    })?;
    let nonce = parse_nonce(nonce_text).ok_or(SigError::BadNonce)?;
    Ok(Verified { ts, nonce })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"1234567890-SUPER-STRONG-KEY";
    const N0: &str = "00000000000000000000000000000000";

    fn to<'a>(method: &'a str, path_query: &'a str, nonce: &'a str) -> Bound<'a> {
        Bound { method, path_query, nonce }
    }

    fn stamp<'a>(ts: &'a str, sig: &'a str, nonce: &'a str) -> Stamp<'a> {
        Stamp { ts: Some(ts), sig: Some(sig), nonce: Some(nonce) }
    }

    #[test]
    fn known_vectors() {
        // python3: hmac.new(KEY, "\n".join(["mesh-request-v2", "POST", "/announce", "1000", N0,
        //   sha256(b"{}").hexdigest()]).encode(), sha256).hexdigest()
        assert_eq!(body_sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(
            sign_request(KEY, "POST", "/announce", 1000, N0, b"{}"),
            "6ffa8ee505983a476bac653e64a5fdf5b5769b8e5a7ba153996c9512565f161c"
        );
        assert_eq!(
            sign_response(KEY, to("POST", "/announce", N0), 200, 1000, b"{}"),
            "21dfebc7a13b7ba1936391f8d82a306732a598a00a4e5e58c697c4a51c59a38e"
        );
    }

    /// The exchange in docs/protocol.md.
    #[test]
    fn documented_exchange() {
        let key = node_key(b"1234567890-SUPER-STRONG-KEY", "edge-1", 0);
        assert_eq!(key, "85327fb490f56b41d774cc54a1e4903622efa87cf4ce6205c9d84b2f36e7c62e");
        assert_ne!(key, node_key(b"1234567890-SUPER-STRONG-KEY", "edge-2", 0), "one key per node");
        assert_ne!(key, node_key(b"1234567890-SUPER-STRONG-KEY", "edge-1", 1), "one key per generation");
        let key = key.as_bytes();
        let ts = 1_795_400_000;
        let n1 = "5d1c3b8e9f0a4c7d2e6b1a9f8c7d6e5f";
        let announce = br#"{"node_id":"edge-1","role":"relay","rtmp_url":"rtmp://10.0.0.3:1935","http_url":"http://10.0.0.3:8080","version":"0.1.0","capabilities":{"transcode":false,"hls":false,"dash":false}}"#;
        assert_eq!(announce.len(), 181);
        assert_eq!(
            sign_request(key, "POST", "/announce", ts, n1, announce),
            "6f748dfe2921ad10441fd15c122627e0bd089dc2fdfa61c663aada6a8d6955e2"
        );
        let reply = br#"{"role":"relay","heartbeat_interval_s":10,"table_refresh_s":25,"epoch":"9d2f7c41e0b35a86d4c1f0e2a7b69358"}"#;
        assert_eq!(reply.len(), 106);
        assert_eq!(
            sign_response(key, to("POST", "/announce", n1), 200, ts, reply),
            "89b0ab24bd8303c4f8c72919462ae3dd37737cc28b9330133ee265cff70d9788"
        );
        let n2 = "a3f09c5e71b2486d9e0c1f2a3b4c5d6e";
        let poll = "/streams?node_id=edge-1&since=41&wait=25";
        assert_eq!(
            sign_request(key, "GET", poll, ts, n2, b""),
            "4d3b62eb4277a62f0e6d182720d9d2ec4b6360749e5a6a89a91ca0f371d7e549"
        );
        let table = br#"{"version":42,"epoch":"9d2f7c41e0b35a86d4c1f0e2a7b69358","role":"relay","relay":{"cam1":[{"node_id":"edge-1","node_url":"rtmp://10.0.0.3:1935/relay","node_key":"k-root1-edge1-cam1"}]},"viewer_keys":[{"id":"k1","secret":"0123456789abcdef"}],"max_token_ttl_s":86400,"streams":{"cam1":{"id":"5f0c2a9e"}}}"#;
        assert_eq!(table.len(), 301);
        assert_eq!(
            sign_response(key, to("GET", poll, n2), 200, ts, table),
            "eab7d54b3adec3b859a80d50daedc4f0c5fea3886de5f9dfed8f70dede74cb83"
        );
        let t = crate::Table::parse(table).expect("the documented table is valid");
        assert_eq!(t.epoch.as_deref(), Some("9d2f7c41e0b35a86d4c1f0e2a7b69358"));
        // The documented token verifies with it (docs/protocol.md, "Viewer tokens").
        let token = "v2.k1.1795403600.676f0845be96e59df5b243fd4f477a8985f89c612fb2aa18ff07f3ff371ede1a";
        assert_eq!(t.verify_viewer("cam1", token, ts), Ok(()));
        assert_eq!(
            sign_response(key, to("GET", poll, n2), 304, ts, b""),
            "fee182e3334971dddd94a80c6b7068ea3d365df2f5c35711b00370ebc552ce78"
        );
        let n3 = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let hb = br#"{"node_id":"edge-1","role":"relay","table_version":42,"uptime_s":3600,"streams":[{"stream":"cam1","source":"root-1","viewers":3,"in_kbps":2500}],"pushes":[],"transcodes":[],"load":{"connections":5,"in_kbps":2500,"out_kbps":7500}}"#;
        assert_eq!(
            sign_request(key, "POST", "/heartbeat", ts, n3, hb),
            "bfdfaa89e9141e61fee4368f9c3a20bab68ef3732996b4bb9b8b949f5e02b9e5"
        );
        let hbr = br#"{"table_version":42,"role":"relay","epoch":"9d2f7c41e0b35a86d4c1f0e2a7b69358"}"#;
        assert_eq!(hbr.len(), 78);
        assert_eq!(
            sign_response(key, to("POST", "/heartbeat", n3), 200, ts, hbr),
            "923489e5a076f9f763c478ee79b5ceff509298c3f624d4b3868b2d5322e6f22b"
        );
        let r: crate::wire::HeartbeatReply = serde_json::from_slice(hbr).unwrap();
        assert_eq!(serde_json::to_vec(&r).unwrap(), hbr, "the master's serialization");
    }

    #[test]
    fn round_trips() {
        let pq = "/streams?node_id=a&since=1&wait=25";
        let n = "0123456789abcdef0123456789abcdef";
        let s = sign_request(KEY, "GET", pq, 5000, n, b"");
        assert_eq!(
            verify_request(KEY, "GET", pq, stamp("5000", &s, n), b"", 5100),
            Ok(Verified { ts: 5000, nonce: 0x0123456789abcdef0123456789abcdef })
        );
        let r = sign_response(KEY, to("GET", pq, n), 200, 5000, b"{\"version\":1}");
        assert_eq!(
            verify_response(KEY, to("GET", pq, n), 200, stamp("5000", &r, ""), b"{\"version\":1}", 4800),
            Ok(())
        );
    }

    /// An answer is good for the request it answers only: another nonce, method or path (a
    /// recorded answer replayed to another request) does not verify.
    #[test]
    fn an_answer_is_bound_to_its_request() {
        let body = b"{\"allow\":true}";
        let n = "0123456789abcdef0123456789abcdef";
        let r = sign_response(KEY, to("POST", "/auth", n), 200, 5000, body);
        let v = |b: Bound<'_>| verify_response(KEY, b, 200, stamp("5000", &r, ""), body, 5000);
        assert_eq!(v(to("POST", "/auth", n)), Ok(()));
        assert_eq!(v(to("POST", "/auth", "1123456789abcdef0123456789abcdef")), Err(SigError::BadSignature));
        assert_eq!(v(to("POST", "/route", n)), Err(SigError::BadSignature));
        assert_eq!(v(to("GET", "/auth", n)), Err(SigError::BadSignature));
        // A request signature never passes for a response, nor the reverse.
        let q = sign_request(KEY, "POST", "/auth", 5000, n, body);
        assert_eq!(
            verify_response(KEY, to("POST", "/auth", n), 200, stamp("5000", &q, ""), body, 5000),
            Err(SigError::BadSignature)
        );
    }

    #[test]
    fn nonces() {
        assert_eq!(nonce_hex([0xab; NONCE_BYTES]), "abababababababababababababababab");
        assert_eq!(parse_nonce("abababababababababababababababab"), Some(0xabababababababababababababababab));
        for bad in [
            "",
            "ab",
            "ABABABABABABABABABABABABABABABAB",
            "abababababababababababababababag",
            &"a".repeat(33),
        ] {
            assert_eq!(parse_nonce(bad), None, "{bad}");
        }
        let s = sign_request(KEY, "POST", "/auth", 5000, "xyz", b"x");
        assert_eq!(
            verify_request(KEY, "POST", "/auth", stamp("5000", &s, "xyz"), b"x", 5000),
            Err(SigError::BadNonce)
        );
        let s = sign_request(KEY, "POST", "/auth", 5000, N0, b"x");
        let no_nonce = Stamp { ts: Some("5000"), sig: Some(&s), nonce: None };
        assert_eq!(verify_request(KEY, "POST", "/auth", no_nonce, b"x", 5000), Err(SigError::Missing));
        let other = "10000000000000000000000000000000";
        assert_eq!(
            verify_request(KEY, "POST", "/auth", stamp("5000", &s, other), b"x", 5000),
            Err(SigError::BadSignature),
            "the nonce is signed"
        );
    }

    #[test]
    fn refusals() {
        let body = b"{\"version\":1}";
        let b = to("GET", "/streams", N0);
        let r = sign_response(KEY, b, 200, 5000, body);
        let v = |status, ts: Option<&str>, sig: Option<&str>, body: &[u8], now| {
            verify_response(KEY, b, status, Stamp { ts, sig, nonce: None }, body, now)
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
        let wrong_key = verify_response(b"other", b, 200, stamp("5000", &r, ""), body, 5000);
        assert_eq!(wrong_key, Err(SigError::BadSignature));
        let s = sign_request(KEY, "POST", "/auth", 5000, N0, b"x");
        assert_eq!(
            verify_request(KEY, "POST", "/route", stamp("5000", &s, N0), b"x", 5000),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            verify_request(KEY, "GET", "/auth", stamp("5000", &s, N0), b"x", 5000),
            Err(SigError::BadSignature)
        );
        let bad_ts = sign_request(KEY, "POST", "/auth", 0, N0, b"x");
        assert_eq!(
            verify_request(KEY, "POST", "/auth", stamp("x1", &bad_ts, N0), b"x", 5000),
            Err(SigError::BadSignature)
        );
        // Another node's key does not sign for this one.
        let a = node_key(KEY, "edge-a", 0);
        let s = sign_request(node_key(KEY, "edge-b", 0).as_bytes(), "POST", "/auth", 5000, N0, b"x");
        assert_eq!(
            verify_request(a.as_bytes(), "POST", "/auth", stamp("5000", &s, N0), b"x", 5000),
            Err(SigError::BadSignature)
        );
    }
}
