//! The replicated state: a set of named tables of versioned records, changed only by
//! applying committed commands. Deterministic: the result depends only on the command and
//! the log index it was committed at, never on the clock or the node applying it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A command as stored in the Raft log. The enum tag is the command's format version:
/// new formats are added as new variants and old ones stay decodable forever.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    V1(Txn),
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::V1(t) => write!(f, "txn({} checks, {} ops)", t.checks.len(), t.ops.len()),
        }
    }
}

/// All-or-nothing: if every check holds, every op is applied at one revision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub checks: Vec<Check>,
    pub ops: Vec<Op>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The record's revision equals `revision`; 0 means "the record does not exist".
    Revision {
        table: String,
        key: String,
        revision: u64,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        table: String,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        table: String,
        key: String,
    },
    /// Appends to a log-like table under the next sequence number (zero-padded, so keys sort).
    Append {
        table: String,
        value: Vec<u8>,
    },
    /// Drops the oldest records of a log-like table until at most `keep` remain.
    Trim {
        table: String,
        keep: u64,
    },
}

/// What applying a command produced; returned to the writer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum TxnResult {
    Applied {
        revision: u64,
    },
    CheckFailed {
        table: String,
        key: String,
        expected: u64,
        actual: u64,
    },
    /// Non-application entries (blank, membership) produce this.
    None,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub value: Vec<u8>,
    /// Log index of the command that last wrote the record.
    pub revision: u64,
    /// Log index of the command that created it.
    pub created: u64,
}

/// One change made by an applied command, as delivered to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub table: String,
    pub key: String,
    pub revision: u64,
    /// `None` when the record was deleted.
    pub value: Option<Vec<u8>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Data {
    pub tables: BTreeMap<String, BTreeMap<String, Record>>,
    pub sequences: BTreeMap<String, u64>,
}

pub fn seq_key(n: u64) -> String {
    format!("{n:020}")
}

impl Data {
    pub fn get(&self, table: &str, key: &str) -> Option<&Record> {
        self.tables.get(table).and_then(|t| t.get(key))
    }

    pub fn table(&self, table: &str) -> impl DoubleEndedIterator<Item = (&String, &Record)> {
        self.tables.get(table).into_iter().flat_map(|t| t.iter())
    }

    fn revision_of(&self, table: &str, key: &str) -> u64 {
        self.get(table, key).map(|r| r.revision).unwrap_or(0)
    }

    /// Applies `cmd` committed at `index`, recording each change in `changes`.
    pub fn apply(&mut self, index: u64, cmd: &Command, changes: &mut Vec<Change>) -> TxnResult {
        let Command::V1(txn) = cmd;
        for Check::Revision {
            table,
            key,
            revision,
        } in &txn.checks
        {
            let actual = self.revision_of(table, key);
            if actual != *revision {
                return TxnResult::CheckFailed {
                    table: table.clone(),
                    key: key.clone(),
                    expected: *revision,
                    actual,
                };
            }
        }
        for op in &txn.ops {
            match op {
                Op::Put { table, key, value } => {
                    let t = self.tables.entry(table.clone()).or_default();
                    let created = t.get(key).map(|r| r.created).unwrap_or(index);
                    t.insert(
                        key.clone(),
                        Record {
                            value: value.clone(),
                            revision: index,
                            created,
                        },
                    );
                    changes.push(Change {
                        table: table.clone(),
                        key: key.clone(),
                        revision: index,
                        value: Some(value.clone()),
                    });
                }
                Op::Delete { table, key } => {
                    if let Some(t) = self.tables.get_mut(table) {
                        if t.remove(key).is_some() {
                            changes.push(Change {
                                table: table.clone(),
                                key: key.clone(),
                                revision: index,
                                value: None,
                            });
                        }
                    }
                }
                Op::Append { table, value } => {
                    let seq = self.sequences.entry(table.clone()).or_insert(0);
                    *seq += 1;
                    let key = seq_key(*seq);
                    self.tables.entry(table.clone()).or_default().insert(
                        key.clone(),
                        Record {
                            value: value.clone(),
                            revision: index,
                            created: index,
                        },
                    );
                    changes.push(Change {
                        table: table.clone(),
                        key,
                        revision: index,
                        value: Some(value.clone()),
                    });
                }
                Op::Trim { table, keep } => {
                    if let Some(t) = self.tables.get_mut(table) {
                        while t.len() as u64 > *keep {
                            let Some((k, _)) = t.pop_first() else { break };
                            changes.push(Change {
                                table: table.clone(),
                                key: k,
                                revision: index,
                                value: None,
                            });
                        }
                    }
                }
            }
        }
        TxnResult::Applied { revision: index }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(table: &str, key: &str, v: &[u8]) -> Op {
        Op::Put {
            table: table.into(),
            key: key.into(),
            value: v.to_vec(),
        }
    }

    #[test]
    fn revisions_follow_log_indexes_and_checks_guard_writes() {
        let mut d = Data::default();
        let mut ch = vec![];
        let r = d.apply(
            5,
            &Command::V1(Txn {
                checks: vec![],
                ops: vec![put("t", "a", b"1")],
            }),
            &mut ch,
        );
        assert_eq!(r, TxnResult::Applied { revision: 5 });
        assert_eq!(d.get("t", "a").unwrap().revision, 5);
        // A check against a stale revision fails and changes nothing.
        let stale = Command::V1(Txn {
            checks: vec![Check::Revision {
                table: "t".into(),
                key: "a".into(),
                revision: 4,
            }],
            ops: vec![put("t", "a", b"2")],
        });
        assert!(matches!(
            d.apply(6, &stale, &mut ch),
            TxnResult::CheckFailed { actual: 5, .. }
        ));
        assert_eq!(d.get("t", "a").unwrap().value, b"1");
        // "Must not exist" is revision 0.
        let create = Command::V1(Txn {
            checks: vec![Check::Revision {
                table: "t".into(),
                key: "b".into(),
                revision: 0,
            }],
            ops: vec![put("t", "b", b"x")],
        });
        assert_eq!(
            d.apply(7, &create, &mut ch),
            TxnResult::Applied { revision: 7 }
        );
        assert!(matches!(
            d.apply(8, &create, &mut ch),
            TxnResult::CheckFailed { .. }
        ));
        assert_eq!(ch.len(), 2);
    }

    #[test]
    fn append_assigns_sorted_sequence_keys_and_trim_drops_the_oldest() {
        let mut d = Data::default();
        let mut ch = vec![];
        for i in 0..12u64 {
            let cmd = Command::V1(Txn {
                checks: vec![],
                ops: vec![Op::Append {
                    table: "ev".into(),
                    value: vec![i as u8],
                }],
            });
            d.apply(i + 1, &cmd, &mut ch);
        }
        let keys: Vec<_> = d.table("ev").map(|(k, _)| k.clone()).collect();
        assert_eq!(keys.first().unwrap(), &seq_key(1));
        assert_eq!(keys.last().unwrap(), &seq_key(12));
        let trim = Command::V1(Txn {
            checks: vec![],
            ops: vec![Op::Trim {
                table: "ev".into(),
                keep: 10,
            }],
        });
        d.apply(13, &trim, &mut ch);
        assert_eq!(d.table("ev").count(), 10);
        assert_eq!(d.table("ev").next().unwrap().0, &seq_key(3));
    }

    /// Frozen bytes of a V1 command: if this test fails, the log format changed and old
    /// logs would no longer decode. Add a new variant instead of changing V1.
    #[test]
    fn command_v1_encoding_is_frozen() {
        let cmd = Command::V1(Txn {
            checks: vec![Check::Revision {
                table: "t".into(),
                key: "k".into(),
                revision: 3,
            }],
            ops: vec![
                put("t", "k", b"v"),
                Op::Delete {
                    table: "t".into(),
                    key: "x".into(),
                },
            ],
        });
        let bytes = postcard::to_stdvec(&cmd).unwrap();
        assert_eq!(hex::encode(&bytes), FROZEN_V1);
        let back: Command = postcard::from_bytes(&hex::decode(FROZEN_V1).unwrap()).unwrap();
        assert_eq!(back, cmd);
    }

    const FROZEN_V1: &str = "0001000174016b0302000174016b01760101740178";
}
