//! An in-memory, sparse volume (tests, and a reference for the conformance suite).

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::{check_range, check_size, Volume, VolumeError, SECTOR};

/// Sectors that were written, by sector number; everything else reads as zeros.
pub struct MemVolume {
    size: u64,
    sectors: RwLock<BTreeMap<u64, Box<[u8; SECTOR as usize]>>>,
}

impl MemVolume {
    pub fn new(size: u64) -> Result<Self, VolumeError> {
        check_size(size)?;
        Ok(MemVolume {
            size,
            sectors: RwLock::new(BTreeMap::new()),
        })
    }
}

impl Volume for MemVolume {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        check_range("read", offset, buf.len() as u64, self.size)?;
        let sectors = self.sectors.read().unwrap_or_else(|e| e.into_inner());
        for (i, chunk) in buf.chunks_mut(SECTOR as usize).enumerate() {
            match sectors.get(&(offset / SECTOR + i as u64)) {
                Some(s) => chunk.copy_from_slice(&s[..]),
                None => chunk.fill(0),
            }
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), VolumeError> {
        check_range("write", offset, data.len() as u64, self.size)?;
        let mut sectors = self.sectors.write().unwrap_or_else(|e| e.into_inner());
        for (i, chunk) in data.chunks(SECTOR as usize).enumerate() {
            let mut s = Box::new([0u8; SECTOR as usize]);
            s.copy_from_slice(chunk);
            sectors.insert(offset / SECTOR + i as u64, s);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), VolumeError> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        check_range("discard", offset, len, self.size)?;
        let mut sectors = self.sectors.write().unwrap_or_else(|e| e.into_inner());
        let first = offset / SECTOR;
        let keys: Vec<u64> = sectors
            .range(first..first + len / SECTOR)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            sectors.remove(&k);
        }
        Ok(())
    }

    fn allocated(&self) -> Option<u64> {
        let n = self.sectors.read().unwrap_or_else(|e| e.into_inner()).len() as u64;
        Some(n * SECTOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        super::super::conformance::run(&|size| {
            Box::new(MemVolume::new(size).unwrap()) as Box<dyn Volume>
        });
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(MemVolume::new(0).is_err());
        assert!(MemVolume::new(1000).is_err());
    }
}
