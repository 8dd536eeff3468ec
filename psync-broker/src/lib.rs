//! psync's broker: runs tasks on worker processes on any number of nodes
//! through one Redis server (ADRs 015 and 016).
//!
//! - [`Broker`]: submit a run and follow it; the cluster's commands
//!   (status, pause, resume, thread counts, cancel, shutdown, logs).
//! - [`Worker`]: a `psync worker` process's work loop.
//! - [`Completion`]: the server side of tree-shaped completion.
//! - [`config`]: broker URLs (TLS, passwords), the roots a worker
//!   accepts (`--allow`), worker config files, task checks.
//! - [`delay::DelayProxy`]: a delaying TCP proxy, for tests and
//!   benchmarks of the broker over a slower network.

mod client;
mod completion;
pub mod config;
mod conn;
pub mod delay;
pub mod keys;
mod limits;
mod worker;

pub use client::{
    Broker, BrokerError, End, Level, LogEntry, RunEnd, RunId, RunInfo, Status, WorkerInfo,
};
pub use completion::{Completed, Completion, Deferral, END_TTL_SECS, RunKeys};
pub use conn::{Outage, OutageSink};
pub use limits::RunLimits;
pub use worker::{Accept, CheckTask, MakeEngine, RunEngine, RunIo, Worker, WorkerOptions, engines};
