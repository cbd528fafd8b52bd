//! The service's endpoints, by what they are about.

pub(crate) mod conversations;
pub(crate) mod functions;
pub(crate) mod system;
pub(crate) mod tools;
pub(crate) mod turns;
