//! rsync as the reference: the oracle that a sync is complete, and the
//! itemized output psync's `-i` must match.

use super::{in_ci, slash};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// Whether an `rsync` binary runs here.
fn rsync_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("rsync")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// True when rsync can be used. When it cannot: under CI (which is meant
/// to have it) this panics; elsewhere it prints why the check is skipped.
#[track_caller]
pub fn require_rsync() -> bool {
    if rsync_available() {
        return true;
    }
    assert!(
        !in_ci(),
        "rsync is not installed, and CI=true: CI is meant to have it"
    );
    eprintln!(
        "SKIPPED rsync check at {}: rsync is not installed",
        std::panic::Location::caller()
    );
    false
}

/// Runs rsync with `args` then `SRC/ DST/`; returns its stdout lines.
#[track_caller]
pub fn rsync_itemize(src: &Path, dst: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new("rsync")
        .args(args)
        .arg(slash(src))
        .arg(slash(dst))
        .output()
        .expect("run rsync");
    assert!(
        out.status.success(),
        "rsync {args:?} {} {} failed: {}\n{}",
        src.display(),
        dst.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The oracle: `rsync -aHAX --delete --numeric-ids -n -i SRC/ DST/` must
/// print nothing, i.e. rsync finds nothing left to do.
#[track_caller]
pub fn rsync_oracle(src: &Path, dst: &Path) {
    oracle(src, dst, true);
}

/// The oracle without `--delete`, for runs that keep extraneous entries.
#[track_caller]
pub fn rsync_oracle_without_delete(src: &Path, dst: &Path) {
    oracle(src, dst, false);
}

/// The oracle with the whole archive set psync stands in for:
/// `rsync -aHAXS --numeric-ids --delete -n -i SRC/ DST/` must print
/// nothing. (`-S` changes nothing that `-n -i` compares; it is there so the
/// command is the one a user would run. Holes are checked by the tests.)
#[track_caller]
pub fn rsync_oracle_full(src: &Path, dst: &Path) {
    rsync_oracle_full_with(src, dst, &[]);
}

/// [`rsync_oracle_full`] with more arguments, e.g. filters.
#[track_caller]
pub fn rsync_oracle_full_with(src: &Path, dst: &Path, extra: &[&str]) {
    let mut args = vec!["-aHAXS", "--numeric-ids", "--delete", "-n", "-i"];
    args.extend_from_slice(extra);
    oracle_with(src, dst, &args);
}

#[track_caller]
fn oracle(src: &Path, dst: &Path, delete: bool) {
    let mut args = vec!["-aHAX", "--numeric-ids", "-n", "-i"];
    if delete {
        args.push("--delete");
    }
    oracle_with(src, dst, &args);
}

#[track_caller]
fn oracle_with(src: &Path, dst: &Path, args: &[&str]) {
    if !require_rsync() {
        return;
    }
    let lines = rsync_itemize(src, dst, args);
    assert!(
        lines.is_empty(),
        "rsync oracle: rsync {} would still change {}:\n{}",
        args.join(" "),
        dst.display(),
        lines.join("\n")
    );
}
