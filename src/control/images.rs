//! Images (the Glance model): records in the `images` table, data in a replicated volume.
//!
//! An upload streams into a volume made for the image and attached to the node that
//! receives it (nothing is held in memory beyond one chunk), hashing as it goes (MD5 for
//! Glance's `checksum`, SHA-512 for the multihash). Once written the volume is detached
//! and frozen by a snapshot: boot disks are copy-on-write clones of that snapshot and
//! downloads read it, so an image never changes after it becomes active.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use super::caller::{Caller, Scoped};
use super::volumes::CreateVolume;
use super::{now_secs, Control, ControlError};
use crate::cluster::store::compute_tables::ImageFile;
use crate::cluster::store::image_tables::{ImageRecord, ImageStatus, Images};
use crate::cluster::store::storage_tables::VolumeRecord;
use crate::cluster::store::{StoreError, TxnBuilder};
use crate::ids::VolumeId;
use crate::storage::Volume;

pub const DISK_FORMATS: &[&str] = &[
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];
pub const CONTAINER_FORMATS: &[&str] = &[
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];
pub const VISIBILITIES: &[&str] = &["public", "private", "shared", "community"];
/// Largest image accepted (Glance's default `image_size_cap`, 1 TiB).
pub const MAX_IMAGE_BYTES: u64 = 1 << 40;
/// Name of the snapshot that freezes an image's volume.
const IMAGE_SNAPSHOT: &str = "image";
/// How long an upload waits for its volume's replicas to be in sync before its snapshot.
const SYNC_WAIT: Duration = Duration::from_secs(60);
/// Bytes written to the volume at a time.
const CHUNK: usize = 4 << 20;

/// Reads and writes volume data on this node (set by the daemon from the agent).
#[async_trait::async_trait]
pub trait VolumeData: Send + Sync + 'static {
    /// The writer of a volume attached to this node, once it is ready.
    async fn writer(&self, volume: &VolumeId) -> Result<Arc<dyn Volume>, String>;
    /// Where this node spools uploads it converts (on its data disk).
    fn scratch_dir(&self) -> std::path::PathBuf;
    /// A read-only view of one snapshot of a volume.
    fn snapshot_reader(
        &self,
        volume: &VolumeRecord,
        snapshot: &str,
    ) -> Result<Arc<dyn Volume>, String>;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateImage {
    /// Glance lets the caller choose the id (a UUID).
    pub id: Option<String>,
    pub name: String,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub visibility: Option<String>,
    pub protected: bool,
    pub hidden: bool,
    pub min_disk: u64,
    pub min_ram: u64,
    pub tags: Vec<String>,
    pub properties: BTreeMap<String, String>,
}

/// Image data arriving from a client, chunk by chunk.
pub type DataStream = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

fn check_uuid(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Checks the fields a caller may set (at create and update).
pub fn check_image(r: &ImageRecord) -> Result<(), ControlError> {
    let bad = |m: String| Err(ControlError::Invalid(m));
    if r.name.len() > 255 || r.name.chars().any(|c| c.is_control()) {
        return bad(format!(
            "image name {:?} must be at most 255 printable characters",
            r.name
        ));
    }
    if let Some(f) = &r.disk_format {
        if !DISK_FORMATS.contains(&f.as_str()) {
            return bad(format!(
                "Invalid disk format '{f}' for image (one of {}).",
                DISK_FORMATS.join(", ")
            ));
        }
    }
    if let Some(f) = &r.container_format {
        if !CONTAINER_FORMATS.contains(&f.as_str()) {
            return bad(format!(
                "Invalid container format '{f}' for image (one of {}).",
                CONTAINER_FORMATS.join(", ")
            ));
        }
    }
    if !VISIBILITIES.contains(&r.visibility.as_str()) {
        return bad(format!(
            "Invalid visibility value: {} (one of {}).",
            r.visibility,
            VISIBILITIES.join(", ")
        ));
    }
    if r.tags.len() > 128 || r.tags.iter().any(|t| t.is_empty() || t.len() > 255) {
        return bad("an image has at most 128 tags of 1-255 characters".into());
    }
    if r.properties.len() > 128 {
        return bad("an image has at most 128 properties".into());
    }
    for (k, v) in &r.properties {
        if k.is_empty() || k.len() > 255 || v.len() > 65_535 {
            return bad(format!(
                "property {k:?}: names are 1-255 characters, values at most 64 KiB"
            ));
        }
    }
    Ok(())
}

/// Upload data read and dropped after a refusal, at most, so that the client (which
/// sends before it reads) hears the answer instead of a broken connection.
pub(super) const DRAIN_MAX: u64 = 64 << 20;

pub(super) async fn drain(body: &mut DataStream, max: u64) {
    let mut seen = 0u64;
    while seen < max {
        match body.next().await {
            Some(Ok(chunk)) => seen += chunk.len() as u64,
            _ => return,
        }
    }
}

/// The refusal of image data past the owner's `image_size_total` quota.
/// Checks the bytes received so far against the owner's room (the rest of the upload is
/// drained when it is past) and the announced length.
pub(super) async fn account(
    body: &mut DataStream,
    total: u64,
    len: Option<u64>,
    room: Option<u64>,
) -> Result<(), ControlError> {
    if let Some(r) = room.filter(|r| total > *r) {
        drain(body, DRAIN_MAX).await;
        return Err(image_quota(total, r));
    }
    let max = len.unwrap_or(MAX_IMAGE_BYTES);
    if total > max {
        return Err(ControlError::Invalid(format!(
            "more data than announced ({max} bytes)"
        )));
    }
    Ok(())
}

pub(super) fn image_quota(bytes: u64, room: u64) -> ControlError {
    ControlError::OverQuota {
        resource: "image_size_total".into(),
        message: format!(
            "Quota exceeded for image_size_total: {bytes} bytes of image data asked, {room} left in the project's quota"
        ),
    }
}

/// Image properties that name other images (booted with this one).
const IMAGE_REFS: [&str; 2] = ["kernel_id", "ramdisk_id"];

impl Control {
    /// Refuses `kernel_id`/`ramdisk_id` values (new or changed against `before`) that
    /// name an image the image's owner cannot see: another project's private image is
    /// never reachable through a property.
    fn check_image_refs(
        &self,
        rec: &ImageRecord,
        before: Option<&ImageRecord>,
    ) -> Result<(), ControlError> {
        let owner = Caller::member_of(&rec.owner);
        for k in IMAGE_REFS {
            let Some(v) = rec.properties.get(k) else {
                continue;
            };
            if before.and_then(|b| b.properties.get(k)) == Some(v) {
                continue;
            }
            self.image(&owner, v).map_err(|_| {
                ControlError::Invalid(format!(
                    "{k} {v}: no such image in project {} or shared with it",
                    rec.owner
                ))
            })?;
        }
        Ok(())
    }

    pub async fn create_image(
        &self,
        owner: &str,
        req: CreateImage,
    ) -> Result<ImageRecord, ControlError> {
        let id = match req.id {
            Some(id) if !check_uuid(&id) => {
                return Err(ControlError::Invalid(format!(
                    "image id {id:?} is not a UUID"
                )))
            }
            Some(id) => id.to_ascii_lowercase(),
            None => VolumeId::random().0,
        };
        self.check_quota(Some(owner), &[("image_count_total", 1)])?;
        let now = now_secs();
        let rec = ImageRecord {
            id: id.clone(),
            name: req.name,
            owner: owner.to_string(),
            status: ImageStatus::Queued,
            visibility: req.visibility.unwrap_or_else(|| "shared".into()),
            protected: req.protected,
            hidden: req.hidden,
            disk_format: req.disk_format,
            container_format: req.container_format,
            min_disk: req.min_disk,
            min_ram: req.min_ram,
            size: None,
            virtual_size: None,
            checksum: None,
            sha512: None,
            tags: req.tags,
            properties: req.properties,
            volume: None,
            snapshot: None,
            source: None,
            created_at: now,
            updated_at: now,
        };
        check_image(&rec)?;
        self.check_image_refs(&rec, None)?;
        let txn = TxnBuilder::new()
            .require_revision::<Images>(id.clone(), 0)
            .put::<Images>(id.clone(), &rec);
        match self
            .store
            .commit(self.with_event(
                txn,
                "image.created",
                format!("image {} ({id}) created", rec.name),
            ))
            .await
        {
            Ok(_) => Ok(rec),
            Err(StoreError::Conflict { .. }) => Err(ControlError::Conflict(format!(
                "An image with identifier {id} already exists"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// An image the caller may see (its project's, public or community ones).
    pub fn image(&self, caller: &Caller, id: &str) -> Result<ImageRecord, ControlError> {
        self.store
            .get::<Images>(id)?
            .map(|v| v.value)
            .filter(|i| i.visible_to(caller, self))
            .ok_or_else(|| ControlError::NotFound(format!("No image found with ID {id}")))
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, ControlError> {
        let mut v: Vec<ImageRecord> = self
            .store
            .list::<Images>()?
            .into_iter()
            .map(|v| v.value)
            .collect();
        v.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Ok(v)
    }

    /// Read-modify-write of an image record under a revision check.
    pub async fn update_image(
        &self,
        id: &str,
        mut edit: impl FnMut(&mut ImageRecord) -> Result<(), ControlError>,
    ) -> Result<ImageRecord, ControlError> {
        loop {
            let cur = self
                .store
                .get::<Images>(id)?
                .ok_or_else(|| ControlError::NotFound(format!("No image found with ID {id}")))?;
            let mut rec = cur.value.clone();
            edit(&mut rec)?;
            check_image(&rec)?;
            self.check_image_refs(&rec, Some(&cur.value))?;
            rec.updated_at = now_secs();
            let txn = TxnBuilder::new()
                .require_revision::<Images>(id.to_string(), cur.revision)
                .put::<Images>(id.to_string(), &rec);
            match self.store.commit(txn).await {
                Ok(_) => return Ok(rec),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Stores an image's data: `queued` → `saving` → `active` (or `killed` if the upload
    /// fails, with its volume removed). `len` is the announced length, when known.
    pub async fn upload_image(
        &self,
        id: &str,
        len: Option<u64>,
        mut body: DataStream,
    ) -> Result<ImageRecord, ControlError> {
        if let Some(l) = len {
            if l > MAX_IMAGE_BYTES {
                return Err(ControlError::Invalid(format!(
                    "Image exceeds the storage quota: {l} bytes (at most {MAX_IMAGE_BYTES})"
                )));
            }
        }
        // The owner's image data quota bounds the upload, announced or not.
        let (owner, declared) = self
            .store
            .get::<Images>(id)?
            .map(|i| (i.value.owner, i.value.disk_format.unwrap_or_default()))
            .ok_or_else(|| ControlError::NotFound(format!("No image found with ID {id}")))?;
        let kind = super::image_format::kind(&declared)?;
        let room = self.image_bytes_left(&owner)?;
        if let (Some(l), Some(r)) = (len, room) {
            if l > r {
                drain(&mut body, DRAIN_MAX).await;
                return Err(image_quota(l, r));
            }
        }
        let data =
            self.volume_data.get().cloned().ok_or_else(|| {
                ControlError::NotReady("the node agent is not running yet".into())
            })?;
        self.update_image(id, |r| {
            if r.status != ImageStatus::Queued {
                return Err(ControlError::Conflict(format!(
                    "Image status transition from {} to saving is not allowed",
                    serde_json::to_value(r.status)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                )));
            }
            r.status = ImageStatus::Saving;
            Ok(())
        })
        .await?;
        // A format to convert is received into a file first (its checksums are those of
        // the bytes as sent), checked and converted to raw; the raw disk goes in the volume.
        let mut converted = None;
        let (body, len, room, head_check) = match kind {
            super::image_format::Kind::Raw => (body, len, room, Some(declared.as_str())),
            super::image_format::Kind::Convert(format) => {
                match super::image_format::receive_and_convert(
                    &data.scratch_dir(),
                    id,
                    format,
                    len,
                    room,
                    body,
                )
                .await
                {
                    Ok(c) => {
                        let (stream, size) = (c.raw_stream()?, c.virtual_size);
                        converted = Some(c);
                        (stream, Some(size), None, None)
                    }
                    Err(e) => {
                        self.kill_image(id, None).await;
                        return Err(e);
                    }
                }
            }
        };
        let stored = self
            .store_image_volume(&data, id, "", len, room, head_check, body)
            .await;
        let result = async {
            let (vol, snap, (size, md5, sha512)) = stored?;
            // A converted image keeps the bytes as sent too, for downloads.
            let (size, md5, sha512, source) = match &converted {
                Some(c) => {
                    let stream = c.source_stream()?;
                    let kept = self
                        .store_image_volume(&data, id, "-source", Some(c.size), None, None, stream)
                        .await;
                    match kept {
                        Ok((v, s, _)) => (c.size, c.md5.clone(), c.sha512.clone(), Some((v, s))),
                        Err(e) => {
                            self.remove_image_volume(&vol).await;
                            return Err(e);
                        }
                    }
                }
                None => (size, md5, sha512, None),
            };
            let virtual_size = converted.as_ref().map_or(size, |c| c.virtual_size);
            let rec = self
                .update_image(id, |r| {
                    r.status = ImageStatus::Active;
                    r.size = Some(size);
                    r.virtual_size = Some(virtual_size);
                    r.checksum = Some(md5.clone());
                    r.sha512 = Some(sha512.clone());
                    r.volume = Some(vol.clone());
                    r.snapshot = Some(snap.clone());
                    r.source = source.clone();
                    Ok(())
                })
                .await?;
            tracing::info!(image = %id, bytes = size, virtual_size, "image uploaded");
            Ok(rec)
        }
        .await;
        drop(converted);
        if let Err(e) = &result {
            self.kill_image(id, None).await;
            tracing::warn!(image = %id, error = %crate::telemetry::error_chain(e), "image upload failed");
        }
        result
    }

    /// Writes `body` into a new volume of the image (`image-<id><suffix>`), then
    /// snapshots it once every replica has it; the volume is removed if any step fails.
    #[allow(clippy::too_many_arguments)]
    async fn store_image_volume(
        &self,
        data: &Arc<dyn VolumeData>,
        id: &str,
        suffix: &str,
        len: Option<u64>,
        room: Option<u64>,
        head_check: Option<&str>,
        body: DataStream,
    ) -> Result<(VolumeId, String, (u64, String, String)), ControlError> {
        // Room for what is announced; grown as data arrives when nothing is.
        let initial = len.unwrap_or(64 << 20).max(1).next_multiple_of(1 << 20);
        let vol = self
            .create_volume(
                &crate::control::caller::Caller::system(),
                CreateVolume {
                    name: format!("image-{id}{suffix}"),
                    size_bytes: initial,
                    replicas: None,
                    source_snapshot: None,
                    project: None,
                    image: Some(id.to_string()),
                    source_image: None,
                    ..Default::default()
                },
            )
            .await?
            .record
            .id;
        let done = async {
            let sums = self
                .write_image(data, &vol, len, room, head_check, body)
                .await?;
            self.detach_volume(&vol.0, None).await?;
            // A replica that missed writes (its node restarted) is rebuilt now that the
            // volume is attached nowhere; the snapshot needs it in sync.
            self.wait_in_sync(&vol).await?;
            let snap = self.snapshot_volume(&vol.0, IMAGE_SNAPSHOT).await?;
            Ok::<_, ControlError>((snap.id, sums))
        }
        .await;
        match done {
            Ok((snap, sums)) => Ok((vol, snap, sums)),
            Err(e) => {
                self.remove_image_volume(&vol).await;
                Err(e)
            }
        }
    }

    /// Waits, at most [`SYNC_WAIT`], until every replica of an image's volume on a live
    /// node is in sync.
    async fn wait_in_sync(&self, vol: &VolumeId) -> Result<(), ControlError> {
        use crate::cluster::store::storage_tables::ReplicaState;
        let deadline = tokio::time::Instant::now() + SYNC_WAIT;
        let mut changes = self.store.watch();
        loop {
            let v = self.volume(&crate::control::caller::Caller::system(), &vol.0)?;
            let behind = v
                .replica_nodes
                .iter()
                .any(|r| r.state != ReplicaState::InSync && self.membership.is_alive(r.node));
            if !behind || tokio::time::Instant::now() >= deadline {
                // Past the deadline the snapshot's refusal names the replica.
                return Ok(());
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), changes.recv()).await;
        }
    }

    /// Streams `body` into the volume through this node; returns (bytes, MD5, SHA-512).
    async fn write_image(
        &self,
        data: &Arc<dyn VolumeData>,
        vol: &VolumeId,
        len: Option<u64>,
        room: Option<u64>,
        head_check: Option<&str>,
        mut body: DataStream,
    ) -> Result<(u64, String, String), ControlError> {
        self.attach_volume(&vol.0, self.node).await?;
        let writer = data.writer(vol).await.map_err(ControlError::Unavailable)?;
        let (mut md5, mut sha) = (Md5::new(), Sha512::new());
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
        let mut offset = 0u64;
        let mut total = 0u64;
        loop {
            let next = body.next().await;
            let end = next.is_none();
            if let Some(chunk) = next {
                let chunk = chunk
                    .map_err(|e| ControlError::Invalid(format!("the upload was cut off: {e}")))?;
                total += chunk.len() as u64;
                account(&mut body, total, len, room).await?;
                md5.update(&chunk);
                sha.update(&chunk);
                buf.extend_from_slice(&chunk);
            }
            if buf.len() >= CHUNK || (end && !buf.is_empty()) {
                let mut out = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK));
                if let (0, Some(declared)) = (offset, head_check) {
                    super::image_format::check_raw_head(declared, &out)?;
                }
                // Whole sectors only; the tail of the last one reads as zeros.
                let keep = if end {
                    0
                } else {
                    out.len() % crate::storage::SECTOR as usize
                };
                let rest = out.split_off(out.len() - keep);
                buf.extend_from_slice(&rest);
                out.resize(
                    out.len().next_multiple_of(crate::storage::SECTOR as usize),
                    0,
                );
                let need = offset + out.len() as u64;
                if need > writer.size() {
                    self.grow_image_volume(vol, &writer, need).await?;
                }
                let (w, at) = (writer.clone(), offset);
                offset += out.len() as u64;
                // The volume is new: what was never written reads as zeros already.
                if out.iter().any(|b| *b != 0) {
                    tokio::task::spawn_blocking(move || w.write_at(at, &out))
                        .await
                        .map_err(|e| ControlError::Unavailable(e.to_string()))?
                        .map_err(|e| {
                            ControlError::Unavailable(format!(
                                "cannot write the image: {}",
                                crate::telemetry::error_chain(&e)
                            ))
                        })?;
                }
            }
            if end {
                break;
            }
        }
        if let Some(l) = len {
            if total != l {
                return Err(ControlError::Invalid(format!(
                    "the upload ended after {total} of {l} bytes"
                )));
            }
        }
        let w = writer.clone();
        tokio::task::spawn_blocking(move || w.flush())
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?
            .map_err(|e| ControlError::Unavailable(crate::telemetry::error_chain(&e)))?;
        Ok((
            total,
            hex::encode(md5.finalize()),
            hex::encode(sha.finalize()),
        ))
    }

    async fn grow_image_volume(
        &self,
        vol: &VolumeId,
        writer: &Arc<dyn Volume>,
        need: u64,
    ) -> Result<(), ControlError> {
        let to = need.max(writer.size() * 2).next_multiple_of(1 << 20);
        self.grow_volume(&vol.0, to).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while writer.size() < need {
            if tokio::time::Instant::now() >= deadline {
                return Err(ControlError::Unavailable(format!(
                    "volume {vol} did not grow to {need} bytes within 60 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Marks a failed upload and removes its volume.
    async fn kill_image(&self, id: &str, vol: Option<&VolumeId>) {
        let _ = self
            .update_image(id, |r| {
                r.status = ImageStatus::Killed;
                Ok(())
            })
            .await;
        if let Some(v) = vol {
            self.remove_image_volume(v).await;
        }
    }

    /// Deletes an image's volume, unless clones still read from it (boot disks made from
    /// the image): then it stays, named after the image, until they are gone.
    async fn remove_image_volume(&self, v: &VolumeId) {
        let _ = self.detach_volume(&v.0, None).await;
        if let Ok(rec) = self.find_volume(&Caller::system(), &v.0) {
            for s in &rec.value.snapshots {
                if let Err(e) = self.delete_snapshot(&v.0, &s.id).await {
                    tracing::info!(volume = %v, error = %crate::telemetry::error_chain(&e), "image data kept: still in use");
                    return;
                }
            }
        }
        if let Err(e) = self
            .delete_volume(&crate::control::caller::Caller::system(), &v.0)
            .await
        {
            tracing::warn!(volume = %v, error = %crate::telemetry::error_chain(&e), "cannot delete an image's volume");
        }
    }

    /// Removes the data of deleted images that clones kept alive, once no clone is left.
    pub async fn collect_image_volumes(&self) {
        let Ok(vols) = self
            .store
            .list::<crate::cluster::store::storage_tables::Volumes>()
        else {
            return;
        };
        let orphans: Vec<VolumeId> = vols
            .iter()
            .filter(|v| {
                v.value
                    .image
                    .as_ref()
                    .is_some_and(|i| self.store.get::<Images>(i).ok().flatten().is_none())
            })
            .filter(|v| {
                !vols.iter().any(|c| {
                    c.value
                        .parent
                        .as_ref()
                        .is_some_and(|p| p.volume == v.value.id)
                })
            })
            .map(|v| v.value.id.clone())
            .collect();
        for v in orphans {
            tracing::info!(volume = %v, "removing the data of a deleted image: its last clone is gone");
            self.remove_image_volume(&v).await;
        }
    }

    /// Deletes an image (refused while protected); its data goes once nothing uses it.
    pub async fn delete_image(&self, id: &str) -> Result<(), ControlError> {
        let cur = self
            .store
            .get::<Images>(id)?
            .ok_or_else(|| ControlError::NotFound(format!("No image found with ID {id}")))?;
        if cur.value.protected {
            return Err(ControlError::Forbidden(format!(
                "Image {id} is protected and cannot be deleted."
            )));
        }
        if cur.value.status == ImageStatus::Saving {
            return Err(ControlError::Conflict(format!(
                "Image {id} is being uploaded; delete it once the upload ends."
            )));
        }
        let txn = TxnBuilder::new()
            .require_revision::<Images>(id.to_string(), cur.revision)
            .delete::<Images>(id.to_string());
        self.store
            .commit(self.with_event(
                txn,
                "image.deleted",
                format!("image {} ({id}) deleted", cur.value.name),
            ))
            .await?;
        if let Some(v) = &cur.value.volume {
            self.remove_image_volume(v).await;
        }
        if let Some((v, _)) = &cur.value.source {
            self.remove_image_volume(v).await;
        }
        Ok(())
    }

    /// Where a node finds an active image's bytes.
    /// Where a node finds the bytes of an active image the caller may see.
    pub fn image_file(&self, caller: &Caller, id: &str) -> Result<ImageFile, ControlError> {
        let r = self.image(caller, id)?;
        match (&r.status, &r.volume, &r.snapshot, r.size, &r.sha512) {
            (ImageStatus::Active, Some(v), Some(s), Some(size), Some(sha)) => Ok(ImageFile {
                image: r.id.clone(),
                volume: v.clone(),
                snapshot: s.clone(),
                // The disk as stored: raw (a converted image's bytes as sent are kept apart).
                size: r.virtual_size.unwrap_or(size),
                sha512: sha.clone(),
            }),
            _ => Err(ControlError::Invalid(format!(
                "image {} ({}) is not active",
                r.name, r.id
            ))),
        }
    }

    /// An active image's data, read from its snapshot in chunks.
    pub fn read_image(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(ImageRecord, DataStream), ControlError> {
        let rec = self.image(caller, id)?;
        let mut f = self.image_file(caller, id).map_err(|_| {
            ControlError::Conflict(format!("image {id} has no data (status {:?})", rec.status))
        })?;
        // A converted image is downloaded as it was sent (its checksum describes that).
        if let (Some((v, s)), Some(size)) = (&rec.source, rec.size) {
            f.volume = v.clone();
            f.snapshot = s.clone();
            f.size = size;
        }
        let data =
            self.volume_data.get().cloned().ok_or_else(|| {
                ControlError::NotReady("the node agent is not running yet".into())
            })?;
        let vol = self.find_volume(&Caller::system(), &f.volume.0)?.value;
        let reader = data
            .snapshot_reader(&vol, &f.snapshot)
            .map_err(ControlError::Unavailable)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(2);
        tokio::spawn(async move {
            let mut at = 0u64;
            while at < f.size {
                let n = (f.size - at).min(CHUNK as u64);
                let r = reader.clone();
                let got = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n.next_multiple_of(crate::storage::SECTOR) as usize];
                    r.read_at(at, &mut buf).map(|_| {
                        buf.truncate(n as usize);
                        Bytes::from(buf)
                    })
                })
                .await;
                let item = match got {
                    Ok(Ok(b)) => Ok(b),
                    Ok(Err(e)) => Err(crate::telemetry::error_chain(&e)),
                    Err(e) => Err(e.to_string()),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
                at += n;
            }
        });
        Ok((
            rec,
            Box::pin(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|x| (x, rx))
            })),
        ))
    }
}
