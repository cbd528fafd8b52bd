//! A pool of `codex app-server` processes (the seed's `CodexAppServerPool`).
//!
//! - [`Pool::ensure_started`] starts `size` processes in parallel (`CODEX_POOL_SIZE`), each
//!   supervised: a process that exits, breaks its pipes or stops answering health checks is
//!   replaced, with exponential backoff so a crash loop never spins.
//! - [`Pool::create_thread`] places a new conversation with the selection strategy
//!   (`CODEX_SELECTION_STRATEGY`: `round_robin` or `least_busy`) and stores it in a
//!   [`ThreadStore`](codex_pool_store::ThreadStore).
//! - [`Pool::start_turn`] routes a turn to the process that holds the conversation (affinity).
//!   Every item codex records in a conversation (`TurnEvent::ResponseItem`) is kept in the store;
//!   a conversation no process holds (its process died, it idled out, the pool restarted) is
//!   rebuilt on a live process first: a new codex thread with the same settings, given the
//!   stored history (`thread/inject_items`). The conversation keeps its id throughout.
//! - A turn on a process that dies ends at once with an `aborted` event (`process_exited`); a
//!   turn that produces no event for the turn timeout is interrupted and ends with `timeout`.
//! - Threads idle longer than a configured time are unloaded from codex and rebuilt on their next
//!   turn.
//! - Each pool owns the root certificates its processes trust ([`PoolConfig::ca_bundle`]): a
//!   minimal bundle for a plain `http` provider, just the roots the provider's hosts need for
//!   `https` (`auto`), and the system roots again if a reduced bundle turns out to reject the
//!   model's certificate.
//! - Several pools (nodes) can share one store ([`PoolConfig::node`]): each conversation is then
//!   served by one node at a time, under a lease whose fence every history write carries; a
//!   turn on a conversation another node holds fails with `StoreError::OwnedElsewhere`, naming
//!   that node and its address.
//! - [`Pool::shutdown`] interrupts running turns (each ends with a final event) and ends every
//!   process and task.

#![deny(missing_docs)]

mod compaction;
mod config;
mod conversations;
mod counters;
mod down;
mod error;
mod fork;
mod history;
mod ownership;
mod placement;
mod pool;
mod profile;
mod reaper;
mod routing;
mod start;
mod store_writer;
mod strategy;
mod supervisor;
mod tls;
mod tools;
mod turn;

pub use config::{CompactScope, ConfigError, PoolConfig, Spawn, Spawner, ENV_MODEL, ENV_POOL_SIZE, ENV_STRATEGY};
pub use conversations::{ConversationInfo, TurnOptions};
pub use counters::PoolCounters;
pub use down::{DownReason, Hang};
pub use error::PoolError;
pub use fork::Fork;
pub use history::MODERATION_FIELD;
pub use ownership::NodeConfig;
pub use placement::INITIAL_HISTORY_TURN;
pub use pool::{NodeStats, Pool, PoolStats};
pub use profile::{Profile, UnknownProfile, CHAT_BASE_INSTRUCTIONS, CHAT_CONFIG};
pub use strategy::{Candidate, LeastBusy, RoundRobin, SelectionStrategy, Strategy, UnknownStrategy};
pub use supervisor::{SlotStats, SlotStatus};
pub use tls::CaStats;
pub use tools::{Submitted, CODEX_TOOL_NAMES};
pub use turn::PoolTurn;

pub use codex_pool_process::{AbortReason, CaBundle, SystemRoots, TurnEvent};
pub use codex_pool_protocol::CodexThreadId;
pub use codex_pool_protocol::{ToolCall, ToolContent, ToolOutput, ToolSpec};
pub use codex_pool_store::{ConversationId, ListCursor, NodeId, NodeStatus, PendingCall, StoredItem, ThreadRecord};
