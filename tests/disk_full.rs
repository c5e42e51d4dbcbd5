//! A node whose data disk fills up: writes are refused with an error naming the cause
//! (the CLI exits non-zero), nothing is proposed so nothing acknowledged can be lost, the
//! node keeps serving reads, and once space is freed writes resume and every acknowledged
//! write reads back intact, also after a restart. Needs root (mounts a small tmpfs).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn")
}

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = sh(&["umount", "-l", self.0.to_str().unwrap()]);
    }
}

fn free_port() -> String {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

#[test]
fn a_full_data_disk_refuses_writes_clearly_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let o = sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=12m",
        "tmpfs",
        dir.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "mount tmpfs (needs root): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _m = Mount(dir.clone());
    let d = dir.to_str().unwrap();
    let cfg = tmp.path().join("strata.toml");
    std::fs::write(&cfg, "[raft]\nmin_free_mb = 4\n").unwrap();
    let c = cfg.to_str().unwrap();
    let listen = free_port();
    assert!(sh(&[BIN, "--data-dir", d, "init", "--listen", &listen])
        .status
        .success());
    let serve = || {
        Command::new(BIN)
            .args([
                "--data-dir",
                d,
                "serve",
                "--config",
                c,
                "--listen",
                &listen,
                "--metrics-listen",
                "off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = serve();
    let up = |d: &str| {
        sh(&[BIN, "--data-dir", d, "status", "--json"])
            .status
            .success()
    };
    let t = Instant::now();
    while !up(d) {
        assert!(t.elapsed() < Duration::from_secs(20), "node did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Write 100 KiB values until the disk is full.
    let big = "y".repeat(100 << 10);
    let mut acked = vec![];
    let mut failure = None;
    for i in 0..400 {
        let o = sh(&[BIN, "--data-dir", d, "debug", "put", &format!("k{i}"), &big]);
        if o.status.success() {
            acked.push(i);
        } else {
            failure = Some(String::from_utf8_lossy(&o.stderr).to_string());
            break;
        }
    }
    let failure = failure.expect("the disk never filled up");
    assert!(
        !acked.is_empty(),
        "no write succeeded before the disk filled"
    );
    eprintln!(
        "FIGURES disk full after {} acknowledged writes; writer saw: {failure}",
        acked.len()
    );
    assert!(
        failure.contains("data disk full") && failure.contains(d),
        "{failure}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon died on a full disk"
    );
    // Reads still work while full.
    let o = sh(&[BIN, "--data-dir", d, "debug", "get", "k0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Free space: writes resume without a restart.
    let o = sh(&["mount", "-o", "remount,size=256m", d]);
    assert!(o.status.success());
    let o = sh(&[BIN, "--data-dir", d, "debug", "put", "after", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = child.kill();
    let _ = child.wait();

    // Restart: every acknowledged write is there.
    child = serve();
    let t = Instant::now();
    while !up(d) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "node did not restart after space was freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in &acked {
        let o = sh(&[BIN, "--data-dir", d, "debug", "get", &format!("k{i}")]);
        assert!(
            o.status.success(),
            "acknowledged write k{i} lost: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v["value"].as_str().map(str::len),
            Some(100 << 10),
            "k{i} read back wrong"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
