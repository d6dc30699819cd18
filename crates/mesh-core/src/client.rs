//! Which client addresses a per-client cap counts together.
//!
//! One IPv6 subscriber usually holds a whole /64 and can pick any address in it: counting each
//! address alone would let one client take a per-worker cap by itself. IPv6 addresses count by
//! their /64; IPv4 (and IPv4-mapped IPv6) addresses, and anything else, count alone.

use std::net::{IpAddr, Ipv6Addr};

/// The key a per-client cap counts `addr` (nginx's `addr_text`) under.
pub fn client_key(addr: &str) -> String {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.segments();
                format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        Ok(IpAddr::V4(a)) => a.to_string(),
        Err(_) => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_its_64() {
        assert_eq!(client_key("2001:db8:1:2::5"), "2001:db8:1:2::/64");
        assert_eq!(client_key("2001:db8:1:2:ffff::9"), client_key("2001:db8:1:2::1"));
        assert_ne!(client_key("2001:db8:1:3::1"), client_key("2001:db8:1:2::1"));
        assert_eq!(client_key("::1"), "::/64");
    }

    #[test]
    fn ipv4_and_the_rest_count_alone() {
        assert_eq!(client_key("192.0.2.7"), "192.0.2.7");
        assert_eq!(client_key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(client_key("unix:"), "unix:");
        assert_ne!(client_key("192.0.2.7"), client_key("192.0.2.8"));
    }
}
