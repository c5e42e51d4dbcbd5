//! Draining a node from the web console on a 2-node cluster: the node goes into
//! maintenance, its VM (booted from a replicated volume) shuts down, is placed on the
//! other node and boots there with its disk's data; new VMs are not placed on the
//! drained node; ending maintenance puts it back in service.

mod common;

use std::time::Duration;

use common::console::Console;
use common::{json, replicated_volume, stderr, wait_for, Cluster};

fn guest() -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("images/out/guest");
    let k = dir.join("vmlinuz");
    let i = dir.join("initramfs.cpio.gz");
    assert!(k.exists() && i.exists(), "run `make images-guest` first");
    (k.display().to_string(), i.display().to_string())
}

#[test]
fn draining_a_node_moves_its_vm_with_its_disk() {
    let (kernel, initrd) = guest();
    let c = Cluster::form(2);
    let vol = replicated_volume(&c, 0, "disk", "64M", 2);
    let o = c.nodes[0].cli(&[
        "vm",
        "create",
        "db",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--ram",
        "256",
        "--cmdline",
        "console=ttyS0 quiet",
        "--volume",
        &vol,
        "--wait",
        "90",
    ]);
    assert!(o.status.success(), "create: {}", stderr(&o));
    let console = |c: &Cluster| {
        String::from_utf8_lossy(&c.nodes[0].cli(&["vm", "console", "db"]).stdout).to_string()
    };
    wait_for(Duration::from_secs(90), || {
        console(&c)
            .contains("STRATA-GUEST-DISK wrote=1")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no disk write: {}", console(&c)));
    let vm = json(&c.nodes[0].cli(&["vm", "show", "db", "--json"]));
    let from = vm["node"].as_str().unwrap().to_string();

    // A drain without the form's token is refused and changes nothing.
    let s = Console::sign_in(&c);
    let bad = s.curl(&[
        "-i",
        "-d",
        "csrf=forged",
        &s.url(&format!("/nodes/{from}/drain")),
    ]);
    assert!(bad.starts_with("HTTP/1.1 403"), "{bad}");
    let vm = json(&c.nodes[0].cli(&["vm", "show", "db", "--json"]));
    assert_eq!(vm["node"].as_str(), Some(from.as_str()));

    let r = s.post(&format!("/nodes/{from}/drain"));
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    // The VM shuts down, moves, and boots on the other node with its disk's data.
    let moved = wait_for(Duration::from_secs(180), || {
        let v = json(&c.nodes[0].cli(&["vm", "show", "db", "--json"]));
        (v["node"].as_str() != Some(from.as_str()) && v["state"] == "ACTIVE").then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "the VM did not move: {}\n{}",
            json(&c.nodes[0].cli(&["vm", "show", "db", "--json"])),
            c.nodes[0].log()
        )
    });
    wait_for(Duration::from_secs(90), || {
        console(&c)
            .contains("STRATA-GUEST-DISK previous=1")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the disk's data did not move with the VM: {}", console(&c)));
    let v = json(&c.nodes[0].cli(&["volume", "show", &vol, "--json"]));
    assert_eq!(v["attached_to"], moved["node"], "{v}");
    let page = s.curl(&[&s.url("/nodes")]);
    assert!(page.contains("maintenance: drained by admin"), "{page}");
    let events = s.curl(&[&s.url("/audit?all=1&q=node.drain")]);
    assert!(events.contains("node.drain"), "{events}");

    // New VMs go to the other node while the drained one is in maintenance.
    let o = c.nodes[0].cli(&[
        "vm",
        "create",
        "small",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--ram",
        "128",
        "--stopped",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let small = json(&c.nodes[0].cli(&["vm", "show", "small", "--json"]));
    assert_ne!(small["node"].as_str(), Some(from.as_str()), "{small}");

    // Ending maintenance puts the node back in service.
    let r = s.post(&format!("/nodes/{from}/maintenance"));
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    let page = s.curl(&[&s.url("/nodes")]);
    assert!(!page.contains("maintenance: drained"), "{page}");
}
