//! Cold migration and node drain: a VM is stopped (the guest shuts down; forced off
//! after a grace period), placed again on another node with room for it, its NICs' ports
//! bound there, and started there if it was running. Its disks are replicated volumes,
//! so nothing is copied: the new node attaches them, fencing the old one.
//!
//! A VM on a node that is down is not stopped first (nothing there answers): it is
//! evacuated, started on another node at once, as Nova's `evacuate`. Should the old node
//! only be cut off and its guest still run, the new writer's generation fences that guest
//! from its volumes, and the old node destroys it when it sees the VM placed elsewhere.

use std::time::Duration;

use super::placement::{self, Weigher};
use super::vms::VmAction;
use super::{Control, ControlError};
use crate::cluster::store::compute_tables::{
    PlacementEpochs, PowerIntent, VmState, VmStatuses, Vms,
};
use crate::cluster::store::network_tables::Ports;
use crate::cluster::store::{StoreError, TxnBuilder};
use crate::ids::NodeId;

/// How long a guest gets to shut down before it is forced off.
pub const STOP_GRACE: Duration = Duration::from_secs(60);

impl Control {
    /// Waits until the VM's node reports it stopped (or `limit` passes).
    async fn wait_stopped(&self, id: &str, limit: Duration) -> Result<bool, ControlError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let st = self.store.get::<VmStatuses>(id)?.map(|s| s.value.state);
            if matches!(st, None | Some(VmState::Shutoff) | Some(VmState::Error)) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Moves a VM to another node (never `away_from`), restarting it there if it was
    /// running; returns the new node.
    pub async fn migrate_vm(
        &self,
        id_or_name: &str,
        away_from: NodeId,
    ) -> Result<NodeId, ControlError> {
        let cur = self.find_vm(id_or_name)?;
        let rec = cur.value.clone();
        let id = rec.id.0.clone();
        if let Some(disk) = &rec.boot.disk {
            return Err(ControlError::Invalid(format!(
                "VM {} boots from {disk}, a file on node {}; only VMs whose disks are volumes can move",
                rec.name, rec.node
            )));
        }
        let was = rec.power;
        let evacuated = !self.membership.is_alive(rec.node);
        if was != PowerIntent::Stopped && !evacuated {
            self.vm_action(&id, VmAction::Stop).await?;
            if !self.wait_stopped(&id, STOP_GRACE).await? {
                self.vm_action(&id, VmAction::ForceStop).await?;
                if !self.wait_stopped(&id, Duration::from_secs(30)).await? {
                    return Err(ControlError::Unavailable(format!(
                        "VM {} did not stop on node {}; it stays there",
                        rec.name, rec.node
                    )));
                }
            }
        }
        let volume_nodes: Vec<NodeId> = match &rec.volume {
            Some(v) => self
                .find_volume(&super::caller::Caller::system(), &v.0)?
                .value
                .replicas
                .iter()
                .map(|r| r.node)
                .collect(),
            None => vec![],
        };
        let preq = placement::Request {
            vcpus: rec.vcpus,
            ram_mb: rec.ram_mb,
            anti_affinity_group: rec.anti_affinity_group.clone(),
            affinity_group: rec.affinity_group.clone(),
            hypervisor: None,
            qemu_only: super::vms::qemu_only(&rec.boot, rec.config_drive),
            weigher: Weigher::Spread,
            prefer: volume_nodes,
        };
        loop {
            let cur = self.find_vm(&id)?;
            let epoch = self.store.get::<PlacementEpochs>("vms")?;
            let (rev, n) = epoch.map(|e| (e.revision, e.value)).unwrap_or((0, 0));
            let mut cands = self.candidates()?;
            cands.retain(|c| c.id != away_from && c.id != cur.value.node);
            // The VM's own allocation is not on the candidates (they are other nodes).
            let (node, why) = placement::place(&preq, &cands).map_err(|e| {
                ControlError::Invalid(format!("VM {} has nowhere to go: {e}", rec.name))
            })?;
            let mut moved = cur.value.clone();
            let from = moved.node;
            moved.node = node;
            moved.placement = format!("moved from node {from}: {why}");
            moved.stop_now = false;
            moved.power = match was {
                PowerIntent::Stopped => PowerIntent::Stopped,
                _ => PowerIntent::Running,
            };
            let mut txn = TxnBuilder::new()
                .require_revision::<PlacementEpochs>("vms", rev)
                .put::<PlacementEpochs>("vms", &(n + 1))
                .require_revision::<Vms>(id.clone(), cur.revision)
                .put::<Vms>(id.clone(), &moved)
                // The old node's last word (stopped) is not the VM's state any more.
                .delete::<VmStatuses>(id.clone());
            for p in &moved.ports {
                if let Some(pv) = self.store.get::<Ports>(p)? {
                    let mut prec = pv.value.clone();
                    prec.host = Some(node);
                    txn = txn
                        .require_revision::<Ports>(p.clone(), pv.revision)
                        .put::<Ports>(p.clone(), &prec);
                }
            }
            let msg = format!(
                "VM {} ({id}) {} from node {from} to node {node}",
                moved.name,
                if evacuated {
                    "evacuated (its node is down)"
                } else {
                    "moved"
                }
            );
            match self
                .store
                .commit(self.with_event(txn, "vm.migrated", msg))
                .await
            {
                Ok(_) => return Ok(node),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Puts a node in maintenance and moves every VM off it, one at a time; returns what
    /// could not be moved and why (the rest moved).
    pub async fn drain_node(&self, node: NodeId, by: &str) -> Result<Vec<String>, ControlError> {
        let reason = format!("drained by {by}");
        let already = self
            .store
            .get::<crate::cluster::store::tables::Nodes>(&node.to_string())?
            .and_then(|n| n.value.maintenance)
            .is_some();
        if !already {
            self.set_maintenance(node, Some(reason), by).await?;
        }
        let vms: Vec<String> = self
            .store
            .list::<Vms>()?
            .into_iter()
            .filter(|v| v.value.node == node)
            .map(|v| v.value.id.0)
            .collect();
        let mut failed = Vec::new();
        for id in vms {
            if let Err(e) = self.migrate_vm(&id, node).await {
                let why = crate::telemetry::error_chain(&e);
                tracing::warn!(vm = %id, error = %why, "drain: VM not moved");
                failed.push(format!("{id}: {why}"));
            }
        }
        let msg = if failed.is_empty() {
            format!("node {node} drained: no VMs left on it")
        } else {
            format!(
                "node {node} drain finished; {} VM(s) stay: {}",
                failed.len(),
                failed.join("; ")
            )
        };
        self.record_event("node.drained", msg).await?;
        Ok(failed)
    }
}
