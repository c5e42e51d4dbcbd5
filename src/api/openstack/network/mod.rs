//! Neutron v2.0 under `/networking/v2.0`: networks, subnets, ports, security groups and
//! rules, routers (gateway, interfaces), floating IPs, extensions. Every call is scoped
//! to the token's project: members see their project's resources (and shared or external
//! networks), readers cannot change anything, admins see and do everything.

// Handlers return `Result<Response, Response>` as axum handlers do; the error path is
// the cold one and is turned into the reply at once.
#![allow(clippy::result_large_err)]

use crate::control::caller::Scoped;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{authenticate, time, OsError};
use crate::api::openstack::Api;
use crate::cluster::store::network_tables::{NetworkRecord, SubnetRecord};
use crate::control::caller::Caller;
use crate::control::identity::TokenInfo;
use crate::control::networks::{CreateNetwork, CreateSubnet};
use crate::control::ports::{CreatePort, FixedIpRequest, PortView};
use crate::control::ControlError;

mod l3;
mod security;

pub fn routes() -> Router<Arc<Api>> {
    let p = |s: &str| format!("/networking/v2.0/{s}");
    Router::new()
        .route(&p("extensions"), get(extensions))
        .route(&p("extensions/{alias}"), get(extension))
        .route(&p("networks"), get(networks).post(create_network))
        .route(&p("networks/{id}"), get(network).delete(delete_network))
        .route(&p("subnets"), get(subnets).post(create_subnet))
        .route(&p("subnets/{id}"), get(subnet).delete(delete_subnet))
        .route(&p("ports"), get(ports).post(create_port))
        .route(&p("ports/{id}"), get(port).delete(delete_port))
        .route(
            &p("security-groups"),
            get(security::secgroups).post(security::create_secgroup),
        )
        .route(
            &p("security-groups/{id}"),
            get(security::secgroup).delete(security::delete_secgroup),
        )
        .route(
            &p("security-group-rules"),
            get(security::rules).post(security::create_rule),
        )
        .route(
            &p("security-group-rules/{id}"),
            get(security::rule).delete(security::delete_rule),
        )
        .route(&p("routers"), get(l3::routers).post(l3::create_router))
        .route(
            &p("routers/{id}"),
            get(l3::router)
                .put(l3::update_router)
                .delete(l3::delete_router),
        )
        .route(
            &p("routers/{id}/add_router_interface"),
            put(l3::add_interface),
        )
        .route(
            &p("routers/{id}/remove_router_interface"),
            put(l3::remove_interface),
        )
        .route(&p("floatingips"), get(l3::fips).post(l3::create_fip))
        .route(
            &p("floatingips/{id}"),
            get(l3::fip).put(l3::update_fip).delete(l3::delete_fip),
        )
}

/// Who asks, for scoping.
struct Scope {
    project: String,
    admin: bool,
    writer: bool,
    /// The same caller, for `control`.
    caller: Caller,
}

fn scope(t: &TokenInfo) -> Result<Scope, OsError> {
    let caller = Caller::of_token(t).ok_or_else(|| {
        neutron(
            StatusCode::UNAUTHORIZED,
            "NotAuthorized",
            "a project-scoped token is needed",
        )
    })?;
    Ok(Scope {
        project: caller.project().unwrap_or_default().to_string(),
        admin: caller.is_admin(),
        writer: caller.is_writer(),
        caller,
    })
}

impl Scope {
    fn sees(&self, project: &str) -> bool {
        self.admin || self.project == project
    }
    fn write(&self) -> Result<(), OsError> {
        if self.writer {
            Ok(())
        } else {
            Err(neutron(
                StatusCode::FORBIDDEN,
                "PolicyNotAuthorized",
                "the reader role cannot change anything",
            ))
        }
    }
}

fn neutron(code: StatusCode, kind: &str, message: &str) -> OsError {
    OsError(code, format!("{kind}: {message}"))
}

/// Neutron's error body.
fn nerr(e: ControlError) -> Response {
    let (code, kind) = match &e {
        ControlError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
        ControlError::Invalid(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
        ControlError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
        ControlError::OverQuota { .. } => (StatusCode::CONFLICT, "OverQuota"),
        ControlError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "NotAuthorized"),
        ControlError::Forbidden(_) => (StatusCode::FORBIDDEN, "PolicyNotAuthorized"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    };
    (code, Json(json!({"NeutronError": {"type": kind, "message": crate::telemetry::error_chain(&e), "detail": ""}}))).into_response()
}

fn not_found(what: &str, id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"NeutronError": {"type": format!("{what}NotFound"), "message": format!("{what} {id} could not be found."), "detail": ""}})),
    )
        .into_response()
}

type R = Result<Response, Response>;

fn ok(v: Value) -> R {
    Ok(Json(v).into_response())
}

fn created(v: Value) -> R {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

fn who(node: &Api, headers: &HeaderMap) -> Result<Scope, Response> {
    let t = authenticate(node, headers).map_err(IntoResponse::into_response)?;
    scope(&t).map_err(IntoResponse::into_response)
}

fn body(b: &axum::body::Bytes) -> Result<Value, Response> {
    serde_json::from_slice(b).map_err(|e| {
        nerr(ControlError::Invalid(format!(
            "the request body is not JSON: {e}"
        )))
    })
}

/// The kind of value an attribute takes (null is always allowed).
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Str,
    Bool,
    Int,
    List,
    Obj,
    Any,
}

use Kind::{Any, Bool, Int, List, Obj, Str};

pub(super) const NETWORK: &[(&str, Kind)] = &[
    ("name", Str),
    ("admin_state_up", Bool),
    ("shared", Bool),
    ("router:external", Bool),
    ("mtu", Int),
    ("description", Str),
    ("tenant_id", Str),
    ("project_id", Str),
    ("port_security_enabled", Bool),
    ("availability_zone_hints", List),
    ("provider:network_type", Str),
    ("provider:physical_network", Str),
    ("provider:segmentation_id", Int),
    ("tags", List),
    ("dns_domain", Str),
    ("is_default", Bool),
    ("qos_policy_id", Str),
    ("segments", List),
];
pub(super) const SUBNET: &[(&str, Kind)] = &[
    ("name", Str),
    ("network_id", Str),
    ("cidr", Str),
    ("ip_version", Int),
    ("gateway_ip", Str),
    ("allocation_pools", List),
    ("dns_nameservers", List),
    ("host_routes", List),
    ("enable_dhcp", Bool),
    ("description", Str),
    ("tenant_id", Str),
    ("project_id", Str),
    ("ipv6_ra_mode", Str),
    ("ipv6_address_mode", Str),
    ("subnetpool_id", Str),
    ("prefixlen", Int),
    ("use_default_subnet_pool", Bool),
    ("service_types", List),
    ("tags", List),
    ("segment_id", Str),
    ("dns_publish_fixed_ip", Bool),
];
pub(super) const PORT: &[(&str, Kind)] = &[
    ("name", Str),
    ("network_id", Str),
    ("fixed_ips", List),
    ("security_groups", List),
    ("mac_address", Str),
    ("device_id", Str),
    ("device_owner", Str),
    ("port_security_enabled", Bool),
    ("admin_state_up", Bool),
    ("description", Str),
    ("tenant_id", Str),
    ("project_id", Str),
    ("allowed_address_pairs", List),
    ("binding:host_id", Str),
    ("binding:vnic_type", Str),
    ("binding:profile", Obj),
    ("extra_dhcp_opts", List),
    ("qos_policy_id", Str),
    ("dns_name", Str),
    ("dns_domain", Str),
    ("tags", List),
    ("propagate_uplink_status", Bool),
    ("numa_affinity_policy", Str),
];
pub(super) const SECGROUP: &[(&str, Kind)] = &[
    ("name", Str),
    ("description", Str),
    ("tenant_id", Str),
    ("project_id", Str),
    ("stateful", Bool),
    ("tags", List),
];
pub(super) const RULE: &[(&str, Kind)] = &[
    ("security_group_id", Str),
    ("direction", Str),
    ("ethertype", Str),
    ("protocol", Any),
    ("port_range_min", Int),
    ("port_range_max", Int),
    ("remote_ip_prefix", Str),
    ("remote_group_id", Str),
    ("remote_address_group_id", Str),
    ("description", Str),
    ("tenant_id", Str),
    ("project_id", Str),
];
pub(super) const ROUTER: &[(&str, Kind)] = &[
    ("name", Str),
    ("external_gateway_info", Obj),
    ("admin_state_up", Bool),
    ("description", Str),
    ("tenant_id", Str),
    ("project_id", Str),
    ("distributed", Bool),
    ("ha", Bool),
    ("availability_zone_hints", List),
    ("flavor_id", Str),
    ("tags", List),
    ("enable_ndp_proxy", Bool),
];
pub(super) const FLOATINGIP: &[(&str, Kind)] = &[
    ("floating_network_id", Str),
    ("port_id", Str),
    ("fixed_ip_address", Str),
    ("floating_ip_address", Str),
    ("subnet_id", Str),
    ("description", Str),
    ("tenant_id", Str),
    ("project_id", Str),
    ("dns_name", Str),
    ("dns_domain", Str),
    ("qos_policy_id", Str),
    ("tags", List),
];

/// Checks a request body's resource object: present, known attributes only, each of its
/// kind. Neutron's answers: 400 with "Unrecognized attribute(s)" or "Invalid input for".
pub(super) fn resource<'a>(
    v: &'a Value,
    key: &str,
    schema: &[(&str, Kind)],
) -> Result<&'a Value, Response> {
    let bad = |m: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"NeutronError": {"type": "HTTPBadRequest", "message": m, "detail": ""}})),
        )
            .into_response()
    };
    let o = v
        .get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| bad(format!("Resource body required: '{key}' object expected")))?;
    let unknown: Vec<&str> = o
        .keys()
        .filter(|k| !schema.iter().any(|(s, _)| s == k))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(bad(format!(
            "Unrecognized attribute(s) '{}'",
            unknown.join(", ")
        )));
    }
    for (k, kind) in schema {
        let Some(val) = o.get(*k) else { continue };
        let ok = match kind {
            _ if val.is_null() => true,
            Str => val.is_string(),
            Bool => val.is_boolean(),
            Int => val.is_u64() || val.as_str().is_some_and(|s| s.parse::<u64>().is_ok()),
            List => val.is_array(),
            Obj => val.is_object(),
            Any => true,
        };
        if !ok {
            return Err(bad(format!(
                "Invalid input for {k}. Reason: '{val}' is not a valid {}.",
                match kind {
                    Str => "string",
                    Bool => "boolean",
                    Int => "integer",
                    List => "list",
                    Obj => "dictionary",
                    Any => "value",
                }
            )));
        }
    }
    Ok(&v[key])
}

fn named(list: Vec<Value>, q: &std::collections::HashMap<String, String>) -> Vec<Value> {
    list.into_iter()
        .filter(|v| {
            q.iter().all(|(k, want)| {
                !matches!(
                    k.as_str(),
                    "name"
                        | "network_id"
                        | "device_id"
                        | "security_group_id"
                        | "router_id"
                        | "port_id"
                        | "floating_network_id"
                ) || v[k].as_str() == Some(want.as_str())
            })
        })
        .collect()
}

const STAMP: &str = "2026-01-01T00:00:00Z";

fn network_json(n: &NetworkRecord, subnets: &[SubnetRecord]) -> Value {
    json!({
        "id": n.id, "name": n.name, "tenant_id": n.project, "project_id": n.project,
        "admin_state_up": true, "status": "ACTIVE",
        "subnets": subnets.iter().filter(|s| s.network == n.id).map(|s| s.id.clone()).collect::<Vec<_>>(),
        "shared": n.shared, "router:external": n.external, "mtu": n.mtu,
        "port_security_enabled": true, "availability_zones": ["nova"], "availability_zone_hints": [],
        "ipv4_address_scope": null, "ipv6_address_scope": null,
        "provider:network_type": "vxlan", "provider:segmentation_id": n.vni, "provider:physical_network": null,
        "description": "", "tags": [], "created_at": time(n.created_at), "updated_at": time(n.created_at),
        "revision_number": 1,
    })
}

fn subnet_json(s: &SubnetRecord) -> Value {
    json!({
        "id": s.id, "name": s.name, "network_id": s.network, "ip_version": s.ip_version,
        "cidr": s.cidr, "gateway_ip": s.gateway_ip,
        "allocation_pools": s.allocation_pools.iter().map(|p| json!({"start": p.start, "end": p.end})).collect::<Vec<_>>(),
        "dns_nameservers": s.dns_nameservers,
        "host_routes": s.host_routes.iter().map(|r| json!({"destination": r.destination, "nexthop": r.nexthop})).collect::<Vec<_>>(),
        "enable_dhcp": s.enable_dhcp, "ipv6_ra_mode": null, "ipv6_address_mode": null,
        "subnetpool_id": null, "service_types": [], "tenant_id": s.project, "project_id": s.project,
        "description": "", "tags": [], "created_at": time(s.created_at), "updated_at": time(s.created_at),
        "revision_number": 1,
    })
}

fn port_json(p: &PortView) -> Value {
    let r = &p.record;
    json!({
        "id": r.id, "name": r.name, "network_id": r.network, "mac_address": r.mac,
        "fixed_ips": r.fixed_ips.iter().map(|f| json!({"subnet_id": f.subnet, "ip_address": f.ip})).collect::<Vec<_>>(),
        "device_id": r.device_id, "device_owner": r.device_owner, "status": p.status,
        "admin_state_up": r.admin_state_up, "security_groups": r.security_groups,
        "allowed_address_pairs": [], "extra_dhcp_opts": [],
        "binding:vnic_type": "normal", "binding:host_id": r.host.map(|h| h.to_string()).unwrap_or_default(),
        "port_security_enabled": r.port_security, "tenant_id": r.project, "project_id": r.project,
        "description": "", "tags": [], "created_at": time(r.created_at), "updated_at": time(r.created_at),
        "revision_number": 1,
    })
}

const EXTENSIONS: [(&str, &str); 8] = [
    ("external-net", "Neutron external network"),
    ("router", "Neutron L3 Router"),
    ("security-group", "security-group"),
    ("port-security", "Port Security"),
    ("binding", "Port Binding"),
    ("provider", "Provider Network"),
    ("extraroute", "Neutron Extra Route"),
    ("standard-attr-description", "standard-attr-description"),
];

fn ext_json(alias: &str, name: &str) -> Value {
    json!({"alias": alias, "name": name, "description": name, "updated": STAMP, "links": []})
}

async fn extensions(State(node): State<Arc<Api>>, headers: HeaderMap) -> R {
    who(&node, &headers)?;
    ok(json!({"extensions": EXTENSIONS.iter().map(|(a, n)| ext_json(a, n)).collect::<Vec<_>>()}))
}

async fn extension(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(alias): UrlPath<String>,
) -> R {
    who(&node, &headers)?;
    match EXTENSIONS.iter().find(|(a, _)| *a == alias) {
        Some((a, n)) => ok(json!({"extension": ext_json(a, n)})),
        None => Err(not_found("Extension", &alias)),
    }
}

fn visible_networks(node: &Api, s: &Scope) -> Result<Vec<NetworkRecord>, Response> {
    Ok(node
        .control
        .networks()
        .map_err(nerr)?
        .into_iter()
        .map(|v| v.record)
        .filter(|n| n.visible_to(&s.caller, &node.control))
        .collect())
}

fn network_of(node: &Api, s: &Scope, id: &str) -> Result<NetworkRecord, Response> {
    visible_networks(node, s)?
        .into_iter()
        .find(|n| n.id == id || n.name == id)
        .ok_or_else(|| not_found("Network", id))
}

async fn networks(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> R {
    let s = who(&node, &headers)?;
    let subs = node.control.subnets().map_err(nerr)?;
    let list = visible_networks(&node, &s)?
        .iter()
        .map(|n| network_json(n, &subs))
        .collect();
    ok(json!({"networks": named(list, &q)}))
}

async fn network(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    let n = network_of(&node, &s, &id)?;
    ok(json!({"network": network_json(&n, &node.control.subnets().map_err(nerr)?)}))
}

async fn create_network(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    b: axum::body::Bytes,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let v = body(&b)?;
    let n = resource(&v, "network", NETWORK)?;
    let external = n["router:external"].as_bool().unwrap_or(false);
    let shared = n["shared"].as_bool().unwrap_or(false);
    if (external || shared) && !s.admin {
        return Err(nerr(ControlError::Forbidden(
            "only admins create shared or external networks".into(),
        )));
    }
    let rec = node
        .control
        .create_network(
            &s.caller,
            CreateNetwork {
                name: n["name"].as_str().unwrap_or("").to_string(),
                project: Some(s.project.clone()),
                shared,
                external,
                mtu: n["mtu"].as_u64().map(|m| m as u32),
            },
        )
        .await
        .map_err(nerr)?;
    created(json!({"network": network_json(&rec, &[])}))
}

async fn delete_network(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let n = network_of(&node, &s, &id)?;
    if !s.sees(&n.project) {
        return Err(not_found("Network", &id));
    }
    node.control
        .delete_network(&s.caller, &n.id)
        .await
        .map_err(nerr)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn visible_subnets(node: &Api, s: &Scope) -> Result<Vec<SubnetRecord>, Response> {
    Ok(node
        .control
        .subnets()
        .map_err(nerr)?
        .into_iter()
        .filter(|x| x.visible_to(&s.caller, &node.control))
        .collect())
}

async fn subnets(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> R {
    let s = who(&node, &headers)?;
    let list = visible_subnets(&node, &s)?
        .iter()
        .map(subnet_json)
        .collect();
    ok(json!({"subnets": named(list, &q)}))
}

async fn subnet(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    let x = visible_subnets(&node, &s)?
        .into_iter()
        .find(|x| x.id == id || x.name == id)
        .ok_or_else(|| not_found("Subnet", &id))?;
    ok(json!({"subnet": subnet_json(&x)}))
}

async fn create_subnet(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    b: axum::body::Bytes,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let v = body(&b)?;
    let x = resource(&v, "subnet", SUBNET)?;
    let net = network_of(&node, &s, x["network_id"].as_str().unwrap_or(""))?;
    if !s.sees(&net.project) {
        return Err(nerr(ControlError::Forbidden(format!(
            "network {} belongs to another project",
            net.id
        ))));
    }
    let list = |k: &str| x[k].as_array().cloned().unwrap_or_default();
    let rec = node
        .control
        .create_subnet(
            &s.caller,
            CreateSubnet {
                name: x["name"].as_str().unwrap_or("").to_string(),
                network: net.id.clone(),
                cidr: x["cidr"].as_str().unwrap_or("").to_string(),
                gateway_ip: match &x["gateway_ip"] {
                    Value::Null if x.get("gateway_ip").is_some() => Some(String::new()),
                    Value::String(g) => Some(g.clone()),
                    _ => None,
                },
                allocation_pools: serde_json::from_value(Value::Array(list("allocation_pools")))
                    .unwrap_or_default(),
                dns_nameservers: list("dns_nameservers")
                    .iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect(),
                host_routes: serde_json::from_value(Value::Array(list("host_routes")))
                    .unwrap_or_default(),
                enable_dhcp: x["enable_dhcp"].as_bool(),
                project: Some(s.project.clone()),
            },
        )
        .await
        .map_err(nerr)?;
    created(json!({"subnet": subnet_json(&rec)}))
}

async fn delete_subnet(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let x = visible_subnets(&node, &s)?
        .into_iter()
        .find(|x| x.id == id)
        .ok_or_else(|| not_found("Subnet", &id))?;
    if !s.sees(&x.project) {
        return Err(not_found("Subnet", &id));
    }
    node.control
        .delete_subnet(&s.caller, &x.id)
        .await
        .map_err(nerr)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn visible_ports(node: &Api, s: &Scope) -> Result<Vec<PortView>, Response> {
    Ok(node
        .control
        .ports()
        .map_err(nerr)?
        .into_iter()
        .filter(|p| p.record.visible_to(&s.caller, &node.control))
        .collect())
}

async fn ports(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> R {
    let s = who(&node, &headers)?;
    let list = visible_ports(&node, &s)?.iter().map(port_json).collect();
    ok(json!({"ports": named(list, &q)}))
}

async fn port(State(node): State<Arc<Api>>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> R {
    let s = who(&node, &headers)?;
    let p = visible_ports(&node, &s)?
        .into_iter()
        .find(|p| p.record.id == id || p.record.name == id)
        .ok_or_else(|| not_found("Port", &id))?;
    ok(json!({"port": port_json(&p)}))
}

async fn create_port(State(node): State<Arc<Api>>, headers: HeaderMap, b: axum::body::Bytes) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let v = body(&b)?;
    let x = resource(&v, "port", PORT)?;
    let net = network_of(&node, &s, x["network_id"].as_str().unwrap_or(""))?;
    let fixed = x["fixed_ips"].as_array().map(|a| {
        a.iter()
            .map(|f| FixedIpRequest {
                subnet: f["subnet_id"].as_str().map(str::to_string),
                ip: f["ip_address"].as_str().map(str::to_string),
            })
            .collect()
    });
    let groups = x["security_groups"].as_array().map(|a| {
        a.iter()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect()
    });
    let view = node
        .control
        .create_port(
            &s.caller,
            CreatePort {
                network: net.id,
                name: x["name"].as_str().unwrap_or("").to_string(),
                project: Some(s.project.clone()),
                fixed_ips: fixed,
                mac: x["mac_address"].as_str().map(str::to_string),
                host: None,
                device_id: x["device_id"].as_str().unwrap_or("").to_string(),
                device_owner: x["device_owner"].as_str().unwrap_or("").to_string(),
                security_groups: groups,
                port_security: x["port_security_enabled"].as_bool(),
            },
        )
        .await
        .map_err(nerr)?;
    created(json!({"port": port_json(&view)}))
}

async fn delete_port(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let p = visible_ports(&node, &s)?
        .into_iter()
        .find(|p| p.record.id == id)
        .ok_or_else(|| not_found("Port", &id))?;
    node.control
        .delete_port(&s.caller, &p.record.id)
        .await
        .map_err(nerr)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
