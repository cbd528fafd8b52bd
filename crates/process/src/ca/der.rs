//! A tiny DER walker: the issuer and subject of an X.509 certificate, as the raw bytes of their
//! `Name`s (compared byte for byte, as certificate path building does), and the choice of the
//! roots that anchor a presented chain.

use rustls::pki_types::CertificateDer;

/// A certificate whose DER is not what X.509 says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    /// The data ends inside an element.
    #[error("truncated DER")]
    Truncated,
    /// An element has another tag than X.509 puts there.
    #[error("unexpected DER tag {found:#04x} where {expected} was expected")]
    UnexpectedTag {
        /// What X.509 puts there.
        expected: &'static str,
        /// The tag found.
        found: u8,
    },
    /// A length form DER does not allow (indefinite, or longer than 4 bytes).
    #[error("unsupported DER length")]
    Length,
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;

/// One element: its tag, its whole encoding, its content, and what follows it.
struct Element<'a> {
    tag: u8,
    whole: &'a [u8],
    content: &'a [u8],
    rest: &'a [u8],
}

fn element(input: &[u8]) -> Result<Element<'_>, DerError> {
    let (&tag, after_tag) = input.split_first().ok_or(DerError::Truncated)?;
    let (&first, after_len) = after_tag.split_first().ok_or(DerError::Truncated)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err(DerError::Length);
        }
        let bytes = after_len.get(..n).ok_or(DerError::Truncated)?;
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), 2 + n)
    };
    let end = header.checked_add(len).ok_or(DerError::Length)?;
    let whole = input.get(..end).ok_or(DerError::Truncated)?;
    Ok(Element { tag, whole, content: &whole[header..], rest: &input[end..] })
}

fn expect<'a>(input: &'a [u8], tag: u8, expected: &'static str) -> Result<Element<'a>, DerError> {
    let e = element(input)?;
    if e.tag != tag {
        return Err(DerError::UnexpectedTag { expected, found: e.tag });
    }
    Ok(e)
}

/// The issuer and subject `Name`s of a certificate, as their whole DER encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names<'a> {
    /// Who signed it.
    pub issuer: &'a [u8],
    /// Whom it names.
    pub subject: &'a [u8],
}

/// Reads the issuer and subject of a DER certificate:
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
/// signature, issuer, validity, subject, ... }, ... }`.
pub fn names(cert: &[u8]) -> Result<Names<'_>, DerError> {
    let certificate = expect(cert, SEQUENCE, "Certificate")?;
    let tbs = expect(certificate.content, SEQUENCE, "TBSCertificate")?;
    let mut rest = tbs.content;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.rest;
    }
    let serial = expect(rest, INTEGER, "serialNumber")?;
    let signature = expect(serial.rest, SEQUENCE, "signature AlgorithmIdentifier")?;
    let issuer = expect(signature.rest, SEQUENCE, "issuer Name")?;
    let validity = expect(issuer.rest, SEQUENCE, "validity")?;
    let subject = expect(validity.rest, SEQUENCE, "subject Name")?;
    Ok(Names { issuer: issuer.whole, subject: subject.whole })
}

/// The roots that anchor a chain: every root whose subject is the issuer of a certificate of
/// the chain (the end entity and the intermediates the server sent). Roots that do not parse
/// are skipped; so are chain certificates.
pub fn select_roots(chain: &[CertificateDer<'_>], roots: &[CertificateDer<'static>]) -> Vec<CertificateDer<'static>> {
    let issuers: Vec<&[u8]> = chain.iter().filter_map(|c| names(c).ok()).map(|n| n.issuer).collect();
    roots.iter().filter(|root| names(root).is_ok_and(|n| issuers.contains(&n.subject))).cloned().collect()
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

    #[test]
    fn names_of_an_rcgen_chain() {
        let root_key = KeyPair::generate().unwrap();
        let root = ca_params("Test Root").self_signed(&root_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let issuer = Issuer::new(ca_params("Test Root"), root_key);
        let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
        let r = names(root.der()).unwrap();
        let l = names(leaf.der()).unwrap();
        assert_eq!(r.issuer, r.subject, "a self-signed root is its own issuer");
        assert_eq!(l.issuer, r.subject, "the leaf names the root as its issuer");
        assert_ne!(l.subject, l.issuer);
        // The name holds the common name's text.
        assert!(r.subject.windows(9).any(|w| w == b"Test Root"));
    }

    #[test]
    fn bad_der_is_an_error_not_a_panic() {
        assert_eq!(names(&[]), Err(DerError::Truncated));
        assert_eq!(names(&[0x30, 0x05, 0x30]), Err(DerError::Truncated));
        assert_eq!(names(&[0x30, 0x80]), Err(DerError::Length));
        assert!(matches!(names(&[0x02, 0x01, 0x00]), Err(DerError::UnexpectedTag { found: 0x02, .. })));
        // A long-form length is read.
        let mut long = vec![0x30, 0x81, 0x04, 0x30, 0x02, 0x05, 0x00];
        assert!(matches!(names(&long), Err(DerError::UnexpectedTag { expected: "serialNumber", found: 0x05 })));
        long[2] = 0x09;
        assert_eq!(names(&long), Err(DerError::Truncated));
    }

    #[test]
    fn the_roots_kept_are_those_that_issued_the_chain() {
        let root_key = KeyPair::generate().unwrap();
        let root = ca_params("Root A").self_signed(&root_key).unwrap();
        let inter_key = KeyPair::generate().unwrap();
        let inter =
            ca_params("Intermediate A").signed_by(&inter_key, &Issuer::new(ca_params("Root A"), root_key)).unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&KeyPair::generate().unwrap(), &Issuer::new(ca_params("Intermediate A"), inter_key))
            .unwrap();
        let others: Vec<CertificateDer<'static>> = ["Root B", "Root C"]
            .iter()
            .map(|n| ca_params(n).self_signed(&KeyPair::generate().unwrap()).unwrap().der().clone())
            .collect();
        let mut system = others.clone();
        system.insert(1, root.der().clone());
        system.push(CertificateDer::from(vec![0x30, 0x00])); // garbage in the store is skipped
        let chain = [leaf.der().clone(), inter.der().clone()];
        assert_eq!(select_roots(&chain, &system), vec![root.der().clone()]);
        // A server that sends only its leaf: the intermediate is not a root, nothing anchors it.
        assert!(select_roots(&chain[..1], &system).is_empty());
        // A store that holds the intermediate too keeps both.
        system.push(inter.der().clone());
        assert_eq!(select_roots(&chain, &system), vec![root.der().clone(), inter.der().clone()]);
    }
}
