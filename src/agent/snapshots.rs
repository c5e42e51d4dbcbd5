//! Snapshot changes this node carries out (see `control::snapshots`), and the read-only
//! parent chain of clones.
//!
//! A snapshot is taken through the volume's writer so that every replica takes it at the
//! same point of the write stream: the upstairs attached here, or, for a volume attached
//! nowhere, a short-lived upstairs of the volume's current generation (attach and detach
//! wait while a snapshot change is pending, so no other writer can appear meanwhile).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::attach::Attachments;
use crate::cluster::store::storage_tables::{ReplicaState, SnapshotState, VolumeRecord};
use crate::ids::{NodeId, VolumeId};
use crate::storage::replicated::{ReplicaTarget, ReplicatedVolume};
use crate::storage::Volume;
use crate::telemetry::error_chain;

/// Deepest chain of clones of clones followed.
const MAX_DEPTH: usize = 16;

/// Snapshot changes running on this node (volume, snapshot).
#[derive(Default)]
pub struct Running(Mutex<HashSet<(VolumeId, String)>>);

impl Running {
    fn start(&self, key: (VolumeId, String)) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(key)
    }

    fn end(&self, key: &(VolumeId, String)) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// The replicas of a volume that the cluster knows an address for.
pub fn targets(rec: &VolumeRecord, addrs: &BTreeMap<NodeId, SocketAddr>) -> Vec<ReplicaTarget> {
    rec.replicas
        .iter()
        .filter_map(|r| {
            addrs.get(&r.node).map(|a| ReplicaTarget {
                node: r.node,
                addr: *a,
                in_sync: r.state == ReplicaState::InSync,
            })
        })
        .collect()
}

impl Attachments {
    /// The read-only chain a clone reads its unwritten blocks from (blocking: transport
    /// calls are made on `rt`).
    pub fn parent_chain(
        &self,
        rec: &VolumeRecord,
        all: &BTreeMap<VolumeId, VolumeRecord>,
        addrs: &BTreeMap<NodeId, SocketAddr>,
        rt: &tokio::runtime::Handle,
    ) -> Result<Option<Arc<dyn Volume>>, String> {
        let mut chain = Vec::new();
        let mut at = rec.parent.clone();
        while let Some(p) = at {
            if chain.len() >= MAX_DEPTH {
                return Err(format!(
                    "volume {} has clones nested deeper than {MAX_DEPTH}",
                    rec.name
                ));
            }
            let base = all
                .get(&p.volume)
                .ok_or_else(|| format!("the parent volume {} of {} is gone", p.volume, rec.name))?;
            let snap = base
                .snapshots
                .iter()
                .find(|s| s.id == p.snapshot)
                .ok_or_else(|| {
                    format!("the parent snapshot {} of {} is gone", p.snapshot, rec.name)
                })?;
            chain.push((base.clone(), snap.id.clone(), snap.size));
            at = base.parent.clone();
        }
        // Built from the bottom up: each reader's parent is the next one down.
        let mut below: Option<Arc<dyn Volume>> = None;
        for (base, snap, size) in chain.into_iter().rev() {
            let reader = ReplicatedVolume::snapshot_reader(
                self.transport.clone(),
                rt.clone(),
                self.control.node,
                &base.id.0,
                &snap,
                size,
                base.extent_size,
                &targets(&base, addrs),
                Some(self.server.clone()),
            )
            .with_parent(below.take());
            below = Some(Arc::new(reader));
        }
        Ok(below)
    }

    /// Starts the pending snapshot changes assigned to this node.
    pub(super) fn run_snapshot_changes(
        self: &Arc<Self>,
        all: &BTreeMap<VolumeId, VolumeRecord>,
        addrs: &BTreeMap<NodeId, SocketAddr>,
    ) {
        let me = self.control.node;
        for rec in all.values() {
            for snap in &rec.snapshots {
                let pending = matches!(
                    snap.state,
                    SnapshotState::Creating | SnapshotState::Deleting
                );
                if !pending || snap.by != me {
                    continue;
                }
                let key = (rec.id.clone(), snap.id.clone());
                // The writer here must be ready; one attached elsewhere does it there.
                let upstairs = match rec.attached_to {
                    Some(n) if n == me => match self.get(&rec.id) {
                        Some(v) => Some(v),
                        None => continue,
                    },
                    Some(_) => continue,
                    None => None,
                };
                if !self.running.start(key.clone()) {
                    continue;
                }
                let (me2, rec2, snap2, targets) =
                    (self.clone(), rec.clone(), snap.clone(), targets(rec, addrs));
                let rt = tokio::runtime::Handle::current();
                tokio::spawn(async move {
                    let server = me2.server.clone();
                    let transport = me2.transport.clone();
                    let rec3 = rec2.clone();
                    let outcome = tokio::task::spawn_blocking(move || {
                        let (v, transient) = match upstairs {
                            Some(v) => (v, false),
                            None => (
                                Arc::new(
                                    ReplicatedVolume::attach(
                                        transport,
                                        rt,
                                        me,
                                        &rec3.id.0,
                                        rec3.size,
                                        rec3.extent_size,
                                        rec3.generation,
                                        &targets,
                                        Some(server),
                                    )
                                    .map_err(|e| error_chain(&e))?,
                                ),
                                true,
                            ),
                        };
                        let r = if snap2.state == SnapshotState::Creating {
                            v.snapshot(&snap2.id)
                        } else {
                            v.drop_snapshot(&snap2.id)
                        };
                        let missed: Vec<(NodeId, String)> = if transient {
                            v.health()
                                .into_iter()
                                .filter(|h| !h.live)
                                .map(|h| (h.node, h.reason))
                                .collect()
                        } else {
                            Vec::new()
                        };
                        r.map(|_| missed).map_err(|e| error_chain(&e))
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("snapshot task failed: {e}")));
                    let result = match outcome {
                        Ok(missed) => {
                            // A replica that missed the change catches up when resynced.
                            for (node, why) in missed {
                                let detail = format!("it missed a snapshot change: {why}");
                                let _ = me2
                                    .control
                                    .set_replica_state(
                                        &rec2.id,
                                        node,
                                        rec2.generation,
                                        ReplicaState::Faulted,
                                        &detail,
                                        None,
                                    )
                                    .await;
                            }
                            Ok(())
                        }
                        Err(e) => Err(e),
                    };
                    if let Err(e) = &result {
                        tracing::warn!(volume = %rec2.id, snapshot = %key.1, error = %e, "snapshot change failed");
                    }
                    if let Err(e) = me2
                        .control
                        .snapshot_done(&rec2.id, &key.1, me, result)
                        .await
                    {
                        tracing::warn!(volume = %rec2.id, error = %error_chain(&e), "cannot record snapshot change");
                    }
                    me2.running.end(&key);
                });
            }
        }
    }
}
