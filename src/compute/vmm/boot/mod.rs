//! x86_64 direct Linux boot: kernel and initramfs into guest RAM, the zero page with its
//! e820 map and command line, the MP table, and the 64-bit entry state of each vCPU.
//!
//! Both bzImage and ELF `vmlinux` use the 64-bit boot protocol: the boot vCPU starts in
//! long mode at the kernel's 64-bit entry with `rsi` pointing at the zero page, on
//! identity-mapped page tables covering the first GiB.

pub mod acpi;
pub mod cpu;
pub mod firmware;
pub mod mptable;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use super::memory::{
    low_ram_end, CMDLINE_ADDR, CMDLINE_MAX_SIZE, EBDA_START, HIMEM_START, MMIO_HOLE_END,
    ZERO_PAGE_ADDR,
};

pub(super) const E820_RAM: u32 = 1;
pub(super) const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// `loadflags`: the protected-mode kernel is loaded at 1 MiB.
pub const LOADED_HIGH: u8 = 0x01;
/// `loadflags`: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 0x80;
/// Default `initrd_addr_max` when the kernel gives none (ELF kernels, old headers).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;
const PAGE_SIZE: u64 = 0x1000;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load kernel {path}")]
    LoadKernel {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("kernel command line is invalid or longer than {CMDLINE_MAX_SIZE} bytes")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    #[error("cannot write the command line into guest memory")]
    LoadCmdline(#[source] linux_loader::loader::Error),
    #[error("initramfs of {size} bytes does not fit below {limit:#x} above the kernel end {kernel_end:#x}")]
    InitrdTooBig {
        size: u64,
        limit: u64,
        kernel_end: u64,
    },
    #[error("cannot write {what} into guest memory at {addr:#x}")]
    GuestWrite {
        what: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("MP table")]
    MpTable(#[from] mptable::MpTableError),
    #[error("ACPI tables")]
    Acpi(#[from] acpi::AcpiError),
    #[error("firmware")]
    Firmware(#[from] firmware::FirmwareError),
}

/// Where the kernel landed and how to enter it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelEntry {
    /// 64-bit entry point (`rip` of the boot vCPU).
    pub entry: u64,
    /// First byte after the loaded kernel image.
    pub kernel_end: u64,
    /// The bzImage setup header, absent for ELF kernels.
    pub setup_header: Option<SetupHeader>,
}

/// Copyable wrapper for the bzImage setup header (the generated type is packed).
#[derive(Debug, Clone, Copy)]
pub struct SetupHeader(pub setup_header);

impl PartialEq for SetupHeader {
    fn eq(&self, other: &Self) -> bool {
        use vm_memory::ByteValued;
        self.0.as_slice() == other.0.as_slice()
    }
}
impl Eq for SetupHeader {}

/// Where the initramfs was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdPlacement {
    pub addr: u64,
    pub size: u64,
}

fn read_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BootError + 'a {
    move |source| BootError::Read {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The file at `path`: a duplicate of `opened` (rewound) when the owner opened it already.
fn open_or_reuse(path: &Path, opened: Option<&File>) -> std::io::Result<File> {
    match opened {
        Some(f) => {
            let mut f = f.try_clone()?;
            f.seek(SeekFrom::Start(0))?;
            Ok(f)
        }
        None => File::open(path),
    }
}

/// Loads a bzImage or ELF vmlinux (told apart by the ELF magic) at 1 MiB.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
    opened: Option<&File>,
) -> Result<KernelEntry, BootError> {
    let mut file = open_or_reuse(path, opened).map_err(read_err("kernel", path))?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(read_err("kernel", path))?;
    file.seek(SeekFrom::Start(0))
        .map_err(read_err("kernel", path))?;
    let load_err = |source| BootError::LoadKernel {
        path: path.to_path_buf(),
        source,
    };
    let himem = Some(GuestAddress(HIMEM_START));
    if &magic == b"\x7fELF" {
        let r = Elf::load(mem, None, &mut file, himem).map_err(load_err)?;
        Ok(KernelEntry {
            entry: r.kernel_load.raw_value(),
            kernel_end: r.kernel_end,
            setup_header: None,
        })
    } else {
        let r = BzImage::load(mem, None, &mut file, himem).map_err(load_err)?;
        Ok(KernelEntry {
            // The 64-bit entry of a bzImage is 0x200 bytes into the protected-mode code.
            entry: r.kernel_load.raw_value() + 0x200,
            kernel_end: r.kernel_end,
            setup_header: r.setup_header.map(SetupHeader),
        })
    }
}

/// Chooses the initramfs address: page-aligned, as high as possible below both the end of
/// low RAM and the kernel's `initrd_addr_max`, and above the kernel.
pub fn initrd_addr(
    low_end: u64,
    initrd_addr_max: u64,
    kernel_end: u64,
    size: u64,
) -> Result<u64, BootError> {
    let limit = low_end.min(initrd_addr_max.saturating_add(1));
    let too_big = BootError::InitrdTooBig {
        size,
        limit,
        kernel_end,
    };
    let addr = limit.checked_sub(size).ok_or(too_big)? & !(PAGE_SIZE - 1);
    if addr < kernel_end {
        return Err(BootError::InitrdTooBig {
            size,
            limit,
            kernel_end,
        });
    }
    Ok(addr)
}

/// Reads the initramfs into guest memory at the top of low RAM.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    opened: Option<&File>,
    kernel: &KernelEntry,
) -> Result<InitrdPlacement, BootError> {
    let mut file = open_or_reuse(path, opened).map_err(read_err("initramfs", path))?;
    let size = file.metadata().map_err(read_err("initramfs", path))?.len();
    let max = kernel
        .setup_header
        .map(|h| u64::from(h.0.initrd_addr_max))
        .filter(|m| *m != 0)
        .unwrap_or(DEFAULT_INITRD_ADDR_MAX);
    let addr = initrd_addr(low_ram_end(mem), max, kernel.kernel_end, size)?;
    let len = usize::try_from(size).map_err(|_| BootError::InitrdTooBig {
        size,
        limit: max,
        kernel_end: kernel.kernel_end,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(|source| BootError::GuestWrite {
            what: "initramfs",
            addr,
            source,
        })?;
    Ok(InitrdPlacement { addr, size })
}

/// Builds a kernel command line object from text.
pub fn build_cmdline(text: &str) -> Result<Cmdline, BootError> {
    let mut c = Cmdline::new(CMDLINE_MAX_SIZE).map_err(BootError::Cmdline)?;
    c.insert_str(text).map_err(BootError::Cmdline)?;
    Ok(c)
}

/// The e820 map for `mem`: usable low RAM up to the EBDA, a reserved hole to 1 MiB, the
/// rest of low RAM, and RAM above 4 GiB.
pub fn e820_entries(mem: &GuestMemoryMmap) -> Vec<boot_e820_entry> {
    let entry = |addr: u64, size: u64, kind: u32| boot_e820_entry {
        addr,
        size,
        r#type: kind,
    };
    let mut v = vec![
        entry(0, EBDA_START, E820_RAM),
        entry(EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    let low_end = low_ram_end(mem);
    if low_end > HIMEM_START {
        v.push(entry(HIMEM_START, low_end - HIMEM_START, E820_RAM));
    }
    for r in mem.iter() {
        if r.start_addr().raw_value() >= MMIO_HOLE_END {
            v.push(entry(r.start_addr().raw_value(), r.len(), E820_RAM));
        }
    }
    v
}

/// Builds the zero page (`boot_params`) for the 64-bit boot protocol.
pub fn build_zero_page(
    mem: &GuestMemoryMmap,
    kernel: &KernelEntry,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
) -> boot_params {
    let mut params = boot_params::default();
    match kernel.setup_header {
        Some(h) => params.hdr = h.0,
        None => {
            params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
            params.hdr.header = KERNEL_HDR_MAGIC;
            params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
        }
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.loadflags |= LOADED_HIGH | CAN_USE_HEAP;
    params.hdr.heap_end_ptr = 0xfe00;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(i) = initrd {
        params.hdr.ramdisk_image = i.addr as u32;
        params.hdr.ramdisk_size = i.size as u32;
    }
    let entries = e820_entries(mem);
    for (slot, e) in params.e820_table.iter_mut().zip(entries.iter()) {
        *slot = *e;
    }
    params.e820_entries = entries.len().min(params.e820_table.len()) as u8;
    params
}

/// Everything the VM needs to start its vCPUs after [`load_guest`].
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    pub kernel: KernelEntry,
    pub initrd: Option<InitrdPlacement>,
}

/// Loads kernel, initramfs and command line, writes zero page, MP table, ACPI tables
/// (describing `devices`), GDT and page tables.
pub fn load_guest(
    mem: &GuestMemoryMmap,
    kernel_path: (&Path, Option<&File>),
    initrd_path: Option<(&Path, Option<&File>)>,
    cmdline: &str,
    vcpus: u8,
    devices: &[acpi::MmioDevice],
) -> Result<BootInfo, BootError> {
    let kernel = load_kernel(mem, kernel_path.0, kernel_path.1)?;
    let initrd = initrd_path
        .map(|(p, f)| load_initrd(mem, p, f, &kernel))
        .transpose()?;
    let cmdline = build_cmdline(cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cmdline).map_err(BootError::LoadCmdline)?;
    let len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .unwrap_or(0);
    let params = build_zero_page(mem, &kernel, len, initrd);
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|source| BootError::GuestWrite {
            what: "zero page",
            addr: ZERO_PAGE_ADDR,
            source,
        })?;
    mptable::setup_mptable(mem, vcpus)?;
    acpi::setup_acpi(mem, vcpus, devices)?;
    cpu::write_gdt_and_idt(mem)?;
    cpu::write_page_tables(mem)?;
    tracing::info!(
        entry = format_args!("{:#x}", kernel.entry),
        kernel_end = format_args!("{:#x}", kernel.kernel_end),
        initrd = ?initrd,
        "guest loaded"
    );
    Ok(BootInfo { kernel, initrd })
}

#[cfg(test)]
mod tests {
    use super::super::memory::create_guest_memory;
    use super::*;

    #[test]
    fn e820_small_guest() {
        let m = create_guest_memory(256).unwrap();
        let e = e820_entries(&m);
        assert_eq!(e.len(), 3);
        let (a, s, t) = (e[0].addr, e[0].size, e[0].r#type);
        assert_eq!((a, s, t), (0, EBDA_START, E820_RAM));
        let (a, t) = (e[1].addr, e[1].r#type);
        assert_eq!((a, t), (EBDA_START, E820_RESERVED));
        let (a, s, t) = (e[2].addr, e[2].size, e[2].r#type);
        assert_eq!(
            (a, s, t),
            (HIMEM_START, (256 << 20) - HIMEM_START, E820_RAM)
        );
    }

    #[test]
    fn initrd_goes_to_top_of_low_memory_page_aligned() {
        let a = initrd_addr(256 << 20, DEFAULT_INITRD_ADDR_MAX, 0x200_0000, 0x1234).unwrap();
        assert_eq!(a, ((256 << 20) - 0x1234) & !0xfff);
        // initrd_addr_max lower than RAM end wins.
        let a = initrd_addr(1 << 30, 0x0fff_ffff, 0x200_0000, 0x1000).unwrap();
        assert_eq!(a, 0x1000_0000 - 0x1000);
        // Overlapping the kernel is refused.
        assert!(initrd_addr(32 << 20, DEFAULT_INITRD_ADDR_MAX, 0x1f0_0000, 0x20_0000).is_err());
        assert!(initrd_addr(32 << 20, DEFAULT_INITRD_ADDR_MAX, 0, 64 << 20).is_err());
    }

    #[test]
    fn zero_page_fields() {
        let m = create_guest_memory(128).unwrap();
        let k = KernelEntry {
            entry: 0x100_0000,
            kernel_end: 0x200_0000,
            setup_header: None,
        };
        let i = InitrdPlacement {
            addr: 0x700_0000,
            size: 0x1000,
        };
        let p = build_zero_page(&m, &k, 42, Some(i));
        let hdr = p.hdr;
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ hdr.cmdline_size }, 42);
        assert_eq!({ hdr.ramdisk_image }, 0x700_0000);
        assert_eq!({ hdr.ramdisk_size }, 0x1000);
        assert_eq!({ hdr.type_of_loader }, 0xff);
        assert_eq!(
            { hdr.loadflags } & (LOADED_HIGH | CAN_USE_HEAP),
            LOADED_HIGH | CAN_USE_HEAP
        );
        assert_eq!({ hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ p.e820_entries }, 3);
    }

    #[test]
    fn load_guest_writes_cmdline_and_zero_page() {
        // A minimal "ELF kernel" is hard to fabricate; exercise the pieces after loading.
        let m = create_guest_memory(64).unwrap();
        let c = build_cmdline("console=ttyS0 panic=1").unwrap();
        load_cmdline(&m, GuestAddress(CMDLINE_ADDR), &c).unwrap();
        let mut buf = [0u8; 22];
        m.read_slice(&mut buf, GuestAddress(CMDLINE_ADDR)).unwrap();
        assert_eq!(&buf, b"console=ttyS0 panic=1\0");
    }

    #[test]
    fn bad_kernel_is_an_error_not_a_panic() {
        let m = create_guest_memory(64).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"not a kernel at all").unwrap();
        assert!(matches!(
            load_kernel(&m, &p, None),
            Err(BootError::LoadKernel { .. })
        ));
        let missing = dir.path().join("missing");
        assert!(matches!(
            load_kernel(&m, &missing, None),
            Err(BootError::Read { .. })
        ));
    }
}
