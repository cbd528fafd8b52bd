//! Every environment variable `codex-pool` honours, read in this one place.
//!
//! A variable that stands for a flag is that flag's clap `env` (so `--help` lists it beside the
//! flag), and the flag wins over it: flag, then variable, then default. An empty variable counts
//! as unset ([`parse`]), except the token's: an empty token is refused, never taken for none. The libraries take values: the binary does not call
//! `PoolConfig::with_env`, whose three variables are the flags' here.
//!
//! | variable | flag |
//! |---|---|
//! | `CODEX_POOL_SIZE` | `serve --pool-size` |
//! | `CODEX_SELECTION_STRATEGY` | `serve --strategy` |
//! | `CODEX_MODEL` | `--model` (`serve`, `chat`) |
//! | `CODEX_BIN` | `--codex-bin` (`serve`, `chat`, `doctor`, `bench`) |
//! | `CODEX_POOL_DATA_DIR` | `--data-dir` (`serve`, `doctor`) |
//! | `DATABASE_URL` | `--db` (`serve`, `doctor`) |
//! | `CODEX_POOL_TOKEN`, `CODEX_POOL_TOKEN_FILE` | `serve --token`, `--token-file` |
//! | `CODEX_POOL_LOG` | `--log` |
//! | `CODEX_POOL_BACKTRACE` | `--verbose` |
//! | `CODEX_POOL_CODEX_LOG` | `bench --codex-log` (codex's own log filter; read by hand for the other commands, [`codex_log`]) |
//!
//! Read here by hand, as no flag stands for them: `CODEX_POOL_CODEX_LOG` (codex's own log
//! filter, [`codex_log`]), and the defaults that follow the system's conventions: `CODEX_HOME`
//! (codex's own home, with `--openai` and in `doctor`), `XDG_DATA_HOME` and `HOME`. The
//! libraries read only what describes the environment codex inherits (the root certificates'
//! and proxies' variables) and `CODEX_POOL_ALLOW_ANY_CODEX_VERSION`, the pinned version's
//! escape hatch, which every caller must honour the same way.

use anyhow::Context;
use clap::{Command, CommandFactory, FromArgMatches};
use codex_pool::Strategy;
use std::ffi::OsStr;
use std::path::PathBuf;

/// Variables whose empty value is a mistake to report (`serve` refuses an empty token) rather
/// than a variable left unset.
const EMPTY_IS_AN_ERROR: [&str; 2] = ["CODEX_POOL_TOKEN", "CODEX_POOL_TOKEN_FILE"];

/// The command line, with the variables behind its flags; an empty variable is taken as unset
/// (but for [`EMPTY_IS_AN_ERROR`]).
pub fn parse<T: CommandFactory + FromArgMatches>() -> T {
    let command = T::command();
    let unset = |name: &OsStr| {
        !EMPTY_IS_AN_ERROR.iter().any(|strict| name == *strict) && std::env::var_os(name).is_some_and(|v| v.is_empty())
    };
    let command = empty_is_unset(command, &unset);
    let matches = command.get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `command` without the variables `empty` says are set to nothing, in every subcommand.
fn empty_is_unset(mut command: Command, empty: &dyn Fn(&OsStr) -> bool) -> Command {
    let unset: Vec<_> =
        command.get_arguments().filter(|a| a.get_env().is_some_and(empty)).map(|a| a.get_id().clone()).collect();
    for id in unset {
        command = command.mut_arg(id, |a| a.env(None::<&'static str>));
    }
    let names: Vec<String> = command.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    for name in names {
        command = command.mut_subcommand(name, |s| empty_is_unset(s, empty));
    }
    command
}

/// codex's own log filter (its `RUST_LOG`): `CODEX_POOL_CODEX_LOG`, else `warn`.
pub fn codex_log() -> String {
    std::env::var("CODEX_POOL_CODEX_LOG").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "warn".to_owned())
}

/// `--pool-size` (`CODEX_POOL_SIZE`): a whole number from 1 to 64.
pub fn pool_size(value: &str) -> Result<usize, String> {
    value.trim().parse().ok().filter(|n| (1..=64).contains(n)).ok_or_else(|| {
        format!("{value:?} is not a pool size; use a whole number from 1 to 64 (--pool-size or CODEX_POOL_SIZE)")
    })
}

/// `--strategy` (`CODEX_SELECTION_STRATEGY`).
pub fn strategy(value: &str) -> Result<Strategy, String> {
    value.parse().map_err(|e| format!("{e} (--strategy or CODEX_SELECTION_STRATEGY)"))
}

/// The data directory the service uses when neither `--data-dir` nor `CODEX_POOL_DATA_DIR` is
/// given: `$XDG_DATA_HOME/codex-pool`, else `~/.local/share/codex-pool`.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("codex-pool"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/codex-pool"))
}

/// codex's own home when it is not given: `CODEX_HOME`, else `~/.codex` (where `codex login`
/// keeps the login).
pub fn default_codex_home() -> Option<PathBuf> {
    std::env::var_os("CODEX_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".codex")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(long, env = "CODEX_POOL_TEST_SIZE", value_parser = pool_size)]
        size: Option<usize>,
        #[command(subcommand)]
        command: Option<Sub>,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Serve {
            #[arg(long, env = "CODEX_POOL_TEST_DIR")]
            dir: Option<String>,
        },
    }

    #[test]
    fn an_empty_variable_is_unset_in_every_subcommand() {
        let empty = |name: &OsStr| name == "CODEX_POOL_TEST_SIZE" || name == "CODEX_POOL_TEST_DIR";
        let command = empty_is_unset(Cli::command(), &empty);
        assert!(command.get_arguments().all(|a| a.get_env().is_none()));
        let serve = command.find_subcommand("serve").unwrap();
        assert!(serve.get_arguments().all(|a| a.get_env().is_none()));
        let kept = empty_is_unset(Cli::command(), &|_| false);
        assert!(kept.get_arguments().any(|a| a.get_env() == Some(OsStr::new("CODEX_POOL_TEST_SIZE"))));
    }

    #[test]
    fn pool_sizes() {
        assert_eq!(pool_size(" 5 "), Ok(5));
        for bad in ["0", "-1", "three", "1000", ""] {
            assert!(pool_size(bad).unwrap_err().contains("1 to 64"), "{bad}");
        }
    }
}
