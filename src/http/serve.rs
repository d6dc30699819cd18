//! Responses of the media handler: manifests read, rewritten and sent from memory; every other
//! file sent by nginx's own static module (Range, ETag, conditional requests, sendfile,
//! `open_file_cache`); never a symlink, never outside the stream's directory.
//!
//! A manifest is opened relative to a descriptor of the stream's directory, itself opened with
//! `O_DIRECTORY | O_NOFOLLOW`; the file with `O_NOFOLLOW | O_NONBLOCK` (a FIFO planted there
//! cannot block the worker), and it must be a regular file owned by the worker's user (what
//! its ffmpeg writes). A segment is checked the same way ([`StreamDir::has`]) before nginx
//! opens it, with `disable_symlinks on` below `mesh_media_root` (a symlink swapped in after the
//! check is refused by nginx itself; it opens non-blocking and sends only regular files).
//! Names reach here validated (`mesh_core::media`): one component, no `/`.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use mesh_core::media::MediaFile;
use ngx::core::Status;
use ngx::http::{HTTPStatus, Request};

use super::refusal::Refusal;
use crate::nginx::ffi::*;
use crate::nginx::http::RequestExt;

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
    fn file(&self, name: &str) -> Option<(File, u64)> {
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
pub fn serve_manifest(
    r: &mut Request,
    text: Option<String>,
    file: &MediaFile,
    segment_s: f64,
    rewrite: impl FnOnce(&str) -> String,
) -> Status {
    match text {
        Some(t) => r.respond(HTTPStatus::OK, file.mime, &rewrite(&t), &file.cache_control(segment_s)),
        None => Refusal::NoFile.send(r),
    }
}

/// A file sent as it is on disk (a segment), by nginx's static module: after the checks of
/// [`StreamDir::has`], the type and cache policy of `file` and `NGX_DECLINED` for the content
/// phase, in a location that [`crate::nginx::http::serve_from`] set up.
pub fn serve_file(r: &mut Request, dir: Option<StreamDir>, file: &MediaFile, segment_s: f64) -> Status {
    if !dir.is_some_and(|d| d.has(&file.name)) {
        return Refusal::NoFile.send(r);
    }
    r.set_content_type(file.mime);
    r.set_header("Cache-Control", &file.cache_control(segment_s));
    Status::NGX_DECLINED
}
