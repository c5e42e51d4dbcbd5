//! The disks of the machine (from sysfs) and the choice of the one to install on: by
//! serial, WWN, model, size or type, never by `sdX` name; the boot medium is never a
//! candidate; a disk that holds partitions is refused unless the config says to wipe.

use std::path::Path;

use super::config::{DiskKind, DiskSelector, Prefer, Wipe};

/// The smallest disk Strata installs on: boot partitions, two system slots and room for
/// data.
pub const MIN_DISK: u64 = 16 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The kernel's name (`nvme0n1`, `vda`, `sda`): shown, never used to choose.
    pub name: String,
    pub size: u64,
    pub kind: DiskKind,
    pub removable: bool,
    pub serial: String,
    pub wwn: String,
    pub model: String,
    /// Names of its partitions (`vda1`, ...).
    pub partitions: Vec<String>,
}

impl Disk {
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} ({}, {:?}",
            self.name,
            super::human(self.size),
            self.kind
        );
        for (k, v) in [
            ("model", &self.model),
            ("serial", &self.serial),
            ("wwn", &self.wwn),
        ] {
            if !v.is_empty() {
                s += &format!(", {k} {v}");
            }
        }
        if self.removable {
            s += ", removable";
        }
        s + ")"
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The whole disks under `sys` (normally `/sys`), in name order.
pub fn discover(sys: &Path) -> std::io::Result<Vec<Disk>> {
    let mut out = vec![];
    for entry in std::fs::read_dir(sys.join("block"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if ["loop", "ram", "zram", "sr", "dm-", "md", "fd", "nbd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let d = entry.path();
        let size = read(&d.join("size")).parse::<u64>().unwrap_or(0) * 512;
        if size == 0 {
            continue;
        }
        let first = |files: &[&str]| {
            files
                .iter()
                .map(|f| read(&d.join(f)))
                .find(|v| !v.is_empty())
                .unwrap_or_default()
        };
        let kind = if name.starts_with("nvme") {
            DiskKind::Nvme
        } else if read(&d.join("queue/rotational")) == "1" {
            DiskKind::Hdd
        } else {
            DiskKind::Ssd
        };
        let mut partitions: Vec<String> = std::fs::read_dir(&d)?
            .filter_map(Result::ok)
            .filter(|e| e.path().join("partition").exists())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        partitions.sort();
        // A disk behind USB counts as removable (sticks often say they are not).
        let usb = std::fs::canonicalize(&d)
            .map(|p| p.to_string_lossy().contains("/usb"))
            .unwrap_or(false);
        out.push(Disk {
            removable: usb || read(&d.join("removable")) == "1",
            serial: first(&["serial", "device/serial"]),
            wwn: first(&["wwid", "device/wwid"]),
            model: first(&["device/model"]),
            name,
            size,
            kind,
            partitions,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `*` and `?` globbing, case-insensitive (model names vary in case).
pub fn glob(pattern: &str, text: &str) -> bool {
    fn m(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => m(&p[1..], t) || (!t.is_empty() && m(p, &t[1..])),
            (Some('?'), Some(_)) => m(&p[1..], &t[1..]),
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b) && m(&p[1..], &t[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    m(&p, &t)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("no disk to install on: {0}")]
    NoDisk(String),
    #[error("no disk matches the selector ({selector}); the disks are: {disks}")]
    NoMatch { selector: String, disks: String },
    #[error("{count} disks match the selector ({selector}): {disks}; add disk.serial or disk.wwn, or disk.prefer")]
    Ambiguous {
        count: usize,
        selector: String,
        disks: String,
    },
    #[error("disk {disk} is too small: Strata needs at least {need}")]
    TooSmall { disk: String, need: String },
    #[error("disk {disk} holds partitions ({parts}); nothing was written. Set disk.wipe = \"always\" to erase it")]
    HoldsData { disk: String, parts: String },
}

fn describe_selector(s: &DiskSelector) -> String {
    let mut v = vec![];
    if let Some(x) = &s.serial {
        v.push(format!("serial {x}"));
    }
    if let Some(x) = &s.wwn {
        v.push(format!("wwn {x}"));
    }
    if let Some(x) = &s.model {
        v.push(format!("model {x}"));
    }
    if let Some(x) = s.size_min {
        v.push(format!("at least {}", super::human(x)));
    }
    if let Some(x) = s.size_max {
        v.push(format!("at most {}", super::human(x)));
    }
    if let Some(k) = s.kind {
        v.push(format!("type {k:?}"));
    }
    if v.is_empty() {
        "any fixed disk".into()
    } else {
        v.join(", ")
    }
}

/// Chooses the target: the disks the selector matches, minus `boot` (the medium the
/// installer runs from) and removable ones unless a serial or WWN names them.
pub fn choose<'a>(
    disks: &'a [Disk],
    sel: &DiskSelector,
    wipe: Wipe,
    boot: &[String],
) -> Result<&'a Disk, Refusal> {
    let named = sel.serial.is_some() || sel.wwn.is_some();
    let candidates: Vec<&Disk> = disks
        .iter()
        .filter(|d| !boot.contains(&d.name))
        .filter(|d| named || !d.removable)
        .collect();
    if candidates.is_empty() {
        let why = if disks.is_empty() {
            "the machine has none".to_string()
        } else {
            format!(
                "only the boot medium or removable disks were found ({})",
                disks
                    .iter()
                    .map(Disk::describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        return Err(Refusal::NoDisk(why));
    }
    let matches: Vec<&Disk> = candidates
        .iter()
        .copied()
        .filter(|d| sel.serial.as_ref().is_none_or(|s| d.serial == *s))
        .filter(|d| {
            sel.wwn
                .as_ref()
                .is_none_or(|w| d.wwn.eq_ignore_ascii_case(w) || d.wwn.ends_with(w.as_str()))
        })
        .filter(|d| sel.model.as_ref().is_none_or(|m| glob(m, &d.model)))
        .filter(|d| sel.size_min.is_none_or(|m| d.size >= m))
        .filter(|d| sel.size_max.is_none_or(|m| d.size <= m))
        .filter(|d| sel.kind.is_none_or(|k| d.kind == k))
        .collect();
    let list = |v: &[&Disk]| {
        v.iter()
            .map(|d| d.describe())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let chosen = match (matches.len(), sel.prefer) {
        (0, _) => {
            return Err(Refusal::NoMatch {
                selector: describe_selector(sel),
                disks: list(&candidates),
            })
        }
        (1, _) => matches[0],
        (_, Some(Prefer::Smallest)) => *matches
            .iter()
            .min_by_key(|d| (d.size, &d.name))
            .unwrap_or(&matches[0]),
        (_, Some(Prefer::Largest)) => *matches
            .iter()
            .max_by_key(|d| (d.size, &d.name))
            .unwrap_or(&matches[0]),
        (n, None) => {
            return Err(Refusal::Ambiguous {
                count: n,
                selector: describe_selector(sel),
                disks: list(&matches),
            })
        }
    };
    check(chosen, wipe)?;
    Ok(chosen)
}

/// The safety gate for a chosen disk: big enough, and empty unless told to wipe.
pub fn check(chosen: &Disk, wipe: Wipe) -> Result<(), Refusal> {
    if chosen.size < MIN_DISK {
        return Err(Refusal::TooSmall {
            disk: chosen.describe(),
            need: super::human(MIN_DISK),
        });
    }
    if !chosen.partitions.is_empty() && wipe == Wipe::Never {
        return Err(Refusal::HoldsData {
            disk: chosen.describe(),
            parts: chosen.partitions.join(", "),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake disk: (name, GiB, rotational, removable, serial, partitions).
    type FakeDisk<'a> = (&'a str, u64, bool, bool, &'a str, &'a [&'a str]);

    /// A fake sysfs with these disks (and a loop device, which is not one).
    fn sysfs(disks: &[FakeDisk]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (name, gib, rot, rem, serial, parts) in disks {
            let d = t.path().join("block").join(name);
            std::fs::create_dir_all(d.join("queue")).unwrap();
            std::fs::create_dir_all(d.join("device")).unwrap();
            std::fs::write(d.join("size"), format!("{}\n", gib * (1 << 30) / 512)).unwrap();
            std::fs::write(d.join("queue/rotational"), if *rot { "1\n" } else { "0\n" }).unwrap();
            std::fs::write(d.join("removable"), if *rem { "1\n" } else { "0\n" }).unwrap();
            std::fs::write(d.join("device/serial"), format!("{serial}\n")).unwrap();
            std::fs::write(d.join("device/model"), "QEMU HARDDISK\n").unwrap();
            for p in *parts {
                std::fs::create_dir_all(d.join(p)).unwrap();
                std::fs::write(d.join(p).join("partition"), "1\n").unwrap();
            }
        }
        std::fs::create_dir_all(t.path().join("block/loop0")).unwrap();
        t
    }

    #[test]
    fn discovery_reads_size_kind_serial_and_partitions() {
        let t = sysfs(&[
            ("nvme0n1", 64, false, false, "NV1", &[]),
            ("sda", 500, true, false, "HD1", &["sda1", "sda2"]),
            ("sdb", 4, false, true, "STICK", &["sdb1"]),
        ]);
        let d = discover(t.path()).unwrap();
        assert_eq!(d.len(), 3, "loop devices are not disks: {d:?}");
        assert_eq!(d[0].kind, DiskKind::Nvme);
        assert_eq!(d[1].kind, DiskKind::Hdd);
        assert_eq!(d[1].partitions, vec!["sda1", "sda2"]);
        assert_eq!(d[1].size, 500 << 30);
        assert!(d[2].removable);
        assert_eq!(d[0].serial, "NV1");
    }

    #[test]
    fn choice_by_selector_with_clear_refusals() {
        let t = sysfs(&[
            ("nvme0n1", 64, false, false, "NV1", &[]),
            ("nvme1n1", 128, false, false, "NV2", &[]),
            ("sda", 500, true, false, "HD1", &["sda1"]),
            ("sdb", 8, false, false, "SMALL", &[]),
            ("sdc", 4, false, true, "STICK", &["sdc1"]),
        ]);
        let d = discover(t.path()).unwrap();
        let boot = vec!["sdc".to_string()];
        let sel = |f: &dyn Fn(&mut DiskSelector)| {
            let mut s = DiskSelector::default();
            f(&mut s);
            s
        };
        // By serial.
        let c = choose(
            &d,
            &sel(&|s| s.serial = Some("NV2".into())),
            Wipe::Never,
            &boot,
        )
        .unwrap();
        assert_eq!(c.name, "nvme1n1");
        // By type, several: ambiguous unless a preference is given.
        let e = choose(
            &d,
            &sel(&|s| s.kind = Some(DiskKind::Nvme)),
            Wipe::Never,
            &boot,
        )
        .unwrap_err();
        assert!(matches!(e, Refusal::Ambiguous { count: 2, .. }), "{e}");
        let c = choose(
            &d,
            &sel(&|s| {
                s.kind = Some(DiskKind::Nvme);
                s.prefer = Some(Prefer::Smallest)
            }),
            Wipe::Never,
            &boot,
        )
        .unwrap();
        assert_eq!(c.name, "nvme0n1");
        // A disk with partitions is refused without wipe, taken with it.
        let hdd = sel(&|s| s.kind = Some(DiskKind::Hdd));
        let e = choose(&d, &hdd, Wipe::Never, &boot)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("holds partitions (sda1)") && e.contains("nothing was written"),
            "{e}"
        );
        assert_eq!(choose(&d, &hdd, Wipe::Always, &boot).unwrap().name, "sda");
        // Too small.
        let e = choose(
            &d,
            &sel(&|s| s.serial = Some("SMALL".into())),
            Wipe::Always,
            &boot,
        )
        .unwrap_err();
        assert!(matches!(e, Refusal::TooSmall { .. }), "{e}");
        // No match names the disks there are; the boot stick is never a candidate.
        let e = choose(
            &d,
            &sel(&|s| s.serial = Some("STICK".into())),
            Wipe::Always,
            &boot,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no disk matches") && e.contains("NV1") && !e.contains("STICK,"),
            "{e}"
        );
        // Size range and model glob.
        let c = choose(
            &d,
            &sel(&|s| {
                s.size_min = Some(100 << 30);
                s.size_max = Some(200 << 30);
                s.model = Some("qemu*".into())
            }),
            Wipe::Never,
            &boot,
        )
        .unwrap();
        assert_eq!(c.name, "nvme1n1");
    }

    #[test]
    fn no_disk_at_all_or_only_the_stick() {
        let t = sysfs(&[]);
        let d = discover(t.path()).unwrap();
        let e = choose(&d, &DiskSelector::default(), Wipe::Always, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("the machine has none"), "{e}");
        let t = sysfs(&[("sda", 32, false, true, "STICK", &[])]);
        let d = discover(t.path()).unwrap();
        let e = choose(&d, &DiskSelector::default(), Wipe::Always, &["sda".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("only the boot medium"), "{e}");
    }

    #[test]
    fn globs() {
        assert!(glob("Samsung*", "SAMSUNG MZ7LH960"));
        assert!(glob("?DA", "sda"));
        assert!(!glob("WD*", "Samsung"));
        assert!(glob("*", ""));
    }
}
