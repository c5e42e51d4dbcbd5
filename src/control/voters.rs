//! Keeps the Raft membership in step with the nodes table, so no operator manages it:
//! admitted, live nodes become learners; voters are kept at the largest odd number up to
//! `max_voters` that live nodes allow; a voter down for longer than a grace period is
//! replaced by a live learner when one exists; a node removed from the cluster
//! (`strata node remove`) leaves the membership.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{Control, ControlError};
use crate::cluster::store::tables::{Nodes, RemovedNodes};
use crate::ids::NodeId;

/// How long a voter may be down before it is replaced by a live learner.
pub const VOTER_REPLACE_GRACE: Duration = Duration::from_secs(15);

/// The pure decision: given the membership and who is alive, the voter set to move to.
pub fn desired_voters(
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
    alive: &dyn Fn(NodeId) -> bool,
    long_dead: &dyn Fn(NodeId) -> bool,
    max_voters: usize,
) -> Option<BTreeSet<NodeId>> {
    let alive_voters: BTreeSet<NodeId> = voters.iter().copied().filter(|v| alive(*v)).collect();
    let alive_learners: Vec<NodeId> = learners.iter().copied().filter(|l| alive(*l)).collect();
    let live_total = alive_voters.len() + alive_learners.len();
    let mut target = live_total.min(max_voters);
    if target.is_multiple_of(2) {
        target = target.saturating_sub(1);
    }
    let target = target.max(1);
    let mut desired = alive_voters.clone();
    for l in alive_learners {
        if desired.len() >= target {
            break;
        }
        desired.insert(l);
    }
    // Dead voters that are not long dead stay: removing them shrinks the quorum for
    // nothing if they are just restarting.
    for v in voters.iter().filter(|v| !alive(**v) && !long_dead(**v)) {
        desired.insert(*v);
    }
    if desired == *voters || desired.is_empty() || desired.len().is_multiple_of(2) {
        return None;
    }
    // Never shrink below the current number of live voters (only replace).
    if desired.len() < alive_voters.len() {
        return None;
    }
    Some(desired)
}

pub(super) async fn reconcile(
    control: &Control,
    down_since: &mut BTreeMap<NodeId, Instant>,
) -> Result<(), ControlError> {
    let raft = control.raft();
    let view = raft.membership();
    if view.joint {
        return Ok(());
    }
    // Nodes removed from the cluster leave the Raft membership first.
    let removed: BTreeSet<NodeId> = control
        .store
        .list::<RemovedNodes>()?
        .into_iter()
        .map(|r| r.value.id)
        .filter(|n| view.voters.contains(n) || view.learners.contains(n))
        .collect();
    if !removed.is_empty() {
        tracing::info!(nodes = ?removed, "removing nodes from Raft");
        return raft
            .remove_nodes(&removed)
            .await
            .map_err(|e| ControlError::NotReady(format!("removing {removed:?} from Raft: {e}")));
    }
    let alive = |n: NodeId| control.membership.is_alive(n);
    // Track how long each voter has been down.
    for v in &view.voters {
        if alive(*v) {
            down_since.remove(v);
        } else {
            down_since.entry(*v).or_insert_with(Instant::now);
        }
    }
    down_since.retain(|n, _| view.voters.contains(n));

    // Admitted live nodes that Raft does not know yet become learners.
    for rec in control.store.list::<Nodes>()? {
        let id = rec.value.id;
        let known = view.voters.contains(&id) || view.learners.contains(&id);
        let addr_changed = view
            .addrs
            .get(&id)
            .is_some_and(|a| *a != rec.value.addr.to_string());
        if (!known || addr_changed) && alive(id) {
            tracing::info!(node = %id, addr = %rec.value.addr, "adding node to Raft as learner");
            raft.add_learner(id, rec.value.addr)
                .await
                .map_err(|e| ControlError::NotReady(format!("adding learner {id}: {e}")))?;
            return Ok(()); // one change per pass
        }
    }

    let long_dead = |n: NodeId| {
        down_since
            .get(&n)
            .is_some_and(|t| t.elapsed() >= VOTER_REPLACE_GRACE)
    };
    if let Some(new) = desired_voters(
        &view.voters,
        &view.learners,
        &alive,
        &long_dead,
        control.tuning.max_voters,
    ) {
        tracing::info!(from = ?view.voters, to = ?new, "changing Raft voters");
        raft.set_voters(new.clone())
            .await
            .map_err(|e| ControlError::NotReady(format!("changing voters: {e}")))?;
        let _ = control
            .record_event(
                "raft.voters",
                format!(
                    "voters changed from {:?} to {:?}",
                    view.voters
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>(),
                    new.iter().map(|n| n.to_string()).collect::<Vec<_>>()
                ),
            )
            .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().map(|i| NodeId(*i)).collect()
    }

    fn decide(
        voters: &[u64],
        learners: &[u64],
        dead: &[u64],
        long_dead: &[u64],
        max: usize,
    ) -> Option<BTreeSet<NodeId>> {
        let dead = set(dead);
        let ld = set(long_dead);
        desired_voters(
            &set(voters),
            &set(learners),
            &|n| !dead.contains(&n),
            &|n| ld.contains(&n),
            max,
        )
    }

    #[test]
    fn grows_to_three_then_five_voters_and_keeps_odd() {
        assert_eq!(
            decide(&[1], &[2], &[], &[], 5),
            None,
            "two nodes keep one voter"
        );
        assert_eq!(decide(&[1], &[2, 3], &[], &[], 5), Some(set(&[1, 2, 3])));
        assert_eq!(
            decide(&[1, 2, 3], &[4], &[], &[], 5),
            None,
            "four nodes keep three voters"
        );
        assert_eq!(
            decide(&[1, 2, 3], &[4, 5], &[], &[], 5),
            Some(set(&[1, 2, 3, 4, 5]))
        );
        assert_eq!(
            decide(&[1, 2, 3, 4, 5], &[6, 7], &[], &[], 5),
            None,
            "never more than five"
        );
    }

    #[test]
    fn a_long_dead_voter_is_replaced_by_a_live_learner_only() {
        // Three voters, one dead, no learner: nothing to do (2 of 3 still a quorum).
        assert_eq!(decide(&[1, 2, 3], &[], &[3], &[3], 5), None);
        // Briefly dead: wait.
        assert_eq!(decide(&[1, 2, 3], &[4], &[3], &[], 5), None);
        // Long dead with a live learner: replace.
        assert_eq!(
            decide(&[1, 2, 3], &[4], &[3], &[3], 5),
            Some(set(&[1, 2, 4]))
        );
        // Dead learners are never promoted.
        assert_eq!(decide(&[1], &[2, 3], &[3], &[], 5), None);
    }

    #[test]
    fn max_voters_is_respected() {
        assert_eq!(decide(&[1], &[2, 3], &[], &[], 1), None);
        assert_eq!(
            decide(&[1], &[2, 3, 4, 5], &[], &[], 3),
            Some(set(&[1, 2, 3]))
        );
    }
}
