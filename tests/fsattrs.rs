//! Inode flags and project ids (ADR 018) on real ext4 and XFS loop
//! mounts and tmpfs, with `lsattr -p`, `chattr` and `xfs_io` as the
//! oracle: copied for files and directories, compared on re-runs,
//! immutable files replaced and append-only directories written in,
//! `--no-file-flags`/`--no-project-ids`, and the warnings of targets that
//! cannot hold them.

use crate::util::mounts::{self, Fs, Scratch};
use crate::util::run::{Config, Front, Opts, sync_cli, sync_lib_cfg};
use crate::util::user::{assert_exit, test_user};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Lifts immutable and append-only everywhere under its trees when
/// dropped (before the scratch trees are removed, which those flags
/// would prevent), also when the test panics.
struct Unlock(Vec<PathBuf>);

impl Drop for Unlock {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.exists() {
                let _ = Command::new("chattr")
                    .args(["-R", "-i", "-a"])
                    .arg(p)
                    .output();
            }
        }
    }
}

/// A scratch pair on `from` -> `to`, or `None` (printed) where loop
/// mounts cannot be made; under CI that is a failure.
fn scratch(test: &str, from: Fs, to: Fs) -> Option<Scratch> {
    let made = mounts::shared().and_then(|m| m.scratch(test, from, to));
    match made {
        Ok(s) => Some(s),
        Err(why) => {
            assert!(!mounts::must_have_mounts(), "CI=true but {test}: {why}");
            eprintln!("SKIPPED {test} {from} -> {to}: {why}");
            None
        }
    }
}

#[track_caller]
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chattr(p: &Path, flags: &str) {
    run(Command::new("chattr").arg(flags).arg(p));
}

fn chproj(p: &Path, id: u32) {
    run(Command::new("xfs_io")
        .arg("-c")
        .arg(format!("chproj {id}"))
        .arg(p));
}

/// The flags psync syncs (`lsattr` letters i a S A d P, in that order)
/// and the project id of `p`, as `lsattr -d -p` shows them.
fn attrs(p: &Path) -> (String, u32) {
    let out = run(Command::new("lsattr").args(["-d", "-p"]).arg(p));
    let mut words = out.split_whitespace();
    let projid = words.next().and_then(|w| w.parse().ok()).expect("projid");
    let letters = words.next().expect("flags");
    let managed = "iaSAdP".chars().filter(|c| letters.contains(*c)).collect();
    (managed, projid)
}

/// `lsproj` of XFS's own tool agrees with `lsattr -p`.
fn lsproj(p: &Path) -> u32 {
    let out = run(Command::new("xfs_io").args(["-r", "-c", "lsproj"]).arg(p));
    out.trim()
        .strip_prefix("projid = ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("xfs_io lsproj {}: {out:?}", p.display()))
}

/// Every path below `src`, with flags and project id on both sides equal
/// (the project id only where `projids`).
#[track_caller]
fn assert_same_attrs(src: &Path, dst: &Path, rels: &[&str], projids: bool) {
    for rel in rels {
        let (s, d) = (attrs(&src.join(rel)), attrs(&dst.join(rel)));
        assert_eq!(s.0, d.0, "flags of {rel}");
        if projids {
            assert_eq!(s.1, d.1, "project id of {rel}");
        }
    }
}

fn write(p: &Path, data: &str) {
    std::fs::write(p, data).unwrap();
}

fn sync(cfg: Config, src: &Path, dst: &Path, delete: bool) -> crate::util::run::Outcome {
    let opts = Opts {
        delete,
        ..Opts::default()
    };
    match cfg.front {
        Front::Cli => sync_cli(src, dst, cfg.threads, &opts),
        _ => sync_lib_cfg(src, dst, cfg, &opts),
    }
}

const CONFIGS: [Config; 2] = [
    Config {
        front: Front::Cli,
        threads: 4,
    },
    Config {
        front: Front::Scatter,
        threads: 4,
    },
];

/// Copied (files and directories), compared on re-runs (a change on the
/// source, a flag planted on the target), an immutable file whose source
/// changed replaced, an append-only directory that gained and lost
/// entries updated; a re-run with nothing changed does nothing.
#[test]
fn flags_and_project_ids_are_copied_compared_and_updated() {
    let test = "flags_and_project_ids_are_copied_compared_and_updated";
    let only = std::env::var("PSYNC_TEST_FRONTS").unwrap_or_default();
    for (fs, projids) in [(Fs::Xfs, true), (Fs::Ext4, false)] {
        for cfg in CONFIGS.iter().filter(|c| c.selected(&only)) {
            eprintln!("=== {test} {fs} [{cfg}]");
            let Some(s) = scratch(test, fs, fs) else {
                continue;
            };
            let (src, dst) = (s.src(), s.dst());
            let _unlock = Unlock(vec![src.clone(), dst.clone()]);
            copied_compared_updated(*cfg, &src, &dst, projids);
        }
    }
}

fn copied_compared_updated(cfg: Config, src: &Path, dst: &Path, projids: bool) {
    for d in ["ad", "proj", "plain"] {
        std::fs::create_dir(src.join(d)).unwrap();
    }
    for f in [
        "plain/f",
        "nodump",
        "fast",
        "imm",
        "ad/one",
        "ad/two",
        "proj/f",
        "proj/other",
    ] {
        write(&src.join(f), f);
    }
    chattr(&src.join("nodump"), "+d");
    chattr(&src.join("fast"), "+AS");
    chattr(&src.join("imm"), "+i");
    chattr(&src.join("ad"), "+a");
    if projids {
        run(Command::new("xfs_io")
            .args(["-c", "chproj -R 42"])
            .arg(src.join("proj")));
        chattr(&src.join("proj"), "+P");
        chproj(&src.join("proj/other"), 7);
    }
    let rels = [
        "plain",
        "plain/f",
        "nodump",
        "fast",
        "imm",
        "ad",
        "ad/one",
        "ad/two",
        "proj",
        "proj/f",
        "proj/other",
    ];
    let first = sync(cfg, src, dst, true);
    first.assert_ok();
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    assert_same_attrs(src, dst, &rels, projids);
    assert_eq!(attrs(&dst.join("imm")).0, "i");
    assert_eq!(attrs(&dst.join("ad")).0, "a");
    if projids {
        assert_eq!(lsproj(&dst.join("proj")), 42);
        assert_eq!(lsproj(&dst.join("proj/f")), 42);
        assert_eq!(lsproj(&dst.join("proj/other")), 7);
        assert_eq!(attrs(&dst.join("proj")).0, "P");
    }
    // Nothing changed: nothing done.
    let again = sync(cfg, src, dst, true);
    again.assert_ok();
    assert!(again.itemized.is_empty(), "{:?}", again.itemized);

    // Changes on the source.
    chattr(&src.join("plain/f"), "+d");
    chattr(&src.join("fast"), "-S");
    chattr(&src.join("imm"), "-i");
    write(&src.join("imm"), "new content of imm");
    chattr(&src.join("imm"), "+i");
    chattr(&src.join("ad"), "-a");
    write(&src.join("ad/three"), "three");
    std::fs::remove_file(src.join("ad/one")).unwrap();
    chattr(&src.join("ad"), "+a");
    if projids {
        chproj(&src.join("proj/f"), 43);
    }
    // And a flag planted on the target that the source does not have.
    chattr(&dst.join("plain"), "+i");
    let third = sync(cfg, src, dst, true);
    third.assert_ok();
    let items = third.sorted_items();
    for want in [
        ".f........x plain/f",
        ".f........x fast",
        ">f+++++++++ ad/three",
        "*deleting   ad/one",
        ".d........x plain/",
    ] {
        assert!(items.iter().any(|i| i == want), "{want:?} not in {items:?}");
    }
    assert!(
        items
            .iter()
            .any(|i| i.starts_with(">f.s") && i.ends_with(" imm")),
        "{items:?}"
    );
    if projids {
        assert!(items.iter().any(|i| i == ".f........x proj/f"), "{items:?}");
    }
    assert_eq!(
        std::fs::read_to_string(dst.join("imm")).unwrap(),
        "new content of imm"
    );
    assert!(!dst.join("ad/one").exists());
    assert_eq!(
        std::fs::read_to_string(dst.join("ad/three")).unwrap(),
        "three"
    );
    let rels = [
        "plain",
        "plain/f",
        "nodump",
        "fast",
        "imm",
        "ad",
        "ad/two",
        "ad/three",
        "proj",
        "proj/f",
        "proj/other",
    ];
    assert_same_attrs(src, dst, &rels, projids);
    assert_eq!(attrs(&dst.join("imm")).0, "i", "set again after the copy");
    assert_eq!(attrs(&dst.join("ad")).0, "a", "set again at its finish");
    assert_eq!(attrs(&dst.join("plain")).0, "", "the planted flag lifted");
    if projids {
        assert_eq!(lsproj(&dst.join("proj/f")), 43);
    }
    // Flags a crash left lifted (between lifting and setting again, or
    // between a copy's rename and its immutable flag) and a file whose
    // type changed into a symlink over an immutable target: set again,
    // replaced.
    chattr(&dst.join("imm"), "-i");
    chattr(&dst.join("ad"), "-a");
    std::fs::remove_file(src.join("nodump")).unwrap();
    std::os::unix::fs::symlink("imm", src.join("nodump")).unwrap();
    chattr(&dst.join("nodump"), "+i");
    let fixed = sync(cfg, src, dst, true);
    fixed.assert_ok();
    let items = fixed.sorted_items();
    for want in [
        ".f........x imm",
        ".d........x ad/",
        "cL+++++++++ nodump -> imm",
    ] {
        assert!(items.iter().any(|i| i == want), "{want:?} not in {items:?}");
    }
    assert_eq!(attrs(&dst.join("imm")).0, "i");
    assert_eq!(attrs(&dst.join("ad")).0, "a");
    assert!(dst.join("nodump").symlink_metadata().unwrap().is_symlink());
    let last = sync(cfg, src, dst, true);
    last.assert_ok();
    assert!(last.itemized.is_empty(), "{:?}", last.itemized);
}

/// `--no-file-flags` and `--no-project-ids` leave the target's alone.
#[test]
fn no_file_flags_and_no_project_ids_leave_them() {
    let test = "no_file_flags_and_no_project_ids_leave_them";
    let Some(s) = scratch(test, Fs::Xfs, Fs::Xfs) else {
        return;
    };
    let (src, dst) = (s.src(), s.dst());
    let _unlock = Unlock(vec![src.clone(), dst.clone()]);
    write(&src.join("f"), "f");
    std::fs::create_dir(src.join("d")).unwrap();
    chproj(&src.join("f"), 5);
    chattr(&src.join("f"), "+di");
    chattr(&src.join("d"), "+A");
    let off = ["--no-file-flags", "--no-project-ids"];
    let out = crate::util::run::run_cli(&off, &src, &dst);
    assert_exit(&out, 0, "psync --no-file-flags --no-project-ids");
    assert_eq!(attrs(&dst.join("f")), (String::new(), 0));
    assert_eq!(attrs(&dst.join("d")), (String::new(), 0));
    // One of each, and each alone.
    std::fs::remove_dir_all(&dst).unwrap();
    let out = crate::util::run::run_cli(&off[..1], &src, &dst);
    assert_exit(&out, 0, "psync --no-file-flags");
    assert_eq!(attrs(&dst.join("f")), (String::new(), 5));
    chattr(&dst.join("f"), "+d");
    let out = crate::util::run::run_cli(&off[1..], &src, &dst);
    assert_exit(&out, 0, "psync --no-project-ids");
    // Compared as the listing shows them (the immutable flag, new on
    // the source's side of the comparison) and set; the project id left.
    assert_eq!(attrs(&dst.join("f")), ("id".to_string(), 5));
    chattr(&dst.join("f"), "-i");
    std::fs::remove_dir_all(&dst).unwrap();
    let out = crate::util::run::run_cli(&off[1..], &src, &dst);
    assert_exit(&out, 0, "psync --no-project-ids, fresh");
    assert_eq!(attrs(&dst.join("f")), ("id".to_string(), 0));
    assert_eq!(attrs(&dst.join("d")), ("A".to_string(), 0));
}

/// A target that cannot hold project ids (tmpfs, btrfs; ext4 without
/// the `project` feature): one warning for the run, naming the first file,
/// the rest of the sync (its other flags too) done.
#[test]
fn a_target_without_project_ids_warns_once() {
    let test = "a_target_without_project_ids_warns_once";
    for to in [Fs::Tmpfs, Fs::Ext4, Fs::Btrfs] {
        let Some(s) = scratch(test, Fs::Xfs, to) else {
            continue;
        };
        let (src, dst) = (s.src(), s.dst());
        let _unlock = Unlock(vec![src.clone(), dst.clone()]);
        for i in 0..5 {
            let f = src.join(format!("f{i}"));
            write(&f, "x");
            chproj(&f, 100 + i);
        }
        chattr(&src.join("f0"), "+d");
        let cfg = Config {
            front: Front::Cli,
            threads: 2,
        };
        let out = sync(cfg, &src, &dst, false);
        assert_eq!(out.exit, 0, "{to}: {out:#?}");
        assert!(out.errors.is_empty(), "{to}: {:?}", out.errors);
        let about: Vec<_> = out
            .warnings
            .iter()
            .filter(|w| w.contains("project id"))
            .collect();
        assert_eq!(about.len(), 1, "{to}: one warning: {:?}", out.warnings);
        assert!(about[0].contains(&dst.display().to_string()), "{about:?}");
        for i in 0..5 {
            assert_eq!(std::fs::read(dst.join(format!("f{i}"))).unwrap(), b"x");
        }
        assert_eq!(
            attrs(&dst.join("f0")).0,
            "d",
            "{to}: the other flags still copied"
        );
    }
}

/// Without CAP_LINUX_IMMUTABLE: the immutable flag cannot be set; one
/// warning, everything else synced.
#[test]
fn an_unprivileged_run_warns_that_immutable_cannot_be_set() {
    let test = "an_unprivileged_run_warns_that_immutable_cannot_be_set";
    let Some(user) = test_user(test) else {
        return;
    };
    let Some(s) = scratch(test, Fs::Ext4, Fs::Ext4) else {
        return;
    };
    let (src, dst) = (s.src(), s.dst());
    let _unlock = Unlock(vec![src.clone(), dst.clone()]);
    for f in ["a", "b", "c"] {
        write(&src.join(f), f);
    }
    user.own(&src);
    chattr(&src.join("a"), "+i");
    chattr(&src.join("b"), "+i");
    chattr(&src.join("c"), "+d");
    std::fs::create_dir(&dst).unwrap();
    user.own(&dst);
    let out = user.psync(&["--json"], &src, &dst);
    assert_exit(&out, 0, "psync as a user");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let warnings: Vec<_> = stdout
        .lines()
        .filter(|l| l.contains("\"warning\"") && l.contains("file flags"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stdout}");
    assert!(warnings[0].contains("'i'"), "{}", warnings[0]);
    assert_eq!(attrs(&dst.join("a")).0, "");
    assert_eq!(attrs(&dst.join("c")).0, "d");
    for f in ["a", "b", "c"] {
        assert_eq!(std::fs::read_to_string(dst.join(f)).unwrap(), f);
    }
}

/// The inode and link count of `p`.
fn inode(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.ino(), m.nlink())
}

/// A hard-link group of three names in two directories, immutable on the
/// source, under an append-only root: copied as one inode with `i` set
/// (at the end of the last phase, once all its names are linked) and the
/// root `a`; updated with `i` set again when the source's data changed;
/// a name gained on a re-run linked to it; a new file at the root. Every
/// run reports nothing; a re-run with nothing changed does nothing.
#[test]
fn hard_link_groups_and_the_root_keep_immutable_and_append_only() {
    let test = "hard_link_groups_and_the_root_keep_immutable_and_append_only";
    let only = std::env::var("PSYNC_TEST_FRONTS").unwrap_or_default();
    for fs in [Fs::Xfs, Fs::Ext4] {
        for cfg in CONFIGS.iter().filter(|c| c.selected(&only)) {
            eprintln!("=== {test} {fs} [{cfg}]");
            let Some(s) = scratch(test, fs, fs) else {
                continue;
            };
            let (src, dst) = (s.src(), s.dst());
            let _unlock = Unlock(vec![src.clone(), dst.clone()]);
            groups_and_root(*cfg, &src, &dst);
        }
    }
}

#[track_caller]
fn assert_group(dst: &Path, names: &[&str], data: &str) {
    let first = inode(&dst.join(names[0]));
    assert_eq!(first.1, names.len() as u64, "links of {}", names[0]);
    for n in names {
        assert_eq!(inode(&dst.join(n)), first, "{n} is the group's inode");
        assert_eq!(std::fs::read_to_string(dst.join(n)).unwrap(), data, "{n}");
        assert_eq!(attrs(&dst.join(n)).0, "i", "flags of {n}");
    }
}

#[track_caller]
fn assert_quiet(what: &str, out: &crate::util::run::Outcome) {
    out.assert_ok();
    assert!(out.errors.is_empty(), "{what}: {:?}", out.errors);
    assert!(out.warnings.is_empty(), "{what}: {:?}", out.warnings);
}

fn groups_and_root(cfg: Config, src: &Path, dst: &Path) {
    for d in ["d1", "d2", "d3"] {
        std::fs::create_dir(src.join(d)).unwrap();
    }
    write(&src.join("d1/a"), "one");
    std::fs::hard_link(src.join("d1/a"), src.join("d1/b")).unwrap();
    std::fs::hard_link(src.join("d1/a"), src.join("d2/c")).unwrap();
    std::fs::hard_link(src.join("d1/a"), src.join("d3/e")).unwrap();
    write(&src.join("top"), "top");
    chattr(&src.join("d1/a"), "+i");
    chattr(src, "+a");
    // Names in an append-only and in an immutable directory: linked
    // after the directories' finish.
    chattr(&src.join("d2"), "+a");
    chattr(&src.join("d3"), "+i");
    let names = ["d1/a", "d1/b", "d2/c", "d3/e"];
    let dirs = |dst: &Path| {
        assert_eq!(attrs(dst).0, "a", "the root's flag");
        assert_eq!(attrs(&dst.join("d2")).0, "a");
        assert_eq!(attrs(&dst.join("d3")).0, "i");
    };

    assert_quiet("first run", &sync(cfg, src, dst, true));
    assert_group(dst, &names, "one");
    dirs(dst);
    assert_eq!(std::fs::read_to_string(dst.join("top")).unwrap(), "top");
    let again = sync(cfg, src, dst, true);
    assert_quiet("nothing changed", &again);
    assert!(again.itemized.is_empty(), "{:?}", again.itemized);

    // The source's data changed (its flag lifted and set again).
    chattr(&src.join("d1/a"), "-i");
    write(&src.join("d1/a"), "the second version");
    chattr(&src.join("d1/a"), "+i");
    let changed = sync(cfg, src, dst, true);
    assert_quiet("data changed", &changed);
    assert_group(dst, &names, "the second version");
    dirs(dst);

    // A name gained (and a new file at the append-only root).
    chattr(&src.join("d1/a"), "-i");
    std::fs::hard_link(src.join("d1/a"), src.join("d2/gained")).unwrap();
    chattr(&src.join("d1/a"), "+i");
    write(&src.join("top2"), "top2");
    let gained = sync(cfg, src, dst, true);
    assert_quiet("a name gained", &gained);
    let items = gained.sorted_items();
    assert!(
        items
            .iter()
            .any(|i| i.starts_with("hf") && i.contains(" d2/gained => ")),
        "{items:?}"
    );
    let group = ["d1/a", "d1/b", "d2/c", "d3/e", "d2/gained"];
    assert_group(dst, &group, "the second version");
    assert_eq!(std::fs::read_to_string(dst.join("top2")).unwrap(), "top2");
    dirs(dst);

    // The flag a crash left lifted (between a group's last link and its
    // seal): compared from the listing, set again.
    chattr(&dst.join("d1/a"), "-i");
    assert_quiet("lifted on the target", &sync(cfg, src, dst, true));
    assert_group(dst, &group, "the second version");
    // The source's flag lifted: lifted on the target.
    chattr(&src.join("d1/a"), "-i");
    assert_quiet("lifted on the source", &sync(cfg, src, dst, true));
    for n in group {
        assert_eq!(attrs(&dst.join(n)).0, "", "{n}");
    }
    assert_eq!(inode(&dst.join("d1/a")).1, 5);
    chattr(&src.join("d1/a"), "+i");
    assert_quiet("set on the source", &sync(cfg, src, dst, true));
    assert_group(dst, &group, "the second version");

    // A name lost (removed by --delete): removed in the last phase, once
    // the group's other names are known, the flag set again.
    chattr(&src.join("d1/a"), "-i");
    std::fs::remove_file(src.join("d1/b")).unwrap();
    chattr(&src.join("d1/a"), "+i");
    let lost = sync(cfg, src, dst, true);
    assert_quiet("a name lost", &lost);
    assert!(
        lost.itemized.iter().any(|i| i == "*deleting   d1/b"),
        "{:?}",
        lost.itemized
    );
    assert!(!dst.join("d1/b").exists());
    assert_group(
        dst,
        &["d1/a", "d2/c", "d3/e", "d2/gained"],
        "the second version",
    );
    let last = sync(cfg, src, dst, true);
    assert_quiet("nothing changed at last", &last);
    assert!(last.itemized.is_empty(), "{:?}", last.itemized);
}

/// ADR 010: a group's inode that a name outside the tree shares (an
/// admin's immutable file linked into the tree, a link added outside) is
/// neither lifted nor made immutable. Its data changed on the source:
/// not lifted, an error, the outside name untouched. Its names right and
/// one gained: linked, but immutable not set (put back at once), a
/// warning.
#[test]
fn a_group_inode_shared_outside_the_tree_keeps_its_flags() {
    let test = "a_group_inode_shared_outside_the_tree_keeps_its_flags";
    let Some(s) = scratch(test, Fs::Xfs, Fs::Xfs) else {
        return;
    };
    let (src, dst) = (s.src(), s.dst());
    let outside = dst.parent().unwrap().join("outside");
    let _unlock = Unlock(vec![src.clone(), dst.clone(), outside.clone()]);
    let cfg = Config {
        front: Front::Cli,
        threads: 2,
    };
    std::fs::create_dir(src.join("d1")).unwrap();
    write(&src.join("d1/a"), "one");
    std::fs::hard_link(src.join("d1/a"), src.join("d1/b")).unwrap();
    chattr(&src.join("d1/a"), "+i");
    assert_quiet("first run", &sync(cfg, &src, &dst, false));
    assert_group(&dst, &["d1/a", "d1/b"], "one");

    // Shared with a name outside the tree, immutable: the source's data
    // changes.
    chattr(&dst.join("d1/a"), "-i");
    std::fs::hard_link(dst.join("d1/a"), &outside).unwrap();
    chattr(&dst.join("d1/a"), "+i");
    chattr(&src.join("d1/a"), "-i");
    write(&src.join("d1/a"), "two");
    chattr(&src.join("d1/a"), "+i");
    let refused = sync(cfg, &src, &dst, false);
    assert_ne!(refused.exit, 0, "{refused:#?}");
    assert!(
        refused.errors.iter().any(|e| e.contains("not lifted")),
        "{:?}",
        refused.errors
    );
    assert_eq!(attrs(&outside).0, "i", "the outside name's flag stays");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "one");
    assert_eq!(inode(&outside).1, 3);

    // Not immutable, its data right, a name gained: linked, not sealed.
    chattr(&outside, "-i");
    chattr(&src.join("d1/a"), "-i");
    write(&src.join("d1/a"), "one");
    std::fs::hard_link(src.join("d1/a"), src.join("d1/c")).unwrap();
    let mtime = std::fs::metadata(dst.join("d1/a"))
        .unwrap()
        .modified()
        .unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(src.join("d1/a"))
        .unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    chattr(&src.join("d1/a"), "+i");
    let left = sync(cfg, &src, &dst, false);
    left.assert_ok();
    assert!(
        left.warnings.iter().any(|w| w.contains("names outside")),
        "{:?}",
        left.warnings
    );
    assert_eq!(inode(&outside).1, 4, "d1/c linked to the shared inode");
    assert_eq!(inode(&dst.join("d1/c")).0, inode(&outside).0);
    assert_eq!(attrs(&outside).0, "", "not made immutable");
}

/// A user who can write in the target moves a directory of theirs that
/// holds an admin's immutable files (one of one name, one of two, and a
/// directory) into
/// the tree, at the path of a directory of the source: the source has
/// none of them, but the run (root, `--delete`) must not lift and delete
/// them, which the user could not do.
#[test]
fn an_immutable_file_a_user_moves_into_the_tree_stays() {
    let test = "an_immutable_file_a_user_moves_into_the_tree_stays";
    let Some(user) = test_user(test) else {
        return;
    };
    let Some(s) = scratch(test, Fs::Xfs, Fs::Xfs) else {
        return;
    };
    let (src, dst) = (s.src(), s.dst());
    let outside = dst.parent().unwrap().join("outside");
    let _unlock = Unlock(vec![src.clone(), dst.clone(), outside.clone()]);
    let cfg = Config {
        front: Front::Cli,
        threads: 2,
    };
    std::fs::create_dir_all(src.join("u/d/sub")).unwrap();
    write(&src.join("u/d/keep"), "keep");
    write(&src.join("u/d/sub/new"), "new");
    user.own(&src.join("u"));
    assert_quiet("first run", &sync(cfg, &src, &dst, false));
    assert!(user.owns(&dst.join("u")));

    // The user's own directory outside the tree, with the admin's files.
    std::fs::create_dir_all(outside.join("d")).unwrap();
    user.own(&outside);
    write(&outside.join("d/locked"), "the admin's");
    write(&outside.join("d/g1"), "the admin's, two names");
    std::fs::hard_link(outside.join("d/g1"), outside.join("d/g2")).unwrap();
    // And an admin's immutable directory, whose file is not.
    std::fs::create_dir(outside.join("d/sub")).unwrap();
    write(&outside.join("d/sub/x"), "in the admin's directory");
    for f in ["locked", "g1", "sub"] {
        chattr(&outside.join("d").join(f), "+i");
    }
    let mv = |from: &Path, to: &Path| {
        let out = user.command("mv").arg(from).arg(to).output().unwrap();
        assert!(out.status.success(), "mv as the user: {out:?}");
    };
    // In place of the tree's own `u/d`, which the source has: the run
    // walks it.
    mv(&dst.join("u/d"), &outside.join("old"));
    mv(&outside.join("d"), &dst.join("u/d"));
    let out = sync(cfg, &src, &dst, true);
    assert_ne!(out.exit, 0, "{out:#?}");
    assert!(
        out.errors.iter().any(|e| e.contains("not lifted")),
        "{:?}",
        out.errors
    );
    for f in ["locked", "g1", "g2"] {
        let p = dst.join("u/d").join(f);
        assert_eq!(attrs(&p).0, "i", "{f} keeps its flag");
    }
    assert_eq!(inode(&dst.join("u/d/g1")).1, 2);
    assert_eq!(attrs(&dst.join("u/d/sub")).0, "i");
    assert!(dst.join("u/d/sub/x").exists());
    assert!(!dst.join("u/d/sub/new").exists());
    // The user takes the directory back: the admin's files as they were.
    mv(&dst.join("u/d"), &outside.join("d"));
    assert_eq!(
        std::fs::read_to_string(outside.join("d/locked")).unwrap(),
        "the admin's"
    );
    assert_eq!(attrs(&outside.join("d/g2")).0, "i");
}

/// A hard-link group whose project id differs from that of its
/// project-inherit directories (the source's, `chproj` after the names
/// were made): the kernel refuses to link or rename it there (EXDEV),
/// also in the link area, which takes the target root's. Linked as one
/// inode with its own project id, every run; hard-linked symlinks and
/// specials too, with their directory's.
#[test]
fn a_hard_link_group_of_another_project_than_its_directories() {
    let test = "a_hard_link_group_of_another_project_than_its_directories";
    let only = std::env::var("PSYNC_TEST_FRONTS").unwrap_or_default();
    for cfg in CONFIGS.iter().filter(|c| c.selected(&only)) {
        eprintln!("=== {test} [{cfg}]");
        let Some(s) = scratch(test, Fs::Xfs, Fs::Xfs) else {
            return;
        };
        let (src, dst) = (s.src(), s.dst());
        let _unlock = Unlock(vec![src.clone(), dst.clone()]);
        for d in ["a", "b"] {
            std::fs::create_dir(src.join(d)).unwrap();
        }
        for d in [&src, &src.join("a"), &src.join("b")] {
            chproj(d, 42);
            chattr(d, "+P");
        }
        write(&src.join("a/h"), "one inode");
        std::fs::hard_link(src.join("a/h"), src.join("b/h")).unwrap();
        chproj(&src.join("a/h"), 5);
        assert_quiet("first run", &sync(*cfg, &src, &dst, false));
        assert_eq!(inode(&dst.join("a/h")), inode(&dst.join("b/h")));
        assert_eq!(inode(&dst.join("a/h")).1, 2);
        assert_same_attrs(&src, &dst, &["", "a", "b", "a/h", "b/h"], true);
        // A third name, in a new directory of another project.
        std::fs::create_dir(src.join("c")).unwrap();
        chproj(&src.join("c"), 9);
        chattr(&src.join("c"), "+P");
        chproj(&src.join("a/h"), 9);
        std::fs::hard_link(src.join("a/h"), src.join("c/h")).unwrap();
        chproj(&src.join("a/h"), 5);
        // A symlink and a fifo of two names there: made in the link area
        // (the root's project id), linked with their directory's.
        std::os::unix::fs::symlink("h", src.join("c/l")).unwrap();
        run(Command::new("mkfifo").arg(src.join("c/p")));
        for n in ["l", "p"] {
            std::fs::hard_link(src.join("c").join(n), src.join(format!("c/{n}2"))).unwrap();
        }
        assert_quiet("a name gained", &sync(*cfg, &src, &dst, false));
        for n in ["l", "p"] {
            let (one, two) = (dst.join("c").join(n), dst.join(format!("c/{n}2")));
            assert_eq!(inode(&one), inode(&two), "{n}");
            assert_eq!(inode(&one).1, 2, "{n}");
        }
        assert_eq!(inode(&dst.join("c/h")), inode(&dst.join("a/h")));
        assert_eq!(inode(&dst.join("a/h")).1, 3);
        assert_same_attrs(&src, &dst, &["c", "a/h", "c/h"], true);
    }
}

/// A hard-link group whose source gains an xattr, flags that `statx`
/// does not list (`S`, `A`) and `d`, and another project id, after a
/// first run: the re-run gives them to the group's inode (the walk's
/// action to compare them was recorded like a member, which needs
/// nothing, and dropped); the run after it does nothing.
#[test]
fn a_hard_link_group_gets_its_xattrs_flags_and_project_id_on_re_runs() {
    let test = "a_hard_link_group_gets_its_xattrs_flags_and_project_id_on_re_runs";
    let only = std::env::var("PSYNC_TEST_FRONTS").unwrap_or_default();
    for cfg in CONFIGS.iter().filter(|c| c.selected(&only)) {
        eprintln!("=== {test} [{cfg}]");
        let Some(s) = scratch(test, Fs::Xfs, Fs::Xfs) else {
            return;
        };
        let (src, dst) = (s.src(), s.dst());
        let _unlock = Unlock(vec![src.clone(), dst.clone()]);
        for d in ["a", "b"] {
            std::fs::create_dir(src.join(d)).unwrap();
        }
        write(&src.join("a/h"), "one inode");
        std::fs::hard_link(src.join("a/h"), src.join("b/h")).unwrap();
        assert_quiet("first run", &sync(*cfg, &src, &dst, false));
        assert_eq!(inode(&dst.join("a/h")), inode(&dst.join("b/h")));
        // The target's status older than the source's, whatever the clock.
        std::thread::sleep(std::time::Duration::from_millis(20));
        run(Command::new("setfattr")
            .args(["-n", "user.t", "-v", "1"])
            .arg(src.join("a/h")));
        chattr(&src.join("a/h"), "+SAd");
        chproj(&src.join("a/h"), 7);
        let out = sync(*cfg, &src, &dst, false);
        assert_quiet("re-run", &out);
        assert!(
            out.itemized
                .iter()
                .any(|l| l.starts_with(".f") && l.contains('x')),
            "{:?}",
            out.itemized
        );
        assert_same_attrs(&src, &dst, &["a/h", "b/h"], true);
        assert_eq!(attrs(&dst.join("a/h")).0, "SAd");
        let got = run(Command::new("getfattr")
            .args(["--only-values", "-n", "user.t"])
            .arg(dst.join("b/h")));
        assert_eq!(got, "1");
        assert_eq!(inode(&dst.join("a/h")), inode(&dst.join("b/h")));
        let again = sync(*cfg, &src, &dst, false);
        assert_quiet("nothing to do", &again);
        assert!(again.itemized.is_empty(), "{:?}", again.itemized);
    }
}

/// Files whose project id differs from that of their project-inherit
/// directory: a file copied in chunks, and an immutable file replaced on
/// a re-run (lifted, then renamed over): both renames are refused there
/// (EXDEV) unless the copy takes the directory's id for the move.
#[test]
fn files_of_another_project_than_their_directory_are_replaced() {
    let test = "files_of_another_project_than_their_directory_are_replaced";
    let Some(s) = scratch(test, Fs::Xfs, Fs::Xfs) else {
        return;
    };
    let (src, dst) = (s.src(), s.dst());
    let _unlock = Unlock(vec![src.clone(), dst.clone()]);
    chproj(&src, 42);
    chattr(&src, "+P");
    let fill = |seed: u64| {
        let data = crate::util::tree::random_bytes(seed, (3 << 20) + 7);
        std::fs::write(src.join("big"), data).unwrap();
    };
    fill(1);
    write(&src.join("small"), "one");
    for f in ["big", "small"] {
        chproj(&src.join(f), 5);
    }
    chattr(&src.join("small"), "+i");
    let args = ["--chunk-size", "1M"];
    for round in ["first run", "re-run"] {
        let out = crate::util::run::run_cli(&args, &src, &dst);
        assert_exit(&out, 0, round);
        for f in ["big", "small"] {
            let (s, d) = (src.join(f), dst.join(f));
            assert_eq!(
                std::fs::read(&s).unwrap(),
                std::fs::read(&d).unwrap(),
                "{round}: {f}"
            );
            assert_eq!(attrs(&s), attrs(&d), "{round}: {f}");
        }
        assert_eq!(attrs(&dst.join("small")), ("i".to_string(), 5));
        chattr(&src.join("small"), "-i");
        write(&src.join("small"), "two, longer");
        chattr(&src.join("small"), "+i");
        fill(2);
    }
}
