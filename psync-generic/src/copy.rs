//! The generic copier.

use psync_core::fs::{Dir, timestamps};
use psync_core::{Copied, CopyOptions, Copier, Entry, Kind, Name, Op, StepError, StepExt, Strategy, is_unsupported};
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes moved between two checks of the quit flag.
const STEP: u64 = 64 << 20;
/// The user-space buffer of the read/write fallback.
const BUF: usize = 1 << 20;

/// Copier for any POSIX file system.
#[derive(Debug, Default)]
pub struct GenericCopier {
    /// Set when copy_file_range answered "unsupported" once: later files go
    /// straight to read/write instead of failing the same call again.
    no_copy_range: AtomicBool,
}

impl GenericCopier {
    /// A copier that tries copy_file_range first.
    pub fn new() -> GenericCopier {
        GenericCopier::default()
    }

    /// A copier that always uses read/write (for tests and odd file systems).
    pub fn read_write_only() -> GenericCopier {
        GenericCopier { no_copy_range: AtomicBool::new(true) }
    }

    /// Moves `len` bytes with copy_file_range. `Ok(None)`: unsupported here
    /// before any byte moved; fall through to the next strategy.
    fn copy_range(&self, src: &File, dst: &File, offset: u64, len: u64, quit: &AtomicBool) -> io::Result<Option<u64>> {
        let (mut off_in, mut off_out) = (offset, offset);
        let mut done = 0u64;
        while done < len {
            if done % STEP == 0 && done > 0 && quit.load(Ordering::Relaxed) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let want = usize::try_from((len - done).min(STEP)).unwrap_or(usize::MAX);
            match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n as u64,
                Err(e) if done == 0 && is_unsupported(&e.into()) => return Ok(None),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(done))
    }
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `pread`/`pwrite` through a per-thread buffer.
fn copy_read_write(src: &File, dst: &File, offset: u64, len: u64, quit: &AtomicBool) -> io::Result<u64> {
    BUFFER.with_borrow_mut(|buf| {
        let size = usize::try_from(len).unwrap_or(BUF).clamp(1, BUF);
        if buf.len() < size {
            buf.resize(size, 0);
        }
        let mut done = 0u64;
        while done < len {
            if done % STEP == 0 && done > 0 && quit.load(Ordering::Relaxed) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let want = usize::try_from(len - done).unwrap_or(usize::MAX).min(size);
            let n = match src.read_at(&mut buf[..want], offset + done) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            dst.write_all_at(&buf[..n], offset + done)?;
            done += n as u64;
        }
        Ok(done)
    })
}

/// The process umask, read once (`umask(2)` cannot be read without being
/// set, which would race with other threads creating files).
fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_string())))
            .and_then(|v| u32::from_str_radix(&v, 8).ok())
            .unwrap_or(0o022)
    })
}

/// The mode a new entry gets: the source's, or without `-p` the source's
/// masked by the umask (as rsync does for new files).
fn target_mode(src: &Entry, opts: &CopyOptions) -> u32 {
    if opts.preserve.perms { src.mode } else { src.mode & 0o777 & !umask() }
}

fn owner(src: &Entry, opts: &CopyOptions) -> (Option<u32>, Option<u32>) {
    if !opts.can_chown {
        return (None, None);
    }
    (opts.preserve.owner.then_some(src.uid), opts.preserve.group.then_some(src.gid))
}

impl Copier for GenericCopier {
    fn name(&self) -> &str {
        "generic"
    }

    fn create(&self, dir: &Dir, tmp: &Name, _src: &Entry, _src_file: &File) -> Result<File, StepError> {
        dir.create_excl(tmp.as_bytes()).op(Op::Create)
    }

    fn copy_data(&self, src: &File, dst: &File, offset: u64, len: u64, quit: &AtomicBool) -> Result<Copied, StepError> {
        if len == 0 {
            return Ok(Copied { bytes: 0, strategy: Strategy::Empty });
        }
        if !self.no_copy_range.load(Ordering::Relaxed) {
            match self.copy_range(src, dst, offset, len, quit).op(Op::CopyData)? {
                Some(bytes) => return Ok(Copied { bytes, strategy: Strategy::CopyRange }),
                None => self.no_copy_range.store(true, Ordering::Relaxed),
            }
        }
        let bytes = copy_read_write(src, dst, offset, len, quit).op(Op::CopyData)?;
        Ok(Copied { bytes, strategy: Strategy::ReadWrite })
    }

    fn set_fd_attrs(&self, fd: BorrowedFd<'_>, src: &Entry, opts: &CopyOptions) -> Result<(), StepError> {
        let (uid, gid) = owner(src, opts);
        if uid.is_some() || gid.is_some() {
            let uid = uid.map(rustix::fs::Uid::from_raw);
            let gid = gid.map(rustix::fs::Gid::from_raw);
            rustix::fs::fchown(fd, uid, gid).map_err(io::Error::from).op(Op::Chown)?;
        }
        let mode = rustix::fs::Mode::from_raw_mode(target_mode(src, opts));
        rustix::fs::fchmod(fd, mode).map_err(io::Error::from).op(Op::Chmod)?;
        if opts.preserve.times {
            rustix::fs::futimens(fd, &timestamps(src.atime, src.mtime)).map_err(io::Error::from).op(Op::SetTimes)?;
        }
        Ok(())
    }

    fn set_attrs(&self, dir: &Dir, name: &Name, src: &Entry, opts: &CopyOptions) -> Result<(), StepError> {
        let n = name.as_bytes();
        let (uid, gid) = owner(src, opts);
        if uid.is_some() || gid.is_some() {
            dir.chown(n, uid, gid).op(Op::Chown)?;
        }
        if src.kind != Kind::Symlink && (opts.preserve.perms || opts.can_chown) {
            dir.chmod(n, target_mode(src, opts)).op(Op::Chmod)?;
        }
        if opts.preserve.times {
            dir.set_times(n, src.atime, src.mtime).op(Op::SetTimes)?;
        }
        Ok(())
    }

    fn make_dir(&self, dir: &Dir, name: &Name, _src: &Entry) -> Result<(), StepError> {
        dir.mkdir(name.as_bytes(), 0o700).op(Op::Mkdir)
    }

    fn make_symlink(&self, dir: &Dir, name: &Name, src: &Entry) -> Result<(), StepError> {
        let target = src.link.as_ref().map_or(&[][..], Name::as_bytes);
        dir.symlink(target, name.as_bytes()).op(Op::Symlink)
    }

    fn make_special(&self, dir: &Dir, name: &Name, src: &Entry) -> Result<(), StepError> {
        dir.mknod(name.as_bytes(), src.kind, src.mode, src.rdev).op(Op::Mknod)
    }

    fn remove(&self, dir: &Dir, name: &Name) -> Result<u64, StepError> {
        dir.remove_all(name.as_bytes()).op(Op::Remove)
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

    fn copy_with(c: &GenericCopier, data: &[u8]) -> (Vec<u8>, Strategy) {
        let t = tmp();
        std::fs::File::create(t.path().join("s")).unwrap().write_all(data).unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        let src = d.open_read(b"s").unwrap();
        let dst = d.create_excl(b"t").unwrap();
        let quit = AtomicBool::new(false);
        let got = c.copy_data(&src, &dst, 0, data.len() as u64, &quit).unwrap();
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
        for c in [GenericCopier::new(), GenericCopier::read_write_only()] {
            let e = c.copy_data(&src, &dst, 0, 10, &AtomicBool::new(false)).unwrap_err();
            assert_eq!(e.source.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn quit_interrupts_a_long_copy() {
        let t = tmp();
        let f = std::fs::File::create(t.path().join("s")).unwrap();
        f.set_len(3 * STEP).unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        let src = d.open_read(b"s").unwrap();
        let dst = d.create_excl(b"t").unwrap();
        let e = GenericCopier::read_write_only().copy_data(&src, &dst, 0, 3 * STEP, &AtomicBool::new(true)).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::Interrupted);
    }
}
