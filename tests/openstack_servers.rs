//! Nova servers as python-openstackclient drives them, on a 3-node cluster: the guest's
//! kernel and initramfs uploaded as aki/ari images and a disk image naming them, a tenant
//! network, a key pair and a security group; `server create --wait` boots the guest
//! (TCG here) to ACTIVE from a copy-on-write clone of the image, its console log shows
//! the guest's boot markers, stop/start/reboot work, a floating IP shows in its
//! addresses; another project gets 404, a reader 403; `server delete --wait` removes the
//! server, its port and its boot disk. Then a cloud image with its own bootloader
//! ([`tiny`]): booted through the firmware with a config drive, logged into over SSH
//! through a floating IP, a volume and a port hot-plugged and unplugged.

mod common;
#[path = "openstack_servers/tiny.rs"]
mod tiny;

use std::path::PathBuf;
use std::time::Duration;

use common::{json, password_auth, stderr, wait_for, Cluster, Os};

fn guest() -> (String, String) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/out/guest");
    let k = dir.join("vmlinuz");
    let i = dir.join("initramfs.cpio.gz");
    assert!(k.exists() && i.exists(), "run `make images-guest` first");
    (k.display().to_string(), i.display().to_string())
}

#[test]
fn the_openstack_client_boots_manages_and_deletes_servers() {
    let c = Cluster::form(3);
    let os = Os::new(&c);
    let pw = common::admin_password(&c);
    let admin = password_auth("admin", &pw, "admin");
    os.json(&admin, &["project", "create", "demo", "-f", "json"]);
    os.json(&admin, &["project", "create", "other", "-f", "json"]);
    for (user, project, role) in [
        ("demo", "demo", "member"),
        ("peek", "demo", "reader"),
        ("eve", "other", "member"),
    ] {
        os.add_user(&admin, project, user, "pw-secret", role);
    }
    let demo = password_auth("demo", "pw-secret", "demo");
    let peek = password_auth("peek", "pw-secret", "demo");
    let eve = password_auth("eve", "pw-secret", "other");
    let j = |auth: &[&str], args: &[&str]| os.json(auth, args);

    // The start of the workflow: a token, the catalog, a flavor.
    let t = j(&demo, &["token", "issue", "-f", "json"]);
    assert!(t["id"].as_str().is_some_and(|x| !x.is_empty()), "{t}");
    let cat = j(&demo, &["catalog", "list", "-f", "json"]);
    for svc in ["identity", "compute", "image", "volumev3", "network"] {
        assert!(cat.to_string().contains(svc), "{svc} missing: {cat}");
    }
    j(
        &admin,
        &[
            "flavor", "create", "--vcpus", "1", "--ram", "256", "--disk", "1", "w1.small", "-f",
            "json",
        ],
    );
    assert!(j(&demo, &["flavor", "list", "-f", "json"])
        .to_string()
        .contains("w1.small"));

    // Images: kernel, initramfs, and a disk image that names them.
    let (kernel, initrd) = guest();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let k = j(
        &demo,
        &[
            "image",
            "create",
            "--file",
            &kernel,
            "--disk-format",
            "aki",
            "--container-format",
            "aki",
            "guest-kernel",
            "-f",
            "json",
        ],
    );
    let r = j(
        &demo,
        &[
            "image",
            "create",
            "--file",
            &initrd,
            "--disk-format",
            "ari",
            "--container-format",
            "ari",
            "guest-initrd",
            "-f",
            "json",
        ],
    );
    let kid = k["id"].as_str().unwrap();
    let rid = r["id"].as_str().unwrap();
    let img = j(
        &demo,
        &[
            "image",
            "create",
            "--file",
            disk.to_str().unwrap(),
            "--disk-format",
            "ami",
            "--container-format",
            "ami",
            "--property",
            &format!("kernel_id={kid}"),
            "--property",
            &format!("ramdisk_id={rid}"),
            "--property",
            "os_command_line=console=ttyS0 loglevel=6",
            "guest",
            "-f",
            "json",
        ],
    );
    let image_id = img["id"].as_str().unwrap().to_string();

    // Network, key pair, security group.
    j(&demo, &["network", "create", "net1", "-f", "json"]);
    j(
        &demo,
        &[
            "subnet",
            "create",
            "--network",
            "net1",
            "--subnet-range",
            "10.40.0.0/24",
            "sub1",
            "-f",
            "json",
        ],
    );
    j(&demo, &["security", "group", "create", "web", "-f", "json"]);
    j(
        &demo,
        &[
            "security",
            "group",
            "rule",
            "create",
            "--protocol",
            "tcp",
            "--dst-port",
            "22",
            "web",
            "-f",
            "json",
        ],
    );
    let key = dir.path().join("id.pub");
    std::fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJ test@strata",
    )
    .unwrap();
    j(
        &demo,
        &[
            "keypair",
            "create",
            "--public-key",
            key.to_str().unwrap(),
            "k1",
            "-f",
            "json",
        ],
    );

    // Bad input creates nothing: an unknown flavor, an image without a kernel.
    let o = os.run(
        &demo,
        &[
            "server",
            "create",
            "--flavor",
            "m9.huge",
            "--image",
            "guest",
            "--network",
            "net1",
            "bad1",
        ],
    );
    assert!(!o.status.success(), "an unknown flavor was accepted");
    let o = os.run(
        &demo,
        &[
            "server",
            "create",
            "--flavor",
            "m1.tiny",
            "--image",
            "guest-kernel",
            "--network",
            "net1",
            "bad2",
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("kernel_id"),
        "{}",
        stderr(&o)
    );
    // A reader cannot create servers.
    let o = os.run(
        &peek,
        &[
            "server",
            "create",
            "--flavor",
            "m1.tiny",
            "--image",
            "guest",
            "--network",
            "net1",
            "bad3",
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("403"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        j(&demo, &["server", "list", "-f", "json"])
            .as_array()
            .map(|a| a.len()),
        Some(0)
    );

    let s = j(
        &demo,
        &[
            "server",
            "create",
            "--flavor",
            "m1.tiny",
            "--image",
            "guest",
            "--network",
            "net1",
            "--key-name",
            "k1",
            "--security-group",
            "web",
            "--property",
            "role=web",
            "--wait",
            "s1",
            "-f",
            "json",
        ],
    );
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let sid = s["id"].as_str().unwrap().to_string();
    let shown = j(&demo, &["server", "show", "s1", "-f", "json"]);
    assert!(
        shown["addresses"].to_string().contains("10.40.0."),
        "{shown}"
    );
    assert_eq!(shown["key_name"], "k1", "{shown}");
    assert!(
        shown["security_groups"].to_string().contains("web"),
        "{shown}"
    );
    assert!(shown["properties"].to_string().contains("web"), "{shown}");
    // Metadata: set and unset through the metadata calls.
    assert!(os
        .run(&demo, &["server", "set", "--property", "tier=front", "s1"])
        .status
        .success());
    assert!(os
        .run(&demo, &["server", "unset", "--property", "role", "s1"])
        .status
        .success());
    let shown = j(&demo, &["server", "show", "s1", "-f", "json"]);
    let props = shown["properties"].to_string();
    assert!(props.contains("tier") && !props.contains("role"), "{shown}");
    let listed = j(&demo, &["server", "list", "-f", "json"]);
    assert_eq!(listed[0]["Name"], "s1", "{listed}");
    assert_eq!(listed[0]["Image"], "guest", "{listed}");
    assert_eq!(listed[0]["Flavor"], "m1.tiny", "{listed}");

    // Its disk is a clone of the image, on the cluster's replicated storage.
    let vols = json(&c.nodes[0].cli(&["volume", "list", "--json"]));
    let boot = vols
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["used_by"] == sid.as_str())
        .unwrap_or_else(|| panic!("no boot volume: {vols}"))
        .clone();
    assert!(boot["parent"].is_object(), "{boot}");
    assert_eq!(boot["size"], 1u64 << 30, "{boot}");

    let log = wait_for(Duration::from_secs(120), || {
        let o = os.run(&demo, &["console", "log", "show", "s1"]);
        let t = String::from_utf8_lossy(&o.stdout).to_string();
        t.contains("STRATA-GUEST-DISK wrote=").then_some(t)
    })
    .expect("the guest's boot markers never showed in its console log");
    assert!(log.contains("STRATA-GUEST-USERSPACE"), "{log}");
    assert!(log.contains("STRATA-GUEST-NET ip=10.40.0."), "{log}");

    // Another project's member sees nothing; a reader cannot act.
    let o = os.run(&eve, &["server", "show", &sid]);
    assert!(
        !o.status.success() && stderr(&o).contains("No Server found"),
        "{}",
        stderr(&o)
    );
    assert!(!j(&eve, &["server", "list", "-f", "json"])
        .to_string()
        .contains(&sid));
    let o = os.run(&eve, &["server", "delete", &sid]);
    assert!(!o.status.success(), "another project deleted the server");
    let o = os.run(&peek, &["server", "stop", "s1"]);
    assert!(
        !o.status.success() && stderr(&o).contains("403"),
        "{}",
        stderr(&o)
    );

    // Power: stop, start, reboot.
    let status = |want: &str| {
        wait_for(Duration::from_secs(90), || {
            let v = j(&demo, &["server", "show", "s1", "-f", "json"]);
            (v["status"] == want).then_some(v)
        })
        .unwrap_or_else(|| panic!("s1 never became {want}"))
    };
    assert!(os.run(&demo, &["server", "stop", "s1"]).status.success());
    status("SHUTOFF");
    let o = os.run(&demo, &["server", "stop", "s1"]);
    assert!(
        !o.status.success() && stderr(&o).contains("409"),
        "{}",
        stderr(&o)
    );
    assert!(os.run(&demo, &["server", "start", "s1"]).status.success());
    status("ACTIVE");
    // Rebooted once the guest is up (the console log starts afresh with each start).
    let up = wait_for(Duration::from_secs(120), || {
        let o = os.run(&demo, &["console", "log", "show", "s1"]);
        String::from_utf8_lossy(&o.stdout)
            .contains("STRATA-GUEST-DISK wrote=")
            .then_some(())
    });
    assert!(up.is_some(), "the guest did not boot after a start");
    assert!(os.run(&demo, &["server", "reboot", "s1"]).status.success());
    let rebooted = wait_for(Duration::from_secs(120), || {
        let o = os.run(&demo, &["console", "log", "show", "s1"]);
        let t = String::from_utf8_lossy(&o.stdout).to_string();
        (t.matches("STRATA-GUEST-DISK wrote=").count() >= 2).then_some(t)
    });
    assert!(rebooted.is_some(), "no second boot after a reboot");

    // A floating IP through a router, shown in the server's addresses.
    j(
        &admin,
        &["network", "create", "--external", "public", "-f", "json"],
    );
    j(
        &admin,
        &[
            "subnet",
            "create",
            "--network",
            "public",
            "--subnet-range",
            "203.0.113.0/24",
            "--no-dhcp",
            "pub",
            "-f",
            "json",
        ],
    );
    j(&demo, &["router", "create", "r1", "-f", "json"]);
    assert!(os
        .run(
            &demo,
            &["router", "set", "--external-gateway", "public", "r1"]
        )
        .status
        .success());
    assert!(os
        .run(&demo, &["router", "add", "subnet", "r1", "sub1"])
        .status
        .success());
    let fip = j(&demo, &["floating", "ip", "create", "public", "-f", "json"]);
    let fip = fip["floating_ip_address"].as_str().unwrap().to_string();
    let o = os.run(&demo, &["server", "add", "floating", "ip", "s1", &fip]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = j(&demo, &["server", "show", "s1", "-f", "json"]);
    assert!(shown["addresses"].to_string().contains(&fip), "{shown}");

    // A volume: created, attached (the guest's kernel sees a new disk), listed with its
    // attachment, detached, snapshotted, cloned, deleted.
    let vol = j(
        &demo,
        &["volume", "create", "--size", "1", "data1", "-f", "json"],
    );
    let vol_id = vol["id"].as_str().unwrap().to_string();
    let vstatus = |name: &str, want: &str| {
        wait_for(Duration::from_secs(60), || {
            let v = j(&demo, &["volume", "show", name, "-f", "json"]);
            (v["status"] == want).then_some(v)
        })
        .unwrap_or_else(|| panic!("volume {name} never became {want}"))
    };
    vstatus("data1", "available");
    let o = os.run(&demo, &["server", "add", "volume", "s1", "data1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = vstatus("data1", "in-use");
    assert!(v["attachments"].to_string().contains(&sid), "{v}");
    let listed = j(&demo, &["volume", "list", "-f", "json"]);
    assert!(
        listed.to_string().contains("/dev/vdb"),
        "the attachment is not listed: {listed}"
    );
    let seen = wait_for(Duration::from_secs(60), || {
        let o = os.run(&demo, &["console", "log", "show", "s1"]);
        String::from_utf8_lossy(&o.stdout)
            .contains("[vdb]")
            .then_some(())
    });
    assert!(seen.is_some(), "the guest never saw the hot-plugged disk");
    let att = j(
        &demo,
        &[
            "--os-volume-api-version",
            "3.27",
            "volume",
            "attachment",
            "list",
            "-f",
            "json",
        ],
    );
    assert!(att.to_string().contains(&vol_id), "{att}");
    // Another project cannot see it; an attached volume cannot be deleted.
    assert!(!os.run(&eve, &["volume", "show", &vol_id]).status.success());
    assert!(!os
        .run(&demo, &["volume", "delete", "data1"])
        .status
        .success());
    let o = os.run(&demo, &["server", "remove", "volume", "s1", "data1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    vstatus("data1", "available");
    let snap = j(
        &demo,
        &[
            "volume", "snapshot", "create", "--volume", "data1", "snap1", "-f", "json",
        ],
    );
    assert_eq!(snap["status"], "available", "{snap}");
    let v2 = j(
        &demo,
        &[
            "volume",
            "create",
            "--snapshot",
            "snap1",
            "data2",
            "-f",
            "json",
        ],
    );
    assert_eq!(v2["size"], 1, "{v2}");
    vstatus("data2", "available");
    assert!(os
        .run(&demo, &["volume", "delete", "data2"])
        .status
        .success());
    assert!(os
        .run(&demo, &["volume", "snapshot", "delete", "snap1"])
        .status
        .success());
    let gone = wait_for(Duration::from_secs(30), || {
        os.run(&demo, &["volume", "delete", "data1"])
            .status
            .success()
            .then_some(())
    });
    assert!(gone.is_some(), "the volume could not be deleted");

    // Server groups: placement keeps anti-affinity members apart and affinity members
    // together (checked as the admin sees hosts, right after the creates).
    let host_of = |id: &str| {
        let v = j(&admin, &["server", "show", id, "-f", "json"]);
        v["OS-EXT-SRV-ATTR:host"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut extra = Vec::new();
    for (policy, name) in [("anti-affinity", "apart"), ("affinity", "together")] {
        let g = j(
            &demo,
            &[
                "server", "group", "create", "--policy", policy, name, "-f", "json",
            ],
        );
        let gid = g["id"].as_str().unwrap().to_string();
        let mut hosts = Vec::new();
        for i in 0..2 {
            let v = j(
                &demo,
                &[
                    "server",
                    "create",
                    "--flavor",
                    "m1.tiny",
                    "--image",
                    "guest",
                    "--network",
                    "net1",
                    "--hint",
                    &format!("group={gid}"),
                    &format!("{name}{i}"),
                    "-f",
                    "json",
                ],
            );
            let id = v["id"].as_str().unwrap().to_string();
            hosts.push(host_of(&id));
            extra.push(id);
        }
        assert!(!hosts[0].is_empty(), "{hosts:?}");
        if policy == "affinity" {
            assert_eq!(hosts[0], hosts[1], "affinity members apart");
        } else {
            assert_ne!(hosts[0], hosts[1], "anti-affinity members together");
        }
        let shown = j(&demo, &["server", "group", "show", name, "-f", "json"]);
        assert_eq!(
            shown["members"]
                .as_array()
                .map(|a| a.len())
                .unwrap_or_else(|| {
                    shown["members"]
                        .as_str()
                        .map(|s| s.split(',').count())
                        .unwrap_or(0)
                }),
            2,
            "{shown}"
        );
    }
    for id in &extra {
        assert!(os
            .run(&demo, &["server", "delete", "--wait", id])
            .status
            .success());
    }
    for name in ["apart", "together"] {
        assert!(os
            .run(&demo, &["server", "group", "delete", name])
            .status
            .success());
    }

    // A cloud image with its own bootloader (strata-tiny), over SSH from outside.
    tiny::cloud_image_over_ssh(&c, &os, &demo, dir.path());

    // The image is deleted while the server's disk still reads from it: its data stays
    // until the server goes, then goes too. The server takes its port and boot disk.
    let o = os.run(&demo, &["image", "delete", "guest"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let image_vol = format!("image-{image_id}");
    let vols = json(&c.nodes[0].cli(&["volume", "list", "--json"]));
    assert!(
        vols.to_string().contains(&image_vol),
        "the data of an image in use went: {vols}"
    );
    let o = os.run(&demo, &["server", "delete", "--wait", "s1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = os.run(&demo, &["server", "show", &sid]);
    assert!(!o.status.success());
    let gone = wait_for(Duration::from_secs(60), || {
        let vols = json(&c.nodes[0].cli(&["volume", "list", "--json"]));
        let t = vols.to_string();
        (!t.contains(&sid) && !t.contains(&image_vol)).then_some(())
    });
    assert!(
        gone.is_some(),
        "the boot disk or the deleted image's data outlived the server: {}",
        json(&c.nodes[0].cli(&["volume", "list", "--json"]))
    );
    let ports = j(&demo, &["port", "list", "--device-id", &sid, "-f", "json"]);
    assert_eq!(ports.as_array().map(|a| a.len()), Some(0), "{ports}");
    for name in ["guest-kernel", "guest-initrd"] {
        let o = os.run(&demo, &["image", "delete", name]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // And the rest of what the workflow made, each deletion taking.
    for args in [
        vec!["floating", "ip", "delete", fip.as_str()],
        vec!["router", "remove", "subnet", "r1", "sub1"],
        vec!["router", "delete", "r1"],
        vec!["subnet", "delete", "sub1"],
        vec!["network", "delete", "net1"],
        vec!["security", "group", "delete", "web"],
        vec!["keypair", "delete", "k1"],
    ] {
        let o = os.run(&demo, &args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    assert!(os
        .run(&admin, &["flavor", "delete", "w1.small"])
        .status
        .success());
    assert!(os
        .run(&admin, &["subnet", "delete", "pub"])
        .status
        .success());
    assert!(os
        .run(&admin, &["network", "delete", "public"])
        .status
        .success());
    for (what, args) in [
        ("networks", vec!["network", "list", "-f", "json"]),
        ("routers", vec!["router", "list", "-f", "json"]),
        ("floating IPs", vec!["floating", "ip", "list", "-f", "json"]),
        ("images", vec!["image", "list", "-f", "json"]),
        ("volumes", vec!["volume", "list", "-f", "json"]),
        ("servers", vec!["server", "list", "-f", "json"]),
    ] {
        let v = j(&demo, &args);
        assert_eq!(v.as_array().map(|a| a.len()), Some(0), "{what} left: {v}");
    }
}
