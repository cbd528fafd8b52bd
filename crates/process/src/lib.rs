//! One `codex app-server` process, driven right (the seed's `CodexAppServerInstance`).
//!
//! [`AppServer::spawn`] starts the native codex binary with config overrides, its own
//! `CODEX_HOME` and an empty working directory, and performs the `initialize` handshake. An actor
//! task owns all of the process's state; callers hold cheap [`AppServerHandle`]s:
//!
//! - many requests run concurrently, correlated by id, each with its own timeout, and an
//!   interrupt never queues behind other requests;
//! - every notification goes to the [`TurnStream`] of its thread, so concurrent turns on one
//!   process never mix;
//! - every request codex sends the client is answered by a [`ServerRequestHandler`] (by default
//!   [`DeclinePolicy`]), in a task of its own, so no turn hangs;
//! - stderr is drained into `tracing`; malformed and over-long lines are skipped, not fatal;
//! - exit is detected at once and every running turn ends with [`AbortReason::ProcessExited`];
//! - [`AppServer::shutdown`] closes stdin, then SIGTERMs, then SIGKILLs the process group; the
//!   child also gets `PR_SET_PDEATHSIG`, so a killed owner leaves no orphan.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use codex_pool_process::{find_checked, AppServer, ModelProvider, ProcessConfig, TurnEvent};
//! use codex_pool_protocol::methods::{ThreadStartParams, TurnStartParams};
//! use codex_pool_protocol::types::UserInput;
//!
//! let bin = find_checked(None)?;
//! let config = ProcessConfig::new(bin, "/tmp/codex-home".into(), "/tmp/codex-empty".into())
//!     .with_provider(&ModelProvider::new("mock", "http://127.0.0.1:8080/v1"));
//! let server = AppServer::spawn(config).await?;
//! let codex = server.handle().clone();
//! let thread = codex.start_thread(&ThreadStartParams::default()).await?.thread;
//! let mut turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text("hi")])).await?;
//! while let Some(event) = turn.next().await {
//!     if let TurnEvent::AgentMessageDelta { delta, .. } = event {
//!         print!("{delta}");
//!     }
//! }
//! server.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod actor;
pub mod ca;
mod child;
mod command;
pub mod config;
pub mod discovery;
pub mod error;
pub mod events;
mod handle;
pub mod hops;
mod lines;
pub mod policy;
mod process;
mod stats;
mod turn;

pub use actor::ProcessState;
pub use ca::{CaBundle, CaFiles, CaKind, CaSetup, ModelHosts, ResolvedCa, SystemRoots};
pub use config::{
    inherited_env, toml_string, ModelProvider, ProcessConfig, BASE_OVERRIDES, INHERITED_ENV, TOOL_ENV_EXCLUDE,
};
pub use discovery::{find_checked, find_codex, PINNED_CODEX_VERSION};
pub use error::{DiscoveryError, ExitReason, ProcessError, SpawnError};
pub use events::{AbortReason, TurnEvent};
pub use handle::{check_input, AppServerHandle, MAX_INPUT_CHARS};
pub use policy::{BoxFuture, DeclinePolicy, ServerRequestHandler};
pub use process::AppServer;
pub use stats::ProcessStats;
pub use turn::TurnStream;
