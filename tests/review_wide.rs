//! Adversarial review of ADR 021's wide directories: a directory of more
//! names than `wide_dir` split into `Task::DirPart`s. Low thresholds here
//! (parts of 1 to 3 names), so that every boundary case below falls on a
//! part's edge somewhere.

use crate::util::run::sync_lib;
use crate::util::{Opts, TestDir, copy_tree, each_config, rsync_oracle_full_with};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Thresholds: parts of 1 (`wide_dir / 8` clamps to 1), 2 and 3 names.
const THRESHOLDS: [usize; 3] = [3, 16, 24];

fn b(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

fn write(p: &Path, s: &str) {
    std::fs::write(p, s).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// A source `w` whose names sort in awkward ways: prefixes of each other,
/// bytes >= 0x80 (UTF-8 and not), names sorting first and last, and type
/// changes of every pair; plus hard links across the name space.
fn boundary_source(src: &Path) {
    let w = src.join("w");
    std::fs::create_dir_all(&w).unwrap();
    for name in [
        &b"a"[..],
        b"ab",
        b"abc",
        b"a\x80",
        b"a\xff",
        b"\xc3\xa9t\xc3\xa9",
        b"\xff",
        b"\xfe\xff",
        b"Z",
        b"-",
        b"0",
        b"~",
        b"b",
        b"b\x80",
        b"bb",
        b"c",
        b"c.",
        b"c..",
    ] {
        std::fs::write(b(&w, name), name).unwrap();
    }
    // Type changes: source side.
    write(&w.join("f2d"), "a file where the target has a directory");
    std::fs::create_dir_all(w.join("d2f/sub")).unwrap();
    write(
        &w.join("d2f/sub/x"),
        "a directory where the target has a file",
    );
    std::os::unix::fs::symlink("ab", w.join("d2l")).unwrap();
    std::fs::create_dir_all(w.join("l2d")).unwrap();
    write(
        &w.join("l2d/in"),
        "a directory where the target has a symlink",
    );
    write(&w.join("l2f"), "a file where the target has a symlink");
    std::os::unix::fs::symlink("abc", w.join("f2l")).unwrap();
    // Hard links: one group across the whole name space, one with a file
    // outside `w`.
    write(&w.join("\x01first"), "group one");
    std::fs::hard_link(w.join("\x01first"), w.join("mid")).unwrap();
    std::fs::hard_link(w.join("\x01first"), b(&w, b"\xff\xfelast")).unwrap();
    std::fs::create_dir_all(src.join("out")).unwrap();
    write(&src.join("out/o"), "group two");
    std::fs::hard_link(src.join("out/o"), w.join("ab-linked")).unwrap();
}

/// A target `w` with entries only the target has at the very start and
/// end of the name space and between prefixes, and the other side of the
/// type changes (non-empty directories among them).
fn boundary_target(dst: &Path) {
    let w = dst.join("w");
    std::fs::create_dir_all(&w).unwrap();
    for name in [
        &b"\x01"[..],
        b"!",
        b"a\x7f",
        b"aa",
        b"abcd",
        b"a\x80\x80",
        b"\xff\xff\xff",
    ] {
        std::fs::write(b(&w, name), "extraneous").unwrap();
    }
    // An extraneous directory with contents sorting last.
    std::fs::create_dir_all(b(&w, b"\xff\xff\xff\xffdir/sub")).unwrap();
    std::fs::write(b(&w, b"\xff\xff\xff\xffdir/sub/x"), "x").unwrap();
    // And one sorting first.
    std::fs::create_dir_all(w.join("\x02dir/sub")).unwrap();
    write(&w.join("\x02dir/sub/x"), "x");
    std::fs::create_dir_all(w.join("f2d/inner")).unwrap();
    write(&w.join("f2d/inner/x"), "in the way");
    write(&w.join("d2f"), "in the way");
    std::fs::create_dir_all(w.join("d2l/inner")).unwrap();
    write(&w.join("d2l/inner/x"), "in the way");
    std::os::unix::fs::symlink("nowhere", w.join("l2d")).unwrap();
    std::os::unix::fs::symlink("nowhere", w.join("l2f")).unwrap();
    write(&w.join("f2l"), "in the way");
    write(&w.join("mid"), "stale, not linked");
}

/// Every entry below `root`: its path, type, size, content for files,
/// target for symlinks, and link count (ordered).
fn shape(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let m = p.symlink_metadata().unwrap();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let rel = String::from_utf8_lossy(&rel).into_owned();
            let rel = format!("{rel:?}");
            if m.is_dir() {
                out.push(format!("d {rel}"));
                walk(root, &p, out);
            } else if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.push(format!("l {rel} -> {t:?}"));
            } else {
                let c = std::fs::read(&p).unwrap_or_default();
                out.push(format!(
                    "f {rel} {:?} nlink={}",
                    String::from_utf8_lossy(&c),
                    m.nlink()
                ));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// With --delete (and --force): split at any threshold, the result is
/// what rsync -aHAXS --delete makes (oracle), the tree is synced, and
/// hard links spanning parts are one inode.
#[test]
fn boundary_names_and_type_changes_split_as_rsync() {
    for wide in THRESHOLDS {
        each_config(&format!("rw_boundary_delete_{wide}"), |cfg, t| {
            boundary_source(&t.src());
            boundary_target(&t.dst());
            let opts = Opts {
                force: true,
                wide_dir: Some(wide),
                ..Opts::delete()
            };
            let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
            out.assert_ok();
            assert!(out.stat("dir_parts") >= 2, "{}", out.stats);
            rsync_oracle_full_with(&t.src(), &t.dst(), &[]);
            assert_synced!(t.src(), t.dst());
            let w = t.dst().join("w");
            let first = w.join("\x01first").symlink_metadata().unwrap().ino();
            assert_eq!(first, w.join("mid").symlink_metadata().unwrap().ino());
            assert_eq!(
                first,
                b(&w, b"\xff\xfelast").symlink_metadata().unwrap().ino()
            );
            let again = cfg.sync_with(&t.src(), &t.dst(), &opts);
            again.assert_ok();
            assert!(again.itemized.is_empty(), "{:#?}", again.itemized);
        });
    }
}

/// Split and unsplit runs from identical targets end identical, with the
/// same exit status and the same (sorted) itemized lines: without
/// --delete (nothing extraneous deleted, non-empty directories in the way
/// of type changes kept), with --delete alone (no --force), and with
/// --force alone.
#[test]
fn split_equals_unsplit_with_and_without_delete() {
    let modes: [(&str, Opts); 4] = [
        ("plain", Opts::default()),
        ("delete", Opts::delete()),
        ("force", Opts::force()),
        (
            "both",
            Opts {
                force: true,
                ..Opts::delete()
            },
        ),
    ];
    for (what, opts) in modes {
        for wide in THRESHOLDS {
            let t = TestDir::new(&format!("rw_split_equals_unsplit_{what}_{wide}"));
            boundary_source(&t.src());
            boundary_target(&t.dst());
            let dst2 = t.join("dst2");
            copy_tree(&t.dst(), &dst2);
            let whole = sync_lib(&t.src(), &t.dst(), 4, &opts);
            let split = sync_lib(
                &t.src(),
                &dst2,
                4,
                &Opts {
                    wide_dir: Some(wide),
                    ..opts.clone()
                },
            );
            assert!(split.stat("dir_parts") >= 2, "{}", split.stats);
            assert_eq!(
                whole.exit, split.exit,
                "{what}/{wide}: {whole:#?}\n{split:#?}"
            );
            assert_eq!(whole.sorted_items(), split.sorted_items(), "{what}/{wide}");
            assert_eq!(shape(&t.dst()), shape(&dst2), "{what}/{wide}");
            if !opts.delete {
                // Nothing the source lacks was deleted.
                for name in [&b"\x01"[..], b"!", b"aa", b"\xff\xff\xff"] {
                    assert!(b(&dst2.join("w"), name).exists(), "{what}/{wide}");
                }
            }
        }
    }
}

/// `-n -i` of a split directory prints the lines the real run's `-i`
/// prints (sorted: the parts run in parallel), hard links across parts
/// included.
#[test]
fn split_dry_run_itemizes_as_the_real_run() {
    for wide in THRESHOLDS {
        for threads in [1, 8] {
            let t = TestDir::new(&format!("rw_dry_equals_real_{wide}_{threads}"));
            boundary_source(&t.src());
            boundary_target(&t.dst());
            let opts = Opts {
                force: true,
                wide_dir: Some(wide),
                ..Opts::delete()
            };
            let dry = sync_lib(
                &t.src(),
                &t.dst(),
                threads,
                &Opts {
                    dry_run: true,
                    ..opts.clone()
                },
            );
            let real = sync_lib(&t.src(), &t.dst(), threads, &opts);
            real.assert_ok();
            assert_eq!(dry.sorted_items(), real.sorted_items(), "{wide}/{threads}");
            // A fresh target, too.
            let fresh = t.join("fresh");
            let dry = sync_lib(
                &t.src(),
                &fresh,
                threads,
                &Opts {
                    dry_run: true,
                    ..opts.clone()
                },
            );
            let real = sync_lib(&t.src(), &fresh, threads, &opts);
            real.assert_ok();
            assert_eq!(
                dry.sorted_items(),
                real.sorted_items(),
                "fresh {wide}/{threads}"
            );
        }
    }
}

/// Version `v` of a tree whose `w` is wide (hundreds of names): the two
/// versions differ by type changes both ways at many names, hard links
/// whose members are far apart, and names only one version has.
fn kill_tree(root: &Path, v: usize) {
    let w = root.join("w");
    std::fs::create_dir_all(&w).unwrap();
    for i in 0..400 {
        let name = w.join(format!("n{i:03}"));
        match (i + v) % 4 {
            0 => write(&name, &format!("v{v} file {i}")),
            1 => {
                std::fs::create_dir_all(name.join("sub")).unwrap();
                write(&name.join("sub/x"), &format!("v{v} {i}"));
            }
            2 => std::os::unix::fs::symlink(format!("v{v}-{i}"), &name).unwrap(),
            _ => {
                if i % 8 == 3 {
                    write(&name, &format!("v{v} linked {i}"));
                    std::fs::hard_link(&name, w.join(format!("z{i:03}-link"))).unwrap();
                } else {
                    write(&name, &format!("v{v} plain {i}"));
                }
            }
        }
    }
    for i in 0..50 {
        write(&w.join(format!("only{v}-{i:02}")), "only in one version");
    }
}

/// SIGKILLs at random moments of split runs (parts of 2 names) with
/// --delete --force over two alternating versions of a wide directory:
/// the last run converges exactly, leaving no temporaries.
#[test]
fn kill_loop_over_a_split_directory_converges() {
    use crate::util::run::{cli_available, psync_cmd};
    use std::time::{Duration, Instant};
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let t = TestDir::new("rw_kill_loop_split");
    let versions = [t.join("v0"), t.join("v1")];
    kill_tree(&versions[0], 0);
    kill_tree(&versions[1], 1);
    let run = |extra: &[&str]| {
        psync_cmd()
            .env("PSYNC_WIDE_DIR", "16")
            .args(["sync", "-q", "--delete", "--force"])
            .args(extra)
            .arg(t.src())
            .arg(t.dst())
            .spawn()
            .expect("start psync")
    };
    let install = |v: usize| {
        crate::util::remove_tree(&t.src());
        copy_tree(&versions[v], &t.src());
    };
    install(0);
    let started = Instant::now();
    assert!(run(&[]).wait().unwrap().success());
    let full = started.elapsed().max(Duration::from_millis(50));
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    eprintln!("kill loop: a full run takes {full:?}; seed {seed:#x}");
    let mut current = 0;
    for round in 0..20 {
        if round % 2 == 0 {
            current = 1 - current;
            install(current);
        }
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let wait = full.mul_f64((seed >> 33) as f64 / f64::from(1u32 << 31));
        let threads = ["1", "2", "8"][(seed % 3) as usize];
        let mut child = run(&["--threads", threads]);
        std::thread::sleep(wait);
        let _ = child.kill();
        let _ = child.wait();
    }
    let status = run(&[]).wait().expect("last run");
    assert_eq!(status.code(), Some(0), "the last run");
    assert_synced!(t.src(), t.dst());
    crate::util::compare::assert_no_temps(&t.dst());
    rsync_oracle_full_with(&t.src(), &t.dst(), &[]);
    // And a second run finds nothing to do.
    let out = crate::util::run::sync_cli(
        &t.src(),
        &t.dst(),
        4,
        &Opts {
            force: true,
            wide_dir: Some(16),
            ..Opts::delete()
        },
    );
    out.assert_ok();
    assert!(out.itemized.is_empty(), "{:#?}", out.itemized);
}

/// Without root, split directories whose targets are 0300, 0000 and 0500
/// (the user's own) are opened up for the parts and get the source's
/// modes at their finish; a new one whose source is 0555 is written in by
/// its parts and made 0555 at the end; with --delete, extraneous names in
/// a 0500 target are deleted. A re-run is clean.
#[test]
fn non_root_split_directories_with_restrictive_modes() {
    use crate::util::user::{assert_exit, test_user};
    let test = "rw_non_root_split_restrictive";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    for d in ["wx", "none", "rx", "ro"] {
        std::fs::create_dir_all(t.src().join(d)).unwrap();
        for i in 0..20 {
            write(&t.src().join(format!("{d}/f{i:02}")), &format!("{d} {i}"));
        }
    }
    user.own(t.path());
    let dst = t.dst();
    let run = |args: &[&str]| {
        user.command(crate::util::run::psync_bin())
            .env("PSYNC_WIDE_DIR", "4")
            .arg("sync")
            .args(args)
            .arg(t.src())
            .arg(&dst)
            .output()
            .unwrap()
    };
    let perm = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    };
    perm(&t.src().join("ro"), 0o555);
    assert_exit(&run(&["-q"]), 0, "first sync");
    assert_eq!(crate::util::mode_of(dst.join("ro")), 0o555);
    assert_synced!(t.src(), dst);
    perm(&t.src().join("ro"), 0o755);
    for d in ["wx", "none", "rx", "ro"] {
        for i in 0..20 {
            write(
                &t.src().join(format!("{d}/f{i:02}")),
                &format!("{d} {i} changed!"),
            );
            write(&t.src().join(format!("{d}/g{i:02}")), "new");
        }
        write(&dst.join(format!("{d}/extra")), "extraneous");
    }
    user.own(&t.src());
    user.own(&dst);
    perm(&t.src().join("ro"), 0o555);
    for (d, mode) in [("wx", 0o300), ("none", 0o000), ("rx", 0o500), ("ro", 0o500)] {
        perm(&dst.join(d), mode);
    }
    for round in ["sync", "re-sync"] {
        let out = run(&["-q", "--delete", "-i"]);
        assert_exit(&out, 0, round);
        for d in ["wx", "none", "rx", "ro"] {
            assert_eq!(
                crate::util::mode_of(dst.join(d)),
                crate::util::mode_of(t.src().join(d)),
                "{round}: {d}"
            );
        }
        assert_synced!(t.src(), dst);
        rsync_oracle_full_with(&t.src(), &dst, &[]);
        if round == "re-sync" {
            assert!(
                out.stdout.is_empty(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// Lists as `FsWalker` does, splitting as it does; before the `nth`
/// look-up of some names (`list_some`: a part) in the directory `at`,
/// runs `act` once.
struct BeforePart {
    at: (u64, u64),
    nth: u32,
    seen: std::sync::atomic::AtomicU32,
    act: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl psync::Walker for BeforePart {
    fn list(&self, dir: &psync::Dir) -> std::io::Result<psync::Listing> {
        psync::FsWalker.list(dir)
    }
    fn list_or_names(&self, dir: &psync::Dir, most: usize) -> std::io::Result<psync::Listed> {
        psync::FsWalker.list_or_names(dir, most)
    }
    fn list_some(&self, dir: &psync::Dir, names: &[&[u8]]) -> std::io::Result<psync::Listing> {
        let st = dir.fstat()?;
        #[allow(clippy::unnecessary_cast)]
        if (st.st_dev as u64, st.st_ino as u64) == self.at
            && self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.nth
            && let Some(act) = self.act.lock().unwrap().take()
        {
            act();
        }
        psync::FsWalker.list_some(dir, names)
    }
}

/// The attacker (who owns `u` and `u/w` on both sides) swaps the target
/// of its wide `u/w` with the victim's private `u/v` (a rename within the
/// attacker's own directory) while the parts of `u/w` run: the parts that
/// open `u/w` after the swap write nothing into the victim's directory,
/// and the directory's finish gives it neither the attacker's owner nor
/// its mode.
#[test]
fn swapping_the_target_of_a_split_directory_between_parts() {
    use crate::util::attack::{VICTIM, attrs, cat, mv, run_lib};
    use crate::util::user::test_user;
    let test = "rw_swap_split_target";
    let Some(user) = test_user(test) else { return };
    for nth in [1, 3, 9] {
        let t = TestDir::new(&format!("{test}-{nth}"));
        std::fs::create_dir_all(t.src().join("u/w")).unwrap();
        for i in 0..24 {
            write(&t.src().join(format!("u/w/f{i:02}")), "the attacker's");
        }
        user.own(&t.src().join("u"));
        tree!(t.src(), {
            "u/v/secret" => file("the victim's secret") owner(VICTIM, VICTIM) mode(0o600),
            "u/v" => dir() owner(VICTIM, VICTIM) mode(0o700),
        });
        let first = run_lib(&t.src(), &t.dst(), |b| {
            b.wide_dir(4);
        });
        assert!(first.ok, "first run: {first:#?}");
        // New names in the attacker's directory: every part has writes.
        for i in 0..24 {
            write(&t.src().join(format!("u/w/g{i:02}")), "new");
        }
        user.own(&t.src().join("u/w"));
        let v_before = attrs(&t.dst().join("u/v"));
        let m = t.src().join("u/w").symlink_metadata().unwrap();
        let (dst_u, dst_w) = (t.dst().join("u"), t.dst().join("u/w"));
        let walker = BeforePart {
            at: (m.dev(), m.ino()),
            nth,
            seen: Default::default(),
            act: std::sync::Mutex::new(Some(Box::new(move || {
                mv(user, &dst_w, &dst_u.join("w-old"));
                mv(user, &dst_u.join("v"), &dst_w);
            }))),
        };
        let walker = std::sync::Arc::new(walker);
        let out = run_lib(&t.src(), &t.dst(), |b| {
            b.wide_dir(4).walker(walker.clone());
        });
        assert!(
            walker.act.lock().unwrap().is_none(),
            "the swap never ran: {out:#?}"
        );
        // The victim's directory, now at u/w: as it was, nothing added.
        let now_w = t.dst().join("u/w");
        assert_eq!(attrs(&now_w), v_before, "{nth}: {out:#?}");
        let names: Vec<_> = std::fs::read_dir(&now_w)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"], "{nth}: {out:#?}");
        assert!(!cat(user, &now_w.join("secret")), "{nth}");
    }
}

/// The root itself wide: split, it syncs as rsync does (deletions at both
/// ends of the name space, type changes, hard links across parts and to
/// a subdirectory), its dry run itemizes as its real run, and a re-run
/// is clean.
#[test]
fn a_wide_root_is_split_as_rsync_syncs_it() {
    for wide in THRESHOLDS {
        each_config(&format!("rw_wide_root_{wide}"), |cfg, t| {
            boundary_source(&t.src());
            boundary_target(&t.dst());
            // Everything of `w` at the root.
            for side in [t.src(), t.dst()] {
                for e in std::fs::read_dir(side.join("w")).unwrap() {
                    let e = e.unwrap();
                    std::fs::rename(e.path(), side.join(e.file_name())).unwrap();
                }
                std::fs::remove_dir(side.join("w")).unwrap();
            }
            let opts = Opts {
                force: true,
                wide_dir: Some(wide),
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
            let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
            out.assert_ok();
            assert!(out.stat("dir_parts") >= 2, "{}", out.stats);
            assert_eq!(dry.sorted_items(), out.sorted_items());
            rsync_oracle_full_with(&t.src(), &t.dst(), &[]);
            assert_synced!(t.src(), t.dst());
            let again = cfg.sync_with(&t.src(), &t.dst(), &opts);
            again.assert_ok();
            assert!(again.itemized.is_empty(), "{:#?}", again.itemized);
        });
    }
}

/// On tmpfs (ADR 024: new files in a new directory written at their
/// names): split directories, new and existing, with hard links across
/// parts, in every configuration (scattered and redelivered too), sync
/// as rsync does and their dry runs itemize as their real runs.
#[test]
fn split_directories_on_tmpfs() {
    use crate::util::mounts::TestMount;
    for wide in [3, 16] {
        each_config(&format!("rw_tmpfs_{wide}"), |cfg, t| {
            let mnt = t.join("mnt");
            std::fs::create_dir_all(&mnt).unwrap();
            let _m = TestMount::tmpfs(&mnt, "64m").expect("tmpfs");
            let (src, dst, fresh) = (mnt.join("src"), mnt.join("dst"), mnt.join("fresh"));
            boundary_source(&src);
            boundary_target(&dst);
            let opts = Opts {
                force: true,
                wide_dir: Some(wide),
                ..Opts::delete()
            };
            let dry = Opts {
                dry_run: true,
                ..opts.clone()
            };
            for to in [&dst, &fresh] {
                let d = cfg.sync_with(&src, to, &dry);
                let out = cfg.sync_with(&src, to, &opts);
                out.assert_ok();
                assert!(out.stat("dir_parts") >= 2, "{}", out.stats);
                assert_eq!(d.sorted_items(), out.sorted_items(), "{}", to.display());
                rsync_oracle_full_with(&src, to, &[]);
                assert_synced!(src, to);
                let again = cfg.sync_with(&src, to, &opts);
                again.assert_ok();
                assert!(again.itemized.is_empty(), "{:#?}", again.itemized);
            }
        });
    }
}

/// Runs `chattr -R -i -a` on its paths when dropped (also on a panic), so
/// the test's trees can be removed.
struct Unlock(Vec<PathBuf>);

impl Drop for Unlock {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("chattr")
                .args(["-R", "-i", "-a"])
                .arg(p)
                .output();
        }
    }
}

/// An immutable wide directory, already synced (flags too), below a
/// parent another user owns: a no-op re-sync, split or not, succeeds with
/// nothing itemized, and the flag stays. (Found by this review: its
/// finish lifted it for the exact xattr check even when nothing had
/// changed, so every re-sync failed with "not lifted"; split, its own
/// task lifted it as for the parts' writes and failed once more.)
#[test]
fn a_synced_immutable_wide_directory_re_syncs_as_unsplit() {
    let t = TestDir::new("rw_immutable_wide_noop");
    std::fs::create_dir_all(t.src().join("u/w")).unwrap();
    for i in 0..20 {
        write(&t.src().join(format!("u/w/f{i:02}")), "x");
    }
    // `u`, and so its copy, another user's: it could move `w` in.
    std::os::unix::fs::chown(t.src().join("u"), Some(4242), Some(4242)).unwrap();
    let chattr = |p: &Path, f: &str| {
        let o = std::process::Command::new("chattr")
            .arg(f)
            .arg(p)
            .output()
            .unwrap();
        if !o.status.success() {
            return false;
        }
        true
    };
    let _unlock = Unlock(vec![t.src(), t.dst()]);
    if !chattr(&t.src().join("u/w"), "+i") {
        skip!("chattr +i is refused here");
    }
    let opts = Opts::delete();
    let first = sync_lib(&t.src(), &t.dst(), 4, &opts);
    first.assert_ok();
    let lsattr = |p: &Path| {
        let o = std::process::Command::new("lsattr")
            .arg("-d")
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        lsattr(&t.dst().join("u/w")).contains('i'),
        "the flag was not copied"
    );
    let whole = sync_lib(&t.src(), &t.dst(), 4, &opts);
    assert!(whole.itemized.is_empty(), "{:#?}", whole.itemized);
    let split = sync_lib(
        &t.src(),
        &t.dst(),
        4,
        &Opts {
            wide_dir: Some(4),
            ..opts.clone()
        },
    );
    assert!(split.stat("dir_parts") >= 2, "{}", split.stats);
    assert_eq!((whole.exit, &whole.errors), (0, &Vec::new()));
    assert_eq!((split.exit, &split.errors), (0, &Vec::new()));
    assert!(split.itemized.is_empty(), "{:#?}", split.itemized);
    assert!(lsattr(&t.dst().join("u/w")).contains('i'));
}

/// Every task delivered again (lossy or not), on three engines, 4
/// threads: the second delivery of a split directory's task finds a
/// union the first one's parts changed (their deletions). Parts are cut
/// at source names and named by them (ADR 021, "Redelivery"), so both
/// deliveries cut the same parts and each runs once; only parts of
/// target-only names may differ, and run twice, deleting. Cut every N
/// names of the union, as they were, the two deliveries' parts replaced
/// the same type-changed name at once and reported what the other did
/// ("mkdir: File exists", exit 1, the target exact) in about 1 run in
/// 1,000; 18 runs of this test after the change saw none (3,888 runs).
/// What this asserts: every run ends with the target exact, nothing lost
/// and no temporary left. A run whose exit status such a race spoiled
/// (every error one of an entry another part replaced or removed) is
/// printed rather than failed: the same race remains possible when the
/// source changes between deliveries; the cut itself is checked exactly
/// by `parts_are_cut_at_source_names` in psync-core.
#[test]
fn redelivered_splits_with_changing_unions_converge() {
    let (mut bad, mut raced) = (Vec::new(), Vec::new());
    let combos = [
        (false, 3),
        (true, 3),
        (false, 16),
        (true, 16),
        (false, 24),
        (true, 24),
    ];
    let mut runs = 0;
    for (round, (lossy, wide)) in (0..3).flat_map(|r| combos.map(|c| (r, c))) {
        for seed in 1..=12u64 {
            runs += 1;
            let t = TestDir::new(&format!("rw_redeliver_{lossy}_{wide}_{seed}_{round}"));
            boundary_source(&t.src());
            boundary_target(&t.dst());
            let (tx, rx) = crossbeam_channel::unbounded();
            let mut b = psync::builder(t.src(), t.dst());
            b.threads(4)
                .scatter(3, seed)
                .redeliver(1.0)
                .redeliver_lossy(lossy)
                .delete(true)
                .force(true)
                .wide_dir(wide)
                .events(tx);
            let report = b.build().and_then(|s| s.run()).expect("run");
            drop(b);
            let errors: Vec<_> = rx
                .iter()
                .filter_map(|e| match e {
                    psync::Event::Error { message, .. } => Some(message),
                    _ => None,
                })
                .collect();
            assert!(report.stats.dir_parts >= 4, "{:?}", report.stats);
            let diffs = crate::util::compare::differences(&t.src(), &t.dst(), &[]).0;
            let race = |m: &String| {
                [
                    "No such file or directory",
                    "Not a directory",
                    "File exists",
                    "Invalid argument",
                    "Directory not empty",
                    "a directory stands at this name now",
                    "is not the one just made",
                ]
                .iter()
                .any(|e| m.contains(e))
            };
            if !report.success() && diffs.is_empty() && errors.iter().all(race) {
                raced.push(format!(
                    "lossy {lossy}, wide {wide}, seed {seed}: {errors:?}"
                ));
                rsync_oracle_full_with(&t.src(), &t.dst(), &[]);
                crate::util::compare::assert_no_temps(&t.dst());
                continue;
            }
            if !report.success() || !diffs.is_empty() {
                bad.push(format!(
                    "lossy {lossy}, wide {wide}, seed {seed}: success {}, interrupted {}, stopped {:?}, failed {}, errors {errors:?}, {} differences {:?}",
                    report.success(),
                    report.interrupted,
                    report.stopped,
                    report.stats.failed,
                    diffs.len(),
                    diffs.iter().take(3).collect::<Vec<_>>()
                ));
                continue;
            }
            rsync_oracle_full_with(&t.src(), &t.dst(), &[]);
            crate::util::compare::assert_no_temps(&t.dst());
        }
    }
    eprintln!(
        "redelivered splits: {} of {runs} runs exact but with the known race's errors:\n{}",
        raced.len(),
        raced.join("\n")
    );
    assert!(
        bad.is_empty(),
        "{} of {runs} runs:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Wide on the target side only (a source of 10 names, a target of 40):
/// split, the same result, exit and itemized lines as unsplit, with and
/// without --delete, dry and real.
#[test]
fn wide_on_the_target_side_only() {
    for delete in [false, true] {
        let t = TestDir::new(&format!("rw_target_only_wide_{delete}"));
        let (src, dst) = (t.src(), t.dst());
        std::fs::create_dir_all(src.join("w")).unwrap();
        std::fs::create_dir_all(dst.join("w")).unwrap();
        for i in 0..10 {
            write(&src.join(format!("w/s{i}")), "source");
        }
        for i in 0..40 {
            write(&dst.join(format!("w/t{i:02}")), "target only");
        }
        write(&dst.join("w/s3"), "stale");
        std::fs::create_dir_all(dst.join("w/s5/in")).unwrap();
        let dst2 = t.join("dst2");
        copy_tree(&dst, &dst2);
        let opts = Opts {
            delete,
            force: true,
            ..Opts::default()
        };
        let split_opts = Opts {
            wide_dir: Some(20),
            ..opts.clone()
        };
        let dry = |o: &Opts| Opts {
            dry_run: true,
            ..o.clone()
        };
        let whole_dry = sync_lib(&src, &dst, 4, &dry(&opts));
        let split_dry = sync_lib(&src, &dst2, 4, &dry(&split_opts));
        assert!(split_dry.stat("dir_parts") >= 2, "{}", split_dry.stats);
        assert_eq!(whole_dry.sorted_items(), split_dry.sorted_items());
        let whole = sync_lib(&src, &dst, 4, &opts);
        let split = sync_lib(&src, &dst2, 4, &split_opts);
        whole.assert_ok();
        split.assert_ok();
        assert_eq!(whole.sorted_items(), split.sorted_items());
        assert_eq!(split_dry.sorted_items(), split.sorted_items());
        assert_eq!(shape(&dst), shape(&dst2));
    }
}

/// `--delete` after a source error in a split directory, on a real faulty
/// file system (found by this review: the warning said "nothing deleted
/// in this directory" while other parts deleted). Per part, as ADR 021
/// and what-works.md say: the part holding the name that cannot be
/// examined deletes nothing, and its warning names its range of names;
/// an extraneous name of another part is deleted (the source's listing
/// of names is complete, so its absence there is confirmed).
#[test]
fn a_source_error_in_a_split_directory_withholds_the_deletions_of_its_part() {
    use crate::util::faultfs::Fault;
    let t = TestDir::new("rw_source_error_split_withholds_its_part");
    let back = t.join("src-back");
    tree!(back, { "d/ok" => file("ok"), "d/flaky1" => file("new"), "e/f" => file("f") });
    for i in 0..10 {
        write(&back.join(format!("d/a{i}")), "a");
        write(&back.join(format!("d/z{i}")), "z");
    }
    tree!(t.dst(), {
        "d/flaky1" => file("old"),
        "d/aa-extra" => file("extra"),
        "d/m-extra" => file("extra"),
        "d/n-extra" => file("extra"),
        "d/zz-extra" => file("extra"),
        "e/extra" => file("extra"),
    });
    let fs = require_faultfs!(back, t.src(), [Fault::EioStat("/d/flaky*")]);
    let out = sync_lib(
        fs.path(),
        &t.dst(),
        4,
        &Opts {
            wide_dir: Some(16),
            ..Opts::delete()
        },
    );
    drop(fs);
    assert_eq!(out.exit, 1, "{out:#?}");
    assert!(out.stat("dir_parts") >= 2, "{}", out.stats);
    assert_eq!(crate::util::read(t.dst().join("d/flaky1")), b"old");
    assert!(
        !t.dst().join("e/extra").exists(),
        "other directories are synced"
    );
    // 22 source names, more than 16: parts of 2 (16 / 8) source names
    // each with the target-only names among them, and a part of their
    // own for every 2 target-only names: a0 a1, ..., a8 a9, then
    // aa-extra m-extra (their own), flaky1 n-extra ok, ..., z8 z9,
    // zz-extra: `n-extra` shares flaky1's part.
    assert!(
        t.dst().join("d/n-extra").exists(),
        "a name of the failed name's part was deleted: {:#?}",
        out.warnings
    );
    for gone in ["aa-extra", "m-extra", "zz-extra"] {
        assert!(!t.dst().join("d").join(gone).exists(), "{gone} kept");
    }
    let warned: Vec<&String> = out
        .warnings
        .iter()
        .filter(|w| w.contains("nothing deleted"))
        .collect();
    assert_eq!(warned.len(), 1, "{:#?}", out.warnings);
    assert!(
        warned[0].contains("from \"flaky1\" to \"ok\""),
        "the warning names the part's range: {}",
        warned[0]
    );
}
