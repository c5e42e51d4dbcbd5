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

/// The i8042 controller as far as Linux needs it: controller commands answer (so probing
/// does not time out), no keyboard or mouse, and command 0xFE on port 0x64 (pulse the
/// reset line: `reboot=k`, and the ACPI reset register) resets the machine.
pub struct I8042 {
    sink: RequestSink,
    ctr: u8,
    out: Option<u8>,
    /// The next data-port write sets the controller configuration byte.
    write_ctr: bool,
}

pub const I8042_DATA_PORT: u64 = 0x60;
pub const I8042_COMMAND_PORT: u64 = 0x64;
const I8042_RESET_CMD: u8 = 0xfe;

impl I8042 {
    pub fn new(sink: RequestSink) -> Self {
        I8042 {
            sink,
            ctr: 0x30, // keyboard and mouse clocks disabled, no interrupts
            out: None,
            write_ctr: false,
        }
    }
}

const CMD_OFFSET: u64 = I8042_COMMAND_PORT - I8042_DATA_PORT;

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let v = match offset {
            0 => self.out.take().unwrap_or(0),
            // Status: bit 0 output buffer full, bit 2 self-test passed, bit 4 not inhibited.
            CMD_OFFSET => u8::from(self.out.is_some()) | 0x14,
            _ => 0,
        };
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else {
            return;
        };
        match offset {
            0 if self.write_ctr => {
                self.ctr = v;
                self.write_ctr = false;
            }
            CMD_OFFSET => match v {
                0x20 => self.out = Some(self.ctr),
                0x60 => self.write_ctr = true,
                0xaa => self.out = Some(0x55), // self-test passed
                0xab | 0xa9 => self.out = Some(0x00), // port tests passed
                I8042_RESET_CMD => {
                    tracing::info!("guest pulsed the i8042 reset line");
                    (self.sink)(GuestRequest::Reset);
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// Drives the SCI line: `true` asserts it, `false` releases it (level-triggered).
pub type SciLine = Arc<dyn Fn(bool) + Send + Sync>;

/// The ACPI PM1a event and control blocks (see `boot::acpi`): the SCI_EN bit reads as
/// set, writing SLP_TYP=S5 with SLP_EN powers the VM off, and the fixed-feature power
/// button sets PWRBTN_STS, holding the SCI asserted while the guest has it enabled and
/// has not yet acknowledged it (write 1 to clear).
pub struct AcpiPm {
    sink: RequestSink,
    sci: SciLine,
    status: u16,
    /// PM1 enable register (ACPICA reads back what it enables).
    enable: u16,
    cnt: u16,
    sci_level: bool,
}

impl AcpiPm {
    pub fn new(sink: RequestSink, sci: SciLine) -> Self {
        AcpiPm {
            sink,
            sci,
            status: 0,
            enable: 0,
            cnt: 0,
            sci_level: false,
        }
    }

    /// Presses the power button. Returns whether the guest has the button enabled (a
    /// guest that has not loaded its button driver yet sees the press once it does).
    pub fn press_power_button(&mut self) -> bool {
        self.status |= super::boot::acpi::PWRBTN;
        self.update_sci();
        self.enable & super::boot::acpi::PWRBTN != 0
    }

    fn update_sci(&mut self) {
        let level = self.status & self.enable != 0;
        if level != self.sci_level {
            self.sci_level = level;
            (self.sci)(level);
        }
    }
}

const PM1_STS_OFFSET: u64 = 0;
const PM1_EN_OFFSET: u64 = 2;
const PM1_CNT_OFFSET: u64 = 4;

fn le16(data: &[u8]) -> u16 {
    let mut b = [0u8; 2];
    let n = data.len().min(2);
    b[..n].copy_from_slice(&data[..n]);
    u16::from_le_bytes(b)
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let v = match offset {
            PM1_STS_OFFSET => self.status,
            PM1_EN_OFFSET => self.enable,
            PM1_CNT_OFFSET => self.cnt | super::boot::acpi::SCI_EN,
            _ => return,
        };
        let n = data.len().min(2);
        data[..n].copy_from_slice(&v.to_le_bytes()[..n]);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let v = le16(data);
        match offset {
            // Status bits are cleared by writing 1 (a 4-byte write covers both registers).
            PM1_STS_OFFSET => {
                self.status &= !v;
                if data.len() >= 4 {
                    self.enable = le16(&data[2..]);
                }
            }
            PM1_EN_OFFSET => self.enable = v,
            PM1_CNT_OFFSET => {
                self.cnt = v & !super::boot::acpi::SLP_EN;
                let slp_typ = (v >> 10) & 7;
                if v & super::boot::acpi::SLP_EN != 0 && slp_typ == super::boot::acpi::S5_SLP_TYP {
                    tracing::info!("guest entered ACPI S5");
                    (self.sink)(GuestRequest::PowerOff);
                }
            }
            _ => {}
        }
        self.update_sci();
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

/// The BIOS debug console (QEMU's `debugcon` on port 0x402): reads answer 0xE9, which
/// tells SeaBIOS the port is there; what it writes goes to the VMM's log, line by line.
pub const DEBUGCON_PORT: u64 = 0x402;

#[derive(Default)]
pub struct DebugCon {
    line: Vec<u8>,
}

impl BusDevice for DebugCon {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = 0xe9;
        }
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        for &b in data {
            if b == b'\n' || self.line.len() >= 256 {
                let text = String::from_utf8_lossy(&self.line);
                tracing::info!(target: "firmware", "{}", text.trim_end());
                self.line.clear();
            }
            if b != b'\n' {
                self.line.push(b);
            }
        }
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

    #[test]
    fn i8042_answers_controller_commands() {
        let mut k = I8042::new(Arc::new(|_| {}));
        let mut b = [0u8];
        k.write(4, &[0x20]);
        k.read(4, &mut b);
        assert_eq!(b[0] & 1, 1);
        k.read(0, &mut b);
        assert_eq!(b[0], 0x30);
        k.write(4, &[0x60]);
        k.write(0, &[0x47]);
        k.write(4, &[0x20]);
        k.read(0, &mut b);
        assert_eq!(b[0], 0x47);
        k.read(4, &mut b);
        assert_eq!(b[0] & 1, 0);
    }

    #[test]
    fn acpi_s5_powers_off() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut pm = AcpiPm::new(Arc::new(move |r| lock(&s).push(r)), Arc::new(|_| {}));
        let mut b = [0u8; 2];
        pm.read(4, &mut b);
        assert_eq!(u16::from_le_bytes(b) & 1, 1);
        pm.write(4, &(3u16 << 10 | 1 << 13).to_le_bytes());
        assert!(lock(&seen).is_empty());
        pm.write(2, &0x20u16.to_le_bytes());
        pm.read(2, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0x20);
        pm.write(4, &(5u16 << 10 | 1 << 13).to_le_bytes());
        assert_eq!(*lock(&seen), vec![GuestRequest::PowerOff]);
    }

    #[test]
    fn power_button_raises_the_sci_until_acknowledged() {
        let sci = Arc::new(Mutex::new(Vec::new()));
        let l = sci.clone();
        let mut pm = AcpiPm::new(Arc::new(|_| {}), Arc::new(move |v| lock(&l).push(v)));
        // Pressed before the guest enabled the button: latched, no interrupt yet.
        assert!(!pm.press_power_button());
        assert!(lock(&sci).is_empty());
        let mut b = [0u8; 2];
        pm.read(0, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0x100);
        // Enabling it delivers the latched press.
        pm.write(2, &0x100u16.to_le_bytes());
        assert_eq!(*lock(&sci), vec![true]);
        // Writing 0 to the status changes nothing; writing the bit acknowledges it.
        pm.write(0, &0u16.to_le_bytes());
        assert_eq!(*lock(&sci), vec![true]);
        pm.write(0, &0x100u16.to_le_bytes());
        assert_eq!(*lock(&sci), vec![true, false]);
        pm.read(0, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0);
        // A second press with the button enabled interrupts at once.
        assert!(pm.press_power_button());
        assert_eq!(*lock(&sci), vec![true, false, true]);
        // A 4-byte write acknowledges the status and sets the enable register together.
        pm.write(0, &[0x00, 0x01, 0x00, 0x00]);
        assert_eq!(*lock(&sci), vec![true, false, true, false]);
        assert!(!pm.press_power_button());
    }
}
