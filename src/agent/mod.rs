//! Per-node reconciler: turns this node's desired state into actions and reports what
//! actually runs. `host` reports the node's hardware, `vms` runs the VMs placed here,
//! `console` serves their serial consoles to the rest of the cluster.

pub mod attach;
pub mod console;
pub mod host;
pub mod vms;
pub mod volumes;
