//! Who a request comes from, as nginx's access rules see it: loopback (127.0.0.0/8, ::1, unix
//! sockets) and not relayed by a proxy on this host (one with `Forwarded`, `X-Forwarded-For` or
//! `X-Real-IP`, or a PROXY protocol header: its client is not local), or named by an `allow`
//! rule of the location (or inherited from server{} or http{}): a client whose first matching
//! `allow`/`deny` rule is an `allow` (nginx's access phase has already refused those a `deny`
//! matches). A `deny`-only list (a ban list at http{} level, say) opens nothing.

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use ngx::http::Request;

use super::ffi::*;
use super::http::RequestExt;

/// The http access module's `ctx_index` (`usize::MAX` when nginx was built without it), found
/// by name at configuration time: the module is not linked against, so a build without it
/// still loads us.
static ACCESS_INDEX: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Find the access module (at configuration, from a directive that needs it).
///
/// # Safety
/// `cycle` is the cycle being configured (its module list is complete for static modules).
pub unsafe fn find_module(cycle: *mut ngx_cycle_t) {
    // SAFETY: the cycle's module array holds `modules_n` live module pointers with C names.
    let i = unsafe {
        let modules = std::slice::from_raw_parts((*cycle).modules, (*cycle).modules_n);
        modules
            .iter()
            .find(|&&m| !(*m).name.is_null() && CStr::from_ptr((*m).name) == c"ngx_http_access_module")
            .map_or(usize::MAX, |&m| (*m).ctx_index)
    };
    ACCESS_INDEX.store(i, Ordering::Relaxed);
}

// ngx_http_access_module's location conf and rules are private to ngx_http_access_module.c;
// these mirror them for a build with IPv6 and unix sockets (nginx's default on Linux; checked
// below), unchanged since nginx 1.5.1.
const _: () = assert!(NGX_HAVE_INET6 == 1 && NGX_HAVE_UNIX_DOMAIN == 1);

#[repr(C)]
struct AccessLocConf {
    rules: *mut ngx_array_t,
    rules6: *mut ngx_array_t,
    rules_un: *mut ngx_array_t,
}

#[repr(C)]
struct AccessRule {
    mask: in_addr_t,
    addr: in_addr_t,
    deny: ngx_uint_t,
}

#[repr(C)]
struct AccessRule6 {
    addr: in6_addr,
    mask: in6_addr,
    deny: ngx_uint_t,
}

/// A client address as the access rules see it.
enum Peer {
    /// IPv4, or IPv4-mapped IPv6, in network byte order (as `s_addr`).
    V4(u32),
    V6([u8; 16]),
    /// A unix socket: a process on this host.
    Local,
}

impl Peer {
    fn loopback(&self) -> bool {
        match self {
            Peer::V4(a) => a.to_ne_bytes()[0] == 127,
            Peer::V6(a) => *a == std::net::Ipv6Addr::LOCALHOST.octets(),
            Peer::Local => true,
        }
    }
}

/// # Safety
/// `r` is a live request.
unsafe fn peer(r: *mut ngx_http_request_t) -> Option<Peer> {
    // SAFETY: the connection's sockaddr is of the family it says.
    unsafe {
        let sa = (*(*r).connection).sockaddr;
        match (*sa).sa_family as u32 {
            AF_INET => Some(Peer::V4((*sa.cast::<sockaddr_in>()).sin_addr.s_addr)),
            AF_INET6 => {
                let p = (*sa.cast::<sockaddr_in6>()).sin6_addr.__in6_u.__u6_addr8;
                let v4 = std::net::Ipv6Addr::from(p).to_ipv4_mapped();
                Some(v4.map_or(Peer::V6(p), |a| Peer::V4(u32::from_ne_bytes(a.octets()))))
            }
            AF_UNIX => Some(Peer::Local),
            _ => None,
        }
    }
}

/// The elements of one of the access module's rule arrays; none when it is unset, or when its
/// element size is not ours (a layout we do not know: loopback only, then).
///
/// # Safety
/// `a` is null or a live array whose elements are `T` when their size is `T`'s.
unsafe fn rules<'a, T>(a: *const ngx_array_t) -> &'a [T] {
    // SAFETY: as the caller's.
    unsafe {
        match a.as_ref() {
            Some(a) if a.size == std::mem::size_of::<T>() => a.as_slice::<T>(),
            _ => &[],
        }
    }
}

/// The verdict of the first `allow`/`deny` rule in force for this location that matches `p`
/// (true: allow), as ngx_http_access_module finds it.
///
/// # Safety
/// `r` is a live request.
unsafe fn first_rule(r: *mut ngx_http_request_t, p: &Peer) -> Option<bool> {
    let idx = ACCESS_INDEX.load(Ordering::Relaxed);
    if idx == usize::MAX {
        return None;
    }
    // SAFETY: the access module's loc conf of this request's location, merged, with rule
    // arrays of the types above (or null).
    unsafe {
        let alcf = &*(*(*r).loc_conf.add(idx)).cast::<AccessLocConf>();
        match p {
            Peer::V4(a) => rules::<AccessRule>(alcf.rules)
                .iter()
                .find(|rule| a & rule.mask == rule.addr)
                .map(|rule| rule.deny == 0),
            Peer::V6(a) => rules::<AccessRule6>(alcf.rules6)
                .iter()
                .find(|rule| {
                    let (addr, mask) = (rule.addr.__in6_u.__u6_addr8, rule.mask.__in6_u.__u6_addr8);
                    (0..16).all(|i| a[i] & mask[i] == addr[i])
                })
                .map(|rule| rule.deny == 0),
            Peer::Local => None,
        }
    }
}

/// Headers a proxy adds for the client it forwards: a request carrying one, from loopback,
/// is a stranger's request relayed by a proxy on this host (a TLS terminator, say).
const FORWARDED: [&[u8]; 3] = [b"forwarded", b"x-forwarded-for", b"x-real-ip"];

/// Did this request come through a proxy: a PROXY protocol header, or a forwarding header?
fn forwarded(r: &Request) -> bool {
    // SAFETY: a live request has its connection.
    let proxied = unsafe { !(*r.connection()).proxy_protocol.is_null() };
    proxied || FORWARDED.iter().any(|f| r.header_in(f).is_some())
}

/// Loopback (and not relayed by a proxy), or named by an `allow` rule.
pub fn local_or_allowed(r: &Request) -> bool {
    let raw: *const ngx_http_request_t = r.as_ref();
    // SAFETY: a live request; peer and first_rule only read it.
    unsafe {
        let raw = raw.cast_mut();
        peer(raw).is_some_and(|p| (p.loopback() && !forwarded(r)) || first_rule(raw, &p) == Some(true))
    }
}
