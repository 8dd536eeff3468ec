//! Fidelity on real file systems: everything `rsync -aHAXS` keeps (link
//! groups, holes, xattrs of every namespace, ACLs, special files, setuid
//! bits, ns times, odd symlinks), synced between loop-mounted ext4, XFS
//! (reflink), btrfs and tmpfs, on one file system and across (see
//! `util::mounts`); and what only real file systems show: reflinks, an
//! attribute the target cannot hold, whole-second timestamps.
//!
//! Every pair runs the same body; a pair that fails does not stop the
//! others, and the test then panics with every failure. After each sync:
//! `assert_synced!`, the full rsync oracle (`-aHAXS --numeric-ids
//! --delete -n -i`), the checks rsync cannot make (hard link groups
//! inode by inode, allocated blocks of sparse files), and a second run that
//! copies nothing and touches nothing. XFS shows each ACL twice (see
//! [`Case::norm`]); the comparisons allow for that.
//!
//! Needs root (loop mounts); skips with the reason otherwise, fails under
//! `CI=true` (see `util::mounts`).

use crate::util::compare::show as show_rel;
use crate::util::compare::{
    assert_no_new_temps, assert_untouched, listing, stat_snapshot, temp_like, xattrs_of,
};
use crate::util::mounts::{self, Fs, Scratch};
use crate::util::run::{Config, Front, Outcome, json_lines, run_cli};
use crate::util::tree::{self, Node, hardlink, random, random_bytes, set_mtime};
use crate::util::{join_rel, read, rsync_oracle_full_with};
use psync::{AttrMode, Event, Reflink};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Each kind onto itself, and three crossings. (ext4 with 128-byte
/// inodes, whole-second times, has its own test.)
const PAIRS: [(Fs, Fs); 7] = [
    (Fs::Ext4, Fs::Ext4),
    (Fs::Xfs, Fs::Xfs),
    (Fs::Btrfs, Fs::Btrfs),
    (Fs::Tmpfs, Fs::Tmpfs),
    (Fs::Xfs, Fs::Ext4),
    (Fs::Btrfs, Fs::Tmpfs),
    (Fs::Ext4, Fs::Xfs),
];

/// A fixed time with nanoseconds, for fixtures.
const T: i64 = 1_650_000_000;

// ---------------------------------------------------------------------
// Running a body on every pair

/// One pair and configuration: where the trees are and how to sync them.
struct Case<'a> {
    cfg: Config,
    s: &'a Scratch,
    from: Fs,
    to: Fs,
}

/// Runs `body` for every pair and configuration, each in fresh scratch
/// directories; collects the failures and panics with all of them.
fn each_pair(test: &str, pairs: &[(Fs, Fs)], configs: &[Config], body: impl Fn(&Case)) {
    let m = match mounts::shared() {
        Ok(m) => m,
        Err(why) => {
            assert!(
                !mounts::must_have_mounts(),
                "CI=true but {test} cannot mount file systems: {why} \
                 (PSYNC_TEST_NO_MOUNTS=1 skips on purpose)"
            );
            eprintln!("SKIPPED {test}: {why}");
            return;
        }
    };
    let mut failed = Vec::new();
    for &(from, to) in pairs {
        for cfg in selected(configs) {
            let label = format!("{from} -> {to} [{cfg}]");
            let s = match m.scratch(test, from, to) {
                Ok(s) => s,
                Err(why) if mounts::must_have_mounts() => {
                    failed.push(format!("{label}: file system unavailable under CI: {why}"));
                    continue;
                }
                Err(why) => {
                    eprintln!("SKIPPED {test} {label}: {why}");
                    continue;
                }
            };
            eprintln!("=== {test} {label}");
            let case = Case {
                cfg,
                s: &s,
                from,
                to,
            };
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| body(&case))) {
                failed.push(format!("{label}: {}", panic_text(&*p)));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{test} failed on {} pair(s):\n\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

/// `configs`, less the frontends `PSYNC_TEST_FRONTS` leaves out.
fn selected(configs: &[Config]) -> Vec<Config> {
    let only = std::env::var("PSYNC_TEST_FRONTS").unwrap_or_default();
    configs
        .iter()
        .copied()
        .filter(|c| c.selected(&only))
        .collect()
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

// ---------------------------------------------------------------------
// Syncing with the options these tests vary

/// Options beyond `util::run::Opts` (every run here is `--delete`).
#[derive(Debug, Clone, Copy)]
struct X {
    reflink: Reflink,
    xattrs: AttrMode,
    acls: AttrMode,
    /// Files over 1 MiB in 1 MiB chunks with a resume journal
    /// (`--chunk-size 1M --resume-threshold 1M`).
    small_chunks: bool,
}

impl X {
    /// Everything default.
    const DEFAULT: X = X {
        reflink: Reflink::Auto,
        xattrs: AttrMode::Auto,
        acls: AttrMode::Auto,
        small_chunks: false,
    };

    /// `-X -A`: xattrs and ACLs required, and compared on every run.
    const EXACT: X = X {
        reflink: Reflink::Auto,
        xattrs: AttrMode::Required,
        acls: AttrMode::Required,
        small_chunks: false,
    };

    fn reflink(r: Reflink) -> X {
        X {
            reflink: r,
            ..X::DEFAULT
        }
    }
}

impl Case<'_> {
    fn src(&self) -> PathBuf {
        self.s.src()
    }

    fn dst(&self) -> PathBuf {
        self.s.dst()
    }

    /// One `--delete` run; errors and warnings as `PATH: MESSAGE`, the
    /// report's `modify_window_ns` among the stats. Checks no temporaries.
    fn sync(&self, x: X) -> Outcome {
        let (src, dst) = (self.src(), self.dst());
        let before = temp_like(&dst);
        let out = match self.cfg.front {
            Front::Lib | Front::Scatter => sync_lib(&src, &dst, self.cfg, x),
            Front::Cli => sync_cli(&src, &dst, self.cfg.threads, x),
        };
        assert_no_new_temps(&src, &dst, &before);
        out
    }

    /// How the trees compare: XFS lists each ACL a second time, as
    /// `trusted.SGI_ACL_*` (its on-disk form, shown to root), so those
    /// names are left out on the XFS side.
    fn norm(&self, whole_seconds: bool) -> Norm {
        Norm {
            whole_seconds,
            src_xfs: self.from == Fs::Xfs,
            dst_xfs: self.to == Fs::Xfs,
        }
    }

    /// The same XFS ACL names left out of the rsync oracle (rsync 3.2.7
    /// itself copies them as plain xattrs, and then finds an ext4 source's
    /// files differ from their XFS copies).
    fn oracle_filters(&self) -> &'static [&'static str] {
        if self.from == Fs::Xfs || self.to == Fs::Xfs {
            &[
                "--filter=-x trusted.SGI_ACL_FILE",
                "--filter=-x trusted.SGI_ACL_DEFAULT",
            ]
        } else {
            &[]
        }
    }

    /// The checks after every complete sync: the trees compare equal, link
    /// groups map one to one, holes stay holes, rsync finds nothing to do.
    #[track_caller]
    fn assert_faithful(&self) {
        let (src, dst) = (self.src(), self.dst());
        // assert_synced! compares xattr lists verbatim; with XFS on one side
        // only, its ACL aliases (`trusted.SGI_ACL_*`, which psync does not
        // copy) are extra there, and the normalized comparison stands in.
        if (self.from == Fs::Xfs) == (self.to == Fs::Xfs) {
            assert_synced!(src, dst);
        }
        assert_same_trees(&src, &dst, self.norm(false));
        assert_link_groups(&src, &dst);
        assert_holes_kept(&src, &dst);
        rsync_oracle_full_with(&src, &dst, self.oracle_filters());
    }

    /// A run now copies nothing, itemizes nothing and changes no target
    /// entry below the root.
    #[track_caller]
    fn assert_no_op(&self, what: &str) {
        let mut before = stat_snapshot(&self.dst());
        let out = self.sync(X::DEFAULT);
        out.assert_ok();
        assert!(
            out.itemized.is_empty(),
            "{what}: itemized {:#?}",
            out.itemized
        );
        assert_eq!(out.stat("bytes_copied"), 0, "{what}: copied data");
        let mut after = stat_snapshot(&self.dst());
        before.remove(&Vec::new());
        after.remove(&Vec::new());
        assert_untouched(&before, &after, what);
    }
}

fn sync_lib(src: &Path, dst: &Path, cfg: Config, x: X) -> Outcome {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut b = psync::builder(src, dst);
    cfg.apply(&mut b);
    b.delete(true)
        .itemize(true)
        .reflink(x.reflink)
        .xattrs(x.xattrs)
        .acls(x.acls)
        .events(tx);
    if x.small_chunks {
        b.chunk_size(1 << 20).resume_threshold(1 << 20);
    }
    let result = b.build().and_then(|s| s.run());
    drop(b); // the last sender
    let mut out = Outcome::default();
    for ev in rx {
        match &ev {
            Event::Itemize { .. } => out.itemized.push(ev.itemize_line().expect("line")),
            Event::Error { path, message, .. } => out.errors.push(format!("{path}: {message}")),
            Event::Warning { path, message, .. } => {
                out.warnings.push(format!("{path}: {message}"));
            }
            _ => {}
        }
    }
    match result {
        Ok(r) => {
            out.exit = if r.success() {
                0
            } else if r.interrupted {
                2
            } else {
                1
            };
            out.stats = serde_json::to_value(r.stats).expect("stats as JSON");
            out.stats["modify_window_ns"] = r.modify_window_ns.into();
        }
        Err(e) => {
            out.exit = 2;
            out.errors.push(e.to_string());
        }
    }
    out
}

fn sync_cli(src: &Path, dst: &Path, threads: usize, x: X) -> Outcome {
    let threads = threads.to_string();
    let mut args = vec!["--json", "-i", "--delete", "--threads", &threads];
    args.extend(cli_flags(x));
    let o = run_cli(&args, src, dst);
    let mut out = Outcome {
        exit: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        ..Outcome::default()
    };
    let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    for ev in json_lines(&out.stdout) {
        let located = || format!("{}: {}", text(&ev["path"]), text(&ev["message"]));
        match ev["event"].as_str() {
            Some("itemize") => out.itemized.push(text(&ev["line"])),
            Some("error") => out.errors.push(located()),
            Some("warning") => out.warnings.push(located()),
            Some("summary") => out.stats = ev.clone(),
            _ => {}
        }
    }
    if out.exit == 2 && out.errors.is_empty() {
        out.errors.push(out.stderr.clone());
    }
    out
}

/// The CLI flags for `x` (nothing for defaults).
fn cli_flags(x: X) -> Vec<&'static str> {
    let mut v = Vec::new();
    if x.small_chunks {
        v.extend(["--chunk-size=1M", "--resume-threshold=1M"]);
    }
    match x.reflink {
        Reflink::Always => v.push("--reflink=always"),
        Reflink::Never => v.push("--reflink=never"),
        _ => {}
    }
    match x.xattrs {
        AttrMode::Required => v.push("-X"),
        AttrMode::Off => v.push("--no-xattrs"),
        _ => {}
    }
    match x.acls {
        AttrMode::Required => v.push("-A"),
        AttrMode::Off => v.push("--no-acls"),
        _ => {}
    }
    v
}

// ---------------------------------------------------------------------
// Comparisons rsync does not make

/// Every source inode's paths lead to one target inode, different source
/// inodes to different target inodes, and each target inode has exactly
/// the links its source has in the tree.
#[track_caller]
fn assert_link_groups(src: &Path, dst: &Path) {
    let (ls, ld) = (listing(src), listing(dst));
    let mut groups: BTreeMap<u64, Vec<&[u8]>> = BTreeMap::new();
    for (rel, m) in ls.iter().filter(|(_, m)| m.kind == 'f') {
        groups.entry(m.ino).or_default().push(rel);
    }
    let mut owner_of: BTreeMap<u64, &[u8]> = BTreeMap::new(); // target ino -> a source path
    let mut problems = Vec::new();
    for paths in groups.values() {
        let shown = || {
            paths
                .iter()
                .map(|p| show_rel(p))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let targets: BTreeSet<(u64, u64)> = paths
            .iter()
            .filter_map(|p| ld.get(*p).filter(|m| m.kind == 'f'))
            .map(|m| (m.ino, m.nlink))
            .collect();
        if targets.len() != 1 {
            problems.push(format!(
                "source group [{}] maps to {} target inodes {targets:?}",
                shown(),
                targets.len()
            ));
        }
        for &(ino, nlink) in &targets {
            if nlink != paths.len() as u64 {
                problems.push(format!(
                    "target inode {ino} of [{}] has {nlink} links, want {}",
                    shown(),
                    paths.len()
                ));
            }
            if let Some(other) = owner_of.insert(ino, paths[0]) {
                problems.push(format!(
                    "target inode {ino} is shared by [{}] and by {}, separate in the source",
                    shown(),
                    show_rel(other)
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "hard link groups differ ({} -> {}):\n{}",
        src.display(),
        dst.display(),
        problems.join("\n")
    );
}

/// Regular files' allocated space in the target is at most the source's
/// plus one block per data extent (an unaligned extent may round up).
#[track_caller]
fn assert_holes_kept(src: &Path, dst: &Path) {
    let mut problems = Vec::new();
    for (rel, m) in listing(src).iter().filter(|(_, m)| m.kind == 'f') {
        let (sp, dp) = (join_rel(src, rel), join_rel(dst, rel));
        let (sm, dm) = (meta(&sp), meta(&dp));
        let extents = data_extents(&sp);
        let allowed = sm.blocks() * 512 + extents * sm.blksize().max(dm.blksize());
        if dm.blocks() * 512 > allowed {
            problems.push(format!(
                "{}: {} bytes long, {} extents, source allocates {}, target {} (allowed {allowed})",
                show_rel(rel),
                m.size,
                extents,
                sm.blocks() * 512,
                dm.blocks() * 512
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "target files allocate more than their source ({} -> {}):\n{}",
        src.display(),
        dst.display(),
        problems.join("\n")
    );
}

fn meta(p: &Path) -> std::fs::Metadata {
    p.symlink_metadata()
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

/// Data extents of a file as SEEK_DATA/SEEK_HOLE see them.
fn data_extents(p: &Path) -> u64 {
    use rustix::fs::{SeekFrom, seek};
    let f = std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let (len, mut off, mut n) = (meta(p).len(), 0, 0);
    while off < len {
        let Ok(start) = seek(&f, SeekFrom::Data(off)) else {
            break; // ENXIO: only a hole is left
        };
        off = seek(&f, SeekFrom::Hole(start)).expect("SEEK_HOLE");
        n += 1;
    }
    n
}

/// How [`assert_same_trees`] normalizes before comparing.
#[derive(Debug, Clone, Copy)]
struct Norm {
    /// Compare mtimes to the second (a target that keeps no more).
    whole_seconds: bool,
    /// The source is on XFS: drop its `trusted.SGI_ACL_*` aliases.
    src_xfs: bool,
    /// The target is on XFS: the same.
    dst_xfs: bool,
}

/// XFS's names for the ACLs it also lists as `system.posix_acl_*`.
const XFS_ACL_ALIASES: [&[u8]; 2] = [b"trusted.SGI_ACL_FILE", b"trusted.SGI_ACL_DEFAULT"];

/// Everything `assert_synced!` compares but link groups (see
/// [`assert_link_groups`]), after normalizing as `norm` says.
#[track_caller]
fn assert_same_trees(src: &Path, dst: &Path, norm: Norm) {
    let normalized = |root: &Path, xfs: bool| {
        listing(root)
            .into_iter()
            .map(|(rel, mut m)| {
                if norm.whole_seconds {
                    m.mtime.1 = 0;
                }
                if xfs {
                    m.xattrs
                        .retain(|(n, _)| !XFS_ACL_ALIASES.contains(&n.as_slice()));
                }
                (m.ino, m.link_group) = (0, None);
                if m.kind == 'd' {
                    (m.size, m.nlink) = (0, 0); // differ between file systems
                }
                (rel, m)
            })
            .collect::<BTreeMap<_, _>>()
    };
    let (ls, ld) = (normalized(src, norm.src_xfs), normalized(dst, norm.dst_xfs));
    let mut diffs: Vec<String> = ls
        .iter()
        .filter(|(rel, m)| ld.get(*rel) != Some(m))
        .map(|(rel, m)| {
            format!(
                "{}:\n  src {}\n  dst {}",
                show_rel(rel),
                brief(m),
                ld.get(rel).map_or_else(|| "missing".into(), brief)
            )
        })
        .collect();
    diffs.extend(
        ld.keys()
            .filter(|rel| !ls.contains_key(*rel))
            .map(|rel| format!("extra in dst: {}", show_rel(rel))),
    );
    for (rel, _) in ls.iter().filter(|(_, m)| m.kind == 'f') {
        let (a, b) = (join_rel(src, rel), join_rel(dst, rel));
        if b.is_file() && read(&a) != read(&b) {
            diffs.push(format!("{}: content differs", show_rel(rel)));
        }
    }
    assert!(
        diffs.is_empty(),
        "trees differ ({} -> {}, {norm:?}):\n{}",
        src.display(),
        dst.display(),
        diffs.join("\n")
    );
}

/// One line of what [`assert_same_trees`] compares.
fn brief(m: &crate::util::compare::Meta) -> String {
    let xattrs: Vec<String> = m
        .xattrs
        .iter()
        .map(|(n, v)| {
            let head = show_rel(&v[..v.len().min(24)]);
            format!("{}={head}..({} bytes)", show_rel(n), v.len())
        })
        .collect();
    format!(
        "{} {:04o} {}:{} size {} mtime {}.{:09} nlink {} rdev {:#x} link {:?} xattrs [{}]",
        m.kind,
        m.mode,
        m.uid,
        m.gid,
        m.size,
        m.mtime.0,
        m.mtime.1,
        m.nlink,
        m.rdev,
        m.link.as_deref().map(show_rel),
        xattrs.join(", ")
    )
}

// ---------------------------------------------------------------------
// Fixtures

/// 30 link groups of 3 or 4 links, spread over 10 directories so that
/// no directory holds a whole group, and 10 files with one link.
fn link_groups(root: &Path) {
    let mut nodes = Vec::new();
    for g in 0..30u32 {
        let first = format!("links/d{}/g{g:02}-0", g % 10);
        nodes.push(Node::at(&first, random(1000 + 97 * u64::from(g))).mtime(T, g * 1000 + 7));
        for k in 1..3 + g % 2 {
            let at = format!("links/d{}/g{g:02}-{k}", (g + 3 * k) % 10);
            nodes.push(Node::at(at, hardlink(&first)));
        }
    }
    for i in 0..10u32 {
        nodes.push(Node::at(format!("links/d{i}/solo"), random(700)).mtime(T, i));
    }
    tree::build(root, nodes);
}

/// Sparse files of several MiB: a hole in the middle, a hole at the end,
/// nothing but a hole, and several data extents (one unaligned).
fn sparse_files(root: &Path) {
    const MIB: u64 = 1 << 20;
    let dir = root.join("sparse");
    std::fs::create_dir_all(&dir).expect("mkdir sparse");
    write_sparse(
        &dir.join("middle"),
        8 * MIB,
        &[(0, 4096), (8 * MIB - 4096, 4096)],
    );
    write_sparse(&dir.join("end"), 6 * MIB, &[(0, 64 << 10)]);
    write_sparse(&dir.join("all"), 4 * MIB, &[]);
    write_sparse(
        &dir.join("multi"),
        5 * MIB,
        &[(0, 4096), (MIB, 64 << 10), (3 * MIB + 5, 10)],
    );
    for (i, name) in ["middle", "end", "all", "multi"].iter().enumerate() {
        set_mtime(&dir.join(name), T, 100 + i as u32);
    }
}

/// A file of `len` bytes with random data at each `(offset, length)`.
fn write_sparse(p: &Path, len: u64, data: &[(u64, u64)]) {
    let f = std::fs::File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    f.set_len(len).expect("set_len");
    for &(off, n) in data {
        f.write_all_at(&random_bytes(off ^ len, n), off)
            .expect("write");
    }
}

/// A value that is not text: every byte, 3000 of them (ext4 keeps up to
/// a block per file, xattrs and ACLs together).
fn big_binary_value() -> Vec<u8> {
    (0..3000u32).map(|i| (i * 7 % 256) as u8).collect()
}

/// xattrs in the user, trusted and security namespaces (binary, empty,
/// 3 KB values; on directories and on a symlink), access ACLs on files,
/// default ACLs on directories, and a file that inherited one.
fn xattrs_and_acls(root: &Path) {
    tree!(root, {
        "x/f" => file("xattrs") mtime(T, 1)
            xattr("user.color", "blue") xattr("user.bin", b"\x00\xff\x01\n")
            xattr("user.big", big_binary_value()) xattr("trusted.t", "trusted value")
            xattr("security.psync", b"\x01\x02"),
        "x/empty" => file("") xattr("user.empty", ""),
        "x/d" => dir() xattr("user.dir", "d") xattr("trusted.dir", b"\xff"),
        // (not `trusted.link`: a Lustre-internal name, never copied; see
        // `seams::internal_xattrs_are_never_copied_nor_removed`)
        "x/l" => symlink("f") xattr("trusted.symlink", "on a symlink"),
        "acl/f" => file("acl") acl("u:1234:r--") acl("g:5678:rw-"),
        "acl/d" => dir() acl("u:1234:r-x") acl("d:u:1234:rwx") acl("d:g:5678:r-x"),
        "acl/plain-d" => dir() acl("d:u:4321:r--"),
    });
    // Created under a default ACL: inherits an access ACL.
    std::fs::write(root.join("acl/d/inherited"), "inherits").expect("write");
}

/// Fifos, devices, a socket; setuid/setgid files owned by someone else;
/// read-only directories with contents; ns times on files, directories
/// and symlinks; symlinks with odd targets and names.
fn specials_modes_times_symlinks(root: &Path) {
    tree!(root, {
        "special/fifo" => fifo() mode(0o640) mtime(T, 11),
        "special/sock" => socket() mtime(T, 12),
        "special/null" => chardev(1, 3) owner(1234, 5678) mode(0o620) mtime(T, 13),
        "modes/suid" => file("#!/bin/true\n") owner(1234, 1234) mode(0o6755) mtime(T, 21),
        "modes/sgid" => file("g") owner(1234, 5678) mode(0o2711),
        "modes/sgid-dir" => dir() owner(1234, 5678) mode(0o2775),
        "modes/sticky" => dir() mode(0o1777),
        "modes/none" => file("no permissions") mode(0o000),
        "ro/r555/f" => file("in a 0555 dir") mode(0o444),
        "ro/r555/sub/g" => file("deeper"),
        "ro/r555" => dir() mode(0o555) mtime(T, 31),
        "ro/r500/f" => file("in a 0500 dir") mode(0o400),
        "ro/r500" => dir() mode(0o500) mtime(T, 32),
        "times/f" => file("t") mtime(T, 123_456_789),
        "times/d" => dir() mtime(T, 987_654_321),
        "times/l" => symlink("f") mtime(T, 555_555_555),
        "times/epoch" => file("1970") mtime(1, 1),
        "times/2096" => file("future") mtime(4_000_000_000, 999_999_999),
        "sym/dangling" => symlink("no/such/target") mtime(T, 41),
        "sym/absolute" => symlink("/etc/passwd") owner(4321, 8765),
        "sym/non-utf8" => symlink(b"\xff\xfe/\x80target"),
        b"sym/name-\xe9" => symlink("../x"),
        "sym/long" => symlink("seg/".repeat(250)),
        "sym/dot" => symlink("."),
        "empty-dir" => dir() mtime(T, 51),
    });
    let blk = root.join("special/loop200");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &blk,
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o640),
        rustix::fs::makedev(7, 200),
    )
    .expect("mknod block device");
    set_mtime(&blk, T, 14);
    set_mtime(&root.join("special"), T, 15);
}

// ---------------------------------------------------------------------
// Tests

/// Many threads through both frontends: link groups spread over
/// directories are then planned and linked by different workers.
const PARALLEL: [Config; 2] = [LIB_8, CLI_8];
const LIB_1: Config = Config {
    front: Front::Lib,
    threads: 1,
};
const LIB_8: Config = Config {
    front: Front::Lib,
    threads: 8,
};
const CLI_8: Config = Config {
    front: Front::Cli,
    threads: 8,
};

/// 30 link groups over 10 directories: one target inode per source
/// inode, each group's data copied once.
#[test]
fn hard_link_groups_on_every_fs_pair() {
    each_pair(
        "hard_link_groups_on_every_fs_pair",
        &PAIRS,
        &PARALLEL,
        |c| {
            link_groups(&c.src());
            let out = c.sync(X::DEFAULT);
            out.assert_ok();
            let once: u64 = (0..30).map(|g| 1000 + 97 * g).sum::<u64>() + 10 * 700;
            assert_eq!(out.stat("bytes_copied"), once, "each group's data once");
            c.assert_faithful();
            c.assert_no_op("second run");
        },
    );
}

/// Holes in the middle, at the end, everywhere, between several extents.
#[test]
fn sparse_files_on_every_fs_pair() {
    each_pair("sparse_files_on_every_fs_pair", &PAIRS, &PARALLEL, |c| {
        sparse_files(&c.src());
        let all = meta(&c.src().join("sparse/all"));
        assert_eq!(all.blocks(), 0, "harness: {} makes no holes", c.from);
        c.sync(X::DEFAULT).assert_ok();
        c.assert_faithful();
        c.assert_no_op("second run");
    });
}

/// Large files in chunks written by all threads at once: direct I/O where
/// the target's file system has it (ext4, XFS), through a mapping on
/// tmpfs, buffered elsewhere; holes stay holes, an unaligned end of file arrives, and a
/// second run copies nothing.
#[test]
fn chunked_files_on_every_fs_pair() {
    each_pair("chunked_files_on_every_fs_pair", &PAIRS, &PARALLEL, |c| {
        sparse_files(&c.src());
        let dense = c.src().join("dense");
        std::fs::write(&dense, random_bytes(7, 5 * (1 << 20) + 1234)).expect("write dense");
        set_mtime(&dense, T, 7);
        // Copies, not clones, on XFS and btrfs too.
        let chunked = X {
            small_chunks: true,
            reflink: Reflink::Never,
            ..X::DEFAULT
        };
        let out = c.sync(chunked);
        out.assert_ok();
        // middle (8 chunks), end (6), all (4), multi (5), dense (6).
        assert_eq!(out.stat("chunks"), 29, "every chunk copied once");
        // Direct I/O where the file system reports its alignment: ext4 and
        // XFS do; tmpfs has none; btrfs reports none (Linux 6.18) but may.
        let direct = out.stat("by_direct");
        match c.to {
            Fs::Ext4 | Fs::Xfs => assert!(direct > 0, "{}: no direct I/O", c.to),
            Fs::Tmpfs => {
                assert_eq!(direct, 0, "tmpfs has no direct I/O");
                // Through a user-space buffer (ADR 022), not mapped.
                assert_eq!(out.stat("by_mapped"), 0, "tmpfs: chunks written mapped");
                assert!(
                    out.stat("by_read_write") > 0,
                    "tmpfs: no chunk read and written"
                );
            }
            _ => {}
        }
        c.assert_faithful();
        c.assert_no_op("second run");
    });
}

/// xattrs of every namespace and ACLs survive, and a run after a status
/// change alone (source ctimes newer, nothing synced changed) compares
/// them, finds them equal and changes nothing.
#[test]
fn xattrs_and_acls_on_every_fs_pair() {
    each_pair("xattrs_and_acls_on_every_fs_pair", &PAIRS, &PARALLEL, |c| {
        xattrs_and_acls(&c.src());
        let out = c.sync(X::DEFAULT);
        out.assert_ok();
        assert!(out.warnings.is_empty(), "warnings: {:#?}", out.warnings);
        c.assert_faithful();
        c.assert_no_op("second run");

        bump_status(&c.src());
        c.assert_no_op("run after a source status change only");
        c.assert_faithful();
    });
}

/// Extraneous, missing and changed xattrs and ACL entries made on the
/// target alone (its ctime is then newer than the source's) are put
/// right by a re-run, which compares every entry as `rsync -X` does (the
/// default, and always with `-X -A`; README).
#[test]
fn target_side_xattr_and_acl_changes_are_undone() {
    let test = "target_side_xattr_and_acl_changes_are_undone";
    each_pair(test, &PAIRS, &PARALLEL, |c| {
        xattrs_and_acls(&c.src());
        c.sync(X::DEFAULT).assert_ok();
        let d = c.dst();
        tree::set_xattr(&d.join("x/f"), "user.extra", b"x").expect("set xattr");
        tree::set_xattr(&d.join("x/d"), "trusted.extra", b"x").expect("set xattr");
        tree::set_xattr(&d.join("x/empty"), "security.extra", b"x").expect("set xattr");
        tree::set_xattr(&d.join("x/f"), "user.color", b"red").expect("set xattr");
        rustix::fs::lremovexattr(d.join("x/f"), "user.bin").expect("remove xattr");
        setfacl(&d.join("acl/f"), "u:999:r--");
        setfacl(&d.join("x/empty"), "u:999:r--");
        let out = c.sync(X::EXACT);
        out.assert_ok();
        assert_eq!(out.stat("bytes_copied"), 0, "attributes only: no data");
        c.assert_faithful();
        c.assert_no_op("run after repairing the target's xattrs");
    });
}

/// Makes every entry's status (ctime) newer, changing nothing that is
/// synced: an xattr set and removed again.
fn bump_status(root: &Path) {
    for rel in listing(root).keys() {
        let p = join_rel(root, rel);
        tree::set_xattr(&p, "trusted.psync-bump", b"1").expect("set xattr");
        rustix::fs::lremovexattr(&p, "trusted.psync-bump").expect("remove xattr");
    }
}

fn setfacl(p: &Path, spec: &str) {
    let out = Command::new("setfacl")
        .arg("-m")
        .arg(spec)
        .arg(p)
        .output()
        .expect("run setfacl");
    assert!(
        out.status.success(),
        "setfacl -m {spec} {}: {}",
        p.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fifos, devices, a socket, setuid/setgid, read-only directories, ns
/// times on every type, odd symlinks.
#[test]
fn specials_modes_times_and_symlinks_on_every_fs_pair() {
    let test = "specials_modes_times_and_symlinks_on_every_fs_pair";
    each_pair(test, &PAIRS, &PARALLEL, |c| {
        specials_modes_times_symlinks(&c.src());
        c.sync(X::DEFAULT).assert_ok();
        assert_eq!(mode_and_owner(&c.dst().join("modes/suid")), (0o6755, 1234));
        c.assert_faithful();
        c.assert_no_op("second run");
    });
}

fn mode_and_owner(p: &Path) -> (u32, u32) {
    let m = meta(p);
    (m.mode() & 0o7777, m.uid())
}

/// Link groups that change between runs: new links join a group in the
/// target without copying data; paths recreated as separate, equal files
/// (same size and mtime) are split off; a group whose first path is
/// deleted leaves one link; a path moved to another group is linked to
/// it, its data copied at most once.
#[test]
fn link_groups_follow_the_source_between_runs() {
    let test = "link_groups_follow_the_source_between_runs";
    each_pair(test, &PAIRS, &[LIB_1, LIB_8, CLI_8], |c| {
        let src = c.src();
        tree!(src, {
            "a" => random(5000) mtime(T, 1),
            "b" => hardlink("a"),
            "c" => hardlink("a"),
            "d/e" => hardlink("a"),
            "x" => random(3000) mtime(T, 2),
            "d/y" => hardlink("x"),
            "solo" => file("one link") mtime(T, 3),
        });
        link_groups(&src);
        let step = |what: &str| {
            eprintln!("--- {what}");
            let out = c.sync(X::DEFAULT);
            out.assert_ok();
            c.assert_faithful();
            c.assert_no_op(&format!("run after {what}"));
            out.stat("bytes_copied")
        };
        step("the first sync");

        tree!(src, {
            "d/new" => hardlink("a"),
            "links/d9/g00-new" => hardlink("links/d0/g00-0"),
        });
        // Checked at the end, so that the later steps run too.
        let relinked = step("new links to existing groups");

        tree!(src, {
            "b" => file(read(src.join("a"))) mtime(T, 1),
            "links/d3/g00-1" => file(read(src.join("links/d0/g00-0"))) mtime(T, 7),
        });
        step("paths recreated as separate equal files");
        assert_ne!(ino(&c.dst(), "a"), ino(&c.dst(), "b"), "b split off");

        std::fs::remove_file(src.join("x")).expect("rm x");
        tree!(src, { "c" => hardlink("d/y") });
        let copied = step("a group's first path deleted, a path moved to it");
        assert!(
            copied <= 3000,
            "{copied} bytes copied for a 3000-byte group"
        );
        assert_eq!(meta(&c.dst().join("d/y")).nlink(), 2, "d/y and c");
        assert_eq!(relinked, 0, "new links to existing groups: data copied");
    });
}

fn ino(root: &Path, rel: &str) -> u64 {
    meta(&root.join(rel)).ino()
}

/// An xattr the target cannot hold (ext4 keeps at most a block of them
/// per file; XFS takes 64 KiB values): a warning naming the path and the
/// attribute by default, exit 0; an error with `-X`, exit 1.
#[test]
fn an_xattr_the_target_cannot_hold() {
    let test = "an_xattr_the_target_cannot_hold";
    each_pair(test, &[(Fs::Xfs, Fs::Ext4)], &PARALLEL, |c| {
        tree!(c.src(), {
            "fits" => file("small") xattr("user.small", "1") mtime(T, 1),
            "big" => file("data") xattr("user.huge", vec![b'h'; 8000]) xattr("user.fine", "1") mtime(T, 2),
        });
        let out = c.sync(X::DEFAULT);
        assert_eq!(out.exit, 0, "default: a warning only: {out:#?}");
        assert!(out.errors.is_empty(), "errors: {:#?}", out.errors);
        assert_one_naming(&out.warnings, "big", "user.huge", "warning");
        assert_eq!(read(c.dst().join("big")), b"data");
        let names: Vec<Vec<u8>> = xattrs_of(&c.dst().join("big"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, [b"user.fine".to_vec()], "big's other xattrs");
        assert_synced!(c.src(), c.dst(), except: ["big"]);
        if c.cfg.front == Front::Cli {
            std::fs::remove_dir_all(c.dst()).expect("rm dst");
            assert_human_message(c, &[], 0, "big", "user.huge");
        }

        std::fs::remove_dir_all(c.dst()).expect("rm dst");
        let required = X {
            xattrs: AttrMode::Required,
            ..X::DEFAULT
        };
        let out = c.sync(required);
        assert_eq!(out.exit, 1, "-X: an error: {out:#?}");
        assert_one_naming(&out.errors, "big", "user.huge", "error");
        if c.cfg.front == Front::Cli {
            std::fs::remove_dir_all(c.dst()).expect("rm dst");
            assert_human_message(c, &["-X"], 1, "big", "user.huge");
        }
    });
}

/// Exactly one of `msgs` (`PATH: MESSAGE`) is about `path` and names `attr`.
#[track_caller]
fn assert_one_naming(msgs: &[String], path: &str, attr: &str, what: &str) {
    let hits = msgs
        .iter()
        .filter(|m| m.starts_with(&format!("{path}: ")) && m.contains(attr))
        .count();
    assert_eq!(
        hits, 1,
        "want one {what} about {path} naming {attr}: {msgs:#?}"
    );
}

/// The human CLI output: the exit status, and a `psync:` line on stderr
/// naming the path and the attribute.
#[track_caller]
fn assert_human_message(c: &Case, flags: &[&str], exit: i32, path: &str, attr: &str) {
    let mut args = vec!["-q", "--delete"];
    args.extend(flags);
    let o = run_cli(&args, &c.src(), &c.dst());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(exit), "psync {args:?}: {stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("psync:") && l.contains(path) && l.contains(attr)),
        "psync {args:?}: no message naming {path} and {attr}: {stderr}"
    );
}

/// Reflinks: on XFS (reflink=1) and btrfs a copy within the file system
/// clones (counted in `by_reflink`, extents shared), not with
/// `--reflink=never`; elsewhere `auto` copies and `always` fails the files.
#[test]
fn reflink_where_the_file_system_clones() {
    let test = "reflink_where_the_file_system_clones";
    each_pair(test, &PAIRS, &PARALLEL, |c| {
        tree!(c.src(), {
            "big" => random(1 << 20) mtime(T, 1),
            "small" => random(10_000) mtime(T, 2),
            "sub/f" => random(200_000) mtime(T, 3),
        });
        let clones = c.from == c.to && c.from.reflinks();
        let big = c.dst().join("big");
        let out = c.sync(X::DEFAULT);
        out.assert_ok();
        let want = if clones { 3 } else { 0 };
        assert_eq!(out.stat("by_reflink"), want, "auto: {out:#?}");
        assert_eq!(shares_extents(&big), clones, "auto: big shares extents");
        c.assert_faithful();

        std::fs::remove_dir_all(c.dst()).expect("rm dst");
        let out = c.sync(X::reflink(Reflink::Never));
        out.assert_ok();
        assert_eq!(out.stat("by_reflink"), 0, "never");
        assert!(!shares_extents(&big), "never: big shares extents");
        c.assert_faithful();

        std::fs::remove_dir_all(c.dst()).expect("rm dst");
        let out = c.sync(X::reflink(Reflink::Always));
        if clones {
            out.assert_ok();
            assert_eq!(out.stat("by_reflink"), 3, "always");
            c.assert_faithful();
            return;
        }
        assert_eq!(out.exit, 1, "always without reflinks: {out:#?}");
        for p in ["big", "small", "sub/f"] {
            let named = out.errors.iter().any(|e| e.starts_with(&format!("{p}: ")));
            assert!(named, "always: no error for {p}: {:#?}", out.errors);
            assert!(!c.dst().join(p).exists(), "always: {p} was copied anyway");
        }
    });
}

/// True when `filefrag -v` flags an extent of `p` as shared. (tmpfs has
/// no FIEMAP: filefrag fails there, and nothing is shared.)
fn shares_extents(p: &Path) -> bool {
    let out = Command::new("filefrag")
        .arg("-v")
        .arg(p)
        .output()
        .expect("run filefrag");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("shared")
}

/// ext4 with 128-byte inodes keeps whole seconds: the run detects a
/// 1-second window, and a second run over ns source times copies nothing.
#[test]
fn whole_second_timestamps_on_small_inode_ext4() {
    let test = "whole_second_timestamps_on_small_inode_ext4";
    let pairs = [(Fs::Xfs, Fs::Ext4Coarse), (Fs::Tmpfs, Fs::Ext4Coarse)];
    each_pair(test, &pairs, &PARALLEL, |c| {
        // Fixture and first sync within one wall-clock second, the second
        // run in the next: the target's ctimes, cut to the second, are
        // older than the source's, which the second run must not take for
        // a status change (rewriting attributes moves ctime to the next
        // second).
        start_of_a_second();
        tree!(c.src(), {
            "f" => file("ns") mtime(T, 999_999_999),
            "g" => random(100_000) mtime(T, 1),
            "h" => hardlink("g"),
            "d" => dir() mtime(T, 500_000_000),
            "d/x" => file("xattr") xattr("user.k", "v") mtime(T + 1, 1),
            "l" => symlink("f") mtime(T, 123),
        });
        let out = c.sync(X::DEFAULT);
        out.assert_ok();
        assert_eq!(
            out.stat("modify_window_ns"),
            1_000_000_000,
            "detected window"
        );
        assert_same_trees(&c.src(), &c.dst(), c.norm(true));
        assert_link_groups(&c.src(), &c.dst());
        rsync_oracle_full_with(&c.src(), &c.dst(), c.oracle_filters());
        start_of_a_second();
        c.assert_no_op("second run");
    });
}

/// Sleeps until just after the wall clock starts a new second.
fn start_of_a_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    let rest = 1_000_000_000 - u64::from(now.subsec_nanos());
    std::thread::sleep(std::time::Duration::from_nanos(rest + 5_000_000));
}
