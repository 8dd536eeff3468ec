//! Hard links across workers without shared memory: a link area on the
//! target, keyed by source device and inode, with an O_EXCL claim so each
//! group's data is copied once and RENAME_NOREPLACE publication (ADR 001).

use crate::copy::Strategy;
use crate::engine::{CopyFail, Engine, Made, TEMP_PREFIX};
use crate::entry::{Entry, Kind, Name, RelPath, Time};
use crate::error::Op;
use crate::event::{Event, Stats};
use crate::fs::Dir;
use crate::itemize::Change;
use crate::plan::{Action, is_linked};
use crate::task::Task;
use crate::transport::TaskContext;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// Buckets of the link area: its keys are spread over this many
/// subdirectories, so that workers creating and renaming keys do not all
/// take turns on one directory's lock, nor search one huge directory.
const BUCKETS: usize = 256;

/// The hard-link area of a run, with its subdirectories opened once.
#[derive(Debug)]
pub(crate) struct LinkArea {
    root: Dir,
    /// Its buckets' removal was spawned (it runs once, even if it fails).
    dropping: AtomicBool,
    pending: OnceLock<Result<Dir, i32>>,
    /// Recorded copies held back until the group registrations ran.
    held: Mutex<Vec<(RelPath, Action)>>,
    buckets: Vec<OnceLock<Result<Dir, i32>>>,
}

impl LinkArea {
    fn new(root: Dir) -> LinkArea {
        LinkArea {
            root,
            dropping: AtomicBool::new(false),
            pending: OnceLock::new(),
            held: Mutex::new(Vec::new()),
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

    /// The directory of the deferred hard-link copies.
    fn pending(&self) -> io::Result<&Dir> {
        self.subdir(&self.pending, || PENDING.to_vec())
    }

    /// The bucket holding the keys (and notes) of source inode `ino`.
    fn bucket(&self, dev: u64, ino: u64) -> io::Result<&Dir> {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&dev.to_le_bytes());
        id[8..].copy_from_slice(&ino.to_le_bytes());
        let i = twox_hash::XxHash3_64::oneshot(&id) as usize % BUCKETS;
        self.subdir(&self.buckets[i], || format!("{i:02x}").into_bytes())
    }
}

impl Engine {
    /// Records the copies of a directory's hard-linked files for the run's
    /// last phase, as one small file in the link area (on the target, so
    /// any worker of any node can pick it up).
    pub(crate) fn defer_linked(&self, rel: &RelPath, actions: &[Action]) -> io::Result<()> {
        let pending = self.link_area()?.pending()?;
        let task = Task::Links {
            rel: rel.clone(),
            actions: actions.to_vec(),
        };
        let bytes = task.encode().map_err(io::Error::other)?;
        let name = self.temp_name();
        let f = pending.create_excl(name.as_bytes())?;
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes, 0)
    }

    /// Spawns the recorded hard-link work, one task per directory, and
    /// removes its records. Paths whose data is already right run first,
    /// publishing their group's inode; the copies run in a second pass,
    /// so a new path of a group links to that inode instead of copying.
    /// A group with nothing to copy whose paths' targets are one inode
    /// already is linked to paths outside the tree: it needs nothing; a
    /// group with a single path here is copied like a file of one link.
    /// False when there is nothing (left) to spawn.
    pub(crate) fn spawn_deferred_links(&self, cx: &mut dyn TaskContext) -> bool {
        let Some(Ok(area)) = self.links.get() else {
            return false;
        };
        let held = std::mem::take(&mut *area.held.lock().unwrap_or_else(|e| e.into_inner()));
        if !held.is_empty() {
            self.spawn_links(held, cx);
            return true;
        }
        let Ok(pending) = area.pending() else {
            return false;
        };
        let Ok(names) = pending.names() else {
            return false;
        };
        let mut recorded = Vec::new();
        for name in names {
            let task = read_small(pending, &name).and_then(|b| Task::decode(&b).ok());
            let _ = pending.unlink(name.as_bytes());
            if let Some(Task::Links { rel, actions }) = task {
                recorded.extend(actions.into_iter().map(|a| (rel.clone(), a)));
            }
        }
        // Per source inode: does any path need data, and do all its paths'
        // targets already share one inode?
        #[derive(Default)]
        struct Group {
            paths: u32,
            transfer: bool,
            target: Option<(u64, u64)>,
            split: bool,
        }
        let mut groups: std::collections::HashMap<(u64, u64), Group> = Default::default();
        for (_, a) in &recorded {
            if let Action::Copy { src, dst, change } = a {
                let g = groups.entry((src.dev, src.ino)).or_default();
                g.paths += 1;
                g.transfer |= change.transfer;
                let target = dst.as_ref().map(|d| (d.dev, d.ino));
                match (g.target, target) {
                    (_, None) => g.split = true,
                    (None, t) => g.target = t,
                    (Some(a), Some(b)) => g.split |= a != b,
                }
            }
        }
        let (mut register, mut copy) = (Vec::new(), Vec::new());
        for (rel, mut a) in recorded {
            let Action::Copy { src, change, .. } = &mut a else {
                continue;
            };
            let g = &groups[&(src.dev, src.ino)];
            if change.transfer {
                if g.paths == 1 {
                    // Its other paths are outside the tree: copied like
                    // a file of one link, without the link area.
                    src.nlink = 1;
                }
                copy.push((rel, a));
            } else if g.transfer || g.split {
                register.push((rel, a));
            } else {
                // The group's paths here are one inode already, and its
                // other paths are outside the tree: nothing to do.
                Stats::bump(&self.stats.unchanged, 1);
                Stats::bump(&self.stats.done, 1);
            }
        }
        // Nothing to register: the copies need no pass of their own.
        if register.is_empty() {
            std::mem::swap(&mut register, &mut copy);
        }
        *area.held.lock().unwrap_or_else(|e| e.into_inner()) = copy;
        let any = !register.is_empty();
        self.spawn_links(register, cx);
        any
    }

    /// Spawns `Links` tasks for recorded actions, grouped by directory.
    fn spawn_links(&self, actions: Vec<(RelPath, Action)>, cx: &mut dyn TaskContext) {
        let mut by_dir: std::collections::BTreeMap<RelPath, Vec<Action>> = Default::default();
        for (rel, a) in actions {
            by_dir.entry(rel).or_default().push(a);
        }
        for (rel, actions) in by_dir {
            for chunk in actions.chunks(self.batch_files) {
                cx.spawn(Task::Links {
                    rel: rel.clone(),
                    actions: chunk.to_vec(),
                });
            }
        }
    }

    /// Runs deferred hard-link copies of one directory, then sets its times
    /// again: the new links changed them after its finish.
    pub(crate) fn run_links(&self, rel: &RelPath, actions: Vec<Action>) {
        let (Ok(src_dir), Ok(dst_dir)) = (self.src_root.open_beneath(rel), self.open_dst(rel))
        else {
            for a in &actions {
                if let Action::Copy { src, .. } = a {
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
        for action in actions {
            match action {
                Action::Copy { src, dst, change } if is_linked(&src, &self.plan_opts) => {
                    self.copy_linked(rel, &src_dir, &dst_dir, &src, dst.as_ref(), change);
                }
                // The only path of its group here (see spawn_deferred_links).
                Action::Copy { src, dst, change } => {
                    let old = dst.filter(|_| !change.new).map(|d| d.mode);
                    self.copy_file(rel, &src_dir, &dst_dir, &src, old, false, change);
                }
                _ => {}
            }
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
    }

    /// The hard-link area: a directory at the target root named like a
    /// temporary of this run, so that a later run removes it if this one
    /// dies. Its buckets hold one link per source inode (`<dev>-<ino>`),
    /// through which every path of that inode is linked — whichever thread
    /// or node sees it — and it is removed when the run finishes.
    pub(crate) fn link_area(&self) -> io::Result<&LinkArea> {
        let made = self.links.get_or_init(|| {
            let root = self.dst_root.as_ref().ok_or(libc::ENOENT)?;
            let name = self.link_area_name();
            match root.mkdir(name.as_bytes(), 0o700) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
            }
            root.open_dir(name.as_bytes())
                .map(LinkArea::new)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
        });
        made.as_ref()
            .map_err(|&code| io::Error::from_raw_os_error(code))
    }

    fn link_area_name(&self) -> Name {
        Name(format!("{TEMP_PREFIX}{:016x}.links", self.run_id).into_bytes())
    }

    /// Spawns one task per bucket of the link area that removes it, so
    /// the keys of many groups are unlinked by all threads. False when
    /// there is nothing left to remove that way.
    pub(crate) fn spawn_link_area_removal(&self, cx: &mut dyn TaskContext) -> bool {
        let Some(Ok(area)) = self.links.get() else {
            return false;
        };
        if area.dropping.swap(true, Ordering::Relaxed) {
            return false;
        }
        let Ok(names) = area.root.names() else {
            return false;
        };
        let mut any = false;
        for bucket in names.into_iter().filter(|n| n.as_bytes() != PENDING) {
            any = true;
            cx.spawn(Task::DropLinks {
                rel: RelPath::root(),
                bucket,
            });
        }
        any
    }

    /// Removes one bucket of the link area.
    pub(crate) fn drop_link_bucket(&self, bucket: &Name) {
        if let Some(Ok(area)) = self.links.get()
            && let Err(e) = area.root.remove_all(bucket.as_bytes())
        {
            let path = RelPath::from_bytes(self.link_area_name().0).join(bucket);
            self.fail(&path, true, Op::Remove, e);
        }
    }

    /// Removes the link area (at the end of the run, before the root's
    /// own attributes are set).
    pub(crate) fn drop_link_area(&self) {
        let name = self.link_area_name();
        if let (Some(Ok(_)), Some(root)) = (self.links.get(), &self.dst_root)
            && let Err(e) = root.remove_all(name.as_bytes())
        {
            self.fail(&RelPath::from_bytes(name.0), true, Op::Remove, e);
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
        let area = match self.link_area().and_then(|a| a.bucket(src.dev, src.ino)) {
            Ok(a) => a,
            Err(e) => return self.fail(&path, true, Op::Link, e),
        };
        let key = Name(format!("{:x}-{:x}", src.dev, src.ino).into_bytes());
        let quick_ok = dst.is_some_and(|d| {
            d.kind == Kind::File
                && d.size == src.size
                && !self.plan_opts.ignore_times
                && src.mtime.within(d.mtime, self.plan_opts.modify_window_ns)
        });
        match self.link_protocol(&path, src_dir, dst_dir, area, &key, src, dst, quick_ok) {
            Ok(Linked::Copied(strategy)) => {
                self.count_strategy(strategy);
                self.itemize(path, Some(change), src);
                self.count_change(dst.is_some() && !change.new);
            }
            Ok(Linked::ToExisting) => {
                let mut c = if dst.is_none() {
                    Change::new_entry(Kind::File)
                } else {
                    change
                };
                c.hardlink = true;
                c.transfer = false;
                if self.itemize {
                    // rsync's `hf... PATH => LEADER`: the group's copier left its path.
                    let leader = read_small(area, &leader_name(src.dev, src.ino));
                    let link = leader.map(RelPath::from_bytes);
                    self.emit(Event::Itemize {
                        path,
                        change: Some(c),
                        kind: Kind::File,
                        link,
                    });
                }
                self.count_change(dst.is_some());
            }
            Ok(Linked::AlreadyRight) => {
                Stats::bump(&self.stats.unchanged, 1);
                Stats::bump(&self.stats.done, 1);
            }
            Err(CopyFail::Vanished) => {
                Stats::bump(&self.stats.done, 1);
                self.warn(&path, false, Op::Open, "vanished before it could be copied");
            }
            Err(CopyFail::Interrupted) => {}
            Err(CopyFail::Failed { on_target, op, err }) => self.fail(&path, on_target, op, err),
        }
    }

    /// The race-free core. (1) If the group's inode is published as
    /// `key`, link this path to it. Else (2) if the target already holds
    /// the right data, publish it as `key`. Else (3) claim the group by
    /// creating `key.part` with O_EXCL: the claimant looks for `key` once
    /// more (published between its first look and its claim), copies into
    /// the part and publishes it with RENAME_NOREPLACE, so exactly one
    /// worker ever copies the data. Everyone else waits for `key`.
    #[allow(clippy::too_many_arguments)]
    fn link_protocol(
        &self,
        path: &RelPath,
        src_dir: &Dir,
        dst_dir: &Dir,
        area: &Dir,
        key: &Name,
        src: &Entry,
        dst: Option<&Entry>,
        quick_ok: bool,
    ) -> Result<Linked, CopyFail> {
        let part = Name([key.as_bytes(), b".part"].concat());
        let published = |copied| match area.stat(key.as_bytes()) {
            Ok(st) => Ok(Some(
                self.link_to_key(dst_dir, area, key, src, dst, &st, copied)?,
            )),
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
            if quick_ok {
                match area.link_from(dst_dir, src.name.as_bytes(), key.as_bytes()) {
                    Ok(()) => return Ok(Linked::AlreadyRight),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(CopyFail::target_io(Op::Link, e)),
                }
            }
            let (input, cur) = match opened {
                Some(ref o) => o,
                None => opened.insert(self.open_source(src_dir, src, false)?),
            };
            let out = match self.copier.create(area, &part, cur, input) {
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
            // Published by a claimant that finished before this claim.
            if let Some(linked) = published(None)? {
                return Ok(linked);
            }
            let filled = self.fill_checked(path, input, &out, cur, Made::default());
            drop(out);
            let Some(strategy) = filled? else {
                Stats::bump(&self.stats.changed_during_copy, 1);
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
            if self.itemize && !write_small(area, &leader_name(src.dev, src.ino), path.as_bytes()) {
                return Err(CopyFail::target_io(
                    Op::Create,
                    io::Error::other("cannot record the link group's path"),
                ));
            }
            match area.rename_noreplace(part.as_bytes(), key.as_bytes()) {
                Ok(()) => std::mem::forget(claim),
                // Cannot happen while claims are honoured; a loser links
                // to the winner's inode all the same.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CopyFail::target_io(Op::Rename, e)),
            }
            if let Some(linked) = published(Some(strategy))? {
                return Ok(linked);
            }
        }
    }

    /// Links the path to the published inode, unless it already is that inode.
    #[allow(clippy::too_many_arguments)]
    fn link_to_key(
        &self,
        dst_dir: &Dir,
        area: &Dir,
        key: &Name,
        src: &Entry,
        dst: Option<&Entry>,
        st: &rustix::fs::Stat,
        copied: Option<Strategy>,
    ) -> Result<Linked, CopyFail> {
        #[allow(clippy::unnecessary_cast)]
        let same = dst.is_some_and(|d| d.ino == st.st_ino as u64 && d.dev == st.st_dev as u64);
        if same {
            return Ok(Linked::AlreadyRight);
        }
        let linked = Ok(copied.map_or(Linked::ToExisting, Linked::Copied));
        // A new name: linked in place directly (a name that appeared
        // meanwhile is replaced below, like an old one).
        if dst.is_none() {
            match dst_dir.link_from(area, key.as_bytes(), src.name.as_bytes()) {
                Ok(()) => return linked,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CopyFail::target_io(Op::Link, e)),
            }
        }
        let tmp = self.temp_name();
        dst_dir
            .link_from(area, key.as_bytes(), tmp.as_bytes())
            .map_err(|e| CopyFail::target_io(Op::Link, e))?;
        if let Err(e) = dst_dir.rename(tmp.as_bytes(), src.name.as_bytes()) {
            let _ = dst_dir.unlink(tmp.as_bytes());
            return Err(CopyFail::target_io(Op::Rename, e));
        }
        linked
    }
}

/// The link area's subdirectory of deferred hard-link copies.
const PENDING: &[u8] = b"pending";

/// The link area's note of which path copied a group (for itemizing).
fn leader_name(dev: u64, ino: u64) -> Name {
    Name(format!("{dev:x}-{ino:x}.path").into_bytes())
}

/// Writes a small note file; false when it could not be written.
fn write_small(dir: &Dir, name: &Name, data: &[u8]) -> bool {
    let _ = dir.unlink(name.as_bytes());
    dir.create_excl(name.as_bytes())
        .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, data, 0))
        .is_ok()
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
enum Linked {
    /// This path's copy became the group's inode.
    Copied(Strategy),
    /// Linked to the inode another path copied.
    ToExisting,
    /// Already linked right (or published as the group's inode unchanged).
    AlreadyRight,
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
