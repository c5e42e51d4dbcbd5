//! The Raft log and vote in RocksDB (column families `meta` and `logs`). Keys of `logs` are
//! big-endian log indexes; values are a format byte followed by the postcard entry.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rocksdb::{
    ColumnFamilyDescriptor, DBRecoveryMode, Direction, IteratorMode, Options, WriteBatch, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Entry, LogId, TypeConfig, Vote};

/// Format byte of every stored log entry and meta value.
const FORMAT_V1: u8 = 1;

const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

#[derive(Debug, thiserror::Error)]
#[error("cannot open the Raft log at {path}")]
pub struct OpenError {
    pub path: PathBuf,
    #[source]
    pub source: rocksdb::Error,
}

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    path: PathBuf,
    /// Set by the first failed write or sync. RocksDB must not be written or synced again
    /// after an I/O error (its WAL writer asserts), so every later call fails with the
    /// original cause and Raft stops cleanly.
    failed: Arc<std::sync::Mutex<Option<String>>>,
    /// Appends are refused below this much free space, before RocksDB can hit ENOSPC.
    min_free: u64,
    /// Set when the write-ahead log did not read back whole at open (see [`Self::open`]).
    lost_tail: Option<String>,
}

/// Free bytes on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// An error if the disk holding `path` has less than `reserve` bytes free.
pub fn check_free_space(path: &Path, reserve: u64) -> io::Result<()> {
    let free = free_bytes(path)?;
    if free < reserve {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "data disk full: {} MiB free on {}, below the {} MiB reserve",
                free >> 20,
                path.display(),
                reserve >> 20
            ),
        ));
    }
    Ok(())
}

impl LogStore {
    /// Opens the log. Every entry was acknowledged only once its write-ahead log record was
    /// on disk, so the WAL must read back whole: it is first opened in RocksDB's
    /// absolute-consistency mode. A WAL whose tail is damaged or cut (a disk that lied
    /// about a flush, a copy of a running node's files) is then opened with point-in-time
    /// recovery, which drops the damaged tail, and [`Self::lost_tail`] says so: entries
    /// this node acknowledged may be gone, and it must not vote until it has caught up.
    pub fn open(path: &Path, min_free: u64) -> Result<Self, OpenError> {
        let open = |mode| {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            opts.set_paranoid_checks(true);
            opts.set_wal_recovery_mode(mode);
            let cfs = ["meta", "logs"]
                .into_iter()
                .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
            DB::open_cf_descriptors(&opts, path, cfs)
        };
        let fail = |source| OpenError {
            path: path.to_path_buf(),
            source,
        };
        let (db, lost_tail) = match open(DBRecoveryMode::AbsoluteConsistency) {
            Ok(db) => (db, None),
            Err(e) if e.kind() == rocksdb::ErrorKind::Corruption => {
                let why = format!("{} (in {})", e.into_string(), path.display());
                tracing::error!(
                    error = %why,
                    "the Raft log's write-ahead log does not read back whole: opening it \
                     without its damaged tail; entries this node acknowledged may be lost"
                );
                (open(DBRecoveryMode::PointInTime).map_err(fail)?, Some(why))
            }
            Err(e) => return Err(fail(e)),
        };
        Ok(LogStore {
            db: Arc::new(db),
            path: path.to_path_buf(),
            failed: Arc::new(std::sync::Mutex::new(None)),
            min_free,
            lost_tail,
        })
    }

    /// Why the log was opened without the tail of its write-ahead log, if it was.
    pub fn lost_tail(&self) -> Option<&str> {
        self.lost_tail.as_deref()
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> io::Error {
        io::Error::other(format!("raft log {}: {what}: {e}", self.path.display()))
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self
            .db
            .get_cf(self.cf("meta"), key)
            .map_err(|e| self.err("read", e))?
        {
            None => Ok(None),
            Some(b) => decode(&b).map(Some).map_err(|e| self.err("decode meta", e)),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], v: &T) -> io::Result<()> {
        self.guarded("write", || self.db.put_cf(self.cf("meta"), key, encode(v)))
    }

    fn sync(&self) -> io::Result<()> {
        self.guarded("fsync", || self.db.flush_wal(true))
    }

    /// Runs a RocksDB write unless an earlier one failed; remembers the first failure.
    fn guarded(
        &self,
        what: &str,
        op: impl FnOnce() -> Result<(), rocksdb::Error>,
    ) -> io::Result<()> {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(first) = failed.as_ref() {
            return Err(io::Error::other(format!(
                "raft log {} is read-only after an earlier error: {first}",
                self.path.display()
            )));
        }
        op().map_err(|e| {
            let err = self.err(what, e);
            *failed = Some(err.to_string());
            err
        })
    }

    /// Number of entries currently held (for `strata debug raft`).
    pub fn approximate_len(&self) -> u64 {
        let first = self
            .db
            .iterator_cf(self.cf("logs"), IteratorMode::Start)
            .next();
        let last = self
            .db
            .iterator_cf(self.cf("logs"), IteratorMode::End)
            .next();
        match (first, last) {
            (Some(Ok((a, _))), Some(Ok((b, _)))) => bin_to_id(&b) - bin_to_id(&a) + 1,
            _ => 0,
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    out.extend(postcard::to_stdvec(v).expect("raft types serialize"));
    out
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    match b.split_first() {
        Some((&FORMAT_V1, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown format {v}")),
        None => Err("empty value".into()),
    }
}

fn id_to_bin(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn bin_to_id(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => *x + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let from = id_to_bin(start);
        let it = self.db.iterator_cf(
            self.cf("logs"),
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in it {
            let (k, v) = item.map_err(|e| self.err("read", e))?;
            let id = bin_to_id(&k);
            if !range.contains(&id) {
                break;
            }
            let entry: Entry =
                decode(&v).map_err(|e| self.err(&format!("decode entry {id}"), e))?;
            out.push(entry);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last = match self
            .db
            .iterator_cf(self.cf("logs"), IteratorMode::End)
            .next()
        {
            None => None,
            Some(r) => {
                let (k, v) = r.map_err(|e| self.err("read", e))?;
                let e: Entry = decode(&v)
                    .map_err(|e| self.err(&format!("decode entry {}", bin_to_id(&k)), e))?;
                Some(e.log_id)
            }
        };
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        Ok(LogState {
            last_log_id: last.or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(KEY_VOTE, vote)?;
        let s = self.clone();
        tokio::task::spawn_blocking(move || s.sync())
            .await
            .map_err(io::Error::other)?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: a lost value only means re-applying from the snapshot after a crash.
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let cf = self.cf("logs");
        for e in entries {
            batch.put_cf(cf, id_to_bin(e.log_id.index()), encode(&e));
        }
        if let Err(e) = check_free_space(&self.path, self.min_free / 2) {
            // Below half the reserve even the API guard was bypassed (replication from a
            // leader with more space): stop before RocksDB meets ENOSPC.
            let msg = e.to_string();
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
            return Err(io::Error::new(io::ErrorKind::StorageFull, msg));
        }
        self.guarded("append", || self.db.write(batch))?;
        // Entries are readable now; durability is reported once the WAL is on disk.
        let s = self.clone();
        tokio::task::spawn_blocking(move || callback.io_completed(s.sync()));
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let from = last.map(|l| l.index() + 1).unwrap_or(0);
        self.guarded("truncate", || {
            self.db
                .delete_range_cf(self.cf("logs"), id_to_bin(from), id_to_bin(u64::MAX))
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.put_meta(KEY_PURGED, &log_id)?;
        self.guarded("purge", || {
            self.db
                .delete_range_cf(self.cf("logs"), id_to_bin(0), id_to_bin(log_id.index() + 1))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftLogStorage;

    #[tokio::test]
    async fn a_store_below_its_reserve_refuses_appends_and_stays_refusing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(&dir.path().join("log"), u64::MAX).unwrap();
        let err = store.save_vote(&Vote::new(1, 1)).await;
        assert!(
            err.is_ok(),
            "meta writes are not guarded by the reserve: {err:?}"
        );
        let e = check_free_space(dir.path(), u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data disk full") && e.contains(&dir.path().display().to_string()),
            "{e}"
        );
        // Poisoned after a failure: later writes fail with the first cause, not a new one.
        *store.failed.lock().unwrap() = Some("disk on fire".into());
        let e = store
            .save_vote(&Vote::new(1, 1))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("disk on fire") && e.contains("read-only"), "{e}");
    }

    #[tokio::test]
    async fn a_write_ahead_log_cut_short_is_noticed_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        // Whole, it reopens as it was.
        {
            let mut store = LogStore::open(&path, 0).unwrap();
            store.save_vote(&Vote::new(1, 1)).await.unwrap();
        }
        {
            let mut store = LogStore::open(&path, 0).unwrap();
            assert!(store.lost_tail().is_none());
            assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
        }
        {
            let mut store = LogStore::open(&path, 0).unwrap();
            assert!(store.lost_tail().is_none());
            for t in 1..=20 {
                store.save_vote(&Vote::new(t, 1)).await.unwrap();
            }
        }
        // The newest WAL file loses its last bytes (mid-record).
        let wal = std::fs::read_dir(&path)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .max()
            .expect("a WAL file");
        let len = std::fs::metadata(&wal).unwrap().len();
        assert!(len > 20, "WAL of {len} bytes");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&wal)
            .unwrap()
            .set_len(len - 7)
            .unwrap();
        let mut store = LogStore::open(&path, 0).unwrap();
        let why = store.lost_tail().expect("the cut is noticed").to_string();
        assert!(why.contains(&path.display().to_string()), "{why}");
        // What came before the damaged record is kept.
        let vote = store.read_vote().await.unwrap().expect("a vote");
        assert!(
            vote.leader_id().term >= 1 && vote.leader_id().term < 20,
            "{vote:?}"
        );
    }
}
