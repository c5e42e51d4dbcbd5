//! NICs of running VMs: the agent compares the ports plugged into each VM with its record
//! and hot-plugs the difference (a new port once this node's data plane carries it; a
//! removed one by its TAP's name, which follows from the port id).

use std::sync::Arc;
use std::time::Duration;

use super::vms::VmAgent;
use crate::cluster::store::compute_tables::VmRecord;
use crate::compute::Nic;
use crate::ids::VmId;
use crate::telemetry::error_chain;

/// How long a guest gets to release an unplugged NIC.
const UNPLUG_GRACE: Duration = Duration::from_secs(30);

impl VmAgent {
    fn nics_map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<VmId, Vec<String>>> {
        self.plugged_nics.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set_plugged_nics(&self, id: &VmId, ports: Vec<String>) {
        self.nics_map().insert(id.clone(), ports);
    }

    pub(super) fn forget_plugged_nics(&self, id: &VmId) {
        self.nics_map().remove(id);
    }

    /// Starts plugging or unplugging a running VM's NICs if they differ from its record;
    /// true if it did (the VM is busy meanwhile).
    pub(super) fn sync_nics(self: Arc<Self>, rec: &VmRecord) -> bool {
        let have = {
            let mut m = self.nics_map();
            // A VM adopted after a restart has what its command line had.
            m.entry(rec.id.clone())
                .or_insert_with(|| rec.ports.clone())
                .clone()
        };
        if have == rec.ports || !self.mark_busy(&rec.id) {
            return false;
        }
        let (agent, rec) = (self.clone(), rec.clone());
        tokio::spawn(async move {
            let id = rec.id.clone();
            let mut now = have.clone();
            for port in have.iter().filter(|p| !rec.ports.contains(p)) {
                let nic = Nic {
                    tap: crate::control::ports::tap_name(port),
                    mac: String::new(),
                };
                match agent.driver.unplug_nic(&id, &nic, UNPLUG_GRACE).await {
                    Ok(()) => {
                        tracing::info!(vm = %id, port = %port, "NIC unplugged");
                        now.retain(|p| p != port);
                    }
                    Err(e) => {
                        tracing::warn!(vm = %id, port = %port, error = %error_chain(&e), "cannot unplug NIC")
                    }
                }
            }
            for port in rec.ports.iter().filter(|p| !have.contains(p)) {
                let plugged = match agent.nic_of(port).await {
                    Ok(nic) => agent
                        .driver
                        .plug_nic(&id, &nic)
                        .await
                        .map_err(|e| error_chain(&e)),
                    Err(e) => Err(e),
                };
                match plugged {
                    Ok(()) => {
                        tracing::info!(vm = %id, port = %port, "NIC plugged in");
                        now.push(port.clone());
                    }
                    Err(e) => {
                        tracing::warn!(vm = %id, port = %port, error = %e, "cannot plug NIC in")
                    }
                }
            }
            // Failures are not retried behind the user's back: what is plugged is known.
            agent.set_plugged_nics(&id, rec.ports.clone());
            if now != rec.ports {
                tracing::warn!(vm = %id, "NICs differ from the record until the VM restarts");
            }
            agent.unmark_busy(&id);
        });
        true
    }
}
