//! The join handshake, served on the `join` class to peers without a certificate: the
//! joiner proves a token, sends a CSR, and receives its certificate and the peer list.
//! The token is consumed by a Raft transaction (single use even under races), and the
//! node is recorded in the `nodes` table in the same transaction.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tokens::JoinToken;
use super::{now_ms, now_secs, Control, ControlError};
use crate::cluster::store::tables::{
    DiskInfo, Event, Events, JoinTokenRecord, JoinTokens, NodeRecord, Nodes, RemovedNodes, Secrets,
    Settings, EVENTS_KEPT,
};
use crate::cluster::store::{StoreError, TxnBuilder};
use crate::ids::{ClusterId, NodeId, TokenId};
use crate::transport::pki::ClusterCa;
use crate::transport::{read_frame, write_frame, Peer, Service};

/// How a joiner proves it may join: a token from `strata token create`, or nothing (it
/// waits until an administrator compares its join code and accepts it).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum JoinProof {
    Token { id: TokenId, secret: String },
    Code,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct JoinRequest {
    pub proof: JoinProof,
    pub node: NodeId,
    pub csr_der: Vec<u8>,
    pub addr: SocketAddr,
    pub hostname: String,
    pub cores: u32,
    pub memory_bytes: u64,
    pub disks: Vec<DiskInfo>,
    pub version: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub enum JoinResponse {
    Accepted {
        cert_pem: String,
        ca_cert_pem: String,
        cluster_id: ClusterId,
        cluster_name: String,
        peers: Vec<(NodeId, SocketAddr)>,
    },
    /// Recorded; ask again later. `code` is what the cluster's web console shows.
    Pending {
        code: String,
    },
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum JoinRefusal {
    #[error("unknown join token {0}")]
    Unknown(TokenId),
    #[error("join token {0} does not match (wrong secret)")]
    WrongSecret(TokenId),
    #[error("join token {id} expired {ago} s ago")]
    Expired { id: TokenId, ago: u64 },
    #[error("join token {id} was already used by node {by}")]
    Used { id: TokenId, by: NodeId },
    #[error("node id {0} is already a member of this cluster")]
    DuplicateNode(NodeId),
    #[error(
        "node {node} was removed from this cluster (by {by}); reinstall it to join as a new node"
    )]
    Removed { node: NodeId, by: String },
    #[error("the cluster is not ready to admit nodes: {0}")]
    NotReady(String),
    #[error("cannot sign the certificate request: {0}")]
    BadCsr(String),
    #[error("an administrator ({by}) rejected the join request of node {node}")]
    Rejected { node: NodeId, by: String },
    #[error("node {0} already asked to join with a different key; start the join again")]
    KeyChanged(NodeId),
    #[error("{0} join requests are already waiting; accept or reject them in the web console (Nodes) first")]
    TooManyPending(usize),
    #[error("{count} join requests from {from} are already waiting; accept or reject them first")]
    TooManyFromSource {
        from: std::net::IpAddr,
        count: usize,
    },
}

/// Join requests waiting longer than this are dropped when a new one arrives.
pub const PENDING_JOIN_TTL_S: u64 = 3600;
/// At most this many requests wait at once (they are written by unauthenticated peers).
pub const MAX_PENDING_JOINS: usize = 16;
/// Join requests waiting at once from one address: one source cannot fill the queue.
pub const MAX_PENDING_PER_SOURCE: usize = 2;

/// The short code a joiner without a token shows, and the cluster's web console shows
/// for its request: 40 bits of SHA-256 over the CA fingerprint the joiner pinned and its
/// certificate request, in eight characters without look-alikes (e.g. `K7QM-4T2X`). A
/// machine in the middle would have to present another CA or another key, and so
/// another code.
pub fn join_code(ca_fingerprint: &str, csr_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut h = Sha256::new();
    h.update(b"strata join code v1\0");
    h.update(ca_fingerprint.to_ascii_lowercase().as_bytes());
    h.update(csr_der);
    let d = h.finalize();
    let bits = d[..5].iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
    let chars: String = (0..8)
        .map(|i| ALPHABET[((bits >> (35 - 5 * i)) & 31) as usize] as char)
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

pub struct JoinService {
    pub control: Arc<Control>,
}

#[async_trait::async_trait]
impl Service for JoinService {
    async fn handle_stream(
        &self,
        peer: Peer,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let resp = match read_frame::<JoinRequest>(&mut recv, 64 << 10).await {
            Err(e) => JoinResponse::Refused(format!("malformed join request: {e}")),
            Ok(req) => match self.control.admit(req, peer.addr.ip()).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(addr = %peer.addr, reason = %e, "join refused");
                    JoinResponse::Refused(e.to_string())
                }
            },
        };
        if write_frame(&mut send, &resp).await.is_ok() {
            let _ = send.finish();
        }
    }
}

/// What the proof contributes to the admitting transaction.
pub(super) struct Admission {
    pub(super) txn: TxnBuilder,
    pub(super) how: String,
}

impl Control {
    /// Admits a joining node if its token is valid and unused, or if an administrator
    /// accepted its join request; records the request otherwise.
    pub async fn admit(
        &self,
        req: JoinRequest,
        source: std::net::IpAddr,
    ) -> Result<JoinResponse, JoinRefusal> {
        let store = &self.store;
        store
            .linearizable()
            .await
            .map_err(|e| JoinRefusal::NotReady(e.to_string()))?;
        let not_ready = |e: StoreError| JoinRefusal::NotReady(e.to_string());
        if store
            .get::<Nodes>(&req.node.to_string())
            .map_err(not_ready)?
            .is_some()
        {
            return Err(JoinRefusal::DuplicateNode(req.node));
        }
        if let Some(r) = store
            .get::<RemovedNodes>(&req.node.to_string())
            .map_err(not_ready)?
        {
            return Err(JoinRefusal::Removed {
                node: req.node,
                by: r.value.by,
            });
        }
        let settings = store
            .get::<Settings>("cluster")
            .map_err(not_ready)?
            .ok_or_else(|| JoinRefusal::NotReady("cluster settings are not written yet".into()))?
            .value;
        let admission = match &req.proof {
            JoinProof::Token { id, secret } => self.check_token(id, secret, req.node)?,
            JoinProof::Code => {
                let fp = crate::transport::pki::pem_to_cert_der(&settings.ca_cert_pem)
                    .map(|d| crate::transport::pki::fingerprint(&d))
                    .map_err(|e| JoinRefusal::NotReady(format!("stored CA certificate: {e}")))?;
                match self.join_request(&req, &fp, source).await? {
                    Ok(a) => a,
                    Err(code) => return Ok(JoinResponse::Pending { code }),
                }
            }
        };
        let ca_key = store
            .get::<Secrets>("ca")
            .map_err(not_ready)?
            .ok_or_else(|| JoinRefusal::NotReady("the CA key is not in the store yet".into()))?
            .value;
        let ca = ClusterCa(crate::transport::pki::CertifiedKey {
            cert_pem: settings.ca_cert_pem.clone(),
            key_pem: ca_key.pem,
        });
        let cert_pem = ca
            .sign_csr(req.node, &req.csr_der)
            .map_err(|e| JoinRefusal::BadCsr(crate::telemetry::error_chain(&e)))?;
        let record = NodeRecord {
            id: req.node,
            hostname: req.hostname.clone(),
            addr: req.addr,
            cores: req.cores,
            memory_bytes: req.memory_bytes,
            disks: req.disks.clone(),
            version: req.version.clone(),
            role: "server".into(),
            joined_at: now_secs(),
            // Filled in by the node itself when it starts serving.
            hypervisor: String::new(),
            hypervisor_reason: String::new(),
            cpu_allocation_ratio: 0,
            maintenance: None,
        };
        let event = Event {
            at_ms: now_ms(),
            node: self.node,
            kind: "node.joined".into(),
            message: format!(
                "node {} ({}, {}) joined {}",
                req.node, req.hostname, req.addr, admission.how
            ),
        };
        let txn = admission
            .txn
            .require_revision::<Nodes>(req.node.to_string(), 0)
            .put::<Nodes>(req.node.to_string(), &record)
            .append::<Events>(&event)
            .trim::<Events>(EVENTS_KEPT);
        match store.commit(txn).await {
            Ok(_) => {}
            Err(StoreError::Conflict { table, .. }) if table == "join_tokens" => {
                let JoinProof::Token { id, .. } = req.proof else {
                    return Err(JoinRefusal::NotReady("join token conflict".into()));
                };
                let by = store
                    .get::<JoinTokens>(&id.0)
                    .ok()
                    .flatten()
                    .and_then(|t| t.value.used_by)
                    .unwrap_or_default();
                return Err(JoinRefusal::Used { id, by });
            }
            Err(StoreError::Conflict { table, .. }) if table == "pending_joins" => {
                return Err(JoinRefusal::NotReady(
                    "the join request changed meanwhile; ask again".into(),
                ))
            }
            Err(StoreError::Conflict { .. }) => return Err(JoinRefusal::DuplicateNode(req.node)),
            Err(e) => return Err(not_ready(e)),
        }
        tracing::info!(node = %req.node, addr = %req.addr, "admitted node");
        let peers = store
            .list::<Nodes>()
            .map_err(not_ready)?
            .into_iter()
            .map(|n| (n.value.id, n.value.addr))
            .collect();
        Ok(JoinResponse::Accepted {
            cert_pem,
            ca_cert_pem: settings.ca_cert_pem,
            cluster_id: settings.cluster_id,
            cluster_name: settings.name,
            peers,
        })
    }

    fn check_token(
        &self,
        id: &TokenId,
        secret: &str,
        node: NodeId,
    ) -> Result<Admission, JoinRefusal> {
        let tok = self
            .store
            .get::<JoinTokens>(&id.0)
            .map_err(|e| JoinRefusal::NotReady(e.to_string()))?
            .ok_or_else(|| JoinRefusal::Unknown(id.clone()))?;
        if tok.value.secret_sha256 != JoinToken::secret_hash(secret) {
            return Err(JoinRefusal::WrongSecret(id.clone()));
        }
        if let Some(by) = tok.value.used_by {
            return Err(JoinRefusal::Used { id: id.clone(), by });
        }
        let now = now_secs();
        if now >= tok.value.expires_at {
            return Err(JoinRefusal::Expired {
                id: id.clone(),
                ago: now - tok.value.expires_at,
            });
        }
        let used = JoinTokenRecord {
            used_by: Some(node),
            used_at: Some(now),
            ..tok.value.clone()
        };
        Ok(Admission {
            txn: TxnBuilder::new()
                .require_revision::<JoinTokens>(id.0.clone(), tok.revision)
                .put::<JoinTokens>(id.0.clone(), &used),
            how: format!("with token {id}"),
        })
    }

    /// Creates a single-use join token valid for `ttl`.
    pub async fn create_token(&self, ttl: Duration) -> Result<(JoinToken, u64), ControlError> {
        if self.store.get::<Settings>("cluster")?.is_none() {
            // A node that joined moments ago may not have the cluster's state yet.
            self.store.linearizable().await?;
        }
        let settings = self.store.get::<Settings>("cluster")?.ok_or_else(|| {
            ControlError::NotReady("the cluster has not finished bootstrapping".into())
        })?;
        let fp = crate::transport::pki::pem_to_cert_der(&settings.value.ca_cert_pem)
            .map(|d| crate::transport::pki::fingerprint(&d))
            .map_err(|e| ControlError::NotReady(format!("stored CA certificate: {e}")))?;
        let token = JoinToken::generate(&fp);
        let now = now_secs();
        let expires_at = now + ttl.as_secs().max(1);
        let rec = JoinTokenRecord {
            id: token.id.clone(),
            secret_sha256: JoinToken::secret_hash(&token.secret),
            created_at: now,
            expires_at,
            created_on: self.node,
            used_by: None,
            used_at: None,
        };
        let event = Event {
            at_ms: now_ms(),
            node: self.node,
            kind: "token.created".into(),
            message: format!("join token {} created, valid {} s", token.id, ttl.as_secs()),
        };
        self.store
            .commit(
                TxnBuilder::new()
                    .require_revision::<JoinTokens>(token.id.0.clone(), 0)
                    .put::<JoinTokens>(token.id.0.clone(), &rec)
                    .append::<Events>(&event)
                    .trim::<Events>(EVENTS_KEPT),
            )
            .await?;
        Ok((token, expires_at))
    }
}

impl Control {
    /// A TLS server certificate for this node's OpenStack API, signed by the cluster CA
    /// (whose key is in the replicated secrets), naming `dns` and `ips`.
    pub fn issue_api_cert(
        &self,
        dns: &[String],
        ips: &[std::net::IpAddr],
    ) -> Result<crate::transport::pki::CertifiedKey, ControlError> {
        let settings = self
            .store
            .get::<Settings>("cluster")?
            .ok_or_else(|| ControlError::NotReady("cluster settings are not written yet".into()))?
            .value;
        let key = self
            .store
            .get::<Secrets>("ca")?
            .ok_or_else(|| ControlError::NotReady("the CA key is not in the store yet".into()))?
            .value;
        let ca = ClusterCa(crate::transport::pki::CertifiedKey {
            cert_pem: settings.ca_cert_pem,
            key_pem: key.pem,
        });
        ca.issue_server(dns, ips)
            .map_err(|e| ControlError::Invalid(crate::telemetry::error_chain(&e)))
    }
}
