use super::super::testutil::{node, table, v2_table, RETIRED_SECRET, V2_SECRET};
use super::*;
use crate::role::Role::{self, *};
use crate::table::Table;
use crate::token::{key_sha256_hex, make_token_v2, make_viewer_token};

fn session(kind: SessionKind, credential: Option<&str>, via: Via) -> Admitted {
    Admitted { kind, stream: "cam1".into(), credential: credential.map(str::to_string), via }
}

fn drop_(r: Refusal) -> Verdict {
    Verdict::Drop(Reason::Rule(r))
}

const AUTH: Via = Via::Auth { until: 5000 };

#[test]
fn a_role_change_drops_what_the_role_no_longer_takes() {
    let viewer = session(SessionKind::Viewer, None, Via::Table);
    let broadcaster = session(SessionKind::Broadcaster, Some("bkey"), Via::Table);
    let by_master = session(SessionKind::Broadcaster, Some("other"), AUTH);
    let viewer_by_master = session(SessionKind::Viewer, Some("t"), AUTH);
    for role in Role::ALL {
        let n = node("n", role, table(false));
        let want = |ok: bool| if ok { Verdict::Keep } else { drop_(Refusal::WrongRole) };
        assert_eq!(viewer.recheck(&n, 1000), want(role.serves_viewers()), "{role}");
        assert_eq!(viewer_by_master.recheck(&n, 1000), want(role.serves_viewers()), "{role}");
        assert_eq!(broadcaster.recheck(&n, 1000), want(role.takes_broadcasters()), "{role}");
        assert_eq!(by_master.recheck(&n, 1000), want(role.takes_broadcasters()), "{role}");
    }
}

#[test]
fn publishers_of_the_table_are_decided_again_in_full() {
    let push = session(SessionKind::NodePush { from: "root-1".into() }, Some("k-r-e1"), Via::Table);
    assert_eq!(push.recheck(&node("edge-1", Relay, table(false)), 1000), Verdict::Keep);
    assert_eq!(
        push.recheck(&node("edge-2", Relay, table(false)), 1000),
        drop_(Refusal::UnknownStream),
        "entry gone"
    );
    assert_eq!(push.recheck(&node("edge-1", Ingest, table(false)), 1000), drop_(Refusal::WrongRole));
    let from_edge = session(SessionKind::NodePush { from: "root-1".into() }, Some("k-e1-e9"), Via::Table);
    assert_eq!(
        from_edge.recheck(&node("edge-9", Relay, table(false)), 1000),
        drop_(Refusal::WrongKey),
        "from enforced"
    );
    let b = session(SessionKind::Broadcaster, Some("bkey"), Via::Table);
    assert_eq!(b.recheck(&node("i", Ingest, table(false)), 1000), Verdict::Keep);
    assert_eq!(b.recheck(&node("i", Ingest, Table::default()), 1000), drop_(Refusal::UnknownStream));
    let rotated = serde_json::json!({"publish": {"cam1": {"key_sha256": key_sha256_hex("new")}}});
    let rotated = Table::parse(rotated.to_string().as_bytes()).unwrap();
    assert_eq!(b.recheck(&node("i", Ingest, rotated), 1000), drop_(Refusal::WrongKey), "key rotated");
    // Admitted by the master: the table's keys do not matter until the answer runs out.
    let m = session(SessionKind::Broadcaster, Some("other"), AUTH);
    assert_eq!(m.recheck(&node("i", Ingest, Table::default()), 1000), Verdict::Keep);
}

#[test]
fn viewers_of_table_tokens_are_checked_for_what_a_table_takes_away_not_expiry() {
    let tok = |secret: &str, kid: &str, expiry: u64| make_token_v2(secret, kid, "cam1", "gen-2", expiry);
    let viewer = |t: String| session(SessionKind::Viewer, Some(&t), Via::Table);
    let n = node("edge-1", Relay, v2_table("gen-2"));
    assert_eq!(viewer(tok(V2_SECRET, "k2", 2000)).recheck(&n, 1000), Verdict::Keep);
    assert_eq!(viewer(tok(V2_SECRET, "k2", 1500)).recheck(&n, 1600), Verdict::Keep, "expired since: kept");
    assert_eq!(
        viewer(tok(RETIRED_SECRET, "k1", 2000)).recheck(&n, 1000),
        drop_(Refusal::ExpiredToken),
        "its key retired"
    );
    let recreated = node("edge-1", Relay, v2_table("gen-3"));
    assert_eq!(
        viewer(tok(V2_SECRET, "k2", 2000)).recheck(&recreated, 1000),
        drop_(Refusal::BadToken),
        "stream re-created"
    );
    // A table that starts checking tokens drops the viewers who came without one.
    let open_viewer = session(SessionKind::Viewer, None, Via::Table);
    assert_eq!(open_viewer.recheck(&node("e", Relay, table(false)), 1000), Verdict::Keep);
    assert_eq!(open_viewer.recheck(&node("e", Relay, table(true)), 1000), drop_(Refusal::NoToken));
    let legacy = viewer(make_viewer_token("vs", "cam1", 2000));
    assert_eq!(legacy.recheck(&node("e", Relay, table(true)), 1000), Verdict::Keep);
    // The master's viewers are not checked against table tokens.
    let m = session(SessionKind::Viewer, Some("t"), AUTH);
    assert_eq!(m.recheck(&node("e", Relay, table(true)), 1000), Verdict::Keep);
}

#[test]
fn master_admissions_are_asked_again_when_they_run_out() {
    let mut s = session(SessionKind::Broadcaster, Some("k"), Via::Auth { until: 100 });
    assert!(!s.due(99));
    assert!(s.due(100));
    assert!(!session(SessionKind::Broadcaster, Some("k"), Via::Table).due(u64::MAX), "the table's: never");
    let ask = s.ask("ingest-1", "192.0.2.1");
    assert_eq!(
        ask.request,
        crate::auth::request("ingest-1", Action::Publish, "cam1", Some("k"), "192.0.2.1")
    );
    assert_eq!(ask.question, s.question());
    let v = session(SessionKind::Viewer, Some("t"), AUTH).ask("edge-1", "a");
    assert_eq!(
        (v.request.action, v.request.key, v.request.token.as_deref()),
        (Action::Play, None, Some("t"))
    );
    // The answers.
    let q = s.question();
    let allow = Answer { word: Word::Allow, reason: "ok".into(), until: 400 };
    assert_eq!(s.on_answer(&q, &allow, 100), Some(Verdict::Keep));
    assert_eq!(s.via, Via::Auth { until: 400 });
    let failed = Answer { word: Word::Failed, reason: "auth endpoint failed: timeout".into(), until: 400 };
    assert_eq!(s.on_answer(&q, &failed, 400), Some(Verdict::Keep), "unreachable is no deny");
    assert_eq!(s.via, Via::Auth { until: 400 + RECHECK_FAILED_S });
    let other = Question::new(Action::Publish, "cam1", Some("another"));
    let deny = Answer { word: Word::Deny, reason: "revoked".into(), until: 500 };
    assert_eq!(s.on_answer(&other, &deny, 430), None, "another question: nothing applied");
    assert_eq!(s.on_answer(&q, &deny, 430), Some(Verdict::Drop(Reason::Auth("revoked".into()))));
}

#[test]
fn what_a_session_is() {
    let push = session(SessionKind::NodePush { from: "root-1".into() }, Some("k"), Via::Table);
    assert!(push.is_publisher() && push.source() == Some("root-1") && push.action() == Action::Publish);
    let b = session(SessionKind::Broadcaster, Some("k"), Via::Table);
    assert!(b.is_publisher() && b.source().is_none());
    let v = session(SessionKind::Viewer, Some("SECRET"), Via::Table);
    assert!(!v.is_publisher() && v.action() == Action::Play);
    assert!(!format!("{v:?}").contains("SECRET"));
    assert_eq!(Via::Table.until(), None);
    assert!(!Via::Table.ends_soon(0));
}
