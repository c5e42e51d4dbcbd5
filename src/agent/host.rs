//! What this machine has: CPU cores, memory, disks, hostname.

use crate::cluster::store::tables::DiskInfo;

#[derive(Debug, Clone)]
pub struct HostInfo {
    pub hostname: String,
    pub cores: u32,
    pub memory_bytes: u64,
    pub disks: Vec<DiskInfo>,
    /// The hypervisor driver chosen for this host and why (never silent).
    pub hypervisor: String,
    pub hypervisor_reason: String,
}

pub fn detect() -> HostInfo {
    let (accel, why) = crate::compute::detect_accel();
    HostInfo {
        hypervisor: accel.name().to_string(),
        hypervisor_reason: why,
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_bytes: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| parse_meminfo_total(&m))
            .unwrap_or(0),
        disks: disks(),
    }
}

fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whole disks from /sys/block (no partitions, loop, ram or device-mapper devices).
fn disks() -> Vec<DiskInfo> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return vec![];
    };
    let mut out: Vec<DiskInfo> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            if ["loop", "ram", "dm-", "zram", "sr", "nbd"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                return None;
            }
            let sectors: u64 = std::fs::read_to_string(e.path().join("size"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let rotational = std::fs::read_to_string(e.path().join("queue/rotational"))
                .map(|s| s.trim() == "1")
                .unwrap_or(false);
            Some(DiskInfo {
                name,
                size_bytes: sectors * 512,
                rotational,
            })
        })
        .filter(|d| d.size_bytes > 0)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_parsed_in_bytes() {
        let text = "MemTotal:       24567890 kB\nMemFree:        1 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(24567890 * 1024));
        assert_eq!(parse_meminfo_total("garbage"), None);
    }

    #[test]
    fn this_host_reports_cores_and_memory() {
        let h = detect();
        assert!(h.cores >= 1);
        assert!(h.memory_bytes > 0);
    }
}
