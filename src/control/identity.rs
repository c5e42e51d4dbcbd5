//! Identity (the Keystone v3 model): projects, users, roles and their assignments, and
//! tokens. A token is a signed statement (user, project, expiry, audit id) under a key
//! kept in the cluster's secrets, so any node validates it without a lookup; revoking one
//! records its audit id until it would have expired. Passwords are stored as argon2id
//! hashes and never logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{now_secs, Control, ControlError};
use crate::cluster::store::identity_tables::{
    ProjectRecord, Projects, RevokedTokens, RoleAssignment, RoleAssignments, UserRecord, Users,
    DEFAULT_DOMAIN,
};
use crate::cluster::store::tables::{Secret, Secrets};
use crate::cluster::store::{StoreError, TxnBuilder};

/// How long a token is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);
const TOKEN_KEY: &str = "token_key";

/// The roles there are: (id, name). Admins may do anything; members act within their
/// project; readers only read it.
pub const ROLES: [(&str, &str); 3] = [
    ("2c6c7a3b6a6b4b5fa1c04bd3a1c0a001", "admin"),
    ("2c6c7a3b6a6b4b5fa1c04bd3a1c0a002", "member"),
    ("2c6c7a3b6a6b4b5fa1c04bd3a1c0a003", "reader"),
];

/// What a valid token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenClaims {
    #[serde(rename = "u")]
    pub user: String,
    #[serde(rename = "p")]
    pub project: Option<String>,
    #[serde(rename = "i")]
    pub issued_at: u64,
    #[serde(rename = "e")]
    pub expires_at: u64,
    #[serde(rename = "a")]
    pub audit_id: String,
    /// Issued for this application credential (its roles limit the token's).
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub app_cred: Option<String>,
}

/// A validated token with what it grants now.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub claims: TokenClaims,
    pub user: UserRecord,
    pub project: Option<ProjectRecord>,
    /// Role names held on the project.
    pub roles: Vec<String>,
}

fn hex_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
fn hash_password(password: &str) -> Result<String, ControlError> {
    super::passwords::hash_blocking(password)
}

pub(super) fn unauthorized() -> ControlError {
    ControlError::Unauthorized(
        "The request you have made requires authentication (wrong user name, password or project)."
            .into(),
    )
}

impl Control {
    /// Creates the `admin` project and user (with the admin role) and the token key, once,
    /// when the cluster is created; returns the admin's generated password.
    pub async fn bootstrap_identity(&self) -> Result<Option<String>, ControlError> {
        self.bootstrap_identity_with(None).await
    }

    /// As [`Self::bootstrap_identity`], with the admin password given (an installed
    /// node's install config) instead of generated.
    pub async fn bootstrap_identity_with(
        &self,
        preset: Option<String>,
    ) -> Result<Option<String>, ControlError> {
        if !self.store.list::<Users>()?.is_empty() {
            return Ok(None);
        }
        // Hex (144 bits): never a leading '-', which clients would read as an option
        // (`openstack --os-password -x...` fails).
        let password = preset.unwrap_or_else(|| hex::encode(rand::random::<[u8; 18]>()));
        let project = ProjectRecord {
            id: hex_id(),
            name: "admin".into(),
            domain_id: DEFAULT_DOMAIN.into(),
            description: "Bootstrap project for initializing the cloud.".into(),
            enabled: true,
            created_at: now_secs(),
        };
        let user = UserRecord {
            id: hex_id(),
            name: "admin".into(),
            domain_id: DEFAULT_DOMAIN.into(),
            password_hash: super::passwords::hash(&password).await?,
            enabled: true,
            default_project_id: Some(project.id.clone()),
            created_at: now_secs(),
            tokens_valid_from: 0,
        };
        let a = RoleAssignment {
            project: project.id.clone(),
            user: user.id.clone(),
            role: "admin".into(),
        };
        let key = Secret {
            pem: hex::encode(rand::random::<[u8; 32]>()),
        };
        let txn = TxnBuilder::new()
            .require_revision::<Secrets>(TOKEN_KEY, 0)
            .put::<Secrets>(TOKEN_KEY, &key)
            .put::<Projects>(project.id.clone(), &project)
            .put::<Users>(user.id.clone(), &user)
            .put::<RoleAssignments>(format!("{}/{}/admin", project.id, user.id), &a);
        match self
            .store
            .commit(self.with_event(
                txn,
                "identity.bootstrap",
                "admin project and user created".into(),
            ))
            .await
        {
            Ok(_) => Ok(Some(password)),
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn token_key(&self) -> Result<Vec<u8>, ControlError> {
        let s = self.store.get::<Secrets>(TOKEN_KEY)?.ok_or_else(|| {
            ControlError::NotReady("the identity service is not set up yet".into())
        })?;
        hex::decode(&s.value.pem)
            .map_err(|_| ControlError::NotReady("the token key is damaged".into()))
    }

    pub(super) fn sign(&self, claims: &TokenClaims) -> Result<String, ControlError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let body = b64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.token_key()?)
            .map_err(|_| ControlError::NotReady("bad token key".into()))?;
        mac.update(body.as_bytes());
        Ok(format!(
            "{body}.{}",
            b64.encode(mac.finalize().into_bytes())
        ))
    }

    fn verify(&self, token: &str) -> Result<TokenClaims, ControlError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (body, sig) = token.split_once('.').ok_or_else(unauthorized)?;
        let sig = b64.decode(sig).map_err(|_| unauthorized())?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.token_key()?)
            .map_err(|_| ControlError::NotReady("bad token key".into()))?;
        mac.update(body.as_bytes());
        mac.verify_slice(&sig).map_err(|_| unauthorized())?;
        let claims: TokenClaims =
            serde_json::from_slice(&b64.decode(body).map_err(|_| unauthorized())?)
                .map_err(|_| unauthorized())?;
        Ok(claims)
    }

    pub fn find_user(&self, name_or_id: &str, domain: &str) -> Result<UserRecord, ControlError> {
        self.store
            .list::<Users>()?
            .into_iter()
            .map(|u| u.value)
            .find(|u| u.id == name_or_id || (u.name == name_or_id && u.domain_id == domain))
            .ok_or_else(unauthorized)
    }

    pub fn find_project(&self, name_or_id: &str) -> Result<ProjectRecord, ControlError> {
        self.store
            .list::<Projects>()?
            .into_iter()
            .map(|p| p.value)
            .find(|p| p.id == name_or_id || p.name == name_or_id)
            .ok_or_else(|| ControlError::NotFound(format!("no project {name_or_id:?}")))
    }

    /// Role names a user holds on a project.
    pub fn roles_of(&self, user: &str, project: &str) -> Result<Vec<String>, ControlError> {
        let prefix = format!("{project}/{user}/");
        let mut roles: Vec<String> = self
            .store
            .list::<RoleAssignments>()?
            .into_iter()
            .filter(|a| a.key.starts_with(&prefix))
            .map(|a| a.value.role)
            .collect();
        // An admin is also a member, a member also a reader (implied roles).
        if roles.iter().any(|r| r == "admin") {
            roles.push("member".into());
        }
        if roles.iter().any(|r| r == "member") {
            roles.push("reader".into());
        }
        roles.sort();
        roles.dedup();
        Ok(roles)
    }

    /// Password authentication, optionally scoped to a project the user has a role on.
    /// `source` is the client's address, for throttling: repeated failures lock the
    /// user name and the address for a while ([`super::passwords::Throttle`]). The
    /// password is checked off the async runtime, and as slowly for an unknown user.
    pub async fn issue_token(
        &self,
        user: &str,
        user_domain: &str,
        password: &str,
        project: Option<&str>,
        source: Option<std::net::IpAddr>,
    ) -> Result<(String, TokenInfo), ControlError> {
        self.throttle.check(user, source)?;
        let found = self.find_user(user, user_domain).ok();
        let matches =
            super::passwords::verify(found.as_ref().map(|u| u.password_hash.clone()), password)
                .await?;
        let u = match found {
            Some(u) if matches && u.enabled => u,
            _ => {
                tracing::info!(user = %user, "authentication failed");
                self.throttle.failed(user, source);
                return Err(unauthorized());
            }
        };
        self.throttle.succeeded(user, source);
        let project = match project {
            Some(p) => {
                let p = self.find_project(p).map_err(|_| unauthorized())?;
                if !p.enabled || self.roles_of(&u.id, &p.id)?.is_empty() {
                    return Err(unauthorized());
                }
                Some(p.id)
            }
            None => None,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = TokenClaims {
            user: u.id.clone(),
            project,
            issued_at: now,
            expires_at: now + self.token_ttl.as_secs(),
            audit_id: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(rand::random::<[u8; 16]>()),
            app_cred: None,
        };
        let token = self.sign(&claims)?;
        let info = self.token_info(claims)?;
        Ok((token, info))
    }

    /// Checks a token: signature, expiry, revocation, and that its user, project and
    /// roles still hold.
    pub fn validate_token(&self, token: &str) -> Result<TokenInfo, ControlError> {
        let claims = self.verify(token)?;
        if claims.expires_at <= now_secs() {
            return Err(ControlError::Unauthorized("The token has expired.".into()));
        }
        if self.store.get::<RevokedTokens>(&claims.audit_id)?.is_some() {
            return Err(ControlError::Unauthorized(
                "The token has been revoked.".into(),
            ));
        }
        let issued_at = claims.issued_at;
        let info = self.token_info(claims)?;
        if !info.user.enabled || info.project.as_ref().is_some_and(|p| !p.enabled) {
            return Err(unauthorized());
        }
        if issued_at < info.user.tokens_valid_from {
            return Err(ControlError::Unauthorized(
                "The token was issued before the user's password changed or the user was disabled."
                    .into(),
            ));
        }
        if info.project.is_some() && info.roles.is_empty() {
            return Err(unauthorized());
        }
        Ok(info)
    }

    pub(super) fn token_info(&self, claims: TokenClaims) -> Result<TokenInfo, ControlError> {
        let user = self
            .store
            .get::<Users>(&claims.user)?
            .map(|u| u.value)
            .ok_or_else(unauthorized)?;
        let project = match &claims.project {
            Some(p) => Some(
                self.store
                    .get::<Projects>(p)?
                    .map(|p| p.value)
                    .ok_or_else(unauthorized)?,
            ),
            None => None,
        };
        let mut roles = match &project {
            Some(p) => self.roles_of(&user.id, &p.id)?,
            None => Vec::new(),
        };
        if let Some(id) = &claims.app_cred {
            // An application credential's token has the roles it was given that the user
            // still holds, while it exists and has not expired.
            let cred = self
                .store
                .get::<crate::cluster::store::identity_tables::AppCredentials>(id)?
                .map(|c| c.value)
                .filter(|c| c.expires_at.is_none_or(|e| e > now_secs()))
                .ok_or_else(|| {
                    ControlError::Unauthorized(
                        "The application credential of this token is gone or expired.".into(),
                    )
                })?;
            let granted = super::app_credentials::implied(&cred.roles);
            roles.retain(|r| granted.contains(r));
        }
        Ok(TokenInfo {
            claims,
            user,
            project,
            roles,
        })
    }

    /// What a signed-in user holds on a project now (the console's sessions re-check
    /// this on every request, so removed roles and disabled users take effect at once).
    pub fn principal(&self, user: &str, project: &str) -> Result<TokenInfo, ControlError> {
        let info = self.token_info(TokenClaims {
            user: user.to_string(),
            project: Some(project.to_string()),
            issued_at: 0,
            expires_at: 0,
            audit_id: String::new(),
            app_cred: None,
        })?;
        if !info.user.enabled
            || info.project.as_ref().is_some_and(|p| !p.enabled)
            || info.roles.is_empty()
        {
            return Err(unauthorized());
        }
        Ok(info)
    }

    /// The enabled projects a user holds a role on, by name.
    pub fn projects_of(&self, user: &str) -> Result<Vec<ProjectRecord>, ControlError> {
        // One pass over the assignments (keyed `project/user/role`), not one per project.
        let with_role: std::collections::BTreeSet<String> = self
            .store
            .list::<RoleAssignments>()?
            .into_iter()
            .filter(|a| a.value.user == user)
            .map(|a| a.value.project)
            .collect();
        let mut out: Vec<ProjectRecord> = self
            .projects()?
            .into_iter()
            .filter(|p| p.enabled && with_role.contains(&p.id))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes the revocations of tokens that have expired anyway (run by the leader), so
    /// the table holds only tokens that could still be used.
    pub async fn prune_revoked_tokens(&self) -> Result<usize, ControlError> {
        let now = now_secs();
        let expired: Vec<String> = self
            .store
            .list::<RevokedTokens>()?
            .into_iter()
            .filter(|r| r.value <= now)
            .map(|r| r.key)
            .take(1_000)
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let mut txn = TxnBuilder::new();
        for k in &expired {
            txn = txn.delete::<RevokedTokens>(k.clone());
        }
        self.store.commit(txn).await?;
        Ok(expired.len())
    }

    pub async fn revoke_token(&self, token: &str) -> Result<(), ControlError> {
        let claims = self.verify(token)?;
        let txn =
            TxnBuilder::new().put::<RevokedTokens>(claims.audit_id.clone(), &claims.expires_at);
        self.store.commit(txn).await?;
        Ok(())
    }

    pub async fn create_project(
        &self,
        name: &str,
        description: &str,
    ) -> Result<ProjectRecord, ControlError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(ControlError::Invalid(format!(
                "project name {name:?} must be 1-64 printable characters"
            )));
        }
        if self.find_project(name).is_ok() {
            return Err(ControlError::Conflict(format!(
                "a project named {name:?} exists already"
            )));
        }
        let p = ProjectRecord {
            id: hex_id(),
            name: name.into(),
            domain_id: DEFAULT_DOMAIN.into(),
            description: description.into(),
            enabled: true,
            created_at: now_secs(),
        };
        let txn = TxnBuilder::new()
            .require_revision::<Projects>(p.id.clone(), 0)
            .put::<Projects>(p.id.clone(), &p);
        self.store
            .commit(self.with_event(
                txn,
                "project.created",
                format!("project {name} ({}) created", p.id),
            ))
            .await?;
        Ok(p)
    }

    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
        default_project: Option<&str>,
    ) -> Result<UserRecord, ControlError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
            return Err(ControlError::Invalid(format!(
                "user name {name:?} must be 1-255 printable characters"
            )));
        }
        if password.len() < 8 {
            return Err(ControlError::Invalid(
                "a password needs at least 8 characters".into(),
            ));
        }
        if self.find_user(name, DEFAULT_DOMAIN).is_ok() {
            return Err(ControlError::Conflict(format!(
                "a user named {name:?} exists already"
            )));
        }
        let project = match default_project {
            Some(p) => Some(self.find_project(p)?.id),
            None => None,
        };
        let u = UserRecord {
            id: hex_id(),
            name: name.into(),
            domain_id: DEFAULT_DOMAIN.into(),
            password_hash: super::passwords::hash(password).await?,
            enabled: true,
            default_project_id: project,
            created_at: now_secs(),
            tokens_valid_from: 0,
        };
        let txn = TxnBuilder::new()
            .require_revision::<Users>(u.id.clone(), 0)
            .put::<Users>(u.id.clone(), &u);
        self.store
            .commit(self.with_event(
                txn,
                "user.created",
                format!("user {name} ({}) created", u.id),
            ))
            .await?;
        Ok(u)
    }

    /// The project and user a role assignment names, with the role checked.
    pub(super) fn assignment_of(
        &self,
        project: &str,
        user: &str,
        role: &str,
    ) -> Result<(ProjectRecord, UserRecord), ControlError> {
        if !ROLES.iter().any(|(_, n)| *n == role) {
            return Err(ControlError::Invalid(format!(
                "no role {role:?} (admin, member, reader)"
            )));
        }
        let p = self.find_project(project)?;
        let u = self
            .find_user(user, DEFAULT_DOMAIN)
            .map_err(|_| ControlError::NotFound(format!("no user {user:?}")))?;
        Ok((p, u))
    }

    pub async fn assign_role(
        &self,
        project: &str,
        user: &str,
        role: &str,
    ) -> Result<(), ControlError> {
        let (p, u) = self.assignment_of(project, user, role)?;
        let a = RoleAssignment {
            project: p.id.clone(),
            user: u.id.clone(),
            role: role.into(),
        };
        let txn = TxnBuilder::new().put::<RoleAssignments>(format!("{}/{}/{role}", p.id, u.id), &a);
        self.store
            .commit(self.with_event(
                txn,
                "role.assigned",
                format!("role {role} on project {} given to user {}", p.name, u.name),
            ))
            .await?;
        Ok(())
    }

    pub fn projects(&self) -> Result<Vec<ProjectRecord>, ControlError> {
        let mut v: Vec<ProjectRecord> = self
            .store
            .list::<Projects>()?
            .into_iter()
            .map(|p| p.value)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    pub fn users(&self) -> Result<Vec<UserRecord>, ControlError> {
        let mut v: Vec<UserRecord> = self
            .store
            .list::<Users>()?
            .into_iter()
            .map(|u| u.value)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }
}

/// Keystone's time format.
pub fn iso8601(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000000Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    use argon2::Argon2;

    #[test]
    fn passwords_hash_and_verify_and_times_format_like_keystone() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"wrong", &parsed)
            .is_err());
        assert_eq!(iso8601(1_796_025_600), "2026-11-30T08:00:00.000000Z");
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000000Z");
    }
}
