//! `strata boot`: PID 1 of an installed node, after the init script has mounted the data
//! partition. It reads the first-boot file, names the host, brings up the management
//! network (DHCP by default, static from the config), creates the cluster or joins it on
//! the first start, then runs `strata serve` under supervision: restarted with back-off
//! when it exits, stopped cleanly on power-off or reboot. It reaps every orphan (PID 1's
//! duty) and prints the node's state on the console when it is ready.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::config::{InstallConfig, Mode, Network};
use super::firstboot;

/// The QUIC port nodes listen on.
const PORT: u16 = 7440;

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

fn say(msg: &str) {
    println!("strata boot: {msg}");
}

/// Never returns: an installed node's PID 1.
pub fn run() -> ! {
    for sig in [libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2, libc::SIGINT] {
        // SAFETY: the handler only stores into an atomic (async-signal-safe).
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    let root = Path::new(firstboot::DATA_MOUNT);
    let cfg = match firstboot::read(root) {
        Ok(c) => c,
        Err(e) => rescue(&format!("STRATA-BOOT-FAILED: {e}")),
    };
    if let Some(h) = &cfg.hostname {
        set_hostname(h);
    }
    let mut dhcp: Option<Child> = None;
    let (ifname, addr) = loop {
        match network_up(&cfg.network, &mut dhcp) {
            Ok(v) => break v,
            Err(e) => {
                say(&format!("network: {e}; trying again in 10 s"));
                sleep_or_signal(Duration::from_secs(10));
            }
        }
    };
    say(&format!("network: {ifname} has {addr}"));
    if cfg.hostname.is_none() {
        // Named after the management interface's MAC, so servers installed alike differ.
        let mac = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
            .unwrap_or_default()
            .trim()
            .replace(':', "");
        let h = format!("strata-{}", &mac[mac.len().saturating_sub(6)..]);
        set_hostname(&h);
        say(&format!("host name {h} (none configured)"));
    }
    let pxe = cfg.pxe.then(|| system_slot(&ifname)).flatten();
    let dir = root.join(firstboot::NODE_DIR);
    let _ = std::fs::create_dir_all(&dir);
    let listen = format!("0.0.0.0:{PORT}");
    let advertise = format!("{addr}:{PORT}");
    if !dir.join("node.toml").exists() {
        if let Mode::Create { cluster_name, .. } = &cfg.mode {
            let st = Command::new(exe())
                .arg("--data-dir")
                .arg(&dir)
                .args(["init", "--listen", &listen, "--advertise", &advertise])
                .args(["--cluster-name", cluster_name])
                .status();
            if !st.map(|s| s.success()).unwrap_or(false) {
                rescue("STRATA-BOOT-FAILED: creating the cluster failed (see above)");
            }
        }
    }
    supervise(&cfg, &dir, &listen, &advertise, &addr, dhcp, pxe)
}

/// Mounts the system slot read-only for the network install server; the directory with
/// its kernel and initramfs and the interface to serve on, or None (said why).
fn system_slot(ifname: &str) -> Option<(PathBuf, String)> {
    let mnt = Path::new("/run/strata/system");
    let _ = std::fs::create_dir_all(mnt);
    let dev = Command::new("/usr/libexec/strata/blkid")
        .args(["-l", "-t", "LABEL=STRATA-A", "-o", "device"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|d| !d.is_empty());
    let Some(dev) = dev else {
        say("network installs: no partition labelled STRATA-A; not serving them");
        return None;
    };
    let ok = Command::new("mount")
        .args(["-t", "ext4", "-o", "ro", &dev])
        .arg(mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        say(&format!(
            "network installs: cannot mount {dev}; not serving them"
        ));
        return None;
    }
    say(&format!("network installs (PXE) served on {ifname}"));
    Some((mnt.join("boot"), ifname.to_string()))
}

fn set_hostname(h: &str) {
    // SAFETY: a valid buffer and its length.
    if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } != 0 {
        say(&format!(
            "cannot set the host name {h}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

fn exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| "/usr/bin/strata".into())
}

fn serve(
    cfg: &InstallConfig,
    dir: &Path,
    listen: &str,
    advertise: &str,
    pxe: &Option<(PathBuf, String)>,
) -> std::io::Result<Child> {
    let mut c = Command::new(exe());
    c.arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", listen, "--advertise", advertise])
        .arg("--discovery");
    if let Some((files, ifname)) = pxe {
        c.arg("--pxe-dir")
            .arg(files)
            .args(["--pxe-interface", ifname]);
    }
    match &cfg.mode {
        Mode::Create {
            admin_password: Some(p),
            ..
        } => {
            c.env("STRATA_ADMIN_PASSWORD", p);
        }
        Mode::Join {
            addr,
            token,
            cluster_name,
        } => {
            // Only until the node has joined (serve ignores --join afterwards).
            c.args(["--join", addr.as_deref().unwrap_or("discover")]);
            if let Some(t) = token {
                c.env("STRATA_JOIN_TOKEN", t);
            }
            if let (None, Some(n)) = (addr, cluster_name) {
                c.args(["--join-cluster", n]);
            }
        }
        _ => {}
    }
    c.spawn()
}

fn supervise(
    cfg: &InstallConfig,
    dir: &Path,
    listen: &str,
    advertise: &str,
    addr: &IpAddr,
    mut dhcp: Option<Child>,
    pxe: Option<(PathBuf, String)>,
) -> ! {
    let mut backoff = 1u64;
    let mut child: Option<(Child, Instant)> = None;
    let mut announced = false;
    let mut next_try = Instant::now();
    loop {
        let sig = SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 {
            shutdown(child.map(|c| c.0), dhcp, sig);
        }
        if child.is_none() && Instant::now() >= next_try {
            match serve(cfg, dir, listen, advertise, &pxe) {
                Ok(c) => {
                    say(&format!("strata serve started (pid {})", c.id()));
                    child = Some((c, Instant::now()));
                }
                Err(e) => {
                    say(&format!("cannot start strata serve: {e}"));
                    next_try = Instant::now() + Duration::from_secs(backoff);
                    backoff = (backoff * 2).min(30);
                }
            }
        }
        // Reap every exited process (orphans included); note ours.
        loop {
            let mut status = 0;
            // SAFETY: a valid pointer to an int.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if let Some((c, started)) = &child {
                if c.id() as i32 == pid {
                    let ran = started.elapsed();
                    if ran > Duration::from_secs(60) {
                        backoff = 1;
                    }
                    say(&format!(
                        "strata serve exited ({}) after {} s; restarting in {backoff} s",
                        describe_status(status),
                        ran.as_secs()
                    ));
                    child = None;
                    announced = false;
                    next_try = Instant::now() + Duration::from_secs(backoff);
                    backoff = (backoff * 2).min(30);
                }
            }
            if dhcp.as_ref().is_some_and(|d| d.id() as i32 == pid) {
                say("the DHCP client exited; starting it again");
                dhcp = None;
                if let Network::Dhcp { .. } = cfg.network {
                    if let Ok(i) = current_interface(&cfg.network) {
                        dhcp = start_dhcp(&i).ok();
                    }
                }
            }
        }
        if !announced && child.is_some() {
            if let Some(text) = status_text(dir) {
                announced = true;
                if let Err(e) = firstboot::scrub(Path::new(firstboot::DATA_MOUNT)) {
                    say(&format!(
                        "cannot remove the admin password from the first-boot file: {e}"
                    ));
                }
                println!("STRATA-NODE-READY address={addr}");
                println!("{text}");
                println!(
                    "Web console and OpenStack API: https://{addr}:5000/  (user admin; password {})",
                    if dir.join("admin-password").exists() {
                        format!("in {}/admin-password", dir.display())
                    } else {
                        "as chosen at install, or on the cluster's first node".to_string()
                    }
                );
            }
        }
        std::thread::sleep(Duration::from_millis(if announced { 500 } else { 1000 }));
    }
}

/// `strata status` of the local daemon, once it answers.
fn status_text(dir: &Path) -> Option<String> {
    let out = Command::new(exe())
        .arg("--data-dir")
        .arg(dir)
        .arg("status")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status}")
    }
}

fn shutdown(child: Option<Child>, dhcp: Option<Child>, sig: i32) -> ! {
    let poweroff = sig == libc::SIGUSR2 || sig == libc::SIGUSR1;
    say(&format!(
        "{}: stopping strata serve",
        if poweroff { "power-off" } else { "reboot" }
    ));
    if let Some(c) = child {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let mut st = 0;
            // SAFETY: valid pointer.
            let pid = unsafe { libc::waitpid(c.id() as i32, &mut st, libc::WNOHANG) };
            if pid != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if let Some(mut d) = dhcp {
        let _ = d.kill();
    }
    // SAFETY: sync and reboot(2) with a valid command; PID 1 may call them.
    unsafe {
        libc::sync();
        let mount = std::ffi::CString::new(firstboot::DATA_MOUNT).unwrap_or_default();
        libc::umount(mount.as_ptr());
        libc::reboot(if poweroff {
            libc::LINUX_REBOOT_CMD_POWER_OFF
        } else {
            libc::LINUX_REBOOT_CMD_RESTART
        });
    }
    rescue("reboot(2) failed")
}

fn sleep_or_signal(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && SIGNAL.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let sig = SIGNAL.swap(0, Ordering::SeqCst);
    if sig != 0 {
        shutdown(None, None, sig);
    }
}

/// Prints `msg` and gives the console a shell, forever (PID 1 must not exit).
fn rescue(msg: &str) -> ! {
    println!("{msg}");
    println!("A shell follows on the console; 'reboot -f' restarts.");
    loop {
        let _ = Command::new("/bin/sh").status();
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The interfaces that could carry management traffic: physical (has a device), not
/// loopback, in name order.
fn candidates(sys: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(sys.join("class/net"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().join("device").exists())
                .map(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    let mac = std::fs::read_to_string(e.path().join("address"))
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    (n, mac)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The interface the config names (a name glob or a MAC address), or the first with link.
pub fn pick_interface(
    sys: &Path,
    want: Option<&str>,
    carrier: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let all = candidates(sys);
    if all.is_empty() {
        return Err("no network interface found (is the NIC's driver in the image?)".into());
    }
    let list = || {
        all.iter()
            .map(|(n, m)| format!("{n} ({m})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match want {
        Some(w) => all
            .iter()
            .find(|(n, m)| {
                m.eq_ignore_ascii_case(w)
                    || super::disks::glob(w, n)
                    || super::disks::glob(&w.to_lowercase(), m)
            })
            .map(|(n, _)| n.clone())
            .ok_or_else(|| format!("no interface matches {w:?}; there are: {}", list())),
        None => all
            .iter()
            .find(|(n, _)| carrier(n))
            .map(|(n, _)| n.clone())
            .ok_or_else(|| format!("no interface has link; there are: {}", list())),
    }
}

fn current_interface(net: &Network) -> Result<String, String> {
    let want = match net {
        Network::Dhcp { interface } | Network::Static { interface, .. } => interface.as_deref(),
    };
    let sys = Path::new("/sys");
    for (n, _) in candidates(sys) {
        let _ = ip(&["link", "set", &n, "up"]);
    }
    // Links need a moment after coming up.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let carrier = |n: &str| {
            std::fs::read_to_string(sys.join("class/net").join(n).join("carrier"))
                .map(|s| s.trim() == "1")
                .unwrap_or(false)
        };
        match pick_interface(sys, want, carrier) {
            Ok(n) => return Ok(n),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn start_dhcp(ifname: &str) -> std::io::Result<Child> {
    Command::new("/bin/busybox")
        .args([
            "udhcpc",
            "-f",
            "-i",
            ifname,
            "-s",
            "/etc/udhcpc.script",
            "-t",
            "20",
            "-T",
            "3",
            "-A",
            "10",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
}

fn address_of(ifname: &str) -> Option<IpAddr> {
    let out = ip(&["-4", "-o", "addr", "show", "dev", ifname]).ok()?;
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
}

fn network_up(net: &Network, dhcp: &mut Option<Child>) -> Result<(String, IpAddr), String> {
    let ifname = current_interface(net)?;
    match net {
        Network::Dhcp { .. } => {
            if dhcp.is_none() {
                *dhcp = Some(start_dhcp(&ifname).map_err(|e| format!("starting udhcpc: {e}"))?);
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Some(a) = address_of(&ifname) {
                    return Ok((ifname, a));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(format!("no DHCP lease on {ifname} within 60 s"))
        }
        Network::Static {
            address,
            gateway,
            dns,
            ..
        } => {
            let _ = ip(&["addr", "flush", "dev", &ifname]);
            // With its broadcast address: discovery probes go to it.
            ip(&[
                "addr",
                "add",
                &address.to_string(),
                "broadcast",
                "+",
                "dev",
                &ifname,
            ])?;
            if let Some(g) = gateway {
                ip(&[
                    "route",
                    "replace",
                    "default",
                    "via",
                    &g.to_string(),
                    "dev",
                    &ifname,
                ])?;
            }
            let resolv: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
            let _ = std::fs::write("/etc/resolv.conf", resolv);
            Ok((ifname, address.addr()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sys(ifaces: &[(&str, &str, bool)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (n, mac, dev) in ifaces {
            let p = d.path().join("class/net").join(n);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("address"), format!("{mac}\n")).unwrap();
            if *dev {
                std::fs::create_dir_all(p.join("device")).unwrap();
            }
        }
        d
    }

    #[test]
    fn the_management_interface_is_named_by_mac_or_glob_or_found_by_link() {
        let sys = fake_sys(&[
            ("lo", "00:00:00:00:00:00", false),
            ("eno1", "52:54:00:aa:00:01", true),
            ("eno2", "52:54:00:aa:00:02", true),
            ("br0", "52:54:00:aa:00:09", false),
        ]);
        let none = |_: &str| false;
        assert_eq!(
            pick_interface(sys.path(), Some("52:54:00:AA:00:02"), none).unwrap(),
            "eno2"
        );
        assert_eq!(
            pick_interface(sys.path(), Some("eno*"), none).unwrap(),
            "eno1"
        );
        assert_eq!(
            pick_interface(sys.path(), None, |n| n == "eno2").unwrap(),
            "eno2"
        );
        let e = pick_interface(sys.path(), None, none).unwrap_err();
        assert!(
            e.contains("no interface has link") && e.contains("eno1 (52:54:00:aa:00:01)"),
            "{e}"
        );
        let e = pick_interface(sys.path(), Some("ens*"), none).unwrap_err();
        assert!(e.contains("no interface matches"), "{e}");
        let empty = fake_sys(&[("lo", "00:00:00:00:00:00", false)]);
        let e = pick_interface(empty.path(), None, none).unwrap_err();
        assert!(e.contains("no network interface"), "{e}");
    }
}
