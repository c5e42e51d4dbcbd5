use super::super::test_util::{desc, mem, queue_with_chain, used, used_idx, F_WRITE};
use super::*;
use std::sync::{Arc, Mutex};

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;

fn header(m: &GuestMemoryMmap, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    m.write_slice(&h, GuestAddress(HDR)).unwrap();
}

fn status(m: &GuestMemoryMmap) -> u8 {
    m.read_obj::<u8>(GuestAddress(STATUS)).unwrap()
}

fn file_disk(sectors: u64) -> (tempfile::TempDir, PathBuf, Block) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("disk.img");
    std::fs::write(&p, vec![0u8; (sectors * SECTOR_SIZE) as usize]).unwrap();
    let b = Block::new(open_file(&p, false).unwrap(), false, "disk-1");
    (dir, p, b)
}

fn run(
    b: &mut Block,
    m: &GuestMemoryMmap,
    descs: &[virtio_queue::desc::RawDescriptor],
) -> (u32, u32) {
    let (mq, q) = queue_with_chain(m, 0, descs);
    let mut qs = vec![q];
    assert!(b.process(m, &mut qs, DeviceEvent::Queue(0)).unwrap());
    assert_eq!(used_idx(&mq), 1);
    used(&mq, 0)
}

#[test]
fn write_then_read_round_trip_and_flush() {
    let m = mem();
    let (_d, path, mut b) = file_disk(16);
    let payload: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    m.write_slice(&payload, GuestAddress(DATA)).unwrap();
    header(&m, VIRTIO_BLK_T_OUT, 2);
    let (_, len) = run(
        &mut b,
        &m,
        &[
            desc(HDR, 16, 0),
            desc(DATA, 1024, 0),
            desc(STATUS, 1, F_WRITE),
        ],
    );
    assert_eq!((status(&m), len), (VIRTIO_BLK_S_OK as u8, 1));
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(&on_disk[1024..2048], &payload[..]);

    m.write_slice(&[0u8; 1024], GuestAddress(DATA)).unwrap();
    header(&m, VIRTIO_BLK_T_IN, 2);
    // Two data descriptors to cover the split path.
    let (_, len) = run(
        &mut b,
        &m,
        &[
            desc(HDR, 16, 0),
            desc(DATA, 512, F_WRITE),
            desc(DATA + 512, 512, F_WRITE),
            desc(STATUS, 1, F_WRITE),
        ],
    );
    assert_eq!((status(&m), len), (VIRTIO_BLK_S_OK as u8, 1025));
    let mut back = vec![0u8; 1024];
    m.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, payload);

    header(&m, VIRTIO_BLK_T_FLUSH, 0);
    let (_, len) = run(&mut b, &m, &[desc(HDR, 16, 0), desc(STATUS, 1, F_WRITE)]);
    assert_eq!((status(&m), len), (VIRTIO_BLK_S_OK as u8, 1));
}

#[test]
fn get_id_returns_serial() {
    let m = mem();
    let (_d, _p, mut b) = file_disk(1);
    header(&m, VIRTIO_BLK_T_GET_ID, 0);
    let (_, len) = run(
        &mut b,
        &m,
        &[
            desc(HDR, 16, 0),
            desc(DATA, 20, F_WRITE),
            desc(STATUS, 1, F_WRITE),
        ],
    );
    let mut id = [0u8; 6];
    m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!((&id, status(&m), len), (b"disk-1", 0, 21));
}

#[test]
fn out_of_range_sector_is_ioerr() {
    let m = mem();
    let (_d, _p, mut b) = file_disk(4);
    header(&m, VIRTIO_BLK_T_IN, 3);
    let (_, len) = run(
        &mut b,
        &m,
        &[
            desc(HDR, 16, 0),
            desc(DATA, 1024, F_WRITE),
            desc(STATUS, 1, F_WRITE),
        ],
    );
    assert_eq!((status(&m), len), (VIRTIO_BLK_S_IOERR as u8, 1));
    header(&m, VIRTIO_BLK_T_OUT, u64::MAX);
    run(
        &mut b,
        &m,
        &[
            desc(HDR, 16, 0),
            desc(DATA, 512, 0),
            desc(STATUS, 1, F_WRITE),
        ],
    );
    assert_eq!(status(&m), VIRTIO_BLK_S_IOERR as u8);
}

#[test]
fn malformed_chains_get_errors_not_panics() {
    let m = mem();
    let (_d, _p, mut b) = file_disk(4);
    // Too short: header only, no status.
    header(&m, VIRTIO_BLK_T_IN, 0);
    let (_, len) = run(&mut b, &m, &[desc(HDR, 16, 0)]);
    assert_eq!(len, 0);
    // Write-only header.
    m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    let (_, len) = run(
        &mut b,
        &m,
        &[desc(HDR, 16, F_WRITE), desc(STATUS, 1, F_WRITE)],
    );
    assert_eq!((status(&m), len), (VIRTIO_BLK_S_IOERR as u8, 1));
    // Short header.
    let (_, len) = run(&mut b, &m, &[desc(HDR, 8, 0), desc(STATUS, 1, F_WRITE)]);
    assert_eq!((status(&m), len), (VIRTIO_BLK_S_IOERR as u8, 1));
    // Read into a device-readable buffer.
    header(&m, VIRTIO_BLK_T_IN, 0);
    run(
        &mut b,
        &m,
        &[
            desc(HDR, 16, 0),
            desc(DATA, 512, 0),
            desc(STATUS, 1, F_WRITE),
        ],
    );
    assert_eq!(status(&m), VIRTIO_BLK_S_IOERR as u8);
    // Data buffer outside guest memory.
    run(
        &mut b,
        &m,
        &[
            desc(HDR, 16, 0),
            desc(0xfff_f000, 0x2000, F_WRITE),
            desc(STATUS, 1, F_WRITE),
        ],
    );
    // Read-only status descriptor: nothing can be reported.
    let (_, len) = run(&mut b, &m, &[desc(HDR, 16, 0), desc(STATUS, 1, 0)]);
    assert_eq!(len, 0);
    // Unknown request type.
    header(&m, 77, 0);
    run(&mut b, &m, &[desc(HDR, 16, 0), desc(STATUS, 1, F_WRITE)]);
    assert_eq!(status(&m), VIRTIO_BLK_S_UNSUPP as u8);
}

/// A volume whose every I/O fails.
struct Broken(Arc<Mutex<u32>>);
fn injected() -> VolumeError {
    VolumeError::Io {
        op: "test",
        path: "injected".into(),
        source: std::io::Error::other("injected"),
    }
}
impl Volume for Broken {
    fn size(&self) -> u64 {
        4096
    }
    fn read_at(&self, _: u64, _: &mut [u8]) -> Result<(), VolumeError> {
        *self.0.lock().unwrap() += 1;
        Err(injected())
    }
    fn write_at(&self, _: u64, _: &[u8]) -> Result<(), VolumeError> {
        Err(injected())
    }
    fn flush(&self) -> Result<(), VolumeError> {
        Err(injected())
    }
    fn discard(&self, _: u64, _: u64) -> Result<(), VolumeError> {
        Err(injected())
    }
}

#[test]
fn backend_errors_become_ioerr_and_read_only_refuses_writes() {
    let m = mem();
    let calls = Arc::new(Mutex::new(0));
    let mut b = Block::new(Arc::new(Broken(calls.clone())), true, "ro");
    assert_ne!(b.avail_features() & feature(VIRTIO_BLK_F_RO), 0);
    header(&m, VIRTIO_BLK_T_IN, 0);
    run(
        &mut b,
        &m,
        &[
            desc(HDR, 16, 0),
            desc(DATA, 512, F_WRITE),
            desc(STATUS, 1, F_WRITE),
        ],
    );
    assert_eq!(
        (status(&m), *calls.lock().unwrap()),
        (VIRTIO_BLK_S_IOERR as u8, 1)
    );
    header(&m, VIRTIO_BLK_T_OUT, 0);
    run(
        &mut b,
        &m,
        &[
            desc(HDR, 16, 0),
            desc(DATA, 512, 0),
            desc(STATUS, 1, F_WRITE),
        ],
    );
    assert_eq!(status(&m), VIRTIO_BLK_S_IOERR as u8);
    header(&m, VIRTIO_BLK_T_FLUSH, 0);
    run(&mut b, &m, &[desc(HDR, 16, 0), desc(STATUS, 1, F_WRITE)]);
    assert_eq!(status(&m), VIRTIO_BLK_S_IOERR as u8);
}

#[test]
fn config_space_reports_capacity() {
    let (_d, _p, b) = file_disk(16);
    let mut c = [0u8; 8];
    b.read_config(0, &mut c);
    assert_eq!(u64::from_le_bytes(c), 16);
    let mut tail = [0xffu8; 4];
    b.read_config(100, &mut tail);
    assert_eq!(tail, [0; 4]);
}
