//! The local transport: worker threads with per-thread LIFO deques and
//! work stealing (depth-first keeps the number of queued directories small),
//! an injector for the seed, and tree-shaped completion counting.
//!
//! Idempotence: a task's children are spawned once per id ([`Task::id`])
//! by each execution of it, however many times its runner delivers it
//! again inside that execution (the test runner [`super::Scatter`] does,
//! to model a broker's redelivery): the set of ids it spawned lives as
//! long as the execution, which is as long as the task can be delivered
//! again (once the transport counts it done, nothing delivers it). A
//! broker keeps the same set on its server, keyed by the parent's id,
//! until it acknowledges the parent. Its deferred task is set once; a
//! second one with the same id is dropped, one with another id is an
//! error ([`super::DeferTwice`]).
//!
//! Outcomes: a task [`Outcome::Done`] counts toward its parent's
//! completion; one [`Outcome::Abandoned`] does not (nothing waiting on
//! it runs), which is right when the run is stopping — the only time the
//! engine abandons a task. This transport cannot deliver a task again
//! (it gave it to the runner): a task abandoned while the run goes on
//! stops the run with an error. Either way the task is not run again, so
//! its report (counts and events) is acknowledged once it returns, an
//! abandoned task's too: what a stopped run did is in its report (a
//! runner that delivers a task more than once, like [`super::Scatter`],
//! returns the report of one delivery).
//!
//! [`Outcome::Done`]: super::Outcome::Done
//! [`Outcome::Abandoned`]: super::Outcome::Abandoned

use super::{DeferTwice, TaskContext, TaskRunner, Transport};
use crate::error::Error;
use crate::task::{Task, TaskId};
use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Runs tasks on this process's threads.
#[derive(Debug, Clone)]
pub struct Local {
    threads: usize,
}

impl Local {
    /// A transport with `threads` worker threads (at least 1).
    pub fn new(threads: usize) -> Local {
        Local {
            threads: threads.max(1),
        }
    }

    /// The number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// A task's place in the completion tree: how many of it and its spawned
/// children are still running, what to run when they are all done, and
/// whose completion that counts toward.
struct Node {
    pending: AtomicUsize,
    /// The deferred task and its id.
    deferred: Mutex<Option<(TaskId, Task)>>,
    parent: Option<Arc<Node>>,
}

impl Drop for Node {
    /// Lets go of the ancestors one at a time: a node holds its parent,
    /// so a tree as deep as the source's directories is a chain as long,
    /// and the default drop would recurse down it (a run stopped 100,000
    /// levels deep overflowed the stack of the thread dropping its last
    /// task). Each ancestor this was the last holder of is taken apart
    /// here; one that is held elsewhere stops the loop.
    fn drop(&mut self) {
        let mut next = self.parent.take();
        while let Some(parent) = next {
            next = Arc::into_inner(parent).and_then(|mut p| p.parent.take());
        }
    }
}

struct Job {
    /// Boxed: a deque's slots are allocated 64 at a time and doubled, and
    /// a `Task` is 368 bytes (24 KiB per worker before it queued anything).
    task: Box<Task>,
    parent: Option<Arc<Node>>,
}

struct Shared<'a> {
    injector: Injector<Job>,
    stealers: Vec<Stealer<Job>>,
    runner: &'a dyn TaskRunner,
    quit: &'a AtomicBool,
    done: AtomicBool,
    /// Sleeping workers wait here for new work.
    idle: Mutex<usize>,
    wake: Condvar,
    panicked: AtomicBool,
    /// A task was abandoned while the run went on (see the module's docs).
    abandoned: AtomicBool,
    run_id: u64,
}

impl Transport for Local {
    fn name(&self) -> &str {
        "local"
    }

    fn run(&self, seed: Task, runner: &dyn TaskRunner, quit: &AtomicBool) -> Result<(), Error> {
        let workers: Vec<Worker<Job>> = (0..self.threads).map(|_| Worker::new_lifo()).collect();
        let shared = Shared {
            injector: Injector::new(),
            stealers: workers.iter().map(Worker::stealer).collect(),
            runner,
            quit,
            done: AtomicBool::new(false),
            idle: Mutex::new(0),
            wake: Condvar::new(),
            panicked: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            run_id: runner.run_id(),
        };
        shared.injector.push(Job {
            task: Box::new(seed),
            parent: None,
        });
        let spawned = std::thread::scope(|s| {
            for (i, w) in workers.into_iter().enumerate() {
                let shared = &shared;
                let started = std::thread::Builder::new()
                    .name(format!("psync-{i}"))
                    .spawn_scoped(s, move || shared.work(&w));
                if let Err(e) = started {
                    // Out of threads: the ones running stop, the run fails.
                    quit.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            Ok(())
        });
        if let Err(e) = spawned {
            return Err(Error::new(
                crate::error::Op::Transport,
                "",
                std::io::Error::new(e.kind(), format!("cannot start a worker thread: {e}")),
            ));
        }
        if shared.panicked.load(Ordering::Relaxed) {
            return Err(Error::new(
                crate::error::Op::Transport,
                "",
                std::io::Error::other("a worker thread panicked; the run stopped"),
            ));
        }
        if shared.abandoned.load(Ordering::Relaxed) {
            return Err(Error::new(
                crate::error::Op::Transport,
                "",
                std::io::Error::other(
                    "a task was abandoned while the run went on (the local transport cannot \
                     deliver it again); the run stopped",
                ),
            ));
        }
        Ok(())
    }
}

struct Cx<'a, 'b> {
    shared: &'a Shared<'b>,
    local: &'a Worker<Job>,
    node: Option<Arc<Node>>,
    parent: &'a Option<Arc<Node>>,
    /// The ids of the children this execution spawned (see the module's docs).
    spawned: HashSet<TaskId>,
}

impl Cx<'_, '_> {
    fn node(&mut self) -> Arc<Node> {
        let parent = self.parent.clone();
        Arc::clone(self.node.get_or_insert_with(|| {
            Arc::new(Node {
                pending: AtomicUsize::new(1),
                deferred: Mutex::new(None),
                parent,
            })
        }))
    }
}

impl TaskContext for Cx<'_, '_> {
    fn spawn(&mut self, task: Task) {
        if !self.spawned.insert(task.id(self.shared.run_id)) {
            return;
        }
        let node = self.node();
        node.pending.fetch_add(1, Ordering::AcqRel);
        self.local.push(Job {
            task: Box::new(task),
            parent: Some(node),
        });
        self.shared.notify();
    }

    fn defer(&mut self, task: Task) -> Result<(), DeferTwice> {
        let id = task.id(self.shared.run_id);
        let node = self.node();
        let mut deferred = node.deferred.lock().unwrap_or_else(|p| p.into_inner());
        match &*deferred {
            None => {
                *deferred = Some((id, task));
                Ok(())
            }
            Some((first, _)) if *first == id => Ok(()),
            Some(_) => Err(DeferTwice(Box::new(task))),
        }
    }
}

impl Shared<'_> {
    fn work(&self, local: &Worker<Job>) {
        loop {
            if self.quit.load(Ordering::Relaxed) || self.done.load(Ordering::Acquire) {
                self.wake.notify_all();
                return;
            }
            match self.find(local) {
                Some(job) => self.execute(job, local),
                None => self.sleep(),
            }
        }
    }

    fn find(&self, local: &Worker<Job>) -> Option<Job> {
        local.pop().or_else(|| {
            std::iter::repeat_with(|| {
                self.injector
                    .steal_batch_and_pop(local)
                    .or_else(|| self.stealers.iter().map(Stealer::steal).collect())
            })
            .find(|s| !s.is_retry())
            .and_then(Steal::success)
        })
    }

    fn execute(&self, job: Job, local: &Worker<Job>) {
        let mut cx = Cx {
            shared: self,
            local,
            node: None,
            parent: &job.parent,
            spawned: HashSet::new(),
        };
        let ran = catch_unwind(AssertUnwindSafe(|| self.runner.run(*job.task, &mut cx)));
        match ran {
            Ok(outcome) => {
                let done = outcome.is_done();
                self.runner.acknowledge(outcome.into_report());
                if !done {
                    // Not counted complete: nothing that waits on it runs.
                    if !self.quit.load(Ordering::Relaxed) {
                        self.abandoned.store(true, Ordering::Relaxed);
                        self.quit.store(true, Ordering::Relaxed);
                    }
                    return;
                }
            }
            Err(_) => {
                // A bug, not an entry failure: stop the run rather than
                // leave a directory whose finish never comes.
                self.panicked.store(true, Ordering::Relaxed);
                self.quit.store(true, Ordering::Relaxed);
                return;
            }
        }
        match cx.node {
            Some(node) => self.complete(node, local),
            None => self.complete_parent(job.parent, local),
        }
    }

    /// One unit of `node` is complete; when it was the last, run its
    /// deferred task or pass completion up.
    fn complete(&self, node: Arc<Node>, local: &Worker<Job>) {
        if node.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let deferred = node
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match deferred {
            Some((_, task)) => {
                local.push(Job {
                    task: Box::new(task),
                    parent: node.parent.clone(),
                });
                self.notify();
            }
            None => self.complete_parent(node.parent.clone(), local),
        }
    }

    fn complete_parent(&self, parent: Option<Arc<Node>>, local: &Worker<Job>) {
        match parent {
            Some(p) => self.complete(p, local),
            None => {
                self.done.store(true, Ordering::Release);
                self.wake.notify_all();
            }
        }
    }

    fn notify(&self) {
        if *self.idle.lock().unwrap_or_else(|p| p.into_inner()) > 0 {
            self.wake.notify_one();
        }
    }

    fn sleep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        *idle += 1;
        // A short timeout bounds the cost of a wake-up lost between our
        // failed search and this wait.
        let (mut idle, _) = self
            .wake
            .wait_timeout(idle, Duration::from_millis(2))
            .unwrap_or_else(|p| p.into_inner());
        *idle -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Entry, Kind, Name, RelPath, Time};
    use crate::event::{Counts, Stats};
    use crate::transport::{Outcome, TaskReport};
    use std::sync::Mutex as StdMutex;

    fn dir_entry() -> Entry {
        Entry {
            name: Name::from("d"),
            kind: Kind::Dir,
            size: 0,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: Time::default(),
            atime: Time::default(),
            ctime: Time::default(),
            nlink: 2,
            dev: 0,
            ino: 0,
            rdev: 0,
            blocks: 0,
            link: None,
            mount_root: false,
            flags: None,
            fs_data: Default::default(),
        }
    }

    /// Builds a synthetic tree: each Dir of depth < 4 spawns 3 Dirs; each
    /// finish is recorded. Checks every finish comes after all finishes
    /// below it, and that the run terminates. Each directory task counts
    /// one directory, each finish one entry done.
    struct TreeRunner {
        log: StdMutex<Vec<String>>,
        stats: Stats,
    }

    /// A report of `counts`.
    fn counted(counts: Counts) -> TaskReport {
        TaskReport {
            counts,
            ..TaskReport::default()
        }
    }

    impl TaskRunner for TreeRunner {
        fn run(&self, task: Task, cx: &mut dyn TaskContext) -> Outcome {
            match task {
                Task::Dir { rel, src, .. } => {
                    if rel.depth() < 4 {
                        for i in 0..3 {
                            let child = rel.join(&Name::from(format!("{i}").as_str()));
                            cx.spawn(Task::Dir {
                                rel: child,
                                src: src.clone(),
                                dst: None,
                                at: None,
                            });
                        }
                    }
                    cx.defer(Task::FinishDir {
                        rel,
                        src,
                        dst: None,
                        touched: false,
                        at: None,
                        pass: 0,
                    })
                    .unwrap();
                    return Outcome::Done(counted(Counts {
                        dirs: 1,
                        ..Counts::default()
                    }));
                }
                Task::FinishDir { rel, .. } => self.log.lock().unwrap().push(rel.to_string()),
                _ => {}
            }
            Outcome::Done(counted(Counts {
                done: 1,
                ..Counts::default()
            }))
        }

        fn acknowledge(&self, report: TaskReport) {
            self.stats.add(&report.counts);
        }
    }

    #[test]
    fn finishes_come_after_their_subtrees_and_run_terminates() {
        for threads in [1, 4] {
            let runner = TreeRunner {
                log: StdMutex::new(Vec::new()),
                stats: Stats::default(),
            };
            let quit = AtomicBool::new(false);
            Local::new(threads)
                .run(
                    Task::Dir {
                        rel: RelPath::root(),
                        src: dir_entry(),
                        dst: None,
                        at: None,
                    },
                    &runner,
                    &quit,
                )
                .unwrap();
            let stats = runner.stats;
            let log = runner.log.into_inner().unwrap();
            let n = 1 + 3 + 9 + 27 + 81;
            assert_eq!(log.len(), n);
            // Every task's counts, added once.
            let counted = stats.snapshot(Duration::ZERO);
            assert_eq!((counted.dirs, counted.done), (n as u64, n as u64));
            let pos = |p: &str| log.iter().position(|x| x == p).unwrap();
            for p in &log {
                if p.is_empty() {
                    continue;
                }
                let parent = p.rsplit_once('/').map_or("", |(a, _)| a);
                assert!(pos(parent) > pos(p), "{parent:?} finished before {p:?}");
            }
            assert_eq!(log.last().unwrap(), "");
        }
    }

    /// Spawns a chain of directory tasks, one below the other, and sets
    /// the quit flag at depth `quit_at`: the run stops with every level's
    /// completion node still held by the deepest task.
    struct ChainRunner<'a> {
        depth: AtomicUsize,
        quit_at: usize,
        quit: &'a AtomicBool,
    }

    impl TaskRunner for ChainRunner<'_> {
        fn run(&self, task: Task, cx: &mut dyn TaskContext) -> Outcome {
            if let Task::Dir { rel, src, .. } = task {
                if self.depth.fetch_add(1, Ordering::Relaxed) + 1 == self.quit_at {
                    self.quit.store(true, Ordering::Relaxed);
                }
                cx.spawn(Task::Dir {
                    rel: rel.clone(),
                    src: src.clone(),
                    dst: None,
                    at: None,
                });
                cx.defer(Task::FinishDir {
                    rel,
                    src,
                    dst: None,
                    touched: false,
                    at: None,
                    pass: 0,
                })
                .unwrap();
            }
            Outcome::Done(TaskReport::default())
        }

        fn acknowledge(&self, _report: TaskReport) {}
    }

    /// A run stopped 100,000 levels down drops the tasks left over
    /// without recursing through the chain of their completion nodes (a
    /// worker thread's stack would overflow).
    #[test]
    fn a_run_stopped_deep_down_drops_its_tasks_without_recursion() {
        let quit = AtomicBool::new(false);
        let runner = ChainRunner {
            depth: AtomicUsize::new(0),
            quit_at: 100_000,
            quit: &quit,
        };
        let seed = Task::Dir {
            rel: RelPath::root(),
            src: dir_entry(),
            dst: None,
            at: None,
        };
        Local::new(2).run(seed, &runner, &quit).unwrap();
        assert!(runner.depth.load(Ordering::Relaxed) >= 100_000);
    }

    /// Runs every task twice in one execution (as a redelivery does):
    /// each spawns its children and defers its finish twice. Every
    /// directory's finish still runs once; a task that defers another
    /// task besides its own finish gets an error.
    struct Twice {
        inner: TreeRunner,
        refused: AtomicUsize,
    }

    impl TaskRunner for Twice {
        fn run(&self, task: Task, cx: &mut dyn TaskContext) -> Outcome {
            let again = task.clone();
            let rel = task.rel().clone();
            let dir = matches!(task, Task::Dir { .. });
            self.inner.run(task, cx);
            self.inner.run(again, cx);
            if !dir {
                return Outcome::Done(TaskReport::default());
            }
            let other = Task::DropLinks {
                rel,
                bucket: Name::from("x"),
            };
            if cx.defer(other).is_err() {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Done(TaskReport::default())
        }

        fn acknowledge(&self, report: TaskReport) {
            self.inner.acknowledge(report);
        }
    }

    #[test]
    fn a_task_run_twice_spawns_and_defers_once() {
        let runner = Twice {
            inner: TreeRunner {
                log: StdMutex::new(Vec::new()),
                stats: Stats::default(),
            },
            refused: AtomicUsize::new(0),
        };
        let quit = AtomicBool::new(false);
        let seed = Task::Dir {
            rel: RelPath::root(),
            src: dir_entry(),
            dst: None,
            at: None,
        };
        Local::new(3).run(seed, &runner, &quit).unwrap();
        let mut log = runner.inner.log.into_inner().unwrap();
        // Each finish is run (twice, by its own execution), not queued twice.
        let n = 1 + 3 + 9 + 27 + 81;
        assert_eq!(log.len(), 2 * n);
        log.sort();
        log.dedup();
        assert_eq!(log.len(), n);
        // Directories defer a finish, then the other task: refused.
        assert_eq!(runner.refused.load(Ordering::Relaxed), n);
    }

    #[derive(Default)]
    struct Abandoner {
        stats: Stats,
    }
    impl TaskRunner for Abandoner {
        fn run(&self, _task: Task, _cx: &mut dyn TaskContext) -> Outcome {
            Outcome::Abandoned(counted(Counts {
                failed: 1,
                ..Counts::default()
            }))
        }

        fn acknowledge(&self, report: TaskReport) {
            self.stats.add(&report.counts);
        }
    }

    /// The abandoned task is not delivered again: what it counted (its
    /// failure) is the run's.
    #[test]
    fn a_task_abandoned_while_the_run_goes_on_stops_it_with_an_error() {
        let quit = AtomicBool::new(false);
        let seed = Task::Dir {
            rel: RelPath::root(),
            src: dir_entry(),
            dst: None,
            at: None,
        };
        let runner = Abandoner::default();
        assert!(Local::new(2).run(seed, &runner, &quit).is_err());
        assert!(quit.load(Ordering::Relaxed));
        assert_eq!(runner.stats.snapshot(Duration::ZERO).failed, 1);
    }

    struct Panicker;
    impl TaskRunner for Panicker {
        fn run(&self, _task: Task, _cx: &mut dyn TaskContext) -> Outcome {
            panic!("boom");
        }

        fn acknowledge(&self, _report: TaskReport) {}
    }

    #[test]
    fn a_panicking_task_stops_the_run_with_an_error() {
        let quit = AtomicBool::new(false);
        let r = Local::new(2).run(
            Task::Dir {
                rel: RelPath::root(),
                src: dir_entry(),
                dst: None,
                at: None,
            },
            &Panicker,
            &quit,
        );
        assert!(r.is_err());
    }
}
