//! One run of a transcode: its directory, its credential, the ffmpeg child, and the child's
//! output — a non-blocking pipe read as an nginx read event ([`Pipe`], keyed by the
//! transcode's id); its lines are logged with query secrets redacted, at the level ffmpeg
//! tagged them with; end-of-file means the child is gone.

use std::os::fd::BorrowedFd;
use std::path::Path;

use mesh_agent::proc::{self, Avail, OutputLines, SIGKILL};
use mesh_core::credential::redact;
use mesh_core::media::{ffmpeg_argv, ffmpeg_log_line, Job, LogLevel};

use super::{credential, Settings};
use crate::nginx::event::{Pipe, PipeError};
use crate::nginx::ffi::{NGX_LOG_ALERT, NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_LOG_WARN};
use crate::nginx::util::{now, now_ms};

/// Mode of the media root (when we make it) and of each stream's directory.
pub const DIR_MODE: u32 = 0o750;
/// Bytes read from a child's output per event; the rest waits for the next loop iteration.
const READ_MAX: usize = 64 * 1024;

/// Why ffmpeg could not be started.
#[derive(Debug)]
pub enum StartError {
    /// No credential without randomness.
    NoRandom(std::io::Error),
    /// fork or exec failed (the program).
    CannotRun(String, std::io::Error),
    /// Its output cannot be read on the event loop (it was killed).
    Unwatched(PipeError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::NoRandom(e) => write!(f, "no random source: {e}"),
            StartError::CannotRun(ffmpeg, e) => write!(f, "cannot run \"{ffmpeg}\": {e}"),
            StartError::Unwatched(PipeError::NoConnection) => f.write_str("no free connection"),
            StartError::Unwatched(PipeError::NotWatched) => f.write_str("cannot watch the child"),
        }
    }
}

/// A running ffmpeg.
pub struct Child {
    pub pid: u32,
    /// When it started (`ngx_current_msec`).
    pub started_ms: u64,
    /// Its output pipe (closed when the child is dropped).
    output: Pipe,
    lines: OutputLines,
}

impl Child {
    pub fn output(&self) -> BorrowedFd<'_> {
        self.output.fd()
    }

    /// Read and log what the child wrote; true at end-of-file (it is gone).
    pub fn read(&mut self, stream: &str) -> bool {
        let now = now();
        let lines = &mut self.lines;
        let read = proc::read_available(self.output.fd(), READ_MAX, &mut |b| {
            lines.feed(b, now, &mut |l| emit(stream, l))
        });
        match read {
            Ok(Avail::More) => {
                self.output.again();
                false
            }
            Ok(Avail::Drained) => {
                if !self.output.wait() {
                    log!(NGX_LOG_ALERT, "mesh: cannot watch a transcode");
                }
                false
            }
            // A pipe fails to read only when it is gone: as good as end-of-file.
            Ok(Avail::Eof) | Err(_) => true,
        }
    }

    /// Log what is left of the child's output and stop watching it.
    pub fn close(mut self, stream: &str) {
        self.lines.finish(now(), &mut |l| emit(stream, l));
    }
}

/// The lock of `stream`'s directory, `<root>/.<stream>.lock` (no stream's name starts with a
/// dot), held by the worker whose ffmpeg writes there until that ffmpeg has ended and the
/// directory is gone: None while another process holds it (a worker of another nginx
/// generation, after a binary upgrade or a zone of a new size, whose claim is not in this zone).
pub fn lock(root: &Path, stream: &str) -> std::io::Result<Option<proc::Lock>> {
    use std::os::unix::fs::DirBuilderExt;
    if !root.is_dir() {
        std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(root)?;
    }
    proc::try_lock(&root.join(format!(".{stream}.lock")))
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

/// Start ffmpeg for transcode `id` of `stream` into `dir`, with a new credential (in the claim
/// of `generation`, when the transcode has one); its output
/// readable calls `on_output(id)`.
pub fn start(
    id: u64,
    stream: &str,
    dir: &Path,
    s: &Settings,
    node_id: &str,
    generation: Option<u64>,
    on_output: fn(u64),
) -> Result<Child, StartError> {
    let key = credential::issue(stream, generation).map_err(StartError::NoRandom)?;
    let input = format!("{}/{}?node={node_id}&key={key}", s.source.trim_end_matches('/'), stream);
    let out_dir = dir.to_string_lossy().into_owned();
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
        credential::revoke(stream);
        StartError::CannotRun(s.ffmpeg.clone(), e)
    })?;
    match Pipe::new(child.output, on_output, id) {
        Ok(output) => {
            Ok(Child { pid: child.pid, started_ms: now_ms(), output, lines: OutputLines::default() })
        }
        Err(e) => {
            // Unwatched, it would run on unseen: end it (its descriptor is closed already).
            proc::signal(child.pid, SIGKILL);
            credential::revoke(stream);
            Err(StartError::Unwatched(e))
        }
    }
}

/// Log one line of a child's output: secrets redacted, at ffmpeg's level.
fn emit(stream: &str, line: &str) {
    let (level, line) = ffmpeg_log_line(line);
    let line = redact(&line);
    let level = match level {
        LogLevel::Error => NGX_LOG_ERR,
        LogLevel::Warning => NGX_LOG_WARN,
        LogLevel::Other => NGX_LOG_NOTICE,
    };
    log!(level, "mesh: ffmpeg of stream \"{}\": {}", stream, line);
}
