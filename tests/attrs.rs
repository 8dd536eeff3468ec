//! What `rsync -aHAX` keeps beyond data and inode attributes: hard links,
//! holes of sparse files, extended attributes and POSIX ACLs.

use crate::basic::assert_second_run_changes_nothing_below_the_root;
use crate::util::{Opts, TestDir, assert_no_temps, each_config, in_ci, rsync_oracle};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[test]
fn hard_links_are_kept() {
    each_config("hard_links_are_kept", |cfg, t| {
        tree!(t.src(), {
            "a" => file("shared data") mtime(1_600_000_000, 0),
            "b" => hardlink("a"),
            "d/c" => hardlink("a"),
            "x" => random(300_000),
            "y" => hardlink("x"),
            "solo" => file("one link"),
        });
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        let ino = |p: &str| t.dst().join(p).symlink_metadata().unwrap().ino();
        assert_eq!(ino("a"), ino("b"));
        assert_eq!(ino("a"), ino("d/c"));
        assert_eq!(ino("x"), ino("y"));
        assert_ne!(ino("a"), ino("x"));
        assert_eq!(
            out.stat("bytes_copied"),
            11 + 300_000 + 8,
            "each link group's data is copied once"
        );
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        assert_second_run_changes_nothing_below_the_root(cfg, t, &Opts::delete());
        // Another link to an existing group, and a new group.
        tree!(t.src(), { "z" => hardlink("x"), "n1" => file("new group"), "d/n2" => hardlink("n1") });
        cfg.sync_with(&t.src(), &t.dst(), &Opts::delete())
            .assert_ok();
        assert_eq!(ino("x"), ino("z"));
        assert_eq!(ino("n1"), ino("d/n2"));
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        assert_second_run_changes_nothing_below_the_root(cfg, t, &Opts::delete());
    });
}

/// Files hard-linked to paths outside the tree (a snapshot of a backup
/// tree, say): each is copied once, a group with two paths inside stays
/// one inode, and a re-sync neither copies nor links anything (taking a
/// link on a target file would move its ctime).
#[test]
fn files_linked_outside_the_tree() {
    each_config("files_linked_outside_the_tree", |cfg, t| {
        let outside = t.join("outside");
        tree!(t.src(), {
            "a" => file("A") mtime(1_600_000_000, 0),
            "d/c" => random(5000) mtime(1_600_000_000, 0),
            "g1" => file("G") mtime(1_600_000_000, 0),
            "d/g2" => hardlink("g1"),
            "solo" => file("one link"),
        });
        std::fs::create_dir_all(&outside).unwrap();
        for (from, to) in [("a", "a"), ("d/c", "c"), ("g1", "g3")] {
            std::fs::hard_link(t.src().join(from), outside.join(to)).unwrap();
        }
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        assert_eq!(
            out.stat("bytes_copied"),
            1 + 5000 + 1 + 8,
            "each inode copied once"
        );
        let meta = |p: &str| t.dst().join(p).symlink_metadata().unwrap();
        assert_eq!(meta("a").nlink(), 1);
        assert_eq!(meta("d/c").nlink(), 1);
        assert_eq!(meta("g1").ino(), meta("d/g2").ino());
        assert_eq!(meta("g1").nlink(), 2);
        assert_no_temps(&t.dst());
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        assert_second_run_changes_nothing_below_the_root(cfg, t, &Opts::delete());
        assert_no_temps(&t.dst());
        // A second path inside the tree joins the copy made for one path.
        tree!(t.src(), { "d/a2" => hardlink("a") });
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        assert_eq!(out.stat("bytes_copied"), 0, "a new link recopied its group");
        assert_eq!(meta("a").ino(), meta("d/a2").ino());
        assert_synced!(t.src(), t.dst());
        assert_no_temps(&t.dst());
        // A mode changed on files whose every name here is one target
        // inode already (the relink they are planned as owes it).
        tree!(t.src(), { "a" => keep() mode(0o600), "d/c" => keep() mode(0o640) });
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        assert_eq!(meta("d/a2").mode() & 0o7777, 0o600);
        assert_eq!(meta("d/c").mode() & 0o7777, 0o640);
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        assert_no_temps(&t.dst());
    });
}

/// A path whose link to a group is broken in the source (replaced by an
/// equal, separate file: same size and mtime) must be split off in the
/// target too; otherwise writing one target path changes another. rsync
/// -aH does not do this either (its quick check skips the file), so the
/// rsync oracle cannot catch it; `assert_synced!` compares link groups.
#[test]
fn a_hard_link_broken_in_the_source_is_broken_in_the_target() {
    each_config(
        "a_hard_link_broken_in_the_source_is_broken_in_the_target",
        |cfg, t| {
            tree!(t.src(), {
                "a" => file("shared data") mtime(1_600_000_000, 0),
                "b" => hardlink("a"),
                "c" => hardlink("a"),
            });
            cfg.sync(&t.src(), &t.dst()).assert_ok();
            tree!(t.src(), { "b" => file("shared data") mtime(1_600_000_000, 0) });
            cfg.sync(&t.src(), &t.dst()).assert_ok();
            let ino = |p: &str| t.dst().join(p).symlink_metadata().unwrap().ino();
            assert_eq!(ino("a"), ino("c"));
            assert_ne!(
                ino("a"),
                ino("b"),
                "b is still hard-linked to a in the target"
            );
            assert_synced!(t.src(), t.dst());
        },
    );
}

#[test]
fn sparse_files_keep_their_holes() {
    each_config("sparse_files_keep_their_holes", |cfg, t| {
        const LEN: u64 = 64 << 20;
        tree!(t.src(), { "sparse" => sparse(LEN) });
        let src_bytes = t.src().join("sparse").metadata().unwrap().blocks() * 512;
        if src_bytes > LEN / 2 {
            eprintln!(
                "SKIPPED sparse_files_keep_their_holes: this file system does not make holes"
            );
            return;
        }
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        assert_synced!(t.src(), t.dst());
        let dst_bytes = t.dst().join("sparse").metadata().unwrap().blocks() * 512;
        assert!(
            dst_bytes <= src_bytes + (1 << 20),
            "target allocates {dst_bytes} bytes for a source of {src_bytes} allocated"
        );
    });
}

/// True when `dir`'s file system takes `user.*` xattrs and ACLs.
pub(crate) fn xattrs_and_acls_work(dir: &Path) -> Result<(), String> {
    let probe = dir.join(".xattr-probe");
    std::fs::write(&probe, b"").unwrap();
    let x = crate::util::tree::set_xattr(&probe, "user.probe", b"1")
        .map_err(|e| format!("user xattrs: {e}"));
    let acl = std::process::Command::new("setfacl")
        .args(["-m", "u:1234:r--"])
        .arg(&probe)
        .output()
        .map_err(|e| format!("setfacl: {e}"))
        .and_then(|o| {
            if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).into_owned())
            }
        });
    std::fs::remove_file(&probe).unwrap();
    x.and(acl)
}

#[test]
fn xattrs_and_acls_are_kept() {
    let probe = TestDir::new("xattrs_and_acls_are_kept-probe");
    if let Err(why) = xattrs_and_acls_work(&probe.src()) {
        assert!(
            !in_ci(),
            "CI=true but xattrs/ACLs do not work under target/: {why}"
        );
        eprintln!("SKIPPED xattrs_and_acls_are_kept: {why}");
        return;
    }
    drop(probe);
    each_config("xattrs_and_acls_are_kept", |cfg, t| {
        tree!(t.src(), {
            "f" => file("x") xattr("user.color", "blue") xattr("user.binary", b"\x00\xff\n"),
            "big-value" => file("y") xattr("user.big", vec![b'v'; 3000]),
            "d" => dir() xattr("user.dir", "1"),
            "d/inner" => file("z") xattr("user.inner", ""),
            "acl" => file("a") acl("u:1234:r--") acl("g:5678:rw-"),
            "acldir" => dir() acl("u:1234:r-x") acl("d:u:1234:rwx"),
            "plain" => file("no xattrs"),
            "l" => symlink("f"),
        });
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        assert_second_run_changes_nothing_below_the_root(cfg, t, &Opts::default());
        // Changed, added and removed attributes on otherwise unchanged files.
        tree!(t.src(), { "f" => keep() xattr("user.color", "red"), "plain" => keep() xattr("user.new", "n") });
        rustix::fs::lremovexattr(t.src().join("f"), "user.binary").unwrap();
        rustix::fs::lremovexattr(t.src().join("d/inner"), "user.inner").unwrap();
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        assert_eq!(
            out.stat("bytes_copied"),
            0,
            "attribute changes copy no data"
        );
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}

/// A target pre-seeded by another tool (same data and mtimes, no xattrs)
/// gets the source's xattrs from a default run, which compares every
/// entry as `rsync -X` does; `--fast-xattr-check` (ctime-driven) does not
/// look, as documented.
#[test]
fn pre_seeded_target_gets_its_xattrs_by_default() {
    let t = TestDir::new("pre_seeded_target_gets_its_xattrs_by_default");
    let (src, dst) = (t.src(), t.dst());
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    if let Err(e) = rustix::fs::setxattr(
        src.join("f"),
        "user.tag",
        b"v",
        rustix::fs::XattrFlags::empty(),
    ) {
        assert!(!in_ci(), "user xattrs unsupported in CI: {e}");
        eprintln!("skipping: this file system has no user xattrs ({e})");
        return;
    }
    // "Another tool": copies data, mode and times, not xattrs.
    let status = std::process::Command::new("cp")
        .args(["-r", "--preserve=mode,timestamps"])
        .arg(&src)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(status.success());
    let has_tag = || rustix::fs::getxattr(dst.join("f"), "user.tag", &mut [0u8; 8][..]).is_ok();
    assert!(!has_tag(), "cp copied the xattr; the fixture is wrong");
    let run = |fast: bool| {
        let mut b = psync::builder(&src, &dst);
        b.fast_xattr_check(fast);
        b.build().unwrap().run().unwrap()
    };
    let r = run(true);
    assert!(r.success());
    assert!(
        !has_tag(),
        "the fast check is ctime-driven and does not look"
    );
    let r = run(false);
    assert!(r.success());
    assert!(has_tag(), "the default compares every entry's xattrs");
    assert_eq!(r.stats.bytes_copied, 0, "attributes only");
    rsync_oracle(&src, &dst);
}

/// A source directory whose mode changes after its parent listed it (a
/// long run: its finish waits for its whole subtree): its target gets
/// the mode the source has at the finish, not the listed one — which a
/// task forged into a broker's queue could set (ADR 016).
#[test]
fn a_directory_chmodded_during_the_run_gets_its_new_mode() {
    use crate::util::attack::{on_list, run_lib};
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new("dir_chmodded_during_the_run");
    tree!(t.src(), { "d/f" => file("data") });
    std::fs::set_permissions(t.src().join("d"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = t.src().join("d");
    // When `d` is listed, its parent has listed it with mode 0755.
    let walker = on_list(&t.src().join("d"), move || {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
    });
    let out = run_lib(&t.src(), &t.dst(), |b| {
        b.walker(std::sync::Arc::new(walker));
    });
    assert!(out.errors.is_empty(), "{out:#?}");
    let mode = std::fs::metadata(t.dst().join("d")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o750, "the source's mode at the finish");
    assert_synced!(t.src(), t.dst());
}
