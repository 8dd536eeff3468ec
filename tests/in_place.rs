//! ADR 024: on a file system that keeps data only in memory (tmpfs), a new
//! file in a directory this run created (still `0700`, no other entries)
//! is created at its own name with `O_EXCL` and filled there, its times
//! set last. What may not change: a failed or changed copy leaves nothing
//! at its name (and keeps what another delivery put there), an existing
//! directory still gets unnamed files linked in, and after a kill every
//! file under a final name is either the source's whole or visibly not a
//! finished copy (its size or time differ, so the next run replaces it).

use crate::util::compare::listing;
use crate::util::in_ci;
use crate::util::mounts::TestMount;
use crate::util::run::{cli_available, psync_cmd, wait_at_most};
use crate::util::tree::{Node, build, random, random_bytes, set_mtime};
use crate::util::{TestDir, assert_no_temps, bpath, read, rsync_oracle};
use psync::{
    Copied, Copier, CopyOptions, DataJob, Dir, Entry, Event, GenericCopier, Name, Node as At, Op,
    StepError, XattrReport,
};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// A tmpfs of `size` at `t/mnt`, or `None` (printed) where mounting is
/// not possible here (a failure under `CI=true`).
fn tmpfs(t: &TestDir, test: &str, size: &str) -> Option<TestMount> {
    let mnt = t.join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mount point");
    match TestMount::tmpfs(&mnt, size) {
        Ok(m) => Some(m),
        Err(why) => {
            assert!(!in_ci(), "{test}: CI=true but: {why}");
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

type Hook = dyn Fn(&DataJob<'_>) -> Result<(), StepError> + Send + Sync;

/// The generic copier, counting how targets were made, with a hook after
/// each data copy that may fail it.
struct Counted {
    inner: GenericCopier,
    in_place: AtomicU64,
    unnamed: AtomicU64,
    /// The names whose times were set.
    timed: std::sync::Mutex<Vec<Vec<u8>>>,
    after: Box<Hook>,
}

impl Counted {
    fn new(
        after: impl Fn(&DataJob<'_>) -> Result<(), StepError> + Send + Sync + 'static,
    ) -> Arc<Counted> {
        Arc::new(Counted {
            inner: GenericCopier::new(),
            in_place: AtomicU64::new(0),
            unnamed: AtomicU64::new(0),
            timed: std::sync::Mutex::default(),
            after: Box::new(after),
        })
    }
    fn plain() -> Arc<Counted> {
        Counted::new(|_| Ok(()))
    }
    fn counts(&self) -> (u64, u64) {
        (
            self.in_place.swap(0, Ordering::SeqCst),
            self.unnamed.swap(0, Ordering::SeqCst),
        )
    }
}

impl Copier for Counted {
    fn name(&self) -> &str {
        "counted"
    }
    fn create(&self, dir: &Dir, tmp: &Name, src: &Entry, f: &File) -> Result<File, StepError> {
        self.inner.create(dir, tmp, src, f)
    }
    fn create_unnamed(&self, dir: &Dir, src: &Entry, f: &File) -> Result<Option<File>, StepError> {
        let made = self.inner.create_unnamed(dir, src, f)?;
        if made.is_some() {
            self.unnamed.fetch_add(1, Ordering::SeqCst);
        }
        Ok(made)
    }
    fn create_in_place(&self, dir: &Dir, src: &Entry, f: &File) -> Result<Option<File>, StepError> {
        let made = self.inner.create_in_place(dir, src, f)?;
        if made.is_some() {
            self.in_place.fetch_add(1, Ordering::SeqCst);
        }
        Ok(made)
    }
    fn copy_data(&self, job: &DataJob<'_>, quit: &AtomicBool) -> Result<Copied, StepError> {
        let copied = self.inner.copy_data(job, quit)?;
        (self.after)(job)?;
        Ok(copied)
    }
    fn set_attrs(
        &self,
        t: At<'_>,
        src: &Entry,
        from: Option<At<'_>>,
        o: &CopyOptions,
    ) -> Result<XattrReport, StepError> {
        if o.preserve.times {
            let mut timed = self.timed.lock().expect("lock");
            timed.push(src.name.as_bytes().to_vec());
        }
        self.inner.set_attrs(t, src, from, o)
    }
    fn make_dir(&self, dir: &Dir, n: &Name, src: &Entry, from: At<'_>) -> Result<(), StepError> {
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
}

/// A library run's error messages and counters.
struct Run {
    ok: bool,
    errors: Vec<String>,
    stats: serde_json::Value,
}

impl Run {
    fn stat(&self, name: &str) -> u64 {
        self.stats[name].as_u64().expect(name)
    }
}

fn run(src: &Path, dst: &Path, copier: &Arc<Counted>, retries: u32, threads: usize) -> Run {
    let (tx, rx) = psync::events(1 << 16);
    let mut b = psync::builder(src, dst);
    b.threads(threads)
        .retries(retries)
        .events(tx)
        .default_copier(Arc::clone(copier) as Arc<dyn Copier>);
    let collect = std::thread::spawn(move || {
        rx.iter()
            .filter_map(|e| match e {
                Event::Error { message, .. } => Some(message),
                _ => None,
            })
            .collect::<Vec<_>>()
    });
    let report = b
        .build()
        .and_then(|s| s.run())
        .expect("the run starts and ends");
    drop(b); // the last sender: the collector's channel ends
    let errors = collect.join().expect("event collector");
    Run {
        ok: report.success(),
        errors,
        stats: serde_json::to_value(report.stats).expect("stats"),
    }
}

/// Gives every file under `root` an old modification time: a source
/// written less than a clock tick before the run is never written in
/// place (a copy cut short could carry the same time).
fn age(root: &Path) {
    for (i, (rel, m)) in listing(root).into_iter().enumerate() {
        if m.kind == 'f' {
            set_mtime(&root.join(bpath(&rel)), 1_600_000_000 + i as i64, 0);
        }
    }
}

fn job_is(job: &DataJob<'_>, name: &str) -> bool {
    job.entry.name.as_bytes() == name.as_bytes()
}

fn eio() -> StepError {
    StepError::new(Op::Write, std::io::Error::from(rustix::io::Errno::IO))
}

/// Only a new file in a directory this run made on tmpfs is written in
/// place: new files in an existing directory are still made unnamed and
/// linked, and nothing is written in place on a disk file system.
#[test]
fn only_new_files_in_new_directories_on_tmpfs_are_written_in_place() {
    let test = "only_new_files_in_new_directories_on_tmpfs_are_written_in_place";
    let t = TestDir::new(test);
    let Some(_m) = tmpfs(&t, test, "64m") else {
        return;
    };
    let dst = t.join("mnt/dst");
    let mut nodes = Vec::new();
    for i in 0..40u64 {
        nodes.push(Node::at(format!("a/f{i:02}"), random(i * 1000)));
    }
    nodes.push(Node::at("b/c/big", random(3 * MIB + 1)));
    nodes.push(Node::at("b/c/empty", crate::util::tree::file("")));
    nodes.push(Node::at("top", random(10)).mode(0o640));
    build(&t.src(), nodes);
    age(&t.src());
    let c = Counted::plain();
    for threads in [1, 4] {
        crate::util::remove_tree(&dst);
        let out = run(&t.src(), &dst, &c, 2, threads);
        assert!(out.ok, "{:?}", out.errors);
        assert_eq!(
            c.counts(),
            (43, 0),
            "{threads} threads: every file in place"
        );
        assert_synced!(t.src(), dst);
        assert_no_temps(&dst);
        rsync_oracle(&t.src(), &dst);
    }
    // New files in existing directories, and a new directory.
    build(
        &t.src(),
        vec![
            Node::at("a/new", random(5000)),
            Node::at("b/c/new", random(7000)),
            Node::at("fresh/x", random(100)),
            Node::at("fresh/y", random(200)),
        ],
    );
    age(&t.src());
    let out = run(&t.src(), &dst, &c, 2, 2);
    assert!(out.ok, "{:?}", out.errors);
    assert_eq!(c.counts(), (2, 2), "in place only in the new directory");
    assert_synced!(t.src(), dst);
    rsync_oracle(&t.src(), &dst);

    // A source file changed just now: not in place.
    tree!(t.src(), { "young/new" => random(300) });
    let out = run(&t.src(), &dst, &c, 2, 2);
    assert!(out.ok, "{:?}", out.errors);
    assert_eq!(c.counts(), (0, 1), "a young file written in place");
    assert_synced!(t.src(), dst);

    // A target root that exists, empty, open to others: not in place.
    let open = t.join("mnt/open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    age(&t.src());
    let out = run(&t.src(), &open, &c, 2, 2);
    assert!(out.ok, "{:?}", out.errors);
    assert_eq!(c.counts(), (47, 1), "only the top file is made unnamed");
    assert_synced!(t.src(), open);

    // The same tree onto the disk the tests live on: never in place.
    let disk = t.join("disk-dst");
    let here = rustix::fs::statfs(t.path()).expect("statfs of the test directory");
    if here.f_type as u64 == psync::probe::magic::TMPFS {
        assert!(
            !in_ci(),
            "{test}: CI=true but the test directory is on tmpfs"
        );
        eprintln!("{test}: the test directory is on tmpfs: no disk to compare with");
        return;
    }
    let out = run(&t.src(), &disk, &c, 2, 2);
    assert!(out.ok, "{:?}", out.errors);
    let (in_place, unnamed) = c.counts();
    assert_eq!(in_place, 0, "in place on a disk file system");
    assert!(unnamed > 0, "no unnamed file on disk");
    assert_synced!(t.src(), disk);
}

/// A source that changes during its copy in place: the copy is taken off
/// its name and retried; with no retry left, nothing is at the name.
#[test]
fn a_change_during_an_in_place_copy_is_retried_and_leaves_nothing() {
    let test = "a_change_during_an_in_place_copy_is_retried_and_leaves_nothing";
    let t = TestDir::new(test);
    let Some(_m) = tmpfs(&t, test, "64m") else {
        return;
    };
    let dst = t.join("mnt/dst");
    tree!(t.src(), { "d/live" => random(300_000), "d/calm" => random(5000) });
    age(&t.src());
    let live = t.src().join("d/live");
    let changing = |times: u64| {
        let n = AtomicU64::new(0);
        let live = live.clone();
        Counted::new(move |job| {
            let k = if job_is(job, "live") {
                n.fetch_add(1, Ordering::SeqCst) + 1
            } else {
                0
            };
            if k > 0 && k <= times {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&live)
                    .and_then(|f| f.write_all_at(&random_bytes(k, 4096), 4096 * k))
                    .expect("change the source");
                set_mtime(&live, 1_650_000_000 + k as i64, 0);
            }
            Ok(())
        })
    };
    for threads in [1, 3] {
        crate::util::remove_tree(&dst);
        let c = changing(1);
        let out = run(&t.src(), &dst, &c, 1, threads);
        assert!(out.ok, "{:?}", out.errors);
        assert_eq!(out.stat("changed_during_copy"), 1);
        assert!(c.counts().0 >= 2, "the first attempt was not in place");
        // Times go only on a copy known good: not on the one that changed.
        let timed = c.timed.lock().expect("lock").clone();
        let live_timed = timed.iter().filter(|n| n.as_slice() == b"live").count();
        assert_eq!(live_timed, 1, "times set on a copy of a changed source");
        assert_synced!(t.src(), dst);
        assert_no_temps(&dst);

        crate::util::remove_tree(&dst);
        let c = changing(2);
        let out = run(&t.src(), &dst, &c, 1, threads);
        assert!(!out.ok, "a file that kept changing was reported");
        assert!(
            out.errors.iter().any(|e| e.contains("changed during copy")),
            "{:?}",
            out.errors
        );
        assert!(
            dst.join("d/live").symlink_metadata().is_err(),
            "a copy of a changing file is at its name"
        );
        assert_eq!(read(dst.join("d/calm")), read(t.src().join("d/calm")));
        assert_no_temps(&dst);
    }
}

/// A copy in place that fails is removed from its name; when another
/// copy took the name meanwhile (another delivery of the same batch
/// replaced it), that one stays.
#[test]
fn a_failed_in_place_copy_is_removed_but_not_what_replaced_it() {
    let test = "a_failed_in_place_copy_is_removed_but_not_what_replaced_it";
    let t = TestDir::new(test);
    let Some(_m) = tmpfs(&t, test, "64m") else {
        return;
    };
    let dst = t.join("mnt/dst");
    tree!(t.src(), { "d/fails" => random(70_000), "d/taken" => random(80_000), "d/ok" => random(10) });
    age(&t.src());
    let other = t.join("mnt/other");
    let (dst2, other2) = (dst.clone(), other.clone());
    let c = Counted::new(move |job| {
        if job_is(job, "fails") {
            return Err(eio());
        }
        if job_is(job, "taken") {
            std::fs::write(&other2, b"another delivery's copy").expect("write the other copy");
            std::fs::rename(&other2, dst2.join("d/taken")).expect("replace the name");
            return Err(eio());
        }
        Ok(())
    });
    let out = run(&t.src(), &dst, &c, 0, 2);
    assert!(!out.ok);
    assert_eq!(out.errors.len(), 2, "{:?}", out.errors);
    assert_eq!(c.counts().0, 3, "all three were made in place");
    assert!(
        dst.join("d/fails").symlink_metadata().is_err(),
        "a failed copy stayed at its name"
    );
    assert_eq!(read(dst.join("d/taken")), b"another delivery's copy");
    assert_eq!(read(dst.join("d/ok")), read(t.src().join("d/ok")));
    assert_no_temps(&dst);
}

/// The tree for the kill test: 3,000 files of 1-40 KB in 60 directories.
fn kill_tree(root: &Path) {
    let mut nodes = Vec::new();
    for i in 0..3000u64 {
        let len = 1000 + (i * 7919) % 40_000;
        nodes.push(Node::at(format!("d{:02}/f{i:04}", i % 60), random(len)));
    }
    build(root, nodes);
}

/// What a kill may leave at a final name: the source's file whole, or a
/// file the next run's quick check takes for a different one (its size or
/// modification time differ), in a directory no one but the run's user
/// can enter. Returns how many files were not whole.
#[track_caller]
fn assert_whole_or_unfinished(src: &Path, dst: &Path) -> usize {
    let mut partial = 0;
    for (rel, m) in listing(dst) {
        let temp = rel.split(|&b| b == b'/').any(|c| c.starts_with(b".psync"));
        if m.kind != 'f' || temp {
            continue;
        }
        let name = bpath(&rel);
        if read(dst.join(name)) == read(src.join(name)) {
            continue;
        }
        partial += 1;
        let s = src.join(name).metadata().expect("stat source");
        let d = dst.join(name).metadata().expect("stat target");
        assert!(
            (s.size(), s.mtime(), s.mtime_nsec()) != (d.size(), d.mtime(), d.mtime_nsec()),
            "{}: not the source's data but its size and time",
            name.display()
        );
        let dir = dst.join(name).parent().map(PathBuf::from).expect("parent");
        let mode = dir.metadata().expect("stat dir").permissions().mode() & 0o7777;
        assert_eq!(
            mode,
            0o700,
            "{}: an unfinished copy in a directory others can enter",
            name.display()
        );
    }
    partial
}

/// SIGKILL at random moments of a first copy onto tmpfs: every file under
/// a final name is whole or visibly unfinished (and only root can reach
/// it), and the next run converges exactly.
#[test]
fn kill_9_during_a_copy_in_place_then_rerun() {
    let test = "kill_9_during_a_copy_in_place_then_rerun";
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let t = TestDir::new(test);
    let Some(_m) = tmpfs(&t, test, "256m") else {
        return;
    };
    kill_tree(&t.src());
    age(&t.src());
    let dst = t.join("mnt/dst");
    let start = |threads: &str| {
        psync_cmd()
            .args(["sync", "-q", "--threads", threads])
            .arg(t.src())
            .arg(&dst)
            .spawn()
            .expect("start psync")
    };
    let began = Instant::now();
    let mut child = start("2");
    assert!(wait_at_most(&mut child, Duration::from_secs(120), "finish").success());
    let full = began.elapsed().max(Duration::from_millis(30));
    let mut seed = u64::from(std::process::id()) ^ 0x2545_f491_4f6c_dd1d;
    let mut unfinished = 0;
    for round in 0..12 {
        crate::util::remove_tree(&dst);
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let wait = full.mul_f64((seed >> 33) as f64 / f64::from(1u32 << 31));
        let mut child = start(["1", "2", "4"][round % 3]);
        std::thread::sleep(wait);
        let _ = child.kill();
        let _ = child.wait();
        if !dst.exists() {
            continue;
        }
        unfinished += assert_whole_or_unfinished(&t.src(), &dst);
        let mut child = start("2");
        let status = wait_at_most(&mut child, Duration::from_secs(120), "finish");
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: the run after the kill"
        );
        assert_synced!(t.src(), dst);
        assert_no_temps(&dst);
    }
    eprintln!("{test}: a full run takes {full:?}; {unfinished} unfinished copies seen after kills");
    rsync_oracle(&t.src(), &dst);
}
