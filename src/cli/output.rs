//! Human-readable tables for the CLI.

use serde_json::Value;

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:w$}", c, w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
            + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out += &line(r);
    }
    out
}

/// `strata node requests`: servers asking to join without a token.
pub fn join_requests(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            vec![
                r["code"].as_str().unwrap_or("?").to_string(),
                r["hostname"].as_str().unwrap_or("").to_string(),
                r["addr"].as_str().unwrap_or("").to_string(),
                r["node"].as_str().unwrap_or("").to_string(),
                match r["decision"]["accepted"].as_bool() {
                    None => "waiting".to_string(),
                    Some(true) => format!(
                        "accepted by {}",
                        r["decision"]["by"].as_str().unwrap_or("?")
                    ),
                    Some(false) => format!(
                        "rejected by {}",
                        r["decision"]["by"].as_str().unwrap_or("?")
                    ),
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no server is asking to join\n".into();
    }
    table(&["CODE", "HOST", "ADDRESS", "NODE", "STATE"], rows)
}

pub fn nodes(v: &Value) -> String {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|n| {
            vec![
                n["id"].as_str().unwrap_or("?").to_string(),
                n["hostname"].as_str().unwrap_or("").to_string(),
                n["addr"].as_str().unwrap_or("").to_string(),
                n["liveness"].as_str().unwrap_or("").to_string(),
                format!(
                    "{}{}",
                    n["raft"].as_str().unwrap_or(""),
                    if n["leader"].as_bool() == Some(true) {
                        " (leader)"
                    } else {
                        ""
                    }
                ),
                n["cores"].to_string(),
                gib(n["memory_bytes"].as_u64().unwrap_or(0)),
                n["hypervisor"].as_str().unwrap_or("").to_string(),
                n["version"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "HOST",
            "ADDRESS",
            "STATE",
            "RAFT",
            "CORES",
            "MEMORY",
            "HYPERVISOR",
            "VERSION",
        ],
        rows,
    )
}

pub fn status(v: &Value) -> String {
    let total = v["nodes"].as_array().map(|a| a.len()).unwrap_or(0);
    let mut out = format!(
        "cluster:  {} ({})\nnode:     {}\nleader:   {}\nraft:     {} term {}, commit {}, applied {}\nvoters:   {}\nlearners: {}\nnodes:    {} of {} alive\n\n",
        v["cluster_name"].as_str().unwrap_or("-"),
        v["cluster_id"].as_str().unwrap_or("-"),
        v["node"].as_str().unwrap_or("?"),
        v["leader"].as_str().unwrap_or("none (no quorum?)"),
        v["raft_state"].as_str().unwrap_or("?"),
        v["term"],
        v["commit_index"],
        v["applied_index"],
        v["voters"].as_array().map(|a| a.len()).unwrap_or(0),
        v["learners"].as_array().map(|a| a.len()).unwrap_or(0),
        v["nodes_alive"],
        total,
    );
    out += &nodes(&v["nodes"]);
    out
}

pub fn events(v: &Value) -> String {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let ms = e["at_ms"].as_u64().unwrap_or(0);
            let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
                .map(|t| {
                    format!(
                        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                        t.year(),
                        t.month() as u8,
                        t.day(),
                        t.hour(),
                        t.minute(),
                        t.second()
                    )
                })
                .unwrap_or_default();
            vec![
                t,
                e["node"].as_str().unwrap_or("").to_string(),
                e["kind"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(&["TIME (UTC)", "NODE", "KIND", "MESSAGE"], rows)
}

pub fn vms(v: &Value) -> String {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            vec![
                m["id"].as_str().unwrap_or("?").to_string(),
                m["name"].as_str().unwrap_or("").to_string(),
                m["state"].as_str().unwrap_or("").to_string(),
                m["flavor"].as_str().unwrap_or("").to_string(),
                m["vcpus"].to_string(),
                format!("{} MiB", m["ram_mb"]),
                m["node"].as_str().unwrap_or("").to_string(),
                m["driver"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "NAME", "STATE", "FLAVOR", "VCPUS", "MEMORY", "NODE", "DRIVER",
        ],
        rows,
    )
}

/// A field of a JSON object as text (empty for null or missing).
pub(super) fn field(m: &Value, k: &str) -> String {
    match &m[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `label  value` lines, skipping empty values.
pub(super) fn details(rows: &[(&str, String)]) -> String {
    rows.iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(label, v)| format!("{label:14} {v}\n"))
        .collect()
}

pub fn vm(m: &Value) -> String {
    let s = |k: &str| field(m, k);
    details(&[
        ("id", s("id")),
        ("name", s("name")),
        ("state", s("state")),
        ("reason", s("reason")),
        ("power", s("power")),
        ("flavor", s("flavor")),
        ("vcpus", s("vcpus")),
        ("memory", format!("{} MiB", s("ram_mb"))),
        ("node", s("node")),
        ("driver", s("driver")),
        ("boots", s("boots")),
        ("kernel", m["boot"]["kernel"].as_str().unwrap_or("").into()),
        ("initrd", m["boot"]["initrd"].as_str().unwrap_or("").into()),
        (
            "cmdline",
            m["boot"]["cmdline"].as_str().unwrap_or("").into(),
        ),
        ("disk", m["boot"]["disk"].as_str().unwrap_or("").into()),
        ("volume", s("volume")),
        ("anti-affinity", s("anti_affinity_group")),
        ("placement", s("placement")),
    ])
}

pub fn flavors(v: &Value) -> String {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            vec![
                f["name"].as_str().unwrap_or("").to_string(),
                f["vcpus"].to_string(),
                format!("{} MiB", f["ram_mb"]),
                format!("{} GB", f["disk_gb"]),
            ]
        })
        .collect();
    table(&["NAME", "VCPUS", "MEMORY", "DISK"], rows)
}

fn bytes(v: &Value) -> String {
    let b = v.as_u64().unwrap_or(0);
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", b >> 20)
    }
}

pub fn volumes(v: &Value) -> String {
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            vec![
                m["id"].as_str().unwrap_or("?").to_string(),
                m["name"].as_str().unwrap_or("").to_string(),
                bytes(&m["size"]),
                m["status"].as_str().unwrap_or("").to_string(),
                m["redundancy"].as_str().unwrap_or("").to_string(),
                m["attached_to"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "SIZE", "STATUS", "REDUNDANCY", "ATTACHED TO"],
        rows,
    )
}

pub fn volume(m: &Value) -> String {
    let s = |k: &str| field(m, k);
    let mut out = details(&[
        ("id", s("id")),
        ("name", s("name")),
        (
            "size",
            format!("{} ({} bytes)", bytes(&m["size"]), s("size")),
        ),
        ("status", s("status")),
        ("redundancy", s("redundancy")),
        ("replication", s("replication")),
        ("generation", s("generation")),
        ("attached to", s("attached_to")),
        ("used by VM", s("used_by")),
        ("placement", s("placement")),
    ]);
    for r in m["replica_nodes"].as_array().cloned().unwrap_or_default() {
        out += &format!(
            "{:14} node {} ({}): {}{}\n",
            "replica",
            r["node"].as_str().unwrap_or("?"),
            r["hostname"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or("?"),
            if r["present"] == true {
                ""
            } else {
                ", region not reported yet"
            }
        );
    }
    if let Some(p) = m["parent"].as_object() {
        out += &format!(
            "{:14} snapshot {} of volume {}\n",
            "clone of",
            p.get("snapshot").and_then(|v| v.as_str()).unwrap_or("?"),
            p.get("volume").and_then(|v| v.as_str()).unwrap_or("?")
        );
    }
    for sn in m["snapshots"].as_array().cloned().unwrap_or_default() {
        out += &format!(
            "{:14} {} ({}): {}, {}{}\n",
            "snapshot",
            sn["name"].as_str().unwrap_or("?"),
            sn["id"].as_str().unwrap_or("?"),
            sn["state"].as_str().unwrap_or("?"),
            bytes(&sn["size"]),
            match sn["detail"].as_str() {
                Some(d) if !d.is_empty() => format!(" ({d})"),
                _ => String::new(),
            }
        );
    }
    out
}

/// An openrc (shell) or clouds.yaml for the OpenStack API. Without a password, the openrc
/// asks for it when sourced (as Horizon's does) and the clouds.yaml leaves it out.
pub fn openrc(
    auth_url: &str,
    cacert: Option<&str>,
    project: &str,
    user: &str,
    password: Option<&str>,
    format: &str,
) -> Result<String, String> {
    let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    match format {
        "openrc" => {
            let mut o = String::new();
            o.push_str(&format!("export OS_AUTH_URL={}\n", q(auth_url)));
            o.push_str("export OS_IDENTITY_API_VERSION=3\n");
            o.push_str("export OS_REGION_NAME=RegionOne\n");
            o.push_str("export OS_INTERFACE=public\n");
            if let Some(c) = cacert {
                o.push_str(&format!("export OS_CACERT={}\n", q(c)));
            }
            o.push_str(&format!("export OS_PROJECT_NAME={}\n", q(project)));
            o.push_str("export OS_PROJECT_DOMAIN_NAME=Default\n");
            o.push_str(&format!("export OS_USERNAME={}\n", q(user)));
            o.push_str("export OS_USER_DOMAIN_NAME=Default\n");
            match password {
                Some(p) => o.push_str(&format!("export OS_PASSWORD={}\n", q(p))),
                None => o.push_str(
                    "printf 'Password for %s: ' \"$OS_USERNAME\"; read -r -s OS_PASSWORD; echo; export OS_PASSWORD\n",
                ),
            }
            Ok(o)
        }
        "clouds-yaml" => {
            let mut o = String::from("clouds:\n  strata:\n    auth:\n");
            o.push_str(&format!("      auth_url: {}\n", q(auth_url)));
            o.push_str(&format!("      username: {}\n", q(user)));
            if let Some(p) = password {
                o.push_str(&format!("      password: {}\n", q(p)));
            }
            o.push_str(&format!("      project_name: {}\n", q(project)));
            o.push_str("      user_domain_name: Default\n      project_domain_name: Default\n");
            o.push_str(
                "    region_name: RegionOne\n    interface: public\n    identity_api_version: 3\n",
            );
            if let Some(c) = cacert {
                o.push_str(&format!("    cacert: {}\n", q(c)));
            }
            Ok(o)
        }
        f => Err(format!("unknown format {f:?} (openrc or clouds-yaml)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_table_marks_the_leader_and_down_nodes() {
        let v = json!([
            {"id": "a", "hostname": "h1", "addr": "1.1.1.1:7440", "liveness": "alive", "raft": "voter", "leader": true, "cores": 2, "memory_bytes": 1073741824u64, "version": "0.1.0"},
            {"id": "b", "hostname": "h2", "addr": "1.1.1.2:7440", "liveness": "down", "raft": "voter", "leader": false, "cores": 2, "memory_bytes": 0, "version": "0.1.0"}
        ]);
        let t = nodes(&v);
        assert!(t.contains("voter (leader)"), "{t}");
        assert!(t.lines().nth(2).unwrap().contains("down"), "{t}");
        assert!(t.contains("1.0 GiB"));
    }

    #[test]
    fn openrc_quotes_values_and_asks_for_missing_passwords() {
        let o = super::openrc(
            "https://10.0.0.1:5000/identity/v3",
            Some("/var/lib/strata/pki/ca.crt"),
            "it's",
            "bob",
            None,
            "openrc",
        )
        .unwrap();
        assert!(o.contains("export OS_PROJECT_NAME='it'\\''s'"), "{o}");
        assert!(o.contains("read -r -s OS_PASSWORD"), "{o}");
        assert!(
            o.contains("export OS_CACERT='/var/lib/strata/pki/ca.crt'"),
            "{o}"
        );
        let y = super::openrc(
            "http://h/identity/v3",
            None,
            "p",
            "admin",
            Some("pw"),
            "clouds-yaml",
        )
        .unwrap();
        assert!(y.contains("password: 'pw'"), "{y}");
        assert!(!y.contains("cacert"), "{y}");
        assert!(super::openrc("u", None, "p", "u", None, "xml").is_err());
    }
}
