//! The engine: runs the tasks of a run, on whichever engine of the run
//! they reach (ADR 001, 011).
//!
//! A directory task lists both sides, plans, does the cheap actions itself
//! (deletions, mkdir, symlinks, specials, attribute fixes), spawns its
//! subdirectories and batches of file copies, and defers its own finish,
//! which applies the directory's attributes once everything inside it is
//! done. File copies go to a temporary name and are renamed into place only
//! when complete.
//!
//! One module per task family, all `impl Engine`:
//! - `dirs`: directory tasks and their finish;
//! - `files`: batches of small files and the copy steps others share;
//! - `bigfile`: large files in chunks, their part files and journals;
//! - `compare`: `--checksum` of large files, in chunks;
//! - `links`: hard-link groups and the link area;
//! - `attrs`: attributes, xattrs and ACLs of target entries;
//! - `temps`: psync's own names found on the target.
//!
//! This module holds the engine itself, task dispatch, reporting, and what
//! the families share ([`Here`], `Made`, `Filled`, `CopyFail`). Every change
//! to a target entry goes through the [`Copier`].

mod attrs;
mod audit;
pub(crate) mod bigfile;
pub(crate) mod compare;
mod dirs;
mod drylinks;
mod files;
mod fsattrs;
pub(crate) mod ident;
pub(crate) mod links;
mod temps;

pub use drylinks::DryLinks;

use crate::copy::{Copier, CopyOptions, Strategy};
use crate::entry::{Entry, Name, RelPath};
use crate::error::{Error, Op};
use crate::event::{Counts, Event, Stats};
use crate::fs::Dir;
use crate::itemize::Change;
use crate::plan::{PlanOptions, Planner};
use crate::task::Task;
use crate::transport::{Outcome, TaskContext, TaskReport, TaskRunner};
use crate::walk::Walker;
use crossbeam_channel::Sender;
use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A directory with more names than this on either side is listed and
/// planned in parts of an eighth of it (at most 2,048 names), each a task (ADR 021): a part
/// holds the entries and actions of 2,048 names at most (a few MiB).
pub(crate) const WIDE_DIR: usize = 65_536;

/// Prefix of every temporary name psync creates on a target.
pub const TEMP_PREFIX: &str = ".psync-tmp.";

/// Everything a worker needs to run tasks of one run. Built only by
/// [`Engine::from_spec`], from the run's [`crate::RunSpec`] and what the
/// process running it provides ([`crate::EngineContext`]): by
/// [`crate::Syncer::run`] for its own threads, and the same way by any
/// other process that takes part in the run.
pub struct Engine {
    pub(crate) src_root: Dir,
    pub(crate) dst_root: Option<Dir>,
    /// Device of the source root as this process sees it (`-x` stays on it).
    pub(crate) src_dev: u64,
    /// The run's names of the file systems this engine met, by this
    /// node's device numbers: what entries in tasks carry as `dev`
    /// (ADR 014).
    pub(crate) fs: crate::fsid::FsIds,
    pub(crate) src_path: PathBuf,
    pub(crate) dst_path: PathBuf,
    pub(crate) copier: Arc<dyn Copier>,
    pub(crate) walker: Arc<dyn Walker>,
    pub(crate) planner: Arc<dyn Planner>,
    pub(crate) plan_opts: PlanOptions,
    pub(crate) copy_opts: CopyOptions,
    pub(crate) dry_run: bool,
    /// `--max-delete` ([`crate::spec::RunSpec::max_delete`]).
    pub(crate) max_delete: Option<u64>,
    /// Deletions granted so far, shared by the run's engines here.
    pub(crate) deletions: Arc<dyn crate::spec::Allowance>,
    /// `--max-errors` ([`crate::spec::RunSpec::max_errors`]).
    pub(crate) max_errors: Option<u64>,
    /// Entries failed so far, shared by the run's engines here.
    pub(crate) failures: Arc<AtomicU64>,
    /// A dry run's hard-linked names, shared by the run's engines here
    /// (see [`crate::EngineContext::dry_links`]).
    pub(crate) dry_links: Option<Arc<DryLinks>>,
    /// `--bwlimit`, shared by the run's engines here.
    pub(crate) pacer: Arc<crate::copy::pace::Pacer>,
    pub(crate) itemize: bool,
    pub(crate) events: Option<Sender<Event>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) quit: Arc<AtomicBool>,
    pub(crate) run_id: u64,
    pub(crate) nonce: u32,
    /// The run's secret key: the names of its private entries on the
    /// target (temporaries, link area, markers) are derived from it, so
    /// no other user can predict them before they exist (ADR 010).
    pub(crate) secret: [u64; 2],
    pub(crate) seq: AtomicU64,
    pub(crate) batch_files: usize,
    pub(crate) batch_bytes: u64,
    pub(crate) retries: u32,
    /// Verify copied data by reading it back.
    pub(crate) verify: bool,
    /// The run wrote to the target root before its tasks (a probe file).
    pub(crate) root_touched: bool,
    /// [`crate::spec::RunSpec::verify_only`].
    pub(crate) verify_only: bool,
    /// [`crate::spec::RunSpec::manifest`].
    pub(crate) manifest: bool,
    /// [`crate::spec::RunSpec::wide_dir`].
    pub(crate) wide_dir: usize,
    /// Files larger than this are copied in chunks of this size.
    pub(crate) chunk_size: u64,
    /// Large files at least this big resume from their journal.
    pub(crate) resume_threshold: u64,
    /// Drop copied files' source pages from the page cache (ADR 005, 006).
    pub(crate) drop_source_cache: bool,
    /// When results reach stable storage (`--fsync`, ADR 009).
    pub(crate) flush: crate::durable::Flush,
    /// The run's hard-link area as this engine opened it: made by
    /// whichever engine of the run needs it first, found on the target by
    /// the others (`find_link_area`). A handle only: what the area holds
    /// is on the target (ADR 011).
    pub(crate) links: std::sync::OnceLock<Result<crate::engine::links::LinkArea, i32>>,
    /// Set once when a target write of this engine finds the target full
    /// or read-only: the run stops (see `stop.rs`) through the quit flag;
    /// the report takes the reason from whichever engine set it.
    pub(crate) stopped: std::sync::OnceLock<crate::stop::Stopped>,
    /// Part files this engine started filling (directory, source
    /// version), removed by it when the run stops before their finish.
    /// Per process by design: a part whose finish ran on another engine
    /// is gone by then (removing its name again does nothing), and what a
    /// dead worker leaves the next run removes.
    pub(crate) open_parts: std::sync::Mutex<Vec<(RelPath, Entry)>>,
    /// The kinds of inode flags and project ids the target refused that
    /// this engine warned about already (`fsattrs.rs`: once per kind).
    pub(crate) fsattr_warned: std::sync::atomic::AtomicU8,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("src", &self.src_path)
            .field("dst", &self.dst_path)
            .field("copier", &self.copier.name())
            .field("run_id", &format_args!("{:016x}", self.run_id))
            .finish_non_exhaustive()
    }
}

impl TaskRunner for Engine {
    /// Runs one task. [`Outcome::Abandoned`] when the quit flag is set
    /// before it starts or by the time it returns: a task that saw the
    /// flag may have returned early anywhere (a copy interrupted, a
    /// listing cut short, a finish skipped), and one that did not is
    /// safe to run again, so a task that ends with the run stopping is
    /// never acknowledged as done. Either way with what the task counted
    /// and reported (see `Engine::count`, `Engine::emit`).
    fn run(&self, task: Task, cx: &mut dyn TaskContext) -> Outcome {
        if self.quit.load(Ordering::Relaxed) {
            return Outcome::Abandoned(TaskReport::default());
        }
        let report = reporting(|| self.run_task(task, cx));
        if self.quit.load(Ordering::Relaxed) {
            Outcome::Abandoned(report)
        } else {
            Outcome::Done(report)
        }
    }

    /// Adds the task's counts to the run's and sends its events.
    fn acknowledge(&self, report: TaskReport) {
        self.stats.add(&report.counts);
        self.send_all(report.events);
    }

    fn run_id(&self) -> u64 {
        self.run_id
    }
}

/// Events a running task keeps before it sends them (see
/// [`Engine::emit`]): a few hundred KiB per worker thread at most.
const EVENTS_KEPT: usize = 4096;

thread_local! {
    /// The counts and unsent events of the task this thread runs
    /// ([`reporting`]); `None` outside a task. A task's work is all on
    /// the thread that runs it (the threads some steps start, hashing or
    /// flushing, count nothing, and what they report goes out at once).
    static TASK: RefCell<Option<TaskReport>> = const { RefCell::new(None) };
}

/// Runs `task` with its own report, and returns it: what
/// [`Engine::count`] counts and [`Engine::emit`] keeps meanwhile on this
/// thread.
fn reporting(task: impl FnOnce()) -> TaskReport {
    /// Puts back what was there before, even if the task panics.
    struct Restore(Option<TaskReport>);
    impl Drop for Restore {
        fn drop(&mut self) {
            TASK.set(self.0.take());
        }
    }
    let _restore = Restore(TASK.replace(Some(TaskReport::default())));
    task();
    TASK.take().unwrap_or_default()
}

/// Where an event goes ([`keep`]).
// Returned once per event and matched at once: the event is not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Goes {
    /// With the running task's report, when the transport acknowledges it.
    Later,
    /// Out now: no task runs on this thread.
    Now(Event),
    /// Out now, with the task's events before it: it held `bound`.
    Flush(Vec<Event>),
}

/// Keeps `ev` in the running task's report, unless no task runs on this
/// thread, or the task then holds `bound` events: all of them are sent
/// at once, and the task keeps the ones after.
fn keep(ev: Event, bound: usize) -> Goes {
    TASK.with_borrow_mut(|task| match task {
        None => Goes::Now(ev),
        Some(r) => {
            r.events.push(ev);
            match r.events.len() >= bound {
                true => Goes::Flush(std::mem::take(&mut r.events)),
                false => Goes::Later,
            }
        }
    })
}

impl Engine {
    fn run_task(&self, task: Task, cx: &mut dyn TaskContext) {
        if matches!(task, Task::Dir { .. } | Task::DirPart { .. }) {
            self.count_dir_run(&task);
        }
        match task {
            Task::Dir { rel, src, dst, at } => self.run_dir(&rel, &src, (dst.as_ref(), at), cx),
            Task::DirPart {
                rel,
                names,
                only_dst,
                at,
                fresh,
                recheck,
            } => self.run_dir_part(&rel, (&names, &only_dst), (at, fresh, recheck), cx),
            Task::Files {
                rel,
                actions,
                fresh,
                at,
                recheck,
            } => self.run_files(&rel, actions, (fresh, recheck), at),
            Task::BigFile {
                rel,
                src,
                dst,
                change,
                attempt,
                at,
            } => self.big_file(&rel, &src, dst, (change, attempt, at), cx),
            Task::Chunk {
                rel,
                src,
                index,
                at,
            } => self.chunk(&rel, &src, index, at),
            Task::FinishFile {
                rel,
                src,
                dst,
                change,
                attempt,
                kept,
                at,
            } => {
                let how = crate::engine::bigfile::Finish {
                    change,
                    attempt,
                    kept,
                    at,
                };
                self.finish_file(&rel, &src, dst.as_ref(), how, cx)
            }
            Task::FinishDir {
                rel,
                src,
                dst,
                touched,
                at,
                pass,
            } => self.finish_dir(&rel, &src, (dst.as_ref(), at), (touched, pass), cx),
            Task::Links { rel, actions, at } => self.run_links(&rel, actions, at),
            Task::DropLinks { bucket, .. } => self.drop_link_bucket(&bucket),
            Task::LinkSlots { from, to, .. } => self.run_link_slots(from, to, cx),
            Task::CompareBig {
                rel,
                src,
                dst,
                change,
                at,
            } => self.compare_big(&rel, src, dst, (change, at), cx),
            Task::CompareChunk {
                rel,
                src,
                index,
                at,
            } => self.compare_chunk(&rel, &src, index, at),
            Task::FinishCompare {
                rel,
                src,
                dst,
                change,
                at,
            } => self.finish_compare(&rel, src, dst, (change, at), cx),
        }
    }
}

/// Where an action on an entry happens: its directory's path from the
/// roots, the source directory, and the target directory (none in a dry
/// run of a directory the run would make).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Here<'a> {
    pub(crate) rel: &'a RelPath,
    pub(crate) src_dir: &'a Dir,
    pub(crate) dir: Option<&'a Dir>,
}

/// The target a copy fills, for its attributes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Made {
    /// Made unnamed in a directory this run created (`CopyOptions::fresh`).
    pub(crate) fresh: bool,
    /// The mode of the target it replaces, if any (`--no-perms` keeps it).
    pub(crate) old: Option<u32>,
    /// Its directory passes on no inode flags or project id
    /// ([`Dir::passes_on_nothing`]): a source without them needs nothing
    /// more.
    pub(crate) plain: bool,
    /// Its file system keeps data only in memory ([`Dir::in_memory`]):
    /// verification reads it back as it is.
    pub(crate) in_memory: bool,
    /// Filled at its own name (ADR 024): its times are left to the
    /// caller, to be set once the copy is known good.
    pub(crate) times_later: bool,
}

/// What a finished fill wrote: how, and how many bytes of data. Counted
/// (bytes copied) only when the target it filled is in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filled {
    pub(crate) strategy: Strategy,
    pub(crate) bytes: u64,
}

impl Engine {
    // ----- reporting -------------------------------------------------------

    /// Counts something: in the running task's counts, which reach the
    /// run's [`Stats`] with its outcome, once per task however often it
    /// is delivered (see [`Outcome`]); outside a task (the run's setup
    /// and end), in the run's counters directly. A plain add per call.
    pub(crate) fn count(&self, f: impl FnOnce(&mut Counts)) {
        TASK.with_borrow_mut(|task| match task {
            Some(report) => f(&mut report.counts),
            None => {
                let mut counts = Counts::default();
                f(&mut counts);
                self.stats.add(&counts);
            }
        });
    }

    /// [`TaskContext::defer`]; a second deferred task of one task (a
    /// bug) panics in debug builds, and otherwise is reported as a
    /// failure of the task's directory (its work is not done).
    pub(crate) fn defer(&self, cx: &mut dyn TaskContext, task: Task) {
        if let Err(e) = cx.defer(task) {
            debug_assert!(false, "{e}");
            let rel = e.0.rel().clone();
            self.fail(&rel, true, Op::Transport, io::Error::other(e.to_string()));
        }
    }

    /// Reports `ev`: kept in the running task's report, which the
    /// transport sends once per task however often it is delivered (see
    /// [`Outcome`]); outside a task, sent at once. A task that reported
    /// [`EVENTS_KEPT`] events sends them at once and keeps the next ones:
    /// a second delivery of it repeats those (memory stays bounded for a
    /// directory of millions of entries with `-i`).
    pub(crate) fn emit(&self, ev: Event) {
        if self.events.is_none() {
            return;
        }
        match keep(ev, EVENTS_KEPT) {
            Goes::Later => {}
            Goes::Now(ev) => {
                self.send(ev);
            }
            Goes::Flush(events) => self.send_all(events),
        }
    }

    /// Sends `events` in order, or as many as [`Engine::send`] can: the
    /// rest are dropped with the first it gives up on (an abandoned
    /// task's thousands must not wait 100 ms each for a stalled frontend).
    fn send_all(&self, events: Vec<Event>) {
        for ev in events {
            if !self.send(ev) {
                return;
            }
        }
    }

    /// Sends `ev` on the run's channel now. False when it is dropped: no
    /// one listens, or the run is stopping and the channel stayed full.
    pub(crate) fn send(&self, ev: Event) -> bool {
        let Some(tx) = &self.events else {
            return false;
        };
        // A frontend that stopped listening must not stop the run, and a
        // stalled one must not keep it from stopping: block for room only
        // until the quit flag is set.
        let mut ev = ev;
        loop {
            match tx.send_timeout(ev, std::time::Duration::from_millis(100)) {
                Ok(()) => return true,
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return false,
                Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => {
                    if self.quit.load(Ordering::Relaxed) {
                        return false;
                    }
                    ev = back;
                }
            }
        }
    }

    pub(crate) fn itemize(&self, path: RelPath, change: Option<Change>, entry: &Entry) {
        if self.itemize {
            // A deletion's event names no link (as its removal reports
            // none: see `Engine::remove_itemized`).
            let link = entry
                .link
                .as_ref()
                .filter(|_| change.is_some())
                .map(|l| RelPath::from_bytes(l.as_bytes()));
            self.emit(Event::Itemize {
                path,
                change,
                kind: entry.kind,
                link,
            });
        }
    }

    /// Reports a failed entry: counted, sent as an event with the full path.
    pub(crate) fn fail(&self, rel: &RelPath, on_target: bool, op: Op, err: io::Error) {
        self.report(rel, on_target, op, err, true);
    }

    /// Sends an error event; `count` also counts the entry as failed and
    /// done (a chunk's error is counted once, by its file's finish).
    pub(crate) fn report(
        &self,
        rel: &RelPath,
        on_target: bool,
        op: Op,
        err: io::Error,
        count: bool,
    ) {
        if on_target && self.stop_if_unwritable(rel, op, &err) {
            return;
        }
        let base = if on_target {
            &self.dst_path
        } else {
            &self.src_path
        };
        let errno = err.raw_os_error();
        let e = Error::new(op, rel.under(base), err);
        if count {
            self.count(|c| {
                c.failed += 1;
                c.done += 1;
            });
            // `--max-errors`: stopped as an interrupt stops the run.
            let failed = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
            if self.max_errors.is_some_and(|max| failed >= max) {
                self.quit.store(true, Ordering::SeqCst);
            }
        }
        self.emit(Event::Error {
            path: rel.clone(),
            op,
            side: crate::event::Side::of(on_target),
            errno,
            message: e.to_string(),
        });
    }

    /// Runs the copier step `step` for the target entry `rel`: the
    /// warnings it made ([`crate::copy::kit::warn`]) are reported with
    /// that path.
    pub(crate) fn noted<T>(&self, rel: &RelPath, step: impl FnOnce() -> T) -> T {
        // Left by another step: not this entry's.
        drop(crate::copy::take_notes());
        let out = step();
        for (op, message) in crate::copy::take_notes() {
            self.warn(rel, true, op, &message);
        }
        out
    }

    pub(crate) fn warn(&self, rel: &RelPath, on_target: bool, op: Op, message: &str) {
        let base = if on_target {
            &self.dst_path
        } else {
            &self.src_path
        };
        self.count(|c| c.warnings += 1);
        self.emit(Event::Warning {
            path: rel.clone(),
            op,
            message: format!("{op} {}: {message}", rel.under(base).display()),
        });
    }

    // ----- the target -----------------------------------------------------

    pub(crate) fn open_dst(&self, rel: &RelPath) -> io::Result<Dir> {
        match &self.dst_root {
            Some(root) => root.open_beneath(rel),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    /// [`Engine::open_dst`] of a directory a task saw before: it must
    /// still be the directory `at` (file system, inode) — a user who can rename
    /// in its parent may have put another one (someone's) at its path.
    pub(crate) fn open_dst_at(&self, rel: &RelPath, at: Option<(u64, u64)>) -> io::Result<Dir> {
        let d = self.open_dst(rel)?;
        match at {
            Some(at) if self.fs.dir_id(&d)? != at => Err(replaced_dir()),
            _ => Ok(d),
        }
    }

    pub(crate) fn count_change(&self, existed: bool) {
        self.count(|c| {
            match existed {
                true => c.updated += 1,
                false => c.created += 1,
            }
            c.done += 1;
        });
    }

    // ----- counting and names -----------------------------------------------

    /// `Err(Interrupted)` once the run is stopping: a finished temporary
    /// is then not put in place (nothing changes after a stop).
    pub(crate) fn not_stopped(&self) -> Result<(), CopyFail> {
        match self.quit.load(Ordering::Relaxed) {
            true => Err(CopyFail::Interrupted),
            false => Ok(()),
        }
    }

    pub(crate) fn count_strategy(&self, s: Strategy) {
        self.count(|c| match s {
            Strategy::Reflink => c.by_reflink += 1,
            Strategy::CopyRange => c.by_copy_range += 1,
            Strategy::Sendfile => c.by_sendfile += 1,
            Strategy::ReadWrite => c.by_read_write += 1,
            Strategy::Direct => c.by_direct += 1,
            Strategy::Mapped => c.by_mapped += 1,
            Strategy::Empty => {}
        });
    }

    /// A fresh temporary name: the run id (so later runs know it is
    /// stale), then a tag no other user can predict from the names they
    /// saw (see [`Engine::private_name`]) of this engine's nonce and a
    /// counter. Fits in any NAME_MAX.
    pub(crate) fn temp_name(&self) -> Name {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.private_name(b"tmp", u64::from(self.nonce) << 40 ^ n, "")
    }

    /// `.psync-tmp.<run>.<tag><suffix>`, where the tag is SipHash-2-4 of
    /// `what` and `n` under the run's secret key: the same on every engine
    /// of the run, unpredictable to anyone without the key.
    pub(crate) fn private_name(&self, what: &[u8], n: u64, suffix: &str) -> Name {
        use std::hash::Hasher;
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(self.secret[0], self.secret[1]);
        h.write(what);
        h.write_u64(n);
        let tag = h.finish();
        Name(format!("{TEMP_PREFIX}{:016x}.{tag:016x}{suffix}", self.run_id).into_bytes())
    }
}

/// The identity of the directory `name` of `dir` that this process has
/// just made: what stands at the name must be a directory of its
/// effective user, mode 0700 (as made), and empty.
fn fresh_dir_id(fs: &crate::fsid::FsIds, dir: &Dir, name: &Name) -> io::Result<(u64, u64)> {
    fs.dir_id(&open_made_dir(dir, name.as_bytes())?)
}

/// Opens the directory `name` of `dir` that this process has just made
/// (`mkdirat`, mode 0700), refusing whatever else stands at the name now:
/// a user who can rename in `dir` may have swapped in a directory of
/// theirs (or a symlink) since. For a copier that sets more on a new
/// directory than [`crate::Copier::make_dir`]'s `mkdirat` does.
///
/// # Errors
/// The name cannot be opened as a directory without following it, or
/// what it names is not a directory of the effective user, mode 0700,
/// and empty.
pub fn open_made_dir(dir: &Dir, name: &[u8]) -> io::Result<Dir> {
    let d = dir.open_dir(name)?;
    let st = d.fstat()?;
    if let Some(why) = crate::engine::links::not_private(&st, libc::S_IFDIR, 0o700) {
        return Err(io::Error::other(format!(
            "the directory at this name is not the one just made ({why}): nothing done in it"
        )));
    }
    if !d.names()?.is_empty() {
        return Err(io::Error::other(
            "the directory at this name is not the one just made (it holds entries): nothing done in it",
        ));
    }
    Ok(d)
}

/// The error for a target directory found replaced at its path.
pub(crate) fn replaced_dir() -> io::Error {
    io::Error::other(
        "another directory stands at this path than the one the run listed (renamed there during the run): nothing done in it",
    )
}

/// The process's effective uid: the owner of everything psync makes.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The run id inside a temporary's name, if `name` is one of ours.
pub fn temp_run_id(name: &Name) -> Option<u64> {
    let rest = name.as_bytes().strip_prefix(TEMP_PREFIX.as_bytes())?;
    let (id, tail) = rest.split_at_checked(16)?;
    if tail.first() != Some(&b'.') {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(id).ok()?, 16).ok()
}

/// What [`Engine::fix_attrs`] does with a target whose inode has more
/// names than the run accounts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shared {
    /// Replace it with a copy of the source (its other names keep the
    /// old inode).
    Replace,
    /// Leave it alone, reported as a failure.
    Refuse,
}

pub(crate) enum CopyFail {
    Vanished,
    Interrupted,
    Failed {
        on_target: bool,
        op: Op,
        err: io::Error,
    },
}

impl CopyFail {
    pub(crate) fn source(op: Op, err: io::Error) -> CopyFail {
        if err.kind() == io::ErrorKind::NotFound && op == Op::Open {
            return CopyFail::Vanished;
        }
        CopyFail::Failed {
            on_target: false,
            op,
            err,
        }
    }
    pub(crate) fn target(e: crate::copy::StepError) -> CopyFail {
        CopyFail::Failed {
            on_target: true,
            op: e.op,
            err: e.source,
        }
    }
    pub(crate) fn target_io(op: Op, err: io::Error) -> CopyFail {
        CopyFail::Failed {
            on_target: true,
            op,
            err,
        }
    }
    /// A copier's data-copy error, blamed on the side its operation names:
    /// reading the source (`Op::Read`), else the target.
    pub(crate) fn data(e: crate::copy::StepError) -> CopyFail {
        match e.op {
            _ if e.source.kind() == io::ErrorKind::Interrupted => CopyFail::Interrupted,
            Op::Read => CopyFail::source(Op::Read, e.source),
            _ => CopyFail::target(e),
        }
    }
    /// True for a source that ended before its listed size.
    pub(crate) fn is_short_read(&self) -> bool {
        matches!(self, CopyFail::Failed { on_target: false, op: Op::Read, err }
            if err.kind() == io::ErrorKind::UnexpectedEof)
    }
}

/// True when the open source's status differs from `cur` (kind, size,
/// mtime, ctime, mode or owner): it changed since `cur` was taken. Mode
/// and owner change the ctime too; they are compared because a task from
/// a broker may carry an entry that was never listed (a forged one, with
/// root as owner and the setuid bit), and its copy gets them.
pub(crate) fn source_changed(src: &std::fs::File, cur: &Entry) -> Result<bool, CopyFail> {
    let st = rustix::fs::fstat(src).map_err(|e| CopyFail::source(Op::Stat, e.into()))?;
    let now = Entry::from_stat(cur.name.clone(), &st);
    let seen = |e: &Entry| (e.kind, e.size, e.mtime, e.ctime, e.mode, e.uid, e.gid);
    Ok(seen(&now) != seen(cur))
}

fn clone_err(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// The hash of `segments` of `out` as its storage returns them: what a
/// copy left in the page cache is written back and dropped first
/// ([`crate::verify::write_back_and_drop`]), then read direct where the
/// file system allows (large aligned requests; data written direct was
/// never cached), buffered otherwise. `in_memory`: `out`'s file system
/// keeps data only in memory ([`Dir::in_memory`]), where the cache is the
/// storage: read as it is (no write-back, no drop, no direct reads to
/// look for: three system calls of the eight a small file's copy makes
/// on tmpfs).
pub(crate) fn read_back(
    out: &std::fs::File,
    segments: &[(u64, u64)],
    in_memory: bool,
) -> io::Result<u128> {
    if in_memory {
        return crate::verify::hash_segments(out, segments);
    }
    crate::verify::write_back_and_drop(out, segments)?;
    crate::verify::hash_segments_direct(out, segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_parse() {
        let n = Name(format!("{TEMP_PREFIX}{:016x}.{:016x}.links", 0xabcu64, 7).into_bytes());
        assert_eq!(temp_run_id(&n), Some(0xabc));
        assert_eq!(temp_run_id(&Name::from(".psync-tmp.zz")), None);
        assert_eq!(temp_run_id(&Name::from("file")), None);
        assert!(n.as_bytes().len() < 64);
    }

    fn warning(i: usize) -> Event {
        Event::Warning {
            path: RelPath::root(),
            op: Op::Stat,
            message: i.to_string(),
        }
    }

    fn messages(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Warning { message, .. } => message.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// A running task keeps its events (with its counts) for its report;
    /// once it holds the bound, they go out at once, in order, and it
    /// keeps the next ones. Outside a task an event goes out at once.
    #[test]
    fn a_task_keeps_its_events_up_to_the_bound() {
        assert!(matches!(keep(warning(0), 3), Goes::Now(_)));
        for bound in [3, EVENTS_KEPT] {
            let mut sent = Vec::new();
            let report = reporting(|| {
                for i in 0..2 * bound + 2 {
                    match keep(warning(i), bound) {
                        Goes::Later => {}
                        Goes::Flush(events) => sent.push(messages(&events)),
                        Goes::Now(ev) => panic!("sent outside a task: {ev:?}"),
                    }
                }
                TASK.with_borrow_mut(|t| t.as_mut().unwrap().counts.warnings += 1);
            });
            let upto = |from: usize, to: usize| (from..to).map(|i| i.to_string()).collect();
            let want: Vec<Vec<String>> = vec![upto(0, bound), upto(bound, 2 * bound)];
            assert_eq!(sent, want, "bound {bound}");
            assert_eq!(
                messages(&report.events),
                upto(2 * bound, 2 * bound + 2),
                "bound {bound}"
            );
            assert_eq!(report.counts.warnings, 1);
        }
        // The task's report is gone with it.
        assert!(matches!(keep(warning(0), 3), Goes::Now(_)));
    }
}
