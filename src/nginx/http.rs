//! HTTP requests as the layers above see them: ngx's [`Request`] with what it lacks
//! ([`RequestExt`]: the client's address and query as text, request headers by name, short
//! answers made here), and a location handed to nginx's own static module ([`serve_from`]).
//!
//! Request handlers get a raw `ngx_http_request_t` from nginx and turn it into a `&mut Request`
//! at once ([`request`]); nothing above this layer keeps the pointer.

use std::borrow::Cow;
use std::ptr::null_mut;

use ngx::core::Status;
use ngx::http::{HTTPStatus, HttpModuleLocationConf, Method, NgxHttpCoreModule, Request};

use super::ffi::*;
use super::util::str_bytes;

/// The request nginx passed to a handler.
///
/// # Safety
/// `r` is a live request, not otherwise borrowed while the result lives.
pub unsafe fn request<'a>(r: *mut ngx_http_request_t) -> &'a mut Request {
    // SAFETY: as the caller guarantees; `Request` is a transparent wrapper.
    unsafe { Request::from_ngx_http_request(r) }
}

/// What the layers above ask of a request beyond ngx's [`Request`].
pub trait RequestExt {
    /// The query string (undecoded), lossily as text: borrowed from the request when it is
    /// UTF-8.
    fn query(&self) -> Cow<'_, str>;
    /// The client's address as text (what per-client caps count and the master is told).
    fn client(&self) -> String;
    /// GET or HEAD?
    fn is_get_or_head(&self) -> bool;
    /// Is nginx discarding a request body (one was sent)?
    fn discards_body(&self) -> bool;
    /// The value of request header `name` (case-insensitive), if sent.
    fn header_in(&self, name: &[u8]) -> Option<&[u8]>;
    /// Add a response header (nothing when the pool is exhausted: the send fails then).
    fn set_header(&mut self, name: &str, value: &str);
    /// Add a response header whose name and value are constants: no copy, no allocation.
    fn set_static_header(&mut self, name: &'static str, value: &'static str);
    /// The response's Content-Type.
    fn set_content_type(&mut self, mime: &'static str);
    /// A response with a body made here.
    fn respond(&mut self, status: HTTPStatus, mime: &'static str, body: &str, cache: &str) -> Status;
    /// A short text response: the status, one line saying why, and extra headers.
    fn text(&mut self, status: HTTPStatus, why: &str, headers: &[(&str, &str)]) -> Status;
}

impl RequestExt for Request {
    fn query(&self) -> Cow<'_, str> {
        // SAFETY: the args of a live request point into its buffers (or are empty).
        text(unsafe { str_bytes(&self.as_ref().args) })
    }

    fn client(&self) -> String {
        // SAFETY: a live request has its connection, whose address text lives as long.
        String::from_utf8_lossy(unsafe { str_bytes(&(*self.connection()).addr_text) }).into_owned()
    }

    fn is_get_or_head(&self) -> bool {
        matches!(self.method(), Method::GET | Method::HEAD)
    }

    fn discards_body(&self) -> bool {
        self.as_ref().discard_body() == 1
    }

    fn header_in(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers_in_iterator()
            .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }

    fn set_header(&mut self, name: &str, value: &str) {
        let _ = self.add_header_out(name, value);
    }

    fn set_static_header(&mut self, name: &'static str, value: &'static str) {
        let s = |v: &'static str| ngx_str_t { len: v.len(), data: v.as_ptr().cast_mut() };
        // SAFETY: the response headers' list of a live request; the element it returns (from
        // the request's pool, or null when the pool is exhausted) is ours to fill. Static
        // strings outlive the request and nginx only reads them; `hash` 1 marks the header
        // set, as nginx's own headers filter adds one (output headers need no lowercase key).
        unsafe {
            let h = ngx_list_push(&mut self.as_mut().headers_out.headers).cast::<ngx_table_elt_t>();
            if h.is_null() {
                return;
            }
            *h = std::mem::zeroed();
            (*h).hash = 1;
            (*h).key = s(name);
            (*h).value = s(value);
        }
    }

    fn set_content_type(&mut self, mime: &'static str) {
        let out = &mut self.as_mut().headers_out;
        out.content_type_len = mime.len();
        // A static string outlives the request; nginx only reads it.
        out.content_type = ngx_str_t { len: mime.len(), data: mime.as_ptr().cast_mut() };
        out.content_type_lowcase = null_mut();
    }

    fn respond(&mut self, status: HTTPStatus, mime: &'static str, body: &str, cache: &str) -> Status {
        self.set_status(status);
        self.set_content_length_n(body.len());
        self.set_content_type(mime);
        self.set_header("Cache-Control", cache);
        let rc = self.send_header();
        if rc == Status::NGX_ERROR || rc.0 > NGX_OK as ngx_int_t || self.header_only() {
            return rc;
        }
        let last = self.is_main();
        // SAFETY: a buffer of the request's pool, filled within its size.
        unsafe {
            let b = ngx_create_temp_buf(self.as_ref().pool, body.len().max(1));
            if b.is_null() {
                return Status::NGX_ERROR;
            }
            std::ptr::copy_nonoverlapping(body.as_ptr(), (*b).last, body.len());
            (*b).last = (*b).last.add(body.len());
            (*b).set_last_buf(u32::from(last));
            (*b).set_last_in_chain(1);
            let mut out = ngx_chain_t { buf: b, next: null_mut() };
            self.output_filter(&mut out)
        }
    }

    fn text(&mut self, status: HTTPStatus, why: &str, headers: &[(&str, &str)]) -> Status {
        for (k, v) in headers {
            self.set_header(k, v);
        }
        self.respond(status, "text/plain", &format!("{why}\n"), "no-store")
    }
}

/// `f` with `r` and its URI path (decoded by nginx) and query (undecoded) as text, lossily:
/// borrowed from the request's buffers when they are UTF-8 (no copy, no allocation).
pub fn with_uri_args<T>(r: &mut Request, f: impl FnOnce(&mut Request, &str, &str) -> T) -> T {
    // SAFETY: a live request's uri and args point into its header buffers or its pool (or
    // are empty), not into the request struct that `f` may change through `r`; those bytes
    // stay, unchanged, until the request is freed, which is after its handler (and `f`)
    // returns. The borrows end with `f`.
    let (uri, args) = unsafe { (str_bytes(&r.as_ref().uri), str_bytes(&r.as_ref().args)) };
    let (uri, args) = (text(uri), text(args));
    f(r, &uri, &args)
}

/// Bytes of a request as text: borrowed when UTF-8 (validated at the speed of
/// `str::from_utf8`), else lossily copied.
fn text(b: &[u8]) -> Cow<'_, str> {
    std::str::from_utf8(b).map_or_else(|_| String::from_utf8_lossy(b), Cow::Borrowed)
}

/// Send `file` (opened by the caller: a regular file, `len` bytes, modified at `mtime`, unix
/// seconds; `name` for nginx's log lines) as the response, as nginx's static module sends the file it opens: status 200,
/// Content-Length, Last-Modified and ETag (so that the not-modified filter answers conditional
/// requests), ranges allowed (the range filter answers `Range`), the body from the file
/// (sendfile when on). The descriptor is closed with the request's pool. The caller has set
/// the Content-Type and discarded the request body.
pub fn send_file(r: &mut Request, file: std::fs::File, name: &str, len: u64, mtime: i64) -> Status {
    use std::os::fd::AsRawFd;
    let raw: *mut ngx_http_request_t = r.into();
    // SAFETY: a live request in its content phase; the buffer and file structs come from its
    // pool (zeroed), and the descriptor stays open, owned by the pool, until the pool goes
    // (after the output is sent or the request is freed).
    unsafe {
        let pool = (*raw).pool;
        let fd = file.as_raw_fd();
        if super::util::pool_put(pool, file).is_err() {
            return HTTPStatus::INTERNAL_SERVER_ERROR.into();
        }
        let out = &mut (*raw).headers_out;
        out.status = NGX_HTTP_OK as ngx_uint_t;
        out.content_length_n = len as off_t;
        out.last_modified_time = mtime as time_t;
        if ngx_http_set_etag(raw) != NGX_OK as ngx_int_t {
            return HTTPStatus::INTERNAL_SERVER_ERROR.into();
        }
        let main = (*raw).main == raw;
        if !main && len == 0 {
            return Status(ngx_http_send_header(raw));
        }
        (*raw).set_allow_ranges(1);
        let b = ngx_pcalloc(pool, std::mem::size_of::<ngx_buf_t>()).cast::<ngx_buf_t>();
        let f = ngx_pcalloc(pool, std::mem::size_of::<ngx_file_t>()).cast::<ngx_file_t>();
        // Its name for nginx's log lines about the file ("%s": NUL-terminated).
        let n = ngx_pnalloc(pool, name.len() + 1).cast::<u8>();
        if b.is_null() || f.is_null() || n.is_null() {
            return HTTPStatus::INTERNAL_SERVER_ERROR.into();
        }
        let rc = ngx_http_send_header(raw);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*raw).header_only() == 1 {
            return Status(rc);
        }
        std::ptr::copy_nonoverlapping(name.as_ptr(), n, name.len());
        *n.add(name.len()) = 0;
        (*f).name = ngx_str_t { len: name.len(), data: n };
        (*f).fd = fd;
        (*f).log = (*(*raw).connection).log;
        (*b).file = f;
        (*b).file_pos = 0;
        (*b).file_last = len as off_t;
        (*b).set_in_file(u32::from(len > 0));
        (*b).set_last_buf(u32::from(main));
        (*b).set_last_in_chain(1);
        let mut chain = ngx_chain_t { buf: b, next: null_mut() };
        Status(ngx_http_output_filter(raw, &mut chain))
    }
}

/// Point the location being configured at `dir` as nginx's static module reads it: a request
/// for `<location><rest>` is the file `<dir>/<rest>` (as `alias` maps it), opened without
/// following a symlink anywhere below `dir` (`disable_symlinks on from=<dir>`). The media
/// handler opens and sends its files itself ([`send_file`]); this keeps anything nginx would
/// serve from the location under the same rule.
///
/// Called while the location's confs merge (the core module's are merged by then, so these
/// values are final): the location's own `root` or `alias` is replaced. A regex location has
/// no prefix to strip: false.
///
/// # Safety
/// `cf` is the configuration being merged, its context a location's.
pub unsafe fn serve_from(cf: *mut ngx_conf_t, dir: &str) -> bool {
    // SAFETY: as the caller guarantees; the strings are copied into the configuration pool.
    unsafe {
        let Some(clcf) = NgxHttpCoreModule::location_conf_mut(&*cf) else { return false };
        if !clcf.regex.is_null() || clcf.named() == 1 {
            return false;
        }
        let dir = dir.trim_end_matches('/');
        let name = str_bytes(&clcf.name);
        // `<dir>/` for a name ending in '/' (`/hls/` + `s/f.ts`), `<dir>` for one without.
        let root = if name.ends_with(b"/") { format!("{dir}/") } else { dir.to_string() };
        let pool = (*cf).pool;
        let (Some(root), Some(from)) =
            (ngx_str_t::from_bytes(pool, root.as_bytes()), ngx_str_t::from_bytes(pool, dir.as_bytes()))
        else {
            return false;
        };
        let cv = ngx_pcalloc(pool, std::mem::size_of::<ngx_http_complex_value_t>())
            .cast::<ngx_http_complex_value_t>();
        if cv.is_null() {
            return false;
        }
        // A complex value without lengths is its constant value.
        (*cv).value = from;
        clcf.root = root;
        clcf.alias = clcf.name.len;
        clcf.root_lengths = null_mut();
        clcf.root_values = null_mut();
        clcf.disable_symlinks = NGX_DISABLE_SYMLINKS_ON as ngx_uint_t;
        clcf.disable_symlinks_from = cv;
        true
    }
}

/// Keep `r` open after its handler returns `NGX_DONE`, until it is finalized: meanwhile only its
/// client closing ends it (nginx's `ngx_http_test_reading` as its read handler, as upstream's
/// broken-connection check), and nothing runs its phases again on a write event.
fn suspend(r: &mut Request) {
    let raw: *mut ngx_http_request_t = r.into();
    // SAFETY: a live request, its main request and connection.
    unsafe {
        let main = (*raw).main;
        (*main).set_count((*main).count() + 1);
        (*raw).read_event_handler = Some(ngx_http_test_reading);
        (*raw).write_event_handler = Some(ngx_http_request_empty_handler);
        let rev = (*(*raw).connection).read;
        if (*rev).ready() == 1 {
            // Data or the end of the stream came with the request: look at it now.
            ngx_post_event(rev, std::ptr::addr_of_mut!(ngx_posted_events));
        }
    }
}

/// Answer a request [`suspend`]ed earlier with `rc`.
///
/// # Safety
/// `r` is live and suspended; it may be freed by this call.
unsafe fn finalize(r: *mut ngx_http_request_t, rc: Status) {
    // SAFETY: as the caller guarantees.
    unsafe { ngx_http_finalize_request(r, rc.0) }
}

/// A request held open with its state: [`hold`] puts them in the request's pool, with a timer.
struct Held<T> {
    r: *mut ngx_http_request_t,
    ev: PollEvent,
    period: ngx_msec_t,
    poll: fn(&mut Request, &mut T) -> Option<Status>,
    state: T,
}

/// A held request's poll timer, deleted when it goes (with the request's pool).
struct PollEvent(ngx_event_t);

impl Drop for PollEvent {
    fn drop(&mut self) {
        if self.0.timer_set() == 1 {
            // SAFETY: our timer, deleted before its memory goes.
            unsafe { ngx_del_timer(&mut self.0) };
        }
    }
}

/// Hold `r` open (see [`suspend`]) with `state` in its pool: every `period` ms, `poll` looks
/// at it and either answers (the request is finalized with that status; the state is dropped
/// with the request) or lets it wait. The client closing ends it earlier (the state dropped
/// likewise). Returns `NGX_DONE` for the handler to return, or the state back when the pool is
/// exhausted.
pub fn hold<T: 'static>(
    r: &mut Request,
    state: T,
    period: ngx_msec_t,
    poll: fn(&mut Request, &mut T) -> Option<Status>,
) -> Result<Status, T> {
    let raw: *mut ngx_http_request_t = (&mut *r).into();
    // SAFETY: an all-zero event is nginx's idle event.
    let held = Held { r: raw, ev: PollEvent(unsafe { std::mem::zeroed() }), period, poll, state };
    // SAFETY: the request's own pool: the Held (and its timer) go with the request.
    let p = unsafe { super::util::pool_put(r.as_ref().pool, held) }.map_err(|h| h.state)?;
    // SAFETY: the Held just put in the pool, at a fixed address from now on.
    unsafe {
        let ev = &mut (*p).ev.0;
        ev.handler = Some(on_held::<T>);
        ev.data = p.cast();
        ev.log = r.log();
        ngx_add_timer(ev, period);
    }
    suspend(r);
    Ok(Status::NGX_DONE)
}

unsafe extern "C" fn on_held<T>(ev: *mut ngx_event_t) {
    super::util::guard((), || {
        // SAFETY: ev.data is the Held in the request's pool; the request is alive while it
        // is suspended (we hold its count).
        unsafe {
            let h = &mut *(*ev).data.cast::<Held<T>>();
            let raw = h.r;
            match (h.poll)(request(raw), &mut h.state) {
                None => ngx_add_timer(ev, h.period),
                // The request (and the Held with it) may be gone after this.
                Some(rc) => finalize(raw, rc),
            }
        }
    })
}
