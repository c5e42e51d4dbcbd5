//! Tenant networks on a 3-node namespace cluster, with "VMs" that are network namespaces
//! whose NIC is the TAP Strata made for their port: DHCP from Strata leases the port's
//! address (busybox udhcpc), two ports on different nodes exchange ICMP and TCP over the
//! VXLAN overlay, a network of another project with the same subnet is unreachable, no
//! forwarding entry is flooded or learned, and a node restart leaves every path working.
//! Bad input is refused with the cause.

mod common;

use std::time::Duration;

use common::vmnic::VmNic;
use common::{json, stderr, wait_for, Cluster};

const DHCP_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "ip=$ip mask=$mask router=$router dns=$dns mtu=$mtu serverid=$serverid staticroutes=$staticroutes" > "$LEASE_FILE"
    set -- $staticroutes
    while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    ;;
esac
exit 0
"#;

fn ok(c: &Cluster, i: usize, args: &[&str]) -> serde_json::Value {
    let mut a: Vec<&str> = args.to_vec();
    a.push("--json");
    let o = c.nodes[i].cli(&a);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

fn run(c: &Cluster, i: usize, args: &[&str]) -> String {
    let o = c.nodes[i].cli(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn refused(c: &Cluster, args: &[&str], want: &str) {
    let o = c.nodes[0].cli(args);
    assert!(!o.status.success(), "{args:?} was accepted");
    let e = stderr(&o);
    assert!(e.contains(want), "{args:?}: expected {want:?} in: {e}");
}

/// Creates a port bound to node `host` and waits until that node's data plane carries
/// it; returns (id, mac, ip, tap).
fn port(
    c: &Cluster,
    network: &str,
    host: &str,
    extra: &[&str],
) -> (String, String, String, String) {
    let mut a = vec!["port", "create", "--network", network, "--host", host];
    a.extend_from_slice(extra);
    let out = run(c, 0, &a);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id"))
        .map(|s| s.trim().to_string())
        .expect("port id");
    let p = wait_for(Duration::from_secs(20), || {
        let p = json(&c.nodes[0].cli(&["port", "show", &id, "--json"]));
        (p["status"] == "ACTIVE").then_some(p)
    })
    .unwrap_or_else(|| {
        panic!(
            "port not active: {}",
            json(&c.nodes[0].cli(&["port", "show", &id, "--json"]))
        )
    });
    (
        id,
        p["mac"].as_str().unwrap().to_string(),
        p["fixed_ips"][0]["ip"].as_str().unwrap().to_string(),
        p["tap"].as_str().unwrap().to_string(),
    )
}

/// Runs udhcpc in the VM; the lease line the script wrote.
fn dhcp(vm: &VmNic, dir: &std::path::Path) -> Option<String> {
    let script = dir.join(format!("{}.sh", vm.ns));
    let lease = dir.join(format!("{}.lease", vm.ns));
    std::fs::write(&script, DHCP_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let _ = std::fs::remove_file(&lease);
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &vm.ns, "env"])
        .arg(format!("LEASE_FILE={}", lease.display()))
        .args([
            "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "6", "-T", "1",
        ])
        .args(["-O", "mtu", "-O", "staticroutes", "-s"])
        .arg(&script)
        .output()
        .expect("udhcpc");
    if !o.status.success() {
        eprintln!(
            "udhcpc: {}{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
    }
    std::fs::read_to_string(&lease).ok()
}

#[test]
fn ports_on_different_nodes_talk_over_the_overlay_and_networks_are_isolated() {
    let mut c = Cluster::form(3);
    let ids = c.node_ids();
    let tmp = tempfile::tempdir().unwrap();
    let tag = c.nodes[0].ns.clone();

    let net = ok(&c, 0, &["network", "create", "blue"]);
    assert!(net["vni"].as_u64().unwrap() >= 1000, "{net}");
    assert_eq!(net["mtu"], 1450);
    let sub = ok(
        &c,
        0,
        &[
            "subnet",
            "create",
            "blue-v4",
            "--network",
            "blue",
            "--cidr",
            "10.10.0.0/24",
            "--dns",
            "10.10.0.53",
        ],
    );
    assert_eq!(sub["gateway_ip"], "10.10.0.1", "{sub}");
    assert_eq!(sub["service_ip"], "10.10.0.2", "{sub}");

    // Bad input, each naming the cause.
    refused(
        &c,
        &[
            "subnet",
            "create",
            "x",
            "--network",
            "blue",
            "--cidr",
            "10.10.0.128/25",
        ],
        "overlaps",
    );
    refused(
        &c,
        &[
            "subnet",
            "create",
            "x",
            "--network",
            "blue",
            "--cidr",
            "10.11.0.5/24",
        ],
        "host bits",
    );
    refused(
        &c,
        &[
            "subnet",
            "create",
            "x",
            "--network",
            "blue",
            "--cidr",
            "10.11.0.0/24",
            "--gateway",
            "10.12.0.1",
        ],
        "not a host address",
    );
    refused(
        &c,
        &["port", "create", "--network", "blue", "--ip", "10.99.0.5"],
        "none of network",
    );
    refused(
        &c,
        &["port", "create", "--network", "blue", "--ip", "10.10.0.2"],
        "already in use",
    );
    refused(&c, &["network", "create", "m", "--mtu", "9000"], "MTU");

    // Two ports on nodes 0 and 1; their "VMs" get their addresses from Strata's DHCP.
    let (pa, mac_a, ip_a, tap_a) = port(&c, "blue", &ids[0], &[]);
    let (_pb, mac_b, ip_b, tap_b) = port(&c, "blue", &ids[1], &["--ip", "10.10.0.77"]);
    assert_eq!(
        ip_a, "10.10.0.3",
        "the first free address after the service address"
    );
    assert_eq!(ip_b, "10.10.0.77");
    refused(
        &c,
        &["port", "create", "--network", "blue", "--ip", "10.10.0.77"],
        "already in use",
    );
    let vm_a = VmNic::attach(&c.nodes[0].ns, &tap_a, &format!("{tag}va"), &mac_a);
    let vm_b = VmNic::attach(&c.nodes[1].ns, &tap_b, &format!("{tag}vb"), &mac_b);
    let lease = dhcp(&vm_a, tmp.path()).expect("no DHCP lease on node 0");
    assert!(lease.contains(&format!("ip={ip_a} mask=24")), "{lease}");
    assert!(
        lease.contains("router=10.10.0.1") && lease.contains("dns=10.10.0.53"),
        "{lease}"
    );
    assert!(
        lease.contains("mtu=1450") && lease.contains("serverid=10.10.0.2"),
        "{lease}"
    );
    assert!(lease.contains("169.254.169.254/32 10.10.0.2"), "{lease}");
    let lease = dhcp(&vm_b, tmp.path()).expect("no DHCP lease on node 1");
    assert!(lease.contains("ip=10.10.0.77 "), "{lease}");

    // ICMP and TCP across nodes.
    assert!(
        vm_a.pings(&ip_b, 10),
        "{ip_a} cannot ping {ip_b} across the overlay"
    );
    assert!(vm_b.pings(&ip_a, 5));
    let server = std::process::Command::new("ip")
        .args([
            "netns", "exec", &vm_b.ns, "busybox", "nc", "-l", "-p", "5000",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sent = vm_a.run(&[
        "sh",
        "-c",
        &format!("echo over-the-overlay | busybox nc -w 3 {ip_b} 5000"),
    ]);
    assert!(sent.status.success(), "nc: {}", stderr(&sent));
    let got = server.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "over-the-overlay"
    );

    // Forwarding on node 0's VXLAN device: exactly the remote port's MAC, towards node 1,
    // and no all-zero (flooding) entry.
    let vni = net["vni"].as_u64().unwrap();
    let fdb = c.nodes[0].in_ns(&["bridge", "fdb", "show", "dev", &format!("svx{vni}")]);
    let fdb = String::from_utf8_lossy(&fdb.stdout).to_string();
    assert!(
        fdb.contains(&format!("{mac_b} dst {} self permanent", c.nodes[1].ip)),
        "{fdb}"
    );
    assert!(!fdb.contains("00:00:00:00:00:00"), "{fdb}");

    // Another project's network with the same subnet: its port cannot be reached from
    // blue, nor can it reach blue's ports.
    ok(&c, 0, &["network", "create", "red", "--project", "other"]);
    ok(
        &c,
        0,
        &[
            "subnet",
            "create",
            "red-v4",
            "--network",
            "red",
            "--cidr",
            "10.10.0.0/24",
        ],
    );
    let (pc, mac_c, ip_c, tap_c) = port(&c, "red", &ids[1], &["--ip", "10.10.0.3"]);
    assert_eq!(ip_c, ip_a, "the same address in another network is allowed");
    let vm_c = VmNic::attach(&c.nodes[1].ns, &tap_c, &format!("{tag}vc"), &mac_c);
    assert!(dhcp(&vm_c, tmp.path()).is_some_and(|l| l.contains("ip=10.10.0.3 ")));
    assert!(!vm_c.pings(&ip_b, 3), "red reached blue's {ip_b}");

    // The metadata service answers each port with its own data, even where two ports
    // in different networks share an address.
    let meta = |vm: &VmNic, path: &str| -> String {
        let o = vm.run(&[
            "busybox",
            "wget",
            "-qO-",
            &format!("http://169.254.169.254{path}"),
        ]);
        assert!(
            o.status.success(),
            "GET {path} from {}: {}",
            vm.ns,
            stderr(&o)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let a: serde_json::Value =
        serde_json::from_str(&meta(&vm_a, "/openstack/latest/meta_data.json")).unwrap();
    assert_eq!(a["uuid"], pa.as_str(), "{a}");
    assert_eq!(a["hostname"], "host-10-10-0-3", "{a}");
    let cm: serde_json::Value =
        serde_json::from_str(&meta(&vm_c, "/openstack/latest/meta_data.json")).unwrap();
    assert_eq!(
        cm["uuid"],
        pc.as_str(),
        "red's 10.10.0.3 got another port's data: {cm}"
    );
    let nd = meta(&vm_b, "/openstack/latest/network_data.json");
    assert!(nd.contains(&mac_b), "{nd}");
    assert_eq!(meta(&vm_b, "/latest/meta-data/local-ipv4"), ip_b);
    assert!(vm_b.pings(&ip_a, 3), "blue's own path broke");

    // Node 1 restarts: devices are adopted, the service namespace and DHCP come back.
    c.nodes[1].kill();
    c.nodes[1].start();
    wait_for(Duration::from_secs(30), || {
        dhcp(&vm_b, tmp.path()).filter(|l| l.contains("ip=10.10.0.77 "))
    })
    .expect("DHCP on node 1 after its restart");
    assert!(vm_a.pings(&ip_b, 10), "path broken after node 1 restarted");

    // Deleting: a network with ports is kept; ports go, then the network.
    refused(&c, &["network", "delete", "blue"], "still has");
    drop((vm_a, vm_b, vm_c));
    for p in json(&c.nodes[0].cli(&["port", "list", "--json"]))
        .as_array()
        .unwrap()
    {
        run(&c, 0, &["port", "delete", p["id"].as_str().unwrap()]);
    }
    run(&c, 0, &["network", "delete", "blue"]);
    run(&c, 0, &["network", "delete", "red"]);
    wait_for(Duration::from_secs(20), || {
        let links = c.nodes[0].in_ns(&["ip", "-o", "link"]);
        let l = String::from_utf8_lossy(&links.stdout).to_string();
        (!l.contains("sbr") && !l.contains("svx") && !l.contains(&tap_a)).then_some(())
    })
    .expect("node 0 kept devices of deleted networks");
}

#[test]
fn security_groups_open_exactly_what_they_name_and_spoofed_sources_are_dropped() {
    let c = Cluster::form(2);
    let ids = c.node_ids();
    let tmp = tempfile::tempdir().unwrap();
    let tag = c.nodes[0].ns.clone();
    ok(&c, 0, &["network", "create", "green"]);
    ok(
        &c,
        0,
        &[
            "subnet",
            "create",
            "green-v4",
            "--network",
            "green",
            "--cidr",
            "10.20.0.0/24",
        ],
    );
    ok(&c, 0, &["secgroup", "create", "web"]);
    ok(
        &c,
        0,
        &[
            "secgroup",
            "rule-add",
            "web",
            "--protocol",
            "tcp",
            "--port",
            "8080",
        ],
    );
    ok(&c, 0, &["secgroup", "create", "db"]);
    ok(
        &c,
        0,
        &[
            "secgroup",
            "rule-add",
            "db",
            "--protocol",
            "tcp",
            "--port",
            "5432",
            "--remote-group",
            "web",
        ],
    );

    // Bad rules, each naming the cause.
    refused(
        &c,
        &[
            "secgroup",
            "rule-add",
            "web",
            "--protocol",
            "tcp",
            "--port",
            "100-10",
        ],
        "impossible",
    );
    refused(
        &c,
        &[
            "secgroup",
            "rule-add",
            "web",
            "--protocol",
            "tcp",
            "--port",
            "70000",
        ],
        "outside 1-65535",
    );
    refused(
        &c,
        &["secgroup", "rule-add", "web", "--port", "22"],
        "need protocol tcp or udp",
    );
    refused(
        &c,
        &["secgroup", "rule-add", "web", "--protocol", "xyz"],
        "not tcp, udp, icmp",
    );
    refused(
        &c,
        &[
            "secgroup",
            "rule-add",
            "web",
            "--protocol",
            "tcp",
            "--remote-ip",
            "10.0.0.0/33",
        ],
        "not an IPv4 CIDR",
    );
    refused(
        &c,
        &[
            "secgroup",
            "rule-add",
            "web",
            "--protocol",
            "tcp",
            "--port",
            "8080",
        ],
        "already",
    );

    let (_s, mac_s, ip_s, tap_s) = port(&c, "green", &ids[1], &["--secgroup", "web"]);
    let (_d, mac_d, ip_d, tap_d) = port(&c, "green", &ids[1], &["--secgroup", "db"]);
    let (pc, mac_c, ip_c, tap_c) = port(&c, "green", &ids[0], &["--secgroup", "web"]);
    let (_e, mac_e, _ip_e, tap_e) = port(&c, "green", &ids[0], &[]);
    let vm = |i: usize, tap: &str, n: &str, mac: &str| {
        let v = VmNic::attach(&c.nodes[i].ns, tap, &format!("{tag}{n}"), mac);
        assert!(dhcp(&v, tmp.path()).is_some(), "no lease for {n}");
        v
    };
    let (vs, vd, vc, ve) = (
        vm(1, &tap_s, "s", &mac_s),
        vm(1, &tap_d, "d", &mac_d),
        vm(0, &tap_c, "c", &mac_c),
        vm(0, &tap_e, "e", &mac_e),
    );
    let tcp = |from: &VmNic, to: &VmNic, ip: &str, port: u16| -> bool {
        let server = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &to.ns,
                "timeout",
                "4",
                "busybox",
                "nc",
                "-l",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let _ = from.run(&[
            "sh",
            "-c",
            &format!("echo knock | busybox nc -w 2 {ip} {port}"),
        ]);
        let out = server.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains("knock")
    };
    assert!(tcp(&vc, &vs, &ip_s, 8080), "web's tcp/8080 is closed");
    assert!(
        !tcp(&vc, &vs, &ip_s, 8081),
        "tcp/8081 is open though no rule names it"
    );
    assert!(!vc.pings(&ip_s, 2), "ICMP passed without a rule");
    // The remote group: web members reach db's 5432, others do not.
    assert!(tcp(&vc, &vd, &ip_d, 5432), "web cannot reach db");
    assert!(!tcp(&ve, &vd, &ip_d, 5432), "a non-member reached db");

    // A rule added opens ICMP at once; deleting it closes it again.
    let r = ok(
        &c,
        0,
        &["secgroup", "rule-add", "web", "--protocol", "icmp"],
    );
    assert!(vc.pings(&ip_s, 10), "ICMP rule not applied");
    run(
        &c,
        0,
        &["secgroup", "rule-delete", "web", r["id"].as_str().unwrap()],
    );
    wait_for(Duration::from_secs(10), || {
        (!vc.pings(&ip_s, 1)).then_some(())
    })
    .expect("ICMP still allowed after its rule was deleted");
    ok(
        &c,
        0,
        &["secgroup", "rule-add", "web", "--protocol", "icmp"],
    );
    assert!(vc.pings(&ip_s, 10));

    // Anti-spoofing: another source address, or another MAC, is dropped.
    let o = vc.run(&["ip", "addr", "add", "10.20.0.199/24", "dev", "eth0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let spoofed = vc.run(&[
        "busybox",
        "ping",
        "-c",
        "2",
        "-W",
        "1",
        "-I",
        "10.20.0.199",
        &ip_s,
    ]);
    assert!(
        !spoofed.status.success(),
        "a spoofed source address got through"
    );
    let own = vc.run(&["busybox", "ping", "-c", "1", "-W", "2", "-I", &ip_c, &ip_s]);
    assert!(own.status.success(), "the port's own address is refused");
    let o = vc.run(&["ip", "link", "set", "eth0", "address", "fa:16:3e:99:99:99"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = vc.run(&["ip", "neigh", "flush", "all"]);
    assert!(!vc.pings(&ip_s, 2), "a spoofed MAC got through");
    // Without port security the port is neither checked nor filtered.
    let o = vc.run(&["ip", "link", "set", "eth0", "address", &mac_c]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(vc.pings(&ip_s, 10), "its own MAC again is refused");
    run(&c, 0, &["port", "set-security", &pc, "--no-port-security"]);
    wait_for(Duration::from_secs(10), || {
        let t = c.nodes[0].in_ns(&["nft", "list", "table", "bridge", "strata_l2"]);
        (!String::from_utf8_lossy(&t.stdout).contains(&tap_c)).then_some(())
    })
    .expect("a port without port security is still filtered");
    assert!(vc.pings(&ip_s, 10));
    refused(&c, &["secgroup", "delete", "web"], "used by port");
}

#[test]
fn routers_translate_for_their_subnets_and_floating_ips_follow_their_port() {
    let mut c = Cluster::form(3);
    let ids = c.node_ids();
    let tmp = tempfile::tempdir().unwrap();
    let tag = c.nodes[0].ns.clone();
    ok(&c, 0, &["network", "create", "public", "--external"]);
    ok(
        &c,
        0,
        &[
            "subnet",
            "create",
            "public-v4",
            "--network",
            "public",
            "--cidr",
            "203.0.113.0/24",
            "--no-gateway",
            "--no-dhcp",
        ],
    );
    ok(&c, 0, &["network", "create", "inner"]);
    ok(
        &c,
        0,
        &[
            "subnet",
            "create",
            "inner-v4",
            "--network",
            "inner",
            "--cidr",
            "10.40.0.0/24",
        ],
    );
    ok(&c, 0, &["secgroup", "create", "open"]);
    ok(
        &c,
        0,
        &["secgroup", "rule-add", "open", "--protocol", "icmp"],
    );
    ok(
        &c,
        0,
        &[
            "secgroup",
            "rule-add",
            "open",
            "--protocol",
            "tcp",
            "--port",
            "7000",
        ],
    );

    // Bad input first.
    refused(
        &c,
        &["router", "create", "r0", "--external", "inner"],
        "not external",
    );
    refused(
        &c,
        &["floatingip", "create", "--network", "inner"],
        "external network",
    );

    let r = ok(&c, 0, &["router", "create", "r1", "--external", "public"]);
    let _ = run(
        &c,
        0,
        &["router", "add-interface", "r1", "--subnet", "inner-v4"],
    );
    refused(
        &c,
        &["router", "add-interface", "r1", "--subnet", "inner-v4"],
        "taken already",
    );
    let h = ids
        .iter()
        .position(|i| r["host"] == i.as_str())
        .expect("router host");
    let (a, b) = ((h + 1) % 3, (h + 2) % 3);

    let (pp, mac_p, ip_p, tap_p) = port(&c, "inner", &ids[a], &["--secgroup", "open"]);
    let (_q, mac_q, _ip_q, tap_q) = port(&c, "inner", &ids[b], &[]);
    let (_o, mac_o, _ip_o, tap_o) = port(
        &c,
        "public",
        &ids[b],
        &["--ip", "203.0.113.50", "--no-port-security"],
    );
    let vm_p = VmNic::attach(&c.nodes[a].ns, &tap_p, &format!("{tag}rp"), &mac_p);
    let vm_q = VmNic::attach(&c.nodes[b].ns, &tap_q, &format!("{tag}rq"), &mac_q);
    let outside = VmNic::attach(&c.nodes[b].ns, &tap_o, &format!("{tag}ro"), &mac_o);
    let o = outside.run(&["ip", "addr", "add", "203.0.113.50/24", "dev", "eth0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dhcp(&vm_p, tmp.path()).is_some_and(|l| l.contains("router=10.40.0.1")));
    assert!(dhcp(&vm_q, tmp.path()).is_some());

    // SNAT: a port without a floating IP reaches the outside through the router.
    if !vm_q.pings("203.0.113.50", 15) {
        let links = c.nodes[h].in_ns(&["ip", "-o", "link"]);
        let fdb = c.nodes[b].in_ns(&["bridge", "fdb", "show"]);
        let neigh = c.nodes[b].in_ns(&["ip", "neigh", "show"]);
        let route = vm_q.run(&["ip", "route"]);
        let addr = vm_q.run(&["ip", "addr"]);
        let pid = c.nodes[h].child.as_ref().unwrap().id();
        let mut inside = String::new();
        for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
        {
            let l = std::fs::read_link(e.path()).unwrap_or_default();
            if l.to_string_lossy().starts_with("net:") {
                for cmd in [
                    vec!["ip", "-o", "addr"],
                    vec!["ip", "route"],
                    vec!["nft", "list", "ruleset"],
                    vec!["sysctl", "net.ipv4.ip_forward"],
                ] {
                    let o = std::process::Command::new("nsenter")
                        .arg(format!("--net={}", e.path().display()))
                        .args(&cmd)
                        .output()
                        .unwrap();
                    inside += &format!(
                        "{cmd:?}:\n{}{}\n",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
            }
        }
        eprintln!("INSIDE NAMESPACES:\n{inside}");
        panic!(
            "no SNAT path to the outside\nrouter node links:\n{}\nnode b fdb:\n{}\nneigh:\n{}\nq routes:\n{}{}",
            String::from_utf8_lossy(&links.stdout),
            String::from_utf8_lossy(&fdb.stdout),
            String::from_utf8_lossy(&neigh.stdout),
            String::from_utf8_lossy(&route.stdout),
            String::from_utf8_lossy(&addr.stdout)
        );
    }
    // A floating IP maps to p: reachable from outside, and p goes out through it.
    refused(
        &c,
        &["floatingip", "create", "--network", "public", "--port", &_o],
        "no router joins",
    );
    let f = ok(
        &c,
        0,
        &["floatingip", "create", "--network", "public", "--port", &pp],
    );
    let fip = f["ip"].as_str().unwrap().to_string();
    assert_eq!(f["fixed_ip"], ip_p.as_str(), "{f}");
    assert!(
        outside.pings(&fip, 15),
        "floating IP {fip} unreachable from outside"
    );
    // It is translated on the port's node, not the router's: other nodes send it there.
    let ext_vni = json(&c.nodes[0].cli(&["network", "show", "public", "--json"]))["vni"]
        .as_u64()
        .unwrap();
    let svx = format!("svx{ext_vni}");
    let neigh = c.nodes[b].in_ns(&["ip", "neigh", "show", &fip, "dev", &svx]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    let mac = neigh
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or_else(|| panic!("no ARP entry for {fip}: {neigh}"))
        .to_string();
    let fdb = c.nodes[b].in_ns(&["bridge", "fdb", "show", "dev", &svx]);
    let fdb = String::from_utf8_lossy(&fdb.stdout).to_string();
    assert!(
        fdb.contains(&format!("{mac} dst {} self permanent", c.nodes[a].ip)),
        "floating IP {fip} ({mac}) not sent to the port's node {}: {fdb}",
        c.nodes[a].ip
    );
    let server = std::process::Command::new("ip")
        .args([
            "netns", "exec", &vm_p.ns, "timeout", "5", "busybox", "nc", "-l", "-p", "7000",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = outside.run(&[
        "sh",
        "-c",
        &format!("echo via-fip | busybox nc -w 3 {fip} 7000"),
    ]);
    let got = server.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "via-fip");

    // The port moves to the router's node (translated there), then to the third node
    // (translated there again): the floating IP follows it each time.
    drop(vm_p);
    let mut vm_p = None;
    for to in [h, b] {
        drop(vm_p.take());
        run(&c, 0, &["port", "bind", &pp, "--host", &ids[to]]);
        let moved = wait_for(Duration::from_secs(20), || {
            let p = json(&c.nodes[0].cli(&["port", "show", &pp, "--json"]));
            (p["status"] == "ACTIVE" && p["host"] == ids[to].as_str()).then_some(p)
        })
        .expect("the port did not move");
        let nic = VmNic::attach(
            &c.nodes[to].ns,
            moved["tap"].as_str().unwrap(),
            &format!("{tag}rp"),
            &mac_p,
        );
        assert!(dhcp(&nic, tmp.path()).is_some(), "no lease after the move");
        assert!(
            outside.pings(&fip, 15),
            "the floating IP did not follow its port to node {to} (router on {h})"
        );
        vm_p = Some(nic);
    }
    // The router's node restarts: its namespace (owned by the daemon) is made again,
    // with its links and translations.
    c.nodes[h].kill();
    c.nodes[h].start();
    assert!(
        outside.pings(&fip, 30),
        "the floating IP did not come back after the router's node restarted"
    );
    assert!(
        vm_q.pings("203.0.113.50", 15),
        "SNAT did not come back after the router's node restarted"
    );
    // Unmapped, it no longer answers.
    run(&c, 0, &["floatingip", "set", &fip, "--unset"]);
    wait_for(Duration::from_secs(10), || {
        (!outside.pings(&fip, 1)).then_some(())
    })
    .expect("an unmapped floating IP still answers");
}
