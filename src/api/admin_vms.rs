//! Admin API routes for VMs and flavors (`strata vm ...`, `strata flavor list`).

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::admin::ApiError;
use crate::control::vms::{CreateVm, VmAction, VmView};
use crate::control::ControlError;
use crate::daemon::Node;

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/flavors", get(flavors))
        .route("/v1/vms", get(list).post(create))
        .route("/v1/vms/{id}", get(show).delete(delete))
        .route("/v1/vms/{id}/action", post(action))
        .route("/v1/vms/{id}/gone", get(gone))
        .route("/v1/vms/{id}/console", get(console).post(console_input))
        .route("/v1/debug/placement/{id}", get(placement))
}

async fn flavors(State(node): State<Arc<Node>>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!(node.control.flavors()?)))
}

async fn list(State(node): State<Arc<Node>>) -> Result<Json<Vec<VmView>>, ApiError> {
    Ok(Json(node.control.vms()?))
}

async fn create(
    State(node): State<Arc<Node>>,
    Json(req): Json<CreateVm>,
) -> Result<Json<VmView>, ApiError> {
    Ok(Json(
        node.control
            .create_vm(&crate::api::admin::local(), req)
            .await?,
    ))
}

async fn show(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<VmView>, ApiError> {
    match node.control.vm(&id) {
        // This node may not have applied a create made through another node yet.
        Err(ControlError::NotFound(_)) if node.control.store.linearizable().await.is_ok() => {
            Ok(Json(node.control.vm(&id)?))
        }
        r => Ok(Json(r?)),
    }
}

async fn delete(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rec = node.control.delete_vm(&id).await?;
    Ok(Json(
        json!({"deleted": rec.id, "name": rec.name, "node": rec.node}),
    ))
}

async fn gone(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!({ "gone": node.control.vm_gone(&id)? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionReq {
    action: VmAction,
}

async fn action(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<ActionReq>,
) -> Result<Json<VmView>, ApiError> {
    Ok(Json(node.control.vm_action(&id, req.action).await?))
}

#[derive(Deserialize)]
struct ConsoleQuery {
    bytes: Option<u64>,
    offset: Option<u64>,
}

async fn console(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ConsoleQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (data, offset) = node
        .control
        .vm_console(&id, q.bytes.unwrap_or(64 << 10), q.offset)
        .await?;
    Ok(Json(json!({
        "data": base64::engine::general_purpose::STANDARD.encode(&data),
        "offset": offset,
    })))
}

#[derive(Deserialize)]
struct ConsoleInput {
    /// Base64 of the bytes to type.
    data: String,
}

/// Types into the VM's serial console (on the node that runs it).
async fn console_input(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    Json(b): Json<ConsoleInput>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let data = base64::engine::general_purpose::STANDARD
        .decode(b.data.as_bytes())
        .map_err(|e| {
            crate::control::ControlError::Invalid(format!("console input is not base64: {e}"))
        })?;
    node.control.vm_console_write(&id, &data).await?;
    Ok(Json(json!({"typed": data.len()})))
}

async fn placement(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rec = node.control.find_vm(&id)?.value;
    Ok(Json(json!({
        "vm": rec.id,
        "name": rec.name,
        "node": rec.node,
        "vcpus": rec.vcpus,
        "ram_mb": rec.ram_mb,
        "anti_affinity_group": rec.anti_affinity_group,
        "placement": rec.placement,
    })))
}
