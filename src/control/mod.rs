//! Validation and cluster-wide decisions. The only writer of desired state: everything
//! above it (CLI, admin API, later the OpenStack API and console) calls in here.

pub mod app_credentials;
pub mod audit;
pub mod caller;
pub mod debug;
pub mod identity;
pub mod image_format;
pub mod images;
pub mod interfaces;
pub mod join;
pub mod join_requests;
pub mod keypairs;
pub mod migrate;
pub mod networks;
pub mod nodes;
pub mod passwords;
pub mod placement;
pub mod ports;
pub mod quotas;
pub mod routers;
pub mod secgroups;
pub mod server_groups;
pub mod servers;
pub mod snapshots;
pub mod tokens;
pub mod usage;
pub mod users;
pub mod vms;
pub mod volumes;
mod voters;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::agent::host::HostInfo;
use crate::cluster::membership::{Liveness, Membership};
use crate::cluster::raft::RaftNode;
use crate::cluster::store::compute_tables::{default_flavors, Flavors, PlacementEpochs};
use crate::cluster::store::tables::{
    ClusterSettings, Event, Events, NodeRecord, Nodes, Secret, Secrets, Settings, EVENTS_KEPT,
};
use crate::cluster::store::{Store, StoreError, TxnBuilder};
use crate::config::RaftTuning;
use crate::ids::{ClusterId, NodeId};

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    /// Wrong credentials, or a token that is not (or no longer) valid.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials without the right to do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request clashes with what exists (a duplicate name).
    #[error("{0}")]
    Conflict(String),
    /// The project's quota for `resource` would be exceeded.
    #[error("{message}")]
    OverQuota { resource: String, message: String },
}

impl Control {
    /// A record found by its key (id), or by its name when that names exactly one.
    pub(crate) fn find_named<T: crate::cluster::store::Table>(
        &self,
        what: &str,
        id_or_name: &str,
        name_of: impl Fn(&T::Value) -> &str,
    ) -> Result<crate::cluster::store::Versioned<T::Value>, ControlError> {
        if let Some(v) = self.store.get::<T>(id_or_name)? {
            return Ok(v);
        }
        let mut found: Vec<_> = self
            .store
            .list::<T>()?
            .into_iter()
            .filter(|v| name_of(&v.value) == id_or_name)
            .collect();
        match found.len() {
            0 => Err(ControlError::NotFound(format!("no {what} {id_or_name:?}"))),
            1 => Ok(found.remove(0)),
            n => Err(ControlError::Invalid(format!(
                "{n} {what}s are named {id_or_name:?}; use the {what}'s id"
            ))),
        }
    }
}

pub struct Control {
    pub node: NodeId,
    pub store: Store,
    pub membership: Arc<Membership>,
    pub tuning: RaftTuning,
    /// How long a replica's node may be down before the replica is rebuilt elsewhere.
    pub replica_grace: Duration,
    /// How long API tokens are valid.
    pub token_ttl: Duration,
    /// This node's `cpu_allocation_ratio`, recorded in its node record for placement.
    pub cpu_allocation_ratio: u32,
    /// Reads VM consoles on the node that runs them (set by the daemon once the agent
    /// exists).
    pub consoles: std::sync::OnceLock<Arc<dyn ConsoleReader>>,
    /// Reads and writes volume data on this node (image uploads and downloads; set by the
    /// daemon once the agent exists).
    pub volume_data: std::sync::OnceLock<Arc<dyn images::VolumeData>>,
    /// Requests refused without credentials, kept in this node's memory only.
    pub refusals: audit::Refusals,
    /// Failed sign-ins per user name and client address (lockouts).
    pub throttle: passwords::Throttle,
}

/// Reads a VM's serial console on the node that runs it.
#[async_trait::async_trait]
pub trait ConsoleReader: Send + Sync + 'static {
    /// The last `bytes` bytes (or from `offset`), and the offset just past them.
    async fn tail(
        &self,
        node: NodeId,
        vm: &crate::ids::VmId,
        bytes: u64,
        offset: Option<u64>,
    ) -> Result<(Vec<u8>, u64), String>;
    /// Types `data` into the console.
    async fn input(&self, node: NodeId, vm: &crate::ids::VmId, data: &[u8]) -> Result<(), String>;
}

#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub hostname: String,
    pub addr: SocketAddr,
    /// voter, learner, or none (admitted but not yet in the Raft membership).
    pub raft: &'static str,
    pub liveness: &'static str,
    pub leader: bool,
    pub cores: u32,
    pub memory_bytes: u64,
    pub disks: Vec<crate::cluster::store::tables::DiskInfo>,
    pub version: String,
    pub role: String,
    pub hypervisor: String,
    pub hypervisor_reason: String,
}

#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    pub cluster_id: Option<ClusterId>,
    pub cluster_name: Option<String>,
    pub node: NodeId,
    pub leader: Option<NodeId>,
    pub raft_state: String,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub nodes: Vec<NodeStatus>,
    pub nodes_alive: usize,
}

impl Control {
    pub fn raft(&self) -> &Arc<RaftNode> {
        self.store.raft()
    }

    /// First start of a new cluster: writes its settings, the CA key and this node's record.
    pub async fn bootstrap(
        &self,
        cluster_id: ClusterId,
        name: &str,
        ca_cert_pem: &str,
        ca_key_pem: &str,
        me: NodeRecord,
    ) -> Result<(), ControlError> {
        if self.store.get::<Settings>("cluster")?.is_some() {
            return Ok(());
        }
        let settings = ClusterSettings {
            cluster_id,
            name: name.to_string(),
            created_at: now_secs(),
            ca_cert_pem: ca_cert_pem.to_string(),
        };
        let event = Event {
            at_ms: now_ms(),
            node: self.node,
            kind: "cluster.created".into(),
            message: format!("cluster {name} created by node {}", self.node),
        };
        let mut txn = TxnBuilder::new();
        for f in default_flavors() {
            txn = txn.put::<Flavors>(f.name.clone(), &f);
        }
        self.store
            .commit(
                txn.require_revision::<Settings>("cluster", 0)
                    .put::<Settings>("cluster", &settings)
                    .put::<Secrets>(
                        "ca",
                        &Secret {
                            pem: ca_key_pem.to_string(),
                        },
                    )
                    .put::<Nodes>(self.node.to_string(), &me)
                    .put::<PlacementEpochs>("vms", &0)
                    .append::<Events>(&event)
                    .trim::<Events>(EVENTS_KEPT),
            )
            .await?;
        Ok(())
    }

    /// Keeps this node's record (address, hardware, version) current in the store.
    pub async fn register_self(
        &self,
        addr: SocketAddr,
        host: &HostInfo,
    ) -> Result<bool, ControlError> {
        let current = self.store.get::<Nodes>(&self.node.to_string())?;
        let Some(current) = current else {
            return Err(ControlError::NotReady(format!(
                "node {} is not in the nodes table yet",
                self.node
            )));
        };
        let want = NodeRecord {
            addr,
            hostname: host.hostname.clone(),
            cores: host.cores,
            memory_bytes: host.memory_bytes,
            disks: host.disks.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            hypervisor: host.hypervisor.clone(),
            hypervisor_reason: host.hypervisor_reason.clone(),
            cpu_allocation_ratio: self.cpu_allocation_ratio,
            ..current.value.clone()
        };
        if want == current.value {
            return Ok(false);
        }
        self.store
            .commit(
                TxnBuilder::new()
                    .require_revision::<Nodes>(self.node.to_string(), current.revision)
                    .put::<Nodes>(self.node.to_string(), &want),
            )
            .await?;
        Ok(true)
    }

    pub async fn record_event(&self, kind: &str, message: String) -> Result<(), ControlError> {
        let event = Event {
            at_ms: now_ms(),
            node: self.node,
            kind: kind.into(),
            message,
        };
        self.store
            .commit(
                TxnBuilder::new()
                    .append::<Events>(&event)
                    .trim::<Events>(EVENTS_KEPT),
            )
            .await?;
        Ok(())
    }

    /// The cluster as this node sees it: Raft state from Raft, nodes from the store,
    /// liveness from gossip.
    pub fn status(&self) -> Result<ClusterStatus, ControlError> {
        let raft = self.raft();
        let m = raft.metrics();
        let view = raft.membership();
        let gossip = self.membership.view();
        let settings = self.store.get::<Settings>("cluster")?.map(|s| s.value);
        // Not this node while it is cut off from a quorum (it would lead an old term).
        let leader = raft.leader();
        let cut_off = raft.cut_off();
        let mut nodes = Vec::new();
        let records: BTreeMap<NodeId, NodeRecord> = self
            .store
            .list::<Nodes>()?
            .into_iter()
            .map(|r| (r.value.id, r.value))
            .collect();
        for (id, rec) in &records {
            let liveness = if *id == self.node {
                "alive"
            } else {
                match gossip.get(id).map(|p| p.liveness) {
                    Some(Liveness::Alive) => "alive",
                    Some(Liveness::Suspect) => "suspect",
                    Some(Liveness::Down) => "down",
                    None => "unknown",
                }
            };
            nodes.push(NodeStatus {
                id: *id,
                hostname: rec.hostname.clone(),
                addr: rec.addr,
                raft: if view.voters.contains(id) {
                    "voter"
                } else if view.learners.contains(id) {
                    "learner"
                } else {
                    "none"
                },
                liveness,
                leader: leader == Some(*id),
                cores: rec.cores,
                memory_bytes: rec.memory_bytes,
                disks: rec.disks.clone(),
                version: rec.version.clone(),
                role: rec.role.clone(),
                hypervisor: rec.hypervisor.clone(),
                hypervisor_reason: rec.hypervisor_reason.clone(),
            });
        }
        let nodes_alive = nodes.iter().filter(|n| n.liveness == "alive").count();
        Ok(ClusterStatus {
            cluster_id: settings.as_ref().map(|s| s.cluster_id.clone()),
            cluster_name: settings.map(|s| s.name),
            node: self.node,
            leader,
            raft_state: match cut_off {
                Some(d) => format!("{:?}, no quorum for {} ms", m.state, d.as_millis()),
                None => format!("{:?}", m.state),
            },
            term: m.current_term,
            commit_index: m.local_committed.as_ref().map(|l| l.index()).unwrap_or(0),
            applied_index: m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0),
            voters: view.voters.into_iter().collect(),
            learners: view.learners.into_iter().collect(),
            nodes,
            nodes_alive,
        })
    }

    /// Runs the leader-only reconcilers until the task is dropped.
    pub async fn run_reconcilers(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down_since = BTreeMap::new();
        let mut routers_down = std::collections::BTreeMap::new();
        let mut replicas_down = BTreeMap::new();
        let mut last_sample =
            now_ms().saturating_sub(usage::SAMPLE_EVERY.as_millis() as u64 - 5_000);
        loop {
            tick.tick().await;
            if !self.raft().is_leader() {
                down_since.clear();
                replicas_down.clear();
                continue;
            }
            if now_ms().saturating_sub(last_sample) >= usage::SAMPLE_EVERY.as_millis() as u64 {
                last_sample = now_ms();
                if let Err(e) = self.sample_usage().await {
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), "usage sample failed");
                }
                if let Err(e) = self.prune_revoked_tokens().await {
                    tracing::warn!(error = %crate::telemetry::error_chain(&e), "pruning revoked tokens failed");
                }
            }
            if let Err(e) = voters::reconcile(&self, &mut down_since).await {
                tracing::warn!(error = %crate::telemetry::error_chain(&e), "membership reconcile failed");
            }
            if let Err(e) = self.rereplicate(&mut replicas_down).await {
                tracing::warn!(error = %crate::telemetry::error_chain(&e), "re-replication failed");
            }
            if let Err(e) = self.move_lost_routers(&mut routers_down).await {
                tracing::warn!(error = %crate::telemetry::error_chain(&e), "moving routers failed");
            }
        }
    }
}
