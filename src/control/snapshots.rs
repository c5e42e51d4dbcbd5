//! Volume snapshots: recorded here, carried out on every replica by one node's agent
//! (the volume's writer if it is attached, otherwise the node that took the request),
//! which reports back. Clones are volumes whose `parent` names a snapshot; see
//! `create_volume`'s `source_snapshot`.

use std::time::Duration;

use super::caller::Caller;
use super::volumes::Edit;
use super::{now_secs, Control, ControlError};
use crate::cluster::store::storage_tables::{SnapshotRecord, SnapshotState, VolumeRecord, Volumes};
use crate::ids::{NodeId, VolumeId};

/// How long a snapshot request waits for the agent to take it before answering anyway.
const WAIT: Duration = Duration::from_secs(60);

/// Attach and detach wait for a pending snapshot change: its writer carries it out.
pub(super) fn refuse_while_pending(rec: &VolumeRecord, what: &str) -> Result<(), ControlError> {
    if let Some(s) = rec
        .snapshots
        .iter()
        .find(|s| matches!(s.state, SnapshotState::Creating | SnapshotState::Deleting))
    {
        return Err(ControlError::Invalid(format!(
            "volume {} cannot be {what} while snapshot {} is being {}; try again in a moment",
            rec.name,
            s.name,
            if s.state == SnapshotState::Creating {
                "taken"
            } else {
                "deleted"
            }
        )));
    }
    Ok(())
}

impl Control {
    /// Finds a snapshot by id, or as `VOLUME@SNAPSHOT` (volume id or name, snapshot name
    /// or id).
    pub fn find_snapshot(
        &self,
        caller: &Caller,
        reference: &str,
    ) -> Result<(VolumeRecord, SnapshotRecord), ControlError> {
        let not_found = || ControlError::NotFound(format!("snapshot {reference}"));
        if let Some((vol, snap)) = reference.split_once('@') {
            let rec = self.find_volume(caller, vol)?.value;
            let s = rec
                .snapshots
                .iter()
                .find(|s| s.id == snap || s.name == snap)
                .cloned()
                .ok_or_else(not_found)?;
            return Ok((rec, s));
        }
        self.list_scoped::<Volumes>(caller)?
            .into_iter()
            .find_map(|v| {
                let s = v
                    .value
                    .snapshots
                    .iter()
                    .find(|s| s.id == reference)
                    .cloned();
                s.map(|s| (v.value, s))
            })
            .ok_or_else(not_found)
    }

    /// Takes a snapshot of a volume and waits (up to a minute) until every replica has it.
    pub async fn snapshot_volume(
        &self,
        id_or_name: &str,
        name: &str,
    ) -> Result<SnapshotRecord, ControlError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c == '@') {
            return Err(ControlError::Invalid(format!(
                "snapshot name {name:?} must be 1-64 printable characters without '@'"
            )));
        }
        let id = VolumeId::random().0;
        let me = self.node;
        let rec = self
            .update_volume(id_or_name, |rec| {
                refuse_while_pending(rec, "snapshotted")?;
                if rec.snapshots.iter().any(|s| s.name == name) {
                    return Err(ControlError::Invalid(format!(
                        "volume {} has a snapshot named {name:?} already",
                        rec.name
                    )));
                }
                if let Some(r) = rec
                    .replicas
                    .iter()
                    .find(|r| r.state != crate::cluster::store::storage_tables::ReplicaState::InSync)
                {
                    return Err(ControlError::Invalid(format!(
                        "volume {} has a replica out of sync (node {}); take the snapshot once it has caught up",
                        rec.name, r.node
                    )));
                }
                rec.snapshots.push(SnapshotRecord {
                    id: id.clone(),
                    name: name.to_string(),
                    size: rec.size,
                    created_at: now_secs(),
                    state: SnapshotState::Creating,
                    by: rec.attached_to.unwrap_or(me),
                    detail: String::new(),
                });
                Ok(Edit::Quiet)
            })
            .await?;
        let done = self
            .wait_snapshot(&rec.id, &id, |s| {
                s.map(|s| s.state != SnapshotState::Creating)
            })
            .await?;
        match done {
            Some(s) if s.state == SnapshotState::Error => Err(ControlError::Invalid(format!(
                "snapshot {name} of volume {} failed: {}",
                rec.name, s.detail
            ))),
            Some(s) => Ok(s),
            None => Err(ControlError::NotFound(format!("snapshot {name}"))),
        }
    }

    /// Deletes a snapshot (refused while clones use it) and waits until it is gone.
    pub async fn delete_snapshot(
        &self,
        id_or_name: &str,
        snapshot: &str,
    ) -> Result<(), ControlError> {
        let vol = self.find_volume(&Caller::system(), id_or_name)?.value;
        let snap = vol
            .snapshots
            .iter()
            .find(|s| s.id == snapshot || s.name == snapshot)
            .cloned()
            .ok_or_else(|| {
                ControlError::NotFound(format!("snapshot {snapshot} of volume {}", vol.name))
            })?;
        let clones: Vec<String> = self
            .store
            .list::<Volumes>()?
            .into_iter()
            .filter(|v| {
                v.value
                    .parent
                    .as_ref()
                    .is_some_and(|p| p.volume == vol.id && p.snapshot == snap.id)
            })
            .map(|v| v.value.name)
            .collect();
        if !clones.is_empty() {
            return Err(ControlError::Invalid(format!(
                "snapshot {} of volume {} is the source of clone(s) {}; delete them first",
                snap.name,
                vol.name,
                clones.join(", ")
            )));
        }
        let me = self.node;
        self.update_volume(&vol.id.0, |rec| {
            let attached = rec.attached_to;
            let Some(s) = rec.snapshots.iter_mut().find(|s| s.id == snap.id) else {
                return Ok(Edit::Unchanged);
            };
            match s.state {
                SnapshotState::Deleting => return Ok(Edit::Unchanged),
                SnapshotState::Creating => {
                    return Err(ControlError::Invalid(format!(
                        "snapshot {} is still being taken; try again in a moment",
                        s.name
                    )))
                }
                _ => {}
            }
            s.state = SnapshotState::Deleting;
            s.by = attached.unwrap_or(me);
            Ok(Edit::Quiet)
        })
        .await?;
        match self
            .wait_snapshot(&vol.id, &snap.id, |s| {
                Some(s.is_none_or(|s| s.state == SnapshotState::Error))
            })
            .await?
        {
            Some(s) if s.state == SnapshotState::Error => Err(ControlError::Invalid(format!(
                "deleting snapshot {} of volume {} failed: {}",
                snap.name, vol.name, s.detail
            ))),
            _ => Ok(()),
        }
    }

    /// Polls the store until `done` says so for the snapshot (None: it is gone).
    async fn wait_snapshot(
        &self,
        volume: &VolumeId,
        snapshot: &str,
        done: impl Fn(Option<&SnapshotRecord>) -> Option<bool>,
    ) -> Result<Option<SnapshotRecord>, ControlError> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut changes = self.store.watch();
        loop {
            let cur = self.store.get::<Volumes>(&volume.0)?;
            let snap = cur
                .as_ref()
                .and_then(|v| v.value.snapshots.iter().find(|s| s.id == snapshot).cloned());
            if done(snap.as_ref()) == Some(true) {
                return Ok(snap);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ControlError::NotReady(format!(
                    "snapshot {snapshot} is still pending after {} s; see `strata volume show`",
                    WAIT.as_secs()
                )));
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), changes.recv()).await;
        }
    }

    /// The agent of node `by` reports a pending snapshot change carried out (or not).
    pub async fn snapshot_done(
        &self,
        volume: &VolumeId,
        snapshot: &str,
        by: NodeId,
        result: Result<(), String>,
    ) -> Result<(), ControlError> {
        let r = self
            .update_volume(&volume.0, |rec| {
                let vname = rec.name.clone();
                let Some(i) = rec.snapshots.iter().position(|s| s.id == snapshot) else {
                    return Ok(Edit::Unchanged);
                };
                let s = &mut rec.snapshots[i];
                if s.by != by {
                    return Ok(Edit::Unchanged);
                }
                let (kind, msg) = match (s.state, &result) {
                    (SnapshotState::Creating, Ok(())) => {
                        s.state = SnapshotState::Available;
                        (
                            "volume.snapshot",
                            format!("snapshot {} of volume {vname} taken", s.name),
                        )
                    }
                    (SnapshotState::Deleting, Ok(())) => {
                        let name = s.name.clone();
                        rec.snapshots.remove(i);
                        (
                            "volume.snapshot.deleted",
                            format!("snapshot {name} of volume {vname} deleted"),
                        )
                    }
                    (SnapshotState::Creating | SnapshotState::Deleting, Err(why)) => {
                        s.state = SnapshotState::Error;
                        s.detail = why.clone();
                        (
                            "volume.snapshot.failed",
                            format!("snapshot {} of volume {vname}: {why}", s.name),
                        )
                    }
                    _ => return Ok(Edit::Unchanged),
                };
                Ok(Edit::Event(kind, msg))
            })
            .await;
        match r {
            Ok(_) | Err(ControlError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
