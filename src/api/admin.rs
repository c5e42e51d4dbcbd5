//! The node-local admin API, served on a Unix socket readable only by root (the socket's
//! mode is the authentication, as with Docker's or LXD's). The CLI is its only client.
//! Everything here goes through `control`; nothing touches Raft or disks directly.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cluster::raft::RaftError;
use crate::cluster::store::tables::Events;
use crate::cluster::store::StoreError;
use crate::control::ControlError;
use crate::daemon::Node;
use crate::telemetry::error_chain;

pub fn listen(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if path.exists() {
        // A socket left by a crashed daemon; a live one would still answer.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another strata daemon is serving this data directory",
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let l = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

pub async fn serve(listener: tokio::net::UnixListener, node: Arc<Node>) {
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{id}", axum::routing::delete(remove_node))
        .route("/v1/nodes/{id}/drain", post(drain_node))
        .route("/v1/tokens", post(create_token))
        .route("/v1/join-requests", get(join_requests))
        .route("/v1/join-requests/{id}/{decision}", post(decide_join))
        .route("/v1/events", get(events))
        .route("/v1/openstack", get(openstack_endpoint))
        .route("/v1/debug/raft", get(debug_raft))
        .route("/v1/debug/store", get(debug_store))
        .route("/v1/debug/refusals", get(debug_refusals))
        .route("/v1/debug/transport-bench", post(debug_transport_bench))
        .route("/v1/debug/kv/{key}", put(debug_put).get(debug_get))
        .merge(super::admin_vms::routes())
        .merge(super::admin_volumes::routes())
        .merge(super::admin_networks::routes())
        .with_state(node);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}

pub async fn serve_metrics(listener: tokio::net::TcpListener, node: Arc<Node>) {
    let app = Router::new()
        .route(
            "/metrics",
            get(
                |State(node): State<Arc<Node>>, headers: axum::http::HeaderMap| async move {
                    if let Some(want) = &node.config.metrics_token {
                        let got = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .unwrap_or("");
                        if !same_secret(got, want) {
                            return (
                                StatusCode::UNAUTHORIZED,
                                [("www-authenticate", "Bearer")],
                                "a bearer token is needed (metrics_token_file)".to_string(),
                            )
                                .into_response();
                        }
                    }
                    node.refresh_metrics();
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        node.metrics.encode(),
                    )
                        .into_response()
                },
            ),
        )
        .with_state(node);
    crate::httpd::serve(listener, app, None, crate::httpd::Limits::SMALL, "metrics").await
}

/// An error as the CLI sees it: a status code and one sentence naming the cause.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let code = match &e {
            ControlError::Store(StoreError::Raft(RaftError::DiskFull(_))) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            ControlError::Store(StoreError::Raft(RaftError::NoQuorum(_))) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ControlError::Store(StoreError::Conflict { .. }) => StatusCode::CONFLICT,
            ControlError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Unavailable(_) => StatusCode::BAD_GATEWAY,
            ControlError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, error_chain(&e))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ControlError::Store(e).into()
    }
}

async fn status(State(node): State<Arc<Node>>) -> Result<Json<serde_json::Value>, ApiError> {
    let s = node.control.status()?;
    Ok(Json(serde_json::to_value(s).unwrap_or_default()))
}

/// Where this node serves the OpenStack API (for `strata openrc`).
async fn openstack_endpoint(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let url = node.config.api_listen.map(|a| {
        let ip = if a.ip().is_unspecified() {
            node.config.advertise.ip()
        } else {
            a.ip()
        };
        format!(
            "{}://{}/identity/v3",
            if node.config.api_plain {
                "http"
            } else {
                "https"
            },
            SocketAddr::new(ip, a.port())
        )
    });
    let cacert = (!node.config.api_plain).then(|| {
        node.config
            .data_dir
            .join("pki/ca.crt")
            .display()
            .to_string()
    });
    Json(serde_json::json!({"auth_url": url, "region": "RegionOne", "cacert": cacert}))
}

async fn nodes(State(node): State<Arc<Node>>) -> Result<Json<serde_json::Value>, ApiError> {
    let s = node.control.status()?;
    Ok(Json(serde_json::to_value(s.nodes).unwrap_or_default()))
}

/// Removes a powered-off node from the cluster for good (id or hostname).
async fn remove_node(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let target = node.control.find_node(&id)?;
    let r = node
        .control
        .remove_node(target, "admin (local socket)")
        .await?;
    Ok(Json(serde_json::to_value(r).unwrap_or_default()))
}

/// Drains a node (maintenance, then its VMs moved one at a time; evacuated if it is
/// down) and answers when done, with the VMs that could not move.
async fn drain_node(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let target = node.control.find_node(&id)?;
    let stayed = node
        .control
        .drain_node(target, "admin (local socket)")
        .await?;
    Ok(Json(json!({"node": target, "stayed": stayed})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenReq {
    ttl_seconds: Option<u64>,
}

#[derive(Serialize)]
struct TokenResp {
    token: String,
    expires_at: u64,
    join_address: String,
}

async fn create_token(
    State(node): State<Arc<Node>>,
    Json(req): Json<TokenReq>,
) -> Result<Json<TokenResp>, ApiError> {
    let ttl = req.ttl_seconds.unwrap_or(3600);
    if ttl == 0 || ttl > 7 * 24 * 3600 {
        return Err(ControlError::Invalid(format!(
            "ttl of {ttl} s is out of range (1 s to 7 days)"
        ))
        .into());
    }
    let (token, expires_at) = node.control.create_token(Duration::from_secs(ttl)).await?;
    Ok(Json(TokenResp {
        token: token.to_string(),
        expires_at,
        join_address: node.config.advertise.to_string(),
    }))
}

async fn join_requests(State(node): State<Arc<Node>>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!(node.control.join_requests()?)))
}

/// Accepts or rejects a join request named by node id or by its join code.
async fn decide_join(
    State(node): State<Arc<Node>>,
    axum::extract::Path((id, decision)): axum::extract::Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let accept = match decision.as_str() {
        "accept" => true,
        "reject" => false,
        other => {
            return Err(ControlError::Invalid(format!(
                "unknown decision {other:?}: expected accept or reject"
            ))
            .into())
        }
    };
    let wanted = id.trim().to_ascii_uppercase();
    let target = node
        .control
        .join_requests()?
        .into_iter()
        .find(|r| r.node.to_string() == id.trim() || r.code == wanted)
        .ok_or_else(|| {
            ControlError::NotFound(format!("no join request with node id or join code {id:?}"))
        })?;
    let rec = node
        .control
        .decide_join(target.node, accept, "admin (local CLI)")
        .await?;
    Ok(Json(json!(rec)))
}

#[derive(Deserialize)]
struct EventsQuery {
    limit: Option<usize>,
}

async fn events(
    State(node): State<Arc<Node>>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ev = node
        .control
        .store
        .tail::<Events>(q.limit.unwrap_or(50).min(10_000))?;
    Ok(Json(json!(ev
        .into_iter()
        .map(|e| json!({"seq": e.key, "at_ms": e.value.at_ms, "node": e.value.node, "kind": e.value.kind, "message": e.value.message}))
        .collect::<Vec<_>>())))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransportBench {
    peer: String,
    mib: u64,
}

/// Sends `mib` MiB to a peer's bulk sink over the node-to-node transport (`make bench`).
async fn debug_transport_bench(
    State(node): State<Arc<Node>>,
    Json(req): Json<TransportBench>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let peer: crate::ids::NodeId = req
        .peer
        .parse()
        .map_err(|_| bad(format!("{:?} is not a node id", req.peer)))?;
    if req.mib == 0 || req.mib > 16384 {
        return Err(bad("mib must be 1 to 16384".into()));
    }
    let addr = node
        .control
        .store
        .get::<crate::cluster::store::tables::Nodes>(&peer.to_string())
        .map_err(ControlError::from)?
        .map(|n| n.value.addr)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no node {peer}")))?;
    let (bytes, took) = crate::transport::bulk::send(&node.transport, peer, addr, req.mib << 20)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, crate::telemetry::error_chain(&e)))?;
    let secs = took.as_secs_f64();
    Ok(Json(serde_json::json!({
        "peer": peer,
        "bytes": bytes,
        "seconds": secs,
        "mib_per_s": (bytes as f64 / (1u64 << 20) as f64) / secs.max(1e-9),
    })))
}

/// Requests this node refused without credentials: counts and the newest 50.
async fn debug_refusals(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let r = &node.control.refusals;
    Json(json!({
        "counts": r.counts().into_iter().map(|((via, why), n)| json!({"via": via, "reason": why, "count": n})).collect::<Vec<_>>(),
        "recent": r.recent(50),
    }))
}

/// Every record's revision, by table and key (this node's applied state).
async fn debug_store(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(json!(node.control.store.revisions()))
}

async fn debug_raft(State(node): State<Arc<Node>>) -> Result<Json<serde_json::Value>, ApiError> {
    let raft = node.control.raft();
    let m = raft.metrics();
    Ok(Json(json!({
        "node": node.control.node,
        "state": format!("{:?}", m.state),
        "term": m.current_term,
        "vote": format!("{}", m.vote),
        "leader": m.current_leader.map(crate::ids::NodeId),
        "cut_off_ms": raft.cut_off().map(|d| d.as_millis() as u64),
        "not_voting": raft.not_voting(),
        "last_log_index": m.last_log_index,
        "committed": m.local_committed.as_ref().map(|l| l.index()),
        "last_applied": m.last_applied.as_ref().map(|l| l.index()),
        "snapshot": m.snapshot.as_ref().map(|l| l.index()),
        "purged": m.purged.as_ref().map(|l| l.index()),
        "log_entries_stored": raft.log_entries(),
        "membership": raft.membership(),
        "replication": m.replication.as_ref().map(|r| r.iter().map(|(id, l)| (crate::ids::NodeId(*id).to_string(), l.as_ref().map(|l| l.index()))).collect::<std::collections::BTreeMap<_, _>>()),
        "gossip": node.membership.view().into_iter().map(|(id, p)| (id.to_string(), json!({"liveness": p.liveness, "addr": p.addr, "for_ms": p.since.elapsed().as_millis() as u64}))).collect::<std::collections::BTreeMap<_, _>>(),
    })))
}

async fn debug_put(
    State(node): State<Arc<Node>>,
    UrlPath(key): UrlPath<String>,
    Json(value): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let revision = node.control.debug_put(&key, &value).await?;
    Ok(Json(json!({ "revision": revision })))
}

#[derive(Deserialize)]
struct GetQuery {
    #[serde(default)]
    linearizable: bool,
}

async fn debug_get(
    State(node): State<Arc<Node>>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<GetQuery>,
) -> Result<Response, ApiError> {
    match node.control.debug_get(&key, q.linearizable).await? {
        Some((value, revision)) => {
            Ok(Json(json!({"value": value, "revision": revision})).into_response())
        }
        None => Ok(ApiError(StatusCode::NOT_FOUND, format!("no key {key:?}")).into_response()),
    }
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The caller of every admin socket request: the node-local administrator.
pub(crate) fn local() -> crate::control::caller::Caller {
    crate::control::caller::Caller::local("admin (local socket)")
}
