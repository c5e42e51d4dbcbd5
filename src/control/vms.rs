//! VMs: validation, placement and power intents. Everything that changes a VM's desired
//! state goes through here; the agent of the node a VM is placed on carries it out and
//! reports what runs in the `vm_status` table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::caller::Caller;
use super::placement::{self, Candidate, Weigher};
use super::{now_ms, now_secs, Control, ControlError};
use crate::cluster::membership::Liveness;
use crate::cluster::store::compute_tables::{
    BootSpec, Flavor, Flavors, PlacementEpochs, PowerIntent, VmRecord, VmState, VmStatus,
    VmStatuses, Vms,
};
use crate::cluster::store::network_tables::Ports;
use crate::cluster::store::storage_tables::{VolumeRecord, Volumes};
use crate::cluster::store::tables::{Event, Events, Nodes, EVENTS_KEPT};
use crate::cluster::store::{StoreError, TxnBuilder, Versioned};
use crate::compute;
use crate::ids::{NodeId, VmId};

/// What a VM needs that only the QEMU driver does yet, in words (placement keeps such VMs
/// off nodes running Strata's VMM).
pub(super) fn qemu_only(boot: &BootSpec, _config_drive: bool) -> Option<String> {
    (boot.firmware.as_deref() == Some("uefi"))
        .then(|| "boot an image through UEFI firmware (it has BIOS firmware only)".to_string())
}

/// A request to create a VM.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CreateVm {
    pub name: String,
    pub flavor: String,
    /// Overrides the flavor's vCPU count.
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Overrides the flavor's memory.
    #[serde(default)]
    pub ram_mb: Option<u64>,
    pub boot: BootSpec,
    #[serde(default)]
    pub anti_affinity_group: Option<String>,
    /// `spread` (default) or `pack`.
    #[serde(default)]
    pub weigher: Option<String>,
    /// Only nodes with this hypervisor driver (`kvm`, `tcg`).
    #[serde(default)]
    pub hypervisor: Option<String>,
    /// Create it stopped.
    #[serde(default)]
    pub stopped: bool,
    /// A volume (id or name) to attach as the first virtio disk.
    #[serde(default)]
    pub volume: Option<String>,
    /// Tenant networks (ids or names): one NIC, with a new port, on each.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Served by the metadata service (cloud-init runs it).
    #[serde(default)]
    pub user_data: Option<String>,
    /// (name, OpenSSH public key) pairs served by the metadata service.
    #[serde(default)]
    pub public_keys: Vec<(String, String)>,
    /// Owner (OpenStack API callers), the image booted from, Nova's key name and
    /// metadata, and whether `volume` was made for this VM (deleted with it).
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub key_name: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub delete_volume: bool,
    /// Security groups of its ports (None: the project's default group).
    #[serde(default)]
    pub security_groups: Option<Vec<String>>,
    /// Placed with the other VMs of this group.
    #[serde(default)]
    pub affinity_group: Option<String>,
    /// Given a config drive.
    #[serde(default)]
    pub config_drive: bool,
}

/// A VM as users see it: desired state and what its node reports.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct VmView {
    #[serde(flatten)]
    pub record: VmRecord,
    pub state: VmState,
    pub reason: String,
    pub driver: String,
    pub boots: u64,
    pub status_updated_at: u64,
    /// The last reboot request its node has carried out (`record.reboot_seq` is the last
    /// asked for).
    #[serde(default)]
    pub reboots_done: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VmAction {
    Start,
    /// Ask the guest to shut down (ACPI power button), forced off after a grace period.
    Stop,
    /// Power off at once, without asking the guest (as `qm stop` or pulling the plug).
    #[serde(rename = "force-stop")]
    ForceStop,
    Reboot,
    Pause,
    Resume,
}

/// The most vCPUs one VM may have (the x86 MP table and the APIC ID space of one VM).
pub const MAX_VCPUS: u32 = 64;
/// Largest user data accepted (Nova: 64 KiB after base64).
pub const MAX_USER_DATA: usize = 65_535;
/// The least memory a Linux guest can boot in.
pub const MIN_RAM_MB: u64 = 64;

impl Control {
    /// Creates a VM: validates the request, places it, and writes its record. Nothing is
    /// written when any check fails.
    /// Creates a VM for the caller's project (an administrator may name another); its
    /// volume, networks and security groups resolve within the caller's reach (security
    /// groups within the VM's project).
    pub async fn create_vm(
        &self,
        caller: &Caller,
        mut req: CreateVm,
    ) -> Result<VmView, ControlError> {
        let invalid = |m: String| Err(ControlError::Invalid(m));
        caller.need_writer()?;
        req.project = caller.owner_for(req.project.as_deref())?;
        let name = req.name.trim();
        if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
            return invalid(format!(
                "VM name {:?} must be 1 to 255 printable characters",
                req.name
            ));
        }
        let flavor = self.flavor(&req.flavor)?;
        let vcpus = req.vcpus.unwrap_or(flavor.vcpus);
        let ram_mb = req.ram_mb.unwrap_or(flavor.ram_mb);
        if vcpus == 0 {
            return invalid("a VM needs at least 1 vCPU (0 requested)".into());
        }
        if vcpus > MAX_VCPUS {
            return invalid(format!(
                "{vcpus} vCPUs requested; a VM can have at most {MAX_VCPUS}"
            ));
        }
        if ram_mb < MIN_RAM_MB {
            return invalid(format!(
                "{ram_mb} MiB of memory requested; a VM needs at least {MIN_RAM_MB} MiB"
            ));
        }
        let weigher = match req.weigher.as_deref() {
            None | Some("spread") => Weigher::Spread,
            Some("pack") => Weigher::Pack,
            Some(w) => return invalid(format!("unknown weigher {w:?} (spread or pack)")),
        };
        // Boot files are checked here, where the request arrives, so that a missing or
        // corrupt file is refused before anything is written. Until images live in the
        // storage layer they must be present at the same path on every node.
        compute::check_boot(&req.boot).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let volume = match &req.volume {
            None => None,
            Some(v) => {
                if req.boot.disk.is_some() {
                    return invalid("give either a disk image or a volume, not both".into());
                }
                let cur = self.find_volume(caller, v)?;
                if let Some(vm) = &cur.value.used_by {
                    return invalid(format!(
                        "volume {} is already the disk of VM {vm}",
                        cur.value.name
                    ));
                }
                if cur.value.attached_to.is_some() {
                    return invalid(format!(
                        "volume {} is attached on node {}; detach it first",
                        cur.value.name,
                        cur.value
                            .attached_to
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ));
                }
                Some(cur)
            }
        };
        let preq = placement::Request {
            vcpus,
            ram_mb,
            anti_affinity_group: req.anti_affinity_group.clone(),
            affinity_group: req.affinity_group.clone(),
            hypervisor: req.hypervisor.clone(),
            qemu_only: qemu_only(&req.boot, req.config_drive),
            weigher,
            prefer: volume
                .as_ref()
                .map(|v| v.value.replicas.iter().map(|r| r.node).collect())
                .unwrap_or_default(),
        };
        if let Some(u) = &req.user_data {
            if u.len() > MAX_USER_DATA {
                return invalid(format!(
                    "user data is {} bytes; at most {MAX_USER_DATA} are accepted",
                    u.len()
                ));
            }
        }
        let id = VmId::random();
        // NICs: a port per network, made now (unbound), bound to the VM's node in the
        // VM's own transaction below; removed again if the VM is not created.
        let mut ports = Vec::new();
        for n in &req.networks {
            let made = self
                .create_port(
                    caller,
                    super::ports::CreatePort {
                        network: n.clone(),
                        name: format!("{name}-nic{}", ports.len()),
                        device_id: id.0.clone(),
                        device_owner: "compute:nova".into(),
                        project: req.project.clone(),
                        security_groups: req.security_groups.clone(),
                        ..Default::default()
                    },
                )
                .await;
            match made {
                Ok(p) => ports.push(p.record.id),
                Err(e) => {
                    self.drop_ports(&ports).await;
                    return Err(e);
                }
            }
        }
        let made = self
            .place_and_record(
                &req,
                &preq,
                &id,
                name,
                &flavor.name,
                vcpus,
                ram_mb,
                &volume,
                &ports,
            )
            .await;
        if made.is_err() {
            self.drop_ports(&ports).await;
        }
        made
    }

    pub(super) async fn drop_ports(&self, ports: &[String]) {
        for p in ports {
            if let Err(e) = self.delete_port(&Caller::system(), p).await {
                tracing::warn!(port = %p, error = %e, "cannot remove the port of a VM that was not created");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn place_and_record(
        &self,
        req: &CreateVm,
        preq: &placement::Request,
        id: &VmId,
        name: &str,
        flavor: &str,
        vcpus: u32,
        ram_mb: u64,
        volume: &Option<Versioned<VolumeRecord>>,
        ports: &[String],
    ) -> Result<VmView, ControlError> {
        for _attempt in 0..8 {
            let epoch = self.store.get::<PlacementEpochs>("vms")?;
            let (rev, n) = epoch.map(|e| (e.revision, e.value)).unwrap_or((0, 0));
            self.check_quota(
                req.project.as_deref(),
                &[
                    ("instances", 1),
                    ("cores", vcpus as i64),
                    ("ram", ram_mb as i64),
                ],
            )?;
            let (node, why) = placement::place(preq, &self.candidates()?)
                .map_err(|e| ControlError::Invalid(format!("cannot place VM {name:?}: {e}")))?;
            let record = VmRecord {
                id: id.clone(),
                name: name.to_string(),
                flavor: flavor.to_string(),
                vcpus,
                ram_mb,
                boot: req.boot.clone(),
                power: if req.stopped {
                    PowerIntent::Stopped
                } else {
                    PowerIntent::Running
                },
                reboot_seq: 0,
                anti_affinity_group: req.anti_affinity_group.clone(),
                node,
                placement: why,
                created_at: now_secs(),
                volume: volume.as_ref().map(|v| v.value.id.clone()),
                stop_now: false,
                ports: ports.to_vec(),
                user_data: req.user_data.clone(),
                public_keys: req.public_keys.clone(),
                project: req.project.clone(),
                user: req.user.clone(),
                image: req.image.clone(),
                key_name: req.key_name.clone(),
                metadata: req.metadata.clone(),
                delete_volume: req.delete_volume,
                data_volumes: Vec::new(),
                affinity_group: req.affinity_group.clone(),
                config_drive: req.config_drive,
                kept_ports: Vec::new(),
            };
            let mut txn = TxnBuilder::new()
                .require_revision::<PlacementEpochs>("vms", rev)
                .put::<PlacementEpochs>("vms", &(n + 1))
                .require_revision::<Vms>(id.to_string(), 0)
                .put::<Vms>(id.to_string(), &record);
            if let Some(v) = &volume {
                // The volume becomes this VM's, in the same transaction (or neither).
                let mut vr = v.value.clone();
                vr.used_by = Some(id.clone());
                txn = txn
                    .require_revision::<Volumes>(vr.id.to_string(), v.revision)
                    .put::<Volumes>(vr.id.to_string(), &vr);
            }
            for p in ports {
                // Its NICs' ports are bound to its node with it.
                let cur = self
                    .store
                    .get::<Ports>(p)?
                    .ok_or_else(|| ControlError::NotFound(format!("port {p} vanished")))?;
                let mut pr = cur.value.clone();
                pr.host = Some(node);
                txn = txn
                    .require_revision::<Ports>(p.clone(), cur.revision)
                    .put::<Ports>(p.clone(), &pr);
            }
            match self
                .store
                .commit(self.with_event(
                    txn,
                    "vm.created",
                    format!("VM {name} ({id}) created, placed on node {node}"),
                ))
                .await
            {
                Ok(_) => return Ok(self.view(record, None)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControlError::NotReady(
            "placement kept conflicting with concurrent creates; try again".into(),
        ))
    }

    pub fn flavor(&self, name: &str) -> Result<Flavor, ControlError> {
        if let Some(f) = self.store.get::<Flavors>(name)? {
            return Ok(f.value);
        }
        let known: Vec<String> = self
            .store
            .list::<Flavors>()?
            .into_iter()
            .map(|f| f.value.name)
            .collect();
        Err(ControlError::Invalid(format!(
            "no flavor {name:?} (flavors: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )))
    }

    pub fn flavors(&self) -> Result<Vec<Flavor>, ControlError> {
        let mut f: Vec<Flavor> = self
            .store
            .list::<Flavors>()?
            .into_iter()
            .map(|f| f.value)
            .collect();
        f.sort_by(|a, b| (a.vcpus, a.ram_mb, &a.name).cmp(&(b.vcpus, b.ram_mb, &b.name)));
        Ok(f)
    }

    /// What the scheduler knows: nodes, their liveness and what is already placed on them.
    pub(super) fn candidates(&self) -> Result<Vec<Candidate>, ControlError> {
        let gossip = self.membership.view();
        let mut c: BTreeMap<NodeId, Candidate> = BTreeMap::new();
        for n in self.store.list::<Nodes>()? {
            let n = n.value;
            let alive = n.id == self.node
                || gossip
                    .get(&n.id)
                    .is_some_and(|p| p.liveness == Liveness::Alive);
            c.insert(
                n.id,
                Candidate {
                    id: n.id,
                    alive,
                    cores: n.cores,
                    cpu_ratio: n.cpu_allocation_ratio,
                    memory_mb: n.memory_bytes / (1 << 20),
                    hypervisor: n.hypervisor.clone(),
                    used_vcpus: 0,
                    used_mb: 0,
                    groups: vec![],
                    maintenance: n.maintenance.as_ref().map(|m| m.reason.clone()),
                },
            );
        }
        for vm in self.store.list::<Vms>()? {
            if let Some(n) = c.get_mut(&vm.value.node) {
                n.used_vcpus += vm.value.vcpus;
                n.used_mb += vm.value.ram_mb;
                if let Some(g) = &vm.value.anti_affinity_group {
                    n.groups.push(g.clone());
                }
                if let Some(g) = &vm.value.affinity_group {
                    n.groups.push(g.clone());
                }
            }
        }
        Ok(c.into_values().collect())
    }

    /// Finds a VM by id or by name (a name must be unambiguous).
    pub fn find_vm(&self, id_or_name: &str) -> Result<Versioned<VmRecord>, ControlError> {
        self.find_named::<Vms>("VM", id_or_name, |v| &v.name)
    }

    pub fn vm(&self, id_or_name: &str) -> Result<VmView, ControlError> {
        let rec = self.find_vm(id_or_name)?.value;
        let status = self.store.get::<VmStatuses>(&rec.id.0)?.map(|s| s.value);
        Ok(self.view(rec, status))
    }

    pub fn vms(&self) -> Result<Vec<VmView>, ControlError> {
        let statuses: BTreeMap<String, VmStatus> = self
            .store
            .list::<VmStatuses>()?
            .into_iter()
            .map(|s| (s.value.id.0.clone(), s.value))
            .collect();
        let mut out: Vec<VmView> = self
            .store
            .list::<Vms>()?
            .into_iter()
            .map(|r| {
                let s = statuses.get(&r.value.id.0).cloned();
                self.view(r.value, s)
            })
            .collect();
        out.sort_by(|a, b| {
            (a.record.created_at, &a.record.name).cmp(&(b.record.created_at, &b.record.name))
        });
        Ok(out)
    }

    fn view(&self, record: VmRecord, status: Option<VmStatus>) -> VmView {
        match status {
            Some(s) => VmView {
                state: s.state,
                reason: s.reason,
                driver: s.driver,
                boots: s.boots,
                status_updated_at: s.updated_at,
                reboots_done: s.reboot_seq,
                record,
            },
            None => VmView {
                state: VmState::Build,
                reason: format!("waiting for node {} to start it", record.node),
                driver: String::new(),
                boots: 0,
                status_updated_at: 0,
                reboots_done: 0,
                record,
            },
        }
    }

    /// Start, stop or reboot: changes the desired state; the VM's node carries it out.
    pub async fn vm_action(
        &self,
        id_or_name: &str,
        action: VmAction,
    ) -> Result<VmView, ControlError> {
        let cur = self.find_vm(id_or_name)?;
        let mut rec = cur.value.clone();
        match action {
            VmAction::Start => {
                rec.power = PowerIntent::Running;
                rec.stop_now = false;
            }
            VmAction::Stop => rec.power = PowerIntent::Stopped,
            VmAction::ForceStop => {
                rec.power = PowerIntent::Stopped;
                rec.stop_now = true;
            }
            VmAction::Pause | VmAction::Resume if rec.power == PowerIntent::Stopped => {
                return Err(ControlError::Invalid(format!(
                    "VM {} is stopped; start it first",
                    rec.name
                )));
            }
            VmAction::Pause => rec.power = PowerIntent::Paused,
            VmAction::Resume => rec.power = PowerIntent::Running,
            VmAction::Reboot => {
                if rec.power != PowerIntent::Running {
                    return Err(ControlError::Invalid(format!(
                        "VM {} is stopped; start it instead of rebooting it",
                        rec.name
                    )));
                }
                rec.reboot_seq += 1;
            }
        }
        // Starting a VM that failed is a retry: the new revision tells its node to try
        // again even when the power intent did not change.
        let txn = TxnBuilder::new()
            .require_revision::<Vms>(rec.id.to_string(), cur.revision)
            .put::<Vms>(rec.id.to_string(), &rec);
        let verb = match action {
            VmAction::Start => "start",
            VmAction::Stop => "stop",
            VmAction::ForceStop => "force-stop",
            VmAction::Reboot => "reboot",
            VmAction::Pause => "pause",
            VmAction::Resume => "resume",
        };
        self.store
            .commit(self.with_event(
                txn,
                &format!("vm.{verb}"),
                format!("VM {} ({}): {verb} requested", rec.name, rec.id),
            ))
            .await?;
        self.vm(&rec.id.0)
    }

    /// Deletes a VM's record; its node destroys the VM and removes its status.
    pub async fn delete_vm(&self, id_or_name: &str) -> Result<VmRecord, ControlError> {
        let cur = self.find_vm(id_or_name)?;
        let rec = cur.value;
        let mut txn = TxnBuilder::new()
            .require_revision::<Vms>(rec.id.to_string(), cur.revision)
            .delete::<Vms>(rec.id.to_string());
        // Its NICs' ports go with it, but for those attached from existing ports, which
        // are unbound and kept (as Nova keeps them).
        for p in &rec.ports {
            if let Some(port) = self.store.get::<Ports>(p)? {
                txn = if rec.kept_ports.contains(p) {
                    let mut pr = port.value.clone();
                    super::interfaces::release(&mut pr);
                    txn.require_revision::<Ports>(p.clone(), port.revision)
                        .put::<Ports>(p.clone(), &pr)
                } else {
                    super::ports::delete_ops(txn, &port.value)
                };
            }
        }
        // Its data volumes are released and detached.
        for vid in &rec.data_volumes {
            if let Some(v) = self.store.get::<Volumes>(&vid.0)? {
                let mut vr = v.value.clone();
                vr.used_by = None;
                vr.attached_to = None;
                txn = txn
                    .require_revision::<Volumes>(vid.to_string(), v.revision)
                    .put::<Volumes>(vid.to_string(), &vr);
            }
        }
        // Its volume is released and detached with it (its node then drops the export),
        // or deleted with it when it was made for it and nothing was made from it.
        if let Some(vid) = &rec.volume {
            if let Some(v) = self.store.get::<Volumes>(&vid.0)? {
                if rec.delete_volume && v.value.snapshots.is_empty() {
                    txn = txn
                        .require_revision::<Volumes>(vid.to_string(), v.revision)
                        .delete::<Volumes>(vid.to_string());
                    return self.commit_vm_delete(txn, rec).await;
                }
                let mut vr = v.value.clone();
                vr.used_by = None;
                vr.attached_to = None;
                txn = txn
                    .require_revision::<Volumes>(vid.to_string(), v.revision)
                    .put::<Volumes>(vid.to_string(), &vr);
            }
        }
        self.commit_vm_delete(txn, rec).await
    }

    async fn commit_vm_delete(
        &self,
        txn: TxnBuilder,
        rec: VmRecord,
    ) -> Result<VmRecord, ControlError> {
        self.store
            .commit(self.with_event(
                txn,
                "vm.deleted",
                format!("VM {} ({}) deleted", rec.name, rec.id),
            ))
            .await?;
        if rec.delete_volume && rec.image.is_some() {
            // Its boot disk was a clone of an image, which may have been the last one
            // keeping a deleted image's data.
            self.collect_image_volumes().await;
        }
        Ok(rec)
    }

    /// Whether a VM is gone everywhere: no record, and its node has destroyed it (no status).
    pub fn vm_gone(&self, id: &str) -> Result<bool, ControlError> {
        Ok(self.store.get::<Vms>(id)?.is_none() && self.store.get::<VmStatuses>(id)?.is_none())
    }

    /// Records that a VM stopped on its own (the guest powered off): its desired state
    /// becomes stopped, so it is not started again behind the user's back.
    pub async fn vm_stopped_by_guest(&self, id: &VmId, why: &str) -> Result<(), ControlError> {
        let Some(cur) = self.store.get::<Vms>(&id.0)? else {
            return Ok(());
        };
        if cur.value.power == PowerIntent::Stopped {
            return Ok(());
        }
        let mut rec = cur.value.clone();
        rec.power = PowerIntent::Stopped;
        let txn = TxnBuilder::new()
            .require_revision::<Vms>(id.to_string(), cur.revision)
            .put::<Vms>(id.to_string(), &rec);
        self.store
            .commit(self.with_event(
                txn,
                "vm.stopped",
                format!("VM {} ({id}) stopped: {why}", rec.name),
            ))
            .await?;
        Ok(())
    }

    /// Writes the observed state of a VM (only the agent of the VM's node calls this).
    pub async fn report_vm_status(&self, status: VmStatus) -> Result<(), ControlError> {
        self.store
            .commit(TxnBuilder::new().put::<VmStatuses>(status.id.to_string(), &status))
            .await?;
        Ok(())
    }

    pub async fn forget_vm_status(&self, id: &VmId) -> Result<(), ControlError> {
        self.store
            .commit(TxnBuilder::new().delete::<VmStatuses>(id.to_string()))
            .await?;
        Ok(())
    }

    /// A VM's serial console, read on the node that runs it.
    pub async fn vm_console(
        &self,
        id_or_name: &str,
        bytes: u64,
        offset: Option<u64>,
    ) -> Result<(Vec<u8>, u64), ControlError> {
        let (rec, reader) = self.console_of(id_or_name)?;
        reader
            .tail(rec.node, &rec.id, bytes, offset)
            .await
            .map_err(ControlError::Unavailable)
    }

    /// A VM and the console reader that reaches its node.
    fn console_of(
        &self,
        id_or_name: &str,
    ) -> Result<(VmRecord, &std::sync::Arc<dyn super::ConsoleReader>), ControlError> {
        let rec = self.find_vm(id_or_name)?.value;
        let reader = self
            .consoles
            .get()
            .ok_or_else(|| ControlError::NotReady("the node agent is not running yet".into()))?;
        Ok((rec, reader))
    }

    /// Types into a VM's serial console, on the node that runs it.
    pub async fn vm_console_write(
        &self,
        id_or_name: &str,
        data: &[u8],
    ) -> Result<(), ControlError> {
        let (rec, reader) = self.console_of(id_or_name)?;
        reader
            .input(rec.node, &rec.id, data)
            .await
            .map_err(ControlError::Unavailable)
    }

    pub(super) fn with_event(&self, txn: TxnBuilder, kind: &str, message: String) -> TxnBuilder {
        txn.append::<Events>(&Event {
            at_ms: now_ms(),
            node: self.node,
            kind: kind.into(),
            message,
        })
        .trim::<Events>(EVENTS_KEPT)
    }
}

impl Control {
    /// Creates a flavor (its name is its id); refused for a taken name or nonsense sizes.
    pub async fn create_flavor(
        &self,
        f: crate::cluster::store::compute_tables::Flavor,
    ) -> Result<crate::cluster::store::compute_tables::Flavor, ControlError> {
        use crate::cluster::store::compute_tables::Flavors;
        let name = f.name.trim();
        if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(ControlError::Invalid(format!(
                "flavor name {name:?} must be 1-255 printable characters without '/'"
            )));
        }
        if f.vcpus == 0 || f.vcpus > MAX_VCPUS {
            return Err(ControlError::Invalid(format!(
                "a flavor needs 1 to {} vCPUs ({} asked)",
                MAX_VCPUS, f.vcpus
            )));
        }
        if f.ram_mb < 64 {
            return Err(ControlError::Invalid(format!(
                "a flavor needs at least 64 MiB of memory ({} asked)",
                f.ram_mb
            )));
        }
        if self.store.get::<Flavors>(name)?.is_some() {
            return Err(ControlError::Conflict(format!(
                "Flavor with name {name} already exists."
            )));
        }
        let txn = TxnBuilder::new()
            .require_revision::<Flavors>(name.to_string(), 0)
            .put::<Flavors>(name.to_string(), &f);
        self.store
            .commit(self.with_event(txn, "flavor.created", format!("flavor {name} created")))
            .await?;
        Ok(f)
    }

    pub async fn delete_flavor(&self, name: &str) -> Result<(), ControlError> {
        use crate::cluster::store::compute_tables::Flavors;
        if self.store.get::<Flavors>(name)?.is_none() {
            return Err(ControlError::NotFound(format!(
                "Flavor {name} could not be found."
            )));
        }
        let txn = TxnBuilder::new().delete::<Flavors>(name.to_string());
        self.store
            .commit(self.with_event(txn, "flavor.deleted", format!("flavor {name} deleted")))
            .await?;
        Ok(())
    }
}
