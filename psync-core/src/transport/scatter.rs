//! A **test** runner that behaves like many nodes in one process: several
//! engines of one run, each built with [`Engine::from_spec`] from the same
//! [`RunSpec`], and every task encoded ([`Task::encode`]) and decoded
//! between the transport and the engine that runs it, which is chosen at
//! random (seeded) for each task.
//!
//! It is driven by any [`Transport`] (the [`crate::Local`] one in the
//! tests: its completion tree stays the run's coordinator, as the
//! broker's will be). Whatever an engine keeps only in its own memory and
//! another engine of the run would need shows up as a wrong result: a
//! task of one directory runs on one engine, its finish on another, the
//! run's last phase on a third. Not meant for production runs: the
//! engines share one process's file descriptors limit, and encoding every
//! task costs time for nothing.
//!
//! With [`Scatter::redeliver`], it also delivers tasks more than once, as
//! a broker that delivers at least once does: a task that finished is,
//! with the given probability, decoded anew and run again (on an engine
//! drawn anew) before the transport counts it complete, with the same
//! context (the transport's idempotent spawning and deferring see the
//! second delivery's children and finish); and a task is, with the same
//! probability, first run on a context that loses the defer and a random
//! tail of its spawns (a worker that died after its work but before all
//! its messages got out), then delivered again in full. The task's report
//! (counts and events, [`super::TaskReport`]) is that of one delivery,
//! the one a broker acknowledges: the first finished one, never a lossy
//! one's (see [`Scatter::lossy`]).
//!
//! Engines on nodes that number file systems apart are modelled by
//! [`Scatter::from_specs`] with the roots through other mounts of the
//! same trees. What it does not model (yet): a worker that dies in the
//! middle of a task's file system work (redelivered tasks run to their
//! end; only their messages are cut).

use super::{DeferTwice, Outcome, TaskContext, TaskReport, TaskRunner, Transport};
use crate::builder::Report;
use crate::engine::Engine;
use crate::error::Error;
use crate::spec::{EngineContext, RunSpec};
use crate::task::Task;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Chooses the engine (an index below the count given) for a task.
pub type Placement = Arc<dyn Fn(&Task, usize) -> usize + Send + Sync>;

/// Says whether a task may be delivered again ([`Scatter::redeliver_if`]).
pub type Redeliverable = Arc<dyn Fn(&Task) -> bool + Send + Sync>;

/// Several engines of one run; each task runs on one of them, chosen by
/// a seeded random draw (or by a [`Placement`]), after a round trip
/// through its encoding. See the module's docs: a test transport.
pub struct Scatter {
    engines: Vec<Engine>,
    seed: u64,
    draws: AtomicU64,
    placement: Option<Placement>,
    /// Probability of a second delivery, as a fraction of 2^64.
    redeliver: u64,
    /// Deliveries made again so far.
    redelivered: AtomicU64,
    /// The tasks that may be delivered again (all when `None`).
    redeliver_if: Option<Redeliverable>,
    /// A redelivery may start with a lossy delivery.
    lossy: bool,
}

impl std::fmt::Debug for Scatter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scatter")
            .field("engines", &self.engines.len())
            .field("seed", &format_args!("{:#x}", self.seed))
            .field("placement", &self.placement.is_some())
            .finish()
    }
}

impl Scatter {
    /// `n` engines (at least 1) for the run of `spec`, each with its own
    /// [`EngineContext`] made from `cx`: the same copiers, walker,
    /// planner, events sender, counters and quit flag (so that the
    /// report is the run's), and everything else of its own (its open
    /// roots, its temporaries' nonce, its caches). Tasks go to engines
    /// drawn with `seed`.
    ///
    /// # Errors
    /// Those of [`Engine::from_spec`].
    pub fn from_spec(
        spec: &RunSpec,
        n: usize,
        cx: &EngineContext,
        seed: u64,
    ) -> Result<Scatter, Error> {
        Scatter::from_specs(&vec![spec.clone(); n.max(1)], cx, seed)
    }

    /// One engine per spec, as [`Scatter::from_spec`]: specs of one run
    /// that differ in their roots' paths, the same trees as other nodes
    /// mount them (other mounts, other device numbers: a test's model of
    /// several NFS clients).
    ///
    /// # Errors
    /// Those of [`Engine::from_spec`]; no spec.
    pub fn from_specs(specs: &[RunSpec], cx: &EngineContext, seed: u64) -> Result<Scatter, Error> {
        if specs.is_empty() {
            return Err(Error::invalid(
                std::path::Path::new(""),
                "a scatter needs at least one engine",
            ));
        }
        let engines = specs
            .iter()
            .map(|spec| {
                let mut one = EngineContext::new(cx.copiers.clone());
                one.walker = Arc::clone(&cx.walker);
                one.planner = Arc::clone(&cx.planner);
                one.events = cx.events.clone();
                one.stats = Arc::clone(&cx.stats);
                one.quit = Arc::clone(&cx.quit);
                one.deletions = Arc::clone(&cx.deletions);
                one.failures = Arc::clone(&cx.failures);
                one.dry_links = cx.dry_links.clone();
                one.pacer = Arc::clone(&cx.pacer);
                Engine::from_spec(spec, one)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Scatter {
            engines,
            seed,
            draws: AtomicU64::new(0),
            placement: None,
            redeliver: 0,
            redelivered: AtomicU64::new(0),
            redeliver_if: None,
            lossy: true,
        })
    }

    /// Chooses engines with `placement` instead of at random (a test that
    /// wants one task on one engine and the rest on another).
    pub fn placement(&mut self, placement: Placement) -> &mut Self {
        self.placement = Some(placement);
        self
    }

    /// Delivers tasks again with probability `fraction` (0 to 1; see the
    /// module's docs): a finished task runs a second time before it is
    /// acknowledged, and a task first runs on a context that loses part
    /// of its spawns and its defer, then again in full.
    pub fn redeliver(&mut self, fraction: f64) -> &mut Self {
        let f = fraction.clamp(0.0, 1.0);
        // 2^64 · f, saturating at the top.
        self.redeliver = if f >= 1.0 {
            u64::MAX
        } else {
            (f * 18_446_744_073_709_551_616.0) as u64
        };
        self
    }

    /// Whether a redelivery ([`Scatter::redeliver`]) may start with a
    /// lossy delivery (default: yes). Without, every delivery runs to its
    /// end with all its messages, and a task is only ever delivered again
    /// after a finished delivery: the run's counters and events are then
    /// exactly those of a run without redelivery (a lossy delivery's
    /// counts and unsent events are lost, as a dead worker's are, and the
    /// delivery after it finds its work done).
    pub fn lossy(&mut self, lossy: bool) -> &mut Self {
        self.lossy = lossy;
        self
    }

    /// Delivers again (with [`Scatter::redeliver`]'s probability) only
    /// the tasks `filter` accepts: a test that leaves out a kind of task
    /// known not to bear a second delivery yet.
    pub fn redeliver_if(&mut self, filter: Redeliverable) -> &mut Self {
        self.redeliver_if = Some(filter);
        self
    }

    /// How many deliveries were made again (the tests check some were).
    pub fn redelivered(&self) -> u64 {
        self.redelivered.load(Ordering::Relaxed)
    }

    /// The seed of the random draws (say it when a test fails).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The engines.
    pub fn engines(&self) -> &[Engine] {
        &self.engines
    }

    /// [`Engine::run_all`] over these engines: the seed and every task
    /// that follows through `transport`, each on its drawn engine; then
    /// every engine winds down (after a stop) or flushes (at the end).
    /// The report's transport names the scatter, its engines and seed.
    ///
    /// # Errors
    /// When the transport fails.
    pub fn run_all(&self, seed: Task, transport: &dyn Transport) -> Result<Report, Error> {
        let mut report = crate::spec::run_engines(&self.engines, self, seed, transport)?;
        report.transport = format!(
            "{} (scattered over {} engines, seed {:#x})",
            report.transport,
            self.engines.len(),
            self.seed
        );
        Ok(report)
    }

    /// Removes the run's temporaries of every engine (see
    /// [`crate::SyncBuilder::stop_grace`]).
    pub(crate) fn reap_stuck(&self, grace: std::time::Duration) {
        // Said once, by the first.
        for e in &self.engines[1..] {
            e.wind_down();
        }
        self.engines[0].reap_stuck(grace);
    }

    fn draw(&self, task: &Task) -> usize {
        let n = self.engines.len();
        if let Some(p) = &self.placement {
            return p(task, n) % n;
        }
        (self.random() % n as u64) as usize
    }

    fn random(&self) -> u64 {
        let i = self.draws.fetch_add(1, Ordering::Relaxed);
        splitmix64(self.seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// True with the redelivery probability, for a task the filter takes.
    fn again(&self, task: &Task) -> bool {
        let again = self.redeliver != 0
            && self.redeliver_if.as_ref().is_none_or(|f| f(task))
            && self.random() < self.redeliver;
        if again {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        again
    }

    /// One delivery of the encoded task: decoded, run on a drawn engine.
    fn deliver(&self, bytes: &[u8], cx: &mut dyn TaskContext) -> Outcome {
        let task = Task::decode(bytes).expect("an encoded task decodes");
        let i = self.draw(&task);
        let ran = catch_unwind(AssertUnwindSafe(|| self.engines[i].run(task, cx)));
        match ran {
            Ok(outcome) => outcome,
            Err(panic) => {
                // The transport stops the run; the draws' seed repeats them.
                eprintln!(
                    "psync scatter: a task panicked on engine {i} of {} (seed {:#x})",
                    self.engines.len(),
                    self.seed
                );
                resume_unwind(panic)
            }
        }
    }
}

/// The context of a delivery whose worker died after its work: the
/// spawns after the first `keep` and the defer never reach the transport.
struct Lossy<'a> {
    inner: &'a mut dyn TaskContext,
    keep: u64,
}

impl TaskContext for Lossy<'_> {
    fn spawn(&mut self, task: Task) {
        if self.keep > 0 {
            self.keep -= 1;
            self.inner.spawn(task);
        }
    }

    fn defer(&mut self, _task: Task) -> Result<(), DeferTwice> {
        Ok(())
    }
}

/// The context of the `n`th delivery of a task.
struct Nth<'a> {
    inner: &'a mut dyn TaskContext,
    n: u32,
}

impl TaskContext for Nth<'_> {
    fn spawn(&mut self, task: Task) {
        self.inner.spawn(task);
    }

    fn defer(&mut self, task: Task) -> Result<(), DeferTwice> {
        self.inner.defer(task)
    }

    fn delivery(&self) -> u32 {
        self.n
    }
}

impl TaskRunner for Scatter {
    /// Encodes the task, decodes it, and runs the copy on the drawn
    /// engine: nothing but the task's bytes reaches it.
    ///
    /// With [`Scatter::redeliver`], a delivery may first go to a lossy
    /// context, and a finished one may be made again (see the module's
    /// docs); the outcome is the last delivery's, its report the one a
    /// broker would acknowledge: not a lossy delivery's (its worker died
    /// before its acknowledgement), and of two finished deliveries the
    /// first's (the first acknowledgement of a task id counts, later ones
    /// are dropped).
    fn run(&self, task: Task, cx: &mut dyn TaskContext) -> Outcome {
        let bytes = task.encode().expect("a task encodes");
        let again = |s: &Self| s.again(&task);
        let mut n = 1;
        if self.lossy && again(self) {
            let keep = self.random() % 4;
            let lost = self.deliver(&bytes, &mut Lossy { inner: cx, keep });
            if !lost.is_done() {
                return lost;
            }
            n += 1;
        }
        let outcome = self.deliver(&bytes, &mut Nth { inner: cx, n });
        if outcome.is_done() && again(self) {
            let second = self.deliver(
                &bytes,
                &mut Nth {
                    inner: cx,
                    n: n + 1,
                },
            );
            return second.with_report(outcome.into_report());
        }
        outcome
    }

    /// The kept delivery's report, on the first engine: the engines share
    /// the run's counters and events sender.
    fn acknowledge(&self, report: TaskReport) {
        self.engines[0].acknowledge(report);
    }

    fn run_id(&self) -> u64 {
        self.engines[0].run_id
    }
}

/// SplitMix64's output function: a well-mixed 64-bit value of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_spread_over_all_engines() {
        let mut seen = [0u32; 3];
        for i in 0..300u64 {
            seen[(splitmix64(7 ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % 3) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
    }
}
