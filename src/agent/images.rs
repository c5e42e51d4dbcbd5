//! Image data on this node: the writer and snapshot readers `control` streams image
//! uploads and downloads through, and the image cache VMs boot their kernel and
//! initramfs from (copies checked against the image's SHA-512).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha512};

use super::attach::Attachments;
use crate::cluster::store::compute_tables::ImageFile;
use crate::cluster::store::storage_tables::VolumeRecord;
use crate::cluster::store::tables::Nodes;
use crate::control::images::VolumeData;
use crate::ids::{NodeId, VolumeId};
use crate::storage::replicated::ReplicatedVolume;
use crate::storage::Volume;
use crate::telemetry::error_chain;

/// How long a writer waits for its volume to be attached here.
const ATTACH_WAIT: Duration = Duration::from_secs(60);
const CHUNK: u64 = 4 << 20;

/// Held by `control` (which `Attachments` holds in turn), so it keeps only a weak
/// reference: a strong one would be a cycle that keeps the node alive after shutdown.
pub struct ImageData {
    pub attachments: std::sync::Weak<Attachments>,
    /// Where uploads to convert are spooled (on the data disk).
    pub scratch: PathBuf,
}

impl ImageData {
    fn attachments(&self) -> Result<Arc<Attachments>, String> {
        self.attachments
            .upgrade()
            .ok_or_else(|| "the node is shutting down".to_string())
    }
}

impl Attachments {
    fn node_addrs(&self) -> Result<BTreeMap<NodeId, SocketAddr>, String> {
        Ok(self
            .control
            .store
            .list::<Nodes>()
            .map_err(|e| error_chain(&e))?
            .into_iter()
            .map(|n| (n.value.id, n.value.addr))
            .collect())
    }

    /// A read-only client of a snapshot of a volume (blocking I/O: use it off the runtime).
    pub fn snapshot_volume(
        &self,
        vol: &VolumeRecord,
        snapshot: &str,
    ) -> Result<Arc<dyn Volume>, String> {
        let snap = vol
            .snapshots
            .iter()
            .find(|s| s.id == snapshot)
            .ok_or_else(|| format!("volume {} has no snapshot {snapshot}", vol.name))?;
        let addrs = self.node_addrs()?;
        Ok(Arc::new(ReplicatedVolume::snapshot_reader(
            self.transport.clone(),
            tokio::runtime::Handle::current(),
            self.control.node,
            &vol.id.0,
            &snap.id,
            snap.size,
            vol.extent_size,
            &super::snapshots::targets(vol, &addrs),
            Some(self.server.clone()),
        )))
    }
}

#[async_trait::async_trait]
impl VolumeData for ImageData {
    async fn writer(&self, volume: &VolumeId) -> Result<Arc<dyn Volume>, String> {
        let deadline = tokio::time::Instant::now() + ATTACH_WAIT;
        loop {
            if let Some(v) = self.attachments()?.get(volume) {
                return Ok(v as Arc<dyn Volume>);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "volume {volume}: its replicas did not answer within {} s",
                    ATTACH_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn scratch_dir(&self) -> PathBuf {
        self.scratch.clone()
    }

    fn snapshot_reader(
        &self,
        volume: &VolumeRecord,
        snapshot: &str,
    ) -> Result<Arc<dyn Volume>, String> {
        self.attachments()?.snapshot_volume(volume, snapshot)
    }
}

fn sha512_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha512::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// The local copy of an image's data in `dir`, fetched from its snapshot when missing or
/// not matching its SHA-512.
pub async fn cached(att: &Arc<Attachments>, dir: &Path, f: &ImageFile) -> Result<PathBuf, String> {
    let path = dir.join(&f.image);
    let (p2, want) = (path.clone(), f.sha512.clone());
    let good = tokio::task::spawn_blocking(move || sha512_file(&p2).is_ok_and(|h| h == want))
        .await
        .unwrap_or(false);
    if good {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let vol = att
        .control
        .find_volume(&crate::control::caller::Caller::system(), &f.volume.0)
        .map_err(|e| format!("the data of image {}: {}", f.image, error_chain(&e)))?
        .value;
    let reader = att.snapshot_volume(&vol, &f.snapshot)?;
    let (tmp, size, want, img) = (
        dir.join(part_name(&f.image)),
        f.size,
        f.sha512.clone(),
        f.image.clone(),
    );
    let final_path = path.clone();
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let io = |e: std::io::Error| format!("{}: {e}", tmp.display());
        let mut out = std::fs::File::create(&tmp).map_err(io)?;
        let mut h = Sha512::new();
        let mut at = 0u64;
        while at < size {
            let n = (size - at).min(CHUNK);
            let mut buf = vec![0u8; n.next_multiple_of(crate::storage::SECTOR) as usize];
            reader
                .read_at(at, &mut buf)
                .map_err(|e| format!("reading image {img}: {}", error_chain(&e)))?;
            buf.truncate(n as usize);
            h.update(&buf);
            out.write_all(&buf).map_err(io)?;
            at += n;
        }
        out.sync_all().map_err(io)?;
        let got = hex::encode(h.finalize());
        if got != want {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "image {img}: its data does not match its SHA-512 (read {got}, recorded {want})"
            ));
        }
        std::fs::rename(&tmp, &final_path).map_err(io)
    })
    .await
    .map_err(|e| e.to_string())??;
    tracing::info!(image = %f.image, bytes = f.size, "image fetched into the cache");
    Ok(path)
}

/// The temporary file a fetch of `image` writes before renaming it into place.
fn part_name(image: &str) -> String {
    format!(".{image}.{:x}.part", rand::random::<u64>())
}

fn is_part(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".part")
}

/// A fetch's temporary file older than this is left over from a crash (a fetch of the
/// largest image takes seconds).
const STALE_PART: Duration = Duration::from_secs(3600);

/// Removes from the image cache `dir` every image not in `keep` (the cluster's images,
/// and those any VM boots from, even once the image itself is deleted) and fetches left
/// over from a crash. Returns how many files went and their bytes.
pub fn prune(dir: &Path, keep: &std::collections::HashSet<String>) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let (mut files, mut bytes) = (0, 0);
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let unused = if is_part(&name) {
            meta.modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > STALE_PART)
        } else {
            !keep.contains(&name)
        };
        if unused {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    files += 1;
                    bytes += meta.len();
                }
                Err(err) => {
                    tracing::warn!(file = %e.path().display(), error = %err, "cannot remove an unused cached image")
                }
            }
        }
    }
    if files > 0 {
        tracing::info!(files, bytes, "unused images removed from the cache");
    }
    (files, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_what_is_used_and_removes_deleted_images_and_stale_fetches() {
        let d = tempfile::tempdir().unwrap();
        let put =
            |name: &str, len: usize| std::fs::write(d.path().join(name), vec![1u8; len]).unwrap();
        put("img-live", 10);
        put("img-booted", 20);
        put("img-deleted", 30);
        put(".img-new.1f.part", 40);
        put(".img-old.2e.part", 50);
        let old = std::time::SystemTime::now() - STALE_PART - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(d.path().join(".img-old.2e.part"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let keep: std::collections::HashSet<String> = ["img-live", "img-booted"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(prune(d.path(), &keep), (2, 80));
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, [".img-new.1f.part", "img-booted", "img-live"]);
        // Nothing more to do the second time; a missing directory is no error.
        assert_eq!(prune(d.path(), &keep), (0, 0));
        assert_eq!(prune(&d.path().join("absent"), &keep), (0, 0));
    }
}
