//! Hard links across workers without shared memory: a link area on the
//! target, keyed by source device and inode, with an O_EXCL claim so each
//! group's data is copied once and RENAME_NOREPLACE publication (ADR 001).

use crate::engine::ident::SourceId;
use crate::engine::{CopyFail, Engine, Made, Shared};
use crate::entry::{Entry, Kind, Name, RelPath, Time};
use crate::error::Op;
use crate::event::Event;
use crate::fs::Dir;
use crate::fsattr::PROTECT;
use crate::itemize::Change;
use crate::plan::{Action, PlanOptions, is_linked};
use crate::task::Task;
use crate::transport::TaskContext;
use std::io;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

/// Buckets of the link area: its keys are spread over this many
/// subdirectories, so that workers creating and renaming keys do not all
/// take turns on one directory's lock, nor search one huge directory.
const BUCKETS: usize = 256;

/// The hard-link area of a run, with its subdirectories opened once.
///
/// Everything the run knows of its hard links is in the area, on the
/// target, so that any engine of the run (on any node) carries on from
/// what another one did: the walk's records (`pending/`, and `parts/`
/// when sorted there), the copies the last phase holds back for its
/// later passes (`held/`), the directories' identities (in the records,
/// as `Task::Links::at`); which pass the phase is at travels in the
/// root's finish (`Task::FinishDir::pass`). What an engine keeps here
/// in memory is only its handles.
#[derive(Debug)]
pub(crate) struct LinkArea {
    root: Dir,
    pending: OnceLock<Result<Dir, i32>>,
    held: OnceLock<Result<Dir, i32>>,
    parts: OnceLock<Result<Dir, i32>>,
    buckets: Vec<OnceLock<Result<Dir, i32>>>,
}

impl LinkArea {
    fn new(root: Dir) -> LinkArea {
        LinkArea {
            root,
            pending: OnceLock::new(),
            held: OnceLock::new(),
            parts: OnceLock::new(),
            buckets: (0..BUCKETS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The subdirectory `name()` of the area, made on first use.
    fn subdir<'a>(
        &self,
        cell: &'a OnceLock<Result<Dir, i32>>,
        name: impl FnOnce() -> Vec<u8>,
    ) -> io::Result<&'a Dir> {
        let made = cell.get_or_init(|| {
            let name = name();
            let code = |e: io::Error| e.raw_os_error().unwrap_or(libc::EIO);
            match self.root.mkdir(&name, 0o700) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(code(e)),
            }
            self.root.open_dir(&name).map_err(code)
        });
        made.as_ref()
            .map_err(|&code| io::Error::from_raw_os_error(code))
    }

    /// True when the area this handle holds was removed (by the run's
    /// end, on this engine or another: a second delivery of the root's
    /// last finish finds it so).
    fn removed(&self) -> bool {
        self.root.fstat().is_ok_and(|st| st.st_nlink == 0)
    }

    /// The directory of the deferred hard-link copies.
    fn pending(&self) -> io::Result<&Dir> {
        self.subdir(&self.pending, || PENDING.to_vec())
    }

    /// The directory of the copies held back for the last phase's second
    /// pass (see [`Engine::link_pass`]).
    fn held(&self) -> io::Result<&Dir> {
        self.subdir(&self.held, || HELD.to_vec())
    }

    /// The directory of the walk's records sorted by slot, when they do
    /// not fit in memory (see [`Sorter`]).
    fn parts(&self) -> io::Result<&Dir> {
        self.subdir(&self.parts, || PARTS.to_vec())
    }

    /// The bucket holding the keys (and notes) of the source file `id`.
    fn bucket(&self, id: SourceId) -> io::Result<&Dir> {
        let i = id.hash() as usize % BUCKETS;
        self.subdir(&self.buckets[i], || format!("{i:02x}").into_bytes())
    }
}

impl Engine {
    /// Records the actions of a directory's hard-linked entries for the
    /// run's last phase, as one small file in the link area (on the
    /// target, so any worker of any node can pick it up). `origin` names
    /// what records them within the directory (its walk, or one file's
    /// `--checksum` comparison): a second delivery of that task finds
    /// its record there and leaves it.
    pub(crate) fn defer_linked(
        &self,
        rel: &RelPath,
        at: Option<(u64, u64)>,
        actions: &[Action],
        origin: &[u8],
    ) -> io::Result<()> {
        self.write_record(rel, at, actions, ACTION_RECORDS, origin)
    }

    /// Records the hard-linked names of a directory that need nothing
    /// (members): a group that gains a name elsewhere in this run must
    /// link it to their inode. Recorded apart, and read in the last phase
    /// only for groups that have work, so a re-sync where nothing changed
    /// writes one small file per such directory and registers nothing.
    pub(crate) fn record_members(
        &self,
        rel: &RelPath,
        at: Option<(u64, u64)>,
        (src, dst): (&[Entry], &[Entry]),
        actions: &[Action],
        origin: &[u8],
    ) {
        let found = members(src, dst, actions, &self.plan_opts);
        if found.is_empty() {
            return;
        }
        if let Err(e) = self.write_record(rel, at, &found, MEMBERS, origin)
            && !self.stop_if_unwritable(rel, Op::Create, &e)
        {
            let why = format!("cannot record its hard-linked names: {e}");
            self.warn(rel, true, Op::Create, &why);
        }
    }

    /// Writes one record (a `Task::Links`) of the walk in the area's
    /// `pending/`, named after its directory, kind and origin (see
    /// [`record_name`]), once.
    fn write_record(
        &self,
        rel: &RelPath,
        at: Option<(u64, u64)>,
        actions: &[Action],
        prefix: &[u8],
        origin: &[u8],
    ) -> io::Result<()> {
        let pending = self.link_area()?.pending()?;
        let task = Task::Links {
            rel: rel.clone(),
            actions: actions.to_vec(),
            at,
        };
        let bytes = task.encode().map_err(io::Error::other)?;
        self.write_once(pending, &record_name(prefix, rel, origin), &bytes)
    }

    /// Writes `bytes` as the file `name` of `dir` (in the link area),
    /// unless it is there already: written under a private temporary
    /// name, then renamed to `name` without replacing, so a reader finds
    /// all of it or nothing, and a second delivery of the task that
    /// writes it leaves the first one's (what the same task found and
    /// decided: the same records). A temporary left by a worker that
    /// died is skipped by readers and goes with the area.
    fn write_once(&self, dir: &Dir, name: &Name, bytes: &[u8]) -> io::Result<()> {
        if dir.stat(name.as_bytes()).is_ok() {
            return Ok(());
        }
        let tmp = self.temp_name();
        let placed = dir
            .create_excl(tmp.as_bytes())
            .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, bytes, 0))
            .and_then(|()| dir.rename_noreplace(tmp.as_bytes(), name.as_bytes()));
        match placed {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = dir.unlink(tmp.as_bytes());
                match e.kind() {
                    io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                }
            }
        }
    }

    /// One pass of the run's last phase, run by the root's finish
    /// (`FinishDir` of the root, pass `pass`); true when it spawned work
    /// and the root's finish runs again for the next pass, false when
    /// the phase is over (or the run has no link area): the area is then
    /// removed and the root's attributes set.
    ///
    /// - Pass 0 decides the walk's records ([`Engine::decide_recorded`]):
    ///   the first pass's `Links` (or the `LinkSlots` that spawn them),
    ///   and the copies held for the second pass in `held/`.
    /// - Passes 1 to N spawn the held copies, a bounded part per pass
    ///   ([`held_parts`]).
    /// - Pass N + 1 spawns the area's removal, bucket by bucket.
    ///
    /// Every pass bears a second delivery: what it reads is left where
    /// it is until the area's removal, and is not written again in the
    /// meantime (`held/` is complete once pass 0 and all it spawned are
    /// done, and stays until the area goes), so a second delivery of a
    /// pass reads and decides what the first did; what it writes is
    /// written once ([`Engine::write_once`]); and its spawns and the next
    /// pass have the first delivery's ids, so the transport runs them
    /// once.
    pub(crate) fn link_pass(&self, pass: u32, cx: &mut dyn TaskContext) -> bool {
        let Some(area) = self.find_link_area() else {
            return false;
        };
        if area.removed() {
            // By an earlier delivery of the last pass, on this engine.
            return false;
        }
        if pass == 0 {
            self.decide_recorded(area, cx);
            return true;
        }
        let parts = held_parts(area);
        let part = usize::try_from(pass - 1).unwrap_or(usize::MAX);
        match parts.get(part) {
            Some(names) => self.spawn_held(area, names, cx),
            None if part == parts.len() => self.spawn_link_area_removal(area, cx),
            None => return false,
        }
        true
    }

    /// The last phase's first pass: spawns the recorded hard-link work,
    /// one task per directory. Paths whose data is already right run
    /// first, publishing their group's inode; the copies are held for the
    /// second pass (in `held/`), so a new path of a group links to that
    /// inode instead of copying. A group with nothing to copy whose
    /// paths' targets are one inode already is linked to paths outside
    /// the tree: it needs nothing; a group with a single path here is
    /// copied like a file of one link.
    ///
    /// Memory does not grow with the records: they are read one at a
    /// time and kept by the slot of their source inode (see [`Sorter`]);
    /// when they do not fit in [`MEM_RECORDS`], they go to the area's
    /// `parts/`, one file per slot, and [`Task::LinkSlots`] tasks decide
    /// a bounded range of slots each ([`Engine::run_link_slots`]). The
    /// `sorted` marker says they are all there: a second delivery of this
    /// pass spawns the same `LinkSlots` without sorting them again.
    fn decide_recorded(&self, area: &LinkArea, cx: &mut dyn TaskContext) {
        let sorted = area
            .root
            .stat(SORTED)
            .is_ok_and(|st| not_private(&st, libc::S_IFREG, 0o600).is_none());
        let decided = match sorted {
            true => None,
            false => match area.pending() {
                Ok(pending) => self.sort_records(area, pending),
                Err(_) => return,
            },
        };
        match decided {
            Some((recorded, dirs)) => self.decide_links(area, recorded, &dirs, ROOT_HELD, cx),
            None => {
                if !sorted {
                    // Where it cannot be made, a second delivery sorts
                    // the records again, into the same parts.
                    let _ = area.root.create_excl(SORTED);
                }
                for lane in 0..LANES {
                    cx.spawn(Task::LinkSlots {
                        rel: RelPath::root(),
                        from: lane * SLOTS / LANES,
                        to: (lane + 1) * SLOTS / LANES,
                    });
                }
            }
        }
    }

    /// Reads the walk's records (`pending/`), one at a time: every
    /// action record, then the members of the groups those touch (the
    /// others need nothing; without any action record the members are
    /// not read). Nothing is removed: a second delivery of the pass reads
    /// them again (they go with the area). `None` when they did not fit
    /// in memory and are in the area's `parts/` instead (see [`Sorter`]).
    #[allow(clippy::type_complexity)]
    fn sort_records(
        &self,
        area: &LinkArea,
        pending: &Dir,
    ) -> Option<(
        Vec<(RelPath, Action)>,
        std::collections::HashMap<RelPath, (u64, u64)>,
    )> {
        let id = |e: &Entry| self.source_id(e);
        let mut sorter = Sorter::new(area, &id);
        let read = |name: &[u8], kind: usize, sorter: &mut Sorter<'_>| {
            if let Some(Task::Links { rel, actions, at }) = read_record(pending, name) {
                sorter.add(kind, &rel, at, actions);
            }
        };
        let _ = pending.each_name(|name, _| {
            if name.starts_with(ACTION_RECORDS) {
                read(name, ACTIONS, &mut sorter);
            }
            Ok(())
        });
        if sorter.any_action {
            let _ = pending.each_name(|name, _| {
                if name.starts_with(MEMBERS) {
                    read(name, MEMBER_RECORDS, &mut sorter);
                }
                Ok(())
            });
        }
        sorter.finish()
    }

    /// One [`Task::LinkSlots`]: decides the groups whose records are in
    /// the area's slots from `from` on (as many as fit in
    /// [`SLOT_TASK_BYTES`], at least one), and defers the same for the
    /// rest of `..to`: one range at a time per task, so the records in
    /// memory and the `Links` tasks spawned at once stay bounded whatever
    /// the number of hard-linked paths. The slots' files are read, not
    /// removed (they go with the area): a second delivery reads the same
    /// range, holds the same copies (`held/`, named after the range) and
    /// defers the same next range.
    pub(crate) fn run_link_slots(&self, from: u32, to: u32, cx: &mut dyn TaskContext) {
        let Some(area) = self.find_link_area() else {
            return;
        };
        let parts = match area.parts() {
            Ok(p) => p,
            Err(e) => {
                let path = RelPath::from_bytes(self.link_area_name().0).join(&Name::from("parts"));
                return self.fail(&path, true, Op::OpenDir, e);
            }
        };
        let size = |slot: u32| -> u64 {
            [ACTIONS, MEMBER_RECORDS]
                .iter()
                .filter_map(|&k| parts.stat(slot_file(slot, k).as_bytes()).ok())
                .map(|st| u64::try_from(st.st_size).unwrap_or(0))
                .sum()
        };
        let (mut end, mut bytes) = (from, 0u64);
        while end < to {
            let s = size(end);
            if end > from && bytes + s > SLOT_TASK_BYTES {
                break;
            }
            bytes += s;
            end += 1;
        }
        let read = |kind: usize| -> Vec<Vec<u8>> {
            (from..end)
                .filter_map(|slot| read_small(parts, &slot_file(slot, kind)))
                .collect()
        };
        let actions = read(ACTIONS);
        let members = read(MEMBER_RECORDS);
        let (recorded, dirs) = collect_records(&|e| self.source_id(e), &actions, &members);
        drop((actions, members));
        let held = Name(format!("s{from:03x}").into_bytes());
        self.decide_links(area, recorded, &dirs, held.as_bytes(), cx);
        if end < to {
            let next = Task::LinkSlots {
                rel: RelPath::root(),
                from: end,
                to,
            };
            self.defer(cx, next);
        }
    }

    /// Decides the last phase's work for the records of whole groups
    /// (every recorded name of each of their source inodes): spawns the
    /// first pass and holds the copies for the second, as the file `held`
    /// of `held/` (one per deciding task).
    fn decide_links(
        &self,
        area: &LinkArea,
        recorded: Vec<(RelPath, Action)>,
        dirs: &std::collections::HashMap<RelPath, (u64, u64)>,
        held: &[u8],
        cx: &mut dyn TaskContext,
    ) {
        let groups = group(&|e| self.source_id(e), &recorded);
        self.note_names(&recorded);
        let leaders = leaders(&|e| self.source_id(e), &recorded, &groups);
        let (mut register, mut copy) = (Vec::new(), Vec::new());
        for (rel, mut a) in recorded {
            let Some((id, g)) = action_source(&a).map(|src| {
                let id = self.source_id(src);
                (id, &groups[&id])
            }) else {
                continue;
            };
            let busy = g.work || g.split;
            if busy && g.paths > 1 {
                // One name of a group whose names are not one inode yet
                // goes first, alone: its inode becomes the group's, and
                // the others join it in the next pass, whatever order
                // the threads run them in (so `-i` says what `-n -i`
                // says). The others, members too, wait for that pass.
                let lead = action_source(&a)
                    .is_some_and(|src| leaders.get(&id) == Some(&rel.join(&src.name)));
                let a = if is_fix(&a) { relink(a) } else { a };
                if lead {
                    register.push((rel, a));
                } else {
                    copy.push((rel, a));
                }
                continue;
            }
            if is_member(&a) {
                // Counted when its directory was planned.
                if busy {
                    register.push((rel, a));
                }
            } else if needs_work(&a) {
                if let (1, Some(src)) = (g.paths, source_mut(&mut a)) {
                    // Its other paths are outside the tree: made like an
                    // entry of one link, without the link area.
                    src.nlink = 1;
                }
                copy.push((rel, a));
            } else if busy {
                // A name whose attributes the walk found due is relinked
                // to the group's inode like a member, then fixed.
                register.push((rel, if is_fix(&a) { relink(a) } else { a }));
            } else if is_fix(&a) {
                // The walk found its attributes due, and the group's
                // names are one inode: fixed in place, unless names the
                // source does not have share it (see `fix_linked_attrs`).
                register.push((rel, a));
            } else if let Some(fix) = self.attrs_due(a) {
                // The group's names are one inode already, but its
                // attributes may have changed with its link count: fixed
                // in place, without the link area (taking a link would
                // move the target's ctime on every run), as above.
                register.push((rel, fix));
            } else {
                // The group's paths here are one inode already, and its
                // other paths are outside the tree: nothing to do.
                self.count(|c| {
                    c.unchanged += 1;
                    c.done += 1;
                });
            }
        }
        // Nothing to register: the copies need no pass of their own.
        if register.is_empty() {
            std::mem::swap(&mut register, &mut copy);
        }
        if let Err(copy) = self.hold(area, copy, dirs, held) {
            // Not held: run with the registrations. The group's names
            // still end as one inode (the claim and publication are
            // race-free), its data perhaps copied once more.
            register.extend(copy);
        }
        self.spawn_links(register, dirs, cx);
    }

    /// Writes the copies of the last phase's second pass to the file
    /// `name` of the area's `held/` (a record per directory, each
    /// length-prefixed), once; gives them back if it cannot.
    fn hold(
        &self,
        area: &LinkArea,
        copy: Vec<(RelPath, Action)>,
        dirs: &std::collections::HashMap<RelPath, (u64, u64)>,
        name: &[u8],
    ) -> Result<(), Vec<(RelPath, Action)>> {
        if copy.is_empty() {
            return Ok(());
        }
        let Ok(held) = area.held() else {
            return Err(copy);
        };
        match held_records(&copy, dirs)
            .map(|bytes| self.write_once(held, &Name(name.to_vec()), &bytes))
        {
            Some(Ok(())) => Ok(()),
            _ => Err(copy),
        }
    }

    /// Spawns the held copies of the files `names` of `held/` (one part
    /// of [`held_parts`]): a pass of the last phase after the first.
    fn spawn_held(&self, area: &LinkArea, names: &[Name], cx: &mut dyn TaskContext) {
        let Ok(held) = area.held() else {
            return;
        };
        let bytes: Vec<Vec<u8>> = names.iter().filter_map(|n| read_small(held, n)).collect();
        let (recorded, dirs) = collect_records(&|e| self.source_id(e), &bytes, &[] as &[Vec<u8>]);
        drop(bytes);
        self.spawn_links(recorded, &dirs, cx);
    }

    /// A recorded relink of a name whose target exists and is its
    /// group's inode already, as an attribute fix (see `run_linked`),
    /// when it may owe the target attributes: mode, owner, group or mtime
    /// differ, or xattrs/ACLs may (`xattr` is set then).
    fn attrs_due(&self, a: Action) -> Option<Action> {
        let (Action::Copy {
            src,
            dst: Some(dst),
            ..
        }
        | Action::Symlink {
            src,
            dst: Some(dst),
            ..
        }
        | Action::Special {
            src,
            dst: Some(dst),
            ..
        }) = a
        else {
            return None;
        };
        let mut change = crate::plan::attr_change(&src, &dst, &self.plan_opts);
        change.xattr = self.xattr_source(Some(&dst), &src);
        change.any().then_some(Action::Attrs { src, dst, change })
    }

    /// Writes, for each group with attributes due on an existing target,
    /// the tree's names of the group (`<key>.names` in its bucket),
    /// so that whichever worker is about to change its target inode in
    /// place can count which of them are that inode now
    /// ([`Engine::links_explained`]). Nothing for a group with nothing due
    /// (a first copy, a no-op run).
    ///
    /// Also for a group whose source or target names are immutable or
    /// append-only: the target's flags are lifted ([`Engine::unlock_group`])
    /// and the source's set at the end of the phase
    /// ([`Engine::seal_groups`]) only on an inode whose links are all these
    /// names; the source's flags are noted too (`<dev>-<ino>.protect`).
    fn note_names(&self, recorded: &[(RelPath, Action)]) {
        #[derive(Default)]
        struct Noted {
            due: bool,
            protect: u32,
            paths: Vec<RelPath>,
        }
        let mut names: std::collections::HashMap<SourceId, Noted> = Default::default();
        let flags = self.copy_opts.file_flags.on();
        for (rel, a) in recorded {
            let Some(src) = action_source(a) else {
                continue;
            };
            let due = matches!(a, Action::Copy { change, .. } | Action::Symlink { change, .. }
                | Action::Special { change, .. } | Action::Attrs { change, .. }
                if change.perms || change.owner || change.group || change.time);
            let g = names.entry(self.source_id(src)).or_default();
            g.due |= due || action_target(a).is_some_and(|d| self.xattr_source(Some(d), src));
            if flags && src.kind == Kind::File {
                g.protect |= src.flags.unwrap_or(0) & PROTECT;
                g.due |= action_target(a).is_some_and(Entry::is_protected);
            }
            g.paths.push(rel.join(&src.name));
        }
        for (id, g) in names {
            let Ok(bucket) = self.link_area().and_then(|a| a.bucket(id)) else {
                continue;
            };
            let Ok(bytes) = postcard::to_stdvec(&g.paths) else {
                continue;
            };
            if g.due || g.protect != 0 {
                // Once: a second delivery of the deciding task writes
                // the same names, and a `Links` task of the first may be
                // reading them.
                let _ = self.write_once(bucket, &names_note(id), &bytes);
            }
            if g.protect != 0 {
                let bits = g.protect.to_le_bytes();
                let _ = self.write_once(bucket, &protect_note(id), &bits);
                if let Ok(area) = self.link_area() {
                    let _ = area.root.create_excl(SEALS);
                }
            }
        }
    }

    /// The distinct links among the group's noted names (the note `note`
    /// of `bucket`, see [`Engine::note_names`]) that are the inode `st`
    /// now: each counted once per directory inode and name, so a
    /// directory reached by two paths (renamed while they are counted)
    /// does not count twice. `None` without the note.
    fn noted_links(&self, bucket: &Dir, note: &Name, st: &rustix::fs::Stat) -> Option<u64> {
        let paths =
            read_small(bucket, note).and_then(|b| postcard::from_bytes::<Vec<RelPath>>(&b).ok())?;
        Some(self.links_among(&paths, st).len() as u64)
    }

    /// The links of the inode `st` among `paths` of the tree, as
    /// (directory device, directory inode, name).
    fn links_among(
        &self,
        paths: &[RelPath],
        st: &rustix::fs::Stat,
    ) -> std::collections::HashSet<(u64, u64, Vec<u8>)> {
        #[allow(clippy::unnecessary_cast)]
        let inode = (st.st_dev as u64, st.st_ino as u64);
        let mut seen = std::collections::HashSet::new();
        for path in paths {
            let Some((parent, name)) = path.split_last() else {
                continue;
            };
            let Ok(d) = self.open_dst(&parent) else {
                continue;
            };
            let (Ok(dir), Ok(at)) = (d.fstat(), d.stat(name)) else {
                continue;
            };
            #[allow(clippy::unnecessary_cast)]
            if (at.st_dev as u64, at.st_ino as u64) == inode {
                seen.insert((dir.st_dev as u64, dir.st_ino as u64, name.to_vec()));
            }
        }
        seen
    }

    /// A name that `--delete` removes, of an immutable or append-only
    /// inode of several names (listed so): its other names are not known
    /// yet, so it is not lifted here but noted in the link area (by the
    /// target inode, `g<dev>-<ino>.<hash>`), and removed in the last phase
    /// once they are (see [`Engine::unlock_group`], [`Engine::seal_groups`]).
    /// False when it is not such a name, or cannot be noted.
    pub(crate) fn defer_gone(&self, rel: &RelPath, old: &Entry) -> bool {
        if self.dry_run
            || !self.copy_opts.file_flags.on()
            || !self.plan_opts.hard_links
            || old.kind != Kind::File
            || old.nlink < 2
            || !old.is_protected()
        {
            return false;
        }
        let path = rel.join(&old.name);
        let Ok(area) = self.link_area() else {
            return false;
        };
        let Ok(bucket) = area.bucket(SourceId::Inode {
            dev: old.dev,
            ino: old.ino,
        }) else {
            return false;
        };
        let note = gone_note(old.dev, old.ino, &path);
        let noted = self.write_once(bucket, &note, path.as_bytes()).is_ok();
        if noted {
            let _ = area.root.create_excl(SEALS);
        }
        noted
    }

    /// The names noted gone (see [`Engine::defer_gone`]) of the listed
    /// target inode `dev`/`ino`.
    fn gone_paths(&self, dev: u64, ino: u64) -> Vec<RelPath> {
        let Ok(bucket) = self
            .link_area()
            .and_then(|a| a.bucket(SourceId::Inode { dev, ino }))
        else {
            return Vec::new();
        };
        let prefix = gone_prefix(dev, ino);
        let Ok(names) = bucket.names() else {
            return Vec::new();
        };
        names
            .iter()
            .filter(|n| n.as_bytes().starts_with(&prefix))
            .filter_map(|n| read_small(bucket, n))
            .map(RelPath::from_bytes)
            .collect()
    }

    /// Removes the names `paths` that are still the inode `st` (noted
    /// gone: `--delete` removes them, see [`Engine::defer_gone`]), once
    /// its immutable and append-only flags are lifted. Each directory
    /// gets its source's times back (and its own flags lifted for the
    /// removal, set again after).
    fn remove_gone(&self, paths: &[RelPath], st: &rustix::fs::Stat) {
        #[allow(clippy::unnecessary_cast)]
        let inode = (st.st_dev as u64, st.st_ino as u64);
        for path in paths {
            let Some((parent, name)) = path.split_last() else {
                continue;
            };
            let Ok(d) = self.open_dst(&parent) else {
                continue;
            };
            #[allow(clippy::unnecessary_cast)]
            let here = d
                .stat(name)
                .is_ok_and(|at| (at.st_dev as u64, at.st_ino as u64) == inode);
            if !here {
                continue;
            }
            let sealed = self.lift_dir(&parent, &d);
            match d.unlink(name) {
                Ok(()) => {
                    self.count(|c| c.deleted += 1);
                    if self.itemize {
                        self.emit(crate::event::Event::Itemize {
                            path: path.clone(),
                            change: None,
                            kind: Kind::File,
                            link: None,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => self.fail(path, true, Op::Remove, e),
            }
            if let Ok(src_dir) = self.src_root.open_beneath(&parent)
                && let Ok(sst) = src_dir.fstat()
            {
                let entry = Entry::from_stat(Name::default(), &sst);
                if let Err(e) = self.copier.set_attrs(
                    crate::xattr::Node::Fd(d.fd()),
                    &entry,
                    None,
                    &self.copy_opts,
                ) {
                    self.fail(&parent, true, e.op, e.source);
                }
            }
            if sealed != 0 {
                self.set_protect(&parent, crate::xattr::Node::Fd(d.fd()), sealed);
            }
        }
    }

    /// True when no directory of `paths` that opens could have been moved
    /// into the tree by another user ([`Engine::none_could_move_in`]).
    fn none_moved_in(&self, paths: &[RelPath]) -> bool {
        paths.iter().all(|p| {
            p.split_last()
                .and_then(|(parent, _)| self.open_dst(&parent).ok())
                .is_none_or(|d| self.none_could_move_in(&d))
        })
    }

    /// Lifts immutable and append-only from `dst`, the listed target of
    /// a name of `src`'s hard-link group in `dst_dir`, before the run
    /// links, replaces or fixes it. Only when every link of its inode is
    /// one of the group's noted names in the tree (ADR 018): while the
    /// flags are on, the kernel lets no name of the inode be made,
    /// removed or renamed, so that count cannot race. A name elsewhere
    /// (a user's file linked into the tree before it was made immutable,
    /// or a name the source does not have) keeps them: an error.
    fn unlock_group(&self, dst_dir: &Dir, src: &Entry, dst: &Entry) -> io::Result<()> {
        if self.dry_run
            || !dst.is_protected()
            || !self.copy_opts.file_flags.on()
            || dst.kind != Kind::File
        {
            return Ok(());
        }
        let Ok(h) = dst_dir.handle(src.name.as_bytes()) else {
            // Gone: whatever comes next finds that out.
            return Ok(());
        };
        if !self.fs.is(&h, dst) {
            return Ok(());
        }
        let protected =
            || crate::fsattr::get(h.node()).map(|a| a.is_some_and(|a| a.xflags() & PROTECT != 0));
        if !protected()? {
            // Lifted already, for another name of the group.
            return Ok(());
        }
        let st = rustix::fs::fstat(&h)?;
        let id = self.source_id(src);
        let bucket = self.link_area()?.bucket(id)?;
        // The group's names, and the names `--delete` removes (noted
        // gone by the walk).
        let noted = read_small(bucket, &names_note(id))
            .and_then(|b| postcard::from_bytes::<Vec<RelPath>>(&b).ok());
        let gone = self.gone_paths(dst.dev, dst.ino);
        let here = noted.map(|mut paths| {
            paths.extend(gone.iter().cloned());
            self.links_among(&paths, &st).len() as u64
        });
        #[allow(clippy::unnecessary_cast)]
        let explained = here.is_some_and(|n| st.st_nlink as u64 <= n);
        if explained && !(self.none_could_move_in(dst_dir) && self.none_moved_in(&gone)) {
            return Err(io::Error::other(
                "immutable or append-only, in a directory another user could have moved into the tree: not lifted (`chattr -ia` it by hand if it is the copy)",
            ));
        }
        if !explained {
            if !protected()? {
                // Lifted by another name's task while these were counted
                // (its names then moved on).
                return Ok(());
            }
            return Err(io::Error::other(
                "immutable or append-only, with names outside its hard-link group in the tree: not lifted",
            ));
        }
        let report = crate::fsattr::set_protect(h.node(), 0)?;
        match report.dropped.into_iter().next() {
            Some(crate::fsattr::Dropped::Flags(_, e) | crate::fsattr::Dropped::ProjectId(_, e)) => {
                Err(e)
            }
            None => {
                self.remove_gone(&gone, &st);
                Ok(())
            }
        }
    }

    /// At the end of the last phase (a bucket's removal): sets the
    /// immutable and append-only flags of each group of `bucket` whose
    /// source has them (the `<dev>-<ino>.protect` notes), on the inode
    /// the run published for it (its key, unlinked first: an immutable
    /// inode's names cannot be removed) or, when an earlier delivery
    /// unlinked that, the inode of its first noted name. Once set, no
    /// name of the inode can come or go, and its links are counted: any
    /// link that is not one of the group's noted names in the tree (a
    /// name a user added elsewhere) and the flags are put back as they
    /// were, with a warning.
    fn seal_groups(&self, bucket: &Dir, bucket_name: &Name) {
        let Ok(names) = bucket.names() else {
            return;
        };
        self.drop_gone(bucket, &names);
        for note in names
            .iter()
            .filter(|n| n.as_bytes().ends_with(PROTECT_NOTE))
        {
            let stem = &note.as_bytes()[..note.as_bytes().len() - PROTECT_NOTE.len()];
            let Some(bits) = read_small(bucket, note)
                .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
                .map(u32::from_le_bytes)
            else {
                continue;
            };
            let names_note = Name([stem, b".names"].concat());
            let path = RelPath::from_bytes(self.link_area_name().0)
                .join(bucket_name)
                .join(&Name(stem.to_vec()));
            self.seal_group(bucket, stem, &names_note, bits, &path);
        }
    }

    /// The names noted gone in `bucket` (see [`Engine::defer_gone`]) that
    /// no group's name lifted and removed: removed when every link of
    /// their inode is one of them (the inode goes), its flags lifted;
    /// else an error each, as the removal of a name of an immutable
    /// inode that other names share.
    fn drop_gone(&self, bucket: &Dir, names: &[Name]) {
        let mut inodes: std::collections::BTreeMap<&[u8], Vec<RelPath>> = Default::default();
        for n in names.iter().filter(|n| n.as_bytes().starts_with(b"g")) {
            let Some(dot) = n.as_bytes().iter().position(|&b| b == b'.') else {
                continue;
            };
            if let Some(path) = read_small(bucket, n) {
                inodes
                    .entry(&n.as_bytes()[..dot])
                    .or_default()
                    .push(RelPath::from_bytes(path));
            }
        }
        for (key, paths) in inodes {
            // Pinned by a name still there, still the inode listed (the
            // note's); the others are compared with it.
            let ino = key
                .iter()
                .position(|&b| b == b'-')
                .and_then(|i| std::str::from_utf8(&key[i + 1..]).ok())
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            let Some((h, path)) = paths.iter().find_map(|p| {
                let (parent, name) = p.split_last()?;
                Some((self.open_dst(&parent).ok()?.handle(name).ok()?, p))
            }) else {
                continue;
            };
            #[allow(clippy::unnecessary_cast)]
            let listed = Some(h.stat.st_ino as u64) == ino;
            if !listed
                || rustix::fs::FileType::from_raw_mode(h.stat.st_mode)
                    != rustix::fs::FileType::RegularFile
            {
                continue;
            }
            let protected = match crate::fsattr::get(h.node()) {
                Ok(a) => a.is_some_and(|a| a.xflags() & PROTECT != 0),
                Err(e) => {
                    self.fail(path, true, Op::FileAttr, e);
                    continue;
                }
            };
            let Ok(st) = rustix::fs::fstat(&h) else {
                continue;
            };
            if protected {
                #[allow(clippy::unnecessary_cast)]
                let all = self.links_among(&paths, &st).len() as u64 >= st.st_nlink as u64
                    && self.none_moved_in(&paths);
                let lifted = all
                    && crate::fsattr::set_protect(h.node(), 0).is_ok_and(|r| r.dropped.is_empty());
                if !lifted {
                    let why = "immutable or append-only with other names (maybe outside the tree): not lifted";
                    for p in &paths {
                        self.fail(p, true, Op::FileAttr, io::Error::other(why));
                    }
                    continue;
                }
            }
            self.remove_gone(&paths, &st);
        }
    }

    fn seal_group(&self, bucket: &Dir, key: &[u8], names_note: &Name, bits: u32, path: &RelPath) {
        let paths = read_small(bucket, names_note)
            .and_then(|b| postcard::from_bytes::<Vec<RelPath>>(&b).ok())
            .unwrap_or_default();
        let handle = match bucket.handle(key) {
            Ok(h) => {
                match bucket.unlink(key) {
                    // NotFound: by another delivery of this task.
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return self.fail(path, true, Op::Remove, e);
                    }
                    _ => {}
                }
                Some((h, path.clone()))
            }
            Err(_) => paths.iter().find_map(|p| {
                let (parent, name) = p.split_last()?;
                let h = self.open_dst(&parent).ok()?.handle(name).ok()?;
                Some((h, p.clone()))
            }),
        };
        let Some((h, mut path)) = handle else {
            return;
        };
        // Reported by a name in the tree.
        if let Some(first) = paths.first() {
            path = first.clone();
        }
        if rustix::fs::FileType::from_raw_mode(h.stat.st_mode) != rustix::fs::FileType::RegularFile
        {
            return;
        }
        let before = match crate::fsattr::get(h.node()) {
            Ok(Some(a)) => a.xflags() & PROTECT,
            Ok(None) => return,
            Err(e) => return self.fail(&path, true, Op::FileAttr, e),
        };
        if before == bits {
            return;
        }
        let report = match crate::fsattr::set_protect(h.node(), bits) {
            Ok(r) => r,
            Err(e) => return self.fail(&path, true, Op::FileAttr, e),
        };
        self.report_fsattrs(&path, &report);
        if !report.changed {
            return;
        }
        let explained = rustix::fs::fstat(&h).is_ok_and(|st| {
            #[allow(clippy::unnecessary_cast)]
            let links = st.st_nlink as u64;
            self.noted_links(bucket, names_note, &st)
                .is_some_and(|n| links <= n)
        });
        if !explained {
            let _ = crate::fsattr::set_protect(h.node(), before);
            let why = "its inode has names outside its hard-link group in the tree: immutable and append-only not set";
            self.warn(&path, true, Op::FileAttr, why);
        }
    }

    /// True when every link of the target inode `st` (less `plus`, the
    /// link area's own) is a name of `src`'s group in the tree as it is
    /// now, each in a directory only psync's user can change (owned by
    /// it, no group or other write, which an ACL granting write shows as
    /// a group bit): nothing outside the tree, nor a name the source does
    /// not have, shares the inode, and no other user can add or remove
    /// names while they are counted, so it may be changed in place. A
    /// name in a directory another user can write (their own, a sticky
    /// scratch) makes it false: the group's data is copied anew instead.
    /// Without the group's note, false.
    pub(crate) fn links_explained(&self, src: &Entry, st: &rustix::fs::Stat, plus: u64) -> bool {
        #[allow(clippy::unnecessary_cast)]
        let (inode, links) = ((st.st_dev as u64, st.st_ino as u64), st.st_nlink as u64);
        let id = self.source_id(src);
        let Ok(bucket) = self.link_area().and_then(|a| a.bucket(id)) else {
            return false;
        };
        let Some(paths) = read_small(bucket, &names_note(id))
            .and_then(|b| postcard::from_bytes::<Vec<RelPath>>(&b).ok())
        else {
            return false;
        };
        let mut here = 0u64;
        for path in paths {
            let Some((parent, name)) = path.split_last() else {
                continue;
            };
            let Ok(d) = self.open_dst(&parent) else {
                return false;
            };
            let guarded = d
                .fstat()
                .is_ok_and(|st| st.st_uid == crate::engine::euid() && st.st_mode & 0o022 == 0);
            if !guarded {
                return false;
            }
            #[allow(clippy::unnecessary_cast)]
            let at = d.stat(name).map(|st| (st.st_dev as u64, st.st_ino as u64));
            here += u64::from(at.is_ok_and(|at| at == inode));
        }
        links <= here + plus
    }

    /// True when the target inode `st` must change owner to become
    /// `src`'s and belongs to another user than psync's: its data was
    /// that user's to write (a file planted to pass the quick check), so
    /// it is not given to the source's owner in place but copied anew.
    pub(crate) fn foreign_data(&self, src: &Entry, st: &rustix::fs::Stat) -> bool {
        let o = &self.copy_opts;
        o.can_chown
            && o.preserve.owner
            && st.st_uid != src.uid
            && st.st_uid != crate::engine::euid()
    }

    /// Spawns `Links` tasks for recorded actions, grouped by directory.
    /// `dirs`: the identity of each directory when its walk opened it.
    fn spawn_links(
        &self,
        actions: Vec<(RelPath, Action)>,
        dirs: &std::collections::HashMap<RelPath, (u64, u64)>,
        cx: &mut dyn TaskContext,
    ) {
        let mut by_dir: std::collections::BTreeMap<RelPath, Vec<Action>> = Default::default();
        for (rel, a) in actions {
            by_dir.entry(rel).or_default().push(a);
        }
        for (rel, actions) in by_dir {
            let at = dirs.get(&rel).copied();
            let mut actions = actions.into_iter().peekable();
            while actions.peek().is_some() {
                cx.spawn(Task::Links {
                    rel: rel.clone(),
                    actions: actions.by_ref().take(self.batch_files.max(1)).collect(),
                    at,
                });
            }
        }
    }

    /// Runs deferred hard-link copies of one directory, then sets its times
    /// again: the new links changed them after its finish.
    pub(crate) fn run_links(&self, rel: &RelPath, actions: Vec<Action>, at: Option<(u64, u64)>) {
        let opened = self.open_dst_at(rel, at);
        if let Err(e) = &opened
            && e.kind() == io::ErrorKind::Other
        {
            for a in &actions {
                if let Some(src) = action_source(a) {
                    let e = crate::engine::replaced_dir();
                    self.fail(&rel.join(&src.name), true, Op::OpenDir, e);
                }
            }
            return;
        }
        let (Ok(src_dir), Ok(dst_dir)) = (self.src_root.open_beneath(rel), opened) else {
            for a in &actions {
                let reported = matches!(a, Action::Copy { .. }) || is_fix(a);
                if let Some(src) = action_source(a).filter(|_| reported) {
                    self.fail(
                        &rel.join(&src.name),
                        true,
                        Op::OpenDir,
                        io::Error::from(io::ErrorKind::NotFound),
                    );
                }
            }
            return;
        };
        // Immutable or append-only (its finish set them): lifted for the
        // links and its times, set again after. A directory, of one name
        // (ADR 010 lets the run lift those).
        let sealed = self.lift_dir(rel, &dst_dir);
        self.links_in(rel, &src_dir, &dst_dir, actions);
        if sealed != 0 {
            self.set_protect(rel, crate::xattr::Node::Fd(dst_dir.fd()), sealed);
        }
    }

    /// The immutable and append-only flags of the directory `d`, lifted
    /// (`0` when it has none, or they stay).
    fn lift_dir(&self, rel: &RelPath, d: &Dir) -> u32 {
        if self.dry_run || !self.copy_opts.file_flags.on() {
            return 0;
        }
        let node = crate::xattr::Node::Fd(d.fd());
        match crate::fsattr::get(node) {
            Ok(Some(a)) if a.xflags() & PROTECT != 0 && !self.none_could_move(d) => {
                let why = "immutable or append-only, in a directory another user could have \
                           moved into the tree: not lifted (`chattr -ia` it by hand if it is the copy)";
                self.fail(rel, true, Op::FileAttr, io::Error::other(why));
                0
            }
            Ok(Some(a)) if a.xflags() & PROTECT != 0 => {
                let bits = a.xflags() & PROTECT;
                if self.set_protect(rel, node, 0) {
                    bits
                } else {
                    0
                }
            }
            _ => 0,
        }
    }

    /// [`Engine::run_links`] in the open directories.
    fn links_in(&self, rel: &RelPath, src_dir: &Dir, dst_dir: &Dir, actions: Vec<Action>) {
        // Attribute fixes alone link nothing, unless a fix found the
        // inode shared and relinked its name to a copy: the directory is
        // left alone when its mtime did not move.
        let links = !actions.iter().all(is_fix);
        let mtime = |d: &Dir| d.fstat().ok().map(|st| (st.st_mtime, st.st_mtime_nsec));
        let before = mtime(dst_dir);
        // Without root, a directory finished read-only (its source's mode)
        // is opened for the links, as its walk opened it: its attributes
        // are set again below.
        let opened_up = !self.copy_opts.can_chown
            && dst_dir.fstat().is_ok_and(|st| {
                st.st_mode & 0o700 != 0o700
                    && self
                        .copier
                        .set_mode(crate::xattr::Node::Fd(dst_dir.fd()), st.st_mode | 0o700)
                        .is_ok()
            });
        for action in actions {
            self.run_linked(rel, src_dir, dst_dir, action);
        }
        if !links && !opened_up && mtime(dst_dir) == before {
            return;
        }
        if let Ok(st) = src_dir.fstat() {
            let entry = Entry::from_stat(Name::default(), &st);
            use std::os::fd::AsFd;
            if let Err(e) = self.copier.set_attrs(
                crate::xattr::Node::Fd(dst_dir.fd().as_fd()),
                &entry,
                None,
                &self.copy_opts,
            ) {
                self.fail(rel, true, e.op, e.source);
            }
        }
        // The names linked (their data was flushed before publication).
        self.sync_dir(rel, dst_dir);
    }

    /// One recorded action of the last phase.
    fn run_linked(&self, rel: &RelPath, src_dir: &Dir, dst_dir: &Dir, action: Action) {
        let linked = |src: &Entry| is_linked(src, &self.plan_opts);
        match action {
            Action::Copy { src, dst, change } if linked(&src) => {
                self.copy_linked(rel, src_dir, dst_dir, &src, dst.as_ref(), change);
            }
            // The only path of its group here (see decide_links).
            Action::Copy { src, dst, change } => {
                let old = dst.filter(|_| !change.new).map(|d| d.mode);
                self.copy_file(
                    rel,
                    src_dir,
                    dst_dir,
                    &src,
                    (old, false, change, None),
                    None,
                );
            }
            Action::Symlink { src, dst, change } | Action::Special { src, dst, change }
                if linked(&src) =>
            {
                self.link_node(rel, src_dir, dst_dir, &src, dst.as_ref(), change);
            }
            Action::Symlink { src, dst, change } | Action::Special { src, dst, change } => {
                let old = dst.filter(|_| !change.new).map(|d| d.mode);
                self.replace_node(rel, src_dir, Some(dst_dir), &src, old, change);
            }
            // A name of a group that is one inode already, whose
            // attributes may have changed with its link count (see
            // `attrs_due`).
            Action::Attrs { src, dst, change } if change.any() => {
                self.fix_linked_attrs(rel, src_dir, dst_dir, &src, &dst, false);
            }
            // A member of a group with work: registers its inode.
            Action::Attrs { src, dst, change } if src.kind == Kind::File => {
                self.copy_linked(rel, src_dir, dst_dir, &src, Some(&dst), change);
            }
            Action::Attrs { src, dst, change } => {
                self.link_node(rel, src_dir, dst_dir, &src, Some(&dst), change);
            }
            _ => {}
        }
    }

    /// The hard-link area: a directory at the target root named like a
    /// temporary of this run, so that a later run removes it if this one
    /// dies. Its buckets hold one link per source inode (`<dev>-<ino>`, or
    /// `f<id>` from the copier's file id: [`SourceId::key`]),
    /// through which every path of that inode is linked — whichever thread
    /// or node sees it — and it is removed when the run finishes.
    ///
    /// Its name carries a tag of the run's secret key, so no user can make
    /// it before the run does; and whatever stands at that name is used
    /// only if the handle psync keeps is a directory of psync's own user,
    /// mode 0700 (a user who renames the run's area away and puts their
    /// own in its place gets it refused, reported once).
    pub(crate) fn link_area(&self) -> io::Result<&LinkArea> {
        let made = self.links.get_or_init(|| {
            let root = self.dst_root.as_ref().ok_or(libc::ENOENT)?;
            // An immutable or append-only root: lifted for the area (made
            // and removed in it); the root's finish sets its flags.
            self.lift_dir(&RelPath::root(), root);
            let name = self.link_area_name();
            match root.mkdir(name.as_bytes(), 0o700) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
            }
            let area = root
                .open_dir(name.as_bytes())
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
            let st = area
                .fstat()
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
            // A default ACL inherited from the root (a user's, on a root
            // they own) would reach the group inodes born here, and an
            // access ACL the area itself: both go.
            for acl in crate::xattr::ACL_NAMES {
                let _ = crate::xattr::Node::Fd(area.fd()).remove(acl);
            }
            if let Some(why) = not_private(&st, libc::S_IFDIR, 0o700) {
                let path = RelPath::from_bytes(name.0);
                let why = format!("the run's hard-link area is not psync's own ({why}): not used");
                self.warn(&path, true, Op::Link, &why);
                return Err(libc::EPERM);
            }
            Ok(LinkArea::new(area))
        });
        made.as_ref()
            .map_err(|&code| io::Error::from_raw_os_error(code))
    }

    fn link_area_name(&self) -> Name {
        self.private_name(b"links", 0, ".links")
    }

    /// The run's link area if it exists on the target, whichever engine
    /// made it: opened (and checked, see [`Engine::link_area`]) by this
    /// one if it has not yet; never made here. `None` in a run without
    /// one (one `stat` at the root to find that out).
    pub(crate) fn find_link_area(&self) -> Option<&LinkArea> {
        if let Some(made) = self.links.get() {
            return made.as_ref().ok();
        }
        let root = self.dst_root.as_ref()?;
        match root.stat(self.link_area_name().as_bytes()) {
            Ok(_) => self.link_area().ok(),
            Err(_) => None,
        }
    }

    /// Spawns one task per entry of the link area that removes it (its
    /// buckets, the walk's records and their parts), so the keys of many
    /// groups are unlinked by all threads. `held/` stays until the
    /// area's own removal: the passes are counted by its parts (see
    /// [`Engine::link_pass`]). A second delivery spawns what is left
    /// (the transport runs each once).
    fn spawn_link_area_removal(&self, area: &LinkArea, cx: &mut dyn TaskContext) {
        let Ok(names) = area.root.names() else {
            return;
        };
        let kept = |n: &Name| n.as_bytes() != HELD && n.as_bytes() != SEALS;
        for bucket in names.into_iter().filter(kept) {
            cx.spawn(Task::DropLinks {
                rel: RelPath::root(),
                bucket,
            });
        }
    }

    /// Removes one bucket of the link area (nothing when an earlier
    /// delivery did).
    pub(crate) fn drop_link_bucket(&self, bucket: &Name) {
        let Some(area) = self.find_link_area() else {
            return;
        };
        // Buckets are named by two hex digits (see `LinkArea::bucket`).
        if self.copy_opts.file_flags.on()
            && !self.dry_run
            && bucket.as_bytes().len() == 2
            && area.root.stat(SEALS).is_ok()
            && let Ok(b) = area.root.open_dir(bucket.as_bytes())
        {
            self.seal_groups(&b, bucket);
        }
        if let Err(e) = area.root.remove_all(bucket.as_bytes()) {
            let path = RelPath::from_bytes(self.link_area_name().0).join(bucket);
            self.fail(&path, true, Op::Remove, e);
        }
    }

    /// Removes the link area (at the end of the run, before the root's
    /// own attributes are set), and anything else at the target root that
    /// carries this run's id but is not the run's own: a user who learned
    /// the id from a temporary may have planted it during the run, after
    /// the root was listed.
    pub(crate) fn drop_link_area(&self) {
        // Opened first if another engine made it: the root's names are
        // checked only in a run that has one.
        let area = self.find_link_area();
        self.drop_planted_at_root();
        let name = self.link_area_name();
        let (Some(area), Some(root)) = (area, &self.dst_root) else {
            return;
        };
        if area.removed() {
            // By an earlier delivery of the root's last finish.
            return;
        }
        // Emptied through the handle the run holds, then removed by name
        // with rmdir, which cannot take anything with it: a user who can
        // rename at the root may have put another directory (someone's
        // data) at its name.
        let path = RelPath::from_bytes(name.0.clone());
        let emptied = area.root.names().and_then(|names| {
            names
                .iter()
                .try_for_each(|n| area.root.remove_all(n.as_bytes()).map(drop))
        });
        if let Err(e) = emptied {
            return self.fail(&path, true, Op::Remove, e);
        }
        match root.rmdir(name.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let why =
                    "the run's hard-link area was moved away during the run: left where it is";
                self.warn(&path, true, Op::Remove, why);
            }
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                let why =
                    "another directory stands at the name of the run's hard-link area: left alone";
                self.warn(&path, true, Op::Remove, why);
            }
            Err(e) => self.fail(&path, true, Op::Remove, e),
        }
    }

    /// Only in a run that made a link area there (a user who plants the
    /// area's old, predictable name, or any other, in a run without one
    /// gets it removed and reported by the next run, as a foreign
    /// temporary).
    fn drop_planted_at_root(&self) {
        let Some(root) = self.dst_root.as_ref().filter(|_| !self.dry_run) else {
            return;
        };
        if self.links.get().is_none() {
            return;
        }
        let Ok(names) = root.names() else { return };
        let area = self.link_area_name();
        for name in names {
            if name == area || crate::engine::temp_run_id(&name) != Some(self.run_id) {
                continue;
            }
            match root.stat(name.as_bytes()) {
                Ok(st) if st.st_uid == crate::engine::euid() => {
                    self.remove_stale(root, &RelPath::root(), &name);
                }
                Ok(st) => {
                    let e = Entry::from_stat(name, &st);
                    let what = "carries this run's id but is not psync's";
                    self.remove_foreign(root, &RelPath::root(), &e, what);
                }
                Err(_) => {}
            }
        }
    }

    /// Syncs one path of a hard-linked source inode: link it to the inode
    /// already copied for another path, or become that inode's copier.
    pub(crate) fn copy_linked(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        dst_dir: &Dir,
        src: &Entry,
        dst: Option<&Entry>,
        change: Change,
    ) {
        let path = rel.join(&src.name);
        let id = self.source_id(src);
        let area = match self.link_area().and_then(|a| a.bucket(id)) {
            Ok(a) => a,
            Err(e) => return self.fail(&path, true, Op::Link, e),
        };
        // An immutable or append-only target can be neither linked to
        // nor replaced: lifted first, when that is safe; the group's
        // inode gets the source's flags at the end of the phase.
        if let Some(d) = dst
            && let Err(err) = self.unlock_group(dst_dir, src, d)
        {
            let got = Err(CopyFail::Failed {
                on_target: true,
                op: Op::FileAttr,
                err,
            });
            return self.linked_outcome(path, area, src, dst, change, got);
        }
        let key = id.key();
        // Not when `--checksum` found its bytes differ: a quick check
        // passes it, and the group's names would all be linked to it.
        let quick_ok = !change.checksum
            && dst.is_some_and(|d| {
                d.kind == Kind::File
                    && d.size == src.size
                    && !self.plan_opts.ignore_times
                    && src.mtime.within(d.mtime, self.plan_opts.modify_window_ns)
            });
        // The group's inode is made in the link area (mode 0600) for this
        // name: under `--no-perms` it gets the mode rsync's `dest_mode`
        // gives this name's copy: an existing regular target's own, else
        // the source's less what this name's directory lets a new file
        // keep (default ACL or umask). The other names link to it, as
        // rsync links them to its copy.
        let old = dst.filter(|_| !change.new).map(|d| d.mode);
        let made = Made {
            fresh: false,
            old: old.or_else(|| self.new_file_mode(dst_dir, src)),
            // Made in the link area: what it holds is looked at.
            plain: false,
            in_memory: area.in_memory(),
            times_later: false,
        };
        let job = NodeJob {
            path: &path,
            src_dir,
            dst_dir,
            area,
            key,
            src,
            dst,
            quick_ok,
            strict: self.changes_attrs(src_dir, dst_dir, src, dst, change),
            made,
        };
        let got = self.link_protocol(&job);
        match (got, dst) {
            (Ok(Linked::AlreadyRight), Some(d)) if change.any() => {
                self.fix_linked_attrs(rel, src_dir, dst_dir, src, d, true);
            }
            (got, _) => self.linked_outcome(path, area, src, dst, change, got),
        }
    }

    /// Reports and counts how one name of a group was synced. A member
    /// (nothing planned: `change` is empty) was counted when its
    /// directory was planned, so only what this phase changed counts.
    fn linked_outcome(
        &self,
        path: RelPath,
        area: &Dir,
        src: &Entry,
        dst: Option<&Entry>,
        change: Change,
        got: Result<Linked, CopyFail>,
    ) {
        let planned = change.any();
        match got {
            Ok(Linked::Copied(filled)) => {
                self.count_filled(filled);
                self.itemize(path, Some(change), src);
                self.count_change(dst.is_some() && !change.new);
            }
            Ok(Linked::Made) => {
                self.itemize(path, Some(change), src);
                self.count_change(dst.is_some() && !change.new);
            }
            Ok(Linked::ToExisting) => {
                self.itemize_joined(path, area, src, dst, change);
                if planned {
                    self.count_change(dst.is_some());
                } else {
                    self.count(|c| c.updated += 1);
                }
            }
            Ok(Linked::AlreadyRight) if planned => {
                self.count(|c| {
                    c.unchanged += 1;
                    c.done += 1;
                });
            }
            Ok(Linked::AlreadyRight | Linked::Again) => {}
            Err(CopyFail::Vanished) => {
                self.count(|c| c.done += u64::from(planned));
                self.warn(&path, false, Op::Open, "vanished before it could be copied");
            }
            Err(CopyFail::Interrupted) => {}
            Err(CopyFail::Failed { on_target, op, err }) => self.fail(&path, on_target, op, err),
        }
    }

    /// rsync's `hf... PATH => LEADER` for a name linked to its group's
    /// inode (the leader is the path that made or published it).
    fn itemize_joined(
        &self,
        path: RelPath,
        area: &Dir,
        src: &Entry,
        dst: Option<&Entry>,
        change: Change,
    ) {
        if !self.itemize {
            return;
        }
        let mut c = if dst.is_none() {
            Change::new_entry(src.kind)
        } else {
            change
        };
        c.hardlink = true;
        c.transfer = false;
        let leader = read_small(area, &leader_name(self.source_id(src)));
        self.emit(Event::Itemize {
            path,
            change: Some(c),
            kind: src.kind,
            link: leader.map(RelPath::from_bytes),
        });
    }

    /// True when syncing `src` onto its existing target would change the
    /// target inode's attributes: an owner, mode or time due, or xattrs
    /// and ACLs that may differ and do (compared through a handle on the
    /// target, the inode that would be changed).
    fn changes_attrs(
        &self,
        src_dir: &Dir,
        dst_dir: &Dir,
        src: &Entry,
        dst: Option<&Entry>,
        c: Change,
    ) -> bool {
        let Some(dst) = dst else { return false };
        if c.perms || c.owner || c.group || c.time {
            return true;
        }
        if !(c.xattr || c.acl) {
            return false;
        }
        let how = crate::xattr::XattrSync {
            dst_empty: false,
            check_only: true,
            ..crate::xattr::XattrSync::of(&self.copy_opts)
        };
        let from = crate::xattr::Node::At(src_dir, &src.name);
        match dst_dir.handle(src.name.as_bytes()) {
            Ok(h) if self.fs.is(&h, dst) => crate::xattr::sync_xattrs(from, h.node(), how)
                .map_or(true, |r| r.xattrs_changed || r.acl_changed),
            // Gone or replaced: publication fails on it anyway.
            _ => true,
        }
    }

    /// Syncs one name of a hard-linked symlink, fifo, socket or device:
    /// link it to the group's inode, publish its target as that inode if
    /// it is right already, or make the group's node in the link area
    /// (claimed by creating it under `key.part`: mknod and symlink fail on
    /// an existing name, as `O_EXCL` does) and publish it.
    pub(crate) fn link_node(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        dst_dir: &Dir,
        src: &Entry,
        dst: Option<&Entry>,
        change: Change,
    ) {
        let path = rel.join(&src.name);
        if let Err(e) = crate::engine::attrs::node_as_listed(src_dir, src) {
            return self.fail(&path, false, Op::Stat, e);
        }
        let id = self.source_id(src);
        let area = match self.link_area().and_then(|a| a.bucket(id)) {
            Ok(a) => a,
            Err(e) => return self.fail(&path, true, Op::Link, e),
        };
        let attrs_differ = change.perms || change.owner || change.group || change.time;
        let job = NodeJob {
            path: &path,
            src_dir,
            dst_dir,
            area,
            key: id.key(),
            src,
            dst,
            quick_ok: !attrs_differ && dst.is_some_and(|d| same_node(src, d)),
            strict: self.changes_attrs(src_dir, dst_dir, src, dst, change),
            made: Made::default(),
        };
        let got = self.node_protocol(&job);
        match (got, dst) {
            (Ok(Linked::AlreadyRight), Some(d)) if change.any() => {
                self.fix_linked_attrs(rel, src_dir, dst_dir, src, d, true);
            }
            (got, _) => self.linked_outcome(path.clone(), area, src, dst, change, got),
        }
    }

    /// A planned name of a group whose target was right already (published
    /// as the group's inode, or linked to it): its data or node is, but
    /// its link count differed, so it was planned as a relink and not as
    /// an attribute fix: the source's mode, owner, times and xattrs may
    /// still be due (`chmod 600 a; ln a c`). Compared with the target as
    /// it is now, so a name whose inode another name of the group fixed
    /// first needs nothing, as rsync finds it; the listing's ctime decides
    /// whether xattrs are compared (linking the target moved its own).
    ///
    /// An inode not `published` as the group's is changed in place only
    /// if all its links are the group's names in the tree
    /// ([`Engine::links_explained`]); otherwise the group's data is copied
    /// anew when anything is due.
    fn fix_linked_attrs(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        dst_dir: &Dir,
        src: &Entry,
        dst: &Entry,
        published: bool,
    ) {
        let mut now = match dst_dir.stat(src.name.as_bytes()) {
            Ok(st) => Entry::from_stat(src.name.clone(), &st),
            Err(e) => return self.fail(&rel.join(&src.name), true, Op::Stat, e),
        };
        now.dev = self.fs.of_at(dst_dir, &src.name, now.dev);
        if (now.dev, now.ino) != (dst.dev, dst.ino) {
            if self.is_group_inode(src, &now) {
                // Relinked to a copy of the group by an earlier delivery
                // of this task (its inode was not to be changed in
                // place), which reported it.
                return;
            }
            // Replaced since it was linked: not the group's inode any more.
            self.count(|c| c.done += 1);
            let why = "replaced in the target during the run; its attributes were not set";
            return self.warn(&rel.join(&src.name), true, Op::Stat, why);
        }
        let listed = Entry {
            ctime: dst.ctime,
            flags: dst.flags,
            ..now
        };
        // Immutable and append-only as listed (`now` has no flags): set
        // at the end of the phase, or lifted here if the source has none.
        let due = crate::plan::attr_change(src, &listed, &self.plan_opts);
        if !due.any() && !self.xattr_source(Some(dst), src) {
            return self.count(|c| {
                c.unchanged += 1;
                c.done += 1;
            });
        }
        // Immutable or append-only: lifted for the fix (and set again at
        // the end of the phase), when that is safe.
        if let Err(e) = self.unlock_group(dst_dir, src, &listed) {
            return self.fail(&rel.join(&src.name), true, Op::FileAttr, e);
        }
        if !published {
            // Not an inode the run published as the group's: changed in
            // place only if all its links are the group's names in the
            // tree; otherwise, when anything is due, the group's inode is
            // made anew and this name linked to it.
            let explained = dst_dir.handle(src.name.as_bytes()).is_ok_and(|h| {
                self.fs.is(&h, &listed)
                    && !self.foreign_data(src, &h.stat)
                    && self.links_explained(src, &h.stat, 0)
            });
            let mut change = due;
            change.xattr =
                self.xattr_source(Some(dst), src) && self.xattrs_differ(src_dir, dst_dir, src);
            if !explained {
                if !self.changes_attrs(src_dir, dst_dir, src, Some(&listed), change) {
                    return self.count(|c| {
                        c.unchanged += 1;
                        c.done += 1;
                    });
                }
                return match src.kind {
                    Kind::File => {
                        self.copy_linked(rel, src_dir, dst_dir, src, Some(&listed), change);
                    }
                    _ => self.link_node(rel, src_dir, dst_dir, src, Some(&listed), change),
                };
            }
        }
        // The group's inode as the run published it (a fresh copy, or a
        // target whose links were checked, see `publish_target`), or one
        // whose links were checked just now; the group's other names join
        // it meanwhile.
        let mine = (u64::MAX, Shared::Refuse);
        let here = crate::engine::Here {
            rel,
            src_dir,
            dir: Some(dst_dir),
        };
        self.fix_attrs(here, (src, &listed), due, mine);
    }

    /// True when `now` (a target as it is now) is the inode published as
    /// `src`'s group's.
    fn is_group_inode(&self, src: &Entry, now: &Entry) -> bool {
        let id = self.source_id(src);
        let Ok(bucket) = self.link_area().and_then(|a| a.bucket(id)) else {
            return false;
        };
        let key = id.key();
        // `now.dev` is the run's id of its file system (ADR 014).
        #[allow(clippy::unnecessary_cast)]
        bucket.stat(key.as_bytes()).is_ok_and(|k| {
            k.st_ino as u64 == now.ino && self.fs.of_at(bucket, &key, k.st_dev as u64) == now.dev
        })
    }

    /// [`Engine::link_protocol`] for a node: nothing to copy, so nothing
    /// to retry; a claimant that died leaves its part, taken over after a
    /// minute as a file's is.
    fn node_protocol(&self, job: &NodeJob<'_>) -> Result<Linked, CopyFail> {
        let (area, key) = (job.area, &job.key);
        let part = Name([key.as_bytes(), b".part"].concat());
        let mut waiter = Waiter::new();
        let mut quick_ok = job.quick_ok;
        loop {
            if self.quit.load(Ordering::Relaxed) {
                return Err(CopyFail::Interrupted);
            }
            if let Some(linked) = self.take_published(job, None)? {
                return Ok(linked);
            }
            if let (true, Some(d)) = (quick_ok, job.dst) {
                let strict = (job.src, d, job.strict);
                match self.publish_target(job.dst_dir, area, key, strict, job.path)? {
                    Publish::Done => return Ok(Linked::AlreadyRight),
                    Publish::Raced => continue,
                    Publish::Unusable => quick_ok = false,
                }
            }
            let made = if job.src.kind == Kind::Symlink {
                self.copier.make_symlink(area, &part, job.src)
            } else {
                self.copier.make_special(area, &part, job.src)
            };
            match made {
                Ok(()) => {}
                Err(e) if e.source.kind() == io::ErrorKind::AlreadyExists => {
                    if !waiter.tick(area, &part) {
                        let _ = area.unlink(part.as_bytes());
                    }
                    continue;
                }
                Err(e) => return Err(CopyFail::target(e)),
            }
            let claim = Claim(area, &part);
            if let Some(linked) = self.take_published(job, None)? {
                return Ok(linked);
            }
            self.finish_node(job, &part)?;
            let published_now = self.publish_part(area, &part, key);
            match published_now {
                Ok(()) => std::mem::forget(claim),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CopyFail::target_io(Op::Rename, e)),
            }
            if let Some(linked) = self.take_published(job, Some(Linked::Made))? {
                return Ok(linked);
            }
        }
    }

    /// Gives the group's new node its attributes and records its leader.
    fn finish_node(&self, job: &NodeJob<'_>, part: &Name) -> Result<(), CopyFail> {
        let from = self
            .xattr_source(None, job.src)
            .then_some(crate::xattr::Node::At(job.src_dir, &job.src.name));
        let at = crate::xattr::Node::At(job.area, part);
        let report = self
            .copier
            .set_attrs(at, job.src, from, &self.copy_opts)
            .map_err(CopyFail::target)?;
        self.report_dropped(job.path, &report);
        self.note_leader(job.area, job.src, job.path)
    }

    /// Links the name to the group's published inode, if there is one.
    fn take_published(
        &self,
        job: &NodeJob<'_>,
        mine: Option<Linked>,
    ) -> Result<Option<Linked>, CopyFail> {
        match job.area.stat(job.key.as_bytes()) {
            Ok(st) => Ok(Some(self.link_to_key(job, &st, mine)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CopyFail::target_io(Op::Stat, e)),
        }
    }

    /// Publishes the name's target, found right, as the group's inode —
    /// only if it still is the inode listed: a name swapped by a user
    /// since the listing must not become what the group links to. When
    /// its attributes are due (`strict`), only if all its links are the
    /// group's names in the tree ([`Engine::links_explained`]): an inode
    /// that a name outside the tree shares (planted by a user, or a link
    /// the source does not have) is never chowned, chmodded or given
    /// xattrs; the group's data is copied anew instead, into the private
    /// link area, and its names linked to the copy.
    fn publish_target(
        &self,
        dst_dir: &Dir,
        area: &Dir,
        key: &Name,
        (src, dst, strict): (&Entry, &Entry, bool),
        path: &RelPath,
    ) -> Result<Publish, CopyFail> {
        // Linked and checked under a private name of the bucket first, so
        // no other worker links to (and fixes) an inode still being
        // checked; published only once it passes.
        let check = Name([key.as_bytes(), b".", self.temp_name().as_bytes()].concat());
        match area.link_from(dst_dir, dst.name.as_bytes(), check.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Publish::Unusable),
            // The area passes the target root's project id on, and the
            // target's differs: copied anew (its project id is not
            // changed for the link, a user's name may be another inode
            // by now).
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => return Ok(Publish::Unusable),
            Err(e) => return Err(CopyFail::target_io(Op::Link, e)),
        }
        let drop_check = || {
            let _ = area.unlink(check.as_bytes());
        };
        let st = area.stat(check.as_bytes()).map_err(|e| {
            drop_check();
            CopyFail::target_io(Op::Stat, e)
        })?;
        #[allow(clippy::unnecessary_cast)]
        let (same, links) = (
            st.st_ino as u64 == dst.ino && self.fs.of_at(area, &check, st.st_dev as u64) == dst.dev,
            st.st_nlink as u64 - 1,
        );
        let foreign = same && strict && self.foreign_data(src, &st);
        let shared = same && strict && !foreign && !self.links_explained(src, &st, 1);
        if !same || shared || foreign {
            drop_check();
            if shared {
                let why = format!(
                    "its inode has {links} links, not all of them names of its hard-link group that only psync's user can change: not changed in place; the data is copied anew (the other names keep the old inode)"
                );
                self.warn(path, true, Op::Link, &why);
            }
            return Ok(Publish::Unusable);
        }
        match area.rename_noreplace(check.as_bytes(), key.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                drop_check();
                return Ok(Publish::Raced);
            }
            Err(e) => {
                drop_check();
                return Err(CopyFail::target_io(Op::Rename, e));
            }
        }
        self.note_leader(area, src, path)?;
        Ok(Publish::Done)
    }

    /// Records which path made or published a group (for itemizing).
    fn note_leader(&self, area: &Dir, src: &Entry, path: &RelPath) -> Result<(), CopyFail> {
        let name = leader_name(self.source_id(src));
        if self.itemize && !write_small(area, &name, &self.temp_name(), path.as_bytes()) {
            return Err(CopyFail::target_io(
                Op::Create,
                io::Error::other("cannot record the link group's path"),
            ));
        }
        Ok(())
    }

    /// The race-free core. (1) If the group's inode is published as
    /// `key`, link this path to it. Else (2) if the target already holds
    /// the right data, publish it as `key`. Else (3) claim the group by
    /// creating `key.part` with O_EXCL: the claimant looks for `key` once
    /// more (published between its first look and its claim), copies into
    /// the part and publishes it with RENAME_NOREPLACE, so exactly one
    /// worker ever copies the data. Everyone else waits for `key`.
    /// `quick_ok`: the target looks right (step 2 is tried); `made`: what
    /// a copy's mode is made from (see [`Made`]).
    fn link_protocol(&self, job: &NodeJob<'_>) -> Result<Linked, CopyFail> {
        let NodeJob {
            path,
            src_dir,
            dst_dir,
            area,
            ref key,
            src,
            dst,
            quick_ok,
            strict,
            made,
        } = *job;
        let mut quick_ok = quick_ok;
        let part = Name([key.as_bytes(), b".part"].concat());
        let published = |mine| match area.stat(key.as_bytes()) {
            Ok(st) => Ok(Some(self.link_to_key(job, &st, mine)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CopyFail::target_io(Op::Stat, e)),
        };
        let mut waiter = Waiter::new();
        let mut retries = self.retries;
        // The source, opened once per attempt (not again while waiting).
        let mut opened = None;
        loop {
            if self.quit.load(Ordering::Relaxed) {
                return Err(CopyFail::Interrupted);
            }
            if let Some(linked) = published(None)? {
                return Ok(linked);
            }
            if let (true, Some(d)) = (quick_ok, dst) {
                match self.publish_target(dst_dir, area, key, (src, d, strict), path)? {
                    Publish::Done => return Ok(Linked::AlreadyRight),
                    Publish::Raced => continue,
                    Publish::Unusable => quick_ok = false,
                }
            }
            let (input, cur) = match opened {
                Some(ref o) => o,
                None => opened.insert(self.open_source(src_dir, src, false)?),
            };
            let out = match self.noted(path, || self.copier.create(area, &part, cur, input)) {
                Ok(out) => out,
                Err(e) if e.source.kind() == io::ErrorKind::AlreadyExists => {
                    if !waiter.tick(area, &part) {
                        // The claimant is gone (a dead worker): take over.
                        let _ = area.unlink(part.as_bytes());
                    }
                    continue;
                }
                Err(e) => return Err(CopyFail::target(e)),
            };
            // The claim: the part is removed on every way out but its
            // publication.
            let claim = Claim(area, &part);
            self.inherit_acl(dst_dir, &out, made.old.unwrap_or(src.mode));
            // Published by a claimant that finished before this claim.
            if let Some(linked) = published(None)? {
                return Ok(linked);
            }
            let mut filled = self.fill_checked(path, input, &out, cur, made);
            if let Ok(Some(_)) = filled
                && let Err(e) = self.sync_file(&out, false)
            {
                filled = Err(e);
            }
            drop(out);
            let Some(filled) = filled? else {
                self.count(|c| c.changed_during_copy += 1);
                if retries == 0 {
                    return Err(CopyFail::source(
                        Op::CopyData,
                        io::Error::other("changed during copy; not replaced"),
                    ));
                }
                retries -= 1;
                opened = None;
                continue;
            };
            // Stopped meanwhile: the claim's drop removes the part.
            self.not_stopped()?;
            self.note_leader(area, src, path)?;
            let published_now = self.publish_part(area, &part, key);
            match published_now {
                Ok(()) => std::mem::forget(claim),
                // Cannot happen while claims are honoured; a loser links
                // to the winner's inode all the same.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CopyFail::target_io(Op::Rename, e)),
            }
            if let Some(linked) = published(Some(Linked::Copied(filled)))? {
                return Ok(linked);
            }
        }
    }

    /// Without ACL syncing, a new file takes its directory's default ACL
    /// (the kernel's inheritance, as rsync's copy made in that directory
    /// gets it). A group's inode is born in the link area instead, which
    /// has no default ACL (see `link_area`): it is given the one of the
    /// directory of the name that made it, with `mode`'s bits.
    fn inherit_acl(&self, dst_dir: &Dir, out: &std::fs::File, mode: u32) {
        use std::os::fd::AsFd;
        if self.copy_opts.acls.on() {
            return;
        }
        let [access, default] = crate::xattr::ACL_NAMES;
        if let Ok(Some(acl)) = crate::xattr::Node::Fd(dst_dir.fd()).get(default)
            && let Some(acl) = crate::xattr::inherited_acl(&acl, mode)
        {
            let _ = crate::xattr::Node::Fd(out.as_fd()).set(access, &acl);
        }
    }

    /// Publishes the finished part `part` of the link area as `key`
    /// (`RENAME_NOREPLACE`), keeping the source's project id, not the
    /// area's (which passes the target root's on).
    fn publish_part(&self, area: &Dir, part: &Name, key: &Name) -> io::Result<()> {
        let publish = || area.rename_noreplace(part.as_bytes(), key.as_bytes());
        match publish() {
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => area
                .handle(part.as_bytes())
                .and_then(|h| self.in_project_dir_as(area, h.node(), None, publish)),
            r => r,
        }
    }

    /// `link`, a link of the group's published inode into the job's
    /// directory; one refused because that directory passes on another
    /// project id (EXDEV) is made with the inode given the directory's for
    /// the moment, then its source's (see [`Engine::in_project_dir_as`]).
    /// Another name's task may be doing the same for another directory:
    /// tried a few times.
    fn link_in_project(
        &self,
        job: &NodeJob<'_>,
        mut link: impl FnMut() -> io::Result<()>,
    ) -> io::Result<()> {
        use crate::xattr::Node;
        let mut tries = 0;
        loop {
            let e = match link() {
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => e,
                r => return r,
            };
            // A file's own project id, when synced; else (a symlink or
            // special, whose are not) the one its directory passes on,
            // as a node made there would have.
            let own = (self.copy_opts.project_ids.on() && job.src.kind == Kind::File)
                .then(|| crate::fsattr::get(Node::At(job.src_dir, &job.src.name)));
            let want = match own {
                Some(a) => a.ok().flatten(),
                None => crate::fsattr::get(Node::Fd(job.dst_dir.fd()))
                    .ok()
                    .flatten(),
            };
            let Some(want) = want.map(|a| a.projid()) else {
                return Err(e);
            };
            // By name in the area, psync's own: `file_setattr` reaches a
            // symlink or special too (never opened).
            let node = Node::At(job.area, &job.key);
            match self.in_project_dir_as(job.dst_dir, node, Some(want), &mut link) {
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) && tries < 8 => tries += 1,
                r => return r,
            }
        }
    }

    /// Links the path to the published inode, unless it already is that inode.
    fn link_to_key(
        &self,
        job: &NodeJob<'_>,
        st: &rustix::fs::Stat,
        mine: Option<Linked>,
    ) -> Result<Linked, CopyFail> {
        let (dst_dir, area, key, src, dst) = (job.dst_dir, job.area, &job.key, job.src, job.dst);
        #[allow(clippy::unnecessary_cast)]
        let same = dst.is_some_and(|d| {
            d.ino == st.st_ino as u64 && d.dev == self.fs.of_at(area, key, st.st_dev as u64)
        });
        if same {
            return Ok(Linked::AlreadyRight);
        }
        let linked = Ok(mine.unwrap_or(Linked::ToExisting));
        // A new name: linked in place directly (a name that appeared
        // meanwhile is replaced below, like an old one).
        if dst.is_none() {
            let link = || dst_dir.link_from(area, key.as_bytes(), src.name.as_bytes());
            match self.link_in_project(job, link) {
                Ok(()) => return linked,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CopyFail::target_io(Op::Link, e)),
            }
        }
        // Linked by an earlier delivery of this task (its name was
        // listed as another inode): nothing to do, nothing to report.
        #[allow(clippy::unnecessary_cast)]
        let key_inode = (st.st_dev as u64, st.st_ino as u64);
        #[allow(clippy::unnecessary_cast)]
        if dst_dir
            .stat(src.name.as_bytes())
            .is_ok_and(|n| (n.st_dev as u64, n.st_ino as u64) == key_inode)
        {
            return Ok(mine.unwrap_or(Linked::Again));
        }
        let tmp = self.temp_name();
        let (mut linked_tmp, mut renamed) = (Ok(()), Ok(()));
        // The link and the rename both refused in a directory that passes
        // on another project id: both with the inode given its id.
        let placed = self.link_in_project(job, || {
            let _ = dst_dir.unlink(tmp.as_bytes());
            linked_tmp = dst_dir.link_from(area, key.as_bytes(), tmp.as_bytes());
            linked_tmp.as_ref().map_err(clone_io)?;
            renamed = dst_dir.rename(tmp.as_bytes(), src.name.as_bytes());
            renamed.as_ref().map(|_| ()).map_err(clone_io)
        });
        // Also after a rename that succeeded: between two links of one
        // inode (the name linked meanwhile) it does nothing, and the
        // temporary would stay, a name of the group.
        let _ = dst_dir.unlink(tmp.as_bytes());
        if let Err(e) = placed {
            let op = if linked_tmp.is_err() {
                Op::Link
            } else {
                Op::Rename
            };
            return Err(CopyFail::target_io(op, e));
        }
        linked
    }
}

/// Why an entry psync made for its own use is not to be trusted: not of
/// type `kind` (`S_IFDIR`, `S_IFREG`), not owned by the process's
/// effective user, or with permission bits other than `mode`. `None`
/// when it is psync's own.
pub(crate) fn not_private(st: &rustix::fs::Stat, kind: u32, mode: u32) -> Option<String> {
    let euid = crate::engine::euid();
    if st.st_mode & libc::S_IFMT != kind {
        return Some("not of the type psync made".into());
    }
    if st.st_uid != euid {
        return Some(format!("owned by uid {}", st.st_uid));
    }
    // A directory inherits the setgid bit of a setgid parent: harmless.
    let bits = if kind == libc::S_IFDIR { 0o777 } else { 0o7777 };
    if st.st_mode & bits != mode {
        return Some(format!("mode {:04o}", st.st_mode & 0o7777));
    }
    None
}

/// The link area's subdirectory of deferred hard-link copies.
const PENDING: &[u8] = b"pending";

/// The link area's subdirectory of the copies held for the last phase's
/// second pass.
const HELD: &[u8] = b"held";

/// The link area's marker: the walk's records are all in `parts/` (see
/// [`Engine::decide_recorded`]).
const SORTED: &[u8] = b"sorted";

/// The link area's marker: some group's source is immutable or
/// append-only (a `.protect` note is in its bucket), so the buckets'
/// removal looks for those notes. It stays until the area goes.
const SEALS: &[u8] = b"seals";

/// The file of `held/` of the copies the root's finish held back (those
/// a `LinkSlots` held are `s<first slot>`).
const ROOT_HELD: &[u8] = b"r";

/// Prefix of the walk's action records in `pending/`.
const ACTION_RECORDS: &[u8] = b"a";

/// The origin of the records a directory's walk writes.
pub(crate) const WALK: &[u8] = b"walk";

/// The name of a record of the walk in `pending/`: its kind (`prefix`),
/// then a hash of its directory and its origin within it (the walk, or
/// one file's `--checksum` comparison), so that every delivery of the
/// task that writes it names it alike (see [`Engine::write_once`]).
fn record_name(prefix: &[u8], rel: &RelPath, origin: &[u8]) -> Name {
    let mut h = twox_hash::XxHash3_128::new();
    for part in [rel.as_bytes(), origin] {
        h.write(&(part.len() as u64).to_le_bytes());
        h.write(part);
    }
    let mut name = prefix.to_vec();
    name.extend_from_slice(format!("{:032x}", h.finish_128()).as_bytes());
    Name(name)
}

/// The link area's note of a group's names in the tree (see
/// [`Engine::note_names`]).
fn names_note(id: SourceId) -> Name {
    id.note(".names")
}

/// The end of the link area's note of the immutable and append-only
/// flags of a group's source (see [`Engine::note_names`]).
const PROTECT_NOTE: &[u8] = b".protect";

/// The link area's note of a group's source's immutable and append-only
/// flags.
fn protect_note(id: SourceId) -> Name {
    Name([id.key().as_bytes(), PROTECT_NOTE].concat())
}

/// The start of the link area's notes of names `--delete` removes of
/// the listed target inode `dev`/`ino` (see [`Engine::defer_gone`]).
fn gone_prefix(dev: u64, ino: u64) -> Vec<u8> {
    format!("g{dev:x}-{ino:x}.").into_bytes()
}

/// One such note, named after its path.
fn gone_note(dev: u64, ino: u64, path: &RelPath) -> Name {
    let mut h = twox_hash::XxHash3_128::new();
    h.write(path.as_bytes());
    let mut name = gone_prefix(dev, ino);
    name.extend_from_slice(format!("{:032x}", h.finish_128()).as_bytes());
    Name(name)
}

/// The link area's note of which path copied a group (for itemizing).
fn leader_name(id: SourceId) -> Name {
    id.note(".path")
}

/// Writes a small note file, replacing any: written under `tmp`, then
/// renamed over `name`, so a reader finds the old note or the new one,
/// never none. False when it could not be written.
fn write_small(dir: &Dir, name: &Name, tmp: &Name, data: &[u8]) -> bool {
    let written = dir
        .create_excl(tmp.as_bytes())
        .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, data, 0))
        .and_then(|()| dir.rename(tmp.as_bytes(), name.as_bytes()));
    if written.is_err() {
        let _ = dir.unlink(tmp.as_bytes());
    }
    written.is_ok()
}

/// Reads a small note file.
fn read_small(dir: &Dir, name: &Name) -> Option<Vec<u8>> {
    let f = dir.open_read(name.as_bytes()).ok()?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut &f, &mut buf).ok()?;
    Some(buf)
}

/// A claimed group's part file, removed when dropped (the claim given up).
struct Claim<'a>(&'a Dir, &'a Name);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlink(self.1.as_bytes());
    }
}

/// How a hard-linked path was synced.
#[derive(Clone, Copy)]
enum Linked {
    /// This path's copy became the group's inode.
    Copied(crate::engine::Filled),
    /// Linked to the inode another path copied.
    ToExisting,
    /// Already linked right (or published as the group's inode unchanged).
    AlreadyRight,
    /// This path's symlink or special became the group's inode.
    Made,
    /// Linked to the group's inode already by an earlier delivery of the
    /// same task (its name was listed as another inode): done and
    /// reported then.
    Again,
}

/// Publishing a name's existing target as its group's inode.
enum Publish {
    /// Published.
    Done,
    /// Another worker published the group first.
    Raced,
    /// The name is gone or is no longer the inode listed.
    Unusable,
}

/// One name of a hard-linked symlink or special, and where its group is.
struct NodeJob<'a> {
    path: &'a RelPath,
    src_dir: &'a Dir,
    dst_dir: &'a Dir,
    /// The bucket of the link area holding the group's key.
    area: &'a Dir,
    key: Name,
    src: &'a Entry,
    dst: Option<&'a Entry>,
    /// The target is already the right node with the right attributes.
    quick_ok: bool,
    /// Publishing the target would change its attributes (see
    /// `publish_target`).
    strict: bool,
    /// What a copy's mode is made from (files; see [`Made`]).
    made: Made,
}

/// True when the target `d` is the node `s` is: same type, same device
/// number or symlink text.
fn same_node(s: &Entry, d: &Entry) -> bool {
    s.kind == d.kind && s.rdev == d.rdev && s.link == d.link
}

/// Prefix of the records of members (see [`Engine::record_members`]).
const MEMBERS: &[u8] = b"m";

/// The hard-linked names of one directory that have a target of their
/// type and need nothing but, at most, attributes (applied when the
/// directory is planned) or a `--checksum` comparison: recorded as
/// `Attrs` actions with no change.
pub(super) fn members(
    src: &[Entry],
    dst: &[Entry],
    actions: &[Action],
    opts: &PlanOptions,
) -> Vec<Action> {
    let busy: std::collections::HashSet<&Name> = actions
        .iter()
        .filter_map(|a| match a {
            // Under --checksum a name of equal size is compared: found
            // equal it is a member; found different, its copy publishes
            // the group's inode, and its member record links to that.
            // A hard-linked name with attributes due is recorded as an
            // action of its own (its fix waits for the last phase).
            Action::Attrs { src, .. } if is_linked(src, opts) => Some(&src.name),
            Action::Attrs { .. } | Action::Compare { .. } => None,
            Action::Delete { dst, .. } => Some(&dst.name),
            a => action_source(a).map(|s| &s.name),
        })
        .collect();
    let mut out = Vec::new();
    let mut targets = dst.iter().peekable();
    for s in src
        .iter()
        .filter(|s| is_linked(s, opts) && !busy.contains(&s.name))
    {
        while targets.next_if(|d| d.name < s.name).is_some() {}
        if let Some(d) = targets
            .peek()
            .filter(|d| d.name == s.name && d.kind == s.kind)
        {
            out.push(Action::Attrs {
                src: s.clone(),
                dst: (*d).clone(),
                change: Change::attrs_of(s.kind),
            });
        }
    }
    out
}

/// A recorded member (see [`members`]): planned as nothing.
fn is_member(a: &Action) -> bool {
    matches!(a, Action::Attrs { change, .. } if !change.any())
}

/// An attribute fix of the last phase (see [`Engine::attrs_due`]): an
/// `Attrs` action with something to check, unlike a member's.
pub(super) fn is_fix(a: &Action) -> bool {
    matches!(a, Action::Attrs { change, .. } if change.any())
}

/// True when a recorded action makes its group's inode: data to copy, or
/// a node to make (new, or of another type or content).
pub(super) fn needs_work(a: &Action) -> bool {
    match a {
        Action::Copy { change, .. } => change.transfer,
        Action::Symlink { change, .. } | Action::Special { change, .. } => {
            change.new || change.checksum
        }
        _ => false,
    }
}

/// The source entry of an action that has one.
pub(super) fn action_source(a: &Action) -> Option<&Entry> {
    match a {
        Action::Copy { src, .. }
        | Action::Symlink { src, .. }
        | Action::Special { src, .. }
        | Action::Compare { src, .. }
        | Action::TooYoung { src }
        | Action::Attrs { src, .. }
        | Action::Mkdir { src }
        | Action::Descend { src, .. } => Some(src),
        Action::Delete { .. } => None,
    }
}

/// The source entry of a recorded action, to change.
fn source_mut(a: &mut Action) -> Option<&mut Entry> {
    match a {
        Action::Copy { src, .. }
        | Action::Symlink { src, .. }
        | Action::Special { src, .. }
        | Action::Attrs { src, .. } => Some(src),
        _ => None,
    }
}

/// The target entry of a recorded action, if it has one.
pub(super) fn action_target(a: &Action) -> Option<&Entry> {
    match a {
        Action::Copy { dst, .. } | Action::Symlink { dst, .. } | Action::Special { dst, .. } => {
            dst.as_ref()
        }
        Action::Attrs { dst, .. } => Some(dst),
        _ => None,
    }
}

/// What the last phase knows of one source inode's recorded names.
#[derive(Default)]
struct Group {
    paths: u32,
    /// Some name makes the group's inode (see [`needs_work`]).
    work: bool,
    /// The target inode of the names seen so far, while it is one.
    target: Option<(u64, u64)>,
    /// Some name has no target, or names have different target inodes.
    split: bool,
}

/// The recorded names per source inode.
fn group(
    id: &dyn Fn(&Entry) -> SourceId,
    recorded: &[(RelPath, Action)],
) -> std::collections::HashMap<SourceId, Group> {
    let mut groups: std::collections::HashMap<SourceId, Group> = Default::default();
    for (_, a) in recorded {
        let Some(src) = action_source(a) else {
            continue;
        };
        let g = groups.entry(id(src)).or_default();
        g.paths += 1;
        g.work |= needs_work(a);
        match (g.target, action_target(a).map(|d| (d.dev, d.ino))) {
            (_, None) => g.split = true,
            (None, t) => g.target = t,
            (Some(a), Some(b)) => g.split |= a != b,
        }
    }
    groups
}

/// The first name of each group with work to do and more than one path,
/// as a dry run takes it (`Engine::decide_dry_links`): the first whose
/// data is right, else the first to copy, in path order.
fn leaders(
    id: &dyn Fn(&Entry) -> SourceId,
    recorded: &[(RelPath, Action)],
    groups: &std::collections::HashMap<SourceId, Group>,
) -> std::collections::HashMap<SourceId, RelPath> {
    let mut first: std::collections::HashMap<SourceId, (bool, RelPath)> = Default::default();
    for (rel, a) in recorded {
        let Some(src) = action_source(a) else {
            continue;
        };
        let key = id(src);
        let g = &groups[&key];
        if !(g.work || g.split) || g.paths < 2 {
            continue;
        }
        let this = (needs_work(a), rel.join(&src.name));
        let better =
            |had: &(bool, RelPath)| (this.0, this.1.as_bytes()) < (had.0, had.1.as_bytes());
        match first.get(&key) {
            Some(had) if !better(had) => {}
            _ => {
                first.insert(key, this);
            }
        }
    }
    first.into_iter().map(|(k, (_, path))| (k, path)).collect()
}

/// Slots of the walk's records when they do not fit in memory: a record
/// goes to the slot of its source inode, so every recorded name of a
/// group is in one slot, and a [`Task::LinkSlots`] decides whole groups.
const SLOTS: u32 = 1024;

/// Encoded records the last phase keeps in memory at once (the walk's, in
/// [`Sorter`], and the held copies read per run of the root's finish).
/// Records that fit are decided in the root's finish as they always were;
/// more go to the area's `parts/`.
const MEM_RECORDS: usize = 4 << 20;

/// [`MEM_RECORDS`], or the bytes in `PSYNC_LINK_RECORDS_MEM` (a knob for
/// tests: 0 sends every record through `parts/` and reads `held/` one
/// record per run of the root's finish).
fn mem_records() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("PSYNC_LINK_RECORDS_MEM")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(MEM_RECORDS)
    })
}

/// Encoded records one [`Task::LinkSlots`] reads (at least one slot's).
const SLOT_TASK_BYTES: u64 = 512 << 10;

/// [`Task::LinkSlots`] tasks at once: each takes a quarter of the slots,
/// one range after another.
const LANES: u32 = 4;

/// Bits of the filter of groups with an action record (see [`Sorter`]).
const WANTED_BITS: usize = 1 << 20;

/// Kinds of records: the walk's actions, and members (`m` records).
const ACTIONS: usize = 0;
const MEMBER_RECORDS: usize = 1;

/// The link area's subdirectory of the walk's records sorted by slot.
const PARTS: &[u8] = b"parts";

/// The slot of a source file's records, and its bit in the filter.
fn slot_of(id: SourceId) -> (u32, usize) {
    let h = id.hash();
    #[allow(clippy::cast_possible_truncation)]
    let slot = ((h >> 40) % u64::from(SLOTS)) as u32;
    #[allow(clippy::cast_possible_truncation)]
    let bit = (h as usize) % WANTED_BITS;
    (slot, bit)
}

/// The file of one slot's records of one kind in `parts/`.
fn slot_file(slot: u32, kind: usize) -> Name {
    let k = if kind == ACTIONS { 'a' } else { 'm' };
    Name(format!("{slot:03x}{k}").into_bytes())
}

/// The walk's records, read one at a time and kept by slot (each
/// record's actions split by the slot of their source inodes), as
/// length-prefixed encoded `Task::Links`. Up to [`MEM_RECORDS`] they stay
/// in memory; beyond, every slot's records are appended to its file in
/// the area's `parts/`, and the groups are decided slot range by slot
/// range. Members are kept only for groups that may have an action
/// record (a filter of [`WANTED_BITS`] bits; exact when decided).
struct Sorter<'a> {
    area: &'a LinkArea,
    /// The records' source identities ([`Engine::source_id`]).
    id: &'a dyn Fn(&Entry) -> SourceId,
    /// Per slot and kind (`slot * 2 + kind`): records not yet written.
    bufs: Vec<Vec<u8>>,
    /// Per slot and kind: bytes in its file.
    written: Vec<u64>,
    buffered: usize,
    /// Some records are in `parts/`.
    spilled: bool,
    /// Writing to `parts/` failed: everything is kept in memory.
    stuck: bool,
    wanted: Vec<u64>,
    any_action: bool,
}

impl<'a> Sorter<'a> {
    fn new(area: &'a LinkArea, id: &'a dyn Fn(&Entry) -> SourceId) -> Sorter<'a> {
        Sorter {
            area,
            id,
            bufs: vec![Vec::new(); SLOTS as usize * 2],
            written: vec![0; SLOTS as usize * 2],
            buffered: 0,
            spilled: false,
            stuck: false,
            wanted: Vec::new(),
            any_action: false,
        }
    }

    fn add(&mut self, kind: usize, rel: &RelPath, at: Option<(u64, u64)>, actions: Vec<Action>) {
        if self.wanted.is_empty() {
            self.wanted = vec![0; WANTED_BITS / 64];
        }
        let mut by_slot: std::collections::BTreeMap<u32, Vec<Action>> = Default::default();
        for a in actions {
            let Some(src) = action_source(&a) else {
                continue;
            };
            let (slot, bit) = slot_of((self.id)(src));
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            if kind == ACTIONS {
                self.wanted[word] |= mask;
                self.any_action = true;
            } else if self.wanted[word] & mask == 0 {
                continue;
            }
            by_slot.entry(slot).or_default().push(a);
        }
        for (slot, actions) in by_slot {
            let task = Task::Links {
                rel: rel.clone(),
                actions,
                at,
            };
            let Ok(bytes) = task.encode() else { continue };
            let Ok(len) = u32::try_from(bytes.len()) else {
                continue;
            };
            let buf = &mut self.bufs[slot as usize * 2 + kind];
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&bytes);
            self.buffered += 4 + bytes.len();
        }
        if self.buffered > mem_records() && !self.stuck {
            self.spill();
        }
    }

    /// Appends every slot's records to its file in `parts/`. Where that
    /// fails, what was written is read back: memory then holds all.
    fn spill(&mut self) {
        let Ok(parts) = self.area.parts() else {
            self.stuck = true;
            return;
        };
        for i in 0..self.bufs.len() {
            if self.bufs[i].is_empty() {
                continue;
            }
            #[allow(clippy::cast_possible_truncation)]
            let name = slot_file((i / 2) as u32, i % 2);
            let file = if self.written[i] == 0 {
                let _ = parts.unlink(name.as_bytes());
                parts.create_excl(name.as_bytes())
            } else {
                parts.open_write(name.as_bytes())
            };
            let done = file.and_then(|f| {
                std::os::unix::fs::FileExt::write_all_at(&f, &self.bufs[i], self.written[i])
            });
            if done.is_err() {
                self.stuck = true;
                return self.unspill(parts);
            }
            self.written[i] += self.bufs[i].len() as u64;
            self.buffered -= self.bufs[i].len();
            self.bufs[i].clear();
        }
        self.spilled = true;
    }

    /// Reads back what [`Sorter::spill`] wrote, and removes it.
    fn unspill(&mut self, parts: &Dir) {
        for i in 0..self.bufs.len() {
            if self.written[i] == 0 {
                continue;
            }
            #[allow(clippy::cast_possible_truncation)]
            let name = slot_file((i / 2) as u32, i % 2);
            if let Some(mut back) = read_small(parts, &name) {
                back.truncate(usize::try_from(self.written[i]).unwrap_or(usize::MAX));
                self.buffered += back.len();
                back.extend_from_slice(&self.bufs[i]);
                self.bufs[i] = back;
            }
            let _ = parts.unlink(name.as_bytes());
            self.written[i] = 0;
        }
        self.spilled = false;
    }

    /// The records decoded, when they are all in memory; `None` when they
    /// are in `parts/` (all of them, now).
    #[allow(clippy::type_complexity)]
    fn finish(
        mut self,
    ) -> Option<(
        Vec<(RelPath, Action)>,
        std::collections::HashMap<RelPath, (u64, u64)>,
    )> {
        if self.spilled && !self.stuck {
            self.spill();
        }
        if self.spilled && !self.stuck {
            return None;
        }
        let kind = |k: usize| self.bufs.iter().skip(k).step_by(2).collect::<Vec<_>>();
        Some(collect_records(
            self.id,
            &kind(ACTIONS),
            &kind(MEMBER_RECORDS),
        ))
    }
}

/// Each record in `bytes` (length-prefixed encoded `Task::Links`).
fn each_record(bytes: &[u8], each: &mut dyn FnMut(RelPath, Option<(u64, u64)>, Vec<Action>)) {
    let mut rest = bytes;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let Some((record, tail)) = tail.split_at_checked(len) else {
            return;
        };
        if let Ok(Task::Links { rel, actions, at }) = Task::decode(record) {
            each(rel, at, actions);
        }
        rest = tail;
    }
}

/// The recorded names of whole groups, from their slots' records: every
/// action, and the members of the groups those touch (the others need
/// nothing); with the directories' identities.
#[allow(clippy::type_complexity)]
fn collect_records<B: AsRef<[u8]>>(
    id: &dyn Fn(&Entry) -> SourceId,
    actions: &[B],
    members: &[B],
) -> (
    Vec<(RelPath, Action)>,
    std::collections::HashMap<RelPath, (u64, u64)>,
) {
    let mut dirs = std::collections::HashMap::new();
    let mut recorded = Vec::new();
    for b in actions {
        each_record(b.as_ref(), &mut |rel, at, acts| {
            if let Some(at) = at {
                dirs.insert(rel.clone(), at);
            }
            recorded.extend(acts.into_iter().map(|a| (rel.clone(), a)));
        });
    }
    if recorded.is_empty() || members.iter().all(|b| b.as_ref().is_empty()) {
        return (recorded, dirs);
    }
    let wanted: std::collections::HashSet<SourceId> = recorded
        .iter()
        .filter_map(|(_, a)| action_source(a).map(id))
        .collect();
    // A name recorded as an action too (a `--checksum` comparison found
    // equal, its attributes due) counts once, as the action.
    let acted: std::collections::HashSet<(RelPath, Name)> = recorded
        .iter()
        .filter_map(|(rel, a)| action_source(a).map(|s| (rel.clone(), s.name.clone())))
        .collect();
    for b in members {
        each_record(b.as_ref(), &mut |rel, at, acts| {
            for a in acts {
                if action_source(&a).is_some_and(|s| {
                    wanted.contains(&id(s)) && !acted.contains(&(rel.clone(), s.name.clone()))
                }) {
                    if let Some(at) = at {
                        dirs.insert(rel.clone(), at);
                    }
                    recorded.push((rel.clone(), a));
                }
            }
        });
    }
    (recorded, dirs)
}

/// The copies `copy` as the records of a file of `held/`: one
/// `Task::Links` per directory, each length-prefixed (as in `parts/`).
fn held_records(
    copy: &[(RelPath, Action)],
    dirs: &std::collections::HashMap<RelPath, (u64, u64)>,
) -> Option<Vec<u8>> {
    let mut by_dir: std::collections::BTreeMap<&RelPath, Vec<Action>> = Default::default();
    for (rel, a) in copy {
        by_dir.entry(rel).or_default().push(a.clone());
    }
    let mut bytes = Vec::new();
    for (rel, actions) in by_dir {
        let task = Task::Links {
            rel: rel.clone(),
            actions,
            at: dirs.get(rel).copied(),
        };
        let record = task.encode().ok()?;
        bytes.extend_from_slice(&u32::try_from(record.len()).ok()?.to_le_bytes());
        bytes.extend_from_slice(&record);
    }
    Some(bytes)
}

/// Reads one record of the walk.
fn read_record(dir: &Dir, name: &[u8]) -> Option<Task> {
    read_small(dir, &Name(name.to_vec())).and_then(|b| Task::decode(&b).ok())
}

/// The files of `held/` in parts of about [`MEM_RECORDS`] each (at least
/// one file), in the order of their names: one part per pass of the
/// last phase after the first. The same on every engine and delivery:
/// `held/` is complete before the first of those passes and unchanged
/// until the area's removal. A temporary a worker left while writing
/// (see [`Engine::write_once`]) is not a part. Bounded: one file per
/// deciding task (the root's finish, or a range of slots).
fn held_parts(area: &LinkArea) -> Vec<Vec<Name>> {
    let Ok(held) = area.root.open_dir(HELD) else {
        return Vec::new();
    };
    let Ok(mut names) = held.names() else {
        return Vec::new();
    };
    names.retain(|n| {
        !n.as_bytes()
            .starts_with(crate::engine::TEMP_PREFIX.as_bytes())
    });
    names.sort();
    let mut parts: Vec<Vec<Name>> = Vec::new();
    let mut bytes = 0usize;
    for name in names {
        let size = held
            .stat(name.as_bytes())
            .map_or(0, |st| usize::try_from(st.st_size).unwrap_or(usize::MAX));
        match parts.last_mut() {
            Some(part) if bytes.saturating_add(size) <= mem_records() => {
                bytes += size;
                part.push(name);
            }
            _ => {
                bytes = size;
                parts.push(vec![name]);
            }
        }
    }
    parts
}

/// An attribute fix of the last phase as a relink: the name's target is
/// published as the group's inode (only if no name outside the tree
/// shares it) and fixed there, or linked to the group's inode made anew.
fn relink(a: Action) -> Action {
    match a {
        Action::Attrs { src, dst, change } => match src.kind {
            Kind::File => Action::Copy {
                src,
                dst: Some(dst),
                change,
            },
            Kind::Symlink => Action::Symlink {
                src,
                dst: Some(dst),
                change,
            },
            _ => Action::Special {
                src,
                dst: Some(dst),
                change,
            },
        },
        other => other,
    }
}

/// Waiting for another worker's claim on a hard-link group. Gives up when
/// the claim file stops changing for a minute (its worker died).
struct Waiter {
    last: Option<(u64, Time)>,
    still_since: std::time::Instant,
    sleep: std::time::Duration,
}

impl Waiter {
    fn new() -> Waiter {
        Waiter {
            last: None,
            still_since: std::time::Instant::now(),
            sleep: std::time::Duration::from_micros(200),
        }
    }

    /// Sleeps a little; false when the claim looks abandoned.
    fn tick(&mut self, area: &Dir, part: &Name) -> bool {
        #[allow(clippy::unnecessary_cast)]
        let now = area.stat(part.as_bytes()).ok().map(|st| {
            (
                st.st_size as u64,
                Time::new(st.st_mtime as i64, st.st_mtime_nsec as u32),
            )
        });
        if now != self.last {
            self.last = now;
            self.still_since = std::time::Instant::now();
        }
        std::thread::sleep(self.sleep);
        self.sleep = (self.sleep * 2).min(std::time::Duration::from_millis(50));
        self.still_since.elapsed() < std::time::Duration::from_secs(60)
    }
}

/// A copy of an `io::Error` held in a result (its kind and errno).
fn clone_io(e: &io::Error) -> io::Error {
    e.raw_os_error().map_or_else(
        || io::Error::new(e.kind(), e.to_string()),
        io::Error::from_raw_os_error,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;

    fn e(name: &str, kind: Kind, ino: u64, nlink: u64) -> Entry {
        Entry {
            name: Name::from(name),
            kind,
            size: 10,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: Time::new(1_700_000_000, 5),
            atime: Time::default(),
            ctime: Time::default(),
            nlink,
            dev: 1,
            ino,
            rdev: 0,
            blocks: 8,
            link: None,
            mount_root: false,
            flags: None,
            fs_data: Default::default(),
        }
    }

    /// `rm b; ln a c` after a sync: `a` needs nothing and is a member,
    /// `c` is new; grouped, the group has work and two names.
    #[test]
    fn a_name_that_needs_nothing_is_a_member_of_a_group_with_work() {
        let opts = PlanOptions::default();
        let src = [e("a", Kind::File, 7, 2), e("c", Kind::File, 7, 2)];
        let dst = [e("a", Kind::File, 70, 2), e("b", Kind::File, 70, 2)];
        let actions = plan(&src, &dst, &opts);
        let found = members(&src, &dst, &actions, &opts);
        assert_eq!(found.len(), 1);
        assert!(is_member(&found[0]));
        assert_eq!(
            action_source(&found[0]).map(|s| s.name.clone()),
            Some("a".into())
        );
        let mut recorded: Vec<(RelPath, Action)> = actions
            .into_iter()
            .filter(|a| matches!(a, Action::Copy { .. }))
            .map(|a| (RelPath::root(), a))
            .collect();
        recorded.extend(found.into_iter().map(|a| (RelPath::root(), a)));
        let g = &group(&SourceId::inode, &recorded)[&SourceId::Inode { dev: 1, ino: 7 }];
        assert_eq!(g.paths, 2);
        assert!(g.work && g.split);
    }

    /// Names with planned work, single-link names and names whose target
    /// is of another type are not members; a group whose names are one
    /// target inode needs nothing.
    #[test]
    fn members_are_hard_linked_names_planned_as_nothing() {
        let opts = PlanOptions::default();
        let mut changed = e("changed", Kind::File, 8, 2);
        changed.size = 11;
        let src = [
            changed.clone(),
            e("fifo", Kind::Fifo, 9, 2),
            e("other", Kind::Fifo, 10, 2),
            e("solo", Kind::File, 11, 1),
        ];
        let mut dst_changed = changed;
        dst_changed.size = 10;
        let dst = [
            dst_changed,
            e("fifo", Kind::Fifo, 90, 2),
            e("other", Kind::File, 100, 2),
            e("solo", Kind::File, 110, 1),
        ];
        let actions = plan(&src, &dst, &opts);
        let found = members(&src, &dst, &actions, &opts);
        let names: Vec<&Name> = found
            .iter()
            .filter_map(|a| action_source(a))
            .map(|s| &s.name)
            .collect();
        assert_eq!(names, [&Name::from("fifo")]);
        let recorded: Vec<(RelPath, Action)> =
            found.into_iter().map(|a| (RelPath::root(), a)).collect();
        let g = &group(&SourceId::inode, &recorded)[&SourceId::Inode { dev: 1, ino: 9 }];
        assert!(!g.work && !g.split);
    }
}
