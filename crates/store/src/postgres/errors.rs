//! How PostgreSQL's errors map onto the store's, each message naming the server (never the
//! password) and saying what to do.

use crate::StoreError;
use deadpool_postgres::{PoolError, TimeoutType};

pub(super) const BACKEND: &str = "postgres";

/// An error on one line with its causes (tokio-postgres keeps the detail in its sources).
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
        for extra in [db.detail(), db.hint()].into_iter().flatten() {
            text.push_str("; ");
            text.push_str(extra);
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether a client-side error means the server cannot be reached or the connection broke.
fn is_connection_failure(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    let text = e.to_string();
    e.is_closed()
        || [
            "error connecting",
            "error communicating",
            "timeout waiting",
            "authentication error",
            "error performing TLS",
        ]
        .iter()
        .any(|prefix| text.starts_with(prefix))
}

/// Maps an error of the server or the client; `scrub` takes the password out of the message.
pub(super) fn store_error(e: &tokio_postgres::Error, server: &str, scrub: impl Fn(String) -> String) -> StoreError {
    let detail = describe(e);
    let code = e.code().map(|c| c.code()).unwrap_or("");
    let (kind, message): (fn(&'static str, String) -> StoreError, String) = match code {
        "53100" => (full, format!("{server}: {detail}")),
        "25006" => (read_only, format!("{server}: {detail}")),
        "55P03" | "40001" | "40P01" | "57014" | "53300" => (busy, format!("{server}: {detail}")),
        "28000" | "28P01" => (
            unavailable,
            format!("PostgreSQL at {server} refused the login: {detail}; check the user and password in the URL"),
        ),
        "3D000" => {
            (unavailable, format!("{server}: {detail}; create the database (createdb) or name another one in the URL"))
        }
        c if c.starts_with("08") || c.starts_with("57P") => {
            (unavailable, format!("lost the connection to {server}: {detail}; the next call connects again"))
        }
        "" if is_connection_failure(e) => (
            unavailable,
            format!(
                "cannot reach PostgreSQL at {server}: {detail}; check that the server runs there and that the URL's \
                 host, port, user and database are right"
            ),
        ),
        _ => (backend, format!("{server}: {detail}")),
    };
    kind(BACKEND, scrub(message))
}

/// Maps a failure to get a connection from the pool.
pub(super) fn pool_error(e: PoolError, server: &str, pool_size: usize, scrub: impl Fn(String) -> String) -> StoreError {
    match e {
        PoolError::Backend(e) => store_error(&e, server, scrub),
        PoolError::Timeout(TimeoutType::Wait) => busy(
            BACKEND,
            format!("all {pool_size} connections to {server} stayed in use; raise pool_size=N in the URL"),
        ),
        PoolError::Timeout(_) => unavailable(
            BACKEND,
            format!("PostgreSQL at {server} did not answer in time; check that the server runs and is reachable"),
        ),
        PoolError::Closed => unavailable(BACKEND, "the store's connection pool was closed".to_owned()),
        other => backend(BACKEND, scrub(format!("{server}: {other}"))),
    }
}

fn full(backend: &'static str, message: String) -> StoreError {
    StoreError::Full { backend, message }
}

fn read_only(backend: &'static str, message: String) -> StoreError {
    StoreError::ReadOnly { backend, message }
}

fn busy(backend: &'static str, message: String) -> StoreError {
    StoreError::Busy { backend, message }
}

fn unavailable(backend: &'static str, message: String) -> StoreError {
    StoreError::Unavailable { backend, message }
}

fn backend(backend: &'static str, message: String) -> StoreError {
    StoreError::Backend { backend, message }
}
