//! The CMOS RTC and NVRAM (ports 0x70 index, 0x71 data), as PC firmware reads them: the
//! date and time (UTC, BCD, 24-hour, never "update in progress"), and the memory sizes and
//! CPU count QEMU's board code stores there, from which SeaBIOS takes the RAM size below
//! 4 GiB before it reads `etc/e820`. Writes to the NVRAM are kept; the clock is read-only.

use super::bus::BusDevice;

pub const CMOS_PORT: u64 = 0x70;
pub const CMOS_PORTS_LEN: u64 = 2;

const REG_SECONDS: usize = 0x00;
const REG_MINUTES: usize = 0x02;
const REG_HOURS: usize = 0x04;
const REG_WEEKDAY: usize = 0x06;
const REG_DAY: usize = 0x07;
const REG_MONTH: usize = 0x08;
const REG_YEAR: usize = 0x09;
const REG_STATUS_A: usize = 0x0a;
const REG_STATUS_B: usize = 0x0b;
const REG_STATUS_D: usize = 0x0d;
const REG_CENTURY: usize = 0x32;

pub struct Cmos {
    index: usize,
    nvram: [u8; 128],
    /// The clock: seconds since the epoch (tests fix it).
    now: fn() -> u64,
}

fn system_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bcd(v: u64) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// Civil date (year, month, day) of a day count since 1970-01-01 (Hinnant's algorithm).
fn civil(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl Cmos {
    /// `low_ram` is the RAM below the 32-bit hole, `high_ram` the RAM from 4 GiB (bytes).
    pub fn new(low_ram: u64, high_ram: u64, vcpus: u8) -> Self {
        Self::with_clock(low_ram, high_ram, vcpus, system_now)
    }

    fn with_clock(low_ram: u64, high_ram: u64, vcpus: u8, now: fn() -> u64) -> Self {
        let mut n = [0u8; 128];
        let mut put16 = |at: usize, v: u64| {
            let v = v.min(0xffff) as u16;
            n[at..at + 2].copy_from_slice(&v.to_le_bytes());
        };
        // Base memory (KiB), extended memory between 1 and 64 MiB (KiB), memory between
        // 16 MiB and 4 GiB (64 KiB units), memory above 4 GiB (64 KiB units, 3 bytes).
        put16(0x15, 640);
        let ext_kib = (low_ram.saturating_sub(1 << 20) >> 10).min(0xfc00);
        put16(0x17, ext_kib);
        put16(0x30, ext_kib);
        put16(0x34, low_ram.saturating_sub(16 << 20) >> 16);
        let high = high_ram >> 16;
        n[0x5b] = high as u8;
        n[0x5c] = (high >> 8) as u8;
        n[0x5d] = (high >> 16) as u8;
        n[0x5f] = vcpus.saturating_sub(1);
        n[REG_STATUS_A] = 0x26; // 32.768 kHz base, 1024 Hz rate, no update in progress
        n[REG_STATUS_B] = 0x02; // 24-hour, BCD, no interrupts
        n[REG_STATUS_D] = 0x80; // valid RAM and time
        Cmos {
            index: 0,
            nvram: n,
            now,
        }
    }

    fn clock(&self, reg: usize) -> Option<u8> {
        let t = (self.now)();
        let secs = t % 86_400;
        let days = (t / 86_400) as i64;
        let (y, m, d) = civil(days);
        Some(match reg {
            REG_SECONDS => bcd(secs % 60),
            REG_MINUTES => bcd(secs / 60 % 60),
            REG_HOURS => bcd(secs / 3600),
            // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
            REG_WEEKDAY => bcd(((days + 4).rem_euclid(7) + 1) as u64),
            REG_DAY => bcd(d),
            REG_MONTH => bcd(m),
            REG_YEAR => bcd(y.rem_euclid(100) as u64),
            REG_CENTURY => bcd(y.div_euclid(100) as u64),
            _ => return None,
        })
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset != 1 {
            return;
        }
        let v = self
            .clock(self.index)
            .unwrap_or(self.nvram[self.index & 0x7f]);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            // Bit 7 masks NMIs; the rest is the register index.
            0 => self.index = usize::from(v & 0x7f),
            1 if self.clock(self.index).is_none()
                && !matches!(self.index, REG_STATUS_A | REG_STATUS_D) =>
            {
                self.nvram[self.index] = v;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(c: &mut Cmos, r: u8) -> u8 {
        c.write(0, &[r]);
        let mut b = [0u8];
        c.read(1, &mut b);
        b[0]
    }

    #[test]
    fn memory_sizes_and_cpus_as_seabios_reads_them() {
        let mut c = Cmos::new(3 << 30, 1 << 30, 4);
        let extmem2 = (u64::from(reg(&mut c, 0x34)) << 16) | (u64::from(reg(&mut c, 0x35)) << 24);
        assert_eq!(extmem2 + (16 << 20), 3 << 30);
        let high = (u64::from(reg(&mut c, 0x5b)) << 16)
            | (u64::from(reg(&mut c, 0x5c)) << 24)
            | (u64::from(reg(&mut c, 0x5d)) << 32);
        assert_eq!(high, 1 << 30);
        assert_eq!(reg(&mut c, 0x5f), 3);
        let small = Cmos::new(256 << 20, 0, 1);
        assert_eq!(
            (u64::from(small.nvram[0x34]) << 16 | u64::from(small.nvram[0x35]) << 24) + (16 << 20),
            256 << 20
        );
    }

    #[test]
    fn clock_is_bcd_utc() {
        // 2026-12-07 21:05:09 UTC, a Monday.
        let mut c = Cmos::with_clock(64 << 20, 0, 1, || 1_796_677_509);
        assert_eq!(reg(&mut c, 0x09), 0x26);
        assert_eq!(reg(&mut c, 0x32), 0x20);
        assert_eq!(reg(&mut c, 0x08), 0x12);
        assert_eq!(reg(&mut c, 0x07), 0x07);
        assert_eq!(reg(&mut c, 0x04), 0x21);
        assert_eq!(reg(&mut c, 0x02), 0x05);
        assert_eq!(reg(&mut c, 0x00), 0x09);
        assert_eq!(reg(&mut c, 0x06), 2);
        assert_eq!(reg(&mut c, 0x0a) & 0x80, 0, "no update in progress");
        // NVRAM keeps writes; the NMI mask bit does not change the index.
        c.write(0, &[0x80 | 0x40]);
        c.write(1, &[0x5a]);
        assert_eq!(reg(&mut c, 0x40), 0x5a);
        c.write(0, &[0x00]);
        c.write(1, &[0x99]);
        assert_eq!(reg(&mut c, 0x00), 0x09, "the clock is read-only");
    }
}
