//! Progress: the engine tells when the walk is over (the totals grow no
//! more), and `--progress` writes plain lines on stderr, never stdout.

use crate::util::run::{json_lines, psync_cmd};
use crate::util::{Front, each_config};
use psync::{Event, Snapshot};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// 3 levels of 5 directories (155 with the root), a small file in each.
fn nested(root: &Path) -> u64 {
    let mut dirs = vec![root.to_path_buf()];
    let mut all = 1;
    for _ in 0..3 {
        let mut next = Vec::new();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("f"), b"data").unwrap();
            for i in 0..5 {
                next.push(d.join(format!("d{i}")));
                all += 1;
            }
        }
        dirs = next;
    }
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("f"), b"data").unwrap();
    }
    all
}

/// Every snapshot that says the walk is over has the final totals; the
/// last counters say it is over, with every directory listed. In every
/// configuration (the scattered one with its redeliveries: a task
/// counts once, whichever delivery is acknowledged).
#[test]
fn walk_done_means_the_totals_are_final() {
    each_config("walk_done_means_the_totals_are_final", |cfg, t| {
        let dirs = nested(&t.src());
        let (snaps, last): (Vec<Snapshot>, Snapshot) = match cfg.front {
            Front::Cli => {
                let o = psync_cmd()
                    .args(["sync", "--json", "--threads", &cfg.threads.to_string()])
                    .arg(t.src())
                    .arg(t.dst())
                    .output()
                    .unwrap();
                assert_eq!(o.status.code(), Some(0), "{o:?}");
                let lines = json_lines(&String::from_utf8_lossy(&o.stdout));
                let snaps = lines
                    .iter()
                    .filter(|v| v["event"] == "progress")
                    .map(snapshot_of)
                    .collect();
                (snaps, snapshot_of(lines.last().unwrap()))
            }
            _ => {
                let (tx, rx) = crossbeam_channel::unbounded();
                let mut b = psync::builder(t.src(), t.dst());
                cfg.apply(&mut b);
                b.progress_interval(Duration::from_millis(1)).events(tx);
                let report = b.build().and_then(|s| s.run()).unwrap();
                drop(b);
                let snaps = rx
                    .iter()
                    .filter_map(|e| match e {
                        Event::Progress(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                (snaps, report.stats)
            }
        };
        assert!(last.walk_done(), "{cfg}: {last:?}");
        assert_eq!(last.dirs, dirs, "{cfg}");
        for s in snaps.iter().filter(|s| s.walk_done()) {
            assert_eq!(
                (s.scanned, s.dirs, s.bytes_to_copy),
                (last.scanned, last.dirs, last.bytes_to_copy),
                "{cfg}: walk over at {s:?}"
            );
        }
        eprintln!(
            "{cfg}: {} snapshots, {} before the walk was over",
            snaps.len(),
            snaps.iter().filter(|s| !s.walk_done()).count()
        );
    });
}

/// Through a broker the counters are sums in Redis (signed 64-bit
/// integers, that only grow): the walk ends there too, with the final
/// totals.
#[test]
fn walk_done_through_a_broker() {
    let t = crate::util::TestDir::new("walk_done_through_a_broker");
    let c = cluster!(t, 2);
    let dirs = nested(&t.src());
    let o = c.sync(&t.src(), &t.dst(), &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let lines = json_lines(&String::from_utf8_lossy(&o.stdout));
    let last = snapshot_of(lines.last().unwrap());
    assert!(last.walk_done(), "{last:?}");
    assert_eq!(last.dirs, dirs);
    for v in lines.iter().filter(|v| v["event"] == "progress") {
        let s = snapshot_of(v);
        if s.walk_done() {
            assert_eq!((s.scanned, s.dirs), (last.scanned, last.dirs), "{s:?}");
        }
    }
}

/// The counters of a `--json` progress or summary line.
fn snapshot_of(v: &serde_json::Value) -> Snapshot {
    let fields = serde_json::to_value(Snapshot::default()).unwrap();
    let mut m = v.as_object().unwrap().clone();
    m.retain(|k, _| fields.get(k).is_some());
    serde_json::from_value(m.into()).unwrap()
}

/// `--progress` with stderr to a pipe, on a run slowed by `--bwlimit`
/// to about 6 seconds: a plain line on stderr after 5 seconds, nothing
/// on stdout, no escape sequences. `--no-progress`, run alongside: no
/// line. Both runs at once, so the test takes one run's time.
#[test]
fn progress_lines_on_a_pipe() {
    let t = crate::util::TestDir::new("progress_lines_on_a_pipe");
    std::fs::create_dir_all(t.src()).unwrap();
    let data: Vec<u8> = (0..3u32 << 20).map(|j| (j % 251) as u8).collect();
    std::fs::write(t.src().join("f"), data).unwrap();
    let start = Instant::now();
    let run = |flag: &str, dst: &str| {
        psync_cmd()
            .args(["sync", flag, "--bwlimit", "512K"])
            .arg(t.src())
            .arg(t.join(dst))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (on, off) = (run("--progress", "on"), run("--no-progress", "off"));
    let (on, off) = (
        on.wait_with_output().unwrap(),
        off.wait_with_output().unwrap(),
    );
    let secs = start.elapsed().as_secs_f64();
    assert!(secs > 5.0, "3 MiB at 512 KiB/s took {secs:.2}s");
    for o in [&on, &off] {
        assert_eq!(o.status.code(), Some(0), "{o:?}");
    }
    let (out, err) = (
        String::from_utf8_lossy(&on.stdout),
        String::from_utf8_lossy(&on.stderr),
    );
    let progress: Vec<&str> = err.lines().filter(|l| l.contains(" entries")).collect();
    assert!(!progress.is_empty(), "no progress line on stderr: {err:?}");
    for l in &progress {
        assert!(
            l.len() <= 80 && l.is_ascii() && !l.contains('\x1b'),
            "{l:?}"
        );
        assert!(
            l.starts_with("scanning  ") || l.contains("%  "),
            "neither scanning nor a percentage: {l:?}"
        );
    }
    // The summary is on stdout, the progress is not.
    assert!(out.contains("copied "), "{out}");
    assert!(!out.contains(" entries  "), "progress on stdout: {out}");
    let off_err = String::from_utf8_lossy(&off.stderr);
    assert!(!off_err.contains(" entries"), "--no-progress: {off_err:?}");
    assert!(!String::from_utf8_lossy(&off.stdout).contains(" entries  "));
}
