//! Cinder v3 under `/volume/v3/{project_id}`, microversions 3.0 to 3.27: volumes (empty,
//! from an image, from a snapshot, or a clone of a volume), update, extend, delete (with
//! `cascade`), snapshots, attachments (3.27), the one default volume type, limits.
//! Volumes are Strata's replicated volumes, scoped by project.

// Handlers return `Result<Response, Response>` as axum handlers do.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::Api;
use super::{authenticate, base_url, OsError, Scope};
use crate::cluster::store::storage_tables::{SnapshotRecord, SnapshotState, VolumeRecord};
use crate::control::volumes::{CreateVolume, VolumeView};
use crate::control::ControlError;

/// Highest microversion served.
pub const MAX_MICRO: (u32, u32) = (3, 27);
const DEFAULT_TYPE_ID: &str = "5f5b2d7e-0b0e-4d36-9a8f-2f8f0c3c1e01";

pub fn routes() -> Router<Arc<Api>> {
    let p = |s: &str| format!("/volume/v3/{{project}}/{s}");
    Router::new()
        .route("/volume", get(versions))
        .route("/volume/", get(versions))
        .route("/volume/v3", get(version))
        .route("/volume/v3/", get(version))
        .route(&p("volumes"), get(list).post(create))
        .route(&p("volumes/detail"), get(detail))
        .route(&p("volumes/{id}"), get(show).put(update).delete(delete))
        .route(&p("volumes/{id}/action"), post(action))
        .route(&p("snapshots"), get(snapshots).post(create_snapshot))
        .route(&p("snapshots/detail"), get(snapshots_detail))
        .route(&p("snapshots/{id}"), get(snapshot).delete(delete_snapshot))
        .route(&p("attachments"), get(attachments))
        .route(&p("attachments/detail"), get(attachments))
        .route(&p("types"), get(types))
        .route(&p("types/default"), get(default_type))
        .route(&p("types/{id}"), get(default_type))
        .route(&p("limits"), get(limits))
}

type R = Result<Response, Response>;

/// Cinder's fault body: `{"itemNotFound": {"code", "message"}}` and kin.
fn cinder(code: StatusCode, message: impl Into<String>) -> Response {
    let key = match code {
        StatusCode::NOT_FOUND => "itemNotFound",
        StatusCode::BAD_REQUEST => "badRequest",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::CONFLICT => "conflictingRequest",
        StatusCode::NOT_ACCEPTABLE => "notAcceptable",
        StatusCode::PAYLOAD_TOO_LARGE => "overLimit",
        _ => "computeFault",
    };
    (
        code,
        Json(json!({key: {"code": code.as_u16(), "message": message.into()}})),
    )
        .into_response()
}

fn cerr(e: ControlError) -> Response {
    let code = match &e {
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::Invalid(_) | ControlError::Conflict(_) => StatusCode::BAD_REQUEST,
        ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
        ControlError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        ControlError::OverQuota { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        ControlError::NotReady(_) | ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    cinder(code, crate::telemetry::error_chain(&e))
}

fn bad(m: impl Into<String>) -> Response {
    cinder(StatusCode::BAD_REQUEST, m)
}

/// The caller's scope, checked against the project in the URL, and the microversion.
struct Call {
    s: Scope,
    micro: (u32, u32),
}

fn call(node: &Api, headers: &HeaderMap, project: &str) -> Result<Call, Response> {
    let t = authenticate(node, headers).map_err(IntoResponse::into_response)?;
    let s = Scope::of(&t).map_err(|OsError(c, m)| cinder(c, m))?;
    if s.project != project && !s.admin {
        return Err(cinder(
            StatusCode::FORBIDDEN,
            format!("Policy doesn't allow access to project {project}."),
        ));
    }
    let micro = microversion(headers)?;
    Ok(Call { s, micro })
}

/// `OpenStack-API-Version: volume 3.X` (or `latest`); 3.0 when absent.
fn microversion(headers: &HeaderMap) -> Result<(u32, u32), Response> {
    let Some(h) = headers
        .get("openstack-api-version")
        .and_then(|v| v.to_str().ok())
    else {
        return Ok((3, 0));
    };
    let v = h
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("volume "))
        .map(str::trim);
    let Some(v) = v else { return Ok((3, 0)) };
    if v == "latest" {
        return Ok(MAX_MICRO);
    }
    let parsed = v
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    match parsed {
        Some(m) if m >= (3, 0) && m <= MAX_MICRO => Ok(m),
        _ => Err(cinder(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "Version {v} is not supported by the API. Minimum is 3.0 and maximum is {}.{}.",
                MAX_MICRO.0, MAX_MICRO.1
            ),
        )),
    }
}

fn with_version(mut r: Response, m: (u32, u32)) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("volume {}.{}", m.0, m.1)) {
        r.headers_mut().insert("OpenStack-API-Version", v);
        r.headers_mut()
            .insert("Vary", HeaderValue::from_static("OpenStack-API-Version"));
    }
    r
}

fn reply(c: &Call, code: StatusCode, v: Value) -> R {
    Ok(with_version((code, Json(v)).into_response(), c.micro))
}

fn version_doc(base: &str) -> Value {
    json!({
        "id": "v3.0", "status": "CURRENT", "version": format!("{}.{}", MAX_MICRO.0, MAX_MICRO.1),
        "min_version": "3.0", "updated": "2023-08-31T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/volume/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}],
    })
}

async fn versions(headers: HeaderMap) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": [version_doc(&base_url(&headers))]})),
    )
        .into_response()
}

async fn version(headers: HeaderMap) -> Json<Value> {
    Json(json!({"versions": [version_doc(&base_url(&headers))]}))
}

fn time(secs: u64) -> String {
    crate::control::identity::iso8601(secs)
}

fn gib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 30)
}

/// Cinder's status of a volume.
fn status(v: &VolumeView) -> &'static str {
    if v.status == "creating" {
        "creating"
    } else if v.record.used_by.is_some() {
        "in-use"
    } else {
        "available"
    }
}

/// Where each volume is attached: volume id → (server, device).
fn attached(node: &Api) -> HashMap<String, (String, String)> {
    let mut out = HashMap::new();
    for v in node.control.vms().unwrap_or_default() {
        for (vol, dev) in super::server_volumes::attachments(&v) {
            out.insert(vol, (v.record.id.0.clone(), dev));
        }
    }
    out
}

fn volume_json(
    v: &VolumeView,
    c: &Call,
    base: &str,
    at: &HashMap<String, (String, String)>,
    full: bool,
) -> Value {
    let r = &v.record;
    let attachments: Vec<Value> = at
        .get(&r.id.0)
        .map(|(server, dev)| {
            json!({"id": r.id.0, "attachment_id": format!("{}-{server}", &r.id.0[..8]),
                   "volume_id": r.id.0, "server_id": server, "host_name": null,
                   "device": dev, "attached_at": time(r.created_at)})
        })
        .into_iter()
        .collect();
    let project = r.project.clone().unwrap_or_default();
    let mut j = json!({
        "id": r.id.0, "name": if r.name.is_empty() { Value::Null } else { json!(r.name) },
        "description": if r.description.is_empty() { Value::Null } else { json!(r.description) },
        "size": gib(r.size), "status": status(v), "availability_zone": "nova",
        "created_at": time(r.created_at), "updated_at": time(r.created_at),
        "attachments": attachments,
        "bootable": if r.source_image.is_some() { "true" } else { "false" },
        "encrypted": false, "multiattach": false, "metadata": r.metadata,
        "volume_type": "__DEFAULT__",
        "snapshot_id": r.parent.as_ref().map(|p| p.snapshot.clone()),
        "source_volid": null, "user_id": r.user, "consistencygroup_id": null,
        "replication_status": null, "migration_status": null,
        "links": [{"rel": "self", "href": format!("{base}/volume/v3/{project}/volumes/{}", r.id.0)},
                  {"rel": "bookmark", "href": format!("{base}/volume/{project}/volumes/{}", r.id.0)}],
    });
    if let Some(img) = &r.source_image {
        j["volume_image_metadata"] = json!({"image_id": img});
    }
    if full {
        j["os-vol-tenant-attr:tenant_id"] = json!(project);
        if c.s.admin {
            j["os-vol-host-attr:host"] = json!(r.attached_to.map(|n| n.to_string()));
            j["os-vol-mig-status-attr:migstat"] = Value::Null;
            j["os-vol-mig-status-attr:name_id"] = Value::Null;
        }
    }
    if c.micro >= (3, 13) {
        j["group_id"] = Value::Null;
    }
    if c.micro >= (3, 21) {
        j["provider_id"] = Value::Null;
    }
    j
}

/// A volume Cinder may show this caller (not an image's data).
fn find(node: &Api, c: &Call, id: &str) -> Result<VolumeView, Response> {
    match node.control.volume(&c.s.caller, id) {
        Ok(v)
            if v.record.id.0 == id
                && v.record.image.is_none()
                && c.s.sees(v.record.project.as_deref()) =>
        {
            Ok(v)
        }
        Ok(_) | Err(ControlError::NotFound(_)) => Err(cinder(
            StatusCode::NOT_FOUND,
            format!("Volume {id} could not be found."),
        )),
        Err(e) => Err(cerr(e)),
    }
}

fn listed(node: &Api, c: &Call, q: &[(String, String)]) -> Result<Vec<VolumeView>, Response> {
    let q: HashMap<&str, &str> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let all = c.s.admin
        && q.get("all_tenants")
            .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no"));
    Ok(node
        .control
        .volumes()
        .map_err(cerr)?
        .into_iter()
        .filter(|v| {
            v.record.image.is_none()
                && v.record.project.is_some()
                && (all || v.record.project.as_deref() == Some(c.s.project.as_str()))
                && q.get("name").is_none_or(|n| v.record.name == *n)
                && q.get("status").is_none_or(|st| status(v) == *st)
        })
        .collect())
}

async fn list(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> R {
    let c = call(&node, &headers, &project)?;
    let base = base_url(&headers);
    let list: Vec<Value> = listed(&node, &c, &q)?
        .iter()
        .map(|v| {
            json!({"id": v.record.id.0, "name": v.record.name,
                   "links": [{"rel": "self", "href": format!("{base}/volume/v3/{project}/volumes/{}", v.record.id.0)}]})
        })
        .collect();
    reply(&c, StatusCode::OK, json!({"volumes": list}))
}

async fn detail(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> R {
    let c = call(&node, &headers, &project)?;
    let base = base_url(&headers);
    let at = attached(&node);
    let list: Vec<Value> = listed(&node, &c, &q)?
        .iter()
        .map(|v| volume_json(v, &c, &base, &at, true))
        .collect();
    reply(&c, StatusCode::OK, json!({"volumes": list}))
}

async fn show(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((project, id)): UrlPath<(String, String)>,
) -> R {
    let c = call(&node, &headers, &project)?;
    let v = find(&node, &c, &id)?;
    let j = volume_json(&v, &c, &base_url(&headers), &attached(&node), true);
    reply(&c, StatusCode::OK, json!({"volume": j}))
}

fn body(b: &[u8], key: &str) -> Result<serde_json::Map<String, Value>, Response> {
    let v: Value =
        serde_json::from_slice(b).map_err(|e| bad(format!("Malformed request body: {e}")))?;
    v.get(key)
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| bad(format!("Missing required element '{key}' in request body.")))
}

fn opt_str(o: &serde_json::Map<String, Value>, k: &str) -> Result<Option<String>, Response> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(bad(format!(
            "Invalid input for field/attribute {k}. Value: {v}. {v} is not of type 'string'"
        ))),
    }
}

fn metadata(o: &serde_json::Map<String, Value>) -> Result<BTreeMap<String, String>, Response> {
    match o.get("metadata") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| bad(format!("Invalid input for field/attribute metadata: {v} is not of type 'string'")))
            })
            .collect(),
        Some(v) => Err(bad(format!(
            "Invalid input for field/attribute metadata. Value: {v}. {v} is not of type 'object'"
        ))),
    }
}

const CREATE_KEYS: &[&str] = &[
    "name",
    "size",
    "description",
    "metadata",
    "imageRef",
    "volume_type",
    "snapshot_id",
    "source_volid",
    "availability_zone",
    "backup_id",
    "consistencygroup_id",
    "multiattach",
    "display_name",
    "display_description",
    "group_id",
    "scheduler_hints",
];

async fn create(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    let c = call(&node, &headers, &project)?;
    c.s.write().map_err(|OsError(code, m)| cinder(code, m))?;
    let o = body(&b, "volume")?;
    if let Some(k) = o.keys().find(|k| !CREATE_KEYS.contains(&k.as_str())) {
        return Err(bad(format!(
            "Invalid input for field/attribute volume. Additional properties are not allowed ('{k}' was unexpected)"
        )));
    }
    let size = match o.get("size") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    bad(format!(
                        "Invalid input received: Volume size '{v}' must be an integer and greater than 0"
                    ))
                })?,
        ),
    };
    if let Some(t) = opt_str(&o, "volume_type")? {
        if t != "__DEFAULT__" && t != DEFAULT_TYPE_ID {
            return Err(cinder(
                StatusCode::NOT_FOUND,
                format!("Volume type with name {t} could not be found."),
            ));
        }
    }
    if let Some(az) = opt_str(&o, "availability_zone")? {
        if az != "nova" {
            return Err(bad(format!("Availability zone '{az}' is invalid.")));
        }
    }
    for k in [
        "backup_id",
        "source_volid",
        "consistencygroup_id",
        "group_id",
    ] {
        if opt_str(&o, k)?.is_some() {
            return Err(bad(format!("Creating a volume with {k} is not supported")));
        }
    }
    let name = opt_str(&o, "name")?
        .or(opt_str(&o, "display_name")?)
        .unwrap_or_default();
    let description = opt_str(&o, "description")?
        .or(opt_str(&o, "display_description")?)
        .unwrap_or_default();
    let image = opt_str(&o, "imageRef")?;
    let snapshot = opt_str(&o, "snapshot_id")?;
    // The source: an image's snapshot, or a volume snapshot of this project.
    let source = match (&image, &snapshot) {
        (Some(_), Some(_)) => return Err(bad("Give imageRef or snapshot_id, not both")),
        (Some(i), None) => {
            let img = node.control.image(&c.s.caller, i).ok();
            if img.is_none() {
                return Err(cinder(
                    StatusCode::NOT_FOUND,
                    format!("Image {i} could not be found."),
                ));
            }
            let f = node.control.image_file(&c.s.caller, i).map_err(cerr)?;
            Some((f.snapshot, f.size))
        }
        (None, Some(sid)) => {
            let (vol, snap) = find_snapshot(&node, &c, sid)?;
            let _ = vol;
            Some((snap.id.clone(), snap.size))
        }
        (None, None) => None,
    };
    // Sizes are GiB; a size whose bytes do not fit in 64 bits is refused, not wrapped.
    let size = match size {
        Some(g) if g.checked_mul(1 << 30).is_none() => {
            return Err(bad(format!(
                "Invalid input received: Volume size {g}GB is too large"
            )))
        }
        s => s,
    };
    let bytes = match (size, &source) {
        (Some(g), Some((_, min))) if (g << 30) < *min => {
            return Err(bad(format!(
            "Invalid input received: Volume size {g}GB cannot be smaller than the source ({} GB)",
            gib(*min)
        )))
        }
        (Some(g), _) => g << 30,
        (None, Some((_, min))) => gib(*min) << 30,
        (None, None) => return Err(bad("Invalid input received: 'size' is a required property")),
    };
    let v = node
        .control
        .create_volume(
            &c.s.caller,
            CreateVolume {
                name,
                size_bytes: bytes,
                replicas: None,
                source_snapshot: source.map(|s| s.0),
                project: Some(c.s.project.clone()),
                image: None,
                source_image: image,
                description,
                metadata: metadata(&o)?,
                user: Some(c.s.user.clone()),
            },
        )
        .await
        .map_err(cerr)?;
    let mut j = volume_json(&v, &c, &base_url(&headers), &HashMap::new(), false);
    j["status"] = json!("creating");
    reply(&c, StatusCode::ACCEPTED, json!({"volume": j}))
}

async fn update(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((project, id)): UrlPath<(String, String)>,
    b: axum::body::Bytes,
) -> R {
    let c = call(&node, &headers, &project)?;
    c.s.write().map_err(|OsError(code, m)| cinder(code, m))?;
    find(&node, &c, &id)?;
    let o = body(&b, "volume")?;
    if let Some(k) = o.keys().find(|k| {
        !matches!(
            k.as_str(),
            "name" | "description" | "metadata" | "display_name" | "display_description"
        )
    }) {
        return Err(bad(format!(
            "Invalid input for field/attribute volume. Additional properties are not allowed ('{k}' was unexpected)"
        )));
    }
    let name = opt_str(&o, "name")?.or(opt_str(&o, "display_name")?);
    let desc = opt_str(&o, "description")?.or(opt_str(&o, "display_description")?);
    let meta = o
        .contains_key("metadata")
        .then(|| metadata(&o))
        .transpose()?;
    node.control
        .edit_volume_info(&id, name, desc, meta)
        .await
        .map_err(cerr)?;
    let v = find(&node, &c, &id)?;
    let j = volume_json(&v, &c, &base_url(&headers), &attached(&node), true);
    reply(&c, StatusCode::OK, json!({"volume": j}))
}

async fn delete(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((project, id)): UrlPath<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> R {
    let c = call(&node, &headers, &project)?;
    c.s.write().map_err(|OsError(code, m)| cinder(code, m))?;
    let v = find(&node, &c, &id)?;
    if v.record.used_by.is_some() {
        return Err(bad(format!(
            "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer. (volume {id} is in-use)"
        )));
    }
    let cascade = q
        .iter()
        .any(|(k, v)| k == "cascade" && v.eq_ignore_ascii_case("true"));
    if !v.record.snapshots.is_empty() {
        if !cascade {
            return Err(bad(format!(
                "Invalid volume: Volume {id} still has dependent snapshots."
            )));
        }
        for s in &v.record.snapshots {
            node.control
                .delete_snapshot(&id, &s.id)
                .await
                .map_err(cerr)?;
        }
    }
    node.control
        .delete_volume(&c.s.caller, &id)
        .await
        .map_err(cerr)?;
    Ok(with_version(StatusCode::ACCEPTED.into_response(), c.micro))
}

async fn action(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((project, id)): UrlPath<(String, String)>,
    b: axum::body::Bytes,
) -> R {
    let c = call(&node, &headers, &project)?;
    c.s.write().map_err(|OsError(code, m)| cinder(code, m))?;
    let v = find(&node, &c, &id)?;
    let body: serde_json::Map<String, Value> =
        serde_json::from_slice(&b).map_err(|e| bad(format!("Malformed request body: {e}")))?;
    match body.iter().next() {
        Some((k, a)) if k == "os-extend" && body.len() == 1 => {
            let new = a["new_size"]
                .as_u64()
                .or_else(|| a["new_size"].as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| {
                    bad("Invalid input for field/attribute new_size: an integer is required")
                })?;
            if v.record.used_by.is_some() {
                return Err(bad(format!(
                    "Invalid volume: Volume {id} status must be 'available' to extend, currently in-use."
                )));
            }
            if new.checked_mul(1 << 30).is_none() {
                return Err(bad(format!(
                    "Invalid input received: New size for extend {new}GB is too large"
                )));
            }
            if new <= gib(v.record.size) {
                return Err(bad(format!(
                    "Invalid input received: New size for extend must be greater than current size. (current: {}, extended: {new}).",
                    gib(v.record.size)
                )));
            }
            node.control
                .grow_volume(&id, new << 30)
                .await
                .map_err(cerr)?;
            Ok(with_version(StatusCode::ACCEPTED.into_response(), c.micro))
        }
        Some((k, _)) => Err(bad(format!("There is no such action: {k}"))),
        None => Err(bad("An action body names one action")),
    }
}

fn snapshot_status(s: &SnapshotRecord) -> &'static str {
    match s.state {
        SnapshotState::Creating => "creating",
        SnapshotState::Available => "available",
        SnapshotState::Deleting => "deleting",
        SnapshotState::Error => "error",
    }
}

fn snapshot_json(vol: &VolumeRecord, s: &SnapshotRecord, c: &Call, full: bool) -> Value {
    let mut j = json!({
        "id": s.id, "name": s.name, "description": null, "volume_id": vol.id.0,
        "size": gib(s.size), "status": snapshot_status(s), "created_at": time(s.created_at),
        "updated_at": time(s.created_at), "metadata": {},
    });
    if full {
        j["os-extended-snapshot-attributes:project_id"] = json!(vol.project);
        j["os-extended-snapshot-attributes:progress"] =
            json!(if s.state == SnapshotState::Available {
                "100%"
            } else {
                "0%"
            });
    }
    if c.micro >= (3, 14) {
        j["group_snapshot_id"] = Value::Null;
    }
    j
}

fn find_snapshot(
    node: &Api,
    c: &Call,
    id: &str,
) -> Result<(VolumeRecord, SnapshotRecord), Response> {
    match node.control.find_snapshot(&c.s.caller, id) {
        Ok((v, s)) if s.id == id && v.image.is_none() && c.s.sees(v.project.as_deref()) => {
            Ok((v, s))
        }
        _ => Err(cinder(
            StatusCode::NOT_FOUND,
            format!("Snapshot {id} could not be found."),
        )),
    }
}

fn all_snapshots(node: &Api, c: &Call) -> Result<Vec<(VolumeRecord, SnapshotRecord)>, Response> {
    Ok(node
        .control
        .volumes()
        .map_err(cerr)?
        .into_iter()
        .filter(|v| {
            v.record.image.is_none() && v.record.project.as_deref() == Some(c.s.project.as_str())
        })
        .flat_map(|v| {
            let r = v.record;
            r.snapshots.clone().into_iter().map(move |s| (r.clone(), s))
        })
        .collect())
}

/// The project's snapshots, in the list or the detail view.
fn snapshot_list(node: &Api, headers: &HeaderMap, project: &str, detail: bool) -> R {
    let c = call(node, headers, project)?;
    let list: Vec<Value> = all_snapshots(node, &c)?
        .iter()
        .map(|(v, s)| snapshot_json(v, s, &c, detail))
        .collect();
    reply(&c, StatusCode::OK, json!({"snapshots": list}))
}

async fn snapshots(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
) -> R {
    snapshot_list(&node, &headers, &project, false)
}

async fn snapshots_detail(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
) -> R {
    snapshot_list(&node, &headers, &project, true)
}

async fn snapshot(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((project, id)): UrlPath<(String, String)>,
) -> R {
    let c = call(&node, &headers, &project)?;
    let (v, s) = find_snapshot(&node, &c, &id)?;
    reply(
        &c,
        StatusCode::OK,
        json!({"snapshot": snapshot_json(&v, &s, &c, true)}),
    )
}

async fn create_snapshot(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    let c = call(&node, &headers, &project)?;
    c.s.write().map_err(|OsError(code, m)| cinder(code, m))?;
    let o = body(&b, "snapshot")?;
    let vol = opt_str(&o, "volume_id")?
        .ok_or_else(|| bad("Invalid input: 'volume_id' is a required property"))?;
    let v = find(&node, &c, &vol)?;
    let force = o.get("force").and_then(Value::as_bool).unwrap_or(false);
    if v.record.used_by.is_some() && !force {
        return Err(bad(format!(
            "Invalid volume: Volume {vol} status must be available, but current status is: in-use."
        )));
    }
    let name = opt_str(&o, "name")?
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("snapshot-{}", &crate::ids::VolumeId::random().0[..8]));
    let s = node
        .control
        .snapshot_volume(&vol, &name)
        .await
        .map_err(cerr)?;
    let rec = node
        .control
        .find_volume(&c.s.caller, &vol)
        .map_err(cerr)?
        .value;
    reply(
        &c,
        StatusCode::ACCEPTED,
        json!({"snapshot": snapshot_json(&rec, &s, &c, false)}),
    )
}

async fn delete_snapshot(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((project, id)): UrlPath<(String, String)>,
) -> R {
    let c = call(&node, &headers, &project)?;
    c.s.write().map_err(|OsError(code, m)| cinder(code, m))?;
    let (v, s) = find_snapshot(&node, &c, &id)?;
    node.control
        .delete_snapshot(&v.id.0, &s.id)
        .await
        .map_err(cerr)?;
    Ok(with_version(StatusCode::ACCEPTED.into_response(), c.micro))
}

/// Attachments (3.27): one per volume attached to a server of this project.
async fn attachments(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
) -> R {
    let c = call(&node, &headers, &project)?;
    if c.micro < (3, 27) {
        return Err(cinder(
            StatusCode::NOT_FOUND,
            "The resource could not be found (attachments need microversion 3.27).",
        ));
    }
    let mut list = Vec::new();
    for v in node.control.vms().map_err(cerr)? {
        if v.record.project.as_deref() != Some(c.s.project.as_str()) {
            continue;
        }
        for (vol, dev) in super::server_volumes::attachments(&v) {
            list.push(json!({
                "id": format!("{}-{}", &vol[..8], v.record.id.0), "status": "attached",
                "instance": v.record.id.0, "volume_id": vol, "attached_at": time(v.record.created_at),
                "detached_at": null, "attach_mode": "rw", "device": dev,
            }));
        }
    }
    reply(&c, StatusCode::OK, json!({"attachments": list}))
}

fn type_json() -> Value {
    json!({"id": DEFAULT_TYPE_ID, "name": "__DEFAULT__", "description": "Default Volume Type",
           "is_public": true, "extra_specs": {}, "qos_specs_id": null,
           "os-volume-type-access:is_public": true})
}

async fn types(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
) -> R {
    let c = call(&node, &headers, &project)?;
    reply(&c, StatusCode::OK, json!({"volume_types": [type_json()]}))
}

async fn default_type(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(params): UrlPath<Vec<(String, String)>>,
) -> R {
    let project = params
        .iter()
        .find(|(k, _)| k == "project")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let c = call(&node, &headers, &project)?;
    if let Some((_, id)) = params.iter().find(|(k, _)| k == "id") {
        if id != DEFAULT_TYPE_ID && id != "__DEFAULT__" {
            return Err(cinder(
                StatusCode::NOT_FOUND,
                format!("Volume type {id} could not be found."),
            ));
        }
    }
    reply(&c, StatusCode::OK, json!({"volume_type": type_json()}))
}

async fn limits(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(project): UrlPath<String>,
) -> R {
    let c = call(&node, &headers, &project)?;
    let l = node.control.quota_limits(&c.s.project).map_err(cerr)?;
    let u = node.control.quota_usage(&c.s.project).map_err(cerr)?;
    let g = |m: &BTreeMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(-1);
    reply(
        &c,
        StatusCode::OK,
        json!({"limits": {"rate": [], "absolute": {
            "maxTotalVolumes": g(&l, "volumes"), "maxTotalSnapshots": g(&l, "snapshots"),
            "maxTotalVolumeGigabytes": g(&l, "gigabytes"),
            "maxTotalBackups": 0, "maxTotalBackupGigabytes": 0,
            "totalVolumesUsed": g(&u, "volumes"), "totalGigabytesUsed": g(&u, "gigabytes"),
            "totalSnapshotsUsed": g(&u, "snapshots"), "totalBackupsUsed": 0,
            "totalBackupGigabytesUsed": 0,
        }}}),
    )
}
