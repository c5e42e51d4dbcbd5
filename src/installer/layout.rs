//! The installed disk's layout: GPT with a BIOS boot partition (GRUB's core image on
//! legacy BIOS), the EFI system partition, two system slots (A/B, for upgrades that can
//! fall back) and the data partition (Raft, regions, VMs) on the rest.

/// GPT partition type GUIDs.
const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: &'static str,
    /// The file system label the boot loader and init look for.
    pub label: &'static str,
    /// MiB; `None` for the rest of the disk.
    pub size_mib: Option<u64>,
    pub type_guid: &'static str,
}

pub fn layout() -> Vec<Part> {
    vec![
        Part {
            name: "bios-boot",
            label: "",
            size_mib: Some(1),
            type_guid: BIOS_BOOT,
        },
        Part {
            name: "esp",
            label: "STRATA-ESP",
            size_mib: Some(256),
            type_guid: ESP,
        },
        Part {
            name: "system-a",
            label: "STRATA-A",
            size_mib: Some(2048),
            type_guid: LINUX,
        },
        Part {
            name: "system-b",
            label: "STRATA-B",
            size_mib: Some(2048),
            type_guid: LINUX,
        },
        Part {
            name: "data",
            label: "STRATA-DATA",
            size_mib: None,
            type_guid: LINUX,
        },
    ]
}

/// The sfdisk script that makes the layout (first partition at 1 MiB).
pub fn sfdisk_script(parts: &[Part]) -> String {
    let mut s = String::from("label: gpt\n");
    for (i, p) in parts.iter().enumerate() {
        let start = if i == 0 { "start=2048, " } else { "" };
        let size = p
            .size_mib
            .map(|m| format!("size={m}MiB, "))
            .unwrap_or_default();
        s += &format!("{start}{size}type={}, name=\"{}\"\n", p.type_guid, p.name);
    }
    s
}

/// The device of partition `n` (from 1) of disk `disk`: `vda3`, `nvme0n1p3`, `mmcblk0p3`.
pub fn partition_name(disk: &str, n: usize) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{n}")
    } else {
        format!("{disk}{n}")
    }
}

/// The partition number (from 1) of the partition labelled `label`.
pub fn number(parts: &[Part], label: &str) -> usize {
    parts.iter().position(|x| x.label == label).unwrap_or(0) + 1
}

/// MiB the fixed partitions take (the data partition gets the rest).
pub fn fixed_mib(parts: &[Part]) -> u64 {
    1 + parts.iter().filter_map(|p| p.size_mib).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::super::disks::MIN_DISK;
    use super::*;

    #[test]
    fn the_layout_fits_the_smallest_disk_with_room_for_data() {
        let l = layout();
        let fixed = fixed_mib(&l) << 20;
        assert!(fixed + (8u64 << 30) <= MIN_DISK, "{fixed}");
        let s = sfdisk_script(&l);
        assert!(
            s.starts_with("label: gpt\nstart=2048, size=1MiB, type=21686148"),
            "{s}"
        );
        assert!(
            s.contains(
                "size=2048MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"system-b\""
            ),
            "{s}"
        );
        assert!(s.trim_end().ends_with("name=\"data\""), "{s}");
        assert_eq!(s.lines().count(), 6);
        assert_eq!(number(&l, "STRATA-ESP"), 2);
        assert_eq!(number(&l, "STRATA-DATA"), 5);
    }

    #[test]
    fn partition_devices_follow_the_kernel_naming() {
        assert_eq!(partition_name("vda", 3), "vda3");
        assert_eq!(partition_name("sdb", 1), "sdb1");
        assert_eq!(partition_name("nvme0n1", 2), "nvme0n1p2");
        assert_eq!(partition_name("mmcblk0", 5), "mmcblk0p5");
    }
}
