//! Opening the store an operator names: a PostgreSQL URL or the path of a SQLite file.

use crate::{PostgresStore, SqliteStore, StoreError, ThreadStore};
use std::sync::Arc;

/// Whether `target` is a PostgreSQL URL (`postgres://…` or `postgresql://…`).
pub fn is_postgres_url(target: &str) -> bool {
    let lower = target.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// Opens the store `target` names: a PostgreSQL URL opens a [`PostgresStore`] (connected, its
/// schema brought up to date); anything else is the path of a SQLite file, created if needed.
pub async fn open_store(target: &str) -> Result<Arc<dyn ThreadStore>, StoreError> {
    if is_postgres_url(target) {
        return Ok(Arc::new(PostgresStore::open(target).await?));
    }
    let path = target.to_owned();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(path)).await.map_err(|e| {
        StoreError::Backend { backend: "sqlite", message: format!("opening the database failed: {e}") }
    })??;
    Ok(Arc::new(store))
}
