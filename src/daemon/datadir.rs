//! The node's data directory: identity files, the Raft store and the bootstrap marker.
//!
//! ```text
//! node.toml          node id, cluster id and name, peers to announce to at start
//! pki/ca.crt         the cluster CA certificate
//! pki/node.crt, .key this node's certificate and key (0600)
//! pki/ca.key         the CA key, only on the founding node until it is in the store
//! raft/log/          RocksDB: Raft log and vote
//! raft/snapshots/    state-machine snapshots
//! bootstrap          present until the founding node has initialised Raft
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ids::{ClusterId, NodeId};
use crate::transport::pki::{CertifiedKey, ClusterCa};

pub const NODE_FILE_FORMAT: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path} is not initialised: run `strata init` to create a cluster or `strata join` to join one")]
    NotInitialised { path: PathBuf },
    #[error("{path} already holds a node (id {node}); refusing to overwrite it")]
    AlreadyInitialised { path: PathBuf, node: NodeId },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct NodeFile {
    pub format: u16,
    pub node_id: NodeId,
    pub cluster_id: ClusterId,
    pub cluster_name: String,
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PeerEntry {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// Everything a node needs to start, loaded and checked.
pub struct Identity {
    pub node: NodeFile,
    pub ca_cert_pem: String,
    pub tls: CertifiedKey,
    /// Present on the founding node until the CA key has been written to the store.
    pub ca_key_pem: Option<String>,
    pub bootstrap: bool,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> Self {
        DataDir {
            root: root.to_path_buf(),
        }
    }

    pub fn node_file(&self) -> PathBuf {
        self.root.join("node.toml")
    }
    fn pki(&self, name: &str) -> PathBuf {
        self.root.join("pki").join(name)
    }
    pub fn raft_dir(&self) -> PathBuf {
        self.root.join("raft")
    }
    /// Where the VMs of this node keep their runtime files (console, sockets, pid).
    pub fn vms_dir(&self) -> PathBuf {
        self.root.join("vms")
    }
    /// The NBD socket exporting the volumes attached to this node.
    pub fn nbd_socket(&self) -> PathBuf {
        self.root.join("nbd.sock")
    }
    /// The bootstrap admin's password (written once when the cluster is created, 0600).
    pub fn admin_password(&self) -> PathBuf {
        self.root.join("admin-password")
    }
    /// This node's volume regions (`regions/<volume id>/`).
    pub fn regions_dir(&self) -> PathBuf {
        self.root.join("regions")
    }
    fn bootstrap_marker(&self) -> PathBuf {
        self.root.join("bootstrap")
    }

    /// Makes the data directory private (0700): it holds the replicated state with the
    /// cluster's secrets (CA key, token key, password hashes), keys and VM disks.
    pub fn make_private(&self) -> Result<(), DataDirError> {
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| DataDirError::Write {
                path: self.root.clone(),
                source,
            },
        )
    }

    /// Writes the bootstrap admin's password, created 0600 (never readable by others,
    /// not even for a moment).
    pub fn write_admin_password(&self, password: &str) -> Result<(), DataDirError> {
        write_file(
            &self.admin_password(),
            format!("{password}\n").as_bytes(),
            0o600,
        )
    }

    pub fn is_initialised(&self) -> bool {
        self.node_file().exists()
    }

    pub fn refuse_if_initialised(&self) -> Result<(), DataDirError> {
        if self.is_initialised() {
            let node = self.load_node_file().map(|n| n.node_id).unwrap_or_default();
            return Err(DataDirError::AlreadyInitialised {
                path: self.root.clone(),
                node,
            });
        }
        Ok(())
    }

    /// Creates a new cluster's founding node: CA, node certificate, bootstrap marker.
    pub fn init(&self, cluster_name: &str) -> Result<NodeFile, DataDirError> {
        self.refuse_if_initialised()?;
        let node_id = NodeId::random();
        let ca = ClusterCa::generate(cluster_name).map_err(|e| DataDirError::Corrupt {
            path: self.pki("ca.crt"),
            reason: e.to_string(),
        })?;
        let tls = ca.issue_node(node_id).map_err(|e| DataDirError::Corrupt {
            path: self.pki("node.crt"),
            reason: e.to_string(),
        })?;
        let node = NodeFile {
            format: NODE_FILE_FORMAT,
            node_id,
            cluster_id: ClusterId::random(),
            cluster_name: cluster_name.to_string(),
            peers: vec![],
        };
        self.write_identity(&node, &ca.0.cert_pem, &tls)?;
        write_file(&self.pki("ca.key"), ca.0.key_pem.as_bytes(), 0o600)?;
        write_file(&self.bootstrap_marker(), b"", 0o600)?;
        Ok(node)
    }

    /// Writes the identity a joining node received.
    pub fn write_joined(
        &self,
        node: &NodeFile,
        ca_cert_pem: &str,
        tls: &CertifiedKey,
    ) -> Result<(), DataDirError> {
        self.refuse_if_initialised()?;
        self.write_identity(node, ca_cert_pem, tls)
    }

    fn write_identity(
        &self,
        node: &NodeFile,
        ca_cert_pem: &str,
        tls: &CertifiedKey,
    ) -> Result<(), DataDirError> {
        write_file(&self.pki("ca.crt"), ca_cert_pem.as_bytes(), 0o644)?;
        write_file(&self.pki("node.crt"), tls.cert_pem.as_bytes(), 0o644)?;
        write_file(&self.pki("node.key"), tls.key_pem.as_bytes(), 0o600)?;
        // node.toml last: its presence means "initialised".
        let text = toml::to_string(node).map_err(|e| DataDirError::Corrupt {
            path: self.node_file(),
            reason: e.to_string(),
        })?;
        write_file(&self.node_file(), text.as_bytes(), 0o644)
    }

    pub fn load_node_file(&self) -> Result<NodeFile, DataDirError> {
        let path = self.node_file();
        if !path.exists() {
            return Err(DataDirError::NotInitialised {
                path: self.root.clone(),
            });
        }
        let text = read_text(&path)?;
        let node: NodeFile = toml::from_str(&text).map_err(|e| DataDirError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if node.format != NODE_FILE_FORMAT {
            return Err(DataDirError::Corrupt {
                path,
                reason: format!("unknown format {}", node.format),
            });
        }
        Ok(node)
    }

    /// Loads and checks the node's identity; every failure names the file.
    pub fn load(&self) -> Result<Identity, DataDirError> {
        let node = self.load_node_file()?;
        let ca_cert_pem = read_pem(&self.pki("ca.crt"), "CERTIFICATE")?;
        let cert_pem = read_pem(&self.pki("node.crt"), "CERTIFICATE")?;
        let key_pem = read_pem(&self.pki("node.key"), "PRIVATE KEY")?;
        let tls = CertifiedKey { cert_pem, key_pem };
        let cert = tls.cert_der().map_err(|e| DataDirError::Corrupt {
            path: self.pki("node.crt"),
            reason: e.to_string(),
        })?;
        tls.key_der().map_err(|e| DataDirError::Corrupt {
            path: self.pki("node.key"),
            reason: e.to_string(),
        })?;
        match crate::transport::pki::node_id_of(&cert) {
            Some(id) if id == node.node_id => {}
            other => {
                return Err(DataDirError::Corrupt {
                    path: self.pki("node.crt"),
                    reason: format!(
                        "certificate is for node {other:?}, but node.toml says {}",
                        node.node_id
                    ),
                })
            }
        }
        let ca_key_path = self.pki("ca.key");
        let ca_key_pem = if ca_key_path.exists() {
            Some(read_pem(&ca_key_path, "PRIVATE KEY")?)
        } else {
            None
        };
        Ok(Identity {
            node,
            ca_cert_pem,
            tls,
            ca_key_pem,
            bootstrap: self.bootstrap_marker().exists(),
        })
    }

    /// Called once the founding node has written the cluster's settings to the store.
    pub fn finish_bootstrap(&self) -> Result<(), DataDirError> {
        for p in [self.bootstrap_marker(), self.pki("ca.key")] {
            if p.exists() {
                std::fs::remove_file(&p)
                    .map_err(|source| DataDirError::Write { path: p, source })?;
            }
        }
        Ok(())
    }

    /// Records the peers known now, so a restart can find the cluster without gossip.
    pub fn save_peers(&self, peers: Vec<PeerEntry>) -> Result<(), DataDirError> {
        let mut node = self.load_node_file()?;
        node.peers = peers;
        let text = toml::to_string(&node).map_err(|e| DataDirError::Corrupt {
            path: self.node_file(),
            reason: e.to_string(),
        })?;
        write_file(&self.node_file(), text.as_bytes(), 0o644)
    }
}

fn read_text(path: &Path) -> Result<String, DataDirError> {
    let bytes = std::fs::read(path).map_err(|source| DataDirError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| DataDirError::Corrupt {
        path: path.to_path_buf(),
        reason: "not UTF-8 text".into(),
    })
}

fn read_pem(path: &Path, kind: &str) -> Result<String, DataDirError> {
    let text = read_text(path)?;
    if !text.contains(&format!("-----BEGIN {kind}-----")) {
        return Err(DataDirError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("no PEM {kind} block"),
        });
    }
    Ok(text)
}

/// Writes atomically (temp file, fsync, rename) with the given mode.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), DataDirError> {
    let err = |source| DataDirError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load_and_refuse_a_second_init() {
        let d = tempfile::tempdir().unwrap();
        let dd = DataDir::new(d.path());
        let n = dd.init("c").unwrap();
        let id = dd.load().unwrap();
        assert_eq!(id.node.node_id, n.node_id);
        assert!(id.bootstrap && id.ca_key_pem.is_some());
        let e = dd.init("c").unwrap_err().to_string();
        assert!(e.contains("refusing to overwrite"), "{e}");
        dd.finish_bootstrap().unwrap();
        let id = dd.load().unwrap();
        assert!(!id.bootstrap && id.ca_key_pem.is_none());
        let key_mode = std::fs::metadata(d.path().join("pki/node.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
    }

    #[test]
    fn the_directory_and_the_password_file_are_private() {
        let d = tempfile::tempdir().unwrap();
        let dd = DataDir::new(d.path());
        dd.make_private().unwrap();
        dd.write_admin_password("s3cret").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(d.path()), 0o700);
        assert_eq!(mode(&dd.admin_password()), 0o600);
        assert_eq!(
            std::fs::read_to_string(dd.admin_password()).unwrap(),
            "s3cret\n"
        );
    }

    #[test]
    fn corrupt_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        let dd = DataDir::new(d.path());
        assert!(dd
            .load()
            .unwrap_err()
            .to_string()
            .contains("not initialised"));
        dd.init("c").unwrap();
        std::fs::write(d.path().join("pki/node.key"), "garbage").unwrap();
        let e = dd.load().unwrap_err().to_string();
        assert!(e.contains("pki/node.key"), "{e}");
        std::fs::write(d.path().join("node.toml"), "node_id = [").unwrap();
        let e = dd.load().unwrap_err().to_string();
        assert!(e.contains("node.toml") && e.contains("corrupt"), "{e}");
    }
}
