//! Disk image formats as users upload them. Glance stores the bytes as sent; Strata boots
//! from a volume, so what it keeps in the image's volume is the raw disk: `raw` (and the
//! raw-like `iso`, `ami`, `ari`, `aki`) go in as they arrive, while `qcow2`, `vmdk`,
//! `vhdx`, `vdi` and `vhd` are spooled to the node's disk, checked and converted with
//! `qemu-img` (Debian package `qemu-utils`). The checksum and multihash stay those of
//! the bytes as sent; `virtual_size` is the raw disk's size.
//!
//! Refused, by name: data that is another format than the one declared (a qcow2 uploaded
//! as `raw`, a raw file declared `qcow2`), images with a backing file or an external data
//! file, VMDK images that are not one self-contained file (their descriptor can name any
//! file on the node), images `qemu-img check` finds corrupt (a truncated qcow2, for one),
//! and virtual sizes over the image limit. `qemu-img` reads untrusted headers under an
//! address-space and CPU limit, as OpenStack's services run it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use futures::StreamExt;
use serde_json::Value;

use super::ControlError;

/// How Strata stores a declared `disk_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stored as sent.
    Raw,
    /// Converted from this `qemu-img` format.
    Convert(&'static str),
}

/// Formats Glance knows that Strata does not store.
const UNSUPPORTED: &[&str] = &["ploop"];

pub fn kind(disk_format: &str) -> Result<Kind, ControlError> {
    Ok(match disk_format {
        "raw" | "iso" | "ami" | "ari" | "aki" => Kind::Raw,
        "qcow2" => Kind::Convert("qcow2"),
        "vmdk" => Kind::Convert("vmdk"),
        "vhdx" => Kind::Convert("vhdx"),
        "vdi" => Kind::Convert("vdi"),
        "vhd" => Kind::Convert("vpc"),
        f if UNSUPPORTED.contains(&f) => {
            return Err(ControlError::Invalid(format!(
                "disk_format {f} is not supported: upload raw, qcow2, vmdk, vhdx, vdi or vhd"
            )))
        }
        f => {
            return Err(ControlError::Invalid(format!(
                "disk_format {f:?} is not a disk format this cloud knows"
            )))
        }
    })
}

/// The container format a file's first bytes name, for formats recognisable there.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(0, b"QFI\xfb") {
        Some("qcow2")
    } else if at(0, b"KDMV") || at(0, b"# Disk DescriptorFile") || at(0, b"COWD") {
        Some("vmdk")
    } else if at(0, b"vhdxfile") {
        Some("vhdx")
    } else if at(0x40, &[0x7f, 0x10, 0xda, 0xbe]) {
        Some("vdi")
    } else if at(0, b"conectix") {
        Some("vhd")
    } else {
        None
    }
}

/// Refuses raw data whose first bytes show another format.
pub fn check_raw_head(declared: &str, head: &[u8]) -> Result<(), ControlError> {
    match sniff(head) {
        Some(found) => Err(ControlError::Invalid(format!(
            "the data is a {found} image, not {declared}: set disk_format to {found}"
        ))),
        None => Ok(()),
    }
}

/// Where the installed system keeps the tools it carries (see `installer/build.sh`).
const APPLIANCE_TOOLS: &str = "/usr/libexec/strata";

/// The `qemu-img` this node runs, or why it cannot convert.
fn qemu_img() -> Result<PathBuf, ControlError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from(APPLIANCE_TOOLS)])
        .map(|d| d.join("qemu-img"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            ControlError::Unavailable(
                "converting this image needs qemu-img (Debian package qemu-utils), which this \
                 node lacks: upload it as raw, or through another node"
                    .into(),
            )
        })
}

/// Runs `qemu-img` with `args`; `limited`: under the address-space and CPU limits used
/// for reading untrusted headers.
async fn run(args: &[&str], limited: bool) -> Result<std::process::Output, ControlError> {
    let mut cmd = tokio::process::Command::new(qemu_img()?);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if limited {
        // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                use rustix::process::{setrlimit, Resource, Rlimit};
                let lim = |n| Rlimit {
                    current: Some(n),
                    maximum: Some(n),
                };
                setrlimit(Resource::As, lim(1 << 30))?;
                setrlimit(Resource::Cpu, lim(30))?;
                Ok(())
            });
        }
    }
    cmd.output()
        .await
        .map_err(|e| ControlError::Unavailable(format!("cannot run qemu-img: {e}")))
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .trim()
        .trim_start_matches("qemu-img: ")
        .to_string()
}

/// `qemu-img <cmd> --output=json` on an untrusted file, under the limits; a failure is
/// refused as `what: <qemu-img's words>`.
async fn json_of(cmd: &str, format: &str, file: &str, what: &str) -> Result<Value, ControlError> {
    let o = run(&[cmd, "--output=json", "-f", format, file], true).await?;
    if !o.status.success() {
        return Err(ControlError::Invalid(format!("{what}: {}", stderr_of(&o))));
    }
    serde_json::from_slice(&o.stdout)
        .map_err(|e| ControlError::Invalid(format!("qemu-img {cmd} gave no JSON: {e}")))
}

/// What the checks learned about an image to convert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub virtual_size: u64,
}

/// Checks a spooled image of `format` (a `qemu-img` name) and returns its virtual size.
pub async fn inspect(path: &Path, format: &str, max: u64) -> Result<Inspected, ControlError> {
    let file = path.to_string_lossy();
    let bad = |m: String| ControlError::Invalid(m);
    let mut head = vec![0u8; 512];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path)
            .map_err(|e| ControlError::Unavailable(format!("{}: {e}", path.display())))?;
        f.read(&mut head).unwrap_or(0)
    };
    head.truncate(n);
    let declared = if format == "vpc" { "vhd" } else { format };
    match sniff(&head) {
        Some(found) if found != declared => {
            return Err(bad(format!(
                "the data is a {found} image, not {declared}: set disk_format to {found}"
            )))
        }
        // A VHD's signature may be only in its footer; the others have theirs at the start.
        None if declared != "vhd" => {
            return Err(bad(format!("the data is not a {declared} image")));
        }
        _ => {}
    }
    let info = json_of(
        "info",
        format,
        &file,
        &format!("the data is not a valid {declared} image"),
    )
    .await?;
    if let Some(b) = info.get("backing-filename").and_then(Value::as_str) {
        return Err(bad(format!(
            "the image has a backing file ({b:?}): upload a standalone image \
             (qemu-img convert it first)"
        )));
    }
    let specific = &info["format-specific"]["data"];
    if let Some(d) = specific.get("data-file").and_then(Value::as_str) {
        return Err(bad(format!(
            "the image keeps its data in an external file ({d:?}): upload a standalone image"
        )));
    }
    if format == "vmdk" {
        let kind = specific["create-type"].as_str().unwrap_or("?");
        if !matches!(kind, "monolithicSparse" | "streamOptimized") {
            return Err(bad(format!(
                "VMDK images of type {kind} are refused: only monolithicSparse and \
                 streamOptimized (one self-contained file) are taken"
            )));
        }
    }
    let virtual_size = info["virtual-size"]
        .as_u64()
        .ok_or_else(|| bad("qemu-img info gave no virtual size".into()))?;
    if virtual_size > max {
        return Err(bad(format!(
            "Image exceeds the storage quota: its virtual size is {virtual_size} bytes \
             (at most {max})"
        )));
    }
    if matches!(format, "qcow2" | "vmdk" | "vhdx" | "vdi") {
        let o = run(&["check", "--output=json", "-f", format, &file], true).await?;
        // 0: clean; 3: leaked clusters only (harmless); 63: no check for this format.
        match o.status.code() {
            Some(0 | 3 | 63) => {}
            _ => {
                let report: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
                let what = match report["corruptions"].as_u64() {
                    Some(n) if n > 0 => format!("{n} corruptions (truncated or damaged)"),
                    _ => stderr_of(&o),
                };
                return Err(bad(format!("the {declared} image is corrupt: {what}")));
            }
        }
    }
    if format == "qcow2" {
        let p = path.to_path_buf();
        let found = tokio::task::spawn_blocking(move || qcow2_past_end(&p))
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        if let Some(what) = found {
            return Err(bad(format!(
                "the qcow2 image is corrupt: truncated ({what})"
            )));
        }
    }
    // A truncated image can pass `check` (its tables end before its data does): every
    // mapped extent must lie inside the file.
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let map = json_of(
        "map",
        format,
        &file,
        &format!("the {declared} image cannot be read"),
    )
    .await?;
    for e in map.as_array().map(Vec::as_slice).unwrap_or_default() {
        if let (Some(off), Some(len)) = (e["offset"].as_u64(), e["length"].as_u64()) {
            if e["data"] == true && off.saturating_add(len) > file_len {
                return Err(bad(format!(
                    "the {declared} image is corrupt: truncated (its data reaches byte {}, \
                     the file has {file_len})",
                    off.saturating_add(len)
                )));
            }
        }
    }
    Ok(Inspected { virtual_size })
}

/// What of a qcow2 image lies past the end of its file (a truncated upload), if anything:
/// `qemu-img` reads such tables and clusters as zeros, so neither `check` nor `map` nor
/// `convert` notices. Reads the header, the L1 table and every L2 table.
fn qcow2_past_end(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut h = [0u8; 48];
    f.read_exact_at(&mut h, 0).ok()?;
    let be32 = |o: usize| u32::from_be_bytes(h[o..o + 4].try_into().unwrap_or_default());
    let be64 = |o: usize| u64::from_be_bytes(h[o..o + 8].try_into().unwrap_or_default());
    let cluster_bits = be32(20);
    if !(9..=21).contains(&cluster_bits) {
        return None; // qemu-img has refused it already
    }
    let cluster = 1u64 << cluster_bits;
    let (l1_size, l1_offset) = (u64::from(be32(36)), be64(40));
    let beyond = |off: u64, n: u64| off.saturating_add(n) > len;
    if beyond(l1_offset, l1_size * 8) {
        return Some(format!("its L1 table ends past byte {len}"));
    }
    const OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
    const COMPRESSED: u64 = 1 << 62;
    let mut l1 = vec![0u8; (l1_size * 8) as usize];
    f.read_exact_at(&mut l1, l1_offset).ok()?;
    let mut l2 = vec![0u8; cluster as usize];
    for e in l1.chunks_exact(8) {
        let l2_offset = u64::from_be_bytes(e.try_into().unwrap_or_default()) & OFFSET;
        if l2_offset == 0 {
            continue;
        }
        if beyond(l2_offset, cluster) {
            return Some(format!(
                "an L2 table at byte {l2_offset}, the file has {len}"
            ));
        }
        f.read_exact_at(&mut l2, l2_offset).ok()?;
        for d in l2.chunks_exact(8) {
            let d = u64::from_be_bytes(d.try_into().unwrap_or_default());
            let off = d & OFFSET;
            if d & COMPRESSED == 0 && off != 0 && beyond(off, cluster) {
                return Some(format!("a data cluster at byte {off}, the file has {len}"));
            }
        }
    }
    None
}

/// Converts a checked image to a sparse raw file.
pub async fn convert(src: &Path, format: &str, dst: &Path) -> Result<(), ControlError> {
    let (s, d) = (src.to_string_lossy(), dst.to_string_lossy());
    let o = run(
        &["convert", "-f", format, "-O", "raw", "-S", "4k", &s, &d],
        false,
    )
    .await?;
    if o.status.success() {
        Ok(())
    } else {
        Err(ControlError::Invalid(format!(
            "the image could not be converted: {}",
            stderr_of(&o)
        )))
    }
}

/// An upload received, checked and converted: the raw file, and what was sent.
pub struct Converted {
    dir: PathBuf,
    raw: PathBuf,
    source: PathBuf,
    /// Bytes as sent, and their MD5 and SHA-512.
    pub size: u64,
    pub md5: String,
    pub sha512: String,
    pub virtual_size: u64,
}

impl Converted {
    /// The raw disk, as a stream for the volume writer.
    pub fn raw_stream(&self) -> Result<super::images::DataStream, ControlError> {
        file_stream(&self.raw)
    }

    /// The bytes as sent.
    pub fn source_stream(&self) -> Result<super::images::DataStream, ControlError> {
        file_stream(&self.source)
    }
}

fn file_stream(path: &Path) -> Result<super::images::DataStream, ControlError> {
    let f = std::fs::File::open(path)
        .map_err(|e| ControlError::Unavailable(format!("{}: {e}", path.display())))?;
    let f = tokio::fs::File::from_std(f);
    let s = futures::stream::unfold(Some(f), |f| async move {
        use tokio::io::AsyncReadExt;
        let mut f = f?;
        let mut buf = vec![0u8; 4 << 20];
        let mut n = 0;
        // Whole chunks where the file allows: reads may return less.
        while n < buf.len() {
            match f.read(&mut buf[n..]).await {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Some((Err(e.to_string()), None)),
            }
        }
        if n == 0 {
            return None;
        }
        buf.truncate(n);
        Some((Ok(bytes::Bytes::from(buf)), Some(f)))
    });
    Ok(Box::pin(s))
}

impl Drop for Converted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Receives an upload into `scratch/<image id>/`, checks it is a `format` image and
/// converts it to raw. The files go when the result is dropped, or at once on failure.
pub async fn receive_and_convert(
    scratch: &Path,
    id: &str,
    format: &'static str,
    len: Option<u64>,
    room: Option<u64>,
    mut body: super::images::DataStream,
) -> Result<Converted, ControlError> {
    use md5::Md5;
    use sha2::{Digest, Sha512};
    use tokio::io::AsyncWriteExt;
    let max = super::images::MAX_IMAGE_BYTES;
    let dir = scratch.join(id);
    let io = |what: &str, p: &Path, e: std::io::Error| {
        ControlError::Unavailable(format!("cannot {what} {}: {e}", p.display()))
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
    // From here on the directory goes with `guard` unless the conversion succeeds.
    let mut guard = Converted {
        dir: dir.clone(),
        raw: dir.join("disk.raw"),
        source: dir.join("upload"),
        size: 0,
        md5: String::new(),
        sha512: String::new(),
        virtual_size: 0,
    };
    let src = guard.source.clone();
    let mut f = tokio::fs::File::create(&src)
        .await
        .map_err(|e| io("create", &src, e))?;
    let (mut md5, mut sha) = (Md5::new(), Sha512::new());
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| ControlError::Invalid(format!("the upload was cut off: {e}")))?;
        total += chunk.len() as u64;
        super::images::account(&mut body, total, len, room).await?;
        md5.update(&chunk);
        sha.update(&chunk);
        f.write_all(&chunk)
            .await
            .map_err(|e| io("write", &src, e))?;
    }
    if let Some(l) = len.filter(|l| *l != total) {
        return Err(ControlError::Invalid(format!(
            "the upload ended after {total} of {l} bytes"
        )));
    }
    f.flush().await.map_err(|e| io("write", &src, e))?;
    drop(f);
    let info = inspect(&src, format, max).await?;
    convert(&src, format, &guard.raw).await?;
    guard.size = total;
    guard.md5 = hex::encode(md5.finalize());
    guard.sha512 = hex::encode(sha.finalize());
    guard.virtual_size = info.virtual_size;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_known_by_their_first_bytes() {
        assert_eq!(sniff(b"QFI\xfb\0\0\0\x03"), Some("qcow2"));
        assert_eq!(sniff(b"KDMV\x01"), Some("vmdk"));
        assert_eq!(sniff(b"vhdxfile...."), Some("vhdx"));
        let mut vdi = vec![0u8; 0x48];
        vdi[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        assert_eq!(sniff(&vdi), Some("vdi"));
        assert_eq!(sniff(&[0u8; 512]), None);
        assert!(check_raw_head("raw", b"QFI\xfb").is_err());
        assert!(check_raw_head("raw", &[0xeb, 0x63, 0x90]).is_ok());
        assert_eq!(kind("qcow2").unwrap(), Kind::Convert("qcow2"));
        assert_eq!(kind("vhd").unwrap(), Kind::Convert("vpc"));
        assert_eq!(kind("iso").unwrap(), Kind::Raw);
        assert!(kind("ploop").is_err());
    }
}
