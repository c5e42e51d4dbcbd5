//! Server and client together over real sockets, raw protocol bytes for what a well-behaved
//! client never sends, and (in `qemu`) the QEMU tools as independent judges.

mod client;
mod qemu;
mod raw;
mod requests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use raw::Raw;

use super::proto::*;
use super::{serve_connection, serve_tcp, serve_unix, Exports, NbdError, NbdVolume};
use crate::storage::conformance::{self, pattern};
use crate::storage::file::FileVolume;
use crate::storage::mem::MemVolume;
use crate::storage::Volume;

/// A server on a Unix socket in a temporary directory, on its own tokio runtime.
struct Server {
    rt: tokio::runtime::Runtime,
    exports: Arc<Exports>,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nbd.sock");
        let exports = Arc::new(Exports::new());
        let listener = {
            let _guard = rt.enter();
            tokio::net::UnixListener::bind(&socket).unwrap()
        };
        rt.spawn(serve_unix(listener, exports.clone()));
        Server {
            rt,
            exports,
            socket,
            dir,
        }
    }

    fn export(&self, name: &str, volume: Arc<dyn Volume>) {
        self.exports.add(name, volume).unwrap();
    }

    /// A new in-memory export.
    fn mem(&self, name: &str, size: u64) -> Arc<MemVolume> {
        let v = Arc::new(MemVolume::new(size).unwrap());
        self.export(name, v.clone());
        v
    }

    fn connect(&self, name: &str) -> NbdVolume {
        NbdVolume::connect_unix(&self.socket, name)
            .unwrap_or_else(|e| panic!("connect to {name}: {e}"))
    }

    fn url(&self, name: &str) -> String {
        format!("nbd+unix:///{name}?socket={}", self.socket.display())
    }

    fn raw(&self) -> Raw {
        Raw::connect(&self.socket)
    }

    /// `serve_connection` on one end of a socket pair, raw bytes on the other, so the
    /// outcome of that one connection can be checked.
    fn pair(&self) -> (Raw, tokio::task::JoinHandle<Result<(), NbdError>>) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let exports = self.exports.clone();
        let task = self.rt.spawn(async move {
            let stream = tokio::net::UnixStream::from_std(theirs).unwrap();
            serve_connection(stream, exports).await
        });
        (Raw::new(ours), task)
    }

    /// The result of a connection made by [`Server::pair`]; a panic fails the test.
    fn outcome(&self, task: tokio::task::JoinHandle<Result<(), NbdError>>) -> Result<(), NbdError> {
        let joined = self.rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(20), task).await
        });
        joined
            .expect("the connection did not end")
            .expect("the connection task panicked")
    }
}

#[test]
fn conformance_over_a_unix_socket_with_a_mem_volume() {
    let server = Server::start();
    let n = AtomicU32::new(0);
    conformance::run(&|size| {
        let name = format!("mem{}", n.fetch_add(1, Ordering::Relaxed));
        server.mem(&name, size);
        Box::new(server.connect(&name)) as Box<dyn Volume>
    });
    assert_eq!(
        n.load(Ordering::Relaxed),
        8,
        "every check ran on its own export"
    );
}

#[test]
fn conformance_over_a_unix_socket_with_a_file_volume() {
    let server = Server::start();
    let n = AtomicU32::new(0);
    conformance::run(&|size| {
        let name = format!("file{}", n.fetch_add(1, Ordering::Relaxed));
        let path = server.dir.path().join(&name);
        server.export(&name, Arc::new(FileVolume::create(&path, size).unwrap()));
        Box::new(server.connect(&name)) as Box<dyn Volume>
    });
    assert_eq!(n.load(Ordering::Relaxed), 8);
}

#[test]
fn tcp_on_loopback_serves_the_client() {
    let server = Server::start();
    let volume = server.mem("disk", 1 << 20);
    let listener = server
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    server.rt.spawn(serve_tcp(listener, server.exports.clone()));
    let client = NbdVolume::connect_tcp(addr, "disk").unwrap();
    assert_eq!(client.size(), 1 << 20);
    let flags = client.transmission_flags();
    let expected = FLAG_HAS_FLAGS
        | FLAG_SEND_FLUSH
        | FLAG_SEND_FUA
        | FLAG_SEND_TRIM
        | FLAG_SEND_WRITE_ZEROES
        | FLAG_CAN_MULTI_CONN;
    assert_eq!(flags, expected, "{flags:#x}");
    let p = pattern(8192, 8192, 1);
    client.write_at(8192, &p).unwrap();
    client.flush().unwrap();
    let mut direct = vec![0u8; 8192];
    volume.read_at(8192, &mut direct).unwrap();
    assert_eq!(direct, p, "the write reached the exported volume");
    let e = NbdVolume::connect_tcp(addr, "missing").err().unwrap();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn option_haggling_lists_informs_and_refuses_what_is_unsupported() {
    let server = Server::start();
    server.mem("b", 1 << 20);
    server.mem("a", 2 << 20);
    let (mut raw, task) = server.pair();
    assert_eq!(raw.greet(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES), 3);

    let replies = raw.option(OPT_LIST, &[]);
    let names: Vec<_> = replies[..2]
        .iter()
        .map(|(rep, data)| {
            assert_eq!(*rep, REP_SERVER);
            String::from_utf8(data[4..].to_vec()).unwrap()
        })
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(replies[2].0, REP_ACK);
    assert_eq!(raw.option(OPT_LIST, b"x")[0].0, REP_ERR_INVALID);

    let info = raw.option(
        OPT_INFO,
        &encode_info_request("a", &[INFO_BLOCK_SIZE, INFO_NAME]),
    );
    let items: Vec<_> = info.iter().filter(|(r, _)| *r == REP_INFO).collect();
    assert_eq!(info.last().unwrap().0, REP_ACK, "{info:?}");
    let decoded: Vec<_> = items.iter().map(|(_, d)| decode_info(d).unwrap()).collect();
    assert!(decoded.contains(&Info::Export {
        size: 2 << 20,
        flags: FLAG_HAS_FLAGS
            | FLAG_SEND_FLUSH
            | FLAG_SEND_FUA
            | FLAG_SEND_TRIM
            | FLAG_SEND_WRITE_ZEROES
            | FLAG_CAN_MULTI_CONN
    }));
    assert!(decoded.contains(&Info::BlockSize {
        min: 512,
        preferred: 4096,
        max: 32 << 20
    }));
    assert!(decoded.contains(&Info::Other(INFO_NAME)), "{decoded:?}");

    let unknown = raw.option(OPT_INFO, &encode_info_request("nope", &[]));
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].0, REP_ERR_UNKNOWN);
    let message = String::from_utf8_lossy(&unknown[0].1).into_owned();
    assert!(message.contains("\"nope\""), "{message}");

    assert_eq!(
        raw.option(OPT_GO, &[0, 0, 0, 9, b'a'])[0].0,
        REP_ERR_INVALID
    );
    let structured = raw.option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(structured[0].0, REP_ERR_UNSUP);
    assert!(String::from_utf8_lossy(&structured[0].1).contains("simple replies"));
    assert_eq!(raw.option(OPT_STARTTLS, &[])[0].0, REP_ERR_UNSUP);
    assert_eq!(raw.option(0xdead, &[1, 2, 3])[0].0, REP_ERR_UNSUP);
    assert_eq!(raw.option(OPT_ABORT, &[]), vec![(REP_ACK, vec![])]);
    assert!(raw.closed(), "the server closes after NBD_OPT_ABORT");
    server.outcome(task).unwrap();
}

#[test]
fn export_name_enters_transmission_with_and_without_zeroes() {
    let server = Server::start();
    let volume = server.mem("a", 1 << 20);
    volume.write_at(0, &[7u8; 512]).unwrap();
    for client_flags in [
        FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES,
        FLAG_C_FIXED_NEWSTYLE,
    ] {
        let mut raw = server.raw();
        raw.greet(client_flags);
        raw.send(&encode_option_header(OPT_EXPORT_NAME, 1));
        raw.send(b"a");
        let info = raw.read_bytes(10);
        assert_eq!(u64::from_be_bytes(info[..8].try_into().unwrap()), 1 << 20);
        assert_eq!(info[9] & FLAG_HAS_FLAGS as u8, 1);
        if client_flags & FLAG_C_NO_ZEROES == 0 {
            assert_eq!(
                raw.read_bytes(EXPORT_NAME_ZEROES),
                vec![0u8; EXPORT_NAME_ZEROES]
            );
        }
        // The next bytes are the reply: no stray zeroes in between.
        raw.request(CMD_READ, 0, 5, 0, 512, &[]);
        assert_eq!(raw.reply(), (0, 5));
        assert_eq!(raw.read_bytes(512), vec![7u8; 512]);
    }
}

#[test]
fn unknown_exports_are_refused_with_their_name() {
    let server = Server::start();
    server.mem("a", 1 << 20);
    let e = NbdVolume::connect_unix(&server.socket, "nope")
        .err()
        .unwrap();
    assert!(matches!(e, NbdError::UnknownExport { .. }), "{e}");
    assert!(e.to_string().contains("\"nope\""), "{e}");
    // NBD_OPT_EXPORT_NAME cannot carry an error: the connection is closed.
    let (mut raw, task) = server.pair();
    raw.greet(FLAG_C_FIXED_NEWSTYLE);
    raw.send(&encode_option_header(OPT_EXPORT_NAME, 4));
    raw.send(b"nope");
    assert!(raw.closed());
    let e = server.outcome(task).unwrap_err();
    assert!(
        matches!(e, NbdError::UnknownExport { ref name, .. } if name == "nope"),
        "{e}"
    );
    // The server goes on serving others.
    let mut b = [1u8; 512];
    server.connect("a").read_at(0, &mut b).unwrap();
    assert_eq!(b, [0u8; 512]);
}

#[test]
fn exports_can_be_added_and_removed() {
    let server = Server::start();
    server.mem("a", 1 << 20);
    let e = server
        .exports
        .add("a", Arc::new(MemVolume::new(512).unwrap()))
        .unwrap_err();
    assert!(matches!(e, NbdError::ExportExists(_)), "{e}");
    let long = "x".repeat(MAX_STRING + 1);
    assert!(server
        .exports
        .add(long, Arc::new(MemVolume::new(512).unwrap()))
        .is_err());
    assert!(server
        .exports
        .add("a\0b", Arc::new(MemVolume::new(512).unwrap()))
        .is_err());
    let client = server.connect("a");
    assert!(server.exports.remove("a").is_some());
    assert_eq!(server.exports.names(), Vec::<String>::new());
    let e = NbdVolume::connect_unix(&server.socket, "a").err().unwrap();
    assert!(matches!(e, NbdError::UnknownExport { .. }), "{e}");
    // A connection made before the removal keeps its volume.
    client.write_at(0, &[1u8; 512]).unwrap();
    let e = NbdVolume::connect_unix(server.dir.path().join("none.sock"), "a")
        .err()
        .unwrap();
    assert!(e.to_string().contains("none.sock"), "{e}");
}
