//! Neutron v2.0 as python-openstackclient drives it, scoped by project: networks,
//! subnets, security groups and rules, an external network, a router with its gateway
//! and an interface, ports, floating IPs; a member of another project sees none of the
//! admin project's resources (404) and a reader cannot create any (403).

mod common;

use common::{password_auth, stderr, Cluster, Os};

#[test]
fn the_openstack_client_manages_networks_within_its_project() {
    let c = Cluster::form(1);
    let os = Os::new(&c);
    let pw = common::admin_password(&c);
    let admin = password_auth("admin", &pw, "admin");
    let j = |auth: &[&str], args: &[&str]| os.json(auth, args);

    let net = j(&admin, &["network", "create", "n1", "-f", "json"]);
    assert_eq!(net["name"], "n1", "{net}");
    let sub = j(
        &admin,
        &[
            "subnet",
            "create",
            "--network",
            "n1",
            "--subnet-range",
            "10.70.0.0/24",
            "s1",
            "-f",
            "json",
        ],
    );
    assert_eq!(sub["gateway_ip"], "10.70.0.1", "{sub}");
    assert!(
        sub["allocation_pools"].to_string().contains("10.70.0.2"),
        "{sub}"
    );
    let o = os.run(
        &admin,
        &[
            "subnet",
            "create",
            "--network",
            "n1",
            "--subnet-range",
            "10.70.0.128/25",
            "bad",
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("overlaps"),
        "{}",
        stderr(&o)
    );
    j(
        &admin,
        &["security", "group", "create", "web", "-f", "json"],
    );
    let rule = j(
        &admin,
        &[
            "security",
            "group",
            "rule",
            "create",
            "--protocol",
            "tcp",
            "--dst-port",
            "22",
            "--remote-ip",
            "0.0.0.0/0",
            "web",
            "-f",
            "json",
        ],
    );
    assert_eq!(rule["port_range_min"], 22, "{rule}");
    let o = os.run(
        &admin,
        &[
            "security",
            "group",
            "rule",
            "create",
            "--protocol",
            "tcp",
            "--dst-port",
            "30:20",
            "web",
        ],
    );
    assert!(!o.status.success(), "an impossible port range was accepted");
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
    j(&admin, &["router", "create", "r1", "-f", "json"]);
    let o = os.run(
        &admin,
        &["router", "set", "--external-gateway", "public", "r1"],
    );
    assert!(o.status.success(), "router set: {}", stderr(&o));
    let o = os.run(&admin, &["router", "add", "subnet", "r1", "s1"]);
    assert!(o.status.success(), "router add subnet: {}", stderr(&o));
    let r = j(&admin, &["router", "show", "r1", "-f", "json"]);
    assert!(
        r["external_gateway_info"]
            .to_string()
            .contains("203.0.113."),
        "{r}"
    );
    let port = j(
        &admin,
        &[
            "port",
            "create",
            "--network",
            "n1",
            "--security-group",
            "web",
            "p1",
            "-f",
            "json",
        ],
    );
    assert!(port["fixed_ips"].to_string().contains("10.70.0."), "{port}");
    let fip = j(
        &admin,
        &["floating", "ip", "create", "public", "-f", "json"],
    );
    let fip_addr = fip["floating_ip_address"].as_str().unwrap().to_string();
    let o = os.run(
        &admin,
        &["floating", "ip", "set", "--port", "p1", &fip_addr],
    );
    assert!(o.status.success(), "floating ip set: {}", stderr(&o));
    let f = j(&admin, &["floating", "ip", "show", &fip_addr, "-f", "json"]);
    assert_eq!(f["status"], "ACTIVE", "{f}");
    let nets = j(&admin, &["network", "list", "-f", "json"]);
    assert_eq!(nets.as_array().unwrap().len(), 2, "{nets}");

    // Another project: its member sees neither n1 nor p1, and a reader creates nothing.
    j(&admin, &["project", "create", "other", "-f", "json"]);
    j(
        &admin,
        &[
            "user",
            "create",
            "--password",
            "other-secret",
            "--project",
            "other",
            "bob",
            "-f",
            "json",
        ],
    );
    j(
        &admin,
        &[
            "user",
            "create",
            "--password",
            "reader-secret",
            "--project",
            "other",
            "rita",
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
                "other",
                "--user",
                "bob",
                "member"
            ]
        )
        .status
        .success());
    assert!(os
        .run(
            &admin,
            &[
                "role",
                "add",
                "--project",
                "other",
                "--user",
                "rita",
                "reader"
            ]
        )
        .status
        .success());
    let bob = password_auth("bob", "other-secret", "other");
    let o = os.run(&bob, &["network", "show", "n1"]);
    assert!(!o.status.success(), "another project's network is visible");
    let o = os.run(&bob, &["port", "show", port["id"].as_str().unwrap()]);
    assert!(
        !o.status.success() && stderr(&o).contains("No Port found"),
        "{}",
        stderr(&o)
    );
    let theirs = j(&bob, &["network", "list", "-f", "json"]);
    assert_eq!(
        theirs.as_array().unwrap().len(),
        1,
        "only the external network: {theirs}"
    );
    let own = j(&bob, &["network", "create", "bobnet", "-f", "json"]);
    assert_eq!(
        own["project_id"],
        j(&bob, &["token", "issue", "-f", "json"])["project_id"]
    );
    let rita = password_auth("rita", "reader-secret", "other");
    let o = os.run(&rita, &["network", "create", "ritanet"]);
    assert!(
        !o.status.success() && stderr(&o).contains("403"),
        "{}",
        stderr(&o)
    );
    let seen = j(&rita, &["network", "list", "-f", "json"]);
    assert_eq!(
        seen.as_array().unwrap().len(),
        2,
        "a reader reads its project: {seen}"
    );

    // Everything deleted again.
    for args in [
        vec!["floating", "ip", "delete", fip_addr.as_str()],
        vec!["port", "delete", "p1"],
        vec!["router", "remove", "subnet", "r1", "s1"],
        vec!["router", "delete", "r1"],
        vec!["network", "delete", "n1"],
        vec!["network", "delete", "public"],
        vec!["security", "group", "delete", "web"],
    ] {
        let o = os.run(&admin, &args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    let nets = j(&admin, &["network", "list", "-f", "json"]);
    assert_eq!(
        nets.as_array().unwrap().len(),
        1,
        "only bob's network is left: {nets}"
    );
}
