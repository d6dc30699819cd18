//! The `mesh_media` handler: every request — entry manifest, media playlist, init or media
//! segment — needs a viewer token good for its stream now ([`super::token::check`]); without
//! one: 401, with a bad, expired or foreign one: 403, and nothing starts or keeps a transcode.
//! Under a master, a playlist or segment whose token has no cached answer is a 503 (asked now,
//! never held), so that the player's retry finds it.
//!
//! An entry manifest (`<location><stream>/master.m3u8`, `.../manifest.mpd`) starts the transcode
//! (or asks the master for a route, or for the token's answer) and is held until it exists
//! ([`super::hold`]). Media playlists are rewritten once per version of the file and copied
//! with each viewer's token ([`super::playlist`]); segments are sent from the descriptor the handler opened, as nginx's static module sends a
//! file ([`super::serve::serve_file`]). Every manifest served carries the viewer's token in its URLs,
//! so a player needs only the entry URL.

use mesh_core::manifest::query_token_ref;
use mesh_core::media::{parse_media_path, Cache, Format, MediaFile};
use ngx::core::Status;
use ngx::http::{HTTPStatus, HttpModuleLocationConf, HttpModuleMainConf, Request};

use super::hold::{self, Hold, Step};
use super::playlist;
use super::refusal::Refusal;
use super::serve::{self, serve_file, serve_manifest};
use super::token::{self, Check};
use super::{cors, HttpMainConf, Module};
use crate::nginx::ffi::*;
use crate::nginx::http::{request, with_uri_args, RequestExt};
use crate::nginx::util::guard;
use crate::transcode;

pub unsafe extern "C" fn media_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls us with a live request in its content phase.
        handle(unsafe { request(r) }).0
    })
}

fn handle(r: &mut Request) -> Status {
    if !r.is_get_or_head() {
        return HTTPStatus::NOT_ALLOWED.into();
    }
    let rc = r.discard_request_body();
    if !rc.is_ok() {
        return rc;
    }
    let (Some(hcf), Some(lcf)) = (Module::main_conf(r), Module::location_conf(r)) else {
        return HTTPStatus::INTERNAL_SERVER_ERROR.into();
    };
    let (Some(settings), Some(format)) = (&hcf.settings, lcf.format) else {
        return HTTPStatus::INTERNAL_SERVER_ERROR.into();
    };
    cors::apply(r, lcf.origins.as_deref());
    // The path and query borrowed from the request (copied only for an entry manifest, which
    // may be held): a segment's request allocates nothing on its way to the file.
    with_uri_args(r, |r, uri, query| {
        let (stream, file) = match parse_media_path(&lcf.prefix, uri, format) {
            Ok(p) => p,
            Err(e) => return Refusal::Path(e).send(r),
        };
        let token = query_token_ref(query);
        serve(r, hcf, settings, format, stream, file, token.as_deref())
    })
}

/// A request for `file` of `stream` with `token` (from its query), the path checked.
fn serve(
    r: &mut Request,
    hcf: &HttpMainConf,
    settings: &transcode::Settings,
    format: Format,
    stream: &str,
    file: MediaFile<'_>,
    token: Option<&str>,
) -> Status {
    if file.entry {
        let token = token.map(str::to_string);
        let h = Hold::new(r, stream.to_string(), file.into_owned(), format, token, hcf.wait);
        return match hold::step(r, &h, true) {
            Step::Serve(t) => hold::serve(r, &h, t),
            Step::Fail(why) => why.send(r),
            Step::Wait => hold::start(r, h, hcf),
        };
    }
    // Playlists and segments: a good token, then only from a running transcode (which they
    // keep wanted).
    let node = crate::conf::current_node();
    let now = crate::nginx::util::now();
    let check = token::check(&node, stream, token, now);
    match &check {
        Check::Good { .. } => {}
        Check::Missing => return Refusal::NoToken.send(r),
        Check::Refused(why) => return Refusal::Token(why.clone()).send(r),
        Check::NotServed => return Refusal::NoFile.send(r),
        Check::Unknown if token.is_none_or(str::is_empty) => return Refusal::NoToken.send(r),
        // No answer (never asked, or pushed out of a full cache by others' answers): asked
        // now, not held; 503 so that players retry (they give up on a 4xx), and the retry
        // finds the answer.
        Check::Unknown => {
            token::ask(&node, stream, token, r.client());
            return Refusal::NoAnswer.send(r);
        }
    }
    if !node.role.serves_viewers() || !transcode::exists(stream) {
        return Refusal::NoFile.send(r);
    }
    token::refresh(&node, stream, token, &check, now, || r.client());
    transcode::touch(stream);
    let opened = serve::open(&settings.root, stream, &file.name);
    match file.cache {
        // An HLS playlist for a token: from the template of its version (`super::playlist`).
        Cache::Manifest => match (format, token.filter(|t| !t.is_empty())) {
            (Format::Hls, Some(t)) => {
                let text = opened.and_then(|o| playlist::rewritten(stream, &file.name, o, t));
                serve_manifest(r, text, &file, settings.segment_s, |t| t)
            }
            _ => {
                let text = opened.and_then(serve::Opened::text);
                serve_manifest(r, text, &file, settings.segment_s, |t| hold::rewrite(format, &t, token))
            }
        },
        Cache::Segment => serve_file(r, opened, &file, settings.segment_s),
    }
}
