//! The typed tables of the store. Each table names its records' Rust type and version;
//! values are JSON so that fields can be added with `#[serde(default)]` without a
//! migration, and `VERSION` marks changes that do need one (handled in `decode`).

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::{ClusterId, NodeId, TokenId};

pub trait Table {
    const NAME: &'static str;
    /// Format version of the records; stored with each one.
    const VERSION: u16 = 1;
    type Value: Serialize + DeserializeOwned;
}

/// A stored record: `{"v": <format version>, "d": <the value>}`.
#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u16,
    d: T,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record {table}/{key} has format version {found}, newer than this binary's {known}")]
    TooNew {
        table: &'static str,
        key: String,
        found: u16,
        known: u16,
    },
    #[error("record {table}/{key} is malformed")]
    Malformed {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

pub fn encode<T: Table>(value: &T::Value) -> Vec<u8> {
    // Values are plain data types whose JSON encoding cannot fail.
    serde_json::to_vec(&Envelope {
        v: T::VERSION,
        d: value,
    })
    .unwrap_or_default()
}

pub fn decode<T: Table>(key: &str, bytes: &[u8]) -> Result<T::Value, DecodeError> {
    let malformed = |source| DecodeError::Malformed {
        table: T::NAME,
        key: key.to_string(),
        source,
    };
    let env: Envelope<serde_json::Value> = serde_json::from_slice(bytes).map_err(malformed)?;
    if env.v > T::VERSION {
        return Err(DecodeError::TooNew {
            table: T::NAME,
            key: key.to_string(),
            found: env.v,
            known: T::VERSION,
        });
    }
    serde_json::from_value(env.d).map_err(malformed)
}

/// Nodes admitted to the cluster, written when a node joins and refreshed by the node itself.
pub struct Nodes;
impl Table for Nodes {
    const NAME: &'static str = "nodes";
    type Value = NodeRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: NodeId,
    pub hostname: String,
    /// Address of the node's QUIC endpoint.
    pub addr: SocketAddr,
    #[serde(default)]
    pub cores: u32,
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub disks: Vec<DiskInfo>,
    #[serde(default)]
    pub version: String,
    /// What the node is for: `server` (all services) for now.
    #[serde(default)]
    pub role: String,
    /// Unix seconds.
    pub joined_at: u64,
    /// The hypervisor driver this node runs VMs with (`kvm`, `tcg`), and why.
    #[serde(default)]
    pub hypervisor: String,
    #[serde(default)]
    pub hypervisor_reason: String,
    /// vCPUs placed per core on this node (Nova's `cpu_allocation_ratio`); 0: the default.
    #[serde(default)]
    pub cpu_allocation_ratio: u32,
    /// In maintenance: no new VMs are placed here (set by an admin, `None` otherwise),
    /// with who set it and when.
    #[serde(default)]
    pub maintenance: Option<Maintenance>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Maintenance {
    pub reason: String,
    pub by: String,
    pub since: u64,
}

/// Nodes removed from the cluster for good, key = node id: their certificates are refused
/// by every node's transport, and the id cannot join again.
pub struct RemovedNodes;
impl Table for RemovedNodes {
    const NAME: &'static str = "removed_nodes";
    type Value = RemovedNode;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RemovedNode {
    pub id: NodeId,
    pub hostname: String,
    /// Who removed it, and when (Unix seconds).
    pub by: String,
    pub at: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    pub name: String,
    pub size_bytes: u64,
    pub rotational: bool,
}

/// Cluster-wide settings. Key `cluster` holds [`ClusterSettings`].
pub struct Settings;
impl Table for Settings {
    const NAME: &'static str = "settings";
    type Value = ClusterSettings;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    pub cluster_id: ClusterId,
    pub name: String,
    pub created_at: u64,
    pub ca_cert_pem: String,
}

/// Secrets the cluster needs on every voter; never printed, never sent to the CLI.
/// Key `ca` holds the CA key used to sign joining nodes' certificates.
pub struct Secrets;
impl Table for Secrets {
    const NAME: &'static str = "secrets";
    type Value = Secret;
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct Secret {
    pub pem: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Join tokens: short-lived, single-use; only the SHA-256 of the secret is stored.
pub struct JoinTokens;
impl Table for JoinTokens {
    const NAME: &'static str = "join_tokens";
    type Value = JoinTokenRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct JoinTokenRecord {
    pub id: TokenId,
    pub secret_sha256: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub created_on: NodeId,
    pub used_by: Option<NodeId>,
    pub used_at: Option<u64>,
}

/// Servers that asked to join without a token, waiting for an administrator to compare
/// their join code and accept or reject them (keyed by the would-be node id).
pub struct PendingJoins;
impl Table for PendingJoins {
    const NAME: &'static str = "pending_joins";
    type Value = PendingJoinRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PendingJoinRecord {
    pub node: NodeId,
    pub hostname: String,
    pub addr: SocketAddr,
    pub cores: u32,
    pub memory_bytes: u64,
    pub version: String,
    /// The code both consoles show (over the CA fingerprint and the request's key).
    pub code: String,
    /// SHA-256 of the certificate request, so a later poll must carry the same key.
    pub csr_sha256: String,
    pub requested_at: u64,
    /// `None` while waiting; then who decided, when, and whether it was accepted.
    pub decision: Option<JoinDecision>,
    /// The address the request came from (what the transport saw, not what it claims).
    #[serde(default)]
    pub source: Option<std::net::IpAddr>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct JoinDecision {
    pub accepted: bool,
    pub by: String,
    pub at: u64,
}

/// The append-only event log (who did what, when), trimmed to the newest entries.
pub struct Events;
impl Table for Events {
    const NAME: &'static str = "events";
    type Value = Event;
}

/// How many events the log keeps.
pub const EVENTS_KEPT: u64 = 10_000;

/// The audit log: who did what through the console or the API, when, from where, with
/// what result. Append-only, trimmed to the newest [`AUDIT_KEPT`].
pub struct Audit;
impl Table for Audit {
    const NAME: &'static str = "audit";
    type Value = AuditRecord;
}

pub const AUDIT_KEPT: u64 = 20_000;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct AuditRecord {
    pub at_ms: u64,
    /// The user's name and id.
    pub user: String,
    pub user_id: String,
    /// The project acted in (name), if any.
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    /// What was asked, e.g. `instance.create`, and on what (a name or id).
    pub action: String,
    pub target: String,
    /// Where the request came from (client address) and through what (`console`, `api`).
    pub source: String,
    pub via: String,
    /// `None`: done; `Some(reason)`: refused or failed, in words.
    #[serde(default)]
    pub error: Option<String>,
}

/// Capacity and usage over time, sampled by the leader once a minute.
pub struct UsageSamples;
impl Table for UsageSamples {
    const NAME: &'static str = "usage_samples";
    type Value = UsageSample;
}

/// One day of samples.
pub const USAGE_KEPT: u64 = 1_440;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct UsageSample {
    pub at_ms: u64,
    pub nodes_total: u32,
    pub nodes_up: u32,
    /// vCPUs of placed VMs and the cores of live nodes times their allocation ratio.
    pub vcpus_used: u64,
    pub vcpus_total: u64,
    pub ram_used_mb: u64,
    pub ram_total_mb: u64,
    /// Bytes the volume regions use and the size of the filesystems holding them.
    pub storage_used_bytes: u64,
    pub storage_total_bytes: u64,
    pub vms_running: u32,
    pub vms_total: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Unix milliseconds, taken by the node that proposed the event.
    pub at_ms: u64,
    pub node: NodeId,
    pub kind: String,
    pub message: String,
}

/// A free-form table for diagnostics and benchmarks (`strata debug put`).
pub struct DebugKv;
impl Table for DebugKv {
    const NAME: &'static str = "debug_kv";
    type Value = serde_json::Value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_carry_their_version() {
        let n = encode::<DebugKv>(&serde_json::json!(5));
        assert_eq!(decode::<DebugKv>("k", &n).unwrap(), serde_json::json!(5));
        let ev = Event {
            at_ms: 1,
            node: NodeId(2),
            kind: "k".into(),
            message: "m".into(),
        };
        let bytes = encode::<Events>(&ev);
        assert!(std::str::from_utf8(&bytes).unwrap().contains("\"v\":1"));
        assert_eq!(decode::<Events>("x", &bytes).unwrap(), ev);
    }

    #[test]
    fn newer_or_broken_records_are_errors_naming_the_record() {
        let e = decode::<Events>("7", br#"{"v":9,"d":{"at_ms":1}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("events/7") && e.contains("version 9"), "{e}");
        let e = decode::<Events>("8", b"nope").unwrap_err().to_string();
        assert!(e.contains("events/8"), "{e}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret {
            pem: "-----BEGIN PRIVATE KEY-----".into(),
        };
        assert!(!format!("{s:?}").contains("PRIVATE"));
    }

    /// A version-1 node record as first written; it must keep decoding.
    #[test]
    fn frozen_node_record_v1_decodes() {
        let frozen = br#"{"v":1,"d":{"id":"00000000000000ff","hostname":"h","addr":"10.0.0.1:7440","joined_at":5}}"#;
        let n = decode::<Nodes>("ff", frozen).unwrap();
        assert_eq!(n.id, NodeId(255));
        assert_eq!(n.cores, 0);
    }
}
