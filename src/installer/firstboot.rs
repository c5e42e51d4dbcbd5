//! The node's first-boot file: what the install decided about the cluster and the network,
//! written to the data partition (`firstboot.toml`, mode 0600: it may hold a join token or
//! the first admin password) and read back by `strata boot` on every start. It is an
//! install config document itself, so the same validation applies when it is read.

use std::path::Path;

use super::config::{self, InstallConfig, Mode, Network};

/// Where the data partition is mounted on an installed node.
pub const DATA_MOUNT: &str = "/var/lib/strata";
/// The first-boot file, relative to the data partition.
pub const FILE: &str = "firstboot.toml";
/// The node's data directory, relative to the data partition.
pub const NODE_DIR: &str = "node";

/// The TOML document for `cfg` (the disk keys are left out: the install is done).
pub fn render(cfg: &InstallConfig) -> String {
    let mut t = toml::Table::new();
    let mut put = |k: &str, v: &str| {
        t.insert(k.into(), toml::Value::String(v.into()));
    };
    put("mode", "create");
    match &cfg.mode {
        Mode::Create {
            cluster_name,
            admin_password,
        } => {
            put("cluster_name", cluster_name);
            if let Some(p) = admin_password {
                put("admin_password", p);
            }
        }
        Mode::Join {
            addr,
            token,
            cluster_name,
        } => {
            put("mode", "join");
            for (k, v) in [
                ("token", token),
                ("join", addr),
                ("cluster_name", cluster_name),
            ] {
                if let Some(v) = v {
                    put(k, v);
                }
            }
        }
    }
    if let Some(h) = &cfg.hostname {
        put("hostname", h);
    }
    if cfg.pxe {
        t.insert("pxe".into(), toml::Value::Boolean(true));
    }
    let mut net = toml::Table::new();
    let mut nput = |k: &str, v: toml::Value| {
        net.insert(k.into(), v);
    };
    let s = |v: &str| toml::Value::String(v.into());
    match &cfg.network {
        Network::Dhcp { interface } => {
            nput("mode", s("dhcp"));
            if let Some(i) = interface {
                nput("interface", s(i));
            }
        }
        Network::Static {
            interface,
            address,
            gateway,
            dns,
        } => {
            nput("mode", s("static"));
            if let Some(i) = interface {
                nput("interface", s(i));
            }
            nput("address", s(&address.to_string()));
            if let Some(g) = gateway {
                nput("gateway", s(&g.to_string()));
            }
            nput(
                "dns",
                toml::Value::Array(dns.iter().map(|d| s(&d.to_string())).collect()),
            );
        }
    }
    t.insert("network".into(), toml::Value::Table(net));
    let mut doc = String::from(
        "# Written by `strata install`; read by `strata boot` at every start.\nschema = 1\n",
    );
    doc += &toml::to_string(&t).unwrap_or_default();
    doc
}

/// Writes the file with mode 0600 (it may hold secrets).
pub fn write(data_root: &Path, cfg: &InstallConfig) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_root.join(FILE);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(render(cfg).as_bytes())?;
    f.sync_all()
}

/// Rewrites the file without the first admin password once the cluster has been created
/// with it: it is not needed again. (A join token stays: it is single-use and expires, so
/// once the node has joined it opens nothing.)
pub fn scrub(data_root: &Path) -> Result<(), String> {
    let mut cfg = read(data_root)?;
    let had = match &mut cfg.mode {
        Mode::Create { admin_password, .. } => admin_password.take().is_some(),
        Mode::Join { .. } => false,
    };
    if !had {
        return Ok(());
    }
    write(data_root, &cfg).map_err(|e| format!("rewriting {FILE}: {e}"))
}

/// Reads and validates the file.
pub fn read(data_root: &Path) -> Result<InstallConfig, String> {
    let path = data_root.join(FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let layer = config::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
    config::merge(&[layer]).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> InstallConfig {
        let cfg = config::merge(&[config::parse("test", text).unwrap()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &cfg).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let back = read(dir.path()).unwrap();
        // The disk keys are not kept; everything the node needs is.
        assert_eq!(back.mode, cfg.mode);
        assert_eq!(back.network, cfg.network);
        assert_eq!(back.hostname, cfg.hostname);
        back
    }

    #[test]
    fn what_the_install_decided_is_read_back_at_boot() {
        roundtrip(
            "mode = \"create\"\ncluster_name = \"lab\"\nadmin_password = \"s3cret-pass\"\nhostname = \"n1\"\n[disk]\nserial = \"X\"\n",
        );
        roundtrip(
            "mode = \"create\"\n[network]\nmode = \"static\"\naddress = \"10.1.2.3/24\"\ngateway = \"10.1.2.1\"\ndns = [\"10.1.2.1\"]\ninterface = \"52:54:*\"\n",
        );
        let tok = format!(
            "SJ1.{}.{}.{}",
            "a".repeat(64),
            "b".repeat(12),
            "c".repeat(32)
        );
        let b = roundtrip(&format!(
            "mode = \"join\"\ntoken = \"{tok}\"\njoin = \"10.0.0.1:7440\"\n"
        ));
        assert!(matches!(b.mode, Mode::Join { addr: Some(_), .. }));
    }

    #[test]
    fn the_admin_password_is_scrubbed_once_used() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config::merge(&[config::parse(
            "t",
            "mode = \"create\"\ncluster_name = \"lab\"\nadmin_password = \"s3cret-pass\"\n",
        )
        .unwrap()])
        .unwrap();
        write(dir.path(), &cfg).unwrap();
        scrub(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains("s3cret-pass"), "{text}");
        let back = read(dir.path()).unwrap();
        assert!(
            matches!(back.mode, Mode::Create { ref cluster_name, admin_password: None } if cluster_name == "lab")
        );
        scrub(dir.path()).unwrap();
    }

    #[test]
    fn a_damaged_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "mode = \"crate\"\n").unwrap();
        let e = read(dir.path()).unwrap_err();
        assert!(e.contains("mode") && e.contains("firstboot.toml"), "{e}");
        let e = read(&dir.path().join("nowhere")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
