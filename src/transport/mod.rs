//! One QUIC endpoint per node (quinn + rustls, mutual TLS with the cluster CA).
//!
//! Traffic classes get their own ALPN, and so their own connection with its own congestion
//! and flow control: `ctl` (Raft, admin RPCs, gossip datagrams), `blk` (block replication),
//! `mig` (VM migration), and `join`, the only one open to a peer without a certificate.
//! Within a class every request is one bidirectional stream carrying one length-prefixed
//! postcard frame each way; the frame's enum tag is the stream header. The transport does not
//! interpret payloads: services registered per class do.

pub mod bulk;
pub mod frame;
pub mod pki;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ids::NodeId;
use crate::telemetry::Metrics;
pub use frame::{read_frame, write_frame, MAX_FRAME};
use pki::CertifiedKey;

pub const ALPN_CTL: &[u8] = b"strata-ctl/1";
pub const ALPN_BLK: &[u8] = b"strata-blk/1";
pub const ALPN_MIG: &[u8] = b"strata-mig/1";
pub const ALPN_JOIN: &[u8] = b"strata-join/1";
/// Node-to-node agent requests (a VM's console from the node that runs it, ...).
pub const ALPN_AGENT: &[u8] = b"strata-agent/1";

/// A traffic class, one ALPN each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Ctl,
    Blk,
    Mig,
    Join,
    Agent,
}

impl Class {
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Class::Ctl => ALPN_CTL,
            Class::Blk => ALPN_BLK,
            Class::Mig => ALPN_MIG,
            Class::Join => ALPN_JOIN,
            Class::Agent => ALPN_AGENT,
        }
    }

    fn from_alpn(alpn: &[u8]) -> Option<Class> {
        [
            Class::Ctl,
            Class::Blk,
            Class::Mig,
            Class::Join,
            Class::Agent,
        ]
        .into_iter()
        .find(|c| c.alpn() == alpn)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot listen on {addr} (UDP)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("cannot connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },
    #[error("connection to {addr} failed")]
    Connection {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("node {0} was removed from the cluster; it is not contacted")]
    Removed(NodeId),
    #[error("{addr} did not answer within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("stream to {addr} broke: {reason}")]
    Stream { addr: SocketAddr, reason: String },
    #[error("frame of {size} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { size: usize, max: usize },
    #[error("malformed message: {0}")]
    Decode(String),
    #[error("datagram to {addr} not sent: {reason}")]
    Datagram { addr: SocketAddr, reason: String },
}

/// Who is on the other end of an accepted connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The node named by the peer's certificate; `None` only on the `join` class.
    pub node: Option<NodeId>,
    pub addr: SocketAddr,
}

/// A protocol served on one traffic class.
#[async_trait::async_trait]
pub trait Service: Send + Sync + 'static {
    async fn handle_stream(&self, peer: Peer, send: quinn::SendStream, recv: quinn::RecvStream);
    fn handle_datagram(&self, _peer: Peer, _data: Bytes) {}
}

pub struct Transport {
    endpoint: quinn::Endpoint,
    clients: HashMap<Class, quinn::ClientConfig>,
    conns: Mutex<HashMap<(NodeId, Class), quinn::Connection>>,
    services: RwLock<HashMap<Class, Arc<dyn Service>>>,
    /// Nodes removed from the cluster: their certificates are refused both ways.
    removed: RwLock<HashSet<NodeId>>,
    /// Removed nodes whose refused connection has been logged.
    refused: Mutex<HashSet<NodeId>>,
    metrics: Arc<Metrics>,
}

impl Transport {
    /// Binds the node's endpoint. Fails with the address named if the port is taken.
    pub fn bind(
        listen: SocketAddr,
        identity: &CertifiedKey,
        ca: &CertificateDer<'static>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, TransportError> {
        let server = tls::server_config(
            identity,
            ca,
            &[ALPN_CTL, ALPN_BLK, ALPN_MIG, ALPN_JOIN, ALPN_AGENT],
        )?;
        let endpoint =
            quinn::Endpoint::server(server, listen).map_err(|source| TransportError::Bind {
                addr: listen,
                source,
            })?;
        let mut clients = HashMap::new();
        for class in [Class::Ctl, Class::Blk, Class::Mig, Class::Agent] {
            clients.insert(class, tls::client_config(identity, ca, class.alpn())?);
        }
        let t = Arc::new(Transport {
            endpoint,
            clients,
            conns: Mutex::new(HashMap::new()),
            services: RwLock::new(HashMap::new()),
            removed: RwLock::new(HashSet::new()),
            refused: Mutex::new(HashSet::new()),
            metrics,
        });
        tokio::spawn(accept_loop(t.clone()));
        Ok(t)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn register(&self, class: Class, service: Arc<dyn Service>) {
        self.services
            .write()
            .expect("services lock poisoned")
            .insert(class, service);
    }

    /// Sets the nodes removed from the cluster: from now on no connection is made to them,
    /// theirs are refused (a stream or datagram on one already open is dropped), and the
    /// cached connections to them are closed.
    pub fn set_removed(&self, nodes: HashSet<NodeId>) {
        let mut conns = self.conns.lock().expect("conns lock poisoned");
        conns.retain(|(p, _), c| {
            let keep = !nodes.contains(p);
            if !keep {
                c.close(2u32.into(), b"removed from the cluster");
            }
            keep
        });
        *self.removed.write().expect("removed lock poisoned") = nodes;
    }

    pub fn is_removed(&self, node: NodeId) -> bool {
        self.removed
            .read()
            .expect("removed lock poisoned")
            .contains(&node)
    }

    /// A cached, authenticated connection to `peer` for `class`, made if needed.
    pub async fn connection(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        class: Class,
    ) -> Result<quinn::Connection, TransportError> {
        if self.is_removed(peer) {
            return Err(TransportError::Removed(peer));
        }
        if let Some(c) = self.cached(peer, class) {
            if c.close_reason().is_none() && c.remote_address() == addr {
                return Ok(c);
            }
        }
        let cfg = self
            .clients
            .get(&class)
            .ok_or_else(|| TransportError::Tls(format!("no client config for {class:?}")))?
            .clone();
        let conn = self
            .endpoint
            .connect_with(cfg, addr, &pki::node_dns_name(peer))
            .map_err(|source| TransportError::Connect { addr, source })?
            .await
            .map_err(|source| TransportError::Connection { addr, source })?;
        self.conns
            .lock()
            .expect("conns lock poisoned")
            .insert((peer, class), conn.clone());
        Ok(conn)
    }

    fn cached(&self, peer: NodeId, class: Class) -> Option<quinn::Connection> {
        self.conns
            .lock()
            .expect("conns lock poisoned")
            .get(&(peer, class))
            .cloned()
    }

    /// Forgets the cached connection to `peer`, so the next call reconnects.
    pub fn forget(&self, peer: NodeId) {
        self.conns
            .lock()
            .expect("conns lock poisoned")
            .retain(|(p, _), _| *p != peer);
    }

    /// One request/response exchange on a fresh stream, bounded by `timeout`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        class: Class,
        rpc: &'static str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let frame = frame::encode(req)?;
        self.call_encoded(peer, addr, class, rpc, frame, timeout)
            .await
    }

    /// [`Transport::call`] with the request already encoded by [`frame::encode`] (one
    /// encoding sent to several peers).
    pub async fn call_encoded<Resp: DeserializeOwned>(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        class: Class,
        rpc: &'static str,
        frame: frame::Encoded,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let start = Instant::now();
        let res = tokio::time::timeout(timeout, async {
            let conn = self.connection(peer, addr, class).await?;
            exchange_encoded(&conn, addr, frame).await
        })
        .await
        .unwrap_or(Err(TransportError::Timeout {
            addr,
            after: timeout,
        }));
        match &res {
            Ok(_) => self.metrics.observe_rpc(rpc, start.elapsed()),
            Err(_) => self.forget(peer),
        }
        res
    }

    /// Sends an unreliable datagram (gossip) on the `ctl` connection to `peer`.
    pub async fn send_datagram(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        data: Bytes,
        connect_timeout: Duration,
    ) -> Result<(), TransportError> {
        let conn = tokio::time::timeout(connect_timeout, self.connection(peer, addr, Class::Ctl))
            .await
            .map_err(|_| TransportError::Timeout {
                addr,
                after: connect_timeout,
            })??;
        conn.send_datagram(data).map_err(|e| {
            self.forget(peer);
            TransportError::Datagram {
                addr,
                reason: e.to_string(),
            }
        })
    }

    /// Unregisters every service. Services hold the transport (to make calls), so this
    /// breaks the cycle and lets the endpoint's socket close once the node is dropped.
    pub fn clear_services(&self) {
        self.services
            .write()
            .expect("services lock poisoned")
            .clear();
    }

    /// Closes every connection and the endpoint.
    pub async fn shutdown(&self) {
        self.clear_services();
        self.endpoint.close(0u32.into(), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// Writes `req` on a new bidirectional stream of `conn` and reads one response frame.
pub async fn exchange<Req: Serialize, Resp: DeserializeOwned>(
    conn: &quinn::Connection,
    addr: SocketAddr,
    req: &Req,
) -> Result<Resp, TransportError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|source| TransportError::Connection { addr, source })?;
    write_frame(&mut send, req).await?;
    send.finish().map_err(|e| TransportError::Stream {
        addr,
        reason: e.to_string(),
    })?;
    read_frame(&mut recv, MAX_FRAME).await
}

/// [`exchange`] with a request encoded by [`frame::encode`].
pub async fn exchange_encoded<Resp: DeserializeOwned>(
    conn: &quinn::Connection,
    addr: SocketAddr,
    frame: frame::Encoded,
) -> Result<Resp, TransportError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|source| TransportError::Connection { addr, source })?;
    frame::write_encoded(&mut send, frame).await?;
    send.finish().map_err(|e| TransportError::Stream {
        addr,
        reason: e.to_string(),
    })?;
    read_frame(&mut recv, MAX_FRAME).await
}

async fn accept_loop(t: Arc<Transport>) {
    while let Some(incoming) = t.endpoint.accept().await {
        let t = t.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "incoming connection failed");
                    return;
                }
            };
            if let Err(reason) = serve_connection(&t, conn.clone()).await {
                tracing::warn!(%addr, %reason, "refused connection");
                conn.close(1u32.into(), reason.as_bytes());
            }
        });
    }
}

async fn serve_connection(t: &Arc<Transport>, conn: quinn::Connection) -> Result<(), String> {
    let addr = conn.remote_address();
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol)
        .ok_or("no ALPN negotiated")?;
    let class = Class::from_alpn(&alpn).ok_or("unknown ALPN")?;
    let node = conn
        .peer_identity()
        .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().and_then(pki::node_id_of));
    if class != Class::Join && node.is_none() {
        return Err(format!(
            "{class:?} requires a client certificate issued by the cluster CA"
        ));
    }
    let removed = move |t: &Transport| node.is_some_and(|n| t.is_removed(n));
    if let Some(n) = node.filter(|n| t.is_removed(*n)) {
        // A removed node that is started again keeps calling: said once per node.
        let first = t.refused.lock().expect("refused lock poisoned").insert(n);
        if first {
            tracing::warn!(%addr, node = %n, "node {n} was removed from the cluster; its certificate is refused");
        }
        conn.close(
            2u32.into(),
            format!("node {n} was removed from the cluster").as_bytes(),
        );
        return Ok(());
    }
    let service = t
        .services
        .read()
        .expect("services lock poisoned")
        .get(&class)
        .cloned()
        .ok_or_else(|| format!("{class:?} is not served by this node yet"))?;
    let peer = Peer { node, addr };
    if class == Class::Ctl {
        let (conn2, service2, t2) = (conn.clone(), service.clone(), t.clone());
        tokio::spawn(async move {
            while let Ok(d) = conn2.read_datagram().await {
                if removed(&t2) {
                    conn2.close(2u32.into(), b"removed from the cluster");
                    return;
                }
                service2.handle_datagram(peer, d);
            }
        });
    }
    loop {
        match conn.accept_bi().await {
            Ok(_) if removed(t) => return Err("the node was removed from the cluster".into()),
            Ok((send, recv)) => {
                let service = service.clone();
                tokio::spawn(async move { service.handle_stream(peer, send, recv).await });
            }
            Err(_) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::pki::ClusterCa;

    /// Answers every request with its own payload plus the caller's node id.
    struct Echo;

    #[async_trait::async_trait]
    impl Service for Echo {
        async fn handle_stream(
            &self,
            peer: Peer,
            mut send: quinn::SendStream,
            mut recv: quinn::RecvStream,
        ) {
            if let Ok(msg) = read_frame::<String>(&mut recv, 1024).await {
                let reply = format!("{msg} from {:?}", peer.node);
                let _ = write_frame(&mut send, &reply).await;
                let _ = send.finish();
            }
        }
    }

    fn node(ca: &ClusterCa, id: u64) -> (Arc<Transport>, NodeId) {
        let id = NodeId(id);
        let ck = ca.issue_node(id).unwrap();
        let ca_der = pki::pem_to_cert_der(&ca.0.cert_pem).unwrap();
        let t =
            Transport::bind("127.0.0.1:0".parse().unwrap(), &ck, &ca_der, Metrics::new()).unwrap();
        t.register(Class::Ctl, Arc::new(Echo));
        t.register(Class::Join, Arc::new(Echo));
        (t, id)
    }

    const T: Duration = Duration::from_secs(3);

    #[tokio::test]
    async fn nodes_of_one_cluster_talk_and_learn_each_others_identity() {
        let ca = ClusterCa::generate("a").unwrap();
        let (a, a_id) = node(&ca, 1);
        let (b, _) = node(&ca, 2);
        let addr = a.local_addr().unwrap();
        let r: String = b
            .call(a_id, addr, Class::Ctl, "echo", &"hi".to_string(), T)
            .await
            .unwrap();
        assert_eq!(r, "hi from Some(NodeId(0000000000000002))");
    }

    #[tokio::test]
    async fn a_removed_node_is_refused_both_ways_even_on_an_open_connection() {
        let ca = ClusterCa::generate("a").unwrap();
        let (a, a_id) = node(&ca, 1);
        let (b, b_id) = node(&ca, 2);
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let hi = "hi".to_string();
        let r: String = b
            .call(a_id, a_addr, Class::Ctl, "echo", &hi, T)
            .await
            .unwrap();
        assert_eq!(r, "hi from Some(NodeId(0000000000000002))");
        // Node 2 is removed: the connection it already holds to node 1 is refused too.
        a.set_removed([b_id].into());
        let r = b
            .call::<_, String>(a_id, a_addr, Class::Ctl, "echo", &hi, T)
            .await;
        assert!(r.is_err(), "a removed node was served: {r:?}");
        b.forget(a_id);
        let r = b
            .call::<_, String>(a_id, a_addr, Class::Ctl, "echo", &hi, T)
            .await;
        let err = format!("{:?}", r.unwrap_err());
        assert!(err.contains("was removed from the cluster"), "{err}");
        // Node 1 does not call it either.
        let r = a
            .call::<_, String>(b_id, b_addr, Class::Ctl, "echo", &hi, T)
            .await;
        assert!(
            matches!(r, Err(TransportError::Removed(n)) if n == b_id),
            "{r:?}"
        );
        // Taken off the list, it is served again.
        a.set_removed(HashSet::new());
        b.forget(a_id);
        let r: String = b
            .call(a_id, a_addr, Class::Ctl, "echo", &hi, T)
            .await
            .unwrap();
        assert_eq!(r, "hi from Some(NodeId(0000000000000002))");
    }

    #[tokio::test]
    async fn a_node_of_another_cluster_is_refused() {
        let (a, a_id) = node(&ClusterCa::generate("a").unwrap(), 1);
        let (evil, _) = node(&ClusterCa::generate("evil").unwrap(), 2);
        let addr = a.local_addr().unwrap();
        let r = evil
            .call::<_, String>(a_id, addr, Class::Ctl, "echo", &"hi".to_string(), T)
            .await;
        assert!(r.is_err(), "a foreign certificate was accepted: {r:?}");
    }

    #[tokio::test]
    async fn a_peer_without_a_certificate_reaches_join_only() {
        let ca = ClusterCa::generate("a").unwrap();
        let (a, _) = node(&ca, 1);
        let addr = a.local_addr().unwrap();
        let fp = fingerprint_of(&ca);
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        // Join: allowed without a certificate (the joiner pins the CA instead).
        ep.set_default_client_config(tls::join_client_config(&fp, ALPN_JOIN).unwrap());
        let conn = ep.connect(addr, pki::ANY_NODE_NAME).unwrap().await.unwrap();
        let r: String = exchange(&conn, addr, &"join me".to_string()).await.unwrap();
        assert_eq!(r, "join me from None");
        // Ctl without a certificate: the connection is closed with the reason.
        ep.set_default_client_config(tls::join_client_config(&fp, ALPN_CTL).unwrap());
        let conn = ep.connect(addr, pki::ANY_NODE_NAME).unwrap().await.unwrap();
        let r = exchange::<_, String>(&conn, addr, &"raft?".to_string()).await;
        let err = format!("{:?}", r.unwrap_err());
        assert!(err.contains("requires a client certificate"), "{err}");
        // A joiner pinning the wrong CA refuses to talk to the node at all.
        ep.set_default_client_config(tls::join_client_config(&"0".repeat(64), ALPN_JOIN).unwrap());
        let r = ep.connect(addr, pki::ANY_NODE_NAME).unwrap().await;
        assert!(r.is_err(), "joiner accepted a cluster it did not pin");
    }

    fn fingerprint_of(ca: &ClusterCa) -> String {
        ca.fingerprint().unwrap()
    }
}
