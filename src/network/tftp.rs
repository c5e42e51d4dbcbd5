//! A read-only TFTP server (RFC 1350, with the blksize and tsize options of RFC 2347-2349)
//! for network boot firmware that is not iPXE: it loads iPXE from here (`undionly.kpxe`
//! for BIOS, `snponly.efi` for UEFI), which then fetches the installer over HTTP. Only the
//! named files in memory are served; every transfer runs on its own socket and gives up
//! after a few unanswered retransmissions. Transfers are bounded: at most
//! [`MAX_PER_CLIENT`] at once per client address and [`MAX_TRANSFERS`] in all; a request
//! beyond them gets no answer at all (nothing to reflect, no socket spent).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;

pub const PORT: u16 = 69;
const RRQ: u16 = 1;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;
const RETRIES: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(1);
/// Transfers at once from one client address (firmware fetches one file at a time).
pub const MAX_PER_CLIENT: usize = 2;
/// Transfers at once in all.
pub const MAX_TRANSFERS: usize = 32;

/// Transfers in progress, by client address.
#[derive(Default)]
struct Running(std::sync::Mutex<HashMap<std::net::IpAddr, usize>>);

impl Running {
    /// Takes a place for a transfer to `ip`, if one is free.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Place> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = m.values().sum();
        let mine = m.entry(ip).or_insert(0);
        if *mine >= MAX_PER_CLIENT || total >= MAX_TRANSFERS {
            return None;
        }
        *mine += 1;
        Some(Place(self.clone(), ip))
    }
}

/// A transfer's place, given back when it ends.
struct Place(Arc<Running>, std::net::IpAddr);

impl Drop for Place {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// A read request, as far as this server needs it.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub file: String,
    pub blksize: Option<usize>,
    pub tsize: bool,
}

/// Parses a read request; `Err` carries the message for an ERROR packet.
pub fn parse_rrq(p: &[u8]) -> Result<ReadRequest, String> {
    if p.len() < 4 || u16::from_be_bytes([p[0], p[1]]) != RRQ {
        return Err("only read requests are served".into());
    }
    let fields: Vec<&[u8]> = p[2..].split(|b| *b == 0).collect();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_ascii_lowercase();
    let (Some(file), Some(mode)) = (fields.first(), fields.get(1)) else {
        return Err("malformed request".into());
    };
    if text(mode) != "octet" {
        return Err("only octet mode is served".into());
    }
    let mut r = ReadRequest {
        file: String::from_utf8_lossy(file)
            .trim_start_matches('/')
            .to_string(),
        blksize: None,
        tsize: false,
    };
    let mut i = 2;
    while i + 1 < fields.len() {
        let (k, v) = (text(fields[i]), text(fields[i + 1]));
        match k.as_str() {
            "blksize" => r.blksize = v.parse::<usize>().ok().map(|n| n.clamp(8, 1428)),
            "tsize" => r.tsize = true,
            _ => {}
        }
        i += 2;
    }
    Ok(r)
}

fn error(code: u16, msg: &str) -> Vec<u8> {
    let mut v = ERROR.to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(msg.as_bytes());
    v.push(0);
    v
}

fn data(block: u16, chunk: &[u8]) -> Vec<u8> {
    let mut v = DATA.to_be_bytes().to_vec();
    v.extend_from_slice(&block.to_be_bytes());
    v.extend_from_slice(chunk);
    v
}

/// Serves `files` (name → contents) on `socket` for as long as the task runs.
pub async fn serve(socket: UdpSocket, files: Arc<HashMap<String, Bytes>>) {
    let mut buf = vec![0u8; 1500];
    let running = Arc::new(Running::default());
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some(place) = running.take(from.ip()) else {
            tracing::debug!(%from, "TFTP request ignored: too many transfers at once");
            continue;
        };
        let req = parse_rrq(&buf[..n]);
        let files = files.clone();
        tokio::spawn(async move {
            if let Err(e) = transfer(req, from, &files).await {
                tracing::debug!(%from, error = %e, "TFTP transfer ended");
            }
            drop(place);
        });
    }
}

/// Sends one file to `to` from a fresh socket (its own transfer id).
async fn transfer(
    req: Result<ReadRequest, String>,
    to: SocketAddr,
    files: &HashMap<String, Bytes>,
) -> std::io::Result<()> {
    let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await?;
    let req = match req {
        Ok(r) => r,
        Err(msg) => {
            sock.send_to(&error(4, &msg), to).await?;
            return Ok(());
        }
    };
    let Some(body) = files.get(&req.file) else {
        sock.send_to(&error(1, "file not found"), to).await?;
        return Ok(());
    };
    tracing::info!(file = %req.file, client = %to, "TFTP transfer");
    let size = req.blksize.unwrap_or(512);
    // With options, the first packet is their acknowledgement; the client ACKs block 0.
    if req.blksize.is_some() || req.tsize {
        let mut o = OACK.to_be_bytes().to_vec();
        if let Some(b) = req.blksize {
            o.extend_from_slice(format!("blksize\0{b}\0").as_bytes());
        }
        if req.tsize {
            o.extend_from_slice(format!("tsize\0{}\0", body.len()).as_bytes());
        }
        if !send_until_acked(&sock, to, &o, 0).await? {
            return Ok(());
        }
    }
    let blocks = body.len() / size + 1;
    for i in 0..blocks {
        let block = ((i + 1) & 0xffff) as u16;
        let chunk = &body[i * size..((i + 1) * size).min(body.len())];
        if !send_until_acked(&sock, to, &data(block, chunk), block).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// Sends `packet` until `to` acknowledges `block`; false when it gives up or errs.
async fn send_until_acked(
    sock: &UdpSocket,
    to: SocketAddr,
    packet: &[u8],
    block: u16,
) -> std::io::Result<bool> {
    let mut buf = [0u8; 516];
    for _ in 0..RETRIES {
        sock.send_to(packet, to).await?;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while let Ok(r) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            let (n, from) = r?;
            if from != to || n < 4 {
                continue;
            }
            match u16::from_be_bytes([buf[0], buf[1]]) {
                ACK if u16::from_be_bytes([buf[2], buf[3]]) == block => return Ok(true),
                ERROR => return Ok(false),
                _ => {}
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(file: &str, opts: &[(&str, &str)]) -> Vec<u8> {
        rrq_mode(file, "octet", opts)
    }

    fn rrq_mode(file: &str, mode: &str, opts: &[(&str, &str)]) -> Vec<u8> {
        let mut v = RRQ.to_be_bytes().to_vec();
        for s in [file, mode] {
            v.extend_from_slice(s.as_bytes());
            v.push(0);
        }
        for (k, val) in opts {
            for s in [k, val] {
                v.extend_from_slice(s.as_bytes());
                v.push(0);
            }
        }
        v
    }

    #[test]
    fn requests_parse_and_bad_ones_are_named() {
        let r = parse_rrq(&rrq(
            "/undionly.kpxe",
            &[("blksize", "1468"), ("tsize", "0")],
        ))
        .unwrap();
        assert_eq!(r.file, "undionly.kpxe");
        assert_eq!(r.blksize, Some(1428));
        assert!(r.tsize);
        assert!(parse_rrq(b"\x00\x02x\x00octet\x00").is_err(), "a write");
        assert!(parse_rrq(&rrq_mode("a", "netascii", &[])).is_err());
        assert!(parse_rrq(b"\x00").is_err());
    }

    /// A minimal client: fetches `file` with `blksize`, acknowledging every block.
    async fn fetch(
        server: SocketAddr,
        file: &str,
        blksize: Option<&str>,
    ) -> Result<Vec<u8>, String> {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let opts: Vec<(&str, &str)> = blksize.map(|b| vec![("blksize", b)]).unwrap_or_default();
        s.send_to(&rrq(file, &opts), server).await.unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 2000];
        let size = blksize.map(|b| b.parse().unwrap()).unwrap_or(512);
        loop {
            let (n, from) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
                .await
                .map_err(|_| "timeout".to_string())?
                .unwrap();
            let op = u16::from_be_bytes([buf[0], buf[1]]);
            match op {
                OACK => {
                    s.send_to(&[0, 4, 0, 0], from).await.unwrap();
                }
                DATA => {
                    out.extend_from_slice(&buf[4..n]);
                    s.send_to(&[0, 4, buf[2], buf[3]], from).await.unwrap();
                    if n - 4 < size {
                        return Ok(out);
                    }
                }
                ERROR => return Err(String::from_utf8_lossy(&buf[4..n - 1]).to_string()),
                _ => return Err(format!("opcode {op}")),
            }
        }
    }

    #[tokio::test]
    async fn files_are_served_whole_and_unknown_ones_refused() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let exact = vec![7u8; 1024];
        let files = Arc::new(HashMap::from([
            ("big".to_string(), Bytes::from(big.clone())),
            ("exact".to_string(), Bytes::from(exact.clone())),
        ]));
        let task = tokio::spawn(serve(sock, files));
        assert_eq!(fetch(addr, "big", None).await.unwrap(), big);
        assert_eq!(fetch(addr, "big", Some("1428")).await.unwrap(), big);
        // A multiple of the block size ends with an empty block.
        assert_eq!(fetch(addr, "exact", None).await.unwrap(), exact);
        assert_eq!(
            fetch(addr, "nope", None).await.unwrap_err(),
            "file not found"
        );
        task.abort();
    }

    #[tokio::test]
    async fn transfers_at_once_are_bounded_per_client() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let files = Arc::new(HashMap::from([(
            "big".to_string(),
            Bytes::from(vec![1u8; 5000]),
        )]));
        let task = tokio::spawn(serve(sock, files));
        // Five requests from one address, none acknowledged: the first two are answered.
        let mut clients = Vec::new();
        for _ in 0..5 {
            let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            c.send_to(&rrq("big", &[]), addr).await.unwrap();
            clients.push(c);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut answered = 0;
        for c in &clients {
            let mut buf = [0u8; 600];
            if tokio::time::timeout(Duration::from_millis(400), c.recv_from(&mut buf))
                .await
                .is_ok()
            {
                answered += 1;
            }
        }
        assert_eq!(answered, MAX_PER_CLIENT, "answered requests");
        task.abort();
    }
}
