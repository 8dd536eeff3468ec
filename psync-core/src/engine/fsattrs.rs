//! Inode flags and project ids of regular files and directories (ADR
//! 018): copied with the data, compared with the xattrs, immutable and
//! append-only set last and lifted while the run changes an entry.

use super::Engine;
use crate::copy::AttrMode;
use crate::entry::{Entry, Kind, RelPath};
use crate::error::Op;
use crate::fs::Dir;
use crate::fsattr::{self, Dropped, FsAttrReport, FsAttrSync, PROTECT};
use crate::xattr::Node;
use std::io;
use std::sync::atomic::Ordering;

/// The kinds of refusal warned about once per engine (a tree of files
/// with project ids copied to tmpfs would give one warning per file).
const WARNED_PROJID: u8 = 1;
const WARNED_PROTECT: u8 = 2;
const WARNED_FLAGS: u8 = 4;

impl Engine {
    /// True when flags or project ids are synced.
    pub(crate) fn fsattrs_on(&self) -> bool {
        self.copy_opts.file_flags.on() || self.copy_opts.project_ids.on()
    }

    /// What is synced, immutable and append-only aside.
    fn fsattr_how(&self) -> FsAttrSync {
        self.copy_opts.fsattr_sync()
    }

    /// The immutable and append-only flags `src` is listed with, to set
    /// last; `None` when flags are not synced or not listed.
    /// Not for a file of several names: its inode is linked to them in
    /// the run's last phase, and an immutable or append-only inode
    /// cannot be linked; that phase sets them once the group is complete
    /// (`Engine::seal_groups`, ADR 018).
    pub(crate) fn protect_of(&self, src: &Entry) -> Option<u32> {
        if !self.protects(src) {
            return None;
        }
        src.flags.map(|f| f & PROTECT)
    }

    /// True when the immutable and append-only flags of `src` are synced.
    fn protects(&self, src: &Entry) -> bool {
        self.copy_opts.file_flags.on()
            && matches!(src.kind, Kind::File | Kind::Dir)
            && !crate::plan::is_linked(src, &self.plan_opts)
    }

    /// Flags (but immutable and append-only) and project id of the source
    /// file `src` onto its new copy `out`, before the copy is flushed
    /// and published. Both are fds of regular files (the source's
    /// checked by `fstat` after the copy).
    ///
    /// # Errors
    /// Reading either side fails.
    /// `plain`: `out` was made in a directory that passes on nothing
    /// ([`Dir::passes_on_nothing`]), so a source without flags or project
    /// id costs one read (the common case).
    pub(crate) fn copy_fsattrs(
        &self,
        path: &RelPath,
        src: &std::fs::File,
        out: &std::fs::File,
        plain: bool,
    ) -> io::Result<bool> {
        if !self.fsattrs_on() {
            return Ok(false);
        }
        use std::os::fd::AsFd;
        let (from, to) = (Node::Fd(src.as_fd()), Node::Fd(out.as_fd()));
        let how = self.fsattr_how();
        let report = match fsattr::get(from)? {
            None => return Ok(false),
            Some(a) if plain && a.xflags() & how.mask() == 0 => {
                if !how.project_ids || a.projid() == 0 {
                    return Ok(false);
                }
                self.copier.sync_fsattrs(from, to, how)?
            }
            Some(_) => self.copier.sync_fsattrs(from, to, how)?,
        };
        self.report_fsattrs(path, &report);
        Ok(report.changed)
    }

    /// Sets the immutable and append-only flags `bits` on `target` (the
    /// last step on an entry), or lifts them with `0`. True when they
    /// changed.
    pub(crate) fn set_protect(&self, path: &RelPath, target: Node<'_>, bits: u32) -> bool {
        match fsattr::set_protect(target, bits) {
            Ok(report) => {
                self.report_fsattrs(path, &report);
                report.changed
            }
            Err(e) => {
                self.fail(path, true, Op::FileAttr, e);
                false
            }
        }
    }

    /// Lifts immutable and append-only from the listed target `dst` in
    /// `d`, pinned by a handle checked to be the inode listed, so that the
    /// run can replace, remove or change it. Nothing for an entry not
    /// listed so; false (reported) when they stay.
    pub(crate) fn unlock(&self, rel: &RelPath, d: &Dir, dst: &Entry) -> bool {
        if self.dry_run
            || !dst.is_protected()
            || !self.copy_opts.file_flags.on()
            || !matches!(dst.kind, Kind::File | Kind::Dir)
        {
            return true;
        }
        let path = rel.join(&dst.name);
        let h = match d.handle(dst.name.as_bytes()) {
            Ok(h) => h,
            // Gone: whatever comes next finds that out.
            Err(_) => return true,
        };
        if !self.fs.is(&h, dst) {
            return true;
        }
        if !self.none_could_move_in(d) {
            let why = "immutable or append-only in a directory another user could have moved \
                       into the tree: not lifted (`chattr -ia` it by hand if it is the copy)";
            self.fail(&path, true, Op::FileAttr, io::Error::other(why));
            return false;
        }
        if !lone(&h.stat) {
            // A name of a hard-link group: lifted already, when safe, by
            // the last phase (see `Engine::unlock_group`).
            if fsattr::get(h.node()).is_ok_and(|a| a.is_none_or(|a| a.xflags() & PROTECT == 0)) {
                return true;
            }
            let why =
                "immutable or append-only with other names (maybe outside the tree): not lifted";
            self.fail(&path, true, Op::FileAttr, io::Error::other(why));
            return false;
        }
        match fsattr::set_protect(h.node(), 0) {
            Ok(r) if r.dropped.is_empty() => true,
            Ok(r) => {
                self.report_fsattrs(&path, &r);
                false
            }
            Err(e) => {
                self.fail(&path, true, Op::FileAttr, e);
                false
            }
        }
    }

    /// Lifts immutable and append-only from whatever regular file or
    /// directory of one name stands at `name` in `dir` (a rename over it
    /// was refused with EPERM): the copy that replaces it gets its own
    /// flags. True when they were lifted. An inode of several names is
    /// left alone (one of them may be outside the tree, ADR 010).
    pub(crate) fn unlock_name(&self, dir: &Dir, name: &crate::entry::Name) -> bool {
        if !self.copy_opts.file_flags.on() {
            return false;
        }
        let Ok(h) = dir.handle(name.as_bytes()) else {
            return false;
        };
        if !lone(&h.stat) || !self.none_could_move_in(dir) {
            return false;
        }
        match fsattr::get(h.node()) {
            Ok(Some(a)) if a.xflags() & PROTECT != 0 => {
                fsattr::set_protect(h.node(), 0).is_ok_and(|r| r.changed)
            }
            _ => false,
        }
    }

    /// True when no user but psync's could have moved an entry of `d`
    /// into the tree: `d` and every directory above it up to the run's
    /// root are psync's user's, writable by no one else (an ACL granting
    /// write shows as a group bit). Only then is an immutable or
    /// append-only inode lifted: the flags freeze an inode's own names
    /// but not the directories above them, so a user can rename a
    /// directory of theirs holding an admin's immutable file into the
    /// tree, have the run lift and delete or replace it, and take the
    /// directory back.
    pub(crate) fn none_could_move_in(&self, d: &Dir) -> bool {
        self.chain_is_ours(d, false)
    }

    /// True when no user but psync's could have moved the directory `d`
    /// itself into the tree: the run's root, or a directory whose parent
    /// passes [`Engine::none_could_move_in`] (`d`'s own owner does not
    /// matter: renaming it takes writing in its parent).
    pub(crate) fn none_could_move(&self, d: &Dir) -> bool {
        self.chain_is_ours(d, true)
    }

    fn chain_is_ours(&self, d: &Dir, from_parent: bool) -> bool {
        use rustix::fs::{Mode, OFlags};
        let Some(root) = self.dst_root.as_ref() else {
            return false;
        };
        let Ok(top) = root.fstat() else {
            return false;
        };
        let me = crate::engine::euid();
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut held: Option<std::os::fd::OwnedFd> = None;
        for _ in 0..4096 {
            use std::os::fd::AsFd;
            let cur = held.as_ref().map_or(d.fd(), |fd| fd.as_fd());
            let Ok(st) = rustix::fs::fstat(cur) else {
                return false;
            };
            let first = held.is_none();
            if !(first && from_parent) && (st.st_uid != me || st.st_mode & 0o022 != 0) {
                return false;
            }
            if (st.st_dev, st.st_ino) == (top.st_dev, top.st_ino) {
                return true;
            }
            let Ok(up) = rustix::fs::openat(cur, "..", flags, Mode::empty()) else {
                return false;
            };
            // At `/` without passing the root: not in the tree any more.
            if rustix::fs::fstat(&up).is_ok_and(|u| (u.st_dev, u.st_ino) == (st.st_dev, st.st_ino))
            {
                return false;
            }
            held = Some(up);
        }
        false
    }

    /// Links or renames (`put`) a copy into `dir`. One whose project id
    /// differs from that of a directory that passes its own on
    /// (project-inherit) the kernel refuses (EXDEV): then the copy takes
    /// the directory's project id for the move and its own back once in
    /// place. `put`'s own error when that is not the reason.
    pub(crate) fn in_project_dir(
        &self,
        dir: &Dir,
        out: &std::fs::File,
        put: impl Fn() -> io::Result<()>,
    ) -> io::Result<()> {
        use std::os::fd::AsFd;
        match put() {
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                self.in_project_dir_as(dir, Node::Fd(out.as_fd()), None, put)
            }
            r => r,
        }
    }

    /// [`Engine::in_project_dir`] for the inode `file` reaches, given
    /// the project id `want` once in place (`None`: the one it has now).
    /// A hard-link group's inode, which other tasks may be linking into
    /// other directories meanwhile, is given its source's: what it has
    /// may be another directory's, for the moment.
    pub(crate) fn in_project_dir_as(
        &self,
        dir: &Dir,
        file: Node<'_>,
        want: Option<u32>,
        mut put: impl FnMut() -> io::Result<()>,
    ) -> io::Result<()> {
        let refused = || io::Error::from_raw_os_error(libc::EXDEV);
        let (Some(own), Some(theirs)) = (
            fsattr::get(file).ok().flatten(),
            fsattr::get(Node::Fd(dir.fd())).ok().flatten(),
        ) else {
            return Err(refused());
        };
        let want = want.unwrap_or(own.projid());
        if theirs.xflags() & fsattr::PROJINHERIT == 0
            || (theirs.projid() == own.projid() && theirs.projid() == want)
        {
            return Err(refused());
        }
        fsattr::set_projid(file, theirs.projid())?;
        let put = put();
        let back = fsattr::set_projid(file, want).map(|_| ());
        put.and(back)
    }

    /// Whether the flags or project id of `src`'s target may need a
    /// change: the listed flags differ, or (when xattrs would be compared)
    /// the others compare unequal (read by name, nothing written; an
    /// error says "maybe").
    pub(crate) fn fsattrs_differ(&self, src_dir: &Dir, d: &Dir, src: &Entry, dst: &Entry) -> bool {
        if !self.fsattrs_on() || !matches!(src.kind, Kind::File | Kind::Dir) {
            return false;
        }
        if crate::plan::listed_flags_differ(src, dst, &self.plan_opts) {
            return true;
        }
        // The other flags and the project id are read (a call per side)
        // only when the source's status changed after the target's: a
        // change of either bumps ctime. Not for every entry as the exact
        // xattr check does: that was a third more calls on a no-op
        // (30,000 files: 60,000 `file_getattr`, 20% of its time) for what
        // only an entry's owner changes on the target side (ADR 018).
        if !crate::plan::source_status_newer(src, dst, &self.plan_opts) {
            return false;
        }
        let how = FsAttrSync {
            protect: true,
            check_only: true,
            ..self.fsattr_how()
        };
        let (from, to) = (Node::At(src_dir, &src.name), Node::At(d, &src.name));
        self.copier
            .sync_fsattrs(from, to, how)
            .map_or(true, |r| r.changed)
    }

    /// Syncs the flags (immutable and append-only last) and project id of
    /// an existing target through `to` from `from`, after its other
    /// attributes. True when anything changed.
    pub(crate) fn fix_fsattrs(
        &self,
        path: &RelPath,
        (from, to): (Node<'_>, Node<'_>),
        (src, dst): (&Entry, &Entry),
    ) -> bool {
        if !self.fsattrs_on() || !matches!(src.kind, Kind::File | Kind::Dir) {
            return false;
        }
        let mut changed = false;
        // As `fsattrs_differ`, and wherever xattrs are compared (an
        // entry being fixed anyway: one more read).
        if crate::plan::source_status_newer(src, dst, &self.plan_opts)
            || crate::plan::xattrs_may_differ(src, dst, &self.plan_opts)
            || crate::plan::listed_flags_differ(src, dst, &self.plan_opts)
        {
            match self.copier.sync_fsattrs(from, to, self.fsattr_how()) {
                Ok(report) => {
                    self.report_fsattrs(path, &report);
                    changed |= report.changed;
                }
                Err(e) => self.fail(path, true, Op::FileAttr, e),
            }
        }
        match self.protect_of(src) {
            Some(bits) => changed |= self.set_protect(path, to, bits),
            // Not listed (a source that does not report them): read.
            None if self.protects(src) => {
                let how = FsAttrSync {
                    flags: true,
                    project_ids: false,
                    protect: true,
                    check_only: false,
                };
                if let Ok(Some(a)) = fsattr::get(from) {
                    match fsattr::sync_to(a, to, how) {
                        Ok(r) => {
                            self.report_fsattrs(path, &r);
                            changed |= r.changed;
                        }
                        Err(e) => self.fail(path, true, Op::FileAttr, e),
                    }
                }
            }
            None => {}
        }
        changed
    }

    /// A directory's own flags (but immutable and append-only) and
    /// project id, set when its task starts, before anything is made in
    /// it: its new entries inherit the project id and some flags. For a
    /// directory this run made, and one whose flags may differ (compared
    /// with the xattrs). And a target directory listed immutable or
    /// append-only is lifted when the plan writes in it; its finish sets
    /// them again. True when its flags or project id changed (in a dry
    /// run: differ), for its itemized line's `x`.
    pub(crate) fn start_dir_fsattrs(
        &self,
        rel: &RelPath,
        (src_dir, d): (&Dir, &Dir),
        (src, dst): (&Entry, Option<&Entry>),
        writes: bool,
    ) -> bool {
        if !self.fsattrs_on() {
            return false;
        }
        let due = dst.is_none_or(|dst| {
            crate::plan::source_status_newer(src, dst, &self.plan_opts)
                || crate::plan::xattrs_may_differ(src, dst, &self.plan_opts)
                || crate::plan::listed_flags_differ(src, dst, &self.plan_opts)
        });
        if self.dry_run {
            // What the real run would change (an error: not reported).
            let how = FsAttrSync {
                protect: true,
                check_only: true,
                ..self.fsattr_how()
            };
            let (from, to) = (Node::Fd(src_dir.fd()), Node::Fd(d.fd()));
            return dst.is_some()
                && due
                && self
                    .copier
                    .sync_fsattrs(from, to, how)
                    .is_ok_and(|r| r.changed);
        }
        let mut changed = false;
        if due {
            let (from, to) = (Node::Fd(src_dir.fd()), Node::Fd(d.fd()));
            match self.copier.sync_fsattrs(from, to, self.fsattr_how()) {
                Ok(report) => {
                    self.report_fsattrs(rel, &report);
                    changed = report.changed;
                }
                Err(e) => self.fail(rel, true, Op::FileAttr, e),
            }
        }
        if writes && dst.is_some_and(Entry::is_protected) && self.copy_opts.file_flags.on() {
            if self.none_could_move(d) {
                self.set_protect(rel, Node::Fd(d.fd()), 0);
            } else {
                let why = "immutable or append-only, in a directory another user could have \
                           moved into the tree: not lifted (`chattr -ia` it by hand if it is the copy)";
                self.fail(rel, true, Op::FileAttr, io::Error::other(why));
            }
        }
        changed
    }

    /// What the target could not take: an error when asked for
    /// explicitly ([`AttrMode::Required`]), else a warning, once per
    /// engine and kind (project ids, immutable/append-only, other flags)
    /// naming the first entry: a tree copied to tmpfs, or by a user
    /// without CAP_LINUX_IMMUTABLE, would otherwise warn once per file.
    pub(crate) fn report_fsattrs(&self, path: &RelPath, report: &FsAttrReport) {
        for d in &report.dropped {
            let (kind, mode, what, err) = match d {
                Dropped::ProjectId(id, e) => (
                    WARNED_PROJID,
                    self.copy_opts.project_ids,
                    format!("cannot set project id {id}: {e}"),
                    e,
                ),
                Dropped::Flags(bits, e) => (
                    if bits & PROTECT != 0 {
                        WARNED_PROTECT
                    } else {
                        WARNED_FLAGS
                    },
                    self.copy_opts.file_flags,
                    format!("cannot set file flags '{}': {e}", fsattr::letters(*bits)),
                    e,
                ),
            };
            if self.stop_if_unwritable(path, Op::FileAttr, err) {
                return;
            }
            if mode == AttrMode::Required {
                self.fail(path, true, Op::FileAttr, io::Error::new(err.kind(), what));
                continue;
            }
            if self.fsattr_warned.fetch_or(kind, Ordering::Relaxed) & kind != 0 {
                continue;
            }
            let what = format!("{what} (not reported again for other entries of this run)");
            self.warn(path, true, Op::FileAttr, &what);
        }
    }
}

/// A directory, or a regular file of one name: an inode whose flags the
/// run may lift (ADR 010: no inode a name outside the tree shares).
fn lone(st: &rustix::fs::Stat) -> bool {
    use rustix::fs::FileType;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => true,
        FileType::RegularFile => st.st_nlink == 1,
        _ => false,
    }
}
