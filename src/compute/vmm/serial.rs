//! The guest's 16550 UART on port 0x3f8 (vm-superio), with its output captured three
//! ways: a bounded ring of the newest bytes, an append-only log file, and live subscribers.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::{lock, BusDevice};

/// COM1.
pub const SERIAL_PORT: u64 = 0x3f8;
pub const SERIAL_PORT_LEN: u64 = 8;
pub const SERIAL_IRQ: u32 = 4;
/// Default size of the in-memory console ring.
pub const DEFAULT_RING_BYTES: usize = 64 * 1024;
/// Chunks a slow subscriber may fall behind before it misses output.
const SUBSCRIBER_BACKLOG: usize = 1024;
/// What Linux prints when it powers off or halts (`kernel_power_off`, `kernel_halt`).
/// Without ACPI a power-off request becomes a halt (interrupts off, `hlt`, handled inside
/// KVM), so the console line is the only sign the VMM gets; it reports a power-off.
const POWER_DOWN_MARKS: [&[u8]; 2] = [b"reboot: Power down", b"reboot: System halted"];
const MARK_WINDOW: usize = 32;

/// Called once when a power-down line appears.
pub type PowerDownHook = Box<dyn Fn() + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("cannot open console log {path}")]
    OpenLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the serial interrupt eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("serial input FIFO is full")]
    InputFull,
}

struct LogInner {
    ring: VecDeque<u8>,
    capacity: usize,
    file: Option<(PathBuf, File)>,
    subscribers: Vec<SyncSender<Vec<u8>>>,
    tail: Vec<u8>,
    hook: Option<PowerDownHook>,
}

/// Console output: ring + file + subscribers. Cheap to clone (shared).
#[derive(Clone)]
pub struct ConsoleLog {
    inner: Arc<Mutex<LogInner>>,
    power_down_seen: Arc<AtomicBool>,
}

impl ConsoleLog {
    /// A log keeping the newest `capacity` bytes, appending to `path` if given.
    pub fn new(capacity: usize, path: Option<&Path>) -> Result<Self, SerialError> {
        let file = path
            .map(|p| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map(|f| (p.to_path_buf(), f))
                    .map_err(|source| SerialError::OpenLog {
                        path: p.to_path_buf(),
                        source,
                    })
            })
            .transpose()?;
        Ok(Self::build(capacity, file))
    }

    /// A log appending to `file`, already open (at `path`, for messages).
    pub fn with_file(capacity: usize, path: PathBuf, file: File) -> Self {
        Self::build(capacity, Some((path, file)))
    }

    fn build(capacity: usize, file: Option<(PathBuf, File)>) -> Self {
        ConsoleLog {
            inner: Arc::new(Mutex::new(LogInner {
                ring: VecDeque::with_capacity(capacity),
                capacity: capacity.max(1),
                file,
                subscribers: Vec::new(),
                tail: Vec::new(),
                hook: None,
            })),
            power_down_seen: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Appends guest output.
    pub fn push(&self, bytes: &[u8]) {
        let mut g = lock(&self.inner);
        let cap = g.capacity;
        if bytes.len() >= cap {
            g.ring.clear();
            g.ring.extend(&bytes[bytes.len() - cap..]);
        } else {
            let overflow = (g.ring.len() + bytes.len()).saturating_sub(cap);
            g.ring.drain(..overflow);
            g.ring.extend(bytes);
        }
        if let Some((path, f)) = g.file.as_mut() {
            if let Err(e) = f.write_all(bytes) {
                tracing::warn!(path = %path.display(), error = %e, "console log write failed; log disabled");
                g.file = None;
            }
        }
        g.subscribers.retain(|s| match s.try_send(bytes.to_vec()) {
            Ok(()) | Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Disconnected(_)) => false,
        });
        // Look for the power-down line across write boundaries.
        let mut window = std::mem::take(&mut g.tail);
        window.extend_from_slice(bytes);
        let seen = POWER_DOWN_MARKS
            .iter()
            .any(|m| window.windows(m.len()).any(|w| w == *m));
        if seen && !self.power_down_seen.swap(true, Ordering::SeqCst) {
            if let Some(h) = g.hook.as_ref() {
                h();
            }
        }
        let keep = window.len().min(MARK_WINDOW);
        g.tail = window[window.len() - keep..].to_vec();
    }

    /// The newest bytes, oldest first.
    pub fn snapshot(&self) -> Vec<u8> {
        lock(&self.inner).ring.iter().copied().collect()
    }

    /// A live feed of output chunks from now on. A subscriber more than
    /// `SUBSCRIBER_BACKLOG` chunks behind misses chunks rather than stalling the guest.
    pub fn subscribe(&self) -> Receiver<Vec<u8>> {
        let (tx, rx) = sync_channel(SUBSCRIBER_BACKLOG);
        lock(&self.inner).subscribers.push(tx);
        rx
    }

    /// Whether the guest printed its power-down line since the last [`Self::clear_power_down`].
    pub fn power_down_seen(&self) -> bool {
        self.power_down_seen.load(Ordering::SeqCst)
    }

    /// Runs `hook` when the guest prints its power-off or halt line.
    pub fn set_power_down_hook(&self, hook: PowerDownHook) {
        lock(&self.inner).hook = Some(hook);
    }

    pub fn clear_power_down(&self) {
        self.power_down_seen.store(false, Ordering::SeqCst);
    }

    pub fn flush(&self) {
        if let Some((_, f)) = lock(&self.inner).file.as_mut() {
            let _ = f.flush();
        }
    }
}

/// `Write` adapter that feeds the UART's transmit side into a [`ConsoleLog`].
pub struct LogWriter(ConsoleLog);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush();
        Ok(())
    }
}

/// Raises the UART's interrupt through an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Tells writers of console input that the guest emptied the UART's input FIFO.
#[derive(Default)]
pub struct InputSpace {
    /// Counts the times the FIFO was emptied.
    drained: Mutex<u64>,
    cv: std::sync::Condvar,
}

impl SerialEvents for InputSpace {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        *lock(&self.drained) += 1;
        self.cv.notify_all();
    }
}

/// The UART as a port-bus device.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, Arc<InputSpace>, LogWriter>,
    space: Arc<InputSpace>,
}

impl SerialDevice {
    /// A UART whose interrupt fires `irq` (register it as an irqfd on GSI 4).
    pub fn new(irq: EventFd, log: ConsoleLog) -> Self {
        let space = Arc::new(InputSpace::default());
        SerialDevice {
            uart: Serial::with_events(IrqTrigger(irq), space.clone(), LogWriter(log)),
            space,
        }
    }

    /// Queues bytes for the guest to read; returns how many fit.
    pub fn send_input(&mut self, bytes: &[u8]) -> Result<usize, SerialError> {
        self.uart
            .enqueue_raw_bytes(bytes)
            .map_err(|_| SerialError::InputFull)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *b = self.uart.read(off);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(b), Ok(off)) = (data.first(), u8::try_from(offset)) {
            if let Err(e) = self.uart.write(off, *b) {
                tracing::debug!(error = ?e, "serial write");
            }
        }
    }
}

/// Types all of `bytes` into a shared UART, a FIFO's worth at a time, waiting for the
/// guest to read each before the next (back-pressure, not an error, when the FIFO is
/// full). Gives up when the guest has read nothing for `stall`; returns how many bytes
/// the guest was given.
pub fn type_all(dev: &Arc<Mutex<SerialDevice>>, bytes: &[u8], stall: std::time::Duration) -> usize {
    let space = lock(dev).space.clone();
    let mut sent = 0;
    while sent < bytes.len() {
        let seen = *lock(&space.drained);
        let n = lock(dev).send_input(&bytes[sent..]).unwrap_or(0);
        sent += n;
        if sent == bytes.len() {
            break;
        }
        if n > 0 {
            continue;
        }
        // Full: wait until the guest empties the FIFO (or the clock says it stalled).
        let guard = lock(&space.drained);
        let (guard, timeout) = space
            .cv
            .wait_timeout_while(guard, stall, |d| *d == seen)
            .unwrap_or_else(|e| e.into_inner());
        drop(guard);
        if timeout.timed_out() {
            break;
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_writes(dev: &mut SerialDevice, s: &[u8]) {
        for b in s {
            dev.write(0, &[*b]); // THR
        }
    }

    #[test]
    fn guest_output_reaches_ring_file_and_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let log = ConsoleLog::new(1024, Some(&path)).unwrap();
        let rx = log.subscribe();
        let mut dev = SerialDevice::new(EventFd::new(0).unwrap(), log.clone());
        guest_writes(&mut dev, b"hello\n");
        assert_eq!(log.snapshot(), b"hello\n");
        log.flush();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\n");
        let got: Vec<u8> = rx.try_iter().flatten().collect();
        assert_eq!(got, b"hello\n");
    }

    #[test]
    fn ring_keeps_newest_bytes() {
        let log = ConsoleLog::new(8, None).unwrap();
        log.push(b"0123456");
        log.push(b"789");
        assert_eq!(log.snapshot(), b"23456789");
        log.push(b"abcdefghijk");
        assert_eq!(log.snapshot(), b"defghijk");
    }

    #[test]
    fn power_down_line_is_noticed_across_writes() {
        let log = ConsoleLog::new(64, None).unwrap();
        log.push(b"[ 1.0] reboot: Pow");
        assert!(!log.power_down_seen());
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        log.set_power_down_hook(Box::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        log.push(b"er down\n");
        assert!(log.power_down_seen());
        log.push(b"reboot: System halted\n");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let halted = ConsoleLog::new(64, None).unwrap();
        halted.push(b"[ 14.6] reboot: System halted\r\n");
        assert!(halted.power_down_seen());
    }

    #[test]
    fn input_is_readable_by_the_guest_and_raises_irq() {
        let log = ConsoleLog::new(64, None).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq.try_clone().unwrap(), log);
        dev.write(1, &[0x01]); // IER: data-available interrupt
        assert_eq!(dev.send_input(b"x").unwrap(), 1);
        let mut b = [0u8];
        dev.read(5, &mut b); // LSR
        assert_eq!(b[0] & 1, 1);
        dev.read(0, &mut b);
        assert_eq!(b[0], b'x');
        assert!(irq.read().is_ok());
    }

    #[test]
    fn typing_more_than_the_fifo_waits_for_the_guest() {
        let log = ConsoleLog::new(64, None).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = Arc::new(Mutex::new(SerialDevice::new(irq, log)));
        let text: Vec<u8> = (0..200u32).map(|i| b'a' + (i % 26) as u8).collect();
        // A "guest" that reads the receive buffer while it has data.
        let reader_dev = dev.clone();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 200 {
                let mut lsr = [0u8];
                lock(&reader_dev).read(5, &mut lsr);
                if lsr[0] & 1 == 1 {
                    let mut b = [0u8];
                    lock(&reader_dev).read(0, &mut b);
                    got.push(b[0]);
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            got
        });
        let sent = type_all(&dev, &text, std::time::Duration::from_secs(10));
        assert_eq!(sent, 200, "all input delivered, none refused");
        assert_eq!(reader.join().unwrap(), text, "in order, nothing lost");
        // A guest that never reads: one FIFO's worth is taken, then typing gives up.
        let stuck = Arc::new(Mutex::new(SerialDevice::new(
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            ConsoleLog::new(64, None).unwrap(),
        )));
        let n = type_all(&stuck, &text, std::time::Duration::from_millis(100));
        assert!(n > 0 && n < 200, "{n}");
    }

    #[test]
    fn dropped_subscriber_is_forgotten() {
        let log = ConsoleLog::new(64, None).unwrap();
        drop(log.subscribe());
        log.push(b"x");
        assert!(lock(&log.inner).subscribers.is_empty());
    }
}
