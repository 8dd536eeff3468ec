//! A dry run's hard links: the names of groups the walk found are kept
//! in memory and decided together at the run's end, as the real run's
//! last phase decides them from its link area (links.rs), so that `-n -i`
//! prints the lines the real run will: one `hf+++++++++ NEW => LEADER`
//! for a new name of a group, one line for an attribute change of a
//! group's inode. A dry run writes nothing, so there is no link area to
//! share: the names are shared by the engines of one process only, and a
//! broker's workers (each with some of a run's tasks) itemize each name
//! as its directory's task meets it instead
//! ([`crate::EngineContext::dry_links`]).

use super::Engine;
use super::links::{action_source, action_target, members, needs_work};
use crate::entry::{Entry, Kind, RelPath};
use crate::event::Event;
use crate::fs::Dir;
use crate::itemize::Change;
use crate::plan::Action;
use crate::xattr::Node;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

/// The hard-linked names a dry run found (with what the walk planned for
/// each, by path: a second delivery of a directory's task notes the same
/// again), for `Engine::decide_dry_links`.
#[derive(Debug, Default)]
pub struct DryLinks(Mutex<BTreeMap<Vec<u8>, (RelPath, Action)>>);

impl DryLinks {
    fn note(&self, rel: &RelPath, action: Action) {
        let Some(src) = action_source(&action) else {
            return;
        };
        let path = rel.join(&src.name).as_bytes().to_vec();
        let mut names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        names.insert(path, (rel.clone(), action));
    }
}

/// The entries of a noted name.
fn parts(a: &Action) -> Option<(&Entry, Option<&Entry>, Change)> {
    match a {
        Action::Copy { src, dst, change }
        | Action::Symlink { src, dst, change }
        | Action::Special { src, dst, change } => Some((src, dst.as_ref(), *change)),
        Action::Attrs { src, dst, change } => Some((src, Some(dst), *change)),
        _ => None,
    }
}

impl Engine {
    /// A dry run's action for a hard-linked name: noted for the end of
    /// the run, with what of its target's xattrs, ACLs and flags differs
    /// (read now, while its directories are open).
    pub(super) fn note_dry_linked(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        dir: Option<&Dir>,
        action: Action,
    ) {
        let action = match (action, dir) {
            (
                Action::Attrs {
                    src,
                    dst,
                    mut change,
                },
                Some(d),
            ) => {
                if self.xattr_source(Some(&dst), &src) {
                    let nodes = (Node::At(src_dir, &src.name), Node::At(d, &src.name));
                    self.mark_xattrs(nodes, &mut change);
                }
                change.xattr |= self.fsattrs_differ(src_dir, d, &src, &dst);
                Action::Attrs { src, dst, change }
            }
            (other, _) => other,
        };
        if let Some(notes) = &self.dry_links {
            notes.note(rel, action);
        }
    }

    /// A dry run's hard-linked names of a directory that need nothing
    /// (members): a group with work elsewhere links them (see
    /// `Engine::record_members`).
    pub(super) fn note_dry_members(
        &self,
        rel: &RelPath,
        src: &[Entry],
        dst: &[Entry],
        actions: &[Action],
    ) {
        let Some(notes) = &self.dry_links else { return };
        for a in members(src, dst, actions, &self.plan_opts) {
            notes.note(rel, a);
        }
    }

    /// The dry run's last phase, at the root's finish: itemizes the noted
    /// names group by group as `decide_links` and the link protocol would
    /// sync them. Names whose data is right go first (in path order): the
    /// first one's target becomes the group's inode, and a name whose
    /// target is another inode is linked to it (`hf`); then the names
    /// with data to copy: linked to that inode, or the first one copied
    /// and the others linked to it. An attribute change of the group's
    /// inode is itemized once, for the first name that has it. Nothing is
    /// taken out of the notes: a second delivery of the root's finish
    /// decides the same.
    pub(super) fn decide_dry_links(&self) {
        let Some(notes) = &self.dry_links else { return };
        // Decided in place, not copied: the notes are most of a dry run's
        // memory on a tree of hard links (no task notes more by now but a
        // second delivery, which waits).
        let names = notes.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut groups: HashMap<_, Vec<&(RelPath, Action)>> = HashMap::new();
        let mut order = Vec::new();
        for noted in names.values() {
            let Some(id) = action_source(&noted.1).map(|s| self.source_id(s)) else {
                continue;
            };
            let group = groups.entry(id).or_insert_with(|| {
                order.push(id);
                Vec::new()
            });
            group.push(noted);
        }
        for id in order {
            if let Some(group) = groups.remove(&id) {
                self.decide_dry_group(&group);
            }
        }
    }

    /// One group of [`Engine::decide_dry_links`], its names in path order.
    fn decide_dry_group(&self, names: &[&(RelPath, Action)]) {
        let work = names.iter().any(|(_, a)| needs_work(a));
        let targets: HashSet<Option<(u64, u64)>> = names
            .iter()
            .map(|(_, a)| action_target(a).map(|d| (d.dev, d.ino)))
            .collect();
        let split = targets.len() > 1 || targets.contains(&None);
        // Inodes whose attribute change was itemized.
        let mut fixed = HashSet::new();
        if names.len() == 1 || !(work || split) {
            // Its only name in the tree (copied as a file of one link),
            // or names that are one inode already: planned changes, an
            // attribute change once per inode.
            for (rel, a) in names {
                let Some((src, dst, change)) = parts(a) else {
                    continue;
                };
                match dst {
                    _ if needs_work(a) => self.dry_made(rel, src, dst, change),
                    // A member: nothing to do.
                    _ if matches!(a, Action::Attrs { .. }) && !change.any() => {}
                    Some(d) => self.dry_fix(rel, src, d, change, &mut fixed),
                    None => {}
                }
            }
            return;
        }
        // The group's inode (`None`: a copy) and the name that made it.
        let mut leader: Option<(RelPath, Option<(u64, u64)>)> = None;
        let (right, copies): (Vec<_>, Vec<_>) =
            names.iter().copied().partition(|(_, a)| !needs_work(a));
        for (rel, a) in right {
            let Some((src, Some(d), change)) = parts(a) else {
                continue;
            };
            let inode = Some((d.dev, d.ino));
            match &leader {
                None if self.dry_quick_ok(src, d) => {
                    leader = Some((rel.join(&src.name), inode));
                    self.dry_fix(rel, src, d, change, &mut fixed);
                }
                Some((_, at)) if *at == inode => self.dry_fix(rel, src, d, change, &mut fixed),
                Some((to, _)) => self.dry_joined(rel, src, Some(d), change, to),
                None => {
                    leader = Some((rel.join(&src.name), None));
                    self.dry_made(rel, src, Some(d), change);
                }
            }
        }
        for (rel, a) in copies {
            let Some((src, dst, change)) = parts(a) else {
                continue;
            };
            match &leader {
                Some((to, _)) => self.dry_joined(rel, src, dst, change, to),
                None => {
                    leader = Some((rel.join(&src.name), None));
                    self.dry_made(rel, src, dst, change);
                }
            }
        }
    }

    /// True when the link protocol would publish `d` as the group's inode
    /// (see `copy_linked`'s `quick_ok`; a node of the same type is right).
    fn dry_quick_ok(&self, src: &Entry, d: &Entry) -> bool {
        d.kind == src.kind
            && (src.kind != Kind::File
                || (d.size == src.size
                    && !self.plan_opts.ignore_times
                    && src.mtime.within(d.mtime, self.plan_opts.modify_window_ns)))
    }

    /// A name whose target is the group's inode: its attribute change
    /// (with the xattrs, ACLs and flags found differing when noted),
    /// once per inode. A member (nothing planned) was counted when its
    /// directory was planned.
    fn dry_fix(
        &self,
        rel: &RelPath,
        src: &Entry,
        d: &Entry,
        noted: Change,
        fixed: &mut HashSet<(u64, u64)>,
    ) {
        let mut due = crate::plan::attr_change(src, d, &self.plan_opts);
        due.xattr |= noted.xattr;
        due.acl |= noted.acl;
        if due.any() && fixed.insert((d.dev, d.ino)) {
            self.itemize(rel.join(&src.name), Some(due), src);
            self.count(|c| {
                c.attrs_updated += 1;
                c.done += 1;
            });
        } else if noted.any() {
            self.count(|c| {
                c.unchanged += 1;
                c.done += 1;
            });
        }
    }

    /// A name copied or made as planned.
    fn dry_made(&self, rel: &RelPath, src: &Entry, dst: Option<&Entry>, change: Change) {
        if change.transfer {
            self.count(|c| c.bytes_to_copy += src.size);
        }
        self.itemize(rel.join(&src.name), Some(change), src);
        self.count_change(dst.is_some() && !change.new);
    }

    /// A name linked to the group's inode, which `leader` made or
    /// published: rsync's `hf... PATH => LEADER`.
    fn dry_joined(
        &self,
        rel: &RelPath,
        src: &Entry,
        dst: Option<&Entry>,
        change: Change,
        leader: &RelPath,
    ) {
        self.count_change(dst.is_some());
        if !self.itemize {
            return;
        }
        let mut c = match dst {
            None => Change::new_entry(src.kind),
            Some(_) => change,
        };
        c.hardlink = true;
        c.transfer = false;
        self.emit(Event::Itemize {
            path: rel.join(&src.name),
            change: Some(c),
            kind: src.kind,
            link: Some(leader.clone()),
        });
    }
}
