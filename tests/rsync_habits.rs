//! rsync's command-line habits: the archive-family flags run as psync's
//! defaults and end where rsync ends; options psync does not implement are
//! refused (exit 2, saying so) before anything is touched.

use crate::util::compare::{assert_untouched, differences};
use crate::util::run::{cli_available, run_cli};
use crate::util::{TestDir, require_rsync, rsync_oracle, slash, stat_snapshot};
use std::process::Command;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// True for a `differences` line "differs: P: mtime S.N != S.M".
fn same_second(line: &str) -> bool {
    let Some((_, times)) = line.split_once(": mtime ") else {
        return false;
    };
    let secs: Vec<&str> = times
        .split(" != ")
        .map(|t| t.split('.').next().unwrap_or(t))
        .collect();
    secs.len() == 2 && secs[0] == secs[1] && !times.contains(',')
}

/// A source with every kind psync and rsync -aHAX keep, and a target
/// with an old file, a changed one and extraneous entries to delete.
fn fixture(t: &TestDir) {
    tree!(t.src(), {
        "f" => file("new content") xattr("user.color", "blue"),
        "same" => file("same"),
        "d/g" => random(70_000) mode(0o640),
        "d/h" => hardlink("d/g"),
        "d/e" => dir() mode(0o750),
        "l" => symlink("d/g"),
        "p" => fifo(),
        "s" => sparse(1 << 20),
    });
    tree!(t.dst(), {
        "f" => file("old"),
        "gone" => file("extraneous"),
        "gone-dir/x" => file("x"),
        "d/stale" => file("stale"),
    });
}

#[test]
fn archive_flags_end_where_rsync_ends() {
    if !cli_available() {
        skip!("the psync binary is not built (cargo build --workspace)");
    }
    if !require_rsync() {
        return;
    }
    let t = TestDir::new("archive_flags_end_where_rsync_ends");
    fixture(&t);
    // The same start for rsync.
    let theirs = t.join("rsync-dst");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(t.dst())
        .arg(&theirs)
        .status();
    assert!(cp.is_ok_and(|s| s.success()));
    let flags = ["-aHAX", "--numeric-ids", "--delete-after"];
    let src = slash(&t.src());
    let out = run_cli(&flags, src.as_ref(), slash(&t.dst()).as_ref());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rs = Command::new("rsync")
        .args(flags)
        .arg(&src)
        .arg(slash(&theirs))
        .output()
        .expect("run rsync");
    assert!(rs.status.success(), "rsync: {}", text(&rs.stderr));
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
    // rsync 3.2.7 takes mtimes within one second as equal and leaves
    // them (psync's are exact, assert_synced! checked): only whole
    // seconds are compared with its result.
    let (diffs, _, _) = differences(&theirs, &t.dst(), &[]);
    let diffs: Vec<String> = diffs.into_iter().filter(|d| !same_second(d)).collect();
    assert!(
        diffs.is_empty(),
        "psync and rsync differ:\n{}",
        diffs.join("\n")
    );
    assert!(!t.dst().join("gone").exists() && !t.dst().join("d/stale").exists());
}

#[test]
fn refused_rsync_options_touch_nothing() {
    if !cli_available() {
        skip!("the psync binary is not built (cargo build --workspace)");
    }
    let t = TestDir::new("refused_rsync_options_touch_nothing");
    fixture(&t);
    let before = stat_snapshot(&t.dst());
    for (args, name) in [
        (&["-aHz"][..], "-z"),
        (&["-aHAX", "--inplace"], "--inplace"),
        (&["-a", "--compress"], "--compress"),
        (&["-e", "ssh"], "-e"),
        (&["--partial", "--delete"], "--partial"),
        (&["-aHAXu", "--delete"], "-u"),
        (&["--link-dest=/x"], "--link-dest"),
        (&["--remove-source-files"], "--remove-source-files"),
    ] {
        let out = run_cli(args, &t.src(), &t.dst());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("psync does not implement rsync's {name}: ")),
            "{args:?}: {err}"
        );
        assert!(!err.contains("tip:"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert_untouched(&before, &stat_snapshot(&t.dst()), "refused options");
}
