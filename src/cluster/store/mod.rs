//! The typed, versioned store on top of Raft: tables of records, transactions with
//! revision checks, linearizable reads, and watches of applied changes.

pub mod compute_tables;
pub mod data;
pub mod identity_tables;
pub mod image_tables;
pub mod network_tables;
pub mod storage_tables;
pub mod tables;

use std::sync::Arc;

use tokio::sync::broadcast;

use super::raft::{RaftError, RaftNode};
use data::{Change, Check, Command, Op, Record, Txn, TxnResult};
pub use tables::Table;
use tables::{decode, encode, DecodeError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Raft(#[from] RaftError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("conflict on {table}/{key}: expected revision {expected}, found {actual}")]
    Conflict {
        table: String,
        key: String,
        expected: u64,
        actual: u64,
    },
}

/// A decoded record with its revision.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub key: String,
    pub value: T,
    pub revision: u64,
}

#[derive(Clone)]
pub struct Store {
    raft: Arc<RaftNode>,
}

impl Store {
    pub fn new(raft: Arc<RaftNode>) -> Self {
        Store { raft }
    }

    pub fn raft(&self) -> &Arc<RaftNode> {
        &self.raft
    }

    /// Reads from this node's applied state (may lag the leader; see [`Store::linearizable`]).
    pub fn get<T: Table>(&self, key: &str) -> Result<Option<Versioned<T::Value>>, StoreError> {
        let st = self.raft.shared.state.read().expect("state lock poisoned");
        st.data
            .get(T::NAME, key)
            .map(|r| to_versioned::<T>(key, r))
            .transpose()
    }

    /// All records of a table, in key order.
    pub fn list<T: Table>(&self) -> Result<Vec<Versioned<T::Value>>, StoreError> {
        let st = self.raft.shared.state.read().expect("state lock poisoned");
        st.data
            .table(T::NAME)
            .map(|(k, r)| to_versioned::<T>(k, r))
            .collect()
    }

    /// Every record's revision, by table and key: a cheap fingerprint of the whole
    /// state (`strata debug store`), to check that a refused request wrote nothing.
    pub fn revisions(
        &self,
    ) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> {
        let st = self.raft.shared.state.read().expect("state lock poisoned");
        st.data
            .tables
            .iter()
            .map(|(t, recs)| {
                (
                    t.clone(),
                    recs.iter().map(|(k, r)| (k.clone(), r.revision)).collect(),
                )
            })
            .collect()
    }

    /// The newest `n` records of a log-like table, newest last.
    pub fn tail<T: Table>(&self, n: usize) -> Result<Vec<Versioned<T::Value>>, StoreError> {
        let st = self.raft.shared.state.read().expect("state lock poisoned");
        let mut out: Vec<_> = st
            .data
            .table(T::NAME)
            .rev()
            .take(n)
            .map(|(k, r)| to_versioned::<T>(k, r))
            .collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Waits until reads on this node see every write committed before the call.
    pub async fn linearizable(&self) -> Result<(), StoreError> {
        Ok(self.raft.read_barrier().await?)
    }

    /// Commits a transaction. A failed check is a [`StoreError::Conflict`].
    pub async fn commit(&self, txn: TxnBuilder) -> Result<u64, StoreError> {
        match self.raft.write(Command::V1(txn.txn)).await? {
            TxnResult::Applied { revision } => Ok(revision),
            TxnResult::CheckFailed {
                table,
                key,
                expected,
                actual,
            } => Err(StoreError::Conflict {
                table,
                key,
                expected,
                actual,
            }),
            TxnResult::None => Ok(0),
        }
    }

    /// Every batch of changes applied on this node from now on. An empty batch means the
    /// whole state was replaced (a snapshot was installed): re-read what you watch.
    pub fn watch(&self) -> broadcast::Receiver<Arc<Vec<Change>>> {
        self.raft.shared.changes.subscribe()
    }
}

fn to_versioned<T: Table>(key: &str, r: &Record) -> Result<Versioned<T::Value>, StoreError> {
    Ok(Versioned {
        key: key.to_string(),
        value: decode::<T>(key, &r.value)?,
        revision: r.revision,
    })
}

/// Builds a transaction over typed tables.
#[derive(Default, Debug, Clone)]
pub struct TxnBuilder {
    txn: Txn,
}

impl TxnBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put<T: Table>(mut self, key: impl Into<String>, value: &T::Value) -> Self {
        self.txn.ops.push(Op::Put {
            table: T::NAME.into(),
            key: key.into(),
            value: encode::<T>(value),
        });
        self
    }

    pub fn delete<T: Table>(mut self, key: impl Into<String>) -> Self {
        self.txn.ops.push(Op::Delete {
            table: T::NAME.into(),
            key: key.into(),
        });
        self
    }

    pub fn append<T: Table>(mut self, value: &T::Value) -> Self {
        self.txn.ops.push(Op::Append {
            table: T::NAME.into(),
            value: encode::<T>(value),
        });
        self
    }

    pub fn trim<T: Table>(mut self, keep: u64) -> Self {
        self.txn.ops.push(Op::Trim {
            table: T::NAME.into(),
            keep,
        });
        self
    }

    /// The record must be at `revision` (0: must not exist) for the transaction to apply.
    pub fn require_revision<T: Table>(mut self, key: impl Into<String>, revision: u64) -> Self {
        self.txn.checks.push(Check::Revision {
            table: T::NAME.into(),
            key: key.into(),
            revision,
        });
        self
    }
}
