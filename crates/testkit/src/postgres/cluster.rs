//! A throwaway PostgreSQL cluster: `initdb` into a scratch folder, `postgres` on a free
//! loopback port, stopped and deleted when dropped (or, for one kept for the whole test
//! process, when the process exits; if it is killed, the server dies with it).

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running cluster.
pub(super) struct Cluster {
    pub(super) port: u16,
    pub(super) pid: AtomicU32,
    /// Where the server programs are (for a restart).
    bin: PathBuf,
    /// The user the server runs as (`None`: this process's own).
    pub(super) user: Option<(u32, u32)>,
    child: Mutex<Option<Child>>,
    /// Dropped once the server is stopped: lets the thread that started it end.
    keeper: Mutex<Option<mpsc::Sender<()>>>,
    dir: TempDir,
}

/// Where PostgreSQL's server programs are: the newest of Debian's `/usr/lib/postgresql/<v>/bin`,
/// else a folder of `PATH` holding both `initdb` and `postgres`.
pub(super) fn find_bin_dir() -> Option<PathBuf> {
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| has_server(bin))
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        let initdb = std::fs::canonicalize(dir.join("initdb")).ok()?;
        let bin = initdb.parent()?.to_path_buf();
        has_server(&bin).then_some(bin)
    })
}

fn has_server(bin: &Path) -> bool {
    bin.join("initdb").is_file() && bin.join("postgres").is_file()
}

/// The uid and gid of `name`, from `/etc/passwd`.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
    })
}

/// A free loopback port (free when asked; the server binds it a moment later).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl Cluster {
    pub(super) fn start(bin: &Path) -> Result<Self, String> {
        // SAFETY: a plain syscall.
        let root = unsafe { libc::geteuid() } == 0;
        // PostgreSQL refuses to run as root: then it runs as `postgres` (Debian's package makes
        // that user) or `nobody`.
        let user = match root {
            true => Some(
                user_ids("postgres")
                    .or_else(|| user_ids("nobody"))
                    .ok_or("no unprivileged user to run PostgreSQL as")?,
            ),
            false => None,
        };
        let dir = tempfile::Builder::new()
            .prefix("codex-pool-pg-")
            .tempdir()
            .map_err(|e| format!("no scratch folder: {e}"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("cannot hand {} to uid {uid}: {e}", dir.path().display()))?;
        }
        let data = dir.path().join("data");
        let log = dir.path().join("initdb.log");
        let mut initdb = as_user(Command::new(bin.join("initdb")), user);
        initdb.arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale"]);
        let out = initdb.stdout(Stdio::null()).stderr(Stdio::piped()).output().map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::write(&log, &out.stderr);
            return Err(format!("initdb failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
        }
        let mut cluster = Cluster {
            port: 0,
            pid: AtomicU32::new(0),
            bin: bin.to_path_buf(),
            user,
            child: Mutex::new(None),
            keeper: Mutex::new(None),
            dir,
        };
        let mut last_error = String::new();
        // The port is free when picked; another process may take it before the server binds it.
        for _ in 0..3 {
            let port = free_port()?;
            let (child, keeper) = Self::run(bin, &cluster.dir, port, user)?;
            cluster.port = port;
            cluster.pid.store(child.id(), Ordering::Relaxed);
            *cluster.child.get_mut().unwrap() = Some(child);
            *cluster.keeper.get_mut().unwrap() = Some(keeper);
            match cluster.wait_ready() {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    cluster.stop();
                    if !e.contains("could not bind") {
                        return Err(e);
                    }
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    /// Starts `postgres` from a thread that lives as long as the server: the server gets
    /// SIGQUIT (immediate shutdown) when that thread ends, so it never outlives this process.
    fn run(
        bin: &Path,
        dir: &TempDir,
        port: u16,
        user: Option<(u32, u32)>,
    ) -> Result<(Child, mpsc::Sender<()>), String> {
        let log = std::fs::File::create(dir.path().join("server.log")).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path().join("server.log"), Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        let mut command = as_user(Command::new(bin.join("postgres")), user);
        command
            .arg("-D")
            .arg(dir.path().join("data"))
            .arg("-k")
            .arg(dir.path())
            .args(["-p", &port.to_string(), "-h", "127.0.0.1"])
            // A test server: speed over durability.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        let (started_tx, started_rx) = mpsc::channel();
        let (keeper, until_stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(format!("postgres-{port}"))
            .spawn(move || {
                let _ = started_tx.send(command.spawn());
                let _ = until_stopped.recv();
            })
            .map_err(|e| e.to_string())?;
        let child = started_rx.recv().map_err(|e| e.to_string())?.map_err(|e| format!("postgres: {e}"))?;
        Ok((child, keeper))
    }

    /// Waits until the server accepts connections (`postmaster.pid` says `ready`).
    fn wait_ready(&self) -> Result<(), String> {
        let pid_file = self.dir.path().join("data").join("postmaster.pid");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("postgres exited ({status}): {}", self.log_tail()));
            }
            let ready = std::fs::read_to_string(&pid_file)
                .is_ok_and(|text| text.lines().nth(7).is_some_and(|l| l.trim() == "ready"));
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("postgres did not get ready in {START_TIMEOUT:?}: {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The end of the server's log.
    pub(super) fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.path().join("server.log")) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Stops the server (immediate shutdown) and waits for it; does nothing the second time.
    pub(super) fn stop(&self) {
        self.stop_with(libc::SIGQUIT);
    }

    /// Stops the server with `signal` (SIGQUIT: immediate, what a crash loses is lost; SIGINT:
    /// fast, everything committed is kept) and waits for it.
    pub(super) fn stop_with(&self, signal: i32) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // SAFETY: a plain syscall, to our own child.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Stops the server if it runs (fast shutdown), and starts it again on the same port and
    /// data: a restart of PostgreSQL, as clients see one.
    pub(super) fn restart(&self) -> Result<(), String> {
        self.stop_with(libc::SIGINT);
        let (child, keeper) = Self::run(&self.bin, &self.dir, self.port, self.user)?;
        self.pid.store(child.id(), Ordering::Relaxed);
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(keeper);
        self.wait_ready()
    }

    /// The scratch folder (the data directory is `data/` in it).
    pub(super) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `command`, run as `user` when one is given.
fn as_user(mut command: Command, user: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
        // The server's user may not be allowed into the caller's working directory.
        command.current_dir("/");
    }
    command
}
