//! Strata's own virtual machine monitor on KVM, built from the rust-vmm crates.
//!
//! One [`vm::Vmm`] runs one VM in the calling process (Strata runs one worker process per
//! VM). Layout: [`memory`] (guest RAM and the fixed x86_64 address map), [`boot`] (direct
//! Linux boot: kernel, initramfs, zero page with e820, MP table, ACPI tables, CPU state),
//! [`serial`] (16550 console captured to a ring, a log file and subscribers), [`bus`]
//! (port and MMIO dispatch, i8042 reset, ACPI PM1a power-off, debug-exit port),
//! [`virtio`] (virtio-mmio transport, block, net, rng), [`vcpu`] and [`vm`] (KVM objects,
//! vCPU threads, pause/resume/stop, guest events).
//!
//! Guest-visible machine: 64-bit boot protocol entry, RAM below 3 GiB then from 4 GiB,
//! in-kernel IOAPIC/PIC/PIT, COM1 at 0x3f8 (IRQ 4), virtio-mmio windows from 0xd000_0000
//! described in the ACPI DSDT (`LNRO0005`, so stock kernels without
//! `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` find them), SMP through the ACPI MADT (and an MP
//! table for kernels with `CONFIG_X86_MPPARSE`), power-off through ACPI S5.
//!
//! Usage:
//! ```ignore
//! # use std::path::PathBuf;
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use vmm_dev::vm::{VmConfig, Vmm, VmmEvent};
//! let mut cfg = VmConfig::new(PathBuf::from("vmlinuz"));
//! cfg.initrd = Some(PathBuf::from("initramfs.cpio.gz"));
//! let vmm = Vmm::new(cfg)?; // builds everything, runs nothing
//! let console = vmm.console(); // ring + subscribers, before any output
//! let handle = vmm.start()?;
//! while let Some(ev) = handle.next_event() {
//!     if ev != VmmEvent::Started { break; } // GuestReboot / GuestPowerOff / Error
//! }
//! handle.stop();
//! # let _ = console; Ok(()) }
//! ```

pub mod boot;
pub mod bus;
pub mod cmos;
pub mod fw_cfg;
pub mod memory;
pub mod serial;
pub mod vcpu;
pub mod virtio;
pub mod vm;
