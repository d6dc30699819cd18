//! The `mesh_media` handler: every request — entry manifest, media playlist, init or media
//! segment — needs a viewer token good for its stream now ([`super::token::check`]); without
//! one: 401, with a bad, expired or foreign one: 403, and nothing starts or keeps a transcode.
//! Under a master, a playlist or segment whose token has no cached answer is a 503 (asked now,
//! never held), so that the player's retry finds it.
//!
//! An entry manifest (`<location><stream>/master.m3u8`, `.../manifest.mpd`) starts the transcode
//! (or asks the master for a route, or for the token's answer) and is held until it exists
//! ([`super::hold`]). Media playlists are read and rewritten on every request (they change every
//! segment); segments are sent from disk. Every manifest served carries the viewer's token in its
//! URLs, so a player needs only the entry URL.

use mesh_core::manifest::query_token;
use mesh_core::media::{parse_media_path, Cache, MediaError};

use super::hold::{self, Hold, Step};
use super::serve::{serve_file, serve_manifest, StreamDir};
use super::token::{self, Check};
use super::{confs, cors};
use crate::nginx::ffi::*;
use crate::nginx::http::{self, text};
use crate::nginx::util::guard;
use crate::transcode;

pub unsafe extern "C" fn media_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls us with a live request in its content phase.
        unsafe {
            if !http::is_get_or_head(r) {
                return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
            }
            let rc = ngx_http_discard_request_body(r);
            if rc != NGX_OK as ngx_int_t {
                return rc;
            }
            let (hcf, lcf) = confs(r);
            let (Some(settings), Some(format)) = (&hcf.settings, lcf.format) else {
                return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
            };
            cors::apply(r, lcf.origins.as_deref());
            let uri = http::uri(r);
            let (stream, file) = match parse_media_path(&lcf.prefix, &uri, format) {
                Ok((s, f)) => (s.to_string(), f),
                Err(e) => return text(r, NGX_HTTP_NOT_FOUND, &e.to_string(), &[]),
            };
            let query = http::query(r);
            let token = query_token(&query);
            if file.entry {
                let h = Hold::new(r, stream, file, format, token);
                return match hold::step(&h, true) {
                    Step::Serve(t) => hold::serve(&h, t),
                    Step::Fail(status, why) => refuse(r, status, &why),
                    Step::Wait => hold::start(h, hcf),
                };
            }
            // Playlists and segments: a good token, then only from a running transcode (which
            // they keep wanted).
            let node = crate::conf::current_node();
            let now = crate::nginx::util::now();
            let check = token::check(&node, &stream, token.as_deref(), now);
            match &check {
                Check::Good { .. } => {}
                Check::Missing => return refuse(r, NGX_HTTP_UNAUTHORIZED, "no token"),
                Check::Refused(why) => return refuse(r, NGX_HTTP_FORBIDDEN, why),
                Check::NotServed => {
                    return text(r, NGX_HTTP_NOT_FOUND, &MediaError::UnknownFile.to_string(), &[])
                }
                Check::Unknown if token.as_deref().is_none_or(str::is_empty) => {
                    return refuse(r, NGX_HTTP_UNAUTHORIZED, "no token")
                }
                // No answer (never asked, or pushed out of a full cache by others' answers):
                // asked now, not held; 503 so that players retry (they give up on a 4xx), and
                // the retry finds the answer.
                Check::Unknown => {
                    token::ask(&node, &stream, token.as_deref(), client(r));
                    return refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE, "no answer for this token yet");
                }
            }
            if !node.role.serves_viewers() || !transcode::exists(&stream) {
                return text(r, NGX_HTTP_NOT_FOUND, &MediaError::UnknownFile.to_string(), &[]);
            }
            token::refresh(&node, &stream, token.as_deref(), &check, now, || client(r));
            transcode::touch(&stream);
            match file.cache {
                Cache::Manifest => {
                    let text = StreamDir::open(&settings.root, &stream).and_then(|d| d.read(&file.name));
                    serve_manifest(r, text, &file, settings.segment_s, |t| {
                        hold::rewrite(format, t, token.as_deref())
                    })
                }
                Cache::Segment => serve_file(r, &settings.root, &stream, &file, settings.segment_s),
            }
        }
    })
}

/// The client's address, as the master is told.
///
/// # Safety
/// `r` is live.
unsafe fn client(r: *mut ngx_http_request_t) -> String {
    // SAFETY: as the caller guarantees.
    unsafe { http::client(r) }
}

/// A refusal: 401 says how to authenticate.
///
/// # Safety
/// `r` is live.
unsafe fn refuse(r: *mut ngx_http_request_t, status: u32, why: &str) -> ngx_int_t {
    // SAFETY: as the caller guarantees.
    unsafe {
        match status {
            NGX_HTTP_UNAUTHORIZED => text(r, status, why, &[("WWW-Authenticate", "Bearer realm=\"media\"")]),
            NGX_HTTP_SERVICE_UNAVAILABLE => text(r, status, why, &[("Retry-After", "2")]),
            _ => text(r, status, why, &[]),
        }
    }
}
