//! Benchmarks of the Redis broker (issue 15, "Performance"): runs of a
//! synthetic tree through a real `redis-server` and in-process
//! [`Worker`]s, with plain printed numbers (one run of a million files is
//! the measurement; criterion's sampling does not fit).
//!
//! - `dispatch`: a tree of `--files` files (default 1,000,000), `--per-dir`
//!   per directory (100), directories of `--fanout` children (10), through
//!   one loopback redis-server, on workers of each `--shape WxT` (W
//!   workers of T threads; default 2x2). The workers run a stand-in engine
//!   ([`StandIn`]) that does no file system work and makes the tasks the
//!   engine's walk makes: a `Dir` spawns its child `Dir`s; a directory
//!   with children also spawns one `Files` task of real `Copy` actions
//!   and defers its `FinishDir`, a leaf copies and finishes itself (one
//!   task); the others only count. `--tasks-per-dir 3`, `2` or `1` make
//!   every directory alike (3: as the engine did before 2026-12-01).
//! - `latency`: the same with the first shape, on loopback and through a
//!   [`DelayProxy`] adding `--delay-us` (200) each way between Redis and
//!   everyone else (workers and submitter), alternately: files/s of both
//!   and their ratio.
//!
//! Each run checks its outcome (every file counted once, every task run
//! once, no task record left, the stream deleted) and prints: tasks/s and
//! files/s from the first task's start to the run's end; the CPU time of
//! redis-server and of this process (/proc), and how busy the machine
//! was; redis-server's socket reads, bytes and commands per task (`INFO
//! stats`) and its busiest commands (`INFO commandstats`, reset at the
//! submit); Redis's `used_memory` before, at its peak (sampled every
//! 50 ms) and at the end. `--rounds N` repeats every run N times, shapes
//! and routes alternating, for medians; `--perf DIR` records redis-server
//! and this process with `perf record -g` and prints the hottest symbols.
//!
//! ```sh
//! cargo bench --bench broker                      # dispatch, then latency
//! cargo bench --bench broker -- dispatch --shape 2x2,1x4,2x8 --rounds 3
//! cargo bench --bench broker -- latency --rounds 3
//! ```
//!
//! Without a `redis-server` on the PATH it prints why and does nothing.
//! Run by `cargo test --benches` (no `--bench` argument), it does one run
//! of 5,000 files of each group as a smoke test. The end-to-end figure
//! (real `psync worker` processes and files) is `benches/compare.sh
//! --tools psync,psync-broker`; results of all three are in
//! benches/README.md, "Broker".

#[macro_use]
#[path = "../psync-broker/tests/server/mod.rs"]
mod server;

use psync::broker::delay::DelayProxy;
use psync::broker::{
    Accept, Broker, CheckTask, End, MakeEngine, OutageSink, RunEngine, RunKeys, Worker,
    WorkerOptions,
};
use psync::core::plan::Action;
use psync::core::transport::{Outcome, TaskContext, TaskReport, TaskRunner};
use psync::core::{Change, Entry, Kind, Name, RelPath, Stopped, Task, Time};
use server::Redis;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

// ------------------------------------------------------------- options

/// What to run (see the module's docs).
#[derive(Debug, Clone)]
struct Options {
    dispatch: bool,
    latency: bool,
    tree: Tree,
    shapes: Vec<(usize, usize)>,
    delay: Duration,
    rounds: usize,
    /// `perf record` redis-server and this process during each run, into
    /// this directory.
    perf: Option<std::path::PathBuf>,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            dispatch: false,
            latency: false,
            tree: Tree {
                dirs: 10_000,
                per_dir: 100,
                fanout: 10,
                tasks_per_dir: 0,
            },
            shapes: Vec::new(),
            delay: Duration::from_micros(200),
            rounds: 1,
            perf: None,
        };
        let mut files = 1_000_000u64;
        // `cargo bench` passes `--bench`; `cargo test --benches` does not:
        // then one small run of each group checks that the benchmark works.
        let mut bench = false;
        let mut args = std::env::args().skip(1);
        let num = |a: Option<String>, what: &str| -> u64 {
            a.and_then(|s| s.replace('_', "").parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or_else(|| panic!("{what} needs a positive number"))
        };
        while let Some(a) = args.next() {
            match a.as_str() {
                "--bench" => bench = true,
                "dispatch" => o.dispatch = true,
                "latency" => o.latency = true,
                "--files" => files = num(args.next(), "--files"),
                "--per-dir" => o.tree.per_dir = num(args.next(), "--per-dir"),
                "--fanout" => o.tree.fanout = num(args.next(), "--fanout"),
                "--tasks-per-dir" => {
                    o.tree.tasks_per_dir = num(args.next(), "--tasks-per-dir");
                    assert!(o.tree.tasks_per_dir <= 3, "--tasks-per-dir is 1, 2 or 3");
                }
                "--delay-us" => o.delay = Duration::from_micros(num(args.next(), "--delay-us")),
                "--rounds" => o.rounds = num(args.next(), "--rounds") as usize,
                "--perf" => o.perf = Some(args.next().expect("--perf needs a directory").into()),
                "--shape" => {
                    let s = args.next().expect("--shape needs WxT[,WxT…]");
                    for one in s.split(',') {
                        let (w, t) = one.split_once('x').expect("a shape is WxT, e.g. 2x2");
                        let n = |v: &str| v.parse().ok().filter(|n| *n > 0).expect("WxT");
                        o.shapes.push((n(w), n(t)));
                    }
                }
                other => panic!(
                    "unknown argument {other:?}: [dispatch] [latency] [--files N] \
                     [--per-dir N] [--fanout N] [--tasks-per-dir 1|2|3] [--shape WxT,…] \
                     [--delay-us N] [--rounds N] [--perf DIR]"
                ),
            }
        }
        if !bench {
            files = 5_000;
            o.rounds = 1;
        }
        o.tree.dirs = files.div_ceil(o.tree.per_dir);
        if !o.dispatch && !o.latency {
            o.dispatch = true;
            o.latency = true;
        }
        if o.shapes.is_empty() {
            o.shapes.push((2, 2));
        }
        o
    }
}

// ------------------------------------------------------------ the tree

/// The synthetic tree: directories numbered breadth first from the root
/// (0); directory `i`'s children are `fanout*i + 1 ..= fanout*i + fanout`
/// below `dirs`, named `d<index>`; each holds `per_dir` files.
#[derive(Debug, Clone, Copy)]
struct Tree {
    dirs: u64,
    per_dir: u64,
    fanout: u64,
    /// Tasks per directory: 0 (the default) as the engine makes them: a
    /// leaf directory's `Dir` copies its files and finishes it itself (1
    /// task), any other has a `Files` task and a `FinishDir` (3); 3, 2, 1
    /// for every directory alike (`--tasks-per-dir`: 2, the `Dir` copies
    /// its files itself; 1, and finishes itself too).
    tasks_per_dir: u64,
}

impl Tree {
    fn files(&self) -> u64 {
        self.dirs * self.per_dir
    }

    /// Tasks of a run.
    fn tasks(&self) -> u64 {
        let (_, files, finishes) = self.task_kinds();
        self.dirs + files + finishes
    }

    /// Directories with subdirectories.
    fn inner(&self) -> u64 {
        (0..self.dirs)
            .filter(|i| self.children(*i).next().is_some())
            .count() as u64
    }

    /// Whether directory `i` has its own `Files` task, and its own `FinishDir`.
    fn spawns(&self, i: u64) -> (bool, bool) {
        match self.tasks_per_dir {
            0 => {
                let inner = self.children(i).next().is_some();
                (inner, inner)
            }
            n => (n >= 3, n >= 2),
        }
    }

    /// `Dir`, `Files` and `FinishDir` tasks of a run.
    fn task_kinds(&self) -> (u64, u64, u64) {
        match self.tasks_per_dir {
            0 => (self.dirs, self.inner(), self.inner()),
            n => (
                self.dirs,
                self.dirs * u64::from(n >= 3),
                self.dirs * u64::from(n >= 2),
            ),
        }
    }

    fn children(&self, i: u64) -> impl Iterator<Item = u64> {
        let first = self.fanout * i + 1;
        (first..first + self.fanout).take_while(|c| *c < self.dirs)
    }
}

/// A number from two, well mixed (splitmix64's finalizer): names, sizes
/// and times that look like a real listing's without a generator.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Metadata as a listing fills it in (what a task carries to another node).
fn entry(name: String, kind: Kind, dir: u64, i: u64) -> Entry {
    let h = mix(dir, i);
    let mut e = Entry::new(Name::from(name.as_str()), kind);
    e.size = if kind == Kind::File {
        1024 + h % (15 * 1024)
    } else {
        4096
    };
    e.mode = if kind == Kind::File { 0o644 } else { 0o755 };
    (e.uid, e.gid) = (1000, 1000);
    e.mtime = Time::new(
        1_700_000_000 + (h % 10_000_000) as i64,
        (h >> 32) as u32 % 1_000_000_000,
    );
    (e.atime, e.ctime) = (e.mtime, e.mtime);
    e.nlink = if kind == Kind::File { 1 } else { 2 };
    (e.dev, e.ino) = (2049, dir * 1000 + i);
    e.blocks = e.size.div_ceil(512);
    e
}

// ----------------------------------------------------- the stand-in engine

/// What the stand-in engines of one measured run saw, shared by all.
#[derive(Debug, Default)]
struct Probe {
    /// Task runs (deliveries), by kind.
    dirs: AtomicU64,
    files: AtomicU64,
    finishes: AtomicU64,
    /// Deliveries past the first (redeliveries: none expected).
    again: AtomicU64,
    /// When the first task started (ms since the epoch; 0: none yet).
    first_ms: AtomicU64,
    /// Encoded sizes of the last `Dir` and `Files` tasks spawned.
    dir_bytes: AtomicU64,
    files_bytes: AtomicU64,
}

/// A [`RunEngine`] that does no file system work (see the module's docs).
#[derive(Debug)]
struct StandIn {
    run_id: u64,
    tree: Tree,
    probe: Arc<Probe>,
    quit: AtomicBool,
}

impl StandIn {
    /// The index of the directory a task is in (`d<index>`; the root 0).
    fn index(rel: &RelPath) -> u64 {
        match rel.split_last() {
            None => 0,
            Some((_, last)) => std::str::from_utf8(last)
                .ok()
                .and_then(|s| s.strip_prefix('d')?.parse().ok())
                .expect("a directory of the synthetic tree"),
        }
    }

    fn list(&self, rel: RelPath, src: Entry, cx: &mut dyn TaskContext) -> TaskReport {
        let i = StandIn::index(&rel);
        let mut report = TaskReport::default();
        for c in self.tree.children(i) {
            let name = format!("d{c}");
            let child = Task::Dir {
                rel: rel.join(&Name::from(name.as_str())),
                src: entry(name, Kind::Dir, i, c),
                dst: None,
                at: None,
            };
            if c == 1 {
                let n = child.encode().map_or(0, |b| b.len());
                self.probe.dir_bytes.store(n as u64, Ordering::Relaxed);
            }
            cx.spawn(child);
            report.counts.scanned += 1;
        }
        let actions: Vec<Action> = (0..self.tree.per_dir)
            .map(|f| {
                let name = format!("f{f:04}-{:06x}", mix(i, f) & 0xff_ffff);
                let src = entry(name, Kind::File, i, self.tree.fanout + f);
                report.counts.scanned += 1;
                report.counts.bytes_total += src.size;
                report.counts.bytes_to_copy += src.size;
                Action::Copy {
                    src,
                    dst: None,
                    change: Change::new_entry(Kind::File),
                }
            })
            .collect();
        let files = Task::Files {
            rel: rel.clone(),
            actions,
            fresh: true,
            at: None,
            recheck: false,
        };
        if i == 0 {
            let n = files.encode().map_or(0, |b| b.len());
            self.probe.files_bytes.store(n as u64, Ordering::Relaxed);
        }
        let (own_files, own_finish) = self.tree.spawns(i);
        if own_files {
            cx.spawn(files);
        } else if let Task::Files { actions, .. } = &files {
            copy(actions, &mut report);
        }
        let finish = Task::FinishDir {
            rel,
            src,
            dst: None,
            touched: true,
            at: None,
            pass: 0,
        };
        if own_finish {
            cx.defer(finish).expect("one deferral per directory");
        } else {
            report.counts.done += 1;
        }
        report.counts.dirs = 1;
        report
    }
}

/// What a `Files` task counts: every file created and copied.
fn copy(actions: &[Action], r: &mut TaskReport) {
    for a in actions {
        if let Action::Copy { src, .. } = a {
            r.counts.created += 1;
            r.counts.done += 1;
            r.counts.bytes_copied += src.size;
        }
    }
}

impl TaskRunner for StandIn {
    fn run(&self, task: Task, cx: &mut dyn TaskContext) -> Outcome {
        let _ =
            self.probe
                .first_ms
                .compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
        if cx.delivery() > 1 {
            self.probe.again.fetch_add(1, Ordering::Relaxed);
        }
        let report = match task {
            Task::Dir { rel, src, .. } => {
                self.probe.dirs.fetch_add(1, Ordering::Relaxed);
                self.list(rel, src, cx)
            }
            Task::Files { actions, .. } => {
                self.probe.files.fetch_add(1, Ordering::Relaxed);
                let mut r = TaskReport::default();
                copy(&actions, &mut r);
                r
            }
            Task::FinishDir { .. } => {
                self.probe.finishes.fetch_add(1, Ordering::Relaxed);
                let mut r = TaskReport::default();
                r.counts.done = 1;
                r
            }
            _ => TaskReport::default(),
        };
        Outcome::Done(report)
    }

    fn acknowledge(&self, _report: TaskReport) {}

    fn run_id(&self) -> u64 {
        self.run_id
    }
}

impl RunEngine for StandIn {
    fn sync_written(&self) -> Result<bool, psync::Error> {
        Ok(false)
    }
    fn stopped(&self) -> Option<Stopped> {
        None
    }
    fn quit(&self) {
        self.quit.store(true, Ordering::Relaxed);
    }
    fn quitting(&self) -> bool {
        self.quit.load(Ordering::Relaxed)
    }
    fn end_unfinished(&self) {}
}

// ------------------------------------------------------------- a run

/// Where one run goes: straight to Redis, or through a delaying proxy.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    Loopback,
    Delayed(Duration),
}

/// Redis's memory over one run.
#[derive(Debug, Default)]
struct Memory {
    before: u64,
    peak: u64,
    peak_keys: u64,
    samples: u64,
    end: u64,
    keys_end: u64,
}

/// What one measured run gave.
#[derive(Debug)]
struct Measured {
    /// What ran where (the first line printed).
    label: String,
    /// First task started → the run's end (the server's clock).
    busy: Duration,
    /// Submitted → ended (both as recorded in the run's state).
    run: Duration,
    /// `submit` called → `follow` returned.
    wall: Duration,
    tasks: u64,
    files: u64,
    redeliveries: u64,
    /// Encoded sizes of a `Dir` and of a `Files` task.
    task_bytes: (u64, u64),
    /// CPU seconds over the run: redis-server, this process, and of
    /// the latter the delay proxy's threads (when there is one).
    cpu_redis: f64,
    cpu_workers: f64,
    cpu_proxy: Option<f64>,
    /// How busy the machine's CPUs were (every process), in percent.
    machine: f64,
    memory: Memory,
    /// `INFO stats` and `INFO commandstats` at the end.
    io: HashMap<String, String>,
    commands: HashMap<String, String>,
    /// `perf record` files, by process.
    profiles: Vec<(&'static str, std::path::PathBuf)>,
}

impl Measured {
    fn files_per_sec(&self) -> f64 {
        self.files as f64 / self.busy.as_secs_f64()
    }

    fn tasks_per_sec(&self) -> f64 {
        self.tasks as f64 / self.busy.as_secs_f64()
    }

    fn print(&self) {
        println!("\n{}", self.label);
        println!(
            "  {:>10.0} files/s  {:>8.0} tasks/s   ({} tasks in {:.3} s, first task started → \
             run ended)",
            self.files_per_sec(),
            self.tasks_per_sec(),
            self.tasks,
            self.busy.as_secs_f64()
        );
        println!(
            "  submitted → ended {:.3} s; submit → follow returned {:.3} s; redeliveries {}",
            self.run.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.redeliveries
        );
        println!(
            "  task sizes: Dir {} B, Files {} B",
            self.task_bytes.0, self.task_bytes.1
        );
        let pct = |cpu: f64| 100.0 * cpu / self.wall.as_secs_f64();
        println!(
            "  CPU over submit → end: redis-server {:.2} s ({:.0}% of a core), this process \
             (workers, submitter, sampler) {:.2} s ({:.0}%); the machine's CPUs {:.0}% busy \
             (every process)",
            self.cpu_redis,
            pct(self.cpu_redis),
            self.cpu_workers,
            pct(self.cpu_workers),
            self.machine
        );
        if let Some(cpu) = self.cpu_proxy {
            println!(
                "  of this process's CPU, the delay proxy's threads (live at the end) took \
                 {cpu:.2} s ({:.0}% of a core): on a cluster the network costs no CPU here",
                pct(cpu)
            );
        }
        let m = &self.memory;
        println!(
            "  Redis used_memory: {} before, peak {} ({} samples, peak {} keys), {} at the end \
             ({} keys, no task record, stream deleted)",
            mib(m.before),
            mib(m.peak),
            m.samples,
            m.peak_keys,
            mib(m.end),
            m.keys_end
        );
        let per_task = |k: &str| {
            self.io
                .get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / self.tasks as f64
        };
        println!(
            "  per task: {:.2} socket reads and {:.2} writes by redis-server (≈ round trips), \
             {:.0} B in, {:.0} B out; {:.1} commands (scripts' own calls included)",
            per_task("total_reads_processed"),
            per_task("total_writes_processed"),
            per_task("total_net_input_bytes"),
            per_task("total_net_output_bytes"),
            per_task("total_commands_processed"),
        );
        print_commandstats(&self.commands, self.tasks);
        for (what, data) in &self.profiles {
            print_profile(what, data);
        }
    }
}

/// One run of the tree of `o` on `workers` workers of `threads` threads
/// each, through a fresh redis-server; checks its outcome and prints what
/// it measured.
fn measure(o: &Options, workers: usize, threads: usize, route: Route) -> Measured {
    let tree = o.tree;
    let redis = Redis::start().expect("redis-server (it started before)");
    let mut admin = redis.connect();
    let redis_pid: u32 = info(&mut admin, "server")["process_id"].parse().unwrap();
    let upstream: SocketAddr = format!("127.0.0.1:{}", redis.port()).parse().unwrap();
    let proxy = match route {
        Route::Loopback => None,
        Route::Delayed(d) => Some(DelayProxy::start(upstream, d).expect("start the proxy")),
    };
    let url = match &proxy {
        Some(p) => format!("redis://{}/", p.addr()),
        None => redis.url(),
    };
    let client = || redis::Client::open(url.as_str()).unwrap();

    // A real run spec and seed (the root's `Dir`) from two empty dirs:
    // the stand-in ignores the roots.
    let tmp = tempfile::Builder::new()
        .prefix("broker-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    std::fs::create_dir(tmp.path().join("src")).unwrap();
    let (spec, seed) = psync::builder(tmp.path().join("src"), tmp.path().join("dst"))
        .build()
        .and_then(|s| s.prepare())
        .expect("prepare a run");
    let keys = RunKeys::new(spec.run_id);

    let probe = Arc::new(Probe::default());
    let make: MakeEngine = {
        let probe = Arc::clone(&probe);
        Arc::new(move |spec, _io| {
            Ok(Arc::new(StandIn {
                run_id: spec.run_id,
                tree,
                probe: Arc::clone(&probe),
                quit: AtomicBool::new(false),
            }) as Arc<dyn RunEngine>)
        })
    };
    let accept: Accept = Arc::new(|_| Ok(()));
    let check: CheckTask = Arc::new(|_| Ok(()));
    let sink: OutageSink = Arc::new(|o| eprintln!("broker bench: {}", o.describe()));
    let names: Vec<String> = (0..workers).map(|w| format!("bench-w{w}")).collect();
    let pool: Vec<Worker> = names
        .iter()
        .map(|name| {
            let mut opts = WorkerOptions::new(threads);
            opts.name = name.clone();
            let (a, m, c, s) = (&accept, &make, &check, &sink);
            Worker::new(client(), opts, a.clone(), m.clone(), c.clone(), s.clone())
        })
        .collect();
    let (leave, hurry) = (AtomicBool::new(false), AtomicBool::new(false));
    let done = AtomicBool::new(false);
    let broker = Broker::new(client(), url.clone());
    let tag = format!(
        "{}-{workers}x{threads}{}",
        tree.files(),
        if proxy.is_some() { "-delayed" } else { "" }
    );

    let m = std::thread::scope(|scope| {
        // The workers leave however this ends (a failed check included).
        let _leave = Leave(&leave, &hurry);
        for w in &pool {
            let (leave, hurry) = (&leave, &hurry);
            scope.spawn(move || w.run(leave, hurry).expect("a worker"));
        }
        wait_joined(&mut admin, &names);
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut admin)
            .unwrap();
        let mem_before = used_memory(&mut admin);
        let cpu = (cpu_secs(redis_pid), cpu_secs(std::process::id()));
        let proxy_cpu = threads_cpu("delay-proxy");
        let machine = machine_ticks();
        let (done, redis) = (&done, &redis);
        let sampler = scope.spawn(move || sample_memory(redis, done));
        let perf = o.perf.as_ref().map(|dir| {
            let procs = [("redis", redis_pid), ("workers", std::process::id())];
            Perf::start(dir, &procs, &tag)
        });

        let t0 = Instant::now();
        let run = broker.submit(&spec, &seed).expect("submit");
        let (tx, _rx) = crossbeam_channel::unbounded();
        let end = broker
            .follow(run, &tx, &mut |_| {}, &AtomicBool::new(false))
            .expect("follow");
        let wall = t0.elapsed();

        let cpu_redis = cpu_secs(redis_pid) - cpu.0;
        let cpu_workers = cpu_secs(std::process::id()) - cpu.1;
        let cpu_proxy = proxy.as_ref().map(|_| {
            let now = threads_cpu("delay-proxy");
            now.iter()
                .map(|(tid, secs)| secs - proxy_cpu.get(tid).unwrap_or(&0.0))
                .sum()
        });
        let machine = {
            let (busy, all) = machine_ticks();
            100.0 * (busy - machine.0) as f64 / (all - machine.1).max(1) as f64
        };
        let profiles = perf.map(Perf::stop).unwrap_or_default();
        done.store(true, Ordering::Relaxed);
        let mut memory = sampler.join().unwrap();
        memory.before = mem_before;
        memory.end = used_memory(&mut admin);
        memory.keys_end = redis::cmd("DBSIZE").query(&mut admin).unwrap();
        let ended_ms: u64 = redis::cmd("HGET")
            .arg(keys.state())
            .arg("ended")
            .query(&mut admin)
            .unwrap();

        // The run did all it should, once, and left nothing of its tasks.
        let s = &end.report.stats;
        assert_eq!(end.end, End::Done, "the run ended otherwise");
        assert_eq!(s.created, tree.files(), "files created");
        assert_eq!(s.dirs, tree.dirs, "directories listed");
        assert_eq!(s.done, tree.files() + tree.dirs, "entries done");
        assert_eq!(s.failed, 0);
        let ran = (
            probe.dirs.load(Ordering::Relaxed),
            probe.files.load(Ordering::Relaxed),
            probe.finishes.load(Ordering::Relaxed),
        );
        assert_eq!(ran, tree.task_kinds(), "tasks run (Dir, Files, FinishDir)");
        assert_eq!(ran.0 + ran.1 + ran.2, tree.tasks());
        let records = count_keys(&mut admin, &keys.task_pattern());
        assert_eq!(records, 0, "task records left after the end");
        let stream: bool = redis::cmd("EXISTS")
            .arg(keys.tasks())
            .query(&mut admin)
            .unwrap();
        assert!(!stream, "the task stream outlived the run");

        let label = format!(
            "{} files ({} dirs × {}, fan-out {}, {} tasks), {workers} worker(s) × \
             {threads} thread(s), {}",
            tree.files(),
            tree.dirs,
            tree.per_dir,
            tree.fanout,
            match tree.tasks_per_dir {
                0 => format!("{} as the engine makes them", tree.tasks()),
                n => format!("{n} per dir"),
            },
            match route {
                Route::Loopback => "loopback".to_string(),
                Route::Delayed(d) => format!("+{} µs each way (DelayProxy)", d.as_micros()),
            }
        );
        let first = probe.first_ms.load(Ordering::Relaxed);
        Measured {
            label,
            busy: Duration::from_millis(ended_ms.saturating_sub(first).max(1)),
            run: Duration::from_millis(s.elapsed_ms),
            wall,
            tasks: tree.tasks(),
            files: s.created,
            redeliveries: probe.again.load(Ordering::Relaxed),
            task_bytes: (
                probe.dir_bytes.load(Ordering::Relaxed),
                probe.files_bytes.load(Ordering::Relaxed),
            ),
            cpu_redis,
            cpu_workers,
            cpu_proxy,
            machine,
            memory,
            io: info(&mut admin, "stats"),
            commands: info(&mut admin, "commandstats"),
            profiles,
        }
    });
    drop(proxy);
    m.print();
    m
}

/// Waits until every worker of `names` joined (its heartbeat key is set).
fn wait_joined(con: &mut redis::Connection, names: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for name in names {
        let key = psync::broker::keys::alive(name);
        while !redis::cmd("EXISTS").arg(&key).query::<bool>(con).unwrap() {
            assert!(Instant::now() < deadline, "worker {name} did not join");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Redis's memory and key count every 50 ms until `done`: the peaks.
fn sample_memory(redis: &Redis, done: &AtomicBool) -> Memory {
    let mut con = redis.connect();
    let mut m = Memory::default();
    while !done.load(Ordering::Relaxed) {
        m.peak = m.peak.max(used_memory(&mut con));
        let keys: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        m.peak_keys = m.peak_keys.max(keys);
        m.samples += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    m
}

/// Sets a worker's leave flags on drop: without them a failed check
/// would wait for the workers forever.
struct Leave<'a>(&'a AtomicBool, &'a AtomicBool);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if std::thread::panicking() {
            self.1.store(true, Ordering::Relaxed);
        }
    }
}

/// Redis's busiest commands of the run (commands scripts call included:
/// an EVALSHA's time contains theirs).
fn print_commandstats(stats: &HashMap<String, String>, tasks: u64) {
    let mut rows: Vec<(String, u64, u64, f64)> = stats
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("cmdstat_")?.to_string();
            let field = |f: &str| {
                v.split(',')
                    .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
                    .unwrap_or("0")
                    .to_string()
            };
            Some((
                name,
                field("calls").parse().ok()?,
                field("usec").parse().ok()?,
                field("usec_per_call").parse().ok()?,
            ))
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.2));
    println!("  INFO commandstats, by total time (per task: calls / {tasks} tasks):");
    println!(
        "    {:<14} {:>10} {:>9} {:>12} {:>10}",
        "command", "calls", "per task", "usec total", "usec/call"
    );
    for (name, calls, usec, per) in rows.iter().take(14) {
        println!(
            "    {name:<14} {calls:>10} {:>9.2} {usec:>12} {per:>10.2}",
            *calls as f64 / tasks as f64
        );
    }
}

// ------------------------------------------------------------- profiles

/// `perf record -g` of some processes (one file each) during a run.
struct Perf(Vec<(&'static str, std::path::PathBuf, std::process::Child)>);

impl Perf {
    fn start(dir: &std::path::Path, procs: &[(&'static str, u32)], tag: &str) -> Perf {
        std::fs::create_dir_all(dir).expect("the --perf directory");
        let mut recs = Vec::new();
        for &(what, pid) in procs {
            let data = dir.join(format!("{what}-{tag}.data"));
            let child = std::process::Command::new("perf")
                .args([
                    "record",
                    "-q",
                    "-F",
                    "1999",
                    "-g",
                    "-p",
                    &pid.to_string(),
                    "-o",
                ])
                .arg(&data)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("perf (apt-get install linux-perf)");
            recs.push((what, data, child));
        }
        // perf needs a moment to attach.
        std::thread::sleep(Duration::from_millis(300));
        Perf(recs)
    }

    /// Stops recording (SIGINT); the data files.
    fn stop(self) -> Vec<(&'static str, std::path::PathBuf)> {
        self.0
            .into_iter()
            .map(|(what, data, mut child)| {
                let _ = std::process::Command::new("kill")
                    .args(["-INT", &child.id().to_string()])
                    .status();
                let _ = child.wait();
                (what, data)
            })
            .collect()
    }
}

/// The hottest symbols of a profile (self time), as `perf report` prints them.
fn print_profile(what: &str, data: &std::path::Path) {
    let out = std::process::Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "-g",
            "none",
            "--percent-limit",
            "1.5",
        ])
        .args(["--sort", "dso,symbol", "-i"])
        .arg(data)
        .output();
    let Ok(out) = out else { return };
    println!("  perf, {what} (self time ≥ 1.5%; {}):", data.display());
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .take(25)
    {
        // Columns padded to the longest symbol, and empty ones ("-").
        let words: Vec<&str> = line.split_whitespace().collect();
        let end = words.iter().rposition(|w| *w != "-").map_or(0, |i| i + 1);
        println!("    {}", words[..end].join(" "));
    }
}

// ------------------------------------------------------------- helpers

fn now_ms() -> u64 {
    psync::broker::keys::now_ms()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// `INFO section` as key → value.
fn info(con: &mut redis::Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(con).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn used_memory(con: &mut redis::Connection) -> u64 {
    info(con, "memory")["used_memory"].parse().unwrap()
}

/// Keys matching `pattern` (SCAN).
fn count_keys(con: &mut redis::Connection, pattern: &str) -> u64 {
    let (mut cursor, mut n) = (0u64, 0u64);
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .unwrap();
        n += found.len() as u64;
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

/// User + system CPU seconds of process `pid` (/proc/PID/stat).
fn cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap())
}

/// The same of one thread of process `pid`.
fn task_cpu_secs(pid: u32, tid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
        .map_or(0.0, |s| stat_cpu_secs(&s))
}

fn stat_cpu_secs(stat: &str) -> f64 {
    // Fields after the command name, which is in parentheses: utime and
    // stime are the 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f[11] + f[12]) as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// CPU seconds of this process's live threads named `prefix…`, by id.
fn threads_cpu(prefix: &str) -> HashMap<String, f64> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return HashMap::new();
    };
    dir.flatten()
        .filter_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let tid = t.file_name().to_string_lossy().into_owned();
            let pid = tid.parse().ok()?;
            comm.starts_with(prefix)
                .then(|| (tid.clone(), task_cpu_secs(std::process::id(), pid)))
        })
        .collect()
}

/// The machine's busy and total CPU time so far, in ticks (/proc/stat).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // counted in user already).
    let all: u64 = f.iter().take(8).sum();
    (all - f[3] - f[4], all)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// ------------------------------------------------------------- groups

fn main() {
    let o = Options::parse();
    // A first server: skips the benchmark, saying why, when there is none.
    let probe = require_redis!();
    let version = info(&mut probe.connect(), "server")["redis_version"].clone();
    drop(probe);
    println!(
        "broker benchmarks: redis-server {version}, {} CPUs; stand-in engine (no file system work)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if o.dispatch {
        println!("\n== dispatch: one loopback redis-server, in-process workers ==");
        // Rounds of every shape in turn: the machine is shared and noisy.
        let mut rates: Vec<Vec<Measured>> = o.shapes.iter().map(|_| Vec::new()).collect();
        for _ in 0..o.rounds {
            for (i, &(w, t)) in o.shapes.iter().enumerate() {
                rates[i].push(measure(&o, w, t, Route::Loopback));
            }
        }
        println!(
            "\ndispatch summary, median of {} round(s) (target ≥ 2,000,000 files/s):",
            o.rounds
        );
        for (&(w, t), ms) in o.shapes.iter().zip(&rates) {
            let files = median(ms.iter().map(Measured::files_per_sec).collect());
            let tasks = median(ms.iter().map(Measured::tasks_per_sec).collect());
            let cpu = |f: fn(&Measured) -> f64| {
                median(ms.iter().map(|m| f(m) * 1e6 / m.files as f64).collect())
            };
            println!(
                "  {w}x{t}: {files:>9.0} files/s {tasks:>7.0} tasks/s; CPU-s per million files: \
                 redis-server {:.2}, workers {:.2}",
                cpu(|m| m.cpu_redis),
                cpu(|m| m.cpu_workers)
            );
        }
    }
    if o.latency {
        let (w, t) = o.shapes[0];
        println!(
            "\n== latency: {w}x{t}, loopback vs +{} µs each way, {} round(s) alternating ==",
            o.delay.as_micros(),
            o.rounds
        );
        let (mut near, mut far) = (Vec::new(), Vec::new());
        for _ in 0..o.rounds {
            near.push(measure(&o, w, t, Route::Loopback).files_per_sec());
            far.push(measure(&o, w, t, Route::Delayed(o.delay)).files_per_sec());
        }
        let ratios: Vec<f64> = near.iter().zip(&far).map(|(n, f)| f / n).collect();
        println!(
            "\nlatency summary: loopback {:.0} files/s, delayed {:.0} files/s (medians); \
             ratio delayed/loopback {:.2} (per round: {}; target ≥ 0.5)",
            median(near),
            median(far),
            median(ratios.clone()),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
