//! The joining side of the join handshake (`strata join`): pin the CA from the token,
//! prove the token, receive a certificate, write the data directory.

use std::net::SocketAddr;
use std::time::Duration;

use super::datadir::{DataDir, DataDirError, NodeFile, PeerEntry, NODE_FILE_FORMAT};
use crate::control::join::{JoinRequest, JoinResponse};
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

pub async fn join(
    dir: &DataDir,
    cluster_addr: SocketAddr,
    token: &str,
    advertise: SocketAddr,
    timeout: Duration,
) -> Result<NodeFile, JoinError> {
    let token = JoinToken::parse(token)?;
    dir.refuse_if_initialised()?;
    let node = NodeId::random();
    let (key_pem, csr_der) =
        pki::node_key_and_csr(node).map_err(|e| JoinError::Other(e.to_string()))?;
    let host = crate::agent::host::detect();
    let req = JoinRequest {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        node,
        csr_der,
        addr: advertise,
        hostname: host.hostname,
        cores: host.cores,
        memory_bytes: host.memory_bytes,
        disks: host.disks,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let unreachable = |source| JoinError::Unreachable {
        addr: cluster_addr,
        source,
    };
    let bind: SocketAddr = if cluster_addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let mut endpoint = quinn::Endpoint::client(bind)
        .map_err(|source| unreachable(TransportError::Bind { addr: bind, source }))?;
    endpoint.set_default_client_config(
        tls::join_client_config(&token.ca_fingerprint, ALPN_JOIN).map_err(unreachable)?,
    );
    let resp: JoinResponse = tokio::time::timeout(timeout, async {
        let conn = endpoint
            .connect(cluster_addr, pki::ANY_NODE_NAME)
            .map_err(|source| TransportError::Connect {
                addr: cluster_addr,
                source,
            })?
            .await
            .map_err(|source| TransportError::Connection {
                addr: cluster_addr,
                source,
            })?;
        exchange(&conn, cluster_addr, &req).await
    })
    .await
    .map_err(|_| {
        unreachable(TransportError::Timeout {
            addr: cluster_addr,
            after: timeout,
        })
    })?
    .map_err(unreachable)?;
    endpoint.close(0u32.into(), b"done");
    match resp {
        JoinResponse::Refused(reason) => Err(JoinError::Refused {
            addr: cluster_addr,
            reason,
        }),
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
