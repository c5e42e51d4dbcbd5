//! The on-disk pieces of an extent file and a region directory: checksum slots, the
//! trailer, `region.json`, directory syncs.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{RegionMeta, BLOCK, REGION_FILE, SLOT_BYTES, TRAILER_BYTES, TRAILER_MAGIC};
use crate::storage::VolumeError;

pub(super) fn write_slots(
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

pub(super) fn write_trailer(
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
pub(super) fn read_trailer(
    file: &File,
    extent_size: u64,
) -> Result<(bool, bool, u64), VolumeError> {
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

pub(super) fn write_meta(dir: &Path, meta: &RegionMeta) -> Result<(), VolumeError> {
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

pub(super) fn sync_dir(dir: &Path) -> Result<(), VolumeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VolumeError::io("sync", dir, e))
}
