//! Volumes on a 3-node namespace cluster: replicas placed on distinct nodes, each node
//! creating its region; replication lowered visibly when fewer nodes can hold it; bad
//! sizes and volumes larger than any node's free space refused with the cause; delete
//! frees every region; the first attach waits for a node slow to create its region.

mod common;

use std::time::Duration;

use common::{
    data_dir_of, export, json, qemu_io, replica_states, replicated_volume, stderr, wait_for,
    Cluster,
};

fn regions(c: &Cluster, i: usize) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data_dir_of(&c.nodes[i]).join("regions"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn volumes_are_replicated_on_distinct_nodes_and_deleted_everywhere() {
    let c = Cluster::form(3);
    // Every node reports its storage before placement can use it.
    wait_for(Duration::from_secs(30), || {
        let o = c.nodes[0].cli(&[
            "volume",
            "create",
            "probe",
            "--size",
            "1M",
            "--replicas",
            "3",
        ]);
        o.status.success().then_some(())
    })
    .expect("no volume could be created");
    let probe = json(&c.nodes[0].cli(&["volume", "show", "probe", "--json"]));
    assert_eq!(
        probe["replicas"].as_array().map(|a| a.len()),
        Some(3),
        "{probe}"
    );

    // A 3-replica volume, created through node 2: one region on each node.
    let o = c.nodes[2].cli(&["volume", "create", "data", "--size", "64M", "--wait", "30"]);
    assert!(o.status.success(), "create: {}", stderr(&o));
    let v = json(&c.nodes[1].cli(&["volume", "show", "data", "--json"]));
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["status"], "available", "{v}");
    assert_eq!(v["redundancy"], "3 of 3 replicas in sync", "{v}");
    let nodes: std::collections::BTreeSet<String> = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nodes.len(), 3, "replicas on distinct nodes: {v}");
    for i in 0..3 {
        assert!(
            regions(&c, i).contains(&id),
            "node {i} has no region: {:?}",
            regions(&c, i)
        );
    }

    // Bad input.
    let refuse = |args: &[&str], want: &str| {
        let mut a = vec!["volume", "create"];
        a.extend_from_slice(args);
        let o = c.nodes[0].cli(&a);
        assert!(!o.status.success(), "{args:?} was accepted");
        let e = stderr(&o);
        assert!(e.contains(want), "{args:?}: expected {want:?} in: {e}");
    };
    refuse(&["odd", "--size", "1000"], "multiple of 512");
    refuse(
        &["huge", "--size", "60T"],
        "no live node has that much free space",
    );
    refuse(
        &["many", "--size", "1M", "--replicas", "9"],
        "1 to 5 are supported",
    );
    refuse(&["data", "--size", "1M"], "exists already");
    refuse(&["nosize", "--size", "lots"], "is not a size");
    let list = json(&c.nodes[0].cli(&["volume", "list", "--json"]));
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "a refused create left a volume: {list}"
    );

    // Delete: every node frees its region.
    let o = c.nodes[0].cli(&["volume", "delete", "data"]);
    assert!(o.status.success(), "delete: {}", stderr(&o));
    wait_for(Duration::from_secs(20), || {
        (0..3).all(|i| !regions(&c, i).contains(&id)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "regions left: {:?}",
            (0..3).map(|i| regions(&c, i)).collect::<Vec<_>>()
        )
    });
    let o = c.nodes[1].cli(&["volume", "show", "data"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no volume"), "{}", stderr(&o));

    // A node slow to create its region (here it cannot: its regions directory is made
    // immutable, which stops even root) holds up the first attach, rather than the writer
    // finding the region missing, marking that replica faulted and copying it again.
    let dir = data_dir_of(&c.nodes[2]).join("regions");
    let chattr = |flag: &str| {
        let o = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&dir)
            .output()
            .expect("chattr");
        assert!(o.status.success(), "chattr {flag}: {}", stderr(&o));
    };
    chattr("+i");
    let o = c.nodes[0].cli(&["volume", "create", "late", "--size", "16M"]);
    let created = o.status.success();
    let (waited, uri) = std::thread::scope(|s| {
        let attach = s.spawn(|| created.then(|| export(&c, 0, "late")));
        std::thread::sleep(Duration::from_secs(4));
        let waited = !attach.is_finished();
        chattr("-i");
        (waited, attach.join())
    });
    assert!(created, "create: {}", stderr(&o));
    assert!(waited, "the attach did not wait for node 2's region");
    let uri = uri.expect("export").expect("created");
    let (ok, out) = qemu_io(&uri, &["write -P 0x5a 0 1M", "flush", "read -P 0x5a 0 1M"]);
    assert!(ok, "{out}");
    assert_eq!(
        replica_states(&c, 0, "late"),
        ["insync"; 3],
        "replicas of late"
    );
    let events =
        String::from_utf8_lossy(&c.nodes[0].cli(&["events", "--limit", "50"]).stdout).to_string();
    assert!(
        !events.contains("volume late: replica"),
        "a replica of late changed state: {events}"
    );
}

#[test]
fn replication_is_lowered_visibly_on_a_two_node_cluster() {
    let c = Cluster::form(2);
    // Until both nodes have reported their storage, placement may see only one.
    let mut n = 0;
    let v = wait_for(Duration::from_secs(40), || {
        n += 1;
        let name = format!("small{n}");
        let o = c.nodes[0].cli(&["volume", "create", &name, "--size", "8M", "--wait", "20"]);
        o.status.success().then_some(())?;
        let v = json(&c.nodes[0].cli(&["volume", "show", &name, "--json"]));
        (v["replicas"].as_array()?.len() == 2).then_some(v)
    })
    .expect("a 2-replica volume");
    assert_eq!(v["replication"], 3, "{v}");
    assert!(
        v["placement"]
            .as_str()
            .unwrap()
            .contains("replication lowered from 3 to 2"),
        "{v}"
    );
    assert_eq!(v["redundancy"], "2 of 3 replicas in sync", "{v}");
}

#[test]
fn a_volume_survives_a_lost_replica_resyncs_it_and_moves_to_another_writer() {
    let mut c = Cluster::form(3);
    let name = replicated_volume(&c, 0, "vol", "512M", 3);
    let id = json(&c.nodes[0].cli(&["volume", "show", &name, "--json"]))["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Export on node 0 and write through NBD.
    let uri0 = export(&c, 0, &name);
    assert!(uri0.starts_with("nbd+unix:///"), "{uri0}");
    let (ok, out) = qemu_io(&uri0, &["write -P 0x11 0 16M", "flush"]);
    assert!(ok, "{out}");

    // Node 2 dies; writes go on (2 of 3 replicas) and the replica is recorded faulted.
    c.nodes[2].kill();
    let (ok, out) = qemu_io(&uri0, &["write -P 0x22 128M 4M", "flush"]);
    assert!(ok, "write with a replica down: {out}");
    wait_for(Duration::from_secs(20), || {
        (replica_states(&c, 0, &name)
            .iter()
            .filter(|s| *s == "faulted")
            .count()
            == 1)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no faulted replica: {:?}", replica_states(&c, 0, &name)));
    let v = json(&c.nodes[0].cli(&["volume", "show", &name, "--json"]));
    assert_eq!(v["status"], "degraded", "{v}");

    // It returns: only the extent written meanwhile is copied, and the copy is reported.
    c.nodes[2].start();
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
        events.contains("resync copied 64 MiB, only the extents it lacked"),
        "{events}"
    );
    let (ok, out) = qemu_io(
        &uri0,
        &[
            "read -P 0x11 0 16M",
            "read -P 0x22 128M 4M",
            "read -P 0 16M 1M",
        ],
    );
    assert!(ok, "read back: {out}");

    // Node 2 takes the volume over: node 0's export goes away (a new generation), and
    // node 2 reads its own, resynced copy first.
    let uri2 = export(&c, 2, &name);
    let (ok, out) = qemu_io(&uri2, &["read -P 0x11 0 16M", "read -P 0x22 128M 4M"]);
    assert!(ok, "read on the new writer: {out}");
    wait_for(Duration::from_secs(20), || {
        (!qemu_io(&uri0, &["read 0 4k"]).0).then_some(())
    })
    .expect("the old writer's export still serves");

    // Silent corruption of node 2's copy: detected, served from another replica, repaired.
    let extent = data_dir_of(&c.nodes[2])
        .join("regions")
        .join(&id)
        .join("extent-000000.dat");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&extent)
            .unwrap();
        f.write_all_at(&[0xee], 4096 * 3 + 5).unwrap();
    }
    let (ok, out) = qemu_io(&uri2, &["read -P 0x11 0 64k", "read -P 0x11 0 64k"]);
    assert!(ok, "read of a corrupt block: {out}");
    let log = c.nodes[2].log();
    assert!(log.contains("repaired a bad copy"), "no repair logged");

    // Detach and delete: every region is freed.
    assert!(c.nodes[1]
        .cli(&["volume", "detach", &name])
        .status
        .success());
    let o = c.nodes[1].cli(&["volume", "delete", &name]);
    assert!(o.status.success(), "delete: {}", stderr(&o));
    wait_for(Duration::from_secs(20), || {
        (0..3).all(|i| !regions(&c, i).contains(&id)).then_some(())
    })
    .expect("regions left after delete");
}

fn guest() -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("images/out/guest");
    let k = dir.join("vmlinuz");
    let i = dir.join("initramfs.cpio.gz");
    assert!(
        k.exists() && i.exists(),
        "the test guest is missing: run `make images-guest` (make test does)"
    );
    (k.display().to_string(), i.display().to_string())
}

fn console(c: &Cluster, name: &str) -> String {
    String::from_utf8_lossy(&c.nodes[0].cli(&["vm", "console", name]).stdout).to_string()
}

#[test]
fn a_vm_boots_with_a_replicated_volume_as_its_disk_and_keeps_its_data() {
    let (kernel, initrd) = guest();
    let c = Cluster::form(3);
    let name = replicated_volume(&c, 0, "disk", "64M", 3);
    let create = |vm: &str, vol: &str, extra: &[&str]| {
        let mut a = vec![
            "vm",
            "create",
            vm,
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--ram",
            "256",
            "--cmdline",
            "console=ttyS0 quiet",
            "--volume",
            vol,
        ];
        a.extend_from_slice(extra);
        c.nodes[1].cli(&a)
    };
    let o = create("db", &name, &["--wait", "90"]);
    assert!(o.status.success(), "create: {}", stderr(&o));
    // The guest finds an empty disk and writes a counter to it, through the replicas.
    wait_for(Duration::from_secs(90), || {
        console(&c, "db")
            .contains("STRATA-GUEST-DISK wrote=1")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no disk write: {}", console(&c, "db")));
    assert!(console(&c, "db").contains("STRATA-GUEST-DISK previous=none"));
    let v = json(&c.nodes[0].cli(&["volume", "show", &name, "--json"]));
    let vm = json(&c.nodes[0].cli(&["vm", "show", "db", "--json"]));
    assert_eq!(v["used_by"], vm["id"], "{v}");
    assert_eq!(
        v["attached_to"], vm["node"],
        "attached where the VM runs: {v}"
    );

    confined_qemu(&c, vm["id"].as_str().unwrap(), &name);

    // A second VM cannot take the same volume; the volume cannot be deleted under it.
    let o = create("db2", &name, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("already the disk of VM"),
        "{}",
        stderr(&o)
    );
    let o = c.nodes[0].cli(&["volume", "delete", &name]);
    assert!(stderr(&o).contains("delete the VM first"), "{}", stderr(&o));

    // Stop and start: the guest finds what it wrote.
    let o = c.nodes[0].cli(&["vm", "stop", "db", "--wait", "60"]);
    assert!(o.status.success(), "stop: {}", stderr(&o));
    let o = c.nodes[0].cli(&["vm", "start", "db", "--wait", "90"]);
    assert!(o.status.success(), "start: {}", stderr(&o));
    wait_for(Duration::from_secs(90), || {
        console(&c, "db")
            .contains("STRATA-GUEST-DISK previous=1")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the data did not survive: {}", console(&c, "db")));

    // Deleting the VM releases the volume, which can then be deleted.
    let o = c.nodes[0].cli(&["vm", "delete", "db", "--wait", "60"]);
    assert!(o.status.success(), "vm delete: {}", stderr(&o));
    let v = json(&c.nodes[0].cli(&["volume", "show", &name, "--json"]));
    assert!(v["used_by"].is_null() && v["attached_to"].is_null(), "{v}");
    let o = c.nodes[0].cli(&["volume", "delete", &name]);
    assert!(o.status.success(), "volume delete: {}", stderr(&o));

    // A VM with a single-replica volume is placed on the node that holds it.
    let o = c.nodes[0].cli(&["volume", "create", "one", "--size", "8M", "--replicas", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&c.nodes[0].cli(&["volume", "show", "one", "--json"]));
    let o = create("local", "one", &["--stopped"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let vm = json(&c.nodes[0].cli(&["vm", "show", "local", "--json"]));
    assert_eq!(vm["node"], v["replicas"][0]["node"], "{vm}");
    assert!(
        vm["placement"]
            .as_str()
            .unwrap()
            .contains("preferring nodes holding a replica"),
        "{vm}"
    );
}

/// The VM's QEMU runs as a user of its own with no capabilities, and on its node's
/// abstract NBD socket that user may open its VM's volume and nothing else; another user
/// may open nothing (review F7).
fn confined_qemu(c: &Cluster, vm_id: &str, volume: &str) {
    let (node, pid) = c
        .nodes
        .iter()
        .find_map(|n| {
            let p = std::fs::read_to_string(n.dir.join("vms").join(vm_id).join("qemu.pid")).ok()?;
            Some((n, p.trim().to_string()))
        })
        .expect("the VM's QEMU pid file");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let uid: u32 = field("Uid:").parse().unwrap();
    assert!(uid >= 0x7000_0000, "QEMU runs as {uid}: {status}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    let export = json(&c.nodes[0].cli(&["volume", "show", volume, "--json"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let socket = format!(
        "strata-nbd-{:08x}",
        crc32fast::hash(node.dir.join("nbd.sock").as_os_str().as_encoded_bytes())
    );
    let open = |as_uid: u32, export: &str| {
        let spec = format!(
            r#"json:{{"driver":"raw","file":{{"driver":"nbd","export":"{export}","server":{{"type":"unix","path":"{socket}","abstract":true}}}}}}"#
        );
        let reuid = format!("--reuid={as_uid}");
        let regid = format!("--regid={as_uid}");
        node.in_ns(&[
            "setpriv",
            &reuid,
            &regid,
            "--clear-groups",
            "timeout",
            "30",
            "qemu-io",
            "-r",
            &spec,
            "-c",
            "read 0 512",
        ])
    };
    let o = open(uid, &export);
    assert!(o.status.success(), "the VM's own user: {}", stderr(&o));
    let o = open(uid + 1, &export);
    assert!(!o.status.success(), "another user opened the volume");
    let o = open(uid, "vol-none");
    assert!(
        !o.status.success(),
        "the VM's user opened an export not its own"
    );
}

/// Unmounts a test tmpfs, even when the test fails.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_replica_disk_fails_the_write_clearly_and_loses_nothing_acknowledged() {
    let mut c = Cluster::form(3);
    // Node 2's regions live on a small filesystem of their own, mounted while it is
    // stopped (each node runs in its own mount namespace, copied when it starts).
    c.nodes[2].kill();
    let regions = data_dir_of(&c.nodes[2]).join("regions");
    std::fs::create_dir_all(&regions).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96m", "tmpfs"])
        .arg(&regions)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let _m = Mount(regions.clone());
    c.nodes[2].start();
    let name = replicated_volume(&c, 0, "full", "64M", 3);
    let uri = export(&c, 0, &name);
    let (ok, out) = qemu_io(&uri, &["write -P 0x61 0 16M", "flush"]);
    assert!(ok, "{out}");

    // Fill node 2's filesystem, leaving far less than the next write needs.
    let junk = regions.join("junk");
    let st = std::process::Command::new("fallocate")
        .args(["-l", "72M"])
        .arg(&junk)
        .status()
        .unwrap();
    assert!(st.success());
    let (ok, out) = qemu_io(&uri, &["write -P 0x62 20M 32M"]);
    assert!(!ok, "a write with a full replica disk succeeded: {out}");
    assert!(out.contains("No space left on device"), "{out}");
    // Everything acknowledged before is intact, and the node is still up.
    let (ok, out) = qemu_io(&uri, &["read -P 0x61 0 16M"]);
    assert!(ok, "acknowledged data after the failed write: {out}");
    assert!(c.nodes[2].status().is_some(), "node 2 went down");
    let log = c.nodes[0].log();
    assert!(
        log.contains("data disk is full") || log.contains("No space"),
        "the cause was not logged"
    );

    // Space freed: writes work again, on every replica.
    std::fs::remove_file(&junk).unwrap();
    let (ok, out) = qemu_io(
        &uri,
        &["write -P 0x63 20M 32M", "flush", "read -P 0x63 20M 32M"],
    );
    assert!(ok, "{out}");
    let v = json(&c.nodes[0].cli(&["volume", "show", &name, "--json"]));
    assert_eq!(v["redundancy"], "3 of 3 replicas in sync", "{v}");
}

#[test]
fn a_volume_grows_on_every_replica_and_never_shrinks() {
    let c = Cluster::form(3);
    let name = replicated_volume(&c, 0, "grow", "64M", 3);
    let uri = export(&c, 0, &name);
    let (ok, out) = qemu_io(&uri, &["write -P 0x71 0 1M"]);
    assert!(ok, "{out}");
    let o = c.nodes[1].cli(&["volume", "grow", &name, "--size", "128M"]);
    assert!(o.status.success(), "grow: {}", stderr(&o));
    // A new connection sees the new size once every replica has grown.
    wait_for(Duration::from_secs(30), || {
        let o = std::process::Command::new("qemu-img")
            .args(["info", "--output=json", &uri])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        (v["virtual-size"] == 128u64 << 20).then_some(())
    })
    .expect("the export did not grow");
    let (ok, out) = qemu_io(
        &uri,
        &[
            "write -P 0x72 100M 1M",
            "read -P 0x72 100M 1M",
            "read -P 0x71 0 1M",
        ],
    );
    assert!(ok, "{out}");
    let o = c.nodes[0].cli(&["volume", "grow", &name, "--size", "32M"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("can grow but not shrink"),
        "{}",
        stderr(&o)
    );
    let v = json(&c.nodes[0].cli(&["volume", "show", &name, "--json"]));
    assert_eq!(v["size"], 128u64 << 20, "{v}");
}
