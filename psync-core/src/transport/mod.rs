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
use crate::event::{Counts, Stats};
use crate::task::Task;
use std::sync::atomic::AtomicBool;

pub use local::Local;
pub use scatter::Scatter;

/// Lets a running task add work.
///
/// Spawning is idempotent per task id ([`Task::id`]): a child whose id
/// the running task (in this delivery or an earlier one of the same
/// task) already spawned is not queued again, so a task delivered twice
/// spawns nothing twice.
pub trait TaskContext {
    /// Queues `task` as a child of the running task, unless a child with
    /// its id was queued by this task already.
    fn spawn(&mut self, task: Task);
    /// Runs `task` after the running task and all it spawned are complete.
    ///
    /// At most one per task. A second delivery of the running task may
    /// defer again: a task with the id of the one deferred already is
    /// dropped (the first stays; `Ok`).
    ///
    /// # Errors
    /// A second call with a task of another id: a bug of the runner. The
    /// first deferred task stays, the second is handed back, never run.
    fn defer(&mut self, task: Task) -> Result<(), DeferTwice>;
}

/// [`TaskContext::defer`] called a second time by one task, with another
/// task than the first: the second, not deferred.
#[derive(Debug)]
pub struct DeferTwice(pub Box<Task>);

impl std::fmt::Display for DeferTwice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a task deferred a second task ({:?} of {}); it is not run",
            std::mem::discriminant(&*self.0),
            self.0.rel()
        )
    }
}

impl std::error::Error for DeferTwice {}

/// How a task's run ended, and what it counted: what the transport
/// acknowledges.
///
/// The counts are the task's alone ([`Counts`]): the engine keeps them
/// apart from the run's [`Stats`] while the task runs, and the transport
/// adds them once per task, so a task delivered twice counts once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The task did all it had to (its entries' failures included: they
    /// are reported, the task is done). The transport acknowledges it,
    /// adds its counts to the run's (once per task id: those of the
    /// delivery it acknowledges) and counts it complete once its children
    /// are.
    Done(Counts),
    /// The task stopped before it finished (the quit flag: an interrupt,
    /// a full target, a worker shutting down) or did not start. Whatever
    /// it did is safe to do again: a transport that goes on with the run
    /// delivers it again (a broker re-queues it for any worker) and drops
    /// its counts (the next delivery counts); one that is stopping drops
    /// it without counting it complete, so nothing that waits on it (its
    /// parent's deferred finish) runs, and adds its counts (what a stopped
    /// run did, its stop's failure among them, is in its report).
    Abandoned(Counts),
}

impl Outcome {
    /// True for [`Outcome::Done`].
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done(_))
    }

    /// What the task counted.
    pub fn counts(&self) -> &Counts {
        match self {
            Outcome::Done(c) | Outcome::Abandoned(c) => c,
        }
    }

    /// The same outcome with `counts` instead of its own (those of
    /// another delivery of the task).
    pub fn with_counts(self, counts: Counts) -> Outcome {
        match self {
            Outcome::Done(_) => Outcome::Done(counts),
            Outcome::Abandoned(_) => Outcome::Abandoned(counts),
        }
    }
}

/// Executes one task. The engine implements this.
pub trait TaskRunner: Send + Sync {
    /// Runs `task`; new work goes through `cx`. Failures of entries are
    /// reported by the runner itself (events) and counted in the outcome;
    /// a task never fails, it is done or abandoned.
    fn run(&self, task: Task, cx: &mut dyn TaskContext) -> Outcome;

    /// The run's id, for [`Task::id`] (0 for runners outside a run).
    fn run_id(&self) -> u64 {
        0
    }
}

/// Moves tasks to executors until the seed task and everything it led to
/// are complete, or `quit` is set, adding the counts of the tasks it
/// acknowledges to `stats`.
pub trait Transport: Send + Sync {
    /// A short name for reports ("local", "redis").
    fn name(&self) -> &str;

    /// Runs `seed` and all tasks that follow from it; adds each task's
    /// counts ([`Outcome::counts`]) to `stats` once (see [`Outcome`]).
    ///
    /// # Errors
    /// When the transport itself fails (a broker connection lost for good);
    /// never for failures of single entries.
    fn run(
        &self,
        seed: Task,
        runner: &dyn TaskRunner,
        quit: &AtomicBool,
        stats: &Stats,
    ) -> Result<(), Error>;
}

impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn run(
        &self,
        seed: Task,
        runner: &dyn TaskRunner,
        quit: &AtomicBool,
        stats: &Stats,
    ) -> Result<(), Error> {
        (**self).run(seed, runner, quit, stats)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn run(
        &self,
        seed: Task,
        runner: &dyn TaskRunner,
        quit: &AtomicBool,
        stats: &Stats,
    ) -> Result<(), Error> {
        (**self).run(seed, runner, quit, stats)
    }
}
