//! One typed request per RTMP publish or play command and per HTTP media request, and the one
//! decision for it: pass it on untouched, admit it, refuse it, or ask the master (and what).
//!
//! The glue builds a [`Request`] once (the arguments are parsed here, once), calls [`decide`]
//! with the node's snapshot and, when a master is configured, the worker's auth [`Book`], and
//! translates the [`Outcome`] back to nginx:
//!
//! | outcome | RTMP | HTTP |
//! |---|---|---|
//! | [`Outcome::Pass`] | next handler of the chain | – |
//! | [`Outcome::Admit`] | register, next handler | serve (`via` says until when) |
//! | [`Outcome::Refuse`] with [`Refusal::NoToken`] | close, log | 401 |
//! | [`Outcome::Refuse`] with [`Refusal::WrongRole`] | close, log | 404 |
//! | [`Outcome::Refuse`], anything else | close, log | 403 |
//! | [`Outcome::Ask`] | suspend, ask ([`Book::ask`]) | ask ([`Waiter::Cache`](crate::auth::Waiter)), hold or 503 |

use std::fmt;

use super::{takes, Admitted, Reason, Refusal, SessionKind, Via};
use crate::args::MeshArgs;
use crate::auth::{self, Answer, Book, Question};
use crate::node::Node;
use crate::role::Role;
use crate::wire::{Action, AuthRequest};

/// Where a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Rtmp,
    Http,
}

/// Everything a decision reads of one RTMP command or HTTP request.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub action: Action,
    pub transport: Transport,
    pub stream: &'a str,
    /// The mesh's query arguments, parsed once.
    pub args: MeshArgs<'a>,
    /// The client's address (nginx's `addr_text`), as the master is told.
    pub peer: &'a str,
    /// The client connects from this machine (127.0.0.0/8, ::1).
    pub loopback: bool,
    /// An nginx-rtmp relay session (our own pushes' local side, pulls): passed untouched.
    pub relay: bool,
    /// Another worker's copy of a stream published here (`rtmp_auto_push`): a publish over
    /// nginx-rtmp's unix socket, admitted as a [`SessionKind::Copy`].
    pub auto_pushed: bool,
    /// The glue found this play's key to be the single-use credential of our own transcoder
    /// for this stream (asked only when [`Request::transcoder_key`] is Some): passed as no
    /// viewer. False when the credential is bad, and the play is decided as a viewer's.
    pub own_transcoder: bool,
}

// By hand: the arguments hold a key or a token, never printed.
impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("action", &self.action)
            .field("transport", &self.transport)
            .field("stream", &self.stream)
            .field("node", &self.args.node)
            .field("key", &self.args.key.map(|_| "…"))
            .field("token", &self.args.token.map(|_| "…"))
            .field("peer", &self.peer)
            .field("loopback", &self.loopback)
            .field("relay", &self.relay)
            .field("auto_pushed", &self.auto_pushed)
            .field("own_transcoder", &self.own_transcoder)
            .finish()
    }
}

impl<'a> Request<'a> {
    /// An RTMP publish or play of `stream` with its query string `args`.
    pub fn rtmp(action: Action, stream: &'a str, args: &'a str, peer: &'a str) -> Request<'a> {
        Request {
            action,
            transport: Transport::Rtmp,
            stream,
            args: MeshArgs::parse(args),
            peer,
            loopback: false,
            relay: false,
            auto_pushed: false,
            own_transcoder: false,
        }
    }

    /// An HTTP media request for `stream` with the viewer token of its query (decoded); an
    /// empty token is none.
    pub fn http(stream: &'a str, token: Option<&'a str>, peer: &'a str) -> Request<'a> {
        Request {
            action: Action::Play,
            transport: Transport::Http,
            stream,
            args: MeshArgs { token: token.filter(|t| !t.is_empty()), ..MeshArgs::default() },
            peer,
            loopback: false,
            relay: false,
            auto_pushed: false,
            own_transcoder: false,
        }
    }

    /// The key to check against our own transcoder's single-use credential for this stream:
    /// Some for an RTMP play from this machine that names this node (`node=`) and gives a key.
    /// The glue checks (and so uses up) the credential only then, and says so in
    /// [`Request::own_transcoder`].
    pub fn transcoder_key(&self, node_id: &str) -> Option<&'a str> {
        let claims = self.action == Action::Play
            && self.transport == Transport::Rtmp
            && self.loopback
            && self.args.node == Some(node_id);
        claims.then_some(self.args.key).flatten()
    }

    /// The credential the master is asked about: the key of a publish, the token of a play.
    pub fn credential(&self) -> Option<&'a str> {
        match self.action {
            Action::Publish => self.args.key,
            Action::Play => self.args.token,
        }
    }

    /// What to ask the master about this request (also for an HTTP viewer whose allow ends
    /// soon, [`Via::ends_soon`]).
    pub fn ask(&self, node_id: &str) -> Ask {
        Ask::new(node_id, self.action, self.stream, self.credential(), self.peer, self.transport)
    }

    /// The session this request becomes when admitted as `kind`.
    pub fn admitted(&self, kind: SessionKind, via: Via) -> Admitted {
        let credential = match kind {
            SessionKind::Viewer => self.args.token,
            SessionKind::Broadcaster | SessionKind::NodePush { .. } => self.args.key,
            SessionKind::Copy => None,
        };
        Admitted { kind, stream: self.stream.to_string(), credential: credential.map(str::to_string), via }
    }
}

/// A question for the master: what it is (the answer applies to exactly this) and the request
/// that asks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub question: Question,
    pub request: AuthRequest,
    pub transport: Transport,
}

impl Ask {
    /// The one way a question is built (a new session, an HTTP request, a re-check).
    pub fn new(
        node_id: &str,
        action: Action,
        stream: &str,
        credential: Option<&str>,
        peer: &str,
        transport: Transport,
    ) -> Ask {
        let request = auth::request(node_id, action, stream, credential, peer);
        Ask { question: Question::of(&request), request, transport }
    }

    /// The master's answer applied, with the role rules of the node now (`role`: it may have
    /// changed while the question was out).
    pub fn answered(&self, role: Role, answer: &Answer) -> Outcome {
        if !answer.allows() {
            // An HTTP viewer who gave no token is told to give one (401).
            if self.transport == Transport::Http && self.request.token.is_none() {
                return Outcome::Refuse(Refusal::NoToken.into());
            }
            return Outcome::Refuse(Reason::Auth(answer.reason.clone()));
        }
        let (kind, credential) = match self.request.action {
            Action::Publish => (SessionKind::Broadcaster, &self.request.key),
            Action::Play => (SessionKind::Viewer, &self.request.token),
        };
        if !takes(role, &kind) {
            return Outcome::Refuse(Refusal::WrongRole.into());
        }
        Outcome::Admit(Admitted {
            kind,
            stream: self.request.stream.clone(),
            credential: credential.clone(),
            via: Via::Auth { until: answer.until },
        })
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not the mesh's to decide: pass it down the chain untouched (nginx-rtmp relay sessions,
    /// our own transcoder).
    Pass,
    /// Let it in.
    Admit(Admitted),
    /// Refuse it (the reason is the log line's).
    Refuse(Reason),
    /// The master decides: ask it (no answer cached yet).
    Ask(Ask),
}

/// The one decision for an RTMP publish, an RTMP play, or an HTTP play, in-process at `now`
/// (unix s): `master` is the worker's auth book when a master is configured.
///
/// * A publish with a key the table does not know (an unknown stream, another key) goes to the
///   master; a node push (`node=`) never does.
/// * A play the table admits goes to the master when the table checks no viewer tokens.
/// * An answer cached for exactly the question applies at once; otherwise [`Outcome::Ask`].
pub fn decide(req: &Request<'_>, node: &Node, master: Option<&Book>, now: u64) -> Outcome {
    if req.relay {
        return Outcome::Pass;
    }
    if req.auto_pushed {
        return match req.action {
            Action::Publish => Outcome::Admit(req.admitted(SessionKind::Copy, Via::Table)),
            Action::Play => Outcome::Pass,
        };
    }
    let ctx = node.context(now);
    let table = match req.action {
        Action::Publish => ctx.publish_args(req.stream, &req.args),
        Action::Play => {
            if req.own_transcoder && req.transcoder_key(&node.node_id).is_some() {
                return Outcome::Pass;
            }
            ctx.play_args(req.stream, &req.args)
        }
    };
    let undecided = match (&table, req.action) {
        (Err(Refusal::UnknownStream | Refusal::WrongKey), Action::Publish) => req.args.node.is_none(),
        (Ok(_), Action::Play) => !node.table.checks_viewer_tokens(),
        _ => false,
    };
    match (master, table) {
        (Some(book), _) if undecided => {
            let ask = req.ask(&node.node_id);
            match book.cached(&ask.question, now) {
                Some(a) => ask.answered(node.role, &a),
                None => Outcome::Ask(ask),
            }
        }
        (_, Ok(kind)) => Outcome::Admit(req.admitted(kind, Via::Table)),
        (_, Err(r)) => Outcome::Refuse(r.into()),
    }
}

#[cfg(test)]
mod tests;
