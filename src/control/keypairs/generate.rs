//! Key pairs made by Strata for users who give no public key (Nova at microversion 2.1
//! does the same): an Ed25519 key, the private half in OpenSSH's own file format,
//! returned once and never stored.

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::control::ControlError;

/// A new key pair: the OpenSSH public key line and the private key file's text.
pub struct Generated {
    pub public_key: String,
    pub private_key: String,
}

impl std::fmt::Debug for Generated {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generated")
            .field("public_key", &self.public_key)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

const KIND: &str = "ssh-ed25519";

/// Makes an Ed25519 key pair; `comment` ends the public line and is kept in the private
/// file, as `ssh-keygen -C` does.
pub fn ed25519(comment: &str) -> Result<Generated, ControlError> {
    let rng = SystemRandom::new();
    let failed =
        |what: &str| ControlError::Invalid(format!("could not generate a key pair: {what}"));
    let mut seed = [0u8; 32];
    rng.fill(&mut seed)
        .map_err(|_| failed("the system's random source failed"))?;
    let mut check = [0u8; 4];
    rng.fill(&mut check)
        .map_err(|_| failed("the system's random source failed"))?;
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| failed("bad seed"))?;
    let public: [u8; 32] = pair
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| failed("unexpected public key length"))?;
    Ok(Generated {
        public_key: public_line(&public, comment),
        private_key: private_file(&seed, &public, comment, check),
    })
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn public_blob(public: &[u8; 32]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(51);
    put_string(&mut blob, KIND.as_bytes());
    put_string(&mut blob, public);
    blob
}

fn public_line(public: &[u8; 32], comment: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(public_blob(public));
    format!("{KIND} {b64} {comment}").trim_end().to_string()
}

/// OpenSSH's private key format (`openssh-key-v1`, PROTOCOL.key in its sources),
/// unencrypted: one key, cipher and KDF "none".
fn private_file(seed: &[u8; 32], public: &[u8; 32], comment: &str, check: [u8; 4]) -> String {
    let mut section = Vec::new();
    section.extend_from_slice(&check);
    section.extend_from_slice(&check);
    put_string(&mut section, KIND.as_bytes());
    put_string(&mut section, public);
    let mut secret = Vec::with_capacity(64);
    secret.extend_from_slice(seed);
    secret.extend_from_slice(public);
    put_string(&mut section, &secret);
    put_string(&mut section, comment.as_bytes());
    // Padded with 1, 2, 3, ... to the cipher's block size (8 for "none").
    let mut pad = 1u8;
    while !section.len().is_multiple_of(8) {
        section.push(pad);
        pad += 1;
    }
    let mut body = b"openssh-key-v1\0".to_vec();
    put_string(&mut body, b"none");
    put_string(&mut body, b"none");
    put_string(&mut body, b"");
    body.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut body, &public_blob(public));
    put_string(&mut body, &section);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&body);
    let mut text = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(70) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_one_openssh_reads_back_and_its_public_half_is_accepted() {
        let a = ed25519("k1").unwrap();
        let b = ed25519("k1").unwrap();
        assert_ne!(a.public_key, b.public_key, "two keys came out the same");
        assert!(
            !format!("{a:?}").contains("PRIVATE"),
            "the private key is printed"
        );
        // The public line passes the same check as an imported one.
        super::super::fingerprint(&a.public_key).unwrap();
        assert!(a.public_key.starts_with("ssh-ed25519 ") && a.public_key.ends_with(" k1"));
        // OpenSSH itself derives the same public key from the private file
        // (ssh-keygen is in openssh-client, which scripts/install-deps.sh installs).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, &a.private_key).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let o = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("ssh-keygen (Debian package openssh-client)");
        assert!(
            o.status.success(),
            "ssh-keygen refused the private key: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), a.public_key);
    }
}
