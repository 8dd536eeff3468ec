//! Storage that fails (issue 12, "Nothing lost, everything exact"), on
//! faultfs, the fault-injecting FUSE file system of `util::faultfs`: a
//! target that corrupts what it stores is caught by verification for
//! small and chunked files alike (the read-back reaches the storage, not
//! the page cache that still holds what was written), and a source that
//! fails to read is reported as the source's failure, naming its path.

use crate::util::TestDir;
use crate::util::faultfs::Fault;
use crate::util::run::{cli_available, interrupt, json_lines, psync_cmd, wait_at_most};
use serde_json::Value;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// `psync sync --json ARGS SRC DST`: the exit code and the error events.
fn sync_json(args: &[&str], src: &Path, dst: &Path) -> (i32, Vec<Value>, String) {
    let out = psync_cmd()
        .args(["sync", "--json"])
        .args(args)
        .arg(src)
        .arg(dst)
        .output()
        .expect("run psync");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let errors = json_lines(&stdout)
        .into_iter()
        .filter(|e| e["event"] == "error")
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), errors, stderr)
}

fn errors_of<'a>(errors: &'a [Value], path: &str) -> Vec<&'a Value> {
    errors.iter().filter(|e| e["path"] == path).collect()
}

/// A target whose storage flips a byte of every write: the small files
/// and the 150 MiB file copied in 4 MiB chunks all fail verification
/// (exit 1), and no corrupt file is put in place: old targets keep their
/// content, new ones do not appear.
#[test]
fn target_that_corrupts_writes_fails_every_file() {
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let t = TestDir::new("target_that_corrupts_writes_fails_every_file");
    let back = t.join("dst-back");
    tree!(t.src(), {
        "small" => random(5000),
        "big" => random(150 * MIB + 123),
        "d/new" => random(70_000),
    });
    tree!(back, { "small" => file("old small"), "big" => file("old big") });
    let fs = require_faultfs!(back, t.dst(), [Fault::CorruptWrite("*")]);
    let (code, errors, stderr) = sync_json(&["--chunk-size", "4M"], &t.src(), fs.path());
    assert_eq!(code, 1, "exit status; stderr: {stderr}");
    for path in ["small", "big", "d/new"] {
        let errs = errors_of(&errors, path);
        assert!(
            errs.iter().any(|e| e["op"] == "verify"),
            "{path}: no verification failure in {errors:#?}"
        );
    }
    drop(fs);
    assert_eq!(crate::util::read(back.join("small")), b"old small");
    assert_eq!(crate::util::read(back.join("big")), b"old big");
    assert!(
        back.join("d/new").symlink_metadata().is_err(),
        "a corrupt new file was put in place"
    );
    crate::util::assert_no_temps(&back);
}

/// A source file whose reads fail with EIO (a whole file and a chunked
/// one): each is reported as a read of the SOURCE path, never as the
/// target's failure, and everything else is synced.
#[test]
fn source_read_error_names_the_source() {
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let t = TestDir::new("source_read_error_names_the_source");
    let back = t.join("src-back");
    tree!(back, {
        "ok" => random(3000),
        "d/ok2" => random(9 * MIB),
        "bad" => random(100_000),
        "d/bigbad" => random(9 * MIB + 5),
    });
    let fs = require_faultfs!(back, t.src(), [Fault::EioRead("*bad")]);
    let (code, errors, stderr) = sync_json(&["--chunk-size", "4M"], fs.path(), &t.dst());
    assert_eq!(code, 1, "exit status; stderr: {stderr}");
    let dst = t.dst().display().to_string();
    for path in ["bad", "d/bigbad"] {
        let src = fs.path().join(path).display().to_string();
        let errs = errors_of(&errors, path);
        assert!(
            errs.iter().any(|e| e["op"] == "read"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&src) && m.contains("Input/output error"))),
            "{path}: no read error naming {src}: {errors:#?}"
        );
        assert!(
            !errs.iter().any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains(&dst) && m.contains("Input/output error"))),
            "{path}: the source's I/O error blamed on the target: {errors:#?}"
        );
        assert!(t.dst().join(path).symlink_metadata().is_err());
    }
    for path in ["ok", "d/ok2"] {
        assert!(errors_of(&errors, path).is_empty(), "{errors:#?}");
        assert_eq!(
            crate::util::read(t.dst().join(path)),
            crate::util::read(back.join(path))
        );
    }
    crate::util::assert_no_temps(&t.dst());
}

/// A target whose writes of file data fail with EIO (temporaries and
/// part files; not journals, whose failure is reported as such): each
/// file's error is a write of the TARGET path, the old target stays,
/// nothing is left behind.
#[test]
fn target_write_error_names_the_target() {
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let t = TestDir::new("target_write_error_names_the_target");
    let back = t.join("dst-back");
    tree!(t.src(), { "f" => random(50_000), "big" => random(9 * MIB) });
    tree!(back, { "f" => file("old") });
    let fs = require_faultfs!(
        back,
        t.dst(),
        [Fault::EioWrite(
            "/.psync-tmp.*:/.psync-part.????????????????"
        )]
    );
    let (code, errors, stderr) = sync_json(&["--chunk-size", "4M"], &t.src(), fs.path());
    assert_eq!(code, 1, "exit status; stderr: {stderr}");
    for path in ["f", "big"] {
        let dst = fs.path().join(path).display().to_string();
        assert!(
            errors_of(&errors, path).iter().any(|e| e["op"] == "write"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&dst) && m.contains("Input/output error"))),
            "{path}: no write error naming {dst}: {errors:#?}"
        );
    }
    drop(fs);
    assert_eq!(crate::util::read(back.join("f")), b"old");
    assert!(back.join("big").symlink_metadata().is_err());
    crate::util::assert_no_temps(&back);
}

/// Every name below `root` that starts with `.psync` (temporaries, parts,
/// journals, link areas), as relative paths.
fn psync_leftovers(root: &Path) -> Vec<String> {
    crate::util::listing(root)
        .into_keys()
        .filter(|rel| rel.split(|&b| b == b'/').any(|c| c.starts_with(b".psync")))
        .map(|rel| String::from_utf8_lossy(&rel).into_owned())
        .collect()
}

/// A source read that never returns (a hung server) does not keep an
/// interrupted run's temporaries: SIGINT, and within the stop grace the
/// run's part files and hard-link area are removed and psync exits with
/// status 2, although a task is still stuck in `read`.
#[test]
fn sigint_with_a_read_that_never_returns() {
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let t = TestDir::new("sigint_with_a_read_that_never_returns");
    let back = t.join("src-back");
    let mut nodes = vec![
        crate::util::tree::Node::at("stuck-big", crate::util::tree::random(3 * MIB + 5)),
        crate::util::tree::Node::at("stuck-small", crate::util::tree::random(5000)),
    ];
    for i in 0..20 {
        let a = format!("links/a{i}");
        nodes.push(crate::util::tree::Node::at(
            &a,
            crate::util::tree::random(100 + i),
        ));
        nodes.push(crate::util::tree::Node::at(
            format!("links/b{i}"),
            crate::util::tree::hardlink(&a),
        ));
    }
    crate::util::tree::build(&back, nodes);
    let fs = require_faultfs!(back, t.src(), [Fault::HangRead("/stuck*")]);
    let mut child = psync_cmd()
        .args(["sync", "-q", "--chunk-size", "1M", "--stop-grace", "1"])
        .arg(fs.path())
        .arg(t.dst())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start psync");
    // Everything else is copied well within this; the stuck files never are.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended with reads hung"
    );
    let before = psync_leftovers(&t.dst());
    assert!(
        !before.is_empty(),
        "nothing of the run's own to remove: the test proves nothing"
    );
    interrupt(&child);
    let started = std::time::Instant::now();
    let limit = std::time::Duration::from_secs(20);
    let status = wait_at_most(&mut child, limit, "exit after SIGINT (stop grace 1 s)");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    eprintln!("exited after {:?}: {stderr}", started.elapsed());
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("temporaries removed"), "{stderr}");
    assert_eq!(
        psync_leftovers(&t.dst()),
        Vec::<String>::new(),
        "left behind (before: {before:?})"
    );
    drop(fs);
}

/// `--delete` after source errors, on a real faulty file system: entries
/// whose `lstat` fails with EIO (and their directory's extraneous ones)
/// are not deleted; the run says so and exits 1.
#[test]
fn source_stat_errors_delete_nothing() {
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let t = TestDir::new("source_stat_errors_delete_nothing");
    let back = t.join("src-back");
    tree!(back, { "d/ok" => file("ok"), "d/flaky1" => file("new"), "e/f" => file("f") });
    tree!(t.dst(), {
        "d/flaky1" => file("old"), "d/extra" => file("extra"), "e/extra" => file("extra"),
    });
    let fs = require_faultfs!(back, t.src(), [Fault::EioStat("/d/flaky*")]);
    let (code, errors, stderr) = sync_json(&["--delete"], fs.path(), &t.dst());
    assert_eq!(code, 1, "{errors:?} {stderr}");
    let flaky = errors_of(&errors, "d/flaky1");
    assert_eq!(flaky.len(), 1, "{errors:?}");
    assert_eq!(crate::util::read(t.dst().join("d/flaky1")), b"old");
    assert_eq!(crate::util::read(t.dst().join("d/extra")), b"extra");
    assert_eq!(crate::util::read(t.dst().join("d/ok")), b"ok");
    assert!(
        !t.dst().join("e/extra").exists(),
        "other directories are synced"
    );
}

/// A second signal exits at once, with the same status as the first (2),
/// even while a read hangs and the stop grace is long.
#[test]
fn second_signal_exits_at_once_with_status_2() {
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let t = TestDir::new("second_signal_exits_at_once_with_status_2");
    let back = t.join("src-back");
    tree!(back, { "stuck" => random(5000), "ok" => file("ok") });
    let fs = require_faultfs!(back, t.src(), [Fault::HangRead("/stuck")]);
    let mut child = psync_cmd()
        .args(["sync", "-q", "--stop-grace", "600"])
        .arg(fs.path())
        .arg(t.dst())
        .spawn()
        .expect("start psync");
    std::thread::sleep(std::time::Duration::from_millis(700));
    for _ in 0..2 {
        interrupt(&child);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let limit = std::time::Duration::from_secs(10);
    let status = wait_at_most(&mut child, limit, "exit after a second SIGINT");
    assert_eq!(status.code(), Some(2));
    drop(fs);
}
