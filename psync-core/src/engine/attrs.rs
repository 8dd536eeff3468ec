//! Attributes of target entries: owner, mode, times, xattrs and ACLs,
//! changed in place only on an inode the run accounts for (ADR 010), and
//! symlinks and specials made anew.

use super::{Engine, Here, Shared};
use crate::copy::{Copier, CopyOptions};
use crate::entry::{Entry, Kind, RelPath};
use crate::error::Op;
use crate::fs::Dir;
use crate::itemize::Change;
use crate::xattr::Node;
use std::io;

impl Engine {
    /// Applies the attributes of `src` to its existing target `dst`
    /// (xattrs/ACLs too when its status is newer) and itemizes what changed.
    /// The target is pinned by a handle first, and changed in place only
    /// when it is still the inode listed and has no more than `links`
    /// names (the names the run accounts for): an inode that another name
    /// shares, outside the tree or planted by a user, is never chowned,
    /// chmodded or given xattrs. With `Shared::Replace` such a target is
    /// replaced by a copy of the source instead; with `Shared::Refuse` it
    /// is left alone, reported. True when the directory's entries changed.
    pub(crate) fn fix_attrs(
        &self,
        here: Here<'_>,
        (src, dst): (&Entry, &Entry),
        mut change: Change,
        (links, shared): (u64, Shared),
    ) -> bool {
        let Here { rel, src_dir, dir } = here;
        // Built only when reported: most entries of a re-sync need nothing.
        let path = || rel.join(&src.name);
        let only_xattrs = !(change.perms || change.owner || change.group || change.time);
        if let Some(d) = dir.filter(|_| !self.dry_run) {
            // Only xattrs/ACLs to compare (every entry of a no-op run with
            // `-X`/`-A`): compared by name first, read-only, so an entry
            // that needs nothing costs no handle.
            if only_xattrs
                && !self.xattrs_differ(src_dir, d, src)
                && !self.fsattrs_differ(src_dir, d, src, dst)
            {
                self.count(|c| {
                    c.done += 1;
                    c.unchanged += 1;
                });
                return false;
            }
            let h = match d.handle(src.name.as_bytes()) {
                Ok(h) => h,
                Err(e) => {
                    self.fail(&path(), true, Op::Stat, e);
                    return false;
                }
            };
            if !self.fs.is(&h, dst) {
                self.count(|c| c.done += 1);
                let why = "replaced in the target during the run; its attributes were not set";
                self.warn(&path(), true, Op::Stat, why);
                return false;
            }
            #[allow(clippy::unnecessary_cast)]
            let has = h.stat.st_nlink as u64;
            if has > links {
                return self.shared_target(here, d, (src, dst), change, (has, links), shared);
            }
            // Data another user owns is not given to its source's owner in
            // place (a user may have planted a file that passes the quick
            // check, setuid bits and all): it is copied from the source.
            if shared == Shared::Replace && self.foreign_data(src, &h.stat) {
                self.replace_by_copy(
                    Here {
                        rel,
                        src_dir,
                        dir: Some(d),
                    },
                    src,
                    dst,
                    change,
                );
                return true;
            }
            // Owner and mode come from the task's entry: only while the
            // source still has them (see `apply_dir_attrs`).
            if !only_xattrs && node_as_listed(src_dir, src).is_err() {
                self.count(|c| c.done += 1);
                let why = "the source is not as listed (changed during the run?): \
                           its attributes are left for the next run";
                self.warn(&path(), false, Op::Stat, why);
                return false;
            }
            let from = self
                .xattr_source(Some(dst), src)
                .then_some(Node::At(src_dir, &src.name));
            // Only xattrs/ACLs to check: leave owner, mode and times alone.
            let (attrs, opts) = self.attrs_for(src, Some(dst.mode));
            // Immutable or append-only: lifted for the changes, set again
            // (as the source has them) after them.
            if !self.unlock(rel, d, dst) {
                self.count(|c| c.done += 1);
                return false;
            }
            let applied = match from {
                Some(from) if only_xattrs => self.sync_xattrs_only(from, h.node()),
                // Only flags or a project id to fix.
                None if only_xattrs => Ok(crate::xattr::XattrReport::default()),
                _ => self.copier.set_attrs(h.node(), &attrs, from, &opts),
            };
            match applied {
                Ok(report) => {
                    change.xattr |= report.xattrs_changed;
                    change.acl |= report.acl_changed;
                    if !report.dropped.is_empty() {
                        self.report_dropped(&path(), &report);
                    }
                    let nodes = (Node::At(src_dir, &src.name), h.node());
                    change.xattr |= self.fix_fsattrs(&path(), nodes, (src, dst));
                }
                Err(e) => {
                    self.fail(&path(), true, e.op, e.source);
                    return false;
                }
            }
        }
        // A dry run finds what the real run would change, read only;
        // `psync verify` counts what it cannot read as a difference.
        if let Some(d) = dir.filter(|_| self.verify_only) {
            let (xattr, acl) = self.xattr_changes(src_dir, d, src, dst);
            change.xattr |= xattr;
            change.acl |= acl;
        } else if let Some(d) = dir.filter(|_| self.dry_run) {
            if self.xattr_source(Some(dst), src) {
                let nodes = (Node::At(src_dir, &src.name), Node::At(d, &src.name));
                self.mark_xattrs(nodes, &mut change);
            }
            change.xattr |= self.fsattrs_differ(src_dir, d, src, dst);
        }
        self.count(|c| c.done += 1);
        if !change.any() {
            self.count(|c| c.unchanged += 1);
            return false;
        }
        self.itemize(path(), Some(change), src);
        self.count(|c| c.attrs_updated += 1);
        false
    }

    /// Replaces the target `dst` of `src` in `here` by a new copy of the
    /// source (a file's data, or a symlink or special made anew) instead of
    /// changing its inode in place.
    fn replace_by_copy(&self, here: Here<'_>, src: &Entry, dst: &Entry, change: Change) {
        let Here { rel, src_dir, dir } = here;
        let Some(d) = dir else { return };
        match src.kind {
            Kind::File => {
                let how = (Some(dst.mode), false, change, None);
                self.copy_file(rel, src_dir, d, src, how, None);
            }
            _ => self.replace_node(rel, src_dir, Some(d), src, Some(dst.mode), change),
        }
    }

    /// Whether the xattrs/ACLs of `src`'s target in `d` may need a change:
    /// false only when they are not to be compared at all, or compare
    /// equal (read by name, without writing; an error says "maybe").
    pub(crate) fn xattrs_differ(&self, src_dir: &Dir, d: &Dir, src: &Entry) -> bool {
        if !self.xattr_source_new() {
            return false;
        }
        let nodes = (Node::At(src_dir, &src.name), Node::At(d, &src.name));
        self.compare_xattrs(nodes)
            .map_or(true, |r| r.xattrs_changed || r.acl_changed)
    }

    /// Which of xattrs (or flags, project id) and ACLs of `src`'s target
    /// in `d` differ, read without writing (`psync verify`); one that
    /// cannot be read counts as differing.
    pub(super) fn xattr_changes(
        &self,
        src_dir: &Dir,
        d: &Dir,
        src: &Entry,
        dst: &Entry,
    ) -> (bool, bool) {
        let nodes = (Node::At(src_dir, &src.name), Node::At(d, &src.name));
        let (xattr, acl) = self.xattr_changes_of(nodes, src, dst);
        (xattr || self.fsattrs_differ(src_dir, d, src, dst), acl)
    }

    /// [`Engine::xattr_changes`] of xattrs and ACLs alone, between any two
    /// nodes (the roots: `psync verify`).
    pub(super) fn xattr_changes_of(
        &self,
        nodes: (Node<'_>, Node<'_>),
        src: &Entry,
        dst: &Entry,
    ) -> (bool, bool) {
        if !self.xattr_source(Some(dst), src) {
            return (false, false);
        }
        self.compare_xattrs(nodes)
            .map_or((true, false), |r| (r.xattrs_changed, r.acl_changed))
    }

    /// rsync's `x` and `a` of an existing target: marks in `change` what
    /// of its xattrs and ACLs differs from the source's, read by name or
    /// handle, nothing written. Nothing is marked when they are not
    /// compared, or cannot be read (syncing them reports that).
    pub(crate) fn mark_xattrs(&self, nodes: (Node<'_>, Node<'_>), change: &mut Change) {
        if !self.xattr_source_new() {
            return;
        }
        if let Ok(r) = self.compare_xattrs(nodes) {
            change.xattr |= r.xattrs_changed;
            change.acl |= r.acl_changed;
        }
    }

    /// Compares the xattrs and ACLs of two nodes as a sync would, writing
    /// nothing.
    pub(super) fn compare_xattrs(
        &self,
        (from, to): (Node<'_>, Node<'_>),
    ) -> std::io::Result<crate::xattr::XattrReport> {
        let how = crate::xattr::XattrSync {
            dst_empty: false,
            check_only: true,
            ..crate::xattr::XattrSync::of(&self.copy_opts)
        };
        self.copier.sync_xattrs(from, to, how)
    }

    /// A target whose attributes are due but whose inode has `has` names
    /// where the run accounts for `links`: replaced by a new copy (the
    /// other names keep the old inode, unchanged), or left alone.
    pub(super) fn shared_target(
        &self,
        here: Here<'_>,
        d: &Dir,
        (src, dst): (&Entry, &Entry),
        change: Change,
        (has, links): (u64, u64),
        shared: Shared,
    ) -> bool {
        let Here { rel, src_dir, .. } = here;
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
                self.replace_by_copy(
                    Here {
                        rel,
                        src_dir,
                        dir: Some(d),
                    },
                    src,
                    dst,
                    change,
                );
                true
            }
        }
    }

    /// Syncs a target's xattrs and ACLs from `from` and nothing else, for
    /// an entry whose owner, mode and times are already right (rewriting
    /// those would move the target's ctime for nothing).
    pub(super) fn sync_xattrs_only(
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
            if let Err(e) = node_as_listed(src_dir, src) {
                return self.fail(&path, false, Op::Stat, e);
            }
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
                    let rename = || d.rename(tmp.as_bytes(), src.name.as_bytes());
                    match rename() {
                        // An immutable or append-only file in the way.
                        Err(e)
                            if e.raw_os_error() == Some(libc::EPERM)
                                && self.unlock_name(d, &src.name) =>
                        {
                            rename()
                        }
                        r => r,
                    }
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
}

/// A special file is made from its entry alone, which in a broker's task
/// may be forged (a device node of the forger's choosing): it must be
/// what the source holds (one `lstat`; a symlink's target is only text).
pub(crate) fn node_as_listed(src_dir: &Dir, src: &Entry) -> io::Result<()> {
    // A symlink's mode means nothing (and is not set); its owner is.
    let seen = |e: &Entry| match e.kind {
        Kind::Symlink => (e.kind, 0, 0, e.uid, e.gid),
        _ => (e.kind, e.rdev, e.mode, e.uid, e.gid),
    };
    let st = src_dir.stat(src.name.as_bytes())?;
    if seen(&Entry::from_stat(src.name.clone(), &st)) == seen(src) {
        Ok(())
    } else {
        Err(io::Error::other("not the entry listed (changed since?)"))
    }
}
