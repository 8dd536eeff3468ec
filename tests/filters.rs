//! Filters (`--exclude`, `--include`, `--filter`, `--delete-excluded`,
//! `--files-from`) against rsync as the oracle: for each rule list, `psync -n -i` and
//! `rsync -n -i -aHAX --delete` list the same paths, created or changed
//! alike or deleted alike, and after a real run the target equals the
//! one rsync makes from the same starting target. In every
//! configuration, so that in the scattered one the rules travel in the
//! run spec.

use crate::util::compare::differences;
use crate::util::tree::set_mtime;
use crate::util::{Opts, TestDir, copy_tree, each_config, require_rsync, rsync_itemize};
use std::path::Path;

/// The rule lists, as both tools take them.
const CASES: &[&[&str]] = &[
    &["--exclude=*.o"],
    &["--include=keep.o", "--exclude=*.o"],
    &["--exclude=*.o", "--include=keep.o"],
    &["--exclude=.snapshot/"],
    &["--exclude=.snapshot"],
    &["--exclude=/top"],
    &["--exclude=top"],
    &["--exclude=a/b"],
    &["--exclude=/a/b/"],
    &["--exclude=a/**/deep"],
    &["--exclude=**/deep/"],
    &["--exclude=d/***"],
    &["--exclude=[ab]*.txt", "--exclude=?.c"],
    &["--include=*/", "--include=*.c", "--exclude=*"],
    &["--filter=- *.o", "--filter=+ keep.o"],
    &["--filter=include keep.o", "--filter=exclude *.o"],
    &["--filter=- *.o", "--filter=!", "--filter=- top"],
    &["--exclude=*.o", "--delete-excluded"],
    &["--exclude=.snapshot/", "--delete-excluded"],
    &[
        "--include=*/",
        "--include=*.c",
        "--exclude=*",
        "--delete-excluded",
    ],
    &["--files-from=LIST"],
    &["-0", "--files-from=LIST0"],
    &["--files-from=LIST", "--exclude=*.o"],
    &[
        "--files-from=LIST",
        "--exclude=.snapshot/",
        "--delete-excluded",
    ],
];

/// The `--files-from` list: a directory below an implied one, a file, a
/// listed directory whose parent is the root, a trailing `/`, a deep
/// file, an absolute path (relative to SRC all the same), a comment.
const LIST: &str = "a/b\ntop\nc/\n# a comment\n/d/e/f\nkeep.o\nx.o\n";

fn fixture(t: &TestDir) {
    let (src, dst) = (t.src(), t.dst());
    tree!(src, {
        "top" => file("top, new"),
        "x.o" => file("object"),
        "keep.o" => file("kept object"),
        "a/top" => file("a's top"),
        "a/y.o" => file("object"),
        "a/keep.o" => file("kept object"),
        "a/m.c" => file("c"),
        "a/.snapshot/f" => file("snapshot"),
        "a/b/.snapshot/g" => file("deeper snapshot"),
        "a/b/deep" => file("a file called deep"),
        "a/b/c/deep/h" => file("in a directory called deep"),
        "c/z.txt" => file("zzz, longer now"),
        "c/at.txt" => file("at"),
        "c/bt.txt" => file("bt"),
        "d/e/f" => file("in d"),
        ".snapshot/root" => file("root snapshot"),
    });
    tree!(dst, {
        "top" => file("top, old"),
        "prot.o" => file("an extraneous object"),
        "old/n.o" => file("extraneous object in a gone directory"),
        "old/f" => file("extraneous"),
        "a/gone" => file("extraneous"),
        "a/.snapshot/stale" => file("extraneous in a snapshot"),
        "gonedir/keep.o" => file("protected?"),
        "gonedir/sub/x" => file("extraneous"),
        "gonedir/.snapshot/s" => file("extraneous snapshot"),
        "gonedir/top" => file("extraneous top"),
        "c/z.txt" => file("zzz"),
        "c/old.c" => file("extraneous c"),
        "d/e/stale" => file("extraneous in d"),
    });
    // Whole seconds: rsync ignores sub-second mtime differences.
    whole_seconds(&src, 1_700_000_000);
    whole_seconds(&dst, 1_600_000_000);
}

/// Sets the mtime of everything under `root`, and of `root`, to `sec`.
fn whole_seconds(root: &Path, sec: i64) {
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.symlink_metadata().unwrap().is_dir() {
            whole_seconds(&p, sec);
        } else {
            set_mtime(&p, sec, 0);
        }
    }
    set_mtime(root, sec, 0);
}

/// An itemized line as (deleted, path): the code's details may differ
/// where psync's `-i` is known to (see `itemize.rs`), the root's line
/// and rsync's messages aside. rsync itemizes as deleted a directory
/// below the one it deletes that it then cannot delete (it holds
/// protected entries: "cannot delete non-empty directory"); psync does
/// not itemize what it keeps, so such a line is left out.
fn entries(lines: &[String]) -> Vec<(bool, String)> {
    let kept: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("cannot delete non-empty directory: "))
        .map(|p| format!("{p}/"))
        .collect();
    let mut v: Vec<(bool, String)> = lines
        .iter()
        .filter(|l| l.len() > 12 && l.as_bytes()[11] == b' ')
        .map(|l| (l.starts_with("*deleting"), l[12..].trim_start().to_string()))
        .filter(|(deleted, p)| p != "./" && !(*deleted && kept.contains(p)))
        .collect();
    v.sort();
    v
}

#[test]
fn filters_match_rsync() {
    if !require_rsync() {
        return;
    }
    each_config("filters_match_rsync", |cfg, _| {
        for (i, rules) in CASES.iter().enumerate() {
            let t = &TestDir::new(&format!("filters-{cfg}-case{i}"));
            fixture(t);
            let rsync_dst = t.join("rsync-dst");
            copy_tree(&t.dst(), &rsync_dst);
            let mut opts = Opts::delete();
            // `LIST` and `LIST0` stand for the case's list files.
            let list = t.join("list").to_string_lossy().into_owned();
            let list0 = t.join("list0").to_string_lossy().into_owned();
            std::fs::write(&list, LIST).unwrap();
            std::fs::write(&list0, LIST.replace('\n', "\0")).unwrap();
            let rules: Vec<String> = rules
                .iter()
                .map(|r| r.replace("LIST0", &list0).replace("LIST", &list))
                .collect();
            opts.filters = rules.clone();
            // psync always recurses: rsync's `-r`, which `-a` does not
            // imply with --files-from.
            let mut rsync_args = vec!["-aHAX", "-r", "--numeric-ids", "--delete", "-i"];
            rsync_args.extend(rules.iter().map(String::as_str));

            // The dry run lists what rsync's lists.
            opts.dry_run = true;
            let dry = cfg.sync_with(&t.src(), &t.dst(), &opts);
            dry.assert_ok();
            let mut dry_args = rsync_args.clone();
            dry_args.push("-n");
            let theirs = rsync_itemize(&t.src(), &rsync_dst, &dry_args);
            assert_eq!(
                entries(&dry.itemized),
                entries(&theirs),
                "[{cfg}] {rules:?}: psync -n -i vs rsync -n -i\npsync:\n{}\nrsync:\n{}",
                dry.itemized.join("\n"),
                theirs.join("\n")
            );

            // The real run makes the target rsync makes.
            opts.dry_run = false;
            let real = cfg.sync_with(&t.src(), &t.dst(), &opts);
            assert_eq!(real.exit, 0, "[{cfg}] {rules:?}: {real:#?}");
            assert!(real.errors.is_empty(), "[{cfg}] {rules:?}: {real:#?}");
            let theirs = rsync_itemize(&t.src(), &rsync_dst, &rsync_args);
            assert_eq!(
                entries(&real.itemized),
                entries(&theirs),
                "[{cfg}] {rules:?}: psync -i vs rsync -i"
            );
            // A kept extraneous directory (it holds protected entries)
            // has the time of the deletions in it, in both.
            let (mut diffs, _, _) = differences(&rsync_dst, &t.dst(), &[]);
            // With --files-from, rsync does not send the root (`.` is not
            // listed) and leaves its times as its writes in it left them;
            // psync gives the root the source's, as on every run.
            let files_from = rules.iter().any(|r| r.starts_with("--files-from"));
            diffs.retain(|d| {
                if files_from && d.starts_with("differs: .: mtime ") && !d[18..].contains(':') {
                    return false;
                }
                let kept_dir = d
                    .strip_prefix("differs: ")
                    .and_then(|d| d.split_once(": mtime "))
                    .is_some_and(|(p, rest)| !t.src().join(p).exists() && !rest.contains(':'));
                !kept_dir
            });
            assert!(
                diffs.is_empty(),
                "[{cfg}] {rules:?}: psync's target differs from rsync's:\n{}",
                diffs.join("\n")
            );
        }
    });
}

/// A source file whose name is a target directory holding excluded
/// entries: the directory is not replaced (rsync: "could not make way"),
/// its excluded entries stay, the rest of it goes, and the entry fails.
#[test]
fn a_directory_holding_excluded_entries_is_not_replaced() {
    let t = TestDir::new("a_directory_holding_excluded_entries_is_not_replaced");
    std::fs::create_dir_all(t.src()).unwrap();
    std::fs::write(t.src().join("x"), b"now a file").unwrap();
    std::fs::create_dir_all(t.dst().join("x/sub")).unwrap();
    std::fs::write(t.dst().join("x/keep.o"), b"excluded").unwrap();
    std::fs::write(t.dst().join("x/sub/deep.o"), b"excluded").unwrap();
    std::fs::write(t.dst().join("x/junk"), b"not excluded").unwrap();
    let o = crate::util::run::run_cli(&["--delete", "--exclude=*.o"], &t.src(), &t.dst());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("excluded entries"), "{err}");
    assert_eq!(
        std::fs::read(t.dst().join("x/keep.o")).unwrap(),
        b"excluded"
    );
    assert_eq!(
        std::fs::read(t.dst().join("x/sub/deep.o")).unwrap(),
        b"excluded"
    );
    assert!(!t.dst().join("x/junk").exists(), "the rest of it deleted");
    // With --delete-excluded it is replaced.
    let o = crate::util::run::run_cli(
        &["--delete", "--delete-excluded", "--exclude=*.o"],
        &t.src(),
        &t.dst(),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read(t.dst().join("x")).unwrap(), b"now a file");
}

/// A `--files-from` path the source lacks is an error naming it, once,
/// as rsync's `link_stat ... failed` (its exit 23): absent at the top,
/// absent deeper, and below a name that is a file. The rest is synced,
/// and nothing is deleted for it.
#[test]
fn files_from_paths_missing_in_the_source_are_errors() {
    let rsync = require_rsync();
    each_config("files_from_missing", |cfg, _| {
        let t = &TestDir::new(&format!("files-from-missing-{cfg}"));
        tree!(t.src(), {
            "here" => file("here"),
            "top" => file("a file"),
            "d/e/f" => file("deep"),
        });
        tree!(t.dst(), {
            "d/e/gone" => file("kept: d/e is not listed"),
        });
        let list = t.join("list");
        std::fs::write(&list, "here\nnope\nd/e/f\nd/x/y\nd/x/z\ntop/under\n").unwrap();
        let mut opts = Opts::delete();
        opts.filters = vec![format!("--files-from={}", list.display())];
        let r = cfg.sync_with(&t.src(), &t.dst(), &opts);
        assert_eq!(r.exit, 1, "[{cfg}] {r:#?}");
        let mut named: Vec<String> = r
            .errors
            .iter()
            .map(|e| {
                let p = e.split(": ").find(|p| p.contains("/src/")).unwrap_or(e);
                p.rsplit("/src/").next().unwrap().to_string()
            })
            .collect();
        named.sort();
        assert_eq!(
            named,
            ["d/x/y", "d/x/z", "nope", "top/under"],
            "[{cfg}] {:#?}",
            r.errors
        );
        assert!(
            r.errors
                .iter()
                .all(|e| e.contains("source") && e.contains("not found")),
            "[{cfg}] {:#?}",
            r.errors
        );
        assert_eq!(std::fs::read(t.dst().join("here")).unwrap(), b"here");
        assert_eq!(std::fs::read(t.dst().join("d/e/f")).unwrap(), b"deep");
        assert!(t.dst().join("d/e/gone").exists());
        if rsync {
            let o = std::process::Command::new("rsync")
                .args(["-a", "-r", "--delete", "-n"])
                .arg(format!("--files-from={}", list.display()))
                .arg(format!("{}/", t.src().display()))
                .arg(format!("{}/", t.join("rsync-dst").display()))
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(23), "rsync, the oracle, fails too");
        }
    });
}

/// A `--files-from` line naming the source root (`.`, `/`, `./`) lists
/// all of it, as rsync's `-r --files-from` takes it: everything synced,
/// and with `--delete` the extraneous entries go.
#[test]
fn files_from_listing_the_root_syncs_it_all() {
    let rsync = require_rsync();
    for line in [".", "/", "./"] {
        each_config("files_from_root", |cfg, _| {
            let t = &TestDir::new(&format!("files-from-root-{cfg}"));
            tree!(t.src(), { "top" => file("top"), "d/f" => file("deep") });
            tree!(t.dst(), { "extra" => file("x"), "d/old" => file("y") });
            let list = t.join("list");
            std::fs::write(&list, format!("{line}\n")).unwrap();
            let mut opts = Opts::delete();
            opts.filters = vec![format!("--files-from={}", list.display())];
            let r = cfg.sync_with(&t.src(), &t.dst(), &opts);
            assert_eq!(r.exit, 0, "[{cfg}] {line:?}: {r:#?}");
            assert_eq!(
                std::fs::read(t.dst().join("d/f")).ok().as_deref(),
                Some(&b"deep"[..]),
                "[{cfg}] {line:?}: nothing synced"
            );
            if rsync {
                crate::util::rsync::rsync_oracle(&t.src(), &t.dst());
            }
        });
    }
}

/// A `--files-from` path through a symlink of the source: rsync follows
/// it (and makes the symlink a directory in the target); psync follows
/// no symlink of the source, so the path is a failed entry, which says
/// why rather than that the path is not there. The symlink, on the way,
/// is synced as a symlink.
#[test]
fn files_from_path_through_a_symlink_says_it_is_not_followed() {
    each_config("files_from_through_a_link", |cfg, _| {
        let t = &TestDir::new(&format!("files-from-through-{cfg}"));
        tree!(t.src(), { "real/f" => file("f"), "l" => symlink("real") });
        let list = t.join("list");
        std::fs::write(&list, "l/f\n").unwrap();
        let opts = Opts {
            filters: vec![format!("--files-from={}", list.display())],
            ..Opts::default()
        };
        let r = cfg.sync_with(&t.src(), &t.dst(), &opts);
        assert_eq!(r.exit, 1, "[{cfg}] {r:#?}");
        assert_eq!(r.errors.len(), 1, "[{cfg}] {r:#?}");
        assert!(
            r.errors[0].contains("/src/l/f: ") && r.errors[0].ends_with("symlink, not followed"),
            "[{cfg}] {:#?}",
            r.errors
        );
        let l = t.dst().join("l");
        assert!(l.symlink_metadata().unwrap().is_symlink(), "[{cfg}]");
        assert!(!t.dst().join("real").exists(), "[{cfg}]");
    });
}
