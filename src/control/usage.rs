//! Capacity and usage over time (the console's charts), and node maintenance. The
//! leader samples the cluster once a minute into the store, so the history survives
//! restarts and leader changes and every node shows the same charts.

use std::time::Duration;

use super::placement::{CPU_ALLOCATION_RATIO, HOST_RESERVED_MB};
use super::{now_ms, now_secs, Control, ControlError};
use crate::cluster::store::compute_tables::{VmState, VmStatuses, Vms};
use crate::cluster::store::storage_tables::NodeStorage;
use crate::cluster::store::tables::{Maintenance, Nodes, UsageSample, UsageSamples, USAGE_KEPT};
use crate::cluster::store::TxnBuilder;
use crate::ids::NodeId;

/// How often the leader samples usage.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(60);

impl Control {
    /// The cluster's capacity and usage now.
    pub fn usage_now(&self) -> Result<UsageSample, ControlError> {
        self.usage_from(&self.status()?)
    }

    /// Capacity and usage, given the cluster status the caller already has.
    pub fn usage_from(&self, status: &super::ClusterStatus) -> Result<UsageSample, ControlError> {
        let mut s = UsageSample {
            at_ms: now_ms(),
            nodes_total: status.nodes.len() as u32,
            nodes_up: status.nodes_alive as u32,
            ..Default::default()
        };
        let records = self.store.list::<Nodes>()?;
        for n in &status.nodes {
            if n.liveness != "alive" {
                continue;
            }
            let ratio = records
                .iter()
                .find(|r| r.value.id == n.id)
                .map(|r| r.value.cpu_allocation_ratio)
                .filter(|r| *r > 0)
                .unwrap_or(CPU_ALLOCATION_RATIO);
            s.vcpus_total += u64::from(n.cores) * u64::from(ratio);
            s.ram_total_mb += (n.memory_bytes >> 20).saturating_sub(HOST_RESERVED_MB);
        }
        for vm in self.store.list::<Vms>()? {
            s.vms_total += 1;
            s.vcpus_used += u64::from(vm.value.vcpus);
            s.ram_used_mb += vm.value.ram_mb;
        }
        s.vms_running = self
            .store
            .list::<VmStatuses>()?
            .iter()
            .filter(|v| v.value.state == VmState::Active)
            .count() as u32;
        for r in self.store.list::<NodeStorage>()? {
            s.storage_used_bytes += r.value.allocated_bytes;
            s.storage_total_bytes += r.value.total_bytes;
        }
        Ok(s)
    }

    /// Appends a sample (the leader calls this once a minute).
    pub async fn sample_usage(&self) -> Result<(), ControlError> {
        let s = self.usage_now()?;
        self.store
            .commit(
                TxnBuilder::new()
                    .append::<UsageSamples>(&s)
                    .trim::<UsageSamples>(USAGE_KEPT),
            )
            .await?;
        Ok(())
    }

    /// Samples since `since_ms`, oldest first.
    pub fn usage_history(&self, since_ms: u64) -> Result<Vec<UsageSample>, ControlError> {
        Ok(self
            .store
            .tail::<UsageSamples>(USAGE_KEPT as usize)?
            .into_iter()
            .map(|v| v.value)
            .filter(|s| s.at_ms >= since_ms)
            .collect())
    }

    /// Puts a node in maintenance (`Some(reason)`: no new VMs are placed there) or takes
    /// it out (`None`).
    pub async fn set_maintenance(
        &self,
        node: NodeId,
        reason: Option<String>,
        by: &str,
    ) -> Result<(), ControlError> {
        let cur = self
            .store
            .get::<Nodes>(&node.to_string())?
            .ok_or_else(|| ControlError::NotFound(format!("no node {node} in the cluster")))?;
        let mut rec = cur.value.clone();
        let (kind, msg) = match reason {
            Some(r) => {
                let r = r.trim().to_string();
                if r.is_empty() {
                    return Err(ControlError::Invalid(
                        "say why the node goes into maintenance (the reason is shown to others)"
                            .into(),
                    ));
                }
                rec.maintenance = Some(Maintenance {
                    reason: r.clone(),
                    by: by.to_string(),
                    since: now_secs(),
                });
                (
                    "node.maintenance",
                    format!("node {node} in maintenance ({r}), by {by}; no new VMs go there"),
                )
            }
            None => {
                rec.maintenance = None;
                (
                    "node.maintenance",
                    format!("node {node} out of maintenance, by {by}"),
                )
            }
        };
        let txn = TxnBuilder::new()
            .require_revision::<Nodes>(node.to_string(), cur.revision)
            .put::<Nodes>(node.to_string(), &rec);
        self.store.commit(self.with_event(txn, kind, msg)).await?;
        Ok(())
    }
}
