//! TLS for barge's own connections: rustls with certificate verification always on. The roots
//! come from `sslrootcert` (a PEM file) or the system store; `verify-ca` skips only the host
//! name check, as libpq's does.

use std::sync::{Arc, OnceLock};

use rustls::{
    DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::WebPkiServerVerifier,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{
    conninfo::{ConnInfo, SslMode},
    error::{Error, Result},
};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A malformed system certificate is skipped, as every TLS client does.
                let _ = roots.add(cert);
            }
            Arc::new(roots)
        })
        .clone()
}

fn roots_for(info: &ConnInfo) -> Result<Arc<RootCertStore>> {
    match info.sslrootcert() {
        None | Some("system") => Ok(system_roots()),
        Some(path) => {
            let fail =
                |reason: String| Error::Url { side: info.side(), reason: format!("sslrootcert {path:?}: {reason}") };
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))?;
            for cert in certs {
                roots.add(cert.map_err(|e| fail(e.to_string()))?).map_err(|e| fail(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(fail("the file holds no certificate".into()));
            }
            Ok(Arc::new(roots))
        }
    }
}

/// The TLS connector for a connection, or `None` when `sslmode=disable`.
pub(crate) fn connector(info: &ConnInfo) -> Result<Option<MakeRustlsConnect>> {
    Ok(client_config(info)?.map(MakeRustlsConnect::new))
}

/// The rustls configuration for a connection, or `None` when `sslmode=disable`: the one
/// place that decides how barge verifies a server.
pub(crate) fn client_config(info: &ConnInfo) -> Result<Option<rustls::ClientConfig>> {
    if info.sslmode() == SslMode::Disable {
        return Ok(None);
    }
    let roots = roots_for(info)?;
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> =
        if info.sslmode() == SslMode::VerifyCa { Arc::new(ChainOnly(webpki)) } else { webpki };
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(config))
}

/// `verify-ca`: the chain must lead to a trusted root; the name in it is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
