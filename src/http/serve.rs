//! Responses of the media handler: media files from a stream's directory, opened without
//! following any symlink and never outside that directory, segments sent from disk as nginx's
//! static files are (sendfile), manifests read, rewritten and sent from memory, and short text
//! answers.
//!
//! A file is opened relative to a descriptor of the stream's directory, itself opened with
//! `O_DIRECTORY | O_NOFOLLOW`; the file with `O_NOFOLLOW | O_NONBLOCK` (a FIFO planted there
//! cannot block the worker), and it must be a regular file owned by the worker's user (what
//! its ffmpeg writes). Names reach here validated (`mesh_core::media`): one component, no `/`.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::null_mut;

use mesh_core::media::MediaFile;

use crate::nginx::ffi::*;
use crate::nginx::http::{respond, set_content_type, set_header, text};

/// Largest manifest read into memory.
const MAX_MANIFEST: u64 = 1 << 20;

/// A stream's directory, opened once for a request.
pub struct StreamDir {
    dir: File,
    uid: u32,
}

impl StreamDir {
    /// `root/stream`, when it is a directory (not a symlink).
    pub fn open(root: &Path, stream: &str) -> Option<StreamDir> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((O_DIRECTORY | O_NOFOLLOW) as i32)
            .open(root.join(stream))
            .ok()?;
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { geteuid() };
        Some(StreamDir { dir, uid })
    }

    /// `name` in it, as described above, with its length.
    pub fn file(&self, name: &str) -> Option<(File, u64)> {
        let cname = CString::new(name).ok()?;
        // SAFETY: a live directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            openat(
                self.dir.as_raw_fd(),
                cname.as_ptr(),
                (O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) as i32,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: a descriptor we just opened and own.
        let f = unsafe { File::from_raw_fd(fd) };
        let m = f.metadata().ok()?;
        (m.is_file() && m.uid() == self.uid).then_some((f, m.len()))
    }

    /// Is `name` there, a regular file of ours (not a symlink)?
    pub fn has(&self, name: &str) -> bool {
        let Ok(cname) = CString::new(name) else { return false };
        // SAFETY: a zeroed stat is a valid out-buffer; a live descriptor and a NUL-terminated
        // name.
        unsafe {
            let mut st: stat = std::mem::zeroed();
            fstatat(self.dir.as_raw_fd(), cname.as_ptr(), &mut st, AT_SYMLINK_NOFOLLOW as i32) == 0
                && st.st_mode & S_IFMT == S_IFREG
                && st.st_uid == self.uid
        }
    }

    /// A manifest's text.
    pub fn read(&self, name: &str) -> Option<String> {
        let (f, len) = self.file(name)?;
        if len > MAX_MANIFEST {
            return None;
        }
        let mut s = String::with_capacity(len as usize);
        f.take(MAX_MANIFEST).read_to_string(&mut s).ok()?;
        Some(s)
    }
}

/// A manifest's text, passed through `rewrite` (the viewer's token into its URLs).
///
/// # Safety
/// `r` is live.
pub unsafe fn serve_manifest(
    r: *mut ngx_http_request_t,
    text: Option<String>,
    file: &MediaFile,
    segment_s: f64,
    rewrite: impl FnOnce(&str) -> String,
) -> ngx_int_t {
    // SAFETY: live request.
    unsafe {
        match text {
            Some(t) => respond(r, NGX_HTTP_OK, file.mime, &rewrite(&t), &file.cache_control(segment_s)),
            None => crate::nginx::http::text(r, NGX_HTTP_NOT_FOUND, "no such media file", &[]),
        }
    }
}

/// A segment with its type and cache policy, from disk as nginx's static files are.
///
/// # Safety
/// `r` is live.
pub unsafe fn serve_file(
    r: *mut ngx_http_request_t,
    root: &Path,
    stream: &str,
    file: &MediaFile,
    segment_s: f64,
) -> ngx_int_t {
    let Some((f, len)) = StreamDir::open(root, stream).and_then(|d| d.file(&file.name)) else {
        // SAFETY: live request.
        return unsafe { text(r, NGX_HTTP_NOT_FOUND, "no such media file", &[]) };
    };
    let path = root.join(stream).join(&file.name);
    // SAFETY: live request; the descriptor is handed to a pool cleanup that closes it.
    unsafe {
        let pool = (*r).pool;
        let cln = ngx_pool_cleanup_add(pool, std::mem::size_of::<ngx_pool_cleanup_file_t>());
        if cln.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        let fd = f.into_raw_fd();
        let name =
            ngx_str_t::from_bytes(pool, path.as_os_str().as_encoded_bytes()).unwrap_or(ngx_str_t::empty());
        let cf = (*cln).data.cast::<ngx_pool_cleanup_file_t>();
        (*cf).fd = fd;
        (*cf).name = name.data;
        (*cf).log = (*(*r).connection).log;
        (*cln).handler = Some(ngx_pool_cleanup_file);

        (*r).headers_out.status = NGX_HTTP_OK as ngx_uint_t;
        (*r).headers_out.content_length_n = len as off_t;
        set_content_type(r, file.mime);
        set_header(r, "Cache-Control", &file.cache_control(segment_s));
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() == 1 {
            return rc;
        }
        let b = ngx_pcalloc(pool, std::mem::size_of::<ngx_buf_t>()).cast::<ngx_buf_t>();
        let nf = ngx_pcalloc(pool, std::mem::size_of::<ngx_file_t>()).cast::<ngx_file_t>();
        if b.is_null() || nf.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        (*nf).fd = fd;
        (*nf).name = name;
        (*nf).log = (*(*r).connection).log;
        (*b).file = nf;
        (*b).file_pos = 0;
        (*b).file_last = len as off_t;
        (*b).set_in_file(if len > 0 { 1 } else { 0 });
        (*b).set_last_buf(if (*r).main == r { 1 } else { 0 });
        (*b).set_last_in_chain(1);
        let mut out = ngx_chain_t { buf: b, next: null_mut() };
        ngx_http_output_filter(r, &mut out)
    }
}
