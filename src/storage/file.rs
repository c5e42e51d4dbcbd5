//! A volume in one local file (a raw image): sparse, discard punches holes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{check_range, check_size, Volume, VolumeError};

pub struct FileVolume {
    file: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

impl FileVolume {
    /// Creates a new sparse file of `size` bytes (fails if it exists).
    pub fn create(path: &Path, size: u64) -> Result<Self, VolumeError> {
        check_size(size)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| VolumeError::io("create", path, e))?;
        file.set_len(size)
            .map_err(|e| VolumeError::io("size", path, e))?;
        Ok(FileVolume {
            file,
            path: path.to_path_buf(),
            size,
            read_only: false,
        })
    }

    /// Opens an existing raw image; its length must be a multiple of 512.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, VolumeError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| VolumeError::io("open", path, e))?;
        let size = file
            .metadata()
            .map_err(|e| VolumeError::io("stat", path, e))?
            .len();
        check_size(size).map_err(|e| VolumeError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(FileVolume {
            file,
            path: path.to_path_buf(),
            size,
            read_only,
        })
    }
}

impl Volume for FileVolume {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        check_range("read", offset, buf.len() as u64, self.size)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| VolumeError::io("read", &self.path, e))
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), VolumeError> {
        if self.read_only {
            return Err(VolumeError::ReadOnly);
        }
        check_range("write", offset, data.len() as u64, self.size)?;
        self.file
            .write_all_at(data, offset)
            .map_err(|e| VolumeError::io("write", &self.path, e))
    }

    fn flush(&self) -> Result<(), VolumeError> {
        if self.read_only {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| VolumeError::io("flush", &self.path, e))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        if self.read_only {
            return Err(VolumeError::ReadOnly);
        }
        check_range("discard", offset, len, self.size)?;
        punch_hole(&self.file, offset, len).map_err(|e| VolumeError::io("discard", &self.path, e))
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn allocated(&self) -> Option<u64> {
        self.file.metadata().ok().map(|m| m.blocks() * 512)
    }
}

/// Frees `[offset, offset + len)` of a file, which then reads as zeros; the size is kept.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    use rustix::fs::{fallocate, FallocateFlags};
    fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicU32::new(0);
        super::super::conformance::run(&|size| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::new(FileVolume::create(&dir.path().join(format!("v{i}")), size).unwrap())
                as Box<dyn Volume>
        });
    }

    #[test]
    fn reopens_with_its_data_and_refuses_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.raw");
        let v = FileVolume::create(&p, 1 << 20).unwrap();
        v.write_at(4096, &[7u8; 4096]).unwrap();
        v.flush().unwrap();
        drop(v);
        assert!(
            FileVolume::create(&p, 1 << 20).is_err(),
            "create over an existing file"
        );
        let ro = FileVolume::open(&p, true).unwrap();
        let mut b = [0u8; 4096];
        ro.read_at(4096, &mut b).unwrap();
        assert_eq!(b, [7u8; 4096]);
        assert!(matches!(
            ro.write_at(0, &[1u8; 512]),
            Err(VolumeError::ReadOnly)
        ));
        std::fs::write(dir.path().join("odd"), [0u8; 1000]).unwrap();
        let e = FileVolume::open(&dir.path().join("odd"), false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("multiple of 512"), "{e}");
        let e = FileVolume::open(&dir.path().join("missing"), false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
