//! Adversarial review of issue 13 (ADR 010): attacks by a user who may
//! write inside the target, on a run as root, that the fixes do
//! not stop. Each test fails while the hole is open.

use crate::util::TestDir;
use crate::util::attack::*;
use crate::util::user::test_user;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The attacker owns `u/` in the source and the target (a first run made
/// it). Their source `u/a1`, `u/a2` are one hard-linked file (their own:
/// any user may link their own files), matching in size and mtime a file
/// of the victim's outside the target, with the attacker's owner and mode
/// 0666. In their target `u/` they plant BOTH names as hard links to the
/// outside file (protected_hardlinks=0, or another NFS client; root makes
/// the links here). The outside inode has 3 links, the run accounts for 2
/// (the tree's names on it): the first name is refused and copied anew,
/// which drops one link; the second name then finds 2 links = 2 accounted
/// and is fixed IN PLACE: the outside file is chowned to the attacker.
fn two_planted_names(test: &str, threads: usize) {
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    tree!(t.src(), {
        "u" => dir() mode(0o755),
        "u/keep" => file("k") mode(0o644),
    });
    user.own(&t.src().join("u"));
    let first = run_lib(&t.src(), &t.dst(), |b| {
        b.threads(threads);
    });
    assert!(first.ok, "first run: {first:#?}");

    const OUTSIDE_DATA: &[u8] = b"another user's file";
    const ATTACKER_DATA: &[u8] = b"the attacker's data";
    tree!(t.join("elsewhere"), {
        "outside" => file(OUTSIDE_DATA) owner(VICTIM, VICTIM) mode(0o600) mtime(T, 0),
    });
    tree!(t.src(), {
        "u/a1" => file(ATTACKER_DATA) owner(user.uid, user.gid) mode(0o666) mtime(T, 0),
        "u/a2" => hardlink("u/a1"),
    });
    let outside = t.join("elsewhere/outside");
    std::fs::hard_link(&outside, t.dst().join("u/a1")).unwrap();
    std::fs::hard_link(&outside, t.dst().join("u/a2")).unwrap();
    let before = attrs(&outside);

    let out = run_lib(&t.src(), &t.dst(), |b| {
        b.threads(threads);
    });
    let after = attrs(&outside);
    assert_eq!(
        (after.1, after.2, after.3),
        (before.1, before.2, before.3),
        "the victim's file outside the target ({}) was chowned/chmodded through the \
         attacker's planted names u/a1, u/a2 (left: after, right: before); run: {out:#?}",
        outside.display()
    );
    let (a1, a2) = (attrs(&t.dst().join("u/a1")), attrs(&t.dst().join("u/a2")));
    assert_eq!(
        a1.0, a2.0,
        "DST u/a1 and u/a2 are one inode, as in the source; run: {out:#?}"
    );
    assert_ne!(a1.0, before.0, "DST u/a1 is not the outside inode");
    assert_eq!(std::fs::read(t.dst().join("u/a2")).unwrap(), ATTACKER_DATA);
}

#[test]
fn two_planted_links_of_one_group_get_an_outside_file_chowned() {
    two_planted_names(
        "two_planted_links_of_one_group_get_an_outside_file_chowned",
        1,
    );
}

/// No attacker: a `cp -al`-style snapshot next to DST shares the inode of
/// a hard-linked pair `g/a1`, `g/a2`; the source pair's mode changes.
/// ADR 010: the snapshot keeps the old inode, unchanged, and the pair is
/// copied anew, still one inode. Found: `a1` is copied anew, then `a2`
/// (whose inode lost a link) is chmodded in place: the snapshot's file
/// changes, and DST `a1`, `a2` are two inodes after a run that exits 0.
#[test]
fn snapshot_link_of_a_hard_linked_pair_is_changed_and_the_pair_split() {
    let t = TestDir::new("snapshot_link_of_a_hard_linked_pair_is_changed_and_the_pair_split");
    tree!(t.src(), {
        "g/a1" => file("pair data") mode(0o644) mtime(T, 0),
        "g/a2" => hardlink("g/a1"),
    });
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(first.ok, "first run: {first:#?}");
    let snap = t.join("snapshot-a1");
    std::fs::hard_link(t.dst().join("g/a1"), &snap).unwrap();
    let before = attrs(&snap);
    std::fs::set_permissions(
        t.src().join("g/a1"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    let out = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(out.ok, "{out:#?}");
    let (a1, a2) = (attrs(&t.dst().join("g/a1")), attrs(&t.dst().join("g/a2")));
    assert_eq!(
        attrs(&snap),
        before,
        "the snapshot's file changed; run: {out:#?}"
    );
    assert_eq!(
        a1.0, a2.0,
        "DST g/a1 and g/a2 are one inode, as in the source; run: {out:#?}"
    );
    assert_eq!((a1.3 & 0o7777, a2.3 & 0o7777), (0o600, 0o600));
}

/// The victim's source file is hard-linked into the attacker's shared
/// directory: `u/a` (the attacker's directory) and `v/b` (the victim's own,
/// mode 0700), one inode of the victim's, mode 0640, new to the target.
/// The attacker plants `u/a` in the target: a file of their own matching
/// the source's size and mtime, which they hold open for writing. ADR 010
/// accepts that such a planted file is kept under the attacker's own name;
/// found: psync publishes it as the group's inode, chowns it to the victim
/// and links the victim's private `v/b` to it, so the victim's file, in the
/// victim's own directory, is an inode the attacker holds open (they write
/// it at will and read whatever the victim writes to it later).
#[test]
fn planted_file_becomes_the_victims_hard_link_in_a_private_directory() {
    let test = "planted_file_becomes_the_victims_hard_link_in_a_private_directory";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    tree!(t.src(), {
        "u" => dir() mode(0o755),
        "v" => dir() mode(0o700) owner(VICTIM, VICTIM),
    });
    user.own(&t.src().join("u"));
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(first.ok, "first run: {first:#?}");

    const VICTIM_DATA: &[u8] = b"the victim's data!!";
    const ATTACKER_DATA: &[u8] = b"the attacker's data";
    tree!(t.src(), {
        "v/b" => file(VICTIM_DATA) owner(VICTIM, VICTIM) mode(0o640) mtime(T, 0),
        "u/a" => hardlink("v/b"),
    });
    // The plant, as the attacker would: their file, kept open.
    let planted = t.dst().join("u/a");
    tree!(t.dst(), {
        "u/a" => file(ATTACKER_DATA) owner(user.uid, user.gid) mode(0o644) mtime(T, 0),
    });
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&planted)
        .unwrap();
    let planted_ino = attrs(&planted).0;

    let out = run_lib(&t.src(), &t.dst(), |_| {});
    let b = attrs(&t.dst().join("v/b"));
    assert_ne!(
        b.0, planted_ino,
        "the victim's DST v/b (in their 0700 directory) is the inode the attacker planted \
         and holds open; run: {out:#?}"
    );
    assert_eq!(std::fs::read(t.dst().join("v/b")).unwrap(), VICTIM_DATA);
    drop(held);
}

/// In a directory the attacker owns (not sticky) the attacker may rename
/// any entry, a victim's directory included (same parent: no write access
/// to the directory itself is needed), but cannot delete what is inside
/// it. They rename the victim's directory `u/vd` (which holds a file the
/// victim keeps only in the target: users work in DST during a migration)
/// to a name shaped like another run's temporary. psync, as root, removes
/// "a temporary of another psync run" of another owner recursively: the
/// victim's files are destroyed (then `vd` is copied anew from the
/// source, without the target-only file), and the run exits 0.
#[test]
fn victims_directory_renamed_to_a_temporary_name_is_destroyed() {
    let test = "victims_directory_renamed_to_a_temporary_name_is_destroyed";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    tree!(t.src(), {
        "u" => dir() mode(0o755),
        "u/vd/f" => file("in the source") owner(VICTIM, VICTIM) mode(0o644),
        "u/vd" => dir() mode(0o755) owner(VICTIM, VICTIM),
    });
    std::os::unix::fs::lchown(t.src().join("u"), Some(user.uid), Some(user.gid)).unwrap();
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(first.ok, "first run: {first:#?}");
    assert!(user.owns(&t.dst().join("u")));
    // The victim's work, only in the target.
    tree!(t.dst(), {
        "u/vd/work" => file("only in the target") owner(VICTIM, VICTIM) mode(0o644),
    });
    // The attacker, unprivileged: cannot delete it...
    let rm = user
        .command("rm")
        .arg(t.dst().join("u/vd/work"))
        .output()
        .unwrap();
    assert!(
        !rm.status.success(),
        "the attacker cannot delete the victim's file"
    );
    // ...but can rename the directory in their own.
    let hidden = t.dst().join(format!(
        "u/{}00000000000000aa.0000000000000001",
        psync::TEMP_PREFIX
    ));
    let mv = user
        .command("mv")
        .arg(t.dst().join("u/vd"))
        .arg(&hidden)
        .output()
        .unwrap();
    assert!(mv.status.success(), "mv as the attacker: {mv:?}");

    let out = run_lib(&t.src(), &t.dst(), |_| {});
    let survives = hidden.join("work").exists() || t.dst().join("u/vd/work").exists();
    assert!(
        survives,
        "the victim's target-only file was deleted by psync as root (the attacker alone \
         could not); run: {out:#?}"
    );
}

/// The target root is the attacker's own directory (a home or project
/// area synced as root), holding a victim's directory `vd` with a file
/// the victim keeps only in the target. During a run that makes a link
/// area, the attacker (who lists their root) renames the area away and
/// renames the victim's directory to the area's name (both within their
/// own directory: allowed). At the end psync removes the area by name
/// (`drop_link_area`: `remove_all`), not the directory it holds open:
/// the victim's directory is destroyed (`vd` is missing from the target
/// altogether when it was synced before the swap), psync's real area is
/// left behind under the attacker's name, and the run exits 0 without a
/// warning.
#[test]
fn link_area_swapped_for_a_victims_directory_destroys_it() {
    let test = "link_area_swapped_for_a_victims_directory_destroys_it";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    tree!(t.src(), {
        "vd/f" => file("in the source") owner(VICTIM, VICTIM) mode(0o644),
        "vd" => dir() mode(0o755) owner(VICTIM, VICTIM),
        "a/keep" => file("k"),
    });
    std::os::unix::fs::lchown(t.src(), Some(user.uid), Some(user.gid)).unwrap();
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(first.ok, "first run: {first:#?}");
    assert!(user.owns(&t.dst()), "the target root is the attacker's");
    tree!(t.dst(), {
        "vd/work" => file("only in the target") owner(VICTIM, VICTIM) mode(0o644),
    });
    // New hard-linked files: the run makes its link area.
    tree!(t.src(), {
        "a/h1" => file("linked"),
        "a/h2" => hardlink("a/h1"),
        "a/sub/x" => file("x"),
    });
    let m = t.src().join("a/sub").symlink_metadata().unwrap();
    let dst = t.dst();
    let attacker = user;
    let walker = OnList {
        trigger: (m.dev(), m.ino()),
        act: std::sync::Mutex::new(Some(Box::new(move || {
            let area = std::fs::read_dir(&dst)
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.ends_with(".links"))
                .expect("the run's link area at the target root");
            let mv = |from: &Path, to: &Path| {
                let o = attacker
                    .command("mv")
                    .arg("-T")
                    .arg(from)
                    .arg(to)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "mv as the attacker: {o:?}");
            };
            mv(&dst.join(&area), &dst.join("area-aside"));
            mv(&dst.join("vd"), &dst.join(&area));
        }))),
    };
    let out = run_lib(&t.src(), &t.dst(), |b| {
        b.walker(std::sync::Arc::new(walker));
    });
    let names: Vec<_> = std::fs::read_dir(t.dst())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    let survives = walkdir_has(&t.dst(), "work");
    assert!(
        survives,
        "the victim's target-only file vd/work was deleted by psync as root; root now: \
         {names:?}; run: {out:#?}"
    );
}

/// True when a file named `name` is anywhere below `root`.
fn walkdir_has(root: &Path, name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(root) else {
        return false;
    };
    rd.filter_map(Result::ok).any(|e| {
        e.file_name() == name
            || (e.file_type().is_ok_and(|t| t.is_dir()) && walkdir_has(&e.path(), name))
    })
}

/// ctimes of every entry below `root`, by path.
fn ctimes(root: &Path) -> std::collections::BTreeMap<String, (i64, i64)> {
    let mut out = std::collections::BTreeMap::new();
    fn walk(root: &Path, p: &Path, out: &mut std::collections::BTreeMap<String, (i64, i64)>) {
        for e in std::fs::read_dir(p).unwrap().filter_map(Result::ok) {
            let m = e.path().symlink_metadata().unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, (m.ctime(), m.ctime_nsec()));
            if m.is_dir() {
                walk(root, &e.path(), out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// No attacker: no-op re-syncs of a hard-linked tree (a group across
/// directories, one with a name outside the source tree, a symlink
/// group), plain and under `-c`: no warnings, no errors, no ctime moves.
/// The plain re-syncs pass (no regression of issue 13 there); under `-c`
/// the ctime of every directory holding a compared regular file moves
/// (`a`, `b`, `c`, `e`; not `d`, symlinks only). Found as well at 92001d3,
/// before issue 13: not a regression of this change.
#[test]
fn noop_checksum_resync_moves_directory_ctimes() {
    let t = TestDir::new("noop_checksum_resync_moves_directory_ctimes");
    tree!(t.src(), {
        "a/x" => file("group one") mode(0o640) mtime(T, 0),
        "a/y" => hardlink("a/x"),
        "b/z" => hardlink("a/x"),
        "c/p" => file("group two") mode(0o600) mtime(T, 0),
        "c/q" => hardlink("c/p"),
        "d/s" => symlink("some/where"),
        "d/t" => hardlink("d/s"),
        "e/single" => file("one link") mtime(T, 0),
    });
    std::fs::create_dir(t.join("outside")).unwrap();
    std::fs::hard_link(t.src().join("c/p"), t.join("outside/p3")).unwrap();
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(
        first.ok && first.warnings.is_empty(),
        "first run: {first:#?}"
    );
    for checksum in [false, true, false] {
        let before = ctimes(&t.dst());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let out = run_lib(&t.src(), &t.dst(), |b| {
            b.checksum(checksum);
        });
        assert!(
            out.ok && out.warnings.is_empty() && out.errors.is_empty(),
            "-c {checksum}: {out:#?}"
        );
        assert_eq!(
            ctimes(&t.dst()),
            before,
            "-c {checksum}: ctimes moved on a no-op run"
        );
    }
}

/// As [`two_planted_links_of_one_group_get_an_outside_file_chowned`], but
/// through `publish_target` (groups with new names, so "busy"): the
/// attacker's source has two hard-linked groups, each with a name that is
/// new to the target and a name that they plant in the target as a link
/// to the victim's outside file (matching its size and mtime). The run
/// accounts for 2 links on the outside inode (the two planted names); it
/// has 3 (+ the area's key). The decoy group's name is refused, copied
/// anew and relinked, which drops a link; the target group's name is
/// then published with 2 links = 2 accounted, and its attributes are
/// fixed in place: the outside file is chowned to the attacker.
#[test]
fn a_decoy_group_lowers_the_links_so_an_outside_file_is_published_and_chowned() {
    let test = "a_decoy_group_lowers_the_links_so_an_outside_file_is_published_and_chowned";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    tree!(t.src(), {
        "u" => dir() mode(0o755),
        "u/keep" => file("k") mode(0o644),
    });
    user.own(&t.src().join("u"));
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(first.ok, "first run: {first:#?}");

    const OUTSIDE_DATA: &[u8] = b"another user's file";
    const ATTACKER_DATA: &[u8] = b"the attacker's data";
    tree!(t.join("elsewhere"), {
        "outside" => file(OUTSIDE_DATA) owner(VICTIM, VICTIM) mode(0o600) mtime(T, 0),
    });
    tree!(t.src(), {
        "u/a_decoy" => file(ATTACKER_DATA) owner(user.uid, user.gid) mode(0o644) mtime(T, 0),
        "u/a_decoy_new" => hardlink("u/a_decoy"),
        "u/z_target" => file(ATTACKER_DATA) owner(user.uid, user.gid) mode(0o666) mtime(T, 0),
        "u/z_target_new" => hardlink("u/z_target"),
    });
    let outside = t.join("elsewhere/outside");
    std::fs::hard_link(&outside, t.dst().join("u/a_decoy")).unwrap();
    std::fs::hard_link(&outside, t.dst().join("u/z_target")).unwrap();
    let before = attrs(&outside);

    let out = run_lib(&t.src(), &t.dst(), |_| {});
    let after = attrs(&outside);
    assert_eq!(
        (after.1, after.2, after.3),
        (before.1, before.2, before.3),
        "the victim's file outside the target ({}) was chowned/chmodded (left: after, right: \
         before); run: {out:#?}",
        outside.display()
    );
}

/// A target root the attacker owns (their area, synced as root) gets a
/// default ACL of theirs (`setfacl -d -m u:attacker:rwx`, as the owner
/// may). The run is `--no-acls` (rsync `-aHX`): new files get what their
/// own target directory passes on. The victim's hard-linked pair, mode
/// 0640, in the victim's directory `v/` (no default ACL there) is made in
/// the link area at the root instead, and inherits the attacker's entry
/// (masked while 0600, effective r-- once chmodded 0640): the attacker
/// reads the victim's data. The same file without a second link is made
/// in `v/` and stays unreadable to them.
#[test]
fn attackers_default_acl_on_the_root_reaches_the_victims_hard_linked_files() {
    let test = "attackers_default_acl_on_the_root_reaches_the_victims_hard_linked_files";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    tree!(t.src(), {
        "v" => dir() mode(0o755) owner(VICTIM, VICTIM),
    });
    std::os::unix::fs::lchown(t.src(), Some(user.uid), Some(user.gid)).unwrap();
    let no_acls = |b: &mut psync::SyncBuilder| {
        b.acls(psync::AttrMode::Off);
    };
    let first = run_lib(&t.src(), &t.dst(), no_acls);
    assert!(first.ok, "first run: {first:#?}");
    assert!(user.owns(&t.dst()));
    let o = user
        .command("setfacl")
        .args(["-d", "-m", &format!("u:{}:rwx", user.uid)])
        .arg(t.dst())
        .output()
        .unwrap();
    assert!(o.status.success(), "setfacl as the attacker: {o:?}");
    tree!(t.src(), {
        "v/single" => file("the victim's secret") owner(VICTIM, VICTIM) mode(0o640),
        "v/h1" => file("the victim's secret") owner(VICTIM, VICTIM) mode(0o640),
        "v/h2" => hardlink("v/h1"),
    });
    let out = run_lib(&t.src(), &t.dst(), no_acls);
    assert!(out.ok, "{out:#?}");
    let reads = |rel: &str| {
        user.command("cat")
            .arg(t.dst().join(rel))
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        !reads("v/single"),
        "the plain file is not readable to the attacker"
    );
    assert!(
        !reads("v/h1"),
        "the attacker reads the victim's hard-linked v/h1 (mode 0640, victim's) through the \
         ACL entry it inherited from the attacker's default ACL on the target root; run: {out:#?}"
    );
}
