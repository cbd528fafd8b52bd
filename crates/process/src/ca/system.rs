//! Where the system's root certificates are, found the way OpenSSL's probing finds them: the
//! variables first, then the usual bundle files of each distribution.

use std::path::PathBuf;

/// codex's own variable for a CA file; it wins over `SSL_CERT_FILE`.
pub(crate) const CODEX_CA_CERT_ENV: &str = "CODEX_CA_CERTIFICATE";
/// OpenSSL's (and rustls-native-certs') variable for a CA file.
pub(crate) const SSL_CERT_FILE_ENV: &str = "SSL_CERT_FILE";
/// OpenSSL's (and rustls-native-certs') variable for a folder of hashed CA files.
pub(crate) const SSL_CERT_DIR_ENV: &str = "SSL_CERT_DIR";

/// The usual system bundles (Debian/Ubuntu, RHEL/Fedora, openSUSE, Alpine and the BSDs).
pub(crate) const BUNDLE_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
    "/usr/local/ssl/cert.pem",
];

/// The files whose certificates codex trusts when nothing is set for it, read from this
/// process's environment (which codex inherits): `CODEX_CA_CERTIFICATE` if set, plus
/// `SSL_CERT_FILE` if set, else the first usual bundle that exists.
pub(crate) fn default_files(var: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut files: Vec<PathBuf> = set(CODEX_CA_CERT_ENV).into_iter().collect();
    match set(SSL_CERT_FILE_ENV) {
        Some(file) => files.push(file),
        None => files.extend(BUNDLE_FILES.iter().map(PathBuf::from).find(|p| p.is_file())),
    }
    files
}

/// Whether connections to `host` go through a proxy that this process's environment (which
/// codex inherits) names: `HTTPS_PROXY` or `ALL_PROXY` (any case), unless `NO_PROXY` covers it.
pub(crate) fn proxied(host: &str, var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |names: &[&str]| names.iter().find_map(|n| var(n).filter(|v| !v.trim().is_empty()));
    if set(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]).is_none() {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let no_proxy = set(&["NO_PROXY", "no_proxy"]).unwrap_or_default();
    !no_proxy
        .split(',')
        .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
        .any(|entry| entry == "*" || (!entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}")))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn the_variables_come_before_the_usual_files() {
        let files = default_files(vars(&[("CODEX_CA_CERTIFICATE", "/a.pem"), ("SSL_CERT_FILE", "/b.pem")]));
        assert_eq!(files, vec![PathBuf::from("/a.pem"), PathBuf::from("/b.pem")]);
        let files = default_files(vars(&[("SSL_CERT_FILE", "")]));
        assert!(files.iter().all(|f| BUNDLE_FILES.contains(&f.to_str().unwrap())), "{files:?}");
    }

    #[test]
    fn proxies_and_their_exceptions() {
        assert!(!proxied("api.openai.com", vars(&[])));
        assert!(proxied("api.openai.com", vars(&[("https_proxy", "http://p:3128")])));
        let v = vars(&[("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", "localhost, .openai.com,127.0.0.1")]);
        assert!(!proxied("api.openai.com", &v));
        assert!(!proxied("127.0.0.1", &v));
        assert!(proxied("chatgpt.com", &v));
        assert!(!proxied("chatgpt.com", vars(&[("ALL_PROXY", "socks5://p"), ("no_proxy", "*")])));
    }
}
