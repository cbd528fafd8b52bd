//! Our own TLS handshake with a host codex talks to: it records the certificate chain the
//! server presents (accepting it, so one connection serves every question), and the chain is
//! then verified offline against any set of roots, as codex's rustls client would verify it.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the chain of a host could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The host name is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    Name(String),
    /// The TCP connection or the handshake failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No answer within the time limit.
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
    /// The server presented no certificate.
    #[error("the server presented no certificate")]
    NoCertificate,
    /// The TLS configuration could not be built.
    #[error("{0}")]
    Tls(#[from] rustls::Error),
}

/// The certificates a server presented in a handshake.
#[derive(Debug, Clone)]
pub struct Presented {
    server_name: ServerName<'static>,
    end_entity: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
}

impl Presented {
    /// The end entity first, then the intermediates, as sent.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        std::iter::once(self.end_entity.clone()).chain(self.intermediates.iter().cloned()).collect()
    }

    /// Verifies the chain for its host against `roots`, as a rustls client trusting exactly
    /// them would (an error says why not: unknown issuer, expired, wrong name, ...).
    pub fn verify(&self, roots: &[CertificateDer<'static>]) -> Result<(), rustls::Error> {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(roots.iter().cloned());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::new(ring::default_provider()))
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(&self.end_entity, &self.intermediates, &self.server_name, &[], UnixTime::now())?;
        Ok(())
    }
}

type Seen = (CertificateDer<'static>, Vec<CertificateDer<'static>>);

/// Records the presented chain and accepts it; checks the handshake signatures for real.
#[derive(Debug)]
struct Recorder {
    seen: Mutex<Option<Seen>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = (end_entity.clone().into_owned(), intermediates.iter().map(|c| c.clone().into_owned()).collect());
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Connects to `host:port`, completes a TLS handshake (with SNI for `host`) and returns the
/// chain the server presented, all within `limit`.
pub async fn fetch_chain(host: &str, port: u16, limit: Duration) -> Result<Presented, ProbeError> {
    let server_name = ServerName::try_from(host.to_owned()).map_err(|_| ProbeError::Name(host.to_owned()))?;
    let provider = Arc::new(ring::default_provider());
    let recorder =
        Arc::new(Recorder { seen: Mutex::new(None), algorithms: provider.signature_verification_algorithms });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = server_name.clone();
    let handshake = async move {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        connector.connect(name, tcp).await
    };
    // The connection is closed when dropped: only the chain was wanted.
    let _ = tokio::time::timeout(limit, handshake).await.map_err(|_| ProbeError::Timeout(limit))??;
    let (end_entity, intermediates) =
        recorder.seen.lock().unwrap_or_else(|p| p.into_inner()).take().ok_or(ProbeError::NoCertificate)?;
    Ok(Presented { server_name, end_entity, intermediates })
}
