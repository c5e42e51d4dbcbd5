//! Glance v2 as python-openstackclient drives it, on a 3-node cluster: an image created
//! from a file is stored in a replicated volume (the upload streamed through the node that
//! received it), downloaded byte for byte, carries its MD5 and SHA-512, takes properties
//! and tags, is private to its project, and its data goes with it.

mod common;

use common::{json, password_auth, stderr, Cluster, Os};
use sha2::Digest;

fn md5_hex(b: &[u8]) -> String {
    hex::encode(md5::Md5::digest(b))
}

#[test]
fn images_are_uploaded_into_replicated_volumes_and_read_back() {
    let c = Cluster::form(3);
    let os = Os::new(&c);
    let pw = common::admin_password(&c);
    let admin = password_auth("admin", &pw, "admin");
    let dir = tempfile::tempdir().unwrap();

    // Not a whole number of sectors, and bigger than one write chunk.
    let data: Vec<u8> = (0..9_000_123u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = dir.path().join("disk.raw");
    std::fs::write(&file, &data).unwrap();
    let img = os.json(
        &admin,
        &[
            "image",
            "create",
            "--file",
            file.to_str().unwrap(),
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--property",
            "os_distro=strata",
            "--tag",
            "t1",
            "disk1",
            "-f",
            "json",
        ],
    );
    let id = img["id"].as_str().expect("image id").to_string();
    let shown = os.json(&admin, &["image", "show", "disk1", "-f", "json"]);
    assert_eq!(shown["status"], "active", "{shown}");
    assert_eq!(shown["size"], data.len() as u64, "{shown}");
    assert_eq!(shown["checksum"], md5_hex(&data), "{shown}");
    let sha = hex::encode(sha2::Sha512::digest(&data));
    assert_eq!(shown["properties"]["os_hash_value"], sha, "{shown}");
    assert_eq!(shown["properties"]["os_distro"], "strata", "{shown}");
    assert!(shown["tags"].to_string().contains("t1"), "{shown}");

    // Its data is a volume with a replica on every node, frozen by a snapshot.
    let vols = json(&c.nodes[1].cli(&["volume", "list", "--json"]));
    let vol = vols
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == format!("image-{id}"))
        .unwrap_or_else(|| panic!("no volume for the image: {vols}"))
        .clone();
    assert_eq!(
        vol["replicas"].as_array().map(|r| r.len()),
        Some(3),
        "{vol}"
    );
    assert_eq!(
        vol["snapshots"].as_array().map(|r| r.len()),
        Some(1),
        "{vol}"
    );

    // Downloaded byte for byte.
    let out = dir.path().join("back.raw");
    let o = os.run(
        &admin,
        &["image", "save", "--file", out.to_str().unwrap(), "disk1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let back = std::fs::read(&out).unwrap();
    assert!(back == data, "downloaded {} bytes differ", back.len());

    // Listing with Glance's `in:` operator, and by name.
    let listed = os.json(&admin, &["image", "list", "-f", "json"]);
    assert!(listed.to_string().contains(&id), "{listed}");

    // Properties and tags change; a second upload is refused (images never change).
    let o = os.run(
        &admin,
        &[
            "image",
            "set",
            "--property",
            "os_version=2",
            "--tag",
            "t2",
            "disk1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = os.json(&admin, &["image", "show", &id, "-f", "json"]);
    assert_eq!(shown["properties"]["os_version"], "2", "{shown}");
    assert!(shown["tags"].to_string().contains("t2"), "{shown}");

    // Bad input: an unknown disk format, no change.
    let o = os.run(
        &admin,
        &["image", "create", "--disk-format", "floppy", "bad1"],
    );
    assert!(!o.status.success(), "an unknown disk format was accepted");
    assert!(!os
        .json(&admin, &["image", "list", "-f", "json"])
        .to_string()
        .contains("bad1"));

    // Private to its project: another project's member cannot see it; a reader cannot
    // create images.
    os.json(&admin, &["project", "create", "demo", "-f", "json"]);
    for (user, role) in [("demo", "member"), ("peek", "reader")] {
        os.add_user(&admin, "demo", user, "pw-secret", role);
    }
    let demo = password_auth("demo", "pw-secret", "demo");
    let peek = password_auth("peek", "pw-secret", "demo");
    let o = os.run(&demo, &["image", "show", &id]);
    assert!(!o.status.success(), "another project's image is visible");
    assert!(!os
        .json(&demo, &["image", "list", "-f", "json"])
        .to_string()
        .contains(&id));
    let o = os.run(&demo, &["image", "delete", &id]);
    assert!(!o.status.success(), "another project deleted the image");
    let o = os.run(
        &peek,
        &[
            "image",
            "create",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "r1",
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("403"),
        "{}",
        stderr(&o)
    );
    // A member may not publish.
    let o = os.run(
        &demo,
        &[
            "image",
            "create",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--public",
            "pub1",
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("403"),
        "{}",
        stderr(&o)
    );

    // Deleted with its data.
    let o = os.run(&admin, &["image", "delete", "disk1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = os.run(&admin, &["image", "show", &id]);
    assert!(!o.status.success(), "a deleted image is shown");
    let gone = common::wait_for(std::time::Duration::from_secs(30), || {
        let vols = json(&c.nodes[0].cli(&["volume", "list", "--json"]));
        (!vols.to_string().contains(&id)).then_some(())
    });
    assert!(gone.is_some(), "the image's volume outlived it");

    // Images as users have them, and what is refused by name: a qcow2 with a backing
    // file, a truncated qcow2, raw data declared qcow2, a qcow2 declared raw. Each leaves
    // no data behind.
    let qemu_img = |args: &[&str]| {
        let o = std::process::Command::new("qemu-img")
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "qemu-img {args:?}: {}", stderr(&o));
    };
    let p = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(p("base.raw"), common::boot_sector_disk()).unwrap();
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &p("base.raw"),
        &p("good.qcow2"),
    ]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        &p("good.qcow2"),
        "-F",
        "qcow2",
        &p("child.qcow2"),
    ]);
    let good = std::fs::read(p("good.qcow2")).unwrap();
    std::fs::write(p("short.qcow2"), &good[..good.len() / 2]).unwrap();
    // The refusal's words are in the body (the client shows only the status, as with
    // Glance), so the data goes in with curl.
    let token = os.json(&admin, &["token", "issue", "-f", "json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = c.nodes[0].dir.join("pki/ca.crt");
    for (file, format, says) in [
        ("child.qcow2", "qcow2", "backing file"),
        ("short.qcow2", "qcow2", "corrupt"),
        ("base.raw", "qcow2", "not a qcow2 image"),
        ("good.qcow2", "raw", "is a qcow2 image"),
    ] {
        let name = format!("bad-{file}-{format}");
        let curl = |method: &str, path: &str, kind: &str, data: &str| {
            // From node 0's namespace, as the isolation test's curl runs.
            let o = std::process::Command::new("ip")
                .args(["netns", "exec", &c.nodes[0].ns, "curl"])
                .args(["-sS", "-X", method, "--cacert"])
                .arg(&ca)
                .args(["-H", &format!("X-Auth-Token: {token}")])
                .args(["-H", &format!("Content-Type: {kind}")])
                .args(["--data-binary", data])
                .args(["-w", "\n%{http_code}"])
                .arg(format!("https://{}:5000/image/v2/{path}", c.nodes[0].ip))
                .output()
                .unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            )
        };
        let made = curl(
            "POST",
            "images",
            "application/json",
            &format!(
                r#"{{"name": "{name}", "disk_format": "{format}", "container_format": "bare"}}"#
            ),
        );
        let made: serde_json::Value = serde_json::from_str(made.rsplit_once('\n').unwrap().0)
            .unwrap_or_else(|e| panic!("image create: {e}: {made}"));
        let bad_id = made["id"].as_str().unwrap().to_string();
        let out = curl(
            "PUT",
            &format!("images/{bad_id}/file"),
            "application/octet-stream",
            &format!("@{}", p(file)),
        );
        assert!(out.ends_with("\n400"), "{file} as {format}: {out}");
        assert!(out.contains(says), "{file} as {format}: {out}");
        let shown = os.json(&admin, &["image", "show", &name, "-f", "json"]);
        assert_ne!(shown["status"], "active", "{shown}");
        let left = json(&c.nodes[0].cli(&["volume", "list", "--json"]));
        assert!(
            !left.to_string().contains(&bad_id),
            "a refused upload left data: {left}"
        );
        let o = os.run(&admin, &["image", "delete", &name]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
}
