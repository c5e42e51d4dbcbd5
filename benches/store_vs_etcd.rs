//! `make bench`: replicated write throughput and commit latency of Strata's store against
//! etcd, both as 3-member clusters on the same three network namespaces, fsync on in both,
//! driven by the same client (`strata debug bench-write`) from the leader's namespace, with
//! the same value size and concurrency, alternating runs so both see the same machine.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{wait_for, Cluster, BIN};

struct Etcd(Vec<Child>);

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_etcd(c: &Cluster) -> Etcd {
    let initial: Vec<String> = c
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("e{i}=http://{}:2380", n.ip))
        .collect();
    let mut children = vec![];
    for (i, n) in c.nodes.iter().enumerate() {
        let dir = c.tmp.path().join(format!("etcd{i}"));
        let log = std::fs::File::create(c.tmp.path().join(format!("etcd{i}.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &n.ns, "etcd", "--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--listen-client-urls",
                &format!("http://{}:2379", n.ip),
                "--advertise-client-urls",
                &format!("http://{}:2379", n.ip),
                "--listen-peer-urls",
                &format!("http://{}:2380", n.ip),
                "--initial-advertise-peer-urls",
                &format!("http://{}:2380", n.ip),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "strata-bench",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (install the etcd-server package)");
        children.push(child);
    }
    Etcd(children)
}

/// The etcd member that leads, as an index into the cluster's nodes.
fn etcd_leader(c: &Cluster) -> Option<usize> {
    let endpoints: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("http://{}:2379", n.ip))
        .collect();
    let o = c.nodes[0].in_ns(&[
        "etcdctl",
        "--endpoints",
        &endpoints.join(","),
        "endpoint",
        "status",
        "-w",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v.as_array()?.iter().find_map(|e| {
        let s = &e["Status"];
        if s["header"]["member_id"] == s["leader"] {
            let ep = e["Endpoint"].as_str()?;
            endpoints.iter().position(|x| x == ep)
        } else {
            None
        }
    })
}

fn run(
    c: &Cluster,
    at: usize,
    target: &str,
    writes: usize,
    conc: usize,
    size: usize,
) -> serde_json::Value {
    let o = c.nodes[at].in_ns(&[
        BIN,
        "debug",
        "bench-write",
        target,
        "--writes",
        &writes.to_string(),
        "--concurrency",
        &conc.to_string(),
        "--value-bytes",
        &size.to_string(),
    ]);
    assert!(
        o.status.success(),
        "bench-write {target}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("bench-write prints JSON")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let c = Cluster::form(3);
    let _etcd = start_etcd(&c);
    let el = wait_for(Duration::from_secs(30), || etcd_leader(&c))
        .expect("etcd cluster did not elect a leader");
    let sid = c.leader(&[0, 1, 2]).expect("strata leader");
    let sl = c.index_of(&sid).expect("strata leader index");
    let socket = format!("strata:{}", c.nodes[sl].dir.join("strata.sock").display());
    let etcd = format!("etcd:{}:2379", c.nodes[el].ip);
    let size = 256;
    // Warm both up (connections, caches, first snapshot).
    run(&c, el, &etcd, 500, 8, size);
    run(&c, sl, &socket, 500, 8, size);

    let mut rows = vec![];
    for (conc, writes) in [(1usize, 1500usize), (16, 8000), (64, 16000)] {
        let (mut e_tp, mut e50, mut e99, mut s_tp, mut s50, mut s99) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..3 {
            let e = run(&c, el, &etcd, writes, conc, size);
            let s = run(&c, sl, &socket, writes, conc, size);
            assert_eq!(s["errors"], 0, "strata write errors: {s}");
            assert_eq!(e["errors"], 0, "etcd write errors: {e}");
            e_tp.push(e["writes_per_sec"].as_f64().unwrap());
            e50.push(e["p50_ms"].as_f64().unwrap());
            e99.push(e["p99_ms"].as_f64().unwrap());
            s_tp.push(s["writes_per_sec"].as_f64().unwrap());
            s50.push(s["p50_ms"].as_f64().unwrap());
            s99.push(s["p99_ms"].as_f64().unwrap());
        }
        rows.push((
            conc,
            median(s_tp),
            median(s50),
            median(s99),
            median(e_tp),
            median(e50),
            median(e99),
        ));
    }
    let mut md = String::from(
        "| concurrency | strata writes/s | strata p50 ms | strata p99 ms | etcd writes/s | etcd p50 ms | etcd p99 ms | throughput ratio | p99 ratio |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for (conc, stp, s50, s99, etp, e50, e99) in &rows {
        md += &format!(
            "| {conc} | {stp:.0} | {s50:.2} | {s99:.2} | {etp:.0} | {e50:.2} | {e99:.2} | {:.2} | {:.2} |\n",
            stp / etp,
            s99 / e99
        );
    }
    println!("\nStrata store vs etcd {}, 3 members in 3 network namespaces, {size}-byte values, median of 3 runs each:\n", etcd_version());
    println!("{md}");
    println!("(throughput ratio = strata / etcd, higher is better; p99 ratio = strata / etcd, lower is better)");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("store_vs_etcd.md"), md);
}

fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.replace("etcd Version: ", "")))
        .unwrap_or_default()
}
