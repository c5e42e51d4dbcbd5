//! The cross-project matrix, generated from the OpenStack API's route tables: the routes
//! are read from the routers' source (`src/api/openstack/**`, every `.route(path,
//! method(handler)...)`), and for every route and method a member of project A uses
//! project B's ids and names: in the URL (each path parameter filled with B's resource of
//! that kind) and, for the routes that create, inside the body. Each attempt must get
//! the status the real service answers (404 for what A cannot see, 400 where Nova and
//! Glance answer a bad reference so, 403 for what only an administrator may do, 401 for
//! a token scoped to a project the user is not in), every list A reads must hold none of
//! B's ids, and a dump of every desired-state table is the same afterwards. A route with
//! no case here fails the test: a new route must say what it does with B's ids.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{desired_state, json, password_auth, Cluster, Os};
use serde_json::{json as j, Value};

/// One route and method, as the router declares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    method: String,
    path: String,
}

/// Reads every `.route(...)` of the OpenStack API's routers.
fn routes() -> Vec<Route> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/api/openstack");
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("network")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(routes_in(&f));
    }
    assert!(out.len() > 80, "only {} routes found: {out:?}", out.len());
    out
}

/// Reads every `.route(...)` of the web console's routers.
fn console_routes() -> Vec<Route> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/console");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    let out: Vec<Route> = files.iter().flat_map(|f| routes_in(f)).collect();
    assert!(out.len() > 40, "only {} console routes: {out:?}", out.len());
    out
}

fn routes_in(file: &Path) -> Vec<Route> {
    let s = std::fs::read_to_string(file).unwrap();
    // The file's path helper: `let p = |s: &str| format!("PREFIX{s}");`
    let prefix = s.find("let p = |s: &str| format!(\"").map(|i| {
        let rest = &s[i + "let p = |s: &str| format!(\"".len()..];
        rest[..rest.find("{s}").unwrap()]
            .replace("{{", "{")
            .replace("}}", "}")
    });
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = s[at..].find(".route(") {
        let start = at + i + ".route(".len();
        let mut depth = 1;
        let mut end = start;
        for (k, ch) in s[start..].char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = start + k;
                break;
            }
        }
        let call = s[start..end].trim();
        at = end;
        let (path, handlers) = if let Some(rest) = call.strip_prefix("&p(\"") {
            let q = rest.find('"').unwrap();
            let prefix = prefix
                .clone()
                .unwrap_or_else(|| panic!("{}: p() without a prefix", file.display()));
            (format!("{prefix}{}", &rest[..q]), &rest[q..])
        } else if let Some(rest) = call.strip_prefix('"') {
            let q = rest.find('"').unwrap();
            (rest[..q].to_string(), &rest[q..])
        } else {
            panic!("{}: a route this test cannot read: {call}", file.display());
        };
        for m in ["get", "head", "post", "put", "patch", "delete", "any"] {
            let plain = handlers.contains(&format!(", {m}("))
                || handlers.contains(&format!(",\n{m}("))
                || handlers.contains(&format!(".{m}("));
            let first = handlers
                .trim_start_matches('"')
                .trim_start_matches(',')
                .trim_start()
                .starts_with(&format!("{m}("));
            if plain || first {
                out.push(Route {
                    method: m.to_uppercase(),
                    path: path.clone(),
                });
            }
        }
    }
    out
}

/// B's world, and the bits of A's that requests name.
struct Ids {
    a_project: String,
    b_project: String,
    b_user: String,
    member_role: String,
    b_app_cred: String,
    b_token: String,
    b_keypair: String,
    b_image: String,
    b_network: String,
    b_subnet: String,
    b_port: String,
    b_group: String,
    b_rule: String,
    b_router: String,
    b_fip: String,
    b_volume: String,
    b_snapshot: String,
    b_server: String,
    b_server_group: String,
    flavor: String,
    a_network: String,
    a_subnet: String,
    a_group: String,
    a_router: String,
    public: String,
}

impl Ids {
    /// Every id of B's that must never show in what A reads.
    fn of_b(&self) -> Vec<&str> {
        vec![
            &self.b_user,
            &self.b_app_cred,
            &self.b_image,
            &self.b_network,
            &self.b_subnet,
            &self.b_port,
            &self.b_group,
            &self.b_rule,
            &self.b_router,
            &self.b_fip,
            &self.b_volume,
            &self.b_snapshot,
            &self.b_server,
            &self.b_server_group,
        ]
    }
}

/// One request of the matrix.
struct Case {
    route: Route,
    path: String,
    body: Option<Value>,
    content_type: &'static str,
    subject: Option<String>,
    want: &'static [u16],
}

/// Fills a route's parameters with B's resources; `None` for a route whose parameters
/// name nothing of a project's (public things), with the reason.
fn fill(path: &str, ids: &Ids) -> Result<String, &'static str> {
    let segs: Vec<&str> = path.split('/').collect();
    let mut out = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        if !(seg.starts_with('{') && seg.ends_with('}')) {
            out.push(seg.to_string());
            continue;
        }
        let before = if i > 0 { segs[i - 1] } else { "" };
        let v = match (before, *seg) {
            // Cinder's project in the URL is A's own (its own endpoint).
            ("v3", "{project}") => ids.a_project.clone(),
            ("os-quota-sets", _) | ("quotas", _) => ids.b_project.clone(),
            ("users", "{user}") | ("users", "{id}") => ids.b_user.clone(),
            ("application_credentials", "{id}") => ids.b_app_cred.clone(),
            ("projects", _) => ids.b_project.clone(),
            ("roles", "{role}") => ids.member_role.clone(),
            ("os-keypairs", _) => ids.b_keypair.clone(),
            ("images", _) => ids.b_image.clone(),
            ("tags", _) => "t".into(),
            ("networks", _) => ids.b_network.clone(),
            ("subnets", _) => ids.b_subnet.clone(),
            ("ports", _) => ids.b_port.clone(),
            ("security-groups", _) => ids.b_group.clone(),
            ("security-group-rules", _) => ids.b_rule.clone(),
            ("routers", _) => ids.b_router.clone(),
            ("floatingips", _) => ids.b_fip.clone(),
            ("volumes", _) => ids.b_volume.clone(),
            ("snapshots", _) => ids.b_snapshot.clone(),
            ("servers", _) => ids.b_server.clone(),
            ("metadata", _) => "k".into(),
            ("os-volume_attachments", _) => ids.b_volume.clone(),
            ("os-server-groups", _) => ids.b_server_group.clone(),
            ("flavors", _) => return Err("flavors are public"),
            ("types", _) => return Err("volume types are public"),
            ("extensions", _) => return Err("extensions are public"),
            _ => panic!("no case for parameter {seg} after {before:?} in {path}"),
        };
        out.push(v);
    }
    Ok(out.join("/"))
}

/// What a route with B's ids in its URL must answer, and the body it is sent with.
fn url_case(route: &Route, path: String, ids: &Ids) -> Case {
    let m = route.method.as_str();
    let p = route.path.as_str();
    let admin_only = p.contains("os-quota-sets")
        || p.contains("/quotas/")
        || p.contains("/roles/")
        || (p.starts_with("/identity/v3/projects/") && m == "GET")
        || (p.starts_with("/identity/v3/users/{id}") && !p.ends_with("/password"))
        || p.contains("application_credentials");
    let want: &'static [u16] = if p.ends_with("/password") {
        // Keystone: the user's current password authorises the change (a wrong one here).
        &[401, 403]
    } else if p.contains("application_credentials") || p.contains("quota") {
        &[403, 404]
    } else if admin_only {
        &[403]
    } else {
        &[404]
    };
    let mut content_type = "application/json";
    let body = match (m, p) {
        ("GET" | "HEAD" | "DELETE", _) => None,
        (_, x) if x.ends_with("/images/{id}/file") => {
            content_type = "application/octet-stream";
            None
        }
        (_, x) if x.contains("/tags/") => None,
        ("PATCH", "/image/v2/images/{id}") => {
            content_type = "application/openstack-images-v2.1-json-patch";
            Some(j!([{"op": "replace", "path": "/name", "value": "x"}]))
        }
        ("PATCH", _) => Some(j!({"user": {"name": "x"}})),
        (_, x) if x.ends_with("/password") => {
            Some(j!({"user": {"password": "new-secret-1", "original_password": "not-bobs"}}))
        }
        (_, x) if x.contains("/roles/") => None,
        ("POST", x) if x.ends_with("/application_credentials") => {
            Some(j!({"application_credential": {"name": "x"}}))
        }
        (_, x) if x.contains("os-quota-sets") => Some(j!({"quota_set": {"instances": 1}})),
        (_, x) if x.contains("/quotas/") => Some(j!({"quota": {"network": 1}})),
        (_, x) if x.ends_with("_router_interface") => Some(j!({"subnet_id": ids.a_subnet})),
        ("PUT", "/networking/v2.0/routers/{id}") => Some(j!({"router": {"name": "x"}})),
        ("PUT", "/networking/v2.0/floatingips/{id}") => Some(j!({"floatingip": {"port_id": null}})),
        ("PUT", "/compute/v2.1/servers/{id}") => Some(j!({"server": {"name": "x"}})),
        ("POST", "/compute/v2.1/servers/{id}/action") => Some(j!({"os-stop": null})),
        (_, x) if x.ends_with("/metadata") => Some(j!({"metadata": {"k": "v"}})),
        (_, x) if x.ends_with("/metadata/{key}") => Some(j!({"meta": {"k": "v"}})),
        ("POST", x) if x.ends_with("/os-volume_attachments") => {
            Some(j!({"volumeAttachment": {"volumeId": ids.b_volume}}))
        }
        ("PUT", x) if x.ends_with("/volumes/{id}") => Some(j!({"volume": {"name": "x"}})),
        ("POST", x) if x.ends_with("/volumes/{id}/action") => {
            Some(j!({"os-extend": {"new_size": 2}}))
        }
        _ => panic!("no body for {m} {p}"),
    };
    Case {
        route: route.clone(),
        path,
        body,
        content_type,
        subject: None,
        want,
    }
}

/// The routes without a resource in their URL: what A sends naming B's things in the
/// body (or why nothing of B's can be named). Several cases for one route are allowed.
fn body_cases(route: &Route, ids: &Ids) -> Result<Vec<Case>, &'static str> {
    let m = route.method.as_str();
    let p = route.path.as_str();
    let path = p.replace("{project}", &ids.a_project);
    let mk = |body: Value, want: &'static [u16]| Case {
        route: route.clone(),
        path: path.clone(),
        body: Some(body),
        content_type: "application/json",
        subject: None,
        want,
    };
    let cases = match (m, p) {
        ("GET", "/identity/v3/auth/tokens") => vec![Case {
            route: route.clone(),
            path: path.clone(),
            body: None,
            content_type: "application/json",
            subject: Some(ids.b_token.clone()),
            want: &[403],
        }],
        ("GET", _) => return Err("a read: checked for B's ids below"),
        ("POST", "/networking/v2.0/networks")
        | ("POST", "/networking/v2.0/security-groups")
        | ("POST", "/compute/v2.1/os-keypairs")
        | ("POST", "/compute/v2.1/os-server-groups") => {
            return Err("its body names nothing of another project's")
        }
        ("POST", "/networking/v2.0/subnets") => vec![mk(
            j!({"subnet": {"network_id": ids.b_network, "cidr": "10.99.0.0/24", "ip_version": 4}}),
            &[404],
        )],
        ("POST", "/networking/v2.0/ports") => vec![
            mk(j!({"port": {"network_id": ids.b_network}}), &[404]),
            mk(
                j!({"port": {"network_id": ids.a_network, "security_groups": [ids.b_group]}}),
                &[404],
            ),
            mk(
                j!({"port": {"network_id": ids.a_network, "fixed_ips": [{"subnet_id": ids.b_subnet}]}}),
                &[400, 404],
            ),
        ],
        ("POST", "/networking/v2.0/security-group-rules") => vec![
            mk(
                j!({"security_group_rule": {"security_group_id": ids.b_group, "direction": "ingress"}}),
                &[404],
            ),
            mk(
                j!({"security_group_rule": {"security_group_id": ids.a_group, "direction": "ingress", "remote_group_id": ids.b_group}}),
                &[404],
            ),
        ],
        ("POST", "/networking/v2.0/routers") => vec![mk(
            j!({"router": {"name": "x", "external_gateway_info": {"network_id": ids.b_network}}}),
            &[400, 404],
        )],
        ("POST", "/networking/v2.0/floatingips") => vec![
            mk(
                j!({"floatingip": {"floating_network_id": ids.public, "port_id": ids.b_port}}),
                &[404],
            ),
            mk(
                j!({"floatingip": {"floating_network_id": ids.b_network}}),
                &[400, 404],
            ),
        ],
        ("POST", "/volume/v3/{project}/volumes") => vec![
            mk(j!({"volume": {"size": 1, "imageRef": ids.b_image}}), &[404]),
            mk(
                j!({"volume": {"size": 1, "snapshot_id": ids.b_snapshot}}),
                &[404],
            ),
            // Cloning a volume is not supported: refused before the id is looked up.
            mk(
                j!({"volume": {"size": 1, "source_volid": ids.b_volume}}),
                &[400, 404],
            ),
        ],
        ("POST", "/volume/v3/{project}/snapshots") => vec![mk(
            j!({"snapshot": {"volume_id": ids.b_volume, "name": "x"}}),
            &[404],
        )],
        ("POST", "/compute/v2.1/servers") => {
            let server = |extra: Value| {
                let mut s = j!({"name": "x", "imageRef": ids.b_image, "flavorRef": "m1.tiny", "networks": "none"});
                for (k, v) in extra.as_object().unwrap() {
                    s[k] = v.clone();
                }
                j!({ "server": s })
            };
            vec![
                mk(server(j!({})), &[400, 404]),
                mk(
                    server(j!({"networks": [{"uuid": ids.b_network}]})),
                    &[400, 404],
                ),
                mk(
                    server(j!({"networks": [{"port": ids.b_port}]})),
                    &[400, 404],
                ),
                mk(
                    server(j!({"security_groups": [{"name": ids.b_group}]})),
                    &[400, 404],
                ),
                mk(
                    server(
                        j!({"block_device_mapping_v2": [{"uuid": ids.b_volume, "source_type": "volume", "destination_type": "volume", "boot_index": 0}]}),
                    ),
                    &[400, 404],
                ),
            ]
        }
        ("POST", "/image/v2/images") => vec![
            mk(
                j!({"name": "x", "disk_format": "raw", "container_format": "bare", "kernel_id": ids.b_image}),
                &[400],
            ),
            mk(
                j!({"name": "x", "disk_format": "raw", "container_format": "bare", "ramdisk_id": ids.b_image}),
                &[400],
            ),
        ],
        ("POST", "/compute/v2.1/flavors") => vec![mk(
            j!({"flavor": {"name": "x", "ram": 256, "vcpus": 1, "disk": 1}}),
            &[403],
        )],
        ("POST", "/identity/v3/projects") => {
            vec![mk(j!({"project": {"name": "x"}}), &[403])]
        }
        ("POST", "/identity/v3/users") => vec![mk(
            j!({"user": {"name": "x", "default_project_id": ids.b_project}}),
            &[403],
        )],
        ("POST", "/identity/v3/auth/tokens") => vec![mk(
            j!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "alice", "domain": {"id": "default"}, "password": "alice-secret"}}}, "scope": {"project": {"id": ids.b_project}}}}),
            &[401],
        )],
        ("HEAD" | "DELETE", "/identity/v3/auth/tokens") => vec![Case {
            route: route.clone(),
            path: path.clone(),
            body: None,
            content_type: "application/json",
            subject: Some(ids.b_token.clone()),
            want: &[403],
        }],
        _ => panic!("no case for {m} {p}"),
    };
    Ok(cases)
}

/// A's own resources, for the reader dimension.
struct Own {
    network: String,
    subnet: String,
    group: String,
    rule: String,
    router: String,
    port: String,
    volume: String,
    image: String,
}

/// What a reader of project A gets on every route that writes, with A's own resources:
/// Nova's, Neutron's, Cinder's and Glance's 403. `Err` for a route a reader may use, or
/// one whose resource A does not hold in this test, with the reason.
fn reader_case(r: &Route, ids: &Ids, own: &Own) -> Result<Case, &'static str> {
    let m = r.method.as_str();
    let p = r.path.as_str();
    if matches!(m, "GET" | "HEAD") {
        return Err("a read");
    }
    if p.starts_with("/identity/") && !p.contains("/roles/") {
        return Err("identity: the user's own tokens, password and credentials");
    }
    if p.contains("os-keypairs") {
        return Err("key pairs belong to the user, not the project");
    }
    if p.contains("/servers") {
        return Err("no server of A's here (a reader's server actions: openstack_servers)");
    }
    if p.contains("/flavors") {
        return Err("flavors: an administrator's (the member case)");
    }
    let mut path = String::new();
    for seg in p.split('/').skip(1) {
        path.push('/');
        let prev = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let v = match (prev, seg) {
            ("v3", "{project}") => ids.a_project.clone(),
            ("os-quota-sets", _) | ("quotas", _) => ids.a_project.clone(),
            ("projects", _) => ids.a_project.clone(),
            ("users", _) => ids.b_user.clone(),
            ("roles", _) => ids.member_role.clone(),
            ("networks", _) => own.network.clone(),
            ("subnets", _) => own.subnet.clone(),
            ("ports", _) => own.port.clone(),
            ("security-groups", _) => own.group.clone(),
            ("security-group-rules", _) => own.rule.clone(),
            ("routers", _) => own.router.clone(),
            ("volumes", _) => own.volume.clone(),
            ("images", _) => own.image.clone(),
            ("tags", _) => "t".into(),
            ("floatingips", _) | ("snapshots", _) | ("os-server-groups", _) => {
                return Err("no resource of that kind of A's here")
            }
            (_, x) if x.starts_with('{') => panic!("reader: no case for {x} in {p}"),
            (_, x) => x.to_string(),
        };
        path.push_str(&v);
    }
    let mut content_type = "application/json";
    let body = match (m, p) {
        ("DELETE", _) => None,
        (_, x) if x.ends_with("/file") => {
            content_type = "application/octet-stream";
            None
        }
        (_, x) if x.contains("/tags/") || x.contains("/roles/") => None,
        ("PATCH", _) => {
            content_type = "application/openstack-images-v2.1-json-patch";
            Some(j!([{"op": "replace", "path": "/name", "value": "x"}]))
        }
        (_, x) if x.contains("os-quota-sets") => Some(j!({"quota_set": {"instances": 1}})),
        (_, x) if x.contains("/quotas/") => Some(j!({"quota": {"network": 1}})),
        (_, x) if x.ends_with("_router_interface") => Some(j!({"subnet_id": own.subnet})),
        ("PUT", x) if x.ends_with("/routers/{id}") => Some(j!({"router": {"name": "x"}})),
        ("PUT", x) if x.ends_with("/floatingips/{id}") => return Err("no floating IP of A's"),
        ("PUT", x) if x.ends_with("/volumes/{id}") => Some(j!({"volume": {"name": "x"}})),
        ("POST", x) if x.ends_with("/volumes/{id}/action") => {
            Some(j!({"os-extend": {"new_size": 2}}))
        }
        ("POST", "/networking/v2.0/networks") => Some(j!({"network": {"name": "x"}})),
        ("POST", "/networking/v2.0/subnets") => Some(
            j!({"subnet": {"network_id": own.network, "cidr": "10.98.0.0/24", "ip_version": 4}}),
        ),
        ("POST", "/networking/v2.0/ports") => Some(j!({"port": {"network_id": own.network}})),
        ("POST", "/networking/v2.0/security-groups") => Some(j!({"security_group": {"name": "x"}})),
        ("POST", "/networking/v2.0/security-group-rules") => Some(
            j!({"security_group_rule": {"security_group_id": own.group, "direction": "ingress"}}),
        ),
        ("POST", "/networking/v2.0/routers") => Some(j!({"router": {"name": "x"}})),
        ("POST", "/networking/v2.0/floatingips") => {
            Some(j!({"floatingip": {"floating_network_id": ids.public}}))
        }
        ("POST", x) if x.ends_with("/volumes") => Some(j!({"volume": {"size": 1}})),
        ("POST", x) if x.ends_with("/snapshots") => {
            Some(j!({"snapshot": {"volume_id": own.volume}}))
        }
        ("POST", "/compute/v2.1/os-server-groups") => {
            Some(j!({"server_group": {"name": "x", "policies": ["affinity"]}}))
        }
        ("POST", "/image/v2/images") => {
            Some(j!({"name": "x", "disk_format": "raw", "container_format": "bare"}))
        }
        _ => panic!("reader: no body for {m} {p}"),
    };
    Ok(Case {
        route: r.clone(),
        path,
        body,
        content_type,
        subject: None,
        want: &[403],
    })
}

/// A console route with B's ids: the form (field, value) pairs it is sent with and the
/// statuses the console answers; `Err` for a route that names nothing of a project's.
fn console_case(r: &Route, ids: &Ids, node: &str) -> Result<Vec<ConsoleCase>, &'static str> {
    let m = r.method.as_str();
    let p = r.path.as_str();
    let fill = |path: &str| {
        path.replace("/instances/{id}", &format!("/instances/{}", ids.b_server))
            .replace("/networks/{id}", &format!("/networks/{}", ids.b_network))
            .replace(
                "/security-groups/{id}",
                &format!("/security-groups/{}", ids.b_group),
            )
            .replace("/rules/{rule}", &format!("/rules/{}", ids.b_rule))
            .replace("/volumes/{id}", &format!("/volumes/{}", ids.b_volume))
            .replace("/images/{id}", &format!("/images/{}", ids.b_image))
            .replace(
                "/floating-ips/{id}",
                &format!("/floating-ips/{}", ids.b_fip),
            )
            .replace("/keypairs/{name}", &format!("/keypairs/{}", ids.b_keypair))
            .replace(
                "/users/{id}/{op}",
                &format!("/users/{}/disable", ids.b_user),
            )
            .replace("/nodes/requests/{id}", "/nodes/requests/0000000000000000")
            .replace("/nodes/{id}", &format!("/nodes/{node}"))
    };
    let one = |fields: Vec<(&'static str, String)>, want: &'static [u16]| {
        vec![ConsoleCase {
            method: m.to_string(),
            path: fill(p),
            fields,
            want,
        }]
    };
    let admin_only = p.starts_with("/admin") || p.starts_with("/nodes/");
    Ok(match (m, p) {
        (_, "/static/{*file}") => return Err("static files"),
        (_, "/login") | ("POST", "/logout") => return Err("signing in and out"),
        ("GET", _) if !p.contains('{') => return Err("a page: checked for B's ids below"),
        ("POST", "/keypairs") | ("POST", "/keypairs/generate") => {
            return Err("its form names nothing of another project's")
        }
        ("POST", "/networks") | ("POST", "/security-groups") => {
            return Err("its form names nothing of another project's")
        }
        (_, _) if admin_only => one(vec![("reason", "x".into())], &[403]),
        ("GET", _) => one(vec![], &[404]),
        ("ANY", "/instances/{id}/console/ws") => one(vec![], &[404]),
        ("POST", "/instances/{id}/action") => one(vec![("do", "stop".into())], &[404]),
        ("POST", "/instances/{id}/attach") | ("POST", "/instances/{id}/detach") => {
            one(vec![("volume", ids.b_volume.clone())], &[404])
        }
        ("POST", "/instances") => {
            let base = |k: &'static str, v: &str| {
                vec![
                    ("name", "x".to_string()),
                    ("flavor", "m1.tiny".to_string()),
                    (k, v.to_string()),
                ]
            };
            let mk = |fields, want| ConsoleCase {
                method: m.to_string(),
                path: p.to_string(),
                fields,
                want,
            };
            vec![
                mk(base("image", &ids.b_image), &[400, 404]),
                mk(base("volume", &ids.b_volume), &[400, 404]),
            ]
        }
        ("POST", "/floating-ips") => one(vec![("network", ids.b_network.clone())], &[400, 404]),
        ("POST", "/floating-ips/associate") => one(
            vec![
                ("fip", ids.b_fip.clone()),
                ("instance", ids.b_server.clone()),
            ],
            &[404],
        ),
        // The console answers a choice outside its form's list as a form error (400).
        ("POST", "/security-groups/rules") => one(
            vec![
                ("group", ids.b_group.clone()),
                ("direction", "ingress".into()),
                ("protocol", "tcp".into()),
                ("ports", "22".into()),
            ],
            &[400, 404],
        ),
        ("POST", "/volumes") => one(
            vec![
                ("name", "x".into()),
                ("size", "1".into()),
                ("image", ids.b_image.clone()),
            ],
            &[400, 404],
        ),
        ("POST", "/images") => one(
            vec![("name", "x".into()), ("kernel_id", ids.b_image.clone())],
            &[400, 404],
        ),
        ("PUT", "/images/{id}/file") => one(vec![], &[404]),
        ("POST", "/project") => one(vec![("project", ids.b_project.clone())], &[403, 404]),
        ("POST", x) if x.contains('{') => one(vec![], &[404]),
        _ => panic!("no console case for {m} {p}"),
    })
}

struct ConsoleCase {
    method: String,
    path: String,
    fields: Vec<(&'static str, String)>,
    want: &'static [u16],
}

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
    let b_volume = id(&ja(
        &b,
        &["volume", "create", "--size", "1", "vb", "-f", "json"],
    ));
    common::wait_for(std::time::Duration::from_secs(60), || {
        (ja(&b, &["volume", "show", "vb", "-f", "json"])["status"] == "available").then_some(())
    })
    .expect("B's volume available");
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
    let a_volume = id(&ja(
        &a,
        &["volume", "create", "--size", "1", "va", "-f", "json"],
    ));
    common::wait_for(std::time::Duration::from_secs(60), || {
        (ja(&a, &["volume", "show", "va", "-f", "json"])["status"] == "available").then_some(())
    })
    .expect("A's volume available");
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
