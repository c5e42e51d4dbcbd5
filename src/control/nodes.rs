//! Removing a node from the cluster for good (`strata node remove`, as Proxmox's
//! `pvecm delnode`): for a server that died or is retired. The node must be powered off
//! and host no VMs; it then leaves the nodes table and the Raft membership, its
//! certificate is refused by every node's transport, the replicas it held are rebuilt on
//! other nodes at once (not after the replica grace) and its routers move.

use std::collections::BTreeSet;

use super::{now_secs, Control, ControlError};
use crate::cluster::store::compute_tables::Vms;
use crate::cluster::store::storage_tables::{NodeStorage, Volumes};
use crate::cluster::store::tables::{Nodes, RemovedNode, RemovedNodes};
use crate::cluster::store::{StoreError, TxnBuilder};
use crate::ids::NodeId;

impl Control {
    /// The node named by its id or hostname.
    pub fn find_node(&self, id_or_name: &str) -> Result<NodeId, ControlError> {
        let nodes = self.store.list::<Nodes>()?;
        let by_id = id_or_name.parse::<NodeId>().ok();
        let found: Vec<NodeId> = nodes
            .iter()
            .filter(|n| Some(n.value.id) == by_id || n.value.hostname == id_or_name)
            .map(|n| n.value.id)
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => {
                let gone = by_id
                    .and_then(|id| self.store.get::<RemovedNodes>(&id.to_string()).ok())
                    .flatten();
                Err(ControlError::NotFound(match gone {
                    Some(r) => format!(
                        "node {} ({}) was removed from the cluster by {}",
                        r.value.id, r.value.hostname, r.value.by
                    ),
                    None => format!("no node {id_or_name:?} in the cluster"),
                }))
            }
            many => Err(ControlError::Invalid(format!(
                "{} nodes are called {id_or_name:?}; name one by its id",
                many.len()
            ))),
        }
    }

    /// Removes a powered-off node that hosts no VMs from the cluster, for good.
    pub async fn remove_node(&self, node: NodeId, by: &str) -> Result<RemovedNode, ControlError> {
        if node == self.node {
            return Err(ControlError::Invalid(format!(
                "node {node} is the node answering this request; remove it from another node"
            )));
        }
        loop {
            let cur = self
                .store
                .get::<Nodes>(&node.to_string())?
                .ok_or_else(|| ControlError::NotFound(format!("no node {node} in the cluster")))?;
            let host = cur.value.hostname.clone();
            if self.membership.is_alive(node) {
                return Err(ControlError::Conflict(format!(
                    "node {node} ({host}) is running; drain it, power it off, then remove it"
                )));
            }
            let vms: Vec<String> = self
                .store
                .list::<Vms>()?
                .into_iter()
                .filter(|v| v.value.node == node)
                .map(|v| v.value.name)
                .collect();
            if !vms.is_empty() {
                return Err(ControlError::Conflict(format!(
                    "node {node} ({host}) still hosts {} VM(s): {}; drain the node (its VMs move to other nodes) or delete them first",
                    vms.len(),
                    vms.join(", ")
                )));
            }
            let voters = self.raft().membership().voters;
            let live_voters = voters
                .iter()
                .filter(|v| **v != node && self.membership.is_alive(**v))
                .count();
            if voters.contains(&node) && live_voters * 2 < voters.len() {
                return Err(ControlError::Unavailable(format!(
                    "removing node {node} ({host}) needs a majority of the other Raft voters alive; {live_voters} of {} are",
                    voters.len() - 1
                )));
            }
            let removed = RemovedNode {
                id: node,
                hostname: host.clone(),
                by: by.to_string(),
                at: now_secs(),
            };
            let mut txn = TxnBuilder::new()
                .require_revision::<Nodes>(node.to_string(), cur.revision)
                .delete::<Nodes>(node.to_string())
                .delete::<NodeStorage>(node.to_string())
                .put::<RemovedNodes>(node.to_string(), &removed);
            // Volumes it was the writer of (no VM's: those were refused) are let go; the
            // next writer fences it by generation anyway.
            let mut detached = BTreeSet::new();
            for v in self.store.list::<Volumes>()? {
                if v.value.attached_to == Some(node) {
                    let mut rec = v.value.clone();
                    rec.attached_to = None;
                    detached.insert(rec.name.clone());
                    txn = txn
                        .require_revision::<Volumes>(rec.id.to_string(), v.revision)
                        .put::<Volumes>(rec.id.to_string(), &rec);
                }
            }
            let msg = format!(
                "node {node} ({host}) removed from the cluster by {by}{}",
                if detached.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; volumes it had attached are detached: {}",
                        detached.into_iter().collect::<Vec<_>>().join(", ")
                    )
                }
            );
            match self
                .store
                .commit(self.with_event(txn, "node.removed", msg))
                .await
            {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            tracing::info!(node = %node, hostname = %host, by, "node removed from the cluster");
            if let Err(e) = self.move_routers_from(node).await {
                // The leader's reconciler moves them once the node has been down a while.
                tracing::warn!(node = %node, error = %crate::telemetry::error_chain(&e), "routers of the removed node not moved yet");
            }
            return Ok(removed);
        }
    }

    /// The nodes removed from the cluster.
    pub fn removed_nodes(&self) -> Result<Vec<RemovedNode>, ControlError> {
        Ok(self
            .store
            .list::<RemovedNodes>()?
            .into_iter()
            .map(|r| r.value)
            .collect())
    }
}
