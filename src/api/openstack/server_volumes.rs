//! Nova's volume attachments (`/servers/{id}/os-volume_attachments`, 2.1 shapes): a
//! volume becomes the server's next virtio disk (vdb, vdc, ...), hot-plugged into a
//! running guest; the boot volume of a server booted from a volume is its vda.

// Handlers return `Result<Response, Response>` as axum handlers do.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::compute::{cerr, nova};
use super::Api;
use super::OsError;
use crate::control::vms::VmView;
use crate::control::ControlError;

pub fn routes() -> Router<Arc<Api>> {
    let p = |s: &str| format!("/compute/v2.1/{s}");
    Router::new()
        .route(
            &p("servers/{id}/os-volume_attachments"),
            get(list).post(attach),
        )
        .route(
            &p("servers/{id}/os-volume_attachments/{volume}"),
            get(show).delete(detach),
        )
}

type R = Result<Response, Response>;

use super::servers::{find, who};

/// The device name of the `i`-th disk (0: vda).
pub fn device(i: usize) -> String {
    let mut n = i;
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    s.reverse();
    format!("/dev/vd{}", String::from_utf8_lossy(&s))
}

/// (volume id, device) of every volume a server has, boot volume first.
pub fn attachments(v: &VmView) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let (Some(vol), None) = (&v.record.volume, &v.record.image) {
        out.push((vol.0.clone(), device(0)));
    }
    for (i, d) in v.record.data_volumes.iter().enumerate() {
        out.push((d.0.clone(), device(i + 1)));
    }
    out
}

fn attachment_json(server: &str, vol: &str, dev: &str) -> Value {
    json!({"id": vol, "serverId": server, "volumeId": vol, "device": dev})
}

async fn list(State(node): State<Arc<Api>>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> R {
    let s = who(&node, &headers)?;
    let v = find(&node, &s, &id)?;
    let list: Vec<Value> = attachments(&v)
        .iter()
        .map(|(vol, dev)| attachment_json(&id, vol, dev))
        .collect();
    Ok(Json(json!({"volumeAttachments": list})).into_response())
}

async fn show(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((id, volume)): UrlPath<(String, String)>,
) -> R {
    let s = who(&node, &headers)?;
    let v = find(&node, &s, &id)?;
    let (vol, dev) = attachments(&v)
        .into_iter()
        .find(|(vol, _)| *vol == volume)
        .ok_or_else(|| {
            nova(
                StatusCode::NOT_FOUND,
                format!("volume_id not found: {volume}"),
            )
        })?;
    Ok(Json(json!({"volumeAttachment": attachment_json(&id, &vol, &dev)})).into_response())
}

async fn attach(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(|OsError(c, m)| nova(c, m))?;
    find(&node, &s, &id)?;
    let body: Value = serde_json::from_slice(&b).map_err(|e| {
        nova(
            StatusCode::BAD_REQUEST,
            format!("Malformed request body: {e}"),
        )
    })?;
    let a = body
        .get("volumeAttachment")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            nova(
                StatusCode::BAD_REQUEST,
                "Invalid input for field/attribute volumeAttachment: 'volumeAttachment' is a required property",
            )
        })?;
    if let Some(k) = a
        .keys()
        .find(|k| !matches!(k.as_str(), "volumeId" | "device"))
    {
        return Err(nova(
            StatusCode::BAD_REQUEST,
            format!("Additional properties are not allowed ('{k}' was unexpected)"),
        ));
    }
    let vol = a.get("volumeId").and_then(Value::as_str).ok_or_else(|| {
        nova(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute volumeId: 'volumeId' is a required property",
        )
    })?;
    match node.control.find_volume(&s.caller, vol) {
        Ok(v) if v.value.id.0 == vol && s.sees(v.value.project.as_deref()) => {}
        _ => {
            return Err(nova(
                StatusCode::NOT_FOUND,
                format!("Volume {vol} could not be found."),
            ))
        }
    }
    let (_, n) = node
        .control
        .attach_vm_volume(&s.caller, &id, vol)
        .await
        .map_err(|e| match e {
            ControlError::Conflict(m) => nova(StatusCode::BAD_REQUEST, m),
            e => cerr(e),
        })?;
    Ok(Json(json!({"volumeAttachment": attachment_json(&id, vol, &device(n))})).into_response())
}

async fn detach(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((id, volume)): UrlPath<(String, String)>,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(|OsError(c, m)| nova(c, m))?;
    let v = find(&node, &s, &id)?;
    if v.record.volume.as_ref().is_some_and(|b| b.0 == volume) {
        return Err(nova(
            StatusCode::BAD_REQUEST,
            "Cannot detach a root device volume",
        ));
    }
    node.control
        .detach_vm_volume(&id, &volume)
        .await
        .map_err(cerr)?;
    Ok(StatusCode::ACCEPTED.into_response())
}
