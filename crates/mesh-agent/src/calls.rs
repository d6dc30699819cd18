//! The calls the event loop asks the master for (auth, route): a bounded queue with two lanes,
//! whose queued questions can be taken back.
//!
//! Strangers can make a node ask the master: every place a question waits is capped. Each lane
//! holds at most `cap` calls (a full lane refuses at once); calls marked `known` (credentials
//! the master allowed before, re-checks of admitted sessions) have a lane of their own, served
//! first, so a flood of unknown keys (however high their caps are set) neither delays them nor
//! takes their room; a question whose asker left is taken out of the queue with
//! [`CallQueue::cancel`] and never sent.

use std::collections::VecDeque;
use std::time::Duration;

use mesh_core::wire::{AuthRequest, RouteRequest};
use parking_lot::{Condvar, Mutex};

/// Calls the event loop asks for.
#[derive(Debug)]
pub enum Call {
    /// `id` names the asker's handle; the answer comes back with it.
    Auth {
        id: u64,
        req: AuthRequest,
        known: bool,
    },
    Route(RouteRequest),
}

impl Call {
    fn known(&self) -> bool {
        matches!(self, Call::Auth { known: true, .. })
    }
}

/// Why a call was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No master to ask.
    NoMaster,
    /// The queue is full.
    Full,
}

#[derive(Default)]
struct Lanes {
    known: VecDeque<Call>,
    other: VecDeque<Call>,
    closed: bool,
}

impl Lanes {
    fn len(&self) -> usize {
        self.known.len() + self.other.len()
    }
}

/// Bounded (per lane), two-lane, cancellable.
pub struct CallQueue {
    lanes: Mutex<Lanes>,
    ready: Condvar,
    cap: usize,
}

impl CallQueue {
    pub fn new(cap: usize) -> CallQueue {
        CallQueue { lanes: Mutex::new(Lanes::default()), ready: Condvar::new(), cap: cap.max(1) }
    }

    /// Queue a call, or refuse it when `cap` calls wait in its lane already (or the queue
    /// closed).
    pub fn push(&self, c: Call) -> Result<(), Refused> {
        let mut l = self.lanes.lock();
        if l.closed {
            return Err(Refused::NoMaster);
        }
        let lane = if c.known() { &mut l.known } else { &mut l.other };
        if lane.len() >= self.cap {
            return Err(Refused::Full);
        }
        lane.push_back(c);
        drop(l);
        // Every waiting thread: one kept for known calls must not swallow a stranger's wake-up.
        self.ready.notify_all();
        Ok(())
    }

    /// Take back the auth call `id` if it has not been sent yet; true when it was queued.
    pub fn cancel(&self, id: u64) -> bool {
        let mut l = self.lanes.lock();
        let before = l.len();
        let keep = |c: &Call| !matches!(c, Call::Auth { id: i, .. } if *i == id);
        l.known.retain(keep);
        l.other.retain(keep);
        l.len() != before
    }

    /// The next call, known ones first (only known ones with `known_only`: a thread kept for
    /// them never waits on a stranger's slow answer); None after `wait` with nothing, or once
    /// closed.
    pub fn pop(&self, wait: Duration, known_only: bool) -> Option<Call> {
        let mut l = self.lanes.lock();
        let empty = |l: &Lanes| l.known.is_empty() && (known_only || l.other.is_empty());
        if empty(&l) && !l.closed {
            self.ready.wait_for(&mut l, wait);
        }
        match l.known.pop_front() {
            Some(c) => Some(c),
            None if known_only => None,
            None => l.other.pop_front(),
        }
    }

    /// Calls waiting now.
    pub fn len(&self) -> usize {
        self.lanes.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuse new calls and drop the queued ones; wakes every waiting thread.
    pub fn close(&self) {
        let mut l = self.lanes.lock();
        l.closed = true;
        l.known.clear();
        l.other.clear();
        drop(l);
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lanes.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::wire::Action;

    fn auth(id: u64, known: bool) -> Call {
        Call::Auth {
            id,
            known,
            req: AuthRequest {
                node_id: "n".into(),
                action: Action::Publish,
                stream: "s".into(),
                key: Some("k".into()),
                token: None,
                addr: "a".into(),
            },
        }
    }

    fn id(c: Option<Call>) -> Option<u64> {
        match c? {
            Call::Auth { id, .. } => Some(id),
            Call::Route(_) => None,
        }
    }

    #[test]
    fn a_full_lane_refuses_at_once() {
        let q = CallQueue::new(2);
        q.push(auth(1, false)).unwrap();
        q.push(auth(2, true)).unwrap();
        q.push(auth(3, true)).unwrap();
        assert_eq!(q.push(auth(4, true)), Err(Refused::Full));
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn strangers_never_take_the_known_lanes_room() {
        let q = CallQueue::new(3);
        for i in 1..=3 {
            q.push(auth(i, false)).unwrap();
        }
        assert_eq!(q.push(auth(4, false)), Err(Refused::Full), "the strangers' lane is full");
        let route = Call::Route(RouteRequest { node_id: "n".into(), stream: "s".into() });
        assert_eq!(q.push(route), Err(Refused::Full), "routes share that lane");
        for i in 5..=7 {
            assert_eq!(q.push(auth(i, true)), Ok(()), "a known call still has room");
        }
        assert_eq!(id(q.pop(Duration::ZERO, false)), Some(5));
    }

    #[test]
    fn known_calls_go_first() {
        let q = CallQueue::new(10);
        for i in 1..=3 {
            q.push(auth(i, false)).unwrap();
        }
        q.push(auth(9, true)).unwrap();
        let order: Vec<_> = (0..4).map(|_| id(q.pop(Duration::ZERO, false)).unwrap()).collect();
        assert_eq!(order, vec![9, 1, 2, 3]);
    }

    #[test]
    fn a_thread_kept_for_known_calls_takes_only_those() {
        let q = CallQueue::new(10);
        q.push(auth(1, false)).unwrap();
        assert!(q.pop(Duration::ZERO, true).is_none());
        q.push(auth(2, true)).unwrap();
        assert_eq!(id(q.pop(Duration::ZERO, true)), Some(2));
        assert_eq!(id(q.pop(Duration::ZERO, false)), Some(1));
    }

    #[test]
    fn a_cancelled_call_is_never_popped() {
        let q = CallQueue::new(10);
        q.push(auth(1, false)).unwrap();
        q.push(auth(2, false)).unwrap();
        assert!(q.cancel(1));
        assert!(!q.cancel(1), "once");
        assert!(!q.cancel(77), "never queued");
        assert_eq!(id(q.pop(Duration::ZERO, false)), Some(2));
        assert!(q.pop(Duration::ZERO, false).is_none());
    }

    #[test]
    fn closing_wakes_and_refuses() {
        let q = std::sync::Arc::new(CallQueue::new(4));
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop(Duration::from_secs(10), false).is_none());
        std::thread::sleep(Duration::from_millis(50));
        let t0 = std::time::Instant::now();
        q.close();
        assert!(t.join().unwrap());
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(q.push(auth(1, true)), Err(Refused::NoMaster));
    }
}
