//! Neutron security groups and their rules.

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
use crate::cluster::store::network_tables::{Direction, RuleRecord, SecurityGroupRecord};
use crate::control::secgroups::{CreateRule, CreateSecGroup};
use crate::control::ControlError;

fn rule_json(r: &RuleRecord, g: &SecurityGroupRecord) -> Value {
    json!({
        "id": r.id, "security_group_id": g.id,
        "direction": if r.direction == Direction::Ingress { "ingress" } else { "egress" },
        "ethertype": "IPv4", "protocol": r.protocol, "port_range_min": r.port_range_min,
        "port_range_max": r.port_range_max, "remote_ip_prefix": r.remote_ip_prefix,
        "remote_group_id": r.remote_group, "remote_address_group_id": null,
        "tenant_id": g.project, "project_id": g.project, "description": r.description,
        "created_at": time(g.created_at), "updated_at": time(g.created_at), "revision_number": 1,
    })
}

fn sg_json(g: &SecurityGroupRecord) -> Value {
    json!({
        "id": g.id, "name": g.name, "description": g.description, "stateful": true,
        "security_group_rules": g.rules.iter().map(|r| rule_json(r, g)).collect::<Vec<_>>(),
        "tenant_id": g.project, "project_id": g.project, "tags": [],
        "created_at": time(g.created_at), "updated_at": time(g.created_at), "revision_number": 1,
    })
}

fn visible_groups(node: &Api, s: &Scope) -> Result<Vec<SecurityGroupRecord>, Response> {
    Ok(node
        .control
        .secgroups()
        .map_err(nerr)?
        .into_iter()
        .filter(|g| g.visible_to(&s.caller, &node.control))
        .collect())
}

pub(super) async fn secgroups(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> R {
    let s = who(&node, &headers)?;
    // Every project has its default group, as in Neutron.
    node.control
        .default_secgroup(&s.project)
        .await
        .map_err(nerr)?;
    let list = visible_groups(&node, &s)?.iter().map(sg_json).collect();
    ok(json!({"security_groups": named(list, &q)}))
}

pub(super) async fn secgroup(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    let g = visible_groups(&node, &s)?
        .into_iter()
        .find(|g| g.id == id || g.name == id)
        .ok_or_else(|| not_found("SecurityGroup", &id))?;
    ok(json!({"security_group": sg_json(&g)}))
}

pub(super) async fn create_secgroup(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    b: axum::body::Bytes,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let v = body(&b)?;
    super::resource(&v, "security_group", super::SECGROUP)?;
    let g = node
        .control
        .create_secgroup(
            &s.caller,
            CreateSecGroup {
                name: v["security_group"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                project: Some(s.project.clone()),
                description: v["security_group"]["description"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            },
        )
        .await
        .map_err(nerr)?;
    created(json!({"security_group": sg_json(&g)}))
}

pub(super) async fn delete_secgroup(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let g = visible_groups(&node, &s)?
        .into_iter()
        .find(|g| g.id == id)
        .ok_or_else(|| not_found("SecurityGroup", &id))?;
    node.control
        .delete_secgroup(&s.caller, &g.id)
        .await
        .map_err(nerr)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn find_rule(
    node: &Api,
    s: &Scope,
    id: &str,
) -> Result<(RuleRecord, SecurityGroupRecord), Response> {
    visible_groups(node, s)?
        .into_iter()
        .find_map(|g| {
            g.rules
                .iter()
                .find(|r| r.id == id)
                .cloned()
                .map(|r| (r, g.clone()))
        })
        .ok_or_else(|| not_found("SecurityGroupRule", id))
}

pub(super) async fn rules(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> R {
    let s = who(&node, &headers)?;
    let list = visible_groups(&node, &s)?
        .iter()
        .flat_map(|g| {
            g.rules
                .iter()
                .map(move |r| rule_json(r, g))
                .collect::<Vec<_>>()
        })
        .collect();
    ok(json!({"security_group_rules": named(list, &q)}))
}

pub(super) async fn rule(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    let (r, g) = find_rule(&node, &s, &id)?;
    ok(json!({"security_group_rule": rule_json(&r, &g)}))
}

pub(super) async fn create_rule(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    b: axum::body::Bytes,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let v = body(&b)?;
    let x = super::resource(&v, "security_group_rule", super::RULE)?;
    let gid = x["security_group_id"].as_str().unwrap_or("");
    let g = visible_groups(&node, &s)?
        .into_iter()
        .find(|g| g.id == gid)
        .ok_or_else(|| not_found("SecurityGroup", gid))?;
    if x["ethertype"].as_str().is_some_and(|e| e != "IPv4") {
        return Err(nerr(ControlError::Invalid(
            "only IPv4 rules are served".into(),
        )));
    }
    let direction = match x["direction"].as_str() {
        Some("egress") => Direction::Egress,
        Some("ingress") => Direction::Ingress,
        other => {
            return Err(nerr(ControlError::Invalid(format!(
                "direction {other:?} is not ingress or egress"
            ))))
        }
    };
    let port = |k: &str| x[k].as_u64().map(|p| p as u32);
    let r = node
        .control
        .add_rule(
            &s.caller,
            &g.id,
            CreateRule {
                direction,
                protocol: x["protocol"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| x["protocol"].as_u64().map(|n| n.to_string())),
                port_range_min: port("port_range_min"),
                port_range_max: port("port_range_max"),
                remote_ip_prefix: x["remote_ip_prefix"].as_str().map(str::to_string),
                remote_group: x["remote_group_id"].as_str().map(str::to_string),
                description: x["description"].as_str().unwrap_or("").to_string(),
            },
        )
        .await
        .map_err(nerr)?;
    created(json!({"security_group_rule": rule_json(&r, &g)}))
}

pub(super) async fn delete_rule(
    State(node): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> R {
    let s = who(&node, &headers)?;
    s.write().map_err(IntoResponse::into_response)?;
    let (r, g) = find_rule(&node, &s, &id)?;
    node.control
        .delete_rule(&s.caller, &g.id, &r.id)
        .await
        .map_err(nerr)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
