//! The local extent store: one volume's copy on one node (a "downstairs" region).
//!
//! A region directory holds `region.json` (volume, size, extent size, generation; replaced
//! atomically) and one sparse file per extent that was ever written (thin provisioning):
//!
//! ```text
//! extent-NNNNNN.dat: [ data: extent_size bytes ][ checksums: 16 bytes per block ][ trailer: 32 bytes ]
//! ```
//!
//! Each 4 KiB block has two checksum slots (A/B, CRC-32 tagged valid). A write puts the new
//! checksum in the slot that does not describe the data on disk and writes the data; the
//! changed slots reach the file at the next flush, before its sync (one write per extent,
//! not one per guest write), so a block torn by a crash still matches one slot or is found
//! in a dirty extent. A read
//! verifies every block against its slots: data matching neither (and not an unwritten
//! hole) is reported as [`VolumeError::Corrupt`], never returned.
//!
//! The trailer holds `dirty`, the generation and the flush number. The first write to an
//! extent after a flush marks it dirty on disk (one sync per extent per flush interval);
//! a flush syncs the dirty extents, then clears their flag. On open, blocks of dirty
//! extents that match neither slot were being written when the node stopped (writes that
//! no flush covered, which a disk may lose): their checksums are recomputed and the
//! count is reported by [`ExtentVolume::torn_blocks_repaired`]. A replicated volume mends
//! such extents from another replica instead.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::file::punch_hole;
use super::{check_range, check_size, Volume, VolumeError, SECTOR};
use disk::{read_trailer, sync_dir, write_meta, write_slots, write_trailer};
use open::OpenExtents;

/// Checksummed unit inside an extent.
pub const BLOCK: u64 = 4096;
/// Default extent size (a power of two, a multiple of [`BLOCK`]).
pub const DEFAULT_EXTENT_SIZE: u64 = 64 << 20;
const SLOT_BYTES: u64 = 16;
const TRAILER_BYTES: u64 = 32;
const TRAILER_MAGIC: &[u8; 8] = b"STRXTNT1";
const VALID: u64 = 1 << 32;
/// Slot markers for blocks with no data on disk that are nevertheless present in this
/// layer (see [`BlockState`]): they read as zeros, or from below every layer.
const MARK_ZERO: u64 = 1 << 33;
const MARK_BELOW: u64 = 1 << 34;
const REGION_FILE: &str = "region.json";
const FORMAT: u32 = 1;
/// What `Extent::active` knows about a block: not checked yet, slot A or B describes the
/// data on disk, or it is an unwritten hole.
const UNKNOWN: u8 = 0;
const SLOT_A: u8 = 1;
const SLOT_B: u8 = 2;
const HOLE: u8 = 3;

fn active_code(m: Option<u8>) -> u8 {
    match m {
        Some(0) => SLOT_A,
        Some(_) => SLOT_B,
        None => HOLE,
    }
}

/// What one layer holds for a block (snapshots stack layers, see `super::region`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockState {
    /// Never written here: the block is whatever the layers below (or the volume's parent)
    /// hold, zeros for a plain volume.
    Absent = 0,
    /// Present and zero (discarded).
    Zero = 1,
    /// Present as "whatever lies below every layer of this region": zeros, or the parent
    /// volume's block for a clone (a snapshot taken of a block the volume never wrote).
    Below = 2,
    /// Present with data.
    Data = 3,
}

impl BlockState {
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => BlockState::Absent,
            1 => BlockState::Zero,
            2 => BlockState::Below,
            3 => BlockState::Data,
            _ => return None,
        })
    }

    fn of(slots: [u64; 2]) -> Self {
        if slots == [0, 0] {
            BlockState::Absent
        } else if slots[0] == MARK_ZERO {
            BlockState::Zero
        } else if slots[0] == MARK_BELOW {
            BlockState::Below
        } else {
            BlockState::Data
        }
    }
}

fn is_marker(slot: u64) -> bool {
    slot == MARK_ZERO || slot == MARK_BELOW
}

/// What `region.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionMeta {
    pub format: u32,
    pub volume: String,
    pub size: u64,
    pub extent_size: u64,
    /// The highest generation a writer has presented (fencing, see the replica server).
    pub generation: u64,
    /// Snapshot layers stacked on this region, oldest first (see `super::region`).
    #[serde(default)]
    pub snapshots: Vec<String>,
}

struct Extent {
    file: File,
    /// Per block: the two checksum slots, and which one matches the data (None: unknown).
    slots: Vec<[u64; 2]>,
    active: Vec<AtomicU8>,
    dirty: bool,
    /// Blocks `[from, to)` whose slots changed in memory since they were last written to
    /// the file (written at the next flush).
    unsaved: Option<(usize, usize)>,
}

impl Extent {
    fn note_unsaved(&mut self, from: usize, to: usize) {
        self.unsaved = Some(match self.unsaved {
            Some((a, b)) => (a.min(from), b.max(to)),
            None => (from, to),
        });
    }

    /// Writes the slots changed since the last save (before the flush's sync).
    fn save_slots(&mut self, extent_size: u64) -> std::io::Result<()> {
        let Some((from, to)) = self.unsaved else {
            return Ok(());
        };
        let mut table = Vec::with_capacity((to - from) * SLOT_BYTES as usize);
        for s in &self.slots[from..to] {
            table.extend_from_slice(&s[0].to_le_bytes());
            table.extend_from_slice(&s[1].to_le_bytes());
        }
        self.file
            .write_all_at(&table, extent_size + from as u64 * SLOT_BYTES)?;
        self.unsaved = None;
        Ok(())
    }
}

/// A region on local disk, usable directly as a single-copy [`Volume`].
pub struct ExtentVolume {
    dir: PathBuf,
    meta: Mutex<RegionMeta>,
    extents: RwLock<OpenExtents>,
    flushes: AtomicU64,
    torn_repaired: u64,
}

fn crc(data: &[u8]) -> u64 {
    VALID | u64::from(crc32fast::hash(data))
}

fn extent_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("extent-{n:06}.dat"))
}

impl ExtentVolume {
    /// Creates an empty region in `dir` (which must not hold one already).
    pub fn create(
        dir: &Path,
        volume: &str,
        size: u64,
        extent_size: u64,
    ) -> Result<Self, VolumeError> {
        check_size(size)?;
        if !extent_size.is_power_of_two() || extent_size < BLOCK {
            return Err(VolumeError::Invalid(format!(
                "extent size {extent_size} must be a power of two of at least {BLOCK} bytes"
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| VolumeError::io("create", dir, e))?;
        if dir.join(REGION_FILE).exists() {
            return Err(VolumeError::Invalid(format!(
                "{} already holds a region",
                dir.display()
            )));
        }
        let meta = RegionMeta {
            format: FORMAT,
            volume: volume.to_string(),
            size,
            extent_size,
            generation: 0,
            snapshots: Vec::new(),
        };
        write_meta(dir, &meta)?;
        Ok(ExtentVolume {
            dir: dir.to_path_buf(),
            meta: Mutex::new(meta),
            extents: RwLock::new(OpenExtents::new()),
            flushes: AtomicU64::new(0),
            torn_repaired: 0,
        })
    }

    /// Opens an existing region, recovering dirty extents (see the module documentation).
    pub fn open(dir: &Path) -> Result<Self, VolumeError> {
        let path = dir.join(REGION_FILE);
        let text = std::fs::read(&path).map_err(|e| VolumeError::io("open", &path, e))?;
        let meta: RegionMeta = serde_json::from_slice(&text).map_err(|e| {
            VolumeError::Invalid(format!("{}: not a region description: {e}", path.display()))
        })?;
        if meta.format != FORMAT {
            return Err(VolumeError::Invalid(format!(
                "{}: format {} is not supported (this version reads {FORMAT})",
                path.display(),
                meta.format
            )));
        }
        check_size(meta.size)?;
        if !meta.extent_size.is_power_of_two() || meta.extent_size < BLOCK {
            return Err(VolumeError::Invalid(format!(
                "{}: bad extent size {}",
                path.display(),
                meta.extent_size
            )));
        }
        let mut v = ExtentVolume {
            dir: dir.to_path_buf(),
            meta: Mutex::new(meta),
            extents: RwLock::new(OpenExtents::new()),
            flushes: AtomicU64::new(0),
            torn_repaired: 0,
        };
        let count = v.extent_count();
        let mut repaired = 0;
        let mut flushes = 0;
        for n in 0..count {
            if !extent_path(dir, n).exists() {
                continue;
            }
            let mut e = v.load_extent(n)?;
            flushes = flushes.max(read_trailer(&e.file, v.extent_size())?.2);
            if e.dirty {
                repaired += v.recover_extent(n, &mut e)?;
            }
            v.extents
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .insert(n, Arc::new(RwLock::new(e)));
        }
        v.torn_repaired = repaired;
        v.flushes.store(flushes, Ordering::Relaxed);
        if repaired > 0 {
            tracing::warn!(region = %dir.display(), blocks = repaired, "recomputed checksums of blocks torn by an unclean stop");
        }
        Ok(v)
    }

    pub fn meta(&self) -> RegionMeta {
        self.meta.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Extent files this region holds open now.
    pub fn open_extents(&self) -> usize {
        self.extents.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Bounds the extent files this region keeps open (default [`open::PER_REGION`]).
    pub fn set_open_limit(&self, extents: usize) {
        self.extents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set_cap(extents);
    }

    /// Blocks whose checksums were recomputed at open (torn by an unclean stop).
    pub fn torn_blocks_repaired(&self) -> u64 {
        self.torn_repaired
    }

    /// Raises the generation (never lowers it); persisted before it returns.
    pub fn set_generation(&self, generation: u64) -> Result<u64, VolumeError> {
        let mut m = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        if generation > m.generation {
            let mut next = m.clone();
            next.generation = generation;
            write_meta(&self.dir, &next)?;
            *m = next;
        }
        Ok(m.generation)
    }

    /// Records the region's snapshot layers (persisted before it returns).
    pub fn set_snapshots(&self, names: &[String]) -> Result<(), VolumeError> {
        let mut m = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = m.clone();
        next.snapshots = names.to_vec();
        write_meta(&self.dir, &next)?;
        *m = next;
        Ok(())
    }

    /// Grows the volume (never shrinks it).
    pub fn grow(&self, size: u64) -> Result<(), VolumeError> {
        check_size(size)?;
        let mut m = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        if size < m.size {
            return Err(VolumeError::Invalid(format!(
                "cannot shrink a volume from {} to {size} bytes",
                m.size
            )));
        }
        let mut next = m.clone();
        next.size = size;
        write_meta(&self.dir, &next)?;
        *m = next;
        Ok(())
    }

    /// Deletes the region and frees its space.
    pub fn destroy(self) -> Result<(), VolumeError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(|e| VolumeError::io("delete", &dir, e))
    }

    fn extent_size(&self) -> u64 {
        self.meta
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extent_size
    }

    fn generation(&self) -> u64 {
        self.meta
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }

    /// Extents written since the last flush (their dirty flag is set): after a writer
    /// stopped without flushing, where replicas may differ.
    pub fn dirty_extents(&self) -> Result<Vec<u64>, VolumeError> {
        let mut out = Vec::new();
        for n in 0..self.extent_count() {
            let loaded = self
                .extents
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .peek(n)
                .cloned();
            let dirty = match loaded {
                Some(e) => e.read().unwrap_or_else(|p| p.into_inner()).dirty,
                None => {
                    let path = extent_path(&self.dir, n);
                    match File::open(&path) {
                        Ok(f) => read_trailer(&f, self.extent_size())?.1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                        Err(e) => return Err(VolumeError::io("open", &path, e)),
                    }
                }
            };
            if dirty {
                out.push(n);
            }
        }
        Ok(out)
    }

    fn extent_count(&self) -> u64 {
        let m = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        m.size.div_ceil(m.extent_size)
    }

    fn load_extent(&self, n: u64) -> Result<Extent, VolumeError> {
        let path = extent_path(&self.dir, n);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| VolumeError::io("open", &path, e))?;
        let es = self.extent_size();
        let blocks = es / BLOCK;
        let mut table = vec![0u8; (blocks * SLOT_BYTES) as usize];
        file.read_exact_at(&mut table, es)
            .map_err(|e| VolumeError::io("read checksums of", &path, e))?;
        let slots = table
            .chunks(SLOT_BYTES as usize)
            .map(|c| {
                let a = u64::from_le_bytes(c[..8].try_into().unwrap_or_default());
                let b = u64::from_le_bytes(c[8..].try_into().unwrap_or_default());
                [a, b]
            })
            .collect();
        let (magic_ok, dirty, _) = read_trailer(&file, es)?;
        if !magic_ok {
            return Err(VolumeError::Corrupt {
                what: path.display().to_string(),
                block: 0,
                detail: "the extent trailer is missing or damaged".into(),
            });
        }
        Ok(Extent {
            file,
            slots,
            active: (0..blocks).map(|_| AtomicU8::new(UNKNOWN)).collect(),
            dirty,
            unsaved: None,
        })
    }

    /// The extent, opened or created (`create`) on first use; None for an unwritten one.
    fn extent(&self, n: u64, create: bool) -> Result<Option<Arc<RwLock<Extent>>>, VolumeError> {
        if let Some(e) = self
            .extents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(n)
        {
            return Ok(Some(e));
        }
        let mut map = self.extents.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get(n) {
            return Ok(Some(e));
        }
        let path = extent_path(&self.dir, n);
        if path.exists() {
            let ext = Arc::new(RwLock::new(self.load_extent(n)?));
            map.insert(n, ext.clone());
            return Ok(Some(ext));
        }
        if !create {
            return Ok(None);
        }
        let es = self.extent_size();
        let blocks = es / BLOCK;
        let tmp = self.dir.join(format!(".extent-{n:06}.new"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| VolumeError::io("create", &tmp, e))?;
        let len = es + blocks * SLOT_BYTES + TRAILER_BYTES;
        file.set_len(len)
            .map_err(|e| VolumeError::io("size", &tmp, e))?;
        write_trailer(&file, es, true, 0, self.flushes.load(Ordering::Relaxed))
            .map_err(|e| VolumeError::io("write trailer of", &tmp, e))?;
        file.sync_all()
            .map_err(|e| VolumeError::io("sync", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| VolumeError::io("rename", &path, e))?;
        sync_dir(&self.dir)?;
        let ext = Arc::new(RwLock::new(Extent {
            file,
            slots: vec![[0, 0]; blocks as usize],
            active: (0..blocks).map(|_| AtomicU8::new(UNKNOWN)).collect(),
            dirty: true,
            unsaved: None,
        }));
        map.insert(n, ext.clone());
        Ok(Some(ext))
    }

    /// Recomputes the checksums of blocks in a dirty extent that match neither slot.
    fn recover_extent(&self, n: u64, e: &mut Extent) -> Result<u64, VolumeError> {
        let mut repaired = 0;
        let mut buf = vec![0u8; BLOCK as usize];
        let path = extent_path(&self.dir, n);
        for b in 0..e.slots.len() {
            e.file
                .read_exact_at(&mut buf, b as u64 * BLOCK)
                .map_err(|x| VolumeError::io("read", &path, x))?;
            if matches_block(&buf, e.slots[b]).is_none() {
                e.slots[b] = [crc(&buf), 0];
                write_slots(&e.file, self.extent_size(), b, e.slots[b], &path)?;
                repaired += 1;
            }
        }
        e.file
            .sync_data()
            .map_err(|x| VolumeError::io("sync", &path, x))?;
        Ok(repaired)
    }

    /// Splits `[offset, offset+len)` into (extent, offset in extent, length) pieces.
    fn pieces(&self, offset: u64, len: u64) -> Vec<(u64, u64, u64)> {
        let es = self.extent_size();
        let mut out = Vec::new();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = pos / es;
            let within = pos % es;
            let take = (es - within).min(end - pos);
            out.push((n, within, take));
            pos += take;
        }
        out
    }

    /// Whether `[offset, offset + len)` lies only in extents that are open and already
    /// dirty, with no lock held on them right now: a write there changes memory (the page
    /// cache) only, with no extent to create and no dirty flag to sync, and a read opens
    /// nothing. Never blocks.
    pub fn is_hot(&self, offset: u64, len: u64) -> bool {
        let Ok(map) = self.extents.try_read() else {
            return false;
        };
        self.pieces(offset, len).iter().all(|(n, _, _)| {
            map.peek(*n)
                .is_some_and(|e| e.try_read().is_ok_and(|e| e.dirty))
        })
    }

    fn mark_dirty(&self, e: &mut Extent, path: &Path) -> Result<(), VolumeError> {
        if e.dirty {
            return Ok(());
        }
        let es = self.extent_size();
        let generation = self.generation();
        write_trailer(
            &e.file,
            es,
            true,
            generation,
            self.flushes.load(Ordering::Relaxed),
        )
        .and_then(|_| e.file.sync_data())
        .map_err(|x| VolumeError::io("mark dirty", path, x))?;
        e.dirty = true;
        Ok(())
    }

    /// Reads and verifies blocks `[first, first + count)` of an extent (shared lock is
    /// enough: what a read learns about the slots is recorded atomically).
    fn read_blocks(
        &self,
        n: u64,
        e: &Extent,
        first: u64,
        count: u64,
    ) -> Result<Vec<u8>, VolumeError> {
        let path = extent_path(&self.dir, n);
        let mut data = vec![0u8; (count * BLOCK) as usize];
        e.file
            .read_exact_at(&mut data, first * BLOCK)
            .map_err(|x| VolumeError::io("read", &path, x))?;
        for (i, block) in data.chunks(BLOCK as usize).enumerate() {
            let b = first as usize + i;
            match matches_block(block, e.slots[b]) {
                Some(m) => e.active[b].store(active_code(m), Ordering::Relaxed),
                None => {
                    return Err(VolumeError::Corrupt {
                        what: format!("volume {} extent {n}", self.meta().volume),
                        block: b as u64,
                        detail: "the data matches neither stored checksum".into(),
                    })
                }
            }
        }
        Ok(data)
    }

    fn read_piece(&self, n: u64, within: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        let Some(ext) = self.extent(n, false)? else {
            buf.fill(0);
            return Ok(());
        };
        let first = within / BLOCK;
        let last = (within + buf.len() as u64).div_ceil(BLOCK);
        let e = ext.read().unwrap_or_else(|p| p.into_inner());
        let data = self.read_blocks(n, &e, first, last - first)?;
        let skip = (within - first * BLOCK) as usize;
        buf.copy_from_slice(&data[skip..skip + buf.len()]);
        Ok(())
    }

    fn write_piece(&self, n: u64, within: u64, data: &[u8]) -> Result<(), VolumeError> {
        let ext = self
            .extent(n, true)?
            .ok_or_else(|| VolumeError::Invalid("extent vanished".into()))?;
        let path = extent_path(&self.dir, n);
        let mut e = ext.write().unwrap_or_else(|p| p.into_inner());
        self.mark_dirty(&mut e, &path)?;
        let first = within / BLOCK;
        let last = (within + data.len() as u64).div_ceil(BLOCK);
        let count = (last - first) as usize;
        let skip = (within - first * BLOCK) as usize;
        let end = skip + data.len();
        let merged;
        let blocks: &[u8] = if skip == 0 && end.is_multiple_of(BLOCK as usize) {
            // Whole blocks (the common case): written as they came.
            data
        } else {
            // Read-modify-write of partly covered blocks at either end, under the extent
            // lock.
            let mut b = vec![0u8; count * BLOCK as usize];
            if skip != 0 {
                let old = self.read_blocks(n, &e, first, 1)?;
                b[..BLOCK as usize].copy_from_slice(&old);
            }
            if !end.is_multiple_of(BLOCK as usize) && (last - 1 > first || skip == 0) {
                let old = self.read_blocks(n, &e, last - 1, 1)?;
                let at = b.len() - BLOCK as usize;
                b[at..].copy_from_slice(&old);
            }
            b[skip..end].copy_from_slice(data);
            merged = b;
            &merged
        };
        // Which slot describes each block on disk now: known, a never-written hole, or
        // (once per block after open) found by reading the range once.
        let mut current: Vec<u8> = (first as usize..last as usize)
            .map(|b| match e.active[b].load(Ordering::Relaxed) {
                UNKNOWN if e.slots[b] == [0, 0] || is_marker(e.slots[b][0]) => HOLE,
                a => a,
            })
            .collect();
        if current.contains(&UNKNOWN) {
            let mut cur = vec![0u8; count * BLOCK as usize];
            e.file
                .read_exact_at(&mut cur, first * BLOCK)
                .map_err(|x| VolumeError::io("read", &path, x))?;
            for (i, a) in current.iter_mut().enumerate() {
                if *a == UNKNOWN {
                    let blk = &cur[i * BLOCK as usize..(i + 1) * BLOCK as usize];
                    *a = matches_block(blk, e.slots[first as usize + i])
                        .map(active_code)
                        .unwrap_or(HOLE);
                }
            }
        }
        // The new checksum goes into the slot that does not describe the data on disk.
        // The slots reach the file at the next flush, before its sync: until then the
        // extent is marked dirty on disk, and after a crash the blocks of a dirty extent
        // that match neither stored slot get their checksums recomputed at open.
        let mut chosen = Vec::with_capacity(count);
        for (i, block) in blocks.chunks(BLOCK as usize).enumerate() {
            let b = first as usize + i;
            let slot = if current[i] == SLOT_A { 1 } else { 0 };
            if is_marker(e.slots[b][0]) {
                e.slots[b] = [0, 0];
            }
            e.slots[b][slot] = crc(block);
            chosen.push(if slot == 0 { SLOT_A } else { SLOT_B });
        }
        e.note_unsaved(first as usize, last as usize);
        e.file
            .write_all_at(blocks, first * BLOCK)
            .map_err(|x| VolumeError::io("write", &path, x))?;
        for (i, a) in chosen.into_iter().enumerate() {
            e.active[first as usize + i].store(a, Ordering::Relaxed);
        }
        Ok(())
    }

    fn discard_piece(&self, n: u64, within: u64, len: u64, mask: bool) -> Result<(), VolumeError> {
        if !mask && self.extent(n, false)?.is_none() {
            return Ok(());
        }
        // Partial blocks at either end are zeroed; whole blocks are unmapped.
        let start_full = within.div_ceil(BLOCK) * BLOCK;
        let end_full = ((within + len) / BLOCK) * BLOCK;
        if start_full >= end_full {
            return self.write_piece(n, within, &vec![0u8; len as usize]);
        }
        if within < start_full {
            self.write_piece(n, within, &vec![0u8; (start_full - within) as usize])?;
        }
        if within + len > end_full {
            self.write_piece(n, end_full, &vec![0u8; (within + len - end_full) as usize])?;
        }
        let ext = self
            .extent(n, true)?
            .ok_or_else(|| VolumeError::Invalid("extent vanished".into()))?;
        let path = extent_path(&self.dir, n);
        let es = self.extent_size();
        let mut e = ext.write().unwrap_or_else(|p| p.into_inner());
        self.mark_dirty(&mut e, &path)?;
        let first = start_full / BLOCK;
        let count = (end_full - start_full) / BLOCK;
        self.unmap_locked(&mut e, first, count, MARK_ZERO, &path, es)
    }

    /// Drops the data of blocks `[first, first + count)` of an extent (write-locked) and
    /// records `marker` for them (0: absent).
    #[allow(clippy::too_many_arguments)]
    fn unmap_locked(
        &self,
        e: &mut Extent,
        first: u64,
        count: u64,
        marker: u64,
        path: &Path,
        es: u64,
    ) -> Result<(), VolumeError> {
        let mut table = Vec::with_capacity((count * SLOT_BYTES) as usize);
        for b in first as usize..(first + count) as usize {
            e.slots[b] = [marker, 0];
            e.active[b].store(HOLE, Ordering::Relaxed);
            table.extend_from_slice(&marker.to_le_bytes());
            table.extend_from_slice(&0u64.to_le_bytes());
        }
        e.file
            .write_all_at(&table, es + first * SLOT_BYTES)
            .map_err(|x| VolumeError::io("clear checksums of", path, x))?;
        punch_hole(&e.file, first * BLOCK, count * BLOCK)
            .map_err(|x| VolumeError::io("discard", path, x))?;
        Ok(())
    }

    /// Discards a range; with `mask`, also where this layer holds nothing, so that the
    /// range reads as zeros instead of falling through to what lies below (a clone's
    /// parent).
    pub fn discard_masking(&self, offset: u64, len: u64, mask: bool) -> Result<(), VolumeError> {
        check_range("discard", offset, len, self.size())?;
        for (n, within, l) in self.pieces(offset, len) {
            self.discard_piece(n, within, l, mask)?;
        }
        Ok(())
    }

    /// Reads whole blocks `[first, first + count)` (region-relative block numbers; they may
    /// reach past the size up to the last extent's end) with what this layer holds for
    /// each. Blocks not held here read as zeros.
    pub fn read_states(
        &self,
        first: u64,
        count: u64,
    ) -> Result<(Vec<u8>, Vec<BlockState>), VolumeError> {
        let es = self.extent_size();
        let per = es / BLOCK;
        let mut data = vec![0u8; (count * BLOCK) as usize];
        let mut states = vec![BlockState::Absent; count as usize];
        let mut b = first;
        while b < first + count {
            let n = b / per;
            let within = b % per;
            let take = (per - within).min(first + count - b);
            let at = (b - first) as usize;
            if n < self.extent_count() {
                if let Some(ext) = self.extent(n, false)? {
                    let e = ext.read().unwrap_or_else(|p| p.into_inner());
                    let d = self.read_blocks(n, &e, within, take)?;
                    data[at * BLOCK as usize..(at + take as usize) * BLOCK as usize]
                        .copy_from_slice(&d);
                    for i in 0..take as usize {
                        states[at + i] = BlockState::of(e.slots[within as usize + i]);
                    }
                }
            }
            b += take;
        }
        Ok((data, states))
    }

    /// What this layer holds for blocks `[first, first + count)`, without reading data.
    pub fn states(&self, first: u64, count: u64) -> Result<Vec<BlockState>, VolumeError> {
        let per = self.extent_size() / BLOCK;
        let mut out = vec![BlockState::Absent; count as usize];
        let mut b = first;
        while b < first + count {
            let n = b / per;
            let within = b % per;
            let take = (per - within).min(first + count - b);
            if n < self.extent_count() {
                if let Some(ext) = self.extent(n, false)? {
                    let e = ext.read().unwrap_or_else(|p| p.into_inner());
                    for i in 0..take as usize {
                        out[(b - first) as usize + i] =
                            BlockState::of(e.slots[within as usize + i]);
                    }
                }
            }
            b += take;
        }
        Ok(out)
    }

    /// Sets whole blocks `[first, first + states.len())` exactly: data where the state is
    /// `Data` (from `data`, one block per state), otherwise the state itself with no data
    /// kept (`Absent` makes the block fall through to the layers below again).
    pub fn put_states(
        &self,
        first: u64,
        states: &[BlockState],
        data: &[u8],
    ) -> Result<(), VolumeError> {
        if data.len() as u64 != states.len() as u64 * BLOCK {
            return Err(VolumeError::Invalid(format!(
                "{} bytes of data for {} blocks",
                data.len(),
                states.len()
            )));
        }
        let size_blocks = self.size().div_ceil(BLOCK);
        if first + states.len() as u64 > size_blocks {
            return Err(VolumeError::OutOfRange {
                op: "write",
                offset: first * BLOCK,
                len: states.len() as u64 * BLOCK,
                size: self.size(),
            });
        }
        let per = self.extent_size() / BLOCK;
        let es = self.extent_size();
        let mut i = 0usize;
        while i < states.len() {
            // One run of equal states inside one extent at a time.
            let b = first + i as u64;
            let n = b / per;
            let mut j = i + 1;
            while j < states.len() && states[j] == states[i] && (first + j as u64) / per == n {
                j += 1;
            }
            let within = b % per;
            let count = (j - i) as u64;
            match states[i] {
                BlockState::Data => {
                    let bytes = &data[i * BLOCK as usize..j * BLOCK as usize];
                    self.write_piece(n, within * BLOCK, bytes)?;
                }
                s => {
                    let marker = match s {
                        BlockState::Zero => MARK_ZERO,
                        BlockState::Below => MARK_BELOW,
                        _ => 0,
                    };
                    let exists = self.extent(n, false)?.is_some();
                    if exists || marker != 0 {
                        let ext = self
                            .extent(n, true)?
                            .ok_or_else(|| VolumeError::Invalid("extent vanished".into()))?;
                        let path = extent_path(&self.dir, n);
                        let mut e = ext.write().unwrap_or_else(|p| p.into_inner());
                        self.mark_dirty(&mut e, &path)?;
                        self.unmap_locked(&mut e, within, count, marker, &path, es)?;
                    }
                }
            }
            i = j;
        }
        Ok(())
    }
}

impl Volume for ExtentVolume {
    fn size(&self) -> u64 {
        self.meta.lock().unwrap_or_else(|p| p.into_inner()).size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        check_range("read", offset, buf.len() as u64, self.size())?;
        let mut done = 0usize;
        for (n, within, len) in self.pieces(offset, buf.len() as u64) {
            self.read_piece(n, within, &mut buf[done..done + len as usize])?;
            done += len as usize;
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), VolumeError> {
        check_range("write", offset, data.len() as u64, self.size())?;
        let mut done = 0usize;
        for (n, within, len) in self.pieces(offset, data.len() as u64) {
            self.write_piece(n, within, &data[done..done + len as usize])?;
            done += len as usize;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), VolumeError> {
        let extents: Vec<(u64, Arc<RwLock<Extent>>)> =
            self.extents.read().unwrap_or_else(|p| p.into_inner()).all();
        let flush_no = self.flushes.fetch_add(1, Ordering::Relaxed) + 1;
        let es = self.extent_size();
        let generation = self.generation();
        for (n, ext) in extents {
            let mut e = ext.write().unwrap_or_else(|p| p.into_inner());
            if !e.dirty {
                continue;
            }
            let path = extent_path(&self.dir, n);
            e.save_slots(es)
                .and_then(|_| e.file.sync_data())
                .and_then(|_| write_trailer(&e.file, es, false, generation, flush_no))
                .and_then(|_| e.file.sync_data())
                .map_err(|x| VolumeError::io("flush", &path, x))?;
            e.dirty = false;
        }
        // Now clean, idle extents beyond the bound can be closed.
        self.extents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .trim(None);
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        self.discard_masking(offset, len, false)
    }

    fn allocated(&self) -> Option<u64> {
        let count = self.extent_count();
        let mut total = 0;
        for n in 0..count {
            if let Ok(m) = std::fs::metadata(extent_path(&self.dir, n)) {
                total += m.blocks() * 512;
            }
        }
        Some(total)
    }
}

/// Which slot describes `block` (Some(None): an unwritten hole of zeros, or a block that
/// only carries a marker), or None.
fn matches_block(block: &[u8], slots: [u64; 2]) -> Option<Option<u8>> {
    if slots == [0, 0] || (is_marker(slots[0]) && slots[1] == 0) {
        return block.iter().all(|b| *b == 0).then_some(None);
    }
    let c = crc(block);
    if slots[0] == c {
        Some(Some(0))
    } else if slots[1] == c {
        Some(Some(1))
    } else {
        None
    }
}

/// Sector-aligned sizes are what the volume API takes; extents are at least one block.
const _: () = assert!(BLOCK.is_multiple_of(SECTOR));

mod disk;
pub mod open;
#[cfg(test)]
mod tests;
