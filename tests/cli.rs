//! The `psync` binary's own contract: JSON lines, quiet mode, itemized
//! text, exit statuses.

use crate::util::run::{cli_available, json_lines, psync_cmd, run_cli};
use crate::util::{TestDir, rsync_oracle};

macro_rules! require_cli {
    () => {
        if !cli_available() {
            skip!("the psync binary is not built (cargo build --workspace)");
        }
    };
}

fn fixture(name: &str) -> TestDir {
    let t = TestDir::new(name);
    tree!(t.src(), { "a" => file("a"), "d/b" => random(100_000), "l" => symlink("a"), "p" => fifo(), "e" => dir() });
    t
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn json_lines_end_with_a_summary() {
    require_cli!();
    let t = fixture("json_lines_end_with_a_summary");
    let out = run_cli(&["--json", "-i", "--threads", "2"], &t.src(), &t.dst());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "stderr: {}", text(&out.stderr));
    let events = json_lines(&text(&out.stdout));
    let last = events.last().expect("no JSON output");
    assert_eq!(last["event"], "summary", "last line: {last}");
    assert_eq!(events.iter().filter(|e| e["event"] == "summary").count(), 1);
    assert_eq!(last["exit_code"], 0);
    assert_eq!(last["created"], 6, "{last}");
    assert_eq!(last["bytes_copied"], 100_001, "{last}");
    assert_eq!(last["interrupted"], false);
    let items: Vec<_> = events.iter().filter(|e| e["event"] == "itemize").collect();
    assert_eq!(items.len(), 7, "a line per entry and the root: {items:#?}");
    for e in &items {
        let code = e["code"]
            .as_str()
            .unwrap_or_else(|| panic!("itemize event without code: {e}"));
        assert_eq!(code.len(), 11, "{e}");
        assert!(e["path"].is_string(), "{e}");
    }
    let new_file = items
        .iter()
        .find(|e| e["path"] == "d/b")
        .expect("d/b itemized");
    assert_eq!(new_file["code"], ">f+++++++++");
    // The same run in text: the same changes.
    let t2 = fixture("json_lines_end_with_a_summary-text");
    let txt = run_cli(&["-i", "-q"], &t2.src(), &t2.dst());
    let mut lines: Vec<String> = text(&txt.stdout).lines().map(str::to_string).collect();
    let mut from_json: Vec<String> =
        crate::util::run::sync_cli(&t2.src(), &t.join("third"), 2, &Default::default()).itemized;
    lines.sort();
    from_json.sort();
    assert_eq!(
        lines, from_json,
        "-i text and --json itemize events disagree"
    );
}

#[test]
fn json_reports_failed_entries() {
    require_cli!();
    let t = fixture("json_reports_failed_entries");
    tree!(t.src(), { "huge" => random(2 << 20) });
    let mut cmd = psync_cmd();
    cmd.args(["sync", "--json"]).arg(t.src()).arg(t.dst());
    crate::failures::limit_file_size(&mut cmd, 1 << 20);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let events = json_lines(&text(&out.stdout));
    let err = events
        .iter()
        .find(|e| e["event"] == "error")
        .expect("an error event");
    assert_eq!(err["path"], "huge", "{err}");
    assert_eq!(err["op"], "write", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains(&t.dst().join("huge").display().to_string()),
        "{err}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["event"], "summary");
    assert_eq!(last["exit_code"], 1);
    assert_eq!(last["failed"], 1);
}

#[test]
fn quiet_prints_nothing_on_success() {
    require_cli!();
    let t = fixture("quiet_prints_nothing_on_success");
    let out = run_cli(&["-q"], &t.src(), &t.dst());
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    assert!(out.stderr.is_empty(), "stderr: {}", text(&out.stderr));
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
}

#[test]
fn itemize_text_and_the_quiet_second_run() {
    require_cli!();
    let t = fixture("itemize_text_and_the_quiet_second_run");
    let out = run_cli(&["-i", "-q", "--delete"], &t.src(), &t.dst());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            ">f+++++++++ a",
            ">f+++++++++ d/b",
            "cL+++++++++ l -> a",
            "cS+++++++++ p",
            "cd+++++++++ ./",
            "cd+++++++++ d/",
            "cd+++++++++ e/"
        ]
    );
    let again = run_cli(&["-i", "-q", "--delete"], &t.src(), &t.dst());
    assert_eq!(again.status.code(), Some(0));
    assert!(
        again.stdout.is_empty(),
        "second run itemized: {}",
        text(&again.stdout)
    );
    assert!(again.stderr.is_empty(), "{}", text(&again.stderr));
}

#[test]
fn summary_is_printed_unless_quiet() {
    require_cli!();
    let t = fixture("summary_is_printed_unless_quiet");
    let out = run_cli(&[], &t.src(), &t.dst());
    assert_eq!(out.status.code(), Some(0));
    assert!(!out.stdout.is_empty(), "no summary without -q");
    assert!(out.stderr.is_empty(), "stderr: {}", text(&out.stderr));
}

#[test]
fn usage_errors_exit_2() {
    require_cli!();
    let t = fixture("usage_errors_exit_2");
    for args in [
        vec!["sync"],
        vec!["sync", "only-one-path"],
        vec!["sync", "--threads", "0", "a", "b"],
        vec!["sync", "--no-such-flag", "a", "b"],
    ] {
        let out = psync_cmd()
            .args(&args)
            .current_dir(t.path())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "psync {args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "psync {args:?}: no message");
    }
    assert!(!t.join("b").exists());
}

/// Values outside what the engine supports are refused before anything
/// runs (exit 2, a message naming the option and the range; the target
/// is not created), in the CLI and in the library: nothing is clamped
/// silently, no thousand threads are started.
#[test]
fn absurd_options_are_refused() {
    require_cli!();
    let t = fixture("absurd_options_are_refused");
    for (args, says) in [
        (&["--threads", "1000000"][..], "1..=256"),
        (&["--threads", "0"][..], "1..=256"),
        (&["--chunk-size", "10"][..], "1M to 1T"),
        (&["--chunk-size", "1000001"][..], "multiple of 4K"),
        (&["--chunk-size", "2T"][..], "1M to 1T"),
        (&["--retries", "1000"][..], "0..=100"),
        (&["--modify-window", "99999999999"][..], "0..=2147483647"),
        (&["--min-age", "99999999999"][..], "0..=2147483647"),
        (&["--stop-grace", "18446744073709551615"][..], "0..=86400"),
    ] {
        let out = run_cli(args, &t.src(), &t.dst());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(says) && err.contains(args[0]),
            "{args:?}: {err}"
        );
        assert!(!t.dst().exists(), "{args:?} created the target");
    }
    for (threads, chunk, retries, says) in [
        (
            1_000_000,
            64 << 20,
            2,
            "threads: must be 1 to 256, not 1000000",
        ),
        (0, 64 << 20, 2, "threads: must be 1 to 256, not 0"),
        (4, 10, 2, "chunk size: must be 1 MiB to 1 TiB"),
        (4, 64 << 20, 1000, "retries: must be 0 to 100"),
    ] {
        let mut b = psync::builder(t.src(), t.dst());
        b.threads(threads).chunk_size(chunk).retries(retries);
        let err = b.build().expect_err("refused").to_string();
        assert!(err.contains(says), "{err}");
    }
    let huge = std::time::Duration::from_secs(u64::MAX);
    for (set, says) in [
        (0, "modify window: must be at most 2147483647 s"),
        (1, "min age: must be at most 2147483647 s"),
        (2, "stop grace: must be at most 86400 s"),
    ] {
        let mut b = psync::builder(t.src(), t.dst());
        match set {
            0 => b.modify_window(huge),
            1 => b.min_age(huge),
            _ => b.stop_grace(huge),
        };
        let err = b.build().expect_err("refused").to_string();
        assert!(err.contains(says), "{err}");
    }
}
