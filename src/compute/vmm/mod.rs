//! Strata's own virtual machine monitor on KVM, built from the rust-vmm crates.
//!
//! One `Vmm` runs one VM in the calling process (Strata runs one worker process per VM).
//! Layout: [`memory`] (guest RAM and the fixed x86_64 address map), [`boot`] (direct
//! Linux boot: kernel, initramfs, zero page, MP table, CPU state), [`serial`] (16550
//! console captured to a ring, a log file and subscribers), [`bus`] (port and MMIO
//! dispatch, the i8042 reset port), [`virtio`] (virtio-mmio transport, block, net, rng),
//! [`vcpu`] and [`vm`] (KVM objects, vCPU threads, pause/resume/stop, guest events).

pub mod boot;
pub mod bus;
pub mod memory;
pub mod serial;
pub mod vcpu;
pub mod virtio;
pub mod vm;
