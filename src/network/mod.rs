//! Overlay networking, DHCP, metadata, security groups. Filled by the network issue.
