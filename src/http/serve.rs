//! Responses of the media handler: manifests read, rewritten and sent from memory; every other
//! file sent from the descriptor opened here as nginx's static module sends a file (Range,
//! ETag, conditional requests, sendfile: [`crate::nginx::http::send_file`]); never a symlink,
//! never outside the stream's directory.
//!
//! A request's file is opened once ([`open`]), relative to the worker's descriptor of
//! `mesh_media_root`, in one `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (no
//! symlink on the way, none swapped in later: the file sent is the one checked), `O_NOFOLLOW |
//! O_NONBLOCK` (a FIFO planted there cannot block the worker); where `openat2` is not allowed,
//! the stream's directory with `O_DIRECTORY | O_NOFOLLOW`, then the file in it. It must be a
//! regular file owned by the worker's user (what its ffmpeg writes). That is as many system
//! calls as a plain `root` location makes for a file (open, fstat, close).
//! Names reach here validated (`mesh_core::media`): one component, no `/`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use mesh_core::media::MediaFile;
use ngx::core::Status;
use ngx::http::{HTTPStatus, Request};

use super::refusal::Refusal;
use crate::nginx::ffi::*;
use crate::nginx::http::RequestExt;

/// Largest manifest read into memory.
const MAX_MANIFEST: u64 = 1 << 20;

/// A media file opened for a request ([`open`]): a regular file of ours, its length and mtime.
pub struct Opened {
    file: File,
    len: u64,
    mtime: i64,
    /// Which version of the file this is: device, inode, size, mtime (s, ns).
    pub version: (u64, u64, u64, i64, i64),
}

impl Opened {
    /// Its text, for a manifest (at most [`MAX_MANIFEST`] bytes), in one read.
    pub fn text(self) -> Option<String> {
        if self.len > MAX_MANIFEST {
            return None;
        }
        let mut s = String::with_capacity(self.len as usize);
        self.file.take(self.len).read_to_string(&mut s).ok()?;
        Some(s)
    }
}

thread_local! {
    /// The worker's descriptor of `mesh_media_root` (opened at its first request), and the path.
    static ROOT: RefCell<Option<(PathBuf, File)>> = const { RefCell::new(None) };
}

/// `openat2` refused here (seccomp, an old kernel): the two-step open from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// The worker's user: what its files must be owned by.
fn euid() -> u32 {
    static EUID: OnceLock<u32> = OnceLock::new();
    // SAFETY: geteuid has no preconditions.
    *EUID.get_or_init(|| unsafe { geteuid() })
}

/// `<root>/<stream>/<name>` as described above, or None (absent, a symlink on the way, not a
/// regular file of ours).
pub fn open(root: &Path, stream: &str, name: &str) -> Option<Opened> {
    let file = ROOT.with_borrow_mut(|slot| {
        for _ in 0..2 {
            if slot.as_ref().is_none_or(|(p, _)| p != root) {
                let d = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags((O_DIRECTORY | O_CLOEXEC) as i32)
                    .open(root)
                    .ok()?;
                *slot = Some((root.to_path_buf(), d));
            }
            let (_, dir) = slot.as_ref()?;
            match open_beneath(dir, stream, name) {
                Ok(f) => return Some(f),
                // The root was removed (and perhaps made again): look it up anew, once.
                Err(e)
                    if e.raw_os_error() == Some(ENOENT as i32)
                        && dir.metadata().is_ok_and(|m| m.nlink() == 0) =>
                {
                    *slot = None
                }
                Err(_) => return None,
            }
        }
        None
    })?;
    let m = file.metadata().ok()?;
    let version = (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec());
    (m.is_file() && m.uid() == euid()).then(|| Opened { file, len: m.len(), mtime: m.mtime(), version })
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
const FILE_FLAGS: u32 = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;

/// Longest `<stream>/<name>` opened (a stream id and a file name are far shorter).
const PATH_MAX: usize = 256;

/// `<stream>/<name>\0` in `buf`: the C string for `openat2`.
fn beneath_path<'b>(buf: &'b mut [u8; PATH_MAX], stream: &str, name: &str) -> io::Result<&'b CStr> {
    let (s, n) = (stream.as_bytes(), name.as_bytes());
    let len = s.len() + 1 + n.len();
    if len >= PATH_MAX {
        return Err(io::Error::from_raw_os_error(ENAMETOOLONG as i32));
    }
    buf[..s.len()].copy_from_slice(s);
    buf[s.len()] = b'/';
    buf[s.len() + 1..len].copy_from_slice(n);
    buf[len] = 0;
    CStr::from_bytes_with_nul(&buf[..=len]).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `stream/name` below `dir`, through no symlink.
fn open_beneath(dir: &File, stream: &str, name: &str) -> io::Result<File> {
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        // `<stream>/<name>` NUL-terminated, on the stack (no allocation per request).
        let mut buf = [0u8; PATH_MAX];
        let path = beneath_path(&mut buf, stream, name)?;
        let how = OpenHow {
            flags: u64::from(FILE_FLAGS),
            mode: 0,
            resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: a live directory descriptor, a NUL-terminated path and an open_how of the
        // size passed; the kernel only reads them.
        let fd = unsafe {
            syscall(
                SYS_openat2 as std::ffi::c_long,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a descriptor we just opened and own.
            return Ok(unsafe { File::from_raw_fd(fd as i32) });
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(n) if n == ENOSYS as i32 || n == EPERM as i32) {
            return Err(e);
        }
        NO_OPENAT2.store(true, Ordering::Relaxed);
    }
    let sd = openat_file(dir, stream, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)?;
    openat_file(&sd, name, FILE_FLAGS)
}

/// openat(2) of one component.
fn openat_file(dir: &File, name: &str, flags: u32) -> io::Result<File> {
    let cname = CString::new(name)?;
    // SAFETY: a live directory descriptor and a NUL-terminated name.
    let fd = unsafe { openat(dir.as_raw_fd(), cname.as_ptr(), flags as i32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

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
    file: &MediaFile<'_>,
    segment_s: f64,
    rewrite: impl FnOnce(String) -> String,
) -> Status {
    match text {
        Some(t) => r.respond(HTTPStatus::OK, file.mime, &rewrite(t), &file.cache_control(segment_s)),
        None => Refusal::NoFile.send(r),
    }
}

/// A file sent as it is on disk (a segment), [`open`]ed: with the type and cache policy of
/// `file`, as nginx's static module sends a file.
pub fn serve_file(r: &mut Request, opened: Option<Opened>, file: &MediaFile<'_>, segment_s: f64) -> Status {
    let Some(o) = opened else { return Refusal::NoFile.send(r) };
    r.set_content_type(file.mime);
    match file.cache_control(segment_s) {
        Cow::Borrowed(v) => r.set_static_header("Cache-Control", v),
        Cow::Owned(v) => r.set_header("Cache-Control", &v),
    }
    crate::nginx::http::send_file(r, o.file, &file.name, o.len, o.mtime)
}
