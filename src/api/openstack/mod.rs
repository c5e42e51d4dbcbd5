//! The OpenStack-compatible REST API: one listener with devstack-style path prefixes
//! (`/identity` for Keystone v3, `/networking` for Neutron v2.0 so far), so that python-openstackclient, openstacksdk
//! and Ansible work unmodified. Version documents are served without authentication;
//! everything else needs a token (`X-Auth-Token`). Handlers call `control` only.

pub mod app_credentials;
pub mod compute;
pub mod identity;
pub mod image;
pub mod network;
pub mod quotas;
pub mod server_groups;
pub mod server_interfaces;
pub mod server_metadata;
pub mod server_volumes;
pub mod servers;
pub mod volume;

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use crate::control::identity::TokenInfo;
use crate::control::ControlError;

use crate::telemetry::error_chain;

/// An error in OpenStack's shape: `{"error": {"code", "title", "message"}}`.
pub struct OsError(pub StatusCode, pub String);

impl IntoResponse for OsError {
    fn into_response(self) -> Response {
        let title = self.0.canonical_reason().unwrap_or("Error");
        (
            self.0,
            Json(json!({"error": {"code": self.0.as_u16(), "title": title, "message": self.1}})),
        )
            .into_response()
    }
}

impl From<ControlError> for OsError {
    fn from(e: ControlError) -> Self {
        let code = match &e {
            ControlError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::OverQuota { .. } => StatusCode::FORBIDDEN,
            ControlError::NotReady(_) | ControlError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        OsError(code, error_chain(&e))
    }
}

/// What the OpenStack API holds of its node: `control`, and nothing below it (no store
/// transactions, no daemon).
pub struct Api {
    pub control: Arc<crate::control::Control>,
}

/// The token of a request, validated.
pub fn authenticate(node: &Api, headers: &HeaderMap) -> Result<TokenInfo, OsError> {
    let token = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            OsError(
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication (no X-Auth-Token).".into(),
            )
        })?;
    Ok(node.control.validate_token(token)?)
}

/// Admin only.
pub fn require_admin(t: &TokenInfo) -> Result<(), OsError> {
    if crate::control::users::is_cloud_admin(t) {
        Ok(())
    } else {
        Err(OsError(
            StatusCode::FORBIDDEN,
            "You are not authorized to perform the requested action (admin only).".into(),
        ))
    }
}

/// Who asks, for scoping: the token's project, and whether it may see everything
/// (admin) or change anything (member or admin; readers only read).
pub struct Scope {
    pub project: String,
    pub user: String,
    pub admin: bool,
    pub writer: bool,
    /// The same caller, for `control`.
    pub caller: crate::control::caller::Caller,
}

impl Scope {
    pub fn of(t: &TokenInfo) -> Result<Scope, OsError> {
        let caller = crate::control::caller::Caller::of_token(t).ok_or_else(|| {
            OsError(
                StatusCode::UNAUTHORIZED,
                "a project-scoped token is needed".into(),
            )
        })?;
        Ok(Scope {
            project: caller.project().unwrap_or_default().to_string(),
            user: t.user.id.clone(),
            admin: caller.is_admin(),
            writer: caller.is_writer(),
            caller,
        })
    }

    /// Whether a resource of `project` is visible (admins see every project's).
    pub fn sees(&self, project: Option<&str>) -> bool {
        self.admin || project == Some(self.project.as_str())
    }

    pub fn write(&self) -> Result<(), OsError> {
        if self.writer {
            Ok(())
        } else {
            Err(OsError(
                StatusCode::FORBIDDEN,
                "Policy doesn't allow this operation: the reader role cannot change anything."
                    .into(),
            ))
        }
    }
}

/// A timestamp as Nova, Glance and Neutron show it (`2026-01-01T00:00:00Z`).
pub fn time(secs: u64) -> String {
    crate::control::identity::iso8601(secs).replace(".000000Z", "Z")
}

/// `https` once the API serves TLS (links and the catalog name the scheme).
static SCHEME: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The base URL clients reached us at (for links and the catalog).
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("{}://{host}", SCHEME.get().copied().unwrap_or("http"))
}

/// Records every change asked through the API in the audit log (who, from where, what,
/// the answer), after the answer is sent so that it adds no latency.
async fn audit(
    axum::extract::State(node): axum::extract::State<Arc<Api>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS)
        || path.ends_with("/auth/tokens")
    {
        return next.run(req).await;
    }
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let who = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| node.control.validate_token(t).ok());
    let resp = next.run(req).await;
    let status = resp.status();
    let rec = crate::cluster::store::tables::AuditRecord {
        user: who
            .as_ref()
            .map(|w| w.user.name.clone())
            .unwrap_or_else(|| "(no valid token)".into()),
        user_id: who.as_ref().map(|w| w.user.id.clone()).unwrap_or_default(),
        project: who
            .as_ref()
            .and_then(|w| w.project.as_ref().map(|p| p.name.clone())),
        project_id: who
            .as_ref()
            .and_then(|w| w.project.as_ref().map(|p| p.id.clone())),
        action: format!("{method} {}", path.split('/').nth(1).unwrap_or("")),
        target: path,
        source,
        via: "api".into(),
        error: (status.is_client_error() || status.is_server_error())
            .then(|| format!("HTTP {}", status.as_u16())),
        ..Default::default()
    };
    if who.is_none() {
        // Without credentials nothing reaches the store (anyone could fill it).
        node.control
            .refusals
            .note(rec, crate::control::audit::Refusal::NoValidToken);
        return resp;
    }
    tokio::spawn(async move {
        if let Err(e) = node.control.audit(rec).await {
            tracing::warn!(error = %error_chain(&e), "audit record failed");
        }
    });
    resp
}

pub fn routes_with_audit(node: Arc<Api>) -> Router {
    routes()
        .layer(axum::middleware::from_fn_with_state(node.clone(), audit))
        .with_state(node)
}

/// The largest request body of the API's routes (Nova's user data is at most 64 KiB).
pub const MAX_BODY: usize = 1 << 20;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .merge(identity::routes())
        .merge(compute::routes())
        .merge(network::routes())
        .merge(image::routes())
        .merge(servers::routes())
        .merge(server_volumes::routes())
        .merge(server_interfaces::routes())
        .merge(server_groups::routes())
        .merge(volume::routes())
        .merge(quotas::routes())
        // Request bodies: 1 MiB (image data is streamed, not bounded by this); the
        // identity routes have their own, smaller bound.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(compute::microversion))
}

/// Serves `app` (the API and the console) over plain HTTP, within the API's limits.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) {
    crate::httpd::serve(
        listener,
        app,
        None,
        crate::httpd::Limits::API,
        "OpenStack API",
    )
    .await
}

/// Serves `app` over HTTPS with `tls` (a certificate from the cluster CA), within the
/// API's limits (connections per client, handshake and header deadlines, idle timeout).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
) {
    let _ = SCHEME.set("https");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    crate::httpd::serve(
        listener,
        app,
        Some(acceptor),
        crate::httpd::Limits::API,
        "OpenStack API",
    )
    .await
}

/// The TLS configuration of the API from a certificate chain and key (PEM).
pub fn tls_config(
    cert_pem: &str,
    ca_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    let mut chain = Vec::new();
    for pem in [cert_pem, ca_pem] {
        chain.push(
            rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| format!("API certificate: {e}"))?,
        );
    }
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("API key: {e}"))?;
    let cfg = rustls::ServerConfig::builder_with_provider(crate::transport::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("API certificate: {e}"))?;
    Ok(Arc::new(cfg))
}
