//! Nova server metadata (`/servers/{id}/metadata`, 2.1): show, merge (POST), replace
//! (PUT), and single items (GET, PUT, DELETE).

// Handlers return `Result<Response, Response>` as axum handlers do.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::compute::{cerr, nova};
use super::servers::{bad, find, os, who};
use super::Api;
use crate::control::ControlError;

type R = Result<Response, Response>;

pub fn routes() -> Router<Arc<Api>> {
    let p = |s: &str| format!("/compute/v2.1/{s}");
    Router::new()
        .route(
            &p("servers/{id}/metadata"),
            get(metadata).post(merge_metadata).put(replace_metadata),
        )
        .route(
            &p("servers/{id}/metadata/{key}"),
            get(metadata_item)
                .put(set_metadata_item)
                .delete(delete_metadata_item),
        )
}

async fn metadata(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    let v = find(&node, &s, &id)?;
    Ok(Json(json!({"metadata": v.record.metadata})).into_response())
}

fn meta_body(b: &[u8], key: &str) -> Result<BTreeMap<String, String>, Response> {
    let v: Value =
        serde_json::from_slice(b).map_err(|e| bad(format!("Malformed request body: {e}")))?;
    let m = v
        .get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| bad(format!("Invalid input: '{key}' is a required property")))?;
    m.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .ok_or_else(|| {
                    bad(format!(
                        "Invalid input for field/attribute {k}: {v} is not of type 'string'"
                    ))
                })
        })
        .collect()
}

async fn edit_metadata(
    node: &Api,
    headers: &HeaderMap,
    id: &str,
    edit: impl Fn(&mut BTreeMap<String, String>) -> Result<(), ControlError>,
) -> Result<BTreeMap<String, String>, Response> {
    let s = who(node, headers)?;
    s.write().map_err(os)?;
    find(node, &s, id)?;
    node.control.edit_vm_metadata(id, edit).await.map_err(cerr)
}

async fn merge_metadata(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    let add = meta_body(&b, "metadata")?;
    let m = edit_metadata(&node, &headers, &id, |m| {
        m.extend(add.clone());
        Ok(())
    })
    .await?;
    Ok(Json(json!({"metadata": m})).into_response())
}

async fn replace_metadata(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    let new = meta_body(&b, "metadata")?;
    let m = edit_metadata(&node, &headers, &id, |m| {
        *m = new.clone();
        Ok(())
    })
    .await?;
    Ok(Json(json!({"metadata": m})).into_response())
}

async fn metadata_item(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((id, key)): UrlPath<(String, String)>,
) -> R {
    let s = who(&node, &headers)?;
    let v = find(&node, &s, &id)?;
    let val = v
        .record
        .metadata
        .get(&key)
        .ok_or_else(|| nova(StatusCode::NOT_FOUND, "Metadata item was not found"))?;
    Ok(Json(json!({"meta": {key: val}})).into_response())
}

async fn set_metadata_item(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((id, key)): UrlPath<(String, String)>,
    b: axum::body::Bytes,
) -> R {
    let item = meta_body(&b, "meta")?;
    if item.len() != 1 || !item.contains_key(&key) {
        return Err(bad("Request body and URI mismatch"));
    }
    edit_metadata(&node, &headers, &id, |m| {
        m.extend(item.clone());
        Ok(())
    })
    .await?;
    Ok(Json(json!({"meta": item})).into_response())
}

async fn delete_metadata_item(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((id, key)): UrlPath<(String, String)>,
) -> R {
    edit_metadata(&node, &headers, &id, |m| {
        m.remove(&key)
            .map(|_| ())
            .ok_or_else(|| ControlError::NotFound("Metadata item was not found".into()))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
