//! Neutron routers (gateway, interfaces) and floating IPs.

// Handlers return `Result<Response, Response>` as axum handlers do.
#![allow(clippy::result_large_err)]

use crate::control::caller::Scoped;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{body, created, named, nerr, not_found, ok, time, who, Scope, R};
use crate::api::openstack::Api;
use crate::cluster::store::network_tables::{FloatingIpRecord, RouterRecord};
use crate::control::routers::{CreateFloatingIp, CreateRouter};
use crate::control::ControlError;

fn router_json(node: &Api, r: &RouterRecord) -> Value {
    let gw = r.gateway_port.as_ref().and_then(|g| {
        node.control
            .find_port(&crate::control::caller::Caller::system(), g)
            .ok()
    });
    json!({
        "id": r.id, "name": r.name, "tenant_id": r.project, "project_id": r.project,
        "admin_state_up": true, "status": "ACTIVE",
        "external_gateway_info": gw.map(|p| json!({
            "network_id": p.network, "enable_snat": true,
            "external_fixed_ips": p.fixed_ips.iter().map(|f| json!({"subnet_id": f.subnet, "ip_address": f.ip})).collect::<Vec<_>>(),
        })),
        "routes": [], "distributed": false, "ha": false, "availability_zones": ["nova"],
        "availability_zone_hints": [], "description": "", "tags": [],
        "created_at": time(r.created_at), "updated_at": time(r.created_at), "revision_number": 1,
    })
}

fn fip_json(f: &FloatingIpRecord) -> Value {
    json!({
        "id": f.id, "floating_ip_address": f.ip, "floating_network_id": f.network,
        "router_id": f.router, "port_id": f.port, "fixed_ip_address": f.fixed_ip,
        "status": if f.port.is_some() { "ACTIVE" } else { "DOWN" },
        "tenant_id": f.project, "project_id": f.project, "description": "", "tags": [],
        "port_details": null, "dns_domain": "", "dns_name": "",
        "created_at": time(f.created_at), "updated_at": time(f.created_at), "revision_number": 1,
    })
}

fn visible_routers(node: &Api, s: &Scope) -> Result<Vec<RouterRecord>, Response> {
    Ok(node
        .control
        .routers()
        .map_err(nerr)?
        .into_iter()
        .filter(|r| r.visible_to(&s.caller, &node.control))
        .collect())
}

fn router_of(node: &Api, s: &Scope, id: &str) -> Result<RouterRecord, Response> {
    visible_routers(node, s)?
        .into_iter()
        .find(|r| r.id == id || r.name == id)
        .ok_or_else(|| not_found("Router", id))
}

pub(super) async fn routers(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> R {
    let s = who(&node, &headers)?;
    let list = visible_routers(&node, &s)?
        .iter()
        .map(|r| router_json(&node, r))
        .collect();
    ok(json!({"routers": named(list, &q)}))
}

pub(super) async fn router(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    let r = router_of(&node, &s, &id)?;
    ok(json!({"router": router_json(&node, &r)}))
}

pub(super) async fn create_router(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    b: axum::body::Bytes,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let v = body(&b)?;
    let x = super::resource(&v, "router", super::ROUTER)?;
    let r = node
        .control
        .create_router(
            &s.caller,
            CreateRouter {
                name: x["name"].as_str().unwrap_or("").to_string(),
                project: Some(s.project.clone()),
                external_network: x["external_gateway_info"]["network_id"]
                    .as_str()
                    .map(str::to_string),
            },
        )
        .await
        .map_err(nerr)?;
    created(json!({"router": router_json(&node, &r)}))
}

pub(super) async fn update_router(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let r = router_of(&node, &s, &id)?;
    let v = body(&b)?;
    if let Some(gw) = v["router"].get("external_gateway_info") {
        let net = gw["network_id"].as_str();
        node.control
            .set_router_gateway(&s.caller, &r.id, net)
            .await
            .map_err(nerr)?;
    }
    let r = router_of(&node, &s, &r.id)?;
    ok(json!({"router": router_json(&node, &r)}))
}

pub(super) async fn delete_router(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let r = router_of(&node, &s, &id)?;
    node.control
        .delete_router(&s.caller, &r.id)
        .await
        .map_err(nerr)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn interface(
    node: &Api,
    headers: &HeaderMap,
    id: &str,
    b: &axum::body::Bytes,
    add: bool,
) -> R {
    let s = who(node, headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let r = router_of(node, &s, id)?;
    let v = body(b)?;
    let subnet = v["subnet_id"]
        .as_str()
        .ok_or_else(|| nerr(ControlError::Invalid("subnet_id is required".into())))?;
    let before = r.interface_ports.clone();
    let after = if add {
        node.control
            .add_router_interface(&s.caller, &r.id, subnet)
            .await
            .map_err(nerr)?
    } else {
        node.control
            .remove_router_interface(&s.caller, &r.id, subnet)
            .await
            .map_err(nerr)?
    };
    let port = if add {
        after
            .interface_ports
            .iter()
            .find(|p| !before.contains(p))
            .cloned()
    } else {
        before
            .iter()
            .find(|p| !after.interface_ports.contains(p))
            .cloned()
    };
    ok(
        json!({"id": r.id, "subnet_id": subnet, "subnet_ids": [subnet], "port_id": port, "tenant_id": r.project, "project_id": r.project}),
    )
}

pub(super) async fn add_interface(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    interface(&node, &headers, &id, &b, true).await
}

pub(super) async fn remove_interface(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    interface(&node, &headers, &id, &b, false).await
}

fn visible_fips(node: &Api, s: &Scope) -> Result<Vec<FloatingIpRecord>, Response> {
    Ok(node
        .control
        .floating_ips()
        .map_err(nerr)?
        .into_iter()
        .filter(|f| f.visible_to(&s.caller, &node.control))
        .collect())
}

pub(super) async fn fips(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> R {
    let s = who(&node, &headers)?;
    let list = visible_fips(&node, &s)?.iter().map(fip_json).collect();
    ok(json!({"floatingips": named(list, &q)}))
}

pub(super) async fn fip(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    let f = visible_fips(&node, &s)?
        .into_iter()
        .find(|f| f.id == id || f.ip == id)
        .ok_or_else(|| not_found("FloatingIP", &id))?;
    ok(json!({"floatingip": fip_json(&f)}))
}

pub(super) async fn create_fip(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    b: axum::body::Bytes,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let v = body(&b)?;
    let x = super::resource(&v, "floatingip", super::FLOATINGIP)?;
    let f = node
        .control
        .create_floating_ip(
            &s.caller,
            CreateFloatingIp {
                network: x["floating_network_id"].as_str().unwrap_or("").to_string(),
                project: Some(s.project.clone()),
                port: x["port_id"].as_str().map(str::to_string),
            },
        )
        .await
        .map_err(nerr)?;
    created(json!({"floatingip": fip_json(&f)}))
}

pub(super) async fn update_fip(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let f = visible_fips(&node, &s)?
        .into_iter()
        .find(|f| f.id == id)
        .ok_or_else(|| not_found("FloatingIP", &id))?;
    let v = body(&b)?;
    let port = v["floatingip"]["port_id"].as_str();
    let f = node
        .control
        .associate_floating_ip(&s.caller, &f.id, port)
        .await
        .map_err(nerr)?;
    ok(json!({"floatingip": fip_json(&f)}))
}

pub(super) async fn delete_fip(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let f = visible_fips(&node, &s)?
        .into_iter()
        .find(|f| f.id == id)
        .ok_or_else(|| not_found("FloatingIP", &id))?;
    node.control
        .delete_floating_ip(&s.caller, &f.id)
        .await
        .map_err(nerr)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
