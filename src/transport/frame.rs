//! Length-prefixed postcard frames on QUIC streams.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::TransportError;

/// The largest frame accepted (Raft snapshots of the control plane are far smaller).
pub const MAX_FRAME: usize = 256 << 20;

pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    value: &T,
) -> Result<(), TransportError> {
    write_encoded(send, encode(value)?).await
}

/// A whole frame (length and body) in one buffer: encoded once, it can be sent on any
/// number of streams without copying.
pub fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes, TransportError> {
    let mut buf = postcard::to_extend(value, vec![0u8; 4])
        .map_err(|e| TransportError::Decode(e.to_string()))?;
    let body = buf.len() - 4;
    if body > MAX_FRAME {
        return Err(TransportError::FrameTooLarge {
            size: body,
            max: MAX_FRAME,
        });
    }
    buf[..4].copy_from_slice(&(body as u32).to_be_bytes());
    Ok(buf.into())
}

/// Sends a frame made by [`encode`].
pub async fn write_encoded(
    send: &mut quinn::SendStream,
    frame: bytes::Bytes,
) -> Result<(), TransportError> {
    send.write_chunk(frame)
        .await
        .map_err(|e| stream_err(send.id(), e))
}

pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<T, TransportError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| TransportError::Decode(format!("reading frame length: {}", describe(&e))))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(TransportError::FrameTooLarge { size: len, max });
    }
    // Read into uninitialised capacity: large frames are not zeroed first.
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        let want = len - body.len();
        let n = tokio::io::AsyncReadExt::read_buf(recv, &mut bytes::BufMut::limit(&mut body, want))
            .await
            .map_err(|e| TransportError::Decode(format!("reading frame body: {e}")))?;
        if n == 0 {
            return Err(TransportError::Decode(format!(
                "reading frame body: the stream ended {} bytes early",
                len - body.len()
            )));
        }
    }
    decode(&body)
}

pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, TransportError> {
    postcard::from_bytes(body).map_err(|e| TransportError::Decode(e.to_string()))
}

fn stream_err(id: quinn::StreamId, e: impl std::fmt::Display) -> TransportError {
    TransportError::Decode(format!("writing stream {id}: {e}"))
}

/// A read error with the peer's close reason, when it gave one.
fn describe(e: &quinn::ReadExactError) -> String {
    use quinn::{ConnectionError, ReadError, ReadExactError};
    match e {
        ReadExactError::ReadError(ReadError::ConnectionLost(
            ConnectionError::ApplicationClosed(c),
        )) => {
            format!(
                "peer closed the connection: {}",
                String::from_utf8_lossy(&c.reason)
            )
        }
        other => other.to_string(),
    }
}
