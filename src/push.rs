//! Pushes of a published stream to the targets the table gives this node's role.
//!
//! Each push is an nginx-rtmp relay push (`ngx_rtmp_relay_push`), tagged as ours with a
//! per-target id, so that a task can see which pushes are alive and start the missing ones
//! again: a target that is down is retried every [`RETRY`] without touching the source.
//! When the table changes, [`Pushes::reconcile`] starts new targets and closes removed ones.
//! The task looks every [`CHECK`]: a push that went down is seen within it, and the hook set
//! by [`on_down`] runs (the wiring asks for a heartbeat now, so the master hears of the failure
//! within a round trip rather than at the next interval or after three missed ones).
//! A push that is up but hears nothing from its target for `mesh_push_timeout` (a quiet push
//! is pinged every [`CHECK`], and any RTMP peer answers) is *stalled*: the path to the target is
//! cut while the connection stays open. It is closed, the hook runs as for a push that went
//! down, and the push shows `stalled` until one to that target makes progress again (the master
//! moves the hop when the target still answers it: docs/master.md).
//! URLs arrive with their hosts already resolved (mesh_agent, at table load): nothing here
//! waits for DNS.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mesh_core::node::PlannedPush;

use crate::conf::{MainConf, DEFAULT_PUSH_TIMEOUT_MS};
use crate::nginx::event::{every, Task};
use crate::nginx::ffi::{NGX_LOG_ERR, NGX_LOG_WARN};
use crate::nginx::rtmp::{RelayName, RelayTarget, Session};

/// Interval between two starts of a push that is down.
pub const RETRY: Duration = Duration::from_secs(3);
/// Interval between two looks at which pushes are alive.
pub const CHECK: Duration = Duration::from_millis(500);

thread_local! {
    /// Run when a push goes down (see [`on_down`]).
    static ON_DOWN: Cell<Option<fn()>> = const { Cell::new(None) };
}

/// Run `f` on the event loop whenever a push that was up is seen down.
pub fn on_down(f: fn()) {
    ON_DOWN.with(|h| h.set(Some(f)));
}

struct PushTarget {
    id: usize,
    node_id: String,
    url: String,
    target: RelayTarget,
    /// Last seen state, to log changes only.
    up: bool,
    /// Times the push was started again.
    reconnects: u64,
    /// When it was last started.
    started: Instant,
    /// Bytes its live push had received at the last look, and when that count last moved.
    heard: u32,
    progress: Instant,
    /// Closed for hearing nothing for the stall timeout; until a push to it makes progress.
    stalled: bool,
}

/// The pushes of one published stream, and the task that starts missing ones again (dropped,
/// and so stopped, with them).
pub struct Pushes {
    state: Rc<RefCell<State>>,
    _retry: Task<()>,
}

struct State {
    s: Session,
    stream: String,
    name: RelayName,
    targets: Vec<PushTarget>,
    next_id: usize,
    /// `mesh_push_timeout` (None: off).
    stall: Option<Duration>,
}

impl Pushes {
    /// Start pushing `stream` (published on session `s`) as `plan` says. None when the
    /// connection's pool is out of memory.
    pub fn start(s: Session, stream: &str, plan: &[PlannedPush]) -> Option<Pushes> {
        let name = s.relay_name(stream)?;
        // SAFETY: our rtmp main conf is a MainConf.
        let ms = unsafe { s.main_conf::<MainConf>() }.map_or(DEFAULT_PUSH_TIMEOUT_MS, |c| c.push_timeout);
        let state = Rc::new(RefCell::new(State {
            s,
            stream: stream.to_string(),
            name,
            targets: Vec::new(),
            next_id: 0,
            stall: (ms > 0).then(|| Duration::from_millis(ms as u64)),
        }));
        state.borrow_mut().reconcile(plan);
        let weak = Rc::downgrade(&state);
        let retry = every(CHECK, move || {
            if let Some(st) = weak.upgrade() {
                st.borrow_mut().push_missing();
            }
        });
        Some(Pushes { state, _retry: retry })
    }

    /// Make the running pushes match `plan` (see [`State::reconcile`]).
    pub fn reconcile(&mut self, plan: &[PlannedPush]) {
        self.state.borrow_mut().reconcile(plan);
    }

    /// The state of each push, for `mesh_status`.
    pub fn status(&self) -> Vec<mesh_core::status::PushStatus> {
        self.state.borrow().status()
    }
}

impl State {
    /// Make the running pushes match `plan`: close the ones it no longer has (or whose URL
    /// changed), start the new ones, leave the rest alone.
    pub fn reconcile(&mut self, plan: &[PlannedPush]) {
        let keep =
            |t: &PushTarget| plan.iter().any(|p| p.node_id == t.node_id && p.url.as_deref() == Some(&t.url));
        let (stay, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.targets).into_iter().partition(keep);
        self.targets = stay;
        for t in gone {
            self.close(t.id);
            log_push(self.s, NGX_LOG_WARN, &self.stream, &t.node_id, "stopped: no longer in the table");
        }
        for p in plan {
            if self.targets.iter().any(|t| t.node_id == p.node_id) {
                continue;
            }
            let Some(url) = &p.url else {
                let why = "skipped: its host did not resolve when the table was loaded";
                log_push(self.s, NGX_LOG_ERR, &self.stream, &p.node_id, why);
                continue;
            };
            match self.target(&p.node_id, url) {
                Some(mut t) => {
                    self.s.relay_push(&mut self.name, &mut t.target);
                    self.targets.push(t);
                }
                None => log_push(self.s, NGX_LOG_ERR, &self.stream, &p.node_id, "skipped: invalid address"),
            }
        }
    }

    /// A relay target for `url`, with a new id.
    fn target(&mut self, node_id: &str, url: &str) -> Option<PushTarget> {
        let target = self.s.relay_target(url, self.next_id + 1)?;
        self.next_id += 1;
        Some(PushTarget {
            id: self.next_id,
            node_id: node_id.to_string(),
            url: url.to_string(),
            target,
            up: true,
            reconnects: 0,
            started: Instant::now(),
            heard: 0,
            progress: Instant::now(),
            stalled: false,
        })
    }

    /// Close the live push with id `id`, if any.
    fn close(&self, id: usize) {
        for (data, session) in self.s.relay_pushes() {
            if data == id {
                if let Some(p) = session {
                    p.finalize();
                }
            }
        }
    }

    /// Push again to every target that has had no live push for [`RETRY`], then check again
    /// later. A change of a target's state is logged once, not every retry; a push seen down
    /// runs the [`on_down`] hook once.
    fn push_missing(&mut self) {
        let pushes = self.s.relay_pushes();
        let alive: Vec<usize> =
            pushes.iter().filter(|(_, p)| !p.is_some_and(Session::is_closing)).map(|(d, _)| *d).collect();
        let s = self.s;
        let mut went_down = false;
        for t in self.targets.iter_mut() {
            let live = pushes.iter().find_map(|(d, p)| p.filter(|p| *d == t.id && !p.is_closing()));
            if let (Some(p), Some(stall)) = (live, self.stall) {
                let was = t.stalled;
                if t.check_stall(p, stall) {
                    p.finalize();
                    // Logged and reported once; its retries stall quietly until one makes progress.
                    if !was {
                        t.up = false;
                        went_down = true;
                        let why =
                            format!("stalled: nothing heard from it for {} ms, closed", stall.as_millis());
                        log_push(s, NGX_LOG_WARN, &self.stream, &t.node_id, &why);
                    }
                    continue;
                }
            }
            if alive.contains(&t.id) {
                if !t.up && !t.stalled {
                    t.up = true;
                    log_push(s, NGX_LOG_WARN, &self.stream, &t.node_id, "is connected again");
                }
                continue;
            }
            if t.up {
                t.up = false;
                went_down = true;
                log_push(s, NGX_LOG_WARN, &self.stream, &t.node_id, "is down, retrying");
            }
            if t.started.elapsed() >= RETRY {
                t.reconnects += 1;
                t.started = Instant::now();
                (t.heard, t.progress) = (0, t.started);
                s.relay_push(&mut self.name, &mut t.target);
            }
        }
        if went_down {
            if let Some(f) = ON_DOWN.with(Cell::get) {
                f();
            }
        }
    }

    /// The state of each push, for `mesh_status`.
    pub fn status(&self) -> Vec<mesh_core::status::PushStatus> {
        self.targets
            .iter()
            .map(|t| mesh_core::status::PushStatus {
                stream: self.stream.clone(),
                target: t.node_id.clone(),
                state: if t.stalled {
                    "stalled"
                } else if t.up {
                    "connected"
                } else {
                    "retrying"
                }
                .into(),
                reconnects: t.reconnects,
            })
            .collect()
    }
}

impl PushTarget {
    /// Look at its live push `p`: progress (bytes from the target since the last look) clears a
    /// stall; a quiet push is pinged. True when it has heard nothing for `stall` (since it
    /// started, or since it last heard): stalled now.
    fn check_stall(&mut self, p: Session, stall: Duration) -> bool {
        let (heard, _) = p.bytes();
        if heard != self.heard {
            self.heard = heard;
            self.progress = Instant::now();
            if self.stalled {
                self.stalled = false;
                self.up = false;
            }
            return false;
        }
        if self.progress.elapsed() >= stall {
            self.stalled = true;
            return true;
        }
        // Past the handshake (it heard an RTMP message): ask for an answer.
        if heard > 0 {
            p.ping();
        }
        false
    }
}

/// One log line about a push of `stream` to `node`.
fn log_push(s: Session, level: u32, stream: &str, node: &str, what: &str) {
    ngx::ngx_log_error!(level, s.log(), "mesh: push of stream \"{}\" to node \"{}\" {}", stream, node, what);
}
