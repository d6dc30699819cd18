//! A shared memory zone of slots, one per worker process of the node — of this generation and
//! of the ones still draining after a reload: nginx keeps a zone across reloads when its name,
//! size and tag stay, so an old worker's slot is read as long as it writes it. A worker writes
//! its own slot (bytes, with its pid and when), anyone reads all the fresh ones; a slot not
//! written for [`STALE_MS`] is free again (its worker is gone).
//!
//! Before the slots, a table of transcode claims (`mesh_core::claims`: which worker runs a
//! stream's one ffmpeg), [`claims_for`] of them by the zone's size.
//!
//! Every access holds the zone's slab mutex (`ngx_shmtx`, shared by every process of the node)
//! for one copy of at most a slot, or one pass over the claims.

use std::ffi::c_void;
use std::ptr::{addr_of, NonNull};

use mesh_core::claims::Claim;

use super::ffi::*;

/// Slots in a zone: worker processes of all generations at once.
pub const SLOTS: usize = 64;
/// A slot not written for this long is free.
pub const STALE_MS: u64 = 10_000;
const MAGIC: u64 = 0x6d65_7368_7a6f_6e32; // "meshzon2": slots after claims

#[repr(C)]
struct Header {
    magic: u64,
    slot_size: usize,
    /// Claims after the header.
    claims: usize,
    /// The last claim generation handed out (node-wide).
    generation: u64,
}

/// Transcode claims a zone of `size` bytes holds: one per 4 KiB, at least 64, at most 4096.
pub fn claims_for(size: usize) -> usize {
    (size / 4096).clamp(64, 4096)
}

#[repr(C)]
struct SlotHead {
    pid: ngx_pid_t,
    len: u32,
    written_ms: u64,
}

/// The tag that makes the zone ours (nginx refuses one name with two tags).
static TAG: u8 = 0;

/// A zone made at configuration ([`Zone::add`]); valid for its cycle.
#[derive(Debug, Clone, Copy)]
pub struct Zone {
    zone: NonNull<ngx_shm_zone_t>,
}

/// Why a slot was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// Larger than a slot (the zone is too small for this worker's figures).
    TooLarge { len: usize, slot: usize },
    /// Every slot is held by a live worker.
    Full,
    /// The zone is not set up (nginx did not call its init).
    NotReady,
}

impl std::fmt::Display for SlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotError::TooLarge { len, slot } => write!(f, "{len} bytes do not fit a slot of {slot}"),
            SlotError::Full => write!(f, "all {SLOTS} slots held"),
            SlotError::NotReady => f.write_str("zone not ready"),
        }
    }
}

impl Zone {
    /// Ask nginx for a zone `name` of `size` bytes (configuration time).
    ///
    /// # Safety
    /// `cf` is the configuration being parsed.
    pub unsafe fn add(cf: *mut ngx_conf_t, name: &'static str, size: usize) -> Option<Zone> {
        // SAFETY: as the caller guarantees; the name is copied into the configuration pool.
        unsafe {
            let mut n = ngx_str_t::from_bytes((*cf).pool, name.as_bytes())?;
            let z = ngx_shared_memory_add(cf, &mut n, size, addr_of!(TAG).cast_mut().cast());
            let zone = NonNull::new(z)?;
            (*z).init = Some(init);
            Some(Zone { zone })
        }
    }

    /// The slot area: (header, first slot), when the zone is set up.
    fn area(self) -> Option<(*mut ngx_slab_pool_t, *mut Header)> {
        // SAFETY: the zone lives with the cycle; `data` is set by init (null before).
        unsafe {
            let z = self.zone.as_ptr();
            let h = (*z).data.cast::<Header>();
            if h.is_null() || (*h).magic != MAGIC {
                return None;
            }
            Some(((*z).shm.addr.cast::<ngx_slab_pool_t>(), h))
        }
    }

    /// Run `f` over the slots, the zone locked.
    fn locked<R>(self, f: impl FnOnce(&mut Slots) -> R) -> Option<R> {
        let (pool, h) = self.area()?;
        // SAFETY: the slab pool's mutex guards the slots for every process of the node; the
        // slots follow the header, `SLOTS` of `SlotHead + slot_size` bytes, allocated by init.
        unsafe {
            ngx_shmtx_lock(&mut (*pool).mutex);
            // Unlocked when this goes, even if `f` panics (the guard catches it, and a lock left
            // held would stop every process of the node).
            let _unlock = Unlock(pool);
            let base = h.add(1).cast::<Claim>().add((*h).claims).cast::<u8>();
            let mut s = Slots { base, slot_size: (*h).slot_size };
            Some(f(&mut s))
        }
    }

    /// Claims in the zone.
    pub fn claims(self) -> usize {
        // SAFETY: the header, set up by init, does not change after.
        self.area().map_or(0, |(_, h)| unsafe { (*h).claims })
    }

    /// Run `f` over the claim table and the node's generation counter, the zone locked.
    pub fn with_claims<R>(self, f: impl FnOnce(&mut [Claim], &mut u64) -> R) -> Option<R> {
        let (pool, h) = self.area()?;
        // SAFETY: as in `locked`; the claims follow the header (8-aligned: the header and a
        // claim are multiples of 8 bytes), `claims` of them, zeroed by init (a free claim), and
        // only touched with the mutex held.
        unsafe {
            ngx_shmtx_lock(&mut (*pool).mutex);
            let _unlock = Unlock(pool);
            let table = std::slice::from_raw_parts_mut(h.add(1).cast::<Claim>(), (*h).claims);
            Some(f(table, &mut (*h).generation))
        }
    }

    /// Write this process's slot.
    pub fn write(self, bytes: &[u8]) -> Result<(), SlotError> {
        let (pid, now) = (pid(), super::util::now_ms());
        self.locked(|s| {
            if bytes.len() > s.slot_size {
                return Err(SlotError::TooLarge { len: bytes.len(), slot: s.slot_size });
            }
            let i = (0..SLOTS)
                .find(|&i| s.head(i).pid == pid)
                .or_else(|| (0..SLOTS).find(|&i| s.free(i, now)))
                .ok_or(SlotError::Full)?;
            s.put(i, pid, now, bytes);
            Ok(())
        })
        .unwrap_or(Err(SlotError::NotReady))
    }

    /// Every other process's slot written within [`STALE_MS`].
    pub fn read_others(self) -> Vec<Vec<u8>> {
        let (pid, now) = (pid(), super::util::now_ms());
        self.locked(|s| {
            (0..SLOTS)
                .filter(|&i| s.head(i).pid != pid && !s.free(i, now))
                .map(|i| s.bytes(i).to_vec())
                .collect()
        })
        .unwrap_or_default()
    }

    /// This process is leaving: its slot is free.
    pub fn release(self) {
        let p = pid();
        self.locked(|s| {
            for i in 0..SLOTS {
                if s.head(i).pid == p {
                    s.put(i, 0, 0, &[]);
                }
            }
        });
    }
}

struct Unlock(*mut ngx_slab_pool_t);

impl Drop for Unlock {
    fn drop(&mut self) {
        // SAFETY: the pool whose mutex this process holds (locked just before).
        unsafe { ngx_shmtx_unlock(&mut (*self.0).mutex) }
    }
}

/// This process's pid.
pub fn pid() -> ngx_pid_t {
    // SAFETY: nginx sets ngx_pid at process start.
    unsafe { *addr_of!(ngx_pid) }
}

/// The slots, while the zone is locked.
struct Slots {
    base: *mut u8,
    slot_size: usize,
}

impl Slots {
    fn slot(&self, i: usize) -> *mut u8 {
        // SAFETY: slot i of SLOTS, inside the allocation (see init).
        unsafe { self.base.add(i * (size_of::<SlotHead>() + self.slot_size)) }
    }

    fn head(&self, i: usize) -> &SlotHead {
        // SAFETY: a slot starts with its head (8-aligned: the sizes are multiples of 8).
        unsafe { &*self.slot(i).cast::<SlotHead>() }
    }

    fn free(&self, i: usize, now: u64) -> bool {
        let h = self.head(i);
        h.pid == 0 || now.saturating_sub(h.written_ms) > STALE_MS
    }

    fn bytes(&self, i: usize) -> &[u8] {
        let len = (self.head(i).len as usize).min(self.slot_size);
        // SAFETY: the slot's data follows its head.
        unsafe { std::slice::from_raw_parts(self.slot(i).add(size_of::<SlotHead>()), len) }
    }

    fn put(&mut self, i: usize, pid: ngx_pid_t, now: u64, bytes: &[u8]) {
        // SAFETY: slot i, its head and data (bytes fit: checked by the caller).
        unsafe {
            let p = self.slot(i);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(size_of::<SlotHead>()), bytes.len());
            *p.cast::<SlotHead>() = SlotHead { pid, len: bytes.len() as u32, written_ms: now };
        }
    }
}

/// nginx sets the zone up (once per zone; again after a reload, with the old one's data).
unsafe extern "C" fn init(zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    super::util::guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls us with the zone and, after a reload, the previous data; the zone's
        // memory starts with its slab pool.
        unsafe {
            if !data.is_null() {
                // (A zone made by another build of the module, kept across a reload, has another
                // layout: refused rather than misread.)
                if (*data.cast::<Header>()).magic != MAGIC {
                    ngx::ngx_log_error!(
                        NGX_LOG_EMERG,
                        ngx::log::ngx_cycle_log().as_ptr(),
                        "\"mesh_shared_zone\" was made by another version of the module: change its size or restart nginx"
                    );
                    return NGX_ERROR as ngx_int_t;
                }
                (*zone).data = data;
                return NGX_OK as ngx_int_t;
            }
            let pool = (*zone).shm.addr.cast::<ngx_slab_pool_t>();
            // What the pool really has free (its pages less its own bookkeeping), less a page
            // for the large allocation's rounding.
            let page = *addr_of!(ngx_pagesize);
            let claims = claims_for((*zone).shm.size);
            let table = claims * size_of::<Claim>();
            let avail = ((*pool).pfree.saturating_sub(1) * page).saturating_sub(size_of::<Header>() + table);
            let slot_size = (avail / SLOTS).saturating_sub(size_of::<SlotHead>()) / 8 * 8;
            let total = size_of::<Header>() + table + SLOTS * (size_of::<SlotHead>() + slot_size);
            let h = if slot_size < 1024 {
                std::ptr::null_mut()
            } else {
                ngx_slab_alloc(pool, total).cast::<Header>()
            };
            if h.is_null() {
                ngx::ngx_log_error!(
                    NGX_LOG_EMERG,
                    ngx::log::ngx_cycle_log().as_ptr(),
                    "\"mesh_shared_zone\" of {} bytes: no room for {} slots",
                    (*zone).shm.size,
                    SLOTS
                );
                return NGX_ERROR as ngx_int_t;
            }
            std::ptr::write_bytes(h.cast::<u8>(), 0, total);
            (*h).magic = MAGIC;
            (*h).slot_size = slot_size;
            (*h).claims = claims;
            (*pool).data = h.cast();
            (*zone).data = h.cast();
            NGX_OK as ngx_int_t
        }
    })
}
