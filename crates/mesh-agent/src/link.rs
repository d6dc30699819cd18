//! The state of one link to the master (announce, heartbeat, streams): logged only when it
//! changes (one line when it goes down, one when it comes back, not one per retry), retried
//! with capped exponential backoff with jitter, and published for `mesh_status`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mesh_core::backoff::{Backoff, Jitter};
use mesh_core::status::LinkStatus;

use crate::agent::{Config, Level};
use crate::client::CallError;
use crate::shared::Shared;

pub(crate) struct Link {
    what: &'static str,
    up: Option<bool>,
    backoff: Backoff,
    jitter: Jitter,
    /// The master's last refusal logged while down: a new reason is logged, a repeat is not.
    refused: Option<String>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Link {
    pub(crate) fn new(what: &'static str, cfg: &Config) -> Link {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Link {
            what,
            up: None,
            backoff: Backoff::new(cfg.backoff_base, cfg.backoff_cap),
            jitter: Jitter::new(seed),
            refused: None,
        }
    }

    /// Whether the link is down (its last call failed).
    pub(crate) fn is_down(&self) -> bool {
        self.up == Some(false)
    }

    pub(crate) fn ok(&mut self, shared: &Shared) {
        if self.is_down() {
            shared.log(Level::Notice, format!("mesh: master {} is back", self.what));
        }
        self.up = Some(true);
        self.refused = None;
        self.backoff.reset();
        self.report(shared, None, Duration::ZERO);
    }

    /// Publish this link's state for `mesh_status`.
    fn report(&self, shared: &Shared, error: Option<String>, backoff: Duration) {
        shared.link_status(self.what, |l: &mut LinkStatus| {
            l.up = self.up;
            l.consecutive_failures = self.backoff.failures();
            l.backoff_ms = backoff.as_millis() as u64;
            match error {
                None => l.last_success_unix = Some(unix_now()),
                Some(e) => l.last_error = Some(e),
            }
        });
    }

    /// Record a failure of the try begun at `began`; returns the delay before the next try.
    pub(crate) fn fail(&mut self, shared: &Shared, e: &CallError, began: Instant) -> Duration {
        if *e == CallError::Stopped {
            return self.backoff.fail(self.jitter.next_u64());
        }
        let v = shared.state.version();
        let msg = format!(
            "mesh: master {} failed: {e}; keeping table version {v}, retrying with backoff",
            self.what
        );
        if let CallError::Refused { reason, .. } = e {
            if self.is_down() && self.refused.as_ref() != Some(reason) {
                shared.log(Level::Error, msg.clone());
            }
            self.refused = Some(reason.clone());
        }
        self.fail_with(shared, msg, began)
    }

    /// Record a failure described by `msg`, logged when the link goes down (not on every
    /// retry while it stays down); returns the delay before the next try. The backoff counts
    /// from the start of the failed try: a long poll that timed out after its wait is tried
    /// again at once (it was in flight all along, so a master that recovers answers it), one
    /// refused at once waits its whole backoff.
    pub(crate) fn fail_with(&mut self, shared: &Shared, msg: String, began: Instant) -> Duration {
        let d = self.backoff.fail(self.jitter.next_u64()).saturating_sub(began.elapsed());
        if !self.is_down() {
            shared.log(Level::Error, msg.clone());
        }
        self.up = Some(false);
        self.report(shared, Some(msg.trim_start_matches("mesh: ").to_string()), d);
        d
    }
}
