//! Address management: parsing and checking subnets, their gateways and allocation pools,
//! picking free addresses and MAC addresses. Pure functions; uniqueness across the
//! cluster comes from the allocation tables in the store (see `control::networks`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::cluster::store::network_tables::AllocationPool;

/// Smallest prefix (largest subnet) accepted, and the largest (a /29 leaves 5 usable
/// addresses after the network, broadcast, gateway and service addresses).
pub const MIN_PREFIX: u8 = 8;
pub const MAX_PREFIX: u8 = 29;

/// Parses an IPv4 subnet in canonical form (`10.0.0.0/24`, host bits zero).
pub fn parse_cidr(s: &str) -> Result<Ipv4Net, String> {
    let net: IpNet = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a CIDR such as 10.0.0.0/24"))?;
    let v4 = match net {
        IpNet::V4(n) => n,
        IpNet::V6(_) => {
            return Err(format!(
                "{s:?} is an IPv6 subnet; this version serves IPv4 subnets only"
            ))
        }
    };
    if v4.network() != v4.addr() {
        return Err(format!(
            "{s:?} has host bits set; did you mean {}?",
            v4.trunc()
        ));
    }
    if !(MIN_PREFIX..=MAX_PREFIX).contains(&v4.prefix_len()) {
        return Err(format!(
            "{s:?}: the prefix length must be between /{MIN_PREFIX} and /{MAX_PREFIX}"
        ));
    }
    Ok(v4)
}

pub fn parse_ip(s: &str) -> Result<Ipv4Addr, String> {
    match s.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok(a),
        Ok(IpAddr::V6(_)) => Err(format!("{s:?} is an IPv6 address; IPv4 only for now")),
        Err(_) => Err(format!("{s:?} is not an IP address")),
    }
}

/// Whether `ip` is a host address of `net` (not its network or broadcast address).
pub fn is_host(net: &Ipv4Net, ip: Ipv4Addr) -> bool {
    net.contains(&ip) && ip != net.network() && ip != net.broadcast()
}

pub fn first_host(net: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

/// Checks a gateway (None: the first host address) against the subnet.
pub fn gateway(net: &Ipv4Net, asked: Option<&str>) -> Result<Ipv4Addr, String> {
    let gw = match asked {
        Some(g) => parse_ip(g)?,
        None => first_host(net),
    };
    if !is_host(net, gw) {
        return Err(format!(
            "gateway {gw} is not a host address of {net} (outside it, or its network or broadcast address)"
        ));
    }
    Ok(gw)
}

/// Allocation pools: as asked (checked: inside the subnet, start ≤ end, not overlapping
/// each other nor holding the gateway), or the subnet's host addresses minus the gateway.
pub fn pools(
    net: &Ipv4Net,
    gw: Option<Ipv4Addr>,
    asked: &[AllocationPool],
) -> Result<Vec<(Ipv4Addr, Ipv4Addr)>, String> {
    let mut out: Vec<(Ipv4Addr, Ipv4Addr)> = Vec::new();
    if asked.is_empty() {
        let (first, last) = (u32::from(net.network()) + 1, u32::from(net.broadcast()) - 1);
        let Some(g) = gw.map(u32::from).filter(|g| (first..=last).contains(g)) else {
            out.push((Ipv4Addr::from(first), Ipv4Addr::from(last)));
            return Ok(out);
        };
        if g > first {
            out.push((Ipv4Addr::from(first), Ipv4Addr::from(g - 1)));
        }
        if g < last {
            out.push((Ipv4Addr::from(g + 1), Ipv4Addr::from(last)));
        }
        return Ok(out);
    }
    for p in asked {
        let (s, e) = (parse_ip(&p.start)?, parse_ip(&p.end)?);
        if !is_host(net, s) || !is_host(net, e) {
            return Err(format!(
                "allocation pool {s}-{e} is not inside the host addresses of {net}"
            ));
        }
        if u32::from(s) > u32::from(e) {
            return Err(format!("allocation pool {s}-{e} ends before it starts"));
        }
        if let Some(gw) = gw.filter(|g| (u32::from(s)..=u32::from(e)).contains(&u32::from(*g))) {
            return Err(format!("allocation pool {s}-{e} contains the gateway {gw}"));
        }
        if let Some((a, b)) = out
            .iter()
            .find(|(a, b)| u32::from(s) <= u32::from(*b) && u32::from(*a) <= u32::from(e))
        {
            return Err(format!("allocation pools {s}-{e} and {a}-{b} overlap"));
        }
        out.push((s, e));
    }
    out.sort();
    Ok(out)
}

/// The lowest address of the pools not in `taken`.
pub fn next_free(pools: &[(Ipv4Addr, Ipv4Addr)], taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    for (s, e) in pools {
        let mut a = u32::from(*s);
        while a <= u32::from(*e) {
            let ip = Ipv4Addr::from(a);
            if !taken.contains(&ip) {
                return Some(ip);
            }
            a += 1;
        }
    }
    None
}

/// Whether two subnets share any address.
pub fn overlap(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A random, locally administered unicast MAC with OpenStack's `fa:16:3e` prefix.
pub fn random_mac() -> String {
    let b: [u8; 3] = rand::random();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// Parses `aa:bb:cc:dd:ee:ff` (unicast only).
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || format!("{s:?} is not a MAC address such as fa:16:3e:12:34:56");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        // Two hex digits exactly (`from_str_radix` would take "+a").
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if m[0] & 1 == 1 {
        return Err(format!("{s:?} is a multicast MAC address"));
    }
    if m == [0; 6] {
        return Err(format!("{s:?} is the all-zero MAC address"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_checked_with_the_cause_named() {
        assert_eq!(
            parse_cidr("10.0.0.0/24").unwrap().to_string(),
            "10.0.0.0/24"
        );
        for (bad, why) in [
            ("10.0.0.5/24", "did you mean 10.0.0.0/24"),
            ("10.0.0.0/33", "not a CIDR"),
            ("banana", "not a CIDR"),
            ("fd00::/64", "IPv6"),
            ("10.0.0.0/30", "between /8 and /29"),
            ("0.0.0.0/4", "between /8 and /29"),
        ] {
            let e = parse_cidr(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn gateways_and_pools_stay_inside_the_subnet() {
        let n = parse_cidr("192.168.5.0/24").unwrap();
        assert_eq!(gateway(&n, None).unwrap(), Ipv4Addr::new(192, 168, 5, 1));
        assert!(gateway(&n, Some("192.168.6.1"))
            .unwrap_err()
            .contains("not a host address"));
        assert!(gateway(&n, Some("192.168.5.255")).is_err());
        let gw = Some(Ipv4Addr::new(192, 168, 5, 1));
        assert_eq!(
            pools(&n, None, &[]).unwrap(),
            vec![(
                Ipv4Addr::new(192, 168, 5, 1),
                Ipv4Addr::new(192, 168, 5, 254)
            )],
            "without a gateway every host address is in the pool"
        );
        assert_eq!(
            pools(&n, gw, &[]).unwrap(),
            vec![(
                Ipv4Addr::new(192, 168, 5, 2),
                Ipv4Addr::new(192, 168, 5, 254)
            )]
        );
        let mid = pools(&n, Some(Ipv4Addr::new(192, 168, 5, 100)), &[]).unwrap();
        assert_eq!(mid.len(), 2);
        let p = |s: &str, e: &str| AllocationPool {
            start: s.into(),
            end: e.into(),
        };
        assert!(pools(&n, gw, &[p("192.168.5.1", "192.168.5.9")])
            .unwrap_err()
            .contains("contains the gateway"));
        assert!(pools(&n, gw, &[p("192.168.5.9", "192.168.5.3")])
            .unwrap_err()
            .contains("ends before"));
        assert!(pools(&n, gw, &[p("192.168.5.10", "192.168.7.3")])
            .unwrap_err()
            .contains("not inside"));
        assert!(pools(
            &n,
            gw,
            &[
                p("192.168.5.10", "192.168.5.20"),
                p("192.168.5.15", "192.168.5.30")
            ]
        )
        .unwrap_err()
        .contains("overlap"));
    }

    #[test]
    fn the_next_free_address_skips_taken_ones_and_runs_out() {
        let pools = vec![
            (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)),
            (Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 9)),
        ];
        let mut taken = BTreeSet::new();
        taken.insert(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(next_free(&pools, &taken), Some(Ipv4Addr::new(10, 0, 0, 3)));
        taken.insert(Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(next_free(&pools, &taken), Some(Ipv4Addr::new(10, 0, 0, 9)));
        taken.insert(Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(next_free(&pools, &taken), None);
    }

    #[test]
    fn overlaps_and_macs() {
        let a = parse_cidr("10.0.0.0/16").unwrap();
        let b = parse_cidr("10.0.5.0/24").unwrap();
        let c = parse_cidr("10.1.0.0/24").unwrap();
        assert!(overlap(&a, &b) && overlap(&b, &a) && !overlap(&a, &c));
        let m = random_mac();
        assert!(m.starts_with("fa:16:3e:"));
        assert!(parse_mac(&m).is_ok());
        assert!(parse_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_mac("zz:00:5e:00:00:01").is_err());
        // A sign is not a hex digit (u8::from_str_radix would take it).
        assert!(parse_mac("fa:16:3e:00:00:+a").is_err());
        assert!(parse_mac("fa:16:3e:00:00:-1").is_err());
        assert_eq!(
            parse_mac("FA:16:3E:00:00:0A"),
            Ok([0xfa, 0x16, 0x3e, 0, 0, 0x0a])
        );
    }
}
