//! TLS towards the service: its CA bundle or the system's roots, an optional client
//! certificate, and certificate checks off only by the explicit `insecure_skip_verify`.

use std::sync::Arc;

use mayfly::Error;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::client::{certificates, private_key, provider};

/// The rustls configuration of one connection; errors name the field at fault.
pub fn client_config(
    ca: Option<&str>,
    certificate: Option<&str>,
    key: Option<&str>,
    insecure: bool,
) -> Result<ClientConfig, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(pem) => {
                for cert in certificates(pem, "tls_ca")? {
                    roots.add(cert).map_err(|e| {
                        Error::bad_request(format!("field 'tls_ca': unusable certificate: {e}"))
                    })?;
                }
            }
            // The system's roots; unreadable ones are skipped, as every TLS client does.
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        builder.with_root_certificates(roots)
    };
    match (certificate, key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates(cert, "tls_certificate")?, private_key(key)?)
            .map_err(|e| {
                Error::bad_request(format!(
                    "fields 'tls_certificate' and 'private_key' do not make a client \
                     certificate: {e}"
                ))
            }),
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(Error::bad_request(
            "fields 'tls_certificate' and 'private_key' go together: give both or neither",
        )),
    }
}

/// Accepts any server certificate (signatures are still checked, so the handshake is sound):
/// `insecure_skip_verify`, for a service on a private network with a self-made certificate
/// whose CA cannot be given.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificate_and_ca_are_checked_by_field() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        assert!(client_config(Some(&cert_pem), Some(&cert_pem), Some(&key_pem), false).is_ok());
        let err = client_config(Some("nope"), None, None, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("field 'tls_ca'"), "{err}");
        let err = client_config(None, Some(&cert_pem), None, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("go together"), "{err}");
        let err = client_config(
            None,
            Some(&cert_pem),
            Some("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("'private_key'") && !err.contains("AAAA"),
            "{err}"
        );
        assert!(client_config(None, None, None, true).is_ok());
    }
}
