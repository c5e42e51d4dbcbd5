use super::*;
use crate::storage::conformance::{self, pattern};

const ES: u64 = 1 << 20;

fn region(dir: &Path) -> ExtentVolume {
    ExtentVolume::create(dir, "vol-test", 8 << 20, ES).unwrap()
}

#[test]
fn conformance_suite() {
    let root = tempfile::tempdir().unwrap();
    let n = AtomicU64::new(0);
    conformance::run(&|size| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        Box::new(ExtentVolume::create(&root.path().join(format!("r{i}")), "v", size, ES).unwrap())
            as Box<dyn Volume>
    });
}

#[test]
fn data_survives_reopen_and_unwritten_extents_take_no_space() {
    let d = tempfile::tempdir().unwrap();
    let v = region(d.path());
    let p = pattern(3 * ES - 4096, 8192, 1);
    v.write_at(3 * ES - 4096, &p).unwrap();
    v.flush().unwrap();
    drop(v);
    let files: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("extent-"))
        .collect();
    assert_eq!(
        files.len(),
        2,
        "only the two touched extents exist: {files:?}"
    );
    let v = ExtentVolume::open(d.path()).unwrap();
    assert_eq!(v.torn_blocks_repaired(), 0);
    let mut b = vec![0u8; 8192];
    v.read_at(3 * ES - 4096, &mut b).unwrap();
    assert_eq!(b, p);
    assert_eq!(v.meta().volume, "vol-test");
}

fn flip_byte(dir: &Path, extent: u64, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(extent_path(dir, extent))
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
}

#[test]
fn silent_corruption_is_detected_on_read_and_named() {
    let d = tempfile::tempdir().unwrap();
    let v = region(d.path());
    v.write_at(0, &pattern(0, 64 << 10, 2)).unwrap();
    v.flush().unwrap();
    drop(v);
    // Bit rot in block 5 of extent 0, after a clean flush.
    flip_byte(d.path(), 0, 5 * BLOCK + 100);
    let v = ExtentVolume::open(d.path()).unwrap();
    assert_eq!(
        v.torn_blocks_repaired(),
        0,
        "a clean extent is not 'repaired'"
    );
    let mut b = vec![0u8; 4096];
    let e = v.read_at(5 * BLOCK, &mut b).unwrap_err();
    assert!(matches!(e, VolumeError::Corrupt { block: 5, .. }), "{e}");
    assert!(e.to_string().contains("vol-test extent 0"), "{e}");
    // Its neighbours read fine.
    v.read_at(4 * BLOCK, &mut b).unwrap();
    assert_eq!(b, pattern(4 * BLOCK, 4096, 2)[..]);
    // A partial write into the corrupt block cannot merge with bad data: refused.
    assert!(v.write_at(5 * BLOCK, &[1u8; 512]).is_err());
    // A whole-block overwrite replaces it.
    v.write_at(5 * BLOCK, &pattern(5 * BLOCK, 4096, 3)).unwrap();
    v.read_at(5 * BLOCK, &mut b).unwrap();
    assert_eq!(b, pattern(5 * BLOCK, 4096, 3));
}

#[test]
fn a_hole_with_data_but_no_checksum_is_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let v = region(d.path());
    v.write_at(0, &[9u8; 4096]).unwrap();
    v.flush().unwrap();
    drop(v);
    flip_byte(d.path(), 0, 7 * BLOCK);
    let v = ExtentVolume::open(d.path()).unwrap();
    let mut b = vec![0u8; 4096];
    assert!(matches!(
        v.read_at(7 * BLOCK, &mut b),
        Err(VolumeError::Corrupt { block: 7, .. })
    ));
}

#[test]
fn a_write_torn_by_a_crash_in_a_dirty_extent_is_recovered() {
    let d = tempfile::tempdir().unwrap();
    let v = region(d.path());
    v.write_at(ES, &pattern(ES, 8192, 4)).unwrap();
    v.flush().unwrap();
    // Not flushed: the extent is dirty on disk. Then the data of block 1 changes without
    // its checksum (the crash hit between the checksum and the data write).
    v.write_at(ES + 16384, &[5u8; 4096]).unwrap();
    drop(v);
    flip_byte(d.path(), 1, BLOCK + 7);
    let v = ExtentVolume::open(d.path()).unwrap();
    // Block 1 (torn) and block 4, whose checksum was still to be saved at the next flush.
    assert_eq!(v.torn_blocks_repaired(), 2);
    let mut b = vec![0u8; 4096];
    v.read_at(ES + BLOCK, &mut b).unwrap();
    v.read_at(ES + 16384, &mut b).unwrap();
    assert_eq!(b, [5u8; 4096]);
}

#[test]
fn alternating_slots_keep_the_previous_checksum() {
    let d = tempfile::tempdir().unwrap();
    let v = region(d.path());
    let a = [1u8; 4096];
    let b2 = [2u8; 4096];
    v.write_at(0, &a).unwrap();
    v.write_at(0, &b2).unwrap();
    v.flush().unwrap();
    drop(v);
    // Put the older contents back on disk (a write that never reached the platter):
    // it still matches the other slot, so it reads as valid old data, not corruption.
    let f = OpenOptions::new()
        .write(true)
        .open(extent_path(d.path(), 0))
        .unwrap();
    f.write_all_at(&a, 0).unwrap();
    let v = ExtentVolume::open(d.path()).unwrap();
    let mut r = vec![0u8; 4096];
    v.read_at(0, &mut r).unwrap();
    assert_eq!(r, a);
    // The next write goes to the slot that does not describe what is on disk.
    v.write_at(0, &[3u8; 4096]).unwrap();
    v.read_at(0, &mut r).unwrap();
    assert_eq!(r, [3u8; 4096]);
}

#[test]
fn generation_only_rises_and_persists_and_grow_keeps_data() {
    let d = tempfile::tempdir().unwrap();
    let v = region(d.path());
    assert_eq!(v.set_generation(5).unwrap(), 5);
    assert_eq!(v.set_generation(3).unwrap(), 5);
    v.write_at(0, &[7u8; 512]).unwrap();
    v.grow(16 << 20).unwrap();
    assert!(v.grow(1 << 20).is_err(), "shrinking is refused");
    v.write_at((16 << 20) - 512, &[8u8; 512]).unwrap();
    v.flush().unwrap();
    drop(v);
    let v = ExtentVolume::open(d.path()).unwrap();
    assert_eq!(v.meta().generation, 5);
    assert_eq!(v.size(), 16 << 20);
    let mut b = [0u8; 512];
    v.read_at((16 << 20) - 512, &mut b).unwrap();
    assert_eq!(b, [8u8; 512]);
    v.read_at(0, &mut b).unwrap();
    assert_eq!(b, [7u8; 512]);
}

#[test]
fn bad_regions_and_parameters_get_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    assert!(ExtentVolume::create(&d.path().join("a"), "v", 1 << 20, 3000).is_err());
    assert!(ExtentVolume::create(&d.path().join("b"), "v", 1000, ES).is_err());
    let _v = region(&d.path().join("c"));
    let e = ExtentVolume::create(&d.path().join("c"), "v", 1 << 20, ES)
        .err()
        .unwrap();
    assert!(e.to_string().contains("already holds a region"), "{e}");
    std::fs::create_dir_all(d.path().join("bad")).unwrap();
    std::fs::write(d.path().join("bad/region.json"), b"{not json").unwrap();
    let e = ExtentVolume::open(&d.path().join("bad")).err().unwrap();
    assert!(e.to_string().contains("not a region description"), "{e}");
    let e = ExtentVolume::open(&d.path().join("none")).err().unwrap();
    assert!(e.to_string().contains("none"), "{e}");
}

#[test]
fn a_damaged_trailer_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let v = region(d.path());
    v.write_at(0, &[1u8; 4096]).unwrap();
    v.flush().unwrap();
    drop(v);
    let blocks = ES / BLOCK;
    flip_byte(d.path(), 0, ES + blocks * SLOT_BYTES);
    let e = ExtentVolume::open(d.path()).err().unwrap();
    assert!(e.to_string().contains("trailer"), "{e}");
}

#[test]
fn destroy_frees_the_region() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("r");
    let v = region(&dir);
    v.write_at(0, &pattern(0, 1 << 20, 5)).unwrap();
    assert!(v.allocated().unwrap() >= 1 << 20);
    v.destroy().unwrap();
    assert!(!dir.exists());
}

#[test]
fn idle_clean_extents_are_closed_beyond_the_bound_and_read_back_on_use() {
    let d = tempfile::tempdir().unwrap();
    let es = 64 << 10;
    let count = 100u64;
    let v = ExtentVolume::create(d.path(), "v", count * es, es).unwrap();
    v.set_open_limit(4);
    for n in 0..count {
        v.write_at(n * es + 512, &pattern(n * es, 4096, n)).unwrap();
    }
    assert_eq!(
        v.open_extents(),
        count as usize,
        "dirty extents stay open until a flush makes them clean"
    );
    v.flush().unwrap();
    assert_eq!(v.open_extents(), 4, "the flush closes the idle ones");
    for n in 0..count {
        let mut b = vec![0u8; 4096];
        v.read_at(n * es + 512, &mut b).unwrap();
        assert_eq!(b, pattern(n * es, 4096, n), "extent {n}");
        assert!(v.open_extents() <= 4, "{} open", v.open_extents());
    }
    // A closed extent written again is opened again, and its data is kept.
    v.write_at(7 * es, &pattern(7, 512, 9)).unwrap();
    v.flush().unwrap();
    drop(v);
    let v = ExtentVolume::open(d.path()).unwrap();
    assert_eq!(
        v.open_extents(),
        open::PER_REGION,
        "opening keeps the bound too"
    );
    let mut b = vec![0u8; 512];
    v.read_at(7 * es, &mut b).unwrap();
    assert_eq!(b, pattern(7, 512, 9));
    let mut b = vec![0u8; 4096];
    v.read_at(99 * es + 512, &mut b).unwrap();
    assert_eq!(b, pattern(99 * es, 4096, 99));
}
