use super::*;
use crate::handles::Handle;
use crate::wire::AuthReply;

fn req(stream: &str, key: &str, addr: &str) -> AuthRequest {
    request("n", Action::Publish, stream, Some(key), addr)
}

fn allow(ttl: Option<u64>) -> Result<AuthReply, String> {
    Ok(AuthReply { allow: true, ttl_s: ttl, reason: None })
}

fn deny() -> Result<AuthReply, String> {
    Ok(AuthReply { allow: false, ttl_s: Some(60), reason: Some("wrong key".into()) })
}

fn session(i: u64) -> Waiter {
    Waiter::Session(Handle::from_u64(i))
}

/// Ask and expect a call to send; its id.
fn ask_new(b: &mut Book, w: Waiter, r: &AuthRequest) -> u64 {
    let a = b.ask(w, r).unwrap();
    a.send.expect("a call to send").id
}

#[test]
fn the_builder_puts_the_credential_where_the_action_wants_it() {
    let p = request("edge-1", Action::Publish, "cam1", Some("k"), "192.0.2.1");
    assert_eq!((p.key.as_deref(), p.token.as_deref()), (Some("k"), None));
    let v = request("edge-1", Action::Play, "cam1", Some(""), "192.0.2.1");
    assert_eq!((v.key.as_deref(), v.token.as_deref()), (None, Some("")), "an empty token is sent as given");
    assert_eq!((v.node_id.as_str(), v.stream.as_str(), v.addr.as_str()), ("edge-1", "cam1", "192.0.2.1"));
    assert_eq!(Question::of(&p), Question::new(Action::Publish, "cam1", Some("k")));
    assert_ne!(Question::of(&p), Question::of(&request("edge-1", Action::Play, "cam1", Some("k"), "x")));
    assert_eq!(Question::new(Action::Play, "s", None), Question::new(Action::Play, "s", Some("")));
}

#[test]
fn askers_of_one_question_share_one_call() {
    let mut b = Book::default();
    let r = req("cam1", "k", "192.0.2.1");
    let first = b.ask(session(1), &r).unwrap();
    let id = first.send.unwrap().id;
    assert!(!first.send.unwrap().known, "a credential never allowed is a stranger's");
    let second = b.ask(session(2), &req("cam1", "k", "192.0.2.2")).unwrap();
    assert_eq!(second.send, None, "no second call");
    assert_ne!(first.handle, second.handle);
    assert_eq!(b.ask(Waiter::Cache, &r).unwrap().send, None, "an HTTP poll of a question out adds nothing");
    assert_eq!(b.pending(), (2, 2));
    assert_eq!(b.calls_out(), 1);
    let got = b.on_answer(id, allow(Some(30)), 100).unwrap();
    assert_eq!(got.waiters, vec![session(1), session(2)]);
    assert_eq!(got.question, Question::of(&r));
    assert_eq!(got.answer, Answer { word: Word::Allow, reason: "allowed".into(), until: 130 });
    assert_eq!(b.pending(), (0, 0));
    assert_eq!(b.cached(&Question::of(&r), 129), Some(got.answer.clone()));
    assert_eq!(b.cached(&Question::of(&r), 130), None, "an answer holds until its end, not at it");
    assert_eq!(b.on_answer(id, allow(None), 101), None, "a call answered once is over");
    let again = b.ask(session(3), &r).unwrap().send.unwrap();
    assert!(again.known, "allowed before: the known lane");
}

#[test]
fn ttls_are_bounded_and_reasons_default() {
    let mut b = Book::default();
    let id = ask_new(&mut b, session(1), &req("a", "k", "x"));
    assert_eq!(b.on_answer(id, allow(None), 0).unwrap().answer.until, DEFAULT_TTL_S);
    let id = ask_new(&mut b, session(1), &req("b", "k", "x"));
    assert_eq!(b.on_answer(id, allow(Some(1 << 40)), 0).unwrap().answer.until, MAX_TTL_S);
    let id = ask_new(&mut b, session(1), &req("c", "k", "x"));
    let a =
        b.on_answer(id, Ok::<_, String>(AuthReply { allow: false, ttl_s: None, reason: None }), 0).unwrap();
    assert_eq!((a.answer.word, a.answer.reason.as_str()), (Word::Deny, "denied"));
    let id = ask_new(&mut b, session(1), &req("d", "k", "x"));
    assert_eq!(b.on_answer(id, deny(), 0).unwrap().answer.reason, "wrong key");
}

#[test]
fn strangers_are_capped_per_worker_and_per_address() {
    let mut b = Book::new(3, 2);
    ask_new(&mut b, session(1), &req("a", "1", "192.0.2.1"));
    ask_new(&mut b, session(2), &req("b", "2", "192.0.2.1"));
    assert_eq!(b.ask(session(3), &req("c", "3", "192.0.2.1")), Err(AskError::Busy), "per address");
    assert_eq!(b.ask(session(3), &req("a", "1", "192.0.2.1")), Err(AskError::Busy), "joining counts too");
    ask_new(&mut b, session(4), &req("d", "4", "192.0.2.2"));
    assert_eq!(b.ask(session(5), &req("e", "5", "192.0.2.3")), Err(AskError::Busy), "per worker");
    assert_eq!(b.pending(), (3, 3));
    // Re-checks of admitted sessions have their own room.
    let r = b.ask(Waiter::Recheck(7), &req("f", "6", "192.0.2.3")).unwrap();
    assert!(r.send.unwrap().known);
    assert_eq!(b.pending(), (4, 3));
    b.set_limits(0, 0);
    assert_eq!(b.ask(session(6), &req("g", "7", "192.0.2.9")), Err(AskError::Busy), "caps of at least 1");
}

#[test]
fn a_known_credential_is_not_a_stranger_until_denied() {
    let mut b = Book::new(1, 1);
    let r = req("cam1", "k", "192.0.2.1");
    let id = ask_new(&mut b, session(1), &r);
    b.on_answer(id, allow(Some(1)), 0);
    ask_new(&mut b, session(9), &req("x", "junk", "192.0.2.1")); // the stranger's one room
    let id = ask_new(&mut b, session(2), &r);
    assert_eq!(b.pending(), (2, 1), "the known asker is beside the strangers' cap");
    b.on_answer(id, deny(), 5);
    assert_eq!(b.ask(session(3), &r), Err(AskError::Busy), "denied since: a stranger again");
}

#[test]
fn the_known_lane_is_capped_in_distinct_calls() {
    let mut b = Book::default();
    for i in 0..KNOWN_MAX as u64 {
        ask_new(&mut b, Waiter::Recheck(i), &req(&format!("s{i}"), "k", "x"));
    }
    assert_eq!(b.ask(Waiter::Recheck(0), &req("more", "k", "x")), Err(AskError::Busy));
    let joined = b.ask(Waiter::Recheck(1), &req("s1", "k", "x")).unwrap();
    assert_eq!(joined.send, None, "a question out is joined, past the cap");
    let id = b.calls.keys().copied().next().unwrap();
    b.on_answer(id, allow(None), 0);
    assert!(b.ask(Waiter::Recheck(0), &req("more", "k", "x")).unwrap().send.is_some());
}

#[test]
fn a_call_is_taken_back_when_its_last_asker_leaves() {
    let mut b = Book::default();
    let r = req("cam1", "k", "192.0.2.1");
    let one = b.ask(session(1), &r).unwrap();
    let id = one.send.unwrap().id;
    let two = b.ask(session(2), &r).unwrap();
    assert_eq!(b.cancel(one.handle), None, "another still waits");
    assert_eq!(b.cancel(one.handle), None, "a second cancel changes nothing");
    assert_eq!(b.pending(), (1, 1));
    assert_eq!(b.cancel(two.handle), Some(id), "nobody waits: take the call back");
    assert_eq!(b.pending(), (0, 0));
    assert_eq!(b.on_answer(id, allow(None), 0), None, "its late answer is dropped");
    assert_eq!(b.cached(&Question::of(&r), 0), None, "and not cached");
    assert_eq!(b.cancel(Handle::from_u64(u64::MAX)), None, "an HTTP poll's handle names nothing");
    // A new asker of the same question makes a new call.
    assert!(b.ask(session(3), &r).unwrap().send.is_some());
}

#[test]
fn a_call_not_sent_frees_its_room() {
    let mut b = Book::new(1, 1);
    let a = b.ask(session(1), &req("cam1", "k", "x")).unwrap();
    b.not_sent(a.handle);
    assert_eq!((b.pending(), b.calls_out()), ((0, 0), 0));
    assert!(b.ask(session(1), &req("cam1", "k", "x")).is_ok());
}

#[test]
fn a_failed_call_is_shown_to_cache_readers_for_a_moment_only() {
    let mut b = Book::default();
    let r = req("cam1", "k", "x");
    let id = ask_new(&mut b, session(1), &r);
    let got = b.on_answer(id, Err("timeout"), 100).unwrap();
    assert_eq!(
        got.answer,
        Answer { word: Word::Failed, reason: "auth endpoint failed: timeout".into(), until: 100 }
    );
    assert!(got.answer.failed() && !got.answer.allows());
    assert_eq!(b.cached(&got.question, 100), None, "sessions ask again");
    let id = ask_new(&mut b, Waiter::Cache, &r);
    let got = b.on_answer(id, Err("timeout"), 200).unwrap();
    assert_eq!(got.waiters, vec![Waiter::Cache]);
    let shown = b.cached(&got.question, 200 + FAILED_SHOWN_S - 1).unwrap();
    assert!(shown.failed());
    assert_eq!(b.cached(&got.question, 200 + FAILED_SHOWN_S), None);
    assert!(!b.allowed.contains_key(&got.question), "a failure is no allow");
}

/// Fill the cache by answering `n` questions `s{from}..`, `allow` each or not, until `until`.
fn answer_many(b: &mut Book, from: usize, n: usize, ok: bool, ttl: u64, now: u64) {
    for i in from..from + n {
        let id = ask_new(b, Waiter::Recheck(0), &req(&format!("s{i}"), "k", "x"));
        let r = Ok::<_, String>(AuthReply { allow: ok, ttl_s: Some(ttl), reason: None });
        b.on_answer(id, r, now);
    }
}

fn q(i: usize) -> Question {
    Question::of(&req(&format!("s{i}"), "k", "x"))
}

#[test]
fn a_full_cache_drops_expired_answers_first_then_denials() {
    let mut b = Book::default();
    answer_many(&mut b, 0, 10, true, 5, 0); // run out at 5
    answer_many(&mut b, 10, CACHE_MAX - 20, true, 100, 0);
    answer_many(&mut b, CACHE_MAX - 10, 10, false, 100, 0);
    assert_eq!(b.cached_len(), CACHE_MAX);
    answer_many(&mut b, CACHE_MAX, 1, true, 100, 10);
    assert_eq!(b.cached_len(), CACHE_MAX - 9, "the expired went, nothing else");
    assert!(b.cached(&q(CACHE_MAX - 1), 10).is_some(), "denials kept while there is room");
    answer_many(&mut b, CACHE_MAX + 1, 9, true, 100, 10);
    assert_eq!(b.cached_len(), CACHE_MAX);
    answer_many(&mut b, CACHE_MAX + 10, 1, true, 100, 10);
    assert_eq!(b.cached_len(), CACHE_MAX - 9, "then the denials");
    assert!(b.cached(&q(CACHE_MAX - 1), 10).is_none());
    assert!(b.cached(&q(10), 10).is_some(), "allows kept");
}

#[test]
fn a_cache_full_of_allows_forgets_the_half_closest_to_their_end() {
    let mut b = Book::default();
    for i in 0..CACHE_MAX {
        answer_many(&mut b, i, 1, true, 100 + i as u64, 0);
    }
    answer_many(&mut b, CACHE_MAX, 1, true, 100, 0);
    assert_eq!(b.cached_len(), CACHE_MAX / 2 + 1);
    assert!(b.cached(&q(CACHE_MAX / 2 - 1), 0).is_none(), "closest to their end: gone");
    assert!(b.cached(&q(CACHE_MAX / 2), 0).is_some(), "the rest kept");
    assert!(b.cached(&q(CACHE_MAX), 0).is_some(), "the new answer kept");
}

#[test]
fn the_allowed_set_forgets_the_half_allowed_longest_ago() {
    let mut b = Book::default();
    for i in 0..CACHE_MAX {
        answer_many(&mut b, i, 1, true, MAX_TTL_S, i as u64);
    }
    answer_many(&mut b, CACHE_MAX, 1, true, MAX_TTL_S, CACHE_MAX as u64);
    assert_eq!(b.allowed.len(), CACHE_MAX / 2 + 1);
    assert!(!b.allowed.contains_key(&q(CACHE_MAX / 2 - 1)));
    assert!(b.allowed.contains_key(&q(CACHE_MAX / 2)));
    assert!(b.allowed.contains_key(&q(CACHE_MAX)));
}

#[test]
fn ask_errors_say_what_the_log_says() {
    assert_eq!(AskError::Busy.to_string(), "busy");
    assert_eq!(AskError::Unavailable.to_string(), "auth endpoint unavailable");
}
