//! `strata serve`: builds every service in order, wires them, and shuts them down in
//! reverse order. Makes no decisions of its own.

pub mod datadir;
pub mod join;
pub mod limits;

use std::sync::Arc;
use std::time::Duration;

use openraft::rt::WatchReceiver;

use crate::agent::attach::Attachments;
use crate::agent::console::{AgentService, Consoles};
use crate::agent::vms::VmAgent;
use crate::agent::volumes::VolumeAgent;
use crate::api::admin;
use crate::cluster::membership::Membership;
use crate::cluster::raft::RaftNode;
use crate::cluster::store::tables::{NodeRecord, Nodes};
use crate::cluster::store::Store;
use crate::cluster::CtlService;
use crate::compute::kvm::KvmDriver;
use crate::compute::qemu::QemuDriver;
use crate::compute::Hypervisor;
use crate::config::Config;
use crate::control::join::JoinService;
use crate::control::{now_secs, Control};
use crate::storage::replica::{BlkService, ReplicaServer};
use crate::telemetry::{error_chain, Metrics};
use crate::transport::{pki, Class, Transport};
use datadir::{DataDir, PeerEntry};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error(transparent)]
    Raft(#[from] crate::cluster::raft::RaftError),
    #[error("cannot serve the admin API on {path}")]
    Admin {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pxe(#[from] crate::network::pxe::PxeError),
    #[error("network install needs an IPv4 advertise address, not {0}")]
    PxeAddress(std::net::SocketAddr),
    #[error(transparent)]
    Discovery(#[from] crate::cluster::discovery::DiscoveryError),
    #[error("cannot set up the hypervisor driver")]
    Compute(#[source] crate::compute::ComputeError),
    #[error("cannot listen on the NBD socket {path}")]
    Nbd {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up block storage")]
    Storage(#[source] crate::storage::VolumeError),
    #[error("Raft stopped: {0}")]
    RaftFatal(String),
}

/// Everything a running node is made of, for the admin API and for tests.
pub struct Node {
    pub config: Config,
    pub control: Arc<Control>,
    pub transport: Arc<Transport>,
    pub membership: Arc<Membership>,
    pub metrics: Arc<Metrics>,
    pub datadir: DataDir,
    /// Volumes attached to this node and their NBD exports.
    pub attachments: Arc<Attachments>,
}

impl Node {
    /// Starts a node from an initialised data directory.
    pub async fn start(config: Config) -> Result<Arc<Node>, ServeError> {
        let datadir = DataDir::new(&config.data_dir);
        let identity = datadir.load()?;
        datadir.make_private()?;
        let me = identity.node.node_id;
        let ca_der = pki::pem_to_cert_der(&identity.ca_cert_pem).map_err(|e| {
            datadir::DataDirError::Corrupt {
                path: config.data_dir.join("pki/ca.crt"),
                reason: e.to_string(),
            }
        })?;
        let metrics = Metrics::new();
        let transport = Transport::bind(config.listen, &identity.tls, &ca_der, metrics.clone())?;
        let advertise = if config.advertise.port() == 0 {
            transport
                .local_addr()
                .map_err(|source| crate::transport::TransportError::Bind {
                    addr: config.listen,
                    source,
                })?
        } else {
            config.advertise
        };
        let raft =
            RaftNode::start(me, &datadir.raft_dir(), &config.raft, transport.clone()).await?;
        let membership = Membership::start(
            me,
            advertise,
            config.gossip.failure_detection,
            transport.clone(),
        );
        transport.register(
            Class::Ctl,
            Arc::new(CtlService {
                raft: raft.clone(),
                membership: membership.clone(),
            }),
        );
        let control = Arc::new(Control {
            node: me,
            store: Store::new(raft.clone()),
            membership: membership.clone(),
            tuning: config.raft.clone(),
            replica_grace: config.storage.replica_grace,
            token_ttl: config.token_ttl,
            cpu_allocation_ratio: config.cpu_allocation_ratio,
            consoles: std::sync::OnceLock::new(),
            volume_data: std::sync::OnceLock::new(),
            refusals: Default::default(),
            throttle: Default::default(),
        });
        let (accel, accel_why) = crate::compute::detect_accel();
        // KVM: Strata's own VMM, one worker process per VM. Elsewhere: QEMU with TCG.
        let driver: Arc<dyn Hypervisor> = match accel {
            crate::compute::Accel::Kvm => {
                Arc::new(KvmDriver::new(&datadir.vms_dir()).map_err(ServeError::Compute)?)
            }
            crate::compute::Accel::Tcg => {
                Arc::new(QemuDriver::new(&datadir.vms_dir(), accel).map_err(ServeError::Compute)?)
            }
        };
        tracing::info!(driver = driver.name(), reason = %accel_why, "hypervisor driver chosen");
        transport.register(
            Class::Agent,
            Arc::new(AgentService {
                driver: driver.clone(),
            }),
        );
        let _ = control.consoles.set(Arc::new(Consoles {
            me,
            driver: driver.clone(),
            transport: transport.clone(),
            store: control.store.clone(),
        }));
        let regions = datadir.regions_dir();
        let replica_server = ReplicaServer::new(&regions).map_err(ServeError::Storage)?;
        transport.register(Class::Blk, Arc::new(BlkService(replica_server.clone())));
        transport.register(Class::Mig, Arc::new(crate::transport::bulk::Sink));
        let volume_agent = VolumeAgent::new(control.clone(), replica_server.clone(), regions);
        let attachments = Attachments::new(control.clone(), transport.clone(), replica_server);
        // Spooled uploads of an earlier run: none is in flight before the API listens.
        let _ = std::fs::remove_dir_all(datadir.root.join("image-scratch"));
        let _ = control
            .volume_data
            .set(Arc::new(crate::agent::images::ImageData {
                attachments: Arc::downgrade(&attachments),
                scratch: datadir.root.join("image-scratch"),
            }));
        // VM processes that run as users of their own reach their exports, and only
        // theirs, through the abstract socket (see `storage::nbd`).
        let access_driver = driver.clone();
        attachments
            .exports
            .set_access(Arc::new(move |uid, export: &str| {
                access_driver.may_use_export(uid, export)
            }));
        let vm_agent = VmAgent::new(
            control.clone(),
            driver,
            attachments.clone(),
            datadir.nbd_socket(),
        );
        let nbd_path = datadir.nbd_socket();
        let _ = std::fs::remove_file(&nbd_path);
        let nbd_err = |source| ServeError::Nbd {
            path: nbd_path.clone(),
            source,
        };
        let nbd = tokio::net::UnixListener::bind(&nbd_path).map_err(nbd_err)?;
        // Root only, like the admin socket: whoever can connect can read and write volumes.
        std::fs::set_permissions(
            &nbd_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(nbd_err)?;
        tokio::spawn(crate::storage::nbd::serve_unix(
            nbd,
            attachments.exports.clone(),
        ));
        let vm_nbd = crate::compute::nbd_abstract_name(&nbd_path);
        let vm_nbd =
            crate::storage::nbd::bind_abstract(&vm_nbd).map_err(|source| ServeError::Nbd {
                path: std::path::PathBuf::from(format!("@{vm_nbd}")),
                source,
            })?;
        tokio::spawn(crate::storage::nbd::serve_unix(
            vm_nbd,
            attachments.exports.clone(),
        ));
        transport.register(
            Class::Join,
            Arc::new(JoinService {
                control: control.clone(),
            }),
        );
        tracing::info!(node = %me, listen = %config.listen, %advertise, cluster = %identity.node.cluster_name, "node started");

        if identity.bootstrap {
            raft.initialize(advertise).await?;
            let host = crate::agent::host::detect();
            let record = NodeRecord {
                id: me,
                hostname: host.hostname.clone(),
                addr: advertise,
                cores: host.cores,
                memory_bytes: host.memory_bytes,
                disks: host.disks.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                role: "server".into(),
                joined_at: now_secs(),
                hypervisor: host.hypervisor.clone(),
                hypervisor_reason: host.hypervisor_reason.clone(),
                cpu_allocation_ratio: config.cpu_allocation_ratio,
                maintenance: None,
            };
            let ca_key = identity.ca_key_pem.clone().unwrap_or_default();
            let mut tries = 0;
            loop {
                match control
                    .bootstrap(
                        identity.node.cluster_id.clone(),
                        &identity.node.cluster_name,
                        &identity.ca_cert_pem,
                        &ca_key,
                        record.clone(),
                    )
                    .await
                {
                    Ok(()) => break,
                    Err(e) if tries < 20 => {
                        tries += 1;
                        tracing::debug!(error = %e, "bootstrap write not yet possible");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => {
                        return Err(ServeError::RaftFatal(format!(
                            "bootstrap: {}",
                            error_chain(&e)
                        )))
                    }
                }
            }
            datadir.finish_bootstrap()?;
            tracing::info!(cluster = %identity.node.cluster_name, "cluster bootstrapped");
            // The first credentials: written once, readable by root only, never logged.
            // An installed node's install config may set the first password
            // (`strata boot` passes it in the environment, never on the command line).
            let preset = std::env::var("STRATA_ADMIN_PASSWORD")
                .ok()
                .filter(|p| p.chars().count() >= 8);
            let preset_given = preset.is_some();
            match control.bootstrap_identity_with(preset).await {
                // The person who chose the password knows it: no copy on disk.
                Ok(Some(_)) if preset_given => {
                    tracing::info!("admin password set from the install config")
                }
                Ok(Some(password)) => {
                    let path = datadir.admin_password();
                    match datadir.write_admin_password(&password) {
                        Ok(()) => {
                            tracing::info!(file = %path.display(), "admin credentials written")
                        }
                        Err(e) => {
                            tracing::warn!(file = %path.display(), error = %error_chain(&e), "cannot write the admin password")
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %error_chain(&e), "identity not bootstrapped"),
            }
        }

        for p in &identity.node.peers {
            membership.announce(p.id, p.addr);
        }
        let node = Arc::new(Node {
            config: Config {
                advertise,
                ..config
            },
            control: control.clone(),
            transport,
            membership,
            metrics,
            datadir,
            attachments: attachments.clone(),
        });
        tokio::spawn(control.clone().run_reconcilers());
        tokio::spawn(vm_agent.run());
        tokio::spawn(volume_agent.run());
        tokio::spawn(attachments.run());
        tokio::spawn(crate::agent::network::NetworkAgent::new(control.clone()).run());
        tokio::spawn(node.clone().housekeeping());
        tokio::spawn(node.clone().refuse_removed_nodes());
        Ok(node)
    }

    /// Keeps this node's record current, re-announces to known peers, saves the peer list.
    /// Keeps the transport's list of removed nodes (whose certificates it refuses) in step
    /// with the cluster state: on every store change, and every 2 s.
    async fn refuse_removed_nodes(self: Arc<Self>) {
        let mut changes = self.control.store.watch();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut applied = std::collections::HashSet::new();
        loop {
            if !crate::agent::next_pass(&mut changes, &mut tick).await {
                return;
            }
            let Ok(removed) = self.control.removed_nodes() else {
                continue;
            };
            let removed: std::collections::HashSet<_> = removed.into_iter().map(|r| r.id).collect();
            if removed != applied {
                tracing::info!(nodes = ?removed, "refusing the certificates of removed nodes");
                self.transport.set_removed(removed.clone());
                applied = removed;
            }
        }
    }

    async fn housekeeping(self: Arc<Self>) {
        let host = crate::agent::host::detect();
        let mut registered = false;
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut saved: Vec<(crate::ids::NodeId, std::net::SocketAddr)> = vec![];
        loop {
            tick.tick().await;
            if !registered {
                match self
                    .control
                    .register_self(self.config.advertise, &host)
                    .await
                {
                    Ok(_) => registered = true,
                    Err(e) => {
                        tracing::debug!(error = %error_chain(&e), "self-registration pending")
                    }
                }
            }
            let Ok(nodes) = self.control.store.list::<Nodes>() else {
                continue;
            };
            let view = self.membership.view();
            let mut peers = vec![];
            for n in nodes {
                if n.value.id == self.control.node {
                    continue;
                }
                peers.push((n.value.id, n.value.addr));
                if !view.contains_key(&n.value.id)
                    || view
                        .get(&n.value.id)
                        .is_some_and(|p| p.liveness == crate::cluster::membership::Liveness::Down)
                {
                    self.membership.announce(n.value.id, n.value.addr);
                }
            }
            if peers != saved && !peers.is_empty() {
                let entries = peers
                    .iter()
                    .map(|(id, addr)| PeerEntry {
                        id: *id,
                        addr: *addr,
                    })
                    .collect();
                if let Err(e) = self.datadir.save_peers(entries) {
                    tracing::warn!(error = %error_chain(&e), "cannot save peer list");
                } else {
                    saved = peers;
                }
            }
        }
    }

    /// Refreshes the gauges exported on /metrics.
    pub fn refresh_metrics(&self) {
        let raft = self.control.raft();
        let m = raft.metrics();
        let g = &self.metrics;
        g.raft_term.set(m.current_term as i64);
        let commit = m.local_committed.as_ref().map(|l| l.index()).unwrap_or(0);
        let applied = m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0);
        g.raft_commit_index.set(commit as i64);
        g.raft_applied_index.set(applied as i64);
        g.raft_apply_lag.set(commit.saturating_sub(applied) as i64);
        g.raft_is_leader.set(raft.is_leader() as i64);
        let view = raft.membership();
        g.raft_voters.set(view.voters.len() as i64);
        g.raft_learners.set(view.learners.len() as i64);
        let alive = self
            .membership
            .view()
            .values()
            .filter(|p| p.liveness != crate::cluster::membership::Liveness::Down)
            .count();
        g.membership_alive.set(alive as i64 + 1);
        g.extent_files_open
            .set(crate::storage::extent::open::open_files() as i64);
        for ((via, reason), n) in self.control.refusals.counts() {
            g.set_refused(&via, reason, n);
        }
        g.membership_size.set(
            self.control
                .store
                .list::<Nodes>()
                .map(|n| n.len())
                .unwrap_or(0) as i64,
        );
    }

    /// Stops in reverse order of start.
    pub async fn shutdown(&self) {
        self.membership.leave();
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.control.raft().shutdown().await;
        self.transport.shutdown().await;
        let _ = std::fs::remove_file(&self.config.admin_socket);
    }
}

/// The HTTP surface of a node: the OpenStack API and the web console on one listener.
fn web_app(node: &Arc<Node>, secure: bool) -> axum::Router {
    crate::api::openstack::routes_with_audit(Arc::new(crate::api::openstack::Api {
        control: node.control.clone(),
    }))
    .merge(crate::console::router(
        node.control.clone(),
        secure,
        node.config.console_idle,
    ))
}

/// Network install of further servers: proxy DHCP, TFTP and the installer's files over
/// HTTP; the install config it hands out joins this cluster at this node with a join
/// code. Loaded and checksummed in the background: the rest of the node does not wait.
fn serve_pxe(node: &Arc<Node>, dir: &std::path::Path) -> Result<(), ServeError> {
    use crate::network::pxe::{self, PxeFiles};
    let std::net::IpAddr::V4(ip) = node.config.advertise.ip() else {
        return Err(ServeError::PxeAddress(node.config.advertise));
    };
    let control = node.control.clone();
    let join = node.config.advertise;
    let config = Box::new(move || {
        let name = control.cluster_name().unwrap_or_default();
        format!(
            "# Served by a node of cluster {name:?} to servers installed over the network.\n\
             schema = 1\nmode = \"join\"\njoin = \"{join}\"\ncluster_name = {name:?}\n"
        )
    });
    let (dir, iface) = (dir.to_path_buf(), node.config.pxe_interface.clone());
    tokio::spawn(async move {
        let run = async move {
            let files = tokio::task::spawn_blocking(move || PxeFiles::load(&dir, ip, config))
                .await
                .map_err(|e| pxe::PxeError::Task(e.to_string()))??;
            let files = Arc::new(files);
            // Only on the address the install config and iPXE script name (review F14).
            let addr = std::net::SocketAddr::from((ip, pxe::HTTP_PORT));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| pxe::PxeError::Listen {
                    what: format!("TCP {addr} (network install files)"),
                    source,
                })?;
            let app = pxe::routes(files.clone());
            tokio::spawn(crate::httpd::serve(
                listener,
                app,
                None,
                crate::httpd::Limits::SMALL,
                "network installs",
            ));
            pxe::serve_proxy_dhcp(files, iface).await
        };
        if let Err(e) = run.await {
            tracing::error!(error = %crate::telemetry::error_chain(&e), "network installs are not served");
        }
    });
    Ok(())
}

/// Runs a node until SIGINT/SIGTERM or until Raft stops on a fatal storage error.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let open_files = match limits::raise_open_files() {
        (n, None) => {
            tracing::info!(open_files = n, "open-file limit");
            n
        }
        (n, Some(w)) => {
            tracing::warn!("{w}");
            n
        }
    };
    // Extent files may take half of the descriptors; sockets and the rest keep the others.
    crate::storage::extent::open::set_budget(usize::try_from(open_files / 2).unwrap_or(usize::MAX));
    let node = Node::start(config).await?;
    let admin_path = node.config.admin_socket.clone();
    let admin = admin::listen(&admin_path).map_err(|source| ServeError::Admin {
        path: admin_path.clone(),
        source,
    })?;
    tokio::spawn(admin::serve(admin, node.clone()));
    if node.config.discovery {
        let socket = crate::cluster::discovery::bind(crate::cluster::discovery::PORT).await?;
        let control = node.control.clone();
        let (addr, host) = (node.config.advertise, crate::agent::host::detect().hostname);
        tokio::spawn(crate::cluster::discovery::respond(socket, move || {
            control.announce(addr, &host)
        }));
    }
    if let Some(dir) = &node.config.pxe_dir {
        serve_pxe(&node, dir)?;
    }
    if let Some(addr) = node.config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Metrics { addr, source })?;
        tokio::spawn(admin::serve_metrics(listener, node.clone()));
    }
    if let Some(addr) = node.config.api_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Metrics { addr, source })?;
        if node.config.api_plain {
            tokio::spawn(crate::api::openstack::serve(
                listener,
                web_app(&node, false),
            ));
        } else {
            tokio::spawn(serve_api_tls(listener, node.clone()));
        }
    }
    println!(
        "strata node {} serving: cluster endpoint {} (QUIC), admin socket {}{}",
        node.control.node,
        node.config.advertise,
        admin_path.display(),
        node.config
            .metrics_listen
            .map(|a| format!(", metrics http://{a}/metrics"))
            .unwrap_or_default()
            + &node
                .config
                .api_listen
                .map(|a| format!(
                    ", OpenStack API {}://{a}/identity/v3",
                    if node.config.api_plain {
                        "http"
                    } else {
                        "https"
                    }
                ))
                .unwrap_or_default()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| ServeError::Admin {
            path: admin_path.clone(),
            source,
        })?;
    let mut metrics_rx = node.control.raft().raft.metrics();
    let fatal = async {
        loop {
            if let Err(e) = &metrics_rx.borrow_watched().running_state {
                return e.to_string();
            }
            if metrics_rx.changed().await.is_err() {
                return "Raft task ended".to_string();
            }
        }
    };
    let result = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        reason = fatal => Err(ServeError::RaftFatal(reason)),
    };
    tracing::info!("shutting down");
    node.shutdown().await;
    result
}

/// Serves the OpenStack API over HTTPS once the cluster CA has signed this node's API
/// certificate (the CA key is read from the replicated secrets, so the store must be
/// readable first). The certificate is written to `pki/api.crt` for inspection.
async fn serve_api_tls(listener: tokio::net::TcpListener, node: Arc<Node>) {
    let api = node.config.api_listen;
    let mut ips: Vec<std::net::IpAddr> = vec![
        node.config.advertise.ip(),
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    if let Some(a) = api.filter(|a| !a.ip().is_unspecified()) {
        ips.push(a.ip());
    }
    ips.dedup();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let mut dns = vec![host, "localhost".to_string()];
    dns.dedup();
    let mut logged = false;
    let cert = loop {
        match node.control.issue_api_cert(&dns, &ips) {
            Ok(c) => break c,
            Err(e) => {
                if !logged {
                    tracing::info!(error = %crate::telemetry::error_chain(&e), "OpenStack API waits for the cluster CA");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let pki = node.config.data_dir.join("pki");
    let _ = std::fs::write(pki.join("api.crt"), &cert.cert_pem);
    let ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap_or_default();
    match crate::api::openstack::tls_config(&cert.cert_pem, &ca, &cert.key_pem) {
        Ok(tls) => {
            tracing::info!(addr = ?api, "OpenStack API serving HTTPS (certificate from the cluster CA)");
            crate::api::openstack::serve_tls(listener, web_app(&node, true), tls).await
        }
        Err(e) => tracing::error!(error = %e, "OpenStack API cannot serve TLS"),
    }
}
