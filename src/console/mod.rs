//! The built-in web console: server-rendered pages (axum + askama, templates in
//! `web/templates`, vendored scripts in `web/static`), served by every node on the API's
//! listener. Pages call `control`, never the REST API and never anything below `control`.
//!
//! Security: sessions in an HttpOnly SameSite=Strict cookie, a CSRF token on every form
//! and script request plus an Origin / Sec-Fetch-Site check on every state-changing
//! request and websocket, a strict Content-Security-Policy (scripts only from this
//! origin), no caching of pages, and every change recorded in the audit log.

mod access;
mod admin;
mod auth;
mod dashboard;
mod forms;
mod instances;
mod live;
mod network;
pub mod session;
mod storage;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::cluster::store::tables::AuditRecord;
use crate::control::{Control, ControlError};
use crate::telemetry::error_chain;
use session::{Ctx, Sessions};

/// The console's shared state.
pub struct Web {
    pub control: Arc<Control>,
    pub sessions: Sessions,
    /// Served over HTTPS: `__Host-` cookie with `Secure`.
    pub secure: bool,
    /// Idle time after which a session must sign in again.
    pub idle: Duration,
    /// Ticks when the store changed (at most a few times a second), for live pages.
    pub changes: tokio::sync::broadcast::Sender<()>,
}

/// The console's routes, with their state.
pub fn router(control: Arc<Control>, secure: bool, idle: Duration) -> Router {
    let (changes, _) = tokio::sync::broadcast::channel(16);
    let web = Arc::new(Web {
        control,
        sessions: Sessions::default(),
        secure,
        idle,
        changes,
    });
    live::spawn_change_ticker(web.clone());
    Router::new()
        .merge(auth::routes())
        .merge(dashboard::routes())
        .merge(instances::routes())
        .merge(storage::routes())
        .merge(network::routes())
        .merge(access::routes())
        .merge(admin::routes())
        .merge(live::routes())
        .route("/static/{*file}", get(asset))
        // Forms are small (user data at most 64 KiB); image uploads stream and are not
        // bounded by this.
        .layer(axum::extract::DefaultBodyLimit::max(256 << 10))
        .layer(axum::middleware::from_fn(guard))
        .with_state(web)
}

/// A failure shown to a person: the status and the reason in words.
#[derive(Clone, Debug)]
pub struct Failure(pub StatusCode, pub String);

impl From<ControlError> for Failure {
    fn from(e: ControlError) -> Self {
        let code = match &e {
            ControlError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::Conflict(_) | ControlError::OverQuota { .. } => StatusCode::CONFLICT,
            ControlError::NotReady(_) | ControlError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(code, error_chain(&e))
    }
}

impl From<crate::cluster::store::StoreError> for Failure {
    fn from(e: crate::cluster::store::StoreError) -> Self {
        Failure::from(ControlError::from(e))
    }
}

impl From<askama::Error> for Failure {
    fn from(e: askama::Error) -> Self {
        tracing::error!(error = %e, "console template failed");
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be drawn (see the node's log)".into(),
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let page = view::ErrorPage {
            code: self.0.as_u16(),
            title: self.0.canonical_reason().unwrap_or("Error"),
            message: &self.1,
        };
        let body = askama::Template::render(&page)
            .unwrap_or_else(|_| format!("<p>{}</p>", view::escape(&self.1)));
        (self.0, Html(body)).into_response()
    }
}

pub type Page = Result<Response, Failure>;

/// Draws a list page; with `err`, the error above it and the answer's status is the
/// error's. Readers get no forms.
pub fn render_list(
    ctx: &Ctx,
    web: &Web,
    nav: &'static str,
    (heading, intro): (&str, &str),
    forms: Vec<view::FormView>,
    tables: Vec<view::Table>,
    err: Option<Failure>,
) -> Page {
    let mut l = view::Layout::new(ctx, web, heading, nav);
    l.error = err.as_ref().map(|e| e.1.clone());
    let p = view::ListPage {
        l,
        heading: heading.into(),
        intro: intro.into(),
        forms: if ctx.writer { forms } else { vec![] },
        tables,
    };
    let mut r = Html(askama::Template::render(&p)?).into_response();
    if let Some(e) = err {
        *r.status_mut() = e.0;
    }
    Ok(r)
}

/// Refuses what a reader may not do, in words.
pub fn need_writer(ctx: &Ctx) -> Result<(), Failure> {
    if ctx.writer {
        Ok(())
    } else {
        Err(Failure(
            StatusCode::FORBIDDEN,
            format!(
                "Your role in project {} is reader: you can look, not change anything.",
                ctx.project_name
            ),
        ))
    }
}

/// Refuses a resource of another project as if it did not exist.
pub fn owned(ctx: &Ctx, project: Option<&str>, what: &str, id: &str) -> Result<(), Failure> {
    if ctx.owns(project) {
        Ok(())
    } else {
        Err(Failure(
            StatusCode::NOT_FOUND,
            format!("There is no {what} {id} in this project."),
        ))
    }
}

pub fn need_admin(ctx: &Ctx) -> Result<(), Failure> {
    if ctx.admin {
        Ok(())
    } else {
        Err(Failure(
            StatusCode::FORBIDDEN,
            "Only administrators can see this page.".into(),
        ))
    }
}

impl Web {
    /// Records a request in the audit log (a failure to record is logged, not shown).
    pub async fn audit(&self, ctx: &Ctx, action: &str, target: &str, error: Option<String>) {
        let rec = AuditRecord {
            user: ctx.user_name.clone(),
            user_id: ctx.user_id.clone(),
            project: Some(ctx.project_name.clone()),
            project_id: Some(ctx.project_id.clone()),
            action: action.into(),
            target: target.into(),
            source: ctx.source.clone(),
            via: "console".into(),
            error,
            ..Default::default()
        };
        if let Err(e) = self.control.audit(rec).await {
            tracing::warn!(error = %error_chain(&e), "audit record failed");
        }
    }

    /// Runs a change, records it in the audit log with its result, and on success leaves
    /// `done` for the next page.
    pub async fn act<T>(
        &self,
        ctx: &Ctx,
        action: &str,
        target: &str,
        done: String,
        f: impl std::future::Future<Output = Result<T, ControlError>>,
    ) -> Result<T, Failure> {
        if let Err(e) = need_writer(ctx) {
            self.audit(ctx, action, target, Some(e.1.clone())).await;
            return Err(e);
        }
        match f.await {
            Ok(v) => {
                self.audit(ctx, action, target, None).await;
                self.sessions.update(&ctx.sid, |s| s.flash = Some(done));
                Ok(v)
            }
            Err(e) => {
                let f = Failure::from(e);
                self.audit(ctx, action, target, Some(f.1.clone())).await;
                Err(f)
            }
        }
    }
}

/// Security headers on every response, and the same-origin check on every request that
/// changes something (the CSRF token is checked again by each form's handler).
async fn guard(req: Request, next: Next) -> Response {
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let upgrade = req.headers().contains_key(header::UPGRADE);
    if (unsafe_method || upgrade) && !same_origin(req.headers()) {
        return Failure(
            StatusCode::FORBIDDEN,
            "This request came from another site and was refused.".into(),
        )
        .into_response();
    }
    let is_asset = req.uri().path().starts_with("/static/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
             form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A state-changing request must come from a page of this console: `Sec-Fetch-Site`
/// (when the browser sends it) is same-origin, and `Origin` (when sent) names this host.
pub fn same_origin(h: &axum::http::HeaderMap) -> bool {
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return false;
        }
    }
    match h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = h
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let bare = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .unwrap_or("");
            !host.is_empty() && bare == host
        }
    }
}

/// The vendored scripts and styles, compiled into the binary.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript",
        include_bytes!("../../web/static/vendor/htmx.min.js"),
    ),
    (
        "xterm.js",
        "text/javascript",
        include_bytes!("../../web/static/vendor/xterm.js"),
    ),
    (
        "xterm.css",
        "text/css",
        include_bytes!("../../web/static/vendor/xterm.css"),
    ),
    (
        "addon-fit.js",
        "text/javascript",
        include_bytes!("../../web/static/vendor/addon-fit.js"),
    ),
    (
        "app.js",
        "text/javascript",
        include_bytes!("../../web/static/app.js"),
    ),
    (
        "console.js",
        "text/javascript",
        include_bytes!("../../web/static/console.js"),
    ),
    (
        "app.css",
        "text/css",
        include_bytes!("../../web/static/app.css"),
    ),
];

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let name = file.rsplit('/').next().unwrap_or("");
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ty, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(ty)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                ),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn cross_site_requests_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("10.0.0.1:5000"));
        assert!(
            same_origin(&h),
            "no Origin (curl, old browsers): the token decides"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://10.0.0.1:5000"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h));
    }
}
