//! The firmware configuration device (QEMU's `fw_cfg`, port interface): how the VMM hands
//! firmware (SeaBIOS) the memory map, the vCPU count and the ACPI tables.
//!
//! Ports: [`FW_CFG_PORT`] selects an item (16-bit write), [`FW_CFG_PORT`]` + 1` reads the
//! selected item's bytes one after the other (reads past its end give zeros). Items: the
//! signature `"QEMU"` (key 0), the interface id (key 1: the traditional port interface only,
//! no DMA), the vCPU counts (keys 5 and 0x0f), and named files listed in the file directory
//! (key 0x19: a big-endian count, then per file a big-endian size and key and a 56-byte
//! name). Files get keys from 0x20 in the order they are added. Unknown keys read as zeros,
//! which firmware takes as "no entries" for the legacy tables (NUMA, SMBIOS, ACPI).
//!
//! [`TableLoader`] writes the `etc/table-loader` commands (QEMU's BIOS linker/loader
//! format: 128-byte ALLOCATE, ADD_POINTER and ADD_CHECKSUM entries) by which the firmware
//! places the ACPI tables in its own memory, patches the pointers between them and fixes
//! their checksums.

use super::bus::BusDevice;

/// The selector port; the data port is the next one.
pub const FW_CFG_PORT: u64 = 0x510;
/// Ports the device answers (selector: 2 bytes, data: 1).
pub const FW_CFG_PORTS_LEN: u64 = 2;

const KEY_SIGNATURE: u16 = 0x00;
const KEY_ID: u16 = 0x01;
const KEY_NB_CPUS: u16 = 0x05;
const KEY_MAX_CPUS: u16 = 0x0f;
const KEY_FILE_DIR: u16 = 0x19;
const KEY_FIRST_FILE: u16 = 0x20;
/// Interface id: bit 0, the traditional port interface.
const ID_TRADITIONAL: u32 = 1;
/// Longest file name, with its terminating zero.
pub const FILE_NAME_LEN: usize = 56;

#[derive(Debug, thiserror::Error)]
pub enum FwCfgError {
    #[error("fw_cfg file name {0:?} is longer than {max} bytes", max = FILE_NAME_LEN - 1)]
    NameTooLong(String),
    #[error("fw_cfg file {0:?} is added twice")]
    Duplicate(String),
    #[error("fw_cfg file {name:?} of {len} bytes is too large")]
    TooLarge { name: String, len: usize },
}

/// The device: its items, and the position of the next data read.
pub struct FwCfg {
    items: std::collections::BTreeMap<u16, Vec<u8>>,
    files: Vec<(String, u16)>,
    selected: u16,
    pos: usize,
}

impl FwCfg {
    pub fn new(vcpus: u8) -> Self {
        let mut items = std::collections::BTreeMap::new();
        items.insert(KEY_SIGNATURE, b"QEMU".to_vec());
        items.insert(KEY_ID, ID_TRADITIONAL.to_le_bytes().to_vec());
        items.insert(KEY_NB_CPUS, u16::from(vcpus).to_le_bytes().to_vec());
        items.insert(KEY_MAX_CPUS, u16::from(vcpus).to_le_bytes().to_vec());
        let mut d = FwCfg {
            items,
            files: Vec::new(),
            selected: 0,
            pos: 0,
        };
        d.rebuild_dir();
        d
    }

    /// Adds a named file (`etc/e820`, `etc/acpi/tables`, ...).
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<(), FwCfgError> {
        if name.len() >= FILE_NAME_LEN {
            return Err(FwCfgError::NameTooLong(name.into()));
        }
        if self.files.iter().any(|(n, _)| n == name) {
            return Err(FwCfgError::Duplicate(name.into()));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(FwCfgError::TooLarge {
                name: name.into(),
                len: data.len(),
            });
        }
        let key = KEY_FIRST_FILE + self.files.len() as u16;
        self.items.insert(key, data);
        self.files.push((name.to_string(), key));
        self.rebuild_dir();
        Ok(())
    }

    fn rebuild_dir(&mut self) {
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        for (name, key) in &self.files {
            let len = self.items.get(key).map_or(0, Vec::len) as u32;
            dir.extend_from_slice(&len.to_be_bytes());
            dir.extend_from_slice(&key.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut n = [0u8; FILE_NAME_LEN];
            n[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&n);
        }
        self.items.insert(KEY_FILE_DIR, dir);
    }

    fn select(&mut self, key: u16) {
        self.selected = key;
        self.pos = 0;
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset != 1 {
            return;
        }
        // A string input (`rep insb`) arrives as one read of many bytes.
        if let Some(item) = self.items.get(&self.selected) {
            let from = self.pos.min(item.len());
            let n = (item.len() - from).min(data.len());
            data[..n].copy_from_slice(&item[from..from + n]);
        }
        self.pos = self.pos.saturating_add(data.len());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && !data.is_empty() {
            let mut b = [0u8; 2];
            let n = data.len().min(2);
            b[..n].copy_from_slice(&data[..n]);
            self.select(u16::from_le_bytes(b));
        }
    }
}

/// Where the firmware allocates a file: anywhere in high memory, or in the F segment
/// (0xE0000-0xFFFFF, where an OS looks for the RSDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    High = 1,
    FSeg = 2,
}

const CMD_ALLOCATE: u32 = 1;
const CMD_ADD_POINTER: u32 = 2;
const CMD_ADD_CHECKSUM: u32 = 3;
const CMD_LEN: usize = 128;

/// The `etc/table-loader` script.
#[derive(Debug, Default)]
pub struct TableLoader {
    bytes: Vec<u8>,
}

impl TableLoader {
    fn command(&mut self, cmd: u32, body: &[u8]) {
        let mut c = [0u8; CMD_LEN];
        c[..4].copy_from_slice(&cmd.to_le_bytes());
        c[4..4 + body.len()].copy_from_slice(body);
        self.bytes.extend_from_slice(&c);
    }

    fn name(n: &str) -> [u8; FILE_NAME_LEN] {
        let mut b = [0u8; FILE_NAME_LEN];
        let len = n.len().min(FILE_NAME_LEN - 1);
        b[..len].copy_from_slice(&n.as_bytes()[..len]);
        b
    }

    /// The firmware copies `file` into memory of `zone`, aligned to `align` bytes.
    pub fn allocate(&mut self, file: &str, align: u32, zone: Zone) {
        let mut b = Self::name(file).to_vec();
        b.extend_from_slice(&align.to_le_bytes());
        b.push(zone as u8);
        self.command(CMD_ALLOCATE, &b);
    }

    /// The `size`-byte little-endian value at `offset` in `dest` is an offset into `src`:
    /// the firmware adds `src`'s address to it.
    pub fn add_pointer(&mut self, dest: &str, src: &str, offset: u32, size: u8) {
        let mut b = Self::name(dest).to_vec();
        b.extend_from_slice(&Self::name(src));
        b.extend_from_slice(&offset.to_le_bytes());
        b.push(size);
        self.command(CMD_ADD_POINTER, &b);
    }

    /// The byte at `offset` in `file` is set so that bytes `start..start + len` sum to 0.
    pub fn add_checksum(&mut self, file: &str, offset: u32, start: u32, len: u32) {
        let mut b = Self::name(file).to_vec();
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&start.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        self.command(CMD_ADD_CHECKSUM, &b);
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The `etc/e820` file: (address, length, type) entries, 20 bytes each, little-endian.
pub fn e820_file(entries: &[(u64, u64, u32)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(entries.len() * 20);
    for (addr, len, kind) in entries {
        v.extend_from_slice(&addr.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(d: &mut FwCfg, key: u16, n: usize) -> Vec<u8> {
        d.write(0, &key.to_le_bytes());
        let mut out = Vec::new();
        for _ in 0..n {
            let mut b = [0u8; 1];
            d.read(1, &mut b);
            out.push(b[0]);
        }
        out
    }

    #[test]
    fn signature_id_and_cpus() {
        let mut d = FwCfg::new(3);
        assert_eq!(read(&mut d, KEY_SIGNATURE, 4), b"QEMU");
        assert_eq!(read(&mut d, KEY_ID, 4), vec![1, 0, 0, 0]);
        assert_eq!(read(&mut d, KEY_MAX_CPUS, 2), vec![3, 0]);
        // Past the end, and unknown keys, read as zeros.
        assert_eq!(read(&mut d, KEY_SIGNATURE, 6)[4..], [0, 0]);
        assert_eq!(read(&mut d, 0x8000, 2), vec![0, 0]);
    }

    #[test]
    fn files_are_listed_and_read_back_in_one_string_read() {
        let mut d = FwCfg::new(1);
        d.add_file("etc/e820", e820_file(&[(0, 0x9fc00, 1)]))
            .unwrap();
        d.add_file("etc/boot-cpus", vec![1, 0]).unwrap();
        assert!(matches!(
            d.add_file("etc/boot-cpus", vec![]),
            Err(FwCfgError::Duplicate(_))
        ));
        assert!(matches!(
            d.add_file(&"x".repeat(56), vec![]),
            Err(FwCfgError::NameTooLong(_))
        ));
        let dir = read(&mut d, KEY_FILE_DIR, 4 + 2 * 64);
        assert_eq!(u32::from_be_bytes(dir[..4].try_into().unwrap()), 2);
        let e = &dir[4..68];
        assert_eq!(u32::from_be_bytes(e[..4].try_into().unwrap()), 20);
        let key = u16::from_be_bytes([e[4], e[5]]);
        assert_eq!(&e[8..16], b"etc/e820");
        assert_eq!(e[16], 0);
        let e2 = &dir[68..];
        assert_eq!(&e2[8..21], b"etc/boot-cpus");
        // `rep insb` of the whole file at once.
        d.write(0, &key.to_le_bytes());
        let mut buf = [0xaau8; 24];
        d.read(1, &mut buf);
        assert_eq!(u64::from_le_bytes(buf[8..16].try_into().unwrap()), 0x9fc00);
        assert_eq!(u32::from_le_bytes(buf[16..20].try_into().unwrap()), 1);
        assert_eq!(buf[20..], [0, 0, 0, 0]);
        // Reselecting rewinds.
        assert_eq!(read(&mut d, key, 1), vec![0]);
    }

    #[test]
    fn loader_commands_are_128_bytes_in_qemu_layout() {
        let mut l = TableLoader::default();
        l.allocate("etc/acpi/rsdp", 16, Zone::FSeg);
        l.add_pointer("etc/acpi/rsdp", "etc/acpi/tables", 24, 8);
        l.add_checksum("etc/acpi/rsdp", 8, 0, 20);
        let b = l.into_bytes();
        assert_eq!(b.len(), 3 * 128);
        assert_eq!(u32::from_le_bytes(b[..4].try_into().unwrap()), 1);
        assert_eq!(&b[4..17], b"etc/acpi/rsdp");
        assert_eq!(u32::from_le_bytes(b[60..64].try_into().unwrap()), 16);
        assert_eq!(b[64], 2);
        let p = &b[128..256];
        assert_eq!(u32::from_le_bytes(p[..4].try_into().unwrap()), 2);
        assert_eq!(&p[60..75], b"etc/acpi/tables");
        assert_eq!(u32::from_le_bytes(p[116..120].try_into().unwrap()), 24);
        assert_eq!(p[120], 8);
        let c = &b[256..];
        assert_eq!(u32::from_le_bytes(c[..4].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(c[60..64].try_into().unwrap()), 8);
        assert_eq!(u32::from_le_bytes(c[64..68].try_into().unwrap()), 0);
        assert_eq!(u32::from_le_bytes(c[68..72].try_into().unwrap()), 20);
    }
}
