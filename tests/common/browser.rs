//! Headless Chromium driven over WebDriver (chromedriver), inside a node's network
//! namespace: chromedriver and the browser run there, and the test's WebDriver client
//! runs on a thread that joined the namespace, so everything stays on addresses the test
//! created.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thirtyfour::prelude::*;
use thirtyfour::ChromeCapabilities;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs `f` on a thread inside network namespace `ns`, with a tokio runtime whose
/// threads are all in that namespace (threads inherit it from the one that makes them).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("namespace file");
        // SAFETY: setns on this thread only, with a namespace fd we hold open.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
}

/// A namespace for the browser alone, on the cluster's bridge (`hub`) with address
/// `ip`: the nodes' namespaces add and remove TAP devices and bridges all the time, and
/// Chromium aborts page loads when it sees its network change. Deleted when dropped.
pub struct ClientNs {
    pub ns: String,
}

impl ClientNs {
    pub fn new(hub: &str, ip: &str) -> ClientNs {
        let ns = format!("{hub}c");
        let run = |args: &[&str]| {
            let o = Command::new(args[0]).args(&args[1..]).output().expect("ip");
            assert!(
                o.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(&["ip", "netns", "add", &ns]);
        run(&[
            "ip", "netns", "exec", hub, "ip", "link", "add", "vc", "type", "veth", "peer", "name",
            "eth0", "netns", &ns,
        ]);
        run(&[
            "ip", "netns", "exec", hub, "ip", "link", "set", "vc", "master", "br0", "up",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        run(&[
            "ip", "netns", "exec", &ns, "ip", "link", "set", "eth0", "up",
        ]);
        run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        // The link carries traffic only once both ends report it up (the kernel may take
        // a moment after `set up`); a browser visit before that meets an error page.
        let up = |netns: &str, dev: &str| {
            Command::new("ip")
                .args(["netns", "exec", netns, "cat"])
                .arg(format!("/sys/class/net/{dev}/operstate"))
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "up")
        };
        let start = Instant::now();
        while !(up(&ns, "eth0") && up(hub, "vc")) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the client namespace's link did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ClientNs { ns }
    }
}

impl Drop for ClientNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// chromedriver in a namespace; killed when dropped.
pub struct Driver {
    child: Child,
    pub port: u16,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    pub fn start(ns: &str, port: u16) -> Driver {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "the console tests need Debian's chromium and chromium-driver (make test installs them)"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", ns, CHROMEDRIVER])
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        Driver {
            child,
            port,
            profile: tempfile::tempdir().expect("profile dir"),
        }
    }

    pub fn caps(&self) -> ChromeCapabilities {
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(CHROMIUM).unwrap();
        for a in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--window-size=1280,900",
        ] {
            caps.add_arg(a).unwrap();
        }
        caps.add_arg(&format!(
            "--user-data-dir={}",
            self.profile.path().display()
        ))
        .unwrap();
        // The cluster's CA is not in the browser's store.
        caps.accept_insecure_certs(true).unwrap();
        caps
    }

    /// Waits for chromedriver, then opens a browser session.
    pub async fn session(&self) -> WebDriver {
        let url = format!("http://127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match WebDriver::new(&url, self.caps()).await {
                Ok(d) => return d,
                Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }
}

/// Where screenshots go (kept as test artefacts).
#[allow(dead_code)]
pub fn artefacts() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&d).expect("artefact dir");
    d
}
