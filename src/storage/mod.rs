//! Block volumes: the [`Volume`] trait and its implementations.
//!
//! - [`mem::MemVolume`]: in memory, sparse (tests).
//! - [`file::FileVolume`]: one local file (raw image), the simplest real backend.
//! - [`extent::ExtentVolume`]: a local extent store ("downstairs" region): fixed-size
//!   extents in sparse files, a checksum per block so silent corruption is detected on
//!   read, crash-safe metadata, space reclaimed on discard and delete.
//! - [`replica::ReplicaServer`]: serves this node's regions to upstairs clients over the
//!   node-to-node transport (ALPN `strata-blk/1`), refusing writers of an old generation.
//! - [`replicated::ReplicatedVolume`]: the client ("upstairs"): writes to every live
//!   replica, reads local first, repairs bad blocks, resyncs a returning replica.
//! - [`nbd`]: an NBD server for volumes, and [`nbd::NbdVolume`], a volume on an NBD server.
//!
//! Every implementation passes the same [`conformance`] suite. Volumes are addressed in
//! bytes; offsets and lengths must be multiples of [`SECTOR`] (what virtio-blk and NBD
//! clients send) and lie inside the volume.

pub mod conformance;
pub mod extent;
pub mod file;
pub mod mem;
pub mod nbd;
pub mod region;
pub mod replica;
pub mod replicated;

use std::path::PathBuf;

/// Addressing unit of every volume.
pub const SECTOR: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{op} of {len} bytes at offset {offset} is outside the volume ({size} bytes)")]
    OutOfRange {
        op: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("{op} of {len} bytes at offset {offset} is not aligned to {align}-byte sectors")]
    Unaligned {
        op: &'static str,
        offset: u64,
        len: u64,
        align: u64,
    },
    #[error("the volume is read-only")]
    ReadOnly,
    #[error("block {block} of {what} failed its checksum ({detail})")]
    Corrupt {
        what: String,
        block: u64,
        detail: String,
    },
    #[error("no space left for {what}: {detail}")]
    NoSpace { what: String, detail: String },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid volume: {0}")]
    Invalid(String),
    #[error("volume {volume}: generation {generation} was superseded by {current} (another writer took over)")]
    Fenced {
        volume: String,
        generation: u64,
        current: u64,
    },
    #[error("volume {volume}: no replica available ({detail})")]
    Unavailable { volume: String, detail: String },
    /// A failure reported by (or on the way to) a volume on another server, such as an NBD
    /// export: `errno` is the error the peer reported, or EIO when the connection failed.
    #[error("{op} on a remote volume failed: {detail}")]
    Remote {
        op: &'static str,
        errno: i32,
        detail: String,
    },
}

impl VolumeError {
    /// An I/O error, turned into [`VolumeError::NoSpace`] when the disk is full.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return VolumeError::NoSpace {
                what: path.display().to_string(),
                detail: "the data disk is full".into(),
            };
        }
        VolumeError::Io { op, path, source }
    }

    /// The same error again (one failed batch answers each of its writes).
    pub fn duplicate(&self) -> Self {
        match self {
            VolumeError::OutOfRange {
                op,
                offset,
                len,
                size,
            } => VolumeError::OutOfRange {
                op,
                offset: *offset,
                len: *len,
                size: *size,
            },
            VolumeError::Unaligned {
                op,
                offset,
                len,
                align,
            } => VolumeError::Unaligned {
                op,
                offset: *offset,
                len: *len,
                align: *align,
            },
            VolumeError::ReadOnly => VolumeError::ReadOnly,
            VolumeError::Corrupt {
                what,
                block,
                detail,
            } => VolumeError::Corrupt {
                what: what.clone(),
                block: *block,
                detail: detail.clone(),
            },
            VolumeError::NoSpace { what, detail } => VolumeError::NoSpace {
                what: what.clone(),
                detail: detail.clone(),
            },
            VolumeError::Io { op, path, source } => VolumeError::Io {
                op,
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            VolumeError::Invalid(s) => VolumeError::Invalid(s.clone()),
            VolumeError::Fenced {
                volume,
                generation,
                current,
            } => VolumeError::Fenced {
                volume: volume.clone(),
                generation: *generation,
                current: *current,
            },
            VolumeError::Unavailable { volume, detail } => VolumeError::Unavailable {
                volume: volume.clone(),
                detail: detail.clone(),
            },
            VolumeError::Remote { op, errno, detail } => VolumeError::Remote {
                op,
                errno: *errno,
                detail: detail.clone(),
            },
        }
    }

    /// The errno a block protocol (NBD, virtio-blk) should report for this error.
    pub fn errno(&self) -> i32 {
        match self {
            VolumeError::OutOfRange { .. } | VolumeError::Unaligned { .. } => libc::EINVAL,
            VolumeError::ReadOnly => libc::EPERM,
            VolumeError::NoSpace { .. } => libc::ENOSPC,
            VolumeError::Fenced { .. } => libc::ESHUTDOWN,
            VolumeError::Remote { errno, .. } => *errno,
            VolumeError::Corrupt { .. }
            | VolumeError::Io { .. }
            | VolumeError::Invalid(_)
            | VolumeError::Unavailable { .. } => libc::EIO,
        }
    }
}

/// Called once with a write's result, from whichever thread completes it.
pub type WriteDone = Box<dyn FnOnce(Result<(), VolumeError>) + Send>;

/// A virtual disk. Implementations synchronise internally: every method takes `&self` and
/// may be called from several threads at once. Writes are visible to later reads at once;
/// they are durable only after a [`Volume::flush`] (the virtio-blk and NBD contract).
pub trait Volume: Send + Sync {
    /// Size in bytes (a multiple of [`SECTOR`]).
    fn size(&self) -> u64;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeError>;
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), VolumeError>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), VolumeError>;
    /// Declares a range unused: it reads as zeros afterwards and its space may be freed.
    fn discard(&self, offset: u64, len: u64) -> Result<(), VolumeError>;
    /// Starts a write without blocking the caller; `done` gets its result. Volumes that
    /// can only write by blocking (the default) hand the arguments back, and the caller
    /// runs [`Volume::write_at`] where it may block. Like `write_at`, the write is durable
    /// only after a later flush.
    fn start_write(
        &self,
        offset: u64,
        data: Vec<u8>,
        done: WriteDone,
    ) -> Result<(), (Vec<u8>, WriteDone)> {
        let _ = offset;
        Err((data, done))
    }
    fn read_only(&self) -> bool {
        false
    }
    /// Bytes of backing storage in use (thin provisioning), when known.
    fn allocated(&self) -> Option<u64> {
        None
    }
}

/// Checks that `[offset, offset + len)` is sector-aligned and inside a volume of `size`.
pub fn check_range(op: &'static str, offset: u64, len: u64, size: u64) -> Result<(), VolumeError> {
    if !offset.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) {
        return Err(VolumeError::Unaligned {
            op,
            offset,
            len,
            align: SECTOR,
        });
    }
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(VolumeError::OutOfRange {
            op,
            offset,
            len,
            size,
        }),
    }
}

/// Checks a requested volume size.
pub fn check_size(size: u64) -> Result<(), VolumeError> {
    if size == 0 || !size.is_multiple_of(SECTOR) {
        return Err(VolumeError::Invalid(format!(
            "size {size} must be a positive multiple of {SECTOR} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_for_alignment_and_bounds() {
        assert!(check_range("read", 0, 512, 1024).is_ok());
        assert!(check_range("read", 512, 512, 1024).is_ok());
        assert!(matches!(
            check_range("read", 1, 512, 1024),
            Err(VolumeError::Unaligned { .. })
        ));
        assert!(matches!(
            check_range("write", 0, 100, 1024),
            Err(VolumeError::Unaligned { .. })
        ));
        assert!(matches!(
            check_range("write", 1024, 512, 1024),
            Err(VolumeError::OutOfRange { .. })
        ));
        assert!(matches!(
            check_range("write", u64::MAX - 511, 512, 1024),
            Err(VolumeError::Unaligned { .. }) | Err(VolumeError::OutOfRange { .. })
        ));
        let e = check_range("write", 1024, 512, 1024).unwrap_err();
        assert_eq!(
            e.to_string(),
            "write of 512 bytes at offset 1024 is outside the volume (1024 bytes)"
        );
        assert_eq!(e.errno(), libc::EINVAL);
    }

    #[test]
    fn full_disk_is_named() {
        let e = VolumeError::io(
            "write",
            "/data/x",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert!(matches!(e, VolumeError::NoSpace { .. }), "{e}");
        assert_eq!(e.errno(), libc::ENOSPC);
        assert!(e.to_string().contains("data disk is full"));
    }
}
