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
use crate::event::{Counts, Event};
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
    /// How many times the running task has been delivered, this delivery
    /// included: 1 the first time (the default); a broker's delivery
    /// count. A task delivered again may find part of its work done by
    /// tasks its earlier delivery spawned.
    fn delivery(&self) -> u32 {
        1
    }
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

/// What one delivery of a task counted and reported: what the
/// transport acknowledges, once per task ([`TaskRunner::acknowledge`]).
///
/// The engine keeps a running task's counts and events apart from the
/// run's [`Stats`](crate::event::Stats) and event channel, so that a task delivered twice
/// counts and reports once: the delivery the transport acknowledges.
/// Events past a bound (4,096 per task) are sent while the task runs
/// instead (a directory of millions of entries with `-i` must not hold
/// them all): a task delivered again after that many repeats them.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TaskReport {
    /// What the task counted, for the run's [`Stats`](crate::event::Stats).
    pub counts: Counts,
    /// What it reported and has not sent yet (itemized entries,
    /// warnings, errors), in order.
    pub events: Vec<Event>,
}

/// How a task's run ended, and what it counted and reported
/// ([`TaskReport`]): what the transport acknowledges.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    /// The task did all it had to (its entries' failures included: they
    /// are reported, the task is done). The transport acknowledges it
    /// (hands the report of the delivery it acknowledges to
    /// [`TaskRunner::acknowledge`], once per task id) and counts it
    /// complete once its children are.
    Done(TaskReport),
    /// The task stopped before it finished (the quit flag: an interrupt,
    /// a full target, a worker shutting down) or did not start. Whatever
    /// it did is safe to do again: a transport that goes on with the run
    /// delivers it again (a broker re-queues it for any worker) and drops
    /// its report (the next delivery's counts); one that is stopping drops
    /// it without counting it complete, so nothing that waits on it (its
    /// parent's deferred finish) runs, and acknowledges its report (what a
    /// stopped run did, its stop's failure among it, is in its report and
    /// events).
    Abandoned(TaskReport),
}

impl Outcome {
    /// True for [`Outcome::Done`].
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done(_))
    }

    /// What the task counted and reported.
    pub fn report(&self) -> &TaskReport {
        match self {
            Outcome::Done(r) | Outcome::Abandoned(r) => r,
        }
    }

    /// [`Outcome::report`], taken.
    pub fn into_report(self) -> TaskReport {
        match self {
            Outcome::Done(r) | Outcome::Abandoned(r) => r,
        }
    }

    /// The same outcome with `report` instead of its own (that of
    /// another delivery of the task).
    pub fn with_report(self, report: TaskReport) -> Outcome {
        match self {
            Outcome::Done(_) => Outcome::Done(report),
            Outcome::Abandoned(_) => Outcome::Abandoned(report),
        }
    }
}

/// Executes one task. The engine implements this.
pub trait TaskRunner: Send + Sync {
    /// Runs `task`; new work goes through `cx`. Failures of entries are
    /// reported (events) and counted in the outcome's report; a task
    /// never fails, it is done or abandoned.
    fn run(&self, task: Task, cx: &mut dyn TaskContext) -> Outcome;

    /// Takes the report of a task the transport acknowledges, once per
    /// task (see [`Outcome`]): the engine adds its counts to the run's
    /// [`Stats`](crate::event::Stats) and sends its events.
    fn acknowledge(&self, report: TaskReport);

    /// The run's id, for [`Task::id`] (0 for runners outside a run).
    fn run_id(&self) -> u64 {
        0
    }
}

/// Moves tasks to executors until the seed task and everything it led to
/// are complete, or `quit` is set, acknowledging each task's report once
/// ([`TaskRunner::acknowledge`]).
pub trait Transport: Send + Sync {
    /// A short name for reports ("local", "redis").
    fn name(&self) -> &str;

    /// Runs `seed` and all tasks that follow from it; hands each task's
    /// report to `runner` once (see [`Outcome`]).
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
