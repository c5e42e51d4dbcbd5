//! strata-tiny (`make images-tiny`), a cloud image with its own bootloader, as a user
//! brings one: uploaded as qcow2 (stored as its raw disk, downloaded as sent), booted
//! through the firmware with a config drive, reached with OpenSSH from outside the cloud
//! through a floating IP with the key pair's key; a volume and a port on a second network
//! hot-plugged and unplugged, seen from inside the guest over SSH.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::common::{json, stderr, vmnic::VmNic, wait_for, Cluster, Os};

pub fn image() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/out/tiny/strata-tiny.qcow2");
    assert!(p.exists(), "run `make images-tiny` first");
    p
}

/// The command line of VM `id`'s QEMU, on whichever node runs it.
fn qemu_cmdline(c: &Cluster, id: &str) -> String {
    let cmdline = c
        .nodes
        .iter()
        .find_map(|n| {
            let pid = std::fs::read_to_string(n.dir.join("vms").join(id).join("qemu.pid")).ok()?;
            std::fs::read(format!("/proc/{}/cmdline", pid.trim())).ok()
        })
        .unwrap_or_else(|| panic!("no QEMU runs VM {id}"));
    String::from_utf8_lossy(&cmdline).replace('\0', " ")
}

/// Runs `cmd` in the guest over SSH from the outside namespace; its output on success.
fn ssh(outside: &VmNic, key: &Path, ip: &str, cmd: &str) -> Result<String, String> {
    let o = outside.run(&[
        "timeout",
        "60",
        "ssh",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=3",
        "-i",
        key.to_str().unwrap(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
        &format!("root@{ip}"),
        cmd,
    ]);
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!("ssh {cmd:?}: {}", stderr(&o)))
    }
}

/// Retries `cmd` over SSH until `want` holds for its output (or `secs` pass).
fn ssh_until(
    outside: &VmNic,
    key: &Path,
    ip: &str,
    cmd: &str,
    secs: u64,
    want: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let mut last = String::new();
    wait_for(Duration::from_secs(secs), || {
        match ssh(outside, key, ip, cmd) {
            Ok(out) if want(&out) => Some(out),
            Ok(out) => {
                last = out;
                None
            }
            Err(e) => {
                last = e;
                None
            }
        }
    })
    .ok_or(last)
}

/// The scenario, in project `demo` of a cluster whose router `r1` joins `sub1` (of
/// `net1`) to the external network `public` (203.0.113.0/24) and whose security group
/// `web` lets SSH in.
pub fn cloud_image_over_ssh(c: &Cluster, os: &Os, demo: &[&str], dir: &Path) {
    let j = |args: &[&str]| os.json(demo, args);
    let run = |args: &[&str]| {
        let o = os.run(demo, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let qcow = image();
    let qcow_bytes = std::fs::read(&qcow).unwrap();
    let img = j(&[
        "image",
        "create",
        "--disk-format",
        "qcow2",
        "--container-format",
        "bare",
        "--file",
        qcow.to_str().unwrap(),
        "tiny",
        "-f",
        "json",
    ]);
    assert_eq!(img["status"], "active", "{img}");
    assert_eq!(img["size"], qcow_bytes.len() as u64, "{img}");
    assert_eq!(img["virtual_size"], 48u64 << 20, "{img}");
    // Downloaded as it was sent (the client checks the MD5).
    let saved = dir.join("saved.qcow2");
    run(&["image", "save", "--file", saved.to_str().unwrap(), "tiny"]);
    assert!(
        std::fs::read(&saved).unwrap() == qcow_bytes,
        "the download differs"
    );

    // A real key pair: the guest installs its public key, OpenSSH logs in with it.
    let key = dir.join("tiny_key");
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "tiny@strata", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen (Debian package openssh-client)");
    assert!(o.status.success(), "{}", stderr(&o));
    let public = dir.join("tiny_key.pub");
    j(&[
        "keypair",
        "create",
        "--public-key",
        public.to_str().unwrap(),
        "k2",
        "-f",
        "json",
    ]);

    let s = j(&[
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        "tiny",
        "--network",
        "net1",
        "--security-group",
        "web",
        "--key-name",
        "k2",
        "--config-drive",
        "true",
        "--wait",
        "tiny1",
        "-f",
        "json",
    ]);
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(
        j(&["server", "show", "tiny1", "-f", "json"])["config_drive"],
        "True"
    );
    // Its config drive: an ISO 9660 volume labelled config-2 with the instance's key, a
    // CD-ROM of its QEMU.
    let iso = c
        .nodes
        .iter()
        .map(|n| n.dir.join("config-drives").join(format!("{id}.iso")))
        .find(|p| p.exists())
        .expect("no node holds the config drive");
    let label = std::process::Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "LABEL"])
        .arg(&iso)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "config-2");
    assert!(
        qemu_cmdline(c, &id).contains("media=cdrom"),
        "no CD-ROM on tiny1"
    );
    let console = || run(&["console", "log", "show", "tiny1"]);
    let ready = wait_for(Duration::from_secs(180), || {
        console().contains("STRATA-TINY-READY").then_some(())
    });
    assert!(
        ready.is_some(),
        "the image did not boot through its bootloader: {}",
        console()
    );
    let log = console();
    assert!(log.contains("STRATA-TINY-DATASOURCE configdrive"), "{log}");
    assert!(log.contains("STRATA-TINY-KEYS n=1"), "{log}");

    // From outside the cloud: a host on the external network, through a floating IP.
    let fip = j(&["floating", "ip", "create", "public", "-f", "json"]);
    let fip = fip["floating_ip_address"].as_str().unwrap().to_string();
    run(&["server", "add", "floating", "ip", "tiny1", &fip]);
    let node = c.node_ids()[0].clone();
    let p = json(&c.nodes[0].cli(&[
        "port",
        "create",
        "--network",
        "public",
        "--host",
        &node,
        "--ip",
        "203.0.113.250",
        "--no-port-security",
        "--json",
    ]));
    let pid = p["id"].as_str().expect("outside port").to_string();
    let p = wait_for(Duration::from_secs(90), || {
        let p = json(&c.nodes[0].cli(&["port", "show", &pid, "--json"]));
        (p["status"] == "ACTIVE").then_some(p)
    })
    .expect("the outside port never became active");
    let ns = format!("tiny-out-{}", std::process::id());
    let outside = VmNic::attach(
        &c.nodes[0].ns,
        p["tap"].as_str().unwrap(),
        &ns,
        p["mac"].as_str().unwrap(),
    );
    let o = outside.run(&["ip", "addr", "add", "203.0.113.250/24", "dev", "eth0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let hello = ssh_until(&outside, &key, &fip, "hostname; uname -r", 180, |o| {
        o.starts_with("tiny1")
    });
    if hello.is_err() {
        let ping = outside.pings(&fip, 5);
        let neigh = outside.run(&["ip", "neigh"]);
        // Every namespace's addresses and NAT rules, to see where the path breaks.
        let mut dump = String::new();
        let list = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap();
        for ns in String::from_utf8_lossy(&list.stdout).lines() {
            let ns = ns.split_whitespace().next().unwrap_or("");
            for args in [
                &["ip", "-br", "addr"][..],
                &["ip", "route"],
                &["nft", "list", "ruleset"],
            ] {
                let o = std::process::Command::new("ip")
                    .args(["netns", "exec", ns])
                    .args(args)
                    .output()
                    .unwrap();
                dump.push_str(&format!(
                    "== {ns} {args:?}\n{}",
                    String::from_utf8_lossy(&o.stdout)
                ));
            }
        }
        eprintln!("{dump}");
        panic!(
            "no SSH login through {fip}: {hello:?}\nping from outside: {ping}\nneighbours: {}\nconsole:\n{}",
            String::from_utf8_lossy(&neigh.stdout),
            console()
        );
    }

    // A volume plugged in: the guest sees a new disk and writes to it; unplugged: gone.
    j(&["volume", "create", "--size", "1", "data2", "-f", "json"]);
    wait_for(Duration::from_secs(60), || {
        (j(&["volume", "show", "data2", "-f", "json"])["status"] == "available").then_some(())
    })
    .expect("data2 never became available");
    run(&["server", "add", "volume", "tiny1", "data2"]);
    let disks = ssh_until(&outside, &key, &fip, "cat /proc/partitions", 60, |o| {
        o.contains("vdb")
    });
    assert!(
        disks.is_ok(),
        "the plugged volume is not in the guest: {disks:?}"
    );
    let wrote = ssh(
        &outside,
        &key,
        &fip,
        "echo STRATA-DATA-2 | dd of=/dev/vdb conv=sync,notrunc 2>/dev/null && sync && \
         dd if=/dev/vdb bs=512 count=1 2>/dev/null | head -n1",
    );
    assert_eq!(wrote.as_deref().map(str::trim), Ok("STRATA-DATA-2"));
    run(&["server", "remove", "volume", "tiny1", "data2"]);
    let gone = ssh_until(&outside, &key, &fip, "cat /proc/partitions", 60, |o| {
        !o.contains("vdb")
    });
    assert!(
        gone.is_ok(),
        "the unplugged volume is still in the guest: {gone:?}"
    );

    // A port on a second network plugged in: the guest configures it by DHCP; unplugged.
    j(&["network", "create", "net2", "-f", "json"]);
    j(&[
        "subnet",
        "create",
        "--network",
        "net2",
        "--subnet-range",
        "10.41.0.0/24",
        "sub2",
        "-f",
        "json",
    ]);
    let port = j(&["port", "create", "--network", "net2", "p2", "-f", "json"]);
    let ip2 = port["fixed_ips"].to_string();
    let ip2 = ip2
        .split('"')
        .find(|s| s.starts_with("10.41.0."))
        .expect("p2's address")
        .to_string();
    run(&["server", "add", "port", "tiny1", "p2"]);
    let up = ssh_until(&outside, &key, &fip, "ip -4 -o addr", 60, |o| {
        o.contains(&ip2)
    });
    assert!(
        up.is_ok(),
        "the plugged port's address {ip2} never came up: {up:?}"
    );
    run(&["server", "remove", "port", "tiny1", "p2"]);
    let down = ssh_until(&outside, &key, &fip, "ls /sys/class/net", 60, |o| {
        !o.contains("eth1")
    });
    assert!(
        down.is_ok(),
        "the unplugged port's NIC is still there: {down:?}"
    );

    // The same image, marked as needing UEFI: OVMF runs the image's GRUB for EFI.
    run(&[
        "image",
        "set",
        "--property",
        "hw_firmware_type=uefi",
        "tiny",
    ]);
    let u = j(&[
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        "tiny",
        "--network",
        "net1",
        "--key-name",
        "k2",
        "--config-drive",
        "true",
        "--wait",
        "tiny-uefi",
        "-f",
        "json",
    ]);
    assert_eq!(u["status"], "ACTIVE", "{u}");
    let uid = u["id"].as_str().unwrap().to_string();
    assert!(
        qemu_cmdline(c, &uid).contains("OVMF_CODE"),
        "no UEFI firmware on tiny-uefi"
    );
    let uefi_console = || run(&["console", "log", "show", "tiny-uefi"]);
    let ready = wait_for(Duration::from_secs(300), || {
        uefi_console()
            .contains("STRATA-TINY-READY hostname=tiny-uefi")
            .then_some(())
    });
    assert!(
        ready.is_some(),
        "UEFI did not boot the image: {}",
        uefi_console()
    );
    run(&["server", "delete", "--wait", "tiny-uefi"]);

    // Delete everything this part made; the config drive goes with its server.
    drop(outside);
    assert!(c.nodes[0].cli(&["port", "delete", &pid]).status.success());
    run(&["server", "delete", "--wait", "tiny1"]);
    assert!(
        wait_for(Duration::from_secs(30), || (!iso.exists()).then_some(())).is_some(),
        "the config drive outlived its server"
    );
    for args in [
        vec!["floating", "ip", "delete", fip.as_str()],
        vec!["port", "delete", "p2"],
        vec!["subnet", "delete", "sub2"],
        vec!["network", "delete", "net2"],
        vec!["volume", "delete", "data2"],
        vec!["keypair", "delete", "k2"],
        vec!["image", "delete", "tiny"],
    ] {
        run(&args);
    }
}
