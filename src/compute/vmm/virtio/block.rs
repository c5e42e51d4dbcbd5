//! virtio-blk over a storage [`Volume`] (a local file, or any other volume): IN, OUT,
//! FLUSH and GET_ID.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::chain::{collect, ChainError, Desc};
use super::{feature, DeviceError, DeviceEvent, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::storage::file::FileVolume;
use crate::storage::{Volume, VolumeError};

pub const SECTOR_SIZE: u64 = 512;
const QUEUE_SIZE: u16 = 256;
const HEADER_LEN: u32 = 16;
/// Longest device ID string (`VIRTIO_BLK_ID_BYTES`).
pub const ID_BYTES: usize = 20;
const CHUNK: usize = 64 * 1024;

/// Why a disk could not be opened for a VM.
#[derive(Debug, thiserror::Error)]
#[error("cannot open disk {path}")]
pub struct OpenDiskError {
    pub path: PathBuf,
    #[source]
    pub source: VolumeError,
}

/// Opens a raw image file as the volume behind a disk.
pub fn open_file(path: &Path, read_only: bool) -> Result<Arc<dyn Volume>, OpenDiskError> {
    FileVolume::open(path, read_only)
        .map(|v| Arc::new(v) as Arc<dyn Volume>)
        .map_err(|source| OpenDiskError {
            path: path.to_path_buf(),
            source,
        })
}

/// Why one request failed (reported to the guest as IOERR or UNSUPP, and logged).
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("malformed request")]
    Chain(#[from] ChainError),
    #[error("sectors {sector}+{len} bytes are beyond the disk end {capacity}")]
    OutOfRange {
        sector: u64,
        len: u64,
        capacity: u64,
    },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("volume I/O at {offset}")]
    Io {
        offset: u64,
        #[source]
        source: VolumeError,
    },
}

pub struct Block {
    backend: Arc<dyn Volume>,
    read_only: bool,
    id: [u8; ID_BYTES],
    buf: Vec<u8>,
}

impl Block {
    /// `id` is what the guest sees as the disk serial (truncated to 20 bytes).
    pub fn new(backend: Arc<dyn Volume>, read_only: bool, id: &str) -> Self {
        let read_only = read_only || backend.read_only();
        let mut idb = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        idb[..n].copy_from_slice(&id.as_bytes()[..n]);
        Block {
            backend,
            read_only,
            id: idb,
            buf: vec![0u8; CHUNK],
        }
    }

    fn capacity_sectors(&self) -> u64 {
        self.backend.size() / SECTOR_SIZE
    }

    fn check_range(&self, sector: u64, len: u64) -> Result<u64, RequestError> {
        let capacity = self.capacity_sectors() * SECTOR_SIZE;
        let start = sector.checked_mul(SECTOR_SIZE);
        match start.and_then(|s| s.checked_add(len).map(|e| (s, e))) {
            Some((start, end)) if end <= capacity => Ok(start),
            _ => Err(RequestError::OutOfRange {
                sector,
                len,
                capacity,
            }),
        }
    }

    /// Executes one request; returns bytes written into the data buffers.
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        kind: u32,
        sector: u64,
        data: &[Desc],
    ) -> Result<u32, RequestError> {
        let total: u64 = data.iter().map(|d| u64::from(d.len)).sum();
        match kind {
            VIRTIO_BLK_T_IN => {
                if data.iter().any(|d| !d.write_only) {
                    return Err(ChainError::Malformed("read into a device-readable buffer").into());
                }
                let mut off = self.check_range(sector, total)?;
                for d in data {
                    self.copy_to_guest(mem, d, &mut off)?;
                }
                u32::try_from(total).map_err(|_| ChainError::Malformed("read too long").into())
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return Err(RequestError::ReadOnly);
                }
                if data.iter().any(|d| d.write_only) {
                    return Err(ChainError::Malformed("write from a device-writable buffer").into());
                }
                let mut off = self.check_range(sector, total)?;
                for d in data {
                    self.copy_from_guest(mem, d, &mut off)?;
                }
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                self.backend
                    .flush()
                    .map_err(|source| RequestError::Io { offset: 0, source })?;
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                let d = data
                    .first()
                    .filter(|d| d.write_only)
                    .ok_or(ChainError::Malformed("GET_ID without a writable buffer"))?;
                let n = (d.len as usize).min(ID_BYTES);
                mem.write_slice(&self.id[..n], d.addr)
                    .map_err(|_| ChainError::Access(d.addr.0))?;
                Ok(n as u32)
            }
            other => Err(RequestError::Unsupported(other)),
        }
    }

    fn copy_to_guest(
        &mut self,
        mem: &GuestMemoryMmap,
        d: &Desc,
        off: &mut u64,
    ) -> Result<(), RequestError> {
        let mut done = 0usize;
        while done < d.len as usize {
            let n = (d.len as usize - done).min(CHUNK);
            let offset = *off;
            self.backend
                .read_at(offset, &mut self.buf[..n])
                .map_err(|source| RequestError::Io { offset, source })?;
            let addr = GuestAddress(d.addr.0 + done as u64);
            mem.write_slice(&self.buf[..n], addr)
                .map_err(|_| ChainError::Access(addr.0))?;
            done += n;
            *off += n as u64;
        }
        Ok(())
    }

    fn copy_from_guest(
        &mut self,
        mem: &GuestMemoryMmap,
        d: &Desc,
        off: &mut u64,
    ) -> Result<(), RequestError> {
        let mut done = 0usize;
        while done < d.len as usize {
            let n = (d.len as usize - done).min(CHUNK);
            let addr = GuestAddress(d.addr.0 + done as u64);
            mem.read_slice(&mut self.buf[..n], addr)
                .map_err(|_| ChainError::Access(addr.0))?;
            let offset = *off;
            self.backend
                .write_at(offset, &self.buf[..n])
                .map_err(|source| RequestError::Io { offset, source })?;
            done += n;
            *off += n as u64;
        }
        Ok(())
    }

    /// Handles one chain; returns the used length.
    fn handle_chain(&mut self, mem: &GuestMemoryMmap, descs: Result<Vec<Desc>, ChainError>) -> u32 {
        let descs = match descs {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "virtio-blk: unusable descriptor chain");
                return 0;
            }
        };
        let Some((status, rest)) = descs.split_last() else {
            return 0;
        };
        if !status.write_only || status.len < 1 || rest.is_empty() {
            tracing::warn!("virtio-blk: chain without a writable status byte");
            return 0;
        }
        let (header, data) = (&rest[0], &rest[1..]);
        let result = if header.write_only || header.len < HEADER_LEN {
            Err(ChainError::Malformed("bad request header").into())
        } else {
            let mut h = [0u8; 16];
            match mem.read_slice(&mut h, header.addr) {
                Ok(()) => {
                    let kind = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
                    let mut s = [0u8; 8];
                    s.copy_from_slice(&h[8..16]);
                    self.execute(mem, kind, u64::from_le_bytes(s), data)
                }
                Err(_) => Err(ChainError::Access(header.addr.0).into()),
            }
        };
        let (code, written) = match result {
            Ok(n) => (VIRTIO_BLK_S_OK, n),
            Err(RequestError::Unsupported(k)) => {
                tracing::debug!(kind = k, "virtio-blk: unsupported request");
                (VIRTIO_BLK_S_UNSUPP, 0)
            }
            Err(e) => {
                tracing::warn!(error = %e, "virtio-blk request failed");
                (VIRTIO_BLK_S_IOERR, 0)
            }
        };
        if mem.write_obj(code as u8, status.addr).is_err() {
            return written;
        }
        written.saturating_add(1)
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn avail_features(&self) -> u64 {
        let mut f = feature(VIRTIO_F_VERSION_1)
            | feature(VIRTIO_BLK_F_FLUSH)
            | feature(VIRTIO_BLK_F_SEG_MAX);
        if self.read_only {
            f |= feature(VIRTIO_BLK_F_RO);
        }
        f
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // capacity (u64, sectors), size_max (u32, unused), seg_max (u32).
        let mut cfg = [0u8; 16];
        cfg[..8].copy_from_slice(&self.capacity_sectors().to_le_bytes());
        cfg[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        super::read_config_bytes(&cfg, offset, data);
    }
    fn process(
        &mut self,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
        event: DeviceEvent,
    ) -> Result<bool, DeviceError> {
        if event != DeviceEvent::Queue(0) {
            return Ok(false);
        }
        let q = queues.get_mut(0).ok_or(DeviceError::NoQueue(0))?;
        let mut used = false;
        while let Some(chain) = q.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let len = self.handle_chain(mem, collect(mem, chain));
            q.add_used(mem, head, len)
                .map_err(|source| DeviceError::Queue { queue: 0, source })?;
            used = true;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests;
