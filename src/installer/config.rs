//! The unattended-install configuration: a TOML document (`schema = 1`) read from layered
//! sources, each later one overriding the keys it sets: built-in defaults, a config
//! embedded in the image, `install.toml` on a FAT volume labelled `STRATACFG`,
//! `strata.install.*` kernel arguments, then (network installs) the config served by the
//! node the server booted from. The merged result is validated once, with
//! errors that name the source of the bad value.

use serde::Deserialize;

use crate::control::tokens::JoinToken;

/// One source's document; every key optional (a layer sets only what it knows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallFile {
    pub schema: Option<u32>,
    /// `create` a new cluster or `join` one.
    pub mode: Option<String>,
    pub cluster_name: Option<String>,
    /// An existing node's address (`host:port`) to join.
    pub join: Option<String>,
    pub token: Option<String>,
    pub hostname: Option<String>,
    /// The first admin's password (mode `create`; default: generated on the first start
    /// and shown on the node's console).
    pub admin_password: Option<String>,
    /// `reboot` (default) or `poweroff` when the install is done.
    pub after: Option<String>,
    /// Serve network installs (PXE) to further servers from this node (default false).
    pub pxe: Option<bool>,
    #[serde(default)]
    pub disk: DiskFile,
    #[serde(default)]
    pub network: NetworkFile,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskFile {
    pub serial: Option<String>,
    pub wwn: Option<String>,
    /// A glob (`*`, `?`) over the model name.
    pub model: Option<String>,
    /// Sizes like `100G`, `1T`, `512M`.
    pub size_min: Option<String>,
    pub size_max: Option<String>,
    /// `nvme`, `ssd` or `hdd`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Among several matches: `smallest` or `largest`.
    pub prefer: Option<String>,
    /// `never` (default): refuse a disk with partitions; `always`: erase it.
    pub wipe: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    /// `dhcp` (default) or `static`.
    pub mode: Option<String>,
    /// The management interface: a MAC address or a name glob; default the first with link.
    pub interface: Option<String>,
    /// `address/prefix` for static.
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub dns: Option<Vec<String>>,
}

/// A layer and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct Layer {
    pub source: String,
    pub file: InstallFile,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("install config from {from}: {reason}")]
    Parse { from: String, reason: String },
    #[error("install config: {key} = {value:?} (from {from}): {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        from: String,
        reason: String,
    },
    #[error("install config: {0}")]
    Missing(String),
}

/// Reads one source's TOML.
pub fn parse(source: &str, text: &str) -> Result<Layer, ConfigError> {
    let file: InstallFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
        from: source.into(),
        reason: e.to_string().trim().to_string(),
    })?;
    if let Some(s) = file.schema {
        if s != 1 {
            return Err(ConfigError::Parse {
                from: source.into(),
                reason: format!("schema {s} is not known to this installer (it reads schema 1)"),
            });
        }
    }
    Ok(Layer {
        source: source.into(),
        file,
    })
}

/// The `strata.install.*` kernel arguments as a layer (`strata.install.disk.serial=X`).
/// Unknown keys are errors: a typo must not install on the wrong disk.
pub fn from_cmdline(cmdline: &str) -> Result<Layer, ConfigError> {
    let mut f = InstallFile::default();
    for arg in cmdline.split_whitespace() {
        let Some(rest) = arg.strip_prefix("strata.install.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        let v = Some(value.to_string());
        match key {
            "mode" => f.mode = v,
            "cluster_name" => f.cluster_name = v,
            "join" => f.join = v,
            "token" => f.token = v,
            "hostname" => f.hostname = v,
            "admin_password" => {
                return Err(ConfigError::Parse {
                    from: "the kernel command line".into(),
                    reason: "admin_password may not be given there (anyone on the node can read /proc/cmdline)".into(),
                })
            }
            "after" => f.after = v,
            "pxe" => {
                f.pxe = Some(match value {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => {
                        return Err(ConfigError::Parse {
                            from: "the kernel command line".into(),
                            reason: format!("strata.install.pxe={value:?}: expected true or false"),
                        })
                    }
                })
            }
            "disk.serial" => f.disk.serial = v,
            "disk.wwn" => f.disk.wwn = v,
            "disk.model" => f.disk.model = v,
            "disk.size_min" => f.disk.size_min = v,
            "disk.size_max" => f.disk.size_max = v,
            "disk.type" => f.disk.kind = v,
            "disk.prefer" => f.disk.prefer = v,
            "disk.wipe" => f.disk.wipe = v,
            "network.mode" => f.network.mode = v,
            "network.interface" => f.network.interface = v,
            "network.address" => f.network.address = v,
            "network.gateway" => f.network.gateway = v,
            "network.dns" => {
                f.network.dns = Some(value.split(',').map(String::from).collect());
            }
            other => {
                return Err(ConfigError::Parse {
                    from: "the kernel command line".into(),
                    reason: format!("unknown key strata.install.{other}"),
                })
            }
        }
    }
    Ok(Layer {
        source: "the kernel command line".into(),
        file: f,
    })
}

/// What to do with a disk that already has partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wipe {
    Never,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    Nvme,
    Ssd,
    Hdd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    Smallest,
    Largest,
}

/// How the target disk is chosen: never by `sdX` name, which changes between boots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskSelector {
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub model: Option<String>,
    pub size_min: Option<u64>,
    pub size_max: Option<u64>,
    pub kind: Option<DiskKind>,
    pub prefer: Option<Prefer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Create {
        cluster_name: String,
        admin_password: Option<String>,
    },
    /// Join with a token, or without one (a join code an administrator accepts); at
    /// `addr`, or the cluster found on the local network (named `cluster_name`, if set).
    Join {
        addr: Option<String>,
        token: Option<String>,
        cluster_name: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    Dhcp {
        interface: Option<String>,
    },
    Static {
        interface: Option<String>,
        address: ipnet::IpNet,
        gateway: Option<std::net::IpAddr>,
        dns: Vec<std::net::IpAddr>,
    },
}

/// The validated configuration of an install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallConfig {
    pub mode: Mode,
    pub hostname: Option<String>,
    pub disk: DiskSelector,
    pub wipe: Wipe,
    pub network: Network,
    pub poweroff: bool,
    /// Serve network installs from this node once it runs.
    pub pxe: bool,
}

/// Parses `100G`, `1T`, `512M`, `4096` (bytes); powers of 1024.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        (i, 'T' | 't') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Merges layers (later wins, key by key) and validates the result.
pub fn merge(layers: &[Layer]) -> Result<InstallConfig, ConfigError> {
    // The value of a key and the source that set it last.
    fn pick<'a, T: Clone + 'a>(
        layers: &'a [Layer],
        get: impl Fn(&'a InstallFile) -> &'a Option<T>,
    ) -> Option<(T, &'a str)> {
        layers
            .iter()
            .rev()
            .find_map(|l| get(&l.file).clone().map(|v| (v, l.source.as_str())))
    }
    let invalid =
        |key: &'static str, value: &str, source: &str, reason: &str| ConfigError::Invalid {
            key,
            value: value.to_string(),
            from: source.to_string(),
            reason: reason.to_string(),
        };
    let mode = match pick(layers, |f| &f.mode) {
        None => {
            return Err(ConfigError::Missing(
                "no mode: set mode = \"create\" (a new cluster) or \"join\"".into(),
            ))
        }
        Some((m, src)) => match m.as_str() {
            "create" => Mode::Create {
                cluster_name: pick(layers, |f| &f.cluster_name)
                    .map(|(n, _)| n)
                    .unwrap_or_else(|| "strata".into()),
                admin_password: match pick(layers, |f| &f.admin_password) {
                    Some((p, psrc)) if p.chars().count() < 8 => {
                        return Err(invalid(
                            "admin_password",
                            "(hidden)",
                            psrc,
                            "shorter than 8 characters",
                        ))
                    }
                    other => other.map(|(p, _)| p),
                },
            },
            "join" => {
                let token = pick(layers, |f| &f.token);
                if let Some((token, tsrc)) = &token {
                    JoinToken::parse(token)
                        .map_err(|e| invalid("token", "(hidden)", tsrc, &e.to_string()))?;
                }
                let addr = pick(layers, |f| &f.join);
                if let Some((a, asrc)) = &addr {
                    a.parse::<std::net::SocketAddr>().map_err(|_| {
                        invalid(
                            "join",
                            a,
                            asrc,
                            "expected a node's IP:port, e.g. 10.0.0.1:7440",
                        )
                    })?;
                }
                Mode::Join {
                    addr: addr.map(|(a, _)| a),
                    token: token.map(|(t, _)| t),
                    cluster_name: pick(layers, |f| &f.cluster_name).map(|(n, _)| n),
                }
            }
            _ => return Err(invalid("mode", &m, src, "must be \"create\" or \"join\"")),
        },
    };
    let size = |key: &'static str, v: Option<(String, &str)>| -> Result<Option<u64>, ConfigError> {
        match v {
            None => Ok(None),
            Some((s, src)) => parse_size(&s)
                .map(Some)
                .ok_or_else(|| invalid(key, &s, src, "not a size like 100G or 1T")),
        }
    };
    let disk = DiskSelector {
        serial: pick(layers, |f| &f.disk.serial).map(|x| x.0),
        wwn: pick(layers, |f| &f.disk.wwn).map(|x| x.0),
        model: pick(layers, |f| &f.disk.model).map(|x| x.0),
        size_min: size("disk.size_min", pick(layers, |f| &f.disk.size_min))?,
        size_max: size("disk.size_max", pick(layers, |f| &f.disk.size_max))?,
        kind: match pick(layers, |f| &f.disk.kind) {
            None => None,
            Some((k, src)) => Some(match k.as_str() {
                "nvme" => DiskKind::Nvme,
                "ssd" => DiskKind::Ssd,
                "hdd" => DiskKind::Hdd,
                _ => return Err(invalid("disk.type", &k, src, "must be nvme, ssd or hdd")),
            }),
        },
        prefer: match pick(layers, |f| &f.disk.prefer) {
            None => None,
            Some((p, src)) => Some(match p.as_str() {
                "smallest" => Prefer::Smallest,
                "largest" => Prefer::Largest,
                _ => {
                    return Err(invalid(
                        "disk.prefer",
                        &p,
                        src,
                        "must be smallest or largest",
                    ))
                }
            }),
        },
    };
    let wipe = match pick(layers, |f| &f.disk.wipe) {
        None => Wipe::Never,
        Some((w, src)) => match w.as_str() {
            "never" => Wipe::Never,
            "always" => Wipe::Always,
            _ => return Err(invalid("disk.wipe", &w, src, "must be never or always")),
        },
    };
    let interface = pick(layers, |f| &f.network.interface).map(|x| x.0);
    let network = match pick(layers, |f| &f.network.mode) {
        None => Network::Dhcp { interface },
        Some((m, src)) => match m.as_str() {
            "dhcp" => Network::Dhcp { interface },
            "static" => {
                let (a, asrc) = pick(layers, |f| &f.network.address).ok_or_else(|| {
                    ConfigError::Missing("network mode is static but no address is given".into())
                })?;
                let address = a
                    .parse()
                    .map_err(|_| invalid("network.address", &a, asrc, "not address/prefix"))?;
                let gateway =
                    match pick(layers, |f| &f.network.gateway) {
                        None => None,
                        Some((g, gsrc)) => Some(g.parse().map_err(|_| {
                            invalid("network.gateway", &g, gsrc, "not an IP address")
                        })?),
                    };
                let mut dns = vec![];
                if let Some((list, dsrc)) = pick(layers, |f| &f.network.dns) {
                    for d in list {
                        dns.push(
                            d.parse().map_err(|_| {
                                invalid("network.dns", &d, dsrc, "not an IP address")
                            })?,
                        );
                    }
                }
                Network::Static {
                    interface,
                    address,
                    gateway,
                    dns,
                }
            }
            _ => return Err(invalid("network.mode", &m, src, "must be dhcp or static")),
        },
    };
    let poweroff = match pick(layers, |f| &f.after) {
        None => false,
        Some((a, src)) => match a.as_str() {
            "reboot" => false,
            "poweroff" => true,
            _ => return Err(invalid("after", &a, src, "must be reboot or poweroff")),
        },
    };
    Ok(InstallConfig {
        mode,
        hostname: pick(layers, |f| &f.hostname).map(|x| x.0),
        disk,
        wipe,
        network,
        poweroff,
        pxe: pick(layers, |f| &f.pxe).is_some_and(|x| x.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> String {
        format!(
            "SJ1.{}.{}.{}",
            "ab".repeat(32),
            "0123456789ab",
            "cd".repeat(16)
        )
    }

    #[test]
    fn later_layers_win_key_by_key() {
        let embedded = parse(
            "the image",
            &format!("schema = 1\nmode = \"join\"\ntoken = \"{}\"\nhostname = \"a\"\n[disk]\nsize_min = \"100G\"\n", token()),
        )
        .unwrap();
        let stick = parse(
            "STRATACFG:install.toml",
            "hostname = \"b\"\n[disk]\nserial = \"S123\"\n",
        )
        .unwrap();
        let cmdline = from_cmdline("quiet strata.install.disk.wipe=always console=ttyS0").unwrap();
        let c = merge(&[embedded, stick, cmdline]).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("b"));
        assert_eq!(c.disk.serial.as_deref(), Some("S123"));
        assert_eq!(c.disk.size_min, Some(100 << 30));
        assert_eq!(c.wipe, Wipe::Always);
        assert!(matches!(c.mode, Mode::Join { .. }));
        assert_eq!(c.network, Network::Dhcp { interface: None });
    }

    #[test]
    fn bad_values_name_their_source_and_hide_the_token() {
        let l = parse(
            "STRATACFG:install.toml",
            "mode = \"join\"\ntoken = \"SJ1.nope\"\n",
        )
        .unwrap();
        let e = merge(&[l]).unwrap_err().to_string();
        assert!(
            e.contains("token") && e.contains("STRATACFG:install.toml"),
            "{e}"
        );
        assert!(e.contains("malformed join token"), "{e}");
        assert!(!e.contains("SJ1.nope"), "the token leaked: {e}");
        let l = parse("the image", "mode = \"create\"\n[disk]\nwipe = \"maybe\"\n").unwrap();
        let e = merge(&[l]).unwrap_err().to_string();
        assert!(e.contains("disk.wipe") && e.contains("\"maybe\""), "{e}");
        let e = parse("the image", "mode = \"create\"\n[disk]\nsize = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("the image") && e.contains("size"), "{e}");
        let e = from_cmdline("strata.install.disk.serail=X")
            .unwrap_err()
            .to_string();
        assert!(e.contains("disk.serail"), "{e}");
        assert!(matches!(merge(&[]), Err(ConfigError::Missing(_))));
        let e = parse("x", "schema = 2\n").unwrap_err().to_string();
        assert!(e.contains("schema 2"), "{e}");
    }

    #[test]
    fn static_network_and_sizes() {
        let l = from_cmdline(
            "strata.install.mode=create strata.install.network.mode=static \
             strata.install.network.address=10.0.0.5/24 strata.install.network.gateway=10.0.0.1 \
             strata.install.network.dns=10.0.0.2,10.0.0.3 strata.install.after=poweroff",
        )
        .unwrap();
        let c = merge(&[l]).unwrap();
        assert!(c.poweroff);
        match c.network {
            Network::Static {
                address,
                gateway,
                dns,
                ..
            } => {
                assert_eq!(address.to_string(), "10.0.0.5/24");
                assert_eq!(gateway.unwrap().to_string(), "10.0.0.1");
                assert_eq!(dns.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }
}
