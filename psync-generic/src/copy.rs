//! The generic copier.

use psync_core::copy::kit::{
    Hasher, chmod_fd, chown_fd, direct, fs_magic, own_groups, set_times_fd, sync_xattrs,
    timestamps, umask,
};
use psync_core::copy::pace;
use psync_core::probe::magic;
use psync_core::{
    Copied, Copier, CopyOptions, DataJob, Dir, Entry, Kind, Name, Node, Op, Reflink, RelPath,
    StepError, StepExt, Strategy, XattrReport, XattrSync, is_unsupported,
};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes moved between two checks of the quit flag.
const STEP: u64 = 64 << 20;

/// Copier for any POSIX file system.
#[derive(Debug, Default)]
pub struct GenericCopier {
    /// Set when copy_file_range answered "unsupported" once: later files go
    /// straight to read/write instead of failing the same call again.
    no_copy_range: AtomicBool,
    /// Set when FICLONE answered "unsupported" once (`--reflink=auto`).
    no_reflink: AtomicBool,
    /// Set when O_TMPFILE answered "unsupported" once.
    no_tmpfile: AtomicBool,
}

impl GenericCopier {
    /// A copier that tries reflink (when allowed), then copy_file_range,
    /// then read/write.
    pub fn new() -> GenericCopier {
        GenericCopier::default()
    }

    /// A copier that always uses read/write (for tests and odd file systems).
    pub fn read_write_only() -> GenericCopier {
        GenericCopier {
            no_copy_range: AtomicBool::new(true),
            no_reflink: AtomicBool::new(true),
            no_tmpfile: AtomicBool::new(false),
        }
    }

    /// Clones the whole file. `Ok(false)`: not possible here, copy instead.
    fn try_reflink(&self, job: &DataJob<'_>) -> io::Result<bool> {
        if !job.is_whole_file() {
            return Ok(false);
        }
        self.clone_file(job.src, job.dst, job.opts.reflink)
    }

    /// FICLONE under a reflink policy. `Ok(false)`: not possible (or not
    /// allowed) here.
    fn clone_file(&self, src: &File, dst: &File, policy: Reflink) -> io::Result<bool> {
        if policy == Reflink::Never {
            return Ok(false);
        }
        if policy == Reflink::Auto && self.no_reflink.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match rustix::fs::ioctl_ficlone(dst, src) {
            Ok(()) => Ok(true),
            Err(e) if policy == Reflink::Auto && is_unsupported(&e.into()) => {
                self.no_reflink.store(true, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Copies one data segment, by copy_file_range when it works here.
    fn copy_segment(
        &self,
        src: &File,
        dst: &File,
        offset: u64,
        len: u64,
        quit: &AtomicBool,
    ) -> Result<Strategy, StepError> {
        if !self.no_copy_range.load(Ordering::Relaxed) {
            match copy_range(src, dst, offset, len, quit)? {
                true => return Ok(Strategy::CopyRange),
                false => self.no_copy_range.store(true, Ordering::Relaxed),
            }
        }
        copy_read_write(src, dst, (offset, len), (None, None), quit)?;
        Ok(Strategy::ReadWrite)
    }
}

/// The data segments of `[offset, offset + len)` of `f`, found with
/// SEEK_DATA/SEEK_HOLE, as (start, length) pairs. File systems without
/// SEEK_DATA report the whole range as one segment.
fn data_segments(f: &File, offset: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::SeekFrom;
    let end = offset + len;
    let mut out = Vec::new();
    let mut pos = offset;
    while pos < end {
        let data = match rustix::fs::seek(f, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // ENXIO: no data at or after pos, the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) if pos == offset && is_unsupported(&e.into()) => return Ok(vec![(offset, len)]),
            Err(e) => return Err(e.into()),
        };
        if data >= end {
            break;
        }
        let hole = rustix::fs::seek(f, SeekFrom::Hole(data))
            .map_err(io::Error::from)?
            .min(end);
        out.push((data, hole - data));
        pos = hole;
    }
    Ok(out)
}

/// Moves `len` bytes with copy_file_range. `Ok(false)`: unsupported here
/// before any byte moved; fall through to the next strategy.
///
/// copy_file_range does not say which side failed: after an error the rest
/// goes through read/write, whose errors name the source (`Op::Read`) or
/// the target (`Op::Write`).
fn copy_range(
    src: &File,
    dst: &File,
    offset: u64,
    len: u64,
    quit: &AtomicBool,
) -> Result<bool, StepError> {
    let (mut off_in, mut off_out) = (offset, offset);
    let mut done = 0u64;
    while done < len {
        if done > 0 && quit.load(Ordering::Relaxed) {
            return Err(interrupted());
        }
        let want = usize::try_from((len - done).min(pace::step(STEP))).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            // At or past the source's end: it is shorter than listed.
            Ok(0) => {
                return Err(StepError::new(
                    Op::Read,
                    io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            Ok(n) => {
                done += n as u64;
                pace::pace(n as u64, quit);
            }
            Err(e) if done == 0 && is_unsupported(&e.into()) => return Ok(false),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                copy_read_write(src, dst, (offset + done, len - done), (None, None), quit)?;
                return Ok(true);
            }
        }
    }
    Ok(true)
}

/// The error of a copy stopped by the quit flag.
fn interrupted() -> StepError {
    StepError::new(Op::CopyData, io::ErrorKind::Interrupted.into())
}

/// Pieces read back right after they are written: small enough that the
/// piece and its read-back stay in a core's L2 cache (1 MiB here), so the
/// read-back copies from the cache, not from memory (ADR 022).
const READ_BACK_PIECE: usize = 256 << 10;

/// `pread`/`pwrite` through the thread's own buffer (at most
/// [`direct::SMALL`] bytes), hashing what passes; with `back`, each piece
/// read back from the target right after it is written, hashed into
/// `back`.
fn copy_read_write(
    src: &File,
    dst: &File,
    (offset, len): (u64, u64),
    (mut hasher, mut back): (Option<&mut Hasher>, Option<&mut Hasher>),
    quit: &AtomicBool,
) -> Result<(), StepError> {
    let most = if back.is_some() {
        READ_BACK_PIECE
    } else {
        direct::SMALL
    };
    let size = usize::try_from(len).unwrap_or(most).clamp(1, most);
    let room = if back.is_some() { 2 * size } else { size };
    direct::with_buffer(room, |buf| {
        let (buf, again) = buf.split_at_mut(size);
        let mut done = 0u64;
        while done < len {
            if done > 0 && quit.load(Ordering::Relaxed) {
                return Err(interrupted());
            }
            let want = usize::try_from(len - done).unwrap_or(usize::MAX).min(size);
            let n = match src.read_at(&mut buf[..want], offset + done) {
                Ok(0) => {
                    return Err(StepError::new(
                        Op::Read,
                        io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StepError::new(Op::Read, e)),
            };
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&buf[..n]);
            }
            dst.write_all_at(&buf[..n], offset + done).op(Op::Write)?;
            if let Some(b) = back.as_deref_mut() {
                let piece = &mut again[..n];
                dst.read_exact_at(piece, offset + done).op(Op::Verify)?;
                b.update(piece);
            }
            done += n as u64;
            pace::pace(n as u64, quit);
        }
        Ok(())
    })
}

/// True when the chunk shares no page with another chunk: a direct write
/// and another thread's buffered write into one page could leave that
/// page's stale cached copy to be written over the direct data.
fn page_aligned(job: &DataJob<'_>) -> bool {
    let page = direct::ALIGN as u64;
    let end = job.offset + job.len;
    job.offset.is_multiple_of(page) && (end == job.entry.size || end.is_multiple_of(page))
}

/// Copies the data `segments` of a chunk by reading the source (through
/// its page cache) into an aligned buffer and writing the target with
/// `O_DIRECT`, into space allocated first: ext4 then lets several chunks
/// of one file be written at once, and the copy leaves no dirty pages to
/// throttle the rest of the run. `Ok(false)`: direct I/O is not possible
/// here and nothing was read; the caller copies otherwise. A file system
/// that refuses a direct write after all gets the rest buffered.
fn copy_direct(
    src: &File,
    dst: &File,
    segments: &[(u64, u64)],
    mut hasher: Option<&mut Hasher>,
    quit: &AtomicBool,
) -> Result<bool, StepError> {
    let Some(align) = direct::align(dst) else {
        return Ok(false);
    };
    if segments.iter().any(|&(start, _)| start % align != 0) {
        return Ok(false);
    }
    let Some(mode) = direct::DirectMode::enable(dst) else {
        return Ok(false);
    };
    let mut mode = Some(mode);
    // Ends of segments that are not a multiple of the alignment (the end
    // of the file): written buffered once direct mode is off again.
    let mut tails: Vec<(u64, Vec<u8>)> = Vec::new();
    let total = segments.iter().map(|s| s.1).sum::<u64>();
    direct::with_buffer(usize::try_from(total).unwrap_or(usize::MAX), |buf| {
        for &(start, len) in segments {
            // Allocated and inside the file's length (set before the
            // chunks): a direct write there is an overwrite, which ext4
            // lets writers do side by side.
            match rustix::fs::fallocate(dst, rustix::fs::FallocateFlags::empty(), start, len) {
                Ok(()) => {}
                Err(e) if is_unsupported(&e.into()) => {}
                Err(e) => return Err(StepError::new(Op::Write, e.into())),
            }
            let mut done = 0u64;
            while done < len {
                if done > 0 && quit.load(Ordering::Relaxed) {
                    return Err(interrupted());
                }
                // A paced step is whole MiB: still aligned.
                let want = usize::try_from((len - done).min(pace::step(u64::MAX)))
                    .unwrap_or(buf.len())
                    .min(buf.len());
                src.read_exact_at(&mut buf[..want], start + done)
                    .op(Op::Read)?;
                if let Some(h) = hasher.as_deref_mut() {
                    h.update(&buf[..want]);
                }
                let at = start + done;
                let whole = if mode.is_some() {
                    want - want % align as usize
                } else {
                    want
                };
                match dst.write_all_at(&buf[..whole], at) {
                    Ok(()) => {}
                    // Refused after all: the rest goes through the cache.
                    Err(e) if mode.is_some() && e.raw_os_error() == Some(libc::EINVAL) => {
                        mode = None;
                        dst.write_all_at(&buf[..want], at).op(Op::Write)?;
                        done += want as u64;
                        pace::pace(want as u64, quit);
                        continue;
                    }
                    Err(e) => return Err(StepError::new(Op::Write, e)),
                }
                if whole < want {
                    tails.push((at + whole as u64, buf[whole..want].to_vec()));
                }
                done += want as u64;
                pace::pace(want as u64, quit);
            }
        }
        Ok(())
    })?;
    drop(mode);
    for (at, bytes) in tails {
        dst.write_all_at(&bytes, at).op(Op::Write)?;
    }
    Ok(true)
}

/// True for file systems where `copy_file_range` may be done by a server
/// (NFS 4.2, SMB, Ceph, FUSE) rather than by this machine's CPU.
fn offloads_copies(magic: u64) -> bool {
    const NFS: u64 = 0x6969;
    const SMB2: u64 = 0xfe53_4d42;
    const CIFS: u64 = 0xff53_4d42;
    const CEPH: u64 = 0x00c3_6400;
    const FUSE: u64 = 0x6573_5546;
    [NFS, SMB2, CIFS, CEPH, FUSE].contains(&magic)
}

/// The mode a new entry gets: the source's, or without `-p` the source's
/// masked by the umask (as rsync does for new files).
fn target_mode(src: &Entry, opts: &CopyOptions) -> u32 {
    if opts.preserve.perms {
        src.mode
    } else {
        src.mode & 0o777 & !umask()
    }
}

fn chown(target: Node<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    match target {
        Node::Fd(fd) => {
            let uid = uid.map(rustix::fs::Uid::from_raw);
            let gid = gid.map(rustix::fs::Gid::from_raw);
            Ok(rustix::fs::fchown(fd, uid, gid)?)
        }
        Node::At(dir, name) => dir.chown(name.as_bytes(), uid, gid),
        Node::Path(fd) => chown_fd(fd, uid, gid),
    }
}

fn chmod(target: Node<'_>, mode: u32) -> io::Result<()> {
    match target {
        Node::Fd(fd) => Ok(rustix::fs::fchmod(
            fd,
            rustix::fs::Mode::from_raw_mode(mode),
        )?),
        Node::At(dir, name) => dir.chmod(name.as_bytes(), mode),
        Node::Path(fd) => chmod_fd(fd, mode),
    }
}

fn set_times(target: Node<'_>, src: &Entry) -> io::Result<()> {
    match target {
        Node::Fd(fd) => Ok(rustix::fs::futimens(fd, &timestamps(src.atime, src.mtime))?),
        Node::At(dir, name) => dir.set_times(name.as_bytes(), src.atime, src.mtime),
        Node::Path(fd) => set_times_fd(fd, src.atime, src.mtime),
    }
}

/// The owner and group to give a target: by numeric id as root; without
/// root, only a group the process is in (an owner cannot be given away).
fn owner(src: &Entry, opts: &CopyOptions) -> (Option<u32>, Option<u32>) {
    if !opts.can_chown {
        let gid = opts.preserve.group && own_groups().binary_search(&src.gid).is_ok();
        return (None, gid.then_some(src.gid));
    }
    (
        opts.preserve.owner.then_some(src.uid),
        opts.preserve.group.then_some(src.gid),
    )
}

/// `lstat` of a target, for the calls that look before they change it.
fn stat_of(target: Node<'_>) -> io::Result<rustix::fs::Stat> {
    match target {
        Node::Fd(fd) | Node::Path(fd) => Ok(rustix::fs::fstat(fd)?),
        Node::At(dir, name) => dir.stat(name.as_bytes()),
    }
}

/// Whether `set_attrs` looks at the target first: a fresh file's owner,
/// group and mode come from its directory (setgid, default ACL, `grpid`
/// mounts), not from the process; without root a chown of the group is
/// done only when it differs.
fn looks_first(opts: &CopyOptions) -> bool {
    opts.fresh || (!opts.can_chown && opts.preserve.group)
}

/// Gives a target its owner and group unless it has them already (`cur`:
/// what it has, when looked at). Returns whether it chowned.
fn set_owner(
    target: Node<'_>,
    src: &Entry,
    opts: &CopyOptions,
    cur: Option<&rustix::fs::Stat>,
) -> io::Result<bool> {
    let (uid, gid) = owner(src, opts);
    let has = |st: &rustix::fs::Stat| {
        uid.is_none_or(|u| u == st.st_uid) && gid.is_none_or(|g| g == st.st_gid)
    };
    if (uid.is_none() && gid.is_none()) || cur.is_some_and(has) {
        return Ok(false);
    }
    chown(target, uid, gid)?;
    Ok(true)
}

/// The mode to set on a target, if any. With `perms` the source's (not
/// set again when the target has it and no chown may have cleared a
/// setuid/setgid bit). Without, a new entry keeps the mode its creation
/// gave it; the old rule (the source's less the umask) stays for a
/// caller that says neither (the engine gives an existing target's own
/// mode, and a new directory's, as the entry's with `perms` on).
fn wanted_mode(
    target: Node<'_>,
    src: &Entry,
    opts: &CopyOptions,
    cur: Option<&rustix::fs::Stat>,
    chowned: bool,
) -> io::Result<Option<u32>> {
    if src.kind == Kind::Symlink {
        return Ok(None);
    }
    if opts.preserve.perms {
        let want = src.mode & 0o7777;
        let has = cur.is_some_and(|st| st.st_mode & 0o7777 == want);
        let cleared = chowned && want & 0o6000 != 0;
        return Ok((!has || cleared).then_some(want));
    }
    if opts.created {
        return Ok(None);
    }
    let set = opts.can_chown || matches!(target, Node::Fd(_) | Node::Path(_));
    Ok(set.then(|| target_mode(src, opts)))
}

impl Copier for GenericCopier {
    fn name(&self) -> &str {
        "generic"
    }

    fn create(
        &self,
        dir: &Dir,
        tmp: &Name,
        _src: &Entry,
        _src_file: &File,
    ) -> Result<File, StepError> {
        dir.create_excl(tmp.as_bytes()).op(Op::Create)
    }

    fn try_clone(&self, src: &File, dst: &File, opts: &CopyOptions) -> Result<bool, StepError> {
        self.clone_file(src, dst, opts.reflink).op(Op::CopyData)
    }

    fn create_unnamed(
        &self,
        dir: &Dir,
        src: &Entry,
        _src_file: &File,
    ) -> Result<Option<File>, StepError> {
        if self.no_tmpfile.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let made = dir.create_unnamed(src.mode).op(Op::Create)?;
        if made.is_none() {
            self.no_tmpfile.store(true, Ordering::Relaxed);
        }
        Ok(made)
    }

    fn create_in_place(
        &self,
        dir: &Dir,
        src: &Entry,
        _src_file: &File,
    ) -> Result<Option<File>, StepError> {
        dir.create_new(src.name.as_bytes(), src.mode).op(Op::Create)
    }

    fn copy_data(&self, job: &DataJob<'_>, quit: &AtomicBool) -> Result<Copied, StepError> {
        if job.len == 0 {
            let mut empty = Copied::plain(0, Strategy::Empty);
            empty.hash = job.hash.then(|| Hasher::new().finish());
            return Ok(empty);
        }
        if self.try_reflink(job).op(Op::CopyData)? {
            // Shared extents: the target's data is the source's.
            return Ok(Copied::plain(job.len, Strategy::Reflink));
        }
        let segments = if job.may_be_sparse() {
            data_segments(job.src, job.offset, job.len).op(Op::Read)?
        } else {
            vec![(job.offset, job.len)]
        };
        // A sparse whole file gets its length first: writing the data
        // segments then never extends it, so no file system keeps
        // speculative preallocation past the last segment inside the file.
        if job.may_be_sparse() && job.is_whole_file() {
            rustix::fs::ftruncate(job.dst, job.len)
                .map_err(io::Error::from)
                .op(Op::Write)?;
        }
        let mut hasher = job.hash.then(Hasher::new);
        let mut copied = Copied::plain(0, Strategy::Empty);
        // A chunk of a large file, whose other chunks other threads write
        // at the same time: buffered writes into one file take turns on its
        // lock, direct writes into allocated space do not.
        let chunk = !job.is_whole_file();
        // The target's file system, asked once per chunk (0: unknown).
        let magic = if chunk {
            fs_magic(job.dst).unwrap_or(0)
        } else {
            0
        };
        // A chunk that shares no page with another chunk may bypass the
        // file's write lock by direct I/O where the file system has it
        // (`--no-direct-io` turns it off). tmpfs has none: its chunks go
        // through user space below, which measured faster than filling a
        // shared mapping of the target (ADR 022).
        let unlocked = chunk && job.opts.direct_io && page_aligned(job) && !segments.is_empty();
        let all = |segs: &[(u64, u64)]| segs.iter().map(|s| s.1).sum();
        if unlocked && copy_direct(job.src, job.dst, &segments, hasher.as_mut(), quit)? {
            copied.strategy = Strategy::Direct;
            copied.bytes = all(&segments);
        } else {
            // Other chunks still overlap their reads through user space;
            // an in-kernel copy into one file runs entirely under its lock
            // (except where the file system offloads the copy to a server).
            // In memory, an in-kernel copy moves each page once instead of
            // twice through a buffer, which is worth more (ADR 022).
            let in_memory = [magic::TMPFS, magic::RAMFS].contains(&magic);
            let through_user = chunk && !offloads_copies(magic) && !in_memory;
            // Hashing needs the data in user space too.
            let through_user = through_user || hasher.is_some();
            // Read back as it goes only where nothing but memory holds the
            // data (a later read would find the same pages); hashing
            // implies `through_user`.
            let mut back = (job.hash && job.read_back).then(Hasher::new);
            for &(start, len) in &segments {
                copied.strategy = if through_user {
                    let hashers = (hasher.as_mut(), back.as_mut());
                    copy_read_write(job.src, job.dst, (start, len), hashers, quit)
                        .map(|()| Strategy::ReadWrite)
                } else {
                    self.copy_segment(job.src, job.dst, start, len, quit)
                }?;
                copied.bytes += len;
            }
            copied.read_back = back.map(|h| h.finish());
        }
        // Holes stay holes: only data segments were written; a whole file
        // still needs its length (a trailing hole has no segment).
        if job.may_be_sparse() && job.is_whole_file() && copied.strategy == Strategy::Empty {
            copied.strategy = Strategy::CopyRange;
        }
        copied.hash = hasher.map(|h| h.finish());
        copied.segments = segments;
        Ok(copied)
    }

    fn set_attrs(
        &self,
        target: Node<'_>,
        src: &Entry,
        from: Option<Node<'_>>,
        opts: &CopyOptions,
    ) -> Result<XattrReport, StepError> {
        let cur = if looks_first(opts) {
            Some(stat_of(target).op(Op::Stat)?)
        } else {
            None
        };
        let chowned = set_owner(target, src, opts, cur.as_ref()).op(Op::Chown)?;
        if let Some(mode) = wanted_mode(target, src, opts, cur.as_ref(), chowned).op(Op::Chmod)? {
            chmod(target, mode).op(Op::Chmod)?;
        }
        let report = match from {
            Some(from) if opts.xattrs.on() || opts.acls.on() => {
                sync_xattrs(from, target, XattrSync::of(opts)).op(Op::Xattr)?
            }
            _ => XattrReport::default(),
        };
        if opts.preserve.times {
            set_times(target, src).op(Op::SetTimes)?;
        }
        Ok(report)
    }

    fn make_dir(
        &self,
        dir: &Dir,
        name: &Name,
        _src: &Entry,
        _from: Node<'_>,
    ) -> Result<(), StepError> {
        dir.mkdir(name.as_bytes(), 0o700).op(Op::Mkdir)
    }

    fn make_symlink(&self, dir: &Dir, name: &Name, src: &Entry) -> Result<(), StepError> {
        let target = src.link.as_ref().map_or(&[][..], Name::as_bytes);
        dir.symlink(target, name.as_bytes()).op(Op::Symlink)
    }

    fn make_special(&self, dir: &Dir, name: &Name, src: &Entry) -> Result<(), StepError> {
        dir.mknod(name.as_bytes(), src.kind, src.mode, src.rdev)
            .op(Op::Mknod)
    }

    fn remove(&self, dir: &Dir, listed: &Entry) -> Result<u64, StepError> {
        dir.remove_listed(listed).op(Op::Remove)
    }

    fn remove_each(
        &self,
        dir: &Dir,
        listed: &Entry,
        removed: &mut dyn FnMut(&RelPath, Kind),
    ) -> Result<u64, StepError> {
        dir.remove_listed_each(listed, removed).op(Op::Remove)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tmp() -> tempfile::TempDir {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/unit-tmp");
        std::fs::create_dir_all(&base).unwrap();
        tempfile::tempdir_in(base).unwrap()
    }

    /// `rsync -a` without root, reflink when possible, direct I/O on.
    static OPTS: std::sync::LazyLock<CopyOptions> = std::sync::LazyLock::new(CopyOptions::default);

    /// A data job over `(offset, len)` of `entry`.
    fn job_of<'a>(
        src: &'a File,
        dst: &'a File,
        entry: &'a Entry,
        (offset, len): (u64, u64),
        opts: &'a CopyOptions,
        hash: bool,
    ) -> DataJob<'a> {
        let mut job = DataJob::new(src, dst, entry, opts);
        (job.offset, job.len, job.hash) = (offset, len, hash);
        job
    }

    /// `job` run by a default generic copier, never asked to stop.
    fn run(job: &DataJob<'_>) -> Copied {
        GenericCopier::new()
            .copy_data(job, &AtomicBool::new(false))
            .unwrap()
    }

    fn entry_of(d: &Dir, name: &[u8]) -> Entry {
        Entry::from_stat(Name(name.to_vec()), &d.stat(name).unwrap())
    }

    fn copy_with(c: &GenericCopier, data: &[u8]) -> (Vec<u8>, Strategy) {
        let t = tmp();
        std::fs::File::create(t.path().join("s"))
            .unwrap()
            .write_all(data)
            .unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        let src = d.open_read(b"s").unwrap();
        let dst = d.create_excl(b"t").unwrap();
        let quit = AtomicBool::new(false);
        let entry = entry_of(&d, b"s");
        let job = job_of(&src, &dst, &entry, (0, entry.size), &OPTS, false);
        let got = c.copy_data(&job, &quit).unwrap();
        assert_eq!(got.bytes, data.len() as u64);
        (std::fs::read(t.path().join("t")).unwrap(), got.strategy)
    }

    #[test]
    fn both_strategies_copy_exactly() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (out, s) = copy_with(&GenericCopier::new(), &data);
        assert_eq!(out, data);
        assert!(matches!(s, Strategy::CopyRange | Strategy::ReadWrite));
        let (out, s) = copy_with(&GenericCopier::read_write_only(), &data);
        assert_eq!(out, data);
        assert_eq!(s, Strategy::ReadWrite);
        assert_eq!(copy_with(&GenericCopier::new(), b"").1, Strategy::Empty);
    }

    #[test]
    fn short_source_is_an_error() {
        let t = tmp();
        std::fs::write(t.path().join("s"), b"abc").unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        let src = d.open_read(b"s").unwrap();
        let dst = d.create_excl(b"t").unwrap();
        let mut entry = entry_of(&d, b"s");
        entry.size = 10;
        entry.blocks = 8;
        let job = job_of(&src, &dst, &entry, (0, 10), &OPTS, false);
        for c in [GenericCopier::new(), GenericCopier::read_write_only()] {
            let e = c.copy_data(&job, &AtomicBool::new(false)).unwrap_err();
            assert_eq!(e.source.kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(e.op, Op::Read, "a short source is the source's fault");
        }
    }

    #[test]
    fn quit_interrupts_a_long_copy() {
        let t = tmp();
        let d = Dir::open_root(t.path()).unwrap();
        std::fs::write(t.path().join("s2"), vec![1u8; (3 * STEP) as usize]).unwrap();
        let src = d.open_read(b"s2").unwrap();
        let dst = d.create_excl(b"t").unwrap();
        let entry = entry_of(&d, b"s2");
        let job = job_of(&src, &dst, &entry, (0, entry.size), &OPTS, false);
        let e = GenericCopier::read_write_only()
            .copy_data(&job, &AtomicBool::new(true))
            .unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::Interrupted);
    }

    /// Writes `data` at each offset of a file of `size` bytes (the rest holes).
    fn sparse_file(path: &std::path::Path, size: u64, parts: &[(u64, &[u8])]) {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(size).unwrap();
        for (off, data) in parts {
            f.write_all_at(data, *off).unwrap();
        }
    }

    fn copy_file(c: &GenericCopier, dir: &std::path::Path) -> Copied {
        let d = Dir::open_root(dir).unwrap();
        let src = d.open_read(b"s").unwrap();
        let dst = d.create_excl(b"t").unwrap();
        let entry = entry_of(&d, b"s");
        let job = job_of(&src, &dst, &entry, (0, entry.size), &OPTS, false);
        c.copy_data(&job, &AtomicBool::new(false)).unwrap()
    }

    #[test]
    fn holes_stay_holes() {
        use std::os::unix::fs::MetadataExt;
        let mib = 1u64 << 20;
        type Parts<'a> = Vec<(u64, &'a [u8])>;
        let cases: [(u64, Parts); 3] = [
            (8 * mib, vec![(0, b"head"), (4 * mib, b"middle")]), // hole in the middle and at the end
            (8 * mib, vec![]),                                   // all hole
            (8 * mib, vec![(8 * mib - 3, b"end")]),              // hole at the start
        ];
        for (size, parts) in cases {
            let t = tmp();
            sparse_file(&t.path().join("s"), size, &parts);
            for c in [GenericCopier::new(), GenericCopier::read_write_only()] {
                let _ = std::fs::remove_file(t.path().join("t"));
                copy_file(&c, t.path());
                let (s, d) = (t.path().join("s"), t.path().join("t"));
                assert_eq!(std::fs::read(&s).unwrap(), std::fs::read(&d).unwrap());
                let (sm, dm) = (
                    std::fs::metadata(&s).unwrap(),
                    std::fs::metadata(&d).unwrap(),
                );
                assert_eq!(dm.len(), size);
                // Allocation: no more than the source's, give or take one fs block per extent.
                assert!(
                    dm.blocks() <= sm.blocks() + 8 * (parts.len() as u64 + 1),
                    "{} > {}",
                    dm.blocks(),
                    sm.blocks()
                );
            }
        }
    }

    #[test]
    fn reflink_never_and_always() {
        let t = tmp();
        std::fs::write(t.path().join("s"), b"data").unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        let src = d.open_read(b"s").unwrap();
        let dst = d.create_excl(b"t").unwrap();
        let entry = entry_of(&d, b"s");
        let mut never = *OPTS;
        never.reflink = Reflink::Never;
        let job = job_of(&src, &dst, &entry, (0, 4), &never, false);
        assert_ne!(run(&job).strategy, Strategy::Reflink);
        // On a file system without reflink (this test dir's), Always is an error, Auto falls through.
        let mut always = *OPTS;
        always.reflink = Reflink::Always;
        let job = job_of(&src, &dst, &entry, (0, 4), &always, false);
        match GenericCopier::new().copy_data(&job, &AtomicBool::new(false)) {
            Ok(c) => assert_eq!(c.strategy, Strategy::Reflink),
            Err(e) => assert!(is_unsupported(&e.source), "{:?}", e.source),
        }
    }

    #[test]
    fn hash_covers_exactly_the_copied_data() {
        let t = tmp();
        let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 249) as u8).collect();
        std::fs::write(t.path().join("s"), &data).unwrap();
        sparse_file(
            &t.path().join("h"),
            8 << 20,
            &[(4096, b"x"), (6 << 20, b"tail")],
        );
        for name in [&b"s"[..], &b"h"[..]] {
            let d = Dir::open_root(t.path()).unwrap();
            let src = d.open_read(name).unwrap();
            let _ = std::fs::remove_file(t.path().join("t"));
            let dst = d.create_excl(b"t").unwrap();
            let entry = entry_of(&d, name);
            let job = job_of(&src, &dst, &entry, (0, entry.size), &OPTS, true);
            let got = run(&job);
            assert_eq!(
                got.strategy,
                Strategy::ReadWrite,
                "hashing moves data through user space"
            );
            let segs = &got.segments[..];
            let want = psync_core::copy::kit::hash_segments(&src, segs).unwrap();
            assert_eq!(got.hash, Some(want));
            assert_eq!(
                psync_core::copy::kit::hash_segments(&dst, segs).unwrap(),
                want
            );
        }
    }

    /// Asked to read back as it goes (the engine does on tmpfs), the
    /// copier hashes what each piece reads back as right after its write:
    /// for a whole file, a sparse one and a chunk with an unaligned end,
    /// that is the hash of the target's bytes of the copied segments; not
    /// asked, it leaves the read-back to the engine.
    #[test]
    fn read_back_as_it_goes_hashes_the_target() {
        let t = tmp();
        let data: Vec<u8> = (0..1_300_007u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(t.path().join("s"), &data).unwrap();
        sparse_file(
            &t.path().join("h"),
            4 << 20,
            &[(4096, b"x"), (3 << 20, b"tail")],
        );
        for (name, range) in [
            (&b"s"[..], None),
            (&b"h"[..], None),
            (&b"s"[..], Some((1 << 20, 251_431))),
        ] {
            for read_back in [true, false] {
                let d = Dir::open_root(t.path()).unwrap();
                let src = d.open_read(name).unwrap();
                let _ = std::fs::remove_file(t.path().join("t"));
                let dst = d.create_excl(b"t").unwrap();
                let entry = entry_of(&d, name);
                let range = range.unwrap_or((0, entry.size));
                let mut job = job_of(&src, &dst, &entry, range, &OPTS, true);
                job.read_back = read_back;
                let got = run(&job);
                let segs = &got.segments[..];
                let target = psync_core::copy::kit::hash_segments(&dst, segs).unwrap();
                assert_eq!(got.hash, Some(target));
                if !read_back || got.strategy != Strategy::ReadWrite {
                    assert_eq!(got.read_back, None, "{:?}", got.strategy);
                    continue;
                }
                assert_eq!(got.read_back, Some(target));
            }
        }
    }

    /// Chunks (not whole files) go direct where the file system allows:
    /// the chunk with the file's unaligned end arrives too, the hash covers
    /// exactly the data, and direct mode is off again afterwards (the
    /// engine reads the part back through the same description).
    #[test]
    fn chunks_are_written_direct_with_an_unaligned_end() {
        let t = tmp();
        let size = (3u64 << 20) + 777;
        let data: Vec<u8> = (0..size).map(|i| (i * 13 % 241) as u8).collect();
        std::fs::write(t.path().join("s"), &data).unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        let src = d.open_read(b"s").unwrap();
        let dst = d.create_excl(b"t").unwrap();
        dst.set_len(size).unwrap();
        if direct::align(&dst).is_none() {
            eprintln!(
                "skipping: the file system of target/unit-tmp reports no direct-I/O alignment"
            );
            return;
        }
        let entry = entry_of(&d, b"s");
        for (offset, len) in [(2u64 << 20, size - (2 << 20)), (0, 2 << 20)] {
            let job = job_of(&src, &dst, &entry, (offset, len), &OPTS, true);
            let got = run(&job);
            assert_eq!(got.strategy, Strategy::Direct);
            assert_eq!(got.bytes, len);
            let want = psync_core::copy::kit::hash_segments(&src, &[(offset, len)]);
            assert_eq!(got.hash, Some(want.unwrap()));
            let flags = rustix::fs::fcntl_getfl(&dst).unwrap();
            assert!(
                !flags.contains(rustix::fs::OFlags::DIRECT),
                "direct mode left on"
            );
        }
        assert_eq!(std::fs::read(t.path().join("t")).unwrap(), data);
        // A chunk boundary inside a page: buffered (another thread writes
        // the rest of that page).
        let job = job_of(&src, &dst, &entry, (1_000_000, 1_000_000), &OPTS, false);
        let got = run(&job);
        assert_eq!(
            got.strategy,
            Strategy::ReadWrite,
            "unaligned chunk: buffered"
        );
        assert_eq!(std::fs::read(t.path().join("t")).unwrap(), data);
        let mut off = *OPTS;
        off.direct_io = false;
        let job = job_of(&src, &dst, &entry, (0, 1 << 20), &off, false);
        let got = run(&job);
        assert_eq!(
            got.strategy,
            Strategy::ReadWrite,
            "--no-direct-io: buffered"
        );
    }
}
