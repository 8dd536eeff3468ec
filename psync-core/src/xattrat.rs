//! The `*xattrat` system calls (Linux 6.13): xattrs of a name in an open
//! directory, without a path through `/proc/self/fd`.
//!
//! Going through `/proc/self/fd/<dirfd>/<name>` costs a walk of procfs per
//! call, which made the exact xattr comparison of a no-op run three times
//! slower than the `lstat` of the same entry. These calls resolve `name`
//! relative to the directory fd like `fstatat`. Where the kernel lacks them
//! (`ENOSYS`, remembered for the process) the caller falls back to the
//! `/proc` path.
//!
//! Besides one `madvise` in `direct`, this is the one module of the crate
//! with `unsafe`: rustix has no binding for these calls yet, so they are
//! made with `libc::syscall`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// The calls' numbers (set, get, list, remove) in the unified table that
/// every architecture below shares for calls added after 5.1; elsewhere
/// the `/proc` path is used.
const NR: Option<[libc::c_long; 4]> = if cfg!(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "powerpc64",
    target_arch = "s390x"
)) {
    Some([463, 464, 465, 466])
} else {
    None
};

/// `struct xattr_args` of `<linux/xattr.h>`.
#[repr(C, align(8))]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

static MISSING: AtomicBool = AtomicBool::new(false);

/// The outcome of one call: `None` when the kernel does not have it.
pub(crate) type Res<T> = Option<io::Result<T>>;

/// A NUL-terminated copy of a name (xattr names are at most 255 bytes,
/// entry names too).
struct CName([u8; 257]);

impl CName {
    fn new(s: &[u8]) -> io::Result<Self> {
        if s.len() > 255 || s.contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        let mut b = [0u8; 257];
        b[..s.len()].copy_from_slice(s);
        Ok(CName(b))
    }
    fn ptr(&self) -> *const libc::c_char {
        self.0.as_ptr().cast()
    }

    /// The entry's name and the attribute's key, both NUL-terminated.
    fn pair(name: &[u8], key: &[u8]) -> io::Result<(CName, CName)> {
        Ok((CName::new(name)?, CName::new(key)?))
    }
}

/// The call numbers, unless this architecture or kernel lacks the calls.
fn numbers() -> Option<[libc::c_long; 4]> {
    NR.filter(|_| !MISSING.load(Ordering::Relaxed))
}

/// Makes the calls look missing (`on`) or present again, to test the
/// fallback.
#[cfg(test)]
pub(crate) fn force_fallback(on: bool) {
    MISSING.store(on, Ordering::Relaxed);
}

/// Turns a raw return into a result, remembering `ENOSYS`.
fn check(r: libc::c_long) -> Res<usize> {
    if r >= 0 {
        return Some(Ok(r as usize));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        MISSING.store(true, Ordering::Relaxed);
        return None;
    }
    Some(Err(e))
}

/// `listxattrat(dir, name, AT_SYMLINK_NOFOLLOW, buf)`.
pub(crate) fn list(dir: BorrowedFd<'_>, name: &[u8], buf: &mut [u8]) -> Res<usize> {
    let [_, _, list, _] = numbers()?;
    let path = match CName::new(name) {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    // SAFETY: `path` is NUL-terminated and lives across the call; `buf`
    // is a writable region of `buf.len()` bytes the kernel fills at most.
    let r = unsafe {
        libc::syscall(
            list,
            dir.as_raw_fd(),
            path.ptr(),
            NOFOLLOW,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    check(r)
}

/// `getxattrat(dir, name, AT_SYMLINK_NOFOLLOW, key, buf)`: the value's length.
pub(crate) fn get(dir: BorrowedFd<'_>, name: &[u8], key: &[u8], buf: &mut [u8]) -> Res<usize> {
    let [_, get, _, _] = numbers()?;
    value_call(get, dir, name, key, buf.as_mut_ptr(), buf.len())
}

/// `setxattrat(dir, name, AT_SYMLINK_NOFOLLOW, key, value)`, creating or
/// replacing.
pub(crate) fn set(dir: BorrowedFd<'_>, name: &[u8], key: &[u8], value: &[u8]) -> Res<()> {
    let [set, _, _, _] = numbers()?;
    // The kernel only reads through the pointer for a set.
    let r = value_call(set, dir, name, key, value.as_ptr().cast_mut(), value.len());
    r.map(|r| r.map(drop))
}

/// `removexattrat(dir, name, AT_SYMLINK_NOFOLLOW, key)`.
pub(crate) fn remove(dir: BorrowedFd<'_>, name: &[u8], key: &[u8]) -> Res<()> {
    let [_, _, _, remove] = numbers()?;
    let (path, key) = match CName::pair(name, key) {
        Ok(pair) => pair,
        Err(e) => return Some(Err(e)),
    };
    // SAFETY: `path` and `key` are NUL-terminated and outlive the call.
    let r = unsafe { libc::syscall(remove, dir.as_raw_fd(), path.ptr(), NOFOLLOW, key.ptr()) };
    check(r).map(|r| r.map(drop))
}

const NOFOLLOW: libc::c_uint = libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;

/// A get or set: `nr` with a `struct xattr_args` describing `len` bytes at
/// `value` (written by a get, read by a set).
fn value_call(
    nr: libc::c_long,
    dir: BorrowedFd<'_>,
    name: &[u8],
    key: &[u8],
    value: *mut u8,
    len: usize,
) -> Res<usize> {
    let (path, key) = match CName::pair(name, key) {
        Ok(pair) => pair,
        Err(e) => return Some(Err(e)),
    };
    let Ok(size) = u32::try_from(len) else {
        return Some(Err(io::Error::from_raw_os_error(libc::E2BIG)));
    };
    let args = XattrArgs {
        value: value as u64,
        size,
        flags: 0,
    };
    // SAFETY: `path` and `key` are NUL-terminated and outlive the call;
    // `args` describes `len` bytes at `value`, valid for the access the
    // call makes (the caller's buffer for a get, its value for a set).
    let r = unsafe {
        libc::syscall(
            nr,
            dir.as_raw_fd(),
            path.ptr(),
            NOFOLLOW,
            key.ptr(),
            &raw const args,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    check(r)
}
