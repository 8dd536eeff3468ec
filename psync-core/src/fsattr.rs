//! Inode flags (`chattr`/`lsattr`) and project ids (`lsattr -p`,
//! `xfs_io -c lsproj`) of regular files and directories, as `struct
//! fsxattr` carries them (ADR 018).
//!
//! Read and written with `file_getattr`/`file_setattr` (Linux 6.17) by
//! directory and name or through an `O_PATH` handle: no file is opened,
//! and a device node in the way is never opened (those calls reach the
//! file system, never a driver). On older kernels through
//! `FS_IOC_FSGETXATTR`/`FS_IOC_FSSETXATTR` on an fd psync opened itself:
//! a handle pinned with `O_PATH | O_NOFOLLOW`, checked to be a regular
//! file or directory, reopened through `/proc/self/fd`. tmpfs, which
//! takes flags but not `fsxattr` writes, gets `FS_IOC_SETFLAGS` the same
//! way.

use crate::fs::Dir;
use crate::xattr::Node;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// `FS_XFLAG_IMMUTABLE`: no change at all (`chattr +i`).
pub const IMMUTABLE: u32 = 0x8;
/// `FS_XFLAG_APPEND`: append-only (`chattr +a`).
pub const APPEND: u32 = 0x10;
/// `FS_XFLAG_SYNC`: synchronous writes (`chattr +S`).
pub const SYNC: u32 = 0x20;
/// `FS_XFLAG_NOATIME`: no atime updates (`chattr +A`).
pub const NOATIME: u32 = 0x40;
/// `FS_XFLAG_NODUMP`: left out of backups by `dump` (`chattr +d`).
pub const NODUMP: u32 = 0x80;
/// `FS_XFLAG_PROJINHERIT`: new entries of a directory get its project
/// id (`chattr +P`); copied with project ids.
pub const PROJINHERIT: u32 = 0x200;
/// The flags copied with file flags: what a user sets on purpose and
/// every file system with flags keeps the same way. Compression,
/// encryption, verity, casefolding, DAX, extents and inline data are a
/// file system's own business (set at creation or by mount options, or
/// meaningless on another file system).
pub const FLAGS: u32 = IMMUTABLE | APPEND | SYNC | NOATIME | NODUMP;
/// The flags that forbid changing an entry: set last, lifted while the
/// run changes the entry (or, for a directory, the names in it).
pub const PROTECT: u32 = IMMUTABLE | APPEND;
/// The flags `statx` reports in every listing (`STATX_ATTR_IMMUTABLE`,
/// `_APPEND`, `_NODUMP`), compared on every run at no cost.
pub const LISTED: u32 = IMMUTABLE | APPEND | NODUMP;

/// `FS_IOC_FSGETXATTR` / `FS_IOC_FSSETXATTR` (`_IOR`/`_IOW('X', 31/32,
/// struct fsxattr)`, 28 bytes).
const FSGETXATTR: u32 = 0x801c_581f;
const FSSETXATTR: u32 = 0x401c_5820;
/// `FS_IOC_GETFLAGS` / `FS_IOC_SETFLAGS` (`_IOR`/`_IOW('f', 1/2, long)`).
const GETFLAGS: u32 = if cfg!(target_pointer_width = "64") {
    0x8008_6601
} else {
    0x8004_6601
};
const SETFLAGS: u32 = if cfg!(target_pointer_width = "64") {
    0x4008_6602
} else {
    0x4004_6602
};
/// `file_getattr` / `file_setattr` (Linux 6.17, one number on every
/// architecture).
const SYS_FILE_GETATTR: libc::c_long = 468;
const SYS_FILE_SETATTR: libc::c_long = 469;

/// `struct fsxattr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fsxattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// `struct file_attr` of `file_getattr`/`file_setattr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FileAttrRaw {
    xflags: u64,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
}

/// An entry's inode flags and project id, as its file system has them
/// (the whole `fsxattr`, so that a write changes only what psync syncs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsAttr {
    raw: Fsxattr,
}

impl FsAttr {
    /// The `FS_XFLAG_*` bits.
    pub fn xflags(&self) -> u32 {
        self.raw.xflags
    }

    /// The project id.
    pub fn projid(&self) -> u32 {
        self.raw.projid
    }
}

/// What [`sync`] syncs.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct FsAttrSync {
    /// The flags of [`FLAGS`] (without [`PROTECT`] unless `protect`).
    pub flags: bool,
    /// The project id, and [`PROJINHERIT`].
    pub project_ids: bool,
    /// Immutable and append-only too: the last step on an entry.
    /// Without it the target's stay as they are.
    pub protect: bool,
    /// Only find out whether anything differs.
    pub check_only: bool,
}

impl FsAttrSync {
    /// The `FS_XFLAG_*` bits synced.
    pub fn mask(self) -> u32 {
        let flags = match (self.flags, self.protect) {
            (false, _) => 0,
            (true, true) => FLAGS,
            (true, false) => FLAGS & !PROTECT,
        };
        flags | if self.project_ids { PROJINHERIT } else { 0 }
    }

    /// True when anything is synced at all.
    pub fn on(self) -> bool {
        self.flags || self.project_ids
    }
}

/// What the target could not hold.
#[derive(Debug)]
#[non_exhaustive]
pub enum Dropped {
    /// The project id (a file system without them: tmpfs, btrfs, ext4
    /// without the `project` feature).
    ProjectId(u32, io::Error),
    /// These `FS_XFLAG_*` bits: not permitted (immutable and
    /// append-only need CAP_LINUX_IMMUTABLE) or not supported.
    Flags(u32, io::Error),
}

/// What [`sync`] changed (or would) and what the target refused.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct FsAttrReport {
    /// Flags or project id changed.
    pub changed: bool,
    /// What the target could not take.
    pub dropped: Vec<Dropped>,
}

/// Names the `FS_XFLAG_*` bits of `xflags` as `chattr` letters.
pub fn letters(xflags: u32) -> String {
    [
        (IMMUTABLE, 'i'),
        (APPEND, 'a'),
        (SYNC, 'S'),
        (NOATIME, 'A'),
        (NODUMP, 'd'),
        (PROJINHERIT, 'P'),
    ]
    .iter()
    .filter(|(bit, _)| xflags & bit != 0)
    .map(|(_, c)| *c)
    .collect()
}

/// True for the errors of a file system (or an entry type) without
/// inode flags or `fsxattr`.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTTY | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
    )
}

/// Set once `file_getattr` answered ENOSYS: the fd path from then on.
static NO_FILE_ATTR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn file_attr_call(
    nr: libc::c_long,
    dir: BorrowedFd<'_>,
    name: &[u8],
    fa: &mut FileAttrRaw,
    at: libc::c_int,
) -> Option<io::Result<()>> {
    use std::sync::atomic::Ordering;
    if NO_FILE_ATTR.load(Ordering::Relaxed) {
        return None;
    }
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid fd, a NUL-terminated name and a buffer of the size given.
    let r = unsafe {
        libc::syscall(
            nr,
            dir.as_raw_fd(),
            name.as_ptr(),
            std::ptr::from_mut(fa),
            std::mem::size_of::<FileAttrRaw>(),
            at,
        )
    };
    if r == 0 {
        return Some(Ok(()));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        NO_FILE_ATTR.store(true, Ordering::Relaxed);
        return None;
    }
    Some(Err(e))
}

fn ioctl_get(fd: BorrowedFd<'_>) -> io::Result<Fsxattr> {
    let mut fa = Fsxattr::default();
    // SAFETY: FS_IOC_FSGETXATTR writes one `struct fsxattr`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FSGETXATTR as _, std::ptr::from_mut(&mut fa)) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fa)
}

fn ioctl_set(fd: BorrowedFd<'_>, fa: &Fsxattr) -> io::Result<()> {
    // SAFETY: FS_IOC_FSSETXATTR reads one `struct fsxattr`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FSSETXATTR as _, std::ptr::from_ref(fa)) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `FS_*_FL` bit of each flag psync syncs, for `FS_IOC_SETFLAGS`.
const FL_BITS: [(u32, libc::c_long); 5] = [
    (IMMUTABLE, 0x10),
    (APPEND, 0x20),
    (SYNC, 0x8),
    (NOATIME, 0x80),
    (NODUMP, 0x40),
];

/// Sets the bits of `mask` of `xflags` with `FS_IOC_SETFLAGS`, for file
/// systems that take flags but no `fsxattr` (tmpfs).
fn ioctl_set_flags(fd: BorrowedFd<'_>, xflags: u32, mask: u32) -> io::Result<()> {
    let mut fl: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one `long` (the kernel reads an int).
    if unsafe { libc::ioctl(fd.as_raw_fd(), GETFLAGS as _, std::ptr::from_mut(&mut fl)) } < 0 {
        return Err(io::Error::last_os_error());
    }
    for (x, f) in FL_BITS {
        if mask & x != 0 {
            fl = if xflags & x != 0 { fl | f } else { fl & !f };
        }
    }
    // SAFETY: FS_IOC_SETFLAGS reads one `long`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), SETFLAGS as _, std::ptr::from_ref(&fl)) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An fd for the ioctls of the entry `node` reaches: the node's own fd,
/// or the entry pinned with `O_PATH | O_NOFOLLOW` and, once `fstat` says
/// it is a regular file or directory, reopened for reading through
/// `/proc/self/fd` (never a device, fifo, socket or symlink).
enum Opened<'a> {
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl Opened<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Opened::Borrowed(fd) => *fd,
            Opened::Owned(fd) => {
                use std::os::fd::AsFd;
                fd.as_fd()
            }
        }
    }
}

fn reopen(pinned: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use rustix::fs::{FileType, Mode, OFlags};
    let st = rustix::fs::fstat(pinned)?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile | FileType::Directory => {}
        _ => return Err(io::Error::from_raw_os_error(libc::ENOTTY)),
    }
    let path = format!("/proc/self/fd/{}", pinned.as_raw_fd());
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    Ok(rustix::fs::open(path.as_str(), flags, Mode::empty())?)
}

fn opened<'a>(node: Node<'a>) -> io::Result<Opened<'a>> {
    match node {
        Node::Fd(fd) => Ok(Opened::Borrowed(fd)),
        Node::Path(fd) => Ok(Opened::Owned(reopen(fd)?)),
        Node::At(dir, name) => {
            let h = dir.handle(name.as_bytes())?;
            use std::os::fd::AsFd;
            Ok(Opened::Owned(reopen(h.as_fd())?))
        }
    }
}

/// The place a `file_*attr` call takes: directory fd, name, flags. Not
/// for an `O_PATH` handle, which those calls refuse (EBADF): it is
/// reopened.
fn at<'a>(node: &Node<'a>) -> Option<(BorrowedFd<'a>, &'a [u8], libc::c_int)> {
    match *node {
        Node::Fd(_) | Node::Path(_) => None,
        Node::At(dir, name) => Some((dir_fd(dir), name.as_bytes(), libc::AT_SYMLINK_NOFOLLOW)),
    }
}

fn dir_fd(dir: &Dir) -> BorrowedFd<'_> {
    dir.fd()
}

/// The flags and project id of the regular file or directory `node`
/// reaches; `None` where its file system has none (or for another type
/// of entry).
///
/// # Errors
/// As `file_getattr` / `FS_IOC_FSGETXATTR`.
pub fn get(node: Node<'_>) -> io::Result<Option<FsAttr>> {
    let r = match at(&node) {
        Some((dir, name, flags)) => {
            let mut fa = FileAttrRaw::default();
            match file_attr_call(SYS_FILE_GETATTR, dir, name, &mut fa, flags) {
                Some(r) => r.map(|()| Fsxattr {
                    // The bits of `struct fsxattr` are those of its low word.
                    xflags: fa.xflags as u32,
                    extsize: fa.extsize,
                    nextents: fa.nextents,
                    projid: fa.projid,
                    cowextsize: fa.cowextsize,
                    pad: [0; 8],
                }),
                None => opened(node).and_then(|o| ioctl_get(o.fd())),
            }
        }
        None => opened(node).and_then(|o| ioctl_get(o.fd())),
    };
    match r {
        Ok(raw) => Ok(Some(FsAttr { raw })),
        Err(e) if unsupported(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `fa` to the entry `node` reaches; tmpfs, which refuses any
/// `fsxattr` write, gets the flags of `mask` with `FS_IOC_SETFLAGS`
/// (a project id change then fails).
fn put(node: Node<'_>, fa: &Fsxattr, cur: &Fsxattr, mask: u32) -> io::Result<()> {
    let r = match at(&node) {
        Some((dir, name, flags)) => {
            let mut raw = FileAttrRaw {
                xflags: u64::from(fa.xflags),
                extsize: fa.extsize,
                nextents: fa.nextents,
                projid: fa.projid,
                cowextsize: fa.cowextsize,
            };
            match file_attr_call(SYS_FILE_SETATTR, dir, name, &mut raw, flags) {
                Some(r) => r,
                None => opened(node).and_then(|o| ioctl_set(o.fd(), fa)),
            }
        }
        None => opened(node).and_then(|o| ioctl_set(o.fd(), fa)),
    };
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && fa.projid == cur.projid => {
            opened(node).and_then(|o| ioctl_set_flags(o.fd(), fa.xflags, mask))
        }
        r => r,
    }
}

/// Makes the flags (of [`FsAttrSync::mask`]) and project id of the
/// entry `to` reaches those of `from`: read from `from` first.
///
/// # Errors
/// Reading either side fails. Refusals to set are in the report.
pub fn sync(from: Node<'_>, to: Node<'_>, how: FsAttrSync) -> io::Result<FsAttrReport> {
    match get(from)? {
        Some(want) => sync_to(want, to, how),
        // A source without flags: nothing to copy, nothing to compare.
        None => Ok(FsAttrReport::default()),
    }
}

/// [`sync`] from flags and a project id already read.
///
/// # Errors
/// Reading the target fails. Refusals to set are in the report.
pub fn sync_to(want: FsAttr, to: Node<'_>, how: FsAttrSync) -> io::Result<FsAttrReport> {
    let proj = how.project_ids.then_some(want.raw.projid);
    apply(to, (want.raw.xflags, how.mask()), proj, how.check_only)
}

/// Sets the immutable and append-only flags of `to` to `bits` (lifts
/// them with `0`), leaving every other flag and the project id.
///
/// # Errors
/// Reading the target fails. Refusals to set are in the report.
pub fn set_protect(to: Node<'_>, bits: u32) -> io::Result<FsAttrReport> {
    apply(to, (bits, PROTECT), None, false)
}

/// Sets the project id of `to` to `id`, leaving its flags.
///
/// # Errors
/// Reading the target fails. Refusals to set are in the report.
pub fn set_projid(to: Node<'_>, id: u32) -> io::Result<FsAttrReport> {
    apply(to, (0, 0), Some(id), false)
}

/// Gives `to` the bits of `mask` of `xflags` and the project id `proj`
/// (`None`: left). A refusal takes out what was refused, one part at a
/// time, and tries the rest again.
fn apply(
    to: Node<'_>,
    (xflags, mask): (u32, u32),
    proj: Option<u32>,
    check_only: bool,
) -> io::Result<FsAttrReport> {
    let mut report = FsAttrReport::default();
    let Some(cur) = get(to)? else {
        // The target has none: what the source has is dropped.
        let lost = xflags & mask;
        let e = || io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        if lost != 0 {
            report.dropped.push(Dropped::Flags(lost, e()));
        }
        if let Some(p) = proj.filter(|&p| p != 0) {
            report.dropped.push(Dropped::ProjectId(p, e()));
        }
        return Ok(report);
    };
    let cur = cur.raw;
    let mut new = cur;
    new.xflags = (cur.xflags & !mask) | (xflags & mask);
    new.projid = proj.unwrap_or(cur.projid);
    if new == cur {
        return Ok(report);
    }
    report.changed = true;
    if check_only {
        return Ok(report);
    }
    loop {
        let e = match put(to, &new, &cur, mask) {
            Ok(()) => break,
            Err(e) => e,
        };
        let protect = (new.xflags ^ cur.xflags) & PROTECT;
        let errno = e.raw_os_error();
        if errno == Some(libc::EPERM) && protect != 0 {
            new.xflags = (new.xflags & !PROTECT) | (cur.xflags & PROTECT);
            report.dropped.push(Dropped::Flags(protect, e));
        } else if new.projid != cur.projid
            && matches!(errno, Some(libc::EOPNOTSUPP | libc::EINVAL | libc::EPERM))
        {
            report.dropped.push(Dropped::ProjectId(new.projid, e));
            new.projid = cur.projid;
        } else {
            report
                .dropped
                .push(Dropped::Flags(new.xflags ^ cur.xflags, e));
            new = cur;
        }
        if new == cur {
            report.changed = false;
            break;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_letters() {
        let all = FsAttrSync {
            flags: true,
            project_ids: true,
            protect: true,
            check_only: false,
        };
        assert_eq!(all.mask(), FLAGS | PROJINHERIT);
        let early = FsAttrSync {
            protect: false,
            ..all
        };
        assert_eq!(early.mask() & PROTECT, 0);
        let none = FsAttrSync::default();
        assert_eq!(none.mask(), 0);
        assert!(!none.on());
        assert_eq!(letters(IMMUTABLE | NODUMP | PROJINHERIT), "idP");
    }

    /// Set and read back by name (`file_setattr`), through a handle and
    /// an fd (the ioctls), and by name again without `file_*attr` (the
    /// fd path of kernels before 6.17).
    #[test]
    fn flags_set_and_read_every_way() {
        let t = crate::test_dir();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        let name = crate::entry::Name::from("f");
        let how = FsAttrSync {
            flags: true,
            ..FsAttrSync::default()
        };
        let want = |x: u32| FsAttr {
            raw: Fsxattr {
                xflags: x,
                ..Fsxattr::default()
            },
        };
        match sync_to(want(NODUMP), Node::At(&d, &name), how) {
            Ok(r) if r.dropped.is_empty() => assert!(r.changed),
            other => return crate::skip(&format!("no flags here: {other:?}")),
        }
        let h = d.handle(b"f").unwrap();
        let got = get(h.node()).unwrap().unwrap();
        assert_eq!(got.xflags() & FLAGS, NODUMP);
        let f = std::fs::File::open(t.path().join("f")).unwrap();
        use std::os::fd::AsFd;
        let r = sync_to(want(NOATIME), Node::Fd(f.as_fd()), how).unwrap();
        assert!(r.changed && r.dropped.is_empty(), "{r:?}");
        NO_FILE_ATTR.store(true, std::sync::atomic::Ordering::Relaxed);
        let by_name = get(Node::At(&d, &name));
        NO_FILE_ATTR.store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(by_name.unwrap().unwrap().xflags() & FLAGS, NOATIME);
        let again = sync_to(want(NOATIME), h.node(), how).unwrap();
        assert!(!again.changed, "nothing to change: {again:?}");
    }

    #[test]
    fn a_fifo_is_never_opened() {
        let t = crate::test_dir();
        let p = t.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        let name = crate::entry::Name::from("fifo");
        // Whichever way (file_getattr or the fd path): no open of the
        // fifo, which would block without a writer.
        let _ = get(Node::At(&d, &name));
        NO_FILE_ATTR.store(true, std::sync::atomic::Ordering::Relaxed);
        let r = get(Node::At(&d, &name));
        NO_FILE_ATTR.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(matches!(r, Ok(None)), "{r:?}");
    }
}
