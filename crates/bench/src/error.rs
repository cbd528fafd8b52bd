//! What can stop a benchmark.

use codex_pool_process::ca::{CaError, PemError};

/// Why `codex-pool bench` could not run or finish. The turns that fail while the load runs are
/// not errors: the line counts them (`errors`).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The flags ask for something the bench cannot do; the message names the flag to change.
    #[error("{0}")]
    Flags(String),
    /// One arm of the load failed; the cause follows.
    #[error("{arm} run")]
    Arm {
        /// The arm: `pool`, `direct`, `service` or `nodes`.
        arm: &'static str,
        /// What failed in it.
        #[source]
        source: Box<BenchError>,
    },
    /// The codex binary was not found (give `--codex-bin` or `CODEX_BIN`).
    #[error(transparent)]
    Codex(#[from] codex_pool_process::DiscoveryError),
    /// codex could not be started by the raw client of `--direct`.
    #[error(transparent)]
    Spawn(#[from] codex_pool_process::SpawnError),
    /// The root certificates of `--ca-bundle`, `--versus-ca-bundle` or `--tls` could not be set up.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A PEM file (the fake model's CA with `--tls`) could not be read.
    #[error("reading {}", path.display())]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// Why it could not be read.
        #[source]
        source: PemError,
    },
    /// The pool failed (starting its processes, creating a conversation).
    #[error(transparent)]
    Pool(#[from] codex_pool::PoolError),
    /// The store failed: the scratch SQLite file, or the PostgreSQL database of `--db`.
    #[error(transparent)]
    Store(#[from] codex_pool_store::StoreError),
    /// A service of `--http`, `--responses`, `--chat` or `--nodes` failed to start or to stop.
    #[error(transparent)]
    Serve(#[from] codex_pool_server::ServeError),
    /// A request of the bench's HTTP client to a service failed.
    #[error("a request to the service failed")]
    Client(#[from] codex_pool_server::client::ClientError),
    /// A TLS client for the fake model's `--tls` endpoint could not be configured.
    #[error("a TLS client for the fake model: {0}")]
    Tls(#[from] rustls::Error),
    /// A file, a process or a socket of the bench failed; `what` says which.
    #[error("{what}")]
    Io {
        /// What the bench was doing.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A child (the fake model, `serve`, HAProxy, codex under the raw client) did not answer
    /// as expected.
    #[error("{0}")]
    Child(String),
    /// A JSON value could not be encoded or decoded.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A task of the bench panicked or was cancelled.
    #[error("a task of the bench ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl BenchError {
    /// `self` as the cause of arm `arm`'s failure.
    pub(crate) fn in_arm(self, arm: &'static str) -> Self {
        BenchError::Arm { arm, source: Box::new(self) }
    }
}

/// Says what an I/O operation was doing when it failed.
pub(crate) trait IoContext<T> {
    /// The error as [`BenchError::Io`] with `what`.
    fn doing(self, what: impl Into<String>) -> Result<T, BenchError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn doing(self, what: impl Into<String>) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::Io { what: what.into(), source })
    }
}

/// The certificates in the PEM file at `path`.
pub(crate) fn read_pem(path: &std::path::Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, BenchError> {
    codex_pool_process::ca::read_certs(path).map_err(|source| BenchError::Pem { path: path.to_owned(), source })
}

/// `value`, or [`BenchError::Child`] with `message` when there is none.
pub(crate) fn expect_some<T>(value: Option<T>, message: &str) -> Result<T, BenchError> {
    value.ok_or_else(|| BenchError::Child(message.to_owned()))
}
