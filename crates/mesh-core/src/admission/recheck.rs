//! What an admitted session is, and its re-check: on every new table or role (in-process), and
//! when the master's answer that admitted it runs out (the master is asked again).

use std::fmt;

use super::{refusal, takes, Ask, Reason, Refusal, SessionKind, Transport};
use crate::args::MeshArgs;
use crate::auth::{Answer, Question, Word};
use crate::node::Node;
use crate::token::TokenError;
use crate::wire::Action;

/// Seconds an admitted session is kept when the master could not be asked again (unreachable
/// is no deny) before it is asked once more.
pub const RECHECK_FAILED_S: u64 = 30;
/// A master's allow this close to its end is asked about again by an HTTP viewer, so that
/// playback outlives it.
pub const REFRESH_S: u64 = 20;

/// How a session was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// By the table: checked again in full on every change.
    Table,
    /// By the master's auth endpoint, valid until then (unix s): role rules apply at once, the
    /// endpoint is asked again when it runs out.
    Auth { until: u64 },
}

impl Via {
    /// Until when the master's answer holds (None: the table's word, no end).
    pub fn until(self) -> Option<u64> {
        match self {
            Via::Table => None,
            Via::Auth { until } => Some(until),
        }
    }

    /// The master's answer has run out at `now`: ask again.
    pub fn due(self, now: u64) -> bool {
        self.until().is_some_and(|until| until <= now)
    }

    /// The master's answer ends within [`REFRESH_S`] of `now`.
    pub fn ends_soon(self, now: u64) -> bool {
        self.until().is_some_and(|until| until <= now.saturating_add(REFRESH_S))
    }
}

/// What an admitted session is.
#[derive(Clone, PartialEq, Eq)]
pub struct Admitted {
    pub kind: SessionKind,
    pub stream: String,
    /// The credential it was admitted with: the key of a publisher (broadcaster or node push),
    /// the token of a viewer.
    pub credential: Option<String>,
    pub via: Via,
}

// By hand: the credential is a secret, never printed.
impl fmt::Debug for Admitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admitted")
            .field("kind", &self.kind)
            .field("stream", &self.stream)
            .field("credential", &self.credential.as_ref().map(|_| "…"))
            .field("via", &self.via)
            .finish()
    }
}

/// What a re-check decided for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop(Reason),
}

impl Admitted {
    pub fn is_publisher(&self) -> bool {
        !matches!(self.kind, SessionKind::Viewer)
    }

    /// Another worker's copy (see [`SessionKind::Copy`]).
    pub fn is_copy(&self) -> bool {
        self.kind == SessionKind::Copy
    }

    /// The node a pushed stream came from.
    pub fn source(&self) -> Option<&str> {
        match &self.kind {
            SessionKind::NodePush { from } => Some(from),
            _ => None,
        }
    }

    /// What the session does: publish or play.
    pub fn action(&self) -> Action {
        match self.kind {
            SessionKind::Viewer => Action::Play,
            SessionKind::Broadcaster | SessionKind::NodePush { .. } | SessionKind::Copy => Action::Publish,
        }
    }

    /// The auth question about this session (the one its re-check asks).
    pub fn question(&self) -> Question {
        Question::new(self.action(), &self.stream, self.credential.as_deref())
    }

    /// The master's answer has run out at `now`: ask it again ([`Admitted::ask`]).
    pub fn due(&self, now: u64) -> bool {
        self.via.due(now)
    }

    /// The re-check question, from `node_id`, for the client at `peer`.
    pub fn ask(&self, node_id: &str, peer: &str) -> Ask {
        Ask::new(node_id, self.action(), &self.stream, self.credential.as_deref(), peer, Transport::Rtmp)
    }

    /// Check the session again against a new node state, in-process. A role that no longer
    /// takes its kind drops it. Viewers admitted by table tokens are checked for what a table
    /// change can take away (their key, their stream's identity), not for expiry: the token
    /// admitted them at the start. Publishers admitted by the table are decided again in full.
    /// Sessions admitted by the master keep until its answer runs out.
    pub fn recheck(&self, node: &Node, now: u64) -> Verdict {
        if !takes(node.role, &self.kind) {
            return Verdict::Drop(Refusal::WrongRole.into());
        }
        let credential = self.credential.as_deref();
        let table = match (&self.kind, self.via) {
            (SessionKind::Viewer, Via::Table) if node.table.checks_viewer_tokens() => match credential {
                None => Err(Refusal::NoToken),
                Some(t) => match node.table.verify_viewer(&self.stream, t, now) {
                    Ok(()) | Err(TokenError::Expired) => Ok(()),
                    Err(why) => Err(refusal(why)),
                },
            },
            // A copy ends with the publish it copies: that worker re-checks it.
            (SessionKind::Viewer | SessionKind::Copy, _) | (_, Via::Auth { .. }) => Ok(()),
            (_, Via::Table) => {
                let args = MeshArgs { node: self.source(), key: credential, token: None };
                node.context(now).publish_args(&self.stream, &args).map(|_| ())
            }
        };
        match table {
            Ok(()) => Verdict::Keep,
            Err(r) => Verdict::Drop(r.into()),
        }
    }

    /// The master's answer to this session's re-check: None when it answers another question
    /// (nothing to apply). An allow extends the session to its end; a failed call keeps it and
    /// asks again in [`RECHECK_FAILED_S`]; a deny drops it.
    pub fn on_answer(&mut self, question: &Question, answer: &Answer, now: u64) -> Option<Verdict> {
        if *question != self.question() {
            return None;
        }
        Some(match answer.word {
            Word::Allow => {
                self.via = Via::Auth { until: answer.until };
                Verdict::Keep
            }
            Word::Failed => {
                self.via = Via::Auth { until: now.saturating_add(RECHECK_FAILED_S) };
                Verdict::Keep
            }
            Word::Deny => Verdict::Drop(Reason::Auth(answer.reason.clone())),
        })
    }
}

#[cfg(test)]
mod tests;
