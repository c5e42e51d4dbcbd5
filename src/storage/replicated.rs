//! The replica client ("upstairs"): a [`Volume`] whose every write goes to all live
//! replicas over the node-to-node transport and completes once they all hold it.
//!
//! - Reads go to the local replica first, then the others; a block that fails its checksum
//!   on one replica is served from another and the bad copy is rewritten (repair).
//! - A replica that does not answer is marked faulted; I/O goes on with the others (a
//!   majority of the replica set from 3 replicas up, one otherwise) and the extents written
//!   meanwhile are remembered, so that when
//!   the replica answers again only those extents are copied to it ([`ReplicatedVolume::resync`]).
//! - Every request carries the writer's generation; a replica that has seen a newer one
//!   answers `Fenced`, and this volume then refuses all further I/O.
//! - A flush is sent to every live replica after the writes it covers completed.
//!
//! The methods are blocking (the `Volume` contract); they run the transport calls on a
//! tokio runtime handle and must not be called from inside that runtime's async tasks.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use super::extent::BLOCK;
use super::replica::{BlkOp, BlkRequest, BlkResponse, FailKind, ReplicaServer, MAX_IO};
use super::{check_range, Volume, VolumeError, WriteDone};
use crate::ids::NodeId;
use crate::transport::frame::{encode_with, Encoded};
use crate::transport::{Class, Transport};

/// Where one replica lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaTarget {
    pub node: NodeId,
    pub addr: SocketAddr,
    /// False for a replica known to have missed writes: it starts faulted, with every
    /// extent to copy before it serves again.
    pub in_sync: bool,
}

/// What the client knows about one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaHealth {
    pub node: NodeId,
    pub live: bool,
    /// Why it is not live.
    pub reason: String,
    /// Extents written while it was not live (to copy when it returns).
    pub stale_extents: usize,
}

struct Replica {
    target: ReplicaTarget,
    live: bool,
    reason: String,
    stale: BTreeSet<u64>,
}

/// The replica client: see the module documentation. Writes and discards go through
/// its [`pipeline`], started with the first one.
pub struct ReplicatedVolume {
    core: Arc<Core>,
    pipeline: OnceLock<pipeline::Pipeline>,
}

impl std::ops::Deref for ReplicatedVolume {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

/// What a replicated volume's callers and its write pipeline share.
pub struct Core {
    volume: String,
    /// Bytes; only grows ([`ReplicatedVolume::grow`]).
    size: AtomicU64,
    extent_size: u64,
    generation: u64,
    local: NodeId,
    replicas: Mutex<Vec<Replica>>,
    transport: Arc<Transport>,
    /// This node's replica server: the local replica is called directly, not through
    /// the transport.
    local_server: Option<Arc<ReplicaServer>>,
    rt: tokio::runtime::Handle,
    timeout: Duration,
    /// Writes share it; a repair or a resync copy holds it alone, so no write can slip
    /// between reading the good copy and writing it to another replica.
    order: RwLock<()>,
    fenced: AtomicBool,
    resynced_bytes: AtomicU64,
    repaired_blocks: AtomicU64,
    /// A snapshot this client reads (read-only), or None for the live volume.
    layer: Option<String>,
    /// Where blocks below every layer of the regions come from: the snapshot a clone was
    /// made from (None: zeros).
    parent: OnceLock<Arc<dyn Volume>>,
    /// Serializes the read-modify-write of partial blocks of a clone.
    rmw: Mutex<()>,
}

/// What every client is made from.
struct Parts<'a> {
    transport: Arc<Transport>,
    rt: tokio::runtime::Handle,
    local: NodeId,
    volume: &'a str,
    size: u64,
    extent_size: u64,
    local_server: Option<Arc<ReplicaServer>>,
}

/// Per-request timeout; a replica slower than this is treated as gone.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

enum Outcome {
    Ok(BlkResponse),
    /// The replica could not be reached: mark it faulted.
    Lost(String),
    Fenced(u64),
    Failed(FailKind, String),
}

impl ReplicatedVolume {
    /// Attaches as writer `generation`: activates every replica (those that do not answer
    /// start faulted). Fails if none answers or if a newer writer holds the volume.
    #[allow(clippy::too_many_arguments)]
    pub fn attach(
        transport: Arc<Transport>,
        rt: tokio::runtime::Handle,
        local: NodeId,
        volume: &str,
        size: u64,
        extent_size: u64,
        generation: u64,
        targets: &[ReplicaTarget],
        local_server: Option<Arc<ReplicaServer>>,
    ) -> Result<Self, VolumeError> {
        let v = Core::client(
            Parts {
                transport,
                rt,
                local,
                volume,
                size,
                extent_size,
                local_server,
            },
            generation,
            None,
            targets,
            "it missed writes under an earlier writer",
        );
        let req = BlkRequest::Activate {
            volume: volume.to_string(),
            generation,
        };
        let all: Vec<ReplicaTarget> = targets.iter().filter(|t| t.in_sync).copied().collect();
        let results = v.call_many(&all, req);
        let mut seen: Vec<(NodeId, u64)> = Vec::new();
        for (t, r) in all.iter().zip(results) {
            match r {
                Outcome::Ok(BlkResponse::Activated { previous }) => seen.push((t.node, previous)),
                Outcome::Ok(_) => {}
                Outcome::Fenced(current) => return Err(v.fence(current)),
                Outcome::Lost(why) => v.fault(t.node, &why, None),
                Outcome::Failed(_, why) => v.fault(t.node, &why, None),
            }
        }
        // A replica that never saw the generation another replica saw was away for a whole
        // earlier writer's term (and that writer may have crashed before recording it
        // faulted): it starts faulted, with everything to copy.
        let newest = seen.iter().map(|(_, g)| *g).max().unwrap_or(0);
        for (node, previous) in seen {
            if previous < newest {
                v.fault(
                    node,
                    &format!("it missed writer generation {newest} (it had seen {previous})"),
                    Some((0, v.extent_count().saturating_sub(1))),
                );
            }
        }
        v.live_targets()?;
        v.reconcile()?;
        Ok(Self::new(v))
    }

    /// A read-only client of snapshot `layer` of a volume: no activation (snapshots never
    /// change, any generation may read them), no repair, no resync.
    #[allow(clippy::too_many_arguments)]
    pub fn snapshot_reader(
        transport: Arc<Transport>,
        rt: tokio::runtime::Handle,
        local: NodeId,
        volume: &str,
        layer: &str,
        size: u64,
        extent_size: u64,
        targets: &[ReplicaTarget],
        local_server: Option<Arc<ReplicaServer>>,
    ) -> Self {
        Self::new(Core::client(
            Parts {
                transport,
                rt,
                local,
                volume,
                size,
                extent_size,
                local_server,
            },
            0,
            Some(layer.to_string()),
            targets,
            "it is being rebuilt",
        ))
    }

    fn new(core: Core) -> Self {
        ReplicatedVolume {
            core: Arc::new(core),
            pipeline: OnceLock::new(),
        }
    }

    /// Sets where blocks below the regions are read from (a clone's parent snapshot).
    pub fn with_parent(self, parent: Option<Arc<dyn Volume>>) -> Self {
        if let Some(p) = parent {
            let _ = self.core.parent.set(p);
        }
        self
    }

    /// Sets the per-request timeout (tests: a dead replica is noticed sooner).
    #[cfg(test)]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        if let Some(core) = Arc::get_mut(&mut self.core) {
            core.timeout = timeout;
        }
        self
    }

    fn pipeline(&self) -> &pipeline::Pipeline {
        self.pipeline
            .get_or_init(|| pipeline::Pipeline::start(self.core.clone()))
    }
}

impl Core {
    /// A client; replicas not in sync start faulted (`why`), with every extent stale
    /// for a writer (a reader of a snapshot never copies).
    fn client(
        p: Parts<'_>,
        generation: u64,
        layer: Option<String>,
        targets: &[ReplicaTarget],
        why: &str,
    ) -> Self {
        let extents = p.size.div_ceil(p.extent_size);
        let writer = layer.is_none();
        Core {
            volume: p.volume.to_string(),
            size: AtomicU64::new(p.size),
            extent_size: p.extent_size,
            generation,
            local: p.local,
            replicas: Mutex::new(
                targets
                    .iter()
                    .map(|t| Replica {
                        target: *t,
                        live: t.in_sync,
                        reason: if t.in_sync { String::new() } else { why.into() },
                        stale: if t.in_sync || !writer {
                            BTreeSet::new()
                        } else {
                            (0..extents).collect()
                        },
                    })
                    .collect(),
            ),
            transport: p.transport,
            local_server: p.local_server,
            rt: p.rt,
            timeout: IO_TIMEOUT,
            order: RwLock::new(()),
            fenced: AtomicBool::new(false),
            resynced_bytes: AtomicU64::new(0),
            repaired_blocks: AtomicU64::new(0),
            layer,
            parent: OnceLock::new(),
            rmw: Mutex::new(()),
        }
    }

    pub fn health(&self) -> Vec<ReplicaHealth> {
        self.lock()
            .iter()
            .map(|r| ReplicaHealth {
                node: r.target.node,
                live: r.live,
                reason: r.reason.clone(),
                stale_extents: r.stale.len(),
            })
            .collect()
    }

    /// Bytes copied to returning replicas so far.
    pub fn resynced_bytes(&self) -> u64 {
        self.resynced_bytes.load(Ordering::Relaxed)
    }

    /// Blocks rewritten on a replica after they failed their checksum there.
    pub fn repaired_blocks(&self) -> u64 {
        self.repaired_blocks.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Replica>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fence(&self, current: u64) -> VolumeError {
        self.fenced.store(true, Ordering::SeqCst);
        VolumeError::Fenced {
            volume: self.volume.clone(),
            generation: self.generation,
            current,
        }
    }

    fn check_fenced(&self) -> Result<(), VolumeError> {
        if self.fenced.load(Ordering::SeqCst) {
            return Err(VolumeError::Fenced {
                volume: self.volume.clone(),
                generation: self.generation,
                current: self.generation + 1,
            });
        }
        Ok(())
    }

    /// Marks a replica faulted; `extents` written without it are remembered.
    fn fault(&self, node: NodeId, why: &str, extents: Option<(u64, u64)>) {
        let mut reps = self.lock();
        if let Some(r) = reps.iter_mut().find(|r| r.target.node == node) {
            if r.live {
                tracing::warn!(volume = %self.volume, node = %node, reason = why, "replica faulted");
                r.live = false;
                r.reason = why.to_string();
            }
            if let Some((first, last)) = extents {
                r.stale.extend(first..=last);
            }
        }
    }

    /// Remembers the extents of `ranges` (offset, length) as written while a replica was
    /// away: on `node`, or on every replica that is not live.
    fn note_stale_on(&self, node: Option<NodeId>, ranges: &[(u64, u64)]) {
        let mut reps = self.lock();
        for r in reps
            .iter_mut()
            .filter(|r| node.map_or(!r.live, |n| r.target.node == n))
        {
            for &(offset, len) in ranges.iter().filter(|(_, len)| *len > 0) {
                let (first, last) = (
                    offset / self.extent_size,
                    (offset + len - 1) / self.extent_size,
                );
                r.stale.extend(first..=last);
            }
        }
    }

    /// Replicas that must hold a write before it completes: a majority of the replica set
    /// from 3 replicas up, so that a writer cut off from the others (whose replicas a new
    /// writer has taken over) cannot complete writes on its local copy alone. With 1 or 2
    /// replicas, one live copy suffices (a 2-replica volume favours availability).
    fn write_quorum(&self) -> usize {
        let n = self.lock().len();
        if n >= 3 {
            n / 2 + 1
        } else {
            1
        }
    }

    /// Live replicas, local first.
    fn live_targets(&self) -> Result<Vec<ReplicaTarget>, VolumeError> {
        let reps = self.lock();
        let mut live: Vec<ReplicaTarget> =
            reps.iter().filter(|r| r.live).map(|r| r.target).collect();
        if live.is_empty() {
            let why = reps
                .iter()
                .map(|r| format!("{}: {}", r.target.node, r.reason))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(VolumeError::Unavailable {
                volume: self.volume.clone(),
                detail: if why.is_empty() {
                    "it has no replicas".into()
                } else {
                    why
                },
            });
        }
        live.sort_by_key(|t| t.node != self.local);
        Ok(live)
    }

    async fn call_one(
        &self,
        local: Option<&ReplicaServer>,
        t: ReplicaTarget,
        req: &BlkRequest,
        frame: Option<Encoded>,
    ) -> Outcome {
        // Every caller runs the calls on its own thread (a blocking thread or the write
        // pipeline's), never on a runtime worker: the local replica is served in place.
        let answer = match (local, frame) {
            (Some(server), _) => Ok(server.handle(req)),
            (None, Some(frame)) => self
                .transport
                .call_encoded::<BlkResponse>(t.node, t.addr, Class::Blk, "blk", frame, self.timeout)
                .await
                .map_err(|e| crate::telemetry::error_chain(&e)),
            (None, None) => Err("the request could not be encoded".to_string()),
        };
        match answer {
            Ok(BlkResponse::Fenced { generation }) => Outcome::Fenced(generation),
            Ok(BlkResponse::Failed { kind, message }) => Outcome::Failed(kind, message),
            Ok(r) => Outcome::Ok(r),
            Err(e) => Outcome::Lost(e),
        }
    }

    /// Calls every target with one shared copy of the request; the outcomes in the order
    /// of `targets`. The calls run together on the calling thread (no task per replica),
    /// the remote ones first, so their requests are on the way while the local replica
    /// is served in place.
    async fn call_all(&self, targets: &[ReplicaTarget], req: BlkRequest) -> Vec<Outcome> {
        let is_local = |t: &ReplicaTarget| t.node == self.local && self.local_server.is_some();
        let mut order: Vec<usize> = (0..targets.len()).collect();
        order.sort_by_key(|&i| is_local(&targets[i]));
        // Encoded once for every remote replica.
        let frame = if targets.iter().all(is_local) {
            None
        } else {
            match encode_with(&req, req.tail()) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::error!(volume = %self.volume, error = %e, "cannot encode a block request");
                    None
                }
            }
        };
        let req = &req;
        let futs = order.iter().map(|&i| {
            let t = targets[i];
            let local = self.local_server.as_deref().filter(|_| is_local(&t));
            self.call_one(local, t, req, frame.clone())
        });
        let got = futures::future::join_all(futs).await;
        let mut out: Vec<Option<Outcome>> = (0..targets.len()).map(|_| None).collect();
        for (i, o) in order.into_iter().zip(got) {
            out[i] = Some(o);
        }
        out.into_iter()
            .map(|o| o.unwrap_or(Outcome::Lost("no answer".into())))
            .collect()
    }

    fn call_many(&self, targets: &[ReplicaTarget], req: BlkRequest) -> Vec<Outcome> {
        self.rt.block_on(self.call_all(targets, req))
    }

    fn call(&self, t: ReplicaTarget, req: BlkRequest) -> Outcome {
        self.call_many(&[t], req)
            .pop()
            .unwrap_or(Outcome::Lost("no answer".into()))
    }

    /// Sends a mutating request to every live replica; completes when all answered.
    fn mutate(&self, req: BlkRequest, offset: u64, len: u64) -> Result<(), VolumeError> {
        self.rt.block_on(self.mutate_async(req, &[(offset, len)]))
    }

    /// [`Core::mutate`] for a request that changes the byte `ranges` (offset, length).
    async fn mutate_async(
        &self,
        req: BlkRequest,
        ranges: &[(u64, u64)],
    ) -> Result<(), VolumeError> {
        self.check_fenced()?;
        let targets = self.live_targets()?;
        let results = self.call_all(&targets, req).await;
        let mut ok = 0;
        let mut first_err = None;
        for (t, r) in targets.iter().zip(results) {
            match r {
                Outcome::Ok(_) => ok += 1,
                Outcome::Fenced(current) => return Err(self.fence(current)),
                Outcome::Lost(why) => {
                    self.fault(t.node, &why, None);
                    self.note_stale_on(Some(t.node), ranges);
                }
                Outcome::Failed(kind, message) => {
                    // The request itself is wrong or the replica's disk refused it: the
                    // writer hears why, and the write is not acknowledged.
                    first_err.get_or_insert((t.node, kind, message));
                }
            }
        }
        if let Some((node, kind, message)) = first_err {
            return Err(match kind {
                FailKind::NoSpace => VolumeError::NoSpace {
                    what: format!("volume {} on node {node}", self.volume),
                    detail: message,
                },
                _ => VolumeError::Invalid(format!("replica on node {node}: {message}")),
            });
        }
        let quorum = self.write_quorum();
        if ok < quorum {
            // Some replicas may hold it: the absent ones must get those extents back.
            self.note_stale_on(None, ranges);
            let why = self
                .lock()
                .iter()
                .filter(|r| !r.live)
                .map(|r| format!("{}: {}", r.target.node, r.reason))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(VolumeError::Unavailable {
                volume: self.volume.clone(),
                detail: format!(
                    "only {ok} of {} replicas took the write, {quorum} needed ({why})",
                    self.lock().len()
                ),
            });
        }
        self.note_stale_on(None, ranges);
        Ok(())
    }

    /// Reads `[offset, offset+len)` from the first replica that has it intact; also returns
    /// the replicas whose copy failed its checksum (to repair once the read lock is released).
    fn read_range(
        &self,
        offset: u64,
        len: usize,
    ) -> Result<(Vec<u8>, Vec<ReplicaTarget>), VolumeError> {
        self.check_fenced()?;
        let req = BlkRequest::Read {
            volume: self.volume.clone(),
            generation: self.generation,
            layer: self.layer.clone(),
            offset,
            len: len as u32,
        };
        let mut corrupt = Vec::new();
        let mut last_err = None;
        for t in self.live_targets()? {
            match self.call(t, req.clone()) {
                Outcome::Ok(BlkResponse::Data(d)) if d.len() == len => return Ok((d, corrupt)),
                Outcome::Ok(BlkResponse::Partial { mut data, below }) if data.len() == len => {
                    self.fill_below(offset, &mut data, &below)?;
                    return Ok((data, corrupt));
                }
                Outcome::Ok(other) => {
                    last_err = Some(format!("unexpected answer {other:?}"));
                }
                Outcome::Fenced(current) => return Err(self.fence(current)),
                Outcome::Lost(why) => {
                    self.fault(t.node, &why, None);
                    last_err = Some(why);
                }
                Outcome::Failed(FailKind::Corrupt, message) => {
                    tracing::warn!(volume = %self.volume, node = %t.node, %message, "bad copy; reading another replica");
                    corrupt.push(t);
                    last_err = Some(message);
                }
                Outcome::Failed(kind, message) => {
                    // A replica that missed a snapshot answers Invalid for it: try the next.
                    if kind == FailKind::Invalid && self.layer.is_none() {
                        return Err(VolumeError::Invalid(message));
                    }
                    last_err = Some(message);
                }
            }
        }
        Err(VolumeError::Unavailable {
            volume: self.volume.clone(),
            detail: format!(
                "no replica could serve {len} bytes at {offset}: {}",
                last_err.unwrap_or_default()
            ),
        })
    }

    /// Reads the blocks of `[offset, offset + data.len())` that lie below the regions
    /// (`below`: absolute block numbers) from the parent; zeros without one.
    fn fill_below(&self, offset: u64, data: &mut [u8], below: &[u64]) -> Result<(), VolumeError> {
        let Some(parent) = self.parent.get() else {
            return Ok(());
        };
        let end = offset + data.len() as u64;
        let psize = parent.size();
        let mut i = 0;
        while i < below.len() {
            let mut j = i + 1;
            while j < below.len() && below[j] == below[j - 1] + 1 {
                j += 1;
            }
            // The run of blocks, clipped to the request and to the parent's size (a clone
            // may be bigger than its parent: the rest reads as zeros).
            let from = (below[i] * BLOCK).max(offset);
            let to = ((below[j - 1] + 1) * BLOCK).min(end).min(psize.max(from));
            if to > from {
                let at = (from - offset) as usize;
                parent.read_at(from, &mut data[at..at + (to - from) as usize])?;
            }
            i = j;
        }
        Ok(())
    }

    /// Takes a snapshot named `name` of the volume at this point: every write before it
    /// has completed, none after it has started, and every live replica took it. A replica
    /// that did not is faulted and gets the snapshot when it is resynced.
    pub fn snapshot(&self, name: &str) -> Result<(), VolumeError> {
        self.writable()?;
        let _x = self.order.write().unwrap_or_else(|p| p.into_inner());
        let flush = BlkRequest::Flush {
            volume: self.volume.clone(),
            generation: self.generation,
        };
        self.mutate(flush, 0, 0)?;
        let req = BlkRequest::Snapshot {
            volume: self.volume.clone(),
            generation: self.generation,
            name: name.to_string(),
        };
        self.mutate(req, 0, 0)
    }

    /// Deletes a snapshot on every live replica (the others drop it when resynced).
    pub fn drop_snapshot(&self, name: &str) -> Result<(), VolumeError> {
        self.writable()?;
        let _o = self.order.read().unwrap_or_else(|p| p.into_inner());
        let req = BlkRequest::DropSnapshot {
            volume: self.volume.clone(),
            generation: self.generation,
            name: name.to_string(),
        };
        self.mutate(req, 0, 0)
    }

    fn writable(&self) -> Result<(), VolumeError> {
        if self.layer.is_some() {
            return Err(VolumeError::ReadOnly);
        }
        Ok(())
    }

    /// Bytes (only grows).
    fn size(&self) -> u64 {
        self.size.load(Ordering::SeqCst)
    }

    /// Extents in the volume (for progress figures).
    pub fn extent_count(&self) -> u64 {
        self.size().div_ceil(self.extent_size)
    }
}

impl Volume for ReplicatedVolume {
    fn size(&self) -> u64 {
        self.size.load(Ordering::SeqCst)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        check_range("read", offset, buf.len() as u64, self.size())?;
        let mut repairs = Vec::new();
        {
            let _o = self.order.read().unwrap_or_else(|p| p.into_inner());
            let mut done = 0;
            while done < buf.len() {
                let n = (buf.len() - done).min(MAX_IO);
                let (d, bad) = self.read_range(offset + done as u64, n)?;
                if !bad.is_empty() {
                    repairs.push((bad, offset + done as u64, n));
                }
                buf[done..done + n].copy_from_slice(&d);
                done += n;
            }
        }
        for (bad, off, n) in repairs {
            self.repair(&bad, off, n);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), VolumeError> {
        self.writable()?;
        check_range("write", offset, data.len() as u64, self.size())?;
        let end = offset + data.len() as u64;
        if self.parent.get().is_some()
            && !data.is_empty()
            && (!offset.is_multiple_of(BLOCK) || !end.is_multiple_of(BLOCK))
        {
            // A clone's partial block may lie below it (in the parent): the region cannot
            // merge the write with what it does not hold, so whole blocks are written.
            let _m = self.rmw.lock().unwrap_or_else(|p| p.into_inner());
            let from = offset / BLOCK * BLOCK;
            let to = end.div_ceil(BLOCK).saturating_mul(BLOCK).min(self.size());
            let mut whole = vec![0u8; (to - from) as usize];
            self.read_at(from, &mut whole)?;
            let at = (offset - from) as usize;
            whole[at..at + data.len()].copy_from_slice(data);
            return self.write_whole(from, &whole);
        }
        self.write_whole(offset, data)
    }

    fn flush(&self) -> Result<(), VolumeError> {
        if self.layer.is_some() {
            return Ok(());
        }
        let _o = self.order.read().unwrap_or_else(|p| p.into_inner());
        let req = BlkRequest::Flush {
            volume: self.volume.clone(),
            generation: self.generation,
        };
        self.mutate(req, 0, 0)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        self.writable()?;
        check_range("discard", offset, len, self.size())?;
        let (offset, len) = if self.parent.get().is_some() {
            // A clone zeroes partial blocks here (merging with the parent's content);
            // the region discards the whole ones.
            let from = offset.div_ceil(BLOCK) * BLOCK;
            let to = ((offset + len) / BLOCK * BLOCK).max(from);
            if from > offset {
                let head = (from.min(offset + len) - offset) as usize;
                self.write_at(offset, &vec![0u8; head])?;
            }
            if offset + len > to && to >= from && offset + len > from {
                let tail_from = to.max(offset);
                self.write_at(tail_from, &vec![0u8; (offset + len - tail_from) as usize])?;
            }
            (from, to - from)
        } else {
            (offset, len)
        };
        if len == 0 {
            return Ok(());
        }
        self.pipeline().wait(BlkOp::Discard {
            offset,
            len,
            mask: self.parent.get().is_some(),
        })
    }

    fn start_write(
        &self,
        offset: u64,
        data: Vec<u8>,
        done: WriteDone,
    ) -> Result<(), (Vec<u8>, WriteDone)> {
        let len = data.len() as u64;
        let partial = !offset.is_multiple_of(BLOCK) || !len.is_multiple_of(BLOCK);
        // The simple case only: whole payloads, in range, not merged with a parent.
        if self.writable().is_err()
            || data.len() > MAX_IO
            || check_range("write", offset, len, self.size()).is_err()
            || (self.parent.get().is_some() && partial)
        {
            return Err((data, done));
        }
        self.pipeline().submit(BlkOp::write(offset, data), done);
        Ok(())
    }

    fn read_only(&self) -> bool {
        self.layer.is_some()
    }
}

impl ReplicatedVolume {
    /// Called when this node lets the volume go: flushes, so the replicas' extents are
    /// clean and the next writer has nothing to reconcile (without it, every extent
    /// written since the last flush is copied between replicas at the next attach).
    /// A volume already taken over by a newer writer is refused by the replicas: nothing
    /// is lost either way, only the next attach's work differs.
    pub fn detach(&self) -> Result<(), VolumeError> {
        Volume::flush(self)
    }

    /// Writes through the pipeline (no lock held while waiting: the pipeline takes the
    /// order lock itself).
    fn write_whole(&self, offset: u64, data: &[u8]) -> Result<(), VolumeError> {
        for (i, chunk) in data.chunks(MAX_IO).enumerate() {
            let op = BlkOp::write(offset + (i * MAX_IO) as u64, chunk.to_vec());
            self.pipeline().wait(op)?;
        }
        Ok(())
    }
}

mod pipeline;
mod recovery;
#[cfg(test)]
mod tests;
