//! PEM files of certificates: reading them as codex does (every `CERTIFICATE` block), writing
//! them, and the placeholder certificate of the minimal bundle.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;

/// Why a PEM file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A block is not valid PEM.
    #[error("{0:?}")]
    Pem(rustls::pki_types::pem::Error),
}

/// Every certificate in a PEM file (other blocks, such as keys or CRLs, are skipped).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = std::fs::read(path)?;
    CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(PemError::Pem)
}

/// The certificates as PEM `CERTIFICATE` blocks (64 columns, `\n` line ends, no blank line
/// between blocks).
pub fn encode(certs: &[CertificateDer<'_>]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    certs.iter().map(|cert| pem::encode_config(&pem::Pem::new("CERTIFICATE", cert.to_vec()), config)).collect()
}

/// A freshly generated self-signed certificate whose private key is thrown away: a root that
/// anchors nothing. codex needs at least one certificate in `SSL_CERT_FILE` to build its lean
/// rustls client (with none it falls back to OpenSSL and the whole system store).
pub fn placeholder() -> Result<CertificateDer<'static>, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "codex-pool placeholder root (trusts nothing)");
    let key = rcgen::KeyPair::generate()?;
    Ok(params.self_signed(&key)?.der().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_pem_reads_back() {
        let certs = vec![placeholder().unwrap(), placeholder().unwrap()];
        assert_ne!(certs[0], certs[1], "each placeholder is new");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.pem");
        std::fs::write(&path, format!("junk before\n{}", encode(&certs))).unwrap();
        assert_eq!(read_certs(&path).unwrap(), certs);
        std::fs::write(&path, "no certificates here\n").unwrap();
        assert!(read_certs(&path).unwrap().is_empty());
        assert!(matches!(read_certs(&dir.path().join("missing.pem")), Err(PemError::Io(_))));
    }
}
