//! Strata: one binary that turns servers into one pool of VMs, volumes and networks.
//! The module map and its rules are in docs/design.md.

pub mod agent;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod compute;
pub mod config;
pub mod console;
pub mod control;
pub mod daemon;
pub mod httpd;
pub mod ids;
pub mod installer;
pub mod network;
pub mod storage;
pub mod telemetry;
pub mod transport;
