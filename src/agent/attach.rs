//! Volumes attached to this node: for each, a replica client ("upstairs") of the volume's
//! current generation, exported over NBD on the node's local socket (QEMU, `qemu-img`,
//! `nbd-client` and Strata's VMM worker all speak NBD). The reconciler also resyncs
//! replicas that come back and records replica health in the cluster state.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster::store::storage_tables::{ReplicaState, VolumeRecord, Volumes};
use crate::cluster::store::tables::Nodes;
use crate::control::Control;
use crate::ids::{NodeId, VolumeId};
use crate::storage::nbd::Exports;
use crate::storage::replica::ReplicaServer;
use crate::storage::replicated::{ReplicaTarget, ReplicatedVolume};
use crate::storage::Volume;
use crate::telemetry::error_chain;
use crate::transport::Transport;

pub struct Attachments {
    pub(super) control: Arc<Control>,
    pub(super) transport: Arc<Transport>,
    pub(super) server: Arc<ReplicaServer>,
    pub exports: Arc<Exports>,
    attached: Mutex<HashMap<VolumeId, (u64, Arc<ReplicatedVolume>)>>,
    /// Per volume: a resync running, and bytes copied not reported yet.
    resync: Mutex<HashMap<VolumeId, (bool, u64)>>,
    pub(super) running: super::snapshots::Running,
    pub(super) rebuilding: super::repair::Rebuilding,
}

impl Attachments {
    pub fn new(
        control: Arc<Control>,
        transport: Arc<Transport>,
        server: Arc<ReplicaServer>,
    ) -> Arc<Self> {
        Arc::new(Attachments {
            control,
            transport,
            server,
            exports: Arc::new(Exports::new()),
            attached: Mutex::new(HashMap::new()),
            resync: Mutex::new(HashMap::new()),
            running: Default::default(),
            rebuilding: Default::default(),
        })
    }

    fn resyncs(&self) -> std::sync::MutexGuard<'_, HashMap<VolumeId, (bool, u64)>> {
        self.resync.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resyncing(&self, id: &VolumeId) -> bool {
        self.resyncs().get(id).is_some_and(|r| r.0)
    }

    fn resyncing_set(&self, id: &VolumeId, on: bool) {
        self.resyncs().entry(id.clone()).or_default().0 = on;
    }

    fn copied_add(&self, id: &VolumeId, bytes: u64) {
        self.resyncs().entry(id.clone()).or_default().1 += bytes;
    }

    /// Bytes copied by finished resyncs, once no resync runs (for the in-sync event).
    fn copied_take_if_idle(&self, id: &VolumeId) -> u64 {
        let mut r = self.resyncs();
        match r.get_mut(id) {
            Some((false, n)) => std::mem::take(n),
            _ => 0,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<VolumeId, (u64, Arc<ReplicatedVolume>)>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upstairs of a volume attached here, if it is ready.
    pub fn get(&self, id: &VolumeId) -> Option<Arc<ReplicatedVolume>> {
        self.map().get(id).map(|(_, v)| v.clone())
    }

    /// Runs until the task is dropped: on every store change, and every second.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.control.store.watch();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !super::next_pass(&mut changes, &mut tick).await {
                return;
            }
            if let Err(e) = self.clone().reconcile().await {
                tracing::debug!(error = %e, "volume attachments incomplete");
            }
        }
    }

    async fn reconcile(self: Arc<Self>) -> Result<(), String> {
        let me = self.control.node;
        let err = |e: crate::cluster::store::StoreError| error_chain(&e);
        let all: BTreeMap<VolumeId, VolumeRecord> = self
            .control
            .store
            .list::<Volumes>()
            .map_err(err)?
            .into_iter()
            .map(|v| (v.value.id.clone(), v.value))
            .collect();
        let wanted: BTreeMap<VolumeId, VolumeRecord> = all
            .iter()
            .filter(|(_, v)| v.attached_to == Some(me))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let addrs: BTreeMap<NodeId, SocketAddr> = self
            .control
            .store
            .list::<Nodes>()
            .map_err(err)?
            .into_iter()
            .map(|n| (n.value.id, n.value.addr))
            .collect();
        // Drop what is no longer attached here (or attached under an older generation).
        let stale: Vec<VolumeId> = self
            .map()
            .iter()
            .filter(|(id, (g, _))| wanted.get(*id).map(|r| r.generation) != Some(*g))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.exports.remove(&id.0);
            let gone = self.map().remove(&id);
            tracing::info!(volume = %id, "volume detached from this node");
            if let Some((_, v)) = gone {
                // Flushed on the way out (refused if a newer writer took the volume over),
                // in the background: a replica that does not answer delays nothing else.
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = v.detach() {
                        tracing::debug!(volume = %id, error = %error_chain(&e), "no flush at detach");
                    }
                });
            }
        }
        for (id, rec) in &wanted {
            let targets: Vec<ReplicaTarget> = super::snapshots::targets(rec, &addrs);
            if let Some(v) = self.get(id) {
                if rec.size > v.size() {
                    // Grown: the client follows once every replica's region has.
                    let (v2, size) = (v.clone(), rec.size);
                    let _ = tokio::task::spawn_blocking(move || v2.grow(size)).await;
                }
                // The control plane may have replaced a lost replica.
                let have: Vec<NodeId> = v.health().iter().map(|h| h.node).collect();
                let want: Vec<NodeId> = rec.replicas.iter().map(|r| r.node).collect();
                if have != want {
                    let v2 = v.clone();
                    let t2 = targets.clone();
                    let _ = tokio::task::spawn_blocking(move || v2.set_targets(&t2)).await;
                }
                continue;
            }
            let (transport, rt, rec2, server) = (
                self.transport.clone(),
                tokio::runtime::Handle::current(),
                rec.clone(),
                self.server.clone(),
            );
            let parent = match self.parent_chain(rec, &all, &addrs, &rt) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(volume = %id, error = %e, "cannot attach clone");
                    continue;
                }
            };
            let made = tokio::task::spawn_blocking(move || {
                ReplicatedVolume::attach(
                    transport,
                    rt,
                    me,
                    &rec2.id.0,
                    rec2.size,
                    rec2.extent_size,
                    rec2.generation,
                    &targets,
                    Some(server),
                )
                .map(|v| v.with_parent(parent))
            })
            .await
            .map_err(|e| e.to_string())?;
            match made {
                Ok(v) => {
                    let v = Arc::new(v);
                    self.exports.remove(&id.0);
                    if let Err(e) = self.exports.add(id.0.clone(), v.clone() as Arc<dyn Volume>) {
                        tracing::warn!(volume = %id, error = %e, "cannot export volume");
                        continue;
                    }
                    self.map().insert(id.clone(), (rec.generation, v));
                    tracing::info!(volume = %id, generation = rec.generation, "volume attached and exported over NBD");
                }
                Err(e) => {
                    tracing::warn!(volume = %id, error = %error_chain(&e), "cannot attach volume")
                }
            }
        }
        self.run_snapshot_changes(&all, &addrs);
        self.run_rebuilds(&all, &addrs);
        // Resync returning replicas; record health changes in the cluster state.
        let live: Vec<(VolumeId, u64, Arc<ReplicatedVolume>)> = self
            .map()
            .iter()
            .map(|(id, (g, v))| (id.clone(), *g, v.clone()))
            .collect();
        for (id, generation, v) in live {
            // Resync in the background; its progress is reported on the next passes.
            if !self.resyncing(&id) && v.health().iter().any(|h| !h.live) {
                let (vv, me2, id2) = (v.clone(), self.clone(), id.clone());
                me2.resyncing_set(&id2, true);
                tokio::spawn(async move {
                    let copied = tokio::task::spawn_blocking(move || vv.resync())
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .unwrap_or(0);
                    me2.copied_add(&id2, copied);
                    me2.resyncing_set(&id2, false);
                });
            }
            let Some(rec) = wanted.get(&id) else { continue };
            let total = v.extent_count().max(1);
            for h in v.health() {
                let state = if h.live {
                    ReplicaState::InSync
                } else {
                    ReplicaState::Faulted
                };
                let progress = (!h.live && h.reason.contains("rebuilt"))
                    .then(|| (100 - (h.stale_extents as u64 * 100 / total)).min(99) as u8);
                let known = rec
                    .replicas
                    .iter()
                    .find(|r| r.node == h.node)
                    .map(|r| (r.state, r.progress));
                if known == Some((state, progress)) {
                    continue;
                }
                if state == ReplicaState::InSync && self.resyncing(&id) {
                    // Recorded once the resync has finished and its bytes are counted.
                    continue;
                }
                let detail = match state {
                    ReplicaState::InSync => {
                        let copied = self.copied_take_if_idle(&id);
                        if copied > 0 {
                            format!(
                                "resync copied {} MiB, only the extents it lacked",
                                copied >> 20
                            )
                        } else {
                            String::new()
                        }
                    }
                    ReplicaState::Faulted => h.reason.clone(),
                };
                if let Err(e) = self
                    .control
                    .set_replica_state(&id, h.node, generation, state, &detail, progress)
                    .await
                {
                    tracing::debug!(volume = %id, error = %error_chain(&e), "cannot record replica state");
                }
            }
        }
        Ok(())
    }
}
