//! The joining side of the join handshake (`strata join`): find the cluster (an address,
//! or discovery on the local network), pin its CA (from the token, or from discovery and
//! then confirmed by the join code), prove the token or wait for an administrator to
//! accept the join code, receive a certificate, write the data directory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::datadir::{DataDir, DataDirError, NodeFile, PeerEntry, NODE_FILE_FORMAT};
use crate::cluster::discovery;
use crate::control::join::{join_code, JoinProof, JoinRequest, JoinResponse};
use crate::control::tokens::{JoinToken, TokenFormatError};
use crate::ids::NodeId;
use crate::transport::pki::{self, CertifiedKey};
use crate::transport::{exchange, tls, TransportError, ALPN_JOIN};

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Token(#[from] TokenFormatError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot reach {addr} to join")]
    Unreachable {
        addr: SocketAddr,
        #[source]
        source: TransportError,
    },
    #[error("{addr} refused the join: {reason}")]
    Refused { addr: SocketAddr, reason: String },
    #[error("join failed: {0}")]
    Other(String),
}

/// Where to join: a node's QUIC address, or whichever cluster answers on the local network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    /// Broadcast discovery, limited to the cluster of this name if given.
    Discover {
        cluster_name: Option<String>,
    },
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "discover" {
            return Ok(Target::Discover { cluster_name: None });
        }
        s.parse()
            .map(Target::Addr)
            .map_err(|_| format!("{s:?} is neither an IP:port address nor `discover`"))
    }
}

/// How long to wait for discovery answers in one round.
const DISCOVERY_WAIT: Duration = Duration::from_secs(2);
/// How often a joiner without a token asks whether it has been accepted.
const POLL: Duration = Duration::from_secs(3);

/// Joins a cluster and writes the data directory. With a token the join is immediate
/// (or fails within `timeout`); without one this prints a join code and waits until an
/// administrator accepts it in the cluster's web console (or rejects it).
pub async fn join(
    dir: &DataDir,
    target: &Target,
    token: Option<&str>,
    advertise: SocketAddr,
    timeout: Duration,
) -> Result<NodeFile, JoinError> {
    let token = token.map(JoinToken::parse).transpose()?;
    dir.refuse_if_initialised()?;
    let (cluster_addr, fingerprint) = locate(target, token.as_ref(), timeout).await?;
    let node = NodeId::random();
    let (key_pem, csr_der) =
        pki::node_key_and_csr(node).map_err(|e| JoinError::Other(e.to_string()))?;
    let host = crate::agent::host::detect();
    let req = JoinRequest {
        proof: match &token {
            Some(t) => JoinProof::Token {
                id: t.id.clone(),
                secret: t.secret.clone(),
            },
            None => JoinProof::Code,
        },
        node,
        csr_der,
        addr: advertise,
        hostname: host.hostname,
        cores: host.cores,
        memory_bytes: host.memory_bytes,
        disks: host.disks,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let my_code = join_code(&fingerprint, &req.csr_der);
    let mut shown: Option<Instant> = None;
    let resp = loop {
        match ask(cluster_addr, &fingerprint, &req, timeout).await {
            Ok(JoinResponse::Pending { code }) if code == my_code => {
                if shown.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    println!(
                        "STRATA-JOIN-CODE {my_code}\n\
                         This server asks to join the cluster at {cluster_addr} (CA {}...) with join code {my_code}.\n\
                         Accept it in that cluster's web console (Nodes, join requests) if the code there is the same.",
                        &fingerprint[..16]
                    );
                    shown = Some(Instant::now());
                }
            }
            Ok(JoinResponse::Pending { code }) => {
                return Err(JoinError::Other(format!(
                    "{cluster_addr} shows join code {code} for this request but this server computed {my_code}: \
                     something between them changed the connection; not joining"
                )))
            }
            Ok(other) => break other,
            Err(e) if token.is_none() => {
                tracing::warn!(error = %crate::telemetry::error_chain(&e), "join request not answered; asking again");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(POLL).await;
    };
    match resp {
        JoinResponse::Refused(reason) => Err(JoinError::Refused {
            addr: cluster_addr,
            reason,
        }),
        JoinResponse::Pending { .. } => Err(JoinError::Other("unexpected answer".into())),
        JoinResponse::Accepted {
            cert_pem,
            ca_cert_pem,
            cluster_id,
            cluster_name,
            peers,
        } => {
            let file = NodeFile {
                format: NODE_FILE_FORMAT,
                node_id: node,
                cluster_id,
                cluster_name,
                peers: peers
                    .into_iter()
                    .filter(|(id, _)| *id != node)
                    .map(|(id, addr)| PeerEntry { id, addr })
                    .collect(),
            };
            dir.write_joined(&file, &ca_cert_pem, &CertifiedKey { cert_pem, key_pem })?;
            Ok(file)
        }
    }
}

/// The address to join at and the CA fingerprint to pin there.
async fn locate(
    target: &Target,
    token: Option<&JoinToken>,
    timeout: Duration,
) -> Result<(SocketAddr, String), JoinError> {
    let (targets, name) = match (target, token) {
        (Target::Addr(a), Some(t)) => return Ok((*a, t.ca_fingerprint.clone())),
        (Target::Addr(a), None) => (vec![SocketAddr::new(a.ip(), discovery::PORT)], None),
        (Target::Discover { cluster_name }, _) => {
            // Every interface's directed broadcast (works without a default route) and
            // the limited broadcast.
            let mut t: Vec<SocketAddr> = crate::network::ifaddrs::broadcast_addresses()
                .into_iter()
                .map(|b| SocketAddr::new(b.into(), discovery::PORT))
                .collect();
            t.push(discovery::broadcast());
            (t, cluster_name.as_deref())
        }
    };
    let started = Instant::now();
    let mut said = String::new();
    loop {
        let found = discovery::probe(&targets, name, DISCOVERY_WAIT)
            .await
            .map_err(|e| JoinError::Other(crate::telemetry::error_chain(&e)))?;
        let fitting: Vec<_> = found
            .iter()
            .filter(|a| token.is_none_or(|t| t.ca_fingerprint == a.ca_fingerprint))
            .collect();
        let mut clusters: Vec<_> = fitting
            .iter()
            .map(|a| (&a.cluster_name, a.cluster_id.to_string()))
            .collect();
        clusters.sort();
        clusters.dedup();
        match (fitting.first(), clusters.len()) {
            (Some(a), 1) => {
                if let Target::Addr(addr) = target {
                    return Ok((*addr, a.ca_fingerprint.clone()));
                }
                println!(
                    "found cluster {} at {} ({})",
                    a.cluster_name, a.join_addr, a.hostname
                );
                return Ok((a.join_addr, a.ca_fingerprint.clone()));
            }
            (Some(_), n) => {
                let names: Vec<String> = clusters
                    .iter()
                    .map(|(n, id)| format!("{n} ({id})"))
                    .collect();
                return Err(JoinError::Other(format!(
                    "{n} clusters answered on this network: {}; name the one to join (cluster_name)",
                    names.join(", ")
                )));
            }
            (None, _) => {}
        }
        let why = match (target, token, found.is_empty()) {
            (Target::Addr(a), None, _) => {
                return Err(JoinError::Other(format!(
                    "{} does not answer discovery on UDP port {} (its node must run with discovery on); \
                     join with a token from `strata token create` instead",
                    a.ip(),
                    discovery::PORT
                )))
            }
            (_, Some(_), false) => "the Strata nodes that answered belong to other clusters than the token's".to_string(),
            _ => format!(
                "no Strata node{} answered on the local network (UDP port {})",
                name.map(|n| format!(" of cluster {n}")).unwrap_or_default(),
                discovery::PORT
            ),
        };
        if token.is_some() && started.elapsed() > timeout.max(Duration::from_secs(60)) {
            return Err(JoinError::Other(why));
        }
        if why != said {
            println!("{why}; looking again every 5 s");
            said = why;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// One request/answer on a fresh connection to `addr`, pinning the CA by `fingerprint`.
async fn ask(
    addr: SocketAddr,
    fingerprint: &str,
    req: &JoinRequest,
    timeout: Duration,
) -> Result<JoinResponse, JoinError> {
    let unreachable = |source| JoinError::Unreachable { addr, source };
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let mut endpoint = quinn::Endpoint::client(bind)
        .map_err(|source| unreachable(TransportError::Bind { addr: bind, source }))?;
    endpoint.set_default_client_config(
        tls::join_client_config(fingerprint, ALPN_JOIN).map_err(unreachable)?,
    );
    let resp = tokio::time::timeout(timeout, async {
        let conn = endpoint
            .connect(addr, pki::ANY_NODE_NAME)
            .map_err(|source| TransportError::Connect { addr, source })?
            .await
            .map_err(|source| TransportError::Connection { addr, source })?;
        exchange(&conn, addr, req).await
    })
    .await
    .map_err(|_| {
        unreachable(TransportError::Timeout {
            addr,
            after: timeout,
        })
    })?
    .map_err(unreachable);
    endpoint.close(0u32.into(), b"done");
    resp
}
