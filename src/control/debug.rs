//! The diagnostic key-value table (`strata debug put/get`, used by benches and fault
//! drills to write through Raft), with its keys and values bounded.

use super::{Control, ControlError};
use crate::cluster::store::tables::DebugKv;
use crate::cluster::store::TxnBuilder;

/// Longest key, in bytes.
pub const KEY_MAX: usize = 256;
/// Largest value, in bytes of JSON (the disk-full test writes 100 KiB values).
pub const VALUE_MAX: usize = 1 << 20;

/// A key of 1 to [`KEY_MAX`] bytes without control characters (NUL included).
pub fn check_key(key: &str) -> Result<(), ControlError> {
    if key.is_empty() || key.len() > KEY_MAX || key.chars().any(char::is_control) {
        return Err(ControlError::Invalid(format!(
            "a debug key is 1 to {KEY_MAX} bytes without control characters (got {} bytes)",
            key.len()
        )));
    }
    Ok(())
}

impl Control {
    /// Writes `value` under `key`; returns the revision.
    pub async fn debug_put(
        &self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<u64, ControlError> {
        check_key(key)?;
        let len = value.to_string().len();
        if len > VALUE_MAX {
            return Err(ControlError::Invalid(format!(
                "a debug value is at most {VALUE_MAX} bytes of JSON (got {len})"
            )));
        }
        Ok(self
            .store
            .commit(TxnBuilder::new().put::<DebugKv>(key, value))
            .await?)
    }

    /// The value under `key` and its revision, read after every earlier commit when
    /// `linearizable`.
    pub async fn debug_get(
        &self,
        key: &str,
        linearizable: bool,
    ) -> Result<Option<(serde_json::Value, u64)>, ControlError> {
        check_key(key)?;
        if linearizable {
            self.store.linearizable().await?;
        }
        Ok(self
            .store
            .get::<DebugKv>(key)?
            .map(|v| (v.value, v.revision)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_and_printable() {
        assert!(check_key("bench/1").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\0b").is_err());
        assert!(check_key("a\nb").is_err());
        assert!(check_key(&"k".repeat(KEY_MAX)).is_ok());
        assert!(check_key(&"k".repeat(KEY_MAX + 1)).is_err());
    }
}
