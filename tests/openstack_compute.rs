//! Nova v2.1 (begun) as python-openstackclient drives it: the version document, flavors
//! (admins create and delete, members may not), and keypairs imported from a public key
//! (each user's own; a malformed key refused).

mod common;

use base64::Engine;
use common::{password_auth, stderr, Cluster, Os};

#[test]
fn the_openstack_client_manages_flavors_and_keypairs() {
    let c = Cluster::form(1);
    let os = Os::new(&c);
    let pw = common::admin_password(&c);
    let admin = password_auth("admin", &pw, "admin");

    let flavors = os.json(&admin, &["flavor", "list", "-f", "json"]);
    assert!(flavors.to_string().contains("m1.tiny"), "{flavors}");
    let f = os.json(
        &admin,
        &[
            "flavor", "create", "--vcpus", "1", "--ram", "256", "--disk", "1", "small1", "-f",
            "json",
        ],
    );
    assert_eq!(f["ram"], 256, "{f}");
    let o = os.run(
        &admin,
        &["flavor", "create", "--vcpus", "0", "--ram", "256", "bad"],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("vCPUs"),
        "{}",
        stderr(&o)
    );
    let shown = os.json(&admin, &["flavor", "show", "small1", "-f", "json"]);
    assert_eq!(shown["vcpus"], 1, "{shown}");

    // A member cannot create flavors but lists them.
    os.json(&admin, &["project", "create", "demo", "-f", "json"]);
    os.json(
        &admin,
        &[
            "user",
            "create",
            "--password",
            "demo-secret",
            "--project",
            "demo",
            "demo",
            "-f",
            "json",
        ],
    );
    assert!(os
        .run(
            &admin,
            &[
                "role",
                "add",
                "--project",
                "demo",
                "--user",
                "demo",
                "member"
            ]
        )
        .status
        .success());
    let demo = password_auth("demo", "demo-secret", "demo");
    let o = os.run(
        &demo,
        &["flavor", "create", "--vcpus", "1", "--ram", "256", "mine"],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("403"),
        "{}",
        stderr(&o)
    );
    assert!(os
        .json(&demo, &["flavor", "list", "-f", "json"])
        .to_string()
        .contains("small1"));

    // Keypairs: imported, listed with a fingerprint, the user's own, deleted.
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&[9u8; 32]);
    let key = format!(
        "ssh-ed25519 {} test@strata",
        base64::engine::general_purpose::STANDARD.encode(&blob)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("id.pub");
    std::fs::write(&file, &key).unwrap();
    let bad = dir.path().join("bad.pub");
    std::fs::write(&bad, "not a key").unwrap();
    let k = os.json(
        &demo,
        &[
            "keypair",
            "create",
            "--public-key",
            file.to_str().unwrap(),
            "k1",
            "-f",
            "json",
        ],
    );
    assert!(
        k["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:")),
        "{k}"
    );
    let o = os.run(
        &demo,
        &[
            "keypair",
            "create",
            "--public-key",
            bad.to_str().unwrap(),
            "k2",
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("OpenSSH"),
        "{}",
        stderr(&o)
    );
    assert!(os
        .json(&demo, &["keypair", "list", "-f", "json"])
        .to_string()
        .contains("k1"));
    assert!(
        !os.json(&admin, &["keypair", "list", "-f", "json"])
            .to_string()
            .contains("k1"),
        "another user's keypair is listed"
    );
    assert!(os.run(&demo, &["keypair", "delete", "k1"]).status.success());
    assert!(!os
        .json(&demo, &["keypair", "list", "-f", "json"])
        .to_string()
        .contains("k1"));
    assert!(os
        .run(&admin, &["flavor", "delete", "small1"])
        .status
        .success());
}
