//! A real guest (TCG) on a tenant network: `strata vm create --network` makes a port on the
//! VM's node, the VM's NIC is that port's TAP, the guest leases the port's address from
//! Strata's DHCP, reads its metadata through the classless route DHCP gave it, and answers
//! a ping from a port on another node. Deleting the VM removes its port.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::vmnic::VmNic;
use common::{json, stderr, wait_for, Cluster};

fn guest() -> (String, String) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/out/guest");
    let k = dir.join("vmlinuz");
    let i = dir.join("initramfs.cpio.gz");
    assert!(k.exists() && i.exists(), "run `make images-guest` first");
    (k.display().to_string(), i.display().to_string())
}

#[test]
fn a_guest_on_a_tenant_network_leases_its_port_address_reads_metadata_and_answers_ping() {
    let c = Cluster::form(2);
    let (kernel, initrd) = guest();
    let run = |args: &[&str]| {
        let o = c.nodes[0].cli(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    run(&["network", "create", "app"]);
    run(&[
        "subnet",
        "create",
        "app-v4",
        "--network",
        "app",
        "--cidr",
        "10.30.0.0/24",
    ]);
    // Bad input first: an unknown network creates nothing.
    let o = c.nodes[0].cli(&[
        "vm",
        "create",
        "bad",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--network",
        "nope",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("no network \"nope\""),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        json(&c.nodes[0].cli(&["port", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let ud = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ud.path(), "#cloud-config\n").unwrap();
    let o = c.nodes[0].cli(&[
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
        "--network",
        "app",
        "--user-data",
        ud.path().to_str().unwrap(),
        "--wait",
        "90",
        "--json",
    ]);
    let web = json(&o);
    assert_eq!(web["state"], "ACTIVE", "{web}");
    let vm_id = web["id"].as_str().unwrap().to_string();
    let port_id = web["ports"][0]
        .as_str()
        .expect("the VM has a port")
        .to_string();
    let port = json(&c.nodes[0].cli(&["port", "show", &port_id, "--json"]));
    assert_eq!(port["device_id"], vm_id.as_str(), "{port}");
    assert_eq!(
        port["host"], web["node"],
        "the port is bound to the VM's node: {port}"
    );
    assert_eq!(port["status"], "ACTIVE", "{port}");
    let ip = port["fixed_ips"][0]["ip"].as_str().unwrap().to_string();

    let console = wait_for(Duration::from_secs(90), || {
        let o = c.nodes[0].cli(&["vm", "console", "web"]);
        let t = String::from_utf8_lossy(&o.stdout).to_string();
        (t.contains("STRATA-GUEST-METADATA") || t.contains("STRATA-GUEST-SHELL")).then_some(t)
    })
    .expect("the guest never got to its network checks");
    assert!(
        console.contains(&format!("STRATA-GUEST-NET ip={ip}")),
        "{console}"
    );
    assert!(console.contains("STRATA-GUEST-METADATA ok"), "{console}");

    // A port on the other node reaches the guest over the overlay.
    let host = c.index_of(web["node"].as_str().unwrap()).unwrap();
    let other = 1 - host;
    let ids: Vec<String> = c.node_ids();
    let o = c.nodes[0].cli(&[
        "port",
        "create",
        "--network",
        "app",
        "--host",
        &ids[other],
        "--json",
    ]);
    let probe = json(&o);
    let pid = probe["id"].as_str().unwrap().to_string();
    let probe = wait_for(Duration::from_secs(20), || {
        let p = json(&c.nodes[0].cli(&["port", "show", &pid, "--json"]));
        (p["status"] == "ACTIVE").then_some(p)
    })
    .expect("probe port active");
    let nic = VmNic::attach(
        &c.nodes[other].ns,
        probe["tap"].as_str().unwrap(),
        &format!("{}p", c.nodes[0].ns),
        probe["mac"].as_str().unwrap(),
    );
    let probe_ip = probe["fixed_ips"][0]["ip"].as_str().unwrap();
    let o = nic.run(&[
        "ip",
        "addr",
        "add",
        &format!("{probe_ip}/24"),
        "dev",
        "eth0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        nic.pings(&ip, 20),
        "the guest at {ip} does not answer across nodes"
    );

    // The VM's port cannot be deleted on its own; deleting the VM removes it.
    let o = c.nodes[0].cli(&["port", "delete", &port_id]);
    assert!(
        !o.status.success() && stderr(&o).contains("NIC of VM web"),
        "{}",
        stderr(&o)
    );
    drop(nic);
    let o = c.nodes[0].cli(&["vm", "delete", "web", "--wait", "30"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = c.nodes[0].cli(&["port", "show", &port_id]);
    assert!(!o.status.success(), "the VM's port outlived it");
}
