//! A whole VM: KVM objects, guest memory, devices, vCPU threads and the supervisor that
//! turns guest requests into [`VmmEvent`]s.
//!
//! `Vmm::new(config)` builds everything (nothing runs yet); `Vmm::start()` starts the vCPUs
//! and returns a [`VmmHandle`] with the event channel, pause/resume/stop and the console.
//! A guest reboot ends this VM with [`VmmEvent::GuestReboot`]: the owner (Strata's per-VM
//! worker) starts a fresh `Vmm` if it wants the guest back.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{IoEventAddress, Kvm, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::boot::{self, acpi, cpu, firmware, BootError};
use super::bus::{
    lock, AcpiPm, Bus, BusOverlap, DebugCon, DebugExit, GuestRequest, DEBUGCON_PORT,
    DEBUG_EXIT_PORT, I8042, I8042_DATA_PORT,
};
use super::cmos::{Cmos, CMOS_PORT, CMOS_PORTS_LEN};
use super::fw_cfg::{FW_CFG_PORT, FW_CFG_PORTS_LEN};
use super::memory::{self, MemoryError, KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR, VIRTIO_MMIO_SIZE};
use super::serial::{
    ConsoleLog, SerialDevice, SerialError, DEFAULT_RING_BYTES, SERIAL_IRQ, SERIAL_PORT,
    SERIAL_PORT_LEN,
};
use super::vcpu::{Control, KickTimeout, Mode, VcpuMessage, VcpuSet};
use super::virtio::block::{open_file, OpenDiskError};
use super::virtio::mmio::{MmioTransport, REG_QUEUE_NOTIFY};
use super::virtio::tap::{Tap, TapError};
use super::virtio::{block::Block, net::Net, rng::Rng, DeviceEvent, IrqLine, VirtioDevice};
use crate::storage::Volume;

/// A disk: a raw image file opened by the VMM, or any storage volume (e.g. a replicated one).
#[derive(Clone)]
pub enum DiskConfig {
    Path {
        path: PathBuf,
        read_only: bool,
    },
    Volume {
        volume: Arc<dyn Volume>,
        read_only: bool,
        id: String,
    },
}

impl std::fmt::Debug for DiskConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskConfig::Path { path, read_only } => {
                write!(f, "Path({}, ro={read_only})", path.display())
            }
            DiskConfig::Volume { id, read_only, .. } => write!(f, "Volume({id}, ro={read_only})"),
        }
    }
}

/// A network card: the TAP carrying it and its MAC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicConfig {
    pub tap: String,
    pub mac: [u8; 6],
}

#[derive(Debug)]
pub struct VmConfig {
    pub vcpus: u8,
    pub mem_mib: u64,
    /// The kernel for a direct boot; unused when `firmware` is set.
    pub kernel: PathBuf,
    /// A BIOS image (SeaBIOS `bios-microvm.bin`): the VM starts in it, in the reset state,
    /// and it boots the first disk's own bootloader. Then `kernel`, `initrd` and `cmdline`
    /// are not used.
    pub firmware: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Kernel command line. Devices are described by ACPI, not on the command line.
    pub cmdline: String,
    /// Disks in the guest's order; with firmware the first is the one booted.
    pub disks: Vec<DiskConfig>,
    pub nics: Vec<NicConfig>,
    pub rng: bool,
    pub serial_log: Option<PathBuf>,
    pub console_ring_bytes: usize,
    /// What the owner opened already; each takes the place of opening by path or name.
    pub opened: Opened,
}

/// Files a worker opens once, before it gives up its privileges, so that building the VM
/// again after a guest reboot needs no access to paths (`/dev/kvm`, the image files, the
/// TAP, the console log). The VMM uses duplicates of these descriptors.
#[derive(Default)]
pub struct Opened {
    pub kvm: Option<std::fs::File>,
    pub kernel: Option<std::fs::File>,
    pub initrd: Option<std::fs::File>,
    pub firmware: Option<std::fs::File>,
    /// The TAPs of `VmConfig::nics`, in the same order.
    pub taps: Vec<Tap>,
    pub serial_log: Option<std::fs::File>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("kvm", &self.kvm.is_some())
            .field("kernel", &self.kernel.is_some())
            .field("initrd", &self.initrd.is_some())
            .field("firmware", &self.firmware.is_some())
            .field("taps", &self.taps.iter().map(Tap::name).collect::<Vec<_>>())
            .field("serial_log", &self.serial_log.is_some())
            .finish()
    }
}

impl VmConfig {
    pub fn new(kernel: PathBuf) -> Self {
        VmConfig {
            vcpus: 1,
            mem_mib: 256,
            kernel,
            firmware: None,
            initrd: None,
            cmdline: "console=ttyS0 reboot=k panic=1 pci=off".into(),
            disks: Vec::new(),
            nics: Vec::new(),
            rng: true,
            serial_log: None,
            console_ring_bytes: DEFAULT_RING_BYTES,
            opened: Opened::default(),
        }
    }
}

/// What the owner of a VM hears about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmEvent {
    Started,
    GuestReboot,
    GuestPowerOff,
    /// Stopped on request.
    Stopped,
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("cannot open /dev/kvm")]
    Kvm(#[source] kvm_ioctls::Error),
    #[error("KVM: {op}")]
    KvmOp {
        op: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("guest memory")]
    Memory(#[from] MemoryError),
    #[error("loading the guest")]
    Boot(#[from] BootError),
    #[error("vCPU setup")]
    VcpuSetup(#[from] cpu::VcpuSetupError),
    #[error("serial console")]
    Serial(#[from] SerialError),
    #[error("disk")]
    Disk(#[from] OpenDiskError),
    #[error("network")]
    Tap(#[from] TapError),
    #[error("device bus")]
    Bus(#[from] BusOverlap),
    #[error("too many virtio devices (the last IRQ is taken)")]
    TooManyDevices,
    #[error("{0} vCPUs requested; 1..=32 are supported")]
    VcpuCount(u8),
    #[error("cannot create {what}")]
    Os {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("vCPU control")]
    Kick(#[from] KickTimeout),
}

fn kvm_op(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::KvmOp { op, source }
}

fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> VmmError {
    move |source| VmmError::Os { what, source }
}

/// A queue doorbell (ioeventfd) or a backend fd the device thread waits on.
struct Wakeup {
    fd: RawFd,
    device: usize,
    event: DeviceEvent,
    /// Kept open for the lifetime of the VM.
    evt: Option<EventFd>,
}

/// A built, not yet running VM.
pub struct Vmm {
    _kvm: Kvm,
    vm: Arc<VmFd>,
    _mem: GuestMemoryMmap,
    /// The firmware image's mapping below 4 GiB (firmware boot only).
    _rom: Option<GuestMemoryMmap>,
    vcpus: Vec<VcpuFd>,
    io: Bus,
    mmio: Bus,
    console: ConsoleLog,
    serial: Arc<Mutex<SerialDevice>>,
    pm: Arc<Mutex<AcpiPm>>,
    devices: Vec<Arc<Mutex<MmioTransport>>>,
    wakeups: Vec<Wakeup>,
    requests: (Sender<VcpuMessage>, Receiver<VcpuMessage>),
}

impl Vmm {
    pub fn new(config: VmConfig) -> Result<Self, VmmError> {
        if config.vcpus == 0 || config.vcpus > boot::mptable::MAX_VCPUS {
            return Err(VmmError::VcpuCount(config.vcpus));
        }
        let mut config = config;
        let kvm = match config.opened.kvm.take() {
            Some(f) => {
                use std::os::fd::IntoRawFd;
                // SAFETY: the descriptor is an open /dev/kvm that this Kvm now owns alone.
                unsafe { <Kvm as std::os::fd::FromRawFd>::from_raw_fd(f.into_raw_fd()) }
            }
            None => Kvm::new().map_err(VmmError::Kvm)?,
        };
        let vm = Arc::new(kvm.create_vm().map_err(kvm_op("create VM"))?);
        vm.set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(kvm_op("set TSS address"))?;
        vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
            .map_err(kvm_op("set identity map address"))?;
        vm.create_irq_chip().map_err(kvm_op("create irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_op("create PIT"))?;

        let mem = memory::create_guest_memory(config.mem_mib)?;
        // The mappings stay owned by `mem` (kept in `_mem` and by every device) for as
        // long as the VM exists.
        register_memory(&vm, &mem, 0)?;

        let (tx, rx) = channel();
        let sink_tx = Mutex::new(tx.clone());
        let sink: super::bus::RequestSink = Arc::new(move |r: GuestRequest| {
            let _ = lock(&sink_tx).send(VcpuMessage::Guest(r));
        });
        let mut io = Bus::new();
        let mut mmio = Bus::new();

        // Serial console on COM1, IRQ 4.
        let console = match config.opened.serial_log.take() {
            Some(f) => ConsoleLog::with_file(
                config.console_ring_bytes,
                config.serial_log.clone().unwrap_or_default(),
                f,
            ),
            None => ConsoleLog::new(config.console_ring_bytes, config.serial_log.as_deref())?,
        };
        let hook_sink = sink.clone();
        console.set_power_down_hook(Box::new(move || hook_sink(GuestRequest::PowerOff)));
        let serial_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(os("serial eventfd"))?;
        vm.register_irqfd(&serial_evt, SERIAL_IRQ)
            .map_err(kvm_op("register serial irqfd"))?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(serial_evt, console.clone())));
        io.insert(SERIAL_PORT, SERIAL_PORT_LEN, serial.clone())?;
        io.insert(
            I8042_DATA_PORT,
            5,
            Arc::new(Mutex::new(I8042::new(sink.clone()))),
        )?;
        io.insert(
            DEBUG_EXIT_PORT,
            1,
            Arc::new(Mutex::new(DebugExit::new(sink.clone()))),
        )?;
        let sci_vm = vm.clone();
        let sci: super::bus::SciLine = Arc::new(move |level| {
            if let Err(e) = sci_vm.set_irq_line(u32::from(acpi::SCI_IRQ), level) {
                tracing::error!(error = %e, "cannot drive the ACPI SCI line");
            }
        });
        let pm = Arc::new(Mutex::new(AcpiPm::new(sink, sci)));
        io.insert(
            u64::from(acpi::PM1A_EVT_PORT),
            acpi::PM_PORTS_LEN,
            pm.clone(),
        )?;

        // Virtio devices.
        let mut models: Vec<Box<dyn VirtioDevice>> = Vec::new();
        for (i, d) in config.disks.into_iter().enumerate() {
            let (backend, ro, id): (Arc<dyn Volume>, bool, String) = match d {
                DiskConfig::Path { path, read_only } => {
                    (open_file(&path, read_only)?, read_only, format!("disk{i}"))
                }
                DiskConfig::Volume {
                    volume,
                    read_only,
                    id,
                } => (volume, read_only, id),
            };
            models.push(Box::new(Block::new(backend, ro, &id)));
        }
        let mut opened_taps = std::mem::take(&mut config.opened.taps).into_iter();
        for nic in &config.nics {
            let tap = match opened_taps.next() {
                Some(t) => t,
                None => Tap::open(&nic.tap)?,
            };
            models.push(Box::new(Net::new(Box::new(tap), nic.mac)));
        }
        if config.rng {
            models.push(Box::new(Rng));
        }
        let mut acpi_devices = Vec::new();
        let mut devices = Vec::new();
        let mut wakeups = Vec::new();
        for (index, model) in models.into_iter().enumerate() {
            let (base, gsi) = memory::virtio_slot(index).ok_or(VmmError::TooManyDevices)?;
            let irq_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(os("virtio irqfd"))?;
            vm.register_irqfd(&irq_evt, gsi)
                .map_err(kvm_op("register virtio irqfd"))?;
            let queues = model.queue_max_sizes().len();
            let backend_fd = model.backend_fd();
            let t = MmioTransport::new(model, mem.clone(), Arc::new(IrqLine::new(irq_evt)));
            tracing::info!(
                device = t.device_type(),
                base = format_args!("{base:#x}"),
                gsi,
                "virtio-mmio device"
            );
            let t = Arc::new(Mutex::new(t));
            mmio.insert(base, VIRTIO_MMIO_SIZE, t.clone())?;
            for q in 0..queues {
                let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(os("ioeventfd"))?;
                vm.register_ioevent(
                    &evt,
                    &IoEventAddress::Mmio(base + REG_QUEUE_NOTIFY),
                    q as u32,
                )
                .map_err(kvm_op("register ioeventfd"))?;
                wakeups.push(Wakeup {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&evt),
                    device: devices.len(),
                    event: DeviceEvent::Queue(q),
                    evt: Some(evt),
                });
            }
            if let Some(fd) = backend_fd {
                wakeups.push(Wakeup {
                    fd,
                    device: devices.len(),
                    event: DeviceEvent::Backend,
                    evt: None,
                });
            }
            devices.push(t);
            acpi_devices.push(acpi::MmioDevice {
                base,
                len: VIRTIO_MMIO_SIZE,
                gsi,
            });
        }

        // Direct boot: kernel entry in long mode. Firmware boot: the reset state in the
        // BIOS, which reads the machine's description from fw_cfg and the CMOS.
        let mut rom = None;
        let entry = match &config.firmware {
            None => {
                let info = boot::load_guest(
                    &mem,
                    (&config.kernel, config.opened.kernel.as_ref()),
                    config
                        .initrd
                        .as_deref()
                        .map(|p| (p, config.opened.initrd.as_ref())),
                    &config.cmdline,
                    config.vcpus,
                    &acpi_devices,
                )?;
                Some(info.kernel.entry)
            }
            Some(path) => {
                let fw = firmware::load_firmware(&mem, path, config.opened.firmware.as_ref())?;
                // Kept in `_rom` for as long as the VM exists.
                register_memory(&vm, &fw.rom, mem.num_regions() as u32)?;
                rom = Some(fw.rom);
                let cfg = firmware::fw_cfg(&mem, config.vcpus, &acpi_devices)?;
                io.insert(FW_CFG_PORT, FW_CFG_PORTS_LEN, Arc::new(Mutex::new(cfg)))?;
                let low = memory::low_ram_end(&mem);
                let high = mem.iter().map(|r| r.len()).sum::<u64>() - low;
                io.insert(
                    CMOS_PORT,
                    CMOS_PORTS_LEN,
                    Arc::new(Mutex::new(Cmos::new(low, high, config.vcpus))),
                )?;
                io.insert(DEBUGCON_PORT, 1, Arc::new(Mutex::new(DebugCon::default())))?;
                None
            }
        };
        let mut supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_op("get supported CPUID"))?;
        // KVM emulates the TSC-deadline LAPIC timer but leaves advertising it to the VMM.
        // Without it the guest calibrates the LAPIC timer against the PIT, which fails
        // under nested or loaded hosts and leaves it on the slow PIT broadcast.
        cpu::set_tsc_deadline(
            &mut supported,
            kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer),
        );
        let mut vcpus = Vec::new();
        for id in 0..config.vcpus {
            let fd = vm
                .create_vcpu(u64::from(id))
                .map_err(kvm_op("create vCPU"))?;
            match entry {
                Some(entry) => cpu::configure_vcpu(&fd, id, config.vcpus, &supported, entry)?,
                None => cpu::configure_reset_vcpu(&fd, id, config.vcpus, &supported)?,
            }
            vcpus.push(fd);
        }
        let boot = match &config.firmware {
            None => format!("kernel command line {:?}", config.cmdline),
            Some(fw) => format!("firmware {}", fw.display()),
        };
        tracing::info!(vcpus = config.vcpus, mem_mib = config.mem_mib, %boot, "VM built");
        Ok(Vmm {
            _kvm: kvm,
            vm,
            _mem: mem,
            _rom: rom,
            vcpus,
            io,
            mmio,
            console,
            serial,
            pm,
            devices,
            wakeups,
            requests: (tx, rx),
        })
    }

    /// The console output (ring, file, subscribers); valid before and after start.
    pub fn console(&self) -> ConsoleLog {
        self.console.clone()
    }

    /// Starts the vCPUs and the device thread.
    pub fn start(self) -> Result<VmmHandle, VmmError> {
        let Vmm {
            _kvm,
            vm,
            _mem,
            _rom,
            vcpus,
            io,
            mmio,
            console,
            serial,
            pm,
            devices,
            wakeups,
            requests: (tx, rx),
        } = self;
        let (events_tx, events_rx) = channel();
        let stop_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(os("stop eventfd"))?;
        let dev_thread = spawn_device_thread(
            devices,
            wakeups,
            stop_evt.try_clone().map_err(os("stop eventfd"))?,
        )?;
        let control = Control::new();
        let set = Arc::new(
            VcpuSet::spawn(vcpus, io, mmio, control, tx.clone()).map_err(os("vCPU thread"))?,
        );
        let _ = events_tx.send(VmmEvent::Started);
        let sup_set = set.clone();
        let sup_console = console.clone();
        let supervisor = std::thread::Builder::new()
            .name("vmm-supervisor".into())
            .spawn(move || supervise(rx, sup_set, sup_console, events_tx))
            .map_err(os("supervisor thread"))?;
        Ok(VmmHandle {
            _kvm,
            _vm: vm,
            _mem,
            _rom,
            set,
            console,
            serial,
            pm,
            requests: tx,
            events: Mutex::new(events_rx),
            supervisor: Mutex::new(Some(supervisor)),
            dev_thread: Mutex::new(Some(dev_thread)),
            stop_evt,
        })
    }
}

/// Hands the regions of `mem` to KVM as slots from `first_slot` on. The caller keeps
/// `mem` alive for as long as the VM exists.
fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap, first_slot: u32) -> Result<(), VmmError> {
    for (i, region) in mem.iter().enumerate() {
        let r = kvm_userspace_memory_region {
            slot: first_slot + i as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which the caller keeps for
        // as long as the VM exists.
        unsafe { vm.set_user_memory_region(r) }.map_err(kvm_op("set memory region"))?;
    }
    Ok(())
}

/// Turns vCPU messages into events, and stops the VM on the first terminal one.
fn supervise(
    rx: Receiver<VcpuMessage>,
    set: Arc<VcpuSet>,
    console: ConsoleLog,
    events: Sender<VmmEvent>,
) {
    let event = match rx.recv() {
        Ok(VcpuMessage::Guest(GuestRequest::Reset)) if console.power_down_seen() => {
            VmmEvent::GuestPowerOff
        }
        Ok(VcpuMessage::Guest(GuestRequest::Reset)) => VmmEvent::GuestReboot,
        Ok(VcpuMessage::Guest(GuestRequest::PowerOff)) => VmmEvent::GuestPowerOff,
        Ok(VcpuMessage::Failed { id, reason }) => VmmEvent::Error(format!("vCPU {id}: {reason}")),
        Ok(VcpuMessage::Stop) | Err(_) => VmmEvent::Stopped,
    };
    tracing::info!(?event, "VM ending");
    if let Err(e) = set.stop() {
        tracing::error!(error = %e, "vCPUs did not stop");
    }
    console.flush();
    let _ = events.send(event);
}

fn spawn_device_thread(
    devices: Vec<Arc<Mutex<MmioTransport>>>,
    wakeups: Vec<Wakeup>,
    stop: EventFd,
) -> Result<JoinHandle<()>, VmmError> {
    let epoll = Epoll::new().map_err(os("epoll"))?;
    let stop_token = u64::MAX;
    epoll
        .ctl(
            ControlOperation::Add,
            std::os::fd::AsRawFd::as_raw_fd(&stop),
            EpollEvent::new(EventSet::IN, stop_token),
        )
        .map_err(os("epoll registration"))?;
    for (i, w) in wakeups.iter().enumerate() {
        let set = match w.event {
            // TAP readability is edge-triggered: the device reads until empty or until
            // the guest has no buffers, and resumes on the next rx queue notification.
            DeviceEvent::Backend => EventSet::IN | EventSet::EDGE_TRIGGERED,
            DeviceEvent::Queue(_) => EventSet::IN,
        };
        epoll
            .ctl(ControlOperation::Add, w.fd, EpollEvent::new(set, i as u64))
            .map_err(os("epoll registration"))?;
    }
    std::thread::Builder::new()
        .name("vmm-devices".into())
        .spawn(move || {
            let mut events = vec![EpollEvent::default(); 64];
            loop {
                let n = match epoll.wait(-1, &mut events) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "device thread epoll failed");
                        return;
                    }
                };
                for ev in &events[..n] {
                    if ev.data() == stop_token {
                        return;
                    }
                    let Some(w) = wakeups.get(ev.data() as usize) else {
                        continue;
                    };
                    if let Some(evt) = &w.evt {
                        let _ = evt.read();
                    }
                    if let Some(dev) = devices.get(w.device) {
                        lock(dev).process(w.event);
                    }
                }
            }
        })
        .map_err(os("device thread"))
}

/// A running VM.
pub struct VmmHandle {
    _kvm: Kvm,
    _vm: Arc<VmFd>,
    _mem: GuestMemoryMmap,
    _rom: Option<GuestMemoryMmap>,
    set: Arc<VcpuSet>,
    console: ConsoleLog,
    serial: Arc<Mutex<SerialDevice>>,
    pm: Arc<Mutex<AcpiPm>>,
    requests: Sender<VcpuMessage>,
    events: Mutex<Receiver<VmmEvent>>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    dev_thread: Mutex<Option<JoinHandle<()>>>,
    stop_evt: EventFd,
}

/// Run state as the owner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Stopped,
}

impl VmmHandle {
    /// Next event, blocking.
    pub fn next_event(&self) -> Option<VmmEvent> {
        lock(&self.events).recv().ok()
    }

    /// Next event if one is waiting within `timeout`.
    pub fn next_event_timeout(&self, timeout: std::time::Duration) -> Option<VmmEvent> {
        lock(&self.events).recv_timeout(timeout).ok()
    }

    pub fn state(&self) -> RunState {
        match self.set.control().mode() {
            Mode::Running => RunState::Running,
            Mode::Paused => RunState::Paused,
            Mode::Stopping => RunState::Stopped,
        }
    }

    pub fn pause(&self) -> Result<(), VmmError> {
        Ok(self.set.pause()?)
    }

    pub fn resume(&self) {
        self.set.resume();
    }

    pub fn console(&self) -> &ConsoleLog {
        &self.console
    }

    /// The serial console's input, usable from other threads while the VM runs.
    pub fn console_input(&self) -> Arc<Mutex<SerialDevice>> {
        self.serial.clone()
    }

    /// Presses the ACPI power button: a guest with a button handler shuts down cleanly
    /// (ending the VM with `GuestPowerOff`). Returns whether the guest had enabled the
    /// button; a guest that ignores it keeps running.
    pub fn press_power_button(&self) -> bool {
        lock(&self.pm).press_power_button()
    }

    /// Stops the VM (idempotent) and waits for every thread. Emits `Stopped` unless the
    /// guest ended it first.
    pub fn stop(&self) {
        // Wakes the supervisor if it is still waiting; ignored if it already ended.
        let _ = self.requests.send(VcpuMessage::Stop);
        if let Some(h) = lock(&self.supervisor).take() {
            let _ = h.join();
        }
        let _ = self.stop_evt.write(1);
        if let Some(h) = lock(&self.dev_thread).take() {
            let _ = h.join();
        }
    }
}

impl Drop for VmmHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_and_console_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<VmmHandle>();
        send_sync::<ConsoleLog>();
        fn send<T: Send>() {}
        send::<Vmm>();
    }
}
