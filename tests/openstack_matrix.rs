//! The cross-project matrix, generated from the OpenStack API's route tables: the routes
//! are read from the routers' source (`src/api/openstack/**`, every `.route(path,
//! method(handler)...)`), and for every route and method a member of project A uses
//! project B's ids and names: in the URL (each path parameter filled with B's resource of
//! that kind) and, for the routes that create, inside the body. Each attempt must get
//! the status the real service answers (404 for what A cannot see, 400 where Nova and
//! Glance answer a bad reference so, 403 for what only an administrator may do, 401 for
//! a token scoped to a project the user is not in), every list A reads must hold none of
//! B's ids, and a dump of every desired-state table is the same afterwards. The web
//! console's routes are read and tried the same way, and a reader of project A tries
//! every route that writes on A's own resources (403). A route with no case fails the
//! test: a new route must say what it does with B's ids.

#[path = "matrix/cases.rs"]
mod cases;
mod common;
#[path = "matrix/routes.rs"]
mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cases::{body_cases, console_case, fill, reader_case, url_case, Case, Ids, Own};
use common::{desired_state, json, password_auth, Cluster, Os};
use routes::{console_routes, routes};
use serde_json::Value;

/// Runs the cases through one curl (one connection); status and body of each.
fn send(c: &Cluster, token: &str, cases: &[Case]) -> Vec<(u16, String)> {
    let dir = tempfile::tempdir().unwrap();
    let ca = c.nodes[0].dir.join("pki/ca.crt").display().to_string();
    let mut blocks = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let mut b = format!(
            "silent\ncacert = \"{ca}\"\noutput = \"{}\"\nwrite-out = \"%{{http_code}}\\n\"\n",
            dir.path().join(format!("out{n}")).display()
        );
        b += &format!("url = \"https://{}:5000{}\"\n", c.nodes[0].ip, case.path);
        if case.route.method == "HEAD" {
            b += "head\n";
        } else {
            b += &format!("request = \"{}\"\n", case.route.method);
        }
        b += &format!("header = \"X-Auth-Token: {token}\"\n");
        b += &format!("header = \"Content-Type: {}\"\n", case.content_type);
        if let Some(s) = &case.subject {
            b += &format!("header = \"X-Subject-Token: {s}\"\n");
        }
        let data = dir.path().join(format!("in{n}"));
        match (&case.body, case.content_type) {
            (Some(v), _) => {
                std::fs::write(&data, v.to_string()).unwrap();
                b += &format!("data-binary = \"@{}\"\n", data.display());
            }
            (None, "application/octet-stream") => {
                std::fs::write(&data, b"x").unwrap();
                b += &format!("data-binary = \"@{}\"\n", data.display());
            }
            _ => {}
        }
        blocks.push(b);
    }
    let cfg = dir.path().join("curl.cfg");
    std::fs::write(&cfg, blocks.join("next\n")).unwrap();
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &c.nodes[0].ns, "curl", "--config"])
        .arg(&cfg)
        .output()
        .expect("curl");
    let codes: Vec<u16> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(codes.len(), cases.len(), "curl: {}", common::stderr(&o));
    codes
        .into_iter()
        .enumerate()
        .map(|(n, code)| {
            let body =
                std::fs::read_to_string(dir.path().join(format!("out{n}"))).unwrap_or_default();
            (code, body)
        })
        .collect()
}

/// Sends `cases` with `token` and notes each answer that is not the one wanted.
fn check(c: &Cluster, token: &str, cases: &[Case], label: &str, wrong: &mut Vec<String>) {
    for (case, (code, body)) in cases.iter().zip(send(c, token, cases)) {
        if !case.want.contains(&code) {
            wrong.push(format!(
                "{label}{} {} {}: got {code}, want {:?}: {}",
                case.route.method,
                case.path,
                case.body
                    .as_ref()
                    .map(|b| b.to_string())
                    .unwrap_or_default(),
                case.want,
                body.chars().take(300).collect::<String>()
            ));
        }
    }
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .or_else(|| v["ID"].as_str())
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

/// A 1 GiB volume, once it is available; its id.
fn available_volume(os: &Os, auth: &[&str], name: &str) -> String {
    let v = id(&os.json(
        auth,
        &["volume", "create", "--size", "1", name, "-f", "json"],
    ));
    common::wait_for(std::time::Duration::from_secs(60), || {
        (os.json(auth, &["volume", "show", name, "-f", "json"])["status"] == "available")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("volume {name} not available"));
    v
}

fn token(os: &Os, auth: &[&str]) -> String {
    let o = os.run(auth, &["token", "issue", "-f", "value", "-c", "id"]);
    let t = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(!t.is_empty(), "no token: {}", common::stderr(&o));
    t
}

#[test]
fn every_route_refuses_another_projects_ids_and_changes_nothing() {
    let all = routes();
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
    let ja = |auth: &[&str], args: &[&str]| os.json(auth, args);
    ja(
        &admin,
        &["network", "create", "--external", "public", "-f", "json"],
    );
    ja(
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
    let mut nets = BTreeMap::new();
    for (auth, who, cidr) in [(&b, "b", "10.91.0.0/24"), (&a, "a", "10.90.0.0/24")] {
        let net = id(&ja(
            auth,
            &["network", "create", &format!("n{who}"), "-f", "json"],
        ));
        let sub = id(&ja(
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
        ));
        let sg = id(&ja(
            auth,
            &[
                "security",
                "group",
                "create",
                &format!("g{who}"),
                "-f",
                "json",
            ],
        ));
        let r = id(&ja(
            auth,
            &[
                "router",
                "create",
                "--external-gateway",
                "public",
                &format!("r{who}"),
                "-f",
                "json",
            ],
        ));
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
        assert!(o.status.success(), "{}", common::stderr(&o));
        nets.insert(who, (net, sub, sg, r));
    }
    let (b_network, b_subnet, b_group, b_router) = nets["b"].clone();
    let (a_network, a_subnet, a_group, a_router) = nets["a"].clone();
    let b_rule = id(&ja(
        &b,
        &[
            "security",
            "group",
            "rule",
            "create",
            "--protocol",
            "tcp",
            "--dst-port",
            "22",
            &b_group,
            "-f",
            "json",
        ],
    ));
    let b_port = id(&ja(
        &b,
        &["port", "create", "--network", "nb", "pb", "-f", "json"],
    ));
    let b_fip = id(&ja(
        &b,
        &[
            "floating", "ip", "create", "--port", "pb", "public", "-f", "json",
        ],
    ));
    let b_volume = available_volume(&os, &b, "vb");
    let b_snapshot = id(&ja(
        &b,
        &[
            "volume", "snapshot", "create", "--volume", "vb", "snb", "-f", "json",
        ],
    ));
    // B's private images: the test guest's kernel and initramfs, and a disk naming them.
    let guest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/out/guest");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.raw");
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
    let upload = |path: &Path, format: &str, name: &str, props: &[String]| {
        let mut args = vec![
            "image".to_string(),
            "create".into(),
            "--file".into(),
            path.display().to_string(),
            "--disk-format".into(),
            format.into(),
            "--container-format".into(),
            format.into(),
            "--private".into(),
        ];
        for p in props {
            args.extend(["--property".to_string(), p.clone()]);
        }
        args.extend([name.to_string(), "-f".into(), "json".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        id(&ja(&b, &args))
    };
    let kernel = upload(&guest.join("vmlinuz"), "aki", "kb", &[]);
    let initrd = upload(&guest.join("initramfs.cpio.gz"), "ari", "rb", &[]);
    let b_image = upload(
        &file,
        "ami",
        "ib",
        &[
            format!("kernel_id={kernel}"),
            format!("ramdisk_id={initrd}"),
        ],
    );
    let b_server_group = id(&ja(
        &b,
        &[
            "server",
            "group",
            "create",
            "--policy",
            "anti-affinity",
            "gb",
            "-f",
            "json",
        ],
    ));
    let b_app_cred = id(&ja(
        &b,
        &["application", "credential", "create", "acb", "-f", "json"],
    ));
    let b_token = token(&os, &b);
    let (st, _) = common::http(
        &c,
        "POST",
        "/compute/v2.1/os-keypairs",
        &b_token,
        Some(br#"{"keypair": {"name": "kpb"}}"#),
    );
    assert_eq!(st, 200, "B's key pair");
    // B's server, from B's private image on B's network (whether it is running yet does
    // not matter: its record is what A names).
    let b_server = {
        let o = os.run(
            &b,
            &[
                "server",
                "create",
                "--flavor",
                "m1.tiny",
                "--image",
                "ib",
                "--network",
                "nb",
                "sb1",
                "-f",
                "json",
            ],
        );
        if o.status.success() {
            id(&json(&o))
        } else {
            panic!("B's server: {}", common::stderr(&o))
        }
    };
    let ids = Ids {
        a_project: id(&ja(&admin, &["project", "show", "pa", "-f", "json"])),
        b_project: id(&ja(&admin, &["project", "show", "pb", "-f", "json"])),
        b_user: id(&ja(&admin, &["user", "show", "bob", "-f", "json"])),
        member_role: id(&ja(&admin, &["role", "show", "member", "-f", "json"])),
        b_app_cred,
        b_token,
        b_keypair: "kpb".into(),
        b_image,
        b_network,
        b_subnet,
        b_port,
        b_group,
        b_rule,
        b_router,
        b_fip,
        b_volume,
        b_snapshot,
        b_server,
        b_server_group,
        flavor: id(&ja(&admin, &["flavor", "show", "m1.tiny", "-f", "json"])),
        a_network,
        a_subnet,
        a_group,
        a_router,
        public: id(&ja(&admin, &["network", "show", "public", "-f", "json"])),
    };
    let a_token = token(&os, &a);
    // A reader of project A, and A's own resources of each kind it may try to change.
    os.add_user(&admin, "pa", "carol", "carol-secret", "reader");
    let carol = password_auth("carol", "carol-secret", "pa");
    let reader_token = token(&os, &carol);
    let a_volume = available_volume(&os, &a, "va");
    let own = Own {
        network: ids.a_network.clone(),
        subnet: ids.a_subnet.clone(),
        group: ids.a_group.clone(),
        rule: id(&ja(
            &a,
            &[
                "security",
                "group",
                "rule",
                "create",
                "--protocol",
                "tcp",
                "--dst-port",
                "80",
                "ga",
                "-f",
                "json",
            ],
        )),
        router: ids.a_router.clone(),
        port: id(&ja(
            &a,
            &["port", "create", "--network", "na", "pa1", "-f", "json"],
        )),
        volume: a_volume,
        image: id(&ja(
            &a,
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
                "ia",
                "-f",
                "json",
            ],
        )),
    };
    let mut reader_cases = Vec::new();
    for r in &all {
        if let Ok(case) = reader_case(r, &ids, &own) {
            reader_cases.push(case);
        }
    }

    // The cases, from the route table.
    let mut cases = Vec::new();
    let mut reads = Vec::new();
    let mut skipped: BTreeMap<String, &str> = BTreeMap::new();
    for r in &all {
        let key = format!("{} {}", r.method, r.path);
        let segs: Vec<&str> = r.path.split('/').collect();
        let has_resource = segs
            .iter()
            .enumerate()
            .any(|(i, s)| s.starts_with('{') && !(i > 0 && segs[i - 1] == "v3"));
        if r.path.ends_with("/defaults") || r.path.ends_with("/default") {
            skipped.insert(key, "defaults are the same for every project");
        } else if r.path.contains("/flavors/{id}") && r.method != "GET" {
            // Flavors are public to read; changing one is an administrator's.
            cases.push(Case {
                route: r.clone(),
                path: r.path.replace("{id}", &ids.flavor),
                body: None,
                content_type: "application/json",
                subject: None,
                want: &[403],
            });
        } else if has_resource {
            match fill(&r.path, &ids) {
                Ok(path) => cases.push(url_case(r, path, &ids)),
                Err(why) => {
                    skipped.insert(key, why);
                }
            }
        } else {
            match body_cases(r, &ids) {
                Ok(cs) => cases.extend(cs),
                Err(why) => {
                    if r.method == "GET" {
                        reads.push(r.clone());
                    }
                    skipped.insert(key, why);
                }
            }
        }
    }
    eprintln!(
        "FIGURES matrix: {} routes, {} cases, {} reads checked, {} without a project's ids",
        all.len(),
        cases.len(),
        reads.len(),
        skipped.len()
    );

    let mut wrong = Vec::new();
    // Every list and page A can read holds none of B's ids (read before A sends B's ids
    // anywhere: A's own activity log would show what A sent). Reading also makes what
    // the services make on first read (a project's default security group).
    let read_cases: Vec<Case> = reads
        .iter()
        .map(|r| Case {
            route: r.clone(),
            path: r.path.replace("{project}", &ids.a_project),
            body: None,
            content_type: "application/json",
            subject: None,
            want: &[],
        })
        .collect();
    let b_ids: BTreeSet<&str> = ids.of_b().into_iter().collect();
    for (case, (code, body)) in read_cases.iter().zip(send(&c, &a_token, &read_cases)) {
        for leak in b_ids.iter().filter(|i| body.contains(**i)) {
            wrong.push(format!(
                "GET {} ({code}) shows B's {leak}: {}",
                case.path,
                body.chars().take(300).collect::<String>()
            ));
        }
    }
    let web = common::console::Console::sign_in_as(&c, "alice", "alice-secret");
    let node = c.nodes[0].status().expect("status")["node"]
        .as_str()
        .expect("node id")
        .to_string();
    let console_all = console_routes();
    let console_pages: Vec<String> = console_all
        .iter()
        .filter(|r| r.method == "GET" && !r.path.contains('{'))
        .map(|r| r.path.clone())
        .collect();
    for page in &console_pages {
        // (`/live` streams updates: what it sends in its first seconds.)
        let body = web.curl(&["--max-time", "5", &web.url(page)]);
        for leak in b_ids.iter().filter(|i| body.contains(**i)) {
            wrong.push(format!("console page {page} shows B's {leak}"));
        }
    }

    let before = desired_state(&c);
    check(&c, &a_token, &cases, "", &mut wrong);
    // A reader of A changes nothing of A's.
    check(&c, &reader_token, &reader_cases, "reader: ", &mut wrong);
    eprintln!("FIGURES matrix: reader {} cases", reader_cases.len());
    // The web console, as alice: every route with B's ids in its URL or its form.
    let mut console_cases = 0;
    for r in &console_all {
        let Ok(cs) = console_case(r, &ids, &node) else {
            continue;
        };
        for k in cs {
            console_cases += 1;
            let mut args: Vec<String> = vec![
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                "%{http_code}".into(),
                "--max-time".into(),
                "10".into(),
            ];
            match k.method.as_str() {
                "ANY" => {
                    for h in [
                        "Connection: Upgrade",
                        "Upgrade: websocket",
                        "Sec-WebSocket-Version: 13",
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                    ] {
                        args.extend(["-H".into(), h.into()]);
                    }
                }
                "GET" => {}
                // Uploads carry the CSRF token in a header, as the console's script does.
                "PUT" => {
                    args.extend(["-X".into(), "PUT".into()]);
                    args.extend(["-H".into(), format!("X-CSRF-Token: {}", web.csrf())]);
                    args.extend(["--data-binary".into(), "x".into()]);
                }
                other => {
                    args.extend(["-X".into(), other.into()]);
                    args.extend(["--data-urlencode".into(), format!("csrf={}", web.csrf())]);
                    for (f, v) in &k.fields {
                        args.extend(["--data-urlencode".into(), format!("{f}={v}")]);
                    }
                }
            }
            args.push(web.url(&k.path));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let code: u16 = web.curl(&args).trim().parse().unwrap_or(0);
            if !k.want.contains(&code) {
                wrong.push(format!(
                    "console {} {} {:?}: got {code}, want {:?}",
                    k.method, k.path, k.fields, k.want
                ));
            }
        }
    }
    eprintln!(
        "FIGURES matrix: console {console_cases} cases, {} pages checked",
        console_pages.len()
    );
    let after = desired_state(&c);
    for (t, v) in &before {
        if Some(v) != after.get(t) {
            wrong.push(format!("table {t} changed"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len() + read_cases.len(),
        wrong.join("\n")
    );
}
