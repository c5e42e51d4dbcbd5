//! Tenant networking: address management (`ipam`), the DHCP protocol core (`dhcp`), and
//! the node's data plane programmed through netlink (`dataplane`): a VXLAN device and a
//! Linux bridge per network present on the node, a TAP per port, forwarding and ARP
//! entries for remote ports from cluster state (no flooding, no learning), and a service
//! namespace per network where DHCP (and the metadata service) answer.

pub mod dataplane;
pub mod dhcp;
pub mod dhcpd;
pub mod firewall;
pub mod ifaddrs;
pub mod ipam;
pub mod metadata;
pub mod netns;
pub mod pxe;
pub mod tap;
pub mod tftp;
