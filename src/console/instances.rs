//! Instances: the list with live status, the create form, power actions, the detail page
//! with addresses, volumes and the serial console.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};

use super::forms::{self, Fields};
use super::session::Ctx;
use super::view::*;
use super::{Failure, Page, Web};
use crate::control::caller::Caller;
use crate::control::servers::CreateServer;
use crate::control::vms::{VmAction, VmView};

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/instances", get(list).post(create))
        .route("/instances/rows", get(rows))
        .route("/instances/{id}", get(detail))
        .route("/instances/{id}/summary", get(summary))
        .route("/instances/{id}/action", post(act))
        .route("/instances/{id}/attach", post(attach))
        .route("/instances/{id}/detach", post(detach))
}

pub fn state(v: &VmView) -> String {
    format!("{:?}", v.state).to_uppercase()
}

/// The project's instance, or "not found" (other projects' instances do not exist here).
pub fn find(web: &Web, ctx: &Ctx, id: &str) -> Result<VmView, Failure> {
    match web.control.vm(id) {
        Ok(v) if v.record.id.0 == id && ctx.owns(v.record.project.as_deref()) => Ok(v),
        _ => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("There is no instance {id} in project {}.", ctx.project_name),
        )),
    }
}

fn addresses(
    web: &Web,
    v: &VmView,
    fips: &[crate::cluster::store::network_tables::FloatingIpRecord],
) -> Vec<String> {
    let mut out = vec![];
    for p in &v.record.ports {
        if let Ok(port) = web.control.port(&Caller::system(), p) {
            let net = web
                .control
                .find_network(&Caller::system(), &port.record.network)
                .map(|n| n.name)
                .unwrap_or_default();
            for ip in &port.record.fixed_ips {
                let fip = fips
                    .iter()
                    .find(|f| f.port.as_deref() == Some(p.as_str()))
                    .map(|f| format!(", floating {}", f.ip))
                    .unwrap_or_default();
                out.push(format!("{net}: {}{fip}", ip.ip));
            }
        }
    }
    out
}

/// Which page of the list (`?page=N`).
#[derive(serde::Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    page: Option<usize>,
}

fn table(web: &Web, ctx: &Ctx, page: usize) -> Result<Table, Failure> {
    let images: BTreeMap<String, String> = web
        .control
        .images()?
        .into_iter()
        .map(|i| (i.id, i.name))
        .collect();
    let fips = web.control.floating_ips()?;
    let mut mine: Vec<VmView> = web
        .control
        .vms()?
        .into_iter()
        .filter(|v| ctx.owns(v.record.project.as_deref()))
        .collect();
    // Newest first, as OpenStack lists them.
    mine.sort_by(|a, b| {
        (b.record.created_at, &a.record.name).cmp(&(a.record.created_at, &b.record.name))
    });
    let (mine, pager) = paginate(mine, page, |n| format!("/instances?page={n}"));
    let page = pager.as_ref().map(|p| p.page).unwrap_or(1);
    let rows = mine
        .into_iter()
        .map(|v| {
            let st = state(&v);
            let id = v.record.id.0.clone();
            let url = format!("/instances/{id}/action");
            let post = |label: &str, what: &str| Action {
                hidden: vec![("do".into(), what.into())],
                ..action(label, url.clone())
            };
            let mut actions = match st.as_str() {
                "ACTIVE" => vec![post("Stop", "stop"), post("Reboot", "reboot")],
                "SHUTOFF" | "ERROR" => vec![post("Start", "start")],
                "PAUSED" => vec![post("Resume", "resume")],
                _ => vec![],
            };
            actions.push(Action {
                hidden: vec![("do".into(), "delete".into())],
                ..danger(
                    "Delete",
                    url.clone(),
                    format!(
                        "Delete instance {}? Its boot disk goes with it.",
                        v.record.name
                    ),
                )
            });
            let status = if st == "ERROR" && !v.reason.is_empty() {
                badge(format!("ERROR: {}", v.reason), "bad")
            } else {
                badge(st.clone(), state_class(&st))
            };
            Row {
                id: id.clone(),
                cells: vec![
                    link(v.record.name.clone(), format!("/instances/{id}")),
                    status,
                    cell(
                        v.record
                            .image
                            .as_ref()
                            .map(|i| images.get(i).cloned().unwrap_or_else(|| i.clone()))
                            .unwrap_or_else(|| "(volume)".into()),
                    ),
                    cell(format!(
                        "{} ({} vCPU, {} MiB)",
                        v.record.flavor, v.record.vcpus, v.record.ram_mb
                    )),
                    cell(addresses(web, &v, &fips).join("; ")),
                    cell(when(v.record.created_at)),
                ],
                actions,
            }
        })
        .collect();
    Ok(Table {
        id: "instances".into(),
        title: String::new(),
        columns: vec!["Name", "Status", "Image", "Flavor", "Addresses", "Created"],
        rows,
        empty: "No instances yet.".into(),
        live: Some(format!("/instances/rows?page={page}")),
        writer: ctx.writer,
        csrf: ctx.csrf.clone(),
        pager,
    })
}

fn create_form(web: &Web, ctx: &Ctx) -> Result<FormView, Failure> {
    let c = &web.control;
    let images: Vec<(String, String)> = c
        .images()?
        .into_iter()
        .filter(|i| {
            i.properties.contains_key("kernel_id")
                && (i.owner == ctx.project_id
                    || i.visibility == "public"
                    || i.visibility == "community")
        })
        .map(|i| (i.id, i.name))
        .collect();
    let flavors = c
        .flavors()?
        .into_iter()
        .map(|f| {
            let label = format!(
                "{} ({} vCPU, {} MiB, {} GiB)",
                f.name, f.vcpus, f.ram_mb, f.disk_gb
            );
            (f.name, label)
        })
        .collect();
    let mut networks = vec![(String::new(), "(no network)".to_string())];
    networks.extend(
        c.networks()?
            .into_iter()
            .filter(|n| {
                (ctx.owns(Some(&n.record.project)) || n.record.shared) && !n.record.external
            })
            .map(|n| (n.record.id, n.record.name)),
    );
    let mut keys = vec![(String::new(), "(none)".to_string())];
    keys.extend(
        c.keypairs(&ctx.user_id)?
            .into_iter()
            .map(|k| (k.name.clone(), k.name)),
    );
    let mut volumes = vec![(String::new(), "(boot from the image)".to_string())];
    volumes.extend(
        c.volumes()?
            .into_iter()
            .filter(|v| {
                ctx.owns(v.record.project.as_deref())
                    && v.record.used_by.is_none()
                    && v.record.image.is_none()
                    && v.record.source_image.is_some()
            })
            .map(|v| (v.record.id.to_string(), v.record.name)),
    );
    Ok(
        FormView::new("new-instance", "Launch an instance", "/instances", "Launch")
            .with(field("name", "Name", "text").required())
            .with(field("image", "Image", "select").options(images))
            .with(
                field("flavor", "Flavor", "select")
                    .options(flavors)
                    .required(),
            )
            .with(field("network", "Network", "select").options(networks))
            .with(field("key", "Key pair", "select").options(keys))
            .with(
                field("volume", "Boot volume", "select")
                    .options(volumes)
                    .help("A bootable volume of this project, instead of the image."),
            )
            .with(
                field("user_data", "User data", "textarea")
                    .help("Given to cloud-init in the guest."),
            ),
    )
}

async fn list_page(
    web: &Web,
    ctx: &Ctx,
    form: FormView,
    error: Option<String>,
    page: usize,
) -> Page {
    let mut l = Layout::new(ctx, web, "Instances", "instances");
    l.error = error;
    let page = ListPage {
        l,
        heading: "Instances".into(),
        intro: format!(
            "Virtual machines of project {}. Their status updates by itself.",
            ctx.project_name
        ),
        forms: if ctx.writer { vec![form] } else { vec![] },
        tables: vec![table(web, ctx, page)?],
    };
    Ok(Html(page.render()?).into_response())
}

async fn list(State(web): State<Arc<Web>>, ctx: Ctx, Query(q): Query<PageQuery>) -> Page {
    let form = create_form(&web, &ctx)?;
    list_page(&web, &ctx, form, None, q.page.unwrap_or(1)).await
}

async fn rows(State(web): State<Arc<Web>>, ctx: Ctx, Query(q): Query<PageQuery>) -> Page {
    let t = table(&web, &ctx, q.page.unwrap_or(1))?;
    Ok(Html(Rows { t: &t }.render()?).into_response())
}

fn parse_create(ctx: &Ctx, f: &Fields) -> Result<CreateServer, String> {
    let name = forms::name("Name", &f.text("name"))?;
    let flavor = f.need("flavor", "Flavor")?;
    let volume = f.opt("volume");
    let image = if volume.is_some() {
        None
    } else {
        f.opt("image")
    };
    if image.is_none() && volume.is_none() {
        return Err("Image: choose an image (or a boot volume)".into());
    }
    Ok(CreateServer {
        name,
        flavor,
        image,
        volume,
        delete_volume: false,
        networks: f.opt("network").into_iter().collect(),
        security_groups: None,
        key: None,
        user_data: f.opt("user_data"),
        metadata: BTreeMap::new(),
        project: ctx.project_id.clone(),
        user: ctx.user_id.clone(),
        anti_affinity_group: None,
        affinity_group: None,
        config_drive: false,
    })
}

/// Checks what the form names exists in this project, then creates the server.
async fn try_create(web: &Web, ctx: &Ctx, f: &Fields) -> Result<(), Failure> {
    let bad = |m: String| Failure(StatusCode::BAD_REQUEST, m);
    let mut req = match parse_create(ctx, f) {
        Ok(r) => r,
        Err(msg) => {
            web.audit(ctx, "instance.create", &f.text("name"), Some(msg.clone()))
                .await;
            return Err(bad(msg));
        }
    };
    if let Some(k) = f.opt("key") {
        let kp = web
            .control
            .keypair(&ctx.user_id, &k)
            .map_err(|_| bad(format!("Key pair: no key pair {k:?}")))?;
        req.key = Some((kp.name, kp.public_key));
    }
    if let Some(n) = req.networks.first() {
        match web.control.find_network(&ctx.caller(), n) {
            Ok(net) if (ctx.owns(Some(&net.project)) || net.shared) && !net.external => {}
            _ => return Err(bad(format!("Network: no network {n:?} in this project"))),
        }
    }
    if let Some(v) = &req.volume {
        match web.control.volume(&ctx.caller(), v) {
            Ok(vol) if ctx.owns(vol.record.project.as_deref()) => {}
            _ => return Err(bad(format!("Boot volume: no volume {v:?} in this project"))),
        }
    }
    let name = req.name.clone();
    web.act(
        ctx,
        "instance.create",
        &name,
        format!("Instance {name} is being created."),
        web.control.create_server(&ctx.caller(), req),
    )
    .await
    .map(|_| ())
}

async fn create(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    match try_create(&web, &ctx, &f).await {
        Ok(()) => Ok(Redirect::to("/instances").into_response()),
        Err(e) => {
            let mut form = create_form(&web, &ctx)?;
            form.refill(&f, &e.1);
            let mut r = list_page(&web, &ctx, form, Some(e.1), 1).await?;
            *r.status_mut() = e.0;
            Ok(r)
        }
    }
}

fn overview(web: &Web, v: &VmView) -> Vec<Section> {
    let st = state(v);
    let image = v
        .record
        .image
        .as_ref()
        .map(|i| {
            web.control
                .image(&Caller::system(), i)
                .map(|r| r.name)
                .unwrap_or_else(|_| i.clone())
        })
        .unwrap_or_else(|| "(booted from a volume)".into());
    let mut items = vec![
        ("Status".to_string(), badge(st.clone(), state_class(&st))),
        ("Id".into(), cell(v.record.id.0.clone())),
        (
            "Flavor".into(),
            cell(format!(
                "{} ({} vCPU, {} MiB)",
                v.record.flavor, v.record.vcpus, v.record.ram_mb
            )),
        ),
        ("Image".into(), cell(image)),
        ("Node".into(), cell(v.record.node.to_string())),
        ("Hypervisor".into(), cell(v.driver.clone())),
        ("Boots".into(), cell(v.boots.to_string())),
        ("Created".into(), cell(when(v.record.created_at))),
        (
            "Key pair".into(),
            cell(v.record.key_name.clone().unwrap_or_else(|| "(none)".into())),
        ),
    ];
    if !v.reason.is_empty() {
        items.push(("Reason".into(), cell(v.reason.clone())));
    }
    if v.status_updated_at > 0 {
        items.push(("Status reported".into(), cell(when(v.status_updated_at))));
    }
    let addrs = addresses(web, v, &web.control.floating_ips().unwrap_or_default());
    vec![
        Section {
            title: "Overview".into(),
            items,
        },
        Section {
            title: "Addresses".into(),
            items: if addrs.is_empty() {
                vec![("Network".into(), cell("(none)"))]
            } else {
                addrs
                    .into_iter()
                    .map(|a| ("Address".to_string(), cell(a)))
                    .collect()
            },
        },
    ]
}

async fn summary(State(web): State<Arc<Web>>, ctx: Ctx, Path(id): Path<String>) -> Page {
    let v = find(&web, &ctx, &id)?;
    let sections = overview(&web, &v);
    Ok(Html(
        Sections {
            sections: &sections,
        }
        .render()?,
    )
    .into_response())
}

async fn detail(State(web): State<Arc<Web>>, ctx: Ctx, Path(id): Path<String>) -> Page {
    let v = find(&web, &ctx, &id)?;
    let url = format!("/instances/{id}/action");
    let post = |label: &str, what: &str| Action {
        hidden: vec![("do".into(), what.into())],
        ..action(label, url.clone())
    };
    let mut actions = vec![
        post("Start", "start"),
        post("Stop", "stop"),
        post("Reboot", "reboot"),
    ];
    actions.push(Action {
        hidden: vec![("do".into(), "delete".into())],
        ..danger(
            "Delete",
            url.clone(),
            format!("Delete instance {}?", v.record.name),
        )
    });
    let vols = web.control.volumes()?;
    let attached = Table {
        id: "attached".into(),
        title: "Volumes".into(),
        columns: vec!["Volume", "Size", "Role"],
        rows: vols
            .iter()
            .filter(|x| {
                v.record.volume == Some(x.record.id.clone())
                    || v.record.data_volumes.contains(&x.record.id)
            })
            .map(|x| {
                let boot = v.record.volume == Some(x.record.id.clone());
                Row {
                    id: x.record.id.to_string(),
                    cells: vec![
                        cell(x.record.name.clone()),
                        cell(gib(x.record.size)),
                        cell(if boot { "boot disk" } else { "data disk" }),
                    ],
                    actions: if boot {
                        vec![]
                    } else {
                        vec![Action {
                            hidden: vec![("volume".into(), x.record.id.to_string())],
                            ..action("Detach", format!("/instances/{id}/detach"))
                        }]
                    },
                }
            })
            .collect(),
        empty: "No volumes.".into(),
        live: None,
        writer: ctx.writer,
        csrf: ctx.csrf.clone(),
        pager: None,
    };
    let free: Vec<(String, String)> = vols
        .iter()
        .filter(|x| {
            ctx.owns(x.record.project.as_deref())
                && x.record.used_by.is_none()
                && x.record.image.is_none()
                && x.record.attached_to.is_none()
        })
        .map(|x| {
            (
                x.record.id.to_string(),
                format!("{} ({})", x.record.name, gib(x.record.size)),
            )
        })
        .collect();
    let attach = FormView::new(
        "attach",
        "Attach a volume",
        format!("/instances/{id}/attach"),
        "Attach",
    )
    .with(field("volume", "Volume", "select").options(free).required());
    let page = DetailPage {
        l: Layout::new(
            &ctx,
            &web,
            format!("Instance {}", v.record.name),
            "instances",
        ),
        heading: format!("Instance {}", v.record.name),
        live: Some(format!("/instances/{id}/summary")),
        sections: overview(&web, &v),
        actions: if ctx.writer { actions } else { vec![] },
        forms: if ctx.writer { vec![attach] } else { vec![] },
        tables: vec![attached],
        console: Some((format!("/instances/{id}/console/ws"), ctx.writer)),
    };
    Ok(Html(page.render()?).into_response())
}

async fn act(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    let v = find(&web, &ctx, &id)?;
    let name = v.record.name.clone();
    let what = f.text("do");
    if what == "delete" {
        web.act(
            &ctx,
            "instance.delete",
            &name,
            format!("Instance {name} is being deleted."),
            web.control.delete_vm(&id),
        )
        .await?;
        return Ok(Redirect::to("/instances").into_response());
    }
    let a = match what.as_str() {
        "start" => VmAction::Start,
        "stop" => VmAction::Stop,
        "reboot" => VmAction::Reboot,
        "pause" => VmAction::Pause,
        "resume" => VmAction::Resume,
        other => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("There is no action {other:?} for instances."),
            ))
        }
    };
    web.act(
        &ctx,
        &format!("instance.{what}"),
        &name,
        format!("Instance {name}: {what} requested."),
        web.control.vm_action(&id, a),
    )
    .await?;
    Ok(Redirect::to(&format!("/instances/{id}")).into_response())
}

async fn attach(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    volume_op(&web, &ctx, &id, &f, true).await
}

async fn detach(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    volume_op(&web, &ctx, &id, &f, false).await
}

/// Attaches (hot-plugs) or detaches one of the project's volumes.
async fn volume_op(web: &Web, ctx: &Ctx, id: &str, f: &Fields, attach: bool) -> Page {
    f.check(ctx)?;
    let v = find(web, ctx, id)?;
    let vol = f
        .need("volume", "Volume")
        .map_err(|m| Failure(StatusCode::BAD_REQUEST, m))?;
    let rec = web.control.volume(&ctx.caller(), &vol)?;
    super::owned(ctx, rec.record.project.as_deref(), "volume", &vol)?;
    let (name, vid) = (rec.record.name.clone(), rec.record.id.to_string());
    let target = format!("{name} -> {}", v.record.name);
    if attach {
        let done = format!("Volume {name} is being attached to {}.", v.record.name);
        let caller = ctx.caller();
        let op = web.control.attach_vm_volume(&caller, id, &vid);
        web.act(ctx, "volume.attach", &target, done, op).await?;
    } else {
        let done = format!("Volume {name} is being detached.");
        let op = web.control.detach_vm_volume(id, &vid);
        web.act(ctx, "volume.detach", &target, done, op).await?;
    }
    Ok(Redirect::to(&format!("/instances/{id}")).into_response())
}
