//! The replica server ("downstairs"): this node's regions, served to upstairs clients on
//! the `strata-blk/1` traffic class, one request per QUIC stream.
//!
//! Every I/O request names the volume and the writer's generation. A region remembers the
//! highest generation it has seen (persisted before it answers); a request from an older
//! generation is answered [`BlkResponse::Fenced`], so a stale writer (a VM's old host after
//! a failover) can no longer change the data. Regions are created and deleted by this
//! node's agent from cluster state, never by a remote request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::extent::{BlockState, BLOCK};
use super::region::{valid_name, Region};
use super::{Volume, VolumeError};
use crate::transport::frame::{read_frame_with_tail, write_frame};
use crate::transport::{Peer, Service};

/// Largest data payload of one request (bigger guest I/O is split by the client).
pub const MAX_IO: usize = 4 << 20;
/// Most changes in one [`BlkRequest::Batch`] (their data together at most [`MAX_IO`]).
pub const MAX_BATCH_OPS: usize = 128;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BlkRequest {
    /// Claims the region for a writer of `generation` (raises the region's generation).
    Activate {
        volume: String,
        generation: u64,
    },
    Write {
        volume: String,
        generation: u64,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Reads the live volume, or one of its snapshots (`layer`; any generation may read a
    /// snapshot, which never changes).
    Read {
        volume: String,
        generation: u64,
        layer: Option<String>,
        offset: u64,
        len: u32,
    },
    Flush {
        volume: String,
        generation: u64,
    },
    Discard {
        volume: String,
        generation: u64,
        offset: u64,
        len: u64,
        /// A clone's discard: the range must read as zeros, not as its parent's blocks.
        mask: bool,
    },
    Status {
        volume: String,
    },
    /// Takes a snapshot of the live volume at this point of the write stream.
    Snapshot {
        volume: String,
        generation: u64,
        name: String,
    },
    /// Deletes a snapshot (the older ones keep their content).
    DropSnapshot {
        volume: String,
        generation: u64,
        name: String,
    },
    /// Makes the snapshot stack exactly `names` (a returning replica catching up).
    SetSnapshots {
        volume: String,
        generation: u64,
        names: Vec<String>,
    },
    /// Whole blocks of one layer as stored, with their states (copying a replica).
    ReadRaw {
        volume: String,
        layer: Option<String>,
        first: u64,
        count: u32,
    },
    /// The extents written since the last flush (see [`BlkResponse::Extents`]).
    Dirty {
        volume: String,
    },
    /// Writes and discards applied in order (a writer's batch of guest requests).
    Batch {
        volume: String,
        generation: u64,
        ops: Vec<BlkOp>,
    },
    /// Sets whole blocks of one layer exactly (states as [`BlockState`] codes).
    WriteRaw {
        volume: String,
        generation: u64,
        layer: Option<String>,
        first: u64,
        #[serde(with = "serde_bytes")]
        states: Vec<u8>,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

/// One change in a [`BlkRequest::Batch`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BlkOp {
    /// Made by [`BlkOp::write`]. On the wire only the length is encoded; the data follows
    /// the encoded request in the same frame ([`BlkRequest::tail`], [`BlkRequest::attach`]),
    /// so it is neither copied into the encoding nor out of the received frame.
    Write {
        offset: u64,
        len: u32,
        #[serde(skip)]
        data: Bytes,
    },
    /// A discard; `mask` as in [`BlkRequest::Discard`].
    Discard { offset: u64, len: u64, mask: bool },
}

impl BlkOp {
    pub fn write(offset: u64, data: impl Into<Bytes>) -> BlkOp {
        let data = data.into();
        BlkOp::Write {
            offset,
            // A change carries at most MAX_IO bytes (checked where it is made and served).
            len: data.len() as u32,
            data,
        }
    }

    /// The byte range it changes.
    pub fn range(&self) -> (u64, u64) {
        match self {
            BlkOp::Write { offset, data, .. } => (*offset, data.len() as u64),
            BlkOp::Discard { offset, len, .. } => (*offset, *len),
        }
    }

    /// Payload bytes it carries.
    pub fn payload(&self) -> usize {
        match self {
            BlkOp::Write { data, .. } => data.len(),
            BlkOp::Discard { .. } => 0,
        }
    }
}

impl BlkRequest {
    /// The data sent after the encoded request (`transport::frame::encode_with`): a
    /// batch's writes' data, in order. Shares the buffers.
    pub fn tail(&self) -> Vec<Bytes> {
        match self {
            BlkRequest::Batch { ops, .. } => ops
                .iter()
                .filter_map(|op| match op {
                    BlkOp::Write { data, .. } => Some(data.clone()),
                    BlkOp::Discard { .. } => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Gives a decoded request the data that followed it in its frame (the inverse of
    /// [`BlkRequest::tail`], without copying); refuses a tail that is not exactly as long
    /// as the writes announce.
    pub fn attach(&mut self, mut tail: Bytes) -> Result<(), String> {
        if let BlkRequest::Batch { ops, .. } = self {
            for op in ops.iter_mut() {
                if let BlkOp::Write { offset, len, data } = op {
                    let len = *len as usize;
                    if len > tail.len() {
                        return Err(format!(
                            "the write at offset {offset} announces {len} bytes but only {} follow",
                            tail.len()
                        ));
                    }
                    *data = tail.split_to(len);
                }
            }
        }
        if tail.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} bytes follow the request that no write announces",
                tail.len()
            ))
        }
    }

    pub fn volume(&self) -> &str {
        match self {
            BlkRequest::Activate { volume, .. }
            | BlkRequest::Write { volume, .. }
            | BlkRequest::Read { volume, .. }
            | BlkRequest::Flush { volume, .. }
            | BlkRequest::Discard { volume, .. }
            | BlkRequest::Status { volume }
            | BlkRequest::Snapshot { volume, .. }
            | BlkRequest::DropSnapshot { volume, .. }
            | BlkRequest::SetSnapshots { volume, .. }
            | BlkRequest::ReadRaw { volume, .. }
            | BlkRequest::Batch { volume, .. }
            | BlkRequest::Dirty { volume }
            | BlkRequest::WriteRaw { volume, .. } => volume,
        }
    }

    /// The writer generation the request carries (all but `Status`).
    pub fn generation(&self) -> Option<u64> {
        match self {
            BlkRequest::Read { layer: Some(_), .. } => None,
            BlkRequest::Activate { generation, .. }
            | BlkRequest::Write { generation, .. }
            | BlkRequest::Read { generation, .. }
            | BlkRequest::Flush { generation, .. }
            | BlkRequest::Discard { generation, .. }
            | BlkRequest::Snapshot { generation, .. }
            | BlkRequest::DropSnapshot { generation, .. }
            | BlkRequest::SetSnapshots { generation, .. }
            | BlkRequest::Batch { generation, .. }
            | BlkRequest::WriteRaw { generation, .. } => Some(*generation),
            BlkRequest::Status { .. } | BlkRequest::ReadRaw { .. } | BlkRequest::Dirty { .. } => {
                None
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailKind {
    NoRegion,
    Corrupt,
    NoSpace,
    Invalid,
    Io,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BlkResponse {
    Done,
    /// Activation accepted; the region's generation before it.
    Activated {
        previous: u64,
    },
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Data of a read some of whose blocks lie below the region (zeros here): a clone
    /// reads those from its parent. `below` holds absolute block numbers.
    Partial {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        below: Vec<u64>,
    },
    Raw {
        #[serde(with = "serde_bytes")]
        states: Vec<u8>,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Extent numbers.
    Extents(Vec<u64>),
    Status {
        generation: u64,
        size: u64,
        allocated: u64,
        snapshots: Vec<String>,
    },
    /// The request's generation is older than the region's.
    Fenced {
        generation: u64,
    },
    Failed {
        kind: FailKind,
        message: String,
    },
}

impl BlkResponse {
    fn failed(e: &VolumeError) -> Self {
        let kind = match e {
            VolumeError::Corrupt { .. } => FailKind::Corrupt,
            VolumeError::NoSpace { .. } => FailKind::NoSpace,
            VolumeError::OutOfRange { .. }
            | VolumeError::Unaligned { .. }
            | VolumeError::Invalid(_)
            | VolumeError::ReadOnly => FailKind::Invalid,
            _ => FailKind::Io,
        };
        BlkResponse::Failed {
            kind,
            message: crate::telemetry::error_chain(e),
        }
    }
}

/// This node's regions, under `<data dir>/regions/<volume>/`.
pub struct ReplicaServer {
    root: PathBuf,
    regions: Mutex<HashMap<String, Arc<Region>>>,
}

impl ReplicaServer {
    pub fn new(root: &Path) -> Result<Arc<Self>, VolumeError> {
        std::fs::create_dir_all(root).map_err(|e| VolumeError::io("create", root, e))?;
        Ok(Arc::new(ReplicaServer {
            root: root.to_path_buf(),
            regions: Mutex::new(HashMap::new()),
        }))
    }

    fn dir(&self, volume: &str) -> Result<PathBuf, VolumeError> {
        if !valid_name(volume) {
            return Err(VolumeError::Invalid(format!(
                "{volume:?} is not a volume id"
            )));
        }
        Ok(self.root.join(volume))
    }

    /// Volumes with a region on this node.
    pub fn volumes(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("region.json").exists())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        out.sort();
        out
    }

    /// Creates this node's region of a volume (idempotent for the same size).
    pub fn create_region(
        &self,
        volume: &str,
        size: u64,
        extent_size: u64,
    ) -> Result<Arc<Region>, VolumeError> {
        let dir = self.dir(volume)?;
        let mut regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = regions.get(volume) {
            if r.size() < size {
                r.grow(size)?;
            }
            return Ok(r.clone());
        }
        let r = if dir.join("region.json").exists() {
            Region::open(&dir)?
        } else {
            Region::create(&dir, volume, size, extent_size)?
        };
        if r.size() < size {
            r.grow(size)?;
        }
        let r = Arc::new(r);
        regions.insert(volume.to_string(), r.clone());
        Ok(r)
    }

    /// Deletes this node's region of a volume and frees its space.
    pub fn delete_region(&self, volume: &str) -> Result<(), VolumeError> {
        let dir = self.dir(volume)?;
        self.regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(volume);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VolumeError::io("delete", &dir, e)),
        }
    }

    /// The open region of a volume, opened from disk on first use.
    pub fn region(&self, volume: &str) -> Result<Option<Arc<Region>>, VolumeError> {
        let dir = self.dir(volume)?;
        let mut regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = regions.get(volume) {
            return Ok(Some(r.clone()));
        }
        if !dir.join("region.json").exists() {
            return Ok(None);
        }
        let r = Arc::new(Region::open(&dir)?);
        regions.insert(volume.to_string(), r.clone());
        Ok(Some(r))
    }

    /// Whether `req` can be served in place on an async thread: small ([`small_enough`]), on a
    /// region already open, touching only extents that are open and dirty, without a
    /// snapshot to copy into. Anything that may sync, create an extent or open a region
    /// goes to a blocking thread. Never blocks.
    pub fn is_quick(&self, req: &BlkRequest) -> bool {
        if !small_enough(req) {
            return false;
        }
        let region = |volume: &str| {
            self.regions
                .try_lock()
                .ok()
                .and_then(|r| r.get(volume).cloned())
        };
        match req {
            BlkRequest::Status { .. } => true,
            BlkRequest::Write {
                volume,
                offset,
                data,
                ..
            } => region(volume).is_some_and(|r| r.is_hot(*offset, data.len() as u64)),
            BlkRequest::Read {
                volume,
                offset,
                len,
                layer: None,
                ..
            } => region(volume).is_some_and(|r| r.is_hot(*offset, u64::from(*len))),
            BlkRequest::Batch { volume, ops, .. } => region(volume).is_some_and(|r| {
                ops.iter().all(|op| match op {
                    BlkOp::Write { offset, len, .. } => r.is_hot(*offset, u64::from(*len)),
                    BlkOp::Discard { .. } => false,
                })
            }),
            _ => false,
        }
    }

    /// Handles one request (blocking: call from a blocking thread).
    pub fn handle(&self, req: &BlkRequest) -> BlkResponse {
        let volume = req.volume().to_string();
        let region = match self.region(&volume) {
            Ok(Some(r)) => r,
            Ok(None) => {
                return BlkResponse::Failed {
                    kind: FailKind::NoRegion,
                    message: format!("this node holds no replica of volume {volume}"),
                }
            }
            Err(e) => return BlkResponse::failed(&e),
        };
        let current = region.generation();
        if req.generation().is_some_and(|g| g < current) {
            return BlkResponse::Fenced {
                generation: current,
            };
        }
        let r = match *req {
            BlkRequest::Activate { generation, .. } => region
                .set_generation(generation)
                .map(|_| BlkResponse::Activated { previous: current }),
            BlkRequest::Write {
                offset, ref data, ..
            } => region.write_at(offset, data).map(|_| BlkResponse::Done),
            BlkRequest::Read {
                offset,
                len,
                ref layer,
                ..
            } => {
                if len as usize > MAX_IO {
                    return BlkResponse::failed(&VolumeError::Invalid(format!(
                        "read of {len} bytes is larger than {MAX_IO}"
                    )));
                }
                region
                    .read_layer(layer.as_deref(), offset, u64::from(len))
                    .map(|r| {
                        if r.below.is_empty() {
                            BlkResponse::Data(r.data)
                        } else {
                            BlkResponse::Partial {
                                data: r.data,
                                below: r.below,
                            }
                        }
                    })
            }
            BlkRequest::Batch { ref ops, .. } => {
                if ops.len() > MAX_BATCH_OPS {
                    return BlkResponse::failed(&VolumeError::Invalid(format!(
                        "a batch of {} changes is larger than {MAX_BATCH_OPS}",
                        ops.len()
                    )));
                }
                ops.iter()
                    .try_for_each(|op| match op {
                        BlkOp::Write { offset, data, .. } => region.write_at(*offset, data),
                        BlkOp::Discard { offset, len, mask } => {
                            region.discard_masking(*offset, *len, *mask)
                        }
                    })
                    .map(|_| BlkResponse::Done)
            }
            BlkRequest::Flush { .. } => region.flush().map(|_| BlkResponse::Done),
            BlkRequest::Dirty { .. } => region.live().dirty_extents().map(BlkResponse::Extents),
            BlkRequest::Discard {
                offset, len, mask, ..
            } => region
                .discard_masking(offset, len, mask)
                .map(|_| BlkResponse::Done),
            BlkRequest::Status { .. } => Ok(BlkResponse::Status {
                generation: current,
                size: region.size(),
                allocated: region.allocated().unwrap_or(0),
                snapshots: region.snapshots(),
            }),
            BlkRequest::Snapshot { ref name, .. } => {
                region.snapshot(name).map(|_| BlkResponse::Done)
            }
            BlkRequest::DropSnapshot { ref name, .. } => {
                region.drop_snapshot(name).map(|_| BlkResponse::Done)
            }
            BlkRequest::SetSnapshots { ref names, .. } => {
                region.set_snapshots(names).map(|_| BlkResponse::Done)
            }
            BlkRequest::ReadRaw {
                ref layer,
                first,
                count,
                ..
            } => {
                if u64::from(count) * BLOCK > MAX_IO as u64 {
                    return BlkResponse::failed(&VolumeError::Invalid(format!(
                        "raw read of {count} blocks is larger than {MAX_IO} bytes"
                    )));
                }
                region
                    .read_raw(layer.as_deref(), first, u64::from(count))
                    .map(|(data, states)| BlkResponse::Raw {
                        data: compact(&states, &data),
                        states: states.iter().map(|s| *s as u8).collect(),
                    })
            }
            BlkRequest::WriteRaw {
                ref layer,
                first,
                ref states,
                ref data,
                ..
            } => expand(states, data).and_then(|(st, full)| {
                region
                    .write_raw(layer.as_deref(), first, &st, &full)
                    .map(|_| BlkResponse::Done)
            }),
        };
        r.unwrap_or_else(|e| BlkResponse::failed(&e))
    }
}

/// Raw block data on the wire: only the blocks that hold data, back to back.
fn compact(states: &[BlockState], data: &[u8]) -> Vec<u8> {
    let b = BLOCK as usize;
    states
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == BlockState::Data)
        .flat_map(|(i, _)| data[i * b..(i + 1) * b].iter().copied())
        .collect()
}

/// The inverse of [`compact`]: states decoded, data back to one block per state.
fn expand(codes: &[u8], data: &[u8]) -> Result<(Vec<BlockState>, Vec<u8>), VolumeError> {
    let states = codes
        .iter()
        .map(|c| BlockState::from_code(*c))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| VolumeError::Invalid("unknown block state code".into()))?;
    let b = BLOCK as usize;
    let with_data = states.iter().filter(|s| **s == BlockState::Data).count();
    if data.len() != with_data * b {
        return Err(VolumeError::Invalid(format!(
            "{} bytes of data for {with_data} blocks",
            data.len()
        )));
    }
    let mut full = vec![0u8; states.len() * b];
    let mut at = 0;
    for (i, s) in states.iter().enumerate() {
        if *s == BlockState::Data {
            full[i * b..(i + 1) * b].copy_from_slice(&data[at..at + b]);
            at += b;
        }
    }
    Ok((states, full))
}

/// Whether a request is small enough to be served on the async runtime's thread (writes and
/// reads of the page cache: tens of microseconds), if its region allows
/// ([`ReplicaServer::is_quick`]).
fn small_enough(req: &BlkRequest) -> bool {
    match req {
        BlkRequest::Write { data, .. } => data.len() <= 64 << 10,
        BlkRequest::Batch { ops, .. } => {
            ops.iter().map(BlkOp::payload).sum::<usize>() <= 256 << 10
                && ops.iter().all(|op| matches!(op, BlkOp::Write { .. }))
        }
        BlkRequest::Read { len, .. } => *len <= 64 << 10,
        BlkRequest::Status { .. } => true,
        _ => false,
    }
}

/// The transport service: one request frame in, one response frame out, per stream.
pub struct BlkService(pub Arc<ReplicaServer>);

#[async_trait::async_trait]
impl Service for BlkService {
    async fn handle_stream(
        &self,
        peer: Peer,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let req = read_frame_with_tail::<BlkRequest>(&mut recv, MAX_IO + 4096)
            .await
            .map_err(|e| e.to_string())
            .and_then(|(mut req, tail)| req.attach(tail).map(|_| req));
        let resp = match req {
            // Small reads and writes of open, dirty extents go to the page cache in
            // microseconds: done in place. Anything that may sync, create an extent, copy
            // into a snapshot or open a region waits on the disk: a blocking thread.
            Ok(req) if self.0.is_quick(&req) => self.0.handle(&req),
            Ok(req) => {
                let server = self.0.clone();
                tokio::task::spawn_blocking(move || server.handle(&req))
                    .await
                    .unwrap_or_else(|e| BlkResponse::Failed {
                        kind: FailKind::Io,
                        message: format!("request handler failed: {e}"),
                    })
            }
            Err(e) => {
                tracing::warn!(peer = ?peer.node, error = %e, "bad block request");
                BlkResponse::Failed {
                    kind: FailKind::Invalid,
                    message: e.to_string(),
                }
            }
        };
        if write_frame(&mut send, &resp).await.is_ok() {
            let _ = send.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> (tempfile::TempDir, Arc<ReplicaServer>) {
        let d = tempfile::tempdir().unwrap();
        let s = ReplicaServer::new(&d.path().join("regions")).unwrap();
        (d, s)
    }

    fn write(volume: &str, generation: u64, offset: u64, byte: u8) -> BlkRequest {
        BlkRequest::Write {
            volume: volume.into(),
            generation,
            offset,
            data: vec![byte; 4096],
        }
    }

    #[test]
    fn a_batch_s_data_travels_after_the_request_and_is_given_back_in_order() {
        let req = BlkRequest::Batch {
            volume: "v1".into(),
            generation: 1,
            ops: vec![
                BlkOp::write(0, vec![1; 4096]),
                BlkOp::Discard {
                    offset: 4096,
                    len: 4096,
                    mask: false,
                },
                BlkOp::write(8192, vec![2; 512]),
            ],
        };
        let head = postcard::to_stdvec(&req).unwrap();
        assert!(head.len() < 64, "the data is not in the encoding");
        let tail = req.tail().concat();
        assert_eq!(tail.len(), 4096 + 512);
        let decode = || postcard::from_bytes::<BlkRequest>(&head).unwrap();
        let mut back = decode();
        back.attach(Bytes::from(tail.clone())).unwrap();
        let BlkRequest::Batch { ops, .. } = back else {
            panic!("not a batch")
        };
        let writes: Vec<(u64, Vec<u8>)> = ops
            .iter()
            .filter_map(|op| match op {
                BlkOp::Write { offset, data, .. } => Some((*offset, data.to_vec())),
                BlkOp::Discard { .. } => None,
            })
            .collect();
        assert_eq!(writes, vec![(0, vec![1; 4096]), (8192, vec![2; 512])]);
        // A tail too short or too long is refused, naming what is wrong.
        let e = decode()
            .attach(Bytes::from(tail[..4000].to_vec()))
            .unwrap_err();
        assert!(
            e.contains("announces 4096 bytes but only 4000 follow"),
            "{e}"
        );
        let mut long = tail.clone();
        long.push(0);
        let e = decode().attach(Bytes::from(long)).unwrap_err();
        assert!(e.contains("1 bytes follow the request"), "{e}");
    }

    #[test]
    fn only_io_that_cannot_touch_the_disk_is_served_in_place() {
        let (d, s) = server();
        let w = |offset| write("v1", 1, offset, 5);
        assert!(!s.is_quick(&w(0)), "no region open yet");
        s.create_region("v1", 4 << 20, 1 << 20).unwrap();
        s.handle(&BlkRequest::Activate {
            volume: "v1".into(),
            generation: 1,
        });
        assert!(!s.is_quick(&w(0)), "the extent does not exist yet");
        assert!(matches!(s.handle(&w(0)), BlkResponse::Done));
        assert!(s.is_quick(&w(4096)), "same extent, open and dirty");
        assert!(!s.is_quick(&w(1 << 20)), "another extent, not created");
        let read = |offset, layer: Option<&str>| BlkRequest::Read {
            volume: "v1".into(),
            generation: 1,
            layer: layer.map(str::to_string),
            offset,
            len: 4096,
        };
        assert!(s.is_quick(&read(0, None)));
        // After a flush the extent is clean: the next write syncs its dirty flag.
        s.handle(&BlkRequest::Flush {
            volume: "v1".into(),
            generation: 1,
        });
        assert!(!s.is_quick(&w(0)), "clean extent");
        assert!(matches!(s.handle(&w(0)), BlkResponse::Done));
        assert!(s.is_quick(&w(0)));
        // With a snapshot, a write may copy the old block first.
        s.handle(&BlkRequest::Snapshot {
            volume: "v1".into(),
            generation: 1,
            name: "s1".into(),
        });
        assert!(!s.is_quick(&w(0)), "copy-on-write into the snapshot");
        assert!(!s.is_quick(&read(0, Some("s1"))));
        // Big requests never.
        let big = BlkRequest::Write {
            volume: "v1".into(),
            generation: 1,
            offset: 0,
            data: vec![0; 128 << 10],
        };
        assert!(!s.is_quick(&big));
        drop(d);
    }

    #[test]
    fn an_older_generation_is_fenced_and_changes_nothing() {
        let (_d, s) = server();
        s.create_region("v1", 1 << 20, 1 << 20).unwrap();
        assert!(matches!(
            s.handle(&BlkRequest::Activate {
                volume: "v1".into(),
                generation: 2
            }),
            BlkResponse::Activated { previous: 0 }
        ));
        assert!(matches!(s.handle(&write("v1", 2, 0, 7)), BlkResponse::Done));
        // A new writer takes over with generation 3; the old one is refused from now on.
        assert!(matches!(
            s.handle(&BlkRequest::Activate {
                volume: "v1".into(),
                generation: 3
            }),
            BlkResponse::Activated { previous: 2 }
        ));
        assert!(matches!(
            s.handle(&write("v1", 2, 0, 9)),
            BlkResponse::Fenced { generation: 3 }
        ));
        assert!(matches!(
            s.handle(&BlkRequest::Activate {
                volume: "v1".into(),
                generation: 2
            }),
            BlkResponse::Fenced { generation: 3 }
        ));
        match s.handle(&BlkRequest::Read {
            volume: "v1".into(),
            generation: 3,
            layer: None,
            offset: 0,
            len: 4096,
        }) {
            BlkResponse::Data(d) => assert_eq!(d, vec![7u8; 4096]),
            other => panic!("{other:?}"),
        }
        // The generation survives a restart of the server.
        drop(s);
        let s2 = ReplicaServer::new(&_d.path().join("regions")).unwrap();
        assert!(matches!(
            s2.handle(&write("v1", 2, 0, 9)),
            BlkResponse::Fenced { generation: 3 }
        ));
    }

    #[test]
    fn unknown_volumes_and_bad_requests_get_clear_failures() {
        let (_d, s) = server();
        match s.handle(&write("nope", 1, 0, 1)) {
            BlkResponse::Failed { kind, message } => {
                assert_eq!(kind, FailKind::NoRegion);
                assert!(message.contains("nope"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match s.handle(&write("../etc", 1, 0, 1)) {
            BlkResponse::Failed { kind, .. } => assert_eq!(kind, FailKind::Invalid),
            other => panic!("{other:?}"),
        }
        s.create_region("v2", 1 << 20, 1 << 20).unwrap();
        match s.handle(&write("v2", 1, 1 << 20, 1)) {
            BlkResponse::Failed { kind, message } => {
                assert_eq!(kind, FailKind::Invalid);
                assert!(message.contains("outside the volume"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.volumes(), vec!["v2".to_string()]);
        s.delete_region("v2").unwrap();
        assert!(s.volumes().is_empty());
        s.delete_region("v2").unwrap();
    }
}
