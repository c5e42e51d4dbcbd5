//! `strata vmm`: the per-VM worker process of the KVM driver. It runs one VM with Strata's
//! own VMM ([`super::vmm`]), keeps the serial console in `console.log`, records lifecycle
//! events in `events.log`, and answers a line protocol on `control.sock`:
//! `state` → `running|paused`, `pause`, `resume`, `reboot`, `stop` → `ok` or `error <why>`;
//! `powerdown` presses the ACPI power button → `pressed`, or `unhandled` when the guest has
//! not enabled the button (no handler: only a forced stop will end it), or `paused`;
//! `input <hex>` types bytes into the serial console, waiting while the guest reads them
//! (at most [`INPUT_MAX`] bytes; `error` when the guest stops reading for [`INPUT_STALL`]).
//!
//! The worker opens everything it will ever need first, as root: /dev/kvm, the kernel and
//! initramfs, the disks (a file, or its volume's NBD connection), the TAP, its logs. Then
//! it builds and starts the VM, releases the start-up pages of the binary it will not use
//! again ([`super::trim`]), sets no-new-privileges, becomes the VM's own unprivileged user
//! (`uid` in the spec: no capabilities, no access to the node's files; without one it
//! stays root but drops every capability) and installs its seccomp filter
//! ([`super::seccomp`]). A guest reboot builds the VM again from the descriptors it holds.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::vmdir;
use super::vmm::vm::{DiskConfig, NicConfig, RunState, VmConfig, Vmm, VmmEvent, VmmHandle};

/// What the driver hands the worker, as `vm.json` in the VM's directory.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct WorkerSpec {
    pub id: String,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub disk: Option<PathBuf>,
    pub tap: Option<String>,
    /// The NIC's MAC (`aa:bb:..`); default: one derived from the VM id.
    #[serde(default)]
    pub mac: Option<String>,
    /// A volume exported over NBD, attached as the first disk (instead of `disk`).
    #[serde(default)]
    pub nbd: Option<super::NbdDisk>,
    /// The unprivileged user (and group) the worker becomes once the VM is built: one
    /// per VM on a node (the driver chooses it), so workers cannot reach each other.
    #[serde(default)]
    pub uid: Option<u32>,
    /// NICs after the first (`tap` and `mac`), in order.
    #[serde(default)]
    pub more_nics: Vec<super::Nic>,
    /// Data volumes (NBD exports), attached after the boot disk in order.
    #[serde(default)]
    pub data_disks: Vec<super::NbdDisk>,
    /// A config drive image, attached read-only after the data disks.
    #[serde(default)]
    pub config_drive: Option<PathBuf>,
    /// A BIOS image to boot through instead of `kernel` (firmware boot).
    #[serde(default)]
    pub firmware: Option<PathBuf>,
}

/// What the worker opens once, before it gives up its privileges.
struct Held {
    kvm: std::fs::File,
    /// The kernel (direct boot) or the BIOS image (firmware boot).
    kernel: std::fs::File,
    initrd: Option<std::fs::File>,
    /// The disks, in the guest's order (each VM built shares their connections).
    disks: Vec<DiskConfig>,
    taps: Vec<super::vmm::virtio::tap::Tap>,
    console: std::fs::File,
    events: std::fs::File,
}

pub const SPEC_FILE: &str = "vm.json";
/// Most bytes one `input` request types.
pub const INPUT_MAX: usize = 64 * 1024;
/// How long typing waits for a guest that reads none of its console input.
pub const INPUT_STALL: Duration = Duration::from_secs(10);

pub const PID_FILE: &str = "vmm.pid";
pub const CONTROL_SOCKET: &str = "control.sock";
pub const CONSOLE_LOG: &str = "console.log";

/// The running VM's console input (replaced when the VM is built again after a reboot).
type InputSlot = Arc<Mutex<Arc<Mutex<super::vmm::serial::SerialDevice>>>>;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("VM spec {path}")]
    Spec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("VM spec {path} is malformed")]
    SpecFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the VM")]
    Vmm(#[from] super::vmm::vm::VmmError),
    #[error("{0} vCPUs requested; this VMM runs 1 to 32")]
    Vcpus(u32),
    #[error("cannot open the VM's volume: {0}")]
    Volume(String),
    #[error("bad NIC MAC address {0:?}")]
    Mac(String),
    #[error("the VM does not run without its seccomp filter")]
    Seccomp(#[from] super::seccomp::SeccompError),
    #[error("cannot become the VM's user {uid}: {step}")]
    User {
        uid: u32,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the VM's TAP")]
    Tap(#[from] super::vmm::virtio::tap::TapError),
}

/// Parses `aa:bb:cc:dd:ee:ff`.
fn parse_mac(s: &str) -> Result<[u8; 6], WorkerError> {
    let bad = || WorkerError::Mac(s.to_string());
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    parts.try_into().map_err(|_| bad())
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkerError {
    let what = what.into();
    move |source| WorkerError::Io { what, source }
}

impl WorkerSpec {
    /// The VM's configuration from the spec alone (no file is opened).
    fn base_config(&self, dir: &Path) -> Result<VmConfig, WorkerError> {
        let vcpus = u8::try_from(self.vcpus)
            .ok()
            .filter(|v| (1..=32).contains(v))
            .ok_or(WorkerError::Vcpus(self.vcpus))?;
        let mut c = VmConfig::new(self.kernel.clone());
        c.vcpus = vcpus;
        c.mem_mib = self.ram_mb;
        c.initrd = self.initrd.clone();
        if !self.cmdline.is_empty() {
            c.cmdline = self.cmdline.clone();
        }
        // The VM has a keyboard controller only for reset: without these the guest spends
        // seconds probing for a mouse and a multiplexer (as Firecracker's defaults do).
        if !c.cmdline.contains("i8042.") {
            c.cmdline.push_str(" i8042.noaux i8042.nomux i8042.dumbkbd");
        }
        c.disks = self
            .disk
            .iter()
            .map(|p| DiskConfig::Path {
                path: p.clone(),
                read_only: false,
            })
            .collect();
        c.firmware = self.firmware.clone();
        if let Some(tap) = &self.tap {
            c.nics.push(NicConfig {
                tap: tap.clone(),
                mac: match &self.mac {
                    Some(m) => parse_mac(m)?,
                    None => mac_for(&self.id),
                },
            });
        }
        for n in &self.more_nics {
            c.nics.push(NicConfig {
                tap: n.tap.clone(),
                mac: parse_mac(&n.mac)?,
            });
        }
        c.serial_log = Some(dir.join(CONSOLE_LOG));
        Ok(c)
    }

    /// Opens everything the VM will use, for as long as the worker runs.
    fn open(&self, dir: &Path) -> Result<Held, WorkerError> {
        let file = |p: &Path, what: &str| {
            std::fs::File::open(p).map_err(io(format!("cannot open the {what} {}", p.display())))
        };
        let mut disks = Vec::new();
        let nbd = |n: &super::NbdDisk| -> Result<_, WorkerError> {
            let v = crate::storage::nbd::NbdVolume::connect_unix(&n.socket, &n.export)
                .map_err(|e| WorkerError::Volume(crate::telemetry::error_chain(&e)))?;
            // The serial the guest sees (/dev/disk/by-id/virtio-<serial>), as on QEMU.
            Ok(DiskConfig::Volume {
                volume: Arc::new(v),
                read_only: false,
                id: n.export.chars().take(20).collect(),
            })
        };
        if let Some(n) = &self.nbd {
            disks.push(nbd(n)?);
        }
        if let Some(p) = &self.disk {
            let v = crate::storage::file::FileVolume::open(p, false)
                .map_err(|e| WorkerError::Volume(crate::telemetry::error_chain(&e)))?;
            disks.push(DiskConfig::Volume {
                volume: Arc::new(v),
                read_only: false,
                id: "disk0".into(),
            });
        }
        for d in &self.data_disks {
            disks.push(nbd(d)?);
        }
        if let Some(p) = &self.config_drive {
            let v = crate::storage::file::FileVolume::open(p, true)
                .map_err(|e| WorkerError::Volume(crate::telemetry::error_chain(&e)))?;
            disks.push(DiskConfig::Volume {
                volume: Arc::new(v),
                read_only: true,
                id: "config-2".into(),
            });
        }
        Ok(Held {
            kvm: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .map_err(io("cannot open /dev/kvm"))?,
            kernel: match &self.firmware {
                Some(fw) => file(fw, "firmware")?,
                None => file(&self.kernel, "kernel")?,
            },
            initrd: self
                .initrd
                .as_deref()
                .map(|p| file(p, "initramfs"))
                .transpose()?,
            disks,
            taps: self
                .tap
                .iter()
                .chain(self.more_nics.iter().map(|n| &n.tap))
                .map(|t| super::vmm::virtio::tap::Tap::open(t))
                .collect::<Result<_, _>>()?,
            console: std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(CONSOLE_LOG))
                .map_err(io("cannot open the console log"))?,
            events: vmdir::open_events(dir).map_err(io("cannot open events.log"))?,
        })
    }

    /// The VM's configuration on the descriptors the worker holds.
    fn vm_config(&self, dir: &Path, held: &Held) -> Result<VmConfig, WorkerError> {
        let mut c = self.base_config(dir)?;
        let dup = |f: &std::fs::File| f.try_clone().map_err(io("cannot duplicate a descriptor"));
        c.disks = held.disks.clone();
        c.opened.kvm = Some(dup(&held.kvm)?);
        if self.firmware.is_some() {
            c.opened.firmware = Some(dup(&held.kernel)?);
        } else {
            c.opened.kernel = Some(dup(&held.kernel)?);
        }
        c.opened.initrd = held.initrd.as_ref().map(dup).transpose()?;
        c.opened.serial_log = Some(dup(&held.console)?);
        c.opened.taps = held
            .taps
            .iter()
            .map(|t| t.try_clone().map_err(io("cannot duplicate the TAP")))
            .collect::<Result<_, _>>()?;
        Ok(c)
    }
}

/// A stable, locally administered MAC address derived from the VM's id.
pub fn mac_for(id: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let b = h.to_le_bytes();
    [0x52, 0x54, 0x00, b[0], b[1], b[2]]
}

enum Request {
    Pause,
    Resume,
    Reboot,
    Stop,
    PowerDown,
}

/// Runs the worker until the VM ends. Returns the process exit code.
pub fn run(dir: &Path) -> Result<i32, WorkerError> {
    let spec_path = dir.join(SPEC_FILE);
    let text = std::fs::read_to_string(&spec_path).map_err(|source| WorkerError::Spec {
        path: spec_path.clone(),
        source,
    })?;
    let spec: WorkerSpec =
        serde_json::from_str(&text).map_err(|source| WorkerError::SpecFormat {
            path: spec_path.clone(),
            source,
        })?;
    let _ = std::fs::remove_file(dir.join(CONTROL_SOCKET));
    let listener = UnixListener::bind(dir.join(CONTROL_SOCKET)).map_err(io(format!(
        "cannot listen on {}",
        dir.join(CONTROL_SOCKET).display()
    )))?;

    let held = spec.open(dir)?;
    let mut pid_file =
        std::fs::File::create(dir.join(PID_FILE)).map_err(io("cannot create the pid file"))?;
    let mut handle = Vmm::new(spec.vm_config(dir, &held)?)?.start()?;
    let trimmed = super::trim::trim_file_pages();
    tracing::info!(trimmed_kib = trimmed, "released start-up file pages");
    drop_privileges(spec.uid)?;
    // From here on, only the system calls a running VM needs (compute::seccomp).
    let allowed = super::seccomp::install_worker_filter()?;
    tracing::info!(
        allowed,
        uid = spec.uid,
        "seccomp filter installed: any other system call ends this worker"
    );
    // The pid tells the driver the VM runs: written once the worker is confined.
    pid_file
        .write_all(std::process::id().to_string().as_bytes())
        .map_err(io("cannot write the pid file"))?;
    drop(pid_file);
    let events = &held.events;
    vmdir::append_event_to(events, "start started by Strata");

    let state = Arc::new(Mutex::new(RunState::Running));
    let input: InputSlot = Arc::new(Mutex::new(handle.console_input()));
    let set_input = |h: &VmmHandle| {
        *input.lock().unwrap_or_else(|p| p.into_inner()) = h.console_input();
    };
    let (tx, rx) = mpsc::channel::<(Request, mpsc::Sender<String>)>();
    {
        let (state, input) = (state.clone(), input.clone());
        std::thread::spawn(move || serve_control(listener, state, input, tx));
    }
    loop {
        // Requests from the driver, between guest events.
        if let Ok((req, reply)) = rx.try_recv() {
            let answer = match req {
                Request::Pause => handle
                    .pause()
                    .map(|_| "ok".to_string())
                    .unwrap_or_else(|e| format!("error {e}")),
                Request::Resume => {
                    handle.resume();
                    "ok".into()
                }
                Request::PowerDown => {
                    if handle.state() == RunState::Paused {
                        "paused".into()
                    } else if handle.press_power_button() {
                        vmdir::append_event_to(events, "powerdown power button pressed by Strata");
                        "pressed".into()
                    } else {
                        "unhandled".into()
                    }
                }
                Request::Reboot => {
                    vmdir::append_event_to(events, "reset rebooted by Strata");
                    handle.stop();
                    drain(&handle);
                    match Vmm::new(spec.vm_config(dir, &held)?).and_then(|v| v.start()) {
                        Ok(h) => {
                            handle = h;
                            set_input(&handle);
                            "ok".into()
                        }
                        Err(e) => {
                            let why = crate::telemetry::error_chain(&e);
                            vmdir::append_event_to(
                                events,
                                &format!("shutdown failed to reboot: {why}"),
                            );
                            let _ = reply.send(format!("error {why}"));
                            return Ok(1);
                        }
                    }
                }
                Request::Stop => {
                    handle.stop();
                    vmdir::append_event_to(events, "shutdown stopped by Strata");
                    let _ = reply.send("ok".into());
                    return Ok(0);
                }
            };
            *state.lock().unwrap_or_else(|p| p.into_inner()) = handle.state();
            let _ = reply.send(answer);
        }
        match handle.next_event_timeout(Duration::from_millis(50)) {
            Some(VmmEvent::GuestReboot) => {
                vmdir::append_event_to(events, "reset guest rebooted");
                handle.stop();
                handle = Vmm::new(spec.vm_config(dir, &held)?)?.start()?;
                set_input(&handle);
            }
            Some(VmmEvent::GuestPowerOff) => {
                handle.stop();
                vmdir::append_event_to(events, "shutdown guest powered off");
                return Ok(0);
            }
            Some(VmmEvent::Error(e)) => {
                handle.stop();
                vmdir::append_event_to(events, &format!("panic VMM error: {e}"));
                return Ok(1);
            }
            Some(VmmEvent::Stopped) => {
                vmdir::append_event_to(events, "shutdown stopped");
                return Ok(0);
            }
            Some(VmmEvent::Started) | None => {}
        }
    }
}

/// Throws away events left from a VM that was stopped.
fn drain(h: &VmmHandle) {
    while h.next_event_timeout(Duration::from_millis(1)).is_some() {}
}

/// Types hex-encoded `text` into the console: the answer line.
fn type_input(input: &InputSlot, text: &str) -> String {
    let Ok(bytes) = hex::decode(text.trim()) else {
        return "error console input is not hex".into();
    };
    if bytes.len() > INPUT_MAX {
        return format!("error at most {INPUT_MAX} bytes of console input at once");
    }
    let dev = input.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let sent = super::vmm::serial::type_all(&dev, &bytes, INPUT_STALL);
    if sent == bytes.len() {
        "ok".into()
    } else {
        format!(
            "error the guest read {sent} of {} bytes and then nothing for {} s (is anything \
             reading its serial console?)",
            bytes.len(),
            INPUT_STALL.as_secs()
        )
    }
}

fn serve_control(
    listener: UnixListener,
    state: Arc<Mutex<RunState>>,
    input: InputSlot,
    tx: mpsc::Sender<(Request, mpsc::Sender<String>)>,
) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        // Bounded: an `input` line carries at most INPUT_MAX bytes, hex-encoded.
        let mut reader = BufReader::new(std::io::Read::take(&conn, 2 * INPUT_MAX as u64 + 64));
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        if let Some(text) = line.trim().strip_prefix("input ") {
            let answer = type_input(&input, text);
            let _ = (&conn).write_all(format!("{answer}\n").as_bytes());
            continue;
        }
        let req = match line.trim() {
            "state" => {
                let s = match *state.lock().unwrap_or_else(|p| p.into_inner()) {
                    RunState::Paused => "paused",
                    _ => "running",
                };
                let _ = (&conn).write_all(format!("{s}\n").as_bytes());
                continue;
            }
            "pause" => Request::Pause,
            "resume" => Request::Resume,
            "reboot" => Request::Reboot,
            "stop" => Request::Stop,
            "powerdown" => Request::PowerDown,
            other => {
                let _ = (&conn).write_all(format!("error unknown request {other:?}\n").as_bytes());
                continue;
            }
        };
        let (rtx, rrx) = mpsc::channel();
        if tx.send((req, rtx)).is_err() {
            return;
        }
        let answer = rrx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| "error the VM did not answer".into());
        let _ = (&conn).write_all(format!("{answer}\n").as_bytes());
    }
}

/// Sends one request to a worker and returns its answer line.
pub fn request(dir: &Path, what: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(dir.join(CONTROL_SOCKET)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(40)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{what}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let line = line.trim().to_string();
    match line.strip_prefix("error ") {
        Some(e) => Err(e.to_string()),
        None if line.is_empty() => Err("the worker closed the connection".into()),
        None => Ok(line),
    }
}

/// No new privileges; then the VM's own user and group (`uid`), which leaves no
/// capabilities, or, without one, root without any capability.
fn drop_privileges(uid: Option<u32>) -> Result<(), WorkerError> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot set no_new_privs");
    }
    if let Some(uid) = uid {
        let fail = |step| {
            let source = std::io::Error::last_os_error();
            move || WorkerError::User { uid, step, source }
        };
        // SAFETY: setgroups with a zero count reads no memory.
        if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
            return Err(fail("setgroups")());
        }
        // SAFETY: integer arguments only.
        if unsafe { libc::setresgid(uid, uid, uid) } != 0 {
            return Err(fail("setresgid")());
        }
        // SAFETY: integer arguments only. Leaving uid 0 clears every capability set.
        if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
            return Err(fail("setresuid")());
        }
        return Ok(());
    }
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let keep = 0u32;
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: keep,
            permitted: keep,
            inheritable: 0,
        },
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads a valid version-3 header and two data structs, both live for
    // the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot drop capabilities");
    }
    Ok(())
}

/// Plain text logs on stderr (the worker's `worker.log`) at info level, without the
/// daemon's filter machinery.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The capabilities this process holds (effective set), from /proc; for tests and logs.
pub fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_stable_local_and_distinct() {
        let a = mac_for("vm-a");
        assert_eq!(a, mac_for("vm-a"));
        assert_ne!(a, mac_for("vm-b"));
        assert_eq!(a[0] & 0x02, 0x02, "locally administered");
        assert_eq!(a[0] & 0x01, 0, "unicast");
    }

    #[test]
    fn spec_maps_to_a_vm_config_and_refuses_bad_vcpus() {
        let d = tempfile::tempdir().unwrap();
        let spec = WorkerSpec {
            id: "x".into(),
            vcpus: 2,
            ram_mb: 128,
            kernel: "/k".into(),
            initrd: Some("/i".into()),
            cmdline: "console=ttyS0".into(),
            disk: Some("/d".into()),
            tap: None,
            mac: None,
            nbd: None,
            uid: None,
            more_nics: vec![super::super::Nic {
                tap: "tap9".into(),
                mac: "52:54:00:00:00:09".into(),
            }],
            data_disks: Vec::new(),
            config_drive: None,
            firmware: None,
        };
        let c = spec.base_config(d.path()).unwrap();
        assert_eq!((c.vcpus, c.mem_mib, c.disks.len()), (2, 128, 1));
        assert_eq!(c.nics.len(), 1);
        assert_eq!(c.nics[0].mac, [0x52, 0x54, 0, 0, 0, 9]);
        assert_eq!(c.serial_log.unwrap(), d.path().join(CONSOLE_LOG));
        assert!(c.cmdline.starts_with("console=ttyS0 ") && c.cmdline.contains("i8042.noaux"));
        let bad = WorkerSpec {
            vcpus: 0,
            ..spec.clone()
        };
        assert!(bad.base_config(d.path()).is_err());
        let bad = WorkerSpec {
            nbd: Some(super::super::NbdDisk {
                socket: d.path().join("no.sock"),
                export: "vol".into(),
            }),
            ..spec.clone()
        };
        let e = bad.open(d.path()).err().unwrap().to_string();
        assert!(
            e.contains("cannot open the VM's volume") && e.contains("no.sock"),
            "{e}"
        );
        let bad = WorkerSpec { vcpus: 300, ..spec };
        assert!(bad
            .base_config(d.path())
            .unwrap_err()
            .to_string()
            .contains("300"));
    }

    #[test]
    fn control_requests_fail_clearly_without_a_worker() {
        let d = tempfile::tempdir().unwrap();
        assert!(request(d.path(), "state").is_err());
    }
}
