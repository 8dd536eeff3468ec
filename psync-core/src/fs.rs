//! Directory handles and the fd-relative primitives every file system
//! operation goes through.
//!
//! psync runs as root on shared file systems where a user may swap a
//! directory for a symlink mid-run. So nothing below the roots is ever
//! resolved by an absolute path: directories are opened beneath a root fd
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (or, on kernels
//! without it, component by component with `O_NOFOLLOW`), and every
//! operation on an entry is `*at(dirfd, name)` without following the last
//! component.

use crate::entry::{Entry, Name, RelPath};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// An open directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Whether new files made here get no inode flags and no project id
    /// from it (`fsattr`): asked once per open directory, by the first
    /// copy into it.
    plain: std::sync::OnceLock<bool>,
    /// Whether its file system keeps file data only in memory
    /// ([`Dir::in_memory`]): asked once per open directory.
    memory: std::sync::OnceLock<bool>,
    /// Whether only its owner, this process's user, may enter it
    /// ([`Dir::private`]): asked once per open directory.
    private: std::sync::OnceLock<bool>,
}

/// Set once `openat2` has answered ENOSYS, so we stop trying it.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Set once `statx` has answered ENOSYS: listings use `fstatat` from then on.
static NO_STATX: AtomicBool = AtomicBool::new(false);

/// What [`Dir::lstat_entry`] read: `statx`, or `fstatat` where there is none.
enum EntryStat {
    Statx(rustix::fs::Statx),
    Stat(rustix::fs::Stat),
}

impl EntryStat {
    fn into_entry(self, name: Name) -> Entry {
        match self {
            EntryStat::Statx(st) => Entry::from_statx(name, &st),
            EntryStat::Stat(st) => Entry::from_stat(name, &st),
        }
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// The longest piece of a relative path [`Dir::open_beneath`] gives one
/// `openat2`: a quarter of PATH_MAX, so that a piece is always well within
/// what the kernel takes (4,095 bytes) and at least four components of
/// the longest name (255 bytes) fit in one. Nearly every path fits in
/// one piece; a deeper one costs one more open per kilobyte.
const PIECE: usize = 1024;

/// `rel` cut at slashes into pieces of at most `max` bytes, each of whole
/// components, without the slashes between them. A component longer than
/// `max` is a piece of its own (longer than NAME_MAX, the kernel refuses
/// it). A leading slash stays on the first piece, so that an absolute
/// path is refused (`RESOLVE_BENEATH`) as it would be whole.
fn pieces(rel: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = rel;
    let mut first = true;
    std::iter::from_fn(move || {
        if !first {
            while let [b'/', tail @ ..] = rest {
                rest = tail;
            }
        }
        first = false;
        if rest.is_empty() {
            return None;
        }
        let cut = if rest.len() <= max {
            rest.len()
        } else {
            match rest[..=max].iter().rposition(|&b| b == b'/') {
                Some(i) if i > 0 => i,
                // One component longer than `max`.
                _ => rest[1..]
                    .iter()
                    .position(|&b| b == b'/')
                    .map_or(rest.len(), |i| i + 1),
            }
        };
        let (mut piece, tail) = rest.split_at(cut);
        rest = tail;
        while let [head @ .., b'/'] = piece
            && !head.is_empty()
        {
            piece = head;
        }
        Some(piece)
    })
}

impl Dir {
    fn of(fd: OwnedFd) -> Dir {
        Dir {
            fd,
            plain: std::sync::OnceLock::new(),
            memory: std::sync::OnceLock::new(),
            private: std::sync::OnceLock::new(),
        }
    }

    /// True when new files made in this directory get no inode flag psync
    /// syncs and project id 0 from it: it has none of the flags new
    /// files inherit (sync, noatime, nodump) and does not pass on a
    /// project id (`fsattr`). Read once per open directory; false when
    /// unknown.
    pub(crate) fn passes_on_nothing(&self) -> bool {
        *self.plain.get_or_init(|| {
            use crate::fsattr::{NOATIME, NODUMP, PROJINHERIT, SYNC};
            crate::fsattr::get(crate::xattr::Node::Fd(self.fd.as_fd())).is_ok_and(|a| {
                a.is_none_or(|a| {
                    a.xflags() & (SYNC | NOATIME | NODUMP) == 0
                        && (a.xflags() & PROJINHERIT == 0 || a.projid() == 0)
                })
            })
        })
    }
    /// True when this directory's file system keeps file data only in
    /// memory (tmpfs, ramfs): its page cache is its storage, so there is
    /// nothing to write back before a read-back, and no cached copy of a
    /// file to drop. One `fstatfs` per open directory; false when unknown.
    pub(crate) fn in_memory(&self) -> bool {
        use crate::probe::magic::{RAMFS, TMPFS};
        *self
            .memory
            .get_or_init(|| self.fs_magic().is_ok_and(|m| m == TMPFS || m == RAMFS))
    }

    /// True when this directory is mode `0700` and owned by the process's
    /// effective user: no one else (root aside) can enter it. One `fstat`
    /// per open directory; false when unknown.
    pub(crate) fn private(&self) -> bool {
        *self.private.get_or_init(|| {
            self.fstat().is_ok_and(|st| {
                st.st_mode & 0o7777 == 0o700 && st.st_uid == rustix::process::geteuid().as_raw()
            })
        })
    }

    /// Opens a run's root by its path. The root itself may be a symlink to a
    /// directory (as with rsync's `SRC/`); nothing below it may.
    ///
    /// # Errors
    /// When the path cannot be opened as a directory.
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty())?;
        Ok(Dir::of(fd))
    }

    /// Opens a target root by its path, first adding the owner permissions
    /// `add` (e.g. `0o700`) when it lacks some of them and the process owns
    /// it: a non-root user's root of mode 0300 or 0000 cannot be opened for
    /// reading otherwise, and rsync as that user opens it up the same way
    /// (its final mode comes from the source at its finish). Returns the
    /// directory and its status *before* any change, so the caller knows
    /// which mode to restore. With `add == 0`, as [`Dir::open_root`].
    ///
    /// The root is pinned with an `O_PATH` fd (which needs no permission on
    /// it), changed through that fd and reopened as `.` beneath it, so the
    /// directory opened is the one changed even if its path is swapped.
    ///
    /// # Errors
    /// When the path cannot be opened as a directory or its mode changed.
    pub(crate) fn open_root_adding(path: &Path, add: u32) -> io::Result<(Dir, rustix::fs::Stat)> {
        let pin_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let pinned = rustix::fs::open(path, pin_flags, Mode::empty())?;
        let st = rustix::fs::fstat(&pinned)?;
        let mine = st.st_uid == rustix::process::geteuid().as_raw();
        if add == 0 || !mine || st.st_mode & add == add {
            return Ok((Dir::open_root(path)?, st));
        }
        chmod_fd_path(pinned.as_fd(), st.st_mode | add)?;
        let fd = rustix::fs::openat(&pinned, ".", DIR_FLAGS, Mode::empty())?;
        Ok((Dir::of(fd), st))
    }

    /// Opens the directory at `rel` beneath this one, refusing symlinks in
    /// any component and any escape from this directory, at any depth.
    ///
    /// The kernel takes at most PATH_MAX (4,096 bytes with the NUL) of
    /// path in one call, and a tree may nest deeper than that (rsync fails
    /// there with "File name too long"). So a long `rel` is opened in
    /// pieces of whole components (see `pieces`), each with
    /// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` beneath the
    /// directory the piece before it opened: every component is still
    /// resolved beneath this directory and never through a symlink (a
    /// `..` may not even climb out of its piece's directory; psync's
    /// paths have none), and at most two directories are open at a time,
    /// whatever the depth. Without `openat2`,
    /// component by component with `O_NOFOLLOW`, which has no length
    /// limit either.
    ///
    /// # Errors
    /// When a component is missing, not a directory, or a symlink (ELOOP/ENOTDIR).
    pub fn open_beneath(&self, rel: &RelPath) -> io::Result<Dir> {
        if rel.is_root() {
            return self.try_clone();
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match self.open_pieces(rel.as_bytes()) {
                Ok(d) => return Ok(d),
                Err(rustix::io::Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                // EAGAIN: a concurrent rename elsewhere on the fs; the walk below copes.
                Err(rustix::io::Errno::AGAIN) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.open_components(rel)
    }

    /// Opens `rel` piece by piece with `openat2`, each piece beneath the
    /// directory the previous one opened.
    fn open_pieces(&self, rel: &[u8]) -> rustix::io::Result<Dir> {
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let mut cur: Option<Dir> = None;
        for piece in pieces(rel, PIECE) {
            let at = cur.as_ref().map_or(self.fd.as_fd(), |d| d.fd.as_fd());
            let fd = rustix::fs::openat2(at, piece, DIR_FLAGS, Mode::empty(), how)?;
            cur = Some(Dir::of(fd));
        }
        // `rel` is not the root: there was at least one piece.
        cur.ok_or(rustix::io::Errno::INVAL)
    }

    /// Opens `rel` one component at a time with `O_NOFOLLOW` (kernels
    /// without `openat2`), refusing `..`.
    fn open_components(&self, rel: &RelPath) -> io::Result<Dir> {
        let mut cur = self.open_dir(b".")?;
        for comp in rel.components() {
            if comp == b".." {
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            }
            cur = cur.open_dir(comp)?;
        }
        Ok(cur)
    }

    /// Opens the subdirectory `name` without following a symlink.
    ///
    /// # Errors
    /// ENOTDIR/ELOOP when `name` is not a directory.
    pub fn open_dir(&self, name: &[u8]) -> io::Result<Dir> {
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
        Ok(Dir::of(fd))
    }

    /// A second handle on the same directory.
    ///
    /// # Errors
    /// When the process is out of file descriptors.
    pub(crate) fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir::of(self.fd.try_clone()?))
    }

    /// `lstat` of an entry.
    ///
    /// # Errors
    /// As `fstatat`.
    pub fn stat(&self, name: &[u8]) -> io::Result<rustix::fs::Stat> {
        Ok(rustix::fs::statat(
            &self.fd,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// `fstat` of the directory itself.
    ///
    /// # Errors
    /// As `fstat`.
    pub fn fstat(&self) -> io::Result<rustix::fs::Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// The `f_type` magic of the file system holding this directory.
    ///
    /// # Errors
    /// As `fstatfs`.
    pub fn fs_magic(&self) -> io::Result<u64> {
        fs_magic(&self.fd)
    }

    /// The names in this directory, without `.` and `..`, in directory order.
    ///
    /// # Errors
    /// As `getdents64`.
    pub(crate) fn names(&self) -> io::Result<Vec<Name>> {
        let mut out = Vec::new();
        self.each_name(|name, _| {
            out.push(Name(name.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with each name in this directory (without `.` and `..`)
    /// and its directory-entry type, in directory order. `f` may remove
    /// the name it is given (the others are still listed once each).
    pub(crate) fn each_name(
        &self,
        mut f: impl FnMut(&[u8], rustix::fs::FileType) -> io::Result<()>,
    ) -> io::Result<()> {
        // Read with a private fd: getdents moves the file offset, and this
        // handle may be shared.
        let fd = rustix::fs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())?;
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 * 1024];
        let mut iter = rustix::fs::RawDir::new(&fd, &mut buf);
        while let Some(ent) = iter.next() {
            let ent = ent?;
            let name = ent.file_name().to_bytes();
            if name != b"." && name != b".." {
                f(name, ent.file_type())?;
            }
        }
        Ok(())
    }

    /// Lists this directory with `lstat` metadata (and whether each entry
    /// is a mount root) and symlink targets, sorted by name. Entries that vanish between `getdents` and `lstat`
    /// are left out; other per-entry failures are returned beside the list.
    ///
    /// # Errors
    /// When the directory itself cannot be read.
    pub fn list(&self) -> io::Result<crate::walk::Listing> {
        let names = self.names()?;
        let mut entries = Vec::with_capacity(names.len());
        let mut failed = Vec::new();
        for name in names {
            match self.entry(name) {
                Ok(Some(e)) => entries.push(e),
                Ok(None) => {}
                Err((name, e)) => failed.push((name, e)),
            }
        }
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(crate::walk::Listing { entries, failed })
    }

    /// [`Dir::list`], unless the directory holds more than `most` names:
    /// then its names, read once either way.
    ///
    /// # Errors
    /// When the directory itself cannot be read.
    pub fn list_or_names(&self, most: usize) -> io::Result<crate::walk::Listed> {
        let mut names = crate::walk::Names::default();
        self.each_name(|name, _| {
            names.push(name);
            Ok(())
        })?;
        if names.len() > most {
            return Ok(crate::walk::Listed::Names(names));
        }
        Ok(crate::walk::Listed::Entries(self.list_some(names.iter())))
    }

    /// The entries of the given names, sorted (as [`Dir::list`] lists
    /// each name).
    pub fn list_some<'a>(&self, names: impl Iterator<Item = &'a [u8]>) -> crate::walk::Listing {
        let mut entries = Vec::with_capacity(names.size_hint().0);
        let mut failed = Vec::new();
        for name in names {
            match self.entry(Name(name.to_vec())) {
                Ok(Some(e)) => entries.push(e),
                Ok(None) => {}
                Err((name, e)) => failed.push((name, e)),
            }
        }
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        crate::walk::Listing { entries, failed }
    }

    /// One entry by name; `Ok(None)` when it does not exist.
    #[allow(clippy::result_large_err)]
    fn entry(&self, name: Name) -> Result<Option<Entry>, (Name, io::Error)> {
        let mut e = match self.lstat_entry(&name.0) {
            Ok(st) => st.into_entry(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err((name, e)),
        };
        if e.kind == crate::entry::Kind::Symlink {
            match self.read_link(&e.name.0) {
                Ok(t) => e.link = Some(Name(t)),
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err((e.name, err)),
            }
        }
        Ok(Some(e))
    }

    /// The status of an entry, without following a symlink, with whether
    /// it is a mount root, in one call: `statx(AT_SYMLINK_NOFOLLOW,
    /// STATX_BASIC_STATS)`, which fills the same fields from the same
    /// `getattr` as `fstatat` and costs the same. The default
    /// `AT_STATX_SYNC_AS_STAT`, not `AT_STATX_DONT_SYNC`: on NFS and Lustre
    /// the latter may answer from a stale attribute cache, and a stale
    /// size or mtime would make a changed file look synced. Falls back to
    /// `fstatat` (mount roots unknown) where `statx` is missing (Linux
    /// before 4.11, or a seccomp filter that refuses it).
    fn lstat_entry(&self, name: &[u8]) -> io::Result<EntryStat> {
        use rustix::fs::StatxFlags;
        if !NO_STATX.load(Ordering::Relaxed) {
            let flags = AtFlags::SYMLINK_NOFOLLOW;
            match rustix::fs::statx(&self.fd, name, flags, StatxFlags::BASIC_STATS) {
                Ok(st) => return Ok(EntryStat::Statx(st)),
                Err(rustix::io::Errno::NOSYS) => NO_STATX.store(true, Ordering::Relaxed),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(EntryStat::Stat(self.stat(name)?))
    }

    /// True when the entry `name` is the root of a mount (a file or
    /// directory bind-mounted there included), as `statx` reports it;
    /// false where it cannot tell. One syscall: for error paths (an EBUSY
    /// unlink), where listings already carry [`Entry::mount_root`].
    pub(crate) fn is_mount_root_at(&self, name: &[u8]) -> bool {
        matches!(self.lstat_entry(name), Ok(EntryStat::Statx(st))
            if Entry::from_statx(Name::default(), &st).mount_root)
    }

    /// The target of the symlink `name`.
    ///
    /// # Errors
    /// As `readlinkat`.
    pub(crate) fn read_link(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(&self.fd, name, Vec::new())?.into_bytes())
    }

    /// Opens the regular file `name` for reading, without following a
    /// symlink and (where allowed) without updating its atime.
    ///
    /// # Errors
    /// As `openat`; ELOOP when `name` is a symlink.
    pub fn open_read(&self, name: &[u8]) -> io::Result<File> {
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(&self.fd, name, flags | OFlags::NOATIME, Mode::empty()) {
            // O_NOATIME needs ownership or CAP_FOWNER.
            Err(rustix::io::Errno::PERM) => {
                rustix::fs::openat(&self.fd, name, flags, Mode::empty())?
            }
            r => r?,
        };
        Ok(File::from(fd))
    }

    /// Opens the existing regular file `name` for writing, without
    /// following a symlink.
    ///
    /// # Errors
    /// As `openat`; ELOOP when `name` is a symlink.
    pub(crate) fn open_write(&self, name: &[u8]) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        Ok(File::from(rustix::fs::openat(
            &self.fd,
            name,
            flags,
            Mode::empty(),
        )?))
    }

    /// Creates a new file `name` for writing (`O_EXCL`, never following or
    /// reusing an existing entry) with mode 0600 until its attributes are set.
    ///
    /// # Errors
    /// EEXIST when the name is taken; as `openat` otherwise.
    pub fn create_excl(&self, name: &[u8]) -> io::Result<File> {
        // Read-write: verification reads the written data back.
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(
            &self.fd,
            name,
            flags,
            Mode::from_raw_mode(0o600),
        )?))
    }

    /// Creates the new regular file `name` for reading and writing with the
    /// permission bits of `mode` (less the umask): `O_EXCL`, never following
    /// or reusing an existing entry. `Ok(None)` when the name is taken.
    ///
    /// # Errors
    /// As `openat` for other failures.
    pub fn create_new(&self, name: &[u8], mode: u32) -> io::Result<Option<File>> {
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode & 0o777)) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(rustix::io::Errno::EXIST) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates an unnamed regular file in this directory (`O_TMPFILE`) with
    /// the permission bits of `mode` (less the umask); `Ok(None)` where the
    /// file system does not support it.
    ///
    /// # Errors
    /// As `openat(O_TMPFILE)` for other failures.
    pub fn create_unnamed(&self, mode: u32) -> io::Result<Option<File>> {
        let flags = OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.fd, ".", flags, Mode::from_raw_mode(mode & 0o777)) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the open (unnamed) file `file` the name `name` here; EEXIST
    /// when the name is taken. Uses `AT_EMPTY_PATH` (needs
    /// CAP_DAC_READ_SEARCH) or, without it, the `/proc/self/fd` link.
    ///
    /// # Errors
    /// As `linkat`.
    pub(crate) fn link_fd(&self, file: &File, name: &[u8]) -> io::Result<()> {
        match rustix::fs::linkat(file, "", &self.fd, name, AtFlags::EMPTY_PATH) {
            Err(rustix::io::Errno::PERM | rustix::io::Errno::NOENT) => {
                let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
                Ok(rustix::fs::linkat(
                    rustix::fs::CWD,
                    proc.as_str(),
                    &self.fd,
                    name,
                    AtFlags::SYMLINK_FOLLOW,
                )?)
            }
            r => Ok(r?),
        }
    }

    /// Opens the existing file `name` for reading and writing only when it
    /// is private to this process: a regular file owned by its effective
    /// uid, of mode 0600, with one link, as [`Dir::create_excl`] makes
    /// them. For names another user can plant in a shared directory
    /// (part files and journals): a file someone else made may be held
    /// open by them, and whatever psync wrote into it would be theirs to
    /// read. `Ok(Err(found))` says what stands there instead.
    ///
    /// The entry is pinned first with an `O_PATH | O_NOFOLLOW` fd, which
    /// opens neither a symlink's target nor a device or fifo for I/O (no
    /// driver's open, no blocking), and checked with `fstat`; only a file
    /// that passes is reopened for I/O, through `/proc/self/fd` (the same
    /// inode, whatever the name points at by then).
    ///
    /// # Errors
    /// As `openat` (ENOENT when there is no such entry); a `/proc` that is
    /// not mounted.
    pub(crate) fn open_private(&self, name: &[u8]) -> io::Result<Result<File, Untrusted>> {
        let pin_flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let pinned = rustix::fs::openat(&self.fd, name, pin_flags, Mode::empty())?;
        if let Some(found) = Untrusted::of(&rustix::fs::fstat(&pinned)?) {
            return Ok(Err(found));
        }
        let path = format!("/proc/self/fd/{}", pinned.as_raw_fd());
        let flags = OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY;
        match rustix::fs::open(path.as_str(), flags, Mode::empty()) {
            Ok(fd) => Ok(Ok(File::from(fd))),
            Err(rustix::io::Errno::NOENT) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("reopen through {path}: no such file (is /proc mounted?)"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames `from` to `to` inside this directory, replacing a non-directory `to`.
    ///
    /// # Errors
    /// As `renameat`.
    pub(crate) fn rename(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Renames `from` to `to` inside this directory, failing with EEXIST
    /// when `to` exists (`renameat2(RENAME_NOREPLACE)`, or link + unlink on
    /// file systems without it).
    ///
    /// # Errors
    /// EEXIST when `to` is taken; as `renameat2`/`linkat` otherwise.
    pub(crate) fn rename_noreplace(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        match rustix::fs::renameat_with(
            &self.fd,
            from,
            &self.fd,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                rustix::fs::linkat(&self.fd, from, &self.fd, to, AtFlags::empty())?;
                self.unlink(from)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates directory `name` with `mode`.
    ///
    /// # Errors
    /// As `mkdirat`.
    pub fn mkdir(&self, name: &[u8], mode: u32) -> io::Result<()> {
        Ok(rustix::fs::mkdirat(
            &self.fd,
            name,
            Mode::from_raw_mode(mode),
        )?)
    }

    /// Creates symlink `name` pointing at `target`.
    ///
    /// # Errors
    /// As `symlinkat`.
    pub fn symlink(&self, target: &[u8], name: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::symlinkat(target, &self.fd, name)?)
    }

    /// Removes the non-directory `name`.
    ///
    /// # Errors
    /// As `unlinkat`.
    pub(crate) fn unlink(&self, name: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    /// Removes the empty directory `name`.
    ///
    /// # Errors
    /// As `unlinkat(AT_REMOVEDIR)`.
    pub(crate) fn rmdir(&self, name: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)?)
    }

    /// Removes `name` and, for a directory, everything inside it, never
    /// following a symlink, at any depth without recursion, and never
    /// inside another file system mounted below (see [`crate::subtree`]);
    /// a mount root met (a bind-mounted file included) is an error naming
    /// it. Returns the number of entries removed.
    ///
    /// # Errors
    /// The first failure; what could be removed before it is gone.
    pub(crate) fn remove_all(&self, name: &[u8]) -> io::Result<u64> {
        match self.unlink(name) {
            Ok(()) => Ok(1),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            // EISDIR from unlink of a directory on Linux; EPERM on some fs.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM)) => {
                match crate::subtree::remove_dir_all(self, &Name(name.to_vec())) {
                    // EPERM for a non-directory: the unlink's own error.
                    Err(d) if d.raw_os_error() == Some(libc::ENOTDIR) => Err(e),
                    r => r,
                }
            }
            Err(e) => {
                let path = RelPath::from_bytes(name);
                Err(crate::subtree::busy_mount(self, name, &path, e))
            }
        }
    }

    /// Removes the non-directory `name`, never a directory: one found at
    /// that name (a user swapped it in) is an error and stays.
    ///
    /// # Errors
    /// As `unlinkat`; a directory at the name is `EISDIR`, with a message.
    pub(crate) fn unlink_file(&self, name: &[u8]) -> io::Result<()> {
        match self.unlink(name) {
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM))
                    && self
                        .stat(name)
                        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR) =>
            {
                Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "a directory stands at this name now (it was not one when listed): left alone",
                ))
            }
            r => r,
        }
    }

    /// Removes the entry `listed` as it was listed: a non-directory by
    /// `unlinkat`, never a directory (one found at its name, swapped in by
    /// a user, is an `EISDIR` error and stays); a directory with
    /// everything in it, only if the directory at its name is still the
    /// one listed (same device and inode: a user who renamed another
    /// directory there gets it kept).
    ///
    /// # Errors
    /// As `unlinkat` and `rmdir`; a directory that is not the one listed
    /// is an error and stays.
    pub fn remove_listed(&self, listed: &Entry) -> io::Result<u64> {
        self.remove_listed_each(listed, &mut |_, _| {})
    }

    /// [`Dir::remove_listed`], calling `removed` with the path (below this
    /// directory: `listed`'s name first) and the type of each entry this
    /// call removed, children before their directory.
    /// What another remover took first (a second delivery of the same
    /// work) is not reported.
    ///
    /// # Errors
    /// As [`Dir::remove_listed`]; what was reported before the failure is
    /// gone.
    pub fn remove_listed_each(
        &self,
        listed: &Entry,
        removed: &mut dyn FnMut(&RelPath, crate::entry::Kind),
    ) -> io::Result<u64> {
        if listed.kind != crate::entry::Kind::Dir {
            return match self.unlink_file(listed.name.as_bytes()) {
                Ok(()) => {
                    removed(&RelPath::from_bytes(listed.name.as_bytes()), listed.kind);
                    Ok(1)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
                Err(e) => Err(e),
            };
        }
        let mut n = 0;
        let mut count = |p: &RelPath, k: crate::entry::Kind| {
            n += 1;
            removed(p, k);
        };
        // Another remover of the same tree (a second delivery of the same
        // batch) may take a directory this walk has opened but not listed
        // yet (listing a removed directory is ENOENT): the walk starts
        // again from the top, which is checked again (a few times: each
        // start finds less to remove).
        let mut starts = 0;
        loop {
            starts += 1;
            match crate::subtree::remove_dir_all_of(self, listed, &mut count) {
                Ok(_) => return Ok(n),
                // Gone since its listing (another delivery of the same
                // batch, or anyone else), as a file's removal takes it.
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.is_gone(&listed.name) => {
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && starts < 8 => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// True when nothing stands at `name` any more.
    pub(crate) fn is_gone(&self, name: &Name) -> bool {
        self.stat(name.as_bytes())
            .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
    }

    /// The names in this directory with the type of each (from the
    /// directory entry's type; an `lstat` where the file system does not
    /// say). Entries that vanish are left out.
    ///
    /// # Errors
    /// As `getdents64` and `fstatat`.
    pub(crate) fn typed_names(&self) -> io::Result<Vec<crate::subtree::Child>> {
        use crate::entry::Kind;
        let mut out = Vec::new();
        self.each_name(|name, file_type| {
            let mode = match file_type {
                rustix::fs::FileType::Unknown => match self.stat(name) {
                    Ok(st) => st.st_mode,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                },
                known => known.as_raw_mode(),
            };
            let kind = Kind::from_mode(mode);
            out.push(crate::subtree::Child {
                name: Name(name.to_vec()),
                dir: kind == Kind::Dir,
                kind,
                entry: None,
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// True when this directory is the root of a mount (bind mounts
    /// included), as `statx` reports it; false where it cannot tell.
    pub(crate) fn is_mount_root(&self) -> bool {
        use rustix::fs::{StatxAttributes, StatxFlags};
        match rustix::fs::statx(&self.fd, c"", AtFlags::EMPTY_PATH, StatxFlags::empty()) {
            Ok(st) => {
                let bit = StatxAttributes::MOUNT_ROOT;
                st.stx_attributes_mask.contains(bit) && st.stx_attributes.contains(bit)
            }
            Err(_) => false,
        }
    }

    /// Changes owner/group of `name` without following a symlink.
    ///
    /// # Errors
    /// As `fchownat(AT_SYMLINK_NOFOLLOW)`.
    pub fn chown(&self, name: &[u8], uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        let uid = uid.map(rustix::fs::Uid::from_raw);
        let gid = gid.map(rustix::fs::Gid::from_raw);
        Ok(rustix::fs::chownat(
            &self.fd,
            name,
            uid,
            gid,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Changes the mode of the non-symlink `name` without following a
    /// symlink that may have been swapped in.
    ///
    /// # Errors
    /// As `fchmodat`; ELOOP/EOPNOTSUPP if `name` is now a symlink.
    pub fn chmod(&self, name: &[u8], mode: u32) -> io::Result<()> {
        // fchmodat(2) ignores AT_SYMLINK_NOFOLLOW; pin the inode with an
        // O_PATH fd that cannot be a symlink (O_NOFOLLOW fails with ELOOP
        // on one... except with O_PATH, where it opens the link itself, so
        // check the type), then chmod it through /proc/self/fd.
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if (st.st_mode & libc::S_IFMT) == libc::S_IFLNK {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        chmod_fd_path(fd.as_fd(), mode)
    }

    /// Sets atime and mtime of `name` (nanoseconds) without following a symlink.
    ///
    /// # Errors
    /// As `utimensat(AT_SYMLINK_NOFOLLOW)`.
    pub fn set_times(&self, name: &[u8], atime: crate::Time, mtime: crate::Time) -> io::Result<()> {
        let ts = timestamps(atime, mtime);
        Ok(rustix::fs::utimensat(
            &self.fd,
            name,
            &ts,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Creates a fifo, device or socket node.
    ///
    /// # Errors
    /// As `mknodat`.
    pub fn mknod(&self, name: &[u8], kind: crate::Kind, mode: u32, rdev: u64) -> io::Result<()> {
        use rustix::fs::FileType;
        let ft = match kind {
            crate::Kind::Fifo => FileType::Fifo,
            crate::Kind::CharDev => FileType::CharacterDevice,
            crate::Kind::BlockDev => FileType::BlockDevice,
            crate::Kind::Socket => FileType::Socket,
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        Ok(rustix::fs::mknodat(
            &self.fd,
            name,
            ft,
            Mode::from_raw_mode(mode & 0o7777),
            rdev as rustix::fs::Dev,
        )?)
    }

    /// Hard-links `from` in `from_dir` as `name` here.
    ///
    /// # Errors
    /// As `linkat` (without following symlinks).
    pub(crate) fn link_from(&self, from_dir: &Dir, from: &[u8], name: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::linkat(
            &from_dir.fd,
            from,
            &self.fd,
            name,
            AtFlags::empty(),
        )?)
    }

    /// The directory's fd, for calls on the directory itself.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One entry of a directory pinned by an `O_PATH` handle (any type,
/// symlinks included; nothing is opened for I/O, so a planted device or
/// fifo has no say), with its status as the handle sees it. A change made
/// through [`Handle::node`] reaches exactly the inode whose status was
/// checked, even if the name is swapped meanwhile.
#[derive(Debug)]
pub(crate) struct Handle {
    fd: OwnedFd,
    /// `fstat` of the entry, taken through the handle.
    pub(crate) stat: rustix::fs::Stat,
}

impl Handle {
    /// Where the entry's attributes are read and written.
    pub(crate) fn node(&self) -> crate::xattr::Node<'_> {
        crate::xattr::Node::Path(self.fd.as_fd())
    }
}

/// The handle's fd: for `fstat` and `fstatfs` of the entry.
impl AsFd for Handle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Pins the entry `name` (never following it) with an `O_PATH` handle.
    ///
    /// # Errors
    /// As `openat` / `fstat`.
    pub(crate) fn handle(&self, name: &[u8]) -> io::Result<Handle> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let stat = rustix::fs::fstat(&fd)?;
        Ok(Handle { fd, stat })
    }
}

/// chmod through `/proc/self/fd/N` of an `O_PATH` fd (or of any fd): the
/// magic link leads to the inode itself, never further.
///
/// # Errors
/// As `chmod`.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    if !NO_EMPTY_PATH_CHMOD.load(Ordering::Relaxed) {
        // fchmodat2(fd, "", mode, AT_EMPTY_PATH): Linux 6.6.
        // SAFETY: the path is a NUL-terminated empty string.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fchmodat2,
                fd.as_raw_fd(),
                c"".as_ptr(),
                mode & 0o7777,
                libc::AT_EMPTY_PATH,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOSYS | libc::EINVAL) => NO_EMPTY_PATH_CHMOD.store(true, Ordering::Relaxed),
            _ => return Err(e),
        }
    }
    chmod_fd_path(fd, mode)
}

/// Set once `fchmodat2(AT_EMPTY_PATH)` was refused: `/proc` from then on.
static NO_EMPTY_PATH_CHMOD: AtomicBool = AtomicBool::new(false);

/// Set once `utimensat(AT_EMPTY_PATH)` was refused: `/proc` from then on.
static NO_EMPTY_PATH_UTIMES: AtomicBool = AtomicBool::new(false);

/// Sets the times of the inode an `O_PATH` fd (or any fd) holds, through
/// `/proc/self/fd/N` (a symlink's own times for a symlink's handle).
///
/// # Errors
/// As `utimensat`.
pub fn set_times_fd(fd: BorrowedFd<'_>, atime: crate::Time, mtime: crate::Time) -> io::Result<()> {
    if !NO_EMPTY_PATH_UTIMES.load(Ordering::Relaxed) {
        let ts = timestamps(atime, mtime);
        match rustix::fs::utimensat(fd, "", &ts, AtFlags::EMPTY_PATH) {
            Ok(()) => return Ok(()),
            // Kernels before AT_EMPTY_PATH here (EINVAL), or that take
            // the empty name literally (ENOENT).
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {
                NO_EMPTY_PATH_UTIMES.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::utimensat(
        rustix::fs::CWD,
        path.as_str(),
        &timestamps(atime, mtime),
        AtFlags::empty(),
    )?)
}

/// Changes the owner and/or group of the inode an `O_PATH` fd holds
/// (`fchownat(AT_EMPTY_PATH)`; a symlink's own for a symlink's handle).
///
/// # Errors
/// As `fchownat`.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    Ok(rustix::fs::chownat(
        fd,
        "",
        uid.map(rustix::fs::Uid::from_raw),
        gid.map(rustix::fs::Gid::from_raw),
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// What [`Dir::open_private`] found instead of a file private to this
/// process. Displays as "owner uid 1001, mode 0644, 1 link", after the
/// type when it is not a regular file ("a fifo, owner uid ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Untrusted {
    /// The entry's `st_mode`: type and permission bits.
    pub mode: u32,
    /// Its owner.
    pub uid: u32,
    /// Its link count.
    pub nlink: u64,
}

impl Untrusted {
    /// What is wrong with the entry of status `st`; `None` when it is a
    /// regular file of this process's effective uid, of mode exactly 0600,
    /// with one link.
    pub(crate) fn of(st: &rustix::fs::Stat) -> Option<Untrusted> {
        let found = Untrusted {
            mode: st.st_mode,
            uid: st.st_uid,
            #[allow(clippy::useless_conversion)] // u32 on some targets
            nlink: u64::from(st.st_nlink),
        };
        let private = found.mode & libc::S_IFMT == libc::S_IFREG
            && found.mode & 0o7777 == 0o600
            && found.uid == rustix::process::geteuid().as_raw()
            && found.nlink == 1;
        (!private).then_some(found)
    }

    /// The status of the open file `file`, checked as [`Untrusted::of`].
    ///
    /// # Errors
    /// As `fstat`.
    pub(crate) fn of_file(file: &File) -> io::Result<Option<Untrusted>> {
        Ok(Untrusted::of(&rustix::fs::fstat(file)?))
    }
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.mode & libc::S_IFMT {
            libc::S_IFREG => "",
            libc::S_IFDIR => "a directory, ",
            libc::S_IFLNK => "a symlink, ",
            libc::S_IFIFO => "a fifo, ",
            libc::S_IFCHR => "a character device, ",
            libc::S_IFBLK => "a block device, ",
            libc::S_IFSOCK => "a socket, ",
            _ => "of unknown type, ",
        };
        let links = if self.nlink == 1 { "link" } else { "links" };
        write!(
            f,
            "{kind}owner uid {}, mode {:04o}, {} {links}",
            self.uid,
            self.mode & 0o7777,
            self.nlink
        )
    }
}

/// chmod through `/proc/self/fd/N` of an `O_PATH` fd (what glibc's
/// `fchmodat(AT_SYMLINK_NOFOLLOW)` does on kernels without fchmodat2).
fn chmod_fd_path(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::chmod(
        path.as_str(),
        Mode::from_raw_mode(mode & 0o7777),
    )?)
}

/// The rustix timestamps for a pair of times.
pub fn timestamps(atime: crate::Time, mtime: crate::Time) -> rustix::fs::Timestamps {
    let ts = |t: crate::Time| rustix::fs::Timespec {
        tv_sec: t.sec,
        tv_nsec: i64::from(t.nsec) as _,
    };
    rustix::fs::Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    }
}

/// The process umask, read once (`umask(2)` cannot be read without being
/// set, which would race with other threads creating files).
pub fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_string()))
            })
            .and_then(|v| u32::from_str_radix(&v, 8).ok())
            .unwrap_or(0o022)
    })
}

/// The groups the process is in, sorted and without duplicates (the
/// effective gid and the supplementary groups), read once: without root,
/// a target takes its source's group only when the process may give it,
/// as rsync does.
pub fn own_groups() -> &'static [u32] {
    static GROUPS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    GROUPS.get_or_init(|| {
        let mut v = vec![rustix::process::getegid().as_raw()];
        if let Ok(more) = rustix::process::getgroups() {
            v.extend(more.into_iter().map(rustix::process::Gid::as_raw));
        }
        v.sort_unstable();
        v.dedup();
        v
    })
}

/// True when this process runs with an effective uid of 0.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The `f_type` magic of the file system holding the open file `fd`.
///
/// # Errors
/// As `fstatfs`.
pub fn fs_magic(fd: impl std::os::fd::AsFd) -> io::Result<u64> {
    #[allow(clippy::unnecessary_cast)]
    Ok(rustix::fs::fstatfs(fd)?.f_type as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Time;
    use std::os::unix::fs::FileExt;

    #[test]
    fn open_root_adding_opens_up_a_closed_root_of_ours() {
        use std::os::unix::fs::PermissionsExt;
        let t = crate::test_dir();
        let d = t.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f"), b"x").unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o300)).unwrap();
        let (_, st) = Dir::open_root_adding(&d, 0).unwrap();
        assert_eq!(st.st_mode & 0o7777, 0o300, "add 0 changes nothing");
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777,
            0o300
        );
        let (dir, st) = Dir::open_root_adding(&d, 0o700).unwrap();
        assert_eq!(st.st_mode & 0o7777, 0o300, "the status before the change");
        let now = std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
        assert_eq!(now, 0o700);
        assert_eq!(dir.names().unwrap(), vec![Name::from("f")]);
    }

    #[test]
    fn open_beneath_refuses_symlinked_components() {
        let t = crate::test_dir();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink("a", t.path().join("l")).unwrap();
        let root = Dir::open_root(t.path()).unwrap();
        assert!(root.open_beneath(&RelPath::from_bytes("a/b")).is_ok());
        let err = root.open_beneath(&RelPath::from_bytes("l/b")).unwrap_err();
        assert!(
            matches!(
                err.raw_os_error(),
                Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR)
            ),
            "{err}"
        );
        assert!(root.open_beneath(&RelPath::from_bytes("a/../..")).is_err());
    }

    /// A chain of `depth` directories of 16-byte names under `top`,
    /// made with one fd held; returns its path below the root.
    fn deep_chain(root: &Dir, top: &str, depth: usize) -> RelPath {
        root.mkdir(top.as_bytes(), 0o755).unwrap();
        let mut rel = RelPath::from_bytes(top);
        let mut d = root.open_dir(top.as_bytes()).unwrap();
        for i in 0..depth {
            let name = Name(format!("level-{i:04}.deep_").into_bytes());
            d.mkdir(name.as_bytes(), 0o755).unwrap();
            d = d.open_dir(name.as_bytes()).unwrap();
            rel = rel.join(&name);
        }
        d.create_excl(b"bottom").unwrap();
        rel
    }

    /// Deeper than PATH_MAX, both ways of opening (`openat2` in pieces,
    /// and component by component) reach the bottom, and both refuse a
    /// symlink or `..` there, far below the first piece.
    #[test]
    fn open_beneath_reaches_below_path_max_and_refuses_symlinks_there() {
        let t = crate::test_dir();
        let root = Dir::open_root(t.path()).unwrap();
        let rel = deep_chain(&root, "top", 400);
        assert!(rel.as_bytes().len() > 6_000);
        let has_bottom = |d: Dir| d.names().unwrap() == vec![Name::from("bottom")];
        assert!(has_bottom(root.open_beneath(&rel).unwrap()));
        assert!(has_bottom(root.open_components(&rel).unwrap()));
        match root.open_pieces(rel.as_bytes()) {
            Ok(d) => assert!(has_bottom(d)),
            Err(rustix::io::Errno::NOSYS) => eprintln!("no openat2 here: pieces not tried"),
            Err(e) => panic!("open in pieces: {e}"),
        }
        // A symlink near the bottom, and `..` out of the root from level 300.
        let (parent, last) = rel.split_last().unwrap();
        let (above, _) = parent.split_last().unwrap();
        // "top" and 300 levels of "/" and 16 bytes.
        let mid = RelPath::from_bytes(&rel.as_bytes()[..3 + 300 * 17]);
        // Back up past the root from there.
        let up = RelPath::from_bytes([mid.as_bytes(), &b"/..".repeat(302)].concat());
        root.open_beneath(&above)
            .unwrap()
            .symlink(b".", b"link")
            .unwrap();
        let via_link = above.join(&Name(b"link".to_vec()));
        let via_link = via_link.join(&Name(last.to_vec()));
        for bad in [&via_link, &up] {
            for r in [
                root.open_beneath(bad),
                root.open_components(bad),
                root.open_pieces(bad.as_bytes()).map_err(io::Error::from),
            ] {
                let e = r.expect_err(&bad.to_string());
                assert!(
                    matches!(
                        e.raw_os_error(),
                        Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR | libc::ENOSYS)
                    ),
                    "{e}"
                );
            }
        }
        // A missing directory at depth is ENOENT, not "File name too long".
        let missing = mid.join(&Name(b"missing".to_vec()));
        let e = root.open_beneath(&missing).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    /// Pieces are whole components of at most `max` bytes that give the
    /// path back; only a component longer than `max` is longer.
    #[test]
    fn pieces_cut_at_slashes_within_the_limit() {
        let cut = |p: &str, max: usize| -> Vec<String> {
            pieces(p.as_bytes(), max)
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .collect()
        };
        assert_eq!(cut("a", 4), ["a"]);
        assert_eq!(cut("aa/bb/cc", 5), ["aa/bb", "cc"]);
        assert_eq!(cut("aa/bb/cc", 4), ["aa", "bb", "cc"]);
        assert_eq!(cut("aa/bb/cc", 8), ["aa/bb/cc"]);
        assert_eq!(cut("aaaaaa/b/c", 3), ["aaaaaa", "b/c"]);
        assert_eq!(cut("a/bbbbbb/c", 3), ["a", "bbbbbb", "c"]);
        assert_eq!(cut("a//b///c/", 2), ["a", "b", "c"]);
        // An absolute path keeps its slash: openat2 refuses it beneath.
        assert_eq!(cut("/aaaa/b", 3), ["/aaaa", "b"]);
        assert_eq!(cut("/a/b", 8), ["/a/b"]);
        let names: Vec<String> = (0..500)
            .map(|i| format!("n{}", "x".repeat(i % 255)))
            .collect();
        let long = names.join("/");
        let got = cut(&long, PIECE);
        assert!(got.len() > 1);
        assert!(got.iter().all(|p| p.len() <= PIECE && !p.starts_with('/')));
        assert_eq!(got.join("/"), long);
    }

    /// Only a regular file of the process's own, mode 0600, one link, is
    /// opened; anything else is refused without being opened for I/O (a
    /// fifo with no writer would block an open for reading or writing).
    #[test]
    fn open_private_accepts_only_a_private_file_of_our_own() {
        use std::os::unix::fs::PermissionsExt;
        let t = crate::test_dir();
        let p = t.path();
        let root = Dir::open_root(p).unwrap();
        root.create_excl(b"mine")
            .unwrap()
            .write_all_at(b"ours", 0)
            .unwrap();
        root.create_excl(b"linked").unwrap();
        std::fs::hard_link(p.join("linked"), p.join("link2")).unwrap();
        root.create_excl(b"wide").unwrap();
        std::fs::set_permissions(p.join("wide"), std::fs::Permissions::from_mode(0o644)).unwrap();
        root.create_excl(b"setuid").unwrap();
        std::fs::set_permissions(p.join("setuid"), std::fs::Permissions::from_mode(0o4600))
            .unwrap();
        root.mknod(b"fifo", crate::Kind::Fifo, 0o600, 0).unwrap();
        std::os::unix::fs::symlink("mine", p.join("symlink")).unwrap();
        std::fs::create_dir(p.join("dir")).unwrap();
        std::fs::set_permissions(p.join("dir"), std::fs::Permissions::from_mode(0o600)).unwrap();

        let f = root
            .open_private(b"mine")
            .unwrap()
            .expect("a file psync made");
        let mut buf = [0u8; 4];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"ours");
        f.write_all_at(b"OURS", 0).unwrap();
        let uid = rustix::process::geteuid().as_raw();
        let refused = |name: &str, want: &str| {
            let found = root.open_private(name.as_bytes()).unwrap().expect_err(name);
            assert_eq!(found.to_string(), want, "{name}");
        };
        refused("linked", &format!("owner uid {uid}, mode 0600, 2 links"));
        refused("wide", &format!("owner uid {uid}, mode 0644, 1 link"));
        refused("setuid", &format!("owner uid {uid}, mode 4600, 1 link"));
        refused(
            "fifo",
            &format!("a fifo, owner uid {uid}, mode 0600, 1 link"),
        );
        assert!(
            refused_kind(&root, "symlink", libc::S_IFLNK),
            "a symlink is refused, not followed"
        );
        assert!(refused_kind(&root, "dir", libc::S_IFDIR));
        let missing = root.open_private(b"missing").unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        if is_root() {
            std::os::unix::fs::chown(p.join("mine"), Some(1001), None).unwrap();
            refused("mine", "owner uid 1001, mode 0600, 1 link");
            // A device is refused without its driver's open.
            let dev = rustix::fs::makedev(1, 3);
            root.mknod(b"null", crate::Kind::CharDev, 0o600, dev)
                .unwrap();
            assert!(refused_kind(&root, "null", libc::S_IFCHR));
        } else {
            crate::skip("another owner and a device: chown and mknod need root");
        }
    }

    /// True when `open_private` refuses `name` as an entry of type `kind`.
    fn refused_kind(root: &Dir, name: &str, kind: u32) -> bool {
        matches!(root.open_private(name.as_bytes()), Ok(Err(found)) if found.mode & libc::S_IFMT == kind)
    }

    #[test]
    fn rename_noreplace_refuses_to_overwrite() {
        let t = crate::test_dir();
        std::fs::write(t.path().join("a"), b"a").unwrap();
        std::fs::write(t.path().join("b"), b"b").unwrap();
        let root = Dir::open_root(t.path()).unwrap();
        let e = root.rename_noreplace(b"a", b"b").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        root.rename_noreplace(b"a", b"c").unwrap();
        assert_eq!(std::fs::read(t.path().join("c")).unwrap(), b"a");
    }

    #[test]
    fn chmod_refuses_a_symlink() {
        let t = crate::test_dir();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", t.path().join("l")).unwrap();
        let root = Dir::open_root(t.path()).unwrap();
        assert!(root.chmod(b"l", 0o777).is_err());
        root.chmod(b"f", 0o640).unwrap();
        assert_eq!(root.stat(b"f").unwrap().st_mode & 0o777, 0o640);
    }

    #[test]
    fn list_sorts_and_reads_links() {
        let t = crate::test_dir();
        std::fs::write(t.path().join("b"), b"x").unwrap();
        std::os::unix::fs::symlink("target\n", t.path().join("a")).unwrap();
        let root = Dir::open_root(t.path()).unwrap();
        let crate::walk::Listing { entries, failed } = root.list().unwrap();
        assert!(failed.is_empty());
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].link.as_ref().unwrap().as_bytes(), b"target\n");
        assert_eq!(entries[1].size, 1);
    }

    #[test]
    fn remove_all_does_not_follow_links() {
        let t = crate::test_dir();
        std::fs::create_dir_all(t.path().join("keep")).unwrap();
        std::fs::write(t.path().join("keep/x"), b"x").unwrap();
        std::fs::create_dir_all(t.path().join("gone/sub")).unwrap();
        std::os::unix::fs::symlink("../keep", t.path().join("gone/sub/l")).unwrap();
        let root = Dir::open_root(t.path()).unwrap();
        assert_eq!(root.remove_all(b"gone").unwrap(), 3);
        assert!(t.path().join("keep/x").exists());
    }

    /// The listed entry `name` of `root`.
    fn listed(root: &Dir, name: &[u8]) -> Entry {
        let l = root.list().unwrap();
        l.entries
            .into_iter()
            .find(|e| e.name.as_bytes() == name)
            .unwrap()
    }

    /// `remove_listed_each` reports each entry it removed with its type,
    /// children before their directory, as many as it counts.
    #[test]
    fn removal_reports_each_entry_it_removed() {
        use crate::entry::Kind;
        let t = crate::test_dir();
        let p = t.path();
        std::fs::create_dir_all(p.join("gone/sub")).unwrap();
        std::fs::write(p.join("gone/sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", p.join("gone/l")).unwrap();
        std::fs::write(p.join("file"), b"x").unwrap();
        let root = Dir::open_root(p).unwrap();
        Dir::open_root(&p.join("gone/sub"))
            .unwrap()
            .mknod(b"fifo", Kind::Fifo, 0o600, 0)
            .unwrap();
        let mut seen = Vec::new();
        let n = root
            .remove_listed_each(&listed(&root, b"gone"), &mut |q, k| {
                seen.push((q.to_string(), k))
            })
            .unwrap();
        assert_eq!(n as usize, seen.len());
        let at = |name: &str| seen.iter().position(|(q, _)| q == name).unwrap();
        assert!(at("gone/sub/f") < at("gone/sub") && at("gone/sub") < at("gone"));
        assert_eq!(at("gone"), seen.len() - 1);
        assert_eq!(seen[at("gone/l")].1, Kind::Symlink);
        assert_eq!(seen[at("gone/sub")].1, Kind::Dir);
        assert_eq!(seen[at("gone/sub/f")].1, Kind::File);
        assert_eq!(seen[at("gone/sub/fifo")].1, Kind::Fifo);
        assert_eq!(seen.len(), 5);
        let mut one = Vec::new();
        let file = listed(&root, b"file");
        assert_eq!(
            root.remove_listed_each(&file, &mut |q, k| one.push((q.to_string(), k)))
                .unwrap(),
            1
        );
        assert_eq!(one, vec![("file".to_string(), Kind::File)]);
        // Gone already: nothing removed, nothing reported.
        assert_eq!(
            root.remove_listed_each(&file, &mut |_, _| panic!("reported"))
                .unwrap(),
            0
        );
    }

    /// Two removals of one tree at once (two deliveries of the same
    /// deletion) report each entry once between them: what one took, the
    /// other does not report.
    #[test]
    fn overlapping_removals_report_each_entry_once() {
        let t = crate::test_dir();
        let p = t.path();
        for round in 0..20 {
            let top = format!("tree{round}");
            let mut all = std::collections::BTreeSet::new();
            for d in 0..12 {
                let sub = format!("{top}/d{d}");
                std::fs::create_dir_all(p.join(&sub)).unwrap();
                all.insert(sub.clone());
                for f in 0..20 {
                    std::fs::write(p.join(format!("{sub}/f{f}")), b"x").unwrap();
                    all.insert(format!("{sub}/f{f}"));
                }
            }
            all.insert(top.clone());
            let root = Dir::open_root(p).unwrap();
            let entry = listed(&root, top.as_bytes());
            let run = || {
                let dir = Dir::open_root(p).unwrap();
                let mut seen = Vec::new();
                let r = dir.remove_listed_each(&entry, &mut |q, _| seen.push(q.to_string()));
                (r.map_err(|e| e.to_string()), seen)
            };
            let (a, b) = std::thread::scope(|s| {
                let a = s.spawn(run);
                let b = s.spawn(run);
                (a.join().unwrap(), b.join().unwrap())
            });
            let mut union: Vec<String> = a.1.iter().chain(&b.1).cloned().collect();
            union.sort();
            let n = union.len();
            union.dedup();
            assert_eq!(n, union.len(), "round {round}: an entry reported twice");
            assert_eq!(
                union,
                all.iter().cloned().collect::<Vec<_>>(),
                "round {round}"
            );
            assert_eq!(a.0, Ok(a.1.len() as u64), "round {round}");
            assert_eq!(b.0, Ok(b.1.len() as u64), "round {round}");
        }
    }

    /// The `statx`-based listing reads what `lstat` does, field for field
    /// (nanosecond times, `dev` and `rdev` in `st_dev`'s encoding, also for
    /// majors above 255 and minors above 255), for every kind of entry.
    #[test]
    fn listing_fields_match_lstat_for_every_kind() {
        use std::os::unix::fs::MetadataExt;
        let t = crate::test_dir();
        let p = t.path();
        std::fs::write(p.join("file"), b"twelve bytes").unwrap();
        std::fs::hard_link(p.join("file"), p.join("file2")).unwrap();
        std::fs::create_dir(p.join("dir")).unwrap();
        std::os::unix::fs::symlink("file", p.join("link")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(p.join("sock")).unwrap();
        let root = Dir::open_root(p).unwrap();
        root.mknod(b"fifo", crate::Kind::Fifo, 0o640, 0).unwrap();
        let mut expect_kinds = vec!["dir", "fifo", "file", "file2", "link", "sock"];
        if is_root() {
            let chr = rustix::fs::makedev(4000, 0xf_ffff);
            let blk = rustix::fs::makedev(259, 300_000);
            root.mknod(b"chr", crate::Kind::CharDev, 0o600, chr)
                .unwrap();
            root.mknod(b"blk", crate::Kind::BlockDev, 0o600, blk)
                .unwrap();
            expect_kinds.extend(["blk", "chr"]);
        } else {
            crate::skip("device nodes: mknod needs root");
        }
        rustix::fs::utimensat(
            &root.fd,
            "file",
            &timestamps(
                Time::new(1_600_000_000, 123_456_789),
                Time::new(1_700_000_000, 987_654_321),
            ),
            AtFlags::empty(),
        )
        .unwrap();
        let crate::walk::Listing { entries, failed } = root.list().unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        let mut names: Vec<String> = entries.iter().map(|e| e.name.to_string()).collect();
        expect_kinds.sort_unstable();
        names.sort_unstable();
        assert_eq!(names, expect_kinds);
        for e in &entries {
            let m = std::fs::symlink_metadata(p.join(e.name.as_os_str())).unwrap();
            let what = e.name.to_string();
            assert_eq!(e.kind, crate::Kind::from_mode(m.mode()), "{what}");
            assert_eq!(e.mode, m.mode() & 0o7777, "{what}");
            assert_eq!((e.uid, e.gid), (m.uid(), m.gid()), "{what}");
            assert_eq!(e.size, m.size(), "{what}");
            assert_eq!(e.nlink, m.nlink(), "{what}");
            assert_eq!((e.dev, e.ino), (m.dev(), m.ino()), "{what}");
            assert_eq!(e.rdev, m.rdev(), "{what}");
            assert_eq!(e.blocks, m.blocks(), "{what}");
            let t = |s: i64, ns: i64| Time::new(s, u32::try_from(ns).unwrap());
            assert_eq!(e.mtime, t(m.mtime(), m.mtime_nsec()), "{what}");
            // The listing's readlink may update a symlink's atime after
            // the listing read it (relatime): compared for the others.
            if e.kind != crate::Kind::Symlink {
                assert_eq!(e.atime, t(m.atime(), m.atime_nsec()), "{what}");
            }
            assert_eq!(e.ctime, t(m.ctime(), m.ctime_nsec()), "{what}");
            assert!(!e.mount_root, "{what}");
            // And the encoding the rest of the code builds from fstatat.
            let mut plain =
                Entry::from_stat(e.name.clone(), &root.stat(e.name.as_bytes()).unwrap());
            plain.link.clone_from(&e.link);
            plain.atime = e.atime;
            // Flags only `statx` reports (none set here).
            assert!(e.flags.is_none_or(|f| f == 0), "{what}");
            plain.flags = e.flags;
            assert_eq!(*e, plain, "{what}");
        }
        let by = |n: &str| {
            entries
                .iter()
                .find(|e| e.name.as_bytes() == n.as_bytes())
                .unwrap()
        };
        assert_eq!(by("file").mtime, Time::new(1_700_000_000, 987_654_321));
        assert_eq!(by("file").nlink, 2);
        if is_root() {
            assert_eq!(by("chr").rdev, rustix::fs::makedev(4000, 0xf_ffff));
            assert_eq!(by("blk").rdev, rustix::fs::makedev(259, 300_000));
        }
    }

    /// A file bind-mounted over another for the life of the guard.
    struct Bind(std::path::PathBuf);

    impl Bind {
        fn mount(from: &Path, at: &Path) -> Bind {
            let st = std::process::Command::new("mount")
                .arg("--bind")
                .arg(from)
                .arg(at)
                .status()
                .unwrap();
            assert!(st.success(), "mount --bind {}", at.display());
            Bind(at.to_path_buf())
        }
    }

    impl Drop for Bind {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }

    /// A bind-mounted file is listed as a mount root, and removing it (by
    /// name, or inside a subtree) fails with an error that says so and
    /// names it instead of a bare EBUSY; the outside file stays.
    #[test]
    fn a_bind_mounted_file_is_a_mount_root_and_never_removed() {
        if !is_root() {
            crate::skip("mount --bind needs root");
            return;
        }
        let t = crate::test_dir();
        let p = t.path();
        std::fs::write(p.join("outside"), b"theirs").unwrap();
        std::fs::create_dir_all(p.join("dst/sub")).unwrap();
        std::fs::write(p.join("dst/f"), b"").unwrap();
        std::fs::write(p.join("dst/sub/g"), b"").unwrap();
        let _f = Bind::mount(&p.join("outside"), &p.join("dst/f"));
        let _g = Bind::mount(&p.join("outside"), &p.join("dst/sub/g"));
        let dst = Dir::open_root(&p.join("dst")).unwrap();
        let entries = dst.list().unwrap().entries;
        let f = entries.iter().find(|e| e.name.as_bytes() == b"f").unwrap();
        assert!(f.mount_root && f.kind == crate::Kind::File, "{f:?}");
        let sub = entries
            .iter()
            .find(|e| e.name.as_bytes() == b"sub")
            .unwrap();
        assert!(!sub.mount_root);
        assert!(dst.is_mount_root_at(b"f"));
        assert!(!dst.is_mount_root_at(b"sub"));
        for (name, path) in [("f", "f"), ("sub", "sub/g")] {
            let e = dst.remove_all(name.as_bytes()).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("{path} is a mount point")),
                "{name}: {msg}"
            );
        }
        assert_eq!(std::fs::read(p.join("outside")).unwrap(), b"theirs");
        assert_eq!(std::fs::read(p.join("dst/sub/g")).unwrap(), b"theirs");
    }
}
