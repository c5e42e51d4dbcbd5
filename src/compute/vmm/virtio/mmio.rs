//! The virtio-mmio (version 2) register file and device life cycle.

use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::super::bus::BusDevice;
use super::{DeviceEvent, IrqLine, VirtioDevice, INT_USED_RING, VIRTIO_F_VERSION_1};

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x5354_5241; // "STRA"

pub const REG_MAGIC: u64 = 0x000;
pub const REG_VERSION: u64 = 0x004;
pub const REG_DEVICE_ID: u64 = 0x008;
pub const REG_VENDOR_ID: u64 = 0x00c;
pub const REG_DEVICE_FEATURES: u64 = 0x010;
pub const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
pub const REG_DRIVER_FEATURES: u64 = 0x020;
pub const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
pub const REG_QUEUE_SEL: u64 = 0x030;
pub const REG_QUEUE_NUM_MAX: u64 = 0x034;
pub const REG_QUEUE_NUM: u64 = 0x038;
pub const REG_QUEUE_READY: u64 = 0x044;
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
pub const REG_INTERRUPT_STATUS: u64 = 0x060;
pub const REG_INTERRUPT_ACK: u64 = 0x064;
pub const REG_STATUS: u64 = 0x070;
pub const REG_QUEUE_DESC_LOW: u64 = 0x080;
pub const REG_QUEUE_DESC_HIGH: u64 = 0x084;
pub const REG_QUEUE_AVAIL_LOW: u64 = 0x090;
pub const REG_QUEUE_AVAIL_HIGH: u64 = 0x094;
pub const REG_QUEUE_USED_LOW: u64 = 0x0a0;
pub const REG_QUEUE_USED_HIGH: u64 = 0x0a4;
pub const REG_CONFIG_GENERATION: u64 = 0x0fc;
pub const REG_CONFIG: u64 = 0x100;

/// One virtio device behind an MMIO window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    irq: Arc<IrqLine>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    activated: bool,
}

impl MmioTransport {
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemoryMmap, irq: Arc<IrqLine>) -> Self {
        let queues = device
            .queue_max_sizes()
            .into_iter()
            .filter_map(|max| match Queue::new(max) {
                Ok(q) => Some(q),
                Err(e) => {
                    tracing::error!(max, error = %e, "invalid queue size in device model");
                    None
                }
            })
            .collect();
        MmioTransport {
            device,
            mem,
            queues,
            irq,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            activated: false,
        }
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    pub fn is_activated(&self) -> bool {
        self.activated
    }

    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    pub fn backend_fd(&self) -> Option<std::os::fd::RawFd> {
        self.device.backend_fd()
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn has(&self, bit: u32) -> bool {
        self.status & bit != 0
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
        self.irq.ack(u32::MAX);
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.activated = false;
    }

    fn set_status(&mut self, new: u32) {
        if new == 0 {
            tracing::debug!(device = self.device.device_type(), "virtio reset");
            self.reset();
            return;
        }
        if new & VIRTIO_CONFIG_S_FAILED != 0 {
            tracing::warn!(
                device = self.device.device_type(),
                "driver marked the device FAILED"
            );
            self.status |= VIRTIO_CONFIG_S_FAILED;
            return;
        }
        // Bits may only be added, never cleared (except by reset).
        if new & self.status != self.status {
            tracing::warn!(
                old = self.status,
                new,
                "invalid virtio status transition ignored"
            );
            return;
        }
        let added = new & !self.status;
        let order_ok = |bit: u32, needs: u32| added & bit == 0 || new & needs == needs;
        if !order_ok(VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_ACKNOWLEDGE)
            || !order_ok(VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER)
            || !order_ok(VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK)
        {
            tracing::warn!(
                old = self.status,
                new,
                "virtio status bits out of order ignored"
            );
            return;
        }
        let mut new = new;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let avail = self.device.avail_features();
            let unknown = self.driver_features & !avail;
            let version_1 = self.driver_features & super::feature(VIRTIO_F_VERSION_1) != 0;
            if unknown != 0 || !version_1 {
                tracing::warn!(
                    unknown = format_args!("{unknown:#x}"),
                    version_1,
                    "FEATURES_OK refused"
                );
                new &= !(VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
            }
        }
        if new & !self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            let bad = self
                .queues
                .iter()
                .position(|q| q.ready() && !q.is_valid(&self.mem));
            if let Some(i) = bad {
                tracing::warn!(queue = i, "queue addresses invalid; device needs reset");
                self.status = new | VIRTIO_CONFIG_S_NEEDS_RESET;
                return;
            }
            self.status = new;
            self.activated = true;
            self.device.activate(self.driver_features);
            tracing::info!(
                device = self.device.device_type(),
                features = format_args!("{:#x}", self.driver_features),
                "virtio device activated"
            );
            self.process(DeviceEvent::Backend);
            return;
        }
        self.status = new;
    }

    /// Runs the device for `event` and raises the interrupt if the used rings changed.
    pub fn process(&mut self, event: DeviceEvent) {
        if !self.activated || self.has(VIRTIO_CONFIG_S_NEEDS_RESET) {
            return;
        }
        match self.device.process(&self.mem, &mut self.queues, event) {
            Ok(true) => self.irq.trigger(INT_USED_RING),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(device = self.device.device_type(), error = %e, "virtio device failed; needs reset");
                self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                self.irq.trigger(super::INT_CONFIG);
            }
        }
    }

    /// The driver notified queue `index`.
    pub fn notify(&mut self, index: usize) {
        if index < self.queues.len() {
            self.process(DeviceEvent::Queue(index));
        }
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let q = self.queues.get(self.queue_select as usize);
        match offset {
            REG_MAGIC => MAGIC,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_select {
                0 => self.device.avail_features() as u32,
                1 => (self.device.avail_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => q.map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.irq.status(),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => 0,
            _ => {
                tracing::debug!(offset, "read of unknown virtio-mmio register");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let queue_config_allowed =
            self.has(VIRTIO_CONFIG_S_FEATURES_OK) && !self.has(VIRTIO_CONFIG_S_DRIVER_OK);
        let features_allowed =
            self.has(VIRTIO_CONFIG_S_DRIVER) && !self.has(VIRTIO_CONFIG_S_FEATURES_OK);
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_select = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_select = v,
            REG_DRIVER_FEATURES if features_allowed => match self.driver_features_select {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => {}
            },
            REG_QUEUE_SEL => self.queue_select = v,
            REG_QUEUE_NUM | REG_QUEUE_READY | REG_QUEUE_DESC_LOW | REG_QUEUE_DESC_HIGH
            | REG_QUEUE_AVAIL_LOW | REG_QUEUE_AVAIL_HIGH | REG_QUEUE_USED_LOW
            | REG_QUEUE_USED_HIGH
                if queue_config_allowed =>
            {
                let Some(q) = self.selected_queue() else {
                    tracing::debug!(offset, "queue register write with no queue selected");
                    return;
                };
                match offset {
                    REG_QUEUE_NUM => q.set_size(v as u16),
                    REG_QUEUE_READY => q.set_ready(v == 1),
                    REG_QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
                    REG_QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
                    REG_QUEUE_AVAIL_LOW => q.set_avail_ring_address(Some(v), None),
                    REG_QUEUE_AVAIL_HIGH => q.set_avail_ring_address(None, Some(v)),
                    REG_QUEUE_USED_LOW => q.set_used_ring_address(Some(v), None),
                    _ => q.set_used_ring_address(None, Some(v)),
                }
            }
            REG_QUEUE_NOTIFY => self.notify(v as usize),
            REG_INTERRUPT_ACK => self.irq.ack(v),
            REG_STATUS => self.set_status(v),
            _ => tracing::debug!(
                offset,
                v,
                status = self.status,
                "virtio-mmio register write ignored"
            ),
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            self.device.read_config(offset - REG_CONFIG, data);
            return;
        }
        let v = if data.len() == 4 && offset.is_multiple_of(4) {
            self.read_reg(offset)
        } else {
            tracing::debug!(
                offset,
                len = data.len(),
                "unaligned virtio-mmio register read"
            );
            0
        };
        let bytes = v.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= REG_CONFIG {
            self.device.write_config(offset - REG_CONFIG, data);
            return;
        }
        match <[u8; 4]>::try_from(data) {
            Ok(b) if offset.is_multiple_of(4) => self.write_reg(offset, u32::from_le_bytes(b)),
            _ => tracing::debug!(
                offset,
                len = data.len(),
                "unaligned virtio-mmio register write"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{desc, mem, F_WRITE};
    use super::super::DeviceError;
    use super::*;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    /// Counts notifications; completes every chain with length 1.
    struct Fake {
        processed: Arc<std::sync::Mutex<Vec<DeviceEvent>>>,
    }

    impl VirtioDevice for Fake {
        fn device_type(&self) -> u32 {
            4
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![16]
        }
        fn avail_features(&self) -> u64 {
            super::super::feature(VIRTIO_F_VERSION_1) | 1
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            data.fill((offset as u8).wrapping_add(0x40));
        }
        fn process(
            &mut self,
            mem: &GuestMemoryMmap,
            queues: &mut [Queue],
            event: DeviceEvent,
        ) -> Result<bool, DeviceError> {
            self.processed.lock().unwrap().push(event);
            let q = &mut queues[0];
            let mut any = false;
            while let Some(c) = q.pop_descriptor_chain(mem) {
                q.add_used(mem, c.head_index(), 1)
                    .map_err(|source| DeviceError::Queue { queue: 0, source })?;
                any = true;
            }
            Ok(any)
        }
    }

    struct Rig {
        t: MmioTransport,
        irq: Arc<IrqLine>,
        seen: Arc<std::sync::Mutex<Vec<DeviceEvent>>>,
    }

    fn rig(m: &GuestMemoryMmap) -> Rig {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let irq = Arc::new(IrqLine::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        let t = MmioTransport::new(
            Box::new(Fake {
                processed: seen.clone(),
            }),
            m.clone(),
            irq.clone(),
        );
        Rig { t, irq, seen }
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }
    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    const ACK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
    const DRV: u32 = VIRTIO_CONFIG_S_DRIVER;
    const FOK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
    const DOK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;

    fn negotiate(t: &mut MmioTransport, low: u32, high: u32) -> u32 {
        w(t, REG_STATUS, ACK);
        w(t, REG_STATUS, ACK | DRV);
        w(t, REG_DRIVER_FEATURES_SEL, 0);
        w(t, REG_DRIVER_FEATURES, low);
        w(t, REG_DRIVER_FEATURES_SEL, 1);
        w(t, REG_DRIVER_FEATURES, high);
        w(t, REG_STATUS, ACK | DRV | FOK);
        r(t, REG_STATUS)
    }

    #[test]
    fn identity_registers() {
        let m = mem();
        let mut rg = rig(&m);
        assert_eq!(r(&mut rg.t, REG_MAGIC), MAGIC);
        assert_eq!(r(&mut rg.t, REG_VERSION), 2);
        assert_eq!(r(&mut rg.t, REG_DEVICE_ID), 4);
        w(&mut rg.t, REG_DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&mut rg.t, REG_DEVICE_FEATURES), 1);
        w(&mut rg.t, REG_DEVICE_FEATURES_SEL, 0);
        assert_eq!(r(&mut rg.t, REG_DEVICE_FEATURES), 1);
        assert_eq!(r(&mut rg.t, REG_QUEUE_NUM_MAX), 16);
        let mut b = [0u8; 2];
        rg.t.read(REG_CONFIG + 2, &mut b);
        assert_eq!(b, [0x42, 0x42]);
    }

    #[test]
    fn features_ok_accepts_known_features() {
        let m = mem();
        let mut rg = rig(&m);
        assert_eq!(negotiate(&mut rg.t, 1, 1), ACK | DRV | FOK);
        assert_eq!(rg.t.driver_features(), (1 << 32) | 1);
    }

    #[test]
    fn features_ok_rejects_unknown_features_and_missing_version_1() {
        let m = mem();
        let mut rg = rig(&m);
        assert_eq!(negotiate(&mut rg.t, 1 | 2, 1), ACK | DRV);
        w(&mut rg.t, REG_STATUS, 0);
        assert_eq!(negotiate(&mut rg.t, 1, 0), ACK | DRV);
        // DRIVER_OK cannot follow a refused FEATURES_OK.
        w(&mut rg.t, REG_STATUS, ACK | DRV | FOK | DOK);
        assert!(!rg.t.is_activated());
    }

    #[test]
    fn status_bits_cannot_skip_or_be_cleared() {
        let m = mem();
        let mut rg = rig(&m);
        w(&mut rg.t, REG_STATUS, DRV);
        assert_eq!(r(&mut rg.t, REG_STATUS), 0);
        w(&mut rg.t, REG_STATUS, ACK | FOK);
        assert_eq!(r(&mut rg.t, REG_STATUS), 0);
        w(&mut rg.t, REG_STATUS, ACK);
        w(&mut rg.t, REG_STATUS, ACK | DRV);
        w(&mut rg.t, REG_STATUS, ACK);
        assert_eq!(r(&mut rg.t, REG_STATUS), ACK | DRV);
        // Features cannot change once FEATURES_OK is set.
        negotiate(&mut rg.t, 1, 1);
        w(&mut rg.t, REG_DRIVER_FEATURES_SEL, 0);
        w(&mut rg.t, REG_DRIVER_FEATURES, 0);
        assert_eq!(rg.t.driver_features() & 1, 1);
    }

    fn setup_queue(t: &mut MmioTransport, mq: &MockSplitQueue<'_, GuestMemoryMmap>) {
        w(t, REG_QUEUE_SEL, 0);
        w(t, REG_QUEUE_NUM, 16);
        let split = |a: GuestAddress| (a.0 as u32, (a.0 >> 32) as u32);
        let (l, h) = split(mq.desc_table_addr());
        w(t, REG_QUEUE_DESC_LOW, l);
        w(t, REG_QUEUE_DESC_HIGH, h);
        let (l, h) = split(mq.avail_addr());
        w(t, REG_QUEUE_AVAIL_LOW, l);
        w(t, REG_QUEUE_AVAIL_HIGH, h);
        let (l, h) = split(mq.used_addr());
        w(t, REG_QUEUE_USED_LOW, l);
        w(t, REG_QUEUE_USED_HIGH, h);
        w(t, REG_QUEUE_READY, 1);
    }

    #[test]
    fn activation_notify_interrupt_ack_and_reset() {
        let m = mem();
        let mut rg = rig(&m);
        let mq = MockSplitQueue::create(&m, GuestAddress(0x10000), 16);
        negotiate(&mut rg.t, 1, 1);
        setup_queue(&mut rg.t, &mq);
        // Notify before DRIVER_OK does nothing.
        w(&mut rg.t, REG_QUEUE_NOTIFY, 0);
        assert!(rg.seen.lock().unwrap().is_empty());
        w(&mut rg.t, REG_STATUS, ACK | DRV | FOK | DOK);
        assert!(rg.t.is_activated());
        assert_eq!(rg.seen.lock().unwrap().clone(), vec![DeviceEvent::Backend]);
        // Queue registers are frozen after DRIVER_OK.
        w(&mut rg.t, REG_QUEUE_READY, 0);
        assert_eq!(r(&mut rg.t, REG_QUEUE_READY), 1);

        mq.add_desc_chains(&[desc(0x20000, 8, F_WRITE)], 0).unwrap();
        w(&mut rg.t, REG_QUEUE_NOTIFY, 0);
        assert_eq!(mq.used().idx().load(), 1);
        assert_eq!(r(&mut rg.t, REG_INTERRUPT_STATUS), INT_USED_RING);
        assert_eq!(rg.irq.eventfd().read().unwrap(), 1);
        w(&mut rg.t, REG_INTERRUPT_ACK, INT_USED_RING);
        assert_eq!(r(&mut rg.t, REG_INTERRUPT_STATUS), 0);
        // Out-of-range queue index is ignored.
        w(&mut rg.t, REG_QUEUE_NOTIFY, 7);

        w(&mut rg.t, REG_STATUS, 0);
        assert!(!rg.t.is_activated());
        assert_eq!(r(&mut rg.t, REG_STATUS), 0);
        assert_eq!(r(&mut rg.t, REG_QUEUE_READY), 0);
    }

    #[test]
    fn invalid_queue_address_sets_needs_reset() {
        let m = mem();
        let mut rg = rig(&m);
        negotiate(&mut rg.t, 1, 1);
        w(&mut rg.t, REG_QUEUE_SEL, 0);
        w(&mut rg.t, REG_QUEUE_NUM, 16);
        w(&mut rg.t, REG_QUEUE_DESC_LOW, 0xffff_0000);
        w(&mut rg.t, REG_QUEUE_DESC_HIGH, 0x10);
        w(&mut rg.t, REG_QUEUE_READY, 1);
        w(&mut rg.t, REG_STATUS, ACK | DRV | FOK | DOK);
        assert!(!rg.t.is_activated());
        assert_ne!(r(&mut rg.t, REG_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    }

    #[test]
    fn odd_sized_accesses_do_not_panic() {
        let m = mem();
        let mut rg = rig(&m);
        let mut b = [0u8; 8];
        rg.t.read(REG_MAGIC, &mut b);
        rg.t.read(REG_MAGIC + 1, &mut b[..1]);
        rg.t.write(REG_STATUS, &[1]);
        rg.t.write(REG_STATUS + 2, &[1, 2, 3, 4]);
        rg.t.read(0xfff, &mut b);
    }
}
