//! End to end on real KVM: this host's /dev/kvm cannot boot Linux (see
//! docs/design.md), so the test boots a "test host" Linux under QEMU TCG with emulated AMD
//! SVM, where kvm-amd gives a real /dev/kvm, and runs Strata's own VMM (`strata vmm`)
//! there: the test guest boots to userspace, reads and writes its virtio disk (the data is
//! there after a VM restart), gets an address by DHCP and pings over virtio-net, reads
//! virtio-rng, and its reboot and power-off are reported; then a single-node cluster in the
//! test host creates, boots, stops and deletes a VM through its agent with the KVM driver.
//! Every VM runs under the worker's seccomp filter; one direct run and the node's VM run
//! as unprivileged users of their own. Firmware boot: strata-tiny, a cloud image with its
//! own GRUB, boots through SeaBIOS with a config drive and two NICs to an SSH login.
//! Scenario: tests/nested/strata-vmm.sh.
//!
//! Needs root, qemu-system-x86_64 and the test guest (`make images-guest`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds a test host around `scenario` (with `@STRATA@` replaced by a stripped copy of the
/// binary), boots it, and returns its serial console and exit status.
pub fn run_in_test_host(scenario: &Path, tmp: &Path, extra: &[String]) -> (String, i32) {
    let bin = tmp.join("strata");
    let o = Command::new("strip")
        .arg("-o")
        .arg(&bin)
        .arg(env!("CARGO_BIN_EXE_strata"))
        .output()
        .expect("run strip");
    assert!(
        o.status.success(),
        "strip: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(scenario).expect("scenario");
    let script = tmp.join("scenario.sh");
    std::fs::write(&script, text.replace("@STRATA@", bin.to_str().unwrap())).unwrap();
    let initrd = tmp.join("host.cpio.gz");
    let o = Command::new(root().join("images/testhost/build.sh"))
        .arg("--scenario")
        .arg(&script)
        .arg("--bin")
        .arg(&bin)
        .arg("--out")
        .arg(&initrd)
        .args(extra)
        .output()
        .expect("run images/testhost/build.sh");
    assert!(
        o.status.success(),
        "building the test host failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A safety net: a test host that stops making progress (no console output, not even
    // the scenario's heartbeat, for HANG_SECS) is killed and booted once more, with a
    // warning: QEMU TCG's nested-SVM emulation sometimes hangs the whole test host while
    // a nested guest prints a lot, whichever VMM runs that guest. A second hang fails.
    for attempt in 1..=2 {
        let log = tmp.join(format!("host{attempt}.log"));
        match boot_test_host(&initrd, &log) {
            Some(rc) => {
                let console = std::fs::read_to_string(&log).unwrap_or_default();
                return (console, rc);
            }
            None => {
                let console = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = console.lines().rev().take(15).collect();
                eprintln!(
                    "WARNING: test host attempt {attempt} hung (no console output for {} s); last lines:\n{}",
                    HANG_SECS,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
    panic!("the test host hung twice");
}

/// Seconds without console output after which the test host counts as hung (the
/// scenario prints a heartbeat every 10 s).
const HANG_SECS: u64 = 120;

/// Boots the test host; its exit status, or None if it hung.
fn boot_test_host(initrd: &Path, log: &Path) -> Option<i32> {
    let mut child = Command::new(root().join("images/testhost/run.sh"))
        .arg("--initrd")
        .arg(initrd)
        .args(["--mem", "2048", "--timeout", "1500", "--log"])
        .arg(log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run images/testhost/run.sh");
    let mut last_len = 0;
    let mut last_change = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status.code().unwrap_or(-1));
        }
        let len = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        if len != last_len {
            last_len = len;
            last_change = std::time::Instant::now();
        } else if last_change.elapsed().as_secs() > HANG_SECS {
            let _ = Command::new("pkill")
                .args(["-KILL", "-f"])
                .arg(initrd)
                .status();
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// What the firmware-boot part of the scenario needs in the test host: strata-tiny (raw),
/// SeaBIOS, a config drive made by Strata's ISO writer with a fresh key, the private key
/// and OpenSSH's client. As `images/testhost/build.sh` arguments.
fn tiny_files(tmp: &Path) -> Vec<String> {
    let raw = root().join("images/out/tiny/strata-tiny.raw");
    assert!(
        raw.exists(),
        "strata-tiny is missing: run `make images-tiny` first"
    );
    let bios = strata::compute::kvm::bios_image()
        .expect("no SeaBIOS microvm image (Debian package seabios)");
    let key = tmp.join("tiny_key");
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen (Debian package openssh-client)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let public = std::fs::read_to_string(tmp.join("tiny_key.pub")).unwrap();
    let meta = serde_json::json!({
        "uuid": "7e1c5b8a-0000-4000-8000-000000000001",
        "name": "tiny-vmm",
        "hostname": "tiny-vmm.novalocal",
        "public_keys": {"k": public.trim()},
    });
    let iso = strata::compute::iso9660::build(
        "config-2",
        &[(
            "openstack/latest/meta_data.json".to_string(),
            meta.to_string().into_bytes(),
        )],
    )
    .unwrap();
    let iso_path = tmp.join("tiny-config.iso");
    std::fs::write(&iso_path, iso).unwrap();
    let file = |src: &Path, dst: &str| ["--file".to_string(), format!("{}:{dst}", src.display())];
    let mut v = Vec::new();
    v.extend(file(&raw, "/guest/tiny.raw"));
    v.extend(file(&bios, "/guest/bios-microvm.bin"));
    v.extend(file(&iso_path, "/guest/tiny-config.iso"));
    v.extend(file(&key, "/guest/tiny_key"));
    v.extend(["--bin".to_string(), "/usr/bin/ssh".to_string()]);
    v
}

#[test]
fn strata_vmm_boots_linux_with_disk_network_rng_reboot_and_poweroff_on_real_kvm() {
    let guest = root().join("images/out/guest/vmlinuz");
    assert!(
        guest.exists(),
        "the test guest is missing: run `make images-guest` first"
    );
    let tmp = tempfile::tempdir().unwrap();
    let extra = tiny_files(tmp.path());
    let (console, rc) = run_in_test_host(
        &root().join("tests/nested/strata-vmm.sh"),
        tmp.path(),
        &extra,
    );
    let lines: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("STRATA-") || l.contains("worker exit") || l.contains("panic"))
        .collect();
    let summary = lines.join("\n");
    assert!(
        console.contains("STRATA-TESTHOST-KVM ok"),
        "the test host has no /dev/kvm:\n{summary}"
    );
    for check in [
        "plain-userspace",
        "plain-poweroff-event",
        "smp-cpus",
        "smp-userspace",
        "smp-poweroff-event",
        "disk-first",
        "disk-wrote1",
        "net-dhcp",
        "net-ping",
        "rng",
        "disk-second",
        "reboot-marker",
        "reboot-event",
        "node-vm-active",
        "node-vm-driver",
        "node-vm-console",
        "node-vm-console-input",
        "node-vm-pause",
        "node-vm-resume",
        "node-vm-reboot",
        "node-vm-stop",
        "node-vm-delete",
        // Confined: seccomp on every VM (checked in run_vm), an unprivileged user.
        "plain-seccomp",
        "dev1-unprivileged",
        "node-vm-seccomp",
        "node-vm-uid",
        // Firmware boot of a cloud image with its own bootloader, to an SSH login.
        "tiny-seabios",
        "tiny-ready",
        "tiny-configdrive",
        "tiny-keys",
        "tiny-nic0",
        "tiny-nic1",
        "tiny-ssh",
    ] {
        assert!(
            console.contains(&format!("STRATA-CHECK ok {check}")),
            "check {check} failed:\n{summary}"
        );
    }
    assert_eq!(rc, 0, "scenario failed (rc {rc}):\n{summary}");
    for l in console.lines().filter(|l| l.starts_with("STRATA-BENCH")) {
        eprintln!("FIGURES {l}");
    }
}
