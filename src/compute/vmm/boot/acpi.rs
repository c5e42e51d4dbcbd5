//! Minimal ACPI tables so a stock Linux (Debian's cloud kernel has no MP-table parser and
//! no virtio-mmio command-line devices) finds every vCPU, the IOAPIC, the virtio-mmio
//! devices and a way to power off:
//! RSDP → XSDT → FADT (→ DSDT) and MADT. The DSDT holds `\_S5` and one `LNRO0005`
//! device per virtio-mmio window; the FADT's PM1a control block is port
//! [`PM1A_CNT_PORT`], whose S5 write the VMM reports as a power-off, and its reset
//! register is the i8042 command port with value 0xFE. The power button is the fixed-feature
//! one (PWRBTN_STS/PWRBTN_EN in the PM1a event block, signalled on the SCI, IRQ 9, level
//! and active high as the MADT's interrupt source override says): pressing it is how the
//! host asks a guest to shut down cleanly.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::super::memory::{IOAPIC_ADDR, LAPIC_ADDR};

/// Where the RSDP goes (the kernel scans 0xE0000..0x100000); the other tables follow.
pub const RSDP_ADDR: u64 = 0xe_0000;
/// PM1a event block (status + enable, 4 bytes) and control block (2 bytes).
pub const PM1A_EVT_PORT: u16 = 0x600;
pub const PM1A_CNT_PORT: u16 = 0x604;
pub const PM_PORTS_LEN: u64 = 8;
/// SLP_TYP value the DSDT's `\_S5` names, and the SLP_EN bit.
pub const S5_SLP_TYP: u16 = 5;
pub const SLP_EN: u16 = 1 << 13;
/// SCI_EN: reads of PM1a_CNT report ACPI mode as already on.
pub const SCI_EN: u16 = 1;
pub const SCI_IRQ: u16 = 9;
/// PWRBTN_STS (PM1 status) and PWRBTN_EN (PM1 enable) bit.
pub const PWRBTN: u16 = 1 << 8;
const OEM_ID: &[u8; 6] = b"STRATA";
const OEM_TABLE_ID: &[u8; 8] = b"STRATAVM";

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("ACPI tables of {0} bytes do not fit below 1 MiB")]
    TooBig(usize),
    #[error("cannot write ACPI tables into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// A virtio-mmio window to describe in the DSDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    pub base: u64,
    pub len: u64,
    pub gsi: u32,
}

pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// A system description table: header (checksum fixed up by [`finish`]) + body.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0);
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(b"STRA");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// AML PkgLength for a body of `len` bytes (the encoding counts its own bytes).
pub fn pkg_length(len: usize) -> Vec<u8> {
    if len + 1 < 0x40 {
        return vec![(len + 1) as u8];
    }
    for extra in 1..=3usize {
        let total = len + 1 + extra;
        if total < 1 << (4 + 8 * extra) {
            let mut v = vec![((extra as u8) << 6) | (total & 0xf) as u8];
            for i in 0..extra {
                v.push((total >> (4 + 8 * i)) as u8);
            }
            return v;
        }
    }
    vec![0]
}

fn name(seg: &[u8; 4], value: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08];
    v.extend_from_slice(seg);
    v.extend_from_slice(value);
    v
}

fn aml_dword(n: u32) -> Vec<u8> {
    let mut v = vec![0x0c];
    v.extend_from_slice(&n.to_le_bytes());
    v
}

fn aml_string(s: &str) -> Vec<u8> {
    let mut v = vec![0x0d];
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

fn with_pkg(op: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = op.to_vec();
    v.extend_from_slice(&pkg_length(body.len()));
    v.extend_from_slice(body);
    v
}

/// `Device(Vnnn) { _HID "LNRO0005", _UID n, _CRS { Memory32Fixed, Interrupt } }`.
fn virtio_device(index: usize, d: &MmioDevice) -> Vec<u8> {
    let mut crs = Vec::new();
    crs.extend_from_slice(&[0x86, 0x09, 0x00, 0x01]); // Memory32Fixed, read-write
    crs.extend_from_slice(&(d.base as u32).to_le_bytes());
    crs.extend_from_slice(&(d.len as u32).to_le_bytes());
    // Extended interrupt: consumer, edge, active-high, exclusive; one GSI.
    crs.extend_from_slice(&[0x89, 0x06, 0x00, 0x03, 0x01]);
    crs.extend_from_slice(&d.gsi.to_le_bytes());
    crs.extend_from_slice(&[0x79, 0x00]);
    let mut buf_body = vec![0x0a, crs.len() as u8];
    buf_body.extend_from_slice(&crs);
    let buffer = with_pkg(&[0x11], &buf_body);

    let seg = format!("V{:03X}", index % 0x1000);
    let mut seg_b = [0u8; 4];
    seg_b.copy_from_slice(seg.as_bytes());
    let mut body = seg_b.to_vec();
    body.extend(name(b"_HID", &aml_string("LNRO0005")));
    body.extend(name(b"_UID", &aml_dword(index as u32)));
    body.extend(name(b"_CRS", &buffer));
    with_pkg(&[0x5b, 0x82], &body)
}

/// The DSDT: `\_S5` and the virtio-mmio devices under `\_SB`.
pub fn build_dsdt(devices: &[MmioDevice]) -> Vec<u8> {
    let mut aml = Vec::new();
    // Name(\_S5, Package() { 5, 0 })
    let pkg = with_pkg(&[0x12], &[0x02, 0x0a, S5_SLP_TYP as u8, 0x00]);
    aml.extend(name(b"_S5_", &pkg));
    let mut sb = b"\\_SB_".to_vec();
    for (i, d) in devices.iter().enumerate() {
        sb.extend(virtio_device(i, d));
    }
    aml.extend(with_pkg(&[0x10], &sb));
    sdt(b"DSDT", 2, &aml)
}

fn gas_io(port: u16, bits: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O
    g[1] = bits;
    g[3] = 1; // byte access
    g[4..6].copy_from_slice(&port.to_le_bytes());
    g
}

/// FADT (revision 6) pointing at the DSDT, with PM1a blocks and the reset register.
pub fn build_fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut b = vec![0u8; 276 - 36];
    let put = |b: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        b[off - 36..off - 36 + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut b, 40, &(dsdt_addr as u32).to_le_bytes());
    put(&mut b, 46, &SCI_IRQ.to_le_bytes());
    put(&mut b, 56, &u32::from(PM1A_EVT_PORT).to_le_bytes());
    put(&mut b, 64, &u32::from(PM1A_CNT_PORT).to_le_bytes());
    put(&mut b, 88, &[4, 2]); // PM1_EVT_LEN, PM1_CNT_LEN
                              // IAPC_BOOT_ARCH: legacy devices; no 8042 flag, so Linux skips probing a keyboard
                              // controller (seconds of timeouts). Port 0x64 still resets (`reboot=k`, RESET_REG).
    put(&mut b, 109, &1u16.to_le_bytes());
    // Flags: WBINVD, fixed-feature power button (PWR_BUTTON clear), no sleep button
    // (SLP_BUTTON set: control-method, and none is defined), reset register supported.
    let flags: u32 = 1 | (1 << 5) | (1 << 10);
    put(&mut b, 112, &flags.to_le_bytes());
    put(&mut b, 116, &gas_io(0x64, 8));
    put(&mut b, 128, &[0xfe]);
    put(&mut b, 140, &dsdt_addr.to_le_bytes());
    sdt(b"FACP", 6, &b)
}

/// MADT: one enabled LAPIC per vCPU, the IOAPIC, the SCI as level/active-high (ISA IRQs
/// default to edge; without an override Linux would program it active low), LINT1 as NMI.
pub fn build_madt(vcpus: u8) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: 8259s present
    for id in 0..vcpus {
        b.extend_from_slice(&[0, 8, id, id]);
        b.extend_from_slice(&1u32.to_le_bytes());
    }
    b.extend_from_slice(&[1, 12, vcpus, 0]);
    b.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    // Interrupt source override: ISA bus 0, IRQ = GSI = SCI; flags: active high (01), level (11).
    b.extend_from_slice(&[2, 10, 0, SCI_IRQ as u8]);
    b.extend_from_slice(&u32::from(SCI_IRQ).to_le_bytes());
    b.extend_from_slice(&0x000du16.to_le_bytes());
    b.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    sdt(b"APIC", 4, &b)
}

fn build_rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(36);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0);
    r.extend_from_slice(OEM_ID);
    r.push(2);
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&36u32.to_le_bytes());
    r.extend_from_slice(&xsdt_addr.to_le_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// Lays out all tables from `RSDP_ADDR`; returns (address, bytes) pieces.
pub fn build_tables(vcpus: u8, devices: &[MmioDevice]) -> Vec<(u64, Vec<u8>)> {
    let (rsdp, tables) = layout(RSDP_ADDR + 64, vcpus, devices);
    let mut v = vec![(RSDP_ADDR, rsdp)];
    v.extend(tables.tables);
    v
}

/// The tables other than the RSDP, laid out from an address, and where their pointers are.
pub struct Layout {
    /// (address, table): XSDT, FADT, MADT, DSDT.
    pub tables: Vec<(u64, Vec<u8>)>,
    /// Offsets (from the XSDT) of the 8-byte pointers in the XSDT and the FADT's X_DSDT,
    /// and of the FADT's 4-byte DSDT pointer.
    pub pointers64: Vec<u64>,
    pub pointers32: Vec<u64>,
}

/// Offset of the XSDT pointer in the RSDP.
pub const RSDP_XSDT_OFFSET: u32 = 24;

fn layout(xsdt_addr: u64, vcpus: u8, devices: &[MmioDevice]) -> (Vec<u8>, Layout) {
    let align = |a: u64| (a + 15) & !15;
    // XSDT has two entries: FADT and MADT.
    let fadt_addr = align(xsdt_addr + 36 + 16);
    let fadt_len = 276;
    let madt_addr = align(fadt_addr + fadt_len);
    let madt = build_madt(vcpus);
    let dsdt_addr = align(madt_addr + madt.len() as u64);
    let dsdt = build_dsdt(devices);
    let mut xsdt_body = Vec::new();
    xsdt_body.extend_from_slice(&fadt_addr.to_le_bytes());
    xsdt_body.extend_from_slice(&madt_addr.to_le_bytes());
    let rel = |a: u64| a - xsdt_addr;
    (
        build_rsdp(xsdt_addr),
        Layout {
            tables: vec![
                (xsdt_addr, sdt(b"XSDT", 1, &xsdt_body)),
                (fadt_addr, build_fadt(dsdt_addr)),
                (madt_addr, madt),
                (dsdt_addr, dsdt),
            ],
            pointers64: vec![36, 44, rel(fadt_addr) + 140],
            pointers32: vec![rel(fadt_addr) + 40],
        },
    )
}

/// The fw_cfg files through which firmware installs the same tables:
/// `etc/acpi/rsdp`, `etc/acpi/tables` (the other tables, their pointers relative to the
/// start of the file) and `etc/table-loader` (allocate both, patch the pointers, fix the
/// checksums).
pub fn fw_cfg_files(vcpus: u8, devices: &[MmioDevice]) -> Vec<(&'static str, Vec<u8>)> {
    use super::super::fw_cfg::{TableLoader, Zone};
    const RSDP: &str = "etc/acpi/rsdp";
    const TABLES: &str = "etc/acpi/tables";
    let (rsdp, l) = layout(0, vcpus, devices);
    let end = l.tables.last().map_or(0, |(a, t)| *a as usize + t.len());
    let mut blob = vec![0u8; end];
    for (a, t) in &l.tables {
        blob[*a as usize..*a as usize + t.len()].copy_from_slice(t);
    }
    let mut loader = TableLoader::default();
    loader.allocate(RSDP, 16, Zone::FSeg);
    loader.allocate(TABLES, 64, Zone::High);
    loader.add_pointer(RSDP, TABLES, RSDP_XSDT_OFFSET, 8);
    for p in &l.pointers64 {
        loader.add_pointer(TABLES, TABLES, *p as u32, 8);
    }
    for p in &l.pointers32 {
        loader.add_pointer(TABLES, TABLES, *p as u32, 4);
    }
    for (a, t) in &l.tables {
        loader.add_checksum(TABLES, *a as u32 + 9, *a as u32, t.len() as u32);
    }
    loader.add_checksum(RSDP, 8, 0, 20);
    loader.add_checksum(RSDP, 32, 0, 36);
    vec![
        (RSDP, rsdp),
        (TABLES, blob),
        ("etc/table-loader", loader.into_bytes()),
    ]
}

/// Writes the tables into guest memory.
pub fn setup_acpi(
    mem: &GuestMemoryMmap,
    vcpus: u8,
    devices: &[MmioDevice],
) -> Result<(), AcpiError> {
    let tables = build_tables(vcpus, devices);
    if let Some((addr, t)) = tables.last() {
        let end = addr + t.len() as u64;
        if end > 0x10_0000 {
            return Err(AcpiError::TooBig((end - RSDP_ADDR) as usize));
        }
    }
    for (addr, t) in tables {
        mem.write_slice(&t, GuestAddress(addr))
            .map_err(AcpiError::Write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn pkg_length_encodings() {
        assert_eq!(pkg_length(10), vec![11]);
        assert_eq!(pkg_length(62), vec![63]);
        // 63 + 2 = 65 = 0x41: two bytes, low nibble 1, next byte 0x04.
        assert_eq!(pkg_length(63), vec![0x41, 0x04]);
        // 0x1000 + 3 = 0x1003: three bytes, low nibble 3, then 0x00, 0x01.
        assert_eq!(pkg_length(0x1000), vec![0x83, 0x00, 0x01]);
    }

    #[test]
    fn every_table_checksums_to_zero_and_links_up() {
        let devs = [MmioDevice {
            base: 0xd000_0000,
            len: 0x1000,
            gsi: 5,
        }];
        let t = build_tables(2, &devs);
        let (rsdp_addr, rsdp) = &t[0];
        assert_eq!(*rsdp_addr, RSDP_ADDR);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(rsdp), 0);
        for (_, table) in &t[1..] {
            assert_eq!(sum(table), 0, "{:?}", std::str::from_utf8(&table[..4]));
            let len = u32::from_le_bytes([table[4], table[5], table[6], table[7]]) as usize;
            assert_eq!(len, table.len());
        }
        let xsdt_ptr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        assert_eq!(xsdt_ptr, t[1].0);
        let xsdt = &t[1].1;
        let fadt_ptr = u64::from_le_bytes(xsdt[36..44].try_into().unwrap());
        assert_eq!(fadt_ptr, t[2].0);
        let fadt = &t[2].1;
        assert_eq!(&fadt[..4], b"FACP");
        let x_dsdt = u64::from_le_bytes(fadt[140..148].try_into().unwrap());
        assert_eq!(x_dsdt, t[4].0);
        assert_eq!(
            u32::from_le_bytes(fadt[64..68].try_into().unwrap()),
            u32::from(PM1A_CNT_PORT)
        );
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_eq!(flags & (1 << 4), 0, "fixed-feature power button");
        assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), SCI_IRQ);
    }

    #[test]
    fn madt_lists_each_cpu() {
        let m = build_madt(3);
        let entries = &m[44..];
        let lapics: Vec<&[u8]> = entries.chunks(8).take(3).collect();
        for (i, e) in lapics.iter().enumerate() {
            assert_eq!((e[0], e[1], e[3]), (0, 8, i as u8));
        }
        assert_eq!(entries[24], 1); // IOAPIC entry type
        let iso = &entries[36..46];
        assert_eq!((iso[0], iso[1], iso[3]), (2, 10, 9));
        assert_eq!(u16::from_le_bytes([iso[8], iso[9]]), 0x000d);
        assert_eq!(entries[46], 4); // LAPIC NMI
    }

    #[test]
    fn dsdt_describes_virtio_devices() {
        let devs = [
            MmioDevice {
                base: 0xd000_0000,
                len: 0x1000,
                gsi: 5,
            },
            MmioDevice {
                base: 0xd000_1000,
                len: 0x1000,
                gsi: 6,
            },
        ];
        let d = build_dsdt(&devs);
        let hay = |needle: &[u8]| d.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(hay(b"LNRO0005\0"), 2);
        assert_eq!(hay(b"_S5_"), 1);
        assert_eq!(hay(b"V001"), 1);
        assert_eq!(hay(&0xd000_1000u32.to_le_bytes()), 1);
    }

    #[test]
    fn loader_files_patch_to_the_same_tables() {
        let devs = [MmioDevice {
            base: 0xd000_0000,
            len: 0x1000,
            gsi: 5,
        }];
        let files = fw_cfg_files(2, &devs);
        let get = |n: &str| files.iter().find(|(f, _)| *f == n).unwrap().1.clone();
        let (mut rsdp, mut tables) = (get("etc/acpi/rsdp"), get("etc/acpi/tables"));
        let loader = get("etc/table-loader");
        assert_eq!(loader.len() % 128, 0);
        // Run the loader as firmware does, with the tables placed at 0x7fe0000.
        let base = 0x7fe_0000u64;
        let name = |b: &[u8]| {
            let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
            String::from_utf8(b[..end].to_vec()).unwrap()
        };
        for c in loader.chunks(128) {
            let cmd = u32::from_le_bytes(c[..4].try_into().unwrap());
            let file = name(&c[4..60]);
            let buf = if file == "etc/acpi/rsdp" {
                &mut rsdp
            } else {
                &mut tables
            };
            match cmd {
                2 => {
                    assert_eq!(name(&c[60..116]), "etc/acpi/tables");
                    let off = u32::from_le_bytes(c[116..120].try_into().unwrap()) as usize;
                    let size = c[120] as usize;
                    let mut v = [0u8; 8];
                    v[..size].copy_from_slice(&buf[off..off + size]);
                    let patched = (u64::from_le_bytes(v) + base).to_le_bytes();
                    buf[off..off + size].copy_from_slice(&patched[..size]);
                }
                3 => {
                    let off = u32::from_le_bytes(c[60..64].try_into().unwrap()) as usize;
                    let start = u32::from_le_bytes(c[64..68].try_into().unwrap()) as usize;
                    let len = u32::from_le_bytes(c[68..72].try_into().unwrap()) as usize;
                    let s = sum(&buf[start..start + len]);
                    buf[off] = buf[off].wrapping_sub(s);
                }
                _ => {}
            }
        }
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(&rsdp), 0);
        assert_eq!(
            u64::from_le_bytes(rsdp[24..32].try_into().unwrap()),
            base,
            "RSDP points at the XSDT"
        );
        // The same tables as direct boot's, relocated to `base`.
        let direct = layout(base, 2, &devs).1;
        for (a, t) in &direct.tables {
            let off = (*a - base) as usize;
            assert_eq!(&tables[off..off + t.len()], &t[..]);
        }
    }
}
