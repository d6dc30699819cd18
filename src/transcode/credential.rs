//! The transcoder's credential as the worker keeps it: one per stream, issued for each start
//! of ffmpeg, taken by the play that presents it (mesh_core::credential has the rules).
//! With the node's shared zone the credential is kept in the stream's claim instead, so that
//! ffmpeg's play is recognized in whichever worker takes its connection (claim.rs). Event loop
//! only.

use std::cell::RefCell;
use std::io::Read;

use mesh_core::credential::{Credentials, BYTES, LIFETIME_MS};

use super::claim;

use crate::nginx::util::now_ms;

thread_local! {
    static CREDENTIALS: RefCell<Credentials> = RefCell::new(Credentials::default());
}

/// A new credential for a new run of the transcode of `stream` (the previous one is void),
/// kept in its claim of `generation` when there is one, else by this worker. Fails when the OS
/// gives no randomness: no credential is better than a guessable one.
pub fn issue(stream: &str, generation: Option<u64>) -> std::io::Result<String> {
    let mut random = [0u8; BYTES];
    // /dev/urandom never blocks once the system has booted.
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let now = now_ms();
    let key = CREDENTIALS.with_borrow_mut(|c| c.issue(stream, random, now));
    if generation.is_some_and(|g| claim::set_secret(stream, g, &key, now + LIFETIME_MS)) {
        // One place only: single use holds node-wide.
        revoke_local(stream);
    }
    Ok(key)
}

fn revoke_local(stream: &str) {
    let _ = CREDENTIALS.try_with(|c| c.borrow_mut().revoke(stream));
}

/// The run of `stream` ended: an unused credential of it is void.
pub fn revoke(stream: &str) {
    revoke_local(stream);
    claim::revoke_secret(stream);
}

/// Does `key` let our own transcoder play `stream`? True once per credential, for the stream
/// it was issued for, within its lifetime (constant-time compare); the credential is consumed.
pub fn take_credential(stream: &str, key: &str) -> bool {
    CREDENTIALS.with_borrow_mut(|c| c.take(stream, key, now_ms())) || claim::take_secret(stream, key)
}
