//! The viewer's token carried into every URL of a manifest the node serves, so that a player
//! given only the entry URL (`master.m3u8?token=…`, `manifest.mpd?token=…`) asks for every
//! playlist and segment with it. Pure text rewriting of what ffmpeg's dash muxer writes, and
//! safe for anything else:
//!
//! * HLS: URI lines (variant and media playlists, segments) and every `URI="…"` attribute
//!   (`EXT-X-MEDIA`, `EXT-X-MAP`, `EXT-X-I-FRAME-STREAM-INF`, …).
//! * DASH: `SegmentTemplate`'s `media`, `initialization`, `index` and `bitstreamSwitching`,
//!   `SegmentURL`'s `media` and `index`, the `sourceURL` of `Initialization`,
//!   `RepresentationIndex` and `BitstreamSwitching`, and `BaseURL` text.
//!
//! Only relative references get the token: one with a scheme (`https:`, `data:`) or a host
//! (`//cdn/…`) may lead elsewhere, and the token never goes to another host. An MPD with an
//! absolute `BaseURL` is left as it is (its relative references would resolve there).
//! Existing query parameters are kept; an existing `token` parameter is replaced.

use std::borrow::Cow;
use std::fmt::Write;

/// The query parameter that carries the viewer token.
pub const TOKEN_PARAM: &str = "token";

/// Percent-encode a query value: everything but RFC 3986's unreserved characters.
pub fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Percent-decode a query value (`+` stays `+`). None on a bad escape or invalid UTF-8.
pub fn decode_query_value(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The first `token` parameter of a query string (with or without its `?`), decoded.
/// `Some("")` for `token=` (present but empty); None when absent or undecodable.
pub fn query_token(query: &str) -> Option<String> {
    query_token_ref(query).map(Cow::into_owned)
}

/// [`query_token`], borrowed from `query` when the value has no escape (a token as the node
/// writes it into its URLs: no allocation on a media request's path).
pub fn query_token_ref(query: &str) -> Option<Cow<'_, str>> {
    let query = query.strip_prefix('?').unwrap_or(query);
    query.split('&').find_map(|pair| match pair.split_once('=') {
        Some((TOKEN_PARAM, v)) if !v.contains('%') => Some(Some(Cow::Borrowed(v))),
        Some((TOKEN_PARAM, v)) => Some(decode_query_value(v).map(Cow::Owned)),
        None if pair == TOKEN_PARAM => Some(Some(Cow::Borrowed(""))),
        _ => None,
    })?
}

/// A reference that may lead to another host: it has a scheme or an authority.
fn leaves_origin(uri: &str) -> bool {
    if uri.starts_with("//") || uri.starts_with("\\\\") {
        return true;
    }
    // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":", before any / ? #
    match uri.find([':', '/', '?', '#']) {
        Some(i) if uri.as_bytes()[i] == b':' => {
            let s = &uri[..i];
            s.bytes().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        }
        _ => false,
    }
}

/// `uri` with `token=<encoded>` in its query, when it is a relative reference; the other
/// parameters kept, an earlier `token` dropped, the fragment kept. `encoded` is the token
/// already through [`encode_query_value`].
pub fn with_token<'a>(uri: &'a str, encoded: &str) -> Cow<'a, str> {
    if uri.is_empty() || leaves_origin(uri) {
        return Cow::Borrowed(uri);
    }
    let mut out = String::with_capacity(uri.len() + encoded.len() + 8);
    append_with_token(&mut out, uri, encoded);
    Cow::Owned(out)
}

/// [`with_token`], appended to `out` (no allocation of its own).
fn append_with_token(out: &mut String, uri: &str, encoded: &str) {
    if uri.is_empty() || leaves_origin(uri) {
        out.push_str(uri);
        return;
    }
    let (rest, fragment) = match uri.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (uri, None),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    out.push_str(path);
    out.push('?');
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        if pair.is_empty() || name == TOKEN_PARAM {
            continue;
        }
        out.push_str(pair);
        out.push('&');
    }
    out.push_str(TOKEN_PARAM);
    out.push('=');
    out.push_str(encoded);
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
}

/// An HLS playlist (master or media) with the token in every URI.
pub fn rewrite_hls(playlist: &str, token: &str) -> String {
    let enc = encode_query_value(token);
    let lines = playlist.bytes().filter(|&b| b == b'\n').count() + 1;
    let mut out = String::with_capacity(playlist.len() + lines * (enc.len() + TOKEN_PARAM.len() + 2));
    for line in playlist.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let eol = &line[body.len()..];
        let trimmed = body.trim();
        if trimmed.is_empty() {
            out.push_str(line);
        } else if trimmed.starts_with('#') {
            match rewrite_hls_tag(body, &enc) {
                Some(t) => out.push_str(&t),
                None => out.push_str(body),
            }
            out.push_str(eol);
        } else {
            append_with_token(&mut out, trimmed, &enc);
            out.push_str(eol);
        }
    }
    out
}

/// A tag line whose attribute list has `URI="…"`, rewritten; None when it has none or is not
/// an attribute list this can read.
fn rewrite_hls_tag(line: &str, enc: &str) -> Option<String> {
    if !line.starts_with("#EXT") || !line.contains("URI=\"") {
        return None;
    }
    let (tag, attrs) = line.split_once(':')?;
    let mut out = String::with_capacity(line.len() + enc.len() + 8);
    out.push_str(tag);
    out.push(':');
    let mut rest = attrs;
    let mut changed = false;
    loop {
        let (name, after) = rest.split_once('=')?;
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-')
        {
            return None;
        }
        out.push_str(name);
        out.push('=');
        let after_value = if let Some(q) = after.strip_prefix('"') {
            let (value, tail) = q.split_once('"')?;
            out.push('"');
            if name == "URI" {
                append_with_token(&mut out, value, enc);
                changed = true;
            } else {
                out.push_str(value);
            }
            out.push('"');
            tail
        } else {
            let end = after.find(',').unwrap_or(after.len());
            out.push_str(&after[..end]);
            &after[end..]
        };
        match after_value.strip_prefix(',') {
            Some(next) => {
                out.push(',');
                rest = next;
            }
            None if after_value.trim().is_empty() => {
                out.push_str(after_value);
                break;
            }
            None => return None,
        }
    }
    changed.then_some(out)
}

/// Attributes of MPD elements that hold a URL (element local name, attribute).
const MPD_URL_ATTRS: &[(&str, &str)] = &[
    ("SegmentTemplate", "media"),
    ("SegmentTemplate", "initialization"),
    ("SegmentTemplate", "index"),
    ("SegmentTemplate", "bitstreamSwitching"),
    ("SegmentURL", "media"),
    ("SegmentURL", "index"),
    ("Initialization", "sourceURL"),
    ("RepresentationIndex", "sourceURL"),
    ("BitstreamSwitching", "sourceURL"),
];

fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

fn xml_unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let (ent, tail) = rest[i + 1..].split_once(';')?;
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let n = match ent.strip_prefix("#x").or_else(|| ent.strip_prefix("#X")) {
                    Some(h) => u32::from_str_radix(h, 16).ok()?,
                    None => ent.strip_prefix('#')?.parse().ok()?,
                };
                char::from_u32(n)?
            }
        };
        out.push(c);
        rest = tail;
    }
    out.push_str(rest);
    Some(out)
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An XML-escaped URL with the token (unchanged when it cannot be read).
fn xml_with_token(escaped: &str, enc: &str) -> String {
    match xml_unescape(escaped) {
        Some(u) => match with_token(&u, enc) {
            Cow::Borrowed(_) => escaped.to_string(),
            Cow::Owned(t) => xml_escape(&t),
        },
        None => escaped.to_string(),
    }
}

/// One piece of an MPD, as the scanner sees it.
enum Piece<'a> {
    /// Text, comments, declarations, end tags: copied as they are.
    Other(&'a str),
    /// A start tag: its local name, the whole tag, and its attributes (name, quote, value,
    /// byte range of the value in the tag).
    Start { name: &'a str, tag: &'a str, attrs: Vec<(&'a str, std::ops::Range<usize>)>, empty: bool },
}

/// Split an MPD into pieces; None when it is not XML this can read (then it is left alone).
fn pieces(xml: &str) -> Option<Vec<Piece<'_>>> {
    let mut out = Vec::new();
    let mut i = 0;
    let b = xml.as_bytes();
    while i < xml.len() {
        let Some(lt) = xml[i..].find('<').map(|o| i + o) else {
            out.push(Piece::Other(&xml[i..]));
            break;
        };
        if lt > i {
            out.push(Piece::Other(&xml[i..lt]));
        }
        let rest = &xml[lt..];
        let skip_to = |end: &str| rest.find(end).map(|e| lt + e + end.len());
        let end = if rest.starts_with("<!--") {
            skip_to("-->")?
        } else if rest.starts_with("<![CDATA[") {
            skip_to("]]>")?
        } else if rest.starts_with("<?") {
            skip_to("?>")?
        } else if rest.starts_with("<!") || rest.starts_with("</") {
            skip_to(">")?
        } else {
            // a start tag: name, then attributes with quoted values
            let mut j = lt + 1;
            while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'/' && b[j] != b'>' {
                j += 1;
            }
            let name = &xml[lt + 1..j];
            if name.is_empty() {
                return None;
            }
            let mut attrs = Vec::new();
            let empty;
            loop {
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                match b.get(j)? {
                    b'>' => {
                        empty = false;
                        j += 1;
                        break;
                    }
                    b'/' if b.get(j + 1) == Some(&b'>') => {
                        empty = true;
                        j += 2;
                        break;
                    }
                    _ => {}
                }
                let n0 = j;
                while j < b.len() && !b[j].is_ascii_whitespace() && !matches!(b[j], b'=' | b'>' | b'/') {
                    j += 1;
                }
                let aname = &xml[n0..j];
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                if aname.is_empty() || b.get(j) != Some(&b'=') {
                    return None;
                }
                j += 1;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let q = *b.get(j)?;
                if q != b'"' && q != b'\'' {
                    return None;
                }
                let v0 = j + 1;
                let v1 = v0 + xml[v0..].find(q as char)?;
                attrs.push((aname, v0 - lt..v1 - lt));
                j = v1 + 1;
            }
            out.push(Piece::Start { name: local(name), tag: &xml[lt..j], attrs, empty });
            i = j;
            continue;
        };
        out.push(Piece::Other(&xml[lt..end]));
        i = end;
    }
    Some(out)
}

/// A DASH MPD with the token in every URL it holds.
pub fn rewrite_mpd(mpd: &str, token: &str) -> String {
    let Some(pieces) = pieces(mpd) else {
        return mpd.to_string();
    };
    // BaseURL text: the piece after a non-empty <BaseURL> start tag.
    let base_text = |k: usize| match (&pieces[k], pieces.get(k + 1)) {
        (Piece::Start { name: "BaseURL", empty: false, .. }, Some(Piece::Other(t)))
            if !t.starts_with('<') =>
        {
            Some(*t)
        }
        _ => None,
    };
    let absolute_base = (0..pieces.len())
        .filter_map(base_text)
        .any(|t| xml_unescape(t.trim()).is_none_or(|u| leaves_origin(&u)));
    if absolute_base {
        return mpd.to_string();
    }
    let enc = encode_query_value(token);
    let mut out = String::with_capacity(mpd.len() + 16 * enc.len());
    let mut k = 0;
    while k < pieces.len() {
        match &pieces[k] {
            Piece::Other(t) => out.push_str(t),
            Piece::Start { name, tag, attrs, .. } => {
                let mut last = 0;
                for (aname, range) in attrs {
                    if MPD_URL_ATTRS.iter().any(|(e, a)| e == name && a == aname) {
                        out.push_str(&tag[last..range.start]);
                        out.push_str(&xml_with_token(&tag[range.clone()], &enc));
                        last = range.end;
                    }
                }
                out.push_str(&tag[last..]);
                if let Some(text) = base_text(k) {
                    let lead = &text[..text.len() - text.trim_start().len()];
                    let trail = &text[text.trim_end().len()..];
                    out.push_str(lead);
                    out.push_str(&xml_with_token(text.trim(), &enc));
                    out.push_str(trail);
                    k += 1;
                }
            }
        }
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "1700000000.ab12";

    #[test]
    fn encode_and_decode() {
        assert_eq!(encode_query_value("1.ab-_~Z"), "1.ab-_~Z");
        assert_eq!(encode_query_value("a b&c=d/e+f$g%"), "a%20b%26c%3Dd%2Fe%2Bf%24g%25");
        assert_eq!(encode_query_value("é"), "%C3%A9");
        for v in ["a b&c=d/e+f$g%", "é\"<>'", "", "1700000000.ab12", "k1:2.x/y=="] {
            assert_eq!(decode_query_value(&encode_query_value(v)).as_deref(), Some(v), "{v}");
        }
        assert_eq!(decode_query_value("a%2"), None);
        assert_eq!(decode_query_value("a%zz"), None);
        assert_eq!(decode_query_value("%ff"), None, "not UTF-8");
        assert_eq!(decode_query_value("a+b").as_deref(), Some("a+b"));
        assert_eq!(decode_query_value("%2b%2B").as_deref(), Some("++"));
    }

    #[test]
    fn query_tokens() {
        assert_eq!(query_token("token=1.ab").as_deref(), Some("1.ab"));
        assert_eq!(query_token("?x=1&token=a%2Fb&token=second").as_deref(), Some("a/b"));
        assert_eq!(query_token("token=").as_deref(), Some(""));
        assert_eq!(query_token("token").as_deref(), Some(""));
        assert_eq!(query_token("tokens=1&xtoken=2"), None);
        assert_eq!(query_token(""), None);
        assert_eq!(query_token("token=%zz"), None, "undecodable: no token");
        assert!(
            matches!(query_token_ref("x=1&token=1.ab"), Some(Cow::Borrowed("1.ab"))),
            "no escape: borrowed"
        );
        assert!(matches!(query_token_ref("token=a%2Fb"), Some(Cow::Owned(t)) if t == "a/b"));
    }

    #[test]
    fn tokens_go_on_relative_references_only() {
        let t = |u| with_token(u, "T").into_owned();
        assert_eq!(t("media_0.m3u8"), "media_0.m3u8?token=T");
        assert_eq!(t("sub/chunk-0-00001.m4s"), "sub/chunk-0-00001.m4s?token=T");
        assert_eq!(t("/hls/cam1/media_0.m3u8"), "/hls/cam1/media_0.m3u8?token=T");
        assert_eq!(t("../x.m4s"), "../x.m4s?token=T");
        assert_eq!(t("a.m4s?x=1"), "a.m4s?x=1&token=T", "other parameters kept");
        assert_eq!(t("a.m4s?token=old&x=1"), "a.m4s?x=1&token=T", "an old token replaced");
        assert_eq!(t("a.m4s?&&x=1&"), "a.m4s?x=1&token=T");
        assert_eq!(t("a.m4s#t=10"), "a.m4s?token=T#t=10", "fragment kept last");
        assert_eq!(t("a.m4s?x=1#f"), "a.m4s?x=1&token=T#f");
        assert_eq!(t("a:b/c.m4s"), "a:b/c.m4s", "a scheme: left alone");
        assert_eq!(t("./a:b.m4s"), "./a:b.m4s?token=T", "a colon in a path is no scheme");
        assert_eq!(t("x/a:b.m4s"), "x/a:b.m4s?token=T");
        for other in [
            "https://elsewhere/a.m4s",
            "HTTP://elsewhere/a.m4s",
            "//elsewhere/a.m4s",
            "\\\\elsewhere\\a.m4s",
            "data:video/mp4;base64,AAAA",
            "skd://key",
            "",
        ] {
            assert_eq!(t(other), other, "{other}");
        }
    }

    // What ffmpeg 5's dash muxer writes with -hls_playlist 1 (two renditions and audio).
    const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:7\n\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"group_A1\",NAME=\"audio_2\",DEFAULT=YES,URI=\"media_2.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1242000,AVERAGE-BANDWIDTH=1106000,RESOLUTION=320x240,CODECS=\"avc1.f4000d,mp4a.40.2\",AUDIO=\"group_A1\"\nmedia_0.m3u8\n\n#EXT-X-STREAM-INF:BANDWIDTH=491000,RESOLUTION=320x180,CODECS=\"avc1.4d400d,mp4a.40.2\",AUDIO=\"group_A1\"\nmedia_1.m3u8\n\n";
    const MEDIA: &str = "#EXTM3U\r\n#EXT-X-VERSION:7\r\n#EXT-X-TARGETDURATION:1\r\n#EXT-X-MEDIA-SEQUENCE:3\r\n#EXT-X-MAP:URI=\"init-0.m4s\"\r\n#EXTINF:1.000,\r\n#EXT-X-PROGRAM-DATE-TIME:2026-11-24T10:00:00.000+0000\r\nchunk-0-00003.m4s\r\n#EXTINF:1.000,\r\nchunk-0-00004.m4s\r\n";

    #[test]
    fn hls_master_playlist() {
        let out = rewrite_hls(MASTER, "1.a/b");
        let want = MASTER
            .replace("URI=\"media_2.m3u8\"", "URI=\"media_2.m3u8?token=1.a%2Fb\"")
            .replace("\nmedia_0.m3u8\n", "\nmedia_0.m3u8?token=1.a%2Fb\n")
            .replace("\nmedia_1.m3u8\n", "\nmedia_1.m3u8?token=1.a%2Fb\n");
        assert_eq!(out, want);
        // attributes with commas inside quotes survive
        assert!(out.contains("CODECS=\"avc1.f4000d,mp4a.40.2\",AUDIO=\"group_A1\""));
    }

    #[test]
    fn hls_media_playlist() {
        let out = rewrite_hls(MEDIA, TOKEN);
        let want = MEDIA
            .replace("URI=\"init-0.m4s\"", &format!("URI=\"init-0.m4s?token={TOKEN}\""))
            .replace("chunk-0-00003.m4s\r", &format!("chunk-0-00003.m4s?token={TOKEN}\r"))
            .replace("chunk-0-00004.m4s\r", &format!("chunk-0-00004.m4s?token={TOKEN}\r"));
        assert_eq!(out, want);
        // every non-comment line and every URI carries it
        for l in out.lines() {
            if !l.starts_with('#') && !l.is_empty() {
                assert!(l.ends_with(&format!("?token={TOKEN}")), "{l}");
            }
        }
        // the date line (with ':' and no URI) is untouched
        assert!(out.contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-24T10:00:00.000+0000\r\n"));
    }

    #[test]
    fn hls_other_tags_and_oddities() {
        let p = "#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"key?x=1\",IV=0x1\n#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"if.m3u8\"\n  seg.m4s  \n#EXT-X-SESSION-DATA:DATA-ID=\"a\",URI=\"https://elsewhere/d.json\"\n#EXT-X-MAP:URI=\"init.m4s\",BYTERANGE=\"100@0\"\nhttps://cdn/seg2.m4s\n#EXTINF:2,\n#comment URI=\"nope\"\n#EXT-X-BAD:URI=\"unterminated\nlast.m4s";
        let out = rewrite_hls(p, "T");
        let want = "#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"key?x=1&token=T\",IV=0x1\n#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"if.m3u8?token=T\"\nseg.m4s?token=T\n#EXT-X-SESSION-DATA:DATA-ID=\"a\",URI=\"https://elsewhere/d.json\"\n#EXT-X-MAP:URI=\"init.m4s?token=T\",BYTERANGE=\"100@0\"\nhttps://cdn/seg2.m4s\n#EXTINF:2,\n#comment URI=\"nope\"\n#EXT-X-BAD:URI=\"unterminated\nlast.m4s?token=T";
        assert_eq!(out, want);
        assert_eq!(rewrite_hls("", "T"), "");
        assert_eq!(rewrite_hls("#EXTM3U\n", "T"), "#EXTM3U\n");
        // rewriting twice gives one token, the new one
        assert_eq!(rewrite_hls(&rewrite_hls(MEDIA, "old"), TOKEN), rewrite_hls(MEDIA, TOKEN));
    }

    const MPD: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" minimumUpdatePeriod="PT500S">
	<!-- a comment with media="x.m4s" -->
	<Period id="0" start="PT0.0S">
		<AdaptationSet id="0" contentType="video" segmentAlignment="true">
			<Representation id="0" mimeType="video/mp4" codecs="avc1.f4000d" bandwidth="1000000" width="320" height="240">
				<SegmentTemplate timescale="1000000" initialization="init-$RepresentationID$.m4s" media="chunk-$RepresentationID$-$Number%05d$.m4s" startNumber="1">
					<SegmentTimeline>
						<S t="0" d="1000000" r="4" />
					</SegmentTimeline>
				</SegmentTemplate>
			</Representation>
		</AdaptationSet>
	</Period>
	<UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-xsdate:2014" value="https://time.example/"/>
</MPD>
"#;

    #[test]
    fn mpd_segment_templates() {
        let out = rewrite_mpd(MPD, "1.a/b");
        let want = MPD
            .replace(
                "initialization=\"init-$RepresentationID$.m4s\"",
                "initialization=\"init-$RepresentationID$.m4s?token=1.a%2Fb\"",
            )
            .replace(
                "media=\"chunk-$RepresentationID$-$Number%05d$.m4s\"",
                "media=\"chunk-$RepresentationID$-$Number%05d$.m4s?token=1.a%2Fb\"",
            );
        assert_eq!(out, want);
        assert!(out.contains("<!-- a comment with media=\"x.m4s\" -->"), "comments untouched");
        assert!(out.contains("value=\"https://time.example/\""), "other URLs untouched");
        // no '$' from the token in a template: it would read as an identifier
        assert!(!rewrite_mpd(MPD, "a$b").contains("a$b"));
    }

    #[test]
    fn mpd_other_url_places() {
        let m = "<MPD><BaseURL> seg/ </BaseURL><Period><dash:SegmentList xmlns:dash='x'><Initialization sourceURL='i.mp4?a=1&amp;b=2'/><SegmentURL media=\"s1.m4s\" index=\"s1.idx\"/><SegmentURL media = 's2.m4s' /></dash:SegmentList><SegmentBase><RepresentationIndex sourceURL=\"ri\"/></SegmentBase><SegmentTemplate index=\"x\" bitstreamSwitching=\"bs\"/><Other media=\"no\"/></Period></MPD>";
        let out = rewrite_mpd(m, "T");
        let want = "<MPD><BaseURL> seg/?token=T </BaseURL><Period><dash:SegmentList xmlns:dash='x'><Initialization sourceURL='i.mp4?a=1&amp;b=2&amp;token=T'/><SegmentURL media=\"s1.m4s?token=T\" index=\"s1.idx?token=T\"/><SegmentURL media = 's2.m4s?token=T' /></dash:SegmentList><SegmentBase><RepresentationIndex sourceURL=\"ri?token=T\"/></SegmentBase><SegmentTemplate index=\"x?token=T\" bitstreamSwitching=\"bs?token=T\"/><Other media=\"no\"/></Period></MPD>";
        assert_eq!(out, want);
    }

    #[test]
    fn mpd_absolute_base_or_unreadable_left_alone() {
        let abs = "<MPD><BaseURL>https://cdn.example/live/</BaseURL><SegmentTemplate media=\"c.m4s\"/></MPD>";
        assert_eq!(rewrite_mpd(abs, "T"), abs, "relative references would resolve on another host");
        let net = "<MPD><BaseURL>//cdn.example/</BaseURL><SegmentTemplate media=\"c.m4s\"/></MPD>";
        assert_eq!(rewrite_mpd(net, "T"), net);
        for bad in ["<MPD><SegmentTemplate media=\"c.m4s\"", "<MPD a=b>", "<>", "<MPD><!-- x"] {
            assert_eq!(rewrite_mpd(bad, "T"), bad, "{bad}");
        }
        assert_eq!(rewrite_mpd("", "T"), "");
        assert_eq!(rewrite_mpd("plain", "T"), "plain");
        // a token with XML specials is escaped as an attribute value
        let out = rewrite_mpd("<MPD><SegmentTemplate media='c.m4s'/></MPD>", "a'\"&<");
        assert_eq!(out, "<MPD><SegmentTemplate media='c.m4s?token=a%27%22%26%3C'/></MPD>");
    }

    #[test]
    fn xml_entities() {
        assert_eq!(xml_unescape("a&amp;b&lt;&#65;&#x42;&quot;").as_deref(), Some("a&b<AB\""));
        assert_eq!(xml_unescape("a&b"), None);
        assert_eq!(xml_unescape("&bogus;"), None);
        assert_eq!(xml_escape("a&b<c>\"'"), "a&amp;b&lt;c&gt;&quot;&apos;");
    }
}
