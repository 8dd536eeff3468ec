//! Transports move tasks to executors and account for their completion.
//!
//! Completion is tree-shaped: a task is complete when it has run and every
//! task it spawned is complete; then the task it deferred (if any) runs,
//! and that one's completion counts for the parent. This is what lets a
//! directory's attributes be applied right after everything under it is
//! done, not in a global last phase — and it needs nothing but counters, so
//! a broker can keep them on a server instead of in memory.

pub mod local;
pub mod scatter;

use crate::error::Error;
use crate::task::Task;
use std::sync::atomic::AtomicBool;

pub use local::Local;
pub use scatter::Scatter;

/// Lets a running task add work.
pub trait TaskContext {
    /// Queues `task` as a child of the running task.
    fn spawn(&mut self, task: Task);
    /// Runs `task` after the running task and all it spawned are complete.
    /// At most one per task; a second call replaces the first.
    fn defer(&mut self, task: Task);
}

/// Executes one task. The engine implements this.
pub trait TaskRunner: Send + Sync {
    /// Runs `task`; new work goes through `cx`. Failures of entries are
    /// reported by the runner itself (events, counters); a task never fails.
    fn run(&self, task: Task, cx: &mut dyn TaskContext);
}

/// Moves tasks to executors until the seed task and everything it led to
/// are complete, or `quit` is set.
pub trait Transport: Send + Sync {
    /// A short name for reports ("local", "redis").
    fn name(&self) -> &str;

    /// Runs `seed` and all tasks that follow from it.
    ///
    /// # Errors
    /// When the transport itself fails (a broker connection lost for good);
    /// never for failures of single entries.
    fn run(&self, seed: Task, runner: &dyn TaskRunner, quit: &AtomicBool) -> Result<(), Error>;
}

impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn run(&self, seed: Task, runner: &dyn TaskRunner, quit: &AtomicBool) -> Result<(), Error> {
        (**self).run(seed, runner, quit)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn run(&self, seed: Task, runner: &dyn TaskRunner, quit: &AtomicBool) -> Result<(), Error> {
        (**self).run(seed, runner, quit)
    }
}
