//! The copier's seams that a file-system backend (the Lustre copier) plugs
//! into: the source directory at `make_dir`, the chunk size of a large
//! file, and xattrs that are one inode's internal bookkeeping, never
//! copied nor removed.

use crate::util::tree::set_xattr;
use crate::util::{TestDir, read};
use psync::Dir;
use psync::{
    Copied, Copier, CopyOptions, DataJob, Entry, FsData, Name, Node, StepError, XattrReport,
};
use psync_generic::GenericCopier;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The generic copier, with a chunk size of its own for large files and a
/// record of the source directories' xattrs it was shown at `make_dir`.
struct Backend {
    inner: GenericCopier,
    chunk: u64,
    seen: Mutex<Vec<Option<Vec<u8>>>>,
    chunks: AtomicU64,
    /// Entries given to `create`/`copy_data` with the data `annotate`
    /// set on them (`fs_data` = "id:" + name), and without.
    tagged: AtomicU64,
    untagged: Mutex<Vec<String>>,
}

impl Backend {
    fn new(chunk: u64) -> Backend {
        Backend {
            inner: GenericCopier::new(),
            chunk,
            seen: Mutex::new(Vec::new()),
            chunks: AtomicU64::new(0),
            tagged: AtomicU64::new(0),
            untagged: Mutex::new(Vec::new()),
        }
    }

    fn check_tag(&self, e: &Entry, step: &str) {
        if e.fs_data.bytes() == tag(&e.name).as_slice() {
            self.tagged.fetch_add(1, Ordering::Relaxed);
        } else {
            let got = String::from_utf8_lossy(e.fs_data.bytes());
            let msg = format!("{step} of {}: fs_data {got:?}", e.name);
            self.untagged.lock().unwrap().push(msg);
        }
    }
}

/// What the test backend keeps with an entry.
fn tag(name: &Name) -> Vec<u8> {
    [b"id:", name.as_bytes()].concat()
}

impl Copier for Backend {
    fn name(&self) -> &str {
        "test-backend"
    }
    fn create(&self, dir: &Dir, tmp: &Name, src: &Entry, f: &File) -> Result<File, StepError> {
        self.check_tag(src, "create");
        self.inner.create(dir, tmp, src, f)
    }
    fn create_unnamed(&self, dir: &Dir, src: &Entry, f: &File) -> Result<Option<File>, StepError> {
        self.check_tag(src, "create_unnamed");
        self.inner.create_unnamed(dir, src, f)
    }
    fn annotate(&self, _dir: &Dir, entries: &mut [Entry]) -> std::io::Result<()> {
        for e in entries {
            e.fs_data = FsData::new(&tag(&e.name)).expect("a short tag");
        }
        Ok(())
    }
    fn try_clone(&self, src: &File, dst: &File, o: &CopyOptions) -> Result<bool, StepError> {
        self.inner.try_clone(src, dst, o)
    }
    fn copy_data(&self, job: &DataJob<'_>, quit: &AtomicBool) -> Result<Copied, StepError> {
        if !job.is_whole_file() {
            self.chunks.fetch_add(1, Ordering::Relaxed);
        }
        self.check_tag(job.entry, "copy_data");
        self.inner.copy_data(job, quit)
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
        self.seen
            .lock()
            .unwrap()
            .push(from.get(b"user.layout").ok().flatten());
        self.inner.make_dir(dir, n, src, from)
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
    fn chunk_size(&self, _src: &Entry, _default: u64) -> u64 {
        self.chunk
    }
}

fn run(t: &TestDir, backend: &Arc<Backend>) -> psync::Report {
    run_on(t, backend, 1)
}

/// [`run`] on `engines` engines of one run (more than one: every task
/// encoded, decoded and run by an engine drawn at random).
fn run_on(t: &TestDir, backend: &Arc<Backend>, engines: usize) -> psync::Report {
    let mut b = psync::builder(t.src(), t.dst());
    if engines > 1 {
        b.scatter(engines, crate::util::run::scatter_seed());
    }
    b.default_copier(Arc::clone(backend) as Arc<dyn Copier>)
        .chunk_size(1 << 20)
        .resume_threshold(0);
    b.build().and_then(|s| s.run()).expect("run")
}

#[test]
fn a_backend_chooses_chunks_and_sees_the_source_directory() {
    let t = TestDir::new("a_backend_chooses_chunks_and_sees_the_source_directory");
    tree!(t.src(), {
        "d/big" => random((5 << 20) + 123),
        "d/small" => file("s"),
    });
    if set_xattr(&t.src().join("d"), "user.layout", b"stripes=4").is_err() {
        skip!("no user xattrs on the test file system");
    }
    // 2 MiB and a bit: rounded down to a multiple of 4 KiB.
    let backend = Arc::new(Backend::new((2 << 20) + 100));
    let report = run(&t, &backend);
    assert!(report.success(), "{report:?}");
    // 5 MiB + 123 in chunks of 2 MiB: 3 chunks, not the run's 6 of 1 MiB.
    assert_eq!(backend.chunks.load(Ordering::Relaxed), 3);
    assert_eq!(report.stats.chunks, 3, "{:?}", report.stats);
    assert_eq!(read(t.dst().join("d/big")), read(t.src().join("d/big")));
    // The target root (made by the run, from the source root, which has
    // no such xattr), then `d`.
    assert_eq!(
        *backend.seen.lock().unwrap(),
        vec![None, Some(b"stripes=4".to_vec())],
        "make_dir was given the source directory"
    );
    assert_synced!(t.src(), t.dst());
}

/// What a backend keeps with a source entry (`Copier::annotate`: a
/// Lustre FID) reaches its copier with the entry in every task, on
/// whichever engine runs it: small files' batches, a large file's setup
/// and each of its chunks.
#[test]
fn a_backend_keeps_data_with_its_entries_across_engines() {
    let t = TestDir::new("a_backend_keeps_data_with_its_entries_across_engines");
    tree!(t.src(), {
        "d/big" => random((5 << 20) + 123),
        "d/e/small" => file("s"),
        "top" => file("t"),
        "d/e/link" => hardlink("top"),
    });
    let backend = Arc::new(Backend::new(1 << 20));
    let report = run_on(&t, &backend, 3);
    assert!(report.success(), "{report:?}");
    assert_synced!(t.src(), t.dst());
    assert_eq!(*backend.untagged.lock().unwrap(), Vec::<String>::new());
    // Two small files, a hard-link group and the large one created, six
    // chunks copied.
    assert_eq!(backend.chunks.load(Ordering::Relaxed), 6);
    assert!(backend.tagged.load(Ordering::Relaxed) >= 4 + 6);
    crate::scatter::assert_linked(&t.dst(), &["top", "d/e/link"]);
}

#[test]
fn internal_xattrs_are_never_copied_nor_removed() {
    let t = TestDir::new("internal_xattrs_are_never_copied_nor_removed");
    if !crate::util::is_root() {
        skip!("trusted.* xattrs need root");
    }
    tree!(t.src(), { "f" => file("data") });
    let (src_f, dst_f) = (t.src().join("f"), t.dst().join("f"));
    if set_xattr(&src_f, "trusted.lma", b"source fid").is_err() {
        skip!("no trusted xattrs on the test file system");
    }
    set_xattr(&src_f, "trusted.other", b"copied").unwrap();
    let backend = Arc::new(Backend::new(1 << 20));
    assert!(run(&t, &backend).success());
    assert_eq!(get(&dst_f, "trusted.lma"), None);
    assert_eq!(
        get(&dst_f, "trusted.other").as_deref(),
        Some(&b"copied"[..])
    );
    // The target's own bookkeeping stays when the source's changes.
    set_xattr(&dst_f, "trusted.lma", b"target fid").unwrap();
    set_xattr(&src_f, "trusted.other", b"again").unwrap();
    assert!(run(&t, &backend).success());
    assert_eq!(
        get(&dst_f, "trusted.lma").as_deref(),
        Some(&b"target fid"[..])
    );
    assert_eq!(get(&dst_f, "trusted.other").as_deref(), Some(&b"again"[..]));
}

/// The value of xattr `name` of `p` (not following a symlink), if any.
fn get(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    crate::util::compare::xattrs_of(p)
        .into_iter()
        .find(|(n, _)| n == name.as_bytes())
        .map(|(_, v)| v)
}
