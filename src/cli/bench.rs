//! `strata debug bench-write`: a closed-loop write load generator, the same for Strata's
//! store (through the admin socket) and for etcd (through its HTTP API), so both are
//! measured by one client in one run. Each worker keeps one HTTP/1.1 connection and
//! issues its writes back to back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Serialize;

#[derive(Debug, Clone)]
pub enum Target {
    /// Strata's admin socket: `PUT /v1/debug/kv/{key}`.
    Strata(PathBuf),
    /// An etcd client URL host:port: `POST /v3/kv/put`.
    Etcd(String),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("strata:") {
            Ok(Target::Strata(PathBuf::from(p)))
        } else if let Some(h) = s.strip_prefix("etcd:") {
            Ok(Target::Etcd(h.trim_start_matches("http://").to_string()))
        } else {
            Err(format!(
                "target {s:?} must be strata:<admin socket> or etcd:<host:port>"
            ))
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub target: String,
    pub writes: usize,
    pub concurrency: usize,
    pub value_bytes: usize,
    pub seconds: f64,
    pub writes_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> Result<Sender, String> {
    macro_rules! handshake {
        ($stream:expr) => {{
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new($stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(s)
        }};
    }
    match target {
        Target::Strata(p) => handshake!(tokio::net::UnixStream::connect(p)
            .await
            .map_err(|e| format!("{}: {e}", p.display()))?),
        Target::Etcd(h) => handshake!(tokio::net::TcpStream::connect(h)
            .await
            .map_err(|e| format!("{h}: {e}"))?),
    }
}

fn request(target: &Target, key: &str, value: &str) -> Request<Full<Bytes>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (method, uri, body) = match target {
        Target::Strata(_) => (
            "PUT",
            format!("/v1/debug/kv/{key}"),
            serde_json::Value::String(value.to_string()).to_string(),
        ),
        Target::Etcd(_) => (
            "POST",
            "/v3/kv/put".to_string(),
            serde_json::json!({"key": b64.encode(key), "value": b64.encode(value)}).to_string(),
        ),
    };
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "bench")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static request parts are valid")
}

pub async fn run(
    target: Target,
    writes: usize,
    concurrency: usize,
    value_bytes: usize,
) -> Result<BenchResult, String> {
    let concurrency = concurrency.max(1);
    let value: String = "x".repeat(value_bytes);
    let per = writes.div_ceil(concurrency);
    let start = Instant::now();
    let mut handles = vec![];
    for w in 0..concurrency {
        let target = target.clone();
        let value = value.clone();
        handles.push(tokio::spawn(async move {
            let mut sender = connect(&target).await?;
            let mut lat = Vec::with_capacity(per);
            let mut errors = 0;
            for i in 0..per {
                let key = format!("bench-{w}-{}", i % 1000);
                let t = Instant::now();
                let ok = match sender.send_request(request(&target, &key, &value)).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        ok
                    }
                    Err(_) => {
                        sender = connect(&target).await?;
                        false
                    }
                };
                if ok {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            Ok::<_, String>((lat, errors))
        }));
    }
    let mut all: Vec<Duration> = vec![];
    let mut errors = 0;
    for h in handles {
        let (lat, e) = h.await.map_err(|e| e.to_string())??;
        all.extend(lat);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    Ok(BenchResult {
        target: match &target {
            Target::Strata(_) => "strata".into(),
            Target::Etcd(_) => "etcd".into(),
        },
        writes: all.len(),
        concurrency,
        value_bytes,
        seconds: secs,
        writes_per_sec: all.len() as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    })
}
