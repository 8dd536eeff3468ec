//! Whole-tree syncs: empty trees, a tree with every kind of entry, the
//! second run that has nothing to do, dry runs.

use crate::util::compare::assert_untouched;
use crate::util::{
    Config, Opts, TestDir, each_config, is_root, rsync_oracle, rsync_oracle_without_delete,
    stat_snapshot,
};
use std::path::Path;

/// A tree with every kind of entry psync handles: files of many sizes
/// (0 B to a few MiB), odd modes, symlinks (relative, dangling, absolute,
/// to a directory), a fifo, a socket, read-only and private directories, a
/// setgid and a sticky directory, explicit nanosecond mtimes; as root also
/// foreign owners (files, symlinks, directories) and a device node.
pub fn mixed_tree(root: &Path) {
    tree!(root, {
        "empty" => file(""),
        "small" => file("hello\n") mode(0o640) mtime(1_500_000_000, 123_456_789),
        "page" => random(4096),
        "odd-size" => random(65_537),
        "big" => random((3 << 20) + 17),
        "bigger" => random(5 << 20) mode(0o600),
        "zero-mode" => file("nobody may read this") mode(0o000),
        "setuid" => file("#!/bin/sh\n") mode(0o4755),
        "exec" => file("#!/bin/sh\nexit 0\n") mode(0o755),
        "links/rel" => symlink("../small"),
        "links/dangling" => symlink("no/such/file"),
        "links/abs" => symlink("/etc/hostname"),
        "links/to-dir" => symlink(".."),
        "links/old" => symlink("rel") mtime(1_000_000_000, 1),
        "special/pipe" => fifo() mode(0o600),
        "special/sock" => socket(),
        "ro/f" => file("in a read-only dir"),
        "ro/sub/g" => file("deeper"),
        "ro" => dir() mode(0o555),
        "private/f" => file("only the owner") mode(0o400),
        "private" => dir() mode(0o500),
        "sgid/sub/f" => file("y"),
        "sgid" => dir() mode(0o2775),
        "tmp-like" => dir() mode(0o1777),
        "deep/a/b/c/d/e" => file("deep") mtime(1_234_567_890, 999_999_999),
        "deep/a/b" => dir() mtime(1_111_111_111, 1),
        "dirs/old" => dir() mtime(1_000_000_000, 5),
        "dirs/empty-0700" => dir() mode(0o700),
    });
    if is_root() {
        tree!(root, {
            "owned/f" => file("someone else's") owner(1234, 5678),
            "owned/l" => symlink("f") owner(4321, 8765),
            "owned/d" => dir() owner(2345, 6789) mode(0o750),
            "owned" => dir() owner(0, 4242),
        });
        if can_mknod_devices(root) {
            tree!(root, { "special/null" => chardev(1, 3) mode(0o666) });
        }
    }
}

/// Root in a container may lack CAP_MKNOD: probe once per tree.
fn can_mknod_devices(dir: &Path) -> bool {
    let probe = dir.join(".mknod-probe");
    let ok = rustix::fs::mknodat(
        rustix::fs::CWD,
        &probe,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(1, 3),
    )
    .is_ok();
    let _ = std::fs::remove_file(&probe);
    if !ok {
        eprintln!("note: cannot create device nodes here; the mixed tree has none");
    }
    ok
}

/// Bytes of all regular files under `root`.
fn file_bytes(root: &Path) -> u64 {
    crate::util::listing(root)
        .values()
        .filter(|m| m.kind == 'f')
        .map(|m| m.size)
        .sum()
}

#[test]
fn empty_source_into_missing_target() {
    each_config("empty_source_into_missing_target", |cfg, t| {
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        assert!(t.dst().is_dir(), "the target root is created");
        assert_eq!(
            out.itemized,
            ["cd+++++++++ ./"],
            "only the new root is itemized"
        );
        assert_eq!(out.stat("bytes_copied"), 0);
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}

#[test]
fn empty_source_keeps_target_entries_without_delete() {
    each_config(
        "empty_source_keeps_target_entries_without_delete",
        |cfg, t| {
            tree!(t.dst(), { "old" => file("stays"), "d/x" => file("stays too") });
            cfg.sync(&t.src(), &t.dst()).assert_ok();
            assert_eq!(std::fs::read(t.dst().join("old")).unwrap(), b"stays");
            assert_eq!(std::fs::read(t.dst().join("d/x")).unwrap(), b"stays too");
            // The root's own attributes (mode, mtime) are still synced.
            assert_synced!(t.src(), t.dst(), except: ["old", "d"]);
            rsync_oracle_without_delete(&t.src(), &t.dst());
        },
    );
}

#[test]
fn empty_source_with_delete_empties_target() {
    each_config("empty_source_with_delete_empties_target", |cfg, t| {
        tree!(t.dst(), { "old" => file("goes"), "d/x/y" => file("goes too"), "l" => symlink("old") });
        let out = cfg.sync_with(&t.src(), &t.dst(), &Opts::delete());
        out.assert_ok();
        assert_eq!(
            std::fs::read_dir(t.dst()).unwrap().count(),
            0,
            "target emptied"
        );
        let mut items = out.sorted_items();
        items.retain(|l| l.starts_with("*deleting"));
        assert!(items.contains(&"*deleting   old".to_string()), "{items:?}");
        assert!(items.contains(&"*deleting   l".to_string()), "{items:?}");
        assert!(items.contains(&"*deleting   d/".to_string()), "{items:?}");
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}

#[test]
fn mixed_tree_is_copied_exactly() {
    each_config("mixed_tree_is_copied_exactly", |cfg, t| {
        mixed_tree(&t.src());
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        assert_eq!(
            out.stat("bytes_copied"),
            file_bytes(&t.src()),
            "every byte copied once"
        );
        let entries = crate::util::listing(&t.src()).len() - 1;
        assert_eq!(
            out.itemized.len(),
            entries + 1,
            "one line per entry plus the new root: {:#?}",
            out.itemized
        );
    });
}

/// Running again right after a sync finds nothing to do and touches
/// nothing: no itemized change, no byte copied, every target entry keeps
/// its inode, mtime and ctime.
fn assert_second_run_is_a_no_op(cfg: Config, t: &TestDir, opts: &Opts) {
    second_run(cfg, t, opts, true);
}

/// [`assert_second_run_is_a_no_op`] for the other topic modules: the same
/// checks, except the target root's ctime (which `second_run_does_nothing`
/// checks), so that those tests fail for their own topic only.
pub fn assert_second_run_changes_nothing_below_the_root(cfg: Config, t: &TestDir, opts: &Opts) {
    second_run(cfg, t, opts, false);
}

#[track_caller]
fn second_run(cfg: Config, t: &TestDir, opts: &Opts, root_too: bool) {
    let mut before = stat_snapshot(&t.dst());
    let out = cfg.sync_with(&t.src(), &t.dst(), opts);
    out.assert_ok();
    assert!(
        out.itemized.is_empty(),
        "second run itemized changes: {:#?}",
        out.itemized
    );
    assert_eq!(out.stat("bytes_copied"), 0, "second run copied data");
    let mut after = stat_snapshot(&t.dst());
    if !root_too {
        before.remove(&Vec::new());
        after.remove(&Vec::new());
    }
    assert_untouched(&before, &after, "second run");
}

#[test]
fn second_run_does_nothing() {
    each_config("second_run_does_nothing", |cfg, t| {
        mixed_tree(&t.src());
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        assert_second_run_is_a_no_op(cfg, t, &Opts::default());
        assert_second_run_is_a_no_op(cfg, t, &Opts::delete());
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}

#[test]
fn dry_run_changes_nothing_but_reports_everything() {
    each_config(
        "dry_run_changes_nothing_but_reports_everything",
        |cfg, t| {
            mixed_tree(&t.src());
            tree!(t.src(), { "changed" => file("new content"), "newdir/f" => file("new") });
            tree!(t.dst(), {
                "changed" => file("old"),
                "extraneous" => file("would be deleted"),
                "gone/sub/f" => file("would be deleted"),
                "small" => dir(),
            });
            let before = stat_snapshot(&t.dst());
            let dry = cfg.sync_with(
                &t.src(),
                &t.dst(),
                &Opts {
                    delete: true,
                    dry_run: true,
                    ..Opts::default()
                },
            );
            dry.assert_ok();
            assert_untouched(&before, &stat_snapshot(&t.dst()), "dry run");
            assert_eq!(dry.stat("bytes_copied"), 0, "a dry run copies nothing");
            for expected in [
                ">f+++++++++ big",
                "cd+++++++++ newdir/",
                ">f+++++++++ newdir/f",
                "*deleting   extraneous",
                "*deleting   gone/",
            ] {
                assert!(
                    dry.itemized.iter().any(|l| l == expected),
                    "dry run does not report {expected:?}: {:#?}",
                    dry.itemized
                );
            }
            // The real run reports exactly what the dry run announced.
            let real = cfg.sync_with(&t.src(), &t.dst(), &Opts::delete());
            real.assert_ok();
            assert_eq!(
                dry.sorted_items(),
                real.sorted_items(),
                "dry run and real run itemize differently"
            );
            assert_synced!(t.src(), t.dst());
            rsync_oracle(&t.src(), &t.dst());
        },
    );
}

#[test]
fn dry_run_into_missing_target_creates_nothing() {
    each_config("dry_run_into_missing_target_creates_nothing", |cfg, t| {
        tree!(t.src(), { "d/f" => file("x"), "g" => file("y") });
        let out = cfg.sync_with(&t.src(), &t.dst(), &Opts::dry_run());
        out.assert_ok();
        assert!(
            t.dst().symlink_metadata().is_err(),
            "dry run created the target"
        );
        let items = out.sorted_items();
        assert_eq!(
            items,
            [
                ">f+++++++++ d/f",
                ">f+++++++++ g",
                "cd+++++++++ ./",
                "cd+++++++++ d/"
            ]
        );
    });
}
