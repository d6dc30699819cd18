//! Media playlists rewritten once per version of the file, not once per request: the worker
//! keeps, per playlist (`<stream>/<name>`), the [`HlsTemplate`] of the version it last read
//! (known by device, inode, size and mtime: ffmpeg replaces a playlist by a rename, or rewrites
//! it with a new size or time), and makes each viewer's copy from it with the viewer's token.
//! A request still opens and checks the file ([`super::serve::open`]); only the read and the
//! rewrite are saved. Bounded: [`MAX`] playlists, [`MAX_BYTES`] of templates; past either, all
//! are forgotten.

use std::cell::RefCell;
use std::collections::HashMap;

use mesh_core::manifest::rewrite_hls;
use mesh_core::template::HlsTemplate;

use super::serve::Opened;

/// Most playlists remembered per worker.
pub const MAX: usize = 256;
/// Most bytes of templates remembered per worker.
pub const MAX_BYTES: usize = 8 << 20;

type Version = (u64, u64, u64, i64, i64);

#[derive(Default)]
struct Templates {
    map: HashMap<String, (Version, HlsTemplate)>,
    bytes: usize,
}

thread_local! {
    static TEMPLATES: RefCell<Templates> = RefCell::new(Templates::default());
}

/// The HLS playlist `name` of `stream`, `opened`, rewritten for `token` (decoded, non-empty).
pub fn rewritten(stream: &str, name: &str, opened: Opened, token: &str) -> Option<String> {
    let key = format!("{stream}/{name}");
    let version = opened.version;
    let hit = TEMPLATES.with_borrow(|t| match t.map.get(&key) {
        Some((v, tpl)) if *v == version => Some(tpl.apply(token)),
        _ => None,
    });
    if hit.is_some() {
        return hit;
    }
    let text = opened.text()?;
    let Some(tpl) = HlsTemplate::new(&text) else { return Some(rewrite_hls(&text, token)) };
    let out = tpl.apply(token);
    TEMPLATES.with_borrow_mut(|t| {
        let size = tpl.size() + key.len();
        if let Some((_, old)) = t.map.remove(&key) {
            t.bytes -= old.size() + key.len();
        }
        if t.map.len() >= MAX || t.bytes + size > MAX_BYTES {
            t.map.clear();
            t.bytes = 0;
        }
        if size <= MAX_BYTES {
            t.bytes += size;
            t.map.insert(key, (version, tpl));
        }
    });
    Some(out)
}
