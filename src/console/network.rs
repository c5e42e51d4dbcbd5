//! Networks (with their subnet), security groups and rules.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};

use super::forms::{self, Fields};
use super::session::Ctx;
use super::view::*;
use super::{Failure, Page, Web};
use crate::cluster::store::network_tables::Direction;
use crate::control::networks::{CreateNetwork, CreateSubnet};
use crate::control::secgroups::{CreateRule, CreateSecGroup};

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/networks", get(networks).post(create_network))
        .route("/networks/{id}/delete", post(delete_network))
        .route("/security-groups", get(secgroups).post(create_secgroup))
        .route("/security-groups/rules", post(add_rule))
        .route("/security-groups/{id}/delete", post(delete_secgroup))
        .route(
            "/security-groups/{id}/rules/{rule}/delete",
            post(delete_rule),
        )
}

/// Renders a list page, with an error and the failed form refilled if there was one.
pub(super) fn page(
    ctx: &Ctx,
    web: &Web,
    nav: &'static str,
    text: (&str, &str),
    forms: Vec<FormView>,
    tables: Vec<Table>,
    err: Option<Failure>,
) -> Page {
    super::render_list(ctx, web, nav, text, forms, tables, err)
}

pub(super) fn tbl(
    id: &str,
    title: &str,
    ctx: &Ctx,
    columns: Vec<&'static str>,
    rows: Vec<Row>,
    empty: &str,
) -> Table {
    Table {
        id: id.into(),
        title: title.into(),
        columns,
        rows,
        empty: empty.into(),
        live: None,
        writer: ctx.writer,
        csrf: ctx.csrf.clone(),
        pager: None,
    }
}

// ---- networks

fn network_view(web: &Web, ctx: &Ctx, f: Option<(&Fields, &Failure)>) -> Page {
    let rows = web
        .control
        .networks()?
        .into_iter()
        .filter(|n| ctx.owns(Some(&n.record.project)) || n.record.shared || n.record.external)
        .map(|n| {
            let mine = ctx.owns(Some(&n.record.project));
            Row {
                id: n.record.id.clone(),
                cells: vec![
                    cell(n.record.name.clone()),
                    cell(
                        n.subnets
                            .iter()
                            .map(|s| s.cidr.clone())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    cell(match (n.record.external, n.record.shared) {
                        (true, _) => "external",
                        (_, true) => "shared",
                        _ => "project",
                    }),
                    cell(n.ports.to_string()),
                    cell(n.record.vni.to_string()),
                ],
                actions: if mine {
                    vec![danger(
                        "Delete",
                        format!("/networks/{}/delete", n.record.id),
                        format!("Delete network {}?", n.record.name),
                    )]
                } else {
                    vec![]
                },
            }
        })
        .collect();
    let mut form = FormView::new("new-network", "Create a network", "/networks", "Create")
        .with(field("name", "Name", "text").required())
        .with(
            field("cidr", "Subnet CIDR", "text")
                .required()
                .value("10.0.0.0/24")
                .help("The addresses instances get, e.g. 10.0.0.0/24."),
        )
        .with(field("gateway", "Gateway", "text").help("Empty: the first address."))
        .with(field("dns", "DNS servers", "text").help("Comma-separated, optional."));
    let err = f.map(|(fields, e)| {
        form.refill(fields, &e.1);
        e.clone()
    });
    page(
        ctx,
        web,
        "networks",
        (
            "Networks",
            "Overlay networks of this project (VXLAN between nodes), with DHCP.",
        ),
        vec![form],
        vec![tbl(
            "networks",
            "",
            ctx,
            vec!["Name", "Subnets", "Kind", "Ports", "VNI"],
            rows,
            "No networks yet.",
        )],
        err,
    )
}

async fn networks(State(web): State<Arc<Web>>, ctx: Ctx) -> Page {
    network_view(&web, &ctx, None)
}

async fn create_network(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    let r = async {
        let name = forms::name("Name", &f.text("name"))
            .map_err(|m| Failure(StatusCode::BAD_REQUEST, m))?;
        let cidr = f
            .need("cidr", "Subnet CIDR")
            .map_err(|m| Failure(StatusCode::BAD_REQUEST, m))?;
        let net: ipnet::IpNet = cidr.parse().map_err(|_| {
            Failure(
                StatusCode::BAD_REQUEST,
                format!("Subnet CIDR: {cidr:?} is not a network like 10.0.0.0/24"),
            )
        })?;
        if net.trunc() != net {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!(
                    "Subnet CIDR: {cidr} has host bits set; did you mean {}?",
                    net.trunc()
                ),
            ));
        }
        let dns: Vec<String> = f
            .text("dns")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for d in &dns {
            if d.parse::<std::net::IpAddr>().is_err() {
                return Err(Failure(
                    StatusCode::BAD_REQUEST,
                    format!("DNS servers: {d:?} is not an IP address"),
                ));
            }
        }
        let n = web
            .act(
                &ctx,
                "network.create",
                &name,
                format!("Network {name} created."),
                web.control.create_network(
                    &ctx.caller(),
                    CreateNetwork {
                        name: name.clone(),
                        project: Some(ctx.project_id.clone()),
                        ..Default::default()
                    },
                ),
            )
            .await?;
        let caller = ctx.caller();
        let sub = web.control.create_subnet(
            &caller,
            CreateSubnet {
                name: format!("{name}-subnet"),
                network: n.id.clone(),
                cidr,
                gateway_ip: f.opt("gateway"),
                dns_nameservers: dns,
                project: Some(ctx.project_id.clone()),
                ..Default::default()
            },
        );
        if let Err(e) = sub.await {
            // Nothing half-made stays behind.
            let _ = web.control.delete_network(&ctx.caller(), &n.id).await;
            let f = Failure::from(e);
            web.audit(&ctx, "subnet.create", &name, Some(f.1.clone()))
                .await;
            return Err(Failure(f.0, format!("Subnet CIDR: {}", f.1)));
        }
        Ok(())
    }
    .await;
    match r {
        Ok(()) => Ok(Redirect::to("/networks").into_response()),
        Err(e) => network_view(&web, &ctx, Some((&f, &e))),
    }
}

async fn delete_network(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    let n = web.control.find_network(&ctx.caller(), &id)?;
    super::owned(&ctx, Some(&n.project), "network", &id)?;
    web.act(
        &ctx,
        "network.delete",
        &n.name,
        format!("Network {} deleted.", n.name),
        web.control.delete_network(&ctx.caller(), &n.id),
    )
    .await?;
    Ok(Redirect::to("/networks").into_response())
}

// ---- security groups

fn secgroup_view(web: &Web, ctx: &Ctx, f: Option<(&Fields, &Failure)>) -> Page {
    let groups: Vec<_> = web
        .control
        .secgroups()?
        .into_iter()
        .filter(|g| ctx.owns(Some(&g.project)))
        .collect();
    let rows = groups
        .iter()
        .map(|g| Row {
            id: g.id.clone(),
            cells: vec![
                cell(g.name.clone()),
                cell(g.description.clone()),
                cell(g.rules.len().to_string()),
            ],
            actions: if g.name == "default" {
                vec![]
            } else {
                vec![danger(
                    "Delete",
                    format!("/security-groups/{}/delete", g.id),
                    format!("Delete security group {}?", g.name),
                )]
            },
        })
        .collect();
    let mut rules = vec![];
    for g in &groups {
        for r in &g.rules {
            let ports = match (r.port_range_min, r.port_range_max) {
                (Some(a), Some(b)) if a == b => a.to_string(),
                (Some(a), Some(b)) => format!("{a}-{b}"),
                _ => "any".into(),
            };
            rules.push(Row {
                id: r.id.clone(),
                cells: vec![
                    cell(g.name.clone()),
                    cell(format!("{:?}", r.direction).to_lowercase()),
                    cell(r.protocol.clone().unwrap_or_else(|| "any".into())),
                    cell(ports),
                    cell(
                        r.remote_ip_prefix
                            .clone()
                            .or_else(|| r.remote_group.clone().map(|g| format!("group {g}")))
                            .unwrap_or_else(|| "anywhere".into()),
                    ),
                ],
                actions: vec![danger(
                    "Delete",
                    format!("/security-groups/{}/rules/{}/delete", g.id, r.id),
                    "Delete this rule?",
                )],
            });
        }
    }
    let names: Vec<(String, String)> = groups
        .iter()
        .map(|g| (g.id.clone(), g.name.clone()))
        .collect();
    let mut create = FormView::new(
        "new-secgroup",
        "Create a security group",
        "/security-groups",
        "Create",
    )
    .with(field("name", "Name", "text").required())
    .with(field("description", "Description", "text"));
    let mut rule = FormView::new(
        "new-rule",
        "Add a rule",
        "/security-groups/rules",
        "Add rule",
    )
    .with(field("group", "Group", "select").options(names).required())
    .with(field("direction", "Direction", "select").options(vec![
        ("ingress".into(), "ingress (to instances)".into()),
        ("egress".into(), "egress (from instances)".into()),
    ]))
    .with(
        field("protocol", "Protocol", "select").options(
            ["tcp", "udp", "icmp", "any"]
                .iter()
                .map(|p| (p.to_string(), p.to_string()))
                .collect(),
        ),
    )
    .with(field("ports", "Ports", "text").help("A port (22) or a range (8000-8080); empty: all."))
    .with(field("remote", "From/to CIDR", "text").value("0.0.0.0/0"));
    let err = f.map(|(fields, e)| {
        if fields.get("direction").is_some() {
            rule.refill(fields, &e.1);
        } else {
            create.refill(fields, &e.1);
        }
        e.clone()
    });
    page(
        ctx,
        web,
        "security-groups",
        (
            "Security groups",
            "Firewall rules applied to instances' ports. Traffic not allowed by a rule is dropped.",
        ),
        vec![create, rule],
        vec![
            tbl(
                "secgroups",
                "Groups",
                ctx,
                vec!["Name", "Description", "Rules"],
                rows,
                "No security groups yet.",
            ),
            tbl(
                "rules",
                "Rules",
                ctx,
                vec!["Group", "Direction", "Protocol", "Ports", "Remote"],
                rules,
                "No rules.",
            ),
        ],
        err,
    )
}

async fn secgroups(State(web): State<Arc<Web>>, ctx: Ctx) -> Page {
    // Every project has its default group, made on first use.
    if ctx.writer {
        let _ = web.control.default_secgroup(&ctx.project_id).await;
    }
    secgroup_view(&web, &ctx, None)
}

async fn create_secgroup(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    let name = f.text("name");
    let r = match forms::name("Name", &name) {
        Err(m) => Err(Failure(StatusCode::BAD_REQUEST, m)),
        Ok(name) => web
            .act(
                &ctx,
                "secgroup.create",
                &name,
                format!("Security group {name} created."),
                web.control.create_secgroup(
                    &ctx.caller(),
                    CreateSecGroup {
                        name: name.clone(),
                        project: Some(ctx.project_id.clone()),
                        description: f.text("description"),
                    },
                ),
            )
            .await
            .map(|_| ()),
    };
    match r {
        Ok(()) => Ok(Redirect::to("/security-groups").into_response()),
        Err(e) => secgroup_view(&web, &ctx, Some((&f, &e))),
    }
}

fn parse_rule(f: &Fields) -> Result<(String, CreateRule), String> {
    let group = f.need("group", "Group")?;
    let direction = match f.text("direction").as_str() {
        "egress" => Direction::Egress,
        _ => Direction::Ingress,
    };
    let protocol = match f.text("protocol").as_str() {
        "" | "any" => None,
        p => Some(p.to_string()),
    };
    let ports = f.text("ports");
    let (min, max) = if ports.is_empty() {
        (None, None)
    } else {
        let (a, b) = ports.split_once('-').unwrap_or((&ports, &ports));
        let p = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|p| (1..=65535).contains(p))
        };
        match (p(a), p(b)) {
            (Some(a), Some(b)) if a <= b => (Some(a), Some(b)),
            _ => {
                return Err(format!(
                    "Ports: {ports:?} is not a port (1-65535) or a range like 8000-8080"
                ))
            }
        }
    };
    if min.is_some() && protocol.as_deref().is_none_or(|p| p == "icmp") {
        return Err("Ports: ports need the tcp or udp protocol".into());
    }
    Ok((
        group,
        CreateRule {
            direction,
            protocol,
            port_range_min: min,
            port_range_max: max,
            remote_ip_prefix: f.opt("remote"),
            remote_group: None,
            description: String::new(),
        },
    ))
}

async fn add_rule(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    let r = match parse_rule(&f) {
        Err(m) => Err(Failure(StatusCode::BAD_REQUEST, m)),
        Ok((group, rule)) => match web.control.find_secgroup(&ctx.caller(), &group) {
            Ok(g) if ctx.owns(Some(&g.project)) => web
                .act(
                    &ctx,
                    "secgroup.rule.add",
                    &g.name,
                    format!("Rule added to {}.", g.name),
                    web.control.add_rule(&ctx.caller(), &g.id, rule),
                )
                .await
                .map(|_| ()),
            _ => Err(Failure(
                StatusCode::BAD_REQUEST,
                "Group: no such security group in this project".into(),
            )),
        },
    };
    match r {
        Ok(()) => Ok(Redirect::to("/security-groups").into_response()),
        Err(e) => secgroup_view(&web, &ctx, Some((&f, &e))),
    }
}

async fn delete_secgroup(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    let g = web.control.find_secgroup(&ctx.caller(), &id)?;
    super::owned(&ctx, Some(&g.project), "security group", &id)?;
    web.act(
        &ctx,
        "secgroup.delete",
        &g.name,
        format!("Security group {} deleted.", g.name),
        web.control.delete_secgroup(&ctx.caller(), &g.id),
    )
    .await?;
    Ok(Redirect::to("/security-groups").into_response())
}

async fn delete_rule(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path((id, rule)): Path<(String, String)>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    let g = web.control.find_secgroup(&ctx.caller(), &id)?;
    super::owned(&ctx, Some(&g.project), "security group", &id)?;
    web.act(
        &ctx,
        "secgroup.rule.delete",
        &g.name,
        "Rule deleted.".into(),
        web.control.delete_rule(&ctx.caller(), &g.id, &rule),
    )
    .await?;
    Ok(Redirect::to("/security-groups").into_response())
}
