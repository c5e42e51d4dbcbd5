//! Nova server groups (`/compute/v2.1/os-server-groups`, 2.1 shapes: `policies` list,
//! members, metadata): a group's policy is honoured by placement for the servers created
//! with the `group` scheduler hint.

// Handlers return `Result<Response, Response>` as axum handlers do.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::compute::{cerr, nova};
use super::Api;
use super::{OsError, Scope};
use crate::cluster::store::compute_tables::ServerGroupRecord;
use crate::control::ControlError;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/compute/v2.1/os-server-groups", get(list).post(create))
        .route(
            "/compute/v2.1/os-server-groups/{id}",
            get(show).delete(delete),
        )
}

type R = Result<Response, Response>;

use super::servers::who;

fn group_json(node: &Api, g: &ServerGroupRecord) -> Value {
    let members = node.control.server_group_members(&g.id).unwrap_or_default();
    json!({"id": g.id, "name": g.name, "policies": [g.policy], "members": members, "metadata": {}})
}

/// A group the caller may see, by id.
pub fn find(node: &Api, s: &Scope, id: &str) -> Result<ServerGroupRecord, Response> {
    match node.control.server_group(id) {
        Ok(g) if s.sees(Some(g.project.as_str())) => Ok(g),
        Ok(_) | Err(ControlError::NotFound(_)) => Err(nova(
            StatusCode::NOT_FOUND,
            format!("Instance group {id} could not be found."),
        )),
        Err(e) => Err(cerr(e)),
    }
}

async fn list(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> R {
    let s = who(&node, &headers)?;
    let all = s.admin
        && q.iter()
            .any(|(k, v)| k == "all_projects" && v != "False" && v != "0");
    let list: Vec<Value> = node
        .control
        .server_groups()
        .map_err(cerr)?
        .iter()
        .filter(|g| all || g.project == s.project)
        .map(|g| group_json(&node, g))
        .collect();
    Ok(Json(json!({"server_groups": list})).into_response())
}

async fn show(State(node): State<Arc<Api>>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> R {
    let s = who(&node, &headers)?;
    let g = find(&node, &s, &id)?;
    Ok(Json(json!({"server_group": group_json(&node, &g)})).into_response())
}

async fn create(State(node): State<Arc<Api>>, headers: HeaderMap, b: axum::body::Bytes) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(|OsError(c, m)| nova(c, m))?;
    let v: Value = serde_json::from_slice(&b).map_err(|e| {
        nova(
            StatusCode::BAD_REQUEST,
            format!("Malformed request body: {e}"),
        )
    })?;
    let g = v
        .get("server_group")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            nova(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute server_group: 'server_group' is a required property",
        )
        })?;
    if let Some(k) = g
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "policies"))
    {
        return Err(nova(
            StatusCode::BAD_REQUEST,
            format!("Additional properties are not allowed ('{k}' was unexpected)"),
        ));
    }
    let name = g.get("name").and_then(Value::as_str).ok_or_else(|| {
        nova(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute name: 'name' is a required property",
        )
    })?;
    let policies: Vec<&str> = g
        .get("policies")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if policies.len() != 1 {
        return Err(nova(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute policies: exactly one policy is required",
        ));
    }
    let rec = node
        .control
        .create_server_group(name, policies[0], &s.project, &s.user)
        .await
        .map_err(cerr)?;
    Ok(Json(json!({"server_group": group_json(&node, &rec)})).into_response())
}

async fn delete(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(|OsError(c, m)| nova(c, m))?;
    find(&node, &s, &id)?;
    node.control.delete_server_group(&id).await.map_err(cerr)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
