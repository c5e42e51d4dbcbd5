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
        #[arg(long)]
        json: bool,
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
            let body = json!({"network": network, "name": name, "fixed_ips": fixed, "mac": mac, "host": host});
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
        PortCmd::Delete { port } => {
            client::call(socket, "DELETE", &format!("/v1/ports/{port}"), None).await?;
            println!("deleted port {port}");
        }
    }
    Ok(())
}
