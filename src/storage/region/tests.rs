use super::*;
use crate::storage::conformance::{self, pattern};
use std::sync::atomic::{AtomicU64, Ordering};

const ES: u64 = 1 << 20;
const SIZE: u64 = 4 << 20;

fn read(r: &Region, layer: Option<&str>, offset: u64, len: u64) -> Vec<u8> {
    r.read_layer(layer, offset, len).unwrap().data
}

#[test]
fn conformance_suite_with_and_without_snapshots() {
    let root = tempfile::tempdir().unwrap();
    let n = AtomicU64::new(0);
    conformance::run(&|size| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let r = Region::create(&root.path().join(format!("r{i}")), "v", size, ES).unwrap();
        if i % 2 == 1 {
            // A snapshot of the empty volume: every later write copies into it first.
            r.snapshot("s0").unwrap();
        }
        Box::new(r) as Box<dyn Volume>
    });
}

#[test]
fn a_preserved_block_is_durable_before_the_live_write_that_replaces_it() {
    let d = tempfile::tempdir().unwrap();
    let r = Region::create(d.path(), "v", SIZE, ES).unwrap();
    let a = pattern(0, SIZE as usize, 1);
    r.write_at(0, &a).unwrap();
    r.flush().unwrap();
    r.snapshot("s1").unwrap();
    let b = pattern(ES + 4096, 8192, 2);
    r.write_at(ES + 4096, &b).unwrap();
    // The snapshot layer holds the old blocks, synced: nothing of it is left dirty
    // (a dirty extent's unsynced blocks are what a power loss can lose), while the live
    // layer's write is not flushed yet.
    let snap = r.layer(Some("s1")).unwrap();
    assert_eq!(snap.dirty_extents().unwrap(), Vec::<u64>::new());
    assert_eq!(r.live.dirty_extents().unwrap(), vec![1]);
    assert_eq!(
        read(&r, Some("s1"), ES + 4096, 8192),
        a[(ES + 4096) as usize..(ES + 4096 + 8192) as usize]
    );
}

#[test]
fn a_snapshot_keeps_the_content_it_was_taken_with() {
    let d = tempfile::tempdir().unwrap();
    let r = Region::create(d.path(), "v", SIZE, ES).unwrap();
    let a = pattern(0, SIZE as usize, 1);
    r.write_at(0, &a).unwrap();
    r.snapshot("s1").unwrap();
    // Overwrite a range crossing an extent boundary, unaligned to blocks, and discard one.
    let b = pattern(ES - 1024, 8192, 2);
    r.write_at(ES - 1024, &b).unwrap();
    r.discard(2 * ES, 64 << 10).unwrap();
    assert_eq!(
        read(&r, Some("s1"), 0, SIZE),
        a,
        "s1 is what was written before it"
    );
    let mut live = a.clone();
    live[(ES - 1024) as usize..(ES + 7168) as usize].copy_from_slice(&b);
    live[(2 * ES) as usize..(2 * ES + (64 << 10)) as usize].fill(0);
    assert_eq!(read(&r, None, 0, SIZE), live);
    r.snapshot("s2").unwrap();
    let c = pattern(0, 4096, 3);
    r.write_at(0, &c).unwrap();
    let mut live2 = live.clone();
    live2[..4096].copy_from_slice(&c);
    assert_eq!(read(&r, Some("s2"), 0, SIZE), live);
    assert_eq!(read(&r, Some("s1"), 0, SIZE), a);
    assert_eq!(read(&r, None, 0, SIZE), live2);
    // The stack survives a reopen.
    r.flush().unwrap();
    drop(r);
    let r = Region::open(d.path()).unwrap();
    assert_eq!(r.snapshots(), vec!["s1".to_string(), "s2".to_string()]);
    assert_eq!(read(&r, Some("s1"), 0, SIZE), a);
    assert_eq!(read(&r, Some("s2"), 0, SIZE), live);
    // Dropping the middle of the stack keeps the others' content.
    r.snapshot("s3").unwrap();
    r.write_at(ES, &pattern(ES, 4096, 4)).unwrap();
    r.drop_snapshot("s2").unwrap();
    assert_eq!(read(&r, Some("s1"), 0, SIZE), a);
    assert_eq!(read(&r, Some("s3"), 0, SIZE), live2);
    r.drop_snapshot("s1").unwrap();
    r.drop_snapshot("s1").unwrap();
    assert_eq!(read(&r, Some("s3"), 0, SIZE), live2);
    assert_eq!(r.snapshots(), vec!["s3".to_string()]);
    assert!(!d.path().join("snap/s1").exists() && !d.path().join("snap/s2").exists());
    let err = r.read_layer(Some("s1"), 0, 4096).unwrap_err().to_string();
    assert!(err.contains("no snapshot s1"), "{err}");
}

#[test]
fn blocks_never_written_lie_below_the_region_in_every_layer() {
    let d = tempfile::tempdir().unwrap();
    let r = Region::create(d.path(), "v", SIZE, ES).unwrap();
    r.write_at(4096, &[7u8; 4096]).unwrap();
    r.snapshot("s").unwrap();
    r.write_at(0, &[9u8; 8192]).unwrap();
    // Block 0 was never written before the snapshot: a clone reads it from its parent.
    let s = r.read_layer(Some("s"), 0, 3 * 4096).unwrap();
    assert_eq!(s.below, vec![0, 2]);
    assert_eq!(&s.data[4096..8192], &[7u8; 4096][..]);
    let live = r.read_layer(None, 0, 3 * 4096).unwrap();
    assert_eq!(live.below, vec![2]);
    // A discarded block is present (zeros), not below.
    r.discard(0, 4096).unwrap();
    assert_eq!(
        r.read_layer(None, 0, 4096).unwrap().below,
        Vec::<u64>::new()
    );
    assert_eq!(r.read_layer(Some("s"), 0, 4096).unwrap().below, vec![0]);
}

#[test]
fn a_copy_made_layer_by_layer_reads_the_same() {
    let d = tempfile::tempdir().unwrap();
    let src = Region::create(&d.path().join("a"), "v", SIZE, ES).unwrap();
    src.write_at(0, &pattern(0, 2 << 20, 1)).unwrap();
    src.snapshot("s1").unwrap();
    src.write_at(4096, &pattern(4096, 8192, 2)).unwrap();
    src.discard(3 << 20, 4096).unwrap();
    src.snapshot("s2").unwrap();
    src.write_at(3 << 20, &pattern(3 << 20, 4096, 3)).unwrap();
    let dst = Region::create(&d.path().join("b"), "v", SIZE, ES).unwrap();
    // The copy had a snapshot the source dropped, and writes of its own.
    dst.snapshot("old").unwrap();
    dst.write_at(0, &[5u8; 4096]).unwrap();
    dst.set_snapshots(&src.snapshots()).unwrap();
    assert_eq!(dst.snapshots(), src.snapshots());
    let blocks = SIZE / BLOCK;
    let names = src.snapshots();
    let layers: Vec<Option<&str>> = names
        .iter()
        .map(|n| Some(n.as_str()))
        .chain(std::iter::once(None))
        .collect();
    for l in &layers {
        let (data, states) = src.read_raw(*l, 0, blocks).unwrap();
        dst.write_raw(*l, 0, &states, &data).unwrap();
    }
    for l in &layers {
        let a = src.read_layer(*l, 0, SIZE).unwrap();
        let b = dst.read_layer(*l, 0, SIZE).unwrap();
        assert!(a.data == b.data, "layer {l:?} differs");
        assert_eq!(a.below, b.below, "layer {l:?}");
    }
}

#[test]
fn an_unrecorded_snapshot_directory_is_removed_at_open_and_bad_names_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let r = Region::create(d.path(), "v", SIZE, ES).unwrap();
    r.snapshot("kept").unwrap();
    drop(r);
    std::fs::create_dir_all(d.path().join("snap/half-made")).unwrap();
    let r = Region::open(d.path()).unwrap();
    assert_eq!(r.snapshots(), vec!["kept".to_string()]);
    assert!(!d.path().join("snap/half-made").exists());
    let err = r.snapshot("../x").unwrap_err().to_string();
    assert!(err.contains("not a snapshot name"), "{err}");
    // A snapshot covers the size it was taken at; the volume may grow past it.
    r.grow(2 * SIZE).unwrap();
    r.write_at(SIZE, &[1u8; 4096]).unwrap();
    let err = r
        .read_layer(Some("kept"), SIZE, 4096)
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the volume"), "{err}");
}
