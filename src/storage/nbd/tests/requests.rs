//! Transmission over raw protocol bytes: refused and malformed requests, pipelining,
//! FUA, trim and write-zeroes, volume errors, read-only exports.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::raw::Raw;
use super::Server;
use crate::storage::conformance::pattern;
use crate::storage::file::FileVolume;
use crate::storage::mem::MemVolume;
use crate::storage::nbd::proto::*;
use crate::storage::nbd::NbdError;
use crate::storage::{Volume, VolumeError};

#[test]
fn refused_requests_get_an_error_and_the_connection_goes_on() {
    let server = Server::start();
    let volume = server.mem("a", 1 << 20);
    let mut raw = server.raw();
    raw.go("a");
    let size = 1u64 << 20;
    let cases: [(u16, u16, u64, u32, usize, u32); 10] = [
        (CMD_READ, 0, size, 512, 0, NBD_EINVAL),
        (CMD_READ, 0, size - 512, 1024, 0, NBD_EINVAL),
        (CMD_READ, 0, u64::MAX - 511, 512, 0, NBD_EINVAL),
        (CMD_READ, 0, 100, 512, 0, NBD_EINVAL),
        (CMD_READ, 0, 0, (32 << 20) + 512, 0, NBD_EINVAL),
        (CMD_WRITE, 0, size, 512, 512, NBD_ENOSPC),
        (CMD_WRITE, 0, 0, 100, 100, NBD_EINVAL),
        (CMD_READ, CMD_FLAG_NO_HOLE, 0, 512, 0, NBD_EINVAL),
        (CMD_WRITE_ZEROES, 1 << 4, 0, 512, 0, NBD_EINVAL),
        (42, 0, 0, 0, 0, NBD_EINVAL),
    ];
    for (i, (command, flags, offset, length, payload, error)) in cases.into_iter().enumerate() {
        let cookie = 1000 + i as u64;
        raw.request(command, flags, cookie, offset, length, &vec![9u8; payload]);
        assert_eq!(raw.reply(), (error, cookie), "case {i}");
    }
    assert_eq!(raw.request_reply(CMD_CACHE, 0, 0, 512, &[]), NBD_EINVAL);
    // Nothing was written by the refused writes, and the connection still works.
    assert_eq!(volume.allocated(), Some(0));
    raw.request(CMD_READ, 0, 7, 0, 0, &[]);
    assert_eq!(raw.reply(), (0, 7), "an empty read succeeds with no data");
    assert_eq!(raw.request_reply(CMD_WRITE, 0, 4096, 512, &[3u8; 512]), 0);
    raw.request(CMD_READ, 0, 8, 4096, 512, &[]);
    assert_eq!(raw.reply(), (0, 8));
    assert_eq!(raw.read_bytes(512), vec![3u8; 512]);
    raw.disconnect();
}

#[test]
fn malformed_messages_end_only_their_connection() {
    let server = Server::start();
    server.mem("a", 1 << 20);
    let mut last = server.connect("a");
    last.write_at(0, &[5u8; 512]).unwrap();
    type Case = (&'static str, fn(&mut Raw), fn(&NbdError) -> bool);
    let cases: [Case; 7] = [
        (
            "garbage instead of an option",
            |r| {
                r.greet(FLAG_C_FIXED_NEWSTYLE);
                r.send(&[0x5a; 64]);
            },
            |e| {
                matches!(
                    e,
                    NbdError::BadMagic {
                        what: "option header",
                        ..
                    }
                )
            },
        ),
        (
            "unknown client flags",
            |r| {
                r.greet(FLAG_C_FIXED_NEWSTYLE | 1 << 7);
            },
            |e| matches!(e, NbdError::Protocol(m) if m.contains("client flags")),
        ),
        (
            "oversized option",
            |r| {
                r.greet(FLAG_C_FIXED_NEWSTYLE);
                r.send(&encode_option_header(OPT_GO, 1 << 30));
            },
            |e| {
                matches!(
                    e,
                    NbdError::TooLarge {
                        what: "option data",
                        ..
                    }
                )
            },
        ),
        (
            "truncated option",
            |r| {
                r.greet(FLAG_C_FIXED_NEWSTYLE);
                r.send(&encode_option_header(OPT_GO, 100));
                r.send(&[0u8; 10]);
                r.shutdown_write();
            },
            |e| {
                matches!(
                    e,
                    NbdError::Truncated {
                        during: "option data"
                    }
                )
            },
        ),
        (
            "garbage after the handshake",
            |r| {
                r.go("a");
                r.send(&[0xff; 100]);
            },
            |e| {
                matches!(
                    e,
                    NbdError::BadMagic {
                        what: "request",
                        ..
                    }
                )
            },
        ),
        (
            "truncated request",
            |r| {
                r.go("a");
                r.send(&Request::encode(&read_request(1, 0, 512))[..10]);
                r.shutdown_write();
            },
            |e| {
                matches!(
                    e,
                    NbdError::Truncated {
                        during: "a request header"
                    }
                )
            },
        ),
        (
            "write payload over 32 MiB",
            |r| {
                r.go("a");
                r.request(CMD_WRITE, 0, 9, 0, (32 << 20) + 512, &[0u8; 4096]);
                assert_eq!(r.reply(), (NBD_EINVAL, 9), "the write is refused first");
            },
            |e| matches!(e, NbdError::TooLarge { len, .. } if *len == (32 << 20) + 512),
        ),
    ];
    for (what, act, expected) in cases {
        let (mut raw, task) = server.pair();
        act(&mut raw);
        assert!(raw.closed(), "{what}: the connection was not closed");
        let e = server.outcome(task).expect_err(what);
        assert!(expected(&e), "{what}: {e:?}");
        // Another connection works throughout.
        let mut b = [0u8; 512];
        last.read_at(0, &mut b).unwrap();
        assert_eq!(b, [5u8; 512], "{what}");
        last = server.connect("a");
    }
    // The same through the listener: garbage right after the greeting.
    let mut raw = server.raw();
    raw.greet(FLAG_C_FIXED_NEWSTYLE);
    raw.send(b"this is not NBD at all, not even close......");
    assert!(raw.closed());
    let mut b = [0u8; 512];
    server.connect("a").read_at(0, &mut b).unwrap();
    assert_eq!(b, [5u8; 512]);
}

fn read_request(cookie: u64, offset: u64, length: u32) -> Request {
    Request {
        flags: 0,
        command: CMD_READ,
        cookie,
        offset,
        length,
    }
}

#[test]
fn pipelined_requests_are_answered_by_cookie() {
    let server = Server::start();
    let volume = server.mem("a", 1 << 20);
    let mut raw = server.raw();
    raw.go("a");
    // 32 writes sent at once, then every reply.
    let mut batch = Vec::new();
    for i in 0..32u64 {
        let r = Request {
            flags: 0,
            command: CMD_WRITE,
            cookie: 100 + i,
            offset: i * 8192,
            length: 8192,
        };
        batch.extend_from_slice(&r.encode());
        batch.extend_from_slice(&pattern(i * 8192, 8192, 2));
    }
    raw.send(&batch);
    let mut cookies: Vec<u64> = (0..32)
        .map(|_| raw.reply())
        .map(|(e, c)| {
            assert_eq!(e, 0);
            c
        })
        .collect();
    cookies.sort();
    assert_eq!(cookies, (100..132).collect::<Vec<_>>());
    // Reads of different lengths and a flush, at once; each data follows its own reply.
    let mut batch = Vec::new();
    for i in 0..32u64 {
        batch.extend_from_slice(
            &read_request(200 + i, i * 8192, 512 * (1 + i as u32 % 16)).encode(),
        );
    }
    batch.extend_from_slice(
        &Request {
            flags: 0,
            command: CMD_FLUSH,
            cookie: 300,
            offset: 0,
            length: 0,
        }
        .encode(),
    );
    raw.send(&batch);
    let mut seen = Vec::new();
    for _ in 0..33 {
        let (error, cookie) = raw.reply();
        assert_eq!(error, 0, "cookie {cookie}");
        if cookie != 300 {
            let i = cookie - 200;
            let len = 512 * (1 + i as usize % 16);
            assert_eq!(
                raw.read_bytes(len),
                pattern(i * 8192, 8192, 2)[..len],
                "cookie {cookie}"
            );
        }
        seen.push(cookie);
    }
    seen.sort();
    assert_eq!(seen, (200..232).chain([300]).collect::<Vec<_>>());
    let mut all = vec![0u8; 32 * 8192];
    volume.read_at(0, &mut all).unwrap();
    assert_eq!(&all[31 * 8192..], &pattern(31 * 8192, 8192, 2)[..]);
    raw.disconnect();
}

/// A volume that counts flushes and discards and can be told to fail.
struct Probe {
    inner: MemVolume,
    flushes: AtomicU64,
    discards: AtomicU64,
    fail: AtomicU32,
}

impl Volume for Probe {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        if self.fail.load(Ordering::SeqCst) == 1 {
            let source = std::io::Error::from_raw_os_error(libc::EIO);
            return Err(VolumeError::io("read", "/dev/probe", source));
        }
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), VolumeError> {
        if self.fail.load(Ordering::SeqCst) == 1 {
            return Err(VolumeError::NoSpace {
                what: "probe".into(),
                detail: "full".into(),
            });
        }
        self.inner.write_at(offset, data)
    }
    fn flush(&self) -> Result<(), VolumeError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        self.discards.fetch_add(1, Ordering::SeqCst);
        self.inner.discard(offset, len)
    }
}

fn probe(server: &Server, name: &str) -> Arc<Probe> {
    let p = Arc::new(Probe {
        inner: MemVolume::new(1 << 20).unwrap(),
        flushes: AtomicU64::new(0),
        discards: AtomicU64::new(0),
        fail: AtomicU32::new(0),
    });
    server.export(name, p.clone());
    p
}

#[test]
fn fua_trim_and_write_zeroes_do_what_they_say() {
    let server = Server::start();
    let p = probe(&server, "p");
    let mut raw = server.raw();
    raw.go("p");
    assert_eq!(raw.request_reply(CMD_WRITE, 0, 0, 65536, &[0xab; 65536]), 0);
    assert_eq!(p.flushes.load(Ordering::SeqCst), 0);
    assert_eq!(
        raw.request_reply(CMD_WRITE, CMD_FLAG_FUA, 65536, 512, &[1; 512]),
        0
    );
    assert_eq!(
        p.flushes.load(Ordering::SeqCst),
        1,
        "FUA flushes before the reply"
    );
    assert_eq!(raw.request_reply(CMD_FLUSH, 0, 0, 0, &[]), 0);
    assert_eq!(p.flushes.load(Ordering::SeqCst), 2);
    // WRITE_ZEROES with NO_HOLE writes zeroes; without it, and TRIM, discard.
    assert_eq!(
        raw.request_reply(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 0, 16384, &[]),
        0
    );
    assert_eq!(p.discards.load(Ordering::SeqCst), 0);
    assert!(
        p.inner.allocated().unwrap() >= 65536,
        "NO_HOLE keeps the range allocated"
    );
    assert_eq!(
        raw.request_reply(CMD_WRITE_ZEROES, CMD_FLAG_FUA, 16384, 16384, &[]),
        0
    );
    assert_eq!(raw.request_reply(CMD_TRIM, 0, 32768, 16384, &[]), 0);
    assert_eq!(p.discards.load(Ordering::SeqCst), 2);
    assert_eq!(p.flushes.load(Ordering::SeqCst), 3);
    let mut got = vec![0xffu8; 65536];
    p.inner.read_at(0, &mut got).unwrap();
    assert!(got[..49152].iter().all(|b| *b == 0));
    assert!(got[49152..].iter().all(|b| *b == 0xab));
    raw.disconnect();
}

#[test]
fn volume_errors_reach_the_client_with_their_errno() {
    let server = Server::start();
    let p = probe(&server, "p");
    let client = server.connect("p");
    p.fail.store(1, Ordering::SeqCst);
    let e = client.write_at(0, &[1u8; 4096]).unwrap_err();
    assert_eq!(e.errno(), libc::ENOSPC, "{e}");
    assert!(
        e.to_string().contains("NBD_ENOSPC") && e.to_string().contains("/p?socket="),
        "{e}"
    );
    let e = client.read_at(0, &mut [0u8; 512]).unwrap_err();
    assert!(
        matches!(
            e,
            VolumeError::Remote {
                op: "read",
                errno: libc::EIO,
                ..
            }
        ),
        "{e}"
    );
    p.fail.store(0, Ordering::SeqCst);
    client.write_at(0, &[1u8; 4096]).unwrap();
    client.flush().unwrap();
    // A server that goes away: a clear error, then the same without waiting.
    drop(server);
    let e = client.read_at(0, &mut [0u8; 512]).unwrap_err();
    assert_eq!(e.errno(), libc::EIO, "{e}");
    let e = client.read_at(0, &mut [0u8; 512]).unwrap_err();
    assert!(e.to_string().contains("unusable"), "{e}");
}

#[test]
fn read_only_exports_refuse_writes() {
    let server = Server::start();
    let path = server.dir.path().join("ro.raw");
    std::fs::write(&path, vec![4u8; 1 << 20]).unwrap();
    server.export("ro", Arc::new(FileVolume::open(&path, true).unwrap()));
    let mut raw = server.raw();
    let (size, flags) = raw.go("ro");
    assert_eq!(size, 1 << 20);
    assert_ne!(flags & FLAG_READ_ONLY, 0);
    assert_eq!(
        raw.request_reply(CMD_WRITE, 0, 0, 512, &[1u8; 512]),
        NBD_EPERM
    );
    assert_eq!(raw.request_reply(CMD_TRIM, 0, 0, 512, &[]), NBD_EPERM);
    assert_eq!(
        raw.request_reply(CMD_WRITE_ZEROES, 0, 0, 512, &[]),
        NBD_EPERM
    );
    raw.disconnect();
    let client = server.connect("ro");
    assert!(client.read_only());
    assert!(matches!(
        client.write_at(0, &[1u8; 512]),
        Err(VolumeError::ReadOnly)
    ));
    assert!(matches!(client.discard(0, 512), Err(VolumeError::ReadOnly)));
    let mut b = [0u8; 512];
    client.read_at(512, &mut b).unwrap();
    assert_eq!(b, [4u8; 512]);
    client.flush().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), vec![4u8; 1 << 20]);
}
