//! Who a `wss://` connection trusts.
//!
//! One [`TlsConfig`] is built once and shared by every connection (the load generator
//! opens thousands; reading the system's roots or a CA file per socket would dominate
//! its start). Verification is rustls's WebPKI: the chain must lead to a trusted root
//! and the certificate must name the URL's host.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::ClientError;

/// The roots a `wss://` connection trusts.
#[derive(Clone)]
pub struct TlsConfig(pub(crate) Arc<rustls::ClientConfig>);

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfig")
    }
}

impl TlsConfig {
    /// Trusts the operating system's roots (what `wss://` uses unless told otherwise).
    /// Loaded once per process.
    pub fn system_roots() -> Result<TlsConfig, ClientError> {
        static SYSTEM: OnceLock<Result<TlsConfig, String>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "none installed".into());
                    return Err(format!("no usable system root certificates ({why})"));
                }
                Ok(TlsConfig::with_roots(roots))
            })
            .clone()
            .map_err(|reason| ClientError::Tls { reason })
    }

    /// Trusts only the CA certificates in a PEM file (a private CA, or a test's).
    pub fn with_ca_file(path: impl AsRef<Path>) -> Result<TlsConfig, ClientError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| ClientError::Tls {
            reason: format!("reading CA file {}: {e}", path.display()),
        })?;
        TlsConfig::with_ca_pem(&pem).map_err(|e| match e {
            ClientError::Tls { reason } => ClientError::Tls {
                reason: format!("{}: {reason}", path.display()),
            },
            e => e,
        })
    }

    /// Trusts only the CA certificates in `pem`.
    pub fn with_ca_pem(pem: &[u8]) -> Result<TlsConfig, ClientError> {
        let invalid = |reason: String| ClientError::Tls { reason };
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(invalid("no certificate in the CA file".into()));
        }
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| invalid(format!("unusable CA certificate: {e}")))?;
        }
        Ok(TlsConfig::with_roots(roots))
    }

    fn with_roots(roots: RootCertStore) -> TlsConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConfig(Arc::new(config))
    }
}
