//! Source trees deeper than PATH_MAX: a chain of 330 directories with
//! 16-byte names (5,610 bytes of path below the root, where the kernel
//! takes at most 4,095 in one call) with files, symlinks and a hard-linked
//! pair at several depths, the bottom included. Every part of a run must
//! reach the bottom from the roots: listing and copying (source and
//! target), the directories' attributes at their finish, deletions, type
//! changes, the hard-link phase, itemized lines and error messages, which
//! name the full path. rsync fails on such trees ("File name too long"),
//! so it is no oracle here; the trees are compared by walking both by
//! fds, and built the same way (std::fs with a long absolute path fails
//! with ENAMETOOLONG).
//!
//! Run on a tmpfs and on a loop-mounted ext4 made for the test (root
//! only; without root they skip, and fail under `CI=true`;
//! `PSYNC_TEST_NO_MOUNTS=1` opts out), through the library and the CLI on
//! 1 and 8 threads.

use crate::util::mounts::TestMount;
use crate::util::run::Outcome;
use crate::util::{Config, Opts, TestDir, each_config, is_root};
use rustix::fs::{AtFlags, CWD, Mode, OFlags, Timespec, Timestamps};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Levels of the chain below `top/`.
const DEPTH: usize = 330;
/// The levels whose directory holds a file and a symlink.
const STOPS: [usize; 6] = [0, 120, 240, 241, 300, DEPTH - 1];
/// The level whose subtree the source loses (with the bottom in it).
const CUT: usize = 301;
const T: i64 = 1_600_000_000;

/// The 16-byte name of level `i`.
fn level(i: usize) -> String {
    let name = format!("level-{i:04}.deep_");
    debug_assert_eq!(name.len(), 16);
    name
}

/// `top/level-0000.deep_/…/level-{n-1}`: the path of the directory at
/// level `n - 1` (`top` for 0).
fn chain_path(n: usize) -> String {
    let mut p = String::from("top");
    for i in 0..n {
        p.push('/');
        p.push_str(&level(i));
    }
    p
}

/// The mode a chain directory gets: it varies from level to level, so a
/// mode left at its default (or at its parent's) shows.
fn dir_mode(i: usize) -> u32 {
    match i % 4 {
        0 => 0o755,
        1 => 0o750,
        2 => 0o711,
        _ => 0o700,
    }
}

fn ts(sec: i64, nsec: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn open_root(p: &Path) -> OwnedFd {
    rustix::fs::openat(CWD, p, DIR, Mode::empty())
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

fn open_sub(d: BorrowedFd<'_>, name: &str) -> OwnedFd {
    rustix::fs::openat(d, name, DIR, Mode::empty()).unwrap_or_else(|e| panic!("open {name}: {e}"))
}

/// Opens `root/rel` one component at a time (O_NOFOLLOW each).
fn open_rel(root: &Path, rel: &str) -> OwnedFd {
    let mut fd = open_root(root);
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        fd = open_sub(fd.as_fd(), c);
    }
    fd
}

/// `/proc/self/fd/N/name`: a short path to an entry of an open directory,
/// for std calls.
fn at(d: BorrowedFd<'_>, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()))
}

fn mkdir(d: BorrowedFd<'_>, name: &str) {
    rustix::fs::mkdirat(d, name, Mode::from_raw_mode(0o755))
        .unwrap_or_else(|e| panic!("mkdir {name}: {e}"));
}

/// A file of mode 0640 and a fixed mtime.
fn put_file(d: BorrowedFd<'_>, name: &str, content: &[u8], mtime: i64) {
    std::fs::write(at(d, name), content).unwrap_or_else(|e| panic!("write {name}: {e}"));
    rustix::fs::chmodat(d, name, Mode::from_raw_mode(0o640), AtFlags::empty()).unwrap();
    rustix::fs::utimensat(d, name, &ts(mtime, 123), AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// Gives the directory `name` of `d` its mode and a fixed mtime. Last
/// thing done to a directory: creating in it moves its mtime.
fn stamp_dir(d: BorrowedFd<'_>, name: &str, i: usize) {
    rustix::fs::chmodat(d, name, Mode::from_raw_mode(dir_mode(i)), AtFlags::empty()).unwrap();
    let nsec = i64::try_from(i).unwrap() * 1_000_003;
    rustix::fs::utimensat(d, name, &ts(T + nsec / 1000, nsec), AtFlags::empty()).unwrap();
}

/// Makes `top/` and the chain of [`DEPTH`] levels under `src`, top-down
/// holding one fd, calling `at_level(i, dir)` in each level's new
/// directory; then stamps every directory with its mode and mtime
/// bottom-up, going back through `..`.
fn build_chain(src: &Path, mut at_level: impl FnMut(usize, BorrowedFd<'_>)) {
    let root = open_root(src);
    mkdir(root.as_fd(), "top");
    let mut fd = open_sub(root.as_fd(), "top");
    for i in 0..DEPTH {
        mkdir(fd.as_fd(), &level(i));
        fd = open_sub(fd.as_fd(), &level(i));
        at_level(i, fd.as_fd());
    }
    for i in (0..DEPTH).rev() {
        fd = open_sub(fd.as_fd(), "..");
        stamp_dir(fd.as_fd(), &level(i), i);
    }
    stamp_dir(root.as_fd(), "top", 3);
}

/// The fixture: at each level of [`STOPS`] a file and a symlink; at the
/// bottom also a hard-linked pair, a file `typed` and a directory
/// `typed-dir` (whose types change later).
fn build_deep(src: &Path) {
    build_chain(src, |i, d| {
        if STOPS.contains(&i) {
            let content = format!("file at level {i}\n").repeat(i % 7 + 1);
            put_file(d, &format!("f{i}"), content.as_bytes(), T + 7);
            let (target, link) = (format!("../../not/there/{i}"), format!("l{i}"));
            rustix::fs::symlinkat(target.as_str(), d, link.as_str()).unwrap();
            let when = ts(T + 9, 9);
            rustix::fs::utimensat(d, link.as_str(), &when, AtFlags::SYMLINK_NOFOLLOW).unwrap();
        }
        if i == DEPTH - 1 {
            put_file(d, "hl-a", b"one inode, two names at the bottom", T);
            rustix::fs::linkat(d, "hl-a", d, "hl-b", AtFlags::empty()).unwrap();
            put_file(d, "typed", b"a file that becomes a directory", T);
            mkdir(d, "typed-dir");
            let sub = open_sub(d, "typed-dir");
            put_file(
                sub.as_fd(),
                "inner",
                b"in a directory that becomes a file",
                T,
            );
            stamp_dir(d, "typed-dir", 7);
        }
    });
}

/// A long relative path for messages: its length, depth and last
/// components.
fn short(rel: &[u8]) -> String {
    let depth = rel.iter().filter(|&&b| b == b'/').count();
    let tail = rel.len().saturating_sub(80);
    let tail = rel[tail..].splitn(2, |&b| b == b'/').last().unwrap_or(rel);
    format!(
        "[{} bytes, {depth} slashes] …/{}",
        rel.len(),
        String::from_utf8_lossy(tail)
    )
}

/// What is compared of one entry (`lstat`, never following).
#[derive(Debug, PartialEq, Eq)]
struct Meta {
    kind: u32,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, i64),
    /// Size and link count (not for directories).
    size_links: Option<(u64, u64)>,
}

fn meta(st: &rustix::fs::Stat) -> Meta {
    let kind = st.st_mode & libc::S_IFMT;
    #[allow(clippy::unnecessary_cast)]
    Meta {
        kind,
        mode: st.st_mode & 0o7777,
        owner: (st.st_uid, st.st_gid),
        mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
        size_links: (kind != libc::S_IFDIR).then_some((st.st_size as u64, st.st_nlink as u64)),
    }
}

fn names(d: BorrowedFd<'_>) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd()))
        .expect("read_dir")
        .map(|e| e.expect("read_dir").file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

fn read_at(d: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    let f = rustix::fs::openat(d, name, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty())
        .expect("open a file");
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(f), &mut buf).expect("read");
    buf
}

/// The state of a comparison walk.
#[derive(Default)]
struct Compare {
    diffs: Vec<String>,
    /// Hard links: each multiply-linked inode's first path, per side.
    first: [std::collections::HashMap<(u64, u64), Vec<u8>>; 2],
    entries: usize,
}

impl Compare {
    /// Compares the entries of one directory; returns the names of the
    /// subdirectories both sides have.
    fn dir(&mut self, s: BorrowedFd<'_>, d: BorrowedFd<'_>, rel: &[u8]) -> Vec<Vec<u8>> {
        let (sn, dn) = (names(s), names(d));
        for n in dn.iter().filter(|n| !sn.contains(n)) {
            self.diffs
                .push(format!("only in the target: {}", short(&join(rel, n))));
        }
        let mut subdirs = Vec::new();
        for n in &sn {
            let path = join(rel, n);
            if !dn.contains(n) {
                self.diffs
                    .push(format!("missing in the target: {}", short(&path)));
                continue;
            }
            self.entries += 1;
            let ss = rustix::fs::statat(s, n.as_slice(), AtFlags::SYMLINK_NOFOLLOW).unwrap();
            let ds = rustix::fs::statat(d, n.as_slice(), AtFlags::SYMLINK_NOFOLLOW).unwrap();
            self.entry(s, d, n, &path, &ss, &ds);
            let dir = |st: &rustix::fs::Stat| st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if dir(&ss) && dir(&ds) {
                subdirs.push(n.clone());
            }
        }
        subdirs
    }

    #[allow(clippy::unnecessary_cast)]
    fn entry(
        &mut self,
        s: BorrowedFd<'_>,
        d: BorrowedFd<'_>,
        n: &[u8],
        path: &[u8],
        ss: &rustix::fs::Stat,
        ds: &rustix::fs::Stat,
    ) {
        let (sm, dm) = (meta(ss), meta(ds));
        if sm != dm {
            self.diffs
                .push(format!("{}: {sm:?} != {dm:?}", short(path)));
            return;
        }
        match sm.kind {
            libc::S_IFREG if read_at(s, n) != read_at(d, n) => {
                self.diffs.push(format!("{}: contents differ", short(path)));
            }
            libc::S_IFLNK => {
                let sl = rustix::fs::readlinkat(s, n, Vec::new()).unwrap();
                let dl = rustix::fs::readlinkat(d, n, Vec::new()).unwrap();
                if sl != dl {
                    self.diffs
                        .push(format!("{}: link {sl:?} != {dl:?}", short(path)));
                }
            }
            _ => {}
        }
        if sm.kind != libc::S_IFDIR && ss.st_nlink > 1 {
            let ids = |st: &rustix::fs::Stat| (st.st_dev as u64, st.st_ino as u64);
            let a = self.first[0]
                .entry(ids(ss))
                .or_insert_with(|| path.to_vec());
            let a = a.clone();
            let b = self.first[1]
                .entry(ids(ds))
                .or_insert_with(|| path.to_vec());
            if a != *b {
                self.diffs.push(format!(
                    "{}: linked to {} in the source, to {} in the target",
                    short(path),
                    short(&a),
                    short(b)
                ));
            }
        }
    }
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = rel.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A level of the comparison walk: its path and the subdirectories still
/// to enter.
struct Frame {
    rel: Vec<u8>,
    pending: Vec<Vec<u8>>,
}

/// Panics unless the trees `src` and `dst` have the same names, types,
/// modes, owners, mtimes (ns; directories and symlinks too), sizes, link
/// counts and hard-link groups, contents and symlink targets, the roots
/// included. Walks both at once without recursion, down by name
/// (O_NOFOLLOW) and up through `..`, two fds open at any depth. Returns
/// the number of entries compared.
#[track_caller]
fn assert_same_trees(src: &Path, dst: &Path) -> usize {
    let (mut s, mut d) = (open_root(src), open_root(dst));
    let mut c = Compare::default();
    let (ss, ds) = (
        rustix::fs::fstat(&s).unwrap(),
        rustix::fs::fstat(&d).unwrap(),
    );
    if meta(&ss) != meta(&ds) {
        c.diffs
            .push(format!("roots: {:?} != {:?}", meta(&ss), meta(&ds)));
    }
    let pending = c.dir(s.as_fd(), d.as_fd(), b"");
    let mut stack = vec![Frame {
        rel: Vec::new(),
        pending,
    }];
    while let Some(top) = stack.last_mut() {
        if let Some(name) = top.pending.pop() {
            let rel = join(&top.rel, &name);
            let name = std::str::from_utf8(&name).expect("test names are UTF-8");
            s = open_sub(s.as_fd(), name);
            d = open_sub(d.as_fd(), name);
            let pending = c.dir(s.as_fd(), d.as_fd(), &rel);
            stack.push(Frame { rel, pending });
        } else {
            stack.pop();
            if !stack.is_empty() {
                s = open_sub(s.as_fd(), "..");
                d = open_sub(d.as_fd(), "..");
            }
        }
    }
    assert!(
        c.diffs.is_empty(),
        "{} and {} differ ({} differences):\n{}",
        src.display(),
        dst.display(),
        c.diffs.len(),
        c.diffs[..c.diffs.len().min(30)].join("\n")
    );
    c.entries
}

/// The relative path of an itemized line (`CODE PATH[/][ -> LINK]`).
fn item_path(line: &str) -> &str {
    // An 11-character code, a space.
    let rest = line.get(12..).unwrap_or(line);
    let rest = rest.split(" -> ").next().unwrap_or(rest);
    let rest = rest.split(" => ").next().unwrap_or(rest);
    rest.strip_suffix('/').unwrap_or(rest)
}

/// The entries the fixture has: `top`, the chain, a file and a symlink
/// per stop, the bottom's five.
const ENTRIES: usize = 1 + DEPTH + 2 * STOPS.len() + 5;

/// Asserts a run that found nothing to do.
#[track_caller]
fn assert_no_op(out: &Outcome, what: &str) {
    out.assert_ok();
    assert!(out.itemized.is_empty(), "{what}: {:#?}", out.itemized);
    for counter in [
        "created",
        "updated",
        "attrs_updated",
        "deleted",
        "bytes_copied",
    ] {
        assert_eq!(out.stat(counter), 0, "{what}: {counter}");
    }
}

/// The whole scenario, in `base` (on the file system under test): a dry
/// run, a first sync, a no-op, an attribute change of the hard-linked pair, type
/// changes at the bottom, a deep subtree deleted, and a target error
/// 300 levels down that must name its full path.
fn scenario(cfg: Config, base: &Path) {
    let (src, dst) = (base.join("src"), base.join("dst"));
    std::fs::create_dir(&src).unwrap();
    build_deep(&src);
    let bottom = chain_path(DEPTH);
    assert!(bottom.len() > 5_000, "{} bytes", bottom.len());

    let dry = cfg.sync_unchecked(&src, &dst, &Opts::dry_run());
    dry.assert_ok();
    assert_eq!(dry.itemized.len(), ENTRIES + 1, "a dry run lists it all");
    assert!(dst.symlink_metadata().is_err(), "a dry run made the target");

    let started = Instant::now();
    let first = cfg.sync_unchecked(&src, &dst, &Opts::default());
    first.assert_ok();
    eprintln!("{cfg}: first sync {:?}", started.elapsed());
    assert_eq!(assert_same_trees(&src, &dst), ENTRIES);
    assert_eq!(
        first.itemized.len(),
        ENTRIES + 1,
        "the root and every entry"
    );
    assert_eq!(first.stat("created"), ENTRIES as u64);
    let paths: Vec<&str> = first.itemized.iter().map(|l| item_path(l)).collect();
    for name in [
        "hl-a",
        "hl-b",
        "typed-dir/inner",
        &format!("f{}", DEPTH - 1),
    ] {
        let want = format!("{bottom}/{name}");
        assert!(
            paths.contains(&want.as_str()),
            "{name} is itemized with its full path"
        );
    }

    let started = Instant::now();
    let again = cfg.sync_unchecked(&src, &dst, &Opts::delete());
    eprintln!("{cfg}: no-op sync {:?}", started.elapsed());
    assert_no_op(&again, "second run");

    // The hard-linked pair's mode changes: the last phase reopens both
    // names' directories at the bottom (and counts the inode's names
    // there before changing it in place).
    let src_bottom = open_rel(&src, &bottom);
    rustix::fs::chmodat(
        src_bottom.as_fd(),
        "hl-a",
        Mode::from_raw_mode(0o604),
        AtFlags::empty(),
    )
    .unwrap();
    let relinked = cfg.sync_unchecked(&src, &dst, &Opts::delete());
    relinked.assert_ok();
    assert_same_trees(&src, &dst);
    // Changed in place (both names found to be the inode), not copied anew.
    // One line, as rsync: once one name is changed, the other is right.
    let pair = [format!("{bottom}/hl-a"), format!("{bottom}/hl-b")];
    assert!(
        matches!(relinked.itemized.as_slice(), [l] if l.starts_with(".f...p..... ")
            && pair.iter().any(|p| p == item_path(l))),
        "{:#?}",
        relinked.itemized
    );
    assert_eq!(relinked.stat("bytes_copied"), 0);
    let dst_bottom = open_rel(&dst, &bottom);
    let st = rustix::fs::statat(dst_bottom.as_fd(), "hl-b", AtFlags::SYMLINK_NOFOLLOW).unwrap();
    assert_eq!((st.st_mode & 0o7777, st.st_nlink), (0o604, 2));

    // Type changes at the bottom: a file becomes a directory, a non-empty
    // directory a file.
    let b = src_bottom.as_fd();
    rustix::fs::unlinkat(b, "typed", AtFlags::empty()).unwrap();
    mkdir(b, "typed");
    let typed = open_sub(b, "typed");
    put_file(typed.as_fd(), "now-inside", b"below a former file", T);
    stamp_dir(b, "typed", 11);
    std::fs::remove_dir_all(at(b, "typed-dir")).unwrap();
    put_file(b, "typed-dir", b"a former directory", T);
    let parent = open_sub(b, "..");
    stamp_dir(parent.as_fd(), &level(DEPTH - 1), DEPTH - 1);
    let changed = cfg.sync_unchecked(&src, &dst, &Opts::delete());
    changed.assert_ok();
    assert_same_trees(&src, &dst);
    assert_no_op(
        &cfg.sync_unchecked(&src, &dst, &Opts::delete()),
        "after the type changes",
    );

    // A deep subtree (levels CUT and below, the bottom in it) goes from the
    // source: --delete removes it from the target, itemized by full path.
    let above = open_rel(&src, &chain_path(CUT));
    std::fs::remove_dir_all(at(above.as_fd(), &level(CUT))).unwrap();
    stamp_dir(
        open_sub(above.as_fd(), "..").as_fd(),
        &level(CUT - 1),
        CUT - 1,
    );
    let deleted = cfg.sync_unchecked(&src, &dst, &Opts::delete());
    deleted.assert_ok();
    assert_same_trees(&src, &dst);
    let gone = format!("{}/{}", chain_path(CUT), level(CUT));
    let lines: Vec<&String> = deleted
        .itemized
        .iter()
        .filter(|l| l.starts_with("*deleting"))
        .collect();
    let shown: Vec<String> = lines.iter().map(|l| short(l.as_bytes())).collect();
    assert!(
        lines.iter().any(|l| item_path(l) == gone),
        "the subtree's top is itemized with its full path: {shown:#?}"
    );
    // The levels from CUT down, the bottom's file and symlink and its
    // five other entries.
    let below = (DEPTH - CUT) + 2 + 5;
    assert_eq!(deleted.stat("deleted"), below as u64, "{shown:#?}");

    // An error at depth names the whole path: a non-empty target
    // directory where the source now has a file, without --delete.
    let above = open_rel(&src, &chain_path(CUT));
    put_file(above.as_fd(), "blocked", b"a file", T);
    let target_above = open_rel(&dst, &chain_path(CUT));
    mkdir(target_above.as_fd(), "blocked");
    let blocked = open_sub(target_above.as_fd(), "blocked");
    put_file(blocked.as_fd(), "theirs", b"in the way", T);
    let refused = cfg.sync_unchecked(&src, &dst, &Opts::default());
    assert_eq!(refused.exit, 1, "{refused:#?}");
    let full = dst.join(chain_path(CUT)).join("blocked");
    let full = full.display().to_string();
    assert!(
        refused.errors.iter().any(|e| e.contains(&full)),
        "an error names {} in full: {:#?}",
        short(full.as_bytes()),
        refused.errors
    );
}

/// Mounts the file system of `kind` at `mnt/` in `t` for the test's life;
/// `None` after printing why not (a failure under CI).
fn mount(kind: &str, t: &TestDir) -> Option<TestMount> {
    let mnt = t.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let made = match kind {
        "tmpfs" => TestMount::tmpfs(&mnt, "64m"),
        _ => TestMount::ext4(&mnt, &t.join("ext4.img"), 64),
    };
    match made {
        Ok(m) => Some(m),
        Err(why) => {
            assert!(!crate::util::in_ci(), "CI=true but: {why}");
            eprintln!("SKIPPED deep {kind}: {why}");
            None
        }
    }
}

/// Runs [`scenario`] on a fresh `kind` file system per configuration.
fn on(kind: &str) {
    if std::env::var_os("PSYNC_TEST_NO_MOUNTS").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("SKIPPED deep {kind}: PSYNC_TEST_NO_MOUNTS is set");
        return;
    }
    if !is_root() {
        skip!("mounting a {kind} needs root");
    }
    each_config(&format!("deep_source_tree_on_{kind}"), |cfg, t| {
        let Some(m) = mount(kind, t) else { return };
        let started = Instant::now();
        scenario(cfg, m.dir());
        eprintln!("{cfg} on {kind}: {:?}", started.elapsed());
    });
}

#[test]
fn deep_source_tree_on_tmpfs() {
    on("tmpfs");
}

#[test]
fn deep_source_tree_on_ext4() {
    on("ext4");
}

/// A file of several chunks at the bottom: each chunk is a task of its
/// own that opens both directories from the roots (with direct I/O on
/// ext4, through a shared mapping on tmpfs). The library on 4 threads,
/// chunks of 1 MiB.
#[test]
fn large_file_in_chunks_at_the_bottom() {
    if std::env::var_os("PSYNC_TEST_NO_MOUNTS").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("SKIPPED: PSYNC_TEST_NO_MOUNTS is set");
        return;
    }
    if !is_root() {
        skip!("mounting a file system needs root");
    }
    let size = (3 << 20) + 12_345;
    for kind in ["tmpfs", "ext4"] {
        let t = TestDir::new(&format!("large_file_in_chunks_at_the_bottom-{kind}"));
        let Some(m) = mount(kind, &t) else { return };
        let (src, dst) = (m.dir().join("src"), m.dir().join("dst"));
        std::fs::create_dir(&src).unwrap();
        build_chain(&src, |i, d| {
            if i == DEPTH - 1 {
                let data = crate::util::tree::random_bytes(7, size);
                put_file(d, "large", &data, T);
            }
        });
        let run = || {
            let mut b = psync::builder(&src, &dst);
            b.threads(4).chunk_size(1 << 20);
            b.build().unwrap().run().unwrap()
        };
        let started = Instant::now();
        let first = run();
        eprintln!("{kind}: {:?}", started.elapsed());
        assert!(first.success(), "{kind}: {first:?}");
        assert_eq!(first.stats.chunks, 4, "{kind}: {first:?}");
        assert_eq!(first.stats.bytes_copied, size, "{kind}");
        assert_eq!(assert_same_trees(&src, &dst), 1 + DEPTH + 1);
        let again = run();
        assert!(again.success(), "{kind}: {again:?}");
        assert_eq!(
            again.stats.bytes_copied + again.stats.created,
            0,
            "{kind}: {again:?}"
        );
    }
}
