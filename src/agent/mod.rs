//! Per-node reconciler: turns this node's desired state into actions and reports what
//! actually runs. `host` reports the node's hardware, `vms` runs the VMs placed here,
//! `console` serves their serial consoles to the rest of the cluster.

pub mod attach;
mod configdrive;
pub mod console;
pub mod disks;
pub mod host;
pub mod images;
pub mod network;
pub mod nics;
pub mod repair;
pub mod snapshots;
pub mod vms;
pub mod volumes;

/// Waits for the next reconcile pass of a node agent: a change applied to the store, or
/// the tick. Returns false once the store is gone (the node is shutting down).
pub async fn next_pass(
    changes: &mut tokio::sync::broadcast::Receiver<
        std::sync::Arc<Vec<crate::cluster::store::data::Change>>,
    >,
    tick: &mut tokio::time::Interval,
) -> bool {
    tokio::select! {
        _ = tick.tick() => true,
        r = changes.recv() => !matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)),
    }
}
