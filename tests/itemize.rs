//! psync's `-i` output against rsync's: the same starting target, copied
//! exactly, is synced by psync and by `rsync -ai --delete`; both must
//! print the same set of lines.
//!
//! Known, accepted differences:
//! - rsync 3.2.7 ignores sub-second mtime differences between local files
//!   (it neither copies nor itemizes them); psync compares nanoseconds.
//!   Fixtures here use whole-second mtimes where both sides have a file.
//!   The roots of the first tests below are made at different moments
//!   (often within one second): their `./` lines are left out, and
//!   rsync's `created directory DST` message (not an itemized line) too;
//!   the table of changes at the end compares them.

use crate::util::{
    Config, Opts, TestDir, copy_tree, each_config, require_rsync, rsync_itemize, rsync_oracle,
};

/// Syncs with psync and with rsync from identical starting targets and
/// returns (psync's lines, rsync's lines), sorted, root lines removed.
fn both(cfg: Config, t: &TestDir) -> (Vec<String>, Vec<String>) {
    both_with(cfg, t, &["-ai", "--delete"])
}

/// [`both`] with other rsync arguments.
fn both_with(cfg: Config, t: &TestDir, rsync_args: &[&str]) -> (Vec<String>, Vec<String>) {
    let rsync_dst = t.join("rsync-dst");
    if t.dst().exists() {
        copy_tree(&t.dst(), &rsync_dst);
    }
    let out = cfg.sync_with(&t.src(), &t.dst(), &Opts::delete());
    out.assert_ok();
    let keep = |l: &String| !l.ends_with(" ./") && !l.starts_with("created directory");
    let mut ours: Vec<String> = out.itemized.iter().filter(|l| keep(l)).cloned().collect();
    let mut theirs: Vec<String> = rsync_itemize(&t.src(), &rsync_dst, rsync_args)
        .into_iter()
        .filter(keep)
        .collect();
    ours.sort();
    theirs.sort();
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
    (ours, theirs)
}

#[track_caller]
fn assert_same_lines(ours: &[String], theirs: &[String]) {
    if ours == theirs {
        return;
    }
    let only_ours: Vec<_> = ours.iter().filter(|l| !theirs.contains(l)).collect();
    let only_theirs: Vec<_> = theirs.iter().filter(|l| !ours.contains(l)).collect();
    panic!(
        "psync -i and rsync -i differ\n  only psync: {only_ours:#?}\n  only rsync: {only_theirs:#?}\n--- psync ---\n{}\n--- rsync ---\n{}",
        ours.join("\n"),
        theirs.join("\n")
    );
}

#[test]
fn itemize_matches_rsync_for_a_new_target() {
    each_config("itemize_matches_rsync_for_a_new_target", |cfg, t| {
        if !require_rsync() {
            return;
        }
        crate::basic::mixed_tree(&t.src());
        let (ours, theirs) = both(cfg, t);
        assert_same_lines(&ours, &theirs);
    });
}

#[test]
fn itemize_matches_rsync_for_updates_and_deletions() {
    each_config(
        "itemize_matches_rsync_for_updates_and_deletions",
        |cfg, t| {
            if !require_rsync() {
                return;
            }
            let (old, new) = (1_600_000_000, 1_700_000_000);
            tree!(t.src(), {
                "new-file" => file("n"),
                "new-dir/f" => file("f"),
                "new-dir/l" => symlink("f"),
                "new-link" => symlink("new-file"),
                "new-pipe" => fifo(),
                "changed" => file("new content") mtime(new, 0),
                "same" => file("same") mtime(old, 0),
                "perms" => file("p") mode(0o600) mtime(old, 0),
                "touched" => file("t") mtime(new, 0),
                "link-time" => symlink("same") mtime(new, 0),
                "sub/changed" => file("sub v2") mtime(new, 0),
                "sub/same" => file("s") mtime(old, 0),
                "sub" => dir() mode(0o750) mtime(old, 0),
            });
            tree!(t.dst(), {
                "changed" => file("old") mtime(old, 0),
                "same" => file("same") mtime(old, 0),
                "perms" => file("p") mode(0o644) mtime(old, 0),
                "touched" => file("t") mtime(old, 0),
                "link-time" => symlink("same") mtime(old, 0),
                "sub/changed" => file("sub v1") mtime(old, 0),
                "sub/same" => file("s") mtime(old, 0),
                "sub/extraneous" => file("e"),
                "sub" => dir() mode(0o755) mtime(old, 0),
                "extraneous" => file("e"),
                "extraneous-link" => symlink("x"),
                "empty-extraneous-dir" => dir(),
            });
            let (ours, theirs) = both(cfg, t);
            assert_same_lines(&ours, &theirs);
        },
    );
}

/// A symlink whose target (and mtime) changed is recreated: `cLc.t......`.
#[test]
fn itemize_matches_rsync_for_a_changed_symlink() {
    each_config("itemize_matches_rsync_for_a_changed_symlink", |cfg, t| {
        if !require_rsync() {
            return;
        }
        tree!(t.src(), { "relinked" => symlink("new-target") mtime(1_700_000_000, 0) });
        tree!(t.dst(), { "relinked" => symlink("old-target") mtime(1_600_000_000, 0) });
        let (ours, theirs) = both(cfg, t);
        assert_same_lines(&ours, &theirs);
    });
}

/// An entry replaced by one of another type: rsync itemizes the new entry
/// and, for a replaced directory, the deletion of its contents, but not
/// the removal of the replaced entry itself (the new entry's line says it).
#[test]
fn itemize_matches_rsync_for_type_changes() {
    each_config("itemize_matches_rsync_for_type_changes", |cfg, t| {
        if !require_rsync() {
            return;
        }
        tree!(t.src(), {
            "was-file" => dir(),
            "was-file/x" => file("x"),
            "was-empty-dir" => file("now a file"),
            "was-link" => file("now a file"),
            "was-pipe" => symlink("somewhere"),
            "was-full-dir" => file("a file now"),
        });
        tree!(t.dst(), {
            "was-full-dir/inner/x" => file("x"),
            "was-file" => file("a file"),
            "was-empty-dir" => dir(),
            "was-link" => symlink("somewhere"),
            "was-pipe" => fifo(),
        });
        let (ours, theirs) = both(cfg, t);
        assert_same_lines(&ours, &theirs);
    });
}

/// rsync itemizes every entry it deletes, the contents of a deleted
/// directory included; so must psync.
#[test]
fn itemize_lists_the_contents_of_deleted_dirs_like_rsync() {
    each_config(
        "itemize_lists_the_contents_of_deleted_dirs_like_rsync",
        |cfg, t| {
            if !require_rsync() {
                return;
            }
            tree!(t.src(), { "keep" => file("k") mtime(1_600_000_000, 0) });
            tree!(t.dst(), {
                "keep" => file("k") mtime(1_600_000_000, 0),
                "gone/sub/f" => file("f"),
                "gone/g" => file("g"),
                "gone/l" => symlink("g"),
            });
            let (ours, theirs) = both(cfg, t);
            assert_same_lines(&ours, &theirs);
        },
    );
}

/// Names rsync prints specially (rsync 3.2.7, `filtered_fwrite`): bytes
/// below 0x20 except tab, and invalid UTF-8, as `\#ooo`; a backslash that
/// starts `\#` followed by three digits as `\#134`, so such a name cannot
/// be mistaken for an escape; tab and DEL as they are.
#[test]
fn itemize_escapes_names_like_rsync() {
    each_config("itemize_escapes_names_like_rsync", |cfg, t| {
        if !require_rsync() {
            return;
        }
        tree!(t.src(), {
            "new\nline" => file("1"),
            b"bad-\xff-\xc3" => file("2"),
            "unicode-ñ-日本-🦀" => file("3"),
            "back\\slash" => file("4"),
            "cr\rhere" => file("7"),
            "esc\x1bhere" => file("8"),
            "link" => symlink("target\nwith newline"),
        });
        let (ours, theirs) = both(cfg, t);
        assert_same_lines(&ours, &theirs);
    });
}

/// The names psync escapes differently from rsync (see
/// `itemize_escapes_names_like_rsync` for the rules).
#[test]
fn itemize_escapes_tab_del_and_backslash_hash_like_rsync() {
    each_config(
        "itemize_escapes_tab_del_and_backslash_hash_like_rsync",
        |cfg, t| {
            if !require_rsync() {
                return;
            }
            tree!(t.src(), {
                "\\#012-lookalike" => file("5"),
                "tab\there" => file("6"),
                "del\x7fhere" => file("9"),
            });
            let (ours, theirs) = both(cfg, t);
            assert_same_lines(&ours, &theirs);
        },
    );
}

/// Hard links as `rsync -aiH` shows them: the first path of a group is
/// transferred (`>f+++++++++`), the others are `hf+++++++++ b => a`.
/// Which path of a group comes first is the walk's order, so only the
/// codes and names are compared, not which path is the "first".
#[test]
fn itemize_matches_rsync_for_hard_links() {
    each_config("itemize_matches_rsync_for_hard_links", |cfg, t| {
        if !require_rsync() {
            return;
        }
        tree!(t.src(), { "a" => file("data"), "b" => hardlink("a"), "solo" => file("s") });
        let (ours, theirs) = both_with(cfg, t, &["-aiH", "--delete"]);
        // Which path of a group is "first" (transferred) is arbitrary.
        let norm = |lines: &[String]| -> Vec<String> {
            let mut v: Vec<String> = lines
                .iter()
                .map(|l| {
                    let l = l.split(" => ").next().unwrap_or(l);
                    l.strip_prefix("hf+++++++++ ")
                        .map_or_else(|| l.to_string(), |n| format!(">f+++++++++ {n}"))
                })
                .collect();
            v.sort();
            v
        };
        assert_same_lines(&norm(&ours), &norm(&theirs));
        // rsync's `%L` for a hard link is ` => FIRST-PATH`; psync's lines
        // must say where the link points too.
        let linked: Vec<&String> = ours.iter().filter(|l| l.starts_with('h')).collect();
        assert_eq!(linked.len(), 1, "{ours:#?}");
        assert!(
            linked[0] == "hf+++++++++ b => a" || linked[0] == "hf+++++++++ a => b",
            "hard link line without rsync's ` => target`: {:?} (rsync: {theirs:?})",
            linked[0]
        );
    });
}

/// A target synced from the base tree, then one change on the source or
/// the target: what `psync -n -i` prints, what the real run's `-i` then
/// prints, and what `rsync -aHAX --delete -i` prints for a copy of the
/// same target must be the same lines (as multisets: a line printed twice
/// is a difference; the root's `./` line included). Which name of a group
/// rsync calls the first depends on its order: the leader after `=>` is
/// left out, and of a new group's names only how many are copied and
/// linked is compared with rsync (the dry run and the real run must agree
/// on the names too). Lines rsync does not print are allowed only where
/// a case lists them (`psync_only`: differences by design). rsync's real
/// run is the oracle, not its dry run: `rsync -n` itemizes a mode change
/// of a hard-linked file for every name (`hf...p..... h2`), as it did
/// not change the inode it shares with the first.
#[test]
fn dry_run_real_run_and_rsync_itemize_the_same_lines() {
    if !require_rsync() {
        return;
    }
    let failed = std::cell::RefCell::new(Vec::new());
    for case in CASES {
        each_config(&format!("itemize_equal_{}", case.name), |cfg, t| {
            if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                three_ways(cfg, t, case);
            })) {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                failed
                    .borrow_mut()
                    .push(format!("[{} {cfg}] {msg}", case.name));
            }
        });
    }
    let failed = failed.into_inner();
    assert!(
        failed.is_empty(),
        "{} of {} cases differ:\n{}",
        failed.len(),
        CASES.len() * crate::util::run::CONFIGS.len(),
        failed.join("\n\n")
    );
}

/// One change of [`dry_run_real_run_and_rsync_itemize_the_same_lines`].
struct Case {
    name: &'static str,
    /// Run with `-c`.
    checksum: bool,
    /// Lines psync prints and rsync does not, by design (README, "Coming
    /// from rsync").
    psync_only: &'static [&'static str],
    /// Changes the synced tree (`t.src()` or `t.dst()`).
    change: fn(&TestDir),
}

const OLD: i64 = 1_600_000_000;
const NEW: i64 = 1_700_000_000;

/// The tree every case starts from: whole-second mtimes (rsync 3.2.7
/// ignores sub-second differences), a hard-link group, xattrs.
fn base(src: &std::path::Path) {
    tree!(src, {
        "f" => file("data") mtime(OLD, 0),
        "g" => file("other") xattr("user.a", "1") mtime(OLD, 0),
        "t" => file("type") mtime(OLD, 0),
        "l" => symlink("f") mtime(OLD, 0),
        "h1" => file("linked") mtime(OLD, 0),
        "h2" => hardlink("h1"),
        "sub/x" => file("x") mtime(OLD, 0),
        "sub/deep/y" => file("y") mtime(OLD, 0),
        "sub/deep" => dir() mtime(OLD, 0),
        "sub" => dir() mtime(OLD, 0),
        "" => dir() mtime(OLD, 0),
    });
}

const CASES: &[Case] = &[
    Case {
        name: "mtime",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "f" => keep() mtime(NEW, 0) }),
    },
    Case {
        name: "mode",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "f" => keep() mode(0o600) }),
    },
    Case {
        name: "mode_in_target",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.dst(), { "sub/x" => keep() mode(0o600) }),
    },
    Case {
        name: "owner",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "f" => keep() owner(1234, 1234) }),
    },
    Case {
        name: "xattr_of_file",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "f" => keep() xattr("user.k", "v") }),
    },
    Case {
        name: "xattr_of_dir",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "sub" => keep() xattr("user.k", "v") }),
    },
    Case {
        name: "xattrs_in_target",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.dst(), { "f" => keep() xattr("user.planted", "p"), "sub" => keep() xattr("user.p", "p") }),
    },
    Case {
        name: "acl_of_file",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "sub/x" => keep() acl("u:1234:r--") }),
    },
    Case {
        name: "new_link_and_mode_of_a_group",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "h0" => hardlink("h1"), "h1" => keep() mode(0o600) }),
    },
    Case {
        name: "acl_of_dir",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "sub" => keep() acl("u:1234:r-x") }),
    },
    Case {
        name: "same_size_content_with_c",
        checksum: true,
        psync_only: &[],
        change: |t| tree!(t.src(), { "f" => file("DATA") mtime(OLD, 0) }),
    },
    Case {
        name: "other_size_with_c",
        checksum: true,
        psync_only: &[],
        change: |t| tree!(t.src(), { "f" => file("more data") mtime(OLD, 0) }),
    },
    Case {
        name: "content_and_other_xattrs",
        checksum: false,
        psync_only: &[],
        change: |t| {
            let g = t.src().join("g");
            std::fs::write(&g, "changed").unwrap();
            rustix::fs::removexattr(&g, "user.a").unwrap();
            tree!(t.src(), { "g" => keep() xattr("user.b", "2") mtime(NEW, 0) });
        },
    },
    Case {
        name: "new_file",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "n" => file("new") mtime(OLD, 0) }),
    },
    Case {
        name: "deleted_file_and_dir",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "f" => absent(), "sub/deep" => absent() }),
    },
    Case {
        name: "extraneous_in_target",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.dst(), { "sub/extra/e" => file("e") }),
    },
    Case {
        name: "type_change",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "t" => dir() mtime(OLD, 0), "t/inner" => file("i") mtime(OLD, 0) }),
    },
    Case {
        name: "new_link_of_a_group",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "h3" => hardlink("h1") }),
    },
    Case {
        name: "new_link_of_a_group_elsewhere",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "sub/h4" => hardlink("h1"), "sub" => keep() mtime(OLD, 0) }),
    },
    Case {
        name: "new_link_of_a_group_in_a_new_dir",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "new/h5" => hardlink("h2"), "new" => dir() mtime(OLD, 0) }),
    },
    // Which name of a group goes first is not the threads' choice: the
    // first in path order, as rsync and the dry run take it.
    Case {
        name: "changed_file_gets_a_link_elsewhere",
        checksum: false,
        psync_only: &[],
        change: |t| {
            tree!(t.src(), {
                "f" => file("DATA") mtime(NEW, 0),
                "sub/f2" => hardlink("f"),
                "sub" => keep() mtime(OLD, 0),
            })
        },
    },
    Case {
        name: "group_split_across_directories",
        checksum: false,
        psync_only: &[],
        change: |t| {
            tree!(t.src(), { "sub/h3" => hardlink("h1"), "sub" => keep() mtime(OLD, 0) });
            // Another time: rsync prints `hf` and spaces for a name
            // linked with nothing else to say.
            tree!(t.dst(), { "sub/h3" => file("linked") mtime(NEW, 0), "sub" => keep() mtime(OLD, 0) });
        },
    },
    Case {
        name: "new_group",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "n1" => file("n") mtime(OLD, 0), "n2" => hardlink("n1") }),
    },
    // The links of `h1` differ (1 in the source, 2 in the target): it is
    // copied anew, split off an inode that other names may share, where
    // rsync sees that the other name is deleted.
    Case {
        name: "name_of_a_group_deleted",
        checksum: false,
        psync_only: &[">f......... h1"],
        change: |t| tree!(t.src(), { "h2" => absent() }),
    },
    Case {
        name: "attrs_of_a_linked_file",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "h1" => keep() mode(0o640) }),
    },
    Case {
        name: "symlink_target",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "l" => symlink("g") mtime(OLD, 0) }),
    },
    Case {
        name: "root_mtime",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "" => keep() mtime(NEW, 0) }),
    },
    Case {
        name: "root_mode",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "" => keep() mode(0o700) }),
    },
    Case {
        name: "nested_new_dir",
        checksum: false,
        psync_only: &[],
        change: |t| tree!(t.src(), { "sub/new/a/b" => file("b") mtime(OLD, 0) }),
    },
];

/// Runs one case in `t`: see [`dry_run_real_run_and_rsync_itemize_the_same_lines`].
fn three_ways(cfg: Config, t: &TestDir, case: &Case) {
    base(&t.src());
    cfg.sync_with(&t.src(), &t.dst(), &Opts::delete())
        .assert_ok();
    assert_synced!(t.src(), t.dst());
    (case.change)(t);
    let rsync_dst = t.join("rsync-dst");
    copy_tree(&t.dst(), &rsync_dst);
    let opts = Opts {
        checksum: case.checksum,
        ..Opts::delete()
    };
    let dry = cfg.sync_with(
        &t.src(),
        &t.dst(),
        &Opts {
            dry_run: true,
            ..opts.clone()
        },
    );
    dry.assert_ok();
    let real = cfg.sync_with(&t.src(), &t.dst(), &opts);
    real.assert_ok();
    let mut args = vec!["-aHAX", "--numeric-ids", "--delete", "-i"];
    if case.checksum {
        args.push("-c");
    }
    let theirs = normalized(&rsync_itemize(&t.src(), &rsync_dst, &args));
    let (dry, real) = (normalized(&dry.itemized), normalized(&real.itemized));
    // Which name of a new group is copied, the others linked to it, is
    // the order's choice too: compared as how many of each.
    let unled = |lines: &[String]| -> Vec<String> {
        let mut v: Vec<String> = lines
            .iter()
            .map(|l| match l.strip_prefix("hf+++++++++ ") {
                Some(n) => format!("?f+++++++++ {}", n.trim_end_matches(" => …")),
                None => l.replacen(">f+++++++++ ", "?f+++++++++ ", 1),
            })
            .collect();
        v.sort();
        v
    };
    let count = |lines: &[String], p: &str| lines.iter().filter(|l| l.starts_with(p)).count();
    let mut expected = theirs.clone();
    expected.extend(case.psync_only.iter().map(|l| (*l).to_string()));
    expected.sort();
    assert!(
        dry == real
            && unled(&real) == unled(&expected)
            && count(&real, "hf+++++++++ ") == count(&expected, "hf+++++++++ "),
        "-n -i, -i and rsync -i differ\n--- psync -n -i ---\n{}\n--- psync -i ---\n{}\n--- rsync -i (and psync_only) ---\n{}",
        dry.join("\n"),
        real.join("\n"),
        expected.join("\n")
    );
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
}

/// Lines sorted, the leader after `=>` left out.
fn normalized(lines: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .map(|l| match l.split_once(" => ") {
            Some((head, _)) => format!("{head} => …"),
            None => l.clone(),
        })
        .collect();
    v.sort();
    v
}
