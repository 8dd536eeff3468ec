//! Third adversarial review of issue 13 (ADR 010), after the second
//! review's fixes (checks before publication, counts only in directories
//! only psync can change, directories another user owns left alone).
//! Each test fails while the hole is open.

use crate::util::TestDir;
use crate::util::attack::*;
use crate::util::user::test_user;
use std::path::{Path, PathBuf};

/// Review 2's theft (`victims_private_directory_renamed_to_the_attackers_
/// name_is_given_to_them`), raced: `foreign_dir` looks at `u/w` only when
/// its task starts. The attacker swaps names *after* that (here: when
/// psync lists `u/w/sub`, i.e. while it syncs inside `u/w`): `u/w` ->
/// `u/w-mine`, the victim's `u/v` -> `u/w`. The directory's finish
/// (`finish_dir` -> `apply_dir_attrs`) opens `u/w` again by path and sets
/// the source's owner and mode on whatever directory is there now, without
/// checking it is the one synced nor `foreign_dir` again: the victim's
/// private directory is chowned to the attacker, mode 0755, and the
/// attacker reads the victim's file. Only the source's mode of `u/w`
/// changed (0755 -> 0751), so the finish has attributes to set.
#[test]
fn victims_directory_swapped_in_during_the_sync_is_given_away_at_its_finish() {
    let test = "victims_directory_swapped_in_during_the_sync_is_given_away_at_its_finish";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    victim_and_attacker(&t, user);
    std::fs::set_permissions(
        t.src().join("u/w"),
        std::os::unix::fs::PermissionsExt::from_mode(0o751),
    )
    .unwrap();
    let before = attrs(&t.dst().join("u/v"));
    let d = t.dst();
    let walker = on_list(&t.src().join("u/w/sub"), move || {
        mv(user, &d.join("u/w"), &d.join("u/w-mine"));
        mv(user, &d.join("u/v"), &d.join("u/w"));
    });
    let out = run_lib(&t.src(), &t.dst(), |b| {
        b.walker(std::sync::Arc::new(walker));
    });
    let now = attrs(&t.dst().join("u/w"));
    assert_eq!(now.0, before.0, "the victim's directory is at u/w");
    assert!(
        !cat(user, &t.dst().join("u/w/secret")),
        "the attacker reads the victim's file: psync gave them the victim's private directory \
         at its finish (now uid {}, mode {:o}; before uid {}, mode {:o}); run: {out:#?}",
        now.1,
        now.3 & 0o7777,
        before.1,
        before.3 & 0o7777
    );
    assert_eq!(
        (now.1, now.3),
        (before.1, before.3),
        "the victim's directory was changed; run: {out:#?}"
    );
}

/// The same swap, seen by the copies of the directory: `Task::Files`
/// (`run_files`) opens `u/w` again by path, after the directory task
/// checked and listed it. The attacker's new file `u/w/new` (and their
/// changed `x`) are written into the victim's private directory: a
/// file of the victim's there is replaced by the attacker's data (`x`
/// here, the victim's own file of that name), as root.
#[test]
fn copies_planned_for_the_attackers_directory_land_in_the_victims() {
    let test = "copies_planned_for_the_attackers_directory_land_in_the_victims";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    victim_and_attacker(&t, user);
    tree!(t.dst(), {
        "u/v/x" => file("the victim's x") owner(VICTIM, VICTIM) mode(0o600),
    });
    tree!(t.src(), {
        "u/w/x" => file("the attacker's new x") mode(0o644),
        "u/w/new" => file("planted by the attacker") mode(0o644),
    });
    user.own(&t.src().join("u/w"));
    let victim_ino = attrs(&t.dst().join("u/v")).0;
    let d = t.dst();
    // Listing the target `u/w`: after `foreign_dir` and the open of the
    // directory task, before its copies run.
    let walker = on_list(&t.dst().join("u/w"), move || {
        mv(user, &d.join("u/w"), &d.join("u/w-mine"));
        mv(user, &d.join("u/v"), &d.join("u/w"));
    });
    let out = run_lib(&t.src(), &t.dst(), |b| {
        b.walker(std::sync::Arc::new(walker));
    });
    let victims: PathBuf = t.dst().join("u/w");
    assert_eq!(
        attrs(&victims).0,
        victim_ino,
        "the victim's directory is at u/w"
    );
    assert_eq!(
        std::fs::read(victims.join("x")).ok().as_deref(),
        Some(&b"the victim's x"[..]),
        "the victim's file x was replaced by the attacker's data; run: {out:#?}"
    );
    assert!(
        !victims.join("new").exists(),
        "the attacker's file was written into the victim's private directory; run: {out:#?}"
    );
}

/// No attacker, no root: the test user syncs their own tree, where a
/// hard-linked pair has a name in a read-only directory (`b/`, 0555; a
/// published data set). The group's names are linked in the run's last
/// phase, after `b/`'s finish gave it mode 0555: linking `b/g` fails with
/// EACCES (`link d/b/g: Permission denied`), on the first run and on every
/// later one; `rsync -aH` as the same user makes it (it sets a directory's
/// mode after its entries). Not new with issue 13 (the last phase came
/// with 63329e1), found while checking non-root runs.
#[test]
fn non_root_hard_link_into_a_read_only_directory_fails() {
    let test = "non_root_hard_link_into_a_read_only_directory_fails";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    tree!(t.src(), {
        "a/f" => file("data") mode(0o644),
        "b/g" => hardlink("a/f"),
        "b" => keep() mode(0o555),
    });
    user.own(t.path());
    for round in ["sync", "re-sync"] {
        let out = user.psync(&["-q"], &t.src(), &t.dst());
        assert!(
            out.status.success(),
            "{round} as the test user: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (f, g) = (attrs(&t.dst().join("a/f")), attrs(&t.dst().join("b/g")));
    assert_eq!(f.0, g.0, "a/f and b/g are one inode");
}

/// `remove_stale` checks by name (`dir.stat`) that an unused part file's
/// name is not a directory, then removes it by name with `remove_all`,
/// whose `unlink` fails with EISDIR on a directory and then deletes the
/// directory recursively. A name like a part file (`.psync-part.<16 hex>`,
/// anyone can make one) in a directory the attacker owns is removed as
/// unused; between the `stat` and the `unlink` the attacker exchanges it
/// (`renameat2(RENAME_EXCHANGE)`, both names in their own directory) with
/// a victim's directory kept there (`u/v`, target-only): psync, as root,
/// deletes the victim's directory and everything in it. The exchange loop
/// runs in this (root) process, as the attacker could run it; 400 rounds
/// (before the fix it won within about 230 to 390 rounds).
#[test]
fn part_name_exchanged_for_a_victims_directory_after_the_stat_deletes_it() {
    let test = "part_name_exchanged_for_a_victims_directory_after_the_stat_deletes_it";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    const PART: &str = ".psync-part.00000000deadbeef";
    tree!(t.src(), { "u/keep" => file("k") mode(0o644) });
    user.own(&t.src().join("u"));
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(first.ok, "first run: {first:#?}");
    let u = t.dst().join("u");
    tree!(u, {
        "v/secret" => file("the victim's only copy") owner(VICTIM, VICTIM) mode(0o600),
        "v" => dir() owner(VICTIM, VICTIM) mode(0o700),
    });
    let secret_survives =
        |u: &Path| u.join("v/secret").exists() || u.join(PART).join("secret").exists();
    for attempt in 0..400 {
        // The part-named file of the attacker's, at whichever name is free.
        let (p, v) = (u.join(PART), u.join("v"));
        if !p.exists() {
            std::fs::write(&p, "x").unwrap();
            std::os::unix::fs::lchown(&p, Some(user.uid), Some(user.gid)).unwrap();
        } else if !v.exists() {
            std::fs::write(&v, "x").unwrap();
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let toggler = {
            let (stop, p, v) = (stop.clone(), p.clone(), v.clone());
            std::thread::spawn(move || {
                let (p, v) = (
                    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap(),
                    std::ffi::CString::new(v.as_os_str().as_encoded_bytes()).unwrap(),
                );
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    unsafe {
                        libc::renameat2(
                            libc::AT_FDCWD,
                            p.as_ptr(),
                            libc::AT_FDCWD,
                            v.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        );
                    }
                }
            })
        };
        let out = run_lib(&t.src(), &t.dst(), |_| {});
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        toggler.join().unwrap();
        assert!(
            secret_survives(&u),
            "attempt {attempt}: the victim's directory (with the only copy of their file) was \
             deleted by psync as root; run: {out:#?}"
        );
        // The victim's directory back at `v` for the next attempt.
        if u.join(PART).is_dir() {
            let _ = std::fs::remove_file(u.join("v"));
            std::fs::rename(u.join(PART), u.join("v")).unwrap();
        }
    }
}
