//! Stream and node identifiers: 1–128 characters of `[A-Za-z0-9_-]`.
//!
//! Every name that reaches a path, a URL or a command line passes [`is_valid_id`] first.

/// Longest stream or node id the protocol allows.
pub const MAX_ID_LEN: usize = 128;

/// True when `s` is a valid stream or node id.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A printable, bounded rendering of an untrusted name for log lines: non-printable and
/// non-ASCII bytes escaped, at most 64 characters kept.
pub fn for_log(s: &str) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == 64 {
            out.push_str("...");
            break;
        }
        if c.is_ascii_graphic() && c != '"' && c != '\\' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let cases: &[(&str, bool)] = &[
            ("cam1", true),
            ("a", true),
            ("A-b_9", true),
            (&"x".repeat(128), true),
            (&"x".repeat(129), false),
            ("", false),
            ("../x", false),
            ("a b", false),
            ("a/b", false),
            ("a.b", false),
            ("a?b", false),
            ("é", false),
            ("a\0", false),
        ];
        for (s, ok) in cases {
            assert_eq!(is_valid_id(s), *ok, "{s:?}");
        }
    }

    #[test]
    fn log_rendering_is_bounded_and_escaped() {
        assert_eq!(for_log("cam1"), "cam1");
        assert_eq!(for_log("a b\n\"c"), "a b\\n\\\"c");
        let long = for_log(&"y".repeat(300));
        assert_eq!(long.len(), 67);
    }
}
