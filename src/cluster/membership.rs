//! Who is alive: SWIM gossip (foca) carried in QUIC datagrams on the authenticated `ctl`
//! connections. Gossip is advisory: it never changes the store by itself; the leader's
//! reconcilers read it and commit decisions through Raft.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::ids::NodeId;
use crate::transport::Transport;

/// A node's gossip identity: its ID, address and an incarnation that grows on every start,
/// so a restarted node replaces its old self.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub node: NodeId,
    pub addr: SocketAddr,
    pub incarnation: u64,
}

impl foca::Identity for Member {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(Member {
            incarnation: self.incarnation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    fn win_addr_conflict(&self, other: &Self) -> bool {
        self.incarnation > other.incarnation
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    Alive,
    Suspect,
    Down,
}

#[derive(Clone, Debug, Serialize)]
pub struct PeerState {
    pub liveness: Liveness,
    pub addr: SocketAddr,
    /// Milliseconds since this node saw the state change.
    #[serde(skip)]
    pub since: Instant,
}

/// Derives foca's timing from the failure-detection target.
pub fn foca_config(detect: Duration) -> foca::Config {
    let mut c = foca::Config::new_lan(std::num::NonZeroU32::new(5).expect("5 > 0"));
    c.probe_period = detect / 6;
    c.probe_rtt = detect / 12;
    c.suspect_to_down_after = detect * 2 / 5;
    c.num_indirect_probes = NonZeroUsize::new(2).expect("2 > 0");
    c.max_transmissions = NonZeroU8::new(6).expect("6 > 0");
    c.remove_down_after = Some(Duration::from_secs(3600));
    c.max_packet_size = NonZeroUsize::new(1200).expect("1200 > 0");
    c.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(200),
        num_members: NonZeroUsize::new(3).expect("3 > 0"),
    });
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(10),
        num_members: NonZeroUsize::new(1).expect("1 > 0"),
    });
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(2),
        num_members: NonZeroUsize::new(2).expect("2 > 0"),
    });
    c
}

type Engine = Foca<Member, PostcardCodec, StdRng, NoCustomBroadcast>;

enum Input {
    Data(Bytes),
    Timer(Timer<Member>),
    Announce(NodeId, SocketAddr),
    Leave,
}

pub struct Membership {
    me: Member,
    input: mpsc::UnboundedSender<Input>,
    view: watch::Receiver<BTreeMap<NodeId, PeerState>>,
}

impl Membership {
    pub fn start(
        node: NodeId,
        addr: SocketAddr,
        detect: Duration,
        transport: Arc<Transport>,
    ) -> Arc<Self> {
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        let me = Member {
            node,
            addr,
            incarnation,
        };
        let engine: Engine = Foca::new(
            me.clone(),
            foca_config(detect),
            rand::make_rng(),
            PostcardCodec,
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let (view_tx, view_rx) = watch::channel(BTreeMap::new());
        let connect_timeout = detect / 4;
        tokio::spawn(run(
            engine,
            rx,
            tx.clone(),
            view_tx,
            transport,
            connect_timeout,
        ));
        Arc::new(Membership {
            me,
            input: tx,
            view: view_rx,
        })
    }

    /// Feeds a gossip datagram received from a peer.
    pub fn receive(&self, data: Bytes) {
        let _ = self.input.send(Input::Data(data));
    }

    /// Introduces this node to a peer (used at start and to re-find peers after a partition).
    pub fn announce(&self, node: NodeId, addr: SocketAddr) {
        if node != self.me.node {
            let _ = self.input.send(Input::Announce(node, addr));
        }
    }

    /// Tells the others this node is leaving on purpose.
    pub fn leave(&self) {
        let _ = self.input.send(Input::Leave);
    }

    /// Current view of the other members.
    pub fn view(&self) -> BTreeMap<NodeId, PeerState> {
        self.view.borrow().clone()
    }

    pub fn is_alive(&self, node: NodeId) -> bool {
        node == self.me.node
            || self
                .view
                .borrow()
                .get(&node)
                .is_some_and(|p| p.liveness != Liveness::Down)
    }
}

async fn run(
    mut engine: Engine,
    mut rx: mpsc::UnboundedReceiver<Input>,
    tx: mpsc::UnboundedSender<Input>,
    view_tx: watch::Sender<BTreeMap<NodeId, PeerState>>,
    transport: Arc<Transport>,
    connect_timeout: Duration,
) {
    let mut rt = AccumulatingRuntime::new();
    while let Some(input) = rx.recv().await {
        let res = match input {
            Input::Data(d) => engine.handle_data(&d, &mut rt),
            Input::Timer(t) => engine.handle_timer(t, &mut rt),
            Input::Announce(node, addr) => engine.announce(
                Member {
                    node,
                    addr,
                    incarnation: 0,
                },
                &mut rt,
            ),
            Input::Leave => {
                let r = engine.leave_cluster(&mut rt);
                flush_sends(&mut rt, &transport, connect_timeout);
                r
            }
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "gossip input rejected");
        }
        flush_sends(&mut rt, &transport, connect_timeout);
        while let Some((after, timer)) = rt.to_schedule() {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(Input::Timer(timer));
            });
        }
        while let Some(n) = rt.to_notify() {
            match n {
                OwnedNotification::MemberUp(m) => {
                    tracing::info!(node = %m.node, addr = %m.addr, "member up")
                }
                OwnedNotification::MemberDown(m) => {
                    tracing::warn!(node = %m.node, addr = %m.addr, "member down")
                }
                _ => {}
            }
        }
        // Rebuild the view from foca's own table after every input: cheap for small clusters.
        let mut view = BTreeMap::new();
        let prev = view_tx.borrow().clone();
        for m in engine.iter_membership_state() {
            let id = m.id();
            let liveness = match m.state() {
                foca::State::Alive => Liveness::Alive,
                foca::State::Suspect => Liveness::Suspect,
                foca::State::Down => Liveness::Down,
            };
            let since = match prev.get(&id.node) {
                Some(p) if p.liveness == liveness => p.since,
                _ => Instant::now(),
            };
            let entry = PeerState {
                liveness,
                addr: id.addr,
                since,
            };
            match view.get(&id.node) {
                Some(PeerState {
                    liveness: Liveness::Alive,
                    ..
                }) => {}
                _ => {
                    view.insert(id.node, entry);
                }
            }
        }
        view_tx.send_if_modified(|v| {
            let differs = v.len() != view.len()
                || v.iter()
                    .zip(view.iter())
                    .any(|((a, x), (b, y))| a != b || x.liveness != y.liveness || x.addr != y.addr);
            if differs {
                *v = view;
            }
            differs
        });
    }
}

fn flush_sends(
    rt: &mut AccumulatingRuntime<Member>,
    transport: &Arc<Transport>,
    timeout: Duration,
) {
    while let Some((to, data)) = rt.to_send() {
        let t = transport.clone();
        tokio::spawn(async move {
            if let Err(e) = t.send_datagram(to.node, to.addr, data, timeout).await {
                tracing::trace!(peer = %to.node, error = %e, "gossip send failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timing_detects_within_the_target() {
        let c = foca_config(Duration::from_secs(2));
        // One probe period, one round trip plus the indirect probe, then suspicion.
        let worst = c.probe_period + c.probe_rtt * 2 + c.suspect_to_down_after;
        assert!(worst <= Duration::from_secs(2), "{worst:?}");
    }

    #[test]
    fn restarted_member_wins_over_its_old_self() {
        use foca::Identity;
        let a = Member {
            node: NodeId(1),
            addr: "127.0.0.1:1".parse().unwrap(),
            incarnation: 5,
        };
        let b = a.renew().unwrap();
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        assert_eq!(a.addr(), b.addr());
    }
}
