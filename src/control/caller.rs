//! Who calls into `control`, and what that caller may see.
//!
//! Every lookup by id or name of a project's resource goes through [`Control::find_scoped`]
//! with the caller: a record the caller may not see is "not found", exactly as one that
//! does not exist, so ids of other projects reveal nothing and cannot be used inside a
//! request body either (a security group, port, subnet or image named in a request is
//! resolved the same way as the resource in the URL).
//!
//! The rule is OpenStack's: a user sees its project's resources, plus what OpenStack
//! shares between projects (shared and external networks and their subnets, public and
//! community images); a cloud administrator and the node-local administrator (admin
//! socket, CLI, control's own reconcilers) see everything.

use crate::cluster::store::compute_tables::{KeypairRecord, ServerGroupRecord, VmRecord};
use crate::cluster::store::image_tables::ImageRecord;
use crate::cluster::store::network_tables::{
    FloatingIpRecord, NetworkRecord, Networks, PortRecord, RouterRecord, SecurityGroupRecord,
    SubnetRecord,
};
use crate::cluster::store::storage_tables::VolumeRecord;
use crate::cluster::store::{Table, Versioned};

use super::{Control, ControlError};

/// The caller of a `control` operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The node-local administrator (admin socket and CLI) or control itself; `who` names
    /// it in events and the audit log.
    Local { who: String },
    /// A signed-in user acting in one project, with its roles there.
    User(UserCaller),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCaller {
    pub user: String,
    pub user_name: String,
    pub project: String,
    pub roles: Vec<String>,
}

impl Caller {
    /// The node-local administrator, named `who`.
    pub fn local(who: impl Into<String>) -> Caller {
        Caller::Local { who: who.into() }
    }

    /// Control acting on its own (reconcilers, sagas resuming after a restart).
    pub fn system() -> Caller {
        Caller::local("strata")
    }

    pub fn user(
        user: impl Into<String>,
        user_name: impl Into<String>,
        project: impl Into<String>,
        roles: Vec<String>,
    ) -> Caller {
        Caller::User(UserCaller {
            user: user.into(),
            user_name: user_name.into(),
            project: project.into(),
            roles,
        })
    }

    /// The caller a project-scoped token stands for (None for an unscoped token), with
    /// the roles it acts with: `admin` counts only on the cloud's own project
    /// ([`super::users::effective_roles`]), so `is_admin` is "cloud administrator".
    pub fn of_token(t: &super::identity::TokenInfo) -> Option<Caller> {
        let project = t.project.as_ref()?;
        Some(Caller::user(
            t.user.id.clone(),
            t.user.name.clone(),
            project.id.clone(),
            super::users::effective_roles(t),
        ))
    }

    /// Sees and may change every project's resources.
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Local { .. } => true,
            Caller::User(u) => u.roles.iter().any(|r| r == "admin"),
        }
    }

    /// May change things (readers only look).
    pub fn is_writer(&self) -> bool {
        match self {
            Caller::Local { .. } => true,
            Caller::User(u) => u.roles.iter().any(|r| r == "admin" || r == "member"),
        }
    }

    /// The project the caller acts in (None for the node-local administrator).
    pub fn project(&self) -> Option<&str> {
        match self {
            Caller::Local { .. } => None,
            Caller::User(u) => Some(&u.project),
        }
    }

    /// The user id (None for the node-local administrator).
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Caller::Local { .. } => None,
            Caller::User(u) => Some(&u.user),
        }
    }

    /// A name for events and the audit log.
    pub fn name(&self) -> &str {
        match self {
            Caller::Local { who } => who,
            Caller::User(u) => &u.user_name,
        }
    }

    /// Whether a resource owned by `project` is within reach.
    pub fn sees_project(&self, project: Option<&str>) -> bool {
        self.is_admin() || (project.is_some() && project == self.project())
    }

    /// The project a new resource belongs to: the caller's own; only an administrator
    /// may name another one (as Neutron's and Cinder's `project_id` for admins).
    pub fn owner_for(&self, asked: Option<&str>) -> Result<Option<String>, ControlError> {
        match (asked, self.project()) {
            (Some(a), Some(p)) if a != p && !self.is_admin() => Err(ControlError::Forbidden(
                format!("only an administrator may create resources for another project ({a})"),
            )),
            (Some(a), _) => Ok(Some(a.to_string())),
            (None, p) => Ok(p.map(str::to_string)),
        }
    }

    /// What a member of `project` reaches (no user): how references stored in a
    /// project's records (an image's `kernel_id`) are resolved, whoever uses them.
    pub fn member_of(project: &str) -> Caller {
        Caller::user("", "", project, vec!["member".into()])
    }

    /// Refuses a reader.
    pub fn need_writer(&self) -> Result<(), ControlError> {
        if self.is_writer() {
            Ok(())
        } else {
            Err(ControlError::Forbidden(
                "the reader role cannot change anything".into(),
            ))
        }
    }
}

/// What a caller may see of one kind of record.
pub trait Scoped {
    fn visible_to(&self, caller: &Caller, control: &Control) -> bool;
}

macro_rules! owned_by_project {
    ($($t:ty),*) => {$(
        impl Scoped for $t {
            fn visible_to(&self, caller: &Caller, _: &Control) -> bool {
                caller.sees_project(Some(&self.project))
            }
        }
    )*};
}
owned_by_project!(
    PortRecord,
    SecurityGroupRecord,
    RouterRecord,
    FloatingIpRecord,
    ServerGroupRecord
);

impl Scoped for NetworkRecord {
    fn visible_to(&self, caller: &Caller, _: &Control) -> bool {
        self.shared || self.external || caller.sees_project(Some(&self.project))
    }
}

impl Scoped for SubnetRecord {
    /// A subnet is visible with its network: its own project's, or on a shared or
    /// external network.
    fn visible_to(&self, caller: &Caller, control: &Control) -> bool {
        caller.sees_project(Some(&self.project))
            || control
                .store
                .get::<Networks>(&self.network)
                .ok()
                .flatten()
                .is_some_and(|n| n.value.shared || n.value.external)
    }
}

impl Scoped for ImageRecord {
    fn visible_to(&self, caller: &Caller, _: &Control) -> bool {
        caller.sees_project(Some(&self.owner))
            || self.visibility == "public"
            || self.visibility == "community"
    }
}

impl Scoped for VolumeRecord {
    /// Volumes without a project hold images: only administrators reach them directly.
    fn visible_to(&self, caller: &Caller, _: &Control) -> bool {
        caller.sees_project(self.project.as_deref())
    }
}

impl Scoped for VmRecord {
    fn visible_to(&self, caller: &Caller, _: &Control) -> bool {
        caller.sees_project(self.project.as_deref())
    }
}

impl Scoped for KeypairRecord {
    /// Key pairs belong to their user.
    fn visible_to(&self, caller: &Caller, _: &Control) -> bool {
        caller.is_admin() || caller.user_id() == Some(self.user.as_str())
    }
}

impl Control {
    /// A record the caller may see, by its key (id) or by its name when that names
    /// exactly one of the records it may see. What it may not see is not found.
    pub(crate) fn find_scoped<T: Table>(
        &self,
        caller: &Caller,
        what: &str,
        id_or_name: &str,
        name_of: impl Fn(&T::Value) -> &str,
    ) -> Result<Versioned<T::Value>, ControlError>
    where
        T::Value: Scoped,
    {
        let not_found = || ControlError::NotFound(format!("no {what} {id_or_name:?}"));
        if let Some(v) = self.store.get::<T>(id_or_name)? {
            return if v.value.visible_to(caller, self) {
                Ok(v)
            } else {
                Err(not_found())
            };
        }
        let mut found: Vec<_> = self
            .store
            .list::<T>()?
            .into_iter()
            .filter(|v| name_of(&v.value) == id_or_name && v.value.visible_to(caller, self))
            .collect();
        match found.len() {
            0 => Err(not_found()),
            1 => Ok(found.remove(0)),
            n => Err(ControlError::Invalid(format!(
                "{n} {what}s are named {id_or_name:?}; use the {what}'s id"
            ))),
        }
    }

    /// Every record of a kind that the caller may see.
    pub(crate) fn list_scoped<T: Table>(
        &self,
        caller: &Caller,
    ) -> Result<Vec<Versioned<T::Value>>, ControlError>
    where
        T::Value: Scoped,
    {
        Ok(self
            .store
            .list::<T>()?
            .into_iter()
            .filter(|v| v.value.visible_to(caller, self))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(project: &str) -> Caller {
        Caller::user("u1", "alice", project, vec!["member".into()])
    }

    #[test]
    fn owners_and_roles() {
        let a = member("A");
        assert!(a.sees_project(Some("A")));
        assert!(!a.sees_project(Some("B")));
        assert!(
            !a.sees_project(None),
            "project-less records are the admin's"
        );
        assert!(a.is_writer() && !a.is_admin());
        assert_eq!(a.owner_for(None).unwrap().as_deref(), Some("A"));
        assert_eq!(a.owner_for(Some("A")).unwrap().as_deref(), Some("A"));
        assert!(matches!(
            a.owner_for(Some("B")),
            Err(ControlError::Forbidden(_))
        ));
        let reader = Caller::user("u2", "bob", "A", vec!["reader".into()]);
        assert!(!reader.is_writer());
        assert!(reader.need_writer().is_err());
        let admin = Caller::user("u3", "root", "A", vec!["admin".into()]);
        assert!(admin.sees_project(Some("B")) && admin.sees_project(None));
        assert_eq!(admin.owner_for(Some("B")).unwrap().as_deref(), Some("B"));
        let local = Caller::local("admin (local socket)");
        assert!(local.is_admin() && local.project().is_none());
        assert_eq!(local.owner_for(None).unwrap(), None);
        assert_eq!(local.name(), "admin (local socket)");
    }
}
