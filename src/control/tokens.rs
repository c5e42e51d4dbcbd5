//! Join tokens: `SJ1.<CA fingerprint>.<token id>.<secret>`. The fingerprint lets the joiner
//! pin the cluster CA before it trusts anything; the store keeps only the secret's SHA-256.

use sha2::{Digest, Sha256};

use crate::ids::TokenId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_fingerprint: String,
    pub id: TokenId,
    pub secret: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed join token: {0} (expected SJ1.<64 hex>.<12 hex>.<32 hex>, as printed by `strata token create`)")]
pub struct TokenFormatError(&'static str);

impl JoinToken {
    pub fn generate(ca_fingerprint: &str) -> Self {
        let secret: [u8; 16] = rand::random();
        JoinToken {
            ca_fingerprint: ca_fingerprint.to_string(),
            id: TokenId::random(),
            secret: hex::encode(secret),
        }
    }

    pub fn secret_hash(secret: &str) -> String {
        hex::encode(Sha256::digest(secret.as_bytes()))
    }

    pub fn parse(text: &str) -> Result<Self, TokenFormatError> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        let [prefix, fp, id, secret] = parts.as_slice() else {
            return Err(TokenFormatError("wrong number of parts"));
        };
        if *prefix != "SJ1" {
            return Err(TokenFormatError("unknown prefix"));
        }
        let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_of(fp, 64) {
            return Err(TokenFormatError("bad CA fingerprint"));
        }
        if !hex_of(id, 12) {
            return Err(TokenFormatError("bad token id"));
        }
        if !hex_of(secret, 32) {
            return Err(TokenFormatError("bad secret"));
        }
        Ok(JoinToken {
            ca_fingerprint: fp.to_ascii_lowercase(),
            id: TokenId(id.to_ascii_lowercase()),
            secret: secret.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SJ1.{}.{}.{}", self.ca_fingerprint, self.id, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let t = JoinToken::generate(&"ab".repeat(32));
        let back = JoinToken::parse(&t.to_string()).unwrap();
        assert_eq!(back, t);
        assert!(JoinToken::parse("hello").is_err());
        assert!(JoinToken::parse(&t.to_string().replace("SJ1", "SJ9")).is_err());
        let short = format!("SJ1.{}.{}.abc", t.ca_fingerprint, t.id);
        assert_eq!(
            JoinToken::parse(&short).unwrap_err(),
            TokenFormatError("bad secret")
        );
        assert_ne!(JoinToken::secret_hash(&t.secret), t.secret);
    }
}
