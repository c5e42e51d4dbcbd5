//! Per-node volume reconciler: makes this node's regions match the volumes placed here
//! (creating missing ones, deleting those of deleted volumes, after a linearizable read),
//! and reports the data disk's free space and the regions it holds, which `control`'s
//! replica placement reads.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::store::storage_tables::{NodeStorageReport, Volumes};
use crate::control::{now_secs, Control};
use crate::ids::VolumeId;
use crate::storage::replica::ReplicaServer;
use crate::storage::Volume;
use crate::telemetry::error_chain;

pub struct VolumeAgent {
    control: Arc<Control>,
    server: Arc<ReplicaServer>,
    root: PathBuf,
}

/// A report is sent when something changed, or at least this often.
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// Free-space changes smaller than this do not trigger a report on their own.
const REPORT_DELTA: u64 = 64 << 20;

impl VolumeAgent {
    pub fn new(control: Arc<Control>, server: Arc<ReplicaServer>, root: PathBuf) -> Arc<Self> {
        Arc::new(VolumeAgent {
            control,
            server,
            root,
        })
    }

    /// Runs until the task is dropped: on every store change, and every 2 s.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.control.store.watch();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut synced = false;
        let mut last: Option<(NodeStorageReport, Instant)> = None;
        loop {
            if !super::next_pass(&mut changes, &mut tick).await {
                return;
            }
            if !synced {
                synced = self.control.store.linearizable().await.is_ok();
            }
            let me = self.clone();
            let report = tokio::task::spawn_blocking(move || me.reconcile(synced)).await;
            let Ok(report) = report else { continue };
            let due = match &last {
                None => true,
                Some((prev, at)) => {
                    prev.regions != report.regions
                        || prev.free_bytes.abs_diff(report.free_bytes) >= REPORT_DELTA
                        || prev.allocated_bytes.abs_diff(report.allocated_bytes) >= REPORT_DELTA
                        || at.elapsed() >= REPORT_EVERY
                }
            };
            if due {
                match self.control.report_node_storage(report.clone()).await {
                    Ok(()) => last = Some((report, Instant::now())),
                    Err(e) => {
                        tracing::debug!(error = %error_chain(&e), "cannot report node storage")
                    }
                }
            }
        }
    }

    /// Creates and deletes regions (blocking), and measures what the report says.
    fn reconcile(&self, synced: bool) -> NodeStorageReport {
        let me = self.control.node;
        let wanted: Vec<_> = match self.control.store.list::<Volumes>() {
            Ok(v) => v
                .into_iter()
                .map(|v| v.value)
                .filter(|v| v.replicas.iter().any(|r| r.node == me))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "cannot read volumes");
                Vec::new()
            }
        };
        let ids: BTreeSet<String> = wanted.iter().map(|v| v.id.0.clone()).collect();
        for v in &wanted {
            if let Err(e) = self.server.create_region(&v.id.0, v.size, v.extent_size) {
                tracing::warn!(volume = %v.id, error = %error_chain(&e), "cannot create region");
            }
        }
        if synced {
            for id in self.server.volumes() {
                if !ids.contains(&id) {
                    match self.server.delete_region(&id) {
                        Ok(()) => {
                            tracing::info!(volume = %id, "deleted the region of a deleted volume")
                        }
                        Err(e) => {
                            tracing::warn!(volume = %id, error = %error_chain(&e), "cannot delete region")
                        }
                    }
                }
            }
        }
        let regions = self.server.volumes();
        let allocated = regions
            .iter()
            .filter_map(|id| self.server.region(id).ok().flatten())
            .filter_map(|r| r.allocated())
            .sum();
        let (free_bytes, total_bytes) = match rustix::fs::statvfs(&self.root) {
            Ok(s) => (s.f_bavail * s.f_frsize, s.f_blocks * s.f_frsize),
            Err(_) => (0, 0),
        };
        NodeStorageReport {
            node: me,
            free_bytes,
            total_bytes,
            allocated_bytes: allocated,
            regions: regions.into_iter().map(VolumeId).collect(),
            updated_at: now_secs(),
        }
    }
}
