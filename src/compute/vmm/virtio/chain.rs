//! Reading a descriptor chain the guest gave us, defensively: every descriptor is
//! checked against guest memory before use, and copies go in bounded chunks.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap};

/// One descriptor of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub addr: GuestAddress,
    pub len: u32,
    pub write_only: bool,
}

/// Why a chain cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor chain is empty")]
    Empty,
    #[error("descriptor chain has {0} descriptors, more than the limit")]
    TooLong(usize),
    #[error("descriptor {index} ({addr:#x}+{len:#x}) is outside guest memory")]
    OutOfMemory { index: usize, addr: u64, len: u32 },
    #[error("{0}")]
    Malformed(&'static str),
    #[error("guest memory access at {0:#x} failed")]
    Access(u64),
}

/// Most descriptors we follow in one chain (the largest queue we offer).
pub const MAX_CHAIN_LEN: usize = 1024;

/// Collects and validates the descriptors of `chain`.
pub fn collect<M>(mem: &GuestMemoryMmap, chain: DescriptorChain<M>) -> Result<Vec<Desc>, ChainError>
where
    M: Deref,
    M::Target: GuestMemory,
{
    let mut v = Vec::new();
    for (index, d) in chain.enumerate() {
        if index >= MAX_CHAIN_LEN {
            return Err(ChainError::TooLong(index + 1));
        }
        let desc = Desc {
            addr: d.addr(),
            len: d.len(),
            write_only: d.is_write_only(),
        };
        let ok =
            desc.len == 0 || GuestMemoryBackend::check_range(mem, desc.addr, desc.len as usize);
        if !ok {
            return Err(ChainError::OutOfMemory {
                index,
                addr: desc.addr.0,
                len: desc.len,
            });
        }
        v.push(desc);
    }
    if v.is_empty() {
        return Err(ChainError::Empty);
    }
    Ok(v)
}

/// Copies the readable descriptors of `descs` into one buffer of at most `limit` bytes.
pub fn read_all(
    mem: &GuestMemoryMmap,
    descs: &[Desc],
    limit: usize,
) -> Result<Vec<u8>, ChainError> {
    let total: usize = descs.iter().map(|d| d.len as usize).sum();
    if total > limit {
        return Err(ChainError::Malformed(
            "readable buffers exceed the frame limit",
        ));
    }
    let mut out = vec![0u8; total];
    let mut off = 0;
    for d in descs {
        let n = d.len as usize;
        mem.read_slice(&mut out[off..off + n], d.addr)
            .map_err(|_| ChainError::Access(d.addr.0))?;
        off += n;
    }
    Ok(out)
}

/// Writes `data` across the writable descriptors `descs`; returns bytes written (it stops
/// when the descriptors are full).
pub fn write_all(mem: &GuestMemoryMmap, descs: &[Desc], data: &[u8]) -> Result<usize, ChainError> {
    let mut off = 0;
    for d in descs {
        if off == data.len() {
            break;
        }
        let n = (d.len as usize).min(data.len() - off);
        mem.write_slice(&data[off..off + n], d.addr)
            .map_err(|_| ChainError::Access(d.addr.0))?;
        off += n;
    }
    Ok(off)
}
