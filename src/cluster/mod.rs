//! The cluster: Raft-replicated store, gossip membership and the `ctl` protocol router.

pub mod discovery;
pub mod membership;
pub mod raft;
pub mod rpc;
pub mod store;

use std::sync::Arc;

use bytes::Bytes;

use crate::transport::{read_frame, write_frame, Peer, Service, MAX_FRAME};
use membership::Membership;
use raft::RaftNode;
use rpc::{CtlRequest, CtlResponse};

/// Routes the `ctl` class: streams carry Raft and forwarded requests, datagrams gossip.
pub struct CtlService {
    pub raft: Arc<RaftNode>,
    pub membership: Arc<Membership>,
}

#[async_trait::async_trait]
impl Service for CtlService {
    async fn handle_stream(
        &self,
        peer: Peer,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let resp = match read_frame::<CtlRequest>(&mut recv, MAX_FRAME).await {
            Ok(req) => self.raft.handle(req).await,
            Err(e) => {
                tracing::warn!(peer = ?peer.node, addr = %peer.addr, error = %e, "bad ctl request");
                CtlResponse::Error(e.to_string())
            }
        };
        if write_frame(&mut send, &resp).await.is_ok() {
            let _ = send.finish();
        }
    }

    fn handle_datagram(&self, _peer: Peer, data: Bytes) {
        self.membership.receive(data);
    }
}
