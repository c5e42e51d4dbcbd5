//! Smoke tests against the host's /dev/kvm: VM creation, memory, devices, vCPU setup and
//! the pause/resume/stop protocol. The host's KVM (kvm_pvm here) cannot boot Linux, so
//! these never expect guest output; they skip when /dev/kvm or the kernel is missing.
//! Kernel: $VMM_TEST_KERNEL, else the Strata test guest's vmlinuz.

use std::path::PathBuf;
use std::time::Duration;

mod common;

use strata::compute::vmm::vm::{DiskConfig, RunState, VmConfig, Vmm, VmmError, VmmEvent};

fn kernel() -> Option<PathBuf> {
    if !std::path::Path::new("/dev/kvm").exists() {
        // A host without KVM at all: nothing to test here (the nested test covers the VMM).
        eprintln!("skipped: no /dev/kvm");
        return None;
    }
    let k = std::env::var_os("VMM_TEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/out/guest/vmlinuz")
        });
    assert!(
        k.exists(),
        "no kernel at {}: run `make images-guest`",
        k.display()
    );
    Some(k)
}

#[test]
fn build_start_pause_resume_stop() {
    let Some(k) = kernel() else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut cfg = VmConfig::new(k);
    cfg.vcpus = 2;
    cfg.mem_mib = 128;
    cfg.disks.push(DiskConfig::Path {
        path: disk,
        read_only: false,
    });
    cfg.serial_log = Some(dir.path().join("console.log"));
    let h = Vmm::new(cfg).unwrap().start().unwrap();
    assert_eq!(h.next_event(), Some(VmmEvent::Started));
    std::thread::sleep(Duration::from_millis(200));
    h.pause().unwrap();
    assert_eq!(h.state(), RunState::Paused);
    h.resume();
    assert_eq!(h.state(), RunState::Running);
    std::thread::sleep(Duration::from_millis(100));
    h.stop();
    assert_eq!(
        h.next_event_timeout(Duration::from_secs(5)),
        Some(VmmEvent::Stopped)
    );
    assert_eq!(h.state(), RunState::Stopped);
    h.stop(); // idempotent
}

#[test]
fn bad_kernel_and_bad_vcpu_count_are_errors() {
    let Some(_) = kernel() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus");
    std::fs::write(&bogus, b"definitely not a kernel").unwrap();
    let err = Vmm::new(VmConfig::new(bogus)).err().unwrap();
    assert!(matches!(err, VmmError::Boot(_)), "{err:?}");
    let mut cfg = VmConfig::new(dir.path().join("x"));
    cfg.vcpus = 0;
    assert!(matches!(Vmm::new(cfg), Err(VmmError::VcpuCount(0))));
}

/// Firmware boot on the host's KVM: SeaBIOS (`bios-microvm.bin`) reads the machine from
/// fw_cfg and the CMOS, finds the virtio-mmio disk through the DSDT and runs its boot
/// sector, which prints a marker on COM1. Real-mode code is emulated slowly by this
/// host's KVM, but a BIOS and a boot sector are small enough.
#[test]
fn firmware_boots_a_disk_boot_sector() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("skipped: no /dev/kvm");
        return;
    }
    let Some(bios) = strata::compute::kvm::bios_image() else {
        panic!("no SeaBIOS microvm image: scripts/install-deps.sh installs seabios");
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, common::boot_sector_disk()).unwrap();
    // No kernel: the firmware boots the disk.
    let mut cfg = VmConfig::new(PathBuf::new());
    cfg.firmware = Some(bios);
    cfg.mem_mib = 128;
    cfg.disks.push(DiskConfig::Path {
        path: disk,
        read_only: false,
    });
    let log = dir.path().join("console.log");
    cfg.serial_log = Some(log.clone());
    let h = Vmm::new(cfg).unwrap().start().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut text = String::new();
    while std::time::Instant::now() < deadline {
        text = String::from_utf8_lossy(&h.console().snapshot()).into_owned();
        if text.contains("STRATA-FIRMWARE-BOOT") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    h.stop();
    eprintln!("console:\n{text}");
    assert!(
        text.contains("STRATA-FIRMWARE-BOOT"),
        "the boot sector did not run; console:\n{text}"
    );
}
