//! `strata install`: reads the layered config, chooses the disk, and writes the system:
//! GPT, file systems, the kernel and initramfs (checked against the image's SHA-256 sums)
//! into system slot A, GRUB for BIOS and the shim chain for UEFI, a UEFI boot entry, and
//! the first-boot file on the data partition. Everything that can refuse does so before
//! the first byte is written; a failure after that erases the partition table again, so
//! no half-written disk is left bootable.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::config::{self, Layer, Mode};
use std::io::IsTerminal;

use super::{disks, firstboot, layout, tui};

/// Where `strata install` finds things; defaults are those of the installer image.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The mounted installer image (kernel, initramfs, SHA256SUMS, embedded config).
    pub medium: Option<PathBuf>,
    /// The boot medium's disk name, never a target.
    pub medium_disk: Option<String>,
    /// The mounted `STRATACFG` volume.
    pub config_volume: Option<PathBuf>,
    /// A network install's config, downloaded to a file, and the URL it came from.
    pub net_config: Option<(PathBuf, String)>,
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub cmdline: PathBuf,
    /// Boot loader files built with the image (`bios/`, `efi/`).
    pub boot_files: PathBuf,
    /// External tools (sfdisk, mke2fs, mkfs.fat, grub-bios-setup, efibootmgr).
    pub tools: PathBuf,
    /// Scratch mount points.
    pub run: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            medium: None,
            medium_disk: None,
            config_volume: None,
            net_config: None,
            sys: "/sys".into(),
            dev: "/dev".into(),
            cmdline: "/proc/cmdline".into(),
            boot_files: "/usr/lib/strata/boot".into(),
            tools: "/usr/libexec/strata".into(),
            run: "/run/strata".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Refused(#[from] disks::Refusal),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Other(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
    let what = what.into();
    move |source| InstallError::Io { what, source }
}

/// The config layers in precedence order (later wins): the image's, the STRATACFG
/// volume's, the kernel command line's, the network install server's.
pub fn layers(p: &Paths) -> Result<Vec<Layer>, InstallError> {
    let mut out = vec![];
    let mut file = |path: PathBuf, source: &str| -> Result<(), InstallError> {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                out.push(config::parse(source, &text)?);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("reading {}", path.display()))(e)),
        }
    };
    if let Some(m) = &p.medium {
        file(m.join("strata/install.toml"), "the install image")?;
    }
    if let Some(v) = &p.config_volume {
        file(v.join("install.toml"), "the STRATACFG volume")?;
    }
    let cmdline = std::fs::read_to_string(&p.cmdline).unwrap_or_default();
    out.push(config::from_cmdline(&cmdline)?);
    if let Some((path, url)) = &p.net_config {
        let text =
            std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
        out.push(config::parse(url, &text)?);
    }
    Ok(out)
}

/// Runs a tool from `p.tools`, failing with its stderr.
fn tool(p: &Paths, name: &str, args: &[&str], stdin: Option<&str>) -> Result<(), InstallError> {
    use std::io::Write;
    let path = p.tools.join(name);
    let mut cmd = Command::new(&path);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(io(format!("starting {}", path.display())))?;
    if let (Some(text), Some(mut sin)) = (stdin, child.stdin.take()) {
        sin.write_all(text.as_bytes())
            .map_err(io(format!("writing to {name}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io(format!("waiting for {name}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(InstallError::Tool {
            tool: format!("{name} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn mount(dev: &Path, dir: &Path, fstype: &str) -> Result<(), InstallError> {
    use std::ffi::CString;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let c = |p: &str| CString::new(p).unwrap_or_default();
    let (d, m, t) = (
        c(&dev.to_string_lossy()),
        c(&dir.to_string_lossy()),
        c(fstype),
    );
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe { libc::mount(d.as_ptr(), m.as_ptr(), t.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(io(format!(
            "mounting {} on {}",
            dev.display(),
            dir.display()
        ))(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn umount(dir: &Path) -> Result<(), InstallError> {
    let m = std::ffi::CString::new(dir.to_string_lossy().as_bytes()).unwrap_or_default();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::umount(m.as_ptr()) };
    if rc != 0 {
        return Err(io(format!("unmounting {}", dir.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The SHA-256 sums the image lists (`<hex>  <path>` lines).
fn sums(medium: &Path) -> Result<Vec<(String, String)>, InstallError> {
    let path = medium.join("strata/SHA256SUMS");
    let text = std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, f)| (h.trim().to_string(), f.trim().to_string()))
        .collect())
}

/// Copies `src` to `dst`, checking the copy's SHA-256 against `want`.
fn copy_checked(src: &Path, dst: &Path, want: &str) -> Result<(), InstallError> {
    use std::io::{Read, Write};
    let mut r = std::fs::File::open(src).map_err(io(format!("opening {}", src.display())))?;
    let mut w = std::fs::File::create(dst).map_err(io(format!("creating {}", dst.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(io(format!("reading {}", src.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        w.write_all(&buf[..n])
            .map_err(io(format!("writing {}", dst.display())))?;
    }
    w.sync_all()
        .map_err(io(format!("syncing {}", dst.display())))?;
    let got = hex::encode(h.finalize());
    if got != want {
        return Err(InstallError::Other(format!(
            "{} is damaged: its SHA-256 is {got}, the image lists {want}; rewrite the stick",
            src.display()
        )));
    }
    Ok(())
}

/// The installed system's GRUB menu (slot A).
pub fn grub_cfg(slot: &str) -> String {
    format!(
        "# Written by `strata install`.\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout=1\n\
         menuentry \"Strata {} (system {slot})\" {{\n  \
           linux /boot/vmlinuz strata.mode=run console=tty0 console=ttyS0,115200 panic=10\n  \
           initrd /boot/initrd.img\n\
         }}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Waits (up to 10 s) for the kernel to create the partition's device node.
fn wait_for(dev: &Path) -> Result<(), InstallError> {
    for _ in 0..100 {
        if dev.exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(InstallError::Other(format!(
        "{} did not appear after partitioning",
        dev.display()
    )))
}

/// Erases the first and last MiB of the disk (both GPT copies), so a failed install leaves
/// nothing that boots.
fn erase_table(disk: &Path) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(disk)?;
    let size = f.seek(SeekFrom::End(0))?;
    let zero = vec![0u8; 1 << 20];
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&zero)?;
    if size > 2 << 20 {
        f.seek(SeekFrom::Start(size - (1 << 20)))?;
        f.write_all(&zero)?;
    }
    f.sync_all()
}

/// The whole install. Prints what it does; returns what to do after (`reboot` or
/// `poweroff`).
pub fn run(p: &Paths) -> Result<&'static str, InstallError> {
    println!("STRATA-INSTALL-START version={}", env!("CARGO_PKG_VERSION"));
    let mut layers = layers(p)?;
    for l in &layers {
        println!("config: read {}", l.source);
    }
    let all = disks::discover(&p.sys).map_err(io("reading the disks from sysfs"))?;
    println!("disks found:");
    for d in &all {
        let tag = if p.medium_disk.as_deref() == Some(&d.name) {
            " [the installer medium]"
        } else {
            ""
        };
        println!("  {}{tag}", d.describe());
    }
    let boot: Vec<String> = p.medium_disk.iter().cloned().collect();
    let (cfg, disk) = match config::merge(&layers) {
        Ok(cfg) => {
            let disk = disks::choose(&all, &cfg.disk, cfg.wipe, &boot)?;
            (cfg, disk)
        }
        // No config at all and a person at the console: ask.
        Err(config::ConfigError::Missing(m))
            if m.starts_with("no mode") && std::io::stdin().is_terminal() =>
        {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let mut out = std::io::stdout();
            let mut c = tui::Console {
                input: &mut input,
                out: &mut out,
                secret: tui::read_secret_tty,
            };
            let a = tui::ask(&mut c, &all, &boot).map_err(InstallError::Other)?;
            layers.push(a.layer);
            let cfg = config::merge(&layers)?;
            let disk = all
                .iter()
                .find(|d| d.name == a.disk)
                .ok_or_else(|| InstallError::Other(format!("disk {} is gone", a.disk)))?;
            disks::check(disk, cfg.wipe)?;
            (cfg, disk)
        }
        Err(e) => return Err(e.into()),
    };
    match &cfg.mode {
        Mode::Create { cluster_name, .. } => {
            println!("config: create a new cluster named {cluster_name}")
        }
        Mode::Join { addr, token, .. } => println!(
            "config: join the cluster at {} {}",
            addr.as_deref().unwrap_or("found on the local network"),
            if token.is_some() {
                "with a join token"
            } else {
                "with a join code an administrator accepts"
            }
        ),
    }
    let medium = p.medium.as_ref().ok_or_else(|| {
        InstallError::Other(
            "the installer medium (the ISO 9660 volume STRATA) was not found, so there is no system to copy".into(),
        )
    })?;
    let sums = sums(medium)?;
    let want = |f: &str| {
        sums.iter()
            .find(|(_, n)| n == f)
            .map(|(h, _)| h.clone())
            .ok_or_else(|| {
                InstallError::Other(format!("{f} is not listed in the image's SHA256SUMS"))
            })
    };
    let (sum_kernel, sum_initrd) = (want("boot/vmlinuz")?, want("boot/initrd.img")?);
    println!("{}", super::describe_plan(disk, cfg.wipe));

    let dev = p.dev.join(&disk.name);
    let result = write_disk(p, &cfg, disk, medium, &sum_kernel, &sum_initrd);
    if let Err(e) = &result {
        println!(
            "install failed: {e}; erasing the partition table of {}",
            dev.display()
        );
        for sub in ["esp", "a", "data"] {
            let _ = umount(&p.run.join(sub));
        }
        if let Err(e2) = erase_table(&dev) {
            println!("erasing {} failed too: {e2}", dev.display());
        }
    }
    result?;
    println!(
        "STRATA-INSTALL-OK disk={} after={}",
        disk.name,
        if cfg.poweroff { "poweroff" } else { "reboot" }
    );
    Ok(if cfg.poweroff { "poweroff" } else { "reboot" })
}

fn write_disk(
    p: &Paths,
    cfg: &config::InstallConfig,
    disk: &disks::Disk,
    medium: &Path,
    sum_kernel: &str,
    sum_initrd: &str,
) -> Result<(), InstallError> {
    let dev = p.dev.join(&disk.name);
    let devs = dev.to_string_lossy().to_string();
    let parts = layout::layout();
    let part = |label: &str| -> PathBuf {
        p.dev.join(layout::partition_name(
            &disk.name,
            layout::number(&parts, label),
        ))
    };
    println!("writing the partition table");
    tool(
        p,
        "sfdisk",
        &[
            "--wipe",
            "always",
            "--wipe-partitions",
            "always",
            "-q",
            &devs,
        ],
        Some(&layout::sfdisk_script(&parts)),
    )?;
    for pt in &parts[1..] {
        wait_for(&part(pt.label))?;
    }
    let (esp, a, b, data) = (
        part("STRATA-ESP"),
        part("STRATA-A"),
        part("STRATA-B"),
        part("STRATA-DATA"),
    );
    println!("making file systems");
    tool(
        p,
        "mkfs.fat",
        &["-F", "32", "-n", "STRATA-ESP", &esp.to_string_lossy()],
        None,
    )?;
    for (d, label) in [(&a, "STRATA-A"), (&b, "STRATA-B"), (&data, "STRATA-DATA")] {
        tool(
            p,
            "mke2fs",
            &["-q", "-F", "-t", "ext4", "-L", label, &d.to_string_lossy()],
            None,
        )?;
    }

    println!("copying the system to slot A");
    let ma = p.run.join("a");
    mount(&a, &ma, "ext4")?;
    let grub = ma.join("boot/grub");
    std::fs::create_dir_all(grub.join("i386-pc")).map_err(io("creating /boot/grub"))?;
    copy_checked(
        &medium.join("boot/vmlinuz"),
        &ma.join("boot/vmlinuz"),
        sum_kernel,
    )?;
    copy_checked(
        &medium.join("boot/initrd.img"),
        &ma.join("boot/initrd.img"),
        sum_initrd,
    )?;
    // The sums the copies were checked against: a node serving network installs hands
    // them out without hashing its system again.
    std::fs::write(
        ma.join("boot/SHA256SUMS"),
        format!("{sum_kernel}  boot/vmlinuz\n{sum_initrd}  boot/initrd.img\n"),
    )
    .map_err(io("writing boot/SHA256SUMS"))?;
    std::fs::write(grub.join("grub.cfg"), grub_cfg("A")).map_err(io("writing grub.cfg"))?;
    for f in ["boot.img", "core.img"] {
        std::fs::copy(
            p.boot_files.join("bios").join(f),
            grub.join("i386-pc").join(f),
        )
        .map_err(io(format!("copying the BIOS boot loader's {f}")))?;
    }
    println!("installing the BIOS boot loader");
    tool(
        p,
        "grub-bios-setup",
        &["-d", &grub.join("i386-pc").to_string_lossy(), &devs],
        None,
    )?;
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    umount(&ma)?;

    println!("writing the first-boot configuration");
    let md = p.run.join("data");
    mount(&data, &md, "ext4")?;
    firstboot::write(&md, cfg).map_err(io("writing firstboot.toml"))?;
    umount(&md)?;

    // The ESP last: until it is written, UEFI firmware has nothing to boot.
    println!("installing the UEFI boot loader");
    let me = p.run.join("esp");
    mount(&esp, &me, "vfat")?;
    let efi = p.boot_files.join("efi");
    for dir in ["EFI/BOOT", "EFI/debian"] {
        let d = me.join(dir);
        std::fs::create_dir_all(&d).map_err(io(format!("creating {dir} on the ESP")))?;
        std::fs::copy(efi.join("grub.cfg"), d.join("grub.cfg"))
            .map_err(io("copying grub.cfg to the ESP"))?;
    }
    for f in ["BOOTX64.EFI", "grubx64.efi", "mmx64.efi"] {
        let src = efi.join(f);
        if src.exists() {
            std::fs::copy(&src, me.join("EFI/BOOT").join(f))
                .map_err(io(format!("copying {f} to the ESP")))?;
        }
    }
    // SAFETY: as above.
    unsafe { libc::sync() };
    umount(&me)?;

    if p.sys.join("firmware/efi").exists() {
        let esp_no = layout::number(&parts, "STRATA-ESP").to_string();
        // A full or read-only NVRAM must not fail the install: the fallback path
        // \EFI\BOOT\BOOTX64.EFI still boots.
        match tool(
            p,
            "efibootmgr",
            &["-q", "-c", "-d", &devs, "-p", &esp_no, "-L", "Strata", "-l", "\\EFI\\BOOT\\BOOTX64.EFI"],
            None,
        ) {
            Ok(()) => println!("UEFI boot entry \"Strata\" written, first in the boot order"),
            Err(e) => println!("warning: no UEFI boot entry ({e}); the firmware's fallback path still boots the disk"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_menu_boots_slot_a_in_run_mode() {
        let g = grub_cfg("A");
        assert!(g.contains("linux /boot/vmlinuz strata.mode=run"), "{g}");
        assert!(g.contains("initrd /boot/initrd.img"), "{g}");
        assert!(g.contains("(system A)"), "{g}");
    }

    #[test]
    fn layers_come_in_order_and_a_bad_file_names_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let medium = dir.path().join("medium");
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(medium.join("strata")).unwrap();
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(
            medium.join("strata/install.toml"),
            "mode = \"create\"\nhostname = \"img\"\n",
        )
        .unwrap();
        std::fs::write(vol.join("install.toml"), "hostname = \"vol\"\n").unwrap();
        let cmdline = dir.path().join("cmdline");
        std::fs::write(&cmdline, "quiet strata.install.cluster_name=lab\n").unwrap();
        let p = Paths {
            medium: Some(medium.clone()),
            config_volume: Some(vol.clone()),
            cmdline: cmdline.clone(),
            ..Paths::default()
        };
        let l = layers(&p).unwrap();
        let sources: Vec<&str> = l.iter().map(|x| x.source.as_str()).collect();
        assert_eq!(
            sources,
            [
                "the install image",
                "the STRATACFG volume",
                "the kernel command line"
            ]
        );
        let cfg = config::merge(&l).unwrap();
        assert_eq!(cfg.hostname.as_deref(), Some("vol"));
        assert!(matches!(cfg.mode, Mode::Create { ref cluster_name, .. } if cluster_name == "lab"));
        std::fs::write(vol.join("install.toml"), "hostnme = \"vol\"\n").unwrap();
        let e = layers(&p).unwrap_err().to_string();
        assert!(e.contains("STRATACFG") && e.contains("hostnme"), "{e}");
    }

    #[test]
    fn a_damaged_copy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("k");
        std::fs::write(&src, b"kernel").unwrap();
        let good = hex::encode(Sha256::digest(b"kernel"));
        copy_checked(&src, &dir.path().join("ok"), &good).unwrap();
        let e = copy_checked(&src, &dir.path().join("bad"), &"0".repeat(64)).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
    }

    #[test]
    fn a_failed_install_erases_both_partition_tables() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        std::fs::write(&disk, vec![0xAAu8; 8 << 20]).unwrap();
        erase_table(&disk).unwrap();
        let d = std::fs::read(&disk).unwrap();
        assert!(d[..1 << 20].iter().all(|b| *b == 0));
        assert!(d[(7 << 20)..].iter().all(|b| *b == 0));
        assert!(d[(1 << 20)..(7 << 20)].iter().all(|b| *b == 0xAA));
    }
}
