//! Keystone v3 under `/identity`: version discovery, password tokens (issue, validate,
//! revoke), the service catalog, projects, users, roles and role assignments, and the
//! `default` domain.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Api;
use super::{authenticate, base_url, require_admin, OsError};
use crate::cluster::store::identity_tables::{ProjectRecord, UserRecord, DEFAULT_DOMAIN};
use crate::control::identity::{iso8601, TokenInfo, ROLES};

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/identity", get(versions))
        .route("/identity/", get(versions))
        .route("/identity/v3", get(version))
        .route("/identity/v3/", get(version))
        .route(
            "/identity/v3/auth/tokens",
            get(validate).head(check).post(issue).delete(revoke),
        )
        .route("/identity/v3/auth/catalog", get(catalog_only))
        .route("/identity/v3/auth/projects", get(my_projects))
        .route("/identity/v3/projects", get(projects).post(create_project))
        .route("/identity/v3/projects/{id}", get(project))
        .route("/identity/v3/users", get(users).post(create_user))
        .route("/identity/v3/users/{id}", get(user).patch(update_user))
        .route("/identity/v3/users/{id}/password", post(change_password))
        .route("/identity/v3/roles", get(roles))
        .route(
            "/identity/v3/projects/{project}/users/{user}/roles/{role}",
            put(assign_role).delete(unassign_role),
        )
        .route("/identity/v3/domains/default", get(domain))
        .route("/identity/v3/domains", get(domains))
        .merge(super::app_credentials::routes())
        // Sign-ins and identity changes are small: bodies up to 64 KiB.
        .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
}

fn version_doc(base: &str) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/identity/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    })
}

async fn versions(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": {"values": [version_doc(&base)]}})),
    )
        .into_response()
}

async fn version(headers: HeaderMap) -> Json<Value> {
    Json(json!({"version": version_doc(&base_url(&headers))}))
}

fn domain_json() -> Value {
    json!({"id": DEFAULT_DOMAIN, "name": "Default", "description": "The default domain", "enabled": true, "links": {}})
}

async fn domain(State(node): State<Arc<Api>>, headers: HeaderMap) -> Result<Json<Value>, OsError> {
    authenticate(&node, &headers)?;
    Ok(Json(json!({"domain": domain_json()})))
}

async fn domains(State(node): State<Arc<Api>>, headers: HeaderMap) -> Result<Json<Value>, OsError> {
    authenticate(&node, &headers)?;
    Ok(Json(
        json!({"domains": [domain_json()], "links": {"self": null, "next": null, "previous": null}}),
    ))
}

fn catalog(base: &str, project: &str) -> Value {
    let endpoint = |svc: &str, url: String| {
        json!({
            "id": format!("{svc}-public"),
            "interface": "public",
            "region_id": "RegionOne",
            "region": "RegionOne",
            "url": url,
        })
    };
    json!([
        {"type": "identity", "name": "keystone", "id": "identity",
         "endpoints": [endpoint("identity", format!("{base}/identity"))]},
        {"type": "compute", "name": "nova", "id": "compute",
         "endpoints": [endpoint("compute", format!("{base}/compute/v2.1"))]},
        {"type": "image", "name": "glance", "id": "image",
         "endpoints": [endpoint("image", format!("{base}/image"))]},
        {"type": "block-storage", "name": "cinder", "id": "block-storage",
         "endpoints": [endpoint("block-storage", format!("{base}/volume/v3/{project}"))]},
        {"type": "volumev3", "name": "cinderv3", "id": "volumev3",
         "endpoints": [endpoint("volumev3", format!("{base}/volume/v3/{project}"))]},
        {"type": "network", "name": "neutron", "id": "network",
         "endpoints": [endpoint("network", format!("{base}/networking"))]},
    ])
}

fn project_json(p: &ProjectRecord) -> Value {
    json!({
        "id": p.id, "name": p.name, "domain_id": p.domain_id, "description": p.description,
        "enabled": p.enabled, "is_domain": false, "parent_id": p.domain_id, "tags": [],
        "links": {},
    })
}

fn user_json(u: &UserRecord) -> Value {
    json!({
        "id": u.id, "name": u.name, "domain_id": u.domain_id, "enabled": u.enabled,
        "default_project_id": u.default_project_id, "password_expires_at": null, "options": {},
        "links": {},
    })
}

fn token_body(t: &TokenInfo, base: &str) -> Value {
    let mut token = json!({
        "methods": [if t.claims.app_cred.is_some() { "application_credential" } else { "password" }],
        "user": {
            "id": t.user.id, "name": t.user.name,
            "domain": {"id": DEFAULT_DOMAIN, "name": "Default"},
            "password_expires_at": null,
        },
        "audit_ids": [t.claims.audit_id],
        "expires_at": iso8601(t.claims.expires_at),
        "issued_at": iso8601(t.claims.issued_at),
    });
    if let Some(p) = &t.project {
        token["project"] = json!({"id": p.id, "name": p.name, "domain": {"id": DEFAULT_DOMAIN, "name": "Default"}});
        token["is_domain"] = json!(false);
        token["roles"] = json!(t
            .roles
            .iter()
            .map(|r| {
                let id = ROLES
                    .iter()
                    .find(|(_, n)| n == r)
                    .map(|(i, _)| *i)
                    .unwrap_or("");
                json!({"id": id, "name": r})
            })
            .collect::<Vec<_>>());
        token["catalog"] = catalog(base, &p.id);
        if let Some(c) = &t.claims.app_cred {
            token["application_credential"] = json!({"id": c, "restricted": true});
        }
    }
    json!({ "token": token })
}

#[derive(Deserialize)]
struct AuthRequest {
    auth: Auth,
}

#[derive(Deserialize)]
struct Auth {
    identity: Identity,
    #[serde(default)]
    scope: Option<Value>,
}

#[derive(Deserialize)]
struct Identity {
    methods: Vec<String>,
    #[serde(default)]
    password: Option<PasswordMethod>,
    #[serde(default)]
    application_credential: Option<super::app_credentials::AppCredentialMethod>,
}

#[derive(Deserialize)]
struct PasswordMethod {
    user: PasswordUser,
}

#[derive(Deserialize)]
struct PasswordUser {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<Value>,
    password: String,
}

fn bad(m: impl Into<String>) -> OsError {
    OsError(StatusCode::BAD_REQUEST, m.into())
}

async fn issue(
    State(node): State<Arc<Api>>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, OsError> {
    let source = ext
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let r = issue_for(&node, source, &headers, &body).await;
    if let Err(e) = &r {
        if e.0 == StatusCode::UNAUTHORIZED {
            // A failed sign-in: counted and kept in memory, never in the store.
            let why = if e.1.contains("locked") || e.1.contains("Too many failed") {
                crate::control::audit::Refusal::LockedOut
            } else {
                crate::control::audit::Refusal::FailedSignIn
            };
            let rec = crate::cluster::store::tables::AuditRecord {
                user: "(sign-in)".into(),
                action: "POST auth".into(),
                target: "/v3/auth/tokens".into(),
                source: source.map(|s| s.to_string()).unwrap_or_default(),
                via: "api".into(),
                error: Some(e.1.clone()),
                ..Default::default()
            };
            let locked = why == crate::control::audit::Refusal::LockedOut;
            node.control.refusals.note(rec, why);
            if locked {
                tokio::time::sleep(crate::control::passwords::LOCKED_OUT_WAIT).await;
            }
        }
    }
    r
}

async fn issue_for(
    node: &Api,
    source: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OsError> {
    let req: AuthRequest = serde_json::from_slice(body)
        .map_err(|e| bad(format!("Invalid authentication request: {e}")))?;
    let methods = &req.auth.identity.methods;
    if methods.iter().any(|m| m == "application_credential") {
        let m = req.auth.identity.application_credential.ok_or_else(|| {
            bad("The application_credential method needs an \"application_credential\" object.")
        })?;
        let (token, info) = super::app_credentials::authenticate_method(node, &m, source).await?;
        return Ok(token_response(&token, &info, headers));
    }
    if !methods.iter().any(|m| m == "password") {
        return Err(OsError(
            StatusCode::UNAUTHORIZED,
            "Only the password and application_credential methods are supported.".into(),
        ));
    }
    let pw = req
        .auth
        .identity
        .password
        .ok_or_else(|| bad("The password method needs a \"password\" object."))?;
    let user = pw
        .user
        .id
        .or(pw.user.name)
        .ok_or_else(|| bad("A user needs an id or a name."))?;
    let domain = pw
        .user
        .domain
        .as_ref()
        .and_then(|d| {
            d["id"].as_str().or(d["name"].as_str().map(|n| {
                if n.eq_ignore_ascii_case("default") {
                    DEFAULT_DOMAIN
                } else {
                    n
                }
            }))
        })
        .unwrap_or(DEFAULT_DOMAIN)
        .to_string();
    let project = req.auth.scope.as_ref().and_then(|s| {
        let p = &s["project"];
        p["id"].as_str().or(p["name"].as_str()).map(str::to_string)
    });
    let (token, info) = node
        .control
        .issue_token(
            &user,
            &domain,
            &pw.user.password,
            project.as_deref(),
            source,
        )
        .await?;
    Ok(token_response(&token, &info, headers))
}

/// 201 with the token body, the token itself in `X-Subject-Token`.
fn token_response(token: &str, info: &TokenInfo, headers: &HeaderMap) -> Response {
    let mut resp = (
        StatusCode::CREATED,
        Json(token_body(info, &base_url(headers))),
    )
        .into_response();
    if let Ok(v) = token.parse() {
        resp.headers_mut().insert("x-subject-token", v);
    }
    resp
}

fn subject(headers: &HeaderMap) -> Result<String, OsError> {
    headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| bad("X-Subject-Token is missing."))
}

/// Keystone's `identity:validate_token`/`check_token`: a user's own tokens, or any for an
/// administrator (services validate with an admin token).
fn may_see_token(me: &TokenInfo, target: &TokenInfo) -> Result<(), OsError> {
    if target.user.id != me.user.id {
        require_admin(me)?;
    }
    Ok(())
}

async fn validate(State(node): State<Arc<Api>>, headers: HeaderMap) -> Result<Response, OsError> {
    let me = authenticate(&node, &headers)?;
    let sub = subject(&headers)?;
    let info = node.control.validate_token(&sub).map_err(|e| match e {
        crate::control::ControlError::Unauthorized(m) => OsError(StatusCode::NOT_FOUND, m),
        e => e.into(),
    })?;
    may_see_token(&me, &info)?;
    let mut resp = Json(token_body(&info, &base_url(&headers))).into_response();
    if let Ok(v) = sub.parse() {
        resp.headers_mut().insert("x-subject-token", v);
    }
    Ok(resp)
}

async fn check(State(node): State<Arc<Api>>, headers: HeaderMap) -> Result<StatusCode, OsError> {
    let me = authenticate(&node, &headers)?;
    let sub = subject(&headers)?;
    match node.control.validate_token(&sub) {
        Ok(info) => may_see_token(&me, &info).map(|_| StatusCode::OK),
        Err(_) => Ok(StatusCode::NOT_FOUND),
    }
}

async fn revoke(State(node): State<Arc<Api>>, headers: HeaderMap) -> Result<StatusCode, OsError> {
    let me = authenticate(&node, &headers)?;
    let sub = subject(&headers)?;
    let target = node.control.validate_token(&sub).map_err(|e| match e {
        crate::control::ControlError::Unauthorized(m) => OsError(StatusCode::NOT_FOUND, m),
        e => e.into(),
    })?;
    // One's own tokens, or any with the admin role.
    may_see_token(&me, &target)?;
    node.control.revoke_token(&sub).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn catalog_only(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
) -> Result<Json<Value>, OsError> {
    let t = authenticate(&node, &headers)?;
    let project = t.project.map(|p| p.id).unwrap_or_default();
    Ok(Json(
        json!({"catalog": catalog(&base_url(&headers), &project), "links": {"self": null, "next": null, "previous": null}}),
    ))
}

async fn my_projects(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
) -> Result<Json<Value>, OsError> {
    let me = authenticate(&node, &headers)?;
    let mine: Vec<Value> = node
        .control
        .projects()?
        .iter()
        .filter(|p| {
            node.control
                .roles_of(&me.user.id, &p.id)
                .is_ok_and(|r| !r.is_empty())
        })
        .map(project_json)
        .collect();
    Ok(Json(
        json!({"projects": mine, "links": {"self": null, "next": null, "previous": null}}),
    ))
}

async fn projects(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
) -> Result<Json<Value>, OsError> {
    let me = authenticate(&node, &headers)?;
    let all = node.control.projects()?;
    let visible: Vec<Value> = all
        .iter()
        .filter(|p| {
            crate::control::users::is_cloud_admin(&me)
                || node
                    .control
                    .roles_of(&me.user.id, &p.id)
                    .is_ok_and(|r| !r.is_empty())
        })
        .map(project_json)
        .collect();
    Ok(Json(
        json!({"projects": visible, "links": {"self": null, "next": null, "previous": null}}),
    ))
}

async fn project(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, OsError> {
    let me = authenticate(&node, &headers)?;
    let p = node.control.find_project(&id)?;
    let allowed = crate::control::users::is_cloud_admin(&me)
        || node
            .control
            .roles_of(&me.user.id, &p.id)
            .is_ok_and(|r| !r.is_empty());
    if !allowed {
        // Keystone's answer for a project the caller has no role on.
        return Err(OsError(
            StatusCode::FORBIDDEN,
            "You are not authorized to perform the requested action: identity:get_project.".into(),
        ));
    }
    Ok(Json(json!({"project": project_json(&p)})))
}

async fn create_project(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, OsError> {
    require_admin(&authenticate(&node, &headers)?)?;
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("Invalid request: {e}")))?;
    let name = v["project"]["name"]
        .as_str()
        .ok_or_else(|| bad("project.name is required"))?;
    let description = v["project"]["description"].as_str().unwrap_or("");
    let p = node.control.create_project(name, description).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"project": project_json(&p)})),
    )
        .into_response())
}

async fn users(State(node): State<Arc<Api>>, headers: HeaderMap) -> Result<Json<Value>, OsError> {
    require_admin(&authenticate(&node, &headers)?)?;
    let all: Vec<Value> = node.control.users()?.iter().map(user_json).collect();
    Ok(Json(
        json!({"users": all, "links": {"self": null, "next": null, "previous": null}}),
    ))
}

async fn user(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, OsError> {
    let me = authenticate(&node, &headers)?;
    if me.user.id != id {
        require_admin(&me)?;
    }
    let u = node
        .control
        .users()?
        .into_iter()
        .find(|u| u.id == id || u.name == id)
        .ok_or_else(|| OsError(StatusCode::NOT_FOUND, format!("Could not find user: {id}.")))?;
    Ok(Json(json!({"user": user_json(&u)})))
}

async fn create_user(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, OsError> {
    require_admin(&authenticate(&node, &headers)?)?;
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("Invalid request: {e}")))?;
    let u = &v["user"];
    let name = u["name"]
        .as_str()
        .ok_or_else(|| bad("user.name is required"))?;
    let password = u["password"]
        .as_str()
        .ok_or_else(|| bad("user.password is required"))?;
    let rec = node
        .control
        .create_user(name, password, u["default_project_id"].as_str())
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"user": user_json(&rec)}))).into_response())
}

/// `PATCH /v3/users/{id}` (cloud administrators): name, enabled, password,
/// default_project_id. Disabling a user or setting a password ends their tokens.
async fn update_user(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, OsError> {
    require_admin(&authenticate(&node, &headers)?)?;
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("Invalid request: {e}")))?;
    let u = v
        .get("user")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("The request body needs a \"user\" object."))?;
    let mut up = crate::control::users::UserUpdate::default();
    for (k, val) in u {
        match (k.as_str(), val) {
            ("name", Value::String(s)) => up.name = Some(s.clone()),
            ("enabled", Value::Bool(b)) => up.enabled = Some(*b),
            ("password", Value::String(s)) => up.password = Some(s.clone()),
            ("default_project_id", Value::String(s)) => up.default_project = Some(Some(s.clone())),
            ("default_project_id", Value::Null) => up.default_project = Some(None),
            ("description" | "email" | "options" | "domain_id", _) => {}
            (k, _) => return Err(bad(format!("Invalid input for field '{k}'."))),
        }
    }
    let target = node
        .control
        .users()?
        .into_iter()
        .find(|u| u.id == id)
        .ok_or_else(|| OsError(StatusCode::NOT_FOUND, format!("Could not find user: {id}.")))?;
    let rec = node.control.update_user(&target.id, up).await?;
    Ok(Json(json!({"user": user_json(&rec)})))
}

/// `POST /v3/users/{id}/password`: a user changes their own password, giving the
/// current one (204); their tokens issued before end.
async fn change_password(
    State(node): State<Arc<Api>>,
    ext: axum::http::Extensions,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode, OsError> {
    let source = ext
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("Invalid request: {e}")))?;
    let u = &v["user"];
    let (Some(original), Some(new)) = (u["original_password"].as_str(), u["password"].as_str())
    else {
        return Err(bad("user.original_password and user.password are required"));
    };
    node.control
        .change_password(&id, original, new, source)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn roles(State(node): State<Arc<Api>>, headers: HeaderMap) -> Result<Json<Value>, OsError> {
    authenticate(&node, &headers)?;
    let r: Vec<Value> = ROLES
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name, "domain_id": null, "links": {}}))
        .collect();
    Ok(Json(
        json!({"roles": r, "links": {"self": null, "next": null, "previous": null}}),
    ))
}

/// A role named by its id or name.
fn role_name(role: &str) -> Result<&'static str, OsError> {
    ROLES
        .iter()
        .find(|(id, name)| *id == role || *name == role)
        .map(|(_, n)| *n)
        .ok_or_else(|| {
            OsError(
                StatusCode::NOT_FOUND,
                format!("Could not find role: {role}."),
            )
        })
}

async fn assign_role(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((project, user, role)): UrlPath<(String, String, String)>,
) -> Result<StatusCode, OsError> {
    require_admin(&authenticate(&node, &headers)?)?;
    node.control
        .assign_role(&project, &user, role_name(&role)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v3/projects/{p}/users/{u}/roles/{r}` (cloud administrators).
async fn unassign_role(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((project, user, role)): UrlPath<(String, String, String)>,
) -> Result<StatusCode, OsError> {
    require_admin(&authenticate(&node, &headers)?)?;
    node.control
        .unassign_role(&project, &user, role_name(&role)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
