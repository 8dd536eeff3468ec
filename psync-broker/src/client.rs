//! The broker as the submitter and the operator see it: submit a run and
//! follow it, and the cluster's commands (status, pause, resume, thread
//! counts, cancel, shutdown, logs). Every call works from any node: all
//! state is on the server.

use crate::completion::{Completion, END_TTL_SECS, RunKeys};
use crate::conn::{Conn, OutageSink};
use crate::keys::{self, GROUP, LOG, RUNS, WORKERS};
use crossbeam_channel::Sender;
use psync_core::{Counts, Event, Flush, Report, RunSpec, Stats, Stopped, Task};
use redis::{Script, Value};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Why a broker call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker could not be reached (at the first contact, which does
    /// not wait), or refused the credentials.
    #[error("broker {broker}: {source}")]
    Unreachable {
        /// The broker's URL, without its password.
        broker: String,
        /// The cause.
        source: redis::RedisError,
    },
    /// A broker call failed for another reason than an outage.
    #[error("broker: {0}")]
    Redis(#[from] redis::RedisError),
    /// Refused: the reason.
    #[error("{0}")]
    Refused(String),
    /// A broker URL, password, CA file or worker setting is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// No run of this id on the broker (or it expired).
    #[error("no run {0} on the broker")]
    NoRun(RunId),
    /// Following a run was interrupted; the run goes on.
    #[error("stopped following run {0}, which goes on (psync wait {0} follows it again)")]
    Interrupted(RunId),
    /// A worker could not start a thread.
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The run's spec or seed could not be encoded.
    #[error("cannot encode the run: {0}")]
    Encode(String),
}

/// A run's id as the broker names it (16 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct RunId(pub u64);

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for RunId {
    type Err = String;
    fn from_str(s: &str) -> Result<RunId, String> {
        u64::from_str_radix(s, 16)
            .map(RunId)
            .map_err(|_| format!("not a run id (16 hex digits): {s:?}"))
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum End {
    /// Every task completed.
    Done,
    /// `psync cancel` (or the submitter's interrupt).
    Cancelled,
    /// A worker's target could not be written (full, read-only).
    Stopped,
    /// Its failed entries reached `--max-errors`.
    ErrorLimit,
    /// Every live worker refused the run (its roots outside their
    /// `--allow`, not mounted there, a spec of another version).
    Refused,
}

/// A followed run's end: its report (counters summed over every worker)
/// and how it ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// As a local run's report: `interrupted` for a cancelled run,
    /// `stopped` for a stopped one.
    pub report: Report,
    /// How it ended.
    pub end: End,
}

/// Severity of a log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Itemized changes, workers joining and leaving.
    Info,
    /// Warnings, skipped entries, reclaimed tasks, outages.
    Warn,
    /// Failed entries, refused runs and tasks.
    Error,
}

impl Level {
    fn parse(s: &str) -> Level {
        match s {
            "error" => Level::Error,
            "warn" => Level::Warn,
            _ => Level::Info,
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        match s {
            "error" | "warn" | "info" => Ok(Level::parse(s)),
            _ => Err(format!("not a level (error, warn, info): {s:?}")),
        }
    }
}

/// One entry of a run's event log or of the cluster log.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// Milliseconds since the epoch (the entry's stream id).
    pub time_ms: u64,
    /// The run it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The worker that wrote it.
    pub worker: String,
    /// Its severity.
    pub level: Level,
    /// A run's event (itemized change, warning, error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
    /// A worker's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl LogEntry {
    /// The entry as one line of text.
    pub fn line(&self) -> String {
        let what = match (&self.event, &self.message) {
            (Some(e @ Event::Itemize { .. }), _) => e.itemize_line().unwrap_or_default(),
            (Some(Event::Error { message, .. }), _) => message.clone(),
            (Some(Event::Warning { path, message, .. }), _) => format!("{path}: {message}"),
            (Some(Event::Skipped { path, reason }), _) => format!("skipped {path}: {reason}"),
            (Some(e), _) => format!("{e:?}"),
            (None, Some(m)) => m.clone(),
            (None, None) => String::new(),
        };
        let run = self
            .run
            .as_deref()
            .map(|r| format!(" run {r}"))
            .unwrap_or_default();
        let level = match self.level {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
        };
        format!(
            "{} {level:5} {}{run}: {what}",
            fmt_time(self.time_ms),
            self.worker
        )
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of milliseconds since the epoch.
fn fmt_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A worker as `psync status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    /// Its name.
    pub name: String,
    /// Its host and process id.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its heartbeat key exists.
    pub alive: bool,
    /// `running`, `leaving` or `left` (`gone` when its heartbeat expired).
    pub state: String,
    /// Executor threads.
    pub threads: u64,
    /// Threads running a task.
    pub busy: u64,
    /// Tasks it completed.
    pub tasks_done: u64,
    /// Bytes it copied.
    pub bytes: u64,
    /// Bytes per second over its last heartbeat interval.
    pub bytes_per_sec: u64,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// `syncfs` calls it made before reporting tasks (durability), and
    /// the milliseconds they took.
    pub syncs: u64,
    /// See `syncs`.
    pub sync_ms: u64,
    /// What each busy thread is on.
    pub current: Vec<String>,
}

/// A run as `psync status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Its id.
    pub id: String,
    /// Its roots.
    pub src: String,
    /// The target root.
    pub dst: String,
    /// `running`, `paused`, `done`, `cancelled`, `stopped` or `refused`.
    pub state: String,
    /// Its counters, summed over the tasks completed so far.
    pub counts: Counts,
    /// Tasks waiting in its stream (not yet taken).
    pub queued: u64,
    /// Tasks taken and not yet finished.
    pub taken: u64,
    /// Seconds since it was submitted (to its end, once ended).
    pub elapsed_secs: f64,
    /// Entries per second.
    pub entries_per_sec: f64,
    /// Bytes copied per second.
    pub bytes_per_sec: f64,
    /// Seconds left, from the bytes still to copy at the rate so far
    /// (none until bytes were copied).
    pub eta_secs: Option<f64>,
}

/// What `psync status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Registered workers.
    pub workers: Vec<WorkerInfo>,
    /// Runs under way, then runs ended in the last 7 days (newest first,
    /// at most 10), or the one run asked for.
    pub runs: Vec<RunInfo>,
}

/// A handle on the broker (see the module's docs).
pub struct Broker {
    client: redis::Client,
    shown: String,
    /// The URL it was opened with: a failed first contact is explained
    /// with its hints ([`crate::config::BrokerUrl::connect`]).
    url: Option<crate::config::BrokerUrl>,
    sink: OutageSink,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// The broker `client` connects to; `shown` names it in errors (its
    /// URL without the password).
    pub fn new(client: redis::Client, shown: impl Into<String>) -> Broker {
        Broker {
            client,
            shown: shown.into(),
            url: None,
            sink: Arc::new(|o| eprintln!("psync: {}", o.describe())),
        }
    }

    /// The broker at `url` (see [`crate::config::BrokerUrl`]).
    ///
    /// # Errors
    /// The URL's settings do not make a client (a CA file that cannot
    /// be read).
    pub fn open(url: &crate::config::BrokerUrl) -> Result<Broker, crate::config::ConfigError> {
        let mut b = Broker::new(url.client()?, url.to_string());
        b.url = Some(url.clone());
        Ok(b)
    }

    /// Contacts the broker once, without waiting for it: what a
    /// submitter checks before it prepares a run (which creates the
    /// target root).
    ///
    /// # Errors
    /// The broker cannot be reached, or refuses the credentials.
    pub fn check(&self) -> Result<(), BrokerError> {
        self.reach().map(drop)
    }

    /// Where outages of the broker are reported while a call waits for
    /// it to come back (default: a line on stderr).
    pub fn on_outage(&mut self, sink: OutageSink) -> &mut Broker {
        self.sink = sink;
        self
    }

    /// The client, for a [`crate::Worker`].
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    fn conn(&self) -> Conn {
        Conn::new(
            self.client.clone(),
            Duration::from_secs(10),
            Arc::clone(&self.sink),
        )
    }

    /// A first contact that fails at once when the broker is not there.
    fn reach(&self) -> Result<Conn, BrokerError> {
        let mut con = self.conn();
        if let Err(source) = con.once(|c| redis::cmd("PING").query::<String>(c)) {
            // The URL's own connection says why, with a hint where one
            // helps (TLS or not, a cluster's CA).
            if let Some(url) = &self.url
                && let Err(e) = url.connect(Duration::from_secs(5))
            {
                return Err(BrokerError::Config(e));
            }
            return Err(BrokerError::Unreachable {
                broker: self.shown.clone(),
                source,
            });
        }
        Ok(con)
    }

    /// Submits a run (its spec and first task, from
    /// [`psync_core::Syncer::prepare`]): workers take its tasks at once.
    ///
    /// # Errors
    /// The broker cannot be reached, or a run of this id exists.
    pub fn submit(&self, spec: &RunSpec, seed: &Task) -> Result<RunId, BrokerError> {
        // Durable when done (ADR 016): without per-task flushes, each
        // worker flushes its writes before it reports them (one `syncfs`
        // per round; per-file flushes on FUSE, where `syncfs` does not
        // reach the daemon), never only at the run's end on one node.
        let mut spec = spec.clone();
        if spec.flush == Flush::Off {
            spec.flush = Flush::End;
        }
        // Workers elsewhere take roots only as absolute paths: relative
        // ones are resolved here, where the run was prepared.
        for root in [&mut spec.src, &mut spec.dst] {
            *root = std::path::absolute(&*root).map_err(|e| {
                BrokerError::Refused(format!("{}: cannot make it absolute: {e}", root.display()))
            })?;
        }
        let spec = &spec;
        let run = RunId(spec.run_id);
        let keys = RunKeys::new(run.0);
        let spec_bytes = spec
            .encode()
            .map_err(|e| BrokerError::Encode(e.to_string()))?;
        let seed_bytes = seed
            .encode()
            .map_err(|e| BrokerError::Encode(e.to_string()))?;
        let mut con = self.reach()?;
        let never = AtomicBool::new(false);
        let fresh: bool = con.call(&never, |c| {
            redis::cmd("HSETNX")
                .arg(keys.state())
                .arg("spec")
                .arg(&spec_bytes)
                .query(c)
        })?;
        if !fresh {
            return Err(BrokerError::Refused(format!(
                "a run {run} exists on the broker"
            )));
        }
        let fields = [
            ("src", spec.src.display().to_string()),
            ("dst", spec.dst.display().to_string()),
            ("submitted", keys::now_ms().to_string()),
            ("copier", spec.copier.clone()),
            ("mw", spec.plan.modify_window_ns.to_string()),
        ];
        con.call(&never, |c| {
            redis::cmd("HSET")
                .arg(keys.state())
                .arg(&fields[..])
                .exec(c)?;
            match redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(keys.tasks())
                .arg(GROUP)
                .arg(0)
                .arg("MKSTREAM")
                .exec(c)
            {
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                r => r,
            }
        })?;
        let completion = Completion::new(run.0);
        con.call(&never, |c| completion.seed(c, seed.id(run.0), &seed_bytes))?;
        con.call(&never, |c| {
            redis::cmd("SADD").arg(RUNS).arg(run.to_string()).exec(c)
        })?;
        Ok(run)
    }

    /// Follows `run` to its end: its events (from the first one the log
    /// still holds) and a [`Event::Progress`] of its counters every
    /// 250 ms go to `events`, workers' messages about it to `messages`.
    /// Setting `quit` cancels the run (the submitter's interrupt).
    ///
    /// # Errors
    /// No such run, or a broker call failed for another reason than an
    /// outage (outages are waited out).
    pub fn follow(
        &self,
        run: RunId,
        events: &Sender<Event>,
        messages: &mut dyn FnMut(&LogEntry),
        quit: &AtomicBool,
    ) -> Result<RunEnd, BrokerError> {
        self.follow_with(run, events, messages, quit, true)
    }

    /// [`Broker::follow`], but with `cancel` false setting `quit` only
    /// stops following (`psync wait`: the run goes on), with
    /// [`BrokerError::Interrupted`].
    ///
    /// # Errors
    /// As [`Broker::follow`], and [`BrokerError::Interrupted`].
    pub fn follow_with(
        &self,
        run: RunId,
        events: &Sender<Event>,
        messages: &mut dyn FnMut(&LogEntry),
        quit: &AtomicBool,
        cancel: bool,
    ) -> Result<RunEnd, BrokerError> {
        let keys = RunKeys::new(run.0);
        let mut con = self.reach()?;
        let never = AtomicBool::new(false);
        let state = self.state(&mut con, &keys)?;
        let submitted = state
            .get("submitted")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut last = "0-0".to_string();
        let mut progress = Instant::now();
        let mut refused_check = Instant::now();
        let mut cancelled = false;
        loop {
            if quit.load(Ordering::Relaxed) && !cancelled {
                if !cancel {
                    return Err(BrokerError::Interrupted(run));
                }
                cancelled = true;
                self.cancel(run)?;
            }
            // The state before the log: the last finish logs its events
            // and ends the run in one step, so a log read after a state
            // with `end` holds them all.
            let ended = self.state(&mut con, &keys)?;
            let read: Value = con.call(&never, |c| {
                let mut cmd = redis::cmd("XREAD");
                cmd.arg("COUNT").arg(1000);
                if !ended.contains_key("end") {
                    cmd.arg("BLOCK").arg(200);
                }
                cmd.arg("STREAMS").arg(keys.events()).arg(&last).query(c)
            })?;
            let entries = log_entries(&read, Some(run));
            let drained = entries.is_empty();
            for (id, entry) in entries {
                last = id;
                match entry.event {
                    Some(ev) => {
                        let _ = events.send(ev);
                    }
                    None => messages(&entry),
                }
            }
            if progress.elapsed() >= Duration::from_millis(250) || ended.contains_key("end") {
                progress = Instant::now();
                let counts = self.counts(&mut con, &keys)?;
                let elapsed = Duration::from_millis(keys::now_ms().saturating_sub(submitted));
                let _ = events.send(Event::Progress(snapshot(&counts, elapsed)));
            }
            if refused_check.elapsed() >= Duration::from_secs(1) {
                refused_check = Instant::now();
                if !ended.contains_key("end")
                    && self.refused_by_all(&mut con, &keys)?
                    && end_run(&mut con, &never, run.0, "refused", None)?
                {
                    cluster_log(&mut con, "error", run, "run refused by every live worker")?;
                }
            }
            let Some(end) = ended.get("end") else {
                continue;
            };
            if !drained {
                continue;
            }
            let counts = self.counts(&mut con, &keys)?;
            let till = ended
                .get("ended")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(keys::now_ms);
            let elapsed = Duration::from_millis(till.saturating_sub(submitted));
            let mw = ended.get("mw").and_then(|s| s.parse().ok()).unwrap_or(0);
            let copier = ended.get("copier").cloned().unwrap_or_default();
            let mut report = Report::new(snapshot(&counts, elapsed), copier, "redis", mw);
            let end = match end.as_str() {
                "done" => End::Done,
                "stopped" => End::Stopped,
                "refused" => End::Refused,
                "max-errors" => End::ErrorLimit,
                _ => End::Cancelled,
            };
            report.interrupted = matches!(end, End::Cancelled | End::Refused | End::ErrorLimit);
            report.stopped = ended
                .get("stopped")
                .and_then(|j| serde_json::from_str::<Stopped>(j).ok());
            return Ok(RunEnd { report, end });
        }
    }

    /// Whether there are live workers and every one refused the run.
    fn refused_by_all(&self, con: &mut Conn, keys: &RunKeys) -> Result<bool, BrokerError> {
        let never = AtomicBool::new(false);
        let names: Vec<String> =
            con.call(&never, |c| redis::cmd("SMEMBERS").arg(WORKERS).query(c))?;
        let mut live = 0;
        for n in names {
            let (alive, refused): (bool, bool) = con.call(&never, |c| {
                redis::pipe()
                    .exists(keys::alive(&n))
                    .hexists(keys.state(), format!("refused:{n}"))
                    .query(c)
            })?;
            if alive {
                live += 1;
                if !refused {
                    return Ok(false);
                }
            }
        }
        Ok(live > 0)
    }

    fn state(
        &self,
        con: &mut Conn,
        keys: &RunKeys,
    ) -> Result<HashMap<String, String>, BrokerError> {
        let never = AtomicBool::new(false);
        let fields = [
            "submitted",
            "end",
            "ended",
            "stopped",
            "mw",
            "copier",
            "src",
            "dst",
            "paused",
        ];
        let vals: Vec<Option<String>> = con.call(&never, |c| {
            redis::cmd("HMGET")
                .arg(keys.state())
                .arg(&fields[..])
                .query(c)
        })?;
        if vals[0].is_none() {
            return Err(BrokerError::NoRun(RunId(run_of(keys))));
        }
        Ok(fields
            .iter()
            .zip(vals)
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect())
    }

    fn counts(&self, con: &mut Conn, keys: &RunKeys) -> Result<Counts, BrokerError> {
        let never = AtomicBool::new(false);
        let m: HashMap<String, u64> = con.call(&never, |c| {
            redis::cmd("HGETALL").arg(keys.counts()).query(c)
        })?;
        let fields: Vec<(String, u64)> = m.into_iter().collect();
        Ok(keys::counts_from(&fields))
    }

    /// Cancels a run: it ends at once; workers stop its tasks under way
    /// and remove what they made for copies that will not finish. False
    /// when it had ended already.
    ///
    /// # Errors
    /// No such run, or the broker failed.
    pub fn cancel(&self, run: RunId) -> Result<bool, BrokerError> {
        let mut con = self.reach()?;
        self.state(&mut con, &RunKeys::new(run.0))?;
        let never = AtomicBool::new(false);
        let ended = end_run(&mut con, &never, run.0, "cancelled", None)?;
        if ended {
            cluster_log(&mut con, "warn", run, "run cancelled")?;
        }
        Ok(ended)
    }

    /// The runs a command without a run id is for: every run under way.
    fn runs_or(&self, con: &mut Conn, run: Option<RunId>) -> Result<Vec<RunId>, BrokerError> {
        if let Some(r) = run {
            self.state(con, &RunKeys::new(r.0))?;
            return Ok(vec![r]);
        }
        let never = AtomicBool::new(false);
        let ids: Vec<String> = con.call(&never, |c| redis::cmd("SMEMBERS").arg(RUNS).query(c))?;
        let mut runs: Vec<RunId> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        runs.sort_by_key(|r| r.0);
        Ok(runs)
    }

    /// Pauses `run` (every run under way when `None`): nothing new starts;
    /// tasks under way finish, or with `kill` stop at once and go back to
    /// the queue. Returns the runs paused.
    ///
    /// # Errors
    /// No such run, or the broker failed.
    pub fn pause(&self, run: Option<RunId>, kill: bool) -> Result<Vec<RunId>, BrokerError> {
        let mut con = self.reach()?;
        let runs = self.runs_or(&mut con, run)?;
        let never = AtomicBool::new(false);
        for r in &runs {
            let how = if kill { "kill" } else { "1" };
            con.call(&never, |c| {
                redis::cmd("HSET")
                    .arg(RunKeys::new(r.0).state())
                    .arg("paused")
                    .arg(how)
                    .exec(c)
            })?;
        }
        Ok(runs)
    }

    /// Resumes `run` (every paused run when `None`). Returns the runs.
    ///
    /// # Errors
    /// No such run, or the broker failed.
    pub fn resume(&self, run: Option<RunId>) -> Result<Vec<RunId>, BrokerError> {
        let mut con = self.reach()?;
        let runs = self.runs_or(&mut con, run)?;
        let never = AtomicBool::new(false);
        for r in &runs {
            con.call(&never, |c| {
                redis::cmd("HDEL")
                    .arg(RunKeys::new(r.0).state())
                    .arg("paused")
                    .exec(c)
            })?;
        }
        Ok(runs)
    }

    /// Sets the thread count of the live workers whose names match
    /// `pattern` (`*` and `?` wildcards; all when `None`); they grow or
    /// shrink within a heartbeat. Returns their names.
    ///
    /// # Errors
    /// The broker failed.
    pub fn set_threads(
        &self,
        pattern: Option<&str>,
        threads: usize,
    ) -> Result<Vec<String>, BrokerError> {
        let mut con = self.reach()?;
        let never = AtomicBool::new(false);
        let mut names: Vec<String> =
            con.call(&never, |c| redis::cmd("SMEMBERS").arg(WORKERS).query(c))?;
        names.retain(|n| pattern.is_none_or(|p| glob(p, n)));
        names.sort();
        let mut set = Vec::new();
        for n in names {
            let alive: bool = con.call(&never, |c| {
                redis::cmd("EXISTS").arg(keys::alive(&n)).query(c)
            })?;
            if alive {
                con.call(&never, |c| {
                    redis::cmd("HSET")
                        .arg(keys::worker(&n))
                        .arg("want")
                        .arg(threads)
                        .exec(c)
                })?;
                set.push(n);
            }
        }
        Ok(set)
    }

    /// Asks every live worker to leave (each finishes or hands back its
    /// tasks); workers started later are not affected.
    ///
    /// # Errors
    /// The broker failed.
    pub fn shutdown(&self) -> Result<(), BrokerError> {
        let mut con = self.reach()?;
        let never = AtomicBool::new(false);
        con.call(&never, |c| {
            redis::cmd("HSET")
                .arg(keys::CONTROL)
                .arg("shutdown")
                .arg(keys::now_ms())
                .exec(c)
        })?;
        Ok(())
    }

    /// Workers and runs (`run`: that one only).
    ///
    /// # Errors
    /// No such run, or the broker failed.
    pub fn status(&self, run: Option<RunId>) -> Result<Status, BrokerError> {
        let mut con = self.reach()?;
        let never = AtomicBool::new(false);
        let mut names: Vec<String> =
            con.call(&never, |c| redis::cmd("SMEMBERS").arg(WORKERS).query(c))?;
        names.sort();
        let mut workers = Vec::new();
        let now = keys::now_ms();
        for n in names {
            let (h, alive): (HashMap<String, String>, bool) = con.call(&never, |c| {
                redis::pipe()
                    .hgetall(keys::worker(&n))
                    .exists(keys::alive(&n))
                    .query(c)
            })?;
            if h.is_empty() {
                // Its entry expired (a day after its last heartbeat).
                con.call(&never, |c| redis::cmd("SREM").arg(WORKERS).arg(&n).exec(c))?;
                continue;
            }
            let num = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let mut current: Vec<(usize, String)> = h
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("t:")?.parse().ok()?, v.clone())))
                .filter(|(_, v)| !v.is_empty())
                .collect();
            current.sort();
            let mut state = h.get("state").cloned().unwrap_or_default();
            if !alive && state != "left" {
                state = "gone".into();
            }
            workers.push(WorkerInfo {
                host: h.get("host").cloned().unwrap_or_default(),
                pid: num("pid") as u32,
                alive,
                state,
                threads: num("threads"),
                busy: num("busy"),
                tasks_done: num("done"),
                bytes: num("bytes"),
                bytes_per_sec: num("rate"),
                heartbeat_age_ms: now.saturating_sub(num("hb")),
                syncs: num("syncs"),
                sync_ms: num("sync_ms"),
                current: current.into_iter().map(|(_, v)| v).collect(),
                name: n,
            });
        }
        let ids: Vec<RunId> = match run {
            Some(r) => vec![r],
            None => {
                let mut ids = self.runs_or(&mut con, None)?;
                let cutoff = now.saturating_sub(END_TTL_SECS * 1000);
                let ended: Vec<String> = con.call(&never, |c| {
                    redis::pipe()
                        .cmd("ZREMRANGEBYSCORE")
                        .arg("psync:ended")
                        .arg(0)
                        .arg(cutoff)
                        .ignore()
                        .cmd("ZREVRANGE")
                        .arg("psync:ended")
                        .arg(0)
                        .arg(9)
                        .query::<(Vec<String>,)>(c)
                        .map(|(v,)| v)
                })?;
                ids.extend(ended.iter().filter_map(|s| s.parse::<RunId>().ok()));
                ids
            }
        };
        let mut runs = Vec::new();
        for id in ids {
            let keys = RunKeys::new(id.0);
            let st = match self.state(&mut con, &keys) {
                Ok(s) => s,
                Err(BrokerError::NoRun(_)) if run.is_none() => continue,
                Err(e) => return Err(e),
            };
            let counts = self.counts(&mut con, &keys)?;
            let (queued, taken): (u64, u64) = con.call(&never, |c| {
                let len: u64 = redis::cmd("XLEN").arg(keys.tasks()).query(c)?;
                let pending: Value =
                    match redis::cmd("XPENDING").arg(keys.tasks()).arg(GROUP).query(c) {
                        Ok(v) => v,
                        Err(_) => Value::Nil,
                    };
                let taken = match &pending {
                    Value::Array(p) => p.first().and_then(|v| match v {
                        Value::Int(n) => Some(*n as u64),
                        _ => None,
                    }),
                    _ => None,
                }
                .unwrap_or(0);
                Ok((len.saturating_sub(taken), taken))
            })?;
            let submitted: u64 = st
                .get("submitted")
                .and_then(|s| s.parse().ok())
                .unwrap_or(now);
            let till: u64 = st.get("ended").and_then(|s| s.parse().ok()).unwrap_or(now);
            let elapsed = (till.saturating_sub(submitted) as f64 / 1000.0).max(1e-3);
            let state = match (st.get("end"), st.get("paused")) {
                (Some(e), _) => e.clone(),
                (None, Some(_)) => "paused".into(),
                (None, None) => "running".into(),
            };
            let bytes_per_sec = counts.bytes_copied as f64 / elapsed;
            let left = counts.bytes_to_copy.saturating_sub(counts.bytes_copied);
            runs.push(RunInfo {
                id: id.to_string(),
                src: st.get("src").cloned().unwrap_or_default(),
                dst: st.get("dst").cloned().unwrap_or_default(),
                state,
                queued,
                taken,
                elapsed_secs: elapsed,
                entries_per_sec: counts.done as f64 / elapsed,
                bytes_per_sec,
                eta_secs: (bytes_per_sec > 0.0 && !st.contains_key("end"))
                    .then(|| left as f64 / bytes_per_sec),
                counts,
            });
        }
        Ok(Status { workers, runs })
    }

    /// The event log of `run`, or the cluster log without one: entries
    /// at `level` or above, from the oldest kept, to `sink`; with
    /// `follow`, then new ones as they come, until `quit` is set.
    ///
    /// # Errors
    /// No such run, or the broker failed.
    pub fn logs(
        &self,
        run: Option<RunId>,
        level: Level,
        follow: bool,
        quit: &AtomicBool,
        sink: &mut dyn FnMut(&LogEntry),
    ) -> Result<(), BrokerError> {
        let mut con = self.reach()?;
        let stream = match run {
            Some(r) => {
                let keys = RunKeys::new(r.0);
                self.state(&mut con, &keys)?;
                keys.events()
            }
            None => LOG.to_string(),
        };
        let mut last = "0-0".to_string();
        loop {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT").arg(1000);
            if follow {
                cmd.arg("BLOCK").arg(200);
            }
            cmd.arg("STREAMS").arg(&stream).arg(&last);
            let read: Value = con.call(quit, |c| cmd.query(c))?;
            let entries = log_entries(&read, run);
            let empty = entries.is_empty();
            for (id, e) in entries {
                last = id;
                if e.level >= level {
                    sink(&e);
                }
            }
            if quit.load(Ordering::Relaxed) || (empty && !follow) {
                return Ok(());
            }
        }
    }
}

/// A line in the cluster log from this process (an operator's command
/// or a follower), named `psync@HOST`.
fn cluster_log(con: &mut Conn, level: &str, run: RunId, msg: &str) -> redis::RedisResult<()> {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let never = AtomicBool::new(false);
    con.call(&never, |c| {
        redis::cmd("XADD")
            .arg(LOG)
            .arg("MAXLEN")
            .arg("~")
            .arg(keys::LOG_MAXLEN)
            .arg("*")
            .arg("l")
            .arg(level)
            .arg("w")
            .arg(format!("psync@{host}"))
            .arg("m")
            .arg(msg)
            .arg("r")
            .arg(run.to_string())
            .exec(c)
    })
}

/// Ends a run that did not complete (`how`: `cancelled` or `stopped`,
/// with the stop as JSON), once, and deletes its task records. True when
/// this call ended it.
pub(crate) fn end_run(
    con: &mut Conn,
    quit: &AtomicBool,
    run: u64,
    how: &str,
    stopped: Option<&str>,
) -> redis::RedisResult<bool> {
    let keys = RunKeys::new(run);
    let script = Script::new(include_str!("lua/end.lua"));
    let ended: i64 = con.call(quit, |c| {
        script
            .key(keys.state())
            .key(keys.tasks())
            .key(keys.counts())
            .key(keys.events())
            .arg(how)
            .arg(stopped.unwrap_or(""))
            .arg(format!("{run:016x}"))
            .arg(END_TTL_SECS)
            .invoke(c)
    })?;
    // No script writes a record of an ended run: these are the last.
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = con.call(quit, |c| {
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(keys.task_pattern())
                .arg("COUNT")
                .arg(1000)
                .query(c)
        })?;
        if !found.is_empty() {
            con.call(quit, |c| redis::cmd("UNLINK").arg(&found).exec(c))?;
        }
        if next == 0 {
            return Ok(ended == 1);
        }
        cursor = next;
    }
}

fn run_of(keys: &RunKeys) -> u64 {
    let p = keys.prefix();
    p.find('{')
        .and_then(|i| u64::from_str_radix(&p[i + 1..i + 17], 16).ok())
        .unwrap_or(0)
}

/// A snapshot of `counts` at `elapsed`.
fn snapshot(counts: &Counts, elapsed: Duration) -> psync_core::Snapshot {
    let stats = Stats::default();
    stats.add(counts);
    stats.snapshot(elapsed)
}

/// `*` and `?` wildcards.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn field(fields: &[Value], name: &str) -> Option<Vec<u8>> {
    fields
        .chunks(2)
        .find_map(|kv| match (kv.first(), kv.get(1)) {
            (Some(Value::BulkString(k)), Some(Value::BulkString(v))) if k == name.as_bytes() => {
                Some(v.clone())
            }
            _ => None,
        })
}

/// XREAD's reply as (entry id, log entry).
fn log_entries(v: &Value, run: Option<RunId>) -> Vec<(String, LogEntry)> {
    let streams: Vec<&Value> = match v {
        Value::Array(s) => s
            .iter()
            .filter_map(|p| match p {
                Value::Array(pair) => pair.get(1),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m.iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        for e in entries {
            let Value::Array(pair) = e else { continue };
            let (Some(Value::BulkString(id)), Some(Value::Array(fields))) =
                (pair.first(), pair.get(1))
            else {
                continue;
            };
            let id = String::from_utf8_lossy(id).into_owned();
            let text = |k: &str| field(fields, k).map(|b| String::from_utf8_lossy(&b).into_owned());
            let time_ms = id
                .split('-')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let entry = LogEntry {
                time_ms,
                run: text("r")
                    .filter(|r| !r.is_empty())
                    .or_else(|| run.map(|r| r.to_string())),
                worker: text("w").unwrap_or_default(),
                level: Level::parse(&text("l").unwrap_or_default()),
                event: field(fields, "e").and_then(|b| serde_json::from_slice(&b).ok()),
                message: text("m"),
            };
            out.push((id, entry));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob("node*", "node12-77"));
        assert!(glob("*-7?", "node12-77"));
        assert!(!glob("node?", "node12"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "acbx"));
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00");
        assert_eq!(
            fmt_time(1_795_996_800_000 + 3_723_000),
            "2026-11-30 01:02:03"
        );
        assert_eq!(fmt_time(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn run_ids_print_and_parse() {
        let r: RunId = "00000000000000ff".parse().unwrap();
        assert_eq!(r, RunId(255));
        assert_eq!(r.to_string(), "00000000000000ff");
        assert!("xyz".parse::<RunId>().is_err());
    }
}
