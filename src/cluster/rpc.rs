//! The `ctl` protocol between nodes: Raft RPCs, writes and read barriers forwarded to the
//! leader, and the join handshake (served on the `join` class).

use serde::{Deserialize, Serialize};

use super::raft::{SnapshotMeta, TypeConfig, Vote};
use super::store::data::{Command, TxnResult};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};

#[derive(Serialize, Deserialize, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum CtlRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// A write proposed on a follower, to be committed by the leader.
    Write(Command),
    /// Asks the leader for a read index (a linearizable read barrier for a follower).
    ReadIndex,
}

#[derive(Serialize, Deserialize, Debug)]
pub enum CtlResponse {
    Append(Result<AppendEntriesResponse<TypeConfig>, String>),
    Vote(Result<VoteResponse<TypeConfig>, String>),
    Snapshot(Result<SnapshotResponse<TypeConfig>, String>),
    TransferLeader(Result<TransferLeaderResponse<TypeConfig>, String>),
    Write(Result<TxnResult, RemoteError>),
    ReadIndex(Result<u64, RemoteError>),
    /// The request could not be decoded or served.
    Error(String),
}

/// An error from a forwarded write or read, with whether the caller should retry
/// elsewhere (the node is no longer the leader).
#[derive(Serialize, Deserialize, Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error("node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("{0}")]
    Failed(String),
}
