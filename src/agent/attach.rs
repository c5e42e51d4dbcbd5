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
    control: Arc<Control>,
    transport: Arc<Transport>,
    server: Arc<ReplicaServer>,
    pub exports: Arc<Exports>,
    attached: Mutex<HashMap<VolumeId, (u64, Arc<ReplicatedVolume>)>>,
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
        })
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
            tokio::select! {
                _ = tick.tick() => {}
                r = changes.recv() => {
                    if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                }
            }
            if let Err(e) = self.clone().reconcile().await {
                tracing::debug!(error = %e, "volume attachments incomplete");
            }
        }
    }

    async fn reconcile(self: Arc<Self>) -> Result<(), String> {
        let me = self.control.node;
        let err = |e: crate::cluster::store::StoreError| error_chain(&e);
        let wanted: BTreeMap<VolumeId, VolumeRecord> = self
            .control
            .store
            .list::<Volumes>()
            .map_err(err)?
            .into_iter()
            .map(|v| v.value)
            .filter(|v| v.attached_to == Some(me))
            .map(|v| (v.id.clone(), v))
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
            self.map().remove(&id);
            tracing::info!(volume = %id, "volume detached from this node");
        }
        for (id, rec) in &wanted {
            if self.map().contains_key(id) {
                continue;
            }
            let targets: Vec<ReplicaTarget> = rec
                .replicas
                .iter()
                .filter_map(|r| {
                    addrs.get(&r.node).map(|a| ReplicaTarget {
                        node: r.node,
                        addr: *a,
                        in_sync: r.state == ReplicaState::InSync,
                    })
                })
                .collect();
            let (transport, rt, rec2, server) = (
                self.transport.clone(),
                tokio::runtime::Handle::current(),
                rec.clone(),
                self.server.clone(),
            );
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
        // Resync returning replicas; record health changes in the cluster state.
        let live: Vec<(VolumeId, u64, Arc<ReplicatedVolume>)> = self
            .map()
            .iter()
            .map(|(id, (g, v))| (id.clone(), *g, v.clone()))
            .collect();
        for (id, generation, v) in live {
            let vv = v.clone();
            let copied = tokio::task::spawn_blocking(move || vv.resync())
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or(0);
            let Some(rec) = wanted.get(&id) else { continue };
            for h in v.health() {
                let state = if h.live {
                    ReplicaState::InSync
                } else {
                    ReplicaState::Faulted
                };
                let known = rec
                    .replicas
                    .iter()
                    .find(|r| r.node == h.node)
                    .map(|r| r.state);
                if known != Some(state) {
                    let detail = match state {
                        ReplicaState::InSync if copied > 0 => format!(
                            "resync copied {} MiB, only the extents written while it was away",
                            copied >> 20
                        ),
                        ReplicaState::InSync => String::new(),
                        ReplicaState::Faulted => h.reason.clone(),
                    };
                    if let Err(e) = self
                        .control
                        .set_replica_state(&id, h.node, generation, state, &detail)
                        .await
                    {
                        tracing::debug!(volume = %id, error = %error_chain(&e), "cannot record replica state");
                    }
                }
            }
        }
        Ok(())
    }
}
