//! The metadata service at 169.254.169.254, one per network per node, inside the
//! network's service namespace: guests reach it through the classless route DHCP gives
//! them. The caller is recognized by its source address on that network (the namespace
//! belongs to one network, so equal addresses in other networks cannot be confused), and
//! answered with its own instance's data only: the OpenStack layout
//! (`/openstack/latest/meta_data.json`, `user_data`, `network_data.json`) and the EC2 one
//! (`/latest/meta-data/...`, `/latest/user-data`), which cloud-init reads.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::netns::Netns;

pub const METADATA_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// What the metadata service tells one instance about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceMeta {
    pub uuid: String,
    pub name: String,
    pub hostname: String,
    pub project: String,
    /// (key name, OpenSSH public key)
    pub public_keys: Vec<(String, String)>,
    pub user_data: Option<Vec<u8>>,
    pub port: String,
    pub network: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub mtu: u32,
    pub dns: Vec<String>,
}

/// Finds the instance behind a source address on a network (by VNI).
pub trait MetadataSource: Send + Sync + 'static {
    fn lookup(&self, vni: u32, ip: Ipv4Addr) -> Option<InstanceMeta>;
}

pub struct MetadataServer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Ctx {
    vni: u32,
    source: Arc<dyn MetadataSource>,
}

impl MetadataServer {
    /// Listens on 169.254.169.254:80 in `ns` (the address must be configured there).
    pub fn start(ns: &Netns, vni: u32, source: Arc<dyn MetadataSource>) -> std::io::Result<Self> {
        let std_listener = ns.run(|| {
            let l = std::net::TcpListener::bind(SocketAddr::from((METADATA_ADDR, 80)))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let app = router(Ctx { vni, source });
        // Guests reach it: connections are capped per guest address and time out.
        let task = tokio::spawn(crate::httpd::serve(
            listener,
            app,
            None,
            crate::httpd::Limits::GUEST,
            "metadata",
        ));
        Ok(MetadataServer { task })
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/", get(ec2_versions))
        .route("/openstack", get(os_versions))
        .route("/openstack/", get(os_versions))
        .route("/openstack/{version}", get(os_index))
        .route("/openstack/{version}/", get(os_index))
        .route("/openstack/{version}/{file}", get(os_file))
        .route("/{version}/user-data", get(ec2_user_data))
        .route("/{version}/meta-data", get(ec2_index))
        .route("/{version}/meta-data/", get(ec2_index))
        .route("/{version}/meta-data/{*key}", get(ec2_key))
        .with_state(ctx)
}

fn text(body: impl Into<String>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], body.into()).into_response()
}

fn not_found(why: String) -> Response {
    (StatusCode::NOT_FOUND, why).into_response()
}

fn caller(ctx: &Ctx, from: SocketAddr) -> Result<InstanceMeta, String> {
    let ip = match from.ip() {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    };
    ctx.source
        .lookup(ctx.vni, ip)
        .ok_or_else(|| format!("no instance with address {ip} on this network\n"))
}

const OS_VERSIONS: &[&str] = &[
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2018-08-27",
    "latest",
];

async fn os_versions() -> Response {
    text(OS_VERSIONS.join("\n"))
}

async fn os_index(UrlPath(version): UrlPath<String>) -> Response {
    if !OS_VERSIONS.contains(&version.as_str()) {
        return not_found(format!("no metadata version {version}\n"));
    }
    text("meta_data.json\nnetwork_data.json\nuser_data\nvendor_data.json\nvendor_data2.json")
}

fn meta_data(m: &InstanceMeta) -> serde_json::Value {
    let keys: serde_json::Map<String, serde_json::Value> = m
        .public_keys
        .iter()
        .map(|(n, k)| (n.clone(), json!(k)))
        .collect();
    json!({
        "uuid": m.uuid,
        "name": m.name,
        "hostname": m.hostname,
        "project_id": m.project,
        "availability_zone": "nova",
        "launch_index": 0,
        "public_keys": keys,
        "keys": m.public_keys.iter().map(|(n, k)| json!({"name": n, "type": "ssh", "data": k})).collect::<Vec<_>>(),
        "meta": {},
        "devices": [],
    })
}

/// The files of an OpenStack config drive, the documents the service serves, under
/// `openstack/latest/` (cloud-init's ConfigDrive source reads a volume labelled
/// `config-2`); `with_network`: describe the instance's NIC (false for one without).
pub fn config_drive_files(m: &InstanceMeta, with_network: bool) -> Vec<(String, Vec<u8>)> {
    let doc = |v: serde_json::Value| serde_json::to_vec(&v).unwrap_or_default();
    let net = if with_network {
        network_data(m)
    } else {
        json!({"links": [], "networks": [], "services": []})
    };
    let mut files = vec![
        (
            "openstack/latest/meta_data.json".to_string(),
            doc(meta_data(m)),
        ),
        ("openstack/latest/network_data.json".to_string(), doc(net)),
        (
            "openstack/latest/vendor_data.json".to_string(),
            b"{}".to_vec(),
        ),
        (
            "openstack/latest/vendor_data2.json".to_string(),
            b"{}".to_vec(),
        ),
    ];
    if let Some(u) = &m.user_data {
        files.push(("openstack/latest/user_data".to_string(), u.clone()));
    }
    files
}

fn network_data(m: &InstanceMeta) -> serde_json::Value {
    let link = format!(
        "tap{}",
        m.port
            .chars()
            .filter(|c| *c != '-')
            .take(11)
            .collect::<String>()
    );
    json!({
        "links": [{
            "id": link,
            "vif_id": m.port,
            "type": "phy",
            "ethernet_mac_address": m.mac,
            "mtu": m.mtu,
        }],
        "networks": [{
            "id": "network0",
            "type": "ipv4_dhcp",
            "link": link,
            "network_id": m.network,
        }],
        "services": m.dns.iter().map(|d| json!({"type": "dns", "address": d})).collect::<Vec<_>>(),
    })
}

async fn os_file(
    State(ctx): State<Ctx>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    UrlPath((version, file)): UrlPath<(String, String)>,
) -> Response {
    if !OS_VERSIONS.contains(&version.as_str()) {
        return not_found(format!("no metadata version {version}\n"));
    }
    let m = match caller(&ctx, from) {
        Ok(m) => m,
        Err(why) => return not_found(why),
    };
    match file.as_str() {
        "meta_data.json" => axum::Json(meta_data(&m)).into_response(),
        "network_data.json" => axum::Json(network_data(&m)).into_response(),
        "vendor_data.json" | "vendor_data2.json" => axum::Json(json!({})).into_response(),
        "user_data" => match m.user_data {
            Some(d) => ([(header::CONTENT_TYPE, "application/octet-stream")], d).into_response(),
            None => not_found("this instance has no user data\n".into()),
        },
        other => not_found(format!("no metadata file {other}\n")),
    }
}

async fn ec2_versions() -> Response {
    text("1.0\n2007-01-19\n2009-04-04\nlatest")
}

async fn ec2_index(State(ctx): State<Ctx>, ConnectInfo(from): ConnectInfo<SocketAddr>) -> Response {
    match caller(&ctx, from) {
        Ok(_) => text(
            "ami-id\nhostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nplacement/\npublic-keys/",
        ),
        Err(why) => not_found(why),
    }
}

async fn ec2_user_data(
    State(ctx): State<Ctx>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
) -> Response {
    match caller(&ctx, from) {
        Ok(m) => match m.user_data {
            Some(d) => d.into_response(),
            None => not_found("this instance has no user data\n".into()),
        },
        Err(why) => not_found(why),
    }
}

async fn ec2_key(
    State(ctx): State<Ctx>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    UrlPath((_version, key)): UrlPath<(String, String)>,
) -> Response {
    let m = match caller(&ctx, from) {
        Ok(m) => m,
        Err(why) => return not_found(why),
    };
    let key = key.trim_end_matches('/');
    match key {
        "ami-id" => text("ami-00000001"),
        "instance-id" => text(m.uuid.clone()),
        "hostname" | "local-hostname" => text(m.hostname.clone()),
        "local-ipv4" => text(m.ip.to_string()),
        "placement" => text("availability-zone"),
        "placement/availability-zone" => text("nova"),
        "public-keys" => text(
            m.public_keys
                .iter()
                .enumerate()
                .map(|(i, (n, _))| format!("{i}={n}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        k => {
            // public-keys/N[/openssh-key]
            let parts: Vec<&str> = k.split('/').collect();
            match parts.as_slice() {
                ["public-keys", n] | ["public-keys", n, "openssh-key"] => {
                    match n.parse::<usize>().ok().and_then(|i| m.public_keys.get(i)) {
                        Some((_, key)) if parts.len() == 3 => text(key.clone()),
                        Some(_) => text("openssh-key"),
                        None => not_found(format!("no public key {n}\n")),
                    }
                }
                _ => not_found(format!("no meta-data key {k}\n")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    struct One;
    impl MetadataSource for One {
        fn lookup(&self, vni: u32, ip: Ipv4Addr) -> Option<InstanceMeta> {
            (vni == 7 && ip == Ipv4Addr::new(10, 0, 0, 5)).then(|| InstanceMeta {
                uuid: "u-1".into(),
                name: "web-1".into(),
                hostname: "web-1".into(),
                project: "p".into(),
                public_keys: vec![("k".into(), "ssh-ed25519 AAAA test".into())],
                user_data: Some(b"#!/bin/sh\necho hi\n".to_vec()),
                port: "1234-5678".into(),
                network: "n".into(),
                mac: "fa:16:3e:00:00:01".into(),
                ip,
                mtu: 1450,
                dns: vec!["10.0.0.53".into()],
            })
        }
    }

    async fn get(path: &str, from: [u8; 4]) -> (StatusCode, String) {
        let app = router(Ctx {
            vni: 7,
            source: Arc::new(One),
        });
        let mut req = Request::get(path).body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((from, 40000))));
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).to_string())
    }

    #[tokio::test]
    async fn an_instance_gets_its_own_data_in_both_layouts_and_strangers_get_404() {
        let (s, b) = get("/openstack/latest/meta_data.json", [10, 0, 0, 5]).await;
        assert_eq!(s, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["uuid"], "u-1");
        assert_eq!(v["public_keys"]["k"], "ssh-ed25519 AAAA test");
        let (_, b) = get("/openstack/latest/user_data", [10, 0, 0, 5]).await;
        assert!(b.contains("echo hi"));
        let (_, b) = get("/openstack/2018-08-27/network_data.json", [10, 0, 0, 5]).await;
        assert!(
            b.contains("fa:16:3e:00:00:01") && b.contains("ipv4_dhcp"),
            "{b}"
        );
        let (_, b) = get("/latest/meta-data/instance-id", [10, 0, 0, 5]).await;
        assert_eq!(b, "u-1");
        let (_, b) = get("/latest/meta-data/public-keys/0/openssh-key", [10, 0, 0, 5]).await;
        assert_eq!(b, "ssh-ed25519 AAAA test");
        let (_, b) = get("/latest/meta-data/local-ipv4", [10, 0, 0, 5]).await;
        assert_eq!(b, "10.0.0.5");
        let (s, b) = get("/openstack/latest/meta_data.json", [10, 0, 0, 6]).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(b.contains("no instance with address 10.0.0.6"), "{b}");
        let (s, _) = get("/openstack/1999-01-01/meta_data.json", [10, 0, 0, 5]).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}
