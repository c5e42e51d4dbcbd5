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

/// A frame ready to send, as chunks: the length and the encoded value, then any bytes
/// attached after it by [`encode_with`]. Cloning shares the chunks: one encoding can be
/// sent on any number of streams without copying.
#[derive(Clone, Debug)]
pub struct Encoded(Vec<bytes::Bytes>);

pub fn encode<T: Serialize>(value: &T) -> Result<Encoded, TransportError> {
    encode_with(value, Vec::new())
}

/// Encodes `value` with `tail` appended to the frame's body as it is: bulk data travels
/// without being copied into the encoding, and [`read_frame_with_tail`] hands it back
/// without copying either.
pub fn encode_with<T: Serialize>(
    value: &T,
    tail: Vec<bytes::Bytes>,
) -> Result<Encoded, TransportError> {
    let mut head = postcard::to_extend(value, vec![0u8; 4])
        .map_err(|e| TransportError::Decode(e.to_string()))?;
    let body = head.len() - 4 + tail.iter().map(|t| t.len()).sum::<usize>();
    if body > MAX_FRAME {
        return Err(TransportError::FrameTooLarge {
            size: body,
            max: MAX_FRAME,
        });
    }
    head[..4].copy_from_slice(&(body as u32).to_be_bytes());
    let mut chunks = Vec::with_capacity(1 + tail.len());
    chunks.push(head.into());
    chunks.extend(tail.into_iter().filter(|t| !t.is_empty()));
    Ok(Encoded(chunks))
}

/// Sends a frame made by [`encode`] or [`encode_with`].
pub async fn write_encoded(
    send: &mut quinn::SendStream,
    mut frame: Encoded,
) -> Result<(), TransportError> {
    send.write_all_chunks(&mut frame.0)
        .await
        .map_err(|e| stream_err(send.id(), e))
}

pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<T, TransportError> {
    decode(&read_body(recv, max).await?)
}

/// Reads a frame made by [`encode_with`]: the value, and the bytes attached after it
/// (a view of the received body, not a copy).
pub async fn read_frame_with_tail<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<(T, bytes::Bytes), TransportError> {
    let body = bytes::Bytes::from(read_body(recv, max).await?);
    let (value, rest) =
        postcard::take_from_bytes(&body).map_err(|e| TransportError::Decode(e.to_string()))?;
    let tail = body.slice(body.len() - rest.len()..);
    Ok((value, tail))
}

async fn read_body(recv: &mut quinn::RecvStream, max: usize) -> Result<Vec<u8>, TransportError> {
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
    Ok(body)
}

/// Decodes a frame's body; bytes left over after the value mean the two ends disagree on
/// what the frame holds (a frame with data after its value is read with
/// [`read_frame_with_tail`]), and are refused.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, TransportError> {
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| TransportError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(TransportError::Decode(format!(
            "{} bytes left over after the frame's value (sender and receiver disagree on the message)",
            rest.len()
        )));
    }
    Ok(value)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(e: &Encoded) -> Vec<u8> {
        e.0.concat()[4..].to_vec()
    }

    #[test]
    fn a_frame_decodes_whole_and_leftover_bytes_are_refused() {
        let v = (7u32, "seven".to_string());
        let plain = body(&encode(&v).unwrap());
        assert_eq!(decode::<(u32, String)>(&plain).unwrap(), v);
        // The same value with data after it: the generic decoder refuses, naming the count.
        let tailed = body(&encode_with(&v, vec![bytes::Bytes::from_static(b"abc")]).unwrap());
        let e = decode::<(u32, String)>(&tailed).unwrap_err().to_string();
        assert!(e.contains("3 bytes left over"), "{e}");
        // A truncated body is refused too.
        assert!(decode::<(u32, String)>(&plain[..plain.len() - 1]).is_err());
    }
}
