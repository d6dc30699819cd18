//! Work on the event loop that is not a client's: periodic and delayed work, and a way for other
//! threads to wake the loop.
//!
//! * Periodic and delayed work is an `ngx` async task ([`spawn`] with [`sleep`]): dropping the
//!   task cancels it and deletes its timer, even from inside itself. Each step runs under the
//!   panic guard ([`every`]).
//! * [`Timer`] is for the one thing those tasks cannot be: a timer that keeps a quitting worker
//!   alive until it fires (nginx waits for non-cancelable timers), for a child being stopped.
//! * [`Pipe`] is a descriptor of ours (a child's output) as an nginx connection: its readable
//!   event calls `f(key)`; the owner finds what the key names, and may drop the pipe right there.
//! * [`Wake`] is a socket pair whose read end is an nginx read event: threads write a byte, the
//!   loop runs the handler. (Never `ngx_notify`: thread pools own its one slot.)

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr::{addr_of_mut, NonNull};
use std::time::Duration;

pub use ngx::async_::{sleep, spawn, Task};

use super::ffi::*;
use super::util::{drain, guard};

/// Run `step` every `period` until the task is dropped. Each step runs under the panic guard.
/// (Its timer is cancelable: it never keeps a quitting worker alive.)
pub fn every(period: Duration, mut step: impl FnMut() + 'static) -> Task<()> {
    spawn(async move {
        loop {
            sleep(period).await;
            guard((), &mut step);
        }
    })
}

/// Run `f` once after `delay`, unless the task is dropped first.
pub fn after(delay: Duration, f: impl FnOnce() + 'static) -> Task<()> {
    spawn(async move {
        sleep(delay).await;
        guard((), f);
    })
}

struct Slot {
    ev: ngx_event_t,
    f: fn(u64),
    key: u64,
}

/// A timer that calls `f(key)` when it fires. Its event lives at a fixed address (its own
/// allocation, reached only through a raw pointer) and is deleted when the timer is dropped; `f`
/// may drop the timer itself (nothing of it is touched after `f` is called).
pub struct Timer {
    slot: NonNull<Slot>,
}

impl Timer {
    /// A timer of `key`; `cancelable`: whether a quitting worker may exit while it is set.
    pub fn new(f: fn(u64), key: u64, cancelable: bool) -> Timer {
        // SAFETY: a zeroed event is nginx's idle event.
        let mut slot = Box::new(Slot { ev: unsafe { std::mem::zeroed() }, f, key });
        slot.ev.handler = Some(fire);
        slot.ev.log = ngx::log::ngx_cycle_log().as_ptr();
        slot.ev.set_cancelable(u32::from(cancelable));
        let slot = NonNull::from(Box::leak(slot));
        // SAFETY: the slot was just made; its event's data points back at it.
        unsafe { (*slot.as_ptr()).ev.data = slot.as_ptr().cast() };
        Timer { slot }
    }

    fn ev(&self) -> *mut ngx_event_t {
        // SAFETY: the slot lives until drop.
        unsafe { &raw mut (*self.slot.as_ptr()).ev }
    }

    /// Fire in `ms` milliseconds (again, if already set).
    pub fn arm(&mut self, ms: ngx_msec_t) {
        // SAFETY: our event, on the event loop.
        unsafe { ngx_add_timer(self.ev(), ms) }
    }

    /// Is it set?
    pub fn armed(&self) -> bool {
        // SAFETY: our event.
        unsafe { (*self.ev()).timer_set() == 1 }
    }

    /// Unset it.
    pub fn disarm(&mut self) {
        if self.armed() {
            // SAFETY: our set timer, on the event loop.
            unsafe { ngx_del_timer(self.ev()) }
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.disarm();
        // SAFETY: made by Box::leak in new, freed once here.
        drop(unsafe { Box::from_raw(self.slot.as_ptr()) });
    }
}

unsafe extern "C" fn fire(ev: *mut ngx_event_t) {
    guard((), || {
        // SAFETY: the event is a Slot's (data points at it), alive while its timer is set;
        // f and key are copied out before f runs, which may free the slot.
        let (f, key) = unsafe {
            let slot = (*ev).data.cast::<Slot>();
            ((*slot).f, (*slot).key)
        };
        f(key);
    })
}

/// Why a descriptor cannot be watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeError {
    /// `worker_connections` are all in use.
    NoConnection,
    /// The event module refused it.
    NotWatched,
}

impl std::fmt::Display for PipeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PipeError::NoConnection => "no free connection",
            PipeError::NotWatched => "cannot watch it",
        })
    }
}

/// A descriptor we read (non-blocking), as an nginx connection whose readable event calls
/// `f(key)`. `f` reads through [`Pipe::fd`], then says what next ([`Pipe::again`],
/// [`Pipe::wait`]) or drops the pipe (nothing of it is touched after `f` is called). Dropping
/// it closes the connection and the descriptor.
pub struct Pipe {
    conn: NonNull<ngx_connection_t>,
    slot: NonNull<PipeSlot>,
}

struct PipeSlot {
    f: fn(u64),
    key: u64,
}

impl Pipe {
    /// Watch `fd` (closed on failure).
    pub fn new(fd: OwnedFd, f: fn(u64), key: u64) -> Result<Pipe, PipeError> {
        let log = ngx::log::ngx_cycle_log().as_ptr();
        // SAFETY: on the event loop; ngx_get_connection takes the descriptor only when it returns
        // a connection.
        let c = unsafe { ngx_get_connection(fd.as_raw_fd(), log) };
        let Some(conn) = NonNull::new(c) else { return Err(PipeError::NoConnection) };
        let _ = fd.into_raw_fd();
        let slot = NonNull::from(Box::leak(Box::new(PipeSlot { f, key })));
        let pipe = Pipe { conn, slot };
        // SAFETY: the connection was just made; its data is our slot, which outlives it (drop).
        unsafe {
            (*c).data = slot.as_ptr().cast();
            (*c).log = log;
            (*(*c).read).handler = Some(readable);
            (*(*c).read).log = log;
        }
        // From here on, dropping `pipe` closes the connection.
        if pipe.wait() {
            Ok(pipe)
        } else {
            Err(PipeError::NotWatched)
        }
    }

    /// The descriptor, to read it.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the connection owns this descriptor until the pipe is dropped.
        unsafe { BorrowedFd::borrow_raw((*self.conn.as_ptr()).fd) }
    }

    /// There is more to read: call `f` again later in this loop iteration (other events first).
    pub fn again(&self) {
        // SAFETY: our connection's read event, on the event loop; closing the connection
        // deletes it from the posted queue.
        unsafe { ngx_post_event((*self.conn.as_ptr()).read, addr_of_mut!(ngx_posted_events)) }
    }

    /// All read: call `f` when it is readable again. False when the event module refuses.
    pub fn wait(&self) -> bool {
        // SAFETY: our connection's read event, on the event loop.
        unsafe { ngx_handle_read_event((*self.conn.as_ptr()).read, 0) == NGX_OK as ngx_int_t }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // SAFETY: our connection (its timers and posted events go with it), then our slot, made
        // by Box::leak in new and freed once here.
        unsafe {
            ngx_close_connection(self.conn.as_ptr());
            drop(Box::from_raw(self.slot.as_ptr()));
        }
    }
}

unsafe extern "C" fn readable(ev: *mut ngx_event_t) {
    guard((), || {
        // SAFETY: the event is a Pipe's connection's read event, whose data is its slot, alive
        // while the connection is; f and key are copied out before f runs, which may drop it.
        let (f, key) = unsafe {
            let slot = (*(*ev).data.cast::<ngx_connection_t>()).data.cast::<PipeSlot>();
            ((*slot).f, (*slot).key)
        };
        f(key);
    })
}

/// The loop's end of a wake-up socket: a [`Pipe`] over the read end of a socket pair, whose
/// readable event calls `f(key)`; `f` first [`Wake::drain`]s it.
pub struct Wake {
    pipe: Pipe,
}

/// The threads' end: writing to it wakes the loop.
pub struct Waker(UnixStream);

impl Waker {
    /// Wake the loop (non-blocking: a full socket already holds a wake-up).
    pub fn wake(&self) {
        let _ = (&self.0).write(&[1]);
    }
}

impl Wake {
    /// A socket pair; its read end watched by the event loop, which calls `f(key)` whenever a
    /// thread has written to the [`Waker`].
    pub fn new(f: fn(u64), key: u64) -> std::io::Result<(Wake, Waker)> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        let pipe = Pipe::new(OwnedFd::from(rx), f, key).map_err(|e| {
            std::io::Error::other(match e {
                PipeError::NoConnection => "no free connection for the wake-up socket",
                PipeError::NotWatched => "cannot watch the wake-up socket",
            })
        })?;
        Ok((Wake { pipe }, Waker(tx)))
    }

    /// Read the wake-ups written so far and watch for the next ones. False when the event
    /// module refuses to watch it again (the caller says so in the log).
    #[must_use]
    pub fn drain(&self) -> bool {
        drain(self.pipe.fd().as_raw_fd());
        self.pipe.wait()
    }
}
