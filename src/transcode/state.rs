//! What viewers see of a transcode: its state, and why one is not available.

use super::MAX_RESTARTS;

/// A transcode's state, as viewers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    /// Waiting to start again after a death.
    Restarting,
    /// Given up (why).
    Failed(Failure),
}

impl State {
    /// Its name in the heartbeat's figures.
    pub(super) fn name(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Restarting => "restarting",
            State::Failed(_) => "failed",
        }
    }
}

/// Why a transcode is not available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The stream's name is no valid id (it would name its directory).
    BadName,
    /// Its directory cannot be made.
    Dir(std::io::ErrorKind),
    /// ffmpeg died early [`MAX_RESTARTS`] times in a row.
    GaveUp,
    /// The node's shared zone has no room for another transcode's claim.
    NoClaim,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::BadName => f.write_str("bad stream name"),
            Failure::Dir(e) => write!(f, "cannot create its directory: {e}"),
            Failure::GaveUp => write!(f, "ffmpeg failed {MAX_RESTARTS} times"),
            Failure::NoClaim => f.write_str("no room for its claim in \"mesh_shared_zone\""),
        }
    }
}
