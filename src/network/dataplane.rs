//! A node's overlay data plane, programmed through netlink (rtnetlink) from a desired
//! state: per network present on the node a bridge `sbr<vni>` and a VXLAN device
//! `svx<vni>` (UDP 4789, learning off, ARP proxy on) enslaved to it, a persistent TAP per
//! local port on the bridge, a forwarding entry per remote port (MAC → its node) and an
//! ARP entry per remote address on the VXLAN device, so nothing is flooded or learned.
//! A service veth `ssv<vni>` joins the bridge to a namespace where DHCP answers.
//!
//! [`DataPlane::apply`] is idempotent: it compares what the kernel has with what is
//! wanted and changes only the difference, removing devices of networks no longer here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan};

use super::netns::Netns;

pub const VXLAN_PORT: u16 = 4789;

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("netlink: {what}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> DataPlaneError {
    let what = what.into();
    move |source| DataPlaneError::Netlink { what, source }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// A port on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub mac: [u8; 6],
    pub node: Ipv4Addr,
    pub ips: Vec<Ipv4Addr>,
}

/// The service interface of a network on this node: its MAC (the same on every node)
/// and addresses (the subnets' service addresses, the metadata address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub mac: [u8; 6],
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    pub vni: u32,
    pub mtu: u32,
    pub taps: Vec<String>,
    pub remotes: Vec<Remote>,
    pub service: Option<Service>,
}

/// One interface of a router namespace: a veth whose outer end is on a network's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterLink {
    /// Outer (bridge side) name; the inner one is the same with `ri` for `rp`.
    pub outer: String,
    pub vni: u32,
    pub mtu: u32,
    pub mac: [u8; 6],
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// Whom to tell (gratuitous ARP) when an address appears here: the other ports of
    /// the network, which may have it cached at another MAC (a floating IP that moved).
    pub announce: Vec<[u8; 6]>,
}

impl RouterLink {
    pub fn inner(&self) -> String {
        format!("ri{}", &self.outer[2..])
    }
}

/// A router hosted on this node: its namespace's interfaces, default route, and the
/// nft script of its address translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPlan {
    pub id: String,
    pub links: Vec<RouterLink>,
    pub default_via: Option<Ipv4Addr>,
    pub nat: String,
    /// Extra routes: (destination, prefix, next hop or None for on-link, inner link).
    pub routes: Vec<(Ipv4Addr, u8, Option<Ipv4Addr>, String)>,
    /// Permanent neighbour entries: (address, MAC, inner link).
    pub neighbours: Vec<(Ipv4Addr, [u8; 6], String)>,
}

/// The outer name of a router port's veth.
pub fn router_link_name(port: &str) -> String {
    let short: String = port.chars().filter(|c| *c != '-').take(11).collect();
    format!("rp{short}")
}

pub fn bridge_name(vni: u32) -> String {
    format!("sbr{vni}")
}
pub fn vxlan_name(vni: u32) -> String {
    format!("svx{vni}")
}
pub fn service_name(vni: u32) -> String {
    format!("ssv{vni}")
}
/// The service veth's end inside the namespace.
pub const SERVICE_INNER: &str = "svc0";

#[derive(Debug, Clone)]
struct Link {
    index: u32,
    kind: Option<String>,
    master: Option<u32>,
    mtu: Option<u32>,
    up: bool,
}

pub struct DataPlane {
    handle: Handle,
    /// This node's underlay address (the VXLAN tunnels' local end).
    local: Ipv4Addr,
}

impl DataPlane {
    /// Connects to the kernel's routing netlink (must run inside a tokio runtime).
    pub fn new(local: Ipv4Addr) -> Result<Self, DataPlaneError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| DataPlaneError::Io {
            what: "cannot open a netlink socket".into(),
            source: e,
        })?;
        tokio::spawn(conn);
        Ok(DataPlane { handle, local })
    }

    async fn links(&self) -> Result<BTreeMap<String, Link>, DataPlaneError> {
        let mut out = BTreeMap::new();
        let mut s = self.handle.link().get().execute();
        while let Some(m) = s.try_next().await.map_err(nl("list links"))? {
            let mut link = Link {
                index: m.header.index,
                kind: None,
                master: None,
                mtu: None,
                up: m
                    .header
                    .flags
                    .contains(rtnetlink::packet_route::link::LinkFlags::Up),
            };
            let mut name = None;
            for a in &m.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::Controller(i) => link.master = Some(*i),
                    LinkAttribute::Mtu(v) => link.mtu = Some(*v),
                    LinkAttribute::LinkInfo(infos) => {
                        for i in infos {
                            if let LinkInfo::Kind(k) = i {
                                link.kind = Some(match k {
                                    InfoKind::Bridge => "bridge".into(),
                                    InfoKind::Vxlan => "vxlan".into(),
                                    InfoKind::Veth => "veth".into(),
                                    InfoKind::Tun => "tun".into(),
                                    other => format!("{other:?}"),
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Some(n) = name {
                out.insert(n, link);
            }
        }
        Ok(out)
    }

    async fn index(&self, name: &str) -> Result<Option<u32>, DataPlaneError> {
        link_index(&self.handle, name, "").await
    }

    /// Sets a link's master, MTU and up state where they differ.
    async fn settle(
        &self,
        name: &str,
        have: Option<&Link>,
        index: u32,
        master: Option<u32>,
        mtu: u32,
    ) -> Result<(), DataPlaneError> {
        let ok = have.is_some_and(|l| {
            l.up && l.mtu == Some(mtu) && (master.is_none() || l.master == master)
        });
        if ok {
            return Ok(());
        }
        let mut b = LinkUnspec::new_with_index(index).mtu(mtu).up();
        if let Some(m) = master {
            b = b.controller(m);
        }
        self.handle
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(nl(format!("configure {name}")))
    }

    /// Makes the kernel match `plans` (networks keyed by VNI). Service interfaces are
    /// moved into `namespaces[vni]`.
    pub async fn apply(
        &self,
        plans: &[NetworkPlan],
        namespaces: &BTreeMap<u32, Netns>,
        routers: &[(RouterPlan, &Netns)],
    ) -> Result<(), DataPlaneError> {
        let mut links = self.links().await?;
        let wanted_vnis: BTreeSet<u32> = plans.iter().map(|p| p.vni).collect();
        let wanted_taps: BTreeSet<&str> = plans
            .iter()
            .flat_map(|p| p.taps.iter().map(String::as_str))
            .collect();
        // Ours and no longer wanted: TAPs on our bridges, then the networks' devices.
        let our_bridges: BTreeMap<u32, u32> = links
            .iter()
            .filter_map(|(n, l)| Some((l.index, n.strip_prefix("sbr")?.parse::<u32>().ok()?)))
            .collect();
        for (name, l) in &links {
            let on_ours = l.master.is_some_and(|m| our_bridges.contains_key(&m));
            if l.kind.as_deref() == Some("tun") && on_ours && !wanted_taps.contains(name.as_str()) {
                self.delete(name, l.index).await?;
            }
        }
        let wanted_links: BTreeSet<&str> = routers
            .iter()
            .flat_map(|(r, _)| r.links.iter().map(|l| l.outer.as_str()))
            .collect();
        for (name, l) in &links {
            let vni = ["sbr", "svx", "ssv"]
                .iter()
                .find_map(|p| name.strip_prefix(p)?.parse::<u32>().ok());
            if let Some(v) = vni {
                if !wanted_vnis.contains(&v) {
                    self.delete(name, l.index).await?;
                }
            }
            let stale_router_link = (name.starts_with("rp") || name.starts_with("rf"))
                && l.kind.as_deref() == Some("veth")
                && !wanted_links.contains(name.as_str());
            if stale_router_link {
                self.delete(name, l.index).await?;
            }
        }
        links = self.links().await?;
        for p in plans {
            self.apply_network(p, &mut links, namespaces.get(&p.vni))
                .await?;
        }
        if !routers.is_empty() {
            links = self.links().await?;
        }
        for (r, ns) in routers {
            self.apply_router(r, &links, ns).await?;
        }
        Ok(())
    }

    /// A router's namespace: its links, forwarding on, the default route, its NAT.
    async fn apply_router(
        &self,
        r: &RouterPlan,
        links: &BTreeMap<String, Link>,
        ns: &Netns,
    ) -> Result<(), DataPlaneError> {
        for l in &r.links {
            let br = links
                .get(&bridge_name(l.vni))
                .map(|b| b.index)
                .ok_or_else(|| DataPlaneError::Io {
                    what: format!("router {}: no bridge for VNI {}", r.id, l.vni),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                })?;
            let added = self
                .ns_link(&l.outer, &l.inner(), br, l.mtu, l.mac, &l.addrs, links, ns)
                .await?;
            if !added.is_empty() {
                let (dev, mac, to) = (l.inner(), l.mac, l.announce.clone());
                let sent = ns.run(move || {
                    for ip in &added {
                        super::netns::send_garps(&dev, mac, *ip, &to)?;
                    }
                    Ok(())
                });
                match sent {
                    Ok(()) => {
                        tracing::info!(router = %r.id, link = %l.inner(), "announced new addresses by gratuitous ARP")
                    }
                    Err(e) => {
                        tracing::warn!(router = %r.id, error = %e, "cannot announce moved addresses")
                    }
                }
            }
        }
        let inner = NsLinks::open(ns).await?;
        for (ip, mac, dev) in &r.neighbours {
            inner.neighbour(dev, *ip, *mac).await?;
        }
        // On-link routes first, then routes through a next hop, then the default route:
        // a floating-IP instance holds only /32 addresses, so its next hops are reachable
        // only once the on-link routes exist.
        for on_link in [true, false] {
            for (dst, prefix, via, dev) in r.routes.iter().filter(|x| x.2.is_none() == on_link) {
                inner.route(*dst, *prefix, *via, dev).await?;
            }
        }
        inner.default_route(r.default_via).await?;
        let nat = r.nat.clone();
        ns.run(move || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
            run_nft(&nat)
        })
        .map_err(|e| DataPlaneError::Io {
            what: format!("router {}: forwarding and NAT", r.id),
            source: e,
        })
    }

    async fn delete(&self, name: &str, index: u32) -> Result<(), DataPlaneError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => {
                tracing::info!(device = name, "removed network device");
                Ok(())
            }
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(nl(format!("delete {name}"))(e)),
        }
    }

    async fn ensure(
        &self,
        name: &str,
        links: &BTreeMap<String, Link>,
        make: impl FnOnce() -> rtnetlink::packet_route::link::LinkMessage,
    ) -> Result<u32, DataPlaneError> {
        if let Some(l) = links.get(name) {
            return Ok(l.index);
        }
        match self.handle.link().add(make()).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(nl(format!("create {name}"))(e)),
        }
        tracing::info!(device = name, "created network device");
        self.index(name).await?.ok_or_else(|| DataPlaneError::Io {
            what: format!("{name} vanished right after it was created"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }

    async fn apply_network(
        &self,
        p: &NetworkPlan,
        links: &mut BTreeMap<String, Link>,
        ns: Option<&Netns>,
    ) -> Result<(), DataPlaneError> {
        let (br, vx) = (bridge_name(p.vni), vxlan_name(p.vni));
        let br_idx = self
            .ensure(&br, links, || LinkBridge::new(&br).mtu(p.mtu).build())
            .await?;
        self.settle(&br, links.get(&br), br_idx, None, p.mtu)
            .await?;
        let vx_idx = self
            .ensure(&vx, links, || {
                LinkVxlan::new(&vx, p.vni)
                    .local(self.local)
                    .port(VXLAN_PORT)
                    .learning(false)
                    .proxy(true)
                    .mtu(p.mtu)
                    .build()
            })
            .await?;
        self.settle(&vx, links.get(&vx), vx_idx, Some(br_idx), p.mtu)
            .await?;
        for tap in &p.taps {
            if !links.contains_key(tap) {
                super::tap::create_persistent(tap).map_err(|e| DataPlaneError::Io {
                    what: format!("create TAP {tap}"),
                    source: e,
                })?;
                tracing::info!(device = %tap, "created TAP");
            }
            let idx = self.index(tap).await?.ok_or_else(|| DataPlaneError::Io {
                what: format!("TAP {tap} vanished"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
            self.settle(tap, links.get(tap), idx, Some(br_idx), p.mtu)
                .await?;
        }
        self.apply_fdb(vx_idx, &p.remotes).await?;
        self.apply_neighbours(vx_idx, &br, &p.remotes).await?;
        match (&p.service, ns) {
            (Some(s), Some(ns)) => self.apply_service(p, s, br_idx, links, ns).await?,
            _ => {
                let name = service_name(p.vni);
                if let Some(l) = links.get(&name) {
                    self.delete(&name, l.index).await?;
                }
            }
        }
        Ok(())
    }

    /// Forwarding entries on the VXLAN device: exactly one per remote MAC.
    async fn apply_fdb(&self, vx: u32, remotes: &[Remote]) -> Result<(), DataPlaneError> {
        let want: BTreeMap<[u8; 6], Ipv4Addr> = remotes.iter().map(|r| (r.mac, r.node)).collect();
        let mut have: BTreeMap<[u8; 6], Vec<Ipv4Addr>> = BTreeMap::new();
        let mut s = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        while let Some(n) = s.try_next().await.map_err(nl("list forwarding entries"))? {
            if n.header.ifindex != vx || !n.header.flags.contains(NeighbourFlags::Own) {
                continue;
            }
            let (mut mac, mut dst) = (None, None);
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                        let mut x = [0u8; 6];
                        x.copy_from_slice(m);
                        mac = Some(x);
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                        dst = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => dst = Some(*a),
                    _ => {}
                }
            }
            if let (Some(m), Some(d)) = (mac, dst) {
                have.entry(m).or_default().push(d);
            }
        }
        for (mac, dsts) in &have {
            if want.get(mac).is_some_and(|d| dsts == &vec![*d]) {
                continue;
            }
            for d in dsts {
                let msg = fdb_msg(vx, *mac, *d);
                match self.handle.neighbours().del(msg).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::ENOENT) => {}
                    Err(e) => {
                        return Err(nl(format!("remove forwarding entry {}", fmt_mac(mac)))(e))
                    }
                }
            }
        }
        for (mac, dst) in &want {
            if have.get(mac).is_some_and(|d| d == &vec![*dst]) {
                continue;
            }
            self.handle
                .neighbours()
                .add_bridge(vx, mac)
                .flags(NeighbourFlags::Own)
                .destination(IpAddr::V4(*dst))
                .replace()
                .execute()
                .await
                .map_err(nl(format!("add forwarding entry {} → {dst}", fmt_mac(mac))))?;
        }
        Ok(())
    }

    /// ARP entries on the VXLAN device (answered locally by its ARP proxy).
    /// An address that moved (its MAC changed, or it appeared here after the first pass)
    /// is announced by gratuitous ARP on the local bridge: the VXLAN ARP proxy answers
    /// requests locally and carries no ARP across the overlay, so guests that cached the
    /// old MAC would otherwise keep it until their cache expires.
    async fn apply_neighbours(
        &self,
        vx: u32,
        bridge: &str,
        remotes: &[Remote],
    ) -> Result<(), DataPlaneError> {
        let want: BTreeMap<Ipv4Addr, [u8; 6]> = remotes
            .iter()
            .flat_map(|r| r.ips.iter().map(move |ip| (*ip, r.mac)))
            .collect();
        let mut have: BTreeMap<Ipv4Addr, (Option<[u8; 6]>, NeighbourMessage)> = BTreeMap::new();
        let mut s = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(n) = s.try_next().await.map_err(nl("list ARP entries"))? {
            if n.header.ifindex != vx {
                continue;
            }
            let (mut ip, mut mac) = (None, None);
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(*a),
                    NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                        let mut x = [0u8; 6];
                        x.copy_from_slice(m);
                        mac = Some(x);
                    }
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                have.insert(ip, (mac, n));
            }
        }
        let known: BTreeMap<Ipv4Addr, Option<[u8; 6]>> =
            have.iter().map(|(ip, (mac, _))| (*ip, *mac)).collect();
        for (ip, (_, msg)) in have {
            if !want.contains_key(&ip) {
                match self.handle.neighbours().del(msg).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::ENOENT) => {}
                    Err(e) => return Err(nl(format!("remove ARP entry {ip}"))(e)),
                }
            }
        }
        for (ip, mac) in &want {
            if known.get(ip) == Some(&Some(*mac)) {
                continue;
            }
            self.handle
                .neighbours()
                .add(vx, IpAddr::V4(*ip))
                .link_layer_address(mac)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("add ARP entry {ip} → {}", fmt_mac(mac))))?;
            let moved = match known.get(ip) {
                Some(_) => true,
                None => !known.is_empty(),
            };
            if moved {
                if let Err(e) = super::netns::send_garps(bridge, *mac, *ip, &[]) {
                    tracing::debug!(%ip, error = %e, "cannot announce a moved address");
                } else {
                    tracing::info!(%ip, mac = %fmt_mac(mac), "announced a moved address on the local bridge");
                }
            }
        }
        Ok(())
    }

    /// The service veth: one end on the bridge, the other in the namespace with the
    /// service MAC and addresses.
    async fn apply_service(
        &self,
        p: &NetworkPlan,
        s: &Service,
        br: u32,
        links: &BTreeMap<String, Link>,
        ns: &Netns,
    ) -> Result<(), DataPlaneError> {
        self.ns_link(
            &service_name(p.vni),
            SERVICE_INNER,
            br,
            p.mtu,
            s.mac,
            &s.addrs,
            links,
            ns,
        )
        .await
        .map(|_| ())
    }

    /// A veth from bridge `br` (outer end `outer`) into `ns` (inner end `inner`, with `mac`
    /// and exactly `addrs`), made if either end is missing.
    #[allow(clippy::too_many_arguments)]
    async fn ns_link(
        &self,
        outer: &str,
        inner_name: &str,
        br: u32,
        mtu: u32,
        mac: [u8; 6],
        addrs: &[(Ipv4Addr, u8)],
        links: &BTreeMap<String, Link>,
        ns: &Netns,
    ) -> Result<Vec<Ipv4Addr>, DataPlaneError> {
        let peer = format!("{}x", &outer[..outer.len().min(14)]);
        let inner = NsLinks::open(ns).await?;
        let inside = inner.index(inner_name).await?;
        if inside.is_none() || !links.contains_key(outer) {
            // (Re)make the pair: a half left from before is dropped first.
            if let Some(l) = links.get(outer) {
                self.delete(outer, l.index).await?;
            }
            self.handle
                .link()
                .add(LinkVeth::new(outer, &peer).mtu(mtu).build())
                .execute()
                .await
                .map_err(nl(format!("create {outer}")))?;
            let pidx = self.index(&peer).await?.ok_or_else(|| DataPlaneError::Io {
                what: format!("{peer} vanished"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
            self.handle
                .link()
                .set(
                    LinkUnspec::new_with_index(pidx)
                        .address(mac.to_vec())
                        .setns_by_fd(ns.fd_raw())
                        .build(),
                )
                .execute()
                .await
                .map_err(nl(format!("move {peer} into its namespace")))?;
            inner.rename(&peer, inner_name).await?;
        }
        let oidx = self.index(outer).await?.ok_or_else(|| DataPlaneError::Io {
            what: format!("{outer} vanished"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        let fresh = self.links().await?;
        self.settle(outer, fresh.get(outer), oidx, Some(br), mtu)
            .await?;
        inner.configure(inner_name, mtu, addrs).await
    }
}

/// Runs `nft -f -` with `script` (in the calling thread's network namespace).
pub fn run_nft(script: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Netlink inside a service namespace.
struct NsLinks {
    handle: Handle,
}

impl NsLinks {
    async fn open(ns: &Netns) -> Result<Self, DataPlaneError> {
        use std::os::fd::{FromRawFd, IntoRawFd};
        let sock = ns
            .run(|| rtnetlink::sys::Socket::new(rtnetlink::sys::protocols::NETLINK_ROUTE))
            .map_err(|e| DataPlaneError::Io {
                what: "open netlink in the service namespace".into(),
                source: e,
            })?;
        // SAFETY: the fd comes from a socket we own and give up here.
        let sock = unsafe { rtnetlink::sys::TokioSocket::from_raw_fd(sock.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(sock);
        tokio::spawn(conn);
        Ok(NsLinks { handle })
    }

    async fn index(&self, name: &str) -> Result<Option<u32>, DataPlaneError> {
        link_index(&self.handle, name, " in the service namespace").await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), DataPlaneError> {
        let idx = self.index(from).await?.ok_or_else(|| DataPlaneError::Io {
            what: format!("{from} did not arrive in the service namespace"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).name(to).build())
            .execute()
            .await
            .map_err(nl(format!("rename {from}")))
    }

    /// A permanent neighbour entry (replaced if present).
    async fn neighbour(&self, dev: &str, ip: Ipv4Addr, mac: [u8; 6]) -> Result<(), DataPlaneError> {
        let idx = self.index(dev).await?.ok_or_else(|| DataPlaneError::Io {
            what: format!("{dev} missing in its namespace"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        self.handle
            .neighbours()
            .add(idx, IpAddr::V4(ip))
            .link_layer_address(&mac)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("neighbour {ip} on {dev}")))
    }

    /// A route (replaced if present).
    async fn route(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        via: Option<Ipv4Addr>,
        dev: &str,
    ) -> Result<(), DataPlaneError> {
        let idx = self.index(dev).await?.ok_or_else(|| DataPlaneError::Io {
            what: format!("{dev} missing in its namespace"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        let mut b = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .output_interface(idx);
        b = match via {
            Some(v) => b.gateway(v),
            // On-link, as `ip route add ... dev` makes it: a next hop in this prefix is
            // then reachable for routes through it (the kernel wants a link-scope route
            // to a gateway).
            None => b.scope(rtnetlink::packet_route::route::RouteScope::Link),
        };
        self.handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(nl(format!("route {dst}/{prefix} via {dev}")))
    }

    /// Sets (or removes) the namespace's default route.
    async fn default_route(&self, via: Option<Ipv4Addr>) -> Result<(), DataPlaneError> {
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
        let mut have = None;
        let mut s = self
            .handle
            .route()
            .get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(m) = s.try_next().await.map_err(nl("list routes"))? {
            if m.header.destination_prefix_length != 0 {
                continue;
            }
            let gw = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                _ => None,
            });
            have = Some((gw, m));
        }
        match (have, via) {
            (Some((Some(g), _)), Some(v)) if g == v => Ok(()),
            (None, None) => Ok(()),
            (old, want) => {
                if let Some((_, m)) = old {
                    self.handle
                        .route()
                        .del(m)
                        .execute()
                        .await
                        .map_err(nl("remove the default route"))?;
                }
                if let Some(v) = want {
                    let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                        .gateway(v)
                        .build();
                    self.handle
                        .route()
                        .add(msg)
                        .execute()
                        .await
                        .map_err(nl(format!("add the default route via {v}")))?;
                }
                Ok(())
            }
        }
    }

    /// Brings `lo` and the interface up with exactly `addrs`.
    async fn configure(
        &self,
        name: &str,
        mtu: u32,
        addrs: &[(Ipv4Addr, u8)],
    ) -> Result<Vec<Ipv4Addr>, DataPlaneError> {
        if let Some(lo) = self.index("lo").await? {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .map_err(nl("bring up lo in the service namespace"))?;
        }
        let idx = self.index(name).await?.ok_or_else(|| DataPlaneError::Io {
            what: format!("{name} missing in the service namespace"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(nl(format!("bring up {name}")))?;
        let mut have = Vec::new();
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(idx)
            .execute();
        while let Some(m) = s.try_next().await.map_err(nl("list service addresses"))? {
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
                _ => None,
            });
            if let Some(ip) = ip {
                have.push(((ip, m.header.prefix_len), m));
            }
        }
        for (key, msg) in have.iter() {
            if !addrs.contains(key) {
                self.handle
                    .address()
                    .del(msg.clone())
                    .execute()
                    .await
                    .map_err(nl(format!("remove address {}/{}", key.0, key.1)))?;
            }
        }
        let mut added = Vec::new();
        for (ip, prefix) in addrs {
            if have.iter().any(|(k, _)| k == &(*ip, *prefix)) {
                continue;
            }
            added.push(*ip);
            self.handle
                .address()
                .add(idx, IpAddr::V4(*ip), *prefix)
                .execute()
                .await
                .map_err(nl(format!("add address {ip}/{prefix}")))?;
        }
        Ok(added)
    }
}

impl Netns {
    fn fd_raw(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.fd().as_raw_fd()
    }
}

/// A link's index by name (None if there is none), in the handle's namespace.
async fn link_index(
    handle: &Handle,
    name: &str,
    where_: &str,
) -> Result<Option<u32>, DataPlaneError> {
    match handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(m) => Ok(m.map(|m| m.header.index)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("look up {name}{where_}"))(e)),
    }
}

fn fdb_msg(ifindex: u32, mac: [u8; 6], dst: Ipv4Addr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = ifindex;
    m.header.state = rtnetlink::packet_route::neighbour::NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    m
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
