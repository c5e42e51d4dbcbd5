//! Tables of the image service (Glance): image records. An image's bytes live in a
//! replicated volume (`ImageRecord::volume`) frozen by a snapshot once uploaded; boot
//! disks are copy-on-write clones of that snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::tables::Table;
use crate::ids::VolumeId;

pub struct Images;
impl Table for Images {
    const NAME: &'static str = "images";
    type Value = ImageRecord;
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatus {
    /// Recorded, no data yet.
    Queued,
    /// Data being uploaded.
    Saving,
    Active,
    /// The upload failed; the image can be deleted (or uploaded again).
    Killed,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    /// A UUID.
    pub id: String,
    pub name: String,
    /// The owning project.
    pub owner: String,
    pub status: ImageStatus,
    /// public, private, shared or community.
    pub visibility: String,
    pub protected: bool,
    #[serde(default)]
    pub hidden: bool,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub min_disk: u64,
    pub min_ram: u64,
    /// Bytes, once uploaded (as sent).
    pub size: Option<u64>,
    /// The disk's size in bytes (the raw size of a converted image).
    #[serde(default)]
    pub virtual_size: Option<u64>,
    /// MD5 of the data (Glance's legacy `checksum`).
    pub checksum: Option<String>,
    /// SHA-512 of the data (`os_hash_algo` / `os_hash_value`).
    pub sha512: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Any other string properties (`kernel_id`, `ramdisk_id`, `os_command_line`, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// The volume holding the data and its snapshot (set by the upload).
    #[serde(default)]
    pub volume: Option<VolumeId>,
    #[serde(default)]
    pub snapshot: Option<String>,
    /// A converted image's bytes as sent (volume and snapshot), for downloads.
    #[serde(default)]
    pub source: Option<(VolumeId, String)>,
    pub created_at: u64,
    pub updated_at: u64,
}
