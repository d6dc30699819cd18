//! Test doubles for the agent's unit tests: a master that answers from scripts, and a sink
//! that collects what the threads hand to the event loop. (The HTTP side is tested against
//! real sockets in client.rs, and the whole against real masters in t/.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mesh_core::node::Node;
use mesh_core::wire::{
    Announce, AnnounceReply, AuthReply, AuthRequest, Heartbeat, HeartbeatReply, RouteReply, RouteRequest,
};
use mesh_core::Role;
use parking_lot::{Condvar, Mutex};

use crate::agent::{Change, Event, Sink};
use crate::client::{CallError, Master};

#[derive(Default)]
pub struct Scripted {
    pub announce: Mutex<VecDeque<Result<AnnounceReply, CallError>>>,
    /// Answers to streams calls, taken first.
    pub streams: Mutex<VecDeque<Result<Option<Vec<u8>>, CallError>>>,
    /// The master's table for the node (version, body): heartbeats report its version, a
    /// streams call with an older `since` gets it.
    pub table: Mutex<Option<(u64, Vec<u8>)>>,
    /// The role heartbeats answer.
    pub role: Mutex<Option<Role>>,
    /// The epoch announces and heartbeats answer.
    pub epoch: Mutex<Option<String>>,
    /// Every streams call blocks until shutdown (a hung master).
    pub stall: AtomicBool,
    /// Long polls (`wait` > 0) block until shutdown: polls the master lost. Fetches answer.
    pub lose_polls: AtomicBool,
    /// Fetches (`wait` 0) fail with this.
    pub fetch_error: Mutex<Option<CallError>>,
    down: Mutex<bool>,
    cv: Condvar,
    pub heartbeats: Mutex<u32>,
    /// `(since, wait)` of every streams call.
    pub polls: Mutex<Vec<(u64, Duration)>>,
}

impl Scripted {
    pub fn set_table(&self, version: u64, body: &str) {
        *self.table.lock() = Some((version, body.as_bytes().to_vec()));
    }

    fn block(&self) -> CallError {
        let mut down = self.down.lock();
        while !*down {
            self.cv.wait(&mut down);
        }
        CallError::Stopped
    }
}

impl Master for Scripted {
    fn announce(&self, _: &Announce) -> Result<AnnounceReply, CallError> {
        self.announce.lock().pop_front().unwrap_or(Ok(AnnounceReply {
            role: None,
            heartbeat_interval_s: None,
            table_refresh_s: None,
            epoch: self.epoch.lock().clone(),
        }))
    }
    fn heartbeat(&self, _: &Heartbeat) -> Result<HeartbeatReply, CallError> {
        *self.heartbeats.lock() += 1;
        let table_version = self.table.lock().as_ref().map(|(v, _)| *v);
        Ok(HeartbeatReply { table_version, role: *self.role.lock(), epoch: self.epoch.lock().clone() })
    }
    fn streams(&self, since: u64, wait: Duration) -> Result<Option<Vec<u8>>, CallError> {
        self.polls.lock().push((since, wait));
        if self.stall.load(Ordering::Relaxed) {
            return Err(self.block());
        }
        if let Some(next) = self.streams.lock().pop_front() {
            return next;
        }
        if wait > Duration::ZERO && self.lose_polls.load(Ordering::Relaxed) {
            return Err(self.block());
        }
        if wait == Duration::ZERO {
            if let Some(e) = self.fetch_error.lock().clone() {
                return Err(e);
            }
        }
        match self.table.lock().as_ref() {
            Some((v, body)) if *v > since => return Ok(Some(body.clone())),
            _ => {}
        }
        thread::sleep(Duration::from_millis(10));
        Ok(None)
    }
    fn auth(&self, _: &AuthRequest) -> Result<AuthReply, CallError> {
        Ok(AuthReply { allow: true, ttl_s: Some(5), reason: None })
    }
    fn route(&self, _: &RouteRequest) -> Result<RouteReply, CallError> {
        Err(CallError::Timeout)
    }
    fn shutdown(&self) {
        *self.down.lock() = true;
        self.cv.notify_all();
    }
}

#[derive(Default)]
pub struct Collect(pub Mutex<Vec<Event>>);

impl Sink for Collect {
    fn send(&self, ev: Event) {
        self.0.lock().push(ev);
    }
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::empty("n", Role::Relay)
    }
}

impl Collect {
    pub fn logs(&self) -> Vec<String> {
        self.0
            .lock()
            .iter()
            .filter_map(|e| if let Event::Log(_, m) = e { Some(m.clone()) } else { None })
            .collect()
    }
    pub fn changes(&self) -> Vec<Change> {
        self.0
            .lock()
            .iter()
            .filter_map(|e| if let Event::Node(_, c) = e { Some(c.clone()) } else { None })
            .collect()
    }
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.0
            .lock()
            .iter()
            .filter_map(|e| if let Event::Node(n, _) = e { Some(n.clone()) } else { None })
            .collect()
    }
    pub fn wait_for(&self, f: impl Fn(&Collect) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if f(self) {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }
}
