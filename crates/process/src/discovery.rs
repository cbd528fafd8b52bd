//! Finding the codex binary: the one the caller names (the command's `--codex-bin`, or its
//! `CODEX_BIN`), then the repository's pinned npm install, then `PATH`. The npm launcher is a Node.js shim whose native child outlives it when killed, so a
//! shim is always resolved to the native binary it would start.

use crate::error::DiscoveryError;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The Codex CLI version codex-pool is built and tested against.
pub const PINNED_CODEX_VERSION: &str = "0.171.0";

/// Set to `1` to accept a codex of another version than [`PINNED_CODEX_VERSION`].
pub const ALLOW_ANY_VERSION_ENV: &str = "CODEX_POOL_ALLOW_ANY_CODEX_VERSION";

/// The npm package folder and target triple of the native binary for this machine.
fn native_package() -> Option<(&'static str, &'static str)> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some(("codex-linux-x64", "x86_64-unknown-linux-musl")),
        ("linux", "aarch64") => Some(("codex-linux-arm64", "aarch64-unknown-linux-musl")),
        ("macos", "x86_64") => Some(("codex-darwin-x64", "x86_64-apple-darwin")),
        ("macos", "aarch64") => Some(("codex-darwin-arm64", "aarch64-apple-darwin")),
        _ => None,
    }
}

/// Where the native binary sits below a `node_modules` folder.
fn native_in_node_modules(node_modules: &Path) -> Option<PathBuf> {
    let (package, triple) = native_package()?;
    let path = node_modules.join("@openai").join(package).join("vendor").join(triple).join("codex").join("codex");
    // Older packages put it at vendor/<triple>/bin/codex; 0.169.0 and 0.171.0 do.
    let bin = node_modules.join("@openai").join(package).join("vendor").join(triple).join("bin").join("codex");
    [bin, path].into_iter().find(|p| p.is_file())
}

/// The repository's own install (`tools/codex/node_modules`), looked for next to the source tree
/// this crate was built from, next to the running executable and below the working directory.
fn repo_installs() -> Vec<PathBuf> {
    let mut roots = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")];
    if let Ok(exe) = std::env::current_exe() {
        // target/{debug,release}/codex-pool -> repository root
        roots.extend(exe.ancestors().skip(3).take(1).map(Path::to_path_buf));
    }
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    roots.into_iter().map(|r| r.join("tools/codex/node_modules")).collect()
}

/// If `path` is the npm launcher script, the native binary it starts; otherwise `path` itself.
fn resolve_shim(path: &Path) -> PathBuf {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut head = [0u8; 2];
    let is_script = std::fs::File::open(&real).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head == b"#!";
    if !is_script {
        return real;
    }
    // .../node_modules/@openai/codex/bin/codex.js: the native package is a sibling, or nested.
    let package_root = real.ancestors().nth(2).map(Path::to_path_buf);
    let candidates = package_root
        .iter()
        .flat_map(|root| [root.join("node_modules"), root.join("../..")])
        .filter_map(|nm| native_in_node_modules(&nm));
    candidates.into_iter().next().unwrap_or(real)
}

fn check_executable(path: &Path) -> Result<(), DiscoveryError> {
    let meta = std::fs::metadata(path).map_err(|_| DiscoveryError::NotExecutable { path: path.to_path_buf() })?;
    if !meta.is_file() {
        return Err(DiscoveryError::NotAFile { path: path.to_path_buf() });
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(DiscoveryError::NotExecutable { path: path.to_path_buf() });
    }
    Ok(())
}

/// Finds the codex binary. `explicit` is the one the caller was given (`--codex-bin`, or its
/// variable `CODEX_BIN`: the caller reads it, not this function).
pub fn find_codex(explicit: Option<&Path>) -> Result<PathBuf, DiscoveryError> {
    let mut looked = Vec::new();
    if let Some(path) = explicit.map(Path::to_path_buf) {
        if !path.exists() {
            return Err(DiscoveryError::NotFound {
                looked: format!("{} (from --codex-bin/CODEX_BIN)", path.display()),
            });
        }
        let native = resolve_shim(&path);
        check_executable(&native)?;
        return Ok(native);
    }
    for nm in repo_installs() {
        if let Some(native) = native_in_node_modules(&nm) {
            check_executable(&native)?;
            return Ok(native);
        }
        looked.push(nm.display().to_string());
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("codex");
            if candidate.is_file() {
                let native = resolve_shim(&candidate);
                check_executable(&native)?;
                return Ok(native);
            }
        }
    }
    looked.push("PATH".to_owned());
    Err(DiscoveryError::NotFound { looked: looked.join(", ") })
}

/// Runs `codex --version` and checks it against [`PINNED_CODEX_VERSION`] (unless
/// [`ALLOW_ANY_VERSION_ENV`] is `1`). Returns the version found.
pub fn check_version(path: &Path) -> Result<String, DiscoveryError> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| DiscoveryError::VersionCheck { path: path.to_path_buf(), reason: e.to_string() })?;
    if !out.status.success() {
        return Err(DiscoveryError::VersionCheck {
            path: path.to_path_buf(),
            reason: format!("exit {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    // "codex-cli 0.171.0"
    let text = String::from_utf8_lossy(&out.stdout);
    let found = text.split_whitespace().last().unwrap_or("").to_owned();
    let allow_any = std::env::var(ALLOW_ANY_VERSION_ENV).is_ok_and(|v| v == "1");
    if found != PINNED_CODEX_VERSION && !allow_any {
        return Err(DiscoveryError::WrongVersion { path: path.to_path_buf(), found, expected: PINNED_CODEX_VERSION });
    }
    Ok(found)
}

/// [`find_codex`] then [`check_version`].
pub fn find_checked(explicit: Option<&Path>) -> Result<PathBuf, DiscoveryError> {
    let path = find_codex(explicit)?;
    check_version(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_missing_path_is_a_clear_error() {
        let err = find_codex(Some(Path::new("/nonexistent/codex"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/codex"), "{err}");
        assert!(err.to_string().contains("npm ci --prefix tools/codex"), "{err}");
    }

    #[test]
    fn non_executable_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("codex");
        std::fs::write(&file, b"\x7fELF not really").unwrap();
        let err = find_codex(Some(&file)).unwrap_err();
        assert!(matches!(err, DiscoveryError::NotExecutable { .. }), "{err}");
    }

    #[test]
    fn a_directory_is_not_a_binary() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_codex(Some(dir.path())).unwrap_err();
        assert!(matches!(err, DiscoveryError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn wrong_version_is_rejected_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("codex");
        std::fs::write(&file, "#!/bin/sh\necho 'codex-cli 0.1.0'\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = check_version(&file).unwrap_err();
        assert!(matches!(&err, DiscoveryError::WrongVersion { found, .. } if found == "0.1.0"), "{err}");
        assert!(err.to_string().contains("npm ci --prefix tools/codex"));
    }

    #[test]
    fn the_binary_is_the_one_named_never_a_variable() {
        // The command reads CODEX_BIN (its --codex-bin's variable) and names what it found; the
        // library takes only what it is given. No other test here reads CODEX_BIN.
        std::env::set_var("CODEX_BIN", "/nonexistent/from-the-environment/codex");
        let found = find_codex(None);
        std::env::remove_var("CODEX_BIN");
        assert!(found.is_ok_and(|path| !path.starts_with("/nonexistent")));
    }

    #[test]
    fn the_repository_install_is_native() {
        // The pinned install must exist for the test suite (`.ci/run` installs it).
        let path = find_codex(None).expect("the pinned codex is installed");
        let mut head = [0u8; 4];
        std::fs::File::open(&path).unwrap().read_exact(&mut head).unwrap();
        assert_eq!(&head, b"\x7fELF", "{} should be the native binary, not the Node shim", path.display());
        assert_eq!(check_version(&path).unwrap(), PINNED_CODEX_VERSION);
    }
}
