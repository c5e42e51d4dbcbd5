//! Hypervisor trait, Strata's KVM VMM and the TCG fallback. Filled by the compute issue.
