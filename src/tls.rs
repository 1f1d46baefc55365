//! TLS client settings shared by every client here that talks to a server
//! off the box (the ACME server, the alliance's directory): rustls with
//! aws-lc-rs, trusting the system's roots or only the certificates of one
//! PEM file.

use std::path::Path;
use std::sync::Arc;

/// A client config trusting the certificates in `ca_file` (PEM) only, or
/// the system's roots without one. The error says what is wrong with the
/// file.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| e.to_string())?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("not PEM certificates: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("not a CA certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("holds no certificate".into());
            }
        }
        None => {
            // Certificates the system has but rustls cannot read are
            // skipped, as lettre does.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(
            client_config(Some(&empty)).unwrap_err(),
            "holds no certificate"
        );
        assert!(client_config(Some(&dir.path().join("missing.pem"))).is_err());
        assert!(client_config(None).is_ok());
    }
}
