//! Admin API routes for volumes (`strata volume ...`).

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::admin::ApiError;
use crate::control::volumes::{CreateVolume, VolumeView};
use crate::daemon::Node;

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/volumes", get(list).post(create))
        .route("/v1/volumes/{id}", get(show).delete(delete))
}

async fn list(State(node): State<Arc<Node>>) -> Result<Json<Vec<VolumeView>>, ApiError> {
    Ok(Json(node.control.volumes()?))
}

async fn create(
    State(node): State<Arc<Node>>,
    Json(req): Json<CreateVolume>,
) -> Result<Json<VolumeView>, ApiError> {
    Ok(Json(node.control.create_volume(req).await?))
}

async fn show(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<VolumeView>, ApiError> {
    Ok(Json(node.control.volume(&id)?))
}

async fn delete(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rec = node.control.delete_volume(&id).await?;
    Ok(Json(json!({"deleted": rec.id, "name": rec.name})))
}
