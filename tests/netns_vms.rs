//! VMs on a 3-node namespace cluster with the TCG driver (this host's /dev/kvm cannot run
//! a Linux guest): create, place, boot to the guest's shell marker, console from another
//! node, stop, start, reboot, guest power-off, re-adoption after a daemon restart, delete;
//! and requests that must be refused without leaving anything behind.
//!
//! Needs the test guest: `make images-guest` (run by `make test`).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{stderr, wait_for, Cluster};

fn guest() -> (String, String) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/out/guest");
    let k = dir.join("vmlinuz");
    let i = dir.join("initramfs.cpio.gz");
    assert!(
        k.exists() && i.exists(),
        "the test guest is missing from {}: run `make images-guest` first",
        dir.display()
    );
    (k.display().to_string(), i.display().to_string())
}

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "command failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

fn vm(c: &Cluster, via: usize, name: &str) -> serde_json::Value {
    json(&c.nodes[via].cli(&["vm", "show", name, "--json"]))
}

fn console(c: &Cluster, via: usize, name: &str) -> String {
    let o = c.nodes[via].cli(&["vm", "console", name]);
    assert!(o.status.success(), "console: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn wait_state(c: &Cluster, via: usize, name: &str, want: &str, secs: u64) -> serde_json::Value {
    wait_for(Duration::from_secs(secs), || {
        let v = vm(c, via, name);
        (v["state"] == want).then_some(v)
    })
    .unwrap_or_else(|| panic!("VM {name} did not reach {want}: {}", vm(c, via, name)))
}

fn qemu_pid(c: &Cluster, vm_id: &str) -> Option<String> {
    c.nodes.iter().find_map(|n| {
        std::fs::read_to_string(n.dir.join("vms").join(vm_id).join("qemu.pid"))
            .ok()
            .map(|p| p.trim().to_string())
    })
}

/// Whether a VM process runs (a zombie waiting for its reaper does not).
fn vm_process_alive(pid: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("strata-vm-"))
        .unwrap_or(false)
}

#[test]
fn vms_are_placed_booted_controlled_and_deleted_on_a_three_node_cluster() {
    let (kernel, initrd) = guest();
    let mut c = Cluster::form(3);
    let vm_count = |c: &Cluster| {
        json(&c.nodes[0].cli(&["vm", "list", "--json"]))
            .as_array()
            .map(|a| a.len())
            .unwrap_or(usize::MAX)
    };

    // Bad input: refused with the cause named, nothing written.
    let refuse = |c: &Cluster, args: &[&str], want: &str| {
        let mut a = vec!["vm", "create", "bad"];
        a.extend_from_slice(args);
        let o = c.nodes[1].cli(&a);
        assert!(!o.status.success(), "{args:?} was accepted");
        let e = stderr(&o);
        assert!(e.contains(want), "{args:?}: expected {want:?} in: {e}");
    };
    refuse(
        &c,
        &["--kernel", &kernel, "--vcpus", "0"],
        "at least 1 vCPU",
    );
    refuse(
        &c,
        &["--kernel", "/nonexistent/vmlinuz"],
        "/nonexistent/vmlinuz",
    );
    let tmp = tempfile::tempdir().unwrap();
    let truncated = tmp.path().join("vmlinuz-truncated");
    let bytes = std::fs::read(&kernel).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    refuse(
        &c,
        &["--kernel", truncated.to_str().unwrap()],
        "truncated bzImage",
    );
    refuse(
        &c,
        &["--kernel", &kernel, "--initrd", &kernel],
        "not a cpio archive",
    );
    refuse(
        &c,
        &["--kernel", &kernel, "--ram", "100000000"],
        "more than any node can offer",
    );
    refuse(
        &c,
        &["--kernel", &kernel, "--flavor", "m9.huge"],
        "no flavor",
    );
    assert_eq!(vm_count(&c), 0, "a refused create left a VM behind");

    // Create through node 1; it is placed, boots under TCG and reaches ACTIVE.
    let o = c.nodes[1].cli(&[
        "vm",
        "create",
        "web",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--ram",
        "256",
        "--cmdline",
        "console=ttyS0 quiet",
        "--wait",
        "60",
        "--json",
    ]);
    let web = json(&o);
    assert_eq!(web["state"], "ACTIVE", "{web}");
    assert_eq!(web["driver"], "tcg", "{web}");
    let id = web["id"].as_str().unwrap().to_string();
    let host = c
        .index_of(web["node"].as_str().unwrap())
        .expect("VM's node");
    let why = json(&c.nodes[2].cli(&["debug", "placement", "web"]));
    assert!(
        why["placement"]
            .as_str()
            .unwrap()
            .contains("3 of 3 nodes passed"),
        "{why}"
    );

    // The console is read on the node that runs the VM, from any node.
    let other = (host + 1) % 3;
    let out = wait_for(Duration::from_secs(60), || {
        let t = console(&c, other, "web");
        t.contains("STRATA-GUEST-SHELL").then_some(t)
    })
    .unwrap_or_else(|| panic!("no shell marker: {}", console(&c, host, "web")));
    assert!(out.contains("STRATA-GUEST-USERSPACE"), "{out}");

    // Stop (gracefully: the guest powers off on the ACPI power button), start, reboot.
    let o = c.nodes[0].cli(&["vm", "stop", "web", "--wait", "40"]);
    assert!(o.status.success(), "stop: {}", stderr(&o));
    let v = vm(&c, 0, "web");
    assert_eq!(
        (v["state"].as_str(), v["power"].as_str()),
        (Some("SHUTOFF"), Some("stopped")),
        "{v}"
    );
    assert_eq!(
        v["reason"], "stopped by request (the guest shut down cleanly)",
        "{v}"
    );
    assert!(console(&c, other, "web").contains("STRATA-GUEST-POWERBUTTON"));
    assert!(qemu_pid(&c, &id).is_none() || !vm_process_alive(&qemu_pid(&c, &id).unwrap()));
    let o = c.nodes[2].cli(&["vm", "start", "web", "--wait", "60"]);
    assert!(o.status.success(), "start: {}", stderr(&o));
    let boots = vm(&c, 0, "web")["boots"].as_u64().unwrap();
    assert_eq!(boots, 2, "{}", vm(&c, 0, "web"));
    let o = c.nodes[0].cli(&["vm", "reboot", "web"]);
    assert!(o.status.success(), "reboot: {}", stderr(&o));
    wait_for(Duration::from_secs(30), || {
        (vm(&c, 0, "web")["boots"].as_u64() == Some(3)).then_some(())
    })
    .unwrap_or_else(|| panic!("reboot not reported: {}", vm(&c, 0, "web")));

    // Pause and resume.
    let o = c.nodes[1].cli(&["vm", "pause", "web", "--wait", "30"]);
    assert!(o.status.success(), "pause: {}", stderr(&o));
    assert_eq!(vm(&c, 0, "web")["state"], "PAUSED");
    let o = c.nodes[1].cli(&["vm", "resume", "web", "--wait", "30"]);
    assert!(o.status.success(), "resume: {}", stderr(&o));
    assert_eq!(vm(&c, 0, "web")["state"], "ACTIVE");

    // A daemon restart does not stop the VM: the restarted agent adopts the same process.
    let pid = qemu_pid(&c, &id).expect("pid file");
    c.nodes[host].kill();
    c.nodes[host].start();
    std::thread::sleep(Duration::from_secs(3));
    let v = wait_state(&c, host, "web", "ACTIVE", 20);
    assert_eq!(qemu_pid(&c, &id).as_deref(), Some(pid.as_str()), "{v}");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "VM process died with its daemon"
    );
    assert_eq!(
        v["boots"].as_u64(),
        Some(3),
        "re-adoption rebooted the VM: {v}"
    );
    // A forced stop powers the VM off at once, without asking the guest.
    let o = c.nodes[1].cli(&["vm", "stop", "web", "--force", "--wait", "30"]);
    assert!(o.status.success(), "force stop: {}", stderr(&o));
    let v = vm(&c, 0, "web");
    assert_eq!(v["reason"], "stopped by request (stopped at once)", "{v}");
    assert!(
        !vm_process_alive(&pid),
        "the VM process outlived a forced stop"
    );
    let o = c.nodes[1].cli(&["vm", "start", "web", "--wait", "60"]);
    assert!(
        o.status.success(),
        "start after a forced stop: {}",
        stderr(&o)
    );
    let pid = qemu_pid(&c, &id).expect("pid file after the restart");
    assert!(vm_process_alive(&pid));

    // A guest that powers itself off is reported SHUTOFF and is not restarted.
    let o = c.nodes[0].cli(&[
        "vm",
        "create",
        "shortlived",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--ram",
        "256",
        "--cmdline",
        "console=ttyS0 quiet strata.action=poweroff",
    ]);
    assert!(o.status.success(), "create: {}", stderr(&o));
    let v = wait_state(&c, 0, "shortlived", "SHUTOFF", 90);
    assert!(
        v["reason"].as_str().unwrap().contains("guest powered off"),
        "{v}"
    );
    assert_eq!(v["power"], "stopped", "{v}");

    // Anti-affinity: three members of a group take the three nodes; a fourth cannot be placed.
    let mut nodes_used = std::collections::BTreeSet::new();
    for i in 0..3 {
        let name = format!("db{i}");
        let o = c.nodes[0].cli(&[
            "vm",
            "create",
            &name,
            "--kernel",
            &kernel,
            "--ram",
            "64",
            "--anti-affinity",
            "db",
            "--stopped",
            "--json",
        ]);
        nodes_used.insert(json(&o)["node"].as_str().unwrap().to_string());
    }
    assert_eq!(nodes_used.len(), 3, "anti-affinity group shares a node");
    refuse(
        &c,
        &["--kernel", &kernel, "--anti-affinity", "db"],
        "anti-affinity group \"db\"",
    );

    // Delete everything; the VMs' nodes destroy them.
    for name in ["web", "shortlived", "db0", "db1", "db2"] {
        let o = c.nodes[0].cli(&["vm", "delete", name, "--wait", "30"]);
        assert!(o.status.success(), "delete {name}: {}", stderr(&o));
    }
    assert_eq!(vm_count(&c), 0);
    assert!(!vm_process_alive(&pid), "deleted VM still runs");
    assert!(!c.nodes[host].dir.join("vms").join(&id).exists());
}
