//! Walking and comparing trees: `assert_synced!`, target snapshots, temp checks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What `rsync -a` keeps of one entry (lstat, never following a symlink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `f`, `d`, `l`, `p` (fifo), `s` (socket), `c`, `b`.
    pub kind: char,
    /// Size (compared for everything but directories).
    pub size: u64,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// mtime (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Device number (devices only).
    pub rdev: u64,
    /// Symlink target bytes.
    pub link: Option<Vec<u8>>,
    /// Extended attributes (ACLs included, as `system.posix_acl_*`), sorted.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For a file with other hard links in the same tree: the first path
    /// (in byte order) of its link group, so groups compare across trees.
    pub link_group: Option<Vec<u8>>,
    /// Inode number (not compared across trees; kept for snapshots).
    pub ino: u64,
    /// Hard link count.
    pub nlink: u64,
}

/// Every entry of a tree by relative path (raw bytes; the root is `""`).
pub type Listing = BTreeMap<Vec<u8>, Meta>;

fn kind_char(ft: std::fs::FileType) -> char {
    if ft.is_symlink() {
        'l'
    } else if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        'f'
    } else if ft.is_fifo() {
        'p'
    } else if ft.is_socket() {
        's'
    } else if ft.is_char_device() {
        'c'
    } else {
        'b'
    }
}

fn meta_of(p: &Path) -> Meta {
    let m = p
        .symlink_metadata()
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let kind = kind_char(m.file_type());
    let link = (kind == 'l').then(|| {
        std::fs::read_link(p)
            .expect("readlink")
            .as_os_str()
            .as_bytes()
            .to_vec()
    });
    Meta {
        kind,
        size: m.size(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec()),
        rdev: if matches!(kind, 'c' | 'b') {
            m.rdev()
        } else {
            0
        },
        link,
        xattrs: xattrs_of(p),
        link_group: None,
        ino: m.ino(),
        nlink: m.nlink(),
    }
}

/// All extended attributes of `p` (not following a symlink), sorted by name.
pub fn xattrs_of(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 64 << 10];
    let n = match rustix::fs::llistxattr(p, &mut names[..]) {
        Ok(n) => n,
        // No xattr support on this fs (or for this type): nothing to compare.
        Err(rustix::io::Errno::NOTSUP) => return Vec::new(),
        Err(e) => panic!("llistxattr {}: {e}", p.display()),
    };
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names[..n]
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| {
            let cname = std::ffi::OsStr::from_bytes(name);
            let mut value = vec![0u8; 64 << 10];
            let len = rustix::fs::lgetxattr(p, cname, &mut value[..])
                .unwrap_or_else(|e| panic!("lgetxattr {} {}: {e}", p.display(), show(name)));
            value.truncate(len);
            (name.to_vec(), value)
        })
        .collect();
    out.sort();
    out
}

/// Lists a tree recursively (lstat; symlinks to directories are not entered).
pub fn listing(root: &Path) -> Listing {
    let mut out = BTreeMap::new();
    out.insert(Vec::new(), meta_of(root));
    walk(root, &mut Vec::new(), &mut |rel, p| {
        out.insert(rel.to_vec(), meta_of(p));
    });
    // Hard link groups (of any non-directory, as rsync -H keeps them): the
    // first path of each inode seen more than once.
    let mut first: BTreeMap<u64, (Vec<u8>, usize)> = BTreeMap::new();
    for (rel, m) in out.iter().filter(|(_, m)| m.kind != 'd' && m.nlink > 1) {
        first.entry(m.ino).or_insert_with(|| (rel.clone(), 0)).1 += 1;
    }
    for m in out.values_mut().filter(|m| m.kind != 'd' && m.nlink > 1) {
        m.link_group = first
            .get(&m.ino)
            .filter(|(_, seen)| *seen > 1)
            .map(|(p, _)| p.clone());
    }
    out
}

/// Calls `f(relative path, full path)` for every entry below `dir`.
fn walk(dir: &Path, rel: &mut Vec<u8>, f: &mut dyn FnMut(&[u8], &Path)) {
    let rd = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for e in rd {
        let e = e.unwrap_or_else(|err| panic!("read_dir {}: {err}", dir.display()));
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(e.file_name().as_bytes());
        let p = e.path();
        f(rel, &p);
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, rel, f);
        }
        rel.truncate(len);
    }
}

/// Printable form of a relative path (`.` for the root).
pub fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".into()
    } else {
        String::from_utf8_lossy(rel).escape_debug().to_string()
    }
}

fn line(rel: &[u8], m: &Meta) -> String {
    let mut s = format!(
        "{} {:04o} {}:{} {:>9} {}.{:09} {}",
        m.kind,
        m.mode,
        m.uid,
        m.gid,
        m.size,
        m.mtime.0,
        m.mtime.1,
        show(rel)
    );
    if let Some(l) = &m.link {
        let _ = write!(s, " -> {}", show(l));
    }
    if m.rdev != 0 {
        let _ = write!(s, " rdev={:#x}", m.rdev);
    }
    if let Some(g) = &m.link_group {
        let _ = write!(s, " [hard link group of {}]", show(g));
    }
    for (n, v) in &m.xattrs {
        let _ = write!(s, " {}={}", show(n), show(v));
    }
    s
}

/// `ls -l`-like text of a listing, cut at `max` lines.
pub fn render(l: &Listing, max: usize) -> String {
    let mut s = String::new();
    for (rel, m) in l.iter().take(max) {
        s.push_str(&line(rel, m));
        s.push('\n');
    }
    if l.len() > max {
        let _ = writeln!(s, "... and {} more", l.len() - max);
    }
    s
}

/// Where two files' bytes first differ, if they do.
fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let open =
        |p: &Path| std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if ba[..na] != bb[..nb] {
            let i = ba[..na]
                .iter()
                .zip(&bb[..nb])
                .position(|(x, y)| x != y)
                .unwrap_or(na.min(nb));
            return Some(off + i as u64);
        }
        if na == 0 {
            return None;
        }
        off += na as u64;
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    n
}

fn excluded(rel: &[u8], except: &[&[u8]]) -> bool {
    except
        .iter()
        .any(|ex| rel == *ex || (rel.starts_with(ex) && rel.get(ex.len()) == Some(&b'/')))
}

/// The differences between two trees, one line each.
pub fn differences(src: &Path, dst: &Path, except: &[&[u8]]) -> (Vec<String>, Listing, Listing) {
    let (ls, ld) = (listing(src), listing(dst));
    let mut diffs = Vec::new();
    for (rel, s) in &ls {
        if excluded(rel, except) {
            continue;
        }
        let Some(d) = ld.get(rel) else {
            diffs.push(format!("missing in dst: {}", line(rel, s)));
            continue;
        };
        let mut what = Vec::new();
        if s.kind != d.kind {
            what.push(format!("type {} != {}", s.kind, d.kind));
        } else {
            if s.kind != 'd' && s.size != d.size {
                what.push(format!("size {} != {}", s.size, d.size));
            }
            if s.link != d.link {
                what.push(format!(
                    "link {:?} != {:?}",
                    s.link.as_deref().map(show),
                    d.link.as_deref().map(show)
                ));
            }
            if s.rdev != d.rdev {
                what.push(format!("rdev {:#x} != {:#x}", s.rdev, d.rdev));
            }
            let same_size_file = s.kind == 'f' && s.size == d.size && s.size > 0;
            let (sp, dp) = (
                crate::util::join_rel(src, rel),
                crate::util::join_rel(dst, rel),
            );
            if let Some(at) = same_size_file.then(|| first_difference(&sp, &dp)).flatten() {
                what.push(format!("content differs at byte {at}"));
            }
        }
        // Linux has no symlink permissions (always 0777); rsync ignores them.
        if s.mode != d.mode && s.kind != 'l' {
            what.push(format!("mode {:04o} != {:04o}", s.mode, d.mode));
        }
        if s.xattrs != d.xattrs {
            let names = |m: &Meta| {
                m.xattrs
                    .iter()
                    .map(|(n, v)| format!("{}={}", show(n), show(v)))
                    .collect::<Vec<_>>()
            };
            what.push(format!("xattrs {:?} != {:?}", names(s), names(d)));
        }
        if s.kind != 'd' && s.link_group != d.link_group {
            let g = |m: &Meta| {
                m.link_group
                    .as_deref()
                    .map_or_else(|| "none".to_string(), show)
            };
            what.push(format!("hard link group {} != {}", g(s), g(d)));
        }
        if (s.uid, s.gid) != (d.uid, d.gid) {
            what.push(format!("owner {}:{} != {}:{}", s.uid, s.gid, d.uid, d.gid));
        }
        if s.mtime != d.mtime {
            what.push(format!(
                "mtime {}.{:09} != {}.{:09}",
                s.mtime.0, s.mtime.1, d.mtime.0, d.mtime.1
            ));
        }
        if !what.is_empty() {
            diffs.push(format!("differs: {}: {}", show(rel), what.join(", ")));
        }
    }
    for (rel, d) in &ld {
        if !ls.contains_key(rel) && !excluded(rel, except) {
            diffs.push(format!("extra in dst: {}", line(rel, d)));
        }
    }
    (diffs, ls, ld)
}

/// The body of `assert_synced!`.
#[track_caller]
pub fn assert_synced_impl(src: &Path, dst: &Path, except: &[&[u8]]) {
    let (diffs, ls, ld) = differences(src, dst, except);
    if diffs.is_empty() {
        return;
    }
    let shown: Vec<&str> = diffs.iter().take(40).map(String::as_str).collect();
    panic!(
        "trees differ ({} differences)\n  src: {}\n  dst: {}\n{}{}\n--- src listing ---\n{}--- dst listing ---\n{}",
        diffs.len(),
        src.display(),
        dst.display(),
        shown.join("\n"),
        if diffs.len() > 40 { "\n..." } else { "" },
        render(&ls, 150),
        render(&ld, 150),
    );
}

/// Identity and times of every target entry, to prove a run touched nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Inode number (a replaced entry gets a new one).
    pub ino: u64,
    /// mtime.
    pub mtime: (i64, i64),
    /// ctime (any chmod, chown, utimes, rename or write moves it).
    pub ctime: (i64, i64),
    /// Mode bits.
    pub mode: u32,
}

/// A [`Stamp`] per entry of a tree.
pub type StatSnapshot = BTreeMap<Vec<u8>, Stamp>;

/// Stamps of every entry of a tree, the root included.
pub fn stat_snapshot(root: &Path) -> StatSnapshot {
    let stamp = |p: &Path| {
        let m = p
            .symlink_metadata()
            .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        Stamp {
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            mode: m.mode(),
        }
    };
    let mut out = BTreeMap::new();
    out.insert(Vec::new(), stamp(root));
    walk(root, &mut Vec::new(), &mut |rel, p| {
        out.insert(rel.to_vec(), stamp(p));
    });
    out
}

/// Panics with the entries that differ between two snapshots.
#[track_caller]
pub fn assert_untouched(before: &StatSnapshot, after: &StatSnapshot, what: &str) {
    let mut diffs = Vec::new();
    for (rel, b) in before {
        match after.get(rel) {
            None => diffs.push(format!("removed: {}", show(rel))),
            Some(a) if a != b => diffs.push(format!("changed: {}: {b:?} -> {a:?}", show(rel))),
            Some(_) => {}
        }
    }
    for rel in after.keys().filter(|k| !before.contains_key(*k)) {
        diffs.push(format!("added: {}", show(rel)));
    }
    assert!(
        diffs.is_empty(),
        "{what}: the tree was modified:\n{}",
        diffs.join("\n")
    );
}

/// Relative paths of the entries under `root` whose name starts with
/// `.psync-tmp.` (none when `root` does not exist).
pub fn temp_like(root: &Path) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    if root.symlink_metadata().is_ok() {
        walk(root, &mut Vec::new(), &mut |rel, _| {
            if base_name(rel).starts_with(psync::TEMP_PREFIX.as_bytes()) {
                found.push(rel.to_vec());
            }
        });
    }
    found
}

fn base_name(rel: &[u8]) -> &[u8] {
    rel.rsplit(|&b| b == b'/').next().unwrap_or(rel)
}

/// True for names in the exact format of psync's temporaries:
/// `.psync-tmp.<16 hex run id>.<16 hex tag>`.
pub fn is_temp_name(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(psync::TEMP_PREFIX.as_bytes()) else {
        return false;
    };
    let parts: Vec<&[u8]> = rest.split(|&b| b == b'.').collect();
    let hex = |p: &[u8]| !p.is_empty() && p.iter().all(u8::is_ascii_hexdigit);
    matches!(parts.as_slice(), [id, tag] if id.len() == 16 && tag.len() == 16 && hex(id) && hex(tag))
}

/// Panics if any entry under `root` is named like one of psync's
/// temporaries (starts with `.psync-tmp.`).
#[track_caller]
pub fn assert_no_temps(root: &Path) {
    let found: Vec<String> = temp_like(root).iter().map(|r| show(r)).collect();
    assert!(
        found.is_empty(),
        "temporaries left in {}: {found:?}",
        root.display()
    );
}

/// What a run may leave named like a temporary: names that are in the
/// source (ordinary data there), and names that were in the target before
/// the run without being in psync's exact temporary format (a user's
/// files). `before` is [`temp_like`] of the target before the run.
#[track_caller]
pub fn assert_no_new_temps(src: &Path, dst: &Path, before: &[Vec<u8>]) {
    let left: Vec<String> = temp_like(dst)
        .into_iter()
        .filter(|rel| crate::util::join_rel(src, rel).symlink_metadata().is_err())
        // A user's pre-existing look-alike may stay; a real temporary may not.
        .filter(|rel| !before.contains(rel) || is_temp_name(base_name(rel)))
        .map(|rel| show(&rel))
        .collect();
    assert!(
        left.is_empty(),
        "temporaries left in {} after the run: {left:?}",
        dst.display()
    );
}
