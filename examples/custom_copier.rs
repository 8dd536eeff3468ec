//! A copier of your own: the generic copier wrapped to count what it
//! copies, registered for the file system of DST (its `statfs` magic, read
//! at run time), so a sync onto that file system uses it; any other pair
//! would keep the generic copier.
//!
//! ```text
//! cargo run --release --example custom_copier -- SRC DST
//! ```
//!
//! A real backend overrides what its file system does differently (a
//! layout set at `create`, chunks aligned to stripes, xattrs it keeps for
//! itself) and forwards the rest, as here.

use psync::probe::{fs_label, fs_magic_or_parent};
use psync::{
    Copied, Copier, CopyOptions, DataJob, Dir, Entry, GenericCopier, Kind, Name, Node, RelPath,
    StepError, XattrReport, XattrSync,
};
use std::fs::File;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The generic copier, counting the files it creates and the bytes it copies.
#[derive(Debug, Default)]
struct Counting {
    inner: GenericCopier,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Copier for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    fn create(&self, dir: &Dir, tmp: &Name, src: &Entry, f: &File) -> Result<File, StepError> {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.inner.create(dir, tmp, src, f)
    }
    fn create_unnamed(&self, dir: &Dir, src: &Entry, f: &File) -> Result<Option<File>, StepError> {
        let made = self.inner.create_unnamed(dir, src, f)?;
        if made.is_some() {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
        Ok(made)
    }
    fn try_clone(&self, src: &File, dst: &File, o: &CopyOptions) -> Result<bool, StepError> {
        self.inner.try_clone(src, dst, o)
    }
    fn copy_data(&self, job: &DataJob<'_>, quit: &AtomicBool) -> Result<Copied, StepError> {
        let copied = self.inner.copy_data(job, quit)?;
        self.bytes.fetch_add(copied.bytes, Ordering::Relaxed);
        Ok(copied)
    }
    fn set_attrs(
        &self,
        t: Node<'_>,
        src: &Entry,
        from: Option<Node<'_>>,
        o: &CopyOptions,
    ) -> Result<XattrReport, StepError> {
        self.inner.set_attrs(t, src, from, o)
    }
    fn make_dir(&self, dir: &Dir, n: &Name, src: &Entry, from: Node<'_>) -> Result<(), StepError> {
        self.inner.make_dir(dir, n, src, from)
    }
    fn sync_xattrs(
        &self,
        from: Node<'_>,
        t: Node<'_>,
        how: XattrSync,
    ) -> std::io::Result<XattrReport> {
        self.inner.sync_xattrs(from, t, how)
    }
    fn set_mode(&self, t: Node<'_>, mode: u32) -> Result<(), StepError> {
        self.inner.set_mode(t, mode)
    }
    fn annotate(&self, dir: &Dir, entries: &mut [Entry]) -> std::io::Result<()> {
        self.inner.annotate(dir, entries)
    }
    fn chunk_size(&self, src: &Entry, default: u64) -> u64 {
        self.inner.chunk_size(src, default)
    }
    fn make_symlink(&self, dir: &Dir, n: &Name, src: &Entry) -> Result<(), StepError> {
        self.inner.make_symlink(dir, n, src)
    }
    fn make_special(&self, dir: &Dir, n: &Name, src: &Entry) -> Result<(), StepError> {
        self.inner.make_special(dir, n, src)
    }
    fn remove(&self, dir: &Dir, e: &Entry) -> Result<u64, StepError> {
        self.inner.remove(dir, e)
    }
    // Forwarded too, so deletions are itemized by what the inner copier
    // removed (two deliveries of one deletion report each entry once).
    fn remove_each(
        &self,
        dir: &Dir,
        e: &Entry,
        removed: &mut dyn FnMut(&RelPath, Kind),
    ) -> Result<u64, StepError> {
        self.inner.remove_each(dir, e, removed)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = args.as_slice() else {
        eprintln!("usage: custom_copier SRC DST");
        return ExitCode::from(2);
    };
    // Where DST is, or will be made.
    let magic = match fs_magic_or_parent(dst.as_ref()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("custom_copier: statfs {dst}: {e}");
            return ExitCode::from(2);
        }
    };
    let counting = Arc::new(Counting::default());
    let mut b = psync::builder(src, dst);
    // From any file system onto DST's: the counting copier.
    b.register_copier(None, Some(magic), Arc::clone(&counting) as Arc<dyn Copier>);
    println!("target file system: {}", fs_label(magic));
    match b.selection() {
        Ok(s) => println!("chosen copier: {} ({})", s.copier, s.reason),
        Err(e) => eprintln!("custom_copier: {e}"),
    }
    let report = match b.build().and_then(|s| s.run()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("custom_copier: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "copier {} ran: {} files created, {} bytes copied through it",
        report.copier,
        counting.files.load(Ordering::Relaxed),
        counting.bytes.load(Ordering::Relaxed)
    );
    println!(
        "run: {} created, {} updated, {} failed",
        report.stats.created, report.stats.updated, report.stats.failed
    );
    if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
