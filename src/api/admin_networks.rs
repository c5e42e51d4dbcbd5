//! Admin API routes for networks, subnets and ports (`strata network/subnet/port ...`).

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::admin::ApiError;
use crate::cluster::store::network_tables::{
    FloatingIpRecord, NetworkRecord, RouterRecord, RuleRecord, SecurityGroupRecord, SubnetRecord,
};
use crate::control::networks::{CreateNetwork, CreateSubnet, NetworkView};
use crate::control::ports::{CreatePort, PortView};
use crate::control::routers::{CreateFloatingIp, CreateRouter};
use crate::control::secgroups::{CreateRule, CreateSecGroup};
use crate::control::ControlError;
use crate::daemon::Node;
use crate::ids::NodeId;

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/networks", get(networks).post(create_network))
        .route("/v1/networks/{id}", get(network).delete(delete_network))
        .route("/v1/subnets", get(subnets).post(create_subnet))
        .route("/v1/subnets/{id}", get(subnet).delete(delete_subnet))
        .route("/v1/ports", get(ports).post(create_port))
        .route("/v1/ports/{id}", get(port).delete(delete_port))
        .route("/v1/ports/{id}/bind", post(bind_port))
        .route("/v1/ports/{id}/security", post(port_security))
        .route("/v1/secgroups", get(secgroups).post(create_secgroup))
        .route("/v1/secgroups/{id}", get(secgroup).delete(delete_secgroup))
        .route("/v1/secgroups/{id}/rules", post(add_rule))
        .route(
            "/v1/secgroups/{id}/rules/{rule}",
            axum::routing::delete(delete_rule),
        )
        .route("/v1/routers", get(routers).post(create_router))
        .route("/v1/routers/{id}", get(router).delete(delete_router))
        .route("/v1/routers/{id}/gateway", post(router_gateway))
        .route("/v1/routers/{id}/interfaces", post(router_add_interface))
        .route(
            "/v1/routers/{id}/interfaces/remove",
            post(router_remove_interface),
        )
        .route("/v1/floatingips", get(fips).post(create_fip))
        .route("/v1/floatingips/{id}", get(fip).delete(delete_fip))
        .route("/v1/floatingips/{id}/port", post(associate_fip))
}

async fn routers(State(node): State<Arc<Node>>) -> Result<Json<Vec<RouterRecord>>, ApiError> {
    Ok(Json(node.control.routers()?))
}

async fn create_router(
    State(node): State<Arc<Node>>,
    Json(req): Json<CreateRouter>,
) -> Result<Json<RouterRecord>, ApiError> {
    Ok(Json(
        node.control
            .create_router(&crate::api::admin::local(), req)
            .await?,
    ))
}

async fn router(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RouterRecord>, ApiError> {
    Ok(Json(
        fresh(&node, || {
            node.control.find_router(&crate::api::admin::local(), &id)
        })
        .await?,
    ))
}

async fn delete_router(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RouterRecord>, ApiError> {
    Ok(Json(
        node.control
            .delete_router(&crate::api::admin::local(), &id)
            .await?,
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Gateway {
    network: Option<String>,
}

async fn router_gateway(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<Gateway>,
) -> Result<Json<RouterRecord>, ApiError> {
    Ok(Json(
        node.control
            .set_router_gateway(&crate::api::admin::local(), &id, req.network.as_deref())
            .await?,
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Interface {
    subnet: String,
}

async fn router_add_interface(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<Interface>,
) -> Result<Json<RouterRecord>, ApiError> {
    Ok(Json(
        node.control
            .add_router_interface(&crate::api::admin::local(), &id, &req.subnet)
            .await?,
    ))
}

async fn router_remove_interface(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<Interface>,
) -> Result<Json<RouterRecord>, ApiError> {
    Ok(Json(
        node.control
            .remove_router_interface(&crate::api::admin::local(), &id, &req.subnet)
            .await?,
    ))
}

async fn fips(State(node): State<Arc<Node>>) -> Result<Json<Vec<FloatingIpRecord>>, ApiError> {
    Ok(Json(node.control.floating_ips()?))
}

async fn create_fip(
    State(node): State<Arc<Node>>,
    Json(req): Json<CreateFloatingIp>,
) -> Result<Json<FloatingIpRecord>, ApiError> {
    Ok(Json(
        node.control
            .create_floating_ip(&crate::api::admin::local(), req)
            .await?,
    ))
}

async fn fip(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<FloatingIpRecord>, ApiError> {
    Ok(Json(
        fresh(&node, || {
            node.control
                .find_floating_ip(&crate::api::admin::local(), &id)
        })
        .await?,
    ))
}

async fn delete_fip(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<FloatingIpRecord>, ApiError> {
    Ok(Json(
        node.control
            .delete_floating_ip(&crate::api::admin::local(), &id)
            .await?,
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Associate {
    port: Option<String>,
}

async fn associate_fip(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<Associate>,
) -> Result<Json<FloatingIpRecord>, ApiError> {
    Ok(Json(
        node.control
            .associate_floating_ip(&crate::api::admin::local(), &id, req.port.as_deref())
            .await?,
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PortSecurity {
    #[serde(default)]
    security_groups: Option<Vec<String>>,
    #[serde(default)]
    port_security: Option<bool>,
}

async fn port_security(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<PortSecurity>,
) -> Result<Json<PortView>, ApiError> {
    Ok(Json(
        node.control
            .set_port_security(
                &crate::api::admin::local(),
                &id,
                req.security_groups,
                req.port_security,
            )
            .await?,
    ))
}

async fn secgroups(
    State(node): State<Arc<Node>>,
) -> Result<Json<Vec<SecurityGroupRecord>>, ApiError> {
    Ok(Json(node.control.secgroups()?))
}

async fn create_secgroup(
    State(node): State<Arc<Node>>,
    Json(req): Json<CreateSecGroup>,
) -> Result<Json<SecurityGroupRecord>, ApiError> {
    Ok(Json(
        node.control
            .create_secgroup(&crate::api::admin::local(), req)
            .await?,
    ))
}

async fn secgroup(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<SecurityGroupRecord>, ApiError> {
    Ok(Json(
        fresh(&node, || {
            node.control.find_secgroup(&crate::api::admin::local(), &id)
        })
        .await?,
    ))
}

async fn delete_secgroup(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<SecurityGroupRecord>, ApiError> {
    Ok(Json(
        node.control
            .delete_secgroup(&crate::api::admin::local(), &id)
            .await?,
    ))
}

async fn add_rule(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<CreateRule>,
) -> Result<Json<RuleRecord>, ApiError> {
    Ok(Json(
        node.control
            .add_rule(&crate::api::admin::local(), &id, req)
            .await?,
    ))
}

async fn delete_rule(
    State(node): State<Arc<Node>>,
    UrlPath((id, rule)): UrlPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    node.control
        .delete_rule(&crate::api::admin::local(), &id, &rule)
        .await?;
    Ok(Json(json!({"deleted": rule})))
}

/// Retries a read that found nothing after a linearizable barrier: this node may not
/// have applied a create made through another node yet.
async fn fresh<T>(node: &Node, read: impl Fn() -> Result<T, ControlError>) -> Result<T, ApiError> {
    match read() {
        Err(ControlError::NotFound(_)) if node.control.store.linearizable().await.is_ok() => {
            Ok(read()?)
        }
        r => Ok(r?),
    }
}

async fn networks(State(node): State<Arc<Node>>) -> Result<Json<Vec<NetworkView>>, ApiError> {
    Ok(Json(node.control.networks()?))
}

async fn create_network(
    State(node): State<Arc<Node>>,
    Json(req): Json<CreateNetwork>,
) -> Result<Json<NetworkView>, ApiError> {
    let rec = node
        .control
        .create_network(&crate::api::admin::local(), req)
        .await?;
    Ok(Json(node.control.network_view(rec)?))
}

async fn network(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<NetworkView>, ApiError> {
    let rec = fresh(&node, || {
        node.control.find_network(&crate::api::admin::local(), &id)
    })
    .await?;
    Ok(Json(node.control.network_view(rec)?))
}

async fn delete_network(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<NetworkRecord>, ApiError> {
    Ok(Json(
        node.control
            .delete_network(&crate::api::admin::local(), &id)
            .await?,
    ))
}

async fn subnets(State(node): State<Arc<Node>>) -> Result<Json<Vec<SubnetRecord>>, ApiError> {
    Ok(Json(node.control.subnets()?))
}

async fn create_subnet(
    State(node): State<Arc<Node>>,
    Json(req): Json<CreateSubnet>,
) -> Result<Json<SubnetRecord>, ApiError> {
    Ok(Json(
        node.control
            .create_subnet(&crate::api::admin::local(), req)
            .await?,
    ))
}

async fn subnet(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<SubnetRecord>, ApiError> {
    Ok(Json(
        fresh(&node, || {
            node.control.find_subnet(&crate::api::admin::local(), &id)
        })
        .await?,
    ))
}

async fn delete_subnet(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<SubnetRecord>, ApiError> {
    Ok(Json(
        node.control
            .delete_subnet(&crate::api::admin::local(), &id)
            .await?,
    ))
}

async fn ports(State(node): State<Arc<Node>>) -> Result<Json<Vec<PortView>>, ApiError> {
    Ok(Json(node.control.ports()?))
}

async fn create_port(
    State(node): State<Arc<Node>>,
    Json(req): Json<CreatePort>,
) -> Result<Json<PortView>, ApiError> {
    Ok(Json(
        node.control
            .create_port(&crate::api::admin::local(), req)
            .await?,
    ))
}

async fn port(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<PortView>, ApiError> {
    Ok(Json(
        fresh(&node, || {
            node.control.port(&crate::api::admin::local(), &id)
        })
        .await?,
    ))
}

async fn delete_port(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = node
        .control
        .delete_port(&crate::api::admin::local(), &id)
        .await?;
    Ok(Json(json!({"deleted": p.id})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Bind {
    /// A node id, or null to unbind.
    host: Option<NodeId>,
}

async fn bind_port(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<Bind>,
) -> Result<Json<PortView>, ApiError> {
    Ok(Json(node.control.bind_port(&id, req.host).await?))
}
