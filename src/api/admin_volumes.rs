//! Admin API routes for volumes (`strata volume ...`).

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::admin::ApiError;
use crate::cluster::store::storage_tables::SnapshotRecord;
use crate::control::volumes::{CreateVolume, VolumeView};
use crate::control::ControlError;
use crate::daemon::Node;

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/volumes", get(list).post(create))
        .route("/v1/volumes/{id}", get(show).delete(delete))
        .route("/v1/volumes/{id}/export", post(export))
        .route("/v1/volumes/{id}/detach", post(detach))
        .route("/v1/volumes/{id}/grow", post(grow))
        .route("/v1/volumes/{id}/snapshots", post(snapshot))
        .route(
            "/v1/volumes/{id}/snapshots/{snapshot}",
            axum::routing::delete(delete_snapshot),
        )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    name: String,
}

/// Takes a snapshot; answers once every replica holds it.
async fn snapshot(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<Snapshot>,
) -> Result<Json<SnapshotRecord>, ApiError> {
    Ok(Json(node.control.snapshot_volume(&id, &req.name).await?))
}

async fn delete_snapshot(
    State(node): State<Arc<Node>>,
    UrlPath((id, snapshot)): UrlPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    node.control.delete_snapshot(&id, &snapshot).await?;
    Ok(Json(json!({"deleted": snapshot, "volume": id})))
}

/// Attaches the volume to this node (a new generation: any previous writer is fenced)
/// and answers once its NBD export is ready.
async fn export(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rec = node.control.attach_volume(&id, node.control.node).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while node.attachments.get(&rec.id).is_none() {
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "volume {} is attached to this node but its replicas did not answer within 20 s",
                    rec.name
                ),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let socket = node.datadir.nbd_socket();
    Ok(Json(json!({
        "id": rec.id,
        "name": rec.name,
        "generation": rec.generation,
        "nbd": format!("nbd+unix:///{}?socket={}", rec.id, socket.display()),
        "socket": socket,
        "export": rec.id,
    })))
}

async fn detach(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<VolumeView>, ApiError> {
    let rec = node.control.detach_volume(&id, None).await?;
    Ok(Json(
        node.control
            .volume(&crate::api::admin::local(), &rec.id.0)?,
    ))
}

async fn list(State(node): State<Arc<Node>>) -> Result<Json<Vec<VolumeView>>, ApiError> {
    Ok(Json(node.control.volumes()?))
}

async fn create(
    State(node): State<Arc<Node>>,
    Json(req): Json<CreateVolume>,
) -> Result<Json<VolumeView>, ApiError> {
    Ok(Json(
        node.control
            .create_volume(&crate::api::admin::local(), req)
            .await?,
    ))
}

async fn show(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<VolumeView>, ApiError> {
    match node.control.volume(&crate::api::admin::local(), &id) {
        // This node may not have applied a create made through another node yet.
        Err(ControlError::NotFound(_)) if node.control.store.linearizable().await.is_ok() => {
            Ok(Json(node.control.volume(&crate::api::admin::local(), &id)?))
        }
        r => Ok(Json(r?)),
    }
}

async fn delete(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rec = node
        .control
        .delete_volume(&crate::api::admin::local(), &id)
        .await?;
    Ok(Json(json!({"deleted": rec.id, "name": rec.name})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Grow {
    size_bytes: u64,
}

async fn grow(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<Grow>,
) -> Result<Json<VolumeView>, ApiError> {
    let rec = node.control.grow_volume(&id, req.size_bytes).await?;
    Ok(Json(
        node.control
            .volume(&crate::api::admin::local(), &rec.id.0)?,
    ))
}
