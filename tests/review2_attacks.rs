//! Second adversarial review of issue 13 (ADR 010), after the first
//! review's fixes (live link counts, `foreign_data`, foreign directories
//! left alone, the link area's identity and ACLs): holes the fixes leave
//! or open, and regressions of legitimate runs. Each test fails while the
//! hole is open.

use crate::util::TestDir;
use crate::util::attack::*;
use crate::util::user::test_user;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Names of one hard-link group, one per directory (so each is fixed by
/// its own `Links` task, on any worker).
const DIRS: usize = 6;

/// No attacker: a `cp -al`-style snapshot next to DST shares the inode of
/// a hard-linked group whose names are in several directories (`d0/a` ..
/// `d5/a`); the source's mode changes. ADR 010: the snapshot keeps the old
/// inode unchanged. Found: with several workers, one worker's
/// `publish_target` links the group's target inode into the link area
/// under the group's key *before* checking its links; meanwhile another
/// worker's `link_protocol` finds the key published (`published(None)` ->
/// `link_to_key`: same inode -> `AlreadyRight`) and fixes the inode in
/// place (`fix_linked_attrs(.., published = true)`, no check): the
/// snapshot's file is chmodded. Roughly one run in three here; the test
/// tries up to 25 times.
#[test]
fn concurrent_worker_adopts_the_inode_another_is_still_checking() {
    let t = TestDir::new("concurrent_worker_adopts_the_inode_another_is_still_checking");
    for attempt in 0..25 {
        let (src, dst) = (
            t.join(format!("{attempt}/src")),
            t.join(format!("{attempt}/dst")),
        );
        tree!(src, { "d0/a" => file("group data") mode(0o644) mtime(T, 0) });
        for d in 1..DIRS {
            tree!(src, { format!("d{d}/a") => hardlink("d0/a") });
        }
        let first = run_lib(&src, &dst, |b| {
            b.threads(4);
        });
        assert!(first.ok, "first run: {first:#?}");
        let snap = t.join(format!("{attempt}/snapshot-a"));
        std::fs::hard_link(dst.join("d0/a"), &snap).unwrap();
        let before = attrs(&snap);
        chmod(&src.join("d0/a"), 0o600);

        let out = run_lib(&src, &dst, |b| {
            b.threads(4);
        });
        assert_eq!(
            attrs(&snap),
            before,
            "attempt {attempt}: the snapshot's file (outside DST, sharing the group's old inode) \
             was changed in place; run: {out:#?}"
        );
        let inos: std::collections::BTreeSet<u64> = (0..DIRS)
            .map(|d| attrs(&dst.join(format!("d{d}/a"))).0)
            .collect();
        assert_eq!(inos.len(), 1, "attempt {attempt}: the group is one inode");
    }
}

/// The same race, steered by a user: the attacker's source group (their
/// own file, mode 0666, linked in `u/d0` .. `u/d5`) matches in size and
/// mtime a ROOT-owned file outside DST, and the attacker plants every name
/// in the target as a hard link to it (protected_hardlinks=0, or another
/// NFS client; root makes the links here). `foreign_data` does not stop a
/// chown of a file owned by psync's own user (root), so only the link
/// check does, and a concurrent worker skips it: the root-owned file is
/// given to the attacker, mode 0666.
#[test]
fn root_owned_outside_file_is_chowned_to_the_attacker_by_a_concurrent_worker() {
    let test = "root_owned_outside_file_is_chowned_to_the_attacker_by_a_concurrent_worker";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    const ROOTS: &[u8] = b"root's config file!";
    const ATTACKER: &[u8] = b"the attacker's data";
    for attempt in 0..25 {
        let (src, dst) = (
            t.join(format!("{attempt}/src")),
            t.join(format!("{attempt}/dst")),
        );
        tree!(src, { "u/keep" => file("k") mode(0o644) });
        for d in 0..DIRS {
            tree!(src, { format!("u/d{d}/keep") => file("k") mode(0o644) });
        }
        user.own(&src.join("u"));
        let first = run_lib(&src, &dst, |b| {
            b.threads(4);
        });
        assert!(first.ok, "first run: {first:#?}");
        let outside = t.join(format!("{attempt}/elsewhere/config"));
        tree!(t.join(format!("{attempt}/elsewhere")), {
            "config" => file(ROOTS) owner(0, 0) mode(0o644) mtime(T, 0),
        });
        tree!(src, {
            "u/d0/a" => file(ATTACKER) owner(user.uid, user.gid) mode(0o666) mtime(T, 0),
        });
        for d in 1..DIRS {
            tree!(src, { format!("u/d{d}/a") => hardlink("u/d0/a") });
        }
        for d in 0..DIRS {
            std::fs::hard_link(&outside, dst.join(format!("u/d{d}/a"))).unwrap();
        }
        let before = attrs(&outside);

        let out = run_lib(&src, &dst, |b| {
            b.threads(4);
        });
        let after = attrs(&outside);
        assert_eq!(
            (after.1, after.2, after.3),
            (before.1, before.2, before.3),
            "attempt {attempt}: root's file outside the target ({}) was chowned/chmodded \
             to the attacker through their planted names (left: after, right: before); \
             run: {out:#?}",
            outside.display()
        );
        assert_eq!(std::fs::read(&outside).unwrap(), ROOTS);
    }
}

/// In a directory the attacker owns (`u/`, not sticky), a victim keeps a
/// private directory `u/v` (the victim's, mode 0700) whose files are
/// readable only through it (mode 0644, as umask 022 makes them). The
/// attacker cannot enter it, but may rename it: they move their own
/// `u/w` aside and rename `u/v` to `u/w`, a directory of theirs in the
/// source. psync, as root, takes the victim's directory as the target of
/// the attacker's `u/w` and fixes its attributes in place: chowned to the
/// attacker, chmodded 0755 (`.d..tpog... u/w/`). The attacker then owns
/// the victim's directory and reads the victim's files. ADR 010 copies a
/// file another user owns instead of chowning it (`foreign_data`), but a
/// directory is chowned.
#[test]
fn victims_private_directory_renamed_to_the_attackers_name_is_given_to_them() {
    let test = "victims_private_directory_renamed_to_the_attackers_name_is_given_to_them";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    tree!(t.src(), {
        "u/w/x" => file("the attacker's file") mode(0o644),
        "u/w" => dir() mode(0o755),
        "u" => dir() mode(0o755),
    });
    user.own(&t.src().join("u"));
    tree!(t.src(), {
        "u/v/secret" => file("the victim's secret") owner(VICTIM, VICTIM) mode(0o644),
        "u/v" => dir() owner(VICTIM, VICTIM) mode(0o700),
    });
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(first.ok, "first run: {first:#?}");
    let cat = |p: &Path| {
        user.command("cat")
            .arg(p)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!cat(&t.dst().join("u/v/secret")), "private before the run");
    for (from, to) in [("u/w", "u/w-mine"), ("u/v", "u/w")] {
        let mv = user
            .command("mv")
            .arg("-T")
            .arg(t.dst().join(from))
            .arg(t.dst().join(to))
            .output()
            .unwrap();
        assert!(mv.status.success(), "mv as the attacker: {mv:?}");
    }
    assert!(!cat(&t.dst().join("u/w/secret")), "still private after mv");

    let out = run_lib(&t.src(), &t.dst(), |_| {});
    let w = attrs(&t.dst().join("u/w"));
    assert!(
        !cat(&t.dst().join("u/w/secret")),
        "the attacker reads the victim's file u/w/secret: psync gave them the victim's private \
         directory (now uid {}, mode {:o}); run: {out:#?}",
        w.1,
        w.3 & 0o7777
    );
    assert_ne!(
        w.1, user.uid,
        "the victim's directory was chowned to the attacker; run: {out:#?}"
    );
    assert!(
        t.dst().join("u/w/secret").exists(),
        "the victim's file in the renamed directory is gone; run: {out:#?}"
    );
    assert!(
        !out.ok
            && out
                .errors
                .iter()
                .any(|e| e.contains("not synced into nor given away")),
        "the run did not report the directory it left alone: {out:#?}"
    );
}

/// mtimes of the directories below `root`, by path.
fn dir_mtimes(root: &Path) -> std::collections::BTreeMap<String, (i64, i64)> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(root).unwrap().filter_map(Result::ok) {
        let m = e.path().symlink_metadata().unwrap();
        if m.is_dir() {
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                (m.mtime(), m.mtime_nsec()),
            );
        }
    }
    out
}

/// No attacker: a snapshot next to DST shares the inode of a hard-linked
/// group `g/a`, `g/b`, `h/c`; the source's mode changes. As ADR 010 says,
/// the group is copied anew and its names relinked to the copy (in the
/// last phase). Found: the relinks move the mtimes of `g/` and `h/`, and
/// nothing sets them back: the run exits 0 with DST's directory times
/// wrong, and the next run itemizes `.d..t...... g/` and `h/` (a fix the
/// first run owed). Before this change such a run fixed the inode in place
/// and touched no directory.
#[test]
fn group_copied_anew_leaves_its_directories_mtimes_wrong() {
    let t = TestDir::new("group_copied_anew_leaves_its_directories_mtimes_wrong");
    tree!(t.src(), {
        "g/a" => file("group data") mode(0o644) mtime(T, 0),
        "g/b" => hardlink("g/a"),
        "h/c" => hardlink("g/a"),
        "g" => dir() mtime(T, 0),
        "h" => dir() mtime(T, 0),
    });
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(first.ok, "first run: {first:#?}");
    std::fs::hard_link(t.dst().join("g/a"), t.join("snapshot-a")).unwrap();
    chmod(&t.src().join("g/a"), 0o600);
    // chmod does not move the directory's mtime; set it back anyway.
    crate::util::tree::set_mtime(&t.src().join("g"), T, 0);

    let out = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(out.ok, "{out:#?}");
    assert_eq!(
        dir_mtimes(&t.dst()),
        dir_mtimes(&t.src()),
        "DST's directory mtimes after the run (left) are not the source's (right); run: {out:#?}"
    );
    let again = run_lib(&t.src(), &t.dst(), |b| {
        b.itemize(true);
    });
    assert!(
        again.itemized.is_empty(),
        "a re-sync right after has changes: {again:#?}"
    );
}

/// The live count (`links_explained`) races with the user: it takes the
/// inode's link count first (`fstat`), then counts which of the group's
/// names are that inode now. Its doc says "links a user adds afterwards
/// gain them nothing", but a link the user adds at one of the group's
/// names (in their own directory) after the `fstat` is counted without
/// being in the count: an outside link is "explained" by it. Here the
/// attacker's group is `u/n00` .. `u/n39` plus `u/zz` (their own file,
/// mode 0666), all planted as links to a ROOT-owned file outside DST that
/// matches in size and mtime (protected_hardlinks=0 or another NFS client:
/// root makes the links for them here), and a thread of theirs links and
/// unlinks `u/zz` in a loop. One worker (no concurrency inside psync): the
/// check passes when `u/zz` is absent at the `fstat` and present when it
/// is counted, and the root-owned file is chowned to the attacker.
#[test]
fn a_link_added_after_the_fstat_explains_an_outside_link() {
    let test = "a_link_added_after_the_fstat_explains_an_outside_link";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    const ROOTS: &[u8] = b"root's config file!";
    const ATTACKER: &[u8] = b"the attacker's data";
    const NAMES: usize = 40;
    for attempt in 0..10 {
        let (src, dst) = (
            t.join(format!("{attempt}/src")),
            t.join(format!("{attempt}/dst")),
        );
        tree!(src, { "u/keep" => file("k") mode(0o644) });
        user.own(&src.join("u"));
        let first = run_lib(&src, &dst, |_| {});
        assert!(first.ok, "first run: {first:#?}");
        let outside = t.join(format!("{attempt}/elsewhere/config"));
        tree!(t.join(format!("{attempt}/elsewhere")), {
            "config" => file(ROOTS) owner(0, 0) mode(0o644) mtime(T, 0),
        });
        tree!(src, {
            "u/zz" => file(ATTACKER) owner(user.uid, user.gid) mode(0o666) mtime(T, 0),
        });
        std::fs::hard_link(&outside, dst.join("u/zz")).unwrap();
        for n in 0..NAMES {
            let name = format!("u/n{n:02}");
            tree!(src, { name.clone() => hardlink("u/zz") });
            std::fs::hard_link(&outside, dst.join(&name)).unwrap();
        }
        let before = attrs(&outside);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let toggler = {
            let (stop, outside, zz) = (stop.clone(), outside.clone(), dst.join("u/zz"));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::remove_file(&zz);
                    let _ = std::fs::hard_link(&outside, &zz);
                }
            })
        };
        let out = run_lib(&src, &dst, |_| {});
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        toggler.join().unwrap();
        let after = attrs(&outside);
        assert_eq!(
            (after.1, after.2, after.3),
            (before.1, before.2, before.3),
            "attempt {attempt}: root's file outside the target ({}) was chowned/chmodded to the \
             attacker through their planted names (left: after, right: before); errors: {:#?}",
            outside.display(),
            out.errors
        );
    }
}
