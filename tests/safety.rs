//! A target that was tampered with between runs must not lead psync out of
//! the target: a directory replaced by a symlink to a "victim" directory
//! elsewhere, a file replaced by a symlink to a victim file. psync runs as
//! root on shared file systems, so following such a link would let any
//! user overwrite or chmod files they do not own.

use crate::util::compare::{Listing, StatSnapshot, assert_untouched};
use crate::util::{Opts, TestDir, each_config, listing, rsync_oracle, stat_snapshot};
use std::path::Path;

fn victim(t: &TestDir) -> std::path::PathBuf {
    let v = t.join("victim");
    tree!(v, {
        "f" => file("victim f") mode(0o600) mtime(1_500_000_000, 1),
        "x" => file("victim x") mode(0o604) mtime(1_500_000_000, 2),
        "inner/h" => file("victim h") mode(0o640) mtime(1_500_000_000, 3),
        "inner" => dir() mode(0o711) mtime(1_500_000_000, 4),
    });
    std::fs::set_permissions(&v, std::os::unix::fs::PermissionsExt::from_mode(0o751)).unwrap();
    v
}

fn snapshot(v: &Path) -> (StatSnapshot, Listing, Vec<Vec<u8>>) {
    let contents = ["f", "x", "inner/h"]
        .iter()
        .map(|f| std::fs::read(v.join(f)).unwrap())
        .collect();
    (stat_snapshot(v), listing(v), contents)
}

#[track_caller]
fn assert_victim_untouched(v: &Path, before: &(StatSnapshot, Listing, Vec<Vec<u8>>)) {
    let after = snapshot(v);
    assert_untouched(
        &before.0,
        &after.0,
        "the victim directory outside the target",
    );
    assert_eq!(before.1, after.1, "victim listing changed");
    assert_eq!(before.2, after.2, "victim contents changed");
}

#[test]
fn target_dir_swapped_for_a_symlink_is_not_followed() {
    each_config(
        "target_dir_swapped_for_a_symlink_is_not_followed",
        |cfg, t| {
            tree!(t.src(), { "sub/f" => file("v1"), "sub/x" => file("x1"), "sub/inner/h" => file("h1"), "sub/old" => file("o") });
            cfg.sync(&t.src(), &t.dst()).assert_ok();
            let v = victim(t);
            let before = snapshot(&v);
            std::fs::remove_dir_all(t.dst().join("sub")).unwrap();
            std::os::unix::fs::symlink(&v, t.dst().join("sub")).unwrap();
            // Every kind of work psync could do in `sub`: new data, changed
            // data, a changed mode, a deletion, a changed directory mode.
            tree!(t.src(), {
                "sub/f" => file("v2, longer"),
                "sub/x" => keep() mode(0o777),
                "sub/inner/h" => file("h2, longer"),
                "sub/inner" => keep() mode(0o700),
                "sub/new" => file("n"),
                "sub/old" => absent(),
                "sub" => keep() mode(0o700),
            });
            let out = cfg.sync_with(&t.src(), &t.dst(), &Opts::delete());
            assert_victim_untouched(&v, &before);
            if out.exit == 0 {
                assert!(
                    !t.dst().join("sub").symlink_metadata().unwrap().is_symlink(),
                    "the symlink is still there"
                );
                assert_synced!(t.src(), t.dst());
                rsync_oracle(&t.src(), &t.dst());
            } else {
                let sub = t.dst().join("sub").display().to_string();
                assert!(
                    out.errors.iter().any(|e| e.contains(&sub)),
                    "failed without naming {sub}: {out:#?}"
                );
            }
        },
    );
}

#[test]
fn target_file_swapped_for_a_symlink_is_not_followed() {
    each_config(
        "target_file_swapped_for_a_symlink_is_not_followed",
        |cfg, t| {
            tree!(t.src(), {
                "data" => file("d1"),
                "attrs" => file("a") mode(0o644) mtime(1_600_000_000, 0),
                "same" => file("s") mtime(1_600_000_000, 0),
            });
            cfg.sync(&t.src(), &t.dst()).assert_ok();
            let v = victim(t);
            let before = snapshot(&v);
            for (name, target) in [("data", "f"), ("attrs", "x"), ("same", "inner/h")] {
                std::fs::remove_file(t.dst().join(name)).unwrap();
                std::os::unix::fs::symlink(v.join(target), t.dst().join(name)).unwrap();
            }
            tree!(t.src(), { "data" => file("d2, longer"), "attrs" => keep() mode(0o666) mtime(1_700_000_000, 0) });
            let out = cfg.sync(&t.src(), &t.dst());
            out.assert_ok();
            assert_victim_untouched(&v, &before);
            assert_synced!(t.src(), t.dst());
            rsync_oracle(&t.src(), &t.dst());
        },
    );
}

/// The target root itself may be a symlink (like `rsync SRC/ LINK/`):
/// that is the user's choice and is followed; links below it are not.
#[test]
fn target_root_given_as_a_symlink_is_followed() {
    each_config("target_root_given_as_a_symlink_is_followed", |cfg, t| {
        tree!(t.src(), { "f" => file("x"), "d/g" => file("y") });
        std::fs::create_dir(t.join("real")).unwrap();
        std::os::unix::fs::symlink(t.join("real"), t.dst()).unwrap();
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        assert!(
            t.dst().symlink_metadata().unwrap().is_symlink(),
            "the root link itself is kept"
        );
        assert_synced!(t.src(), t.join("real"));
    });
}

/// A walker that, the first time it lists the source directory `sub`,
/// swaps the target's `sub` for a symlink to the victim: the moment when
/// psync has opened the target directory and is about to act in it.
struct SwapWhileListing {
    src_sub: (u64, u64),
    dst_sub: std::path::PathBuf,
    moved_to: std::path::PathBuf,
    victim: std::path::PathBuf,
    done: std::sync::atomic::AtomicBool,
}

impl psync::Walker for SwapWhileListing {
    fn list(&self, dir: &psync::Dir) -> std::io::Result<psync::Listing> {
        let st = dir.fstat()?;
        #[allow(clippy::unnecessary_cast)]
        let id = (st.st_dev as u64, st.st_ino as u64);
        if id == self.src_sub && !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::fs::rename(&self.dst_sub, &self.moved_to)?;
            std::os::unix::fs::symlink(&self.victim, &self.dst_sub)?;
        }
        psync::FsWalker.list(dir)
    }
}

/// The swap happens in the middle of a run (made deterministic through the
/// walker seam): whatever psync does next in `sub` (copying files into it,
/// descending, deleting, setting its attributes) must not reach the victim.
#[test]
fn target_dir_swapped_for_a_symlink_during_the_run_is_not_followed() {
    for threads in [1, 8] {
        let t = TestDir::new(&format!("target_dir_swapped_during_the_run-{threads}t"));
        tree!(t.src(), { "sub/f" => file("v1"), "sub/x" => file("x1"), "sub/inner/h" => file("h1"), "sub/old" => file("o") });
        crate::util::run::sync_lib(&t.src(), &t.dst(), threads, &Opts::default()).assert_ok();
        let v = victim(&t);
        let before = snapshot(&v);
        tree!(t.src(), {
            "sub/f" => file("v2, longer"),
            "sub/x" => keep() mode(0o777),
            "sub/inner/h" => file("h2, longer"),
            "sub/inner" => keep() mode(0o700),
            "sub/new" => file("n"),
            "sub/link" => symlink("f"),
            "sub/old" => absent(),
            "sub" => keep() mode(0o700),
        });
        use std::os::unix::fs::MetadataExt;
        let m = t.src().join("sub").metadata().unwrap();
        let walker = SwapWhileListing {
            src_sub: (m.dev(), m.ino()),
            dst_sub: t.dst().join("sub"),
            moved_to: t.join("moved-away"),
            victim: v.clone(),
            done: std::sync::atomic::AtomicBool::new(false),
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut b = psync::builder(t.src(), t.dst());
        b.threads(threads)
            .delete(true)
            .events(tx)
            .walker(std::sync::Arc::new(walker));
        let report = b.build().and_then(|s| s.run()).expect("run");
        drop(b);
        let errors: Vec<String> = rx
            .iter()
            .filter_map(|e| {
                if let psync::Event::Error { message, .. } = e {
                    Some(message)
                } else {
                    None
                }
            })
            .collect();
        assert!(
            t.dst().join("sub").symlink_metadata().is_ok(),
            "threads={threads}"
        );
        assert_victim_untouched(&v, &before);
        // psync noticed: what it could not do in `sub` is reported.
        let sub = t.dst().join("sub").display().to_string();
        assert!(
            report.stats.failed > 0 && errors.iter().any(|e| e.contains(&sub)),
            "threads={threads}: {errors:#?}"
        );
        // A clean rerun replaces the symlink and completes the target.
        crate::util::run::sync_lib(&t.src(), &t.dst(), threads, &Opts::delete()).assert_ok();
        assert_victim_untouched(&v, &before);
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    }
}
