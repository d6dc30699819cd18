//! HTTP requests as the layers above see them: short answers made here, headers, the client's
//! address and query, and our module's confs of a request.
//!
//! Request handlers get a raw `ngx_http_request_t` from nginx; they hand it to these helpers
//! (each says what it needs of it) and keep it only in the request's own pool.

use std::ptr::null_mut;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ffi::*;
use super::util::str_bytes;

/// The request's URI path (decoded by nginx), lossily as text.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn uri(r: *mut ngx_http_request_t) -> String {
    // SAFETY: as the caller guarantees.
    unsafe { String::from_utf8_lossy(str_bytes(&(*r).uri)).into_owned() }
}

/// The request's query string (undecoded), lossily as text.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn query(r: *mut ngx_http_request_t) -> String {
    // SAFETY: as the caller guarantees.
    unsafe { String::from_utf8_lossy(str_bytes(&(*r).args)).into_owned() }
}

/// The client's address as text (what per-client caps count and the master is told).
///
/// # Safety
/// `r` is a live request.
pub unsafe fn client(r: *mut ngx_http_request_t) -> String {
    // SAFETY: as the caller guarantees.
    unsafe { String::from_utf8_lossy(str_bytes(&(*(*r).connection).addr_text)).into_owned() }
}

/// GET or HEAD?
///
/// # Safety
/// `r` is a live request.
pub unsafe fn is_get_or_head(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: as the caller guarantees.
    unsafe { (*r).method as u32 & (NGX_HTTP_GET | NGX_HTTP_HEAD) != 0 }
}

/// The http ctx index of the module whose confs [`confs`] reads (set at configuration).
static CTX_INDEX: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Record the module's http ctx index.
pub fn set_ctx_index(i: usize) {
    CTX_INDEX.store(i, Ordering::Relaxed);
}

/// Our module's main and location confs of a request.
///
/// # Safety
/// `r` is a live request; `M` and `L` are the module's main and location conf types.
pub unsafe fn confs<'a, M, L>(r: *mut ngx_http_request_t) -> (&'a M, &'a L) {
    let i = CTX_INDEX.load(Ordering::Relaxed);
    // SAFETY: the module's slots in the request's conf arrays hold its confs.
    unsafe { (&*(*(*r).main_conf.add(i)).cast::<M>(), &*(*(*r).loc_conf.add(i)).cast::<L>()) }
}

/// A short text response: the status, one line saying why, and extra headers.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn text(
    r: *mut ngx_http_request_t,
    status: u32,
    why: &str,
    headers: &[(&str, &str)],
) -> ngx_int_t {
    // SAFETY: as the caller guarantees.
    unsafe {
        for (k, v) in headers {
            set_header(r, k, v);
        }
        respond(r, status, "text/plain", &format!("{why}\n"), "no-store")
    }
}

/// A response with a body made here.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn respond(
    r: *mut ngx_http_request_t,
    status: u32,
    mime: &'static str,
    body: &str,
    cache: &str,
) -> ngx_int_t {
    // SAFETY: live request; the body is copied into its pool.
    unsafe {
        (*r).headers_out.status = status as ngx_uint_t;
        (*r).headers_out.content_length_n = body.len() as off_t;
        set_content_type(r, mime);
        set_header(r, "Cache-Control", cache);
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() == 1 {
            return rc;
        }
        let b = ngx_create_temp_buf((*r).pool, body.len().max(1));
        if b.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        std::ptr::copy_nonoverlapping(body.as_ptr(), (*b).last, body.len());
        (*b).last = (*b).last.add(body.len());
        (*b).set_last_buf(if (*r).main == r { 1 } else { 0 });
        (*b).set_last_in_chain(1);
        let mut out = ngx_chain_t { buf: b, next: null_mut() };
        ngx_http_output_filter(r, &mut out)
    }
}

/// # Safety
/// `r` is a live request.
pub unsafe fn set_content_type(r: *mut ngx_http_request_t, mime: &'static str) {
    // SAFETY: a static string outlives the request.
    unsafe {
        (*r).headers_out.content_type_len = mime.len();
        (*r).headers_out.content_type = ngx_str_t { len: mime.len(), data: mime.as_ptr().cast_mut() };
        (*r).headers_out.content_type_lowcase = null_mut();
    }
}

/// Add a response header.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn set_header(r: *mut ngx_http_request_t, name: &str, value: &str) {
    // SAFETY: live request; strings copied into its pool.
    unsafe {
        let h = ngx_list_push(&mut (*r).headers_out.headers).cast::<ngx_table_elt_t>();
        if h.is_null() {
            return;
        }
        let pool = (*r).pool;
        (*h).hash = 1;
        (*h).key = ngx_str_t::from_bytes(pool, name.as_bytes()).unwrap_or(ngx_str_t::empty());
        (*h).value = ngx_str_t::from_bytes(pool, value.as_bytes()).unwrap_or(ngx_str_t::empty());
        (*h).lowcase_key = null_mut();
    }
}

/// The value of request header `name` (case-insensitive), if sent.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn header_in<'a>(r: *mut ngx_http_request_t, name: &[u8]) -> Option<&'a [u8]> {
    // SAFETY: the request's header list, its parts and elements are in its pool.
    unsafe {
        let mut part: *const ngx_list_part_t = &(*r).headers_in.headers.part;
        while !part.is_null() {
            let elts = (*part).elts.cast::<ngx_table_elt_t>();
            for i in 0..(*part).nelts {
                let e = &*elts.add(i);
                if str_bytes(&e.key).eq_ignore_ascii_case(name) {
                    return Some(str_bytes(&e.value));
                }
            }
            part = (*part).next;
        }
        None
    }
}
