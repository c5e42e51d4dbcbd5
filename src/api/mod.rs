//! HTTP surfaces. `admin` is the node-local API the CLI uses (Unix socket, root only);
//! `openstack` (the public REST API) arrives with its own issue.

pub mod admin;
pub mod admin_networks;
pub mod admin_vms;
pub mod admin_volumes;
pub mod openstack;
