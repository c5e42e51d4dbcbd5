//! The dashboard (cluster health, capacity charts, recent events) and the nodes pages.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};

use super::forms::Fields;
use super::session::Ctx;
use super::view::*;
use super::{need_admin, Failure, Page, Web};
use crate::cluster::store::tables::UsageSample;
use crate::control::audit::AuditFilter;
use crate::control::now_ms;
use crate::ids::NodeId;

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/", get(dashboard))
        .route("/nodes", get(nodes))
        .route("/nodes/{id}", get(node))
        .route("/nodes/{id}/maintenance", post(maintenance))
        .route("/nodes/{id}/drain", post(drain))
        .route("/nodes/{id}/remove", post(remove))
        .route("/nodes/requests/{id}/accept", post(accept_join))
        .route("/nodes/requests/{id}/reject", post(reject_join))
}

/// A health figure on the dashboard.
pub struct Card {
    pub label: String,
    pub value: String,
    pub class: &'static str,
    pub detail: String,
}

pub struct Chart {
    pub title: String,
    pub now: String,
    pub svg: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    l: Layout,
    cards: Vec<Card>,
    alerts: Vec<String>,
    charts: Vec<Chart>,
    t: Table,
}

/// Used over total as a line over time, drawn as SVG from numbers only (nothing a user
/// typed), 0-100 %.
pub fn chart_svg(points: &[(u64, f64)], from_ms: u64, to_ms: u64) -> String {
    let (w, h) = (600.0, 120.0);
    let span = (to_ms.saturating_sub(from_ms)).max(1) as f64;
    let xy: Vec<String> = points
        .iter()
        .map(|(t, pct)| {
            let x = (t.saturating_sub(from_ms)) as f64 / span * w;
            let y = h - pct.clamp(0.0, 100.0) / 100.0 * h;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let mut svg = format!(
        "<svg viewBox=\"0 0 {w} {h}\" preserveAspectRatio=\"none\" role=\"img\" class=\"chart\">\
         <line x1=\"0\" y1=\"{:.1}\" x2=\"{w}\" y2=\"{:.1}\" class=\"grid\"/>\
         <line x1=\"0\" y1=\"{:.1}\" x2=\"{w}\" y2=\"{:.1}\" class=\"grid\"/>",
        h / 2.0,
        h / 2.0,
        h * 0.2,
        h * 0.2
    );
    if xy.len() == 1 {
        let (x, y) = xy[0].split_once(',').unwrap_or(("0", "0"));
        svg.push_str(&format!(
            "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" class=\"dot\"/>"
        ));
    } else if !xy.is_empty() {
        svg.push_str(&format!(
            "<polyline points=\"{}\" class=\"line\"/>",
            xy.join(" ")
        ));
    }
    svg.push_str("</svg>");
    svg
}

fn pct(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    }
}

type Series = (
    &'static str,
    fn(&UsageSample) -> (u64, u64),
    fn(u64) -> String,
);

fn charts(history: &[UsageSample], now: &UsageSample, from: u64, to: u64) -> Vec<Chart> {
    let series: [Series; 3] = [
        (
            "vCPUs allocated",
            |s| (s.vcpus_used, s.vcpus_total),
            |v| v.to_string(),
        ),
        (
            "Memory allocated",
            |s| (s.ram_used_mb, s.ram_total_mb),
            |v| gib(v << 20),
        ),
        (
            "Storage used",
            |s| (s.storage_used_bytes, s.storage_total_bytes),
            gib,
        ),
    ];
    series
        .iter()
        .map(|(title, f, fmt)| {
            let points: Vec<(u64, f64)> = history
                .iter()
                .chain(std::iter::once(now))
                .map(|s| {
                    let (u, t) = f(s);
                    (s.at_ms, pct(u, t))
                })
                .collect();
            let (u, t) = f(now);
            Chart {
                title: title.to_string(),
                now: format!("{} of {} ({:.0} %)", fmt(u), fmt(t), pct(u, t)),
                svg: chart_svg(&points, from, to),
            }
        })
        .collect()
}

async fn dashboard(State(web): State<Arc<Web>>, ctx: Ctx) -> Page {
    let c = &web.control;
    let status = c.status()?;
    let vms = c.vms()?;
    let volumes = c.volumes()?;
    let mut alerts = vec![];
    for n in status.nodes.iter().filter(|n| n.liveness != "alive") {
        alerts.push(format!("Node {} ({}) is {}.", n.hostname, n.id, n.liveness));
    }
    let mine = |p: Option<&str>| ctx.admin || ctx.owns(p);
    for v in vms.iter().filter(|v| mine(v.record.project.as_deref())) {
        if format!("{:?}", v.state) == "Error" {
            alerts.push(format!("Instance {} failed: {}", v.record.name, v.reason));
        }
    }
    let degraded = volumes.iter().filter(|v| v.status == "degraded").count();
    if degraded > 0 {
        alerts.push(format!(
            "{degraded} volume(s) have a replica out of sync; they are being repaired."
        ));
    }
    let leader = status
        .leader
        .and_then(|l| status.nodes.iter().find(|n| n.id == l))
        .map(|n| format!("{} ({})", n.hostname, n.id))
        .unwrap_or_else(|| "none (no quorum)".into());
    let my_vms: Vec<_> = vms
        .iter()
        .filter(|v| ctx.owns(v.record.project.as_deref()))
        .collect();
    let running = my_vms
        .iter()
        .filter(|v| format!("{:?}", v.state) == "Active")
        .count();
    let cards = vec![
        Card {
            label: "Nodes up".into(),
            value: format!("{} / {}", status.nodes_alive, status.nodes.len()),
            class: if status.nodes_alive == status.nodes.len() {
                "ok"
            } else {
                "bad"
            },
            detail: format!(
                "cluster {}",
                status.cluster_name.clone().unwrap_or_default()
            ),
        },
        Card {
            label: "Raft leader".into(),
            value: leader,
            class: if status.leader.is_some() { "ok" } else { "bad" },
            detail: format!("term {}, {} voters", status.term, status.voters.len()),
        },
        Card {
            label: "Storage redundancy".into(),
            value: if degraded == 0 {
                "all in sync".into()
            } else {
                format!("{degraded} degraded")
            },
            class: if degraded == 0 { "ok" } else { "warn" },
            detail: format!("{} volumes", volumes.len()),
        },
        Card {
            label: format!("Instances in {}", ctx.project_name),
            value: format!("{running} running / {}", my_vms.len()),
            class: "info",
            detail: String::new(),
        },
    ];
    let now = c.usage_from(&status)?;
    let to = now_ms();
    let from = to.saturating_sub(6 * 3600 * 1000);
    let history = c.usage_history(from)?;
    // Administrators see the cluster's events; others their project's audit log.
    let events = if ctx.admin {
        let evs = c.store.tail::<crate::cluster::store::tables::Events>(15)?;
        Table {
            id: "events".into(),
            title: "Recent events".into(),
            columns: vec!["When", "Node", "What", "Message"],
            rows: evs
                .into_iter()
                .rev()
                .map(|e| Row {
                    id: e.key,
                    cells: vec![
                        cell(when_ms(e.value.at_ms)),
                        cell(e.value.node.to_string()),
                        cell(e.value.kind),
                        cell(e.value.message),
                    ],
                    actions: vec![],
                })
                .collect(),
            empty: "Nothing has happened yet.".into(),
            live: None,
            writer: false,
            csrf: String::new(),
            pager: None,
        }
    } else {
        let filter = AuditFilter {
            project: Some(ctx.project_id.clone()),
            ..Default::default()
        };
        super::admin::audit_table(c.audit_log(&filter, 15)?, "Recent activity in this project")
    };
    let page = Dashboard {
        l: Layout::new(&ctx, &web, "Dashboard", "dashboard"),
        cards,
        alerts,
        charts: charts(&history, &now, from, to),
        t: events,
    };
    Ok(Html(page.render()?).into_response())
}

async fn nodes(State(web): State<Arc<Web>>, ctx: Ctx) -> Page {
    need_admin(&ctx)?;
    let status = web.control.status()?;
    let records = web
        .control
        .store
        .list::<crate::cluster::store::tables::Nodes>()?;
    let vms = web.control.vms()?;
    let rows = status
        .nodes
        .iter()
        .map(|n| {
            let rec = records
                .iter()
                .find(|r| r.value.id == n.id)
                .map(|r| &r.value);
            let maint = rec.and_then(|r| r.maintenance.as_ref());
            let on_node: Vec<_> = vms.iter().filter(|v| v.record.node == n.id).collect();
            let vcpus: u32 = on_node.iter().map(|v| v.record.vcpus).sum();
            Row {
                id: n.id.to_string(),
                cells: vec![
                    link(n.hostname.clone(), format!("/nodes/{}", n.id)),
                    cell(n.id.to_string()),
                    badge(n.liveness, state_class(n.liveness)),
                    cell(format!(
                        "{}{}",
                        n.raft,
                        if n.leader { ", leader" } else { "" }
                    )),
                    cell(format!("{} cores, {}", n.cores, gib(n.memory_bytes))),
                    cell(format!("{} ({} vCPUs)", on_node.len(), vcpus)),
                    match maint {
                        Some(m) => badge(format!("maintenance: {}", m.reason), "warn"),
                        None => badge("in service", "ok"),
                    },
                ],
                actions: [
                    if maint.is_some() {
                        action("End maintenance", format!("/nodes/{}/maintenance", n.id))
                    } else {
                        Action {
                            hidden: vec![("reason".into(), "maintenance".into())],
                            ..action("Maintenance", format!("/nodes/{}/maintenance", n.id))
                        }
                    },
                    danger(
                        "Drain",
                        format!("/nodes/{}/drain", n.id),
                        format!(
                            "Drain node {}? Its instances are stopped and started again on other nodes, one at a time.",
                            n.hostname
                        ),
                    ),
                ]
                .into_iter()
                // Only a node that is off can be removed (the control plane checks again).
                .chain((matches!(n.liveness, "down" | "unknown")).then(|| {
                    danger(
                        "Remove",
                        format!("/nodes/{}/remove", n.id),
                        format!(
                            "Remove node {} from the cluster for good? Its replicas are rebuilt on other nodes; to come back it must be reinstalled.",
                            n.hostname
                        ),
                    )
                }))
                .collect(),
            }
        })
        .collect();
    let page = ListPage {
        l: Layout::new(&ctx, &web, "Nodes", "nodes"),
        heading: "Nodes".into(),
        intro: "The servers of the cluster. A node in maintenance takes no new instances; \
                the ones it runs keep running. Draining a node puts it in maintenance and \
                moves its instances to other nodes, one at a time (each shuts down and \
                boots again there, with its volumes). A node that is powered off and runs \
                no instances can be removed from the cluster for good."
            .into(),
        forms: vec![],
        tables: vec![
            join_requests_table(&web, &ctx)?,
            Table {
                id: "nodes".into(),
                title: String::new(),
                columns: vec![
                    "Host",
                    "Id",
                    "State",
                    "Raft",
                    "Hardware",
                    "Instances",
                    "Service",
                ],
                rows,
                empty: "No nodes.".into(),
                live: None,
                writer: ctx.admin,
                csrf: ctx.csrf.clone(),
                pager: None,
            },
        ],
    };
    Ok(Html(page.render()?).into_response())
}

/// Servers waiting to join without a token. Shown only while there are some.
fn join_requests_table(web: &Web, ctx: &Ctx) -> Result<Table, Failure> {
    let now = crate::control::now_secs();
    let rows: Vec<Row> = web
        .control
        .join_requests()?
        .into_iter()
        .filter(|r| r.decision.as_ref().is_none_or(|d| !d.accepted))
        .map(|r| Row {
            id: r.node.to_string(),
            cells: vec![
                cell(r.hostname.clone()),
                cell(r.addr.to_string()),
                badge(r.code.clone(), "info"),
                cell(format!("{} cores, {}", r.cores, gib(r.memory_bytes))),
                cell(format!("{} s ago", now.saturating_sub(r.requested_at))),
                match &r.decision {
                    Some(d) => badge(format!("rejected by {}", d.by), "bad"),
                    None => badge("waiting", "warn"),
                },
            ],
            actions: if r.decision.is_some() {
                vec![]
            } else {
                vec![
                    action("Accept", format!("/nodes/requests/{}/accept", r.node)),
                    danger(
                        "Reject",
                        format!("/nodes/requests/{}/reject", r.node),
                        format!("Reject the join request of {} ({})?", r.hostname, r.addr),
                    ),
                ]
            },
        })
        .collect();
    Ok(Table {
        id: "join-requests".into(),
        title: "Servers asking to join".into(),
        columns: vec!["Host", "Address", "Join code", "Hardware", "Asked", "State"],
        empty: "No server is asking to join. A server installed with mode = \"join\" and \
                no token finds this cluster on its network and shows a join code on its \
                console; it appears here, and you accept it when the codes match."
            .into(),
        rows,
        live: None,
        writer: ctx.admin,
        csrf: ctx.csrf.clone(),
        pager: None,
    })
}

async fn decide(web: Arc<Web>, ctx: Ctx, id: String, f: Fields, accept: bool) -> Page {
    f.check(&ctx)?;
    need_admin(&ctx)?;
    let id = node_id(&id)?;
    let (what, verb) = if accept {
        ("node.join.accept", "accepted")
    } else {
        ("node.join.reject", "rejected")
    };
    let rec = web
        .act(
            &ctx,
            what,
            &id.to_string(),
            format!("Join request of node {id} {verb}."),
            web.control.decide_join(id, accept, &ctx.user_name),
        )
        .await?;
    if accept {
        web.sessions.update(&ctx.sid, |s| {
            s.flash = Some(format!(
                "{} ({}, code {}) is accepted; it joins the next time it asks (within seconds).",
                rec.hostname, rec.addr, rec.code
            ))
        });
    }
    Ok(Redirect::to("/nodes").into_response())
}

async fn accept_join(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    decide(web, ctx, id, f, true).await
}

async fn reject_join(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    decide(web, ctx, id, f, false).await
}

fn node_id(id: &str) -> Result<NodeId, Failure> {
    id.parse::<NodeId>()
        .map_err(|_| Failure(StatusCode::NOT_FOUND, format!("No node {id}.")))
}

async fn node(State(web): State<Arc<Web>>, ctx: Ctx, Path(id): Path<String>) -> Page {
    need_admin(&ctx)?;
    let id = node_id(&id)?;
    let status = web.control.status()?;
    let n = status
        .nodes
        .iter()
        .find(|n| n.id == id)
        .ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("No node {id}.")))?;
    let vms = web.control.vms()?;
    let volumes = web.control.volumes()?;
    let mut hw = vec![
        ("Host name".to_string(), cell(n.hostname.clone())),
        ("Address".into(), cell(n.addr.to_string())),
        ("CPU cores".into(), cell(n.cores.to_string())),
        ("Memory".into(), cell(gib(n.memory_bytes))),
        (
            "Hypervisor".into(),
            cell(format!("{} ({})", n.hypervisor, n.hypervisor_reason)),
        ),
        ("Version".into(), cell(n.version.clone())),
        ("Raft".into(), cell(n.raft)),
    ];
    for d in &n.disks {
        hw.push((
            format!("Disk {}", d.name),
            cell(format!(
                "{} {}",
                gib(d.size_bytes),
                if d.rotational { "HDD" } else { "SSD" }
            )),
        ));
    }
    let on_node: Vec<_> = vms.iter().filter(|v| v.record.node == id).collect();
    let load = vec![
        ("Instances".to_string(), cell(on_node.len().to_string())),
        (
            "vCPUs allocated".into(),
            cell(
                on_node
                    .iter()
                    .map(|v| v.record.vcpus)
                    .sum::<u32>()
                    .to_string(),
            ),
        ),
        (
            "Memory allocated".into(),
            cell(gib(on_node.iter().map(|v| v.record.ram_mb << 20).sum())),
        ),
    ];
    let vm_table = Table {
        id: "node-vms".into(),
        title: "Instances on this node".into(),
        columns: vec!["Name", "State", "vCPUs", "Memory"],
        rows: on_node
            .iter()
            .map(|v| Row {
                id: v.record.id.0.clone(),
                cells: vec![
                    cell(v.record.name.clone()),
                    badge(
                        format!("{:?}", v.state).to_uppercase(),
                        state_class(&format!("{:?}", v.state)),
                    ),
                    cell(v.record.vcpus.to_string()),
                    cell(format!("{} MiB", v.record.ram_mb)),
                ],
                actions: vec![],
            })
            .collect(),
        empty: "No instances here.".into(),
        ..Default::default()
    };
    let replicas = Table {
        id: "node-replicas".into(),
        title: "Volume replicas on this node".into(),
        columns: vec!["Volume", "Size", "Replica state"],
        rows: volumes
            .iter()
            .filter_map(|v| {
                v.record
                    .replicas
                    .iter()
                    .find(|r| r.node == id)
                    .map(|r| Row {
                        id: v.record.id.to_string(),
                        cells: vec![
                            cell(v.record.name.clone()),
                            cell(gib(v.record.size)),
                            badge(
                                format!("{:?}", r.state),
                                state_class(&format!("{:?}", r.state)),
                            ),
                        ],
                        actions: vec![],
                    })
            })
            .collect(),
        empty: "No replicas here.".into(),
        ..Default::default()
    };
    let page = DetailPage {
        l: Layout::new(&ctx, &web, format!("Node {}", n.hostname), "nodes"),
        heading: format!("Node {} ({})", n.hostname, n.id),
        live: None,
        sections: vec![
            Section {
                title: "Hardware".into(),
                items: hw,
            },
            Section {
                title: "Load".into(),
                items: load,
            },
        ],
        actions: vec![],
        forms: vec![FormView::new(
            "maintenance",
            "Maintenance",
            format!("/nodes/{id}/maintenance"),
            "Put in maintenance",
        )
        .with(
            field("reason", "Reason", "text")
                .help("Shown to other administrators. Leave empty to end maintenance."),
        )],
        tables: vec![vm_table, replicas],
        console: None,
    };
    Ok(Html(page.render()?).into_response())
}

async fn maintenance(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    need_admin(&ctx)?;
    let id = node_id(&id)?;
    let reason = f.opt("reason");
    let done = match &reason {
        Some(r) => format!("Node {id} is in maintenance ({r}): no new instances go there."),
        None => format!("Node {id} is back in service."),
    };
    let what = if reason.is_some() {
        "node.maintenance.start"
    } else {
        "node.maintenance.end"
    };
    web.act(
        &ctx,
        what,
        &id.to_string(),
        done,
        web.control.set_maintenance(id, reason, &ctx.user_name),
    )
    .await?;
    Ok(Redirect::to("/nodes").into_response())
}

async fn drain(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    need_admin(&ctx)?;
    let id = node_id(&id)?;
    web.control
        .store
        .get::<crate::cluster::store::tables::Nodes>(&id.to_string())?
        .ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("No node {id}.")))?;
    // Moving instances takes minutes (each guest shuts down first): it runs on, and its
    // progress and result go to the events.
    let c = web.control.clone();
    let by = ctx.user_name.clone();
    let done = format!(
        "Draining node {id}: no new instances go there, and its instances move one by one (see the events)."
    );
    web.act(&ctx, "node.drain", &id.to_string(), done, async move {
        tokio::spawn(async move {
            if let Err(e) = c.drain_node(id, &by).await {
                tracing::warn!(node = %id, error = %crate::telemetry::error_chain(&e), "drain failed");
            }
        });
        Ok(())
    })
    .await?;
    Ok(Redirect::to("/nodes").into_response())
}

async fn remove(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    need_admin(&ctx)?;
    let id = node_id(&id)?;
    let done =
        format!("Node {id} is removed from the cluster; its replicas are rebuilt on other nodes.");
    web.act(
        &ctx,
        "node.remove",
        &id.to_string(),
        done,
        web.control.remove_node(id, &ctx.user_name),
    )
    .await?;
    Ok(Redirect::to("/nodes").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_scale_to_the_window() {
        let svg = chart_svg(&[(0, 0.0), (50, 50.0), (100, 100.0)], 0, 100);
        assert!(
            svg.contains("points=\"0.0,120.0 300.0,60.0 600.0,0.0\""),
            "{svg}"
        );
        let one = chart_svg(&[(100, 10.0)], 0, 100);
        assert!(one.contains("<circle"), "{one}");
        // Out-of-range figures stay on the chart.
        let svg = chart_svg(&[(0, -5.0), (100, 250.0)], 0, 100);
        assert!(svg.contains("0.0,120.0 600.0,0.0"), "{svg}");
    }
}
