//! One ffmpeg per stream per node, whatever the number of workers: before a worker starts a
//! transcode it takes the stream's claim in the node's shared zone (`mesh_core::claims`). A
//! worker whose viewer asks for a stream another worker owns serves the files that worker's
//! ffmpeg writes (they are on disk under `mesh_media_root`) and records the request in the
//! claim, so the owner keeps its transcode while viewers ask in any worker and stops it when
//! none has for the idle time. The owner refreshes its claim every second; a claim whose owner
//! is gone or silent is taken over (its ffmpeg died with it: `PR_SET_PDEATHSIG`), one whose
//! owner is stopping its ffmpeg (idle, or its worker exits at a reload) is waited for: the old
//! ffmpeg ends and its directory goes before the new owner starts one.
//!
//! What other workers' claims say is kept here a moment ([`RECHECK_MS`]), so that held requests
//! and segment requests do not take the zone's lock each time. Event loop only.

use std::cell::RefCell;
use std::collections::HashMap;

use mesh_core::claims::{self, Claimed, Phase};

use super::{Failure, State};
use crate::nginx::ffi::{NGX_LOG_NOTICE, NGX_LOG_WARN};
use crate::nginx::shm::pid;
use crate::nginx::util::now_ms;

/// How long what another worker's claim says is taken as it was.
const RECHECK_MS: u64 = 250;
/// Streams of other workers remembered at most (past it the oldest answers go).
const REMOTE_MAX: usize = 4096;

/// What the zone last said about a stream another worker transcodes.
#[derive(Clone, Copy)]
struct Remote {
    phase: Phase,
    checked_ms: u64,
}

#[derive(Default)]
struct Local {
    remote: HashMap<String, Remote>,
    /// The zone had no free claim (logged once until one is taken again).
    full: bool,
    /// Streams waiting for another process's lock of their directory (logged once each).
    waiting: std::collections::HashSet<String>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

fn alive(p: i32) -> bool {
    mesh_agent::proc::alive(p)
}

/// What this worker should do for a viewer of `stream` that no local transcode serves.
pub enum Decision {
    /// Start it (with the claim's generation; None: no zone, this worker alone decides).
    Start(Option<u64>),
    /// Another worker's transcode serves it: its state.
    Elsewhere(State),
}

/// A viewer wants `stream` and this worker has no transcode of it.
pub fn decide(stream: &str) -> Decision {
    let now = now_ms();
    if let Some(r) = cached(stream, now) {
        return Decision::Elsewhere(state_of(r.phase));
    }
    let Some(zone) = crate::conf::zone() else { return Decision::Start(None) };
    let me = pid();
    let Some(c) = zone.with_claims(|t, g| claims::claim(t, stream, me, now, g, &alive)) else {
        return Decision::Start(None);
    };
    match c {
        Claimed::Mine { generation, taken_over_from } => {
            LOCAL.with_borrow_mut(|l| {
                l.remote.remove(stream);
                l.full = false;
                l.waiting.remove(stream);
            });
            if let Some(p) = taken_over_from {
                log!(
                    NGX_LOG_NOTICE,
                    "mesh: transcode of stream \"{}\" taken over from process {} (gone)",
                    stream,
                    p
                );
            }
            Decision::Start(Some(generation))
        }
        Claimed::Other { phase, .. } => {
            remember(stream, phase, now);
            Decision::Elsewhere(state_of(phase))
        }
        Claimed::Full => {
            if !LOCAL.with_borrow_mut(|l| std::mem::replace(&mut l.full, true)) {
                log!(
                    NGX_LOG_WARN,
                    "mesh: transcode of stream \"{}\" refused: all {} transcode claims of \"mesh_shared_zone\" held, raise its size",
                    stream,
                    zone.claims()
                );
            }
            Decision::Elsewhere(State::Failed(Failure::NoClaim))
        }
        Claimed::BadName => Decision::Elsewhere(State::Failed(Failure::BadName)),
    }
}

/// The directory of `stream` is locked by another process (child.rs): logged once while so.
pub fn waiting(stream: &str) {
    let first =
        LOCAL.with_borrow_mut(|l| l.waiting.len() < REMOTE_MAX && l.waiting.insert(stream.to_string()));
    if first {
        log!(
            NGX_LOG_NOTICE,
            "mesh: transcode of stream \"{}\" waits: another process's ffmpeg still has its directory",
            stream
        );
    }
}

/// Does another worker's transcode serve `stream` now (a playlist or segment request, which
/// this records as wanted for its owner)?
pub fn elsewhere(stream: &str) -> bool {
    let now = now_ms();
    let phase = match cached(stream, now) {
        Some(r) => Some(r.phase),
        None => {
            let Some(zone) = crate::conf::zone() else { return false };
            let me = pid();
            let p = zone.with_claims(|t, _| claims::peek(t, stream, me, now, &alive)).flatten();
            match p {
                Some(p) => remember(stream, p, now),
                None => {
                    LOCAL.with_borrow_mut(|l| l.remote.remove(stream));
                }
            }
            p
        }
    };
    phase.is_some_and(|p| p != Phase::Failed)
}

/// The owner's once-a-second refresh of its claim: when a viewer last asked for the stream in
/// any worker (`Some(None)`: the claim is no longer this worker's), or None without a zone.
pub fn beat(stream: &str, generation: u64, phase: Phase) -> Option<Option<u64>> {
    let zone = crate::conf::zone()?;
    let (me, now) = (pid(), now_ms());
    zone.with_claims(|t, _| claims::beat(t, stream, me, generation, phase, now))
}

/// The owner's transcode of `stream` ended (its directory is gone): the claim is free.
pub fn release(stream: &str, generation: u64) {
    if let Some(zone) = crate::conf::zone() {
        let me = pid();
        zone.with_claims(|t, _| claims::release(t, stream, me, generation));
    }
}

/// The worker leaves: every claim of its is free.
pub fn release_all() {
    if let Some(zone) = crate::conf::zone() {
        let me = pid();
        zone.with_claims(|t, _| claims::release_all(t, me));
    }
}

/// The owner's ffmpeg will present `secret` until `expires_ms` (in whichever worker its play
/// lands); false when the claim cannot take it.
pub fn set_secret(stream: &str, generation: u64, secret: &str, expires_ms: u64) -> bool {
    let Some(zone) = crate::conf::zone() else { return false };
    let me = pid();
    zone.with_claims(|t, _| claims::set_secret(t, stream, me, generation, secret, expires_ms))
        .unwrap_or(false)
}

/// A play presents `key` for `stream`: is it the current secret of the stream's claim (used up
/// by this)?
pub fn take_secret(stream: &str, key: &str) -> bool {
    let Some(zone) = crate::conf::zone() else { return false };
    let now = now_ms();
    zone.with_claims(|t, _| claims::take_secret(t, stream, key, now)).unwrap_or(false)
}

/// The owner's run of `stream` ended: its unused secret is void.
pub fn revoke_secret(stream: &str) {
    if let Some(zone) = crate::conf::zone() {
        let me = pid();
        zone.with_claims(|t, _| claims::revoke_secret(t, stream, me));
    }
}

/// Forget what other workers' claims said long ago (the idle check's tick).
pub fn prune() {
    let now = now_ms();
    let _ = LOCAL.try_with(|l| {
        l.borrow_mut().remote.retain(|_, r| now.saturating_sub(r.checked_ms) < 10 * RECHECK_MS)
    });
}

fn cached(stream: &str, now: u64) -> Option<Remote> {
    LOCAL
        .with_borrow(|l| l.remote.get(stream).copied())
        .filter(|r| now.saturating_sub(r.checked_ms) < RECHECK_MS)
}

fn remember(stream: &str, phase: Phase, now: u64) {
    LOCAL.with_borrow_mut(|l| {
        if l.remote.len() >= REMOTE_MAX && !l.remote.contains_key(stream) {
            l.remote.retain(|_, r| now.saturating_sub(r.checked_ms) < RECHECK_MS);
            if l.remote.len() >= REMOTE_MAX {
                return;
            }
        }
        l.remote.insert(stream.to_string(), Remote { phase, checked_ms: now });
    })
}

/// Another worker's transcode phase as this worker's viewers see it: a stopping one is waited
/// for like a restart (its claim goes once its ffmpeg has ended; then one is started here).
fn state_of(p: Phase) -> State {
    match p {
        Phase::Running => State::Running,
        Phase::Restarting | Phase::Stopping => State::Restarting,
        Phase::Failed => State::Failed(Failure::GaveUp),
    }
}
