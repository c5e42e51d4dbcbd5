//! Application credentials (Keystone v3): a named secret a user makes for one project,
//! granting a subset of the user's roles there, optionally expiring. The secret is shown
//! once, stored as an argon2id hash; tokens issued for it carry its id, so they lose the
//! roles the user loses and stop working when it is deleted or expires.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

use super::identity::{unauthorized, TokenClaims, TokenInfo};
use super::{now_secs, Control, ControlError};
use crate::cluster::store::identity_tables::{AppCredentialRecord, AppCredentials};
use crate::cluster::store::TxnBuilder;

/// Roles with the ones they imply (admin ⊃ member ⊃ reader).
pub fn implied(roles: &[String]) -> Vec<String> {
    let mut out: Vec<String> = roles.to_vec();
    if out.iter().any(|r| r == "admin") {
        out.push("member".into());
    }
    if out.iter().any(|r| r == "member") {
        out.push("reader".into());
    }
    out.sort();
    out.dedup();
    out
}

/// What a caller asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateAppCredential {
    pub name: String,
    pub description: String,
    pub secret: Option<String>,
    /// Role names; None: every role the user holds on the project.
    pub roles: Option<Vec<String>>,
    pub expires_at: Option<u64>,
    pub unrestricted: bool,
}

/// Application credentials one user may hold (each is a stored hash on every node).
pub const MAX_PER_USER: usize = 100;

impl Control {
    /// Creates an application credential for the token's user and project; returns it
    /// and its secret (shown this once). A token from a restricted application credential
    /// cannot make another.
    pub async fn create_app_credential(
        &self,
        by: &TokenInfo,
        req: CreateAppCredential,
    ) -> Result<(AppCredentialRecord, String), ControlError> {
        let project = by.project.as_ref().ok_or_else(|| {
            ControlError::Forbidden("application credentials need a project-scoped token".into())
        })?;
        if let Some(c) = &by.claims.app_cred {
            let unrestricted = self
                .store
                .get::<AppCredentials>(c)?
                .is_some_and(|c| c.value.unrestricted);
            if !unrestricted {
                return Err(ControlError::Forbidden(
                    "a restricted application credential cannot create application credentials"
                        .into(),
                ));
            }
        }
        let name = req.name.trim();
        if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
            return Err(ControlError::Invalid(format!(
                "application credential name {name:?} must be 1-255 printable characters"
            )));
        }
        let held = self
            .store
            .list::<AppCredentials>()?
            .iter()
            .filter(|c| c.value.user == by.user.id)
            .count();
        if held >= MAX_PER_USER {
            return Err(ControlError::OverQuota {
                resource: "application_credentials".into(),
                message: format!(
                    "a user holds at most {MAX_PER_USER} application credentials; delete one first"
                ),
            });
        }
        if self
            .store
            .list::<AppCredentials>()?
            .iter()
            .any(|c| c.value.user == by.user.id && c.value.name == name)
        {
            return Err(ControlError::Conflict(format!(
                "An application credential named {name} already exists for this user."
            )));
        }
        if let Some(e) = req.expires_at {
            if e <= now_secs() {
                return Err(ControlError::Invalid(
                    "expires_at must be in the future".into(),
                ));
            }
        }
        let held = self.roles_of(&by.user.id, &project.id)?;
        let roles = match req.roles {
            Some(r) => {
                if let Some(x) = r.iter().find(|x| !held.contains(x)) {
                    return Err(ControlError::Forbidden(format!(
                        "the user does not hold role {x} on project {}",
                        project.name
                    )));
                }
                r
            }
            None => by.roles.clone(),
        };
        if roles.is_empty() {
            return Err(ControlError::Invalid(
                "an application credential needs at least one role".into(),
            ));
        }
        let secret = match req.secret {
            Some(s) if s.len() < 8 => {
                return Err(ControlError::Invalid(
                    "an application credential secret has at least 8 characters".into(),
                ))
            }
            Some(s) => s,
            None => {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 48]>())
            }
        };
        let rec = AppCredentialRecord {
            id: hex::encode(rand::random::<[u8; 16]>()),
            name: name.to_string(),
            description: req.description,
            user: by.user.id.clone(),
            project: project.id.clone(),
            secret_hash: super::passwords::hash(&secret).await?,
            roles,
            expires_at: req.expires_at,
            unrestricted: req.unrestricted,
            created_at: now_secs(),
        };
        let txn = TxnBuilder::new()
            .require_revision::<AppCredentials>(rec.id.clone(), 0)
            .put::<AppCredentials>(rec.id.clone(), &rec);
        self.store
            .commit(self.with_event(
                txn,
                "identity.app_credential_created",
                format!(
                    "application credential {} created for user {}",
                    rec.name, by.user.name
                ),
            ))
            .await?;
        Ok((rec, secret))
    }

    pub fn app_credentials(&self, user: &str) -> Result<Vec<AppCredentialRecord>, ControlError> {
        let mut v: Vec<AppCredentialRecord> = self
            .store
            .list::<AppCredentials>()?
            .into_iter()
            .map(|c| c.value)
            .filter(|c| c.user == user)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    pub fn app_credential(
        &self,
        user: &str,
        id: &str,
    ) -> Result<AppCredentialRecord, ControlError> {
        self.store
            .get::<AppCredentials>(id)?
            .map(|c| c.value)
            .filter(|c| c.user == user)
            .ok_or_else(|| {
                ControlError::NotFound(format!("Could not find Application Credential: {id}."))
            })
    }

    pub async fn delete_app_credential(&self, user: &str, id: &str) -> Result<(), ControlError> {
        let c = self.app_credential(user, id)?;
        let txn = TxnBuilder::new().delete::<AppCredentials>(c.id.clone());
        self.store
            .commit(self.with_event(
                txn,
                "identity.app_credential_deleted",
                format!("application credential {} deleted", c.name),
            ))
            .await?;
        Ok(())
    }

    /// Authentication with an application credential: by id, or by name and its user
    /// (the secret checked off the async runtime; failures throttled as sign-ins are).
    pub async fn issue_app_credential_token(
        &self,
        id: Option<&str>,
        name_and_user: Option<(&str, &str)>,
        secret: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<(String, TokenInfo), ControlError> {
        let key = id
            .map(str::to_string)
            .or(name_and_user.map(|(n, u)| format!("{u}/{n}")))
            .unwrap_or_default();
        self.throttle.check(&key, source)?;
        let cred = match (id, name_and_user) {
            (Some(id), _) => self.store.get::<AppCredentials>(id)?.map(|c| c.value),
            (None, Some((name, user))) => self
                .store
                .list::<AppCredentials>()?
                .into_iter()
                .map(|c| c.value)
                .find(|c| c.name == name && c.user == user),
            (None, None) => None,
        };
        let matches =
            super::passwords::verify(cred.as_ref().map(|c| c.secret_hash.clone()), secret).await?;
        let cred = match cred {
            Some(c) if matches && c.expires_at.is_none_or(|e| e > now_secs()) => c,
            _ => {
                tracing::info!(credential = %key, "application credential authentication failed");
                self.throttle.failed(&key, source);
                return Err(unauthorized());
            }
        };
        self.throttle.succeeded(&key, source);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let expires = match cred.expires_at {
            Some(e) => e.min(now + self.token_ttl.as_secs()),
            None => now + self.token_ttl.as_secs(),
        };
        let claims = TokenClaims {
            user: cred.user.clone(),
            project: Some(cred.project.clone()),
            issued_at: now,
            expires_at: expires,
            audit_id: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(rand::random::<[u8; 16]>()),
            app_cred: Some(cred.id.clone()),
        };
        let token = self.sign(&claims)?;
        let info = self.token_info(claims)?;
        if info.roles.is_empty() {
            return Err(unauthorized());
        }
        Ok((token, info))
    }
}
