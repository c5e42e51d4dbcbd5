//! The installer end to end, in emulated servers (QEMU TCG, `-cpu max`): `installer/build.sh`
//! builds the hybrid image with this build's `strata`; it is attached as a USB stick to a
//! server with a blank disk, next to a second stick labelled STRATACFG with the install
//! config; the unattended install runs and the server restarts; booted from its disk (the
//! stick left in: its menu boots the installed system, not a reinstall) the node forms its
//! cluster and answers `strata status` on its console; through its OpenStack API
//! (forwarded to a loopback port) Strata's own VMM boots the test guest under the emulated
//! server's real kvm-amd, and the guest's marker is read back from its console log. The
//! same on UEFI with Secure Boot (NVMe disk chosen by serial, a UEFI boot entry written;
//! Debian's signed shim, GRUB and kernel; an unsigned image is refused); UEFI without
//! Secure Boot boots the same stick in one of the bad cases (the same shim and GRUB). A
//! second server, installed to join without an address or a token, boots on the same
//! emulated Ethernet segment (QEMU's socket network over loopback), finds the cluster by
//! broadcast and shows a join code; the test accepts that code in the first node's web
//! console and the cluster shows two nodes alive. A third server network-boots from the
//! first node (proxy DHCP to its NIC's iPXE). Bad
//! cases leave the disk as it was: no disk, a disk too small, a disk with partitions, a
//! malformed join token.
//!
//! Needs root, qemu-system-x86, ovmf, the packages `make usb` uses and the test guest
//! (`make images-guest`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[path = "common/machine.rs"]
#[allow(dead_code)]
mod machine;

use machine::{blank_disk, config_stick, new_vars, Firmware, Lan, Machine, Segment, Spec};

const INSTALL: Duration = Duration::from_secs(420);
const BOOT: Duration = Duration::from_secs(480);
const PASSWORD: &str = "installer-test-pass";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn work() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("strata-installer-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// Builds an image (once per flavour) and reports its size and build time.
fn image(unsigned: bool) -> PathBuf {
    static SIGNED: OnceLock<PathBuf> = OnceLock::new();
    static UNSIGNED: OnceLock<PathBuf> = OnceLock::new();
    let cell = if unsigned { &UNSIGNED } else { &SIGNED };
    cell.get_or_init(|| {
        let out = work().join(if unsigned {
            "unsigned.iso"
        } else {
            "strata.iso"
        });
        let t = Instant::now();
        let mut cmd = std::process::Command::new(root().join("installer/build.sh"));
        cmd.arg("--bin")
            .arg(env!("CARGO_BIN_EXE_strata"))
            .arg("--out")
            .arg(&out);
        if unsigned {
            cmd.args(["--unsigned-efi", "--drivers", "minimal"]);
        }
        let o = cmd.output().expect("run installer/build.sh");
        assert!(
            o.status.success(),
            "installer/build.sh failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!(
            "STRATA-INSTALLER-IMAGE {} bytes={} build_s={:.0}",
            out.display(),
            std::fs::metadata(&out).unwrap().len(),
            t.elapsed().as_secs_f64()
        );
        out
    })
    .clone()
}

fn create_config(extra: &str) -> String {
    format!(
        "schema = 1\nmode = \"create\"\ncluster_name = \"lab\"\nadmin_password = \"{PASSWORD}\"\nhostname = \"node1\"\n{extra}"
    )
}

/// Installs with `spec`'s machine, then checks what the console said.
fn install(spec: &Spec, log: &Path) -> (String, f64) {
    let t = Instant::now();
    let mut m = Machine::start(spec, log);
    let console = m.wait_exit(INSTALL);
    assert!(
        console.contains("STRATA-INSTALL-OK"),
        "the install did not finish:\n{}",
        machine::tail(&console, 40)
    );
    (console, t.elapsed().as_secs_f64())
}

/// Boots an installed node and waits until its console shows it ready (`strata status`).
fn boot_ready(spec: &Spec, log: &Path) -> (Machine, String, f64) {
    let t = Instant::now();
    let mut m = Machine::start(spec, log);
    let console = m.wait_for("Web console and OpenStack API", BOOT);
    let secs = t.elapsed().as_secs_f64();
    assert!(
        !console.contains("STRATA-INSTALL-START"),
        "the stick reinstalled"
    );
    for (want, what) in [
        ("STRATA-INIT version=", "no init"),
        ("mode=run", "not the installed system"),
        ("STRATA-NODE-READY", "the node is not ready"),
        ("cluster:  lab", "not the configured cluster"),
        ("nodes:    1 of 1 alive", "the node is not alive"),
        (" node1 ", "host name not set"),
    ] {
        assert!(
            console.contains(want),
            "{what} ({want:?} missing):\n{}",
            machine::tail(&console, 30)
        );
    }
    (m, console, secs)
}

/// One call to the node's OpenStack API over the forwarded loopback port.
fn api(
    port: u16,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String, String) {
    let url = format!("https://127.0.0.1:{port}{path}");
    let mut a: Vec<String> = vec![
        "-sk".into(),
        "-D".into(),
        "-".into(),
        "-X".into(),
        method.into(),
        url,
        "--max-time".into(),
        "120".into(),
    ];
    if let Some(t) = token {
        a.extend(["-H".into(), format!("X-Auth-Token: {t}")]);
    }
    match body {
        Some(b) if b.starts_with('@') => a.extend([
            "-H".into(),
            "Content-Type: application/octet-stream".into(),
            "--data-binary".into(),
            b.into(),
        ]),
        Some(b) => a.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "-d".into(),
            b.into(),
        ]),
        None => {}
    }
    let o = std::process::Command::new("curl")
        .args(&a)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // A 100 Continue comes first on uploads.
    let (head, body) = if head.starts_with("HTTP/1.1 100") || head.starts_with("HTTP/2 100") {
        body.split_once("\r\n\r\n").unwrap_or((body, ""))
    } else {
        (head, body)
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Boots the test guest through the node's API with Strata's own VMM (KVM) and reads
/// its marker back from the console log.
fn vm_through_the_api(port: u16) {
    let auth = format!(
        r#"{{"auth":{{"identity":{{"methods":["password"],"password":{{"user":{{"name":"admin","domain":{{"id":"default"}},"password":"{PASSWORD}"}}}}}},"scope":{{"project":{{"name":"admin","domain":{{"id":"default"}}}}}}}}}}"#
    );
    let (st, head, body) = api(port, None, "POST", "/identity/v3/auth/tokens", Some(&auth));
    assert_eq!(
        st, 201,
        "the install config's admin password does not sign in: {body}"
    );
    let token = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("x-subject-token: ")
                .or_else(|| l.strip_prefix("X-Subject-Token: "))
        })
        .expect("token header")
        .trim()
        .to_string();
    let t = Some(token.as_str());
    let guest = root().join("images/out/guest");
    let upload = |name: &str, fmt: &str, file: &Path, extra: &str| -> String {
        let (st, _, b) = api(
            port,
            t,
            "POST",
            "/image/v2/images",
            Some(&format!(
                r#"{{"name":"{name}","disk_format":"{fmt}","container_format":"{fmt}"{extra}}}"#
            )),
        );
        assert_eq!(st, 201, "image create: {b}");
        let id = json(&b)["id"].as_str().unwrap().to_string();
        let (st, _, b) = api(
            port,
            t,
            "PUT",
            &format!("/image/v2/images/{id}/file"),
            Some(&format!("@{}", file.display())),
        );
        assert_eq!(st, 204, "image upload: {b}");
        id
    };
    let kid = upload("guest-kernel", "aki", &guest.join("vmlinuz"), "");
    let rid = upload("guest-initrd", "ari", &guest.join("initramfs.cpio.gz"), "");
    let disk = work().join("guest-disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let img = upload(
        "guest",
        "ami",
        &disk,
        &format!(r#","kernel_id":"{kid}","ramdisk_id":"{rid}","os_command_line":"console=ttyS0""#),
    );
    let (st, _, b) = api(port, t, "GET", "/compute/v2.1/flavors", None);
    assert_eq!(st, 200, "{b}");
    let flavors = json(&b);
    let flavor = flavors["flavors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "m1.tiny")
        .map(|f| f["id"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no m1.tiny: {flavors}"));
    let (st, _, b) = api(
        port,
        t,
        "POST",
        "/compute/v2.1/servers",
        Some(&format!(
            r#"{{"server":{{"name":"g1","imageRef":"{img}","flavorRef":"{flavor}","networks":"none"}}}}"#
        )),
    );
    assert_eq!(st, 202, "server create: {b}");
    let sid = json(&b)["server"]["id"].as_str().unwrap().to_string();
    let end = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, _, b) = api(
            port,
            t,
            "GET",
            &format!("/compute/v2.1/servers/{sid}"),
            None,
        );
        let s = json(&b);
        assert_ne!(s["server"]["status"], "ERROR", "the server failed: {s}");
        let (_, _, out) = api(
            port,
            t,
            "POST",
            &format!("/compute/v2.1/servers/{sid}/action"),
            Some(r#"{"os-getConsoleOutput":{}}"#),
        );
        let last = out;
        if s["server"]["status"] == "ACTIVE" && last.contains("STRATA-GUEST-USERSPACE") {
            break;
        }
        assert!(
            Instant::now() < end,
            "no guest marker within 300 s: server {s}\nconsole {last}"
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[test]
fn bios_install_then_boot_from_disk_with_the_stick_left_in_and_run_a_vm() {
    let iso = image(false);
    let d = work().join("bios");
    std::fs::create_dir_all(&d).unwrap();
    let disk = d.join("disk.raw");
    blank_disk(&disk, 20);
    // No config anywhere: the installer asks on the console, and a person answers.
    let spec = Spec {
        firmware: Firmware::Bios,
        vars: None,
        sticks: vec![&iso],
        disks: vec![(&disk, "virtio", "STRATA-VIRTIO-1")],
        api_port: None,
        mem_mb: 2048,
        keyboard: true,
        lan: Lan::None,
    };
    let t = Instant::now();
    let mut m = Machine::start(&spec, &d.join("install.log"));
    m.answer("Install on disk number", "1");
    m.answer("Create a new cluster or join one", "create");
    m.answer("Cluster name", "lab");
    m.answer("Password for the user admin", PASSWORD);
    m.answer("The same password again", PASSWORD);
    m.answer("Host name", "node1");
    m.answer("Network: dhcp or static", "");
    m.answer("Serve network installs (PXE)", "yes");
    m.answer("Type install to erase vda and install", "install");
    let console = m.wait_exit(INSTALL);
    let install_s = t.elapsed().as_secs_f64();
    drop(m);
    assert!(
        console.contains("STRATA-INSTALL-OK"),
        "{}",
        machine::tail(&console, 40)
    );
    assert!(console.contains("No install config was found"), "{console}");
    assert!(
        !console.contains(PASSWORD),
        "the password was echoed on the console"
    );
    assert!(console.contains("[the installer medium]"), "{console}");
    assert!(!console.contains("UEFI boot entry"), "BIOS has no NVRAM");
    let spec = Spec {
        keyboard: false,
        ..spec
    };
    // Meanwhile a second server installs, configured to join without an address or a
    // token (it finds the cluster on the network and shows a join code).
    let second = {
        let (iso, d) = (iso.clone(), d.clone());
        std::thread::spawn(move || {
            let disk = d.join("disk2.raw");
            blank_disk(&disk, 20);
            let cfg = config_stick(
                &d,
                "join",
                "schema = 1\nmode = \"join\"\nhostname = \"node2\"\n",
            );
            let spec = Spec {
                firmware: Firmware::Bios,
                vars: None,
                sticks: vec![&iso, &cfg],
                disks: vec![(&disk, "virtio", "STRATA-VIRTIO-2")],
                api_port: None,
                mem_mb: 2048,
                keyboard: false,
                lan: Lan::None,
            };
            let (console, _) = install(&spec, &d.join("install2.log"));
            assert!(
                console.contains("with a join code an administrator accepts"),
                "{console}"
            );
            disk
        })
    };
    // Stick left in, first in the boot order; the node's API on a loopback port, and a
    // link for the second server.
    let port = 25000 + (std::process::id() % 1000) as u16;
    let lan = 27000 + (std::process::id() % 1000) as u16;
    let spec = Spec {
        sticks: vec![&iso],
        api_port: Some(port),
        mem_mb: 3072,
        lan: Lan::Listen(lan),
        ..spec
    };
    let (m, console, ready_s) = boot_ready(&spec, &d.join("boot.log"));
    assert!(
        console.contains("STRATA-INIT kvm ok"),
        "no /dev/kvm in the emulated server"
    );
    assert!(
        console
            .lines()
            .any(|l| l.contains(" node1 ") && l.contains(" kvm ")),
        "the node does not use KVM:\n{}",
        machine::tail(&console, 20)
    );
    eprintln!("STRATA-INSTALLER-TIMES bios install_s={install_s:.0} boot_to_ready_s={ready_s:.0}");
    vm_through_the_api(port);
    // The guest ran under KVM, with Strata's own VMM: the node's log says which driver.
    let console = m.console();
    assert!(
        console
            .lines()
            .any(|l| l.contains("VM started") && l.contains("\"kvm\"")),
        "the VM did not start with the KVM driver:\n{}",
        machine::tail(&console, 20)
    );

    // The second server boots from its disk on the same segment, finds the cluster, and
    // shows a join code; an administrator accepts it in the first node's web console.
    let disk2 = second.join().expect("the second install failed");
    let spec2 = Spec {
        firmware: Firmware::Bios,
        vars: None,
        sticks: vec![],
        disks: vec![(&disk2, "virtio", "STRATA-VIRTIO-2")],
        api_port: None,
        mem_mb: 2048,
        keyboard: false,
        lan: Lan::Connect(lan, 0x57),
    };
    let t = Instant::now();
    let mut m2 = Machine::start(&spec2, &d.join("boot2.log"));
    let console2 = m2.wait_for("STRATA-JOIN-CODE ", BOOT);
    assert!(
        console2.contains("found cluster lab at 10.0.2.15:7440"),
        "{}",
        machine::tail(&console2, 30)
    );
    let code = console2
        .lines()
        .find_map(|l| l.trim().strip_prefix("STRATA-JOIN-CODE "))
        .unwrap()
        .trim()
        .to_string();
    let web = WebConsole::sign_in(port);
    let page = web.get("/nodes");
    assert!(
        page.contains(&code) && page.contains("node2"),
        "the web console does not list node2 with code {code}"
    );
    let accept = page
        .split("action=\"/nodes/requests/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("an Accept button")
        .to_string();
    assert!(accept.ends_with("/accept"), "{accept}");
    let r = web.post(&format!("/nodes/requests/{accept}"));
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    let console2 = m2.wait_for("Web console and OpenStack API", BOOT);
    let join_s = t.elapsed().as_secs_f64();
    assert!(console2.contains("STRATA-NODE-READY"), "{console2}");
    assert!(!console2.contains("STRATA-BOOT-FAILED"), "{console2}");
    // The cluster shows two nodes, both alive.
    let page = wait_until(Duration::from_secs(120), || {
        let p = web.get("/nodes");
        let alive = p.matches(">alive<").count();
        (p.contains("node2") && alive == 2).then_some(p)
    })
    .unwrap_or_else(|| panic!("two alive nodes not shown:\n{}", web.get("/nodes")));
    // (The code may still be in the flash message that confirmed the acceptance.)
    let requests = page
        .split("id=\"join-requests\"")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("the join requests table");
    assert!(
        !requests.contains(&code),
        "the accepted request is still listed"
    );
    eprintln!("STRATA-INSTALLER-TIMES second-node boot_to_joined_s={join_s:.0}");
    // A third server with a blank disk network-boots: its NIC's iPXE takes the node's
    // proxy DHCP offer and is told the node's boot script. (The rest of a network install
    // is not run here: on this emulated segment the user-mode network that hands out the
    // addresses answers TCP between the servers with resets.)
    let disk3 = d.join("disk3.raw");
    blank_disk(&disk3, 20);
    let spec3 = Spec {
        disks: vec![(&disk3, "virtio", "STRATA-VIRTIO-3")],
        lan: Lan::Connect(lan + 1, 0x58),
        ..spec2
    };
    let mut m3 = Machine::start(&spec3, &d.join("pxe3.log"));
    m3.wait_for("Filename: http://10.0.2.15:7447/pxe/boot.ipxe", BOOT);
    drop(m3);
    let node1 = m.console();
    assert!(
        node1
            .lines()
            .any(|l| l.contains("network boot client answered")),
        "{}",
        machine::tail(&node1, 20)
    );
    drop(m2);
    drop(m);
    let _ = std::fs::remove_dir_all(&d);
}

fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A signed-in web console session on the node's forwarded port (curl, cookie jar).
struct WebConsole {
    port: u16,
    jar: PathBuf,
    csrf: String,
}

impl WebConsole {
    fn curl(&self, args: &[&str]) -> String {
        let o = std::process::Command::new("curl")
            .args(["-sk", "--max-time", "60", "-b"])
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar)
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn sign_in(port: u16) -> WebConsole {
        let mut w = WebConsole {
            port,
            jar: work().join(format!("cookies-{port}")),
            csrf: String::new(),
        };
        w.curl(&[
            "--data-urlencode",
            "username=admin",
            "--data-urlencode",
            &format!("password={PASSWORD}"),
            &w.url("/login"),
        ]);
        let page = w.get("/nodes");
        w.csrf = page
            .split("data-csrf=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("not signed in: {page}"))
            .to_string();
        w
    }

    fn get(&self, path: &str) -> String {
        self.curl(&[&self.url(path)])
    }

    fn post(&self, path: &str) -> String {
        self.curl(&[
            "-i",
            "--data-urlencode",
            &format!("csrf={}", self.csrf),
            &self.url(path),
        ])
    }
}

#[test]
fn a_node_installs_a_blank_server_over_the_network() {
    let iso = image(false);
    let d = work().join("pxe");
    std::fs::create_dir_all(&d).unwrap();
    // An Ethernet segment with its own DHCP server, as in a data center.
    let seg = Segment::new(&format!("stpxe{}", std::process::id()), &d);
    let disk1 = d.join("disk1.raw");
    blank_disk(&disk1, 20);
    let cfg = config_stick(&d, "cfg", &create_config("pxe = true\n"));
    let spec = Spec {
        firmware: Firmware::Bios,
        vars: None,
        sticks: vec![&iso, &cfg],
        disks: vec![(&disk1, "virtio", "STRATA-VIRTIO-1")],
        api_port: None,
        mem_mb: 2048,
        keyboard: false,
        lan: Lan::None,
    };
    install(&spec, &d.join("install1.log"));
    let spec = Spec {
        sticks: vec![],
        mem_mb: 3072,
        lan: Lan::Tap {
            ns: &seg.ns,
            tap: "t1",
            mac: 0x61,
        },
        ..spec
    };
    let (m1, console, _) = boot_ready(&spec, &d.join("boot1.log"));
    assert!(
        console.contains("network installs (PXE) served on eth0"),
        "{}",
        machine::tail(&console, 30)
    );
    // A server with a blank disk and no stick: its NIC's iPXE gets an address from the
    // segment's DHCP server and the boot file from the node's proxy DHCP, loads the
    // installer over HTTP from the node, and installs with the node's config.
    let disk2 = d.join("disk2.raw");
    blank_disk(&disk2, 20);
    let spec2 = Spec {
        disks: vec![(&disk2, "virtio", "STRATA-VIRTIO-2")],
        mem_mb: 2048,
        lan: Lan::Tap {
            ns: &seg.ns,
            tap: "t2",
            mac: 0x62,
        },
        ..spec
    };
    let t = Instant::now();
    let mut m2 = Machine::start(&spec2, &d.join("install2.log"));
    let console2 = m2.wait_exit(INSTALL + INSTALL);
    let secs = t.elapsed().as_secs_f64();
    for (want, what) in [
        (
            "Filename: http://10.77.0.50:7447/pxe/boot.ipxe",
            "iPXE was not told the node's boot script",
        ),
        (
            "network install from http://10.77.0.50:7447/pxe",
            "the installer did not load its files from the node",
        ),
        (
            "join the cluster at 10.77.0.50:7440 with a join code",
            "not the node's install config",
        ),
        ("STRATA-INSTALL-OK", "the network install did not finish"),
    ] {
        assert!(
            console2.contains(want),
            "{what} ({want:?} missing):\n{}",
            machine::tail(&console2, 40)
        );
    }
    assert!(
        !head_and_tail(&disk2).iter().all(|x| *x == 0),
        "nothing written"
    );
    eprintln!("STRATA-INSTALLER-TIMES pxe power_on_to_installed_s={secs:.0}");
    drop(m2);
    drop(m1);
    drop(seg);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn uefi_secure_boot_installs_on_the_disk_named_by_serial_and_boots_from_it() {
    let iso = image(false);
    // Plain UEFI boots the same shim and GRUB from the stick: `bad_cases_...` boots one.
    {
        let fw = Firmware::SecureBoot;
        let d = work().join(format!("{fw:?}"));
        std::fs::create_dir_all(&d).unwrap();
        let vars = d.join("vars.fd");
        new_vars(fw, &vars);
        let (a, b) = (d.join("a.raw"), d.join("b.raw"));
        blank_disk(&a, 20);
        blank_disk(&b, 20);
        let cfg = config_stick(
            &d,
            "cfg",
            &create_config("[disk]\nserial = \"STRATA-NVME-B\"\n"),
        );
        let spec = Spec {
            firmware: fw,
            vars: Some(&vars),
            sticks: vec![&iso, &cfg],
            disks: vec![(&a, "nvme", "STRATA-NVME-A"), (&b, "nvme", "STRATA-NVME-B")],
            api_port: None,
            mem_mb: 2048,
            keyboard: false,
            lan: Lan::None,
        };
        let (console, install_s) = install(&spec, &d.join("install.log"));
        assert!(
            console.contains("install on nvme1n1") || console.contains("serial STRATA-NVME-B"),
            "{console}"
        );
        assert!(
            console.contains("UEFI boot entry \"Strata\" written"),
            "no UEFI boot entry:\n{}",
            machine::tail(&console, 30)
        );
        if fw == Firmware::SecureBoot {
            assert!(
                console.contains("Secure boot enabled"),
                "Secure Boot was off:\n{}",
                machine::tail(&console, 60)
            );
        }
        // Only the named disk was written.
        assert!(
            head_and_tail(&a).iter().all(|x| *x == 0),
            "the other disk was written"
        );
        // The disk alone, with the NVRAM the install wrote.
        let spec = Spec {
            sticks: vec![],
            api_port: Some(26000 + (std::process::id() % 1000) as u16),
            ..spec
        };
        let (m, console, ready_s) = boot_ready(&spec, &d.join("boot.log"));
        if fw == Firmware::SecureBoot {
            assert!(
                console.contains("Secure boot enabled"),
                "{}",
                machine::tail(&console, 60)
            );
        }
        // The firmware followed the boot entry the installer wrote.
        assert!(
            console.contains("BdsDxe: starting Boot0") && console.contains("\"Strata\""),
            "the UEFI entry \"Strata\" was not used:\n{}",
            machine::tail(&console, 60)
        );
        eprintln!(
            "STRATA-INSTALLER-TIMES {fw:?} install_s={install_s:.0} boot_to_ready_s={ready_s:.0}"
        );
        drop(m);
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn secure_boot_refuses_an_unsigned_image() {
    let iso = image(true);
    let d = work().join("unsigned");
    std::fs::create_dir_all(&d).unwrap();
    let vars = d.join("vars.fd");
    new_vars(Firmware::SecureBoot, &vars);
    let disk = d.join("disk.raw");
    blank_disk(&disk, 20);
    let spec = Spec {
        firmware: Firmware::SecureBoot,
        vars: Some(&vars),
        sticks: vec![&iso],
        disks: vec![(&disk, "nvme", "STRATA-NVME-A")],
        api_port: None,
        mem_mb: 2048,
        keyboard: false,
        lan: Lan::None,
    };
    let mut m = Machine::start(&spec, &d.join("boot.log"));
    let console = m.wait_for("Access Denied", Duration::from_secs(240));
    assert!(
        !console.contains("STRATA-INIT"),
        "an unsigned image booted under Secure Boot"
    );
    // Without Secure Boot the same image boots (the refusal is the signature's).
    drop(m);
    new_vars(Firmware::Uefi, &vars);
    let spec = Spec {
        firmware: Firmware::Uefi,
        ..spec
    };
    let mut m = Machine::start(&spec, &d.join("boot-nosb.log"));
    m.wait_for("STRATA-INIT version=", Duration::from_secs(300));
    drop(m);
    let _ = std::fs::remove_dir_all(&d);
}

/// Boots the installer with `disks` and `cfg`; it must refuse with `msg` and write nothing.
fn refused(fw: Firmware, name: &str, disks: &[(PathBuf, &str)], cfg: &str, msg: &str) {
    let iso = image(false);
    let d = work().join(name);
    std::fs::create_dir_all(&d).unwrap();
    let vars = d.join("vars.fd");
    if fw != Firmware::Bios {
        new_vars(fw, &vars);
    }
    let stick = config_stick(&d, "cfg", cfg);
    let before: Vec<Vec<u8>> = disks.iter().map(|(p, _)| head_and_tail(p)).collect();
    let serials: Vec<String> = (0..disks.len())
        .map(|i| format!("STRATA-BAD-{i}"))
        .collect();
    let spec = Spec {
        firmware: fw,
        vars: (fw != Firmware::Bios).then_some(vars.as_path()),
        sticks: vec![&iso, &stick],
        disks: disks
            .iter()
            .zip(&serials)
            .map(|((p, k), s)| (p.as_path(), *k, s.as_str()))
            .collect(),
        api_port: None,
        mem_mb: 2048,
        keyboard: false,
        lan: Lan::None,
    };
    let mut m = Machine::start(&spec, &d.join("install.log"));
    let console = m.wait_for("STRATA-INSTALL-FAILED", INSTALL);
    if fw == Firmware::Uefi {
        assert!(
            console.contains("BdsDxe") && !console.contains("Secure boot enabled"),
            "{name}: not booted by UEFI firmware without Secure Boot:\n{}",
            machine::tail(&console, 30)
        );
    }
    assert!(
        console.contains(msg),
        "{name}: expected {msg:?}:\n{}",
        machine::tail(&console, 30)
    );
    assert!(
        !console.contains("writing the partition table"),
        "{name}: it started writing"
    );
    drop(m);
    for ((p, _), b) in disks.iter().zip(before) {
        assert!(head_and_tail(p) == b, "{name}: {} changed", p.display());
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// The first 4 MiB and the last MiB of a disk image (both GPT copies).
fn head_and_tail(p: &Path) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(p).unwrap();
    let len = f.metadata().unwrap().len();
    let mut a = vec![0u8; 4 << 20];
    f.read_exact(&mut a).unwrap();
    let mut b = vec![0u8; 1 << 20];
    f.seek(SeekFrom::Start(len - (1 << 20))).unwrap();
    f.read_exact(&mut b).unwrap();
    a.extend(b);
    a
}

#[test]
fn bad_cases_are_refused_on_the_console_and_nothing_is_written() {
    let d = work().join("bad");
    std::fs::create_dir_all(&d).unwrap();
    image(false);
    let small = d.join("small.raw");
    blank_disk(&small, 8);
    let used = d.join("used.raw");
    blank_disk(&used, 20);
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'label: gpt\\nsize=100MiB, type=L\\n' | sfdisk -q {}",
            used.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let blank = d.join("blank.raw");
    blank_disk(&blank, 20);
    let create = create_config("");
    let bad_token =
        "schema = 1\nmode = \"join\"\njoin = \"10.0.2.2:7440\"\ntoken = \"SJ1.not-a-token\"\n";
    // Four emulated servers at once (each is one emulated CPU; the machine has two cores).
    std::thread::scope(|sc| {
        let runs = [
            (
                Firmware::Uefi,
                "nodisk",
                vec![],
                create.as_str(),
                "no disk to install on",
            ),
            (
                Firmware::Bios,
                "small",
                vec![(small, "virtio")],
                create.as_str(),
                "is too small",
            ),
            (
                Firmware::Bios,
                "used",
                vec![(used, "virtio")],
                create.as_str(),
                "holds partitions",
            ),
            (
                Firmware::Bios,
                "badtoken",
                vec![(blank, "virtio")],
                bad_token,
                "malformed join token",
            ),
        ];
        let handles: Vec<_> = runs
            .into_iter()
            .map(|(fw, name, disks, cfg, msg)| {
                sc.spawn(move || refused(fw, name, &disks, cfg, msg))
            })
            .collect();
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
    let _ = std::fs::remove_dir_all(&d);
}
