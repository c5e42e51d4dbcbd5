//! A replica whose node stays down longer than the grace is rebuilt on another node: on a
//! 4-node namespace cluster with a 3-replica volume written through NBD, one replica node
//! is killed for good; the control plane moves the replica to the spare node, the writer
//! copies the volume to it, redundancy comes back to 3 of 3, and the new copy holds the
//! data (read on that node after it takes the volume over). A second volume, attached
//! nowhere and with a snapshot, is rebuilt too (by the node of its first in-sync replica),
//! snapshot layer included.

mod common;

use std::time::Duration;

use common::{export, json, qemu_io, replicated_volume, wait_for, Cluster};

#[test]
fn a_replica_lost_for_longer_than_the_grace_is_rebuilt_elsewhere() {
    // Every node of this test's cluster uses a 3 s grace.
    std::env::set_var("STRATA_REPLICA_GRACE_S", "3");
    let mut c = Cluster::form(4);
    let ids: Vec<String> = c.node_ids();
    let name = replicated_volume(&c, 0, "r", "256M", 3);
    let replicas: Vec<String> = json(&c.nodes[0].cli(&["volume", "show", &name, "--json"]))
        ["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"].as_str().unwrap().to_string())
        .collect();
    let idx = |id: &str| ids.iter().position(|x| x == id).unwrap();
    let writer = idx(&replicas[0]);

    // The second volume: written, snapshotted, written again, then left attached nowhere.
    let idle = replicated_volume(&c, 0, "idle", "128M", 3);
    let idle_replicas: Vec<String> = json(&c.nodes[0].cli(&["volume", "show", &idle, "--json"]))
        ["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"].as_str().unwrap().to_string())
        .collect();
    let idle_uri = export(&c, idx(&idle_replicas[0]), &idle);
    let (ok, out) = qemu_io(&idle_uri, &["write -P 0x61 0 4M", "flush"]);
    assert!(ok, "{out}");
    assert!(c.nodes[0]
        .cli(&["volume", "snapshot", &idle, "s"])
        .status
        .success());
    let (ok, out) = qemu_io(&idle_uri, &["write -P 0x62 0 1M", "flush"]);
    assert!(ok, "{out}");
    assert!(c.nodes[0]
        .cli(&["volume", "detach", &idle])
        .status
        .success());

    // The victim holds a replica of both volumes (two 3-of-4 sets share two nodes).
    let victim = (0..4)
        .find(|i| *i != writer && replicas.contains(&ids[*i]) && idle_replicas.contains(&ids[*i]))
        .unwrap();
    let spare = (0..4).find(|i| !replicas.contains(&ids[*i])).unwrap();
    let idle_spare = (0..4).find(|i| !idle_replicas.contains(&ids[*i])).unwrap();

    let uri = export(&c, writer, &name);
    let (ok, out) = qemu_io(
        &uri,
        &["write -P 0x33 0 8M", "write -P 0x44 200M 1M", "flush"],
    );
    assert!(ok, "{out}");

    // The victim's node dies for good.
    c.nodes[victim].kill();
    let via = (0..4).find(|i| *i != victim && *i != writer).unwrap();
    let v = wait_for(Duration::from_secs(90), || {
        let v = json(&c.nodes[via].cli(&["volume", "show", &name, "--json"]));
        let nodes: Vec<&str> = v["replicas"]
            .as_array()?
            .iter()
            .filter_map(|r| r["node"].as_str())
            .collect();
        (nodes.contains(&ids[spare].as_str())
            && !nodes.contains(&ids[victim].as_str())
            && v["redundancy"] == "3 of 3 replicas in sync")
            .then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "not rebuilt: {}",
            json(&c.nodes[via].cli(&["volume", "show", &name, "--json"]))
        )
    });
    assert!(
        v["placement"].as_str().unwrap().contains("re-replicated"),
        "{v}"
    );
    let events =
        String::from_utf8_lossy(&c.nodes[via].cli(&["events", "--limit", "50"]).stdout).to_string();
    assert!(events.contains("replica rebuilt elsewhere"), "{events}");
    // Writes went on meanwhile.
    let (ok, out) = qemu_io(
        &uri,
        &["read -P 0x33 0 8M", "write -P 0x55 100M 1M", "flush"],
    );
    assert!(ok, "{out}");

    // The spare takes the volume over and reads its own new copy first.
    let uri2 = export(&c, spare, &name);
    let (ok, out) = qemu_io(
        &uri2,
        &[
            "read -P 0x33 0 8M",
            "read -P 0x44 200M 1M",
            "read -P 0x55 100M 1M",
        ],
    );
    assert!(ok, "read on the rebuilt replica's node: {out}");

    // The volume attached nowhere was rebuilt too, by one of its in-sync replicas' nodes.
    wait_for(Duration::from_secs(90), || {
        let v = json(&c.nodes[via].cli(&["volume", "show", &idle, "--json"]));
        let nodes: Vec<&str> = v["replicas"]
            .as_array()?
            .iter()
            .filter_map(|r| r["node"].as_str())
            .collect();
        (nodes.contains(&ids[idle_spare].as_str()) && v["redundancy"] == "3 of 3 replicas in sync")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "unattached volume not rebuilt: {}",
            json(&c.nodes[via].cli(&["volume", "show", &idle, "--json"]))
        )
    });
    let events =
        String::from_utf8_lossy(&c.nodes[via].cli(&["events", "--limit", "80"]).stdout).to_string();
    assert!(
        events.contains("rebuilt while attached nowhere"),
        "{events}"
    );
    // Its new copy holds the volume and the snapshot: a clone on that node reads the
    // snapshot from its local replica first, and the volume reads back there too.
    assert!(c.nodes[idle_spare]
        .cli(&["volume", "clone", &format!("{idle}@s"), "idle-clone"])
        .status
        .success());
    let clone_uri = export(&c, idle_spare, "idle-clone");
    let (ok, out) = qemu_io(&clone_uri, &["read -P 0x61 0 4M"]);
    assert!(ok, "the snapshot on the rebuilt replica: {out}");
    let idle_uri = export(&c, idle_spare, &idle);
    let (ok, out) = qemu_io(&idle_uri, &["read -P 0x62 0 1M", "read -P 0x61 1M 3M"]);
    assert!(ok, "the volume on the rebuilt replica: {out}");
}
