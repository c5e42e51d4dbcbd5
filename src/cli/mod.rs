//! Command-line interface: argument parsing and dispatch, no logic of its own.

pub mod bench;
mod client;
mod network;
mod output;
mod vm;
mod volume;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::config::{Config, ConfigFile};
use crate::daemon::datadir::DataDir;

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Strata: one binary that turns servers into one pool of VMs, volumes and networks"
)]
pub struct Cli {
    /// Data directory of this node.
    #[arg(long, global = true, env = "STRATA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Admin socket of the local daemon (default: <data-dir>/strata.sock).
    #[arg(long, global = true, env = "STRATA_SOCKET")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Debug, Default, Clone)]
pub struct NodeFlags {
    /// TOML configuration file.
    #[arg(long, env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
    /// UDP address of the node-to-node QUIC endpoint (default 0.0.0.0:7440).
    #[arg(long, env = "STRATA_LISTEN")]
    pub listen: Option<String>,
    /// Address other nodes reach this one at (default: the listen address).
    #[arg(long, env = "STRATA_ADVERTISE")]
    pub advertise: Option<String>,
    /// Answer discovery probes from servers joining on the local network (UDP 7446).
    #[arg(long, env = "STRATA_DISCOVERY")]
    pub discovery: bool,
    /// Serve network installs (PXE: proxy DHCP on UDP 67/4011, files over HTTP on 7447)
    /// with the installer's `vmlinuz` and `initrd.img` from this directory.
    #[arg(long, env = "STRATA_PXE_DIR")]
    pub pxe_dir: Option<std::path::PathBuf>,
    /// With --pxe-dir: answer network boot clients on this interface only.
    #[arg(long, env = "STRATA_PXE_INTERFACE", requires = "pxe_dir")]
    pub pxe_interface: Option<String>,
    /// TCP address for Prometheus metrics, or `off` (default: listen IP, port 7441).
    #[arg(long, env = "STRATA_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// TCP address of the OpenStack-compatible API, or `off` (default: listen IP, port
    /// 5000; plain HTTP).
    #[arg(long, env = "STRATA_API_LISTEN")]
    pub api_listen: Option<String>,
    /// Serve the OpenStack API over plain HTTP instead of HTTPS with a certificate from
    /// the cluster CA (for local use).
    #[arg(long, env = "STRATA_API_PLAIN")]
    pub api_plain: bool,
    /// Seconds an OpenStack API token stays valid (default 3600).
    #[arg(long, env = "STRATA_TOKEN_TTL_S")]
    pub token_ttl_s: Option<u64>,
    /// Seconds a web console session may sit idle before it has to sign in again
    /// (default 1800).
    #[arg(long, env = "STRATA_CONSOLE_IDLE_S")]
    pub console_idle_s: Option<u64>,
    /// vCPUs placed per core of this node (default 4, as Nova's `cpu_allocation_ratio`).
    #[arg(long, env = "STRATA_CPU_ALLOCATION_RATIO")]
    pub cpu_allocation_ratio: Option<u32>,
    /// Log format: text or json.
    #[arg(long, env = "STRATA_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Seconds a replica's node may be down before the replica is rebuilt on another
    /// node (default 30).
    #[arg(long, env = "STRATA_REPLICA_GRACE_S")]
    pub replica_grace_s: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the node daemon.
    Serve {
        #[command(flatten)]
        flags: NodeFlags,
        /// Join first if the data directory is empty: a node's QUIC address (IP:port), or
        /// `discover` to find the cluster on the local network.
        #[arg(long)]
        join: Option<crate::daemon::join::Target>,
        /// Join token for --join; without one the node shows a join code and waits until
        /// an administrator accepts it in the cluster's web console.
        #[arg(
            long,
            env = "STRATA_JOIN_TOKEN",
            hide_env_values = true,
            requires = "join"
        )]
        token: Option<String>,
        /// With `--join discover`: join only the cluster of this name.
        #[arg(long, requires = "join")]
        join_cluster: Option<String>,
    },
    /// Create a new cluster on this node: cluster CA, node identity, first Raft voter.
    Init {
        #[command(flatten)]
        flags: NodeFlags,
        /// Name of the new cluster.
        #[arg(long, default_value = "strata")]
        cluster_name: String,
    },
    /// Join an existing cluster (then run `strata serve`).
    Join {
        /// QUIC address of any node of the cluster (IP:port), or `discover` to find the
        /// cluster on the local network.
        addr: crate::daemon::join::Target,
        /// Join token from `strata token create`; without one this shows a join code and
        /// waits until an administrator accepts it in the cluster's web console.
        #[arg(long, env = "STRATA_JOIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// With `discover`: join only the cluster of this name.
        #[arg(long)]
        cluster_name: Option<String>,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Manage join tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Print an openrc (or clouds.yaml) for the OpenStack API of this node, for a project.
    Openrc {
        /// Project (default: admin).
        #[arg(long, default_value = "admin")]
        project: String,
        /// User (default: admin; its password is included only for the bootstrap admin,
        /// others are asked for theirs when the file is sourced).
        #[arg(long, default_value = "admin")]
        user: String,
        /// `openrc` (shell) or `clouds-yaml`.
        #[arg(long, default_value = "openrc")]
        format: String,
    },
    /// Install Strata on this server's disk (run from the installer image; reads the
    /// layered install config, see docs/installer.md).
    Install {
        /// The mounted installer image.
        #[arg(long)]
        medium: Option<PathBuf>,
        /// The disk the installer image is on (never a target).
        #[arg(long)]
        medium_disk: Option<String>,
        /// The mounted STRATACFG volume.
        #[arg(long)]
        config_volume: Option<PathBuf>,
        /// A network install's config file (downloaded by the init)...
        #[arg(long, requires = "net_config_source")]
        net_config: Option<PathBuf>,
        /// ...and the URL it came from (named in messages).
        #[arg(long, requires = "net_config")]
        net_config_source: Option<String>,
    },
    /// PID 1 of an installed node: network, first boot, `strata serve` under supervision.
    Boot,
    /// Show the cluster's health: leader, Raft state, nodes and their liveness.
    Status {
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage nodes.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Manage virtual machines.
    Vm {
        #[command(subcommand)]
        cmd: vm::VmCmd,
    },
    /// Manage replicated block volumes.
    Volume {
        #[command(subcommand)]
        cmd: volume::VolumeCmd,
    },
    /// Manage tenant networks (VXLAN segments).
    Network {
        #[command(subcommand)]
        cmd: network::NetworkCmd,
    },
    /// Manage subnets of networks.
    Subnet {
        #[command(subcommand)]
        cmd: network::SubnetCmd,
    },
    /// Manage ports (a MAC and addresses on a network).
    Port {
        #[command(subcommand)]
        cmd: network::PortCmd,
    },
    /// Manage security groups and their rules.
    Secgroup {
        #[command(subcommand)]
        cmd: network::SecgroupCmd,
    },
    /// Manage routers (tenant subnets to an external network, with SNAT).
    Router {
        #[command(subcommand)]
        cmd: network::RouterCmd,
    },
    /// Manage floating IPs (an external address mapped 1:1 to a port).
    Floatingip {
        #[command(subcommand)]
        cmd: network::FloatingIpCmd,
    },
    /// VM sizes.
    Flavor {
        #[command(subcommand)]
        cmd: vm::FlavorCmd,
    },
    /// Show recent cluster events.
    Events {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Diagnostics.
    Debug {
        #[command(subcommand)]
        cmd: DebugCmd,
    },
    /// Print the version.
    Version,
    /// Run one VM with Strata's own VMM (the KVM driver's per-VM worker; started by the
    /// daemon, not by hand).
    #[command(hide = true)]
    Vmm {
        /// The VM's directory, holding vm.json.
        #[arg(long)]
        dir: PathBuf,
        /// The process marker (`strata-vm-<id>`) the driver recognises its workers by.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a single-use join token.
    Create {
        /// Validity, e.g. 30m, 1h, 2d (default 1h).
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List the cluster's nodes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// List the servers asking to join without a token (and their join codes).
    Requests {
        #[arg(long)]
        json: bool,
    },
    /// Accept a server's join request, named by its join code (as its console shows it)
    /// or node id.
    Accept { code: String },
    /// Reject a server's join request (join code or node id).
    Reject { code: String },
    /// Drain a node (id or hostname): maintenance, then its VMs move to other nodes one at
    /// a time (each shuts down and boots there; a node that is down has them evacuated).
    Drain { node: String },
    /// Remove a node from the cluster for good (id or hostname): it must be powered off
    /// and host no VMs; its replicas are rebuilt elsewhere and its certificate is refused.
    Remove { node: String },
}

#[derive(Subcommand, Debug)]
pub enum DebugCmd {
    /// Dump this node's Raft state (JSON).
    Raft,
    /// Every record's revision, by table and key, from this node's state (JSON).
    Store,
    /// Requests this node refused without credentials: counts and the newest (JSON).
    Refusals,
    /// Why a VM was placed on its node.
    Placement { vm: String },
    /// Write a JSON value to the diagnostic table `debug_kv` through Raft.
    Put { key: String, value: String },
    /// Read a key from `debug_kv` (linearizable unless --local).
    Get {
        key: String,
        #[arg(long)]
        local: bool,
    },
    /// Bulk throughput to another node over the node-to-node transport (for `make bench`).
    TransportBench {
        /// The receiving node's id.
        peer: String,
        #[arg(long, default_value_t = 256)]
        mib: u64,
    },
    /// Write load generator for `make bench`: strata:<admin socket> or etcd:<host:port>.
    BenchWrite {
        target: bench::Target,
        #[arg(long, default_value_t = 1000)]
        writes: usize,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        #[arg(long, default_value_t = 256)]
        value_bytes: usize,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(transparent)]
    DataDir(#[from] crate::daemon::datadir::DataDirError),
    #[error(transparent)]
    Join(#[from] crate::daemon::join::JoinError),
    #[error(transparent)]
    Serve(#[from] crate::daemon::ServeError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Install(#[from] crate::installer::install::InstallError),
}

impl Cli {
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/strata"))
    }

    fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.data_dir().join("strata.sock"))
    }

    fn node_config(&self, flags: &NodeFlags) -> Result<Config, CliError> {
        let file = match &flags.config {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        let overrides = ConfigFile {
            data_dir: self.data_dir.clone(),
            listen: flags.listen.clone(),
            advertise: flags.advertise.clone(),
            metrics_listen: flags.metrics_listen.clone(),
            api_listen: flags.api_listen.clone(),
            api_plain: flags.api_plain.then_some(true),
            discovery: flags.discovery.then_some(true),
            pxe_dir: flags.pxe_dir.clone(),
            pxe_interface: flags.pxe_interface.clone(),
            token_ttl_s: flags.token_ttl_s,
            console_idle_s: flags.console_idle_s,
            cpu_allocation_ratio: flags.cpu_allocation_ratio,
            admin_socket: self.socket.clone(),
            log_format: flags.log_format.clone(),
            storage: crate::config::StorageFile {
                replica_grace_s: flags.replica_grace_s,
            },
            ..Default::default()
        };
        Ok(file.merge(overrides).validate()?)
    }
}

/// A join target with the cluster name filter applied to discovery.
fn with_name(
    target: &crate::daemon::join::Target,
    name: &Option<String>,
) -> crate::daemon::join::Target {
    match (target, name) {
        (crate::daemon::join::Target::Discover { .. }, Some(n)) => {
            crate::daemon::join::Target::Discover {
                cluster_name: Some(n.clone()),
            }
        }
        (t, _) => t.clone(),
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, CliError> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().map_err(|_| {
        CliError::Usage(format!(
            "invalid duration {text:?}: expected e.g. 90s, 30m, 1h, 2d"
        ))
    })?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => {
            return Err(CliError::Usage(format!(
                "invalid duration unit in {text:?}: use s, m, h or d"
            )))
        }
    };
    Ok(Duration::from_secs(secs))
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    match &cli.cmd {
        Cmd::Version => {
            println!("strata {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Cmd::Init {
            flags,
            cluster_name,
        } => {
            let config = cli.node_config(flags)?;
            let node = DataDir::new(&config.data_dir).init(cluster_name)?;
            println!(
                "created cluster {} (id {}) with founding node {} in {}\nstart it with: strata serve --data-dir {}",
                node.cluster_name,
                node.cluster_id,
                node.node_id,
                config.data_dir.display(),
                config.data_dir.display()
            );
            Ok(())
        }
        Cmd::Join {
            addr,
            token,
            cluster_name,
            flags,
        } => {
            let config = cli.node_config(flags)?;
            let node = crate::daemon::join::join(
                &DataDir::new(&config.data_dir),
                &with_name(addr, cluster_name),
                token.as_deref(),
                config.advertise,
                Duration::from_secs(15),
            )
            .await?;
            println!(
                "joined cluster {} as node {}\nstart it with: strata serve --data-dir {}",
                node.cluster_name,
                node.node_id,
                config.data_dir.display()
            );
            Ok(())
        }
        Cmd::Serve {
            flags,
            join,
            token,
            join_cluster,
        } => {
            let config = cli.node_config(flags)?;
            crate::telemetry::init_logging(config.log_format);
            let dir = DataDir::new(&config.data_dir);
            if let Some(target) = join {
                if !dir.is_initialised() {
                    crate::daemon::join::join(
                        &dir,
                        &with_name(target, join_cluster),
                        token.as_deref(),
                        config.advertise,
                        Duration::from_secs(15),
                    )
                    .await?;
                }
            }
            crate::daemon::serve(config).await?;
            Ok(())
        }
        Cmd::Install {
            medium,
            medium_disk,
            config_volume,
            net_config,
            net_config_source,
        } => {
            let paths = crate::installer::install::Paths {
                medium: medium.clone(),
                medium_disk: medium_disk.clone(),
                config_volume: config_volume.clone(),
                net_config: net_config.clone().zip(net_config_source.clone()),
                ..Default::default()
            };
            let after = crate::installer::install::run(&paths)?;
            let _ = std::fs::write(paths.run.join("after"), after);
            Ok(())
        }
        Cmd::Boot => crate::installer::boot::run(),
        Cmd::Token {
            cmd: TokenCmd::Create { ttl, json },
        } => {
            let ttl = parse_duration(ttl)?;
            let v = client::call(
                &cli.socket(),
                "POST",
                "/v1/tokens",
                Some(json!({"ttl_seconds": ttl.as_secs()})),
            )
            .await?;
            if *json {
                println!("{v}");
            } else {
                println!("{}", v["token"].as_str().unwrap_or_default());
                eprintln!(
                    "single use, expires in {} s; on the new node run:\n  strata join {} --token <token>",
                    ttl.as_secs(),
                    v["join_address"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        Cmd::Openrc {
            project,
            user,
            format,
        } => {
            let v = client::call(&cli.socket(), "GET", "/v1/openstack", None).await?;
            let url = v["auth_url"].as_str().ok_or_else(|| {
                CliError::Usage(
                    "this node does not serve the OpenStack API (api_listen is off)".into(),
                )
            })?;
            let password = (user == "admin")
                .then(|| {
                    std::fs::read_to_string(DataDir::new(&cli.data_dir()).admin_password()).ok()
                })
                .flatten()
                .map(|p| p.trim().to_string());
            print!(
                "{}",
                output::openrc(
                    url,
                    v["cacert"].as_str(),
                    project,
                    user,
                    password.as_deref(),
                    format
                )
                .map_err(CliError::Usage)?
            );
            Ok(())
        }
        Cmd::Status { json } => {
            let v = client::call(&cli.socket(), "GET", "/v1/status", None).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", output::status(&v));
            }
            Ok(())
        }
        Cmd::Node {
            cmd: NodeCmd::List { json },
        } => {
            let v = client::call(&cli.socket(), "GET", "/v1/nodes", None).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", output::nodes(&v));
            }
            Ok(())
        }
        Cmd::Node {
            cmd: NodeCmd::Requests { json },
        } => {
            let v = client::call(&cli.socket(), "GET", "/v1/join-requests", None).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", output::join_requests(&v));
            }
            Ok(())
        }
        Cmd::Node {
            cmd: NodeCmd::Accept { code } | NodeCmd::Reject { code },
        } => {
            let accept = matches!(
                cli.cmd,
                Cmd::Node {
                    cmd: NodeCmd::Accept { .. }
                }
            );
            let path = format!(
                "/v1/join-requests/{}/{}",
                code.trim(),
                if accept { "accept" } else { "reject" }
            );
            let v = client::call(&cli.socket(), "POST", &path, None).await?;
            println!(
                "{} the join request of {} ({}, code {})",
                if accept { "accepted" } else { "rejected" },
                v["hostname"].as_str().unwrap_or("?"),
                v["addr"].as_str().unwrap_or("?"),
                v["code"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Cmd::Node {
            cmd: NodeCmd::Drain { node },
        } => {
            let path = format!("/v1/nodes/{}/drain", node.trim());
            let v = client::call(&cli.socket(), "POST", &path, None).await?;
            let stayed: Vec<&str> = v["stayed"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
                .unwrap_or_default();
            if stayed.is_empty() {
                println!("node {} drained: no VMs left on it", node.trim());
                Ok(())
            } else {
                Err(CliError::Usage(format!(
                    "node {} drained, but {} VM(s) stay: {}",
                    node.trim(),
                    stayed.len(),
                    stayed.join("; ")
                )))
            }
        }
        Cmd::Node {
            cmd: NodeCmd::Remove { node },
        } => {
            let path = format!("/v1/nodes/{}", node.trim());
            let v = client::call(&cli.socket(), "DELETE", &path, None).await?;
            println!(
                "node {} ({}) removed from the cluster: its replicas are rebuilt on other nodes and its certificate is refused",
                v["id"].as_str().unwrap_or("?"),
                v["hostname"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Cmd::Vm { cmd } => vm::run(&cli.socket(), cmd).await,
        // Dispatched in main before the CLI parser runs; declared here for `--help`.
        Cmd::Vmm { .. } => Err(CliError::Usage(
            "`strata vmm` is started by the daemon's KVM driver".into(),
        )),
        Cmd::Flavor { cmd } => vm::run_flavor(&cli.socket(), cmd).await,
        Cmd::Volume { cmd } => volume::run(&cli.socket(), cmd).await,
        Cmd::Network { cmd } => network::network(&cli.socket(), cmd).await,
        Cmd::Subnet { cmd } => network::subnet(&cli.socket(), cmd).await,
        Cmd::Port { cmd } => network::port(&cli.socket(), cmd).await,
        Cmd::Secgroup { cmd } => network::secgroup(&cli.socket(), cmd).await,
        Cmd::Router { cmd } => network::router(&cli.socket(), cmd).await,
        Cmd::Floatingip { cmd } => network::floatingip(&cli.socket(), cmd).await,
        Cmd::Events { limit, json } => {
            let v = client::call(
                &cli.socket(),
                "GET",
                &format!("/v1/events?limit={limit}"),
                None,
            )
            .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", output::events(&v));
            }
            Ok(())
        }
        Cmd::Debug { cmd } => {
            let v = match cmd {
                DebugCmd::Raft => {
                    client::call(&cli.socket(), "GET", "/v1/debug/raft", None).await?
                }
                DebugCmd::Store => {
                    client::call(&cli.socket(), "GET", "/v1/debug/store", None).await?
                }
                DebugCmd::Refusals => {
                    client::call(&cli.socket(), "GET", "/v1/debug/refusals", None).await?
                }
                DebugCmd::TransportBench { peer, mib } => {
                    client::call(
                        &cli.socket(),
                        "POST",
                        "/v1/debug/transport-bench",
                        Some(serde_json::json!({"peer": peer, "mib": mib})),
                    )
                    .await?
                }
                DebugCmd::Placement { vm } => {
                    client::call(
                        &cli.socket(),
                        "GET",
                        &format!("/v1/debug/placement/{vm}"),
                        None,
                    )
                    .await?
                }
                DebugCmd::Put { key, value } => {
                    let value: serde_json::Value = serde_json::from_str(value)
                        .unwrap_or_else(|_| serde_json::Value::String(value.clone()));
                    client::call(
                        &cli.socket(),
                        "PUT",
                        &format!("/v1/debug/kv/{key}"),
                        Some(value),
                    )
                    .await?
                }
                DebugCmd::BenchWrite {
                    target,
                    writes,
                    concurrency,
                    value_bytes,
                } => {
                    let r = bench::run(target.clone(), *writes, *concurrency, *value_bytes)
                        .await
                        .map_err(CliError::Usage)?;
                    serde_json::to_value(r).unwrap_or_default()
                }
                DebugCmd::Get { key, local } => {
                    client::call(
                        &cli.socket(),
                        "GET",
                        &format!("/v1/debug/kv/{key}?linearizable={}", !local),
                        None,
                    )
                    .await?
                }
            };
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("abc").is_err());
    }
}
