//! The QEMU tools (Debian package qemu-utils) as independent NBD clients. A missing tool
//! fails the test: scripts/install-deps.sh installs it.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use super::Server;
use crate::storage::conformance::pattern;
use crate::storage::Volume;

fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: install qemu-utils (scripts/install-deps.sh installs it)"
            )
        })
}

/// Runs a QEMU tool with a time limit (coreutils `timeout`), so a hung server fails the
/// test instead of hanging it.
fn run(name: &str, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("120")
        .arg(tool(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {name} under timeout: {e}"));
    assert_ne!(out.status.code(), Some(124), "{name} {args:?} timed out");
    out
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn qemu_io(url: &str, commands: &[&str]) -> Output {
    let mut args = vec!["-f", "raw", url];
    for c in commands {
        args.extend(["-c", c]);
    }
    run("qemu-io", &args)
}

fn read(v: &dyn Volume, offset: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    v.read_at(offset, &mut b).unwrap();
    b
}

#[test]
fn qemu_io_writes_reads_flushes_discards_and_zeroes() {
    let server = Server::start();
    let volume = server.mem("disk", 1 << 20);
    volume.write_at(512 << 10, &[0x77; 64 << 10]).unwrap();
    let out = qemu_io(
        &server.url("disk"),
        &[
            "write -P 0xab 0 64k",
            "read -P 0xab 0 64k",
            "flush",
            "discard 0 4k",
            "read -P 0 0 4k",
            "read -P 0xab 4k 60k",
            // Pipelined requests.
            "aio_write -P 0x11 128k 4k",
            "aio_write -P 0x22 132k 4k",
            "aio_write -P 0x33 136k 64k",
            "aio_flush",
            "read -P 0x11 128k 4k",
            "read -P 0x22 132k 4k",
            "read -P 0x33 136k 64k",
            // WRITE_ZEROES with NO_HOLE, then without it (may unmap).
            "write -z 512k 16k",
            "write -z -u 528k 16k",
            "read -P 0 512k 32k",
            "read -P 0x77 544k 32k",
        ],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("Pattern verification failed"), "{all}");
    assert!(!all.to_lowercase().contains("error"), "{all}");
    assert!(all.contains("wrote 65536/65536 bytes at offset 0"), "{all}");
    assert!(all.contains("discard 4096/4096 bytes at offset 0"), "{all}");
    assert!(
        all.contains("read 32768/32768 bytes at offset 524288"),
        "{all}"
    );
    // The bytes, read back through the volume itself.
    assert_eq!(read(volume.as_ref(), 0, 4096), vec![0u8; 4096]);
    assert_eq!(read(volume.as_ref(), 4096, 60 << 10), vec![0xab; 60 << 10]);
    assert_eq!(read(volume.as_ref(), 128 << 10, 4096), vec![0x11; 4096]);
    assert_eq!(read(volume.as_ref(), 132 << 10, 4096), vec![0x22; 4096]);
    assert_eq!(
        read(volume.as_ref(), 136 << 10, 64 << 10),
        vec![0x33; 64 << 10]
    );
    assert_eq!(
        read(volume.as_ref(), 512 << 10, 32 << 10),
        vec![0; 32 << 10]
    );
    assert_eq!(
        read(volume.as_ref(), 544 << 10, 32 << 10),
        vec![0x77; 32 << 10]
    );
}

#[test]
fn qemu_img_info_reports_the_virtual_size() {
    let server = Server::start();
    server.mem("big", 3 << 30);
    server.mem("small", 1536 * 512);
    for (name, size) in [("big", 3u64 << 30), ("small", 1536 * 512)] {
        let url = server.url(name);
        let out = run("qemu-img", &["info", "-f", "raw", "--output=json", &url]);
        assert!(out.status.success(), "{}", text(&out));
        let info: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("qemu-img info output is not JSON ({e}): {}", text(&out)));
        assert_eq!(info["virtual-size"].as_u64(), Some(size), "{info}");
    }
}

#[test]
fn qemu_img_convert_copies_a_raw_image_into_the_export() {
    let server = Server::start();
    let size = 4u64 << 20;
    let volume = server.mem("target", size);
    // Old contents everywhere, so zero ranges of the source must be written as zeroes.
    volume.write_at(0, &vec![0xee; size as usize]).unwrap();
    let src = server.dir.path().join("src.raw");
    let mut image = vec![0u8; size as usize];
    image[..1 << 20].copy_from_slice(&pattern(0, 1 << 20, 9));
    image[3 << 20..].copy_from_slice(&pattern(3 << 20, 1 << 20, 10));
    std::fs::write(&src, &image).unwrap();
    let url = server.url("target");
    let src_arg = src.to_str().unwrap();
    let out = run(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", src_arg, &url],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        read(volume.as_ref(), 0, size as usize) == image,
        "the export differs from the image"
    );
    // And back out again, compared by qemu-img itself.
    let out = run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", src_arg, &url],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("identical"),
        "{}",
        text(&out)
    );
}

#[test]
fn qemu_io_is_refused_an_unknown_export_with_its_name() {
    let server = Server::start();
    server.mem("disk", 1 << 20);
    let out = qemu_io(&server.url("nosuchdisk"), &["read 0 4k"]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown export \"nosuchdisk\""), "{all}");
    // The server still serves the export that exists.
    let out = qemu_io(&server.url("disk"), &["read -P 0 0 4k"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn qemu_io_reads_a_read_only_export_and_cannot_write_it() {
    let server = Server::start();
    let path = server.dir.path().join("ro.raw");
    std::fs::write(&path, vec![0x5c; 1 << 20]).unwrap();
    let volume = crate::storage::file::FileVolume::open(&path, true).unwrap();
    server.export("ro", Arc::new(volume));
    let out = run(
        "qemu-io",
        &[
            "-r",
            "-f",
            "raw",
            &server.url("ro"),
            "-c",
            "read -P 0x5c 0 1M",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = qemu_io(&server.url("ro"), &["write -P 1 0 4k"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5c; 1 << 20]);
}

/// A VM's process (here qemu-io as an unprivileged user) reaches the abstract socket, and
/// sees and opens only the exports the access rule gives its user; root sees all.
#[test]
fn an_unprivileged_client_gets_only_the_exports_given_to_its_user() {
    use std::os::unix::process::CommandExt;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    let server = Server::start();
    let name = format!("strata-nbd-test-{}", std::process::id());
    let listener = {
        let _guard = server.rt.enter();
        crate::storage::nbd::bind_abstract(&name).unwrap()
    };
    server.rt.spawn(crate::storage::nbd::serve_unix(
        listener,
        server.exports.clone(),
    ));
    let mine = server.mem("mine", 1 << 20);
    mine.write_at(0, &pattern(0, 512, 4)).unwrap();
    server.mem("theirs", 1 << 20);
    const UID: u32 = 0x7000_1234;
    server
        .exports
        .set_access(Arc::new(|uid, export| uid == UID && export == "mine"));
    let open = |export: &str, uid: u32| {
        let spec = format!(
            r#"json:{{"driver":"raw","file":{{"driver":"nbd","export":"{export}","server":{{"type":"unix","path":"{name}","abstract":true}}}}}}"#
        );
        let mut cmd = Command::new("timeout");
        cmd.arg("60")
            .arg(tool("qemu-io"))
            .args([&spec, "-c", "read -P 0 4096 512"])
            .stdin(Stdio::null());
        if uid != 0 {
            cmd.uid(uid).gid(uid);
        }
        cmd.output().unwrap()
    };
    let out = open("mine", UID);
    assert!(out.status.success(), "its own export: {}", text(&out));
    let out = open("theirs", UID);
    assert!(!out.status.success(), "another export: {}", text(&out));
    assert!(
        text(&out).contains("theirs"),
        "the refusal names the export: {}",
        text(&out)
    );
    let out = open("mine", UID + 1);
    assert!(!out.status.success(), "another user: {}", text(&out));
    let out = open("theirs", 0);
    assert!(out.status.success(), "root: {}", text(&out));
}
