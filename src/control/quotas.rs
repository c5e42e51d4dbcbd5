//! Per-project quotas: limits (OpenStack's defaults until an admin sets them; -1 means
//! none) and usage counted from the tables, checked before anything is written. VM and
//! volume creates check inside their placement retry loop, whose epoch serializes them,
//! so two concurrent creates cannot both take the last unit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Control, ControlError};
use crate::cluster::store::compute_tables::Vms;
use crate::cluster::store::network_tables::{
    FloatingIps, Networks, Ports, Routers, SecurityGroups, Subnets,
};
use crate::cluster::store::storage_tables::Volumes;
use crate::cluster::store::tables::Table;
use crate::cluster::store::TxnBuilder;

pub struct Quotas;
impl Table for Quotas {
    const NAME: &'static str = "quotas";
    /// Resource name → limit (-1: unlimited); resources not set take the default.
    type Value = BTreeMap<String, i64>;
}

/// The resources limited, with OpenStack's default limits (Nova, Cinder, Neutron).
pub const DEFAULTS: &[(&str, i64)] = &[
    ("instances", 10),
    ("cores", 20),
    ("ram", 51200),
    ("key_pairs", 100),
    ("server_groups", 10),
    ("server_group_members", 10),
    ("metadata_items", 128),
    ("volumes", 10),
    ("gigabytes", 1000),
    ("snapshots", 10),
    ("network", 100),
    ("subnet", 100),
    ("port", 500),
    ("router", 10),
    ("floatingip", 50),
    ("security_group", 10),
    ("security_group_rule", 100),
    // Glance's unified-limit names: images a project owns, and their data in MiB.
    ("image_count_total", 100),
    ("image_size_total", 1_024_000),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuotaUse {
    pub limit: i64,
    pub in_use: i64,
}

impl Control {
    /// A project's limits (defaults filled in).
    pub fn quota_limits(&self, project: &str) -> Result<BTreeMap<String, i64>, ControlError> {
        let set = self
            .store
            .get::<Quotas>(project)?
            .map(|v| v.value)
            .unwrap_or_default();
        Ok(DEFAULTS
            .iter()
            .map(|(k, d)| (k.to_string(), set.get(*k).copied().unwrap_or(*d)))
            .collect())
    }

    /// What a project uses of each limited resource.
    pub fn quota_usage(&self, project: &str) -> Result<BTreeMap<String, i64>, ControlError> {
        let mine = |p: Option<&str>| p == Some(project);
        let mut u: BTreeMap<String, i64> = BTreeMap::new();
        let mut add = |k: &str, n: i64| *u.entry(k.to_string()).or_default() += n;
        for vm in self.store.list::<Vms>()? {
            if mine(vm.value.project.as_deref()) {
                add("instances", 1);
                add("cores", vm.value.vcpus as i64);
                add("ram", vm.value.ram_mb as i64);
            }
        }
        for v in self.store.list::<Volumes>()? {
            // Boot disks made from images count as Nova's local disks, not volumes.
            let boot_disk = v.value.name.starts_with("boot-") && v.value.used_by.is_some();
            if mine(v.value.project.as_deref()) && !boot_disk {
                add("volumes", 1);
                add("gigabytes", v.value.size.div_ceil(1 << 30) as i64);
                add("snapshots", v.value.snapshots.len() as i64);
            }
        }
        for n in self.store.list::<Networks>()? {
            if mine(Some(&n.value.project)) {
                add("network", 1);
            }
        }
        for s in self.store.list::<Subnets>()? {
            if mine(Some(&s.value.project)) {
                add("subnet", 1);
            }
        }
        for p in self.store.list::<Ports>()? {
            if mine(Some(&p.value.project)) {
                add("port", 1);
            }
        }
        for r in self.store.list::<Routers>()? {
            if mine(Some(&r.value.project)) {
                add("router", 1);
            }
        }
        for f in self.store.list::<FloatingIps>()? {
            if mine(Some(&f.value.project)) {
                add("floatingip", 1);
            }
        }
        for i in self
            .store
            .list::<crate::cluster::store::image_tables::Images>()?
        {
            if mine(Some(&i.value.owner)) {
                add("image_count_total", 1);
                add(
                    "image_size_total",
                    i.value.size.unwrap_or(0).div_ceil(1 << 20) as i64,
                );
            }
        }
        for g in self.store.list::<SecurityGroups>()? {
            if mine(Some(&g.value.project)) {
                add("security_group", 1);
                add("security_group_rule", g.value.rules.len() as i64);
            }
        }
        Ok(DEFAULTS
            .iter()
            .map(|(k, _)| (k.to_string(), u.get(*k).copied().unwrap_or(0)))
            .collect())
    }

    /// Refuses a request that would take a project over any of its limits; `want` lists
    /// (resource, amount requested). Projectless requests (the admin CLI) are not limited.
    pub fn check_quota(
        &self,
        project: Option<&str>,
        want: &[(&str, i64)],
    ) -> Result<(), ControlError> {
        let Some(project) = project else {
            return Ok(());
        };
        let limits = self.quota_limits(project)?;
        let used = self.quota_usage(project)?;
        for (k, n) in want {
            let limit = limits.get(*k).copied().unwrap_or(-1);
            let have = used.get(*k).copied().unwrap_or(0);
            if limit >= 0 && have + n > limit {
                return Err(ControlError::OverQuota {
                    resource: k.to_string(),
                    message: format!(
                        "Quota exceeded for {k}: Requested {n}, but already used {have} of {limit} {k}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// How many more bytes of image data a project may store (None: no limit).
    pub fn image_bytes_left(&self, project: &str) -> Result<Option<u64>, ControlError> {
        let limit = self
            .quota_limits(project)?
            .get("image_size_total")
            .copied()
            .unwrap_or(-1);
        if limit < 0 {
            return Ok(None);
        }
        let used = self
            .quota_usage(project)?
            .get("image_size_total")
            .copied()
            .unwrap_or(0);
        Ok(Some((limit - used).max(0) as u64 * (1 << 20)))
    }

    /// Sets some of a project's limits (admins only; checked by the API).
    pub async fn set_quotas(
        &self,
        project: &str,
        set: &BTreeMap<String, i64>,
    ) -> Result<BTreeMap<String, i64>, ControlError> {
        for (k, v) in set {
            if !DEFAULTS.iter().any(|(d, _)| d == k) {
                return Err(ControlError::Invalid(format!(
                    "unknown quota resource {k:?}"
                )));
            }
            if *v < -1 {
                return Err(ControlError::Invalid(format!(
                    "quota limit for {k} must be -1 (unlimited) or at least 0, not {v}"
                )));
            }
        }
        let mut cur = self
            .store
            .get::<Quotas>(project)?
            .map(|v| v.value)
            .unwrap_or_default();
        cur.extend(set.clone());
        self.store
            .commit(self.with_event(
                TxnBuilder::new().put::<Quotas>(project.to_string(), &cur),
                "quota.set",
                format!("quotas of project {project} changed: {set:?}"),
            ))
            .await?;
        self.quota_limits(project)
    }
}
