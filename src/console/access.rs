//! How instances are reached: floating IPs and key pairs.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};

use super::forms::{self, Fields};
use super::network::{page, tbl};
use super::session::Ctx;
use super::view::*;
use super::{Failure, Page, Web};
use crate::control::routers::CreateFloatingIp;

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/floating-ips", get(fips).post(allocate_fip))
        .route("/floating-ips/associate", post(associate_fip))
        .route("/floating-ips/{id}/disassociate", post(disassociate_fip))
        .route("/floating-ips/{id}/delete", post(release_fip))
        .route("/keypairs", get(keypairs).post(import_keypair))
        .route("/keypairs/generate", post(generate_keypair))
        .route("/keypairs/{name}/delete", post(delete_keypair))
}

// ---- floating IPs

fn fip_view(web: &Web, ctx: &Ctx, f: Option<(&Fields, &Failure)>) -> Page {
    let vms = web.control.vms()?;
    let nets = web.control.networks()?;
    let fips: Vec<_> = web
        .control
        .floating_ips()?
        .into_iter()
        .filter(|x| ctx.owns(Some(&x.project)))
        .collect();
    let rows = fips
        .iter()
        .map(|x| {
            let vm = x
                .port
                .as_ref()
                .and_then(|p| vms.iter().find(|v| v.record.ports.contains(p)))
                .map(|v| v.record.name.clone());
            let mut actions = vec![];
            if x.port.is_some() {
                actions.push(action(
                    "Disassociate",
                    format!("/floating-ips/{}/disassociate", x.id),
                ));
            }
            actions.push(danger(
                "Release",
                format!("/floating-ips/{}/delete", x.id),
                format!("Release {}?", x.ip),
            ));
            Row {
                id: x.id.clone(),
                cells: vec![
                    cell(x.ip.clone()),
                    cell(
                        nets.iter()
                            .find(|n| n.record.id == x.network)
                            .map(|n| n.record.name.clone())
                            .unwrap_or_default(),
                    ),
                    cell(vm.unwrap_or_default()),
                    cell(x.fixed_ip.clone().unwrap_or_default()),
                ],
                actions,
            }
        })
        .collect();
    let external: Vec<(String, String)> = nets
        .iter()
        .filter(|n| n.record.external)
        .map(|n| (n.record.id.clone(), n.record.name.clone()))
        .collect();
    let free: Vec<(String, String)> = fips
        .iter()
        .filter(|x| x.port.is_none())
        .map(|x| (x.id.clone(), x.ip.clone()))
        .collect();
    let instances: Vec<(String, String)> = vms
        .iter()
        .filter(|v| ctx.owns(v.record.project.as_deref()) && !v.record.ports.is_empty())
        .map(|v| (v.record.id.0.clone(), v.record.name.clone()))
        .collect();
    let mut alloc = FormView::new(
        "allocate",
        "Allocate a floating IP",
        "/floating-ips",
        "Allocate",
    )
    .with(
        field("network", "External network", "select")
            .options(external)
            .required(),
    );
    let mut assoc = FormView::new(
        "associate",
        "Associate with an instance",
        "/floating-ips/associate",
        "Associate",
    )
    .with(
        field("fip", "Floating IP", "select")
            .options(free)
            .required(),
    )
    .with(
        field("instance", "Instance", "select")
            .options(instances)
            .required(),
    );
    let err = f.map(|(fields, e)| {
        if fields.get("fip").is_some() {
            assoc.refill(fields, &e.1);
        } else {
            alloc.refill(fields, &e.1);
        }
        e.clone()
    });
    page(
        ctx,
        web,
        "floating-ips",
        (
            "Floating IPs",
            "Addresses on an external network that reach an instance through its router.",
        ),
        vec![alloc, assoc],
        vec![tbl(
            "fips",
            "",
            ctx,
            vec!["Address", "Network", "Instance", "Fixed IP"],
            rows,
            "No floating IPs.",
        )],
        err,
    )
}

async fn fips(State(web): State<Arc<Web>>, ctx: Ctx) -> Page {
    fip_view(&web, &ctx, None)
}

async fn allocate_fip(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    let r = match f.need("network", "External network") {
        Err(m) => Err(Failure(StatusCode::BAD_REQUEST, m)),
        Ok(net) => web
            .act(
                &ctx,
                "floatingip.create",
                &net,
                "Floating IP allocated.".into(),
                web.control.create_floating_ip(
                    &ctx.caller(),
                    CreateFloatingIp {
                        network: net.clone(),
                        project: Some(ctx.project_id.clone()),
                        port: None,
                    },
                ),
            )
            .await
            .map(|_| ()),
    };
    match r {
        Ok(()) => Ok(Redirect::to("/floating-ips").into_response()),
        Err(e) => fip_view(&web, &ctx, Some((&f, &e))),
    }
}

fn own_fip(
    web: &Web,
    ctx: &Ctx,
    id: &str,
) -> Result<crate::cluster::store::network_tables::FloatingIpRecord, Failure> {
    match web.control.find_floating_ip(&ctx.caller(), id) {
        Ok(x) if ctx.owns(Some(&x.project)) => Ok(x),
        _ => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("There is no floating IP {id} in this project."),
        )),
    }
}

async fn associate_fip(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    let x = own_fip(&web, &ctx, &f.text("fip"))?;
    let vm = super::instances::find(&web, &ctx, &f.text("instance"))?;
    let port = vm.record.ports.first().cloned().ok_or_else(|| {
        Failure(
            StatusCode::BAD_REQUEST,
            "Instance: it has no network port".into(),
        )
    })?;
    let r = web
        .act(
            &ctx,
            "floatingip.associate",
            &x.ip,
            format!("{} now reaches {}.", x.ip, vm.record.name),
            web.control
                .associate_floating_ip(&ctx.caller(), &x.id, Some(&port)),
        )
        .await;
    match r {
        Ok(_) => Ok(Redirect::to("/floating-ips").into_response()),
        Err(e) => fip_view(&web, &ctx, Some((&f, &e))),
    }
}

async fn disassociate_fip(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    let x = own_fip(&web, &ctx, &id)?;
    web.act(
        &ctx,
        "floatingip.disassociate",
        &x.ip,
        format!("{} disassociated.", x.ip),
        web.control
            .associate_floating_ip(&ctx.caller(), &x.id, None),
    )
    .await?;
    Ok(Redirect::to("/floating-ips").into_response())
}

async fn release_fip(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    let x = own_fip(&web, &ctx, &id)?;
    web.act(
        &ctx,
        "floatingip.delete",
        &x.ip,
        format!("{} released.", x.ip),
        web.control.delete_floating_ip(&ctx.caller(), &x.id),
    )
    .await?;
    Ok(Redirect::to("/floating-ips").into_response())
}

// ---- key pairs

/// The key pairs page's two forms: a key pair Strata makes, and an imported public key.
const CREATE_FORM: &str = "create-keypair";
const IMPORT_FORM: &str = "import-keypair";

/// The key pairs page; `f` is a refused form (which one, what was sent) and why.
fn keypair_view(web: &Web, ctx: &Ctx, f: Option<((&str, &Fields), &Failure)>) -> Page {
    let rows = web
        .control
        .keypairs(&ctx.user_id)?
        .into_iter()
        .map(|k| Row {
            id: k.name.clone(),
            cells: vec![
                cell(k.name.clone()),
                cell(k.fingerprint.clone()),
                cell(when(k.created_at)),
            ],
            actions: vec![danger(
                "Delete",
                format!("/keypairs/{}/delete", forms_path(&k.name)),
                format!("Delete key pair {}?", k.name),
            )],
        })
        .collect();
    let mut form = FormView::new(IMPORT_FORM, "Import a public key", "/keypairs", "Import")
        .with(field("name", "Name", "text").required())
        .with(
            field("public_key", "Public key", "textarea")
                .required()
                .help("An OpenSSH public key (ssh-ed25519 ... or ssh-rsa ...)."),
        );
    let mut create = FormView::new(
        CREATE_FORM,
        "Create a key pair",
        "/keypairs/generate",
        "Create",
    )
    .with(
        field("name", "Name", "text")
            .required()
            .help("Strata makes an Ed25519 key and shows its private key once, to save."),
    );
    let err = f.map(|((which, fields), e)| {
        if which == CREATE_FORM {
            create.refill(fields, &e.1);
        } else {
            form.refill(fields, &e.1);
        }
        e.clone()
    });
    page(
        ctx,
        web,
        "keypairs", ("Key pairs", "Your SSH public keys, given to instances you launch (they are yours, in every project)."),
        vec![create, form],
        vec![tbl(
            "keypairs",
            "",
            ctx,
            vec!["Name", "Fingerprint", "Created"],
            rows,
            "No key pairs yet.",
        )],
        err,
    )
}

fn forms_path(name: &str) -> String {
    super::session::url_encode(name).replace('/', "%2F")
}

async fn keypairs(State(web): State<Arc<Web>>, ctx: Ctx) -> Page {
    keypair_view(&web, &ctx, None)
}

async fn import_keypair(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    let r = match forms::name("Name", &f.text("name")) {
        Err(m) => Err(Failure(StatusCode::BAD_REQUEST, m)),
        Ok(name) => web
            .act(
                &ctx,
                "keypair.create",
                &name,
                format!("Key pair {name} imported."),
                web.control
                    .create_keypair(&ctx.user_id, &name, &f.text("public_key")),
            )
            .await
            .map(|_| ())
            .map_err(|e| Failure(e.0, format!("Public key: {}", e.1))),
    };
    match r {
        Ok(()) => Ok(Redirect::to("/keypairs").into_response()),
        Err(e) => keypair_view(&web, &ctx, Some(((IMPORT_FORM, &f), &e))),
    }
}

async fn generate_keypair(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    let name = match forms::name("Name", &f.text("name")) {
        Ok(n) => n,
        Err(m) => {
            let e = Failure(StatusCode::BAD_REQUEST, m);
            return keypair_view(&web, &ctx, Some(((CREATE_FORM, &f), &e)));
        }
    };
    let made = web
        .act(
            &ctx,
            "keypair.create",
            &name,
            format!("Key pair {name} created."),
            web.control.generate_keypair(&ctx.user_id, &name),
        )
        .await;
    match made {
        Ok((rec, private)) => {
            let page = KeypairCreated {
                l: Layout::new(&ctx, &web, "Key pair created", "keypairs"),
                name: rec.name,
                public_key: rec.public_key,
                private_key_url: super::session::url_encode(&private),
                private_key: private,
            };
            // Like every console page it is sent with `Cache-Control: no-store`, so this
            // only copy of the private key is kept by no cache.
            Ok(Html(askama::Template::render(&page)?).into_response())
        }
        Err(e) => keypair_view(&web, &ctx, Some(((CREATE_FORM, &f), &e))),
    }
}

async fn delete_keypair(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    web.act(
        &ctx,
        "keypair.delete",
        &name,
        format!("Key pair {name} deleted."),
        web.control.delete_keypair(&ctx.user_id, &name),
    )
    .await?;
    Ok(Redirect::to("/keypairs").into_response())
}
