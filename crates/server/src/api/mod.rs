//! The service's endpoints, by what they are about.

pub mod conversations;
pub mod system;
pub mod turns;
