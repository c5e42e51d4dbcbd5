//! virtio-net over a [`NetBackend`] (a TAP): queue 0 receives, queue 1 transmits. Frames
//! carry the 12-byte `virtio_net_hdr_v1` on both sides, so they pass through unchanged
//! (no offloads are negotiated; `num_buffers` is set to 1 on receive).

use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::chain::{collect, read_all, write_all, Desc};
use super::tap::{NetBackend, VNET_HDR_LEN};
use super::{feature, DeviceError, DeviceEvent, VirtioDevice, VIRTIO_F_VERSION_1};

const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
/// Largest frame we move: header + 64 KiB.
const MAX_FRAME: usize = VNET_HDR_LEN + 65_536;

pub struct Net {
    backend: Box<dyn NetBackend>,
    mac: [u8; 6],
    /// A frame read from the backend that no guest buffer has taken yet.
    pending: Option<Vec<u8>>,
    buf: Vec<u8>,
}

impl Net {
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> Self {
        Net {
            backend,
            mac,
            pending: None,
            buf: vec![0u8; MAX_FRAME],
        }
    }

    /// Transmits every available tx chain.
    fn process_tx(&mut self, mem: &GuestMemoryMmap, q: &mut Queue) -> Result<bool, DeviceError> {
        let mut used = false;
        while let Some(chain) = q.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let frame = collect(mem, chain).and_then(|d| {
                let readable: Vec<Desc> = d.into_iter().filter(|d| !d.write_only).collect();
                read_all(mem, &readable, MAX_FRAME)
            });
            match frame {
                Ok(f) if f.len() > VNET_HDR_LEN => {
                    if let Err(e) = self.backend.send(&f) {
                        tracing::debug!(error = %e, "virtio-net: tx frame dropped");
                    }
                }
                Ok(_) => tracing::debug!("virtio-net: tx frame shorter than its header"),
                Err(e) => tracing::warn!(error = %e, "virtio-net: bad tx chain"),
            }
            q.add_used(mem, head, 0)
                .map_err(|source| DeviceError::Queue { queue: TX, source })?;
            used = true;
        }
        Ok(used)
    }

    /// Moves frames from the backend into rx buffers until either runs out.
    fn process_rx(&mut self, mem: &GuestMemoryMmap, q: &mut Queue) -> Result<bool, DeviceError> {
        let mut used = false;
        loop {
            let frame = match self.pending.take() {
                Some(f) => f,
                None => match self.backend.recv(&mut self.buf) {
                    Ok(0) => return Ok(used),
                    Ok(n) => self.buf[..n].to_vec(),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(used),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(DeviceError::Backend(e)),
                },
            };
            let Some(chain) = q.pop_descriptor_chain(mem) else {
                self.pending = Some(frame);
                return Ok(used);
            };
            let head = chain.head_index();
            let mut frame = frame;
            if frame.len() >= VNET_HDR_LEN {
                frame[10..12].copy_from_slice(&1u16.to_le_bytes());
            }
            let written = collect(mem, chain).and_then(|d| {
                let writable: Vec<Desc> = d.into_iter().filter(|d| d.write_only).collect();
                let room: usize = writable.iter().map(|d| d.len as usize).sum();
                if room < frame.len() {
                    tracing::debug!(
                        room,
                        frame = frame.len(),
                        "virtio-net: rx buffer too small, frame dropped"
                    );
                    return Ok(0);
                }
                write_all(mem, &writable, &frame)
            });
            let len = written.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "virtio-net: bad rx chain");
                0
            });
            q.add_used(mem, head, len as u32)
                .map_err(|source| DeviceError::Queue { queue: RX, source })?;
            used = true;
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_NET
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn avail_features(&self) -> u64 {
        feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_NET_F_MAC)
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.mac, offset, data);
    }
    fn reset(&mut self) {
        self.pending = None;
    }
    fn process(
        &mut self,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
        event: DeviceEvent,
    ) -> Result<bool, DeviceError> {
        let [rx, tx] = queues else {
            return Err(DeviceError::NoQueue(TX));
        };
        match event {
            DeviceEvent::Queue(TX) => self.process_tx(mem, tx),
            DeviceEvent::Queue(RX) | DeviceEvent::Backend => self.process_rx(mem, rx),
            DeviceEvent::Queue(n) => Err(DeviceError::NoQueue(n)),
        }
    }
    fn backend_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.backend.raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{desc, link, mem, used, used_idx, F_WRITE};
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    fn pair() -> (Net, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (Net::new(Box::new(a), [0x52, 0x54, 0, 0x12, 0x34, 0x56]), b)
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn tx_writes_one_frame_to_the_backend() {
        let m = mem();
        let (mut net, peer) = pair();
        let f = frame(b"\xff\xff\xff\xff\xff\xffhello-frame");
        m.write_slice(&f[..VNET_HDR_LEN], GuestAddress(0x10_0000))
            .unwrap();
        m.write_slice(&f[VNET_HDR_LEN..], GuestAddress(0x20_0000))
            .unwrap();
        let rxq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        let txq = MockSplitQueue::create(&m, GuestAddress(0x8000), 16);
        txq.add_desc_chains(
            &link(&[
                desc(0x10_0000, VNET_HDR_LEN as u32, 0),
                desc(0x20_0000, (f.len() - VNET_HDR_LEN) as u32, 0),
            ]),
            0,
        )
        .unwrap();
        let mut qs = vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()];
        assert!(net.process(&m, &mut qs, DeviceEvent::Queue(TX)).unwrap());
        let mut got = vec![0u8; 256];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &f[..]);
        assert_eq!(used_idx(&txq), 1);
    }

    #[test]
    fn rx_delivers_a_frame_and_waits_for_buffers() {
        let m = mem();
        let (mut net, peer) = pair();
        let f = frame(b"incoming");
        peer.send(&f).unwrap();
        let rxq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        let txq = MockSplitQueue::create(&m, GuestAddress(0x8000), 16);
        let mut qs = vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()];
        // No rx buffer yet: the frame is kept.
        assert!(!net.process(&m, &mut qs, DeviceEvent::Backend).unwrap());
        assert!(net.pending.is_some());
        rxq.add_desc_chains(&[desc(0x30_0000, 2048, F_WRITE)], 0)
            .unwrap();
        assert!(net.process(&m, &mut qs, DeviceEvent::Queue(RX)).unwrap());
        assert_eq!(used(&rxq, 0), (0, f.len() as u32));
        let mut back = vec![0u8; f.len()];
        m.read_slice(&mut back, GuestAddress(0x30_0000)).unwrap();
        assert_eq!(&back[VNET_HDR_LEN..], b"incoming");
        assert_eq!(u16::from_le_bytes([back[10], back[11]]), 1);
    }

    #[test]
    fn rx_into_too_small_or_bad_buffer_does_not_panic() {
        let m = mem();
        let (mut net, peer) = pair();
        peer.send(&frame(&[7u8; 100])).unwrap();
        peer.send(&frame(&[8u8; 10])).unwrap();
        let rxq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        let txq = MockSplitQueue::create(&m, GuestAddress(0x8000), 16);
        rxq.add_desc_chains(
            &[
                desc(0x30_0000, 16, F_WRITE),
                desc(0xfff_ff00, 0x1000, F_WRITE),
            ],
            0,
        )
        .unwrap();
        let mut qs = vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()];
        net.process(&m, &mut qs, DeviceEvent::Backend).unwrap();
        assert_eq!(used_idx(&rxq), 2);
        assert_eq!(used(&rxq, 0).1, 0);
        assert_eq!(used(&rxq, 1).1, 0);
    }

    #[test]
    fn config_is_the_mac() {
        let (net, _peer) = pair();
        let mut mac = [0u8; 6];
        net.read_config(0, &mut mac);
        assert_eq!(mac, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    }
}
