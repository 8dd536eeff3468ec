//! `--delete` / `delete(true)` removes what the source does not have, at
//! any depth; without it, extraneous entries stay.

use crate::util::{Opts, each_config, rsync_oracle, rsync_oracle_without_delete};
use std::path::Path;

fn fixture(src: &Path, dst: &Path) {
    tree!(src, { "keep" => file("k"), "d/keep" => file("k"), "d/e/keep" => file("k") });
    tree!(dst, {
        "extra" => file("x"),
        "extra-link" => symlink("keep"),
        "extra-pipe" => fifo(),
        "d/extra" => file("x"),
        "d/e/extra-dir/f/g/h" => file("deep extraneous"),
        "d/e/extra-dir/l" => symlink("/"),
        "d/e/extra-ro" => dir(),
        "d/e/extra-ro/f" => file("in a read-only dir"),
        "d/e/extra-ro" => dir() mode(0o555),
        "gone/sub/f" => file("whole extraneous tree"),
    });
}

#[test]
fn delete_removes_extraneous_files_and_nested_dirs() {
    each_config(
        "delete_removes_extraneous_files_and_nested_dirs",
        |cfg, t| {
            fixture(&t.src(), &t.dst());
            let out = cfg.sync_with(&t.src(), &t.dst(), &Opts::delete());
            out.assert_ok();
            for gone in [
                "extra",
                "extra-link",
                "extra-pipe",
                "d/extra",
                "d/e/extra-dir",
                "d/e/extra-ro",
                "gone",
            ] {
                assert!(
                    t.dst().join(gone).symlink_metadata().is_err(),
                    "{gone} survived --delete"
                );
            }
            for line in [
                "*deleting   extra",
                "*deleting   d/extra",
                "*deleting   d/e/extra-dir/",
                "*deleting   gone/",
            ] {
                assert!(
                    out.itemized.iter().any(|l| l == line),
                    "no {line:?} in {:#?}",
                    out.itemized
                );
            }
            assert!(
                out.stat("deleted") >= 14,
                "deleted counts the contents of deleted dirs: {}",
                out.stats
            );
            assert_synced!(t.src(), t.dst());
            rsync_oracle(&t.src(), &t.dst());
        },
    );
}

#[test]
fn without_delete_extraneous_entries_stay() {
    each_config("without_delete_extraneous_entries_stay", |cfg, t| {
        fixture(&t.src(), &t.dst());
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        assert!(
            !out.itemized.iter().any(|l| l.starts_with("*deleting")),
            "{:#?}",
            out.itemized
        );
        assert_eq!(
            std::fs::read(t.dst().join("d/e/extra-dir/f/g/h")).unwrap(),
            b"deep extraneous"
        );
        assert_eq!(
            std::fs::read_link(t.dst().join("extra-link")).unwrap(),
            Path::new("keep")
        );
        assert_synced!(t.src(), t.dst(), except: ["extra", "extra-link", "extra-pipe", "d/extra", "d/e/extra-dir", "d/e/extra-ro", "gone"]);
        rsync_oracle_without_delete(&t.src(), &t.dst());
        // A later run with delete finishes the job.
        cfg.sync_with(&t.src(), &t.dst(), &Opts::delete())
            .assert_ok();
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}
