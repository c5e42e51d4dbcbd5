//! The VM reconciler: makes the VMs placed on this node run or stop as their records say,
//! and reports what runs (BUILD → ACTIVE, SHUTOFF, ERROR with a reason) in `vm_status`.
//!
//! A restart of the daemon does not stop VMs: their workers keep running and are adopted
//! again from the driver's own bookkeeping. VMs found on the node without a record (deleted
//! while the node was away) are destroyed, but only after a linearizable read has shown the
//! record is really gone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::attach::Attachments;
use crate::cluster::store::compute_tables::{
    PowerIntent, VmRecord, VmState, VmStatus, VmStatuses, Vms,
};
use crate::cluster::store::image_tables::Images;
use crate::cluster::store::network_tables::{PortStatuses, Ports};
use crate::compute::{Hypervisor, NbdDisk, Nic, RunState, VmSpec};
use crate::control::{now_secs, Control};
use crate::ids::{VmId, VolumeId};
use crate::telemetry::error_chain;

/// How long a guest gets to power off on ACPI request before it is forced off.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

pub struct VmAgent {
    pub(super) control: Arc<Control>,
    pub(super) driver: Arc<dyn Hypervisor>,
    state: Mutex<AgentState>,
    /// This node's volume attachments (for VMs whose disk is a volume).
    pub(super) volumes: Arc<Attachments>,
    pub(super) nbd_socket: PathBuf,
    /// Per running VM: the data volumes plugged into it, in order.
    pub(super) plugged: Mutex<HashMap<VmId, Vec<VolumeId>>>,
    /// Per running VM: the ports whose NICs it has, in order.
    pub(super) plugged_nics: Mutex<HashMap<VmId, Vec<String>>>,
}

#[derive(Default)]
struct AgentState {
    /// VMs with an operation under way (start, stop, reboot, destroy).
    busy: HashSet<VmId>,
    /// VMs this agent has seen running: when one stops without being asked, its guest
    /// powered off (or crashed).
    seen_running: HashSet<VmId>,
    /// Record revisions whose start failed: not retried until the record changes.
    failed: HashMap<VmId, (u64, String)>,
    /// Statuses written, to write only changes.
    reported: HashMap<VmId, VmStatus>,
    /// When the image cache was last pruned.
    pruned: Option<std::time::Instant>,
}

/// How often unused images are removed from this node's cache.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

fn spec(rec: &VmRecord) -> VmSpec {
    VmSpec {
        id: rec.id.clone(),
        name: rec.name.clone(),
        vcpus: rec.vcpus,
        ram_mb: rec.ram_mb,
        boot: rec.boot.clone(),
        volume: None,
        nics: Vec::new(),
        data_disks: Vec::new(),
        config_drive: None,
    }
}

/// How long a VM start waits for its volume's export on this node.
const VOLUME_ATTACH_WAIT: Duration = Duration::from_secs(30);

/// How often the VMs' log files are checked against their bound.
const LOG_CHECK_EVERY: Duration = Duration::from_secs(10);

impl VmAgent {
    pub fn new(
        control: Arc<Control>,
        driver: Arc<dyn Hypervisor>,
        volumes: Arc<Attachments>,
        nbd_socket: PathBuf,
    ) -> Arc<Self> {
        Arc::new(VmAgent {
            control,
            driver,
            state: Mutex::new(AgentState::default()),
            volumes,
            nbd_socket,
            plugged: Mutex::new(HashMap::new()),
            plugged_nics: Mutex::new(HashMap::new()),
        })
    }

    /// The driver's spec of a VM; a volume disk is attached to this node first (which
    /// fences any earlier writer) and waited for until this node exports it.
    async fn start_spec(&self, rec: &VmRecord) -> Result<VmSpec, String> {
        let mut s = spec(rec);
        let cache = self.nbd_socket.with_file_name("image-cache");
        if let Some(f) = &rec.boot.kernel_image {
            s.boot.kernel = super::images::cached(&self.volumes, &cache, f)
                .await?
                .display()
                .to_string();
        }
        if let Some(f) = &rec.boot.initrd_image {
            s.boot.initrd = Some(
                super::images::cached(&self.volumes, &cache, f)
                    .await?
                    .display()
                    .to_string(),
            );
        }
        s.nics = self.nics(rec).await?;
        if rec.config_drive {
            s.config_drive = Some(self.config_drive(rec)?);
        }
        for d in &rec.data_volumes {
            s.data_disks.push(self.attach_here(d).await?);
        }
        if let Some(vol) = &rec.volume {
            s.volume = Some(self.attach_here(vol).await?);
        }
        Ok(s)
    }

    /// Attaches a volume to this node (fencing any earlier writer) and waits until this
    /// node exports it.
    pub(super) async fn attach_here(&self, vol: &VolumeId) -> Result<NbdDisk, String> {
        self.control
            .attach_volume(&vol.0, self.control.node)
            .await
            .map_err(|e| format!("cannot attach volume {vol}: {}", error_chain(&e)))?;
        let deadline = tokio::time::Instant::now() + VOLUME_ATTACH_WAIT;
        while self.volumes.get(vol).is_none() {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "volume {vol}: its replicas did not answer within {} s",
                    VOLUME_ATTACH_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(NbdDisk {
            socket: self.nbd_socket.clone(),
            export: vol.0.clone(),
        })
    }

    /// The VM's NICs, once this node's network agent carries each of its ports (its TAP
    /// is on the network's bridge).
    async fn nics(&self, rec: &VmRecord) -> Result<Vec<Nic>, String> {
        let mut out = Vec::new();
        for p in &rec.ports {
            out.push(self.nic_of(p).await?);
        }
        Ok(out)
    }

    /// The NIC of port `p`, once this node's data plane carries it (its TAP exists).
    pub(super) async fn nic_of(&self, p: &str) -> Result<Nic, String> {
        let deadline = tokio::time::Instant::now() + VOLUME_ATTACH_WAIT;
        loop {
            let port = self
                .control
                .store
                .get::<Ports>(p)
                .map_err(|e| error_chain(&e))?
                .ok_or_else(|| format!("its port {p} is gone"))?
                .value;
            let st = self
                .control
                .store
                .get::<PortStatuses>(p)
                .map_err(|e| error_chain(&e))?
                .map(|s| s.value);
            match st {
                Some(s) if s.node == self.control.node && s.status == "ACTIVE" => {
                    return Ok(Nic {
                        tap: s.tap,
                        mac: port.mac,
                    });
                }
                Some(s) if s.node == self.control.node && s.status == "ERROR" => {
                    return Err(format!("its port {p} cannot be set up: {}", s.detail));
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "its port {p} was not set up on this node within {} s",
                        VOLUME_ATTACH_WAIT.as_secs()
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub fn driver(&self) -> &Arc<dyn Hypervisor> {
        &self.driver
    }

    /// Marks a VM busy (an operation under way); false if it was already.
    pub(super) fn mark_busy(&self, id: &VmId) -> bool {
        self.st().busy.insert(id.clone())
    }

    pub(super) fn unmark_busy(&self, id: &VmId) {
        self.st().busy.remove(id);
    }

    fn st(&self) -> std::sync::MutexGuard<'_, AgentState> {
        self.state.lock().expect("agent state lock poisoned")
    }

    /// Runs until the task is dropped: on every change to the VM tables, and every second.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.control.store.watch();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Adopt what already runs before anything else is decided.
        for id in self.driver.running() {
            self.st().seen_running.insert(id);
        }
        let mut synced = false;
        let mut logs_checked = std::time::Instant::now();
        loop {
            if !super::next_pass(&mut changes, &mut tick).await {
                return;
            }
            if logs_checked.elapsed() >= LOG_CHECK_EVERY {
                logs_checked = std::time::Instant::now();
                self.bound_logs().await;
            }
            if !synced {
                // Orphans are only destroyed once this node has read the latest state.
                synced = self.control.store.linearizable().await.is_ok();
            }
            if let Err(e) = self.clone().reconcile(synced).await {
                tracing::debug!(error = %error_chain(&e), "VM reconcile incomplete");
            }
        }
    }

    /// Keeps the log files of the VMs running here bounded (a guest printing without
    /// end must not fill the data disk).
    async fn bound_logs(&self) {
        let files: Vec<std::path::PathBuf> = self
            .driver
            .running()
            .iter()
            .flat_map(|id| self.driver.log_files(id))
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for f in files {
                match crate::compute::logs::bound_log(&f, crate::compute::logs::MAX_LOG_BYTES) {
                    Ok(true) => tracing::info!(file = %f.display(), "VM log rotated"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(file = %f.display(), error = %e, "cannot bound a VM log")
                    }
                }
            }
        })
        .await;
    }

    async fn reconcile(self: Arc<Self>, synced: bool) -> Result<(), crate::control::ControlError> {
        let me = self.control.node;
        let records: BTreeMap<VmId, (u64, VmRecord)> = self
            .control
            .store
            .list::<Vms>()?
            .into_iter()
            .filter(|r| r.value.node == me)
            .map(|r| (r.value.id.clone(), (r.revision, r.value)))
            .collect();
        for (id, (revision, rec)) in &records {
            if self.st().busy.contains(id) {
                continue;
            }
            let state = self.driver.state(id).await;
            let status = self
                .control
                .store
                .get::<VmStatuses>(&id.0)?
                .map(|s| s.value);
            self.clone()
                .converge(rec.clone(), *revision, state, status)
                .await;
        }
        if !synced {
            return Ok(());
        }
        if let Err(e) = self.prune_image_cache() {
            tracing::debug!(error = %error_chain(&e), "image cache not pruned this time");
        }
        // VMs of this node without a record: deleted. Destroy them and drop their status.
        let mut gone: HashSet<VmId> = self
            .control
            .store
            .list::<VmStatuses>()?
            .into_iter()
            .filter(|s| s.value.node == me && !records.contains_key(&s.value.id))
            .map(|s| s.value.id)
            .collect();
        gone.extend(
            self.driver
                .running()
                .into_iter()
                .filter(|id| !records.contains_key(id)),
        );
        for id in gone {
            if !self.st().busy.insert(id.clone()) {
                continue;
            }
            let agent = self.clone();
            tokio::spawn(async move {
                match agent.driver.destroy(&id).await {
                    Ok(()) => {
                        tracing::info!(vm = %id, "VM deleted: destroyed on this node");
                        agent.forget_plugged(&id);
                        agent.forget_plugged_nics(&id);
                        let _ = std::fs::remove_file(agent.config_drive_path(&id));
                        if agent.control.forget_vm_status(&id).await.is_ok() {
                            let mut st = agent.st();
                            st.reported.remove(&id);
                            st.seen_running.remove(&id);
                            st.failed.remove(&id);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(vm = %id, error = %error_chain(&e), "cannot destroy deleted VM")
                    }
                }
                agent.st().busy.remove(&id);
            });
        }
        Ok(())
    }

    /// Removes cached kernels and initramfs images nothing can boot from any more (their
    /// image deleted, and no VM anywhere in the cluster naming them), every 10 s.
    fn prune_image_cache(&self) -> Result<(), crate::control::ControlError> {
        if self.st().pruned.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return Ok(());
        }
        let mut keep: HashSet<String> = self
            .control
            .store
            .list::<Images>()?
            .into_iter()
            .map(|r| r.value.id)
            .collect();
        for vm in self.control.store.list::<Vms>()? {
            let b = &vm.value.boot;
            keep.extend(
                [&b.kernel_image, &b.initrd_image]
                    .into_iter()
                    .flatten()
                    .map(|f| f.image.clone()),
            );
        }
        let dir = self.nbd_socket.with_file_name("image-cache");
        self.st().pruned = Some(std::time::Instant::now());
        super::images::prune(&dir, &keep);
        Ok(())
    }

    async fn converge(
        self: Arc<Self>,
        rec: VmRecord,
        revision: u64,
        state: RunState,
        status: Option<VmStatus>,
    ) {
        let id = rec.id.clone();
        let done_reboots = status.as_ref().map(|s| s.reboot_seq).unwrap_or(0);
        match (rec.power, state) {
            (PowerIntent::Running | PowerIntent::Paused, RunState::Stopped(why)) => {
                if self.st().seen_running.remove(&id) {
                    // It ran and stopped without being asked: the guest powered off.
                    tracing::info!(vm = %id, reason = %why, "VM stopped on its own");
                    if let Err(e) = self.control.vm_stopped_by_guest(&id, &why).await {
                        tracing::debug!(vm = %id, error = %error_chain(&e), "cannot record guest power-off");
                    }
                    self.report(&rec, VmState::Shutoff, why, done_reboots).await;
                    return;
                }
                let failed = self.st().failed.get(&id).cloned();
                if let Some((rev, why)) = failed {
                    if rev == revision {
                        self.report(&rec, VmState::Error, why, done_reboots).await;
                        return;
                    }
                }
                self.st().busy.insert(id.clone());
                self.report(&rec, VmState::Build, "starting".into(), done_reboots)
                    .await;
                let agent = self.clone();
                tokio::spawn(async move {
                    let started = match agent.start_spec(&rec).await {
                        Ok(s) => agent.driver.start(&s).await.map_err(|e| error_chain(&e)),
                        Err(why) => Err(why),
                    };
                    match started {
                        Ok(()) => {
                            tracing::info!(vm = %id, name = %rec.name, driver = agent.driver.name(), "VM started");
                            {
                                let mut st = agent.st();
                                st.failed.remove(&id);
                                st.seen_running.insert(id.clone());
                            }
                            agent.set_plugged(&id, rec.data_volumes.clone());
                            agent.set_plugged_nics(&id, rec.ports.clone());
                            let why = agent.active_reason(&rec);
                            agent
                                .report(&rec, VmState::Active, why, rec.reboot_seq)
                                .await;
                        }
                        Err(why) => {
                            tracing::warn!(vm = %id, error = %why, "VM failed to start");
                            agent
                                .st()
                                .failed
                                .insert(id.clone(), (revision, why.clone()));
                            agent.report(&rec, VmState::Error, why, done_reboots).await;
                        }
                    }
                    agent.st().busy.remove(&id);
                });
            }
            (PowerIntent::Running, run) => {
                self.st().seen_running.insert(id.clone());
                if rec.reboot_seq > done_reboots {
                    self.st().busy.insert(id.clone());
                    let agent = self.clone();
                    tokio::spawn(async move {
                        let (state, why) = match agent.driver.reboot(&id).await {
                            Ok(()) => (VmState::Active, agent.active_reason(&rec)),
                            Err(e) => (
                                VmState::Active,
                                format!("reboot failed: {}", error_chain(&e)),
                            ),
                        };
                        agent.report(&rec, state, why, rec.reboot_seq).await;
                        agent.st().busy.remove(&id);
                    });
                    return;
                }
                if run == RunState::Paused {
                    self.clone().power_op(rec, done_reboots, false).await;
                    return;
                }
                if self.clone().sync_disks(&rec) || self.clone().sync_nics(&rec) {
                    return;
                }
                let why = self.active_reason(&rec);
                self.report(&rec, VmState::Active, why, done_reboots).await;
            }
            (PowerIntent::Paused, RunState::Running) => {
                self.st().seen_running.insert(id.clone());
                self.clone().power_op(rec, done_reboots, true).await;
            }
            (PowerIntent::Paused, RunState::Paused) => {
                self.st().seen_running.insert(id.clone());
                self.report(
                    &rec,
                    VmState::Paused,
                    "paused by request".into(),
                    done_reboots,
                )
                .await;
            }
            (PowerIntent::Stopped, RunState::Stopped(why)) => {
                self.st().seen_running.remove(&id);
                self.forget_plugged(&id);
                self.forget_plugged_nics(&id);
                // Already reported off (by the stop, which says how it went): keep that.
                if status.as_ref().is_some_and(|s| s.state == VmState::Shutoff) {
                    return;
                }
                let why = if why == "not running" {
                    "stopped".to_string()
                } else {
                    why
                };
                self.report(&rec, VmState::Shutoff, why, rec.reboot_seq)
                    .await;
            }
            (PowerIntent::Stopped, _) => {
                {
                    let mut st = self.st();
                    st.seen_running.remove(&id);
                    st.busy.insert(id.clone());
                }
                let agent = self.clone();
                tokio::spawn(async move {
                    let grace = if rec.stop_now {
                        Duration::ZERO
                    } else {
                        STOP_GRACE
                    };
                    match agent.driver.stop(&id, grace).await {
                        Err(e) => {
                            let why = error_chain(&e);
                            tracing::warn!(vm = %id, error = %why, "VM did not stop");
                            agent.report(&rec, VmState::Error, why, done_reboots).await;
                        }
                        Ok(how) => {
                            tracing::info!(vm = %id, how = %how, "VM stopped");
                            agent
                                .report(
                                    &rec,
                                    VmState::Shutoff,
                                    format!("stopped by request ({how})"),
                                    rec.reboot_seq,
                                )
                                .await;
                        }
                    }
                    agent.st().busy.remove(&id);
                });
            }
        }
    }

    /// Pauses or resumes a VM in the background.
    async fn power_op(self: Arc<Self>, rec: VmRecord, reboots: u64, pause: bool) {
        let id = rec.id.clone();
        self.st().busy.insert(id.clone());
        let agent = self.clone();
        tokio::spawn(async move {
            let r = if pause {
                agent.driver.pause(&id).await
            } else {
                agent.driver.resume(&id).await
            };
            let (state, why) = match (r, pause) {
                (Ok(()), true) => (VmState::Paused, "paused by request".to_string()),
                (Ok(()), false) => (VmState::Active, agent.active_reason(&rec)),
                (Err(e), true) => (
                    VmState::Active,
                    format!("pause failed: {}", error_chain(&e)),
                ),
                (Err(e), false) => (
                    VmState::Paused,
                    format!("resume failed: {}", error_chain(&e)),
                ),
            };
            agent.report(&rec, state, why, reboots).await;
            agent.st().busy.remove(&id);
        });
    }

    fn active_reason(&self, rec: &VmRecord) -> String {
        format!(
            "running on node {} ({} driver)",
            rec.node,
            self.driver.name()
        )
    }

    async fn report(&self, rec: &VmRecord, state: VmState, reason: String, reboot_seq: u64) {
        let (boots, _) = self.driver.boots(&rec.id).await;
        let status = VmStatus {
            id: rec.id.clone(),
            state,
            reason,
            node: self.control.node,
            driver: self.driver.name().to_string(),
            reboot_seq,
            boots,
            updated_at: now_secs(),
        };
        let unchanged = self.st().reported.get(&rec.id).is_some_and(|old| {
            VmStatus {
                updated_at: status.updated_at,
                ..old.clone()
            } == status
        });
        // A VM deleted meanwhile gets no status back (its destroy removes the status).
        let deleted = !matches!(self.control.store.get::<Vms>(&rec.id.0), Ok(Some(_)));
        if unchanged || deleted {
            return;
        }
        match self.control.report_vm_status(status.clone()).await {
            Ok(()) => {
                self.st().reported.insert(rec.id.clone(), status);
            }
            Err(e) => {
                tracing::debug!(vm = %rec.id, error = %error_chain(&e), "cannot report VM status")
            }
        }
    }
}
