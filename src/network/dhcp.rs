//! The DHCPv4 protocol core (RFC 2131/2132, classless routes from RFC 3442): parses a
//! client's message and builds the answer for a known port. No I/O: the service feeds it
//! datagrams and sends what it returns.
//!
//! Leases are not state: a port's address is fixed in the cluster state, so an offer or
//! an acknowledgement is computed from the port each time, and a request for another
//! address is refused (NAK).

use std::net::Ipv4Addr;

const OP_REQUEST: u8 = 1;
pub(crate) const OP_REPLY: u8 = 2;
pub(crate) const MAGIC: [u8; 4] = [99, 130, 83, 99];
pub(crate) const FIXED: usize = 236;

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const DECLINE: u8 = 4;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;
pub const RELEASE: u8 = 7;
pub const INFORM: u8 = 8;

/// A client's message, as far as the server needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub kind: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54: the server the client chose (REQUEST after an OFFER).
    pub server_id: Option<Ipv4Addr>,
    /// Option 60 (`PXEClient:Arch:...` from network boot firmware).
    pub vendor_class: Vec<u8>,
    /// Option 77 (`iPXE` from iPXE).
    pub user_class: Vec<u8>,
    /// Option 93: the client's architecture (0 BIOS, 7 and 9 x86-64 UEFI).
    pub client_arch: Option<u16>,
    /// Option 97: the client machine's UUID, echoed to PXE clients.
    pub client_uuid: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DhcpError {
    #[error("DHCP message too short ({0} bytes)")]
    Short(usize),
    #[error("not a BOOTREQUEST (op {0})")]
    NotRequest(u8),
    #[error("not an Ethernet client (htype {0}, hlen {1})")]
    NotEthernet(u8, u8),
    #[error("no DHCP magic cookie")]
    NoMagic,
    #[error("malformed option {0}")]
    BadOption(u8),
    #[error("no message type option")]
    NoType,
}

/// What the server knows about the port asking, and its subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: u16,
    /// Classless routes (destination, prefix, next hop), besides the default route.
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    pub hostname: String,
    pub lease_secs: u32,
}

pub fn parse(buf: &[u8]) -> Result<ClientMessage, DhcpError> {
    if buf.len() < FIXED + 4 {
        return Err(DhcpError::Short(buf.len()));
    }
    if buf[0] != OP_REQUEST {
        return Err(DhcpError::NotRequest(buf[0]));
    }
    if buf[1] != 1 || buf[2] != 6 {
        return Err(DhcpError::NotEthernet(buf[1], buf[2]));
    }
    if buf[FIXED..FIXED + 4] != MAGIC {
        return Err(DhcpError::NoMagic);
    }
    let xid = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let flags = u16::from_be_bytes([buf[10], buf[11]]);
    let ciaddr = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&buf[28..34]);
    let (mut kind, mut requested_ip, mut server_id) = (None, None, None);
    let (mut vendor_class, mut user_class, mut client_arch, mut client_uuid) =
        (Vec::new(), Vec::new(), None, Vec::new());
    let mut i = FIXED + 4;
    while i < buf.len() {
        let code = buf[i];
        if code == 0 {
            i += 1;
            continue;
        }
        if code == 255 {
            break;
        }
        let len = *buf.get(i + 1).ok_or(DhcpError::BadOption(code))? as usize;
        let val = buf
            .get(i + 2..i + 2 + len)
            .ok_or(DhcpError::BadOption(code))?;
        let ip = || -> Result<Ipv4Addr, DhcpError> {
            if val.len() != 4 {
                return Err(DhcpError::BadOption(code));
            }
            Ok(Ipv4Addr::new(val[0], val[1], val[2], val[3]))
        };
        match code {
            53 => kind = Some(*val.first().ok_or(DhcpError::BadOption(code))?),
            50 => requested_ip = Some(ip()?),
            54 => server_id = Some(ip()?),
            60 => vendor_class = val.to_vec(),
            77 => user_class = val.to_vec(),
            93 if val.len() >= 2 => client_arch = Some(u16::from_be_bytes([val[0], val[1]])),
            97 => client_uuid = val.to_vec(),
            _ => {}
        }
        i += 2 + len;
    }
    Ok(ClientMessage {
        kind: kind.ok_or(DhcpError::NoType)?,
        xid,
        flags,
        ciaddr,
        chaddr,
        requested_ip,
        server_id,
        vendor_class,
        user_class,
        client_arch,
        client_uuid,
    })
}

/// What to answer: the message type (OFFER, ACK, NAK) or None (stay silent: a request
/// meant for another server, a release, a decline).
pub fn answer_kind(m: &ClientMessage, lease: &Lease) -> Option<u8> {
    match m.kind {
        DISCOVER => Some(OFFER),
        REQUEST => {
            if m.server_id.is_some_and(|s| s != lease.server) {
                return None;
            }
            let asked = m
                .requested_ip
                .or((m.ciaddr != Ipv4Addr::UNSPECIFIED).then_some(m.ciaddr));
            match asked {
                Some(a) if a != lease.ip => Some(NAK),
                _ => Some(ACK),
            }
        }
        INFORM => Some(ACK),
        _ => None,
    }
}

pub(crate) fn put(out: &mut Vec<u8>, code: u8, val: &[u8]) {
    // Long values (routes) are split into several options of the same code (RFC 3396).
    for chunk in val.chunks(255) {
        out.push(code);
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
}

fn mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    })
}

/// Builds the reply of type `kind` to `m` for the port described by `lease`.
pub fn reply(m: &ClientMessage, kind: u8, lease: &Lease) -> Vec<u8> {
    let mut out = vec![0u8; FIXED];
    out[0] = OP_REPLY;
    out[1] = 1;
    out[2] = 6;
    out[4..8].copy_from_slice(&m.xid.to_be_bytes());
    out[10..12].copy_from_slice(&m.flags.to_be_bytes());
    if kind != NAK {
        if m.kind == INFORM {
            out[12..16].copy_from_slice(&m.ciaddr.octets());
        } else {
            out[16..20].copy_from_slice(&lease.ip.octets());
        }
        out[20..24].copy_from_slice(&lease.server.octets());
    }
    out[28..34].copy_from_slice(&m.chaddr);
    out.extend_from_slice(&MAGIC);
    put(&mut out, 53, &[kind]);
    put(&mut out, 54, &lease.server.octets());
    if kind == NAK {
        put(&mut out, 56, b"that address is not this port's");
        out.push(255);
        return out;
    }
    if m.kind != INFORM {
        put(&mut out, 51, &lease.lease_secs.to_be_bytes());
        put(&mut out, 58, &(lease.lease_secs / 2).to_be_bytes());
        put(&mut out, 59, &(lease.lease_secs / 8 * 7).to_be_bytes());
    }
    put(&mut out, 1, &mask(lease.prefix).octets());
    let bcast = u32::from(lease.ip) | !u32::from(mask(lease.prefix));
    put(&mut out, 28, &Ipv4Addr::from(bcast).octets());
    if let Some(g) = lease.gateway {
        put(&mut out, 3, &g.octets());
    }
    if !lease.dns.is_empty() {
        let v: Vec<u8> = lease.dns.iter().flat_map(|d| d.octets()).collect();
        put(&mut out, 6, &v);
    }
    put(&mut out, 26, &lease.mtu.to_be_bytes());
    if !lease.hostname.is_empty() {
        put(&mut out, 12, lease.hostname.as_bytes());
    }
    // Classless routes replace option 3 for clients that take them, so the default route
    // is repeated there (RFC 3442).
    let mut routes = Vec::new();
    for (dst, prefix, via) in lease
        .routes
        .iter()
        .copied()
        .chain(lease.gateway.map(|g| (Ipv4Addr::UNSPECIFIED, 0, g)))
    {
        routes.push(prefix);
        let sig = usize::from(prefix).div_ceil(8);
        routes.extend_from_slice(&dst.octets()[..sig]);
        routes.extend_from_slice(&via.octets());
    }
    if !routes.is_empty() {
        put(&mut out, 121, &routes);
    }
    out.push(255);
    // Some clients want at least the BOOTP minimum of 300 bytes.
    if out.len() < 300 {
        out.resize(300, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(kind: u8, requested: Option<Ipv4Addr>, server: Option<Ipv4Addr>) -> Vec<u8> {
        let mut b = vec![0u8; FIXED];
        b[0] = OP_REQUEST;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        b[10] = 0x80;
        b[28..34].copy_from_slice(&[0xfa, 0x16, 0x3e, 1, 2, 3]);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&[53, 1, kind]);
        if let Some(r) = requested {
            b.extend_from_slice(&[50, 4]);
            b.extend_from_slice(&r.octets());
        }
        if let Some(s) = server {
            b.extend_from_slice(&[54, 4]);
            b.extend_from_slice(&s.octets());
        }
        b.extend_from_slice(&[55, 3, 1, 3, 121, 255]);
        b
    }

    fn lease() -> Lease {
        Lease {
            ip: Ipv4Addr::new(10, 0, 0, 5),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            server: Ipv4Addr::new(10, 0, 0, 2),
            dns: vec![Ipv4Addr::new(10, 0, 0, 53)],
            mtu: 1450,
            routes: vec![(
                Ipv4Addr::new(169, 254, 169, 254),
                32,
                Ipv4Addr::new(10, 0, 0, 2),
            )],
            hostname: "vm-1".into(),
            lease_secs: 86400,
        }
    }

    /// Options of a reply, by code (concatenated when split).
    fn options(r: &[u8]) -> std::collections::BTreeMap<u8, Vec<u8>> {
        let mut m = std::collections::BTreeMap::new();
        let mut i = FIXED + 4;
        while i < r.len() && r[i] != 255 {
            let (c, l) = (r[i], r[i + 1] as usize);
            m.entry(c)
                .or_insert_with(Vec::new)
                .extend_from_slice(&r[i + 2..i + 2 + l]);
            i += 2 + l;
        }
        m
    }

    #[test]
    fn a_discover_gets_an_offer_with_the_ports_address_and_routes() {
        let m = parse(&client(DISCOVER, None, None)).unwrap();
        assert_eq!(m.chaddr, [0xfa, 0x16, 0x3e, 1, 2, 3]);
        assert_eq!(m.xid, 0x1234_5678);
        let l = lease();
        assert_eq!(answer_kind(&m, &l), Some(OFFER));
        let r = reply(&m, OFFER, &l);
        assert_eq!(r[0], OP_REPLY);
        assert_eq!(&r[16..20], &[10, 0, 0, 5], "yiaddr");
        assert_eq!(&r[4..8], &0x1234_5678u32.to_be_bytes());
        let o = options(&r);
        assert_eq!(o[&53], vec![OFFER]);
        assert_eq!(o[&54], vec![10, 0, 0, 2]);
        assert_eq!(o[&1], vec![255, 255, 255, 0]);
        assert_eq!(o[&3], vec![10, 0, 0, 1]);
        assert_eq!(o[&6], vec![10, 0, 0, 53]);
        assert_eq!(o[&26], 1450u16.to_be_bytes().to_vec());
        assert_eq!(o[&51], 86400u32.to_be_bytes().to_vec());
        // 169.254.169.254/32 via 10.0.0.2, then 0.0.0.0/0 via 10.0.0.1.
        assert_eq!(
            o[&121],
            vec![32, 169, 254, 169, 254, 10, 0, 0, 2, 0, 10, 0, 0, 1]
        );
        assert!(r.len() >= 300);
    }

    #[test]
    fn requests_for_this_address_are_acked_others_naked_and_other_servers_ignored() {
        let l = lease();
        let ok = parse(&client(REQUEST, Some(l.ip), Some(l.server))).unwrap();
        assert_eq!(answer_kind(&ok, &l), Some(ACK));
        let wrong = parse(&client(REQUEST, Some(Ipv4Addr::new(10, 0, 0, 9)), None)).unwrap();
        assert_eq!(answer_kind(&wrong, &l), Some(NAK));
        let r = reply(&wrong, NAK, &l);
        assert_eq!(&r[16..20], &[0, 0, 0, 0]);
        assert_eq!(options(&r)[&53], vec![NAK]);
        let other = parse(&client(
            REQUEST,
            Some(l.ip),
            Some(Ipv4Addr::new(10, 0, 0, 3)),
        ))
        .unwrap();
        assert_eq!(answer_kind(&other, &l), None);
        let release = parse(&client(RELEASE, None, None)).unwrap();
        assert_eq!(answer_kind(&release, &l), None);
    }

    #[test]
    fn malformed_messages_are_refused_with_the_cause() {
        assert_eq!(parse(&[0u8; 10]), Err(DhcpError::Short(10)));
        let mut b = client(DISCOVER, None, None);
        b[0] = 2;
        assert_eq!(parse(&b), Err(DhcpError::NotRequest(2)));
        let mut b = client(DISCOVER, None, None);
        b[FIXED] = 0;
        assert_eq!(parse(&b), Err(DhcpError::NoMagic));
        let mut b = client(DISCOVER, None, None);
        b.truncate(FIXED + 4);
        b.extend_from_slice(&[50, 9, 1]);
        assert_eq!(parse(&b), Err(DhcpError::BadOption(50)));
        let mut b = client(DISCOVER, None, None);
        b.truncate(FIXED + 4);
        b.push(255);
        assert_eq!(parse(&b), Err(DhcpError::NoType));
    }
}
