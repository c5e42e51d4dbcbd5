//! The Raft node: openraft with a RocksDB log and the store's state machine, RPCs over
//! the QUIC `ctl` class, and writes/reads that work from any node (forwarded to the leader).
//! All openraft types stay behind this module so that an upgrade touches only here.

mod log_store;
mod network;
pub mod state_machine;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::errors::{ClientWriteError, RaftError as OrError};
use openraft::rt::WatchReceiver;
use openraft::{BasicNode, ChangeMembers, ReadPolicy, ServerState, SnapshotPolicy};
use serde::Serialize;

use crate::cluster::rpc::{CtlRequest, CtlResponse, RemoteError};
use crate::cluster::store::data::{Command, TxnResult};
use crate::config::RaftTuning;
use crate::ids::NodeId;
use crate::transport::{Class, Transport};
use log_store::LogStore;
pub use log_store::{check_free_space, OpenError};
use state_machine::StateMachine;
pub use state_machine::{Shared, SnapshotError};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = TxnResult,
        Node = BasicNode,
);

pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Cursor<Vec<u8>>>;
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;
pub type Metrics = openraft::RaftMetrics<TypeConfig>;

/// How long a write or read barrier waits for a leader before giving up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error(transparent)]
    OpenLog(#[from] OpenError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("invalid Raft configuration: {0}")]
    Config(String),
    #[error("Raft failed to start: {0}")]
    Start(String),
    #[error("no quorum: {0}")]
    NoQuorum(String),
    #[error("Raft write failed: {0}")]
    Write(String),
    #[error("membership change failed: {0}")]
    Membership(String),
    #[error("write refused: {0}")]
    DiskFull(String),
}

pub struct RaftNode {
    pub id: NodeId,
    dir: std::path::PathBuf,
    min_free: u64,
    pub raft: Raft,
    pub shared: Arc<Shared>,
    transport: Arc<Transport>,
    log: LogStore,
    /// How long a leader may go without a quorum's acknowledgement before it stops
    /// calling itself leader (the shortest election timeout: by then the others may
    /// have elected another).
    lease: Duration,
    /// Why this node does not vote (nor stand for election) for now: its log lost the tail
    /// of its write-ahead log, entries it acknowledged may be gone (see [`LogStore::open`]).
    no_vote: std::sync::Mutex<Option<String>>,
}

/// A summary of Raft membership: voters, learners and their addresses.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MembershipView {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub addrs: BTreeMap<NodeId, String>,
    /// True while a joint configuration is in effect (a change is under way).
    pub joint: bool,
}

impl RaftNode {
    /// Opens the log and state machine under `dir` and starts Raft.
    pub async fn start(
        id: NodeId,
        dir: &Path,
        tuning: &RaftTuning,
        transport: Arc<Transport>,
    ) -> Result<Arc<Self>, RaftError> {
        let mut log = LogStore::open(&dir.join("log"), tuning.min_free_bytes)?;
        if log.lost_tail().is_some() {
            // A leader whose log lost entries must not take up its term again (it would
            // impose its shortened log on the others): its vote is kept, but as a
            // candidate's, not granted, so the others elect another leader.
            use openraft::storage::{RaftLogReader, RaftLogStorage};
            let vote = log
                .read_vote()
                .await
                .map_err(|e| RaftError::Start(e.to_string()))?;
            if let Some(v) = vote.filter(|v| v.is_committed() && v.leader_id().node_id == id.0) {
                let term = v.leader_id().term;
                log.save_vote(&Vote::new(term, id.0))
                    .await
                    .map_err(|e| RaftError::Start(e.to_string()))?;
                tracing::warn!(
                    term,
                    "this node led the cluster before its Raft log lost its tail: it does not \
                     take that leadership up again"
                );
            }
        }
        let (sm, shared) = StateMachine::open(&dir.join("snapshots"))?;
        let config = openraft::Config {
            cluster_name: "strata".into(),
            heartbeat_interval: tuning.heartbeat.as_millis() as u64,
            election_timeout_min: tuning.election_timeout_min.as_millis() as u64,
            election_timeout_max: tuning.election_timeout_max.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
            max_in_snapshot_log_to_keep: tuning.keep_behind_snapshot,
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftError::Config(e.to_string()))?;
        let network = network::Network {
            transport: transport.clone(),
        };
        let raft = openraft::Raft::new(id.0, Arc::new(config), network, log.clone(), sm)
            .await
            .map_err(|e| RaftError::Start(e.to_string()))?;
        let no_vote = log.lost_tail().map(|why| {
            raft.runtime_config().elect(false);
            format!("its Raft log lost entries it may have acknowledged: {why}")
        });
        let catch_up = no_vote.is_some();
        let node = Arc::new(RaftNode {
            id,
            dir: dir.to_path_buf(),
            min_free: tuning.min_free_bytes,
            raft,
            shared,
            transport,
            log,
            lease: tuning.election_timeout_min,
            no_vote: std::sync::Mutex::new(no_vote),
        });
        if catch_up {
            tokio::spawn(node.clone().vote_once_caught_up());
        }
        Ok(node)
    }

    /// Makes this node the single voter of a new cluster. Idempotent.
    pub async fn initialize(&self, addr: SocketAddr) -> Result<(), RaftError> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| RaftError::Start(e.to_string()))?
        {
            return Ok(());
        }
        let mut members = BTreeMap::new();
        members.insert(
            self.id.0,
            BasicNode {
                addr: addr.to_string(),
            },
        );
        self.raft
            .initialize(members)
            .await
            .map_err(|e| RaftError::Start(e.to_string()))
    }

    pub fn metrics(&self) -> Metrics {
        self.raft.metrics().borrow_watched().clone()
    }

    /// The leader this node knows of. This node itself only while a quorum of voters
    /// answers it: a leader cut off from the others is not reported as leader.
    pub fn leader(&self) -> Option<NodeId> {
        let l = self
            .raft
            .metrics()
            .borrow_watched()
            .current_leader
            .map(NodeId);
        if l == Some(self.id) && self.cut_off().is_some() {
            return None;
        }
        l
    }

    /// When this node is the leader of several voters and no quorum of them has
    /// acknowledged it within its lease: for how long (since it last had one, or since it
    /// became leader).
    pub fn cut_off(&self) -> Option<Duration> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        if m.state != ServerState::Leader
            || m.membership_config.membership().voter_ids().count() < 2
        {
            return None;
        }
        let silent = match &m.last_quorum_acked {
            Some(t) => openraft::Instant::elapsed(&**t),
            None => return Some(self.lease),
        };
        (silent > self.lease).then_some(silent)
    }

    /// Resolves when the leader this node knows is no longer `from` (with the new one).
    async fn leader_changes_from(&self, from: NodeId) -> Option<NodeId> {
        let mut m = self.raft.metrics();
        loop {
            let now = m.borrow_watched().current_leader.map(NodeId);
            if now != Some(from) {
                return now;
            }
            if m.changed().await.is_err() {
                // Raft is shutting down: nothing more will change.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Why this node does not vote for now, if it does not.
    pub fn not_voting(&self) -> Option<String> {
        self.no_vote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A node that lost the tail of its log votes again once it holds everything committed
    /// (a read barrier through another leader), or when it is the only voter (nothing to
    /// catch up from), or after a minute without any leader (so that a cluster whose
    /// majority lost data can still elect one; said loudly).
    async fn vote_once_caught_up(self: Arc<Self>) {
        let started = Instant::now();
        let why = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let voters = self.membership().voters;
            if voters.len() <= 1 {
                break "it is the only voter".to_string();
            }
            let leader = self
                .raft
                .metrics()
                .borrow_watched()
                .current_leader
                .map(NodeId);
            match leader {
                Some(l) if l != self.id => match self.read_barrier().await {
                    Ok(()) => break format!("it caught up with the leader {l}"),
                    Err(e) => tracing::info!(leader = %l, error = %e, "not caught up yet"),
                },
                _ if started.elapsed() > Duration::from_secs(60) => {
                    tracing::warn!(
                        "no leader for a minute: voting again so that the cluster can elect \
                         one; entries this node lost may be missing from it"
                    );
                    break "no leader was elected for a minute".to_string();
                }
                _ => {}
            }
        };
        *self.no_vote.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.raft.runtime_config().elect(true);
        tracing::info!(reason = %why, "voting again after the Raft log lost its tail");
    }

    fn cut_off_message(&self, silent: Duration) -> String {
        format!(
            "this node leads term {} but no quorum of voters has answered it for {} ms \
             (cut off from the others?)",
            self.metrics().current_term,
            silent.as_millis()
        )
    }

    /// Resolves when this node, as leader, is cut off from a quorum (see [`Self::cut_off`]).
    async fn until_cut_off(&self) -> Duration {
        loop {
            if let Some(d) = self.cut_off() {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Leader, and acknowledged by a quorum within its lease (see [`Self::cut_off`]).
    pub fn is_leader(&self) -> bool {
        let leads = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.state == ServerState::Leader && m.current_leader == Some(self.id.0)
        };
        leads && self.cut_off().is_none()
    }

    pub fn log_entries(&self) -> u64 {
        self.log.approximate_len()
    }

    pub fn membership(&self) -> MembershipView {
        let m = self.metrics();
        let cfg = m.membership_config.membership();
        MembershipView {
            voters: cfg.voter_ids().map(NodeId).collect(),
            learners: cfg.learner_ids().map(NodeId).collect(),
            addrs: cfg
                .nodes()
                .map(|(id, n)| (NodeId(*id), n.addr.clone()))
                .collect(),
            joint: cfg.get_joint_config().len() > 1,
        }
    }

    fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.membership()
            .addrs
            .get(&node)
            .and_then(|a| a.parse().ok())
    }

    /// Commits `cmd` through the leader, wherever it is. Fails with `NoQuorum` if no leader
    /// can commit it within [`WRITE_TIMEOUT`].
    pub async fn write(&self, cmd: Command) -> Result<TxnResult, RaftError> {
        // Refuse while this node's disk is below its reserve: nothing is proposed, so
        // nothing acknowledged can be lost, and reads keep working.
        check_free_space(&self.dir, self.min_free)
            .map_err(|e| RaftError::DiskFull(e.to_string()))?;
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let mut last_err = String::from("no leader is known");
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(silent) = self.cut_off() {
                last_err = self.cut_off_message(silent);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            match self.leader() {
                Some(l) if l == self.id => {
                    let write = tokio::time::timeout(left, self.raft.client_write(cmd.clone()));
                    let answer = tokio::select! {
                        r = write => r,
                        // Proposed but not committed, and this node is cut off: it is not
                        // proposed again (it may still commit if the partition heals).
                        silent = self.until_cut_off() => {
                            return Err(RaftError::NoQuorum(self.cut_off_message(silent)));
                        }
                    };
                    match answer {
                        Err(_) => {
                            last_err = "the leader could not reach a quorum of voters".into();
                        }
                        Ok(Ok(r)) => return Ok(r.data),
                        Ok(Err(OrError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                            last_err = "leadership changed during the write".into();
                        }
                        Ok(Err(e)) => return Err(RaftError::Write(e.to_string())),
                    }
                }
                Some(l) => {
                    let Some(addr) = self.addr_of(l) else {
                        last_err = format!("leader {l} has no known address");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let req = CtlRequest::Write(cmd.clone());
                    let call = self.transport.call::<_, CtlResponse>(
                        l,
                        addr,
                        Class::Ctl,
                        "forward_write",
                        &req,
                        left.min(Duration::from_secs(3)),
                    );
                    // A write forwarded to a leader that is gone would wait out its whole
                    // timeout, even after another node (this one, maybe) took over: it
                    // is given up as soon as the leader this node knows changes.
                    let changed = self.leader_changes_from(l);
                    let answer = tokio::select! {
                        r = call => r,
                        now = changed => {
                            last_err = format!(
                                "the leader changed from {l} to {} during the write",
                                now.map(|n| n.to_string()).unwrap_or_else(|| "none".into())
                            );
                            continue;
                        }
                    };
                    match answer {
                        Ok(CtlResponse::Write(Ok(r))) => return Ok(r),
                        Ok(CtlResponse::Write(Err(RemoteError::Failed(e)))) => {
                            return Err(RaftError::Write(e))
                        }
                        Ok(CtlResponse::Write(Err(RemoteError::NotLeader { leader: None }))) => {
                            last_err = format!(
                                "the leader {l} is cut off from a quorum of voters or has stepped down"
                            );
                        }
                        Ok(CtlResponse::Write(Err(RemoteError::NotLeader { .. }))) => {
                            last_err = format!("node {l} is no longer the leader");
                        }
                        Ok(other) => last_err = format!("unexpected answer {other:?}"),
                        Err(e) => {
                            last_err = format!("cannot reach the leader {l} at {addr}: {e}");
                        }
                    }
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(RaftError::NoQuorum(last_err))
    }

    /// Waits until this node's state machine reflects every write committed before the
    /// call (ReadIndex through the leader). Reads after it are linearizable.
    pub async fn read_barrier(&self) -> Result<(), RaftError> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let mut last_err = String::from("no leader is known");
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let index = match self.leader() {
                Some(l) if l == self.id => match self.leader_read_index(left).await {
                    Ok(i) => Some(i),
                    Err(e) => {
                        last_err = e.to_string();
                        None
                    }
                },
                Some(l) => match self.addr_of(l) {
                    None => None,
                    Some(addr) => match self
                        .transport
                        .call::<_, CtlResponse>(
                            l,
                            addr,
                            Class::Ctl,
                            "read_index",
                            &CtlRequest::ReadIndex,
                            left.min(Duration::from_secs(3)),
                        )
                        .await
                    {
                        Ok(CtlResponse::ReadIndex(Ok(i))) => Some(i),
                        Ok(other) => {
                            last_err = format!("leader {l} answered {other:?}");
                            None
                        }
                        Err(e) => {
                            last_err = format!("cannot reach the leader {l} at {addr}: {e}");
                            None
                        }
                    },
                },
                None => None,
            };
            if let Some(index) = index {
                let mut rx = self.shared.applied_index.subscribe();
                let waited =
                    tokio::time::timeout(left, rx.wait_for(|applied| *applied >= index)).await;
                return match waited {
                    Ok(Ok(_)) => Ok(()),
                    _ => Err(RaftError::NoQuorum(format!(
                        "log entry {index} was not applied in time"
                    ))),
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(RaftError::NoQuorum(last_err))
    }

    async fn leader_read_index(&self, left: Duration) -> Result<u64, RaftError> {
        match tokio::time::timeout(left, self.raft.ensure_linearizable(ReadPolicy::ReadIndex)).await
        {
            Err(_) => Err(RaftError::NoQuorum(
                "the leader could not confirm its leadership with a quorum".into(),
            )),
            Ok(Err(e)) => Err(RaftError::NoQuorum(e.to_string())),
            Ok(Ok(read)) => Ok(read.index()),
        }
    }

    pub async fn add_learner(&self, node: NodeId, addr: SocketAddr) -> Result<(), RaftError> {
        self.raft
            .add_learner(
                node.0,
                BasicNode {
                    addr: addr.to_string(),
                },
                false,
            )
            .await
            .map(|_| ())
            .map_err(|e| RaftError::Membership(e.to_string()))
    }

    /// Sets the voter set to exactly `voters`; nodes dropped stay as learners.
    pub async fn set_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), RaftError> {
        let ids: BTreeSet<u64> = voters.into_iter().map(|n| n.0).collect();
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(ids), true)
            .await
            .map(|_| ())
            .map_err(|e| RaftError::Membership(e.to_string()))
    }

    /// Takes nodes out of the Raft membership entirely (voters first, then learners).
    pub async fn remove_nodes(&self, nodes: &BTreeSet<NodeId>) -> Result<(), RaftError> {
        let view = self.membership();
        let voters: BTreeSet<u64> = nodes
            .iter()
            .filter(|n| view.voters.contains(n))
            .map(|n| n.0)
            .collect();
        let change = if voters.is_empty() {
            ChangeMembers::RemoveNodes(nodes.iter().map(|n| n.0).collect())
        } else {
            ChangeMembers::RemoveVoters(voters)
        };
        self.raft
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(|e| RaftError::Membership(e.to_string()))
    }

    /// Serves one `ctl` request from a peer.
    pub async fn handle(&self, req: CtlRequest) -> CtlResponse {
        match req {
            CtlRequest::Append(r) => {
                CtlResponse::Append(self.raft.append_entries(r).await.map_err(|e| e.to_string()))
            }
            CtlRequest::Vote(_) | CtlRequest::PreVote(_) if self.not_voting().is_some() => {
                CtlResponse::Vote(Err(format!(
                    "node {} does not vote until it has caught up: {}",
                    self.id,
                    self.not_voting().unwrap_or_default()
                )))
            }
            CtlRequest::Vote(r) => {
                CtlResponse::Vote(self.raft.vote(r).await.map_err(|e| e.to_string()))
            }
            CtlRequest::PreVote(r) => {
                CtlResponse::Vote(self.raft.pre_vote(r).await.map_err(|e| e.to_string()))
            }
            CtlRequest::Snapshot { vote, meta, data } => {
                let snap = Snapshot {
                    meta,
                    snapshot: Cursor::new(data),
                };
                CtlResponse::Snapshot(
                    self.raft
                        .install_full_snapshot(vote, snap)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            CtlRequest::TransferLeader(r) => CtlResponse::TransferLeader(
                self.raft
                    .handle_transfer_leader(r)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            CtlRequest::Write(cmd) => {
                if !self.is_leader() {
                    return CtlResponse::Write(Err(RemoteError::NotLeader {
                        leader: self.leader().map(|l| l.0),
                    }));
                }
                let r = match tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(cmd)).await
                {
                    Err(_) => Err(RemoteError::Failed(
                        "the leader could not reach a quorum of voters".into(),
                    )),
                    Ok(Ok(r)) => Ok(r.data),
                    Ok(Err(OrError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                        Err(RemoteError::NotLeader {
                            leader: f.leader_id,
                        })
                    }
                    Ok(Err(e)) => Err(RemoteError::Failed(e.to_string())),
                };
                CtlResponse::Write(r)
            }
            CtlRequest::ReadIndex => {
                if !self.is_leader() {
                    return CtlResponse::ReadIndex(Err(RemoteError::NotLeader {
                        leader: self.leader().map(|l| l.0),
                    }));
                }
                CtlResponse::ReadIndex(
                    self.leader_read_index(WRITE_TIMEOUT)
                        .await
                        .map_err(|e| RemoteError::Failed(e.to_string())),
                )
            }
        }
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
