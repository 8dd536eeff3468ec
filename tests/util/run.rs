//! One way to run a sync, through the library or the `psync` binary, with
//! 1 or N worker threads; tests run the same body across all of them.

use super::compare::{assert_no_new_temps, temp_like};
use super::{TestDir, in_ci};
use psync::Event;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Which frontend runs the sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// `psync::builder(..).build()?.run()` in this process.
    Lib,
    /// The `psync sync` binary.
    Cli,
    /// The library with the run's tasks scattered over [`SCATTER_ENGINES`]
    /// engines, each task encoded and decoded on its way
    /// (`SyncBuilder::scatter`), as if on as many nodes.
    Scatter,
}

/// The engines of a [`Front::Scatter`] run.
pub const SCATTER_ENGINES: usize = 3;

impl Front {
    /// The name `PSYNC_TEST_FRONTS` selects it by.
    pub fn name(self) -> &'static str {
        match self {
            Front::Lib => "lib",
            Front::Cli => "cli",
            Front::Scatter => "scatter",
        }
    }
}

/// The seed of a [`Front::Scatter`] run's draws: `PSYNC_SCATTER_SEED`
/// (decimal or 0x-hex) when set, else a new one each run; printed, so a
/// failing test's output says how to repeat its draws.
pub fn scatter_seed() -> u64 {
    let seed = match std::env::var("PSYNC_SCATTER_SEED") {
        Ok(s) => match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        }
        .expect("PSYNC_SCATTER_SEED: a number"),
        // The std hasher's keys are random per process.
        Err(_) => std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::time::SystemTime::now(),
        ),
    };
    eprintln!("scatter seed: PSYNC_SCATTER_SEED={seed:#x}");
    seed
}

/// The fraction of a [`Front::Scatter`] run's tasks delivered twice
/// (`Scatter::redeliver`): `PSYNC_SCATTER_REDELIVER` when set, else 0.3.
pub fn scatter_redeliver() -> f64 {
    match std::env::var("PSYNC_SCATTER_REDELIVER") {
        Ok(s) => s.parse().expect("PSYNC_SCATTER_REDELIVER: a fraction"),
        Err(_) => 0.3,
    }
}

/// Whether a [`Front::Scatter`] run's redeliveries may start with a lossy
/// delivery (`Scatter::lossy`): only with `PSYNC_SCATTER_LOSSY=1`. The
/// counts and events of a dead worker's delivery are lost by design, so
/// the matrix's tests of exact counters and reports pass only without;
/// `tests/scatter.rs` tests lossy deliveries.
pub fn scatter_lossy() -> bool {
    std::env::var("PSYNC_SCATTER_LOSSY").is_ok_and(|s| s == "1")
}

/// One configuration of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Library or CLI.
    pub front: Front,
    /// Worker threads.
    pub threads: usize,
}

/// Serial and parallel, library and CLI (as ripgrep runs its serial and
/// parallel walks over the same tests), and the library with its tasks
/// scattered over several engines.
pub const CONFIGS: [Config; 5] = [
    Config {
        front: Front::Lib,
        threads: 1,
    },
    Config {
        front: Front::Lib,
        threads: 8,
    },
    Config {
        front: Front::Cli,
        threads: 1,
    },
    Config {
        front: Front::Cli,
        threads: 8,
    },
    Config {
        front: Front::Scatter,
        threads: 4,
    },
];

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}t", self.front.name(), self.threads)
    }
}

/// Runs `body` once per configuration (honouring `PSYNC_TEST_FRONTS`),
/// each in a fresh [`TestDir`] named after the test and the configuration.
pub fn each_config(test: &str, body: impl Fn(Config, &TestDir)) {
    let only = std::env::var("PSYNC_TEST_FRONTS").unwrap_or_default();
    for cfg in CONFIGS {
        if !cfg.selected(&only) {
            eprintln!("{test}: {cfg} not selected by PSYNC_TEST_FRONTS={only}");
            continue;
        }
        eprintln!("=== {test} [{cfg}]");
        let t = TestDir::new(&format!("{test}-{cfg}"));
        body(cfg, &t);
    }
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// `--delete` / `delete(true)`.
    pub delete: bool,
    /// `-n` / `dry_run(true)`.
    pub dry_run: bool,
    /// `--force` / `force(true)`.
    pub force: bool,
    /// `-x` / `one_file_system(true)`.
    pub one_file_system: bool,
    /// `--no-file-flags` / `file_flags(AttrMode::Off)`: an immutable
    /// target entry stays an obstacle instead of being lifted (ADR 018).
    pub no_file_flags: bool,
    /// `--max-delete N` / `max_delete(Some(N))`.
    pub max_delete: Option<u64>,
    /// A directory of more names than this is listed in parts (ADR 021):
    /// `PSYNC_WIDE_DIR` / `wide_dir(N)`, a knob for tests.
    pub wide_dir: Option<usize>,
    /// `-c` / `checksum(true)`.
    pub checksum: bool,
    /// Filter options as the CLI takes them, one `--opt=VALUE` each
    /// (`--exclude=`, `--include=`, `--filter=`, `--delete-excluded`,
    /// `--files-from=`, `-0`):
    /// the library is given the same rules.
    pub filters: Vec<String>,
}

impl Opts {
    /// With `--delete`.
    pub fn delete() -> Opts {
        Opts {
            delete: true,
            ..Opts::default()
        }
    }

    /// With `--force` (type changes replace non-empty directories).
    pub fn force() -> Opts {
        Opts {
            force: true,
            ..Opts::default()
        }
    }

    /// A dry run.
    pub fn dry_run() -> Opts {
        Opts {
            dry_run: true,
            ..Opts::default()
        }
    }
}

/// What a run did, the same for both frontends.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// 0 synced, 1 some entries failed, 2 fatal, 3 stopped for a target
    /// that cannot be written (the CLI's exit status; for the library,
    /// derived from `run()`'s result the same way).
    pub exit: i32,
    /// rsync-style `-i` lines, in the order reported.
    pub itemized: Vec<String>,
    /// Messages of failed entries (and of a fatal error).
    pub errors: Vec<String>,
    /// Warning messages.
    pub warnings: Vec<String>,
    /// The final counters, as JSON (`Report::stats` / the CLI's summary).
    pub stats: Value,
    /// The CLI's stdout and stderr (the library: empty, and the fatal error).
    pub stdout: String,
    /// See `stdout`.
    pub stderr: String,
}

impl Outcome {
    /// A counter of the final statistics (`bytes_copied`, `failed`, ...).
    #[track_caller]
    pub fn stat(&self, name: &str) -> u64 {
        self.stats
            .get(name)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no counter {name:?} in the run's stats: {}", self.stats))
    }

    /// The itemized lines, sorted.
    pub fn sorted_items(&self) -> Vec<String> {
        let mut v = self.itemized.clone();
        v.sort();
        v
    }

    /// Panics unless the run succeeded (exit 0, nothing failed).
    #[track_caller]
    pub fn assert_ok(&self) -> &Outcome {
        assert!(
            self.exit == 0 && self.errors.is_empty(),
            "the run did not succeed: {self:#?}"
        );
        self
    }
}

impl Config {
    /// True when `PSYNC_TEST_FRONTS` (given as `only`) selects it.
    pub fn selected(&self, only: &str) -> bool {
        only.is_empty() || only.split(',').any(|f| f == self.front.name())
    }

    /// Sets the builder's threads, and its scattering for
    /// [`Front::Scatter`].
    pub fn apply(&self, b: &mut psync::SyncBuilder) {
        b.threads(self.threads);
        if self.front == Front::Scatter {
            b.scatter(SCATTER_ENGINES, scatter_seed())
                .redeliver(scatter_redeliver())
                .redeliver_lossy(scatter_lossy());
        }
    }

    /// Syncs `src` into `dst` with default options (no delete).
    #[track_caller]
    pub fn sync(&self, src: &Path, dst: &Path) -> Outcome {
        self.sync_with(src, dst, &Opts::default())
    }

    /// Syncs `src` into `dst`. After any run that is not a dry run, checks
    /// that no temporary is left in `dst`.
    #[track_caller]
    pub fn sync_with(&self, src: &Path, dst: &Path, opts: &Opts) -> Outcome {
        let temps_before = temp_like(dst);
        let out = self.sync_unchecked(src, dst, opts);
        if !opts.dry_run {
            assert_no_new_temps(src, dst, &temps_before);
        }
        out
    }
}

impl Config {
    /// [`Config::sync_with`] without the check for temporaries, for
    /// targets deeper than the harness's path-based walk can list.
    pub fn sync_unchecked(&self, src: &Path, dst: &Path, opts: &Opts) -> Outcome {
        match self.front {
            Front::Lib | Front::Scatter => sync_lib_cfg(src, dst, *self, opts),
            Front::Cli => sync_cli(src, dst, self.threads, opts),
        }
    }
}

/// A library run collecting every event.
pub fn sync_lib(src: &Path, dst: &Path, threads: usize, opts: &Opts) -> Outcome {
    let cfg = Config {
        front: Front::Lib,
        threads,
    };
    sync_lib_cfg(src, dst, cfg, opts)
}

/// [`sync_lib`] in configuration `cfg` (plain or scattered).
pub fn sync_lib_cfg(src: &Path, dst: &Path, cfg: Config, opts: &Opts) -> Outcome {
    let (events, result) = lib_events_cfg(src, dst, cfg, opts);
    let mut out = Outcome::default();
    for ev in &events {
        match ev {
            Event::Itemize { .. } => out.itemized.push(ev.itemize_line().expect("itemize line")),
            Event::Error { message, .. } => out.errors.push(message.clone()),
            Event::Warning { message, .. } => out.warnings.push(message.clone()),
            _ => {}
        }
    }
    match result {
        Ok(report) => {
            out.exit = if report.success() {
                0
            } else if report.stopped.is_some() {
                3
            } else if report.interrupted {
                2
            } else {
                1
            };
            out.stats = serde_json::to_value(report.stats).expect("stats as JSON");
        }
        Err(e) => {
            out.exit = 2;
            out.stderr = format!("psync: {e}");
            out.errors.push(e.to_string());
        }
    }
    out
}

/// Runs the library with itemizing on; returns all events and the result.
pub fn lib_events(
    src: &Path,
    dst: &Path,
    threads: usize,
    opts: &Opts,
) -> (Vec<Event>, Result<psync::Report, psync::Error>) {
    let cfg = Config {
        front: Front::Lib,
        threads,
    };
    lib_events_cfg(src, dst, cfg, opts)
}

/// [`lib_events`] in configuration `cfg` (plain or scattered).
pub fn lib_events_cfg(
    src: &Path,
    dst: &Path,
    cfg: Config,
    opts: &Opts,
) -> (Vec<Event>, Result<psync::Report, psync::Error>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut b = psync::builder(src, dst);
    cfg.apply(&mut b);
    b.delete(opts.delete)
        .force(opts.force)
        .one_file_system(opts.one_file_system)
        .file_flags(match opts.no_file_flags {
            true => psync::AttrMode::Off,
            false => psync::AttrMode::Auto,
        })
        .dry_run(opts.dry_run)
        .max_delete(opts.max_delete)
        .checksum(opts.checksum)
        .itemize(true)
        .events(tx);
    if let Some(n) = opts.wide_dir {
        b.wide_dir(n);
    }
    if !opts.filters.is_empty() {
        let mut f = psync::filter::Filters::default();
        let nul = opts.filters.iter().any(|a| a == "-0");
        for arg in &opts.filters {
            match arg.split_once('=') {
                Some(("--files-from", p)) => {
                    let text = std::fs::read(p).expect("read --files-from");
                    f.set_files_from(&text, nul).expect("--files-from");
                }
                _ if arg == "-0" => {}
                Some(("--exclude", p)) => f.add_pattern(false, p.as_bytes()),
                Some(("--include", p)) => f.add_pattern(true, p.as_bytes()),
                Some(("--filter", r)) => f.add_filter(r.as_bytes()).expect("filter rule"),
                _ if arg == "--delete-excluded" => {
                    f.delete_excluded = true;
                    b.delete(true);
                }
                _ => panic!("not a filter option the harness knows: {arg}"),
            }
        }
        b.filters(f);
    }
    let result = b.build().and_then(|s| s.run());
    drop(b); // the last sender: the channel ends
    (rx.iter().collect(), result)
}

/// The `psync` binary: `target/<profile>/psync`, next to the directory
/// (`deps/`) holding this test executable. Cargo builds it only as part of
/// the workspace, so a missing binary means it was not built yet.
pub fn psync_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps");
    let bin = profile_dir.join("psync");
    assert!(
        bin.is_file(),
        "the psync binary is not at {}: run `cargo build --workspace` (or `cargo build -p psync-cli`) \
         before `cargo test --test tests`",
        bin.display()
    );
    bin
}

/// A `psync` command with nothing but the binary set.
pub fn psync_cmd() -> Command {
    let mut c = Command::new(psync_bin());
    c.env_remove("RUST_BACKTRACE");
    c
}

/// Runs `psync sync` with `args` then `SRC DST`.
pub fn run_cli(args: &[&str], src: &Path, dst: &Path) -> Output {
    psync_cmd()
        .arg("sync")
        .args(args)
        .arg(src)
        .arg(dst)
        .output()
        .expect("run psync")
}

/// A CLI run with `--json -i`, parsed.
pub fn sync_cli(src: &Path, dst: &Path, threads: usize, opts: &Opts) -> Outcome {
    let threads = threads.to_string();
    let mut args = vec!["--json", "-i", "--threads", &threads];
    if opts.delete {
        args.push("--delete");
    }
    if opts.dry_run {
        args.push("-n");
    }
    if opts.force {
        args.push("--force");
    }
    if opts.one_file_system {
        args.push("-x");
    }
    if opts.no_file_flags {
        args.push("--no-file-flags");
    }
    if opts.checksum {
        args.push("-c");
    }
    let max_delete = opts.max_delete.map(|n| n.to_string());
    if let Some(n) = &max_delete {
        args.extend(["--max-delete", n]);
    }
    args.extend(opts.filters.iter().map(String::as_str));
    let mut cmd = psync_cmd();
    cmd.arg("sync").args(&args).arg(src).arg(dst);
    if let Some(n) = opts.wide_dir {
        cmd.env("PSYNC_WIDE_DIR", n.to_string());
    }
    let o = cmd.output().expect("run psync");
    let mut out = Outcome {
        exit: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        ..Outcome::default()
    };
    for ev in json_lines(&out.stdout) {
        match ev["event"].as_str() {
            Some("itemize") => out.itemized.push(itemize_line_of(&ev)),
            Some("error") => out.errors.push(message_of(&ev)),
            Some("warning") => out.warnings.push(message_of(&ev)),
            Some("summary") => out.stats = summary_stats(&ev),
            _ => {}
        }
    }
    if out.exit == 2 && out.errors.is_empty() {
        out.errors.push(out.stderr.clone());
    }
    out
}

/// Parses `--json` output: one JSON object per line, each with an "event".
#[track_caller]
pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
            assert!(
                v.is_object() && v["event"].is_string(),
                "JSON line without an \"event\": {l}"
            );
            v
        })
        .collect()
}

fn message_of(ev: &Value) -> String {
    ev["message"]
        .as_str()
        .map_or_else(|| ev.to_string(), str::to_string)
}

/// The rsync-style line of a JSON itemize event: `CODE NAME[/][ -> LINK]`.
fn itemize_line_of(ev: &Value) -> String {
    if let Some(line) = ev["line"].as_str() {
        return line.to_string();
    }
    let code = ev["code"]
        .as_str()
        .unwrap_or_else(|| panic!("itemize event without a code: {ev}"));
    let path = ev["path"]
        .as_str()
        .unwrap_or_else(|| panic!("itemize event without a path: {ev}"));
    let name = if path.is_empty() { "." } else { path };
    let slash = if ev["kind"]
        .as_str()
        .is_some_and(|k| k.eq_ignore_ascii_case("dir"))
    {
        "/"
    } else {
        ""
    };
    let arrow = match ev["link"].as_str() {
        Some(l) if !code.starts_with('*') => format!(" -> {l}"),
        _ => String::new(),
    };
    format!("{code} {name}{slash}{arrow}")
}

/// The counters of the CLI's summary event (flat, or under "stats").
fn summary_stats(ev: &Value) -> Value {
    match ev.get("stats") {
        Some(s) if s.is_object() => s.clone(),
        _ => ev.clone(),
    }
}

/// True when the binary exists; under CI its absence is a failure.
pub fn cli_available() -> bool {
    let exe = std::env::current_exe().expect("current_exe");
    let ok = exe
        .parent()
        .and_then(Path::parent)
        .is_some_and(|d| d.join("psync").is_file());
    assert!(
        ok || !in_ci(),
        "the psync binary is missing and CI=true: run `cargo build --workspace` first"
    );
    ok
}

/// Waits for `child` at most `limit`; kills it and panics (naming `what`)
/// when it is still running then.
#[track_caller]
pub fn wait_at_most(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait for psync") {
            return s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("psync did not {what} within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Sends SIGINT to `child`.
pub fn interrupt(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("send SIGINT");
}
