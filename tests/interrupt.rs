//! Stopping a run (SIGINT for the CLI, the quit flag for the library)
//! leaves no temporary and no partly written file under a final name; the
//! next run completes the job.

use crate::util::run::{cli_available, psync_cmd};
use crate::util::tree::{Node, build, random};
use crate::util::{Opts, TestDir, assert_no_temps, listing, rsync_oracle};
use std::path::Path;
use std::time::{Duration, Instant};

const FILES: usize = 20;
const SIZE: u64 = 20 << 20;

fn big_tree(src: &Path) {
    build(
        src,
        (0..FILES)
            .map(|i| Node::at(format!("big{i:02}"), random(SIZE)))
            .collect(),
    );
}

/// Waits until psync has started writing into `dst` (any entry in it).
fn wait_for_first_write(dst: &Path, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::fs::read_dir(dst).is_ok_and(|mut d| d.next().is_some()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every file in `dst` under its final name is complete: same size and
/// bytes as the source. Returns how many there are.
#[track_caller]
fn assert_only_complete_files(src: &Path, dst: &Path) -> usize {
    assert_no_temps(dst);
    let mut complete = 0;
    for (rel, m) in listing(dst) {
        if m.kind != 'f' {
            continue;
        }
        let name = crate::util::bpath(&rel);
        let (a, b) = (
            crate::util::read(src.join(name)),
            crate::util::read(dst.join(name)),
        );
        assert!(
            a == b,
            "{} is in the target under its final name but incomplete ({} of {} bytes)",
            name.display(),
            b.len(),
            a.len()
        );
        complete += 1;
    }
    complete
}

#[test]
fn sigint_stops_the_cli_cleanly() {
    if !cli_available() {
        eprintln!("SKIPPED sigint_stops_the_cli_cleanly: the psync binary is not built");
        return;
    }
    let t = TestDir::new("sigint_stops_the_cli_cleanly");
    big_tree(&t.src());
    let mut child = psync_cmd()
        .args(["sync", "-q", "--threads", "2"])
        .arg(t.src())
        .arg(t.dst())
        .spawn()
        .expect("start psync");
    let started = Instant::now();
    // Rather than a fixed delay (too early on a slow machine, too late on
    // a fast one), signal as soon as psync writes its first entry: the
    // run is then surely under way and surely far from done.
    wait_for_first_write(&t.dst(), Duration::from_secs(10));
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("send SIGINT");
    let status = child.wait().expect("wait for psync");
    let complete = assert_only_complete_files(&t.src(), &t.dst());
    eprintln!(
        "interrupted after {:?} with {complete} of {FILES} files complete",
        started.elapsed()
    );
    assert!(
        complete < FILES,
        "the run finished before SIGINT arrived: the test proves nothing (make the tree bigger)"
    );
    assert_eq!(status.code(), Some(2), "exit status after SIGINT: {status}");
    // The next run completes the job.
    let out = psync_cmd()
        .args(["sync", "-q"])
        .arg(t.src())
        .arg(t.dst())
        .output()
        .expect("rerun psync");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
}

#[test]
fn quit_flag_stops_the_library_cleanly() {
    let t = TestDir::new("quit_flag_stops_the_library_cleanly");
    big_tree(&t.src());
    let mut b = psync::builder(t.src(), t.dst());
    b.threads(2);
    let sync = b.build().expect("build");
    let quit = sync.quit_flag();
    let report = std::thread::scope(|s| {
        let run = s.spawn(|| sync.run());
        wait_for_first_write(&t.dst(), Duration::from_secs(10));
        quit.store(true, std::sync::atomic::Ordering::Relaxed);
        run.join().expect("run thread")
    })
    .expect("an interrupted run is not an error");
    assert!(
        report.interrupted,
        "report does not say interrupted: {report:?}"
    );
    assert!(!report.success());
    let complete = assert_only_complete_files(&t.src(), &t.dst());
    assert!(
        complete < FILES,
        "the run finished before the quit flag was set"
    );
    let out = crate::util::run::sync_lib(&t.src(), &t.dst(), 8, &Opts::default());
    out.assert_ok();
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
}
