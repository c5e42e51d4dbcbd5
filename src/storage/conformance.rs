//! The conformance suite every [`Volume`] implementation runs (from its unit tests):
//! zeros when fresh, exact read-back, neighbours untouched, overlapping overwrites,
//! bad ranges refused with the right error, discard, large and concurrent I/O, and a
//! randomised run checked against a plain byte-array model.

use std::sync::Arc;

use super::{Volume, VolumeError, WriteDone, SECTOR};

/// Size of the volumes the suite asks for: several extents of any reasonable test extent size.
pub const SUITE_SIZE: u64 = 8 << 20;

/// A deterministic pattern for `len` bytes written at `offset` in round `round`.
pub fn pattern(offset: u64, len: usize, round: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            // The round's multiplier reaches the bits kept below, so rounds differ.
            let x = (offset + i).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ round.wrapping_mul(0x2545_f491_4f6c_dd1d);
            (x >> 29) as u8 | 1
        })
        .collect()
}

fn read(v: &dyn Volume, offset: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0xAAu8; len];
    v.read_at(offset, &mut b)
        .unwrap_or_else(|e| panic!("read {len} at {offset}: {e}"));
    b
}

/// Runs every check against volumes made by `make(size)`.
pub fn run(make: &dyn Fn(u64) -> Box<dyn Volume>) {
    fresh_reads_zeros(make(SUITE_SIZE).as_ref());
    read_back_and_neighbours(make(SUITE_SIZE).as_ref());
    bad_ranges_are_refused(make(SUITE_SIZE).as_ref());
    discard_reads_zeros(make(SUITE_SIZE).as_ref());
    large_io_across_the_volume(make(SUITE_SIZE).as_ref());
    concurrent_writers(Arc::from(make(SUITE_SIZE)));
    started_writes_complete_once(Arc::from(make(SUITE_SIZE)));
    random_ops_match_a_model(make(SUITE_SIZE).as_ref());
}

fn fresh_reads_zeros(v: &dyn Volume) {
    assert_eq!(v.size(), SUITE_SIZE);
    assert!(read(v, 0, 64 << 10).iter().all(|b| *b == 0));
    assert!(read(v, SUITE_SIZE - 4096, 4096).iter().all(|b| *b == 0));
    v.flush().expect("flush of a fresh volume");
}

fn read_back_and_neighbours(v: &dyn Volume) {
    let p = pattern(4096, 8192, 1);
    v.write_at(4096, &p).unwrap();
    assert_eq!(read(v, 4096, 8192), p);
    assert!(read(v, 0, 4096).iter().all(|b| *b == 0), "before the write");
    assert!(
        read(v, 12288, 4096).iter().all(|b| *b == 0),
        "after the write"
    );
    // A single sector, unaligned to 4 KiB, inside the written range.
    let s = pattern(4096 + 1536, 512, 2);
    v.write_at(4096 + 1536, &s).unwrap();
    let got = read(v, 4096, 8192);
    assert_eq!(&got[..1536], &p[..1536]);
    assert_eq!(&got[1536..2048], &s[..]);
    assert_eq!(&got[2048..], &p[2048..]);
    // A partial read at sector granularity.
    assert_eq!(read(v, 4096 + 1536, 512), s);
    // The last sector of the volume.
    let last = pattern(SUITE_SIZE - SECTOR, SECTOR as usize, 3);
    v.write_at(SUITE_SIZE - SECTOR, &last).unwrap();
    assert_eq!(read(v, SUITE_SIZE - SECTOR, SECTOR as usize), last);
    v.flush().unwrap();
    assert_eq!(read(v, 4096 + 1536, 512), s);
}

fn bad_ranges_are_refused(v: &dyn Volume) {
    let mut b = vec![0u8; 512];
    assert!(matches!(
        v.read_at(100, &mut b),
        Err(VolumeError::Unaligned { .. })
    ));
    assert!(matches!(
        v.write_at(0, &[1u8; 100]),
        Err(VolumeError::Unaligned { .. })
    ));
    assert!(matches!(
        v.write_at(SUITE_SIZE, &[1u8; 512]),
        Err(VolumeError::OutOfRange { .. })
    ));
    assert!(matches!(
        v.read_at(SUITE_SIZE - 512, &mut [0u8; 1024]),
        Err(VolumeError::OutOfRange { .. })
    ));
    assert!(matches!(
        v.discard(SUITE_SIZE - 512, 1024),
        Err(VolumeError::OutOfRange { .. })
    ));
    assert!(matches!(
        v.discard(u64::MAX - 511, 512),
        Err(VolumeError::OutOfRange { .. })
    ));
    // Refused writes changed nothing.
    assert!(read(v, SUITE_SIZE - 4096, 4096).iter().all(|x| *x == 0));
    // Empty requests at the end are fine.
    v.read_at(SUITE_SIZE, &mut []).unwrap();
    v.write_at(SUITE_SIZE, &[]).unwrap();
}

fn discard_reads_zeros(v: &dyn Volume) {
    let p = pattern(0, 1 << 20, 4);
    v.write_at(0, &p).unwrap();
    v.flush().unwrap();
    let before = v.allocated();
    // Discard a middle range, sector-aligned but not block-aligned at the start.
    v.discard(512, (256 << 10) - 512).unwrap();
    let got = read(v, 0, 1 << 20);
    assert_eq!(&got[..512], &p[..512]);
    assert!(got[512..256 << 10].iter().all(|b| *b == 0));
    assert_eq!(&got[256 << 10..], &p[256 << 10..]);
    v.flush().unwrap();
    assert_eq!(read(v, 0, 1 << 20), got, "after flush");
    if let (Some(b), Some(a)) = (before, v.allocated()) {
        assert!(a < b, "discard freed nothing: {b} -> {a}");
    }
    // Writing into a discarded range works again.
    let q = pattern(8192, 4096, 5);
    v.write_at(8192, &q).unwrap();
    assert_eq!(read(v, 8192, 4096), q);
}

fn large_io_across_the_volume(v: &dyn Volume) {
    // One write covering most of the volume, crossing every internal boundary.
    let off = 3 * 512;
    let len = (SUITE_SIZE - 2 * off) as usize;
    let p = pattern(off, len, 6);
    v.write_at(off, &p).unwrap();
    assert_eq!(read(v, off, len), p);
    assert!(read(v, 0, off as usize).iter().all(|b| *b == 0));
    v.flush().unwrap();
    assert_eq!(read(v, off, len), p);
}

fn concurrent_writers(v: Arc<dyn Volume>) {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let v = v.clone();
            std::thread::spawn(move || {
                for i in 0..64u64 {
                    // Interleaved 4 KiB slots: thread t owns slots t, t+4, t+8, ...
                    let off = (i * 4 + t) * 4096;
                    v.write_at(off, &pattern(off, 4096, 7 + t)).unwrap();
                    if i % 16 == 0 {
                        v.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    for slot in 0..256u64 {
        let off = slot * 4096;
        assert_eq!(
            read(v.as_ref(), off, 4096),
            pattern(off, 4096, 7 + slot % 4),
            "slot {slot}"
        );
    }
}

/// Starts a write the way the NBD server does: the volume's own asynchronous path, or
/// `write_at` when it hands the write back.
fn start(v: &dyn Volume, offset: u64, data: Vec<u8>, done: WriteDone) {
    if let Err((data, done)) = v.start_write(offset, data, done) {
        done(v.write_at(offset, &data));
    }
}

fn started_writes_complete_once(v: Arc<dyn Volume>) {
    let (tx, rx) = std::sync::mpsc::channel();
    // 256 writes of 4-16 KiB, all started before any is waited for; none overlap.
    for i in 0..256u64 {
        let off = i * (32 << 10) + (i % 3) * 512;
        let len = 4096 * (1 + (i as usize % 4));
        let tx = tx.clone();
        let done: WriteDone = Box::new(move |r| {
            let _ = tx.send((i, r));
        });
        start(v.as_ref(), off, pattern(off, len, 300 + i), done);
    }
    // Refused ones are answered too, with the reason.
    let tx2 = tx.clone();
    start(
        v.as_ref(),
        SUITE_SIZE,
        vec![1u8; 512],
        Box::new(move |r| {
            let _ = tx2.send((u64::MAX, r));
        }),
    );
    drop(tx);
    let mut seen = vec![0u32; 256];
    let mut refused = 0;
    for (i, r) in rx.iter() {
        if i == u64::MAX {
            assert!(matches!(r, Err(VolumeError::OutOfRange { .. })), "{r:?}");
            refused += 1;
            continue;
        }
        r.unwrap_or_else(|e| panic!("write {i}: {e}"));
        seen[i as usize] += 1;
    }
    assert_eq!(refused, 1);
    assert!(seen.iter().all(|n| *n == 1), "every write answered once");
    for i in 0..256u64 {
        let off = i * (32 << 10) + (i % 3) * 512;
        let len = 4096 * (1 + (i as usize % 4));
        assert_eq!(
            read(v.as_ref(), off, len),
            pattern(off, len, 300 + i),
            "write {i}"
        );
    }
    v.flush().unwrap();
}

fn random_ops_match_a_model(v: &dyn Volume) {
    let size = SUITE_SIZE as usize;
    let mut model = vec![0u8; size];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let sectors = SUITE_SIZE / SECTOR;
    for round in 0..300u64 {
        let start = next(sectors);
        let count = 1 + next(64.min(sectors - start));
        let (off, len) = (start * SECTOR, (count * SECTOR) as usize);
        match next(10) {
            0..=5 => {
                let p = pattern(off, len, 100 + round);
                v.write_at(off, &p).unwrap();
                model[off as usize..off as usize + len].copy_from_slice(&p);
            }
            6 => {
                v.discard(off, len as u64).unwrap();
                model[off as usize..off as usize + len].fill(0);
            }
            7 => v.flush().unwrap(),
            _ => assert_eq!(
                read(v, off, len),
                &model[off as usize..off as usize + len],
                "round {round}: read {len} at {off}"
            ),
        }
    }
    let all = read(v, 0, size);
    assert!(all == model, "final contents differ from the model");
}
