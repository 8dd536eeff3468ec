//! Direct I/O (`O_DIRECT`) helpers: the alignment a file system asks for,
//! switching a file description into direct mode for a while, and an
//! aligned per-thread buffer.
//!
//! Large files' chunks are written direct where the target allows (see
//! the generic copier) and then read back direct for verification: after a
//! direct write the page cache holds nothing, and a buffered read-back
//! goes through readahead in small requests, several times slower than
//! reading the chunk back in large aligned requests.

use std::cell::RefCell;
use std::fs::File;

/// Bytes per request of a direct copy or read-back.
pub const BUF: usize = 8 << 20;
/// Alignment of the buffer: at least any device's logical block.
pub const ALIGN: usize = 4096;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The file's direct-I/O offset alignment, when its file system reports
/// one (statx `STATX_DIOALIGN`, Linux 6.1: ext4 and XFS do, tmpfs has
/// none, btrfs reports none as of 6.18) that [`ALIGN`] meets.
pub fn align(f: &File) -> Option<u64> {
    use rustix::fs::{AtFlags, StatxFlags};
    let st = rustix::fs::statx(f, c"", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN).ok()?;
    if st.stx_mask & StatxFlags::DIOALIGN.bits() == 0 {
        return None;
    }
    let (off, mem) = (
        st.stx_dio_offset_align as usize,
        st.stx_dio_mem_align as usize,
    );
    let fits = |a: usize| a > 0 && a <= ALIGN && ALIGN.is_multiple_of(a);
    (fits(off) && fits(mem)).then_some(off as u64)
}

/// `O_DIRECT` on a file description while this lives. The engine opens a
/// description of a part file per chunk task, so other chunks are not
/// affected.
#[derive(Debug)]
pub struct DirectMode<'a>(&'a File);

impl<'a> DirectMode<'a> {
    /// Direct mode on `f`; `None` when the file system refuses it.
    pub fn enable(f: &'a File) -> Option<DirectMode<'a>> {
        let flags = rustix::fs::fcntl_getfl(f).ok()?;
        rustix::fs::fcntl_setfl(f, flags | rustix::fs::OFlags::DIRECT).ok()?;
        Some(DirectMode(f))
    }
}

impl Drop for DirectMode<'_> {
    fn drop(&mut self) {
        if let Ok(flags) = rustix::fs::fcntl_getfl(self.0) {
            let _ = rustix::fs::fcntl_setfl(self.0, flags - rustix::fs::OFlags::DIRECT);
        }
    }
}

/// Runs `f` with this thread's [`BUF`]-byte buffer aligned to [`ALIGN`].
pub fn with_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    BUFFER.with_borrow_mut(|store| {
        if store.len() < BUF + ALIGN {
            store.resize(BUF + ALIGN, 0);
        }
        let at = store.as_ptr().align_offset(ALIGN);
        f(&mut store[at..at + BUF])
    })
}
