//! The QEMU driver: one `qemu-system-x86_64` process per VM, daemonized so that a restart
//! of the Strata daemon does not stop VMs (the agent re-adopts them by pid file). Two QMP
//! sockets per VM: one for commands, one watched for lifecycle events (guest reboot and
//! power-off), which are appended to the VM's `events.log`.
//!
//! Files under `<root>/<vm id>/`: `qemu.pid`, `qmp.sock`, `events.sock`, `console.log`
//! (the serial console), `events.log`, `user` (the user QEMU runs as) and `exports` (the
//! NBD exports that user may open, one per line).
//!
//! QEMU opens its kernel, initrd, TAP devices, logs and sockets as root, then becomes a
//! user of its own (`-runas`, one per running VM, with no capabilities) under its seccomp
//! filter (`-sandbox`). It reaches volumes through the node's abstract NBD socket, where
//! the server gives that user only the exports listed for its VM (review F7), so it can
//! reconnect after a daemon restart and can never open another VM's volume.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::qmp::Qmp;
use super::vmdir;
use super::{check_boot, Accel, ComputeError, Hypervisor, RunState, StopOutcome, VmSpec};
use crate::ids::VmId;

pub const QEMU: &str = "qemu-system-x86_64";

pub struct QemuDriver {
    root: PathBuf,
    accel: Accel,
    /// VMs whose event socket is being watched by this process.
    watched: Arc<Mutex<HashSet<VmId>>>,
    /// One typist at a time: QEMU's serial socket takes one client, and queues others.
    typing: tokio::sync::Mutex<()>,
}

impl QemuDriver {
    pub fn new(root: &Path, accel: Accel) -> Result<Self, ComputeError> {
        std::fs::create_dir_all(root).map_err(|source| ComputeError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(QemuDriver {
            root: root.to_path_buf(),
            accel,
            watched: Arc::new(Mutex::new(HashSet::new())),
            typing: tokio::sync::Mutex::new(()),
        })
    }

    fn dir(&self, id: &VmId) -> PathBuf {
        self.root.join(&id.0)
    }

    /// The user for a VM's QEMU: its own if it has run before, else one no other running
    /// VM has.
    fn choose_uid(&self, id: &VmId) -> u32 {
        vmdir::choose_uid(id, &self.running(), read_uid(&self.dir(id)), |other| {
            read_uid(&self.dir(other))
        })
    }

    /// Adds (`add`) or removes an export from those the VM's user may open.
    fn set_export(&self, id: &VmId, export: &str, add: bool) -> Result<(), ComputeError> {
        let path = self.dir(id).join(EXPORTS_FILE);
        let mut list = read_exports(&self.dir(id));
        list.retain(|e| e != export);
        if add {
            list.push(export.to_string());
        }
        write_lines(&path, &list)
    }

    /// The pid of the VM's QEMU if it is running (checked against its command line).
    fn pid(&self, id: &VmId) -> Option<i32> {
        vmdir::live_pid(&self.dir(id).join("qemu.pid"), id)
    }

    async fn qmp(&self, id: &VmId, op: &'static str) -> Result<Qmp, ComputeError> {
        Qmp::connect(&self.dir(id).join("qmp.sock"), Duration::from_secs(5))
            .await
            .map_err(|reason| ComputeError::Control {
                id: id.clone(),
                op,
                reason,
            })
    }

    async fn command(&self, id: &VmId, op: &'static str, cmd: &str) -> Result<(), ComputeError> {
        let mut q = self.qmp(id, op).await?;
        q.execute(cmd, None)
            .await
            .map(|_| ())
            .map_err(|reason| ComputeError::Control {
                id: id.clone(),
                op,
                reason,
            })
    }

    /// Watches the VM's event socket (once per VM per daemon process).
    fn watch(&self, id: &VmId) {
        if !self
            .watched
            .lock()
            .expect("lock poisoned")
            .insert(id.clone())
        {
            return;
        }
        let dir = self.dir(id);
        let watched = self.watched.clone();
        let id = id.clone();
        tokio::spawn(async move {
            if let Ok(mut q) = Qmp::connect(&dir.join("events.sock"), Duration::from_secs(5)).await
            {
                while let Ok(ev) = q.next_event().await {
                    let name = ev["event"].as_str().unwrap_or("?");
                    let line = match name {
                        "RESET" if ev["data"]["guest"] == true => Some("reset guest rebooted"),
                        "SHUTDOWN" if ev["data"]["guest"] == true => {
                            Some("shutdown guest powered off")
                        }
                        // `quit` is only sent by `stop`, which records why itself.
                        "SHUTDOWN" if ev["data"]["reason"] == "host-qmp-quit" => None,
                        "SHUTDOWN" => Some("shutdown stopped by Strata"),
                        "GUEST_PANICKED" => Some("panic guest kernel panicked"),
                        _ => None,
                    };
                    if let Some(line) = line {
                        tracing::info!(vm = %id, event = line, "VM event");
                        vmdir::append_event(&dir, line);
                    }
                }
            }
            watched.lock().expect("lock poisoned").remove(&id);
        });
    }
}

const USER_FILE: &str = "user";
/// UEFI firmware (Debian package `ovmf`): the code, read-only, and the variable store a
/// VM gets its own copy of.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const UEFI_VARS: &str = "uefi-vars.fd";
const EXPORTS_FILE: &str = "exports";

fn read_uid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(USER_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn read_exports(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(EXPORTS_FILE))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Replaces a small file in one step (written beside it, then renamed).
fn write_lines(path: &Path, lines: &[String]) -> Result<(), ComputeError> {
    let tmp = path.with_extension("new");
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| ComputeError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A disk as a QEMU block node: raw over QEMU's own NBD client, on the node's abstract
/// socket (reachable by QEMU's unprivileged user; the server checks which exports).
fn blockdev(d: &super::NbdDisk, slot: &str) -> serde_json::Value {
    serde_json::json!({
        "driver": "raw", "node-name": slot,
        "file": {"driver": "nbd", "export": d.export,
                 "server": {"type": "unix", "path": d.abstract_name(), "abstract": true}},
    })
}

/// The QEMU command line for a VM (kept separate so it can be checked in tests); `uid`:
/// the user QEMU becomes once it has opened its files.
pub fn command_line(spec: &VmSpec, dir: &Path, accel: Accel, uid: Option<u32>) -> Vec<String> {
    let p = |f: &str| dir.join(f).display().to_string();
    let mut a: Vec<String> = vec![
        "-name".into(),
        format!(
            "{},process=strata-vm-{}",
            spec.name.replace(',', "_"),
            spec.id.0
        ),
        "-accel".into(),
        accel.name().into(),
        "-cpu".into(),
        match accel {
            Accel::Kvm => "host".into(),
            Accel::Tcg => "max".into(),
        },
        "-smp".into(),
        spec.vcpus.to_string(),
        "-m".into(),
        format!("{}M", spec.ram_mb),
        "-nodefaults".into(),
        "-no-user-config".into(),
        // QEMU's seccomp filter: no obsolete system calls, no changes to scheduling or
        // resource limits. Not `spawn=deny` nor `elevateprivileges=deny`: `-daemonize`
        // forks and calls setsid after the filter is in place.
        "-sandbox".into(),
        "on,obsolete=deny,resourcecontrol=deny".into(),
        "-display".into(),
        "none".into(),
        // The serial port: logged to console.log by QEMU whether or not anyone is
        // connected, and typed into through serial.sock (see `console_input`).
        "-chardev".into(),
        format!(
            "socket,id=serial0,path={},server=on,wait=off,logfile={},logappend=on",
            p("serial.sock").replace(',', ",,"),
            p("console.log").replace(',', ",,")
        ),
        "-serial".into(),
        "chardev:serial0".into(),
        "-device".into(),
        "virtio-rng-pci".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", p("qmp.sock")),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", p("events.sock")),
        "-pidfile".into(),
        p("qemu.pid"),
        "-daemonize".into(),
    ];
    if let Some(uid) = uid {
        a.extend(["-runas".into(), format!("{uid}:{uid}")]);
    }
    match spec.boot.firmware.as_deref() {
        // SeaBIOS, QEMU's own default, boots the first disk.
        Some("bios") => {}
        Some(_) => a.extend([
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!(
                "if=pflash,format=raw,unit=1,file={}",
                p(UEFI_VARS).replace(',', ",,")
            ),
        ]),
        None => {
            a.extend(["-kernel".into(), spec.boot.kernel.clone()]);
            if let Some(i) = &spec.boot.initrd {
                a.extend(["-initrd".into(), i.clone()]);
            }
            let cmdline = if spec.boot.cmdline.is_empty() {
                "console=ttyS0".to_string()
            } else {
                spec.boot.cmdline.clone()
            };
            a.extend(["-append".into(), cmdline]);
        }
    }
    let bootindex = if spec.boot.firmware.is_some() {
        ",bootindex=0"
    } else {
        ""
    };
    for n in &spec.nics {
        // The TAP exists and sits on its network's bridge already; QEMU only opens it.
        // Device and backend share an id that hot-unplug can name.
        let slot = super::nic_slot(n);
        a.extend([
            "-netdev".into(),
            format!("tap,id={slot},ifname={},script=no,downscript=no", n.tap),
            "-device".into(),
            format!("virtio-net-pci,netdev={slot},mac={},id={slot}", n.mac),
        ]);
    }
    if let Some(v) = &spec.volume {
        // QEMU's own NBD client; the node's export writes through to every replica. The
        // first virtio disk, so the guest sees it as vda.
        a.extend([
            "-blockdev".into(),
            blockdev(v, "boot").to_string(),
            "-device".into(),
            format!("virtio-blk-pci,drive=boot,id=boot{bootindex}"),
        ]);
    }
    for d in &spec.data_disks {
        let slot = super::disk_slot(d);
        a.extend([
            "-blockdev".into(),
            blockdev(d, &slot).to_string(),
            "-device".into(),
            format!("virtio-blk-pci,drive={slot},id={slot}"),
        ]);
    }
    if let Some(cd) = &spec.config_drive {
        // A CD-ROM on the chipset's IDE controller, as Nova attaches config drives: the
        // virtio disks keep their names (vda, vdb, ...).
        a.extend([
            "-drive".into(),
            format!(
                "file={},if=ide,index=1,media=cdrom,readonly=on,format=raw",
                cd.display().to_string().replace(',', ",,")
            ),
        ]);
    }
    if let Some(d) = &spec.boot.disk {
        a.extend([
            "-drive".into(),
            format!(
                "file={},if=virtio,format=raw,cache=none,aio=threads",
                d.replace(',', ",,")
            ),
        ]);
    }
    a
}

#[async_trait::async_trait]
impl Hypervisor for QemuDriver {
    fn name(&self) -> &'static str {
        self.accel.name()
    }

    async fn plug_disk(&self, id: &VmId, disk: &super::NbdDisk) -> Result<(), ComputeError> {
        let slot = super::disk_slot(disk);
        let mut q = self.qmp(id, "plug disk").await?;
        self.set_export(id, &disk.export, true)?;
        let fail = |reason: String| ComputeError::Control {
            id: id.clone(),
            op: "plug disk",
            reason,
        };
        q.execute("blockdev-add", Some(blockdev(disk, &slot)))
            .await
            .map_err(fail)?;
        let dev = serde_json::json!({"driver": "virtio-blk-pci", "drive": slot, "id": slot});
        let undo = ("blockdev-del", serde_json::json!({"node-name": slot}));
        q.device_add_or_undo(dev, undo).await.map_err(fail)
    }

    async fn unplug_disk(
        &self,
        id: &VmId,
        disk: &super::NbdDisk,
        grace: Duration,
    ) -> Result<(), ComputeError> {
        let slot = super::disk_slot(disk);
        let mut q = self.qmp(id, "unplug disk").await?;
        let fail = |reason: String| ComputeError::Control {
            id: id.clone(),
            op: "unplug disk",
            reason,
        };
        q.device_del(&slot).await.map_err(fail)?;
        // The block node can go once the device has.
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match q
                .execute("blockdev-del", Some(serde_json::json!({"node-name": slot})))
                .await
            {
                Ok(_) => break,
                Err(e) if e.contains("Cannot find") || e.contains("not found") => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(fail(format!(
                        "the guest did not release the disk within {} s: {e}",
                        grace.as_secs()
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        // QEMU's user may no longer open it.
        self.set_export(id, &disk.export, false)
    }

    /// The TAP is opened here (QEMU runs as a user that may not) and handed over QMP.
    async fn plug_nic(&self, id: &VmId, nic: &super::Nic) -> Result<(), ComputeError> {
        let slot = super::nic_slot(nic);
        let fail = |reason: String| ComputeError::Control {
            id: id.clone(),
            op: "plug NIC",
            reason,
        };
        let tap = super::vmm::virtio::tap::Tap::open(&nic.tap)
            .map_err(|e| fail(crate::telemetry::error_chain(&e)))?
            .into_file();
        let mut q = self.qmp(id, "plug NIC").await?;
        use std::os::fd::AsFd;
        q.execute_with_fd(
            "getfd",
            Some(serde_json::json!({"fdname": slot})),
            tap.as_fd(),
        )
        .await
        .map_err(fail)?;
        drop(tap);
        let netdev = serde_json::json!({"type": "tap", "id": slot, "fd": slot});
        if let Err(e) = q.execute("netdev_add", Some(netdev)).await {
            let _ = q
                .execute("closefd", Some(serde_json::json!({"fdname": slot})))
                .await;
            return Err(fail(e));
        }
        let dev = serde_json::json!({
            "driver": "virtio-net-pci", "netdev": slot, "mac": nic.mac, "id": slot,
        });
        let undo = ("netdev_del", serde_json::json!({"id": slot}));
        q.device_add_or_undo(dev, undo).await.map_err(fail)
    }

    async fn unplug_nic(
        &self,
        id: &VmId,
        nic: &super::Nic,
        grace: Duration,
    ) -> Result<(), ComputeError> {
        let slot = super::nic_slot(nic);
        let mut q = self.qmp(id, "unplug NIC").await?;
        let fail = |reason: String| ComputeError::Control {
            id: id.clone(),
            op: "unplug NIC",
            reason,
        };
        q.device_del(&slot).await.map_err(fail)?;
        // The backend can go once the guest has let go of the device.
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let gone = q
                .execute(
                    "qom-list",
                    Some(serde_json::json!({"path": "/machine/peripheral"})),
                )
                .await
                .map_err(fail)?
                .as_array()
                .is_some_and(|a| !a.iter().any(|p| p["name"] == slot.as_str()));
            if gone {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(fail(format!(
                    "the guest did not release the NIC within {} s",
                    grace.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match q
            .execute("netdev_del", Some(serde_json::json!({"id": slot})))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.contains("not found") => Ok(()),
            Err(e) => Err(fail(e)),
        }
    }

    async fn start(&self, spec: &VmSpec) -> Result<(), ComputeError> {
        if self.pid(&spec.id).is_some() {
            self.watch(&spec.id);
            return Ok(());
        }
        check_boot(&spec.boot)?;
        let dir = self.dir(&spec.id);
        std::fs::create_dir_all(&dir).map_err(|source| ComputeError::Io {
            path: dir.clone(),
            source,
        })?;
        for f in ["qmp.sock", "events.sock", "qemu.pid"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        // QEMU appends to its console log (so the agent can bound it under it): each
        // start begins a fresh one, as QEMU's own truncation did.
        let _ = std::fs::File::create(dir.join("console.log"));
        if spec.boot.firmware.as_deref() == Some("uefi") {
            let vars = dir.join(UEFI_VARS);
            let missing = |what: &str| ComputeError::StartFailed {
                id: spec.id.clone(),
                reason: format!(
                    "the image asks for UEFI firmware (hw_firmware_type=uefi) and this node \
                     lacks {what} (Debian package ovmf)"
                ),
            };
            if !Path::new(OVMF_CODE).is_file() {
                return Err(missing(OVMF_CODE));
            }
            // The VM's own variable store, kept across its restarts.
            if !vars.exists() {
                std::fs::copy(OVMF_VARS, &vars).map_err(|_| missing(OVMF_VARS))?;
            }
        }
        let uid = vmdir::can_drop_privileges().then(|| self.choose_uid(&spec.id));
        if let Some(uid) = uid {
            write_lines(&dir.join(USER_FILE), &[uid.to_string()])?;
        }
        let exports: Vec<String> = spec
            .volume
            .iter()
            .chain(&spec.data_disks)
            .map(|d| d.export.clone())
            .collect();
        write_lines(&dir.join(EXPORTS_FILE), &exports)?;
        let args = command_line(spec, &dir, self.accel, uid);
        let out = tokio::process::Command::new(QEMU)
            .args(&args)
            .output()
            .await
            .map_err(|source| ComputeError::Spawn {
                program: QEMU.into(),
                source,
            })?;
        if !out.status.success() {
            return Err(ComputeError::StartFailed {
                id: spec.id.clone(),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        vmdir::append_event(&dir, "start started by Strata");
        self.watch(&spec.id);
        Ok(())
    }

    async fn state(&self, id: &VmId) -> RunState {
        if self.pid(id).is_none() {
            // QEMU, no longer root when it exits, cannot remove its own pid file.
            let _ = std::fs::remove_file(self.dir(id).join("qemu.pid"));
            return RunState::Stopped(vmdir::stop_reason(&self.dir(id)));
        }
        self.watch(id);
        match self.qmp(id, "query-status").await {
            Ok(mut q) => match q.execute("query-status", None).await {
                Ok(v) if v["status"] == "paused" => RunState::Paused,
                _ => RunState::Running,
            },
            Err(_) => RunState::Running,
        }
    }

    async fn stop(&self, id: &VmId, grace: Duration) -> Result<StopOutcome, ComputeError> {
        let Some(pid) = self.pid(id) else {
            return Ok(StopOutcome::NotRunning);
        };
        let pid_file = self.dir(id).join("qemu.pid");
        let why = if grace.is_zero() {
            String::new()
        } else if self.state(id).await == RunState::Paused {
            "forced: the VM is paused".into()
        } else {
            match self.command(id, "power off", "system_powerdown").await {
                Ok(()) if vmdir::gone_within(&pid_file, id, grace).await => {
                    return Ok(StopOutcome::Clean)
                }
                Ok(()) => format!(
                    "forced after {} s: the guest did not shut down on the power button",
                    grace.as_secs()
                ),
                Err(e) => format!("forced: {}", crate::telemetry::error_chain(&e)),
            }
        };
        let line = if why.is_empty() {
            "shutdown stopped by Strata".to_string()
        } else {
            format!("shutdown stopped by Strata ({why})")
        };
        vmdir::append_event(&self.dir(id), &line);
        if self.command(id, "quit", "quit").await.is_err() {
            vmdir::kill(pid);
        }
        vmdir::wait_gone(&pid_file, id, "QEMU process", pid).await?;
        Ok(StopOutcome::Forced(why))
    }

    async fn reboot(&self, id: &VmId) -> Result<(), ComputeError> {
        vmdir::append_event(&self.dir(id), "reset rebooted by Strata");
        self.command(id, "reboot", "system_reset").await
    }

    async fn pause(&self, id: &VmId) -> Result<(), ComputeError> {
        self.command(id, "pause", "stop").await
    }

    async fn resume(&self, id: &VmId) -> Result<(), ComputeError> {
        self.command(id, "resume", "cont").await
    }

    async fn boots(&self, id: &VmId) -> (u64, String) {
        vmdir::boots(&self.dir(id))
    }

    async fn destroy(&self, id: &VmId) -> Result<(), ComputeError> {
        self.stop(id, Duration::ZERO).await?;
        vmdir::remove(&self.dir(id))
    }

    fn console_log(&self, id: &VmId) -> PathBuf {
        self.dir(id).join("console.log")
    }

    async fn console_input(&self, id: &VmId, data: &[u8]) -> Result<(), ComputeError> {
        let fail = |reason: String| ComputeError::Control {
            id: id.clone(),
            op: "console input",
            reason,
        };
        let _one = self.typing.lock().await;
        let path = self.dir(id).join("serial.sock");
        let mut s = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::UnixStream::connect(&path),
        )
        .await
        .map_err(|_| fail("the serial console is busy".into()))?
        .map_err(|e| {
            fail(format!(
                "the VM is not running or predates typeable consoles ({e})"
            ))
        })?;
        tokio::io::AsyncWriteExt::write_all(&mut s, data)
            .await
            .map_err(|e| fail(e.to_string()))?;
        // QEMU reads only what the UART's receive buffer takes and drops the rest when
        // the client hangs up: wait until it has read everything before closing. What
        // the guest prints meanwhile is in console.log already; drain it here so the
        // guest never waits on us.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut sink = [0u8; 4096];
        loop {
            let mut queued: libc::c_int = 0;
            // SAFETY: TIOCOUTQ writes one c_int through the pointer, on a socket we own.
            let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
            if rc != 0 || queued == 0 {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(fail(format!(
                    "the guest did not read {queued} of the typed bytes within 5 s"
                )));
            }
            while let Ok(n) = s.try_read(&mut sink) {
                if n == 0 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn running(&self) -> Vec<VmId> {
        vmdir::running(&self.root, "qemu.pid")
    }

    fn may_use_export(&self, uid: u32, export: &str) -> bool {
        self.running().iter().any(|id| {
            let dir = self.dir(id);
            read_uid(&dir) == Some(uid) && read_exports(&dir).iter().any(|e| e == export)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::store::compute_tables::BootSpec;

    #[test]
    fn command_line_names_the_vm_and_wires_console_qmp_and_disk() {
        let spec = VmSpec {
            id: VmId("abc".into()),
            name: "web,1".into(),
            vcpus: 2,
            ram_mb: 512,
            boot: BootSpec {
                kernel: "/k".into(),
                initrd: Some("/i".into()),
                cmdline: String::new(),
                disk: Some("/d,x.img".into()),
                kernel_image: None,
                initrd_image: None,
                firmware: None,
            },
            volume: Some(crate::compute::NbdDisk {
                socket: "/data/nbd.sock".into(),
                export: "vol-1".into(),
            }),
            data_disks: vec![],
            config_drive: Some("/cd/x.iso".into()),
            nics: vec![crate::compute::Nic {
                tap: "tap1234".into(),
                mac: "fa:16:3e:00:00:01".into(),
            }],
        };
        let a = command_line(&spec, Path::new("/vms/abc"), Accel::Tcg, Some(0x7000_0001)).join(" ");
        assert!(a.contains("-runas 1879048193:1879048193"), "{a}");
        assert!(
            a.contains("-drive file=/cd/x.iso,if=ide,index=1,media=cdrom,readonly=on,format=raw"),
            "{a}"
        );
        assert!(a.contains("-name web_1,process=strata-vm-abc"), "{a}");
        assert!(a.contains("-accel tcg -cpu max -smp 2 -m 512M"), "{a}");
        assert!(
            a.contains("-sandbox on,obsolete=deny,resourcecontrol=deny"),
            "{a}"
        );
        assert!(
            a.contains("-chardev socket,id=serial0,path=/vms/abc/serial.sock,server=on,wait=off,logfile=/vms/abc/console.log,logappend=on -serial chardev:serial0"),
            "{a}"
        );
        assert!(a.contains("-append console=ttyS0"), "{a}");
        assert!(a.contains("file=/d,,x.img,if=virtio"), "{a}");
        assert!(a.contains("-initrd /i"), "{a}");
        assert!(
            a.contains("-netdev tap,id=ntap1234,ifname=tap1234,script=no,downscript=no -device virtio-net-pci,netdev=ntap1234,mac=fa:16:3e:00:00:01,id=ntap1234"),
            "{a}"
        );
        let name = crate::compute::nbd_abstract_name(Path::new("/data/nbd.sock"));
        let boot = format!(
            r#"-blockdev {{"driver":"raw","node-name":"boot","file":{{"driver":"nbd","export":"vol-1","server":{{"type":"unix","path":"{name}","abstract":true}}}}}} -device virtio-blk-pci,drive=boot,id=boot"#
        );
        assert!(a.contains(&boot), "{a}");
        let without = command_line(&spec, Path::new("/vms/abc"), Accel::Tcg, None).join(" ");
        assert!(!without.contains("-runas"), "{without}");

        // Through firmware: no kernel; the boot volume is the first boot device; UEFI
        // adds OVMF's code and the VM's own variable store.
        let mut fw = spec.clone();
        fw.boot.disk = None;
        fw.boot.firmware = Some("bios".into());
        let a = command_line(&fw, Path::new("/vms/abc"), Accel::Tcg, None).join(" ");
        assert!(!a.contains("-kernel") && !a.contains("-append"), "{a}");
        assert!(
            a.contains("virtio-blk-pci,drive=boot,id=boot,bootindex=0"),
            "{a}"
        );
        assert!(!a.contains("pflash"), "{a}");
        fw.boot.firmware = Some("uefi".into());
        let a = command_line(&fw, Path::new("/vms/abc"), Accel::Tcg, None).join(" ");
        assert!(
            a.contains(&format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            )),
            "{a}"
        );
        assert!(
            a.contains("if=pflash,format=raw,unit=1,file=/vms/abc/uefi-vars.fd"),
            "{a}"
        );
    }
}
