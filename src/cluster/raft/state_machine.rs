//! The state machine: the store's [`Data`] in memory, persisted through snapshot files.
//!
//! Applying an entry needs no fsync (the log has it); on restart the newest snapshot is
//! loaded and openraft re-applies the log after it. A snapshot file is
//! `STRATASNAP` + format u16 + SHA-256 of the body + body (postcard of meta and data), so a
//! damaged file is detected and named instead of silently loading wrong state.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch};

use super::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::cluster::store::data::{Change, Data, TxnResult};

const MAGIC: &[u8; 10] = b"STRATASNAP";
const SNAPSHOT_FORMAT: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read snapshot {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// What the rest of the node reads: the applied data plus notifications.
pub struct Shared {
    pub state: RwLock<Applied>,
    pub changes: broadcast::Sender<Arc<Vec<Change>>>,
    pub applied_index: watch::Sender<u64>,
}

#[derive(Default, Clone)]
pub struct Applied {
    pub data: Data,
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    meta: SnapshotMeta,
    data: Data,
}

#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
    dir: PathBuf,
}

impl StateMachine {
    /// Opens the state machine, loading the newest snapshot in `dir` if there is one.
    pub fn open(dir: &Path) -> Result<(Self, Arc<Shared>), SnapshotError> {
        std::fs::create_dir_all(dir).map_err(|source| SnapshotError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut applied = Applied::default();
        if let Some(path) = newest_snapshot(dir)? {
            let body = read_snapshot_file(&path)?;
            applied.data = body.data;
            applied.last_applied = body.meta.last_log_id;
            applied.last_membership = body.meta.last_membership.clone();
        }
        let idx = applied
            .last_applied
            .as_ref()
            .map(|l| l.index())
            .unwrap_or(0);
        let shared = Arc::new(Shared {
            state: RwLock::new(applied),
            changes: broadcast::channel(1024).0,
            applied_index: watch::channel(idx).0,
        });
        Ok((
            StateMachine {
                shared: shared.clone(),
                dir: dir.to_path_buf(),
            },
            shared,
        ))
    }

    fn write_snapshot(&self, body: &SnapshotBody) -> io::Result<Vec<u8>> {
        let bytes = postcard::to_stdvec(body).map_err(io::Error::other)?;
        let idx = body
            .meta
            .last_log_id
            .as_ref()
            .map(|l| l.index())
            .unwrap_or(0);
        let name = format!("{idx:020}.snap");
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut file = Vec::with_capacity(bytes.len() + 44);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&SNAPSHOT_FORMAT.to_be_bytes());
        file.extend_from_slice(&Sha256::digest(&bytes));
        file.extend_from_slice(&bytes);
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // The state holds the cluster's secrets: owner-only.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&file)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(&name))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        // Keep the two newest snapshots.
        let mut names: Vec<_> = snapshot_files(&self.dir)?;
        names.sort();
        while names.len() > 2 {
            let old = names.remove(0);
            let _ = std::fs::remove_file(old);
        }
        Ok(bytes)
    }
}

fn snapshot_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "snap") {
            out.push(p);
        }
    }
    Ok(out)
}

fn newest_snapshot(dir: &Path) -> Result<Option<PathBuf>, SnapshotError> {
    let mut files = snapshot_files(dir).map_err(|source| SnapshotError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    files.sort();
    Ok(files.pop())
}

fn read_snapshot_file(path: &Path) -> Result<SnapshotBody, SnapshotError> {
    let bytes = std::fs::read(path).map_err(|source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |reason: &str| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < 44 || &bytes[..10] != MAGIC {
        return Err(corrupt("not a strata snapshot (bad header)"));
    }
    let format = u16::from_be_bytes([bytes[10], bytes[11]]);
    if format != SNAPSHOT_FORMAT {
        return Err(corrupt(&format!("unknown snapshot format {format}")));
    }
    let body = &bytes[44..];
    if Sha256::digest(body).as_slice() != &bytes[12..44] {
        return Err(corrupt("checksum mismatch"));
    }
    postcard::from_bytes(body).map_err(|e| corrupt(&format!("undecodable body: {e}")))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (data, meta) = {
            let st = self.shared.state.read().expect("state lock poisoned");
            let meta = SnapshotMeta {
                last_log_id: st.last_applied,
                last_membership: st.last_membership.clone(),
            };
            (st.data.clone(), meta)
        };
        let body = SnapshotBody { meta, data };
        let me = self.clone();
        let (bytes, body) = tokio::task::spawn_blocking(move || {
            let r = me.write_snapshot(&body);
            r.map(|b| (b, body))
        })
        .await
        .map_err(io::Error::other)??;
        tracing::info!(index = ?body.meta.last_log_id.as_ref().map(|l| l.index()), bytes = bytes.len(), "built snapshot");
        Ok(Snapshot {
            meta: body.meta,
            snapshot: Cursor::new(bytes),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let st = self.shared.state.read().expect("state lock poisoned");
        Ok((st.last_applied, st.last_membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut changes = Vec::new();
        let mut last = 0;
        while let Some((entry, responder)) = entries.try_next().await? {
            let index = entry.log_id.index();
            let result = {
                let mut st = self.shared.state.write().expect("state lock poisoned");
                st.last_applied = Some(entry.log_id);
                match &entry.payload {
                    EntryPayload::Blank => TxnResult::None,
                    EntryPayload::Normal(cmd) => st.data.apply(index, cmd, &mut changes),
                    EntryPayload::Membership(m) => {
                        st.last_membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        TxnResult::None
                    }
                }
            };
            last = index;
            if let Some(r) = responder {
                r.send(result);
            }
        }
        if last > 0 {
            self.shared.applied_index.send_replace(last);
        }
        if !changes.is_empty() {
            let _ = self.shared.changes.send(Arc::new(changes));
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let body: SnapshotBody = postcard::from_bytes(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot from leader: {e}"),
            )
        })?;
        let body = SnapshotBody {
            meta: meta.clone(),
            data: body.data,
        };
        let me = self.clone();
        let body = tokio::task::spawn_blocking(move || me.write_snapshot(&body).map(|_| body))
            .await
            .map_err(io::Error::other)??;
        let idx = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        {
            let mut st = self.shared.state.write().expect("state lock poisoned");
            st.data = body.data;
            st.last_applied = meta.last_log_id;
            st.last_membership = meta.last_membership.clone();
        }
        self.shared.applied_index.send_replace(idx);
        // Watchers cannot tell what changed; an empty batch tells them to re-read.
        let _ = self.shared.changes.send(Arc::new(Vec::new()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let Some(path) = newest_snapshot(&self.dir).map_err(io::Error::other)? else {
            return Ok(None);
        };
        let body = read_snapshot_file(&path).map_err(io::Error::other)?;
        let bytes = postcard::to_stdvec(&body).map_err(io::Error::other)?;
        Ok(Some(Snapshot {
            meta: body.meta,
            snapshot: Cursor::new(bytes),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_snapshot_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("00000000000000000009.snap");
        std::fs::write(
            &p,
            b"STRATASNAP\x00\x01garbage-garbage-garbage-garbage-garbage-garbage",
        )
        .unwrap();
        let e = StateMachine::open(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("00000000000000000009.snap") && e.contains("corrupt"),
            "{e}"
        );
    }
}
