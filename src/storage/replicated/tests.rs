use super::*;
use crate::storage::conformance::{self, pattern};
use crate::storage::replica::{BlkService, ReplicaServer};
use crate::telemetry::Metrics;
use crate::transport::pki::{self, ClusterCa};
use crate::transport::{Peer, Service};
use std::os::unix::fs::FileExt;

const ES: u64 = 1 << 20;

/// A block service that can be cut off (streams dropped unanswered), like a partition,
/// or made to serve streams late and out of order (`jitter`).
struct Switch {
    inner: BlkService,
    down: Arc<AtomicBool>,
    jitter: Arc<AtomicBool>,
    /// Makes each node's order its own (its number).
    salt: u64,
}

#[async_trait::async_trait]
impl Service for Switch {
    async fn handle_stream(&self, peer: Peer, send: quinn::SendStream, recv: quinn::RecvStream) {
        if self.down.load(Ordering::SeqCst) {
            drop((send, recv));
            return;
        }
        if self.jitter.load(Ordering::SeqCst) {
            // One node serves later streams sooner, the next later ones later.
            let step = recv.id().index() % 5;
            let ms = if self.salt.is_multiple_of(2) {
                4 - step
            } else {
                step
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.inner.handle_stream(peer, send, recv).await;
    }
}

struct Node {
    id: NodeId,
    transport: Arc<Transport>,
    server: Arc<ReplicaServer>,
    down: Arc<AtomicBool>,
    jitter: Arc<AtomicBool>,
}

struct Cluster {
    rt: tokio::runtime::Runtime,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

fn cluster(n: u64) -> Cluster {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("t").unwrap();
    let ca_der = pki::pem_to_cert_der(&ca.0.cert_pem).unwrap();
    let _g = rt.enter();
    let nodes = (1..=n)
        .map(|i| {
            let id = NodeId(i);
            let ck = ca.issue_node(id).unwrap();
            let transport =
                Transport::bind("127.0.0.1:0".parse().unwrap(), &ck, &ca_der, Metrics::new())
                    .unwrap();
            let server = ReplicaServer::new(&dir.path().join(format!("n{i}"))).unwrap();
            let down = Arc::new(AtomicBool::new(false));
            let jitter = Arc::new(AtomicBool::new(false));
            transport.register(
                Class::Blk,
                Arc::new(Switch {
                    inner: BlkService(server.clone()),
                    down: down.clone(),
                    jitter: jitter.clone(),
                    salt: i,
                }),
            );
            Node {
                id,
                transport,
                server,
                down,
                jitter,
            }
        })
        .collect();
    Cluster {
        rt,
        nodes,
        _dir: dir,
    }
}

impl Cluster {
    fn targets(&self) -> Vec<ReplicaTarget> {
        self.nodes
            .iter()
            .map(|n| ReplicaTarget {
                node: n.id,
                addr: n.transport.local_addr().unwrap(),
                in_sync: true,
            })
            .collect()
    }

    fn create(&self, volume: &str, size: u64) {
        for n in &self.nodes {
            n.server.create_region(volume, size, ES).unwrap();
        }
    }

    /// An upstairs on node `on` (index) as writer `generation`.
    fn attach(&self, on: usize, volume: &str, size: u64, generation: u64) -> ReplicatedVolume {
        ReplicatedVolume::attach(
            self.nodes[on].transport.clone(),
            self.rt.handle().clone(),
            self.nodes[on].id,
            volume,
            size,
            ES,
            generation,
            &self.targets(),
            // Half the tests go through the transport for the local replica too.
            generation
                .is_multiple_of(2)
                .then(|| self.nodes[on].server.clone()),
        )
        .unwrap()
        .with_timeout(Duration::from_secs(2))
    }

    fn region_bytes(&self, node: usize, volume: &str, offset: u64, len: usize) -> Vec<u8> {
        let r = self.nodes[node].server.region(volume).unwrap().unwrap();
        let mut b = vec![0u8; len];
        r.read_at(offset, &mut b).unwrap();
        b
    }
}

#[test]
fn conformance_suite_over_three_replicas() {
    let c = cluster(3);
    let n = AtomicU64::new(0);
    conformance::run(&|size| {
        let name = format!("conf{}", n.fetch_add(1, Ordering::Relaxed));
        c.create(&name, size);
        Box::new(c.attach(0, &name, size, 1)) as Box<dyn Volume>
    });
    // Every replica holds what the last volume wrote.
    let last = format!("conf{}", n.load(Ordering::Relaxed) - 1);
    let a = c.region_bytes(0, &last, 0, 1 << 20);
    assert_eq!(c.region_bytes(1, &last, 0, 1 << 20), a);
    assert_eq!(c.region_bytes(2, &last, 0, 1 << 20), a);
}

#[test]
fn overlapping_writes_in_flight_together_leave_every_replica_the_same() {
    let c = cluster(3);
    // Two replicas serve requests late, in a different order from how they were sent.
    c.nodes[1].jitter.store(true, Ordering::SeqCst);
    c.nodes[2].jitter.store(true, Ordering::SeqCst);
    // Through the transport (generation 1) and with the local replica in place (2).
    for generation in [1u64, 2] {
        let name = format!("overlap{generation}");
        let size = 1u64 << 20;
        c.create(&name, size);
        let v = Arc::new(c.attach(0, &name, size, generation));
        let (tx, rx) = std::sync::mpsc::channel();
        // 600 writes of 4-32 KiB over 1 MiB, all in flight together, from 3 threads:
        // most overlap others; NBD leaves their order open, but every replica must apply
        // them in the same one.
        let threads: Vec<_> = (0..3u64)
            .map(|t| {
                let (v, tx) = (v.clone(), tx.clone());
                std::thread::spawn(move || {
                    for i in 0..200u64 {
                        let off = ((i * 37 + t * 101) % 256) * 4096;
                        let len = (4096 * (1 + (i + t) % 8)).min(size - off);
                        let tx = tx.clone();
                        let data = pattern(off, len as usize, t * 1000 + i);
                        let done: WriteDone = Box::new(move |r| {
                            let _ = tx.send(r);
                        });
                        if let Err((data, done)) = v.start_write(off, data, done) {
                            done(v.write_at(off, &data));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(tx);
        let results: Vec<_> = rx.iter().collect();
        assert_eq!(results.len(), 600);
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        v.flush().unwrap();
        let mut seen = vec![0u8; size as usize];
        v.read_at(0, &mut seen).unwrap();
        for node in 0..3 {
            assert!(
                c.region_bytes(node, &name, 0, size as usize) == seen,
                "replica on node {node} differs from what the volume reads"
            );
        }
        assert!(seen.iter().any(|b| *b != 0));
    }
}

#[test]
fn a_new_writer_makes_replicas_agree_where_a_crashed_writer_left_unflushed_writes() {
    let c = cluster(3);
    let size = 4 * ES;
    c.create("rc", size);
    let v = c.attach(0, "rc", size, 1);
    v.write_at(0, &pattern(0, (2 * ES) as usize, 1)).unwrap();
    v.flush().unwrap();
    drop(v);
    // A clean hand-over copies nothing.
    let v = c.attach(0, "rc", size, 2);
    assert_eq!(v.resynced_bytes(), 0);
    drop(v);
    // The writer "crashes" after a write only replica 1 took (never acknowledged, never
    // flushed): replica 1 now differs in extent 1.
    let r1 = c.nodes[1].server.region("rc").unwrap().unwrap();
    r1.write_at(ES + 8192, &pattern(ES + 8192, 4096, 99))
        .unwrap();
    assert_ne!(
        c.region_bytes(1, "rc", ES, ES as usize),
        c.region_bytes(0, "rc", ES, ES as usize)
    );
    let v = c.attach(0, "rc", size, 3);
    // Only that extent was copied, to the two other replicas, and all three agree.
    assert!(
        v.resynced_bytes() > 0 && v.resynced_bytes() <= 2 * ES,
        "{}",
        v.resynced_bytes()
    );
    let want = pattern(0, (2 * ES) as usize, 1);
    for node in 0..3 {
        assert!(
            c.region_bytes(node, "rc", 0, (2 * ES) as usize) == want,
            "replica on node {node}"
        );
    }
    assert!(v.health().iter().all(|h| h.live));
    let mut got = vec![0u8; 4096];
    v.read_at(ES + 8192, &mut got).unwrap();
    assert_eq!(got, pattern(ES + 8192, 4096, 1));
}

#[test]
fn a_writer_that_detaches_leaves_the_next_one_nothing_to_copy() {
    let c = cluster(3);
    let size = 4 * ES;
    c.create("dt", size);
    // Unflushed writes and no detach: the next writer copies the written extent.
    let v = c.attach(0, "dt", size, 1);
    v.write_at(4096, &pattern(4096, 8192, 1)).unwrap();
    drop(v);
    let v = c.attach(0, "dt", size, 2);
    assert!(v.resynced_bytes() > 0);
    // Unflushed writes, then detach: nothing to copy.
    v.write_at(ES + 4096, &pattern(ES + 4096, 8192, 2)).unwrap();
    v.detach().unwrap();
    drop(v);
    let v = c.attach(0, "dt", size, 3);
    assert_eq!(v.resynced_bytes(), 0);
    let mut got = vec![0u8; 8192];
    v.read_at(ES + 4096, &mut got).unwrap();
    assert_eq!(got, pattern(ES + 4096, 8192, 2));
}

#[test]
fn a_partitioned_replica_is_faulted_then_resynced_with_only_the_extents_it_missed() {
    let c = cluster(3);
    let size = 16 * ES;
    c.create("p", size);
    let v = c.attach(0, "p", size, 1);
    v.write_at(0, &pattern(0, (8 * ES) as usize, 1)).unwrap();
    v.flush().unwrap();
    // Node 3 goes away; writes to two extents go on and are acknowledged by the others.
    c.nodes[2].down.store(true, Ordering::SeqCst);
    v.write_at(2 * ES + 4096, &pattern(2 * ES + 4096, 8192, 2))
        .unwrap();
    v.write_at(11 * ES, &pattern(11 * ES, 4096, 3)).unwrap();
    v.flush().unwrap();
    let h = v.health();
    assert!(!h[2].live, "{h:?}");
    assert_eq!(h[2].stale_extents, 2, "{h:?}");
    assert!(h[0].live && h[1].live, "{h:?}");
    // Still away: resync copies nothing.
    assert_eq!(v.resync().unwrap(), 0);
    // Back: only the two extents written meanwhile are copied.
    c.nodes[2].down.store(false, Ordering::SeqCst);
    let copied = v.resync().unwrap();
    assert_eq!(copied, 2 * ES, "resync copied {copied} bytes");
    assert_eq!(v.resynced_bytes(), 2 * ES);
    assert!(v.health().iter().all(|r| r.live), "{:?}", v.health());
    assert_eq!(
        c.region_bytes(2, "p", 2 * ES, ES as usize),
        c.region_bytes(0, "p", 2 * ES, ES as usize)
    );
    assert_eq!(
        c.region_bytes(2, "p", 11 * ES, 4096),
        pattern(11 * ES, 4096, 3)
    );
    // And it takes writes again.
    v.write_at(0, &[9u8; 4096]).unwrap();
    assert_eq!(c.region_bytes(2, "p", 0, 4096), vec![9u8; 4096]);
}

#[test]
fn a_corrupt_copy_is_served_from_another_replica_and_repaired() {
    let c = cluster(3);
    c.create("c", 4 * ES);
    let v = c.attach(0, "c", 4 * ES, 1);
    let p = pattern(0, 65536, 4);
    v.write_at(0, &p).unwrap();
    v.flush().unwrap();
    // Bit rot in the local replica (read first).
    let dir = c.nodes[0]
        .server
        .region("c")
        .unwrap()
        .unwrap()
        .dir()
        .to_path_buf();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("extent-000000.dat"))
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, 8192 + 17).unwrap();
    f.write_all_at(&[!byte[0]], 8192 + 17).unwrap();
    let mut b = vec![0u8; 65536];
    v.read_at(0, &mut b).unwrap();
    assert_eq!(b, p);
    assert!(v.repaired_blocks() > 0);
    assert_eq!(
        c.region_bytes(0, "c", 0, 65536),
        p,
        "the bad copy was rewritten"
    );
}

#[test]
fn a_new_generation_fences_the_old_writer() {
    let c = cluster(3);
    c.create("f", 2 * ES);
    let old = c.attach(0, "f", 2 * ES, 1);
    old.write_at(0, &[1u8; 4096]).unwrap();
    let new = c.attach(1, "f", 2 * ES, 2);
    let e = old.write_at(0, &[2u8; 4096]).unwrap_err();
    assert!(matches!(e, VolumeError::Fenced { current: 2, .. }), "{e}");
    assert!(e.to_string().contains("superseded"), "{e}");
    // Fenced for good, reads included.
    assert!(old.read_at(0, &mut [0u8; 512]).is_err());
    let mut b = vec![0u8; 4096];
    new.read_at(0, &mut b).unwrap();
    assert_eq!(b, vec![1u8; 4096], "the fenced write changed nothing");
    // An attach with an old generation is refused outright.
    let e = ReplicatedVolume::attach(
        c.nodes[2].transport.clone(),
        c.rt.handle().clone(),
        c.nodes[2].id,
        "f",
        2 * ES,
        ES,
        1,
        &c.targets(),
        None,
    )
    .err()
    .unwrap();
    assert!(matches!(e, VolumeError::Fenced { .. }), "{e}");
}

#[test]
fn no_live_replica_is_a_clear_error() {
    let c = cluster(2);
    c.create("u", ES);
    let v = c.attach(0, "u", ES, 1);
    for n in &c.nodes {
        n.down.store(true, Ordering::SeqCst);
    }
    let e = v.write_at(0, &[1u8; 512]).unwrap_err();
    assert!(matches!(e, VolumeError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("no replica available"), "{e}");
    // Bad requests are refused before any replica is asked.
    assert!(matches!(
        v.write_at(ES, &[1u8; 512]),
        Err(VolumeError::OutOfRange { .. })
    ));
}

#[test]
fn a_replica_known_to_be_stale_starts_faulted_and_is_rebuilt_in_full() {
    let c = cluster(3);
    c.create("s", 4 * ES);
    let v = c.attach(0, "s", 4 * ES, 1);
    v.write_at(ES, &[6u8; 4096]).unwrap();
    v.flush().unwrap();
    drop(v);
    // Node 3's copy is declared stale (e.g. recorded faulted by the previous writer).
    let mut t = c.targets();
    t[2].in_sync = false;
    let v = ReplicatedVolume::attach(
        c.nodes[1].transport.clone(),
        c.rt.handle().clone(),
        c.nodes[1].id,
        "s",
        4 * ES,
        ES,
        2,
        &t,
        Some(c.nodes[1].server.clone()),
    )
    .unwrap();
    assert!(!v.health()[2].live);
    assert_eq!(v.health()[2].stale_extents, 4);
    assert_eq!(v.resync().unwrap(), 4 * ES, "a full copy");
    assert!(v.health()[2].live);
    assert_eq!(c.region_bytes(2, "s", ES, 4096), vec![6u8; 4096]);
}

#[test]
fn writes_need_a_majority_of_three_replicas() {
    let c = cluster(3);
    c.create("q", 2 * ES);
    let v = c.attach(0, "q", 2 * ES, 1);
    c.nodes[2].down.store(true, Ordering::SeqCst);
    v.write_at(0, &[1u8; 4096]).unwrap();
    c.nodes[1].down.store(true, Ordering::SeqCst);
    // The local replica alone is not enough: a writer cut off from the rest must not
    // complete writes another writer's replicas will never see.
    let e = v.write_at(0, &[2u8; 4096]).unwrap_err();
    assert!(
        e.to_string()
            .contains("only 1 of 3 replicas took the write, 2 needed"),
        "{e}"
    );
}

#[test]
fn a_replica_away_across_a_take_over_is_copied_in_full() {
    let c = cluster(3);
    c.create("t", 4 * ES);
    let a = c.attach(0, "t", 4 * ES, 1);
    a.write_at(0, &[1u8; 4096]).unwrap();
    // Node 3 goes away; the first writer writes on, then a second writer takes over.
    c.nodes[2].down.store(true, Ordering::SeqCst);
    a.write_at(3 * ES, &[2u8; 4096]).unwrap();
    drop(a);
    let b = c.attach(1, "t", 4 * ES, 3);
    assert!(!b.health()[2].live, "node 3 did not answer the activation");
    b.write_at(ES, &[3u8; 4096]).unwrap();
    c.nodes[2].down.store(false, Ordering::SeqCst);
    // The new writer cannot know what the old one wrote to it: everything is copied.
    assert_eq!(b.resync().unwrap(), 4 * ES);
    assert_eq!(c.region_bytes(2, "t", 3 * ES, 4096), vec![2u8; 4096]);
    assert_eq!(c.region_bytes(2, "t", ES, 4096), vec![3u8; 4096]);
}

#[test]
fn a_replica_that_missed_a_crashed_writers_term_is_rebuilt_at_the_next_attach() {
    let c = cluster(3);
    c.create("m", 4 * ES);
    // Writer A attaches while node 3 is away, writes, and dies without telling anyone.
    c.nodes[2].down.store(true, Ordering::SeqCst);
    let a = c.attach(0, "m", 4 * ES, 1);
    a.write_at(2 * ES, &[7u8; 4096]).unwrap();
    drop(a);
    c.nodes[2].down.store(false, Ordering::SeqCst);
    // Writer B believes every replica in sync (nothing was recorded), yet node 3 is found
    // stale from the generations the replicas report, and copied in full.
    let b = c.attach(1, "m", 4 * ES, 2);
    let h = b.health();
    assert!(!h[2].live, "{h:?}");
    assert!(h[2].reason.contains("missed writer generation 1"), "{h:?}");
    assert_eq!(b.resync().unwrap(), 4 * ES);
    assert_eq!(c.region_bytes(2, "m", 2 * ES, 4096), vec![7u8; 4096]);
}

impl Cluster {
    /// A read-only client of snapshot `snap` of `volume`, read from node `on`.
    fn reader(&self, on: usize, volume: &str, snap: &str, size: u64) -> Arc<dyn Volume> {
        Arc::new(ReplicatedVolume::snapshot_reader(
            self.nodes[on].transport.clone(),
            self.rt.handle().clone(),
            self.nodes[on].id,
            volume,
            snap,
            size,
            ES,
            &self.targets(),
            Some(self.nodes[on].server.clone()),
        ))
    }
}

#[test]
fn clones_of_a_snapshot_pass_the_conformance_suite_and_share_its_blocks() {
    let c = cluster(3);
    let size = 4 * ES;
    c.create("img", size);
    let img = c.attach(0, "img", size, 1);
    let base = pattern(0, size as usize, 7);
    img.write_at(0, &base).unwrap();
    img.snapshot("s").unwrap();
    // Later writes to the volume do not reach the snapshot.
    img.write_at(0, &[1u8; 8192]).unwrap();
    let snap = c.reader(1, "img", "s", size);
    let mut got = vec![0u8; size as usize];
    snap.read_at(0, &mut got).unwrap();
    assert!(got == base, "the snapshot changed");
    assert!(
        snap.write_at(0, &[0u8; 512]).is_err(),
        "a snapshot took a write"
    );

    // A clone starts as the snapshot, bigger than it (the rest reads as zeros).
    c.create("clone", 2 * size);
    let clone = c
        .attach(2, "clone", 2 * size, 2)
        .with_parent(Some(snap.clone()));
    let mut got = vec![0u8; (2 * size) as usize];
    clone.read_at(0, &mut got).unwrap();
    assert!(got[..size as usize] == base[..] && got[size as usize..].iter().all(|b| *b == 0));
    // A partial block it does not hold is merged with the snapshot's.
    clone.write_at(4096 + 512, &[9u8; 512]).unwrap();
    let mut blk = vec![0u8; 4096];
    clone.read_at(4096, &mut blk).unwrap();
    let mut want = base[4096..8192].to_vec();
    want[512..1024].fill(9);
    assert_eq!(blk, want);
    // A discard of a partial block keeps the rest of the snapshot's block.
    clone.discard(3 * 4096 + 1024, 512).unwrap();
    clone.read_at(3 * 4096, &mut blk).unwrap();
    let mut want = base[3 * 4096..4 * 4096].to_vec();
    want[1024..1536].fill(0);
    assert_eq!(blk, want);
    // Nothing was copied: the clone's regions hold two blocks.
    for n in &c.nodes {
        let r = n.server.region("clone").unwrap().unwrap();
        assert!(r.allocated().unwrap() < 64 << 10, "{:?}", r.allocated());
    }

    // Clones pass the suite (their parent holds data; the suite overwrites what it reads).
    let n = AtomicU64::new(0);
    conformance::run(&|sz| {
        let name = format!("cc{}", n.fetch_add(1, Ordering::Relaxed));
        c.create(&name, sz);
        let parent: Arc<dyn Volume> = c.reader(0, "img", "s", size);
        let v = c.attach(0, &name, sz, 1).with_parent(Some(parent));
        // Start from zeros, as the suite expects of a new volume: discard everything.
        v.discard(0, sz).unwrap();
        Box::new(v) as Box<dyn Volume>
    });
}

#[test]
fn a_replica_that_missed_a_snapshot_and_the_writes_after_it_is_resynced_layer_by_layer() {
    let c = cluster(3);
    let size = 4 * ES;
    c.create("v", size);
    let v = c.attach(0, "v", size, 1);
    v.write_at(0, &pattern(0, size as usize, 1)).unwrap();
    v.snapshot("a").unwrap();
    c.nodes[2].down.store(true, Ordering::SeqCst);
    v.write_at(ES, &pattern(ES, 8192, 2)).unwrap();
    v.snapshot("b").unwrap();
    v.write_at(ES, &pattern(ES, 4096, 3)).unwrap();
    v.flush().unwrap();
    c.nodes[2].down.store(false, Ordering::SeqCst);
    v.resync().unwrap();
    assert!(v.health().iter().all(|h| h.live), "{:?}", v.health());
    // Node 3's own copy of each layer now matches node 1's.
    let (r0, r2) = (
        c.nodes[0].server.region("v").unwrap().unwrap(),
        c.nodes[2].server.region("v").unwrap().unwrap(),
    );
    assert_eq!(r2.snapshots(), vec!["a".to_string(), "b".to_string()]);
    for layer in [Some("a"), Some("b"), None] {
        let x = r0.read_layer(layer, 0, size).unwrap();
        let y = r2.read_layer(layer, 0, size).unwrap();
        assert!(x.data == y.data, "layer {layer:?} differs");
        assert_eq!(x.below, y.below);
    }
}
