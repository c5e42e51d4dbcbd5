//! Networks and subnets: validation, VNI allocation, and the per-subnet service address
//! Strata's DHCP and metadata service answer from. Ports are in `ports.rs`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::caller::Caller;
use super::{now_secs, Control, ControlError};
use crate::cluster::store::network_tables::{
    AllocationPool, HostRoute, IpAllocations, NetworkRecord, Networks, Ports, SubnetRecord,
    Subnets, Vnis,
};
use crate::cluster::store::{StoreError, TxnBuilder};
use crate::ids::VmId;
use crate::network::ipam;

/// VNIs handed out from here up (lower ones are left for hand-made segments).
pub const VNI_FIRST: u32 = 1000;
pub const VNI_LAST: u32 = (1 << 24) - 1;
/// VXLAN over IPv4 adds 50 bytes to each frame.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The underlay MTU assumed for new networks.
pub const UNDERLAY_MTU: u32 = 1500;
/// The project resources belong to when none is named (the admin CLI's).
pub const DEFAULT_PROJECT: &str = "admin";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateNetwork {
    pub name: String,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub shared: bool,
    #[serde(default)]
    pub external: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateSubnet {
    pub name: String,
    pub network: String,
    pub cidr: String,
    /// None: the first host address; Some(""): no gateway.
    #[serde(default)]
    pub gateway_ip: Option<String>,
    #[serde(default)]
    pub allocation_pools: Vec<AllocationPool>,
    #[serde(default)]
    pub dns_nameservers: Vec<String>,
    #[serde(default)]
    pub host_routes: Vec<HostRoute>,
    #[serde(default)]
    pub enable_dhcp: Option<bool>,
    #[serde(default)]
    pub project: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkView {
    #[serde(flatten)]
    pub record: NetworkRecord,
    pub subnets: Vec<SubnetRecord>,
    pub ports: usize,
}

/// Key of an address in the allocation table.
pub fn ip_key(subnet: &str, ip: &str) -> String {
    format!("{subnet}/{ip}")
}

/// The owner recorded for a subnet's service address.
fn service_owner(subnet: &str) -> String {
    format!("service:{subnet}")
}

fn check_name(what: &str, name: &str) -> Result<(), ControlError> {
    if name.len() > 255 || name.chars().any(|c| c.is_control()) {
        return Err(ControlError::Invalid(format!(
            "{what} name {name:?} must be at most 255 printable characters"
        )));
    }
    Ok(())
}

impl Control {
    pub async fn create_network(
        &self,
        caller: &Caller,
        mut req: CreateNetwork,
    ) -> Result<NetworkRecord, ControlError> {
        caller.need_writer()?;
        req.project = caller.owner_for(req.project.as_deref())?;
        let name = req.name.trim().to_string();
        check_name("network", &name)?;
        self.check_quota(req.project.as_deref(), &[("network", 1)])?;
        let max = UNDERLAY_MTU - VXLAN_OVERHEAD;
        let mtu = req.mtu.unwrap_or(max);
        if !(576..=max).contains(&mtu) {
            return Err(ControlError::Invalid(format!(
                "MTU {mtu} must be between 576 and {max} (the underlay's {UNDERLAY_MTU} minus {VXLAN_OVERHEAD} bytes of VXLAN)"
            )));
        }
        let id = VmId::random().0;
        for _ in 0..8 {
            let used: BTreeSet<u32> = self
                .store
                .list::<Vnis>()?
                .into_iter()
                .filter_map(|v| v.key.parse().ok())
                .collect();
            let vni = (VNI_FIRST..=VNI_LAST)
                .find(|v| !used.contains(v))
                .ok_or_else(|| ControlError::Invalid("every VXLAN VNI is in use".into()))?;
            let rec = NetworkRecord {
                id: id.clone(),
                name: name.clone(),
                project: req
                    .project
                    .clone()
                    .unwrap_or_else(|| DEFAULT_PROJECT.to_string()),
                vni,
                mtu,
                shared: req.shared,
                external: req.external,
                created_at: now_secs(),
            };
            let txn = TxnBuilder::new()
                .require_revision::<Vnis>(vni.to_string(), 0)
                .put::<Vnis>(vni.to_string(), &id)
                .require_revision::<Networks>(id.clone(), 0)
                .put::<Networks>(id.clone(), &rec);
            let msg = format!("network {name} ({id}) created, VNI {vni}");
            match self
                .store
                .commit(self.with_event(txn, "network.created", msg))
                .await
            {
                Ok(_) => return Ok(rec),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControlError::NotReady(
            "VNI allocation kept conflicting with concurrent creates; try again".into(),
        ))
    }

    pub fn find_network(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<NetworkRecord, ControlError> {
        Ok(self
            .find_scoped::<Networks>(caller, "network", id_or_name, |n| &n.name)?
            .value)
    }

    pub fn network_view(&self, rec: NetworkRecord) -> Result<NetworkView, ControlError> {
        let subnets = self.subnets_of(&rec.id)?;
        let ports = self
            .store
            .list::<Ports>()?
            .iter()
            .filter(|p| p.value.network == rec.id)
            .count();
        Ok(NetworkView {
            record: rec,
            subnets,
            ports,
        })
    }

    pub fn networks(&self) -> Result<Vec<NetworkView>, ControlError> {
        let mut out = Vec::new();
        for n in self.store.list::<Networks>()? {
            out.push(self.network_view(n.value)?);
        }
        out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok(out)
    }

    pub fn subnets_of(&self, network: &str) -> Result<Vec<SubnetRecord>, ControlError> {
        let mut v: Vec<SubnetRecord> = self
            .store
            .list::<Subnets>()?
            .into_iter()
            .map(|s| s.value)
            .filter(|s| s.network == network)
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// Deletes a network and its subnets; refused while ports use it.
    pub async fn delete_network(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<NetworkRecord, ControlError> {
        caller.need_writer()?;
        let net = self.find_network(caller, id_or_name)?;
        if !caller.sees_project(Some(&net.project)) {
            return Err(ControlError::Forbidden(format!(
                "network {} is shared by another project; only its owner or an administrator deletes it",
                net.name
            )));
        }
        let ports: Vec<String> = self
            .store
            .list::<Ports>()?
            .into_iter()
            .filter(|p| p.value.network == net.id)
            .map(|p| p.value.id)
            .collect();
        if !ports.is_empty() {
            return Err(ControlError::Invalid(format!(
                "network {} still has {} port(s) ({}); delete them first",
                net.name,
                ports.len(),
                ports.join(", ")
            )));
        }
        let mut txn = TxnBuilder::new()
            .delete::<Networks>(net.id.clone())
            .delete::<Vnis>(net.vni.to_string());
        for s in self.subnets_of(&net.id)? {
            txn = txn.delete::<Subnets>(s.id.clone());
            if let Some(ip) = &s.service_ip {
                txn = txn.delete::<IpAllocations>(ip_key(&s.id, ip));
            }
        }
        let msg = format!("network {} ({}) deleted", net.name, net.id);
        self.store
            .commit(self.with_event(txn, "network.deleted", msg))
            .await?;
        Ok(net)
    }

    pub async fn create_subnet(
        &self,
        caller: &Caller,
        mut req: CreateSubnet,
    ) -> Result<SubnetRecord, ControlError> {
        let invalid = |m: String| ControlError::Invalid(m);
        caller.need_writer()?;
        req.project = caller.owner_for(req.project.as_deref())?;
        let name = req.name.trim().to_string();
        check_name("subnet", &name)?;
        self.check_quota(req.project.as_deref(), &[("subnet", 1)])?;
        let versioned =
            self.find_scoped::<Networks>(caller, "network", &req.network, |n| &n.name)?;
        let (net, net_rev) = (versioned.value, versioned.revision);
        if !caller.sees_project(Some(&net.project)) {
            // As Neutron: subnets go on one's own networks, not on shared ones.
            return Err(ControlError::Forbidden(format!(
                "network {} belongs to another project; only its owner or an administrator adds subnets",
                net.name
            )));
        }
        let cidr = ipam::parse_cidr(&req.cidr).map_err(invalid)?;
        let gw = match req.gateway_ip.as_deref() {
            Some("") => None,
            other => Some(ipam::gateway(&cidr, other).map_err(invalid)?),
        };
        let pools = ipam::pools(&cidr, gw, &req.allocation_pools).map_err(invalid)?;
        for d in &req.dns_nameservers {
            ipam::parse_ip(d).map_err(|e| invalid(format!("DNS server: {e}")))?;
        }
        for r in &req.host_routes {
            ipam::parse_cidr(&r.destination)
                .or_else(|e| {
                    // Host routes may name a single host or the default route.
                    r.destination
                        .parse::<ipnet::Ipv4Net>()
                        .map(|n| n.trunc())
                        .map_err(|_| e)
                })
                .map_err(|e| invalid(format!("host route destination: {e}")))?;
            ipam::parse_ip(&r.nexthop).map_err(|e| invalid(format!("host route nexthop: {e}")))?;
        }
        for other in self.subnets_of(&net.id)? {
            if let Ok(o) = ipam::parse_cidr(&other.cidr) {
                if ipam::overlap(&cidr, &o) {
                    return Err(invalid(format!(
                        "{cidr} overlaps subnet {} ({}) of network {}",
                        other.name, other.cidr, net.name
                    )));
                }
            }
        }
        let enable_dhcp = req.enable_dhcp.unwrap_or(true);
        // The service address: the first address of the pools (as Neutron's DHCP port).
        let service = if enable_dhcp {
            Some(
                ipam::next_free(&pools, &BTreeSet::new())
                    .ok_or_else(|| invalid(format!("{cidr} has no address left for DHCP")))?,
            )
        } else {
            None
        };
        let id = VmId::random().0;
        let rec = SubnetRecord {
            id: id.clone(),
            name: name.clone(),
            network: net.id.clone(),
            project: req.project.clone().unwrap_or_else(|| net.project.clone()),
            ip_version: 4,
            cidr: cidr.to_string(),
            gateway_ip: gw.map(|g| g.to_string()),
            allocation_pools: pools
                .iter()
                .map(|(s, e)| AllocationPool {
                    start: s.to_string(),
                    end: e.to_string(),
                })
                .collect(),
            dns_nameservers: req.dns_nameservers.clone(),
            host_routes: req.host_routes.clone(),
            enable_dhcp,
            service_ip: service.map(|s| s.to_string()),
            created_at: now_secs(),
        };
        // Rewriting the network serializes subnet creates on it (the overlap check above
        // holds for this commit only if no other subnet was added meanwhile).
        let mut txn = TxnBuilder::new()
            .require_revision::<Networks>(net.id.clone(), net_rev)
            .put::<Networks>(net.id.clone(), &net)
            .require_revision::<Subnets>(id.clone(), 0)
            .put::<Subnets>(id.clone(), &rec);
        if let Some(s) = service {
            let key = ip_key(&id, &s.to_string());
            txn = txn
                .require_revision::<IpAllocations>(key.clone(), 0)
                .put::<IpAllocations>(key, &service_owner(&id));
        }
        let msg = format!(
            "subnet {name} ({}) created on network {}{}",
            rec.cidr,
            net.name,
            service
                .map(|s| format!(", DHCP from {s}"))
                .unwrap_or_default()
        );
        self.store
            .commit(self.with_event(txn, "subnet.created", msg))
            .await
            .map_err(|e| match e {
                StoreError::Conflict { .. } => ControlError::Invalid(format!(
                    "network {} changed while the subnet was created; try again",
                    net.name
                )),
                e => e.into(),
            })?;
        Ok(rec)
    }

    pub fn find_subnet(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<SubnetRecord, ControlError> {
        Ok(self
            .find_scoped::<Subnets>(caller, "subnet", id_or_name, |s| &s.name)?
            .value)
    }

    pub fn subnets(&self) -> Result<Vec<SubnetRecord>, ControlError> {
        let mut v: Vec<SubnetRecord> = self
            .store
            .list::<Subnets>()?
            .into_iter()
            .map(|s| s.value)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// Deletes a subnet; refused while ports hold addresses in it.
    pub async fn delete_subnet(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<SubnetRecord, ControlError> {
        caller.need_writer()?;
        let s = self.find_subnet(caller, id_or_name)?;
        if !caller.sees_project(Some(&s.project)) {
            return Err(ControlError::Forbidden(format!(
                "subnet {} belongs to another project",
                s.name
            )));
        }
        let users: Vec<String> = self
            .store
            .list::<Ports>()?
            .into_iter()
            .filter(|p| p.value.fixed_ips.iter().any(|f| f.subnet == s.id))
            .map(|p| p.value.id)
            .collect();
        if !users.is_empty() {
            return Err(ControlError::Invalid(format!(
                "subnet {} still has addresses held by port(s) {}; delete them first",
                s.name,
                users.join(", ")
            )));
        }
        let mut txn = TxnBuilder::new().delete::<Subnets>(s.id.clone());
        if let Some(ip) = &s.service_ip {
            txn = txn.delete::<IpAllocations>(ip_key(&s.id, ip));
        }
        let msg = format!("subnet {} ({}) deleted", s.name, s.cidr);
        self.store
            .commit(self.with_event(txn, "subnet.deleted", msg))
            .await?;
        Ok(s)
    }
}
