//! The table's word on a publish or a play, in-process (no I/O).

use super::{refusal, takes, Decision, Refusal, SessionKind};
use crate::args::MeshArgs;
use crate::name::is_valid_id;
use crate::role::Role;
use crate::table::{EntryKind, Table};
use crate::token::{ct_eq, key_sha256};

/// What the node knows when it decides.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub table: &'a Table,
    pub role: Role,
    pub node_id: &'a str,
    /// Unix seconds.
    pub now: u64,
}

/// A publish: stream name and its query string.
#[derive(Debug, Clone, Copy)]
pub struct PublishRequest<'a> {
    pub stream: &'a str,
    pub args: &'a str,
}

/// A play: stream name and its query string.
pub type PlayRequest<'a> = PublishRequest<'a>;

impl Context<'_> {
    /// Decide a publish. A `node=` argument marks a push from another node; anything else is a
    /// broadcaster.
    pub fn publish(&self, req: PublishRequest<'_>) -> Decision {
        self.publish_args(req.stream, &MeshArgs::parse(req.args))
    }

    /// [`Context::publish`] with the arguments parsed already.
    pub fn publish_args(&self, stream: &str, args: &MeshArgs<'_>) -> Decision {
        if !is_valid_id(stream) {
            return Err(Refusal::BadName);
        }
        match args.node {
            Some(from) => self.node_push(stream, from, args.key),
            None => self.broadcaster(stream, args.key),
        }
    }

    fn broadcaster(&self, stream: &str, key: Option<&str>) -> Decision {
        if !takes(self.role, &SessionKind::Broadcaster) {
            return Err(Refusal::WrongRole);
        }
        let key = key.filter(|k| !k.is_empty()).ok_or(Refusal::NoKey)?;
        let want = self.table.publish.get(stream).ok_or(Refusal::UnknownStream)?;
        if ct_eq(&key_sha256(key), want) {
            Ok(SessionKind::Broadcaster)
        } else {
            Err(Refusal::WrongKey)
        }
    }

    fn node_push(&self, stream: &str, from: &str, key: Option<&str>) -> Decision {
        let kind = match self.role {
            Role::RootRelay => EntryKind::Ingest,
            Role::Relay => EntryKind::Relay,
            Role::Ingest | Role::Standalone => return Err(Refusal::WrongRole),
        };
        if !is_valid_id(from) || from == self.node_id {
            return Err(Refusal::BadNode);
        }
        let key = key.filter(|k| !k.is_empty()).ok_or(Refusal::NoKey)?;
        let mut named = false;
        let mut matched = false;
        for e in self.table.entries(kind, stream).iter().filter(|e| e.node_id == self.node_id) {
            named = true;
            // Every entry is compared, so the time taken does not say which one matched.
            let key_ok = ct_eq(e.node_key.as_bytes(), key.as_bytes());
            let from_ok = e.from.as_deref().is_none_or(|f| f == from);
            matched |= key_ok && from_ok;
        }
        match (named, matched) {
            (false, _) => Err(Refusal::UnknownStream),
            (true, false) => Err(Refusal::WrongKey),
            (true, true) => Ok(SessionKind::NodePush { from: from.to_string() }),
        }
    }

    /// Decide a viewer's play. (Relay sessions of nginx-rtmp never reach this: the glue lets
    /// them through.)
    pub fn play(&self, req: PlayRequest<'_>) -> Decision {
        self.play_args(req.stream, &MeshArgs::parse(req.args))
    }

    /// [`Context::play`] with the arguments parsed already.
    pub fn play_args(&self, stream: &str, args: &MeshArgs<'_>) -> Decision {
        if !is_valid_id(stream) {
            return Err(Refusal::BadName);
        }
        if !takes(self.role, &SessionKind::Viewer) {
            return Err(Refusal::WrongRole);
        }
        if !self.table.checks_viewer_tokens() {
            return Ok(SessionKind::Viewer);
        }
        let token = args.token.filter(|t| !t.is_empty()).ok_or(Refusal::NoToken)?;
        self.table.verify_viewer(stream, token, self.now).map(|()| SessionKind::Viewer).map_err(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testutil::table;
    use crate::token::make_viewer_token;

    fn pub_(t: &Table, role: Role, node: &str, stream: &str, args: &str) -> Decision {
        Context { table: t, role, node_id: node, now: 1000 }.publish(PublishRequest { stream, args })
    }

    fn play(t: &Table, role: Role, stream: &str, args: &str) -> Decision {
        Context { table: t, role, node_id: "n", now: 1000 }.play(PlayRequest { stream, args })
    }

    use Refusal::*;
    use Role::*;

    fn push(from: &str) -> Decision {
        Ok(SessionKind::NodePush { from: from.into() })
    }

    #[test]
    fn broadcaster_publish_for_every_role() {
        let t = table(false);
        let cases: &[(Role, &str, &str, Decision)] = &[
            (Ingest, "cam1", "key=bkey", Ok(SessionKind::Broadcaster)),
            (Standalone, "cam1", "key=bkey", Ok(SessionKind::Broadcaster)),
            (Ingest, "cam1", "key=wrong", Err(WrongKey)),
            (Ingest, "cam1", "key=", Err(NoKey)),
            (Ingest, "cam1", "", Err(NoKey)),
            (Ingest, "cam2", "key=bkey", Err(UnknownStream)),
            (Ingest, "../x", "key=bkey", Err(BadName)),
            (Ingest, "a b", "key=bkey", Err(BadName)),
            (RootRelay, "cam1", "key=bkey", Err(WrongRole)),
            (Relay, "cam1", "key=bkey", Err(WrongRole)),
        ];
        for (role, stream, args, want) in cases {
            assert_eq!(&pub_(&t, *role, "self", stream, args), want, "{role} {stream} {args}");
        }
        assert_eq!(pub_(&t, Ingest, "i", &"x".repeat(300), "key=bkey"), Err(BadName));
    }

    #[test]
    fn node_push_publish_for_every_role() {
        let t = table(false);
        let cases: &[(Role, &str, &str, Decision)] = &[
            // root relay: ingest entries naming it
            (RootRelay, "root-1", "node=ingest-1&key=k-i-r1", push("ingest-1")),
            (RootRelay, "root-1", "node=ingest-1&key=k-r-e1", Err(WrongKey)),
            (RootRelay, "root-1", "node=ingest-1", Err(NoKey)),
            (RootRelay, "root-2", "node=ingest-1&key=k-i-r1", Err(UnknownStream)),
            (RootRelay, "root-1", "node=root-1&key=k-i-r1", Err(BadNode)),
            (RootRelay, "root-1", "node=a/b&key=k-i-r1", Err(BadNode)),
            // relay: relay entries naming it, `from` enforced when present
            (Relay, "edge-1", "node=root-1&key=k-r-e1", push("root-1")),
            (Relay, "edge-1", "node=root-1&key=k-i-r1", Err(WrongKey)),
            (Relay, "edge-9", "node=edge-1&key=k-e1-e9", push("edge-1")),
            (Relay, "edge-9", "node=root-1&key=k-e1-e9", Err(WrongKey)),
            (Relay, "root-1", "node=ingest-1&key=k-i-r1", Err(UnknownStream)),
            // ingest and standalone take no node pushes
            (Ingest, "root-1", "node=x&key=k-i-r1", Err(WrongRole)),
            (Standalone, "edge-1", "node=x&key=k-r-e1", Err(WrongRole)),
        ];
        for (role, node, args, want) in cases {
            assert_eq!(&pub_(&t, *role, node, "cam1", args), want, "{role} {node} {args}");
        }
    }

    #[test]
    fn play_for_every_role() {
        let open = table(false);
        for role in [Ingest, RootRelay] {
            assert_eq!(play(&open, role, "cam1", ""), Err(WrongRole));
        }
        for role in [Relay, Standalone] {
            assert_eq!(play(&open, role, "cam1", ""), Ok(SessionKind::Viewer));
            assert_eq!(play(&open, role, "anything", ""), Ok(SessionKind::Viewer));
            assert_eq!(play(&open, role, "../x", ""), Err(BadName));
        }
    }

    #[test]
    fn play_with_tokens() {
        let t = table(true);
        let good = make_viewer_token("vs", "cam1", 2000);
        let expired = make_viewer_token("vs", "cam1", 999);
        let forged = make_viewer_token("guess", "cam1", 2000);
        let other_stream = make_viewer_token("vs", "cam2", 2000);
        let cases: Vec<(String, Decision)> = vec![
            (format!("token={good}"), Ok(SessionKind::Viewer)),
            (format!("token={expired}"), Err(ExpiredToken)),
            (format!("token={forged}"), Err(BadToken)),
            (format!("token={other_stream}"), Err(BadToken)),
            ("token=garbage".into(), Err(BadToken)),
            ("token=".into(), Err(NoToken)),
            ("".into(), Err(NoToken)),
        ];
        for (args, want) in cases {
            assert_eq!(play(&t, Relay, "cam1", &args), want, "{args}");
        }
        assert_eq!(play(&t, RootRelay, "cam1", &format!("token={good}")), Err(WrongRole));
    }

    #[test]
    fn play_with_v2_tokens() {
        let secret = "edge-viewer-key-0123456789";
        let t = Table::parse(
            serde_json::json!({
                "viewer_keys": [{"id": "k2", "secret": secret}, {"id": "k1", "secret": "retired-key-0123456789", "not_after": 999}],
                "streams": {"cam1": {"id": "gen-2"}}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let v2 = |secret: &str, kid: &str, stream: &str, id: &str, expiry: u64| {
            format!("token={}", crate::token::make_token_v2(secret, kid, stream, id, expiry))
        };
        let cases: Vec<(String, Decision)> = vec![
            (v2(secret, "k2", "cam1", "gen-2", 2000), Ok(SessionKind::Viewer)),
            (v2(secret, "k2", "cam1", "gen-1", 2000), Err(BadToken)),
            (v2("retired-key-0123456789", "k1", "cam1", "gen-2", 2000), Err(ExpiredToken)),
            (v2(secret, "k2", "cam1", "gen-2", 999), Err(ExpiredToken)),
            (v2(secret, "k2", "cam1", "gen-2", 1000 + 200_000), Err(BadToken)),
            (v2(secret, "k3", "cam1", "gen-2", 2000), Err(BadToken)),
            (format!("token={}", make_viewer_token(secret, "cam1", 2000)), Err(BadToken)),
            ("token=v2.k2.2000.zz".into(), Err(BadToken)),
            ("".into(), Err(NoToken)),
        ];
        for (args, want) in cases {
            assert_eq!(play(&t, Relay, "cam1", &args), want, "{args}");
        }
        assert_eq!(play(&t, Relay, "cam2", &v2(secret, "k2", "cam2", "", 2000)), Err(UnknownStream));
    }

    #[test]
    fn refusal_labels_are_distinct() {
        let mut labels: Vec<_> = Refusal::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }
}
