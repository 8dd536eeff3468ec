//! Direct I/O (`O_DIRECT`) helpers: the alignment a file system asks for,
//! switching a file description into direct mode for a while, and the
//! aligned buffers data passes through.
//!
//! Large files' chunks are written direct where the target allows (see
//! the generic copier) and then read back direct for verification: after a
//! direct write the page cache holds nothing, and a buffered read-back
//! goes through readahead in small requests, several times slower than
//! reading the chunk back in large aligned requests.

use std::cell::RefCell;
use std::fs::File;
use std::sync::{Mutex, OnceLock};

/// Bytes per request of a direct copy or read-back of a large file.
pub(crate) const BUF: usize = 8 << 20;
/// Alignment of every buffer: at least any device's logical block.
pub const ALIGN: usize = 4096;
/// The most a thread keeps of its own: the buffer of requests up to this
/// size, and of larger ones while the pool's buffers are all taken.
pub const SMALL: usize = 1 << 20;

thread_local! {
    /// This thread's buffer, empty until the thread first moves data and
    /// then only as large as the largest request it served (up to
    /// [`SMALL`]): a worker that only lists directories, or copies 4 KiB
    /// files, holds no more than that. It is freed when the thread ends.
    static OWN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
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

/// Alignment of a pooled buffer's start: a transparent huge page.
const HUGE: usize = 2 << 20;

/// Runs `f` with an [`ALIGN`]-aligned buffer for requests of up to `want`
/// bytes: an 8 MiB one (in huge pages where the kernel grants them)
/// from the process's pool when `want` is over [`SMALL`] and the pool has
/// one to give, this thread's own buffer otherwise, at least
/// `min(want, SMALL)` bytes rounded up to [`ALIGN`]. Callers make their
/// requests of `buf.len()` bytes at most.
///
/// Must not be called from inside another call's `f` on the same thread.
pub fn with_buffer<R>(want: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    with_buffer_from(pool(), want, f)
}

fn with_buffer_from<R>(pool: &Pool, want: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    if want > SMALL
        && let Some(mut lent) = pool.lend()
    {
        let at = lent.0.as_ptr().align_offset(HUGE);
        return f(&mut lent.0[at..at + BUF]);
    }
    with_own(want.min(SMALL), f)
}

/// Runs `f` with this thread's buffer, grown to `want` bytes (rounded up
/// to [`ALIGN`]) first if it is smaller.
fn with_own<R>(want: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let len = want.max(1).next_multiple_of(ALIGN);
    OWN.with_borrow_mut(|store| {
        if store.len() < len + ALIGN {
            // The slack lets the buffer start at an aligned address
            // wherever the allocator put it.
            *store = vec![0; len + ALIGN];
        }
        let at = store.as_ptr().align_offset(ALIGN);
        f(&mut store[at..at + len])
    })
}

/// The bytes this thread's own buffer holds (0: none yet).
#[cfg(test)]
fn own_buffer_len() -> usize {
    OWN.with_borrow(Vec::len)
}

/// Frees the pool's idle buffers. A run calls it when its workers are
/// done, so that a process that embeds psync does not keep them.
pub(crate) fn trim() {
    pool().trim();
}

/// The process's pool of [`BUF`]-byte buffers, at most
/// [`Pool::limit`] of them.
fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(default_limit()))
}

/// Large buffers at once: two per CPU, at least 4. More direct requests of
/// [`BUF`] bytes in flight than that do not make a copy faster (the CPUs
/// are busy with the copies, or the device with the requests), and every
/// buffer is 10 MiB: one per thread cost 640 MiB at 64 threads (issue 12).
/// Threads beyond the limit go on with their own smaller buffer.
fn default_limit() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    cpus.saturating_mul(2).max(4)
}

/// A bounded set of large buffers, lent one at a time and kept when
/// returned (allocating and faulting in 10 MiB per chunk would cost more
/// than the chunk's copy), until [`Pool::trim`].
struct Pool {
    state: Mutex<PoolState>,
    limit: usize,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Vec<u8>>,
    /// Buffers that exist, idle or lent.
    live: usize,
    /// Buffers ever allocated (for tests: lent ones are reused).
    allocated: usize,
}

/// A buffer lent by a pool, given back on drop (a panicking copy too).
struct Lent<'a>(Vec<u8>, &'a Pool);

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        self.1.state().idle.push(buf);
    }
}

impl Pool {
    fn new(limit: usize) -> Pool {
        Pool {
            state: Mutex::new(PoolState::default()),
            limit,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle buffer, or a new one while fewer than `limit` exist;
    /// `None` (never a wait) when all are lent: waiting could hold up a
    /// thread whose task needs a second buffer (one for each side of a
    /// comparison) for ever.
    fn lend(&self) -> Option<Lent<'_>> {
        let mut st = self.state();
        if let Some(buf) = st.idle.pop() {
            return Some(Lent(buf, self));
        }
        if st.live >= self.limit {
            return None;
        }
        st.live += 1;
        st.allocated += 1;
        drop(st);
        // Allocated and faulted in outside the lock.
        Some(Lent(huge_buffer(BUF + HUGE), self))
    }

    fn trim(&self) {
        let idle = {
            let mut st = self.state();
            st.live -= st.idle.len();
            std::mem::take(&mut st.idle)
        };
        drop(idle);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that never moves data holds no buffer; one that copies
    /// small files holds one the size of its largest request, never more
    /// than [`SMALL`] (plus the alignment slack).
    #[test]
    fn a_thread_holds_a_buffer_only_once_it_moves_data_and_only_as_large() {
        std::thread::spawn(|| {
            assert_eq!(own_buffer_len(), 0, "a fresh thread has a buffer");
            with_buffer(5000, |buf| {
                assert_eq!(buf.len(), 8192);
                assert_eq!(buf.as_ptr().align_offset(ALIGN), 0);
            });
            assert_eq!(own_buffer_len(), 8192 + ALIGN);
            // A smaller request reuses it.
            with_buffer(100, |buf| assert_eq!(buf.len(), 4096));
            assert_eq!(own_buffer_len(), 8192 + ALIGN);
            // Buffered hashing of a large range: capped at SMALL.
            let t = crate::test_dir();
            std::fs::write(t.path().join("f"), vec![7u8; 4 << 20]).unwrap();
            let f = File::open(t.path().join("f")).unwrap();
            crate::verify::hash_segments(&f, &[(0, 4096), (8192, 3 << 20)]).unwrap();
            assert_eq!(own_buffer_len(), SMALL + ALIGN);
        })
        .join()
        .unwrap();
    }

    /// The pool never has more than its limit of large buffers, reuses the
    /// ones given back, answers `None` rather than waiting when all are
    /// lent, and frees the idle ones on `trim`.
    #[test]
    fn the_pool_is_bounded_reused_and_trimmed() {
        let pool = Pool::new(2);
        let a = pool.lend().unwrap();
        let b = pool.lend().unwrap();
        assert_eq!(a.0.len(), BUF + HUGE);
        assert!(pool.lend().is_none(), "a third buffer past the limit");
        drop(a);
        let c = pool.lend().unwrap();
        assert_eq!(pool.state().allocated, 2, "a returned buffer is reused");
        drop((b, c));
        assert_eq!(pool.state().idle.len(), 2);
        pool.trim();
        let st = pool.state();
        assert_eq!((st.idle.len(), st.live), (0, 0));
        drop(st);
        assert!(pool.lend().is_some(), "a trimmed pool lends again");
    }

    /// Large requests get a pooled buffer while there is one, a
    /// thread's own (at most SMALL bytes) beyond the limit: 64 threads
    /// copying chunks at once hold `limit` large buffers, not 64.
    #[test]
    fn large_requests_beyond_the_limit_use_the_threads_own_buffer() {
        let pool = Pool::new(1);
        std::thread::scope(|s| {
            s.spawn(|| {
                with_buffer_from(&pool, BUF, |buf| {
                    assert_eq!(buf.as_ptr().align_offset(HUGE), 0);
                    assert_eq!(buf.len(), BUF);
                    // Meanwhile another thread's large request.
                    s.spawn(|| {
                        with_buffer_from(&pool, BUF, |buf| {
                            assert_eq!(buf.len(), SMALL);
                            assert_eq!(buf.as_ptr().align_offset(ALIGN), 0);
                        });
                    })
                    .join()
                    .unwrap();
                });
                assert_eq!(
                    own_buffer_len(),
                    0,
                    "a pooled request allocates nothing of its own"
                );
            });
        });
        assert_eq!(pool.state().allocated, 1);
    }
}
