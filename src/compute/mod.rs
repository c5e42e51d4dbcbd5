//! Compute: the hypervisor trait and its drivers. Reads no cluster state: the agent hands
//! it a [`VmSpec`] and asks what runs.
//!
//! Drivers: `qemu` runs the VM spec with `qemu-system-x86_64`, with `-accel tcg` on hosts
//! whose KVM cannot run a guest (no `/dev/kvm`, or the `kvm_pvm` nested hypervisor), and
//! with `-accel kvm` elsewhere until Strata's own rust-vmm VMM replaces it there.

pub mod iso9660;
pub mod kvm;
pub mod logs;
pub mod qemu;
pub mod qmp;
pub mod seccomp;
pub mod trim;
pub mod vmdir;
pub mod vmm;
pub mod worker;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cluster::store::compute_tables::BootSpec;
use crate::ids::VmId;

#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("kernel {path}: {reason}")]
    BadKernel { path: String, reason: String },
    #[error("{what} {path} cannot be used: {reason}")]
    BadFile {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("VM {id} failed to start: {reason}")]
    StartFailed { id: VmId, reason: String },
    #[error("VM {id}: {op} failed: {reason}")]
    Control {
        id: VmId,
        op: &'static str,
        reason: String,
    },
    #[error("VM directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub id: VmId,
    pub name: String,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub boot: BootSpec,
    /// A volume exported over NBD on this node, attached as the first disk.
    pub volume: Option<NbdDisk>,
    /// NICs on tenant networks: TAPs the node's network agent made, in order.
    pub nics: Vec<Nic>,
    /// Further disks (data volumes) after the first, in order.
    pub data_disks: Vec<NbdDisk>,
    /// A config drive: an ISO 9660 image file, attached read-only as a CD-ROM.
    pub config_drive: Option<PathBuf>,
}

/// The device id a data disk has inside its VM (the same at start and at hot-plug, so
/// that either can be unplugged).
pub fn disk_slot(d: &NbdDisk) -> String {
    // QEMU node names are at most 31 characters.
    let id: String = d.export.chars().filter(|c| *c != '-').take(24).collect();
    format!("d{id}")
}

/// The device id a NIC has inside its VM (the same at start and at hot-plug, so that
/// either can be unplugged): from its TAP's name, which follows from its port.
pub fn nic_slot(n: &Nic) -> String {
    format!("n{}", n.tap)
}

/// A VM NIC: the TAP carrying its port, and the port's MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Nic {
    pub tap: String,
    pub mac: String,
}

/// An NBD export on a local Unix socket (how a node serves its attached volumes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NbdDisk {
    pub socket: PathBuf,
    pub export: String,
}

/// The abstract Unix socket (no file, no permissions) on which a node serves its NBD
/// exports to VM processes that run as users of their own; the server gives each user
/// only its VM's exports ([`Hypervisor::may_use_export`]). Derived from the node's path
/// socket, so each node on a machine has its own and a restarted daemon binds it again.
pub fn nbd_abstract_name(path_socket: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    format!(
        "strata-nbd-{:08x}",
        crc32fast::hash(path_socket.as_os_str().as_bytes())
    )
}

impl NbdDisk {
    pub fn abstract_name(&self) -> String {
        nbd_abstract_name(&self.socket)
    }

    pub fn uri(&self) -> String {
        format!(
            "nbd+unix:///{}?socket={}",
            self.export,
            self.socket.display()
        )
    }
}

/// What runs, as the driver sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RunState {
    Running,
    Paused,
    /// Not running; why, in words.
    Stopped(String),
}

/// How a `stop` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// It was not running.
    NotRunning,
    /// The guest shut down on the power button.
    Clean,
    /// Stopped by force: at once as asked, or after the guest did not shut down (why).
    Forced(String),
}

impl std::fmt::Display for StopOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopOutcome::NotRunning => f.write_str("it was not running"),
            StopOutcome::Clean => f.write_str("the guest shut down cleanly"),
            StopOutcome::Forced(why) if why.is_empty() => f.write_str("stopped at once"),
            StopOutcome::Forced(why) => write!(f, "{why}"),
        }
    }
}

#[async_trait::async_trait]
pub trait Hypervisor: Send + Sync + 'static {
    /// `kvm` or `tcg`: what a user sees in `strata status` and VM details.
    fn name(&self) -> &'static str;
    async fn start(&self, spec: &VmSpec) -> Result<(), ComputeError>;
    async fn state(&self, id: &VmId) -> RunState;
    /// Asks the guest to power off (the ACPI power button), then forces it off after
    /// `grace` (zero: at once). Returns how it stopped, in words.
    async fn stop(&self, id: &VmId, grace: Duration) -> Result<StopOutcome, ComputeError>;
    async fn reboot(&self, id: &VmId) -> Result<(), ComputeError>;
    async fn pause(&self, id: &VmId) -> Result<(), ComputeError>;
    async fn resume(&self, id: &VmId) -> Result<(), ComputeError>;
    /// How many times the guest has (re)booted, and its last lifecycle event.
    async fn boots(&self, id: &VmId) -> (u64, String);
    /// Stops the VM if needed and removes its files.
    async fn destroy(&self, id: &VmId) -> Result<(), ComputeError>;
    fn console_log(&self, id: &VmId) -> PathBuf;
    /// The VM's log files, kept bounded by the agent ([`logs::bound_log`]).
    fn log_files(&self, id: &VmId) -> Vec<PathBuf> {
        vec![self.console_log(id)]
    }
    /// Types `data` into the VM's serial console (its first serial port's input).
    async fn console_input(&self, id: &VmId, _data: &[u8]) -> Result<(), ComputeError> {
        Err(ComputeError::Control {
            id: id.clone(),
            op: "console input",
            reason: format!("the {} driver's serial console is read-only", self.name()),
        })
    }
    /// Plugs a disk into a running VM (PCI hot-plug).
    async fn plug_disk(&self, id: &VmId, _disk: &NbdDisk) -> Result<(), ComputeError> {
        Err(ComputeError::Control {
            id: id.clone(),
            op: "plug disk",
            reason: format!(
                "the {} driver cannot plug disks into a running VM yet: the volume is \
                 attached when the VM next starts",
                self.name()
            ),
        })
    }
    /// Unplugs a disk from a running VM; waits (up to `grace`) for the guest to let go.
    async fn unplug_disk(
        &self,
        id: &VmId,
        _disk: &NbdDisk,
        _grace: Duration,
    ) -> Result<(), ComputeError> {
        Err(ComputeError::Control {
            id: id.clone(),
            op: "unplug disk",
            reason: format!(
                "the {} driver cannot unplug disks from a running VM yet: the volume is \
                 detached when the VM next starts",
                self.name()
            ),
        })
    }
    /// Plugs a NIC into a running VM (PCI hot-plug).
    async fn plug_nic(&self, id: &VmId, _nic: &Nic) -> Result<(), ComputeError> {
        Err(ComputeError::Control {
            id: id.clone(),
            op: "plug NIC",
            reason: format!(
                "the {} driver cannot plug NICs into a running VM yet: the port joins the VM \
                 when it next starts",
                self.name()
            ),
        })
    }
    /// Unplugs the NIC whose TAP is `nic.tap` from a running VM; waits (up to `grace`)
    /// for the guest to let go.
    async fn unplug_nic(
        &self,
        id: &VmId,
        _nic: &Nic,
        _grace: Duration,
    ) -> Result<(), ComputeError> {
        Err(ComputeError::Control {
            id: id.clone(),
            op: "unplug NIC",
            reason: format!(
                "the {} driver cannot unplug NICs from a running VM yet: the port leaves the \
                 VM when it next starts",
                self.name()
            ),
        })
    }
    /// VMs this driver finds running on the host (re-adoption after a daemon restart).
    fn running(&self) -> Vec<VmId>;
    /// Whether the process of a running VM, as user `uid`, may open NBD export `export`
    /// (through the node's abstract socket). A driver whose VM processes get their
    /// connections from root answers no.
    fn may_use_export(&self, _uid: u32, _export: &str) -> bool {
        false
    }
}

/// Which accelerator this host can use for guests, and why.
pub fn detect_accel() -> (Accel, String) {
    detect_accel_at(Path::new("/"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

pub fn detect_accel_at(root: &Path) -> (Accel, String) {
    if root.join("sys/module/kvm_pvm").exists() {
        return (
            Accel::Tcg,
            "TCG software emulation: /dev/kvm is provided by kvm_pvm, a nested hypervisor that cannot boot Linux guests".into(),
        );
    }
    if !root.join("dev/kvm").exists() {
        return (
            Accel::Tcg,
            "TCG software emulation: this host has no /dev/kvm".into(),
        );
    }
    (Accel::Kvm, "KVM hardware virtualization".into())
}

/// Checks that a kernel file exists and is a Linux bzImage or ELF vmlinux.
pub fn check_kernel(path: &str) -> Result<(), ComputeError> {
    let bad = |reason: &str| ComputeError::BadKernel {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(|e| bad(&e.to_string()))?;
    let mut head = vec![0u8; 0x210];
    use std::io::Read;
    let n = f.read(&mut head).map_err(|e| bad(&e.to_string()))?;
    if n >= 4 && &head[..4] == b"\x7fELF" {
        return Ok(());
    }
    // A bzImage carries "HdrS" at offset 0x202 (the boot protocol header); its setup
    // sectors (0x1f1) and protected-mode size in 16-byte units (0x1f4) give its length.
    if n >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        let setup_sects = match head[0x1f1] {
            0 => 4,
            s => s as u64,
        };
        let syssize = u32::from_le_bytes([head[0x1f4], head[0x1f5], head[0x1f6], head[0x1f7]]);
        let want = (setup_sects + 1) * 512 + syssize as u64 * 16;
        let have = f.metadata().map_err(|e| bad(&e.to_string()))?.len();
        if have < want {
            return Err(bad(&format!(
                "truncated bzImage: the header announces {want} bytes, the file has {have}"
            )));
        }
        return Ok(());
    }
    Err(bad(
        "not a Linux kernel (neither a bzImage nor an ELF vmlinux)",
    ))
}

/// Checks every file a VM boots from: kernel, initramfs and disk image.
pub fn check_boot(boot: &BootSpec) -> Result<(), ComputeError> {
    // Kernels and initramfs images from the image service are checked by their digest
    // when the VM's node fetches them.
    if boot.kernel_image.is_none() && boot.firmware.is_none() {
        check_kernel(&boot.kernel)?;
    }
    if let (Some(i), None) = (&boot.initrd, &boot.initrd_image) {
        check_initramfs(i)?;
    }
    if let Some(d) = &boot.disk {
        check_disk_image(d)?;
    }
    Ok(())
}

/// Checks that a file is an initramfs: a cpio archive, plain or compressed.
pub fn check_initramfs(path: &str) -> Result<(), ComputeError> {
    check_file("initramfs", path)?;
    let head = read_head(path, 8).map_err(|e| ComputeError::BadFile {
        what: "initramfs",
        path: path.into(),
        reason: e.to_string(),
    })?;
    const MAGICS: [&[u8]; 8] = [
        b"070701",                 // cpio newc
        b"070702",                 // cpio newc with CRC
        &[0x1f, 0x8b],             // gzip
        &[0xfd, b'7', b'z', b'X'], // xz
        &[0x28, 0xb5, 0x2f, 0xfd], // zstd
        &[0x02, 0x21, 0x4c, 0x18], // lz4 (legacy)
        b"BZh",                    // bzip2
        &[0x5d, 0x00, 0x00],       // lzma
    ];
    if MAGICS.iter().any(|m| head.starts_with(m)) {
        return Ok(());
    }
    Err(ComputeError::BadFile {
        what: "initramfs",
        path: path.into(),
        reason: "not a cpio archive (plain, gzip, xz, zstd, lz4, bzip2 or lzma)".into(),
    })
}

/// Checks that a disk image is a raw image (the only format the drivers attach).
pub fn check_disk_image(path: &str) -> Result<(), ComputeError> {
    check_file("disk image", path)?;
    let head = read_head(path, 4).map_err(|e| ComputeError::BadFile {
        what: "disk image",
        path: path.into(),
        reason: e.to_string(),
    })?;
    if head.starts_with(b"QFI\xfb") {
        return Err(ComputeError::BadFile {
            what: "disk image",
            path: path.into(),
            reason: "is a qcow2 image; only raw images can be attached (convert it with `qemu-img convert -O raw`)".into(),
        });
    }
    Ok(())
}

fn read_head(path: &str, n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(n);
    std::fs::File::open(path)?
        .take(n as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Checks that an optional file (initramfs, disk image) is a readable, non-empty file.
pub fn check_file(what: &'static str, path: &str) -> Result<(), ComputeError> {
    let meta = std::fs::metadata(path).map_err(|e| ComputeError::BadFile {
        what,
        path: path.into(),
        reason: e.to_string(),
    })?;
    if !meta.is_file() || meta.len() == 0 {
        return Err(ComputeError::BadFile {
            what,
            path: path.into(),
            reason: "not a non-empty regular file".into(),
        });
    }
    std::fs::File::open(path).map_err(|e| ComputeError::BadFile {
        what,
        path: path.into(),
        reason: e.to_string(),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accel_detection_prefers_tcg_on_pvm_and_without_kvm() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(detect_accel_at(d.path()).0, Accel::Tcg);
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join("dev/kvm"), b"").unwrap();
        assert_eq!(detect_accel_at(d.path()).0, Accel::Kvm);
        std::fs::create_dir_all(d.path().join("sys/module/kvm_pvm")).unwrap();
        let (a, why) = detect_accel_at(d.path());
        assert_eq!(a, Accel::Tcg);
        assert!(why.contains("kvm_pvm"));
    }

    #[test]
    fn kernels_are_recognised_and_garbage_is_named() {
        let d = tempfile::tempdir().unwrap();
        let bz = d.path().join("bz");
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x1f1] = 1; // one setup sector: 1024 bytes with the boot sector
        std::fs::write(&bz, &img).unwrap();
        check_kernel(bz.to_str().unwrap()).unwrap();
        let junk = d.path().join("junk");
        std::fs::write(&junk, b"hello").unwrap();
        let e = check_kernel(junk.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a Linux kernel") && e.contains("junk"),
            "{e}"
        );
        let e = check_kernel("/nonexistent/vmlinuz")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/vmlinuz"), "{e}");
        assert!(check_file("initramfs", junk.to_str().unwrap()).is_ok());
        let e = check_initramfs(junk.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a cpio archive"), "{e}");
        let gz = d.path().join("i.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        check_initramfs(gz.to_str().unwrap()).unwrap();
        let q = d.path().join("q");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        let e = check_disk_image(q.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("qcow2"), "{e}");
        // A bzImage whose header announces more than the file holds is truncated.
        let mut short = img.clone();
        short[0x1f1] = 1;
        short[0x1f4..0x1f8].copy_from_slice(&1000u32.to_le_bytes());
        std::fs::write(&bz, &short).unwrap();
        let e = check_kernel(bz.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("truncated bzImage"), "{e}");
        assert!(check_file("initramfs", d.path().to_str().unwrap()).is_err());
    }
}
