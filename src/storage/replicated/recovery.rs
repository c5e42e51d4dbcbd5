//! Recovery of a replicated volume: repairing bad copies, resyncing replicas that return,
//! rebuilding new ones, and growing the volume once every replica has grown.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use super::{Core, Outcome, Replica, ReplicaTarget, BLOCK, MAX_IO};
use crate::storage::replica::{BlkRequest, BlkResponse};
use crate::storage::VolumeError;

impl Core {
    /// Makes the live replicas agree before a new writer's first I/O. A writer that
    /// stopped without flushing (a crash, a lost host) may have left writes it never
    /// acknowledged on some replicas and not on others; they can only lie in extents
    /// written since the last flush, which every replica reports (`Dirty`). Those extents
    /// are copied from the first live replica (the local one first) to the others, then
    /// flushed. A replica the copy fails on is faulted with the extents left to copy.
    /// Returns the bytes copied.
    pub(super) fn reconcile(&self) -> Result<u64, VolumeError> {
        let targets = self.live_targets()?;
        if targets.len() < 2 {
            return Ok(0);
        }
        let req = BlkRequest::Dirty {
            volume: self.volume.clone(),
        };
        let mut dirty = BTreeSet::new();
        for r in self.call_many(&targets, req) {
            if let Outcome::Ok(BlkResponse::Extents(e)) = r {
                dirty.extend(e.into_iter().filter(|e| *e < self.extent_count()));
            }
        }
        if dirty.is_empty() {
            return Ok(0);
        }
        let _x = self.order.write().unwrap_or_else(|p| p.into_inner());
        let mut copied = 0;
        for t in &targets[1..] {
            let mut left = dirty.clone();
            for e in &dirty {
                match self.copy_extent(*t, *e) {
                    Ok(n) => {
                        copied += n;
                        left.remove(e);
                    }
                    Err(()) => break,
                }
            }
            if let Some((first, last)) = left.first().zip(left.last()) {
                self.fault(t.node, "copying what the previous writer left failed", None);
                if let Some(r) = self.lock().iter_mut().find(|r| r.target.node == t.node) {
                    r.stale.extend(left.iter().copied());
                }
                tracing::warn!(volume = %self.volume, node = %t.node, first, last, "replica faulted while reconciling");
            }
        }
        let flush = BlkRequest::Flush {
            volume: self.volume.clone(),
            generation: self.generation,
        };
        for (t, r) in targets.iter().zip(self.call_many(&targets, flush)) {
            match r {
                Outcome::Ok(_) => {}
                Outcome::Fenced(current) => return Err(self.fence(current)),
                _ => self.fault(t.node, "it did not take the flush after reconciling", None),
            }
        }
        tracing::info!(volume = %self.volume, extents = dirty.len(), bytes = copied, "replicas reconciled after a writer that did not flush");
        self.resynced_bytes.fetch_add(copied, Ordering::Relaxed);
        Ok(copied)
    }

    /// Rewrites a range on replicas whose copy was bad, from a good copy read under the
    /// exclusive order lock (block by block as stored, so a clone's blocks that lie below
    /// it stay below).
    pub(super) fn repair(&self, bad: &[ReplicaTarget], offset: u64, len: usize) {
        if self.layer.is_some() {
            tracing::warn!(volume = %self.volume, offset, len, "a snapshot block failed its checksum on a replica; read from another (snapshots are repaired by the volume's writer)");
            return;
        }
        let _x = self.order.write().unwrap_or_else(|p| p.into_inner());
        let good: Vec<ReplicaTarget> = self
            .live_targets()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| !bad.contains(t))
            .collect();
        let first = offset / BLOCK;
        let count = (offset + len as u64).div_ceil(BLOCK) - first;
        let Some((states, data)) = good
            .iter()
            .find_map(|t| self.read_raw(*t, None, first, count))
        else {
            return;
        };
        for t in bad {
            let w = BlkRequest::WriteRaw {
                volume: self.volume.clone(),
                generation: self.generation,
                layer: None,
                first,
                states: states.clone(),
                data: data.clone(),
            };
            if let Outcome::Ok(_) = self.call(*t, w) {
                self.repaired_blocks.fetch_add(count, Ordering::Relaxed);
                tracing::info!(volume = %self.volume, node = %t.node, offset, len, "repaired a bad copy");
            }
        }
    }

    fn read_raw(
        &self,
        t: ReplicaTarget,
        layer: Option<&str>,
        first: u64,
        count: u64,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let req = BlkRequest::ReadRaw {
            volume: self.volume.clone(),
            layer: layer.map(str::to_string),
            first,
            count: count as u32,
        };
        match self.call(t, req) {
            Outcome::Ok(BlkResponse::Raw { states, data }) if states.len() as u64 == count => {
                Some((states, data))
            }
            _ => None,
        }
    }

    /// The snapshot stack of the live replicas (the first that answers).
    fn snapshot_names(&self) -> Option<Vec<String>> {
        let req = BlkRequest::Status {
            volume: self.volume.clone(),
        };
        self.live_targets()
            .ok()?
            .into_iter()
            .find_map(|t| match self.call(t, req.clone()) {
                Outcome::Ok(BlkResponse::Status { snapshots, .. }) => Some(snapshots),
                _ => None,
            })
    }

    /// Brings faulted replicas that answer again up to date by copying only the extents
    /// written while they were away (all of them for a new or stale replica), one extent
    /// at a time: guest writes wait only while an extent is copied. Returns the bytes
    /// copied by this call.
    pub fn resync(&self) -> Result<u64, VolumeError> {
        self.check_fenced()?;
        let faulted: Vec<ReplicaTarget> = self
            .lock()
            .iter()
            .filter(|r| !r.live)
            .map(|r| r.target)
            .collect();
        let mut copied = 0;
        for t in faulted {
            let act = BlkRequest::Activate {
                volume: self.volume.clone(),
                generation: self.generation,
            };
            match self.call(t, act) {
                // It had not seen this writer's generation: it was away across a take-over,
                // and the previous writer may have changed any extent of it. Copy it all.
                Outcome::Ok(BlkResponse::Activated { previous }) if previous < self.generation => {
                    let all: BTreeSet<u64> = (0..self.extent_count()).collect();
                    if let Some(r) = self.lock().iter_mut().find(|r| r.target.node == t.node) {
                        if r.stale.len() as u64 != self.extent_count() {
                            tracing::info!(volume = %self.volume, node = %t.node, previous, "replica missed a take-over; copying all of it");
                        }
                        r.stale = all;
                    }
                }
                Outcome::Ok(_) => {}
                Outcome::Fenced(current) => return Err(self.fence(current)),
                _ => continue,
            }
            // Snapshots taken or deleted while it was away.
            let Some(names) = self.snapshot_names() else {
                continue;
            };
            let set = BlkRequest::SetSnapshots {
                volume: self.volume.clone(),
                generation: self.generation,
                names,
            };
            match self.call(t, set) {
                Outcome::Ok(_) => {}
                Outcome::Fenced(current) => return Err(self.fence(current)),
                _ => continue,
            }
            let mut extents = 0;
            loop {
                // Writes wait while this extent is copied, so the replica cannot miss one;
                // writes between extents mark theirs stale again.
                let _x = self.order.write().unwrap_or_else(|p| p.into_inner());
                let next = self
                    .lock()
                    .iter()
                    .find(|r| r.target.node == t.node)
                    .map(|r| r.stale.iter().next().copied());
                let Some(next) = next else { break };
                let Some(e) = next else {
                    // Nothing left to copy: flush it, and it is a full member again.
                    let flush = BlkRequest::Flush {
                        volume: self.volume.clone(),
                        generation: self.generation,
                    };
                    if matches!(self.call(t, flush), Outcome::Ok(_)) {
                        if let Some(r) = self.lock().iter_mut().find(|r| r.target.node == t.node) {
                            r.live = true;
                            r.reason.clear();
                        }
                        tracing::info!(volume = %self.volume, node = %t.node, extents, "replica resynced");
                    }
                    break;
                };
                match self.copy_extent(t, e) {
                    Ok(n) => {
                        copied += n;
                        extents += 1;
                        if let Some(r) = self.lock().iter_mut().find(|r| r.target.node == t.node) {
                            r.stale.remove(&e);
                        }
                    }
                    Err(()) => break,
                }
            }
        }
        self.resynced_bytes.fetch_add(copied, Ordering::Relaxed);
        Ok(copied)
    }

    /// Copies one extent from a live replica to `t` (caller holds the order lock): first
    /// the snapshot stack, then every layer's blocks exactly as stored.
    fn copy_extent(&self, t: ReplicaTarget, e: u64) -> Result<u64, ()> {
        let names = self.snapshot_names().ok_or(())?;
        let set = BlkRequest::SetSnapshots {
            volume: self.volume.clone(),
            generation: self.generation,
            names: names.clone(),
        };
        if !matches!(self.call(t, set), Outcome::Ok(_)) {
            return Err(());
        }
        let source = self.live_targets().map_err(|_| ())?;
        let per = self.extent_size / BLOCK;
        let blocks = self.size().div_ceil(BLOCK);
        let (start, end) = (e * per, ((e + 1) * per).min(blocks));
        let step = MAX_IO as u64 / BLOCK;
        let layers = names
            .iter()
            .map(|n| Some(n.as_str()))
            .chain(std::iter::once(None));
        let mut copied = 0;
        for layer in layers {
            let mut b = start;
            while b < end {
                let n = step.min(end - b);
                let (states, data) = source
                    .iter()
                    .find_map(|s| self.read_raw(*s, layer, b, n))
                    .ok_or(())?;
                // Nothing to copy where neither side ever held anything.
                let w = BlkRequest::WriteRaw {
                    volume: self.volume.clone(),
                    generation: self.generation,
                    layer: layer.map(str::to_string),
                    first: b,
                    states,
                    data,
                };
                if !matches!(self.call(t, w), Outcome::Ok(_)) {
                    return Err(());
                }
                copied += n * BLOCK;
                b += n;
            }
        }
        Ok(copied)
    }

    /// Changes the replica set (the control plane replaced a lost replica): replicas no
    /// longer listed are dropped; new ones start faulted with every extent to copy.
    pub fn set_targets(&self, targets: &[ReplicaTarget]) {
        let _x = self.order.write().unwrap_or_else(|p| p.into_inner());
        let all: BTreeSet<u64> = (0..self.extent_count()).collect();
        let mut reps = self.lock();
        reps.retain(|r| targets.iter().any(|t| t.node == r.target.node));
        for t in targets {
            if let Some(r) = reps.iter_mut().find(|r| r.target.node == t.node) {
                r.target.addr = t.addr;
                continue;
            }
            tracing::info!(volume = %self.volume, node = %t.node, "new replica; copying the volume to it");
            reps.push(Replica {
                target: *t,
                live: false,
                reason: "new replica, being rebuilt".into(),
                stale: all.clone(),
            });
        }
    }

    /// Grows the volume to `size` once every live replica's region has grown to it (their
    /// nodes grow them from the cluster state); returns whether it did.
    pub fn grow(&self, size: u64) -> bool {
        if size <= self.size() {
            return true;
        }
        let Ok(targets) = self.live_targets() else {
            return false;
        };
        let results = self.call_many(
            &targets,
            BlkRequest::Status {
                volume: self.volume.clone(),
            },
        );
        let ready = results
            .iter()
            .all(|r| matches!(r, Outcome::Ok(BlkResponse::Status { size: s, .. }) if *s >= size));
        if ready {
            let _x = self.order.write().unwrap_or_else(|p| p.into_inner());
            let old = self.size.swap(size, Ordering::SeqCst);
            // Replicas that are away miss the new extents too.
            let new_extents: Vec<u64> =
                (old.div_ceil(self.extent_size)..size.div_ceil(self.extent_size)).collect();
            for r in self.lock().iter_mut().filter(|r| !r.live) {
                r.stale.extend(new_extents.iter().copied());
            }
            tracing::info!(volume = %self.volume, from = old, to = size, "volume grown");
        }
        ready
    }
}
