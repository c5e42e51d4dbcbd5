//! `strata install` and an installed node's start: the unattended configuration read
//! from layered sources (`config`), the choice of the target disk (`disks`), the
//! partition layout (`layout`), writing the system and its boot loaders (`install`), the
//! first-boot file (`firstboot`), the questions asked when there is no config (`tui`)
//! and `strata boot`, PID 1 of an installed node (`boot`).
//! The image itself is built by `installer/build.sh` (`make usb`).

pub mod boot;
pub mod config;
pub mod disks;
pub mod firstboot;
pub mod install;
pub mod layout;
pub mod tui;

/// Bytes as a person reads them (`16.0 GiB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// What an install would do: the chosen disk and the partitions it gets, in words.
pub fn describe_plan(disk: &disks::Disk, wipe: config::Wipe) -> String {
    let parts = layout::layout();
    let mut s = format!("install on {}", disk.describe());
    if !disk.partitions.is_empty() && wipe == config::Wipe::Always {
        s += &format!(", erasing {}", disk.partitions.join(", "));
    }
    s += ":";
    for (i, p) in parts.iter().enumerate() {
        let size = match p.size_mib {
            Some(m) => human(m << 20),
            None => human(disk.size.saturating_sub(layout::fixed_mib(&parts) << 20)),
        };
        s += &format!(
            "\n  {} {} {}",
            layout::partition_name(&disk.name, i + 1),
            p.name,
            size
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_plans_read_well() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(16 << 30), "16.0 GiB");
        let d = disks::Disk {
            name: "nvme0n1".into(),
            size: 64 << 30,
            kind: config::DiskKind::Nvme,
            removable: false,
            serial: "S1".into(),
            wwn: String::new(),
            model: "M".into(),
            partitions: vec!["nvme0n1p1".into()],
        };
        let p = describe_plan(&d, config::Wipe::Always);
        assert!(p.contains("erasing nvme0n1p1"), "{p}");
        assert!(p.contains("nvme0n1p5 data 59.7 GiB"), "{p}");
    }
}
