//! An entry whose type changes between two runs is replaced, with or
//! without `--delete` (rsync replaces it too), whatever is inside.

use crate::util::{Opts, each_config, rsync_oracle};
use std::path::Path;

/// Syncs the `before` tree, changes the source with `after`, syncs again
/// (no `--delete`: a type change is not a deletion) and checks the result
/// and that a third run has nothing left to do.
fn type_change(test: &str, before: impl Fn(&Path), after: impl Fn(&Path)) {
    each_config(test, |cfg, t| {
        before(&t.src());
        tree!(t.src(), { "bystander" => file("unchanged") mtime(1_600_000_000, 1) });
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        assert_synced!(t.src(), t.dst());
        after(&t.src());
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        let names: Vec<&str> = out
            .itemized
            .iter()
            .filter_map(|l| l.split(' ').nth(1))
            .collect();
        assert!(
            !names.contains(&"bystander"),
            "an unchanged file was itemized: {:#?}",
            out.itemized
        );
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        let again = cfg.sync_with(&t.src(), &t.dst(), &Opts::delete());
        again.assert_ok();
        assert!(
            again.itemized.is_empty(),
            "third run: {:#?}",
            again.itemized
        );
    });
}

#[test]
fn file_to_dir() {
    type_change(
        "file_to_dir",
        |s| tree!(s, { "x" => file("a file") }),
        |s| tree!(s, { "x" => dir() mode(0o750), "x/inner" => file("now inside a dir") }),
    );
}

#[test]
fn dir_with_contents_to_file() {
    type_change(
        "dir_with_contents_to_file",
        |s| tree!(s, { "x/a/b" => file("deep"), "x/c" => file("c"), "x/l" => symlink("c"), "x/p" => fifo() }),
        |s| tree!(s, { "x" => file("now a file") mode(0o600) }),
    );
}

#[test]
fn file_to_symlink() {
    type_change(
        "file_to_symlink",
        |s| tree!(s, { "x" => file("a file") }),
        |s| tree!(s, { "x" => symlink("bystander") }),
    );
}

#[test]
fn symlink_to_file() {
    type_change(
        "symlink_to_file",
        |s| tree!(s, { "x" => symlink("bystander") }),
        |s| tree!(s, { "x" => file("a file now") }),
    );
}

#[test]
fn symlink_to_dir() {
    type_change(
        "symlink_to_dir",
        |s| tree!(s, { "y/f" => file("y"), "x" => symlink("y") }),
        |s| tree!(s, { "x" => dir(), "x/f" => file("own content") }),
    );
}

#[test]
fn dir_to_symlink() {
    type_change(
        "dir_to_symlink",
        |s| tree!(s, { "x/f" => file("in x"), "x/sub/g" => file("in x/sub") }),
        |s| tree!(s, { "x" => symlink("/nonexistent/elsewhere") }),
    );
}

#[test]
fn fifo_to_file() {
    type_change(
        "fifo_to_file",
        |s| tree!(s, { "x" => fifo() }),
        |s| tree!(s, { "x" => file("data where a pipe was") }),
    );
}

#[test]
fn file_to_fifo_and_dir_to_fifo() {
    type_change(
        "file_to_fifo_and_dir_to_fifo",
        |s| tree!(s, { "x" => file("data"), "y/z" => file("z") }),
        |s| tree!(s, { "x" => fifo(), "y" => fifo() mode(0o600) }),
    );
}
