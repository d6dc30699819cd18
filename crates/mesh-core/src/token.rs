//! Viewer tokens and broadcaster keys.
//!
//! A viewer token is `<expiry unix seconds>.<hex HMAC-SHA256(viewer_secret, stream "\n" expiry)>`.
//! A broadcaster key is stored as its hex sha256 and compared in constant time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a viewer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Malformed | TokenError::BadSignature => "bad token",
            TokenError::Expired => "expired token",
        })
    }
}

fn mac(secret: &str, stream: &str, expiry: u64) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(stream.as_bytes());
    m.update(b"\n");
    m.update(expiry.to_string().as_bytes());
    m
}

/// Make a token for `stream` valid until `expiry` (unix seconds).
pub fn make_viewer_token(secret: &str, stream: &str, expiry: u64) -> String {
    let sig = mac(secret, stream, expiry).finalize().into_bytes();
    format!("{expiry}.{}", hex::encode(sig))
}

/// Check a viewer token for `stream` at time `now`. The signature is checked before the expiry,
/// so a forged token never learns whether its expiry would have passed.
pub fn verify_viewer_token(secret: &str, stream: &str, token: &str, now: u64) -> Result<(), TokenError> {
    let (expiry, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
    let mut raw = [0u8; 32];
    if sig.len() != 64 || hex::decode_to_slice(sig, &mut raw).is_err() {
        return Err(TokenError::Malformed);
    }
    mac(secret, stream, expiry).verify_slice(&raw).map_err(|_| TokenError::BadSignature)?;
    if expiry < now {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// sha256 of a broadcaster's stream key, as stored in `publish[stream].key_sha256`.
pub fn key_sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Hex form of [`key_sha256`], for writing tables.
pub fn key_sha256_hex(key: &str) -> String {
    hex::encode(key_sha256(key))
}

/// Constant-time equality of two byte strings (their lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip() {
        let t = make_viewer_token("sec", "cam1", 2_000);
        assert!(t.starts_with("2000."));
        assert_eq!(verify_viewer_token("sec", "cam1", &t, 1_999), Ok(()));
        assert_eq!(verify_viewer_token("sec", "cam1", &t, 2_000), Ok(()));
        assert_eq!(verify_viewer_token("sec", "cam1", &t, 2_001), Err(TokenError::Expired));
    }

    #[test]
    fn token_is_bound_to_secret_stream_and_expiry() {
        let t = make_viewer_token("sec", "cam1", 2_000);
        assert_eq!(verify_viewer_token("other", "cam1", &t, 0), Err(TokenError::BadSignature));
        assert_eq!(verify_viewer_token("sec", "cam2", &t, 0), Err(TokenError::BadSignature));
        let moved = t.replacen("2000.", "9000.", 1);
        assert_eq!(verify_viewer_token("sec", "cam1", &moved, 0), Err(TokenError::BadSignature));
        // An expired forgery says "bad signature", not "expired".
        assert_eq!(verify_viewer_token("other", "cam1", &t, 5_000), Err(TokenError::BadSignature));
    }

    #[test]
    fn known_vector() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"sec",b"cam1\n2000",hashlib.sha256).hexdigest())'
        assert_eq!(
            make_viewer_token("sec", "cam1", 2_000),
            "2000.e7945b29608238061af02f9864ea77ed524760f97304d63bd127d526e56ce94b"
        );
    }

    #[test]
    fn malformed_tokens() {
        for t in [
            "",
            "2000",
            ".abc",
            "x.00",
            "20a0.00",
            &format!("1.{}", "0".repeat(63)),
            &format!("1.{}", "g".repeat(64)),
            &format!("{}.{}", "9".repeat(21), "0".repeat(64)),
        ] {
            assert_eq!(verify_viewer_token("s", "c", t, 0), Err(TokenError::Malformed), "{t:?}");
        }
    }

    #[test]
    fn key_hash() {
        // printf %s abc | sha256sum
        assert_eq!(key_sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
