//! Firmware boot: the VM starts in the x86 reset state inside a BIOS image (Debian's
//! SeaBIOS `bios-microvm.bin`), which finds the boot disk among the virtio-mmio devices
//! the DSDT describes, loads the image's own bootloader and runs it.
//!
//! As on QEMU's microvm: the image is mapped just below 4 GiB (where the reset vector is)
//! and its last 128 KiB are copied into RAM at 0xE0000-0xFFFFF, writable, where the BIOS
//! runs and keeps its data. The BIOS learns the machine through [`super::super::fw_cfg`]
//! (`etc/e820`, the ACPI tables through `etc/table-loader`, the vCPU count) and the CMOS
//! ([`super::super::cmos`]); Strata writes no tables into guest memory itself.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::super::fw_cfg::{e820_file, FwCfg};
use super::super::memory::{low_ram_end, KVM_IDENTITY_MAP_ADDR, MMIO_HOLE_END};
use super::super::serial::SERIAL_PORT;
use super::{acpi, open_or_reuse, read_err, BootError, E820_RAM, E820_RESERVED};

/// The part of the image mapped into low memory below 1 MiB.
const LOW_ALIAS_MAX: u64 = 128 << 10;
/// Largest image: the high mapping must end below KVM's identity map and TSS pages.
pub const FIRMWARE_MAX: u64 = MMIO_HOLE_END - (KVM_IDENTITY_MAP_ADDR + 0x4000);

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error(
        "firmware image {path} is {size} bytes; it must be a multiple of 4 KiB, at least \
         64 KiB and at most {FIRMWARE_MAX} bytes"
    )]
    Size { path: String, size: u64 },
    #[error("cannot map the firmware image")]
    Map(#[source] vm_memory::mmap::FromRangesError),
    #[error("cannot build the firmware configuration")]
    FwCfg(#[from] super::super::fw_cfg::FwCfgError),
}

/// The firmware image's own memory (mapped below 4 GiB), for the VM to register with KVM.
pub struct Firmware {
    pub rom: GuestMemoryMmap,
}

/// Reads the image, copies its tail into low RAM and maps all of it below 4 GiB.
pub fn load_firmware(
    mem: &GuestMemoryMmap,
    path: &Path,
    opened: Option<&File>,
) -> Result<Firmware, BootError> {
    let mut f = open_or_reuse(path, opened).map_err(read_err("firmware", path))?;
    let mut image = Vec::new();
    f.read_to_end(&mut image)
        .map_err(read_err("firmware", path))?;
    let size = image.len() as u64;
    if !size.is_multiple_of(0x1000) || !(0x1_0000..=FIRMWARE_MAX).contains(&size) {
        return Err(FirmwareError::Size {
            path: path.display().to_string(),
            size,
        }
        .into());
    }
    let low = size.min(LOW_ALIAS_MAX);
    let low_addr = 0x10_0000 - low;
    mem.write_slice(&image[(size - low) as usize..], GuestAddress(low_addr))
        .map_err(|source| BootError::GuestWrite {
            what: "firmware (low copy)",
            addr: low_addr,
            source,
        })?;
    let base = MMIO_HOLE_END - size;
    let rom = GuestMemoryMmap::from_ranges(&[(GuestAddress(base), size as usize)])
        .map_err(FirmwareError::Map)?;
    rom.write_slice(&image, GuestAddress(base))
        .map_err(|source| BootError::GuestWrite {
            what: "firmware",
            addr: base,
            source,
        })?;
    tracing::info!(
        path = %path.display(),
        size,
        base = format_args!("{base:#x}"),
        "firmware loaded"
    );
    Ok(Firmware { rom })
}

/// The memory map the firmware gets: RAM below the hole and from 4 GiB, and KVM's pages.
pub fn e820(mem: &GuestMemoryMmap) -> Vec<(u64, u64, u32)> {
    let mut v = vec![(0, low_ram_end(mem), E820_RAM)];
    for r in mem.iter() {
        if r.start_addr().0 >= MMIO_HOLE_END {
            v.push((r.start_addr().0, r.len(), E820_RAM));
        }
    }
    v.push((KVM_IDENTITY_MAP_ADDR, 0x4000, E820_RESERVED));
    v
}

/// The fw_cfg device for a VM: memory map, ACPI tables (through the loader), vCPU count,
/// and the serial port the BIOS mirrors its screen to.
pub fn fw_cfg(
    mem: &GuestMemoryMmap,
    vcpus: u8,
    devices: &[acpi::MmioDevice],
) -> Result<FwCfg, BootError> {
    let mut d = FwCfg::new(vcpus);
    let add = |d: &mut FwCfg, name: &str, data: Vec<u8>| -> Result<(), BootError> {
        d.add_file(name, data)
            .map_err(|e| BootError::Firmware(e.into()))
    };
    add(&mut d, "etc/e820", e820_file(&e820(mem)))?;
    for (name, data) in acpi::fw_cfg_files(vcpus, devices) {
        add(&mut d, name, data)?;
    }
    add(
        &mut d,
        "etc/boot-cpus",
        u16::from(vcpus).to_le_bytes().to_vec(),
    )?;
    add(
        &mut d,
        "etc/sercon-port",
        SERIAL_PORT.to_le_bytes().to_vec(),
    )?;
    // Firmware gives up on an unbootable disk after 5 s (then the guest resets), not 60.
    add(&mut d, "etc/boot-fail-wait", 5u32.to_le_bytes().to_vec())?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::super::super::memory::create_guest_memory;
    use super::*;

    #[test]
    fn image_is_mapped_high_and_its_tail_low() {
        let mem = create_guest_memory(64).unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bios.bin");
        let mut img = vec![0u8; 256 << 10];
        img[0] = 0x11;
        let n = img.len();
        img[n - 16] = 0xea; // the reset vector's far jump
        img[n - (128 << 10)] = 0x22;
        std::fs::write(&p, &img).unwrap();
        let fw = load_firmware(&mem, &p, None).unwrap();
        let mut b = [0u8];
        fw.rom
            .read_slice(&mut b, GuestAddress(0xffff_fff0))
            .unwrap();
        assert_eq!(b[0], 0xea);
        fw.rom
            .read_slice(&mut b, GuestAddress(0xfffc_0000))
            .unwrap();
        assert_eq!(b[0], 0x11);
        mem.read_slice(&mut b, GuestAddress(0xe_0000)).unwrap();
        assert_eq!(b[0], 0x22);
        mem.read_slice(&mut b, GuestAddress(0xf_fff0)).unwrap();
        assert_eq!(b[0], 0xea);

        std::fs::write(&p, vec![0u8; 1000]).unwrap();
        let e = load_firmware(&mem, &p, None).err().unwrap();
        assert!(
            crate::telemetry::error_chain(&e).contains("1000 bytes"),
            "{e:?}"
        );
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        assert!(
            load_firmware(&mem, &p, None).is_err(),
            "too large for the hole"
        );
    }

    #[test]
    fn memory_map_covers_ram_and_kvm_pages() {
        let mem = create_guest_memory(4096).unwrap();
        let e = e820(&mem);
        assert_eq!(e[0], (0, 0xc000_0000, E820_RAM));
        assert_eq!(e[1], (1 << 32, (4096 << 20) - 0xc000_0000, E820_RAM));
        assert_eq!(e[2].2, E820_RESERVED);
        let cfg = fw_cfg(&mem, 2, &[]);
        assert!(cfg.is_ok());
    }
}
