//! Routers and floating IPs. A router lives on one node (chosen at creation, moved by
//! the leader if that node is lost): its namespace there holds a port on each tenant
//! subnet it joins (with the subnet's gateway address) and a port on an external network;
//! it routes between them, translates its subnets' traffic to its external address (SNAT),
//! and maps each floating IP 1:1 to a port's fixed address (DNAT in, SNAT out). Its ports
//! are ordinary ports, so the overlay reaches them from every node.

use serde::{Deserialize, Serialize};

use super::caller::Caller;
use super::networks::{ip_key, DEFAULT_PROJECT};
use super::ports::{CreatePort, FixedIpRequest};
use super::{now_secs, Control, ControlError};
use crate::cluster::membership::Liveness;
use crate::cluster::store::network_tables::{
    FloatingIpRecord, FloatingIps, IpAllocations, Ports, RouterRecord, Routers,
};
use crate::cluster::store::tables::Nodes;
use crate::cluster::store::{StoreError, TxnBuilder};
use crate::ids::{NodeId, VmId};
use crate::network::ipam;

pub const OWNER_INTERFACE: &str = "network:router_interface";
pub const OWNER_GATEWAY: &str = "network:router_gateway";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateRouter {
    pub name: String,
    #[serde(default)]
    pub project: Option<String>,
    /// An external network to set as its gateway right away.
    #[serde(default)]
    pub external_network: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateFloatingIp {
    /// The external network.
    pub network: String,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub port: Option<String>,
}

impl Control {
    /// A live node for a new router: the one with the fewest routers.
    fn router_host(&self, avoid: Option<NodeId>) -> Result<NodeId, ControlError> {
        let view = self.membership.view();
        let routers = self.store.list::<Routers>()?;
        self.store
            .list::<Nodes>()?
            .into_iter()
            .map(|n| n.value.id)
            .filter(|n| Some(*n) != avoid)
            .filter(|n| {
                *n == self.node || view.get(n).is_some_and(|p| p.liveness == Liveness::Alive)
            })
            .min_by_key(|n| (routers.iter().filter(|r| r.value.host == *n).count(), *n))
            .ok_or_else(|| ControlError::NotReady("no live node to host the router".into()))
    }

    pub async fn create_router(
        &self,
        caller: &Caller,
        req: CreateRouter,
    ) -> Result<RouterRecord, ControlError> {
        caller.need_writer()?;
        let name = req.name.trim().to_string();
        if name.len() > 255 || name.chars().any(|c| c.is_control()) {
            return Err(ControlError::Invalid(format!(
                "router name {name:?} must be at most 255 printable characters"
            )));
        }
        let project = caller
            .owner_for(req.project.as_deref())?
            .unwrap_or_else(|| DEFAULT_PROJECT.to_string());
        self.check_quota(Some(&project), &[("router", 1)])?;
        // The gateway's network is checked before anything is written.
        if let Some(ext) = &req.external_network {
            self.external_network(caller, ext)?;
        }
        let id = VmId::random().0;
        let rec = RouterRecord {
            id: id.clone(),
            name: name.clone(),
            project,
            host: self.router_host(None)?,
            gateway_port: None,
            interface_ports: Vec::new(),
            created_at: now_secs(),
        };
        let txn = TxnBuilder::new()
            .require_revision::<Routers>(id.clone(), 0)
            .put::<Routers>(id.clone(), &rec);
        let msg = format!("router {name} ({id}) created on node {}", rec.host);
        self.store
            .commit(self.with_event(txn, "router.created", msg))
            .await?;
        if let Some(ext) = req.external_network {
            return self.set_router_gateway(caller, &id, Some(&ext)).await;
        }
        Ok(rec)
    }

    pub fn find_router(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<RouterRecord, ControlError> {
        Ok(self
            .find_scoped::<Routers>(caller, "router", id_or_name, |r| &r.name)?
            .value)
    }

    pub fn routers(&self) -> Result<Vec<RouterRecord>, ControlError> {
        let mut v: Vec<RouterRecord> = self
            .store
            .list::<Routers>()?
            .into_iter()
            .map(|r| r.value)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// Read-modify-write of a router under a revision check.
    async fn update_router(
        &self,
        id: &str,
        kind: &str,
        edit: impl Fn(&mut RouterRecord) -> Result<String, ControlError>,
    ) -> Result<RouterRecord, ControlError> {
        loop {
            let cur = self.find_named::<Routers>("router", id, |r| &r.name)?;
            let mut rec = cur.value.clone();
            let msg = edit(&mut rec)?;
            let txn = TxnBuilder::new()
                .require_revision::<Routers>(rec.id.clone(), cur.revision)
                .put::<Routers>(rec.id.clone(), &rec);
            match self.store.commit(self.with_event(txn, kind, msg)).await {
                Ok(_) => return Ok(rec),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// An external network the caller can reach, by id or name.
    fn external_network(
        &self,
        caller: &Caller,
        network: &str,
    ) -> Result<crate::cluster::store::network_tables::NetworkRecord, ControlError> {
        let ext = self.find_network(caller, network)?;
        if !ext.external {
            return Err(ControlError::Invalid(format!(
                "network {} is not external (create it with --external)",
                ext.name
            )));
        }
        Ok(ext)
    }

    /// Sets (or clears, with None) the router's external gateway.
    pub async fn set_router_gateway(
        &self,
        caller: &Caller,
        router: &str,
        network: Option<&str>,
    ) -> Result<RouterRecord, ControlError> {
        caller.need_writer()?;
        let r = self.find_router(caller, router)?;
        let ext = network
            .map(|n| self.external_network(caller, n))
            .transpose()?;
        if let Some(old) = &r.gateway_port {
            if self
                .store
                .list::<FloatingIps>()?
                .iter()
                .any(|f| f.value.router.as_deref() == Some(r.id.as_str()))
            {
                return Err(ControlError::Invalid(format!(
                    "router {} translates floating IPs; disassociate them first",
                    r.name
                )));
            }
            self.update_router(&r.id, "router.gateway", |rec| {
                rec.gateway_port = None;
                Ok(format!("router {}: external gateway removed", rec.name))
            })
            .await?;
            self.delete_port(&Caller::system(), old).await?;
        }
        let Some(ext) = ext else {
            return self.find_router(&Caller::system(), &r.id);
        };
        let port = self
            .create_port(
                &Caller::system(),
                CreatePort {
                    network: ext.id.clone(),
                    name: format!("router-{}-gw", r.name),
                    project: Some(r.project.clone()),
                    host: Some(r.host),
                    device_id: r.id.clone(),
                    device_owner: OWNER_GATEWAY.into(),
                    port_security: Some(false),
                    ..Default::default()
                },
            )
            .await?;
        let pid = port.record.id.clone();
        let ip = port
            .record
            .fixed_ips
            .first()
            .map(|f| f.ip.clone())
            .unwrap_or_default();
        let res = self
            .update_router(&r.id, "router.gateway", |rec| {
                rec.gateway_port = Some(pid.clone());
                Ok(format!(
                    "router {}: external gateway on {} at {ip}",
                    rec.name, ext.name
                ))
            })
            .await;
        if res.is_err() {
            let _ = self.delete_port(&Caller::system(), &pid).await;
        }
        res
    }

    /// Joins a tenant subnet: a router port holding the subnet's gateway address. The
    /// subnet must be the router's project's, or on a shared network.
    pub async fn add_router_interface(
        &self,
        caller: &Caller,
        router: &str,
        subnet: &str,
    ) -> Result<RouterRecord, ControlError> {
        caller.need_writer()?;
        let r = self.find_router(caller, router)?;
        let s = self.find_subnet(caller, subnet)?;
        if s.project != r.project
            && !self
                .find_network(&Caller::system(), &s.network)
                .is_ok_and(|n| n.shared)
        {
            return Err(ControlError::NotFound(format!(
                "no subnet {subnet:?} in router {}'s project",
                r.name
            )));
        }
        let gw = s.gateway_ip.clone().ok_or_else(|| {
            ControlError::Invalid(format!(
                "subnet {} has no gateway address for a router to take",
                s.name
            ))
        })?;
        if let Some(owner) = self.store.get::<IpAllocations>(&ip_key(&s.id, &gw))? {
            return Err(ControlError::Invalid(format!(
                "the gateway {gw} of subnet {} is taken already (port {})",
                s.name, owner.value
            )));
        }
        let port = self
            .create_port(
                &Caller::system(),
                CreatePort {
                    network: s.network.clone(),
                    name: format!("router-{}-if", r.name),
                    project: Some(r.project.clone()),
                    fixed_ips: Some(vec![FixedIpRequest {
                        subnet: Some(s.id.clone()),
                        ip: Some(gw.clone()),
                    }]),
                    host: Some(r.host),
                    device_id: r.id.clone(),
                    device_owner: OWNER_INTERFACE.into(),
                    port_security: Some(false),
                    ..Default::default()
                },
            )
            .await?;
        let pid = port.record.id.clone();
        let res = self
            .update_router(&r.id, "router.interface", |rec| {
                rec.interface_ports.push(pid.clone());
                Ok(format!(
                    "router {}: interface on subnet {} ({}) at {gw}",
                    rec.name, s.name, s.cidr
                ))
            })
            .await;
        if res.is_err() {
            let _ = self.delete_port(&Caller::system(), &pid).await;
        }
        res
    }

    pub async fn remove_router_interface(
        &self,
        caller: &Caller,
        router: &str,
        subnet: &str,
    ) -> Result<RouterRecord, ControlError> {
        caller.need_writer()?;
        let r = self.find_router(caller, router)?;
        let s = self.find_subnet(caller, subnet)?;
        let port = r
            .interface_ports
            .iter()
            .filter_map(|p| self.store.get::<Ports>(p).ok().flatten())
            .find(|p| p.value.fixed_ips.iter().any(|f| f.subnet == s.id))
            .map(|p| p.value.id)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "router {} has no interface on subnet {}",
                    r.name, s.name
                ))
            })?;
        let rec = self
            .update_router(&r.id, "router.interface", |rec| {
                rec.interface_ports.retain(|p| *p != port);
                Ok(format!(
                    "router {}: interface on subnet {} removed",
                    rec.name, s.name
                ))
            })
            .await?;
        self.delete_port(&Caller::system(), &port).await?;
        Ok(rec)
    }

    pub async fn delete_router(
        &self,
        caller: &Caller,
        router: &str,
    ) -> Result<RouterRecord, ControlError> {
        caller.need_writer()?;
        let r = self.find_router(caller, router)?;
        if !r.interface_ports.is_empty() {
            return Err(ControlError::Invalid(format!(
                "router {} still has {} interface(s); remove them first",
                r.name,
                r.interface_ports.len()
            )));
        }
        self.set_router_gateway(&Caller::system(), &r.id, None)
            .await?;
        let txn = TxnBuilder::new().delete::<Routers>(r.id.clone());
        self.store
            .commit(self.with_event(
                txn,
                "router.deleted",
                format!("router {} ({}) deleted", r.name, r.id),
            ))
            .await?;
        Ok(r)
    }

    /// Moves the routers of nodes down longer than the replica grace to live nodes.
    pub async fn move_lost_routers(
        &self,
        down: &mut std::collections::BTreeMap<NodeId, std::time::Instant>,
    ) -> Result<(), ControlError> {
        let view = self.membership.view();
        let now = std::time::Instant::now();
        let hosts: std::collections::BTreeSet<NodeId> =
            self.routers()?.into_iter().map(|r| r.host).collect();
        down.retain(|n, _| hosts.contains(n));
        for h in hosts {
            let alive =
                h == self.node || view.get(&h).is_some_and(|p| p.liveness == Liveness::Alive);
            if alive {
                down.remove(&h);
                continue;
            }
            let since = *down.entry(h).or_insert(now);
            if now.duration_since(since) >= self.replica_grace {
                self.move_routers_from(h).await?;
                down.remove(&h);
            }
        }
        Ok(())
    }

    /// Moves routers off a node that is down to a live one (their ports follow).
    pub async fn move_routers_from(&self, lost: NodeId) -> Result<(), ControlError> {
        for r in self.routers()?.into_iter().filter(|r| r.host == lost) {
            let to = self.router_host(Some(lost))?;
            self.update_router(&r.id, "router.moved", |rec| {
                rec.host = to;
                Ok(format!(
                    "router {} moved from lost node {lost} to node {to}",
                    rec.name
                ))
            })
            .await?;
            let ports: Vec<String> = r
                .gateway_port
                .iter()
                .chain(&r.interface_ports)
                .cloned()
                .collect();
            for p in ports {
                self.bind_port(&p, Some(to)).await?;
            }
        }
        Ok(())
    }

    /// Allocates a floating IP on an external network for the caller's project, mapped
    /// at once to `port` if one is named. Everything is checked before the address is
    /// taken, so a refused request allocates nothing.
    pub async fn create_floating_ip(
        &self,
        caller: &Caller,
        req: CreateFloatingIp,
    ) -> Result<FloatingIpRecord, ControlError> {
        caller.need_writer()?;
        let project = caller
            .owner_for(req.project.as_deref())?
            .unwrap_or_else(|| DEFAULT_PROJECT.to_string());
        let ext = self.find_network(caller, &req.network)?;
        self.check_quota(Some(&project), &[("floatingip", 1)])?;
        if !ext.external {
            return Err(ControlError::Invalid(format!(
                "floating IPs come from an external network; {} is not one",
                ext.name
            )));
        }
        let target = match &req.port {
            Some(p) => Some(self.floating_ip_target(caller, &project, &ext.id, None, p)?),
            None => None,
        };
        let id = VmId::random().0;
        for _ in 0..16 {
            let subnet = self
                .subnets_of(&ext.id)?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    ControlError::Invalid(format!("external network {} has no subnet", ext.name))
                })?;
            let taken: std::collections::BTreeSet<std::net::Ipv4Addr> = self
                .store
                .list::<IpAllocations>()?
                .into_iter()
                .filter_map(|a| {
                    a.key
                        .strip_prefix(&format!("{}/", subnet.id))
                        .and_then(|ip| ip.parse().ok())
                })
                .collect();
            let pools: Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)> = subnet
                .allocation_pools
                .iter()
                .filter_map(|p| Some((p.start.parse().ok()?, p.end.parse().ok()?)))
                .collect();
            let ip = ipam::next_free(&pools, &taken).ok_or_else(|| {
                ControlError::Invalid(format!(
                    "external subnet {} has no free address left",
                    subnet.name
                ))
            })?;
            let rec = FloatingIpRecord {
                id: id.clone(),
                project: project.clone(),
                network: ext.id.clone(),
                subnet: subnet.id.clone(),
                ip: ip.to_string(),
                port: target.as_ref().map(|t| t.port.clone()),
                fixed_ip: target.as_ref().map(|t| t.fixed_ip.clone()),
                router: target.as_ref().map(|t| t.router.clone()),
                created_at: now_secs(),
            };
            let key = ip_key(&subnet.id, &rec.ip);
            let txn = TxnBuilder::new()
                .require_revision::<IpAllocations>(key.clone(), 0)
                .put::<IpAllocations>(key, &format!("fip:{id}"))
                .require_revision::<FloatingIps>(id.clone(), 0)
                .put::<FloatingIps>(id.clone(), &rec);
            let msg = match &rec.fixed_ip {
                Some(x) => format!(
                    "floating IP {ip} ({id}) allocated on {} and mapped to {x}",
                    ext.name
                ),
                None => format!("floating IP {ip} ({id}) allocated on {}", ext.name),
            };
            match self
                .store
                .commit(self.with_event(txn, "floatingip.created", msg))
                .await
            {
                Ok(_) => return Ok(rec),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControlError::NotReady(
            "address allocation kept conflicting; try again".into(),
        ))
    }

    pub fn find_floating_ip(
        &self,
        caller: &Caller,
        id_or_ip: &str,
    ) -> Result<FloatingIpRecord, ControlError> {
        Ok(self
            .find_scoped::<FloatingIps>(caller, "floating IP", id_or_ip, |f| &f.ip)?
            .value)
    }

    pub fn floating_ips(&self) -> Result<Vec<FloatingIpRecord>, ControlError> {
        let mut v: Vec<FloatingIpRecord> = self
            .store
            .list::<FloatingIps>()?
            .into_iter()
            .map(|f| f.value)
            .collect();
        v.sort_by(|a, b| a.ip.cmp(&b.ip));
        Ok(v)
    }

    /// Where a floating IP of `project` on external network `network` would map for
    /// `port`: the port must be the same project's (whoever asks), have an address, carry
    /// no other floating IP (`fip`: the one being mapped), and a router must join its
    /// subnet to that network.
    fn floating_ip_target(
        &self,
        caller: &Caller,
        project: &str,
        network: &str,
        fip: Option<&str>,
        port: &str,
    ) -> Result<FloatingIpTarget, ControlError> {
        let p = self.find_port(caller, port)?;
        if p.project != project {
            return Err(ControlError::NotFound(format!(
                "no port {port:?} in project {project}"
            )));
        }
        let fixed =
            p.fixed_ips.first().cloned().ok_or_else(|| {
                ControlError::Invalid(format!("port {} has no fixed address", p.id))
            })?;
        if let Some(other) = self
            .floating_ips()?
            .into_iter()
            .find(|o| Some(o.id.as_str()) != fip && o.port.as_deref() == Some(p.id.as_str()))
        {
            return Err(ControlError::Invalid(format!(
                "port {} has floating IP {} already",
                p.id, other.ip
            )));
        }
        // The router with an interface on the port's subnet and its gateway on the
        // floating IP's network.
        let port_of = |id: &str| self.store.get::<Ports>(id).ok().flatten().map(|p| p.value);
        let router = self
            .routers()?
            .into_iter()
            .find(|r| {
                let gw_ok = r
                    .gateway_port
                    .as_deref()
                    .and_then(port_of)
                    .is_some_and(|g| g.network == network);
                let if_ok = r.interface_ports.iter().any(|i| {
                    port_of(i).is_some_and(|i| i.fixed_ips.iter().any(|x| x.subnet == fixed.subnet))
                });
                gw_ok && if_ok
            })
            .ok_or_else(|| {
                ControlError::Invalid(format!(
                    "no router joins port {}'s subnet to the floating IP's network; add one first",
                    p.id
                ))
            })?;
        Ok(FloatingIpTarget {
            port: p.id,
            fixed_ip: fixed.ip,
            router: router.id,
        })
    }

    /// Maps a floating IP to a port (through the router joining the port's subnet to
    /// the floating IP's network), or unmaps it (None).
    pub async fn associate_floating_ip(
        &self,
        caller: &Caller,
        fip: &str,
        port: Option<&str>,
    ) -> Result<FloatingIpRecord, ControlError> {
        caller.need_writer()?;
        let f = self.find_floating_ip(caller, fip)?;
        let target = match port {
            None => None,
            Some(p) => {
                Some(self.floating_ip_target(caller, &f.project, &f.network, Some(&f.id), p)?)
            }
        };
        loop {
            let cur = self.find_named::<FloatingIps>("floating IP", &f.id, |x| &x.ip)?;
            let mut rec = cur.value.clone();
            rec.port = target.as_ref().map(|t| t.port.clone());
            rec.fixed_ip = target.as_ref().map(|t| t.fixed_ip.clone());
            rec.router = target.as_ref().map(|t| t.router.clone());
            let txn = TxnBuilder::new()
                .require_revision::<FloatingIps>(rec.id.clone(), cur.revision)
                .put::<FloatingIps>(rec.id.clone(), &rec);
            let msg = match &rec.fixed_ip {
                Some(x) => format!("floating IP {} mapped to {x}", rec.ip),
                None => format!("floating IP {} unmapped", rec.ip),
            };
            match self
                .store
                .commit(self.with_event(txn, "floatingip.mapped", msg))
                .await
            {
                Ok(_) => return Ok(rec),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub async fn delete_floating_ip(
        &self,
        caller: &Caller,
        fip: &str,
    ) -> Result<FloatingIpRecord, ControlError> {
        caller.need_writer()?;
        let f = self.find_floating_ip(caller, fip)?;
        let txn = TxnBuilder::new()
            .delete::<FloatingIps>(f.id.clone())
            .delete::<IpAllocations>(ip_key(&f.subnet, &f.ip));
        self.store
            .commit(self.with_event(
                txn,
                "floatingip.deleted",
                format!("floating IP {} released", f.ip),
            ))
            .await?;
        Ok(f)
    }
}

/// Where a floating IP maps: a port, its fixed address, and the router translating.
struct FloatingIpTarget {
    port: String,
    fixed_ip: String,
    router: String,
}
