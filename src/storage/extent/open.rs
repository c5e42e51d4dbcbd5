//! The bounded set of open extent files (review F5).
//!
//! A region keeps an extent's file and checksum table in memory while it is in use. Left
//! alone, every extent ever touched would stay open: one descriptor and a 256 KiB table per
//! 64 MiB of data, for every volume and snapshot layer on the node. Here each region keeps
//! at most [`PER_REGION`] extents open, and far fewer ([`UNDER_PRESSURE`]) while the whole
//! process holds more than its budget ([`set_budget`], which the daemon derives from its
//! open-file limit). Only an extent that is clean can be closed: no dirty flag on disk, no
//! checksum slots waiting for the next flush, and nobody holding it. Everything it knows is
//! then on disk, so closing it loses nothing and the next use reads it back. The least
//! recently used go first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use super::Extent;

/// Extents a region keeps open at most.
pub const PER_REGION: usize = 64;
/// Extents a region keeps open while the process is over its budget.
pub const UNDER_PRESSURE: usize = 4;
const DEFAULT_BUDGET: usize = 4096;

static OPEN: AtomicUsize = AtomicUsize::new(0);
static BUDGET: AtomicUsize = AtomicUsize::new(DEFAULT_BUDGET);
static TICK: AtomicU64 = AtomicU64::new(0);

/// Sets how many extent files the process may hold open before regions close their idle
/// ones down to [`UNDER_PRESSURE`].
pub fn set_budget(files: usize) {
    BUDGET.store(files.max(UNDER_PRESSURE), Ordering::Relaxed);
}

/// Extent files open in the whole process.
pub fn open_files() -> usize {
    OPEN.load(Ordering::Relaxed)
}

struct Entry {
    ext: Arc<RwLock<Extent>>,
    used: AtomicU64,
}

/// One region's open extents, by number.
pub(super) struct OpenExtents {
    map: HashMap<u64, Entry>,
    cap: usize,
}

impl OpenExtents {
    pub(super) fn new() -> Self {
        OpenExtents {
            map: HashMap::new(),
            cap: PER_REGION,
        }
    }

    /// The open extent `n`, marked as just used.
    pub(super) fn get(&self, n: u64) -> Option<Arc<RwLock<Extent>>> {
        let e = self.map.get(&n)?;
        e.used
            .store(TICK.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(e.ext.clone())
    }

    /// The open extent `n`, without counting it as a use.
    pub(super) fn peek(&self, n: u64) -> Option<&Arc<RwLock<Extent>>> {
        self.map.get(&n).map(|e| &e.ext)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Every open extent (for a flush).
    pub(super) fn all(&self) -> Vec<(u64, Arc<RwLock<Extent>>)> {
        self.map.iter().map(|(n, e)| (*n, e.ext.clone())).collect()
    }

    /// Adds a newly opened extent, then closes idle ones if there are too many.
    pub(super) fn insert(&mut self, n: u64, ext: Arc<RwLock<Extent>>) {
        let entry = Entry {
            ext,
            used: AtomicU64::new(TICK.fetch_add(1, Ordering::Relaxed)),
        };
        if self.map.insert(n, entry).is_none() {
            OPEN.fetch_add(1, Ordering::Relaxed);
        }
        self.trim(Some(n));
    }

    /// Sets this region's own bound (tests use a small one).
    pub(super) fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
        self.trim(None);
    }

    /// Closes the least recently used clean, idle extents while this region holds more than
    /// its bound (a smaller one while the process is over budget); `keep` is never closed.
    pub(super) fn trim(&mut self, keep: Option<u64>) {
        let bound = if OPEN.load(Ordering::Relaxed) > BUDGET.load(Ordering::Relaxed) {
            UNDER_PRESSURE.min(self.cap)
        } else {
            self.cap
        };
        if self.map.len() <= bound {
            return;
        }
        let mut idle: Vec<(u64, u64)> = self
            .map
            .iter()
            .filter(|(n, e)| Some(**n) != keep && closable(&e.ext))
            .map(|(n, e)| (e.used.load(Ordering::Relaxed), *n))
            .collect();
        idle.sort_unstable();
        let excess = self.map.len() - bound;
        for (_, n) in idle.into_iter().take(excess) {
            if self.map.remove(&n).is_some() {
                OPEN.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Clean (nothing in memory that the file lacks) and held by no one but the map. The
/// caller holds the map's write lock, so no one can take a new reference meanwhile.
fn closable(ext: &Arc<RwLock<Extent>>) -> bool {
    Arc::strong_count(ext) == 1
        && ext
            .try_read()
            .is_ok_and(|e| !e.dirty && e.unsaved.is_none())
}

impl Drop for OpenExtents {
    fn drop(&mut self) {
        OPEN.fetch_sub(self.map.len(), Ordering::Relaxed);
    }
}
