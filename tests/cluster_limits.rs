//! `--max-delete`, `--max-errors` and `--bwlimit` on a cluster: the
//! limits are the run's over every worker (kept on the broker), not each
//! worker's. Three real workers of two threads each.

use crate::cluster::show;
use crate::util::TestDir;
use crate::util::compare::assert_no_temps;
use crate::util::run::json_lines;
use std::path::Path;
use std::process::Output;
use std::time::Instant;

fn summary(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let ev = json_lines(&out)
        .into_iter()
        .find(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary: {out}"));
    ev.get("stats").cloned().unwrap_or(ev)
}

/// Regular files in `dir` and its subdirectories (one level).
fn files_in(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += std::fs::read_dir(e.path()).unwrap().count();
        } else {
            n += 1;
        }
    }
    n
}

/// `n` directories, each with an entry that fails under `--exclude=*.o`
/// (a source file whose name is a target directory holding an excluded
/// entry) beside a 1 MiB file.
fn failing_tree(src: &Path, dst: &Path, n: u64) {
    for d in 0..n {
        let (s, t) = (src.join(format!("d{d:02}")), dst.join(format!("d{d:02}")));
        std::fs::create_dir_all(&s).unwrap();
        std::fs::write(s.join("x"), "now a file").unwrap();
        std::fs::write(s.join("big"), crate::util::tree::random_bytes(d, 1 << 20)).unwrap();
        std::fs::create_dir_all(t.join("x")).unwrap();
        std::fs::write(t.join("x/keep.o"), "excluded").unwrap();
    }
}

/// 60 extraneous files in 12 directories, `--max-delete 7`: exactly 7
/// deleted over the three workers (each counting on its own would have
/// let up to 21 go), the rest skipped and counted, exit status 1.
#[test]
fn max_delete_is_the_run_s_over_every_worker() {
    let t = TestDir::new("cluster_max_delete");
    let c = cluster!(t, 3);
    let (src, dst) = (t.src(), t.dst());
    for d in 0..12 {
        std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        std::fs::write(src.join(format!("d{d}/keep")), "k").unwrap();
        std::fs::create_dir_all(dst.join(format!("d{d}"))).unwrap();
        for f in 0..5 {
            std::fs::write(dst.join(format!("d{d}/old{f}")), "x").unwrap();
        }
    }
    let o = c.sync(&src, &dst, &["--delete", "--max-delete", "7", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o, &c));
    let s = summary(&o);
    assert_eq!(s["deleted"], 7, "{}", show(&o, &c));
    assert_eq!(s["deletes_skipped"], 53, "{}", show(&o, &c));
    assert_eq!(files_in(&dst), 12 + 60 - 7);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("deletions stopped by --max-delete"), "{err}");
    for d in 0..12 {
        assert!(dst.join(format!("d{d}/keep")).exists());
    }
}

/// 30 entries that fail (a source file whose name is a target directory
/// holding an excluded entry), each beside a 1 MiB file, at 2 MiB/s:
/// `--max-errors 3` ends the run long before its 15 seconds of copying,
/// on every worker, with exit status 1, the limit's message and no
/// temporaries left.
#[test]
fn max_errors_ends_the_run_over_every_worker() {
    let t = TestDir::new("cluster_max_errors");
    let c = cluster!(t, 3);
    let (src, dst) = (t.src(), t.dst());
    failing_tree(&src, &dst, 30);
    let start = Instant::now();
    let o = c.sync(
        &src,
        &dst,
        &[
            "--exclude=*.o",
            "--bwlimit",
            "2M",
            "--max-errors",
            "3",
            "--json",
        ],
    );
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o, &c));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("failed entries (--max-errors 3)"),
        "{}",
        show(&o, &c)
    );
    let failed = summary(&o)["failed"].as_u64().unwrap();
    assert!(failed >= 3, "{}", show(&o, &c));
    assert!(secs < 12.0, "the run went on for {secs:.1}s");
    let copied = (0..30)
        .filter(|d| dst.join(format!("d{d:02}/big")).exists())
        .count();
    assert!(copied < 30, "every file copied: the run was not stopped");
    assert!(c.log().contains("--max-errors 3"), "{}", c.log());
    // The workers remove what they made for copies that did not finish.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_no_temps(&dst);
}

/// `--bwlimit 8M` over 24 MiB on three workers: about 3 seconds, the
/// rate the run's (each worker pacing on its own: about 1 to 2.3 s, as
/// the tasks spread). Wide bounds: a benchmark-style check on a shared
/// machine (only a run past 15 s fails it for being slow).
#[test]
fn bwlimit_is_the_run_s_over_every_worker() {
    let t = TestDir::new("cluster_bwlimit");
    let c = cluster!(t, 3);
    let (src, dst) = (t.src(), t.dst());
    for i in 0..12u64 {
        let dir = src.join(format!("d{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), crate::util::tree::random_bytes(i, 2 << 20)).unwrap();
    }
    let start = Instant::now();
    let o = c.sync(&src, &dst, &["--bwlimit", "8M", "-q"]);
    let secs = start.elapsed().as_secs_f64();
    crate::cluster::assert_ok(&o, &c);
    crate::util::rsync::rsync_oracle(&src, &dst);
    assert!(
        (2.6..15.0).contains(&secs),
        "24 MiB at 8 MiB/s over 3 workers took {secs:.2}s, expected about 3"
    );
}

/// `sync --detach --max-errors` then `psync wait`: the run ends on the
/// limit as a followed one does, and `wait` says so with exit status 1
/// (not 0, not the 2 of a cancelled run), and says the deletions
/// `--max-delete` left too; no temporaries left.
#[test]
fn max_errors_after_detach_then_wait_exits_1() {
    let t = TestDir::new("cluster_max_errors_wait");
    let c = cluster!(t, 3);
    let (src, dst) = (t.src(), t.dst());
    failing_tree(&src, &dst, 20);
    for d in 0..20 {
        std::fs::write(dst.join(format!("d{d:02}/old")), "extraneous").unwrap();
    }
    let args = [
        "--delete",
        "--max-delete",
        "0",
        "--exclude=*.o",
        "--bwlimit",
        "2M",
        "--max-errors",
        "2",
        "--detach",
    ];
    let o = c.sync(&src, &dst, &args);
    crate::cluster::assert_ok(&o, &c);
    let run = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let w = c.psync(&["wait", &run]);
    assert_eq!(w.status.code(), Some(1), "{}", show(&w, &c));
    let err = String::from_utf8_lossy(&w.stderr);
    assert!(
        err.contains("failed entries (--max-errors"),
        "{}",
        show(&w, &c)
    );
    assert!(
        err.contains("deletions stopped by --max-delete"),
        "{}",
        show(&w, &c)
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_no_temps(&dst);
}
