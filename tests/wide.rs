//! Wide directories (ADR 021): a directory of more names than the run's
//! `wide_dir` on either side is listed and planned in parts, each a task
//! of its own. Lowered here to a few names (`Opts::wide_dir`), so a
//! directory of tens of entries is cut into parts of two names, and
//! what a part does alone (its deletions, hard links, filters) meets
//! what the others do.

use crate::util::{Front, Opts, TestDir, each_config, rsync_oracle_full_with};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Directories of more than 16 names are split, in parts of 2 names.
const WIDE: usize = 16;

fn split(opts: Opts) -> Opts {
    Opts {
        wide_dir: Some(WIDE),
        ..opts
    }
}

/// A source directory `w` of 40 files, symlinks, a fifo, subdirectories
/// and hard links: inside `w`, across its parts (`a-link` and `z-link`
/// are far apart), and with a file outside it.
fn wide_source(src: &Path) {
    tree!(src, {
        "w/sub/deep" => file("deep"),
        "w/sub2" => dir(),
        "w/link" => symlink("f00"),
        "w/fifo" => fifo(),
        "w/typed-dir" => file("a file where the target has a directory"),
        "w/typed-file/inner" => file("a directory where the target has a file"),
        "w/typed-link" => symlink("target"),
        "w/a-link" => file("linked"),
        "w/z-link" => hardlink("w/a-link"),
        "w/m-link" => hardlink("w/a-link"),
        "other/out" => file("linked outside"),
        "w/in" => hardlink("other/out"),
    });
    for i in 0..40 {
        std::fs::write(src.join(format!("w/f{i:02}")), format!("file {i}")).unwrap();
    }
}

/// A target `w` holding part of it, stale, of other types, and 20 names
/// the source lacks.
fn wide_target(dst: &Path) {
    tree!(dst, {
        "w/typed-dir/x" => file("in the way"),
        "w/typed-file" => file("in the way"),
        "w/typed-link" => file("in the way"),
        "w/sub/old" => file("old"),
        "w/z-link" => file("linked"),
    });
    for i in (0..40).step_by(3) {
        std::fs::write(dst.join(format!("w/f{i:02}")), "stale").unwrap();
    }
    for i in 0..20 {
        std::fs::write(dst.join(format!("w/gone{i:02}")), "extra").unwrap();
    }
}

fn ino(p: impl AsRef<Path>) -> u64 {
    std::fs::symlink_metadata(p).unwrap().ino()
}

/// Split, a wide directory is synced as rsync -aHAX --delete syncs it:
/// deletions, type changes, hard links within it and across its parts,
/// and a second run finds nothing to do. More than one task listed it.
#[test]
fn a_wide_directory_split_in_parts_syncs_as_rsync_does() {
    each_config("a_wide_directory_split_in_parts", |cfg, t| {
        wide_source(&t.src());
        wide_target(&t.dst());
        let opts = split(Opts {
            force: true,
            ..Opts::delete()
        });
        let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
        out.assert_ok();
        // 40 + 10 names of the source's, 20 of the target's: parts of 2.
        assert!(out.stat("dir_parts") >= 30, "{}", out.stats);
        // 20 extraneous names, `sub/old`, and 3 entries type changes
        // replace (a directory counts with its contents).
        assert_eq!(out.stat("deleted"), 20 + 1 + 3, "{}", out.stats);
        rsync_oracle_full_with(&t.src(), &t.dst(), &[]);
        assert_synced!(t.src(), t.dst());
        let w = t.dst().join("w");
        assert_eq!(ino(w.join("a-link")), ino(w.join("z-link")));
        assert_eq!(ino(w.join("a-link")), ino(w.join("m-link")));
        assert_eq!(ino(w.join("in")), ino(t.dst().join("other/out")));
        let again = cfg.sync_with(&t.src(), &t.dst(), &opts);
        again.assert_ok();
        assert!(again.stat("dir_parts") >= 25, "{}", again.stats);
        for counter in ["created", "updated", "deleted", "attrs_updated"] {
            assert_eq!(again.stat(counter), 0, "{counter}: {}", again.stats);
        }
        assert!(again.itemized.is_empty(), "{:#?}", again.itemized);
    });
}

/// The counts and the `-n -i` lines of a split directory are the unsplit
/// one's (sorted: a part's deletions come before its own entries only).
#[test]
fn a_split_dry_run_itemizes_as_the_unsplit_one() {
    each_config("a_split_dry_run_itemizes_as_the_unsplit_one", |cfg, t| {
        wide_source(&t.src());
        wide_target(&t.dst());
        let dry = Opts {
            force: true,
            dry_run: true,
            ..Opts::delete()
        };
        let whole = cfg.sync_with(&t.src(), &t.dst(), &dry);
        let parts = cfg.sync_with(&t.src(), &t.dst(), &split(dry.clone()));
        assert_eq!(whole.stat("dir_parts"), 0);
        assert!(parts.stat("dir_parts") >= 30, "{}", parts.stats);
        assert_eq!(whole.exit, parts.exit);
        assert!(!whole.itemized.is_empty());
        assert_eq!(parts.sorted_items(), whole.sorted_items());
        for counter in [
            "scanned",
            "dirs",
            "created",
            "updated",
            "deleted",
            "unchanged",
            "done",
        ] {
            assert_eq!(parts.stat(counter), whole.stat(counter), "{counter}");
        }
        // A directory the run would make is split too: nothing to list
        // on its target side.
        let fresh = t.join("fresh");
        let whole = cfg.sync_with(&t.src(), &fresh, &dry);
        let parts = cfg.sync_with(&t.src(), &fresh, &split(dry));
        assert!(parts.stat("dir_parts") >= 25, "{}", parts.stats);
        assert_eq!(parts.sorted_items(), whole.sorted_items());
        assert!(!fresh.exists());
    });
}

/// `--max-delete` counts the deletions of all the parts together.
#[test]
fn max_delete_holds_across_the_parts() {
    each_config("max_delete_holds_across_the_parts", |cfg, t| {
        wide_source(&t.src());
        wide_target(&t.dst());
        // A directory a type change replaces is kept when its contents do
        // not fit: which one a parallel run reaches first is not fixed.
        std::fs::remove_dir_all(t.dst().join("w/typed-dir")).unwrap();
        let opts = split(Opts {
            max_delete: Some(5),
            ..Opts::delete()
        });
        let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
        assert!(out.stat("dir_parts") >= 30, "{}", out.stats);
        // A file a directory replaces goes whatever the limit.
        assert_eq!(out.stat("deleted"), 5 + 1, "{}", out.stats);
        assert_eq!(out.stat("deletes_skipped"), 16, "{}", out.stats);
        let left = std::fs::read_dir(t.dst().join("w"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("gone")
            })
            .count();
        assert!(left >= 15, "{left} left");
        let deleted = out.itemized.iter().filter(|l| l.starts_with("*deleting"));
        assert_eq!(deleted.count(), 5, "{:#?}", out.itemized);
    });
}

/// Excluded names are neither copied nor deleted in any part, and a
/// `--files-from` path the source lacks is reported once, by the
/// directory's own task (no part covers a name no side has).
#[test]
fn filters_apply_in_every_part() {
    each_config("filters_apply_in_every_part", |cfg, t| {
        wide_source(&t.src());
        wide_target(&t.dst());
        tree!(t.src(), { "w/skip.log" => file("excluded"), "w/also.log" => file("excluded") });
        tree!(t.dst(), { "w/kept.log" => file("the target's, excluded") });
        let opts = split(Opts {
            force: true,
            filters: vec!["--exclude=*.log".into()],
            ..Opts::delete()
        });
        let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
        out.assert_ok();
        assert!(out.stat("dir_parts") >= 30, "{}", out.stats);
        rsync_oracle_full_with(&t.src(), &t.dst(), &["--exclude=*.log"]);
        assert!(t.dst().join("w/kept.log").exists());
        assert!(!t.dst().join("w/skip.log").exists());

        let list = t.join("list");
        std::fs::write(&list, "w/f01\nw/f30\nw/nowhere\nw/sub/deep\n").unwrap();
        let fresh = t.join("listed");
        let opts = split(Opts {
            filters: vec![format!("--files-from={}", list.display())],
            ..Opts::default()
        });
        let out = cfg.sync_with(&t.src(), &fresh, &opts);
        assert_eq!(out.exit, 1, "{out:#?}");
        let missing: Vec<&String> = out
            .errors
            .iter()
            .filter(|e| e.contains("nowhere"))
            .collect();
        assert_eq!(missing.len(), 1, "{:#?}", out.errors);
        assert_eq!(out.errors.len(), 1, "{:#?}", out.errors);
        assert_eq!(crate::util::read(fresh.join("w/f30")), b"file 30");
        assert_eq!(crate::util::read(fresh.join("w/sub/deep")), b"deep");
        assert!(!fresh.join("w/f02").exists());
    });
}

/// Temporaries of earlier runs among a wide directory's names are removed
/// by its own task, and so are part files of large files that no copy
/// resumes (an interrupted copy's, of a source changed since).
#[test]
fn psync_s_own_names_in_a_wide_directory() {
    each_config("psync_s_own_names_in_a_wide_directory", |cfg, t| {
        wide_source(&t.src());
        let opts = split(Opts {
            force: true,
            ..Opts::delete()
        });
        cfg.sync_with(&t.src(), &t.dst(), &opts).assert_ok();
        let stale = format!("{}{:016x}.{:08x}.1", psync::TEMP_PREFIX, 0x1234_u64, 7);
        std::fs::write(t.dst().join("w").join(&stale), "half written").unwrap();
        let part = t.dst().join("w/.psync-part.00000000000000ab");
        std::fs::write(&part, "an interrupted copy's").unwrap();
        let journal = t.dst().join("w/.psync-part.00000000000000ab.journal");
        std::fs::write(&journal, "its journal").unwrap();
        let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
        out.assert_ok();
        assert!(out.stat("dir_parts") >= 25, "{}", out.stats);
        if cfg.front != Front::Scatter {
            assert_eq!(out.stat("stale_removed"), 3, "{}", out.stats);
        }
        for gone in [t.dst().join("w").join(&stale), part, journal] {
            assert!(!gone.exists(), "{} left", gone.display());
        }
        assert_synced!(t.src(), t.dst());
    });
}

/// Every task of a scattered run delivered twice (a part, and the task
/// that spawned the parts): the same target, counted once.
#[test]
fn parts_delivered_twice_sync_once() {
    for seed in [1, 2, 3] {
        let t = TestDir::new(&format!("parts_delivered_twice_sync_once-{seed}"));
        wide_source(&t.src());
        wide_target(&t.dst());
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut b = psync::builder(t.src(), t.dst());
        b.threads(4)
            .scatter(3, seed)
            .redeliver(1.0)
            .redeliver_lossy(false)
            .delete(true)
            .force(true)
            .wide_dir(WIDE)
            .events(tx);
        let report = b.build().and_then(|s| s.run()).expect("run");
        drop(b);
        let errors: Vec<_> = rx
            .iter()
            .filter(|e| matches!(e, psync::Event::Error { .. }))
            .collect();
        assert!(report.success(), "{errors:#?}");
        assert!(report.stats.dir_parts >= 30, "{:?}", report.stats);
        assert_eq!(report.stats.deleted, 20 + 1 + 3);
        rsync_oracle_full_with(&t.src(), &t.dst(), &[]);
        assert_synced!(t.src(), t.dst());
    }
}

/// Through a broker: the parts are encoded, checked by the workers
/// (`check_task`: every name one component) and run on any of them.
#[test]
fn a_wide_directory_is_split_on_a_cluster() {
    let t = TestDir::new("wide_on_a_cluster");
    let c = cluster!(t, 2);
    wide_source(&t.src());
    wide_target(&t.dst());
    let o = c
        .cmd()
        .env("PSYNC_WIDE_DIR", WIDE.to_string())
        .args(["sync", "--delete", "--force", "--json", "-q"])
        .arg(t.src())
        .arg(t.dst())
        .output()
        .expect("run psync sync");
    crate::cluster::assert_ok(&o, &c);
    let out = String::from_utf8_lossy(&o.stdout);
    let summary: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["event"] == "summary")
        .expect("a summary line");
    assert!(summary["dir_parts"].as_u64() >= Some(30), "{summary}");
    rsync_oracle_full_with(&t.src(), &t.dst(), &[]);
    assert_synced!(t.src(), t.dst());
}
