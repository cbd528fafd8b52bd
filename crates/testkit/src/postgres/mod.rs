//! A PostgreSQL server for tests, and a fresh database on it per test.
//!
//! [`TestPostgres::shared`] is the server a test process's tests share: the one
//! `CODEX_POOL_TEST_DATABASE_URL` names (a `postgres://` URL of a user that may create
//! databases), else a throwaway cluster started from the PostgreSQL server programs found on
//! this machine (Debian's `postgresql` package puts them in `/usr/lib/postgresql/<v>/bin`) on a
//! free loopback port, as an unprivileged user when the tests run as root. Without either, it
//! fails the test, saying how to install PostgreSQL; `CODEX_POOL_SKIP_POSTGRES=1` skips such
//! tests instead. [`TestPostgres::start`] starts a cluster of a test's own.
//!
//! ```no_run
//! # async fn demo() {
//! use codex_pool_testkit::postgres::TestPostgres;
//! let Some(server) = TestPostgres::shared() else { return }; // skipped, and said so
//! let db = server.database().await;
//! println!("{}", db.url()); // postgres://postgres@127.0.0.1:PORT/codex_pool_test_…
//! # }
//! ```

mod cluster;

use cluster::Cluster;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use tokio_postgres::NoTls;

/// The variable naming a server to use instead of a throwaway one.
pub const URL_VAR: &str = "CODEX_POOL_TEST_DATABASE_URL";
/// The variable that, set to `1`, skips the tests that need PostgreSQL.
pub const SKIP_VAR: &str = "CODEX_POOL_SKIP_POSTGRES";

/// A PostgreSQL server for tests: a throwaway cluster, or one named by [`URL_VAR`].
pub struct TestPostgres {
    admin_url: String,
    cluster: Option<Cluster>,
}

impl TestPostgres {
    /// The server this test process's tests share (started on first use, stopped when the
    /// process exits), or `None` when [`SKIP_VAR`] is `1` (the test should return; this prints
    /// that it was skipped). Panics, saying how to install PostgreSQL, when there is no server
    /// to use.
    pub fn shared() -> Option<&'static TestPostgres> {
        static SHARED: OnceLock<Result<TestPostgres, String>> = OnceLock::new();
        if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
            println!("skipped: {SKIP_VAR}=1, so this test does not run against PostgreSQL");
            return None;
        }
        let shared = SHARED.get_or_init(|| {
            let server = match std::env::var(URL_VAR) {
                Ok(url) if !url.is_empty() => Ok(TestPostgres { admin_url: url, cluster: None }),
                _ => TestPostgres::start(),
            };
            if server.as_ref().is_ok_and(|s| s.cluster.is_some()) {
                // Statics are never dropped: stop the server when the process exits.
                extern "C" fn stop_shared() {
                    if let Some(Ok(TestPostgres { cluster: Some(cluster), .. })) = SHARED.get() {
                        cluster.stop();
                        let _ = std::fs::remove_dir_all(cluster.dir());
                    }
                }
                // SAFETY: registers a plain function.
                unsafe {
                    libc::atexit(stop_shared);
                }
            }
            server
        });
        match shared {
            Ok(server) => Some(server),
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts a throwaway cluster of the caller's own, stopped and deleted when dropped. Call
    /// it from the test's own thread (the server is tied to a thread it starts, not to the
    /// caller's, but a runtime's blocking thread may come and go).
    pub fn start() -> Result<TestPostgres, String> {
        let bin = cluster::find_bin_dir().ok_or_else(|| {
            format!(
                "PostgreSQL's server programs (initdb, postgres) were not found in /usr/lib/postgresql/*/bin or PATH: \
                 install them (Debian, Ubuntu: apt-get install postgresql), or set {URL_VAR}=postgres://… to use a \
                 server of yours, or {SKIP_VAR}=1 to skip the tests that need PostgreSQL"
            )
        })?;
        let cluster = Cluster::start(&bin)
            .map_err(|e| format!("could not start a throwaway PostgreSQL from {}: {e}", bin.display()))?;
        let admin_url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
        Ok(TestPostgres { admin_url, cluster: Some(cluster) })
    }

    /// A URL of the server's administrative database (to create others, or look around).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The server's process id, if this process started it (to SIGSTOP or SIGKILL it).
    pub fn pid(&self) -> Option<u32> {
        self.cluster.as_ref().map(|c| c.pid.load(Ordering::Relaxed))
    }

    /// The uid and gid the server runs as, if this process started it as another user (a
    /// folder handed to the server, e.g. for a tablespace, must be theirs).
    pub fn server_user(&self) -> Option<(u32, u32)> {
        self.cluster.as_ref().and_then(|c| c.user)
    }

    /// Stops the server at once (immediate shutdown), if this process started it: connections
    /// to it break, new ones are refused.
    pub fn stop(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.stop();
        }
    }

    /// Shuts the server down as an operator would (fast shutdown: connections break, what was
    /// committed is kept), if this process started it. (The throwaway server commits without
    /// waiting for its disk, so [`TestPostgres::stop`], an immediate shutdown, may lose the last
    /// commits, as a crash of such a server would.)
    pub fn shut_down(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.stop_with(libc::SIGINT);
        }
    }

    /// Stops the server (if it runs; fast shutdown) and starts it again on the same port with
    /// the same data, if this process started it: connections open before break, new ones work
    /// again.
    pub fn restart(&self) -> Result<(), String> {
        match &self.cluster {
            Some(cluster) => cluster.restart(),
            None => Err(format!("the server {URL_VAR} names cannot be restarted by a test")),
        }
    }

    /// The end of the server's log, if this process started it.
    pub fn log_tail(&self) -> Option<String> {
        self.cluster.as_ref().map(Cluster::log_tail)
    }

    /// A new, empty database on the server, dropped when the value is.
    pub async fn database(&self) -> TestDatabase {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("codex_pool_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let admin = self.admin_url.clone();
        execute(&admin, &format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("could not create a test database on {}: {e}", redacted(&admin)));
        TestDatabase { url: with_database(&admin, &name), name, admin_url: admin }
    }
}

/// A database of one test's own.
pub struct TestDatabase {
    url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs SQL statements on it (tests that arrange the database by hand).
    pub async fn execute(&self, sql: &str) -> Result<(), String> {
        execute(&self.url, sql).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // On a thread of its own with its own runtime: drop may run inside a test's runtime.
        let (admin, sql) = (self.admin_url.clone(), format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        let dropped = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(execute(&admin, &sql))
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Runs `sql` (one or more statements) on a connection of its own.
async fn execute(url: &str, sql: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| describe(&e))?;
    let connection = tokio::spawn(connection);
    let result = client.batch_execute(sql).await.map_err(|e| describe(&e));
    drop(client);
    let _ = connection.await;
    result
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            text
        }
    }
}

/// `url` naming database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    format!("{}/{name}{query}", &base[..path_start])
}

/// `url` without its password.
fn redacted(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match (url[start..].find(':'), url[start..].find('@')) {
        (Some(colon), Some(at)) if colon < at => format!("{}:***{}", &url[..start + colon], &url[start + at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_other_databases() {
        assert_eq!(with_database("postgres://u@h:1/postgres", "x"), "postgres://u@h:1/x");
        assert_eq!(with_database("postgres://u:p@h/db?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(redacted("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
