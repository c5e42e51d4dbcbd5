//! Policy, quotas and bad input on the OpenStack API (one node): quotas set by an admin
//! are enforced with each service's status and OpenStack's message (Nova 403, Neutron 409,
//! Cinder 413) and a member cannot change them; malformed JSON, wrong types, unknown
//! fields, oversize bodies, unknown ids and wrong tokens get the status and fault body
//! OpenStack returns, never a 500, and change nothing.

mod common;

use common::{http, password_auth, stderr, Cluster, Os};

/// A bad request: method, path, body, the status expected and a marker of its fault body.
type Case<'a> = (&'a str, String, Option<&'a [u8]>, u16, &'a str);

#[test]
fn quotas_are_enforced_and_bad_input_is_refused_without_changes() {
    let c = Cluster::form(1);
    let os = Os::new(&c);
    let pw = common::admin_password(&c);
    let admin = password_auth("admin", &pw, "admin");
    let project = os.json(&admin, &["project", "create", "demo", "-f", "json"]);
    let pid = project["id"].as_str().unwrap().to_string();
    os.json(
        &admin,
        &[
            "user",
            "create",
            "--password",
            "pw-secret",
            "--project",
            "demo",
            "demo",
            "-f",
            "json",
        ],
    );
    assert!(os
        .run(
            &admin,
            &[
                "role",
                "add",
                "--project",
                "demo",
                "--user",
                "demo",
                "member"
            ]
        )
        .status
        .success());
    let demo = password_auth("demo", "pw-secret", "demo");

    // Quotas: set by the admin, shown, enforced; a member cannot set them.
    let o = os.run(
        &admin,
        &[
            "quota",
            "set",
            "--instances",
            "0",
            "--networks",
            "0",
            "--volumes",
            "0",
            "demo",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let q = os.json(&demo, &["quota", "show", "demo", "-f", "json"]);
    let limit = |r: &str| {
        q.as_array()
            .and_then(|a| a.iter().find(|x| x["Resource"] == r))
            .map(|x| x["Limit"].clone())
            .unwrap_or_default()
    };
    assert_eq!(limit("instances"), 0, "{q}");
    assert_eq!(limit("networks"), 0, "{q}");
    assert_eq!(limit("volumes"), 0, "{q}");
    assert_eq!(limit("cores"), 20, "{q}");
    let o = os.run(&demo, &["quota", "set", "--instances", "50", "demo"]);
    assert!(
        !o.status.success() && stderr(&o).contains("403"),
        "{}",
        stderr(&o)
    );
    let o = os.run(&demo, &["network", "create", "n0"]);
    assert!(
        !o.status.success() && stderr(&o).contains("Quota exceeded for network"),
        "{}",
        stderr(&o)
    );
    let o = os.run(&demo, &["volume", "create", "--size", "1", "v0"]);
    assert!(
        !o.status.success() && stderr(&o).contains("Quota exceeded for volumes"),
        "{}",
        stderr(&o)
    );
    let token = String::from_utf8_lossy(
        &os.run(&demo, &["token", "issue", "-f", "value", "-c", "id"])
            .stdout,
    )
    .trim()
    .to_string();
    assert!(!token.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.raw");
    std::fs::write(&file, vec![7u8; 4096]).unwrap();
    let img = os.json(
        &demo,
        &[
            "image",
            "create",
            "--file",
            file.to_str().unwrap(),
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "tiny",
            "-f",
            "json",
        ],
    );
    let server = format!(
        r#"{{"server": {{"name": "s0", "flavorRef": "m1.tiny", "imageRef": "{}", "networks": "none"}}}}"#,
        img["id"].as_str().unwrap()
    );
    let (code, body) = http(
        &c,
        "POST",
        "/compute/v2.1/servers",
        &token,
        Some(server.as_bytes()),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("forbidden") && body.contains("Quota exceeded for instances"),
        "{body}"
    );
    let (code, body) = http(
        &c,
        "POST",
        &format!("/volume/v3/{pid}/volumes"),
        &token,
        Some(br#"{"volume": {"size": 1}}"#),
    );
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("overLimit"), "{body}");
    let o = os.run(
        &admin,
        &[
            "quota",
            "set",
            "--instances",
            "10",
            "--networks",
            "10",
            "--volumes",
            "10",
            "demo",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // Bad input: each refused with its service's status and fault body.
    let cases: Vec<Case> = vec![
        ("POST", "/compute/v2.1/servers".into(), Some(b"{" as &[u8]), 400, "badRequest"),
        (
            "POST",
            "/compute/v2.1/servers".into(),
            Some(br#"{"server": {"name": "x1", "flavorRef": "m1.tiny", "imageRef": "a", "bogus": 1}}"#),
            400,
            "was unexpected",
        ),
        (
            "POST",
            "/compute/v2.1/servers".into(),
            Some(br#"{"server": {"name": 5, "flavorRef": "m1.tiny"}}"#),
            400,
            "badRequest",
        ),
        (
            "GET",
            "/compute/v2.1/servers/6f0b1c52-9b1e-4c6e-9d7e-000000000000".into(),
            None,
            404,
            "itemNotFound",
        ),
        (
            "POST",
            "/compute/v2.1/servers/6f0b1c52-9b1e-4c6e-9d7e-000000000000/action".into(),
            Some(br#"{"os-stop": null}"#),
            404,
            "itemNotFound",
        ),
        ("POST", "/compute/v2.1/os-keypairs".into(), Some(br#"{"keypair": {"name": "k9", "public_key": 5}}"#), 400, "public_key"),
        // No public key (Strata generates the pair): a bad name is still refused.
        ("POST", "/compute/v2.1/os-keypairs".into(), Some(br#"{"keypair": {"name": "a/b"}}"#), 400, "keypair name"),
        ("POST", "/networking/v2.0/networks".into(), Some(br#"{"network": {"name": 5}}"#), 400, "NeutronError"),
        ("POST", "/networking/v2.0/networks".into(), Some(b"[]" as &[u8]), 400, "NeutronError"),
        ("GET", "/networking/v2.0/networks/nope".into(), None, 404, "NeutronError"),
        ("POST", format!("/volume/v3/{pid}/volumes"), Some(br#"{"volume": {"size": "abc"}}"#), 400, "badRequest"),
        ("POST", format!("/volume/v3/{pid}/volumes"), Some(br#"{"volume": {"size": 1, "bogus": 1}}"#), 400, "was unexpected"),
        // 2^34 GiB is 2^64 bytes: refused, not wrapped to an empty volume.
        ("POST", format!("/volume/v3/{pid}/volumes"), Some(br#"{"volume": {"size": 17179869184}}"#), 400, "too large"),
        ("GET", format!("/volume/v3/{pid}/volumes/nope"), None, 404, "itemNotFound"),
        ("POST", "/image/v2/images".into(), Some(br#"{"name": "i1", "min_ram": "lots"}"#), 400, "min_ram"),
        ("POST", "/image/v2/images".into(), Some(br#"{"name": "i1", "status": "active"}"#), 403, "read-only"),
        ("GET", "/image/v2/images/nope".into(), None, 404, "No image found"),
    ];
    for (method, path, body, want, marker) in &cases {
        let (code, got) = http(&c, method, path, &token, *body);
        assert_eq!(code, *want, "{method} {path}: {got}");
        assert!(got.contains(marker), "{method} {path}: {got}");
    }
    // Compute microversions: 2.1 is served and echoed, a later one is refused (406).
    let ver = |h: &str| {
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
            .arg(c.nodes[0].dir.join("pki/ca.crt"))
            .args(["-H", &format!("X-Auth-Token: {token}"), "-H", h])
            .arg(format!(
                "https://{}:5000/compute/v2.1/flavors",
                c.nodes[0].ip
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_lowercase()
    };
    let ok = ver("OpenStack-API-Version: compute 2.1");
    assert!(
        ok.starts_with("http/1.1 200") && ok.contains("openstack-api-version: compute 2.1"),
        "{ok}"
    );
    let later = ver("X-OpenStack-Nova-API-Version: 2.60");
    assert!(
        later.starts_with("http/1.1 406") && later.contains("maximum is 2.1"),
        "{later}"
    );
    let bad = ver("OpenStack-API-Version: compute two");
    assert!(bad.starts_with("http/1.1 400"), "{bad}");
    // Oversize bodies are refused before they are read.
    let big = vec![b' '; 3 << 20];
    let (code, got) = http(&c, "POST", "/compute/v2.1/servers", &token, Some(&big));
    assert_eq!(code, 413, "{got}");
    // Each route has its bound: a sign-in body is small (64 KiB), other API bodies 1 MiB.
    let (code, got) = http(
        &c,
        "POST",
        "/identity/v3/auth/tokens",
        "",
        Some(&big[..128 << 10]),
    );
    assert_eq!(code, 413, "{got}");
    let (code, got) = http(
        &c,
        "POST",
        "/compute/v2.1/servers",
        &token,
        Some(&big[..(1 << 20) + 1]),
    );
    assert_eq!(code, 413, "{got}");
    // The API speaks HTTPS only (plain HTTP gets no answer); a wrong token is refused
    // everywhere.
    let o = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.nodes[0].ns,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://{}:5000/identity/v3", c.nodes[0].ip))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "000");
    for path in [
        "/compute/v2.1/servers".to_string(),
        "/networking/v2.0/networks".into(),
        format!("/volume/v3/{pid}/volumes"),
        "/image/v2/images".into(),
    ] {
        let (code, got) = http(&c, "GET", &path, "not-a-token", None);
        assert_eq!(code, 401, "{path}: {got}");
    }
    // Nothing was made.
    for (args, what) in [
        (vec!["server", "list", "-f", "json"], "servers"),
        (vec!["network", "list", "-f", "json"], "networks"),
        (vec!["volume", "list", "-f", "json"], "volumes"),
    ] {
        let v = os.json(&demo, &args);
        assert_eq!(v.as_array().map(|a| a.len()), Some(0), "{what}: {v}");
    }
    let images = os.json(&demo, &["image", "list", "-f", "json"]);
    assert_eq!(images.as_array().map(|a| a.len()), Some(1), "{images}");

    // The audit log (read in the web console) has the API's changes: who, from where,
    // and what came of it.
    let log = console_page(&c, "admin", &pw, "/audit?all=1&q=os-quota-sets");
    let rows: Vec<&str> = log.split("<tr id=").skip(1).collect();
    assert!(
        rows.iter().any(|r| r.contains(">admin<")
            && r.contains("PUT compute")
            && r.contains(">ok<")
            && r.contains("(api)")),
        "the admin's quota set is not in the audit log: {log}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains(">demo<") && r.contains("refused: HTTP 403")),
        "the member's refused quota set is not in the audit log: {log}"
    );
}

/// Signs in to the web console inside node 0's namespace and fetches `path`.
fn console_page(c: &Cluster, user: &str, password: &str, path: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let jar = dir.path().join("cookies");
    let base = format!("https://{}:5000", c.nodes[0].ip);
    let curl = |extra: &[&str]| {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &c.nodes[0].ns, "curl", "-s", "--cacert"])
            .arg(c.nodes[0].dir.join("pki/ca.crt"))
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .args(extra)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    curl(&[
        "--data-urlencode",
        &format!("username={user}"),
        "--data-urlencode",
        &format!("password={password}"),
        &format!("{base}/login"),
    ]);
    // The audit record is written just after the answer: give it a moment.
    std::thread::sleep(std::time::Duration::from_millis(500));
    curl(&[&format!("{base}{path}")])
}

/// A token past its expiry gets 401 on every service (the node issues 3-second tokens).
#[test]
fn expired_tokens_are_refused() {
    let mut c = Cluster::topology(1);
    c.nodes[0]
        .env
        .push(("STRATA_TOKEN_TTL_S".into(), "3".into()));
    let first = &c.nodes[0];
    let o = first.cli(&["init", "--listen", &first.addr(), "--cluster-name", "test"]);
    assert!(o.status.success(), "{}", stderr(&o));
    c.nodes[0].start();
    let os = Os::new(&c);
    let pw = common::admin_password(&c);
    let admin = password_auth("admin", &pw, "admin");
    let token = common::wait_for(std::time::Duration::from_secs(20), || {
        let o = os.run(&admin, &["token", "issue", "-f", "value", "-c", "id"]);
        let t = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (o.status.success() && !t.is_empty()).then_some(t)
    })
    .expect("a token");
    let (code, _) = http(&c, "GET", "/compute/v2.1/flavors", &token, None);
    assert_eq!(code, 200, "a fresh token is refused");
    std::thread::sleep(std::time::Duration::from_secs(4));
    for path in [
        "/compute/v2.1/flavors",
        "/networking/v2.0/networks",
        "/image/v2/images",
    ] {
        let (code, body) = http(&c, "GET", path, &token, None);
        assert_eq!(code, 401, "{path}: {body}");
        assert!(body.contains("expired"), "{path}: {body}");
    }
}
