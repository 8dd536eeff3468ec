//! A file bind-mounted inside DST (`mount --bind /outside/file DST/f`) is
//! someone else's file: psync never sets its owner, mode, xattrs or times
//! through the mount, never replaces nor deletes it, and reports one error
//! naming it as a mount point; everything else is synced.

use crate::util::{Opts, compare::xattrs_of, each_config};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file or directory bind-mounted at a path for the life of the guard.
struct BindMount(PathBuf);

impl BindMount {
    fn at(from: &Path, at: &Path) -> BindMount {
        let st = Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(at)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount --bind {} {}",
            from.display(),
            at.display()
        );
        BindMount(at.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Everything about the outside file a run could change.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    ino: u64,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, i64),
    ctime: (i64, i64),
    nlink: u64,
    data: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn snapshot(p: &Path) -> Snapshot {
    let m = p.symlink_metadata().unwrap();
    Snapshot {
        ino: m.ino(),
        mode: m.mode(),
        owner: (m.uid(), m.gid()),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        nlink: m.nlink(),
        data: std::fs::read(p).unwrap(),
        xattrs: xattrs_of(p),
    }
}

/// How SRC/f differs from the file mounted at DST/f, and the options.
#[derive(Clone, Copy, Debug)]
enum Case {
    /// Same data, other owner, mode (setuid 4777), xattrs and mtime.
    Attrs,
    /// Other data too.
    Content,
    /// SRC/f absent, `--delete`.
    Delete,
    /// As `Content`, a dry run (`-n -i`): nothing itemized for it.
    DryRun,
    /// SRC/f a directory with contents, `--force --delete`.
    TypeChange,
}

/// Runs one case with a file outside SRC and DST bind-mounted at DST/f;
/// checks the exit code, the one error, the outside file, and the rest.
fn run_case(case: Case, name: &str) {
    if !crate::util::is_root() {
        skip!("mount --bind needs root");
    }
    each_config(name, |cfg, t| {
        let outside = t.join("outside/file");
        tree!(t.path(), {
            "outside/file" => file("theirs") mode(0o640) owner(1234, 4321)
                xattr("user.theirs", "1") mtime(1_500_000_000, 7),
        });
        tree!(t.src(), { "other" => file("o"), "d/g" => file("g") mode(0o600) });
        match case {
            Case::Attrs => tree!(t.src(), {
                "f" => file("theirs") mode(0o4777) owner(0, 0) xattr("user.ours", "2")
                    mtime(1_600_000_000, 5),
            }),
            Case::Content | Case::DryRun => tree!(t.src(), {
                "f" => file("ours, longer") mode(0o4777) mtime(1_600_000_000, 5),
            }),
            Case::Delete => {}
            Case::TypeChange => tree!(t.src(), { "f/inner" => file("i") }),
        }
        tree!(t.dst(), { "f" => file(""), "extra" => file("x") });
        let _m = BindMount::at(&outside, &t.dst().join("f"));
        let before = snapshot(&outside);
        let opts = Opts {
            delete: matches!(case, Case::Delete | Case::TypeChange),
            force: matches!(case, Case::TypeChange),
            dry_run: matches!(case, Case::DryRun),
            ..Opts::default()
        };
        let out = cfg.sync_with(&t.src(), &t.dst(), &opts);
        assert_eq!(out.exit, 1, "{case:?}: {out:#?}");
        let dst_f = t.dst().join("f").display().to_string();
        assert_eq!(out.errors.len(), 1, "{case:?}: {:#?}", out.errors);
        assert!(
            out.errors[0].contains(&dst_f) && out.errors[0].contains("mount point"),
            "{case:?}: {:#?}",
            out.errors
        );
        assert!(
            !out.itemized
                .iter()
                .any(|l| l.ends_with(" f") || l.contains(" f/")),
            "{case:?}: itemized the mount point: {:#?}",
            out.itemized
        );
        assert_eq!(out.stat("failed"), 1, "{case:?}: {}", out.stats);
        assert_eq!(
            snapshot(&outside),
            before,
            "{case:?}: the outside file changed"
        );
        assert_eq!(snapshot(&t.dst().join("f")), before, "{case:?}");
        if let Case::DryRun = case {
            assert!(
                out.itemized.iter().any(|l| l.ends_with(" other")),
                "{out:#?}"
            );
            assert!(!t.dst().join("other").exists());
        } else {
            let extra = if opts.delete { vec![] } else { vec!["extra"] };
            assert_eq!(t.dst().join("extra").exists(), !opts.delete, "{case:?}");
            crate::util::compare::assert_synced_impl(
                &t.src(),
                &t.dst(),
                &[b"f".as_slice()]
                    .into_iter()
                    .chain(extra.iter().map(|s| s.as_bytes()))
                    .collect::<Vec<_>>(),
            );
        }
    });
}

#[test]
fn bind_mounted_file_attrs_are_not_set_through_the_mount() {
    run_case(Case::Attrs, "bind_mounted_file_attrs");
}

#[test]
fn bind_mounted_file_is_not_replaced_when_content_differs() {
    run_case(Case::Content, "bind_mounted_file_content");
}

#[test]
fn bind_mounted_file_is_not_deleted() {
    run_case(Case::Delete, "bind_mounted_file_delete");
}

#[test]
fn bind_mounted_file_is_not_itemized_in_a_dry_run() {
    run_case(Case::DryRun, "bind_mounted_file_dry_run");
}

#[test]
fn bind_mounted_file_is_not_replaced_by_a_directory() {
    run_case(Case::TypeChange, "bind_mounted_file_type_change");
}

/// `--delete` of a directory that holds a bind-mounted file removes what
/// it can and stops at the mount point with an error naming it (not a bare
/// EBUSY); the outside file is untouched and not itemized as deleted.
#[test]
fn bind_mounted_file_inside_a_deleted_directory_stays() {
    if !crate::util::is_root() {
        skip!("mount --bind needs root");
    }
    each_config("bind_mounted_file_in_deleted_dir", |cfg, t| {
        let outside = t.join("outside/file");
        tree!(t.path(), { "outside/file" => file("theirs") xattr("user.theirs", "1") });
        tree!(t.src(), { "keep" => file("k") });
        tree!(t.dst(), { "gone/sub/f" => file(""), "gone/sub/z" => file("z") });
        let _m = BindMount::at(&outside, &t.dst().join("gone/sub/f"));
        let before = snapshot(&outside);
        let out = cfg.sync_with(&t.src(), &t.dst(), &Opts::delete());
        assert_eq!(out.exit, 1, "{out:#?}");
        assert_eq!(out.errors.len(), 1, "{:#?}", out.errors);
        assert!(
            out.errors[0].contains("gone/sub/f is a mount point"),
            "{:#?}",
            out.errors
        );
        assert!(
            !out.itemized.iter().any(|l| l.ends_with("gone/sub/f")),
            "{:#?}",
            out.itemized
        );
        assert_eq!(snapshot(&outside), before, "the outside file changed");
        assert_eq!(crate::util::read(t.dst().join("keep")), b"k");
    });
}
