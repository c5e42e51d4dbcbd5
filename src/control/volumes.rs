//! Volumes: validation, placement of replicas on distinct nodes with room for them, and
//! the volume views the CLI and APIs show.
//!
//! Capacity is thin: a region uses disk space only where it was written, but placement
//! reserves a volume's full size on each of its nodes (free bytes minus the unwritten part
//! of the volumes already there), so a node is never promised more than its disk holds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::caller::Caller;
use super::{now_secs, Control, ControlError};
use crate::cluster::membership::Liveness;
use crate::cluster::store::compute_tables::PlacementEpochs;
use crate::cluster::store::storage_tables::{
    NodeStorage, NodeStorageReport, ParentRef, ReplicaRecord, ReplicaState, SnapshotState,
    VolumeRecord, Volumes,
};
use crate::cluster::store::tables::Nodes;
use crate::cluster::store::{StoreError, TxnBuilder, Versioned};
use crate::ids::{NodeId, VolumeId};
use crate::storage::extent::DEFAULT_EXTENT_SIZE;
use crate::storage::SECTOR;

/// Replicas per volume unless asked otherwise.
pub const DEFAULT_REPLICATION: u32 = 3;
pub const MAX_REPLICATION: u32 = 5;
/// Largest volume (64 TiB).
pub const MAX_VOLUME_BYTES: u64 = 64 << 40;
/// How long an attach waits for live replica nodes to create a new volume's regions.
const REGIONS_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateVolume {
    pub name: String,
    pub size_bytes: u64,
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Make a copy-on-write clone of this snapshot (its id, or `VOLUME@SNAPSHOT`); a size
    /// of 0 then means the snapshot's size.
    #[serde(default)]
    pub source_snapshot: Option<String>,
    /// The owning project (OpenStack API callers).
    #[serde(default)]
    pub project: Option<String>,
    /// Set for the volume holding an image's data.
    #[serde(default)]
    pub image: Option<String>,
    /// A bootable volume: the image it was made from.
    #[serde(default)]
    pub source_image: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaView {
    pub node: NodeId,
    pub hostname: String,
    pub state: ReplicaState,
    pub progress: Option<u8>,
    /// Whether the node reports holding the region.
    pub present: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VolumeView {
    #[serde(flatten)]
    pub record: VolumeRecord,
    /// `available` when every replica is in sync and present, `creating` while a node has
    /// not reported its region yet, `degraded` when a replica is faulted.
    pub status: String,
    /// "2 of 3 replicas in sync".
    pub redundancy: String,
    pub replica_nodes: Vec<ReplicaView>,
}

struct NodeRoom {
    id: NodeId,
    hostname: String,
    alive: bool,
    available: u64,
}

impl Control {
    /// Creates a volume for the caller's project (an administrator may name another, the
    /// node-local administrator none). A source image or snapshot must be one the
    /// caller sees; a source image gives the snapshot its data is cloned from.
    pub async fn create_volume(
        &self,
        caller: &Caller,
        mut req: CreateVolume,
    ) -> Result<VolumeView, ControlError> {
        caller.need_writer()?;
        req.project = caller.owner_for(req.project.as_deref())?;
        let name = req.name.trim();
        let invalid = |m: String| Err(ControlError::Invalid(m));
        // Names of the admin CLI's volumes are unique handles; projects' volumes (Cinder)
        // may share names or have none, as in OpenStack.
        let admin = req.project.is_none();
        if (admin && name.is_empty())
            || name.len() > if admin { 64 } else { 255 }
            || name.chars().any(|c| c.is_control())
        {
            return invalid(format!(
                "volume name {name:?} must be 1-64 printable characters (0-255 for a project's)"
            ));
        }
        if admin
            && self
                .store
                .list::<Volumes>()?
                .iter()
                .any(|v| v.value.name == name && v.value.project.is_none())
        {
            return invalid(format!("a volume named {name:?} exists already"));
        }
        let parent = match (req.source_image.as_deref(), req.source_snapshot.as_deref()) {
            (Some(image), snap) => {
                let f = self.image_file(caller, image)?;
                if snap.is_some_and(|s| s != f.snapshot) {
                    return invalid(format!(
                        "snapshot {} is not the data of image {image}",
                        snap.unwrap_or_default()
                    ));
                }
                Some(self.find_snapshot(&Caller::system(), &f.snapshot)?)
            }
            (None, Some(r)) => Some(self.find_snapshot(caller, r)?),
            (None, None) => None,
        };
        let size = match &parent {
            Some((_, snap)) if req.size_bytes == 0 => snap.size,
            _ => req.size_bytes,
        };
        if let Some((vol, snap)) = &parent {
            if snap.state != SnapshotState::Available {
                return invalid(format!(
                    "snapshot {} of volume {} is {:?}, not available",
                    snap.name, vol.name, snap.state
                ));
            }
            if size < snap.size {
                return invalid(format!(
                    "a clone of snapshot {} must be at least its size, {} bytes (asked {size})",
                    snap.name, snap.size
                ));
            }
        }
        if size == 0 || !size.is_multiple_of(SECTOR) || size > MAX_VOLUME_BYTES {
            return invalid(format!(
                "size {size} bytes must be a positive multiple of {SECTOR} bytes, at most {} TiB",
                MAX_VOLUME_BYTES >> 40
            ));
        }
        let want = req.replicas.unwrap_or(DEFAULT_REPLICATION);
        if want == 0 || want > MAX_REPLICATION {
            return invalid(format!(
                "{want} replicas requested; 1 to {MAX_REPLICATION} are supported"
            ));
        }
        let id = VolumeId::random();
        for _attempt in 0..8 {
            let epoch = self.store.get::<PlacementEpochs>("volumes")?;
            let (rev, n) = epoch.map(|e| (e.revision, e.value)).unwrap_or((0, 0));
            // Boot disks of servers count against the instance, not the volume quotas.
            if req.image.is_none() && !name.starts_with("boot-") {
                self.check_quota(
                    req.project.as_deref(),
                    &[("volumes", 1), ("gigabytes", size.div_ceil(1 << 30) as i64)],
                )?;
            }
            let (nodes, placement) = self.place_replicas(name, size, want)?;
            let record = VolumeRecord {
                id: id.clone(),
                name: name.to_string(),
                size,
                extent_size: DEFAULT_EXTENT_SIZE,
                replication: want,
                replicas: nodes
                    .iter()
                    .map(|n| ReplicaRecord {
                        node: *n,
                        state: ReplicaState::InSync,
                        progress: None,
                    })
                    .collect(),
                generation: 1,
                attached_to: None,
                placement,
                created_at: now_secs(),
                used_by: None,
                project: req.project.clone(),
                image: req.image.clone(),
                source_image: req.source_image.clone(),
                description: req.description.clone(),
                metadata: req.metadata.clone(),
                user: req.user.clone(),
                snapshots: Vec::new(),
                parent: parent.as_ref().map(|(v, s)| ParentRef {
                    volume: v.id.clone(),
                    snapshot: s.id.clone(),
                }),
            };
            let txn = TxnBuilder::new()
                .require_revision::<PlacementEpochs>("volumes", rev)
                .put::<PlacementEpochs>("volumes", &(n + 1))
                .require_revision::<Volumes>(id.to_string(), 0)
                .put::<Volumes>(id.to_string(), &record);
            let msg = format!(
                "volume {name} ({id}, {} bytes) created with {} replica(s){}",
                size,
                nodes.len(),
                parent
                    .as_ref()
                    .map(|(v, s)| format!(", a clone of snapshot {} of volume {}", s.name, v.name))
                    .unwrap_or_default()
            );
            match self
                .store
                .commit(self.with_event(txn, "volume.created", msg.clone()))
                .await
            {
                Ok(_) => return Ok(volume_view(record, &self.volume_context()?)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControlError::NotReady(
            "placement kept conflicting with concurrent creates; try again".into(),
        ))
    }

    /// Distinct live nodes with room for `size`, most room first.
    fn place_replicas(
        &self,
        name: &str,
        size: u64,
        want: u32,
    ) -> Result<(Vec<NodeId>, String), ControlError> {
        let rooms = self.node_rooms()?;
        let mut fit: Vec<&NodeRoom> = rooms
            .iter()
            .filter(|r| r.alive && r.available >= size)
            .collect();
        fit.sort_by(|a, b| b.available.cmp(&a.available).then(a.id.cmp(&b.id)));
        if fit.is_empty() {
            let best = rooms
                .iter()
                .filter(|r| r.alive)
                .max_by_key(|r| r.available)
                .map(|r| {
                    format!(
                        "; the most room is {} on node {} ({})",
                        gib(r.available),
                        r.id,
                        r.hostname
                    )
                })
                .unwrap_or_else(|| "; no live node has reported its storage yet".into());
            return Err(ControlError::Invalid(format!(
                "cannot place volume {name:?} of {}: no live node has that much free space{best}",
                gib(size)
            )));
        }
        let chosen: Vec<&NodeRoom> = fit.into_iter().take(want as usize).collect();
        let mut why = chosen
            .iter()
            .map(|r| format!("node {} ({}): {} free", r.id, r.hostname, gib(r.available)))
            .collect::<Vec<_>>()
            .join("; ");
        if (chosen.len() as u32) < want {
            why = format!(
                "replication lowered from {want} to {}: only {} live node(s) can hold it; {why}",
                chosen.len(),
                chosen.len()
            );
        }
        Ok((chosen.iter().map(|r| r.id).collect(), why))
    }

    fn node_rooms(&self) -> Result<Vec<NodeRoom>, ControlError> {
        let gossip = self.membership.view();
        let reports: BTreeMap<NodeId, NodeStorageReport> = self
            .store
            .list::<NodeStorage>()?
            .into_iter()
            .map(|r| (r.value.node, r.value))
            .collect();
        let mut promised: BTreeMap<NodeId, u64> = BTreeMap::new();
        for v in self.store.list::<Volumes>()? {
            for r in &v.value.replicas {
                *promised.entry(r.node).or_default() += v.value.size;
            }
        }
        let mut out = Vec::new();
        for n in self.store.list::<Nodes>()? {
            let n = n.value;
            let alive = n.id == self.node
                || gossip
                    .get(&n.id)
                    .is_some_and(|p| p.liveness == Liveness::Alive);
            let available = reports
                .get(&n.id)
                .map(|r| {
                    // Unwritten parts of the volumes already placed here stay reserved.
                    let reserved = promised
                        .get(&n.id)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(r.allocated_bytes);
                    r.free_bytes.saturating_sub(reserved)
                })
                .unwrap_or(0);
            out.push(NodeRoom {
                id: n.id,
                hostname: n.hostname,
                alive: alive && reports.contains_key(&n.id),
                available,
            });
        }
        Ok(out)
    }

    pub fn find_volume(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<Versioned<VolumeRecord>, ControlError> {
        self.find_scoped::<Volumes>(caller, "volume", id_or_name, |v| &v.name)
    }

    pub fn volume(&self, caller: &Caller, id_or_name: &str) -> Result<VolumeView, ControlError> {
        let rec = self.find_volume(caller, id_or_name)?.value;
        let ctx = self.volume_context()?;
        Ok(volume_view(rec, &ctx))
    }

    pub fn volumes(&self) -> Result<Vec<VolumeView>, ControlError> {
        let ctx = self.volume_context()?;
        let mut out: Vec<VolumeView> = self
            .store
            .list::<Volumes>()?
            .into_iter()
            .map(|v| volume_view(v.value, &ctx))
            .collect();
        out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok(out)
    }

    fn volume_context(&self) -> Result<VolumeContext, ControlError> {
        Ok(VolumeContext {
            hostnames: self
                .store
                .list::<Nodes>()?
                .into_iter()
                .map(|n| (n.value.id, n.value.hostname))
                .collect(),
            reports: self
                .store
                .list::<NodeStorage>()?
                .into_iter()
                .map(|r| (r.value.node, r.value))
                .collect(),
        })
    }

    /// Deletes a volume; each replica node then removes its region and frees the space.
    pub async fn delete_volume(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<VolumeRecord, ControlError> {
        caller.need_writer()?;
        let cur = self.find_volume(caller, id_or_name)?;
        let rec = cur.value;
        if let Some(vm) = &rec.used_by {
            return Err(ControlError::Invalid(format!(
                "volume {} is the disk of VM {vm}; delete the VM first",
                rec.name
            )));
        }
        if !rec.snapshots.is_empty() {
            return Err(ControlError::Invalid(format!(
                "volume {} has {} snapshot(s) ({}); delete them first",
                rec.name,
                rec.snapshots.len(),
                rec.snapshots
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(n) = rec.attached_to {
            return Err(ControlError::Invalid(format!(
                "volume {} is attached on node {n}; detach it first",
                rec.name
            )));
        }
        let txn = TxnBuilder::new()
            .require_revision::<Volumes>(rec.id.to_string(), cur.revision)
            .delete::<Volumes>(rec.id.to_string());
        self.store
            .commit(self.with_event(
                txn,
                "volume.deleted",
                format!("volume {} ({}) deleted", rec.name, rec.id),
            ))
            .await?;
        Ok(rec)
    }

    /// Read-modify-write of a volume's record under a revision check, retried when a
    /// concurrent change wins. `edit` changes the record and says what to log.
    pub(super) async fn update_volume(
        &self,
        id_or_name: &str,
        mut edit: impl FnMut(&mut VolumeRecord) -> Result<Edit, ControlError>,
    ) -> Result<VolumeRecord, ControlError> {
        loop {
            let cur = self.find_volume(&Caller::system(), id_or_name)?;
            let mut rec = cur.value.clone();
            let what = edit(&mut rec)?;
            let txn = TxnBuilder::new()
                .require_revision::<Volumes>(rec.id.to_string(), cur.revision)
                .put::<Volumes>(rec.id.to_string(), &rec);
            let txn = match what {
                Edit::Unchanged => return Ok(rec),
                Edit::Quiet => txn,
                Edit::Event(kind, msg) => self.with_event(txn, kind, msg),
            };
            match self.store.commit(txn).await {
                Ok(_) => return Ok(rec),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Makes `node` the volume's writer: bumps the generation (so every replica refuses the
    /// previous writer from now on) and records the attachment. Returns the new record.
    pub async fn attach_volume(
        &self,
        id_or_name: &str,
        node: NodeId,
    ) -> Result<VolumeRecord, ControlError> {
        self.wait_for_regions(id_or_name).await?;
        self.update_volume(id_or_name, |rec| {
            if rec.attached_to == Some(node) {
                return Ok(Edit::Unchanged);
            }
            super::snapshots::refuse_while_pending(rec, "attached")?;
            let from = rec
                .attached_to
                .map(|n| format!(" (taken over from node {n})"))
                .unwrap_or_default();
            rec.generation += 1;
            rec.attached_to = Some(node);
            Ok(Edit::Event(
                "volume.attached",
                format!(
                    "volume {} attached on node {node}, generation {}{from}",
                    rec.name, rec.generation
                ),
            ))
        })
        .await
    }

    /// Waits, at most [`REGIONS_WAIT`], until every live node placed to hold a replica of
    /// the volume reports its region. A writer attached before would find a region missing,
    /// mark that replica faulted and copy all of it again; a node that is down is not
    /// waited for (its replica is rebuilt when it returns or is replaced).
    async fn wait_for_regions(&self, id_or_name: &str) -> Result<(), ControlError> {
        let deadline = tokio::time::Instant::now() + REGIONS_WAIT;
        let mut changes = self.store.watch();
        loop {
            let v = self.volume(&crate::control::caller::Caller::system(), id_or_name)?;
            let missing: Vec<NodeId> = v
                .replica_nodes
                .iter()
                .filter(|r| !r.present && self.membership.is_alive(r.node))
                .map(|r| r.node)
                .collect();
            if missing.is_empty() || v.record.attached_to.is_some() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(volume = %v.record.id, nodes = ?missing, "attaching before every replica node reported the volume's region");
                return Ok(());
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), changes.recv()).await;
        }
    }

    /// Grows a volume (never shrinks it), if every replica node has room for the growth.
    pub async fn grow_volume(
        &self,
        id_or_name: &str,
        size: u64,
    ) -> Result<VolumeRecord, ControlError> {
        let rooms = self.node_rooms()?;
        self.update_volume(id_or_name, |rec| {
            if size < rec.size {
                return Err(ControlError::Invalid(format!(
                    "volume {} is {} bytes; it can grow but not shrink (asked {size})",
                    rec.name, rec.size
                )));
            }
            if size == rec.size {
                return Ok(Edit::Unchanged);
            }
            if !size.is_multiple_of(SECTOR) || size > MAX_VOLUME_BYTES {
                return Err(ControlError::Invalid(format!(
                    "size {size} bytes must be a multiple of {SECTOR} bytes, at most {} TiB",
                    MAX_VOLUME_BYTES >> 40
                )));
            }
            let grow = size - rec.size;
            for r in &rec.replicas {
                let room = rooms.iter().find(|x| x.id == r.node).map(|x| x.available);
                if let Some(a) = room.filter(|a| *a < grow) {
                    return Err(ControlError::Invalid(format!(
                        "cannot grow volume {} by {}: node {} has {} free",
                        rec.name,
                        gib(grow),
                        r.node,
                        gib(a)
                    )));
                }
            }
            let old = rec.size;
            rec.size = size;
            Ok(Edit::Event(
                "volume.grown",
                format!("volume {} grown from {old} to {size} bytes", rec.name),
            ))
        })
        .await
    }

    /// Ends the attachment (if `node` still holds it).
    pub async fn detach_volume(
        &self,
        id_or_name: &str,
        node: Option<NodeId>,
    ) -> Result<VolumeRecord, ControlError> {
        self.update_volume(id_or_name, |rec| {
            if rec.attached_to.is_none() || (node.is_some() && rec.attached_to != node) {
                return Ok(Edit::Unchanged);
            }
            super::snapshots::refuse_while_pending(rec, "detached")?;
            if let Some(vm) = &rec.used_by {
                return Err(ControlError::Invalid(format!(
                    "volume {} is the disk of VM {vm}; it stays attached where the VM runs",
                    rec.name
                )));
            }
            rec.attached_to = None;
            Ok(Edit::Event(
                "volume.detached",
                format!("volume {} detached", rec.name),
            ))
        })
        .await
    }

    /// Records a replica's state as seen by the volume's writer of `generation` (a stale
    /// writer's report is ignored); a progress change alone is recorded without an event.
    pub async fn set_replica_state(
        &self,
        volume: &VolumeId,
        node: NodeId,
        generation: u64,
        state: ReplicaState,
        detail: &str,
        progress: Option<u8>,
    ) -> Result<(), ControlError> {
        let r = self
            .update_volume(&volume.0, |rec| {
                if rec.generation != generation {
                    return Ok(Edit::Unchanged);
                }
                let name = rec.name.clone();
                let Some(r) = rec.replicas.iter_mut().find(|r| r.node == node) else {
                    return Ok(Edit::Unchanged);
                };
                if r.state == state && r.progress == progress {
                    return Ok(Edit::Unchanged);
                }
                let state_changed = r.state != state;
                r.state = state;
                r.progress = progress;
                if !state_changed {
                    return Ok(Edit::Quiet);
                }
                Ok(Edit::Event(
                    "volume.replica",
                    format!(
                        "volume {name}: replica on node {node} is {}{}",
                        match state {
                            ReplicaState::InSync => "in sync again",
                            ReplicaState::Faulted => "faulted (it missed writes)",
                        },
                        if detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {detail}")
                        }
                    ),
                ))
            })
            .await;
        match r {
            Ok(_) | Err(ControlError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Replaces replicas whose node has been down longer than the grace, or was removed
    /// from the cluster, with a new one on
    /// a live node with room (it starts faulted: the volume's writer copies it in full),
    /// most exposed volumes (fewest replicas in sync) first. `down` remembers since when
    /// this leader has seen each node down.
    pub async fn rereplicate(
        &self,
        down: &mut BTreeMap<NodeId, std::time::Instant>,
    ) -> Result<(), ControlError> {
        let view = self.membership.view();
        let now = std::time::Instant::now();
        let alive = |n: &NodeId| {
            *n == self.node || view.get(n).is_some_and(|p| p.liveness == Liveness::Alive)
        };
        let mut vols: Vec<Versioned<VolumeRecord>> = self.store.list::<Volumes>()?;
        let admitted: BTreeSet<NodeId> = self
            .store
            .list::<Nodes>()?
            .into_iter()
            .map(|n| n.value.id)
            .collect();
        let mut lost: BTreeSet<NodeId> = BTreeSet::new();
        for v in &vols {
            for r in &v.value.replicas {
                if !admitted.contains(&r.node) {
                    // Removed from the cluster: replaced at once.
                    lost.insert(r.node);
                } else if alive(&r.node) {
                    down.remove(&r.node);
                } else {
                    let since = *down.entry(r.node).or_insert(now);
                    if now.duration_since(since) >= self.replica_grace {
                        lost.insert(r.node);
                    }
                }
            }
        }
        if lost.is_empty() {
            return Ok(());
        }
        vols.retain(|v| v.value.replicas.iter().any(|r| lost.contains(&r.node)));
        vols.sort_by_key(|v| {
            v.value
                .replicas
                .iter()
                .filter(|r| r.state == ReplicaState::InSync && !lost.contains(&r.node))
                .count()
        });
        let rooms = self.node_rooms()?;
        for cur in vols {
            let mut rec = cur.value.clone();
            let mut changes = Vec::new();
            for i in 0..rec.replicas.len() {
                let old = rec.replicas[i].node;
                if !lost.contains(&old) {
                    continue;
                }
                let taken: Vec<NodeId> = rec.replicas.iter().map(|r| r.node).collect();
                let Some(new) = rooms
                    .iter()
                    .filter(|r| r.alive && r.available >= rec.size && !taken.contains(&r.id))
                    .max_by_key(|r| r.available)
                else {
                    continue;
                };
                rec.replicas[i] = ReplicaRecord {
                    node: new.id,
                    state: ReplicaState::Faulted,
                    progress: Some(0),
                };
                let why = if admitted.contains(&old) {
                    "down"
                } else {
                    "removed"
                };
                changes.push(format!("node {old} ({why}) -> node {new}", new = new.id));
            }
            if changes.is_empty() {
                continue;
            }
            rec.placement = format!("{}; re-replicated: {}", rec.placement, changes.join(", "));
            let txn = TxnBuilder::new()
                .require_revision::<Volumes>(rec.id.to_string(), cur.revision)
                .put::<Volumes>(rec.id.to_string(), &rec);
            let msg = format!(
                "volume {}: replica rebuilt elsewhere (its node was removed, or down for {} s): {}",
                rec.name,
                self.replica_grace.as_secs(),
                changes.join(", ")
            );
            match self
                .store
                .commit(self.with_event(txn, "volume.rereplicated", msg))
                .await
            {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Records this node's storage report (agents only).
    pub async fn report_node_storage(&self, report: NodeStorageReport) -> Result<(), ControlError> {
        let txn = TxnBuilder::new().put::<NodeStorage>(report.node.to_string(), &report);
        self.store.commit(txn).await?;
        Ok(())
    }
}

/// What an [`Control::update_volume`] edit did.
pub(super) enum Edit {
    Unchanged,
    /// Changed; not worth an event.
    Quiet,
    Event(&'static str, String),
}

struct VolumeContext {
    hostnames: BTreeMap<NodeId, String>,
    reports: BTreeMap<NodeId, NodeStorageReport>,
}

fn volume_view(record: VolumeRecord, ctx: &VolumeContext) -> VolumeView {
    let replica_nodes: Vec<ReplicaView> = record
        .replicas
        .iter()
        .map(|r| ReplicaView {
            node: r.node,
            hostname: ctx.hostnames.get(&r.node).cloned().unwrap_or_default(),
            state: r.state,
            progress: r.progress,
            present: ctx
                .reports
                .get(&r.node)
                .is_some_and(|rep| rep.regions.contains(&record.id)),
        })
        .collect();
    let in_sync = replica_nodes
        .iter()
        .filter(|r| r.state == ReplicaState::InSync && r.present)
        .count();
    let faulted = replica_nodes
        .iter()
        .any(|r| r.state == ReplicaState::Faulted);
    let status = if in_sync == replica_nodes.len() {
        "available"
    } else if !faulted {
        // Some node has not reported its region yet.
        "creating"
    } else {
        "degraded"
    };
    VolumeView {
        redundancy: format!("{in_sync} of {} replicas in sync", record.replication),
        status: status.to_string(),
        replica_nodes,
        record,
    }
}

fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}
