//! Tables of the compute service: flavors, VMs (desired state, written by `control`) and
//! VM status (observed state, written only by the agent of the node running the VM).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::tables::Table;
use crate::ids::{NodeId, VmId, VolumeId};

pub struct Flavors;
impl Table for Flavors {
    const NAME: &'static str = "flavors";
    type Value = Flavor;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Flavor {
    pub name: String,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    #[serde(default)]
    pub extra_specs: BTreeMap<String, String>,
}

/// The flavors a new cluster starts with (OpenStack's classic m1 set).
pub fn default_flavors() -> Vec<Flavor> {
    [
        ("m1.tiny", 1, 512, 1),
        ("m1.small", 1, 2048, 20),
        ("m1.medium", 2, 4096, 40),
        ("m1.large", 4, 8192, 80),
        ("m1.xlarge", 8, 16384, 160),
    ]
    .into_iter()
    .map(|(name, vcpus, ram_mb, disk_gb)| Flavor {
        name: name.into(),
        vcpus,
        ram_mb,
        disk_gb,
        extra_specs: BTreeMap::new(),
    })
    .collect()
}

/// A counter bumped by every placement decision, so that two concurrent creates cannot
/// both place on the same free capacity (the loser's transaction fails its revision check
/// and is placed again).
pub struct PlacementEpochs;
impl Table for PlacementEpochs {
    const NAME: &'static str = "placement_epoch";
    type Value = u64;
}

pub struct Vms;
impl Table for Vms {
    const NAME: &'static str = "vms";
    type Value = VmRecord;
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PowerIntent {
    Running,
    Stopped,
    /// Running, with its vCPUs paused.
    Paused,
}

/// How the VM boots: a kernel given directly (files on the nodes, or images with
/// `kernel_id`/`ramdisk_id`), or through firmware from the boot disk's own bootloader.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct BootSpec {
    pub kernel: String,
    #[serde(default)]
    pub initrd: Option<String>,
    #[serde(default)]
    pub cmdline: String,
    /// A raw disk image file attached as the first virtio disk.
    #[serde(default)]
    pub disk: Option<String>,
    /// Kernel and initramfs taken from images (Glance `kernel_id` / `ramdisk_id`): the
    /// VM's node copies them into its image cache and boots those copies.
    #[serde(default)]
    pub kernel_image: Option<ImageFile>,
    #[serde(default)]
    pub initrd_image: Option<ImageFile>,
    /// Boot from the disk through firmware instead of a kernel: `bios` or `uefi`
    /// (Glance's `hw_firmware_type`).
    #[serde(default)]
    pub firmware: Option<String>,
}

/// An image's bytes as a node finds them: a snapshot of a volume, and their digest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ImageFile {
    pub image: String,
    pub volume: VolumeId,
    pub snapshot: String,
    pub size: u64,
    pub sha512: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VmRecord {
    pub id: VmId,
    pub name: String,
    pub flavor: String,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub boot: BootSpec,
    pub power: PowerIntent,
    /// Bumped to ask the hosting node for a reboot.
    #[serde(default)]
    pub reboot_seq: u64,
    #[serde(default)]
    pub anti_affinity_group: Option<String>,
    pub node: NodeId,
    /// Why the scheduler chose `node`, in words (`strata debug placement`).
    pub placement: String,
    pub created_at: u64,
    /// A replicated volume attached as the VM's first virtio disk (instead of `boot.disk`).
    #[serde(default)]
    pub volume: Option<VolumeId>,
    /// The last stop was a forced one: power off at once, without asking the guest.
    #[serde(default)]
    pub stop_now: bool,
    /// Its NICs: ports on tenant networks, bound to its node.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Served to the guest by the metadata service (cloud-init runs it).
    #[serde(default)]
    pub user_data: Option<String>,
    /// (name, OpenSSH public key) pairs, served by the metadata service.
    #[serde(default)]
    pub public_keys: Vec<(String, String)>,
    /// The owning project and the user who made it (None: made by the admin CLI).
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// The image it was booted from.
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub key_name: Option<String>,
    /// Nova server metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Its disk volume was made for it and goes with it.
    #[serde(default)]
    pub delete_volume: bool,
    /// Volumes attached as further virtio disks (vdb, vdc, ... in this order), hot-plugged
    /// into a running VM where the driver can.
    #[serde(default)]
    pub data_volumes: Vec<VolumeId>,
    /// Kept on the node of the other VMs of this group (Nova's affinity policy).
    #[serde(default)]
    pub affinity_group: Option<String>,
    /// Given a config drive (Nova's `config_drive`): a read-only ISO 9660 volume labelled
    /// `config-2` with the instance's metadata, for guests that cannot reach the service.
    #[serde(default)]
    pub config_drive: bool,
    /// Ports among `ports` that existed before they were attached (Nova's interface
    /// attach with a port id): unbound, not deleted, when detached or when the VM goes.
    #[serde(default)]
    pub kept_ports: Vec<String>,
}

pub struct VmStatuses;
impl Table for VmStatuses {
    const NAME: &'static str = "vm_status";
    type Value = VmStatus;
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum VmState {
    Build,
    Active,
    Paused,
    Shutoff,
    Error,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VmStatus {
    pub id: VmId,
    pub state: VmState,
    /// Why the VM is in this state (the error, or "guest powered off").
    #[serde(default)]
    pub reason: String,
    pub node: NodeId,
    /// The hypervisor driver that runs it: `kvm` or `tcg`.
    pub driver: String,
    /// The last reboot request the node has carried out.
    #[serde(default)]
    pub reboot_seq: u64,
    #[serde(default)]
    pub boots: u64,
    pub updated_at: u64,
}

/// SSH public keys users register for their VMs; key `<user id>/<name>`.
pub struct Keypairs;
impl Table for Keypairs {
    const NAME: &'static str = "keypairs";
    type Value = KeypairRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KeypairRecord {
    pub name: String,
    pub user: String,
    pub public_key: String,
    /// `SHA256:<base64>` of the key blob.
    pub fingerprint: String,
    pub created_at: u64,
}

/// Nova server groups: VMs placed together (affinity) or apart (anti-affinity).
pub struct ServerGroups;
impl Table for ServerGroups {
    const NAME: &'static str = "server_groups";
    type Value = ServerGroupRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ServerGroupRecord {
    pub id: String,
    pub name: String,
    /// `affinity` or `anti-affinity`.
    pub policy: String,
    pub project: String,
    pub user: String,
    pub created_at: u64,
}
