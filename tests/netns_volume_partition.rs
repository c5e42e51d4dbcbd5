//! Partitions on a 3-replica volume (nftables drops in the node namespaces):
//! - a replica partitioned away and back is resynced with only the extents written
//!   meanwhile, and the amount is reported;
//! - a writer cut off from the others while another node takes the volume over can no
//!   longer complete writes (it reaches only its own replica, short of the majority); after
//!   the partition heals its export is gone and its replica is brought up to the new
//!   writer's data.

mod common;

use std::time::Duration;

use common::{export, qemu_io, replica_states, replicated_volume, wait_for, Cluster};

#[test]
fn partitioned_replicas_resync_and_a_cut_off_writer_is_fenced() {
    let c = Cluster::form(3);
    let ips: Vec<String> = c.nodes.iter().map(|n| n.ip.clone()).collect();
    let name = replicated_volume(&c, 0, "part", "512M", 3);
    let uri0 = export(&c, 0, &name);
    let (ok, out) = qemu_io(&uri0, &["write -P 0x11 0 8M", "flush"]);
    assert!(ok, "{out}");

    // 1. Node 2 is partitioned away; two extents are written; it comes back.
    c.nodes[2].isolate_from(&[ips[0].clone(), ips[1].clone()], true);
    let (ok, out) = qemu_io(
        &uri0,
        &["write -P 0x22 64M 1M", "write -P 0x23 320M 1M", "flush"],
    );
    assert!(ok, "writes with a replica partitioned away: {out}");
    wait_for(Duration::from_secs(30), || {
        replica_states(&c, 0, &name)
            .contains(&"faulted".to_string())
            .then_some(())
    })
    .expect("the partitioned replica was not recorded faulted");
    c.nodes[2].isolate_from(&[], false);
    wait_for(Duration::from_secs(60), || {
        replica_states(&c, 0, &name)
            .iter()
            .all(|s| s == "insync")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not resynced: {:?}", replica_states(&c, 0, &name)));
    let events =
        String::from_utf8_lossy(&c.nodes[0].cli(&["events", "--limit", "50"]).stdout).to_string();
    assert!(
        events.contains("resync copied 128 MiB, only the extents it lacked"),
        "two 64 MiB extents, not the 512 MiB volume: {events}"
    );

    // 2. The writer (node 0) is cut off; node 1 takes the volume over.
    c.nodes[0].isolate_from(&[ips[1].clone(), ips[2].clone()], true);
    let uri1 = wait_for(Duration::from_secs(60), || {
        let o = c.nodes[1].cli(&["volume", "export", &name]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    })
    .expect("node 1 could not take the volume over");
    let (ok, out) = qemu_io(&uri1, &["write -P 0x33 0 4M", "flush"]);
    assert!(ok, "the new writer: {out}");
    // The old writer reaches only its own replica: its writes do not complete.
    let (ok, out) = qemu_io(&uri0, &["write -P 0x44 0 4M"]);
    assert!(!ok, "a cut-off writer completed a write: {out}");
    c.nodes[0].isolate_from(&[], false);
    // Healed: node 0 drops its export, and its replica is brought up to date.
    wait_for(Duration::from_secs(60), || {
        (!qemu_io(&uri0, &["read 0 4k"]).0).then_some(())
    })
    .expect("the old writer still exports the volume");
    wait_for(Duration::from_secs(90), || {
        replica_states(&c, 1, &name)
            .iter()
            .all(|s| s == "insync")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not back in sync: {:?}", replica_states(&c, 1, &name)));
    let (ok, out) = qemu_io(
        &uri1,
        &[
            "read -P 0x33 0 4M",
            "read -P 0x11 4M 4M",
            "read -P 0x22 64M 1M",
        ],
    );
    assert!(ok, "{out}");
    // Node 0's own copy holds the new writer's data, not the refused write.
    let uri0b = export(&c, 0, &name);
    let (ok, out) = qemu_io(&uri0b, &["read -P 0x33 0 4M", "read -P 0x23 320M 1M"]);
    assert!(ok, "node 0's copy: {out}");
}
