//! What the matrix sends on each route: the resources of B's (and A's) that fill its
//! parameters, the bodies and forms that name them, and the answer each must get.

use serde_json::{json as j, Value};

use super::routes::Route;

/// B's world, and the bits of A's that requests name.
pub struct Ids {
    pub a_project: String,
    pub b_project: String,
    pub b_user: String,
    pub member_role: String,
    pub b_app_cred: String,
    pub b_token: String,
    pub b_keypair: String,
    pub b_image: String,
    pub b_network: String,
    pub b_subnet: String,
    pub b_port: String,
    pub b_group: String,
    pub b_rule: String,
    pub b_router: String,
    pub b_fip: String,
    pub b_volume: String,
    pub b_snapshot: String,
    pub b_server: String,
    pub b_server_group: String,
    pub flavor: String,
    pub a_network: String,
    pub a_subnet: String,
    pub a_group: String,
    pub a_router: String,
    pub public: String,
}

impl Ids {
    /// Every id of B's that must never show in what A reads.
    pub fn of_b(&self) -> Vec<&str> {
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
pub struct Case {
    pub route: Route,
    pub path: String,
    pub body: Option<Value>,
    pub content_type: &'static str,
    pub subject: Option<String>,
    pub want: &'static [u16],
}

/// Fills a route's parameters with B's resources; `None` for a route whose parameters
/// name nothing of a project's (public things), with the reason.
pub fn fill(path: &str, ids: &Ids) -> Result<String, &'static str> {
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
            ("os-interface", _) => ids.b_port.clone(),
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
pub fn url_case(route: &Route, path: String, ids: &Ids) -> Case {
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
        ("POST", x) if x.ends_with("/os-interface") => {
            Some(j!({"interfaceAttachment": {"port_id": ids.b_port}}))
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
pub fn body_cases(route: &Route, ids: &Ids) -> Result<Vec<Case>, &'static str> {
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
pub struct Own {
    pub network: String,
    pub subnet: String,
    pub group: String,
    pub rule: String,
    pub router: String,
    pub port: String,
    pub volume: String,
    pub image: String,
}

/// What a reader of project A gets on every route that writes, with A's own resources:
/// Nova's, Neutron's, Cinder's and Glance's 403. `Err` for a route a reader may use, or
/// one whose resource A does not hold in this test, with the reason.
pub fn reader_case(r: &Route, ids: &Ids, own: &Own) -> Result<Case, &'static str> {
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
pub fn console_case(r: &Route, ids: &Ids, node: &str) -> Result<Vec<ConsoleCase>, &'static str> {
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

pub struct ConsoleCase {
    pub method: String,
    pub path: String,
    pub fields: Vec<(&'static str, String)>,
    pub want: &'static [u16],
}
