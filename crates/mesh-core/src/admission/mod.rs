//! Publish and play decisions, made in-process against the table (no I/O).
//!
//! The rules are the protocol's Roles table (docs/protocol.md):
//!
//! | role | publish accepted from | play |
//! |---|---|---|
//! | ingest | broadcasters (key vs `publish[S]`) | refused |
//! | root_relay | node pushes matching an `ingest[S]` entry naming this node | refused |
//! | relay | node pushes matching a `relay[S]` entry naming this node (and its `from`) | viewers |
//! | standalone | broadcasters, as ingest | viewers |
//!
//! * [`rules`]: the table's word on a publish or a play ([`Context`]).
//! * [`decide`]: one typed [`Request`] per RTMP command or HTTP request, and the one decision
//!   for it ([`decide()`]): pass, admit, refuse, or ask the master (and what).
//! * [`recheck`]: what an admitted session is ([`Admitted`]), and its re-check when the table
//!   or the role changes or its master's answer runs out.
//!
//! Role rules live here and nowhere else: the table decision, the master's answer applied to a
//! waiting command, and the re-check of admitted sessions all ask [`takes`].

pub mod decide;
pub mod recheck;
pub mod rules;
#[cfg(test)]
mod testutil;

use std::fmt;

use crate::role::Role;
use crate::token::TokenError;

pub use decide::{decide, Ask, Outcome, Request, Transport};
pub use recheck::{Admitted, Verdict, Via, RECHECK_FAILED_S, REFRESH_S};
pub use rules::{Context, PlayRequest, PublishRequest};

/// What an admitted session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKind {
    /// A broadcaster with a valid stream key.
    Broadcaster,
    /// A push from another node of the mesh (its id).
    NodePush { from: String },
    /// A viewer.
    Viewer,
    /// Another worker's copy of a stream published on this node (nginx-rtmp's `rtmp_auto_push`
    /// relays each published stream to every worker): decided where it was published, it is
    /// admitted without a key, never pushed to the table's targets, never counted.
    Copy,
}

/// Why a session was refused. `Display` is the short reason written to the error log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadName,
    WrongRole,
    NoKey,
    WrongKey,
    UnknownStream,
    BadNode,
    NoToken,
    BadToken,
    ExpiredToken,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::BadName,
        Refusal::WrongRole,
        Refusal::NoKey,
        Refusal::WrongKey,
        Refusal::UnknownStream,
        Refusal::BadNode,
        Refusal::NoToken,
        Refusal::BadToken,
        Refusal::ExpiredToken,
    ];

    /// Short label (metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadName => "bad name",
            Refusal::WrongRole => "wrong role",
            Refusal::NoKey => "no key",
            Refusal::WrongKey => "wrong key",
            Refusal::UnknownStream => "unknown stream",
            Refusal::BadNode => "bad node",
            Refusal::NoToken => "no token",
            Refusal::BadToken => "bad token",
            Refusal::ExpiredToken => "expired token",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub type Decision = Result<SessionKind, Refusal>;

/// The refusal a token error is logged and counted as (a retired key's token is as good as
/// expired; the rest say no more than "bad token").
pub fn refusal(e: TokenError) -> Refusal {
    match e {
        TokenError::Expired | TokenError::RetiredKey => Refusal::ExpiredToken,
        TokenError::UnknownStream => Refusal::UnknownStream,
        TokenError::Malformed
        | TokenError::BadSignature
        | TokenError::UnknownKey
        | TokenError::TooLong
        | TokenError::NoSigningKey
        | TokenError::BadTtl => Refusal::BadToken,
    }
}

/// Why a session or request is refused: a rule of the table or the node, or the master's word.
/// `Display` is the reason written to the error log (`auth: …` for the master's, whose first
/// word the refusal counters count under).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Rule(Refusal),
    /// The master denied it, or could not be asked (its reason).
    Auth(String),
}

impl From<Refusal> for Reason {
    fn from(r: Refusal) -> Reason {
        Reason::Rule(r)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Rule(r) => f.write_str(r.as_str()),
            Reason::Auth(why) => write!(f, "auth: {why}"),
        }
    }
}

/// The role rule, in one place: may a node of `role` hold a session of `kind`? Node pushes
/// are the table's to decide (which entries name this node depends on the role).
pub fn takes(role: Role, kind: &SessionKind) -> bool {
    match kind {
        SessionKind::Broadcaster => role.takes_broadcasters(),
        SessionKind::Viewer => role.serves_viewers(),
        SessionKind::NodePush { .. } | SessionKind::Copy => true,
    }
}
