//! Child processes (ffmpeg) as nginx-rtmp's exec module runs them: no shell, argv given whole,
//! `PR_SET_PDEATHSIG` so a child never outlives the thread that started it, none of the
//! parent's descriptors but its stdio (nginx opens its sockets without close-on-exec: a child
//! would hold listening sockets, the event loop's epoll and clients' connections), umask 027
//! (what it writes is readable by its owner and group only, whatever umask nginx set).
//!
//! The child's stdout and stderr are the write end of one pipe whose non-blocking read end the
//! caller watches: it reads the child's diagnostics there, and end-of-file once the child is
//! gone. (nginx reaps every child with `waitpid(-1)` in its SIGCHLD handler, so waiting for
//! the child ourselves would fail with ECHILD.)

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::libc;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::kill;
use nix::sys::stat::{umask, Mode};
use nix::unistd::{getpid, getppid, Pid};

/// The child's umask: files 0640, directories 0750.
pub const CHILD_UMASK: u32 = 0o027;

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    /// Read end of the child's stdout + stderr, non-blocking: its output, then end-of-file once
    /// the child is gone.
    pub output: OwnedFd,
}

/// Start `argv[0]` with `argv[1..]`, stdin from /dev/null.
pub fn spawn(argv: &[String]) -> io::Result<Spawned> {
    let (program, args) =
        argv.split_first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    // Refuse a program that cannot run before forking: when exec fails, std reaps the child
    // itself, which races nginx's SIGCHLD handler (ECHILD, and std panics).
    let program = find_program(program)?;
    // Both ends close-on-exec: the child gets the write end as its stdout and stderr only.
    let (reader, writer) = io::pipe()?;
    let writer2 = writer.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::from(writer)).stderr(Stdio::from(writer2));
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
    // system calls (prctl, getppid, kill, umask, close_range, getrlimit, fcntl), allocating
    // nothing.
    unsafe {
        cmd.pre_exec(|| {
            set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The parent may have died between fork and prctl.
            if getppid() == Pid::from_raw(1) {
                let _ = kill(getpid(), Signal::SIGKILL);
            }
            umask(Mode::from_bits_truncate(CHILD_UMASK));
            cloexec_from(3);
            Ok(())
        });
    }
    // Should exec still fail (the file went away), std's reaping may lose the race: a panic
    // there is turned into an error.
    let child = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd.spawn()))
        .map_err(|_| io::Error::other("the child failed to start"))??;
    // `cmd` (holding our copies of the write end) is dropped here: only the child keeps it.
    drop(cmd);
    let output: OwnedFd = reader.into();
    let fl = OFlag::from_bits_truncate(fcntl(&output, FcntlArg::F_GETFL)?);
    fcntl(&output, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    Ok(Spawned { pid: child.id(), output })
}

/// Mark every descriptor from `first` up close-on-exec (between fork and exec: stdio is in
/// place by then; std's own exec-error pipe is close-on-exec already and keeps working).
fn cloexec_from(first: u32) {
    // SAFETY: plain system calls on descriptor numbers; no memory is passed.
    unsafe {
        if libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) == 0 {
            return;
        }
        // Kernels before 5.11: one by one, up to the descriptor limit.
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1024
        };
        for fd in first as libc::c_int..max {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// What [`read_available`] left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Avail {
    /// End-of-file: the writer is gone.
    Eof,
    /// Nothing more to read now.
    Drained,
    /// `max` bytes read; there may be more.
    More,
}

/// Read what a non-blocking descriptor has now into `sink`, at most `max` bytes.
pub fn read_available(fd: BorrowedFd<'_>, max: usize, sink: &mut dyn FnMut(&[u8])) -> io::Result<Avail> {
    let mut buf = [0u8; 4096];
    let mut got = 0;
    while got < max {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return Ok(Avail::Eof),
            Ok(n) => {
                got += n;
                sink(&buf[..n]);
            }
            Err(nix::errno::Errno::EAGAIN) => return Ok(Avail::Drained),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Avail::More)
}

/// Wait up to `within` for end-of-file on every one of `fds` (non-blocking pipes' read ends),
/// discarding what they carry. Returns how many are still open. For the worker's exit only:
/// it sleeps.
pub fn wait_for_eof(fds: &[BorrowedFd<'_>], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut open: Vec<BorrowedFd<'_>> = fds.to_vec();
    loop {
        open.retain(|fd| {
            !matches!(read_available(fd.as_fd(), 1 << 16, &mut |_| {}), Ok(Avail::Eof) | Err(_))
        });
        if open.is_empty() || Instant::now() >= deadline {
            return open.len();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Longest line of a child's output kept whole; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 1024;
/// Lines passed on per second; more are counted and reported as one line.
pub const LINES_PER_S: u32 = 20;

/// A child's output cut into lines, with bounded memory (one line of [`MAX_LINE`] bytes) and
/// a bounded rate ([`LINES_PER_S`] a second), for logging.
#[derive(Debug, Default)]
pub struct OutputLines {
    buf: Vec<u8>,
    /// Inside a line cut at MAX_LINE: dropping until its end.
    skipping: bool,
    second: u64,
    in_second: u32,
    dropped: u64,
}

impl OutputLines {
    /// Take `bytes` read at `now_s` (any clock in seconds); `emit` gets every whole line that
    /// passes the rate limit (lossy UTF-8, without its end of line, empty lines skipped).
    pub fn feed(&mut self, bytes: &[u8], now_s: u64, emit: &mut dyn FnMut(&str)) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.skipping {
                    self.line(now_s, emit);
                }
                self.buf.clear();
                self.skipping = false;
            } else if !self.skipping {
                self.buf.push(b);
                if self.buf.len() == MAX_LINE {
                    self.buf.extend_from_slice(" [...]".as_bytes());
                    self.line(now_s, emit);
                    self.buf.clear();
                    self.skipping = true;
                }
            }
        }
    }

    /// The child is gone: pass on a last line without its end of line, and any count of
    /// dropped lines.
    pub fn finish(&mut self, now_s: u64, emit: &mut dyn FnMut(&str)) {
        if !self.skipping {
            self.line(now_s, emit);
        }
        self.buf.clear();
        self.skipping = false;
        self.report_dropped(emit);
    }

    fn line(&mut self, now_s: u64, emit: &mut dyn FnMut(&str)) {
        if self.buf.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if now_s != self.second {
            self.report_dropped(emit);
            self.second = now_s;
            self.in_second = 0;
        }
        if self.in_second < LINES_PER_S {
            self.in_second += 1;
            emit(&String::from_utf8_lossy(&self.buf));
        } else {
            self.dropped += 1;
        }
    }

    fn report_dropped(&mut self, emit: &mut dyn FnMut(&str)) {
        if self.dropped > 0 {
            emit(&format!("({} more lines not logged)", self.dropped));
            self.dropped = 0;
        }
    }
}

fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such executable file")
}

/// The executable a program name designates: a path, or a name looked up in `PATH`.
fn find_program(name: &str) -> io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable =
        |p: &std::path::Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if name.contains('/') {
        let p = std::path::PathBuf::from(name);
        return if runnable(&p) { Ok(p) } else { Err(not_found()) };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| runnable(p)).ok_or_else(not_found)
}

/// Send `sig` to `pid`; false when there is no such process.
pub fn signal(pid: u32, sig: Signal) -> bool {
    kill(Pid::from_raw(pid as i32), sig).is_ok()
}

/// Is there a process `pid` (one we may not signal counts too)?
pub fn alive(pid: i32) -> bool {
    pid > 0 && !matches!(kill(Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

/// A file locked by [`try_lock`].
pub type Lock = nix::fcntl::Flock<std::fs::File>;

/// An exclusive lock on the file at `path` (made 0600 if missing), held until the value is
/// dropped or the process ends; None when another process holds it. Never blocks.
pub fn try_lock(path: &std::path::Path) -> io::Result<Option<Lock>> {
    use std::os::unix::fs::OpenOptionsExt;
    // (A lock needs no write access: an existing file is opened for reading.)
    let f = match std::fs::File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?
        }
        other => other?,
    };
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(io::Error::from(e)),
    }
}

pub use nix::sys::signal::Signal;
pub const SIGKILL: Signal = Signal::SIGKILL;
pub const SIGTERM: Signal = Signal::SIGTERM;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_holder_at_a_time() {
        let dir = std::env::temp_dir().join(format!("mesh-lock-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let first = try_lock(&dir).unwrap();
        assert!(first.is_some());
        // flock locks belong to the open file: a second open is refused while the first holds it.
        assert!(try_lock(&dir).unwrap().is_none());
        drop(first);
        assert!(try_lock(&dir).unwrap().is_some());
        let _ = std::fs::remove_file(&dir);
    }
    use std::os::fd::AsRawFd;

    /// Wait for end-of-file on the output pipe (None, with what was read) or time out (Some).
    fn death_within(fd: OwnedFd, d: Duration) -> (Option<OwnedFd>, Vec<u8>) {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        loop {
            if read_available(fd.as_fd(), 1 << 20, &mut |b| out.extend_from_slice(b)).unwrap() == Avail::Eof {
                return (None, out);
            }
            if Instant::now() > deadline {
                return (Some(fd), out);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for our own child (no nginx SIGCHLD handler in tests).
    fn reap(pid: u32) {
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None);
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn death_is_seen_through_the_pipe() {
        let s = spawn(&["sleep".into(), "30".into()]).unwrap();
        let (fd, _) = death_within(s.output, Duration::from_millis(200));
        let fd = fd.expect("alive");
        assert!(signal(s.pid, SIGTERM));
        assert!(death_within(fd, Duration::from_secs(5)).0.is_none(), "end-of-file after the kill");
        reap(s.pid);
        assert!(kill(Pid::from_raw(s.pid as i32), None).is_err(), "gone");
    }

    #[test]
    fn stdout_and_stderr_come_through_the_pipe() {
        let s = spawn(&sh("echo out; echo err >&2")).unwrap();
        let (fd, out) = death_within(s.output, Duration::from_secs(5));
        assert!(fd.is_none());
        reap(s.pid);
        assert_eq!(String::from_utf8_lossy(&out), "out\nerr\n");
    }

    #[test]
    fn argv_is_not_a_shell_line() {
        // A name with shell syntax is one argument to the program, never interpreted.
        let s = spawn(&["true".into(), "; touch /tmp/mesh-agent-pwned".into()]).unwrap();
        assert!(death_within(s.output, Duration::from_secs(5)).0.is_none());
        reap(s.pid);
        assert!(!std::path::Path::new("/tmp/mesh-agent-pwned").exists());
        assert!(spawn(&[]).is_err());
        assert!(spawn(&["/nonexistent/ffmpeg".into()]).is_err());
    }

    #[test]
    fn child_dies_with_the_thread_that_started_it() {
        let s = std::thread::spawn(|| spawn(&["sleep".into(), "30".into()]).unwrap()).join().unwrap();
        assert!(death_within(s.output, Duration::from_secs(5)).0.is_none(), "PR_SET_PDEATHSIG killed it");
        reap(s.pid);
    }

    #[test]
    fn the_child_inherits_no_descriptor_but_stdio() {
        // Descriptors without close-on-exec, as nginx's sockets are, numbered high: a low one
        // could be the number ls's own directory gets in the child (a false alarm).
        let (r0, w0) = nix::unistd::pipe().unwrap();
        let high = |fd: &std::os::fd::OwnedFd, at: i32| {
            let n = fcntl(fd, FcntlArg::F_DUPFD(at)).unwrap();
            // SAFETY: a descriptor F_DUPFD just made, owned by nothing else.
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) }
        };
        let (r, w) = (high(&r0, 200), high(&w0, 300));
        for fd in [&r, &w] {
            fcntl(fd, FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
        }
        let s = spawn(&sh("ls /proc/self/fd")).unwrap();
        let (_, out) = death_within(s.output, Duration::from_secs(5));
        reap(s.pid);
        let fds: Vec<String> = String::from_utf8_lossy(&out).split_whitespace().map(str::to_string).collect();
        // 0, 1, 2, and the directory ls reads.
        assert_eq!(fds.len(), 4, "{fds:?}");
        assert!(
            !fds.contains(&r.as_raw_fd().to_string()) && !fds.contains(&w.as_raw_fd().to_string()),
            "{fds:?}"
        );
    }

    #[test]
    fn the_child_writes_files_0640() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("mesh-agent-umask-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("f");
        let sub = d.join("sub");
        let s = spawn(&sh(&format!("echo x > {}; mkdir {}", f.display(), sub.display()))).unwrap();
        assert!(death_within(s.output, Duration::from_secs(5)).0.is_none());
        reap(s.pid);
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f), 0o640);
        assert_eq!(mode(&sub), 0o750);
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn lines(o: &mut OutputLines, bytes: &[u8], now: u64) -> Vec<String> {
        let mut v = Vec::new();
        o.feed(bytes, now, &mut |l| v.push(l.to_string()));
        v
    }

    #[test]
    fn a_secret_split_across_reads_or_cut_at_max_line_is_never_emitted() {
        // Red team: ffmpeg's echo of its input URL, read in pieces (the pipe gives what it
        // has), or longer than a line is kept: what the log gets, redacted as the transcoder
        // does, never holds the credential.
        let secret = "0123456789abcdef0123456789abcdef";
        let url = format!("[in#0 @ 0x5] Error opening input rtmp://127.0.0.1:1935/relay/cam1?node=e1&key={secret}: I/O error\n");
        for cut in 0..url.len() {
            let mut o = OutputLines::default();
            let mut got = lines(&mut o, &url.as_bytes()[..cut], 0);
            got.extend(lines(&mut o, &url.as_bytes()[cut..], 0));
            assert_eq!(got.len(), 1, "cut at {cut}");
            assert!(!mesh_core::credential::redact(&got[0]).contains(&secret[..8]), "cut at {cut}: {got:?}");
        }
        for pad in MAX_LINE - 60..MAX_LINE + 5 {
            let mut o = OutputLines::default();
            let long = format!("{}{url}", "x".repeat(pad));
            let mut v = Vec::new();
            o.feed(long.as_bytes(), 0, &mut |l| v.push(mesh_core::credential::redact(l)));
            o.finish(0, &mut |l| v.push(mesh_core::credential::redact(l)));
            for l in &v {
                assert!(!l.contains(&secret[..4]), "pad {pad}: {l}");
            }
        }
    }

    #[test]
    fn output_lines_are_whole_bounded_and_rate_limited() {
        let mut o = OutputLines::default();
        assert_eq!(lines(&mut o, b"one\ntw", 0), ["one"]);
        assert_eq!(lines(&mut o, b"o\r\n\nthree\n", 0), ["two", "three"]);
        // A line without end: cut at MAX_LINE, the rest dropped up to its end.
        let long = vec![b'x'; 3 * MAX_LINE];
        let got = lines(&mut o, &long, 0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), MAX_LINE + " [...]".len());
        assert_eq!(lines(&mut o, b"xxx\nnext\n", 0), ["next"]);
        assert!(o.buf.capacity() <= 2 * MAX_LINE);
        // At most LINES_PER_S a second; the rest counted.
        let mut o = OutputLines::default();
        let flood: Vec<u8> = (0..100).flat_map(|i| format!("l{i}\n").into_bytes()).collect();
        assert_eq!(lines(&mut o, &flood, 7).len(), LINES_PER_S as usize);
        let after = lines(&mut o, b"later\n", 8);
        assert_eq!(after, [format!("({} more lines not logged)", 100 - LINES_PER_S), "later".to_string()]);
        let mut v = Vec::new();
        o.feed(b"no end", 8, &mut |l| v.push(l.to_string()));
        o.finish(8, &mut |l| v.push(l.to_string()));
        assert_eq!(v, ["no end"]);
    }

    #[test]
    fn waits_for_the_end_of_several_children() {
        let a = spawn(&["sleep".into(), "0.1".into()]).unwrap();
        let b = spawn(&["sleep".into(), "30".into()]).unwrap();
        assert_eq!(wait_for_eof(&[a.output.as_fd(), b.output.as_fd()], Duration::from_millis(500)), 1);
        signal(b.pid, SIGKILL);
        assert_eq!(wait_for_eof(&[a.output.as_fd(), b.output.as_fd()], Duration::from_secs(5)), 0);
        reap(a.pid);
        reap(b.pid);
    }
}
