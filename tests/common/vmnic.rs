//! A stand-in for a VM's network card: a network namespace whose `eth0` is a TAP, and a
//! relay that moves frames between it and the TAP Strata made for the port (opened by
//! name in the node's namespace, as a VMM opens it). The namespace's kernel is the
//! "guest": it runs a DHCP client, ping, nc.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens TAP `name` in network namespace `ns` (created if missing).
fn open_tap(ns: &str, name: &str) -> std::io::Result<File> {
    let path = format!("/run/netns/{ns}");
    let (ns, name) = (path.clone(), name.to_string());
    std::thread::spawn(move || {
        let nsf = File::open(&ns)?;
        // SAFETY: switches only this short-lived thread's network namespace.
        if unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF takes an ifreq, which IfReq lays out.
        if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF as _, &mut req) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f)
    })
    .join()
    .expect("tap thread")
}

fn must(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub struct VmNic {
    pub ns: String,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn relay(mut from: File, mut to: File, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let mut p = libc::pollfd {
                fd: from.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut p, 1, 100) };
            if n <= 0 {
                continue;
            }
            match from.read(&mut buf) {
                Ok(n) if n > 0 => {
                    // A TAP whose other side is not attached refuses frames: dropped, like
                    // a cable unplugged.
                    let _ = to.write(&buf[..n]);
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    })
}

impl VmNic {
    /// A "VM" in namespace `vm_ns` whose NIC (MAC `mac`) is Strata's TAP `tap` on the
    /// node in namespace `node_ns`.
    pub fn attach(node_ns: &str, tap: &str, vm_ns: &str, mac: &str) -> VmNic {
        must(&["ip", "netns", "add", vm_ns]);
        let guest = open_tap(vm_ns, "eth0").expect("guest TAP");
        must(&[
            "ip", "-n", vm_ns, "link", "set", "eth0", "address", mac, "mtu", "1450", "up",
        ]);
        must(&["ip", "-n", vm_ns, "link", "set", "lo", "up"]);
        let host =
            open_tap(node_ns, tap).unwrap_or_else(|e| panic!("open {tap} in {node_ns}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = vec![
            relay(
                guest.try_clone().expect("dup"),
                host.try_clone().expect("dup"),
                stop.clone(),
            ),
            relay(host, guest, stop.clone()),
        ];
        VmNic {
            ns: vm_ns.to_string(),
            stop,
            threads,
        }
    }

    /// Runs a command inside the VM.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .output()
            .expect("spawn in VM namespace")
    }

    /// Whether one ping to `ip` is answered (within `secs` seconds, retried).
    pub fn pings(&self, ip: &str, secs: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if self
                .run(&["busybox", "ping", "-c", "1", "-W", "1", ip])
                .status
                .success()
            {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
        }
    }
}

impl Drop for VmNic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
