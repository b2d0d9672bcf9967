//! TLS towards a target, for the kinds that speak TLS themselves (http, redis): its CA bundle
//! or the system's roots, an optional client certificate, and certificate checks off only by an
//! explicit switch. Errors name the connection field at fault and never quote a key.

use std::sync::Arc;

use mayfly::Error;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What a connection asks of TLS, with the names of the fields that said it (kinds name them
/// differently: `tls_ca` for http, `ca_cert` for redis, as OpenBao's plugins do).
pub struct ClientTls<'a> {
    /// (field, PEM) of the CAs the server's certificate is checked against; `None` for the
    /// system's roots.
    pub ca: Option<(&'a str, &'a str)>,
    pub certificate: Option<&'a str>,
    pub key: Option<&'a str>,
    /// Take any server certificate.
    pub insecure: bool,
}

/// The rustls configuration of one connection; errors name the field at fault.
pub fn client_config(tls: &ClientTls<'_>) -> Result<ClientConfig, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?;
    let builder = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match tls.ca {
            Some((field, pem)) => {
                for cert in certificates(pem, field)? {
                    roots.add(cert).map_err(|e| {
                        Error::bad_request(format!("field '{field}': unusable certificate: {e}"))
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
    match (tls.certificate, tls.key) {
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

/// The name the server's certificate must carry: the host of `address` (`host:port`, or
/// `[v6]:port`), or an error naming `field`.
pub fn server_name(address: &str, field: &str) -> Result<ServerName<'static>, Error> {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| {
        Error::bad_request(format!(
            "field '{field}': '{host}' cannot name a TLS server: {e}"
        ))
    })
}

/// Parses PEM certificates, naming `field` in errors.
pub fn certificates(pem: &str, field: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::bad_request(format!("field '{field}': not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(Error::bad_request(format!(
            "field '{field}': no PEM certificate found"
        )));
    }
    Ok(certs)
}

/// Parses a PEM private key. The error never quotes the key.
pub fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        Error::bad_request(
            "field 'private_key': expected a PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })
}

/// The crypto every connection's TLS uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts any server certificate (signatures are still checked, so the handshake is sound):
/// the connection's switch (`insecure_skip_verify`, `insecure_tls`), for a server on a private network with a self-made certificate
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

    fn tls<'a>(
        ca: Option<&'a str>,
        certificate: Option<&'a str>,
        key: Option<&'a str>,
        insecure: bool,
    ) -> ClientTls<'a> {
        ClientTls {
            ca: ca.map(|pem| ("tls_ca", pem)),
            certificate,
            key,
            insecure,
        }
    }

    #[test]
    fn server_names_come_from_the_address() {
        assert!(server_name("redis.internal:6380", "host").is_ok());
        assert!(server_name("127.0.0.1:6380", "host").is_ok());
        assert!(server_name("[::1]:6380", "host").is_ok());
        let err = server_name("bad name:1", "host").unwrap_err().to_string();
        assert!(err.contains("field 'host'"), "{err}");
    }

    #[test]
    fn client_certificate_and_ca_are_checked_by_field() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        assert!(
            client_config(&tls(
                Some(&cert_pem),
                Some(&cert_pem),
                Some(&key_pem),
                false
            ))
            .is_ok()
        );
        let err = client_config(&tls(Some("nope"), None, None, false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field 'tls_ca'"), "{err}");
        let err = client_config(&tls(None, Some(&cert_pem), None, false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("go together"), "{err}");
        let err = client_config(&tls(
            None,
            Some(&cert_pem),
            Some("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            false,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("'private_key'") && !err.contains("AAAA"),
            "{err}"
        );
        assert!(client_config(&tls(None, None, None, true)).is_ok());
    }
}
