//! The planner: rsync's decisions for one directory, as a pure function.
//!
//! Input: the source and the target listing of one directory (each sorted
//! by name) and the options. Output: the actions that make the target
//! directory's entries match the source's. Nothing here touches a file
//! system, so every decision is unit-tested.

use crate::entry::{Entry, Kind, Time};
use crate::itemize::Change;
use serde::{Deserialize, Serialize};

/// Which attributes a run preserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Preserve {
    /// Permission bits (rsync `-p`).
    pub perms: bool,
    /// Modification times (rsync `-t`); also what makes the quick check skip files.
    pub times: bool,
    /// Owner by numeric id (rsync `-o`; takes effect only as root).
    pub owner: bool,
    /// Group by numeric id (rsync `-g`).
    pub group: bool,
}

impl Preserve {
    /// Everything `rsync -a` keeps: perms, times, owner, group.
    pub const ARCHIVE: Preserve = Preserve {
        perms: true,
        times: true,
        owner: true,
        group: true,
    };
    /// Nothing but data.
    pub const NONE: Preserve = Preserve {
        perms: false,
        times: false,
        owner: false,
        group: false,
    };
}

impl Default for Preserve {
    fn default() -> Self {
        Preserve::ARCHIVE
    }
}

/// Options the planner depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlanOptions {
    /// Delete target entries that are not in the source (rsync `--delete`).
    pub delete: bool,
    /// Attributes to compare and preserve.
    pub preserve: Preserve,
    /// Two mtimes this close (in nanoseconds) are equal (rsync `--modify-window`).
    pub modify_window_ns: u64,
    /// Ignore times in the quick check: copy every file (rsync `-I`).
    pub ignore_times: bool,
    /// Keep hard links: all paths of one source inode become links to one
    /// target inode (rsync `-H`).
    pub hard_links: bool,
    /// Xattrs or ACLs are synced: an entry whose source changed status
    /// (ctime) after its target did gets its attributes compared.
    pub xattrs: bool,
    /// Compare xattrs/ACLs of every entry on every run (rsync `-X`/`-A`):
    /// also undoes changes made on the target side. Costs two xattr
    /// listings per entry; without it, only entries whose source changed
    /// status since their target was written are compared.
    pub xattrs_always: bool,
    /// Decide by content, not mtime: files of equal size are compared by
    /// hash (rsync `-c`).
    pub checksum: bool,
    /// Leave alone non-directories whose status changed less than this long
    /// before `now` (the old tool's `--minsecs`), in nanoseconds; 0 = off.
    pub min_age_ns: u64,
    /// The run's clock, fixed at its start so planning stays a pure function.
    pub now: Time,
    /// A type change may remove a non-empty target directory (rsync
    /// `--force`; `--delete` implies it). Without either, such a directory
    /// stays, and the source entry of its name fails.
    #[serde(default)]
    pub force: bool,
    /// Do not cross file system boundaries in the source (rsync `-x`): a
    /// directory on another file system is copied empty and nothing in its
    /// target is deleted.
    #[serde(default)]
    pub one_file_system: bool,
    /// The groups a target may be given, sorted (see
    /// [`PlanOptions::may_give_group`]): `None` where any can (as root);
    /// without root the process's own groups, as rsync `-g` gives a
    /// non-root user's target its source's group only when the user is
    /// a member of it (and compares it only then). Computed once per run
    /// ([`crate::copy::kit::own_groups`]).
    #[serde(default)]
    pub member_groups: Option<Vec<u32>>,
    /// Inode flags are synced: the immutable, append-only and nodump
    /// flags every listing carries ([`Entry::flags`]) are compared on
    /// every run (ADR 018).
    #[serde(default)]
    pub file_flags: bool,
    /// Include/exclude rules (rsync `--filter`), compiled once per run:
    /// an excluded source entry is left out, an excluded target entry
    /// kept from `--delete` unless `--delete-excluded`.
    #[serde(default)]
    pub filters: crate::filter::Filters,
}

impl PlanOptions {
    /// True when a target may be given the group `gid`: always as root,
    /// otherwise when the process is a member of it. Asked only for a
    /// group that differs, so a run where groups match pays nothing.
    pub fn may_give_group(&self, gid: u32) -> bool {
        self.member_groups
            .as_ref()
            .is_none_or(|g| g.binary_search(&gid).is_ok())
    }
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            delete: false,
            preserve: Preserve::ARCHIVE,
            modify_window_ns: 0,
            ignore_times: false,
            hard_links: true,
            xattrs: true,
            xattrs_always: false,
            checksum: false,
            min_age_ns: 0,
            now: Time::default(),
            force: false,
            one_file_system: false,
            member_groups: None,
            file_flags: true,
            filters: crate::filter::Filters::default(),
        }
    }
}

/// One thing to do in a directory. Entries carry everything a worker on
/// another node needs; none refers to in-memory state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Action {
    /// Remove a target entry (recursively for a directory): extraneous with
    /// `--delete`, or in the way of a source entry of another type.
    Delete {
        /// The target entry.
        dst: Entry,
        /// True when it is removed because of a type change (done even without `--delete`).
        replaced: bool,
    },
    /// Create a directory, then sync into it.
    Mkdir {
        /// The source directory.
        src: Entry,
    },
    /// Sync into a directory that exists on both sides.
    Descend {
        /// The source directory.
        src: Entry,
        /// The existing target directory.
        dst: Entry,
    },
    /// Copy a regular file's data (to a temporary, renamed into place).
    Copy {
        /// The source file.
        src: Entry,
        /// What the target holds now (a file, or a non-directory to replace).
        dst: Option<Entry>,
        /// What changed, for itemizing.
        change: Change,
    },
    /// Create or replace a symlink.
    Symlink {
        /// The source symlink (its `link` is the target text).
        src: Entry,
        /// What the target holds now.
        dst: Option<Entry>,
        /// What changed.
        change: Change,
    },
    /// Create or replace a fifo, device or socket.
    Special {
        /// The source entry.
        src: Entry,
        /// What the target holds now.
        dst: Option<Entry>,
        /// What changed.
        change: Change,
    },
    /// Same size under `--checksum`: the engine compares contents, then
    /// copies or only fixes attributes.
    Compare {
        /// The source file.
        src: Entry,
        /// The target file.
        dst: Entry,
        /// Attribute differences found so far.
        change: Change,
    },
    /// Changed too recently (`--min-age`): left alone this run.
    TooYoung {
        /// The source entry.
        src: Entry,
    },
    /// Only attributes differ: apply them in place.
    Attrs {
        /// The source entry.
        src: Entry,
        /// The target entry.
        dst: Entry,
        /// What changed.
        change: Change,
    },
}

impl Action {
    /// The name in the directory the action is about.
    pub fn name(&self) -> &crate::entry::Name {
        match self {
            Action::Delete { dst, .. } => &dst.name,
            Action::Mkdir { src }
            | Action::Descend { src, .. }
            | Action::Copy { src, .. }
            | Action::Symlink { src, .. }
            | Action::Special { src, .. }
            | Action::Compare { src, .. }
            | Action::TooYoung { src }
            | Action::Attrs { src, .. } => &src.name,
        }
    }
}

/// Decides what to do in one directory. Object-safe, so a user can swap in
/// their own policy.
pub trait Planner: Send + Sync {
    /// Plans one directory. `src` and `dst` must be sorted by name.
    fn plan(&self, src: &[Entry], dst: &[Entry], opts: &PlanOptions) -> Vec<Action>;

    /// Plans one directory whose listings are not needed afterwards: the
    /// same actions as [`Planner::plan`], which is what this default
    /// calls. A planner may free the listings as it goes, so that a huge
    /// directory's listings and actions are not all held at once
    /// ([`RsyncPlanner`] does).
    fn plan_owned(&self, src: Vec<Entry>, dst: Vec<Entry>, opts: &PlanOptions) -> Vec<Action> {
        self.plan(&src, &dst, opts)
    }
}

impl<T: Planner + ?Sized> Planner for std::sync::Arc<T> {
    fn plan(&self, src: &[Entry], dst: &[Entry], opts: &PlanOptions) -> Vec<Action> {
        (**self).plan(src, dst, opts)
    }

    fn plan_owned(&self, src: Vec<Entry>, dst: Vec<Entry>, opts: &PlanOptions) -> Vec<Action> {
        (**self).plan_owned(src, dst, opts)
    }
}

impl<T: Planner + ?Sized> Planner for Box<T> {
    fn plan(&self, src: &[Entry], dst: &[Entry], opts: &PlanOptions) -> Vec<Action> {
        (**self).plan(src, dst, opts)
    }

    fn plan_owned(&self, src: Vec<Entry>, dst: Vec<Entry>, opts: &PlanOptions) -> Vec<Action> {
        (**self).plan_owned(src, dst, opts)
    }
}

/// rsync's behaviour (`-a`, optionally `--delete`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RsyncPlanner;

impl Planner for RsyncPlanner {
    fn plan(&self, src: &[Entry], dst: &[Entry], opts: &PlanOptions) -> Vec<Action> {
        plan(src, dst, opts)
    }

    fn plan_owned(&self, src: Vec<Entry>, dst: Vec<Entry>, opts: &PlanOptions) -> Vec<Action> {
        plan_owned(src, dst, opts, PLAN_PART)
    }
}

/// The most entries of a side [`plan_owned`] plans at once.
const PLAN_PART: usize = 16_384;

/// [`plan`] of listings that are freed as they are planned: part by part
/// in name order (at most `part` entries of each side, a name's two
/// entries in one part), each part's listing freed once its actions are
/// made. Each part's plan is [`plan`]'s for its names, so the parts'
/// deletions, then the rest, in name order, are [`plan`]'s whole.
pub fn plan_owned(
    mut src: Vec<Entry>,
    mut dst: Vec<Entry>,
    opts: &PlanOptions,
    part: usize,
) -> Vec<Action> {
    let part = part.max(1);
    // Taken from their ends, the first names last.
    src.reverse();
    dst.reverse();
    let mut deletes = Vec::new();
    // At most one action per source entry besides the deletions; the
    // room never written is never touched either.
    let mut rest = Vec::with_capacity(src.len());
    while !src.is_empty() || !dst.is_empty() {
        let cut = |side: &[Entry]| side.len().checked_sub(part).map(|i| side[i].name.clone());
        // This part: the names up to the smaller of the two sides' cuts.
        let upto = match (cut(&src), cut(&dst)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (s, d) = match upto {
            Some(upto) => {
                let i = src.partition_point(|e| e.name > upto);
                let j = dst.partition_point(|e| e.name > upto);
                (split_tail(&mut src, i), split_tail(&mut dst, j))
            }
            None => (split_tail(&mut src, 0), split_tail(&mut dst, 0)),
        };
        for action in plan(&s, &d, opts) {
            match action {
                Action::Delete { .. } => deletes.push(action),
                _ => rest.push(action),
            }
        }
    }
    if !deletes.is_empty() {
        rest.splice(0..0, deletes);
    }
    rest
}

/// The entries of `side` from `at` on, taken out of it in the order they
/// had before `side` was reversed; what is left is shrunk to its length
/// (a shrinking `realloc` gives the rest back).
fn split_tail(side: &mut Vec<Entry>, at: usize) -> Vec<Entry> {
    let mut tail = side.split_off(at);
    tail.reverse();
    side.shrink_to_fit();
    tail
}

/// The planning function behind [`RsyncPlanner`].
///
/// Order of the result: all deletions first (rsync's `--delete-during`
/// removes extraneous entries of a directory before transferring into it,
/// and a type change must clear the name before the new entry is created),
/// then creations and updates in name order.
pub fn plan(src: &[Entry], dst: &[Entry], opts: &PlanOptions) -> Vec<Action> {
    debug_assert!(src.is_sorted_by(|a, b| a.name <= b.name));
    debug_assert!(dst.is_sorted_by(|a, b| a.name <= b.name));
    let mut deletes = Vec::new();
    // At most one action per source entry besides the deletions: reserved
    // once, as a huge directory's actions are most of its memory (a
    // doubling vector holds up to twice them, and then copying them after
    // the deletions once more).
    let mut rest = Vec::with_capacity(src.len());
    let (mut i, mut j) = (0, 0);
    while i < src.len() || j < dst.len() {
        let ord = match (src.get(i), dst.get(j)) {
            (Some(s), Some(d)) => s.name.cmp(&d.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, _) => std::cmp::Ordering::Greater,
        };
        if ord != std::cmp::Ordering::Greater && too_young(&src[i], opts) {
            rest.push(Action::TooYoung {
                src: src[i].clone(),
            });
            i += 1;
            j += usize::from(ord == std::cmp::Ordering::Equal);
            continue;
        }
        match ord {
            std::cmp::Ordering::Less => {
                rest.push(create(&src[i], None));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                if opts.delete {
                    deletes.push(Action::Delete {
                        dst: dst[j].clone(),
                        replaced: false,
                    });
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                plan_pair(&src[i], &dst[j], opts, &mut deletes, &mut rest);
                i += 1;
                j += 1;
            }
        }
    }
    if deletes.is_empty() {
        return rest;
    }
    rest.splice(0..0, deletes);
    rest
}

/// True when `s` changed status less than `--min-age` ago: a file being
/// written on a live file system. Directories are always entered.
pub(crate) fn too_young(s: &Entry, opts: &PlanOptions) -> bool {
    if opts.min_age_ns == 0 || s.kind == Kind::Dir {
        return false;
    }
    let now = i128::from(opts.now.sec) * 1_000_000_000 + i128::from(opts.now.nsec);
    let ctime = i128::from(s.ctime.sec) * 1_000_000_000 + i128::from(s.ctime.nsec);
    now - ctime < i128::from(opts.min_age_ns)
}

/// The action that creates `src` where nothing (or a replaceable
/// non-directory `dst`) stands.
fn create(src: &Entry, dst: Option<&Entry>) -> Action {
    let change = Change::new_entry(src.kind);
    let (src, dst) = (src.clone(), dst.cloned());
    match src.kind {
        Kind::Dir => Action::Mkdir { src },
        Kind::File => Action::Copy { src, dst, change },
        Kind::Symlink => Action::Symlink { src, dst, change },
        _ => Action::Special { src, dst, change },
    }
}

fn plan_pair(
    s: &Entry,
    d: &Entry,
    opts: &PlanOptions,
    deletes: &mut Vec<Action>,
    rest: &mut Vec<Action>,
) {
    let before = rest.len() + deletes.len();
    plan_same_name(s, d, opts, deletes, rest);
    let nothing = rest.len() + deletes.len() == before;
    if nothing && s.kind != Kind::Dir && xattrs_may_differ(s, d, opts) {
        // Nothing else to do: let the engine compare xattrs/ACLs.
        let change = Change::attrs_of(s.kind);
        rest.push(Action::Attrs {
            src: s.clone(),
            dst: d.clone(),
            change,
        });
    }
}

fn plan_same_name(
    s: &Entry,
    d: &Entry,
    opts: &PlanOptions,
    deletes: &mut Vec<Action>,
    rest: &mut Vec<Action>,
) {
    // Kind already tells character from block devices.
    if s.kind != d.kind {
        // A directory on either side cannot be replaced by rename: clear it
        // first, as rsync does. A non-directory is replaced atomically by
        // renaming the new entry over it, so it is kept until then.
        if s.kind == Kind::Dir || d.kind == Kind::Dir {
            deletes.push(Action::Delete {
                dst: d.clone(),
                replaced: true,
            });
            rest.push(create(s, None));
        } else {
            rest.push(create(s, Some(d)));
        }
        return;
    }
    let attrs = attr_change(s, d, opts);
    match s.kind {
        Kind::Dir => rest.push(Action::Descend {
            src: s.clone(),
            dst: d.clone(),
        }),
        Kind::File => {
            let time_differs = !s.mtime.within(d.mtime, opts.modify_window_ns);
            if opts.checksum && s.size == d.size && !opts.ignore_times {
                let mut change = attrs;
                change.time = time_differs && opts.preserve.times;
                rest.push(Action::Compare {
                    src: s.clone(),
                    dst: d.clone(),
                    change,
                });
            } else if opts.ignore_times || s.size != d.size || time_differs {
                let mut change = attrs;
                change.transfer = true;
                change.size = s.size != d.size;
                // rsync -c compares sums for every file that exists on
                // both sides: of a different size, they differ too.
                change.checksum = opts.checksum && change.size;
                change.time = time_differs && opts.preserve.times;
                rest.push(Action::Copy {
                    src: s.clone(),
                    dst: Some(d.clone()),
                    change,
                });
            } else if links_differ(s, d, opts) {
                // Same data, but the target path is not linked like the
                // source: the engine relinks it without copying, or (link
                // broken in the source) copies it to split it off.
                let change = Change {
                    hardlink: s.nlink > 1,
                    transfer: s.nlink == 1,
                    ..attrs
                };
                rest.push(Action::Copy {
                    src: s.clone(),
                    dst: Some(d.clone()),
                    change,
                });
            } else if attrs.any() {
                rest.push(Action::Attrs {
                    src: s.clone(),
                    dst: d.clone(),
                    change: attrs,
                });
            }
        }
        Kind::Symlink => {
            if s.link != d.link || links_differ(s, d, opts) {
                rest.push(Action::Symlink {
                    src: s.clone(),
                    dst: Some(d.clone()),
                    change: node_change(s, d, attrs, s.link != d.link),
                });
            } else if attrs.any() {
                rest.push(Action::Attrs {
                    src: s.clone(),
                    dst: d.clone(),
                    change: attrs,
                });
            }
        }
        _ => {
            if s.rdev != d.rdev || links_differ(s, d, opts) {
                rest.push(Action::Special {
                    src: s.clone(),
                    dst: Some(d.clone()),
                    change: node_change(s, d, attrs, s.rdev != d.rdev),
                });
            } else if attrs.any() {
                rest.push(Action::Attrs {
                    src: s.clone(),
                    dst: d.clone(),
                    change: attrs,
                });
            }
        }
    }
}

/// True when `s` or its target belongs to a hard-link group and the link
/// counts say the groups differ: a path newly linked in the source, or one
/// whose link was broken there (its target must be split off, or writing
/// one target path would change the other). Comparing counts, not paths, keeps the
/// decision local to one directory; a source linked to paths outside the
/// tree keeps being registered (cheaply, no data copied) on every run.
///
/// Any non-directory: rsync -H links fifos, sockets, devices and symlinks
/// that share an inode as it links files.
pub(crate) fn links_differ(s: &Entry, d: &Entry, opts: &PlanOptions) -> bool {
    opts.hard_links && s.kind != Kind::Dir && (s.nlink > 1 || d.nlink > 1) && d.nlink != s.nlink
}

/// True when the engine should route an entry through the hard-link area:
/// a non-directory with more than one name in the source.
pub(crate) fn is_linked(s: &Entry, opts: &PlanOptions) -> bool {
    opts.hard_links && s.kind != Kind::Dir && s.nlink > 1
}

/// The change of a symlink or special made again: its content (target
/// text, device number) differs, or its link group does (`hardlink` for a
/// path that joins a group; a path split off a group is made anew).
fn node_change(s: &Entry, d: &Entry, attrs: Change, content: bool) -> Change {
    Change {
        checksum: content,
        hardlink: !content && s.nlink > 1 && d.nlink != s.nlink,
        ..attrs
    }
}

/// Which preserved attributes differ between a source and a target entry
/// of the same type.
pub(crate) fn attr_change(s: &Entry, d: &Entry, opts: &PlanOptions) -> Change {
    let p = &opts.preserve;
    let mut c = Change::attrs_of(s.kind);
    // Linux cannot chmod a symlink; rsync does not compare their modes.
    c.perms = p.perms && s.kind != Kind::Symlink && s.mode != d.mode;
    c.time = p.times && !s.mtime.within(d.mtime, opts.modify_window_ns);
    c.owner = p.owner && s.uid != d.uid;
    c.group = p.group && s.gid != d.gid && opts.may_give_group(s.gid);
    c.xattr = listed_flags_differ(s, d, opts);
    c
}

/// True when the flags both listings carry (immutable, append-only,
/// nodump: `statx` reports them) differ: compared on every run, since
/// they cost nothing to read, and so whatever a crash left lifted is
/// set again by the next run. Itemized as `x`, as rsync has no column
/// for them. The other flags and the project id are compared with the
/// xattrs ([`xattrs_may_differ`]). For a file of several names only
/// immutable and append-only, which the last phase sets on its group's
/// inode once the group is complete (ADR 018).
pub(crate) fn listed_flags_differ(s: &Entry, d: &Entry, opts: &PlanOptions) -> bool {
    let compared = match is_linked(s, opts) {
        true => crate::fsattr::PROTECT,
        false => u32::MAX,
    };
    opts.file_flags
        && matches!(s.kind, Kind::File | Kind::Dir)
        && matches!((s.flags, d.flags), (Some(a), Some(b)) if (a ^ b) & compared != 0)
}

/// True when an entry's xattrs/ACLs (and inode flags and project id)
/// must be compared: always with
/// `xattrs_always`; otherwise when the source's status changed after the
/// target's (any change of xattrs or ACLs bumps ctime, so a source that
/// did not change status since the target was written needs no
/// comparison). Keeps a no-op re-sync from reading every entry's xattrs on
/// both sides, which costs about five times the rest of the run.
pub(crate) fn xattrs_may_differ(s: &Entry, d: &Entry, opts: &PlanOptions) -> bool {
    opts.xattrs && (opts.xattrs_always || source_status_newer(s, d, opts))
}

/// True when the source changed status after its target was last written,
/// beyond the target's timestamp resolution (a target that keeps whole
/// seconds must not look older than a source changed in the same second).
pub(crate) fn source_status_newer(s: &Entry, d: &Entry, opts: &PlanOptions) -> bool {
    s.ctime > d.ctime && !s.ctime.within(d.ctime, opts.modify_window_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Name, Time};
    use proptest::prelude::*;

    fn e(name: &str, kind: Kind) -> Entry {
        Entry {
            name: Name::from(name),
            kind,
            size: 10,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: Time::new(1_700_000_000, 5),
            atime: Time::default(),
            ctime: Time::default(),
            nlink: 1,
            dev: 1,
            ino: 1,
            rdev: 0,
            blocks: 8,
            link: if kind == Kind::Symlink {
                Some(Name::from("t"))
            } else {
                None
            },
            mount_root: false,
            flags: None,
            fs_data: Default::default(),
        }
    }

    fn opts() -> PlanOptions {
        PlanOptions::default()
    }

    #[test]
    fn identical_entries_need_nothing() {
        let s = vec![e("a", Kind::File), e("b", Kind::Dir), e("c", Kind::Symlink)];
        let acts = plan(&s, &s, &opts());
        assert_eq!(acts.len(), 1, "only the descend into b: {acts:?}");
        assert!(matches!(acts[0], Action::Descend { .. }));
    }

    #[test]
    fn new_entries_are_created_with_plus_codes() {
        let s = vec![
            e("a", Kind::File),
            e("b", Kind::Dir),
            e("c", Kind::Symlink),
            e("d", Kind::Fifo),
        ];
        let acts = plan(&s, &[], &opts());
        assert!(
            matches!(&acts[0], Action::Copy { dst: None, change, .. } if change.code() == ">f+++++++++")
        );
        assert!(matches!(&acts[1], Action::Mkdir { .. }));
        assert!(
            matches!(&acts[2], Action::Symlink { change, .. } if change.code() == "cL+++++++++")
        );
        assert!(
            matches!(&acts[3], Action::Special { change, .. } if change.code() == "cS+++++++++")
        );
    }

    #[test]
    fn quick_check_size_and_time() {
        let s = e("a", Kind::File);
        let mut d = s.clone();
        d.size = 11;
        let acts = plan(std::slice::from_ref(&s), &[d.clone()], &opts());
        assert!(matches!(&acts[0], Action::Copy { change, .. } if change.code() == ">f.s......."));
        d.size = 10;
        d.mtime = Time::new(1, 0);
        let acts = plan(std::slice::from_ref(&s), &[d], &opts());
        assert!(matches!(&acts[0], Action::Copy { change, .. } if change.code() == ">f..t......"));
    }

    #[test]
    fn modify_window_absorbs_coarse_times() {
        let s = e("a", Kind::File);
        let mut d = s.clone();
        d.mtime = Time::new(s.mtime.sec, 0);
        let mut o = opts();
        assert_eq!(
            plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &o).len(),
            1
        );
        o.modify_window_ns = 1_000_000_000;
        assert!(plan(&[s], &[d], &o).is_empty());
    }

    #[test]
    fn attrs_only() {
        let s = e("a", Kind::File);
        let mut d = s.clone();
        d.mode = 0o600;
        d.uid = 0;
        let acts = plan(&[s], &[d], &opts());
        assert!(matches!(&acts[0], Action::Attrs { change, .. } if change.code() == ".f...po...."));
    }

    #[test]
    fn perms_not_compared_when_not_preserved() {
        let s = e("a", Kind::File);
        let mut d = s.clone();
        d.mode = 0o600;
        let mut o = opts();
        o.preserve.perms = false;
        assert!(plan(&[s], &[d], &o).is_empty());
    }

    #[test]
    fn extraneous_deleted_only_with_delete() {
        let d = vec![e("x", Kind::File), e("y", Kind::Dir)];
        assert!(plan(&[], &d, &opts()).is_empty());
        let mut o = opts();
        o.delete = true;
        let acts = plan(&[], &d, &o);
        assert_eq!(acts.len(), 2);
        assert!(acts.iter().all(|a| matches!(
            a,
            Action::Delete {
                replaced: false,
                ..
            }
        )));
    }

    #[test]
    fn dir_replaced_by_file_deletes_first_even_without_delete() {
        let s = vec![e("a", Kind::File), e("b", Kind::Dir)];
        let d = vec![e("a", Kind::Dir), e("b", Kind::File)];
        let acts = plan(&s, &d, &opts());
        assert!(
            matches!(&acts[0], Action::Delete { dst, replaced: true } if dst.kind == Kind::Dir)
        );
        assert!(
            matches!(&acts[1], Action::Delete { dst, replaced: true } if dst.kind == Kind::File)
        );
        assert!(matches!(&acts[2], Action::Copy { dst: None, .. }));
        assert!(matches!(&acts[3], Action::Mkdir { .. }));
    }

    #[test]
    fn non_dir_type_change_replaces_by_rename() {
        let s = vec![e("a", Kind::File), e("b", Kind::Symlink)];
        let d = vec![e("a", Kind::Symlink), e("b", Kind::Fifo)];
        let acts = plan(&s, &d, &opts());
        assert_eq!(acts.len(), 2);
        assert!(matches!(&acts[0], Action::Copy { dst: Some(d), .. } if d.kind == Kind::Symlink));
        assert!(matches!(&acts[1], Action::Symlink { dst: Some(_), .. }));
    }

    #[test]
    fn groups_are_compared_only_where_they_can_be_given() {
        let s = e("a", Kind::File);
        let mut d = s.clone();
        d.gid = 2000;
        let code = |o: &PlanOptions| {
            let acts = plan(std::slice::from_ref(&s), std::slice::from_ref(&d), o);
            match acts.as_slice() {
                [Action::Attrs { change, .. }] => Some(change.code()),
                [] => None,
                other => panic!("{other:?}"),
            }
        };
        // As root (no member set) every group is compared.
        assert_eq!(code(&opts()).as_deref(), Some(".f.....g..."));
        let member = PlanOptions {
            member_groups: Some(vec![7, s.gid]),
            ..opts()
        };
        assert_eq!(code(&member).as_deref(), Some(".f.....g..."));
        let outsider = PlanOptions {
            member_groups: Some(vec![7, 2000]),
            ..opts()
        };
        assert_eq!(code(&outsider), None, "a group the user cannot give");
    }

    #[test]
    fn hard_link_groups_are_compared_by_count() {
        let mut s = e("a", Kind::File);
        s.nlink = 2;
        let mut d = s.clone();
        assert!(plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &opts()).is_empty());
        d.nlink = 1;
        let acts = plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &opts());
        assert!(matches!(&acts[0], Action::Copy { change, .. } if change.code() == "hf........."));
        let no_h = PlanOptions {
            hard_links: false,
            ..opts()
        };
        assert!(plan(&[s], &[d], &no_h).is_empty());
    }

    #[test]
    fn link_groups_of_symlinks_and_specials_are_compared_by_count() {
        for kind in [Kind::Symlink, Kind::Fifo, Kind::Socket, Kind::CharDev] {
            let mut s = e("a", kind);
            s.nlink = 3;
            let mut d = s.clone();
            assert!(plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &opts()).is_empty());
            assert!(is_linked(&s, &opts()));
            d.nlink = 1;
            let acts = plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &opts());
            assert_eq!(acts.len(), 1, "{kind:?}");
            assert!(action_change(&acts[0]).is_some_and(|c| c.hardlink && !c.checksum));
            // Broken in the source: made anew, outside the link area.
            (s.nlink, d.nlink) = (1, 2);
            let acts = plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &opts());
            assert!(action_change(&acts[0]).is_some_and(|c| !c.hardlink));
            assert!(!is_linked(&s, &opts()));
        }
    }

    fn action_change(a: &Action) -> Option<Change> {
        match a {
            Action::Symlink { change, .. } | Action::Special { change, .. } => Some(*change),
            _ => None,
        }
    }

    #[test]
    fn xattrs_compared_only_when_source_status_is_newer() {
        let mut s = e("a", Kind::File);
        let mut d = s.clone();
        d.ctime = Time::new(10, 0);
        s.ctime = Time::new(5, 0);
        assert!(plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &opts()).is_empty());
        s.ctime = Time::new(11, 0);
        let acts = plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &opts());
        assert!(matches!(&acts[0], Action::Attrs { change, .. } if !change.any()));
        let off = PlanOptions {
            xattrs: false,
            ..opts()
        };
        assert!(plan(&[s], &[d], &off).is_empty());
    }

    #[test]
    fn listed_flags_are_compared_on_every_run() {
        let mut s = e("a", Kind::File);
        let mut d = s.clone();
        // Target written after the source: xattrs are not compared.
        d.ctime = Time::new(10, 0);
        (s.flags, d.flags) = (Some(crate::fsattr::IMMUTABLE), Some(0));
        let acts = plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &opts());
        assert!(
            matches!(&acts[..], [Action::Attrs { change, .. }] if change.code() == ".f........x"),
            "{acts:?}"
        );
        // Not reported by one side: not compared.
        d.flags = None;
        assert!(plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &opts()).is_empty());
        d.flags = Some(0);
        let off = PlanOptions {
            file_flags: false,
            ..opts()
        };
        assert!(plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &off).is_empty());
        // A file of several names: immutable and append-only compared
        // (set on its group's inode by the last phase), nodump not.
        (s.nlink, d.nlink) = (2, 2);
        let acts = plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &opts());
        assert!(
            matches!(&acts[..], [Action::Attrs { change, .. }] if change.code() == ".f........x"),
            "{acts:?}"
        );
        s.flags = Some(crate::fsattr::NODUMP);
        assert!(plan(&[s], &[d], &opts()).is_empty());
    }

    #[test]
    fn min_age_leaves_young_entries_alone_and_keeps_their_targets() {
        let mut young = e("y", Kind::File);
        young.ctime = Time::new(995, 0);
        let mut old = e("z", Kind::File);
        old.ctime = Time::new(900, 0);
        let o = PlanOptions {
            min_age_ns: 10_000_000_000,
            now: Time::new(1000, 0),
            delete: true,
            ..opts()
        };
        let dst_y = {
            let mut d = young.clone();
            d.size = 1;
            d
        };
        let acts = plan(&[young.clone(), old.clone()], &[dst_y], &o);
        assert!(
            matches!(&acts[0], Action::TooYoung { src } if src.name == young.name),
            "{acts:?}"
        );
        assert!(matches!(&acts[1], Action::Copy { src, .. } if src.name == old.name));
        assert_eq!(
            acts.len(),
            2,
            "the young file's old target is neither replaced nor deleted"
        );
        let mut dir = e("d", Kind::Dir);
        dir.ctime = Time::new(999, 0);
        assert!(!too_young(&dir, &o), "directories are always entered");
    }

    #[test]
    fn checksum_compares_same_size_files_by_content() {
        let s = e("a", Kind::File);
        let mut d = s.clone();
        let o = PlanOptions {
            checksum: true,
            ..opts()
        };
        assert!(matches!(
            &plan(std::slice::from_ref(&s), std::slice::from_ref(&d), &o)[0],
            Action::Compare { .. }
        ));
        d.size = 99;
        assert!(matches!(&plan(&[s], &[d], &o)[0], Action::Copy { .. }));
    }

    #[test]
    fn symlink_target_change() {
        let s = e("l", Kind::Symlink);
        let mut d = s.clone();
        d.link = Some(Name::from("other"));
        let acts = plan(&[s], &[d], &opts());
        assert!(
            matches!(&acts[0], Action::Symlink { change, .. } if change.code() == "cLc........")
        );
    }

    #[test]
    fn device_number_change_recreates() {
        let mut s = e("dev", Kind::CharDev);
        s.rdev = 5;
        let d = e("dev", Kind::CharDev);
        assert!(matches!(
            &plan(&[s], &[d], &opts())[0],
            Action::Special { dst: Some(_), .. }
        ));
    }

    fn arb_kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::File),
            Just(Kind::Dir),
            Just(Kind::Symlink),
            Just(Kind::Fifo)
        ]
    }

    fn arb_listing() -> impl Strategy<Value = Vec<Entry>> {
        proptest::collection::btree_map(
            "[a-e]{1,2}",
            (arb_kind(), 0u64..4, 0u32..0o777, 0i64..3, 0u32..3),
            0..12,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(n, (k, size, mode, t, uid))| {
                    let mut x = e(&n, k);
                    x.size = size;
                    x.mode = mode;
                    x.mtime = Time::new(t, 0);
                    x.uid = uid;
                    if k == Kind::Symlink {
                        x.link = Some(Name::from(format!("t{size}").as_str()));
                    }
                    x
                })
                .collect()
        })
    }

    /// Applies a plan to a listing the way a perfect executor would.
    fn apply(src: &[Entry], dst: &[Entry], acts: &[Action]) -> Vec<Entry> {
        let mut out: std::collections::BTreeMap<Name, Entry> =
            dst.iter().map(|d| (d.name.clone(), d.clone())).collect();
        for a in acts {
            match a {
                Action::Delete { dst, .. } => {
                    out.remove(&dst.name);
                }
                Action::Mkdir { src }
                | Action::Descend { src, .. }
                | Action::Copy { src, .. }
                | Action::Symlink { src, .. }
                | Action::Special { src, .. }
                | Action::Compare { src, .. }
                | Action::Attrs { src, .. } => {
                    out.insert(src.name.clone(), src.clone());
                }
                Action::TooYoung { .. } => {}
            }
        }
        let _ = src;
        out.into_values().collect()
    }

    proptest! {
        #[test]
        fn planning_after_a_sync_yields_no_actions(src in arb_listing(), dst in arb_listing(), delete: bool) {
            let o = PlanOptions { delete, ..opts() };
            let acts = plan(&src, &dst, &o);
            let after = apply(&src, &dst, &acts);
            let again = plan(&src, &after, &o);
            prop_assert!(again.iter().all(|a| matches!(a, Action::Descend { .. })), "{again:?}");
            if delete {
                prop_assert_eq!(after.len(), src.len());
            }
        }

        #[test]
        fn every_source_name_is_acted_on_or_equal(src in arb_listing(), dst in arb_listing()) {
            let acts = plan(&src, &dst, &opts());
            for s in &src {
                let acted = acts.iter().any(|a| !matches!(a, Action::Delete { .. }) && a.name() == &s.name);
                // Equal in everything the planner compares (symlink modes are not).
                let equal = dst.iter().any(|d| {
                    d.name == s.name
                        && d.kind == s.kind
                        && !attr_change(s, d, &opts()).any()
                        && (s.kind != Kind::File || d.size == s.size)
                        && d.link == s.link
                });
                prop_assert!(acted || equal, "{s:?} neither acted on nor equal");
            }
        }

        #[test]
        fn deletions_come_before_creations(src in arb_listing(), dst in arb_listing()) {
            let acts = plan(&src, &dst, &PlanOptions { delete: true, ..opts() });
            let first_other = acts.iter().position(|a| !matches!(a, Action::Delete { .. })).unwrap_or(acts.len());
            let late_delete = acts[first_other..].iter().any(|a| matches!(a, Action::Delete { .. }));
            prop_assert!(!late_delete, "{:?}", acts);
        }

        /// Planned part by part, freed as it goes: the same actions, in
        /// the same order, whatever the parts' size.
        #[test]
        fn planning_in_parts_is_planning_whole(src in arb_listing(), dst in arb_listing(), delete: bool, xattrs: bool, part in 1usize..6) {
            let o = PlanOptions { delete, xattrs, xattrs_always: xattrs, ..opts() };
            let whole = plan(&src, &dst, &o);
            prop_assert_eq!(plan_owned(src.clone(), dst.clone(), &o, part), whole.clone());
            prop_assert_eq!(RsyncPlanner.plan_owned(src, dst, &o), whole);
        }
    }
}
