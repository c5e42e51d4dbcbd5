//! Virtio devices over the virtio-mmio transport (version 2, split queues).
//!
//! A device model implements [`VirtioDevice`]; [`mmio::MmioTransport`] owns its queues
//! and runs the register state machine. Queue notifications arrive either as MMIO writes
//! to `QueueNotify` (handled on the vCPU thread) or through an ioeventfd (handled on the
//! VM's device thread); both end in [`mmio::MmioTransport::notify`]. Interrupts go out
//! through an [`IrqLine`] (an irqfd).

pub mod block;
pub mod chain;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod tap;

use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// Feature bit as a mask.
pub const fn feature(bit: u32) -> u64 {
    1u64 << bit
}

/// What woke a device up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEvent {
    /// The driver made buffers available on queue `n`.
    Queue(usize),
    /// The device's backend has input (a TAP became readable), or the device was activated.
    Backend,
}

/// Why a device stopped processing. Per-request failures (bad chains, I/O errors) are
/// reported to the guest in-band and logged; this is for failures of the queue itself.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("virtio queue {queue}")]
    Queue {
        queue: usize,
        #[source]
        source: virtio_queue::Error,
    },
    #[error("no such queue {0}")]
    NoQueue(usize),
    #[error("backend I/O")]
    Backend(#[source] std::io::Error),
}

/// A virtio device model.
pub trait VirtioDevice: Send {
    /// Virtio device ID (1 net, 2 block, 4 rng).
    fn device_type(&self) -> u32;
    /// Largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Features the device offers (must include `VIRTIO_F_VERSION_1`).
    fn avail_features(&self) -> u64;
    /// Reads device-specific configuration space at `offset`; out-of-range reads are zeros.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device-specific configuration space (ignored by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Called when the driver sets DRIVER_OK with the negotiated features.
    fn activate(&mut self, _features: u64) {}
    /// Called on a device reset (status written to 0).
    fn reset(&mut self) {}
    /// Processes `event`; returns whether the used rings changed (an interrupt is due).
    fn process(
        &mut self,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
        event: DeviceEvent,
    ) -> Result<bool, DeviceError>;
    /// A file descriptor whose readability should produce [`DeviceEvent::Backend`].
    fn backend_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// `InterruptStatus` bits.
pub const INT_USED_RING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// A device's interrupt: the status register the driver reads and acks, and the irqfd.
pub struct IrqLine {
    status: AtomicU32,
    evt: EventFd,
}

impl IrqLine {
    pub fn new(evt: EventFd) -> Self {
        IrqLine {
            status: AtomicU32::new(0),
            evt,
        }
    }

    pub fn trigger(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        if let Err(e) = self.evt.write(1) {
            tracing::warn!(error = %e, "cannot signal virtio interrupt");
        }
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// Copies `cfg[offset..]` into `data`, zero-filling what lies past the end.
pub fn read_config_bytes(cfg: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(off) = usize::try_from(offset) else {
        return;
    };
    if off < cfg.len() {
        let n = (cfg.len() - off).min(data.len());
        data[..n].copy_from_slice(&cfg[off..off + n]);
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Guest memory and queue helpers shared by the device tests.
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    pub const F_NEXT: u16 = 1;
    pub const F_WRITE: u16 = 2;

    pub fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
    }

    pub fn desc(addr: u64, len: u32, flags: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
    }

    /// Links `descs` into one chain (NEXT flags and indexes).
    pub fn link(descs: &[RawDescriptor]) -> Vec<RawDescriptor> {
        let n = descs.len();
        descs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let d = SplitDescriptor::from(*d);
                let (flags, next) = if i + 1 < n {
                    (d.flags() | F_NEXT, i as u16 + 1)
                } else {
                    (d.flags() & !F_NEXT, 0)
                };
                RawDescriptor::from(SplitDescriptor::new(d.addr().0, d.len(), flags, next))
            })
            .collect()
    }

    /// Puts one chain on a fresh mock queue at `base` and returns the queue object.
    pub fn queue_with_chain<'a>(
        mem: &'a GuestMemoryMmap,
        base: u64,
        descs: &[RawDescriptor],
    ) -> (MockSplitQueue<'a, GuestMemoryMmap>, Queue) {
        let mq = MockSplitQueue::create(mem, GuestAddress(base), 16);
        mq.add_desc_chains(&link(descs), 0).unwrap();
        let q: Queue = mq.create_queue().unwrap();
        (mq, q)
    }

    /// Used-ring entry `i`: (id, len).
    pub fn used(mq: &MockSplitQueue<'_, GuestMemoryMmap>, i: usize) -> (u32, u32) {
        let e = mq.used().ring().ref_at(i).unwrap().load();
        (e.id(), e.len())
    }

    pub fn used_idx(mq: &MockSplitQueue<'_, GuestMemoryMmap>) -> u16 {
        mq.used().idx().load()
    }

    #[allow(dead_code)]
    pub fn ready(q: &Queue) -> bool {
        q.ready()
    }
}
