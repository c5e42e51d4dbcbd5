//! The write pipeline of a replicated volume.
//!
//! Writes and discards, from guest requests on any thread, are queued here; one thread per
//! volume sends them to the replicas in batches: one [`BlkRequest::Batch`] per replica for
//! up to [`MAX_BATCH_OPS`] changes and [`MAX_IO`] bytes, with up to [`IN_FLIGHT`] batches
//! on the way at once. A change that overlaps one still on the way waits until that one
//! completed, so every replica applies overlapping changes in the same order (within a
//! batch, in queue order) and replicas never diverge.
//!
//! Each batch holds the volume's order lock shared, as a single write did: a resync copy,
//! a repair or a snapshot (which take it exclusively) waits for the batches on the way,
//! and no new batch starts while it waits.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLockReadGuard, TryLockError};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::Core;
use crate::storage::replica::{BlkOp, BlkRequest, MAX_BATCH_OPS, MAX_IO};
use crate::storage::{VolumeError, WriteDone};

/// Batches on the way to the replicas at once.
const IN_FLIGHT: usize = 4;

struct Job {
    op: BlkOp,
    done: WriteDone,
}

/// The sending side; the thread ends once it is dropped and the queue is drained.
pub(super) struct Pipeline {
    volume: String,
    tx: UnboundedSender<Job>,
}

impl Pipeline {
    pub(super) fn start(core: Arc<Core>) -> Self {
        let (tx, rx) = unbounded_channel();
        let volume = core.volume.clone();
        let name = format!("blk-{}", volume.chars().take(10).collect::<String>());
        // Without a thread the receiver is dropped and every change is refused, saying so.
        if let Err(e) = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&core, rx))
        {
            tracing::error!(volume = %volume, error = %e, "cannot start the volume's write thread");
        }
        Pipeline { volume, tx }
    }

    /// Queues a change; `done` is called with its result once the replicas answered.
    pub(super) fn submit(&self, op: BlkOp, done: WriteDone) {
        if let Err(e) = self.tx.send(Job { op, done }) {
            (e.0.done)(Err(self.stopped()));
        }
    }

    /// Queues a change and waits for its result.
    pub(super) fn wait(&self, op: BlkOp) -> Result<(), VolumeError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(
            op,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or_else(|_| Err(self.stopped()))
    }

    fn stopped(&self) -> VolumeError {
        VolumeError::Unavailable {
            volume: self.volume.clone(),
            detail: "its write thread is not running".into(),
        }
    }
}

fn run(core: &Core, mut rx: UnboundedReceiver<Job>) {
    core.rt.block_on(async {
        let mut queued: VecDeque<Job> = VecDeque::new();
        let mut busy: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
        let mut in_flight = FuturesUnordered::new();
        let mut next_id = 0u64;
        let mut open = true;
        loop {
            while let Ok(j) = rx.try_recv() {
                queued.push_back(j);
            }
            while in_flight.len() < IN_FLIGHT && !queued.is_empty() {
                // The first batch waits for an exclusive holder to finish; later ones
                // do not start while one waits (it would wait for them forever).
                let guard = if in_flight.is_empty() {
                    core.order.read().unwrap_or_else(|p| p.into_inner())
                } else {
                    match core.order.try_read() {
                        Ok(g) => g,
                        Err(TryLockError::Poisoned(p)) => p.into_inner(),
                        Err(TryLockError::WouldBlock) => break,
                    }
                };
                let jobs = take_batch(&mut queued, &busy);
                if jobs.is_empty() {
                    break;
                }
                let id = next_id;
                next_id += 1;
                let ranges: Vec<(u64, u64)> = jobs.iter().map(|j| j.op.range()).collect();
                busy.insert(id, ranges.clone());
                in_flight.push(send(core, jobs, ranges, guard, id));
            }
            if in_flight.is_empty() && queued.is_empty() && !open {
                return;
            }
            tokio::select! {
                j = rx.recv(), if open => match j {
                    Some(j) => queued.push_back(j),
                    None => open = false,
                },
                Some(id) = in_flight.next(), if !in_flight.is_empty() => {
                    busy.remove(&id);
                }
                else => {
                    // Not reached (with nothing on the way a batch always starts), but
                    // nobody may be left waiting.
                    for j in queued.drain(..) {
                        (j.done)(Err(VolumeError::Unavailable {
                            volume: core.volume.clone(),
                            detail: "its write thread stopped".into(),
                        }));
                    }
                    return;
                }
            }
        }
    });
}

/// The next batch: queued changes in order, up to the limits, stopping before the first
/// that overlaps a batch on the way.
fn take_batch(queued: &mut VecDeque<Job>, busy: &HashMap<u64, Vec<(u64, u64)>>) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut bytes = 0;
    while let Some(j) = queued.front() {
        let (offset, len) = j.op.range();
        let payload = j.op.payload();
        if jobs.len() == MAX_BATCH_OPS || (!jobs.is_empty() && bytes + payload > MAX_IO) {
            break;
        }
        if busy
            .values()
            .flatten()
            .any(|&(o, l)| overlaps(o, l, offset, len))
        {
            break;
        }
        bytes += payload;
        if let Some(j) = queued.pop_front() {
            jobs.push(j);
        }
    }
    jobs
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// Sends one batch to every live replica and answers each of its changes.
// The guard is held across the calls on purpose: this future runs only on the volume's
// own write thread, and an exclusive holder must wait until the replicas answered.
#[allow(clippy::await_holding_lock)]
async fn send(
    core: &Core,
    jobs: Vec<Job>,
    ranges: Vec<(u64, u64)>,
    guard: RwLockReadGuard<'_, ()>,
    id: u64,
) -> u64 {
    let (ops, dones): (Vec<BlkOp>, Vec<WriteDone>) =
        jobs.into_iter().map(|j| (j.op, j.done)).unzip();
    let req = BlkRequest::Batch {
        volume: core.volume.clone(),
        generation: core.generation,
        ops,
    };
    let result = core.mutate_async(req, &ranges).await;
    drop(guard);
    for done in dones {
        done(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(e.duplicate()),
        });
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(offset: u64, len: usize) -> Job {
        Job {
            op: BlkOp::write(offset, vec![0; len]),
            done: Box::new(|_| {}),
        }
    }

    #[test]
    fn batches_stop_at_limits_and_at_overlaps_with_changes_on_the_way() {
        let mut q: VecDeque<Job> = (0..200).map(|i| job(i * 4096, 4096)).collect();
        let none = HashMap::new();
        assert_eq!(take_batch(&mut q, &none).len(), MAX_BATCH_OPS);
        assert_eq!(q.len(), 200 - MAX_BATCH_OPS);

        // Data: at most MAX_IO bytes, but one bigger change still goes alone.
        let mut q: VecDeque<Job> = (0..6).map(|i| job(i << 20, 1 << 20)).collect();
        assert_eq!(take_batch(&mut q, &none).len(), MAX_IO >> 20);
        let mut q: VecDeque<Job> = VecDeque::from(vec![job(0, MAX_IO + 4096)]);
        assert_eq!(take_batch(&mut q, &none).len(), 1);

        // A change overlapping one on the way stops the batch there, keeping order.
        let busy = HashMap::from([(7u64, vec![(8192u64, 4096u64)])]);
        let mut q: VecDeque<Job> = (0..4).map(|i| job(i * 4096, 4096)).collect();
        let b = take_batch(&mut q, &busy);
        assert_eq!(b.len(), 2);
        assert_eq!(q.front().map(|j| j.op.range()), Some((8192, 4096)));
        assert!(take_batch(&mut q, &busy).is_empty());
        assert!(!overlaps(0, 4096, 4096, 4096));
        assert!(overlaps(0, 4097, 4096, 4096));
        assert!(!overlaps(0, 0, 0, 4096));
    }
}
