//! Finding Strata nodes on the local network: a joining server broadcasts a probe on UDP
//! port 7446 and every node that answers names its cluster, the cluster CA's fingerprint
//! and the QUIC address to join at. Nothing here is trusted: the joiner pins the CA by
//! fingerprint, and either proves a join token to it or has an administrator compare a
//! join code computed over that fingerprint (see `control::join`).
//!
//! A probe must be at least as large as any answer (padded to `PROBE_MIN` bytes), so the
//! responder can never be used to amplify traffic towards a forged source address.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;

use crate::ids::{ClusterId, NodeId};

/// The UDP port nodes answer discovery probes on.
pub const PORT: u16 = 7446;
const MAGIC: &str = "STRATA-DISCOVER/1";
/// Probes are padded to this size; answers are refused if larger.
pub const PROBE_MIN: usize = 1024;

/// What a node says about itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub cluster_name: String,
    pub cluster_id: ClusterId,
    /// SHA-256 of the cluster CA certificate (hex), as in join tokens.
    pub ca_fingerprint: String,
    pub node: NodeId,
    pub hostname: String,
    /// The node's QUIC address (where joiners connect).
    pub join_addr: SocketAddr,
}

#[derive(Serialize, Deserialize)]
struct Probe {
    magic: String,
    /// Answer only if the node's cluster has this name.
    cluster_name: Option<String>,
    pad: String,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    magic: String,
    announce: Announce,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot open a UDP socket for discovery on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot send the discovery probe to {to}")]
    Send {
        to: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

fn probe_bytes(cluster_name: Option<&str>) -> Vec<u8> {
    let mut p = Probe {
        magic: MAGIC.into(),
        cluster_name: cluster_name.map(str::to_string),
        pad: String::new(),
    };
    let len = serde_json::to_vec(&p).map(|v| v.len()).unwrap_or(0);
    p.pad = "0".repeat(PROBE_MIN.saturating_sub(len));
    serde_json::to_vec(&p).unwrap_or_default()
}

/// The answer to a datagram, if it is a well-formed probe this node should answer.
pub fn answer_for(datagram: &[u8], me: &Announce) -> Option<Vec<u8>> {
    if datagram.len() < PROBE_MIN {
        return None;
    }
    let probe: Probe = serde_json::from_slice(datagram).ok()?;
    if probe.magic != MAGIC {
        return None;
    }
    if probe
        .cluster_name
        .as_deref()
        .is_some_and(|n| n != me.cluster_name)
    {
        return None;
    }
    let out = serde_json::to_vec(&Answer {
        magic: MAGIC.into(),
        announce: me.clone(),
    })
    .ok()?;
    (out.len() <= datagram.len()).then_some(out)
}

/// Answers probes on `socket` for as long as the task runs. `me` returns the current
/// announcement, or `None` while the node does not know its cluster yet.
pub async fn respond(socket: UdpSocket, me: impl Fn() -> Option<Announce> + Send + 'static) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "discovery receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(announce) = me() else { continue };
        if let Some(reply) = answer_for(&buf[..n], &announce) {
            if let Err(e) = socket.send_to(&reply, from).await {
                tracing::debug!(error = %e, %from, "discovery answer not sent");
            }
        }
    }
}

/// Binds the responder's socket (all IPv4 addresses, `port`).
pub async fn bind(port: u16) -> Result<UdpSocket, DiscoveryError> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    UdpSocket::bind(addr)
        .await
        .map_err(|source| DiscoveryError::Bind { addr, source })
}

/// Sends a probe to each of `targets` (broadcast addresses, or a node's address; an error
/// only if none could be sent) and collects the distinct answers that arrive within `wait`.
pub async fn probe(
    targets: &[SocketAddr],
    cluster_name: Option<&str>,
    wait: Duration,
) -> Result<Vec<Announce>, DiscoveryError> {
    let bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|source| DiscoveryError::Bind { addr: bind, source })?;
    socket
        .set_broadcast(true)
        .map_err(|source| DiscoveryError::Bind { addr: bind, source })?;
    let probe = probe_bytes(cluster_name);
    let mut sent = 0;
    let mut last_err = None;
    for to in targets {
        match socket.send_to(&probe, to).await {
            Ok(_) => sent += 1,
            Err(source) => last_err = Some(DiscoveryError::Send { to: *to, source }),
        }
    }
    if let (0, Some(e)) = (sent, last_err) {
        return Err(e);
    }
    let deadline = Instant::now() + wait;
    let mut found: Vec<Announce> = Vec::new();
    let mut buf = vec![0u8; PROBE_MIN];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(Ok((n, _))) = tokio::time::timeout(left, socket.recv_from(&mut buf)).await else {
            break;
        };
        let Ok(a) = serde_json::from_slice::<Answer>(&buf[..n]) else {
            continue;
        };
        if a.magic == MAGIC && !found.iter().any(|f| f.node == a.announce.node) {
            found.push(a.announce);
        }
    }
    Ok(found)
}

/// The local broadcast target.
pub fn broadcast() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::BROADCAST, PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(name: &str) -> Announce {
        Announce {
            cluster_name: name.into(),
            cluster_id: ClusterId::random(),
            ca_fingerprint: "ab".repeat(32),
            node: NodeId::random(),
            hostname: "node1".into(),
            join_addr: "10.0.0.1:7440".parse().unwrap(),
        }
    }

    #[test]
    fn only_padded_probes_for_this_cluster_are_answered() {
        let a = me("lab");
        assert!(answer_for(&probe_bytes(None), &a).is_some());
        assert!(answer_for(&probe_bytes(Some("lab")), &a).is_some());
        assert!(answer_for(&probe_bytes(Some("other")), &a).is_none());
        // Short (unpadded) probes and garbage get nothing back.
        let short = br#"{"magic":"STRATA-DISCOVER/1","cluster_name":null,"pad":""}"#;
        assert!(answer_for(short, &a).is_none());
        assert!(answer_for(&[0xff; 2000], &a).is_none());
        let wrong = probe_bytes(None)
            .iter()
            .map(|&b| if b == b'1' { b'9' } else { b })
            .collect::<Vec<_>>();
        assert!(answer_for(&wrong, &a).is_none());
        // Never larger than the probe.
        assert!(answer_for(&probe_bytes(None), &a).unwrap().len() <= PROBE_MIN);
    }

    #[tokio::test]
    async fn a_probe_finds_the_responder() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let a = me("lab");
        let shown = a.clone();
        let task = tokio::spawn(respond(socket, move || Some(shown.clone())));
        let target: SocketAddr = ([127, 0, 0, 1], port).into();
        let found = probe(&[target], Some("lab"), Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(found, vec![a]);
        let none = probe(&[target], Some("nope"), Duration::from_millis(300))
            .await
            .unwrap();
        assert!(none.is_empty());
        task.abort();
    }
}
