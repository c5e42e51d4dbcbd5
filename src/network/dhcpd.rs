//! The DHCP server of one network on this node: a UDP socket on port 67 inside the
//! network's service namespace, answering the ports this node carries (by MAC) from the
//! leases the agent keeps current. Other MACs are not answered: their own node does.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, RwLock};

use super::dataplane::SERVICE_INNER;
use super::dhcp::{self, Lease};
use super::netns::Netns;

pub type Leases = Arc<RwLock<BTreeMap<[u8; 6], Lease>>>;

pub struct DhcpServer {
    pub leases: Leases,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DhcpServer {
    /// Binds port 67 in `ns` (on the service interface) and starts answering.
    pub fn start(ns: &Netns, vni: u32) -> std::io::Result<Self> {
        let std_sock = ns.run(|| {
            let s = std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67))?;
            s.set_broadcast(true)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })?;
        let sock = tokio::net::UdpSocket::from_std(std_sock)?;
        sock.bind_device(Some(SERVICE_INNER.as_bytes()))?;
        let leases: Leases = Arc::default();
        let l2 = leases.clone();
        let task = tokio::spawn(async move { serve(sock, l2, vni).await });
        Ok(DhcpServer { leases, task })
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

async fn serve(sock: tokio::net::UdpSocket, leases: Leases, vni: u32) {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(vni, error = %e, "DHCP socket failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let msg = match dhcp::parse(&buf[..n]) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(vni, %from, error = %e, "ignored a malformed DHCP message");
                continue;
            }
        };
        let lease = leases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&msg.chaddr)
            .cloned();
        let Some(lease) = lease else { continue };
        let Some(kind) = dhcp::answer_kind(&msg, &lease) else {
            continue;
        };
        let reply = dhcp::reply(&msg, kind, &lease);
        // A client without an address yet hears the answer by broadcast.
        let to = if msg.ciaddr != Ipv4Addr::UNSPECIFIED && kind != dhcp::NAK {
            SocketAddrV4::new(msg.ciaddr, 68)
        } else {
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
        };
        if let Err(e) = sock.send_to(&reply, to).await {
            tracing::warn!(vni, %to, error = %e, "cannot send a DHCP answer");
        } else {
            tracing::debug!(vni, ip = %lease.ip, kind, "DHCP answer sent");
        }
    }
}
