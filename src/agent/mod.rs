//! Per-node reconciler: turns this node's desired state into actions and reports what
//! actually runs. For now it reports the node's hardware; the compute, storage and network
//! issues add their reconcilers here.

pub mod host;
