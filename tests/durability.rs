//! `--fsync` (ADR 008): with it, a file counts as done only once its data
//! and its name are on stable storage, and a flush that fails fails the
//! run; without it, a run ends with its writes in the page cache.
//!
//! The fault: an ext4 image on a tmpfs too small for what will be written
//! into it, loop-mounted. Writes succeed into the ext4 page cache; when
//! they are written back, the loop device's writes into the full tmpfs
//! fail (ENOSPC there, EIO for ext4) — a thin volume filling up, the case
//! of the issue. Needs root, `mkfs.ext4` and loop devices; skips with the
//! reason otherwise, fails under `CI=true`.

use crate::util::faultfs::Fault;
use crate::util::mounts::{self, Fs};
use crate::util::rsync::rsync_oracle_full;
use crate::util::run::{cli_available, psync_bin};
use crate::util::tree::random_bytes;
use crate::util::{TestDir, is_root, test_tmp_base};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Longest a psync run may take here: the trees are a few MiB.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A fixture with files, a large file in chunks, hard links, a symlink
/// and nested directories: every way a name is published.
fn fixture(src: &Path) {
    tree!(src, {
        "a/one" => file("one"),
        "a/b/two" => random(300_000),
        "a/b/c/three" => random(70_000),
        "big" => random(5 << 20),
        "link1" => file("linked"),
        "a/link2" => hardlink("link1"),
        "sym" => symlink("a/one"),
        "empty" => dir(),
    });
}

#[test]
fn fsync_run_on_ext4_is_exact() {
    let test = "fsync_run_on_ext4_is_exact";
    let m = match mounts::shared() {
        Ok(m) => m,
        Err(why) => {
            assert!(!mounts::must_have_mounts(), "CI=true but {test}: {why}");
            return eprintln!("SKIPPED {test}: {why}");
        }
    };
    let s = match m.scratch(test, Fs::Ext4, Fs::Ext4) {
        Ok(s) => s,
        Err(why) => {
            assert!(!mounts::must_have_mounts(), "CI=true but {test}: {why}");
            return eprintln!("SKIPPED {test}: {why}");
        }
    };
    fixture(&s.src());
    // The library.
    let mut b = psync::builder(s.src(), s.dst());
    b.fsync(true).threads(4).chunk_size(1 << 20);
    let report = b.build().expect("build").run().expect("run");
    assert!(report.success(), "lib --fsync run failed: {report:?}");
    assert_synced!(s.src(), s.dst());
    rsync_oracle_full(&s.src(), &s.dst());
    if !cli_available() {
        return;
    }
    // The CLI, on changes (replacements, a deletion, new files), in
    // each mode that stages copies before publishing them too.
    let modes: [&[&str]; 3] = [
        &["--fsync"],
        &["--fsync-mode", "file"],
        &["--fsync-mode", "parallel"],
    ];
    for (i, mode) in modes.into_iter().enumerate() {
        let new = format!("a/new{i}");
        tree!(s.src(), {
            "a/one" => file(format!("one, replaced {i}")),
            "a/b/two" => absent(),
            new.as_str() => random(9_000 + i as u64),
            "big" => random((3 << 20) + i as u64),
        });
        let mut args = mode.to_vec();
        args.extend(["--delete", "--chunk-size", "1M"]);
        let out = run_psync(&args, &s.src(), &s.dst());
        assert_eq!(out.status.code(), Some(0), "CLI {mode:?}: {}", text(&out));
        assert_synced!(s.src(), s.dst());
        rsync_oracle_full(&s.src(), &s.dst());
    }
}

/// Without `--fsync` and without verification psync reports success and
/// the data is lost on write-back (the bug of the issue); verification
/// (on by default) writes each file back before reading it, so it fails
/// the run too; with `--fsync` (and with the other flush modes ADR 009
/// measured) the run fails and names target paths.
#[test]
fn failing_write_back_fails_the_run_only_with_fsync() {
    let test = "failing_write_back_fails_the_run_only_with_fsync";
    if let Err(why) = prerequisites() {
        assert!(!mounts::must_have_mounts(), "CI=true but {test}: {why}");
        return eprintln!("SKIPPED {test}: {why}");
    }
    let t = TestDir::new(test);
    // ~6 MiB to write; the image's tmpfs has 1 MiB to spare.
    let src = t.src();
    for i in 0..48u64 {
        let dir = src.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i:02}")), random_bytes(i, 128 << 10)).unwrap();
    }

    // Verification reads what storage returns: the write-back fails first.
    let fs = Faulty::new(test).unwrap_or_else(|e| panic!("faulty ext4: {e}"));
    let out = run_psync(&[], &src, &fs.dir().join("dst"));
    assert_ne!(out.status.code(), Some(0), "verified: {}", text(&out));
    drop(fs);

    // The bug: exit 0, every file counted, and nothing survives the flush.
    let fs = Faulty::new(test).unwrap_or_else(|e| panic!("faulty ext4: {e}"));
    let dst = fs.dir().join("dst");
    let out = run_psync(&["--no-verify"], &src, &dst);
    assert_eq!(
        out.status.code(),
        Some(0),
        "without --fsync and --no-verify: {}",
        text(&out)
    );
    let flushed = Command::new("sync").arg("-f").arg(fs.dir()).output();
    let flushed = flushed.expect("run sync -f");
    assert!(
        !flushed.status.success(),
        "the fault did not happen: syncfs of the full image succeeded after the run"
    );
    drop(fs);

    for args in [
        &["--fsync"][..],
        &["--fsync-mode", "file"],
        &["--fsync-mode", "parallel"],
        &["--fsync-mode", "end"],
    ] {
        let fs = Faulty::new(test).unwrap_or_else(|e| panic!("faulty ext4: {e}"));
        let dst = fs.dir().join("dst");
        // Without verification: the flush alone must catch it (exit 1, or
        // 3 when the error says the target is full, which stops the run).
        let mut args = args.to_vec();
        args.push("--no-verify");
        let out = run_psync(&args, &src, &dst);
        let all = text(&out);
        assert!(
            matches!(out.status.code(), Some(1 | 3)),
            "{args:?} must fail: {all}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The flush's error, or, when ext4 saw the failing write-back first
        // and remounted itself read-only (errors=remount-ro), the stop for
        // a read-only target: either way the run fails naming the target.
        let named = stderr.lines().any(|l| {
            let flush = l.starts_with("psync: fsync ") || l.starts_with("psync: syncfs ");
            let read_only = l.starts_with("psync: ") && l.contains("target file system read-only");
            (flush || read_only) && l.contains(&*dst.to_string_lossy())
        });
        assert!(
            named,
            "{args:?}: no flush error naming a target path: {all}"
        );
    }
}

/// Why the fault cannot be made here, if it cannot.
pub(crate) fn prerequisites() -> Result<(), String> {
    if !is_root() {
        return Err("not root: loop and tmpfs mounts need root".into());
    }
    if !cli_available() {
        return Err("the psync binary is not built".into());
    }
    match Command::new("mkfs.ext4").arg("-V").output() {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("mkfs.ext4: {e}")),
    }
}

/// Runs `psync sync -q ARGS SRC DST`, killed if it outlives [`RUN_LIMIT`]
/// (coreutils `timeout`).
fn run_psync(args: &[&str], src: &Path, dst: &Path) -> Output {
    let out = Command::new("timeout")
        .args(["-s", "KILL", &RUN_LIMIT.as_secs().to_string()])
        .arg(psync_bin())
        .args(["sync", "-q"])
        .args(args)
        .arg(src)
        .arg(dst)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run timeout psync");
    assert_ne!(
        out.status.code(),
        Some(137),
        "psync {args:?} ran over {RUN_LIMIT:?}"
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An ext4 file system whose write-back fails: a 64 MiB sparse image on
/// a tmpfs left with 1 MiB more than the fresh image takes. Unmounted and
/// removed on drop, also when the test panics.
pub(crate) struct Faulty {
    base: PathBuf,
    mounted: Vec<PathBuf>,
}

impl Faulty {
    pub(crate) fn new(test: &str) -> Result<Faulty, String> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let base = test_tmp_base().join(format!("{test}.{}.fault{n}", std::process::id()));
        let (backing, mnt) = (base.join("backing"), base.join("mnt"));
        for d in [&backing, &mnt] {
            std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        let mut f = Faulty {
            base,
            mounted: Vec::new(),
        };
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64M", "psync-fault"])
            .arg(&backing))?;
        f.mounted.push(backing.clone());
        let image = backing.join("ext4.img");
        let file = std::fs::File::create(&image).map_err(|e| format!("create image: {e}"))?;
        file.set_len(64 << 20)
            .map_err(|e| format!("truncate image: {e}"))?;
        drop(file);
        // Inode tables and journal written now, so no background
        // initialisation writes into the tmpfs later.
        let init = "lazy_itable_init=0,lazy_journal_init=0";
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-E", init])
            .arg(&image))?;
        // commit=60: no journal commit (which writes back ordered data)
        // during a run of a second, so the run without --fsync sees no
        // error, as a run that ends before write-back does.
        run(Command::new("mount")
            .args(["-o", "loop,commit=60"])
            .arg(&image)
            .arg(&mnt))?;
        f.mounted.push(mnt);
        let used = std::fs::metadata(&image)
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .map_err(|e| format!("stat image: {e}"))?;
        let size = format!("remount,size={}k", used / 1024 + 1024);
        run(Command::new("mount").args(["-o", &size]).arg(&backing))?;
        Ok(f)
    }

    /// The mounted (faulty) ext4.
    pub(crate) fn dir(&self) -> PathBuf {
        self.base.join("mnt")
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        // The ext4 first (its loop device is released with it), then the
        // tmpfs under its image.
        while let Some(m) = self.mounted.pop() {
            if run(Command::new("umount").arg(&m)).is_err() {
                let _ = run(Command::new("umount").arg("-l").arg(&m));
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("{shown}: {}: {}", out.status, err.trim()))
    }
}

/// Every flush mode, as CLI arguments.
const MODES: [&[&str]; 4] = [
    &["--fsync"],
    &["--fsync-mode", "file"],
    &["--fsync-mode", "parallel"],
    &["--fsync-mode", "end"],
];

/// The warning of a run whose `syncfs` cannot flush its FUSE target.
const FUSE_WARNING: &str = "syncfs does not reach its daemon";

/// The lines of `stderr` that carry the FUSE warning.
fn fuse_warnings(out: &Output) -> usize {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(FUSE_WARNING))
        .count()
}

/// The modes that would flush with `syncfs` say once that they flush
/// each file instead; the others say nothing.
#[track_caller]
fn assert_fuse_warning(mode: &[&str], out: &Output) {
    let syncfs = mode == ["--fsync"] || mode.ends_with(&["end"]);
    assert_eq!(
        fuse_warnings(out),
        usize::from(syncfs),
        "{mode:?}: FUSE warnings: {}",
        text(out)
    );
}

/// A FUSE target whose daemon fails every `fsync` (faultfs): `syncfs`
/// never reaches a FUSE daemon, so the modes that flush with it (batch,
/// the default of `--fsync`, and end) used to exit 0. Every mode must fail
/// (exit 1) with a flush error naming a target path.
#[test]
fn failing_fuse_flush_fails_every_mode() {
    let test = "failing_fuse_flush_fails_every_mode";
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let t = TestDir::new(test);
    // Small files only: large and hard-linked files are flushed one by
    // one in every mode, and would fail the run whatever batches do.
    tree!(t.src(), {
        "one" => file("one"),
        "a/two" => random(300_000),
        "a/b/three" => random(70_000),
        "empty" => dir(),
    });
    let back = t.join("dst-back");
    let fs = require_faultfs!(back, t.dst(), [Fault::EioFsync("*")]);
    for (i, mode) in MODES.into_iter().enumerate() {
        let dst = fs.path().join(format!("m{i}"));
        let out = run_psync(mode, &t.src(), &dst);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{mode:?} must fail: {}",
            text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let named = stderr
            .lines()
            .any(|l| l.starts_with("psync: fsync ") && l.contains(&*dst.to_string_lossy()));
        assert!(
            named,
            "{mode:?}: no fsync error naming a target path: {}",
            text(&out)
        );
        assert_fuse_warning(mode, &out);
    }
}

/// The same FUSE target without faults: every mode exits 0 and the
/// target is exact (also by rsync's measure), first run and an update.
#[test]
fn fsync_run_on_fuse_is_exact() {
    let test = "fsync_run_on_fuse_is_exact";
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let t = TestDir::new(test);
    fixture(&t.src());
    let back = t.join("dst-back");
    let fs = require_faultfs!(back, t.dst(), []);
    for (i, mode) in MODES.into_iter().enumerate() {
        let dst = fs.path().join(format!("m{i}"));
        let mut args = mode.to_vec();
        args.extend(["--delete", "--chunk-size", "1M"]);
        let out = run_psync(&args, &t.src(), &dst);
        assert_eq!(out.status.code(), Some(0), "{mode:?}: {}", text(&out));
        assert_fuse_warning(mode, &out);
        assert_synced!(t.src(), dst);
        rsync_oracle_full(&t.src(), &dst);
    }
    // An update: replaced, new and deleted files, in every mode.
    tree!(t.src(), {
        "a/one" => file("one, replaced"),
        "a/b/two" => absent(),
        "a/new" => random(9_000),
        "big" => random((3 << 20) + 1),
    });
    for (i, mode) in MODES.into_iter().enumerate() {
        let dst = fs.path().join(format!("m{i}"));
        let mut args = mode.to_vec();
        args.extend(["--delete", "--chunk-size", "1M"]);
        let out = run_psync(&args, &t.src(), &dst);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{mode:?} update: {}",
            text(&out)
        );
        assert_synced!(t.src(), dst);
        rsync_oracle_full(&t.src(), &dst);
    }
}
