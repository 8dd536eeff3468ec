//! Atomic files: data goes to `.psync-tmp.<run id>.<nonce>.<n>` and is
//! renamed into place; temporaries an interrupted run left behind are
//! removed by the next run; none survive any run.

use crate::util::{Opts, assert_no_temps, each_config, rsync_oracle};
use psync::TEMP_PREFIX;

/// A temporary name as an earlier run would have made it.
fn stale(run_id: u64, nonce: u32, n: u32) -> String {
    format!("{TEMP_PREFIX}{run_id:016x}.{nonce:08x}.{n:x}")
}

#[test]
fn stale_temporaries_are_removed_by_the_next_run() {
    each_config("stale_temporaries_are_removed_by_the_next_run", |cfg, t| {
        tree!(t.src(), { "f" => file("data"), "d/g" => file("more") });
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        let (a, b, c) = (
            stale(0x0123_4567_89ab_cdef, 0xdead_beef, 0),
            stale(1, 2, 0x1f),
            stale(u64::MAX, 0, 7),
        );
        tree!(t.dst(), {
            &a => file("half-written file of an earlier run"),
            format!("d/{b}") => random(100_000),
            format!("d/{c}") => symlink("f"),
        });
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        for name in [a.clone(), format!("d/{b}"), format!("d/{c}")] {
            assert!(
                t.dst().join(&name).symlink_metadata().is_err(),
                "stale {name} survived"
            );
        }
        if cfg.front == crate::util::Front::Lib {
            assert_eq!(out.stat("stale_removed"), 3);
        }
        assert!(
            out.itemized.iter().all(|l| !l.contains(TEMP_PREFIX)),
            "temporaries are not itemized: {:#?}",
            out.itemized
        );
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}

#[test]
fn stale_temporaries_are_kept_by_a_dry_run() {
    each_config("stale_temporaries_are_kept_by_a_dry_run", |cfg, t| {
        tree!(t.src(), { "f" => file("data") });
        let name = stale(42, 42, 0);
        tree!(t.dst(), { &name => file("stale") });
        let out = cfg.sync_with(
            &t.src(),
            &t.dst(),
            &Opts {
                delete: true,
                dry_run: true,
                ..Opts::default()
            },
        );
        out.assert_ok();
        assert!(t.dst().join(&name).exists(), "a dry run removed a file");
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        assert_no_temps(&t.dst());
    });
}

#[test]
fn names_that_only_look_like_temporaries_are_data() {
    each_config(
        "names_that_only_look_like_temporaries_are_data",
        |cfg, t| {
            // Not `<prefix><16 hex>.`: ordinary names to psync.
            tree!(t.src(), { ".psync-tmp.notes" => file("mine"), ".psync-tmp.0123" => file("short id") });
            tree!(t.dst(), { ".psync-tmp.xyz" => file("a user's file, not ours") });
            cfg.sync(&t.src(), &t.dst()).assert_ok();
            assert_eq!(
                std::fs::read(t.dst().join(".psync-tmp.xyz")).unwrap(),
                b"a user's file, not ours"
            );
            assert_synced!(t.src(), t.dst(), except: [".psync-tmp.xyz"]);
            let again = cfg.sync(&t.src(), &t.dst());
            again.assert_ok();
            assert!(again.itemized.is_empty(), "{:#?}", again.itemized);
        },
    );
}

/// A stale temporary in a directory whose times are right (an earlier
/// run set them after its temporary was made): removing it moves the
/// directory's mtime, which the run sets again.
#[test]
fn a_directory_whose_stale_temporary_is_removed_gets_its_times_again() {
    each_config(
        "a_directory_whose_stale_temporary_is_removed_gets_its_times_again",
        |cfg, t| {
            tree!(t.src(), { "d/f" => file("data") });
            cfg.sync(&t.src(), &t.dst()).assert_ok();
            let name = format!("d/{}", stale(7, 8, 9));
            tree!(t.dst(), { &name => file("half-written") });
            // The directory's times as the source's, as after a finish.
            let m = std::fs::metadata(t.src().join("d")).unwrap();
            let at = std::time::SystemTime::UNIX_EPOCH
                + std::time::Duration::new(
                    std::os::unix::fs::MetadataExt::mtime(&m) as u64,
                    std::os::unix::fs::MetadataExt::mtime_nsec(&m) as u32,
                );
            std::fs::File::open(t.dst().join("d"))
                .unwrap()
                .set_times(std::fs::FileTimes::new().set_modified(at).set_accessed(at))
                .unwrap();
            cfg.sync(&t.src(), &t.dst()).assert_ok();
            assert!(t.dst().join(&name).symlink_metadata().is_err());
            assert_synced!(t.src(), t.dst());
        },
    );
}
