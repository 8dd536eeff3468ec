//! Chunks of a large file on tmpfs, written through a shared mapping.
//!
//! tmpfs has no direct I/O, and every `write` into one file takes its
//! inode lock, so chunks written in parallel take turns (one file copied
//! no faster than `cp`). Page faults on a shared mapping do not take that
//! lock: a chunk read from the source straight into a mapping of its
//! range of the target is filled by all threads at once (ADR 004).
//!
//! The one danger of a mapping is `SIGBUS`: a fault that cannot get a page
//! (tmpfs full) or a page past the end of a truncated file. The range is
//! therefore `fallocate`d first (a full tmpfs is an `ENOSPC` error then,
//! not a signal), and only psync's own part file is mapped: it has its
//! length before any chunk, is never truncated while chunks run, and a
//! rerun that replaces a part unlinks it rather than truncating it.

use psync_core::copy::kit::Hasher;
use psync_core::{Op, StepError, StepExt};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// tmpfs's `statfs` magic.
pub(crate) const TMPFS_MAGIC: u64 = 0x0102_1994;
/// Bytes mapped at a time.
const WINDOW: u64 = 16 << 20;

/// A shared, writable mapping of `len` bytes of a file at `offset`
/// (a multiple of the page size), unmapped on drop.
struct Mapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

impl Mapping {
    fn new(f: &File, offset: u64, len: usize) -> io::Result<Mapping> {
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: a fresh mapping chosen by the kernel (null hint), of a
        // range the caller allocated inside the file's length; nothing else
        // in this process maps it (chunks share no page, see the caller).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                f,
                offset,
            )
        }?;
        Ok(Mapping { ptr, len })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` readable and writable bytes for as long
        // as `self` lives, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, and no
        // slice of it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

/// Copies the data `segments` of a chunk into `dst` (on tmpfs) through a
/// mapping, hashing what passes. The caller has checked that the chunk's
/// bounds are page-aligned (or the file's end) and `dst` has its length.
pub(crate) fn copy_mapped(
    src: &File,
    dst: &File,
    segments: &[(u64, u64)],
    mut hasher: Option<&mut Hasher>,
    quit: &AtomicBool,
) -> Result<(), StepError> {
    for &(start, len) in segments {
        // Pages first: a full tmpfs answers ENOSPC here, never SIGBUS in
        // a fault below.
        rustix::fs::fallocate(dst, rustix::fs::FallocateFlags::KEEP_SIZE, start, len)
            .map_err(io::Error::from)
            .op(Op::Write)?;
        // A window starts on a page: the segment's start rounded down.
        let page = rustix::param::page_size() as u64;
        let mut at = start;
        while at < start + len {
            if at > start && quit.load(Ordering::Relaxed) {
                return Err(StepError::new(
                    Op::CopyData,
                    io::ErrorKind::Interrupted.into(),
                ));
            }
            let base = at - at % page;
            let end = (base + psync_core::copy::pace::step(WINDOW)).min(start + len);
            let mut map =
                Mapping::new(dst, base, usize::try_from(end - base).unwrap_or(0)).op(Op::Write)?;
            let window = &mut map.bytes()[(at - base) as usize..];
            src.read_exact_at(window, at).op(Op::Read)?;
            if let Some(h) = hasher.as_deref_mut() {
                h.update(window);
            }
            psync_core::copy::pace::pace(end - at, quit);
            at = end;
        }
    }
    Ok(())
}
