//! The run-time test CA: a fresh self-signed CA per sandbox whose certificate the platform's checks
//! trust (`/srv/mcp/ca.pem`) and whose key the stand-ins use to sign their leaf certificates
//! (`/srv/<svc>/.standin/ca.pem` + `ca.key`).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::TestbedError;

/// A CA certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate (PEM).
    pub cert_pem: String,
    /// The CA private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl TestCa {
    /// Generates a new CA ("mcrecover testbed CA", ECDSA P-256).
    pub fn generate() -> Result<Self, TestbedError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "mcrecover testbed CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "mcrecover testbed");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_pair() {
        let ca = TestCa::generate().unwrap();
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.key_pem.contains("PRIVATE KEY"));
    }
}
