//! Tables of the network service, written by `control`: networks (each with its own VXLAN
//! VNI), subnets, ports with their fixed IPs, and the allocation tables that make VNIs,
//! MAC addresses and IP addresses unique: an allocation is a record keyed by the value,
//! created in the same transaction as its owner with a "must not exist" condition, so
//! two creates can never get the same value, whichever node leads.

use serde::{Deserialize, Serialize};

use super::tables::Table;
use crate::ids::NodeId;

pub struct Networks;
impl Table for Networks {
    const NAME: &'static str = "networks";
    type Value = NetworkRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NetworkRecord {
    /// A UUID.
    pub id: String,
    pub name: String,
    /// The owning project.
    pub project: String,
    /// The VXLAN network identifier of its segment (unique in the cluster).
    pub vni: u32,
    /// The MTU its ports get: the underlay's minus the VXLAN overhead.
    pub mtu: u32,
    /// Usable by every project (admin networks).
    #[serde(default)]
    pub shared: bool,
    /// The external network floating IPs come from.
    #[serde(default)]
    pub external: bool,
    pub created_at: u64,
}

/// VNI → network id.
pub struct Vnis;
impl Table for Vnis {
    const NAME: &'static str = "vnis";
    type Value = String;
}

pub struct Subnets;
impl Table for Subnets {
    const NAME: &'static str = "subnets";
    type Value = SubnetRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    pub destination: String,
    pub nexthop: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AllocationPool {
    pub start: String,
    pub end: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SubnetRecord {
    pub id: String,
    pub name: String,
    pub network: String,
    pub project: String,
    /// 4 or 6.
    pub ip_version: u8,
    /// In canonical form (host bits zero).
    pub cidr: String,
    #[serde(default)]
    pub gateway_ip: Option<String>,
    pub allocation_pools: Vec<AllocationPool>,
    #[serde(default)]
    pub dns_nameservers: Vec<String>,
    #[serde(default)]
    pub host_routes: Vec<HostRoute>,
    pub enable_dhcp: bool,
    /// The address Strata's DHCP and metadata service answers from on this subnet (the
    /// same on every node; each node answers for the ports it hosts).
    #[serde(default)]
    pub service_ip: Option<String>,
    pub created_at: u64,
}

pub struct Ports;
impl Table for Ports {
    const NAME: &'static str = "ports";
    type Value = PortRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FixedIp {
    pub subnet: String,
    pub ip: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PortRecord {
    pub id: String,
    pub name: String,
    pub network: String,
    pub project: String,
    /// `aa:bb:cc:dd:ee:ff`, unique in the cluster.
    pub mac: String,
    pub fixed_ips: Vec<FixedIp>,
    /// What uses it (a VM id), and how (`compute:nova`, `network:dhcp`, ...).
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub device_owner: String,
    /// The node whose data plane carries it (where its VM runs); None: unbound.
    #[serde(default)]
    pub host: Option<NodeId>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default = "yes")]
    pub port_security: bool,
    #[serde(default = "yes")]
    pub admin_state_up: bool,
    pub created_at: u64,
}

fn yes() -> bool {
    true
}

/// `<subnet id>/<ip>` → port id: an address is held by one port at a time.
pub struct IpAllocations;
impl Table for IpAllocations {
    const NAME: &'static str = "ip_allocations";
    type Value = String;
}

/// MAC → port id.
pub struct MacAllocations;
impl Table for MacAllocations {
    const NAME: &'static str = "mac_allocations";
    type Value = String;
}

/// What a node's network agent reports about the ports it carries, key = port id.
pub struct PortStatuses;
impl Table for PortStatuses {
    const NAME: &'static str = "port_statuses";
    type Value = PortStatus;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PortStatus {
    pub node: NodeId,
    /// `ACTIVE` once its TAP is on the network's bridge, `DOWN` otherwise, `ERROR` with
    /// the cause in `detail`.
    pub status: String,
    /// The TAP device carrying it on that node.
    pub tap: String,
    #[serde(default)]
    pub detail: String,
    pub updated_at: u64,
}

pub struct SecurityGroups;
impl Table for SecurityGroups {
    const NAME: &'static str = "security_groups";
    type Value = SecurityGroupRecord;
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic to the port.
    Ingress,
    /// Traffic from the port.
    Egress,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RuleRecord {
    pub id: String,
    pub direction: Direction,
    /// `tcp`, `udp`, `icmp`, or an IP protocol number; None: any.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port_range_min: Option<u16>,
    #[serde(default)]
    pub port_range_max: Option<u16>,
    /// The other end's addresses (ingress: source, egress: destination).
    #[serde(default)]
    pub remote_ip_prefix: Option<String>,
    /// Or the addresses of the ports in this group.
    #[serde(default)]
    pub remote_group: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecurityGroupRecord {
    pub id: String,
    pub name: String,
    pub project: String,
    #[serde(default)]
    pub description: String,
    pub rules: Vec<RuleRecord>,
    pub created_at: u64,
}

pub struct Routers;
impl Table for Routers {
    const NAME: &'static str = "routers";
    type Value = RouterRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RouterRecord {
    pub id: String,
    pub name: String,
    pub project: String,
    /// The node whose namespace routes and translates for it.
    pub host: NodeId,
    /// Its port on an external network (SNAT source for its subnets).
    #[serde(default)]
    pub gateway_port: Option<String>,
    /// Its ports on tenant subnets (each holding the subnet's gateway address).
    #[serde(default)]
    pub interface_ports: Vec<String>,
    pub created_at: u64,
}

pub struct FloatingIps;
impl Table for FloatingIps {
    const NAME: &'static str = "floating_ips";
    type Value = FloatingIpRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FloatingIpRecord {
    pub id: String,
    pub project: String,
    /// The external network and subnet it comes from.
    pub network: String,
    pub subnet: String,
    pub ip: String,
    /// The port it maps to 1:1, its fixed address, and the router that translates.
    #[serde(default)]
    pub port: Option<String>,
    #[serde(default)]
    pub fixed_ip: Option<String>,
    #[serde(default)]
    pub router: Option<String>,
    pub created_at: u64,
}
