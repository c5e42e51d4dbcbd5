//! In-process clusters on loopback (port 0): the Raft store, linearizable reads, watches,
//! snapshots with log compaction, restart from snapshot, and catch-up by snapshot install.
//! Each node runs on its own tokio runtime, so dropping the runtime is a crash.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::cluster::store::tables::{DebugKv, Events, Nodes};
use strata::cluster::store::TxnBuilder;
use strata::config::{Config, ConfigFile, RaftFile};
use strata::daemon::datadir::DataDir;
use strata::daemon::Node;

struct Proc {
    rt: Option<tokio::runtime::Runtime>,
    node: Option<Arc<Node>>,
    dir: PathBuf,
}

fn config(dir: &Path, listen: &str, snapshot_every: Option<u64>) -> Config {
    ConfigFile {
        data_dir: Some(dir.to_path_buf()),
        listen: Some(listen.to_string()),
        metrics_listen: Some("off".into()),
        raft: RaftFile {
            heartbeat_ms: Some(100),
            election_timeout_min_ms: Some(500),
            election_timeout_max_ms: Some(1000),
            snapshot_every,
            keep_behind_snapshot: Some(10),
            ..Default::default()
        },
        ..Default::default()
    }
    .validate()
    .expect("valid config")
}

fn free_udp_port() -> String {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().to_string()
}

impl Proc {
    fn start(dir: &Path, listen: &str, snapshot_every: Option<u64>) -> Proc {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let node = rt
            .block_on(Node::start(config(dir, listen, snapshot_every)))
            .unwrap_or_else(|e| panic!("node start: {}", strata::telemetry::error_chain(&e)));
        Proc {
            rt: Some(rt),
            node: Some(node),
            dir: dir.to_path_buf(),
        }
    }

    fn node(&self) -> &Arc<Node> {
        self.node.as_ref().unwrap()
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().unwrap().block_on(f)
    }

    /// Drops the runtime: every task stops mid-flight, like a killed process.
    fn crash(&mut self) {
        if let Some(n) = self.node.take() {
            n.transport.clear_services();
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.crash();
    }
}

fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn form(n: usize, root: &Path, snapshot_every: Option<u64>) -> Vec<Proc> {
    let d0 = root.join("n0");
    DataDir::new(&d0).init("inproc").unwrap();
    let first = Proc::start(&d0, "127.0.0.1:0", snapshot_every);
    let mut procs = vec![first];
    for i in 1..n {
        procs.push(add(&procs[0], &root.join(format!("n{i}")), snapshot_every));
    }
    wait("all nodes to be voters", Duration::from_secs(20), || {
        let v = procs[0].node().control.raft().membership();
        (v.voters.len() == n.min(5) - usize::from(n.min(5).is_multiple_of(2))).then_some(())
    });
    procs
}

fn add(via: &Proc, dir: &Path, snapshot_every: Option<u64>) -> Proc {
    let (token, _) = via
        .block(via.node().control.create_token(Duration::from_secs(60)))
        .unwrap();
    let listen = free_udp_port();
    let addr = via.node().config.advertise;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(strata::daemon::join::join(
        &DataDir::new(dir),
        &strata::daemon::join::Target::Addr(addr),
        Some(&token.to_string()),
        listen.parse().unwrap(),
        Duration::from_secs(10),
    ))
    .unwrap_or_else(|e| panic!("join: {}", strata::telemetry::error_chain(&e)));
    drop(rt);
    Proc::start(dir, &listen, snapshot_every)
}

#[test]
fn writes_on_any_node_are_read_linearizably_on_every_node() {
    let tmp = tempfile::tempdir().unwrap();
    let procs = form(3, tmp.path(), None);
    let leader = procs[0].node().control.raft().leader().expect("leader");
    let followers: Vec<&Proc> = procs
        .iter()
        .filter(|p| p.node().control.node != leader)
        .collect();
    assert_eq!(followers.len(), 2);

    let mut watch = followers[1].node().control.store.watch();
    for i in 0..20 {
        let store = &followers[0].node().control.store;
        followers[0]
            .block(
                store.commit(
                    TxnBuilder::new().put::<DebugKv>(format!("k{i}"), &serde_json::json!(i)),
                ),
            )
            .expect("write through a follower");
        // Right after the write returns, a linearizable read on the *other* follower sees it.
        let other = &followers[1].node().control.store;
        followers[1]
            .block(other.linearizable())
            .expect("read barrier");
        let v = other
            .get::<DebugKv>(&format!("k{i}"))
            .unwrap()
            .expect("value present");
        assert_eq!(v.value, serde_json::json!(i));
    }
    // The watcher on the other follower saw the changes.
    let mut seen = 0;
    while let Ok(batch) = watch.try_recv() {
        seen += batch.iter().filter(|c| c.table == "debug_kv").count();
    }
    assert_eq!(seen, 20, "watch delivered every change exactly once");

    // Revision checks make a transaction all-or-nothing.
    let store = &procs[0].node().control.store;
    let cur = store.get::<DebugKv>("k0").unwrap().unwrap();
    let stale = TxnBuilder::new()
        .require_revision::<DebugKv>("k0", cur.revision - 1)
        .put::<DebugKv>("k0", &serde_json::json!("lost"))
        .put::<DebugKv>("other", &serde_json::json!(1));
    let err = procs[0].block(store.commit(stale)).unwrap_err().to_string();
    assert!(err.contains("conflict on debug_kv/k0"), "{err}");
    assert!(
        store.get::<DebugKv>("other").unwrap().is_none(),
        "a failed transaction applied part of itself"
    );

    // The nodes table and event log are populated by joins.
    assert_eq!(store.list::<Nodes>().unwrap().len(), 3);
    let events = store.tail::<Events>(100).unwrap();
    assert!(events.iter().any(|e| e.value.kind == "cluster.created"));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.value.kind == "node.joined")
            .count(),
        2
    );
}

#[test]
fn snapshots_compact_the_log_restore_after_a_crash_and_catch_up_new_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut procs = form(3, tmp.path(), Some(40));
    for i in 0..200 {
        let p = &procs[i % 3];
        p.block(
            p.node()
                .control
                .store
                .commit(TxnBuilder::new().put::<DebugKv>(format!("s{i}"), &serde_json::json!(i))),
        )
        .expect("write");
    }
    let raft = procs[0].node().control.raft();
    wait("a snapshot and a purge", Duration::from_secs(20), || {
        let m = raft.metrics();
        (m.snapshot.is_some() && m.purged.is_some()).then_some(())
    });
    let stored = raft.log_entries();
    assert!(stored < 150, "log not compacted: {stored} entries kept");
    let snaps: Vec<_> = std::fs::read_dir(procs[0].dir.join("raft/snapshots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert!(
        !snaps.is_empty() && snaps.len() <= 2,
        "{} snapshot files",
        snaps.len()
    );

    // Crash a follower and bring it back from its data directory (snapshot + log tail).
    let leader = raft.leader().unwrap();
    let fi = procs
        .iter()
        .position(|p| p.node().control.node != leader)
        .unwrap();
    let (dir, listen) = (
        procs[fi].dir.clone(),
        procs[fi].node().config.advertise.to_string(),
    );
    procs[fi].crash();
    let writer = (fi + 1) % 3;
    let p = &procs[writer];
    let wp = p.block(
        p.node()
            .control
            .store
            .commit(TxnBuilder::new().put::<DebugKv>("while-down", &serde_json::json!(true))),
    );
    wp.expect("two of three keep writing");
    procs[fi] = Proc::start(&dir, &listen, Some(40));
    let restarted = procs[fi].node().control.store.clone();
    wait(
        "restarted node to catch up",
        Duration::from_secs(20),
        || restarted.get::<DebugKv>("while-down").unwrap().map(|_| ()),
    );
    for i in [0usize, 77, 199] {
        assert_eq!(
            restarted
                .get::<DebugKv>(&format!("s{i}"))
                .unwrap()
                .unwrap()
                .value,
            serde_json::json!(i)
        );
    }

    // A new node whose log starts after the purge point can only get the state by snapshot.
    let p4 = add(&procs[0], &tmp.path().join("n3"), Some(40));
    let s4 = p4.node().control.store.clone();
    wait(
        "new node to receive the snapshot",
        Duration::from_secs(20),
        || s4.get::<DebugKv>("s0").unwrap().map(|_| ()),
    );
    assert_eq!(
        s4.get::<DebugKv>("s123").unwrap().unwrap().value,
        serde_json::json!(123)
    );
    assert!(
        p4.node().control.raft().metrics().snapshot.is_some(),
        "the new node installed a snapshot"
    );
}
