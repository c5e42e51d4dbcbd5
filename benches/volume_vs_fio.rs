//! `make bench`: I/O on a 3-replica Strata volume (three namespace nodes, exported over NBD
//! by node 0, replicated over the nodes' QUIC transport) against fio on the raw local
//! filesystem (the physical limit here) and against a single local file served by
//! `qemu-nbd` (what a user would pick on one machine): the same fio jobs, one after the
//! other in the same run. Also the node-to-node transport's own bulk throughput.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{wait_for, Cluster};
use serde_json::Value;

const RUNTIME_S: u32 = 8;

struct Job {
    name: &'static str,
    rw: &'static str,
    bs: &'static str,
    depth: u32,
}

const JOBS: [Job; 3] = [
    Job {
        name: "4 KiB random write, QD32",
        rw: "randwrite",
        bs: "4k",
        depth: 32,
    },
    Job {
        name: "1 MiB sequential write, QD8",
        rw: "write",
        bs: "1M",
        depth: 8,
    },
    Job {
        name: "1 MiB sequential read, QD8",
        rw: "read",
        bs: "1M",
        depth: 8,
    },
];

#[derive(Clone, Copy, Default)]
struct Result {
    iops: f64,
    mib_s: f64,
    p99_ms: f64,
}

/// Runs one fio job; `target` are the engine arguments.
fn fio(job: &Job, target: &[String]) -> Result {
    let o = Command::new("fio")
        .args([
            "--name=bench",
            &format!("--rw={}", job.rw),
            &format!("--bs={}", job.bs),
            &format!("--iodepth={}", job.depth),
            &format!("--runtime={RUNTIME_S}"),
            "--time_based",
            "--size=512M",
            "--output-format=json",
            "--randrepeat=0",
        ])
        .args(target)
        .output()
        .expect("fio (Debian package fio; `make bench` installs it)");
    assert!(
        o.status.success(),
        "fio {:?} failed: {}",
        target,
        String::from_utf8_lossy(&o.stderr)
    );
    // fio may print notes before its JSON document.
    let text = String::from_utf8_lossy(&o.stdout);
    let start = text.find("\n{").map(|i| i + 1).unwrap_or(0);
    let v: Value = serde_json::from_str(&text[start..])
        .unwrap_or_else(|e| panic!("fio json ({e}): {}", &text[..text.len().min(400)]));
    let side = if job.rw.contains("read") {
        "read"
    } else {
        "write"
    };
    let s = &v["jobs"][0][side];
    Result {
        iops: s["iops"].as_f64().unwrap_or(0.0),
        mib_s: s["bw"].as_f64().unwrap_or(0.0) / 1024.0,
        p99_ms: s["clat_ns"]["percentile"]["99.000000"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e6,
    }
}

fn main() {
    let c = Cluster::form(3);
    let tmp = c.tmp.path().to_path_buf();

    // Raw local filesystem: a preallocated file, O_DIRECT, libaio.
    let raw = tmp.join("raw.img");
    let st = Command::new("fallocate")
        .args(["-l", "1G"])
        .arg(&raw)
        .status()
        .expect("fallocate");
    assert!(st.success());
    let raw_target = vec![
        "--ioengine=libaio".to_string(),
        "--direct=1".to_string(),
        format!("--filename={}", raw.display()),
    ];

    // qemu-nbd serving a local file.
    let qfile = tmp.join("qemu-nbd.img");
    Command::new("fallocate")
        .args(["-l", "1G"])
        .arg(&qfile)
        .status()
        .expect("fallocate");
    let qsock = tmp.join("qemu-nbd.sock");
    let mut qemu_nbd = Command::new("qemu-nbd")
        .arg(format!("--socket={}", qsock.display()))
        .args([
            "--format=raw",
            "--persistent",
            "--cache=none",
            "--aio=native",
            "--shared=8",
        ])
        .arg(&qfile)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-nbd (Debian package qemu-utils)");
    wait_for(Duration::from_secs(10), || qsock.exists().then_some(())).expect("qemu-nbd socket");
    let qemu_target = vec![
        "--ioengine=nbd".to_string(),
        format!("--uri=nbd+unix:///?socket={}", qsock.display()),
    ];

    // A 3-replica Strata volume, exported by node 0.
    let mut n = 0;
    let name = wait_for(Duration::from_secs(60), || {
        n += 1;
        let name = format!("bench{n}");
        let o = c.nodes[0].cli(&["volume", "create", &name, "--size", "1G", "--wait", "30"]);
        o.status.success().then_some(())?;
        let o = c.nodes[0].cli(&["volume", "show", &name, "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout).ok()?;
        (v["replicas"].as_array()?.len() == 3).then_some(name)
    })
    .expect("a 3-replica volume");
    let o = c.nodes[0].cli(&["volume", "export", &name]);
    assert!(o.status.success(), "export failed");
    let uri = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let strata_target = vec!["--ioengine=nbd".to_string(), format!("--uri={uri}")];

    // VOLUME_BENCH_ONLY=strata skips the references (profiling Strata alone; no ratios).
    let only_strata = std::env::var("VOLUME_BENCH_ONLY").as_deref() == Ok("strata");
    let mut rows = Vec::new();
    for job in &JOBS {
        let (r, q) = if only_strata {
            (Result::default(), Result::default())
        } else {
            (fio(job, &raw_target), fio(job, &qemu_target))
        };
        let s = fio(job, &strata_target);
        rows.push((job.name, r, q, s));
    }
    let _ = qemu_nbd.kill();
    let _ = qemu_nbd.wait();

    // The transport's own bulk throughput, node 0 to node 1 (median of 3).
    let status = c.nodes[0].status().expect("status");
    let peer = status["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["addr"] == c.nodes[1].addr().as_str()))
        .and_then(|n| n["id"].as_str())
        .expect("node 1's id")
        .to_string();
    let mut bulk: Vec<f64> = (0..3)
        .filter_map(|_| {
            let o = c.nodes[0].cli(&["debug", "transport-bench", &peer, "--mib", "512"]);
            let v: Value = serde_json::from_slice(&o.stdout).ok()?;
            v["mib_per_s"].as_f64()
        })
        .collect();
    bulk.sort_by(|a, b| a.total_cmp(b));
    let bulk_mib_s = bulk.get(bulk.len() / 2).copied().unwrap_or(0.0);

    let mut md = String::new();
    md += "| job | raw file (fio, O_DIRECT) | qemu-nbd local file | Strata volume, 3 replicas | Strata / raw | Strata / qemu-nbd |\n";
    md += "|---|---|---|---|---|---|\n";
    for (name, r, q, s) in &rows {
        let fmt = |x: &Result| {
            if name.contains("random") {
                format!("{:.0} IOPS, p99 {:.2} ms", x.iops, x.p99_ms)
            } else {
                format!("{:.0} MiB/s, p99 {:.2} ms", x.mib_s, x.p99_ms)
            }
        };
        let ratio = |a: &Result, b: &Result| {
            if name.contains("random") {
                a.iops / b.iops.max(1e-9)
            } else {
                a.mib_s / b.mib_s.max(1e-9)
            }
        };
        md += &format!(
            "| {name} | {} | {} | {} | {:.2} | {:.2} |\n",
            fmt(r),
            fmt(q),
            fmt(s),
            ratio(s, r),
            ratio(s, q)
        );
    }
    md += &format!(
        "\nNode-to-node transport (QUIC + TLS 1.3, one stream, node 0 to node 1, median of 3 × 512 MiB): {bulk_mib_s:.0} MiB/s. \
         A 3-replica write sends each block to the two remote replicas, so replication alone can carry at most about {:.0} MiB/s of writes.\n",
        bulk_mib_s / 2.0
    );
    println!("{md}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("volume_vs_fio.md"), &md);
}
