//! A blocking NBD client that is a [`Volume`]: one request at a time under a mutex.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;

use super::proto::*;
use super::NbdError;
use crate::storage::{check_range, Volume, VolumeError, SECTOR};

/// A byte stream to the server.
pub(super) trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A volume on an NBD server. Size, read-only flag and block sizes come from the
/// negotiation; a failed connection makes every later call fail (no reconnection).
pub struct NbdVolume {
    /// Names the server and export in messages.
    target: String,
    size: u64,
    flags: u16,
    /// Alignment of offsets and lengths: 512, or the server's larger minimum block.
    align: u64,
    /// Largest read or write sent in one request.
    max_request: u64,
    conn: Mutex<Conn>,
}

struct Conn {
    stream: Box<dyn Stream>,
    next_cookie: u64,
    /// Why the connection cannot be used any more.
    broken: Option<String>,
}

/// What the negotiation learnt.
struct Negotiated {
    size: u64,
    flags: u16,
    min_block: u32,
    max_payload: u32,
}

impl NbdVolume {
    /// Connects over a Unix socket and opens `export`.
    pub fn connect_unix(path: impl AsRef<Path>, export: &str) -> Result<Self, NbdError> {
        let path = path.as_ref();
        let target = format!("nbd+unix:///{export}?socket={}", path.display());
        let stream = UnixStream::connect(path).map_err(|source| NbdError::Connect {
            target: target.clone(),
            source,
        })?;
        Self::open(Box::new(stream), export, target)
    }

    /// Connects over TCP (with `TCP_NODELAY`) and opens `export`.
    pub fn connect_tcp(addr: impl ToSocketAddrs, export: &str) -> Result<Self, NbdError> {
        let connect = |target: String, source| NbdError::Connect { target, source };
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| connect(format!("nbd://?/{export}"), e))?
            .collect();
        let target = match addrs.first() {
            Some(a) => format!("nbd://{a}/{export}"),
            None => format!("nbd://?/{export}"),
        };
        let stream = TcpStream::connect(&addrs[..]).map_err(|e| connect(target.clone(), e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| connect(target.clone(), e))?;
        Self::open(Box::new(stream), export, target)
    }

    pub(super) fn open(
        mut stream: Box<dyn Stream>,
        export: &str,
        target: String,
    ) -> Result<Self, NbdError> {
        let n = negotiate(stream.as_mut(), export)?;
        let align = u64::from(n.min_block).max(SECTOR);
        let max_payload = u64::from(n.max_payload.min(MAX_PAYLOAD));
        let max_request = (max_payload - max_payload % align).max(align);
        Ok(NbdVolume {
            target,
            // An unaligned tail cannot be addressed.
            size: n.size - n.size % align,
            flags: n.flags,
            align,
            max_request,
            conn: Mutex::new(Conn {
                stream,
                next_cookie: 1,
                broken: None,
            }),
        })
    }

    /// The transmission flags the server sent.
    pub fn transmission_flags(&self) -> u16 {
        self.flags
    }

    fn check(&self, op: &'static str, offset: u64, len: u64) -> Result<(), VolumeError> {
        check_range(op, offset, len, self.size)?;
        if !offset.is_multiple_of(self.align) || !len.is_multiple_of(self.align) {
            return Err(VolumeError::Unaligned {
                op,
                offset,
                len,
                align: self.align,
            });
        }
        Ok(())
    }

    /// Sends one request (with `payload` for a write) and waits for its reply, reading the
    /// reply's data into `data` for a read.
    fn request(
        &self,
        op: &'static str,
        request: Request,
        payload: &[u8],
        data: &mut [u8],
    ) -> Result<(), VolumeError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = &conn.broken {
            return Err(self.remote(op, libc::EIO, format!("connection unusable: {why}")));
        }
        let request = Request {
            cookie: conn.next_cookie,
            ..request
        };
        conn.next_cookie = conn.next_cookie.wrapping_add(1);
        match exchange(conn.stream.as_mut(), &request, payload, data) {
            Ok(0) => Ok(()),
            Ok(error) => {
                let detail = format!(
                    "{} of {} bytes at offset {} answered with {} ({error})",
                    command_name(request.command),
                    request.length,
                    request.offset,
                    error_name(error)
                );
                Err(self.remote(op, errno_from_error(error), detail))
            }
            Err(e) => {
                let why = e.to_string();
                conn.broken = Some(why.clone());
                Err(self.remote(op, libc::EIO, why))
            }
        }
    }

    fn remote(&self, op: &'static str, errno: i32, detail: String) -> VolumeError {
        VolumeError::Remote {
            op,
            errno,
            detail: format!("{}: {detail}", self.target),
        }
    }

    /// Splits `[offset, offset + len)` into requests no longer than the server accepts.
    fn chunks(&self, offset: u64, len: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..len)
            .step_by(self.max_request as usize)
            .map(move |at| (offset + at, (len - at).min(self.max_request)))
    }
}

/// Sends a request and reads its reply; the NBD error value of the reply.
fn exchange(
    stream: &mut dyn Stream,
    request: &Request,
    payload: &[u8],
    data: &mut [u8],
) -> Result<u32, NbdError> {
    let during = "sending a request";
    stream
        .write_all(&request.encode())
        .map_err(|e| NbdError::io(during, e))?;
    if !payload.is_empty() {
        stream
            .write_all(payload)
            .map_err(|e| NbdError::io(during, e))?;
    }
    stream.flush().map_err(|e| NbdError::io(during, e))?;
    let mut header = [0u8; SIMPLE_REPLY_LEN];
    read_exact(stream, &mut header, "a reply")?;
    let (error, cookie) = decode_simple_reply(&header)?;
    if cookie != request.cookie {
        return Err(NbdError::Protocol(format!(
            "reply for cookie {cookie} while waiting for {}",
            request.cookie
        )));
    }
    if error == 0 && request.command == CMD_READ {
        read_exact(stream, data, "read data")?;
    }
    Ok(error)
}

fn read_exact(
    stream: &mut dyn Stream,
    buf: &mut [u8],
    during: &'static str,
) -> Result<(), NbdError> {
    stream.read_exact(buf).map_err(|e| NbdError::io(during, e))
}

fn write_all(stream: &mut dyn Stream, bytes: &[u8], during: &'static str) -> Result<(), NbdError> {
    stream
        .write_all(bytes)
        .and_then(|()| stream.flush())
        .map_err(|e| NbdError::io(during, e))
}

fn read_u64(stream: &mut dyn Stream, during: &'static str) -> Result<u64, NbdError> {
    let mut b = [0u8; 8];
    read_exact(stream, &mut b, during)?;
    Ok(u64::from_be_bytes(b))
}

/// Fixed newstyle negotiation ending with `NBD_OPT_GO` (or `NBD_OPT_EXPORT_NAME` when the
/// server does not know `NBD_OPT_GO`).
fn negotiate(stream: &mut dyn Stream, export: &str) -> Result<Negotiated, NbdError> {
    if export.len() > MAX_STRING {
        return Err(NbdError::BadExportName {
            name: export.into(),
            reason: "longer than 4096 bytes",
        });
    }
    let magic = read_u64(stream, "the greeting")?;
    if magic != NBDMAGIC {
        return Err(NbdError::BadMagic {
            what: "greeting",
            expected: NBDMAGIC,
            got: magic,
        });
    }
    let magic = read_u64(stream, "the greeting")?;
    if magic == CLISERV_MAGIC {
        return Err(NbdError::Protocol(
            "the server uses oldstyle negotiation, which is not supported".into(),
        ));
    }
    if magic != IHAVEOPT {
        return Err(NbdError::BadMagic {
            what: "greeting",
            expected: IHAVEOPT,
            got: magic,
        });
    }
    let mut flags = [0u8; 2];
    read_exact(stream, &mut flags, "the handshake flags")?;
    let flags = u16::from_be_bytes(flags);
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(NbdError::Protocol(
            "the server does not support fixed newstyle negotiation".into(),
        ));
    }
    let no_zeroes = flags & FLAG_NO_ZEROES != 0;
    let client_flags = FLAG_C_FIXED_NEWSTYLE | if no_zeroes { FLAG_C_NO_ZEROES } else { 0 };
    write_all(
        stream,
        &client_flags.to_be_bytes(),
        "sending the client flags",
    )?;

    let data = encode_info_request(export, &[INFO_BLOCK_SIZE]);
    let mut message = encode_option_header(OPT_GO, data.len() as u32).to_vec();
    message.extend_from_slice(&data);
    write_all(stream, &message, "sending NBD_OPT_GO")?;
    let mut export_info = None;
    let (mut min_block, mut max_payload) = (1, MAX_PAYLOAD);
    loop {
        let mut header = [0u8; OPTION_REPLY_HEADER_LEN];
        read_exact(stream, &mut header, "an option reply")?;
        let (option, reply, len) = decode_option_reply_header(&header)?;
        if option != OPT_GO {
            return Err(NbdError::Protocol(format!(
                "a reply to {} ({option}) while waiting for NBD_OPT_GO",
                option_name(option)
            )));
        }
        if len > MAX_OPTION_LEN {
            return Err(NbdError::TooLarge {
                what: "an option reply",
                len: len.into(),
                max: MAX_OPTION_LEN.into(),
            });
        }
        let mut data = vec![0u8; len as usize];
        read_exact(stream, &mut data, "an option reply")?;
        let message = || String::from_utf8_lossy(&data).into_owned();
        match reply {
            REP_INFO => match decode_info(&data)? {
                Info::Export { size, flags } => export_info = Some((size, flags)),
                Info::BlockSize { min, max, .. } => {
                    if !min.is_power_of_two() || min > 1 << 16 || max < min.max(MIN_BLOCK) {
                        return Err(NbdError::Protocol(format!(
                            "invalid block sizes: minimum {min}, maximum {max}"
                        )));
                    }
                    (min_block, max_payload) = (min, max);
                }
                Info::Other(_) => {}
            },
            REP_ACK => break,
            REP_ERR_UNSUP => return export_name(stream, export, no_zeroes),
            REP_ERR_UNKNOWN => {
                return Err(NbdError::UnknownExport {
                    name: export.into(),
                    detail: format!("the server answered: {}", message()),
                })
            }
            r if r & REP_FLAG_ERROR != 0 => {
                return Err(NbdError::Refused {
                    option: "NBD_OPT_GO",
                    reply: reply_name(r),
                    message: message(),
                })
            }
            r => {
                return Err(NbdError::Protocol(format!(
                    "unexpected {} ({r:#x}) to NBD_OPT_GO",
                    reply_name(r)
                )))
            }
        }
    }
    let Some((size, flags)) = export_info else {
        return Err(NbdError::Protocol(
            "NBD_OPT_GO succeeded without NBD_INFO_EXPORT".into(),
        ));
    };
    Ok(Negotiated {
        size,
        flags,
        min_block,
        max_payload,
    })
}

/// The fallback for servers without `NBD_OPT_GO`.
fn export_name(
    stream: &mut dyn Stream,
    export: &str,
    no_zeroes: bool,
) -> Result<Negotiated, NbdError> {
    let mut message = encode_option_header(OPT_EXPORT_NAME, export.len() as u32).to_vec();
    message.extend_from_slice(export.as_bytes());
    write_all(stream, &message, "sending NBD_OPT_EXPORT_NAME")?;
    let size = read_u64(stream, "the export information").map_err(|e| match e {
        NbdError::Truncated { .. } => NbdError::UnknownExport {
            name: export.into(),
            detail: "the server closed the connection after NBD_OPT_EXPORT_NAME".into(),
        },
        e => e,
    })?;
    let mut flags = [0u8; 2];
    read_exact(stream, &mut flags, "the export information")?;
    if !no_zeroes {
        read_exact(
            stream,
            &mut [0u8; EXPORT_NAME_ZEROES],
            "the export information",
        )?;
    }
    Ok(Negotiated {
        size,
        flags: u16::from_be_bytes(flags),
        min_block: 1,
        max_payload: MAX_PAYLOAD,
    })
}

impl Volume for NbdVolume {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        self.check("read", offset, buf.len() as u64)?;
        for (at, len) in self.chunks(offset, buf.len() as u64) {
            let start = (at - offset) as usize;
            let chunk = &mut buf[start..start + len as usize];
            let request = command(CMD_READ, at, len);
            self.request("read", request, &[], chunk)?;
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), VolumeError> {
        if self.read_only() {
            return Err(VolumeError::ReadOnly);
        }
        self.check("write", offset, data.len() as u64)?;
        for (at, len) in self.chunks(offset, data.len() as u64) {
            let start = (at - offset) as usize;
            let request = command(CMD_WRITE, at, len);
            self.request(
                "write",
                request,
                &data[start..start + len as usize],
                &mut [],
            )?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), VolumeError> {
        if self.flags & FLAG_SEND_FLUSH == 0 {
            // The server has no write cache to flush.
            return Ok(());
        }
        self.request("flush", command(CMD_FLUSH, 0, 0), &[], &mut [])
    }

    /// Uses `WRITE_ZEROES` without `NO_HOLE` (the server may punch a hole), since `TRIM`
    /// does not promise that the range reads as zeros; writes zeroes if the server lacks it.
    fn discard(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        if self.read_only() {
            return Err(VolumeError::ReadOnly);
        }
        self.check("discard", offset, len)?;
        if self.flags & FLAG_SEND_WRITE_ZEROES == 0 {
            let zeroes = vec![0u8; len.min(self.max_request) as usize];
            for (at, n) in self.chunks(offset, len) {
                self.write_at(at, &zeroes[..n as usize])?;
            }
            return Ok(());
        }
        for (at, n) in self.chunks(offset, len) {
            let request = command(CMD_WRITE_ZEROES, at, n);
            self.request("discard", request, &[], &mut [])?;
        }
        Ok(())
    }

    fn read_only(&self) -> bool {
        self.flags & FLAG_READ_ONLY != 0
    }
}

/// A request without its cookie (set when it is sent).
fn command(command: u16, offset: u64, len: u64) -> Request {
    Request {
        flags: 0,
        command,
        cookie: 0,
        offset,
        // Chunks are at most MAX_PAYLOAD long.
        length: len as u32,
    }
}

impl Drop for NbdVolume {
    fn drop(&mut self) {
        let conn = self.conn.get_mut().unwrap_or_else(|e| e.into_inner());
        if conn.broken.is_none() {
            let disc = command(CMD_DISC, 0, 0);
            let _ = write_all(conn.stream.as_mut(), &disc.encode(), "disconnecting");
        }
    }
}
