//! The Lustre copier in real syncs: on tmpfs, with the Lustre calls made
//! to the test double (`psync_lustre::double::FakeLustre`) and the copier
//! registered for tmpfs's magic; and on a real Lustre when
//! `PSYNC_LUSTRE_DIR` names a directory on one.

use crate::util::mounts::TestMount;
use crate::util::run::{Config, Front};
use crate::util::tree::random_bytes;
use crate::util::{TestDir, in_ci, read};
use psync::{
    Copied, Copier, CopyOptions, DataJob, Dir, Engine, EngineContext, Entry, Event, Kind, Local,
    Name, Node, Registry, RunSpec, StepError, Task, XattrReport, XattrSync,
};
use psync_lustre::double::layouts::{dom, instantiated, pfl3, plain, released};
use psync_lustre::double::{Call, FakeLustre};
use psync_lustre::{Layout, LustreCopier, LustreOptions, LustreSys};
use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// `statfs` magic of tmpfs.
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// A tmpfs for one test, holding `src` and `dst`.
struct Scene {
    _mount: TestMount,
    t: TestDir,
    fake: Arc<FakeLustre>,
}

impl Scene {
    fn new(test: &str) -> Option<Scene> {
        let t = TestDir::new(test);
        let mnt = t.join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir mount point");
        let mount = match TestMount::tmpfs(&mnt, "256m") {
            Ok(m) => m,
            Err(why) => {
                assert!(!in_ci(), "{test}: CI=true but no tmpfs: {why}");
                eprintln!("SKIPPED {test}: no tmpfs: {why}");
                return None;
            }
        };
        std::fs::create_dir(mnt.join("src")).expect("mkdir src");
        Some(Scene {
            _mount: mount,
            t,
            fake: Arc::new(FakeLustre::new()),
        })
    }

    fn src(&self) -> PathBuf {
        self.t.join("mnt/src")
    }

    fn dst(&self) -> PathBuf {
        self.t.join("mnt/dst")
    }

    fn copier(&self, opts: LustreOptions) -> Arc<dyn Copier> {
        let sys = Arc::clone(&self.fake) as Arc<dyn LustreSys>;
        Arc::new(LustreCopier::with_sys(sys, opts))
    }

    /// A file of `data` in the source, given `layout`.
    fn file(&self, rel: &str, data: &[u8], layout: Option<&Layout>) {
        let p = self.src().join(rel);
        std::fs::write(&p, data).expect("write source");
        if let Some(l) = layout {
            self.fake.put(&p, l).expect("set source layout");
        }
    }

    /// Syncs with `--delete` in `cfg`, the Lustre copier (`opts`) for
    /// tmpfs on both sides: the events and the report.
    fn sync(&self, cfg: Config, opts: LustreOptions) -> (Vec<Event>, psync::Report) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut b = psync::builder(self.src(), self.dst());
        cfg.apply(&mut b);
        b.register_copier(Some(TMPFS_MAGIC), Some(TMPFS_MAGIC), self.copier(opts))
            .delete(true)
            .chunk_size(4 << 20)
            .itemize(true)
            .events(tx);
        let report = b.build().and_then(|s| s.run()).expect("run");
        drop(b);
        (rx.iter().collect(), report)
    }

    fn layout(&self, rel: &str) -> Option<Layout> {
        self.fake
            .layout_at(&self.dst().join(rel))
            .expect("target layout")
    }
}

fn warnings(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Warning { path, message, .. } => Some((path.to_string(), message.clone())),
            _ => None,
        })
        .collect()
}

fn skipped(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Skipped { path, reason } => Some((path.to_string(), reason.clone())),
            _ => None,
        })
        .collect()
}

/// The tree of [`layouts_are_copied_and_released_files_skipped`]: the
/// big file's stripes are 3 MiB.
fn build_tree(s: &Scene) {
    s.file(
        "v1",
        b"plain v1",
        Some(&instantiated(&plain(2, 1 << 20, None), 4)),
    );
    s.file(
        "pool",
        b"in a pool",
        Some(&plain(4, 1 << 20, Some("flash"))),
    );
    s.file(
        "pfl",
        &random_bytes(1, 300_000),
        Some(&instantiated(&pfl3(), 2)),
    );
    s.file("dom", b"small, on the MDT", Some(&dom()));
    s.file(
        "released",
        b"stub",
        Some(&released(&plain(2, 1 << 20, None))),
    );
    s.file("none", b"no layout", None);
    s.file(
        "big",
        &random_bytes(2, (10 << 20) + 123),
        Some(&plain(4, 3 << 20, None)),
    );
    let sub = s.src().join("sub");
    std::fs::create_dir(&sub).unwrap();
    s.fake.put(&sub, &pfl3()).unwrap();
    s.file("sub/inner", b"inner", Some(&plain(1, 1 << 20, None)));
    std::fs::create_dir(s.src().join("nodefault")).unwrap();
}

/// The library's configurations (the CLI cannot be given the double):
/// one thread, several, several engines with every task encoded.
const CONFIGS: [Config; 3] = [
    Config {
        front: Front::Lib,
        threads: 1,
    },
    Config {
        front: Front::Lib,
        threads: 4,
    },
    Config {
        front: Front::Scatter,
        threads: 4,
    },
];

#[test]
fn layouts_are_copied_and_released_files_skipped() {
    let only = std::env::var("PSYNC_TEST_FRONTS").unwrap_or_default();
    for cfg in CONFIGS.into_iter().filter(|c| c.selected(&only)) {
        eprintln!("=== layouts_are_copied_and_released_files_skipped [{cfg}]");
        let Some(s) = Scene::new(&format!("layouts_are_copied_{cfg}")) else {
            return;
        };
        build_tree(&s);
        // The released file's target from an earlier copy: kept as it is.
        std::fs::create_dir(s.dst()).unwrap();
        std::fs::write(s.dst().join("released"), b"the old copy").unwrap();
        let (events, report) = s.sync(cfg, LustreOptions::default());
        assert!(report.success(), "{report:?}: {events:?}");
        assert_eq!(report.copier, "lustre");
        assert_eq!(warnings(&events), [], "no layout refused");
        let skips = skipped(&events);
        assert_eq!(skips.len(), 1, "{skips:?}");
        assert_eq!(skips[0].0, "released");
        assert!(skips[0].1.contains("released to HSM"), "{skips:?}");
        assert_eq!(report.stats.skipped_by_copier, 1);
        assert_eq!(
            read(s.dst().join("released")),
            b"the old copy",
            "never deleted nor replaced"
        );
        for (rel, layout) in [
            ("v1", instantiated(&plain(2, 1 << 20, None), 4)),
            ("pool", plain(4, 1 << 20, Some("flash"))),
            ("pfl", instantiated(&pfl3(), 2)),
            ("dom", dom()),
            ("big", plain(4, 3 << 20, None)),
            ("sub/inner", plain(1, 1 << 20, None)),
            ("sub", pfl3()),
        ] {
            assert_eq!(s.layout(rel), Some(layout.for_target(false)), "{rel}");
        }
        assert_eq!(s.layout("none"), None);
        assert_eq!(s.layout("nodefault"), None);
        for rel in ["v1", "pool", "pfl", "dom", "big", "none", "sub/inner"] {
            assert_eq!(read(s.dst().join(rel)), read(s.src().join(rel)), "{rel}");
        }
        // 10 MiB and a bit in chunks of 3 MiB stripes (not 4 MiB): 4.
        assert_eq!(report.stats.chunks, 4, "{:?}", report.stats);
        // Again: nothing to do, nothing asked of Lustre but listings.
        s.fake.clear_calls();
        let (events, again) = s.sync(cfg, LustreOptions::default());
        assert!(again.success(), "{again:?}");
        let st = again.stats;
        assert_eq!(
            (st.created, st.updated, st.attrs_updated, st.deleted),
            (0, 0, 0, 0),
            "{st:?}"
        );
        assert_eq!(st.skipped_by_copier, 1);
        assert_eq!(warnings(&events), []);
        let writes: Vec<Call> = s
            .fake
            .calls()
            .into_iter()
            .filter(|c| !matches!(c, Call::EntryInfo(_)))
            .collect();
        assert_eq!(writes, [], "a second run touches no layout");
        assert_eq!(read(s.dst().join("released")), b"the old copy");
    }
}

#[test]
fn released_files_are_copied_with_hsm_restore_and_refusals_name_the_file() {
    let Some(s) = Scene::new("released_files_are_copied_with_hsm_restore") else {
        return;
    };
    s.file(
        "released",
        b"restored data",
        Some(&released(&plain(2, 1 << 20, None))),
    );
    s.file("pooled", b"x", Some(&plain(2, 1 << 20, Some("flash"))));
    s.fake.missing_pool("flash");
    let mut opts = LustreOptions::default();
    opts.hsm_restore = true;
    let cfg = Config {
        front: Front::Lib,
        threads: 2,
    };
    let (events, report) = s.sync(cfg, opts);
    assert!(report.success(), "{report:?}");
    assert_eq!(report.stats.skipped_by_copier, 0);
    assert_eq!(read(s.dst().join("released")), b"restored data");
    let got = s.layout("released").expect("a layout");
    assert!(!got.is_released());
    assert_eq!(got, plain(2, 1 << 20, None));
    let w = warnings(&events);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "pooled");
    assert!(
        w[0].1.contains("pooled") && w[0].1.contains("\"flash\" refused"),
        "{w:?}"
    );
    assert_eq!(s.layout("pooled"), Some(plain(2, 1 << 20, None)));
}

/// A target root the run makes gets the source root's default layout, as
/// any directory the run makes does; one that exists keeps its own.
#[test]
fn a_target_root_the_run_makes_gets_the_source_root_s_default_layout() {
    let Some(s) = Scene::new("a_target_root_the_run_makes_gets_a_layout") else {
        return;
    };
    s.fake.put(&s.src(), &pfl3()).unwrap();
    s.file("f", b"data", None);
    let cfg = Config {
        front: Front::Lib,
        threads: 2,
    };
    let (events, report) = s.sync(cfg, LustreOptions::default());
    assert!(report.success(), "{report:?}");
    assert_eq!(warnings(&events), []);
    let got = s.fake.layout_at(&s.dst()).expect("root layout");
    assert_eq!(got, Some(pfl3()), "the source root's default layout");
    // An existing root is not given one.
    let other = s.t.join("mnt/other");
    std::fs::create_dir(&other).unwrap();
    let (tx, _rx) = crossbeam_channel::unbounded();
    let mut b = psync::builder(s.src(), &other);
    b.register_copier(
        Some(TMPFS_MAGIC),
        Some(TMPFS_MAGIC),
        s.copier(LustreOptions::default()),
    )
    .events(tx);
    let report = b.build().and_then(|x| x.run()).expect("run");
    assert!(report.success(), "{report:?}");
    assert_eq!(s.fake.layout_at(&other).expect("read"), None);
}

/// From Lustre to another file system (`LustreCopier::source_only`,
/// registered for the source's magic only): no layout is set anywhere,
/// but a released file is still skipped (reading it would restore it
/// from the archive) and a striped file still goes in chunks of whole
/// stripes.
#[test]
fn from_lustre_to_another_file_system_no_layouts_but_released_files_skipped() {
    let Some(s) = Scene::new("from_lustre_to_another_file_system") else {
        return;
    };
    s.file("v1", b"plain v1", Some(&plain(2, 1 << 20, Some("flash"))));
    s.file("pfl", b"composite", Some(&pfl3()));
    s.file(
        "released",
        b"in the archive",
        Some(&released(&plain(1, 1 << 20, None))),
    );
    let big = random_bytes(7, 10 << 20);
    s.file("big", &big, Some(&plain(4, 3 << 20, None)));
    std::fs::create_dir(s.src().join("d")).unwrap();
    s.fake.put(&s.src().join("d"), &pfl3()).unwrap();
    s.file("d/f", b"in d", None);

    let (tx, rx) = crossbeam_channel::unbounded();
    let mut b = psync::builder(s.src(), s.dst());
    let sys = Arc::clone(&s.fake) as Arc<dyn LustreSys>;
    let copier = LustreCopier::with_sys(sys, LustreOptions::default()).source_only();
    b.register_copier(Some(TMPFS_MAGIC), None, Arc::new(copier))
        .delete(true)
        .chunk_size(4 << 20)
        .events(tx);
    let report = b.build().and_then(|x| x.run()).expect("run");
    drop(b);
    let events: Vec<Event> = rx.iter().collect();
    assert!(report.success(), "{report:?}");
    assert_eq!(report.copier, psync_lustre::SOURCE_NAME);
    assert_eq!(skipped(&events).len(), 1, "{:?}", skipped(&events));
    assert_eq!(skipped(&events)[0].0, "released");
    assert_eq!(report.stats.skipped_by_copier, 1);
    assert!(!s.dst().join("released").exists());
    assert_eq!(warnings(&events), [], "no warning per file");
    // 10 MiB in chunks of one 3 MiB stripe (not 4 MiB): 4 chunks.
    assert_eq!(report.stats.chunks, 4, "{:?}", report.stats);
    assert_eq!(read(s.dst().join("big")), big);
    assert_eq!(read(s.dst().join("d/f")), b"in d");
    let made = s
        .fake
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::SetLayout { .. } | Call::CreateDelayed(_)));
    assert_eq!(made.count(), 0, "no layout set on the target");
    for f in ["v1", "pfl", "big", "d"] {
        assert_eq!(s.layout(f), None, "{f}: no layout");
    }
}

/// The copier's options reach an engine built from the run's spec by a
/// process whose copier has none (a broker's worker).
#[test]
fn options_travel_in_the_spec_to_other_engines() {
    let Some(s) = Scene::new("options_travel_in_the_spec") else {
        return;
    };
    s.file("f", b"data", Some(&pfl3()));
    let mut opts = LustreOptions::default();
    opts.layout = "count=3,size=2M".parse().unwrap();
    let mut b = psync::builder(s.src(), s.dst());
    b.register_copier(Some(TMPFS_MAGIC), Some(TMPFS_MAGIC), s.copier(opts));
    let (spec, seed) = b.build().and_then(|x| x.prepare()).expect("prepare");
    assert!(!spec.copier_options.is_empty());
    let (spec, seed) = (spec.encode().unwrap(), seed.encode().unwrap());
    let mut copiers = Registry::new();
    copiers.set_default(Arc::new(psync::GenericCopier::new()));
    copiers.register(
        Some(TMPFS_MAGIC),
        Some(TMPFS_MAGIC),
        s.copier(LustreOptions::default()),
    );
    let spec = RunSpec::decode(&spec).unwrap();
    let engine = Engine::from_spec(&spec, EngineContext::new(copiers)).expect("engine");
    let report = engine
        .run_all(Task::decode(&seed).unwrap(), &Local::new(2))
        .expect("run");
    assert!(report.success(), "{report:?}");
    assert_eq!(
        s.layout("f"),
        Some(plain(3, 2 << 20, None)),
        "the imposed layout"
    );
}

// ----- identity from FIDs -------------------------------------------------

/// The Lustre copier (on the double) with two watches: once a chunk of
/// `big` other than its first is copied, the run's quit flag is set (a
/// run stopped mid-file, whose part and journal the next run resumes);
/// and whenever a directory's attributes are set, the names in the run's
/// hard-link area are noted (in the last phase that follows a
/// directory's links, so the group's key is there then).
struct Watched {
    inner: Arc<dyn Copier>,
    dst: PathBuf,
    quit: OnceLock<Arc<AtomicBool>>,
    stop_mid_file: bool,
    seen: Mutex<BTreeSet<String>>,
}

impl Watched {
    /// The names in the buckets (two hex digits) of every link area.
    fn note_link_area(&self) {
        let Ok(root) = std::fs::read_dir(&self.dst) else {
            return;
        };
        let mut seen = self.seen.lock().unwrap();
        for area in root.flatten() {
            if !area.file_name().as_bytes().ends_with(b".links") {
                continue;
            }
            for bucket in std::fs::read_dir(area.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let b = bucket.file_name();
                if b.len() != 2 || !b.as_bytes().iter().all(u8::is_ascii_hexdigit) {
                    continue;
                }
                for e in std::fs::read_dir(bucket.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    seen.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
}

impl Copier for Watched {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn create(&self, dir: &Dir, tmp: &Name, src: &Entry, f: &File) -> Result<File, StepError> {
        self.inner.create(dir, tmp, src, f)
    }
    fn create_unnamed(&self, dir: &Dir, src: &Entry, f: &File) -> Result<Option<File>, StepError> {
        self.inner.create_unnamed(dir, src, f)
    }
    fn try_clone(&self, s: &File, d: &File, o: &CopyOptions) -> Result<bool, StepError> {
        self.inner.try_clone(s, d, o)
    }
    fn copy_data(&self, job: &DataJob<'_>, quit: &AtomicBool) -> Result<Copied, StepError> {
        let copied = self.inner.copy_data(job, quit);
        if self.stop_mid_file
            && job.entry.name.as_bytes() == b"big"
            && job.offset > 0
            && let Some(q) = self.quit.get()
        {
            q.store(true, Ordering::SeqCst);
        }
        copied
    }
    fn set_attrs(
        &self,
        t: Node<'_>,
        src: &Entry,
        from: Option<Node<'_>>,
        o: &CopyOptions,
    ) -> Result<XattrReport, StepError> {
        if src.kind == Kind::Dir {
            self.note_link_area();
        }
        self.inner.set_attrs(t, src, from, o)
    }
    fn make_dir(&self, dir: &Dir, n: &Name, src: &Entry, from: Node<'_>) -> Result<(), StepError> {
        self.inner.make_dir(dir, n, src, from)
    }
    fn sync_xattrs(&self, from: Node<'_>, t: Node<'_>, how: XattrSync) -> io::Result<XattrReport> {
        self.inner.sync_xattrs(from, t, how)
    }
    fn set_mode(&self, t: Node<'_>, mode: u32) -> Result<(), StepError> {
        self.inner.set_mode(t, mode)
    }
    fn annotate(&self, dir: &Dir, entries: &mut [Entry]) -> io::Result<()> {
        self.inner.annotate(dir, entries)
    }
    fn chunk_size(&self, src: &Entry, default: u64) -> u64 {
        self.inner.chunk_size(src, default)
    }
    fn skip(&self, src: &Entry) -> Option<String> {
        self.inner.skip(src)
    }
    fn file_id(&self, src: &Entry) -> Option<u128> {
        self.inner.file_id(src)
    }
    fn options(&self) -> String {
        self.inner.options()
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
}

/// The FID packed as the copier gives it to the engine: sequence,
/// object id, version.
fn packed(f: psync_lustre::Fid) -> u128 {
    u128::from(f.seq) << 64 | u128::from(f.oid) << 32 | u128::from(f.ver)
}

/// The run's id of the file system of the source root (ADR 014:
/// `fsid::Basis::SrcRoot`), which a source file's key carries with its FID.
fn src_root_fs_id() -> u64 {
    use std::hash::Hasher as _;
    let mut h = twox_hash::XxHash3_64::new();
    h.write(b"psync file system src-root");
    for _ in 0..3 {
        h.write(&0u64.to_le_bytes());
    }
    h.finish()
}

/// The part key of a file of FID `fid` on the source root's file system
/// as it is now (`ident::part_key`): XXH3-64 of a domain byte, the file
/// system's id, the FID, size and mtime.
fn fid_part_key(fid: u128, m: &std::fs::Metadata) -> u64 {
    use std::hash::Hasher as _;
    let mut h = twox_hash::XxHash3_64::new();
    h.write(&[0x46]);
    h.write(&src_root_fs_id().to_le_bytes());
    h.write(&fid.to_le_bytes());
    for v in [m.size(), m.mtime() as u64, m.mtime_nsec() as u64] {
        h.write(&v.to_le_bytes());
    }
    h.finish()
}

/// Part files and journals in `dir`.
fn parts_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".psync-part."))
        .collect()
}

/// Syncs as [`Scene::sync`] does, through `copier` ([`Watched`]), with
/// resumable parts from 1 MiB.
fn sync_watched(s: &Scene, cfg: Config, w: &Arc<Watched>) -> psync::Report {
    let mut b = psync::builder(s.src(), s.dst());
    cfg.apply(&mut b);
    b.register_copier(Some(TMPFS_MAGIC), Some(TMPFS_MAGIC), w.clone())
        .delete(true)
        .chunk_size(4 << 20)
        .resume_threshold(1 << 20)
        .itemize(true);
    let sync = b.build().expect("build");
    let _ = w.quit.set(sync.quit_flag());
    sync.run().expect("run")
}

/// Hard-link groups and large files' parts are named from FIDs, not
/// inodes: the double numbers FIDs apart from inodes, and the link
/// area's keys and the part and journal of a run stopped mid-file carry
/// the FID; the next run resumes that part (whichever engine finds it)
/// and links the group across directories; a third changes nothing.
#[test]
fn links_and_parts_are_named_by_fid() {
    let only = std::env::var("PSYNC_TEST_FRONTS").unwrap_or_default();
    for cfg in CONFIGS.into_iter().filter(|c| c.selected(&only)) {
        eprintln!("=== links_and_parts_are_named_by_fid [{cfg}]");
        let Some(s) = Scene::new(&format!("named_by_fid_{cfg}")) else {
            return;
        };
        for d in ["a", "b", "c"] {
            std::fs::create_dir(s.src().join(d)).unwrap();
        }
        s.file("a/h", b"one inode, three names", None);
        std::fs::hard_link(s.src().join("a/h"), s.src().join("b/h")).unwrap();
        std::fs::hard_link(s.src().join("a/h"), s.src().join("c/h2")).unwrap();
        s.file("c/other", b"another file", None);
        // 1 MiB stripes: chunks of 4 MiB, six of them.
        s.file(
            "big",
            &random_bytes(7, (20 << 20) + 5),
            Some(&plain(2, 1 << 20, None)),
        );
        let watched = |stop_mid_file| {
            Arc::new(Watched {
                inner: s.copier(LustreOptions::default()),
                dst: s.dst(),
                quit: OnceLock::new(),
                stop_mid_file,
                seen: Mutex::default(),
            })
        };
        // Stopped mid-file: the part and journal stay, named from the FID.
        let report = sync_watched(&s, cfg, &watched(true));
        assert!(report.interrupted, "{report:?}");
        let big = std::fs::metadata(s.src().join("big")).unwrap();
        let fid = packed(s.fake.fid_at(&s.src().join("big")).unwrap());
        assert_ne!(fid as u64 >> 32, big.ino(), "a FID not made from the inode");
        let key = fid_part_key(fid, &big);
        let want: BTreeSet<String> = [
            format!(".psync-part.{key:016x}"),
            format!(".psync-part.{key:016x}.journal"),
        ]
        .into();
        assert_eq!(parts_in(&s.dst()), want, "the FID's part and journal");
        // Resumed, and the group linked, its key the FID's.
        let w = watched(false);
        let report = sync_watched(&s, cfg, &w);
        assert!(report.success(), "{report:?}");
        assert!(report.stats.chunks_resumed >= 1, "{:?}", report.stats);
        assert_eq!(parts_in(&s.dst()), BTreeSet::new());
        let group = packed(s.fake.fid_at(&s.src().join("a/h")).unwrap());
        let seen = w.seen.lock().unwrap().clone();
        let key = format!("f{:016x}{group:032x}", src_root_fs_id());
        assert!(seen.contains(&key), "{seen:?}");
        assert!(
            !seen.iter().any(|n| n.contains('-')),
            "no key from a device and inode: {seen:?}"
        );
        for rel in ["a/h", "b/h", "c/h2", "c/other", "big"] {
            assert_eq!(read(s.dst().join(rel)), read(s.src().join(rel)), "{rel}");
        }
        let ino = |rel: &str| std::fs::metadata(s.dst().join(rel)).unwrap().ino();
        assert_eq!(ino("a/h"), ino("b/h"));
        assert_eq!(ino("a/h"), ino("c/h2"));
        assert_ne!(ino("a/h"), ino("c/other"));
        assert_eq!(s.layout("big"), Some(plain(2, 1 << 20, None)));
        // Nothing left to do.
        let report = sync_watched(&s, cfg, &watched(false));
        assert!(report.success(), "{report:?}");
        let st = report.stats;
        assert_eq!(
            (
                st.created,
                st.updated,
                st.attrs_updated,
                st.deleted,
                st.chunks
            ),
            (0, 0, 0, 0, 0),
            "{st:?}"
        );
    }
}

// ----- a real Lustre ------------------------------------------------------

/// `lfs` with `args`, its stdout.
fn lfs(args: &[&str]) -> String {
    let out = Command::new("lfs")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("lfs {args:?}: {e}"));
    assert!(
        out.status.success(),
        "lfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What of `lfs getstripe -y` a copy must have as its source has it:
/// patterns, counts, sizes, pools, extents; not OSTs, objects, ids.
fn striping(path: &Path) -> Vec<String> {
    const KEPT: [&str; 8] = [
        "lcm_entry_count",
        "lcme_extent.e_start",
        "lcme_extent.e_end",
        "lmm_stripe_count",
        "lmm_stripe_size",
        "lmm_pattern",
        "lmm_pool",
        "lcm_mirror_count",
    ];
    lfs(&["getstripe", "-y", &path.to_string_lossy()])
        .lines()
        .map(str::trim)
        .filter(|l| KEPT.iter().any(|k| l.starts_with(k)))
        .map(str::to_string)
        .collect()
}

/// On a real Lustre (`PSYNC_LUSTRE_DIR`, a directory there psync may
/// write in; `PSYNC_LUSTRE_POOL`, an OST pool of it, for the pool
/// layout): files of v1, pool, PFL and DoM layouts and a directory with a
/// default PFL layout, synced by the `psync` binary, have the striping
/// `lfs getstripe` shows for their sources. Without `PSYNC_LUSTRE_DIR` it
/// says so and returns (CI has no Lustre).
#[test]
fn on_a_real_lustre_layouts_are_copied() {
    let Some(base) = std::env::var_os("PSYNC_LUSTRE_DIR") else {
        eprintln!("SKIPPED on_a_real_lustre_layouts_are_copied: PSYNC_LUSTRE_DIR is not set");
        return;
    };
    let root = PathBuf::from(base).join(format!("psync-test-{}", std::process::id()));
    let (src, dst) = (root.join("src"), root.join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let p = |n: &str| src.join(n).to_string_lossy().into_owned();
    let mut names = vec!["v1", "pfl", "dom"];
    lfs(&["setstripe", "-c", "2", "-S", "1M", &p("v1")]);
    lfs(&[
        "setstripe",
        "-E",
        "4M",
        "-c",
        "1",
        "-S",
        "1M",
        "-E",
        "64M",
        "-c",
        "2",
        "-E",
        "-1",
        "-c",
        "-1",
        "-S",
        "4M",
        &p("pfl"),
    ]);
    lfs(&[
        "setstripe",
        "-E",
        "1M",
        "-L",
        "mdt",
        "-E",
        "-1",
        "-c",
        "2",
        &p("dom"),
    ]);
    if let Ok(pool) = std::env::var("PSYNC_LUSTRE_POOL") {
        lfs(&["setstripe", "-c", "1", "-p", &pool, &p("pool")]);
        names.push("pool");
    } else {
        eprintln!("on_a_real_lustre_layouts_are_copied: PSYNC_LUSTRE_POOL unset, no pool layout");
    }
    std::fs::create_dir(src.join("dir")).unwrap();
    lfs(&[
        "setstripe",
        "-E",
        "8M",
        "-c",
        "1",
        "-E",
        "-1",
        "-c",
        "2",
        &p("dir"),
    ]);
    for (i, n) in names.iter().enumerate() {
        let data = random_bytes(i as u64, 5 << 20);
        std::fs::OpenOptions::new()
            .write(true)
            .open(src.join(n))
            .and_then(|mut f| std::io::Write::write_all(&mut f, &data))
            .unwrap();
    }
    std::fs::write(src.join("dir/inner"), b"inherits").unwrap();
    let out = crate::util::run::run_cli(&["--json"], &src, &dst);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("\"warning\""), "{stdout}");
    for n in names.iter().chain(&["dir", "dir/inner"]) {
        assert_eq!(striping(&dst.join(n)), striping(&src.join(n)), "{n}");
        if *n != "dir" {
            assert_eq!(read(dst.join(n)), read(src.join(n)), "{n}");
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
