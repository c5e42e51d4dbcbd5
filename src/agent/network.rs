//! This node's share of the tenant networks: from the ports bound here and the cluster
//! state, the plan for the data plane (bridges, VXLAN devices, TAPs, forwarding and ARP
//! entries for remote ports, service namespaces) applied on every change and every few
//! seconds (so a restart or a missed change is repaired), the DHCP servers of those
//! networks, and each local port's status in the cluster state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::store::network_tables::{FloatingIpRecord, FloatingIps, RouterRecord, Routers};
use crate::cluster::store::network_tables::{
    NetworkRecord, Networks, PortRecord, PortStatus, Ports, SecurityGroupRecord, SecurityGroups,
    SubnetRecord, Subnets,
};
use crate::cluster::store::tables::Nodes;
use crate::control::ports::tap_name;
use crate::control::routers::{OWNER_GATEWAY, OWNER_INTERFACE};
use crate::control::{now_secs, Control};
use crate::ids::NodeId;
use crate::network::dataplane::{router_link_name, RouterLink, RouterPlan};
use crate::network::dataplane::{DataPlane, NetworkPlan, Remote, Service};
use crate::network::dhcp::Lease;
use crate::network::dhcpd::DhcpServer;
use crate::network::firewall::{FirewallPlan, FirewallPort};

/// The NAT table in a router's namespace.
const ROUTER_NAT_TABLE: &str = "strata_nat";
use crate::network::ipam;
use crate::network::metadata::{InstanceMeta, MetadataServer, MetadataSource};
use crate::network::netns::Netns;
use crate::telemetry::error_chain;

/// The metadata service's address, reachable from every port through its network's
/// service interface.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const LEASE_SECS: u32 = 86_400;

/// The service interface's MAC of a network: the same on every node.
pub fn service_mac(vni: u32) -> [u8; 6] {
    let v = vni.to_be_bytes();
    [0xfa, 0x16, 0x3f, v[1], v[2], v[3]]
}

pub struct NetworkAgent {
    control: Arc<Control>,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    dataplane: Option<DataPlane>,
    namespaces: BTreeMap<u32, Netns>,
    dhcp: BTreeMap<u32, DhcpServer>,
    last_error: Option<String>,
    /// The nft script last applied (reapplied only when it changes, or after a failure).
    firewall: Option<String>,
    metadata: BTreeMap<u32, MetadataServer>,
    routers: BTreeMap<String, Netns>,
}

impl NetworkAgent {
    pub fn new(control: Arc<Control>) -> Arc<Self> {
        Arc::new(NetworkAgent {
            control,
            state: tokio::sync::Mutex::new(State::default()),
        })
    }

    pub async fn run(self: Arc<Self>) {
        let mut changes = self.control.store.watch();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !super::next_pass(&mut changes, &mut tick).await {
                return;
            }
            self.reconcile().await;
        }
    }

    async fn reconcile(&self) {
        let me = self.control.node;
        let plan = match self.plan() {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "network state not readable yet");
                return;
            }
        };
        let mut st = self.state.lock().await;
        if plan.networks.is_empty() && st.dataplane.is_none() {
            return;
        }
        if st.dataplane.is_none() {
            match DataPlane::new(plan.local) {
                Ok(d) => st.dataplane = Some(d),
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "no network data plane on this node");
                    return;
                }
            }
        }
        // Service namespaces: one per network with a DHCP subnet here.
        let want_ns: BTreeSet<u32> = plan
            .networks
            .iter()
            .filter(|p| p.service.is_some())
            .map(|p| p.vni)
            .collect();
        st.dhcp.retain(|vni, _| want_ns.contains(vni));
        st.metadata.retain(|vni, _| want_ns.contains(vni));
        st.routers
            .retain(|id, _| plan.routers.iter().any(|r| &r.id == id));
        for r in &plan.routers {
            if !st.routers.contains_key(&r.id) {
                match Netns::create() {
                    Ok(ns) => {
                        st.routers.insert(r.id.clone(), ns);
                    }
                    Err(e) => {
                        tracing::warn!(router = %r.id, error = %e, "cannot create a router namespace")
                    }
                }
            }
        }
        st.namespaces.retain(|vni, _| want_ns.contains(vni));
        for vni in &want_ns {
            if !st.namespaces.contains_key(vni) {
                match Netns::create() {
                    Ok(ns) => {
                        st.namespaces.insert(*vni, ns);
                    }
                    Err(e) => tracing::warn!(vni, error = %e, "cannot create a service namespace"),
                }
            }
        }
        let State {
            dataplane,
            namespaces,
            dhcp,
            last_error,
            firewall,
            metadata,
            routers,
        } = &mut *st;
        let Some(dp) = dataplane.as_ref() else { return };
        let router_ns: Vec<(RouterPlan, &Netns)> = plan
            .routers
            .iter()
            .filter_map(|r| Some((r.clone(), routers.get(&r.id)?)))
            .collect();
        let result = dp.apply(&plan.networks, namespaces, &router_ns).await;
        let mut error = result.as_ref().err().map(|e| error_chain(e));
        if error.is_none() {
            let script = crate::network::firewall::script(&plan.firewall);
            if firewall.as_deref() != Some(script.as_str()) {
                match crate::network::firewall::apply(&script).await {
                    Ok(()) => {
                        tracing::info!(
                            ports = plan.firewall.ports.len(),
                            "security group rules applied"
                        );
                        *firewall = Some(script);
                    }
                    Err(e) => {
                        *firewall = None;
                        error = Some(e.to_string());
                    }
                }
            }
        }
        if error != *last_error {
            match &error {
                Some(e) => tracing::warn!(error = %e, "network data plane not applied"),
                None => {
                    tracing::info!(networks = plan.networks.len(), "network data plane applied")
                }
            }
            *last_error = error.clone();
        }
        if error.is_none() {
            for (vni, leases) in &plan.leases {
                let Some(ns) = namespaces.get(vni) else {
                    continue;
                };
                if !dhcp.get(vni).is_some_and(|d| d.is_running()) {
                    match DhcpServer::start(ns, *vni) {
                        Ok(d) => {
                            tracing::info!(vni, "DHCP server started");
                            dhcp.insert(*vni, d);
                        }
                        Err(e) => {
                            tracing::warn!(vni, error = %e, "cannot start the DHCP server");
                            continue;
                        }
                    }
                }
                if let Some(d) = dhcp.get(vni) {
                    *d.leases.write().unwrap_or_else(|p| p.into_inner()) = leases.clone();
                }
                if !metadata.get(vni).is_some_and(|m| m.is_running()) {
                    let source = Arc::new(StoreMetadata {
                        control: self.control.clone(),
                    });
                    match MetadataServer::start(ns, *vni, source) {
                        Ok(m) => {
                            metadata.insert(*vni, m);
                        }
                        Err(e) => {
                            tracing::warn!(vni, error = %e, "cannot start the metadata service")
                        }
                    }
                }
            }
        }
        drop(st);
        for p in &plan.local_ports {
            let (status, detail) = match &error {
                None if p.admin_state_up => ("ACTIVE", String::new()),
                None => ("DOWN", String::new()),
                Some(e) => ("ERROR", e.clone()),
            };
            let s = PortStatus {
                node: me,
                status: status.into(),
                tap: tap_name(&p.id),
                detail,
                updated_at: now_secs(),
            };
            if let Err(e) = self.control.report_port_status(&p.id, s).await {
                tracing::debug!(port = %p.id, error = %error_chain(&e), "cannot record port status");
            }
        }
    }

    fn plan(&self) -> Result<Plan, String> {
        let me = self.control.node;
        let err = |e: crate::cluster::store::StoreError| error_chain(&e);
        let store = &self.control.store;
        let nodes: BTreeMap<NodeId, Ipv4Addr> = store
            .list::<Nodes>()
            .map_err(err)?
            .into_iter()
            .filter_map(|n| match n.value.addr.ip() {
                IpAddr::V4(a) => Some((n.value.id, a)),
                IpAddr::V6(_) => None,
            })
            .collect();
        let local = *nodes.get(&me).ok_or("this node is not registered yet")?;
        let networks: BTreeMap<String, NetworkRecord> = store
            .list::<Networks>()
            .map_err(err)?
            .into_iter()
            .map(|n| (n.value.id.clone(), n.value))
            .collect();
        let subnets: Vec<SubnetRecord> = store
            .list::<Subnets>()
            .map_err(err)?
            .into_iter()
            .map(|s| s.value)
            .collect();
        let ports: Vec<PortRecord> = store
            .list::<Ports>()
            .map_err(err)?
            .into_iter()
            .map(|p| p.value)
            .collect();
        let local_ports: Vec<PortRecord> = ports
            .iter()
            .filter(|p| p.host == Some(me) && networks.contains_key(&p.network))
            .cloned()
            .collect();
        let all_routers: BTreeMap<String, RouterRecord> = store
            .list::<Routers>()
            .map_err(err)?
            .into_iter()
            .map(|r| (r.value.id.clone(), r.value))
            .collect();
        let port_host: BTreeMap<&str, NodeId> = ports
            .iter()
            .filter_map(|p| Some((p.id.as_str(), p.host?)))
            .collect();
        // Mapped floating IPs, with the node that translates each: the node hosting its
        // port (distributed), or the router's own node for ports there.
        let fips: Vec<(FloatingIpRecord, NodeId, RouterRecord)> = store
            .list::<FloatingIps>()
            .map_err(err)?
            .into_iter()
            .map(|f| f.value)
            .filter(|f| f.fixed_ip.is_some())
            .filter_map(|f| {
                let host = *port_host.get(f.port.as_deref()?)?;
                let r = all_routers.get(f.router.as_deref()?)?.clone();
                Some((f, host, r))
            })
            .collect();
        // The floating IPs a router's own node translates answer ARP at its gateway port.
        let fips_of = |router: &str| -> Vec<Ipv4Addr> {
            fips.iter()
                .filter(|(f, host, r)| f.router.as_deref() == Some(router) && *host == r.host)
                .filter_map(|(f, _, _)| f.ip.parse().ok())
                .collect()
        };
        // The others answer at a per-(router, node) interface on the node of their port.
        let mut fip_remotes: BTreeMap<String, Vec<Remote>> = BTreeMap::new();
        for (f, host, r) in fips
            .iter()
            .filter(|(_, host, r)| *host != r.host && *host != me)
        {
            let Some(node) = nodes.get(host) else {
                continue;
            };
            let Ok(ip) = f.ip.parse::<Ipv4Addr>() else {
                continue;
            };
            let mac = fip_mac(&r.id, *host);
            let list = fip_remotes.entry(f.network.clone()).or_default();
            match list.iter_mut().find(|x| x.mac == mac) {
                Some(x) => x.ips.push(ip),
                None => list.push(Remote {
                    mac,
                    node: *node,
                    ips: vec![ip],
                }),
            }
        }
        let local_fips: Vec<&(FloatingIpRecord, NodeId, RouterRecord)> = fips
            .iter()
            .filter(|(_, host, r)| *host == me && r.host != me)
            .collect();
        let mut here: BTreeSet<&str> = local_ports.iter().map(|p| p.network.as_str()).collect();
        here.extend(local_fips.iter().map(|(f, _, _)| f.network.as_str()));
        let mut plans = Vec::new();
        let mut leases = BTreeMap::new();
        for net_id in here {
            let net = &networks[net_id];
            let subs: Vec<&SubnetRecord> = subnets.iter().filter(|s| s.network == net.id).collect();
            let extra = fip_remotes.get(&net.id).cloned().unwrap_or_default();
            let remotes: Vec<Remote> = ports
                .iter()
                .filter(|p| p.network == net.id && p.host.is_some_and(|h| h != me))
                .filter_map(|p| {
                    let mut ips: Vec<Ipv4Addr> = p
                        .fixed_ips
                        .iter()
                        .filter_map(|f| f.ip.parse().ok())
                        .collect();
                    if p.device_owner == OWNER_GATEWAY {
                        ips.extend(fips_of(&p.device_id));
                    }
                    Some(Remote {
                        mac: ipam::parse_mac(&p.mac).ok()?,
                        node: *nodes.get(&p.host?)?,
                        ips,
                    })
                })
                .collect();
            let remotes: Vec<Remote> = remotes.into_iter().chain(extra).collect();
            let mut addrs: Vec<(Ipv4Addr, u8)> = subs
                .iter()
                .filter(|s| s.enable_dhcp)
                .filter_map(|s| {
                    let ip = s.service_ip.as_ref()?.parse().ok()?;
                    Some((ip, ipam::parse_cidr(&s.cidr).ok()?.prefix_len()))
                })
                .collect();
            let service = (!addrs.is_empty()).then(|| {
                addrs.push((METADATA_IP, 32));
                Service {
                    mac: service_mac(net.vni),
                    addrs,
                }
            });
            let mut net_leases = BTreeMap::new();
            for p in local_ports.iter().filter(|p| p.network == net.id) {
                if let Some(l) = lease_for(p, &subs, net) {
                    if let Ok(mac) = ipam::parse_mac(&p.mac) {
                        net_leases.insert(mac, l);
                    }
                }
            }
            if service.is_some() {
                leases.insert(net.vni, net_leases);
            }
            plans.push(NetworkPlan {
                vni: net.vni,
                mtu: net.mtu,
                taps: local_ports
                    .iter()
                    .filter(|p| p.network == net.id && !is_router_port(p))
                    .map(|p| tap_name(&p.id))
                    .collect(),
                remotes,
                service,
            });
        }
        let groups: BTreeMap<String, SecurityGroupRecord> = store
            .list::<SecurityGroups>()
            .map_err(err)?
            .into_iter()
            .map(|g| (g.value.id.clone(), g.value))
            .collect();
        let vm_ports: Vec<PortRecord> = local_ports
            .iter()
            .filter(|p| !is_router_port(p))
            .cloned()
            .collect();
        let mut firewall = firewall_plan(&plans, &vm_ports, &ports, &groups);
        let mut routers: Vec<RouterPlan> = all_routers
            .values()
            .filter(|r| r.host == me)
            .map(|r| {
                let fips: Vec<&FloatingIpRecord> = fips
                    .iter()
                    .filter(|(f, host, _)| {
                        f.router.as_deref() == Some(r.id.as_str()) && *host == me
                    })
                    .map(|(f, _, _)| f)
                    .collect();
                router_plan(r, &ports, &networks, &subnets, &fips)
            })
            .collect();
        // Floating IPs of ports here whose router lives elsewhere: translated here.
        let mut by_router: BTreeMap<&str, Vec<&FloatingIpRecord>> = BTreeMap::new();
        for (f, _, r) in &local_fips {
            by_router.entry(r.id.as_str()).or_default().push(f);
        }
        for (rid, fl) in by_router {
            let r = &all_routers[rid];
            if let Some((plan, rewrites)) = fip_instance(r, me, &fl, &ports, &networks, &subnets) {
                for (tap, from, to) in rewrites {
                    if let Some(fp) = firewall.ports.iter_mut().find(|p| p.tap == tap) {
                        fp.gateway_rewrite = Some((from, to));
                    }
                }
                routers.push(plan);
            }
        }
        Ok(Plan {
            local,
            networks: plans,
            leases,
            local_ports,
            firewall,
            routers,
        })
    }
}

struct Plan {
    local: Ipv4Addr,
    networks: Vec<NetworkPlan>,
    leases: BTreeMap<u32, BTreeMap<[u8; 6], Lease>>,
    local_ports: Vec<PortRecord>,
    firewall: FirewallPlan,
    routers: Vec<RouterPlan>,
}

/// The MAC of a router's floating IP interface on a node's external bridge, and of its
/// interface on a tenant bridge (`vni` > 0): stable, local to that node.
pub fn fip_mac(router: &str, node: NodeId) -> [u8; 6] {
    fip_mac_on(router, node, 0)
}

fn fip_mac_on(router: &str, node: NodeId, vni: u32) -> [u8; 6] {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{router}/{node}/{vni}").as_bytes());
    [
        0xfa,
        0x16,
        if vni == 0 { 0x3d } else { 0x3c },
        h[0],
        h[1],
        h[2],
    ]
}

/// A router's floating-IP instance on this node, for ports here whose router lives on
/// another node: an interface on the external bridge holding their floating IPs, one on
/// each of their tenant bridges, 1:1 translation, and tenant subnets routed on to the
/// router's own node. Also the (TAP, router MAC, instance MAC) rewrites that send the
/// ports' routed traffic here instead of to the router's node.
#[allow(clippy::type_complexity)]
fn fip_instance(
    r: &RouterRecord,
    me: NodeId,
    fips: &[&FloatingIpRecord],
    ports: &[PortRecord],
    networks: &BTreeMap<String, NetworkRecord>,
    subnets: &[SubnetRecord],
) -> Option<(RouterPlan, Vec<(String, String, String)>)> {
    let gw_port = ports
        .iter()
        .find(|p| Some(&p.id) == r.gateway_port.as_ref())?;
    let ext = networks.get(&gw_port.network)?;
    let ext_subnet = gw_port
        .fixed_ips
        .first()
        .and_then(|f| subnets.iter().find(|s| s.id == f.subnet))?;
    let ext_cidr = ipam::parse_cidr(&ext_subnet.cidr).ok()?;
    let short = |s: &str| -> String { s.chars().filter(|c| *c != '-').take(7).collect() };
    let outer_ext = format!("rf{}00", short(&r.id));
    let mut links = vec![RouterLink {
        outer: outer_ext.clone(),
        vni: ext.vni,
        mtu: ext.mtu,
        mac: fip_mac(&r.id, me),
        addrs: fips
            .iter()
            .filter_map(|f| Some((f.ip.parse().ok()?, 32)))
            .collect(),
        announce: macs_on(ports, &ext.id),
    }];
    let ext_inner = links[0].inner();
    let mut routes = vec![(
        ext_cidr.network(),
        ext_cidr.prefix_len(),
        None,
        ext_inner.clone(),
    )];
    let mut neighbours = Vec::new();
    let mut rewrites = Vec::new();
    let mut nat = format!("table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n  chain pre {{\n    type nat hook prerouting priority -100; policy accept;\n", t = ROUTER_NAT_TABLE);
    let mut post = String::new();
    for f in fips {
        let (Some(pid), Some(fixed)) = (&f.port, &f.fixed_ip) else {
            continue;
        };
        let Some(p) = ports.iter().find(|p| &p.id == pid) else {
            continue;
        };
        let Some(net) = networks.get(&p.network) else {
            continue;
        };
        let Some(fx) = p.fixed_ips.iter().find(|x| &x.ip == fixed) else {
            continue;
        };
        // The router's interface on the port's subnet: its MAC is what the port sends
        // routed traffic to; its address is where tenant traffic goes on from here.
        let Some(rif) = r
            .interface_ports
            .iter()
            .filter_map(|i| ports.iter().find(|p| &p.id == i))
            .find(|i| i.fixed_ips.iter().any(|x| x.subnet == fx.subnet))
        else {
            continue;
        };
        let outer = format!("rf{}{:02x}", short(&r.id), (net.vni % 255) + 1);
        if !links.iter().any(|l| l.outer == outer) {
            links.push(RouterLink {
                outer: outer.clone(),
                vni: net.vni,
                mtu: net.mtu,
                mac: fip_mac_on(&r.id, me, net.vni),
                addrs: Vec::new(),
                announce: Vec::new(),
            });
        }
        let inner = format!("ri{}", &outer[2..]);
        let (Ok(port_mac), Ok(rif_mac), Ok(fixed_ip)) = (
            ipam::parse_mac(&p.mac),
            ipam::parse_mac(&rif.mac),
            fixed.parse::<Ipv4Addr>(),
        ) else {
            continue;
        };
        neighbours.push((fixed_ip, port_mac, inner.clone()));
        routes.push((fixed_ip, 32, None, inner.clone()));
        if let Some(gw) = rif
            .fixed_ips
            .first()
            .and_then(|x| x.ip.parse::<Ipv4Addr>().ok())
        {
            neighbours.push((gw, rif_mac, inner.clone()));
            if let Some(s) = subnets.iter().find(|s| s.id == fx.subnet) {
                if let Ok(c) = ipam::parse_cidr(&s.cidr) {
                    routes.push((c.network(), c.prefix_len(), None, inner.clone()));
                }
            }
            for other in r
                .interface_ports
                .iter()
                .filter_map(|i| ports.iter().find(|p| &p.id == i))
            {
                for x in &other.fixed_ips {
                    if x.subnet == fx.subnet {
                        continue;
                    }
                    if let Some(c) = subnets
                        .iter()
                        .find(|s| s.id == x.subnet)
                        .and_then(|s| ipam::parse_cidr(&s.cidr).ok())
                    {
                        routes.push((c.network(), c.prefix_len(), Some(gw), inner.clone()));
                    }
                }
            }
        }
        nat += &format!("    ip daddr {} dnat to {fixed}\n", f.ip);
        post += &format!(
            "    oifname \"{ext_inner}\" ip saddr {fixed} snat to {}\n",
            f.ip
        );
        rewrites.push((
            tap_name(&p.id),
            p.mac.clone(),
            crate::network::dataplane::fmt_mac(&rif_mac),
            crate::network::dataplane::fmt_mac(&fip_mac_on(&r.id, me, net.vni)),
        ));
    }
    nat += &format!("  }}\n  chain post {{\n    type nat hook postrouting priority 100; policy accept;\n{post}  }}\n}}\n");
    let rewrites = rewrites
        .into_iter()
        .map(|(tap, _, from, to)| (tap, from, to))
        .collect();
    Some((
        RouterPlan {
            id: format!("{}@{me}", r.id),
            links,
            default_via: ext_subnet.gateway_ip.as_ref().and_then(|g| g.parse().ok()),
            nat,
            routes,
            neighbours,
        },
        rewrites,
    ))
}

/// The MACs of the ports of a network (whom to tell about a moved address).
fn macs_on(ports: &[PortRecord], network: &str) -> Vec<[u8; 6]> {
    ports
        .iter()
        .filter(|p| p.network == network)
        .filter_map(|p| ipam::parse_mac(&p.mac).ok())
        .collect()
}

fn is_router_port(p: &PortRecord) -> bool {
    p.device_owner == OWNER_GATEWAY || p.device_owner == OWNER_INTERFACE
}

/// A router hosted here: a link per port, floating IPs on its gateway link, the
/// external subnet's gateway as default route, and its address translation.
fn router_plan(
    r: &RouterRecord,
    ports: &[PortRecord],
    networks: &BTreeMap<String, NetworkRecord>,
    subnets: &[SubnetRecord],
    fips: &[&FloatingIpRecord],
) -> RouterPlan {
    let link = |pid: &str, extra: &[Ipv4Addr]| -> Option<(RouterLink, &PortRecord)> {
        let p = ports.iter().find(|p| p.id == pid)?;
        let net = networks.get(&p.network)?;
        let mut addrs: Vec<(Ipv4Addr, u8)> = p
            .fixed_ips
            .iter()
            .filter_map(|f| {
                let s = subnets.iter().find(|s| s.id == f.subnet)?;
                Some((
                    f.ip.parse().ok()?,
                    ipam::parse_cidr(&s.cidr).ok()?.prefix_len(),
                ))
            })
            .collect();
        addrs.extend(extra.iter().map(|a| (*a, 32)));
        Some((
            RouterLink {
                outer: router_link_name(&p.id),
                vni: net.vni,
                mtu: net.mtu,
                mac: ipam::parse_mac(&p.mac).ok()?,
                announce: if extra.is_empty() {
                    Vec::new()
                } else {
                    macs_on(ports, &p.network)
                },
                addrs,
            },
            p,
        ))
    };
    let fip_addrs: Vec<Ipv4Addr> = fips.iter().filter_map(|f| f.ip.parse().ok()).collect();
    let gw = r.gateway_port.as_deref().and_then(|g| link(g, &fip_addrs));
    let inner: Vec<(RouterLink, &PortRecord)> = r
        .interface_ports
        .iter()
        .filter_map(|i| link(i, &[]))
        .collect();
    let mut nat = format!("table ip {t}\ndelete table ip {t}\n", t = ROUTER_NAT_TABLE);
    let mut default_via = None;
    if let Some((g, gp)) = &gw {
        let ext_subnet = gp
            .fixed_ips
            .first()
            .and_then(|f| subnets.iter().find(|s| s.id == f.subnet));
        default_via = ext_subnet.and_then(|s| s.gateway_ip.as_ref()?.parse().ok());
        let out = g.inner();
        let gw_ip = gp
            .fixed_ips
            .first()
            .map(|f| f.ip.clone())
            .unwrap_or_default();
        let cidrs: Vec<String> = inner
            .iter()
            .flat_map(|(_, p)| p.fixed_ips.iter())
            .filter_map(|f| {
                subnets
                    .iter()
                    .find(|s| s.id == f.subnet)
                    .map(|s| s.cidr.clone())
            })
            .collect();
        nat += &format!(
            "table ip {ROUTER_NAT_TABLE} {{\n  chain pre {{\n    type nat hook prerouting priority -100; policy accept;\n"
        );
        for f in fips {
            if let Some(x) = &f.fixed_ip {
                nat += &format!("    ip daddr {} dnat to {x}\n", f.ip);
            }
        }
        nat += "  }\n  chain post {\n    type nat hook postrouting priority 100; policy accept;\n";
        for f in fips {
            if let Some(x) = &f.fixed_ip {
                nat += &format!("    oifname \"{out}\" ip saddr {x} snat to {}\n", f.ip);
            }
        }
        if !cidrs.is_empty() && !gw_ip.is_empty() {
            nat += &format!(
                "    oifname \"{out}\" ip saddr {{ {} }} snat to {gw_ip}\n",
                cidrs.join(", ")
            );
        }
        nat += "  }\n}\n";
    }
    RouterPlan {
        id: r.id.clone(),
        links: gw.into_iter().chain(inner).map(|(l, _)| l).collect(),
        default_via,
        nat,
        routes: Vec::new(),
        neighbours: Vec::new(),
    }
}

/// The security group rules of the local ports, and the members of every group they
/// use or name as a remote group.
fn firewall_plan(
    plans: &[NetworkPlan],
    local: &[PortRecord],
    all: &[PortRecord],
    groups: &BTreeMap<String, SecurityGroupRecord>,
) -> FirewallPlan {
    let mut used: BTreeMap<String, Vec<crate::cluster::store::network_tables::RuleRecord>> =
        BTreeMap::new();
    for p in local.iter().filter(|p| p.port_security) {
        for g in &p.security_groups {
            if let Some(rec) = groups.get(g) {
                used.insert(g.clone(), rec.rules.clone());
            }
        }
    }
    let mut wanted: BTreeSet<String> = used.keys().cloned().collect();
    for rules in used.values() {
        wanted.extend(rules.iter().filter_map(|r| r.remote_group.clone()));
    }
    let members = wanted
        .into_iter()
        .map(|g| {
            let ips: BTreeSet<Ipv4Addr> = all
                .iter()
                .filter(|p| p.security_groups.contains(&g))
                .flat_map(|p| p.fixed_ips.iter().filter_map(|f| f.ip.parse().ok()))
                .collect();
            (g, ips)
        })
        .collect();
    FirewallPlan {
        bridges: plans
            .iter()
            .map(|p| crate::network::dataplane::bridge_name(p.vni))
            .collect(),
        ports: local
            .iter()
            .map(|p| FirewallPort {
                tap: tap_name(&p.id),
                mac: p.mac.clone(),
                ips: p
                    .fixed_ips
                    .iter()
                    .filter_map(|f| f.ip.parse().ok())
                    .collect(),
                port_security: p.port_security,
                groups: p.security_groups.clone(),
                gateway_rewrite: None,
            })
            .collect(),
        groups: used,
        members,
    }
}

/// The DHCP lease of a port: its first address on a subnet with DHCP on.
fn lease_for(p: &PortRecord, subnets: &[&SubnetRecord], net: &NetworkRecord) -> Option<Lease> {
    p.fixed_ips.iter().find_map(|f| {
        let s = subnets.iter().find(|s| s.id == f.subnet && s.enable_dhcp)?;
        let server: Ipv4Addr = s.service_ip.as_ref()?.parse().ok()?;
        let cidr = ipam::parse_cidr(&s.cidr).ok()?;
        let ip: Ipv4Addr = f.ip.parse().ok()?;
        let mut routes: Vec<(Ipv4Addr, u8, Ipv4Addr)> = s
            .host_routes
            .iter()
            .filter_map(|r| {
                let d: ipnet::Ipv4Net = r.destination.parse().ok()?;
                Some((d.network(), d.prefix_len(), r.nexthop.parse().ok()?))
            })
            .collect();
        routes.push((METADATA_IP, 32, server));
        Some(Lease {
            ip,
            prefix: cidr.prefix_len(),
            gateway: s.gateway_ip.as_ref().and_then(|g| g.parse().ok()),
            server,
            dns: s
                .dns_nameservers
                .iter()
                .filter_map(|d| d.parse().ok())
                .collect(),
            mtu: net.mtu as u16,
            routes,
            hostname: format!("host-{}", f.ip.replace('.', "-")),
            lease_secs: LEASE_SECS,
        })
    })
}

/// What the metadata service would tell the VM behind `port` (a port this node
/// carries), for its config drive.
pub(super) fn port_metadata(control: &Arc<Control>, port: &str) -> Option<InstanceMeta> {
    let p = control.store.get::<Ports>(port).ok()??.value;
    let net = control.store.get::<Networks>(&p.network).ok()??.value;
    let ip = p.fixed_ips.first()?.ip.parse().ok()?;
    StoreMetadata {
        control: control.clone(),
    }
    .lookup(net.vni, ip)
}

/// Instance data from the cluster state, for the ports this node carries.
struct StoreMetadata {
    control: Arc<Control>,
}

impl MetadataSource for StoreMetadata {
    fn lookup(&self, vni: u32, ip: Ipv4Addr) -> Option<InstanceMeta> {
        let store = &self.control.store;
        let net = store
            .list::<Networks>()
            .ok()?
            .into_iter()
            .map(|n| n.value)
            .find(|n| n.vni == vni)?;
        let ip_s = ip.to_string();
        let port = store
            .list::<Ports>()
            .ok()?
            .into_iter()
            .map(|p| p.value)
            .find(|p| {
                p.network == net.id
                    && p.host == Some(self.control.node)
                    && p.fixed_ips.iter().any(|f| f.ip == ip_s)
            })?;
        let subnet_dns: Vec<String> = store
            .list::<Subnets>()
            .ok()?
            .into_iter()
            .map(|s| s.value)
            .filter(|s| port.fixed_ips.iter().any(|f| f.subnet == s.id))
            .flat_map(|s| s.dns_nameservers)
            .collect();
        let vm = store
            .get::<crate::cluster::store::compute_tables::Vms>(&port.device_id)
            .ok()
            .flatten()
            .map(|v| v.value);
        let (uuid, name) = match &vm {
            Some(v) => (v.id.0.clone(), v.name.clone()),
            None => (
                port.id.clone(),
                if port.name.is_empty() {
                    format!("host-{}", ip_s.replace('.', "-"))
                } else {
                    port.name.clone()
                },
            ),
        };
        let hostname: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        Some(InstanceMeta {
            uuid,
            name,
            hostname,
            project: port.project.clone(),
            public_keys: vm
                .as_ref()
                .map(|v| v.public_keys.clone())
                .unwrap_or_default(),
            user_data: vm
                .as_ref()
                .and_then(|v| v.user_data.clone())
                .map(String::into_bytes),
            port: port.id.clone(),
            network: net.id.clone(),
            mac: port.mac.clone(),
            ip,
            mtu: net.mtu,
            dns: subnet_dns,
        })
    }
}
