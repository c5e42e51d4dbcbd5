//! Nova's interface attachments (`/servers/{id}/os-interface`, 2.1 shapes): a port joins
//! a server as its next NIC (hot-plugged into a running guest), given by id or made on a
//! network; detaching deletes a port made for the server and unbinds one given by id.

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
use super::servers::{bad, find, who};
use super::Api;
use super::OsError;
use crate::control::interfaces::Attach;
use crate::control::ports::PortView;
use crate::control::ControlError;

pub fn routes() -> Router<Arc<Api>> {
    let p = |s: &str| format!("/compute/v2.1/{s}");
    Router::new()
        .route(&p("servers/{id}/os-interface"), get(list).post(attach))
        .route(
            &p("servers/{id}/os-interface/{port}"),
            get(show).delete(detach),
        )
}

type R = Result<Response, Response>;

fn attachment_json(p: &PortView) -> Value {
    let ips: Vec<Value> = p
        .record
        .fixed_ips
        .iter()
        .map(|f| json!({"subnet_id": f.subnet, "ip_address": f.ip}))
        .collect();
    json!({
        "port_state": p.status,
        "fixed_ips": ips,
        "port_id": p.record.id,
        "net_id": p.record.network,
        "mac_addr": p.record.mac,
    })
}

async fn list(State(node): State<Arc<Api>>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> R {
    let s = who(&node, &headers)?;
    find(&node, &s, &id)?;
    let ports = node.control.vm_ports(&s.caller, &id).map_err(cerr)?;
    let list: Vec<Value> = ports.iter().map(attachment_json).collect();
    Ok(Json(json!({"interfaceAttachments": list})).into_response())
}

async fn show(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((id, port)): UrlPath<(String, String)>,
) -> R {
    let s = who(&node, &headers)?;
    find(&node, &s, &id)?;
    let ports = node.control.vm_ports(&s.caller, &id).map_err(cerr)?;
    let p = ports.iter().find(|p| p.record.id == port).ok_or_else(|| {
        nova(
            StatusCode::NOT_FOUND,
            format!("Port {port} is not attached"),
        )
    })?;
    Ok(Json(json!({"interfaceAttachment": attachment_json(p)})).into_response())
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
    let body: Value =
        serde_json::from_slice(&b).map_err(|e| bad(format!("Malformed request body: {e}")))?;
    let a = body
        .get("interfaceAttachment")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            bad("Invalid input for field/attribute interfaceAttachment: 'interfaceAttachment' is a required property")
        })?;
    if let Some(k) = a
        .keys()
        .find(|k| !matches!(k.as_str(), "port_id" | "net_id" | "fixed_ips" | "tag"))
    {
        return Err(bad(format!(
            "Additional properties are not allowed ('{k}' was unexpected)"
        )));
    }
    let text = |k: &str| -> Result<Option<String>, Response> {
        match a.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.clone())),
            Some(other) => Err(bad(format!(
                "Invalid input for field/attribute {k}. Value: {other}. {other} is not of type 'string'"
            ))),
        }
    };
    let fixed_ip = match a.get("fixed_ips") {
        None | Some(Value::Null) => None,
        Some(Value::Array(v)) if v.len() == 1 => Some(
            v[0].get("ip_address")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    bad("Invalid input for field/attribute fixed_ips: each needs an ip_address")
                })?
                .to_string(),
        ),
        Some(_) => {
            return Err(bad(
                "Invalid input for field/attribute fixed_ips: one fixed IP can be given",
            ))
        }
    };
    let what = match (text("port_id")?, text("net_id")?) {
        (Some(_), Some(_)) => {
            return Err(bad("Must not input both network_id and port_id"));
        }
        (Some(p), None) => {
            if fixed_ip.is_some() {
                return Err(bad("fixed_ips go with net_id, not port_id"));
            }
            Attach::Port(p)
        }
        (None, Some(n)) => Attach::Network {
            network: n,
            fixed_ip,
        },
        (None, None) => return Err(bad(
            "Attaching an interface needs a port_id or a net_id (Strata does not pick a network)",
        )),
    };
    let p = node
        .control
        .attach_vm_port(&s.caller, &id, what)
        .await
        .map_err(|e| match e {
            ControlError::NotFound(m) => nova(StatusCode::NOT_FOUND, m),
            e => cerr(e),
        })?;
    Ok(Json(json!({"interfaceAttachment": attachment_json(&p)})).into_response())
}

async fn detach(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((id, port)): UrlPath<(String, String)>,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(|OsError(c, m)| nova(c, m))?;
    find(&node, &s, &id)?;
    node.control
        .detach_vm_port(&s.caller, &id, &port)
        .await
        .map_err(cerr)?;
    Ok(StatusCode::ACCEPTED.into_response())
}
