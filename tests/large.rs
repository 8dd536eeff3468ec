//! Large files, verification, resume and live file systems (ADR 003).
//!
//! Chunked copies are exact and keep holes; a run killed with SIGKILL at
//! any moment leaves no partial file under a final name, and the next run
//! resumes instead of starting over; a source that changes while it is
//! copied is never put in place; corruption between the write and the
//! read-back is caught (and, without verification, is not); `--min-age`,
//! `--checksum` and files that vanish behave as the ADR says.
//!
//! Sizes are small (1 MiB chunks, files of a few MiB) so that the module
//! stays fast in a debug build. Faults are injected with decorators around
//! the generic copier and the walker (library runs), and with SIGKILL
//! (CLI runs).

use crate::util::run::{CONFIGS, Config, Front, cli_available, json_lines, psync_bin};
use crate::util::tree::{Node, build, random, random_bytes, set_mtime};
use crate::util::{TestDir, read, rsync_itemize, rsync_oracle, stat_snapshot};
use psync::Dir;
use psync::{
    Copied, Copier, CopyOptions, DataJob, Entry, Event, GenericCopier, Listing, Name, Node as At,
    StepError, Walker, XattrReport,
};
use serde_json::Value;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Prefix of part files and their journals (ADR 003).
const PART_PREFIX: &str = ".psync-part.";

// ----- one run, through the library or the CLI, with this module's options

/// The options these tests vary, for both frontends. The copier and the
/// walker can only be replaced in library runs.
#[derive(Clone, Default)]
struct Knobs {
    delete: bool,
    no_verify: bool,
    checksum: bool,
    dry_run: bool,
    min_age: Option<u64>,
    chunk: Option<u64>,
    resume: Option<u64>,
    retries: Option<u32>,
    keep_source_cache: bool,
    copier: Option<Arc<dyn Copier>>,
    walker: Option<Arc<dyn Walker>>,
    /// A directory of more names is listed in parts (ADR 021).
    wide_dir: Option<usize>,
}

impl Knobs {
    /// Chunks of 1 MiB (the smallest the builder allows).
    fn chunked() -> Knobs {
        Knobs {
            chunk: Some(MIB),
            ..Knobs::default()
        }
    }

    /// The CLI flags for these options.
    fn cli_args(&self) -> Vec<String> {
        assert!(
            self.copier.is_none() && self.walker.is_none(),
            "a copier or walker can only be replaced in a library run"
        );
        let mut a: Vec<String> = Vec::new();
        let flags = [
            (self.delete, "--delete"),
            (self.no_verify, "--no-verify"),
            (self.checksum, "--checksum"),
            (self.dry_run, "--dry-run"),
            (self.keep_source_cache, "--keep-source-cache"),
        ];
        a.extend(flags.iter().filter(|f| f.0).map(|f| f.1.to_string()));
        let values = [
            ("--min-age", self.min_age),
            ("--chunk-size", self.chunk),
            ("--resume-threshold", self.resume),
            ("--retries", self.retries.map(u64::from)),
        ];
        for (flag, v) in values {
            if let Some(v) = v {
                a.extend([flag.to_string(), v.to_string()]);
            }
        }
        a
    }
}

/// A failed entry: the path relative to the roots, the operation
/// (`verify`, `copy_data`, ...) and the message.
#[derive(Debug, Clone)]
struct Failure {
    path: String,
    op: String,
    message: String,
}

/// What a run did, the same for both frontends.
#[derive(Debug, Default)]
struct Run {
    /// 0 synced, 1 some entries failed, 2 fatal or interrupted.
    exit: i32,
    itemized: Vec<String>,
    errors: Vec<Failure>,
    warnings: Vec<String>,
    /// Paths of `skipped` events (`--min-age`).
    skipped: Vec<String>,
    /// The final counters (`Report::stats`, the CLI's summary line).
    stats: Value,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn stat(&self, name: &str) -> u64 {
        self.stats
            .get(name)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no counter {name:?} in {}", self.stats))
    }

    #[track_caller]
    fn assert_ok(&self) -> &Run {
        assert!(
            self.exit == 0 && self.errors.is_empty() && self.stat("failed") == 0,
            "the run did not succeed: {self:#?}"
        );
        self
    }

    /// The errors reported for `path`.
    fn errors_of(&self, path: &str) -> Vec<&Failure> {
        self.errors.iter().filter(|f| f.path == path).collect()
    }
}

fn op_name(op: psync::Op) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{op:?}"))
}

/// A library run collecting every event.
fn run_lib(src: &Path, dst: &Path, threads: usize, k: &Knobs) -> Run {
    let cfg = Config {
        front: Front::Lib,
        threads,
    };
    run_lib_cfg(src, dst, cfg, k)
}

/// [`run_lib`] in configuration `cfg` (plain or scattered).
fn run_lib_cfg(src: &Path, dst: &Path, cfg: Config, k: &Knobs) -> Run {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut b = psync::builder(src, dst);
    cfg.apply(&mut b);
    b.delete(k.delete)
        .itemize(true)
        .events(tx)
        .verify(!k.no_verify)
        .checksum(k.checksum)
        .dry_run(k.dry_run)
        .keep_source_cache(k.keep_source_cache);
    if let Some(secs) = k.min_age {
        b.min_age(Duration::from_secs(secs));
    }
    if let Some(bytes) = k.chunk {
        b.chunk_size(bytes);
    }
    if let Some(bytes) = k.resume {
        b.resume_threshold(bytes);
    }
    if let Some(n) = k.retries {
        b.retries(n);
    }
    if let Some(c) = &k.copier {
        b.default_copier(Arc::clone(c));
    }
    if let Some(w) = &k.walker {
        b.walker(Arc::clone(w));
    }
    if let Some(n) = k.wide_dir {
        b.wide_dir(n);
    }
    let result = b.build().and_then(|s| s.run());
    drop(b); // the last sender: the channel ends
    let mut run = Run::default();
    for ev in rx.iter() {
        match &ev {
            Event::Itemize { .. } => run.itemized.extend(ev.itemize_line()),
            Event::Error {
                path, op, message, ..
            } => run.errors.push(Failure {
                path: path.to_string(),
                op: op_name(*op),
                message: message.clone(),
            }),
            Event::Warning { message, .. } => run.warnings.push(message.clone()),
            Event::Skipped { path, .. } => run.skipped.push(path.to_string()),
            _ => {}
        }
    }
    match result {
        Ok(report) => {
            run.exit = match (report.success(), report.interrupted) {
                (true, _) => 0,
                (false, true) => 2,
                (false, false) => 1,
            };
            run.stats = serde_json::to_value(report.stats).expect("stats as JSON");
        }
        Err(e) => {
            run.exit = 2;
            run.stderr = format!("psync: {e}");
        }
    }
    run
}

/// A CLI run (`bin sync --json -i --threads N ...`), parsed.
fn run_cli(bin: &Path, src: &Path, dst: &Path, threads: usize, k: &Knobs) -> Run {
    let o = Command::new(bin)
        .args(["sync", "--json", "-i", "--threads", &threads.to_string()])
        .args(k.cli_args())
        .arg(src)
        .arg(dst)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run psync");
    let mut run = parse_cli(&String::from_utf8_lossy(&o.stdout));
    run.exit = o.status.code().unwrap_or(-1);
    run.stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    run
}

/// The events of a complete `--json` output.
fn parse_cli(stdout: &str) -> Run {
    let mut run = Run::default();
    let text = |ev: &Value, key: &str| ev[key].as_str().unwrap_or_default().to_string();
    for ev in json_lines(stdout) {
        match ev["event"].as_str() {
            Some("itemize") => run.itemized.push(text(&ev, "line")),
            Some("error") => run.errors.push(Failure {
                path: text(&ev, "path"),
                op: text(&ev, "op"),
                message: text(&ev, "message"),
            }),
            Some("warning") => run.warnings.push(text(&ev, "message")),
            Some("skipped") => run.skipped.push(text(&ev, "path")),
            Some("summary") => run.stats = ev,
            _ => {}
        }
    }
    run
}

/// One run in configuration `cfg` (library or the debug CLI, 1 or N threads).
fn run_cfg(cfg: Config, src: &Path, dst: &Path, k: &Knobs) -> Run {
    match cfg.front {
        Front::Lib | Front::Scatter => run_lib_cfg(src, dst, cfg, k),
        Front::Cli => run_cli(&psync_bin(), src, dst, cfg.threads, k),
    }
}

/// The configurations `PSYNC_TEST_FRONTS` selects (as `each_config` does),
/// for tests that prepare all their directories before running any.
fn selected_configs() -> Vec<Config> {
    let only = std::env::var("PSYNC_TEST_FRONTS").unwrap_or_default();
    CONFIGS.into_iter().filter(|c| c.selected(&only)).collect()
}

/// The thread counts of library-only tests (decorated copier or walker).
const LIB_THREADS: [usize; 2] = [1, 8];

// ----- what a run may leave behind ----------------------------------------

/// Relative paths of every entry under `root` named like a psync
/// temporary or part file (`.psync-tmp.*`, `.psync-part.*`).
fn leftovers(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = format!("{rel}{name}");
            if is_psync_temp(name.as_bytes()) {
                out.push(path.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), &format!("{path}/"), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out.sort();
    out
}

fn is_psync_temp(name: &[u8]) -> bool {
    name.starts_with(psync::TEMP_PREFIX.as_bytes()) || name.starts_with(PART_PREFIX.as_bytes())
}

#[track_caller]
fn assert_no_leftovers(root: &Path) {
    let left = leftovers(root);
    assert!(
        left.is_empty(),
        "psync temporaries or part files left in {}: {left:?}",
        root.display()
    );
}

/// Total size of the regular files under `root`.
fn tree_bytes(root: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(root).expect("read_dir").flatten() {
        let m = e.metadata().expect("stat");
        if m.is_dir() {
            total += tree_bytes(&e.path());
        } else if m.is_file() {
            total += m.len();
        }
    }
    total
}

/// Writes a sparse file of `size` bytes with pseudo-random data in the
/// given (offset, length) ranges and holes everywhere else.
fn sparse_file(p: &Path, size: u64, data: &[(u64, u64)]) {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir -p");
    }
    let f = File::create(p).expect("create sparse file");
    f.set_len(size).expect("set_len");
    for (i, &(at, len)) in data.iter().enumerate() {
        f.write_all_at(&random_bytes(0x5ba5e + i as u64, len), at)
            .expect("write data segment");
    }
}

/// The first data offset at or after `from` (SEEK_DATA); `None` when only
/// a hole follows.
fn next_data(p: &Path, from: u64) -> Option<u64> {
    let f = File::open(p).expect("open");
    match rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(from)) {
        Ok(at) => Some(at),
        Err(rustix::io::Errno::NXIO) => None,
        Err(e) => panic!("SEEK_DATA {} at {from}: {e}", p.display()),
    }
}

fn allocated(p: &Path) -> u64 {
    p.metadata().expect("stat").blocks() * 512
}

/// Rewrites `len` bytes of `p` at `at` in place (same size, new content).
fn rewrite(p: &Path, at: u64, len: u64, seed: u64) {
    let f = OpenOptions::new()
        .write(true)
        .open(p)
        .expect("open for writing");
    f.write_all_at(&random_bytes(seed, len), at)
        .expect("rewrite");
}

// ----- copier and walker decorators ---------------------------------------

/// When a hook runs: before or after the inner copier moved a job's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    Before,
    After,
}

type Hook = dyn Fn(&DataJob<'_>, When) + Send + Sync;

/// The generic copier with a hook around each data copy (a file, or one
/// chunk of a large file): where tests corrupt the target, change the
/// source or delete it.
pub(crate) struct Hooked {
    inner: GenericCopier,
    hook: Box<Hook>,
}

impl Hooked {
    pub(crate) fn around(
        hook: impl Fn(&DataJob<'_>, When) + Send + Sync + 'static,
    ) -> Arc<dyn Copier> {
        Arc::new(Hooked {
            inner: GenericCopier::read_write_only(),
            hook: Box::new(hook),
        })
    }
}

impl Copier for Hooked {
    fn name(&self) -> &str {
        "hooked"
    }
    fn create(&self, dir: &Dir, tmp: &Name, src: &Entry, f: &File) -> Result<File, StepError> {
        self.inner.create(dir, tmp, src, f)
    }
    fn create_unnamed(&self, dir: &Dir, src: &Entry, f: &File) -> Result<Option<File>, StepError> {
        self.inner.create_unnamed(dir, src, f)
    }
    fn copy_data(&self, job: &DataJob<'_>, quit: &AtomicBool) -> Result<Copied, StepError> {
        (self.hook)(job, When::Before);
        let mut copied = self.inner.copy_data(job, quit)?;
        (self.hook)(job, When::After);
        // The hook may have changed the target after the inner copier read
        // it back (on tmpfs, as it writes): that read-back no longer holds,
        // and the engine reads back itself.
        copied.read_back = None;
        Ok(copied)
    }
    fn set_attrs(
        &self,
        t: At<'_>,
        src: &Entry,
        from: Option<At<'_>>,
        o: &CopyOptions,
    ) -> Result<XattrReport, StepError> {
        self.inner.set_attrs(t, src, from, o)
    }
    fn make_dir(
        &self,
        dir: &Dir,
        n: &Name,
        src: &Entry,
        from: psync::Node<'_>,
    ) -> Result<(), StepError> {
        self.inner.make_dir(dir, n, src, from)
    }
    fn make_symlink(&self, dir: &Dir, n: &Name, src: &Entry) -> Result<(), StepError> {
        self.inner.make_symlink(dir, n, src)
    }
    fn make_special(&self, dir: &Dir, n: &Name, src: &Entry) -> Result<(), StepError> {
        self.inner.make_special(dir, n, src)
    }
    fn remove(&self, dir: &Dir, e: &Entry) -> Result<u64, StepError> {
        self.inner.remove(dir, e)
    }
}

fn job_is(job: &DataJob<'_>, name: &str) -> bool {
    job.entry.name.as_bytes() == name.as_bytes()
}

/// Flips one byte of what was just written at `job.offset` of the target,
/// for the file `name` (and, for a chunked file, only the chunk starting
/// at `chunk_at`): corruption between the write and the read-back.
fn corrupting(name: &'static str, chunk_at: Option<u64>, flips: Arc<AtomicU64>) -> Arc<dyn Copier> {
    Hooked::around(move |job: &DataJob<'_>, when: When| {
        if when == When::After && job_is(job, name) && chunk_at.is_none_or(|at| at == job.offset) {
            let mut b = [0u8; 1];
            job.dst
                .read_exact_at(&mut b, job.offset)
                .expect("read back");
            job.dst
                .write_all_at(&[b[0] ^ 0xff], job.offset)
                .expect("flip a byte");
            flips.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// A walker that deletes the source files `victims` (full paths) right
/// after the listing that first shows them: files that vanish between the
/// listing and their copy.
struct Vanishing {
    victims: Mutex<Vec<PathBuf>>,
}

impl Walker for Vanishing {
    fn list(&self, dir: &Dir) -> std::io::Result<Listing> {
        let listing = psync::FsWalker.list(dir)?;
        let mut victims = self.victims.lock().expect("victims");
        victims.retain(|p| {
            let name = p.file_name().expect("a file name").as_bytes();
            let listed = listing.entries.iter().any(|e| e.name.as_bytes() == name);
            if listed && p.exists() {
                std::fs::remove_file(p).expect("delete a victim");
                return false;
            }
            true
        });
        Ok(listing)
    }
}

// ----- processes to kill ----------------------------------------------------

/// The `psync` binary for the kill tests: the build of the profile under
/// test (`cargo build --workspace` made it from this source). Not the
/// release build even when there is one: it may be stale, and it copies
/// these trees in tens of milliseconds, before most of the 20-400 ms kills
/// would land, so the kills would test nothing.
fn kill_bin() -> PathBuf {
    psync_bin()
}

/// A `psync sync` process whose stdout a thread collects. Killed on drop
/// if still running (a failing test leaves no process behind).
struct Proc {
    child: Child,
    reader: Option<std::thread::JoinHandle<String>>,
}

impl Proc {
    fn start(bin: &Path, args: &[String], src: &Path, dst: &Path) -> Proc {
        let mut child = Command::new(bin)
            .arg("sync")
            .args(args)
            .arg(src)
            .arg(dst)
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start psync");
        let mut out = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        Proc {
            child,
            reader: Some(reader),
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the process to exit on its own.
    fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// SIGKILL. Returns how the process ended and how many bytes it had
    /// written (`wchar` of `/proc/PID/io`, read from the zombie before it
    /// is reaped), when `/proc` tells.
    fn kill9(&mut self) -> (ExitStatus, Option<u64>) {
        let id = self.child.id();
        let pid = rustix::process::Pid::from_raw(i32::try_from(id).expect("pid")).expect("pid");
        // ESRCH is impossible (not reaped yet); a process that exited just
        // before is a zombie and ignores the signal.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        wait_until_zombie(id);
        let written = bytes_written(id);
        let status = self.child.wait().expect("wait");
        (status, written)
    }

    /// Everything the process printed (call after it ended).
    fn stdout(&mut self) -> String {
        self.reader
            .take()
            .map(|r| r.join().expect("stdout reader"))
            .unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_until_zombie(pid: u32) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, None | Some('Z' | 'X')) {
            return;
        }
        assert!(Instant::now() < end, "psync {pid} survived SIGKILL");
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Bytes the process passed to write calls (`wchar`): its file data
/// (verification makes it use pwrite), journals, and its stdout.
fn bytes_written(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `bytes_copied` of the last JSON event of `kind` a (possibly killed)
/// run printed; a line cut by the kill is ignored.
fn last_counter(stdout: &str, kind: &str, counter: &str) -> Option<u64> {
    stdout
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == kind)
        .and_then(|v| v[counter].as_u64())
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A seeded xorshift64: the kill moments and fixture sizes repeat exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Identity of target files already found complete: (ino, size, ctime).
type Seen = HashMap<PathBuf, (u64, u64, i64, i64)>;

/// Every regular file of `dst` under a final name (not a psync temporary
/// or part file, not inside one) is byte-identical to its source. A file
/// checked before and unchanged since (same inode, size and ctime) is not
/// read again. Returns how many complete files there are.
#[track_caller]
fn assert_final_names_complete(src: &Path, dst: &Path, seen: &mut Seen) -> usize {
    fn walk(src: &Path, dst: &Path, rel: &Path, seen: &mut Seen, n: &mut usize) {
        let Ok(rd) = std::fs::read_dir(dst.join(rel)) else {
            return;
        };
        for e in rd.flatten() {
            if is_psync_temp(e.file_name().as_bytes()) {
                continue;
            }
            let rel = rel.join(e.file_name());
            let m = e.metadata().expect("stat");
            if m.is_dir() {
                walk(src, dst, &rel, seen, n);
                continue;
            }
            let id = (m.ino(), m.size(), m.ctime(), m.ctime_nsec());
            *n += 1;
            if seen.get(&rel) == Some(&id) {
                continue;
            }
            let want = std::fs::read(src.join(&rel)).unwrap_or_else(|e| {
                panic!("{} is in the target but not the source: {e}", rel.display())
            });
            let got = std::fs::read(dst.join(&rel)).expect("read target");
            assert!(
                got == want,
                "{} is under its final name but differs from the source ({} of {} bytes{})",
                rel.display(),
                got.len(),
                want.len(),
                got.iter()
                    .zip(&want)
                    .position(|(a, b)| a != b)
                    .map_or_else(String::new, |at| format!(", first difference at byte {at}"))
            );
            seen.insert(rel, id);
        }
    }
    let mut n = 0;
    walk(src, dst, Path::new(""), seen, &mut n);
    n
}

// ----- 1. chunked copies are exact ------------------------------------------

#[test]
fn chunked_copy_is_exact_and_keeps_holes() {
    crate::util::each_config("chunked_copy_is_exact_and_keeps_holes", |cfg, t| {
        tree!(t.src(), {
            "odd" => random(3 * MIB + 12_345),
            "a/just_over" => random(MIB + 1),
            "a/exactly_one_chunk" => random(MIB),
            "b/five" => random(5 * MIB - 7),
            "b/two_chunks" => random(2 * MIB),
            "small" => random(1000),
        });
        // Data in chunk 0, a hole over chunks 1-3 and into 4, data in
        // chunk 4, then a trailing hole over chunks 5-7.
        let sparse = t.src().join("b/sparse");
        let (sparse_size, tail) = (7 * MIB + 333, (4 * MIB + 4096, 296 << 10));
        sparse_file(&sparse, sparse_size, &[(0, 100 << 10), tail]);
        // Chunks: 4 + 2 + 5 + 2 + 8 (the 1 MiB file is not chunked).
        let want_chunks = 21;

        let out = run_cfg(cfg, &t.src(), &t.dst(), &Knobs::chunked());
        out.assert_ok();
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        assert_no_leftovers(&t.dst());
        assert_eq!(out.stat("chunks"), want_chunks, "{}", out.stats);
        assert_eq!(out.stat("chunks_resumed"), 0);
        // Seven files and two directories.
        assert_eq!(out.stat("created"), 9, "{}", out.stats);
        // Holes are not copied: less than the total, at least all the rest.
        let dense = tree_bytes(&t.src()) - sparse_size;
        let copied = out.stat("bytes_copied");
        assert!(
            (dense..dense + MIB).contains(&copied),
            "bytes copied {copied}, expected the dense files' {dense} plus the sparse file's data"
        );

        let dst_sparse = t.dst().join("b/sparse");
        let holes_here = next_data(&sparse, 200 << 10).is_some_and(|d| d >= 4 * MIB)
            && next_data(&sparse, tail.0 + tail.1).is_none();
        if holes_here {
            let next = next_data(&dst_sparse, 200 << 10);
            assert!(
                next.is_some_and(|d| (4 * MIB..=tail.0).contains(&d)),
                "the hole over whole chunks was filled: next data after 200 KiB at {next:?}"
            );
            assert_eq!(
                next_data(&dst_sparse, tail.0 + tail.1),
                None,
                "the trailing hole was filled"
            );
            let (a, b) = (allocated(&sparse), allocated(&dst_sparse));
            assert!(
                b <= a + (64 << 10),
                "target allocates {b} bytes, source {a}: holes became data"
            );
        } else {
            eprintln!("SKIPPED hole checks: this file system does not keep holes");
        }

        let again = run_cfg(cfg, &t.src(), &t.dst(), &Knobs::chunked());
        again.assert_ok();
        assert_eq!(again.stat("bytes_copied"), 0, "{}", again.stats);
        assert_eq!(again.stat("chunks"), 0);
        assert!(again.itemized.is_empty(), "{:#?}", again.itemized);
    });
}

// ----- 2. SIGKILL at random moments -----------------------------------------

#[test]
fn kill_9_at_random_moments_then_resume() {
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    const KILLS: usize = 30;
    let bin = kill_bin();
    let t = TestDir::new("kill_9_at_random_moments_then_resume");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::at(format!("big{i}"), random(24 * MIB + 1000 * i)))
        .collect();
    nodes.extend((0..300).map(|i| {
        Node::at(
            format!("small/d{:02}/f{i:03}", i % 12),
            random(rng.range(0, 16 << 10)),
        )
    }));
    build(&t.src(), nodes);
    let size = tree_bytes(&t.src());
    let args = strings(&[
        "--json",
        "--threads",
        "4",
        "--chunk-size",
        "1M",
        "--resume-threshold",
        "1M",
    ]);

    let (mut written, mut kills, mut exact) = (0u64, 0, true);
    let mut seen = Seen::new();
    let started = Instant::now();
    for _ in 0..KILLS {
        let delay = Duration::from_millis(rng.range(20, 400));
        let mut p = Proc::start(&bin, &args, &t.src(), &t.dst());
        if let Some(status) = p.exited_within(delay) {
            let out = p.stdout();
            assert!(status.success(), "psync failed: {status}\n{out}");
            written += last_counter(&out, "summary", "bytes_copied").expect("a summary");
            break; // synced: nothing left to interrupt
        }
        let (status, wchar) = p.kill9();
        let out = p.stdout();
        let progress = last_counter(&out, "progress", "bytes_copied").unwrap_or(0);
        if status.signal() != Some(libc::SIGKILL) {
            assert!(status.success(), "psync failed: {status}\n{out}");
            written += last_counter(&out, "summary", "bytes_copied").expect("a summary");
            break;
        }
        kills += 1;
        exact &= wchar.is_some();
        written += wchar.unwrap_or(0).max(progress);
        let complete = assert_final_names_complete(&t.src(), &t.dst(), &mut seen);
        eprintln!(
            "kill {kills} after {delay:?}: {complete} files complete, {written} bytes written so far"
        );
    }
    if kills == 0 {
        // A fast build (a release test run) copies this tree before the
        // first kill; the kill moments are sized for a debug build.
        // Not a missing prerequisite: this build is too fast for the test.
        eprintln!("SKIPPED: psync synced the whole tree before the first kill: nothing to test");
        return;
    }
    let mut p = Proc::start(&bin, &args, &t.src(), &t.dst());
    let status = p
        .exited_within(Duration::from_secs(120))
        .expect("the final run ends");
    let out = p.stdout();
    assert!(status.success(), "the final run failed: {status}\n{out}");
    let last = parse_cli(&out);
    written += last.stat("bytes_copied");
    eprintln!(
        "{kills} kills in {:?}; the final run resumed {} chunks; {written} bytes written \
         ({}) for {size}",
        started.elapsed(),
        last.stat("chunks_resumed"),
        if exact { "exact" } else { "a lower bound" },
    );

    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
    assert_no_leftovers(&t.dst());
    let how = if exact {
        "bytes written (wchar)"
    } else {
        "bytes copied per the last progress events (a lower bound)"
    };
    assert!(
        written * 2 < size * 3,
        "{kills} killed runs and the final one: {written} {how} for a tree of {size}: \
         resuming is not saving the work of killed runs"
    );
}

// ----- 3. resume mid-file ---------------------------------------------------

/// The part file of the large file in `dir`, if there is one.
fn part_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let n = e.file_name();
        let n = n.as_bytes();
        (n.starts_with(PART_PREFIX.as_bytes()) && !n.ends_with(b".journal")).then(|| e.path())
    })
}

/// Starts `psync` on a tree whose one large file has `size` bytes and
/// kills it with SIGKILL once its part file holds `fraction` of the data.
fn kill_mid_file(bin: &Path, args: &[String], t: &TestDir, size: u64, fraction: f64) {
    let mut p = Proc::start(bin, args, &t.src(), &t.dst());
    let want = (size as f64 * fraction) as u64;
    loop {
        if part_in(&t.dst())
            .is_some_and(|part| part.metadata().is_ok_and(|m| m.blocks() * 512 >= want))
        {
            break;
        }
        assert!(
            p.running(),
            "psync finished before the part file reached {want} bytes: the test proves nothing"
        );
        std::thread::yield_now();
    }
    let (status, _) = p.kill9();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "psync was not killed: {status}"
    );
}

#[test]
fn resume_mid_file_after_kill_9() {
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let bin = kill_bin();
    let t = TestDir::new("resume_mid_file_after_kill_9");
    let size = 40 * MIB + 12_345;
    let chunks = size.div_ceil(MIB);
    tree!(t.src(), { "big" => random(size), "note" => file("small") });
    let src = t.src().join("big");
    // One thread: chunks one after another, so "30% of the data" is a
    // moment well inside the copy.
    let args = strings(&[
        "--threads",
        "1",
        "--chunk-size",
        "1M",
        "--resume-threshold",
        "1M",
    ]);
    let k = Knobs {
        chunk: Some(MIB),
        resume: Some(MIB),
        ..Knobs::default()
    };

    kill_mid_file(&bin, &args, &t, size, 0.3);
    assert!(part_in(&t.dst()).is_some(), "no part file after the kill");
    assert!(
        !t.dst().join("big").exists(),
        "a partial file under its final name"
    );
    let rerun = run_cli(&bin, &t.src(), &t.dst(), 1, &k);
    rerun.assert_ok();
    assert_synced!(t.src(), t.dst());
    assert_no_leftovers(&t.dst());
    let (resumed, copied) = (rerun.stat("chunks_resumed"), rerun.stat("chunks"));
    assert!(resumed > 0, "nothing resumed: {}", rerun.stats);
    assert_eq!(resumed + copied, chunks, "{}", rerun.stats);
    assert!(
        rerun.stat("bytes_copied") < size && rerun.stat("bytes_copied") <= copied * MIB,
        "the rerun copied {} of {size} bytes: {}",
        rerun.stat("bytes_copied"),
        rerun.stats
    );

    // A new version, killed mid-copy; then the source changes again (its
    // mtime only): the old part belongs to another version and must not
    // be resumed, and is removed.
    rewrite(&src, 17 * MIB + 99, 3 * MIB, 7);
    kill_mid_file(&bin, &args, &t, size, 0.3);
    let old_part = part_in(&t.dst()).expect("a part file after the kill");
    let m = src.metadata().expect("stat");
    set_mtime(&src, m.mtime() + 10, 0);
    let fresh = run_cli(&bin, &t.src(), &t.dst(), 1, &k);
    fresh.assert_ok();
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
    assert_eq!(fresh.stat("chunks_resumed"), 0, "{}", fresh.stats);
    assert_eq!(fresh.stat("chunks"), chunks, "{}", fresh.stats);
    assert_eq!(fresh.stat("bytes_copied"), size, "{}", fresh.stats);
    assert!(
        !old_part.exists(),
        "the stale part {} survived",
        old_part.display()
    );
    assert_no_leftovers(&t.dst());
}

/// Issue 12: a part killed mid-copy, then a chunk it already holds is
/// rewritten in place in the source with its mtime put back (size and
/// mtime as before; only the ctime tells). The rerun must not keep the old
/// chunk: the journal names the source's ctime, and a resumed chunk is
/// checked against the source as it is now (unit-tested in bigfile.rs).
#[test]
fn resume_after_an_in_place_rewrite_with_the_mtime_restored() {
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let bin = kill_bin();
    let t = TestDir::new("resume_after_an_in_place_rewrite_with_the_mtime_restored");
    let size = 40 * MIB + 777;
    tree!(t.src(), { "big" => random(size) });
    let src = t.src().join("big");
    let args = strings(&[
        "--threads",
        "1",
        "--chunk-size",
        "1M",
        "--resume-threshold",
        "1M",
    ]);
    kill_mid_file(&bin, &args, &t, size, 0.3);
    let part = part_in(&t.dst()).expect("a part file after the kill");
    let before = src.metadata().expect("stat");
    // Inside the first 30 %: a chunk the part already holds.
    rewrite(&src, 2 * MIB + 4000, 8192, 99);
    set_mtime(&src, before.mtime(), before.mtime_nsec() as u32);
    let after = src.metadata().expect("stat");
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec()),
        (before.len(), before.mtime(), before.mtime_nsec())
    );
    assert_ne!(
        (after.ctime(), after.ctime_nsec()),
        (before.ctime(), before.ctime_nsec())
    );
    let part_bytes = read(&part);
    assert_ne!(
        part_bytes[2 * MIB as usize + 4000..][..8192],
        read(&src)[2 * MIB as usize + 4000..][..8192],
        "the part must hold the old data for the test to mean anything"
    );

    let k = Knobs {
        chunk: Some(MIB),
        resume: Some(MIB),
        ..Knobs::default()
    };
    let rerun = run_cli(&bin, &t.src(), &t.dst(), 1, &k);
    rerun.assert_ok();
    assert!(
        read(t.dst().join("big")) == read(&src),
        "the target mixes two versions of big: {}",
        rerun.stats
    );
    assert_eq!(
        rerun.stat("chunks_resumed"),
        0,
        "a part of another version was resumed: {}",
        rerun.stats
    );
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
    assert_no_leftovers(&t.dst());
}

/// A kill between the rename of a finished part into place and the removal
/// of its journal leaves the journal of a version that is now complete. The
/// next run has nothing to copy, but must not keep that journal forever.
#[test]
fn journal_of_a_finished_file_is_removed() {
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let bin = kill_bin();
    let t = TestDir::new("journal_of_a_finished_file_is_removed");
    let size = 40 * MIB;
    tree!(t.src(), { "big" => random(size) });
    let args = strings(&[
        "--threads",
        "1",
        "--chunk-size",
        "1M",
        "--resume-threshold",
        "1M",
    ]);
    kill_mid_file(&bin, &args, &t, size, 0.3);
    let part = part_in(&t.dst()).expect("a part file after the kill");
    let mut journal = part.clone().into_os_string();
    journal.push(".journal");
    let journal = PathBuf::from(journal);
    let saved = std::fs::read(&journal).expect("the journal beside the part");
    let k = Knobs {
        chunk: Some(MIB),
        resume: Some(MIB),
        ..Knobs::default()
    };
    run_cli(&bin, &t.src(), &t.dst(), 1, &k).assert_ok();
    assert_no_leftovers(&t.dst());
    // The state a kill right after the rename leaves.
    std::fs::write(&journal, saved).expect("put the journal back");
    let out = run_cli(&bin, &t.src(), &t.dst(), 1, &k);
    out.assert_ok();
    assert_eq!(out.stat("bytes_copied"), 0);
    assert_synced!(t.src(), t.dst(), except: [journal.file_name().unwrap().as_bytes()]);
    assert_no_leftovers(&t.dst());
}

// ----- 4. a source modified during its copy ---------------------------------

/// Rewrites 4 KiB blocks of `p` in place, one a millisecond, until `stop`:
/// a live file that keeps changing (same size, new content and mtime).
fn keep_rewriting(p: &Path, stop: &AtomicBool) -> u64 {
    let f = OpenOptions::new()
        .write(true)
        .open(p)
        .expect("open for writing");
    let len = f.metadata().expect("stat").len();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let at = (n * 1_000_003 * 4096) % (len - 4096);
        f.write_all_at(&[(n as u8) ^ 0x5a; 4096], at)
            .expect("rewrite a block");
        n += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    n
}

/// Runs the library while another thread keeps rewriting `live`.
fn run_while_rewriting(t: &TestDir, live: &Path, threads: usize, k: &Knobs) -> (Run, u64) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let run = s.spawn(|| run_lib(&t.src(), &t.dst(), threads, k));
        let writer = s.spawn(|| keep_rewriting(live, &stop));
        let run = run.join().expect("run thread");
        stop.store(true, Ordering::Relaxed);
        (run, writer.join().expect("writer thread"))
    })
}

#[test]
fn file_rewritten_during_its_whole_copy_is_never_put_in_place() {
    // Whole-file copies (64 MiB is not above the default chunk size) and
    // chunked ones; a new target and an existing one.
    for (chunk, existing) in [
        (None, false),
        (None, true),
        (Some(MIB), false),
        (Some(MIB), true),
    ] {
        let name = format!(
            "file_rewritten_during_its_copy-{}-{}",
            if chunk.is_some() { "chunked" } else { "whole" },
            if existing { "existing" } else { "new" }
        );
        let t = TestDir::new(&name);
        let size = if chunk.is_some() { 16 * MIB } else { 64 * MIB };
        tree!(t.src(), { "live" => random(size), "calm" => file("not changing") });
        let live = t.src().join("live");
        if existing {
            tree!(t.dst(), { "live" => file("the old version") mtime(1_500_000_000, 0) });
        }
        let before = existing.then(|| stat_snapshot(&t.dst()));
        let k = Knobs {
            chunk,
            retries: Some(0),
            copier: Some(Arc::new(GenericCopier::read_write_only())),
            ..Knobs::default()
        };
        let (out, writes) = run_while_rewriting(&t, &live, 4, &k);
        eprintln!("{name}: {writes} writes during the run");
        assert_eq!(out.exit, 1, "{name}: {out:#?}");
        assert_eq!(out.stat("failed"), 1, "{name}: {}", out.stats);
        assert_eq!(out.stat("changed_during_copy"), 1, "{name}: {}", out.stats);
        let errs = out.errors_of("live");
        assert!(
            errs.iter()
                .any(|e| e.message.contains("changed during copy")),
            "{name}: no \"changed during copy\" error for live: {:#?}",
            out.errors
        );
        let target = t.dst().join("live");
        if existing {
            assert_eq!(crate::util::read(&target), b"the old version", "{name}");
            let after = stat_snapshot(&t.dst());
            assert_eq!(
                before.as_ref().and_then(|b| b.get(b"live".as_slice())),
                after.get(b"live".as_slice()),
                "{name}: the old target was touched"
            );
        } else {
            assert!(!target.exists(), "{name}: a changing file was put in place");
        }
        assert_eq!(crate::util::read(t.dst().join("calm")), b"not changing");
        assert_no_leftovers(&t.dst());
    }
}

/// Changes the source file `name` (content and mtime) after each of the
/// first `times` data copies of it: deterministic changes during a copy,
/// whatever the clock's granularity.
fn changing_source(src: PathBuf, name: &'static str, times: u64) -> Arc<dyn Copier> {
    let n = AtomicU64::new(0);
    Hooked::around(move |job: &DataJob<'_>, when: When| {
        if when == When::After && job_is(job, name) {
            let k = n.fetch_add(1, Ordering::SeqCst);
            if k < times {
                rewrite(&src, 4096 * k, 4096, 1000 + k);
                set_mtime(&src, 1_650_000_000 + k as i64, 0);
            }
        }
    })
}

#[test]
fn file_changed_during_its_copy_is_retried() {
    for threads in LIB_THREADS {
        for chunk in [None, Some(MIB)] {
            let name = format!(
                "file_changed_during_its_copy_is_retried-{}-{threads}t",
                if chunk.is_some() { "chunked" } else { "whole" }
            );
            let t = TestDir::new(&name);
            tree!(t.src(), { "live" => random(3 * MIB + 5), "calm" => random(5000) });
            tree!(t.dst(), { "live" => file("old") });
            let live = t.src().join("live");
            // A whole file changes after its first two attempts (retries: 2,
            // the third attempt succeeds); a chunked one after its first
            // chunk (its second attempt succeeds).
            let changes = if chunk.is_some() { 1 } else { 2 };
            let k = Knobs {
                chunk,
                retries: Some(2),
                copier: Some(changing_source(live.clone(), "live", changes)),
                ..Knobs::default()
            };
            let out = run_lib(&t.src(), &t.dst(), threads, &k);
            out.assert_ok();
            assert_eq!(
                out.stat("changed_during_copy"),
                changes,
                "{name}: {}",
                out.stats
            );
            assert_synced!(t.src(), t.dst());
            assert_no_leftovers(&t.dst());

            // One change more than the retries allow: reported, not put in place.
            tree!(t.src(), { "live" => random(3 * MIB + 6) });
            let k = Knobs {
                chunk,
                retries: Some(changes as u32 - 1),
                copier: Some(changing_source(live.clone(), "live", changes)),
                ..Knobs::default()
            };
            let before = crate::util::read(t.dst().join("live"));
            let out = run_lib(&t.src(), &t.dst(), threads, &k);
            assert_eq!(out.exit, 1, "{name}: {out:#?}");
            assert_eq!(
                out.stat("changed_during_copy"),
                changes,
                "{name}: {}",
                out.stats
            );
            assert!(
                out.errors_of("live")
                    .iter()
                    .any(|e| e.message.contains("changed during copy")),
                "{name}: {:#?}",
                out.errors
            );
            assert_eq!(
                crate::util::read(t.dst().join("live")),
                before,
                "{name}: the previous version was replaced"
            );
            assert_no_leftovers(&t.dst());
        }
    }
}

/// Truncates the source file `name` to `to` bytes before the first data
/// copy of it that starts at `at` (a chunk's offset; 0 for a whole file).
fn truncating_source(src: PathBuf, name: &'static str, at: u64, to: u64) -> Arc<dyn Copier> {
    let done = AtomicBool::new(false);
    Hooked::around(move |job: &DataJob<'_>, when: When| {
        if when == When::Before
            && job_is(job, name)
            && job.offset == at
            && !done.swap(true, Ordering::SeqCst)
        {
            OpenOptions::new()
                .write(true)
                .open(&src)
                .and_then(|f| f.set_len(to))
                .expect("truncate the source");
        }
    })
}

/// Issue 12: a source that shrinks while it is copied is a change during
/// the copy like one that grows: retried (and then copied whole), or with
/// no retry left reported as "changed during copy", never as an end of
/// file, and the old target stays. A small file and a chunked one.
#[test]
fn file_truncated_during_its_copy_is_a_change() {
    for threads in LIB_THREADS {
        for chunk in [None, Some(MIB)] {
            let name = format!(
                "file_truncated_during_its_copy_is_a_change-{}-{threads}t",
                if chunk.is_some() { "chunked" } else { "whole" }
            );
            // A whole file is cut before its copy; a chunked one before
            // its third chunk, to 1.5 MiB (it stays chunked).
            let (at, to) = if chunk.is_some() {
                (2 * MIB, 3 * MIB / 2)
            } else {
                (0, 1000)
            };
            for retries in [2, 0] {
                let t = TestDir::new(&format!("{name}-r{retries}"));
                tree!(t.src(), { "shrinks" => random(3 * MIB + 5), "calm" => random(5000) });
                tree!(t.dst(), { "shrinks" => file("old") });
                let k = Knobs {
                    chunk,
                    retries: Some(retries),
                    copier: Some(truncating_source(
                        t.src().join("shrinks"),
                        "shrinks",
                        at,
                        to,
                    )),
                    ..Knobs::default()
                };
                let out = run_lib(&t.src(), &t.dst(), threads, &k);
                assert_eq!(out.stat("changed_during_copy"), 1, "{name}: {out:#?}");
                assert!(
                    !out.errors.iter().any(|e| e.message.contains("end of file")),
                    "{name}: a shrinking source reported as an end of file: {:#?}",
                    out.errors
                );
                assert_no_leftovers(&t.dst());
                if retries > 0 {
                    out.assert_ok();
                    assert_eq!(
                        std::fs::metadata(t.dst().join("shrinks"))
                            .expect("stat")
                            .len(),
                        to
                    );
                    assert_synced!(t.src(), t.dst());
                    continue;
                }
                assert_eq!(out.exit, 1, "{name}: {out:#?}");
                let errs = out.errors_of("shrinks");
                assert!(
                    errs.len() == 1 && errs[0].message.contains("changed during copy"),
                    "{name}: {:#?}",
                    out.errors
                );
                assert_eq!(
                    read(t.dst().join("shrinks")),
                    b"old",
                    "{name}: the old target was replaced"
                );
                assert_eq!(read(t.dst().join("calm")), read(t.src().join("calm")));
            }
        }
    }
}

// ----- 5. corruption between write and verify -------------------------------

/// A tree synced once, then changed: `victim` (whole-file copy) and `big`
/// (chunked) have an old version in the target.
fn synced_then_changed(t: &TestDir) {
    tree!(t.src(), {
        "victim" => random(200_000),
        "big" => random(3 * MIB + 5),
        "fine" => random(10_000),
        "d/other" => random(70_000),
    });
    run_lib(&t.src(), &t.dst(), 4, &Knobs::chunked()).assert_ok();
    tree!(t.src(), {
        "victim" => random(200_001) mtime(1_700_000_000, 1),
        "big" => random(3 * MIB + 7) mtime(1_700_000_000, 2),
        "fine" => random(10_001),
        "d/other" => random(70_001),
    });
}

#[test]
fn verification_catches_corruption_of_a_whole_file() {
    for threads in LIB_THREADS {
        let t = TestDir::new(&format!("verification_catches_corruption-whole-{threads}t"));
        synced_then_changed(&t);
        let old = crate::util::read(t.dst().join("victim"));
        let flips = Arc::new(AtomicU64::new(0));
        let k = Knobs {
            copier: Some(corrupting("victim", None, Arc::clone(&flips))),
            retries: Some(0),
            ..Knobs::chunked()
        };
        let out = run_lib(&t.src(), &t.dst(), threads, &k);
        assert_eq!(
            flips.load(Ordering::SeqCst),
            1,
            "the corruption was not injected"
        );
        assert_eq!(out.exit, 1, "{out:#?}");
        assert_eq!(out.stat("failed"), 1, "{}", out.stats);
        assert!(
            out.errors_of("victim").iter().any(|e| e.op == "verify"),
            "no verify error for victim: {:#?}",
            out.errors
        );
        assert_eq!(
            crate::util::read(t.dst().join("victim")),
            old,
            "the corrupt copy replaced the target"
        );
        assert_no_leftovers(&t.dst());
        assert_synced!(t.src(), t.dst(), except: ["victim"]);
    }
}

/// On tmpfs a copy is read back as it is (the cache is the storage:
/// nothing written back or dropped first), but still from the target: a
/// corrupted copy is caught for a new file (made unnamed) and for one
/// that replaces a target (a named temporary), and neither is put in place.
/// (The generic copier reads back each piece right after writing it on
/// tmpfs; a copier that changes the target after that, as this hook does,
/// gives no read-back, and the engine reads the file again.)
#[test]
fn verification_catches_corruption_on_tmpfs() {
    for threads in LIB_THREADS {
        let t = TestDir::new(&format!(
            "verification_catches_corruption_on_tmpfs-{threads}t"
        ));
        let mnt = t.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir mount point");
        let _m = crate::util::mounts::TestMount::tmpfs(&mnt, "64m").expect("mount a tmpfs");
        let (src, dst) = (mnt.join("src"), mnt.join("dst"));
        tree!(src, {
            "victim" => random(20_000),
            "fine" => random(10_000),
        });
        run_lib(&src, &dst, threads, &Knobs::chunked()).assert_ok();
        tree!(src, {
            "victim" => random(20_001) mtime(1_700_000_000, 1),
            "d/new" => random(5_000),
        });
        let old = read(dst.join("victim"));
        let flips = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&flips);
        let copier = Hooked::around(move |job: &DataJob<'_>, when: When| {
            if when == When::After && (job_is(job, "victim") || job_is(job, "new")) {
                let mut b = [0u8; 1];
                job.dst.read_exact_at(&mut b, 100).expect("read back");
                job.dst.write_all_at(&[b[0] ^ 1], 100).expect("flip a bit");
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        let k = Knobs {
            copier: Some(copier),
            retries: Some(0),
            ..Knobs::chunked()
        };
        let out = run_lib(&src, &dst, threads, &k);
        assert_eq!(
            flips.load(Ordering::SeqCst),
            2,
            "the corruption was not injected"
        );
        assert_eq!(out.exit, 1, "{out:#?}");
        assert_eq!(out.stat("failed"), 2, "{}", out.stats);
        for name in ["victim", "d/new"] {
            assert!(
                out.errors_of(name).iter().any(|e| e.op == "verify"),
                "no verify error for {name}: {:#?}",
                out.errors
            );
        }
        assert_eq!(
            read(dst.join("victim")),
            old,
            "the corrupt copy replaced the target"
        );
        assert!(
            !dst.join("d/new").exists(),
            "the corrupt new file was put in place"
        );
        assert_no_leftovers(&dst);
        assert_synced!(src, dst, except: ["victim", "d/new"]);
    }
}

#[test]
fn verification_catches_corruption_of_one_chunk() {
    for threads in LIB_THREADS {
        let t = TestDir::new(&format!("verification_catches_corruption-chunk-{threads}t"));
        synced_then_changed(&t);
        let old = crate::util::read(t.dst().join("big"));
        let flips = Arc::new(AtomicU64::new(0));
        // Below the resume threshold (1 GiB by default): nothing to resume,
        // so nothing may stay behind.
        let k = Knobs {
            copier: Some(corrupting("big", Some(2 * MIB), Arc::clone(&flips))),
            retries: Some(0),
            ..Knobs::chunked()
        };
        let out = run_lib(&t.src(), &t.dst(), threads, &k);
        assert_eq!(
            flips.load(Ordering::SeqCst),
            1,
            "the corruption was not injected"
        );
        assert_eq!(out.exit, 1, "{out:#?}");
        assert_eq!(out.stat("failed"), 1, "{}", out.stats);
        assert!(
            out.errors_of("big").iter().any(|e| e.op == "verify"),
            "no verify error for big: {:#?}",
            out.errors
        );
        assert_eq!(
            crate::util::read(t.dst().join("big")),
            old,
            "the target was replaced"
        );
        assert!(
            leftovers(&t.dst()).is_empty(),
            "a failed chunked file below the resume threshold left {:?} (nothing will resume \
             from them); errors: {:#?}",
            leftovers(&t.dst()),
            out.errors
        );
        assert_synced!(t.src(), t.dst(), except: ["big"]);
    }
}

#[test]
fn corrupt_chunk_of_a_resumable_file_is_recopied_alone() {
    for threads in LIB_THREADS {
        let t = TestDir::new(&format!("corrupt_chunk_of_a_resumable_file-{threads}t"));
        synced_then_changed(&t);
        let old = crate::util::read(t.dst().join("big"));
        let flips = Arc::new(AtomicU64::new(0));
        let k = Knobs {
            copier: Some(corrupting("big", Some(MIB), Arc::clone(&flips))),
            resume: Some(MIB),
            ..Knobs::chunked()
        };
        let out = run_lib(&t.src(), &t.dst(), threads, &k);
        assert_eq!(
            flips.load(Ordering::SeqCst),
            1,
            "the corruption was not injected"
        );
        assert_eq!(out.exit, 1, "{out:#?}");
        assert_eq!(out.stat("failed"), 1, "{}", out.stats);
        assert!(
            out.errors_of("big").iter().any(|e| e.op == "verify"),
            "{:#?}",
            out.errors
        );
        assert_eq!(
            crate::util::read(t.dst().join("big")),
            old,
            "the target was replaced"
        );
        // The verified chunks are kept for the next run, which copies the
        // bad chunk only.
        let k = Knobs {
            resume: Some(MIB),
            ..Knobs::chunked()
        };
        let out = run_lib(&t.src(), &t.dst(), threads, &k);
        out.assert_ok();
        assert_eq!(out.stat("chunks"), 1, "{}", out.stats);
        assert_eq!(out.stat("chunks_resumed"), 3, "{}", out.stats);
        assert_eq!(out.stat("bytes_copied"), MIB, "{}", out.stats);
        assert_synced!(t.src(), t.dst());
        assert_no_leftovers(&t.dst());
    }
}

/// In a directory listed in parts (ADR 021), a large file's part file
/// is kept by the directory's own task when a part's copy will resume
/// it, and that copy resumes it.
#[test]
fn a_wide_directory_s_part_file_is_resumed() {
    let t = TestDir::new("a_wide_directory_s_part_file_is_resumed");
    for i in 0..30 {
        std::fs::create_dir_all(t.src()).unwrap();
        std::fs::write(t.src().join(format!("small{i:02}")), "s").unwrap();
    }
    synced_then_changed(&t);
    let flips = Arc::new(AtomicU64::new(0));
    let k = Knobs {
        copier: Some(corrupting("big", Some(MIB), Arc::clone(&flips))),
        resume: Some(MIB),
        wide_dir: Some(8),
        ..Knobs::chunked()
    };
    let out = run_lib(&t.src(), &t.dst(), 4, &k);
    assert_eq!(flips.load(Ordering::SeqCst), 1, "not injected");
    assert_eq!(out.exit, 1, "{out:#?}");
    assert!(out.stat("dir_parts") > 1, "{}", out.stats);
    let k = Knobs {
        resume: Some(MIB),
        wide_dir: Some(8),
        ..Knobs::chunked()
    };
    let out = run_lib(&t.src(), &t.dst(), 4, &k);
    out.assert_ok();
    assert!(out.stat("dir_parts") > 1, "{}", out.stats);
    assert_eq!(out.stat("chunks"), 1, "{}", out.stats);
    assert_eq!(out.stat("chunks_resumed"), 3, "{}", out.stats);
    assert_synced!(t.src(), t.dst());
    assert_no_leftovers(&t.dst());
}

#[test]
fn without_verification_corruption_goes_unnoticed() {
    let t = TestDir::new("without_verification_corruption_goes_unnoticed");
    synced_then_changed(&t);
    let flips = Arc::new(AtomicU64::new(0));
    let k = Knobs {
        no_verify: true,
        copier: Some(corrupting("victim", None, Arc::clone(&flips))),
        ..Knobs::chunked()
    };
    let out = run_lib(&t.src(), &t.dst(), 4, &k);
    out.assert_ok();
    assert_eq!(flips.load(Ordering::SeqCst), 1);
    assert_eq!(out.stat("verified"), 0, "{}", out.stats);
    let (src, dst) = (
        crate::util::read(t.src().join("victim")),
        crate::util::read(t.dst().join("victim")),
    );
    let differing = src.iter().zip(&dst).filter(|(a, b)| a != b).count();
    assert_eq!(
        (src.len(), differing),
        (dst.len(), 1),
        "one byte of the target is silently wrong"
    );
    // Same size and mtime: a normal run sees nothing to do; only --checksum
    // repairs it.
    let again = run_lib(&t.src(), &t.dst(), 4, &Knobs::chunked());
    again.assert_ok();
    assert!(again.itemized.is_empty(), "{:#?}", again.itemized);
    assert_ne!(crate::util::read(t.dst().join("victim")), src);
    let fixed = run_lib(
        &t.src(),
        &t.dst(),
        4,
        &Knobs {
            checksum: true,
            ..Knobs::chunked()
        },
    );
    fixed.assert_ok();
    assert_eq!(fixed.itemized, [">fc........ victim"]);
    assert_synced!(t.src(), t.dst());
}

// ----- 6. --min-age ---------------------------------------------------------

#[test]
fn min_age_skips_young_files_and_keeps_their_old_targets() {
    crate::util::each_config("min_age_skips_young_files", |cfg, t| {
        tree!(t.src(), {
            "young" => file("the new version"),
            "d/young2" => random(3000),
            "ln" => symlink("young"),
        });
        tree!(t.dst(), {
            "young" => file("old") mtime(1_500_000_000, 0),
            "extra" => file("not in the source"),
        });
        let before = stat_snapshot(&t.dst());
        let k = Knobs {
            delete: true,
            min_age: Some(3600),
            ..Knobs::default()
        };
        let out = run_cfg(cfg, &t.src(), &t.dst(), &k);
        out.assert_ok();
        assert_eq!(out.stat("skipped_young"), 3, "{}", out.stats);
        let mut skipped = out.skipped.clone();
        skipped.sort();
        assert_eq!(skipped, ["d/young2", "ln", "young"]);
        assert_eq!(
            before.get(b"young".as_slice()),
            stat_snapshot(&t.dst()).get(b"young".as_slice()),
            "the old target of a skipped file was touched"
        );
        assert_eq!(crate::util::read(t.dst().join("young")), b"old");
        assert!(!t.dst().join("extra").exists(), "--delete still deletes");
        assert!(t.dst().join("d").is_dir(), "directories are not skipped");
        assert!(
            !t.dst().join("d/young2").exists() && t.dst().join("ln").symlink_metadata().is_err()
        );
        assert!(
            out.itemized
                .iter()
                .all(|l| !l.contains("young") && !l.ends_with(" ln")),
            "skipped entries itemized: {:#?}",
            out.itemized
        );
        assert_no_leftovers(&t.dst());

        let all = run_cfg(
            cfg,
            &t.src(),
            &t.dst(),
            &Knobs {
                min_age: Some(0),
                ..k
            },
        );
        all.assert_ok();
        assert_eq!(all.stat("skipped_young"), 0);
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}

#[test]
fn min_age_copies_files_older_than_the_limit() {
    let configs = selected_configs();
    let dirs: Vec<TestDir> = configs
        .iter()
        .map(|cfg| {
            let t = TestDir::new(&format!("min_age_copies_old_files-{cfg}"));
            tree!(t.src(), { "old/a" => random(1000), "old/b" => file("b"), "old_link" => symlink("old/a") });
            t
        })
        .collect();
    // One wait for all configurations: these files are then 2 s old.
    std::thread::sleep(Duration::from_millis(2100));
    for (cfg, t) in configs.iter().zip(&dirs) {
        tree!(t.src(), { "fresh" => file("just written") });
        let k = Knobs {
            min_age: Some(1),
            ..Knobs::default()
        };
        let out = run_cfg(*cfg, &t.src(), &t.dst(), &k);
        out.assert_ok();
        assert_eq!(out.skipped, ["fresh"], "[{cfg}]");
        assert_eq!(out.stat("skipped_young"), 1, "[{cfg}] {}", out.stats);
        assert_synced!(t.src(), t.dst(), except: ["fresh"]);
        assert!(!t.dst().join("fresh").exists(), "[{cfg}]");
    }
}

// ----- 7. --checksum --------------------------------------------------------

#[test]
fn checksum_decides_by_content() {
    crate::util::each_config("checksum_decides_by_content", |cfg, t| {
        let when = (1_600_000_000, 0);
        tree!(t.src(), { "f" => file("AAAAAAAA") mtime(when.0, when.1) });
        tree!(t.dst(), { "f" => file("BBBBBBBB") mtime(when.0, when.1) });
        let rsync_says = |args: &[&str]| -> Vec<String> {
            if !crate::util::require_rsync() {
                return Vec::new();
            }
            let mut a = vec!["-aHAX", "--numeric-ids", "-n", "-i"];
            a.extend_from_slice(args);
            let mut v = rsync_itemize(&t.src(), &t.dst(), &a);
            v.retain(|l| !l.ends_with('/'));
            v
        };

        // Same size and mtime: a normal run trusts them, as rsync does.
        assert!(rsync_says(&[]).is_empty());
        let plain = run_cfg(cfg, &t.src(), &t.dst(), &Knobs::default());
        plain.assert_ok();
        assert!(
            plain.itemized.iter().all(|l| !l.ends_with(" f")),
            "{:#?}",
            plain.itemized
        );
        assert_eq!(crate::util::read(t.dst().join("f")), b"BBBBBBBB");

        let c = Knobs {
            checksum: true,
            ..Knobs::default()
        };
        let expected = rsync_says(&["-c"]);
        let out = run_cfg(cfg, &t.src(), &t.dst(), &c);
        out.assert_ok();
        assert_eq!(out.itemized, [">fc........ f"]);
        if crate::util::require_rsync() {
            assert_eq!(out.itemized, expected, "rsync -c itemizes differently");
        }
        assert_eq!(out.stat("bytes_copied"), 8);
        assert_synced!(t.src(), t.dst());

        // Equal content, another mtime: -c only sets the time. (Making
        // `g` moved both roots' mtimes: their `./` lines are left out.)
        tree!(t.src(), { "g" => file("same bytes") mtime(when.0, when.1) });
        tree!(t.dst(), { "g" => file("same bytes") mtime(when.0 + 100, 0) });
        let expected = rsync_says(&["-c"]);
        let out = run_cfg(cfg, &t.src(), &t.dst(), &c);
        out.assert_ok();
        let files: Vec<&String> = out.itemized.iter().filter(|l| !l.ends_with('/')).collect();
        assert_eq!(files, [".f..t...... g"]);
        if crate::util::require_rsync() {
            assert_eq!(
                files,
                expected.iter().collect::<Vec<_>>(),
                "rsync -c itemizes differently"
            );
        }
        assert_eq!(out.stat("bytes_copied"), 0, "{}", out.stats);
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}

/// A file above the chunk size is compared chunk by chunk (by any worker);
/// one differing byte in one chunk gets the whole file copied (in chunks),
/// equal content with another mtime gets only its time, and no marker of a
/// differing chunk is left behind. A dry run compares it whole and changes
/// nothing.
#[test]
fn checksum_compares_large_files_in_chunks() {
    crate::util::each_config("checksum_compares_large_files_in_chunks", |cfg, t| {
        let when = (1_600_000_000, 0);
        let size = 5 * MIB + 100;
        let data = random_bytes(11, size);
        std::fs::create_dir_all(t.dst()).expect("make target");
        std::fs::write(t.src().join("big"), &data).expect("write source");
        std::fs::write(t.dst().join("big"), &data).expect("write target");
        set_mtime(&t.src().join("big"), when.0, when.1);
        set_mtime(&t.dst().join("big"), when.0, when.1);
        // The roots alike too: nothing but `big` to itemize.
        set_mtime(&t.src(), when.0, when.1);
        set_mtime(&t.dst(), when.0, when.1);
        let c = Knobs {
            checksum: true,
            ..Knobs::chunked()
        };
        // A -c run that itemizes `want`, as rsync -c does.
        let run_c = |want: &str| -> Run {
            let rsync = crate::util::require_rsync().then(|| {
                let a = ["-aHAX", "--numeric-ids", "-n", "-i", "-c"];
                let mut v = rsync_itemize(&t.src(), &t.dst(), &a);
                v.retain(|l| !l.ends_with('/'));
                v
            });
            let out = run_cfg(cfg, &t.src(), &t.dst(), &c);
            out.assert_ok();
            assert_eq!(out.itemized, [want]);
            if let Some(expected) = rsync {
                assert_eq!(out.itemized, expected, "rsync -c itemizes differently");
            }
            out
        };
        let no_markers = |what: &str| {
            let left: Vec<_> = std::fs::read_dir(t.dst())
                .expect("list target")
                .map(|e| e.expect("entry").file_name())
                .filter(|n| n.as_bytes().starts_with(b".psync-"))
                .collect();
            assert!(left.is_empty(), "[{cfg}] {what}: left {left:?}");
        };

        // Equal: six chunks compared, nothing copied.
        let out = run_cfg(cfg, &t.src(), &t.dst(), &c);
        out.assert_ok();
        assert!(out.itemized.is_empty(), "{:#?}", out.itemized);
        assert_eq!(out.stat("chunks_compared"), 6, "{}", out.stats);
        assert_eq!(out.stat("bytes_copied"), 0, "{}", out.stats);
        no_markers("equal");

        // One byte of chunk 3 differs, size and mtime alike.
        let mut other = data.clone();
        other[(3 * MIB + 17) as usize] ^= 0x5a;
        std::fs::write(t.dst().join("big"), &other).expect("write target");
        set_mtime(&t.dst().join("big"), when.0, when.1);
        let plain = run_cfg(cfg, &t.src(), &t.dst(), &Knobs::chunked());
        plain.assert_ok();
        assert!(plain.itemized.is_empty(), "{:#?}", plain.itemized);

        let dry = run_cfg(
            cfg,
            &t.src(),
            &t.dst(),
            &Knobs {
                dry_run: true,
                ..c.clone()
            },
        );
        dry.assert_ok();
        assert_eq!(dry.itemized, [">fc........ big"], "[{cfg}] dry run");
        assert_eq!(read(t.dst().join("big")), other, "a dry run changed it");
        no_markers("dry run");

        let out = run_c(">fc........ big");
        assert_eq!(out.stat("chunks_compared"), 6, "{}", out.stats);
        assert_eq!(out.stat("chunks"), 6, "{}", out.stats);
        assert_eq!(out.stat("bytes_copied"), size, "{}", out.stats);
        assert_synced!(t.src(), t.dst());
        no_markers("differing");

        // Equal content, another mtime: only the time is set.
        set_mtime(&t.dst().join("big"), when.0 + 100, 0);
        let out = run_c(".f..t...... big");
        assert_eq!(out.stat("bytes_copied"), 0, "{}", out.stats);
        assert_synced!(t.src(), t.dst());

        // A killed run's marker is a stale temporary to the next run.
        let stale = t
            .dst()
            .join(".psync-tmp.00000000000000aa.00000000000000bb.differs");
        std::fs::write(&stale, b"").expect("write stale marker");
        let out = run_cfg(cfg, &t.src(), &t.dst(), &c);
        out.assert_ok();
        // Writing the marker moved the root's mtime, which the run sets
        // back, as rsync says.
        assert_eq!(out.itemized, [".d..t...... ./"]);
        assert_eq!(out.stat("stale_removed"), 1, "{}", out.stats);
        no_markers("stale");
        rsync_oracle(&t.src(), &t.dst());
    });
}

// ----- 8. files that vanish -------------------------------------------------

#[test]
fn file_vanishing_after_the_listing_is_a_warning() {
    for threads in LIB_THREADS {
        let t = TestDir::new(&format!("file_vanishing_after_the_listing-{threads}t"));
        tree!(t.src(), {
            "gone" => file("soon deleted"),
            "big_gone" => random(3 * MIB),
            "stay" => file("stays"),
            "d/x" => random(20_000),
        });
        let victims = ["gone", "big_gone"].map(|n| t.src().join(n)).to_vec();
        let k = Knobs {
            walker: Some(Arc::new(Vanishing {
                victims: Mutex::new(victims),
            })),
            ..Knobs::chunked()
        };
        let out = run_lib(&t.src(), &t.dst(), threads, &k);
        out.assert_ok();
        assert_eq!(out.stat("warnings"), 2, "{out:#?}");
        assert!(
            out.warnings.iter().all(|w| w.contains("vanished")),
            "{:#?}",
            out.warnings
        );
        assert!(!t.dst().join("gone").exists() && !t.dst().join("big_gone").exists());
        assert_no_leftovers(&t.dst());
        // The deletions changed the source root's mtime after it was
        // listed: the next run only sets that, and copies nothing.
        let again = run_lib(&t.src(), &t.dst(), threads, &Knobs::chunked());
        again.assert_ok();
        assert_eq!(again.stat("bytes_copied"), 0, "{}", again.stats);
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    }
}

#[test]
fn large_file_vanishing_during_its_copy_is_a_warning() {
    for threads in LIB_THREADS {
        let t = TestDir::new(&format!("large_file_vanishing_during_its_copy-{threads}t"));
        tree!(t.src(), { "big_gone" => random(4 * MIB), "stay" => file("stays") });
        let victim = t.src().join("big_gone");
        // Once: chunks of the file start on several threads at a time.
        let deleted = AtomicBool::new(false);
        let copier = Hooked::around(move |job: &DataJob<'_>, when: When| {
            if when == When::Before
                && job_is(job, "big_gone")
                && !deleted.swap(true, Ordering::SeqCst)
            {
                std::fs::remove_file(&victim).expect("delete the source");
            }
        });
        let k = Knobs {
            copier: Some(copier),
            ..Knobs::chunked()
        };
        let out = run_lib(&t.src(), &t.dst(), threads, &k);
        out.assert_ok();
        assert_eq!(out.stat("warnings"), 1, "{out:#?}");
        assert!(out.warnings[0].contains("vanished"), "{:#?}", out.warnings);
        assert!(!t.dst().join("big_gone").exists());
        assert_no_leftovers(&t.dst());
        // The deletion changed the source root's mtime after it was
        // listed: the next run only sets that, and copies nothing.
        let again = run_lib(&t.src(), &t.dst(), threads, &Knobs::chunked());
        again.assert_ok();
        assert_eq!(again.stat("bytes_copied"), 0, "{}", again.stats);
        assert_synced!(t.src(), t.dst());
    }
}

/// A full tmpfs while the chunks of a large file are written: the chunk
/// that does not fit fails with "No space left on device", the process is
/// not killed by a signal (chunks once went through mappings, where a
/// full tmpfs is a `SIGBUS`), nothing partial appears under the final
/// name, and a run with room finishes the job.
#[test]
fn full_tmpfs_under_chunks_is_an_error_not_a_signal() {
    let must = crate::util::mounts::must_have_mounts();
    let t = TestDir::new("full-tmpfs");
    let mnt = t.path().join("small-tmpfs");
    std::fs::create_dir(&mnt).expect("mkdir mount point");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12M", "psync-test"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(!must, "CI=true but a 12 MiB tmpfs cannot be mounted");
        eprintln!("SKIPPED full_tmpfs_under_chunks: cannot mount a tmpfs (not root?)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir src");
    std::fs::write(src.join("big"), random_bytes(11, 20 << 20)).expect("write big");
    let dst = mnt.join("dst");
    let sync = || {
        Command::new(psync_bin())
            .args(["sync", "--chunk-size", "1M", "--no-verify", "--json"])
            .arg(&src)
            .arg(&dst)
            .output()
            .expect("run psync")
    };
    let out = sync();
    assert_eq!(
        out.status.signal(),
        None,
        "killed by a signal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A full target stops the run (exit 3, see target_full.rs).
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("No space left on device") && stderr.contains("big"),
        "the error names the file and the cause: {stderr}"
    );
    assert!(
        !dst.join("big").exists(),
        "a partial file under its final name"
    );
    // Room again: the same target, a larger file system.
    Command::new("mount")
        .args(["-o", "remount,size=64M"])
        .arg(&mnt)
        .status()
        .expect("remount");
    let again = sync();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let summary = json_lines(&String::from_utf8_lossy(&again.stdout))
        .into_iter()
        .find(|e| e["event"] == "summary")
        .expect("a summary");
    assert_eq!(
        summary["by_read_write"], 1,
        "the chunks went through a buffer: {summary}"
    );
    assert_eq!(read(dst.join("big")), read(src.join("big")));
    assert_no_leftovers(&dst);
}

// ----- 9. the page cache ----------------------------------------------------

/// Pages of `p` in the page cache, and pages in all (`mincore` over a
/// mapping that is never touched, so it faults nothing in).
fn cached_pages(p: &Path) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let f = File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let len = usize::try_from(f.metadata().expect("stat").len()).expect("fits");
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page size");
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: a read-only shared mapping of an open file of `len` bytes,
    // never dereferenced; mincore writes one byte per page into `vec`,
    // which has that many; the mapping is removed before returning.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED, "mmap {}", p.display());
        let rc = libc::mincore(addr, len, vec.as_mut_ptr());
        libc::munmap(addr, len);
        assert_eq!(rc, 0, "mincore {}", p.display());
    }
    (vec.iter().filter(|&&b| b & 1 == 1).count(), vec.len())
}

/// Once copied, a file's source data leaves the page cache (a migration
/// reads it once; keeping it would evict the rest of the source): a large
/// file's chunk by chunk, a small file's after its copy;
/// `--keep-source-cache` keeps everything. The same for both sides of files
/// `--checksum` found equal. On a loop-mounted ext4: tmpfs pages cannot be
/// dropped.
#[test]
fn source_pages_of_copied_files_leave_the_cache() {
    let test = "source_pages_of_copied_files_leave_the_cache";
    let m = match crate::util::mounts::shared() {
        Ok(m) => m,
        Err(why) => {
            assert!(
                !crate::util::mounts::must_have_mounts(),
                "CI=true but {test} cannot mount file systems: {why}"
            );
            skip!("{why}");
        }
    };
    use crate::util::mounts::Fs;
    for cfg in selected_configs() {
        for keep in [false, true] {
            let s = m
                .scratch(test, Fs::Ext4, Fs::Ext4)
                .unwrap_or_else(|why| panic!("ext4 scratch: {why}"));
            let (big, small) = (s.src().join("big"), s.src().join("small"));
            std::fs::write(&big, random_bytes(3, 6 * MIB + 4321)).expect("write big");
            std::fs::write(&small, random_bytes(4, 300 << 10)).expect("write small");
            for p in [&big, &small] {
                // Clean and cached: only clean pages can be dropped.
                File::open(p).and_then(|f| f.sync_all()).expect("fsync");
                read(p);
                let (cached, all) = cached_pages(p);
                assert_eq!(
                    cached,
                    all,
                    "{} is not all cached before the run",
                    p.display()
                );
            }
            let k = Knobs {
                keep_source_cache: keep,
                ..Knobs::chunked()
            };
            let out = run_cfg(cfg, &s.src(), &s.dst(), &k);
            out.assert_ok();
            assert_eq!(out.stat("chunks"), 7, "{}", out.stats);
            // Before the comparison, which reads the source again.
            let (big_cached, big_all) = cached_pages(&big);
            let (small_cached, small_all) = cached_pages(&small);
            assert_synced!(s.src(), s.dst());
            let label = format!("[{cfg}] keep_source_cache={keep}");
            // Readahead at a chunk's end may bring back a few pages of the
            // next chunk when that one was dropped first.
            // Kept means kept but for what reclaim took meanwhile: the suite
            // runs beside tests that fill the page cache (loop images,
            // FUSE), and a cgroup's limit reclaims a few clean pages (seen:
            // 2 of 1,538, and 1 of a small file's 75). Dropped means at
            // most a tenth left.
            let check = |what: &str, (cached, all): (usize, usize)| {
                if keep {
                    assert!(
                        cached * 100 >= all * 99 || cached + 2 >= all,
                        "{label}: {what}: {cached} of {all} pages kept"
                    );
                } else {
                    assert!(
                        cached * 10 <= all,
                        "{label}: {what}: {cached} of {all} pages still cached"
                    );
                }
            };
            check("copy, the large file", (big_cached, big_all));
            check("copy, the small file", (small_cached, small_all));

            // --checksum reads both sides of each file (the comparison
            // above cached them); found equal, neither is read again. The
            // small target's pages are clean once written back.
            File::open(s.dst().join("small"))
                .and_then(|f| f.sync_all())
                .expect("fsync");
            let c = Knobs {
                checksum: true,
                ..k.clone()
            };
            run_cfg(cfg, &s.src(), &s.dst(), &c).assert_ok();
            check("--checksum, the large source", cached_pages(&big));
            check(
                "--checksum, the large target",
                cached_pages(&s.dst().join("big")),
            );
            check("--checksum, the small source", cached_pages(&small));
            check(
                "--checksum, the small target",
                cached_pages(&s.dst().join("small")),
            );
        }
    }
}
