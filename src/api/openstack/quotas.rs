//! Quota sets as Nova (`/compute/v2.1/os-quota-sets/{project}`), Cinder
//! (`/volume/v3/{p}/os-quota-sets/{project}`) and Neutron (`/networking/v2.0/quotas/{project}`)
//! show and set them, over one set of per-project limits in `control::quotas`. Members
//! read their own project's; admins read and set any.

// Handlers return `Result<Response, Response>` as axum handlers do.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::Api;
use super::{authenticate, OsError, Scope};

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route(
            "/compute/v2.1/os-quota-sets/{project}",
            get(nova_show).put(nova_set),
        )
        .route(
            "/compute/v2.1/os-quota-sets/{project}/defaults",
            get(nova_defaults),
        )
        .route(
            "/compute/v2.1/os-quota-sets/{project}/detail",
            get(nova_detail),
        )
        .route(
            "/volume/v3/{project}/os-quota-sets/{target}",
            get(cinder_show).put(cinder_set),
        )
        .route(
            "/volume/v3/{project}/os-quota-sets/{target}/defaults",
            get(cinder_defaults),
        )
        .route(
            "/networking/v2.0/quotas/{project}",
            get(neutron_show).put(neutron_set),
        )
        .route(
            "/networking/v2.0/quotas/{project}/details.json",
            get(neutron_detail),
        )
        .route(
            "/networking/v2.0/quotas/{project}/default",
            get(neutron_defaults),
        )
}

type R = Result<Response, Response>;

/// Each service's names for the shared resources: (API name, Strata's name).
const NOVA: &[(&str, &str)] = &[
    ("instances", "instances"),
    ("cores", "cores"),
    ("ram", "ram"),
    ("key_pairs", "key_pairs"),
    ("metadata_items", "metadata_items"),
    ("server_groups", "server_groups"),
    ("server_group_members", "server_group_members"),
];
/// Nova's fixed values for limits it keeps but Strata does not use (2.1 shape).
const NOVA_FIXED: &[(&str, i64)] = &[
    ("injected_files", 5),
    ("injected_file_content_bytes", 10240),
    ("injected_file_path_bytes", 255),
    ("fixed_ips", -1),
    ("floating_ips", -1),
    ("security_groups", -1),
    ("security_group_rules", -1),
];
const CINDER: &[(&str, &str)] = &[
    ("volumes", "volumes"),
    ("gigabytes", "gigabytes"),
    ("snapshots", "snapshots"),
];
const CINDER_FIXED: &[(&str, i64)] = &[
    ("per_volume_gigabytes", -1),
    ("backups", 0),
    ("backup_gigabytes", 0),
    ("groups", 0),
];
const NEUTRON: &[(&str, &str)] = &[
    ("network", "network"),
    ("subnet", "subnet"),
    ("port", "port"),
    ("router", "router"),
    ("floatingip", "floatingip"),
    ("security_group", "security_group"),
    ("security_group_rule", "security_group_rule"),
];

fn err(code: StatusCode, m: impl Into<String>) -> Response {
    OsError(code, m.into()).into_response()
}

/// The caller may read `project`'s quotas: its own, or any as admin.
fn reader(node: &Api, headers: &HeaderMap, project: &str) -> Result<Scope, Response> {
    let t = authenticate(node, headers).map_err(IntoResponse::into_response)?;
    let s = Scope::of(&t).map_err(IntoResponse::into_response)?;
    if !s.admin && s.project != project {
        return Err(err(
            StatusCode::FORBIDDEN,
            format!("Policy doesn't allow reading the quotas of project {project}."),
        ));
    }
    Ok(s)
}

fn admin(node: &Api, headers: &HeaderMap) -> Result<Scope, Response> {
    let t = authenticate(node, headers).map_err(IntoResponse::into_response)?;
    super::require_admin(&t).map_err(IntoResponse::into_response)?;
    Scope::of(&t).map_err(IntoResponse::into_response)
}

fn limits(node: &Api, project: &str) -> Result<BTreeMap<String, i64>, Response> {
    node.control
        .quota_limits(project)
        .map_err(|e| OsError::from(e).into_response())
}

fn view(
    names: &[(&str, &str)],
    fixed: &[(&str, i64)],
    l: &BTreeMap<String, i64>,
) -> Map<String, Value> {
    let mut m = Map::new();
    for (api, ours) in names {
        m.insert(api.to_string(), json!(l.get(*ours).copied().unwrap_or(-1)));
    }
    for (k, v) in fixed {
        m.insert(k.to_string(), json!(v));
    }
    m
}

fn detail(
    node: &Api,
    project: &str,
    names: &[(&str, &str)],
    used_key: &str,
) -> Result<Map<String, Value>, Response> {
    let l = limits(node, project)?;
    let u = node
        .control
        .quota_usage(project)
        .map_err(|e| OsError::from(e).into_response())?;
    let mut m = Map::new();
    for (api, ours) in names {
        m.insert(
            api.to_string(),
            json!({"limit": l.get(*ours).copied().unwrap_or(-1),
                   used_key: u.get(*ours).copied().unwrap_or(0), "reserved": 0}),
        );
    }
    Ok(m)
}

/// The limits to set from a request body: `{key: {name: n}}` in the service's names.
fn wanted(
    b: &[u8],
    key: &str,
    names: &[(&str, &str)],
    fixed: &[(&str, i64)],
) -> Result<BTreeMap<String, i64>, Response> {
    let v: Value = serde_json::from_slice(b).map_err(|e| {
        err(
            StatusCode::BAD_REQUEST,
            format!("Malformed request body: {e}"),
        )
    })?;
    let o = v.get(key).and_then(Value::as_object).ok_or_else(|| {
        err(
            StatusCode::BAD_REQUEST,
            format!("Invalid input: '{key}' is a required property"),
        )
    })?;
    let mut out = BTreeMap::new();
    for (k, val) in o {
        if matches!(
            k.as_str(),
            "force" | "check_limit" | "tenant_id" | "project_id"
        ) {
            continue;
        }
        let n = val
            .as_i64()
            .or_else(|| val.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| {
                err(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid input for field/attribute {k}. Value: {val}. {val} is not of type 'integer'"),
                )
            })?;
        match names.iter().find(|(api, _)| api == k) {
            Some((_, ours)) => {
                out.insert(ours.to_string(), n);
            }
            None if fixed.iter().any(|(f, _)| f == k) => {}
            None => {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    format!("Bad key(s) {k} in quota_set"),
                ))
            }
        }
    }
    Ok(out)
}

/// Sets a project's limits from one service's body and answers with its view of them.
async fn set(
    node: &Api,
    headers: &HeaderMap,
    project: &str,
    b: &[u8],
    key: &str,
    names: &[(&str, &str)],
    fixed: &[(&str, i64)],
) -> R {
    admin(node, headers)?;
    let want = wanted(b, key, names, fixed)?;
    let l = node
        .control
        .set_quotas(project, &want)
        .await
        .map_err(|e| OsError::from(e).into_response())?;
    Ok(Json(json!({key: view(names, fixed, &l)})).into_response())
}

async fn nova_show(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
) -> R {
    reader(&node, &headers, &project)?;
    let mut m = view(NOVA, NOVA_FIXED, &limits(&node, &project)?);
    m.insert("id".into(), json!(project));
    Ok(Json(json!({"quota_set": m})).into_response())
}

async fn nova_defaults(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
) -> R {
    reader(&node, &headers, &project)?;
    let d: BTreeMap<String, i64> = crate::control::quotas::DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let mut m = view(NOVA, NOVA_FIXED, &d);
    m.insert("id".into(), json!(project));
    Ok(Json(json!({"quota_set": m})).into_response())
}

async fn nova_detail(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
) -> R {
    reader(&node, &headers, &project)?;
    let mut m = detail(&node, &project, NOVA, "in_use")?;
    m.insert("id".into(), json!(project));
    Ok(Json(json!({"quota_set": m})).into_response())
}

async fn nova_set(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    set(&node, &headers, &project, &b, "quota_set", NOVA, NOVA_FIXED).await
}

async fn cinder_show(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((_p, project)): UrlPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> R {
    reader(&node, &headers, &project)?;
    let usage = q
        .get("usage")
        .is_some_and(|u| u.eq_ignore_ascii_case("true"));
    let mut m = if usage {
        detail(&node, &project, CINDER, "in_use")?
    } else {
        view(CINDER, CINDER_FIXED, &limits(&node, &project)?)
    };
    m.insert("id".into(), json!(project));
    Ok(Json(json!({"quota_set": m})).into_response())
}

async fn cinder_defaults(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((_p, project)): UrlPath<(String, String)>,
) -> R {
    reader(&node, &headers, &project)?;
    let d: BTreeMap<String, i64> = crate::control::quotas::DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let mut m = view(CINDER, CINDER_FIXED, &d);
    m.insert("id".into(), json!(project));
    Ok(Json(json!({"quota_set": m})).into_response())
}

async fn cinder_set(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((_p, project)): UrlPath<(String, String)>,
    b: axum::body::Bytes,
) -> R {
    set(
        &node,
        &headers,
        &project,
        &b,
        "quota_set",
        CINDER,
        CINDER_FIXED,
    )
    .await
}

async fn neutron_show(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
) -> R {
    reader(&node, &headers, &project)?;
    Ok(Json(json!({"quota": view(NEUTRON, &[], &limits(&node, &project)?)})).into_response())
}

async fn neutron_defaults(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
) -> R {
    reader(&node, &headers, &project)?;
    let d: BTreeMap<String, i64> = crate::control::quotas::DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    Ok(Json(json!({"quota": view(NEUTRON, &[], &d)})).into_response())
}

async fn neutron_detail(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
) -> R {
    reader(&node, &headers, &project)?;
    Ok(Json(json!({"quota": detail(&node, &project, NEUTRON, "used")?})).into_response())
}

async fn neutron_set(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    set(&node, &headers, &project, &b, "quota", NEUTRON, &[]).await
}
