//! The engine: runs directory, file-batch and finish tasks.
//!
//! A directory task lists both sides, plans, does the cheap actions itself
//! (deletions, mkdir, symlinks, specials, attribute fixes), spawns its
//! subdirectories and batches of file copies, and defers its own finish,
//! which applies the directory's attributes once everything inside it is
//! done. File copies go to a temporary name and are renamed into place only
//! when complete.

use crate::copy::{Copier, CopyOptions, Strategy};
use crate::durable::{MAX_STAGED, Ready, Staged};
use crate::entry::{Entry, Kind, Name, RelPath};
use crate::error::{Error, Op};
use crate::event::{Event, Stats};
use crate::fs::Dir;
use crate::itemize::Change;
use crate::plan::{Action, PlanOptions, Planner, attr_change, is_linked};
use crate::task::Task;
use crate::transport::{Outcome, TaskContext, TaskRunner};
use crate::walk::Walker;
use crate::xattr::Node;
use crossbeam_channel::Sender;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
    pub(crate) src_path: PathBuf,
    pub(crate) dst_path: PathBuf,
    pub(crate) copier: Arc<dyn Copier>,
    pub(crate) walker: Arc<dyn Walker>,
    pub(crate) planner: Arc<dyn Planner>,
    pub(crate) plan_opts: PlanOptions,
    pub(crate) copy_opts: CopyOptions,
    pub(crate) dry_run: bool,
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
    pub(crate) links: std::sync::OnceLock<Result<crate::links::LinkArea, i32>>,
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
    /// never acknowledged as done.
    fn run(&self, task: Task, cx: &mut dyn TaskContext) -> Outcome {
        if self.quit.load(Ordering::Relaxed) {
            return Outcome::Abandoned;
        }
        self.run_task(task, cx);
        if self.quit.load(Ordering::Relaxed) {
            Outcome::Abandoned
        } else {
            Outcome::Done
        }
    }

    fn run_id(&self) -> u64 {
        self.run_id
    }
}

impl Engine {
    fn run_task(&self, task: Task, cx: &mut dyn TaskContext) {
        match task {
            Task::Dir { rel, src, dst, at } => self.run_dir(&rel, &src, (dst.as_ref(), at), cx),
            Task::Files {
                rel,
                actions,
                fresh,
                at,
            } => self.run_files(&rel, actions, fresh, at),
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
                let how = crate::bigfile::Finish {
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
            } => self.finish_dir(&rel, &src, (dst.as_ref(), at), touched, cx),
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

/// How one copy attempt may proceed.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    /// The mode of the target that exists under the name (it is replaced
    /// by rename), if one does.
    old: Option<u32>,
    /// The target directory was created by this run (see `Task::Files`).
    fresh_dir: bool,
    /// Use the listing's metadata instead of a new `fstat` (first attempt).
    trust_listing: bool,
    /// Staged for a batch's flush: written but not published.
    staged: bool,
}

/// True when new entries of `dir` inherit ACLs: it has a default ACL
/// (which `mkdir` passes on to a new directory from its parent, so a
/// directory this run created may have one). Its new files then hold
/// ACL entries the source's may not have; unknown counts as yes.
fn passes_on_acl(dir: &Dir) -> bool {
    let name = crate::xattr::ACL_NAMES[1];
    match Node::Fd(dir.fd()).get(name) {
        Ok(v) => v.is_some(),
        Err(e) => e.raw_os_error() != Some(libc::EOPNOTSUPP),
    }
}

/// The target a copy fills, for its attributes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Made {
    /// Made unnamed in a directory this run created (`CopyOptions::fresh`).
    pub(crate) fresh: bool,
    /// The mode of the target it replaces, if any (`--no-perms` keeps it).
    pub(crate) old: Option<u32>,
}

/// What a finished fill wrote: how, and how many bytes of data. Counted
/// (bytes copied) only when the target it filled is in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filled {
    pub(crate) strategy: Strategy,
    pub(crate) bytes: u64,
}

/// Small files travel together; a batch closes at this many files or bytes.
struct Batch {
    actions: Vec<Action>,
    bytes: u64,
}

impl Engine {
    // ----- reporting -------------------------------------------------------

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

    pub(crate) fn emit(&self, ev: Event) {
        let Some(tx) = &self.events else { return };
        // A frontend that stopped listening must not stop the run, and a
        // stalled one must not keep it from stopping: block for room only
        // until the quit flag is set.
        let mut ev = ev;
        loop {
            match tx.send_timeout(ev, std::time::Duration::from_millis(100)) {
                Ok(()) | Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return,
                Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => {
                    if self.quit.load(Ordering::Relaxed) {
                        return;
                    }
                    ev = back;
                }
            }
        }
    }

    pub(crate) fn itemize(&self, path: RelPath, change: Option<Change>, entry: &Entry) {
        if self.itemize {
            let link = entry
                .link
                .as_ref()
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
            Stats::bump(&self.stats.failed, 1);
            Stats::bump(&self.stats.done, 1);
        }
        self.emit(Event::Error {
            path: rel.clone(),
            op,
            side: crate::event::Side::of(on_target),
            errno,
            message: e.to_string(),
        });
    }

    pub(crate) fn warn(&self, rel: &RelPath, on_target: bool, op: Op, message: &str) {
        let base = if on_target {
            &self.dst_path
        } else {
            &self.src_path
        };
        Stats::bump(&self.stats.warnings, 1);
        self.emit(Event::Warning {
            path: rel.clone(),
            op,
            message: format!("{op} {}: {message}", rel.under(base).display()),
        });
    }

    // ----- directory tasks -------------------------------------------------

    pub(crate) fn open_dst(&self, rel: &RelPath) -> io::Result<Dir> {
        match &self.dst_root {
            Some(root) => root.open_beneath(rel),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    /// [`Engine::open_dst`] of a directory a task saw before: it must
    /// still be the directory `at` (device, inode) — a user who can rename
    /// in its parent may have put another one (someone's) at its path.
    pub(crate) fn open_dst_at(&self, rel: &RelPath, at: Option<(u64, u64)>) -> io::Result<Dir> {
        let d = self.open_dst(rel)?;
        match at {
            Some(at) if dir_id(&d)? != at => Err(replaced_dir()),
            _ => Ok(d),
        }
    }

    /// Lists, plans and acts for one directory.
    fn run_dir(
        &self,
        rel: &RelPath,
        src_entry: &Entry,
        (dst_entry, made): (Option<&Entry>, Option<(u64, u64)>),
        cx: &mut dyn TaskContext,
    ) {
        // Before anything else: the finish of an unreadable source
        // directory opens the target too.
        if let Some(d) = dst_entry {
            self.ensure_open(rel, d);
        }
        let src_dir = match self.src_root.open_beneath(rel) {
            Ok(d) => d,
            Err(e) => {
                let on = (dst_entry, made);
                return self.unreadable_dir(rel, src_entry, on, Op::OpenDir, e, cx);
            }
        };
        if self.other_source_fs(rel, &src_dir) {
            // -x: the mount point's directory is kept, nothing inside it.
            Stats::bump(&self.stats.dirs, 1);
            self.itemize_dir_attrs(rel, src_entry, dst_entry);
            return self.defer(
                cx,
                self.finish_task(rel, src_entry, (dst_entry, made), false),
            );
        }
        if let Some(d) = dst_entry
            && self.foreign_dir(rel, src_entry, d)
        {
            let why = format!(
                "the target directory belongs to uid {}, and the source's owner, uid {}, can rename entries in its parent: it may be another user's directory put at this name; not synced into nor given away (move it, or chown it to uid {}, to sync it)",
                d.uid, src_entry.uid, src_entry.uid
            );
            return self.fail(rel, true, Op::Chown, io::Error::other(why));
        }
        // In a dry run, a directory that would be created does not exist.
        let dst_dir = if self.dry_run && dst_entry.is_none() {
            None
        } else {
            match self.open_dst(rel) {
                Ok(d) if !rel.is_root() && d.is_mount_root() => {
                    return self.fail(rel, true, Op::OpenDir, crate::subtree::mount_point(rel));
                }
                Ok(d) => Some(d),
                Err(e) => return self.fail(rel, true, Op::OpenDir, e),
            }
        };
        // The directory listed by the parent's task (or made by it), not
        // another one a user renamed to its path since.
        let at = match dst_dir.as_ref().map(|d| {
            d.fstat()
                .and_then(|st| self.check_dir(rel, &st, dst_entry, made))
        }) {
            Some(Ok(at)) => Some(at),
            Some(Err(e)) => return self.fail(rel, true, Op::OpenDir, e),
            None => None,
        };
        let src = match self.walker.list(&src_dir) {
            Ok(l) => l,
            Err(e) => {
                let on = (dst_entry, at.or(made));
                return self.unreadable_dir(rel, src_entry, on, Op::ReadDir, e, cx);
            }
        };
        let unread: Vec<Name> = src.failed.iter().map(|(n, _)| n.clone()).collect();
        for (name, e) in src.failed {
            self.fail(&rel.join(&name), false, Op::Stat, e);
        }
        self.count_scanned(&src.entries);
        let mut parts = Vec::new();
        let mut src_entries = src.entries;
        let mut mounts = Vec::new();
        // A directory this run made is listed too (empty, but for what an
        // earlier delivery of this task made in it: a broker delivers at
        // least once; the directory is psync's user's, mode 0700, until
        // its finish, so nobody else put entries there).
        let mut dst = match &dst_dir {
            Some(d) => match self.walker.list(d) {
                Ok(mut l) => {
                    // A target entry that cannot be examined is left alone.
                    for (name, e) in l.failed {
                        src_entries.retain(|s| s.name != name);
                        self.fail(&rel.join(&name), true, Op::Stat, e);
                    }
                    // Mount roots first: not even a stale temporary's name
                    // makes psync remove one.
                    l.entries.retain(|e| {
                        let keep = !e.mount_root;
                        if !keep {
                            mounts.push(e.name.clone());
                        }
                        keep
                    });
                    self.drop_temporaries(d, rel, l.entries, &mut parts)
                }
                Err(e) => return self.fail(rel, true, Op::ReadDir, e),
            },
            _ => Vec::new(),
        };
        // Borrowed: cloning the options (their group list) for every
        // directory would cost a no-op run an allocation per directory.
        let mut plan_opts = std::borrow::Cow::Borrowed(&self.plan_opts);
        if !unread.is_empty() {
            // Never delete what the source could not be read to confirm:
            // neither the failed names nor, as rsync, anything else here.
            dst.retain(|e| !unread.contains(&e.name));
            if plan_opts.delete {
                plan_opts.to_mut().delete = false;
                let msg = "source entries could not be read: nothing deleted in this directory";
                self.warn(rel, false, Op::ReadDir, msg);
            }
        }
        self.leave_mount_roots(rel, &mounts, &mut src_entries, plan_opts.delete);
        if dst_dir.is_some() {
            self.itemize_dir_attrs(rel, src_entry, dst_entry);
        }
        let actions = self.planner.plan(&src_entries, &dst, &plan_opts);
        self.drop_unused_parts(dst_dir.as_ref(), rel, &parts, &actions);
        // Directories are counted at their finish; here, the other entries
        // that need nothing.
        let acted = actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Copy { .. }
                        | Action::Symlink { .. }
                        | Action::Special { .. }
                        | Action::Attrs { .. }
                        | Action::Compare { .. }
                        | Action::TooYoung { .. }
                )
            })
            .count();
        let non_dirs = src_entries.iter().filter(|e| !e.is_dir()).count();
        let unchanged = non_dirs.saturating_sub(acted);
        Stats::bump(&self.stats.unchanged, unchanged as u64);
        Stats::bump(&self.stats.done, unchanged as u64);
        if let Some(d) = dst_dir.as_ref().filter(|_| dst_entry.is_none()) {
            self.adopt_default_acl(rel, &src_dir, d);
        }
        if !self.dry_run {
            self.record_members(rel, at, &src_entries, &dst, &actions);
        }
        let fresh = dst_entry.is_none() && !dst_dir.as_ref().is_some_and(passes_on_acl);
        let touched = self.act(rel, &src_dir, (dst_dir.as_ref(), at), fresh, actions, cx);
        if let Some(d) = dst_dir.as_ref().filter(|_| touched) {
            // Deletions, new directories, symlinks and specials.
            self.sync_dir(rel, d);
        }
        self.defer(
            cx,
            self.finish_task(rel, src_entry, (dst_entry, at.or(made)), touched),
        );
    }

    /// The identity of the target directory whose status is `st`, once it
    /// is known to be the one the parent's task listed (`dst`) or made
    /// (`made`, taken at its `mkdirat`): a user who can rename in the
    /// parent may have put another directory there.
    fn check_dir(
        &self,
        rel: &RelPath,
        st: &rustix::fs::Stat,
        dst: Option<&Entry>,
        made: Option<(u64, u64)>,
    ) -> io::Result<(u64, u64)> {
        #[allow(clippy::unnecessary_cast)]
        let id = (st.st_dev as u64, st.st_ino as u64);
        if rel.is_root() {
            return Ok(id);
        }
        match made.or(dst.map(|e| (e.dev, e.ino))) {
            Some(want) if want != id => Err(replaced_dir()),
            Some(_) => Ok(id),
            // Every task below the root knows the identity of its directory.
            None => Err(io::Error::other(
                "the task does not say which directory it is for: nothing done in it",
            )),
        }
    }

    /// As root: an existing target directory that would be given to its
    /// source's owner although another user (neither that owner nor
    /// psync's) owns it, in a parent where the source's owner can rename
    /// entries (their own, or writable without the sticky bit). That is
    /// how a user steals a directory: rename someone's directory placed in
    /// theirs to a name of their own, and let the sync hand it over (and
    /// sync their tree into it, deletes included).
    fn foreign_dir(&self, rel: &RelPath, src: &Entry, dst: &Entry) -> bool {
        let o = &self.copy_opts;
        if rel.is_root() || !o.can_chown || !o.preserve.owner {
            return false;
        }
        if dst.uid == src.uid || dst.uid == euid() {
            return false;
        }
        let Some((parent, _)) = rel.split_last() else {
            return false;
        };
        self.open_dst(&parent)
            .and_then(|p| p.fstat())
            .is_ok_and(|st| {
                let sticky = st.st_mode & 0o1000 != 0;
                st.st_uid == src.uid || (!sticky && st.st_mode & 0o022 != 0)
            })
    }

    /// Target entries that are mount roots (another file system, or a file
    /// or directory bind-mounted there) are left out of the plan: writing
    /// an owner, mode or xattrs through one changes a file outside the
    /// target, and a replacement or deletion fails with EBUSY at best. One
    /// that the run would have touched (the source has its name, or
    /// `--delete` is on) is an error naming it, and its source entry is
    /// counted as failed, as rsync reports a mount point it cannot go into.
    /// An extraneous one without `--delete` is none of psync's business.
    fn leave_mount_roots(
        &self,
        rel: &RelPath,
        mounts: &[Name],
        src_entries: &mut Vec<Entry>,
        delete: bool,
    ) {
        for name in mounts {
            let len = src_entries.len();
            src_entries.retain(|s| s.name != *name);
            if delete || src_entries.len() != len {
                let path = rel.join(name);
                self.fail(&path, true, Op::Stat, crate::subtree::mount_point(&path));
            }
        }
    }

    fn finish_task(
        &self,
        rel: &RelPath,
        src: &Entry,
        (dst, at): (Option<&Entry>, Option<(u64, u64)>),
        touched: bool,
    ) -> Task {
        Task::FinishDir {
            rel: rel.clone(),
            src: src.clone(),
            dst: dst.cloned(),
            touched,
            at,
        }
    }

    /// `-x`: true for a source directory below the root on another file
    /// system (another device, or a mount of the same one). The device is
    /// the open directory's, not its listing's: the listing may have been
    /// made on another node, and a network file system's device number
    /// differs from node to node (`src_dev` is this engine's root's).
    fn other_source_fs(&self, rel: &RelPath, dir: &Dir) -> bool {
        #[allow(clippy::unnecessary_cast)] // as `Entry::from_stat`: widths differ between targets
        let other_dev = |st: rustix::fs::Stat| st.st_dev as u64 != self.src_dev;
        self.plan_opts.one_file_system
            && !rel.is_root()
            // Unknown counts as another file system: copied empty, nothing
            // deleted in it.
            && (dir
                .fstat()
                .map_or(true, other_dev)
                || dir.is_mount_root())
    }

    /// Itemizes the attribute changes of an existing target directory
    /// (applied at its finish); the root is never itemized.
    fn itemize_dir_attrs(&self, rel: &RelPath, src: &Entry, dst: Option<&Entry>) {
        if let Some(dst) = dst.filter(|_| !rel.is_root()) {
            let change = attr_change(src, dst, &self.plan_opts);
            if change.any() {
                self.itemize(rel.clone(), Some(change), src);
            }
        }
    }

    /// A source directory that cannot be read: reported, and its target
    /// still gets the source's attributes (as rsync does), so a copy of a
    /// mode-000 directory is mode 000 too.
    fn unreadable_dir(
        &self,
        rel: &RelPath,
        src: &Entry,
        dst: (Option<&Entry>, Option<(u64, u64)>),
        op: Op,
        err: io::Error,
        cx: &mut dyn TaskContext,
    ) {
        // As rsync says "IO error encountered -- skipping file deletion".
        let err = match self.plan_opts.delete {
            true => io::Error::new(err.kind(), format!("{err}; nothing deleted in it")),
            false => err,
        };
        let errno = err.raw_os_error();
        let e = Error::new(op, rel.under(&self.src_path), err);
        Stats::bump(&self.stats.failed, 1);
        self.emit(Event::Error {
            path: rel.clone(),
            op,
            side: crate::event::Side::Source,
            errno,
            message: e.to_string(),
        });
        self.defer(cx, self.finish_task(rel, src, dst, false));
    }

    /// Itemizes everything a recursive delete of `entry` removes, children
    /// before their directory, as rsync lists them (any depth, no
    /// recursion; nothing below a mount point, which is not removed).
    fn itemize_tree(&self, dir: &Dir, path: &RelPath, entry: &Entry, with_self: bool) {
        if entry.kind != Kind::Dir {
            if with_self {
                self.itemize(path.clone(), None, entry);
            }
            return;
        }
        let top = crate::subtree::Child::of(entry);
        let _ = crate::subtree::walk(
            dir,
            top,
            path,
            &mut |d| {
                Ok(d.list()?
                    .entries
                    .iter()
                    .map(crate::subtree::Child::of)
                    .collect())
            },
            &mut |_, p, c| {
                // A mount root is not removed (the removal stops there).
                if let Some(e) = c.entry.as_ref().filter(|e| !e.mount_root)
                    && (with_self || p != path)
                {
                    self.itemize(p.clone(), None, e);
                }
                Ok(())
            },
        );
    }

    fn count_scanned(&self, entries: &[Entry]) {
        let bytes: u64 = entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.size)
            .sum();
        Stats::bump(&self.stats.scanned, entries.len() as u64);
        Stats::bump(&self.stats.dirs, 1);
        Stats::bump(&self.stats.bytes_total, bytes);
    }

    /// Removes temporaries left by earlier (interrupted) runs and hides this
    /// run's own from the planner. Part files of large files are set aside
    /// in `parts`: whether one is resumed depends on the plan.
    fn drop_temporaries(
        &self,
        dir: &Dir,
        rel: &RelPath,
        mut entries: Vec<Entry>,
        parts: &mut Vec<Name>,
    ) -> Vec<Entry> {
        entries.retain(|e| match temp_run_id(&e.name) {
            None if crate::bigfile::part_name_key(&e.name).is_some() => {
                parts.push(e.name.clone());
                false
            }
            None => true,
            // This run's own (another engine's temporary, or the link area).
            Some(id) if id == self.run_id && e.uid == euid() => false,
            // This run's id on an entry of another user's: planted (the id
            // shows in the run's temporary names), never trusted.
            Some(id) if id == self.run_id => {
                self.remove_foreign(dir, rel, e, "carries this run's id but is not psync's");
                false
            }
            Some(_) if e.uid != euid() => {
                self.remove_foreign(dir, rel, e, "a temporary of another psync run");
                false
            }
            Some(_) => {
                self.remove_stale(dir, rel, &e.name);
                false
            }
        });
        entries
    }

    /// Removes the part files (and journals) no planned copy will resume:
    /// those of changed or removed sources, and those of files that are
    /// already up to date (a kill between rename and journal removal).
    fn drop_unused_parts(
        &self,
        dir: Option<&Dir>,
        rel: &RelPath,
        parts: &[Name],
        actions: &[Action],
    ) {
        let Some(dir) = dir else { return };
        let wanted: Vec<u64> = actions
            .iter()
            .filter_map(|a| match a {
                // A compared file may turn out to differ: its copy resumes.
                Action::Copy { src, .. } | Action::Compare { src, .. } if self.is_big(src) => {
                    Some(crate::bigfile::part_key(src))
                }
                _ => None,
            })
            .collect();
        for name in parts {
            if crate::bigfile::part_name_key(name).is_some_and(|k| !wanted.contains(&k)) {
                self.remove_stale(dir, rel, name);
            }
        }
    }

    /// Removes an entry named like psync's temporaries that another user
    /// owns, and says so (a user may plant such names to steer the run;
    /// an interrupted run's temporary may also have been given its
    /// source's owner already).
    pub(crate) fn remove_foreign(&self, dir: &Dir, rel: &RelPath, e: &Entry, what: &str) {
        if self.dry_run {
            return;
        }
        let path = rel.join(&e.name);
        if e.kind == Kind::Dir {
            // Never removed: a user who can rename in this directory may
            // have given someone else's directory this name.
            let why = format!(
                "{what}, a directory owned by uid {} and not by psync's user: left alone, never used",
                e.uid
            );
            return self.warn(&path, true, Op::Remove, &why);
        }
        match dir.unlink(e.name.as_bytes()) {
            Ok(()) => {
                Stats::bump(&self.stats.stale_removed, 1);
                let why = format!(
                    "{what}, owned by uid {} and not by psync's user: removed, never used",
                    e.uid
                );
                self.warn(&path, true, Op::Remove, &why);
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => self.fail(&path, true, Op::Remove, err),
        }
    }

    pub(crate) fn remove_stale(&self, dir: &Dir, rel: &RelPath, name: &Name) {
        if self.dry_run {
            return;
        }
        // The only directories psync names like a temporary are link
        // areas, at the root, of its own user and mode 0700: any other
        // directory of such a name (one a user renamed there) is left.
        if let Ok(st) = dir.stat(name.as_bytes())
            && st.st_mode & libc::S_IFMT == libc::S_IFDIR
        {
            // Checked and emptied through a handle, then rmdir by name
            // (which takes nothing with it if the name was swapped).
            let area = rel.is_root() && name.as_bytes().ends_with(b".links");
            let emptied = dir.open_dir(name.as_bytes()).ok().filter(|d| {
                area && d
                    .fstat()
                    .is_ok_and(|st| crate::links::not_private(&st, libc::S_IFDIR, 0o700).is_none())
            });
            let Some(d) = emptied else {
                let why = "a directory named like psync's temporaries that is not a link area of psync's: left alone";
                return self.warn(&rel.join(name), true, Op::Remove, why);
            };
            let cleared = d
                .names()
                .and_then(|names| {
                    names
                        .iter()
                        .try_for_each(|n| d.remove_all(n.as_bytes()).map(drop))
                })
                .and_then(|()| dir.rmdir(name.as_bytes()));
            return match cleared {
                Ok(()) => Stats::bump(&self.stats.stale_removed, 1),
                Err(err) => self.fail(&rel.join(name), true, Op::Remove, err),
            };
        }
        // Another user's file under a part's or journal's name (a shared
        // directory) is removed too, and said so, as when a copy meets one.
        // Never recursively: a directory swapped in since stays.
        let planted = crate::bigfile::planted(dir, name);
        match dir.unlink_file(name.as_bytes()) {
            Ok(_) => {
                Stats::bump(&self.stats.stale_removed, 1);
                if let Some(what) = planted {
                    self.warn(
                        &rel.join(name),
                        true,
                        Op::Remove,
                        &format!("{what}: removed"),
                    );
                }
            }
            Err(err) => self.fail(&rel.join(name), true, Op::Remove, err),
        }
    }

    /// Without root, a target directory of ours whose mode lacks owner
    /// read, write or search (an earlier copy of a read-only source
    /// directory, or one a user closed) is opened up for the run before it
    /// is opened and listed, as rsync does; its finish restores the mode.
    /// Changed through its parent (an `O_PATH` fd, `chmod` via
    /// `/proc/self/fd`): it cannot be opened for reading before.
    fn ensure_open(&self, rel: &RelPath, dst: &Entry) {
        if !self.opens_up(Some(dst)) {
            return;
        }
        // The root was opened up before it was opened, when the run began
        // (`Dir::open_root_adding`): it cannot be opened for reading before.
        let Some((parent, name)) = rel.split_last() else {
            return;
        };
        let mode = dst.mode | 0o700;
        // Through a handle on the directory listed, not by name: a user
        // who can rename in the parent may have put another one there.
        let opened = self
            .open_dst(&parent)
            .and_then(|p| p.handle(name))
            .and_then(|h| {
                if h.is(dst) {
                    self.copier.set_mode(h.node(), mode).map_err(|e| e.source)
                } else {
                    Err(replaced_dir())
                }
            });
        if let Err(e) = opened {
            self.fail(rel, true, Op::Chmod, e);
        }
    }

    /// True when [`Engine::ensure_open`] changes this directory's mode:
    /// without root, in a real run, for a directory the process owns that
    /// lacks some owner permission.
    fn opens_up(&self, dst: Option<&Entry>) -> bool {
        dst.is_some_and(|d| {
            !self.dry_run
                && !self.copy_opts.can_chown
                && d.mode & 0o700 != 0o700
                && d.uid == rustix::process::geteuid().as_raw()
        })
    }

    /// Carries out the actions of one directory; returns whether any entry
    /// of the target directory was added, removed or replaced.
    fn act(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        (dst, at): (Option<&Dir>, Option<(u64, u64)>),
        fresh: bool,
        actions: Vec<Action>,
        cx: &mut dyn TaskContext,
    ) -> bool {
        let mut touched = false;
        let mut batch = Batch {
            actions: Vec::new(),
            bytes: 0,
        };
        // Copies for hard-link groups, recorded together for the last phase.
        let mut linked = Vec::new();
        // Names whose old target could not be cleared: nothing is made there.
        let mut blocked: Vec<Name> = Vec::new();
        // The source entries that replace a target directory (type changes).
        let replacing: Vec<Entry> = if actions
            .iter()
            .any(|a| matches!(a, Action::Delete { dst, replaced: true } if dst.kind == Kind::Dir))
        {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::Copy { src, .. }
                    | Action::Symlink { src, .. }
                    | Action::Special { src, .. } => Some(src.clone()),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        for action in actions {
            // Stopped (interrupt, or a target that cannot be written):
            // nothing more is changed here.
            if self.quit.load(Ordering::Relaxed) {
                break;
            }
            if !blocked.is_empty() && blocked.contains(action.name()) {
                continue;
            }
            match action {
                // A directory another user owns, at a name the new entry's
                // owner can rename in: it may be someone's directory put
                // there; without --delete it is not removed (see
                // `foreign_dir`).
                Action::Delete {
                    dst: ref old,
                    replaced: true,
                } if old.kind == Kind::Dir
                    && !self.plan_opts.delete
                    && replacing
                        .iter()
                        .find(|s| s.name == old.name)
                        .is_some_and(|s| self.foreign_dir(&rel.join(&old.name), s, old)) =>
                {
                    let why = format!(
                        "the target directory in the way belongs to uid {}, and the new entry's owner can rename entries here: it may be another user's directory put at this name; not removed (remove or move it to sync this name)",
                        old.uid
                    );
                    self.fail(
                        &rel.join(&old.name),
                        true,
                        Op::Remove,
                        io::Error::other(why),
                    );
                    blocked.push(old.name.clone());
                }
                Action::Delete {
                    dst: old,
                    replaced: true,
                } if old.kind == Kind::Dir && !self.plan_opts.force && !self.plan_opts.delete => {
                    touched = true;
                    if !self.clear_empty_dir(rel, dst, &old) {
                        blocked.push(old.name);
                    }
                }
                // What cannot be cleared blocks its name: nothing is made there.
                Action::Delete {
                    dst: old,
                    replaced: true,
                } => {
                    touched = true;
                    if !self.delete_entry(rel, dst, &old, true) {
                        blocked.push(old.name);
                    }
                }
                Action::Descend { src, dst } => {
                    cx.spawn(Task::Dir {
                        rel: rel.join(&src.name),
                        src,
                        at: Some((dst.dev, dst.ino)),
                        dst: Some(dst),
                    });
                }
                Action::Copy {
                    ref src, change, ..
                } if !self.dry_run && is_linked(src, &self.plan_opts) => {
                    // A path of a hard-link group: registered or copied in
                    // the run's last phase, where the group's paths are
                    // known (see links.rs).
                    if change.transfer {
                        touched = true;
                        Stats::bump(&self.stats.bytes_to_copy, src.size);
                    }
                    linked.push(action);
                }
                // A symlink or special with several names: made once and
                // linked in the last phase, like a file's data.
                Action::Symlink {
                    ref src, change, ..
                }
                | Action::Special {
                    ref src, change, ..
                } if !self.dry_run && is_linked(src, &self.plan_opts) => {
                    touched |= change.new || change.checksum;
                    linked.push(action);
                }
                // A hard-linked name whose attributes are due: fixed in
                // the last phase, where the group's names are known, and
                // so whether its inode has links the tree does not explain.
                Action::Attrs { ref src, .. }
                    if !self.dry_run && is_linked(src, &self.plan_opts) =>
                {
                    linked.push(action);
                }
                Action::Copy { src, dst, change }
                    if !self.dry_run && self.is_big(&src) && !is_linked(&src, &self.plan_opts) =>
                {
                    touched = true;
                    Stats::bump(&self.stats.bytes_to_copy, src.size);
                    cx.spawn(Task::BigFile {
                        rel: rel.clone(),
                        src,
                        dst,
                        change,
                        attempt: 0,
                        at,
                    });
                }
                // Compared chunk by chunk by any worker (a dry run has
                // nowhere to record a difference: compared whole, below).
                Action::Compare { src, dst, change }
                    if !self.dry_run && self.is_big(&src) && !is_linked(&src, &self.plan_opts) =>
                {
                    touched = true;
                    cx.spawn(Task::CompareBig {
                        rel: rel.clone(),
                        src,
                        dst,
                        change,
                        at,
                    });
                }
                Action::Copy { ref src, .. } | Action::Compare { ref src, .. } if !self.dry_run => {
                    touched = true;
                    if matches!(action, Action::Copy { .. }) {
                        Stats::bump(&self.stats.bytes_to_copy, src.size);
                    }
                    batch.bytes += src.size;
                    batch.actions.push(action);
                    if batch.actions.len() >= self.batch_files || batch.bytes >= self.batch_bytes {
                        let actions = std::mem::take(&mut batch.actions);
                        batch.bytes = 0;
                        cx.spawn(Task::Files {
                            rel: rel.clone(),
                            actions,
                            fresh,
                            at,
                        });
                    }
                }
                other => touched |= self.act_inline(rel, src_dir, dst, other, cx),
            }
        }
        if !batch.actions.is_empty() {
            cx.spawn(Task::Files {
                rel: rel.clone(),
                actions: batch.actions,
                fresh,
                at,
            });
        }
        if !linked.is_empty()
            && !self.quit.load(Ordering::Relaxed)
            && let Err(e) = self.defer_linked(rel, at, &linked)
        {
            for a in &linked {
                if let Action::Copy { src, .. } | Action::Attrs { src, .. } = a {
                    self.fail(&rel.join(&src.name), true, Op::Link, clone_err(&e));
                }
            }
        }
        touched
    }

    /// Removes the target entry `old` (recursively), itemized as rsync
    /// does; false, reported, when it (or part of it) stays.
    fn delete_entry(&self, rel: &RelPath, dir: Option<&Dir>, old: &Entry, replaced: bool) -> bool {
        let path = rel.join(&old.name);
        // rsync does not itemize the entry a type change replaces, only
        // what a replaced directory held.
        match dir {
            Some(d) if self.itemize => self.itemize_tree(d, &path, old, !replaced),
            _ if !replaced => self.itemize(path.clone(), None, old),
            _ => {}
        }
        let removed = match dir {
            Some(d) if !self.dry_run => match self.copier.remove(d, old) {
                Ok(n) => n,
                Err(e) => {
                    self.fail(&path, true, e.op, e.source);
                    return false;
                }
            },
            _ => 1,
        };
        Stats::bump(&self.stats.deleted, removed);
        true
    }

    /// A type change without `--delete`/`--force`: removes the target
    /// directory `old` only if it is empty (rsync refuses to delete a
    /// non-empty one). Returns false, reporting why, when it stays.
    fn clear_empty_dir(&self, rel: &RelPath, dir: Option<&Dir>, old: &Entry) -> bool {
        let Some(d) = dir else { return true };
        let result = if self.dry_run {
            d.open_dir(old.name.as_bytes())
                .and_then(|sub| sub.names())
                .and_then(|names| match names.is_empty() {
                    true => Ok(()),
                    false => Err(io::Error::from(io::ErrorKind::DirectoryNotEmpty)),
                })
        } else {
            d.rmdir(old.name.as_bytes())
        };
        match result {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e)
                if e.kind() == io::ErrorKind::DirectoryNotEmpty
                    || e.raw_os_error() == Some(libc::EEXIST) =>
            {
                let msg = "cannot delete non-empty directory in the way of the source entry \
                           (--delete or --force replaces it)";
                let err = io::Error::new(io::ErrorKind::DirectoryNotEmpty, msg);
                self.fail(&rel.join(&old.name), true, Op::Remove, err);
                false
            }
            Err(e) => {
                self.fail(&rel.join(&old.name), true, Op::Remove, e);
                false
            }
        }
    }

    /// The actions a directory task does itself. Returns whether the
    /// directory's entries changed.
    fn act_inline(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        dir: Option<&Dir>,
        action: Action,
        cx: &mut dyn TaskContext,
    ) -> bool {
        match action {
            Action::Delete { dst, replaced } => {
                self.delete_entry(rel, dir, &dst, replaced);
                true
            }
            Action::Mkdir { src } => {
                let path = rel.join(&src.name);
                let mut made = None;
                if let Some(d) = dir.filter(|_| !self.dry_run) {
                    let from = Node::At(src_dir, &src.name);
                    if let Err(e) = self.copier.make_dir(d, &src.name, &src, from) {
                        self.fail(&path, true, e.op, e.source);
                        return true;
                    }
                    // Its identity, for its own task (and every later one)
                    // to find this directory and no other at its path:
                    // taken through a handle on what stands at the name
                    // now, which must be the directory just made (psync's
                    // user's, 0700, empty): another one a user swapped in
                    // meanwhile (theirs, someone's, or another of the run's
                    // that already holds data) is refused.
                    match fresh_dir_id(d, &src.name) {
                        Ok(id) => made = Some(id),
                        Err(e) => {
                            self.fail(&path, true, Op::Mkdir, e);
                            return true;
                        }
                    }
                }
                self.itemize(path.clone(), Some(Change::new_entry(Kind::Dir)), &src);
                Stats::bump(&self.stats.created, 1);
                cx.spawn(Task::Dir {
                    rel: path,
                    src,
                    dst: None,
                    at: made,
                });
                true
            }
            Action::Copy { src, dst, change } => {
                // Dry run: report what would be copied.
                Stats::bump(&self.stats.bytes_to_copy, src.size);
                self.count_change(dst.is_some() && !change.new);
                self.itemize(rel.join(&src.name), Some(change), &src);
                true
            }
            Action::Symlink { src, dst, change } | Action::Special { src, dst, change } => {
                let old = dst.filter(|_| !change.new).map(|d| d.mode);
                self.replace_node(rel, src_dir, dir, &src, old, change);
                true
            }
            Action::Attrs { src, change, dst } => {
                self.fix_attrs(rel, src_dir, dir, &src, &dst, change, (1, Shared::Replace))
            }
            Action::TooYoung { src } => {
                Stats::bump(&self.stats.skipped_young, 1);
                Stats::bump(&self.stats.done, 1);
                self.emit(Event::Skipped {
                    path: rel.join(&src.name),
                    reason: "changed too recently (--min-age)".into(),
                });
                false
            }
            Action::Compare { src, dst, change } => {
                // Dry run: compare now (reads only).
                self.compare_file(rel, src_dir, (dir, None), &src, &dst, change);
                false
            }
            Action::Descend { .. } => false,
        }
    }

    /// Applies the attributes of `src` to its existing target `dst`
    /// (xattrs/ACLs too when its status is newer) and itemizes what changed.
    /// The target is pinned by a handle first, and changed in place only
    /// when it is still the inode listed and has no more than `links`
    /// names (the names the run accounts for): an inode that another name
    /// shares, outside the tree or planted by a user, is never chowned,
    /// chmodded or given xattrs. With `Shared::Replace` such a target is
    /// replaced by a copy of the source instead; with `Shared::Refuse` it
    /// is left alone, reported. True when the directory's entries changed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fix_attrs(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        dir: Option<&Dir>,
        src: &Entry,
        dst: &Entry,
        mut change: Change,
        (links, shared): (u64, Shared),
    ) -> bool {
        // Built only when reported: most entries of a re-sync need nothing.
        let path = || rel.join(&src.name);
        let only_xattrs = !(change.perms || change.owner || change.group || change.time);
        if let Some(d) = dir.filter(|_| !self.dry_run) {
            // Only xattrs/ACLs to compare (every entry of a no-op run with
            // `-X`/`-A`): compared by name first, read-only, so an entry
            // that needs nothing costs no handle.
            if only_xattrs && !self.xattrs_differ(src_dir, d, src) {
                Stats::bump(&self.stats.done, 1);
                Stats::bump(&self.stats.unchanged, 1);
                return false;
            }
            let h = match d.handle(src.name.as_bytes()) {
                Ok(h) => h,
                Err(e) => {
                    self.fail(&path(), true, Op::Stat, e);
                    return false;
                }
            };
            if !h.is(dst) {
                Stats::bump(&self.stats.done, 1);
                let why = "replaced in the target during the run; its attributes were not set";
                self.warn(&path(), true, Op::Stat, why);
                return false;
            }
            #[allow(clippy::unnecessary_cast)]
            let has = h.stat.st_nlink as u64;
            if has > links {
                return self.shared_target(
                    rel,
                    src_dir,
                    d,
                    (src, dst),
                    change,
                    (has, links),
                    shared,
                );
            }
            // Data another user owns is not given to its source's owner in
            // place (a user may have planted a file that passes the quick
            // check, setuid bits and all): it is copied from the source.
            if shared == Shared::Replace && self.foreign_data(src, &h.stat) {
                match src.kind {
                    Kind::File => {
                        let how = (Some(dst.mode), false, change);
                        self.copy_file(rel, src_dir, d, src, how, None);
                    }
                    _ => self.replace_node(rel, src_dir, Some(d), src, Some(dst.mode), change),
                }
                return true;
            }
            let from = self
                .xattr_source(Some(dst), src)
                .then_some(Node::At(src_dir, &src.name));
            // Only xattrs/ACLs to check: leave owner, mode and times alone.
            let (attrs, opts) = self.attrs_for(src, Some(dst.mode));
            let applied = match from {
                Some(from) if only_xattrs => self.sync_xattrs_only(from, h.node()),
                _ => self.copier.set_attrs(h.node(), &attrs, from, &opts),
            };
            match applied {
                Ok(report) => {
                    change.xattr |= report.xattrs_changed;
                    change.acl |= report.acl_changed;
                    if !report.dropped.is_empty() {
                        self.report_dropped(&path(), &report);
                    }
                }
                Err(e) => {
                    self.fail(&path(), true, e.op, e.source);
                    return false;
                }
            }
        }
        Stats::bump(&self.stats.done, 1);
        if !change.any() {
            Stats::bump(&self.stats.unchanged, 1);
            return false;
        }
        self.itemize(path(), Some(change), src);
        Stats::bump(&self.stats.attrs_updated, 1);
        false
    }

    /// Whether the xattrs/ACLs of `src`'s target in `d` may need a change:
    /// false only when they are not to be compared at all, or compare
    /// equal (read by name, without writing; an error says "maybe").
    pub(crate) fn xattrs_differ(&self, src_dir: &Dir, d: &Dir, src: &Entry) -> bool {
        if !self.xattr_source_new() {
            return false;
        }
        let how = crate::xattr::XattrSync {
            dst_empty: false,
            check_only: true,
            ..crate::xattr::XattrSync::of(&self.copy_opts)
        };
        let (from, to) = (Node::At(src_dir, &src.name), Node::At(d, &src.name));
        self.copier
            .sync_xattrs(from, to, how)
            .map_or(true, |r| r.xattrs_changed || r.acl_changed)
    }

    /// A target whose attributes are due but whose inode has `has` names
    /// where the run accounts for `links`: replaced by a new copy (the
    /// other names keep the old inode, unchanged), or left alone.
    #[allow(clippy::too_many_arguments)]
    fn shared_target(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        d: &Dir,
        (src, dst): (&Entry, &Entry),
        change: Change,
        (has, links): (u64, u64),
        shared: Shared,
    ) -> bool {
        let path = rel.join(&src.name);
        match shared {
            Shared::Refuse => {
                let why = format!(
                    "its inode has {has} links where the run accounts for {links} (a name outside the synced tree shares it): its attributes were not set"
                );
                self.fail(&path, true, Op::Link, io::Error::other(why));
                false
            }
            Shared::Replace => {
                let why = format!(
                    "its inode has {has} links where the source accounts for {links}: replaced by a copy instead of changed in place (its other names keep the old inode)"
                );
                self.warn(&path, true, Op::Link, &why);
                match src.kind {
                    Kind::File => {
                        self.copy_file(rel, src_dir, d, src, (Some(dst.mode), false, change), None);
                    }
                    _ => self.replace_node(rel, src_dir, Some(d), src, Some(dst.mode), change),
                }
                true
            }
        }
    }

    /// `--checksum`: compares the contents of two files of equal size
    /// (both read at once), then copies or only fixes attributes.
    fn compare_file(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        (dir, at): (Option<&Dir>, Option<(u64, u64)>),
        src: &Entry,
        dst: &Entry,
        change: Change,
    ) {
        let path = rel.join(&src.name);
        let same = match dir {
            Some(d) => match self.contents_equal(src_dir, d, src, (0, src.size)) {
                Ok(same) => same,
                Err((on_target, e)) => return self.fail(&path, on_target, Op::Verify, e),
            },
            None => false,
        };
        if same && is_linked(src, &self.plan_opts) && !self.dry_run {
            // Its attributes are fixed in the last phase, where the
            // group's names (and so its inode's links) are known.
            let fix = Action::Attrs {
                src: src.clone(),
                dst: dst.clone(),
                change,
            };
            if let Err(e) = self.defer_linked(rel, at, &[fix]) {
                self.fail(&path, true, Op::Link, e);
            }
            return;
        }
        if same {
            self.fix_attrs(rel, src_dir, dir, src, dst, change, (1, Shared::Replace));
            return;
        }
        let change = Change {
            transfer: true,
            checksum: true,
            ..change
        };
        match dir {
            Some(d) if !self.dry_run => {
                if is_linked(src, &self.plan_opts) {
                    self.copy_linked(rel, src_dir, d, src, Some(dst), change);
                } else {
                    self.copy_file(rel, src_dir, d, src, (Some(dst.mode), false, change), None);
                }
            }
            _ => {
                self.itemize(path, Some(change), src);
                self.count_change(true);
            }
        }
    }

    pub(crate) fn count_change(&self, existed: bool) {
        Stats::bump(
            if existed {
                &self.stats.updated
            } else {
                &self.stats.created
            },
            1,
        );
        Stats::bump(&self.stats.done, 1);
    }

    /// Creates a symlink or special under a temporary name, gives it its
    /// attributes, and renames it over whatever non-directory stood there.
    pub(crate) fn replace_node(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        dir: Option<&Dir>,
        src: &Entry,
        old: Option<u32>,
        change: Change,
    ) {
        let path = rel.join(&src.name);
        if let Some(d) = dir.filter(|_| !self.dry_run) {
            let tmp = self.temp_name();
            let (attrs, opts) = self.attrs_for(src, old);
            let made = if src.kind == Kind::Symlink {
                self.copier.make_symlink(d, &tmp, src)
            } else {
                self.copier.make_special(d, &tmp, src)
            };
            let from = self
                .xattr_source(None, src)
                .then_some(Node::At(src_dir, &src.name));
            let done = made
                .and_then(|()| {
                    self.copier
                        .set_attrs(Node::At(d, &tmp), &attrs, from, &opts)
                })
                .and_then(|report| {
                    self.report_dropped(&path, &report);
                    d.rename(tmp.as_bytes(), src.name.as_bytes())
                        .map_err(|e| crate::copy::StepError::new(Op::Rename, e))
                });
            if let Err(e) = done {
                let _ = d.unlink(tmp.as_bytes());
                return self.fail(&path, true, e.op, e.source);
            }
        }
        self.itemize(path, Some(change), src);
        self.count_change(old.is_some());
    }

    /// Applies a directory's attributes after everything inside it is done.
    fn finish_dir(
        &self,
        rel: &RelPath,
        src: &Entry,
        (dst, at): (Option<&Entry>, Option<(u64, u64)>),
        touched: bool,
        cx: &mut dyn TaskContext,
    ) {
        if rel.is_root() {
            // The last phases: deferred hard-link copies, then the link
            // area's removal, each followed by this again.
            if self.spawn_deferred_links(cx) || self.spawn_link_area_removal(cx) {
                return self.defer(
                    cx,
                    Task::FinishDir {
                        rel: rel.clone(),
                        src: src.clone(),
                        dst: dst.cloned(),
                        touched,
                        at,
                    },
                );
            }
            self.drop_link_area();
        }
        let change = dst.map(|d| attr_change(src, d, &self.plan_opts));
        let xattrs = self.xattr_source(dst, src);
        let attrs = touched
            || dst.is_none()
            || change.is_some_and(|c| c.any())
            || self.opens_up(dst)
            // The root was touched by the run's probe or link area.
            || (rel.is_root() && (self.root_touched || self.links.get().is_some()));
        if (attrs || xattrs) && !self.dry_run {
            match self.apply_dir_attrs(rel, src, (dst, at), attrs, xattrs) {
                Ok(report) => self.report_dropped(rel, &report),
                Err((op, e)) => return self.fail(rel, true, op, e),
            }
            if self.flush.per_task()
                && let Ok(d) = self.open_dst(rel)
            {
                self.sync_dir(rel, &d);
            }
        }
        if dst.is_some() {
            let counter = if change.is_some_and(|c| c.any()) {
                &self.stats.attrs_updated
            } else {
                &self.stats.unchanged
            };
            Stats::bump(counter, u64::from(!rel.is_root()));
        }
        Stats::bump(&self.stats.done, u64::from(!rel.is_root()));
    }

    /// Sets a finished directory's attributes (`attrs`: owner, mode, times)
    /// and/or syncs its xattrs and ACLs from the source directory; an
    /// xattr check alone does not rewrite the others.
    fn apply_dir_attrs(
        &self,
        rel: &RelPath,
        src: &Entry,
        (dst, at): (Option<&Entry>, Option<(u64, u64)>),
        attrs: bool,
        xattrs: bool,
    ) -> Result<crate::xattr::XattrReport, (Op, io::Error)> {
        let d = self.open_dst(rel).map_err(|e| (Op::OpenDir, e))?;
        // One status for both: the identity check, and whether anything
        // differs now.
        let st = d.fstat().map_err(|e| (Op::OpenDir, e))?;
        self.check_dir(rel, &st, dst, at)
            .map_err(|e| (Op::OpenDir, e))?;
        // A directory whose entries may have changed (a compared file) but
        // whose owner, mode and times are right as it is now is left
        // alone: setting them again would move its ctime for nothing.
        let unchanged = || {
            let now = Entry::from_stat(src.name.clone(), &st);
            !attr_change(src, &now, &self.plan_opts).any()
        };
        let attrs = attrs && !(dst.is_some() && unchanged());
        if !attrs && !xattrs {
            return Ok(crate::xattr::XattrReport::default());
        }
        // The source directory is opened only to read its xattrs.
        let src_dir = if xattrs {
            self.src_root.open_beneath(rel).ok()
        } else {
            None
        };
        let from = src_dir.as_ref().map(|s| Node::Fd(s.fd()));
        let old = match dst {
            Some(d) => Some(d.mode),
            None if !self.copy_opts.preserve.perms => Some(
                self.new_dir_mode(rel, &d, src)
                    .map_err(|e| (Op::Chmod, e))?,
            ),
            None => None,
        };
        let (entry, opts) = self.attrs_for(src, old);
        match (attrs, from) {
            (false, Some(from)) => self.sync_xattrs_only(from, Node::Fd(d.fd())),
            (_, from) => self.copier.set_attrs(Node::Fd(d.fd()), &entry, from, &opts),
        }
        .map_err(|e| (e.op, e.source))
    }

    /// Syncs a target's xattrs and ACLs from `from` and nothing else, for
    /// an entry whose owner, mode and times are already right (rewriting
    /// those would move the target's ctime for nothing).
    fn sync_xattrs_only(
        &self,
        from: Node<'_>,
        target: Node<'_>,
    ) -> Result<crate::xattr::XattrReport, crate::copy::StepError> {
        let how = crate::xattr::XattrSync {
            dst_empty: false,
            ..crate::xattr::XattrSync::of(&self.copy_opts)
        };
        self.copier
            .sync_xattrs(from, target, how)
            .map_err(|e| crate::copy::StepError::new(Op::Xattr, e))
    }

    /// True when the xattrs/ACLs of `src` are to be synced onto its target:
    /// always for a new target, and for an existing one when the source's
    /// status changed after the target's (see `plan::xattrs_may_differ`).
    /// True when xattrs/ACLs are synced onto new targets.
    pub(crate) fn xattr_source_new(&self) -> bool {
        self.copy_opts.xattrs.on() || self.copy_opts.acls.on()
    }

    pub(crate) fn xattr_source(&self, dst: Option<&Entry>, src: &Entry) -> bool {
        let on = self.copy_opts.xattrs.on() || self.copy_opts.acls.on();
        on && dst.is_none_or(|d| {
            self.plan_opts.xattrs_always
                || crate::plan::source_status_newer(src, d, &self.plan_opts)
        })
    }

    /// Attributes the target refused: warnings, or errors when the user
    /// asked for that kind of attribute explicitly.
    pub(crate) fn report_dropped(&self, path: &RelPath, report: &crate::xattr::XattrReport) {
        for (name, err) in &report.dropped {
            if self.stop_if_unwritable(path, Op::Xattr, err) {
                return;
            }
            let acl = crate::xattr::is_acl(name);
            let mode = if acl {
                self.copy_opts.acls
            } else {
                self.copy_opts.xattrs
            };
            let what = format!(
                "cannot set {} {}: {err}",
                if acl { "ACL" } else { "xattr" },
                crate::entry::escape(name)
            );
            if mode == crate::copy::AttrMode::Required {
                self.fail(path, true, Op::Xattr, io::Error::new(err.kind(), what));
            } else {
                self.warn(path, true, Op::Xattr, &what);
            }
        }
    }

    /// Gives a directory this run created the source's default ACL (or
    /// none) before anything is created in it, as rsync does: what its new
    /// entries inherit (ACL entries, the mode mask) then comes from the
    /// source, not from whatever the target's parents pass on.
    fn adopt_default_acl(&self, rel: &RelPath, src: &Dir, dst: &Dir) {
        if !self.copy_opts.acls.on() {
            return;
        }
        let name = crate::xattr::ACL_NAMES[1];
        let (from, to) = (Node::Fd(src.fd()), Node::Fd(dst.fd()));
        let done = match from.get(name) {
            Ok(Some(acl)) => to.set(name, &acl),
            Ok(None) => to.remove(name),
            Err(e) => Err(e),
        };
        match done {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(e) if self.stop_if_unwritable(rel, Op::Xattr, &e) => {}
            Err(e) => self.warn(rel, true, Op::Xattr, &format!("default ACL: {e}")),
            Ok(()) => {}
        }
    }

    /// Without `perms`, the mode of a directory this run created, as
    /// rsync gives it: the source's permission bits less what its parent
    /// lets new entries keep (default ACL, or umask), plus a setgid bit it
    /// inherited from a setgid parent ("make sure it stays on").
    fn new_dir_mode(&self, rel: &RelPath, dir: &Dir, src: &Entry) -> io::Result<u32> {
        let allowed = match rel.split_last() {
            Some((parent, _)) => {
                let parent = self.open_dst(&parent)?;
                crate::xattr::new_entry_perms(Node::Fd(parent.fd()))?
            }
            None => 0o777 & !crate::fs::umask(),
        };
        let setgid = dir.fstat()?.st_mode & 0o2000;
        Ok(src.mode & 0o777 & allowed | setgid)
    }

    /// The entry whose attributes a target gets, and the options to apply
    /// them with: the source's. Without `perms` (rsync's `--no-perms`,
    /// its `dest_mode`), an existing target keeps its own mode (`old`), and
    /// a new one the mode its creation gave it (see
    /// [`CopyOptions::created`]).
    pub(crate) fn attrs_for<'a>(
        &self,
        src: &'a Entry,
        old: Option<u32>,
    ) -> (std::borrow::Cow<'a, Entry>, CopyOptions) {
        let mut opts = self.copy_opts;
        if opts.preserve.perms {
            return (std::borrow::Cow::Borrowed(src), opts);
        }
        match old {
            Some(mode) => {
                opts.preserve.perms = true;
                let mut kept = src.clone();
                kept.mode = mode & 0o7777;
                (std::borrow::Cow::Owned(kept), opts)
            }
            None => {
                opts.created = true;
                (std::borrow::Cow::Borrowed(src), opts)
            }
        }
    }

    /// Without `perms`, the mode of a new file that was made under a
    /// temporary name (mode 0600) rather than unnamed with the source's
    /// mode: the source's less what `dir` lets new entries keep, as
    /// rsync's `dest_mode` gives it. `None` with `perms`.
    pub(crate) fn new_file_mode(&self, dir: &Dir, src: &Entry) -> Option<u32> {
        if self.copy_opts.preserve.perms {
            return None;
        }
        let allowed = crate::xattr::new_entry_perms(Node::Fd(dir.fd()))
            .unwrap_or(0o777 & !crate::fs::umask());
        Some(src.mode & 0o777 & allowed)
    }

    // ----- file tasks ------------------------------------------------------

    fn run_files(&self, rel: &RelPath, actions: Vec<Action>, fresh: bool, at: Option<(u64, u64)>) {
        let dirs = self
            .src_root
            .open_beneath(rel)
            .map_err(|e| (false, e))
            .and_then(|s| {
                let d = self.open_dst_at(rel, at);
                d.map(|d| (s, d)).map_err(|e| (true, e))
            });
        let (src_dir, dst_dir) = match dirs {
            Ok(p) => p,
            Err((on_target, e)) => {
                for a in &actions {
                    if let Action::Copy { src, .. } | Action::Compare { src, .. } = a {
                        self.fail(&rel.join(&src.name), on_target, Op::OpenDir, clone_err(&e));
                    }
                }
                return;
            }
        };
        // Batched flushes: copies wait here for one `syncfs` before
        // their names are published.
        let mut staged = self.flush.stages().then(Vec::new);
        for action in actions {
            if self.quit.load(Ordering::Relaxed) {
                return self.discard_staged(&dst_dir, staged.unwrap_or_default());
            }
            match action {
                // Hard-linked paths never come here: `act` defers them.
                Action::Copy { src, dst, change } => {
                    let old = dst.filter(|_| !change.new).map(|d| d.mode);
                    let how = (old, fresh, change);
                    self.copy_file(rel, &src_dir, &dst_dir, &src, how, staged.as_mut());
                }
                Action::Compare { src, dst, change } => {
                    self.compare_file(rel, &src_dir, (Some(&dst_dir), at), &src, &dst, change);
                }
                _ => {}
            }
            if let Some(s) = staged.as_mut().filter(|s| s.len() >= MAX_STAGED) {
                self.publish_staged(&dst_dir, s);
            }
        }
        if let Some(s) = staged.as_mut() {
            self.publish_staged(&dst_dir, s);
        }
        // The names linked and renamed into place.
        self.sync_dir(rel, &dst_dir);
    }

    /// Copies one regular file to a temporary and renames it into place,
    /// retrying when the source changes under the copy. `how` is the mode
    /// of the target it replaces, whether the directory is new (see
    /// `Task::Files`) and what changed. With `batch`, the finished copy
    /// is staged there for the batch's flush instead of published.
    pub(crate) fn copy_file(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        dst_dir: &Dir,
        listed: &Entry,
        (old, fresh_dir, change): (Option<u32>, bool, Change),
        batch: Option<&mut Vec<Staged>>,
    ) {
        let path = rel.join(&listed.name);
        for attempt in 0..=self.retries {
            if self.quit.load(Ordering::Relaxed) {
                return;
            }
            // A retry re-reads the source's state instead of trusting the listing.
            let how = Attempt {
                old,
                fresh_dir,
                trust_listing: attempt == 0,
                staged: batch.is_some(),
            };
            match self.copy_once(&path, src_dir, dst_dir, listed, how) {
                Ok(Some((ready, filled))) => {
                    let Some(batch) = batch else {
                        return match self.publish(dst_dir, &listed.name, ready) {
                            Ok(()) => self.copied(path, listed, old, change, filled),
                            Err(CopyFail::Failed { on_target, op, err }) => {
                                self.fail(&path, on_target, op, err);
                            }
                            Err(CopyFail::Vanished | CopyFail::Interrupted) => {}
                        };
                    };
                    let listed = listed.clone();
                    return batch.push(Staged {
                        path,
                        listed,
                        old,
                        change,
                        ready,
                        filled,
                    });
                }
                Ok(None) => Stats::bump(&self.stats.changed_during_copy, 1),
                Err(CopyFail::Vanished) => {
                    Stats::bump(&self.stats.done, 1);
                    return self.warn(&path, false, Op::Open, "vanished before it could be copied");
                }
                Err(CopyFail::Interrupted) => return,
                Err(CopyFail::Failed { on_target, op, err }) => {
                    return self.fail(&path, on_target, op, err);
                }
            }
        }
        self.fail(
            &path,
            false,
            Op::CopyData,
            io::Error::other("changed during copy; not replaced"),
        );
    }

    /// Counts and itemizes a file whose copy is in place.
    pub(crate) fn copied(
        &self,
        path: RelPath,
        listed: &Entry,
        old: Option<u32>,
        change: Change,
        filled: Filled,
    ) {
        self.count_filled(filled);
        self.itemize(path, Some(change), listed);
        self.count_change(old.is_some());
    }

    /// One attempt: the finished copy, flushed when the run flushes per
    /// file, not yet at its name. `Ok(None)`: the source changed during
    /// the copy (nothing left behind).
    ///
    /// A new target is written to an unnamed file (`O_TMPFILE`) to be
    /// linked at its name: one directory operation instead of create +
    /// rename, and a crash leaves nothing behind. An existing target is
    /// replaced by a named temporary to be renamed over it.
    fn copy_once(
        &self,
        path: &RelPath,
        src_dir: &Dir,
        dst_dir: &Dir,
        listed: &Entry,
        how: Attempt,
    ) -> Result<Option<(Ready, Filled)>, CopyFail> {
        let (src, cur) = self.open_source(src_dir, listed, how.trust_listing)?;
        let result = self.copy_open(path, &src, &cur, dst_dir, how);
        // Read once (the hash was taken as it was copied): its pages are
        // better used for the target's (ADR 006).
        self.drop_cached(&src, 0, None);
        result
    }

    /// [`Engine::copy_once`] with the source open.
    fn copy_open(
        &self,
        path: &RelPath,
        src: &std::fs::File,
        cur: &Entry,
        dst_dir: &Dir,
        how: Attempt,
    ) -> Result<Option<(Ready, Filled)>, CopyFail> {
        if how.old.is_none()
            && let Some(out) = self
                .copier
                .create_unnamed(dst_dir, cur, src)
                .map_err(CopyFail::target)?
        {
            let made = Made {
                fresh: how.fresh_dir,
                old: None,
            };
            let Some(filled) = self.fill_checked(path, src, &out, cur, made)? else {
                return Ok(None);
            };
            self.sync_file(&out, how.staged)?;
            return Ok(Some((Ready::Unnamed(out), filled)));
        }
        let tmp = self.temp_name();
        let written = self.write_temp(path, src, cur, dst_dir, &tmp, how.old, how.staged)?;
        Ok(written.map(|(filled, out)| (Ready::Named(tmp, out), filled)))
    }

    /// Puts a finished copy at its name: an unnamed file is linked there
    /// (a name created meanwhile is replaced), a temporary renamed over it.
    /// Nothing is put in place once the run is stopping (its temporary is
    /// removed, the old target kept).
    pub(crate) fn publish(&self, dir: &Dir, name: &Name, ready: Ready) -> Result<(), CopyFail> {
        if let Err(stop) = self.not_stopped() {
            self.discard_ready(dir, ready);
            return Err(stop);
        }
        let out = match ready {
            Ready::Named(tmp, _) => return self.rename_into_place(dir, &tmp, name),
            Ready::Unnamed(out) => out,
        };
        match dir.link_fd(&out, name.as_bytes()) {
            Ok(()) => Ok(()),
            // Someone created the name meanwhile: replace it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let tmp = self.temp_name();
                dir.link_fd(&out, tmp.as_bytes())
                    .map_err(|e| CopyFail::target_io(Op::Link, e))?;
                self.rename_into_place(dir, &tmp, name)
            }
            Err(e) => Err(CopyFail::target_io(Op::Link, e)),
        }
    }

    /// `Err(Interrupted)` once the run is stopping: a finished temporary
    /// is then not put in place (nothing changes after a stop).
    pub(crate) fn not_stopped(&self) -> Result<(), CopyFail> {
        match self.quit.load(Ordering::Relaxed) {
            true => Err(CopyFail::Interrupted),
            false => Ok(()),
        }
    }

    /// Counts a file copy that ended in a finished target: its strategy,
    /// and its bytes (only those: an abandoned copy's bytes are not).
    pub(crate) fn count_filled(&self, filled: Filled) {
        self.count_strategy(filled.strategy);
        Stats::bump(&self.stats.bytes_copied, filled.bytes);
    }

    /// Renames a finished temporary over `name`; on any failure, or when
    /// the run is stopping, the temporary is removed and the old target kept.
    fn rename_into_place(&self, dir: &Dir, tmp: &Name, name: &Name) -> Result<(), CopyFail> {
        if let Err(stop) = self.not_stopped() {
            let _ = dir.unlink(tmp.as_bytes());
            return Err(stop);
        }
        dir.rename(tmp.as_bytes(), name.as_bytes()).map_err(|e| {
            let _ = dir.unlink(tmp.as_bytes());
            CopyFail::target_io(Op::Rename, e)
        })
    }

    /// Drops `len` bytes (`None`: to the end) of a file from the page
    /// cache at `offset`, unless the run keeps them: a migration reads them
    /// once (the hash is taken as they are copied), and the pages freed are
    /// the ones the target's writes take next (ADR 005, 006). Only clean
    /// pages that no process maps go, so a failure costs nothing but memory.
    pub(crate) fn drop_cached(
        &self,
        f: &std::fs::File,
        offset: u64,
        len: Option<std::num::NonZeroU64>,
    ) {
        if self.drop_source_cache {
            let _ = rustix::fs::fadvise(f, offset, len, rustix::fs::Advice::DontNeed);
        }
    }

    /// Opens the source file; its metadata is the listing's when
    /// `trust_listing` (the check after the copy catches any change since,
    /// a changed type included), else taken now.
    pub(crate) fn open_source(
        &self,
        src_dir: &Dir,
        listed: &Entry,
        trust_listing: bool,
    ) -> Result<(std::fs::File, Entry), CopyFail> {
        let name = &listed.name;
        let src = src_dir
            .open_read(name.as_bytes())
            .map_err(|e| CopyFail::source(Op::Open, e))?;
        if trust_listing {
            return Ok((src, listed.clone()));
        }
        let before = rustix::fs::fstat(&src).map_err(|e| CopyFail::source(Op::Stat, e.into()))?;
        let cur = Entry::from_stat(name.clone(), &before);
        if cur.kind != Kind::File {
            // Replaced by something else since the listing: the next run handles it.
            return Err(CopyFail::source(
                Op::Open,
                io::Error::other("no longer a regular file"),
            ));
        }
        Ok((src, cur))
    }

    /// Copies the open source into a new file `out_name` in `out_dir` with
    /// its attributes, flushed unless `staged` for a batch's flush.
    /// `Ok(None)`: the source changed during the copy. On any outcome but
    /// success the new file is removed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_temp(
        &self,
        path: &RelPath,
        src: &std::fs::File,
        cur: &Entry,
        out_dir: &Dir,
        out_name: &Name,
        old: Option<u32>,
        staged: bool,
    ) -> Result<Option<(Filled, std::fs::File)>, CopyFail> {
        let out = self
            .copier
            .create(out_dir, out_name, cur, src)
            .map_err(CopyFail::target)?;
        let old = old.or_else(|| self.new_file_mode(out_dir, cur));
        let mut result = self.fill_checked(path, src, &out, cur, Made { fresh: false, old });
        if let Ok(Some(_)) = result
            && let Err(e) = self.sync_file(&out, staged)
        {
            result = Err(e);
        }
        match result {
            Ok(Some(filled)) => Ok(Some((filled, out))),
            other => {
                drop(out);
                let _ = out_dir.unlink(out_name.as_bytes());
                other.map(|_| None)
            }
        }
    }

    /// Data and attributes, then the check that the source did not change
    /// meanwhile (`Ok(None)` if it did).
    pub(crate) fn fill_checked(
        &self,
        path: &RelPath,
        src: &std::fs::File,
        out: &std::fs::File,
        cur: &Entry,
        made: Made,
    ) -> Result<Option<Filled>, CopyFail> {
        let filled = match self.fill(path, src, out, cur, made) {
            // Shorter than when the copy started: a change during the copy
            // (retried) when its status says so, as a grown file is.
            Err(f) if f.is_short_read() => {
                return match source_changed(src, cur)? {
                    true => Ok(None),
                    false => Err(f),
                };
            }
            r => r?,
        };
        Ok((!source_changed(src, cur)?).then_some(filled))
    }

    /// Data, then attributes, of an open temporary.
    fn fill(
        &self,
        path: &RelPath,
        src: &std::fs::File,
        out: &std::fs::File,
        cur: &Entry,
        made: Made,
    ) -> Result<Filled, CopyFail> {
        let job = crate::copy::DataJob {
            src,
            dst: out,
            entry: cur,
            offset: 0,
            len: cur.size,
            opts: &self.copy_opts,
            hash: self.verify,
        };
        let copied = self
            .copier
            .copy_data(&job, &self.quit)
            .map_err(CopyFail::data)?;
        self.verify_written(out, &copied)?;
        use std::os::fd::AsFd;
        let from = self
            .xattr_source(None, cur)
            .then_some(Node::Fd(src.as_fd()));
        let (attrs, mut opts) = self.attrs_for(cur, made.old);
        opts.fresh = made.fresh;
        let report = self
            .copier
            .set_attrs(Node::Fd(out.as_fd()), &attrs, from, &opts)
            .map_err(CopyFail::target)?;
        self.report_dropped(path, &report);
        Ok(Filled {
            strategy: copied.strategy,
            bytes: copied.bytes,
        })
    }

    /// Reads back what a copy wrote and compares it with the hash of what
    /// it read (when the copier hashed: verification on, not a reflink).
    pub(crate) fn verify_written(
        &self,
        out: &std::fs::File,
        copied: &crate::copy::Copied,
    ) -> Result<(), CopyFail> {
        let Some(want) = copied.hash else {
            return Ok(());
        };
        let got =
            read_back(out, &copied.segments).map_err(|e| CopyFail::target_io(Op::Verify, e))?;
        if got != want {
            return Err(CopyFail::target_io(
                Op::Verify,
                io::Error::other(
                    "verification failed: the data read back differs from the data copied; target left unchanged",
                ),
            ));
        }
        Stats::bump(&self.stats.verified, 1);
        Ok(())
    }

    pub(crate) fn count_strategy(&self, s: Strategy) {
        let c = match s {
            Strategy::Reflink => &self.stats.by_reflink,
            Strategy::CopyRange => &self.stats.by_copy_range,
            Strategy::Sendfile => &self.stats.by_sendfile,
            Strategy::ReadWrite => &self.stats.by_read_write,
            Strategy::Direct => &self.stats.by_direct,
            Strategy::Mapped => &self.stats.by_mapped,
            Strategy::Empty => return,
        };
        Stats::bump(c, 1);
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

/// A directory's device and inode.
pub(crate) fn dir_id(d: &Dir) -> io::Result<(u64, u64)> {
    let st = d.fstat()?;
    #[allow(clippy::unnecessary_cast)]
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// The identity of the directory `name` of `dir` that this process has
/// just made: what stands at the name must be a directory of its
/// effective user, mode 0700 (as made), and empty.
fn fresh_dir_id(dir: &Dir, name: &Name) -> io::Result<(u64, u64)> {
    let d = dir.open_dir(name.as_bytes())?;
    let st = d.fstat()?;
    if let Some(why) = crate::links::not_private(&st, libc::S_IFDIR, 0o700) {
        return Err(io::Error::other(format!(
            "the directory at this name is not the one just made ({why}): nothing done in it"
        )));
    }
    if !d.names()?.is_empty() {
        return Err(io::Error::other(
            "the directory at this name is not the one just made (it holds entries): nothing done in it",
        ));
    }
    dir_id(&d)
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
/// mtime or ctime): it changed since `cur` was taken.
pub(crate) fn source_changed(src: &std::fs::File, cur: &Entry) -> Result<bool, CopyFail> {
    let st = rustix::fs::fstat(src).map_err(|e| CopyFail::source(Op::Stat, e.into()))?;
    let now = Entry::from_stat(cur.name.clone(), &st);
    Ok((now.kind, now.size, now.mtime, now.ctime) != (cur.kind, cur.size, cur.mtime, cur.ctime))
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
/// never cached), buffered otherwise.
pub(crate) fn read_back(out: &std::fs::File, segments: &[(u64, u64)]) -> io::Result<u128> {
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
}
