//! Hard-link groups beyond the plain "a file with several names": groups
//! of fifos, sockets, devices and symlinks (which `rsync -H` links too),
//! groups that lose one name and gain another in the same run, and a
//! target whose link a user broke. Each must be right after ONE run, with
//! rsync as the oracle, and a run after it must change nothing.

use crate::basic::assert_second_run_changes_nothing_below_the_root;
use crate::util::run::Outcome;
use crate::util::{
    Config, Opts, TestDir, each_config, in_ci, is_root, rsync_oracle_full_with,
    rsync_oracle_without_delete,
};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const T: i64 = 1_650_000_000;

/// The target inode of `rel` (not following symlinks).
fn ino(root: &Path, rel: &str) -> u64 {
    root.join(rel)
        .symlink_metadata()
        .unwrap_or_else(|e| panic!("lstat {}: {e}", root.join(rel).display()))
        .ino()
}

/// Asserts that the target names of each group are one inode, and that
/// different groups are different inodes.
#[track_caller]
fn assert_groups(dst: &Path, groups: &[&[&str]]) {
    let mut seen = std::collections::BTreeMap::new();
    for (i, names) in groups.iter().enumerate() {
        let first = ino(dst, names[0]);
        for n in &names[1..] {
            assert_eq!(ino(dst, n), first, "{n} is not linked to {}", names[0]);
        }
        if let Some(other) = seen.insert(first, i) {
            panic!("groups {other} and {i} share target inode {first}");
        }
        let nlink = dst.join(names[0]).symlink_metadata().unwrap().nlink();
        assert_eq!(nlink, names.len() as u64, "links of {}", names[0]);
    }
}

/// Makes a block device (root only; tree! has no block devices).
fn blockdev(p: &Path, major: u32, minor: u32) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o640),
        rustix::fs::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
    crate::util::tree::set_mtime(p, T, 14);
}

/// The whole-archive oracle, `--delete` included.
#[track_caller]
fn oracle(t: &TestDir) {
    rsync_oracle_full_with(&t.src(), &t.dst(), &[]);
}

#[track_caller]
fn sync(cfg: Config, t: &TestDir, opts: &Opts) -> Outcome {
    let out = cfg.sync_with(&t.src(), &t.dst(), opts);
    out.assert_ok();
    out
}

/// Every kind of non-directory in groups of 2 or 3 names over different
/// directories, beside a lone fifo.
fn special_groups(src: &Path) {
    tree!(src, {
        "p/fifo" => fifo() mode(0o640) mtime(T, 1),
        "q/fifo2" => hardlink("p/fifo"),
        "r/fifo3" => hardlink("p/fifo"),
        "p/sock" => socket() mtime(T, 2),
        "q/sock2" => hardlink("p/sock"),
        "p/chr" => chardev(1, 3) owner(1234, 5678) mode(0o620) mtime(T, 3),
        "r/chr2" => hardlink("p/chr"),
        "p/sym" => symlink("some/target") owner(4321, 8765) mtime(T, 4),
        "q/sym2" => hardlink("p/sym"),
        "r/sym3" => hardlink("p/sym"),
        "p/solo" => fifo() mtime(T, 5),
    });
    blockdev(&src.join("p/blk"), 7, 200);
    tree!(src, { "q/blk2" => hardlink("p/blk") });
}

/// Fifos, sockets, character and block devices and symlinks that share
/// an inode in the source share one in the target; a second run changes
/// nothing; groups that lose a name, gain one, change device number or
/// are broken in the source converge in one run.
#[test]
fn hard_linked_specials_and_symlinks() {
    if !is_root() {
        assert!(!in_ci(), "CI=true runs as root: devices need it");
        skip!("devices can only be made as root");
    }
    each_config("hard_linked_specials_and_symlinks", |cfg, t| {
        let (src, dst) = (t.src(), t.dst());
        special_groups(&src);
        sync(cfg, t, &Opts::delete());
        assert_synced!(src, dst);
        oracle(t);
        assert_groups(
            &dst,
            &[
                &["p/fifo", "q/fifo2", "r/fifo3"],
                &["p/sock", "q/sock2"],
                &["p/chr", "r/chr2"],
                &["p/blk", "q/blk2"],
                &["p/sym", "q/sym2", "r/sym3"],
                &["p/solo"],
            ],
        );
        assert_second_run_changes_nothing_below_the_root(cfg, t, &Opts::delete());

        std::fs::remove_file(src.join("q/fifo2")).unwrap();
        std::fs::remove_file(src.join("p/chr")).unwrap();
        std::fs::remove_file(src.join("r/chr2")).unwrap();
        tree!(src, {
            "s/fifo4" => hardlink("p/fifo"),
            "p/chr" => chardev(1, 5) mtime(T, 6),
            "s/chr3" => hardlink("p/chr"),
            "s/sym4" => hardlink("r/sym3"),
            "q/sock2" => socket() mtime(T, 2),
        });
        sync(cfg, t, &Opts::delete());
        assert_synced!(src, dst);
        oracle(t);
        assert_groups(
            &dst,
            &[
                &["p/fifo", "s/fifo4", "r/fifo3"],
                &["p/sock"],
                &["q/sock2"],
                &["p/chr", "s/chr3"],
                &["p/blk", "q/blk2"],
                &["p/sym", "q/sym2", "r/sym3", "s/sym4"],
            ],
        );
        assert_second_run_changes_nothing_below_the_root(cfg, t, &Opts::delete());
    });
}

/// The first sync of `a` and `b` linked (and bystanders spread over
/// directories, so that other workers take them), then `change` to the
/// source, then ONE run with or without `--delete`: `group` (target
/// names) must be one inode with no data copied, and rsync must find
/// nothing to do. A run after it changes nothing.
fn lose_and_gain(test: &str, delete: bool, change: fn(&Path), group: &[&str], gone: &str) {
    each_config(test, |cfg, t| {
        let (src, dst) = (t.src(), t.dst());
        tree!(src, {
            "a" => random(4000) mtime(T, 1),
            "b" => hardlink("a"),
            "x" => random(3000) mtime(T, 2),
            "d/y" => hardlink("x"),
        });
        for i in 0..12 {
            tree!(src, { format!("d{i}/e/f") => random(100 + i) mtime(T, 3) });
        }
        let opts = if delete {
            Opts::delete()
        } else {
            Opts::default()
        };
        sync(cfg, t, &opts);
        change(&src);
        let out = sync(cfg, t, &opts);
        assert_eq!(out.stat("bytes_copied"), 0, "{:#?}", out.itemized);
        // Without --delete the lost name stays, linked to the group.
        let mut names = group.to_vec();
        if !delete {
            names.push(gone);
        }
        assert_groups(&dst, &[&names, &["x", "d/y"]]);
        if delete {
            assert_synced!(src, dst);
            oracle(t);
            assert_second_run_changes_nothing_below_the_root(cfg, t, &opts);
        } else {
            assert!(dst.join(gone).exists(), "{gone} deleted without --delete");
            // The harness names a target group by its first path: with
            // the lost name first, only the oracle and inodes compare.
            if group.iter().all(|n| *n < gone) {
                assert_synced!(src, dst, except: [gone]);
            }
            rsync_oracle_without_delete(&src, &dst);
            let again = sync(cfg, t, &opts);
            assert!(again.itemized.is_empty(), "{:#?}", again.itemized);
            assert_eq!(again.stat("bytes_copied"), 0);
        }
    });
}

fn rm(p: &Path) {
    std::fs::remove_file(p).unwrap_or_else(|e| panic!("rm {}: {e}", p.display()));
}

fn lose_b_gain_c(src: &Path) {
    rm(&src.join("b"));
    tree!(src, { "c" => hardlink("a") });
}

fn lose_a_gain_c(src: &Path) {
    rm(&src.join("a"));
    tree!(src, { "c" => hardlink("b") });
}

fn lose_b_gain_deep(src: &Path) {
    rm(&src.join("b"));
    tree!(src, { "d7/e/g/c" => hardlink("a") });
}

#[test]
fn link_group_loses_a_name_and_gains_one() {
    lose_and_gain("lose_gain_delete", true, lose_b_gain_c, &["a", "c"], "b");
    lose_and_gain("lose_gain_keep", false, lose_b_gain_c, &["a", "c"], "b");
}

#[test]
fn link_group_loses_its_first_name_and_gains_one() {
    lose_and_gain("lose_first_delete", true, lose_a_gain_c, &["b", "c"], "a");
    lose_and_gain("lose_first_keep", false, lose_a_gain_c, &["b", "c"], "a");
}

#[test]
fn link_group_gains_a_name_in_another_directory() {
    let g: &[&str] = &["a", "d7/e/g/c"];
    lose_and_gain("gain_deep_delete", true, lose_b_gain_deep, g, "b");
    lose_and_gain("gain_deep_keep", false, lose_b_gain_deep, g, "b");
}

/// A user replaced one target name of a synced group with a separate
/// inode (same data, size and mtime): one run links it back.
#[test]
fn a_link_broken_in_the_target_is_relinked() {
    each_config("a_link_broken_in_the_target_is_relinked", |cfg, t| {
        let (src, dst) = (t.src(), t.dst());
        tree!(src, {
            "a" => random(4000) mtime(T, 1),
            "d/b" => hardlink("a"),
            "e/c" => hardlink("a"),
            "x" => random(3000) mtime(T, 2),
            "d/y" => hardlink("x"),
        });
        sync(cfg, t, &Opts::delete());
        for rel in ["d/b", "d/y"] {
            let p = dst.join(rel);
            let data = std::fs::read(&p).unwrap();
            rm(&p);
            tree!(dst, { rel => file(data) });
            let m = src.join(rel).symlink_metadata().unwrap();
            crate::util::tree::set_mtime(&p, m.mtime(), m.mtime_nsec() as u32);
        }
        assert_ne!(ino(&dst, "a"), ino(&dst, "d/b"));
        let out = sync(cfg, t, &Opts::delete());
        assert_eq!(out.stat("bytes_copied"), 0, "{:#?}", out.itemized);
        assert_groups(&dst, &[&["a", "d/b", "e/c"], &["x", "d/y"]]);
        assert_synced!(src, dst);
        oracle(t);
        assert_second_run_changes_nothing_below_the_root(cfg, t, &Opts::delete());
    });
}

/// The same under `--checksum` (where a name of equal size is compared,
/// not skipped): `rm b; ln a d/c` is right after one run.
#[test]
fn link_group_loses_and_gains_a_name_under_checksum() {
    for threads in ["1", "8"] {
        let t = TestDir::new(&format!("lose_gain_checksum-{threads}t"));
        let (src, dst) = (t.src(), t.dst());
        tree!(src, {
            "a" => random(4000) mtime(T, 1),
            "b" => hardlink("a"),
            "d/x" => random(10) mtime(T, 2),
        });
        let run = || {
            let args = ["-c", "--delete", "--threads", threads];
            let o = crate::util::run::run_cli(&args, &src, &dst);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        run();
        lose_b_gain_deep(&src);
        run();
        assert_groups(&dst, &[&["a", "d7/e/g/c"]]);
        assert_synced!(src, dst);
        rsync_oracle_full_with(&src, &dst, &["-c"]);
    }
}

/// The first sync of `a` and `b` linked (and `c` too when `three`), then
/// `change` to the source, which changes the group's link count and an
/// attribute of its inode but not its data, then ONE run with
/// `--delete`: `group` must be one target inode with the source's
/// attributes, no data copied, and rsync must find nothing to do.
fn attrs_and_links_change(test: &str, three: bool, change: fn(&Path), group: &[&str]) {
    each_config(test, |cfg, t| {
        let (src, dst) = (t.src(), t.dst());
        tree!(src, {
            "a" => random(4000) mode(0o644) mtime(T, 1),
            "b" => hardlink("a"),
            "x" => random(3000) mtime(T, 2),
            "d/y" => hardlink("x"),
        });
        if three {
            tree!(src, { "c" => hardlink("a") });
        }
        for i in 0..6 {
            tree!(src, { format!("d{i}/e/f") => random(100 + i) mtime(T, 3) });
        }
        sync(cfg, t, &Opts::delete());
        change(&src);
        let out = sync(cfg, t, &Opts::delete());
        assert_eq!(out.stat("bytes_copied"), 0, "{:#?}", out.itemized);
        assert_groups(&dst, &[group, &["x", "d/y"]]);
        assert_synced!(src, dst);
        oracle(t);
        assert_second_run_changes_nothing_below_the_root(cfg, t, &Opts::delete());
    });
}

fn chmod_a_link_c(src: &Path) {
    tree!(src, { "a" => keep() mode(0o600), "c" => hardlink("a") });
}

fn chmod_a_unlink_c(src: &Path) {
    rm(&src.join("c"));
    tree!(src, { "a" => keep() mode(0o600) });
}

fn chown_a_link_c(src: &Path) {
    tree!(src, { "a" => keep() owner(1234, 5678), "c" => hardlink("a") });
}

fn chown_a_unlink_c(src: &Path) {
    rm(&src.join("c"));
    tree!(src, { "a" => keep() owner(1234, 5678) });
}

fn xattr_a_link_c(src: &Path) {
    tree!(src, { "a" => keep() xattr("user.color", "blue"), "c" => hardlink("a") });
}

fn xattr_a_unlink_c(src: &Path) {
    rm(&src.join("c"));
    tree!(src, { "a" => keep() xattr("user.color", "blue") });
}

/// `chmod 600 a; ln a c` (2 links to 3) and `rm c; chmod 600 a` (3 to 2)
/// after a sync: one run gives the group's one target inode the new mode.
#[test]
fn link_count_and_mode_change_together() {
    let abc: &[&str] = &["a", "b", "c"];
    attrs_and_links_change("links_and_mode_gain", false, chmod_a_link_c, abc);
    attrs_and_links_change("links_and_mode_lose", true, chmod_a_unlink_c, &["a", "b"]);
}

/// The same with the owner changed (as root).
#[test]
fn link_count_and_owner_change_together() {
    if !is_root() {
        assert!(!in_ci(), "CI=true runs as root: chown needs it");
        skip!("only root can give files to other owners");
    }
    let abc: &[&str] = &["a", "b", "c"];
    attrs_and_links_change("links_and_owner_gain", false, chown_a_link_c, abc);
    attrs_and_links_change("links_and_owner_lose", true, chown_a_unlink_c, &["a", "b"]);
}

/// The same with an xattr added (only the status changes, not the data,
/// size, mtime, mode or owner).
#[test]
fn link_count_and_xattrs_change_together() {
    let probe = TestDir::new("link_count_and_xattrs_change_together-probe");
    if let Err(why) = crate::attrs::xattrs_and_acls_work(&probe.src()) {
        assert!(
            !in_ci(),
            "CI=true but xattrs do not work under target/: {why}"
        );
        skip!("{why}");
    }
    let abc: &[&str] = &["a", "b", "c"];
    attrs_and_links_change("links_and_xattr_gain", false, xattr_a_link_c, abc);
    attrs_and_links_change("links_and_xattr_lose", true, xattr_a_unlink_c, &["a", "b"]);
}

/// `touch a; ln a c`: the mtime differs, so the data is copied again (as
/// rsync's quick check does), into one inode for the three names.
#[test]
fn link_count_and_mtime_change_together() {
    each_config("links_and_mtime_gain", |cfg, t| {
        let (src, dst) = (t.src(), t.dst());
        tree!(src, {
            "a" => random(4000) mode(0o644) mtime(T, 1),
            "b" => hardlink("a"),
        });
        sync(cfg, t, &Opts::delete());
        tree!(src, { "a" => keep() mtime(T + 10, 7), "c" => hardlink("a") });
        sync(cfg, t, &Opts::delete());
        assert_groups(&dst, &[&["a", "b", "c"]]);
        assert_synced!(src, dst);
        oracle(t);
        assert_second_run_changes_nothing_below_the_root(cfg, t, &Opts::delete());
    });
}

/// `--checksum` over a group whose names are two target inodes, one of
/// them with other bytes of the same size and time: the names end as one
/// inode holding the source's bytes, not the one a quick check passes
/// (it published the differing inode, and every name was linked to it).
#[test]
fn checksum_does_not_keep_a_differing_inode_for_a_group() {
    each_config(
        "checksum_does_not_keep_a_differing_inode_for_a_group",
        |cfg, t| {
            let src = t.src();
            std::fs::write(src.join("a"), b"same").unwrap();
            crate::util::tree::set_mtime(&src.join("a"), T, 0);
            std::fs::hard_link(src.join("a"), src.join("b")).unwrap();
            std::fs::hard_link(src.join("a"), src.join("c")).unwrap();
            sync(cfg, t, &Opts::default());
            let c = t.dst().join("c");
            std::fs::remove_file(&c).unwrap();
            std::fs::write(&c, b"diff").unwrap();
            crate::util::tree::set_mtime(&c, T, 0);
            let opts = Opts {
                checksum: true,
                ..Opts::default()
            };
            sync(cfg, t, &opts);
            for n in ["a", "b", "c"] {
                assert_eq!(std::fs::read(t.dst().join(n)).unwrap(), b"same", "{n}");
            }
            assert_groups(&t.dst(), &[&["a", "b", "c"]]);
            // The group's one inode with other bytes of the same size and
            // time: all its names get the source's bytes.
            std::fs::write(t.dst().join("a"), b"DIFF").unwrap();
            crate::util::tree::set_mtime(&t.dst().join("a"), T, 0);
            sync(cfg, t, &opts);
            for n in ["a", "b", "c"] {
                assert_eq!(std::fs::read(t.dst().join(n)).unwrap(), b"same", "{n}");
            }
            assert_groups(&t.dst(), &[&["a", "b", "c"]]);
        },
    );
}
