//! Nova v2.1 servers under `/compute/v2.1`: create (from an image, or from a volume
//! through block_device_mapping_v2), list and detail with filters, show, rename, delete,
//! actions (os-stop, os-start, reboot, pause, unpause, os-getConsoleOutput), metadata,
//! security groups, availability zones and limits. Shapes are those of microversion 2.1,
//! the one served. Servers are scoped to their project; admins list other projects' with
//! `all_tenants`.

// Handlers return `Result<Response, Response>` as axum handlers do.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::Digest;

use super::compute::{cerr, nova};
use super::Api;
use super::{authenticate, base_url, time, OsError, Scope};
use crate::cluster::store::compute_tables::{PowerIntent, VmState};
use crate::cluster::store::network_tables::FloatingIpRecord;
use crate::control::servers::CreateServer;
use crate::control::vms::{VmAction, VmView};
use crate::control::ControlError;

pub fn routes() -> Router<Arc<Api>> {
    let p = |s: &str| format!("/compute/v2.1/{s}");
    Router::new()
        .route(&p("servers"), get(list).post(create))
        .route(&p("servers/detail"), get(detail))
        .route(&p("servers/{id}"), get(show).put(update).delete(delete))
        .route(&p("servers/{id}/action"), post(action))
        .merge(super::server_metadata::routes())
        .route(&p("servers/{id}/os-security-groups"), get(secgroups))
        .route(&p("os-availability-zone"), get(zones))
        .route(&p("os-availability-zone/detail"), get(zones))
        .route(&p("limits"), get(limits))
}

type R = Result<Response, Response>;

pub(super) fn os(e: OsError) -> Response {
    nova(e.0, e.1)
}

pub(super) fn who(node: &Api, headers: &HeaderMap) -> Result<Scope, Response> {
    let t = authenticate(node, headers).map_err(IntoResponse::into_response)?;
    Scope::of(&t).map_err(os)
}

fn not_found(id: &str) -> Response {
    nova(
        StatusCode::NOT_FOUND,
        format!("Instance {id} could not be found."),
    )
}

pub(super) fn bad(m: impl Into<String>) -> Response {
    nova(StatusCode::BAD_REQUEST, m)
}

/// A server by id (never by name: clients look names up through the list), if the caller
/// may see it.
pub(super) fn find(node: &Api, s: &Scope, id: &str) -> Result<VmView, Response> {
    match node.control.vm(id) {
        Ok(v) if v.record.id.0 == id && s.sees(v.record.project.as_deref()) => Ok(v),
        Ok(_) | Err(ControlError::NotFound(_)) => Err(not_found(id)),
        Err(e) => Err(cerr(e)),
    }
}

/// Nova's status, vm_state, task_state and power_state of a VM.
fn states(v: &VmView) -> (&'static str, &'static str, Option<&'static str>, u8) {
    let intent = v.record.power;
    let rebooting = v.record.reboot_seq > v.reboots_done && v.state == VmState::Active;
    match v.state {
        VmState::Build => ("BUILD", "building", Some("spawning"), 0),
        VmState::Error => ("ERROR", "error", None, 0),
        VmState::Active if rebooting => ("REBOOT", "active", Some("rebooting"), 1),
        VmState::Active if intent == PowerIntent::Stopped => {
            ("ACTIVE", "active", Some("powering-off"), 1)
        }
        VmState::Active if intent == PowerIntent::Paused => {
            ("ACTIVE", "active", Some("pausing"), 1)
        }
        VmState::Active => ("ACTIVE", "active", None, 1),
        VmState::Paused if intent == PowerIntent::Running => {
            ("PAUSED", "paused", Some("unpausing"), 3)
        }
        VmState::Paused => ("PAUSED", "paused", None, 3),
        VmState::Shutoff if intent == PowerIntent::Running => {
            ("SHUTOFF", "stopped", Some("powering-on"), 4)
        }
        VmState::Shutoff => ("SHUTOFF", "stopped", None, 4),
    }
}

fn links(base: &str, kind: &str, id: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{base}/compute/v2.1/{kind}/{id}")},
        {"rel": "bookmark", "href": format!("{base}/compute/{kind}/{id}")},
    ])
}

/// Addresses per network name, fixed and floating, and the security group names of the
/// server's ports.
fn addresses(node: &Api, v: &VmView) -> (Value, Vec<String>) {
    addresses_with(node, v, &node.control.floating_ips().unwrap_or_default())
}

/// [`addresses`] with the floating IPs read once (lists show many servers).
fn addresses_with(node: &Api, v: &VmView, fips: &[FloatingIpRecord]) -> (Value, Vec<String>) {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut groups: Vec<String> = Vec::new();
    for p in &v.record.ports {
        let Ok(port) = node
            .control
            .port(&crate::control::caller::Caller::system(), p)
        else {
            continue;
        };
        let net = node
            .control
            .find_network(
                &crate::control::caller::Caller::system(),
                &port.record.network,
            )
            .map(|n| n.name)
            .unwrap_or_else(|_| port.record.network.clone());
        let list = out.entry(net).or_default();
        for ip in &port.record.fixed_ips {
            list.push(
                json!({"version": 4, "addr": ip.ip, "OS-EXT-IPS:type": "fixed",
                             "OS-EXT-IPS-MAC:mac_addr": port.record.mac}),
            );
        }
        for f in fips
            .iter()
            .filter(|f| f.port.as_deref() == Some(p.as_str()))
        {
            list.push(
                json!({"version": 4, "addr": f.ip, "OS-EXT-IPS:type": "floating",
                             "OS-EXT-IPS-MAC:mac_addr": port.record.mac}),
            );
        }
        for g in &port.record.security_groups {
            let name = node
                .control
                .find_secgroup(&crate::control::caller::Caller::system(), g)
                .map(|s| s.name)
                .unwrap_or_else(|_| g.clone());
            if !groups.contains(&name) {
                groups.push(name);
            }
        }
    }
    (json!(out), groups)
}

fn brief(v: &VmView, base: &str) -> Value {
    json!({"id": v.record.id.0, "name": v.record.name, "links": links(base, "servers", &v.record.id.0)})
}

fn server_json(node: &Api, s: &Scope, v: &VmView, base: &str) -> Value {
    server_json_with(
        node,
        s,
        v,
        base,
        &node.control.floating_ips().unwrap_or_default(),
    )
}

fn server_json_with(
    node: &Api,
    s: &Scope,
    v: &VmView,
    base: &str,
    fips: &[FloatingIpRecord],
) -> Value {
    let r = &v.record;
    let (status, vm_state, task, power) = states(v);
    let (addrs, groups) = addresses_with(node, v, fips);
    let project = r.project.clone().unwrap_or_default();
    let host_id = if r.project.is_some() {
        hex::encode(sha2::Sha256::digest(format!("{project}{}", r.node)))[..56].to_string()
    } else {
        String::new()
    };
    let image = match &r.image {
        Some(i) => {
            json!({"id": i, "links": [{"rel": "bookmark", "href": format!("{base}/compute/images/{i}")}]})
        }
        None => json!(""),
    };
    let volumes: Vec<Value> = super::server_volumes::attachments(v)
        .iter()
        .map(|(vol, _)| json!({"id": vol}))
        .collect();
    let mut j = json!({
        "id": r.id.0, "name": r.name, "status": status,
        "tenant_id": project, "user_id": r.user.clone().unwrap_or_default(),
        "metadata": r.metadata, "hostId": host_id, "image": image,
        "flavor": {"id": r.flavor, "links": [{"rel": "bookmark", "href": format!("{base}/compute/flavors/{}", r.flavor)}]},
        "created": time(r.created_at), "updated": time(v.status_updated_at.max(r.created_at * 1000) / 1000),
        "addresses": addrs, "accessIPv4": "", "accessIPv6": "",
        "links": links(base, "servers", &r.id.0),
        "OS-DCF:diskConfig": "MANUAL", "progress": 0,
        "OS-EXT-AZ:availability_zone": "nova",
        "config_drive": if r.config_drive { "True" } else { "" },
        "key_name": r.key_name,
        "OS-SRV-USG:launched_at": (v.boots > 0).then(|| time(r.created_at).replace('Z', ".000000")),
        "OS-SRV-USG:terminated_at": null,
        "OS-EXT-STS:task_state": task, "OS-EXT-STS:vm_state": vm_state,
        "OS-EXT-STS:power_state": power,
        "os-extended-volumes:volumes_attached": volumes,
        "security_groups": groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>(),
    });
    if v.state == VmState::Error {
        j["fault"] =
            json!({"code": 500, "message": v.reason, "created": time(v.status_updated_at / 1000)});
    }
    if s.admin {
        let host = r.node.to_string();
        j["OS-EXT-SRV-ATTR:host"] = json!(host);
        j["OS-EXT-SRV-ATTR:hypervisor_hostname"] = json!(host);
        j["OS-EXT-SRV-ATTR:instance_name"] = json!(format!("instance-{}", &r.id.0[..8]));
    }
    j
}

/// The servers a list shows, after Nova's filters.
fn listed(node: &Api, s: &Scope, q: &[(String, String)]) -> Result<Vec<VmView>, Response> {
    let q: HashMap<&str, &str> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let truthy = |k: &str| {
        q.get(k).is_some_and(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "0" | "false" | "no" | "off"
            )
        })
    };
    let all = s.admin && truthy("all_tenants");
    let project = q.get("project_id").or(q.get("tenant_id")).copied();
    let limit = match q.get("limit") {
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            bad(format!(
                "Invalid input for field/attribute limit. Value: {l}."
            ))
        })?),
        None => None,
    };
    let mut out: Vec<VmView> = node
        .control
        .vms()
        .map_err(cerr)?
        .into_iter()
        .filter(|v| {
            let p = v.record.project.as_deref();
            let scoped = if all {
                project.is_none_or(|want| p == Some(want))
            } else {
                p == Some(s.project.as_str())
            };
            scoped
                && q.get("name").is_none_or(|n| v.record.name.contains(n))
                && q.get("status")
                    .is_none_or(|st| states(v).0.eq_ignore_ascii_case(st))
                && q.get("image")
                    .is_none_or(|i| v.record.image.as_deref() == Some(*i))
                && q.get("flavor").is_none_or(|f| v.record.flavor == *f)
        })
        .collect();
    if let Some(m) = q.get("marker") {
        let at = out
            .iter()
            .position(|v| v.record.id.0 == *m)
            .ok_or_else(|| bad(format!("marker [{m}] not found")))?;
        out.drain(..=at);
    }
    if let Some(l) = limit {
        out.truncate(l);
    }
    Ok(out)
}

async fn list(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> R {
    let s = who(&node, &headers)?;
    let base = base_url(&headers);
    let list: Vec<Value> = listed(&node, &s, &q)?
        .iter()
        .map(|v| brief(v, &base))
        .collect();
    Ok(Json(json!({"servers": list})).into_response())
}

async fn detail(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> R {
    let s = who(&node, &headers)?;
    let base = base_url(&headers);
    let fips = node.control.floating_ips().map_err(cerr)?;
    let list: Vec<Value> = listed(&node, &s, &q)?
        .iter()
        .map(|v| server_json_with(&node, &s, v, &base, &fips))
        .collect();
    Ok(Json(json!({"servers": list})).into_response())
}

async fn show(State(node): State<Arc<Api>>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> R {
    let s = who(&node, &headers)?;
    let v = find(&node, &s, &id)?;
    Ok(Json(json!({"server": server_json(&node, &s, &v, &base_url(&headers))})).into_response())
}

/// The keys `server` may have at 2.1 (plus `description` and `tags`, which clients send
/// and later microversions define; accepted and not kept).
const SERVER_KEYS: &[&str] = &[
    "name",
    "imageRef",
    "flavorRef",
    "adminPass",
    "metadata",
    "networks",
    "OS-DCF:diskConfig",
    "accessIPv4",
    "accessIPv6",
    "personality",
    "key_name",
    "user_data",
    "availability_zone",
    "block_device_mapping",
    "block_device_mapping_v2",
    "min_count",
    "max_count",
    "return_reservation_id",
    "security_groups",
    "config_drive",
    "description",
    "tags",
];

fn last_segment(s: &str) -> String {
    s.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(s)
        .to_string()
}

/// The networks to attach: Nova's `networks` (a list of `{uuid}`, `"auto"` or `"none"`).
fn networks(node: &Api, s: &Scope, v: &Value) -> Result<Vec<String>, Response> {
    let pick_auto = || -> Result<Vec<String>, Response> {
        let mine: Vec<String> = node
            .control
            .networks()
            .map_err(cerr)?
            .into_iter()
            .filter(|n| n.record.project == s.project && !n.record.external)
            .map(|n| n.record.id)
            .collect();
        match mine.len() {
            0 | 1 => Ok(mine),
            _ => Err(nova(
                StatusCode::CONFLICT,
                "Multiple possible networks found, use a Network ID to be more specific.",
            )),
        }
    };
    match v {
        Value::Null => pick_auto(),
        Value::String(a) if a == "auto" => pick_auto(),
        Value::String(a) if a == "none" => Ok(vec![]),
        Value::Array(list) => {
            let mut out = Vec::new();
            for n in list {
                if n.get("port").is_some_and(|p| !p.is_null()) {
                    return Err(bad(
                        "Booting with an existing port is not supported; give the port's network (uuid) instead.",
                    ));
                }
                let id = n["uuid"].as_str().ok_or_else(|| {
                    bad(format!(
                        "Bad networks format: network uuid is not in proper format ({n})"
                    ))
                })?;
                let net = node
                    .control
                    .find_network(&s.caller, id)
                    .map_err(|_| bad(format!("Network {id} could not be found.")))?;
                if net.project != s.project && !net.shared && !s.admin {
                    return Err(bad(format!("Network {id} could not be found.")));
                }
                out.push(net.id);
            }
            Ok(out)
        }
        _ => Err(bad(
            "Invalid input for field/attribute networks: must be a list, \"auto\" or \"none\".",
        )),
    }
}

async fn create(State(node): State<Arc<Api>>, headers: HeaderMap, b: axum::body::Bytes) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(os)?;
    let body: Value =
        serde_json::from_slice(&b).map_err(|e| bad(format!("Malformed request body: {e}")))?;
    let srv = body
        .get("server")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            bad("Invalid input for field/attribute server: 'server' is a required property")
        })?;
    if let Some(k) = srv.keys().find(|k| !SERVER_KEYS.contains(&k.as_str())) {
        return Err(bad(format!(
            "Invalid input for field/attribute server. Value: {}. Additional properties are not allowed ('{k}' was unexpected)",
            Value::Object(srv.clone())
        )));
    }
    let name = srv.get("name").and_then(Value::as_str).ok_or_else(|| {
        bad("Invalid input for field/attribute name: 'name' is a required property")
    })?;
    let flavor = srv
        .get("flavorRef")
        .and_then(|f| {
            f.as_str()
                .map(String::from)
                .or_else(|| f.as_u64().map(|n| n.to_string()))
        })
        .map(|f| last_segment(&f))
        .ok_or_else(|| {
            bad("Invalid input for field/attribute flavorRef: 'flavorRef' is a required property")
        })?;
    if node.control.flavor(&flavor).is_err() {
        return Err(bad(format!("Flavor {flavor} could not be found.")));
    }
    let mut image = srv
        .get("imageRef")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty())
        .map(last_segment);
    let mut volume: Option<String> = None;
    let mut delete_volume = false;
    if let Some(bdms) = srv.get("block_device_mapping_v2") {
        let bdms = bdms
            .as_array()
            .ok_or_else(|| bad("block_device_mapping_v2 must be a list"))?;
        for bdm in bdms {
            let boot = bdm["boot_index"]
                .as_i64()
                .or_else(|| bdm["boot_index"].as_str().and_then(|s| s.parse().ok()));
            let src = bdm["source_type"].as_str().unwrap_or("");
            let dst = bdm["destination_type"].as_str().unwrap_or("local");
            let uuid = bdm["uuid"].as_str().map(String::from);
            match (boot, src, dst) {
                (Some(0), "image", "local") => image = uuid.or(image),
                (Some(0), "image", "volume") => {
                    image = uuid.or(image);
                }
                (Some(0), "volume", "volume") => {
                    volume = uuid;
                    image = None;
                    delete_volume = bdm["delete_on_termination"].as_bool().unwrap_or(false);
                }
                _ => {
                    return Err(bad(format!(
                        "Block device mapping {bdm} is not supported: only the boot device (boot_index 0) from an image or a volume"
                    )))
                }
            }
        }
    }
    if let Some(i) = &image {
        match node.control.image(&s.caller, i) {
            Ok(_) => {}
            _ => return Err(bad(format!("Image {i} could not be found."))),
        }
    }
    if let Some(vid) = &volume {
        match node.control.find_volume(&s.caller, vid) {
            Ok(v) if v.value.id.0 == *vid && s.sees(v.value.project.as_deref()) => {}
            _ => return Err(bad(format!("Volume {vid} could not be found."))),
        }
    }
    let nets = networks(&node, &s, srv.get("networks").unwrap_or(&Value::Null))?;
    let key = match srv.get("key_name").and_then(Value::as_str) {
        Some(k) => {
            let kp = node
                .control
                .keypair(&s.user, k)
                .map_err(|_| bad(format!("Invalid key_name provided: keypair {k} not found")))?;
            Some((kp.name, kp.public_key))
        }
        None => None,
    };
    // Nova's boolean parameter type: true/false, their spellings as strings, 1/0.
    let config_drive = match srv.get("config_drive") {
        None | Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::Number(n)) => n.as_u64().filter(|n| *n <= 1).map(|n| n == 1),
        Some(Value::String(v)) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "y" | "t" => Some(true),
            "false" | "0" | "no" | "off" | "n" | "f" | "" => Some(false),
            _ => None,
        },
        Some(_) => None,
    };
    let Some(config_drive) = config_drive else {
        let v = &srv["config_drive"];
        return Err(bad(format!(
            "Invalid input for field/attribute config_drive. Value: {v}. \
             {v} is not of type 'boolean'"
        )));
    };
    let user_data = match srv.get("user_data").and_then(Value::as_str) {
        Some(u) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(u)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| bad("User data needs to be valid base 64."))?,
        ),
        None => None,
    };
    let metadata: BTreeMap<String, String> = match srv.get("metadata") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|v| (k.clone(), v.to_string()))
                    .ok_or_else(|| bad(format!("Invalid input for field/attribute metadata: {v} is not of type 'string'")))
            })
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => BTreeMap::new(),
        Some(_) => return Err(bad("Invalid input for field/attribute metadata: must be an object")),
    };
    let groups: Option<Vec<String>> = match srv.get("security_groups") {
        Some(Value::Array(a)) if !a.is_empty() => Some(
            a.iter()
                .map(|g| {
                    g["name"]
                        .as_str()
                        .map(String::from)
                        .ok_or_else(|| bad("security group names are strings"))
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => None,
    };
    if let Some(az) = srv.get("availability_zone").and_then(Value::as_str) {
        if az != "nova" && !az.starts_with("nova:") {
            return Err(bad(format!(
                "The requested availability zone is not available: {az}"
            )));
        }
    }
    let count = srv.get("min_count").and_then(Value::as_u64).unwrap_or(1);
    let max = srv
        .get("max_count")
        .and_then(Value::as_u64)
        .unwrap_or(count);
    if count == 0 || count > 16 || max < count {
        return Err(bad("min_count must be 1 to 16 and at most max_count"));
    }
    if count > 1 && volume.is_some() {
        return Err(bad("only one server can boot from one volume"));
    }
    let group = match body
        .get("os:scheduler_hints")
        .or_else(|| body.get("OS-SCH-HNT:scheduler_hints"))
        .and_then(|h| h.get("group"))
        .and_then(Value::as_str)
    {
        Some(g) => Some(super::server_groups::find(&node, &s, g).map_err(|_| {
            bad(format!(
                "Invalid input: server group {g} could not be found"
            ))
        })?),
        None => None,
    };
    let (anti, affinity) = match &group {
        Some(g) if g.policy == "affinity" => (None, Some(g.id.clone())),
        Some(g) => (Some(g.id.clone()), None),
        None => (None, None),
    };
    let mut first = None;
    for i in 0..count {
        let vm = node
            .control
            .create_server(
                &s.caller,
                CreateServer {
                    name: if count > 1 {
                        format!("{name}-{}", i + 1)
                    } else {
                        name.to_string()
                    },
                    flavor: flavor.clone(),
                    image: image.clone(),
                    volume: volume.clone(),
                    delete_volume,
                    networks: nets.clone(),
                    security_groups: groups.clone(),
                    key: key.clone(),
                    user_data: user_data.clone(),
                    metadata: metadata.clone(),
                    project: s.project.clone(),
                    user: s.user.clone(),
                    anti_affinity_group: anti.clone(),
                    affinity_group: affinity.clone(),
                    config_drive,
                },
            )
            .await
            .map_err(cerr)?;
        first.get_or_insert(vm);
    }
    let vm = first.ok_or_else(|| bad("no server created"))?;
    let base = base_url(&headers);
    let pass: String = (0..12)
        .map(|_| {
            let c = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
            c[rand::random::<u32>() as usize % c.len()] as char
        })
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"server": {
            "id": vm.record.id.0, "links": links(&base, "servers", &vm.record.id.0),
            "OS-DCF:diskConfig": "MANUAL",
            "security_groups": groups.unwrap_or_else(|| vec!["default".into()]).iter().map(|g| json!({"name": g})).collect::<Vec<_>>(),
            "adminPass": pass,
        }})),
    )
        .into_response())
}

/// Renames (the one field of PUT /servers/{id} Strata keeps at 2.1).
async fn update(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(os)?;
    find(&node, &s, &id)?;
    let body: Value =
        serde_json::from_slice(&b).map_err(|e| bad(format!("Malformed request body: {e}")))?;
    let srv = body
        .get("server")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("'server' is a required property"))?;
    if let Some(k) = srv.keys().find(|k| {
        !matches!(
            k.as_str(),
            "name" | "accessIPv4" | "accessIPv6" | "OS-DCF:diskConfig"
        )
    }) {
        return Err(bad(format!(
            "Additional properties are not allowed ('{k}' was unexpected)"
        )));
    }
    if let Some(n) = srv.get("name") {
        let n = n
            .as_str()
            .ok_or_else(|| bad("Invalid input for field/attribute name: not a string"))?;
        node.control.rename_vm(&id, n).await.map_err(cerr)?;
    }
    let v = find(&node, &s, &id)?;
    Ok(Json(json!({"server": server_json(&node, &s, &v, &base_url(&headers))})).into_response())
}

async fn delete(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(os)?;
    find(&node, &s, &id)?;
    node.control.delete_vm(&id).await.map_err(cerr)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn conflict(v: &VmView, what: &str) -> Response {
    nova(
        StatusCode::CONFLICT,
        format!(
            "Cannot '{what}' instance {} while it is in vm_state {}",
            v.record.id.0,
            states(v).1
        ),
    )
}

async fn action(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    let s = who(&node, &headers)?;
    let v = find(&node, &s, &id)?;
    let body: Map<String, Value> =
        serde_json::from_slice(&b).map_err(|e| bad(format!("Malformed request body: {e}")))?;
    let (name, arg) = match body.iter().next() {
        Some((k, a)) if body.len() == 1 => (k.as_str(), a),
        _ => return Err(bad("An action body names exactly one action")),
    };
    if name == "os-getConsoleOutput" {
        let lines = match &arg["length"] {
            Value::Null => None,
            l => Some(
                l.as_i64()
                    .or_else(|| l.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| {
                        bad(format!(
                            "Invalid input for field/attribute length. Value: {l}"
                        ))
                    })?,
            ),
        };
        let (bytes, _) = node
            .control
            .vm_console(&id, 1 << 20, None)
            .await
            .map_err(|e| {
                nova(
                    StatusCode::CONFLICT,
                    format!(
                        "Console output is not available: {}",
                        crate::telemetry::error_chain(&e)
                    ),
                )
            })?;
        let text = String::from_utf8_lossy(&bytes).to_string();
        let output = match lines {
            Some(n) if n >= 0 => {
                let all: Vec<&str> = text.split_inclusive('\n').collect();
                all[all.len().saturating_sub(n as usize)..].concat()
            }
            _ => text,
        };
        return Ok(Json(json!({"output": output})).into_response());
    }
    s.write().map_err(os)?;
    let (status, _, _, _) = states(&v);
    let act = match name {
        "os-stop" if status == "SHUTOFF" => return Err(conflict(&v, "stop")),
        "os-stop" => VmAction::Stop,
        "os-start" if status != "SHUTOFF" => return Err(conflict(&v, "start")),
        "os-start" => VmAction::Start,
        "reboot" => {
            let t = arg["type"].as_str().unwrap_or("");
            if !matches!(t, "SOFT" | "HARD") {
                return Err(bad(format!(
                    "Invalid input for field/attribute type. Value: {t}. '{t}' is not one of ['HARD', 'Hard', 'hard', 'SOFT', 'Soft', 'soft']"
                )));
            }
            if status == "SHUTOFF" {
                return Err(conflict(&v, "reboot"));
            }
            VmAction::Reboot
        }
        "pause" if status != "ACTIVE" => return Err(conflict(&v, "pause")),
        "pause" => VmAction::Pause,
        "unpause" if status != "PAUSED" => return Err(conflict(&v, "unpause")),
        "unpause" => VmAction::Resume,
        other => return Err(bad(format!("There is no such action: {other}"))),
    };
    node.control.vm_action(&id, act).await.map_err(cerr)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn secgroups(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    let v = find(&node, &s, &id)?;
    let (_, names) = addresses(&node, &v);
    let groups: Vec<Value> = node
        .control
        .secgroups()
        .map_err(cerr)?
        .into_iter()
        .filter(|g| names.contains(&g.name) && s.sees(Some(g.project.as_str())))
        .map(|g| json!({"id": g.id, "name": g.name, "description": g.description, "tenant_id": g.project, "rules": []}))
        .collect();
    Ok(Json(json!({"security_groups": groups})).into_response())
}

async fn zones(State(node): State<Arc<Api>>, headers: HeaderMap) -> R {
    who(&node, &headers)?;
    Ok(Json(json!({"availabilityZoneInfo": [
        {"zoneName": "nova", "zoneState": {"available": true}, "hosts": null}
    ]}))
    .into_response())
}

async fn limits(State(node): State<Arc<Api>>, headers: HeaderMap) -> R {
    let s = who(&node, &headers)?;
    let l = node.control.quota_limits(&s.project).map_err(cerr)?;
    let u = node.control.quota_usage(&s.project).map_err(cerr)?;
    let g = |m: &std::collections::BTreeMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(-1);
    let groups = node
        .control
        .server_groups()
        .map_err(cerr)?
        .iter()
        .filter(|g| g.project == s.project)
        .count();
    Ok(Json(json!({"limits": {"rate": [], "absolute": {
        "maxTotalInstances": g(&l, "instances"), "maxTotalCores": g(&l, "cores"),
        "maxTotalRAMSize": g(&l, "ram"), "maxServerMeta": g(&l, "metadata_items"),
        "maxImageMeta": 128, "maxPersonality": 5, "maxPersonalitySize": 10240,
        "maxTotalKeypairs": g(&l, "key_pairs"), "maxServerGroups": g(&l, "server_groups"),
        "maxServerGroupMembers": g(&l, "server_group_members"),
        "maxSecurityGroups": g(&l, "security_group"),
        "maxSecurityGroupRules": g(&l, "security_group_rule"),
        "maxTotalFloatingIps": g(&l, "floatingip"),
        "totalInstancesUsed": g(&u, "instances"), "totalCoresUsed": g(&u, "cores"),
        "totalRAMUsed": g(&u, "ram"), "totalSecurityGroupsUsed": g(&u, "security_group"),
        "totalFloatingIpsUsed": g(&u, "floatingip"), "totalServerGroupsUsed": groups,
    }}}))
    .into_response())
}
