//! The run spec: everything an engine needs besides its tasks, as one
//! serializable value, so that any number of engines — this process's,
//! or worker processes' on other nodes — carry out one run alike
//! (ADR 001). [`Engine::from_spec`] is the only way an engine is built.

use crate::builder::{CHUNK_ALIGN, MAX_CHUNK_SIZE, MAX_RETRIES, MAX_SECS, MIN_CHUNK_SIZE, Report};
use crate::copy::{CopyOptions, Registry};
use crate::durable::Flush;
use crate::engine::Engine;
use crate::entry::{Entry, Kind, Name, RelPath};
use crate::error::{Error, Op, ResultExt};
use crate::event::{Event, Stats};
use crate::fs::{Dir, is_root};
use crate::itemize::Change;
use crate::plan::{PlanOptions, Planner, RsyncPlanner};
use crate::task::Task;
use crate::transport::Transport;
use crate::walk::{FsWalker, Walker};
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Version byte in front of every encoded [`RunSpec`] (postcard is not
/// self-describing: an engine refuses a spec of another version rather
/// than misread it).
pub const SPEC_ENCODING_VERSION: u8 = 5;

/// Everything an engine needs to run tasks of one run, besides the tasks:
/// the roots, every option that changes what the engine does, and what
/// the run fixed once for all its engines — its id, its secret key, its
/// clock (`plan.now`), the detected `--modify-window`
/// (`plan.modify_window_ns`) and the copier's name.
///
/// Made by [`crate::Syncer::prepare`]; sent to workers with
/// [`RunSpec::encode`]; turned into an engine by [`Engine::from_spec`].
/// What is made per process — the event channel, the counters, the quit
/// flag, open file descriptors, the temporaries' nonce — is not in it.
///
/// **Confidential.** The spec holds the run's secret key, from which the
/// names of the run's private entries on the target (temporaries, the
/// hard-link area, markers) are derived: whoever holds the spec can
/// predict those names and race psync for them (ADR 010). Keep it
/// readable by the run's user only, as the broker keeps its messages.
/// Its `Debug` output leaves the key out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunSpec {
    /// The source root (opened read-only by every engine).
    #[serde(with = "root_path")]
    pub src: PathBuf,
    /// The target root (created by [`crate::Syncer::prepare`] when
    /// missing).
    #[serde(with = "root_path")]
    pub dst: PathBuf,
    /// The run's id: in every temporary's name, so a later run knows its
    /// leftovers as stale.
    pub run_id: u64,
    /// The run's secret key (see the type's docs: confidential).
    pub secret: [u64; 2],
    /// The planner's options, with the run's clock (`now`, for
    /// `--min-age`), the `--modify-window` in effect (set or detected)
    /// and what the preparing process's credentials allow (owners as
    /// root; otherwise its own groups).
    pub plan: PlanOptions,
    /// The copier's options (`fresh` and `created` are per call and
    /// ignored here).
    pub copy: CopyOptions,
    /// The name of the copier chosen for the pair of file systems
    /// ([`crate::Copier::name`]); each engine takes the copier of that
    /// name from its [`EngineContext::copiers`].
    pub copier: String,
    /// That copier's options ([`crate::Copier::options`]), which each
    /// engine gives the copier of that name
    /// ([`crate::Copier::with_options`]): a worker's registry holds it
    /// unconfigured.
    pub copier_options: String,
    /// Plan and report without changing anything.
    pub dry_run: bool,
    /// `--max-delete`: at most this many target entries deleted in the
    /// run (deletions past it are skipped and counted). The count is
    /// shared by the engines of one process ([`EngineContext::deletions`]),
    /// not across processes.
    #[serde(default)]
    pub max_delete: Option<u64>,
    /// `--max-errors`: the run stops (as if interrupted) once this many
    /// entries failed, counted like `max_delete` ([`EngineContext::failures`]).
    #[serde(default)]
    pub max_errors: Option<u64>,
    /// `--bwlimit`: bytes per second of file data over all the copies of
    /// the engines that share an [`EngineContext::pacer`].
    #[serde(default)]
    pub bwlimit: Option<u64>,
    /// Send an [`Event::Itemize`] for every change.
    pub itemize: bool,
    /// Verify every copy by reading it back.
    pub verify: bool,
    /// Files larger than this are copied in chunks of this size.
    pub chunk_size: u64,
    /// Chunked files at least this big resume from their journal.
    pub resume_threshold: u64,
    /// Files per copy task.
    pub batch_files: usize,
    /// Bytes per copy task.
    pub batch_bytes: u64,
    /// Retries of a file that changes while it is copied.
    pub retries: u32,
    /// When results reach stable storage, as asked (each engine falls
    /// back from `syncfs` on a FUSE target it sees).
    pub flush: Flush,
    /// Drop copied files' source pages from the page cache.
    pub drop_source_cache: bool,
    /// Finding the modify window wrote to the target root (a probe file):
    /// the root's times are set again at its finish.
    pub root_touched: bool,
    /// `psync verify`: a dry run that also reports what a sync does not
    /// compare (link groups, holes): [`Event::Linked`] for each name of
    /// a hard-linked entry, and holes of the source filled in the target.
    #[serde(default)]
    pub verify_only: bool,
    /// `--manifest`: an [`Event::Hashed`] for every regular file.
    #[serde(default)]
    pub manifest: bool,
    /// A directory with more names than this on either side is listed
    /// and planned in parts, each a task (ADR 021).
    pub wide_dir: usize,
}

impl std::fmt::Debug for RunSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSpec")
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("run_id", &format_args!("{:016x}", self.run_id))
            .field("secret", &format_args!("<confidential>"))
            .field("plan", &self.plan)
            .field("copy", &self.copy)
            .field("copier", &self.copier)
            .field("copier_options", &self.copier_options)
            .field("dry_run", &self.dry_run)
            .field("max_delete", &self.max_delete)
            .field("max_errors", &self.max_errors)
            .field("bwlimit", &self.bwlimit)
            .field("itemize", &self.itemize)
            .field("verify_only", &self.verify_only)
            .field("manifest", &self.manifest)
            .field("wide_dir", &self.wide_dir)
            .field("verify", &self.verify)
            .field("chunk_size", &self.chunk_size)
            .field("resume_threshold", &self.resume_threshold)
            .field("batch_files", &self.batch_files)
            .field("batch_bytes", &self.batch_bytes)
            .field("retries", &self.retries)
            .field("flush", &self.flush)
            .field("drop_source_cache", &self.drop_source_cache)
            .field("root_touched", &self.root_touched)
            .finish()
    }
}

/// Why a [`RunSpec`] could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The spec was encoded by a psync of another encoding version.
    #[error(
        "run spec of encoding version {found}, but this psync reads version {expected}: \
         run the same psync version on every node of a run"
    )]
    Version {
        /// The version byte found.
        found: u8,
        /// [`SPEC_ENCODING_VERSION`].
        expected: u8,
    },
    /// Empty, truncated, with bytes left over, or not a run spec.
    #[error("malformed run spec")]
    Malformed(#[source] postcard::Error),
    /// The spec could not be encoded.
    #[error("cannot encode the run spec")]
    Encode(#[source] postcard::Error),
}

impl RunSpec {
    /// Encodes with [`SPEC_ENCODING_VERSION`] in front.
    ///
    /// # Errors
    /// [`SpecError::Encode`]: never for a spec of this crate's types.
    pub fn encode(&self) -> Result<Vec<u8>, SpecError> {
        let mut out = vec![SPEC_ENCODING_VERSION];
        out.extend(postcard::to_allocvec(self).map_err(SpecError::Encode)?);
        Ok(out)
    }

    /// Decodes what [`RunSpec::encode`] produced.
    ///
    /// # Errors
    /// [`SpecError::Version`] for a spec of another encoding version,
    /// [`SpecError::Malformed`] for anything else that is not exactly one
    /// encoded spec.
    pub fn decode(bytes: &[u8]) -> Result<RunSpec, SpecError> {
        let malformed = SpecError::Malformed;
        match bytes.split_first() {
            None => Err(malformed(postcard::Error::DeserializeUnexpectedEnd)),
            Some((&SPEC_ENCODING_VERSION, rest)) => match postcard::take_from_bytes(rest) {
                Ok((spec, [])) => Ok(spec),
                Ok(_) => Err(malformed(postcard::Error::DeserializeBadEncoding)),
                Err(e) => Err(malformed(e)),
            },
            Some((&found, _)) => Err(SpecError::Version {
                found,
                expected: SPEC_ENCODING_VERSION,
            }),
        }
    }

    /// Refuses values the engine does not support (a spec that did not
    /// come from [`crate::Syncer::prepare`] of this version).
    fn check(&self) -> Result<(), Error> {
        check_limits(
            self.chunk_size,
            self.retries,
            self.plan.modify_window_ns,
            self.plan.min_age_ns,
        )?;
        if self.batch_files == 0 {
            return Err(Error::invalid("batch files", "must be at least 1"));
        }
        // The copier sets owners as root only; the planner compares them
        // only then. A spec made with other powers than this process has
        // would silently give other owners (or fail every chown).
        if self.copy.can_chown != is_root() {
            let (made, here) = match self.copy.can_chown {
                true => ("as root", "is not root"),
                false => ("without root", "is root"),
            };
            let msg = format!("the run was prepared {made}, and this process {here}");
            return Err(Error::invalid(&self.dst, msg));
        }
        Ok(())
    }
}

/// Refuses a chunk size, retry count, modify window or minimum age out of
/// the engine's range, naming the setting, the value and the range.
pub(crate) fn check_limits(
    chunk_size: u64,
    retries: u32,
    modify_window_ns: u64,
    min_age_ns: u64,
) -> Result<(), Error> {
    let bad = |name: &str, msg: String| Err(Error::invalid(name, msg));
    let c = chunk_size;
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&c) || !c.is_multiple_of(CHUNK_ALIGN) {
        let msg = format!("must be 1 MiB to 1 TiB and a multiple of 4 KiB, not {c} bytes");
        return bad("chunk size", msg);
    }
    if retries > MAX_RETRIES {
        return bad(
            "retries",
            format!("must be 0 to {MAX_RETRIES}, not {retries}"),
        );
    }
    let max_ns = MAX_SECS * 1_000_000_000;
    for (name, ns) in [("modify window", modify_window_ns), ("min age", min_age_ns)] {
        if ns > max_ns {
            let msg = format!("must be at most {MAX_SECS} s, not {} s", ns / 1_000_000_000);
            return bad(name, msg);
        }
    }
    Ok(())
}

/// What an engine takes from the process that runs it, besides the
/// [`RunSpec`]: where its events go, its counters, its quit flag, and the
/// copiers, walker and planner it may use. [`EngineContext::new`] gives
/// fresh ones; set the fields to share them.
#[non_exhaustive]
pub struct EngineContext {
    /// The copiers this process knows; the engine takes the one named in
    /// the spec ([`Registry::by_name`]).
    pub copiers: Registry,
    /// Lists directories. Default: [`FsWalker`].
    pub walker: Arc<dyn Walker>,
    /// Decides per directory. Default: [`RsyncPlanner`].
    pub planner: Arc<dyn Planner>,
    /// Where events go. Default: nowhere.
    pub events: Option<Sender<Event>>,
    /// The counters this engine adds to. Default: fresh ones.
    pub stats: Arc<Stats>,
    /// Set it to stop the engine. Default: a fresh, unset flag.
    pub quit: Arc<AtomicBool>,
    /// Deletions granted so far under [`RunSpec::max_delete`]: shared by
    /// the engines of a run so that the limit is the run's. Default: a
    /// counter at 0 (the broker's workers share theirs through it).
    pub deletions: Arc<dyn Allowance>,
    /// Entries failed so far, for [`RunSpec::max_errors`]. Default: 0.
    pub failures: Arc<AtomicU64>,
    /// Where a dry run notes its hard-linked names, to decide them
    /// together at its end as the real run's last phase does: for engines
    /// that run all of a run's tasks between them (shared as `deletions`
    /// is). Default: `None`, for a worker that runs some of them: each
    /// name is itemized as its directory's task meets it.
    pub dry_links: Option<Arc<crate::engine::DryLinks>>,
    /// The data copies' shared rate ([`RunSpec::bwlimit`], set by the
    /// engine). Default: a fresh one.
    pub pacer: Arc<crate::copy::pace::Pacer>,
}

/// A run's `--max-delete` allowance, shared by its engines: a counter in
/// one process, the broker's for engines on many nodes.
pub trait Allowance: Send + Sync + std::fmt::Debug {
    /// Takes `n` deletions of `limit`: false, with nothing taken, when
    /// they do not fit (or the allowance cannot be reached: nothing is
    /// deleted that was not granted).
    fn take(&self, n: u64, limit: u64) -> bool;
}

impl Allowance for AtomicU64 {
    fn take(&self, n: u64, limit: u64) -> bool {
        self.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
            used.checked_add(n).filter(|&total| total <= limit)
        })
        .is_ok()
    }
}

impl EngineContext {
    /// A context with `copiers` and fresh everything else.
    pub fn new(copiers: Registry) -> EngineContext {
        EngineContext {
            copiers,
            walker: Arc::new(FsWalker),
            planner: Arc::new(RsyncPlanner),
            events: None,
            stats: Arc::new(Stats::default()),
            quit: Arc::new(AtomicBool::new(false)),
            deletions: Arc::new(AtomicU64::new(0)),
            failures: Arc::new(AtomicU64::new(0)),
            dry_links: None,
            pacer: Arc::default(),
        }
    }
}

impl std::fmt::Debug for EngineContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineContext")
            .field("copiers", &self.copiers)
            .field("events", &self.events.is_some())
            .field("quit", &self.quit)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds an engine for the run `spec` describes: opens the source
    /// root (read-only) and the target root (created when missing and not
    /// a dry run, as [`crate::Syncer`] does), and takes the copier the
    /// spec names from `cx.copiers`. [`crate::Syncer::run`] builds its
    /// engine this way too; a worker process does the same with a spec it
    /// received, and any number of engines may run tasks of one run.
    ///
    /// ```no_run
    /// use psync_core::{Engine, EngineContext, Local, Registry, RunSpec, SyncBuilder, Task};
    /// use std::sync::Arc;
    /// // `copier`: the backend, e.g. `psync_generic::GenericCopier`.
    /// fn run(copier: Arc<dyn psync_core::Copier>) -> Result<(), Box<dyn std::error::Error>> {
    /// // Where the run is submitted (creates the target root, probes it):
    /// let mut b = SyncBuilder::new("/data/src", "/data/dst");
    /// b.delete(true).default_copier(Arc::clone(&copier));
    /// let (spec, seed) = b.build()?.prepare()?;
    /// let (spec, seed) = (spec.encode()?, seed.encode()?); // confidential
    ///
    /// // Where it runs (another thread, or a node mounting the same trees),
    /// // with the same copiers registered:
    /// let mut copiers = Registry::new();
    /// copiers.set_default(copier);
    /// let engine = Engine::from_spec(&RunSpec::decode(&spec)?, EngineContext::new(copiers))?;
    /// let report = engine.run_all(Task::decode(&seed)?, &Local::new(8))?;
    /// assert!(report.success());
    /// Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// Values out of range, a spec prepared as root for a process that is
    /// not (or the reverse), roots that fail [`crate::validate()`] or
    /// cannot be opened or created, no copier of the spec's name.
    pub fn from_spec(spec: &RunSpec, cx: EngineContext) -> Result<Engine, Error> {
        spec.check()?;
        crate::validate(&spec.src, &spec.dst)?;
        let src_root = Dir::open_root(&spec.src).at(Op::OpenDir, &spec.src)?;
        let src_dev = root_entry(&src_root, &spec.src)?.dev;
        let (dst_root, dst_entry) = open_target_root(&spec.dst, spec.dry_run, None)?;
        let copier = cx.copiers.by_name(&spec.copier).ok_or_else(|| {
            let msg = format!("no copier named {:?} is registered", spec.copier);
            Error::invalid(&spec.dst, msg)
        })?;
        let copier = match copier.with_options(&spec.copier_options) {
            Ok(configured) => configured.unwrap_or(copier),
            Err(e) => {
                let msg = format!("copier {:?}: {e}", spec.copier);
                return Err(Error::invalid(&spec.dst, msg));
            }
        };
        // A target whose file system `syncfs` cannot flush (FUSE, as this
        // node mounts it) gets per-file flushes: said once, with the reason.
        let (flush, flush_why) = match dst_root.as_ref().map(Dir::fs_magic) {
            Some(Ok(magic)) if !spec.dry_run => spec.flush.on_target(magic),
            _ => (spec.flush, None),
        };
        // The target root's device, for its file system's id (an `fstat`
        // only for a root this engine made).
        #[allow(clippy::unnecessary_cast)]
        let dst_dev = match (&dst_root, dst_entry) {
            (_, Some(e)) => Some(e.dev),
            (Some(d), None) => Some(d.fstat().at(Op::Stat, &spec.dst)?.st_dev as u64),
            (None, None) => None,
        };
        let engine = Engine {
            src_root,
            dst_root,
            src_dev,
            fs: crate::fsid::FsIds::new(src_dev, dst_dev),
            src_path: spec.src.clone(),
            dst_path: spec.dst.clone(),
            copier,
            walker: cx.walker,
            planner: cx.planner,
            plan_opts: spec.plan.clone(),
            copy_opts: CopyOptions {
                fresh: false,
                created: false,
                ..spec.copy
            },
            dry_run: spec.dry_run,
            max_delete: spec.max_delete,
            deletions: cx.deletions,
            max_errors: spec.max_errors,
            failures: cx.failures,
            dry_links: cx.dry_links,
            pacer: {
                cx.pacer.set_rate(spec.bwlimit);
                cx.pacer
            },
            itemize: spec.itemize,
            events: cx.events,
            stats: cx.stats,
            quit: cx.quit,
            run_id: spec.run_id,
            // Per engine by design: temporaries of engines of one run
            // differ by it (the secret key keeps them unpredictable).
            nonce: crate::random_u64() as u32,
            secret: spec.secret,
            seq: AtomicU64::new(0),
            batch_files: spec.batch_files,
            batch_bytes: spec.batch_bytes,
            retries: spec.retries,
            links: std::sync::OnceLock::new(),
            stopped: std::sync::OnceLock::new(),
            open_parts: std::sync::Mutex::new(Vec::new()),
            fsattr_warned: std::sync::atomic::AtomicU8::new(0),
            verify: spec.verify,
            root_touched: spec.root_touched,
            verify_only: spec.verify_only,
            manifest: spec.manifest,
            wide_dir: spec.wide_dir.max(1),
            chunk_size: spec.chunk_size,
            resume_threshold: spec.resume_threshold,
            drop_source_cache: spec.drop_source_cache,
            flush,
        };
        if let Some(why) = flush_why {
            engine.warn(&RelPath::root(), true, Op::Syncfs, why);
        }
        Ok(engine)
    }

    /// Runs a whole sync on this engine: `seed` (the run's first task,
    /// from [`crate::Syncer::prepare`]) and everything that follows from
    /// it, through `transport`; then, after a stop, removes what this
    /// engine made for copies that will not finish, and otherwise does
    /// the run's end flush ([`Flush::End`]). A seed for a target root the
    /// run created is itemized first. [`crate::Syncer::run`] is
    /// [`crate::Syncer::prepare`], [`Engine::from_spec`] and this.
    ///
    /// The report's counters are the engine's ([`EngineContext::stats`]),
    /// its time this call's.
    ///
    /// # Errors
    /// When the transport fails; failures of entries are events and
    /// counters.
    pub fn run_all(&self, seed: Task, transport: &dyn Transport) -> Result<Report, Error> {
        run_engines(std::slice::from_ref(self), self, seed, transport)
    }
}

/// [`Engine::run_all`] for `engines` of one run that share their events,
/// counters and quit flag, with `runner` choosing which runs each task
/// (an engine itself, or [`crate::transport::scatter::Scatter`]): the
/// seed, the transport's run, then each engine's wind-down after a stop
/// or its end flush, and one report of the shared counters.
pub(crate) fn run_engines(
    engines: &[Engine],
    runner: &dyn crate::transport::TaskRunner,
    seed: Task,
    transport: &dyn Transport,
) -> Result<Report, Error> {
    let start = Instant::now();
    let first = &engines[0];
    if let Task::Dir {
        rel,
        src,
        dst: None,
        ..
    } = &seed
        && rel.is_root()
    {
        first.itemize(RelPath::root(), Some(Change::new_entry(Kind::Dir)), src);
    }
    let result = transport.run(seed, runner, &first.quit);
    let quit = || first.quit.load(Ordering::Relaxed);
    for engine in engines {
        engine.wind_down();
        if result.is_ok() && !quit() {
            engine.flush_at_end();
        }
    }
    // The workers have ended (and their own buffers with them); the
    // large direct-I/O buffers they shared are idle now.
    crate::direct::trim();
    result?;
    let stopped = engines.iter().find_map(|e| e.stopped.get().cloned());
    Ok(Report {
        stats: first.stats.snapshot(start.elapsed()),
        // The engine sets the quit flag to stop for a target that
        // cannot be written: that is not an interrupt.
        interrupted: stopped.is_none() && quit(),
        stopped,
        copier: first.copier.name().to_string(),
        transport: transport.name().to_string(),
        modify_window_ns: first.plan_opts.modify_window_ns,
    })
}

/// Makes the missing directory `name` in `parent` (the target root), as
/// the run's copier makes directories ([`crate::Copier::make_dir`]: a
/// Lustre default layout).
pub(crate) type MakeRoot<'a> = &'a dyn Fn(&Dir, &Name) -> Result<(), crate::StepError>;

/// Opens the target root, creating it (one level, like rsync) when
/// missing, except in a dry run: with `make` when given and the path has
/// a last component, else `mkdir`. Returns its entry from before this
/// call, `None` when this call created it (or, in a dry run, it is
/// missing).
pub(crate) fn open_target_root(
    dst: &Path,
    dry_run: bool,
    make: Option<MakeRoot<'_>>,
) -> Result<(Option<Dir>, Option<Entry>), Error> {
    let existed = std::fs::symlink_metadata(dst).is_ok();
    if !existed {
        if dry_run {
            return Ok((None, None));
        }
        let made = match (make, dst.parent(), dst.file_name()) {
            (Some(make), Some(parent), Some(name)) => {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                Dir::open_root(parent)
                    .and_then(|p| make(&p, &Name::from(name)).map_err(|e| e.source))
            }
            _ => std::fs::create_dir(dst),
        };
        match made {
            Ok(()) => {}
            // Created meanwhile by someone else: use it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::new(Op::Mkdir, dst, e)),
        }
    }
    // Without root, a root of the user's that lacks owner permissions
    // (mode 0300, 0500, 0000) is opened up as the engine opens up the
    // directories below it (`Engine::ensure_open`); the pre-run entry
    // keeps the old mode, so the root's finish sets the source's.
    let add = if dry_run || is_root() { 0 } else { 0o700 };
    let (d, st) = Dir::open_root_adding(dst, add).at(Op::OpenDir, dst)?;
    let entry = existed.then(|| Entry {
        // Immutable or append-only: lifted while the run writes in it.
        flags: crate::entry::listed_flags_of(d.fd()),
        ..Entry::from_stat(Name::default(), &st)
    });
    Ok((Some(d), entry))
}

/// The entry of an open root (its own name empty).
pub(crate) fn root_entry(d: &Dir, path: &Path) -> Result<Entry, Error> {
    let st = d.fstat().at(Op::Stat, path)?;
    Ok(Entry {
        // Its immutable and append-only flags are set at the root's finish.
        flags: crate::entry::listed_flags_of(d.fd()),
        ..Entry::from_stat(Name::default(), &st)
    })
}

/// A root path as its raw bytes (any bytes but NUL are a valid path; a
/// serde string would refuse those that are not UTF-8).
mod root_path {
    use serde::{Deserializer, Serializer};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(p.as_os_str().as_bytes())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let bytes = crate::entry::serde_bytes_compat::deserialize(d)?;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::{AttrMode, Reflink};
    use crate::entry::Time;
    use crate::plan::Preserve;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn spec() -> RunSpec {
        RunSpec {
            src: PathBuf::from("/data/src\u{e9}"),
            // Not UTF-8: a root is any bytes.
            dst: PathBuf::from(OsString::from_vec(b"/data/\xffdst".to_vec())),
            run_id: 0x0123_4567_89ab_cdef,
            secret: [u64::MAX, 7],
            plan: PlanOptions {
                delete: true,
                modify_window_ns: 1_000_000_000,
                min_age_ns: 5_000_000_000,
                now: Time::new(1_700_000_000, 123),
                member_groups: Some(vec![10, 20]),
                one_file_system: true,
                filters: {
                    let mut f = crate::filter::Filters::default();
                    f.add_filter(b"- .snapshot/").unwrap();
                    f.add_pattern(true, b"/keep/***");
                    f.delete_excluded = true;
                    f
                },
                ..PlanOptions::default()
            },
            copy: CopyOptions {
                preserve: Preserve::NONE,
                can_chown: true,
                reflink: Reflink::Never,
                xattrs: AttrMode::Required,
                acls: AttrMode::Off,
                fresh: false,
                created: false,
                acl_target_mode: true,
                direct_io: false,
                file_flags: AttrMode::Off,
                project_ids: AttrMode::Required,
            },
            copier: "generic".into(),
            copier_options: "{\"layout\":\"Default\"}".into(),
            dry_run: true,
            max_delete: Some(2),
            max_errors: Some(5),
            bwlimit: Some(1 << 20),
            itemize: true,
            verify: false,
            chunk_size: 8 << 20,
            resume_threshold: 1 << 30,
            batch_files: 3,
            batch_bytes: 4 << 20,
            retries: 9,
            flush: Flush::Parallel,
            drop_source_cache: true,
            root_touched: true,
            verify_only: true,
            manifest: true,
            wide_dir: 99,
        }
    }

    #[test]
    fn encode_roundtrip_with_version() {
        let s = spec();
        let bytes = s.encode().unwrap();
        assert_eq!(bytes[0], SPEC_ENCODING_VERSION);
        assert_eq!(RunSpec::decode(&bytes).unwrap(), s);
    }

    #[test]
    fn other_versions_and_malformed_specs_are_refused() {
        let mut bytes = spec().encode().unwrap();
        bytes[0] = SPEC_ENCODING_VERSION + 1;
        let e = RunSpec::decode(&bytes).unwrap_err();
        assert!(
            matches!(e, SpecError::Version { found, expected }
                if found == SPEC_ENCODING_VERSION + 1 && expected == SPEC_ENCODING_VERSION),
            "{e:?}"
        );
        let reads = format!("reads version {SPEC_ENCODING_VERSION}");
        assert!(e.to_string().contains(&reads), "{e}");
        bytes[0] = SPEC_ENCODING_VERSION;
        let mut long = bytes.clone();
        long.push(0);
        for bad in [&[][..], &bytes[..1], &bytes[..bytes.len() - 1], &long] {
            assert!(
                matches!(RunSpec::decode(bad), Err(SpecError::Malformed(_))),
                "{} bytes",
                bad.len()
            );
        }
    }

    /// A spec goes to other threads and processes; a context and an
    /// engine are shared by the threads of a transport.
    #[test]
    fn send_and_sync() {
        fn both<T: Send + Sync>() {}
        both::<RunSpec>();
        both::<SpecError>();
        both::<EngineContext>();
        both::<Engine>();
        both::<crate::Scatter>();
    }

    #[test]
    fn debug_leaves_the_secret_out() {
        let shown = format!("{:?}", spec());
        assert!(shown.contains("confidential"), "{shown}");
        assert!(!shown.contains(&u64::MAX.to_string()), "{shown}");
        assert!(!shown.contains("ffffffffffffffff"), "{shown}");
    }
}
