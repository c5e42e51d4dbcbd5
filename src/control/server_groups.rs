//! Server groups (Nova): a policy, `affinity` or `anti-affinity`, that placement honours
//! for the VMs created in the group; members are the VMs that name the group.

use super::{now_secs, Control, ControlError};
use crate::cluster::store::compute_tables::{ServerGroupRecord, ServerGroups, Vms};
use crate::cluster::store::TxnBuilder;
use crate::ids::VolumeId;

pub const POLICIES: &[&str] = &["affinity", "anti-affinity"];

impl Control {
    pub async fn create_server_group(
        &self,
        name: &str,
        policy: &str,
        project: &str,
        user: &str,
    ) -> Result<ServerGroupRecord, ControlError> {
        if name.trim().is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
            return Err(ControlError::Invalid(format!(
                "server group name {name:?} must be 1-255 printable characters"
            )));
        }
        if !POLICIES.contains(&policy) {
            return Err(ControlError::Invalid(format!(
                "Invalid input for field/attribute policies: '{policy}' is not one of {POLICIES:?}"
            )));
        }
        self.check_quota(Some(project), &[("server_groups", 1)])?;
        let rec = ServerGroupRecord {
            id: VolumeId::random().0,
            name: name.trim().to_string(),
            policy: policy.to_string(),
            project: project.to_string(),
            user: user.to_string(),
            created_at: now_secs(),
        };
        let txn = TxnBuilder::new()
            .require_revision::<ServerGroups>(rec.id.clone(), 0)
            .put::<ServerGroups>(rec.id.clone(), &rec);
        self.store
            .commit(self.with_event(
                txn,
                "server_group.created",
                format!("server group {} ({}, {policy}) created", rec.name, rec.id),
            ))
            .await?;
        Ok(rec)
    }

    pub fn server_group(&self, id: &str) -> Result<ServerGroupRecord, ControlError> {
        self.store
            .get::<ServerGroups>(id)?
            .map(|v| v.value)
            .ok_or_else(|| {
                ControlError::NotFound(format!("Instance group {id} could not be found."))
            })
    }

    pub fn server_groups(&self) -> Result<Vec<ServerGroupRecord>, ControlError> {
        let mut v: Vec<ServerGroupRecord> = self
            .store
            .list::<ServerGroups>()?
            .into_iter()
            .map(|r| r.value)
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    /// The VMs in a group.
    pub fn server_group_members(&self, id: &str) -> Result<Vec<String>, ControlError> {
        Ok(self
            .store
            .list::<Vms>()?
            .into_iter()
            .filter(|v| {
                v.value.anti_affinity_group.as_deref() == Some(id)
                    || v.value.affinity_group.as_deref() == Some(id)
            })
            .map(|v| v.value.id.0)
            .collect())
    }

    pub async fn delete_server_group(&self, id: &str) -> Result<(), ControlError> {
        let g = self.server_group(id)?;
        let txn = TxnBuilder::new().delete::<ServerGroups>(id.to_string());
        self.store
            .commit(self.with_event(
                txn,
                "server_group.deleted",
                format!("server group {} ({id}) deleted", g.name),
            ))
            .await?;
        Ok(())
    }
}
