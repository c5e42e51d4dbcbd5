//! Removing a node for good on a 4-node namespace cluster: refused while the node runs,
//! for the node answering, and while it hosts a VM; a drain of the powered-off node
//! evacuates the VM (it boots on another node at once); the console's Remove then takes
//! the node out of the nodes list and the Raft membership, the replica it held is rebuilt
//! on the fourth node with the volume's data, and its certificate is refused: started
//! again, the other nodes do not take it back.

mod common;

use std::time::Duration;

use common::console::Console;
use common::{export, json, qemu_io, replica_states, replicated_volume, stderr, wait_for, Cluster};

fn guest() -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("images/out/guest");
    let k = dir.join("vmlinuz");
    let i = dir.join("initramfs.cpio.gz");
    assert!(k.exists() && i.exists(), "run `make images-guest` first");
    (k.display().to_string(), i.display().to_string())
}

fn ids_in(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().or_else(|| x["id"].as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_powered_off_node_is_removed_for_good() {
    let mut c = Cluster::form(4);
    let ids = c.node_ids();
    let name = replicated_volume(&c, 0, "keep", "16M", 3);
    let uri = export(&c, 0, &name);
    let (ok, out) = qemu_io(&uri, &["write -P 0x3c 0 4M", "flush"]);
    assert!(ok, "{out}");
    let v = json(&c.nodes[0].cli(&["volume", "show", &name, "--json"]));
    let holders: Vec<String> = v["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .filter_map(|r| r["node"].as_str().map(str::to_string))
        .collect();
    // A VM goes to a node that holds a replica and is not node 0 (the volume's writer):
    // the others are put in maintenance. That node is the one removed.
    let s = Console::sign_in(&c);
    for (i, id) in ids.iter().enumerate() {
        if i == 0 || !holders.contains(id) {
            let r = s.post_form(&format!("/nodes/{id}/maintenance"), &[("reason", "test")]);
            assert!(r.starts_with("HTTP/1.1 303"), "{r}");
        }
    }
    let (kernel, initrd) = guest();
    let o = c.nodes[0].cli(&[
        "vm",
        "create",
        "web",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--ram",
        "128",
        "--cmdline",
        "console=ttyS0 quiet",
        "--wait",
        "120",
    ]);
    assert!(o.status.success(), "create: {}", stderr(&o));
    let vm = json(&c.nodes[0].cli(&["vm", "show", "web", "--json"]));
    let victim = vm["node"].as_str().expect("VM's node").to_string();
    assert!(victim != ids[0] && holders.contains(&victim), "{vm}");
    let vi = c.index_of(&victim).expect("victim's index");

    let refused = |c: &Cluster, via: usize, node: &str, want: &str| {
        let o = c.nodes[via].cli(&["node", "remove", node]);
        assert!(!o.status.success(), "removing {node} was accepted");
        let e = stderr(&o);
        assert!(e.contains(want), "expected {want:?} in: {e}");
    };
    refused(&c, 0, &victim, "is running");
    refused(&c, 0, &ids[0], "the node answering this request");
    refused(&c, 0, "no-such-node", "no node");

    // The console offers "Remove" only for a node that is off.
    let remove = format!("/nodes/{victim}/remove");
    let page = s.curl(&[&s.url("/nodes")]);
    assert!(page.contains(&victim) && !page.contains(&remove), "{page}");
    drop(s);
    c.nodes[vi].kill();
    let s = Console::sign_in(&c);
    wait_for(Duration::from_secs(30), || {
        s.curl(&[&s.url("/nodes")]).contains(&remove).then_some(())
    })
    .unwrap_or_else(|| panic!("no Remove action: {}", s.curl(&[&s.url("/nodes")])));

    // Off, but hosting a VM: refused until a drain evacuates it.
    refused(&c, 0, &victim, "still hosts 1 VM(s): web");
    let o = c.nodes[0].cli(&["node", "drain", &victim]);
    assert!(o.status.success(), "drain: {}", stderr(&o));
    wait_for(Duration::from_secs(180), || {
        let v = json(&c.nodes[0].cli(&["vm", "show", "web", "--json"]));
        (v["node"].as_str() != Some(victim.as_str()) && v["state"] == "ACTIVE").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the VM was not evacuated: {}",
            json(&c.nodes[0].cli(&["vm", "show", "web", "--json"]))
        )
    });

    let r = s.post(&remove);
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    let page = s.curl(&[&s.url("/nodes")]);
    assert!(page.contains("is removed from the cluster"), "{page}");
    assert!(!page.contains(&format!("/nodes/{victim}")), "{page}");
    // Asked on another node (the removal was recorded through Raft).
    let other = if vi == 1 { 2 } else { 1 };
    refused(&c, other, &victim, "was removed from the cluster");

    // Out of the nodes list and, soon, of the Raft membership.
    let others: Vec<usize> = (0..4).filter(|i| *i != vi).collect();
    for i in &others {
        let list = json(&c.nodes[*i].cli(&["node", "list", "--json"]));
        let listed = ids_in(&list);
        assert_eq!(listed.len(), 3, "node {i} lists: {list}");
        assert!(!listed.contains(&victim), "node {i} still lists it: {list}");
    }
    wait_for(Duration::from_secs(30), || {
        let s = c.nodes[0].status()?;
        let members = [ids_in(&s["voters"]), ids_in(&s["learners"])].concat();
        (!members.is_empty() && !members.contains(&victim)).then_some(())
    })
    .unwrap_or_else(|| panic!("still in Raft: {:?}", c.nodes[0].status()));

    // Its replica is rebuilt on the fourth node, with the data.
    wait_for(Duration::from_secs(90), || {
        let v = json(&c.nodes[0].cli(&["volume", "show", &name, "--json"]));
        let now: Vec<String> = v["replicas"]
            .as_array()?
            .iter()
            .filter_map(|r| r["node"].as_str().map(str::to_string))
            .collect();
        let states = replica_states(&c, 0, &name);
        (now.len() == 3 && !now.contains(&victim) && states.iter().all(|s| s == "insync"))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "replica not rebuilt: {}",
            json(&c.nodes[0].cli(&["volume", "show", &name, "--json"]))
        )
    });
    let (ok, out) = qemu_io(&uri, &["read -P 0x3c 0 4M"]);
    assert!(ok, "{out}");
    let events =
        String::from_utf8_lossy(&c.nodes[0].cli(&["events", "--limit", "200"]).stdout).to_string();
    assert!(
        events.contains(&format!("node {victim}")) && events.contains("removed from the cluster"),
        "{events}"
    );
    assert!(events.contains("evacuated (its node is down)"), "{events}");

    // Started again, it is refused by the others and stays out.
    c.nodes[vi].start();
    wait_for(Duration::from_secs(30), || {
        others
            .iter()
            .any(|i| {
                c.nodes[*i]
                    .log()
                    .contains("was removed from the cluster; its certificate is refused")
            })
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no node refused the removed one:\n{}", c.nodes[0].log()));
    std::thread::sleep(Duration::from_secs(3));
    let s = c.nodes[0].status().expect("status");
    assert!(!ids_in(&s["nodes"]).contains(&victim), "{s}");
    let members = [ids_in(&s["voters"]), ids_in(&s["learners"])].concat();
    assert!(!members.contains(&victim), "back in Raft: {s}");
    // The cluster still works: a new volume is placed on the three remaining nodes.
    let o = c.nodes[other].cli(&["volume", "create", "after", "--size", "1M", "--wait", "30"]);
    assert!(o.status.success(), "create after removal: {}", stderr(&o));
    let v = json(&c.nodes[other].cli(&["volume", "show", "after", "--json"]));
    assert!(
        !v.to_string().contains(&victim),
        "placed on the removed node: {v}"
    );
}
