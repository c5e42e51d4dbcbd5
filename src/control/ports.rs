//! Ports: a MAC address and fixed IPs on a network, bound to the node that carries them.
//! Addresses come from the allocation table: each is a record keyed by (subnet, address)
//! created with a "must not exist" condition in the port's own transaction, so an
//! address is never given to two ports, whichever node leads and however creates race.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::caller::Caller;
use super::networks::{ip_key, DEFAULT_PROJECT};
use super::{now_secs, Control, ControlError};
use crate::cluster::store::network_tables::{
    FixedIp, IpAllocations, MacAllocations, PortRecord, PortStatus, PortStatuses, Ports,
    SubnetRecord,
};
use crate::cluster::store::{StoreError, TxnBuilder};
use crate::ids::{NodeId, VmId};
use crate::network::ipam;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FixedIpRequest {
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreatePort {
    pub network: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub project: Option<String>,
    /// None: one address from the network's first subnet.
    #[serde(default)]
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub host: Option<NodeId>,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub device_owner: String,
    /// Groups by id or name; None: the project's `default` group.
    #[serde(default)]
    pub security_groups: Option<Vec<String>>,
    /// Off: no anti-spoofing and no filtering (and no groups).
    #[serde(default)]
    pub port_security: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortView {
    #[serde(flatten)]
    pub record: PortRecord,
    /// `ACTIVE` when its node's data plane carries it, `DOWN` when unbound or not yet.
    pub status: String,
    pub tap: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The TAP device name of a port (15 bytes at most, as Linux allows).
pub fn tap_name(port: &str) -> String {
    let short: String = port.chars().filter(|c| *c != '-').take(11).collect();
    format!("tap{short}")
}

impl Control {
    /// Creates a port for the caller's project (an administrator may name another). The
    /// network, subnets and security groups named resolve within the caller's reach, and
    /// the groups must belong to the port's project.
    pub async fn create_port(
        &self,
        caller: &Caller,
        req: CreatePort,
    ) -> Result<PortView, ControlError> {
        let invalid = |m: String| ControlError::Invalid(m);
        caller.need_writer()?;
        let project = caller
            .owner_for(req.project.as_deref())?
            .unwrap_or_else(|| DEFAULT_PROJECT.to_string());
        let net = self.find_network(caller, &req.network)?;
        self.check_quota(Some(&project), &[("port", 1)])?;
        if req.name.len() > 255 || req.name.chars().any(|c| c.is_control()) {
            return Err(invalid(format!(
                "port name {:?} must be at most 255 printable characters",
                req.name
            )));
        }
        let subnets = self.subnets_of(&net.id)?;
        let mac = match &req.mac {
            // Stored as parsed, so one address has one spelling (the uniqueness key).
            Some(m) => {
                let b = ipam::parse_mac(m).map_err(invalid)?;
                Some(
                    b.iter()
                        .map(|x| format!("{x:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                )
            }
            None => None,
        };
        if let Some(h) = req.host {
            self.store
                .get::<crate::cluster::store::tables::Nodes>(&h.to_string())?
                .ok_or_else(|| invalid(format!("no node {h} to bind the port to")))?;
        }
        let asked: Vec<FixedIpRequest> = match &req.fixed_ips {
            Some(v) => v.clone(),
            None if subnets.is_empty() => Vec::new(),
            None => vec![FixedIpRequest::default()],
        };
        // Which subnet each request is on, and a fixed address if one was named.
        let mut wanted: Vec<(SubnetRecord, Option<Ipv4Addr>)> = Vec::new();
        for r in &asked {
            let subnet = match (&r.subnet, &r.ip) {
                (Some(s), _) => {
                    let s = self.find_subnet(caller, s)?;
                    if s.network != net.id {
                        return Err(invalid(format!(
                            "subnet {} is not on network {}",
                            s.name, net.name
                        )));
                    }
                    s
                }
                (None, Some(ip)) => {
                    let a = ipam::parse_ip(ip).map_err(invalid)?;
                    subnets
                        .iter()
                        .find(|s| ipam::parse_cidr(&s.cidr).is_ok_and(|c| c.contains(&a)))
                        .cloned()
                        .ok_or_else(|| {
                            invalid(format!("{a} is in none of network {}'s subnets", net.name))
                        })?
                }
                (None, None) => subnets.first().cloned().ok_or_else(|| {
                    invalid(format!(
                        "network {} has no subnet to take an address from",
                        net.name
                    ))
                })?,
            };
            let ip = match &r.ip {
                Some(ip) => {
                    let a = ipam::parse_ip(ip).map_err(invalid)?;
                    let cidr = ipam::parse_cidr(&subnet.cidr).map_err(invalid)?;
                    if !ipam::is_host(&cidr, a) {
                        return Err(invalid(format!(
                            "{a} is not a host address of subnet {} ({})",
                            subnet.name, subnet.cidr
                        )));
                    }
                    if subnet.gateway_ip.as_deref() == Some(&a.to_string())
                        && req.device_owner != super::routers::OWNER_INTERFACE
                    {
                        return Err(invalid(format!(
                            "{a} is the gateway of subnet {}",
                            subnet.name
                        )));
                    }
                    Some(a)
                }
                None => None,
            };
            wanted.push((subnet, ip));
        }
        let port_security = req.port_security.unwrap_or(true);
        let groups = self
            .resolve_groups(
                caller,
                &project,
                port_security,
                req.security_groups.as_deref(),
            )
            .await?;
        let id = VmId::random().0;
        for _ in 0..16 {
            let mut fixed = Vec::new();
            let mut txn = TxnBuilder::new();
            let mut mine: BTreeSet<String> = BTreeSet::new();
            for (subnet, ip) in &wanted {
                let ip = match ip {
                    Some(a) => {
                        let key = ip_key(&subnet.id, &a.to_string());
                        if let Some(owner) = self.store.get::<IpAllocations>(&key)? {
                            return Err(invalid(format!(
                                "{a} is already in use on subnet {} ({})",
                                subnet.name,
                                describe_owner(&owner.value)
                            )));
                        }
                        *a
                    }
                    None => self.free_ip(subnet, &mine)?,
                };
                let key = ip_key(&subnet.id, &ip.to_string());
                mine.insert(key.clone());
                txn = txn
                    .require_revision::<IpAllocations>(key.clone(), 0)
                    .put::<IpAllocations>(key, &id);
                fixed.push(FixedIp {
                    subnet: subnet.id.clone(),
                    ip: ip.to_string(),
                });
            }
            let mac = mac.clone().unwrap_or_else(ipam::random_mac);
            if req.mac.is_some() {
                if let Some(owner) = self.store.get::<MacAllocations>(&mac)? {
                    return Err(invalid(format!(
                        "MAC address {mac} is already used by port {}",
                        owner.value
                    )));
                }
            }
            let rec = PortRecord {
                id: id.clone(),
                name: req.name.clone(),
                network: net.id.clone(),
                project: project.clone(),
                mac: mac.clone(),
                fixed_ips: fixed,
                device_id: req.device_id.clone(),
                device_owner: req.device_owner.clone(),
                host: req.host,
                security_groups: groups.clone(),
                port_security,
                admin_state_up: true,
                created_at: now_secs(),
            };
            let txn = txn
                .require_revision::<MacAllocations>(mac.clone(), 0)
                .put::<MacAllocations>(mac.clone(), &id)
                .require_revision::<Ports>(id.clone(), 0)
                .put::<Ports>(id.clone(), &rec);
            let msg = format!(
                "port {id} created on network {} ({}, {})",
                net.name,
                mac,
                rec.fixed_ips
                    .iter()
                    .map(|f| f.ip.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            match self
                .store
                .commit(self.with_event(txn, "port.created", msg))
                .await
            {
                Ok(_) => return self.port(&Caller::system(), &id),
                // An address or MAC was taken meanwhile: pick again.
                Err(StoreError::Conflict { .. }) => {
                    if wanted.iter().any(|(_, ip)| ip.is_some()) && req.mac.is_some() {
                        return Err(invalid(
                            "the addresses asked for were taken meanwhile".into(),
                        ));
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControlError::NotReady(
            "address allocation kept conflicting with concurrent creates; try again".into(),
        ))
    }

    /// The lowest free address of a subnet's pools (`also`: keys this request holds).
    fn free_ip(&self, s: &SubnetRecord, also: &BTreeSet<String>) -> Result<Ipv4Addr, ControlError> {
        let prefix = format!("{}/", s.id);
        let taken: BTreeSet<Ipv4Addr> = self
            .store
            .list::<IpAllocations>()?
            .into_iter()
            .map(|a| a.key)
            .chain(also.iter().cloned())
            .filter_map(|k| k.strip_prefix(&prefix).and_then(|ip| ip.parse().ok()))
            .collect();
        let pools: Vec<(Ipv4Addr, Ipv4Addr)> = s
            .allocation_pools
            .iter()
            .filter_map(|p| Some((p.start.parse().ok()?, p.end.parse().ok()?)))
            .collect();
        ipam::next_free(&pools, &taken).ok_or_else(|| {
            ControlError::Invalid(format!(
                "subnet {} ({}) has no free address left",
                s.name, s.cidr
            ))
        })
    }

    pub fn find_port(&self, caller: &Caller, id_or_name: &str) -> Result<PortRecord, ControlError> {
        Ok(self
            .find_scoped::<Ports>(caller, "port", id_or_name, |p| &p.name)?
            .value)
    }

    pub fn port(&self, caller: &Caller, id_or_name: &str) -> Result<PortView, ControlError> {
        let rec = self.find_port(caller, id_or_name)?;
        let st = self.store.get::<PortStatuses>(&rec.id)?.map(|s| s.value);
        Ok(port_view(rec, st))
    }

    pub fn ports(&self) -> Result<Vec<PortView>, ControlError> {
        let statuses: std::collections::BTreeMap<String, PortStatus> = self
            .store
            .list::<PortStatuses>()?
            .into_iter()
            .map(|s| (s.key, s.value))
            .collect();
        let mut out: Vec<PortView> = self
            .store
            .list::<Ports>()?
            .into_iter()
            .map(|p| {
                let st = statuses.get(&p.value.id).cloned();
                port_view(p.value, st)
            })
            .collect();
        out.sort_by(|a, b| {
            a.record
                .created_at
                .cmp(&b.record.created_at)
                .then(a.record.id.cmp(&b.record.id))
        });
        Ok(out)
    }

    /// Group ids for a port: none without port security, the named ones, or the
    /// project's default group.
    async fn resolve_groups(
        &self,
        caller: &Caller,
        project: &str,
        port_security: bool,
        asked: Option<&[String]>,
    ) -> Result<Vec<String>, ControlError> {
        match (port_security, asked) {
            (false, Some(g)) if !g.is_empty() => Err(ControlError::Invalid(
                "a port without port security cannot have security groups".into(),
            )),
            (false, _) => Ok(Vec::new()),
            (true, Some(g)) => {
                let mut out = Vec::new();
                for name in g {
                    let id = if name == "default" {
                        self.default_secgroup(project).await?
                    } else {
                        let g = self.find_secgroup(caller, name)?;
                        if g.project != project {
                            // An administrator's reach: still not another project's group.
                            return Err(ControlError::NotFound(format!(
                                "no security group {name:?} in project {project}"
                            )));
                        }
                        g.id
                    };
                    if !out.contains(&id) {
                        out.push(id);
                    }
                }
                Ok(out)
            }
            (true, None) => Ok(vec![self.default_secgroup(project).await?]),
        }
    }

    /// Replaces a port's security groups and port security flag.
    pub async fn set_port_security(
        &self,
        caller: &Caller,
        id_or_name: &str,
        groups: Option<Vec<String>>,
        port_security: Option<bool>,
    ) -> Result<PortView, ControlError> {
        caller.need_writer()?;
        loop {
            let cur = self.find_scoped::<Ports>(caller, "port", id_or_name, |p| &p.name)?;
            let mut rec = cur.value.clone();
            let ps = port_security.unwrap_or(rec.port_security);
            rec.security_groups = match (&groups, ps) {
                (Some(g), _) => {
                    self.resolve_groups(caller, &rec.project, ps, Some(g))
                        .await?
                }
                (None, false) => Vec::new(),
                (None, true) if !rec.port_security => {
                    self.resolve_groups(caller, &rec.project, true, None)
                        .await?
                }
                (None, true) => rec.security_groups.clone(),
            };
            rec.port_security = ps;
            let txn = TxnBuilder::new()
                .require_revision::<Ports>(rec.id.clone(), cur.revision)
                .put::<Ports>(rec.id.clone(), &rec);
            let msg = format!(
                "port {}: security groups [{}], port security {}",
                rec.id,
                rec.security_groups.join(", "),
                if ps { "on" } else { "off" }
            );
            match self
                .store
                .commit(self.with_event(txn, "port.security", msg))
                .await
            {
                Ok(_) => return self.port(&Caller::system(), &rec.id),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Binds a port to a node (None: unbinds it); its data plane moves there.
    pub async fn bind_port(
        &self,
        id_or_name: &str,
        host: Option<NodeId>,
    ) -> Result<PortView, ControlError> {
        if let Some(h) = host {
            self.store
                .get::<crate::cluster::store::tables::Nodes>(&h.to_string())?
                .ok_or_else(|| ControlError::Invalid(format!("no node {h} to bind the port to")))?;
        }
        loop {
            let cur = self.find_named::<Ports>("port", id_or_name, |p| &p.name)?;
            let mut rec = cur.value.clone();
            if rec.host == host {
                return self.port(&Caller::system(), &rec.id);
            }
            rec.host = host;
            let txn = TxnBuilder::new()
                .require_revision::<Ports>(rec.id.clone(), cur.revision)
                .put::<Ports>(rec.id.clone(), &rec);
            let msg = format!(
                "port {} bound to {}",
                rec.id,
                host.map(|h| format!("node {h}"))
                    .unwrap_or_else(|| "no node".into())
            );
            match self
                .store
                .commit(self.with_event(txn, "port.bound", msg))
                .await
            {
                Ok(_) => return self.port(&Caller::system(), &rec.id),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub async fn delete_port(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<PortRecord, ControlError> {
        caller.need_writer()?;
        let p = self.find_port(caller, id_or_name)?;
        if p.device_owner.starts_with("compute:") {
            if let Some(vm) = self
                .store
                .get::<crate::cluster::store::compute_tables::Vms>(&p.device_id)?
            {
                return Err(ControlError::Invalid(format!(
                    "port {} is a NIC of VM {}; delete the VM, or detach the port first",
                    p.id, vm.value.name
                )));
            }
        }
        let txn = delete_ops(TxnBuilder::new(), &p);
        let msg = format!("port {} ({}) deleted", p.id, p.mac);
        self.store
            .commit(self.with_event(txn, "port.deleted", msg))
            .await?;
        Ok(p)
    }

    /// A node's agent reports what its data plane does with a port (only changes).
    pub async fn report_port_status(
        &self,
        port: &str,
        status: PortStatus,
    ) -> Result<(), ControlError> {
        let cur = self.store.get::<PortStatuses>(port)?;
        if cur.as_ref().is_some_and(|c| {
            c.value.status == status.status
                && c.value.node == status.node
                && c.value.detail == status.detail
                && c.value.tap == status.tap
        }) {
            return Ok(());
        }
        if self.store.get::<Ports>(port)?.is_none() {
            return Ok(());
        }
        let txn = TxnBuilder::new().put::<PortStatuses>(port.to_string(), &status);
        self.store.commit(txn).await?;
        Ok(())
    }
}

/// Adds the deletes of a port and its allocations to a transaction.
pub fn delete_ops(txn: TxnBuilder, p: &PortRecord) -> TxnBuilder {
    let mut txn = txn
        .delete::<Ports>(p.id.clone())
        .delete::<PortStatuses>(p.id.clone())
        .delete::<MacAllocations>(p.mac.clone());
    for f in &p.fixed_ips {
        txn = txn.delete::<IpAllocations>(ip_key(&f.subnet, &f.ip));
    }
    txn
}

fn describe_owner(owner: &str) -> String {
    match owner.strip_prefix("service:") {
        Some(_) => "Strata's DHCP and metadata service".into(),
        None => format!("port {owner}"),
    }
}

fn port_view(rec: PortRecord, st: Option<PortStatus>) -> PortView {
    let (status, tap, detail) = match st {
        Some(s) if Some(s.node) == rec.host => (s.status, Some(s.tap), s.detail),
        _ => ("DOWN".to_string(), None, String::new()),
    };
    PortView {
        record: rec,
        status,
        tap,
        detail,
    }
}
