//! The audit log: every change asked through the console or the API by a signed-in
//! caller (who, from where, with what result), kept in the store so that every node shows
//! the same log. Its entries are bounded in number ([`AUDIT_KEPT`]) and each field in
//! length ([`cap`]), so the log holds at most about 30 MiB.
//!
//! Requests without valid credentials (no or a bad token, a failed sign-in) are never
//! written to the store: anyone could make it grow. They are counted in
//! `strata_requests_refused_total` and kept in a bounded log in this node's memory
//! ([`Refusals`]), which administrators read in the console's audit page.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::{now_ms, Control, ControlError};
use crate::cluster::store::tables::{Audit, AuditRecord, AUDIT_KEPT};
use crate::cluster::store::TxnBuilder;

/// Requests refused for want of credentials kept in memory, per node.
pub const REFUSALS_KEPT: usize = 1_000;

/// Longest stored user name, target, source and action; longest error text.
const FIELD_MAX: usize = 256;
const ERROR_MAX: usize = 512;

/// Cuts a field to at most `max` bytes (on a character boundary), marking the cut.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max.saturating_sub(3);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
}

/// Bounds every field of a record.
pub fn cap(rec: &mut AuditRecord) {
    for f in [
        &mut rec.user,
        &mut rec.user_id,
        &mut rec.action,
        &mut rec.target,
        &mut rec.source,
        &mut rec.via,
    ] {
        cut(f, FIELD_MAX);
    }
    for f in [rec.project.as_mut(), rec.project_id.as_mut()]
        .into_iter()
        .flatten()
    {
        cut(f, FIELD_MAX);
    }
    if let Some(e) = rec.error.as_mut() {
        cut(e, ERROR_MAX);
    }
}

/// Why a request was refused without reaching the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one that is not (or no longer) valid.
    NoValidToken,
    /// A sign-in (console or Keystone) with a wrong user name or password.
    FailedSignIn,
    /// A sign-in refused because the user or the client address is locked out.
    LockedOut,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoValidToken => "no_valid_token",
            Refusal::FailedSignIn => "failed_sign_in",
            Refusal::LockedOut => "locked_out",
        }
    }
}

/// The node's in-memory log of refused requests, newest last, and their counts.
#[derive(Default)]
pub struct Refusals {
    log: Mutex<VecDeque<AuditRecord>>,
    counts: Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
}

impl Refusals {
    /// Notes a refused request: counted, and kept among the newest [`REFUSALS_KEPT`].
    pub fn note(&self, mut rec: AuditRecord, why: Refusal) {
        rec.at_ms = now_ms();
        cap(&mut rec);
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((rec.via.clone(), why.label())).or_default() += 1;
        }
        if let Ok(mut log) = self.log.lock() {
            if log.len() >= REFUSALS_KEPT {
                log.pop_front();
            }
            log.push_back(rec);
        }
    }

    /// The newest refused requests, newest first, at most `limit`.
    pub fn recent(&self, limit: usize) -> Vec<AuditRecord> {
        self.log
            .lock()
            .map(|l| l.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// Counts by (via, reason), for `/metrics`.
    pub fn counts(&self) -> Vec<((String, &'static str), u64)> {
        self.counts
            .lock()
            .map(|c| c.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}

/// What to show of the log.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this project's entries (members and readers see their project's).
    pub project: Option<String>,
    /// Case-insensitive substring of the user, action, target or source.
    pub text: Option<String>,
    /// Only failed (`Some(true)`) or only successful (`Some(false)`) requests.
    pub failed: Option<bool>,
}

impl AuditFilter {
    pub fn matches(&self, r: &AuditRecord) -> bool {
        if let Some(p) = &self.project {
            if r.project_id.as_deref() != Some(p.as_str()) {
                return false;
            }
        }
        if let Some(f) = self.failed {
            if r.error.is_some() != f {
                return false;
            }
        }
        match &self.text {
            Some(t) if !t.is_empty() => {
                let t = t.to_lowercase();
                [&r.user, &r.action, &r.target, &r.source]
                    .iter()
                    .any(|f| f.to_lowercase().contains(&t))
                    || r.error
                        .as_ref()
                        .is_some_and(|e| e.to_lowercase().contains(&t))
            }
            _ => true,
        }
    }
}

impl Control {
    /// Appends an entry of a signed-in caller's request (its time is set here, its
    /// fields bounded).
    pub async fn audit(&self, mut rec: AuditRecord) -> Result<(), ControlError> {
        rec.at_ms = now_ms();
        cap(&mut rec);
        self.store
            .commit(
                TxnBuilder::new()
                    .append::<Audit>(&rec)
                    .trim::<Audit>(AUDIT_KEPT),
            )
            .await?;
        Ok(())
    }

    /// The newest entries that match, newest first, at most `limit`.
    pub fn audit_log(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, ControlError> {
        let all = self.store.tail::<Audit>(AUDIT_KEPT as usize)?;
        Ok(all
            .into_iter()
            .rev()
            .map(|v| v.value)
            .filter(|r| filter.matches(r))
            .take(limit)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(user: &str, project: &str, action: &str, error: Option<&str>) -> AuditRecord {
        AuditRecord {
            user: user.into(),
            project_id: Some(project.into()),
            action: action.into(),
            target: "web1".into(),
            source: "127.0.0.1".into(),
            error: error.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn fields_are_bounded_and_the_refusal_log_keeps_the_newest() {
        let mut r = rec(&"é".repeat(4_000), "p1", "login", Some(&"x".repeat(10_000)));
        r.target = "t".repeat(400_000);
        cap(&mut r);
        assert!(
            r.user.len() <= FIELD_MAX && r.user.ends_with("..."),
            "{}",
            r.user.len()
        );
        assert!(r.target.len() <= FIELD_MAX);
        assert!(r.error.as_ref().unwrap().len() <= ERROR_MAX);
        let refusals = Refusals::default();
        for i in 0..REFUSALS_KEPT + 10 {
            let mut r = rec(&format!("u{i}"), "p", "login", None);
            r.via = "console".into();
            refusals.note(r, Refusal::FailedSignIn);
        }
        let recent = refusals.recent(usize::MAX);
        assert_eq!(recent.len(), REFUSALS_KEPT);
        assert_eq!(recent[0].user, format!("u{}", REFUSALS_KEPT + 9));
        assert_eq!(
            refusals.counts(),
            vec![(
                ("console".to_string(), "failed_sign_in"),
                REFUSALS_KEPT as u64 + 10
            )]
        );
    }

    #[test]
    fn filter_by_project_text_and_result() {
        let a = rec("alice", "p1", "instance.create", None);
        let b = rec("bob", "p2", "volume.delete", Some("volume is in use"));
        let only_p1 = AuditFilter {
            project: Some("p1".into()),
            ..Default::default()
        };
        assert!(only_p1.matches(&a) && !only_p1.matches(&b));
        let failed = AuditFilter {
            failed: Some(true),
            ..Default::default()
        };
        assert!(!failed.matches(&a) && failed.matches(&b));
        let text = AuditFilter {
            text: Some("IN USE".into()),
            ..Default::default()
        };
        assert!(!text.matches(&a) && text.matches(&b));
        let text = AuditFilter {
            text: Some("alice".into()),
            ..Default::default()
        };
        assert!(text.matches(&a) && !text.matches(&b));
    }
}
