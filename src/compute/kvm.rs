//! The KVM driver: one `strata vmm` worker process per VM (this binary, re-executed),
//! running Strata's own VMM. Workers run in their own session, so a restart of the daemon
//! does not stop VMs; the driver finds them again by pid file.
//!
//! Files under `<root>/<vm id>/`: `vm.json` (the spec handed to the worker), `vmm.pid`,
//! `control.sock`, `console.log`, `events.log`, `worker.log` (the worker's own log).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::worker::{self, WorkerSpec};
use super::{check_boot, vmdir, ComputeError, Hypervisor, RunState, StopOutcome, VmSpec};
use crate::ids::VmId;

/// The worker process's own log (its stderr), in the VM's directory.
const WORKER_LOG: &str = "worker.log";

/// Where Debian's SeaBIOS build for virtio-mmio machines is found (package `seabios`;
/// QEMU's firmware directory links to it).
pub const BIOS_IMAGES: [&str; 2] = [
    "/usr/share/seabios/bios-microvm.bin",
    "/usr/share/qemu/bios-microvm.bin",
];

/// The BIOS image firmware boot uses on this node, if there is one.
pub fn bios_image() -> Option<PathBuf> {
    BIOS_IMAGES.iter().map(PathBuf::from).find(|p| p.is_file())
}

pub struct KvmDriver {
    root: PathBuf,
    /// The program that runs `vmm` (this binary).
    exe: PathBuf,
}

impl KvmDriver {
    pub fn new(root: &Path) -> Result<Self, ComputeError> {
        std::fs::create_dir_all(root).map_err(|source| ComputeError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let exe = std::env::current_exe().map_err(|source| ComputeError::Io {
            path: PathBuf::from("/proc/self/exe"),
            source,
        })?;
        Ok(KvmDriver {
            root: root.to_path_buf(),
            exe,
        })
    }

    fn dir(&self, id: &VmId) -> PathBuf {
        self.root.join(&id.0)
    }

    /// The user the VM's worker becomes: one per running VM on this node, from a range no
    /// distribution allocates (systemd leaves 0x70000000 and up unused), derived from the
    /// VM's id and moved on past the users of the other running VMs.
    fn choose_uid(&self, id: &VmId) -> u32 {
        vmdir::choose_uid(id, &self.running(), None, |other| {
            let text = std::fs::read(self.dir(other).join(worker::SPEC_FILE)).ok()?;
            serde_json::from_slice::<WorkerSpec>(&text).ok()?.uid
        })
    }

    fn pid(&self, id: &VmId) -> Option<i32> {
        vmdir::live_pid(&self.dir(id).join(worker::PID_FILE), id)
    }

    async fn request(&self, id: &VmId, op: &'static str) -> Result<String, ComputeError> {
        self.request_line(id, op, op.to_string()).await
    }

    /// Sends `line` to the worker; `op` names it in errors.
    async fn request_line(
        &self,
        id: &VmId,
        op: &'static str,
        what: String,
    ) -> Result<String, ComputeError> {
        let dir = self.dir(id);
        tokio::task::spawn_blocking(move || worker::request(&dir, &what))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|reason| ComputeError::Control {
                id: id.clone(),
                op,
                reason,
            })
    }
}

#[async_trait::async_trait]
impl Hypervisor for KvmDriver {
    fn name(&self) -> &'static str {
        "kvm"
    }

    async fn start(&self, spec: &VmSpec) -> Result<(), ComputeError> {
        if self.pid(&spec.id).is_some() {
            return Ok(());
        }
        check_boot(&spec.boot)?;
        let firmware = match spec.boot.firmware.as_deref() {
            None => None,
            Some("bios") => Some(bios_image().ok_or_else(|| ComputeError::StartFailed {
                id: spec.id.clone(),
                reason: format!(
                    "the image boots through BIOS firmware and this node has no SeaBIOS \
                     microvm image ({}; Debian package seabios)",
                    BIOS_IMAGES.join(" or ")
                ),
            })?),
            Some(other) => {
                return Err(ComputeError::StartFailed {
                    id: spec.id.clone(),
                    reason: format!(
                        "the image asks for {other} firmware (hw_firmware_type={other}); \
                         Strata's VMM boots through BIOS firmware only (UEFI firmware needs \
                         virtio-pci devices, which it does not have): use \
                         hw_firmware_type=bios or a node running the QEMU driver"
                    ),
                })
            }
        };
        let dir = self.dir(&spec.id);
        let io = |source| ComputeError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        for f in [worker::PID_FILE, worker::CONTROL_SOCKET] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let ws = WorkerSpec {
            id: spec.id.0.clone(),
            vcpus: spec.vcpus,
            ram_mb: spec.ram_mb,
            kernel: spec.boot.kernel.clone().into(),
            initrd: spec.boot.initrd.clone().map(Into::into),
            cmdline: spec.boot.cmdline.clone(),
            disk: spec.boot.disk.clone().map(Into::into),
            tap: spec.nics.first().map(|n| n.tap.clone()),
            mac: spec.nics.first().map(|n| n.mac.clone()),
            nbd: spec.volume.clone(),
            uid: Some(self.choose_uid(&spec.id)),
            more_nics: spec.nics.iter().skip(1).cloned().collect(),
            data_disks: spec.data_disks.clone(),
            config_drive: spec.config_drive.clone(),
            firmware,
        };
        std::fs::write(
            dir.join(worker::SPEC_FILE),
            serde_json::to_vec_pretty(&ws).unwrap_or_default(),
        )
        .map_err(io)?;
        // Emptied, then appended to: the agent can bound it under the running worker.
        std::fs::File::create(dir.join(WORKER_LOG)).map_err(io)?;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(WORKER_LOG))
            .map_err(io)?;
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("vmm")
            .arg("--dir")
            .arg(&dir)
            .arg("--name")
            .arg(vmdir::marker(&spec.id))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(io)?)
            .stderr(log);
        // Its own session: no signal to the daemon's process group reaches the VM.
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| ComputeError::Spawn {
            program: self.exe.display().to_string(),
            source,
        })?;
        // The worker writes its pid file once the VM runs; it exits if it cannot build it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.pid(&spec.id).is_some() {
                // Reap it when it ends, so that it does not linger as a zombie.
                tokio::task::spawn_blocking(move || child.wait());
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join(WORKER_LOG)).unwrap_or_default();
                let why = log
                    .lines()
                    .rev()
                    .find(|l| l.contains("error"))
                    .unwrap_or(log.lines().last().unwrap_or(""))
                    .trim()
                    .to_string();
                return Err(ComputeError::StartFailed {
                    id: spec.id.clone(),
                    reason: format!("VMM worker exited ({status}): {why}"),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                return Err(ComputeError::StartFailed {
                    id: spec.id.clone(),
                    reason: "VMM worker did not start the VM within 30 s".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn state(&self, id: &VmId) -> RunState {
        if self.pid(id).is_none() {
            return RunState::Stopped(vmdir::stop_reason(&self.dir(id)));
        }
        match self.request(id, "state").await.as_deref() {
            Ok("paused") => RunState::Paused,
            _ => RunState::Running,
        }
    }

    /// A graceful stop presses the guest's ACPI power button and waits up to `grace` for
    /// it to power off; a guest that ignores the button (or has no handler, or is paused)
    /// is then stopped by force, and the event log says so. `grace` zero stops at once.
    async fn stop(&self, id: &VmId, grace: Duration) -> Result<StopOutcome, ComputeError> {
        let Some(pid) = self.pid(id) else {
            return Ok(StopOutcome::NotRunning);
        };
        let dir = self.dir(id);
        let pid_file = dir.join(worker::PID_FILE);
        let mut why = if grace.is_zero() {
            String::new()
        } else {
            match self.request(id, "powerdown").await.as_deref() {
                Ok("pressed") => {
                    if vmdir::gone_within(&pid_file, id, grace).await {
                        return Ok(StopOutcome::Clean);
                    }
                    format!(
                        "forced after {} s: the guest did not shut down on the power button",
                        grace.as_secs()
                    )
                }
                Ok("paused") => "forced: the VM is paused".to_string(),
                Ok(_) => "forced: the guest does not handle the power button".to_string(),
                Err(e) => format!("forced: {e}"),
            }
        };
        if self.request(id, "stop").await.is_err() {
            vmdir::kill(pid);
            why = if why.is_empty() {
                "killed".into()
            } else {
                format!("{why}; killed")
            };
        }
        if !why.is_empty() {
            vmdir::append_event(&dir, &format!("shutdown stopped by Strata ({why})"));
        }
        vmdir::wait_gone(&pid_file, id, "VMM worker", pid).await?;
        Ok(StopOutcome::Forced(why))
    }

    /// Typed through the worker, which waits while the guest reads (back-pressure).
    async fn console_input(&self, id: &VmId, data: &[u8]) -> Result<(), ComputeError> {
        let line = format!("input {}", hex::encode(data));
        self.request_line(id, "console input", line)
            .await
            .map(|_| ())
    }

    async fn reboot(&self, id: &VmId) -> Result<(), ComputeError> {
        self.request(id, "reboot").await.map(|_| ())
    }

    async fn pause(&self, id: &VmId) -> Result<(), ComputeError> {
        self.request(id, "pause").await.map(|_| ())
    }

    async fn resume(&self, id: &VmId) -> Result<(), ComputeError> {
        self.request(id, "resume").await.map(|_| ())
    }

    async fn boots(&self, id: &VmId) -> (u64, String) {
        vmdir::boots(&self.dir(id))
    }

    async fn destroy(&self, id: &VmId) -> Result<(), ComputeError> {
        self.stop(id, Duration::ZERO).await?;
        vmdir::remove(&self.dir(id))
    }

    fn console_log(&self, id: &VmId) -> PathBuf {
        self.dir(id).join(worker::CONSOLE_LOG)
    }

    fn log_files(&self, id: &VmId) -> Vec<PathBuf> {
        vec![self.console_log(id), self.dir(id).join(WORKER_LOG)]
    }

    fn running(&self) -> Vec<VmId> {
        vmdir::running(&self.root, worker::PID_FILE)
    }
}
