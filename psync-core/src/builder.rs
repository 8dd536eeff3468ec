//! `SyncBuilder`: the one way to configure and start a run.

use crate::backend::{Backend, Selection};
use crate::copy::{AttrMode, Copier, CopyOptions, Reflink, Registry};
use crate::durable::Flush;
use crate::engine::Engine;
use crate::entry::{Entry, Name, RelPath};
use crate::error::{Error, Op, ResultExt};
use crate::event::{Event, Snapshot, Stats};
use crate::fs::{Dir, is_root};
use crate::plan::{PlanOptions, Planner, Preserve, RsyncPlanner};
use crate::spec::{EngineContext, RunSpec, open_target_root, root_entry};
use crate::task::Task;
use crate::transport::{Local, Transport};
use crate::validate::{Roots, validate};
use crate::walk::{FsWalker, Walker};
use crossbeam_channel::Sender;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Configures a run. Setters take `&mut self` and return `&mut Self`;
/// [`SyncBuilder::build`] leaves the builder reusable.
///
/// ```no_run
/// // `copier`: the backend, e.g. `psync_generic::GenericCopier`.
/// fn sync(copier: std::sync::Arc<dyn psync_core::Copier>) -> Result<(), psync_core::Error> {
///     let mut b = psync_core::SyncBuilder::new("/data/src", "/data/dst");
///     b.threads(16).delete(true);
///     b.default_copier(copier);
///     let report = b.build()?.run()?;
///     println!("{} files copied", report.stats.created + report.stats.updated);
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct SyncBuilder {
    src: PathBuf,
    dst: PathBuf,
    /// `None`: [`default_threads_for`] the target.
    threads: Option<usize>,
    plan: PlanOptions,
    dry_run: bool,
    itemize: bool,
    verify_only: bool,
    manifest: bool,
    wide_dir: usize,
    max_delete: Option<u64>,
    max_errors: Option<u64>,
    bwlimit: Option<u64>,
    events: Option<Sender<Event>>,
    progress_interval: Duration,
    stop_grace: Duration,
    registry: Registry,
    backend: Backend,
    walker: Arc<dyn Walker>,
    planner: Arc<dyn Planner>,
    transport: Option<Arc<dyn Transport>>,
    /// Engines and seed of a scattered run (see [`SyncBuilder::scatter`]).
    scatter: Option<(usize, u64)>,
    /// The probability of a second delivery in a scattered run.
    redeliver: f64,
    /// Whether a redelivery may start with a lossy delivery.
    lossy: bool,
    retries: u32,
    batch_files: usize,
    batch_bytes: u64,
    reflink: Reflink,
    window_set: bool,
    fast_xattr_check: bool,
    verify: bool,
    direct_io: bool,
    keep_source_cache: bool,
    chunk_size: u64,
    resume_threshold: u64,
    xattrs: AttrMode,
    acls: AttrMode,
    file_flags: AttrMode,
    project_ids: AttrMode,
    flush: Flush,
}

impl std::fmt::Debug for SyncBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncBuilder")
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("threads", &self.threads)
            .field("plan", &self.plan)
            .field("dry_run", &self.dry_run)
            .field("registry", &self.registry)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The most worker threads a run takes. Each thread holds a few MiB of
/// buffers (copy, hashing, direct I/O), and past a few hundred threads the
/// storage, not the thread count, limits a run.
pub const MAX_THREADS: usize = 256;
/// The smallest chunk of a large file (smaller chunks cost more in tasks
/// and journal records than their parallelism gains).
pub const MIN_CHUNK_SIZE: u64 = 1 << 20;
/// The largest chunk of a large file.
pub const MAX_CHUNK_SIZE: u64 = 1 << 40;
/// Chunks are a whole number of these (the page size, and a multiple of
/// every direct-I/O alignment seen on Linux file systems).
pub const CHUNK_ALIGN: u64 = 4096;
/// The most retries of a file that changes while it is copied.
pub const MAX_RETRIES: u32 = 100;
/// The largest `--modify-window` and `--min-age`, in seconds (rsync's
/// limit: a C `int`).
pub const MAX_SECS: u64 = i32::MAX as u64;
/// The longest stop grace ([`SyncBuilder::stop_grace`]).
pub const MAX_STOP_GRACE: Duration = Duration::from_secs(86_400);

/// Default worker threads: eight per core, at least 16, at most 64. Far
/// more than the cores, because file system calls block on I/O: a
/// cold-cache copy, and verification's write-back and read-back, gain
/// from every request in flight, while a CPU-bound run loses nothing
/// measurable to the extra threads (ADR 023).
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * 8).clamp(16, 64)
}

/// Default worker threads for a run into `dst`: [`default_threads`], but
/// two per core (at least 4) when `dst` is in memory (tmpfs, ramfs), where
/// no call waits on a device: there more threads than cores only contend
/// (4 x 1 GiB on tmpfs: 0.98 s at 16 threads, 0.76 s at 4; ADR 023). The
/// nearest existing ancestor of `dst` is asked when it does not exist yet.
pub fn default_threads_for(dst: &Path) -> usize {
    use crate::probe::magic::{RAMFS, TMPFS};
    let in_memory = dst
        .ancestors()
        .find_map(|p| rustix::fs::statfs(p).ok())
        .is_some_and(|st| [TMPFS, RAMFS].contains(&(st.f_type as u64)));
    if in_memory {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (cores * 2).clamp(4, 64);
    }
    default_threads()
}

impl SyncBuilder {
    /// A run that makes `dst` identical to `src` (the contents of `src`
    /// into `dst`, like `rsync -a SRC/ DST/`).
    pub fn new(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> SyncBuilder {
        SyncBuilder {
            src: src.as_ref().to_path_buf(),
            dst: dst.as_ref().to_path_buf(),
            threads: None,
            plan: PlanOptions::default(),
            dry_run: false,
            itemize: false,
            verify_only: false,
            manifest: false,
            wide_dir: crate::engine::WIDE_DIR,
            max_delete: None,
            max_errors: None,
            bwlimit: None,
            events: None,
            progress_interval: Duration::from_millis(250),
            stop_grace: Duration::from_secs(10),
            registry: Registry::new(),
            backend: Backend::Auto,
            walker: Arc::new(FsWalker),
            planner: Arc::new(RsyncPlanner),
            transport: None,
            scatter: None,
            redeliver: 0.0,
            lossy: true,
            retries: 2,
            batch_files: 128,
            batch_bytes: 32 << 20,
            reflink: Reflink::Auto,
            window_set: false,
            fast_xattr_check: false,
            verify: true,
            direct_io: true,
            keep_source_cache: false,
            chunk_size: 64 << 20,
            resume_threshold: 1 << 30,
            xattrs: AttrMode::Auto,
            acls: AttrMode::Auto,
            file_flags: AttrMode::Auto,
            project_ids: AttrMode::Auto,
            flush: Flush::Off,
        }
    }

    /// Worker threads of the local transport. Default:
    /// [`default_threads_for`] the target.
    /// 1 to [`MAX_THREADS`]; [`build`](Self::build) refuses other values.
    pub fn threads(&mut self, n: usize) -> &mut Self {
        self.threads = Some(n);
        self
    }

    /// Delete target entries absent from the source. Default: false.
    pub fn delete(&mut self, yes: bool) -> &mut Self {
        self.plan.delete = yes;
        self
    }

    /// Let a type change remove a non-empty target directory (rsync
    /// `--force`; [`delete`](Self::delete) implies it). Default: false: such
    /// a directory is left in place and reported as an error.
    pub fn force(&mut self, yes: bool) -> &mut Self {
        self.plan.force = yes;
        self
    }

    /// Stay on the source root's file system (rsync `-x`): a directory
    /// mounted below the source root is copied as an empty directory and
    /// nothing in its target is deleted. Default: false.
    pub fn one_file_system(&mut self, yes: bool) -> &mut Self {
        self.plan.one_file_system = yes;
        self
    }

    /// Include/exclude rules (rsync `--filter`), in the run spec so every
    /// engine applies them. Default: none.
    pub fn filters(&mut self, filters: crate::filter::Filters) -> &mut Self {
        self.plan.filters = filters;
        self
    }

    /// Attributes to preserve. Default: [`Preserve::ARCHIVE`] (owner and
    /// group take effect only when running as root).
    pub fn preserve(&mut self, p: Preserve) -> &mut Self {
        self.plan.preserve = p;
        self
    }

    /// Plan and report without changing anything. Default: false.
    pub fn dry_run(&mut self, yes: bool) -> &mut Self {
        self.dry_run = yes;
        self
    }

    /// `--max-delete`: delete at most `limit` target entries in the run;
    /// the deletions past it are skipped and counted
    /// ([`crate::Snapshot::deletes_skipped`]), a directory whole (it and
    /// its contents, when they do not all fit). Replacing an entry of
    /// another type is not limited. Default: no limit.
    pub fn max_delete(&mut self, limit: Option<u64>) -> &mut Self {
        self.max_delete = limit;
        self
    }

    /// `--max-errors`: stop the run, as the quit flag does, once `limit`
    /// entries failed (the run's report says interrupted). Default: no
    /// limit.
    pub fn max_errors(&mut self, limit: Option<u64>) -> &mut Self {
        self.max_errors = limit;
        self
    }

    /// `--bwlimit`: at most `rate` bytes of file data per second over all
    /// the run's copies (clones move none and are not limited). Default:
    /// no limit.
    pub fn bwlimit(&mut self, rate: Option<u64>) -> &mut Self {
        self.bwlimit = rate.filter(|&r| r > 0);
        self
    }

    /// Send an [`Event::Itemize`] for every change. Default: false.
    pub fn itemize(&mut self, yes: bool) -> &mut Self {
        self.itemize = yes;
        self
    }

    /// `psync verify`: a dry run that compares content (`--checksum`),
    /// every entry's xattrs and ACLs, deletes, and also reports what a
    /// sync does not compare: [`Event::Linked`] for every name of a
    /// hard-linked entry (the frontend compares the groups), and a file
    /// whose source holes are data in the target. Default: false.
    pub fn verify_only(&mut self, yes: bool) -> &mut Self {
        self.verify_only = yes;
        self
    }

    /// Send an [`Event::Hashed`] for every regular file of the source
    /// (`--manifest`). Default: false.
    pub fn manifest(&mut self, yes: bool) -> &mut Self {
        self.manifest = yes;
        self
    }

    /// Where events go. Default: nowhere. A bounded channel applies
    /// back-pressure: the run slows down rather than buffer without limit.
    pub fn events(&mut self, tx: Sender<Event>) -> &mut Self {
        self.events = Some(tx);
        self
    }

    /// How long a stopping run (quit flag, interrupt, a target that cannot
    /// be written) waits for tasks under way before it removes this run's
    /// temporaries anyway: a task stuck in a read that never returns (a
    /// hung NFS server) must not keep them forever. The stuck task then
    /// publishes nothing. Default: 10 s.
    pub fn stop_grace(&mut self, d: Duration) -> &mut Self {
        self.stop_grace = d;
        self
    }

    /// How often [`Event::Progress`] is sent. Default: 250 ms.
    pub fn progress_interval(&mut self, d: Duration) -> &mut Self {
        self.progress_interval = d;
        self
    }

    /// Treat mtimes this close as equal (rsync `--modify-window`). Default:
    /// detected per run from the target file system's timestamp resolution
    /// (0 on file systems that keep nanoseconds).
    pub fn modify_window(&mut self, d: Duration) -> &mut Self {
        self.plan.modify_window_ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.window_set = true;
        self
    }

    /// Copy every file regardless of size and time (rsync `-I`). Default: false.
    pub fn ignore_times(&mut self, yes: bool) -> &mut Self {
        self.plan.ignore_times = yes;
        self
    }

    /// Keep hard links (rsync `-H`). Default: true.
    pub fn hard_links(&mut self, yes: bool) -> &mut Self {
        self.plan.hard_links = yes;
        self
    }

    /// Retries of a file that changes while it is copied. Default: 2; at
    /// most [`MAX_RETRIES`].
    pub fn retries(&mut self, n: u32) -> &mut Self {
        self.retries = n;
        self
    }

    /// Reflink policy (clone data on file systems that share extents).
    /// Default: [`Reflink::Auto`].
    pub fn reflink(&mut self, r: Reflink) -> &mut Self {
        self.reflink = r;
        self
    }

    /// Extended attributes (all namespaces the process may read and write).
    /// Default: [`AttrMode::Auto`]: what the target cannot hold is a
    /// warning. [`AttrMode::Required`]: an error.
    pub fn xattrs(&mut self, m: AttrMode) -> &mut Self {
        self.xattrs = m;
        self
    }

    /// POSIX ACLs (access and default). Default: [`AttrMode::Auto`].
    pub fn acls(&mut self, m: AttrMode) -> &mut Self {
        self.acls = m;
        self
    }

    /// Inode flags of regular files and directories: immutable,
    /// append-only, sync, noatime, nodump (`chattr`; immutable and
    /// append-only set last). Default: [`AttrMode::Auto`]: what the target
    /// cannot hold (no flags, no CAP_LINUX_IMMUTABLE) is a warning, once
    /// per run and kind. [`AttrMode::Off`]: `--no-file-flags` (ADR 018).
    pub fn file_flags(&mut self, m: AttrMode) -> &mut Self {
        self.file_flags = m;
        self
    }

    /// Project ids (and the project-inherit flag) of regular files and
    /// directories. Default: [`AttrMode::Auto`]: a target file system
    /// without them is a warning, once per run. [`AttrMode::Off`]:
    /// `--no-project-ids` (ADR 018).
    pub fn project_ids(&mut self, m: AttrMode) -> &mut Self {
        self.project_ids = m;
        self
    }

    /// Verify every copy: hash the source data as it is copied, read the
    /// target back and compare (xxh3-128). A mismatch fails the file and
    /// leaves its target unchanged. Default: true.
    pub fn verify(&mut self, yes: bool) -> &mut Self {
        self.verify = yes;
        self
    }

    /// Write the chunks of large files with `O_DIRECT` where the target's
    /// file system reports direct-I/O alignment (ext4 and XFS do; tmpfs
    /// and, as of Linux 6.18, btrfs do not). Several chunks of one file are then written at once, where
    /// buffered writes into one file take turns on its lock, and the copy
    /// does not fill the page cache with dirty pages. Default: true.
    pub fn direct_io(&mut self, yes: bool) -> &mut Self {
        self.direct_io = yes;
        self
    }

    /// Keep the source's pages in the page cache. Default: false: once a
    /// file is copied (a large file: each chunk), its source is dropped
    /// from the cache (`posix_fadvise(DONTNEED)`; pages that are dirty or
    /// mapped by a process stay), and so are both sides of a file
    /// `--checksum` found equal. A migration reads every byte once, and
    /// keeping them would evict what the machine has cached, the part of
    /// the source this run has yet to read included (ADR 005, 006).
    pub fn keep_source_cache(&mut self, yes: bool) -> &mut Self {
        self.keep_source_cache = yes;
        self
    }

    /// Make every copied file durable before it counts as done
    /// (`--fsync`): a file task writes its files, flushes them with one
    /// `syncfs` of the target file system per batch of up to 64, and only
    /// then links or renames them into place; large files and hard-linked
    /// files are flushed one by one (`fsync`) before their rename or link;
    /// every directory whose entries or attributes a task changed is
    /// flushed at that task's end. So a task that ends, on any node, has
    /// its outputs on disk, and a flush that fails (EIO, ENOSPC on
    /// write-back) fails the files it was for and the run.
    /// [`flush`](Self::flush) picks another way to flush.
    /// Default: false: the run ends with its writes in the page cache, and
    /// a device that fails on write-back loses them after a successful
    /// run. ADR 009 has the cost of each way.
    pub fn fsync(&mut self, yes: bool) -> &mut Self {
        self.flush = if yes { Flush::Batch } else { Flush::Off };
        self
    }

    /// How results reach stable storage (see [`Flush`] and ADR 009).
    /// Default: [`Flush::Off`]; [`fsync`](Self::fsync) sets
    /// [`Flush::Batch`]. [`Flush::Parallel`] flushes only this run's files
    /// (for a file system other writers use heavily), at about twice the
    /// cost on small files; [`Flush::File`] one file after another, at
    /// several times that; [`Flush::End`] once at the end of the run, which
    /// leaves nothing durable before then and no task durable on its own.
    pub fn flush(&mut self, mode: Flush) -> &mut Self {
        self.flush = mode;
        self
    }

    /// Files larger than this are copied in chunks of this size, by any
    /// worker thread, each into its place in the target's part file.
    /// Default: 64 MiB (at least 1 MiB).
    /// [`MIN_CHUNK_SIZE`] to [`MAX_CHUNK_SIZE`], a multiple of
    /// [`CHUNK_ALIGN`]; [`build`](Self::build) refuses other values.
    pub fn chunk_size(&mut self, bytes: u64) -> &mut Self {
        self.chunk_size = bytes;
        self
    }

    /// Chunked files at least this big keep a journal of finished chunks
    /// that a later run resumes from; smaller ones start over. Default: 1 GiB.
    pub fn resume_threshold(&mut self, bytes: u64) -> &mut Self {
        self.resume_threshold = bytes;
        self
    }

    /// Decide by content: files of equal size are compared by hash instead
    /// of by modification time (rsync `-c`). Default: false.
    pub fn checksum(&mut self, yes: bool) -> &mut Self {
        self.plan.checksum = yes;
        self
    }

    /// Leave alone non-directories whose status (ctime) changed less than
    /// `age` before the run started: files still being written on a live
    /// file system (the old tool's `--minsecs`). Default: 0 (off).
    pub fn min_age(&mut self, age: Duration) -> &mut Self {
        self.plan.min_age_ns = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
        self
    }

    /// Compare the xattrs/ACLs of an existing target only when its source
    /// changed status (ctime) since the target was written — any xattr or
    /// ACL change does that — instead of on every run. About three times
    /// cheaper on a no-op run, but misses changes made on the target side
    /// and targets pre-seeded by another tool. Ignored when xattrs or ACLs
    /// are [`AttrMode::Required`]. Default: false (compare every entry, as
    /// rsync `-X` does).
    pub fn fast_xattr_check(&mut self, yes: bool) -> &mut Self {
        self.fast_xattr_check = yes;
        self
    }

    /// A directory with more names than this on either side is listed
    /// and planned in parts, each a task (ADR 021). Default: 65,536. A
    /// knob for tests (a few names make several parts), not an option.
    #[doc(hidden)]
    pub fn wide_dir(&mut self, names: usize) -> &mut Self {
        self.wide_dir = names.max(1);
        self
    }

    /// Files per copy task (small files travel in batches). Default: 128.
    pub fn batch_files(&mut self, n: usize) -> &mut Self {
        self.batch_files = n.max(1);
        self
    }

    /// Registers a copier for a pair of file systems (`statfs` magics; `None` = any).
    pub fn register_copier(
        &mut self,
        src_magic: Option<u64>,
        dst_magic: Option<u64>,
        c: Arc<dyn Copier>,
    ) -> &mut Self {
        self.registry.register(src_magic, dst_magic, c);
        self
    }

    /// The copier used when no registered pair matches. Required (the
    /// `psync` facade crate sets `psync-generic`'s).
    pub fn default_copier(&mut self, c: Arc<dyn Copier>) -> &mut Self {
        self.registry.set_default(c);
        self
    }

    /// How the copier is picked. Default: [`Backend::Auto`], the
    /// registered copier for the roots' pair of file systems, else the
    /// default one. [`Backend::Named`] forces the copier of that name:
    /// [`build`](Self::build) refuses a name that is not registered, and
    /// the run one registered only for other file systems than its roots'.
    pub fn backend(&mut self, b: Backend) -> &mut Self {
        self.backend = b;
        self
    }

    /// The copier a run between the roots would use, and why, without
    /// opening or creating anything (a missing target counts as on its
    /// nearest existing ancestor's file system): what `psync probe SRC
    /// DST` shows.
    ///
    /// # Errors
    /// A root cannot be `statfs`ed, or no copier fits (as
    /// [`Syncer::prepare`] would fail).
    pub fn selection(&self) -> Result<Selection, Error> {
        let src = crate::probe::fs_magic_of(&self.src).at(Op::Stat, &self.src)?;
        let dst = crate::probe::fs_magic_or_parent(&self.dst).at(Op::Stat, &self.dst)?;
        let choice = crate::backend::choose(&self.registry, &self.backend, src, dst)
            .map_err(|msg| Error::invalid(&self.dst, msg))?;
        let copier = choice.copier.name().to_string();
        Ok(Selection {
            notes: crate::backend::notes(src, dst, &copier),
            copier,
            reason: choice.reason,
            src_magic: src,
            dst_magic: dst,
        })
    }

    /// Replaces the walker. Default: [`FsWalker`].
    pub fn walker(&mut self, w: Arc<dyn Walker>) -> &mut Self {
        self.walker = w;
        self
    }

    /// Replaces the planner. Default: [`RsyncPlanner`].
    pub fn planner(&mut self, p: Arc<dyn Planner>) -> &mut Self {
        self.planner = p;
        self
    }

    /// Replaces the transport. Default: [`Local`] with [`SyncBuilder::threads`] threads.
    pub fn transport(&mut self, t: Arc<dyn Transport>) -> &mut Self {
        self.transport = Some(t);
        self
    }

    /// **For tests**: runs the sync's tasks on `engines` engines of the
    /// run in this process, each task encoded and decoded and run by an
    /// engine drawn at random with `seed` ([`crate::Scatter`]), as if
    /// each engine were another node. `engines` below 2 turns it off.
    /// Default: off.
    pub fn scatter(&mut self, engines: usize, seed: u64) -> &mut Self {
        self.scatter = (engines > 1).then_some((engines, seed));
        self
    }

    /// **For tests**: in a scattered run ([`SyncBuilder::scatter`]),
    /// delivers tasks again with probability `fraction`, as a broker that
    /// delivers at least once may ([`crate::Scatter::redeliver`]).
    /// What does not bear it yet is in ADR 011. Default: 0.
    pub fn redeliver(&mut self, fraction: f64) -> &mut Self {
        self.redeliver = fraction;
        self
    }

    /// **For tests**: whether a redelivery ([`SyncBuilder::redeliver`])
    /// may start with a lossy delivery ([`crate::Scatter::lossy`]: a
    /// worker that died before its messages got out, whose counts are
    /// lost). Default: yes.
    pub fn redeliver_lossy(&mut self, lossy: bool) -> &mut Self {
        self.lossy = lossy;
        self
    }

    /// Checks the arguments and prepares the run. Touches nothing.
    ///
    /// # Errors
    /// Bad source or destination (see [`crate::validate()`]), or no copier.
    pub fn build(&self) -> Result<Syncer, Error> {
        self.check_ranges()?;
        let roots = validate(&self.src, &self.dst)?;
        if !self.registry.has_default() {
            return Err(Error::invalid(
                &self.dst,
                "no copier registered (set SyncBuilder::default_copier)",
            ));
        }
        if let Backend::Named(name) = &self.backend
            && self.registry.by_name(name).is_none()
        {
            let names = self.registry.names().join(", ");
            let msg = format!("{name:?} is not available in this build (available: auto, {names})");
            return Err(Error::invalid("backend", msg));
        }
        let mut b = self.clone();
        if b.verify_only {
            // Whatever else was set: changes nothing, compares everything.
            b.dry_run = true;
            b.itemize = true;
            b.fast_xattr_check = false;
            b.plan.checksum = true;
            b.plan.ignore_times = false;
            b.plan.delete = true;
            b.plan.force = true;
            b.max_delete = None;
        }
        Ok(Syncer {
            b,
            roots,
            quit: Arc::new(AtomicBool::new(false)),
            reaped: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(Stats::default()),
        })
    }
}

impl SyncBuilder {
    /// Refuses settings outside what the engine supports, naming the
    /// setting, the value and the range (nothing is clamped silently).
    fn check_ranges(&self) -> Result<(), Error> {
        let bad = |name: &str, msg: String| Err(Error::invalid(name, msg));
        if let Some(got) = self.threads.filter(|t| !(1..=MAX_THREADS).contains(t)) {
            return bad("threads", format!("must be 1 to {MAX_THREADS}, not {got}"));
        }
        let p = &self.plan;
        crate::spec::check_limits(
            self.chunk_size,
            self.retries,
            p.modify_window_ns,
            p.min_age_ns,
        )?;
        if self.stop_grace > MAX_STOP_GRACE {
            let msg = format!("must be at most {} s", MAX_STOP_GRACE.as_secs());
            return bad("stop grace", msg);
        }
        Ok(())
    }
}

/// A checked, ready run.
#[derive(Debug)]
pub struct Syncer {
    b: SyncBuilder,
    roots: Roots,
    quit: Arc<AtomicBool>,
    reaped: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

/// How a run ended.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// Final counters.
    pub stats: Snapshot,
    /// The run was stopped (quit flag, Ctrl-C) before it finished.
    pub interrupted: bool,
    /// The run stopped because the target file system is full or
    /// read-only: where, and why (reported once, as an error event).
    /// `interrupted` is false then.
    pub stopped: Option<crate::Stopped>,
    /// The copier used.
    pub copier: String,
    /// The transport used.
    pub transport: String,
    /// The `--modify-window` in effect, in nanoseconds (set or detected).
    pub modify_window_ns: u64,
}

impl Report {
    /// The report of a run that finished (not interrupted, not stopped),
    /// for a frontend that followed a run made elsewhere (a broker's):
    /// set `interrupted` and `stopped` as the run ended.
    pub fn new(
        stats: Snapshot,
        copier: impl Into<String>,
        transport: impl Into<String>,
        modify_window_ns: u64,
    ) -> Report {
        Report {
            stats,
            interrupted: false,
            stopped: None,
            copier: copier.into(),
            transport: transport.into(),
            modify_window_ns,
        }
    }

    /// True when everything was synced: not interrupted, not stopped,
    /// nothing failed.
    pub fn success(&self) -> bool {
        !self.interrupted && self.stopped.is_none() && self.stats.failed == 0
    }
}

impl Syncer {
    /// The flag that stops the run: set it (from a signal handler, another
    /// thread) and workers finish their current step, remove their
    /// temporaries and return.
    pub fn quit_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.quit)
    }

    /// Set when a stopping run gave up waiting for tasks stuck in a call
    /// that does not return and removed its temporaries without them
    /// ([`SyncBuilder::stop_grace`]): a frontend may exit then, as
    /// [`Syncer::run`] itself returns only when those tasks do.
    pub fn reaped_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.reaped)
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Runs to the end (or until the quit flag is set). Per-entry failures
    /// are events and counters, not errors. The same as
    /// [`Syncer::prepare`], then [`Engine::from_spec`] with this syncer's
    /// events, counters, quit flag, copiers, walker and planner, then
    /// [`Engine::run_all`] on the transport (with progress events and the
    /// stop grace around it).
    ///
    /// # Errors
    /// Fatal problems only: the roots cannot be opened or created, the
    /// transport failed.
    pub fn run(&self) -> Result<Report, Error> {
        let start = Instant::now();
        let (spec, seed) = self.prepare()?;
        let transport: Arc<dyn Transport> = self.b.transport.clone().unwrap_or_else(|| {
            let threads = self.b.threads;
            Arc::new(Local::new(
                threads.unwrap_or_else(|| default_threads_for(&self.b.dst)),
            ))
        });
        if let Some((engines, draws)) = self.b.scatter {
            let mut scatter = crate::Scatter::from_spec(&spec, engines, &self.context(), draws)?;
            scatter.redeliver(self.b.redeliver).lossy(self.b.lossy);
            let reap = |grace| scatter.reap_stuck(grace);
            return self.with_progress(start, || {
                self.reaping(reap, || scatter.run_all(seed, &*transport))
            });
        }
        let engine = Engine::from_spec(&spec, self.context())?;
        let reap = |grace| engine.reap_stuck(grace);
        self.with_progress(start, || {
            self.reaping(reap, || engine.run_all(seed, &*transport))
        })
    }

    /// Prepares the run: opens the roots, creates the target root when
    /// missing (not in a dry run), chooses the copier for the pair of file
    /// systems, detects the target's `--modify-window` (unless set; this
    /// may write a probe file to the target root), and makes the run's id,
    /// secret key and clock. Returns the run's spec and its first task
    /// (the root's [`Task::Dir`]): what [`Engine::from_spec`] and
    /// [`Engine::run_all`] take, here or in other processes. The spec is
    /// confidential (see [`RunSpec`]).
    ///
    /// Sends an [`Event::Notice`] to the events channel for what the pair
    /// of file systems cannot keep ([`crate::backend::notes`]: Lustre
    /// layouts), once per run, here rather than per file.
    ///
    /// # Errors
    /// The roots cannot be opened or created, no copier for the pair (or
    /// a [`Backend::Named`] copier not registered for it).
    pub fn prepare(&self) -> Result<(RunSpec, Task), Error> {
        let b = &self.b;
        let (src, dst) = (&self.roots.src, &self.roots.dst);
        let src_root = Dir::open_root(src).at(Op::OpenDir, src)?;
        let src_entry = root_entry(&src_root, src)?;
        let src_magic = src_root.fs_magic().at(Op::Stat, src)?;
        // Chosen before the target root is made: a copier refused for this
        // pair leaves nothing behind. A missing target is on the file
        // system of its nearest existing ancestor, where it will be made.
        let choose = |dst_magic| {
            crate::backend::choose(&b.registry, &b.backend, src_magic, dst_magic)
                .map_err(|msg| Error::invalid(dst, msg))
        };
        let mut dst_magic = crate::probe::fs_magic_or_parent(dst).at(Op::Stat, dst)?;
        let mut copier = choose(dst_magic)?.copier;
        // A missing root is made by the copier, as the directories below
        // it are (a Lustre default layout), from the source root; what it
        // warns of is reported at the root.
        let make = |parent: &Dir, name: &crate::entry::Name| {
            let from = crate::xattr::Node::Fd(src_root.fd());
            crate::copy::kit::take_notes();
            let made = copier.make_dir(parent, name, &src_entry, from);
            if let Some(tx) = &b.events {
                for (op, message) in crate::copy::kit::take_notes() {
                    self.stats
                        .warnings
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let path = RelPath::root();
                    let _ = tx.send(Event::Warning { path, op, message });
                }
            }
            made
        };
        let (dst_root, dst_entry) = open_target_root(dst, b.dry_run, Some(&make))?;
        // The root as opened is what the run writes to (a mount made over
        // its path in between counts).
        if let Some(d) = &dst_root {
            let opened = d.fs_magic().at(Op::Stat, dst)?;
            if opened != dst_magic {
                (dst_magic, copier) = (opened, choose(opened)?.copier);
            }
        }
        if let Some(tx) = &b.events {
            for message in crate::backend::notes(src_magic, dst_magic, copier.name()) {
                let _ = tx.send(Event::Notice { message });
            }
        }
        let root = is_root();
        let mut plan = b.plan.clone();
        // Without root an entry gets its source's group when the process
        // is in it, as rsync -g does: the planner compares groups only
        // then (the member set, read once here), the copier sets them only
        // then (`own_groups` too).
        plan.preserve.owner &= root;
        plan.member_groups = (!root).then(|| crate::fs::own_groups().to_vec());
        // Inode flags and project ids are compared when xattrs would be
        // (a change of either moves the ctime too).
        plan.xattrs = b.xattrs.on() || b.acls.on() || b.file_flags.on() || b.project_ids.on();
        plan.file_flags = b.file_flags.on();
        plan.xattrs_always =
            !b.fast_xattr_check || b.xattrs == AttrMode::Required || b.acls == AttrMode::Required;
        // The run's clock, for every engine of the run (`--min-age`).
        plan.now = now();
        let mut root_touched = false;
        if !b.window_set
            && let Some(d) = &dst_root
        {
            (plan.modify_window_ns, root_touched) = detect_window(d, b.dry_run);
        }
        let preserve = plan.preserve;
        let spec = RunSpec {
            src: src.clone(),
            dst: dst.clone(),
            run_id: random_u64(),
            secret: secret_key(),
            plan,
            copy: CopyOptions {
                preserve,
                can_chown: root,
                reflink: b.reflink,
                xattrs: b.xattrs,
                acls: b.acls,
                fresh: false,
                created: false,
                acl_target_mode: !preserve.perms,
                direct_io: b.direct_io,
                file_flags: b.file_flags,
                project_ids: b.project_ids,
            },
            copier: copier.name().to_string(),
            copier_options: copier.options(),
            dry_run: b.dry_run,
            max_delete: b.max_delete,
            max_errors: b.max_errors,
            bwlimit: b.bwlimit,
            itemize: b.itemize,
            verify: b.verify,
            chunk_size: b.chunk_size,
            resume_threshold: b.resume_threshold,
            batch_files: b.batch_files,
            batch_bytes: b.batch_bytes,
            retries: b.retries,
            flush: b.flush,
            drop_source_cache: !b.keep_source_cache,
            root_touched,
            verify_only: b.verify_only,
            manifest: b.manifest,
            wide_dir: b.wide_dir,
        };
        // The roots' entries named as every engine names them (ADR 014).
        let (mut src_entry, mut dst_entry) = (src_entry, dst_entry);
        let ids = crate::fsid::FsIds::new(src_entry.dev, dst_entry.as_ref().map(|e| e.dev));
        for e in std::iter::once(&mut src_entry).chain(dst_entry.as_mut()) {
            e.dev = ids.known(e.dev).unwrap_or(e.dev);
        }
        let seed = Task::Dir {
            rel: RelPath::root(),
            src: src_entry,
            dst: dst_entry,
            at: None,
        };
        Ok((spec, seed))
    }

    /// What this syncer's engine takes from it besides the spec.
    fn context(&self) -> EngineContext {
        let mut cx = EngineContext::new(self.b.registry.clone());
        cx.walker = Arc::clone(&self.b.walker);
        cx.planner = Arc::clone(&self.b.planner);
        cx.events = self.b.events.clone();
        cx.stats = Arc::clone(&self.stats);
        cx.quit = Arc::clone(&self.quit);
        // This process runs all of the run's tasks.
        cx.dry_links = Some(Arc::default());
        cx
    }

    /// Runs `f` (the transport) while a thread watches for a stop: once
    /// the quit flag is set and `f` has not returned within the stop
    /// grace, this run's temporaries are removed without waiting for the
    /// tasks still under way.
    fn reaping<T>(&self, reap: impl Fn(Duration) + Sync, f: impl FnOnce() -> T) -> T {
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                while !done.load(Ordering::Acquire) && !self.quit.load(Ordering::Relaxed) {
                    park_for(&done, Duration::from_millis(50));
                }
                park_for(&done, self.b.stop_grace);
                if !done.load(Ordering::Acquire) {
                    reap(self.b.stop_grace);
                    self.reaped.store(true, Ordering::SeqCst);
                }
            });
            let out = f();
            done.store(true, Ordering::Release);
            watcher.thread().unpark();
            out
        })
    }

    /// Runs `f` while a thread sends progress events.
    fn with_progress<T>(&self, start: Instant, f: impl FnOnce() -> T) -> T {
        let Some(tx) = self.b.events.clone() else {
            return f();
        };
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let sender = s.spawn(|| {
                while !stop.load(Ordering::Acquire) {
                    let _ = tx.send(Event::Progress(self.stats.snapshot(start.elapsed())));
                    park_for(&stop, self.b.progress_interval);
                }
            });
            let out = f();
            stop.store(true, Ordering::Release);
            sender.thread().unpark();
            out
        })
    }
}

/// The `--modify-window` for the target root `d`, and whether finding it
/// wrote to the root. A root whose own mtime has nanoseconds is on a file
/// system that keeps them: nothing to probe, nothing touched (a no-op run
/// must not even change the root's ctime). Otherwise a probe file measures
/// the resolution; a dry run may not write and assumes 1 s.
fn detect_window(d: &Dir, dry_run: bool) -> (u64, bool) {
    let has_ns = d.fstat().is_ok_and(|st| st.st_mtime_nsec != 0);
    match (has_ns, dry_run) {
        (true, _) => (0, false),
        (false, true) => (1_000_000_000, false),
        (false, false) => (time_resolution(d).unwrap_or(0), true),
    }
}

/// The timestamp resolution of the file system holding `dir`, in
/// nanoseconds: sets a probe file's mtime to a value with odd seconds and
/// full nanoseconds and measures what is lost (FAT keeps 2 s, ext3 and some
/// NFS servers 1 s, others µs). `None` if the probe could not be made.
fn time_resolution(dir: &Dir) -> Option<u64> {
    let probe = Name(format!("{}{:016x}.probe", crate::TEMP_PREFIX, random_u64()).into_bytes());
    // Through the file psync created (O_EXCL), not its name: a user who
    // can write the root cannot steer the times onto another inode.
    let result = dir
        .create_excl(probe.as_bytes())
        .ok()
        .and_then(|f| measure_resolution(&f));
    let _ = dir.unlink(probe.as_bytes());
    result
}

/// The timestamp resolution of the file system holding `f` (a file of
/// psync's own), in nanoseconds, as [`time_resolution`] measures it.
pub(crate) fn measure_resolution(f: &std::fs::File) -> Option<u64> {
    let want = crate::Time::new(1_000_000_001, 123_456_789);
    rustix::fs::futimens(f, &crate::fs::timestamps(want, want)).ok()?;
    let st = rustix::fs::fstat(f).ok()?;
    let got = Entry::from_stat(Name(Vec::new()), &st).mtime;
    let lost = (i128::from(want.sec) * 1_000_000_000 + i128::from(want.nsec))
        - (i128::from(got.sec) * 1_000_000_000 + i128::from(got.nsec));
    let lost = u64::try_from(lost.unsigned_abs()).unwrap_or(u64::MAX);
    // Round up to the resolution: the next power of ten above what was
    // lost, or 2 s when even the odd second was lost.
    Some(match lost {
        0 => 0,
        l if l >= 1_000_000_000 => 2_000_000_000,
        l => 10u64.pow(l.ilog10() + 1),
    })
}

/// The wall clock as a [`crate::Time`].
fn now() -> crate::Time {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::Time::new(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// Sleeps up to `d`, waking as soon as `stop` is set by a thread that
/// then unparks this one (see [`Syncer::reaping`]): a run's end is not
/// delayed by a watcher's nap (10 ms slices cost every run up to 20 ms).
fn park_for(stop: &AtomicBool, d: Duration) {
    // A duration past the clock's range waits until `stop`.
    let end = Instant::now().checked_add(d);
    while !stop.load(Ordering::Acquire) {
        match end.map(|end| end.saturating_duration_since(Instant::now())) {
            Some(left) if left.is_zero() => return,
            Some(left) => std::thread::park_timeout(left),
            None => std::thread::park(),
        }
    }
}

/// A key no other user can learn or guess: 128 bits from the kernel's
/// random source (`getrandom`), for the names of the run's private
/// entries on the target (ADR 010).
pub(crate) fn secret_key() -> [u64; 2] {
    let mut b = [0u8; 16];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `b`.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        match n {
            n if n > 0 => got += n as usize,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            // No getrandom (a kernel older than 3.17): the std hasher's
            // keys come from the same source by other means.
            _ => return [random_u64(), random_u64()],
        }
    }
    let (a, z) = b.split_at(8);
    [
        u64::from_le_bytes(a.try_into().unwrap_or_default()),
        u64::from_le_bytes(z.try_into().unwrap_or_default()),
    ]
}

/// A random 64-bit value from the std hasher's per-process random keys,
/// mixed with time and pid: run ids and temp-name nonces need uniqueness,
/// not cryptography.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Into tmpfs (and a path under it that does not exist yet) two
    /// threads per core; on a disk file system the I/O default.
    #[test]
    fn default_threads_follow_the_target_s_file_system() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let in_memory = (cores * 2).clamp(4, 64);
        use crate::probe::magic::{RAMFS, TMPFS};
        if rustix::fs::statfs("/dev/shm").is_ok_and(|st| st.f_type as u64 == TMPFS) {
            assert_eq!(
                default_threads_for(Path::new("/dev/shm/no/such/dir")),
                in_memory
            );
        }
        let root_magic = rustix::fs::statfs("/").map(|st| st.f_type as u64);
        if root_magic.is_ok_and(|m| m != TMPFS && m != RAMFS) {
            assert_eq!(default_threads_for(Path::new("/")), default_threads());
        }
        assert!(default_threads() >= 16);
    }

    #[test]
    fn nanosecond_file_systems_need_no_window() {
        let t = crate::test_dir();
        let d = Dir::open_root(t.path()).unwrap();
        // tmp dirs of the test live on ext4/tmpfs/xfs/btrfs: all keep ns.
        assert_eq!(time_resolution(&d), Some(0));
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            0,
            "the probe is removed"
        );
    }
}
