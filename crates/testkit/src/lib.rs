//! Test set-up shared by the crates' tests: the real pinned codex against the fake model (feature
//! `codex`, on by default), a scripted peer that plays codex for faults the real binary cannot
//! produce on demand ([`scripted`], same feature), a memory store whose calls fail or wait on
//! demand ([`stores`], same feature), and a throwaway PostgreSQL server
//! ([`postgres`]).

#![deny(missing_docs)]

#[cfg(feature = "codex")]
mod codex;
pub mod postgres;
#[cfg(feature = "codex")]
pub mod scripted;
#[cfg(feature = "codex")]
pub mod stores;

#[cfg(feature = "codex")]
pub use codex::*;
