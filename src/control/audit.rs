//! The audit log: every change asked through the console (and who asked, from where,
//! with what result), kept in the store so that every node shows the same log.

use super::{now_ms, Control, ControlError};
use crate::cluster::store::tables::{Audit, AuditRecord, AUDIT_KEPT};
use crate::cluster::store::TxnBuilder;

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
    /// Appends an entry (its time is set here).
    pub async fn audit(&self, mut rec: AuditRecord) -> Result<(), ControlError> {
        rec.at_ms = now_ms();
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
