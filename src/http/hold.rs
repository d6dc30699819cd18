//! Entry-manifest requests held until the manifest exists: on an nginx timer (never a blocking
//! wait), at most `mesh_manifest_wait`, bounded per worker (`mesh_manifest_wait_max`) and per
//! client address (`mesh_manifest_wait_per_client`; over either: 503 with `Retry-After`). A held
//! request ends when its client closes (nginx's `ngx_http_test_reading` as the read handler,
//! as upstream's broken-connection check), and only streams that are live here or may come are
//! held: a stream neither published here nor routable is a 404 at once, and so is one the
//! master says it does not know.
//!
//! The held request's state lives in its own pool ([`crate::nginx::http::hold`]: dropped with
//! the request, which deletes its timer and gives its place back); nothing outside the request
//! points at it.

use std::cell::{Cell, RefCell};

use mesh_core::hold::{Busy, Holds, DEFAULT_HOLD_MAX, DEFAULT_HOLD_PER_CLIENT};
use mesh_core::manifest::{rewrite_hls, rewrite_mpd};
use mesh_core::media::{Format, MediaFile};
use ngx::core::Status;
use ngx::http::{HTTPStatus, HttpModuleMainConf, Request};

use super::refusal::Refusal;
use super::serve::{serve_manifest, StreamDir};
use super::token::{self, Check};
use super::{HttpMainConf, Module};
use crate::nginx::ffi::*;
use crate::nginx::http::{self, RequestExt};
use crate::nginx::util::{exiting, now_ms};
use crate::registry;
use crate::route::{self, Standing};
use crate::transcode::{self, State};

const POLL_MS: ngx_msec_t = 100;

/// Held-request figures of this worker.
#[derive(Debug, Default, Clone, Copy)]
pub struct Figures {
    /// Held now.
    pub held: u64,
    /// Held since start.
    pub held_total: u64,
    /// Refused: the worker's cap.
    pub busy_worker: u64,
    /// Refused: the client address's cap.
    pub busy_client: u64,
    /// Ended by their client before an answer.
    pub client_closed: u64,
}

thread_local! {
    static HOLDS: RefCell<Holds> = RefCell::new(Holds::new(DEFAULT_HOLD_MAX, DEFAULT_HOLD_PER_CLIENT));
    static FIGURES: Cell<Figures> = Cell::new(Figures::default());
}

fn count(f: impl FnOnce(&mut Figures)) {
    let _ = FIGURES.try_with(|c| {
        let mut v = c.get();
        f(&mut v);
        c.set(v);
    });
}

/// This worker's held-request figures (for `mesh_status`).
pub fn figures() -> Figures {
    let mut f = FIGURES.with(Cell::get);
    f.held = HOLDS.with_borrow(Holds::held) as u64;
    f
}

/// What a manifest request is waiting for, and what it will get.
pub enum Step {
    /// Ready: the entry manifest's text.
    Serve(String),
    Wait,
    Fail(Refusal),
}

/// An entry-manifest request, while it is looked at and while it is held.
pub struct Hold {
    stream: String,
    file: MediaFile<'static>,
    format: Format,
    token: Option<String>,
    client: String,
    deadline: u64,
    /// Counted in HOLDS (given back on drop).
    held: bool,
    /// Answered by us (not ended by its client).
    answered: bool,
}

impl Hold {
    /// `r`'s request for `file` of `stream`, to be answered within `wait` ms.
    pub fn new(
        r: &Request,
        stream: String,
        file: MediaFile<'static>,
        format: Format,
        token: Option<String>,
        wait: ngx_msec_t,
    ) -> Hold {
        Hold {
            stream,
            file,
            format,
            token,
            client: r.client(),
            deadline: now_ms() + wait as u64,
            held: false,
            answered: false,
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.held {
            let _ = HOLDS.try_with(|h| h.borrow_mut().release(&self.client));
            if !self.answered {
                count(|f| f.client_closed += 1);
            }
        }
    }
}

/// One look at a manifest request's conditions: token, role, stream here or coming, transcode,
/// file.
pub fn step(r: &Request, h: &Hold, first: bool) -> Step {
    let Some(settings) = Module::main_conf(r).and_then(|c| c.settings.as_ref()) else {
        return Step::Fail(Refusal::NoSettings);
    };
    // A worker shutting down starts nothing and holds nobody: nginx waits for held requests
    // before it exits.
    if exiting() {
        return Step::Fail(Refusal::ShuttingDown);
    }
    let node = crate::conf::current_node();
    if !node.role.serves_viewers() {
        return Step::Fail(Refusal::Role(node.role));
    }
    match token::check(&node, &h.stream, h.token.as_deref(), crate::nginx::util::now()) {
        Check::Good { .. } => {}
        Check::Missing => return Step::Fail(Refusal::NoToken),
        Check::Refused(why) => return Step::Fail(Refusal::Token(why)),
        Check::NotServed => return Step::Fail(Refusal::Role(node.role)),
        Check::Unknown => {
            if first {
                token::ask(&node, &h.stream, h.token.as_deref(), h.client.clone());
            }
            return Step::Wait;
        }
    }
    match route::wanted(&node, &h.stream) {
        Standing::Here => {}
        Standing::Coming => return Step::Wait,
        Standing::NotRoutable => return Step::Fail(Refusal::NotLive),
        Standing::Unknown => return Step::Fail(Refusal::UnknownToMaster),
        Standing::Denied => return Step::Fail(Refusal::NotRoutedHere),
        Standing::Failed => return Step::Fail(Refusal::RouteFailed),
    }
    match transcode::want(settings, &h.stream, &node.node_id) {
        State::Failed(why) => Step::Fail(Refusal::Transcoder(why)),
        _ => match entry_ready(&settings.root, &h.stream, &h.file.name) {
            Some(text) => Step::Serve(text),
            None => Step::Wait,
        },
    }
}
/// Is an entry manifest there, with everything it points a player at first? ffmpeg writes
/// `master.m3u8` before the media playlists and the MPD before every init segment: serving the
/// entry earlier sends the player to a 404.
fn entry_ready(root: &std::path::Path, stream: &str, name: &str) -> Option<String> {
    let dir = StreamDir::open(root, stream)?;
    let text = dir.read(name)?;
    let exists = |n: &str| dir.has(n);
    if name.ends_with(".m3u8") {
        // media playlists: the URI lines, and the URI="…" of EXT-X-MEDIA
        let uris = text.lines().filter_map(|l| {
            let l = l.trim();
            match l.strip_prefix('#') {
                None if !l.is_empty() => Some(l.to_string()),
                None => None,
                Some(tag) => {
                    tag.split_once("URI=\"").and_then(|(_, r)| r.split_once('"')).map(|(u, _)| u.to_string())
                }
            }
        });
        let ready = uris.into_iter().all(|u| exists(&u));
        ready.then_some(text)
    } else {
        // one init segment per representation
        let reps = text.matches("<Representation ").count();
        let ready = reps > 0 && (0..reps).all(|i| exists(&format!("init-{i}.m4s")));
        ready.then_some(text)
    }
}

/// Serve the entry manifest (its text) with the viewer's token in its URLs.
pub fn serve(r: &mut Request, h: &Hold, text: String) -> Status {
    let segment_s = Module::main_conf(r).and_then(|c| c.settings.as_ref()).map_or(2.0, |s| s.segment_s);
    serve_manifest(r, Some(text), &h.file, segment_s, |t| rewrite(h.format, &t, h.token.as_deref()))
}

/// A manifest of `format` with `token` in its URLs (as it is without a token).
pub fn rewrite(format: Format, text: &str, token: Option<&str>) -> String {
    match (format, token.filter(|t| !t.is_empty())) {
        (_, None) => text.to_string(),
        (Format::Hls, Some(t)) => rewrite_hls(text, t),
        (Format::Dash, Some(t)) => rewrite_mpd(text, t),
    }
}

/// Hold `h` until its manifest is ready, it fails, its time is up or its client leaves.
/// Returns the handler's return code (NGX_DONE when held).
pub fn start(r: &mut Request, mut h: Hold, hcf: &HttpMainConf) -> Status {
    if r.discards_body() {
        return Refusal::Body.send(r);
    }
    let admitted = HOLDS.with_borrow_mut(|hs| {
        hs.set_caps(hcf.hold_max, hcf.hold_per_client);
        hs.admit(&h.client)
    });
    if let Err(busy) = admitted {
        count(|f| match busy {
            Busy::Worker => f.busy_worker += 1,
            Busy::Client => f.busy_client += 1,
        });
        return Refusal::Busy(busy).send(r);
    }
    h.held = true;
    match http::hold(r, h, POLL_MS, on_hold) {
        Ok(rc) => {
            count(|f| f.held_total += 1);
            rc
        }
        Err(mut h) => {
            // Never held: its place back, not counted as closed by its client.
            h.answered = true;
            HTTPStatus::INTERNAL_SERVER_ERROR.into()
        }
    }
}

/// A held request's look every [`POLL_MS`]: its answer, or None to wait on.
fn on_hold(r: &mut Request, h: &mut Hold) -> Option<Status> {
    let rc = match step(r, h, false) {
        Step::Serve(t) => serve(r, h, t),
        Step::Fail(why) => why.send(r),
        Step::Wait if now_ms() >= h.deadline => {
            if registry::has_publisher(&h.stream) {
                Refusal::NotReady.send(r)
            } else {
                Refusal::NotLive.send(r)
            }
        }
        Step::Wait => return None,
    };
    h.answered = true;
    Some(rc)
}
