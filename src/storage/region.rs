//! A region with snapshots: the live layer (an [`ExtentVolume`]) plus read-only snapshot
//! layers stacked on it, oldest first, each an [`ExtentVolume`] of its own under
//! `snap/<name>/`.
//!
//! Snapshots are copy-on-write inside the region: a snapshot layer starts empty, and the
//! first write (or discard) of a block after the newest snapshot first copies the block's
//! old content into that snapshot. Reading snapshot `k` looks at layers `k, k+1, …, newest`
//! and then the live layer, and the first layer that holds the block answers. A block no
//! layer holds, or one a snapshot recorded as [`BlockState::Below`], lies below the whole
//! region: zeros for a plain volume, the parent snapshot for a clone (the replica client
//! reads those from the parent's replicas). Deleting snapshot `k` first copies into
//! snapshot `k-1` the blocks `k-1` lacks and `k` holds (so `k-1` reads the same), then
//! drops the layer; both steps are idempotent, so a crash in between is mended by
//! deleting again.
//!
//! All replicas of a volume take snapshots at the same point of the write stream: the
//! replica client sends the snapshot request to every replica after the writes before it
//! completed and before any write after it (see [`super::replicated`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::extent::{BlockState, ExtentVolume, BLOCK};
use super::{check_range, Volume, VolumeError};

const SNAP_DIR: &str = "snap";

/// A snapshot or volume name used as a directory name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub struct Region {
    live: ExtentVolume,
    /// Snapshot layers, oldest first.
    layers: RwLock<Vec<(String, Arc<ExtentVolume>)>>,
    /// Held while a block's old content is copied into the newest snapshot, and while
    /// snapshots are taken or dropped.
    cow: Mutex<()>,
}

/// A read: the bytes asked for, and the blocks (absolute block numbers) that lie below
/// the region (read as zeros in `data`).
#[derive(Debug)]
pub struct LayeredRead {
    pub data: Vec<u8>,
    pub below: Vec<u64>,
}

impl Region {
    pub fn create(
        dir: &Path,
        volume: &str,
        size: u64,
        extent_size: u64,
    ) -> Result<Self, VolumeError> {
        Ok(Region {
            live: ExtentVolume::create(dir, volume, size, extent_size)?,
            layers: RwLock::new(Vec::new()),
            cow: Mutex::new(()),
        })
    }

    /// Opens a region; snapshot directories a crash left unrecorded are removed.
    pub fn open(dir: &Path) -> Result<Self, VolumeError> {
        let live = ExtentVolume::open(dir)?;
        let names = live.meta().snapshots;
        let mut layers = Vec::new();
        for name in &names {
            let d = snap_dir(dir, name);
            layers.push((name.clone(), Arc::new(ExtentVolume::open(&d)?)));
        }
        if let Ok(entries) = std::fs::read_dir(dir.join(SNAP_DIR)) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !names.contains(&name) {
                    tracing::info!(region = %dir.display(), snapshot = %name, "removing an unfinished snapshot layer");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(Region {
            live,
            layers: RwLock::new(layers),
            cow: Mutex::new(()),
        })
    }

    /// Whether I/O on `[offset, offset + len)` of the live layer stays in memory (see
    /// [`ExtentVolume::is_hot`]); never with a snapshot, whose copy-on-write syncs.
    pub fn is_hot(&self, offset: u64, len: u64) -> bool {
        self.layers.try_read().is_ok_and(|l| l.is_empty()) && self.live.is_hot(offset, len)
    }

    pub fn live(&self) -> &ExtentVolume {
        &self.live
    }

    pub fn dir(&self) -> &Path {
        self.live.dir()
    }

    pub fn generation(&self) -> u64 {
        self.live.meta().generation
    }

    pub fn set_generation(&self, generation: u64) -> Result<u64, VolumeError> {
        self.live.set_generation(generation)
    }

    pub fn grow(&self, size: u64) -> Result<(), VolumeError> {
        self.live.grow(size)
    }

    pub fn destroy(self) -> Result<(), VolumeError> {
        let layers = std::mem::take(&mut *self.layers.write().unwrap_or_else(|p| p.into_inner()));
        drop(layers);
        self.live.destroy()
    }

    /// Snapshot names, oldest first.
    pub fn snapshots(&self) -> Vec<String> {
        self.layers()
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
    }

    fn layers(&self) -> std::sync::RwLockReadGuard<'_, Vec<(String, Arc<ExtentVolume>)>> {
        self.layers.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The layer a request names (None: the live one), as an index into the stack.
    fn layer_index(&self, layer: Option<&str>) -> Result<Option<usize>, VolumeError> {
        match layer {
            None => Ok(None),
            Some(name) => self
                .layers()
                .iter()
                .position(|(n, _)| n == name)
                .map(Some)
                .ok_or_else(|| {
                    VolumeError::Invalid(format!(
                        "volume {} has no snapshot {name} on this node",
                        self.live.meta().volume
                    ))
                }),
        }
    }

    fn layer_size(&self, at: Option<usize>) -> u64 {
        match at {
            None => self.live.size(),
            Some(i) => self.layers()[i].1.size(),
        }
    }

    /// Reads `[offset, offset + len)` of the live volume or of a snapshot.
    pub fn read_layer(
        &self,
        layer: Option<&str>,
        offset: u64,
        len: u64,
    ) -> Result<LayeredRead, VolumeError> {
        let at = self.layer_index(layer)?;
        check_range("read", offset, len, self.layer_size(at))?;
        if len == 0 {
            return Ok(LayeredRead {
                data: Vec::new(),
                below: Vec::new(),
            });
        }
        let first = offset / BLOCK;
        let last = (offset + len).div_ceil(BLOCK);
        let count = last - first;
        let chain: Vec<Arc<ExtentVolume>> = match at {
            None => Vec::new(),
            Some(i) => self.layers()[i..].iter().map(|(_, l)| l.clone()).collect(),
        };
        let mut data = vec![0u8; (count * BLOCK) as usize];
        // None: not resolved yet; Some(true): below the region.
        let mut resolved: Vec<Option<bool>> = vec![None; count as usize];
        for layer in chain
            .iter()
            .map(|l| &**l)
            .chain(std::iter::once(&self.live))
        {
            let open: Vec<usize> = (0..count as usize)
                .filter(|i| resolved[*i].is_none())
                .collect();
            if open.is_empty() {
                break;
            }
            // Blocks past a layer's size (a snapshot of a smaller volume) are not in it.
            let layer_blocks = layer.size().div_ceil(BLOCK);
            if first >= layer_blocks {
                continue;
            }
            let upto = last.min(layer_blocks);
            let (d, states) = layer.read_states(first, upto - first)?;
            for i in open {
                if first + i as u64 >= upto {
                    continue;
                }
                match states[i] {
                    BlockState::Absent => {}
                    BlockState::Data => {
                        let r = i * BLOCK as usize..(i + 1) * BLOCK as usize;
                        data[r.clone()].copy_from_slice(&d[r]);
                        resolved[i] = Some(false);
                    }
                    BlockState::Zero => resolved[i] = Some(false),
                    BlockState::Below => resolved[i] = Some(true),
                }
            }
        }
        let below = resolved
            .iter()
            .enumerate()
            .filter(|(_, r)| **r != Some(false))
            .map(|(i, _)| first + i as u64)
            .collect();
        let skip = (offset - first * BLOCK) as usize;
        data.truncate(skip + len as usize);
        data.drain(..skip);
        Ok(LayeredRead { data, below })
    }

    /// Before blocks `[first, first + count)` of the live layer change: copies into the
    /// newest snapshot the old content of those it does not hold yet, and makes that copy
    /// durable (data and checksums synced) before the caller changes the live layer, so
    /// that no crash, power loss included, can leave the snapshot reading the new data.
    fn preserve(&self, first: u64, count: u64) -> Result<(), VolumeError> {
        let newest = match self.layers().last() {
            Some((_, l)) => l.clone(),
            None => return Ok(()),
        };
        let blocks = newest.size().div_ceil(BLOCK);
        if first >= blocks {
            return Ok(());
        }
        let count = count.min(blocks - first);
        if !newest.states(first, count)?.contains(&BlockState::Absent) {
            return Ok(());
        }
        let _c = self.cow.lock().unwrap_or_else(|p| p.into_inner());
        // The newest snapshot may have changed while this waited.
        let newest = match self.layers().last() {
            Some((_, l)) => l.clone(),
            None => return Ok(()),
        };
        let states = newest.states(first, count)?;
        let mut i = 0usize;
        while i < states.len() {
            if states[i] != BlockState::Absent {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < states.len() && states[j] == BlockState::Absent {
                j += 1;
            }
            let (d, old) = self.live.read_states(first + i as u64, (j - i) as u64)?;
            let keep: Vec<BlockState> = old
                .iter()
                .map(|s| match s {
                    BlockState::Data => BlockState::Data,
                    BlockState::Zero => BlockState::Zero,
                    BlockState::Absent | BlockState::Below => BlockState::Below,
                })
                .collect();
            newest.put_states(first + i as u64, &keep, &d)?;
            i = j;
        }
        newest.flush()
    }

    /// Takes a snapshot of the live layer as it is now (idempotent for an existing name).
    pub fn snapshot(&self, name: &str) -> Result<(), VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::Invalid(format!(
                "{name:?} is not a snapshot name"
            )));
        }
        let _c = self.cow.lock().unwrap_or_else(|p| p.into_inner());
        if self.layers().iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        let mut names = self.snapshots();
        names.push(name.to_string());
        self.add_layer(names.len() - 1, name, names)
    }

    /// Creates an empty layer at `pos` (cow lock held) and records `names`.
    fn add_layer(&self, pos: usize, name: &str, names: Vec<String>) -> Result<(), VolumeError> {
        self.live.flush()?;
        let dir = snap_dir(self.dir(), name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| VolumeError::io("remove", &dir, e))?;
        }
        let meta = self.live.meta();
        let layer = ExtentVolume::create(&dir, &meta.volume, meta.size, meta.extent_size)?;
        self.live.set_snapshots(&names)?;
        self.layers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pos, (name.to_string(), Arc::new(layer)));
        Ok(())
    }

    /// Deletes a snapshot, keeping the older one's content (idempotent).
    pub fn drop_snapshot(&self, name: &str) -> Result<(), VolumeError> {
        let _c = self.cow.lock().unwrap_or_else(|p| p.into_inner());
        self.drop_locked(name)
    }

    fn drop_locked(&self, name: &str) -> Result<(), VolumeError> {
        let layers: Vec<(String, Arc<ExtentVolume>)> = self.layers().clone();
        let Some(k) = layers.iter().position(|(n, _)| n == name) else {
            return Ok(());
        };
        if k > 0 {
            merge_into(&layers[k].1, &layers[k - 1].1)?;
            layers[k - 1].1.flush()?;
        }
        let names: Vec<String> = layers
            .iter()
            .filter(|(n, _)| n != name)
            .map(|(n, _)| n.clone())
            .collect();
        self.live.set_snapshots(&names)?;
        let gone = {
            let mut l = self.layers.write().unwrap_or_else(|p| p.into_inner());
            let i = l.iter().position(|(n, _)| n == name);
            i.map(|i| l.remove(i))
        };
        drop(layers);
        if let Some((_, layer)) = gone {
            match Arc::try_unwrap(layer) {
                Ok(l) => l.destroy()?,
                Err(_) => {
                    let dir = snap_dir(self.dir(), name);
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| VolumeError::io("delete", &dir, e))?;
                }
            }
        }
        Ok(())
    }

    /// Makes the snapshot stack exactly `names` (oldest first): snapshots not listed are
    /// dropped (their content kept by the older ones), missing ones are added empty where
    /// they belong. A replica that was away uses it to catch up with the others' stack;
    /// the extents written meanwhile are then copied layer by layer.
    pub fn set_snapshots(&self, names: &[String]) -> Result<(), VolumeError> {
        if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
            return Err(VolumeError::Invalid(format!(
                "{bad:?} is not a snapshot name"
            )));
        }
        let _c = self.cow.lock().unwrap_or_else(|p| p.into_inner());
        for extra in self.snapshots().into_iter().filter(|n| !names.contains(n)) {
            self.drop_locked(&extra)?;
        }
        for (pos, name) in names.iter().enumerate() {
            let have = self.snapshots();
            if have.get(pos) == Some(name) {
                continue;
            }
            let mut next = have.clone();
            next.insert(pos.min(have.len()), name.clone());
            self.add_layer(pos.min(have.len()), name, next)?;
        }
        Ok(())
    }

    /// Discards a range of the live layer (old content kept in the newest snapshot);
    /// `mask`: a clone's discard, which must hide the parent's blocks too.
    pub fn discard_masking(&self, offset: u64, len: u64, mask: bool) -> Result<(), VolumeError> {
        check_range("discard", offset, len, self.size())?;
        if len > 0 {
            self.preserve(
                offset / BLOCK,
                (offset + len).div_ceil(BLOCK) - offset / BLOCK,
            )?;
        }
        self.live.discard_masking(offset, len, mask)
    }

    /// Blocks `[first, first + count)` of one layer exactly as stored (for copying a
    /// replica): data and what the layer holds for each block.
    pub fn read_raw(
        &self,
        layer: Option<&str>,
        first: u64,
        count: u64,
    ) -> Result<(Vec<u8>, Vec<BlockState>), VolumeError> {
        let l = self.layer(layer)?;
        l.read_states(first, count)
    }

    /// Sets blocks of one layer exactly (see [`ExtentVolume::put_states`]).
    pub fn write_raw(
        &self,
        layer: Option<&str>,
        first: u64,
        states: &[BlockState],
        data: &[u8],
    ) -> Result<(), VolumeError> {
        let l = self.layer(layer)?;
        l.put_states(first, states, data)
    }

    fn layer(&self, layer: Option<&str>) -> Result<LayerRef<'_>, VolumeError> {
        Ok(match self.layer_index(layer)? {
            None => LayerRef::Live(&self.live),
            Some(i) => LayerRef::Snap(self.layers()[i].1.clone()),
        })
    }
}

enum LayerRef<'a> {
    Live(&'a ExtentVolume),
    Snap(Arc<ExtentVolume>),
}

impl std::ops::Deref for LayerRef<'_> {
    type Target = ExtentVolume;
    fn deref(&self) -> &ExtentVolume {
        match self {
            LayerRef::Live(l) => l,
            LayerRef::Snap(s) => s,
        }
    }
}

fn snap_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(SNAP_DIR).join(name)
}

/// Copies into `older` every block it does not hold and `newer` does.
fn merge_into(newer: &ExtentVolume, older: &ExtentVolume) -> Result<(), VolumeError> {
    let blocks = older
        .size()
        .div_ceil(BLOCK)
        .min(newer.size().div_ceil(BLOCK));
    let step = (newer.meta().extent_size / BLOCK).max(1);
    let mut b = 0;
    while b < blocks {
        let n = step.min(blocks - b);
        let theirs = newer.states(b, n)?;
        if theirs.iter().all(|s| *s == BlockState::Absent) {
            b += n;
            continue;
        }
        let mine = older.states(b, n)?;
        if mine
            .iter()
            .zip(&theirs)
            .any(|(m, t)| *m == BlockState::Absent && *t != BlockState::Absent)
        {
            let (d, theirs) = newer.read_states(b, n)?;
            // Runs of blocks to take over, one put per run.
            let mut i = 0usize;
            while i < n as usize {
                let take =
                    |i: usize| mine[i] == BlockState::Absent && theirs[i] != BlockState::Absent;
                if !take(i) {
                    i += 1;
                    continue;
                }
                let mut j = i + 1;
                while j < n as usize && take(j) {
                    j += 1;
                }
                older.put_states(
                    b + i as u64,
                    &theirs[i..j],
                    &d[i * BLOCK as usize..j * BLOCK as usize],
                )?;
                i = j;
            }
        }
        b += n;
    }
    Ok(())
}

impl Volume for Region {
    fn size(&self) -> u64 {
        self.live.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        if self.layers().is_empty() {
            return self.live.read_at(offset, buf);
        }
        let r = self.read_layer(None, offset, buf.len() as u64)?;
        buf.copy_from_slice(&r.data);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), VolumeError> {
        check_range("write", offset, data.len() as u64, self.size())?;
        if !data.is_empty() {
            self.preserve(
                offset / BLOCK,
                (offset + data.len() as u64).div_ceil(BLOCK) - offset / BLOCK,
            )?;
        }
        self.live.write_at(offset, data)
    }

    /// Snapshot layers first: what they preserved must be on disk before the live
    /// writes that replaced it are.
    fn flush(&self) -> Result<(), VolumeError> {
        let layers: Vec<Arc<ExtentVolume>> = self.layers().iter().map(|(_, l)| l.clone()).collect();
        for l in layers {
            l.flush()?;
        }
        self.live.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        self.discard_masking(offset, len, false)
    }

    fn allocated(&self) -> Option<u64> {
        let mut total = self.live.allocated()?;
        for (_, l) in self.layers().iter() {
            total += l.allocated().unwrap_or(0);
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests;
