//! Security groups: named rule sets ports refer to. Every project has a group named
//! `default` (created on first use: all egress, and ingress from its own members), which
//! ports get unless they name others; a new group starts with all egress allowed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::caller::Caller;
use super::networks::DEFAULT_PROJECT;
use super::{now_secs, Control, ControlError};
use crate::cluster::store::network_tables::{
    Direction, Ports, RuleRecord, SecurityGroupRecord, SecurityGroups,
};
use crate::cluster::store::{StoreError, TxnBuilder};
use crate::ids::VmId;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateSecGroup {
    pub name: String,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRule {
    pub direction: Direction,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port_range_min: Option<u32>,
    #[serde(default)]
    pub port_range_max: Option<u32>,
    #[serde(default)]
    pub remote_ip_prefix: Option<String>,
    #[serde(default)]
    pub remote_group: Option<String>,
    #[serde(default)]
    pub description: String,
}

/// The id of a project's default group: derived from the project, so two nodes creating
/// it at once create the same record (and one of them finds it there).
fn default_id(project: &str) -> String {
    let h = Sha256::digest(format!("strata default security group {project}").as_bytes());
    let x = hex::encode(&h[..16]);
    format!(
        "{}-{}-4{}-8{}-{}",
        &x[0..8],
        &x[8..12],
        &x[13..16],
        &x[17..20],
        &x[20..32]
    )
}

fn egress_all() -> RuleRecord {
    RuleRecord {
        id: VmId::random().0,
        direction: Direction::Egress,
        protocol: None,
        port_range_min: None,
        port_range_max: None,
        remote_ip_prefix: None,
        remote_group: None,
        description: String::new(),
    }
}

impl Control {
    /// The project's default group, created if missing.
    pub async fn default_secgroup(&self, project: &str) -> Result<String, ControlError> {
        let id = default_id(project);
        if self.store.get::<SecurityGroups>(&id)?.is_some() {
            return Ok(id);
        }
        let rec = SecurityGroupRecord {
            id: id.clone(),
            name: "default".into(),
            project: project.to_string(),
            description: "Default security group".into(),
            rules: vec![
                egress_all(),
                RuleRecord {
                    remote_group: Some(id.clone()),
                    direction: Direction::Ingress,
                    ..egress_all()
                },
            ],
            created_at: now_secs(),
        };
        let txn = TxnBuilder::new()
            .require_revision::<SecurityGroups>(id.clone(), 0)
            .put::<SecurityGroups>(id.clone(), &rec);
        match self.store.commit(txn).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(id),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn create_secgroup(
        &self,
        caller: &Caller,
        mut req: CreateSecGroup,
    ) -> Result<SecurityGroupRecord, ControlError> {
        caller.need_writer()?;
        req.project = caller.owner_for(req.project.as_deref())?;
        let name = req.name.trim().to_string();
        if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
            return Err(ControlError::Invalid(format!(
                "security group name {name:?} must be 1-255 printable characters"
            )));
        }
        self.check_quota(req.project.as_deref(), &[("security_group", 1)])?;
        let project = req.project.unwrap_or_else(|| DEFAULT_PROJECT.to_string());
        if name == "default" {
            let id = self.default_secgroup(&project).await?;
            return self.find_secgroup(&Caller::system(), &id);
        }
        let id = VmId::random().0;
        let rec = SecurityGroupRecord {
            id: id.clone(),
            name: name.clone(),
            project,
            description: req.description,
            rules: vec![egress_all()],
            created_at: now_secs(),
        };
        let txn = TxnBuilder::new()
            .require_revision::<SecurityGroups>(id.clone(), 0)
            .put::<SecurityGroups>(id.clone(), &rec);
        self.store
            .commit(self.with_event(
                txn,
                "secgroup.created",
                format!("security group {name} ({id}) created"),
            ))
            .await?;
        Ok(rec)
    }

    pub fn find_secgroup(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<SecurityGroupRecord, ControlError> {
        Ok(self
            .find_scoped::<SecurityGroups>(caller, "security group", id_or_name, |g| &g.name)?
            .value)
    }

    pub fn secgroups(&self) -> Result<Vec<SecurityGroupRecord>, ControlError> {
        let mut v: Vec<SecurityGroupRecord> = self
            .store
            .list::<SecurityGroups>()?
            .into_iter()
            .map(|g| g.value)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// Deletes a group no port uses and no other group's rule names.
    pub async fn delete_secgroup(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<SecurityGroupRecord, ControlError> {
        caller.need_writer()?;
        let g = self.find_secgroup(caller, id_or_name)?;
        let ports: Vec<String> = self
            .store
            .list::<Ports>()?
            .into_iter()
            .filter(|p| p.value.security_groups.contains(&g.id))
            .map(|p| p.value.id)
            .collect();
        if !ports.is_empty() {
            return Err(ControlError::Invalid(format!(
                "security group {} is used by port(s) {}",
                g.name,
                ports.join(", ")
            )));
        }
        let referring: Vec<String> = self
            .secgroups()?
            .into_iter()
            .filter(|o| {
                o.id != g.id
                    && o.rules
                        .iter()
                        .any(|r| r.remote_group.as_deref() == Some(g.id.as_str()))
            })
            .map(|o| o.name)
            .collect();
        if !referring.is_empty() {
            return Err(ControlError::Invalid(format!(
                "security group {} is the remote group of rules in {}",
                g.name,
                referring.join(", ")
            )));
        }
        let txn = TxnBuilder::new().delete::<SecurityGroups>(g.id.clone());
        self.store
            .commit(self.with_event(
                txn,
                "secgroup.deleted",
                format!("security group {} ({}) deleted", g.name, g.id),
            ))
            .await?;
        Ok(g)
    }

    /// Adds a rule; the ports using the group are refiltered on every node that has them.
    /// Adds a rule; a remote group it names must be of the same project as the group.
    pub async fn add_rule(
        &self,
        caller: &Caller,
        group: &str,
        req: CreateRule,
    ) -> Result<RuleRecord, ControlError> {
        caller.need_writer()?;
        let owner = self.find_secgroup(caller, group)?.project;
        let rule = self.check_rule(caller, &owner, req)?;
        loop {
            let cur =
                self.find_scoped::<SecurityGroups>(caller, "security group", group, |g| &g.name)?;
            let mut g = cur.value.clone();
            let same = |r: &RuleRecord| RuleRecord {
                id: String::new(),
                description: String::new(),
                ..r.clone()
            };
            if g.rules.iter().any(|r| same(r) == same(&rule)) {
                return Err(ControlError::Invalid(format!(
                    "security group {} has this rule already",
                    g.name
                )));
            }
            g.rules.push(rule.clone());
            let txn = TxnBuilder::new()
                .require_revision::<SecurityGroups>(g.id.clone(), cur.revision)
                .put::<SecurityGroups>(g.id.clone(), &g);
            let msg = format!("security group {}: rule {} added", g.name, rule.id);
            match self
                .store
                .commit(self.with_event(txn, "secgroup.rule", msg))
                .await
            {
                Ok(_) => return Ok(rule),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub async fn delete_rule(
        &self,
        caller: &Caller,
        group: &str,
        rule: &str,
    ) -> Result<(), ControlError> {
        caller.need_writer()?;
        loop {
            let cur =
                self.find_scoped::<SecurityGroups>(caller, "security group", group, |g| &g.name)?;
            let mut g = cur.value.clone();
            let before = g.rules.len();
            g.rules.retain(|r| r.id != rule);
            if g.rules.len() == before {
                return Err(ControlError::NotFound(format!(
                    "security group {} has no rule {rule}",
                    g.name
                )));
            }
            let txn = TxnBuilder::new()
                .require_revision::<SecurityGroups>(g.id.clone(), cur.revision)
                .put::<SecurityGroups>(g.id.clone(), &g);
            let msg = format!("security group {}: rule {rule} deleted", g.name);
            match self
                .store
                .commit(self.with_event(txn, "secgroup.rule", msg))
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn check_rule(
        &self,
        caller: &Caller,
        project: &str,
        req: CreateRule,
    ) -> Result<RuleRecord, ControlError> {
        let invalid = |m: String| Err(ControlError::Invalid(m));
        let proto = req
            .protocol
            .as_deref()
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty() && p != "any");
        let ported = matches!(proto.as_deref(), Some("tcp" | "udp"));
        match proto.as_deref() {
            None | Some("tcp" | "udp" | "icmp") => {}
            Some(n) => match n.parse::<u8>() {
                Ok(_) => {}
                Err(_) => {
                    return invalid(format!(
                        "protocol {n:?} is not tcp, udp, icmp, any or an IP protocol number (0-255)"
                    ))
                }
            },
        }
        let (lo, hi) = (req.port_range_min, req.port_range_max);
        if ported {
            for p in [lo, hi].into_iter().flatten() {
                if p == 0 || p > 65535 {
                    return invalid(format!("port {p} is outside 1-65535"));
                }
            }
            if let (Some(a), Some(b)) = (lo, hi) {
                if a > b {
                    return invalid(format!(
                        "port range {a}-{b} is impossible: the minimum is above the maximum"
                    ));
                }
            }
        } else if proto.as_deref() == Some("icmp") {
            for p in [lo, hi].into_iter().flatten() {
                if p > 255 {
                    return invalid(format!("ICMP type/code {p} is outside 0-255"));
                }
            }
            if lo.is_none() && hi.is_some() {
                return invalid("an ICMP code needs an ICMP type (port_range_min)".into());
            }
        } else if lo.is_some() || hi.is_some() {
            return invalid(format!(
                "ports need protocol tcp or udp (got {})",
                proto.as_deref().unwrap_or("any")
            ));
        }
        let prefix = match req.remote_ip_prefix.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(p) => {
                let n: ipnet::Ipv4Net = p.parse().map_err(|_| {
                    ControlError::Invalid(format!(
                        "remote prefix {p:?} is not an IPv4 CIDR such as 10.0.0.0/24"
                    ))
                })?;
                Some(n.trunc().to_string())
            }
        };
        let group = match req.remote_group.as_deref() {
            None | Some("") => None,
            Some(g) => {
                let rg = self.find_secgroup(caller, g)?;
                if rg.project != project {
                    return Err(ControlError::NotFound(format!(
                        "no security group {g:?} in project {project}"
                    )));
                }
                Some(rg.id)
            }
        };
        if prefix.is_some() && group.is_some() {
            return invalid("a rule takes a remote prefix or a remote group, not both".into());
        }
        Ok(RuleRecord {
            id: VmId::random().0,
            direction: req.direction,
            protocol: proto,
            port_range_min: lo.map(|v| v as u16),
            port_range_max: hi.map(|v| v as u16),
            remote_ip_prefix: prefix,
            remote_group: group,
            description: req.description,
        })
    }
}
