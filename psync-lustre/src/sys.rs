//! The few Lustre calls the copier makes, behind a trait: [`RealLustre`]
//! makes them on a Lustre client (plain syscalls, no `liblustreapi`); the
//! test double ([`crate::double::FakeLustre`]) keeps layouts in memory on
//! any file system, so the copier's protocol is tested where no Lustre
//! runs.

use psync_core::{Dir, Name, Node};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::layout::XATTR_LUSTRE_LOV;

/// `O_LOV_DELAY_CREATE` (Lustre's `lustre_user.h`): open a new file
/// without a layout, so that one can be set before the first write. The
/// old 1.8 bit and `O_NOCTTY | FASYNC`, which recent clients look for
/// (open ignores both on a regular file).
pub const O_LOV_DELAY_CREATE: u32 = 0o100_000_000 | 0o400 | 0o20_000;

/// The `name_to_handle_at` handle type of a Lustre file (`FILEID_LUSTRE`):
/// its handle starts with the file's FID.
pub const FILEID_LUSTRE: i32 = 0x97;

/// A Lustre file identifier (`lu_fid`): the same on every client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Fid {
    /// Sequence.
    pub seq: u64,
    /// Object id within the sequence.
    pub oid: u32,
    /// Version.
    pub ver: u32,
}

impl Fid {
    /// The FID in 128 bits: sequence, object id, version (from the most
    /// significant end). One to one, as the FID is.
    pub fn packed(&self) -> u128 {
        u128::from(self.seq) << 64 | u128::from(self.oid) << 32 | u128::from(self.ver)
    }
}

impl std::fmt::Display for Fid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:#x}:{:#x}:{:#x}]", self.seq, self.oid, self.ver)
    }
}

/// What the copier reads of a source entry when its directory is listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryInfo {
    /// The entry's FID, when the file system gives one.
    pub fid: Option<Fid>,
    /// Its `lustre.lov` value (asked for regular files only), when it
    /// has one.
    pub layout: Option<Vec<u8>>,
}

/// The Lustre calls of the copier. Every call is relative to an open
/// directory or on an open file and never follows a symlink.
pub trait LustreSys: Send + Sync + std::fmt::Debug {
    /// Creates the regular file `name` in `dir` without a layout:
    /// `O_CREAT | O_EXCL | O_NOFOLLOW | O_LOV_DELAY_CREATE`, read-write,
    /// mode 0600 (as [`Dir::create_excl`]).
    ///
    /// # Errors
    /// EEXIST when `name` is taken; as `openat` otherwise.
    fn create_delayed(&self, dir: &Dir, name: &Name) -> io::Result<File>;

    /// The `lustre.lov` value of an open file or directory; `None` when
    /// it has none (a directory without a default layout).
    ///
    /// # Errors
    /// As `fgetxattr`.
    fn get_layout(&self, fd: BorrowedFd<'_>) -> io::Result<Option<Vec<u8>>>;

    /// Sets `lustre.lov` of an open file (before any data) or directory
    /// (its default layout).
    ///
    /// # Errors
    /// As `fsetxattr` (a pool the target does not have: EINVAL).
    fn set_layout(&self, fd: BorrowedFd<'_>, value: &[u8]) -> io::Result<()>;

    /// The FID of the entry `name` of `dir` and, when `layout`, its
    /// `lustre.lov` value.
    ///
    /// # Errors
    /// The entry cannot be looked at.
    fn entry_info(&self, dir: &Dir, name: &Name, layout: bool) -> io::Result<EntryInfo>;
}

/// The calls made on a Lustre client.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealLustre;

/// `fgetxattr(XATTR_LUSTRE_LOV)` (psync's own xattr read: a buffer that
/// grows as needed, `None` for no value).
fn fget_lov(fd: BorrowedFd<'_>) -> io::Result<Option<Vec<u8>>> {
    Node::Fd(fd).get(XATTR_LUSTRE_LOV.as_bytes())
}

/// The FID in a `name_to_handle_at` handle of `name` in `dir` (not
/// followed): `None` for a handle of another type (not Lustre).
fn fid_of(dir: &Dir, name: &Name) -> io::Result<Option<Fid>> {
    let cname = std::ffi::CString::new(name.as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // `struct file_handle` and 128 bytes of handle (MAX_HANDLE_SZ), aligned.
    let mut buf = [0u64; 17];
    let room: u32 = 128;
    buf[0] = u64::from(room);
    let handle = buf.as_mut_ptr().cast::<libc::file_handle>();
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `handle` points at a buffer of 8 + 128 bytes, aligned for
    // `file_handle`, whose `handle_bytes` says 128; `cname` is a C string
    // alive for the call.
    let r = unsafe {
        libc::name_to_handle_at(
            dir.fd().as_raw_fd(),
            cname.as_ptr(),
            handle,
            &mut mount_id,
            0,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // No handles on this file system, or none that fit.
            Some(libc::EOPNOTSUPP | libc::EOVERFLOW) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: the buffer holds a `file_handle` the kernel filled.
    let (len, kind) = unsafe { ((*handle).handle_bytes, (*handle).handle_type) };
    if kind != FILEID_LUSTRE || len < 16 {
        return Ok(None);
    }
    let bytes: Vec<u8> = buf[1..3].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let word =
        |at: usize| u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Ok(Some(Fid {
        seq: buf[1],
        oid: word(8),
        ver: word(12),
    }))
}

impl LustreSys for RealLustre {
    fn create_delayed(&self, dir: &Dir, name: &Name) -> io::Result<File> {
        use rustix::fs::{Mode, OFlags};
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let flags = flags | OFlags::from_bits_retain(O_LOV_DELAY_CREATE);
        let fd = rustix::fs::openat(dir.fd(), name.as_bytes(), flags, Mode::from_raw_mode(0o600))?;
        Ok(File::from(fd))
    }

    fn get_layout(&self, fd: BorrowedFd<'_>) -> io::Result<Option<Vec<u8>>> {
        fget_lov(fd)
    }

    fn set_layout(&self, fd: BorrowedFd<'_>, value: &[u8]) -> io::Result<()> {
        let flags = rustix::fs::XattrFlags::empty();
        Ok(rustix::fs::fsetxattr(fd, XATTR_LUSTRE_LOV, value, flags)?)
    }

    fn entry_info(&self, dir: &Dir, name: &Name, layout: bool) -> io::Result<EntryInfo> {
        // A FID not read does not hide the layout (a released file would
        // then be copied, restoring it from the archive).
        let fid = fid_of(dir, name).ok().flatten();
        let layout = if layout {
            Node::At(dir, name).get(XATTR_LUSTRE_LOV.as_bytes())?
        } else {
            None
        };
        Ok(EntryInfo { fid, layout })
    }
}
