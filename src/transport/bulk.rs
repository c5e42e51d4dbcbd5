//! Bulk throughput probe for `make bench`: a sink service that reads a stream to its end
//! and answers with the byte count, and the sender that fills such a stream. Registered on
//! the migration class (the bulk class), so it measures what block replication and VM
//! migration can carry between two nodes, encryption included.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::frame::{read_frame, write_frame};
use super::{Class, Peer, Service, Transport, TransportError};
use crate::ids::NodeId;

/// The sink: discards everything, then reports how much arrived.
pub struct Sink;

#[async_trait::async_trait]
impl Service for Sink {
    async fn handle_stream(
        &self,
        peer: Peer,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let mut total: u64 = 0;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(n)) => total += n as u64,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(peer = ?peer.node, error = %e, "bulk probe stream ended");
                    return;
                }
            }
        }
        if write_frame(&mut send, &total).await.is_ok() {
            let _ = send.finish();
        }
    }
}

/// Sends `bytes` to `peer`'s sink on one stream; returns the bytes it counted and the time.
pub async fn send(
    transport: &Transport,
    peer: NodeId,
    addr: SocketAddr,
    bytes: u64,
) -> Result<(u64, Duration), TransportError> {
    let conn = transport.connection(peer, addr, Class::Mig).await?;
    let start = Instant::now();
    let (mut s, mut r) = conn
        .open_bi()
        .await
        .map_err(|source| TransportError::Connection { addr, source })?;
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n])
            .await
            .map_err(|e| TransportError::Stream {
                addr,
                reason: e.to_string(),
            })?;
        left -= n as u64;
    }
    s.finish().map_err(|e| TransportError::Stream {
        addr,
        reason: e.to_string(),
    })?;
    let got: u64 = read_frame(&mut r, 64).await?;
    Ok((got, start.elapsed()))
}
