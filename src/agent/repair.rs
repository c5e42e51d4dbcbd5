//! Rebuilding replicas of volumes attached nowhere. An attached volume's writer resyncs
//! its own replicas; a volume with no writer has a faulted replica (one the control plane
//! placed on a new node after its old node was lost, or one that missed writes before the
//! volume was detached) rebuilt by the node of its first live, in-sync replica. That node
//! runs a short-lived replica client of the volume's current generation, which copies
//! every layer of every extent to the faulted replicas and reports progress like a writer.
//! A writer attaching meanwhile bumps the generation: the rebuild is fenced and stops, and
//! the new writer carries on (it sees the replica still faulted).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::attach::Attachments;
use super::snapshots::targets;
use crate::cluster::membership::Liveness;
use crate::cluster::store::storage_tables::{ReplicaState, SnapshotState, VolumeRecord};
use crate::ids::{NodeId, VolumeId};
use crate::storage::replicated::ReplicatedVolume;
use crate::telemetry::error_chain;

/// Volumes being rebuilt by this node.
#[derive(Default)]
pub struct Rebuilding(Mutex<HashSet<VolumeId>>);

impl Rebuilding {
    fn start(&self, id: &VolumeId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone())
    }

    fn end(&self, id: &VolumeId) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

impl Attachments {
    /// Starts rebuilds of unattached volumes this node is responsible for.
    pub(super) fn run_rebuilds(
        self: &Arc<Self>,
        all: &BTreeMap<VolumeId, VolumeRecord>,
        addrs: &BTreeMap<NodeId, SocketAddr>,
    ) {
        let me = self.control.node;
        let view = self.control.membership.view();
        let alive =
            |n: &NodeId| *n == me || view.get(n).is_some_and(|p| p.liveness == Liveness::Alive);
        for rec in all.values() {
            if rec.attached_to.is_some()
                || !rec
                    .replicas
                    .iter()
                    .any(|r| r.state == ReplicaState::Faulted && alive(&r.node))
                || rec
                    .snapshots
                    .iter()
                    .any(|s| matches!(s.state, SnapshotState::Creating | SnapshotState::Deleting))
            {
                continue;
            }
            let leader = rec
                .replicas
                .iter()
                .find(|r| r.state == ReplicaState::InSync && alive(&r.node))
                .map(|r| r.node);
            if leader != Some(me) || !self.rebuilding.start(&rec.id) {
                continue;
            }
            let (me2, rec2, targets) = (self.clone(), rec.clone(), targets(rec, addrs));
            let rt = tokio::runtime::Handle::current();
            tokio::spawn(async move {
                if let Err(e) = me2.rebuild(rec2.clone(), targets, rt).await {
                    tracing::info!(volume = %rec2.id, error = %e, "rebuild of an unattached volume stopped");
                }
                me2.rebuilding.end(&rec2.id);
            });
        }
    }

    async fn rebuild(
        self: &Arc<Self>,
        rec: VolumeRecord,
        targets: Vec<crate::storage::replicated::ReplicaTarget>,
        rt: tokio::runtime::Handle,
    ) -> Result<(), String> {
        let me = self.control.node;
        let (transport, server, rec2) = (self.transport.clone(), self.server.clone(), rec.clone());
        let v = tokio::task::spawn_blocking(move || {
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
        .map_err(|e| e.to_string())?
        .map_err(|e| error_chain(&e))?;
        let v = Arc::new(v);
        tracing::info!(volume = %rec.id, "rebuilding the faulted replicas of a volume attached nowhere");
        let v2 = v.clone();
        let mut copy = tokio::task::spawn_blocking(move || v2.resync());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let result = loop {
            tokio::select! {
                r = &mut copy => break r.map_err(|e| e.to_string())?,
                _ = tick.tick() => self.report_rebuild(&rec, &v, None).await,
            }
        };
        match result {
            Ok(copied) => {
                self.report_rebuild(&rec, &v, Some(copied)).await;
                Ok(())
            }
            Err(e) => Err(error_chain(&e)),
        }
    }

    /// Records each replica's state and rebuild progress (only changes are written).
    async fn report_rebuild(&self, rec: &VolumeRecord, v: &ReplicatedVolume, copied: Option<u64>) {
        let total = v.extent_count().max(1);
        let Ok(Some(cur)) = self
            .control
            .store
            .get::<crate::cluster::store::storage_tables::Volumes>(&rec.id.0)
        else {
            return;
        };
        for h in v.health() {
            let (state, progress) = if h.live {
                (ReplicaState::InSync, None)
            } else {
                (
                    ReplicaState::Faulted,
                    Some((100 - (h.stale_extents as u64 * 100 / total)).min(99) as u8),
                )
            };
            let known = cur
                .value
                .replicas
                .iter()
                .find(|r| r.node == h.node)
                .map(|r| (r.state, r.progress));
            // Only faulted replicas are this rebuild's business: one in sync that does not
            // answer missed nothing (there is no writer).
            if known == Some((state, progress))
                || known.is_none_or(|(s, _)| s == ReplicaState::InSync)
            {
                continue;
            }
            let detail = match (state, copied) {
                (ReplicaState::InSync, Some(n)) => {
                    format!("rebuilt while attached nowhere, {} MiB copied", n >> 20)
                }
                (ReplicaState::InSync, None) => String::new(),
                (ReplicaState::Faulted, _) => h.reason.clone(),
            };
            if let Err(e) = self
                .control
                .set_replica_state(&rec.id, h.node, rec.generation, state, &detail, progress)
                .await
            {
                tracing::debug!(volume = %rec.id, error = %error_chain(&e), "cannot record replica state");
            }
        }
    }
}
