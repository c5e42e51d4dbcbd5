//! Config drives: the instance's metadata on a read-only ISO 9660 volume labelled
//! `config-2` (OpenStack's layout), for guests that cannot reach the metadata service.
//! Built by the VM's node at each start, from the same documents the service serves.

use std::path::PathBuf;

use super::vms::VmAgent;
use crate::cluster::store::compute_tables::VmRecord;
use crate::network::metadata::{config_drive_files, InstanceMeta};

impl VmAgent {
    /// Where VM `id`'s config drive is kept on this node.
    pub(super) fn config_drive_path(&self, id: &crate::ids::VmId) -> PathBuf {
        self.nbd_socket
            .with_file_name("config-drives")
            .join(format!("{}.iso", id.0))
    }

    /// Writes the VM's config drive (`<data>/config-drives/<vm id>.iso`, 0600) and
    /// returns its path.
    pub(super) fn config_drive(&self, rec: &VmRecord) -> Result<PathBuf, String> {
        let (meta, with_network) = match rec.ports.first() {
            Some(p) => (
                super::network::port_metadata(&self.control, p)
                    .ok_or_else(|| format!("config drive: no metadata for its port {p}"))?,
                true,
            ),
            None => (
                InstanceMeta {
                    uuid: rec.id.0.clone(),
                    name: rec.name.clone(),
                    hostname: rec.name.to_ascii_lowercase(),
                    project: rec.project.clone().unwrap_or_default(),
                    public_keys: rec.public_keys.clone(),
                    user_data: rec.user_data.clone().map(String::into_bytes),
                    port: String::new(),
                    network: String::new(),
                    mac: String::new(),
                    ip: std::net::Ipv4Addr::UNSPECIFIED,
                    mtu: 0,
                    dns: Vec::new(),
                },
                false,
            ),
        };
        let iso =
            crate::compute::iso9660::build("config-2", &config_drive_files(&meta, with_network))
                .map_err(|e| format!("config drive: {e}"))?;
        let path = self.config_drive_path(&rec.id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(&iso))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}
