//! Directory tasks: list both sides, plan, act on the cheap actions
//! (deletions, mkdir, symlinks, specials, attribute fixes), spawn the
//! subdirectories and batches, and finish (the directory's attributes
//! once everything inside it is done).

use super::{Engine, Here, Shared, clone_err, euid, fresh_dir_id, replaced_dir};
use crate::copy::Copier;
use crate::entry::{Entry, Kind, Name, RelPath};
use crate::error::{Error, Op};
use crate::event::Event;
use crate::fs::Dir;
use crate::itemize::Change;
use crate::plan::{Action, Planner, attr_change, is_linked};
use crate::subtree::Child;
use crate::task::{Task, split_names};
use crate::transport::TaskContext;
use crate::walk::{Listed, Names, Walker};
use crate::xattr::Node;
use std::io;
use std::sync::atomic::Ordering;

/// Small files travel together; a batch closes at this many files or bytes.
struct Batch {
    actions: Vec<Action>,
    bytes: u64,
}

/// A directory's actions in order, their memory given back as they are
/// taken (moved into batches, or done): a huge directory's actions are
/// not held twice, once in the plan and once in the batches spawned.
struct Taken {
    /// The actions not taken yet, last first.
    rev: Vec<Action>,
}

impl Taken {
    fn new(mut actions: Vec<Action>) -> Taken {
        actions.reverse();
        Taken { rev: actions }
    }
}

impl Iterator for Taken {
    type Item = Action;

    fn next(&mut self) -> Option<Action> {
        let action = self.rev.pop()?;
        // Shrunk in place by an eighth at a time (glibc's shrinking
        // `realloc` does not copy).
        let cap = self.rev.capacity();
        if cap >= 4096 && self.rev.len() <= cap - cap / 8 {
            self.rev.shrink_to_fit();
        }
        Some(action)
    }
}

/// What a directory's task found besides the entries it plans.
#[derive(Default)]
struct Found {
    /// Source names that could not be examined.
    unread: Vec<Name>,
    /// Target entries that are mount roots.
    mounts: Vec<Name>,
    /// Part files of large files on the target.
    parts: Vec<Name>,
    /// psync's own entries were removed (the directory's mtime moved).
    cleaned: bool,
}

/// What a directory's listings cover.
enum Scope<'a> {
    /// The whole directory, of these source and target entries.
    Whole(&'a Entry, Option<&'a Entry>),
    /// One part of a wide directory ([`Task::DirPart`]): its first name,
    /// a hash of all its names (the origin of its hard-link records), and
    /// whether the target directory is one this run made.
    Part {
        first: &'a [u8],
        names_hash: u128,
        fresh: bool,
    },
}

/// The part of a directory task's id summed by `dirs_spawned_ids` and
/// `dirs_run_ids`: its low 32 bits, of run 0 (the same in every run: two
/// runs of one tree count the same).
fn walk_id(task: &Task) -> u64 {
    u64::from(task.id(0).0 as u32)
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

impl Engine {
    /// Lists, plans and acts for one directory; one with more names than
    /// the run's `wide_dir` on either side is split in parts (ADR 021).
    pub(super) fn run_dir(
        &self,
        rel: &RelPath,
        src_entry: &Entry,
        (dst_entry, made): (Option<&Entry>, Option<(u64, u64)>),
        cx: &mut dyn TaskContext,
    ) {
        let most = self.wide_dir;
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
            self.count(|c| c.dirs += 1);
            self.itemize_dir(rel, (src_entry, dst_entry), None, false);
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
        let src_listed = match self.walker.list_or_names(&src_dir, most) {
            Ok(Listed::Names(names)) => {
                let dirs = (&src_dir, dst_dir.as_ref());
                let entries = (src_entry, dst_entry, made);
                return self.split_dir(rel, entries, dirs, (names, None), cx);
            }
            Ok(Listed::Entries(l)) => Ok(l),
            Err(e) => Err(e),
        };
        let src_listed = src_listed.and_then(|mut l| {
            self.copier.annotate(&src_dir, &mut l.entries)?;
            Ok(l)
        });
        let src = match src_listed {
            Ok(mut l) => {
                self.fs.name_listing(&src_dir, &mut l.entries);
                l
            }
            Err(e) => {
                // Its finish, too, works on the directory listed by the
                // parent's task, not one a user renamed to its path since.
                let at = match dst_dir.as_ref().map(|d| {
                    d.fstat()
                        .and_then(|st| self.check_dir(rel, (d, &st), dst_entry, made))
                }) {
                    Some(Ok(at)) => Some(at),
                    Some(Err(e)) => return self.fail(rel, true, Op::OpenDir, e),
                    None => made,
                };
                let on = (dst_entry, at);
                return self.unreadable_dir(rel, src_entry, on, Op::ReadDir, e, cx);
            }
        };
        // A directory this run made is listed too (empty, but for what an
        // earlier delivery of this task made in it: a broker delivers at
        // least once; the directory is psync's user's, mode 0700, until
        // its finish, so nobody else put entries there — unless that
        // delivery finished it itself, a leaf, and died before it was
        // acknowledged: then what is in it goes through the plan as any
        // target's entries do).
        let listed = match dst_dir.as_ref().map(|d| self.walker.list_or_names(d, most)) {
            // The target is the wide side: split all the same.
            Some(Ok(Listed::Names(names))) => {
                let mut src_names = Names::default();
                let failed = src.failed.iter().map(|(n, _)| n);
                for n in src.entries.iter().map(|e| &e.name).chain(failed) {
                    src_names.push(n.as_bytes());
                }
                drop(src);
                let dirs = (&src_dir, dst_dir.as_ref());
                let entries = (src_entry, dst_entry, made);
                return self.split_dir(rel, entries, dirs, (src_names, Some(names)), cx);
            }
            Some(Ok(Listed::Entries(l))) => Some(Ok(l)),
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        let (at, stale) = match self.listed_dir(rel, dst_dir.as_ref(), src_entry, (dst_entry, made))
        {
            Ok(found) => found,
            Err(e) => return self.fail(rel, true, Op::OpenDir, e),
        };
        let Some((src_entries, dst, found)) =
            self.pair_listings(rel, src, (dst_dir.as_ref(), listed), true)
        else {
            return;
        };
        let mut counted = Counted {
            cx,
            spawned: 0,
            again: false,
        };
        let dirs = (&src_dir, dst_dir.as_ref(), at);
        let scope = Scope::Whole(src_entry, dst_entry);
        let (touched, cleaned) =
            self.plan_and_act(rel, dirs, (src_entries, dst), found, scope, &mut counted);
        let (cx, leaf) = (counted.cx, counted.spawned == 0);
        // A directory whose times (or owner, mode) are not the source's
        // gets them at its finish even when this delivery changed nothing
        // in it: an earlier delivery may have, and lost its finish.
        let changed = touched || stale || cleaned;
        let finish = self.finish_task(rel, src_entry, (dst_entry, at.or(made)), changed);
        // A directory whose work was all done here (no subdirectory, no
        // task spawned: its files copied inline) is finished here too: one
        // task instead of three, which is what a broker's dispatch costs.
        // The root's finish starts the run's last phase: always deferred.
        // On every delivery alike: a task's deliveries count once (one
        // report is acknowledged), so a finish deferred by one of them and
        // run inline by another would count twice. (A later delivery that
        // races a batch an earlier one spawned may so finish before that
        // batch's last rename: ADR 016.)
        if leaf && !rel.is_root() && !self.quit.load(Ordering::Relaxed) {
            return self.run_task(finish, cx);
        }
        self.defer(cx, finish);
    }

    /// The target directory's identity, once it is known to be the one
    /// listed by the parent's task (or made by it), not another one a
    /// user renamed to its path since; nothing in it is changed before
    /// this check. And whether its attributes differ from the source's.
    /// Its status is taken after its listing: whatever changed its
    /// entries before the listing (an earlier delivery of this task,
    /// whose finish was lost, or the copies it spawned) shows in its
    /// times, and whatever will change them after shows in the plan.
    fn listed_dir(
        &self,
        rel: &RelPath,
        dst_dir: Option<&Dir>,
        src_entry: &Entry,
        (dst_entry, made): (Option<&Entry>, Option<(u64, u64)>),
    ) -> io::Result<(Option<(u64, u64)>, bool)> {
        let Some(d) = dst_dir else {
            return Ok((None, false));
        };
        let st = d.fstat()?;
        let at = self.check_dir(rel, (d, &st), dst_entry, made)?;
        let stale = dst_entry.is_some() && self.dir_attrs_stale(src_entry, &st);
        Ok((Some(at), stale))
    }

    /// The two listings of a directory (or of a part of one) as the plan
    /// takes them, and what was found on the way: source entries that
    /// cannot be examined fail and are kept from deletion, the entries are
    /// counted as scanned (with the directory itself when `whole`), and
    /// the target's listing goes through [`Engine::take_dst`]. `None`: the
    /// target could not be listed (failed, nothing to do).
    fn pair_listings(
        &self,
        rel: &RelPath,
        src: crate::walk::Listing,
        (dst_dir, listed): (Option<&Dir>, Option<io::Result<crate::walk::Listing>>),
        whole: bool,
    ) -> Option<(Vec<Entry>, Vec<Entry>, Found)> {
        let mut found = Found::default();
        for (name, e) in src.failed {
            found.unread.push(name.clone());
            self.fail(&rel.join(&name), false, Op::Stat, e);
        }
        self.count_scanned(&src.entries, whole);
        let mut src_entries = src.entries;
        let dst = match (dst_dir, listed) {
            (Some(d), Some(Ok(l))) => self.take_dst(d, rel, l, &mut src_entries, &mut found),
            (Some(_), Some(Err(e))) => {
                self.fail(rel, true, Op::ReadDir, e);
                return None;
            }
            _ => Vec::new(),
        };
        Some((src_entries, dst, found))
    }

    /// The target's listing as the plan takes it: entries that cannot be
    /// examined left alone (their source entries too), mount roots set
    /// aside (`found.mounts`), psync's own temporaries removed or hidden
    /// and part files set aside (`found.parts`).
    fn take_dst(
        &self,
        d: &Dir,
        rel: &RelPath,
        mut l: crate::walk::Listing,
        src_entries: &mut Vec<Entry>,
        found: &mut Found,
    ) -> Vec<Entry> {
        // A target entry that cannot be examined is left alone.
        for (name, e) in l.failed {
            src_entries.retain(|s| s.name != name);
            self.fail(&rel.join(&name), true, Op::Stat, e);
        }
        // Mount roots first: not even a stale temporary's name makes
        // psync remove one.
        l.entries.retain(|e| {
            let keep = !e.mount_root;
            if !keep {
                found.mounts.push(e.name.clone());
            }
            keep
        });
        self.fs.name_listing(d, &mut l.entries);
        let (kept, removed) = self.drop_temporaries(d, rel, l.entries, &mut found.parts);
        // Stale temporaries or parts removed: the directory's mtime moved.
        found.cleaned |= removed;
        kept
    }

    /// Plans the listings of a directory (or of one part of a wide one)
    /// and acts. Returns whether its entries changed (added, removed or
    /// replaced), and whether psync's own were removed.
    fn plan_and_act(
        &self,
        rel: &RelPath,
        (src_dir, dst_dir, at): (&Dir, Option<&Dir>, Option<(u64, u64)>),
        (mut src_entries, mut dst): (Vec<Entry>, Vec<Entry>),
        found: Found,
        scope: Scope<'_>,
        cx: &mut Counted<'_>,
    ) -> (bool, bool) {
        let Found {
            unread,
            mounts,
            parts,
            mut cleaned,
        } = found;
        // Borrowed: cloning the options (their group list) for every
        // directory would cost a no-op run an allocation per directory.
        let mut plan_opts = std::borrow::Cow::Borrowed(&self.plan_opts);
        if !unread.is_empty() {
            // Never delete what the source could not be read to confirm:
            // neither the failed names nor, as rsync, anything else here
            // (in a wide directory: in this part).
            dst.retain(|e| !unread.contains(&e.name));
            if plan_opts.delete {
                plan_opts.to_mut().delete = false;
                let msg = match &scope {
                    Scope::Whole(..) => {
                        "source entries could not be read: nothing deleted in this directory"
                            .to_string()
                    }
                    // The other parts' names are in the source's complete
                    // listing, or confirmed absent from it (ADR 021).
                    Scope::Part { first, .. } => {
                        let last = src_entries
                            .iter()
                            .chain(&dst)
                            .map(|e| e.name.as_bytes())
                            .chain(unread.iter().map(Name::as_bytes))
                            .max()
                            .unwrap_or(first);
                        format!(
                            "source entries could not be read: nothing deleted among the names of its part of this wide directory, from {:?} to {:?} (names in between that other parts hold are synced)",
                            String::from_utf8_lossy(first),
                            String::from_utf8_lossy(last)
                        )
                    }
                };
                self.warn(rel, false, Op::ReadDir, &msg);
            }
        }
        if !plan_opts.filters.is_empty() {
            // A wide directory's `--files-from` paths are looked for by
            // its own task, which has all its names.
            let whole = matches!(scope, Scope::Whole(..));
            self.apply_filters(rel, &mut src_entries, &mut dst, whole);
        }
        self.leave_mount_roots(rel, &mounts, &mut src_entries, plan_opts.delete);
        self.skip_by_copier(rel, &mut src_entries, &mut dst);
        let non_dirs = src_entries.iter().filter(|e| !e.is_dir()).count();
        // The listings are needed past the plan only to audit it, or to
        // find the hard-linked names planned as nothing (`members`);
        // otherwise the planner may free them as it plans.
        let keep = self.verify_only
            || self.manifest
            || src_entries.iter().any(|e| is_linked(e, &self.plan_opts));
        let (actions, listings) = if keep {
            let actions = self.planner.plan(&src_entries, &dst, &plan_opts);
            (actions, Some((src_entries, dst)))
        } else {
            (self.planner.plan_owned(src_entries, dst, &plan_opts), None)
        };
        if let Some((src_entries, dst)) = &listings
            && (self.verify_only || self.manifest)
        {
            self.audit_dir(rel, src_dir, (src_entries, dst), &actions);
        }
        if let (Some(d), Scope::Whole(src_entry, dst_entry)) = (dst_dir, &scope) {
            let writes = actions.iter().any(|a| {
                !matches!(
                    a,
                    Action::Descend { .. } | Action::TooYoung { .. } | Action::Attrs { .. }
                )
            });
            let dirs = (src_dir, d);
            // The root is lifted for the link area when that is made.
            let flags =
                self.start_dir_fsattrs(rel, dirs, (src_entry, *dst_entry), writes || cleaned);
            self.itemize_dir(rel, (src_entry, *dst_entry), Some(dirs), flags);
        }
        cleaned |= self.drop_unused_parts(dst_dir, rel, &parts, &actions);
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
        let unchanged = non_dirs.saturating_sub(acted);
        self.count(|c| {
            c.unchanged += unchanged as u64;
            c.done += unchanged as u64;
        });
        let fresh = match scope {
            Scope::Whole(_, dst_entry) => {
                if let Some(d) = dst_dir.filter(|_| dst_entry.is_none()) {
                    self.adopt_default_acl(rel, src_dir, d);
                }
                dst_entry.is_none() && !dst_dir.is_some_and(passes_on_acl)
            }
            Scope::Part { fresh, .. } => fresh,
        };
        // The walk's hard-link records of this directory, or of this part.
        let origin = match scope {
            Scope::Whole(..) => crate::engine::links::WALK.to_vec(),
            // Named by all the part's names: another delivery's part
            // that starts at the same name (a source that changed between
            // the two) keeps records of its own; the same part delivered
            // again writes the same.
            Scope::Part { names_hash, .. } => {
                let hex = format!("/{names_hash:032x}");
                [crate::engine::links::WALK, hex.as_bytes()].concat()
            }
        };
        if let Some((src_entries, dst)) = &listings {
            if !self.dry_run {
                self.record_members(rel, at, (src_entries, dst), &actions, &origin);
            } else if dst_dir.is_some() && self.dry_links.is_some() {
                self.note_dry_members(rel, src_entries, dst, &actions);
            }
        }
        // Not needed past the plan: a huge directory's listings are freed
        // before its actions are carried out.
        drop(listings);
        let touched = self.act(rel, src_dir, (dst_dir, at), (fresh, &origin), actions, cx);
        if let Some(d) = dst_dir.filter(|_| touched) {
            // Deletions, new directories, symlinks and specials.
            self.sync_dir(rel, d);
        }
        (touched, cleaned)
    }

    /// A wide directory's own task (ADR 021): with the names of both
    /// sides only, it looks for `--files-from` paths, removes stale
    /// temporaries, itemizes the directory, cuts the names into ranges
    /// and spawns a [`Task::DirPart`] for each, then defers its finish,
    /// which runs after every part and all they spawned. `src` holds the
    /// source's names, `dst` the target's when it was read already.
    fn split_dir(
        &self,
        rel: &RelPath,
        (src_entry, dst_entry, made): (&Entry, Option<&Entry>, Option<(u64, u64)>),
        (src_dir, dst_dir): (&Dir, Option<&Dir>),
        (mut src, dst): (Names, Option<Names>),
        cx: &mut dyn TaskContext,
    ) {
        let mut dst = match (dst_dir, dst) {
            (None, _) => Names::default(),
            (Some(_), Some(names)) => names,
            (Some(d), None) => match self.walker.list_or_names(d, 0) {
                Ok(Listed::Names(names)) => names,
                // Empty (or a walker that always lists).
                Ok(Listed::Entries(l)) => {
                    let mut names = Names::default();
                    let failed = l.failed.iter().map(|(n, _)| n);
                    for n in l.entries.iter().map(|e| &e.name).chain(failed) {
                        names.push(n.as_bytes());
                    }
                    names
                }
                Err(e) => return self.fail(rel, true, Op::ReadDir, e),
            },
        };
        let (at, _) = match self.listed_dir(rel, dst_dir, src_entry, (dst_entry, made)) {
            Ok(found) => found,
            Err(e) => return self.fail(rel, true, Op::OpenDir, e),
        };
        src.sort();
        dst.sort();
        // The union of both sides' names, but psync's own on the target
        // that the source lacks: its temporaries, seen to here.
        let mut union = Names::default();
        // Which of the union's names the source has: the parts are cut
        // at fixed counts of those.
        let mut from_src = Vec::new();
        let mut temps = Names::default();
        let mut part_files = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < src.len() || j < dst.len() {
            let (s, d) = (
                (i < src.len()).then(|| src.get(i)),
                (j < dst.len()).then(|| dst.get(j)),
            );
            match (s, d) {
                (Some(s), Some(d)) if s == d => {
                    union.push(s);
                    from_src.push(true);
                    (i, j) = (i + 1, j + 1);
                }
                (Some(s), d) if d.is_none_or(|d| s < d) => {
                    union.push(s);
                    from_src.push(true);
                    i += 1;
                }
                (_, None) => unreachable!("one side has names left"),
                (_, Some(d)) => {
                    let name = Name(d.to_vec());
                    if crate::engine::bigfile::part_name_key(&name).is_some() {
                        part_files.push(name);
                    } else if crate::engine::temp_run_id(&name).is_some() {
                        temps.push(d);
                    } else {
                        union.push(d);
                        from_src.push(false);
                    }
                    j += 1;
                }
            }
        }
        let mut found = Found::default();
        if !self.plan_opts.filters.is_empty() {
            self.missing_listed(rel, |first| {
                let i = src.find(first)?;
                src_dir
                    .stat(src.get(i))
                    .ok()
                    .map(|st| Entry::from_stat(Name(Vec::new()), &st).kind)
            });
        }
        if let Some(d) = dst_dir.filter(|_| !part_files.is_empty()) {
            found.cleaned |= self.drop_unused_parts_of(rel, (src_dir, d), &src, &part_files);
        }
        drop((src, dst));
        if let Some(d) = dst_dir.filter(|_| !temps.is_empty()) {
            let temps: Vec<&[u8]> = temps.iter().collect();
            match self.walker.list_some(d, &temps) {
                Ok(l) => {
                    let mut none = Vec::new();
                    let kept = self.take_dst(d, rel, l, &mut none, &mut found);
                    debug_assert!(kept.is_empty() && found.parts.is_empty());
                    // The source lacks these names: a mount root there is
                    // an error only under --delete.
                    self.leave_mount_roots(rel, &found.mounts, &mut none, self.plan_opts.delete);
                }
                Err(e) => return self.fail(rel, true, Op::ReadDir, e),
            }
        }
        drop(temps);
        self.count(|c| c.dirs += 1);
        if let Some(d) = dst_dir {
            let dirs = (src_dir, d);
            // The parts' writes are not known yet: the directory is lifted
            // as for writes, and sealed again at its finish; one that may
            // not be lifted is left as it is, the parts' writes into it
            // failing (a no-op re-sync of it does not).
            let locked = dst_entry.is_some_and(Entry::is_protected)
                && self.copy_opts.file_flags.on()
                && !self.none_could_move(d);
            if locked && !self.dry_run {
                let why = "immutable or append-only, in a directory another user could have \
                           moved into the tree: not lifted, its parts' changes will fail \
                           (`chattr -ia` it by hand if it is the copy)";
                self.warn(rel, true, Op::FileAttr, why);
            }
            let flags = self.start_dir_fsattrs(rel, dirs, (src_entry, dst_entry), !locked);
            self.itemize_dir(rel, (src_entry, dst_entry), Some(dirs), flags);
            if dst_entry.is_none() {
                self.adopt_default_acl(rel, src_dir, d);
            }
        }
        let fresh = dst_entry.is_none() && !dst_dir.is_some_and(passes_on_acl);
        let recheck = cx.delivery() > 1;
        // Each part spawned as it is cut: the union is held once.
        cut_parts(&union, &from_src, self.part_names(), |names, only_dst| {
            let task = Task::DirPart {
                rel: rel.clone(),
                names,
                only_dst,
                at,
                fresh,
                recheck,
            };
            self.spawn_dir(cx, task);
        });
        // Its entries may have changed (the parts'): compared again, and
        // set, at its finish.
        self.defer(
            cx,
            self.finish_task(rel, src_entry, (dst_entry, at.or(made)), true),
        );
    }

    /// Whether the target directory `d`, as it is now, still needs any of
    /// `src`'s attributes (its mode, owner, times; with `xattrs` its
    /// xattrs and ACLs, compared without writing): one `fstat`.
    fn dir_needs_attrs(&self, rel: &RelPath, src: &Entry, d: &Dir, xattrs: bool) -> bool {
        let Ok(st) = d.fstat() else {
            return true;
        };
        let now = Entry::from_stat(src.name.clone(), &st);
        if attr_change(src, &now, &self.plan_opts).any() {
            return true;
        }
        xattrs
            && self.src_root.open_beneath(rel).map_or(true, |s| {
                self.compare_xattrs((Node::Fd(s.fd()), Node::Fd(d.fd())))
                    .map_or(true, |r| r.xattrs_changed || r.acl_changed)
            })
    }

    /// Source names in one part of a wide directory: an eighth of the
    /// threshold, at most 2,048 (and fewer target-only names among them;
    /// see [`cut_parts`]). Every thread may hold one part's listings and
    /// plan (about 1 KiB a name), so a part stays at a few MiB whatever
    /// the thread count (ADR 021).
    fn part_names(&self) -> usize {
        (self.wide_dir / 8).clamp(1, 2048)
    }

    /// A wide directory's part files of large files (interrupted copies)
    /// that no copy of this run resumes, removed: whether one is resumed
    /// depends on the plan of its source. Its large files are found
    /// among the source's `names` and planned alone (`plan` of a name is
    /// the same alone as among the others). Rare: after an interrupted
    /// copy of a large file. True when it removed any.
    fn drop_unused_parts_of(
        &self,
        rel: &RelPath,
        (src_dir, d): (&Dir, &Dir),
        names: &Names,
        part_files: &[Name],
    ) -> bool {
        let names: Vec<&[u8]> = names.iter().collect();
        let mut bigs = Vec::new();
        for chunk in names.chunks(self.part_names()) {
            let Ok(mut l) = self.walker.list_some(src_dir, chunk).and_then(|mut l| {
                self.copier.annotate(src_dir, &mut l.entries)?;
                Ok(l)
            }) else {
                // Unknown: none removed.
                return false;
            };
            l.entries.retain(|e| self.is_big(e));
            bigs.append(&mut l.entries);
        }
        self.fs.name_listing(src_dir, &mut bigs);
        let big_names: Vec<&[u8]> = bigs.iter().map(|e| e.name.as_bytes()).collect();
        let Ok(l) = self.walker.list_some(d, &big_names) else {
            return false;
        };
        let mut dst = l.entries;
        dst.retain(|e| !e.mount_root);
        self.fs.name_listing(d, &mut dst);
        if !self.plan_opts.filters.is_empty() {
            self.apply_filters(rel, &mut bigs, &mut dst, false);
        }
        let actions = self.planner.plan(&bigs, &dst, &self.plan_opts);
        self.drop_unused_parts(Some(d), rel, part_files, &actions)
    }

    /// One part of a wide directory ([`Task::DirPart`]): its names looked
    /// up on both sides, planned, and acted on as a directory's are.
    pub(super) fn run_dir_part(
        &self,
        rel: &RelPath,
        (names, only_dst): (&[u8], &[u8]),
        (at, fresh, recheck): (Option<(u64, u64)>, bool, bool),
        cx: &mut dyn TaskContext,
    ) {
        self.count(|c| c.dir_parts += 1);
        let names_hash = {
            let mut h = twox_hash::XxHash3_128::new();
            for list in [names, only_dst] {
                h.write(&(list.len() as u64).to_le_bytes());
                h.write(list);
            }
            h.finish_128()
        };
        let Some(names) = part_names(names, only_dst) else {
            let why = "a part of a wide directory names entries that are no names of it, or out of order: nothing done";
            return self.fail(rel, false, Op::ReadDir, io::Error::other(why));
        };
        let src_dir = match self.src_root.open_beneath(rel) {
            Ok(d) if self.other_source_fs(rel, &d) => {
                let why = "the source directory is on another file system than when it was listed: nothing done";
                return self.fail(rel, false, Op::OpenDir, io::Error::other(why));
            }
            Ok(d) => d,
            Err(e) => return self.fail(rel, false, Op::OpenDir, e),
        };
        let dst_dir = match at {
            // A dry run of a directory the run would make.
            None if self.dry_run => None,
            None => {
                let why = "the task does not say which directory it is for: nothing done in it";
                return self.fail(rel, true, Op::OpenDir, io::Error::other(why));
            }
            Some(_) => match self.open_dst_at(rel, at) {
                Ok(d) if !rel.is_root() && d.is_mount_root() => {
                    return self.fail(rel, true, Op::OpenDir, crate::subtree::mount_point(rel));
                }
                Ok(d) => Some(d),
                Err(e) => return self.fail(rel, true, Op::OpenDir, e),
            },
        };
        let src = match self.walker.list_some(&src_dir, &names).and_then(|mut l| {
            self.copier.annotate(&src_dir, &mut l.entries)?;
            Ok(l)
        }) {
            Ok(mut l) => {
                self.fs.name_listing(&src_dir, &mut l.entries);
                l
            }
            Err(e) => return self.fail(rel, false, Op::ReadDir, e),
        };
        let listed = dst_dir.as_ref().map(|d| self.walker.list_some(d, &names));
        let Some((src_entries, dst, found)) =
            self.pair_listings(rel, src, (dst_dir.as_ref(), listed), false)
        else {
            return;
        };
        let first = names.first().copied().unwrap_or_default();
        let mut counted = Counted {
            cx,
            spawned: 0,
            again: recheck,
        };
        let dirs = (&src_dir, dst_dir.as_ref(), at);
        let scope = Scope::Part {
            first,
            names_hash,
            fresh,
        };
        // The directory's finish sets its times whatever the parts did.
        self.plan_and_act(rel, dirs, (src_entries, dst), found, scope, &mut counted);
    }

    /// Leaves out the entries the run's filters exclude (rsync's
    /// `--exclude`, and what `--files-from` does not list): a source
    /// entry is neither copied nor descended into; a target entry the
    /// source lacks is kept from `--delete` unless `--delete-excluded`
    /// (and always above the listed paths). One path buffer per directory, reused for
    /// every entry; a run without filters never gets here.
    fn apply_filters(
        &self,
        rel: &RelPath,
        src: &mut Vec<Entry>,
        dst: &mut Vec<Entry>,
        whole: bool,
    ) {
        let filters = &self.plan_opts.filters;
        if whole {
            self.missing_listed(rel, |first| {
                let found = src.binary_search_by(|s| s.name.as_bytes().cmp(first));
                found.ok().map(|i| src[i].kind)
            });
        }
        let mut path = Vec::with_capacity(rel.as_bytes().len() + 64);
        path.extend_from_slice(rel.as_bytes());
        if !path.is_empty() {
            path.push(b'/');
        }
        let at = path.len();
        let set = |path: &mut Vec<u8>, e: &Entry| {
            path.truncate(at);
            path.extend_from_slice(e.name.as_bytes());
        };
        // --files-from: above the listed paths, only the way to them.
        let implied = filters.scope(rel.as_bytes()) == crate::filter::Scope::Implied;
        src.retain(|e| {
            set(&mut path, e);
            !filters.excluded(&path, at, e.is_dir()) && (!implied || filters.on_the_list(&path))
        });
        let in_src =
            |src: &[Entry], e: &Entry| src.binary_search_by(|s| s.name.cmp(&e.name)).is_ok();
        if implied {
            // Nothing is deleted there, as rsync deletes only in the
            // directories it sends whole.
            dst.retain(|e| in_src(src, e));
        } else if !filters.delete_excluded {
            // An excluded target entry whose name a kept source entry has
            // (a rule for directories only, the other side a file) is
            // planned as any other.
            dst.retain(|e| {
                set(&mut path, e);
                !filters.excluded(&path, at, e.is_dir()) || in_src(src, e)
            });
        }
    }

    /// --files-from: a listed path the source lacks is an error, as
    /// rsync's (exit 23), reported by the directory where its way ends.
    /// `kind_of` gives the kind of a source entry of this directory by
    /// name (`None`: there is none).
    fn missing_listed(&self, rel: &RelPath, kind_of: impl Fn(&[u8]) -> Option<Kind>) {
        let filters = &self.plan_opts.filters;
        // `last`: the first component looked up last, and the kind the
        // source has it as.
        let mut last: (&[u8], Option<Kind>) = (&[], None);
        for below in filters.listed_below(rel.as_bytes()) {
            let first = below.split(|&c| c == b'/').next().unwrap_or(below);
            if first != last.0 {
                last = (first, kind_of(first));
            }
            // Absent, or a path below a name that is no directory (rsync
            // follows a symlink there; psync no symlink of the source).
            let why = match last.1 {
                None => "--files-from path not found in the source",
                Some(Kind::Dir) => continue,
                Some(_) if below.len() == first.len() => continue,
                Some(Kind::Symlink) => {
                    "--files-from path not found in the source: below a symlink, not followed"
                }
                Some(_) => "--files-from path not found in the source: below a non-directory",
            };
            let missing = rel.join(&Name(below.to_vec()));
            self.fail(
                &missing,
                false,
                Op::Stat,
                io::Error::new(io::ErrorKind::NotFound, why),
            );
        }
    }

    /// True when the target directory whose status is `st` differs from
    /// its source `src` in what its finish sets (owner, mode, times).
    fn dir_attrs_stale(&self, src: &Entry, st: &rustix::fs::Stat) -> bool {
        // No name: nothing allocated per directory.
        let now = Entry::from_stat(Name(Vec::new()), st);
        attr_change(src, &now, &self.plan_opts).any()
    }

    /// The identity of the target directory `d` whose status is `st`, once
    /// it is known to be the one the parent's task listed (`dst`) or made
    /// (`made`, taken at its `mkdirat`): a user who can rename in the
    /// parent may have put another directory there.
    pub(super) fn check_dir(
        &self,
        rel: &RelPath,
        (d, st): (&Dir, &rustix::fs::Stat),
        dst: Option<&Entry>,
        made: Option<(u64, u64)>,
    ) -> io::Result<(u64, u64)> {
        #[allow(clippy::unnecessary_cast)]
        let id = (self.fs.of(st.st_dev as u64, d.fd()), st.st_ino as u64);
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
    pub(super) fn foreign_dir(&self, rel: &RelPath, src: &Entry, dst: &Entry) -> bool {
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
    pub(super) fn leave_mount_roots(
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

    pub(super) fn finish_task(
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
            pass: 0,
        }
    }

    /// `-x`: true for a source directory below the root on another file
    /// system (another device, or a mount of the same one). The device is
    /// the open directory's, not its listing's: the listing may have been
    /// made on another node, and a network file system's device number
    /// differs from node to node (`src_dev` is this engine's root's).
    pub(super) fn other_source_fs(&self, rel: &RelPath, dir: &Dir) -> bool {
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

    /// Itemizes the attribute changes of an existing target directory,
    /// the root's too (`./`), applied at its finish: owner, mode and times
    /// as listed, xattrs and ACLs as read from `dirs` (source, target)
    /// when these are compared, and `flags` (its inode flags or project
    /// id changed, or in a dry run would: `x`). Before anything in it
    /// changes, as rsync itemizes a directory before its entries.
    pub(super) fn itemize_dir(
        &self,
        rel: &RelPath,
        (src, dst): (&Entry, Option<&Entry>),
        dirs: Option<(&Dir, &Dir)>,
        flags: bool,
    ) {
        let Some(dst) = dst.filter(|_| self.itemize) else {
            return;
        };
        let mut change = attr_change(src, dst, &self.plan_opts);
        change.xattr |= flags;
        if let Some((s, d)) = dirs {
            let nodes = (Node::Fd(s.fd()), Node::Fd(d.fd()));
            if self.verify_only {
                // `psync verify`: what cannot be read differs too.
                let (xattr, acl) = self.xattr_changes_of(nodes, src, dst);
                (change.xattr, change.acl) = (change.xattr | xattr, change.acl | acl);
            } else if self.xattr_source(Some(dst), src) {
                self.mark_xattrs(nodes, &mut change);
            }
        }
        if change.any() {
            self.itemize(rel.clone(), Some(change), src);
        }
    }

    /// A source directory that cannot be read: reported, and its target
    /// still gets the source's attributes (as rsync does), so a copy of a
    /// mode-000 directory is mode 000 too.
    pub(super) fn unreadable_dir(
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
        self.count(|c| c.failed += 1);
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
    pub(super) fn itemize_tree(&self, dir: &Dir, path: &RelPath, entry: &Entry, with_self: bool) {
        if entry.kind != Kind::Dir {
            if with_self {
                self.itemize(path.clone(), None, entry);
            }
            return;
        }
        self.each_removed(dir, path, entry, |p, e| {
            if with_self || p != path {
                self.itemize(p.clone(), None, e);
            }
        });
    }

    /// Calls `f` with each entry of the target tree `entry` of `dir` (at
    /// `path`) that its removal deletes, children before their directory,
    /// `entry` last: nothing below a mount point, and not the mount root
    /// (the removal stops there). Iterative (`subtree::walk`).
    fn each_removed(
        &self,
        dir: &Dir,
        path: &RelPath,
        entry: &Entry,
        mut f: impl FnMut(&RelPath, &Entry),
    ) {
        // In this node's terms: the walk checks it with `fstat`.
        let top = Child::of(&self.fs.local(entry));
        let _ = crate::subtree::walk(
            dir,
            top,
            path,
            &mut |d, _| Ok(d.list()?.entries.iter().map(Child::of).collect()),
            &mut |_, p, c| {
                if let Some(e) = c.entry.as_ref().filter(|e| !e.mount_root) {
                    f(p, e);
                }
                Ok(())
            },
        );
    }

    /// Spawns a directory's task, counted for [`crate::Snapshot::walk_done`]
    /// (its run counts itself: [`Engine::count_dir_run`]).
    fn spawn_dir(&self, cx: &mut dyn TaskContext, task: Task) {
        let id = walk_id(&task);
        self.count(|c| c.dirs_spawned_ids += id);
        cx.spawn(task);
    }

    /// Counts a directory's task as run, whatever its outcome, for
    /// [`crate::Snapshot::walk_done`] (the root, which no task spawned,
    /// is not counted).
    pub(super) fn count_dir_run(&self, task: &Task) {
        // A part of the root's was spawned by the root's task.
        if !task.rel().is_root() || matches!(task, Task::DirPart { .. }) {
            let id = walk_id(task);
            self.count(|c| c.dirs_run_ids += id);
        }
    }

    /// Counts listed source entries, and their directory unless `dir` is
    /// false (a part of a wide directory: counted by its own task).
    pub(super) fn count_scanned(&self, entries: &[Entry], dir: bool) {
        let bytes: u64 = entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.size)
            .sum();
        self.count(|c| {
            c.scanned += entries.len() as u64;
            c.dirs += u64::from(dir);
            c.bytes_total += bytes;
        });
    }

    /// Without root, a target directory of ours whose mode lacks owner
    /// read, write or search (an earlier copy of a read-only source
    /// directory, or one a user closed) is opened up for the run before it
    /// is opened and listed, as rsync does; its finish restores the mode.
    /// Changed through its parent (an `O_PATH` fd, `chmod` via
    /// `/proc/self/fd`): it cannot be opened for reading before.
    pub(super) fn ensure_open(&self, rel: &RelPath, dst: &Entry) {
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
                if self.fs.is(&h, dst) {
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
    pub(super) fn opens_up(&self, dst: Option<&Entry>) -> bool {
        dst.is_some_and(|d| {
            !self.dry_run
                && !self.copy_opts.can_chown
                && d.mode & 0o700 != 0o700
                && d.uid == rustix::process::geteuid().as_raw()
        })
    }

    /// A hard-linked name's action to compare its xattrs, ACLs, flags and
    /// project id (nothing else due, its source's status newer): with
    /// nothing marked it would be recorded like a member, which needs
    /// nothing, and never compared. Compared here (read by name, nothing
    /// written): marked `x` when anything differs, so that the last phase
    /// fixes it (`fix_linked_attrs`).
    fn linked_xattr_check(&self, src_dir: &Dir, dst: Option<&Dir>, action: Action) -> Action {
        match action {
            Action::Attrs {
                src,
                dst: old,
                mut change,
            } if !change.any() => {
                change.xattr = dst.is_some_and(|d| {
                    (self.xattr_source(Some(&old), &src) && self.xattrs_differ(src_dir, d, &src))
                        || self.fsattrs_differ(src_dir, d, &src, &old)
                });
                Action::Attrs {
                    src,
                    dst: old,
                    change,
                }
            }
            other => other,
        }
    }

    /// A file copied (or compared, `-c`) over an existing target, with
    /// `-i`: marks `x` and `a` when the old target's xattrs and ACLs
    /// differ from the source's, as rsync itemizes them (the copy gets the
    /// source's either way).
    fn mark_replaced_xattrs(&self, src_dir: &Dir, dir: Option<&Dir>, action: Action) -> Action {
        let (Some(d), true) = (dir, self.itemize) else {
            return action;
        };
        match action {
            Action::Copy {
                src,
                dst: Some(old),
                mut change,
            } if !change.new && self.xattr_source(Some(&old), &src) => {
                let nodes = (Node::At(src_dir, &src.name), Node::At(d, &src.name));
                self.mark_xattrs(nodes, &mut change);
                Action::Copy {
                    src,
                    dst: Some(old),
                    change,
                }
            }
            Action::Compare {
                src,
                dst: old,
                mut change,
            } if self.xattr_source(Some(&old), &src) => {
                let nodes = (Node::At(src_dir, &src.name), Node::At(d, &src.name));
                self.mark_xattrs(nodes, &mut change);
                Action::Compare {
                    src,
                    dst: old,
                    change,
                }
            }
            other => other,
        }
    }

    /// Carries out the actions of one directory; returns whether any entry
    /// of the target directory was added, removed or replaced.
    pub(super) fn act(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        (dst, at): (Option<&Dir>, Option<(u64, u64)>),
        (fresh, origin): (bool, &[u8]),
        actions: Vec<Action>,
        cx: &mut Counted<'_>,
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
        for action in Taken::new(actions) {
            // Stopped (interrupt, or a target that cannot be written):
            // nothing more is changed here.
            if self.quit.load(Ordering::Relaxed) {
                break;
            }
            if !blocked.is_empty() && blocked.contains(action.name()) {
                continue;
            }
            let action = self.mark_replaced_xattrs(src_dir, dst, action);
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
                    self.spawn_dir(
                        cx,
                        Task::Dir {
                            rel: rel.join(&src.name),
                            src,
                            at: Some((dst.dev, dst.ino)),
                            dst: Some(dst),
                        },
                    );
                }
                Action::Copy {
                    ref src, change, ..
                } if !self.dry_run && is_linked(src, &self.plan_opts) => {
                    // A path of a hard-link group: registered or copied in
                    // the run's last phase, where the group's paths are
                    // known (see links.rs).
                    if change.transfer {
                        touched = true;
                        self.count(|c| c.bytes_to_copy += src.size);
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
                    linked.push(self.linked_xattr_check(src_dir, dst, action));
                }
                // A dry run's hard-linked names: decided together at its
                // end, as the real run's last phase decides them.
                Action::Copy { ref src, .. }
                | Action::Symlink { ref src, .. }
                | Action::Special { ref src, .. }
                | Action::Attrs { ref src, .. }
                    if self.dry_run
                        && self.dry_links.is_some()
                        && is_linked(src, &self.plan_opts) =>
                {
                    touched |= !matches!(action, Action::Attrs { .. });
                    self.note_dry_linked(rel, src_dir, dst, action);
                }
                Action::Copy { src, dst, change }
                    if !self.dry_run && self.is_big(&src) && !is_linked(&src, &self.plan_opts) =>
                {
                    touched = true;
                    self.count(|c| c.bytes_to_copy += src.size);
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
                // nowhere to record a difference: compared whole, below;
                // `psync verify` reports a chunk's difference as an event).
                Action::Compare { src, dst, change } if self.compares_in_chunks(&src) => {
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
                        self.count(|c| c.bytes_to_copy += src.size);
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
                            recheck: cx.delivery() > 1,
                        });
                    }
                }
                other => touched |= self.act_inline(rel, src_dir, dst, other, cx),
            }
        }
        if !batch.actions.is_empty() {
            let recheck = cx.delivery() > 1;
            if cx.spawned == 0 {
                // The directory's only batch: copied by this task (a task
                // of its own would cost more than it gives).
                self.run_files(rel, batch.actions, (fresh, recheck), at);
            } else {
                cx.spawn(Task::Files {
                    rel: rel.clone(),
                    actions: batch.actions,
                    fresh,
                    at,
                    recheck,
                });
            }
        }
        if !linked.is_empty()
            && !self.quit.load(Ordering::Relaxed)
            && let Err(e) = self.defer_linked(rel, at, &linked, origin)
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
    pub(super) fn delete_entry(
        &self,
        rel: &RelPath,
        dir: Option<&Dir>,
        old: &Entry,
        replaced: bool,
    ) -> bool {
        let path = rel.join(&old.name);
        // A directory holding excluded entries is kept, what it holds but
        // them deleted one by one (each within `--max-delete`). One that
        // another type of entry would replace blocks its name, as in
        // rsync ("could not make way"): the excluded entries stay.
        if let Some(d) = dir
            && old.kind == Kind::Dir
            && self.protects_excluded()
            && self.holds_excluded(d, &path, old)
        {
            let kept = self.delete_around_excluded(d, &path, old);
            if replaced {
                let why = "not replaced: the directory holds excluded entries \
                           (--delete-excluded deletes them)";
                self.fail(&path, true, Op::Remove, io::Error::other(why));
            }
            return kept;
        }
        if !replaced && !self.may_delete(dir, &path, old) {
            return true;
        }
        // A directory another type replaces: its contents count, as in
        // rsync; over the limit it stays, and blocks its name.
        if replaced && old.kind == Kind::Dir && !self.may_delete_contents(dir, &path, old) {
            let why = "not replaced: its contents are more than --max-delete allows";
            self.fail(&path, true, Op::Remove, io::Error::other(why));
            return false;
        }
        let removed = match dir {
            // A name of an immutable inode of several names: removed in
            // the last phase, once its other names are known.
            // Itemized when the last phase removes it (once, however many
            // deliveries note it).
            Some(_) if !replaced && self.defer_gone(rel, old) => 0,
            Some(d) if !self.dry_run && !self.unlock(rel, d, old) => return false,
            Some(d) if !self.dry_run => return self.remove_itemized(d, rel, old, replaced),
            _ => {
                self.itemize_removal(dir, &path, old, replaced);
                1
            }
        };
        self.count(|c| c.deleted += removed);
        true
    }

    /// Itemizes the removal of `old` (at `path`) as rsync does: rsync
    /// does not itemize the entry a type change replaces, only what a
    /// replaced directory held.
    fn itemize_removal(&self, dir: Option<&Dir>, path: &RelPath, old: &Entry, replaced: bool) {
        match dir {
            Some(d) if self.itemize => self.itemize_tree(d, path, old, !replaced),
            _ if !replaced => self.itemize(path.clone(), None, old),
            _ => {}
        }
    }

    /// Removes `old` of `d` (at `rel`) and itemizes what this removal
    /// took, as it goes: not what another remover took first. Two
    /// deliveries of one deletion that run at once (two cuts of a changing
    /// wide directory both holding a name) itemize each entry once
    /// between them, as rsync itemizes a deletion once it is done. False,
    /// reported, when it (or part of it) stays.
    fn remove_itemized(&self, d: &Dir, rel: &RelPath, old: &Entry, replaced: bool) -> bool {
        let path = rel.join(&old.name);
        let mut taken = 0u64;
        // In this node's terms: a directory is removed only if its `fstat`
        // is still the entry's.
        let local = self.fs.local(old);
        let result = if !self.itemize {
            self.copier.remove(d, &local)
        } else {
            self.copier.remove_each(d, &local, &mut |p, kind| {
                taken += 1;
                // rsync does not itemize the entry a type change replaces,
                // only what a replaced directory held.
                if !(replaced && p.as_bytes() == old.name.as_bytes()) {
                    self.emit(Event::Itemize {
                        path: rel.join_path(p),
                        change: None,
                        kind,
                        link: None,
                    });
                }
            })
        };
        match result {
            Ok(n) => {
                self.count(|c| c.deleted += n);
                true
            }
            Err(e) => {
                self.count(|c| c.deleted += taken);
                self.fail(&path, true, e.op, e.source);
                false
            }
        }
    }

    /// `--max-delete`: takes the entries of `old` (it and its contents)
    /// from the run's allowance; false, counted as skipped, when they do
    /// not fit. A directory is kept whole rather than emptied in part.
    fn may_delete(&self, dir: Option<&Dir>, path: &RelPath, old: &Entry) -> bool {
        let Some(limit) = self.max_delete else {
            return true;
        };
        // Already gone (another delivery's part removed it): its removal
        // counts as done and takes nothing from the allowance.
        if dir.is_some_and(|d| d.is_gone(&old.name)) {
            return true;
        }
        let n = match dir {
            Some(d) if old.kind == Kind::Dir => self.count_tree(d, path, old),
            _ => 1,
        };
        let granted = self.deletions.take(n, limit);
        if !granted {
            self.count(|c| c.deletes_skipped += n);
        }
        granted
    }

    /// `--max-delete` for a directory `old` another type replaces: takes
    /// its contents (not it) from the allowance, as rsync counts them;
    /// false, counted as skipped, when they do not fit.
    fn may_delete_contents(&self, dir: Option<&Dir>, path: &RelPath, old: &Entry) -> bool {
        let (Some(limit), Some(d)) = (self.max_delete, dir) else {
            return true;
        };
        let n = self.count_tree(d, path, old) - 1;
        if n == 0 {
            return true;
        }
        let granted = self.deletions.take(n, limit);
        if !granted {
            self.count(|c| c.deletes_skipped += n);
        }
        granted
    }

    /// The number of entries in the target tree `entry` at `path`, it
    /// included (what its removal deletes).
    fn count_tree(&self, dir: &Dir, path: &RelPath, entry: &Entry) -> u64 {
        let mut n = 0;
        self.each_removed(dir, path, entry, |_, _| n += 1);
        n.max(1)
    }

    /// Filters are on and excluded target entries are kept from
    /// `--delete` (no `--delete-excluded`).
    fn protects_excluded(&self) -> bool {
        self.plan_opts.filters.has_rules() && !self.plan_opts.filters.delete_excluded
    }

    /// The excluded entries of `d` (at `path`), listed in the run's terms:
    /// `(excluded, child)` each.
    fn listed_for_filters(&self, d: &Dir, path: &RelPath) -> io::Result<Vec<(bool, Child)>> {
        let mut l = d.list()?;
        self.fs.name_listing(d, &mut l.entries);
        let filters = &self.plan_opts.filters;
        Ok(l.entries
            .iter()
            .map(|c| {
                let p = path.join(&c.name);
                let at = p.as_bytes().len() - c.name.as_bytes().len();
                (filters.excluded(p.as_bytes(), at, c.is_dir()), Child::of(c))
            })
            .collect())
    }

    /// True when the target directory `entry` of `parent` (at `path`)
    /// holds, at any depth, an entry the filters exclude: `--delete` must
    /// leave it. A walk that fails (a mount point, a directory moved)
    /// says yes: nothing is deleted on a guess. Iterative (the target's
    /// depth is anyone's to choose).
    fn holds_excluded(&self, parent: &Dir, path: &RelPath, entry: &Entry) -> bool {
        let mut found = false;
        let top = Child::of(&self.fs.local(entry));
        let walked = crate::subtree::walk(
            parent,
            top,
            path,
            &mut |d, at| {
                if found {
                    return Ok(Vec::new());
                }
                let children = self.listed_for_filters(d, at)?;
                found = children.iter().any(|(excluded, _)| *excluded);
                Ok(children.into_iter().map(|(_, c)| c).collect())
            },
            &mut |_, _, _| Ok(()),
        );
        found || walked.is_err()
    }

    /// Deletes what the target directory `old` of `parent` (at `path`)
    /// holds but its excluded entries and the directories above them,
    /// which are kept, as rsync does ("cannot delete non-empty
    /// directory": a warning each, not a failure). Excluded directories
    /// are not entered. Two walks, iterative: the first finds the
    /// directories to keep, the second deletes the rest, a directory not
    /// kept as a whole (once: its tree itemized once, also in a dry run).
    fn delete_around_excluded(&self, parent: &Dir, path: &RelPath, old: &Entry) -> bool {
        let mut keep: std::collections::HashSet<RelPath> = Default::default();
        let walked = crate::subtree::walk(
            parent,
            Child::of(&self.fs.local(old)),
            path,
            &mut |d, at| {
                let children = self.listed_for_filters(d, at)?;
                if children.iter().any(|(excluded, _)| *excluded) {
                    let mut p = at.clone();
                    while p.as_bytes().len() >= path.as_bytes().len() && keep.insert(p.clone()) {
                        match p.split_last() {
                            Some((up, _)) => p = up,
                            None => break,
                        }
                    }
                }
                Ok(children
                    .into_iter()
                    .filter(|(excluded, _)| !excluded)
                    .map(|(_, c)| c)
                    .collect())
            },
            &mut |_, _, _| Ok(()),
        );
        if let Err(e) = walked {
            self.fail(path, true, Op::Remove, e);
            return false;
        }
        let walked = crate::subtree::walk(
            parent,
            Child::of(&self.fs.local(old)),
            path,
            &mut |d, at| {
                let children = self.listed_for_filters(d, at)?;
                Ok(children
                    .into_iter()
                    .filter(|(excluded, _)| !excluded)
                    .map(|(_, mut c)| {
                        // Entered only when kept; else deleted whole.
                        c.dir &= keep.contains(&at.join(&c.name));
                        c
                    })
                    .collect())
            },
            &mut |holder, at, child| {
                let (Some(entry), Some((up, _))) = (&child.entry, at.split_last()) else {
                    return Ok(());
                };
                if child.dir {
                    let msg = "cannot delete non-empty directory: it holds excluded entries \
                               (--delete-excluded deletes them)";
                    self.warn(at, true, Op::Remove, msg);
                } else {
                    self.delete_entry(&up, Some(holder), entry, false);
                }
                Ok(())
            },
        );
        if let Err(e) = walked {
            self.fail(path, true, Op::Remove, e);
        }
        false
    }

    /// A type change without `--delete`/`--force`: removes the target
    /// directory `old` only if it is empty (rsync refuses to delete a
    /// non-empty one). Returns false, reporting why, when it stays.
    pub(super) fn clear_empty_dir(&self, rel: &RelPath, dir: Option<&Dir>, old: &Entry) -> bool {
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

    /// Takes out of the plan the source entries the copier leaves alone
    /// on purpose ([`crate::Copier::skip`]) and their targets, which stay
    /// as they are (never deleted): each reported as skipped.
    fn skip_by_copier(&self, rel: &RelPath, src: &mut Vec<Entry>, dst: &mut Vec<Entry>) {
        src.retain(|s| {
            let Some(reason) = (!s.is_dir()).then(|| self.copier.skip(s)).flatten() else {
                return true;
            };
            dst.retain(|d| d.name != s.name);
            self.count(|c| {
                c.skipped_by_copier += 1;
                c.done += 1;
            });
            self.emit(Event::Skipped {
                path: rel.join(&s.name),
                reason,
            });
            false
        });
    }

    /// The actions a directory task does itself. Returns whether the
    /// directory's entries changed.
    pub(super) fn act_inline(
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
                    let made_dir =
                        self.noted(&path, || self.copier.make_dir(d, &src.name, &src, from));
                    if let Err(e) = made_dir {
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
                    match fresh_dir_id(&self.fs, d, &src.name) {
                        Ok(id) => made = Some(id),
                        Err(e) => {
                            self.fail(&path, true, Op::Mkdir, e);
                            return true;
                        }
                    }
                }
                self.itemize(path.clone(), Some(Change::new_entry(Kind::Dir)), &src);
                self.count(|c| c.created += 1);
                self.spawn_dir(
                    cx,
                    Task::Dir {
                        rel: path,
                        src,
                        dst: None,
                        at: made,
                    },
                );
                true
            }
            Action::Copy { src, dst, change } => {
                // Dry run: report what would be copied.
                self.count(|c| c.bytes_to_copy += src.size);
                self.count_change(dst.is_some() && !change.new);
                self.itemize(rel.join(&src.name), Some(change), &src);
                true
            }
            Action::Symlink { src, dst, change } | Action::Special { src, dst, change } => {
                let old = dst.filter(|_| !change.new).map(|d| d.mode);
                self.replace_node(rel, src_dir, dir, &src, old, change);
                true
            }
            Action::Attrs { src, change, dst } => self.fix_attrs(
                Here { rel, src_dir, dir },
                (&src, &dst),
                change,
                (1, Shared::Replace),
            ),
            Action::TooYoung { src } => {
                self.count(|c| {
                    c.skipped_young += 1;
                    c.done += 1;
                });
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

    /// Applies a directory's attributes after everything inside it is
    /// done. The root's runs once more after each pass of the last phase
    /// (`pass`: the one it starts).
    pub(super) fn finish_dir(
        &self,
        rel: &RelPath,
        src: &Entry,
        (dst, at): (Option<&Entry>, Option<(u64, u64)>),
        (touched, pass): (bool, u32),
        cx: &mut dyn TaskContext,
    ) {
        if rel.is_root() && self.dry_run {
            self.decide_dry_links();
        }
        if rel.is_root() {
            // The last phase: the hard-link passes, then the link area's
            // removal, each followed by this again.
            if self.link_pass(pass, cx) {
                return self.defer(
                    cx,
                    Task::FinishDir {
                        rel: rel.clone(),
                        src: src.clone(),
                        dst: dst.cloned(),
                        touched,
                        at,
                        pass: pass + 1,
                    },
                );
            }
            self.drop_link_area();
        }
        let change = dst.map(|d| attr_change(src, d, &self.plan_opts));
        let mut xattrs = self.xattr_source(dst, src);
        let mut attrs = touched
            || dst.is_none()
            || change.is_some_and(|c| c.any())
            || self.opens_up(dst)
            // The root was touched by the run's probe or link area.
            || (rel.is_root() && (self.root_touched || self.links.get().is_some()));
        // Immutable and append-only: set last, after the times (and
        // lifted for the attributes first).
        let locked = dst.is_some_and(Entry::is_protected);
        let seal = self.protect_of(src).filter(|&bits| bits != 0 || locked);
        if (attrs || xattrs || seal.is_some()) && !self.dry_run {
            let target = || self.open_dst_at(rel, at.or(dst.map(|d| (d.dev, d.ino))));
            // Also when not listed so but the source has them: a second
            // delivery of this finish finds them set by the first.
            let sealed = locked || seal.is_some_and(|bits| bits != 0);
            if (attrs || xattrs) && sealed && self.copy_opts.file_flags.on() {
                match target() {
                    // Touched, or due the exact xattr check, but found
                    // right as it is now (compared without writing):
                    // nothing to lift.
                    Ok(d) if locked && !self.dir_needs_attrs(rel, src, &d, xattrs) => {
                        (attrs, xattrs) = (false, false);
                    }
                    Ok(d) if locked && !self.none_could_move(&d) => {
                        let why = "immutable or append-only, in a directory another user could \
                                   have moved into the tree: not lifted (`chattr -ia` it by hand if it is the copy)";
                        let e = std::io::Error::other(why);
                        return self.fail(rel, true, Op::FileAttr, e);
                    }
                    Ok(d) => {
                        self.set_protect(rel, Node::Fd(d.fd()), 0);
                    }
                    Err(e) => return self.fail(rel, true, Op::OpenDir, e),
                }
            }
            if attrs || xattrs {
                match self.apply_dir_attrs(rel, src, (dst, at), attrs, xattrs) {
                    Ok(report) => self.report_dropped(rel, &report),
                    Err((op, e)) => return self.fail(rel, true, op, e),
                }
            }
            if let Some(bits) = seal {
                match target() {
                    Ok(d) => {
                        self.set_protect(rel, Node::Fd(d.fd()), bits);
                    }
                    Err(e) => return self.fail(rel, true, Op::OpenDir, e),
                }
            }
            if self.flush.per_task()
                && let Ok(d) = self.open_dst(rel)
            {
                self.sync_dir(rel, &d);
            }
        }
        let n = u64::from(!rel.is_root());
        self.count(|c| {
            if dst.is_some() {
                match change.is_some_and(|ch| ch.any()) {
                    true => c.attrs_updated += n,
                    false => c.unchanged += n,
                }
            }
            c.done += n;
        });
    }

    /// Sets a finished directory's attributes (`attrs`: owner, mode, times)
    /// and/or syncs its xattrs and ACLs from the source directory; an
    /// xattr check alone does not rewrite the others.
    pub(super) fn apply_dir_attrs(
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
        self.check_dir(rel, (&d, &st), dst, at)
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
        // Owner and mode as the source directory has them now, not as the
        // task says (a task forged into a broker's queue must not give a
        // directory away; one changed during the run gets what it has
        // now); its times as listed. Looked at from its parent: a
        // directory the process cannot read (mode 000, not root) too.
        let src_now = match rel.split_last() {
            None => self.src_root.fstat(),
            Some((parent, name)) => self
                .src_root
                .open_beneath(&parent)
                .and_then(|p| p.stat(name)),
        };
        let src_now = match src_now.map(|st| Entry::from_stat(src.name.clone(), &st)) {
            Ok(now) if now.kind == Kind::Dir => {
                let mut e = src.clone();
                (e.mode, e.uid, e.gid) = (now.mode, now.uid, now.gid);
                e
            }
            _ => {
                let why = "the source directory is gone or no longer a directory: \
                           its attributes are left as they are";
                self.warn(rel, false, Op::Stat, why);
                return Ok(crate::xattr::XattrReport::default());
            }
        };
        let src = &src_now;
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

    /// Gives a directory this run created the source's default ACL (or
    /// none) before anything is created in it, as rsync does: what its new
    /// entries inherit (ACL entries, the mode mask) then comes from the
    /// source, not from whatever the target's parents pass on.
    pub(super) fn adopt_default_acl(&self, rel: &RelPath, src: &Dir, dst: &Dir) {
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
    pub(super) fn new_dir_mode(&self, rel: &RelPath, dir: &Dir, src: &Entry) -> io::Result<u32> {
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
}

/// A task context that counts the tasks spawned through it: a directory's
/// task that spawned none copied its files itself and finishes itself.
pub(super) struct Counted<'a> {
    pub(super) cx: &'a mut dyn TaskContext,
    pub(super) spawned: usize,
    /// A part spawned by a second delivery of its directory's task: what
    /// it spawns rechecks its targets as a second delivery's would.
    pub(super) again: bool,
}

impl TaskContext for Counted<'_> {
    fn spawn(&mut self, task: Task) {
        self.spawned += 1;
        self.cx.spawn(task);
    }

    fn defer(&mut self, task: Task) -> Result<(), crate::transport::DeferTwice> {
        self.cx.defer(task)
    }

    fn delivery(&self) -> u32 {
        match self.again {
            true => self.cx.delivery().max(2),
            false => self.cx.delivery(),
        }
    }
}

/// A wide directory's names cut into parts, each as [`Task::DirPart`]'s
/// `names` and `only_dst`: `union` is both sides' names in order and
/// `from_src` says which the source has. A part of source names ends
/// after every `per_part`-th of them, with the target-only names among
/// them; `per_part` target-only names in a row make a part of their own.
/// So which source names a part holds (its id) does not depend on the
/// target: a second delivery of the directory's task, which may find some
/// target-only names deleted by the first delivery's parts, cuts the same
/// parts, which are not run again, and the two deliveries never replace
/// the same name at once (ADR 021, "Redelivery"). A part holds at most
/// `per_part` names of each kind.
fn cut_parts(
    union: &Names,
    from_src: &[bool],
    per_part: usize,
    mut part: impl FnMut(Vec<u8>, Vec<u8>),
) {
    let (mut names, mut only_dst) = (Vec::new(), Vec::new());
    let (mut sources, mut only_dst_here) = (0usize, 0usize);
    for (name, &src) in union.iter().zip(from_src) {
        if src {
            names.extend_from_slice(name);
            names.push(0);
            sources += 1;
            if sources % per_part == 0 {
                part(std::mem::take(&mut names), std::mem::take(&mut only_dst));
                only_dst_here = 0;
            }
        } else {
            only_dst.extend_from_slice(name);
            only_dst.push(0);
            only_dst_here += 1;
            if only_dst_here == per_part {
                part(Vec::new(), std::mem::take(&mut only_dst));
                only_dst_here = 0;
            }
        }
    }
    if !names.is_empty() || !only_dst.is_empty() {
        part(names, only_dst);
    }
}

/// A [`Task::DirPart`]'s names, both lists in one, sorted. From the task,
/// not from a listing (a broker is not trusted): each must be one name (a
/// `/` would be resolved as a path; none empty, each list ended by a NUL),
/// each list in order, no name in both, some name in the part; `None`
/// otherwise.
fn part_names<'a>(names: &'a [u8], only_dst: &'a [u8]) -> Option<Vec<&'a [u8]>> {
    let (names, only_dst) = (split_names(names)?, split_names(only_dst)?);
    let one = |n: &&[u8]| *n != b"." && *n != b".." && !n.contains(&b'/');
    let sorted = |l: &[&[u8]]| l.is_sorted_by(|a, b| a < b);
    if !sorted(&names) || !sorted(&only_dst) {
        return None;
    }
    let mut all = [names, only_dst].concat();
    all.sort_unstable();
    (!all.is_empty() && all.iter().all(one) && sorted(&all)).then_some(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a forged part may name: one name each, in order, no name in
    /// both lists, some name.
    #[test]
    fn forged_part_names_are_refused() {
        let ok: [(&[u8], &[u8]); 4] = [
            (b"a\0c\0", b"b\0"),
            (b"a\0", b""),
            (b"", b"x\0y\0"),
            (b"\xff\0", b"a b\0"),
        ];
        for (names, only_dst) in ok {
            assert!(
                part_names(names, only_dst).is_some(),
                "{names:?} {only_dst:?}"
            );
        }
        assert_eq!(
            part_names(b"a\0c\0", b"b\0").unwrap(),
            [&b"a"[..], b"b", b"c"]
        );
        let bad: [(&[u8], &[u8]); 10] = [
            (b"", b""),
            (b"..\0", b""),
            (b".\0", b""),
            (b"a/b\0", b""),
            (b"a\0", b"a\0"),
            (b"b\0a\0", b""),
            (b"", b"y\0x\0"),
            (b"a\0\0b\0", b""),
            (b"a\0b", b""),
            (b"\0", b""),
        ];
        for (names, only_dst) in bad {
            assert!(
                part_names(names, only_dst).is_none(),
                "{names:?} {only_dst:?}"
            );
        }
    }

    /// A second delivery of a wide directory's task finds fewer
    /// target-only names (the first delivery's parts deleted some): every
    /// part holding source names is cut the same, so it has the same id
    /// and is not run twice; a part holds at most `per_part` names of
    /// each side's kind, and the parts together hold every name once.
    #[test]
    fn parts_are_cut_at_source_names() {
        use crate::task::Task;
        let task = |(names, only_dst): (Vec<u8>, Vec<u8>)| Task::DirPart {
            rel: RelPath::root(),
            names,
            only_dst,
            at: None,
            fresh: false,
            recheck: false,
        };
        let ids_of = |all: &[(String, bool)], per: usize| {
            let mut union = Names::default();
            for (n, _) in all {
                union.push(n.as_bytes());
            }
            let from_src: Vec<bool> = all.iter().map(|a| a.1).collect();
            let mut parts = Vec::new();
            cut_parts(&union, &from_src, per, |a, b| parts.push((a, b)));
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let mut with_src = Vec::new();
            for (names, only_dst) in &parts {
                let (a, b) = (split_names(names).unwrap(), split_names(only_dst).unwrap());
                assert!(a.len() <= per && b.len() <= per, "{a:?} {b:?}");
                assert!(!a.is_empty() || !b.is_empty());
                seen.extend(a.iter().chain(&b).map(|n| n.to_vec()));
                if !a.is_empty() {
                    with_src.push(task((names.clone(), only_dst.clone())).id(1));
                }
            }
            seen.sort();
            let mut want: Vec<Vec<u8>> = all.iter().map(|a| a.0.clone().into_bytes()).collect();
            want.sort();
            assert_eq!(seen, want, "every name in one part");
            let all_ids: Vec<_> = parts.into_iter().map(|p| task(p).id(1)).collect();
            let mut unique = all_ids.clone();
            unique.sort_by_key(|i| i.to_string());
            unique.dedup();
            assert_eq!(unique.len(), all_ids.len(), "no two parts of one cut alike");
            with_src
        };
        // Names n000..n299: every third the source's, runs of 1..=40
        // target-only names between, and one run of 100.
        let mut all = Vec::new();
        let mut k = 0;
        for i in 0..300 {
            let src = i % 3 == 0 && !(150..250).contains(&i);
            all.push((format!("n{i:03}"), src));
            k += usize::from(src);
        }
        assert!(k > 50);
        for per in [1, 2, 3, 7, 16] {
            let first = ids_of(&all, per);
            // The first delivery's parts deleted every other target-only
            // name, or all of them.
            for keep in [2, usize::MAX] {
                let mut n = 0;
                let fewer: Vec<_> = all
                    .iter()
                    .filter(|(_, src)| {
                        n += usize::from(!src);
                        *src || (keep != usize::MAX && n % keep == 0)
                    })
                    .cloned()
                    .collect();
                assert_eq!(first, ids_of(&fewer, per), "per {per}, keep {keep}");
            }
        }
    }

    /// Taken in order, and what is left given back as it goes.
    #[test]
    fn actions_are_taken_in_order_and_freed() {
        let n = 20_000;
        let actions: Vec<Action> = (0..n)
            .map(|i| Action::TooYoung {
                src: Entry::new(Name(format!("f{i:05}").into_bytes()), Kind::File),
            })
            .collect();
        let want: Vec<Name> = actions.iter().map(|a| a.name().clone()).collect();
        let mut taken = Taken::new(actions);
        let mut got = Vec::new();
        while let Some(a) = taken.next() {
            got.push(a.name().clone());
            if got.len() == n / 2 {
                // No more than an eighth over what is left.
                let (len, cap) = (taken.rev.len(), taken.rev.capacity());
                assert!(cap <= len + len / 7 + 1, "{len} left, room for {cap}");
            }
        }
        assert_eq!(got, want);
    }
}
