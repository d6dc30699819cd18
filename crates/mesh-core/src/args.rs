//! Query arguments of an RTMP publish/play (`name?node=..&key=..`) or an HTTP request.

/// The arguments the mesh reads. Values are borrowed from the query string as they are:
/// keys and tokens are URL-safe by construction, so no percent-decoding is done, and a value
/// with a `%` simply fails to match.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MeshArgs<'a> {
    /// Sending node id (node-to-node pushes).
    pub node: Option<&'a str>,
    /// Broadcaster stream key, or a node key.
    pub key: Option<&'a str>,
    /// Viewer token.
    pub token: Option<&'a str>,
}

impl<'a> MeshArgs<'a> {
    /// Parse `a=b&c=d`; a leading `?` is allowed; the first occurrence of a name wins.
    pub fn parse(query: &'a str) -> MeshArgs<'a> {
        let mut out = MeshArgs::default();
        let query = query.strip_prefix('?').unwrap_or(query);
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "node" => &mut out.node,
                "key" => &mut out.key,
                "token" => &mut out.token,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let a = MeshArgs::parse("node=ingest-1&key=abc&x=1");
        assert_eq!(a.node, Some("ingest-1"));
        assert_eq!(a.key, Some("abc"));
        assert_eq!(a.token, None);
        let a = MeshArgs::parse("?token=1.ab&key=&key=second");
        assert_eq!(a.token, Some("1.ab"));
        assert_eq!(a.key, Some(""));
        assert_eq!(MeshArgs::parse(""), MeshArgs::default());
        assert_eq!(MeshArgs::parse("keyx=1&nodes=2").key, None);
        assert_eq!(MeshArgs::parse("key").key, Some(""));
    }
}
