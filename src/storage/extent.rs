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
//! checksum in the slot that does not describe the data on disk, then writes the data, so
//! a block torn by a crash still matches one slot or is found in a dirty extent. A read
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

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::file::punch_hole;
use super::{check_range, check_size, Volume, VolumeError, SECTOR};

/// Checksummed unit inside an extent.
pub const BLOCK: u64 = 4096;
/// Default extent size (a power of two, a multiple of [`BLOCK`]).
pub const DEFAULT_EXTENT_SIZE: u64 = 64 << 20;
const SLOT_BYTES: u64 = 16;
const TRAILER_BYTES: u64 = 32;
const TRAILER_MAGIC: &[u8; 8] = b"STRXTNT1";
const VALID: u64 = 1 << 32;
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

/// What `region.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionMeta {
    pub format: u32,
    pub volume: String,
    pub size: u64,
    pub extent_size: u64,
    /// The highest generation a writer has presented (fencing, see the replica server).
    pub generation: u64,
}

struct Extent {
    file: File,
    /// Per block: the two checksum slots, and which one matches the data (None: unknown).
    slots: Vec<[u64; 2]>,
    active: Vec<AtomicU8>,
    dirty: bool,
}

/// A region on local disk, usable directly as a single-copy [`Volume`].
pub struct ExtentVolume {
    dir: PathBuf,
    meta: Mutex<RegionMeta>,
    extents: RwLock<HashMap<u64, Arc<RwLock<Extent>>>>,
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
        };
        write_meta(dir, &meta)?;
        Ok(ExtentVolume {
            dir: dir.to_path_buf(),
            meta: Mutex::new(meta),
            extents: RwLock::new(HashMap::new()),
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
            extents: RwLock::new(HashMap::new()),
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
        })
    }

    /// The extent, opened or created (`create`) on first use; None for an unwritten one.
    fn extent(&self, n: u64, create: bool) -> Result<Option<Arc<RwLock<Extent>>>, VolumeError> {
        if let Some(e) = self
            .extents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&n)
        {
            return Ok(Some(e.clone()));
        }
        let mut map = self.extents.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get(&n) {
            return Ok(Some(e.clone()));
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
        let es = self.extent_size();
        let mut e = ext.write().unwrap_or_else(|p| p.into_inner());
        self.mark_dirty(&mut e, &path)?;
        let first = within / BLOCK;
        let last = (within + data.len() as u64).div_ceil(BLOCK);
        let count = (last - first) as usize;
        let mut blocks = vec![0u8; count * BLOCK as usize];
        let skip = (within - first * BLOCK) as usize;
        // Read-modify-write of partly covered blocks at either end, under the extent lock.
        if skip != 0 {
            let old = self.read_blocks(n, &e, first, 1)?;
            blocks[..BLOCK as usize].copy_from_slice(&old);
        }
        let end = skip + data.len();
        if !end.is_multiple_of(BLOCK as usize) && (last - 1 > first || skip == 0) {
            let old = self.read_blocks(n, &e, last - 1, 1)?;
            let at = blocks.len() - BLOCK as usize;
            blocks[at..].copy_from_slice(&old);
        }
        blocks[skip..skip + data.len()].copy_from_slice(data);
        // Which slot describes each block on disk now: known, a never-written hole, or
        // (once per block after open) found by reading the range once.
        let mut current: Vec<u8> = (first as usize..last as usize)
            .map(|b| match e.active[b].load(Ordering::Relaxed) {
                UNKNOWN if e.slots[b] == [0, 0] => HOLE,
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
        // The new checksum goes into the slot that does not describe the data on disk;
        // all of the range's slots are written at once, before the data.
        let mut table = Vec::with_capacity(count * SLOT_BYTES as usize);
        let mut chosen = Vec::with_capacity(count);
        for (i, block) in blocks.chunks(BLOCK as usize).enumerate() {
            let b = first as usize + i;
            let slot = if current[i] == SLOT_A { 1 } else { 0 };
            e.slots[b][slot] = crc(block);
            table.extend_from_slice(&e.slots[b][0].to_le_bytes());
            table.extend_from_slice(&e.slots[b][1].to_le_bytes());
            chosen.push(if slot == 0 { SLOT_A } else { SLOT_B });
        }
        e.file
            .write_all_at(&table, es + first * SLOT_BYTES)
            .map_err(|x| VolumeError::io("write checksums of", &path, x))?;
        e.file
            .write_all_at(&blocks, first * BLOCK)
            .map_err(|x| VolumeError::io("write", &path, x))?;
        for (i, a) in chosen.into_iter().enumerate() {
            e.active[first as usize + i].store(a, Ordering::Relaxed);
        }
        Ok(())
    }

    fn discard_piece(&self, n: u64, within: u64, len: u64) -> Result<(), VolumeError> {
        if self.extent(n, false)?.is_none() {
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
            .extent(n, false)?
            .ok_or_else(|| VolumeError::Invalid("extent vanished".into()))?;
        let path = extent_path(&self.dir, n);
        let es = self.extent_size();
        let mut e = ext.write().unwrap_or_else(|p| p.into_inner());
        self.mark_dirty(&mut e, &path)?;
        for b in (start_full / BLOCK) as usize..(end_full / BLOCK) as usize {
            e.slots[b] = [0, 0];
            e.active[b].store(HOLE, Ordering::Relaxed);
        }
        let first = start_full / BLOCK;
        let count = (end_full - start_full) / BLOCK;
        let zeros = vec![0u8; (count * SLOT_BYTES) as usize];
        e.file
            .write_all_at(&zeros, es + first * SLOT_BYTES)
            .map_err(|x| VolumeError::io("clear checksums of", &path, x))?;
        punch_hole(&e.file, start_full, end_full - start_full)
            .map_err(|x| VolumeError::io("discard", &path, x))?;
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
        let extents: Vec<(u64, Arc<RwLock<Extent>>)> = self
            .extents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, e)| (*n, e.clone()))
            .collect();
        let flush_no = self.flushes.fetch_add(1, Ordering::Relaxed) + 1;
        let es = self.extent_size();
        let generation = self.generation();
        for (n, ext) in extents {
            let mut e = ext.write().unwrap_or_else(|p| p.into_inner());
            if !e.dirty {
                continue;
            }
            let path = extent_path(&self.dir, n);
            e.file
                .sync_data()
                .and_then(|_| write_trailer(&e.file, es, false, generation, flush_no))
                .and_then(|_| e.file.sync_data())
                .map_err(|x| VolumeError::io("flush", &path, x))?;
            e.dirty = false;
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        check_range("discard", offset, len, self.size())?;
        for (n, within, l) in self.pieces(offset, len) {
            self.discard_piece(n, within, l)?;
        }
        Ok(())
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

/// Which slot describes `block` (Some(None): an unwritten hole of zeros), or None.
fn matches_block(block: &[u8], slots: [u64; 2]) -> Option<Option<u8>> {
    if slots == [0, 0] {
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

fn write_slots(
    file: &File,
    extent_size: u64,
    b: usize,
    slots: [u64; 2],
    path: &Path,
) -> Result<(), VolumeError> {
    let mut buf = [0u8; SLOT_BYTES as usize];
    buf[..8].copy_from_slice(&slots[0].to_le_bytes());
    buf[8..].copy_from_slice(&slots[1].to_le_bytes());
    file.write_all_at(&buf, extent_size + b as u64 * SLOT_BYTES)
        .map_err(|x| VolumeError::io("write checksums of", path, x))
}

fn trailer_offset(extent_size: u64) -> u64 {
    let blocks = extent_size / BLOCK;
    extent_size + blocks * SLOT_BYTES
}

fn write_trailer(
    file: &File,
    extent_size: u64,
    dirty: bool,
    generation: u64,
    flush_no: u64,
) -> std::io::Result<()> {
    let mut t = [0u8; TRAILER_BYTES as usize];
    t[..8].copy_from_slice(TRAILER_MAGIC);
    t[8] = u8::from(dirty);
    t[16..24].copy_from_slice(&generation.to_le_bytes());
    t[24..32].copy_from_slice(&flush_no.to_le_bytes());
    file.write_all_at(&t, trailer_offset(extent_size))
}

/// (magic ok, dirty, flush number)
fn read_trailer(file: &File, extent_size: u64) -> Result<(bool, bool, u64), VolumeError> {
    let mut t = [0u8; TRAILER_BYTES as usize];
    if file
        .read_exact_at(&mut t, trailer_offset(extent_size))
        .is_err()
    {
        return Ok((false, true, 0));
    }
    let flush_no = u64::from_le_bytes(t[24..32].try_into().unwrap_or_default());
    Ok((&t[..8] == TRAILER_MAGIC, t[8] != 0, flush_no))
}

fn write_meta(dir: &Path, meta: &RegionMeta) -> Result<(), VolumeError> {
    let tmp = dir.join(".region.json.new");
    let path = dir.join(REGION_FILE);
    let body = serde_json::to_vec_pretty(meta).unwrap_or_default();
    let mut f = File::create(&tmp).map_err(|e| VolumeError::io("write", &tmp, e))?;
    f.write_all(&body)
        .and_then(|_| f.sync_all())
        .map_err(|e| VolumeError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| VolumeError::io("rename", &path, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), VolumeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VolumeError::io("sync", dir, e))
}

/// Sector-aligned sizes are what the volume API takes; extents are at least one block.
const _: () = assert!(BLOCK.is_multiple_of(SECTOR));

#[cfg(test)]
mod tests;
