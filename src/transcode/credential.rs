//! The transcoder's credential as the worker keeps it: one per stream, issued for each start
//! of ffmpeg, taken by the play that presents it (mesh_core::credential has the rules).
//! Per worker, like the transcodes themselves. Event loop only.

use std::cell::RefCell;
use std::io::Read;

use mesh_core::credential::{Credentials, BYTES};

use crate::nginx::util::now_ms;

thread_local! {
    static CREDENTIALS: RefCell<Credentials> = RefCell::new(Credentials::default());
}

/// A new credential for a new run of the transcode of `stream` (the previous one is void).
/// Fails when the OS gives no randomness: no credential is better than a guessable one.
pub fn issue(stream: &str) -> std::io::Result<String> {
    let mut random = [0u8; BYTES];
    // /dev/urandom never blocks once the system has booted.
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    Ok(CREDENTIALS.with_borrow_mut(|c| c.issue(stream, random, now_ms())))
}

/// The run of `stream` ended: an unused credential of it is void.
pub fn revoke(stream: &str) {
    let _ = CREDENTIALS.try_with(|c| c.borrow_mut().revoke(stream));
}

/// Does `key` let our own transcoder play `stream`? True once per credential, for the stream
/// it was issued for, within its lifetime (constant-time compare); the credential is consumed.
pub fn take_credential(stream: &str, key: &str) -> bool {
    CREDENTIALS.with_borrow_mut(|c| c.take(stream, key, now_ms()))
}
