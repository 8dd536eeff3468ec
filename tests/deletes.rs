//! `--delete` / `delete(true)` removes what the source does not have, at
//! any depth; without it, extraneous entries stay.

use crate::util::mounts::TestMount;
use crate::util::{Opts, each_config, rsync_oracle, rsync_oracle_without_delete};
use std::path::Path;

fn fixture(src: &Path, dst: &Path) {
    tree!(src, { "keep" => file("k"), "d/keep" => file("k"), "d/e/keep" => file("k") });
    tree!(dst, {
        "extra" => file("x"),
        "extra-link" => symlink("keep"),
        "extra-pipe" => fifo(),
        "d/extra" => file("x"),
        "d/e/extra-dir/f/g/h" => file("deep extraneous"),
        "d/e/extra-dir/l" => symlink("/"),
        "d/e/extra-ro" => dir(),
        "d/e/extra-ro/f" => file("in a read-only dir"),
        "d/e/extra-ro" => dir() mode(0o555),
        "gone/sub/f" => file("whole extraneous tree"),
    });
}

#[test]
fn delete_removes_extraneous_files_and_nested_dirs() {
    each_config(
        "delete_removes_extraneous_files_and_nested_dirs",
        |cfg, t| {
            fixture(&t.src(), &t.dst());
            let out = cfg.sync_with(&t.src(), &t.dst(), &Opts::delete());
            out.assert_ok();
            for gone in [
                "extra",
                "extra-link",
                "extra-pipe",
                "d/extra",
                "d/e/extra-dir",
                "d/e/extra-ro",
                "gone",
            ] {
                assert!(
                    t.dst().join(gone).symlink_metadata().is_err(),
                    "{gone} survived --delete"
                );
            }
            for line in [
                "*deleting   extra",
                "*deleting   d/extra",
                "*deleting   d/e/extra-dir/",
                "*deleting   gone/",
            ] {
                assert!(
                    out.itemized.iter().any(|l| l == line),
                    "no {line:?} in {:#?}",
                    out.itemized
                );
            }
            assert!(
                out.stat("deleted") >= 14,
                "deleted counts the contents of deleted dirs: {}",
                out.stats
            );
            assert_synced!(t.src(), t.dst());
            rsync_oracle(&t.src(), &t.dst());
        },
    );
}

#[test]
fn without_delete_extraneous_entries_stay() {
    each_config("without_delete_extraneous_entries_stay", |cfg, t| {
        fixture(&t.src(), &t.dst());
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        assert!(
            !out.itemized.iter().any(|l| l.starts_with("*deleting")),
            "{:#?}",
            out.itemized
        );
        assert_eq!(
            std::fs::read(t.dst().join("d/e/extra-dir/f/g/h")).unwrap(),
            b"deep extraneous"
        );
        assert_eq!(
            std::fs::read_link(t.dst().join("extra-link")).unwrap(),
            Path::new("keep")
        );
        assert_synced!(t.src(), t.dst(), except: ["extra", "extra-link", "extra-pipe", "d/extra", "d/e/extra-dir", "d/e/extra-ro", "gone"]);
        rsync_oracle_without_delete(&t.src(), &t.dst());
        // A later run with delete finishes the job.
        cfg.sync_with(&t.src(), &t.dst(), &Opts::delete())
            .assert_ok();
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}

/// Makes `root/top/d/d/…/d/leaf`, `depth` directories below `top`, with
/// fd-relative calls (the path is far longer than PATH_MAX).
fn deep_chain(root: &Path, top: &str, depth: usize) {
    use rustix::fs::{CWD, Mode, OFlags, mkdirat, openat};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
    let mut fd = openat(CWD, root, flags, Mode::empty()).unwrap();
    let mut name = top;
    for _ in 0..depth {
        mkdirat(&fd, name, Mode::from_raw_mode(0o755)).unwrap();
        fd = openat(&fd, name, flags, Mode::empty()).unwrap();
        name = "d";
    }
    let f = openat(
        &fd,
        "leaf",
        OFlags::WRONLY | OFlags::CREATE,
        Mode::from_raw_mode(0o644),
    );
    drop(f.unwrap());
}

/// A directory chain deeper than PATH_MAX in the target (any user can
/// make one where they may write) is removed without recursion: by
/// `--delete` (itemized, as with `-i`), and by a type change with
/// `--delete`; without it the chain stays, reported, and the rest is synced.
#[test]
fn target_chains_deeper_than_path_max_are_removed() {
    each_config(
        "target_chains_deeper_than_path_max_are_removed",
        |cfg, t| {
            tree!(t.src(), { "x" => file("a file where a deep chain is"), "ok" => file("ok") });
            std::fs::create_dir_all(t.dst()).unwrap();
            deep_chain(&t.dst(), "x", 2_500);
            deep_chain(&t.dst(), "gone", 2_500);
            let kept = cfg.sync_unchecked(&t.src(), &t.dst(), &Opts::default());
            assert_eq!(kept.exit, 1, "{kept:#?}");
            assert!(t.dst().join("x/d").is_dir() && t.dst().join("gone").is_dir());
            assert_eq!(crate::util::read(t.dst().join("ok")), b"ok");
            let out = cfg.sync_unchecked(&t.src(), &t.dst(), &Opts::delete());
            out.assert_ok();
            crate::util::assert_no_temps(&t.dst());
            assert_synced!(t.src(), t.dst());
            rsync_oracle(&t.src(), &t.dst());
            let deleted = out
                .itemized
                .iter()
                .filter(|l| l.starts_with("*deleting"))
                .count();
            // gone: 2,500 directories and a leaf; x: what it held (rsync does
            // not itemize the replaced entry itself).
            assert_eq!(deleted, 2 * 2_501 - 1, "{deleted} deletions itemized");
        },
    );
}

/// The depth from the report (10,000 levels, 20,000 bytes of path): a
/// type change with `--force` and `--delete` of an extraneous chain, in
/// one run of the library on 4 threads.
#[test]
fn target_chains_of_ten_thousand_levels() {
    let t = crate::util::TestDir::new("target_chains_of_ten_thousand_levels");
    tree!(t.src(), { "x" => file("a file where a deep chain is") });
    std::fs::create_dir_all(t.dst()).unwrap();
    deep_chain(&t.dst(), "x", 10_000);
    deep_chain(&t.dst(), "gone", 10_000);
    let mut b = psync::builder(t.src(), t.dst());
    b.threads(4).delete(true);
    let report = b.build().unwrap().run().unwrap();
    assert!(report.success(), "{report:?}");
    assert_synced!(t.src(), t.dst());
}

/// A walker that fails `lstat` (EIO) of the entries named `flaky*` in
/// one source directory, as a flaky network file system does.
struct FlakySource {
    dir: (u64, u64),
    /// A source directory whose listing fails altogether.
    broken: (u64, u64),
}

impl psync::Walker for FlakySource {
    fn list(&self, dir: &psync::Dir) -> std::io::Result<psync::Listing> {
        let mut l = dir.list()?;
        let st = dir.fstat()?;
        #[allow(clippy::unnecessary_cast)]
        let ids = (st.st_dev as u64, st.st_ino as u64);
        if ids == self.broken {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        if ids == self.dir {
            let (flaky, ok) = l
                .entries
                .into_iter()
                .partition(|e| e.name.as_bytes().starts_with(b"flaky"));
            l.entries = ok;
            let flaky: Vec<psync::Entry> = flaky;
            l.failed = flaky
                .into_iter()
                .map(|e| (e.name, std::io::Error::from_raw_os_error(libc::EIO)))
                .collect();
        }
        Ok(l)
    }
}

/// `--delete` never deletes what the source could not be read to confirm:
/// in a source directory where some entries fail `lstat`, nothing is
/// deleted (neither the failed names nor extraneous ones; a warning says
/// so), the failed names' targets stay as they were, and other directories
/// are synced as usual.
#[test]
fn source_read_errors_delete_nothing_in_their_directory() {
    let t = crate::util::TestDir::new("source_read_errors_delete_nothing");
    tree!(t.src(), {
        "d/a" => file("a"), "d/flaky1" => file("new 1"), "d/flaky2/f" => file("f"),
        "ok/f" => file("f"), "broken/f" => file("f"),
    });
    tree!(t.dst(), {
        "d/flaky1" => file("old 1"), "d/flaky2/f" => file("old f"), "d/extra" => file("extra"),
        "ok/extra" => file("extra"), "broken/extra" => file("extra"),
    });
    let ids = |p: &str| {
        let m = std::fs::metadata(t.src().join(p)).unwrap();
        (
            std::os::unix::fs::MetadataExt::dev(&m),
            std::os::unix::fs::MetadataExt::ino(&m),
        )
    };
    let walker = FlakySource {
        dir: ids("d"),
        broken: ids("broken"),
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut b = psync::builder(t.src(), t.dst());
    b.threads(4)
        .delete(true)
        .walker(std::sync::Arc::new(walker))
        .events(tx);
    let report = b.build().unwrap().run().unwrap();
    drop(b);
    let events: Vec<psync::Event> = rx.iter().collect();
    assert_eq!(report.stats.failed, 3, "{events:#?}");
    let says = |what: &str| {
        events.iter().any(|e| match e {
            psync::Event::Warning { message, .. } | psync::Event::Error { message, .. } => {
                message.contains(what)
            }
            _ => false,
        })
    };
    assert!(says("nothing deleted in this directory"), "{events:#?}");
    assert!(
        says("src/broken: Input/output error (os error 5); nothing deleted in it"),
        "{events:#?}"
    );
    assert_eq!(crate::util::read(t.dst().join("broken/extra")), b"extra");
    assert!(
        says("src/d/flaky1"),
        "the error names the source path: {events:#?}"
    );
    assert_eq!(crate::util::read(t.dst().join("d/flaky1")), b"old 1");
    assert_eq!(crate::util::read(t.dst().join("d/flaky2/f")), b"old f");
    assert_eq!(crate::util::read(t.dst().join("d/extra")), b"extra");
    assert_eq!(crate::util::read(t.dst().join("d/a")), b"a");
    assert!(
        !t.dst().join("ok/extra").exists(),
        "other directories are synced"
    );
    assert_eq!(crate::util::read(t.dst().join("ok/f")), b"f");
}

/// A 4 MiB tmpfs mounted at `path` (created) for the life of the guard.
fn tmpfs_at(path: &Path) -> TestMount {
    std::fs::create_dir_all(path).unwrap();
    TestMount::tmpfs(path, "4m").unwrap_or_else(|e| panic!("tmpfs at {}: {e}", path.display()))
}

/// A file system mounted inside DST is never entered nor deleted into:
/// not by `--delete` (extraneous), not by a type change with `--force`,
/// not to sync into it; each is an error naming the mount point.
#[test]
fn mount_points_in_the_target_are_left_alone() {
    if !crate::util::is_root() {
        skip!("mounting a tmpfs needs root");
    }
    each_config("mount_points_in_the_target_are_left_alone", |cfg, t| {
        tree!(t.src(), { "keep" => file("k"), "into/f" => file("f"), "typed" => file("f") });
        let _m: Vec<TestMount> = ["extraneous", "into", "typed"]
            .iter()
            .map(|m| {
                let g = tmpfs_at(&t.dst().join(m));
                std::fs::write(g.dir().join("theirs"), b"theirs").unwrap();
                g
            })
            .collect();
        let opts = Opts {
            delete: true,
            force: true,
            ..Opts::default()
        };
        let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
        assert_eq!(out.exit, 1, "{out:#?}");
        for m in ["extraneous", "into", "typed"] {
            assert_eq!(crate::util::read(t.dst().join(m).join("theirs")), b"theirs");
            assert!(
                out.errors
                    .iter()
                    .any(|e| e.contains(m) && e.contains("mount")),
                "no error for {m}: {:#?}",
                out.errors
            );
        }
        assert!(
            !t.dst().join("into/f").exists(),
            "synced into a mount point"
        );
        assert_eq!(crate::util::read(t.dst().join("keep")), b"k");
    });
}

/// `-x`: a file system mounted below SRC is copied as an empty directory,
/// and nothing in its target is deleted, even with `--delete`.
#[test]
fn one_file_system_stays_on_the_source_root_fs() {
    if !crate::util::is_root() {
        skip!("mounting a tmpfs needs root");
    }
    each_config("one_file_system_stays_on_the_source_root_fs", |cfg, t| {
        tree!(t.src(), { "plain/f" => file("f") });
        let m = tmpfs_at(&t.src().join("mnt"));
        std::fs::write(m.dir().join("on_the_mount"), b"x").unwrap();
        tree!(t.dst(), { "mnt/old" => file("old") });
        let opts = Opts {
            delete: true,
            one_file_system: true,
            ..Opts::default()
        };
        cfg.sync_with(&t.src(), &t.dst(), &opts).assert_ok();
        assert!(t.dst().join("mnt").is_dir());
        // The mount point's own attributes are synced and itemized.
        std::fs::set_permissions(
            t.dst().join("mnt"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let fixed = cfg.sync_with(&t.src(), &t.dst(), &opts);
        fixed.assert_ok();
        assert!(
            fixed
                .itemized
                .iter()
                .any(|l| l.ends_with(" mnt/") && l.starts_with(".d")),
            "{:#?}",
            fixed.itemized
        );
        assert!(
            !t.dst().join("mnt/on_the_mount").exists(),
            "crossed into the mount"
        );
        assert_eq!(crate::util::read(t.dst().join("mnt/old")), b"old");
        assert_eq!(crate::util::read(t.dst().join("plain/f")), b"f");
        let again = cfg.sync_with(&t.src(), &t.dst(), &opts);
        again.assert_ok();
        assert!(again.itemized.is_empty(), "{:#?}", again.itemized);
        drop(m);
        cfg.sync(&t.src(), &t.dst()).assert_ok();
    });
}

/// A mount point deep inside a target directory that a type change
/// (`--force`) or `--delete` removes: everything else in it goes (as
/// rsync deletes the siblings), the mount point and the directories
/// above it stay, one error names it, and nothing is then made at the
/// name (no second, raw error).
#[test]
fn mount_points_inside_removed_directories_stay_alone() {
    if !crate::util::is_root() {
        skip!("mounting a tmpfs needs root");
    }
    each_config(
        "mount_points_inside_removed_directories_stay_alone",
        |cfg, t| {
            tree!(t.src(), { "dir" => file("a file now"), "ok" => file("ok") });
            tree!(t.dst(), { "dir/k" => file("k"), "dir/sub/k2" => file("k2"), "x/k" => file("k") });
            let mounts = [t.dst().join("dir/sub/m"), t.dst().join("x/sub/m")].map(|p| {
                let g = tmpfs_at(&p);
                std::fs::write(g.dir().join("theirs"), b"theirs").unwrap();
                g
            });
            let opts = Opts {
                delete: true,
                force: true,
                ..Opts::default()
            };
            let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
            assert_eq!(out.exit, 1, "{out:#?}");
            assert_eq!(
                out.errors.len(),
                2,
                "one error per removal: {:#?}",
                out.errors
            );
            assert!(
                out.errors.iter().all(|e| e.contains("mount point")),
                "{:#?}",
                out.errors
            );
            for m in &mounts {
                assert_eq!(crate::util::read(m.dir().join("theirs")), b"theirs");
            }
            for gone in ["dir/k", "dir/sub/k2", "x/k"] {
                assert!(!t.dst().join(gone).exists(), "{gone} was not removed");
            }
            assert!(t.dst().join("dir").is_dir(), "the name stays a directory");
            assert_eq!(crate::util::read(t.dst().join("ok")), b"ok");
        },
    );
}
