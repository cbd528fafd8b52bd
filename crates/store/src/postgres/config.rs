//! What a PostgreSQL URL says: the connection, the pool's size, and a description of the server
//! that is safe to print (never the password).

use super::errors::{describe, BACKEND};
use crate::StoreError;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::config::Host;

/// Connections in the pool unless the URL says `pool_size=N`.
pub(super) const DEFAULT_POOL_SIZE: usize = 8;
/// How long a connection attempt waits unless the URL says `connect_timeout=SECONDS`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The name the store's sessions show in `pg_stat_activity` unless the URL names another.
const APPLICATION_NAME: &str = "codex-pool";

/// A parsed URL.
pub(super) struct Target {
    /// The connection settings, with the store's defaults filled in.
    pub(super) config: tokio_postgres::Config,
    /// Connections in the pool.
    pub(super) pool_size: usize,
    /// `postgres://user@host:port/database`: what messages and logs name.
    pub(super) described: String,
    /// The password, to scrub from any message that might echo it.
    password: Option<String>,
}

impl Target {
    /// Reads a URL (`postgres://user:password@host:port/database?param=value`, or libpq's
    /// `key=value` form). `pool_size` is the store's own parameter; the others are PostgreSQL's.
    pub(super) fn parse(url: &str) -> Result<Self, StoreError> {
        let (url_without_ours, pool_size) = take_pool_size(url)?;
        let mut config = tokio_postgres::Config::from_str(&url_without_ours).map_err(|e| StoreError::Unavailable {
            backend: BACKEND,
            message: format!("the PostgreSQL URL {} is not valid: {}", redact(url), describe(&e)),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        let password = config.get_password().map(|p| String::from_utf8_lossy(p).into_owned());
        Ok(Self { described: describe_target(&config), pool_size, config, password })
    }

    /// `message` with the password, should it appear, replaced by `***`.
    pub(super) fn scrub(&self, message: String) -> String {
        match &self.password {
            // A very short password would mangle every message it happens to occur in; no
            // message of the server or the client echoes passwords anyway.
            Some(password) if password.len() >= 4 && message.contains(password.as_str()) => {
                message.replace(password.as_str(), "***")
            }
            _ => message,
        }
    }
}

/// Takes the store's own `pool_size` parameter out of a URL's query.
fn take_pool_size(url: &str) -> Result<(String, usize), StoreError> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), DEFAULT_POOL_SIZE)) };
    let mut pool_size = DEFAULT_POOL_SIZE;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("pool_size=") {
            Some(value) => {
                pool_size = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| StoreError::Unavailable {
                    backend: BACKEND,
                    message: format!("pool_size={value} in the PostgreSQL URL is not a positive number"),
                })?;
            }
            None => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, pool_size))
}

/// The URL with its password, if it has one, replaced by `***` (for a URL that could not be
/// parsed; a parsed one is described from its settings).
pub(super) fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else { return "(a connection string)".to_owned() };
    let authority_end = url[start..].find(['/', '?']).map_or(url.len(), |i| start + i);
    let Some(at) = url[start..authority_end].rfind('@').map(|i| start + i) else { return url.to_owned() };
    match url[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
        None => url.to_owned(),
    }
}

/// `postgres://user@host:port/database`, from the settings.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() { "localhost:5432".to_owned() } else { hosts.join(",") };
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let database = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("postgres://{user}{hosts}/{database}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_described_without_their_password() {
        let target = Target::parse("postgres://codex:s3cret-pw@db.internal:6543/pool?pool_size=3").unwrap();
        assert_eq!(target.described, "postgres://codex@db.internal:6543/pool");
        assert_eq!(target.pool_size, 3);
        assert_eq!(target.scrub("it said s3cret-pw".into()), "it said ***");
        assert_eq!(redact("postgresql://u:p%40ss@h/db?x=1"), "postgresql://u:***@h/db?x=1");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        let bad = Target::parse("postgres://u:hunter2-pw@h:notaport/db").err().expect("refused");
        assert!(!bad.to_string().contains("hunter2-pw"), "{bad}");
        assert!(bad.to_string().contains("u:***@h"), "{bad}");
        let bad = Target::parse("postgres://u:pw@h/db?pool_size=0").err().expect("refused");
        assert!(bad.to_string().contains("pool_size=0"), "{bad}");
    }
}
