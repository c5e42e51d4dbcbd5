//! Emulated servers for the installer's end-to-end tests: QEMU with software emulation
//! (`-accel tcg -cpu max`, whose emulated AMD SVM gives the guest a real kvm-amd), legacy
//! BIOS (SeaBIOS), UEFI or UEFI with Secure Boot (OVMF from Debian), USB sticks, virtio
//! or NVMe disks, and user-mode networking restricted to a port forwarded on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
    SecureBoot,
}

pub struct Spec<'a> {
    pub firmware: Firmware,
    /// The NVRAM file (UEFI), kept between the install and the boot from disk.
    pub vars: Option<&'a Path>,
    /// USB sticks (raw images), the first gets boot priority.
    pub sticks: Vec<&'a Path>,
    /// Disks: (image, `virtio` or `nvme`, serial).
    pub disks: Vec<(&'a Path, &'a str, &'a str)>,
    /// Host loopback port forwarded to the guest's port 5000.
    pub api_port: Option<u16>,
    pub mem_mb: u32,
    /// The serial console also on a Unix socket, to type on.
    pub keyboard: bool,
    /// A link to another emulated server (QEMU's socket network over loopback).
    pub lan: Lan<'a>,
}

/// An Ethernet segment between emulated servers: the first listens on two loopback ports
/// (`Listen(p)`: p and p + 1), up to two others connect to one each. The first also has
/// the user-mode network (its DHCP server and the forwarded API port) on the same
/// segment, through QEMU's hub, so the others get their addresses from there too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lan<'a> {
    None,
    Listen(u16),
    /// The port, and the last byte of the NIC's MAC (52:54:00:12:34:xx).
    Connect(u16, u8),
    /// A TAP device `tap` attached to the bridge `br0` of the network namespace `ns`
    /// (QEMU runs in that namespace), NIC MAC 52:54:00:12:34:`mac`.
    Tap {
        ns: &'a str,
        tap: &'a str,
        mac: u8,
    },
}

pub struct Machine {
    child: Child,
    pub log: PathBuf,
    keys: Option<std::os::unix::net::UnixStream>,
}

const OVMF: &str = "/usr/share/OVMF";

/// A fresh NVRAM file for `fw` (Secure Boot's has Microsoft's keys enrolled).
pub fn new_vars(fw: Firmware, path: &Path) {
    let src = match fw {
        Firmware::SecureBoot => format!("{OVMF}/OVMF_VARS_4M.ms.fd"),
        _ => format!("{OVMF}/OVMF_VARS_4M.fd"),
    };
    std::fs::copy(&src, path).unwrap_or_else(|e| panic!("copy {src}: {e} (install ovmf)"));
}

impl Machine {
    pub fn start(spec: &Spec, log: &Path) -> Machine {
        let _ = std::fs::remove_file(log);
        let mut a: Vec<String> = [
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push("-m".into());
        a.push(spec.mem_mb.to_string());
        let sock = log.with_extension("sock");
        if spec.keyboard {
            let _ = std::fs::remove_file(&sock);
            a.push("-chardev".into());
            a.push(format!(
                "socket,id=ser0,path={},server=on,wait=off,logfile={}",
                sock.display(),
                log.display()
            ));
            a.push("-serial".into());
            a.push("chardev:ser0".into());
        } else {
            a.push("-serial".into());
            a.push(format!("file:{}", log.display()));
        }
        match spec.firmware {
            Firmware::Bios => {}
            Firmware::Uefi | Firmware::SecureBoot => {
                let code = if spec.firmware == Firmware::SecureBoot {
                    "OVMF_CODE_4M.ms.fd"
                } else {
                    "OVMF_CODE_4M.fd"
                };
                if spec.firmware == Firmware::SecureBoot {
                    // The Secure Boot build keeps its variables in SMM-only flash.
                    a.extend([
                        "-machine".into(),
                        "q35,smm=on".into(),
                        "-global".into(),
                        "driver=cfi.pflash01,property=secure,value=on".into(),
                    ]);
                } else {
                    a.extend(["-machine".into(), "q35".into()]);
                }
                a.extend([
                    "-drive".into(),
                    format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF}/{code}"),
                    "-drive".into(),
                    format!(
                        "if=pflash,format=raw,unit=1,file={}",
                        spec.vars.expect("UEFI needs a vars file").display()
                    ),
                ]);
            }
        }
        if !spec.sticks.is_empty() {
            a.extend(["-device".into(), "qemu-xhci,id=xhci".into()]);
        }
        for (i, s) in spec.sticks.iter().enumerate() {
            a.extend([
                "-drive".into(),
                format!(
                    "if=none,id=stick{i},format=raw,readonly=on,file={}",
                    s.display()
                ),
                "-device".into(),
                format!(
                    "usb-storage,bus=xhci.0,drive=stick{i}{}",
                    if i == 0 { ",bootindex=1" } else { "" }
                ),
            ]);
        }
        for (i, (img, kind, serial)) in spec.disks.iter().enumerate() {
            let fmt = if img.extension().is_some_and(|e| e == "qcow2") {
                "qcow2"
            } else {
                "raw"
            };
            a.extend([
                "-drive".into(),
                format!("if=none,id=disk{i},format={fmt},file={}", img.display()),
                "-device".into(),
                // No bootindex: UEFI must follow the NVRAM's boot order (the entry the
                // installer wrote), which QEMU's bootindex would override.
                match *kind {
                    "nvme" => format!("nvme,drive=disk{i},serial={serial}"),
                    _ => format!("virtio-blk-pci,drive=disk{i},serial={serial}"),
                },
            ]);
        }
        let user = |p: u16| format!("user,restrict=on,hostfwd=tcp:127.0.0.1:{p}-:5000");
        match (spec.api_port, spec.lan) {
            (Some(p), Lan::None) => {
                a.extend(["-nic".into(), format!("{},model=virtio-net-pci", user(p))])
            }
            (Some(p), Lan::Listen(l)) => a.extend([
                "-netdev".into(),
                format!("{},id=u0", user(p)),
                "-netdev".into(),
                format!("socket,id=s0,listen=127.0.0.1:{l}"),
                "-netdev".into(),
                "hubport,id=h0,hubid=0,netdev=u0".into(),
                "-netdev".into(),
                "hubport,id=h1,hubid=0,netdev=s0".into(),
                "-netdev".into(),
                format!("socket,id=s1,listen=127.0.0.1:{}", l + 1),
                "-netdev".into(),
                "hubport,id=h3,hubid=0,netdev=s1".into(),
                "-netdev".into(),
                "hubport,id=h2,hubid=0".into(),
                "-device".into(),
                "virtio-net-pci,netdev=h2,mac=52:54:00:12:34:56".into(),
            ]),
            (None, Lan::Connect(l, mac)) => a.extend([
                "-netdev".into(),
                format!("socket,id=s0,connect=127.0.0.1:{l}"),
                "-device".into(),
                format!("virtio-net-pci,netdev=s0,mac=52:54:00:12:34:{mac:02x}"),
                // The firmware's and iPXE's screen text on the serial console too.
                "-device".into(),
                "sga".into(),
                "-vga".into(),
                "std".into(),
            ]),
            (None, Lan::None) => a.extend(["-nic".into(), "none".into()]),
            (None, Lan::Tap { tap, mac, .. }) => a.extend([
                "-netdev".into(),
                format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
                "-device".into(),
                format!("virtio-net-pci,netdev=n0,mac=52:54:00:12:34:{mac:02x}"),
                "-device".into(),
                "sga".into(),
                "-vga".into(),
                "std".into(),
            ]),
            other => panic!("unsupported network {other:?}"),
        }
        let mut cmd = match spec.lan {
            Lan::Tap { ns, .. } => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                c
            }
            _ => Command::new("qemu-system-x86_64"),
        };
        let child = cmd
            .args(&a)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu-system-x86_64");
        if let Lan::Tap { ns, tap, .. } = spec.lan {
            let up = (0..100).any(|_| {
                let ok = Command::new("ip")
                    .args(["-n", ns, "link", "set", tap, "master", "br0", "up"])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    std::thread::sleep(Duration::from_millis(100));
                }
                ok
            });
            assert!(up, "the TAP device {tap} did not appear in {ns}");
        }
        let mut keys = None;
        if spec.keyboard {
            for _ in 0..100 {
                if let Ok(k) = std::os::unix::net::UnixStream::connect(&sock) {
                    // Drain what QEMU sends (the log file has it), so it never blocks.
                    let mut r = k.try_clone().unwrap();
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut r, &mut std::io::sink());
                    });
                    keys = Some(k);
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(keys.is_some(), "cannot connect to the serial socket");
        }
        Machine {
            child,
            log: log.to_path_buf(),
            keys,
        }
    }

    /// Types `line` and Enter on the serial console.
    pub fn type_line(&mut self, line: &str) {
        use std::io::Write;
        let k = self.keys.as_mut().expect("started with keyboard: true");
        k.write_all(format!("{line}\r").as_bytes())
            .expect("type on the console");
    }

    /// Waits for `prompt`, then types `line`.
    pub fn answer(&mut self, prompt: &str, line: &str) {
        self.wait_for(prompt, Duration::from_secs(240));
        std::thread::sleep(Duration::from_millis(300));
        self.type_line(line);
    }

    /// The serial console so far, without terminal control sequences (the firmware's
    /// screen text, copied to serial by sgabios, places every character with one).
    pub fn console(&self) -> String {
        plain(&String::from_utf8_lossy(
            &std::fs::read(&self.log).unwrap_or_default(),
        ))
    }

    /// Waits until the console shows `marker`; fails (with the console's tail) on timeout
    /// or when QEMU exits first.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let text = self.console();
            if text.contains(marker) {
                return text;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "QEMU exited ({st}) before {marker:?}; console tail:\n{}",
                    tail(&self.console(), 40)
                );
            }
            if Instant::now() > end {
                panic!(
                    "no {marker:?} within {} s; console tail:\n{}",
                    timeout.as_secs(),
                    tail(&text, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits for QEMU to exit by itself (a reboot under `-no-reboot`, or a power-off).
    pub fn wait_exit(&mut self, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.console();
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "QEMU still running after {} s; console tail:\n{}",
                    timeout.as_secs(),
                    tail(&self.console(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` without ANSI control sequences (ESC [ ... final byte) and carriage returns.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\x1b' if it.peek() == Some(&'[') => {
                it.next();
                for f in it.by_ref() {
                    if ('@'..='~').contains(&f) {
                        break;
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// An Ethernet segment for emulated servers: a network namespace with a bridge
/// (10.77.0.1/24) their TAP devices join and a DHCP server (busybox udhcpd) that gives
/// 52:54:00:12:34:61 the address 10.77.0.50 and others 10.77.0.100 on. Removed on drop.
pub struct Segment {
    pub ns: String,
    dhcpd: Child,
}

impl Segment {
    pub fn new(ns: &str, dir: &Path) -> Segment {
        let ip = |args: &[&str]| run("ip", args);
        // A namespace left by an interrupted run.
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", ns, "addr", "add", "10.77.0.1/24", "dev", "br0"]);
        ip(&["-n", ns, "link", "set", "br0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        let conf = dir.join("udhcpd.conf");
        std::fs::write(
            &conf,
            format!(
                "start 10.77.0.100\nend 10.77.0.150\ninterface br0\nlease_file {}\n\
                 static_lease 52:54:00:12:34:61 10.77.0.50\noption subnet 255.255.255.0\n\
                 option lease 3600\n",
                dir.join("udhcpd.leases").display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("udhcpd.leases"), b"").unwrap();
        let dhcpd = Command::new("ip")
            .args(["netns", "exec", ns, "busybox", "udhcpd", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox udhcpd");
        Segment {
            ns: ns.to_string(),
            dhcpd,
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = self.dhcpd.kill();
        let _ = self.dhcpd.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A FAT volume labelled STRATACFG holding `install.toml` (the config stick).
pub fn config_stick(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let img = dir.join(format!("{name}.img"));
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, toml).unwrap();
    let _ = std::fs::remove_file(&img);
    run(
        "mkfs.fat",
        &["-C", "-n", "STRATACFG", img.to_str().unwrap(), "2048"],
    );
    run(
        "mcopy",
        &[
            "-i",
            img.to_str().unwrap(),
            cfg.to_str().unwrap(),
            "::/install.toml",
        ],
    );
    img
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A sparse raw disk image of `gib` GiB.
pub fn blank_disk(path: &Path, gib: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(gib << 30).unwrap();
}
