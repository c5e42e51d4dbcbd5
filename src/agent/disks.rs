//! Data volumes of running VMs: the agent compares what is plugged into each VM with
//! its record and hot-plugs the difference (attaching a new volume to this node first;
//! after an unplug, detaching it from this node so that it is free).

use std::sync::Arc;
use std::time::Duration;

use super::vms::VmAgent;
use crate::cluster::store::compute_tables::VmRecord;
use crate::ids::{VmId, VolumeId};
use crate::telemetry::error_chain;

/// How long a guest gets to release an unplugged disk.
const UNPLUG_GRACE: Duration = Duration::from_secs(30);

impl VmAgent {
    fn plugged_map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<VmId, Vec<VolumeId>>> {
        self.plugged.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set_plugged(&self, id: &VmId, disks: Vec<VolumeId>) {
        self.plugged_map().insert(id.clone(), disks);
    }

    pub(super) fn forget_plugged(&self, id: &VmId) {
        self.plugged_map().remove(id);
    }

    /// Starts plugging or unplugging a running VM's data volumes if they differ from its
    /// record; true if it did (the VM is busy meanwhile).
    pub(super) fn sync_disks(self: Arc<Self>, rec: &VmRecord) -> bool {
        let have = {
            let mut m = self.plugged_map();
            // A VM adopted after a restart has what its command line had.
            m.entry(rec.id.clone())
                .or_insert_with(|| rec.data_volumes.clone())
                .clone()
        };
        if have == rec.data_volumes || !self.mark_busy(&rec.id) {
            return false;
        }
        let (agent, rec) = (self.clone(), rec.clone());
        tokio::spawn(async move {
            let id = rec.id.clone();
            let mut now = have.clone();
            for vol in have.iter().filter(|v| !rec.data_volumes.contains(v)) {
                let disk = agent.disk_of(vol);
                match agent.driver.unplug_disk(&id, &disk, UNPLUG_GRACE).await {
                    Ok(()) => {
                        tracing::info!(vm = %id, volume = %vol, "data volume unplugged");
                        now.retain(|v| v != vol);
                        if let Err(e) = agent
                            .control
                            .detach_volume(&vol.0, Some(agent.control.node))
                            .await
                        {
                            tracing::warn!(volume = %vol, error = %error_chain(&e), "cannot detach an unplugged volume");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(vm = %id, volume = %vol, error = %error_chain(&e), "cannot unplug data volume")
                    }
                }
            }
            for vol in rec.data_volumes.iter().filter(|v| !have.contains(v)) {
                let plugged = match agent.attach_here(vol).await {
                    Ok(disk) => agent
                        .driver
                        .plug_disk(&id, &disk)
                        .await
                        .map_err(|e| error_chain(&e)),
                    Err(e) => Err(e),
                };
                match plugged {
                    Ok(()) => {
                        tracing::info!(vm = %id, volume = %vol, "data volume plugged in");
                        now.push(vol.clone());
                    }
                    Err(e) => {
                        tracing::warn!(vm = %id, volume = %vol, error = %e, "cannot plug data volume in")
                    }
                }
            }
            // Failures are not retried behind the user's back: what is plugged is known.
            agent.set_plugged(&id, rec.data_volumes.clone());
            if now != rec.data_volumes {
                tracing::warn!(vm = %id, "data volumes differ from the record until the VM restarts");
            }
            agent.unmark_busy(&id);
        });
        true
    }

    fn disk_of(&self, vol: &VolumeId) -> crate::compute::NbdDisk {
        crate::compute::NbdDisk {
            socket: self.nbd_socket.clone(),
            export: vol.0.clone(),
        }
    }
}
