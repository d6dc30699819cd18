//! The transcoder's credential: what the node's own ffmpeg presents when it plays a stream
//! from the node's RTMP side (`?node=<self>&key=<credential>`).
//!
//! A credential is random, bound to one stream and one transcode run (each start of ffmpeg
//! gets a new one, replacing the previous one of that stream), good for one play only and for
//! a few seconds only. It reaches ffmpeg on its command line (the only way ffmpeg takes an
//! input URL), where every local user can read it, so by the time anyone could replay it, it
//! has been used or has expired. The store is bounded: one credential per stream.
//!
//! [`redact`] removes query secrets from text that echoes URLs (ffmpeg's diagnostics) before
//! it reaches a log.

use std::collections::HashMap;

/// How long a credential stays usable after it is issued.
pub const LIFETIME_MS: u64 = 5_000;

/// Random bytes in a credential (hex on the wire: twice as many characters).
pub const BYTES: usize = 16;

struct Entry {
    secret: String,
    expires_ms: u64,
}

/// The credentials not used yet, at most one per stream. Times are milliseconds on any
/// monotonic clock the caller keeps.
#[derive(Default)]
pub struct Credentials {
    by_stream: HashMap<String, Entry>,
}

impl Credentials {
    /// A new credential for `stream` made of `random` (from the OS), valid until
    /// `now_ms + LIFETIME_MS`; any earlier one of the stream is void from here on.
    pub fn issue(&mut self, stream: &str, random: [u8; BYTES], now_ms: u64) -> String {
        self.prune(now_ms);
        let secret = hex::encode(random);
        self.by_stream
            .insert(stream.to_string(), Entry { secret: secret.clone(), expires_ms: now_ms + LIFETIME_MS });
        secret
    }

    /// Present `key` for `stream`: true (and the credential is gone) when it is the stream's
    /// credential and has not expired. Compared in constant time.
    pub fn take(&mut self, stream: &str, key: &str, now_ms: u64) -> bool {
        let Some(e) = self.by_stream.get(stream) else { return false };
        let matches = crate::token::ct_eq(e.secret.as_bytes(), key.as_bytes());
        if !matches {
            return false;
        }
        let fresh = now_ms < e.expires_ms;
        // Used or expired: either way it never works again.
        self.by_stream.remove(stream);
        fresh
    }

    /// The transcode of `stream` ended: its credential, if unused, is void.
    pub fn revoke(&mut self, stream: &str) {
        self.by_stream.remove(stream);
    }

    /// Credentials held (used ones and expired ones pruned at the next issue).
    pub fn len(&self) -> usize {
        self.by_stream.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_stream.is_empty()
    }

    fn prune(&mut self, now_ms: u64) {
        self.by_stream.retain(|_, e| now_ms < e.expires_ms);
    }
}

/// `text` with the value of every `key=` and `token=` argument replaced by `xxx`: for lines
/// that may quote a URL (`rtmp://h/app/s?node=n&key=SECRET: Input/output error`).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((i, name_len)) = next_secret(rest) {
        let value_at = i + name_len;
        out.push_str(&rest[..value_at]);
        let value_len = rest[value_at..].find(|c: char| !is_value_char(c)).unwrap_or(rest.len() - value_at);
        if value_len > 0 {
            out.push_str("xxx");
        }
        rest = &rest[value_at + value_len..];
    }
    out.push_str(rest);
    out
}

/// The next `key=` / `token=` (any case) not preceded by a word character: its offset and
/// the length of the name with its `=`.
fn next_secret(s: &str) -> Option<(usize, usize)> {
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while from < s.len() {
        let (i, name) = ["key=", "token="]
            .iter()
            .filter_map(|n| lower[from..].find(n).map(|i| (from + i, n.len())))
            .min()?;
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if i == 0 || !word(s.as_bytes()[i - 1]) {
            return Some((i, name));
        }
        from = i + 1;
    }
    None
}

/// Characters a query value runs on for: anything but whitespace, quotes and separators.
fn is_value_char(c: char) -> bool {
    !(c.is_whitespace() || matches!(c, '&' | '"' | '\'' | '<' | '>' | ';' | ')' | ','))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(n: u8) -> [u8; BYTES] {
        [n; BYTES]
    }

    #[test]
    fn single_use() {
        let mut c = Credentials::default();
        let k = c.issue("cam1", rnd(1), 0);
        assert_eq!(k.len(), 2 * BYTES);
        assert!(c.take("cam1", &k, 10));
        assert!(!c.take("cam1", &k, 11), "used once");
        assert!(c.is_empty());
    }

    #[test]
    fn bound_to_its_stream() {
        let mut c = Credentials::default();
        let k = c.issue("cam1", rnd(1), 0);
        assert!(!c.take("cam2", &k, 1), "another stream");
        assert!(!c.take("cam1", "", 1));
        assert!(!c.take("cam1", &k[..31], 1), "a prefix");
        assert!(!c.take("cam1", &format!("{k}0"), 1));
        assert!(c.take("cam1", &k, 2), "wrong tries do not burn it");
    }

    #[test]
    fn expires() {
        let mut c = Credentials::default();
        let k = c.issue("cam1", rnd(1), 1000);
        assert!(!c.take("cam1", &k, 1000 + LIFETIME_MS), "expired");
        assert!(!c.take("cam1", &k, 1001), "and gone");
        let k = c.issue("cam1", rnd(2), 2000);
        assert!(c.take("cam1", &k, 2000 + LIFETIME_MS - 1));
    }

    #[test]
    fn a_new_run_voids_the_old_credential() {
        let mut c = Credentials::default();
        let old = c.issue("cam1", rnd(1), 0);
        let new = c.issue("cam1", rnd(2), 1);
        assert_ne!(old, new);
        assert!(!c.take("cam1", &old, 2));
        assert!(c.take("cam1", &new, 2));
        let k = c.issue("cam1", rnd(3), 3);
        c.revoke("cam1");
        assert!(!c.take("cam1", &k, 4), "revoked");
    }

    #[test]
    fn bounded() {
        let mut c = Credentials::default();
        for i in 0..100 {
            c.issue("cam1", rnd(i), u64::from(i));
        }
        assert_eq!(c.len(), 1, "one per stream");
        c.issue("cam2", rnd(1), 200 + LIFETIME_MS);
        assert_eq!(c.len(), 1, "expired ones pruned");
    }

    #[test]
    fn redacts_query_secrets() {
        let k = "0123456789abcdef0123456789abcdef";
        let line = format!("rtmp://127.0.0.1:1935/live/cam1?node=edge-1&key={k}: Input/output error");
        assert_eq!(redact(&line), "rtmp://127.0.0.1:1935/live/cam1?node=edge-1&key=xxx Input/output error");
        assert_eq!(
            redact("GET /hls/x/master.m3u8?token=1.ab HTTP/1.1"),
            "GET /hls/x/master.m3u8?token=xxx HTTP/1.1"
        );
        assert_eq!(redact("a?key=s1&token=s2&x=1"), "a?key=xxx&token=xxx&x=1");
        assert_eq!(redact("'rtmp://h/a/s?KEY=abc'"), "'rtmp://h/a/s?KEY=xxx'");
        assert_eq!(redact("a?key=&x=1"), "a?key=&x=1");
        assert_eq!(redact("monkey=1 key=2 x_token=3"), "monkey=1 key=xxx x_token=3");
        assert_eq!(redact("x?monkey=1&key=2"), "x?monkey=1&key=xxx");
        assert_eq!(redact("trailing?"), "trailing?");
        assert_eq!(redact(""), "");
        assert!(!redact(&format!("[rtmp @ 0x5] {line}\n{line}")).contains(k));
    }
}
