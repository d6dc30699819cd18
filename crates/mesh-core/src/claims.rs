//! Transcode claims: which worker process of a node runs the one ffmpeg of a stream.
//!
//! The table lives in the node's shared memory zone (the nginx layer hands it over as a slice,
//! locked for every process of the node, and zeroed memory is an empty table); everything here
//! is plain logic over that slice. A claim names its stream, its owner (pid), a generation (a
//! counter that grows with every new owner, so an owner that lost its claim can tell), when the
//! owner last refreshed it (its heartbeat) and when a viewer, in any worker, last asked for the
//! stream's files. It also carries the single-use credential of the owner's ffmpeg, so that its
//! RTMP play is recognized in whichever worker the kernel hands its connection to.
//!
//! A claim whose owner is gone (no such pid) or has not refreshed it for [`STALE_MS`] is taken
//! over by the next worker that needs it; one whose owner is stopping its ffmpeg (idle, or the
//! worker exits at a reload) is waited for, so that two ffmpegs never write one directory.
//! The table is bounded: past it, [`Claimed::Full`].

use crate::name::MAX_ID_LEN;
use crate::token::ct_eq;

/// A claim not refreshed for this long is its owner's no more.
pub const STALE_MS: u64 = 5_000;
/// Bytes of a credential kept (hex).
pub const SECRET_MAX: usize = 64;

/// What the owner's transcode is doing, as other workers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Phase {
    Running = 1,
    Restarting = 2,
    /// Given up (ffmpeg failed too often).
    Failed = 3,
    /// Its ffmpeg is being stopped: wait for the claim to go before starting another.
    Stopping = 4,
}

impl Phase {
    fn from_u32(v: u32) -> Phase {
        match v {
            2 => Phase::Restarting,
            3 => Phase::Failed,
            4 => Phase::Stopping,
            _ => Phase::Running,
        }
    }
}

/// One claim, as laid out in shared memory (all zeroes: free).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Claim {
    /// The owner's pid; 0: free.
    pub owner: i32,
    phase: u32,
    generation: u64,
    beat_ms: u64,
    wanted_ms: u64,
    secret_expires_ms: u64,
    name_len: u32,
    secret_len: u32,
    name: [u8; MAX_ID_LEN],
    secret: [u8; SECRET_MAX],
}

// The zone lays claims out one after the other, 8-aligned.
const _: () = assert!(std::mem::size_of::<Claim>().is_multiple_of(8));

impl Claim {
    fn name(&self) -> &[u8] {
        &self.name[..(self.name_len as usize).min(MAX_ID_LEN)]
    }

    fn is(&self, stream: &str) -> bool {
        self.owner != 0 && self.name() == stream.as_bytes()
    }

    /// Is its owner gone (`alive` says whether a pid is there)?
    fn dead(&self, now_ms: u64, alive: &dyn Fn(i32) -> bool) -> bool {
        now_ms.saturating_sub(self.beat_ms) > STALE_MS || !alive(self.owner)
    }

    fn forget_secret(&mut self) {
        self.secret = [0; SECRET_MAX];
        self.secret_len = 0;
        self.secret_expires_ms = 0;
    }
}

/// The answer to [`claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// The caller owns it now (new, taken over, or already its own): start the transcode.
    Mine { generation: u64, taken_over_from: Option<i32> },
    /// Another live worker owns it; the caller serves (or waits for) its files.
    Other { owner: i32, phase: Phase },
    /// No free claim left.
    Full,
    /// The name cannot be a claim's (too long).
    BadName,
}

fn find(table: &[Claim], stream: &str) -> Option<usize> {
    table.iter().position(|c| c.is(stream))
}

/// `me` wants a transcode of `stream` at `now_ms`: the claim is the caller's, or another
/// worker's (whose claim then records the request), or there is no room. `next_generation`
/// numbers the new owner (the caller keeps a node-wide counter in the zone).
pub fn claim(
    table: &mut [Claim],
    stream: &str,
    me: i32,
    now_ms: u64,
    next_generation: &mut u64,
    alive: &dyn Fn(i32) -> bool,
) -> Claimed {
    if stream.is_empty() || stream.len() > MAX_ID_LEN {
        return Claimed::BadName;
    }
    let mut take = |c: &mut Claim, from: Option<i32>| {
        *next_generation += 1;
        *c = Claim {
            owner: me,
            phase: Phase::Running as u32,
            generation: *next_generation,
            beat_ms: now_ms,
            wanted_ms: now_ms,
            secret_expires_ms: 0,
            name_len: stream.len() as u32,
            secret_len: 0,
            name: [0; MAX_ID_LEN],
            secret: [0; SECRET_MAX],
        };
        c.name[..stream.len()].copy_from_slice(stream.as_bytes());
        Claimed::Mine { generation: c.generation, taken_over_from: from }
    };
    if let Some(i) = find(table, stream) {
        let c = &mut table[i];
        if c.owner == me {
            // (Its transcode went without releasing the claim: start again, a new generation.)
            return take(c, None);
        }
        if c.dead(now_ms, alive) {
            let from = c.owner;
            return take(c, Some(from));
        }
        c.wanted_ms = c.wanted_ms.max(now_ms);
        return Claimed::Other { owner: c.owner, phase: Phase::from_u32(c.phase) };
    }
    // A free claim, or one whose owner is gone (it never released it).
    let free =
        table.iter().position(|c| c.owner == 0).or_else(|| table.iter().position(|c| c.dead(now_ms, alive)));
    match free {
        Some(i) => take(&mut table[i], None),
        None => Claimed::Full,
    }
}

/// Where another worker's claim of `stream` stands (for a playlist or segment request, which
/// it records as wanted): its phase, or None when no live worker owns it.
pub fn peek(
    table: &mut [Claim],
    stream: &str,
    me: i32,
    now_ms: u64,
    alive: &dyn Fn(i32) -> bool,
) -> Option<Phase> {
    let c = &mut table[find(table, stream)?];
    if c.owner == me || c.dead(now_ms, alive) {
        return None;
    }
    c.wanted_ms = c.wanted_ms.max(now_ms);
    Some(Phase::from_u32(c.phase))
}

/// The owner refreshes its claim (`phase` now): when a viewer last asked for the stream in any
/// worker, or None when the claim is no longer its own (taken over: stop, and leave the
/// directory to the new owner). A claim freed meanwhile (its owner was silent too long, and
/// whoever took it over let it go) is the owner's again.
pub fn beat(
    table: &mut [Claim],
    stream: &str,
    me: i32,
    generation: u64,
    phase: Phase,
    now_ms: u64,
) -> Option<u64> {
    let i = match find(table, stream) {
        Some(i) => i,
        None if stream.len() <= MAX_ID_LEN => {
            let i = table.iter().position(|c| c.owner == 0)?;
            table[i] = zeroed();
            table[i].owner = me;
            table[i].generation = generation;
            table[i].name_len = stream.len() as u32;
            table[i].name[..stream.len()].copy_from_slice(stream.as_bytes());
            i
        }
        None => return None,
    };
    let c = &mut table[i];
    if c.owner != me || c.generation != generation {
        return None;
    }
    c.beat_ms = now_ms;
    c.phase = phase as u32;
    Some(c.wanted_ms)
}

/// The owner's transcode ended: the claim is free (only the owner of that generation frees it).
pub fn release(table: &mut [Claim], stream: &str, me: i32, generation: u64) {
    if let Some(i) = find(table, stream) {
        if table[i].owner == me && table[i].generation == generation {
            table[i] = zeroed();
        }
    }
}

/// Every claim of `me` is free (its worker leaves).
pub fn release_all(table: &mut [Claim], me: i32) {
    for c in table.iter_mut().filter(|c| c.owner == me) {
        *c = zeroed();
    }
}

/// The owner's ffmpeg will present `secret` (until `expires_ms`); false when the claim is not
/// its own or the secret does not fit.
pub fn set_secret(
    table: &mut [Claim],
    stream: &str,
    me: i32,
    generation: u64,
    secret: &str,
    expires_ms: u64,
) -> bool {
    let Some(i) = find(table, stream) else { return false };
    let c = &mut table[i];
    if c.owner != me || c.generation != generation || secret.len() > SECRET_MAX {
        return false;
    }
    c.forget_secret();
    c.secret[..secret.len()].copy_from_slice(secret.as_bytes());
    c.secret_len = secret.len() as u32;
    c.secret_expires_ms = expires_ms;
    true
}

/// A play presents `key` for `stream`: true, once, when it is the claim's secret and has not
/// expired (constant-time compare); used or expired, it never works again.
pub fn take_secret(table: &mut [Claim], stream: &str, key: &str, now_ms: u64) -> bool {
    let Some(i) = find(table, stream) else { return false };
    let c = &mut table[i];
    let len = (c.secret_len as usize).min(SECRET_MAX);
    if len == 0 || !ct_eq(&c.secret[..len], key.as_bytes()) {
        return false;
    }
    let fresh = now_ms < c.secret_expires_ms;
    c.forget_secret();
    fresh
}

/// The owner's run ended: an unused secret of it is void.
pub fn revoke_secret(table: &mut [Claim], stream: &str, me: i32) {
    if let Some(i) = find(table, stream) {
        if table[i].owner == me {
            table[i].forget_secret();
        }
    }
}

/// Claims held now (the owner's pid and stream), for figures and tests.
pub fn held(table: &[Claim]) -> impl Iterator<Item = (i32, &[u8])> {
    table.iter().filter(|c| c.owner != 0).map(|c| (c.owner, c.name()))
}

fn zeroed() -> Claim {
    Claim {
        owner: 0,
        phase: 0,
        generation: 0,
        beat_ms: 0,
        wanted_ms: 0,
        secret_expires_ms: 0,
        name_len: 0,
        secret_len: 0,
        name: [0; MAX_ID_LEN],
        secret: [0; SECRET_MAX],
    }
}

/// A table of `n` free claims (tests; the zone's memory is zeroed instead).
pub fn empty(n: usize) -> Vec<Claim> {
    vec![zeroed(); n]
}

#[cfg(test)]
mod tests;
