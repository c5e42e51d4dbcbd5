//! The client against scripted servers: the NBD_OPT_EXPORT_NAME fallback, servers
//! without WRITE_ZEROES, and block sizes other than this server's.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use crate::storage::nbd::proto::*;
use crate::storage::nbd::{NbdError, NbdVolume};
use crate::storage::{Volume, VolumeError};

/// The server end of a socket pair, driven by a script on its own thread.
struct Script {
    s: UnixStream,
}

impl Script {
    fn read(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).unwrap();
        b
    }

    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// An option from the client: (option, data).
    fn option(&mut self) -> (u32, Vec<u8>) {
        let h: [u8; OPTION_HEADER_LEN] = self.read(OPTION_HEADER_LEN).try_into().unwrap();
        let (option, len) = decode_option_header(&h).unwrap();
        (option, self.read(len as usize))
    }

    fn request(&mut self) -> Request {
        Request::decode(&self.read(REQUEST_LEN).try_into().unwrap()).unwrap()
    }
}

/// Runs `script` as the server of a new client connection to `export`.
fn scripted<T: Send + 'static>(
    export: &str,
    script: impl FnOnce(&mut Script) -> T + Send + 'static,
) -> (Result<NbdVolume, NbdError>, JoinHandle<T>) {
    let (client, server) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || script(&mut Script { s: server }));
    let volume = NbdVolume::open(Box::new(client), export, format!("scripted/{export}"));
    (volume, server)
}

#[test]
fn falls_back_to_export_name_and_zeroes_by_writing_without_write_zeroes() {
    let (volume, server) = scripted("legacy", |s| {
        // No NBD_FLAG_NO_ZEROES: the client must read the 124 zeroes.
        s.send(&encode_greeting(FLAG_FIXED_NEWSTYLE));
        assert_eq!(s.read(4), FLAG_C_FIXED_NEWSTYLE.to_be_bytes());
        let (option, _) = s.option();
        assert_eq!(option, OPT_GO);
        s.send(&encode_option_reply(OPT_GO, REP_ERR_UNSUP, b"too old"));
        let (option, name) = s.option();
        assert_eq!((option, name.as_slice()), (OPT_EXPORT_NAME, &b"legacy"[..]));
        s.send(&(1u64 << 20).to_be_bytes());
        s.send(&(FLAG_HAS_FLAGS | FLAG_SEND_FLUSH).to_be_bytes());
        s.send(&[0u8; EXPORT_NAME_ZEROES]);
        let mut seen = Vec::new();
        loop {
            let r = s.request();
            seen.push((r.command, r.offset, r.length));
            match r.command {
                CMD_DISC => return seen,
                CMD_READ => {
                    s.send(&encode_simple_reply(0, r.cookie));
                    s.send(&vec![9u8; r.length as usize]);
                }
                CMD_WRITE => {
                    assert!(s.read(r.length as usize).iter().all(|b| *b == 0));
                    s.send(&encode_simple_reply(0, r.cookie));
                }
                CMD_FLUSH => s.send(&encode_simple_reply(0, r.cookie)),
                _ => s.send(&encode_simple_reply(NBD_EINVAL, r.cookie)),
            }
        }
    });
    let volume = volume.unwrap();
    assert_eq!(volume.size(), 1 << 20);
    assert!(!volume.read_only());
    let mut b = [0u8; 1024];
    volume.read_at(4096, &mut b).unwrap();
    assert_eq!(b, [9u8; 1024]);
    volume.discard(8192, 1024).unwrap();
    volume.flush().unwrap();
    drop(volume);
    let seen = server.join().unwrap();
    assert_eq!(
        seen,
        [
            (CMD_READ, 4096, 1024),
            (CMD_WRITE, 8192, 1024),
            (CMD_FLUSH, 0, 0),
            (CMD_DISC, 0, 0)
        ]
    );
}

#[test]
fn honours_the_servers_block_sizes() {
    let (volume, server) = scripted("big-blocks", |s| {
        s.send(&encode_greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
        s.read(4);
        let (option, data) = s.option();
        assert_eq!(option, OPT_GO);
        let request = parse_info_request(&data).unwrap();
        assert_eq!(request.name, "big-blocks");
        assert!(request.infos.contains(&INFO_BLOCK_SIZE));
        // An odd size: the unaligned tail cannot be used.
        let info = encode_info_export((1 << 20) + 512, FLAG_HAS_FLAGS | FLAG_READ_ONLY);
        s.send(&encode_option_reply(OPT_GO, REP_INFO, &info));
        let sizes = encode_info_block_size(4096, 4096, 8192);
        s.send(&encode_option_reply(OPT_GO, REP_INFO, &sizes));
        s.send(&encode_option_reply(OPT_GO, REP_INFO, &[0, 9, 1, 2]));
        s.send(&encode_option_reply(OPT_GO, REP_ACK, &[]));
        let mut lengths = Vec::new();
        loop {
            let r = s.request();
            if r.command == CMD_DISC {
                return lengths;
            }
            lengths.push(r.length);
            s.send(&encode_simple_reply(0, r.cookie));
            s.send(&vec![r.offset as u8 / 16 + 1; r.length as usize]);
        }
    });
    let volume = volume.unwrap();
    assert_eq!(volume.size(), 1 << 20);
    assert!(volume.read_only());
    let e = volume.read_at(512, &mut [0u8; 512]).unwrap_err();
    assert!(
        matches!(e, VolumeError::Unaligned { align: 4096, .. }),
        "{e}"
    );
    assert!(
        matches!(volume.flush(), Ok(())),
        "no SEND_FLUSH: nothing to flush"
    );
    let mut b = vec![0u8; 20480];
    volume.read_at(8192, &mut b).unwrap();
    assert!(b[..8192].iter().all(|x| *x == 1));
    assert!(b[16384..].iter().all(|x| *x == 1));
    drop(volume);
    assert_eq!(server.join().unwrap(), [8192, 8192, 4096]);
}

#[test]
fn refuses_servers_that_break_the_protocol() {
    /// What the server does, and what the client's error says.
    type Case = (&'static str, fn(&mut Script));
    let cases: [Case; 4] = [
        ("oldstyle", |s| {
            s.send(&NBDMAGIC.to_be_bytes());
            s.send(&CLISERV_MAGIC.to_be_bytes());
        }),
        ("fixed newstyle", |s| {
            s.send(&encode_greeting(0));
        }),
        ("structured reply", |s| {
            s.send(&encode_greeting(FLAG_FIXED_NEWSTYLE));
            s.read(4);
            s.option();
            let info = encode_info_export(1 << 20, FLAG_HAS_FLAGS);
            s.send(&encode_option_reply(OPT_GO, REP_INFO, &info));
            s.send(&encode_option_reply(OPT_GO, REP_ACK, &[]));
            s.request();
            s.send(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
            s.send(&[0u8; 12]);
        }),
        ("exceeds the limit", |s| {
            s.send(&encode_greeting(FLAG_FIXED_NEWSTYLE));
            s.read(4);
            s.option();
            let mut h = encode_option_reply(OPT_GO, REP_INFO, &[]);
            h[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
            s.send(&h);
        }),
    ];
    for (what, script) in cases {
        let (volume, server) = scripted("x", script);
        let message = match volume {
            Err(e) => e.to_string(),
            // The structured reply only shows at the first request.
            Ok(v) => v.read_at(0, &mut [0u8; 512]).unwrap_err().to_string(),
        };
        server.join().unwrap();
        assert!(message.contains(what), "{what}: {message}");
    }
}
