//! Storage that fails (issue 12, "Nothing lost, everything exact"), on
//! faultfs, the fault-injecting FUSE file system of `util::faultfs`: a
//! target that corrupts what it stores is caught by verification for
//! small and chunked files alike (the read-back reaches the storage, not
//! the page cache that still holds what was written), and a source that
//! fails to read is reported as the source's failure, naming its path.

use crate::util::TestDir;
use crate::util::faultfs::Fault;
use crate::util::run::{cli_available, json_lines, psync_cmd};
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
