//! A target that cannot be written — full (ENOSPC, EDQUOT) or read-only
//! (EROFS) — stops the run at the first refused write: one error naming
//! the path, exit status 3, no temporaries or part files left, every old
//! target kept unless its replacement was complete, and `bytes_copied`
//! counting only the files that ended in place. Once there is room, the
//! next run converges.
//!
//! Mounts need root: without it these tests print why and skip, and
//! under `CI=true` they fail instead (`PSYNC_TEST_NO_MOUNTS=1` opts out on
//! purpose, as for the other mount tests).

use crate::util::compare::{StatSnapshot, assert_untouched, temp_like};
use crate::util::mounts::TestMount;
use crate::util::run::{Front, cli_available, each_config, json_lines, psync_cmd, run_cli};
use crate::util::tree::{Node, build, file, random};
use crate::util::{
    Opts, TestDir, bpath, in_ci, is_root, listing, read, rsync_oracle, stat_snapshot,
};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const MIB: u64 = 1 << 20;
/// Names of part files and their journals (large files' copies).
const PART_PREFIX: &str = ".psync-part.";
/// No run of these small trees takes long; one that does is a bug.
const LIMIT: Duration = Duration::from_secs(120);

/// True when mounts can be made here; otherwise prints why (skip), or
/// fails under CI.
fn can_mount(test: &str) -> bool {
    if std::env::var_os("PSYNC_TEST_NO_MOUNTS").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("SKIPPED {test}: PSYNC_TEST_NO_MOUNTS is set");
        return false;
    }
    if !is_root() {
        assert!(!in_ci(), "{test}: CI=true but not root (mounts need root)");
        eprintln!("SKIPPED {test}: not root (mounts need root)");
        return false;
    }
    if !cli_available() {
        eprintln!("SKIPPED {test}: the psync binary is not built");
        return false;
    }
    true
}

/// The mount, or `None` after printing why (a failure under CI).
fn mounted(test: &str, made: Result<TestMount, String>) -> Option<TestMount> {
    match made {
        Ok(m) => Some(m),
        Err(why) => {
            assert!(!in_ci(), "{test}: CI=true but: {why}");
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// What one `psync sync --json` run printed, and how it exited.
#[derive(Debug)]
struct Run {
    exit: Option<i32>,
    events: Vec<Value>,
    stderr: String,
}

impl Run {
    fn errors(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["event"] == "error")
            .collect()
    }

    fn summary(&self) -> &Value {
        let s = self.events.iter().find(|e| e["event"] == "summary");
        s.unwrap_or_else(|| panic!("no summary: {self:#?}"))
    }

    #[track_caller]
    fn stat(&self, name: &str) -> u64 {
        let v = self.summary()[name].as_u64();
        v.unwrap_or_else(|| panic!("no counter {name}: {}", self.summary()))
    }
}

/// Runs `psync sync --json --chunk-size 1M ARGS SRC DST`,
/// killed (and the test failed) after [`LIMIT`]. Output goes to files of
/// `t`, so no pipe can stall it.
fn psync(t: &TestDir, args: &[&str], src: &Path, dst: &Path) -> Run {
    let (out, err) = (t.join("stdout"), t.join("stderr"));
    let mut child = psync_cmd()
        .args(["sync", "--json", "--chunk-size", "1M"])
        .args(args)
        .arg(src)
        .arg(dst)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start psync");
    let status = crate::util::run::wait_at_most(&mut child, LIMIT, "finish");
    let stdout = String::from_utf8_lossy(&read(&out)).into_owned();
    Run {
        exit: status.code(),
        events: json_lines(&stdout),
        stderr: String::from_utf8_lossy(&read(&err)).into_owned(),
    }
}

/// A few files of 1 MiB, one of 8 MiB (eight chunks of 1 MiB), and 200
/// small files in 8 directories: far more than 2 MiB.
fn source_tree(src: &Path) {
    let mut nodes: Vec<Node> = ["one/a", "one/b", "one/c"]
        .iter()
        .map(|p| Node::at(p, random(MIB)))
        .collect();
    nodes.push(Node::at("big", random(8 * MIB)));
    nodes.extend((0..200).map(|i| Node::at(format!("small/d{:02}/f{i:03}", i % 8), random(4096))));
    build(src, nodes);
}

/// Old versions, in the target, of some source files: the 8 MiB file's
/// replacement can never fit, so its old version must survive the run.
fn old_versions(dst: &Path) {
    let old = |p: &str| Node::at(p, file(format!("old version of {p}"))).mtime(1_000_000_000, 0);
    build(dst, vec![old("big"), old("one/a"), old("small/d00/f000")]);
}

/// The one error of a stopped run: names the target path, the side and
/// the cause.
#[track_caller]
fn assert_one_stop_error(run: &Run, dst: &Path, cause: &str) {
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "exactly one error event: {run:#?}");
    let msg = errors[0]["message"].as_str().unwrap_or_default();
    // The event says the side and the errno too, not only a string.
    assert_eq!(errors[0]["side"], "target", "{run:#?}");
    let errno = errors[0]["errno"].as_i64();
    assert!(
        [libc::ENOSPC, libc::EDQUOT, libc::EROFS]
            .map(i64::from)
            .contains(&errno.unwrap_or(0)),
        "errno of the stop: {errno:?}"
    );
    let dst = dst.display().to_string();
    assert!(
        msg.contains(&dst) && msg.contains("target file system") && msg.contains(cause),
        "the error names the target path, the side and the cause ({cause}): {msg}"
    );
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("psync:"))
        .collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {}", run.stderr);
    assert_eq!(run.exit, Some(3), "exit status of a stopped run: {run:#?}");
    assert_eq!(run.summary()["exit_code"], 3);
    assert_eq!(run.summary()["interrupted"], false, "{}", run.summary());
    assert!(run.summary()["stopped"].is_object(), "{}", run.summary());
}

/// After a stopped run: no temporary or part file is left, and every
/// regular file in `dst` is either its source's complete copy or the old
/// version it was before the run, untouched (same inode, times). Returns
/// the bytes of the complete copies.
#[track_caller]
fn assert_only_complete_or_old(src: &Path, dst: &Path, before: &StatSnapshot) -> u64 {
    assert_eq!(temp_like(dst), Vec::<Vec<u8>>::new(), "temporaries left");
    let after = stat_snapshot(dst);
    let mut copied = 0;
    for (rel, m) in listing(dst) {
        let name = rel.rsplit(|&b| b == b'/').next().unwrap_or(&rel);
        assert!(
            !name.starts_with(PART_PREFIX.as_bytes()),
            "part file left: {}",
            bpath(&rel).display()
        );
        if m.kind != 'f' {
            continue;
        }
        let untouched = before.get(&rel).is_some_and(|b| Some(b) == after.get(&rel));
        if untouched {
            continue;
        }
        let (want, got) = (read(src.join(bpath(&rel))), read(dst.join(bpath(&rel))));
        assert!(
            want == got,
            "{} is neither a complete copy nor its untouched old version",
            bpath(&rel).display()
        );
        copied += m.size;
    }
    copied
}

/// The common body of the full-target tests: `dst` on a file system with
/// about 2 MiB free; `make_room` frees space afterwards. Returns the bytes
/// of the files the stopped run completed.
fn fill_stop_then_converge(
    t: &TestDir,
    dst: &Path,
    threads: &str,
    make_room: impl FnOnce(),
) -> u64 {
    source_tree(&t.src());
    old_versions(dst);
    let before = stat_snapshot(dst);
    let run = psync(t, &["--threads", threads], &t.src(), dst);
    assert_one_stop_error(&run, dst, "No space left on device");
    assert_eq!(run.summary()["stopped"]["reason"], "target_full");
    let complete = assert_only_complete_or_old(&t.src(), dst, &before);
    eprintln!(
        "{threads} threads: stopped with {complete} bytes in complete files; {}",
        run.errors()[0]["message"]
    );
    assert_eq!(
        run.stat("bytes_copied"),
        complete,
        "bytes copied are those of the files that ended in place: {}",
        run.summary()
    );
    let big = |s: &StatSnapshot| s.get(b"big".as_slice()).cloned();
    assert!(
        big(&before).is_some() && big(&before) == big(&stat_snapshot(dst)),
        "the old version of the file that cannot fit was touched"
    );
    make_room();
    let again = psync(t, &["--delete", "--threads", threads], &t.src(), dst);
    assert_eq!(again.exit, Some(0), "{again:#?}");
    assert!(again.errors().is_empty(), "{again:#?}");
    assert_synced!(t.src(), dst);
    rsync_oracle(&t.src(), dst);
    complete
}

/// (a) A 2 MiB tmpfs: chunks go through mappings, whose pages are
/// allocated first (ENOSPC, never SIGBUS). With one thread the order is
/// fixed: the small files (planned last, popped first) are complete
/// before the 1 MiB files fill the rest, so the byte count is tested on
/// more than nothing; with four, chunks and files race for the space.
#[test]
fn full_tmpfs_stops_once_and_keeps_old_targets() {
    let test = "full_tmpfs_stops_once_and_keeps_old_targets";
    if !can_mount(test) {
        return;
    }
    for threads in ["1", "4"] {
        let t = TestDir::new(&format!("{test}-{threads}t"));
        let mnt = t.join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir mount point");
        let Some(m) = mounted(test, TestMount::tmpfs(&mnt, "2m")) else {
            return;
        };
        let dst = mnt.join("dst");
        let complete = fill_stop_then_converge(&t, &dst, threads, || {
            m.remount("size=64m").expect("grow the tmpfs");
        });
        if threads == "1" {
            assert!(
                complete >= 200 * 4096,
                "the small files fit and were completed first: {complete}"
            );
        }
    }
}

/// (b) A small ext4 with about 2 MiB free: chunks go direct into space
/// allocated first, small files through the page cache (delayed
/// allocation reserves their blocks at write time).
#[test]
fn full_ext4_stops_once_and_keeps_old_targets() {
    let test = "full_ext4_stops_once_and_keeps_old_targets";
    if !can_mount(test) {
        return;
    }
    let t = TestDir::new(test);
    let mnt = t.join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mount point");
    let Some(_m) = mounted(test, TestMount::ext4(&mnt, &t.join("ext4.img"), 32)) else {
        return;
    };
    let filler = mnt.join("filler");
    fill_leaving(&filler, &mnt, 2 * MIB);
    let dst = mnt.join("dst");
    fill_stop_then_converge(&t, &dst, "4", || {
        std::fs::remove_file(&filler).expect("remove the filler");
    });
}

/// Allocates a file at `path` that takes all the free space of the file
/// system at `mnt` but `leave` bytes.
fn fill_leaving(path: &Path, mnt: &Path, leave: u64) {
    let st = rustix::fs::statvfs(mnt).expect("statvfs");
    let free = st.f_bavail * st.f_frsize;
    assert!(
        free > leave + 4 * MIB,
        "the test file system is too small: {free} bytes free"
    );
    let f = std::fs::File::create(path).expect("create the filler");
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, free - leave)
        .expect("allocate the filler");
}

/// (c) A read-only bind mount of a synced target, the source changed
/// since (a changed file, a new one, an extraneous target entry for
/// --delete): one error, exit 3, nothing in the target changed; the same
/// run on the writable target converges.
#[test]
fn read_only_target_stops_once_and_changes_nothing() {
    let test = "read_only_target_stops_once_and_changes_nothing";
    if !can_mount(test) {
        return;
    }
    each_config(test, |cfg, t| {
        tree!(t.src(), { "a" => file("a1"), "d/b" => file("b1"), "d/c" => file("c1") });
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        tree!(t.src(), { "a" => file("a2, longer"), "d/new" => file("new"), "e/f" => file("f") });
        tree!(t.dst(), { "extraneous" => file("x") });
        let ro = t.join("ro");
        std::fs::create_dir(&ro).expect("mkdir ro");
        let before = stat_snapshot(&t.dst());
        let Some(guard) = mounted(test, TestMount::read_only_bind(&t.dst(), &ro)) else {
            return;
        };
        let out = cfg.sync_with(&t.src(), &ro, &Opts::delete());
        assert_eq!(out.exit, 3, "{out:#?}");
        assert_eq!(out.errors.len(), 1, "exactly one error: {out:#?}");
        let msg = &out.errors[0];
        assert!(
            msg.contains(&ro.display().to_string())
                && msg.contains("target file system read-only")
                && msg.contains("Read-only file system"),
            "{msg}"
        );
        assert_eq!(out.stat("failed"), 1, "{}", out.stats);
        assert_eq!(out.stat("bytes_copied"), 0, "{}", out.stats);
        if cfg.front == Front::Cli {
            // A target root that cannot even be created: the same status.
            let o = run_cli(&["-q"], &t.src(), &ro.join("new"));
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(3), "{stderr}");
            assert!(stderr.contains("Read-only file system"), "{stderr}");
        }
        drop(guard);
        assert_untouched(&before, &stat_snapshot(&t.dst()), "a read-only target");
        cfg.sync_with(&t.src(), &t.dst(), &Opts::delete())
            .assert_ok();
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}

/// A file big enough to resume (`--resume-threshold`) keeps its part
/// file and journal when the target fills up, as after a kill: the run
/// with room copies only the chunks still missing, and counts only those.
#[test]
fn full_target_keeps_the_finished_chunks_of_a_resumable_file() {
    let test = "full_target_keeps_the_finished_chunks_of_a_resumable_file";
    if !can_mount(test) {
        return;
    }
    let t = TestDir::new(test);
    let mnt = t.join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mount point");
    let Some(m) = mounted(test, TestMount::tmpfs(&mnt, "4m")) else {
        return;
    };
    build(&t.src(), vec![Node::at("big", random(8 * MIB))]);
    let dst = mnt.join("dst");
    let args = ["--threads", "2", "--resume-threshold", "1M"];
    let run = psync(&t, &args, &t.src(), &dst);
    assert_one_stop_error(&run, &dst, "No space left on device");
    assert_eq!(run.stat("bytes_copied"), 0, "nothing ended in place");
    assert!(
        !dst.join("big").exists(),
        "a partial file under its final name"
    );
    assert_eq!(temp_like(&dst), Vec::<Vec<u8>>::new(), "temporaries left");
    let parts = std::fs::read_dir(&dst)
        .expect("list dst")
        .flatten()
        .filter(|e| {
            e.file_name()
                .as_encoded_bytes()
                .starts_with(PART_PREFIX.as_bytes())
        })
        .count();
    assert_eq!(
        parts, 2,
        "the part file and its journal are kept for the next run"
    );
    m.remount("size=64m").expect("grow the tmpfs");
    let again = psync(&t, &args, &t.src(), &dst);
    assert_eq!(again.exit, Some(0), "{again:#?}");
    let resumed = again.stat("chunks_resumed");
    assert!(resumed >= 1, "no chunk resumed: {}", again.summary());
    assert_eq!(
        again.stat("bytes_copied") + resumed * MIB,
        8 * MIB,
        "bytes copied are those of the chunks copied by this run: {}",
        again.summary()
    );
    assert_synced!(t.src(), dst);
    rsync_oracle(&t.src(), &dst);
}
