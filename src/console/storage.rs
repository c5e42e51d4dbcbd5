//! Volumes and images (uploads stream the file as the request body, so the browser can
//! show a progress bar).

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{post, put};
use axum::{Form, Json, Router};
use futures::StreamExt;

use super::forms::{self, Fields};
use super::session::Ctx;
use super::view::*;
use super::{Failure, Page, Web};
use crate::control::images::CreateImage;
use crate::control::volumes::CreateVolume;

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/volumes", axum::routing::get(volumes).post(create_volume))
        .route("/volumes/{id}/delete", post(delete_volume))
        .route("/images", axum::routing::get(images).post(create_image))
        .route("/images/{id}/file", put(upload))
        .route("/images/{id}/delete", post(delete_image))
}

fn volume_table(web: &Web, ctx: &Ctx) -> Result<Table, Failure> {
    let vms: BTreeMap<String, String> = web
        .control
        .vms()?
        .into_iter()
        .map(|v| (v.record.id.0, v.record.name))
        .collect();
    let rows = web
        .control
        .volumes()?
        .into_iter()
        .filter(|v| ctx.owns(v.record.project.as_deref()) && v.record.image.is_none())
        .map(|v| {
            let id = v.record.id.to_string();
            let used = v
                .record
                .used_by
                .as_ref()
                .map(|u| vms.get(&u.0).cloned().unwrap_or_else(|| u.0.clone()))
                .unwrap_or_default();
            Row {
                id: id.clone(),
                cells: vec![
                    cell(v.record.name.clone()),
                    badge(
                        if used.is_empty() {
                            v.status.clone()
                        } else {
                            "in-use".into()
                        },
                        state_class(if used.is_empty() { &v.status } else { "in-use" }),
                    ),
                    cell(gib(v.record.size)),
                    cell(v.redundancy.clone()),
                    cell(used),
                    cell(when(v.record.created_at)),
                ],
                actions: vec![danger(
                    "Delete",
                    format!("/volumes/{id}/delete"),
                    format!("Delete volume {}? Its data is lost.", v.record.name),
                )],
            }
        })
        .collect();
    Ok(Table {
        id: "volumes".into(),
        title: String::new(),
        columns: vec![
            "Name",
            "Status",
            "Size",
            "Redundancy",
            "Attached to",
            "Created",
        ],
        rows,
        empty: "No volumes yet.".into(),
        live: Some("/volumes?part=rows".into()),
        writer: ctx.writer,
        csrf: ctx.csrf.clone(),
        pager: None,
    })
}

fn volume_form(web: &Web, ctx: &Ctx) -> Result<FormView, Failure> {
    let mut images = vec![(String::new(), "(empty volume)".to_string())];
    images.extend(
        web.control
            .images()?
            .into_iter()
            .filter(|i| {
                i.status == crate::cluster::store::image_tables::ImageStatus::Active
                    && (i.owner == ctx.project_id || i.visibility == "public")
            })
            .map(|i| (i.id, i.name)),
    );
    Ok(
        FormView::new("new-volume", "Create a volume", "/volumes", "Create")
            .with(field("name", "Name", "text").required())
            .with(field("size", "Size (GiB)", "number").required().value("1"))
            .with(field("image", "From image", "select").options(images)),
    )
}

async fn volumes_page(web: &Web, ctx: &Ctx, form: FormView, error: Option<String>) -> Page {
    let mut l = Layout::new(ctx, web, "Volumes", "volumes");
    l.error = error;
    let page = ListPage {
        l,
        heading: "Volumes".into(),
        intro: "Block volumes, replicated across nodes. Attach one to an instance from the instance's page.".into(),
        forms: if ctx.writer { vec![form] } else { vec![] },
        tables: vec![volume_table(web, ctx)?],
    };
    Ok(Html(page.render()?).into_response())
}

async fn volumes(State(web): State<Arc<Web>>, ctx: Ctx, q: axum::extract::Query<Part>) -> Page {
    if q.part.as_deref() == Some("rows") {
        let t = volume_table(&web, &ctx)?;
        return Ok(Html(Rows { t: &t }.render()?).into_response());
    }
    let form = volume_form(&web, &ctx)?;
    volumes_page(&web, &ctx, form, None).await
}

async fn create_volume(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    let mut form = volume_form(&web, &ctx)?;
    let parsed = (|| -> Result<(String, i64), String> {
        Ok((
            forms::name("Name", &f.text("name"))?,
            f.number("size", "Size (GiB)", 1..=16 * 1024)?,
        ))
    })();
    let result = match parsed {
        Err(m) => Err(Failure(StatusCode::BAD_REQUEST, m)),
        Ok((name, size)) => {
            let source = match f.opt("image") {
                Some(i) => match web.control.image_file(&ctx.caller(), &i) {
                    Ok(file) if (size as u64) << 30 >= file.size => Ok(Some((file.snapshot, i))),
                    Ok(file) => Err(Failure(
                        StatusCode::BAD_REQUEST,
                        format!("Size (GiB): the image needs at least {}", gib(file.size)),
                    )),
                    Err(e) => Err(e.into()),
                },
                None => Ok(None),
            };
            match source {
                Err(e) => Err(e),
                Ok(source) => web
                    .act(
                        &ctx,
                        "volume.create",
                        &name,
                        format!("Volume {name} is being created."),
                        web.control.create_volume(
                            &ctx.caller(),
                            CreateVolume {
                                name: name.clone(),
                                size_bytes: (size as u64) << 30,
                                source_snapshot: source.as_ref().map(|s| s.0.clone()),
                                source_image: source.map(|s| s.1),
                                project: Some(ctx.project_id.clone()),
                                user: Some(ctx.user_id.clone()),
                                ..Default::default()
                            },
                        ),
                    )
                    .await
                    .map(|_| ()),
            }
        }
    };
    match result {
        Ok(()) => Ok(Redirect::to("/volumes").into_response()),
        Err(e) => {
            form.refill(&f, &e.1);
            let mut r = volumes_page(&web, &ctx, form, Some(e.1)).await?;
            *r.status_mut() = e.0;
            Ok(r)
        }
    }
}

async fn delete_volume(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    let v = web.control.volume(&ctx.caller(), &id)?;
    if !ctx.owns(v.record.project.as_deref()) || v.record.id.to_string() != id {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("There is no volume {id} in this project."),
        ));
    }
    let name = v.record.name.clone();
    web.act(
        &ctx,
        "volume.delete",
        &name,
        format!("Volume {name} deleted."),
        web.control.delete_volume(&ctx.caller(), &id),
    )
    .await?;
    Ok(Redirect::to("/volumes").into_response())
}

fn image_table(web: &Web, ctx: &Ctx) -> Result<Table, Failure> {
    let rows = web
        .control
        .images()?
        .into_iter()
        .filter(|i| {
            ctx.admin
                || i.owner == ctx.project_id
                || i.visibility == "public"
                || i.visibility == "community"
        })
        .map(|i| {
            let st = format!("{:?}", i.status).to_lowercase();
            let mine = ctx.admin || i.owner == ctx.project_id;
            Row {
                id: i.id.clone(),
                cells: vec![
                    cell(i.name.clone()),
                    badge(st.clone(), state_class(&st)),
                    cell(i.disk_format.clone().unwrap_or_default()),
                    cell(i.size.map(gib).unwrap_or_default()),
                    cell(i.visibility.clone()),
                    cell(if i.properties.contains_key("kernel_id") {
                        "yes"
                    } else {
                        ""
                    }),
                ],
                actions: if mine {
                    vec![danger(
                        "Delete",
                        format!("/images/{}/delete", i.id),
                        format!("Delete image {}?", i.name),
                    )]
                } else {
                    vec![]
                },
            }
        })
        .collect();
    Ok(Table {
        id: "images".into(),
        title: String::new(),
        columns: vec!["Name", "Status", "Format", "Size", "Visibility", "Bootable"],
        rows,
        empty: "No images yet.".into(),
        live: Some("/images?part=rows".into()),
        writer: ctx.writer,
        csrf: ctx.csrf.clone(),
        pager: None,
    })
}

fn image_form(web: &Web, ctx: &Ctx) -> Result<FormView, Failure> {
    let mut files = vec![(String::new(), "(none)".to_string())];
    files.extend(
        web.control
            .images()?
            .into_iter()
            .filter(|i| i.owner == ctx.project_id || i.visibility == "public")
            .filter(|i| matches!(i.disk_format.as_deref(), Some("aki") | Some("ari")))
            .map(|i| (i.id, i.name)),
    );
    let formats = ["raw", "qcow2", "ami", "aki", "ari", "iso"]
        .iter()
        .map(|f| (f.to_string(), f.to_string()))
        .collect();
    let mut form = FormView::new("new-image", "Upload an image", "/images", "Upload")
        .with(field("name", "Name", "text").required())
        .with(field("disk_format", "Disk format", "select").options(formats))
        .with(field("kernel_id", "Kernel image", "select").options(files.clone()).help("Strata boots the kernel directly: a bootable image names its kernel (aki) and initramfs (ari)."))
        .with(field("ramdisk_id", "Initramfs image", "select").options(files))
        .with(field("os_command_line", "Kernel command line", "text").value("console=ttyS0"))
        .with(field("file", "File", "file").required());
    form.upload = true;
    Ok(form)
}

#[derive(serde::Deserialize, Default)]
struct Part {
    #[serde(default)]
    part: Option<String>,
}

async fn images(State(web): State<Arc<Web>>, ctx: Ctx, q: axum::extract::Query<Part>) -> Page {
    let t = image_table(&web, &ctx)?;
    if q.part.as_deref() == Some("rows") {
        return Ok(Html(Rows { t: &t }.render()?).into_response());
    }
    let page = ListPage {
        l: Layout::new(&ctx, &web, "Images", "images"),
        heading: "Images".into(),
        intro: "Disk images instances boot from, stored in replicated volumes.".into(),
        forms: if ctx.writer {
            vec![image_form(&web, &ctx)?]
        } else {
            vec![]
        },
        tables: vec![t],
    };
    Ok(Html(page.render()?).into_response())
}

/// Step one of an upload (the page's script posts the form's fields, then sends the
/// file to the returned URL): records the image.
async fn create_image(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    headers: HeaderMap,
    Form(f): Form<Fields>,
) -> Result<axum::response::Response, Failure> {
    f.check(&ctx)?;
    let name =
        forms::name("Name", &f.text("name")).map_err(|m| Failure(StatusCode::BAD_REQUEST, m))?;
    let mut properties = BTreeMap::new();
    for k in ["kernel_id", "ramdisk_id", "os_command_line"] {
        if let Some(v) = f.opt(k) {
            properties.insert(k.to_string(), v);
        }
    }
    let req = CreateImage {
        name: name.clone(),
        disk_format: f.opt("disk_format"),
        container_format: Some("bare".into()),
        visibility: Some("private".into()),
        properties,
        ..Default::default()
    };
    let rec = web
        .act(
            &ctx,
            "image.create",
            &name,
            format!("Image {name} uploaded."),
            web.control.create_image(&ctx.project_id, req),
        )
        .await;
    let wants_json = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("json"));
    match (rec, wants_json) {
        (Ok(r), true) => Ok(
            Json(serde_json::json!({"upload": format!("/images/{}/file", r.id)})).into_response(),
        ),
        (Ok(_), false) => Ok(Redirect::to("/images").into_response()),
        (Err(e), true) => Ok((e.0, Json(serde_json::json!({"error": e.1}))).into_response()),
        (Err(e), false) => Err(e),
    }
}

/// Step two: the file, streamed as the request body (CSRF token in `X-CSRF-Token`).
async fn upload(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    let json_err = |f: Failure| (f.0, Json(serde_json::json!({"error": f.1}))).into_response();
    if let Err(e) = forms::check_token(
        headers.get("x-csrf-token").and_then(|v| v.to_str().ok()),
        &ctx,
    ) {
        return json_err(e);
    }
    let img = match web.control.image(&ctx.caller(), &id) {
        Ok(i) if i.owner == ctx.project_id || ctx.admin => i,
        _ => {
            return json_err(Failure(
                StatusCode::NOT_FOUND,
                format!("There is no image {id} in this project."),
            ))
        }
    };
    let len = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed();
    match web
        .act(
            &ctx,
            "image.upload",
            &img.name,
            format!("Image {} uploaded.", img.name),
            web.control.upload_image(&id, len, stream),
        )
        .await
    {
        Ok(r) => Json(
            serde_json::json!({"status": format!("{:?}", r.status).to_lowercase(), "size": r.size}),
        )
        .into_response(),
        Err(e) => json_err(e),
    }
}

async fn delete_image(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    let img = web.control.image(&ctx.caller(), &id)?;
    if !(ctx.admin || img.owner == ctx.project_id) {
        return Err(Failure(
            StatusCode::FORBIDDEN,
            format!("Image {} belongs to another project.", img.name),
        ));
    }
    web.act(
        &ctx,
        "image.delete",
        &img.name,
        format!("Image {} deleted.", img.name),
        web.control.delete_image(&id),
    )
    .await?;
    Ok(Redirect::to("/images").into_response())
}
