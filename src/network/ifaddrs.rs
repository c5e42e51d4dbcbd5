//! The host's IPv4 broadcast addresses (for discovery probes), from getifaddrs(3).

use std::net::Ipv4Addr;

/// The broadcast address of every IPv4 address on an up, non-loopback interface that
/// has one, without duplicates.
pub fn broadcast_addresses() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let flags = ifa.ifa_flags as libc::c_int;
        let wanted = flags & libc::IFF_UP != 0
            && flags & libc::IFF_BROADCAST != 0
            && flags & libc::IFF_LOOPBACK == 0;
        if !wanted || ifa.ifa_addr.is_null() || ifa.ifa_ifu.is_null() {
            continue;
        }
        // SAFETY: both pointers are non-null sockaddrs owned by the list.
        let (fam, bfam) = unsafe {
            (
                i32::from((*ifa.ifa_addr).sa_family),
                i32::from((*ifa.ifa_ifu).sa_family),
            )
        };
        if fam != libc::AF_INET || bfam != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET sockaddr is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_ifu as *const libc::sockaddr_in) };
        let b = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        if !b.is_unspecified() && !out.contains(&b) {
            out.push(b);
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_no_broadcast_address() {
        // Whatever the machine has, 127.255.255.255 (loopback) and 0.0.0.0 never appear.
        let v = super::broadcast_addresses();
        assert!(
            v.iter().all(|b| !b.is_loopback() && !b.is_unspecified()),
            "{v:?}"
        );
    }
}
