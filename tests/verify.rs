//! `psync verify`: every kind of difference found and printed as `-i`
//! prints the change that fixes it, none after a sync, nothing written on
//! the target; `--manifest` written by a sync and checked later.

use crate::util::compare::assert_untouched;
use crate::util::run::{psync_cmd, sync_lib};
use crate::util::{Config, Front, TestDir, each_config, is_root, stat_snapshot};
use psync::Event;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// `psync verify SRC DST` in configuration `cfg`, with 1 MiB chunks:
/// the exit status (0 identical, 1 differences, 2 errors) and the lines
/// printed, in path order.
/// The library fronts fold the events as the CLI does.
fn verify(cfg: Config, src: &Path, dst: &Path) -> (i32, Vec<String>) {
    let mut lines = match cfg.front {
        Front::Cli => {
            // `verify` is `sync --verify-only`, which takes sync's options.
            let out = psync_cmd()
                .args(["sync", "--verify-only", "--chunk-size", "1M"])
                .args(["--threads", &cfg.threads.to_string()])
                .arg(src)
                .arg(dst)
                .output()
                .expect("run psync verify");
            let status = out.status.code().expect("exit status");
            let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
            // In path order already.
            return (status, stdout.lines().map(String::from).collect());
        }
        _ => Vec::new(),
    };
    let (events, result) = verify_events(cfg, src, dst, false);
    let mut diffs = psync::Differences::default();
    let mut errors = 0;
    for ev in &events {
        diffs.add(ev);
        errors += usize::from(matches!(ev, Event::Error { .. }));
    }
    lines.extend(diffs.events().iter().filter_map(Event::itemize_line));
    let status = match (result.is_ok() && errors == 0, lines.is_empty()) {
        (false, _) => 2,
        (true, true) => 0,
        (true, false) => 1,
    };
    (status, lines)
}

/// A library run with `verify_only` (and `manifest`) in `cfg`.
fn verify_events(
    cfg: Config,
    src: &Path,
    dst: &Path,
    manifest: bool,
) -> (Vec<Event>, Result<psync::Report, psync::Error>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut b = psync::builder(src, dst);
    cfg.apply(&mut b);
    // Files above 1 MiB compared chunk by chunk, by any engine.
    b.verify_only(true)
        .manifest(manifest)
        .chunk_size(1 << 20)
        .events(tx);
    let result = b.build().and_then(|s| s.run());
    drop(b);
    (rx.iter().collect(), result)
}

fn sh(cmd: &str, args: &[&str], path: &Path) {
    let st = Command::new(cmd).args(args).arg(path).status().unwrap();
    assert!(st.success(), "{cmd} {args:?} {}", path.display());
}

fn set_mtime(p: &Path, sec: i64) {
    set_mtime_ns(p, sec, 0);
}

fn set_mtime_ns(p: &Path, sec: i64, nsec: i64) {
    sh("touch", &["-h", "-d", &format!("@{sec}.{nsec:09}")], p);
}

/// Writes `data` to `p`, keeping its mtime to the nanosecond.
fn rewrite_keeping_mtime(p: &Path, data: &[u8]) {
    let m = fs::metadata(p).unwrap();
    fs::write(p, data).unwrap();
    set_mtime_ns(p, m.mtime(), m.mtime_nsec());
}

const T: i64 = 1_600_000_000;

/// One file `f` (and what the case adds), synced; then the target changed
/// by `change`: verify prints exactly `want` and exits 1.
fn case(
    cfg: Config,
    t: &TestDir,
    name: &str,
    setup: &dyn Fn(&Path),
    change: &dyn Fn(&Path),
) -> Vec<String> {
    let (src, dst) = (t.join(format!("{name}-src")), t.join(format!("{name}-dst")));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"0123456789").unwrap();
    set_mtime(&src.join("f"), T);
    setup(&src);
    sync_lib(&src, &dst, 2, &crate::util::Opts::default()).assert_ok();
    assert_eq!(
        verify(cfg, &src, &dst),
        (0, vec![]),
        "{name}: right after the sync"
    );
    // The root's mtime kept: each case one difference.
    let root = fs::metadata(&dst).unwrap();
    change(&dst);
    set_mtime_ns(&dst, root.mtime(), root.mtime_nsec());
    let (status, lines) = verify(cfg, &src, &dst);
    assert_eq!(status, 1, "{name}: {lines:?}");
    lines
}

#[test]
fn verify_finds_each_kind_of_difference() {
    if !is_root() {
        skip!("owner changes need root");
    }
    each_config("verify_finds_each_kind_of_difference", |cfg, t| {
        let none = |_: &Path| {};
        let f = |d: &Path| d.join("f");
        let lines = case(cfg, t, "content", &none, &|d| {
            fs::write(f(d), b"0123456780").unwrap();
            set_mtime(&f(d), T);
        });
        assert_eq!(lines, [">fc........ f"]);
        let lines = case(cfg, t, "mode", &none, &|d| {
            fs::set_permissions(f(d), fs::Permissions::from_mode(0o600)).unwrap();
        });
        assert_eq!(lines, [".f...p..... f"]);
        let lines = case(cfg, t, "owner", &none, &|d| {
            std::os::unix::fs::lchown(f(d), Some(4321), None).unwrap();
        });
        assert_eq!(lines, [".f....o.... f"]);
        let lines = case(cfg, t, "group", &none, &|d| {
            std::os::unix::fs::lchown(f(d), None, Some(4321)).unwrap();
        });
        assert_eq!(lines, [".f.....g... f"]);
        let lines = case(cfg, t, "mtime", &none, &|d| set_mtime(&f(d), T + 1));
        assert_eq!(lines, [".f..t...... f"]);
        let lines = case(cfg, t, "xattr", &none, &|d| {
            sh("setfattr", &["-n", "user.extra", "-v", "1"], &f(d));
        });
        assert_eq!(lines, [".f........x f"]);
        let lines = case(cfg, t, "acl", &none, &|d| {
            sh("setfacl", &["-m", "u:4321:r"], &f(d));
        });
        assert_eq!(lines, [".f.......a. f"]);
        // Directories: a dry run's own lines lack xattrs and ACLs, and the
        // root's line.
        let sub = |s: &Path| fs::create_dir(s.join("s")).unwrap();
        let lines = case(cfg, t, "dir-xattr", &sub, &|d| {
            sh("setfattr", &["-n", "user.extra", "-v", "1"], &d.join("s"));
        });
        assert_eq!(lines, [".d........x s/"]);
        let lines = case(cfg, t, "dir-acl", &sub, &|d| {
            sh("setfacl", &["-m", "u:4321:rx"], &d.join("s"));
        });
        assert_eq!(lines, [".d.......a. s/"]);
        let lines = case(cfg, t, "root", &none, &|d| {
            fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
            sh("setfattr", &["-n", "user.extra", "-v", "1"], d);
        });
        assert_eq!(lines, [".d...p....x ./"]);
        let lines = case(cfg, t, "missing", &none, &|d| {
            fs::remove_file(f(d)).unwrap()
        });
        assert_eq!(lines, [">f+++++++++ f"]);
        let node = |d: &Path, minor: u32| {
            let _ = fs::remove_file(d.join("dev"));
            let st = Command::new("mknod")
                .arg(d.join("dev"))
                .args(["c", "1", &minor.to_string()])
                .status()
                .unwrap();
            assert!(st.success());
            set_mtime(&d.join("dev"), T);
        };
        let lines = case(cfg, t, "device", &|s| node(s, 3), &|d| node(d, 5));
        assert_eq!(lines, ["cDc........ dev"]);
        let lines = case(cfg, t, "extra", &none, &|d| {
            fs::write(d.join("x"), b"x").unwrap()
        });
        assert_eq!(lines, ["*deleting   x"]);
        let symlink = |d: &Path, to: &str| {
            let _ = fs::remove_file(d.join("l"));
            std::os::unix::fs::symlink(to, d.join("l")).unwrap();
            set_mtime(&d.join("l"), T);
        };
        let lines = case(cfg, t, "symlink", &|s| symlink(s, "f"), &|d| {
            symlink(d, "g")
        });
        assert_eq!(lines, ["cLc........ l -> f"]);
        // Source groups {a, b} and {c, d}; the target's {a, c} and {b, d}:
        // every name in another group, nothing else different.
        let links = |s: &Path| {
            for n in ["a", "c"] {
                fs::write(s.join(n), b"same").unwrap();
                set_mtime(&s.join(n), T);
            }
            fs::hard_link(s.join("a"), s.join("b")).unwrap();
            fs::hard_link(s.join("c"), s.join("d")).unwrap();
        };
        let lines = case(cfg, t, "links", &links, &|d| {
            for (from, to) in [("a", "c"), ("b", "d")] {
                fs::remove_file(d.join(to)).unwrap();
                fs::hard_link(d.join(from), d.join(to)).unwrap();
            }
        });
        assert_eq!(
            lines,
            [
                "hf......... a => b",
                "hf......... b => a",
                "hf......... c => d",
                "hf......... d => c"
            ]
        );
    });
}

/// A sparse source file whose target holds the same bytes without the
/// hole: `>f.........` (the same bytes, copied again by a sync).
#[test]
fn verify_finds_a_filled_hole() {
    each_config("verify_finds_a_filled_hole", |cfg, t| {
        let size = 8u64 << 20;
        let sparse = |s: &Path| {
            let f = fs::File::create(s.join("s")).unwrap();
            f.set_len(size).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, b"end", size - 3).unwrap();
            drop(f);
            set_mtime(&s.join("s"), T);
        };
        let probe = t.join("probe");
        fs::create_dir(&probe).unwrap();
        sparse(&probe);
        if fs::metadata(probe.join("s")).unwrap().blocks() * 512 >= size {
            skip!("the test directory's file system keeps no holes");
        }
        let lines = case(cfg, t, "sparse", &sparse, &|d| {
            let data = fs::read(d.join("s")).unwrap();
            fs::remove_file(d.join("s")).unwrap();
            fs::write(d.join("s"), &data).unwrap();
            set_mtime(&d.join("s"), T);
        });
        assert_eq!(lines, [">f......... s"]);
    });
}

#[test]
fn verify_finds_nothing_after_a_sync() {
    each_config("verify_finds_nothing_after_a_sync", |cfg, t| {
        crate::basic::mixed_tree(&t.src());
        fs::write(t.src().join("linked"), b"one inode").unwrap();
        fs::hard_link(t.src().join("linked"), t.src().join("linked2")).unwrap();
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        assert_eq!(verify(cfg, &t.src(), &t.dst()), (0, vec![]));
        if cfg.front == Front::Cli {
            let out = psync_cmd()
                .arg("verify")
                .arg(t.src())
                .arg(t.dst())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0));
            assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
            return;
        }
        // Every regular file hashed (however often its task ran), with
        // the hash of its content: by verify, which compares, and by a
        // sync, which copies.
        let (events, result) = verify_events(cfg, &t.src(), &t.dst(), true);
        result.unwrap();
        assert_hashes(&t.src(), &events);
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut b = psync::builder(t.src(), t.join("fresh"));
        cfg.apply(&mut b);
        b.manifest(true).chunk_size(1 << 20).events(tx);
        let result = b.build().and_then(|s| s.run());
        drop(b);
        assert!(result.unwrap().success());
        assert_hashes(&t.src(), &rx.iter().collect::<Vec<_>>());
    });
}

/// `events` hold a `Hashed` for each regular file of `root` with the
/// hash of its content, and no other.
#[track_caller]
fn assert_hashes(root: &Path, events: &[Event]) {
    let mut hashed = std::collections::BTreeMap::new();
    for ev in events {
        if let Event::Hashed { path, hash, .. } = ev {
            hashed.insert(path.as_bytes().to_vec(), hash.clone());
        }
    }
    assert_eq!(
        hashed.keys().cloned().collect::<Vec<_>>(),
        regular_files(root)
    );
    for (path, hash) in hashed {
        let data = fs::read(root.join(Path::new(std::ffi::OsStr::from_bytes(&path)))).unwrap();
        let mut h = psync::Hasher::new();
        h.update(&data);
        assert_eq!(hash, format!("{:032x}", h.finish()));
    }
}

/// The relative paths of the regular files below `root`, sorted.
fn regular_files(root: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), Vec::<u8>::new())];
    while let Some((dir, rel)) = dirs.pop() {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let mut path = rel.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(e.file_name().as_bytes());
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                dirs.push((e.path(), path));
            } else if ft.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Against a read-only bind mount of the target: verify works (it
/// writes nothing: no temporaries, link area, markers), and the target's
/// entries keep their inodes, times and ctimes.
#[test]
fn verify_writes_nothing_on_a_read_only_target() {
    if !is_root() {
        skip!("bind mounts need root");
    }
    each_config("verify_writes_nothing_on_a_read_only_target", |cfg, t| {
        crate::basic::mixed_tree(&t.src());
        // Compared in 4 chunks; two of them will differ.
        fs::write(t.src().join("big"), vec![7u8; (3 << 20) + 5]).unwrap();
        fs::hard_link(t.src().join("big"), t.src().join("big2")).unwrap();
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        // A difference of content (same size and time) and an extra entry.
        let f = t.dst().join("big");
        let mut data = fs::read(&f).unwrap();
        data[1 << 20] ^= 1;
        data[3 << 20] ^= 1;
        rewrite_keeping_mtime(&f, &data);
        let root = fs::metadata(t.dst()).unwrap();
        fs::write(t.dst().join("extra"), b"x").unwrap();
        set_mtime_ns(&t.dst(), root.mtime(), root.mtime_nsec());
        let ro = t.join("ro");
        fs::create_dir(&ro).unwrap();
        let before = stat_snapshot(&t.dst());
        let m = crate::util::mounts::TestMount::read_only_bind(&t.dst(), &ro).expect("bind mount");
        let (status, lines) = verify(cfg, &t.src(), m.dir());
        drop(m);
        assert_untouched(&before, &stat_snapshot(&t.dst()), "psync verify");
        assert_eq!(status, 1, "{lines:?}");
        assert_eq!(
            lines,
            [">fc........ big", ">fc........ big2", "*deleting   extra"]
        );
    });
}

fn run(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = psync_cmd().args(args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.code().unwrap(), stdout)
}

/// `sync --manifest`, then `verify --manifest FILE DST`: nothing until a
/// byte changes (its mtime kept); names with a newline and bytes that
/// are not UTF-8 survive the file; `verify --manifest FILE SRC DST`
/// writes the same manifest.
#[test]
fn manifest_round_trip() {
    let t = TestDir::new("manifest_round_trip");
    crate::basic::mixed_tree(&t.src());
    let odd = std::ffi::OsStr::from_bytes(b"new\nline \\ \xff\xfe");
    fs::create_dir(t.src().join(odd)).unwrap();
    fs::write(t.src().join(odd).join(odd), b"odd").unwrap();
    let m1 = t.join("m1");
    let m2 = t.join("m2");
    let os = |p: &Path| p.as_os_str().to_owned();
    let (status, _) = run(&[
        "sync".as_ref(),
        "-q".as_ref(),
        "--manifest".as_ref(),
        &os(&m1),
        &os(&t.src()),
        &os(&t.dst()),
    ]);
    assert_eq!(status, 0);
    let text = fs::read_to_string(&m1).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), regular_files(&t.src()).len(), "{text}");
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| l.splitn(4, ' ').nth(3).unwrap().to_string());
    assert!(
        text.contains(" new\\x0aline \\\\ \\xff\\xfe/new\\x0aline \\\\ \\xff\\xfe\n"),
        "{text}"
    );
    let check = |file: &Path| {
        run(&[
            "verify".as_ref(),
            "--manifest".as_ref(),
            &os(file),
            &os(&t.dst()),
        ])
    };
    assert_eq!(check(&m1), (0, String::new()));
    // The same manifest from verify, which hashes while it compares.
    let (status, out) = run(&[
        "verify".as_ref(),
        "--manifest".as_ref(),
        &os(&m2),
        &os(&t.src()),
        &os(&t.dst()),
    ]);
    assert_eq!((status, out.as_str()), (0, ""));
    assert_eq!(fs::read_to_string(&m2).unwrap(), text);
    // One byte changed, its time kept; one file gone, one added.
    rewrite_keeping_mtime(&t.dst().join(odd).join(odd), b"odD");
    fs::remove_file(t.dst().join("small")).unwrap();
    fs::write(t.dst().join("added"), b"").unwrap();
    let (status, out) = check(&m1);
    assert_eq!(status, 1, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "*deleting   added",
            ">fc........ new\\#012line \\ \\#377\\#376/new\\#012line \\ \\#377\\#376",
            ">f+++++++++ small",
        ]
    );
    // A size and a time.
    fs::write(t.dst().join("empty"), b"now longer").unwrap();
    set_mtime(&t.dst().join("page"), 5);
    let (_, out) = check(&m1);
    assert!(
        out.contains(">f.st...... empty\n") && out.contains(".f..t...... page\n"),
        "{out}"
    );
}

/// Exit status 2, not 1, when verify cannot compare: a missing source,
/// a manifest it cannot parse, one path without a manifest, a broker.
#[test]
fn verify_errors_are_not_differences() {
    let t = TestDir::new("verify_errors_are_not_differences");
    fs::write(t.src().join("f"), b"x").unwrap();
    fs::create_dir(t.dst()).unwrap();
    let os = |p: &Path| p.as_os_str().to_owned();
    let stderr_of = |args: &[std::ffi::OsString]| {
        let out = psync_cmd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = t.join("missing");
    stderr_of(&["verify".into(), os(&missing), os(&t.dst())]);
    let bad = t.join("bad");
    fs::write(&bad, "# psync manifest 1\nnot a line\n").unwrap();
    let err = stderr_of(&["verify".into(), "--manifest".into(), os(&bad), os(&t.dst())]);
    assert!(err.contains("line 2: not a manifest line"), "{err}");
    let err = stderr_of(&["verify".into(), os(&t.dst())]);
    assert!(err.contains("--manifest FILE DST"), "{err}");
    for flag in [&["--verify-only"][..], &["--manifest", "m"]] {
        let mut args: Vec<std::ffi::OsString> = ["sync", "--broker", "redis://127.0.0.1:1"]
            .map(Into::into)
            .to_vec();
        args.extend(flag.iter().map(Into::into));
        args.extend([os(&t.src()), os(&t.join("new"))]);
        let err = stderr_of(&args);
        assert!(err.contains("is not supported with a broker"), "{err}");
        assert!(!t.join("new").exists());
    }
    assert!(!t.dst().join("f").exists(), "verify wrote nothing");
}

/// Entries named like psync's temporaries, part files and link areas,
/// left in the target by an earlier run (or put there by a user): the
/// source has no such entries, so the trees differ (a sync removes
/// them). A run hides them from its plan; verify must not.
#[test]
fn verify_finds_stale_temporaries_and_parts() {
    each_config("verify_finds_stale_temporaries_and_parts", |cfg, t| {
        fs::create_dir(t.src().join("sub")).unwrap();
        fs::write(t.src().join("sub/f"), b"f").unwrap();
        cfg.sync(&t.src(), &t.dst()).assert_ok();
        let keep = |p: &Path, add: &dyn Fn()| {
            let m = fs::metadata(p).unwrap();
            add();
            set_mtime_ns(p, m.mtime(), m.mtime_nsec());
        };
        let id = "0123456789abcdef";
        keep(&t.dst(), &|| {
            fs::write(t.dst().join(format!(".psync-tmp.{id}.x")), b"stale").unwrap();
            fs::create_dir(t.dst().join(format!(".psync-tmp.{id}.links"))).unwrap();
        });
        let sub = t.dst().join("sub");
        keep(&sub, &|| {
            fs::write(sub.join(format!(".psync-part.{id}")), b"part").unwrap();
            fs::write(sub.join(format!(".psync-part.{id}.journal")), b"j").unwrap();
        });
        let (status, lines) = verify(cfg, &t.src(), &t.dst());
        assert_eq!(
            (status, lines),
            (
                1,
                vec![
                    format!("*deleting   .psync-tmp.{id}.links/"),
                    format!("*deleting   .psync-tmp.{id}.x"),
                    format!("*deleting   sub/.psync-part.{id}"),
                    format!("*deleting   sub/.psync-part.{id}.journal"),
                ]
            )
        );
    });
}

/// A run that does not finish (here stopped by `--max-errors 1`) keeps
/// the older manifest rather than writing part of one, and says so.
#[test]
fn an_unfinished_run_keeps_the_older_manifest() {
    let t = TestDir::new("an_unfinished_run_keeps_the_older_manifest");
    let (src, dst) = (t.src(), t.dst());
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("x"), b"now a file").unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("f{i}")), b"data").unwrap();
    }
    fs::create_dir_all(dst.join("x")).unwrap();
    fs::write(dst.join("x/keep.o"), b"excluded").unwrap();
    let m = t.join("manifest");
    fs::write(&m, b"# an older manifest\n").unwrap();
    let o = crate::util::run::run_cli(
        &[
            "--exclude=*.o",
            "--max-errors",
            "1",
            "--threads",
            "1",
            &format!("--manifest={}", m.display()),
        ],
        &src,
        &dst,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("not written, the run did not finish"), "{err}");
    assert_eq!(fs::read(&m).unwrap(), b"# an older manifest\n");
}
