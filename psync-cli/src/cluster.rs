//! The cluster's commands: `sync --broker`, `worker`, `wait`, `status`,
//! `pause`, `resume`, `workers`, `cancel`, `shutdown`, `logs`. Each is a
//! thin layer over `psync_broker`.

use crate::args::{BrokerArgs, SyncArgs, WorkerArgs};
use crate::output::{self, Output};
use crate::{EVENT_QUEUE, FATAL, Fatal, PARTIAL, finish, signals};
use psync_broker::config::{Allow, BrokerUrl, WorkerConfig, check_task};
use psync_broker::{Broker, End, Level, LogEntry, RunId, Status, Worker, WorkerOptions};
use psync_core::{Change, Event, Kind, Registry, RelPath, Task};
use psync_generic::GenericCopier;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

impl BrokerArgs {
    /// Whether a broker is named (by the option or the environment).
    pub fn given(&self) -> bool {
        self.broker.is_some() || std::env::var_os("PSYNC_BROKER").is_some()
    }

    /// The broker named by the option or the environment, with the
    /// password and CA file given.
    pub fn connect(&self) -> Result<Broker, Fatal> {
        Ok(Broker::open(&self.url()?)?)
    }

    fn url(&self) -> Result<BrokerUrl, Fatal> {
        let mut url = BrokerUrl::from_env_and_args(
            self.broker.as_deref(),
            self.broker_password_file.as_deref(),
        )?;
        if let Some(ca) = &self.broker_ca {
            url = url.with_ca_file(ca);
        }
        Ok(url)
    }
}

/// `psync sync --broker`: prepares the run here (the target root, the
/// modify window), submits it, and follows it like a local run.
pub fn sync(args: &SyncArgs) -> Result<ExitCode, Fatal> {
    // `psync verify` and `--manifest` gather every file's event at the
    // end, and the run's event stream is capped (`LOG_MAXLEN`): a
    // follower that falls behind would lose lines of a manifest or a
    // verdict.
    for (given, flag) in [
        (args.verify_only, "--verify-only"),
        (args.manifest.is_some(), "--manifest"),
    ] {
        if given {
            return Err(format!("{flag} is not supported with a broker yet").into());
        }
    }
    let log = crate::open_log(args)?;
    let broker = args.broker.connect()?;
    // Before the target root is made: an unreachable broker changes nothing.
    broker.check()?;
    let (tx, rx) = crossbeam_channel::bounded(EVENT_QUEUE);
    let builder = args.builder(tx.clone());
    let syncer = builder.build()?;
    drop(builder);
    let (spec, seed) = syncer.prepare()?;
    drop(syncer);
    let run = broker.submit(&spec, &seed)?;
    if args.detach {
        println!("{run}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("psync: run {run} submitted");
    // A target root this run created is itemized first, as locally.
    if let Task::Dir {
        rel,
        dst: None,
        src,
        ..
    } = &seed
        && rel.is_root()
        && (args.itemize_changes || args.limits.wants_changes())
    {
        let _ = tx.send(Event::Itemize {
            path: RelPath::root(),
            change: Some(Change::new_entry(Kind::Dir)),
            kind: src.kind,
            link: None,
        });
    }
    let flags = (args.json, args.quiet, args.dry_run);
    let setup = |out: Output| {
        let mut out = out.limits(args, log);
        out.note(&crate::started(args));
        out
    };
    follow(&broker, run, flags, true, tx, rx, setup)
}

/// Follows `run` with the local run's output and exit status; an
/// interrupt cancels it.
fn follow(
    broker: &Broker,
    run: RunId,
    (json, quiet, dry_run): (bool, bool, bool),
    cancel: bool,
    tx: crossbeam_channel::Sender<Event>,
    rx: crossbeam_channel::Receiver<Event>,
    setup: impl FnOnce(Output) -> Output,
) -> Result<ExitCode, Fatal> {
    let quit = Arc::new(AtomicBool::new(false));
    signals::stop_on_interrupt(Arc::clone(&quit), Arc::new(AtomicBool::new(false)))?;
    let printer = setup(Output::with(json, quiet, dry_run, Arc::clone(&quit)));
    let printer = std::thread::Builder::new()
        .name("psync-output".into())
        .spawn(move || printer.consume(rx))?;
    let mut say = |e: &LogEntry| {
        if e.level >= Level::Warn {
            output::eprint(&e.line());
        }
    };
    let end = broker.follow_with(run, &tx, &mut say, &quit, cancel);
    drop(tx);
    let mut out = printer.join().map_err(|_| "the output thread panicked")?;
    let end = match end {
        Ok(e) => e,
        Err(e) => {
            out.close();
            return Err(e.into());
        }
    };
    // A run that ended without finishing says how, not "interrupted".
    let why = match end.end {
        End::Refused => "every live worker refused the run (their reasons are above)".into(),
        End::Cancelled => format!("run {run} was cancelled"),
        End::ErrorLimit if out.max_errors.is_none() => {
            // `psync wait`: the limit is the submitter's, not known here.
            out.summary(&end.report, PARTIAL);
            crate::deletes_skipped(&mut out, &end.report);
            let failed = end.report.stats.failed;
            out.stderr(&format!(
                "stopped after {failed} failed entries (--max-errors)"
            ));
            out.end(PARTIAL);
            return Ok(ExitCode::from(PARTIAL));
        }
        _ => return Ok(ExitCode::from(finish(&mut out, &end.report))),
    };
    out.summary(&end.report, FATAL);
    out.stderr(&why);
    out.end(FATAL);
    Ok(ExitCode::from(FATAL))
}

/// `psync wait RUN`.
pub fn wait(broker: &BrokerArgs, run: RunId, json: bool, quiet: bool) -> Result<ExitCode, Fatal> {
    let broker = broker.connect()?;
    let (tx, rx) = crossbeam_channel::bounded(EVENT_QUEUE);
    // Interrupted, `wait` stops following: the run goes on.
    follow(&broker, run, (json, quiet, false), false, tx, rx, |o| o)
}

/// `psync worker`.
pub fn worker(args: &WorkerArgs) -> Result<ExitCode, Fatal> {
    let cfg = match &args.config {
        Some(path) => WorkerConfig::from_file(path)?,
        None => WorkerConfig::default(),
    };
    let mut b = args.broker.clone();
    b.broker = b.broker.or(cfg.broker.clone());
    b.broker_password_file = b.broker_password_file.or(cfg.password_file.clone());
    b.broker_ca = b.broker_ca.or(cfg.ca_file.clone());
    let broker = b.connect()?;
    let allow = Allow::new(args.allow.iter().chain(&cfg.allow))?;
    let threads = match (args.threads, cfg.threads) {
        (Some(n), _) => usize::from(n),
        (None, Some(n)) => n,
        (None, None) => usize::from(crate::args::default_threads()),
    };
    let mut opts = WorkerOptions::new(threads);
    if let Some(n) = args.name.as_ref().or(cfg.name.as_ref()) {
        opts.name = n.clone();
    }
    let secs = |s: f64, what: &str| -> Result<Duration, Fatal> {
        Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("--{what} must be a positive number of seconds, not {s}").into())
    };
    opts.lease = secs(args.lease, "lease")?;
    opts.grace = Duration::try_from_secs_f64(args.grace)
        .map_err(|_| format!("bad --grace {}", args.grace))?;
    opts.tick = secs(args.heartbeat, "heartbeat")?;
    opts.alive_ttl = opts.tick * 10;
    if opts.lease < opts.tick * 3 {
        return Err("--lease must be at least 3 heartbeats".into());
    }
    let accept: psync_broker::Accept = Arc::new(move |spec| {
        allow
            .check_spec(&spec.src, &spec.dst)
            .map_err(|e| e.to_string())
    });
    let make = psync_broker::engines(|| {
        let mut copiers = Registry::new();
        copiers.set_default(Arc::new(GenericCopier::new()));
        // Configured per run from its spec (`RunSpec::copier_options`).
        for (src, dst, copier) in psync_lustre::copiers(&psync_lustre::LustreOptions::default()) {
            copiers.register(src, dst, copier);
        }
        psync_core::EngineContext::new(copiers)
    });
    let check: psync_broker::CheckTask = Arc::new(|t| check_task(t).map_err(|e| e.to_string()));
    let sink: psync_broker::OutageSink = Arc::new(|o| output::eprint(&o.describe()));
    let worker = Worker::new(broker.client().clone(), opts, accept, make, check, sink);
    let leave = Arc::new(AtomicBool::new(false));
    let hurry = Arc::new(AtomicBool::new(false));
    {
        let (leave, hurry) = (Arc::clone(&leave), Arc::clone(&hurry));
        ctrlc::set_handler(move || {
            if leave.swap(true, Ordering::SeqCst) {
                hurry.store(true, Ordering::SeqCst);
            }
        })?;
    }
    worker.run(&leave, &hurry)?;
    Ok(ExitCode::SUCCESS)
}

/// `psync status`.
pub fn status(broker: &BrokerArgs, run: Option<RunId>, json: bool) -> Result<ExitCode, Fatal> {
    let s = broker.connect()?.status(run)?;
    let mut out = std::io::stdout().lock();
    let printed = if json {
        writeln!(out, "{}", serde_json::to_string(&s)?)
    } else {
        print_status(&mut out, &s)
    };
    match printed {
        // `psync status | head`: the reader had enough.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        r => Ok(r.map(|()| ExitCode::SUCCESS)?),
    }
}

fn print_status(out: &mut impl Write, s: &Status) -> std::io::Result<()> {
    use crate::units::{byte_rate as rate, bytes};
    writeln!(out, "WORKERS {}", s.workers.len())?;
    for w in &s.workers {
        writeln!(
            out,
            "  {:<24} {:<8} host {} threads {} busy {} tasks {} copied {} at {} flushes {} ({} ms) heartbeat {:.1}s ago",
            w.name,
            w.state,
            w.host,
            w.threads,
            w.busy,
            w.tasks_done,
            bytes(w.bytes),
            rate(w.bytes_per_sec as f64),
            w.syncs,
            w.sync_ms,
            w.heartbeat_age_ms as f64 / 1000.0
        )?;
        for (i, c) in w.current.iter().enumerate() {
            writeln!(out, "      thread {i}: {c}")?;
        }
    }
    writeln!(out, "RUNS {}", s.runs.len())?;
    for r in &s.runs {
        let c = &r.counts;
        // An ETA of totals that still grow would be too early.
        let walk_done = c.dirs > 0 && c.dirs_spawned_ids == c.dirs_run_ids;
        let eta = match r.eta_secs {
            _ if !walk_done => " scanning".to_string(),
            Some(e) => format!(" eta {e:.0}s"),
            None => String::new(),
        };
        writeln!(
            out,
            "  {} {:<9} {} -> {}\n      entries {}/{} bytes {}/{} at {} ({:.0} entries/s){eta} errors {} queued {} taken {} elapsed {:.0}s",
            r.id,
            r.state,
            r.src,
            r.dst,
            c.done,
            c.scanned,
            bytes(c.bytes_copied),
            bytes(c.bytes_to_copy),
            rate(r.bytes_per_sec),
            r.entries_per_sec,
            c.failed,
            r.queued,
            r.taken,
            r.elapsed_secs
        )?;
    }
    Ok(())
}

/// `psync pause`, `resume`, `cancel`, `shutdown`, `workers`: one line
/// saying what was done.
pub fn pause(broker: &BrokerArgs, run: Option<RunId>, kill: bool) -> Result<ExitCode, Fatal> {
    let runs = broker.connect()?.pause(run, kill)?;
    say_runs(
        if kill {
            "paused (tasks under way stopped)"
        } else {
            "paused"
        },
        &runs,
    );
    Ok(ExitCode::SUCCESS)
}

/// `psync resume`.
pub fn resume(broker: &BrokerArgs, run: Option<RunId>) -> Result<ExitCode, Fatal> {
    let runs = broker.connect()?.resume(run)?;
    say_runs("resumed", &runs);
    Ok(ExitCode::SUCCESS)
}

fn say_runs(what: &str, runs: &[RunId]) {
    if runs.is_empty() {
        eprintln!("psync: no run under way");
    }
    for r in runs {
        println!("{r} {what}");
    }
}

/// `psync cancel RUN`.
pub fn cancel(broker: &BrokerArgs, run: RunId) -> Result<ExitCode, Fatal> {
    if broker.connect()?.cancel(run)? {
        println!("{run} cancelled");
    } else {
        println!("{run} had ended already");
    }
    Ok(ExitCode::SUCCESS)
}

/// `psync shutdown`.
pub fn shutdown(broker: &BrokerArgs) -> Result<ExitCode, Fatal> {
    broker.connect()?.shutdown()?;
    println!("workers asked to leave");
    Ok(ExitCode::SUCCESS)
}

/// `psync workers --threads N`.
pub fn workers(broker: &BrokerArgs, threads: u16, name: Option<&str>) -> Result<ExitCode, Fatal> {
    let names = broker.connect()?.set_threads(name, usize::from(threads))?;
    if names.is_empty() {
        eprintln!("psync: no live worker matches");
        return Ok(ExitCode::from(FATAL));
    }
    for n in names {
        println!("{n} -> {threads} threads");
    }
    Ok(ExitCode::SUCCESS)
}

/// `psync logs`.
pub fn logs(
    broker: &BrokerArgs,
    run: Option<RunId>,
    level: Level,
    follow: bool,
    json: bool,
) -> Result<ExitCode, Fatal> {
    let broker = broker.connect()?;
    let quit = Arc::new(AtomicBool::new(false));
    if follow {
        let q = Arc::clone(&quit);
        ctrlc::set_handler(move || q.store(true, Ordering::SeqCst))?;
    }
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    broker.logs(run, level, follow, &quit, &mut |e| {
        let line = if json {
            serde_json::to_string(e).unwrap_or_default()
        } else {
            e.line()
        };
        if failed.is_none()
            && let Err(err) = writeln!(out, "{line}").and_then(|()| out.flush())
        {
            failed = Some(err);
            quit.store(true, Ordering::SeqCst);
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
