//! Keystone application credentials: `/identity/v3/users/{user}/application_credentials`
//! (create, list, show, delete; one's own only) and the `application_credential`
//! authentication method (by id, or by name with the user).

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Api;
use super::{authenticate, OsError};
use crate::cluster::store::identity_tables::{AppCredentialRecord, DEFAULT_DOMAIN};
use crate::control::app_credentials::CreateAppCredential;
use crate::control::identity::{iso8601, TokenInfo, ROLES};

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route(
            "/identity/v3/users/{user}/application_credentials",
            get(list).post(create),
        )
        .route(
            "/identity/v3/users/{user}/application_credentials/{id}",
            get(show).delete(delete),
        )
}

#[derive(Deserialize)]
pub struct AppCredentialMethod {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user: Option<Value>,
    secret: String,
}

/// The `application_credential` authentication method.
pub async fn authenticate_method(
    node: &Api,
    m: &AppCredentialMethod,
    source: Option<std::net::IpAddr>,
) -> Result<(String, TokenInfo), OsError> {
    let user = match (&m.name, &m.user) {
        (Some(_), Some(u)) => {
            let id = match u["id"].as_str() {
                Some(id) => id.to_string(),
                None => {
                    let name = u["name"].as_str().ok_or_else(|| {
                        OsError(
                            StatusCode::BAD_REQUEST,
                            "the user needs an id or a name".into(),
                        )
                    })?;
                    node.control.find_user(name, DEFAULT_DOMAIN)?.id
                }
            };
            Some(id)
        }
        _ => None,
    };
    let by_name = match (&m.name, &user) {
        (Some(n), Some(u)) => Some((n.as_str(), u.as_str())),
        _ => None,
    };
    if m.id.is_none() && by_name.is_none() {
        return Err(OsError(
            StatusCode::BAD_REQUEST,
            "an application credential is named by its id, or by its name and user".into(),
        ));
    }
    Ok(node
        .control
        .issue_app_credential_token(m.id.as_deref(), by_name, &m.secret, source)
        .await?)
}

fn cred_json(c: &AppCredentialRecord, secret: Option<&str>) -> Value {
    let roles: Vec<Value> = c
        .roles
        .iter()
        .map(|r| {
            let id = ROLES
                .iter()
                .find(|(_, n)| n == r)
                .map(|(i, _)| *i)
                .unwrap_or("");
            json!({"id": id, "name": r, "domain_id": null})
        })
        .collect();
    let mut v = json!({
        "id": c.id, "name": c.name, "description": c.description, "user_id": c.user,
        "project_id": c.project, "roles": roles, "unrestricted": c.unrestricted,
        "expires_at": c.expires_at.map(iso8601), "access_rules": [],
        "links": {"self": null},
    });
    if let Some(s) = secret {
        v["secret"] = json!(s);
    }
    v
}

/// The caller, acting on their own credentials only.
fn own(node: &Api, headers: &HeaderMap, user: &str) -> Result<TokenInfo, OsError> {
    let t = authenticate(node, headers)?;
    if t.user.id != user {
        return Err(OsError(
            StatusCode::FORBIDDEN,
            "You are not authorized to perform the requested action: application credentials are their user's own.".into(),
        ));
    }
    Ok(t)
}

async fn list(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(user): UrlPath<String>,
) -> Result<Response, OsError> {
    own(&node, &headers, &user)?;
    let list: Vec<Value> = node
        .control
        .app_credentials(&user)?
        .iter()
        .map(|c| cred_json(c, None))
        .collect();
    Ok(Json(json!({"application_credentials": list, "links": {"self": null, "next": null, "previous": null}})).into_response())
}

async fn show(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((user, id)): UrlPath<(String, String)>,
) -> Result<Response, OsError> {
    own(&node, &headers, &user)?;
    let c = node.control.app_credential(&user, &id)?;
    Ok(Json(json!({"application_credential": cred_json(&c, None)})).into_response())
}

async fn create(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(user): UrlPath<String>,
    b: axum::body::Bytes,
) -> Result<Response, OsError> {
    let t = own(&node, &headers, &user)?;
    let v: Value = serde_json::from_slice(&b).map_err(|e| {
        OsError(
            StatusCode::BAD_REQUEST,
            format!("Invalid request body: {e}"),
        )
    })?;
    let c = v
        .get("application_credential")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            OsError(
                StatusCode::BAD_REQUEST,
                "'application_credential' is a required property".into(),
            )
        })?;
    let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    let roles = match c.get("roles") {
        // No roles, or an empty list (what `openstack application credential create`
        // sends without --role): the token's roles, as Keystone does.
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|r| {
                    r["name"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| {
                            r["id"].as_str().and_then(|id| {
                                ROLES
                                    .iter()
                                    .find(|(i, _)| *i == id)
                                    .map(|(_, n)| n.to_string())
                            })
                        })
                        .ok_or_else(|| {
                            OsError(StatusCode::NOT_FOUND, format!("Could not find role: {r}"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(OsError(
                StatusCode::BAD_REQUEST,
                "roles must be a list".into(),
            ))
        }
    };
    let expires_at = match s("expires_at") {
        Some(e) => Some(
            time::OffsetDateTime::parse(
                &(if e.ends_with('Z') || e.contains('+') {
                    e.clone()
                } else {
                    format!("{e}Z")
                }),
                &time::format_description::well_known::Rfc3339,
            )
            .map(|t| t.unix_timestamp().max(0) as u64)
            .map_err(|_| OsError(StatusCode::BAD_REQUEST, format!("Invalid expires_at {e:?}")))?,
        ),
        None => None,
    };
    let (rec, secret) = node
        .control
        .create_app_credential(
            &t,
            CreateAppCredential {
                name: s("name").unwrap_or_default(),
                description: s("description").unwrap_or_default(),
                secret: s("secret"),
                roles,
                expires_at,
                unrestricted: c
                    .get("unrestricted")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"application_credential": cred_json(&rec, Some(&secret))})),
    )
        .into_response())
}

async fn delete(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((user, id)): UrlPath<(String, String)>,
) -> Result<Response, OsError> {
    own(&node, &headers, &user)?;
    node.control.delete_app_credential(&user, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
