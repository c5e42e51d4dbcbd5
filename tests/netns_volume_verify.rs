//! A versioned-block verifier on a 3-replica volume while a replica node is killed during
//! writes and comes back: every block carries (block number, version, checksum); after the
//! run every block must be intact and at least as new as its last acknowledged write, read
//! both on the writer and, after a take-over, on the node that was killed (its resynced copy).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{export, json, replicated_volume, wait_for, Cluster};
use strata::storage::nbd::NbdVolume;
use strata::storage::Volume;

const BLOCK: usize = 4096;
const BLOCKS: u64 = 4096; // 16 MiB of the volume, across its first extent

fn block_bytes(block: u64, version: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    b[..4].copy_from_slice(b"STRV");
    b[4..12].copy_from_slice(&block.to_le_bytes());
    b[12..20].copy_from_slice(&version.to_le_bytes());
    let mut x = block.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ version;
    for byte in b[20..BLOCK - 4].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    let c = crc32fast::hash(&b[..BLOCK - 4]);
    b[BLOCK - 4..].copy_from_slice(&c.to_le_bytes());
    b
}

/// The version a block holds, or why it is wrong (zeros = version 0).
fn decode(block: u64, b: &[u8]) -> Result<u64, String> {
    if b.iter().all(|x| *x == 0) {
        return Ok(0);
    }
    if &b[..4] != b"STRV" {
        return Err("no header".into());
    }
    let c = u32::from_le_bytes(b[BLOCK - 4..].try_into().unwrap());
    if crc32fast::hash(&b[..BLOCK - 4]) != c {
        return Err("bad checksum".into());
    }
    let got = u64::from_le_bytes(b[4..12].try_into().unwrap());
    if got != block {
        return Err(format!("holds block {got}"));
    }
    Ok(u64::from_le_bytes(b[12..20].try_into().unwrap()))
}

fn open(uri: &str) -> NbdVolume {
    let rest = uri.strip_prefix("nbd+unix:///").expect("nbd+unix URI");
    let (export, socket) = rest.split_once("?socket=").expect("socket");
    NbdVolume::connect_unix(socket, export).expect("connect to the export")
}

/// Checks every block against the acknowledged versions; returns how many were written.
fn verify(v: &NbdVolume, acked: &[u64], attempted: &[u64]) -> usize {
    let mut buf = vec![0u8; BLOCK * 256];
    let mut written = 0;
    for chunk in 0..(BLOCKS / 256) {
        v.read_at(chunk * 256 * BLOCK as u64, &mut buf)
            .expect("read");
        for i in 0..256u64 {
            let block = chunk * 256 + i;
            let got = decode(block, &buf[i as usize * BLOCK..(i as usize + 1) * BLOCK])
                .unwrap_or_else(|e| panic!("block {block}: {e}"));
            let (a, t) = (acked[block as usize], attempted[block as usize]);
            assert!(
                got >= a && got <= t,
                "block {block}: holds version {got}, acknowledged {a}, attempted up to {t}"
            );
            if a > 0 {
                written += 1;
            }
        }
    }
    written
}

#[test]
fn no_acknowledged_write_is_lost_when_a_replica_dies_and_returns_during_writes() {
    let mut c = Cluster::form(3);
    let name = replicated_volume(&c, 0, "verify", "128M", 3);
    let uri = export(&c, 0, &name);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (uri, stop) = (uri.clone(), stop.clone());
        std::thread::spawn(move || {
            let v = open(&uri);
            let mut acked = vec![0u64; BLOCKS as usize];
            let mut attempted = vec![0u64; BLOCKS as usize];
            let mut x: u64 = 0x1234_5678_9abc_def1;
            let mut version = 0u64;
            let mut failures = 0;
            while !stop.load(Ordering::SeqCst) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let block = x % BLOCKS;
                version += 1;
                attempted[block as usize] = version;
                match v.write_at(block * BLOCK as u64, &block_bytes(block, version)) {
                    Ok(()) => acked[block as usize] = version,
                    Err(_) => failures += 1,
                }
                if version.is_multiple_of(200) {
                    let _ = v.flush();
                }
            }
            v.flush().expect("final flush");
            (acked, attempted, version, failures)
        })
    };
    // A replica node dies during the writes, then comes back.
    std::thread::sleep(Duration::from_secs(2));
    c.nodes[2].kill();
    std::thread::sleep(Duration::from_secs(4));
    c.nodes[2].start();
    let back = Instant::now();
    wait_for(Duration::from_secs(60), || {
        let v = json(&c.nodes[0].cli(&["volume", "show", &name, "--json"]));
        (v["redundancy"] == "3 of 3 replicas in sync" && back.elapsed() > Duration::from_secs(2))
            .then_some(())
    })
    .expect("redundancy did not come back");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let (acked, attempted, versions, failures) = writer.join().expect("writer");
    assert!(versions > 500, "only {versions} writes were made");
    assert_eq!(failures, 0, "writes failed although two replicas were live");

    // On the writer.
    let written = verify(&open(&uri), &acked, &attempted);
    assert!(written > 100, "{written}");
    // On the node that died: it takes the volume over and reads its own copy first.
    let uri2 = export(&c, 2, &name);
    verify(&open(&uri2), &acked, &attempted);
}
