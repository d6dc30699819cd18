//! Why a media request gets no media: one type, its status, the line the viewer reads (nginx's
//! short lowercase wording) and the headers that tell a client what to do next.

use std::fmt;

use mesh_core::hold::Busy;
use mesh_core::media::MediaError;
use mesh_core::role::Role;
use ngx::core::Status;
use ngx::http::{HTTPStatus, Request};

use crate::nginx::http::RequestExt;
use crate::transcode::Failure;

/// `Retry-After` of a refusal that passes, in seconds.
const RETRY_AFTER_S: &str = "2";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a media file's path (404).
    Path(MediaError),
    /// The file is not there, or not one we would serve (404).
    NoFile,
    /// No viewer token (401).
    NoToken,
    /// A bad, expired, foreign or denied token, and why (403).
    Token(String),
    /// With a master: no answer for this token yet; asked (503).
    NoAnswer,
    /// This node's role serves no viewers (404).
    Role(Role),
    /// The stream is neither published here nor routable (404).
    NotLive,
    /// The master does not know the stream (404).
    UnknownToMaster,
    /// The master routes the stream elsewhere (404).
    NotRoutedHere,
    /// The route request failed (503).
    RouteFailed,
    /// The transcoder gave up, and why (503).
    Transcoder(Failure),
    /// The worker is exiting (503).
    ShuttingDown,
    /// Held to its deadline with the stream published: the manifest is late (504).
    NotReady,
    /// Over a cap of held requests (503).
    Busy(Busy),
    /// An entry request with a body (400).
    Body,
    /// No settings for the http{} block (500).
    NoSettings,
}

impl Refusal {
    pub fn status(&self) -> HTTPStatus {
        match self {
            Refusal::Path(_)
            | Refusal::NoFile
            | Refusal::Role(_)
            | Refusal::NotLive
            | Refusal::UnknownToMaster
            | Refusal::NotRoutedHere => HTTPStatus::NOT_FOUND,
            Refusal::NoToken => HTTPStatus::UNAUTHORIZED,
            Refusal::Token(_) => HTTPStatus::FORBIDDEN,
            Refusal::NoAnswer
            | Refusal::RouteFailed
            | Refusal::Transcoder(_)
            | Refusal::ShuttingDown
            | Refusal::Busy(_) => HTTPStatus::SERVICE_UNAVAILABLE,
            Refusal::NotReady => HTTPStatus::GATEWAY_TIME_OUT,
            Refusal::Body => HTTPStatus::BAD_REQUEST,
            Refusal::NoSettings => HTTPStatus::INTERNAL_SERVER_ERROR,
        }
    }

    /// Answer `r` with it: a 401 says how to authenticate, a 503 when to come back.
    pub fn send(&self, r: &mut Request) -> Status {
        let status = self.status();
        let headers: &[(&str, &str)] = match status {
            HTTPStatus::UNAUTHORIZED => &[("WWW-Authenticate", "Bearer realm=\"media\"")],
            HTTPStatus::SERVICE_UNAVAILABLE => &[("Retry-After", RETRY_AFTER_S)],
            _ => &[],
        };
        r.text(status, &self.to_string(), headers)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Path(e) => e.fmt(f),
            Refusal::NoFile => MediaError::UnknownFile.fmt(f),
            Refusal::NoToken => f.write_str("no token"),
            Refusal::Token(why) => f.write_str(why),
            Refusal::NoAnswer => f.write_str("no answer for this token yet"),
            Refusal::Role(role) => write!(f, "streams are not served by a {role} node"),
            Refusal::NotLive => f.write_str("stream not live here"),
            Refusal::UnknownToMaster => f.write_str("stream not live here (unknown to the master)"),
            Refusal::NotRoutedHere => f.write_str("stream not live here (not routed here)"),
            Refusal::RouteFailed => f.write_str("route request failed"),
            Refusal::Transcoder(why) => write!(f, "transcoder unavailable: {why}"),
            Refusal::ShuttingDown => f.write_str("node shutting down"),
            Refusal::NotReady => f.write_str("manifest not ready"),
            Refusal::Busy(b) => b.fmt(f),
            Refusal::Body => f.write_str("a request body is not allowed"),
            Refusal::NoSettings => f.write_str("no settings"),
        }
    }
}
