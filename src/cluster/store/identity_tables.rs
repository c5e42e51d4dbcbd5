//! Tables of the identity service (Keystone v3's model): projects, users with their
//! password hashes, role assignments, and revoked tokens (tokens themselves are signed,
//! not stored).

use serde::{Deserialize, Serialize};

use super::tables::Table;

/// The one domain (Keystone's `default`, named `Default`).
pub const DEFAULT_DOMAIN: &str = "default";

pub struct Projects;
impl Table for Projects {
    const NAME: &'static str = "projects";
    type Value = ProjectRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProjectRecord {
    /// 32 hex digits, as Keystone's.
    pub id: String,
    pub name: String,
    pub domain_id: String,
    #[serde(default)]
    pub description: String,
    pub enabled: bool,
    pub created_at: u64,
}

pub struct Users;
impl Table for Users {
    const NAME: &'static str = "users";
    type Value = UserRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    /// A PHC string (argon2id); never shown.
    pub password_hash: String,
    pub enabled: bool,
    #[serde(default)]
    pub default_project_id: Option<String>,
    pub created_at: u64,
    /// Tokens issued before this time (Unix seconds) are no longer valid: set when the
    /// password changes or the user is disabled.
    #[serde(default)]
    pub tokens_valid_from: u64,
}

/// Key `<project>/<user>/<role>`.
pub struct RoleAssignments;
impl Table for RoleAssignments {
    const NAME: &'static str = "role_assignments";
    type Value = RoleAssignment;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignment {
    pub project: String,
    pub user: String,
    pub role: String,
}

/// Key: a token's audit id; value: when the token would have expired (seconds), after
/// which the record can go.
pub struct RevokedTokens;
impl Table for RevokedTokens {
    const NAME: &'static str = "revoked_tokens";
    type Value = u64;
}

/// Application credentials, keyed by id: a secret that authenticates as its user, scoped
/// to one project with a subset of the user's roles there.
pub struct AppCredentials;
impl Table for AppCredentials {
    const NAME: &'static str = "app_credentials";
    type Value = AppCredentialRecord;
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AppCredentialRecord {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub user: String,
    pub project: String,
    /// A PHC string (argon2id) of the secret; never shown.
    pub secret_hash: String,
    /// Role names it grants (those the user still holds on the project).
    pub roles: Vec<String>,
    pub expires_at: Option<u64>,
    /// May create further application credentials (Keystone's `unrestricted`).
    #[serde(default)]
    pub unrestricted: bool,
    pub created_at: u64,
}
