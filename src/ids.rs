//! Typed identifiers. Every resource has its own ID type so that a node ID can never be
//! passed where a token ID is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node's identity in the cluster. It is also the Raft node ID.
///
/// Printed as 16 lowercase hex digits; chosen at random by the node itself when it creates or
/// joins a cluster, so two nodes joining at once never collide in practice.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub u64);

/// Hex text in human-readable formats (JSON, TOML), a plain u64 in binary ones.
impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_string())
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            u64::deserialize(d).map(NodeId)
        }
    }
}

impl NodeId {
    pub fn random() -> Self {
        loop {
            let v: u64 = rand::random();
            if v != 0 {
                return NodeId(v);
            }
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Error for an ID that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid {kind} id {value:?}: expected {expected}")]
pub struct ParseIdError {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

impl FromStr for NodeId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError {
            kind: "node",
            value: s.to_string(),
            expected: "1 to 16 hex digits",
        };
        if s.is_empty() || s.len() > 16 {
            return Err(err());
        }
        u64::from_str_radix(s, 16).map(NodeId).map_err(|_| err())
    }
}

/// The public half of a join token: it names the token record in the store.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenId(pub String);

impl TokenId {
    pub fn random() -> Self {
        let v: [u8; 6] = rand::random();
        TokenId(hex::encode(v))
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({})", self.0)
    }
}

/// A virtual machine. A random UUID (v4 layout), as OpenStack uses for servers.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VmId(pub String);

impl VmId {
    pub fn random() -> Self {
        let mut b: [u8; 16] = rand::random();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        VmId(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VmId({})", self.0)
    }
}

/// A block volume. A random UUID (v4 layout), as Cinder uses; also the name of its
/// region directory on each replica node.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VolumeId(pub String);

impl VolumeId {
    pub fn random() -> Self {
        VolumeId(VmId::random().0)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VolumeId({})", self.0)
    }
}

/// Identifies a cluster; nodes of different clusters refuse each other.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct ClusterId(pub String);

impl ClusterId {
    pub fn random() -> Self {
        let v: [u8; 8] = rand::random();
        ClusterId(hex::encode(v))
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_through_text() {
        let id = NodeId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<NodeId>().unwrap(), id);
    }

    #[test]
    fn node_id_rejects_garbage() {
        assert!("".parse::<NodeId>().is_err());
        assert!("xyz".parse::<NodeId>().is_err());
        assert!("00000000000000001".parse::<NodeId>().is_err());
    }

    #[test]
    fn vm_ids_are_uuid_v4_shaped() {
        let id = VmId::random().0;
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(id.matches('-').count(), 4);
    }

    #[test]
    fn random_node_ids_differ_and_are_never_zero() {
        let a = NodeId::random();
        let b = NodeId::random();
        assert_ne!(a, b);
        assert_ne!(a.0, 0);
    }
}
