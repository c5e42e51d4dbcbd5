//! Glance v2 under `/image`: images (create, list with filters including `id=in:`,
//! show, JSON-patch update, delete), data upload and download (streamed), tags.
//! Visibility: a project sees its own images, public and community ones; admins see all.
//! Publishing an image (visibility `public`) is for admins, as in Glance's default policy.

// Handlers return `Result<Response, Response>` as axum handlers do.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::Api;
use super::{authenticate, base_url, time, OsError, Scope};
use crate::cluster::store::image_tables::{ImageRecord, ImageStatus};
use crate::control::images::CreateImage;
use crate::control::ControlError;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/image", get(versions))
        .route("/image/", get(versions))
        .route("/image/versions", get(versions))
        .route("/image/v2/images", get(list).post(create))
        .route(
            "/image/v2/images/{id}",
            get(show).patch(update).delete(delete),
        )
        .route("/image/v2/images/{id}/file", put(upload).get(download))
        .route(
            "/image/v2/images/{id}/tags/{tag}",
            put(add_tag).delete(remove_tag),
        )
        .route("/image/v2/schemas/image", get(schema))
        .route("/image/v2/schemas/images", get(schema))
}

type R = Result<Response, Response>;

/// Glance's error body (webob's plain text).
fn gerr(code: StatusCode, msg: impl Into<String>) -> Response {
    let reason = code.canonical_reason().unwrap_or("Error");
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        format!("{} {reason}\n\n{}\n\n   ", code.as_u16(), msg.into()),
    )
        .into_response()
}

fn cerr(e: ControlError) -> Response {
    let code = match &e {
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
        ControlError::Conflict(_) => StatusCode::CONFLICT,
        // Glance answers quota refusals (unified limits) with 413.
        ControlError::OverQuota { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
        ControlError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        ControlError::NotReady(_) | ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    gerr(code, crate::telemetry::error_chain(&e))
}

fn os(e: OsError) -> Response {
    gerr(e.0, e.1)
}

fn who(node: &Api, headers: &HeaderMap) -> Result<Scope, Response> {
    let t = authenticate(node, headers).map_err(os)?;
    Scope::of(&t).map_err(os)
}

fn versions_doc(base: &str) -> Value {
    let v = |id: &str, status: &str| {
        json!({"id": id, "status": status,
               "links": [{"rel": "self", "href": format!("{base}/image/v2/")}]})
    };
    json!({"versions": [v("v2.16", "CURRENT"), v("v2.15", "SUPPORTED"), v("v2.9", "SUPPORTED"),
                         v("v2.7", "SUPPORTED"), v("v2.0", "SUPPORTED")]})
}

async fn versions(headers: HeaderMap) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(versions_doc(&base_url(&headers))),
    )
        .into_response()
}

async fn schema() -> Json<Value> {
    Json(json!({"name": "image", "properties": {}, "additionalProperties": {"type": "string"}}))
}

const STATUS: &[&str] = &["queued", "saving", "active", "killed"];

fn status_str(s: ImageStatus) -> &'static str {
    match s {
        ImageStatus::Queued => STATUS[0],
        ImageStatus::Saving => STATUS[1],
        ImageStatus::Active => STATUS[2],
        ImageStatus::Killed => STATUS[3],
    }
}

pub fn image_json(i: &ImageRecord) -> Value {
    let mut v = json!({
        "id": i.id, "name": if i.name.is_empty() { Value::Null } else { json!(i.name) },
        "status": status_str(i.status), "visibility": i.visibility, "protected": i.protected,
        "os_hidden": i.hidden, "checksum": i.checksum,
        "os_hash_algo": i.sha512.as_ref().map(|_| "sha512"), "os_hash_value": i.sha512,
        "owner": i.owner, "size": i.size, "virtual_size": i.virtual_size,
        "min_ram": i.min_ram, "min_disk": i.min_disk,
        "disk_format": i.disk_format, "container_format": i.container_format,
        "created_at": time(i.created_at), "updated_at": time(i.updated_at),
        "tags": i.tags,
        "self": format!("/v2/images/{}", i.id), "file": format!("/v2/images/{}/file", i.id),
        "schema": "/v2/schemas/image",
    });
    for (k, val) in &i.properties {
        v[k] = json!(val);
    }
    v
}

/// Whether `s` may see the image: `control`'s rule (owner, admin, public or community).
pub fn visible(control: &crate::control::Control, s: &Scope, i: &ImageRecord) -> bool {
    use crate::control::caller::Scoped;
    i.visible_to(&s.caller, control)
}

/// Whether `s` may change it.
fn owns(s: &Scope, i: &ImageRecord) -> Result<(), Response> {
    s.write().map_err(os)?;
    if s.admin || i.owner == s.project {
        Ok(())
    } else {
        Err(gerr(
            StatusCode::FORBIDDEN,
            format!("You are not permitted to modify image {}.", i.id),
        ))
    }
}

fn find(node: &Api, s: &Scope, id: &str) -> Result<ImageRecord, Response> {
    match node.control.image(&s.caller, id) {
        Ok(i) => Ok(i),
        Err(ControlError::NotFound(_)) => Err(gerr(
            StatusCode::NOT_FOUND,
            format!("No image found with ID {id}"),
        )),
        Err(e) => Err(cerr(e)),
    }
}

/// Fields Glance computes; a client may not set them.
const READ_ONLY: &[&str] = &[
    "status",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "direct_url",
    "locations",
    "owner",
];

fn bad(m: impl Into<String>) -> Response {
    gerr(StatusCode::BAD_REQUEST, m)
}

fn str_field(k: &str, v: &Value) -> Result<Option<String>, Response> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(bad(format!(
            "Provided object does not match schema 'image': {v} is not of type 'string' (property {k})"
        ))),
    }
}

fn u64_field(k: &str, v: &Value) -> Result<u64, Response> {
    v.as_u64().ok_or_else(|| {
        bad(format!(
            "Provided object does not match schema 'image': {v} is not a non-negative integer (property {k})"
        ))
    })
}

fn bool_field(k: &str, v: &Value) -> Result<bool, Response> {
    v.as_bool().ok_or_else(|| {
        bad(format!(
            "Provided object does not match schema 'image': {v} is not of type 'boolean' (property {k})"
        ))
    })
}

fn tags_field(v: &Value) -> Result<Vec<String>, Response> {
    let a = v.as_array().ok_or_else(|| {
        bad("Provided object does not match schema 'image': tags must be an array")
    })?;
    let mut out: Vec<String> = Vec::new();
    for t in a {
        let t = t.as_str().ok_or_else(|| {
            bad("Provided object does not match schema 'image': tags are strings")
        })?;
        if !out.iter().any(|x| x == t) {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

/// Sets one field of an image from a client value (create and PATCH share this).
fn set_field(i: &mut ImageRecord, k: &str, v: &Value, s: &Scope) -> Result<(), Response> {
    match k {
        "name" => i.name = str_field(k, v)?.unwrap_or_default(),
        "visibility" => {
            let vis = str_field(k, v)?.unwrap_or_default();
            if vis == "public" && !s.admin {
                return Err(gerr(
                    StatusCode::FORBIDDEN,
                    "You are not authorized to complete publicize_image action.",
                ));
            }
            i.visibility = vis;
        }
        "protected" => i.protected = bool_field(k, v)?,
        "os_hidden" => i.hidden = bool_field(k, v)?,
        "min_disk" => i.min_disk = u64_field(k, v)?,
        "min_ram" => i.min_ram = u64_field(k, v)?,
        "tags" => i.tags = tags_field(v)?,
        "disk_format" | "container_format" => {
            if i.status != ImageStatus::Queued {
                return Err(gerr(
                    StatusCode::FORBIDDEN,
                    format!("Attribute {k} can be only replaced for a queued image."),
                ));
            }
            let f = str_field(k, v)?;
            if k == "disk_format" {
                i.disk_format = f;
            } else {
                i.container_format = f;
            }
        }
        "id" => return Err(gerr(StatusCode::FORBIDDEN, "Attribute 'id' is read-only.")),
        k if READ_ONLY.contains(&k) => {
            return Err(gerr(
                StatusCode::FORBIDDEN,
                format!("Attribute '{k}' is read-only."),
            ))
        }
        k => match str_field(k, v)? {
            Some(val) => {
                i.properties.insert(k.to_string(), val);
            }
            None => {
                i.properties.remove(k);
            }
        },
    }
    Ok(())
}

async fn create(State(node): State<Arc<Api>>, headers: HeaderMap, b: axum::body::Bytes) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(os)?;
    let v: Value = serde_json::from_slice(&b)
        .map_err(|e| bad(format!("Malformed JSON in request body: {e}")))?;
    let obj: Map<String, Value> = match v {
        Value::Object(o) => o,
        _ => return Err(bad("The request body must be a JSON object")),
    };
    let id = match obj.get("id") {
        Some(v) => str_field("id", v)?,
        None => None,
    };
    // The fields are applied to a scratch record, then the control plane checks them.
    let mut scratch = ImageRecord {
        id: String::new(),
        name: String::new(),
        owner: s.project.clone(),
        status: ImageStatus::Queued,
        visibility: "shared".into(),
        protected: false,
        hidden: false,
        disk_format: None,
        container_format: None,
        min_disk: 0,
        min_ram: 0,
        size: None,
        virtual_size: None,
        checksum: None,
        sha512: None,
        tags: vec![],
        properties: BTreeMap::new(),
        volume: None,
        snapshot: None,
        source: None,
        created_at: 0,
        updated_at: 0,
    };
    for (k, val) in &obj {
        if k != "id" {
            set_field(&mut scratch, k, val, &s)?;
        }
    }
    let rec = node
        .control
        .create_image(
            &s.project,
            CreateImage {
                id,
                name: scratch.name,
                disk_format: scratch.disk_format,
                container_format: scratch.container_format,
                visibility: Some(scratch.visibility),
                protected: scratch.protected,
                hidden: scratch.hidden,
                min_disk: scratch.min_disk,
                min_ram: scratch.min_ram,
                tags: scratch.tags,
                properties: scratch.properties,
            },
        )
        .await
        .map_err(cerr)?;
    Ok((StatusCode::CREATED, Json(image_json(&rec))).into_response())
}

async fn list(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> R {
    let s = who(&node, &headers)?;
    let q: HashMap<String, String> = q.into_iter().collect();
    let ids: Option<Vec<&str>> = q
        .get("id")
        .map(|v| v.strip_prefix("in:").unwrap_or(v).split(',').collect());
    let tags: Vec<&str> = q.get("tag").map(|t| vec![t.as_str()]).unwrap_or_default();
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| bad(format!("limit param must be an integer: {l}")))?,
        None => 25,
    };
    let mut out: Vec<&ImageRecord> = Vec::new();
    let all = node.control.images().map_err(cerr)?;
    for i in &all {
        let vis_filter = q.get("visibility").map(String::as_str);
        let shown = match vis_filter {
            // Glance lists community images only when asked for them.
            Some("all") | None => {
                visible(&node.control, &s, i)
                    && (i.visibility != "community"
                        || vis_filter == Some("all")
                        || s.admin
                        || i.owner == s.project)
            }
            Some(v) => visible(&node.control, &s, i) && i.visibility == v,
        };
        let ok = shown
            && (!i.hidden || q.get("os_hidden").map(String::as_str) == Some("true"))
            && ids.as_ref().is_none_or(|l| l.contains(&i.id.as_str()))
            && q.get("name").is_none_or(|n| *n == i.name)
            && q.get("status").is_none_or(|st| st == status_str(i.status))
            && q.get("owner").is_none_or(|o| *o == i.owner)
            && q.get("disk_format")
                .is_none_or(|f| Some(f) == i.disk_format.as_ref())
            && q.get("container_format")
                .is_none_or(|f| Some(f) == i.container_format.as_ref())
            && tags.iter().all(|t| i.tags.iter().any(|x| x == t));
        if ok {
            out.push(i);
        }
    }
    if let Some(m) = q.get("marker") {
        let at = out
            .iter()
            .position(|i| &i.id == m)
            .ok_or_else(|| bad(format!("Invalid marker. Image {m} could not be found.")))?;
        out.drain(..=at);
    }
    let more = out.len() > limit;
    out.truncate(limit);
    let mut body = json!({
        "images": out.iter().map(|i| image_json(i)).collect::<Vec<_>>(),
        "first": "/v2/images", "schema": "/v2/schemas/images",
    });
    if more {
        if let Some(last) = out.last() {
            body["next"] = json!(format!("/v2/images?marker={}&limit={limit}", last.id));
        }
    }
    Ok(Json(body).into_response())
}

async fn show(State(node): State<Arc<Api>>, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> R {
    let s = who(&node, &headers)?;
    Ok(Json(image_json(&find(&node, &s, &id)?)).into_response())
}

/// JSON-patch (`application/openstack-images-v2.1-json-patch`): add, replace, remove.
async fn update(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    b: axum::body::Bytes,
) -> R {
    let s = who(&node, &headers)?;
    let cur = find(&node, &s, &id)?;
    owns(&s, &cur)?;
    let ops: Vec<Value> = serde_json::from_slice(&b)
        .map_err(|e| bad(format!("Malformed JSON in request body: {e}")))?;
    // Applied to a copy first, so that a bad operation changes nothing.
    let mut next = cur.clone();
    for op in &ops {
        let kind = op["op"].as_str().unwrap_or("");
        let path = op["path"]
            .as_str()
            .and_then(|p| p.strip_prefix('/'))
            .ok_or_else(|| bad(format!("Unable to find '/' in JSON pointer of {op}")))?;
        match kind {
            "add" | "replace" => set_field(&mut next, path, &op["value"], &s)?,
            "remove" => {
                if next.properties.remove(path).is_none() {
                    return Err(gerr(
                        StatusCode::CONFLICT,
                        format!("Property {path} does not exist."),
                    ));
                }
            }
            _ => {
                return Err(bad(format!(
                    "Operation objects must contain exactly one member named \"add\", \"remove\", or \"replace\" (got {kind:?})"
                )))
            }
        }
    }
    let rec = node
        .control
        .update_image(&id, |r| {
            r.name = next.name.clone();
            r.visibility = next.visibility.clone();
            r.protected = next.protected;
            r.hidden = next.hidden;
            r.min_disk = next.min_disk;
            r.min_ram = next.min_ram;
            r.tags = next.tags.clone();
            r.properties = next.properties.clone();
            if r.status == ImageStatus::Queued {
                r.disk_format = next.disk_format.clone();
                r.container_format = next.container_format.clone();
            }
            Ok(())
        })
        .await
        .map_err(cerr)?;
    Ok(Json(image_json(&rec)).into_response())
}

async fn delete(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    let cur = find(&node, &s, &id)?;
    owns(&s, &cur)?;
    node.control.delete_image(&id).await.map_err(cerr)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn upload(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Body,
) -> R {
    let s = who(&node, &headers)?;
    let cur = find(&node, &s, &id)?;
    owns(&s, &cur)?;
    if cur.disk_format.is_none() || cur.container_format.is_none() {
        return Err(bad(
            "Properties disk_format, container_format must be set prior to saving data.",
        ));
    }
    let len = match headers.get(header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| bad("Content-Length is not a number"))?,
        ),
        None => None,
    };
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed();
    node.control
        .upload_image(&id, len, stream)
        .await
        .map_err(|e| match e {
            ControlError::Invalid(m) if m.starts_with("Image exceeds") => {
                gerr(StatusCode::PAYLOAD_TOO_LARGE, m)
            }
            e => cerr(e),
        })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn download(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    let cur = find(&node, &s, &id)?;
    if cur.status != ImageStatus::Active {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (rec, stream) = node.control.read_image(&s.caller, &id).map_err(cerr)?;
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(size) = rec.size {
        h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
    }
    if let Some(md5) = rec.checksum.as_deref().and_then(|c| c.parse().ok()) {
        h.insert("content-md5", md5);
    }
    Ok(r)
}

async fn add_tag(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((id, tag)): UrlPath<(String, String)>,
) -> R {
    let s = who(&node, &headers)?;
    owns(&s, &find(&node, &s, &id)?)?;
    node.control
        .update_image(&id, |r| {
            if !r.tags.contains(&tag) {
                r.tags.push(tag.clone());
            }
            Ok(())
        })
        .await
        .map_err(cerr)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_tag(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((id, tag)): UrlPath<(String, String)>,
) -> R {
    let s = who(&node, &headers)?;
    owns(&s, &find(&node, &s, &id)?)?;
    let mut found = true;
    node.control
        .update_image(&id, |r| {
            found = r.tags.contains(&tag);
            r.tags.retain(|t| t != &tag);
            Ok(())
        })
        .await
        .map_err(cerr)?;
    if !found {
        return Err(gerr(StatusCode::NOT_FOUND, format!("Tag {tag} not found")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
