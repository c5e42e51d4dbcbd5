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

#[derive(Clone, Copy, Default, Debug)]
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

/// The median of each figure on its own.
fn median(mut v: Vec<Result>) -> Result {
    let mid = |xs: &mut Vec<f64>| {
        xs.sort_by(|a, b| a.total_cmp(b));
        xs.get(xs.len() / 2).copied().unwrap_or(0.0)
    };
    let mut iops: Vec<f64> = v.iter().map(|r| r.iops).collect();
    let mut mib: Vec<f64> = v.iter().map(|r| r.mib_s).collect();
    let mut p99: Vec<f64> = v.iter().map(|r| r.p99_ms).collect();
    v.clear();
    Result {
        iops: mid(&mut iops),
        mib_s: mid(&mut mib),
        p99_ms: mid(&mut p99),
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

    // The transport's own bulk throughput, node 0 to node 1, measured in every round.
    let status = c.nodes[0].status().expect("status");
    let peer = status["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["addr"] == c.nodes[1].addr().as_str()))
        .and_then(|n| n["id"].as_str())
        .expect("node 1's id")
        .to_string();
    let transport = || {
        let o = c.nodes[0].cli(&["debug", "transport-bench", &peer, "--mib", "512"]);
        let v: Value = serde_json::from_slice(&o.stdout).ok()?;
        v["mib_per_s"].as_f64()
    };

    // VOLUME_BENCH_ONLY=strata skips the references (profiling Strata alone; no ratios).
    // Throughput varies from run to run on shared cores: every cell is the median of
    // VOLUME_BENCH_ROUNDS rounds (default 3), each running every job on all three targets
    // and the transport bench.
    let only_strata = std::env::var("VOLUME_BENCH_ONLY").as_deref() == Ok("strata");
    let rounds: usize = std::env::var("VOLUME_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    // VOLUME_BENCH_JOB=<words> runs only the jobs whose name contains them (profiling).
    let only_job = std::env::var("VOLUME_BENCH_JOB").ok();
    let jobs: Vec<&Job> = JOBS
        .iter()
        .filter(|j| only_job.as_deref().is_none_or(|w| j.name.contains(w)))
        .collect();
    let mut runs: Vec<Vec<(Result, Result, Result)>> = vec![Vec::new(); jobs.len()];
    let mut bulk: Vec<f64> = Vec::new();
    for round in 0..rounds {
        for (i, job) in jobs.iter().enumerate() {
            let (r, q) = if only_strata {
                (Result::default(), Result::default())
            } else {
                (fio(job, &raw_target), fio(job, &qemu_target))
            };
            let s = fio(job, &strata_target);
            eprintln!(
                "round {round}: {}: raw {:.0}/{:.0}, qemu-nbd {:.0}/{:.0}, strata {:.0}/{:.0} (IOPS/MiB/s)",
                job.name, r.iops, r.mib_s, q.iops, q.mib_s, s.iops, s.mib_s
            );
            runs[i].push((r, q, s));
        }
        if let Some(b) = transport() {
            eprintln!("round {round}: transport {b:.0} MiB/s");
            bulk.push(b);
        }
    }
    let _ = qemu_nbd.kill();
    let _ = qemu_nbd.wait();
    let rows: Vec<(&str, Result, Result, Result)> = jobs
        .iter()
        .zip(&runs)
        .map(|(job, rs)| {
            (
                job.name,
                median(rs.iter().map(|x| x.0).collect()),
                median(rs.iter().map(|x| x.1).collect()),
                median(rs.iter().map(|x| x.2).collect()),
            )
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
        let ratio_of = |b: &Result| {
            if b.iops > 0.0 || b.mib_s > 0.0 {
                format!("{:.2}", ratio(s, b))
            } else {
                "-".to_string()
            }
        };
        md += &format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            fmt(r),
            fmt(q),
            fmt(s),
            ratio_of(r),
            ratio_of(q)
        );
    }
    md += &format!(
        "\nNode-to-node transport (QUIC + TLS 1.3, one stream, node 0 to node 1, median of {} × 512 MiB, one per round): {bulk_mib_s:.0} MiB/s. \
         A 3-replica write sends each block to the two remote replicas, so replication alone can carry at most about {:.0} MiB/s of writes.\n",
        bulk.len(),
        bulk_mib_s / 2.0
    );
    println!("{md}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("volume_vs_fio.md"), &md);
}
