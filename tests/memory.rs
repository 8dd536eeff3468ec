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

/// Runs `cmd` and returns its exit status and peak resident set (KiB):
/// the child's `VmHWM`, read until it exits. Not `wait4`'s `ru_maxrss`:
/// that also counts the memory of this test process, which the child
/// shares until it calls `exec` (its `vfork` is counted as the child's).
/// The high-water mark only grows, and the buffers measured here live as
/// long as the workers: the last reading before the exit holds them.
fn peak_rss_kib(cmd: &mut std::process::Command) -> (std::process::ExitStatus, u64) {
    let mut child = cmd.spawn().expect("run psync");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        // Unreaped, so the pid is still this child's (a zombie's status
        // has no VmHWM line).
        if let Ok(s) = std::fs::read_to_string(&status_file)
            && let Some(kib) = vm_hwm(&s)
        {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait for psync") {
            return (status, peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The `VmHWM` of a `/proc/PID/status`, in KiB.
fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
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
    assert!(status.success(), "psync: {status}");
    assert!(peak > 0, "no VmHWM read from /proc");
    assert!(
        peak < 150 << 10,
        "peak RSS {} MiB at 64 threads on 5,000 small files (bound 150 MiB)",
        peak >> 10
    );
    assert_synced!(t.src(), t.dst());
}
