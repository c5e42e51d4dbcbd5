//! Tables of the storage service: volumes (desired state and replica sets, written by
//! `control`) and each node's storage report (written only by that node's agent).

use serde::{Deserialize, Serialize};

use super::tables::Table;
use crate::ids::{NodeId, VmId, VolumeId};

pub struct Volumes;
impl Table for Volumes {
    const NAME: &'static str = "volumes";
    type Value = VolumeRecord;
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    /// Holds every acknowledged write.
    InSync,
    /// Missed writes (unreachable); must be resynced or rebuilt before it serves reads.
    Faulted,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRecord {
    pub node: NodeId,
    pub state: ReplicaState,
    /// While a faulted replica is being copied: percent of the volume's extents done.
    #[serde(default)]
    pub progress: Option<u8>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: VolumeId,
    pub name: String,
    /// Bytes (a multiple of 512).
    pub size: u64,
    pub extent_size: u64,
    /// Replicas asked for; `replicas.len()` may be lower on a small cluster (see `note`).
    pub replication: u32,
    pub replicas: Vec<ReplicaRecord>,
    /// Bumped by every attach: replicas refuse I/O from an older one (fencing).
    pub generation: u64,
    /// The node whose upstairs writes to it, if attached.
    #[serde(default)]
    pub attached_to: Option<NodeId>,
    /// Why the replica set is what it is (placement reasons, lowered replication).
    pub placement: String,
    pub created_at: u64,
    /// The VM using it as a disk (one at a time).
    #[serde(default)]
    pub used_by: Option<VmId>,
    /// Point-in-time snapshots, oldest first (copy-on-write layers in every replica's
    /// region, named by snapshot id).
    #[serde(default)]
    pub snapshots: Vec<SnapshotRecord>,
    /// For a clone: the snapshot it was made from, whose blocks it reads until it writes
    /// its own (nothing is copied at clone time).
    #[serde(default)]
    pub parent: Option<ParentRef>,
    /// The owning project (None: made by the admin CLI).
    #[serde(default)]
    pub project: Option<String>,
    /// Holds the data of this image (not a user's volume).
    #[serde(default)]
    pub image: Option<String>,
    /// The image it was made from (a bootable volume: that image's kernel boots it).
    #[serde(default)]
    pub source_image: Option<String>,
    /// Cinder's description, metadata and the user who made it.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// Recorded; the node named `by` is taking it on every replica.
    Creating,
    Available,
    /// Being removed by the node named `by`.
    Deleting,
    /// Taking or deleting it failed (see `detail`); it can be deleted.
    Error,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// A UUID; also the layer's name in each region.
    pub id: String,
    pub name: String,
    /// The volume's size when it was taken.
    pub size: u64,
    pub created_at: u64,
    pub state: SnapshotState,
    /// The node carrying out the pending change: the volume's writer if attached.
    pub by: NodeId,
    #[serde(default)]
    pub detail: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ParentRef {
    pub volume: VolumeId,
    pub snapshot: String,
}

/// What a node reports about its data disk and regions, key = node id.
pub struct NodeStorage;
impl Table for NodeStorage {
    const NAME: &'static str = "node_storage";
    type Value = NodeStorageReport;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeStorageReport {
    pub node: NodeId,
    /// Free and total bytes of the filesystem holding the regions.
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// Bytes the regions on this node actually use (thin: less than their size).
    pub allocated_bytes: u64,
    /// Volumes with a region here.
    pub regions: Vec<VolumeId>,
    pub updated_at: u64,
}
