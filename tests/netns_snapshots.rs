//! Snapshots and copy-on-write clones on a 3-node namespace cluster: a snapshot keeps the
//! content it was taken with while the volume changes; clones read it without copying it
//! and write their own blocks; clones of clones; deletion rules; a replica that missed
//! writes (and the copies they made into a snapshot) gets the snapshot right on resync.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{
    data_dir_of, export, json, qemu_io, replica_states, replicated_volume, stderr, wait_for,
    Cluster,
};

fn id_of(c: &Cluster, volume: &str) -> String {
    json(&c.nodes[0].cli(&["volume", "show", volume, "--json"]))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Bytes a directory tree uses on disk.
fn used(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            used(&e.path())
        } else {
            m.blocks() * 512
        };
    }
    total
}

fn ok(c: &Cluster, i: usize, args: &[&str]) -> String {
    let o = c.nodes[i].cli(args);
    assert!(o.status.success(), "{args:?} on node {i}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn refused(c: &Cluster, i: usize, args: &[&str], want: &str) {
    let o = c.nodes[i].cli(args);
    assert!(!o.status.success(), "{args:?} was accepted");
    let e = stderr(&o);
    assert!(e.contains(want), "{args:?}: expected {want:?} in: {e}");
}

#[test]
fn snapshots_keep_their_content_and_clones_share_it_without_copying() {
    let c = Cluster::form(3);
    let base = replicated_volume(&c, 0, "base", "64M", 3);
    let base_id = id_of(&c, &base);
    let uri0 = export(&c, 0, &base);
    let (good, out) = qemu_io(&uri0, &["write -P 0x11 0 32M", "flush"]);
    assert!(good, "{out}");

    // A snapshot of an attached volume, asked through another node: its writer takes it.
    let said = ok(&c, 1, &["volume", "snapshot", &base, "s1"]);
    assert!(
        said.contains("snapshot s1") && said.contains("taken"),
        "{said}"
    );
    let (good, out) = qemu_io(&uri0, &["write -P 0x22 0 4M", "flush"]);
    assert!(good, "write after the snapshot: {out}");
    refused(&c, 2, &["volume", "snapshot", &base, "s1"], "already");

    // Two clones of it, through node 2: each reads the snapshot, not the later writes.
    let clone_of = format!("{base}@s1");
    let shown = ok(&c, 2, &["volume", "clone", &clone_of, "vm1"]);
    assert!(shown.contains("clone of"), "{shown}");
    ok(&c, 2, &["volume", "clone", &clone_of, "vm2"]);
    let uri1 = export(&c, 1, "vm1");
    let (good, out) = qemu_io(&uri1, &["read -P 0x11 0 32M", "read -P 0 32M 32M"]);
    assert!(good, "the clone reads the snapshot: {out}");
    // Its own writes, one of them a part of a block it does not hold yet.
    let (good, out) = qemu_io(
        &uri1,
        &["write -P 0x33 1M 1M", "write -P 0x44 4608 512", "flush"],
    );
    assert!(good, "{out}");
    let (good, out) = qemu_io(
        &uri1,
        &[
            "read -P 0x11 0 4608",
            "read -P 0x44 4608 512",
            "read -P 0x11 5120 3072",
            "read -P 0x33 1M 1M",
            "read -P 0x11 2M 30M",
        ],
    );
    assert!(good, "the clone's writes over the snapshot: {out}");
    let uri2 = export(&c, 2, "vm2");
    let (good, out) = qemu_io(&uri2, &["read -P 0x11 0 32M"]);
    assert!(good, "the second clone is untouched by the first: {out}");
    let (good, out) = qemu_io(&uri0, &["read -P 0x22 0 4M", "read -P 0x11 4M 28M"]);
    assert!(good, "the volume itself kept its later writes: {out}");

    // Nothing was copied: a clone's regions hold only what it wrote.
    let vm1 = id_of(&c, "vm1");
    for i in 0..3 {
        let regions = data_dir_of(&c.nodes[i]).join("regions");
        let (clone_used, base_used) = (used(&regions.join(&vm1)), used(&regions.join(&base_id)));
        assert!(
            clone_used < 4 << 20 && base_used >= 32 << 20,
            "node {i}: clone uses {clone_used} bytes, the volume {base_used}"
        );
    }

    // A snapshot of a volume attached nowhere, and a clone of a clone.
    ok(&c, 0, &["volume", "detach", "vm2"]);
    ok(&c, 2, &["volume", "snapshot", "vm2", "c1"]);
    let (good, out) = qemu_io(&uri1, &["read -P 0x33 1M 1M"]);
    assert!(good, "{out}");
    ok(
        &c,
        0,
        &["volume", "clone", "vm2@c1", "vm3", "--size", "128M"],
    );
    let uri3 = export(&c, 0, "vm3");
    let (good, out) = qemu_io(
        &uri3,
        &[
            "read -P 0x11 0 32M",
            "read -P 0 32M 96M",
            "write -P 0x55 100M 1M",
            "read -P 0x55 100M 1M",
        ],
    );
    assert!(good, "a bigger clone of a clone: {out}");

    // Deletion rules, each naming the cause.
    refused(&c, 0, &["volume", "delete", &base], "snapshot");
    refused(&c, 0, &["volume", "snapshot-delete", &base, "s1"], "vm1");
    refused(&c, 0, &["volume", "clone", "nope@s1", "x"], "no volume");
    refused(
        &c,
        0,
        &["volume", "clone", &clone_of, "small", "--size", "1M"],
        "at least",
    );
    for v in ["vm1", "vm3"] {
        ok(&c, 0, &["volume", "detach", v]);
    }
    ok(&c, 0, &["volume", "delete", "vm3"]);
    ok(&c, 0, &["volume", "snapshot-delete", "vm2", "c1"]);
    ok(&c, 0, &["volume", "delete", "vm2"]);
    ok(&c, 0, &["volume", "delete", "vm1"]);
    ok(&c, 1, &["volume", "snapshot-delete", &base, "s1"]);
    let v = json(&c.nodes[1].cli(&["volume", "show", &base, "--json"]));
    assert_eq!(v["snapshots"].as_array().map(|a| a.len()), Some(0), "{v}");
    for i in 0..3 {
        let snaps = data_dir_of(&c.nodes[i])
            .join("regions")
            .join(&base_id)
            .join("snap");
        let left = std::fs::read_dir(&snaps).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "node {i} still holds a snapshot layer");
    }
    let (good, out) = qemu_io(&uri0, &["read -P 0x22 0 4M", "read -P 0x11 4M 28M"]);
    assert!(good, "the volume after its snapshot was deleted: {out}");
}

#[test]
fn a_replica_that_missed_writes_after_a_snapshot_gets_the_snapshot_right_on_resync() {
    let mut c = Cluster::form(3);
    let base = replicated_volume(&c, 0, "disk", "64M", 3);
    let uri0 = export(&c, 0, &base);
    let (good, out) = qemu_io(&uri0, &["write -P 0x11 0 16M", "flush"]);
    assert!(good, "{out}");
    ok(&c, 0, &["volume", "snapshot", &base, "before"]);

    // Node 2 is away while the volume is overwritten: its copy misses the writes and the
    // old content they preserved in the snapshot on the other replicas.
    c.nodes[2].kill();
    let (good, out) = qemu_io(&uri0, &["write -P 0x55 0 8M", "flush"]);
    assert!(good, "{out}");
    wait_for(Duration::from_secs(20), || {
        replica_states(&c, 0, &base)
            .contains(&"faulted".to_string())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no faulted replica: {:?}", replica_states(&c, 0, &base)));
    refused(
        &c,
        0,
        &["volume", "snapshot", &base, "during"],
        "out of sync",
    );
    c.nodes[2].start();
    wait_for(Duration::from_secs(60), || {
        replica_states(&c, 0, &base)
            .iter()
            .all(|s| s == "insync")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not resynced: {:?}", replica_states(&c, 0, &base)));

    // A clone exported on node 2 reads the snapshot from node 2's own replica first.
    ok(
        &c,
        2,
        &["volume", "clone", &format!("{base}@before"), "probe"],
    );
    let uri2 = export(&c, 2, "probe");
    let (good, out) = qemu_io(&uri2, &["read -P 0x11 0 16M", "read -P 0 16M 48M"]);
    assert!(good, "the snapshot as node 2 holds it after resync: {out}");
    let (good, out) = qemu_io(&uri0, &["read -P 0x55 0 8M", "read -P 0x11 8M 8M"]);
    assert!(good, "{out}");
}
