//! One run of a transcode: its directory, its credential, the ffmpeg child, and the child's
//! output — a non-blocking pipe read as an nginx read event; its lines are logged with query
//! secrets redacted, at the level ffmpeg tagged them with; end-of-file means the child is gone.

use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::path::Path;
use std::ptr::addr_of_mut;

use mesh_agent::proc::{self, Avail, OutputLines, SIGKILL};
use mesh_core::credential::redact;
use mesh_core::media::{ffmpeg_argv, ffmpeg_log_line, Job, LogLevel};

use super::{credential, now, Settings, Transcode};
use crate::nginx::ffi::*;
use crate::nginx::util::guard;

/// Mode of the media root (when we make it) and of each stream's directory.
pub const DIR_MODE: u32 = 0o750;
/// Bytes read from a child's output per event; the rest waits for the next loop iteration.
const READ_MAX: usize = 64 * 1024;

/// A running ffmpeg.
pub struct Child {
    pub pid: u32,
    /// When it started (`ngx_current_msec`).
    pub started_ms: u64,
    /// Its output pipe, as an nginx connection whose data is the owning Transcode.
    conn: *mut ngx_connection_t,
    lines: OutputLines,
}

impl Child {
    pub fn output(&self) -> BorrowedFd<'_> {
        // SAFETY: the connection owns this descriptor until `close`, which takes self.
        unsafe { BorrowedFd::borrow_raw((*self.conn).fd) }
    }

    /// Log what is left of the child's output and stop watching it.
    ///
    /// # Safety
    /// Event loop.
    pub unsafe fn close(mut self, stream: &str, log: *mut ngx_log_t) {
        self.lines.finish(now(), &mut |l| emit(log, stream, l));
        // SAFETY: our connection; closing it closes the read end.
        unsafe { ngx_close_connection(self.conn) };
    }
}

/// The stream's directory, anew and empty, 0750 (the media root too when it is missing).
pub fn make_dir(root: &Path, dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !root.is_dir() {
        std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(root)?;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::DirBuilder::new().mode(DIR_MODE).create(dir)?;
    // The umask (0 in a daemonized nginx) can only have removed bits; set it whole.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Start ffmpeg for `t`, with a new credential.
///
/// # Safety
/// Event loop; `t` is boxed (its address stays valid while the child runs).
pub unsafe fn start(
    t: &mut Transcode,
    s: &Settings,
    node_id: &str,
    log: *mut ngx_log_t,
) -> Result<Child, String> {
    let key = credential::issue(&t.stream).map_err(|e| format!("no random source: {e}"))?;
    let input = format!("{}/{}?node={node_id}&key={key}", s.source.trim_end_matches('/'), t.stream);
    let out_dir = t.dir.to_string_lossy().into_owned();
    let argv = ffmpeg_argv(&Job {
        ffmpeg: &s.ffmpeg,
        input: &input,
        out_dir: &out_dir,
        ladder: &s.ladder,
        segment_s: s.segment_s,
        window: s.window,
        audio: true,
    });
    let child = proc::spawn(&argv).map_err(|e| {
        credential::revoke(&t.stream);
        format!("cannot run \"{}\": {e}", s.ffmpeg)
    })?;
    // SAFETY: event loop; on success the connection owns the descriptor.
    match unsafe { watch(child.output, t, log) } {
        Ok(conn) => {
            Ok(Child { pid: child.pid, started_ms: super::now_ms(), conn, lines: OutputLines::default() })
        }
        Err(why) => {
            // Unwatched, it would run on unseen: end it (its descriptor is closed already).
            proc::signal(child.pid, SIGKILL);
            credential::revoke(&t.stream);
            Err(why.into())
        }
    }
}

/// Make `fd` an nginx connection read by `on_output`, its data `t`.
///
/// # Safety
/// Event loop.
unsafe fn watch(
    fd: OwnedFd,
    t: &mut Transcode,
    log: *mut ngx_log_t,
) -> Result<*mut ngx_connection_t, &'static str> {
    // SAFETY: ngx_get_connection takes the descriptor only when it returns a connection.
    unsafe {
        let c = ngx_get_connection(fd.as_raw_fd(), log);
        if c.is_null() {
            return Err("no free connection");
        }
        let _ = fd.into_raw_fd();
        (*c).data = (t as *mut Transcode).cast();
        (*(*c).read).handler = Some(on_output);
        (*(*c).read).log = log;
        (*c).log = log;
        if ngx_handle_read_event((*c).read, 0) != NGX_OK as ngx_int_t {
            ngx_close_connection(c);
            return Err("cannot watch the child");
        }
        Ok(c)
    }
}

/// Log one line of a child's output to `log` (the cycle's or an event's, hence valid):
/// secrets redacted, at ffmpeg's level.
fn emit(log: *mut ngx_log_t, stream: &str, line: &str) {
    let (level, line) = ffmpeg_log_line(line);
    let level = match level {
        LogLevel::Error => NGX_LOG_ERR,
        LogLevel::Warning => NGX_LOG_WARN,
        LogLevel::Other => NGX_LOG_NOTICE,
    };
    let line = redact(&line);
    ngx::ngx_log_error!(level, log, "mesh: ffmpeg of stream \"{}\": {}", stream, line);
}

/// The output pipe is readable: log its lines; end-of-file means the child is gone.
unsafe extern "C" fn on_output(ev: *mut ngx_event_t) {
    guard((), || {
        // SAFETY: the event's connection is a child's output pipe; its data the boxed
        // Transcode running that child.
        unsafe {
            let c = (*ev).data.cast::<ngx_connection_t>();
            let t = &mut *(*c).data.cast::<Transcode>();
            let log = (*ev).log;
            let Some(child) = t.child.as_mut() else { return };
            let stream = &t.stream;
            let lines = &mut child.lines;
            let fd = BorrowedFd::borrow_raw((*c).fd);
            let now = now();
            let read = proc::read_available(fd, READ_MAX, &mut |b| {
                lines.feed(b, now, &mut |l| emit(log, stream, l))
            });
            match read {
                Ok(Avail::More) => ngx_post_event(ev, addr_of_mut!(ngx_posted_events)),
                Ok(Avail::Drained) => {
                    if ngx_handle_read_event(ev, 0) != NGX_OK as ngx_int_t {
                        ngx::ngx_log_error!(NGX_LOG_ALERT, log, "mesh: cannot watch a transcode");
                    }
                }
                // A pipe fails to read only when it is gone: as good as end-of-file.
                Ok(Avail::Eof) | Err(_) => super::died(t, log),
            }
        }
    })
}
