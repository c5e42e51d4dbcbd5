//! `make bench`: latency (p50, p99) and throughput of the OpenStack API on a 3-node
//! cluster holding 1,000 servers: token issue (password, argon2id), server list (detail,
//! as `openstack server list` asks) and server show, at 1 and 32 concurrent clients over
//! HTTPS with keep-alive connections. The reference, run side by side against the same
//! listener, is the unauthenticated version document (`GET /compute/v2.1/`): the floor
//! of TLS, HTTP and routing on this machine.
//!
//! The servers are recorded through the admin API as stopped VMs of the admin project
//! (1,000 booted guests do not fit on a 2-core machine); the API answers for them exactly
//! as for running ones. The load generator runs inside node 0's namespace: this binary
//! re-executes itself there with `STRATA_API_BENCH_CLIENT` set.

#[path = "../tests/common/browser.rs"]
mod browser;
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{data_dir_of, Cluster};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const SERVERS: usize = 1000;

#[derive(Serialize, Deserialize, Clone)]
struct Job {
    addr: String,
    ca: PathBuf,
    method: String,
    path: String,
    token: Option<String>,
    body: Option<String>,
    clients: usize,
    per_client: usize,
    /// A console session cookie (`name=value`).
    #[serde(default)]
    cookie: Option<String>,
}

#[derive(Serialize, Deserialize, Debug)]
struct Result {
    p50_ms: f64,
    p99_ms: f64,
    /// Time to the response's first byte (its headers).
    ttfb_p50_ms: f64,
    ttfb_p99_ms: f64,
    /// Body size of the last answer.
    bytes: usize,
    rps: f64,
    errors: usize,
    /// The first error seen (status and body start, or the transport error).
    first_error: Option<String>,
}

fn tls(ca: &PathBuf) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("CA certificate");
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(&pem).expect("CA PEM"))
        .expect("CA");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// One client: a keep-alive HTTPS connection, `n` requests; their latencies.
type Timings = (Vec<Duration>, Vec<Duration>, usize, Option<String>, usize);

async fn client(job: Job, cfg: Arc<rustls::ClientConfig>) -> Timings {
    let addr: std::net::SocketAddr = job.addr.parse().expect("addr");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .expect("TLS");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1 handshake");
    tokio::spawn(conn);
    let mut lat = Vec::with_capacity(job.per_client);
    let mut ttfb = Vec::with_capacity(job.per_client);
    let mut bytes = 0;
    let mut errors = 0;
    let mut first: Option<String> = None;
    for _ in 0..job.per_client {
        let mut req = hyper::Request::builder()
            .method(job.method.as_str())
            .uri(&job.path)
            .header("host", &job.addr)
            .header("content-type", "application/json");
        if let Some(t) = &job.token {
            req = req.header("x-auth-token", t);
        }
        if let Some(c) = &job.cookie {
            req = req.header("cookie", c);
        }
        let req = req
            .body(Full::new(Bytes::from(job.body.clone().unwrap_or_default())))
            .expect("request");
        let t0 = Instant::now();
        match send.send_request(req).await {
            Ok(resp) => {
                ttfb.push(t0.elapsed());
                let status = resp.status();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                lat.push(t0.elapsed());
                bytes = body.as_ref().map(|b| b.len()).unwrap_or(0);
                if !status.is_success() {
                    errors += 1;
                    first.get_or_insert_with(|| {
                        let b = body
                            .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).to_string());
                        format!("{status}: {}", b.unwrap_or_default())
                    });
                }
            }
            Err(e) => {
                errors += 1;
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (lat, ttfb, errors, first, bytes)
}

fn run_client(job: Job) -> Result {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let cfg = tls(&job.ca);
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..job.clients)
            .map(|_| tokio::spawn(client(job.clone(), cfg.clone())))
            .collect();
        let mut all = Vec::new();
        let mut firsts = Vec::new();
        let mut errors = 0;
        let mut bytes = 0;
        let mut first_error = None;
        for t in tasks {
            let (l, tf, e, f, b) = t.await.expect("client");
            all.extend(l);
            firsts.extend(tf);
            errors += e;
            bytes = b;
            if first_error.is_none() {
                first_error = f;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        all.sort();
        firsts.sort();
        let pct = |v: &[Duration], p: f64| {
            v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(0.0)
        };
        Result {
            p50_ms: pct(&all, 0.50),
            p99_ms: pct(&all, 0.99),
            ttfb_p50_ms: pct(&firsts, 0.50),
            ttfb_p99_ms: pct(&firsts, 0.99),
            bytes,
            rps: all.len() as f64 / secs,
            errors,
            first_error,
        }
    })
}

/// Runs a job inside node 0's namespace (this binary, re-executed there).
fn measure(c: &Cluster, job: &Job) -> Result {
    let exe = std::env::current_exe().expect("exe");
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &c.nodes[0].ns])
        .arg(exe)
        .env(
            "STRATA_API_BENCH_CLIENT",
            serde_json::to_string(job).expect("job"),
        )
        .output()
        .expect("client");
    assert!(
        o.status.success(),
        "client: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("client result")
}

fn admin_call(c: &Cluster, method: &str, path: &str, body: &Value) -> Value {
    let sock = data_dir_of(&c.nodes[0]).join("strata.sock");
    let o = std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&sock)
        .args(["-X", method, "-H", "content-type: application/json", "-d"])
        .arg(body.to_string())
        .arg(format!("http://strata{path}"))
        .output()
        .expect("curl");
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

#[allow(clippy::too_many_arguments)]
fn mk(
    addr: &str,
    ca: &std::path::Path,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    clients: usize,
    per_client: usize,
) -> Job {
    Job {
        addr: addr.into(),
        ca: ca.to_path_buf(),
        method: method.into(),
        path: path.into(),
        token: token.map(String::from),
        body: body.map(String::from),
        clients,
        per_client,
        cookie: None,
    }
}

fn main() {
    if let Ok(j) = std::env::var("STRATA_API_BENCH_CLIENT") {
        let job: Job = serde_json::from_str(&j).expect("job");
        println!(
            "{}",
            serde_json::to_string(&run_client(job)).expect("result")
        );
        return;
    }
    // Room for 1,000 one-vCPU servers on three 2-core nodes: Nova's
    // cpu_allocation_ratio, raised (the servers are recorded stopped, never run).
    let c = Cluster::form_env(3, &[("STRATA_CPU_ALLOCATION_RATIO", "200")]);
    let dir = data_dir_of(&c.nodes[0]).to_path_buf();
    let ca = dir.join("pki/ca.crt");
    let pw = std::fs::read_to_string(dir.join("admin-password"))
        .expect("admin password")
        .trim()
        .to_string();
    let addr = format!("{}:5000", c.nodes[0].ip);
    let auth = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"name": "Default"}, "password": pw}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}})
    .to_string();
    // A token and the admin project's id, through curl in the namespace.
    let o = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.nodes[0].ns,
            "curl",
            "-s",
            "-i",
            "--cacert",
        ])
        .arg(&ca)
        .args(["-H", "content-type: application/json", "-d", &auth])
        .arg(format!("https://{addr}/identity/v3/auth/tokens"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let token = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-subject-token:")
                .then(|| l[16..].trim().to_string())
        })
        .expect("a token");
    let body: Value =
        serde_json::from_str(text.split("\r\n\r\n").last().unwrap_or("{}")).expect("token body");
    let project = body["token"]["project"]["id"]
        .as_str()
        .expect("project")
        .to_string();

    // No quota on the admin project's instances, a 64 MiB flavor, and 1,000 servers of
    // the admin project, recorded stopped.
    let o = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.nodes[0].ns,
            "curl",
            "-s",
            "-X",
            "PUT",
            "--cacert",
        ])
        .arg(&ca)
        .args(["-H", "content-type: application/json", "-H"])
        .arg(format!("x-auth-token: {token}"))
        .arg("-d")
        .arg(json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1}}).to_string())
        .arg(format!(
            "https://{addr}/compute/v2.1/os-quota-sets/{project}"
        ))
        .output()
        .expect("curl");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("\"instances\":-1"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &c.nodes[0].ns, "curl", "-s", "--cacert"])
        .arg(&ca)
        .args(["-H", "content-type: application/json", "-H"])
        .arg(format!("x-auth-token: {token}"))
        .arg("-d")
        .arg(
            json!({"flavor": {"name": "bench.nano", "ram": 64, "vcpus": 1, "disk": 0}}).to_string(),
        )
        .arg(format!("https://{addr}/compute/v2.1/flavors"))
        .output()
        .expect("curl");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("bench.nano"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let kernel = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/out/guest/vmlinuz");
    assert!(kernel.exists(), "run `make images-guest` first");
    let t0 = Instant::now();
    let mut first = String::new();
    for i in 0..SERVERS {
        let v = admin_call(
            &c,
            "POST",
            "/v1/vms",
            &json!({"name": format!("bench-{i}"), "flavor": "bench.nano", "stopped": true,
                    "boot": {"kernel": kernel}, "project": project}),
        );
        if first.is_empty() {
            first = v["id"].as_str().unwrap_or_default().to_string();
        }
    }
    let made = t0.elapsed();
    assert!(!first.is_empty(), "no server was recorded");
    let all = admin_call(&c, "GET", "/v1/vms", &json!({}));
    let n = all.as_array().map(|a| a.len()).unwrap_or(0);
    assert_eq!(n, SERVERS, "servers recorded: {n}");

    let ops: Vec<(&str, Job, Job)> = vec![
        (
            "reference: GET /compute/v2.1/ (no auth)",
            mk(&addr, &ca, "GET", "/compute/v2.1/", None, None, 1, 400),
            mk(&addr, &ca, "GET", "/compute/v2.1/", None, None, 32, 50),
        ),
        (
            "token issue (POST /identity/v3/auth/tokens)",
            mk(
                &addr,
                &ca,
                "POST",
                "/identity/v3/auth/tokens",
                None,
                Some(&auth),
                1,
                40,
            ),
            mk(
                &addr,
                &ca,
                "POST",
                "/identity/v3/auth/tokens",
                None,
                Some(&auth),
                32,
                4,
            ),
        ),
        (
            "server list (GET /servers/detail, 1,000 servers)",
            mk(
                &addr,
                &ca,
                "GET",
                "/compute/v2.1/servers/detail",
                Some(&token),
                None,
                1,
                20,
            ),
            mk(
                &addr,
                &ca,
                "GET",
                "/compute/v2.1/servers/detail",
                Some(&token),
                None,
                32,
                3,
            ),
        ),
        (
            "server show (GET /servers/{id})",
            mk(
                &addr,
                &ca,
                "GET",
                &format!("/compute/v2.1/servers/{first}"),
                Some(&token),
                None,
                1,
                400,
            ),
            mk(
                &addr,
                &ca,
                "GET",
                &format!("/compute/v2.1/servers/{first}"),
                Some(&token),
                None,
                32,
                50,
            ),
        ),
    ];
    let mut md = format!(
        "3 nodes, {SERVERS} servers (recorded in {:.1} s through the admin API); HTTPS, one keep-alive connection per client.\n\n| operation | clients | p50 ms | p99 ms | requests/s | errors |\n|---|---|---|---|---|---|\n",
        made.as_secs_f64()
    );
    let mut notes: Vec<String> = Vec::new();
    for (name, one, many) in &ops {
        for j in [one, many] {
            let r = measure(&c, j);
            if let Some(e) = &r.first_error {
                eprintln!("{name} with {} clients: first error: {e}", j.clients);
                notes.push(format!("{name}, {} clients: {e}", j.clients));
            }
            md += &format!(
                "| {name} | {} | {:.2} | {:.2} | {:.0} | {} |\n",
                j.clients, r.p50_ms, r.p99_ms, r.rps, r.errors
            );
        }
    }
    md += &console(&c, &addr, &ca, &pw);
    md += &signin_flood(&c, &addr, &ca, &token, &first);
    for n in &notes {
        md += &format!("\nError seen: {n}\n");
    }
    println!("{md}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("api_latency.md"), &md);
}

/// `server show` while 64 clients send wrong passwords for `admin` as fast as they can
/// (last: the name and the clients' address end up locked out), against the same
/// request unloaded, and whether the Raft leader and term stayed the same.
fn signin_flood(c: &Cluster, addr: &str, ca: &std::path::Path, token: &str, vm: &str) -> String {
    let show = mk(
        addr,
        ca,
        "GET",
        &format!("/compute/v2.1/servers/{vm}"),
        Some(token),
        None,
        1,
        400,
    );
    let wrong = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"name": "Default"}, "password": "not-the-password"}}}}})
    .to_string();
    let flood = mk(
        addr,
        ca,
        "POST",
        "/identity/v3/auth/tokens",
        None,
        Some(&wrong),
        64,
        150,
    );
    let raft = |c: &Cluster| {
        let v: Value = serde_json::from_slice(&c.nodes[0].cli(&["debug", "raft"]).stdout)
            .unwrap_or(Value::Null);
        (v["term"].as_u64().unwrap_or(0), v["leader"].clone())
    };
    let quiet = measure(c, &show);
    let before = raft(c);
    let (loaded, flooded) = std::thread::scope(|s| {
        let f = s.spawn(|| measure(c, &flood));
        std::thread::sleep(Duration::from_millis(300));
        let l = measure(c, &show);
        (l, f.join().expect("flood"))
    });
    let after = raft(c);
    format!(
        "\nSign-in flood: 64 clients, {} wrong passwords for `admin` ({:.0}/s, {} refused), while one client reads a server:\n\n\
         | server show | p50 ms | p99 ms |\n|---|---|---|\n| unloaded | {:.2} | {:.2} |\n| during the flood | {:.2} | {:.2} |\n\n\
         p99 during / unloaded: {:.1}x. Raft term {} -> {}, leader {} -> {} ({}).\n",
        64 * 150,
        flooded.rps,
        flooded.errors,
        quiet.p50_ms,
        quiet.p99_ms,
        loaded.p50_ms,
        loaded.p99_ms,
        loaded.p99_ms / quiet.p99_ms.max(0.001),
        before.0,
        after.0,
        before.1,
        after.1,
        if before == after { "no election" } else { "an election happened" }
    )
}

/// The web console with the same 1,000 servers: time to first byte and whole answer of
/// the dashboard and the instance list over HTTPS (the sign-in page, which reads no
/// data, is the reference), then the full load in headless Chromium (navigation timing:
/// first byte, DOM ready, load event with the page's scripts and styles).
fn console(c: &Cluster, addr: &str, ca: &std::path::Path, pw: &str) -> String {
    let o = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.nodes[0].ns,
            "curl",
            "-s",
            "-i",
            "--cacert",
        ])
        .arg(ca)
        .args(["--data-urlencode", "username=admin", "--data-urlencode"])
        .arg(format!("password={pw}"))
        .arg(format!("https://{addr}/login"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let cookie = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie:")
                .then(|| l[11..].trim().split(';').next().unwrap_or("").to_string())
        })
        .expect("a session cookie");
    let mut md = String::from(
        "\nWeb console, same cluster and 1,000 servers, signed in as admin (HTTPS, keep-alive):\n\n\
         | page | clients | first byte p50 ms | p99 ms | whole answer p50 ms | p99 ms | KiB | errors |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (name, path) in [
        ("reference: sign-in page (no data)", "/login"),
        ("dashboard", "/"),
        (
            "instance list (1,000 instances, first page of 50)",
            "/instances",
        ),
        ("instance list, page 20", "/instances?page=20"),
    ] {
        for (clients, per) in [(1, 30), (8, 6)] {
            let mut j = mk(addr, ca, "GET", path, None, None, clients, per);
            j.cookie = Some(cookie.clone());
            let r = measure(c, &j);
            if let Some(e) = &r.first_error {
                eprintln!("{name}: first error: {e}");
            }
            md += &format!(
                "| {name} | {clients} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {} |\n",
                r.ttfb_p50_ms,
                r.ttfb_p99_ms,
                r.p50_ms,
                r.p99_ms,
                r.bytes as f64 / 1024.0,
                r.errors
            );
        }
    }
    md += &browser_load(c, addr, pw);
    md
}

/// Median navigation timings of each page over 10 loads in headless Chromium.
fn browser_load(c: &Cluster, addr: &str, pw: &str) -> String {
    use thirtyfour::prelude::*;
    let client = browser::ClientNs::new(&c.hub, "10.77.0.200");
    let ns = client.ns.clone();
    let driver = browser::Driver::start(&ns, 9515);
    let base = format!("https://{addr}");
    let pw = pw.to_string();
    let rows = browser::in_netns(&ns, move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let d = driver.session().await;
            d.goto(format!("{base}/login")).await.expect("login page");
            d.find(By::Id("username")).await.unwrap().send_keys("admin").await.unwrap();
            d.find(By::Id("password")).await.unwrap().send_keys(&pw).await.unwrap();
            d.find(By::Id("sign-in")).await.unwrap().click().await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut out = String::new();
            for (name, path) in [
                ("reference: sign-in page", "/login"),
                ("dashboard", "/"),
                ("instance list (1,000 instances, page 1 of 20)", "/instances"),
            ] {
                let mut t: Vec<[f64; 3]> = Vec::new();
                for _ in 0..10 {
                    d.goto(format!("{base}{path}")).await.expect("page");
                    let v = d
                        .execute(
                            "const n = performance.getEntriesByType('navigation')[0];\
                             return [n.responseStart - n.requestStart, n.domContentLoadedEventEnd - n.startTime, n.loadEventEnd - n.startTime];",
                            vec![],
                        )
                        .await
                        .expect("timing")
                        .json()
                        .clone();
                    let f = |i: usize| v[i].as_f64().unwrap_or(0.0);
                    t.push([f(0), f(1), f(2)]);
                }
                let med = |i: usize| {
                    let mut v: Vec<f64> = t.iter().map(|x| x[i]).collect();
                    v.sort_by(|a, b| a.total_cmp(b));
                    v[v.len() / 2]
                };
                out += &format!(
                    "| {name} | {:.1} | {:.1} | {:.1} |\n",
                    med(0),
                    med(1),
                    med(2)
                );
            }
            d.quit().await.expect("quit");
            out
        })
    })
    .expect("browser thread");
    drop(client);
    format!(
        "\nHeadless Chromium, median of 10 loads (navigation timing, ms):\n\n| page | first byte | DOM ready | load event |\n|---|---|---|---|\n{rows}"
    )
}
