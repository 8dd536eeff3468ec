//! Limits and logs: `--max-delete`, `--max-errors`, `-v`, `--stats`,
//! `--log-file`.

use crate::util::compare::assert_no_temps;
use crate::util::run::run_cli;
use crate::util::user::{assert_exit, psync_as, test_user};
use crate::util::{Front, Opts, each_config};
use std::path::Path;

/// The names left in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn old_files(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("old{i}")).collect()
}

/// rsync's `--max-delete=2` with 5 deletions: exactly 2 deleted, 3
/// skipped and counted, a warning and exit status 1 (rsync: 25). The
/// limit is the run's: shared by the threads and the scattered engines.
#[test]
fn max_delete_stops_deletions_at_the_limit() {
    each_config("max_delete_stops_deletions_at_the_limit", |cfg, t| {
        tree!(t.src(), { "keep" => file("k") });
        std::fs::create_dir_all(t.dst()).unwrap();
        for name in old_files(5) {
            std::fs::write(t.dst().join(name), "x").unwrap();
        }
        let opts = Opts {
            max_delete: Some(2),
            ..Opts::delete()
        };
        let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
        assert!(out.errors.is_empty(), "{out:#?}");
        assert_eq!(out.stat("deleted"), 2, "{out:#?}");
        assert_eq!(out.stat("deletes_skipped"), 3, "{out:#?}");
        let left = names(&t.dst());
        assert_eq!(left.len(), 1 + 3, "keep and 3 old files: {left:?}");
        assert!(left.contains(&"keep".to_string()));
        let deleted: Vec<&String> = out
            .itemized
            .iter()
            .filter(|l| l.starts_with("*deleting"))
            .collect();
        assert_eq!(
            deleted.len(),
            2,
            "only what was deleted is itemized: {out:#?}"
        );
        if cfg.front == Front::Cli {
            assert_eq!(out.exit, 1, "{out:#?}");
            assert!(
                out.stderr
                    .contains("warning: deletions stopped by --max-delete (3 entries not deleted)"),
                "{}",
                out.stderr
            );
        }
        // The next run goes on where the limit stopped this one.
        let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
        assert_eq!(out.stat("deleted"), 2, "{out:#?}");
        assert_eq!(out.stat("deletes_skipped"), 1, "{out:#?}");
        assert_eq!(names(&t.dst()).len(), 2);
    });
}

/// `--max-delete 0` deletes nothing and says how much it left.
#[test]
fn max_delete_zero_deletes_nothing() {
    each_config("max_delete_zero_deletes_nothing", |cfg, t| {
        tree!(t.src(), { "keep" => file("k") });
        tree!(t.dst(), { "old1" => file("x"), "d/f" => file("x"), "d/g" => file("x") });
        let opts = Opts {
            max_delete: Some(0),
            ..Opts::delete()
        };
        let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
        assert_eq!(out.stat("deleted"), 0, "{out:#?}");
        // A directory counts with its contents.
        assert_eq!(out.stat("deletes_skipped"), 4, "{out:#?}");
        assert_eq!(names(&t.dst()), ["d", "keep", "old1"]);
        assert_eq!(names(&t.dst().join("d")), ["f", "g"]);
        if cfg.front == Front::Cli {
            assert_eq!(out.exit, 1, "{out:#?}");
            assert!(
                out.stderr.contains("(4 entries not deleted)"),
                "{}",
                out.stderr
            );
        }
    });
}

/// A directory is deleted whole or not at all: with room for 2 entries,
/// a directory of 3 stays whole and a file after it still goes.
#[test]
fn max_delete_keeps_a_directory_whole() {
    let t = crate::util::TestDir::new("max_delete_keeps_a_directory_whole");
    tree!(t.src(), { "keep" => file("k") });
    tree!(t.dst(), { "a/f" => file("x"), "a/g" => file("x"), "z" => file("x") });
    let o = run_cli(
        &["--delete", "--max-delete", "2", "-v", "--threads", "1"],
        &t.src(),
        &t.dst(),
    );
    assert_exit(&o, 1, "max-delete 2");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(names(&t.dst()), ["a", "keep"], "{stdout}");
    assert_eq!(names(&t.dst().join("a")), ["f", "g"]);
    assert!(stdout.lines().any(|l| l == "deleting z"), "{stdout}");
    assert!(!stdout.contains("deleting a"), "{stdout}");
}

/// A directory a file replaces is deleted with what it holds: that
/// counts in `--max-delete` as rsync counts it (the directory's contents,
/// not the directory). Over the limit the directory stays and its name is
/// blocked, a failed entry, as rsync's "could not make way" (its exit 23);
/// within the limit it is replaced.
#[test]
fn max_delete_counts_a_directory_a_file_replaces() {
    each_config("max_delete_replaced_dir", |cfg, t| {
        tree!(t.src(), { "x" => file("now a file"), "y" => file("now a file too") });
        tree!(t.dst(), {
            "x/f1" => file("1"), "x/f2" => file("2"), "x/f3" => file("3"),
            "y/sub/g" => file("g"),
        });
        let opts = Opts {
            max_delete: Some(2),
            ..Opts::delete()
        };
        let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
        assert!(
            t.dst().join("x").is_dir(),
            "[{cfg}] x's 3 entries deleted past --max-delete 2: {out:#?}"
        );
        assert_eq!(
            names(&t.dst().join("x")),
            ["f1", "f2", "f3"],
            "[{cfg}] x's 3 entries deleted past --max-delete 2: {out:#?}"
        );
        assert_eq!(out.stat("deletes_skipped"), 3, "[{cfg}] {out:#?}");
        assert_eq!(out.errors.len(), 1, "[{cfg}] {out:#?}");
        assert!(out.errors[0].contains("x"), "[{cfg}] {out:#?}");
        // y held 2 (sub and sub/g): within the limit, replaced.
        assert_eq!(std::fs::read(t.dst().join("y")).unwrap(), b"now a file too");
        if cfg.front == Front::Cli {
            assert_eq!(out.exit, 1, "[{cfg}] {out:#?}");
        }
    });
}

/// `--max-errors 3` over 40 unreadable files (as an unprivileged user):
/// the run stops as an interrupt stops it, soon after the third failure,
/// with exit status 1, its own message and no temporaries left.
#[test]
fn max_errors_stops_the_run() {
    let test = "max_errors_stops_the_run";
    let Some(u) = test_user(test) else { return };
    for threads in ["1", "4"] {
        let t = crate::util::TestDir::new(&format!("{test}-{threads}t"));
        for d in 0..20 {
            let dir = t.src().join(format!("d{d:02}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in ["a", "b"] {
                let p = dir.join(f);
                std::fs::write(&p, vec![b'x'; 100_000]).unwrap();
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o000))
                    .unwrap();
            }
        }
        u.own(t.path());
        let o = psync_as(
            Some(u),
            &["--max-errors", "3", "--threads", threads, "--json"],
            &t.src(),
            &t.dst(),
        );
        assert_exit(&o, 1, "max-errors");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains("failed entries (--max-errors 3)"),
            "{stderr}"
        );
        assert!(!stderr.contains("interrupted"), "{stderr}");
        let stdout = String::from_utf8_lossy(&o.stdout);
        let summary = crate::util::run::json_lines(&stdout)
            .into_iter()
            .find(|v| v["event"] == "summary")
            .expect("a summary");
        let failed = summary["failed"].as_u64().unwrap();
        assert!((3..40).contains(&failed), "stopped early: {failed} failed");
        assert_eq!(summary["interrupted"], true);
        assert_no_temps(&t.dst());
    }
}

/// `-v`: one line per change, the name only (`/` after a directory,
/// `-> text` after a symlink), `deleting NAME` for a deletion; with `-i`
/// the codes instead.
#[test]
fn verbose_prints_names() {
    let t = crate::util::TestDir::new("verbose_prints_names");
    tree!(t.src(), { "d/f" => file("x"), "l" => symlink("d/f"), "same" => file("s") });
    tree!(t.dst(), { "old" => file("x") });
    std::fs::copy(t.src().join("same"), t.dst().join("same")).unwrap();
    let mtime = std::fs::metadata(t.src().join("same"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(t.dst().join("same"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let o = run_cli(&["--delete", "-v", "-q"], &t.src(), &t.dst());
    assert_exit(&o, 0, "-v");
    let mut lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| *l != "./")
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(lines, ["d/", "d/f", "deleting old", "l -> d/f"]);
    tree!(t.src(), { "new" => file("n") });
    let o = run_cli(&["-v", "-i", "-q"], &t.src(), &t.dst());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.lines().any(|l| l == ">f+++++++++ new"), "{stdout}");
    assert!(!stdout.lines().any(|l| l == "new"), "{stdout}");
}

/// `--stats`: rsync's statistics block after the summary.
#[test]
fn stats_block() {
    let t = crate::util::TestDir::new("stats_block");
    tree!(t.src(), { "d/f" => file("12345"), "g" => file("123"), "l" => symlink("g") });
    tree!(t.dst(), { "old" => file("x"), "oldd/x" => file("x") });
    let o = run_cli(&["--delete", "--stats", "-q"], &t.src(), &t.dst());
    assert_exit(&o, 0, "--stats");
    let stdout = String::from_utf8_lossy(&o.stdout);
    for line in [
        "Number of files: 5 (dir: 2)",
        "Number of created files: 4 (reg: 2, dir: 1, link: 1)",
        "Number of deleted files: 3 (reg: 2, dir: 1)",
        "Number of regular files transferred: 2",
        "Total file size: 8 bytes",
        "Total transferred file size: 8 bytes",
        "Number of failed files: 0",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in\n{stdout}");
    }
    // -q keeps the summary away, not the statistics asked for.
    assert!(!stdout.contains("scanned"), "{stdout}");
}

/// `--log-file`: every line after an RFC 3339 UTC timestamp: the run's
/// start, each change in `-i` form (without `-i`), errors, warnings, the
/// summary and the exit status; appended to, run after run.
#[test]
fn log_file_records_every_event() {
    let test = "log_file_records_every_event";
    let t = crate::util::TestDir::new(test);
    tree!(t.src(), { "new" => file("n"), "bad" => file("b") });
    tree!(t.dst(), { "old1" => file("x"), "old2" => file("x") });
    let log = t.path().join("run.log");
    let user = test_user(test);
    if let Some(u) = user {
        std::fs::set_permissions(
            t.src().join("bad"),
            std::os::unix::fs::PermissionsExt::from_mode(0o000),
        )
        .unwrap();
        u.own(t.path());
    }
    let log_arg = log.to_str().unwrap();
    let args = ["--delete", "--max-delete", "1", "-q", "--log-file", log_arg];
    let o = psync_as(user, &args, &t.src(), &t.dst());
    assert_exit(&o, 1, "--log-file");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines {
        let (ts, _) = line.split_once(' ').expect("timestamp and text");
        assert_eq!(ts.len(), "2026-12-01T04:11:47.123Z".len(), "{line}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{line}");
        assert!(ts[..4].parse::<u32>().is_ok_and(|y| y >= 2024), "{line}");
    }
    let has = |what: &str| lines.iter().any(|l| l.contains(what));
    assert!(has(" sync "), "the start:\n{text}");
    assert!(has(" >f+++++++++ new"), "itemized without -i:\n{text}");
    assert!(has(" *deleting   old"), "{text}");
    assert!(
        has(" warning: deletions stopped by --max-delete (1 entry not deleted)"),
        "{text}"
    );
    assert!(
        has(" Number of deleted files: 1"),
        "the statistics:\n{text}"
    );
    assert!(has(" changes   "), "the summary:\n{text}");
    assert!(lines.last().unwrap().ends_with(" exit status 1"), "{text}");
    if user.is_some() {
        assert!(has(" error: ") && has("bad"), "the error:\n{text}");
    }
    // The next run appends.
    let o = psync_as(user, &args, &t.src(), &t.dst());
    assert_exit(&o, 1, "--log-file again");
    let again = std::fs::read_to_string(&log).unwrap();
    assert!(again.starts_with(&text), "appended");
    assert!(again.len() > text.len());
}

/// A symlink at the log's path is refused, not followed (a root run
/// logging into a shared directory), before anything runs; so is a FIFO.
#[test]
fn log_file_refuses_a_symlink() {
    let t = crate::util::TestDir::new("log_file_refuses_a_symlink");
    tree!(t.src(), { "f" => file("x") });
    let victim = t.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let link = t.path().join("log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let o = run_cli(&["--log-file", link.to_str().unwrap()], &t.src(), &t.dst());
    assert_exit(&o, 2, "symlink log");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("it is a symlink (refused)"), "{stderr}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!t.dst().exists(), "nothing ran");
    let fifo = t.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let o = run_cli(&["--log-file", fifo.to_str().unwrap()], &t.src(), &t.dst());
    assert_exit(&o, 2, "fifo log");
    // No reader: ENXIO at the open (never blocked on); with one, refused
    // as not a regular file.
    assert!(String::from_utf8_lossy(&o.stderr).contains("--log-file"));
    assert!(!t.dst().exists(), "nothing ran");
}

/// `--bwlimit 8M` over 24 MiB in 6 files on 4 threads: about 3 seconds,
/// the rate shared by the threads (wide bounds: a benchmark-style check
/// on a shared machine, not a timing test).
#[test]
fn bwlimit_limits_the_total_rate() {
    let t = crate::util::TestDir::new("bwlimit_limits_the_total_rate");
    std::fs::create_dir_all(t.src()).unwrap();
    for i in 0..6u8 {
        let data: Vec<u8> = (0..4u32 << 20).map(|j| (j % 251) as u8 ^ i).collect();
        std::fs::write(t.src().join(format!("f{i}")), data).unwrap();
    }
    let start = std::time::Instant::now();
    let o = run_cli(
        &["--bwlimit", "8M", "--threads", "4", "-q"],
        &t.src(),
        &t.dst(),
    );
    let secs = start.elapsed().as_secs_f64();
    assert_exit(&o, 0, "--bwlimit");
    assert_synced!(t.src(), t.dst());
    assert!(
        (2.5..8.0).contains(&secs),
        "24 MiB at 8 MiB/s took {secs:.2}s, expected about 3"
    );
}
