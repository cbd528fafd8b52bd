//! The connection pool, and one statement at a time on it, with the store's timeout and errors.

use super::config::Target;
use super::errors::{pool_error, store_error, BACKEND};
use crate::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// How long a call waits for a free connection of the pool.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long one call may take before it fails as [`StoreError::Unavailable`] (a server that
/// stopped answering, a network partition): a turn waiting for the store never hangs.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A parameter of a statement.
pub(super) type Param<'a> = &'a (dyn ToSql + Sync);

/// The pool and what its errors name.
pub(super) struct Db {
    pool: Pool,
    target: Target,
    /// Round trips made for callers (see [`Db::round_trips`]).
    round_trips: AtomicU64,
}

impl Db {
    /// A pool for `target` (connections are made when first needed). Plain TCP or a Unix
    /// socket, no TLS: for a server on loopback or a private network.
    pub(super) fn new(target: Target) -> Result<Self, StoreError> {
        let manager = Manager::from_config(
            target.config.clone(),
            NoTls,
            // Fast: no test query when a connection is reused, so a call costs its own round
            // trips only; a connection found broken fails that call, and the next gets a new one.
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(target.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Backend { backend: BACKEND, message: format!("the connection pool: {e}") })?;
        Ok(Self { pool, target, round_trips: AtomicU64::new(0) })
    }

    /// `postgres://user@host:port/database`.
    pub(super) fn server(&self) -> &str {
        &self.target.described
    }

    /// Round trips made so far: one per statement, the start and end of a transaction counted
    /// too; a connection preparing a statement for the first time is not counted.
    pub(super) fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Counts `n` round trips.
    pub(super) fn count(&self, n: u64) {
        self.round_trips.fetch_add(n, Ordering::Relaxed);
    }

    /// A client error as the store's.
    pub(super) fn error(&self, e: &tokio_postgres::Error) -> StoreError {
        store_error(e, &self.target.described, |m| self.target.scrub(m))
    }

    /// A connection of the pool (no round trip when an open one is free).
    pub(super) async fn client(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| pool_error(e, &self.target.described, self.target.pool_size, |m| self.target.scrub(m)))
    }

    /// Runs `call`, failing as [`StoreError::Unavailable`] after [`CALL_TIMEOUT`].
    pub(super) async fn timed<T>(&self, call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        tokio::time::timeout(CALL_TIMEOUT, call).await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable {
                backend: BACKEND,
                message: format!(
                    "PostgreSQL at {} did not answer within {} s; check that it runs and is reachable",
                    self.target.described,
                    CALL_TIMEOUT.as_secs()
                ),
            })
        })
    }

    /// One statement, prepared once per connection: one round trip (two on a connection's first
    /// use of it).
    pub(super) async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let statement = client.prepare_cached(sql).await.map_err(|e| self.error(&e))?;
            self.count(1);
            client.query(&statement, params).await.map_err(|e| self.error(&e))
        })
        .await
    }

    /// [`Db::query`] for a statement that returns no rows: how many rows it changed.
    pub(super) async fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        self.timed(async {
            let client = self.client().await?;
            let statement = client.prepare_cached(sql).await.map_err(|e| self.error(&e))?;
            self.count(1);
            client.execute(&statement, params).await.map_err(|e| self.error(&e))
        })
        .await
    }
}
