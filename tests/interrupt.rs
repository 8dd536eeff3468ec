//! Stopping a run (SIGINT for the CLI, the quit flag for the library)
//! leaves no temporary and no partly written file under a final name; the
//! next run completes the job.

use crate::util::run::{cli_available, psync_cmd};
use crate::util::tree::{Node, build, random};
use crate::util::{Opts, TestDir, assert_no_temps, listing, remove_tree, rsync_oracle};
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
    // Chunked (part files below the resume threshold) and hard-linked (the
    // link area): both must be gone after the first signal.
    for i in 0..10 {
        std::fs::hard_link(
            t.src().join(format!("big{i:02}")),
            t.src().join(format!("link{i:02}")),
        )
        .unwrap();
    }
    let mut child = psync_cmd()
        .args(["sync", "-q", "--threads", "2", "--chunk-size", "4M"])
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
    let left: Vec<_> = listing(&t.dst())
        .into_keys()
        .filter(|rel| rel.split(|&b| b == b'/').any(|c| c.starts_with(b".psync")))
        .map(|rel| String::from_utf8_lossy(&rel).into_owned())
        .collect();
    assert!(left.is_empty(), "left behind after one SIGINT: {left:?}");
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

/// Version `v` (0 or 1) of the kill-loop tree: the two differ by type
/// changes both ways (a directory with contents against a file, a
/// symlink against a directory, a fifo against a file), changed and
/// resized large files (chunked, some resumable), hard links, and
/// entries only one version has (deleted with `--delete`).
fn kill_loop_tree(root: &Path, v: usize) {
    let mut nodes = Vec::new();
    for i in 0..300 {
        nodes.push(Node::at(
            format!("small/{}/f{i:03}", i % 10),
            crate::util::tree::file(format!("v{v} file {i}")),
        ));
    }
    for i in 0..4u64 {
        let size = (6 + i + v as u64) << 20;
        nodes.push(Node::at(format!("big/b{i}"), random(size)));
    }
    let (file_side, dir_side) = if v == 0 { ("t0", "t1") } else { ("t1", "t0") };
    nodes.push(Node::at(
        file_side,
        crate::util::tree::file(format!("v{v} a file")),
    ));
    for i in 0..50 {
        nodes.push(Node::at(
            format!("{dir_side}/sub/g{i}"),
            crate::util::tree::file(format!("v{v} {i}")),
        ));
    }
    nodes.push(Node::at(
        "only",
        crate::util::tree::file(format!("v{v} only")),
    ));
    if v == 0 {
        nodes.push(Node::at("sl", crate::util::tree::symlink("small")));
        nodes.push(Node::at("pipe", crate::util::tree::fifo()));
        nodes.push(Node::at(
            "gone/deep/x",
            crate::util::tree::file("only in v0"),
        ));
    } else {
        nodes.push(Node::at(
            "sl/inside",
            crate::util::tree::file("sl is a dir now"),
        ));
        nodes.push(Node::at(
            "pipe",
            crate::util::tree::file("pipe is a file now"),
        ));
        nodes.push(Node::at(
            "new/deep/y",
            crate::util::tree::file("only in v1"),
        ));
    }
    nodes.push(Node::at(
        "links/a",
        crate::util::tree::file(format!("v{v} linked")),
    ));
    nodes.push(Node::at("links/b", crate::util::tree::hardlink("links/a")));
    if v == 1 {
        nodes.push(Node::at("links/c", crate::util::tree::hardlink("links/a")));
    }
    build(root, nodes);
}

/// After any kill, every file under a final name in `dst` is one of the
/// two versions whole: never a mix, never a partial copy.
#[track_caller]
fn assert_whole_versions(versions: &[std::path::PathBuf; 2], dst: &Path) {
    for (rel, m) in listing(dst) {
        // psync's own temporaries, parts and link areas, and what is in them.
        let temp = rel.split(|&b| b == b'/').any(|c| c.starts_with(b".psync"));
        if m.kind != 'f' || temp {
            continue;
        }
        let name = crate::util::bpath(&rel);
        let got = crate::util::read(dst.join(name));
        let whole = versions
            .iter()
            .map(|v| v.join(name))
            .filter(|p| p.symlink_metadata().is_ok_and(|m| m.is_file()))
            .any(|p| std::fs::read(p).is_ok_and(|want| want == got));
        assert!(
            whole,
            "{} is neither version whole ({} bytes)",
            name.display(),
            got.len()
        );
    }
}

/// 30 SIGKILLs at random moments of runs with `--delete` over a tree whose
/// two versions alternate (type changes both ways, chunked and resumable
/// large files, hard links): after every kill each target file is one
/// version whole, and a last run converges exactly.
#[test]
fn kill_loop_with_type_changes_under_delete() {
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let t = TestDir::new("kill_loop_with_type_changes_under_delete");
    let versions = [t.join("v0"), t.join("v1")];
    kill_loop_tree(&versions[0], 0);
    kill_loop_tree(&versions[1], 1);
    let run = |extra: &[&str]| {
        psync_cmd()
            .args([
                "sync",
                "-q",
                "--delete",
                "--chunk-size",
                "1M",
                "--resume-threshold",
                "7M",
            ])
            .args(extra)
            .arg(t.src())
            .arg(t.dst())
            .spawn()
            .expect("start psync")
    };
    let install = |v: usize| {
        remove_tree(&t.src());
        assert!(t.src().symlink_metadata().is_err(), "source not removed");
        crate::util::copy_tree(&versions[v], &t.src());
    };
    install(0);
    let started = Instant::now();
    assert!(run(&[]).wait().unwrap().success());
    let full = started.elapsed().max(Duration::from_millis(50));
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    eprintln!("kill loop: a full run takes {full:?}; seed {seed:#x}");
    let mut current = 0;
    for round in 0..30 {
        if round % 3 == 0 {
            current = 1 - current;
            install(current);
        }
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let wait = full.mul_f64((seed >> 33) as f64 / f64::from(1u32 << 31));
        let threads = ["1", "2", "8"][(seed % 3) as usize];
        let mut child = run(&["--threads", threads]);
        std::thread::sleep(wait);
        let _ = child.kill();
        let _ = child.wait();
        assert_whole_versions(&versions, &t.dst());
    }
    // The last run, uninterrupted, converges (its errors go to stderr).
    let status = run(&[]).wait().expect("last run");
    assert_eq!(status.code(), Some(0), "the last run");
    assert_synced!(t.src(), t.dst());
    assert_no_temps(&t.dst());
    rsync_oracle(&t.src(), &t.dst());
}
