//! Administrators' pages (projects, users and their roles, quotas) and the audit log
//! everyone sees (members and readers: their project's entries).

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};

use super::forms::{self, Fields};
use super::session::Ctx;
use super::view::*;
use super::{need_admin, Failure, Page, Web};
use crate::cluster::store::tables::AuditRecord;
use crate::control::audit::AuditFilter;
use crate::control::identity::ROLES;
use crate::control::quotas::DEFAULTS;

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/admin/projects", get(projects).post(create_project))
        .route("/admin/users", get(users).post(create_user))
        .route("/admin/users/roles", post(assign_role))
        .route("/admin/users/roles/remove", post(unassign_role))
        .route("/admin/users/password", post(reset_password))
        .route("/admin/users/{id}/{op}", post(enable_user))
        .route("/admin/quotas", get(quotas).post(set_quotas))
        .route("/audit", get(audit))
}

fn admin_page(
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

fn table(id: &str, ctx: &Ctx, columns: Vec<&'static str>, rows: Vec<Row>) -> Table {
    Table {
        id: id.into(),
        columns,
        rows,
        empty: "None yet.".into(),
        writer: ctx.admin,
        csrf: ctx.csrf.clone(),
        ..Default::default()
    }
}

fn projects_view(web: &Web, ctx: &Ctx, err: Option<(&Fields, Failure)>) -> Page {
    need_admin(ctx)?;
    let rows = web
        .control
        .projects()?
        .into_iter()
        .map(|p| Row {
            id: p.id.clone(),
            cells: vec![
                cell(p.name),
                cell(p.id),
                cell(p.description),
                cell(if p.enabled { "yes" } else { "no" }),
            ],
            actions: vec![],
        })
        .collect();
    let mut form = FormView::new(
        "new-project",
        "Create a project",
        "/admin/projects",
        "Create",
    )
    .with(field("name", "Name", "text").required())
    .with(field("description", "Description", "text"));
    let err = err.map(|(f, e)| {
        form.refill(f, &e.1);
        e
    });
    admin_page(
        ctx,
        web,
        "projects",
        (
            "Projects",
            "Tenants: every instance, volume and network belongs to one.",
        ),
        vec![form],
        vec![table(
            "projects",
            ctx,
            vec!["Name", "Id", "Description", "Enabled"],
            rows,
        )],
        err,
    )
}

async fn projects(State(web): State<Arc<Web>>, ctx: Ctx) -> Page {
    projects_view(&web, &ctx, None)
}

async fn create_project(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    need_admin(&ctx)?;
    let r = match forms::name("Name", &f.text("name")) {
        Err(m) => Err(Failure(StatusCode::BAD_REQUEST, m)),
        Ok(name) => web
            .act(
                &ctx,
                "project.create",
                &name,
                format!("Project {name} created."),
                web.control.create_project(&name, &f.text("description")),
            )
            .await
            .map(|_| ()),
    };
    match r {
        Ok(()) => Ok(Redirect::to("/admin/projects").into_response()),
        Err(e) => projects_view(&web, &ctx, Some((&f, e))),
    }
}

fn users_view(web: &Web, ctx: &Ctx, err: Option<(&Fields, Failure)>) -> Page {
    need_admin(ctx)?;
    let projects = web.control.projects()?;
    let rows = web
        .control
        .users()?
        .into_iter()
        .map(|u| {
            let roles: Vec<String> = projects
                .iter()
                .filter_map(|p| {
                    let r = web.control.roles_of(&u.id, &p.id).ok()?;
                    // The strongest role (the others are implied).
                    let top = ["admin", "member", "reader"]
                        .into_iter()
                        .find(|x| r.iter().any(|y| y == x))?;
                    Some(format!("{top} on {}", p.name))
                })
                .collect();
            Row {
                id: u.id.clone(),
                cells: vec![
                    cell(u.name.clone()),
                    cell(u.id.clone()),
                    cell(roles.join(", ")),
                    cell(if u.enabled { "yes" } else { "no" }),
                ],
                actions: vec![if u.enabled {
                    danger(
                        "Disable",
                        format!("/admin/users/{}/disable", u.id),
                        format!(
                            "Disable user {}? They can no longer sign in, and their tokens stop working.",
                            u.name
                        ),
                    )
                } else {
                    action("Enable", format!("/admin/users/{}/enable", u.id))
                }],
            }
        })
        .collect();
    let popts: Vec<(String, String)> = projects
        .iter()
        .map(|p| (p.id.clone(), p.name.clone()))
        .collect();
    let ropts: Vec<(String, String)> = ROLES
        .iter()
        .rev()
        .map(|(_, n)| (n.to_string(), n.to_string()))
        .collect();
    let mut create = FormView::new("new-user", "Create a user", "/admin/users", "Create")
        .with(field("name", "Name", "text").required())
        .with(
            field("password", "Password", "password")
                .required()
                .help("At least 8 characters."),
        )
        .with(field("project", "Project", "select").options(popts.clone()))
        .with(field("role", "Role", "select").options(ropts.clone()));
    let mut assign = FormView::new(
        "assign-role",
        "Give a role",
        "/admin/users/roles",
        "Give role",
    )
    .with(field("user", "User", "text").required())
    .with(field("project", "Project", "select").options(popts.clone()))
    .with(field("role", "Role", "select").options(ropts.clone()));
    let mut unassign = FormView::new(
        "remove-role",
        "Take a role away",
        "/admin/users/roles/remove",
        "Take role away",
    )
    .with(field("user", "User", "text").required())
    .with(field("project", "Project", "select").options(popts))
    .with(field("role", "Role", "select").options(ropts));
    let mut reset = FormView::new(
        "reset-password",
        "Set a password",
        "/admin/users/password",
        "Set password",
    )
    .with(field("user", "User", "text").required())
    .with(
        field("new_password", "New password", "password")
            .required()
            .help("At least 8 characters. The user's tokens and sessions end."),
    );
    let err = err.map(|(f, e)| {
        match f.get("form") {
            _ if f.get("new_password").is_some() => reset.refill(f, &e.1),
            _ if f.get("password").is_some() => create.refill(f, &e.1),
            Some("remove") => unassign.refill(f, &e.1),
            _ => assign.refill(f, &e.1),
        }
        e
    });
    admin_page(ctx, web, "users", ("Users", "People who sign in here and to the OpenStack API, and their roles: admin (of the whole cloud on the admin project; elsewhere of that project only), member (changes its project), reader (only looks)."),
        vec![create, assign, unassign, reset], vec![table("users", ctx, vec!["Name", "Id", "Roles", "Enabled"], rows)], err)
}

async fn users(State(web): State<Arc<Web>>, ctx: Ctx) -> Page {
    users_view(&web, &ctx, None)
}

async fn create_user(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    need_admin(&ctx)?;
    let r = async {
        let name = forms::name("Name", &f.text("name"))
            .map_err(|m| Failure(StatusCode::BAD_REQUEST, m))?;
        let password = f.get("password").unwrap_or("").to_string();
        if password.chars().count() < 8 {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                "Password: at least 8 characters".into(),
            ));
        }
        let project = f
            .need("project", "Project")
            .map_err(|m| Failure(StatusCode::BAD_REQUEST, m))?;
        let role = f
            .need("role", "Role")
            .map_err(|m| Failure(StatusCode::BAD_REQUEST, m))?;
        let p = web.control.find_project(&project)?;
        if !ROLES.iter().any(|(_, n)| *n == role) {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("Role: no role {role:?}"),
            ));
        }
        let c = web.control.clone();
        let (n2, pid) = (name.clone(), p.id.clone());
        web.act(
            &ctx,
            "user.create",
            &name,
            format!("User {name} created ({role} on {}).", p.name),
            async move {
                let u = c.create_user(&n2, &password, Some(&pid)).await?;
                c.assign_role(&pid, &u.id, &role).await
            },
        )
        .await
    }
    .await;
    match r {
        Ok(()) => Ok(Redirect::to("/admin/users").into_response()),
        Err(e) => users_view(&web, &ctx, Some((&f, e))),
    }
}

async fn assign_role(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    need_admin(&ctx)?;
    let (user, project, role) = (f.text("user"), f.text("project"), f.text("role"));
    let r = if user.is_empty() {
        Err(Failure(
            StatusCode::BAD_REQUEST,
            "User: give a user name".into(),
        ))
    } else {
        web.act(
            &ctx,
            "role.assign",
            &format!("{role} on {project} to {user}"),
            format!("{user} is now {role}."),
            web.control.assign_role(&project, &user, &role),
        )
        .await
    };
    match r {
        Ok(()) => Ok(Redirect::to("/admin/users").into_response()),
        Err(e) => users_view(&web, &ctx, Some((&f, e))),
    }
}

async fn unassign_role(State(web): State<Arc<Web>>, ctx: Ctx, Form(mut f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    need_admin(&ctx)?;
    let (user, project, role) = (f.text("user"), f.text("project"), f.text("role"));
    let r = web
        .act(
            &ctx,
            "role.unassign",
            &format!("{role} on {project} from {user}"),
            format!("{user} no longer has the {role} role there."),
            web.control.unassign_role(&project, &user, &role),
        )
        .await;
    match r {
        Ok(()) => Ok(Redirect::to("/admin/users").into_response()),
        Err(e) => {
            // Refilled in its own form.
            f.0.push(("form".into(), "remove".into()));
            users_view(&web, &ctx, Some((&f, e)))
        }
    }
}

async fn reset_password(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    need_admin(&ctx)?;
    let user = f.text("user");
    let password = f.get("new_password").unwrap_or("").to_string();
    let r = async {
        let u = web
            .control
            .find_user(
                &user,
                crate::cluster::store::identity_tables::DEFAULT_DOMAIN,
            )
            .map_err(|_| Failure(StatusCode::BAD_REQUEST, format!("User: no user {user:?}")))?;
        let up = crate::control::users::UserUpdate {
            password: Some(password),
            ..Default::default()
        };
        web.act(
            &ctx,
            "user.password",
            &u.name,
            format!("The password of {} is set; their tokens ended.", u.name),
            async { web.control.update_user(&u.id, up).await.map(|_| ()) },
        )
        .await
    }
    .await;
    match r {
        Ok(()) => Ok(Redirect::to("/admin/users").into_response()),
        Err(e) => users_view(&web, &ctx, Some((&f, e))),
    }
}

async fn enable_user(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    axum::extract::Path((id, op)): axum::extract::Path<(String, String)>,
    Form(f): Form<Fields>,
) -> Page {
    f.check(&ctx)?;
    need_admin(&ctx)?;
    let enabled = match op.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return Err(Failure(StatusCode::NOT_FOUND, format!("No action {op:?}."))),
    };
    if !enabled && id == ctx.user_id {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "You cannot disable yourself.".into(),
        ));
    }
    let up = crate::control::users::UserUpdate {
        enabled: Some(enabled),
        ..Default::default()
    };
    web.act(
        &ctx,
        if enabled {
            "user.enable"
        } else {
            "user.disable"
        },
        &id,
        format!(
            "User {id} is {}.",
            if enabled { "enabled" } else { "disabled" }
        ),
        async { web.control.update_user(&id, up).await.map(|_| ()) },
    )
    .await?;
    Ok(Redirect::to("/admin/users").into_response())
}

#[derive(serde::Deserialize, Default)]
struct QuotaQuery {
    #[serde(default)]
    project: Option<String>,
}

fn quotas_view(
    web: &Web,
    ctx: &Ctx,
    project: Option<String>,
    err: Option<(&Fields, Failure)>,
) -> Page {
    need_admin(ctx)?;
    let projects = web.control.projects()?;
    let p = match project {
        Some(p) => web.control.find_project(&p)?,
        None => web.control.find_project(&ctx.project_id)?,
    };
    let limits = web.control.quota_limits(&p.id)?;
    let usage = web.control.quota_usage(&p.id)?;
    let rows = DEFAULTS
        .iter()
        .map(|(k, _)| Row {
            id: k.to_string(),
            cells: vec![
                cell(k.to_string()),
                cell(usage.get(*k).map(|u| u.to_string()).unwrap_or_default()),
                cell(match limits.get(*k) {
                    Some(-1) => "unlimited".into(),
                    Some(l) => l.to_string(),
                    None => String::new(),
                }),
            ],
            actions: vec![],
        })
        .collect();
    let mut form = FormView::new(
        "quotas",
        &format!("Change the limits of {}", p.name),
        "/admin/quotas",
        "Save limits",
    )
    .with(field("project", "Project", "select").options(vec![(p.id.clone(), p.name.clone())]));
    for (k, _) in DEFAULTS {
        form = form.with(
            field(k, k, "number").value(limits.get(*k).map(|l| l.to_string()).unwrap_or_default()),
        );
    }
    form.open = true;
    if let Some((f, e)) = &err {
        form.refill(f, &e.1);
    }
    let mut pick = FormView::new("pick", "Another project", "/admin/quotas", "Show");
    pick.fields.push(
        field("show", "Project", "select").options(
            projects
                .iter()
                .map(|p| (p.id.clone(), p.name.clone()))
                .collect(),
        ),
    );
    admin_page(ctx, web, "quotas", (&format!("Quotas of {}", p.name), "How much each project may use; -1 is unlimited. Creating beyond a limit is refused with the reason."),
        vec![pick, form], vec![table("quota-table", ctx, vec!["Resource", "In use", "Limit"], rows)], err.map(|e| e.1))
}

async fn quotas(State(web): State<Arc<Web>>, ctx: Ctx, Query(q): Query<QuotaQuery>) -> Page {
    quotas_view(&web, &ctx, q.project, None)
}

async fn set_quotas(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Page {
    f.check(&ctx)?;
    need_admin(&ctx)?;
    if let Some(p) = f.opt("show") {
        return Ok(Redirect::to(&format!(
            "/admin/quotas?project={}",
            super::session::url_encode(&p)
        ))
        .into_response());
    }
    let project = f.text("project");
    let mut set = BTreeMap::new();
    let mut bad = None;
    for (k, _) in DEFAULTS {
        if f.opt(k).is_some() {
            match f.number(k, k, -1..=i64::from(i32::MAX)) {
                Ok(n) => {
                    set.insert(k.to_string(), n);
                }
                Err(m) => {
                    bad = Some(m);
                    break;
                }
            }
        }
    }
    let r = match bad {
        Some(m) => Err(Failure(StatusCode::BAD_REQUEST, m)),
        None => web
            .act(
                &ctx,
                "quota.set",
                &project,
                "Limits saved.".into(),
                web.control.set_quotas(&project, &set),
            )
            .await
            .map(|_| ()),
    };
    match r {
        Ok(()) => Ok(Redirect::to(&format!(
            "/admin/quotas?project={}",
            super::session::url_encode(&project)
        ))
        .into_response()),
        Err(e) => quotas_view(&web, &ctx, Some(project), Some((&f, e))),
    }
}

/// The audit log as a table.
pub fn audit_table(recs: Vec<AuditRecord>, title: &str) -> Table {
    Table {
        id: "audit".into(),
        title: title.into(),
        columns: vec!["When", "Who", "Project", "Action", "On", "From", "Result"],
        rows: recs
            .into_iter()
            .enumerate()
            .map(|(i, r)| Row {
                id: format!("{}-{i}", r.at_ms),
                cells: vec![
                    cell(when_ms(r.at_ms)),
                    cell(r.user),
                    cell(r.project.unwrap_or_default()),
                    cell(r.action),
                    cell(r.target),
                    cell(format!("{} ({})", r.source, r.via)),
                    match r.error {
                        None => badge("ok", "ok"),
                        Some(e) => badge(format!("refused: {e}"), "bad"),
                    },
                ],
                actions: vec![],
            })
            .collect(),
        empty: "Nothing recorded.".into(),
        ..Default::default()
    }
}

#[derive(serde::Deserialize, Default)]
struct AuditQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    all: Option<String>,
}

async fn audit(State(web): State<Arc<Web>>, ctx: Ctx, Query(q): Query<AuditQuery>) -> Page {
    let all = ctx.admin && q.all.as_deref() == Some("1");
    let filter = AuditFilter {
        project: if all {
            None
        } else {
            Some(ctx.project_id.clone())
        },
        text: q.q.clone().filter(|t| !t.trim().is_empty()),
        failed: match q.result.as_deref() {
            Some("failed") => Some(true),
            Some("ok") => Some(false),
            _ => None,
        },
    };
    let recs = web.control.audit_log(&filter, 500)?;
    #[derive(Template)]
    #[template(path = "audit.html")]
    struct AuditPage {
        l: Layout,
        q: String,
        result: String,
        all: bool,
        t: Table,
    }
    let page = AuditPage {
        l: Layout::new(&ctx, &web, "Events", "audit"),
        q: q.q.unwrap_or_default(),
        result: q.result.unwrap_or_default(),
        all,
        t: audit_table(recs, ""),
    };
    Ok(Html(page.render()?).into_response())
}
