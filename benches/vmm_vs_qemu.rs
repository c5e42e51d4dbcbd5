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
    // strata-tiny, SeaBIOS for Strata's VMM and a config drive (the same for both VMMs).
    let tiny = root.join("images/out/tiny/strata-tiny.raw");
    assert!(tiny.exists(), "run `make images-tiny` first");
    let bios = strata::compute::kvm::bios_image().expect("SeaBIOS (Debian package seabios)");
    let meta = serde_json::json!({"uuid": "b", "name": "bench", "hostname": "bench"});
    let iso = strata::compute::iso9660::build(
        "config-2",
        &[(
            "openstack/latest/meta_data.json".to_string(),
            meta.to_string().into_bytes(),
        )],
    )
    .expect("config drive");
    let iso_path = tmp.path().join("tiny-config.iso");
    std::fs::write(&iso_path, iso).unwrap();
    let file = |src: &std::path::Path, dst: &str| format!("{}:{dst}", src.display());
    let o = Command::new(root.join("images/testhost/build.sh"))
        .arg("--file")
        .arg(file(&tiny, "/guest/tiny.raw"))
        .arg("--file")
        .arg(file(&bios, "/guest/bios-microvm.bin"))
        .arg("--file")
        .arg(file(&iso_path, "/guest/tiny-config.iso"))
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
        let name = match name {
            "strata-vmm" => "strata-vmm",
            "strata-vmm-fw" => "strata-vmm-fw",
            "qemu-kvm-fw" => "qemu-kvm-fw",
            _ => "qemu-kvm",
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let k = match k {
                "userspace_ms" => "userspace_ms",
                "overhead_kb" => "overhead_kb",
                "anon_overhead_kb" => "anon_overhead_kb",
                "max_overhead_kb" => "max_overhead_kb",
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
    let (sm, qm) = (
        get("strata-vmm", "max_overhead_kb"),
        get("qemu-kvm", "max_overhead_kb"),
    );
    let (fu, fq) = (
        get("strata-vmm-fw", "userspace_ms"),
        get("qemu-kvm-fw", "userspace_ms"),
    );
    let (fm, fqm) = (
        get("strata-vmm-fw", "max_overhead_kb"),
        get("qemu-kvm-fw", "max_overhead_kb"),
    );
    let report = format!(
        "VMM boot (median of {rounds}, 256 MiB, 1 vCPU, nested KVM in a TCG host)\n\
         | | Strata VMM | QEMU -enable-kvm | ratio |\n|---|---|---|---|\n\
         | start → guest userspace (direct kernel boot) | {su:.0} ms | {qu:.0} ms | {:.2} |\n\
         | monitor memory overhead (RSS − guest RAM RSS) | {:.1} MiB | {:.1} MiB | {:.2} |\n\
         | of which anonymous, per VM (not shared code) | {:.1} MiB | {:.1} MiB | {:.2} |\n\
         | largest overhead over the VM's life | {:.1} MiB | {:.1} MiB | {:.2} |\n\
         | start → SSH server up, strata-tiny through SeaBIOS and GRUB | {fu:.0} ms | {fq:.0} ms | {:.2} |\n\
         | largest overhead over that VM's life | {:.1} MiB | {:.1} MiB | {:.2} |\n",
        su / qu,
        so / 1024.0,
        qo / 1024.0,
        so / qo,
        sa / 1024.0,
        qa / 1024.0,
        sa / qa,
        sm / 1024.0,
        qm / 1024.0,
        sm / qm,
        fu / fq,
        fm / 1024.0,
        fqm / 1024.0,
        fm / fqm,
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
