//! Keypairs (OpenSSH public keys a user registers by name, served to VMs through the
//! metadata service; each user has their own names).

mod generate;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::{now_secs, Control, ControlError};
use crate::cluster::store::compute_tables::{KeypairRecord, Keypairs};
use crate::cluster::store::TxnBuilder;

/// Checks an OpenSSH public key line; the fingerprint of its blob.
pub fn fingerprint(public_key: &str) -> Result<String, ControlError> {
    let parts: Vec<&str> = public_key.split_whitespace().collect();
    let bad = || {
        ControlError::Invalid(
            "the public key is not an OpenSSH key line such as \"ssh-ed25519 AAAA... comment\""
                .into(),
        )
    };
    let (kind, blob) = match parts.as_slice() {
        [k, b, ..] => (*k, *b),
        _ => return Err(bad()),
    };
    if ![
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
    ]
    .contains(&kind)
    {
        return Err(bad());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| bad())?;
    // The blob starts with the key type as an SSH string.
    let n = raw
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(bad)?;
    if raw.get(4..4 + n) != Some(kind.as_bytes()) {
        return Err(bad());
    }
    let digest = Sha256::digest(&raw);
    Ok(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    ))
}

impl Control {
    pub async fn create_keypair(
        &self,
        user: &str,
        name: &str,
        public_key: &str,
    ) -> Result<KeypairRecord, ControlError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(ControlError::Invalid(format!(
                "keypair name {name:?} must be 1-255 printable characters without '/'"
            )));
        }
        let key = format!("{user}/{name}");
        if self.store.get::<Keypairs>(&key)?.is_some() {
            return Err(ControlError::Conflict(format!(
                "Key pair '{name}' already exists."
            )));
        }
        let rec = KeypairRecord {
            name: name.to_string(),
            user: user.to_string(),
            public_key: public_key.trim().to_string(),
            fingerprint: fingerprint(public_key)?,
            created_at: now_secs(),
        };
        let txn = TxnBuilder::new()
            .require_revision::<Keypairs>(key.clone(), 0)
            .put::<Keypairs>(key, &rec);
        self.store.commit(txn).await?;
        Ok(rec)
    }

    /// Makes a key pair for `user` (an Ed25519 key; the comment is the pair's name) and
    /// registers its public half; the private key is returned, once, and kept nowhere.
    pub async fn generate_keypair(
        &self,
        user: &str,
        name: &str,
    ) -> Result<(KeypairRecord, String), ControlError> {
        let g = generate::ed25519(name.trim())?;
        let rec = self.create_keypair(user, name, &g.public_key).await?;
        Ok((rec, g.private_key))
    }

    pub fn keypairs(&self, user: &str) -> Result<Vec<KeypairRecord>, ControlError> {
        let prefix = format!("{user}/");
        let mut v: Vec<KeypairRecord> = self
            .store
            .list::<Keypairs>()?
            .into_iter()
            .filter(|k| k.key.starts_with(&prefix))
            .map(|k| k.value)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    pub fn keypair(&self, user: &str, name: &str) -> Result<KeypairRecord, ControlError> {
        self.store
            .get::<Keypairs>(&format!("{user}/{name}"))?
            .map(|k| k.value)
            .ok_or_else(|| {
                ControlError::NotFound(format!("Keypair {name} not found for user {user}"))
            })
    }

    pub async fn delete_keypair(&self, user: &str, name: &str) -> Result<(), ControlError> {
        self.keypair(user, name)?;
        self.store
            .commit(TxnBuilder::new().delete::<Keypairs>(format!("{user}/{name}")))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssh_keys_are_checked_and_fingerprinted() {
        // An ed25519 key blob: "ssh-ed25519" + 32 bytes.
        let mut blob = Vec::new();
        blob.extend_from_slice(&11u32.to_be_bytes());
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend_from_slice(&[7u8; 32]);
        let line = format!(
            "ssh-ed25519 {} me@host",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        );
        let f = fingerprint(&line).unwrap();
        assert!(f.starts_with("SHA256:") && f.len() == 7 + 43, "{f}");
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-dss AAAA",
            "ssh-ed25519 !!!",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH",
        ] {
            assert!(fingerprint(bad).is_err(), "{bad:?} accepted");
        }
    }
}
