//! Nova v2.1 under `/compute` (begun): version documents, flavors (admins create and
//! delete; everyone lists) and keypairs (each user's own). Servers come next.

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

use super::Api;
use super::{authenticate, base_url, OsError};
use crate::cluster::store::compute_tables::{Flavor, KeypairRecord};
use crate::control::identity::TokenInfo;
use crate::control::ControlError;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/compute", get(versions))
        .route("/compute/", get(versions))
        .route("/compute/v2.1", get(version))
        .route("/compute/v2.1/", get(version))
        .route("/compute/v2.1/flavors", get(flavors).post(create_flavor))
        .route("/compute/v2.1/flavors/detail", get(flavors_detail))
        .route(
            "/compute/v2.1/flavors/{id}",
            get(flavor).delete(delete_flavor),
        )
        .route(
            "/compute/v2.1/flavors/{id}/os-extra_specs",
            get(extra_specs),
        )
        .route(
            "/compute/v2.1/os-keypairs",
            get(keypairs).post(create_keypair),
        )
        .route(
            "/compute/v2.1/os-keypairs/{name}",
            get(keypair).delete(delete_keypair),
        )
}

type R = Result<Response, Response>;

/// Nova's error shape: `{"itemNotFound": {"code", "message"}}` and kin.
pub(super) fn nova(code: StatusCode, message: impl Into<String>) -> Response {
    let key = match code {
        StatusCode::NOT_FOUND => "itemNotFound",
        StatusCode::BAD_REQUEST => "badRequest",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::CONFLICT => "conflictingRequest",
        _ => "computeFault",
    };
    (
        code,
        Json(json!({key: {"code": code.as_u16(), "message": message.into()}})),
    )
        .into_response()
}

pub(super) fn cerr(e: ControlError) -> Response {
    let code = match &e {
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
        ControlError::Conflict(_) => StatusCode::CONFLICT,
        ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
        ControlError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        ControlError::OverQuota { .. } => StatusCode::FORBIDDEN,
        ControlError::NotReady(_) | ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    nova(code, crate::telemetry::error_chain(&e))
}

fn who(node: &Api, headers: &HeaderMap) -> Result<TokenInfo, Response> {
    authenticate(node, headers).map_err(IntoResponse::into_response)
}

fn admin(t: &TokenInfo) -> Result<(), Response> {
    super::require_admin(t).map_err(|OsError(c, m)| nova(c, m))
}

/// The compute microversions served: 2.1 only (the base shapes), stated in the version
/// document; a request for a later one is refused with 406, as Nova does.
pub const MAX_MICROVERSION: (u32, u32) = (2, 1);

/// Negotiates the compute microversion of every `/compute/v2.1` request (both headers
/// Nova reads) and echoes it.
pub async fn microversion(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if !req.uri().path().starts_with("/compute/v2.1") {
        return next.run(req).await;
    }
    let h = req.headers();
    let asked = h
        .get("openstack-api-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find_map(|p| p.strip_prefix("compute "))
                .map(|s| s.trim().to_string())
        })
        .or_else(|| {
            h.get("x-openstack-nova-api-version")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().to_string())
        });
    if let Some(a) = asked {
        if a != "latest" {
            let parsed = a
                .split_once('.')
                .and_then(|(x, y)| Some((x.parse::<u32>().ok()?, y.parse::<u32>().ok()?)));
            match parsed {
                None => {
                    return nova(
                        StatusCode::BAD_REQUEST,
                        format!("API Version String {a} is of invalid format. Must be of format MajorNum.MinorNum."),
                    )
                }
                Some(v) if v < (2, 1) || v > MAX_MICROVERSION => {
                    return nova(
                        StatusCode::NOT_ACCEPTABLE,
                        format!(
                            "Version {a} is not supported by the API. Minimum is 2.1 and maximum is {}.{}.",
                            MAX_MICROVERSION.0, MAX_MICROVERSION.1
                        ),
                    )
                }
                Some(_) => {}
            }
        }
    }
    let mut resp = next.run(req).await;
    let v = format!("{}.{}", MAX_MICROVERSION.0, MAX_MICROVERSION.1);
    let hs = resp.headers_mut();
    if let Ok(x) = format!("compute {v}").parse() {
        hs.insert("openstack-api-version", x);
    }
    if let Ok(x) = v.parse() {
        hs.insert("x-openstack-nova-api-version", x);
    }
    hs.insert(
        "vary",
        axum::http::HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    );
    resp
}

fn version_doc(base: &str) -> Value {
    json!({
        "id": "v2.1", "status": "CURRENT", "version": "2.1", "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}],
    })
}

async fn versions(headers: HeaderMap) -> Json<Value> {
    Json(json!({"versions": [version_doc(&base_url(&headers))]}))
}

async fn version(headers: HeaderMap) -> Json<Value> {
    Json(json!({"version": version_doc(&base_url(&headers))}))
}

fn flavor_brief(f: &Flavor, base: &str) -> Value {
    json!({
        "id": f.name, "name": f.name,
        "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/flavors/{}", f.name)}],
    })
}

pub(super) fn flavor_json(f: &Flavor, base: &str) -> Value {
    let mut v = flavor_brief(f, base);
    v["vcpus"] = json!(f.vcpus);
    v["ram"] = json!(f.ram_mb);
    v["disk"] = json!(f.disk_gb);
    v["OS-FLV-EXT-DATA:ephemeral"] = json!(0);
    v["OS-FLV-DISABLED:disabled"] = json!(false);
    v["swap"] = json!("");
    v["rxtx_factor"] = json!(1.0);
    v["os-flavor-access:is_public"] = json!(true);
    v
}

fn find_flavor(node: &Api, id: &str) -> Result<Flavor, Response> {
    node.control
        .flavors()
        .map_err(cerr)?
        .into_iter()
        .find(|f| f.name == id)
        .ok_or_else(|| {
            nova(
                StatusCode::NOT_FOUND,
                format!("Flavor {id} could not be found."),
            )
        })
}

async fn flavors(State(node): State<Arc<Api>>, headers: HeaderMap) -> R {
    who(&node, &headers)?;
    let base = base_url(&headers);
    let list: Vec<Value> = node
        .control
        .flavors()
        .map_err(cerr)?
        .iter()
        .map(|f| flavor_brief(f, &base))
        .collect();
    Ok(Json(json!({"flavors": list})).into_response())
}

async fn flavors_detail(State(node): State<Arc<Api>>, headers: HeaderMap) -> R {
    who(&node, &headers)?;
    let base = base_url(&headers);
    let list: Vec<Value> = node
        .control
        .flavors()
        .map_err(cerr)?
        .iter()
        .map(|f| flavor_json(f, &base))
        .collect();
    Ok(Json(json!({"flavors": list})).into_response())
}

async fn flavor(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    who(&node, &headers)?;
    let f = find_flavor(&node, &id)?;
    Ok(Json(json!({"flavor": flavor_json(&f, &base_url(&headers))})).into_response())
}

async fn extra_specs(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    who(&node, &headers)?;
    let f = find_flavor(&node, &id)?;
    Ok(Json(json!({"extra_specs": f.extra_specs})).into_response())
}

async fn create_flavor(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    b: axum::body::Bytes,
) -> R {
    admin(&who(&node, &headers)?)?;
    let v: Value = serde_json::from_slice(&b).map_err(|e| {
        nova(
            StatusCode::BAD_REQUEST,
            format!("Invalid request body: {e}"),
        )
    })?;
    let f = &v["flavor"];
    let num = |k: &str| {
        f[k].as_u64()
            .or_else(|| f[k].as_str().and_then(|s| s.parse().ok()))
    };
    let flavor = Flavor {
        name: f["name"].as_str().unwrap_or("").to_string(),
        vcpus: num("vcpus").unwrap_or(0) as u32,
        ram_mb: num("ram").unwrap_or(0),
        disk_gb: num("disk").unwrap_or(0),
        extra_specs: BTreeMap::new(),
    };
    let rec = node.control.create_flavor(flavor).await.map_err(cerr)?;
    Ok(Json(json!({"flavor": flavor_json(&rec, &base_url(&headers))})).into_response())
}

async fn delete_flavor(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    admin(&who(&node, &headers)?)?;
    node.control.delete_flavor(&id).await.map_err(cerr)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// A keypair at 2.1: `type` arrives with 2.2, so it is not shown.
fn keypair_json(k: &KeypairRecord) -> Value {
    json!({"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint})
}

async fn keypairs(State(node): State<Arc<Api>>, headers: HeaderMap) -> R {
    let t = who(&node, &headers)?;
    let list: Vec<Value> = node
        .control
        .keypairs(&t.user.id)
        .map_err(cerr)?
        .iter()
        .map(|k| json!({"keypair": keypair_json(k)}))
        .collect();
    Ok(Json(json!({"keypairs": list})).into_response())
}

async fn keypair(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> R {
    let t = who(&node, &headers)?;
    let k = node.control.keypair(&t.user.id, &name).map_err(cerr)?;
    let mut v = keypair_json(&k);
    v["user_id"] = json!(k.user);
    v["id"] = json!(k.name);
    v["created_at"] = json!(crate::control::identity::iso8601(k.created_at));
    v["deleted"] = json!(false);
    v["deleted_at"] = Value::Null;
    v["updated_at"] = Value::Null;
    Ok(Json(json!({"keypair": v})).into_response())
}

async fn create_keypair(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    b: axum::body::Bytes,
) -> R {
    let t = who(&node, &headers)?;
    let v: Value = serde_json::from_slice(&b).map_err(|e| {
        nova(
            StatusCode::BAD_REQUEST,
            format!("Invalid request body: {e}"),
        )
    })?;
    let k = &v["keypair"];
    let name = k["name"].as_str().unwrap_or("");
    // Without a public key the pair is generated here and its private key returned in
    // this one answer (as Nova does at 2.1; only the public half is stored).
    let (rec, private) = match k.get("public_key") {
        None | Some(Value::Null) => {
            let (rec, private) = node
                .control
                .generate_keypair(&t.user.id, name)
                .await
                .map_err(cerr)?;
            (rec, Some(private))
        }
        Some(p) => {
            let public = p.as_str().ok_or_else(|| {
                nova(
                    StatusCode::BAD_REQUEST,
                    "Invalid input for field/attribute public_key: not a string.",
                )
            })?;
            let rec = node
                .control
                .create_keypair(&t.user.id, name, public)
                .await
                .map_err(cerr)?;
            (rec, None)
        }
    };
    let mut v = keypair_json(&rec);
    v["user_id"] = json!(rec.user);
    if let Some(private) = private {
        v["private_key"] = json!(private);
    }
    Ok(Json(json!({"keypair": v})).into_response())
}

async fn delete_keypair(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> R {
    let t = who(&node, &headers)?;
    node.control
        .delete_keypair(&t.user.id, &name)
        .await
        .map_err(cerr)?;
    Ok(StatusCode::ACCEPTED.into_response())
}
