//! Extended attributes (and POSIX ACLs, which are the
//! `system.posix_acl_access` / `system.posix_acl_default` xattrs) of an
//! entry reached either through an open fd or as a name in an open
//! directory, never following a symlink.

use crate::entry::Name;
use crate::fs::Dir;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

/// Where an entry's attributes are read or written. Exhaustive on
/// purpose: a copier must handle every way the engine reaches an entry,
/// so a new one is a compile error in every copier, not a run-time
/// failure (ADR 013).
#[derive(Debug, Clone, Copy)]
pub enum Node<'a> {
    /// An open regular file or directory.
    Fd(BorrowedFd<'a>),
    /// The entry `name` in an open directory (symlinks and specials, which
    /// cannot be opened for I/O). Reached with the `*xattrat` calls of
    /// Linux 6.13 relative to the directory's fd, or on older kernels as
    /// `/proc/self/fd/<dirfd>/<name>` with the `l*xattr` calls: either way
    /// the directory is the pinned one and the last component is never
    /// followed.
    At(&'a Dir, &'a Name),
    /// An entry of any type (symlinks included) pinned by an `O_PATH`
    /// handle: reached as `/proc/self/fd/<fd>`, which leads to that very
    /// inode and is never followed further, so what was checked through
    /// the handle is what changes.
    Path(BorrowedFd<'a>),
}

/// The two ACL xattrs.
pub(crate) const ACL_NAMES: [&[u8]; 2] = [b"system.posix_acl_access", b"system.posix_acl_default"];

/// Names that are another file system's internal view of an attribute
/// psync copies otherwise: XFS shows root its ACLs a second time as
/// `trusted.SGI_ACL_FILE` / `trusted.SGI_ACL_DEFAULT`. Copying those would
/// put stray xattrs on other file systems and fight the real ACL on XFS.
pub(crate) const SHADOW_NAMES: [&[u8]; 2] = [b"trusted.SGI_ACL_FILE", b"trusted.SGI_ACL_DEFAULT"];

/// Xattrs that are a file system's internal bookkeeping of one inode and
/// must never be copied to another (Lustre's FID, link, layout and HSM
/// records, among others): copied, they would claim another file's
/// identity. Left alone on both sides by every copier; a copier that
/// knows more adds its own through [`crate::Copier::sync_xattrs`].
pub(crate) const INTERNAL_NAMES: [&[u8]; 9] = [
    b"trusted.lma",
    b"trusted.link",
    b"trusted.fid",
    b"trusted.som",
    b"trusted.version",
    b"trusted.hsm",
    b"trusted.lov",
    b"trusted.lmv",
    b"trusted.dmv",
];

/// Lustre's own namespace (`lustre.lov`: a file's layout): set by the
/// Lustre copier when it creates a file, before any data, never after
/// (Lustre ignores a layout set on a file that has one); meaningless on
/// any other file system.
pub(crate) const LUSTRE_PREFIX: &[u8] = b"lustre.";

/// True for a name psync never copies nor removes: another file system's
/// view of an ACL (XFS's `trusted.SGI_ACL_FILE`, `trusted.SGI_ACL_DEFAULT`)
/// or internal bookkeeping (Lustre's `trusted.lma`, `trusted.link`,
/// `trusted.fid`, `trusted.som`, `trusted.version`, `trusted.hsm`,
/// `trusted.lov`, `trusted.lmv`, `trusted.dmv`, and every `lustre.*`).
pub fn is_never_copied(name: &[u8]) -> bool {
    SHADOW_NAMES.contains(&name)
        || INTERNAL_NAMES.contains(&name)
        || name.starts_with(LUSTRE_PREFIX)
}

/// True for the xattr names that hold POSIX ACLs.
pub(crate) fn is_acl(name: &[u8]) -> bool {
    ACL_NAMES.contains(&name)
}

impl Node<'_> {
    /// `/proc/self/fd/<fd>` of a [`Node::Path`].
    fn fd_path(fd: &BorrowedFd<'_>) -> String {
        format!("/proc/self/fd/{}", fd.as_raw_fd())
    }

    fn proc_path(dir: &Dir, name: &Name) -> std::path::PathBuf {
        let mut p = format!("/proc/self/fd/{}/", dir.fd().as_raw_fd()).into_bytes();
        p.extend_from_slice(name.as_bytes());
        std::path::PathBuf::from(OsStr::from_bytes(&p))
    }

    /// The names of the entry's xattrs. A file system without xattrs has none.
    ///
    /// # Errors
    /// As `listxattr`.
    pub fn list(&self) -> io::Result<Vec<Vec<u8>>> {
        // Most entries have no xattrs: `listxattrat` is asked for the size
        // first, which spares both sides a buffer (the kernel allocates one
        // per call otherwise). rustix's calls cap what they return at the
        // buffer's length, so they are given a buffer from the start.
        let mut buf = match self {
            Node::At(..) => Vec::new(),
            Node::Fd(_) | Node::Path(_) => vec![0; 256],
        };
        loop {
            let r = match self {
                Node::Fd(fd) => rustix::fs::flistxattr(fd, &mut buf[..]),
                // The *xattrat calls refuse O_PATH fds (EBADF).
                Node::Path(fd) => rustix::fs::listxattr(Self::fd_path(fd), &mut buf[..]),
                Node::At(d, n) => match crate::xattrat::list(d.fd(), n.as_bytes(), &mut buf) {
                    Some(r) => r.map_err(errno),
                    None => {
                        if buf.is_empty() {
                            buf.resize(256, 0);
                        }
                        rustix::fs::llistxattr(Self::proc_path(d, n), &mut buf[..])
                    }
                },
            };
            match r {
                Ok(0) => return Ok(Vec::new()),
                Ok(n) if buf.is_empty() => buf.resize(n + 64, 0),
                Ok(n) => {
                    return Ok(buf[..n]
                        .split(|&b| b == 0)
                        .filter(|s| !s.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect());
                }
                // Grew between the two calls.
                Err(rustix::io::Errno::RANGE) => buf.resize(buf.len() * 4, 0),
                Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The value of xattr `name`; `None` when it does not exist.
    ///
    /// # Errors
    /// As `getxattr`.
    pub fn get(&self, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let key = OsStr::from_bytes(name);
        let mut buf = vec![0u8; 256];
        loop {
            let r = match self {
                Node::Fd(fd) => rustix::fs::fgetxattr(fd, key, &mut buf[..]),
                Node::Path(fd) => rustix::fs::getxattr(Self::fd_path(fd), key, &mut buf[..]),
                Node::At(d, n) => match crate::xattrat::get(d.fd(), n.as_bytes(), name, &mut buf) {
                    Some(r) => r.map_err(errno),
                    None => rustix::fs::lgetxattr(Self::proc_path(d, n), key, &mut buf[..]),
                },
            };
            match r {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Err(rustix::io::Errno::RANGE) => buf.resize(buf.len() * 8, 0),
                Err(rustix::io::Errno::NODATA) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sets xattr `name` to `value`.
    ///
    /// # Errors
    /// As `setxattr` (EOPNOTSUPP where the file system cannot hold it).
    pub fn set(&self, name: &[u8], value: &[u8]) -> io::Result<()> {
        let key = OsStr::from_bytes(name);
        let flags = rustix::fs::XattrFlags::empty();
        Ok(match self {
            Node::Fd(fd) => rustix::fs::fsetxattr(fd, key, value, flags),
            Node::Path(fd) => rustix::fs::setxattr(Self::fd_path(fd), key, value, flags),
            Node::At(d, n) => match crate::xattrat::set(d.fd(), n.as_bytes(), name, value) {
                Some(r) => return r,
                None => rustix::fs::lsetxattr(Self::proc_path(d, n), key, value, flags),
            },
        }?)
    }

    /// The entry's permission bits (`stat`, not following a symlink).
    ///
    /// # Errors
    /// As `fstat` / `fstatat`.
    pub fn mode(&self) -> io::Result<u32> {
        let st = match self {
            Node::Fd(fd) | Node::Path(fd) => rustix::fs::fstat(fd)?,
            Node::At(d, n) => d.stat(n.as_bytes())?,
        };
        Ok(st.st_mode & 0o7777)
    }

    /// Removes xattr `name` (absent is fine).
    ///
    /// # Errors
    /// As `removexattr`.
    pub fn remove(&self, name: &[u8]) -> io::Result<()> {
        let key = OsStr::from_bytes(name);
        let r = match self {
            Node::Fd(fd) => rustix::fs::fremovexattr(fd, key),
            Node::Path(fd) => rustix::fs::removexattr(Self::fd_path(fd), key),
            Node::At(d, n) => match crate::xattrat::remove(d.fd(), n.as_bytes(), name) {
                Some(r) => r.map_err(errno),
                None => rustix::fs::lremovexattr(Self::proc_path(d, n), key),
            },
        };
        match r {
            Ok(()) | Err(rustix::io::Errno::NODATA) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The permission bits a new entry of directory `dir` may keep of the
/// mode it is created with: what its default ACL grants (see
/// [`acl_perms`]), or else what the umask leaves.
///
/// # Errors
/// As `getxattr` of the default ACL.
pub(crate) fn new_entry_perms(dir: Node<'_>) -> io::Result<u32> {
    let acl = match dir.get(ACL_NAMES[1]) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => None,
        r => r?,
    };
    Ok(acl
        .as_deref()
        .and_then(acl_perms)
        .unwrap_or(0o777 & !crate::fs::umask()))
}

/// The tags of a POSIX ACL entry in the xattr format (`struct
/// posix_acl_xattr_entry`: `u16` tag, `u16` perm, `u32` id, after a `u32`
/// version 2 header; all little-endian).
const USER_OBJ: u16 = 0x01;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// The entries of a version-2 ACL value, 8 bytes each; `None` for a value
/// that is not one.
fn acl_entries(value: &[u8]) -> Option<&[u8]> {
    let (head, entries) = value.split_first_chunk::<4>()?;
    (u32::from_le_bytes(*head) == 2 && entries.len() % 8 == 0).then_some(entries)
}

fn tag(entry: &[u8]) -> u16 {
    u16::from_le_bytes([entry[0], entry[1]])
}

/// The permission bits a POSIX ACL grants as a mode (`rwxrwxrwx`): the
/// owner's entry, the mask (or the owning group's entry without one), and
/// others'. Applied to a `system.posix_acl_default` value this is what the
/// kernel lets a new entry of its directory keep of the mode it is created
/// with, in place of the umask (rsync's `default_perms_for_dir`). `None`
/// for a value that is not a version-2 ACL.
pub(crate) fn acl_perms(value: &[u8]) -> Option<u32> {
    let (mut user, mut group, mut mask, mut other) = (0, 0, None, 0);
    for e in acl_entries(value)?.chunks_exact(8) {
        let perm = u32::from(u16::from_le_bytes([e[2], e[3]]) & 0o7);
        match tag(e) {
            USER_OBJ => user = perm,
            GROUP_OBJ => group = perm,
            MASK => mask = Some(perm),
            OTHER => other = perm,
            _ => {}
        }
    }
    Some(user << 6 | mask.unwrap_or(group) << 3 | other)
}

/// An access ACL value carrying the permission bits of `mode` instead of
/// its own: the owner's and others' entries, and the group's bits in the
/// mask (or in the owning group's entry without one); named entries are
/// kept. The kernel keeps an access ACL and its inode's mode in step
/// (`posix_acl_chmod`, `posix_acl_update_mode`): setting the source's
/// value as it is sets the source's mode too, which `--no-perms` must not
/// do. rsync's `change_sacl_perms` rewrites the same entries, and one
/// more: an owning group's entry equal to the mask is taken for the
/// mode's group bits (`rsync_acl_strip_perms` cannot tell them apart) and
/// gets the target's group bits too; psync does the same, so that
/// `rsync -aA --no-perms` finds nothing to change after it. `None` for a
/// value that is not a version-2 ACL.
pub(crate) fn acl_with_mode(value: &[u8], mode: u32) -> Option<Vec<u8>> {
    let entries = acl_entries(value)?;
    let perm_of = |t: u16| {
        entries
            .chunks_exact(8)
            .find(|e| tag(e) == t)
            .map(|e| u16::from_le_bytes([e[2], e[3]]))
    };
    let mask = perm_of(MASK);
    let group_is_mask = mask.is_none() || perm_of(GROUP_OBJ) == mask;
    let mut out = value.to_vec();
    for e in out[4..].chunks_exact_mut(8) {
        let bits = match tag(e) {
            USER_OBJ => mode >> 6,
            GROUP_OBJ if group_is_mask => mode >> 3,
            MASK => mode >> 3,
            OTHER => mode,
            _ => continue,
        };
        // Masked to 3 bits: the cast cannot truncate.
        e[2..4].copy_from_slice(&((bits & 0o7) as u16).to_le_bytes());
    }
    Some(out)
}

/// The access ACL a new entry created with `mode` gets from its
/// directory's default ACL `value`, as the kernel makes it
/// (`posix_acl_create_masq`): the owner's, the mask's (or the owning
/// group's, without a mask) and others' permissions ANDed with the mode's
/// bits. `None` for a value that is not a version-2 ACL.
pub(crate) fn inherited_acl(value: &[u8], mode: u32) -> Option<Vec<u8>> {
    let entries = acl_entries(value)?;
    let has_mask = entries.chunks_exact(8).any(|e| tag(e) == MASK);
    let mut out = value.to_vec();
    for e in out[4..].chunks_exact_mut(8) {
        let bits = match tag(e) {
            USER_OBJ => mode >> 6,
            GROUP_OBJ if !has_mask => mode >> 3,
            MASK => mode >> 3,
            OTHER => mode,
            _ => continue,
        };
        // Masked to 3 bits: the cast cannot truncate.
        let perm = u16::from_le_bytes([e[2], e[3]]) & (bits & 0o7) as u16;
        e[2..4].copy_from_slice(&perm.to_le_bytes());
    }
    Some(out)
}

/// An `io::Error` from a raw call as the `Errno` the rustix calls give.
fn errno(e: io::Error) -> rustix::io::Errno {
    rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO)
}

/// What [`sync_xattrs`] changed and what the target could not hold.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct XattrReport {
    /// Some non-ACL xattr was set or removed.
    pub xattrs_changed: bool,
    /// An ACL was set or removed.
    pub acl_changed: bool,
    /// Attributes the target refused (name, cause).
    pub dropped: Vec<(Vec<u8>, io::Error)>,
}

/// What [`sync_xattrs`] syncs, and how.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct XattrSync {
    /// Xattrs other than ACLs; with `false` they are left alone on both
    /// sides.
    pub xattrs: bool,
    /// POSIX ACLs; with `false` they are left alone on both sides.
    pub acls: bool,
    /// The caller knows the target has no xattrs (a new file).
    pub dst_empty: bool,
    /// The access ACL written (and compared) carries the target's mode
    /// bits, read when needed, not the source's:
    /// `--no-perms`, where the target's mode is not the source's.
    pub target_mode: bool,
    /// Only find out whether anything differs: the target is not written
    /// (the report says what would change).
    pub check_only: bool,
}

impl XattrSync {
    /// What `opts` asks of a copier's attribute step.
    pub fn of(opts: &crate::copy::CopyOptions) -> XattrSync {
        XattrSync {
            xattrs: opts.xattrs.on(),
            acls: opts.acls.on(),
            dst_empty: opts.fresh,
            target_mode: opts.acl_target_mode,
            check_only: false,
        }
    }
}

/// Makes the xattrs of `dst` equal to those of `src`, ACLs first, as
/// `how` says (see [`XattrSync`]).
///
/// # Errors
/// Reading either side fails. Refusals to set (unsupported, not
/// permitted) are collected in the report instead.
pub fn sync_xattrs(src: Node<'_>, dst: Node<'_>, how: XattrSync) -> io::Result<XattrReport> {
    let XattrSync {
        xattrs,
        acls,
        dst_empty,
        target_mode,
        check_only,
    } = how;
    let wanted = |n: &[u8]| !is_never_copied(n) && if is_acl(n) { acls } else { xattrs };
    let mut names: Vec<Vec<u8>> = src.list()?.into_iter().filter(|n| wanted(n)).collect();
    names.sort_by_key(|n| !is_acl(n));
    if names.is_empty() && dst_empty {
        return Ok(XattrReport::default());
    }
    let listed = if dst_empty { Vec::new() } else { dst.list()? };
    let theirs: Vec<Vec<u8>> = listed.into_iter().filter(|n| wanted(n)).collect();
    let mut report = XattrReport::default();
    let mark = |name: &[u8], r: &mut XattrReport| {
        if is_acl(name) {
            r.acl_changed = true
        } else {
            r.xattrs_changed = true
        }
    };
    for name in &theirs {
        if !names.contains(name) && check_only {
            mark(name, &mut report);
        } else if !names.contains(name) {
            match dst.remove(name) {
                Ok(()) => mark(name, &mut report),
                Err(e) => report.dropped.push((name.clone(), e)),
            }
        }
    }
    for name in &names {
        let Some(mut value) = src.get(name)? else {
            continue;
        };
        if target_mode && name == ACL_NAMES[0] {
            let mode = dst.mode()?;
            if let Some(v) = acl_with_mode(&value, mode) {
                value = v;
            }
        }
        let current = if theirs.contains(name) {
            dst.get(name).unwrap_or(None)
        } else {
            None
        };
        if current.as_deref() == Some(&value[..]) {
            continue;
        }
        if check_only {
            mark(name, &mut report);
            continue;
        }
        match dst.set(name, &value) {
            Ok(()) => mark(name, &mut report),
            Err(e) => report.dropped.push((name.clone(), e)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A version-2 ACL value of `(tag, perm, id)` entries.
    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            v.extend(tag.to_le_bytes());
            v.extend(perm.to_le_bytes());
            v.extend(id.to_le_bytes());
        }
        v
    }

    const NONE: u32 = u32::MAX;

    #[test]
    fn lustre_names_are_never_copied() {
        for n in [
            &b"lustre.lov"[..],
            b"lustre.lma",
            b"trusted.lov",
            b"trusted.lma",
        ] {
            assert!(is_never_copied(n), "{}", String::from_utf8_lossy(n));
        }
        for n in [&b"user.lustre.lov"[..], b"user.x", b"trusted.other"] {
            assert!(!is_never_copied(n), "{}", String::from_utf8_lossy(n));
        }
    }

    #[test]
    fn acl_with_mode_rewrites_the_mode_entries_only() {
        // user::rw- user:1234:rw- group::r-- mask::rw- other::r-- (0664).
        let src = acl(&[
            (1, 6, NONE),
            (2, 6, 1234),
            (4, 4, NONE),
            (0x10, 6, NONE),
            (0x20, 4, NONE),
        ]);
        assert_eq!(acl_perms(&src), Some(0o664));
        let got = acl_with_mode(&src, 0o600).unwrap();
        // The named entry and the owning group's (not the mask's) kept.
        let want = acl(&[
            (1, 6, NONE),
            (2, 6, 1234),
            (4, 4, NONE),
            (0x10, 0, NONE),
            (0x20, 0, NONE),
        ]);
        assert_eq!(got, want);
        assert_eq!(acl_perms(&got), Some(0o600));
        // An owning group's entry equal to the mask follows the mode, as
        // rsync's does.
        let src = acl(&[
            (1, 7, NONE),
            (2, 5, 1234),
            (4, 5, NONE),
            (0x10, 5, NONE),
            (0x20, 5, NONE),
        ]);
        let want = acl(&[
            (1, 7, NONE),
            (2, 5, 1234),
            (4, 1, NONE),
            (0x10, 1, NONE),
            (0x20, 1, NONE),
        ]);
        assert_eq!(acl_with_mode(&src, 0o711).unwrap(), want);
        // Without a mask the group's bits go to the owning group's entry.
        let src = acl(&[(1, 6, NONE), (4, 4, NONE), (0x20, 4, NONE)]);
        let want = acl(&[(1, 7, NONE), (4, 5, NONE), (0x20, 0, NONE)]);
        assert_eq!(acl_with_mode(&src, 0o750).unwrap(), want);
        assert_eq!(acl_with_mode(b"junk", 0o600), None);
    }

    #[test]
    fn copies_sets_and_removes_through_fds_and_names() {
        copies_sets_and_removes();
    }

    /// The same through `/proc/self/fd` paths, as on kernels before 6.13.
    /// (The switch is process-wide; the other tests work either way.)
    #[test]
    fn copies_sets_and_removes_without_xattrat() {
        crate::xattrat::force_fallback(true);
        copies_sets_and_removes();
        crate::xattrat::force_fallback(false);
    }

    fn copies_sets_and_removes() {
        let t = crate::test_dir();
        std::fs::write(t.path().join("a"), b"").unwrap();
        std::fs::write(t.path().join("b"), b"").unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        let a = std::fs::File::open(t.path().join("a")).unwrap();
        let src = Node::Fd(a.as_fd());
        if let Err(e) = src.set(b"user.one", b"1") {
            crate::skip(&format!("this file system has no user xattrs ({e})"));
            return;
        }
        src.set(b"user.bin", &[0, 255, 10, 0]).unwrap();
        src.set(b"user.big", &vec![7u8; 3000]).unwrap();
        let name = Name::from("b");
        let dst = Node::At(&d, &name);
        dst.set(b"user.extra", b"x").unwrap();
        let all = XattrSync {
            xattrs: true,
            acls: true,
            ..XattrSync::default()
        };
        let r = sync_xattrs(src, dst, all).unwrap();
        assert!(r.xattrs_changed && r.dropped.is_empty());
        let mut got = dst.list().unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![
                b"user.big".to_vec(),
                b"user.bin".to_vec(),
                b"user.one".to_vec()
            ]
        );
        assert_eq!(dst.get(b"user.bin").unwrap().unwrap(), vec![0, 255, 10, 0]);
        assert_eq!(dst.get(b"user.big").unwrap().unwrap().len(), 3000);
        let again = sync_xattrs(src, dst, all).unwrap();
        assert!(!again.xattrs_changed, "a second sync changes nothing");
    }
}
