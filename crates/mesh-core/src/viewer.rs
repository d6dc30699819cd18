//! Who may watch: the rules a viewer token is checked and made by, shared by the node (from its
//! table, [`crate::Table::verify_viewer`]) and the master.
//!
//! * Keys have ids; a key with `not_after` is retiring: its tokens verify until then, and none
//!   is made with it. Tokens are made with the first key without `not_after`.
//! * A token is bound to its stream's identity when the verifier knows one; a stream the
//!   verifier knows not to exist refuses every token.
//! * A token's expiry may be at most the maximum lifetime (plus [`TOKEN_SKEW_S`] for clocks that
//!   differ) from now; a mint for longer is refused. All time arithmetic is checked.
//! * Legacy tokens verify only against a legacy secret (a table's `viewer_secret`).
//!
//! The signature is always checked first, so a forged token learns nothing of expiries, keys'
//! graces or streams.

use serde::Serialize;

use crate::table::Table;
pub use crate::token::TokenError;
use crate::token::{
    legacy_signature_ok, make_token_v2, make_viewer_token, parse_token, v2_signature_ok, Parsed,
};

/// Maximum token lifetime when the table says none (`max_token_ttl_s`): a day.
pub const DEFAULT_MAX_TTL_S: u64 = 86_400;
/// Largest maximum lifetime a table or the master may set: 366 days.
pub const MAX_TTL_CEILING_S: u64 = 366 * 86_400;
/// Tolerance for a minting clock ahead of the verifying one, in the lifetime check.
pub const TOKEN_SKEW_S: u64 = 300;
/// Shortest secret of a `viewer_keys` entry.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret of a `viewer_keys` entry.
pub const MAX_SECRET_LEN: usize = 1024;

/// A viewer key: tokens name it by `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViewerKey {
    pub id: String,
    pub secret: String,
    /// End of its grace period (unix s, inclusive): tokens it signed are refused after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<u64>,
}

impl ViewerKey {
    /// Whether its tokens verify at `now`.
    pub fn usable_at(&self, now: u64) -> bool {
        self.not_after.is_none_or(|t| now <= t)
    }
}

/// A stream's identity as the verifier knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamId<'a> {
    /// The stream's current identity.
    Id(&'a str),
    /// The verifier does not name identities (an operator's table without `streams`): tokens
    /// are bound to the empty identity.
    Unnamed,
    /// The verifier names its streams and this one is not among them.
    Unknown,
}

/// The keys and limits tokens are checked and made by.
#[derive(Debug, Clone, Copy)]
pub struct Viewers<'a> {
    pub keys: &'a [ViewerKey],
    /// A table's `viewer_secret`: legacy tokens verify against it.
    pub legacy_secret: Option<&'a str>,
    pub max_ttl_s: u64,
}

impl Viewers<'_> {
    /// Whether any token can verify at all (else viewers are not checked by tokens here).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty() || self.legacy_secret.is_some()
    }

    /// The key new tokens are made with.
    pub fn signing_key(&self) -> Option<&ViewerKey> {
        self.keys.iter().find(|k| k.not_after.is_none())
    }

    /// Check `token` for `stream` (whose identity is `id`) at `now`.
    pub fn verify(&self, stream: &str, id: StreamId<'_>, token: &str, now: u64) -> Result<(), TokenError> {
        let bound = match id {
            StreamId::Id(s) => s,
            StreamId::Unnamed | StreamId::Unknown => "",
        };
        let parsed = parse_token(token)?;
        let key = match parsed {
            Parsed::V2 { kid, expiry, sig } => {
                let key = self.keys.iter().find(|k| k.id == kid).ok_or(TokenError::UnknownKey)?;
                if !v2_signature_ok(&key.secret, kid, stream, bound, expiry, &sig) {
                    return Err(TokenError::BadSignature);
                }
                Some(key)
            }
            Parsed::Legacy { expiry, sig } => {
                let secret = self.legacy_secret.ok_or(TokenError::UnknownKey)?;
                if !legacy_signature_ok(secret, stream, expiry, &sig) {
                    return Err(TokenError::BadSignature);
                }
                None
            }
        };
        if id == StreamId::Unknown {
            return Err(TokenError::UnknownStream);
        }
        if key.is_some_and(|k| !k.usable_at(now)) {
            return Err(TokenError::RetiredKey);
        }
        let expiry = parsed.expiry();
        if expiry < now {
            return Err(TokenError::Expired);
        }
        if expiry > now.saturating_add(self.max_ttl_s).saturating_add(TOKEN_SKEW_S) {
            return Err(TokenError::TooLong);
        }
        Ok(())
    }

    /// Make a token for `stream` valid for `ttl_s` seconds from `now`: with the signing key
    /// (v2), or, with no key list, the legacy secret (legacy format). Returns it and its expiry.
    pub fn mint(
        &self,
        stream: &str,
        id: StreamId<'_>,
        ttl_s: u64,
        now: u64,
    ) -> Result<(String, u64), TokenError> {
        if ttl_s == 0 {
            return Err(TokenError::BadTtl);
        }
        if ttl_s > self.max_ttl_s {
            return Err(TokenError::TooLong);
        }
        let expiry = now.checked_add(ttl_s).ok_or(TokenError::BadTtl)?;
        let bound = match id {
            StreamId::Id(s) => s,
            StreamId::Unnamed => "",
            StreamId::Unknown => return Err(TokenError::UnknownStream),
        };
        match (self.signing_key(), self.legacy_secret) {
            (Some(k), _) => Ok((make_token_v2(&k.secret, &k.id, stream, bound, expiry), expiry)),
            (None, Some(secret)) if self.keys.is_empty() => {
                Ok((make_viewer_token(secret, stream, expiry), expiry))
            }
            _ => Err(TokenError::NoSigningKey),
        }
    }
}

/// A node checks its viewers with its table: the glue calls these.
impl Table {
    /// The table's keys and limits.
    pub fn viewers(&self) -> Viewers<'_> {
        Viewers {
            keys: &self.viewer_keys,
            legacy_secret: self.viewer_secret.as_deref(),
            max_ttl_s: self.max_token_ttl_s.unwrap_or(DEFAULT_MAX_TTL_S),
        }
    }

    /// Whether this table decides viewers by token (`viewer_keys` or `viewer_secret`). When it
    /// does not, a node with a master asks the auth endpoint, and one without lets viewers in.
    pub fn checks_viewer_tokens(&self) -> bool {
        self.viewers().has_keys()
    }

    /// The identity of `stream` as this table knows it.
    pub fn stream_identity(&self, stream: &str) -> StreamId<'_> {
        match &self.stream_ids {
            None => StreamId::Unnamed,
            Some(ids) => ids.get(stream).map_or(StreamId::Unknown, |id| StreamId::Id(id)),
        }
    }

    /// Check a viewer's token for `stream` at `now` (unix s): every format and rule of
    /// docs/protocol.md. A table that checks no tokens ([`Table::checks_viewer_tokens`] false)
    /// refuses every token: ask first.
    pub fn verify_viewer(&self, stream: &str, token: &str, now: u64) -> Result<(), TokenError> {
        self.viewers().verify(stream, self.stream_identity(stream), token, now)
    }

    /// Until when (unix s, inclusive) a token that [`Table::verify_viewer`] accepted stays good
    /// under this table: its expiry, or its key's end of grace when that comes first (nothing
    /// else in the check depends on the time). None for a token that does not parse or names no
    /// key of the table.
    pub fn viewer_good_until(&self, token: &str) -> Option<u64> {
        let parsed = parse_token(token).ok()?;
        let not_after = match parsed {
            Parsed::V2 { kid, .. } => self.viewer_keys.iter().find(|k| k.id == kid)?.not_after,
            Parsed::Legacy { .. } => self.viewer_secret.as_ref().map(|_| None)?,
        };
        Some(not_after.map_or(parsed.expiry(), |t| t.min(parsed.expiry())))
    }

    /// Make a viewer token for `stream`, valid `ttl_s` from `now`: `(token, expiry)`.
    pub fn mint_viewer(&self, stream: &str, ttl_s: u64, now: u64) -> Result<(String, u64), TokenError> {
        self.viewers().mint(stream, self.stream_identity(stream), ttl_s, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::make_token_v2;
    use TokenError::*;

    const OLD: &str = "old-secret-0123456789";
    const NEW: &str = "new-secret-0123456789";

    fn key(id: &str, secret: &str, not_after: Option<u64>) -> ViewerKey {
        ViewerKey { id: id.into(), secret: secret.into(), not_after }
    }

    fn viewers(keys: &[ViewerKey]) -> Viewers<'_> {
        Viewers { keys, legacy_secret: None, max_ttl_s: 3600 }
    }

    #[test]
    fn round_trip_with_the_signing_key() {
        let keys = [key("k2", NEW, None), key("k1", OLD, Some(1_500))];
        let v = viewers(&keys);
        let (t, expiry) = v.mint("cam1", StreamId::Id("s1"), 600, 1_000).unwrap();
        assert_eq!(expiry, 1_600);
        assert!(t.starts_with("v2.k2.1600."), "{t}");
        assert_eq!(v.verify("cam1", StreamId::Id("s1"), &t, 1_000), Ok(()));
        assert_eq!(v.verify("cam1", StreamId::Id("s1"), &t, 1_600), Ok(()));
        assert_eq!(v.verify("cam1", StreamId::Id("s1"), &t, 1_601), Err(Expired));
        assert_eq!(v.verify("cam2", StreamId::Id("s1"), &t, 1_000), Err(BadSignature));
    }

    #[test]
    fn rotation_window() {
        let old_token = make_token_v2(OLD, "k1", "cam1", "s1", 2_000);
        // Before the rotation: k1 signs.
        let before = [key("k1", OLD, None)];
        assert_eq!(viewers(&before).verify("cam1", StreamId::Id("s1"), &old_token, 1_000), Ok(()));
        // Rotated at 1_000 with a grace to 1_500: both verify until then, only k2 signs.
        let during = [key("k1", OLD, Some(1_500)), key("k2", NEW, None)];
        let v = viewers(&during);
        assert_eq!(v.signing_key().unwrap().id, "k2");
        let new_token = v.mint("cam1", StreamId::Id("s1"), 900, 1_000).unwrap().0;
        for now in [1_000, 1_500] {
            assert_eq!(v.verify("cam1", StreamId::Id("s1"), &old_token, now), Ok(()), "{now}");
            assert_eq!(v.verify("cam1", StreamId::Id("s1"), &new_token, now), Ok(()), "{now}");
        }
        // After the grace: the old key's tokens are refused, still within their expiry.
        assert_eq!(v.verify("cam1", StreamId::Id("s1"), &old_token, 1_501), Err(RetiredKey));
        assert_eq!(v.verify("cam1", StreamId::Id("s1"), &new_token, 1_501), Ok(()));
        // Dropped from the list: unknown key.
        let after = [key("k2", NEW, None)];
        assert_eq!(viewers(&after).verify("cam1", StreamId::Id("s1"), &old_token, 1_501), Err(UnknownKey));
        // A forgery under the retired key id still says "bad signature", not "retired".
        let forged = make_token_v2("guess-guess-guess", "k1", "cam1", "s1", 2_000);
        assert_eq!(v.verify("cam1", StreamId::Id("s1"), &forged, 1_501), Err(BadSignature));
        // Every key retiring: nothing to sign with.
        let none = [key("k1", OLD, Some(1_500))];
        assert_eq!(viewers(&none).mint("cam1", StreamId::Unnamed, 60, 0), Err(NoSigningKey));
    }

    #[test]
    fn a_re_created_stream_refuses_old_tokens() {
        let keys = [key("k1", OLD, None)];
        let v = viewers(&keys);
        let t = v.mint("cam1", StreamId::Id("first"), 600, 1_000).unwrap().0;
        assert_eq!(v.verify("cam1", StreamId::Id("first"), &t, 1_000), Ok(()));
        assert_eq!(v.verify("cam1", StreamId::Id("second"), &t, 1_000), Err(BadSignature));
        assert_eq!(v.verify("cam1", StreamId::Unnamed, &t, 1_000), Err(BadSignature));
        // Deleted: a forgery and a real token both say "bad signature".
        assert_eq!(v.verify("cam1", StreamId::Unknown, &t, 1_000), Err(BadSignature));
        // Only a token bound to no identity gets as far as "unknown stream".
        let unbound = v.mint("cam1", StreamId::Unnamed, 600, 1_000).unwrap().0;
        assert_eq!(v.verify("cam1", StreamId::Unnamed, &unbound, 1_000), Ok(()));
        assert_eq!(v.verify("cam1", StreamId::Unknown, &unbound, 1_000), Err(UnknownStream));
        assert_eq!(v.mint("cam1", StreamId::Unknown, 600, 1_000), Err(UnknownStream));
    }

    #[test]
    fn max_lifetime() {
        let keys = [key("k1", OLD, None)];
        let v = viewers(&keys);
        assert!(v.mint("cam1", StreamId::Unnamed, 3_600, 1_000).is_ok());
        assert_eq!(v.mint("cam1", StreamId::Unnamed, 3_601, 1_000), Err(TooLong));
        assert_eq!(v.mint("cam1", StreamId::Unnamed, 0, 1_000), Err(BadTtl));
        // Made elsewhere with a longer life: refused until its expiry is near enough.
        let long = make_token_v2(OLD, "k1", "cam1", "", 1_000 + 3_600 + TOKEN_SKEW_S + 1);
        assert_eq!(v.verify("cam1", StreamId::Unnamed, &long, 1_000), Err(TooLong));
        assert_eq!(v.verify("cam1", StreamId::Unnamed, &long, 1_001), Ok(()));
        // Within the clock skew: accepted.
        let skewed = make_token_v2(OLD, "k1", "cam1", "", 1_000 + 3_600 + TOKEN_SKEW_S);
        assert_eq!(v.verify("cam1", StreamId::Unnamed, &skewed, 1_000), Ok(()));
    }

    #[test]
    fn no_overflow_at_u64_max() {
        let keys = [key("k1", OLD, None)];
        let v = Viewers { keys: &keys, legacy_secret: None, max_ttl_s: u64::MAX };
        assert_eq!(v.mint("cam1", StreamId::Unnamed, 2, u64::MAX - 1), Err(BadTtl));
        assert_eq!(v.mint("cam1", StreamId::Unnamed, u64::MAX, 1), Err(BadTtl));
        assert_eq!(v.mint("cam1", StreamId::Unnamed, 1, u64::MAX - 1).map(|t| t.1), Ok(u64::MAX));
        let at_max = make_token_v2(OLD, "k1", "cam1", "", u64::MAX);
        assert_eq!(v.verify("cam1", StreamId::Unnamed, &at_max, u64::MAX), Ok(()));
        assert_eq!(v.verify("cam1", StreamId::Unnamed, &at_max, 0), Ok(()), "saturates, does not wrap");
        let day = Viewers { max_ttl_s: 86_400, ..v };
        assert_eq!(day.verify("cam1", StreamId::Unnamed, &at_max, 0), Err(TooLong));
        assert_eq!(day.verify("cam1", StreamId::Unnamed, &at_max, u64::MAX - 5), Ok(()));
        let retiring = [key("k1", OLD, Some(u64::MAX))];
        let r = Viewers { keys: &retiring, ..v };
        assert_eq!(r.verify("cam1", StreamId::Unnamed, &at_max, u64::MAX), Ok(()));
    }

    #[test]
    fn legacy_tokens_only_with_a_legacy_secret() {
        let legacy = make_viewer_token("vs", "cam1", 2_000);
        let keys = [key("k1", OLD, None)];
        let with = Viewers { keys: &keys, legacy_secret: Some("vs"), max_ttl_s: 3_600 };
        assert_eq!(with.verify("cam1", StreamId::Unnamed, &legacy, 1_000), Ok(()));
        assert_eq!(with.verify("cam1", StreamId::Id("s1"), &legacy, 1_000), Ok(()), "not bound");
        assert_eq!(with.verify("cam1", StreamId::Unknown, &legacy, 1_000), Err(UnknownStream));
        assert_eq!(with.verify("cam1", StreamId::Unnamed, &legacy, 2_001), Err(Expired));
        let far = make_viewer_token("vs", "cam1", 1_000 + 3_600 + TOKEN_SKEW_S + 1);
        assert_eq!(with.verify("cam1", StreamId::Unnamed, &far, 1_000), Err(TooLong), "bounded too");
        assert_eq!(viewers(&keys).verify("cam1", StreamId::Unnamed, &legacy, 1_000), Err(UnknownKey));
        // With keys, new tokens are v2; with only the legacy secret, legacy.
        assert!(with.mint("cam1", StreamId::Unnamed, 60, 0).unwrap().0.starts_with("v2.k1."));
        let only = Viewers { keys: &[], legacy_secret: Some("vs"), max_ttl_s: 3_600 };
        assert_eq!(
            only.mint("cam1", StreamId::Unnamed, 60, 1_000).unwrap().0,
            make_viewer_token("vs", "cam1", 1_060)
        );
        let none = Viewers { keys: &[], legacy_secret: None, max_ttl_s: 3_600 };
        assert!(!none.has_keys());
        assert_eq!(none.verify("cam1", StreamId::Unnamed, &legacy, 1_000), Err(UnknownKey));
    }

    #[test]
    fn malformed_v2_tokens() {
        let keys = [key("k1", OLD, None)];
        let v = viewers(&keys);
        let good = make_token_v2(OLD, "k1", "cam1", "", 2_000);
        for t in [
            good.replacen("v2.", "V2.", 1),
            good.replacen("v2.k1.", "v2.k1..", 1),
            format!("{good}.x"),
            good[..good.len() - 1].to_string(),
            good.replacen("v2.k1.", "v2.k\u{e9}.", 1),
            good.replacen("v2.k1.2000", "v2.k1.2000 ", 1),
            "v2.k1.2000.".to_string(),
        ] {
            assert_eq!(v.verify("cam1", StreamId::Unnamed, &t, 1_000), Err(Malformed), "{t:?}");
        }
        let other_kid = good.replacen("v2.k1.", "v2.k2.", 1);
        assert_eq!(v.verify("cam1", StreamId::Unnamed, &other_kid, 1_000), Err(UnknownKey));
    }

    #[test]
    fn tables_verify_their_viewers() {
        let t = Table::parse(
            br#"{"viewer_keys": [{"id": "k2", "secret": "new-secret-0123456789"},
                                 {"id": "k1", "secret": "old-secret-0123456789", "not_after": 1500}],
                 "streams": {"cam1": {"id": "s1"}}, "max_token_ttl_s": 600}"#,
        )
        .unwrap();
        assert!(t.checks_viewer_tokens());
        let (tok, expiry) = t.mint_viewer("cam1", 600, 1_000).unwrap();
        assert_eq!((tok.as_str(), expiry), (make_token_v2(NEW, "k2", "cam1", "s1", 1_600).as_str(), 1_600));
        assert_eq!(t.verify_viewer("cam1", &tok, 1_000), Ok(()));
        assert_eq!(t.mint_viewer("cam1", 601, 1_000), Err(TooLong));
        assert_eq!(t.mint_viewer("cam9", 60, 1_000), Err(UnknownStream));
        let old = make_token_v2(OLD, "k1", "cam1", "s1", 1_600);
        assert_eq!(t.verify_viewer("cam1", &old, 1_500), Ok(()));
        assert_eq!(t.verify_viewer("cam1", &old, 1_501), Err(RetiredKey));
        assert_eq!(
            t.verify_viewer("cam9", &make_token_v2(NEW, "k2", "cam9", "", 1_600), 1_000),
            Err(UnknownStream)
        );
        // No legacy secret: legacy tokens refused.
        assert_eq!(t.verify_viewer("cam1", &make_viewer_token(NEW, "cam1", 1_600), 1_000), Err(UnknownKey));
        // An operator's legacy table keeps working, with the default lifetime bound.
        let legacy = Table::parse(br#"{"viewer_secret": "vs"}"#).unwrap();
        assert!(legacy.checks_viewer_tokens());
        let tok = legacy.mint_viewer("cam1", DEFAULT_MAX_TTL_S, 1_000).unwrap().0;
        assert_eq!(tok, make_viewer_token("vs", "cam1", 1_000 + DEFAULT_MAX_TTL_S));
        assert_eq!(legacy.verify_viewer("cam1", &tok, 1_000), Ok(()));
        // No keys at all: nothing verifies, and the caller knows to ask (or let in).
        let open = Table::parse(b"{}").unwrap();
        assert!(!open.checks_viewer_tokens());
        assert_eq!(open.verify_viewer("cam1", &tok, 1_000), Err(UnknownKey));
    }

    #[test]
    fn a_verified_token_is_good_until_its_expiry_or_its_keys_grace() {
        let t = Table::parse(
            br#"{"viewer_keys": [{"id": "k2", "secret": "new-secret-0123456789"},
                                 {"id": "k1", "secret": "old-secret-0123456789", "not_after": 1500}]}"#,
        )
        .unwrap();
        let new = make_token_v2(NEW, "k2", "cam1", "", 1_600);
        assert_eq!(t.viewer_good_until(&new), Some(1_600));
        // the key retires first; and a token expiring before the key does
        assert_eq!(t.viewer_good_until(&make_token_v2(OLD, "k1", "cam1", "", 1_600)), Some(1_500));
        assert_eq!(t.viewer_good_until(&make_token_v2(OLD, "k1", "cam1", "", 1_400)), Some(1_400));
        // the bound holds exactly as the check does: good at it, refused after
        let old = make_token_v2(OLD, "k1", "cam1", "", 1_600);
        assert_eq!(t.verify_viewer("cam1", &old, 1_500), Ok(()));
        assert_eq!(t.verify_viewer("cam1", &old, 1_501), Err(RetiredKey));
        assert_eq!(t.verify_viewer("cam1", &new, 1_600), Ok(()));
        assert_eq!(t.verify_viewer("cam1", &new, 1_601), Err(Expired));
        // no such key, no legacy secret, not a token
        assert_eq!(t.viewer_good_until(&make_token_v2(NEW, "k9", "cam1", "", 1_600)), None);
        assert_eq!(t.viewer_good_until(&make_viewer_token(NEW, "cam1", 1_600)), None);
        assert_eq!(t.viewer_good_until("nope"), None);
        let legacy = Table::parse(br#"{"viewer_secret": "vs"}"#).unwrap();
        assert_eq!(legacy.viewer_good_until(&make_viewer_token("vs", "cam1", 1_600)), Some(1_600));
    }
}
