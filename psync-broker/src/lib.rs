//! psync's broker: runs tasks on worker processes on any number of nodes
//! through one Redis server (ADR 015).
//!
//! Built so far: the run's keys and the server side of tree-shaped
//! completion ([`Completion`]). The transport over streams, leases,
//! workers and the CLI come next.

mod completion;
pub mod config;

pub use completion::{Completed, Completion, Deferral, RunKeys};
