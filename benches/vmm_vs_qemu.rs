//! `make bench`, compute part: inside one nested-KVM test host (QEMU TCG with emulated SVM;
//! this machine's own /dev/kvm cannot boot Linux), the same guest kernel and initramfs with
//! the same memory are booted alternately by Strata's VMM and by `qemu-system-x86_64
//! -enable-kvm`: time to the guest's userspace marker, and the monitor's memory overhead
//! (RSS minus the guest RAM's RSS). Medians over the rounds; the ratio is Strata / QEMU.
//! Absolute times inside a TCG host mean little; the ratio is the figure.

use std::path::PathBuf;
use std::process::Command;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let rounds: usize = std::env::var("VMM_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = tmp.path().join("strata");
    let st = Command::new("strip")
        .arg("-o")
        .arg(&bin)
        .arg(env!("CARGO_BIN_EXE_strata"))
        .status()
        .expect("strip");
    assert!(st.success(), "strip failed");
    let script = std::fs::read_to_string(root.join("benches/nested/vmm-vs-qemu.sh"))
        .expect("scenario")
        .replace("@STRATA@", bin.to_str().unwrap())
        .replace("@ROUNDS@", &rounds.to_string());
    let scenario = tmp.path().join("scenario.sh");
    std::fs::write(&scenario, script).unwrap();
    let initrd = tmp.path().join("host.cpio.gz");
    let o = Command::new(root.join("images/testhost/build.sh"))
        .arg("--with-qemu")
        .arg("--scenario")
        .arg(&scenario)
        .arg("--bin")
        .arg(&bin)
        .arg("--out")
        .arg(&initrd)
        .output()
        .expect("images/testhost/build.sh");
    assert!(
        o.status.success(),
        "test host build: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let log = tmp.path().join("host.log");
    let _ = Command::new(root.join("images/testhost/run.sh"))
        .arg("--initrd")
        .arg(&initrd)
        .args(["--mem", "2048", "--timeout", "1800", "--log"])
        .arg(&log)
        .output()
        .expect("images/testhost/run.sh");
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    let mut samples: std::collections::BTreeMap<(&str, &str), Vec<f64>> = Default::default();
    for line in console
        .lines()
        .filter(|l| l.starts_with("STRATA-BENCH-RSS"))
    {
        println!("{line}");
    }
    for line in console.lines().filter(|l| l.starts_with("STRATA-BENCH ")) {
        println!("{line}");
        let mut it = line.split_whitespace().skip(1);
        let Some(name) = it.next() else { continue };
        let name = if name == "strata-vmm" {
            "strata-vmm"
        } else {
            "qemu-kvm"
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let k = match k {
                "userspace_ms" => "userspace_ms",
                "overhead_kb" => "overhead_kb",
                "anon_overhead_kb" => "anon_overhead_kb",
                _ => continue,
            };
            if let Ok(v) = v.parse::<f64>() {
                samples.entry((name, k)).or_default().push(v);
            }
        }
    }
    let get = |n, k| median(samples.get(&(n, k)).cloned().unwrap_or_default());
    let (su, qu) = (
        get("strata-vmm", "userspace_ms"),
        get("qemu-kvm", "userspace_ms"),
    );
    let (so, qo) = (
        get("strata-vmm", "overhead_kb"),
        get("qemu-kvm", "overhead_kb"),
    );
    let (sa, qa) = (
        get("strata-vmm", "anon_overhead_kb"),
        get("qemu-kvm", "anon_overhead_kb"),
    );
    let report = format!(
        "VMM boot (median of {rounds}, 256 MiB, 1 vCPU, nested KVM in a TCG host)\n\
         | | Strata VMM | QEMU -enable-kvm | ratio |\n|---|---|---|---|\n\
         | start → guest userspace | {su:.0} ms | {qu:.0} ms | {:.2} |\n\
         | monitor memory overhead (RSS − guest RAM RSS) | {:.1} MiB | {:.1} MiB | {:.2} |\n\
         | of which anonymous, per VM (not shared code) | {:.1} MiB | {:.1} MiB | {:.2} |\n",
        su / qu,
        so / 1024.0,
        qo / 1024.0,
        so / qo,
        sa / 1024.0,
        qa / 1024.0,
        sa / qa
    );
    print!("{report}");
    let out = root.join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("vmm_vs_qemu.md"), &report);
    assert!(
        su.is_finite() && qu.is_finite(),
        "missing samples; test host console:\n{}",
        console
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
