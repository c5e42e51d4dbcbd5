//! The OpenStack workflow as an Ansible playbook (`tests/ansible/workflow.yml`, the
//! openstack.cloud collection of `ansible` 12 with `openstacksdk<4.15`) against a 3-node
//! cluster, authenticated by the clouds.yaml that `strata openrc` prints: flavors, images
//! (kernel, initramfs, disk), network, subnet, external network, router, security group
//! and rule, keypair, a server booted and waited for, stopped and started, a volume
//! attached and detached, a floating IP shown in the server's addresses, everything
//! deleted. Every task must pass.

mod common;

use std::path::PathBuf;

use common::{ansible_venv, stderr, Cluster};

#[test]
fn the_ansible_openstack_collection_runs_the_workflow() {
    let c = Cluster::form(3);
    let venv = ansible_venv();
    let dir = tempfile::tempdir().unwrap();
    let o = c.nodes[0].cli(&["openrc", "--format", "clouds-yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let clouds = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(clouds.contains("password:"), "{clouds}");
    std::fs::write(dir.path().join("clouds.yaml"), &clouds).unwrap();
    let o = c.nodes[0].cli(&["openrc"]);
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("export OS_AUTH_URL='https://10.77.0.11:5000/identity/v3'"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    let guest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/out/guest");
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let playbook = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ansible/workflow.yml");
    let vars = serde_json::json!({
        "guest_kernel": guest.join("vmlinuz"),
        "guest_initrd": guest.join("initramfs.cpio.gz"),
        "guest_disk": disk,
        "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJ ansible@strata",
        "ansible_python_interpreter": venv.join("bin/python"),
    });
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &c.nodes[0].ns])
        .arg(venv.join("bin/ansible-playbook"))
        .args(["-i", "localhost,", "-c", "local", "-e"])
        .arg(vars.to_string())
        .arg(&playbook)
        .env("OS_CLIENT_CONFIG_FILE", dir.path().join("clouds.yaml"))
        .env("ANSIBLE_LOCAL_TEMP", dir.path().join("ansible-tmp"))
        .env("ANSIBLE_HOME", dir.path().join("ansible-home"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env_remove("OS_CLOUD")
        .output()
        .expect("ansible-playbook");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("failed=0"), "{out}");
    // Every task ran (none skipped), and the cluster is empty of servers again.
    assert!(out.contains("skipped=0"), "{out}");
    let vms = common::json(&c.nodes[0].cli(&["vm", "list", "--json"]));
    assert_eq!(vms.as_array().map(|a| a.len()), Some(0), "{vms}");
}
