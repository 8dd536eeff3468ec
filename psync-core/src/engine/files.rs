//! Small files: batches of copies to temporaries renamed into place,
//! `--checksum` compares of small files, and the copy steps the large
//! files share (open, fill, verify, publish).

use super::{CopyFail, Engine, Filled, Here, Made, Shared, clone_err, read_back, source_changed};
use crate::copy::Copier;
use crate::durable::{MAX_STAGED, Ready, Staged};
use crate::entry::{Entry, Kind, Name, RelPath};
use crate::error::Op;
use crate::fs::Dir;
use crate::itemize::Change;
use crate::plan::{Action, is_linked};
use crate::xattr::Node;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

/// True when the target of `src` is now another inode than the listing
/// saw (`listed`), a regular file of one name, of the source's size and
/// mtime, owned by psync's user or the source's owner: put in place
/// meanwhile by a batch of an earlier delivery of the directory's task
/// (see `Task::Files::recheck`). Another user cannot make such a file (a
/// file they plant with the source's size and mtime is theirs: copied
/// over). One `statx` per file of such a batch only.
fn placed_meanwhile(dir: &Dir, src: &Entry, listed: Option<u64>) -> bool {
    dir.stat(src.name.as_bytes()).is_ok_and(|st| {
        let now = Entry::from_stat(src.name.clone(), &st);
        now.kind == Kind::File
            && now.nlink == 1
            && (now.uid == src.uid || now.uid == super::euid())
            && listed.is_none_or(|ino| ino != now.ino)
            && (now.size, now.mtime) == (src.size, src.mtime)
    })
}

/// How one copy attempt may proceed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attempt {
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

impl Engine {
    pub(super) fn run_files(
        &self,
        rel: &RelPath,
        actions: Vec<Action>,
        (fresh, recheck): (bool, bool),
        at: Option<(u64, u64)>,
    ) {
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
                    if recheck && placed_meanwhile(&dst_dir, &src, dst.as_ref().map(|d| d.ino)) {
                        // Copied, counted and reported by the batch that put
                        // it there.
                        continue;
                    }
                    let dst = dst.filter(|_| !change.new);
                    let how = (
                        dst.as_ref().map(|d| d.mode),
                        fresh,
                        change,
                        dst.map(|d| d.ino),
                    );
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

    /// `--checksum`: compares the contents of two files of equal size
    /// (both read at once), then copies or only fixes attributes.
    pub(super) fn compare_file(
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
                Ok((same, hash)) => {
                    if self.manifest {
                        self.hashed(path.clone(), src, hash);
                    }
                    same
                }
                Err((on_target, e)) => return self.fail(&path, on_target, Op::Verify, e),
            },
            None => false,
        };
        // `psync verify`: the same bytes, but a hole of the source is
        // data in the target (a copy made without holes).
        let mut change = change;
        if same
            && self.verify_only
            && let Some(d) = dir
        {
            change.transfer |= self.holes_filled(src_dir, d, src);
        }
        if same && is_linked(src, &self.plan_opts) && !self.dry_run {
            // Its attributes are fixed in the last phase, where the
            // group's names (and so its inode's links) are known.
            let fix = Action::Attrs {
                src: src.clone(),
                dst: dst.clone(),
                change,
            };
            // Named after the file: one record, however many deliveries.
            let origin = [b"checksum/".as_slice(), src.name.as_bytes()].concat();
            if let Err(e) = self.defer_linked(rel, at, &[fix], &origin) {
                self.fail(&path, true, Op::Link, e);
            }
            return;
        }
        if same {
            self.fix_attrs(
                Here { rel, src_dir, dir },
                (src, dst),
                change,
                (1, Shared::Replace),
            );
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
                    self.copy_file(
                        rel,
                        src_dir,
                        d,
                        src,
                        (Some(dst.mode), false, change, None),
                        None,
                    );
                }
            }
            _ => {
                self.itemize(path, Some(change), src);
                self.count_change(true);
            }
        }
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
        (old, fresh_dir, change, was): (Option<u32>, bool, Change, Option<u64>),
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
                        return match self.publish(&path, dst_dir, listed, was, ready) {
                            Ok(true) => self.copied(path, listed, old, change, filled),
                            Ok(false) => {}
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
                        was,
                        old,
                        change,
                        ready,
                        filled,
                    });
                }
                Ok(None) => self.count(|c| c.changed_during_copy += 1),
                Err(CopyFail::Vanished) => {
                    self.count(|c| c.done += 1);
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
    /// replaced by a named temporary to be renamed over it. A new target
    /// in memory, in a directory only this run can enter, is written at
    /// its name (ADR 024).
    pub(super) fn copy_once(
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
        // better used for the target's (ADR 006). On tmpfs they are the
        // file itself: nothing to drop.
        if !src_dir.in_memory() {
            self.drop_cached(&src, 0, None);
        }
        result
    }

    /// [`Engine::copy_once`] with the source open.
    pub(super) fn copy_open(
        &self,
        path: &RelPath,
        src: &std::fs::File,
        cur: &Entry,
        dst_dir: &Dir,
        how: Attempt,
    ) -> Result<Option<(Ready, Filled)>, CopyFail> {
        if how.old.is_none()
            && self.in_place_ok(dst_dir, cur, how)
            && let Some(out) = self
                .noted(path, || self.copier.create_in_place(dst_dir, cur, src))
                .map_err(CopyFail::target)?
        {
            return self.fill_in_place(path, src, out, cur, dst_dir);
        }
        if how.old.is_none()
            && let Some(out) = self
                .noted(path, || self.copier.create_unnamed(dst_dir, cur, src))
                .map_err(CopyFail::target)?
        {
            let made = Made {
                fresh: how.fresh_dir,
                old: None,
                plain: self.fsattrs_on() && dst_dir.passes_on_nothing(),
                in_memory: dst_dir.in_memory(),
                times_later: false,
            };
            let Some(filled) = self.fill_checked(path, src, &out, cur, made)? else {
                return Ok(None);
            };
            self.sync_file(&out, how.staged)?;
            return Ok(Some((Ready::Unnamed(out), filled)));
        }
        let tmp = self.temp_name();
        let written = self.write_temp(path, src, cur, (dst_dir, &tmp), how)?;
        Ok(written.map(|(filled, out)| (Ready::Named(tmp, out), filled)))
    }

    /// Whether the new file `src` may be written at its own name (ADR
    /// 024): its directory was created by this run and is still `0700`
    /// and ours (no one else can enter it, plant a name or open the file:
    /// looked at, not only assumed, once per batch), it lives in memory
    /// (a crash of the machine loses the whole file system), the first
    /// attempt, no batch flush waits to publish names. And a copy cut
    /// short by a kill must not pass the next run's quick check: it keeps
    /// the time of its last write, in this run, so the source's must be
    /// older than the run (by more than a clock tick) and no
    /// `--modify-window` may blur the two.
    fn in_place_ok(&self, dst_dir: &Dir, src: &Entry, how: Attempt) -> bool {
        how.fresh_dir
            && how.trust_listing
            && !how.staged
            && !self.flush.per_task()
            && self.plan_opts.modify_window_ns == 0
            && src.mtime.sec < self.plan_opts.now.sec.saturating_sub(1)
            && dst_dir.in_memory()
            && dst_dir.private()
    }

    /// Fills a file created at its own name, its times set last (after the
    /// data is read back): until then it is not what the quick check takes
    /// for a finished copy. Removed on any outcome but success.
    fn fill_in_place(
        &self,
        path: &RelPath,
        src: &std::fs::File,
        out: std::fs::File,
        cur: &Entry,
        dst_dir: &Dir,
    ) -> Result<Option<(Ready, Filled)>, CopyFail> {
        let made = Made {
            fresh: true,
            old: None,
            plain: self.fsattrs_on() && dst_dir.passes_on_nothing(),
            in_memory: true,
            times_later: true,
        };
        // Taken off its name on every way out but success, a panic too.
        let mut placed = Placed {
            engine: self,
            dir: dst_dir,
            name: &cur.name,
            file: &out,
            armed: true,
        };
        let Some(filled) = self.fill_checked(path, src, &out, cur, made)? else {
            return Ok(None);
        };
        // Checked: only now does it get the source's times, which make
        // it a finished copy for the quick check.
        if self.copy_opts.preserve.times {
            let mut opts = self.copy_opts;
            opts.preserve = crate::plan::Preserve {
                times: true,
                ..crate::plan::Preserve::NONE
            };
            // Created with its mode: nothing but the times to set.
            (opts.fresh, opts.created) = (false, true);
            self.copier
                .set_attrs(Node::Fd(out.as_fd()), cur, None, &opts)
                .map_err(CopyFail::target)?;
        }
        placed.armed = false;
        drop(placed);
        Ok(Some((Ready::InPlace(out), filled)))
    }

    /// Removes a copy that failed at its own name, only while the name
    /// still holds it: moved aside to a temporary first, then removed if
    /// it is this copy's inode, else put back. (Another delivery of the
    /// same batch may have replaced it meanwhile with a finished copy.)
    fn unplace(&self, dir: &Dir, name: &Name, out: &std::fs::File) {
        let Ok(ours) = rustix::fs::fstat(out) else {
            return;
        };
        let tmp = self.temp_name();
        if dir
            .rename_noreplace(name.as_bytes(), tmp.as_bytes())
            .is_err()
        {
            return;
        }
        match dir.stat(tmp.as_bytes()) {
            Ok(st) if (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino) => {
                let _ = dir.unlink(tmp.as_bytes());
            }
            _ => {
                // Taken again meanwhile: the temporary (another
                // delivery's finished copy) is left to the next run.
                let _ = dir.rename_noreplace(tmp.as_bytes(), name.as_bytes());
            }
        }
    }

    /// Puts a finished copy at its name: an unnamed file is linked there
    /// (a name created meanwhile is replaced), a temporary renamed over it.
    /// Nothing is put in place once the run is stopping (its temporary is
    /// removed, the old target kept).
    ///
    /// `Ok(false)`: the name of a new file (`src`'s) was taken meanwhile
    /// by the same copy of another delivery of its batch (a broker
    /// delivers a directory's task, and so its batches, at least once:
    /// see `placed_meanwhile`); this copy is dropped, and the other
    /// delivery's counts and reports it.
    /// `was`: the inode of the target a batch's listing saw, which the
    /// copy replaces; another inode there now that `placed_meanwhile`
    /// accepts is the same copy by another delivery (one `statx` per
    /// replaced file of a batch).
    pub(crate) fn publish(
        &self,
        path: &RelPath,
        dir: &Dir,
        src: &Entry,
        was: Option<u64>,
        ready: Ready,
    ) -> Result<bool, CopyFail> {
        let name = &src.name;
        if let Err(stop) = self.not_stopped()
            && !matches!(ready, Ready::InPlace(_))
        {
            self.discard_ready(dir, ready);
            return Err(stop);
        }
        let out = match ready {
            Ready::Named(tmp, out) => {
                if was.is_some() && placed_meanwhile(dir, src, was) {
                    self.discard_ready(dir, Ready::Named(tmp, out));
                    return Ok(false);
                }
                self.rename_into_place(dir, &tmp, name, &out)?;
                self.seal_copy(path, src, &out);
                return Ok(true);
            }
            Ready::Unnamed(out) => out,
            // Finished where it stands (kept even when the run is
            // stopping): only its flags are left.
            Ready::InPlace(out) => {
                self.seal_copy(path, src, &out);
                return Ok(true);
            }
        };
        let linked = self.in_project_dir(dir, &out, || dir.link_fd(&out, name.as_bytes()));
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if placed_meanwhile(dir, src, None) {
                    return Ok(false);
                }
                // Someone else created the name meanwhile: replace it.
                let tmp = self.temp_name();
                dir.link_fd(&out, tmp.as_bytes())
                    .map_err(|e| CopyFail::target_io(Op::Link, e))?;
                self.rename_into_place(dir, &tmp, name, &out)?;
            }
            Err(e) => return Err(CopyFail::target_io(Op::Link, e)),
        }
        self.seal_copy(path, src, &out);
        Ok(true)
    }

    /// The last step of a copy in place: the immutable and append-only
    /// flags its source is listed with (neither can be renamed or linked
    /// into place once set; its times were set before).
    pub(crate) fn seal_copy(&self, path: &RelPath, src: &Entry, out: &std::fs::File) {
        if let Some(bits) = self.protect_of(src).filter(|&b| b != 0) {
            self.set_protect(path, Node::Fd(out.as_fd()), bits);
        }
    }

    /// Counts a file copy that ended in a finished target: its strategy,
    /// and its bytes (only those: an abandoned copy's bytes are not).
    pub(crate) fn count_filled(&self, filled: Filled) {
        self.count_strategy(filled.strategy);
        self.count(|c| c.bytes_copied += filled.bytes);
    }

    /// Renames a finished temporary over `name`; on any failure, or when
    /// the run is stopping, the temporary is removed and the old target kept.
    pub(super) fn rename_into_place(
        &self,
        dir: &Dir,
        tmp: &Name,
        name: &Name,
        out: &std::fs::File,
    ) -> Result<(), CopyFail> {
        if let Err(stop) = self.not_stopped() {
            let _ = dir.unlink(tmp.as_bytes());
            return Err(stop);
        }
        let rename = || dir.rename(tmp.as_bytes(), name.as_bytes());
        let place = || self.in_project_dir(dir, out, rename);
        let renamed = match place() {
            // An immutable or append-only target: lifted, then replaced.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && self.unlock_name(dir, name) => {
                place()
            }
            r => r,
        };
        renamed.map_err(|e| {
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
        let mut cur = Entry::from_stat(name.clone(), &before);
        cur.dev = self.fs.of(cur.dev, src.as_fd());
        cur.fs_data = listed.fs_data.clone();
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
    fn write_temp(
        &self,
        path: &RelPath,
        src: &std::fs::File,
        cur: &Entry,
        (out_dir, out_name): (&Dir, &Name),
        how: Attempt,
    ) -> Result<Option<(Filled, std::fs::File)>, CopyFail> {
        let out = self
            .noted(path, || self.copier.create(out_dir, out_name, cur, src))
            .map_err(CopyFail::target)?;
        let (old, staged) = (how.old, how.staged);
        let old = old.or_else(|| self.new_file_mode(out_dir, cur));
        let plain = self.fsattrs_on() && out_dir.passes_on_nothing();
        let made = Made {
            fresh: false,
            old,
            plain,
            in_memory: out_dir.in_memory(),
            times_later: false,
        };
        let mut result = self.fill_checked(path, src, &out, cur, made);
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
        if source_changed(src, cur)? {
            return Ok(None);
        }
        // The source is the regular file listed (its `fstat` just said
        // so): its flags and project id go onto the copy now, flushed
        // with it; immutable and append-only once it is in place.
        self.copy_fsattrs(path, src, out, made.plain)
            .map_err(|e| CopyFail::target_io(Op::FileAttr, e))?;
        Ok(Some(filled))
    }

    /// Data, then attributes, of an open temporary.
    pub(super) fn fill(
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
            read_back: self.verify && made.in_memory,
        };
        let copied =
            crate::copy::pace::with(&self.pacer, || self.copier.copy_data(&job, &self.quit))
                .map_err(CopyFail::data)?;
        self.verify_written(out, &copied, made.in_memory)?;
        use std::os::fd::AsFd;
        let from = self
            .xattr_source(None, cur)
            .then_some(Node::Fd(src.as_fd()));
        let (attrs, mut opts) = self.attrs_for(cur, made.old);
        opts.fresh = made.fresh;
        opts.preserve.times &= !made.times_later;
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
    /// `in_memory`: see [`read_back`].
    pub(crate) fn verify_written(
        &self,
        out: &std::fs::File,
        copied: &crate::copy::Copied,
        in_memory: bool,
    ) -> Result<(), CopyFail> {
        let Some(want) = copied.hash else {
            return Ok(());
        };
        // In memory, read back as the copier wrote (the same pages a later
        // read would find); elsewhere from storage, by the engine.
        let got = match copied.read_back.filter(|_| in_memory) {
            Some(got) => got,
            None => read_back(out, &copied.segments, in_memory)
                .map_err(|e| CopyFail::target_io(Op::Verify, e))?,
        };
        if got != want {
            return Err(CopyFail::target_io(
                Op::Verify,
                io::Error::other(
                    "verification failed: the data read back differs from the data copied; target left unchanged",
                ),
            ));
        }
        self.count(|c| c.verified += 1);
        Ok(())
    }
}

/// A file being filled at its own name (ADR 024): removed from the name
/// when dropped still armed (a failure, a change, a panic).
struct Placed<'a> {
    engine: &'a Engine,
    dir: &'a Dir,
    name: &'a Name,
    file: &'a std::fs::File,
    armed: bool,
}

impl Drop for Placed<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.engine.unplace(self.dir, self.name, self.file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// A second delivery's batch skips a file only when another inode of
    /// the source's size and mtime stands at its name now.
    #[test]
    fn a_file_placed_meanwhile_is_recognised() {
        let t = crate::test_dir();
        let at = |name: &str, data: &str, mtime: u64| {
            let p = t.path().join(name);
            std::fs::write(&p, data).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
                .unwrap();
        };
        let dir = Dir::open_root(t.path()).unwrap();
        let entry = |name: &str| {
            let st = dir.stat(name.as_bytes()).unwrap();
            Entry::from_stat(Name::from(name), &st)
        };
        at("f", "new data", 1_700_000_000);
        let src = entry("f");
        // New in the target: nothing was listed, so what stands there
        // with the source's size and mtime was put there meanwhile.
        assert!(placed_meanwhile(&dir, &src, None));
        // The very inode the listing saw: still to be copied (`-I`).
        assert!(!placed_meanwhile(&dir, &src, Some(src.ino)));
        // Another inode, but not the source's size or mtime.
        let mut other = src.clone();
        other.ino += 1;
        at("f", "new data", 1_700_000_001);
        assert!(!placed_meanwhile(&dir, &src, Some(other.ino)));
        at("f", "longer new data", 1_700_000_000);
        assert!(!placed_meanwhile(&dir, &src, Some(other.ino)));
        // Another inode of the source's size and mtime, but another
        // user's (planted): copied over.
        at("f", "new data", 1_700_000_000);
        if super::super::euid() == 0 {
            let p = t.path().join("f");
            std::os::unix::fs::chown(&p, Some(54_321), None).unwrap();
            assert!(!placed_meanwhile(&dir, &src, Some(other.ino)));
            std::os::unix::fs::chown(&p, Some(0), None).unwrap();
            assert!(placed_meanwhile(&dir, &src, Some(other.ino)));
        }
        // Nothing there, or not a file.
        let mut gone = src.clone();
        gone.name = Name::from("g");
        assert!(!placed_meanwhile(&dir, &gone, None));
        std::fs::create_dir(t.path().join("g")).unwrap();
        assert!(!placed_meanwhile(&dir, &gone, None));
    }
}
