//! Durability (`--fsync`): when what a run wrote is on stable storage.
//!
//! Without it a run ends when the kernel holds every change in its page
//! cache; write-back happens later, and a device that fails then (a thin
//! volume filling up, a disk dying) loses files the run reported as done,
//! with nobody left to tell. With it each task makes its own outputs
//! durable before it ends, so "done" means "on disk" for a task run on
//! any node (one node's `sync` does not flush another's), and a flush
//! that fails fails the files it was for. ADR 009 has the measurements
//! behind the choice of mode.

use crate::engine::{CopyFail, Engine};
use crate::entry::{Entry, Name, RelPath};
use crate::error::Op;
use crate::fs::Dir;
use crate::itemize::Change;
use std::fs::File;
use std::io;

/// When a run's results reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Flush {
    /// Left to the kernel's write-back after the run (the default): a
    /// device that fails on write-back loses files the run counted as done.
    #[default]
    Off,
    /// Each copied file is flushed (`fsync`) before its name is linked or
    /// renamed into place, and every directory whose entries or attributes
    /// a task changed is flushed at that task's end.
    File,
    /// A batch's files are written, then one `syncfs` of the target file
    /// system flushes them all, then their names are published; directories
    /// as with [`Flush::File`]. One flush per batch instead of per file, but
    /// it also flushes every other writer's dirty data on that file system
    /// (and fails the batch on their write-back errors). What `--fsync`
    /// does; large and hard-linked files are flushed one by one. On a
    /// FUSE target, where `syncfs` does not reach the daemon, the run
    /// uses [`Flush::Parallel`] instead (with a warning).
    Batch,
    /// A batch's files are written, then flushed by concurrent `fsync`s
    /// (one short-lived thread each, so the file system can take them in
    /// one journal commit), then their names are published; directories
    /// as with [`Flush::File`]. Flushes only this run's files.
    Parallel,
    /// One `syncfs` of the target when the run ends: nothing is durable
    /// until then, and a task is not durable when it completes (so not
    /// usable by a broker worker, whose node flushes only its own writes).
    /// On a FUSE target the run uses [`Flush::Parallel`] instead (with a
    /// warning): the end has no list of the files written to `fsync`.
    End,
}

impl Flush {
    /// Tasks flush their own outputs before they end.
    pub(crate) fn per_task(self) -> bool {
        matches!(self, Flush::File | Flush::Batch | Flush::Parallel)
    }

    /// File tasks stage their copies for one flush per batch.
    pub(crate) fn stages(self) -> bool {
        matches!(self, Flush::Batch | Flush::Parallel)
    }
}

/// FUSE's `statfs` magic (`FUSE_SUPER_MAGIC`; virtiofs has it too).
const FUSE_MAGIC: u64 = 0x6573_5546;

impl Flush {
    /// The mode a run uses on a target file system of `magic`, and why
    /// it is not `self` when it is not.
    ///
    /// `syncfs` on FUSE never reaches the daemon: the kernel's
    /// `fuse_sync_fs` sends `FUSE_SYNCFS` only when `fc->sync_fs` is set,
    /// which only virtiofs (and iomap servers) set, and a plain FUSE
    /// daemon's write-back cache is not the kernel's to flush. So a
    /// daemon's failing flush is never seen by [`Flush::Batch`] or
    /// [`Flush::End`], and the run would report a false success; an
    /// `fsync` of each file is sent to the daemon (`FUSE_FSYNC`). There,
    /// batches flush their files one by one ([`Flush::Parallel`]), and
    /// the end's one `syncfs` becomes the same per-task flushing (it has
    /// no list of the files it wrote, and keeping one would grow with the
    /// tree). NFS needs no such fallback: `syncfs` writes back with
    /// `WB_SYNC_ALL`, whose `nfs_write_inode` sends a `COMMIT` and waits
    /// for it, and a failed write or commit is recorded on the mapping
    /// and so in the super block's error that `syncfs` reports (ADR 009).
    pub(crate) fn on_target(self, magic: u64) -> (Flush, Option<&'static str>) {
        match self {
            Flush::Batch | Flush::End if magic == FUSE_MAGIC => (
                Flush::Parallel,
                Some(
                    "a FUSE target: syncfs does not reach its daemon, so each \
                     file is flushed with fsync instead (as --fsync-mode parallel)",
                ),
            ),
            _ => (self, None),
        }
    }
}

/// A copied file whose name is not published yet (batched flushes).
pub(crate) enum Ready {
    /// Written unnamed (`O_TMPFILE`): linked at its name.
    Unnamed(File),
    /// Written to a temporary name: renamed over its name.
    Named(Name, File),
    /// Written at its own name ([`Copier::create_in_place`](crate::Copier::create_in_place)):
    /// in place already.
    InPlace(File),
}

impl Ready {
    fn file(&self) -> &File {
        match self {
            Ready::Unnamed(f) | Ready::Named(_, f) | Ready::InPlace(f) => f,
        }
    }
}

/// A file of a batch written, verified and with its attributes, waiting
/// for the batch's flush before its name is published.
pub(crate) struct Staged {
    pub(crate) path: RelPath,
    pub(crate) listed: Entry,
    /// The inode of the target the listing saw (see `Engine::publish`).
    pub(crate) was: Option<u64>,
    pub(crate) old: Option<u32>,
    pub(crate) change: Change,
    pub(crate) ready: Ready,
    pub(crate) filled: crate::engine::Filled,
}

/// Files a batch stages before it flushes and publishes them: each holds
/// a file descriptor (an unnamed file has nothing else), and a flush per
/// this many files costs little next to one per file.
pub(crate) const MAX_STAGED: usize = 64;

impl Engine {
    /// Flushes a file this run wrote, data and inode, before its name is
    /// published (a name must never reach the disk ahead of its data).
    /// A no-op unless tasks flush their outputs and the file is not staged
    /// for a batch's `syncfs`.
    pub(crate) fn sync_file(&self, f: &File, staged: bool) -> Result<(), CopyFail> {
        if self.flush == Flush::File || (self.flush.stages() && !staged) {
            f.sync_all()
                .map_err(|e| CopyFail::target_io(Op::Fsync, e))?;
        }
        Ok(())
    }

    /// Flushes the data of a large file's chunk at the end of its task (a
    /// chunk may be written on another node than its file's finish).
    pub(crate) fn sync_chunk(&self, part: &File) -> Result<(), CopyFail> {
        if self.flush.per_task() {
            part.sync_data()
                .map_err(|e| CopyFail::target_io(Op::Fsync, e))?;
        }
        Ok(())
    }

    /// Flushes a directory whose entries or attributes a task changed, at
    /// the task's end. A failure fails the directory: its entries' names
    /// may not be on disk.
    pub(crate) fn sync_dir(&self, rel: &RelPath, dir: &Dir) {
        if !self.flush.per_task() || self.dry_run {
            return;
        }
        if let Err(e) = rustix::fs::fsync(dir.fd()) {
            self.flush_failed(rel, Op::Fsync, e.into());
        }
    }

    /// For a worker process of a broker: makes what this engine's tasks
    /// wrote durable when they did not do it themselves (the run's flush
    /// mode is [`Flush::Off`] or [`Flush::End`]; a broker submits runs
    /// with [`Flush::End`], which a FUSE target turns into per-file
    /// flushes): one `syncfs` of the target root's file system, which a
    /// worker calls before it reports tasks complete (one call covers
    /// every task finished meanwhile).
    /// `Ok(false)` when there was nothing to do (per-task flushes, a dry
    /// run).
    ///
    /// # Errors
    /// The `syncfs` failed: the target root is named; nothing of what
    /// was written since the last call is known to be on stable storage.
    pub fn sync_written(&self) -> Result<bool, crate::Error> {
        if self.flush.per_task() || self.dry_run {
            return Ok(false);
        }
        let Some(root) = &self.dst_root else {
            return Ok(false);
        };
        rustix::fs::syncfs(root.fd())
            .map_err(|e| crate::Error::new(Op::Syncfs, &self.dst_path, e.into()))?;
        Ok(true)
    }

    /// The run's one flush of [`Flush::End`], after every task: a failure
    /// fails the run (the target root is named).
    pub(crate) fn flush_at_end(&self) {
        if self.flush != Flush::End || self.dry_run {
            return;
        }
        if let Some(root) = &self.dst_root
            && let Err(e) = rustix::fs::syncfs(root.fd())
        {
            self.flush_failed(&RelPath::root(), Op::Syncfs, e.into());
        }
    }

    /// A failed flush of what was already counted done: an error naming
    /// the path, counted as a failure (so the run does not succeed) but
    /// not as one more entry done.
    fn flush_failed(&self, rel: &RelPath, op: Op, err: io::Error) {
        self.report(rel, true, op, err, false);
        self.count(|c| c.failed += 1);
    }

    /// The staged files of a batch flushed ([`Flush::Batch`]: one
    /// `syncfs`; [`Flush::Parallel`]: an `fsync` each, all at once), then
    /// the names of those whose flush succeeded published; the others fail.
    pub(crate) fn publish_staged(&self, dir: &Dir, staged: &mut Vec<Staged>) {
        if staged.is_empty() {
            return;
        }
        let flushed: Vec<Result<(), (Op, io::Error)>> = if self.flush == Flush::Parallel {
            std::thread::scope(|scope| {
                let flushes: Vec<_> = staged
                    .iter()
                    .map(|s| scope.spawn(|| s.ready.file().sync_all()))
                    .collect();
                flushes
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(io::Error::other("flush panicked")))
                    })
                    .map(|r| r.map_err(|e| (Op::Fsync, e)))
                    .collect()
            })
        } else {
            let all = rustix::fs::syncfs(dir.fd()).map_err(io::Error::from);
            let each = |_: &Staged| all.as_ref().map_err(|e| (Op::Syncfs, clone(e))).copied();
            staged.iter().map(each).collect()
        };
        for (s, flushed) in staged.drain(..).zip(flushed) {
            if let Err((op, e)) = flushed {
                self.discard_ready(dir, s.ready);
                self.fail(&s.path, true, op, e);
                continue;
            }
            match self.publish(&s.path, dir, &s.listed, s.was, s.ready) {
                Ok(true) => self.copied(s.path, &s.listed, s.old, s.change, s.filled),
                Ok(false) => {}
                Err(CopyFail::Failed { on_target, op, err }) => {
                    self.fail(&s.path, on_target, op, err);
                }
                Err(CopyFail::Vanished | CopyFail::Interrupted) => {}
            }
        }
    }

    /// Removes staged files that will not be published (the run stopped).
    pub(crate) fn discard_staged(&self, dir: &Dir, staged: Vec<Staged>) {
        for s in staged {
            self.discard_ready(dir, s.ready);
        }
    }

    /// Removes a finished copy that will not be published: its temporary
    /// (an unnamed file needs nothing). One written in place is kept: it is
    /// finished and at its name already (and never staged).
    pub(crate) fn discard_ready(&self, dir: &Dir, ready: Ready) {
        if let Ready::Named(tmp, _) = ready {
            let _ = dir.unlink(tmp.as_bytes());
        }
    }
}

/// The same error again, for each file a shared flush was for.
fn clone(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_file_and_batch_flush_in_tasks() {
        assert!(!Flush::Off.per_task());
        assert!(Flush::File.per_task());
        assert!(Flush::Batch.per_task());
        assert!(Flush::Parallel.per_task());
        assert!(!Flush::End.per_task());
        assert!(Flush::Batch.stages() && Flush::Parallel.stages() && !Flush::File.stages());
        assert_eq!(Flush::default(), Flush::Off);
    }

    #[test]
    fn syncfs_modes_flush_each_file_on_fuse() {
        for mode in [Flush::Batch, Flush::End] {
            let (used, why) = mode.on_target(FUSE_MAGIC);
            assert_eq!(used, Flush::Parallel);
            assert!(why.is_some_and(|w| w.contains("FUSE")));
            assert_eq!(mode.on_target(0xEF53), (mode, None), "ext4");
            assert_eq!(mode.on_target(0x6969), (mode, None), "NFS");
        }
        for mode in [Flush::Off, Flush::File, Flush::Parallel] {
            assert_eq!(mode.on_target(FUSE_MAGIC), (mode, None));
        }
    }
}
