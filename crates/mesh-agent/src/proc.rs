//! Child processes (ffmpeg) as nginx-rtmp's exec module runs them: no shell, argv given whole,
//! `PR_SET_PDEATHSIG` so a child never outlives the thread that started it, and death noticed
//! through a pipe — the child's stdout is the write end of a pipe whose read end the caller
//! watches; when the child is gone the read end sees end-of-file. (nginx reaps every child with
//! `waitpid(-1)` in its SIGCHLD handler, so waiting for the child ourselves would fail with
//! ECHILD.)

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::kill;
use nix::unistd::{getpid, getppid, Pid};

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    /// Read end of the death pipe: readable with end-of-file once the child is gone.
    pub death: OwnedFd,
}

/// Start `argv[0]` with `argv[1..]`. stderr goes where the caller's goes (nginx: its error log).
pub fn spawn(argv: &[String]) -> io::Result<Spawned> {
    let (program, args) =
        argv.split_first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    // Refuse a program that cannot run before forking: when exec fails, std reaps the child
    // itself, which races nginx's SIGCHLD handler (ECHILD, and std panics).
    let program = find_program(program)?;
    let (reader, writer) = io::pipe()?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::from(writer)).stderr(Stdio::inherit());
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
    // system calls (prctl, getppid, kill), allocating nothing.
    unsafe {
        cmd.pre_exec(|| {
            set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The parent may have died between fork and prctl.
            if getppid() == Pid::from_raw(1) {
                let _ = kill(getpid(), Signal::SIGKILL);
            }
            Ok(())
        });
    }
    // Should exec still fail (the file went away), std's reaping may lose the race: a panic
    // there is turned into an error.
    let child = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd.spawn()))
        .map_err(|_| io::Error::other("the child failed to start"))??;
    // `cmd` (holding our copy of the write end) is dropped here: only the child keeps it.
    drop(cmd);
    Ok(Spawned { pid: child.id(), death: reader.into() })
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

pub use nix::sys::signal::Signal;
pub const SIGKILL: Signal = Signal::SIGKILL;
pub const SIGTERM: Signal = Signal::SIGTERM;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::{Duration, Instant};

    fn set_nonblocking(fd: &OwnedFd) {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
        fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)).unwrap();
    }

    /// Wait for end-of-file on the death pipe (Some) or time out (None).
    fn death_within(fd: OwnedFd, d: Duration) -> Option<OwnedFd> {
        set_nonblocking(&fd);
        let mut f = std::fs::File::from(fd);
        let deadline = Instant::now() + d;
        let mut buf = [0u8; 64];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if Instant::now() > deadline {
                return Some(f.into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for our own child (no nginx SIGCHLD handler in tests).
    fn reap(pid: u32) {
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None);
    }

    #[test]
    fn death_is_seen_through_the_pipe() {
        let s = spawn(&["sleep".into(), "30".into()]).unwrap();
        let fd = death_within(s.death, Duration::from_millis(200)).expect("alive");
        assert!(signal(s.pid, SIGTERM));
        assert!(death_within(fd, Duration::from_secs(5)).is_none(), "end-of-file after the kill");
        reap(s.pid);
        assert!(kill(Pid::from_raw(s.pid as i32), None).is_err(), "gone");
    }

    #[test]
    fn argv_is_not_a_shell_line() {
        // A name with shell syntax is one argument to the program, never interpreted.
        let s = spawn(&["true".into(), "; touch /tmp/mesh-agent-pwned".into()]).unwrap();
        assert!(death_within(s.death, Duration::from_secs(5)).is_none());
        reap(s.pid);
        assert!(!std::path::Path::new("/tmp/mesh-agent-pwned").exists());
        assert!(spawn(&[]).is_err());
        assert!(spawn(&["/nonexistent/ffmpeg".into()]).is_err());
    }

    #[test]
    fn child_dies_with_the_thread_that_started_it() {
        let s = std::thread::spawn(|| spawn(&["sleep".into(), "30".into()]).unwrap()).join().unwrap();
        assert!(death_within(s.death, Duration::from_secs(5)).is_none(), "PR_SET_PDEATHSIG killed it");
        reap(s.pid);
    }
}
