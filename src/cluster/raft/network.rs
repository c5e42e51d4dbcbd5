//! openraft's network over the node's QUIC endpoint (`ctl` class).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};

use super::{Snapshot, TypeConfig, Vote};
use crate::cluster::rpc::{CtlRequest, CtlResponse};
use crate::ids::NodeId;
use crate::transport::{Class, Transport, TransportError};

#[derive(Clone)]
pub struct Network {
    pub transport: Arc<Transport>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Client {
        Client {
            transport: self.transport.clone(),
            target: NodeId(target),
            addr: node.addr.parse().ok(),
            raw_addr: node.addr.clone(),
        }
    }
}

pub struct Client {
    transport: Arc<Transport>,
    target: NodeId,
    addr: Option<SocketAddr>,
    raw_addr: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl Client {
    async fn call(
        &self,
        rpc: &'static str,
        req: CtlRequest,
        timeout: Duration,
    ) -> Result<CtlResponse, RPCError<TypeConfig>> {
        let addr = self.addr.ok_or_else(|| {
            RPCError::Unreachable(Unreachable::new(&Msg(format!(
                "node {} has an invalid address {:?}",
                self.target, self.raw_addr
            ))))
        })?;
        self.transport
            .call(self.target, addr, Class::Ctl, rpc, &req, timeout)
            .await
            .map_err(|e| match e {
                TransportError::Connect { .. }
                | TransportError::Connection { .. }
                | TransportError::Timeout { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                other => RPCError::Network(NetworkError::new(&other)),
            })
    }
}

fn unexpected(resp: CtlResponse) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&Msg(format!(
        "unexpected response {resp:?}"
    ))))
}

fn remote(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&Msg(format!("remote: {e}"))))
}

impl RaftNetworkV2<TypeConfig> for Client {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call("append", CtlRequest::Append(req), option.soft_ttl())
            .await?
        {
            CtlResponse::Append(r) => r.map_err(remote),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call("vote", CtlRequest::Vote(req), option.soft_ttl())
            .await?
        {
            CtlResponse::Vote(r) => r.map_err(remote),
            other => Err(unexpected(other)),
        }
    }

    async fn pre_vote(
        &mut self,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call("pre_vote", CtlRequest::PreVote(req), option.soft_ttl())
            .await?
        {
            CtlResponse::Vote(r) => r.map_err(remote),
            other => Err(unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = CtlRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        // Snapshots may be large: allow more than a heartbeat's time.
        let ttl = option.soft_ttl().max(Duration::from_secs(30));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.call("snapshot", req, ttl) => match r? {
                CtlResponse::Snapshot(r) => Ok(r.map_err(remote)?),
                other => Err(unexpected(other).into()),
            }
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(
                "transfer_leader",
                CtlRequest::TransferLeader(req),
                option.soft_ttl(),
            )
            .await?
        {
            CtlResponse::TransferLeader(r) => r.map_err(remote),
            other => Err(unexpected(other)),
        }
    }
}
