//! Port-I/O and MMIO dispatch for vCPU exits, and the i8042 reset line.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device on the port or MMIO bus. `offset` is relative to the range base.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
pub struct BusOverlap {
    pub base: u64,
    pub len: u64,
}

/// Ranges → devices. Unclaimed reads return zeros and unclaimed writes are dropped.
#[derive(Default, Clone)]
pub struct Bus {
    ranges: BTreeMap<u64, (u64, Arc<Mutex<dyn BusDevice>>)>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        dev: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusOverlap> {
        let end = base.checked_add(len).ok_or(BusOverlap { base, len })?;
        let overlaps = self
            .ranges
            .range(..end)
            .next_back()
            .is_some_and(|(b, (l, _))| b + l > base);
        if len == 0 || overlaps {
            return Err(BusOverlap { base, len });
        }
        self.ranges.insert(base, (len, dev));
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &Arc<Mutex<dyn BusDevice>>)> {
        let (base, (len, dev)) = self.ranges.range(..=addr).next_back()?;
        (addr - base < *len).then_some((addr - base, dev))
    }

    /// Returns whether a device claimed the access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((off, dev)) => {
                lock(dev).read(off, data);
                true
            }
            None => {
                data.fill(0);
                false
            }
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((off, dev)) => {
                lock(dev).write(off, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering from a poisoned lock (a panicked vCPU thread must not take
/// the others down with it).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a guest asked the machine to do through a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRequest {
    Reset,
    PowerOff,
}

/// Called when the guest requests a reset or power-off.
pub type RequestSink = Arc<dyn Fn(GuestRequest) + Send + Sync>;

/// The i8042 controller as far as Linux needs it: status reads as empty, and command 0xFE
/// on port 0x64 (pulse the reset line, what `reboot=k` does) resets the machine.
pub struct I8042 {
    sink: RequestSink,
}

pub const I8042_DATA_PORT: u64 = 0x60;
pub const I8042_COMMAND_PORT: u64 = 0x64;
const I8042_RESET_CMD: u8 = 0xfe;

impl I8042 {
    pub fn new(sink: RequestSink) -> Self {
        I8042 { sink }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        // Registered at 0x60 with length 5: offset 4 is the command port.
        if offset == I8042_COMMAND_PORT - I8042_DATA_PORT && data.first() == Some(&I8042_RESET_CMD)
        {
            tracing::info!("guest pulsed the i8042 reset line");
            (self.sink)(GuestRequest::Reset);
        }
    }
}

/// Debug exit port (like QEMU's isa-debug-exit): any write powers the VM off. A guest
/// without ACPI can use it for a clean power-off (`outb` to the port).
pub const DEBUG_EXIT_PORT: u64 = 0xf4;

pub struct DebugExit {
    sink: RequestSink,
}

impl DebugExit {
    pub fn new(sink: RequestSink) -> Self {
        DebugExit { sink }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        tracing::info!(code = ?data.first(), "guest wrote the debug exit port");
        (self.sink)(GuestRequest::PowerOff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatch_and_overlap() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Echo(Vec::new())));
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        assert!(bus.insert(0x3fa, 2, dev.clone()).is_err());
        assert!(bus.insert(0x3f0, 9, dev.clone()).is_err());
        bus.insert(0x400, 1, dev.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fb, &mut b));
        assert_eq!(b[0], 3);
        assert!(!bus.read(0x3f7, &mut b));
        assert_eq!(b[0], 0);
        assert!(bus.write(0x3f8, &[7]));
        assert!(!bus.write(0x401, &[7]));
        assert_eq!(lock(&dev).0, vec![(0, vec![7])]);
    }

    #[test]
    fn i8042_reset_reports_reset() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut k = I8042::new(Arc::new(move |r| lock(&s).push(r)));
        k.write(0, &[0xfe]);
        k.write(4, &[0x20]);
        assert!(lock(&seen).is_empty());
        k.write(4, &[0xfe]);
        assert_eq!(*lock(&seen), vec![GuestRequest::Reset]);
    }
}
