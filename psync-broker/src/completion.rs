//! Exact, tree-shaped completion kept on the Redis server, the model of
//! [`psync_core::transport::Local`]'s completion tree: each task has a
//! record (a hash) with its parent's id, its count of outstanding units
//! (its own work and each child it spawned), whether its own work is done,
//! its deferred task, and the ids it spawned. Every change is one Lua
//! script, so a count is never lost between workers. The scripts are
//! idempotent: a task delivered again (at-least-once delivery) spawns,
//! defers and completes once. A record is deleted when its subtree is
//! done, so the server holds state only for tasks under way.

use psync_core::task::TaskId;
use redis::{ConnectionLike, RedisResult, Script};

/// The names of one run's keys. Every key has the run's hash tag, so a
/// run's keys share one slot (its scripts touch ancestors' records by
/// name).
#[derive(Debug, Clone)]
pub struct RunKeys {
    prefix: String,
}

impl RunKeys {
    /// The keys of the run `run` (its run id, as in `TaskRunner::run_id`).
    pub fn new(run: u64) -> RunKeys {
        RunKeys {
            prefix: format!("psync:{{{run:016x}}}:"),
        }
    }

    /// What every key of the run starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The run's state (a hash: `root`, and `complete` once it is).
    pub fn state(&self) -> String {
        format!("{}state", self.prefix)
    }

    /// The run's task stream: entries `id` (hex) and `task` (its bytes).
    pub fn tasks(&self) -> String {
        format!("{}tasks", self.prefix)
    }

    /// The completion record of task `id`.
    pub fn task(&self, id: TaskId) -> String {
        format!("{}t:{id}", self.prefix)
    }

    /// The run's counters: a hash of [`psync_core::Counts`] fields, each
    /// the sum over the run's completed tasks.
    pub fn counts(&self) -> String {
        format!("{}counts", self.prefix)
    }

    /// The run's event log: a capped stream of entries `l` (level:
    /// `error`, `warn`, `info`), `w` (the worker) and `e` (the event as
    /// JSON).
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// A pattern matching every task record of the run (for SCAN).
    pub fn task_pattern(&self) -> String {
        format!("{}t:*", self.prefix)
    }
}

/// What [`Completion::complete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completed {
    /// Nothing: the task was counted done before (a late delivery).
    Again,
    /// Counted; work below it (or beside it, up the tree) remains.
    Counted,
    /// Its subtree, or an ancestor's, is done: that task's deferred task,
    /// with this id, is queued in its place.
    Deferred(TaskId),
    /// The root's tree is done: the run is complete. Returned once.
    RunComplete,
}

/// What [`Completion::defer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// Set.
    Set,
    /// Nothing: set before with this id, or the task's subtree is done.
    Again,
    /// Refused: the task has another deferred task, or it is done without
    /// one (a task defers at most one, while it runs).
    Refused,
}

/// The completion scripts of one run.
#[derive(Debug)]
pub struct Completion {
    keys: RunKeys,
    seed: Script,
    spawn: Script,
    defer: Script,
    complete: Script,
}

/// How long an ended run's state, counters and event log stay on the
/// server (for `psync status` and `psync logs`): 7 days.
pub const END_TTL_SECS: u64 = 7 * 24 * 3600;

/// A script that completes tasks: the shared `complete` function of
/// `lua/tree.lua`, then `body`.
pub(crate) fn with_tree(body: &str) -> String {
    format!("{}\n{body}", include_str!("lua/tree.lua"))
}

/// Parses a task id as the scripts return it (hex, as `TaskId` prints).
pub(crate) fn parse_id(hex: &str) -> RedisResult<TaskId> {
    u128::from_str_radix(hex, 16).map(TaskId).map_err(|_| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "not a task id",
            hex.to_string(),
        ))
    })
}

impl Completion {
    /// The scripts of the run `run`. `Script::invoke` runs each by its
    /// SHA1 (EVALSHA) and loads it when the server answers NOSCRIPT (a
    /// restarted server, or one that flushed its scripts).
    pub fn new(run: u64) -> Completion {
        Completion {
            keys: RunKeys::new(run),
            seed: Script::new(include_str!("lua/seed.lua")),
            spawn: Script::new(include_str!("lua/spawn.lua")),
            defer: Script::new(include_str!("lua/defer.lua")),
            complete: Script::new(&with_tree(include_str!("lua/complete.lua"))),
        }
    }

    /// The run's keys.
    pub fn keys(&self) -> &RunKeys {
        &self.keys
    }

    /// Starts the run with its root task `root` (queued); false when it
    /// was started before (nothing done).
    pub fn seed(
        &self,
        con: &mut dyn ConnectionLike,
        root: TaskId,
        task: &[u8],
    ) -> RedisResult<bool> {
        self.seed
            .key(self.keys.state())
            .key(self.keys.task(root))
            .key(self.keys.tasks())
            .arg(root.to_string())
            .arg(task)
            .invoke(con)
    }

    /// `parent`, running, spawns `child` (queued, counted in the parent);
    /// false when nothing was done: spawned before, or the parent is done.
    pub fn spawn(
        &self,
        con: &mut dyn ConnectionLike,
        parent: TaskId,
        child: TaskId,
        task: &[u8],
    ) -> RedisResult<bool> {
        self.spawn
            .key(self.keys.task(parent))
            .key(self.keys.task(child))
            .key(self.keys.tasks())
            .key(self.keys.state())
            .arg(child.to_string())
            .arg(parent.to_string())
            .arg(task)
            .invoke(con)
    }

    /// `id`, running, sets `deferred` to run when it and its subtree are done.
    pub fn defer(
        &self,
        con: &mut dyn ConnectionLike,
        id: TaskId,
        deferred: TaskId,
        task: &[u8],
    ) -> RedisResult<Deferral> {
        let r: i64 = self
            .defer
            .key(self.keys.task(id))
            .arg(deferred.to_string())
            .arg(task)
            .invoke(con)?;
        Ok(match r {
            1 => Deferral::Set,
            0 => Deferral::Again,
            _ => Deferral::Refused,
        })
    }

    /// `id`'s own work is done.
    pub fn complete(&self, con: &mut dyn ConnectionLike, id: TaskId) -> RedisResult<Completed> {
        let (code, deferred): (i64, String) = self
            .complete
            .key(self.keys.state())
            .key(self.keys.tasks())
            .key(self.keys.task(id))
            .arg(self.keys.prefix())
            .arg(END_TTL_SECS)
            .invoke(con)?;
        Ok(match code {
            1 => Completed::Counted,
            2 => Completed::Deferred(parse_id(&deferred)?),
            3 => Completed::RunComplete,
            _ => Completed::Again,
        })
    }

    /// Whether the run is complete.
    pub fn is_complete(&self, con: &mut dyn ConnectionLike) -> RedisResult<bool> {
        let v: Option<String> = redis::cmd("HGET")
            .arg(self.keys.state())
            .arg("complete")
            .query(con)?;
        Ok(v.is_some())
    }
}
