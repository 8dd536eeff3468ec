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
