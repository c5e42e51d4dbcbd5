//! Security groups and anti-spoofing as nftables rules on a node, generated from the ports
//! it carries and applied atomically (`nft -f -`, one transaction replacing Strata's two
//! tables).
//!
//! Bridged traffic is filtered with conntrack through br_netfilter (this kernel has no
//! bridge-family conntrack): `bridge-nf-call-iptables` sends bridged IPv4 through the
//! inet hooks. Ports are told apart with the packet mark, set in the bridge family where
//! the bridge port is known: the low 16 bits name the port a frame comes from (prerouting),
//! the high 16 bits the port it goes to (forward, before br_netfilter). Each network's
//! bridge gets its own conntrack zone, so equal addresses in two networks never mix.
//!
//! - `table bridge strata_l2`: anti-spoofing (a port sends only from its MAC and
//!   addresses, ARP included, no DHCP server answers, no other ethertypes), and marks.
//! - `table inet strata_fw`: per port an egress chain (stateful; DHCP and metadata always
//!   allowed; the group's egress rules; otherwise dropped) and an ingress chain (stateful;
//!   DHCP answers; the group's ingress rules; otherwise dropped).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::cluster::store::network_tables::{Direction, RuleRecord};

pub const L2_TABLE: &str = "strata_l2";
pub const FW_TABLE: &str = "strata_fw";
const METADATA: &str = "169.254.169.254";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallPort {
    pub tap: String,
    pub mac: String,
    pub ips: Vec<Ipv4Addr>,
    /// Off: no anti-spoofing, no filtering.
    pub port_security: bool,
    pub groups: Vec<String>,
    /// Frames to this MAC (the router's, on another node) go to that one instead (the
    /// local floating-IP instance of the router).
    pub gateway_rewrite: Option<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallPlan {
    /// Strata's bridges on the node (each a conntrack zone).
    pub bridges: Vec<String>,
    pub ports: Vec<FirewallPort>,
    /// Rules of each group the ports use.
    pub groups: BTreeMap<String, Vec<RuleRecord>>,
    /// Addresses of every port in each group (for remote-group rules), cluster-wide.
    pub members: BTreeMap<String, BTreeSet<Ipv4Addr>>,
}

/// The nft script that makes the node's Strata tables exactly `plan`.
pub fn script(plan: &FirewallPlan) -> String {
    let mut s = String::new();
    // Create-then-delete so the delete never fails; all of it is one transaction.
    for t in [format!("bridge {L2_TABLE}"), format!("inet {FW_TABLE}")] {
        let _ = writeln!(s, "table {t}\ndelete table {t}");
    }
    if plan.ports.is_empty() {
        return s;
    }
    let secured: Vec<(usize, &FirewallPort)> = plan
        .ports
        .iter()
        .filter(|p| p.port_security)
        .enumerate()
        .map(|(i, p)| (i + 1, p))
        .collect();
    // Layer 2.
    let _ = writeln!(s, "table bridge {L2_TABLE} {{");
    let _ = writeln!(
        s,
        "  chain pre {{\n    type filter hook prerouting priority -300; policy accept;"
    );
    for p in &plan.ports {
        if let Some((from, to)) = &p.gateway_rewrite {
            let _ = writeln!(
                s,
                "    iifname \"{}\" ether daddr {from} ether daddr set {to}",
                p.tap
            );
        }
    }
    for (i, p) in &secured {
        let _ = writeln!(s, "    iifname \"{}\" jump spoof_{i}", p.tap);
        let _ = writeln!(s, "    iifname \"{}\" meta mark set 0x{i:x}", p.tap);
    }
    let _ = writeln!(s, "  }}");
    for (i, p) in &secured {
        let ips = set_of(&p.ips);
        let _ = writeln!(s, "  chain spoof_{i} {{");
        let _ = writeln!(s, "    ether saddr != {} drop", p.mac);
        let _ = writeln!(s, "    ether type arp arp saddr ether != {} drop", p.mac);
        let _ = writeln!(
            s,
            "    ether type arp arp saddr ip != {} drop",
            set_of_with(&p.ips, Ipv4Addr::UNSPECIFIED)
        );
        let _ = writeln!(
            s,
            "    ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 return"
        );
        match &ips {
            Some(set) => {
                let _ = writeln!(s, "    ether type ip ip saddr != {set} drop");
            }
            None => {
                let _ = writeln!(s, "    ether type ip drop");
            }
        }
        let _ = writeln!(s, "    ether type ip udp sport 67 drop");
        let _ = writeln!(s, "    ether type != {{ ip, arp }} drop");
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(
        s,
        "  chain mark_out {{\n    type filter hook forward priority -10; policy accept;"
    );
    for (i, p) in &secured {
        let _ = writeln!(
            s,
            "    oifname \"{}\" meta mark set meta mark or 0x{:x}",
            p.tap,
            i << 16
        );
    }
    let _ = writeln!(s, "  }}\n}}");

    // Layer 3/4, stateful.
    let _ = writeln!(s, "table inet {FW_TABLE} {{");
    let group_ids: BTreeMap<&str, usize> = plan
        .members
        .keys()
        .enumerate()
        .map(|(i, g)| (g.as_str(), i))
        .collect();
    for (g, i) in &group_ids {
        let _ = writeln!(s, "  set g_{i} {{\n    type ipv4_addr;");
        if let Some(set) = plan.members.get(*g).filter(|m| !m.is_empty()) {
            let list: Vec<String> = set.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(s, "    elements = {{ {} }}", list.join(", "));
        }
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(
        s,
        "  chain raw {{\n    type filter hook prerouting priority -300; policy accept;"
    );
    for (z, b) in plan.bridges.iter().enumerate() {
        let _ = writeln!(s, "    iifname \"{b}\" ct zone set {}", z + 1);
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(
        s,
        "  chain forward {{\n    type filter hook forward priority 0; policy accept;"
    );
    if !secured.is_empty() {
        let egress: Vec<String> = secured
            .iter()
            .map(|(i, _)| format!("0x{i:x} : jump egress_{i}"))
            .collect();
        let ingress: Vec<String> = secured
            .iter()
            .map(|(i, _)| format!("0x{:x} : jump ingress_{i}", i << 16))
            .collect();
        let _ = writeln!(
            s,
            "    meta mark & 0x0000ffff vmap {{ {} }}",
            egress.join(", ")
        );
        let _ = writeln!(
            s,
            "    meta mark & 0xffff0000 vmap {{ {} }}",
            ingress.join(", ")
        );
    }
    let _ = writeln!(s, "  }}");
    for (i, p) in &secured {
        let rules: Vec<&RuleRecord> = p
            .groups
            .iter()
            .filter_map(|g| plan.groups.get(g))
            .flatten()
            .collect();
        // Egress: allowed traffic returns to the base chain (its destination's ingress
        // chain still applies); everything else is dropped.
        let _ = writeln!(s, "  chain egress_{i} {{");
        let _ = writeln!(s, "    ct state established,related return");
        let _ = writeln!(s, "    ct state invalid drop");
        let _ = writeln!(s, "    udp dport 67 return");
        let _ = writeln!(s, "    ip daddr {METADATA} tcp dport 80 return");
        for r in rules.iter().filter(|r| r.direction == Direction::Egress) {
            if let Some(m) = rule_match(r, &group_ids) {
                let _ = writeln!(s, "    {m}return");
            }
        }
        let _ = writeln!(s, "    drop\n  }}");
        let _ = writeln!(s, "  chain ingress_{i} {{");
        let _ = writeln!(s, "    ct state established,related accept");
        let _ = writeln!(s, "    ct state invalid drop");
        let _ = writeln!(s, "    udp sport 67 udp dport 68 accept");
        for r in rules.iter().filter(|r| r.direction == Direction::Ingress) {
            if let Some(m) = rule_match(r, &group_ids) {
                let _ = writeln!(s, "    {m}accept");
            }
        }
        let _ = writeln!(s, "    drop\n  }}");
    }
    let _ = writeln!(s, "}}");
    s
}

/// `{ a, b }`, or None for no addresses.
fn set_of(ips: &[Ipv4Addr]) -> Option<String> {
    if ips.is_empty() {
        return None;
    }
    let v: Vec<String> = ips.iter().map(|a| a.to_string()).collect();
    Some(format!("{{ {} }}", v.join(", ")))
}

fn set_of_with(ips: &[Ipv4Addr], also: Ipv4Addr) -> String {
    let mut v: Vec<Ipv4Addr> = ips.to_vec();
    v.push(also);
    set_of(&v).unwrap_or_default()
}

/// The match part of a rule (ending in a space), or None when it can match nothing here
/// (a remote group no port of which is known).
fn rule_match(r: &RuleRecord, groups: &BTreeMap<&str, usize>) -> Option<String> {
    let mut m = String::new();
    let side = if r.direction == Direction::Ingress {
        "saddr"
    } else {
        "daddr"
    };
    match (&r.remote_ip_prefix, &r.remote_group) {
        (Some(p), _) if p != "0.0.0.0/0" => {
            let _ = write!(m, "ip {side} {p} ");
        }
        (_, Some(g)) => {
            let i = groups.get(g.as_str())?;
            let _ = write!(m, "ip {side} @g_{i} ");
        }
        _ => {
            m.push_str("meta nfproto ipv4 ");
        }
    }
    let proto = r.protocol.as_deref().map(str::to_ascii_lowercase);
    match proto.as_deref() {
        None | Some("any") => {}
        Some(p @ ("tcp" | "udp")) => match (r.port_range_min, r.port_range_max) {
            (Some(a), Some(b)) if a != b => {
                let _ = write!(m, "{p} dport {a}-{b} ");
            }
            (Some(a), _) | (None, Some(a)) => {
                let _ = write!(m, "{p} dport {a} ");
            }
            (None, None) => {
                let _ = write!(m, "meta l4proto {p} ");
            }
        },
        Some("icmp") => {
            m.push_str("meta l4proto icmp ");
            if let Some(t) = r.port_range_min {
                let _ = write!(m, "icmp type {t} ");
                if let Some(c) = r.port_range_max {
                    let _ = write!(m, "icmp code {c} ");
                }
            }
        }
        Some(n) => {
            let _ = write!(m, "meta l4proto {n} ");
        }
    }
    Some(m)
}

/// Applies a script (and turns on br_netfilter for this namespace first).
pub async fn apply(script: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let knob = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if std::fs::read_to_string(knob)
        .map(|v| v.trim() != "1")
        .unwrap_or(true)
    {
        std::fs::write(knob, "1").map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot enable {knob} (is br_netfilter available? try `modprobe br_netfilter`): {e}"),
            )
        })?;
    }
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot run nft (Debian package nftables): {e}"),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "nft refused the security group rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(direction: Direction, proto: Option<&str>, ports: Option<(u16, u16)>) -> RuleRecord {
        RuleRecord {
            id: "r".into(),
            direction,
            protocol: proto.map(str::to_string),
            port_range_min: ports.map(|p| p.0),
            port_range_max: ports.map(|p| p.1),
            remote_ip_prefix: None,
            remote_group: None,
            description: String::new(),
        }
    }

    #[test]
    fn a_port_gets_anti_spoofing_marks_and_its_groups_rules() {
        let mut ssh = rule(Direction::Ingress, Some("tcp"), Some((22, 22)));
        ssh.remote_ip_prefix = Some("10.0.0.0/24".into());
        let mut from_group = rule(Direction::Ingress, None, None);
        from_group.remote_group = Some("g1".into());
        let plan = FirewallPlan {
            bridges: vec!["sbr1000".into()],
            ports: vec![
                FirewallPort {
                    tap: "tapaaa".into(),
                    mac: "fa:16:3e:00:00:01".into(),
                    ips: vec![Ipv4Addr::new(10, 0, 0, 3)],
                    port_security: true,
                    groups: vec!["g1".into()],
                    gateway_rewrite: None,
                },
                FirewallPort {
                    tap: "tapbbb".into(),
                    mac: "fa:16:3e:00:00:02".into(),
                    ips: vec![],
                    port_security: false,
                    groups: vec![],
                    gateway_rewrite: None,
                },
            ],
            groups: [(
                "g1".to_string(),
                vec![
                    ssh,
                    from_group,
                    rule(Direction::Egress, None, None),
                    rule(Direction::Ingress, Some("udp"), Some((1000, 2000))),
                    rule(Direction::Ingress, Some("icmp"), Some((8, 0))),
                ],
            )]
            .into(),
            members: [(
                "g1".to_string(),
                [Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 9)].into(),
            )]
            .into(),
        };
        let s = script(&plan);
        for want in [
            "iifname \"tapaaa\" jump spoof_1",
            "iifname \"tapaaa\" meta mark set 0x1",
            "ether saddr != fa:16:3e:00:00:01 drop",
            "ether type ip ip saddr != { 10.0.0.3 } drop",
            "ether type arp arp saddr ip != { 10.0.0.3, 0.0.0.0 } drop",
            "oifname \"tapaaa\" meta mark set meta mark or 0x10000",
            "iifname \"sbr1000\" ct zone set 1",
            "elements = { 10.0.0.3, 10.0.0.9 }",
            "ip saddr 10.0.0.0/24 tcp dport 22 accept",
            "ip saddr @g_0 accept",
            "meta nfproto ipv4 return",
            "meta nfproto ipv4 udp dport 1000-2000 accept",
            "meta l4proto icmp icmp type 8 icmp code 0 accept",
        ] {
            assert!(s.contains(want), "missing {want:?} in:\n{s}");
        }
        // The port without port security is neither marked nor filtered.
        assert!(!s.contains("tapbbb"), "{s}");
    }

    #[test]
    fn no_ports_means_the_tables_are_removed() {
        let s = script(&FirewallPlan::default());
        assert_eq!(
            s,
            "table bridge strata_l2\ndelete table bridge strata_l2\ntable inet strata_fw\ndelete table inet strata_fw\n"
        );
    }
}
