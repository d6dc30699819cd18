use super::super::testutil::{node, table};
use super::*;
use crate::admission::REFRESH_S;
use crate::auth::{Waiter, Word, FAILED_SHOWN_S};
use crate::role::Role::*;
use crate::token::make_viewer_token;
use crate::wire::AuthReply;

const PEER: &str = "192.0.2.7";

fn rtmp<'a>(action: Action, stream: &'a str, args: &'a str) -> Request<'a> {
    Request::rtmp(action, stream, args, PEER)
}

fn admitted(kind: SessionKind, credential: Option<&str>, via: Via) -> Outcome {
    Outcome::Admit(Admitted { kind, stream: "cam1".into(), credential: credential.map(str::to_string), via })
}

fn refuse(r: Refusal) -> Outcome {
    Outcome::Refuse(Reason::Rule(r))
}

/// The master's answer to `ask`, in `book`'s cache.
fn answer(book: &mut Book, ask: &Ask, result: Result<AuthReply, &str>, now: u64) {
    let w = if result.is_ok() { Waiter::Recheck(1) } else { Waiter::Cache };
    let id = book.ask(w, &ask.request).unwrap().send.unwrap().id;
    book.on_answer(id, result, now).unwrap();
}

fn allow(ttl: u64) -> Result<AuthReply, &'static str> {
    Ok(AuthReply { allow: true, ttl_s: Some(ttl), reason: Some("stream key".into()) })
}

fn deny(why: &str) -> Result<AuthReply, &'static str> {
    Ok(AuthReply { allow: false, ttl_s: Some(60), reason: Some(why.into()) })
}

#[test]
fn relay_sessions_pass_untouched() {
    let n = node("edge-1", Relay, table(true));
    let book = Book::default();
    for action in [Action::Publish, Action::Play] {
        let mut req = rtmp(action, "../bad name", "");
        req.relay = true;
        assert_eq!(decide(&req, &n, Some(&book), 1000), Outcome::Pass);
    }
}

#[test]
fn another_workers_copy_is_a_copy_for_every_role() {
    let book = Book::default();
    for role in [Ingest, RootRelay, Relay, Standalone] {
        let n = node("n-1", role, table(true));
        let mut req = rtmp(Action::Publish, "cam1", "");
        req.auto_pushed = true;
        let Outcome::Admit(a) = decide(&req, &n, Some(&book), 1000) else { panic!("{role}: not admitted") };
        assert_eq!((a.kind.clone(), a.credential.clone(), a.via), (SessionKind::Copy, None, Via::Table));
        assert!(a.is_copy() && a.is_publisher() && a.source().is_none());
        assert_eq!(
            a.recheck(&node("n-1", role, crate::table::Table::default()), 1000),
            crate::admission::Verdict::Keep,
            "{role}: the publishing worker re-checks"
        );
        let mut play = rtmp(Action::Play, "cam1", "");
        play.auto_pushed = true;
        assert_eq!(decide(&play, &n, Some(&book), 1000), Outcome::Pass);
    }
}

#[test]
fn publishes_the_table_decides() {
    let book = Book::default();
    let ingest = node("ingest-1", Ingest, table(false));
    let d = |n: &Node, args: &str, master: bool| {
        decide(&rtmp(Action::Publish, "cam1", args), n, master.then_some(&book), 1000)
    };
    assert_eq!(d(&ingest, "key=bkey", true), admitted(SessionKind::Broadcaster, Some("bkey"), Via::Table));
    assert_eq!(d(&ingest, "key=wrong", false), refuse(Refusal::WrongKey), "no master: the table's word");
    assert_eq!(d(&ingest, "key=", true), refuse(Refusal::NoKey), "no key: nothing to ask");
    assert_eq!(d(&ingest, "node=x&key=k", true), refuse(Refusal::WrongRole));
    let relay = node("edge-1", Relay, table(false));
    assert_eq!(d(&relay, "key=bkey", true), refuse(Refusal::WrongRole), "a role refusal is never asked");
    assert_eq!(
        d(&relay, "node=root-1&key=k-r-e1", true),
        admitted(SessionKind::NodePush { from: "root-1".into() }, Some("k-r-e1"), Via::Table)
    );
    assert_eq!(
        d(&relay, "node=root-1&key=other", true),
        refuse(Refusal::WrongKey),
        "node pushes are never asked"
    );
    let other = decide(&rtmp(Action::Publish, "cam9", "node=root-1&key=k"), &relay, Some(&book), 1000);
    assert_eq!(other, refuse(Refusal::UnknownStream));
}

#[test]
fn keys_the_table_does_not_know_go_to_the_master() {
    let mut book = Book::default();
    let n = node("ingest-1", Standalone, table(false));
    for (stream, args) in [("cam1", "key=other"), ("cam2", "key=k2&x=1")] {
        let Outcome::Ask(ask) = decide(&rtmp(Action::Publish, stream, args), &n, Some(&book), 1000) else {
            panic!("{stream} {args}: no question");
        };
        let key = args.split('&').next().unwrap().strip_prefix("key=").unwrap();
        assert_eq!(ask.request, auth::request("ingest-1", Action::Publish, stream, Some(key), PEER));
        assert_eq!(ask.question, Question::new(Action::Publish, stream, Some(key)));
        assert_eq!(ask.transport, Transport::Rtmp);
    }
    // An answer cached applies at once, with the session admitted until it runs out.
    let req = rtmp(Action::Publish, "cam1", "key=other");
    let ask = req.ask("ingest-1");
    answer(&mut book, &ask, allow(30), 1000);
    let want = admitted(SessionKind::Broadcaster, Some("other"), Via::Auth { until: 1030 });
    assert_eq!(decide(&req, &n, Some(&book), 1029), want);
    assert!(matches!(decide(&req, &n, Some(&book), 1030), Outcome::Ask(_)), "run out: asked again");
    answer(&mut book, &ask, deny("wrong key"), 1030);
    let got = decide(&req, &n, Some(&book), 1031);
    assert_eq!(got, Outcome::Refuse(Reason::Auth("wrong key".into())));
    let Outcome::Refuse(why) = got else { unreachable!() };
    assert_eq!(why.to_string(), "auth: wrong key");
}

#[test]
fn plays_go_to_the_master_only_without_viewer_tokens() {
    let book = Book::default();
    let open = node("edge-1", Relay, table(false));
    let play = |n: &Node, args: &str, master: bool| {
        decide(&rtmp(Action::Play, "cam1", args), n, master.then_some(&book), 1000)
    };
    assert_eq!(play(&open, "", false), admitted(SessionKind::Viewer, None, Via::Table));
    let Outcome::Ask(ask) = play(&open, "token=", true) else { panic!("no question") };
    assert_eq!(ask.request.token.as_deref(), Some(""), "RTMP sends the token as given");
    assert_eq!(ask.request.key, None);
    let Outcome::Ask(ask) = play(&open, "", true) else { panic!("no question") };
    assert_eq!(ask.request.token, None);
    assert_eq!(play(&node("i", Ingest, table(false)), "", true), refuse(Refusal::WrongRole));
    let tokens = node("edge-1", Relay, table(true));
    let good = make_viewer_token("vs", "cam1", 2000);
    let args = format!("token={good}");
    assert_eq!(
        play(&tokens, &args, true),
        admitted(SessionKind::Viewer, Some(&good), Via::Table),
        "the table decides"
    );
    assert_eq!(play(&tokens, "token=bad", true), refuse(Refusal::BadToken));
    assert_eq!(play(&tokens, "", true), refuse(Refusal::NoToken));
}

#[test]
fn our_own_transcoder_passes_only_with_a_good_credential() {
    let n = node("edge-1", Relay, table(true));
    let book = Book::default();
    let mut req = rtmp(Action::Play, "cam1", "node=edge-1&key=cred");
    assert_eq!(req.transcoder_key("edge-1"), None, "not from this machine");
    req.loopback = true;
    assert_eq!(req.transcoder_key("edge-1"), Some("cred"));
    assert_eq!(req.transcoder_key("edge-2"), None, "another node's name");
    assert_eq!(decide(&req, &n, Some(&book), 1000), refuse(Refusal::NoToken), "a bad credential: a viewer");
    req.own_transcoder = true;
    assert_eq!(decide(&req, &n, Some(&book), 1000), Outcome::Pass);
    req.loopback = false;
    assert_eq!(
        decide(&req, &n, Some(&book), 1000),
        refuse(Refusal::NoToken),
        "only what transcoder_key names"
    );
    let mut p = rtmp(Action::Publish, "cam1", "node=edge-1&key=cred");
    p.loopback = true;
    assert_eq!(p.transcoder_key("edge-1"), None, "plays only");
    let mut none = rtmp(Action::Play, "cam1", "node=edge-1");
    none.loopback = true;
    assert_eq!(none.transcoder_key("edge-1"), None, "no key");
}

#[test]
fn http_plays_with_table_tokens() {
    let n = node("edge-1", Relay, table(true));
    let book = Book::default();
    let good = make_viewer_token("vs", "cam1", 2000);
    let d = |t: Option<&str>| decide(&Request::http("cam1", t, PEER), &n, Some(&book), 1000);
    assert_eq!(d(Some(&good)), admitted(SessionKind::Viewer, Some(&good), Via::Table));
    assert_eq!(d(None), refuse(Refusal::NoToken));
    assert_eq!(d(Some("")), refuse(Refusal::NoToken));
    assert_eq!(d(Some("garbage")), refuse(Refusal::BadToken));
    assert_eq!(d(Some(&make_viewer_token("vs", "cam1", 999))), refuse(Refusal::ExpiredToken));
    let root = node("root-1", RootRelay, table(true));
    assert_eq!(
        decide(&Request::http("cam1", Some(&good), PEER), &root, None, 1000),
        refuse(Refusal::WrongRole)
    );
    let open = node("edge-1", Standalone, table(false));
    assert_eq!(
        decide(&Request::http("cam1", None, PEER), &open, None, 1000),
        admitted(SessionKind::Viewer, None, Via::Table),
        "no secret, no master: everyone"
    );
}

#[test]
fn http_plays_with_a_master() {
    let mut book = Book::default();
    let n = node("edge-1", Relay, table(false));
    let req = Request::http("cam1", Some("tok"), PEER);
    let Outcome::Ask(ask) = decide(&req, &n, Some(&book), 1000) else { panic!("no question") };
    assert_eq!(ask.request, auth::request("edge-1", Action::Play, "cam1", Some("tok"), PEER));
    assert_eq!(ask.transport, Transport::Http);
    answer(&mut book, &ask, allow(60), 1000);
    let got = decide(&req, &n, Some(&book), 1001);
    assert_eq!(got, admitted(SessionKind::Viewer, Some("tok"), Via::Auth { until: 1060 }));
    let Outcome::Admit(a) = got else { unreachable!() };
    assert!(!a.via.ends_soon(1039) && a.via.ends_soon(1040), "asked again {REFRESH_S} s before its end");
    answer(&mut book, &ask, deny("expired"), 1001);
    assert_eq!(decide(&req, &n, Some(&book), 1002), Outcome::Refuse(Reason::Auth("expired".into())), "403");
    // No token, denied: 401.
    let bare = Request::http("cam1", Some(""), PEER);
    let Outcome::Ask(ask) = decide(&bare, &n, Some(&book), 1000) else { panic!("no question") };
    assert_eq!(ask.request.token, None, "HTTP sends no empty token");
    answer(&mut book, &ask, deny("no token"), 1000);
    assert_eq!(decide(&bare, &n, Some(&book), 1001), refuse(Refusal::NoToken));
    // A failed call is shown for a moment, then asked again.
    let other = Request::http("cam1", Some("t2"), PEER);
    answer(&mut book, &other.ask("edge-1"), Err("timeout"), 1000);
    let shown = Outcome::Refuse(Reason::Auth("auth endpoint failed: timeout".into()));
    assert_eq!(decide(&other, &n, Some(&book), 1000 + FAILED_SHOWN_S - 1), shown);
    assert!(matches!(decide(&other, &n, Some(&book), 1000 + FAILED_SHOWN_S), Outcome::Ask(_)));
}

#[test]
fn answers_apply_the_role_of_now() {
    let ok = Answer { word: Word::Allow, reason: "ok".into(), until: 50 };
    let publish = rtmp(Action::Publish, "cam1", "key=k").ask("n");
    let play = rtmp(Action::Play, "cam1", "token=t").ask("n");
    for role in Role::ALL {
        let p = publish.answered(role, &ok);
        let v = play.answered(role, &ok);
        if role.takes_broadcasters() {
            assert_eq!(p, admitted(SessionKind::Broadcaster, Some("k"), Via::Auth { until: 50 }));
        } else {
            assert_eq!(p, refuse(Refusal::WrongRole), "{role}");
        }
        if role.serves_viewers() {
            assert_eq!(v, admitted(SessionKind::Viewer, Some("t"), Via::Auth { until: 50 }));
        } else {
            assert_eq!(v, refuse(Refusal::WrongRole), "{role}");
        }
    }
    let no = Answer { word: Word::Deny, reason: "wrong key".into(), until: 50 };
    assert_eq!(
        publish.answered(Relay, &no),
        Outcome::Refuse(Reason::Auth("wrong key".into())),
        "a deny first"
    );
    let failed = Answer { word: Word::Failed, reason: "auth endpoint failed: x".into(), until: 50 };
    let got = play.answered(Relay, &failed);
    assert_eq!(got, Outcome::Refuse(Reason::Auth("auth endpoint failed: x".into())));
}

#[test]
fn requests_print_no_secrets() {
    let req = rtmp(Action::Publish, "cam1", "key=SECRETKEY&token=SECRETTOKEN");
    let text = format!("{req:?} {:?}", req.admitted(SessionKind::Broadcaster, Via::Table));
    assert!(!text.contains("SECRET"), "{text}");
    assert!(text.contains("cam1"));
}
