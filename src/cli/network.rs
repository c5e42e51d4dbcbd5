//! `strata network ...`, `strata subnet ...`, `strata port ...`.

use std::path::Path;

use clap::Subcommand;
use serde_json::{json, Value};

use super::client;
use super::output::{details, field, table};
use super::CliError;

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a tenant network (its own VXLAN segment).
    Create {
        name: String,
        #[arg(long)]
        project: Option<String>,
        /// Usable by every project.
        #[arg(long)]
        shared: bool,
        /// The external network floating IPs come from.
        #[arg(long)]
        external: bool,
        #[arg(long)]
        mtu: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        network: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a network and its subnets (refused while it has ports).
    Delete { network: String },
}

#[derive(Subcommand, Debug)]
pub enum SubnetCmd {
    /// Create an IPv4 subnet on a network; Strata answers DHCP on it unless --no-dhcp.
    Create {
        name: String,
        #[arg(long)]
        network: String,
        /// e.g. 10.0.0.0/24
        #[arg(long)]
        cidr: String,
        /// Default: the first host address.
        #[arg(long, conflicts_with = "no_gateway")]
        gateway: Option<String>,
        #[arg(long)]
        no_gateway: bool,
        /// DNS server handed out by DHCP (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// Allocation pool START-END (repeatable; default: all host addresses).
        #[arg(long)]
        pool: Vec<String>,
        /// Host route DESTINATION=NEXTHOP (repeatable).
        #[arg(long)]
        route: Vec<String>,
        #[arg(long)]
        no_dhcp: bool,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        subnet: String,
        #[arg(long)]
        json: bool,
    },
    Delete {
        subnet: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PortCmd {
    /// Create a port: a MAC and addresses on a network, optionally bound to a node.
    Create {
        #[arg(long)]
        network: String,
        #[arg(long, default_value = "")]
        name: String,
        /// A fixed address (repeatable); default: the next free one of the first subnet.
        #[arg(long)]
        ip: Vec<String>,
        /// Take the address from this subnet.
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        mac: Option<String>,
        /// The node that carries it (its id).
        #[arg(long)]
        host: Option<String>,
        /// Security group (repeatable; default: the project's `default` group).
        #[arg(long)]
        secgroup: Vec<String>,
        /// No anti-spoofing and no filtering for this port.
        #[arg(long)]
        no_port_security: bool,
        #[arg(long)]
        json: bool,
    },
    /// Replace a port's security groups, or turn its port security off or on.
    SetSecurity {
        port: String,
        #[arg(long)]
        secgroup: Vec<String>,
        #[arg(long, conflicts_with = "port_security")]
        no_port_security: bool,
        #[arg(long)]
        port_security: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        port: String,
        #[arg(long)]
        json: bool,
    },
    /// Bind a port to a node (its TAP moves there), or unbind it.
    Bind {
        port: String,
        #[arg(long, conflicts_with = "unbind")]
        host: Option<String>,
        #[arg(long)]
        unbind: bool,
    },
    Delete {
        port: String,
    },
}

fn print(v: &Value, json: bool, human: fn(&Value) -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", human(v));
    }
}

fn ips(p: &Value) -> String {
    p["fixed_ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["ip"].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn network_human(n: &Value) -> String {
    let mut out = details(&[
        ("id", field(n, "id")),
        ("name", field(n, "name")),
        ("project", field(n, "project")),
        ("vni", field(n, "vni")),
        ("mtu", field(n, "mtu")),
        ("shared", field(n, "shared")),
        ("external", field(n, "external")),
        ("ports", field(n, "ports")),
    ]);
    for s in n["subnets"].as_array().cloned().unwrap_or_default() {
        out += &format!(
            "{:14} {} {} ({})\n",
            "subnet",
            field(&s, "cidr"),
            field(&s, "name"),
            field(&s, "id")
        );
    }
    out
}

fn networks_human(v: &Value) -> String {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|n| {
            let subnets = n["subnets"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s["cidr"].as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            vec![field(n, "id"), field(n, "name"), field(n, "vni"), subnets]
        })
        .collect();
    table(&["ID", "NAME", "VNI", "SUBNETS"], rows)
}

fn subnet_human(s: &Value) -> String {
    details(&[
        ("id", field(s, "id")),
        ("name", field(s, "name")),
        ("network", field(s, "network")),
        ("cidr", field(s, "cidr")),
        ("gateway", field(s, "gateway_ip")),
        ("dhcp", field(s, "enable_dhcp")),
        ("service ip", field(s, "service_ip")),
        ("dns", s["dns_nameservers"].to_string()),
        ("pools", s["allocation_pools"].to_string()),
    ])
}

fn subnets_human(v: &Value) -> String {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                field(s, "id"),
                field(s, "name"),
                field(s, "cidr"),
                field(s, "network"),
            ]
        })
        .collect();
    table(&["ID", "NAME", "CIDR", "NETWORK"], rows)
}

fn port_human(p: &Value) -> String {
    details(&[
        ("id", field(p, "id")),
        ("name", field(p, "name")),
        ("network", field(p, "network")),
        ("mac", field(p, "mac")),
        ("ips", ips(p)),
        ("host", field(p, "host")),
        ("status", field(p, "status")),
        ("port security", field(p, "port_security")),
        ("secgroups", p["security_groups"].to_string()),
        ("tap", field(p, "tap")),
        ("detail", field(p, "detail")),
    ])
}

fn ports_human(v: &Value) -> String {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            vec![
                field(p, "id"),
                field(p, "mac"),
                ips(p),
                field(p, "host"),
                field(p, "status"),
            ]
        })
        .collect();
    table(&["ID", "MAC", "IPS", "HOST", "STATUS"], rows)
}

pub async fn network(socket: &Path, cmd: &NetworkCmd) -> Result<(), CliError> {
    match cmd {
        NetworkCmd::Create {
            name,
            project,
            shared,
            external,
            mtu,
            json,
        } => {
            let body = json!({"name": name, "project": project, "shared": shared, "external": external, "mtu": mtu});
            let v = client::call(socket, "POST", "/v1/networks", Some(body)).await?;
            print(&v, *json, network_human);
        }
        NetworkCmd::List { json } => {
            let v = client::call(socket, "GET", "/v1/networks", None).await?;
            print(&v, *json, networks_human);
        }
        NetworkCmd::Show { network, json } => {
            let v = client::call(socket, "GET", &format!("/v1/networks/{network}"), None).await?;
            print(&v, *json, network_human);
        }
        NetworkCmd::Delete { network } => {
            let v =
                client::call(socket, "DELETE", &format!("/v1/networks/{network}"), None).await?;
            println!(
                "deleted network {} ({})",
                field(&v, "name"),
                field(&v, "id")
            );
        }
    }
    Ok(())
}

pub async fn subnet(socket: &Path, cmd: &SubnetCmd) -> Result<(), CliError> {
    match cmd {
        SubnetCmd::Create {
            name,
            network,
            cidr,
            gateway,
            no_gateway,
            dns,
            pool,
            route,
            no_dhcp,
            json,
        } => {
            let pools = pool
                .iter()
                .map(|p| {
                    let (s, e) = p
                        .split_once('-')
                        .ok_or_else(|| CliError::Usage(format!("pool {p:?} is not START-END")))?;
                    Ok(json!({"start": s, "end": e}))
                })
                .collect::<Result<Vec<_>, CliError>>()?;
            let routes = route
                .iter()
                .map(|r| {
                    let (d, n) = r.split_once('=').ok_or_else(|| {
                        CliError::Usage(format!("route {r:?} is not DESTINATION=NEXTHOP"))
                    })?;
                    Ok(json!({"destination": d, "nexthop": n}))
                })
                .collect::<Result<Vec<_>, CliError>>()?;
            let gateway = if *no_gateway {
                Some(String::new())
            } else {
                gateway.clone()
            };
            let body = json!({
                "name": name, "network": network, "cidr": cidr, "gateway_ip": gateway,
                "dns_nameservers": dns, "allocation_pools": pools, "host_routes": routes,
                "enable_dhcp": !no_dhcp,
            });
            let v = client::call(socket, "POST", "/v1/subnets", Some(body)).await?;
            print(&v, *json, subnet_human);
        }
        SubnetCmd::List { json } => {
            let v = client::call(socket, "GET", "/v1/subnets", None).await?;
            print(&v, *json, subnets_human);
        }
        SubnetCmd::Show { subnet, json } => {
            let v = client::call(socket, "GET", &format!("/v1/subnets/{subnet}"), None).await?;
            print(&v, *json, subnet_human);
        }
        SubnetCmd::Delete { subnet } => {
            let v = client::call(socket, "DELETE", &format!("/v1/subnets/{subnet}"), None).await?;
            println!(
                "deleted subnet {} ({})",
                field(&v, "name"),
                field(&v, "cidr")
            );
        }
    }
    Ok(())
}

pub async fn port(socket: &Path, cmd: &PortCmd) -> Result<(), CliError> {
    match cmd {
        PortCmd::Create {
            network,
            name,
            ip,
            subnet,
            mac,
            host,
            secgroup,
            no_port_security,
            json,
        } => {
            let fixed: Option<Vec<Value>> = if !ip.is_empty() {
                Some(
                    ip.iter()
                        .map(|a| json!({"ip": a, "subnet": subnet}))
                        .collect(),
                )
            } else {
                subnet.as_ref().map(|s| vec![json!({"subnet": s})])
            };
            let groups = (!secgroup.is_empty()).then_some(secgroup);
            let body = json!({"network": network, "name": name, "fixed_ips": fixed, "mac": mac,
                "host": host, "security_groups": groups, "port_security": !no_port_security});
            let v = client::call(socket, "POST", "/v1/ports", Some(body)).await?;
            print(&v, *json, port_human);
        }
        PortCmd::List { json } => {
            let v = client::call(socket, "GET", "/v1/ports", None).await?;
            print(&v, *json, ports_human);
        }
        PortCmd::Show { port, json } => {
            let v = client::call(socket, "GET", &format!("/v1/ports/{port}"), None).await?;
            print(&v, *json, port_human);
        }
        PortCmd::Bind { port, host, unbind } => {
            if host.is_none() && !unbind {
                return Err(CliError::Usage("give --host NODE or --unbind".into()));
            }
            let v = client::call(
                socket,
                "POST",
                &format!("/v1/ports/{port}/bind"),
                Some(json!({"host": host})),
            )
            .await?;
            print!("{}", port_human(&v));
        }
        PortCmd::SetSecurity {
            port,
            secgroup,
            no_port_security,
            port_security,
        } => {
            let ps = if *no_port_security {
                Some(false)
            } else if *port_security {
                Some(true)
            } else {
                None
            };
            let groups = (!secgroup.is_empty()).then_some(secgroup);
            let v = client::call(
                socket,
                "POST",
                &format!("/v1/ports/{port}/security"),
                Some(json!({"security_groups": groups, "port_security": ps})),
            )
            .await?;
            print!("{}", port_human(&v));
        }
        PortCmd::Delete { port } => {
            client::call(socket, "DELETE", &format!("/v1/ports/{port}"), None).await?;
            println!("deleted port {port}");
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum SecgroupCmd {
    /// Create a security group (it starts with all egress allowed).
    Create {
        name: String,
        #[arg(long)]
        project: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        secgroup: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a group no port uses.
    Delete {
        secgroup: String,
    },
    /// Add a rule: traffic it matches is allowed (everything else to a port is dropped).
    RuleAdd {
        secgroup: String,
        /// ingress (to the port) or egress (from it).
        #[arg(long, default_value = "ingress")]
        direction: String,
        /// tcp, udp, icmp, any, or an IP protocol number.
        #[arg(long)]
        protocol: Option<String>,
        /// A port or a range (22, 8000-8080); for icmp: TYPE or TYPE-CODE.
        #[arg(long)]
        port: Option<String>,
        #[arg(long, conflicts_with = "remote_group")]
        remote_ip: Option<String>,
        #[arg(long)]
        remote_group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    RuleDelete {
        secgroup: String,
        rule: String,
    },
}

fn secgroup_human(g: &Value) -> String {
    let mut out = details(&[
        ("id", field(g, "id")),
        ("name", field(g, "name")),
        ("project", field(g, "project")),
    ]);
    for r in g["rules"].as_array().cloned().unwrap_or_default() {
        let ports = match (r["port_range_min"].as_u64(), r["port_range_max"].as_u64()) {
            (Some(a), Some(b)) if a != b => format!(" {a}-{b}"),
            (Some(a), _) => format!(" {a}"),
            _ => String::new(),
        };
        let remote = r["remote_ip_prefix"]
            .as_str()
            .map(|p| format!(" from/to {p}"))
            .or_else(|| r["remote_group"].as_str().map(|g| format!(" group {g}")))
            .unwrap_or_default();
        out += &format!(
            "{:14} {} {} {}{}{}\n",
            "rule",
            field(&r, "id"),
            field(&r, "direction"),
            r["protocol"].as_str().unwrap_or("any"),
            ports,
            remote
        );
    }
    out
}

fn secgroups_human(v: &Value) -> String {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|g| {
            vec![
                field(g, "id"),
                field(g, "name"),
                field(g, "project"),
                g["rules"]
                    .as_array()
                    .map(|a| a.len())
                    .unwrap_or(0)
                    .to_string(),
            ]
        })
        .collect();
    table(&["ID", "NAME", "PROJECT", "RULES"], rows)
}

pub async fn secgroup(socket: &Path, cmd: &SecgroupCmd) -> Result<(), CliError> {
    match cmd {
        SecgroupCmd::Create {
            name,
            project,
            description,
            json,
        } => {
            let body = json!({"name": name, "project": project, "description": description});
            let v = client::call(socket, "POST", "/v1/secgroups", Some(body)).await?;
            print(&v, *json, secgroup_human);
        }
        SecgroupCmd::List { json } => {
            let v = client::call(socket, "GET", "/v1/secgroups", None).await?;
            print(&v, *json, secgroups_human);
        }
        SecgroupCmd::Show { secgroup, json } => {
            let v = client::call(socket, "GET", &format!("/v1/secgroups/{secgroup}"), None).await?;
            print(&v, *json, secgroup_human);
        }
        SecgroupCmd::Delete { secgroup } => {
            let v =
                client::call(socket, "DELETE", &format!("/v1/secgroups/{secgroup}"), None).await?;
            println!(
                "deleted security group {} ({})",
                field(&v, "name"),
                field(&v, "id")
            );
        }
        SecgroupCmd::RuleAdd {
            secgroup,
            direction,
            protocol,
            port,
            remote_ip,
            remote_group,
            json,
        } => {
            let (lo, hi) = match port.as_deref() {
                None => (None, None),
                Some(p) => {
                    let bad = || CliError::Usage(format!("port {p:?} is not N or N-M"));
                    let (a, b) = p.split_once('-').unwrap_or((p, p));
                    let a: u32 = a.trim().parse().map_err(|_| bad())?;
                    let b: u32 = b.trim().parse().map_err(|_| bad())?;
                    (Some(a), Some(b))
                }
            };
            let body = json!({"direction": direction, "protocol": protocol,
                "port_range_min": lo, "port_range_max": hi,
                "remote_ip_prefix": remote_ip, "remote_group": remote_group});
            let v = client::call(
                socket,
                "POST",
                &format!("/v1/secgroups/{secgroup}/rules"),
                Some(body),
            )
            .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("rule {} added to {secgroup}", field(&v, "id"));
            }
        }
        SecgroupCmd::RuleDelete { secgroup, rule } => {
            client::call(
                socket,
                "DELETE",
                &format!("/v1/secgroups/{secgroup}/rules/{rule}"),
                None,
            )
            .await?;
            println!("deleted rule {rule} of {secgroup}");
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum RouterCmd {
    /// Create a router (placed on a live node; moved if that node is lost).
    Create {
        name: String,
        #[arg(long)]
        project: Option<String>,
        /// An external network for its gateway (SNAT for its subnets).
        #[arg(long)]
        external: Option<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        router: String,
        #[arg(long)]
        json: bool,
    },
    /// Set the external gateway (or --clear it).
    SetGateway {
        router: String,
        #[arg(long, conflicts_with = "clear")]
        network: Option<String>,
        #[arg(long)]
        clear: bool,
    },
    /// Join a tenant subnet (the router takes its gateway address).
    AddInterface {
        router: String,
        #[arg(long)]
        subnet: String,
    },
    RemoveInterface {
        router: String,
        #[arg(long)]
        subnet: String,
    },
    Delete {
        router: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum FloatingIpCmd {
    /// Allocate a floating IP on an external network, optionally mapped to a port.
    Create {
        #[arg(long)]
        network: String,
        #[arg(long)]
        port: Option<String>,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        fip: String,
        #[arg(long)]
        json: bool,
    },
    /// Map it to a port (or --unset).
    Set {
        fip: String,
        #[arg(long, conflicts_with = "unset")]
        port: Option<String>,
        #[arg(long)]
        unset: bool,
    },
    Delete {
        fip: String,
    },
}

fn router_human(r: &Value) -> String {
    details(&[
        ("id", field(r, "id")),
        ("name", field(r, "name")),
        ("project", field(r, "project")),
        ("host", field(r, "host")),
        ("gateway port", field(r, "gateway_port")),
        ("interfaces", r["interface_ports"].to_string()),
    ])
}

fn routers_human(v: &Value) -> String {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| vec![field(r, "id"), field(r, "name"), field(r, "host")])
        .collect();
    table(&["ID", "NAME", "HOST"], rows)
}

fn fip_human(f: &Value) -> String {
    details(&[
        ("id", field(f, "id")),
        ("ip", field(f, "ip")),
        ("network", field(f, "network")),
        ("port", field(f, "port")),
        ("fixed ip", field(f, "fixed_ip")),
        ("router", field(f, "router")),
    ])
}

fn fips_human(v: &Value) -> String {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| {
            vec![
                field(f, "id"),
                field(f, "ip"),
                field(f, "fixed_ip"),
                field(f, "port"),
            ]
        })
        .collect();
    table(&["ID", "IP", "FIXED IP", "PORT"], rows)
}

pub async fn router(socket: &Path, cmd: &RouterCmd) -> Result<(), CliError> {
    match cmd {
        RouterCmd::Create {
            name,
            project,
            external,
            json,
        } => {
            let body = json!({"name": name, "project": project, "external_network": external});
            let v = client::call(socket, "POST", "/v1/routers", Some(body)).await?;
            print(&v, *json, router_human);
        }
        RouterCmd::List { json } => {
            let v = client::call(socket, "GET", "/v1/routers", None).await?;
            print(&v, *json, routers_human);
        }
        RouterCmd::Show { router, json } => {
            let v = client::call(socket, "GET", &format!("/v1/routers/{router}"), None).await?;
            print(&v, *json, router_human);
        }
        RouterCmd::SetGateway {
            router,
            network,
            clear,
        } => {
            if network.is_none() && !clear {
                return Err(CliError::Usage("give --network NET or --clear".into()));
            }
            let v = client::call(
                socket,
                "POST",
                &format!("/v1/routers/{router}/gateway"),
                Some(json!({"network": network})),
            )
            .await?;
            print!("{}", router_human(&v));
        }
        RouterCmd::AddInterface { router, subnet } => {
            let v = client::call(
                socket,
                "POST",
                &format!("/v1/routers/{router}/interfaces"),
                Some(json!({"subnet": subnet})),
            )
            .await?;
            print!("{}", router_human(&v));
        }
        RouterCmd::RemoveInterface { router, subnet } => {
            let v = client::call(
                socket,
                "POST",
                &format!("/v1/routers/{router}/interfaces/remove"),
                Some(json!({"subnet": subnet})),
            )
            .await?;
            print!("{}", router_human(&v));
        }
        RouterCmd::Delete { router } => {
            let v = client::call(socket, "DELETE", &format!("/v1/routers/{router}"), None).await?;
            println!("deleted router {} ({})", field(&v, "name"), field(&v, "id"));
        }
    }
    Ok(())
}

pub async fn floatingip(socket: &Path, cmd: &FloatingIpCmd) -> Result<(), CliError> {
    match cmd {
        FloatingIpCmd::Create {
            network,
            port,
            project,
            json,
        } => {
            let body = json!({"network": network, "port": port, "project": project});
            let v = client::call(socket, "POST", "/v1/floatingips", Some(body)).await?;
            print(&v, *json, fip_human);
        }
        FloatingIpCmd::List { json } => {
            let v = client::call(socket, "GET", "/v1/floatingips", None).await?;
            print(&v, *json, fips_human);
        }
        FloatingIpCmd::Show { fip, json } => {
            let v = client::call(socket, "GET", &format!("/v1/floatingips/{fip}"), None).await?;
            print(&v, *json, fip_human);
        }
        FloatingIpCmd::Set { fip, port, unset } => {
            if port.is_none() && !unset {
                return Err(CliError::Usage("give --port PORT or --unset".into()));
            }
            let v = client::call(
                socket,
                "POST",
                &format!("/v1/floatingips/{fip}/port"),
                Some(json!({"port": port})),
            )
            .await?;
            print!("{}", fip_human(&v));
        }
        FloatingIpCmd::Delete { fip } => {
            let v = client::call(socket, "DELETE", &format!("/v1/floatingips/{fip}"), None).await?;
            println!("released floating IP {}", field(&v, "ip"));
        }
    }
    Ok(())
}
