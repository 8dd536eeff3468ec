//! `psync worker`: a process that takes tasks of any run from the
//! broker and runs them on its threads, each run on an engine built from
//! the run's spec ([`Engine::from_spec`]).
//!
//! Threads of a worker:
//! - the **fetcher** reads new entries of the runs' task streams
//!   (`XREADGROUP`, up to [`HELD_PER_THREAD`] held per thread);
//! - **executors** (`--threads`) decode, check and run a task each;
//!   children spawned while a task runs are sent 64 at a time, the rest
//!   with its end; a task abandoned (pause `--kill`, the worker leaving)
//!   is handed back at once (claimed by the never-alive consumer
//!   `-handback`, which any worker's reclaim takes from);
//! - the **committer** makes what the finished tasks wrote durable (one
//!   `syncfs` per run and round when the run's tasks do not flush
//!   themselves) and then reports them all in one pipeline of `finish`
//!   scripts (spawns, deferral, counts, events, completion, ack and
//!   delete, atomically per task), with the events the engines sent
//!   directly;
//! - the **control loop** (the caller's thread) heartbeats, renews the
//!   leases of every entry the worker holds, reclaims the entries of
//!   dead workers, lapsed leases and its own stranded ones, follows the
//!   runs (new, paused, cancelled, ended), the thread count asked for
//!   and `psync shutdown`, and leaves cleanly.
//!
//! Leases: a pending entry's idle time is its lease. The worker resets it
//! (`XCLAIM … JUSTID` to itself) for every entry it holds every tick, so
//! a task that runs for an hour is never taken from a live worker; an
//! entry idle longer than the lease (a worker that hangs, or a delivery
//! lost with a dropped connection) is taken by any worker, and the
//! entries of a worker whose heartbeat key expired are taken at once.

use crate::completion::{RunKeys, parse_id, with_tree};
use crate::conn::{Conn, Outage, OutageSink, sleep_unless};
use crate::keys::{self, GROUP, HANDBACK, LOG, LOG_MAXLEN};
use crate::limits::RunLimits;
use crossbeam_channel::{Receiver, Sender};
use psync_core::copy::pace::Pacer;
use psync_core::transport::{DeferTwice, Outcome, TaskContext, TaskReport, TaskRunner};
use psync_core::{
    Counts, Engine, EngineContext, Event, Op, RelPath, RunSpec, Side, Stats, Stopped, Task, TaskId,
};
use redis::{Script, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Entries a worker holds per thread (running, queued, or finished and
/// not yet reported): enough to keep its threads busy across a network
/// round trip or two (0.2 ms each way: `benches/README.md`), few enough
/// not to keep long tasks from idle workers.
const HELD_PER_THREAD: usize = 4;

/// Children a running task sends in one round trip before it ends.
const SPAWN_BATCH: usize = 64;

/// How long a leaving worker waits for stopped tasks to return before it
/// leaves without them (they are stuck in calls that never return).
const STUCK: Duration = Duration::from_secs(5);

/// Finished tasks reported in one pipeline at most.
const COMMIT_BATCH: usize = 256;

/// The delivery of a task that fails it when it panics (the earlier ones
/// hand it back: another worker may get through).
const PANICS: u32 = 3;

/// How a worker works (see [`Worker::new`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// Its name: unique among live workers (the consumer name in every
    /// run's group). Default: `HOST-PID`.
    pub name: String,
    /// Executor threads.
    pub threads: usize,
    /// A task's entry idle this long is taken from a worker that is alive
    /// but does not renew it (default 60 s).
    pub lease: Duration,
    /// How often the worker heartbeats and renews (default 1 s).
    pub tick: Duration,
    /// The heartbeat key's lifetime: a worker silent this long is dead
    /// and its tasks are taken (default 10 s).
    pub alive_ttl: Duration,
    /// On leaving (SIGTERM, `psync shutdown`), how long tasks under way
    /// may finish before they are stopped and handed back (default 30 s).
    pub grace: Duration,
}

impl WorkerOptions {
    /// Defaults, with `threads` executors.
    pub fn new(threads: usize) -> WorkerOptions {
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        WorkerOptions {
            name: format!("{host}-{}", std::process::id()),
            threads: threads.max(1),
            lease: Duration::from_secs(60),
            tick: Duration::from_secs(1),
            alive_ttl: Duration::from_secs(10),
            grace: Duration::from_secs(30),
        }
    }
}

/// Decides whether the worker takes a run (its roots, `--allow`).
pub type Accept = Arc<dyn Fn(&RunSpec) -> Result<(), String> + Send + Sync>;
/// Makes the engine of a run from its spec, with what the run's engines
/// on this worker share ([`engines`] makes real ones).
pub type MakeEngine =
    Arc<dyn Fn(&RunSpec, RunIo) -> Result<Arc<dyn RunEngine>, String> + Send + Sync>;

/// What the engines of one run on this worker share: its event channel
/// and counters, and the run's limits kept on the broker.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunIo {
    /// The run's events, sent to the broker by the committer.
    pub events: Sender<Event>,
    /// The counters the engines count outside tasks.
    pub stats: Arc<Stats>,
    /// `--max-delete`'s allowance and `--bwlimit`'s schedule, the run's
    /// over all of its workers.
    pub limits: Arc<RunLimits>,
}

/// What a worker needs of the engine that runs a run's tasks:
/// [`Engine`], or a stand-in (the dispatch benchmark's, which does no
/// file system work).
pub trait RunEngine: TaskRunner {
    /// [`Engine::sync_written`].
    ///
    /// # Errors
    /// The flush failed.
    fn sync_written(&self) -> Result<bool, psync_core::Error>;
    /// [`Engine::stopped`].
    fn stopped(&self) -> Option<Stopped>;
    /// [`Engine::quit`].
    fn quit(&self);
    /// [`Engine::quitting`].
    fn quitting(&self) -> bool;
    /// [`Engine::end_unfinished`].
    fn end_unfinished(&self);
}

impl RunEngine for Engine {
    fn sync_written(&self) -> Result<bool, psync_core::Error> {
        Engine::sync_written(self)
    }
    fn stopped(&self) -> Option<Stopped> {
        Engine::stopped(self)
    }
    fn quit(&self) {
        Engine::quit(self);
    }
    fn quitting(&self) -> bool {
        Engine::quitting(self)
    }
    fn end_unfinished(&self) {
        Engine::end_unfinished(self);
    }
}

/// Real engines ([`Engine::from_spec`]), each with the context `context`
/// makes (the copiers this process has) and the run's events and counters.
pub fn engines(context: impl Fn() -> EngineContext + Send + Sync + 'static) -> MakeEngine {
    Arc::new(move |spec, io| {
        let mut cx = context();
        cx.events = Some(io.events);
        cx.stats = io.stats;
        cx.deletions = Arc::clone(&io.limits) as Arc<dyn psync_core::Allowance>;
        cx.pacer = Arc::new(Pacer::shared(io.limits));
        // `--max-errors` counts the run's failures, which the committer
        // sees (`Shared::error_limit`): an engine stopping on its own
        // count would leave its tasks to the others.
        let mut own;
        let spec = match spec.max_errors {
            Some(_) => {
                own = spec.clone();
                own.max_errors = None;
                &own
            }
            None => spec,
        };
        let e = Engine::from_spec(spec, cx).map_err(|e| e.to_string())?;
        Ok(Arc::new(e) as Arc<dyn RunEngine>)
    })
}
/// Checks a task before it runs (paths relative, no `..`).
pub type CheckTask = Arc<dyn Fn(&Task) -> Result<(), String> + Send + Sync>;

/// One delivery of a task entry to this worker.
#[derive(Debug)]
struct Delivery {
    run: u64,
    entry: String,
    id: String,
    bytes: Vec<u8>,
    count: u32,
}

/// A delivery that ended done, waiting for the committer.
struct Finished {
    d: Delivery,
    spawned: Vec<(TaskId, Vec<u8>)>,
    /// Children sent while it ran: the finish checks they are still
    /// there (a server that lost its last writes forgot them).
    sent: Vec<TaskId>,
    deferred: Option<(TaskId, Vec<u8>)>,
    report: TaskReport,
}

/// Pause states of a run.
const RUNNING: u8 = 0;
const PAUSED: u8 = 1;
const KILLED: u8 = 2;

/// A run this worker follows.
struct Slot {
    run: u64,
    keys: RunKeys,
    spec: Option<RunSpec>,
    /// Why the worker does not take the run's tasks.
    refused: Option<String>,
    engine: RwLock<Option<Arc<dyn RunEngine>>>,
    /// What its engines here share (`events` the sending end).
    io: RunIo,
    events: Receiver<Event>,
    pause: AtomicU8,
    /// The run ended (state `end` set, or gone from the active set).
    ended: AtomicBool,
    /// Its tasks running here.
    running: AtomicUsize,
    /// What of the engines' own counters (`io.stats`: counted outside
    /// tasks, shared by the run's engines here) was sent.
    sent: Mutex<Counts>,
}

impl Slot {
    fn engine(&self) -> Option<Arc<dyn RunEngine>> {
        self.engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// New tasks of the run may be taken.
    fn open(&self) -> bool {
        self.refused.is_none()
            && !self.ended.load(Ordering::Relaxed)
            && self.pause.load(Ordering::Relaxed) == RUNNING
            && self.engine().is_some_and(|e| !e.quitting())
    }
}

struct Shared {
    client: redis::Client,
    opts: WorkerOptions,
    accept: Accept,
    make: MakeEngine,
    check: CheckTask,
    finish: Script,
    spawn: Script,
    renew: Script,
    runs: RwLock<HashMap<u64, Arc<Slot>>>,
    queue: (Sender<Delivery>, Receiver<Delivery>),
    done: (Sender<Finished>, Receiver<Finished>),
    /// Entries held (queued, running, finished and not yet committed), by run.
    held: Mutex<HashMap<u64, HashSet<String>>>,
    running: AtomicUsize,
    want: AtomicUsize,
    /// No new tasks: the worker is leaving.
    leaving: AtomicBool,
    /// Tasks under way stop; connections give up.
    quit: Arc<AtomicBool>,
    /// The fetcher, executors and committer end.
    stop: AtomicBool,
    tasks_done: AtomicU64,
    bytes: AtomicU64,
    /// `syncfs` calls before commits, and the time they took (µs).
    syncs: AtomicU64,
    sync_us: AtomicU64,
    /// Bytes, when, and the rate of the last [`Shared::rate`].
    last_rate: Mutex<(u64, Instant, u64)>,
    current: Mutex<Vec<String>>,
    sink: OutageSink,
    /// Outages seen by any connection, for the cluster log.
    outages: (Sender<String>, Receiver<String>),
    wake: (Sender<()>, Receiver<()>),
}

/// A worker (see the module's docs).
pub struct Worker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.shared.opts.name)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker on the broker `client`. `accept` says whether it takes a
    /// run (its roots against `--allow`), `context` makes each run's
    /// engine context (the copiers), `check` refuses tasks whose paths
    /// leave the run's roots; `sink` hears of broker outages.
    pub fn new(
        client: redis::Client,
        opts: WorkerOptions,
        accept: Accept,
        make: MakeEngine,
        check: CheckTask,
        sink: OutageSink,
    ) -> Worker {
        let want = opts.threads.max(1);
        let outages = crossbeam_channel::bounded(64);
        Worker {
            shared: Arc::new(Shared {
                client,
                opts,
                accept,
                make,
                check,
                finish: Script::new(&with_tree(include_str!("lua/finish.lua"))),
                spawn: Script::new(include_str!("lua/spawn.lua")),
                renew: Script::new(include_str!("lua/renew.lua")),
                runs: RwLock::new(HashMap::new()),
                queue: crossbeam_channel::unbounded(),
                done: crossbeam_channel::unbounded(),
                held: Mutex::new(HashMap::new()),
                running: AtomicUsize::new(0),
                want: AtomicUsize::new(want),
                leaving: AtomicBool::new(false),
                quit: Arc::new(AtomicBool::new(false)),
                stop: AtomicBool::new(false),
                tasks_done: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                last_rate: Mutex::new((0, Instant::now(), 0)),
                syncs: AtomicU64::new(0),
                sync_us: AtomicU64::new(0),
                current: Mutex::new(Vec::new()),
                sink: {
                    // An outage's end (how long it was) also goes to the
                    // cluster log (the control loop sends it).
                    let tx = outages.0.clone();
                    Arc::new(move |o: &Outage| {
                        sink(o);
                        if let Outage::Back(_) = o {
                            let _ = tx.try_send(o.describe());
                        }
                    })
                },
                outages,
                wake: crossbeam_channel::bounded(1),
            }),
        }
    }

    /// Joins the broker and works until `leave` is set (SIGTERM) or a
    /// `psync shutdown`; then takes nothing new, lets tasks under way
    /// finish for the grace period, hands back the rest and leaves. A
    /// second signal (`hurry`) hands everything back at once.
    ///
    /// # Errors
    /// A worker of this name is alive already, or the broker cannot be
    /// reached at the start.
    pub fn run(&self, leave: &AtomicBool, hurry: &AtomicBool) -> Result<(), crate::BrokerError> {
        let s = &self.shared;
        let mut con = s.conn(Duration::from_secs(10));
        let name = &s.opts.name;
        let started = keys::now_ms();
        let ttl = ms(s.opts.alive_ttl);
        let fresh: bool = con
            .once(|c| {
                redis::cmd("SET")
                    .arg(keys::alive(name))
                    .arg(started)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query::<Option<String>>(c)
            })
            .map_err(crate::BrokerError::Redis)?
            .is_some();
        if !fresh {
            return Err(crate::BrokerError::Refused(format!(
                "a worker named {name} is alive already (give this one another --name)"
            )));
        }
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let _: () = con
            .call(&s.quit, |c| {
                redis::pipe()
                    .sadd(keys::WORKERS, name)
                    .del(keys::worker(name))
                    .hset_multiple(
                        keys::worker(name),
                        &[
                            ("host", host.clone()),
                            ("pid", std::process::id().to_string()),
                            ("started", started.to_string()),
                            ("state", "running".to_string()),
                        ],
                    )
                    .query(c)
            })
            .map_err(crate::BrokerError::Redis)?;
        s.log(
            &mut con,
            "info",
            None,
            &format!("joined with {} threads", s.want()),
        );
        // Plain threads, not scoped: a task stuck in a call that never
        // returns (a hung file system) must not keep the worker from
        // leaving; such a thread is left behind (the process exits).
        let spawn = |name: String, f: Box<dyn FnOnce(&Shared) + Send>| {
            let sh = Arc::clone(&self.shared);
            std::thread::Builder::new().name(name).spawn(move || f(&sh))
        };
        let mut threads = vec![
            spawn("psync-fetch".into(), Box::new(|s| s.fetch()))?,
            spawn("psync-commit".into(), Box::new(|s| s.commit()))?,
        ];
        let mut executors: Vec<std::thread::JoinHandle<()>> = Vec::new();
        let mut leaving_since: Option<Instant> = None;
        let mut hurried: Option<Instant> = None;
        loop {
            let want = s.want();
            // Grow: executors of index >= want leave by themselves.
            executors.retain(|h| !h.is_finished());
            while executors.len() < want && !s.leaving.load(Ordering::Relaxed) {
                let i = executors.len();
                executors.push(spawn(
                    format!("psync-{i}"),
                    Box::new(move |s| s.execute(i)),
                )?);
            }
            s.control(&mut con, started);
            if leaving_since.is_none()
                && (leave.load(Ordering::Relaxed) || s.leaving.load(Ordering::Relaxed))
            {
                s.leaving.store(true, Ordering::Relaxed);
                leaving_since = Some(Instant::now());
                s.log(&mut con, "info", None, "leaving: takes no new tasks");
                let _ = con.call(&s.quit, |c| {
                    redis::cmd("HSET")
                        .arg(keys::worker(name))
                        .arg("state")
                        .arg("leaving")
                        .exec(c)
                });
            }
            if let Some(since) = leaving_since {
                if hurry.load(Ordering::Relaxed) || since.elapsed() >= s.opts.grace {
                    s.quit_all();
                    hurried.get_or_insert_with(Instant::now);
                }
                let idle = s.running.load(Ordering::Relaxed) == 0 && s.queue.1.is_empty();
                if idle && s.done.1.is_empty() {
                    break;
                }
                // Stopped tasks return at their next step; one that does
                // not within STUCK is in a call that does not return.
                if hurried.is_some_and(|t| t.elapsed() >= STUCK) {
                    let n = s.running.load(Ordering::Relaxed);
                    let msg = format!("leaving {n} tasks stuck in calls that do not return");
                    s.log(&mut con, "warn", None, &msg);
                    break;
                }
            }
            // Runs, pauses and thread counts are followed at least 10
            // times a second; heartbeats and leases as often.
            sleep_unless(&s.stop, s.opts.tick.min(Duration::from_millis(100)));
        }
        s.stop.store(true, Ordering::Relaxed);
        threads.extend(executors);
        let deadline = Instant::now() + STUCK;
        for h in threads {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        // Hand back what is still held: queued when the fetcher stopped,
        // and the entries of tasks stuck in calls.
        while let Ok(d) = s.queue.1.try_recv() {
            s.hand_back(&mut con, &d);
        }
        s.hand_back_held(&mut con);
        s.leave(&mut con);
        Ok(())
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Shared {
    fn want(&self) -> usize {
        self.want.load(Ordering::Relaxed).max(1)
    }

    /// Bytes copied per second since the last call (at least 1 s ago,
    /// else the last figure).
    fn rate(&self) -> u64 {
        let mut last = self.last_rate.lock().unwrap_or_else(|e| e.into_inner());
        let (bytes, at, rate) = *last;
        let elapsed = at.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let now = self.bytes.load(Ordering::Relaxed);
            let r = (now.saturating_sub(bytes) as f64 / elapsed.as_secs_f64()) as u64;
            *last = (now, Instant::now(), r);
            return r;
        }
        rate
    }

    fn conn(&self, read_timeout: Duration) -> Conn {
        Conn::new(self.client.clone(), read_timeout, Arc::clone(&self.sink))
    }

    fn slot(&self, run: u64) -> Option<Arc<Slot>> {
        self.runs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&run)
            .cloned()
    }

    fn slots(&self) -> Vec<Arc<Slot>> {
        self.runs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn hold(&self, d: &Delivery) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.entry(d.run).or_default().insert(d.entry.clone());
    }

    fn release(&self, run: u64, entry: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = held.get_mut(&run) {
            set.remove(entry);
        }
    }

    /// Entries held: queued, running, and finished but not yet reported.
    fn held_count(&self) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.values().map(HashSet::len).sum()
    }

    /// Sets every engine's quit flag: tasks under way return abandoned
    /// and are handed back.
    fn quit_all(&self) {
        self.quit.store(true, Ordering::Relaxed);
        for slot in self.slots() {
            if let Some(e) = slot.engine() {
                e.quit();
            }
        }
    }

    /// A line in the cluster log (and on this worker's stderr).
    fn log(&self, con: &mut Conn, level: &str, run: Option<u64>, msg: &str) {
        eprintln!("psync worker {}: {msg}", self.opts.name);
        let run = run.map(|r| format!("{r:016x}")).unwrap_or_default();
        let _ = con.call(&self.quit, |c| {
            redis::cmd("XADD")
                .arg(LOG)
                .arg("MAXLEN")
                .arg("~")
                .arg(LOG_MAXLEN)
                .arg("*")
                .arg("l")
                .arg(level)
                .arg("w")
                .arg(&self.opts.name)
                .arg("m")
                .arg(msg)
                .arg("r")
                .arg(&run)
                .exec(c)
        });
    }

    /// Hands back every entry still held (tasks stuck in calls, when
    /// the worker leaves without them).
    fn hand_back_held(&self, con: &mut Conn) {
        let held: Vec<(u64, String)> = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|(r, ids)| ids.iter().map(|id| (*r, id.clone())))
            .collect();
        for (run, entry) in held {
            let d = Delivery {
                run,
                entry,
                id: String::new(),
                bytes: Vec::new(),
                count: 0,
            };
            self.hand_back(con, &d);
        }
    }

    /// Puts an entry back for any worker: claimed by `-handback` as if
    /// idle for a day, so the next reclaim takes it.
    fn hand_back(&self, con: &mut Conn, d: &Delivery) {
        let stream = RunKeys::new(d.run).tasks();
        let _ = con.call(&self.quit, |c| {
            redis::cmd("XCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(HANDBACK)
                .arg(0)
                .arg(&d.entry)
                .arg("IDLE")
                .arg(86_400_000u64)
                .arg("JUSTID")
                .exec(c)
        });
        self.release(d.run, &d.entry);
    }

    // ---- fetcher ----

    fn fetch(&self) {
        let mut con = self.conn(Duration::from_secs(10));
        let mut turn = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            if self.leaving.load(Ordering::Relaxed) {
                sleep_unless(&self.stop, Duration::from_millis(50));
                continue;
            }
            let free = (HELD_PER_THREAD * self.want()).saturating_sub(self.held_count());
            if free == 0 {
                let _ = self.wake.1.recv_timeout(Duration::from_millis(50));
                continue;
            }
            let open: Vec<Arc<Slot>> = self.slots().into_iter().filter(|s| s.open()).collect();
            if open.is_empty() {
                sleep_unless(&self.stop, Duration::from_millis(100));
                continue;
            }
            // COUNT is per stream: with several runs open, each is read
            // without blocking for what room is left (starting with
            // another run each time), and only when none had anything
            // does the worker block on all of them for one entry each.
            turn = turn.wrapping_add(1);
            let mut left = free;
            for i in 0..open.len() {
                let slot = &open[(turn + i) % open.len()];
                left -= self.read_new(&mut con, &[slot], left, None);
                if left == 0 {
                    break;
                }
            }
            if left == free {
                // One entry of each stream may come: all of them only when
                // there is room for that many, else the next run's alone.
                let (slots, count): (Vec<&Arc<Slot>>, usize) = if open.len() == 1 {
                    (vec![&open[0]], free)
                } else if free >= open.len() {
                    (open.iter().collect(), 1)
                } else {
                    (vec![&open[turn % open.len()]], free)
                };
                self.read_new(&mut con, &slots, count, Some((200, free)));
            }
        }
    }

    /// Reads up to `count` new entries of each of `slots`' streams, and
    /// queues them; with `block` (ms, room), waits that long for one, and
    /// hands back at once what is beyond the room. Returns how many were
    /// queued.
    fn read_new(
        &self,
        con: &mut Conn,
        slots: &[&Arc<Slot>],
        count: usize,
        block: Option<(u64, usize)>,
    ) -> usize {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.opts.name)
            .arg("COUNT")
            .arg(count);
        if let Some((ms, _)) = block {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS");
        for s in slots {
            cmd.arg(s.keys.tasks());
        }
        for _ in slots {
            cmd.arg(">");
        }
        let room = block.map_or(usize::MAX, |(_, room)| room);
        let mut queued = 0;
        match con.call(&self.quit, |c| cmd.query::<Value>(c)) {
            Ok(v) => {
                for (stream, entries) in stream_entries(&v) {
                    let Some(slot) = slots.iter().find(|s| s.keys.tasks() == stream) else {
                        continue;
                    };
                    for (entry, id, bytes) in entries {
                        let d = Delivery {
                            run: slot.run,
                            entry,
                            id,
                            bytes,
                            count: 1,
                        };
                        self.hold(&d);
                        if queued < room {
                            queued += 1;
                            let _ = self.queue.0.send(d);
                        } else {
                            self.hand_back(con, &d);
                        }
                    }
                }
            }
            // A run's stream deleted (its end) under the read: the
            // control loop sees the run's end.
            Err(_) => sleep_unless(&self.stop, Duration::from_millis(50)),
        }
        queued
    }

    // ---- executors ----

    fn execute(&self, i: usize) {
        let mut con = self.conn(Duration::from_secs(30));
        while !self.stop.load(Ordering::Relaxed) && i < self.want() {
            let Ok(d) = self.queue.1.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            self.running.fetch_add(1, Ordering::Relaxed);
            self.run_one(&mut con, i, d);
            self.running.fetch_sub(1, Ordering::Relaxed);
            let _ = self.wake.0.try_send(());
        }
    }

    fn set_current(&self, i: usize, what: String) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.len() <= i {
            cur.resize(i + 1, String::new());
        }
        cur[i] = what;
    }

    fn run_one(&self, con: &mut Conn, i: usize, d: Delivery) {
        let Some(slot) = self.slot(d.run) else {
            // A run this worker no longer follows (it ended): the entry
            // is not worth keeping.
            self.release(d.run, &d.entry);
            return;
        };
        if slot.ended.load(Ordering::Relaxed) {
            self.release(d.run, &d.entry);
            return;
        }
        let engine = match slot.engine() {
            Some(e) if slot.pause.load(Ordering::Relaxed) == RUNNING && !e.quitting() => e,
            _ => return self.hand_back(con, &d),
        };
        let task = match Task::decode(&d.bytes)
            .map_err(|e| format!("undecodable task: {e}"))
            .and_then(|t| (self.check)(&t).map(|()| t))
        {
            Ok(t) => t,
            Err(why) => return self.reject(con, &slot, d, &why),
        };
        if task.id(slot.run).to_string() != d.id {
            let why = "a task whose id does not match its entry";
            return self.reject(con, &slot, d, why);
        }
        self.set_current(i, describe(&task));
        let rel = task.rel().clone();
        slot.running.fetch_add(1, Ordering::Relaxed);
        let mut cx = Cx {
            shared: self,
            con,
            keys: &slot.keys,
            run: slot.run,
            id: d.id.clone(),
            seen: HashSet::new(),
            spawned: Vec::new(),
            sent: Vec::new(),
            deferred: None,
            delivery: d.count,
        };
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.run(task, &mut cx)));
        let (spawned, sent, deferred) = (
            std::mem::take(&mut cx.spawned),
            std::mem::take(&mut cx.sent),
            cx.deferred.take(),
        );
        slot.running.fetch_sub(1, Ordering::Relaxed);
        self.set_current(i, String::new());
        match outcome {
            Ok(Outcome::Done(report)) => {
                let _ = self.done.0.send(Finished {
                    d,
                    spawned,
                    sent,
                    deferred,
                    report,
                });
            }
            Ok(_) => self.hand_back(con, &d),
            Err(_) => {
                let msg = format!(
                    "a task panicked on this worker (entry {}, delivery {})",
                    d.entry, d.count
                );
                self.log(con, "error", Some(d.run), &msg);
                if d.count < PANICS {
                    return self.hand_back(con, &d);
                }
                // A task that panics wherever it runs: failed, so that
                // the run ends (a local run stops at its first panic).
                let mut report = TaskReport::default();
                report.counts.failed = 1;
                report.events.push(Event::Error {
                    path: rel,
                    op: Op::Transport,
                    side: Side::Source,
                    errno: None,
                    message: format!("worker {}: {msg}: not run again", self.opts.name),
                });
                let _ = self.done.0.send(Finished {
                    d,
                    spawned: Vec::new(),
                    sent: Vec::new(),
                    deferred: None,
                    report,
                });
            }
        }
    }

    /// A task that must not run: reported in the run's log, and counted
    /// as one failure if it is one of the run's (a forged entry has no
    /// record: the finish only acknowledges and deletes it).
    fn reject(&self, con: &mut Conn, slot: &Slot, d: Delivery, why: &str) {
        let msg = format!("task refused (entry {}): {why}", d.entry);
        self.log(con, "error", Some(slot.run), &msg);
        let ev = Event::Error {
            path: RelPath::root(),
            op: Op::Validate,
            side: Side::Source,
            errno: None,
            message: format!("worker {}: {msg}", self.opts.name),
        };
        let _ = slot.io.events.send(ev);
        let mut report = TaskReport::default();
        report.counts.failed = 1;
        let _ = self.done.0.send(Finished {
            d,
            spawned: Vec::new(),
            sent: Vec::new(),
            deferred: None,
            report,
        });
    }

    // ---- committer ----

    fn commit(&self) {
        let mut con = self.conn(Duration::from_secs(30));
        loop {
            let mut batch: Vec<Finished> = Vec::new();
            if let Ok(f) = self.done.1.recv_timeout(Duration::from_millis(50)) {
                batch.push(f);
                while batch.len() < COMMIT_BATCH {
                    match self.done.1.try_recv() {
                        Ok(f) => batch.push(f),
                        Err(_) => break,
                    }
                }
            }
            let direct = self.direct_events();
            if batch.is_empty() && direct.is_empty() {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            self.make_durable(&mut batch);
            self.send(&mut con, batch, direct);
        }
    }

    /// Events the engines sent outside a task's report, and counts they
    /// made outside tasks, by run.
    fn direct_events(&self) -> Vec<(u64, Vec<Event>, Counts)> {
        let mut out = Vec::new();
        for slot in self.slots() {
            let evs: Vec<Event> = slot.events.try_iter().take(4096).collect();
            let now = engine_counts(&slot.io.stats);
            let counts = {
                let mut sent = slot.sent.lock().unwrap_or_else(|e| e.into_inner());
                let delta = keys::counts_delta(&sent, &now);
                *sent = now;
                delta
            };
            if !evs.is_empty() || !keys::count_fields(&counts).is_empty() {
                out.push((slot.run, evs, counts));
            }
        }
        out
    }

    /// One `syncfs` per run of the batch whose tasks do not flush
    /// themselves; a failure fails the run's first task of the batch
    /// (its report says why: nothing of the round is known durable).
    fn make_durable(&self, batch: &mut [Finished]) {
        let runs: HashSet<u64> = batch.iter().map(|f| f.d.run).collect();
        for run in runs {
            let Some(engine) = self.slot(run).and_then(|s| s.engine()) else {
                continue;
            };
            let start = Instant::now();
            let flushed = engine.sync_written();
            if !matches!(flushed, Ok(false)) {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.sync_us.fetch_add(us, Ordering::Relaxed);
            }
            if let Err(e) = flushed
                && let Some(f) = batch.iter_mut().find(|f| f.d.run == run)
            {
                f.report.counts.failed += 1;
                f.report.events.push(Event::Error {
                    path: RelPath::root(),
                    op: Op::Syncfs,
                    side: Side::Target,
                    errno: e.io().raw_os_error(),
                    message: e.to_string(),
                });
            }
        }
    }

    fn send(&self, con: &mut Conn, batch: Vec<Finished>, direct: Vec<(u64, Vec<Event>, Counts)>) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for f in &batch {
            pipe.add_command(self.finish_cmd(f));
        }
        for (run, evs, counts) in &direct {
            let k = RunKeys::new(*run);
            for (field, n) in keys::count_fields(counts) {
                pipe.cmd("HINCRBY").arg(k.counts()).arg(field).arg(n);
            }
            for ev in evs {
                pipe.add_command(event_cmd(&k.events(), &self.opts.name, ev));
            }
        }
        let results: Vec<RedisResultValue> = match con.call(&self.quit, |c| pipe.query(c)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "psync worker {}: reporting {} tasks failed: {e}",
                    self.opts.name,
                    batch.len()
                );
                // Not acknowledged: the entries lapse and run again.
                for f in &batch {
                    self.release(f.d.run, &f.d.entry);
                }
                return;
            }
        };
        for (f, r) in batch.iter().zip(results) {
            let r = match r {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    let _ = con.call(&self.quit, |c| self.finish.load(c).map(drop));
                    con.call(&self.quit, |c| self.finish_cmd(f).query::<Value>(c))
                }
                r => r,
            };
            match r.map(|v| parse_finish(&v)) {
                Ok(Some((4, _, _))) => {
                    let msg = format!(
                        "task {}: children it sent are gone from the broker (it lost \
                         its last writes): the task runs again",
                        f.d.id
                    );
                    self.log(con, "warn", Some(f.d.run), &msg);
                    self.hand_back(con, &f.d);
                    continue;
                }
                Ok(Some((code, _, refused))) => {
                    if refused {
                        let msg = format!("task {} deferred a second task: not run", f.d.id);
                        self.log(con, "error", Some(f.d.run), &msg);
                    }
                    if code == 3 {
                        self.log(con, "info", Some(f.d.run), "run complete");
                        if let Some(s) = self.slot(f.d.run) {
                            s.ended.store(true, Ordering::Relaxed);
                        }
                    }
                    if code != 0 {
                        self.tasks_done.fetch_add(1, Ordering::Relaxed);
                        self.bytes
                            .fetch_add(f.report.counts.bytes_copied, Ordering::Relaxed);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let msg = format!("reporting task {} failed: {e}", f.d.id);
                    self.log(con, "error", Some(f.d.run), &msg);
                }
            }
            self.release(f.d.run, &f.d.entry);
        }
        // Room again: the fetcher, waiting for it, reads at once.
        let _ = self.wake.0.try_send(());
    }

    fn finish_cmd(&self, f: &Finished) -> redis::Cmd {
        let k = RunKeys::new(f.d.run);
        let mut c = redis::cmd("EVALSHA");
        c.arg(self.finish.get_hash()).arg(5);
        c.arg(k.state())
            .arg(k.tasks())
            .arg(format!("{}t:{}", k.prefix(), f.d.id))
            .arg(k.counts())
            .arg(k.events());
        c.arg(k.prefix())
            .arg(GROUP)
            .arg(&f.d.entry)
            .arg(&f.d.id)
            .arg(&self.opts.name)
            .arg(LOG_MAXLEN)
            .arg(crate::completion::END_TTL_SECS);
        c.arg(f.sent.len());
        for id in &f.sent {
            c.arg(id.to_string());
        }
        c.arg(f.spawned.len());
        for (id, bytes) in &f.spawned {
            c.arg(id.to_string()).arg(bytes.as_slice());
        }
        match &f.deferred {
            Some((id, bytes)) => c.arg(id.to_string()).arg(bytes.as_slice()),
            None => c.arg("").arg(""),
        };
        let counts = keys::count_fields(&f.report.counts);
        c.arg(counts.len());
        for (k, n) in counts {
            c.arg(k).arg(n);
        }
        let evs: Vec<(&str, String)> = f
            .report
            .events
            .iter()
            .filter(|e| !matches!(e, Event::Progress(_)))
            .filter_map(|e| Some((keys::level_of(e), serde_json::to_string(e).ok()?)))
            .collect();
        c.arg(evs.len());
        for (l, json) in evs {
            c.arg(l).arg(json);
        }
        c
    }

    // ---- control loop ----

    fn control(&self, con: &mut Conn, started: u64) {
        let name = &self.opts.name;
        let cur = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut info: Vec<(String, String)> = vec![
            ("threads".into(), self.want().to_string()),
            (
                "busy".into(),
                self.running.load(Ordering::Relaxed).to_string(),
            ),
            (
                "done".into(),
                self.tasks_done.load(Ordering::Relaxed).to_string(),
            ),
            (
                "bytes".into(),
                self.bytes.load(Ordering::Relaxed).to_string(),
            ),
            ("hb".into(), keys::now_ms().to_string()),
            ("rate".into(), self.rate().to_string()),
            (
                "syncs".into(),
                self.syncs.load(Ordering::Relaxed).to_string(),
            ),
            (
                "sync_ms".into(),
                (self.sync_us.load(Ordering::Relaxed) / 1000).to_string(),
            ),
        ];
        for (i, c) in cur.iter().enumerate() {
            info.push((format!("t:{i}"), c.clone()));
        }
        let ttl = ms(self.opts.alive_ttl);
        let r: redis::RedisResult<(Option<u64>, Option<u64>, Vec<String>)> =
            con.call(&self.quit, |c| {
                let mut p = redis::pipe();
                p.cmd("SET")
                    .arg(keys::alive(name))
                    .arg(keys::now_ms())
                    .arg("PX")
                    .arg(ttl)
                    .ignore()
                    .hset_multiple(keys::worker(name), &info)
                    .ignore()
                    .expire(keys::worker(name), 86_400)
                    .ignore()
                    .hget(keys::CONTROL, "shutdown")
                    .hget(keys::worker(name), "want")
                    .smembers(keys::RUNS);
                p.query(c)
            });
        let Ok((shutdown, want, runs)) = r else {
            return;
        };
        for o in self.outages.1.try_iter().collect::<Vec<_>>() {
            self.log(con, "warn", None, &o);
        }
        if shutdown.is_some_and(|t| t >= started) {
            self.leaving.store(true, Ordering::Relaxed);
        }
        if let Some(w) = want
            && w > 0
            && w != self.want() as u64
        {
            self.want.store(w as usize, Ordering::Relaxed);
            self.log(con, "info", None, &format!("now {w} threads"));
        }
        self.follow_runs(con, &runs);
        self.renew(con);
        if !self.leaving.load(Ordering::Relaxed) {
            self.reclaim(con);
        }
    }

    /// Takes new runs (or refuses them), follows pause and end of known
    /// ones, lets go of ended ones once their tasks here returned.
    fn follow_runs(&self, con: &mut Conn, active: &[String]) {
        let active: HashSet<u64> = active
            .iter()
            .filter_map(|r| u64::from_str_radix(r, 16).ok())
            .collect();
        for run in &active {
            if self.slot(*run).is_none() {
                let slot = self.take_run(con, *run);
                self.runs
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(*run, Arc::new(slot));
            }
        }
        for slot in self.slots() {
            let state: redis::RedisResult<(Option<String>, Option<String>)> =
                con.call(&self.quit, |c| {
                    redis::cmd("HMGET")
                        .arg(slot.keys.state())
                        .arg("paused")
                        .arg("end")
                        .query(c)
                });
            let Ok((paused, end)) = state else { continue };
            let gone = end.is_some() || !active.contains(&slot.run);
            if gone {
                slot.ended.store(true, Ordering::Relaxed);
                if let Some(e) = slot.engine() {
                    if end.as_deref() != Some("done") {
                        e.quit();
                    }
                    if slot.running.load(Ordering::Relaxed) == 0 {
                        e.end_unfinished();
                    }
                }
                if slot.running.load(Ordering::Relaxed) == 0 {
                    self.runs
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&slot.run);
                    self.held
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&slot.run);
                }
                continue;
            }
            let p = match paused.as_deref() {
                Some("kill") => KILLED,
                Some(_) => PAUSED,
                None => RUNNING,
            };
            slot.pause.store(p, Ordering::Relaxed);
            if self.error_limit(con, &slot) {
                continue;
            }
            if let Some(e) = slot.engine() {
                if p == KILLED {
                    e.quit();
                }
                // A stopped engine (target full or read-only) ends the run.
                if let Some(stopped) = e.stopped() {
                    let json = serde_json::to_string(&stopped).unwrap_or_default();
                    let _ =
                        crate::client::end_run(con, &self.quit, slot.run, "stopped", Some(&json));
                    continue;
                }
                // After a pause --kill, a new engine once the tasks are back.
                if p == RUNNING
                    && e.quitting()
                    && !self.quit.load(Ordering::Relaxed)
                    && slot.running.load(Ordering::Relaxed) == 0
                {
                    let fresh = slot
                        .spec
                        .as_ref()
                        .map(|spec| (self.make)(spec, slot.io.clone()));
                    if let Some(Ok(fresh)) = fresh {
                        *slot.engine.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
                    }
                }
            }
        }
    }

    /// `--max-errors`: ends the run of `slot` (as a cancel does, but
    /// "max-errors") once its failed entries, summed over every worker's
    /// committed tasks, reach the limit; true when it did. Checked every
    /// heartbeat: tasks under way meanwhile may fail a few more.
    fn error_limit(&self, con: &mut Conn, slot: &Slot) -> bool {
        let Some(max) = slot.spec.as_ref().and_then(|s| s.max_errors) else {
            return false;
        };
        let failed: redis::RedisResult<Option<u64>> = con.call(&self.quit, |c| {
            redis::cmd("HGET")
                .arg(slot.keys.counts())
                .arg("failed")
                .query(c)
        });
        let Some(failed) = failed.ok().flatten().filter(|&f| f >= max) else {
            return false;
        };
        if let Ok(true) = crate::client::end_run(con, &self.quit, slot.run, "max-errors", None) {
            let msg = format!("run stopped after {failed} failed entries (--max-errors {max})");
            self.log(con, "warn", Some(slot.run), &msg);
        }
        true
    }

    /// A run seen for the first time: its spec checked (`--allow`) and an
    /// engine built, or the reason it is refused (logged once).
    fn take_run(&self, con: &mut Conn, run: u64) -> Slot {
        let keys = RunKeys::new(run);
        let (events_tx, events) = crossbeam_channel::bounded(4096);
        let io = RunIo {
            events: events_tx,
            stats: Arc::new(Stats::default()),
            limits: Arc::new(RunLimits::with_conn(
                run,
                self.conn(Duration::from_secs(10)),
            )),
        };
        let spec: redis::RedisResult<Option<Vec<u8>>> = con.call(&self.quit, |c| {
            redis::cmd("HGET").arg(keys.state()).arg("spec").query(c)
        });
        let spec = match spec {
            Ok(Some(b)) => RunSpec::decode(&b).map_err(|e| e.to_string()),
            Ok(None) => Err("no run spec".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (spec, engine, refused) = match spec.and_then(|s| (self.accept)(&s).map(|()| s)) {
            Ok(spec) => match (self.make)(&spec, io.clone()) {
                Ok(e) => (Some(spec), Some(e), None),
                Err(why) => (Some(spec), None, Some(why)),
            },
            Err(why) => (None, None, Some(why)),
        };
        if let Some(why) = &refused {
            self.log(con, "error", Some(run), &format!("run refused: {why}"));
            let ev = Event::Error {
                path: RelPath::root(),
                op: Op::Validate,
                side: Side::Source,
                errno: None,
                message: format!("worker {} refuses the run: {why}", self.opts.name),
            };
            let _ = con.call(&self.quit, |c| {
                // Noted in the run's state too: a run every live worker
                // refuses ends (its follower ends it).
                redis::pipe()
                    .add_command(event_cmd(&keys.events(), &self.opts.name, &ev))
                    .hset(keys.state(), format!("refused:{}", self.opts.name), why)
                    .exec(c)
            });
        }
        Slot {
            run,
            keys,
            spec,
            refused,
            engine: RwLock::new(engine),
            io,
            events,
            pause: AtomicU8::new(RUNNING),
            ended: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            sent: Mutex::new(Counts::default()),
        }
    }

    /// Resets the idle time of every entry this worker holds and still
    /// owns (its lease; `lua/renew.lua`).
    fn renew(&self, con: &mut Conn) {
        let held: Vec<(u64, Vec<String>)> = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(r, s)| (*r, s.iter().cloned().collect()))
            .collect();
        for (run, ids) in held {
            let stream = RunKeys::new(run).tasks();
            for chunk in ids.chunks(512) {
                let _ = con.call(&self.quit, |c| {
                    self.renew
                        .key(&stream)
                        .arg(GROUP)
                        .arg(&self.opts.name)
                        .arg(chunk)
                        .invoke::<i64>(c)
                });
            }
        }
    }

    /// Takes entries of dead workers (heartbeat expired, or handed back),
    /// entries whose lease lapsed, and this worker's own entries it does
    /// not hold (stranded by a dropped connection or a restart).
    fn reclaim(&self, con: &mut Conn) {
        for slot in self.slots() {
            if !slot.open() {
                continue;
            }
            let free = (HELD_PER_THREAD * self.want()).saturating_sub(self.held_count());
            if free == 0 {
                return;
            }
            let stream = slot.keys.tasks();
            let summary: redis::RedisResult<Value> = con.call(&self.quit, |c| {
                redis::cmd("XPENDING").arg(&stream).arg(GROUP).query(c)
            });
            let Ok(summary) = summary else { continue };
            let mut claimed = 0usize;
            for (consumer, _) in pending_consumers(&summary) {
                let dead = consumer == HANDBACK || {
                    let alive: redis::RedisResult<bool> = con.call(&self.quit, |c| {
                        redis::cmd("EXISTS").arg(keys::alive(&consumer)).query(c)
                    });
                    !alive.unwrap_or(true)
                };
                let min_idle = if dead {
                    1_000
                } else if consumer == self.opts.name {
                    ms(self.opts.tick) * 5
                } else {
                    ms(self.opts.lease)
                };
                let got = self.claim(con, &slot, &consumer, min_idle, free - claimed.min(free));
                if got > 0 {
                    claimed += got;
                    let tasks = if got == 1 { "task" } else { "tasks" };
                    let why = if consumer == HANDBACK {
                        format!("took {got} {tasks} handed back")
                    } else if dead {
                        format!("took {got} {tasks} of {consumer}, which is gone")
                    } else if consumer == self.opts.name {
                        format!("took back {got} of its own {tasks} it had lost track of")
                    } else {
                        format!("took {got} {tasks} of {consumer}, whose lease lapsed")
                    };
                    self.log(con, "warn", Some(slot.run), &why);
                }
                if dead && consumer != HANDBACK && got == 0 {
                    self.forget_consumer(con, &stream, &consumer);
                }
                if claimed >= free {
                    break;
                }
            }
        }
    }

    /// Claims up to `count` entries of `consumer` idle at least
    /// `min_idle` ms (this worker's own only when not held); queues them.
    fn claim(
        &self,
        con: &mut Conn,
        slot: &Slot,
        consumer: &str,
        min_idle: u64,
        count: usize,
    ) -> usize {
        if count == 0 {
            return 0;
        }
        let stream = slot.keys.tasks();
        let pending: redis::RedisResult<Value> = con.call(&self.quit, |c| {
            redis::cmd("XPENDING")
                .arg(&stream)
                .arg(GROUP)
                .arg("IDLE")
                .arg(min_idle)
                .arg("-")
                .arg("+")
                .arg(count)
                .arg(consumer)
                .query(c)
        });
        let Ok(pending) = pending else { return 0 };
        let held: HashSet<String> = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot.run)
            .cloned()
            .unwrap_or_default();
        let entries: Vec<(String, u32)> = pending_entries(&pending)
            .into_iter()
            .filter(|(id, _)| !held.contains(id))
            .collect();
        if entries.is_empty() {
            return 0;
        }
        let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        let got: redis::RedisResult<Value> = con.call(&self.quit, |c| {
            redis::cmd("XCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(&self.opts.name)
                .arg(min_idle)
                .arg(&ids)
                .query(c)
        });
        let Ok(got) = got else { return 0 };
        let counts: HashMap<&str, u32> = entries.iter().map(|(id, n)| (id.as_str(), *n)).collect();
        let mut n = 0;
        for (entry, id, bytes) in entries_of(&got) {
            let count = counts.get(entry.as_str()).copied().unwrap_or(1) + 1;
            let d = Delivery {
                run: slot.run,
                entry,
                id,
                bytes,
                count,
            };
            self.hold(&d);
            let _ = self.queue.0.send(d);
            n += 1;
        }
        n
    }

    /// Removes a dead worker's consumer from a run's group once it has no
    /// pending entries (checked just before: a dead consumer gets none).
    fn forget_consumer(&self, con: &mut Conn, stream: &str, consumer: &str) {
        let left: redis::RedisResult<Value> = con.call(&self.quit, |c| {
            redis::cmd("XPENDING")
                .arg(stream)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(consumer)
                .query(c)
        });
        if let Ok(v) = left
            && pending_entries(&v).is_empty()
        {
            let _ = con.call(&self.quit, |c| {
                redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(stream)
                    .arg(GROUP)
                    .arg(consumer)
                    .exec(c)
            });
        }
    }

    /// Leaves the cluster: heartbeat gone, out of every run's group where
    /// it holds nothing; its registry entry stays (state `left`, its
    /// counts) until it expires an hour later.
    fn leave(&self, con: &mut Conn) {
        let name = &self.opts.name;
        for slot in self.slots() {
            self.forget_consumer(con, &slot.keys.tasks(), name);
        }
        self.log(con, "info", None, "left");
        let _ = con.call(&self.quit, |c| {
            redis::pipe()
                .del(keys::alive(name))
                .hset(keys::worker(name), "state", "left")
                .hset(keys::worker(name), "busy", 0)
                .expire(keys::worker(name), 3600)
                .exec(c)
        });
    }
}

type RedisResultValue = redis::RedisResult<Value>;

/// What an engine counted outside tasks (its own counters: a worker
/// never acknowledges a task to its engine, it reports it to the broker).
fn engine_counts(stats: &Stats) -> Counts {
    let snap = stats.snapshot(Duration::ZERO);
    match serde_json::to_value(snap) {
        Ok(serde_json::Value::Object(m)) => {
            let fields: Vec<(String, u64)> = m
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_u64()?)))
                .collect();
            keys::counts_from(&fields)
        }
        _ => Counts::default(),
    }
}

/// The context of one delivery: children sent in batches while the task
/// runs, the rest and the deferred task with its finish.
struct Cx<'a> {
    shared: &'a Shared,
    con: &'a mut Conn,
    keys: &'a RunKeys,
    run: u64,
    id: String,
    seen: HashSet<TaskId>,
    spawned: Vec<(TaskId, Vec<u8>)>,
    sent: Vec<TaskId>,
    deferred: Option<(TaskId, Vec<u8>)>,
    delivery: u32,
}

impl Cx<'_> {
    fn send_spawned(&mut self) {
        let mut pipe = redis::pipe();
        for (child, bytes) in &self.spawned {
            let mut c = redis::cmd("EVALSHA");
            c.arg(self.shared.spawn.get_hash())
                .arg(4)
                .arg(format!("{}t:{}", self.keys.prefix(), self.id))
                .arg(self.keys.task(*child))
                .arg(self.keys.tasks())
                .arg(self.keys.state())
                .arg(child.to_string())
                .arg(&self.id)
                .arg(bytes.as_slice());
            pipe.add_command(c).ignore();
        }
        let spawn = &self.shared.spawn;
        let r = self.con.call(&self.shared.quit, |c| match pipe.exec(c) {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                spawn.load(c)?;
                pipe.exec(c)
            }
            r => r,
        });
        // Sent or not, they go again with the finish (spawning is
        // idempotent); sent, they need not wait for it.
        if r.is_ok() {
            self.sent.extend(self.spawned.drain(..).map(|(id, _)| id));
        }
    }
}

impl TaskContext for Cx<'_> {
    fn spawn(&mut self, task: Task) {
        let id = task.id(self.run);
        if !self.seen.insert(id) {
            return;
        }
        match task.encode() {
            Ok(bytes) => self.spawned.push((id, bytes)),
            Err(e) => eprintln!("psync worker: a task could not be encoded: {e}"),
        }
        if self.spawned.len() >= SPAWN_BATCH {
            self.send_spawned();
        }
    }

    fn defer(&mut self, task: Task) -> Result<(), DeferTwice> {
        let id = task.id(self.run);
        match &self.deferred {
            Some((first, _)) if *first == id => Ok(()),
            Some(_) => Err(DeferTwice(Box::new(task))),
            None => match task.encode() {
                Ok(bytes) => {
                    self.deferred = Some((id, bytes));
                    Ok(())
                }
                Err(_) => Err(DeferTwice(Box::new(task))),
            },
        }
    }

    fn delivery(&self) -> u32 {
        self.delivery
    }
}

/// What a thread is on, for `psync status`.
fn describe(t: &Task) -> String {
    let what = match t {
        Task::Dir { .. } => "listing",
        Task::DirPart { .. } => "listing part of",
        Task::Files { actions, .. } => {
            return format!("copying {} files in {}", actions.len(), show(t.rel()));
        }
        Task::BigFile { src, .. } => return format!("starting {}", show(&t.rel().join(&src.name))),
        Task::Chunk { src, index, .. } => {
            return format!("chunk {index} of {}", show(&t.rel().join(&src.name)));
        }
        Task::FinishFile { src, .. } => {
            return format!("finishing {}", show(&t.rel().join(&src.name)));
        }
        Task::FinishDir { .. } => "finishing",
        Task::Links { .. } | Task::LinkSlots { .. } | Task::DropLinks { .. } => "hard links in",
        _ => "comparing in",
    };
    format!("{what} {}", show(t.rel()))
}

fn show(r: &RelPath) -> String {
    if r.is_root() {
        ".".into()
    } else {
        r.to_string()
    }
}

/// An event as an entry of a run's event log.
fn event_cmd(stream: &str, worker: &str, ev: &Event) -> redis::Cmd {
    let mut c = redis::cmd("XADD");
    c.arg(stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(LOG_MAXLEN)
        .arg("*")
        .arg("l")
        .arg(keys::level_of(ev))
        .arg("w")
        .arg(worker)
        .arg("e")
        .arg(serde_json::to_string(ev).unwrap_or_default());
    c
}

fn as_str(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    as_str(v)?.parse().ok()
}

/// A stream entry of a task: (entry id, task id, task bytes).
type TaskEntry = (String, String, Vec<u8>);

/// `[[id, [field, value, …]], …]` as task entries.
fn entries_of(v: &Value) -> Vec<TaskEntry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let entry = as_str(pair.first()?)?;
            let Value::Array(fields) = pair.get(1)? else {
                return None;
            };
            let (mut id, mut bytes) = (None, None);
            for kv in fields.chunks(2) {
                match (kv.first().and_then(as_str).as_deref(), kv.get(1)) {
                    (Some("id"), Some(v)) => id = as_str(v),
                    (Some("task"), Some(Value::BulkString(b))) => bytes = Some(b.clone()),
                    _ => {}
                }
            }
            Some((entry, id?, bytes?))
        })
        .collect()
}

/// XREADGROUP's reply: per stream, its entries.
fn stream_entries(v: &Value) -> Vec<(String, Vec<TaskEntry>)> {
    match v {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| {
                let Value::Array(pair) = s else { return None };
                Some((as_str(pair.first()?)?, entries_of(pair.get(1)?)))
            })
            .collect(),
        Value::Map(streams) => streams
            .iter()
            .filter_map(|(k, v)| Some((as_str(k)?, entries_of(v))))
            .collect(),
        _ => Vec::new(),
    }
}

/// XPENDING's summary: the consumers with pending entries, and how many.
fn pending_consumers(v: &Value) -> Vec<(String, u64)> {
    let Value::Array(parts) = v else {
        return Vec::new();
    };
    let Some(Value::Array(consumers)) = parts.get(3) else {
        return Vec::new();
    };
    consumers
        .iter()
        .filter_map(|c| {
            let Value::Array(pair) = c else { return None };
            Some((as_str(pair.first()?)?, as_u64(pair.get(1)?)?))
        })
        .collect()
}

/// XPENDING's extended form: (entry id, times delivered).
fn pending_entries(v: &Value) -> Vec<(String, u32)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| {
            let Value::Array(f) = i else { return None };
            let n = as_u64(f.get(3)?)?;
            Some((as_str(f.first()?)?, u32::try_from(n).unwrap_or(u32::MAX)))
        })
        .collect()
}

/// The finish script's reply: (code, id, refused).
fn parse_finish(v: &Value) -> Option<(i64, Option<TaskId>, bool)> {
    let Value::Array(f) = v else { return None };
    let code = as_str(f.first()?)?.parse().ok()?;
    let id = f
        .get(1)
        .and_then(as_str)
        .filter(|s| !s.is_empty())
        .and_then(|s| parse_id(&s).ok());
    let refused = f.get(2).and_then(as_str).is_some_and(|s| s == "1");
    Some((code, id, refused))
}

impl Outage {
    /// A line for a log.
    pub fn describe(&self) -> String {
        match self {
            Outage::Lost(why) => format!("broker unreachable ({why}); retrying"),
            Outage::Back(after) => {
                format!("broker reachable again after {:.1}s", after.as_secs_f64())
            }
        }
    }
}
