//! Console sessions: a random id in an HttpOnly, SameSite=Strict cookie (`__Host-sid`
//! over HTTPS), kept on the node that signed the user in, with an idle and an absolute
//! expiry; a per-session CSRF token that every form and every script request carries;
//! and the signed-in user's project and roles, re-read from `control` on every request so
//! that a removed role or a disabled user takes effect at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;

use super::Web;
use crate::control::ControlError;

/// How long a session lives at most, however active (a working day).
pub const SESSION_MAX: Duration = Duration::from_secs(12 * 3600);
/// The most sessions a node keeps (the oldest idle ones go first).
const MAX_SESSIONS: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: String,
    pub user_name: String,
    pub project_id: String,
    pub csrf: String,
    pub created: Instant,
    pub last_seen: Instant,
    /// A message for the next page (what the last action did).
    pub flash: Option<String>,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

pub fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Why a request has no session.
pub enum NoSession {
    Missing,
    Expired,
}

impl Sessions {
    /// Starts a session (a fresh id: never one the browser brought, against fixation).
    pub fn create(&self, user_id: &str, user_name: &str, project_id: &str) -> (String, Session) {
        let now = Instant::now();
        let s = Session {
            user_id: user_id.into(),
            user_name: user_name.into(),
            project_id: project_id.into(),
            csrf: random_token(),
            created: now,
            last_seen: now,
            flash: None,
        };
        let id = random_token();
        let mut map = self.map.lock().expect("sessions lock poisoned");
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), s.clone());
        (id, s)
    }

    /// The live session of `id` (touched unless `touch` is false), or why there is none.
    pub fn get(&self, id: &str, idle: Duration, touch: bool) -> Result<Session, NoSession> {
        let mut map = self.map.lock().expect("sessions lock poisoned");
        let Some(s) = map.get_mut(id) else {
            return Err(NoSession::Missing);
        };
        let now = Instant::now();
        if now.duration_since(s.last_seen) > idle || now.duration_since(s.created) > SESSION_MAX {
            map.remove(id);
            return Err(NoSession::Expired);
        }
        if touch {
            s.last_seen = now;
        }
        Ok(s.clone())
    }

    pub fn update(&self, id: &str, f: impl FnOnce(&mut Session)) {
        if let Some(s) = self.map.lock().expect("sessions lock poisoned").get_mut(id) {
            f(s);
        }
    }

    pub fn take_flash(&self, id: &str) -> Option<String> {
        self.map
            .lock()
            .expect("sessions lock poisoned")
            .get_mut(id)
            .and_then(|s| s.flash.take())
    }

    pub fn remove(&self, id: &str) {
        self.map.lock().expect("sessions lock poisoned").remove(id);
    }
}

/// The cookie's name: `__Host-` (Secure, whole site, no Domain) over HTTPS.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-strata-sid"
    } else {
        "strata-sid"
    }
}

pub fn set_cookie(secure: bool, id: &str) -> HeaderValue {
    let v = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict{}",
        cookie_name(secure),
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn clear_cookie(secure: bool) -> HeaderValue {
    let v = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        cookie_name(secure),
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn session_id(headers: &HeaderMap, secure: bool) -> Option<String> {
    let want = cookie_name(secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == want)
        .map(|(_, v)| v.to_string())
}

/// Constant-time comparison (the CSRF token).
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The signed-in user of a request, with what they may do in the current project.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub sid: String,
    pub user_id: String,
    pub user_name: String,
    pub project_id: String,
    pub project_name: String,
    pub roles: Vec<String>,
    pub admin: bool,
    /// Member or admin: may change things (readers only look).
    pub writer: bool,
    pub csrf: String,
    /// (id, name) of every project the user may switch to.
    pub projects: Vec<(String, String)>,
    /// The client's address, for the audit log.
    pub source: String,
}

impl Ctx {
    /// Whether a resource owned by `project` is shown: the current project's only (an
    /// admin sees other projects' in the admin pages, not here).
    pub fn owns(&self, project: Option<&str>) -> bool {
        project == Some(self.project_id.as_str())
    }

    /// The signed-in user in the current project, as `control` takes it.
    pub fn caller(&self) -> crate::control::caller::Caller {
        crate::control::caller::Caller::user(
            &self.user_id,
            &self.user_name,
            &self.project_id,
            self.roles.clone(),
        )
    }
}

/// A request without a valid session: to the sign-in page (htmx requests are told to
/// go there with `HX-Redirect`).
pub struct SignIn {
    pub expired: bool,
    pub htmx: bool,
    pub next: String,
}

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        let mut url = String::from("/login");
        let mut q = vec![];
        if self.expired {
            q.push("expired=1".to_string());
        }
        if self.next.starts_with('/') && !self.next.starts_with("//") && self.next != "/" {
            q.push(format!("next={}", url_encode(&self.next)));
        }
        if !q.is_empty() {
            url = format!("{url}?{}", q.join("&"));
        }
        if self.htmx {
            let mut r = StatusCode::UNAUTHORIZED.into_response();
            if let Ok(v) = HeaderValue::from_str(&url) {
                r.headers_mut().insert("hx-redirect", v);
            }
            r
        } else {
            Redirect::to(&url).into_response()
        }
    }
}

pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn client_addr(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl FromRequestParts<Arc<Web>> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Self, Response> {
        let htmx = parts.headers.contains_key("hx-request");
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let sign_in = |expired| {
            SignIn {
                expired,
                htmx,
                next: if htmx { String::new() } else { next.clone() },
            }
            .into_response()
        };
        let Some(sid) = session_id(&parts.headers, web.secure) else {
            return Err(sign_in(false));
        };
        // The event stream does not count as activity: an open tab left alone expires.
        let touch = parts.uri.path() != "/live";
        let s = match web.sessions.get(&sid, web.idle, touch) {
            Ok(s) => s,
            Err(NoSession::Missing) => return Err(sign_in(false)),
            Err(NoSession::Expired) => return Err(sign_in(true)),
        };
        let info = match web.control.principal(&s.user_id, &s.project_id) {
            Ok(i) => i,
            Err(ControlError::Unauthorized(_)) | Err(ControlError::NotFound(_)) => {
                web.sessions.remove(&sid);
                return Err(sign_in(true));
            }
            Err(e) => return Err(super::Failure::from(e).into_response()),
        };
        let projects = web
            .control
            .projects_of(&s.user_id)
            .map_err(|e| super::Failure::from(e).into_response())?
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();
        // The admin role counts cloud-wide only on the cloud's own project.
        let admin = crate::control::users::is_cloud_admin(&info);
        let roles = crate::control::users::effective_roles(&info);
        Ok(Ctx {
            sid,
            user_id: s.user_id,
            user_name: s.user_name,
            project_id: s.project_id,
            project_name: info.project.map(|p| p.name).unwrap_or_default(),
            writer: admin || roles.iter().any(|r| r == "member"),
            admin,
            roles,
            csrf: s.csrf,
            projects,
            source: client_addr(parts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_ids_are_fresh() {
        let s = Sessions::default();
        let (a, _) = s.create("u", "alice", "p");
        let (b, _) = s.create("u", "alice", "p");
        assert_ne!(a, b);
        assert!(a.len() >= 43, "256-bit ids");
        assert!(s.get(&a, Duration::from_secs(60), true).is_ok());
        std::thread::sleep(Duration::from_millis(30));
        assert!(matches!(
            s.get(&a, Duration::from_millis(10), true),
            Err(NoSession::Expired)
        ));
        // Gone once expired.
        assert!(matches!(
            s.get(&a, Duration::from_secs(60), true),
            Err(NoSession::Missing)
        ));
        s.remove(&b);
        assert!(matches!(
            s.get(&b, Duration::from_secs(60), true),
            Err(NoSession::Missing)
        ));
    }

    #[test]
    fn cookie_parsing_and_csrf_comparison() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-strata-sid=XYZ; b=2"),
        );
        assert_eq!(session_id(&h, true).as_deref(), Some("XYZ"));
        assert_eq!(session_id(&h, false), None);
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        let c = set_cookie(true, "XYZ");
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
    }

    #[test]
    fn sign_in_redirect_keeps_a_local_next_only() {
        let r = SignIn {
            expired: true,
            htmx: false,
            next: "/instances?x=1".into(),
        }
        .into_response();
        let loc = r.headers()["location"].to_str().unwrap();
        assert_eq!(loc, "/login?expired=1&next=/instances%3Fx%3D1");
        let r = SignIn {
            expired: false,
            htmx: false,
            next: "//evil.example".into(),
        }
        .into_response();
        assert_eq!(r.headers()["location"].to_str().unwrap(), "/login");
    }
}
