//! Viewer token formats and broadcaster keys.
//!
//! Two viewer token formats (docs/protocol.md, "Viewer tokens"):
//!
//! * v2: `v2.<kid>.<expiry>.<hex HMAC-SHA256(secret of key kid, "v2\n" kid "\n" stream "\n"
//!   stream_id "\n" expiry)>`: names the key that signed it (so keys rotate) and is bound to the
//!   stream's identity (so a re-created stream refuses it).
//! * legacy: `<expiry>.<hex HMAC-SHA256(viewer_secret, stream "\n" expiry)>`.
//!
//! Which keys, stream identities and lifetimes are accepted is [`crate::viewer`]'s business. A
//! broadcaster key is stored as its hex sha256 and compared in constant time.

use hmac::Mac;

use crate::sign::{mac, HmacSha256};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a viewer token was refused (or could not be made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired,
    /// A v2 token whose key id is not in the key list, or a legacy token where there is no
    /// `viewer_secret`.
    UnknownKey,
    /// Signed by a key whose grace period (`not_after`) has ended.
    RetiredKey,
    /// The expiry is further from now than the maximum lifetime (or a mint asked for more).
    TooLong,
    /// The table names its streams' identities and this stream is not among them.
    UnknownStream,
    /// Mint: no key without `not_after` (and no legacy secret) to sign with.
    NoSigningKey,
    /// Mint: a lifetime of 0 s, or one whose expiry does not fit in a u64.
    BadTtl,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Malformed | TokenError::BadSignature | TokenError::UnknownKey => "bad token",
            TokenError::Expired => "expired token",
            TokenError::RetiredKey => "retired key",
            TokenError::TooLong => "token lifetime too long",
            TokenError::UnknownStream => "unknown stream",
            TokenError::NoSigningKey => "no signing key",
            TokenError::BadTtl => "bad ttl",
        })
    }
}

impl std::error::Error for TokenError {}

/// Longest key id (`viewer_keys[].id`).
pub const MAX_KID_LEN: usize = 32;
/// Longest stream identity (`streams.S.id`).
pub const MAX_STREAM_ID_LEN: usize = 64;

fn is_token_word(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A key id: 1-32 of `A-Z a-z 0-9 _ -` (no `.`, so it splits out of a token; no newline, so the
/// signed text is unambiguous).
pub fn is_valid_kid(kid: &str) -> bool {
    is_token_word(kid, MAX_KID_LEN)
}

/// A stream identity: 1-64 of `A-Z a-z 0-9 _ -`.
pub fn is_valid_stream_id(id: &str) -> bool {
    is_token_word(id, MAX_STREAM_ID_LEN)
}

fn legacy_mac(secret: &str, stream: &str, expiry: u64) -> HmacSha256 {
    mac(secret.as_bytes(), &[stream.as_bytes(), expiry.to_string().as_bytes()])
}

fn v2_mac(secret: &str, kid: &str, stream: &str, stream_id: &str, expiry: u64) -> HmacSha256 {
    let expiry = expiry.to_string();
    mac(
        secret.as_bytes(),
        &[b"v2", kid.as_bytes(), stream.as_bytes(), stream_id.as_bytes(), expiry.as_bytes()],
    )
}

/// A token taken apart (nothing verified yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    V2 { kid: &'a str, expiry: u64, sig: [u8; 32] },
    Legacy { expiry: u64, sig: [u8; 32] },
}

impl Parsed<'_> {
    pub fn expiry(&self) -> u64 {
        match self {
            Parsed::V2 { expiry, .. } | Parsed::Legacy { expiry, .. } => *expiry,
        }
    }
}

// A token has one spelling only: the expiry in decimal without leading zeros, the signature in
// lowercase hex, as they are made. Anything else would let one token be written in 2^64 and
// more ways, each a different string to every table keyed by it (the auth answers cached per
// credential, the questions shared per credential): one leaked token would become any number
// of credentials the master allows, crowding out the answers other viewers rely on.

fn parse_expiry(s: &str) -> Result<u64, TokenError> {
    if s.is_empty()
        || s.len() > 20
        || !s.bytes().all(|b| b.is_ascii_digit())
        || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(TokenError::Malformed);
    }
    s.parse().map_err(|_| TokenError::Malformed)
}

fn parse_sig(s: &str) -> Result<[u8; 32], TokenError> {
    let mut raw = [0u8; 32];
    if s.len() != 64
        || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        || hex::decode_to_slice(s, &mut raw).is_err()
    {
        return Err(TokenError::Malformed);
    }
    Ok(raw)
}

/// Take a token apart: `v2.<kid>.<expiry>.<64 hex>` or `<expiry>.<64 hex>`.
pub fn parse_token(token: &str) -> Result<Parsed<'_>, TokenError> {
    match token.strip_prefix("v2.") {
        Some(rest) => {
            let mut it = rest.split('.');
            let (Some(kid), Some(expiry), Some(sig), None) = (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(TokenError::Malformed);
            };
            if !is_valid_kid(kid) {
                return Err(TokenError::Malformed);
            }
            Ok(Parsed::V2 { kid, expiry: parse_expiry(expiry)?, sig: parse_sig(sig)? })
        }
        None => {
            let (expiry, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
            Ok(Parsed::Legacy { expiry: parse_expiry(expiry)?, sig: parse_sig(sig)? })
        }
    }
}

/// Make a v2 token. `kid` must satisfy [`is_valid_kid`]; `stream_id` is the stream's identity
/// (empty when the table names none).
pub fn make_token_v2(secret: &str, kid: &str, stream: &str, stream_id: &str, expiry: u64) -> String {
    let sig = v2_mac(secret, kid, stream, stream_id, expiry).finalize().into_bytes();
    format!("v2.{kid}.{expiry}.{}", hex::encode(sig))
}

/// Whether `sig` is the v2 signature of these fields (constant-time compare).
pub fn v2_signature_ok(
    secret: &str,
    kid: &str,
    stream: &str,
    stream_id: &str,
    expiry: u64,
    sig: &[u8],
) -> bool {
    v2_mac(secret, kid, stream, stream_id, expiry).verify_slice(sig).is_ok()
}

/// Whether `sig` is the legacy signature of these fields (constant-time compare).
pub fn legacy_signature_ok(secret: &str, stream: &str, expiry: u64, sig: &[u8]) -> bool {
    legacy_mac(secret, stream, expiry).verify_slice(sig).is_ok()
}

/// Make a legacy token for `stream` valid until `expiry` (unix seconds).
pub fn make_viewer_token(secret: &str, stream: &str, expiry: u64) -> String {
    let sig = legacy_mac(secret, stream, expiry).finalize().into_bytes();
    format!("{expiry}.{}", hex::encode(sig))
}

/// Check a legacy token for `stream` at time `now`: signature, then expiry (no key ids, no
/// stream identity, no lifetime bound). The signature is checked before the expiry, so a
/// forged token never learns whether its expiry would have passed. Prefer
/// [`crate::Table::verify_viewer`], which knows every format and rule.
pub fn verify_viewer_token(secret: &str, stream: &str, token: &str, now: u64) -> Result<(), TokenError> {
    let Parsed::Legacy { expiry, sig } = parse_token(token)? else {
        return Err(TokenError::Malformed);
    };
    if !legacy_signature_ok(secret, stream, expiry, &sig) {
        return Err(TokenError::BadSignature);
    }
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
///
/// Eight bytes at a time: every word's difference OR-ed into one accumulator, with no branch on
/// it, the accumulator passed through `black_box` after each word (so that the compiler cannot
/// stop at the first difference), the verdict from subtle on the accumulator. As constant-time
/// as subtle's own slice compare, which does the same one byte (and one `black_box`) at a time:
/// this runs on every media request (a remembered viewer token, `super::token` callers).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |c: &[u8]| u64::from_ne_bytes(<[u8; 8]>::try_from(c).unwrap_or_default());
    let (mut wa, mut wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut acc = 0u64;
    for (x, y) in (&mut wa).zip(&mut wb) {
        acc = std::hint::black_box(acc | (word(x) ^ word(y)));
    }
    for (x, y) in wa.remainder().iter().zip(wb.remainder()) {
        acc = std::hint::black_box(acc | u64::from(x ^ y));
    }
    bool::from(acc.ct_eq(&0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_is_equality() {
        for len in [0usize, 1, 7, 8, 9, 16, 32, 75, 77] {
            let a: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert!(ct_eq(&a, &a.clone()), "{len}");
            for i in 0..len {
                for bit in [0x01u8, 0x80] {
                    let mut b = a.clone();
                    b[i] ^= bit;
                    assert!(!ct_eq(&a, &b), "{len} {i} {bit}");
                }
            }
            assert!(!ct_eq(&a, &[a.as_slice(), b"x"].concat()), "{len}: longer");
            if len > 0 {
                assert!(!ct_eq(&a, &a[..len - 1]), "{len}: shorter");
            }
        }
    }

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
    fn known_vectors() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"sec",b"cam1\n2000",hashlib.sha256).hexdigest())'
        assert_eq!(
            make_viewer_token("sec", "cam1", 2_000),
            "2000.e7945b29608238061af02f9864ea77ed524760f97304d63bd127d526e56ce94b"
        );
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"0123456789abcdef",
        //     b"v2\nk1\ncam1\n5f0c2a9e\n2000",hashlib.sha256).hexdigest())'
        assert_eq!(
            make_token_v2("0123456789abcdef", "k1", "cam1", "5f0c2a9e", 2_000),
            "v2.k1.2000.20ecd9e90e4c72b2ced0d2f97a6eb54ea63bfab26dca3a553116b3665e291ef3"
        );
        // ... and with no stream identity (b"v2\nk1\ncam1\n\n2000").
        assert_eq!(
            make_token_v2("0123456789abcdef", "k1", "cam1", "", 2_000),
            "v2.k1.2000.3a9d6c0e018c385fa6d566b700e3e857ac279057b2d22903b7bb15b8e8a8c527"
        );
    }

    #[test]
    fn v2_tokens_parse_and_bind_every_field() {
        let t = make_token_v2("secret-secret-16", "k-9", "cam1", "id1", 77);
        let Ok(Parsed::V2 { kid, expiry, sig }) = parse_token(&t) else { panic!("{t}") };
        assert_eq!((kid, expiry), ("k-9", 77));
        assert!(v2_signature_ok("secret-secret-16", "k-9", "cam1", "id1", 77, &sig));
        for (secret, kid, stream, id, expiry) in [
            ("secret-secret-17", "k-9", "cam1", "id1", 77),
            ("secret-secret-16", "k-8", "cam1", "id1", 77),
            ("secret-secret-16", "k-9", "cam2", "id1", 77),
            ("secret-secret-16", "k-9", "cam1", "id2", 77),
            ("secret-secret-16", "k-9", "cam1", "", 77),
            ("secret-secret-16", "k-9", "cam1", "id1", 78),
        ] {
            assert!(
                !v2_signature_ok(secret, kid, stream, id, expiry, &sig),
                "{secret} {kid} {stream} {id} {expiry}"
            );
        }
        // URL-safe as it is: no character that needs escaping in a query.
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{t}");
        // A v2 token is not a legacy one.
        assert_eq!(verify_viewer_token("secret-secret-16", "cam1", &t, 0), Err(TokenError::Malformed));
    }

    #[test]
    fn malformed_tokens() {
        let sig = "0".repeat(64);
        for t in [
            "",
            "2000",
            ".abc",
            "x.00",
            "20a0.00",
            &format!("1.{}", "0".repeat(63)),
            &format!("1.{}", "g".repeat(64)),
            &format!("{}.{sig}", "9".repeat(21)),
            &format!("18446744073709551616.{sig}"),
            // v2
            "v2.",
            "v2.k1",
            "v2.k1.2000",
            &format!("v2.k1.2000.{sig}.x"),
            &format!("v2..2000.{sig}"),
            &format!("v2.k 1.2000.{sig}"),
            &format!("v2.k%31.2000.{sig}"),
            &format!("v2.{}.2000.{sig}", "k".repeat(33)),
            &format!("v2.k1..{sig}"),
            &format!("v2.k1.-1.{sig}"),
            &format!("v2.k1.+1.{sig}"),
            &format!("v2.k1.18446744073709551616.{sig}"),
            &format!("v2.k1.2000.{}", "0".repeat(63)),
            &format!("v2.k1.2000.{}", "z".repeat(64)),
            &format!("v3.k1.2000.{sig}"),
            // one spelling per token: no leading zero, lowercase hex
            &format!("02000.{sig}"),
            &format!("v2.k1.02000.{sig}"),
            &format!("2000.{}", "A".repeat(64)),
            &format!("v2.k1.2000.{}a{}", "0".repeat(31), "B".repeat(32)),
        ] {
            assert_eq!(parse_token(t), Err(TokenError::Malformed), "{t:?}");
        }
        let max = format!("v2.k1.18446744073709551615.{sig}");
        assert_eq!(parse_token(&max).map(|p| p.expiry()), Ok(u64::MAX));
        assert_eq!(parse_token(&format!("0.{sig}")).map(|p| p.expiry()), Ok(0));
        let good = make_viewer_token("s", "cam1", 2000);
        assert_eq!(verify_viewer_token("s", "cam1", &good, 1), Ok(()));
        let upper = format!("2000.{}", good[5..].to_ascii_uppercase());
        assert_eq!(verify_viewer_token("s", "cam1", &upper, 1), Err(TokenError::Malformed));
    }

    #[test]
    fn one_spelling_per_token() {
        // Red team: a valid token re-spelt (uppercase hex, a leading zero on the expiry) was a
        // different string that verified all the same.
        let t = make_token_v2("secret-secret-16", "k1", "cam1", "id1", 2_000);
        let sig = t.rsplit('.').next().unwrap();
        assert!(parse_token(&t).is_ok());
        for respelt in [
            t.replacen(sig, &sig.to_ascii_uppercase(), 1),
            {
                // One letter of the signature in uppercase.
                let i = sig.find(|c: char| c.is_ascii_alphabetic()).unwrap();
                let one = format!("{}{}{}", &sig[..i], sig[i..=i].to_ascii_uppercase(), &sig[i + 1..]);
                t.replacen(sig, &one, 1)
            },
            t.replacen(".2000.", ".02000.", 1),
            t.replacen(".2000.", ".0000000000000002000.", 1),
        ] {
            if respelt != t {
                assert_eq!(parse_token(&respelt), Err(TokenError::Malformed), "{respelt}");
            }
        }
        let legacy = make_viewer_token("sec", "cam1", 2_000);
        assert_eq!(verify_viewer_token("sec", "cam1", &format!("0{legacy}"), 0), Err(TokenError::Malformed));
        assert_eq!(
            verify_viewer_token("sec", "cam1", &legacy.to_ascii_uppercase(), 0),
            Err(TokenError::Malformed)
        );
        // The expiry 0 is still spelt "0".
        let zero = make_viewer_token("sec", "cam1", 0);
        assert_eq!(parse_token(&zero).map(|p| p.expiry()), Ok(0));
    }

    #[test]
    fn ids() {
        assert!(is_valid_kid("k1") && is_valid_kid(&"a".repeat(32)) && is_valid_kid("A_b-9"));
        for bad in ["", "k.1", "k 1", "k\n1", "é", &"a".repeat(33)] {
            assert!(!is_valid_kid(bad), "{bad:?}");
        }
        assert!(is_valid_stream_id(&"f".repeat(64)) && !is_valid_stream_id(&"f".repeat(65)));
        assert!(!is_valid_stream_id("a\nb") && !is_valid_stream_id(""));
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
