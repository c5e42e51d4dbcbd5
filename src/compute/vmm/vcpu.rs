//! vCPU threads: KVM_RUN, exit dispatch to the buses, and the pause/resume/stop protocol.
//!
//! A control block holds the desired mode. A vCPU checks it before every KVM_RUN; to make
//! a vCPU inside KVM_RUN notice, it is kicked with a signal (KVM_RUN returns EINTR). A
//! kick can land just before KVM_RUN is entered, so kicks repeat until every vCPU has
//! acknowledged (parked or exited).

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::bus::{lock, Bus, GuestRequest};

/// What the vCPUs should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Running,
    Paused,
    Stopping,
}

/// Messages from vCPU threads to the VM's supervisor.
#[derive(Debug)]
pub enum VcpuMessage {
    Guest(GuestRequest),
    /// A vCPU failed and stopped.
    Failed {
        id: u8,
        reason: String,
    },
    /// The owner asked for the VM to stop.
    Stop,
}

/// Shared between the vCPU threads and whoever controls them.
pub struct Control {
    mode: Mutex<Mode>,
    cv: Condvar,
    parked: AtomicUsize,
}

impl Control {
    pub fn new() -> Arc<Self> {
        Arc::new(Control {
            mode: Mutex::new(Mode::Running),
            cv: Condvar::new(),
            parked: AtomicUsize::new(0),
        })
    }

    pub fn mode(&self) -> Mode {
        *lock(&self.mode)
    }

    pub fn set_mode(&self, m: Mode) {
        let mut g = lock(&self.mode);
        // Stopping is final.
        if *g != Mode::Stopping {
            *g = m;
        }
        self.cv.notify_all();
    }

    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::SeqCst)
    }

    /// Blocks a vCPU thread while paused; returns the mode that ended the wait.
    fn park(&self) -> Mode {
        let mut g = lock(&self.mode);
        self.parked.fetch_add(1, Ordering::SeqCst);
        while *g == Mode::Paused {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        self.parked.fetch_sub(1, Ordering::SeqCst);
        *g
    }
}

/// The signal used to kick vCPUs out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler once per process.
pub fn install_kick_handler() -> Result<(), std::io::Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick) {
            result = Err(std::io::Error::from_raw_os_error(e.errno()));
        }
    });
    result
}

/// The running vCPU threads.
pub struct VcpuSet {
    control: Arc<Control>,
    threads: Mutex<Vec<(JoinHandle<()>, Arc<AtomicBool>)>>,
}

#[derive(Debug, thiserror::Error)]
#[error("vCPUs did not {what} within {waited:?}")]
pub struct KickTimeout {
    pub what: &'static str,
    pub waited: Duration,
}

const KICK_INTERVAL: Duration = Duration::from_millis(5);
const KICK_TIMEOUT: Duration = Duration::from_secs(5);

impl VcpuSet {
    /// Starts one thread per vCPU.
    pub fn spawn(
        vcpus: Vec<VcpuFd>,
        io: Bus,
        mmio: Bus,
        control: Arc<Control>,
        tx: Sender<VcpuMessage>,
    ) -> Result<Self, std::io::Error> {
        install_kick_handler()?;
        let mut threads = Vec::new();
        for (id, fd) in vcpus.into_iter().enumerate() {
            let exited = Arc::new(AtomicBool::new(false));
            let ctx = VcpuThread {
                id: id as u8,
                fd,
                io: io.clone(),
                mmio: mmio.clone(),
                control: control.clone(),
                tx: tx.clone(),
                exited: exited.clone(),
            };
            let h = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || ctx.run())?;
            threads.push((h, exited));
        }
        Ok(VcpuSet {
            control,
            threads: Mutex::new(threads),
        })
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Kicks every vCPU not yet exited until `done` holds.
    fn kick_until(
        &self,
        what: &'static str,
        done: impl Fn(&[(JoinHandle<()>, Arc<AtomicBool>)]) -> bool,
    ) -> Result<(), KickTimeout> {
        let start = Instant::now();
        loop {
            {
                let threads = lock(&self.threads);
                if done(&threads) {
                    return Ok(());
                }
                for (h, exited) in threads.iter() {
                    if !exited.load(Ordering::SeqCst) {
                        // SAFETY: the thread is not joined (joining happens only in
                        // `join`, under this same lock), so its pthread_t is valid;
                        // the handler for the signal is installed and does nothing.
                        unsafe { libc::pthread_kill(h.as_pthread_t(), kick_signal()) };
                    }
                }
            }
            if start.elapsed() > KICK_TIMEOUT {
                return Err(KickTimeout {
                    what,
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(KICK_INTERVAL);
        }
    }

    /// Parks every vCPU; returns once all are parked.
    pub fn pause(&self) -> Result<(), KickTimeout> {
        self.control.set_mode(Mode::Paused);
        let n = lock(&self.threads).len();
        let c = self.control.clone();
        self.kick_until("pause", move |t| {
            c.parked() + t.iter().filter(|(_, e)| e.load(Ordering::SeqCst)).count() >= n
        })
    }

    pub fn resume(&self) {
        self.control.set_mode(Mode::Running);
    }

    /// Makes every vCPU thread exit, then joins them.
    pub fn stop(&self) -> Result<(), KickTimeout> {
        self.control.set_mode(Mode::Stopping);
        let r = self.kick_until("stop", |t| t.iter().all(|(_, e)| e.load(Ordering::SeqCst)));
        let mut threads = lock(&self.threads);
        if r.is_ok() {
            for (h, _) in threads.drain(..) {
                let _ = h.join();
            }
        }
        r
    }
}

struct VcpuThread {
    id: u8,
    fd: VcpuFd,
    io: Bus,
    mmio: Bus,
    control: Arc<Control>,
    tx: Sender<VcpuMessage>,
    exited: Arc<AtomicBool>,
}

/// What one exit means for the run loop.
enum Next {
    Continue,
    Stop(VcpuMessage),
}

impl VcpuThread {
    fn run(mut self) {
        tracing::debug!(vcpu = self.id, "vCPU thread started");
        loop {
            match self.control.mode() {
                Mode::Running => {}
                Mode::Paused => {
                    match self.fd.get_regs() {
                        Ok(r) => tracing::info!(
                            vcpu = self.id,
                            rip = format_args!("{:#x}", r.rip),
                            rflags = format_args!("{:#x}", r.rflags),
                            "vCPU parked"
                        ),
                        Err(e) => tracing::info!(vcpu = self.id, error = %e, "vCPU parked"),
                    }
                    if self.control.park() == Mode::Stopping {
                        break;
                    }
                    continue;
                }
                Mode::Stopping => break,
            }
            match self.run_once() {
                Next::Continue => {}
                Next::Stop(msg) => {
                    let _ = self.tx.send(msg);
                    // Wait for the supervisor to stop everyone.
                    self.control.set_mode(Mode::Paused);
                    if self.control.park() == Mode::Stopping {
                        break;
                    }
                }
            }
        }
        tracing::debug!(vcpu = self.id, "vCPU thread exiting");
        self.exited.store(true, Ordering::SeqCst);
    }

    fn run_once(&mut self) -> Next {
        let id = self.id;
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                self.io.read(u64::from(port), data);
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                self.io.write(u64::from(port), data);
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !self.mmio.read(addr, data) {
                    tracing::trace!(vcpu = id, addr, "unclaimed MMIO read");
                }
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !self.mmio.write(addr, data) {
                    tracing::trace!(vcpu = id, addr, "unclaimed MMIO write");
                }
            }
            Ok(VcpuExit::Hlt) => {
                tracing::info!(vcpu = id, "vCPU halted");
                return Next::Stop(VcpuMessage::Guest(GuestRequest::PowerOff));
            }
            Ok(VcpuExit::Shutdown) => {
                tracing::info!(vcpu = id, "guest triple-faulted or reset");
                return Next::Stop(VcpuMessage::Guest(GuestRequest::Reset));
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => {
                    return Next::Stop(VcpuMessage::Guest(GuestRequest::PowerOff))
                }
                KVM_SYSTEM_EVENT_RESET => {
                    return Next::Stop(VcpuMessage::Guest(GuestRequest::Reset))
                }
                other => tracing::warn!(vcpu = id, kind = other, "unhandled system event"),
            },
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return Next::Stop(VcpuMessage::Failed {
                    id,
                    reason: format!("VM entry failed: hardware reason {reason:#x} on cpu {cpu}"),
                });
            }
            Ok(VcpuExit::InternalError) => {
                return Next::Stop(VcpuMessage::Failed {
                    id,
                    reason: "KVM internal error".into(),
                });
            }
            Ok(VcpuExit::Intr) => {}
            Ok(other) => tracing::debug!(vcpu = id, exit = ?other, "unhandled vCPU exit"),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
            }
            Err(e) => {
                return Next::Stop(VcpuMessage::Failed {
                    id,
                    reason: format!("KVM_RUN failed: {e}"),
                });
            }
        }
        Next::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_is_final_and_park_returns_on_resume() {
        let c = Control::new();
        c.set_mode(Mode::Paused);
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.park());
        while c.parked() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        c.set_mode(Mode::Running);
        assert_eq!(t.join().unwrap(), Mode::Running);
        c.set_mode(Mode::Stopping);
        c.set_mode(Mode::Running);
        assert_eq!(c.mode(), Mode::Stopping);
    }
}
