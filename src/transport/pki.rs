//! The cluster's own certificate authority and node certificates (rcgen).
//!
//! Every node certificate carries two DNS names: `<node-id>.node.strata`, which pins the
//! node's identity, and `node.strata`, which a joining node uses before it knows whom it
//! talks to. The same certificate serves both TLS directions.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::ids::NodeId;

/// The name every node certificate carries in addition to its own.
pub const ANY_NODE_NAME: &str = "node.strata";

/// The DNS name that identifies one node.
pub fn node_dns_name(id: NodeId) -> String {
    format!("{id}.{ANY_NODE_NAME}")
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate {what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid {what}")]
    Parse {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never print it.
        f.debug_struct("CertifiedKey").finish_non_exhaustive()
    }
}

impl CertifiedKey {
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        pem_to_cert_der(&self.cert_pem)
    }

    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>, PkiError> {
        let kp = KeyPair::from_pem(&self.key_pem).map_err(|source| PkiError::Parse {
            what: "private key",
            source,
        })?;
        Ok(PrivateKeyDer::Pkcs8(kp.serialize_der().into()))
    }
}

pub fn pem_to_cert_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Invalid {
        what: "certificate PEM",
        reason: e.to_string(),
    })
}

/// SHA-256 of a certificate's DER, in hex: what a join token pins.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The cluster CA. Its key signs node certificates when nodes join.
#[derive(Clone, Debug)]
pub struct ClusterCa(pub CertifiedKey);

impl ClusterCa {
    pub fn generate(cluster_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(|source| PkiError::Generate {
            what: "CA key",
            source,
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("strata cluster CA {cluster_name}"),
        );
        dn.push(DnType::OrganizationName, "strata");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "CA certificate",
                source,
            })?;
        Ok(ClusterCa(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }))
    }

    #[cfg(test)]
    pub fn fingerprint(&self) -> Result<String, PkiError> {
        Ok(fingerprint(&self.0.cert_der()?))
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.0.key_pem).map_err(|source| PkiError::Parse {
            what: "CA key",
            source,
        })?;
        Issuer::from_ca_cert_pem(&self.0.cert_pem, key).map_err(|source| PkiError::Parse {
            what: "CA certificate",
            source,
        })
    }

    fn node_params(node: NodeId) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::new(vec![node_dns_name(node), ANY_NODE_NAME.into()])
            .map_err(|source| PkiError::Generate {
                what: "node certificate parameters",
                source,
            })?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_dns_name(node));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(5 * 365);
        Ok(params)
    }

    /// Issues a certificate and key for `node` (used for the node that creates the cluster).
    pub fn issue_node(&self, node: NodeId) -> Result<CertifiedKey, PkiError> {
        let key = KeyPair::generate().map_err(|source| PkiError::Generate {
            what: "node key",
            source,
        })?;
        let cert = Self::node_params(node)?
            .signed_by(&key, &self.issuer()?)
            .map_err(|source| PkiError::Generate {
                what: "node certificate",
                source,
            })?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a TLS server certificate (for the OpenStack API) naming `dns` and `ips`.
    pub fn issue_server(
        &self,
        dns: &[String],
        ips: &[std::net::IpAddr],
    ) -> Result<CertifiedKey, PkiError> {
        let key = KeyPair::generate().map_err(|source| PkiError::Generate {
            what: "API key",
            source,
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            dns.first().cloned().unwrap_or_else(|| "strata-api".into()),
        );
        params.distinguished_name = dn;
        for d in dns {
            let name = d.clone().try_into().map_err(|source| PkiError::Generate {
                what: "API certificate name",
                source,
            })?;
            params.subject_alt_names.push(rcgen::SanType::DnsName(name));
        }
        for ip in ips {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(*ip));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        let cert =
            params
                .signed_by(&key, &self.issuer()?)
                .map_err(|source| PkiError::Generate {
                    what: "API certificate",
                    source,
                })?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a joining node's CSR. Only the CSR's public key is used: names, usages and
    /// lifetime come from the CA's own rules, so a joiner cannot ask for more.
    pub fn sign_csr(&self, node: NodeId, csr_der: &[u8]) -> Result<String, PkiError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|source| PkiError::Parse {
                    what: "certificate signing request",
                    source,
                })?;
        let cert = Self::node_params(node)?
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(|source| PkiError::Generate {
                what: "node certificate",
                source,
            })?;
        Ok(cert.pem())
    }
}

/// A fresh node key and a CSR for it. Returns (key PEM, CSR DER).
pub fn node_key_and_csr(node: NodeId) -> Result<(String, Vec<u8>), PkiError> {
    let key = KeyPair::generate().map_err(|source| PkiError::Generate {
        what: "node key",
        source,
    })?;
    let params =
        CertificateParams::new(vec![node_dns_name(node)]).map_err(|source| PkiError::Generate {
            what: "CSR parameters",
            source,
        })?;
    let csr = params
        .serialize_request(&key)
        .map_err(|source| PkiError::Generate {
            what: "certificate signing request",
            source,
        })?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// The node ID a certificate was issued to, read from its `<id>.node.strata` name.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<NodeId> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => dns
            .strip_suffix(&format!(".{ANY_NODE_NAME}"))
            .and_then(|id| id.parse().ok()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificates_name_their_node() {
        let ca = ClusterCa::generate("t").unwrap();
        let node = NodeId(42);
        let ck = ca.issue_node(node).unwrap();
        assert_eq!(node_id_of(&ck.cert_der().unwrap()), Some(node));
        let (key, csr) = node_key_and_csr(NodeId(7)).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let pem = ca.sign_csr(NodeId(7), &csr).unwrap();
        assert_eq!(node_id_of(&pem_to_cert_der(&pem).unwrap()), Some(NodeId(7)));
    }

    #[test]
    fn garbage_csr_is_refused() {
        let ca = ClusterCa::generate("t").unwrap();
        assert!(ca.sign_csr(NodeId(1), b"not a csr").is_err());
    }

    #[test]
    fn fingerprints_differ_between_cas_and_keys_never_print() {
        let a = ClusterCa::generate("a").unwrap();
        let b = ClusterCa::generate("b").unwrap();
        assert_ne!(a.fingerprint().unwrap(), b.fingerprint().unwrap());
        assert_eq!(a.fingerprint().unwrap().len(), 64);
        let dbg = format!("{:?}", a);
        assert!(!dbg.contains("PRIVATE"), "{dbg}");
    }
}
