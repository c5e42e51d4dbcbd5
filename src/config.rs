//! One typed configuration, assembled once at start from built-in defaults, a TOML file, the
//! environment and command-line flags (later sources win), and validated before anything runs.
//! No other module reads files, environment variables or flags for settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default UDP port of the node-to-node QUIC endpoint.
pub const DEFAULT_PORT: u16 = 7440;
/// The OpenStack-compatible API's port (Keystone's traditional one).
pub const API_PORT: u16 = 5000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML for strata")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid setting `{key}` = {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Everything a running node needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// UDP address of the QUIC endpoint.
    pub listen: SocketAddr,
    /// Address other nodes use to reach this one.
    pub advertise: SocketAddr,
    /// TCP address of the Prometheus endpoint (default: the management address, port
    /// 7441); `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// A bearer token `/metrics` requires (`metrics_token_file`); none: open to whoever
    /// reaches the management address.
    pub metrics_token: Option<String>,
    /// TCP address of the OpenStack-compatible API; `None` disables it.
    pub api_listen: Option<SocketAddr>,
    /// Answer discovery probes of joining servers on UDP port 7446 (installed nodes).
    pub discovery: bool,
    /// Serve network installs (proxy DHCP, HTTP 7447) with the installer kernel and
    /// initramfs in this directory (`vmlinuz`, `initrd.img`); off when unset.
    pub pxe_dir: Option<PathBuf>,
    /// Answer network boot clients on this interface only.
    pub pxe_interface: Option<String>,
    /// Serve the API over plain HTTP instead of HTTPS (local use only).
    pub api_plain: bool,
    /// How long an API token is valid (Keystone's `[token] expiration`).
    pub token_ttl: Duration,
    /// How long a web console session may sit idle.
    pub console_idle: Duration,
    /// vCPUs placed per core of this node (Nova's `cpu_allocation_ratio`).
    pub cpu_allocation_ratio: u32,
    /// Unix socket of the local admin API used by the CLI.
    pub admin_socket: PathBuf,
    pub log_format: LogFormat,
    pub raft: RaftTuning,
    pub gossip: GossipTuning,
    pub storage: StorageTuning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot (and compact the log) after this many entries.
    pub snapshot_every: u64,
    /// Log entries kept behind the latest snapshot for slow followers.
    pub keep_behind_snapshot: u64,
    /// The most voters the cluster keeps; the remaining nodes are learners.
    pub max_voters: usize,
    /// Writes are refused while the data disk has less free space than this.
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct StorageTuning {
    /// How long a replica's node may be down before the replica is rebuilt elsewhere.
    pub replica_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct GossipTuning {
    /// Time within which a dead peer is declared down on a quiet LAN.
    pub failure_detection: Duration,
}

/// The raw, optional form read from a TOML file (and used for overrides).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub metrics_listen: Option<String>,
    pub api_listen: Option<String>,
    pub api_plain: Option<bool>,
    pub discovery: Option<bool>,
    pub pxe_dir: Option<PathBuf>,
    pub pxe_interface: Option<String>,
    /// A file holding the bearer token that `/metrics` requires.
    pub metrics_token_file: Option<PathBuf>,
    pub token_ttl_s: Option<u64>,
    pub console_idle_s: Option<u64>,
    pub cpu_allocation_ratio: Option<u32>,
    pub admin_socket: Option<PathBuf>,
    pub log_format: Option<String>,
    #[serde(default)]
    pub raft: RaftFile,
    #[serde(default)]
    pub gossip: GossipFile,
    #[serde(default)]
    pub storage: StorageFile,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFile {
    pub replica_grace_s: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftFile {
    pub heartbeat_ms: Option<u64>,
    pub election_timeout_min_ms: Option<u64>,
    pub election_timeout_max_ms: Option<u64>,
    pub snapshot_every: Option<u64>,
    pub keep_behind_snapshot: Option<u64>,
    pub max_voters: Option<usize>,
    pub min_free_mb: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipFile {
    pub failure_detection_ms: Option<u64>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Overlays `other` (a later source: environment or flags) on `self`.
    pub fn merge(mut self, other: ConfigFile) -> Self {
        macro_rules! take {
            ($($f:ident).+) => { if other.$($f).+.is_some() { self.$($f).+ = other.$($f).+; } };
        }
        take!(data_dir);
        take!(listen);
        take!(advertise);
        take!(metrics_listen);
        take!(api_listen);
        take!(api_plain);
        take!(discovery);
        take!(pxe_dir);
        take!(pxe_interface);
        take!(metrics_token_file);
        take!(token_ttl_s);
        take!(console_idle_s);
        take!(cpu_allocation_ratio);
        take!(admin_socket);
        take!(log_format);
        take!(raft.heartbeat_ms);
        take!(raft.election_timeout_min_ms);
        take!(raft.election_timeout_max_ms);
        take!(raft.snapshot_every);
        take!(raft.keep_behind_snapshot);
        take!(raft.max_voters);
        take!(raft.min_free_mb);
        take!(gossip.failure_detection_ms);
        take!(storage.replica_grace_s);
        self
    }

    /// Applies defaults and checks every value.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/strata"));
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "", "must not be empty"));
        }
        let listen_text = self
            .listen
            .unwrap_or_else(|| format!("0.0.0.0:{DEFAULT_PORT}"));
        let listen = parse_addr("listen", &listen_text)?;
        let explicit_advertise = self.advertise.is_some();
        let advertise = match self.advertise {
            Some(a) => parse_addr("advertise", &a)?,
            None if listen.ip().is_unspecified() => {
                return Err(invalid(
                    "advertise",
                    "",
                    "required when `listen` is a wildcard address; set it to the address other nodes reach this one at",
                ))
            }
            // Port 0 here means "whatever port the endpoint gets" (tests, ad-hoc nodes).
            None => listen,
        };
        if advertise.ip().is_unspecified() || (explicit_advertise && advertise.port() == 0) {
            return Err(invalid(
                "advertise",
                &advertise.to_string(),
                "must be a concrete address and port",
            ));
        }
        // On the management address (where the cluster talks), not every interface.
        let metrics_listen = match self.metrics_listen.as_deref() {
            None => Some(SocketAddr::new(advertise.ip(), DEFAULT_PORT + 1)),
            Some("") | Some("off") => None,
            Some(a) => Some(parse_addr("metrics_listen", a)?),
        };
        let metrics_token = match &self.metrics_token_file {
            None => None,
            Some(p) => {
                let t = std::fs::read_to_string(p)
                    .map_err(|e| {
                        invalid(
                            "metrics_token_file",
                            &p.display().to_string(),
                            &format!("cannot be read: {e}"),
                        )
                    })?
                    .trim()
                    .to_string();
                if t.len() < 16 {
                    return Err(invalid(
                        "metrics_token_file",
                        &p.display().to_string(),
                        "must hold a token of at least 16 characters",
                    ));
                }
                Some(t)
            }
        };
        let api_listen = match self.api_listen.as_deref() {
            None => Some(SocketAddr::new(listen.ip(), API_PORT)),
            Some("") | Some("off") => None,
            Some(a) => Some(parse_addr("api_listen", a)?),
        };
        let ttl = self.token_ttl_s.unwrap_or(3600);
        if !(2..=30 * 86400).contains(&ttl) {
            return Err(invalid(
                "token_ttl_s",
                &ttl.to_string(),
                "must be between 2 s and 30 days",
            ));
        }
        let token_ttl = Duration::from_secs(ttl);
        let idle = self.console_idle_s.unwrap_or(1800);
        if !(2..=86400).contains(&idle) {
            return Err(invalid(
                "console_idle_s",
                &idle.to_string(),
                "must be between 2 s and a day",
            ));
        }
        let console_idle = Duration::from_secs(idle);
        let cpu_allocation_ratio = self
            .cpu_allocation_ratio
            .unwrap_or(crate::control::placement::CPU_ALLOCATION_RATIO);
        if !(1..=1000).contains(&cpu_allocation_ratio) {
            return Err(invalid(
                "cpu_allocation_ratio",
                &cpu_allocation_ratio.to_string(),
                "must be between 1 and 1000",
            ));
        }
        let admin_socket = self
            .admin_socket
            .unwrap_or_else(|| data_dir.join("strata.sock"));
        let log_format = match self.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("log_format", other, "expected `text` or `json`")),
        };

        let hb = self.raft.heartbeat_ms.unwrap_or(200);
        let emin = self.raft.election_timeout_min_ms.unwrap_or(1000);
        let emax = self.raft.election_timeout_max_ms.unwrap_or(2000);
        if hb == 0 {
            return Err(invalid("raft.heartbeat_ms", "0", "must be positive"));
        }
        if emin < 3 * hb {
            return Err(invalid(
                "raft.election_timeout_min_ms",
                &emin.to_string(),
                &format!("must be at least three heartbeats ({} ms)", 3 * hb),
            ));
        }
        if emax <= emin {
            return Err(invalid(
                "raft.election_timeout_max_ms",
                &emax.to_string(),
                "must be greater than raft.election_timeout_min_ms",
            ));
        }
        let snapshot_every = self.raft.snapshot_every.unwrap_or(5000);
        if snapshot_every == 0 {
            return Err(invalid("raft.snapshot_every", "0", "must be positive"));
        }
        let max_voters = self.raft.max_voters.unwrap_or(5);
        if max_voters == 0 || max_voters.is_multiple_of(2) || max_voters > 9 {
            return Err(invalid(
                "raft.max_voters",
                &max_voters.to_string(),
                "must be odd and between 1 and 9",
            ));
        }
        let fd = self.gossip.failure_detection_ms.unwrap_or(2000);
        if fd < 300 {
            return Err(invalid(
                "gossip.failure_detection_ms",
                &fd.to_string(),
                "must be at least 300 ms",
            ));
        }
        let grace = self.storage.replica_grace_s.unwrap_or(30);
        if !(2..=86400).contains(&grace) {
            return Err(invalid(
                "storage.replica_grace_s",
                &grace.to_string(),
                "must be between 2 s and a day",
            ));
        }
        Ok(Config {
            data_dir,
            listen,
            advertise,
            metrics_listen,
            discovery: self.discovery.unwrap_or(false),
            pxe_dir: self.pxe_dir,
            pxe_interface: self.pxe_interface,
            metrics_token,
            api_listen,
            api_plain: self.api_plain.unwrap_or(false),
            token_ttl,
            console_idle,
            cpu_allocation_ratio,
            admin_socket,
            log_format,
            raft: RaftTuning {
                heartbeat: Duration::from_millis(hb),
                election_timeout_min: Duration::from_millis(emin),
                election_timeout_max: Duration::from_millis(emax),
                snapshot_every,
                keep_behind_snapshot: self.raft.keep_behind_snapshot.unwrap_or(1000),
                max_voters,
                min_free_bytes: self.raft.min_free_mb.unwrap_or(64) << 20,
            },
            gossip: GossipTuning {
                failure_detection: Duration::from_millis(fd),
            },
            storage: StorageTuning {
                replica_grace: Duration::from_secs(grace),
            },
        })
    }
}

fn invalid(key: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_addr(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse::<SocketAddr>()
        .map_err(|e| invalid(key, text, &format!("not an IP:port address ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let f: ConfigFile = toml::from_str(text).expect("toml");
        f.validate()
    }

    #[test]
    fn defaults_need_an_advertise_address_for_wildcard_listen() {
        let err = parse("").unwrap_err().to_string();
        assert!(err.contains("advertise"), "{err}");
    }

    #[test]
    fn loopback_listen_is_its_own_advertise_address() {
        let c = parse("listen = \"127.0.0.1:7440\"\ndata_dir = \"/tmp/x\"").unwrap();
        assert_eq!(c.advertise, c.listen);
        assert_eq!(c.admin_socket, PathBuf::from("/tmp/x/strata.sock"));
        assert_eq!(c.metrics_listen.unwrap().port(), 7441);
    }

    #[test]
    fn metrics_listen_on_the_management_address_and_may_need_a_token() {
        let d = tempfile::tempdir().unwrap();
        let c = parse(&format!(
            "listen = \"0.0.0.0:7440\"\nadvertise = \"192.0.2.7:7440\"\ndata_dir = \"{}\"",
            d.path().display()
        ))
        .unwrap();
        assert_eq!(c.metrics_listen.unwrap().to_string(), "192.0.2.7:7441");
        assert_eq!(c.metrics_token, None);
        let tok = d.path().join("metrics.token");
        std::fs::write(&tok, "short\n").unwrap();
        let with = |p: &std::path::Path| {
            parse(&format!(
                "listen = \"127.0.0.1:7440\"\ndata_dir = \"/tmp/x\"\nmetrics_token_file = \"{}\"",
                p.display()
            ))
        };
        let err = with(&tok).unwrap_err().to_string();
        assert!(err.contains("metrics_token_file"), "{err}");
        std::fs::write(&tok, "0123456789abcdef0123\n").unwrap();
        assert_eq!(
            with(&tok).unwrap().metrics_token.as_deref(),
            Some("0123456789abcdef0123")
        );
        let err = with(&d.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{err}");
    }

    #[test]
    fn the_api_serves_https_unless_plain_is_asked_for() {
        let c = parse("listen = \"127.0.0.1:7440\"\ndata_dir = \"/tmp/x\"").unwrap();
        assert!(!c.api_plain);
        let c =
            parse("listen = \"127.0.0.1:7440\"\ndata_dir = \"/tmp/x\"\napi_plain = true").unwrap();
        assert!(c.api_plain);
    }

    #[test]
    fn later_sources_win() {
        let file: ConfigFile =
            toml::from_str("listen = \"127.0.0.1:1\"\n[raft]\nheartbeat_ms = 100").unwrap();
        let flags = ConfigFile {
            listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let c = file.merge(flags).validate().unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.raft.heartbeat, Duration::from_millis(100));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = toml::from_str::<ConfigFile>("lisen = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = parse("listen = \"nonsense\"").unwrap_err().to_string();
        assert!(e.contains("listen") && e.contains("nonsense"), "{e}");
        let e = parse("listen = \"127.0.0.1:1\"\n[raft]\nmax_voters = 4")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_voters"), "{e}");
        let e = parse("listen = \"127.0.0.1:1\"\n[raft]\nheartbeat_ms = 500")
            .unwrap_err()
            .to_string();
        assert!(e.contains("election_timeout_min_ms"), "{e}");
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let e = ConfigFile::load(Path::new("/nonexistent/strata.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/strata.toml"));
    }
}
