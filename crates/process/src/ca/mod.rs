//! The root certificates codex trusts.
//!
//! codex (0.169, 0.171) builds a new HTTP client for every model request, and with it a root store: with
//! nothing set it parses the whole system store through OpenSSL (about half of its CPU per turn
//! on a fast model); with `SSL_CERT_FILE` naming a PEM file of at least one certificate it takes
//! a rustls client that trusts exactly that file (plus `SSL_CERT_DIR`, so that points at an empty
//! folder). [`CaSetup::resolve`] decides what codex gets, once per pool:
//!
//! - a provider reached over plain `http://` needs no roots: a minimal bundle of one placeholder
//!   certificate (with [`CaBundle::Auto`]);
//! - [`CaBundle::Auto`] for `https://`: our own handshake with each host codex talks to, the
//!   chain verified against the system roots by rustls-webpki (what codex's rustls client runs),
//!   and a bundle of just the roots that anchor the paths it builds; without network (or behind
//!   a proxy), the system roots;
//! - [`CaBundle::System`]: codex's default;
//! - [`CaBundle::Path`]: the user's own file.
//!
//! [`CaSetup::diagnose`] tells whether a connection failure comes from a reduced bundle (it
//! rejects a chain the system roots accept), so the pool can fall back to the system roots.

mod pem;
mod probe;
mod system;

pub use pem::{encode as encode_pem, placeholder, read_certs, PemError};
pub use probe::VerifyError;
pub(crate) use system::{CODEX_CA_CERT_ENV, SSL_CERT_DIR_ENV, SSL_CERT_FILE_ENV};

use probe::{fetch_chain, Presented, ProbeError};

use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The hosts codex talks to with the OpenAI login (`--openai`, no custom provider): model
/// traffic with an API key (`api.openai.com/v1`), model traffic with a ChatGPT login
/// (`chatgpt.com/backend-api/codex`, also over websocket), login and token refresh
/// (`auth.openai.com`). From codex-rs `model-provider-info` and `login`.
pub(crate) const OPENAI_HOSTS: &[&str] = &["api.openai.com", "chatgpt.com", "auth.openai.com"];

/// Which roots codex gets for an `https` provider (`--ca-bundle`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CaBundle {
    /// Just the roots that anchor the certificate chains of the provider's hosts (found at
    /// start); the system roots when they cannot be found. Plain `http` providers get a minimal
    /// bundle.
    #[default]
    Auto,
    /// The system roots, as codex finds them by itself.
    System,
    /// The user's own PEM file.
    Path(PathBuf),
}

impl std::str::FromStr for CaBundle {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, CaError> {
        match s.trim() {
            "" => Err(CaError::EmptySetting),
            "auto" => Ok(CaBundle::Auto),
            "system" => Ok(CaBundle::System),
            path => Ok(CaBundle::Path(PathBuf::from(path))),
        }
    }
}

impl std::fmt::Display for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaBundle::Auto => f.write_str("auto"),
            CaBundle::System => f.write_str("system"),
            CaBundle::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Where the system roots come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SystemRoots {
    /// What codex finds with the environment it inherits: nothing is set for it, and our own
    /// probes read `CODEX_CA_CERTIFICATE`, `SSL_CERT_FILE` or the distribution's bundle.
    #[default]
    Inherited,
    /// This PEM file stands for the system roots: codex gets it in `system` mode, and probes
    /// verify against it (e.g. the system bundle plus a private CA).
    File(PathBuf),
}

impl SystemRoots {
    /// The files that hold the system roots.
    fn files(&self) -> Vec<PathBuf> {
        match self {
            SystemRoots::Inherited => system::default_files(|n| std::env::var(n).ok()),
            SystemRoots::File(path) => vec![path.clone()],
        }
    }

    /// Every system root.
    fn load(&self) -> Result<Vec<CertificateDer<'static>>, CaError> {
        let files = self.files();
        let mut roots = Vec::new();
        for file in &files {
            roots.extend(read_bundle(file)?);
        }
        if roots.is_empty() {
            return Err(CaError::NoSystemRoots { looked_in: files });
        }
        Ok(roots)
    }

    /// Writes to `path` the machine's system roots (none if it has none) plus `extra`: a file
    /// for [`SystemRoots::File`] that stands for a machine which also trusts `extra` (a private
    /// CA, such as the fake model's in tests and `bench --tls`).
    pub fn write_with(extra: &[CertificateDer<'_>], path: &Path) -> std::io::Result<()> {
        let mut roots = SystemRoots::Inherited.load().unwrap_or_default();
        roots.extend(extra.iter().map(|c| c.clone().into_owned()));
        std::fs::write(path, encode_pem(&roots))
    }
}

/// The variables that point codex at a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// `SSL_CERT_FILE`: the PEM bundle.
    pub cert_file: PathBuf,
    /// `SSL_CERT_DIR`: an empty folder, so nothing is added to the bundle.
    pub cert_dir: PathBuf,
}

/// One `https` host codex talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsHost {
    /// Name or address, as in the URL.
    pub host: String,
    /// Port (443 unless the URL says otherwise).
    pub port: u16,
}

impl std::fmt::Display for HttpsHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The hosts codex reaches for a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelHosts {
    /// A provider over plain `http://`: no TLS.
    PlainHttp,
    /// Providers over `https://`.
    Https(Vec<HttpsHost>),
}

impl ModelHosts {
    /// The hosts of a provider's base URL; `None` is codex's built-in OpenAI provider
    /// (`api.openai.com`, `chatgpt.com`, `auth.openai.com`).
    pub fn of_provider(base_url: Option<&str>) -> Result<Self, CaError> {
        let Some(url) = base_url else {
            return Ok(ModelHosts::Https(
                OPENAI_HOSTS.iter().map(|h| HttpsHost { host: (*h).to_owned(), port: 443 }).collect(),
            ));
        };
        let bad = |why: String| CaError::BadUrl { url: url.to_owned(), why };
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
        let https = match uri.scheme() {
            Some(s) if *s == http::uri::Scheme::HTTP => false,
            Some(s) if *s == http::uri::Scheme::HTTPS => true,
            Some(_) => return Err(bad("the scheme is neither http nor https".into())),
            None => return Err(bad("it has no scheme".into())),
        };
        let raw_host = uri.host().unwrap_or_default();
        // An IPv6 address comes in brackets.
        let host = raw_host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("it has no host".into()));
        }
        if !https {
            return Ok(ModelHosts::PlainHttp);
        }
        // `http::Uri` keeps a port it cannot read (`HOST:abc`) in the authority and gives none.
        let authority = uri.authority().map_or("", |a| a.as_str());
        let port = match (uri.port_u16(), authority.rsplit_once(raw_host)) {
            (Some(port), _) => port,
            (None, Some((_, ""))) => 443,
            (None, _) => return Err(bad("the port is not a number".into())),
        };
        Ok(ModelHosts::Https(vec![HttpsHost { host: host.to_owned(), port }]))
    }
}

/// The bundle codex was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaKind {
    /// One placeholder certificate (plain `http` provider).
    Minimal,
    /// The roots found for the provider's hosts.
    Auto,
    /// The system roots.
    System,
    /// The user's file.
    Path(PathBuf),
}

impl std::fmt::Display for CaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaKind::Minimal => f.write_str("minimal"),
            CaKind::Auto => f.write_str("auto"),
            CaKind::System => f.write_str("system"),
            CaKind::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What codex gets: which bundle, and the variables to set (none for the inherited system
/// roots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCa {
    /// Which bundle.
    pub kind: CaKind,
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR`, or `None` to leave codex's environment as it is.
    pub files: Option<CaFiles>,
    /// Certificates in the bundle (`None` when codex reads the system store itself).
    pub roots: Option<usize>,
    /// Why `auto` ended on the system roots, when it did.
    pub note: Option<String>,
}

impl ResolvedCa {
    /// Whether this bundle trusts fewer roots than the system: then a certificate failure may
    /// be the bundle's fault, and the system roots are the way back.
    pub fn is_reduced(&self) -> bool {
        matches!(self.kind, CaKind::Auto | CaKind::Path(_))
    }
}

/// What a connection failure is due to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    /// The bundle codex has rejects the chain of `host`, which the system roots accept.
    BundleRejects {
        /// The host.
        host: HttpsHost,
        /// Why the bundle rejects it.
        error: VerifyError,
    },
    /// Something else (the host is down, the system roots reject it too, ...), said for the
    /// logs.
    NotTheBundle(String),
}

/// Why `auto` found no reduced bundle; codex then gets the system roots, and this is the note.
#[derive(Debug, thiserror::Error)]
enum NoReducedBundle {
    #[error(
        "connections to {0} go through a proxy (HTTPS_PROXY or ALL_PROXY), whose roots cannot be probed; \
         add the host to NO_PROXY, or give --ca-bundle PATH"
    )]
    Proxied(HttpsHost),
    #[error("{0}")]
    SystemRoots(CaError),
    #[error("no TLS handshake with {host}: {source}; check that this machine reaches it, or give --ca-bundle PATH")]
    NoHandshake { host: HttpsHost, source: ProbeError },
    #[error(
        "the system roots do not verify {host}: {source}; add the CA that issued its certificate to the \
         system roots, or give --ca-bundle PATH"
    )]
    NotVerified { host: HttpsHost, source: VerifyError },
}

/// Why the roots could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// An empty `--ca-bundle`.
    #[error("the CA bundle setting is empty; use auto, system or the path of a PEM file")]
    EmptySetting,
    /// The provider's URL cannot be read.
    #[error("the model provider's base URL {url:?} cannot be used: {why}; give it as http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// A bundle could not be read.
    #[error("cannot read the CA bundle {path}: {reason}; give a readable PEM file of CERTIFICATE blocks, or use --ca-bundle system")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A bundle holds no certificate (codex would ignore it and use its slow OpenSSL client).
    #[error("the CA bundle {path} holds no certificate; give a PEM file with at least one CERTIFICATE block, or use --ca-bundle system")]
    EmptyBundle {
        /// The file.
        path: PathBuf,
    },
    /// No system root was found.
    #[error("no system root certificates found in {looked_in:?}; set SSL_CERT_FILE to the system's CA bundle")]
    NoSystemRoots {
        /// Where they were looked for.
        looked_in: Vec<PathBuf>,
    },
    /// The bundle or its folder could not be written.
    #[error("cannot write {path}: {source}; make the pool's folder writable")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The placeholder certificate could not be made.
    #[error("cannot generate the placeholder certificate: {0}")]
    Placeholder(#[from] rcgen::Error),
}

fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    read_certs(path).map_err(|e| CaError::Read { path: path.to_owned(), reason: e.to_string() })
}

/// Everything needed to decide which roots codex gets, and to check them later.
#[derive(Debug, Clone)]
pub struct CaSetup {
    /// The setting.
    pub bundle: CaBundle,
    /// The hosts codex talks to.
    pub hosts: ModelHosts,
    /// Where the system roots come from.
    pub system: SystemRoots,
    /// A folder of the pool's where the bundle is written.
    pub dir: PathBuf,
    /// Time allowed for each probe handshake.
    pub probe_timeout: Duration,
}

impl CaSetup {
    /// The roots codex gets, written to files under `dir`. `auto` never fails for want of
    /// network: it ends on the system roots, with the reason in [`ResolvedCa::note`].
    pub async fn resolve(&self) -> Result<ResolvedCa, CaError> {
        match (&self.bundle, &self.hosts) {
            (CaBundle::System, _) => self.system_roots(None),
            (CaBundle::Path(path), _) => {
                let roots = read_bundle(path)?.len();
                if roots == 0 {
                    return Err(CaError::EmptyBundle { path: path.clone() });
                }
                let files = self.files(path.clone())?;
                Ok(ResolvedCa { kind: CaKind::Path(path.clone()), files: Some(files), roots: Some(roots), note: None })
            }
            (CaBundle::Auto, ModelHosts::PlainHttp) => {
                let file = self.write("minimal.pem", &[placeholder()?])?;
                Ok(ResolvedCa { kind: CaKind::Minimal, files: Some(self.files(file)?), roots: Some(1), note: None })
            }
            (CaBundle::Auto, ModelHosts::Https(hosts)) => match self.auto(hosts).await {
                Ok(roots) => {
                    let file = self.write("auto.pem", &roots)?;
                    let files = Some(self.files(file)?);
                    Ok(ResolvedCa { kind: CaKind::Auto, files, roots: Some(roots.len()), note: None })
                }
                Err(why) => self.system_roots(Some(why.to_string())),
            },
        }
    }

    /// The system roots: nothing set for codex, or the file that stands for them.
    pub fn system_roots(&self, note: Option<String>) -> Result<ResolvedCa, CaError> {
        let (files, roots) = match &self.system {
            SystemRoots::Inherited => (None, None),
            SystemRoots::File(path) => (Some(self.files(path.clone())?), Some(read_bundle(path)?.len())),
        };
        Ok(ResolvedCa { kind: CaKind::System, files, roots, note })
    }

    /// The roots that anchor every host's chain, or why they cannot be found.
    async fn auto(&self, hosts: &[HttpsHost]) -> Result<Vec<CertificateDer<'static>>, NoReducedBundle> {
        if let Some(h) = hosts.iter().find(|h| system::proxied(&h.host, |n| std::env::var(n).ok())) {
            return Err(NoReducedBundle::Proxied(h.clone()));
        }
        let system = self.system.load().map_err(NoReducedBundle::SystemRoots)?;
        let mut kept: Vec<CertificateDer<'static>> = Vec::new();
        for (host, presented) in self.fetch_all(hosts).await {
            let presented = match presented {
                Ok(p) => p,
                Err(source) => return Err(NoReducedBundle::NoHandshake { host, source }),
            };
            let anchor = match presented.verify(&system) {
                Ok(anchor) => anchor,
                Err(source) => return Err(NoReducedBundle::NotVerified { host, source }),
            };
            if !kept.contains(&anchor) {
                kept.push(anchor);
            }
        }
        Ok(kept)
    }

    /// Every host's chain, fetched at once.
    async fn fetch_all(&self, hosts: &[HttpsHost]) -> Vec<(HttpsHost, Result<Presented, ProbeError>)> {
        let mut probes = tokio::task::JoinSet::new();
        for (i, h) in hosts.iter().enumerate() {
            let (h, limit) = (h.clone(), self.probe_timeout);
            probes.spawn(async move { (i, fetch_chain(&h.host, h.port, limit).await, h) });
        }
        let mut done = probes.join_all().await;
        done.sort_by_key(|(i, _, _)| *i);
        done.into_iter().map(|(_, r, h)| (h, r)).collect()
    }

    /// Whether a connection failure comes from the bundle codex has (`current`): true when it
    /// rejects the chain of a host that the system roots accept.
    pub async fn diagnose(&self, current: &ResolvedCa) -> Diagnosis {
        let ModelHosts::Https(hosts) = &self.hosts else {
            return Diagnosis::NotTheBundle("the provider is not reached over https".into());
        };
        let Some(files) = current.files.as_ref().filter(|_| current.is_reduced()) else {
            return Diagnosis::NotTheBundle("codex already has the system roots".into());
        };
        let bundle = match read_certs(&files.cert_file) {
            Ok(b) => b,
            Err(e) => return Diagnosis::NotTheBundle(format!("cannot read {}: {e}", files.cert_file.display())),
        };
        let system = match self.system.load() {
            Ok(s) => s,
            Err(e) => return Diagnosis::NotTheBundle(e.to_string()),
        };
        let mut seen = Vec::new();
        for (host, presented) in self.fetch_all(hosts).await {
            match presented {
                Err(e) => seen.push(format!("{host}: {e}")),
                Ok(p) => match (p.verify(&bundle), p.verify(&system)) {
                    (Err(error), Ok(_)) => return Diagnosis::BundleRejects { host, error },
                    (Ok(_), _) => seen.push(format!("{host}: the bundle verifies it")),
                    (Err(e), Err(_)) => seen.push(format!("{host}: the system roots reject it too ({e})")),
                },
            }
        }
        Diagnosis::NotTheBundle(seen.join("; "))
    }

    /// `SSL_CERT_FILE` = `cert_file`, `SSL_CERT_DIR` = an empty folder under `dir`.
    fn files(&self, cert_file: PathBuf) -> Result<CaFiles, CaError> {
        let cert_dir = self.dir.join("empty-cert-dir");
        std::fs::create_dir_all(&cert_dir).map_err(|source| CaError::Write { path: cert_dir.clone(), source })?;
        Ok(CaFiles { cert_file, cert_dir })
    }

    fn write(&self, name: &str, certs: &[CertificateDer<'_>]) -> Result<PathBuf, CaError> {
        let path = self.dir.join(name);
        std::fs::create_dir_all(&self.dir).map_err(|source| CaError::Write { path: self.dir.clone(), source })?;
        std::fs::write(&path, encode_pem(certs)).map_err(|source| CaError::Write { path: path.clone(), source })?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests;
