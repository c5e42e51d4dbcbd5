//! Signing in and out, and switching projects.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};

use super::forms::Fields;
use super::session::{self, Ctx};
use super::{Failure, Page, Web};
use crate::cluster::store::identity_tables::DEFAULT_DOMAIN;
use crate::cluster::store::tables::AuditRecord;

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/project", post(switch_project))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    notice: Option<String>,
    username: String,
    next: String,
}

#[derive(serde::Deserialize, Default)]
struct LoginQuery {
    #[serde(default)]
    expired: Option<String>,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    out: Option<String>,
}

/// Only paths of this console (never `//host` or a full URL) are followed after sign-in.
fn local(next: &str) -> String {
    // Browsers drop tabs and line breaks from a URL, so "/\t/evil" would become
    // "//evil": any control character makes the path unsafe.
    if next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
    {
        next.to_string()
    } else {
        "/".into()
    }
}

async fn login_page(Query(q): Query<LoginQuery>) -> Page {
    let notice = if q.expired.is_some() {
        Some("Your session has expired. Sign in again to go on.".to_string())
    } else if q.out.is_some() {
        Some("You have signed out.".to_string())
    } else {
        None
    };
    let page = LoginPage {
        error: None,
        notice,
        username: String::new(),
        next: local(q.next.as_deref().unwrap_or("/")),
    };
    Ok(Html(page.render()?).into_response())
}

async fn login(
    State(web): State<Arc<Web>>,
    ClientIp(source): ClientIp,
    Form(f): Form<Fields>,
) -> Page {
    let username = f.text("username");
    let password = f.get("password").unwrap_or("").to_string();
    let next = local(&f.text("next"));
    let refuse = |msg: &str, code: StatusCode| -> Page {
        let page = LoginPage {
            error: Some(msg.to_string()),
            notice: None,
            username: username.clone(),
            next: next.clone(),
        };
        Ok((code, Html(page.render()?)).into_response())
    };
    if username.is_empty() || password.is_empty() {
        return refuse("Give your user name and password.", StatusCode::BAD_REQUEST);
    }
    let audit = |error: Option<String>, user_id: String| AuditRecord {
        user: username.clone(),
        user_id,
        action: "login".into(),
        target: username.clone(),
        source: source.clone(),
        via: "console".into(),
        error,
        ..Default::default()
    };
    let ip = source.parse().ok();
    let locked = web.control.throttle.check(&username, ip);
    let (_, info) = match web
        .control
        .issue_token(&username, DEFAULT_DOMAIN, &password, None, ip)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            // Kept in this node's memory only: a failed sign-in has no credentials.
            let (why, msg) = match &locked {
                Err(l) => (crate::control::audit::Refusal::LockedOut, l.to_string()),
                Ok(()) => (
                    crate::control::audit::Refusal::FailedSignIn,
                    "The user name or password is wrong.".to_string(),
                ),
            };
            let locked = why == crate::control::audit::Refusal::LockedOut;
            web.control
                .refusals
                .note(audit(Some(e.to_string()), String::new()), why);
            if locked {
                tokio::time::sleep(crate::control::passwords::LOCKED_OUT_WAIT).await;
            }
            return refuse(&msg, StatusCode::UNAUTHORIZED);
        }
    };
    let projects = web.control.projects_of(&info.user.id)?;
    let Some(project) = projects.first() else {
        return refuse(
            "Your account has no role on any project yet: ask an administrator to add you to one.",
            StatusCode::FORBIDDEN,
        );
    };
    let (sid, _) = web
        .sessions
        .create(&info.user.id, &info.user.name, &project.id);
    let mut rec = audit(None, info.user.id.clone());
    rec.project = Some(project.name.clone());
    rec.project_id = Some(project.id.clone());
    let _ = web.control.audit(rec).await;
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session::set_cookie(web.secure, &sid));
    Ok(resp)
}

async fn logout(State(web): State<Arc<Web>>, headers: HeaderMap, Form(f): Form<Fields>) -> Page {
    // Signing out needs the token too (another site must not sign people out), but a
    // session that is already gone simply goes to the sign-in page.
    if let Some(sid) = session::session_id(&headers, web.secure) {
        if let Ok(s) = web.sessions.get(&sid, web.idle, false) {
            if !session::same_secret(f.get("csrf").unwrap_or(""), &s.csrf) {
                return Err(Failure(
                    StatusCode::FORBIDDEN,
                    "Sign-out refused: the form did not come from this console.".into(),
                ));
            }
            let _ = web
                .control
                .audit(AuditRecord {
                    user: s.user_name.clone(),
                    user_id: s.user_id.clone(),
                    project_id: Some(s.project_id.clone()),
                    action: "logout".into(),
                    target: s.user_name.clone(),
                    via: "console".into(),
                    ..Default::default()
                })
                .await;
        }
        web.sessions.remove(&sid);
    }
    let mut resp = Redirect::to("/login?out=1").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie(web.secure));
    Ok(resp)
}

async fn switch_project(State(web): State<Arc<Web>>, ctx: Ctx, Form(f): Form<Fields>) -> Response {
    if let Err(e) = f.check(&ctx) {
        return e.into_response();
    }
    let want = f.text("project");
    let Some((id, name)) = ctx.projects.iter().find(|(id, _)| *id == want).cloned() else {
        return Failure(
            StatusCode::FORBIDDEN,
            "You have no role on that project.".into(),
        )
        .into_response();
    };
    web.sessions.update(&ctx.sid, |s| {
        s.project_id = id.clone();
        s.flash = Some(format!("Now working in project {name}."));
    });
    Redirect::to("/").into_response()
}

/// The client's address (for the audit log), whether or not it is signed in.
struct ClientIp(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(session::client_addr(parts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local("/instances"), "/instances");
        assert_eq!(local("//evil.example/x"), "/");
        assert_eq!(local("https://evil.example"), "/");
        assert_eq!(local("/\\evil.example"), "/");
        assert_eq!(local("/\t/evil.example"), "/");
        assert_eq!(local("/\r\n/evil.example"), "/");
    }
}
