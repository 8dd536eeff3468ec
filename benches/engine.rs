//! Criterion benchmarks of psync's engine, without the CLI:
//!
//! - `walk_plan`: list every directory of a synced source/target pair
//!   (10,000 files in 100 directories) with `Dir::list` and plan each pair
//!   with the pure planner, serially. Throughput is entries listed (both
//!   sides), so criterion's `thrpt` is the per-entry cost of walk + plan.
//! - `plan`: the planner alone on synthetic listings of 1,000 entries
//!   (no file system): everything new, everything in sync, 10% changed.
//! - `copy_small`: a full sync of 2,000 small files (1–16 KiB) into a fresh
//!   target, with 1, 2 and 4 threads; the previous target is removed in the
//!   (unmeasured) setup.
//! - `noop`: a re-sync of the same tree when the target is already in sync.
//!
//! Fixtures are generated once under `target/bench-tmp/` (deterministic,
//! reused across runs). `PSYNC_BENCH_DIR=/mnt/x` puts them elsewhere: the
//! root file system of the benchmark machines is ext4 without a journal,
//! where creating files right after deleting many is pathologically slow
//! (see benches/README.md), so `copy_small` is best run on a journaled
//! ext4 or a tmpfs.

use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use psync::Dir;
use psync::core::plan::{Action, PlanOptions, plan};
use psync::{Entry, Kind, Name, Time};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shape of a generated fixture tree: `dirs` directories directly under
/// the root, `files` files in each, sizes uniform in `min..=max` bytes.
#[derive(Debug, Clone, Copy)]
struct Shape {
    dirs: usize,
    files: usize,
    min: usize,
    max: usize,
    seed: u64,
}

impl Shape {
    fn total_files(&self) -> usize {
        self.dirs * self.files
    }

    /// A directory name that identifies the shape, so a changed shape
    /// never reuses a stale fixture.
    fn key(&self) -> String {
        format!(
            "{}x{}-{}-{}-s{}",
            self.dirs, self.files, self.min, self.max, self.seed
        )
    }
}

/// 10,000 small files in 100 directories: the walk + plan fixture.
const WALK: Shape = Shape {
    dirs: 100,
    files: 100,
    min: 0,
    max: 1024,
    seed: 1,
};
/// 2,000 files of 1–16 KiB in 20 directories: the copy fixture.
const SMALL: Shape = Shape {
    dirs: 20,
    files: 100,
    min: 1024,
    max: 16 * 1024,
    seed: 2,
};

/// xorshift64*: deterministic sizes and contents without a dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn between(&mut self, min: usize, max: usize) -> usize {
        min + (self.next_u64() % (max - min + 1) as u64) as usize
    }
}

/// Where fixtures live: `$PSYNC_BENCH_DIR`, else `<target dir>/bench-tmp`.
fn bench_root() -> PathBuf {
    if let Some(d) = std::env::var_os("PSYNC_BENCH_DIR") {
        return PathBuf::from(d);
    }
    target_dir().join("bench-tmp")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else three levels above
/// this executable (`target/release/deps/engine-…`).
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
}

/// Returns `<root>/<key>/src`, generating it on first use. A fixture is
/// built under a temporary name and renamed into place, so an interrupted
/// generation is never mistaken for a complete one.
fn fixture(shape: Shape) -> PathBuf {
    let base = bench_root().join(shape.key());
    let src = base.join("src");
    if src.is_dir() {
        return src;
    }
    let tmp = base.join("src.partial");
    let _ = std::fs::remove_dir_all(&tmp);
    generate(&tmp, shape).expect("generate fixture");
    std::fs::rename(&tmp, &src).expect("rename fixture into place");
    src
}

fn generate(root: &Path, shape: Shape) -> std::io::Result<()> {
    let mut rng = Rng(shape.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut buf = vec![0u8; shape.max];
    for d in 0..shape.dirs {
        let dir = root.join(format!("d{d:04}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..shape.files {
            let len = rng.between(shape.min, shape.max);
            buf[..len]
                .iter_mut()
                .for_each(|b| *b = rng.next_u64() as u8);
            std::fs::File::create(dir.join(format!("f{f:05}")))?.write_all(&buf[..len])?;
        }
    }
    Ok(())
}

/// Syncs `src` into `dst` with psync and checks that the run succeeded.
fn sync(src: &Path, dst: &Path, threads: usize) -> psync::Report {
    let report = psync::builder(src, dst)
        .threads(threads)
        .build()
        .expect("build")
        .run()
        .expect("run");
    assert!(
        report.success(),
        "sync {} -> {} failed: {:?}",
        src.display(),
        dst.display(),
        report.stats
    );
    report
}

/// A target next to `src`, synced once (and left in sync afterwards).
fn synced_target(src: &Path, name: &str) -> PathBuf {
    let dst = src.with_file_name(name);
    sync(src, &dst, 2);
    dst
}

/// Lists one directory pair, plans it, and recurses into the directories
/// that exist on both sides. Returns the number of entries listed.
fn walk_plan(src: &Dir, dst: &Dir, opts: &PlanOptions) -> usize {
    let s = src.list().expect("list source").entries;
    let d = dst.list().expect("list target").entries;
    let mut listed = s.len() + d.len();
    for action in plan(&s, &d, opts) {
        if let Action::Descend { src: e, .. } = black_box(action) {
            let sub_src = src.open_dir(&e.name.0).expect("open source dir");
            let sub_dst = dst.open_dir(&e.name.0).expect("open target dir");
            listed += walk_plan(&sub_src, &sub_dst, opts);
        }
    }
    listed
}

fn bench_walk_plan(c: &mut Criterion) {
    let src = fixture(WALK);
    let dst = synced_target(&src, "dst");
    let opts = PlanOptions::default();
    let walk = || {
        let s = Dir::open_root(&src).expect("open source");
        let d = Dir::open_root(&dst).expect("open target");
        walk_plan(&s, &d, &opts)
    };
    let entries = walk();
    let mut g = c.benchmark_group("walk_plan");
    g.throughput(Throughput::Elements(entries as u64));
    g.bench_function(format!("{}_entries", entries), |b| b.iter(walk));
    g.finish();
}

/// A synthetic file entry, as a walker of a real tree would report it.
fn file_entry(i: usize) -> Entry {
    let mut e = Entry::new(Name(format!("file-{i:06}.dat").into_bytes()), Kind::File);
    e.size = 4096 + (i as u64 % 7) * 512;
    (e.mode, e.uid, e.gid) = (0o644, 1000, 1000);
    e.mtime = Time::new(1_700_000_000 + i as i64, 0);
    e.atime = Time::new(1_700_000_000, 0);
    e.ctime = Time::new(1_700_000_000, 0);
    (e.nlink, e.dev, e.ino, e.blocks) = (1, 1, i as u64 + 100, 8);
    e
}

/// 1,000 entries, sorted by name: 950 files, 40 directories, 10 symlinks.
fn listing() -> Vec<Entry> {
    let mut v: Vec<Entry> = (0..1000).map(file_entry).collect();
    for (i, e) in v.iter_mut().enumerate() {
        if i % 25 == 0 {
            e.kind = Kind::Dir;
            e.mode = 0o755;
        } else if i % 100 == 1 {
            e.kind = Kind::Symlink;
            e.link = Some(Name::from("../target"));
        }
    }
    v
}

/// The same listing with every tenth entry's size or mtime changed.
fn changed(src: &[Entry]) -> Vec<Entry> {
    let mut v = src.to_vec();
    for e in v.iter_mut().step_by(10) {
        e.mtime.sec -= 60;
    }
    v
}

fn bench_plan(c: &mut Criterion) {
    let src = listing();
    let cases = [
        ("all_new", Vec::new()),
        ("in_sync", src.clone()),
        ("changed_10pct", changed(&src)),
    ];
    let mut opts = PlanOptions::default();
    opts.delete = true;
    let mut g = c.benchmark_group("plan");
    g.throughput(Throughput::Elements(src.len() as u64));
    for (name, dst) in &cases {
        g.bench_function(format!("{name}_1000"), |b| {
            b.iter(|| plan(black_box(&src), black_box(dst), &opts))
        });
    }
    g.finish();
}

/// Settings for the benchmarks that touch the file system: few, long samples.
fn io_group<'a>(c: &'a mut Criterion, name: &str, files: usize) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(files as u64));
    g
}

fn bench_copy_small(c: &mut Criterion) {
    let src = fixture(SMALL);
    let dst = src.with_file_name("dst-copy");
    let mut g = io_group(c, "copy_small", SMALL.total_files());
    for threads in [1, 2, 4] {
        g.bench_function(
            format!("{}_files_{threads}_threads", SMALL.total_files()),
            |b| {
                b.iter_batched(
                    || remove_target(&dst),
                    |()| sync(&src, &dst, threads),
                    BatchSize::PerIteration,
                )
            },
        );
    }
    g.finish();
    remove_target(&dst);
}

/// Removes a target and flushes, so one iteration's deletions and dirty
/// pages are not paid for by the next one's measurement.
fn remove_target(dst: &Path) {
    match std::fs::remove_dir_all(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("remove {}: {e}", dst.display()),
    }
    rustix::fs::sync();
}

fn bench_noop(c: &mut Criterion) {
    let src = fixture(SMALL);
    let dst = synced_target(&src, "dst-noop");
    let mut g = io_group(c, "noop", SMALL.total_files());
    for threads in [1, 2, 4] {
        g.bench_function(
            format!("{}_files_{threads}_threads", SMALL.total_files()),
            |b| {
                b.iter(|| {
                    let r = sync(&src, &dst, threads);
                    assert_eq!(
                        r.stats.created + r.stats.updated + r.stats.attrs_updated,
                        0,
                        "not a no-op: {:?}",
                        r.stats
                    );
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_plan, bench_walk_plan, bench_copy_small, bench_noop
}
criterion_main!(benches);
