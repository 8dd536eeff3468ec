//! Changed entries: rsync's quick check (size and mtime) decides what is
//! copied; attribute-only changes are applied in place; the itemized codes
//! say which.

use crate::util::{each_config, is_root, rsync_oracle};

const T1: i64 = 1_600_000_000;
const T2: i64 = 1_700_000_000;

#[test]
fn updates_are_detected_and_itemized() {
    each_config("updates_are_detected_and_itemized", |cfg, t| {
        tree!(t.src(), {
            "same-size" => file("aaaa") mtime(T1, 0),
            "grow" => file("short") mtime(T1, 0),
            "shrink" => file("a longer text") mtime(T1, 0),
            "mode" => file("m") mode(0o644) mtime(T1, 0),
            "mtime" => file("t") mtime(T1, 0),
            "mtime-ns" => file("n") mtime(T1, 1),
            "sneaky" => file("1234") mtime(T1, 0),
            "owner" => file("o") mtime(T1, 0),
            "dir" => dir() mode(0o755),
            "unchanged" => file("u") mtime(T1, 0),
        });
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        assert_synced!(t.src(), t.dst());
        tree!(t.src(), {
            "same-size" => file("bbbb") mtime(T2, 0),
            "grow" => file("much longer now") mtime(T2, 0),
            "shrink" => file("short") mtime(T1, 0),
            "mode" => keep() mode(0o600),
            "mtime" => keep() mtime(T2, 0),
            // psync compares nanoseconds; rsync 3.2.7 ignores sub-second
            // differences between local files (neither copies nor fixes them).
            "mtime-ns" => keep() mtime(T1, 2),
            // Same size and mtime: the quick check cannot see it (nor can rsync's).
            "sneaky" => file("5678") mtime(T1, 0),
            "dir" => keep() mode(0o700),
        });
        let mut expected = vec![
            ">f..t...... same-size",
            ">f.st...... grow",
            ">f.s....... shrink",
            ".f...p..... mode",
            ">f..t...... mtime",
            ">f..t...... mtime-ns",
            ".d...p..... dir/",
            // Files made anew in it: the root's mtime differs, as rsync says.
            ".d..t...... ./",
        ];
        if is_root() {
            tree!(t.src(), { "owner" => keep() owner(1000, 1001) });
            expected.push(".f....og... owner");
        }
        expected.sort_unstable();
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        assert_eq!(out.sorted_items(), expected);
        // Only the files whose size or mtime changed are copied.
        assert_eq!(out.stat("bytes_copied"), (4 + 15 + 5 + 1 + 1) as u64);
        assert_eq!(std::fs::read(t.dst().join("same-size")).unwrap(), b"bbbb");
        assert_eq!(
            std::fs::read(t.dst().join("sneaky")).unwrap(),
            b"1234",
            "the quick check skips same size and mtime"
        );
        assert_synced!(t.src(), t.dst(), except: ["sneaky"]);
        rsync_oracle(&t.src(), &t.dst());
    });
}

#[test]
fn symlink_target_change_replaces_the_link() {
    each_config("symlink_target_change_replaces_the_link", |cfg, t| {
        tree!(t.src(), { "l" => symlink("old-target") mtime(T1, 0), "m" => symlink("same") mtime(T1, 0) });
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        tree!(t.src(), { "l" => symlink("new-target") mtime(T2, 0), "m" => keep() mtime(T2, 5) });
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        assert_eq!(
            std::fs::read_link(t.dst().join("l")).unwrap(),
            std::path::Path::new("new-target")
        );
        assert_eq!(
            out.sorted_items(),
            [
                ".L..t...... m -> same",
                // `l` made anew in it: the root's mtime differs.
                ".d..t...... ./",
                "cLc.t...... l -> new-target"
            ]
        );
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}
