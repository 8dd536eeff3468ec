//! An entry whose type changes between two runs is replaced. A target
//! directory in the way is removed only when it is empty, or with
//! `--force`/`--delete`; without them a non-empty one stays and its name
//! fails, as rsync does ("cannot delete non-empty directory").

use crate::util::compare::differences;
use crate::util::{Opts, copy_tree, each_config, rsync_oracle, rsync_oracle_without_delete};
use std::path::Path;
use std::process::Command;

/// Syncs the `before` tree, changes the source with `after`, syncs again
/// with `opts` (a type change is not a deletion: no `--delete`) and checks
/// the result and that a third run has nothing left to do.
fn type_change(test: &str, opts: Opts, before: impl Fn(&Path), after: impl Fn(&Path)) {
    each_config(test, |cfg, t| {
        before(&t.src());
        tree!(t.src(), { "bystander" => file("unchanged") mtime(1_600_000_000, 1) });
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        assert_synced!(t.src(), t.dst());
        after(&t.src());
        let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
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
        Opts::default(),
        |s| tree!(s, { "x" => file("a file") }),
        |s| tree!(s, { "x" => dir() mode(0o750), "x/inner" => file("now inside a dir") }),
    );
}

#[test]
fn dir_with_contents_to_file() {
    type_change(
        "dir_with_contents_to_file",
        Opts::force(),
        |s| tree!(s, { "x/a/b" => file("deep"), "x/c" => file("c"), "x/l" => symlink("c"), "x/p" => fifo() }),
        |s| tree!(s, { "x" => file("now a file") mode(0o600) }),
    );
}

#[test]
fn file_to_symlink() {
    type_change(
        "file_to_symlink",
        Opts::default(),
        |s| tree!(s, { "x" => file("a file") }),
        |s| tree!(s, { "x" => symlink("bystander") }),
    );
}

#[test]
fn symlink_to_file() {
    type_change(
        "symlink_to_file",
        Opts::default(),
        |s| tree!(s, { "x" => symlink("bystander") }),
        |s| tree!(s, { "x" => file("a file now") }),
    );
}

#[test]
fn symlink_to_dir() {
    type_change(
        "symlink_to_dir",
        Opts::default(),
        |s| tree!(s, { "y/f" => file("y"), "x" => symlink("y") }),
        |s| tree!(s, { "x" => dir(), "x/f" => file("own content") }),
    );
}

#[test]
fn dir_to_symlink() {
    type_change(
        "dir_to_symlink",
        Opts::force(),
        |s| tree!(s, { "x/f" => file("in x"), "x/sub/g" => file("in x/sub") }),
        |s| tree!(s, { "x" => symlink("/nonexistent/elsewhere") }),
    );
}

#[test]
fn fifo_to_file() {
    type_change(
        "fifo_to_file",
        Opts::default(),
        |s| tree!(s, { "x" => fifo() }),
        |s| tree!(s, { "x" => file("data where a pipe was") }),
    );
}

#[test]
fn file_to_fifo_and_dir_to_fifo() {
    type_change(
        "file_to_fifo_and_dir_to_fifo",
        Opts::force(),
        |s| tree!(s, { "x" => file("data"), "y/z" => file("z") }),
        |s| tree!(s, { "x" => fifo(), "y" => fifo() mode(0o600) }),
    );
}

/// A directory in the way of a source file, symlink or fifo, holding an
/// entry the source does not have: without `--force`/`--delete` it stays
/// (error naming it, exit 1, the rest synced, an empty one replaced), the
/// same tree rsync leaves; `--force` and `--delete` replace it.
#[test]
fn non_empty_dir_in_the_way_needs_force() {
    each_config("non_empty_dir_in_the_way_needs_force", |cfg, t| {
        tree!(t.src(), {
            "f" => dir(), "f/a" => file("a"),
            "l" => dir(), "l/b" => file("b"),
            "p" => dir(), "p/deep/c" => file("c"),
            "e" => dir(),
        });
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        tree!(t.dst(), { "f/only_in_target" => file("precious") });
        let src = t.src();
        for n in ["f", "l", "p", "e"] {
            std::fs::remove_dir_all(src.join(n)).unwrap();
        }
        tree!(src, {
            "f" => file("now a file"), "l" => symlink("f"), "p" => fifo(),
            "e" => file("was an empty dir"), "new" => file("new"),
        });
        let rsynced = t.join("rsynced");
        copy_tree(&t.dst(), &rsynced);
        let st = Command::new("rsync")
            .args(["-aHAX", "--numeric-ids"])
            .arg(crate::util::slash(&src))
            .arg(&rsynced)
            .status()
            .unwrap();
        assert_eq!(st.code(), Some(23), "rsync refuses too");

        let dry = cfg.sync_with(&src, &t.dst(), &Opts::dry_run());
        assert_eq!(dry.exit, 1, "dry run: {dry:#?}");
        assert!(t.dst().join("e").is_dir(), "a dry run changed the target");

        let out = cfg.sync(&src, &t.dst());
        assert_eq!(out.exit, 1, "{out:#?}");
        for n in ["f", "l", "p"] {
            assert!(
                out.errors.iter().any(|e| e.contains("non-empty directory")
                    && e.contains(&format!("/dst/{n}:"))),
                "no error naming {n}: {:#?}",
                out.errors
            );
        }
        assert_eq!(out.errors.len(), 3, "{:#?}", out.errors);
        assert_eq!(
            crate::util::read(t.dst().join("f/only_in_target")),
            b"precious"
        );
        assert_eq!(crate::util::read(t.dst().join("p/deep/c")), b"c");
        // The root's mtime aside (rsync leaves it when the root had an error).
        let (mut diffs, _, _) = differences(&rsynced, &t.dst(), &[]);
        diffs.retain(|d| !d.starts_with("differs: .: mtime"));
        assert!(diffs.is_empty(), "psync and rsync differ: {diffs:#?}");

        let forced = cfg.sync_with(&src, &t.dst(), &Opts::force());
        forced.assert_ok();
        assert_synced!(src, t.dst());
        rsync_oracle_without_delete(&src, &t.dst());
        let (src2, dst2) = (t.join("src2"), t.join("dst2"));
        copy_tree(&rsynced, &dst2);
        copy_tree(&src, &src2);
        cfg.sync_with(&src2, &dst2, &Opts::delete()).assert_ok();
        assert_synced!(src2, dst2);
    });
}
