//! `make bench`: TCP throughput (iperf3) and round-trip latency between two ports on
//! different namespace nodes over Strata's overlay (its bridges, VXLAN devices, forwarding
//! and ARP entries, security groups through br_netfilter and conntrack), against the same
//! pair over a VXLAN tunnel made by hand with `ip link` (the reference) and over the bare
//! veth between the nodes (the physical limit here); then the time to program 1,000 ports
//! on one node.
//!
//! The "VMs" are namespaces joined by a veth whose node end carries the port's TAP name,
//! so Strata's agent adopts it as the port's device (bridge, security group rules and all)
//! and no userspace relay sits in the measured path.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{wait_for, Cluster};
use serde_json::Value;

const SECS: u32 = 8;
const ROUND_TRIPS: usize = 400;
const ROUNDS: usize = 3;

fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn")
}

fn must(args: &[&str]) {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A namespace `vm` whose eth0 (address `cidr`, MTU `mtu`) is a veth whose other end,
/// named `host_end`, sits in namespace `node`.
fn vm_ns(node: &str, vm: &str, host_end: &str, cidr: &str, mtu: &str, mac: Option<&str>) {
    must(&["ip", "netns", "add", vm]);
    must(&[
        "ip", "-n", node, "link", "add", host_end, "mtu", mtu, "type", "veth", "peer", "name",
        "eth0", "netns", vm,
    ]);
    if let Some(m) = mac {
        must(&["ip", "-n", vm, "link", "set", "eth0", "address", m]);
    }
    must(&["ip", "-n", vm, "link", "set", "eth0", "mtu", mtu, "up"]);
    must(&["ip", "-n", vm, "link", "set", "lo", "up"]);
    must(&["ip", "-n", vm, "addr", "add", cidr, "dev", "eth0"]);
    must(&["ip", "-n", node, "link", "set", host_end, "up"]);
}

/// iperf3 from `client` to `server_ip` (server in `server`): Gbit/s.
fn iperf(server: &str, client: &str, server_ip: &str) -> f64 {
    let mut srv = Command::new("ip")
        .args(["netns", "exec", server, "iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 (Debian package iperf3)");
    std::thread::sleep(Duration::from_millis(400));
    let o = sh(&[
        "ip",
        "netns",
        "exec",
        client,
        "iperf3",
        "-c",
        server_ip,
        "-t",
        &SECS.to_string(),
        "-J",
    ]);
    let _ = srv.wait();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

/// UDP round trips of 64 bytes from `client` to an echo server in `server`: (p50, p99) µs.
fn rtt(server: &str, client: &str, server_ip: &str) -> (f64, f64) {
    let echo = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',7777))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(d,a)\n";
    let mut srv = Command::new("ip")
        .args(["netns", "exec", server, "python3", "-c", echo])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    std::thread::sleep(Duration::from_millis(300));
    let probe = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(1)\nr=[]\nfor i in range({n}+20):\n t=time.perf_counter()\n s.sendto(b'x'*64,('{server_ip}',7777))\n s.recvfrom(2048)\n r.append((time.perf_counter()-t)*1e6)\nr=sorted(r[20:])\nprint(r[len(r)//2], r[int(len(r)*0.99)])\n",
        n = ROUND_TRIPS
    );
    let o = sh(&["ip", "netns", "exec", client, "python3", "-c", &probe]);
    let _ = srv.kill();
    let _ = srv.wait();
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    let v: Vec<f64> = t
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (
        v.first().copied().unwrap_or(0.0),
        v.get(1).copied().unwrap_or(0.0),
    )
}

fn cli(c: &Cluster, args: &[&str]) -> Value {
    let o = c.nodes[0].cli(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

fn main() {
    let c = Cluster::form(2);
    let tag = c.nodes[0].ns.clone();
    let ids: Vec<String> = c.node_ids();
    let mut vms: Vec<String> = Vec::new();

    // 1. Strata: two ports of one network (default security group), on nodes 0 and 1.
    cli(&c, &["network", "create", "bench", "--json"]);
    cli(
        &c,
        &[
            "subnet",
            "create",
            "bench-v4",
            "--network",
            "bench",
            "--cidr",
            "10.50.0.0/24",
            "--json",
        ],
    );
    let mut strata_ips = Vec::new();
    for (i, name) in ["sa", "sb"].iter().enumerate() {
        let p = cli(&c, &["port", "create", "--network", "bench", "--json"]);
        let id = p["id"].as_str().unwrap().to_string();
        let ip = p["fixed_ips"][0]["ip"].as_str().unwrap().to_string();
        let tap: String = format!(
            "tap{}",
            id.chars()
                .filter(|c| *c != '-')
                .take(11)
                .collect::<String>()
        );
        let vm = format!("{tag}{name}");
        vm_ns(
            &c.nodes[i].ns,
            &vm,
            &tap,
            &format!("{ip}/24"),
            "1450",
            p["mac"].as_str(),
        );
        vms.push(vm);
        cli(&c, &["port", "bind", &id, "--host", &ids[i]]);
        wait_for(Duration::from_secs(30), || {
            let p = cli(&c, &["port", "show", &id, "--json"]);
            (p["status"] == "ACTIVE").then_some(())
        })
        .expect("port active");
        strata_ips.push(ip);
    }
    let (sa, sb) = (vms[0].clone(), vms[1].clone());
    wait_for(Duration::from_secs(20), || {
        sh(&[
            "ip",
            "netns",
            "exec",
            &sa,
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            &strata_ips[1],
        ])
        .status
        .success()
        .then_some(())
    })
    .expect("Strata path up");

    // 2. By hand: bridge + VXLAN (VNI 4242, UDP 4790, remote = the other node) per node.
    for (i, n) in c.nodes.iter().enumerate() {
        let other = &c.nodes[1 - i].ip;
        must(&[
            "ip", "-n", &n.ns, "link", "add", "hbr", "mtu", "1450", "type", "bridge",
        ]);
        must(&[
            "ip", "-n", &n.ns, "link", "add", "hvx", "mtu", "1450", "type", "vxlan", "id", "4242",
            "local", &n.ip, "remote", other, "dstport", "4790",
        ]);
        must(&[
            "ip", "-n", &n.ns, "link", "set", "hvx", "master", "hbr", "up",
        ]);
        must(&["ip", "-n", &n.ns, "link", "set", "hbr", "up"]);
        let vm = format!("{tag}h{i}");
        vm_ns(
            &n.ns,
            &vm,
            "hveth",
            &format!("192.168.77.{}/24", i + 1),
            "1450",
            None,
        );
        must(&["ip", "-n", &n.ns, "link", "set", "hveth", "master", "hbr"]);
        vms.push(vm);
    }
    let (ha, hb) = (vms[2].clone(), vms[3].clone());
    wait_for(Duration::from_secs(10), || {
        sh(&[
            "ip",
            "netns",
            "exec",
            &ha,
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "192.168.77.2",
        ])
        .status
        .success()
        .then_some(())
    })
    .expect("hand-made VXLAN path up");

    // 3. Bare veth: the nodes' own addresses.
    let (n0, n1) = (c.nodes[0].ns.clone(), c.nodes[1].ns.clone());

    let paths = [
        (
            "bare veth between the nodes",
            n1.as_str(),
            n0.as_str(),
            c.nodes[1].ip.as_str(),
        ),
        (
            "VXLAN by hand (ip link)",
            hb.as_str(),
            ha.as_str(),
            "192.168.77.2",
        ),
        (
            "Strata overlay (security groups on)",
            sb.as_str(),
            sa.as_str(),
            strata_ips[1].as_str(),
        ),
    ];
    // A warm-up pass (not reported), then ROUNDS interleaved rounds; medians reported.
    for (_, server, client, ip) in &paths {
        let _ = rtt(server, client, ip);
    }
    let mut samples: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); paths.len()];
    for _ in 0..ROUNDS {
        for (i, (_, server, client, ip)) in paths.iter().enumerate() {
            let gbit = iperf(server, client, ip);
            let (p50, p99) = rtt(server, client, ip);
            samples[i].push((gbit, p50, p99));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    };
    let rows: Vec<(&str, f64, f64, f64)> = paths
        .iter()
        .zip(&samples)
        .map(|((name, ..), s)| {
            (
                *name,
                median(s.iter().map(|x| x.0).collect()),
                median(s.iter().map(|x| x.1).collect()),
                median(s.iter().map(|x| x.2).collect()),
            )
        })
        .collect();

    // 4. 1,000 ports bound to node 1: time until its agent carries all of them.
    cli(&c, &["network", "create", "many", "--json"]);
    cli(
        &c,
        &[
            "subnet",
            "create",
            "many-v4",
            "--network",
            "many",
            "--cidr",
            "10.60.0.0/20",
            "--json",
        ],
    );
    let t0 = Instant::now();
    for _ in 0..1000 {
        let o = c.nodes[0].cli(&[
            "port",
            "create",
            "--network",
            "many",
            "--host",
            &ids[1],
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let created = t0.elapsed();
    wait_for(Duration::from_secs(600), || {
        let v = cli(&c, &["port", "list", "--json"]);
        let active = v
            .as_array()?
            .iter()
            .filter(|p| p["status"] == "ACTIVE")
            .count();
        (active >= 1002).then_some(())
    })
    .expect("1,000 ports carried");
    let programmed = t0.elapsed();
    let taps = sh(&["ip", "-n", &n1, "-o", "link", "show", "type", "tun"]);
    let tap_count = String::from_utf8_lossy(&taps.stdout).lines().count();

    let reference = rows[1].1;
    let mut md = format!("Medians of {ROUNDS} interleaved rounds.\n\n| path | TCP Gbit/s (iperf3, 8 s) | UDP RTT p50 µs | p99 µs | throughput / hand-made VXLAN |\n|---|---|---|---|---|\n");
    for (name, gbit, p50, p99) in &rows {
        md += &format!(
            "| {name} | {gbit:.2} | {p50:.0} | {p99:.0} | {:.2} |\n",
            if reference > 0.0 {
                gbit / reference
            } else {
                0.0
            }
        );
    }
    md += &format!(
        "\n1,000 ports bound to one node: created through the CLI in {:.1} s; all ACTIVE (TAP on the bridge, rules applied) after {:.1} s; {tap_count} TAPs on the node.\n",
        created.as_secs_f64(),
        programmed.as_secs_f64()
    );
    println!("{md}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("overlay_vs_vxlan.md"), &md);
    for vm in vms {
        let _ = sh(&["ip", "netns", "del", &vm]);
    }
}
