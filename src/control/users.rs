//! Users over their life: disabled and enabled, renamed, passwords changed by the user or
//! reset by an administrator, roles taken away. A changed password or a disabled user
//! ends the tokens issued before (`tokens_valid_from`), as Keystone revokes a user's
//! tokens on those changes.
//!
//! Who is a cloud administrator: the `admin` role on the cloud's own project (`admin`,
//! made when the cluster is created), as Keystone's system scope is. The `admin` role on
//! any other project is that project's administrator only: it acts there as a member.

use super::identity::{unauthorized, TokenInfo};
use super::{now_secs, Control, ControlError};
use crate::cluster::store::identity_tables::{RoleAssignments, UserRecord, Users, DEFAULT_DOMAIN};
use crate::cluster::store::{StoreError, TxnBuilder};

/// The project whose `admin` role makes a cloud administrator.
pub const CLOUD_ADMIN_PROJECT: &str = "admin";

/// Whether a token's holder administers the whole cloud.
pub fn is_cloud_admin(t: &TokenInfo) -> bool {
    t.roles.iter().any(|r| r == "admin")
        && t.project
            .as_ref()
            .is_some_and(|p| p.name == CLOUD_ADMIN_PROJECT && p.domain_id == DEFAULT_DOMAIN)
}

/// The roles a token's holder acts with: `admin` counts only on the cloud's project;
/// elsewhere it acts as `member` (and `reader`).
pub fn effective_roles(t: &TokenInfo) -> Vec<String> {
    if is_cloud_admin(t) || !t.roles.iter().any(|r| r == "admin") {
        return t.roles.clone();
    }
    let mut r: Vec<String> = t
        .roles
        .iter()
        .filter(|r| *r != "admin")
        .cloned()
        .chain(["member".to_string(), "reader".to_string()])
        .collect();
    r.sort();
    r.dedup();
    r
}

/// What an administrator changes of a user (None: unchanged).
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub password: Option<String>,
    pub default_project: Option<Option<String>>,
}

fn check_password(p: &str) -> Result<(), ControlError> {
    if p.len() < 8 || p.len() > 4096 {
        return Err(ControlError::Invalid(
            "a password needs 8 to 4096 characters".into(),
        ));
    }
    Ok(())
}

impl Control {
    /// Changes a user (an administrator's action).
    pub async fn update_user(&self, id: &str, up: UserUpdate) -> Result<UserRecord, ControlError> {
        if let Some(p) = &up.password {
            check_password(p)?;
        }
        let hash = match &up.password {
            Some(p) => Some(super::passwords::hash(p).await?),
            None => None,
        };
        if let Some(n) = &up.name {
            let n = n.trim();
            if n.is_empty() || n.len() > 255 || n.chars().any(|c| c.is_control()) {
                return Err(ControlError::Invalid(format!(
                    "user name {n:?} must be 1-255 printable characters"
                )));
            }
        }
        let project = match &up.default_project {
            Some(Some(p)) => Some(Some(self.find_project(p)?.id)),
            Some(None) => Some(None),
            None => None,
        };
        loop {
            let cur = self.user_versioned(id)?;
            let mut u = cur.value.clone();
            if let Some(n) = &up.name {
                let n = n.trim();
                if n != u.name && self.find_user(n, DEFAULT_DOMAIN).is_ok() {
                    return Err(ControlError::Conflict(format!(
                        "a user named {n:?} exists already"
                    )));
                }
                u.name = n.to_string();
            }
            let mut what = Vec::new();
            if let Some(e) = up.enabled {
                if e != u.enabled {
                    what.push(if e { "enabled" } else { "disabled" });
                    if !e {
                        u.tokens_valid_from = now_secs();
                    }
                }
                u.enabled = e;
            }
            if let Some(h) = &hash {
                u.password_hash = h.clone();
                u.tokens_valid_from = now_secs();
                what.push("password reset");
            }
            if let Some(p) = &project {
                u.default_project_id = p.clone();
            }
            let txn = TxnBuilder::new()
                .require_revision::<Users>(u.id.clone(), cur.revision)
                .put::<Users>(u.id.clone(), &u);
            let msg = format!(
                "user {} ({}) updated{}{}",
                u.name,
                u.id,
                if what.is_empty() { "" } else { ": " },
                what.join(", ")
            );
            match self
                .store
                .commit(self.with_event(txn, "user.updated", msg))
                .await
            {
                Ok(_) => return Ok(u),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A user changes their own password, giving the current one (Keystone's
    /// `POST /v3/users/{id}/password`); their earlier tokens end.
    pub async fn change_password(
        &self,
        id: &str,
        original: &str,
        new: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<(), ControlError> {
        check_password(new)?;
        let cur = self.user_versioned(id)?;
        self.throttle.check(&cur.value.name, source)?;
        let ok = super::passwords::verify(Some(cur.value.password_hash.clone()), original).await?;
        if !ok || !cur.value.enabled {
            self.throttle.failed(&cur.value.name, source);
            return Err(unauthorized());
        }
        let hash = super::passwords::hash(new).await?;
        let mut u = cur.value.clone();
        u.password_hash = hash;
        u.tokens_valid_from = now_secs();
        let txn = TxnBuilder::new()
            .require_revision::<Users>(u.id.clone(), cur.revision)
            .put::<Users>(u.id.clone(), &u);
        let msg = format!("user {} ({}) changed their password", u.name, u.id);
        match self
            .store
            .commit(self.with_event(txn, "user.password", msg))
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(ControlError::Conflict(
                "the user changed meanwhile; try again".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes a role on a project away from a user.
    pub async fn unassign_role(
        &self,
        project: &str,
        user: &str,
        role: &str,
    ) -> Result<(), ControlError> {
        let (p, u) = self.assignment_of(project, user, role)?;
        let key = format!("{}/{}/{role}", p.id, u.id);
        if self.store.get::<RoleAssignments>(&key)?.is_none() {
            return Err(ControlError::NotFound(format!(
                "Could not find role assignment with role: {role}, user or group: {}, project, domain, or system: {}.",
                u.id, p.id
            )));
        }
        if p.name == CLOUD_ADMIN_PROJECT && role == "admin" {
            let admins = self
                .store
                .list::<RoleAssignments>()?
                .into_iter()
                .filter(|a| a.value.project == p.id && a.value.role == "admin")
                .count();
            if admins <= 1 {
                return Err(ControlError::Conflict(
                    "this is the last cloud administrator; give another user the admin role first"
                        .into(),
                ));
            }
        }
        let txn = TxnBuilder::new().delete::<RoleAssignments>(key);
        self.store
            .commit(self.with_event(
                txn,
                "role.unassigned",
                format!(
                    "role {role} on project {} taken from user {}",
                    p.name, u.name
                ),
            ))
            .await?;
        Ok(())
    }

    fn user_versioned(
        &self,
        id: &str,
    ) -> Result<crate::cluster::store::Versioned<UserRecord>, ControlError> {
        self.store
            .get::<Users>(id)?
            .ok_or_else(|| ControlError::NotFound(format!("Could not find user: {id}.")))
    }
}
