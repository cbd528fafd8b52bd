//! Test set-up shared by the crates' tests: the real pinned codex against the fake model (feature
//! `codex`, on by default), and a throwaway PostgreSQL server ([`postgres`]).

#![deny(missing_docs)]

#[cfg(feature = "codex")]
mod codex;
pub mod postgres;

#[cfg(feature = "codex")]
pub use codex::*;
