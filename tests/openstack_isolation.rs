//! Isolation between projects, decided in `control` (one node): a member of project A
//! names project B's resources by id inside request bodies (a security group for a port
//! or a rule, B's port for a floating IP, B's subnet for a router interface, B's private
//! image as a kernel, a volume source or a server image) and gets "not found" (or the
//! service's 400 for a bad image property), and the store is unchanged afterwards: a
//! dump of every desired-state table's records and revisions is compared before and
//! after. Then, without credentials: 10,000 unauthenticated POSTs and 1,000 failed
//! sign-ins write nothing to the store (the audit table is unchanged, the Raft log grows
//! by no more than the idle cluster's own writes) and are counted in the node's
//! in-memory refusal log instead; repeated failures lock the user name out.

mod common;

use std::collections::BTreeMap;

use common::{desired_state, http, json, password_auth, Cluster, Os};
use serde_json::Value;

fn table_len(c: &Cluster, table: &str) -> usize {
    json(&c.nodes[0].cli(&["debug", "store"]))[table]
        .as_object()
        .map(|o| o.len())
        .unwrap_or(0)
}

fn raft_log_index(c: &Cluster) -> u64 {
    json(&c.nodes[0].cli(&["debug", "raft"]))["last_log_index"]
        .as_u64()
        .expect("last_log_index")
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// Runs one curl inside node 0's namespace over a config file of request blocks (one
/// operation each, separated by `next`), 32 at a time on reused connections (a refusal
/// for a locked-out sign-in is answered only after a timer); the status codes, one per
/// request, in any order.
fn curl_many(c: &Cluster, blocks: &[String]) -> Vec<u16> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("curl.cfg");
    let ca = c.nodes[0].dir.join("pki/ca.crt").display().to_string();
    let each = format!(
        "silent\ncacert = \"{ca}\"\noutput = \"/dev/null\"\nwrite-out = \"%{{http_code}}\\n\"\n"
    );
    let text: Vec<String> = blocks.iter().map(|b| format!("{each}{b}")).collect();
    std::fs::write(&cfg, text.join("next\n")).unwrap();
    let o = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.nodes[0].ns,
            "curl",
            "--parallel",
            "--parallel-max",
            "32",
        ])
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn a_project_cannot_reach_another_projects_resources_and_strangers_write_nothing() {
    let c = Cluster::form(1);
    let os = Os::new(&c);
    let pw = common::admin_password(&c);
    let admin = password_auth("admin", &pw, "admin");
    for p in ["pa", "pb"] {
        os.json(&admin, &["project", "create", p, "-f", "json"]);
    }
    os.add_user(&admin, "pa", "alice", "alice-secret", "member");
    os.add_user(&admin, "pb", "bob", "bob-secret", "member");
    let a = password_auth("alice", "alice-secret", "pa");
    let b = password_auth("bob", "bob-secret", "pb");

    // What everyone shares: an external network.
    os.json(
        &admin,
        &["network", "create", "--external", "public", "-f", "json"],
    );
    os.json(
        &admin,
        &[
            "subnet",
            "create",
            "--network",
            "public",
            "--subnet-range",
            "203.0.113.0/24",
            "public-v4",
            "-f",
            "json",
        ],
    );
    // Project B's world, and A's.
    let mut made = BTreeMap::new();
    for (auth, who, cidr) in [(&b, "b", "10.81.0.0/24"), (&a, "a", "10.80.0.0/24")] {
        let net = os.json(
            auth,
            &["network", "create", &format!("n{who}"), "-f", "json"],
        );
        let sub = os.json(
            auth,
            &[
                "subnet",
                "create",
                "--network",
                &format!("n{who}"),
                "--subnet-range",
                cidr,
                &format!("s{who}"),
                "-f",
                "json",
            ],
        );
        let sg = os.json(
            auth,
            &[
                "security",
                "group",
                "create",
                &format!("web{who}"),
                "-f",
                "json",
            ],
        );
        let r = os.json(
            auth,
            &["router", "create", &format!("r{who}"), "-f", "json"],
        );
        let o = os.run(
            auth,
            &[
                "router",
                "set",
                "--external-gateway",
                "public",
                &format!("r{who}"),
            ],
        );
        assert!(o.status.success(), "router set: {}", common::stderr(&o));
        let o = os.run(
            auth,
            &[
                "router",
                "add",
                "subnet",
                &format!("r{who}"),
                &format!("s{who}"),
            ],
        );
        assert!(
            o.status.success(),
            "router add subnet: {}",
            common::stderr(&o)
        );
        // A port made normally (it also makes the project's default group).
        let port = os.json(
            auth,
            &[
                "port",
                "create",
                "--network",
                &format!("n{who}"),
                &format!("p{who}"),
                "-f",
                "json",
            ],
        );
        made.insert(who, (id(&net), id(&sub), id(&sg), id(&r), id(&port)));
    }
    let (_, sb, sgb, _, pb) = made["b"].clone();
    let (na, _, sga, ra, _) = made["a"].clone();
    let public = id(&os.json(&admin, &["network", "show", "public", "-f", "json"]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kernel.raw");
    std::fs::write(&file, vec![0x5au8; 1 << 20]).unwrap();
    let img_b = id(&os.json(
        &b,
        &[
            "image",
            "create",
            "--file",
            file.to_str().unwrap(),
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--private",
            "kernel-b",
            "-f",
            "json",
        ],
    ));
    let pa_id = id(&os.json(&admin, &["project", "show", "pa", "-f", "json"]));
    let token = os.run(&a, &["token", "issue", "-f", "value", "-c", "id"]);
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    assert!(!token.is_empty(), "no token for alice");

    let before = desired_state(&c);
    let cases: Vec<(&str, String, Value, &[u16])> = vec![
        (
            "POST",
            "/networking/v2.0/ports".into(),
            serde_json::json!({"port": {"network_id": na, "security_groups": [sgb]}}),
            &[404],
        ),
        (
            "POST",
            "/networking/v2.0/security-group-rules".into(),
            serde_json::json!({"security_group_rule": {"security_group_id": sga, "direction": "ingress", "remote_group_id": sgb}}),
            &[404],
        ),
        (
            "POST",
            "/networking/v2.0/floatingips".into(),
            serde_json::json!({"floatingip": {"floating_network_id": public, "port_id": pb}}),
            &[404],
        ),
        (
            "PUT",
            format!("/networking/v2.0/routers/{ra}/add_router_interface"),
            serde_json::json!({"subnet_id": sb}),
            &[404],
        ),
        (
            "POST",
            "/image/v2/images".into(),
            serde_json::json!({"name": "evil", "disk_format": "raw", "container_format": "bare", "kernel_id": img_b}),
            &[400],
        ),
        (
            "POST",
            format!("/volume/v3/{pa_id}/volumes"),
            serde_json::json!({"volume": {"size": 1, "imageRef": img_b}}),
            &[404],
        ),
        (
            "POST",
            "/compute/v2.1/servers".into(),
            serde_json::json!({"server": {"name": "evil", "imageRef": img_b, "flavorRef": "m1.tiny", "networks": "none"}}),
            &[400, 404],
        ),
    ];
    for (method, path, body, want) in &cases {
        let raw = body.to_string();
        let (code, got) = http(&c, method, path, &token, Some(raw.as_bytes()));
        assert!(
            want.contains(&code),
            "{method} {path} {body}: got {code}, want {want:?}: {got}"
        );
        assert!(!got.contains(&img_b) || code != 200, "{got}");
    }
    let after = desired_state(&c);
    for (t, v) in &before {
        assert_eq!(
            Some(v),
            after.get(t),
            "table {t} changed by refused requests"
        );
    }
    assert_eq!(before.len(), after.len(), "tables appeared: {after:?}");

    // Images count against quotas (Glance's unified-limit names, set in the console):
    // data past `image_size_total` is refused mid-upload, an image past
    // `image_count_total` at create, both with Glance's 413.
    let console = common::console::Console::sign_in(&c);
    let r = console.post_form(
        "/admin/quotas",
        &[
            ("project", pa_id.as_str()),
            ("image_count_total", "1"),
            ("image_size_total", "1"),
        ],
    );
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    drop(console);
    let big = dir.path().join("big.raw");
    std::fs::write(&big, vec![7u8; 3 << 20]).unwrap();
    let o = os.run(
        &a,
        &[
            "image",
            "create",
            "--file",
            big.to_str().unwrap(),
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "too-big",
        ],
    );
    assert!(
        !o.status.success(),
        "an image over the size quota was stored"
    );
    let e = common::stderr(&o);
    assert!(e.contains("image_size_total") || e.contains("413"), "{e}");
    // (The client deletes the image whose upload was refused.) One image fits the count;
    // a second does not.
    os.json(&a, &["image", "create", "empty-one", "-f", "json"]);
    let o = os.run(&a, &["image", "create", "one-too-many"]);
    assert!(
        !o.status.success(),
        "an image over the count quota was made"
    );
    let e = common::stderr(&o);
    assert!(e.contains("image_count_total") || e.contains("413"), "{e}");

    // 5,000 idle connections (no TLS handshake, nothing sent) do not stop a new client.
    let script = r#"
import socket, subprocess, sys
ip, ca, url = sys.argv[1], sys.argv[2], sys.argv[3]
idle = [socket.create_connection((ip, 5000)) for _ in range(5000)]
r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "20",
                    "--cacert", ca, url], capture_output=True, text=True)
print(len(idle), r.stdout)
"#;
    let ca = c.nodes[0].dir.join("pki/ca.crt").display().to_string();
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &c.nodes[0].ns, "python3", "-c", script])
        .arg(&c.nodes[0].ip)
        .arg(&ca)
        .arg(format!("https://{}:5000/compute/v2.1/", c.nodes[0].ip))
        .output()
        .expect("python3");
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(out, "5000 200", "{out} {}", common::stderr(&o));

    // Without credentials: nothing reaches the store.
    let audit = table_len(&c, "audit");
    let log = raft_log_index(&c);
    let base = format!("https://{}:5000", c.nodes[0].ip);
    let blocks: Vec<String> = (0..10_000)
        .map(|i| {
            format!(
                "url = \"{base}/networking/v2.0/networks\"\nrequest = \"POST\"\nheader = \"X-Auth-Token: bogus-{i}\"\ndata = \"{{}}\"\n"
            )
        })
        .collect();
    let codes = curl_many(&c, &blocks);
    assert_eq!(codes.len(), 10_000, "not every request was answered");
    assert!(codes.iter().all(|c| *c == 401), "{:?}", &codes[..10]);
    let mut blocks = Vec::new();
    for i in 0..1_000 {
        let user = if i % 2 == 0 {
            "admin".to_string()
        } else {
            format!("nobody-{i}")
        };
        let body = format!(
            r#"{{"auth": {{"identity": {{"methods": ["password"], "password": {{"user": {{"name": "{user}", "domain": {{"id": "default"}}, "password": "wrong-{i}"}}}}}}}}}}"#
        )
        .replace('"', "\\\"");
        blocks.push(format!(
            "url = \"{base}/identity/v3/auth/tokens\"\nrequest = \"POST\"\nheader = \"Content-Type: application/json\"\ndata = \"{body}\"\n"
        ));
    }
    let codes = curl_many(&c, &blocks);
    assert_eq!(codes.len(), 1_000, "not every sign-in was answered");
    assert!(codes.iter().all(|c| *c == 401), "{:?}", &codes[..10]);
    assert_eq!(
        table_len(&c, "audit"),
        audit,
        "refused requests were audited in the store"
    );
    let grown = raft_log_index(&c) - log;
    assert!(
        grown < 100,
        "the Raft log grew by {grown} entries during refused requests"
    );
    let r = json(&c.nodes[0].cli(&["debug", "refusals"]));
    let count = |reason: &str| -> u64 {
        r["counts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["reason"] == reason)
            .map(|c| c["count"].as_u64().unwrap())
            .sum()
    };
    assert!(count("no_valid_token") >= 10_000, "{r}");
    assert!(
        count("failed_sign_in") + count("locked_out") >= 1_000,
        "{r}"
    );
    assert!(
        count("locked_out") > 0,
        "repeated failures never locked out: {r}"
    );
    assert!(r["recent"].as_array().unwrap().len() <= 50, "{r}");

    // The admin's name (and this address) is locked now, even with the right password.
    let o = os.run(&admin, &["token", "issue"]);
    assert!(!o.status.success(), "a locked-out user signed in");
    assert!(
        common::stderr(&o).contains("locked") || common::stderr(&o).contains("Too many"),
        "{}",
        common::stderr(&o)
    );
}
