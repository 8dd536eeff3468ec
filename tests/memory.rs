//! Memory per worker thread (issue 12): a thread costs what it uses, not
//! megabytes whether or not it copies a large file. Measured as the peak
//! resident set of a real run, which no timing noise affects.

use crate::util::TestDir;
use crate::util::run::{cli_available, psync_cmd};
use std::path::Path;

/// `n` files of 4–16 KiB in directories of 100.
fn small_tree(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let len = 4096 + (i * 1237) % 12_289;
        let byte = u8::try_from(i % 251).unwrap();
        std::fs::write(dir.join(format!("f{i:05}")), vec![byte; len]).unwrap();
    }
}

/// Runs `cmd` and returns its exit status and peak resident set (KiB),
/// from `wait4`'s resource usage: that of this child alone, whatever
/// other tests run alongside.
#[expect(clippy::zombie_processes, reason = "reaped by wait4, not Child::wait")]
fn peak_rss_kib(cmd: &mut std::process::Command) -> (i32, i64) {
    let child = cmd.spawn().expect("run psync");
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: all-zero is a valid `rusage` (integers and timevals).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not waited for yet (`child` is dropped
    // without a wait); `status` and `usage` are valid for writes.
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    (status, usage.ru_maxrss)
}

/// 64 threads verifying small files: each held a 10 MiB direct-I/O buffer
/// before, 670 MiB in all for 100,000 files (about 45 MiB at 4 threads).
/// Now the large buffers come from a small pool that small files never
/// touch, and a thread's own buffer is the size of its largest file (at
/// most 1 MiB): such a run peaks near 20 MiB.
#[test]
fn small_files_at_64_threads_stay_small() {
    if !cli_available() {
        skip!("the psync binary is not built (cargo build --workspace)");
    }
    let t = TestDir::new("small_files_at_64_threads_stay_small");
    small_tree(&t.src(), 5_000);
    let mut cmd = psync_cmd();
    cmd.args(["sync", "-q", "--threads", "64"])
        .arg(t.src())
        .arg(t.dst());
    let (status, peak) = peak_rss_kib(&mut cmd);
    assert_eq!(status, 0, "psync exited with wait status {status:#x}");
    assert!(
        peak < 150 << 10,
        "peak RSS {} MiB at 64 threads on 5,000 small files (bound 150 MiB)",
        peak >> 10
    );
    assert_synced!(t.src(), t.dst());
}
