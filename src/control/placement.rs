//! VM placement: filters, then a weigher, with the reason for the choice in words.
//! A pure function of the cluster's state, so it is tested without a cluster.

use std::collections::BTreeMap;

use crate::ids::NodeId;

/// What the scheduler knows about one node.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: NodeId,
    pub alive: bool,
    pub cores: u32,
    /// vCPUs placed per core (0: [`CPU_ALLOCATION_RATIO`]).
    pub cpu_ratio: u32,
    pub memory_mb: u64,
    pub hypervisor: String,
    /// vCPUs and MiB already allocated to VMs placed on the node.
    pub used_vcpus: u32,
    pub used_mb: u64,
    /// Groups (anti-affinity and affinity) of the VMs on the node.
    pub groups: Vec<String>,
    /// Set when the node is in maintenance (why, in words).
    pub maintenance: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub vcpus: u32,
    pub ram_mb: u64,
    pub anti_affinity_group: Option<String>,
    /// Only the node(s) already running VMs of this group, if any do.
    pub affinity_group: Option<String>,
    /// Only nodes with this driver (`kvm`, `tcg`), if set.
    pub hypervisor: Option<String>,
    /// What the VM needs that only the QEMU driver does (in words), if anything.
    pub qemu_only: Option<String>,
    pub weigher: Weigher,
    /// Nodes to prefer among those that pass (where the VM's volume has a replica, so
    /// that its reads stay local).
    pub prefer: Vec<NodeId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weigher {
    /// Most free memory first (the default, as Nova's RAM weigher).
    Spread,
    /// Least free memory first, to keep whole nodes empty.
    Pack,
}

/// vCPU overcommit (Nova's default is 4.0 since Wallaby).
pub const CPU_ALLOCATION_RATIO: u32 = 4;
/// Memory kept for the host itself on every node.
pub const HOST_RESERVED_MB: u64 = 512;

/// Chooses a node, or explains for every node why it cannot take the VM.
pub fn place(req: &Request, nodes: &[Candidate]) -> Result<(NodeId, String), String> {
    if nodes.is_empty() {
        return Err("no nodes in the cluster".into());
    }
    let mut fit: Vec<(&Candidate, u64)> = vec![];
    let mut refused: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let largest = nodes
        .iter()
        .map(|n| n.memory_mb.saturating_sub(HOST_RESERVED_MB))
        .max()
        .unwrap_or(0);
    if req.ram_mb > largest {
        return Err(format!(
            "{} MiB of memory is more than any node can offer (largest: {} MiB after the {} MiB host reserve)",
            req.ram_mb, largest, HOST_RESERVED_MB
        ));
    }
    // Affinity: where the group's VMs run already, if anywhere.
    let together: Vec<NodeId> = req
        .affinity_group
        .as_ref()
        .map(|g| {
            nodes
                .iter()
                .filter(|n| n.groups.contains(g))
                .map(|n| n.id)
                .collect()
        })
        .unwrap_or_default();
    for n in nodes {
        let capacity_mb = n.memory_mb.saturating_sub(HOST_RESERVED_MB);
        let free_mb = capacity_mb.saturating_sub(n.used_mb);
        let ratio = if n.cpu_ratio == 0 {
            CPU_ALLOCATION_RATIO
        } else {
            n.cpu_ratio
        };
        let vcpu_cap = n.cores * ratio;
        let why = if !n.alive {
            Some("node is down".to_string())
        } else if let Some(m) = &n.maintenance {
            Some(format!("node is in maintenance ({m})"))
        } else if req.hypervisor.as_ref().is_some_and(|h| *h != n.hypervisor) {
            Some(format!("hypervisor is {}", n.hypervisor))
        } else if let Some(what) = req.qemu_only.as_ref().filter(|_| n.hypervisor == "kvm") {
            Some(format!("its driver, Strata's VMM (kvm), cannot {what} yet"))
        } else if n.used_vcpus + req.vcpus > vcpu_cap {
            Some(format!(
                "not enough vCPUs ({} of {} allocated)",
                n.used_vcpus, vcpu_cap
            ))
        } else if req.ram_mb > free_mb {
            Some(format!("not enough memory ({free_mb} MiB free)"))
        } else if !together.is_empty() && !together.contains(&n.id) {
            Some(format!(
                "the VMs of affinity group {:?} run elsewhere",
                req.affinity_group.as_deref().unwrap_or_default()
            ))
        } else {
            req.anti_affinity_group
                .as_ref()
                .filter(|g| n.groups.contains(g))
                .map(|g| format!("already runs a VM of anti-affinity group {g:?}"))
        };
        match why {
            Some(w) => refused.entry(w).or_default().push(n.id.to_string()),
            None => fit.push((n, free_mb)),
        }
    }
    if fit.is_empty() {
        let parts: Vec<String> = refused
            .into_iter()
            .map(|(why, ids)| format!("{} node(s) {}: {}", ids.len(), why, ids.join(", ")))
            .collect();
        return Err(format!("no node can take the VM: {}", parts.join("; ")));
    }
    fit.sort_by(|a, b| match req.weigher {
        Weigher::Spread => b.1.cmp(&a.1).then(a.0.id.cmp(&b.0.id)),
        Weigher::Pack => a.1.cmp(&b.1).then(a.0.id.cmp(&b.0.id)),
    });
    // Preferred nodes first, keeping the weigher's order within each group.
    fit.sort_by_key(|(n, _)| !req.prefer.contains(&n.id));
    let (best, free) = fit[0];
    let reason = format!(
        "{} of {} nodes passed the filters (alive, hypervisor, vCPUs, memory, affinity, anti-affinity); weigher {:?}{} chose node {} with {} MiB free{}",
        fit.len(),
        nodes.len(),
        req.weigher,
        if req.prefer.is_empty() {
            ""
        } else if req.prefer.contains(&best.id) {
            " (preferring nodes holding a replica of the VM's volume)"
        } else {
            " (no node holding a replica of the VM's volume passed)"
        },
        best.id,
        free,
        if refused.is_empty() {
            String::new()
        } else {
            format!(
                "; refused: {}",
                refused
                    .iter()
                    .map(|(w, ids)| format!("{} ({w})", ids.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    );
    Ok((best.id, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, mem: u64, used: u64) -> Candidate {
        Candidate {
            id: NodeId(id),
            alive: true,
            cores: 2,
            cpu_ratio: 0,
            memory_mb: mem,
            hypervisor: "tcg".into(),
            used_vcpus: 0,
            used_mb: used,
            groups: vec![],
            maintenance: None,
        }
    }

    #[test]
    fn a_node_in_maintenance_takes_no_new_vms_and_says_why() {
        let mut a = node(1, 8192, 0);
        a.maintenance = Some("disk swap".into());
        let b = node(2, 4096, 0);
        let (id, _) = place(&req(1024), &[a.clone(), b]).unwrap();
        assert_eq!(id, NodeId(2));
        let err = place(&req(1024), &[a]).unwrap_err();
        assert!(err.contains("maintenance (disk swap)"), "{err}");
    }

    fn req(ram: u64) -> Request {
        Request {
            vcpus: 1,
            ram_mb: ram,
            anti_affinity_group: None,
            affinity_group: None,
            hypervisor: None,
            qemu_only: None,
            weigher: Weigher::Spread,
            prefer: vec![],
        }
    }

    #[test]
    fn spread_picks_the_most_free_memory_and_pack_the_least() {
        let nodes = [node(1, 4096, 1000), node(2, 4096, 0), node(3, 4096, 2000)];
        let (n, why) = place(&req(256), &nodes).unwrap();
        assert_eq!(n, NodeId(2));
        assert!(why.contains("3 of 3 nodes passed"), "{why}");
        let mut r = req(256);
        r.weigher = Weigher::Pack;
        assert_eq!(place(&r, &nodes).unwrap().0, NodeId(3));
    }

    #[test]
    fn uefi_images_go_to_qemu_nodes_bios_ones_anywhere() {
        use crate::cluster::store::compute_tables::BootSpec;
        let mut kvm = node(1, 8192, 0);
        kvm.hypervisor = "kvm".into();
        let tcg = node(2, 1024, 0);
        let boot = |fw: &str| BootSpec {
            firmware: Some(fw.into()),
            ..Default::default()
        };
        // BIOS firmware and config drives run on Strata's VMM: the roomier node wins.
        let mut r = req(256);
        r.qemu_only = super::super::vms::qemu_only(&boot("bios"), true);
        assert_eq!(place(&r, &[kvm.clone(), tcg.clone()]).unwrap().0, NodeId(1));
        // UEFI does not: the QEMU node, and the reason when there is none.
        r.qemu_only = super::super::vms::qemu_only(&boot("uefi"), false);
        assert_eq!(place(&r, &[kvm.clone(), tcg]).unwrap().0, NodeId(2));
        let e = place(&r, &[kvm]).unwrap_err();
        assert!(e.contains("UEFI"), "{e}");
    }

    #[test]
    fn filters_explain_every_refusal() {
        let mut down = node(1, 4096, 0);
        down.alive = false;
        let mut busy = node(2, 4096, 0);
        busy.used_vcpus = 8;
        let full = node(3, 4096, 3500);
        let e = place(&req(256), &[down, busy, full]).unwrap_err();
        assert!(
            e.contains("node is down")
                && e.contains("not enough vCPUs")
                && e.contains("not enough memory"),
            "{e}"
        );
    }

    #[test]
    fn memory_larger_than_any_node_is_named() {
        let e = place(&req(1 << 20), &[node(1, 4096, 0)]).unwrap_err();
        assert!(e.contains("more than any node can offer"), "{e}");
    }

    #[test]
    fn anti_affinity_keeps_group_members_apart() {
        let mut a = node(1, 4096, 0);
        a.groups = vec!["db".into()];
        let b = node(2, 4096, 1000);
        let mut r = req(256);
        r.anti_affinity_group = Some("db".into());
        let (n, why) = place(&r, &[a.clone(), b]).unwrap();
        assert_eq!(n, NodeId(2));
        assert!(why.contains("anti-affinity"), "{why}");
        assert!(place(&r, &[a]).is_err());
    }

    #[test]
    fn nodes_holding_the_volume_are_preferred() {
        let nodes = vec![node(1, 8192, 0), node(2, 4096, 0), node(3, 2048, 0)];
        let mut r = req(256);
        r.prefer = vec![NodeId(3)];
        let (n, why) = place(&r, &nodes).unwrap();
        assert_eq!(n, NodeId(3), "{why}");
        assert!(why.contains("preferring nodes holding a replica"), "{why}");
        // A preferred node that does not fit is not chosen.
        r.ram_mb = 4000;
        let (n, why) = place(&r, &nodes).unwrap();
        assert_eq!(n, NodeId(1), "{why}");
        assert!(why.contains("no node holding a replica"), "{why}");
    }

    #[test]
    fn affinity_keeps_group_members_together() {
        let mut a = node(1, 8192, 0);
        let b = node(2, 16384, 0);
        a.groups = vec!["web".into()];
        let mut r = req(512);
        r.affinity_group = Some("web".into());
        // b has more free memory, but the group already runs on a.
        let (n, _) = place(&r, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(n, a.id);
        // A full member node refuses instead of splitting the group.
        a.used_mb = 8192 - HOST_RESERVED_MB;
        let e = place(&r, &[a, b]).unwrap_err();
        assert!(e.contains("affinity group"), "{e}");
    }
}
