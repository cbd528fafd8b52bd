//! Our own TLS handshake with a host codex talks to: it records the certificate chain the
//! server presents (accepting it, so one connection serves every question), and the chain is
//! then verified offline against any set of roots by rustls-webpki, as codex's rustls client
//! verifies it; the path it builds names the root that anchors the chain.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the chain of a host could not be fetched.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
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

/// Why a set of roots does not verify a presented chain (rustls-webpki's reason, as rustls
/// would report it to codex).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The server's own certificate cannot be parsed.
    #[error("the server's certificate cannot be read ({0})")]
    EndEntity(webpki::Error),
    /// No chain from the server's certificate to one of the roots (`UnknownIssuer`: none of
    /// them issued it), or a certificate of it is expired or misused.
    #[error("no valid chain to these roots ({0})")]
    Chain(webpki::Error),
    /// The chain is valid but the certificate does not name the host.
    #[error("the certificate is not valid for the host's name ({0})")]
    Name(webpki::Error),
}

/// The certificates a server presented in a handshake.
#[derive(Debug, Clone)]
pub(crate) struct Presented {
    pub(crate) server_name: ServerName<'static>,
    pub(crate) end_entity: CertificateDer<'static>,
    pub(crate) intermediates: Vec<CertificateDer<'static>>,
}

impl Presented {
    /// Verifies the chain for its host against `roots`, as a rustls client trusting exactly
    /// them would (same path building, usage and name checks), and returns the root that
    /// anchors the path found: with cross-signed roots, the one a client with these roots uses.
    /// Roots that are not valid trust anchors are skipped, as rustls skips them.
    pub(crate) fn verify(&self, roots: &[CertificateDer<'static>]) -> Result<CertificateDer<'static>, VerifyError> {
        let (parsed, anchors): (Vec<&CertificateDer<'static>>, Vec<TrustAnchor<'_>>) =
            roots.iter().filter_map(|root| Some((root, webpki::anchor_from_trusted_cert(root).ok()?))).unzip();
        let end_entity = webpki::EndEntityCert::try_from(&self.end_entity).map_err(VerifyError::EndEntity)?;
        let algorithms = ring::default_provider().signature_verification_algorithms.all;
        let path = end_entity
            .verify_for_usage(
                algorithms,
                &anchors,
                &self.intermediates,
                UnixTime::now(),
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map_err(VerifyError::Chain)?;
        end_entity.verify_is_valid_for_subject_name(&self.server_name).map_err(VerifyError::Name)?;
        // The path's anchor is one of `anchors`, each made from the root beside it.
        let root = parsed.iter().zip(&anchors).find(|(_, a)| *a == path.anchor()).map(|(root, _)| (*root).clone());
        root.ok_or(VerifyError::Chain(webpki::Error::UnknownIssuer))
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
pub(crate) async fn fetch_chain(host: &str, port: u16, limit: Duration) -> Result<Presented, ProbeError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    fn ca_params(name: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    }

    fn root(name: &str) -> CertificateDer<'static> {
        ca_params(name).self_signed(&KeyPair::generate().unwrap()).unwrap().der().clone()
    }

    /// What `localhost` presents: its leaf, then `intermediates`.
    fn presented(leaf: CertificateDer<'static>, intermediates: &[&CertificateDer<'static>]) -> Presented {
        let server_name = ServerName::try_from("localhost").unwrap();
        Presented { server_name, end_entity: leaf, intermediates: intermediates.iter().map(|c| (*c).clone()).collect() }
    }

    #[test]
    fn the_anchor_is_the_root_that_issued_the_chain() {
        let root_key = KeyPair::generate().unwrap();
        let root_a = ca_params("Root A").self_signed(&root_key).unwrap().der().clone();
        let inter_key = KeyPair::generate().unwrap();
        let inter =
            ca_params("Intermediate A").signed_by(&inter_key, &Issuer::new(ca_params("Root A"), root_key)).unwrap();
        let inter = inter.der().clone();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&KeyPair::generate().unwrap(), &Issuer::new(ca_params("Intermediate A"), inter_key))
            .unwrap();
        let leaf = leaf.der().clone();
        // Unrelated roots, and garbage that is no trust anchor, are skipped.
        let system = vec![root("Root B"), root_a.clone(), root("Root C"), CertificateDer::from(vec![0x30, 0x00])];
        assert_eq!(presented(leaf.clone(), &[&inter]).verify(&system), Ok(root_a.clone()));
        // A server that sends only its leaf: nothing anchors it.
        let alone = presented(leaf.clone(), &[]).verify(&system);
        assert_eq!(alone, Err(VerifyError::Chain(webpki::Error::UnknownIssuer)));
        // A chain for another name.
        let other =
            Presented { server_name: ServerName::try_from("example.com").unwrap(), ..presented(leaf, &[&inter]) };
        assert!(matches!(other.verify(&system), Err(VerifyError::Name(_))), "{:?}", other.verify(&system));
    }

    /// A root that was cross-signed: the server sends `leaf, intermediate, New Root signed by Old
    /// Root`. A store with both roots anchors the path at New Root (the issuer's name alone would
    /// also keep Old Root); a store with the old root only anchors it there, through the
    /// cross-signed certificate.
    #[test]
    fn a_cross_signed_root_is_anchored_where_the_path_ends() {
        let (old_key, new_key, inter_key) =
            (KeyPair::generate().unwrap(), KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let old_root = ca_params("Old Root").self_signed(&old_key).unwrap().der().clone();
        let new_root = ca_params("New Root").self_signed(&new_key).unwrap().der().clone();
        let cross = ca_params("New Root").signed_by(&new_key, &Issuer::new(ca_params("Old Root"), old_key)).unwrap();
        let cross = cross.der().clone();
        let inter =
            ca_params("Intermediate").signed_by(&inter_key, &Issuer::new(ca_params("New Root"), new_key)).unwrap();
        let inter = inter.der().clone();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&KeyPair::generate().unwrap(), &Issuer::new(ca_params("Intermediate"), inter_key))
            .unwrap();
        let chain = presented(leaf.der().clone(), &[&inter, &cross]);
        let both = [root("Other"), old_root.clone(), new_root.clone()];
        assert_eq!(chain.verify(&both), Ok(new_root.clone()), "the exact anchor, not every root named as an issuer");
        assert_eq!(
            chain.verify(std::slice::from_ref(&new_root)),
            Ok(new_root),
            "a bundle of just that anchor verifies the chain"
        );
        assert_eq!(chain.verify(std::slice::from_ref(&old_root)), Ok(old_root), "through the cross-signed certificate");
        assert!(chain.verify(&[root("Other")]).is_err());
    }
}
