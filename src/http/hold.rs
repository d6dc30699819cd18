//! Entry-manifest requests held until the manifest exists: on an nginx timer (never a blocking
//! wait), at most `mesh_manifest_wait`, bounded per worker (`mesh_manifest_wait_max`) and per
//! client address (`mesh_manifest_wait_per_client`; over either: 503 with `Retry-After`). A held
//! request ends when its client closes (nginx's `ngx_http_test_reading` as the read handler,
//! as upstream's broken-connection check), and only streams that are live here or may come are
//! held: a stream neither published here nor routable is a 404 at once, and so is one the
//! master says it does not know.
//!
//! The held request's state lives in its own pool (dropped with the request, which deletes its
//! timer and gives its place back); nothing outside the request points at it.

use std::cell::{Cell, RefCell};
use std::ptr::addr_of_mut;

use mesh_core::hold::{Holds, DEFAULT_HOLD_MAX, DEFAULT_HOLD_PER_CLIENT};
use mesh_core::manifest::{rewrite_hls, rewrite_mpd};
use mesh_core::media::{Format, MediaFile};

use super::serve::{serve_manifest, StreamDir};
use super::token::{self, Check};
use super::{confs, HttpMainConf};
use crate::nginx::ffi::*;
use crate::nginx::http::text;
use crate::nginx::util::{exiting, guard, pool_new};
use crate::registry;
use crate::route::{self, Standing};
use crate::transcode::{self, State};

const POLL_MS: ngx_msec_t = 100;
/// `Retry-After` of a refusal for being busy, in seconds.
const RETRY_AFTER_S: &str = "2";

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
    Fail(u32, String),
}

/// An entry-manifest request, while it is looked at and while it is held.
pub struct Hold {
    pub r: *mut ngx_http_request_t,
    pub stream: String,
    pub file: MediaFile,
    pub format: Format,
    pub token: Option<String>,
    pub client: String,
    pub deadline: ngx_msec_t,
    ev: ngx_event_t,
    /// Counted in HOLDS (given back on drop).
    held: bool,
    /// Answered by us (not ended by its client).
    answered: bool,
}

impl Hold {
    /// # Safety
    /// `r` is live.
    pub unsafe fn new(
        r: *mut ngx_http_request_t,
        stream: String,
        file: MediaFile,
        format: Format,
        token: Option<String>,
    ) -> Hold {
        // SAFETY: as the caller guarantees.
        unsafe {
            let client = crate::nginx::http::client(r);
            let (hcf, _) = confs(r);
            Hold {
                r,
                stream,
                file,
                format,
                token,
                client,
                deadline: ngx_current_msec + hcf.wait,
                ev: std::mem::zeroed(),
                held: false,
                answered: false,
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.ev.timer_set() == 1 {
            // SAFETY: our timer, deleted before its memory goes.
            unsafe { ngx_del_timer(&mut self.ev) };
        }
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
///
/// # Safety
/// `h.r` is live.
pub unsafe fn step(h: &Hold, first: bool) -> Step {
    // SAFETY: live request.
    unsafe {
        let (hcf, _) = confs(h.r);
        let Some(settings) = &hcf.settings else {
            return Step::Fail(NGX_HTTP_INTERNAL_SERVER_ERROR, "no settings".into());
        };
        // A worker shutting down starts nothing and holds nobody: nginx waits for held
        // requests before it exits.
        if exiting() {
            return Step::Fail(NGX_HTTP_SERVICE_UNAVAILABLE, "node shutting down".into());
        }
        let node = crate::conf::current_node();
        if !node.role.serves_viewers() {
            return Step::Fail(NGX_HTTP_NOT_FOUND, format!("streams are not served by a {} node", node.role));
        }
        match token::check(&node, &h.stream, h.token.as_deref(), crate::nginx::util::now()) {
            Check::Good { .. } => {}
            Check::Missing => return Step::Fail(NGX_HTTP_UNAUTHORIZED, "no token".into()),
            Check::Refused(why) => return Step::Fail(NGX_HTTP_FORBIDDEN, why),
            Check::NotServed => {
                return Step::Fail(
                    NGX_HTTP_NOT_FOUND,
                    format!("streams are not served by a {} node", node.role),
                )
            }
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
            Standing::NotRoutable => return Step::Fail(NGX_HTTP_NOT_FOUND, "stream not live here".into()),
            Standing::Unknown => {
                return Step::Fail(NGX_HTTP_NOT_FOUND, "stream not live here (unknown to the master)".into())
            }
            Standing::Denied => {
                return Step::Fail(NGX_HTTP_NOT_FOUND, "stream not live here (not routed here)".into())
            }
            Standing::Failed => {
                return Step::Fail(NGX_HTTP_SERVICE_UNAVAILABLE, "route request failed".into())
            }
        }
        match transcode::want(settings, &h.stream, &node.node_id) {
            State::Failed(why) => {
                Step::Fail(NGX_HTTP_SERVICE_UNAVAILABLE, format!("transcoder unavailable: {why}"))
            }
            _ => match entry_ready(&settings.root, &h.stream, &h.file.name) {
                Some(text) => Step::Serve(text),
                None => Step::Wait,
            },
        }
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
///
/// # Safety
/// `h.r` is live.
pub unsafe fn serve(h: &Hold, text: String) -> ngx_int_t {
    // SAFETY: live request.
    unsafe {
        let (hcf, _) = confs(h.r);
        let segment_s = hcf.settings.as_ref().map_or(2.0, |s| s.segment_s);
        serve_manifest(h.r, Some(text), &h.file, segment_s, |t| rewrite(h.format, t, h.token.as_deref()))
    }
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
///
/// # Safety
/// `h.r` is live, in its content handler.
pub unsafe fn start(h: Hold, hcf: &HttpMainConf) -> ngx_int_t {
    // SAFETY: live request.
    unsafe {
        let r = h.r;
        if (*r).discard_body() == 1 {
            return text(r, NGX_HTTP_BAD_REQUEST, "a request body is not allowed", &[]);
        }
        let admitted = HOLDS.with_borrow_mut(|hs| {
            hs.set_caps(hcf.hold_max, hcf.hold_per_client);
            hs.admit(&h.client)
        });
        if let Err(busy) = admitted {
            count(|f| match busy {
                mesh_core::hold::Busy::Worker => f.busy_worker += 1,
                mesh_core::hold::Busy::Client => f.busy_client += 1,
            });
            return text(
                r,
                NGX_HTTP_SERVICE_UNAVAILABLE,
                &busy.to_string(),
                &[("Retry-After", RETRY_AFTER_S)],
            );
        }
        let client = h.client.clone();
        let p = pool_new((*r).pool, h);
        if p.is_null() {
            HOLDS.with_borrow_mut(|hs| hs.release(&client));
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        count(|f| f.held_total += 1);
        (*p).held = true;
        (*p).ev.handler = Some(on_hold);
        (*p).ev.data = p.cast();
        (*p).ev.log = (*(*r).connection).log;
        ngx_add_timer(&mut (*p).ev, POLL_MS);
        let main = (*r).main;
        (*main).set_count((*main).count() + 1);
        // The client closing ends the request (and drops the Hold with its pool); nothing
        // runs the phases again on a write event meanwhile.
        (*r).read_event_handler = Some(ngx_http_test_reading);
        (*r).write_event_handler = Some(ngx_http_request_empty_handler);
        let rev = (*(*r).connection).read;
        if (*rev).ready() == 1 {
            // Data or the end of the stream came with the request: look at it now.
            ngx_post_event(rev, addr_of_mut!(ngx_posted_events));
        }
        NGX_DONE as ngx_int_t
    }
}

unsafe extern "C" fn on_hold(ev: *mut ngx_event_t) {
    guard((), || {
        // SAFETY: ev.data is the Hold in the request's pool; the request is alive while we
        // hold its count.
        unsafe {
            let h = &mut *(*ev).data.cast::<Hold>();
            let r = h.r;
            let rc = match step(h, false) {
                Step::Serve(t) => serve(h, t),
                Step::Fail(status, why) => text(r, status, &why, &[]),
                Step::Wait if ngx_current_msec >= h.deadline => {
                    if registry::has_publisher(&h.stream) {
                        text(r, NGX_HTTP_GATEWAY_TIME_OUT, "manifest not ready", &[])
                    } else {
                        text(r, NGX_HTTP_NOT_FOUND, "stream not live here", &[])
                    }
                }
                Step::Wait => {
                    ngx_add_timer(ev, POLL_MS);
                    return;
                }
            };
            h.answered = true;
            // The request (and this Hold with it) may be gone after this.
            ngx_http_finalize_request(r, rc);
        }
    })
}
