//! A failing entry is reported with its path and operation, counted, and
//! makes the exit status 1; everything else is still synced.
//!
//! These tests run as root, where permission bits stop nothing. Failures
//! are produced by means root cannot bypass: an immutable target
//! directory (`chattr +i`, which needs CAP_LINUX_IMMUTABLE and ext4/xfs/
//! btrfs), and for the CLI a file-size limit (RLIMIT_FSIZE: writes past it
//! fail with EFBIG for root too).

use crate::util::run::{cli_available, psync_cmd};
use crate::util::{Opts, TestDir, each_config, is_root, rsync_oracle};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `chattr +i` on a path, undone on drop (even when the test fails), so the
/// test directory can be removed.
pub(crate) struct Immutable(PathBuf);

impl Immutable {
    /// Sets the flag, or says why it cannot be set here.
    pub(crate) fn set(p: &Path) -> Result<Immutable, String> {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(p)
            .output()
            .map_err(|e| format!("chattr: {e}"))?;
        if out.status.success() {
            Ok(Immutable(p.to_path_buf()))
        } else {
            Err(format!(
                "chattr +i {}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn failing_entry_is_reported_and_the_rest_synced() {
    each_config("failing_entry_is_reported_and_the_rest_synced", |cfg, t| {
        tree!(t.src(), { "ok/a" => file("a1"), "locked/f" => file("v1"), "locked/g" => file("g"), "z" => file("z1") });
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        tree!(t.src(), {
            "ok/a" => file("a2, longer"),
            "locked/f" => file("v2, longer"),
            "z" => file("z2, longer"),
            "new/file" => file("new"),
        });
        let guard = match Immutable::set(&t.dst().join("locked")) {
            Ok(g) => g,
            Err(why) => {
                eprintln!("SKIPPED failing_entry_is_reported_and_the_rest_synced: {why}");
                return;
            }
        };
        // Without file flags: psync would lift the immutable flag the
        // source does not have (ADR 018), and the obstacle with it.
        let obstacle = Opts {
            no_file_flags: true,
            ..Opts::delete()
        };
        let out = cfg.sync_with(&t.src(), &t.dst(), &obstacle);
        assert_eq!(out.exit, 1, "exit status with a failed entry: {out:#?}");
        let f = t.dst().join("locked/f").display().to_string();
        assert!(
            out.errors
                .iter()
                .any(|e| e.contains(&f) && e.contains("create")),
            "no error naming {f} and the failed operation: {:#?}",
            out.errors
        );
        assert!(out.stat("failed") >= 1, "{}", out.stats);
        assert_eq!(
            std::fs::read(t.dst().join("locked/f")).unwrap(),
            b"v1",
            "the failed file keeps its old content"
        );
        assert_synced!(t.src(), t.dst(), except: ["locked"]);
        drop(guard);
        // Once the obstacle is gone, the next run finishes the job.
        cfg.sync_with(&t.src(), &t.dst(), &Opts::delete())
            .assert_ok();
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}

#[test]
fn failing_delete_is_reported() {
    each_config("failing_delete_is_reported", |cfg, t| {
        tree!(t.src(), { "keep" => file("k") });
        tree!(t.dst(), { "extraneous/stuck" => file("cannot be removed"), "extraneous/loose" => file("x") });
        let guard = match Immutable::set(&t.dst().join("extraneous/stuck")) {
            Ok(g) => g,
            Err(why) => {
                eprintln!("SKIPPED failing_delete_is_reported: {why}");
                return;
            }
        };
        let out = cfg.sync_with(&t.src(), &t.dst(), &Opts::delete());
        assert_eq!(out.exit, 1, "{out:#?}");
        let stuck = t.dst().join("extraneous").display().to_string();
        assert!(
            out.errors
                .iter()
                .any(|e| e.contains(&stuck) && e.contains("remove")),
            "{:#?}",
            out.errors
        );
        assert_eq!(std::fs::read(t.dst().join("keep")).unwrap(), b"k");
        drop(guard);
        cfg.sync_with(&t.src(), &t.dst(), &Opts::delete())
            .assert_ok();
        assert_synced!(t.src(), t.dst());
    });
}

#[test]
fn unreadable_source_file_as_non_root() {
    if is_root() {
        eprintln!(
            "SKIPPED unreadable_source_file_as_non_root: root reads any file; see the chattr and RLIMIT_FSIZE tests"
        );
        return;
    }
    each_config("unreadable_source_file_as_non_root", |cfg, t| {
        tree!(t.src(), { "secret" => file("s") mode(0o000), "public" => file("p") });
        let out = cfg.sync(&t.src(), &t.dst());
        assert_eq!(out.exit, 1, "{out:#?}");
        let secret = t.src().join("secret").display().to_string();
        assert!(
            out.errors
                .iter()
                .any(|e| e.contains(&secret) && e.contains("open")),
            "{:#?}",
            out.errors
        );
        assert_eq!(std::fs::read(t.dst().join("public")).unwrap(), b"p");
    });
}

/// The CLI under a 1 MiB file-size limit: the 2 MiB file fails with EFBIG
/// (SIGXFSZ ignored, so the write fails instead of killing the process),
/// the small files are copied, no partial file or temporary is left.
#[test]
fn cli_file_too_large_fails_that_file_only() {
    if !cli_available() {
        eprintln!("SKIPPED cli_file_too_large_fails_that_file_only: the psync binary is not built");
        return;
    }
    let t = TestDir::new("cli_file_too_large_fails_that_file_only");
    tree!(t.src(), { "huge" => random(2 << 20), "small" => file("s"), "d/x" => random(4096) });
    let mut cmd = psync_cmd();
    cmd.args(["sync", "--threads", "2"])
        .arg(t.src())
        .arg(t.dst());
    limit_file_size(&mut cmd, 1 << 20);
    let out = cmd.output().expect("run psync");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    let huge = t.dst().join("huge").display().to_string();
    assert!(
        stderr.contains(&huge) && stderr.contains("write "),
        "stderr names neither {huge} nor the operation: {stderr}"
    );
    assert!(
        t.dst().join("huge").symlink_metadata().is_err(),
        "a partial huge file is visible"
    );
    crate::util::assert_no_temps(&t.dst());
    assert_synced!(t.src(), t.dst(), except: ["huge"]);
    // Without the limit, a rerun completes.
    let out = psync_cmd()
        .args(["sync"])
        .arg(t.src())
        .arg(t.dst())
        .output()
        .expect("run psync");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
}

pub fn limit_file_size(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (signal, setrlimit), with no allocation.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
