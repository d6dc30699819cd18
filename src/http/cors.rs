//! Cross-origin access to the media: none by default. `mesh_allow_origin <origin> ...;`
//! (http, server or location; inherited) lists the origins whose pages may read the media;
//! a request's `Origin` in the list is echoed in `Access-Control-Allow-Origin`, with
//! `Vary: Origin` on every response of such a location. `*` (alone) allows any page.

use ngx::http::Request;

use super::HttpLocConf;
use crate::nginx::directive::{arg, args, directive, invalid_value, DUPLICATE};
use crate::nginx::http::RequestExt;
use crate::nginx::util::CONF_OK;

/// Is `v` an origin as browsers send it: `http[s]://host[:port]`, no path? Lowercased.
fn parse_origin(v: &str) -> Option<String> {
    let v = v.to_ascii_lowercase();
    let rest = v.strip_prefix("https://").or_else(|| v.strip_prefix("http://"))?;
    let (host_ok, port) = if let Some(r6) = rest.strip_prefix('[') {
        let (ip6, after) = r6.split_once(']')?;
        let ok = !ip6.is_empty() && ip6.bytes().all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.');
        let port = if after.is_empty() { None } else { Some(after.strip_prefix(':')?) };
        (ok, port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let ok = !host.is_empty()
            && host.len() <= 253
            && host.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
        (ok, port)
    };
    let port_ok =
        port.is_none_or(|p| p.bytes().all(|c| c.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0));
    (host_ok && port_ok).then_some(v)
}

directive! {
    pub fn set_allow_origin(cf, lcf: &mut HttpLocConf) {
        if lcf.origins.is_some() {
            return DUPLICATE;
        }
        let n = args(cf).len();
        let mut list = Vec::new();
        for i in 1..n {
            let v = arg(cf, i);
            if v == "*" && n == 2 {
                list.push(v);
                continue;
            }
            match parse_origin(&v) {
                Some(o) => list.push(o),
                None => {
                    return invalid_value(cf, &v, "it must be \"http[s]://host[:port]\" (or \"*\" alone)")
                }
            }
        }
        lcf.origins = Some(list);
        CONF_OK
    }
}

/// The CORS headers of a response in a location with `origins` (None: the directive unset).
pub fn apply(r: &mut Request, origins: Option<&[String]>) {
    let Some(list) = origins.filter(|l| !l.is_empty()) else { return };
    r.set_header("Vary", "Origin");
    let Some(o) = r.header_in(b"origin").map(<[u8]>::to_vec) else { return };
    if list.len() == 1 && list[0] == "*" {
        r.set_header("Access-Control-Allow-Origin", "*");
        return;
    }
    // Echoed as sent; a match with a checked entry holds only an origin's characters.
    if list.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(&o)) {
        r.set_header("Access-Control-Allow-Origin", &String::from_utf8_lossy(&o));
    }
}
