//! Guest physical memory: the x86_64 address map and RAM allocation.
//!
//! RAM starts at 0. When the guest has more RAM than fits below the 32-bit MMIO hole
//! (`MMIO_HOLE_START`..4 GiB, where the virtio-mmio windows, the IOAPIC and the LAPIC
//! live), the rest is placed from 4 GiB upwards.

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Start of the 32-bit hole reserved for device MMIO (3 GiB).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End (exclusive) of the 32-bit hole: 4 GiB.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// First virtio-mmio window; each device gets `VIRTIO_MMIO_SIZE` bytes.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio window (the guest kernel's `4K@addr:irq` form).
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// GSIs handed to virtio devices, in order: free ISA lines (not 0-4 PIT, keyboard,
/// cascade, serial; not 8 RTC, 9 ACPI SCI, 12 mouse, 13 FPU, 14/15 IDE), then the
/// IOAPIC-only pins 16-23.
pub const VIRTIO_GSIS: [u32; 13] = [5, 6, 7, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23];
/// IOAPIC and LAPIC MMIO bases (fixed by the in-kernel irqchip).
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// KVM needs three pages for the real-mode TSS and one for the identity map, in the hole.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;

/// Low-memory boot structures.
pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Longest command line we accept (the kernel's own limit on x86_64 is 2048).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area; the MP table lives here, and usable low RAM ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// Where the protected-mode kernel is loaded (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;

/// Smallest guest we accept: the kernel at 1 MiB plus a little room.
pub const MIN_MEM_MIB: u64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {mib} MiB is too small (need at least {MIN_MEM_MIB} MiB)")]
    TooSmall { mib: u64 },
    #[error("guest memory of {mib} MiB does not fit the address space")]
    TooLarge { mib: u64 },
    #[error("cannot map {mib} MiB of guest memory")]
    Mmap {
        mib: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
}

/// The RAM ranges for a guest of `mem_mib` MiB: below the MMIO hole, then from 4 GiB.
pub fn ram_ranges(mem_mib: u64) -> Result<Vec<(GuestAddress, usize)>, MemoryError> {
    if mem_mib < MIN_MEM_MIB {
        return Err(MemoryError::TooSmall { mib: mem_mib });
    }
    let bytes = mem_mib
        .checked_mul(1 << 20)
        .ok_or(MemoryError::TooLarge { mib: mem_mib })?;
    let low = bytes.min(MMIO_HOLE_START);
    let mut ranges = vec![(GuestAddress(0), to_usize(low, mem_mib)?)];
    let high = bytes - low;
    if high > 0 {
        MMIO_HOLE_END
            .checked_add(high)
            .ok_or(MemoryError::TooLarge { mib: mem_mib })?;
        ranges.push((GuestAddress(MMIO_HOLE_END), to_usize(high, mem_mib)?));
    }
    Ok(ranges)
}

fn to_usize(v: u64, mib: u64) -> Result<usize, MemoryError> {
    usize::try_from(v).map_err(|_| MemoryError::TooLarge { mib })
}

/// Allocates anonymous guest RAM for `mem_mib` MiB.
pub fn create_guest_memory(mem_mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges = ram_ranges(mem_mib)?;
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Mmap {
        mib: mem_mib,
        source,
    })
}

/// End (exclusive) of RAM below the MMIO hole.
pub fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    mem.iter()
        .map(|r| r.start_addr().0 + r.len())
        .filter(|end| *end <= MMIO_HOLE_START)
        .max()
        .unwrap_or(0)
}

/// Address of virtio-mmio window `index`, and its GSI.
pub fn virtio_slot(index: usize) -> Option<(u64, u32)> {
    let gsi = *VIRTIO_GSIS.get(index)?;
    Some((VIRTIO_MMIO_BASE + index as u64 * VIRTIO_MMIO_SIZE, gsi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryBackend;

    #[test]
    fn small_guest_is_one_range() {
        let r = ram_ranges(256).unwrap();
        assert_eq!(r, vec![(GuestAddress(0), 256 << 20)]);
    }

    #[test]
    fn large_guest_skips_the_hole() {
        let r = ram_ranges(4096).unwrap();
        assert_eq!(r[0], (GuestAddress(0), MMIO_HOLE_START as usize));
        assert_eq!(
            r[1],
            (
                GuestAddress(MMIO_HOLE_END),
                (4096usize << 20) - MMIO_HOLE_START as usize
            )
        );
    }

    #[test]
    fn too_small_is_an_error() {
        assert!(matches!(ram_ranges(1), Err(MemoryError::TooSmall { .. })));
    }

    #[test]
    fn allocates_and_reports_low_end() {
        let m = create_guest_memory(32).unwrap();
        assert_eq!(m.num_regions(), 1);
        assert_eq!(low_ram_end(&m), 32 << 20);
    }

    #[test]
    fn virtio_slots_stop_at_last_irq() {
        assert_eq!(virtio_slot(0), Some((VIRTIO_MMIO_BASE, 5)));
        assert_eq!(virtio_slot(5), Some((VIRTIO_MMIO_BASE + 5 * 0x1000, 16)));
        assert_eq!(virtio_slot(12), Some((VIRTIO_MMIO_BASE + 12 * 0x1000, 23)));
        assert_eq!(virtio_slot(13), None);
    }
}
