//! Joining without a token: a server that found the cluster on its network (see
//! `cluster::discovery`) asks to join and shows a join code on its console; the request
//! waits in the `pending_joins` table until an administrator who sees the same code in
//! the web console accepts it (or rejects it). The joiner asks again every few seconds
//! and is admitted on the first request after the acceptance.

use sha2::{Digest, Sha256};

use super::join::{join_code, Admission, JoinRefusal, JoinRequest, MAX_PENDING_JOINS};
use super::join::{JoinProof, MAX_PENDING_PER_SOURCE, PENDING_JOIN_TTL_S};
use super::{now_ms, now_secs, Control, ControlError};
use crate::cluster::discovery::Announce;
use crate::cluster::store::tables::{
    Event, Events, JoinDecision, PendingJoinRecord, PendingJoins, Settings, EVENTS_KEPT,
};
use crate::cluster::store::{StoreError, TxnBuilder};
use crate::ids::NodeId;

impl Control {
    /// Records or looks up the request of a joiner without a token. `Ok(Ok(_))` admits it
    /// (accepted by an administrator); `Ok(Err(code))` means it is still waiting.
    pub(super) async fn join_request(
        &self,
        req: &JoinRequest,
        ca_fingerprint: &str,
        source: std::net::IpAddr,
    ) -> Result<Result<Admission, String>, JoinRefusal> {
        debug_assert!(matches!(req.proof, JoinProof::Code));
        let not_ready = |e: StoreError| JoinRefusal::NotReady(e.to_string());
        let code = join_code(ca_fingerprint, &req.csr_der);
        let csr_sha256 = hex::encode(Sha256::digest(&req.csr_der));
        let key = req.node.to_string();
        if let Some(p) = self.store.get::<PendingJoins>(&key).map_err(not_ready)? {
            if p.value.csr_sha256 != csr_sha256 {
                return Err(JoinRefusal::KeyChanged(req.node));
            }
            return match &p.value.decision {
                None => Ok(Err(code)),
                Some(d) if !d.accepted => Err(JoinRefusal::Rejected {
                    node: req.node,
                    by: d.by.clone(),
                }),
                Some(d) => Ok(Ok(Admission {
                    txn: TxnBuilder::new()
                        .require_revision::<PendingJoins>(key.clone(), p.revision)
                        .delete::<PendingJoins>(key),
                    how: format!("with join code {code}, accepted by {}", d.by),
                })),
            };
        }
        let now = now_secs();
        let all = self.store.list::<PendingJoins>().map_err(not_ready)?;
        let (stale, live): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|p| now.saturating_sub(p.value.requested_at) > PENDING_JOIN_TTL_S);
        let waiting = live.iter().filter(|p| p.value.decision.is_none()).count();
        if waiting >= MAX_PENDING_JOINS {
            return Err(JoinRefusal::TooManyPending(waiting));
        }
        let mine = waiting_from(live.iter().map(|p| &p.value), source);
        if mine >= MAX_PENDING_PER_SOURCE {
            return Err(JoinRefusal::TooManyFromSource {
                from: source,
                count: mine,
            });
        }
        let rec = PendingJoinRecord {
            node: req.node,
            hostname: req.hostname.clone(),
            addr: req.addr,
            cores: req.cores,
            memory_bytes: req.memory_bytes,
            version: req.version.clone(),
            code: code.clone(),
            csr_sha256,
            requested_at: now,
            decision: None,
            source: Some(source),
        };
        let event = Event {
            at_ms: now_ms(),
            node: self.node,
            kind: "node.join_requested".into(),
            message: format!(
                "{} ({}) asks to join as node {} with code {code}",
                req.hostname, req.addr, req.node
            ),
        };
        let mut txn = TxnBuilder::new()
            .require_revision::<PendingJoins>(key.clone(), 0)
            .put::<PendingJoins>(key, &rec)
            .append::<Events>(&event)
            .trim::<Events>(EVENTS_KEPT);
        for s in stale {
            txn = txn.delete::<PendingJoins>(s.key);
        }
        match self.store.commit(txn).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(not_ready(e)),
        }
        tracing::info!(node = %req.node, addr = %req.addr, %code, "join request recorded");
        Ok(Err(code))
    }

    /// Join requests, newest first.
    pub fn join_requests(&self) -> Result<Vec<PendingJoinRecord>, ControlError> {
        let mut v: Vec<_> = self
            .store
            .list::<PendingJoins>()?
            .into_iter()
            .map(|p| p.value)
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.requested_at));
        Ok(v)
    }

    /// Accepts or rejects a waiting join request.
    pub async fn decide_join(
        &self,
        node: NodeId,
        accept: bool,
        by: &str,
    ) -> Result<PendingJoinRecord, ControlError> {
        let key = node.to_string();
        let p = self
            .store
            .get::<PendingJoins>(&key)?
            .ok_or_else(|| ControlError::NotFound(format!("no join request from node {node}")))?;
        if let Some(d) = &p.value.decision {
            return Err(ControlError::Conflict(format!(
                "the join request of {} was already {} by {}",
                p.value.hostname,
                if d.accepted { "accepted" } else { "rejected" },
                d.by
            )));
        }
        let rec = PendingJoinRecord {
            decision: Some(JoinDecision {
                accepted: accept,
                by: by.to_string(),
                at: now_secs(),
            }),
            ..p.value
        };
        let event = Event {
            at_ms: now_ms(),
            node: self.node,
            kind: if accept {
                "node.join_accepted"
            } else {
                "node.join_rejected"
            }
            .into(),
            message: format!(
                "{by} {} the join request of {} ({}, code {})",
                if accept { "accepted" } else { "rejected" },
                rec.hostname,
                rec.addr,
                rec.code
            ),
        };
        self.store
            .commit(
                TxnBuilder::new()
                    .require_revision::<PendingJoins>(key.clone(), p.revision)
                    .put::<PendingJoins>(key, &rec)
                    .append::<Events>(&event)
                    .trim::<Events>(EVENTS_KEPT),
            )
            .await?;
        Ok(rec)
    }

    /// The cluster's name, once this node has the cluster's settings.
    pub fn cluster_name(&self) -> Option<String> {
        Some(self.store.get::<Settings>("cluster").ok()??.value.name)
    }

    /// What this node answers to discovery probes, once it knows its cluster.
    pub fn announce(&self, join_addr: std::net::SocketAddr, hostname: &str) -> Option<Announce> {
        let settings = self.store.get::<Settings>("cluster").ok()??.value;
        let der = crate::transport::pki::pem_to_cert_der(&settings.ca_cert_pem).ok()?;
        Some(Announce {
            cluster_name: settings.name,
            cluster_id: settings.cluster_id,
            ca_fingerprint: crate::transport::pki::fingerprint(&der),
            node: self.node,
            hostname: hostname.to_string(),
            join_addr,
        })
    }
}

/// Undecided requests that came from `source`.
fn waiting_from<'a>(
    live: impl Iterator<Item = &'a PendingJoinRecord>,
    source: std::net::IpAddr,
) -> usize {
    live.filter(|p| p.decision.is_none() && p.source == Some(source))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_source_while_undecided() {
        let a: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let b: std::net::IpAddr = "192.0.2.2".parse().unwrap();
        let rec = |source, decided: bool| PendingJoinRecord {
            node: NodeId(1),
            hostname: "h".into(),
            addr: "192.0.2.9:7440".parse().unwrap(),
            cores: 1,
            memory_bytes: 1,
            version: "v".into(),
            code: "ABCD-EFGH".into(),
            csr_sha256: String::new(),
            requested_at: 0,
            decision: decided.then(|| JoinDecision {
                accepted: true,
                by: "x".into(),
                at: 0,
            }),
            source,
        };
        let all = [
            rec(Some(a), false),
            rec(Some(a), true),
            rec(Some(b), false),
            rec(None, false),
        ];
        assert_eq!(waiting_from(all.iter(), a), 1);
        assert_eq!(waiting_from(all.iter(), b), 1);
        assert_eq!(waiting_from(all[..2].iter(), b), 0);
    }

    #[test]
    fn join_codes_depend_on_the_ca_and_the_key() {
        let fp = "ab".repeat(32);
        let a = join_code(&fp, b"csr one");
        assert_eq!(a, join_code(&fp.to_uppercase(), b"csr one"));
        assert_eq!(a.len(), 9);
        assert_eq!(&a[4..5], "-");
        assert!(a
            .chars()
            .all(|c| c == '-' || (c.is_ascii_alphanumeric() && !"ILOU".contains(c))));
        assert_ne!(a, join_code(&fp, b"csr two"));
        assert_ne!(a, join_code(&"cd".repeat(32), b"csr one"));
    }
}
