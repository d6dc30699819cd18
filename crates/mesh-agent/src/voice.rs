//! One voice per node: whatever the number of worker processes, and across reloads and binary
//! upgrades (two generations of workers at once), one process announces the node, heartbeats
//! for it and long-polls its table. It is the one holding an exclusive `flock` on the voice
//! lock (a file beside the table file); the others follow the table file the voice writes.
//!
//! The lock is taken here, on the agent's own thread, and tried again every
//! [`LOCK_RETRY`] while another process holds it; it is released when the voice resigns (its
//! worker starts exiting) or stops, and by the kernel when its process dies. So at a reload the
//! old generation's voice steps down at its worker's first second of exiting, and the new one
//! speaks within [`LOCK_RETRY`] of that.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::agent::Level;
use crate::client::Master;
use crate::control::control_loop;
use crate::generations;
use crate::load::{os_error, SECRET_FILE_MODE};
use crate::poll::poll_loop;
use crate::shared::Shared;

/// How often a process waiting for the voice tries the lock again.
pub const LOCK_RETRY: Duration = Duration::from_millis(200);

/// Take the lock at `path` if no other process holds it (made 0600 if missing; a link there is
/// not followed). `Ok(None)`: another process holds it. The error is in nginx's wording.
pub fn try_lock(path: &Path) -> Result<Option<Flock<File>>, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(SECRET_FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| os_error("open", e))?;
    // A lock planted by another user (or left writable by others) could be held by anyone to
    // keep the node silent: only one of ours is a voice lock.
    let md = file.metadata().map_err(|e| os_error("fstat", e))?;
    if !written_by_us(&md) {
        return Err("the file is not the worker user's, or others can write it".to_string());
    }
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(Some(held)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(os_error("flock", e.into())),
    }
}

/// Whether a file beside the lock is one a process of this node wrote: owned by this user,
/// writable by no one else (the voice writes 0600). A worker following the voice takes nothing
/// else for a table, nor for another generation's figures.
pub(crate) fn written_by_us(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    md.uid() == nix::unistd::geteuid().as_raw() && md.mode() & 0o022 == 0
}

/// The voice's thread: wait for the lock (when one is set), then announce and heartbeat for
/// the node as long as this agent speaks for it.
pub(crate) fn voice_loop(m: &dyn Master, s: &Shared) {
    let mut waited = false;
    let mut before = 0;
    if let Some(path) = s.cfg.voice_lock.as_deref() {
        loop {
            if s.stopping() || s.resigned() {
                return;
            }
            match try_lock(path) {
                Ok(Some(mut held)) => {
                    before = generations::claim(&mut held, s.cfg.generation);
                    *s.voice_lock.lock() = Some(held);
                    break;
                }
                Ok(None) if !waited => {
                    waited = true;
                    s.log(
                        Level::Notice,
                        format!(
                            "mesh: another process speaks for the node (it holds \"{}\"): following the table file until it stops",
                            path.display()
                        ),
                    );
                }
                Ok(None) => {}
                // A lock that cannot be had at all (not writable, a link planted there): the
                // node must still be heard; only a reload's hand-over loses its order.
                Err(e) => {
                    s.log(
                        Level::Error,
                        format!(
                            "mesh: cannot take the voice lock \"{}\": {e}; this worker speaks for the node without it",
                            path.display()
                        ),
                    );
                    break;
                }
            }
            if !s.sleep(LOCK_RETRY) {
                return;
            }
        }
    }
    if !s.start_speaking() {
        *s.voice_lock.lock() = None;
        return;
    }
    if waited {
        s.log(Level::Notice, "mesh: this worker speaks for the node now".to_string());
    }
    // From another generation (a binary upgrade): its figures come by file, give them time.
    if before != 0 && before != s.cfg.generation && !s.sleep_voice(generations::HANDOVER) {
        return;
    }
    control_loop(m, s);
}

/// The voice's long poll: waits until this agent speaks, polls while it does.
pub(crate) fn voice_poll(m: &dyn Master, s: &Shared) {
    while !s.stopping() && !s.resigned() {
        if s.wait_speaking(Duration::from_secs(1)) {
            poll_loop(m, s);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("mesh-agent-voice-lock-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("table.json.voice");
        let a = try_lock(&p).unwrap().expect("free");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        // Another open file description (as another process has) is refused while it is held.
        assert!(try_lock(&p).unwrap().is_none());
        drop(a);
        assert!(try_lock(&p).unwrap().is_some());
        // A lock that others can write (or another user's) is refused: anyone could hold it.
        let open = d.join("open.voice");
        std::fs::write(&open, b"").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = try_lock(&open).unwrap_err();
        assert!(e.contains("others can write it"), "{e}");
        // A link planted at the lock's path is not followed.
        let l = d.join("link.voice");
        std::os::unix::fs::symlink(d.join("elsewhere"), &l).unwrap();
        assert!(try_lock(&l).is_err());
        assert!(!d.join("elsewhere").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
