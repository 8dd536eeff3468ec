//! Hard links across workers without shared memory: a link area on the
//! target, keyed by source device and inode, with an O_EXCL claim so each
//! group's data is copied once and RENAME_NOREPLACE publication (ADR 001).

use crate::copy::Strategy;
use crate::engine::{CopyFail, Engine, TEMP_PREFIX};
use crate::entry::{Entry, Kind, Name, RelPath, Time};
use crate::error::Op;
use crate::event::{Event, Stats};
use crate::fs::Dir;
use crate::itemize::Change;
use crate::plan::Action;
use crate::task::Task;
use crate::transport::TaskContext;
use std::io;
use std::sync::atomic::Ordering;

impl Engine {
    /// Records a hard-linked file's copy for the run's last phase, as a
    /// small file in the link area (on the target, so any worker of any
    /// node can pick it up).
    pub(crate) fn defer_linked(&self, rel: &RelPath, action: Action) -> io::Result<()> {
        let area = self.link_area()?;
        match area.mkdir(PENDING, 0o700) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let pending = area.open_dir(PENDING)?;
        let task = Task::Links {
            rel: rel.clone(),
            actions: vec![action],
        };
        let bytes = task.encode().map_err(io::Error::other)?;
        let name = self.temp_name();
        let f = pending.create_excl(name.as_bytes())?;
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes, 0)
    }

    /// Spawns the recorded hard-link copies, one task per directory, and
    /// removes their records. False when there were none.
    pub(crate) fn spawn_deferred_links(&self, cx: &mut dyn TaskContext) -> bool {
        let Some(Ok(area)) = self.links.get() else {
            return false;
        };
        let Ok(pending) = area.open_dir(PENDING) else {
            return false;
        };
        let Ok(names) = pending.names() else {
            return false;
        };
        let mut by_dir: std::collections::BTreeMap<RelPath, Vec<Action>> = Default::default();
        for name in names {
            let task = read_small(&pending, &name).and_then(|b| Task::decode(&b).ok());
            let _ = pending.unlink(name.as_bytes());
            if let Some(Task::Links { rel, actions }) = task {
                by_dir.entry(rel).or_default().extend(actions);
            }
        }
        let any = !by_dir.is_empty();
        for (rel, actions) in by_dir {
            for chunk in actions.chunks(self.batch_files) {
                cx.spawn(Task::Links {
                    rel: rel.clone(),
                    actions: chunk.to_vec(),
                });
            }
        }
        any
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
            if let Action::Copy { src, dst, change } = action {
                self.copy_linked(rel, &src_dir, &dst_dir, &src, dst.as_ref(), change);
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
    /// dies. It holds one link per source inode (`<dev>-<ino>`), through
    /// which every path of that inode is linked — whichever thread or node
    /// sees it — and is removed when the run finishes.
    pub(crate) fn link_area(&self) -> io::Result<&Dir> {
        let made = self.links.get_or_init(|| {
            let root = self.dst_root.as_ref().ok_or(libc::ENOENT)?;
            let name = self.link_area_name();
            match root.mkdir(name.as_bytes(), 0o700) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
            }
            root.open_dir(name.as_bytes())
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
        });
        made.as_ref()
            .map_err(|&code| io::Error::from_raw_os_error(code))
    }

    fn link_area_name(&self) -> Name {
        Name(format!("{TEMP_PREFIX}{:016x}.links", self.run_id).into_bytes())
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
        let area = match self.link_area() {
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
                    let leader = self
                        .link_area()
                        .ok()
                        .and_then(|a| read_small(a, &leader_name(src.dev, src.ino)));
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
    /// `key`, link this path to it (a temporary link renamed over the old
    /// entry). Else (2) if the target already holds the right data, publish
    /// it as `key`. Else (3) claim the group with an O_EXCL `key.claim`,
    /// kept for the whole run so exactly one worker ever copies the data:
    /// the claimant copies into `key.part` and publishes it with
    /// RENAME_NOREPLACE (the last guard: a loser links to the winner's).
    /// Everyone else waits for `key`.
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
        let claim = Name([key.as_bytes(), b".claim"].concat());
        let part = Name([key.as_bytes(), b".part"].concat());
        let mut waiter = Waiter::new();
        let mut copied = None;
        let mut retries = self.retries;
        loop {
            if self.quit.load(Ordering::Relaxed) {
                return Err(CopyFail::Interrupted);
            }
            match area.stat(key.as_bytes()) {
                Ok(st) => return self.link_to_key(dst_dir, area, key, src, dst, &st, copied),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(CopyFail::target_io(Op::Stat, e)),
            }
            if quick_ok {
                match area.link_from(dst_dir, src.name.as_bytes(), key.as_bytes()) {
                    Ok(()) => return Ok(Linked::AlreadyRight),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(CopyFail::target_io(Op::Link, e)),
                }
            }
            match area.create_excl(claim.as_bytes()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !waiter.tick(area, &part) {
                        // The claimant is gone (a dead worker): take over.
                        let _ = area.unlink(claim.as_bytes());
                        let _ = area.unlink(part.as_bytes());
                    }
                    continue;
                }
                Err(e) => return Err(CopyFail::target_io(Op::Create, e)),
            }
            let _ = area.unlink(part.as_bytes());
            let (input, cur) = self.open_source(src_dir, src, false)?;
            match self.write_temp(path, &input, &cur, area, &part)? {
                Some(_)
                    if self.itemize
                        && !write_small(area, &leader_name(src.dev, src.ino), path.as_bytes()) =>
                {
                    let _ = area.unlink(part.as_bytes());
                    return Err(CopyFail::target_io(
                        Op::Create,
                        io::Error::other("cannot record the link group's path"),
                    ));
                }
                Some(strategy) => match area.rename_noreplace(part.as_bytes(), key.as_bytes()) {
                    Ok(()) => copied = Some(strategy),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let _ = area.unlink(part.as_bytes());
                    }
                    Err(e) => return Err(CopyFail::target_io(Op::Rename, e)),
                },
                None => {
                    Stats::bump(&self.stats.changed_during_copy, 1);
                    let _ = area.unlink(claim.as_bytes());
                    if retries == 0 {
                        return Err(CopyFail::source(
                            Op::CopyData,
                            io::Error::other("changed during copy; not replaced"),
                        ));
                    }
                    retries -= 1;
                }
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
        let tmp = self.temp_name();
        dst_dir
            .link_from(area, key.as_bytes(), tmp.as_bytes())
            .map_err(|e| CopyFail::target_io(Op::Link, e))?;
        if let Err(e) = dst_dir.rename(tmp.as_bytes(), src.name.as_bytes()) {
            let _ = dst_dir.unlink(tmp.as_bytes());
            return Err(CopyFail::target_io(Op::Rename, e));
        }
        Ok(copied.map_or(Linked::ToExisting, Linked::Copied))
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
