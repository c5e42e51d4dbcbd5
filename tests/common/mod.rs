//! Test harness: a cluster of real `strata serve` processes, each in its own network
//! namespace, joined by veth links to a bridge in a hub namespace. Everything it creates is
//! named after the test process and removed on drop. Needs root (CI runs as root).
#![allow(dead_code)]

pub mod console;
pub mod vmnic;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_strata");

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn")
}

fn must(args: &[&str]) {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&o.stderr)
    );
}

pub struct Node {
    pub ns: String,
    pub ip: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// Extra environment for `strata serve` (settings a test changes).
    pub env: Vec<(String, String)>,
}

impl Node {
    pub fn addr(&self) -> String {
        format!("{}:7440", self.ip)
    }

    /// Runs a CLI command against this node's admin socket.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("spawn strata")
    }

    /// Runs a command inside this node's namespace.
    pub fn in_ns(&self, args: &[&str]) -> Output {
        let mut a = vec!["ip", "netns", "exec", &self.ns];
        a.extend_from_slice(args);
        sh(&a)
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let o = self.cli(&["status", "--json"]);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).ok())
            .flatten()
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, BIN, "--data-dir"])
            .arg(&self.dir)
            .args(["serve", "--listen", &self.addr(), "--metrics-listen", "off"])
            .env("STRATA_LOG", "info,openraft=warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn strata serve");
        self.child = Some(child);
        wait_for(Duration::from_secs(20), || self.status())
            .unwrap_or_else(|| panic!("node {} did not start; log:\n{}", self.ns, self.log()));
    }

    /// Runs `strata serve` in the foreground, for nodes expected to refuse to start.
    pub fn serve_foreground(&self) -> Output {
        let dir = self.dir.to_str().expect("utf8");
        self.in_ns(&[
            BIN,
            "--data-dir",
            dir,
            "serve",
            "--listen",
            &self.addr(),
            "--metrics-listen",
            "off",
        ])
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs the binary, so the child is strata itself.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// Drops all traffic to and from `peers` (a partition), or restores it.
    pub fn isolate_from(&self, peers: &[String], on: bool) {
        if on {
            let mut rules = String::from("table inet strata_test {\n chain in { type filter hook input priority 0; policy accept;\n");
            for p in peers {
                rules += &format!("  ip saddr {p} drop\n");
            }
            rules += " }\n chain out { type filter hook output priority 0; policy accept;\n";
            for p in peers {
                rules += &format!("  ip daddr {p} drop\n");
            }
            rules += " }\n}\n";
            let path = self.dir.with_extension("nft");
            std::fs::write(&path, rules).expect("write nft rules");
            let o = self.in_ns(&["nft", "-f", path.to_str().expect("utf8")]);
            assert!(
                o.status.success(),
                "nft: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        } else {
            let _ = self.in_ns(&["nft", "delete", "table", "inet", "strata_test"]);
        }
    }
}

pub struct Cluster {
    pub hub: String,
    pub nodes: Vec<Node>,
    pub tmp: tempfile::TempDir,
}

pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T>
where
    T: Sized,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    /// Each node's id, in node order (as node 0's status lists them).
    pub fn node_ids(&self) -> Vec<String> {
        let s = self.nodes[0].status().expect("status");
        self.nodes
            .iter()
            .map(|n| {
                s["nodes"]
                    .as_array()
                    .expect("nodes")
                    .iter()
                    .find(|x| x["addr"] == n.addr().as_str())
                    .and_then(|x| x["id"].as_str())
                    .expect("every node in the status")
                    .to_string()
            })
            .collect()
    }

    /// Creates `n` namespaces on a shared bridge, with nothing running yet.
    pub fn topology(n: usize) -> Cluster {
        assert!(
            unsafe_is_root(),
            "the namespace cluster tests need root (they create network namespaces)"
        );
        let id = format!(
            "st{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let hub = format!("{id}h");
        must(&["ip", "netns", "add", &hub]);
        must(&[
            "ip", "netns", "exec", &hub, "ip", "link", "add", "br0", "type", "bridge",
        ]);
        must(&[
            "ip", "netns", "exec", &hub, "ip", "link", "set", "br0", "up",
        ]);
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut nodes = vec![];
        for i in 0..n {
            let ns = format!("{id}n{i}");
            let ip = format!("10.77.0.{}", i + 11);
            must(&["ip", "netns", "add", &ns]);
            let veth = format!("v{i}");
            must(&[
                "ip", "netns", "exec", &hub, "ip", "link", "add", &veth, "type", "veth", "peer",
                "name", "eth0", "netns", &ns,
            ]);
            must(&[
                "ip", "netns", "exec", &hub, "ip", "link", "set", &veth, "master", "br0", "up",
            ]);
            must(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{ip}/24"),
                "broadcast",
                "+",
                "dev",
                "eth0",
            ]);
            must(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", "eth0", "up",
            ]);
            must(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            nodes.push(Node {
                ns,
                ip,
                dir: tmp.path().join(format!("node{i}")),
                child: None,
                env: Vec::new(),
            });
        }
        Cluster { hub, nodes, tmp }
    }

    /// Forms a cluster: node 0 creates it, the others join with fresh tokens.
    pub fn form(n: usize) -> Cluster {
        Cluster::form_env(n, &[])
    }

    /// Forms a cluster whose nodes run with extra environment (settings).
    pub fn form_env(n: usize, env: &[(&str, &str)]) -> Cluster {
        let mut c = Cluster::topology(n);
        for node in &mut c.nodes {
            node.env = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
        let first = &c.nodes[0];
        let o = first.cli(&["init", "--listen", &first.addr(), "--cluster-name", "test"]);
        assert!(
            o.status.success(),
            "init: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        c.nodes[0].start();
        for i in 1..n {
            let token = c.token(0, "10m");
            let addr = c.nodes[0].addr();
            c.join(i, &addr, &token).expect("join");
            c.nodes[i].start();
        }
        let want = n.min(5) - usize::from(n.min(5).is_multiple_of(2));
        wait_for(Duration::from_secs(30), || {
            let s = c.nodes[0].status()?;
            let voters = s["voters"].as_array()?.len();
            let alive = s["nodes_alive"].as_u64()? as usize;
            (voters == want && alive == n).then_some(())
        })
        .unwrap_or_else(|| panic!("cluster did not form: {:?}", c.nodes[0].status()));
        c
    }

    pub fn token(&self, via: usize, ttl: &str) -> String {
        let o = self.nodes[via].cli(&["token", "create", "--ttl", ttl]);
        assert!(
            o.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Runs `strata join` from node `i`'s namespace; Err carries stderr.
    pub fn join(&self, i: usize, addr: &str, token: &str) -> Result<(), String> {
        let n = &self.nodes[i];
        let o = n.in_ns(&[
            BIN,
            "--data-dir",
            n.dir.to_str().expect("utf8"),
            "join",
            addr,
            "--token",
            token,
            "--listen",
            &n.addr(),
        ]);
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).to_string())
        }
    }

    pub fn leader(&self, among: &[usize]) -> Option<String> {
        among.iter().find_map(|i| {
            let s = self.nodes[*i].status()?;
            s["leader"].as_str().map(str::to_string)
        })
    }

    pub fn index_of(&self, node_id: &str) -> Option<usize> {
        let s = self.nodes.iter().find_map(|n| n.status())?;
        let addr = s["nodes"].as_array()?.iter().find(|n| n["id"] == node_id)?["addr"]
            .as_str()?
            .to_string();
        self.nodes.iter().position(|n| n.addr() == addr)
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
            let _ = sh(&["ip", "netns", "del", &n.ns]);
        }
        // VM processes outlive their daemon by design; the test's own are found by the
        // temporary directory in their command line.
        let _ = sh(&[
            "pkill",
            "-KILL",
            "-f",
            self.tmp.path().to_str().unwrap_or("/nonexistent"),
        ]);
        let _ = sh(&["ip", "netns", "del", &self.hub]);
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!(
                    "==== log of {} ====\n{}",
                    n.ns,
                    n.log()
                        .lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn data_dir_of(n: &Node) -> &Path {
    &n.dir
}

/// The JSON a successful CLI call printed.
/// A 1 MiB raw disk whose boot sector (real-mode code, hand-assembled) writes
/// `STRATA-FIRMWARE-BOOT` to COM1 and halts: an image with its own bootloader.
pub fn boot_sector_disk() -> Vec<u8> {
    // cli; xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8;
    // 1: lodsb; test al,al; jz 2f; out dx,al; jmp 1b; 2: hlt; jmp 2b
    let mut d = hex::decode("fa31c08ed8be167cbaf803ac84c07403eeebf8f4ebfd").unwrap();
    assert_eq!(d.len(), 0x16, "the message follows the code at 0x7c16");
    d.extend_from_slice(b"STRATA-FIRMWARE-BOOT\r\n\0");
    d.resize(510, 0);
    d.extend_from_slice(&[0x55, 0xaa]);
    d.resize(1 << 20, 0);
    d
}

pub fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// Runs qemu-io commands against an NBD URI; whether they all succeeded, and the output.
pub fn qemu_io(uri: &str, cmds: &[&str]) -> (bool, String) {
    let mut a = vec!["-f".to_string(), "raw".to_string(), uri.to_string()];
    for c in cmds {
        a.push("-c".into());
        a.push(c.to_string());
    }
    let o = Command::new("qemu-io")
        .args(&a)
        .output()
        .expect("qemu-io (Debian package qemu-utils, installed by scripts/install-deps.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let ok = o.status.success()
        && !text.contains("Pattern verification failed")
        && !text.contains("failed:");
    (ok, text)
}

/// Creates a volume with `replicas` replicas through node `via`, retrying under fresh names
/// until every node has reported its storage (placement sees only reported nodes);
/// returns its name.
pub fn replicated_volume(
    c: &Cluster,
    via: usize,
    prefix: &str,
    size: &str,
    replicas: usize,
) -> String {
    let mut n = 0;
    wait_for(Duration::from_secs(40), || {
        n += 1;
        let name = format!("{prefix}{n}");
        let o = c.nodes[via].cli(&["volume", "create", &name, "--size", size, "--wait", "20"]);
        o.status.success().then_some(())?;
        let v = json(&c.nodes[via].cli(&["volume", "show", &name, "--json"]));
        (v["replicas"].as_array()?.len() == replicas).then_some(name)
    })
    .unwrap_or_else(|| panic!("no volume with {replicas} replicas"))
}

/// `strata volume export` on node `i`: the NBD URI it printed (panics naming the step).
pub fn export(c: &Cluster, i: usize, volume: &str) -> String {
    let o = c.nodes[i].cli(&["volume", "export", volume]);
    assert!(o.status.success(), "export on node {i}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The state of each replica of a volume, as node `via` shows it.
pub fn replica_states(c: &Cluster, via: usize, volume: &str) -> Vec<String> {
    json(&c.nodes[via].cli(&["volume", "show", volume, "--json"]))["replicas"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["state"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// python-openstackclient in a virtual environment under target/ (installed from PyPI the
/// first time); the path of its `openstack` command.
pub fn openstack_cli() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/osc-venv");
    let bin = venv.join("bin/openstack");
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if !bin.exists() {
        must(&["python3", "-m", "venv", venv.to_str().expect("utf8")]);
        let pip = venv.join("bin/pip");
        must(&[
            pip.to_str().expect("utf8"),
            "install",
            "-q",
            "python-openstackclient",
        ]);
    }
    bin
}

/// Ansible 12 with the openstack.cloud collection and an openstacksdk it works with, in a
/// virtual environment under target/ (installed from PyPI the first time); the venv's path.
pub fn ansible_venv() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ansible-venv");
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if !venv.join("bin/ansible-playbook").exists() {
        must(&["python3", "-m", "venv", venv.to_str().expect("utf8")]);
        let pip = venv.join("bin/pip");
        must(&[
            pip.to_str().expect("utf8"),
            "install",
            "-q",
            "ansible>=12,<13",
            "openstacksdk<4.15",
        ]);
    }
    venv
}

/// python-openstackclient against node 0's OpenStack API, run in its namespace.
pub struct Os<'a> {
    pub c: &'a Cluster,
    pub bin: String,
}

impl Os<'_> {
    pub fn run(&self, auth: &[&str], args: &[&str]) -> std::process::Output {
        let url = format!("https://{}:5000/identity", self.c.nodes[0].ip);
        let ca = self.c.nodes[0].dir.join("pki/ca.crt").display().to_string();
        let mut a = vec![
            "ip",
            "netns",
            "exec",
            &self.c.nodes[0].ns,
            &self.bin,
            "--os-auth-url",
            &url,
            "--os-identity-api-version",
            "3",
            "--os-region-name",
            "RegionOne",
            "--os-cacert",
            &ca,
        ];
        a.extend_from_slice(auth);
        a.extend_from_slice(args);
        std::process::Command::new(a[0])
            .args(&a[1..])
            .env_remove("OS_CLOUD")
            .output()
            .expect("openstack")
    }

    pub fn json(&self, auth: &[&str], args: &[&str]) -> serde_json::Value {
        let o = self.run(auth, args);
        assert!(o.status.success(), "openstack {args:?}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    }
}

/// The bootstrap admin's password (node 0 made the cluster).
pub fn admin_password(c: &Cluster) -> String {
    std::fs::read_to_string(data_dir_of(&c.nodes[0]).join("admin-password"))
        .expect("admin password")
        .trim()
        .to_string()
}

impl<'a> Os<'a> {
    /// python-openstackclient (installed on first use) against `c`'s node 0.
    pub fn new(c: &'a Cluster) -> Os<'a> {
        Os {
            c,
            bin: openstack_cli().display().to_string(),
        }
    }

    /// Creates `user` (password `password`) in `project` with `role` there.
    pub fn add_user(&self, admin: &[&str], project: &str, user: &str, password: &str, role: &str) {
        self.json(
            admin,
            &[
                "user",
                "create",
                "--password",
                password,
                "--project",
                project,
                user,
                "-f",
                "json",
            ],
        );
        let o = self.run(
            admin,
            &["role", "add", "--project", project, "--user", user, role],
        );
        assert!(o.status.success(), "role add: {}", stderr(&o));
    }
}

pub fn password_auth<'a>(user: &'a str, password: &'a str, project: &'a str) -> Vec<&'a str> {
    vec![
        "--os-username",
        user,
        "--os-password",
        password,
        "--os-project-name",
        project,
        "--os-user-domain-name",
        "Default",
        "--os-project-domain-name",
        "Default",
    ]
}

/// One HTTP request from inside node 0's namespace: (status, body).
pub fn http(
    c: &Cluster,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&[u8]>,
) -> (u16, String) {
    let url = format!("https://{}:5000{path}", c.nodes[0].ip);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("body");
    let inp = dir.path().join("in");
    std::fs::write(&inp, body.unwrap_or_default()).unwrap();
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        c.nodes[0].ns.clone(),
        "curl".into(),
        "-s".into(),
        "--cacert".into(),
        c.nodes[0].dir.join("pki/ca.crt").display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "-w".into(),
        "%{http_code}".into(),
        "-X".into(),
        method.into(),
        "-H".into(),
        format!("X-Auth-Token: {token}"),
        "-H".into(),
        "Content-Type: application/json".into(),
    ];
    if body.is_some() {
        args.push("--data-binary".into());
        args.push(format!("@{}", inp.display()));
    }
    args.push(url);
    let o = std::process::Command::new("ip")
        .args(&args)
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let body = std::fs::read_to_string(&out).unwrap_or_default();
    (code, body)
}

/// Tables that change on their own (observed state, logs, samples, pruned records): left
/// out when a test compares the store before and after refused requests.
pub const MOVING: &[&str] = &[
    "audit",
    "events",
    "usage_samples",
    "node_storage",
    "port_statuses",
    "vm_status",
    "nodes",
    "pending_joins",
    "debug_kv",
    "revoked_tokens",
];

/// Every desired-state table of node 0's store (`strata debug store`: records and
/// revisions), without the [`MOVING`] ones.
pub fn desired_state(c: &Cluster) -> std::collections::BTreeMap<String, serde_json::Value> {
    let all = json(&c.nodes[0].cli(&["debug", "store"]));
    all.as_object()
        .expect("store dump")
        .iter()
        .filter(|(t, _)| !MOVING.contains(&t.as_str()))
        .map(|(t, v)| (t.clone(), v.clone()))
        .collect()
}
