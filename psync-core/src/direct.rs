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

/// Alignment of the buffer's start: a transparent huge page.
const HUGE: usize = 2 << 20;

/// Runs `f` with this thread's [`BUF`]-byte buffer aligned to [`ALIGN`]
/// (at a huge-page boundary, in huge pages where the kernel grants them).
pub fn with_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    BUFFER.with_borrow_mut(|store| {
        if store.len() < BUF + HUGE {
            *store = huge_buffer(BUF + HUGE);
        }
        let at = store.as_ptr().align_offset(HUGE);
        f(&mut store[at..at + BUF])
    })
}

/// `len` zero bytes, asked to be backed by transparent huge pages before
/// they are first touched. A direct request pins every page of its buffer
/// (`get_user_pages`): one huge page instead of 512 small ones makes that
/// cheap (a profile of a direct copy had 18 % of its time there).
fn huge_buffer(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = Vec::with_capacity(len);
    let at = v.as_ptr().align_offset(HUGE);
    if at < len {
        let whole = (len - at) / HUGE * HUGE;
        // SAFETY: the range lies inside `v`'s allocation, which nothing
        // reads yet; MADV_HUGEPAGE only changes how its pages are backed,
        // never their contents (and an error leaves them as they were).
        let _ = unsafe {
            rustix::mm::madvise(
                v.as_mut_ptr().add(at).cast(),
                whole,
                rustix::mm::Advice::LinuxHugepage,
            )
        };
    }
    v.resize(len, 0);
    v
}
