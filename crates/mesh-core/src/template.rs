//! A media playlist's rewrite made once per version of the file, for every viewer's token:
//! [`rewrite_hls`] puts the (encoded) token at places that depend on the playlist only, so the
//! playlist rewritten with a marker and cut at the marker gives the pieces between which any
//! token goes. [`HlsTemplate::apply`] is then [`rewrite_hls`] with that token, at the cost of a
//! copy: the node rewrites a playlist once per version, not once per request.

use crate::manifest::{encode_query_value, rewrite_hls};

/// Unreserved characters only (it encodes to itself), and not in the playlists ffmpeg writes;
/// a playlist that holds it gets no template ([`HlsTemplate::new`] is None).
const MARK: &str = "MeshTokenMark7Qz9";

/// The pieces of a rewritten playlist around its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsTemplate {
    pieces: Vec<String>,
}

impl HlsTemplate {
    /// The template of `playlist`; None when it holds the marker (rewrite it per token then).
    pub fn new(playlist: &str) -> Option<HlsTemplate> {
        if playlist.contains(MARK) {
            return None;
        }
        let rewritten = rewrite_hls(playlist, MARK);
        Some(HlsTemplate { pieces: rewritten.split(MARK).map(str::to_string).collect() })
    }

    /// The playlist rewritten for `token` (decoded, non-empty): `rewrite_hls(playlist, token)`.
    pub fn apply(&self, token: &str) -> String {
        let enc = encode_query_value(token);
        let len = self.pieces.iter().map(String::len).sum::<usize>() + enc.len() * (self.pieces.len() - 1);
        let mut out = String::with_capacity(len);
        for (i, p) in self.pieces.iter().enumerate() {
            if i > 0 {
                out.push_str(&enc);
            }
            out.push_str(p);
        }
        out
    }

    /// Bytes held (for bounding a cache of templates).
    pub fn size(&self) -> usize {
        self.pieces.iter().map(String::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYLISTS: &[&str] = &[
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:8\n\
         #EXT-X-MAP:URI=\"init-0.m4s\"\n#EXTINF:2.000000,\nchunk-0-00008.m4s\n#EXTINF:2.000000,\n\
         chunk-0-00009.m4s\n",
        "#EXTM3U\r\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"a,b\"\r\nmedia_0.m3u8?x=1&token=old#f\r\n\
         #EXT-X-MEDIA:TYPE=AUDIO,URI=\"media_2.m3u8\",NAME=\"a\"\r\nhttps://elsewhere/x.ts\r\n\r\n",
        "",
        "no newline at the end.m4s",
        "#EXT-X-KEY:METHOD=AES-128,URI=\"key?token=1\"\n  spaced.m4s  \n#comment URI=\"x\"\n",
    ];

    #[test]
    fn a_template_applied_is_the_rewrite_for_that_token() {
        for p in PLAYLISTS {
            let t = HlsTemplate::new(p).unwrap();
            for token in ["1796178425.ce624fdba9", "v2.k1.99.ab", "a b&c=d/é%", "x"] {
                assert_eq!(t.apply(token), rewrite_hls(p, token), "{p:?} with {token:?}");
            }
        }
    }

    #[test]
    fn a_playlist_with_the_marker_has_no_template() {
        assert_eq!(HlsTemplate::new(&format!("#EXTM3U\n{MARK}.m4s\n")), None);
        assert_eq!(encode_query_value(MARK), MARK);
    }
}
