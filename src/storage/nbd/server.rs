//! The NBD server: negotiation, then pipelined requests run on the blocking pool, with
//! replies serialised through one writer.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, warn, Instrument};

use super::proto::*;
use super::NbdError;
use crate::storage::{check_range, Volume, VolumeError, WriteDone};

/// The volumes a server exports, by name. Removing an export refuses new connections to
/// it; connections already using it keep their volume until they end.
#[derive(Default)]
pub struct Exports {
    volumes: RwLock<BTreeMap<String, Arc<dyn Volume>>>,
    access: RwLock<Option<Access>>,
}

/// Whether an unprivileged user (a VM's process) may use an export.
pub type Access = Arc<dyn Fn(u32, &str) -> bool + Send + Sync>;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Root on this node, or a transport that only root can reach: every export.
    Trusted,
    /// A local process of this user (`SO_PEERCRED`): only the exports the access rule
    /// gives it ([`Exports::set_access`]), none without one.
    Uid(u32),
}

impl Peer {
    /// The peer of a Unix-socket connection, from the kernel's credentials (unknown
    /// credentials count as the most restricted user).
    pub fn of_unix(stream: &tokio::net::UnixStream) -> Peer {
        match stream.peer_cred().map(|c| c.uid()) {
            Ok(0) => Peer::Trusted,
            Ok(uid) => Peer::Uid(uid),
            Err(_) => Peer::Uid(u32::MAX),
        }
    }
}

/// The exports one peer may see.
struct Visible<'a> {
    exports: &'a Exports,
    peer: Peer,
}

impl Visible<'_> {
    fn allows(&self, name: &str) -> bool {
        match self.peer {
            Peer::Trusted => true,
            Peer::Uid(uid) => self
                .exports
                .access
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|rule| rule(uid, name)),
        }
    }

    fn get(&self, name: &str) -> Option<Arc<dyn Volume>> {
        self.exports.get(name).filter(|_| self.allows(name))
    }

    fn names(&self) -> Vec<String> {
        let mut names = self.exports.names();
        names.retain(|n| self.allows(n));
        names
    }
}

impl Exports {
    pub fn new() -> Self {
        Self::default()
    }

    /// Exports `volume` as `name` (the empty name is the default export).
    pub fn add(&self, name: impl Into<String>, volume: Arc<dyn Volume>) -> Result<(), NbdError> {
        let name = name.into();
        let reason = if name.len() > MAX_STRING {
            Some("longer than 4096 bytes")
        } else if name.contains('\0') {
            Some("contains a NUL character")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(NbdError::BadExportName { name, reason });
        }
        let mut volumes = self.volumes.write().unwrap_or_else(|e| e.into_inner());
        if volumes.contains_key(&name) {
            return Err(NbdError::ExportExists(name));
        }
        volumes.insert(name, volume);
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Option<Arc<dyn Volume>> {
        let mut volumes = self.volumes.write().unwrap_or_else(|e| e.into_inner());
        volumes.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Volume>> {
        let volumes = self.volumes.read().unwrap_or_else(|e| e.into_inner());
        volumes.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let volumes = self.volumes.read().unwrap_or_else(|e| e.into_inner());
        volumes.keys().cloned().collect()
    }

    /// Sets which exports an unprivileged peer may use (none until this is called).
    pub fn set_access(&self, rule: Access) {
        *self.access.write().unwrap_or_else(|e| e.into_inner()) = Some(rule);
    }
}

/// Accepts connections forever, serving each on its own task; what each client may use
/// depends on its user ([`Peer::of_unix`]).
pub async fn serve_unix(listener: UnixListener, exports: Arc<Exports>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let exports = exports.clone();
                let peer = Peer::of_unix(&stream);
                tokio::spawn(async move {
                    let _ = serve_connection_as(stream, exports, peer).await;
                });
            }
            Err(e) => accept_failed(e).await,
        }
    }
}

/// Accepts TCP connections forever (with `TCP_NODELAY`), serving each on its own task.
pub async fn serve_tcp(listener: TcpListener, exports: Arc<Exports>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(%peer, "cannot set TCP_NODELAY on an NBD connection: {e}");
                }
                let exports = exports.clone();
                let span = tracing::info_span!("nbd", %peer);
                tokio::spawn(
                    async move {
                        let _ = serve_connection(stream, exports).await;
                    }
                    .instrument(span),
                );
            }
            Err(e) => accept_failed(e).await,
        }
    }
}

async fn accept_failed(e: std::io::Error) {
    warn!("accepting an NBD connection failed: {e}");
    // Out of file descriptors and the like: do not spin.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves one client connection to its end: negotiation, then transmission until
/// `NBD_CMD_DISC` or the client hangs up. A malformed message ends the connection with an
/// error (logged as a warning naming the cause); refused requests do not.
pub async fn serve_connection<S>(stream: S, exports: Arc<Exports>) -> Result<(), NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    serve_connection_as(stream, exports, Peer::Trusted).await
}

/// [`serve_connection`] for a peer that may see only some exports.
pub async fn serve_connection_as<S>(
    stream: S,
    exports: Arc<Exports>,
    peer: Peer,
) -> Result<(), NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut export_name = None;
    let visible = Visible {
        exports: &exports,
        peer,
    };
    let result = serve(stream, &visible, &mut export_name).await;
    let export = export_name.as_deref().unwrap_or("-");
    match &result {
        Ok(()) => debug!(export, "NBD connection closed"),
        Err(e) => warn!(export, "NBD connection ended: {e}"),
    }
    result
}

async fn serve<S>(
    stream: S,
    exports: &Visible<'_>,
    export_name: &mut Option<String>,
) -> Result<(), NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (r, w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let mut w = BufWriter::new(w);
    let Some(export) = negotiate(&mut r, &mut w, exports).await? else {
        return Ok(());
    };
    *export_name = Some(export.name.clone());
    debug!(export = %export.name, "NBD client entered transmission");
    transmission(r, w, export).await
}

/// The export a client chose.
struct Export {
    name: String,
    volume: Arc<dyn Volume>,
}

fn transmission_flags(volume: &dyn Volume) -> u16 {
    let mut flags = FLAG_HAS_FLAGS
        | FLAG_SEND_FLUSH
        | FLAG_SEND_FUA
        | FLAG_SEND_TRIM
        | FLAG_SEND_WRITE_ZEROES
        | FLAG_CAN_MULTI_CONN;
    if volume.read_only() {
        flags |= FLAG_READ_ONLY;
    }
    flags
}

/// Fills `buf`; `Ok(false)` when the peer hung up before the first byte of the message.
async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    during: &'static str,
) -> Result<bool, NbdError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).await {
            Ok(0) if n == 0 => return Ok(false),
            Ok(0) => return Err(NbdError::Truncated { during }),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(NbdError::io(during, e)),
        }
    }
    Ok(true)
}

/// Reads a write payload of `len` bytes into `data` (uninitialised capacity: a
/// large payload is not zeroed first).
async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    data: &mut Vec<u8>,
    len: usize,
) -> Result<(), NbdError> {
    data.reserve_exact(len);
    while data.len() < len {
        let want = len - data.len();
        let n = r
            .read_buf(&mut bytes::BufMut::limit(&mut *data, want))
            .await
            .map_err(|e| NbdError::io("a write payload", e))?;
        if n == 0 {
            return Err(NbdError::Truncated {
                during: "a write payload",
            });
        }
    }
    Ok(())
}

async fn read_exact<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    during: &'static str,
) -> Result<(), NbdError> {
    r.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|e| NbdError::io(during, e))
}

async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    during: &'static str,
) -> Result<(), NbdError> {
    w.write_all(bytes)
        .await
        .map_err(|e| NbdError::io(during, e))?;
    w.flush().await.map_err(|e| NbdError::io(during, e))
}

/// What the server does after answering an option.
enum Outcome {
    Continue,
    Abort,
    Transmit(Export),
    Close(NbdError),
}

/// Option haggling; `None` when the client aborted or hung up.
async fn negotiate<R, W>(
    r: &mut R,
    w: &mut W,
    exports: &Visible<'_>,
) -> Result<Option<Export>, NbdError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let greeting = encode_greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    send(w, &greeting, "sending the greeting").await?;
    let mut flags = [0u8; 4];
    if !read_message(r, &mut flags, "the client flags").await? {
        return Ok(None);
    }
    let client_flags = u32::from_be_bytes(flags);
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(NbdError::Protocol(format!(
            "unknown client flags {client_flags:#x}"
        )));
    }
    let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;
    loop {
        let mut header = [0u8; OPTION_HEADER_LEN];
        if !read_message(r, &mut header, "an option header").await? {
            return Ok(None);
        }
        let (option, len) = decode_option_header(&header)?;
        if len > MAX_OPTION_LEN {
            return Err(NbdError::TooLarge {
                what: "option data",
                len: len.into(),
                max: MAX_OPTION_LEN.into(),
            });
        }
        let mut data = vec![0u8; len as usize];
        read_exact(r, &mut data, "option data").await?;
        let (reply, outcome) = handle_option(option, data, exports, no_zeroes);
        if !reply.is_empty() {
            send(w, &reply, "answering an option").await?;
        }
        match outcome {
            Outcome::Continue => {}
            Outcome::Abort => return Ok(None),
            Outcome::Transmit(export) => return Ok(Some(export)),
            Outcome::Close(e) => return Err(e),
        }
    }
}

/// Answers one option: the bytes to send and what comes next. No I/O.
fn handle_option(
    option: u32,
    data: Vec<u8>,
    exports: &Visible<'_>,
    no_zeroes: bool,
) -> (Vec<u8>, Outcome) {
    let refuse = |reply: u32, message: &str| {
        let reply = encode_option_reply(option, reply, message.as_bytes());
        (reply, Outcome::Continue)
    };
    match option {
        OPT_EXPORT_NAME => {
            let Ok(name) = String::from_utf8(data) else {
                let e = NbdError::Protocol("the NBD_OPT_EXPORT_NAME name is not UTF-8".into());
                return (Vec::new(), Outcome::Close(e));
            };
            let Some(volume) = exports.get(&name) else {
                let detail = "asked for with NBD_OPT_EXPORT_NAME, which cannot be answered \
                              with an error, so the connection is closed"
                    .to_string();
                return (
                    Vec::new(),
                    Outcome::Close(NbdError::UnknownExport { name, detail }),
                );
            };
            let mut reply = volume.size().to_be_bytes().to_vec();
            reply.extend_from_slice(&transmission_flags(volume.as_ref()).to_be_bytes());
            if !no_zeroes {
                reply.extend_from_slice(&[0u8; EXPORT_NAME_ZEROES]);
            }
            (reply, Outcome::Transmit(Export { name, volume }))
        }
        OPT_ABORT => (encode_option_reply(option, REP_ACK, &[]), Outcome::Abort),
        OPT_LIST if !data.is_empty() => refuse(REP_ERR_INVALID, "NBD_OPT_LIST takes no data"),
        OPT_LIST => {
            let mut reply = Vec::new();
            for name in exports.names() {
                let mut item = (name.len() as u32).to_be_bytes().to_vec();
                item.extend_from_slice(name.as_bytes());
                reply.extend(encode_option_reply(option, REP_SERVER, &item));
            }
            reply.extend(encode_option_reply(option, REP_ACK, &[]));
            (reply, Outcome::Continue)
        }
        OPT_INFO | OPT_GO => {
            let request = match parse_info_request(&data) {
                Ok(r) => r,
                Err(message) => return refuse(REP_ERR_INVALID, &message),
            };
            let Some(volume) = exports.get(&request.name) else {
                return refuse(
                    REP_ERR_UNKNOWN,
                    &format!("unknown export {:?}", request.name),
                );
            };
            let flags = transmission_flags(volume.as_ref());
            let export = encode_info_export(volume.size(), flags);
            let mut reply = encode_option_reply(option, REP_INFO, &export);
            // Always sent: the minimum of 512 is stricter than the protocol's default.
            let sizes = encode_info_block_size(MIN_BLOCK, PREFERRED_BLOCK, MAX_PAYLOAD);
            reply.extend(encode_option_reply(option, REP_INFO, &sizes));
            if request.infos.contains(&INFO_NAME) {
                let mut item = INFO_NAME.to_be_bytes().to_vec();
                item.extend_from_slice(request.name.as_bytes());
                reply.extend(encode_option_reply(option, REP_INFO, &item));
            }
            reply.extend(encode_option_reply(option, REP_ACK, &[]));
            if option == OPT_GO {
                let export = Export {
                    name: request.name,
                    volume,
                };
                (reply, Outcome::Transmit(export))
            } else {
                (reply, Outcome::Continue)
            }
        }
        OPT_STRUCTURED_REPLY => refuse(REP_ERR_UNSUP, "this server sends simple replies only"),
        OPT_STARTTLS => refuse(REP_ERR_UNSUP, "this server does not support TLS"),
        other => refuse(
            REP_ERR_UNSUP,
            &format!("{} ({other}) is not supported", option_name(other)),
        ),
    }
}

/// Bytes of request or reply payload one permit of the in-flight budget stands for.
const PERMIT_UNIT: u32 = 64 << 10;
/// Permits every request takes, so tiny requests are bounded in number too.
const BASE_COST: u32 = 8;
/// In flight at once: four requests of the maximum payload, or about 230 small ones.
const BUDGET: u32 = 4 * (MAX_PAYLOAD / PERMIT_UNIT + BASE_COST);

fn cost(request: &Request) -> u32 {
    let payload = match request.command {
        CMD_READ | CMD_WRITE => request.length.min(MAX_PAYLOAD),
        _ => 0,
    };
    BASE_COST + payload.div_ceil(PERMIT_UNIT)
}

/// A reply waiting for the writer; its permit is returned once it is sent.
struct Reply {
    cookie: u64,
    error: u32,
    data: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

async fn transmission<R, W>(r: R, w: BufWriter<W>, export: Export) -> Result<(), NbdError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(BUDGET as usize));
    let (read, write) = tokio::join!(
        read_requests(r, Arc::new(export), tx, budget),
        write_replies(w, rx)
    );
    read.and(write)
}

/// Reads requests until `NBD_CMD_DISC`, the client hanging up, or a malformed message, and
/// starts each one; the writer ends once every started request is answered.
async fn read_requests<R: AsyncRead + Unpin>(
    mut r: R,
    export: Arc<Export>,
    tx: UnboundedSender<Reply>,
    budget: Arc<Semaphore>,
) -> Result<(), NbdError> {
    loop {
        let mut header = [0u8; REQUEST_LEN];
        if !read_message(&mut r, &mut header, "a request header").await? {
            debug!(export = %export.name, "NBD client hung up without NBD_CMD_DISC");
            return Ok(());
        }
        let request = Request::decode(&header)?;
        if request.command == CMD_DISC {
            return Ok(());
        }
        let permit = budget
            .clone()
            .acquire_many_owned(cost(&request))
            .await
            .map_err(|_| NbdError::Protocol("the request budget was closed".into()))?;
        if request.command == CMD_WRITE && request.length > MAX_PAYLOAD {
            // Its payload cannot be skipped safely: refuse it and end the connection.
            let _ = tx.send(error_reply(request.cookie, NBD_EINVAL, permit));
            return Err(NbdError::TooLarge {
                what: "an NBD_CMD_WRITE payload",
                len: request.length.into(),
                max: MAX_PAYLOAD.into(),
            });
        }
        let mut data = Vec::new();
        if request.command == CMD_WRITE {
            read_payload(&mut r, &mut data, request.length as usize).await?;
        }
        if let Err((error, why)) = validate(&request, export.volume.as_ref()) {
            debug!(
                export = %export.name,
                cookie = request.cookie,
                "refused {} with {}: {why}",
                command_name(request.command),
                error_name(error)
            );
            let _ = tx.send(error_reply(request.cookie, error, permit));
            continue;
        }
        spawn_request(request, data, export.clone(), tx.clone(), permit);
    }
}

fn error_reply(cookie: u64, error: u32, permit: OwnedSemaphorePermit) -> Reply {
    Reply {
        cookie,
        error,
        data: Vec::new(),
        _permit: permit,
    }
}

/// Checks a request against the export; the error is the NBD error to reply with.
fn validate(request: &Request, volume: &dyn Volume) -> Result<(), (u32, String)> {
    let command = request.command;
    let name = command_name(command);
    let allowed = match command {
        CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM => CMD_FLAG_FUA,
        CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
        _ => return Err((NBD_EINVAL, format!("{name} ({command}) is not supported"))),
    };
    if request.flags & !allowed != 0 {
        let why = format!(
            "command flags {:#x} are not valid for {name}",
            request.flags
        );
        return Err((NBD_EINVAL, why));
    }
    let writes = matches!(command, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if writes && volume.read_only() {
        return Err((NBD_EPERM, "the export is read-only".into()));
    }
    if command == CMD_FLUSH {
        return Ok(());
    }
    if command == CMD_READ && request.length > MAX_PAYLOAD {
        let why = format!(
            "a read of {} bytes exceeds the maximum payload of {MAX_PAYLOAD}",
            request.length
        );
        return Err((NBD_EINVAL, why));
    }
    match check_range(name, request.offset, request.length.into(), volume.size()) {
        Ok(()) => Ok(()),
        // The protocol asks for ENOSPC when a write goes past the end.
        Err(e @ VolumeError::OutOfRange { .. })
            if matches!(command, CMD_WRITE | CMD_WRITE_ZEROES) =>
        {
            Err((NBD_ENOSPC, e.to_string()))
        }
        Err(e) => Err((error_from_errno(e.errno()), e.to_string())),
    }
}

/// Runs a validated request and queues its reply: a plain write through the volume's own
/// asynchronous path when it has one, everything else on the blocking pool.
fn spawn_request(
    request: Request,
    data: Vec<u8>,
    export: Arc<Export>,
    tx: UnboundedSender<Reply>,
    permit: OwnedSemaphorePermit,
) {
    let volume = export.volume.clone();
    let cookie = request.cookie;
    let name = command_name(request.command);
    let reply = move |result: Result<Vec<u8>, VolumeError>| {
        let (error, data) = match result {
            Ok(data) => (0, data),
            Err(e) => {
                warn!(export = %export.name, cookie, "{name} failed: {e}");
                (error_from_errno(e.errno()), Vec::new())
            }
        };
        let _ = tx.send(Reply {
            cookie,
            error,
            data,
            _permit: permit,
        });
    };
    if request.command == CMD_WRITE && request.flags & CMD_FLAG_FUA == 0 {
        let done: WriteDone = Box::new(move |r| reply(r.map(|()| Vec::new())));
        if let Err((data, done)) = volume.start_write(request.offset, data, done) {
            let offset = request.offset;
            tokio::task::spawn_blocking(move || {
                done(guarded(name, || volume.write_at(offset, &data)));
            });
        }
        return;
    }
    tokio::task::spawn_blocking(move || {
        reply(guarded(name, || execute(volume.as_ref(), &request, data)));
    });
}

/// Runs `f`; a panic becomes an error (the client gets EIO, not silence).
fn guarded<T>(name: &str, f: impl FnOnce() -> Result<T, VolumeError>) -> Result<T, VolumeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        error!("{name} did not complete (a bug: it panicked)");
        Err(VolumeError::Invalid(format!("{name} did not complete")))
    })
}

/// Zeroes written at a time for `WRITE_ZEROES` with `NO_HOLE`.
const ZERO_CHUNK: u64 = 1 << 20;

/// Performs a validated request; the data of a read on success.
fn execute(volume: &dyn Volume, request: &Request, data: Vec<u8>) -> Result<Vec<u8>, VolumeError> {
    let (offset, len) = (request.offset, u64::from(request.length));
    match request.command {
        CMD_READ => {
            let mut buf = vec![0u8; request.length as usize];
            volume.read_at(offset, &mut buf)?;
            return Ok(buf);
        }
        CMD_WRITE => volume.write_at(offset, &data)?,
        CMD_FLUSH => return volume.flush().map(|()| Vec::new()),
        CMD_TRIM => volume.discard(offset, len)?,
        CMD_WRITE_ZEROES if request.flags & CMD_FLAG_NO_HOLE != 0 => {
            let zeroes = vec![0u8; len.min(ZERO_CHUNK) as usize];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(ZERO_CHUNK);
                volume.write_at(offset + done, &zeroes[..n as usize])?;
                done += n;
            }
        }
        // Without NO_HOLE the range may become a hole: a discard reads back as zeros.
        CMD_WRITE_ZEROES => volume.discard(offset, len)?,
        other => {
            let name = command_name(other);
            return Err(VolumeError::Invalid(format!(
                "{name} ({other}) reached execution"
            )));
        }
    }
    if request.flags & CMD_FLAG_FUA != 0 {
        volume.flush()?;
    }
    Ok(Vec::new())
}

/// Sends replies in the order they complete, flushing when none is waiting. After a send
/// fails it keeps draining (returning permits) until every started request is done.
async fn write_replies<W: AsyncWrite + Unpin>(
    mut w: BufWriter<W>,
    mut rx: UnboundedReceiver<Reply>,
) -> Result<(), NbdError> {
    let mut failed = None;
    while let Some(reply) = rx.recv().await {
        if failed.is_some() {
            continue;
        }
        let header = encode_simple_reply(reply.error, reply.cookie);
        let mut sent = w.write_all(&header).await;
        if sent.is_ok() && !reply.data.is_empty() {
            sent = w.write_all(&reply.data).await;
        }
        if sent.is_ok() && rx.is_empty() {
            sent = w.flush().await;
        }
        failed = sent.err();
    }
    if failed.is_none() {
        failed = w.flush().await.err();
    }
    if let Some(e) = failed {
        return Err(NbdError::io("sending a reply", e));
    }
    // The client may already be gone after NBD_CMD_DISC; nothing is lost then.
    let _ = w.shutdown().await;
    Ok(())
}
