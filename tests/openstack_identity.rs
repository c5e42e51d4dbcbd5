//! Keystone v3 as the real client sees it: python-openstackclient (from PyPI) against a
//! node's OpenStack API: token issue with the bootstrap admin's password, the catalog,
//! a project, user and role made through it, a member's token, what a member may not do,
//! a revoked token, and wrong credentials refused with 401.

mod common;

use common::{data_dir_of, password_auth, stderr, Cluster, Os};

#[test]
fn the_openstack_client_authenticates_and_manages_identity() {
    let c = Cluster::form(1);
    let os = Os::new(&c);
    let pw = std::fs::read_to_string(data_dir_of(&c.nodes[0]).join("admin-password"))
        .expect("the bootstrap wrote the admin password")
        .trim()
        .to_string();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data_dir_of(&c.nodes[0]).join("admin-password"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the password file is for root only");
    let log = c.nodes[0].log();
    assert!(!log.contains(&pw), "the admin password appears in the log");

    let admin = password_auth("admin", &pw, "admin");
    let t = os.json(&admin, &["token", "issue", "-f", "json"]);
    assert!(t["id"].as_str().is_some_and(|s| s.len() > 20), "{t}");
    assert!(
        t["expires"]
            .as_str()
            .is_some_and(|s| s.len() >= 19 && s.contains('T')),
        "{t}"
    );
    assert!(
        t["project_id"].as_str().is_some_and(|s| s.len() == 32),
        "{t}"
    );
    let cat = os.json(&admin, &["catalog", "list", "-f", "json"]);
    assert!(cat.to_string().contains("identity"), "{cat}");

    // Wrong password: 401.
    let bad = password_auth("admin", "not-the-password", "admin");
    let o = os.run(&bad, &["token", "issue"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));

    // A project, a user with the member role on it, and that user's token.
    os.json(&admin, &["project", "create", "demo", "-f", "json"]);
    os.json(
        &admin,
        &[
            "user",
            "create",
            "--password",
            "demo-secret",
            "--project",
            "demo",
            "demo",
            "-f",
            "json",
        ],
    );
    let o = os.run(
        &admin,
        &[
            "role",
            "add",
            "--project",
            "demo",
            "--user",
            "demo",
            "member",
        ],
    );
    assert!(o.status.success(), "role add: {}", stderr(&o));
    let member = password_auth("demo", "demo-secret", "demo");
    let mt = os.json(&member, &["token", "issue", "-f", "json"]);
    let projects = os.json(&admin, &["project", "list", "-f", "json"]);
    let demo_id = projects
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Name"] == "demo")
        .and_then(|p| p["ID"].as_str())
        .unwrap()
        .to_string();
    assert_eq!(mt["project_id"], demo_id.as_str(), "{mt}");
    // A member cannot create projects, nor get a token for a project it has no role on.
    let o = os.run(&member, &["project", "create", "nope"]);
    assert!(
        !o.status.success() && stderr(&o).contains("403"),
        "{}",
        stderr(&o)
    );
    let o = os.run(
        &password_auth("demo", "demo-secret", "admin"),
        &["token", "issue"],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("401"),
        "{}",
        stderr(&o)
    );

    // A revoked token no longer works.
    let tok = mt["id"].as_str().unwrap().to_string();
    let o = os.run(&admin, &["token", "revoke", &tok]);
    assert!(o.status.success(), "revoke: {}", stderr(&o));
    let o = os.run(
        &[
            "--os-auth-type",
            "token",
            "--os-token",
            &tok,
            "--os-project-id",
            &demo_id,
        ],
        &["catalog", "list"],
    );
    assert!(!o.status.success(), "a revoked token still works");

    // Application credentials: made by the member with only the reader role, they
    // authenticate (by id) with that role alone, a wrong secret gets 401, a restricted
    // one cannot make another, and deleting one ends it.
    let ac = os.json(
        &member,
        &[
            "application",
            "credential",
            "create",
            "--role",
            "reader",
            "ro1",
            "-f",
            "json",
        ],
    );
    let field = |k: &str, k2: &str| {
        ac[k]
            .as_str()
            .or(ac[k2].as_str())
            .unwrap_or_else(|| panic!("no {k} in {ac}"))
            .to_string()
    };
    let ac_id = field("id", "ID");
    let secret = field("secret", "Secret");
    let listed = os.json(
        &member,
        &["application", "credential", "list", "-f", "json"],
    );
    assert!(listed.to_string().contains("ro1"), "{listed}");
    assert!(
        !listed.to_string().contains(&secret),
        "the secret is listed: {listed}"
    );
    let app = |secret: &str| {
        vec![
            "--os-auth-type".to_string(),
            "v3applicationcredential".into(),
            "--os-application-credential-id".into(),
            ac_id.clone(),
            // `=`: a secret may start with '-' (URL-safe base64), which argparse would
            // take for an option.
            format!("--os-application-credential-secret={secret}"),
        ]
    };
    let good = app(&secret);
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let t = os.json(&good, &["token", "issue", "-f", "json"]);
    assert_eq!(t["project_id"], demo_id.as_str(), "{t}");
    let o = os.run(&good, &["network", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = os.run(&good, &["network", "create", "ro-net"]);
    assert!(
        !o.status.success() && stderr(&o).contains("403"),
        "a reader credential changed something: {}",
        stderr(&o)
    );
    let o = os.run(&good, &["application", "credential", "create", "again"]);
    assert!(!o.status.success(), "a restricted credential made another");
    let bad = app("not-the-secret");
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let o = os.run(&bad, &["token", "issue"]);
    assert!(
        !o.status.success() && stderr(&o).contains("401"),
        "{}",
        stderr(&o)
    );
    let o = os.run(&member, &["application", "credential", "delete", "ro1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = os.run(&good, &["token", "issue"]);
    assert!(
        !o.status.success(),
        "a deleted application credential still works"
    );
}

/// Identity over time, as Keystone has it: a user disabled and enabled, a password reset
/// by the administrator and changed by the user (each ends the tokens issued before), a
/// role taken away; and the admin role on a project other than the cloud's own is that
/// project's administration only, not the cloud's.
#[test]
fn users_are_disabled_passwords_change_and_roles_go() {
    let c = Cluster::form(1);
    let os = Os::new(&c);
    let pw = common::admin_password(&c);
    let admin = password_auth("admin", &pw, "admin");
    os.json(&admin, &["project", "create", "demo", "-f", "json"]);
    os.add_user(&admin, "demo", "dana", "first-secret", "member");
    os.add_user(&admin, "demo", "boss", "boss-secret", "admin");
    let token = |auth: &[&str]| {
        let o = os.run(auth, &["token", "issue", "-f", "value", "-c", "id"]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let dana1 = password_auth("dana", "first-secret", "demo");
    let old = token(&dana1).expect("dana signs in");
    let works = |t: &str| common::http(&c, "GET", "/compute/v2.1/servers", t, None).0 == 200;
    assert!(works(&old));

    // Disabled: no sign-in, and the token she holds stops working; enabled again, she
    // signs in (the old token stays ended).
    // (Token times are in seconds: each change below happens a second after the tokens
    // it must end.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = os.run(&admin, &["user", "set", "--disable", "dana"]);
    assert!(o.status.success(), "disable: {}", stderr(&o));
    assert_eq!(token(&dana1), None, "a disabled user signed in");
    assert!(!works(&old), "a disabled user's token still works");
    let u = os.json(&admin, &["user", "show", "dana", "-f", "json"]);
    assert_eq!(u["enabled"], false, "{u}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = os.run(&admin, &["user", "set", "--enable", "dana"]);
    assert!(o.status.success(), "enable: {}", stderr(&o));
    let t1 = token(&dana1).expect("enabled again");
    assert!(works(&t1) && !works(&old));

    // The administrator resets her password: the old one and the old token end.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = os.run(
        &admin,
        &["user", "set", "--password", "second-secret", "dana"],
    );
    assert!(o.status.success(), "reset: {}", stderr(&o));
    assert_eq!(token(&dana1), None, "the old password still works");
    assert!(!works(&t1), "a token from before the reset still works");
    let dana2 = password_auth("dana", "second-secret", "demo");
    token(&dana2).expect("the new password works");

    // She changes it herself, giving the current one (a wrong one is refused).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = os.run(
        &dana2,
        &[
            "user",
            "password",
            "set",
            "--original-password",
            "wrong-one",
            "--password",
            "third-secret",
        ],
    );
    assert!(
        !o.status.success(),
        "a wrong original password was accepted"
    );
    let o = os.run(
        &dana2,
        &[
            "user",
            "password",
            "set",
            "--original-password",
            "second-secret",
            "--password",
            "third-secret",
        ],
    );
    assert!(o.status.success(), "password set: {}", stderr(&o));
    let dana3 = password_auth("dana", "third-secret", "demo");
    let t3 = token(&dana3).expect("her new password works");
    assert_eq!(token(&dana2), None);

    // Her role is taken away: no project-scoped sign-in, her token stops working.
    let o = os.run(
        &admin,
        &[
            "role",
            "remove",
            "--project",
            "demo",
            "--user",
            "dana",
            "member",
        ],
    );
    assert!(o.status.success(), "role remove: {}", stderr(&o));
    assert!(!works(&t3), "a token outlived its role");
    assert_eq!(
        token(&dana3),
        None,
        "signed in to a project without a role there"
    );
    // Removing it again: Keystone's 404 (the client itself ignores it).
    let admin_token = token(&admin).expect("admin token");
    let demo_id = os.json(&admin, &["project", "show", "demo", "-f", "json"])["id"].clone();
    let dana_id = os.json(&admin, &["user", "show", "dana", "-f", "json"])["id"].clone();
    let (code, body) = common::http(
        &c,
        "DELETE",
        &format!(
            "/identity/v3/projects/{}/users/{}/roles/member",
            demo_id.as_str().unwrap_or_default(),
            dana_id.as_str().unwrap_or_default()
        ),
        &admin_token,
        None,
    );
    assert_eq!(code, 404, "removing a role twice: {body}");

    // The admin role on "demo" administers demo, not the cloud.
    let boss = password_auth("boss", "boss-secret", "demo");
    let o = os.run(&boss, &["user", "list"]);
    assert!(
        !o.status.success(),
        "a project admin listed the cloud's users"
    );
    let o = os.run(&boss, &["user", "set", "--disable", "admin"]);
    assert!(
        !o.status.success(),
        "a project admin disabled the cloud admin"
    );
    let projects = os.json(&boss, &["project", "list", "-f", "json"]);
    assert_eq!(projects.as_array().map(|a| a.len()), Some(1), "{projects}");
    let net = os.json(&boss, &["network", "create", "boss-net", "-f", "json"]);
    let demo = os.json(&admin, &["project", "show", "demo", "-f", "json"]);
    assert_eq!(net["project_id"], demo["id"], "{net}");
    let o = os.run(&boss, &["network", "create", "--share", "boss-shared"]);
    assert!(!o.status.success(), "a project admin made a shared network");

    // The console's Users page does the same: disable and enable, set a password, take
    // a role away.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let boss_id = os.json(&admin, &["user", "show", "boss", "-f", "json"])["id"]
        .as_str()
        .expect("boss id")
        .to_string();
    let web = common::console::Console::sign_in(&c);
    let page = web.curl(&[&web.url("/admin/users")]);
    assert!(
        page.contains(&format!("/admin/users/{boss_id}/disable")),
        "{page}"
    );
    let r = web.post(&format!("/admin/users/{boss_id}/disable"));
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    assert_eq!(
        token(&boss),
        None,
        "a user disabled in the console signed in"
    );
    let r = web.post(&format!("/admin/users/{boss_id}/enable"));
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    token(&boss).expect("enabled again in the console");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = web.post_form(
        "/admin/users/password",
        &[("user", "boss"), ("new_password", "boss-new-secret")],
    );
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    assert_eq!(token(&boss), None, "the old password works after a reset");
    let boss2 = password_auth("boss", "boss-new-secret", "demo");
    token(&boss2).expect("the password set in the console works");
    let r = web.post_form(
        "/admin/users/roles/remove",
        &[
            ("user", "boss"),
            ("project", demo_id.as_str().unwrap_or_default()),
            ("role", "admin"),
        ],
    );
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    assert_eq!(
        token(&boss2),
        None,
        "a role taken away in the console still works"
    );
}
