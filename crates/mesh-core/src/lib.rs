//! Pure logic of the mesh node, with no nginx dependency so that `cargo test` can run it.
//!
//! * [`media`]: the ABR ladder, the ffmpeg argv, and the media files viewers may ask for.
//! * [`hold`]: caps on held HTTP requests and the bounded table of route requests.
//! * [`manifest`]: the viewer's token carried into the URLs of the HLS and DASH manifests served.
//! * [`name`]: the protocol's identifier character set (streams and nodes).
//! * [`role`]: the four node roles.
//! * [`table`]: the relay table (parse + validate, refused whole on any error).
//! * [`args`]: RTMP/HTTP query arguments (`node`, `key`, `token`).
//! * [`auth`]: questions for the master's auth endpoint, and the book of those out and the
//!   answers kept.
//! * [`token`]: viewer token formats (HMAC-SHA256) and broadcaster key hashing.
//! * [`viewer`]: who may watch: key ids and rotation, stream identities, lifetimes
//!   ([`Table::verify_viewer`]).
//! * [`admission`]: the one publish/play decision (RTMP and HTTP) for every role and session
//!   kind, when to ask the master and what, and the re-check of admitted sessions.
//! * [`node`]: the node snapshot (id, role, table, resolved target URLs).
//! * [`push`]: which targets a node pushes a stream to, and the push URL.
//! * [`sign`]: node ↔ master request and response signatures.
//! * [`status`]: the figures `mesh_status` reports, as JSON and Prometheus text.
//! * [`figures`]: a node's figures from each of its workers', merged.
//! * [`handles`]: bounded slot maps whose handles die with what they name.
//! * [`claims`]: which worker of a node runs a stream's one ffmpeg (a table in shared memory).
//! * [`client`]: which client addresses a per-client cap counts together (IPv6 by /64).
//! * [`backoff`]: capped exponential backoff with jitter.
//! * [`credential`]: the transcoder's single-use credential, and redaction of query secrets.
//! * [`wire`]: node ↔ master request and response bodies.

pub mod admission;
pub mod args;
pub mod auth;
pub mod backoff;
pub mod claims;
pub mod client;
pub mod credential;
pub mod figures;
pub mod handles;
pub mod hold;
pub mod manifest;
pub mod media;
pub mod name;
pub mod node;
pub mod push;
pub mod role;
pub mod sign;
pub mod status;
pub mod table;
pub mod template;
pub mod token;
pub mod viewer;
pub mod wire;

pub use admission::{
    decide, Admitted, Decision, Outcome, PlayRequest, PublishRequest, Reason, Refusal, Request, SessionKind,
    Transport, Verdict, Via,
};
pub use role::Role;
pub use table::{Table, TableError, Target};
