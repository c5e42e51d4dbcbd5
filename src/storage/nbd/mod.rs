//! NBD (Network Block Device): a server that exports [`Volume`](super::Volume)s and a
//! blocking client, [`NbdVolume`], that is itself a `Volume`.
//!
//! Supported, following the protocol of the NetworkBlockDevice project (`doc/proto.md`):
//!
//! - "Fixed newstyle" negotiation with `NBD_FLAG_NO_ZEROES`; options `NBD_OPT_EXPORT_NAME`,
//!   `NBD_OPT_GO`, `NBD_OPT_INFO` (answering `NBD_INFO_EXPORT` and `NBD_INFO_BLOCK_SIZE`:
//!   minimum 512, preferred 4096, maximum payload 32 MiB), `NBD_OPT_LIST` and
//!   `NBD_OPT_ABORT`. Every other option, `NBD_OPT_STRUCTURED_REPLY` included, is answered
//!   with `NBD_REP_ERR_UNSUP`.
//! - Simple replies only. Commands `READ`, `WRITE` (with `FUA`: flushed before the reply),
//!   `DISC`, `FLUSH`, `TRIM` (the volume's discard) and `WRITE_ZEROES` (a discard, or
//!   written zeroes with `NBD_CMD_FLAG_NO_HOLE`). Transmission flags: `HAS_FLAGS`,
//!   `SEND_FLUSH`, `SEND_FUA`, `SEND_TRIM`, `SEND_WRITE_ZEROES`, `CAN_MULTI_CONN`, and
//!   `READ_ONLY` for read-only volumes.
//! - The server ([`serve_connection`], [`serve_unix`], [`serve_tcp`]) runs on tokio, runs
//!   pipelined requests concurrently on the blocking pool and answers each with its cookie.
//!   Refused requests (unaligned, out of range, too long, unknown command or flag, write to
//!   a read-only export) get an error reply (`NBD_EINVAL`, `NBD_ENOSPC` for writes past the
//!   end, `NBD_EPERM`) and the connection goes on; volume errors map through
//!   `VolumeError::errno`. A malformed message (bad magic, a truncated message, a write
//!   payload over 32 MiB, an unknown export asked for with `NBD_OPT_EXPORT_NAME`) ends that
//!   connection only, with a `tracing` warning naming the cause.
//! - The client negotiates with `NBD_OPT_GO` (falling back to `NBD_OPT_EXPORT_NAME` when
//!   the server lacks it), honours the server's block sizes, sends one request at a time,
//!   and implements discard with `WRITE_ZEROES` (so discarded ranges read as zeros, which
//!   `TRIM` does not promise).
//!
//! - Who may use what: a Unix-socket client's user comes from the kernel
//!   (`SO_PEERCRED`, [`Peer`]). Root sees every export; any other user (the process of a
//!   VM) sees only the exports [`Exports::set_access`] gives it, in lists too. A node
//!   serves two sockets: its path socket, root's only (mode 0600 in the 0700 data
//!   directory), and an abstract socket ([`bind_abstract`], named by
//!   `compute::nbd_abstract_name`) that the VMs' unprivileged
//!   processes reach, where that rule is the only gate.
//!
//! Not supported: oldstyle and non-fixed newstyle negotiation, TLS (`NBD_OPT_STARTTLS` is
//! answered with `NBD_REP_ERR_UNSUP`), structured and extended replies, block status and
//! metadata contexts, `NBD_CMD_CACHE`, fast zeroes, resize, reconnection, and timeouts (a
//! silent server blocks the client; a silent client keeps its server connection).

mod client;
pub mod proto;
mod server;
#[cfg(test)]
mod tests;

pub use client::NbdVolume;
pub use server::{
    serve_connection, serve_connection_as, serve_tcp, serve_unix, Access, Exports, Peer,
};

/// Binds an abstract Unix socket (Linux only), for [`serve_unix`].
pub fn bind_abstract(name: &str) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let l = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    l.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(l)
}

/// Errors of the NBD protocol: connection setup, negotiation and malformed messages.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("connecting to the NBD server at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("NBD connection I/O failed while {during}: {source}")]
    Io {
        during: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the NBD peer closed the connection in the middle of {during}")]
    Truncated { during: &'static str },
    #[error("bad NBD magic in {what}: expected {expected:#x}, got {got:#x}")]
    BadMagic {
        what: &'static str,
        expected: u64,
        got: u64,
    },
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("unknown NBD export {name:?}: {detail}")]
    UnknownExport { name: String, detail: String },
    #[error("the NBD server refused {option} with {reply}: {message}")]
    Refused {
        option: &'static str,
        reply: &'static str,
        message: String,
    },
    #[error("invalid NBD export name {name:?}: {reason}")]
    BadExportName { name: String, reason: &'static str },
    #[error("NBD export {0:?} already exists")]
    ExportExists(String),
    #[error("NBD protocol violation: {0}")]
    Protocol(String),
}

impl NbdError {
    /// An I/O error while doing `during`; end of file becomes [`NbdError::Truncated`].
    fn io(during: &'static str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            NbdError::Truncated { during }
        } else {
            NbdError::Io { during, source }
        }
    }
}
