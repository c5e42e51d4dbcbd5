//! Smoke tests against the host's /dev/kvm: VM creation, memory, devices, vCPU setup and
//! the pause/resume/stop protocol. The host's KVM (kvm_pvm here) cannot boot Linux, so
//! these never expect guest output; they skip when /dev/kvm or the kernel is missing.
//! Kernel: $VMM_TEST_KERNEL, else the Strata test guest's vmlinuz.

use std::path::PathBuf;
use std::time::Duration;

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
