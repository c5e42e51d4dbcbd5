//! virtio-rng: fills every device-writable buffer with bytes from the host's getrandom.

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::chain::{collect, write_all};
use super::{feature, DeviceError, DeviceEvent, VirtioDevice, VIRTIO_F_VERSION_1};

const QUEUE_SIZE: u16 = 256;
/// Most bytes handed out per request.
const MAX_REQUEST: usize = 64 * 1024;

/// Fills `buf` from the kernel's CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, a live, writable slice.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

#[derive(Default)]
pub struct Rng;

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_RNG
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn avail_features(&self) -> u64 {
        feature(VIRTIO_F_VERSION_1)
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
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
            let len = match collect(mem, chain) {
                Ok(descs) => {
                    let writable: Vec<_> = descs.into_iter().filter(|d| d.write_only).collect();
                    let want: usize = writable.iter().map(|d| d.len as usize).sum();
                    let mut bytes = vec![0u8; want.min(MAX_REQUEST)];
                    fill_random(&mut bytes).map_err(DeviceError::Backend)?;
                    write_all(mem, &writable, &bytes).unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "virtio-rng: bad buffer");
                        0
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "virtio-rng: unusable descriptor chain");
                    0
                }
            };
            q.add_used(mem, head, len as u32)
                .map_err(|source| DeviceError::Queue { queue: 0, source })?;
            used = true;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{desc, mem, queue_with_chain, used, F_WRITE};
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn fills_writable_buffers() {
        let m = mem();
        let (mq, q) = queue_with_chain(
            &m,
            0,
            &[desc(0x10_0000, 64, F_WRITE), desc(0x20_0000, 64, F_WRITE)],
        );
        let mut qs = vec![q];
        assert!(Rng.process(&m, &mut qs, DeviceEvent::Queue(0)).unwrap());
        assert_eq!(used(&mq, 0), (0, 128));
        let mut a = [0u8; 64];
        m.read_slice(&mut a, GuestAddress(0x10_0000)).unwrap();
        assert!(a.iter().any(|b| *b != 0));
    }

    #[test]
    fn readable_only_chain_gets_zero_bytes() {
        let m = mem();
        let (mq, q) = queue_with_chain(&m, 0, &[desc(0x10_0000, 64, 0)]);
        let mut qs = vec![q];
        Rng.process(&m, &mut qs, DeviceEvent::Queue(0)).unwrap();
        assert_eq!(used(&mq, 0), (0, 0));
    }
}
