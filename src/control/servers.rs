//! Servers booted from images (the Nova model over Strata's VMs): the boot disk is a
//! copy-on-write clone of the image's snapshot, sized by the flavor, deleted with the
//! server; the kernel and initramfs are the images named by the image's `kernel_id` and
//! `ramdisk_id` properties (the VM's node fetches and checks them), its command line the
//! `os_command_line` property.

use std::collections::BTreeMap;

use super::caller::Caller;
use super::images::MAX_IMAGE_BYTES;
use super::vms::{CreateVm, VmView};
use super::volumes::CreateVolume;
use super::{Control, ControlError};
use crate::cluster::store::compute_tables::BootSpec;
use crate::ids::VolumeId;

/// What a caller asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateServer {
    pub name: String,
    pub flavor: String,
    /// Boot from this image (a clone of it becomes the disk) ...
    pub image: Option<String>,
    /// ... or from this volume (kept when the server goes, unless `delete_volume`).
    pub volume: Option<String>,
    pub delete_volume: bool,
    pub networks: Vec<String>,
    pub security_groups: Option<Vec<String>>,
    pub key: Option<(String, String)>,
    pub user_data: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub project: String,
    pub user: String,
    pub anti_affinity_group: Option<String>,
    pub affinity_group: Option<String>,
    /// Nova's `config_drive`.
    pub config_drive: bool,
}

/// Kernel command line when the image does not give one.
const DEFAULT_CMDLINE: &str = "console=ttyS0";

impl Control {
    /// The boot spec of an image the caller sees: its kernel and initramfs images and
    /// command line. `kernel_id` and `ramdisk_id` resolve within what the image's owner
    /// sees (a public image's kernel may be private to the owner; another project's
    /// private image is never reachable through an image property).
    fn image_boot(&self, caller: &Caller, image: &str) -> Result<BootSpec, ControlError> {
        let img = self.image(caller, image)?;
        let owner = Caller::member_of(&img.owner);
        if let Some(f @ ("aki" | "ari")) = img.disk_format.as_deref() {
            return Err(ControlError::Invalid(format!(
                "image {} ({}) is a {} (disk format {f}), not a disk: boot a disk image \
                 whose kernel_id and ramdisk_id name it",
                img.name,
                img.id,
                if f == "aki" { "kernel" } else { "ramdisk" }
            )));
        }
        let Some(kernel) = img.properties.get("kernel_id") else {
            // The image's own bootloader, through firmware.
            let firmware = match img.properties.get("hw_firmware_type").map(String::as_str) {
                None | Some("bios") => "bios",
                Some("uefi") => "uefi",
                Some(other) => {
                    return Err(ControlError::Invalid(format!(
                        "image {} ({}): hw_firmware_type {other:?} is neither bios nor uefi",
                        img.name, img.id
                    )))
                }
            };
            return Ok(BootSpec {
                firmware: Some(firmware.into()),
                ..Default::default()
            });
        };
        let kernel_image = Some(self.image_file(&owner, kernel).map_err(|e| {
            ControlError::Invalid(format!("the kernel of image {}: {e}", img.name))
        })?);
        let initrd_image = match img.properties.get("ramdisk_id") {
            Some(r) => Some(self.image_file(&owner, r).map_err(|e| {
                ControlError::Invalid(format!("the ramdisk of image {}: {e}", img.name))
            })?),
            None => None,
        };
        let cmdline = img
            .properties
            .get("os_command_line")
            .cloned()
            .unwrap_or_else(|| DEFAULT_CMDLINE.into());
        Ok(BootSpec {
            kernel: String::new(),
            initrd: None,
            cmdline,
            disk: None,
            kernel_image,
            initrd_image,
            firmware: None,
        })
    }

    /// Creates a server: its boot disk (for an image), then the VM; the disk is removed
    /// again if the VM cannot be created.
    pub async fn create_server(
        &self,
        caller: &Caller,
        req: CreateServer,
    ) -> Result<VmView, ControlError> {
        caller.need_writer()?;
        caller.owner_for(Some(&req.project))?;
        let flavor = self.flavor(&req.flavor)?;
        // Checked here too, before a boot disk is made (and again, race-free, at placement).
        self.check_quota(
            Some(&req.project),
            &[
                ("instances", 1),
                ("cores", flavor.vcpus as i64),
                ("ram", flavor.ram_mb as i64),
            ],
        )?;
        let (boot, volume, made) = match (&req.image, &req.volume) {
            (Some(image), None) => {
                let boot = self.image_boot(caller, image)?;
                let file = self.image_file(caller, image)?;
                let img = self.image(caller, image)?;
                if img.min_ram > flavor.ram_mb {
                    return Err(ControlError::Invalid(format!(
                        "Flavor's memory is too small for requested image ({} MiB < {} MiB).",
                        flavor.ram_mb, img.min_ram
                    )));
                }
                let image_bytes = file.size.min(MAX_IMAGE_BYTES).next_multiple_of(1 << 20);
                let want = flavor
                    .disk_gb
                    .saturating_mul(1 << 30)
                    .max(img.min_disk.saturating_mul(1 << 30));
                if want > 0 && want < image_bytes {
                    return Err(ControlError::Invalid(format!(
                        "Flavor's disk is too small for requested image ({} GiB < {image_bytes} bytes).",
                        flavor.disk_gb
                    )));
                }
                let vol = self
                    .create_volume(
                        caller,
                        CreateVolume {
                            name: format!("boot-{}", VolumeId::random()),
                            size_bytes: want.max(image_bytes),
                            replicas: None,
                            source_snapshot: Some(file.snapshot.clone()),
                            project: Some(req.project.clone()),
                            image: None,
                            source_image: req.image.clone(),
                            ..Default::default()
                        },
                    )
                    .await?;
                (boot, vol.record.id.0, true)
            }
            (None, Some(v)) => {
                let vol = self.find_volume(caller, v)?.value;
                if vol.project.as_deref() != Some(req.project.as_str()) {
                    return Err(ControlError::NotFound(format!(
                        "no volume {v:?} in project {}",
                        req.project
                    )));
                }
                // A volume made from an image boots that image's kernel (found as
                // the volume's project sees it).
                let boot = match vol.source_image.as_deref() {
                    Some(img) => self.image_boot(&Caller::member_of(&req.project), img)?,
                    None => {
                        return Err(ControlError::Invalid(format!(
                        "volume {} was not made from an image: nothing says which kernel boots it",
                        vol.name
                    )))
                    }
                };
                (boot, vol.id.0, false)
            }
            (Some(_), Some(_)) => {
                return Err(ControlError::Invalid(
                    "give an image or a boot volume, not both".into(),
                ))
            }
            (None, None) => {
                return Err(ControlError::Invalid(
                    "a server needs an image or a boot volume".into(),
                ))
            }
        };
        let made_vm = self
            .create_vm(
                caller,
                CreateVm {
                    name: req.name.clone(),
                    flavor: flavor.name.clone(),
                    vcpus: None,
                    ram_mb: None,
                    boot,
                    anti_affinity_group: req.anti_affinity_group.clone(),
                    weigher: None,
                    hypervisor: None,
                    stopped: false,
                    volume: Some(volume.clone()),
                    networks: req.networks.clone(),
                    user_data: req.user_data.clone(),
                    public_keys: req.key.clone().into_iter().collect(),
                    project: Some(req.project.clone()),
                    user: Some(req.user.clone()),
                    image: req.image.clone(),
                    key_name: req.key.as_ref().map(|k| k.0.clone()),
                    metadata: req.metadata.clone(),
                    delete_volume: made || req.delete_volume,
                    security_groups: req.security_groups.clone(),
                    affinity_group: req.affinity_group.clone(),
                    config_drive: req.config_drive,
                },
            )
            .await;
        if made_vm.is_err() && made {
            if let Err(e) = self.delete_volume(&Caller::system(), &volume).await {
                tracing::warn!(volume = %volume, error = %crate::telemetry::error_chain(&e), "cannot remove the boot disk of a server that was not created");
            }
        }
        made_vm
    }
}

impl Control {
    /// Replaces a VM's (Nova) metadata with what `edit` makes of it.
    pub async fn edit_vm_metadata(
        &self,
        id: &str,
        edit: impl Fn(&mut BTreeMap<String, String>) -> Result<(), ControlError>,
    ) -> Result<BTreeMap<String, String>, ControlError> {
        use crate::cluster::store::compute_tables::Vms;
        use crate::cluster::store::{StoreError, TxnBuilder};
        loop {
            let cur = self.store.get::<Vms>(id)?.ok_or_else(|| {
                ControlError::NotFound(format!("Instance {id} could not be found."))
            })?;
            let mut rec = cur.value.clone();
            edit(&mut rec.metadata)?;
            if rec.metadata.len() > 128
                || rec
                    .metadata
                    .iter()
                    .any(|(k, v)| k.is_empty() || k.len() > 255 || v.len() > 255)
            {
                return Err(ControlError::Invalid(
                    "metadata: at most 128 items, keys of 1-255 and values of 0-255 characters"
                        .into(),
                ));
            }
            let txn = TxnBuilder::new()
                .require_revision::<Vms>(id.to_string(), cur.revision)
                .put::<Vms>(id.to_string(), &rec);
            match self.store.commit(txn).await {
                Ok(_) => return Ok(rec.metadata),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Control {
    /// Renames a VM.
    pub async fn rename_vm(&self, id: &str, name: &str) -> Result<(), ControlError> {
        use crate::cluster::store::compute_tables::Vms;
        use crate::cluster::store::TxnBuilder;
        let name = name.trim();
        if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
            return Err(ControlError::Invalid(format!(
                "VM name {name:?} must be 1 to 255 printable characters"
            )));
        }
        let cur = self
            .store
            .get::<Vms>(id)?
            .ok_or_else(|| ControlError::NotFound(format!("Instance {id} could not be found.")))?;
        let mut rec = cur.value.clone();
        rec.name = name.to_string();
        let txn = TxnBuilder::new()
            .require_revision::<Vms>(id.to_string(), cur.revision)
            .put::<Vms>(id.to_string(), &rec);
        self.store.commit(txn).await?;
        Ok(())
    }
}

/// Most data volumes one VM takes (vdb .. vdq).
pub const MAX_DATA_VOLUMES: usize = 16;

impl Control {
    /// Attaches a volume to a VM as its next disk: recorded in both records at once; the
    /// VM's node attaches the volume there and plugs it in.
    pub async fn attach_vm_volume(
        &self,
        caller: &Caller,
        vm: &str,
        volume: &str,
    ) -> Result<(crate::cluster::store::compute_tables::VmRecord, usize), ControlError> {
        caller.need_writer()?;
        use crate::cluster::store::compute_tables::Vms;
        use crate::cluster::store::storage_tables::Volumes;
        use crate::cluster::store::{StoreError, TxnBuilder};
        loop {
            let v = self
                .store
                .get::<Vms>(vm)?
                .filter(|v| caller.sees_project(v.value.project.as_deref()))
                .ok_or_else(|| {
                    ControlError::NotFound(format!("Instance {vm} could not be found."))
                })?;
            let vol = self.find_volume(caller, volume)?;
            if vol.value.project != v.value.project {
                return Err(ControlError::NotFound(format!(
                    "no volume {volume:?} in the instance's project"
                )));
            }
            let mut vr = vol.value.clone();
            if vr.image.is_some() {
                return Err(ControlError::Invalid(format!(
                    "volume {} holds an image's data",
                    vr.id
                )));
            }
            if let Some(user) = &vr.used_by {
                return Err(ControlError::Conflict(format!(
                    "Invalid volume: volume {} is in use by {user}",
                    vr.id
                )));
            }
            if let Some(n) = vr.attached_to {
                return Err(ControlError::Conflict(format!(
                    "Invalid volume: volume {} is attached on node {n}; detach it first",
                    vr.id
                )));
            }
            // Strata's own VMM takes data volumes at start but cannot hot-plug them yet:
            // refuse for a running VM rather than record a disk its guest would not see.
            self.refuse_hot_change(vm, "plug disks into")?;
            let mut rec = v.value.clone();
            if rec.data_volumes.len() >= MAX_DATA_VOLUMES {
                return Err(ControlError::Invalid(format!(
                    "a VM takes at most {MAX_DATA_VOLUMES} data volumes"
                )));
            }
            rec.data_volumes.push(vr.id.clone());
            vr.used_by = Some(rec.id.clone());
            let txn = TxnBuilder::new()
                .require_revision::<Vms>(vm.to_string(), v.revision)
                .put::<Vms>(vm.to_string(), &rec)
                .require_revision::<Volumes>(vr.id.to_string(), vol.revision)
                .put::<Volumes>(vr.id.to_string(), &vr);
            match self
                .store
                .commit(self.with_event(
                    txn,
                    "vm.volume_attached",
                    format!("volume {} attached to VM {} ({})", vr.id, rec.name, rec.id),
                ))
                .await
            {
                Ok(_) => {
                    let n = rec.data_volumes.len();
                    return Ok((rec, n));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Detaches a data volume from a VM. The volume is free at once (a new writer fences
    /// the old one); the VM's node unplugs it and drops its export.
    pub async fn detach_vm_volume(&self, vm: &str, volume: &str) -> Result<(), ControlError> {
        use crate::cluster::store::compute_tables::Vms;
        use crate::cluster::store::storage_tables::Volumes;
        use crate::cluster::store::{StoreError, TxnBuilder};
        loop {
            let v = self.store.get::<Vms>(vm)?.ok_or_else(|| {
                ControlError::NotFound(format!("Instance {vm} could not be found."))
            })?;
            let mut rec = v.value.clone();
            let Some(at) = rec.data_volumes.iter().position(|d| d.0 == volume) else {
                return Err(ControlError::NotFound(format!(
                    "volume {volume} is not attached to instance {vm}"
                )));
            };
            self.refuse_hot_change(vm, "unplug disks from")?;
            let vid = rec.data_volumes.remove(at);
            let mut txn = TxnBuilder::new()
                .require_revision::<Vms>(vm.to_string(), v.revision)
                .put::<Vms>(vm.to_string(), &rec);
            // A VM that is not running lets go of it at once; a running one's node
            // unplugs it and then detaches it.
            let running = self
                .store
                .get::<crate::cluster::store::compute_tables::VmStatuses>(vm)?
                .is_some_and(|s| {
                    use crate::cluster::store::compute_tables::VmState;
                    matches!(
                        s.value.state,
                        VmState::Active | VmState::Paused | VmState::Build
                    )
                });
            if let Some(vol) = self.store.get::<Volumes>(&vid.0)? {
                let mut vr = vol.value.clone();
                vr.used_by = None;
                if !running {
                    vr.attached_to = None;
                }
                txn = txn
                    .require_revision::<Volumes>(vid.to_string(), vol.revision)
                    .put::<Volumes>(vid.to_string(), &vr);
            }
            match self
                .store
                .commit(self.with_event(
                    txn,
                    "vm.volume_detached",
                    format!("volume {vid} detached from VM {} ({})", rec.name, rec.id),
                ))
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Control {
    /// Changes a volume's descriptive fields (Cinder's name, description, metadata).
    pub async fn edit_volume_info(
        &self,
        id: &str,
        name: Option<String>,
        description: Option<String>,
        metadata: Option<BTreeMap<String, String>>,
    ) -> Result<(), ControlError> {
        if let Some(n) = &name {
            if n.len() > 255 || n.chars().any(|c| c.is_control()) {
                return Err(ControlError::Invalid(format!(
                    "volume name {n:?} must be at most 255 printable characters"
                )));
            }
        }
        self.update_volume(id, |rec| {
            if rec.project.is_none() && name.is_some() {
                return Err(ControlError::Invalid(
                    "volumes of the admin CLI keep their names".into(),
                ));
            }
            if let Some(n) = &name {
                rec.name = n.clone();
            }
            if let Some(d) = &description {
                rec.description = d.clone();
            }
            if let Some(m) = &metadata {
                rec.metadata = m.clone();
            }
            Ok(super::volumes::Edit::Quiet)
        })
        .await
        .map(|_| ())
    }
}
