//! `--manifest`: a file of one line per regular file, sorted by path so
//! two manifests diff, and `psync verify --manifest FILE DST`, which
//! checks a tree against one.
//!
//! A line is `HASH SIZE MTIME PATH`: the xxh3-128 of the content in 32
//! lowercase hex digits, the size in bytes, the modification time as
//! seconds since the epoch, a dot and nine digits of nanoseconds, and the
//! path relative to the root, escaped: `\\` for a backslash, `\xHH` for
//! a control character (a newline is `\x0a`), DEL, or a byte that is not
//! part of valid UTF-8. Any other character stands for itself (spaces
//! too: the path is the rest of the line). Lines starting with `#` are
//! comments.

use psync_core::{Change, Dir, Event, Kind, RelPath, Time};
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::path::Path;

/// The first line of a manifest.
const HEADER: &str = "# psync manifest 1: xxh3-128 size mtime path";

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub size: u64,
    pub mtime: Time,
    pub hash: String,
}

/// The files of a manifest, by path.
pub type Manifest = BTreeMap<RelPath, Line>;

/// `path` escaped for a manifest line.
pub fn escape(path: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(path.len());
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_ascii_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The bytes of a path [`escape`] wrote.
pub fn unescape(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if b.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            b'\\' if b.get(i + 1) == Some(&b'x') => {
                // Two hex digits (`from_str_radix` alone takes `+f`).
                let hex = s
                    .get(i + 2..i + 4)
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            b'\\' => return None,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// A manifest line.
pub fn format(path: &RelPath, l: &Line) -> String {
    format!(
        "{} {} {}.{:09} {}",
        l.hash,
        l.size,
        l.mtime.sec,
        l.mtime.nsec,
        escape(path.as_bytes())
    )
}

/// Parses a manifest line (not a comment).
pub fn parse(line: &str) -> Option<(RelPath, Line)> {
    let mut parts = line.splitn(4, ' ');
    let hash = parts.next()?;
    let size = parts.next()?.parse().ok()?;
    let (sec, nsec) = parts.next()?.split_once('.')?;
    let path = unescape(parts.next()?)?;
    let ok = hash.len() == 32 && hash.bytes().all(|c| c.is_ascii_hexdigit()) && nsec.len() == 9;
    let nsec: u32 = nsec.parse().ok().filter(|&n| ok && n < 1_000_000_000)?;
    let mtime = Time::new(sec.parse().ok()?, nsec);
    (!path.is_empty()).then(|| {
        let line = Line {
            size,
            mtime,
            hash: hash.to_ascii_lowercase(),
        };
        (RelPath::from_bytes(path), line)
    })
}

/// Writes `m` to `file` in path order, replacing it only once the new
/// one is complete: written to a new file beside it (mode 0600: it names
/// other users' files and their hashes; `O_EXCL`, so nothing planted
/// there, a symlink included, is opened) and renamed over it. A symlink
/// at `file` is replaced, never followed.
pub fn write(file: &Path, m: &Manifest) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = file
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".psync-new.{}", std::process::id()));
    let tmp = file.with_file_name(tmp_name);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = (|| {
        let mut out = io::BufWriter::new(f);
        writeln!(out, "{HEADER}")?;
        for (path, l) in m {
            writeln!(out, "{}", format(path, l))?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Reads a manifest.
pub fn read(file: &Path) -> io::Result<Manifest> {
    let f = io::BufReader::new(std::fs::File::open(file)?);
    let mut m = Manifest::new();
    for (n, line) in f.lines().enumerate() {
        let line = line?;
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((path, l)) = parse(&line) else {
            let msg = format!("line {}: not a manifest line", n + 1);
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        };
        m.insert(path, l);
    }
    Ok(m)
}

/// A regular file as listed: what its hashing checks it still is.
#[derive(Debug, Clone, Copy)]
struct Listed {
    size: u64,
    mtime: Time,
    id: (u64, u64),
}

/// The regular files below `root`, by path. Every directory is opened
/// beneath `root` without following a symlink (a user who can write in
/// the tree may swap a directory for a symlink while it is walked: root
/// would list and hash what it points to); what cannot be listed is
/// reported and counted in `errors`.
fn regular_files(root: &Dir, shown: &Path, errors: &mut u64) -> BTreeMap<RelPath, Listed> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![RelPath::root()];
    while let Some(rel) = dirs.pop() {
        let listing = match root.open_beneath(&rel).and_then(|d| d.list()) {
            Ok(l) => l,
            Err(e) => {
                let dir = rel.under(shown);
                crate::output::eprint(&format!("read directory {}: {e}", dir.display()));
                *errors += 1;
                continue;
            }
        };
        for (name, e) in listing.failed {
            let path = rel.join(&name).under(shown);
            crate::output::eprint(&format!("list {}: {e}", path.display()));
            *errors += 1;
        }
        for e in listing.entries {
            let path = rel.join(&e.name);
            match e.kind {
                Kind::Dir => dirs.push(path),
                Kind::File => {
                    let listed = Listed {
                        size: e.size,
                        mtime: e.mtime,
                        id: (e.dev, e.ino),
                    };
                    out.insert(path, listed);
                }
                _ => {}
            }
        }
    }
    out
}

/// The differences of the regular files below `root` from `m`, as
/// itemize events in path order, and the number of files that could not
/// be read. Content is hashed on `threads` threads.
pub fn check(m: &Manifest, root: &Path, threads: usize) -> (Vec<Event>, u64) {
    let mut errors = 0;
    let dir = match Dir::open_root(root) {
        Ok(d) => d,
        Err(e) => {
            crate::output::eprint(&format!("open {}: {e}", root.display()));
            return (Vec::new(), 1);
        }
    };
    let found = regular_files(&dir, root, &mut errors);
    let mut diffs: BTreeMap<RelPath, Option<Change>> = BTreeMap::new();
    let mut to_hash = Vec::new();
    for (path, want) in m {
        let Some(listed) = found.get(path) else {
            diffs.insert(path.clone(), Some(Change::new_entry(Kind::File)));
            continue;
        };
        let mut c = Change::attrs_of(Kind::File);
        c.size = listed.size != want.size;
        c.time = listed.mtime != want.mtime;
        if c.size {
            c.transfer = true;
        } else {
            to_hash.push((path, *listed));
        }
        if c.any() {
            diffs.insert(path.clone(), Some(c));
        }
    }
    for path in found.keys().filter(|p| !m.contains_key(*p)) {
        diffs.insert(path.clone(), None);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let hashed: Vec<(RelPath, io::Result<String>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    // The directory of the last file: its neighbours
                    // come next, in path order.
                    let mut open: Option<(RelPath, Dir)> = None;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(path, listed)) = to_hash.get(i) else {
                            return done;
                        };
                        done.push((path.clone(), hash_listed(&dir, &mut open, path, listed)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for (path, h) in hashed {
        match h {
            Ok(h) if h == m[&path].hash => {}
            Ok(_) => {
                let c = diffs
                    .entry(path)
                    .or_insert(Some(Change::attrs_of(Kind::File)));
                if let Some(c) = c {
                    c.checksum = true;
                    c.transfer = true;
                }
            }
            Err(e) => {
                let shown = path.under(root);
                crate::output::eprint(&format!("read {}: {e}", shown.display()));
                errors += 1;
            }
        }
    }
    let events = diffs
        .into_iter()
        .map(|(path, change)| Event::Itemize {
            path,
            change,
            kind: Kind::File,
            link: None,
        })
        .collect();
    (events, errors)
}

/// The xxh3-128 of the content of the file listed at `path`, in hex:
/// opened beneath `root` without following a symlink (nor blocking on a
/// FIFO put in its place), and only while it is the inode listed.
fn hash_listed(
    root: &Dir,
    open: &mut Option<(RelPath, Dir)>,
    path: &RelPath,
    listed: Listed,
) -> io::Result<String> {
    let (parent, name) = path
        .split_last()
        .ok_or_else(|| io::Error::other("the root is not a file"))?;
    let dir = match open.take() {
        Some((p, d)) if p == parent => d,
        _ => root.open_beneath(&parent)?,
    };
    let f = dir.open_read(name);
    *open = Some((parent, dir));
    let f = f?;
    let st = rustix::fs::fstat(&f)?;
    let regular = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
    if !regular || (st.st_dev, st.st_ino) != listed.id {
        return Err(io::Error::other("replaced while being verified"));
    }
    let len = u64::try_from(st.st_size).unwrap_or(0);
    Ok(format!(
        "{:032x}",
        psync_core::hash_segments(&f, &[(0, len)])?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let cases: [&[u8]; 6] = [
            b"plain",
            b"with space/and\\back",
            b"new\nline",
            b"bad\xff\xfeutf8",
            "caf\u{e9}/\u{1f600}".as_bytes(),
            b"tab\there\x7f",
        ];
        for p in cases {
            let e = escape(p);
            assert!(!e.contains('\n') && !e.contains('\t'), "{e}");
            assert_eq!(unescape(&e).as_deref(), Some(p), "{e}");
        }
        assert_eq!(escape(b"a\nb\\c\xff"), "a\\x0ab\\\\c\\xff");
        assert_eq!(unescape("a\\q"), None);
        // Garbled escapes are refused, not read as some byte.
        for bad in ["a\\x+f", "a\\x0", "a\\x", "a\\xg0", "a\\x\u{e9}"] {
            assert_eq!(unescape(bad), None, "{bad}");
        }
    }

    /// A symlink at FILE is replaced, not followed (root must not be
    /// steered onto another file), and the manifest is 0600.
    #[test]
    fn a_symlink_at_the_manifest_s_path_is_replaced_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("psync-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let file = dir.join("m");
        std::os::unix::fs::symlink(&victim, &file).unwrap();
        let mut m = Manifest::new();
        let line = Line {
            size: 1,
            mtime: Time::new(1, 0),
            hash: "0".repeat(32),
        };
        m.insert(RelPath::from_bytes(&b"f"[..]), line.clone());
        write(&file, &m).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            read(&file).unwrap().get(&RelPath::from_bytes(&b"f"[..])),
            Some(&line)
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            2,
            "no temporary left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lines_round_trip() {
        let path = RelPath::from_bytes(&b"d/x y\n\xff"[..]);
        let l = Line {
            size: 12,
            mtime: Time::new(-5, 7),
            hash: "0123456789abcdef0123456789abcdef".into(),
        };
        let s = format(&path, &l);
        assert_eq!(
            s,
            "0123456789abcdef0123456789abcdef 12 -5.000000007 d/x y\\x0a\\xff"
        );
        assert_eq!(parse(&s), Some((path, l)));
        assert_eq!(parse("zz 1 2.000000000 p"), None);
    }

    /// What a user who can write in the tree swaps in after the listing
    /// (a symlink for a directory or a file, a FIFO) is not read: the
    /// hash of the listed inode or an error, never another file's.
    #[test]
    fn swapped_entries_are_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let (root, outside) = (t.path().join("root"), t.path().join("outside"));
        for base in [&root, &outside] {
            std::fs::create_dir_all(base.join("d")).unwrap();
            std::fs::write(base.join("d/f"), b"same").unwrap();
            std::fs::write(base.join("g"), b"same").unwrap();
        }
        std::fs::write(root.join("p"), b"").unwrap();
        let dir = Dir::open_root(&root).unwrap();
        let mut errors = 0;
        let found = regular_files(&dir, &root, &mut errors);
        assert_eq!(errors, 0);
        let rel = |p: &str| RelPath::from_bytes(p);
        let hash_of = |p: &str| hash_listed(&dir, &mut None, &rel(p), found[&rel(p)]);
        let want = hash_of("g").unwrap();
        assert_eq!(hash_of("d/f").unwrap(), want);
        std::fs::rename(root.join("d"), root.join("d.old")).unwrap();
        std::os::unix::fs::symlink(outside.join("d"), root.join("d")).unwrap();
        std::fs::remove_file(root.join("g")).unwrap();
        std::os::unix::fs::symlink(outside.join("g"), root.join("g")).unwrap();
        std::fs::remove_file(root.join("p")).unwrap();
        let st = std::process::Command::new("mkfifo")
            .arg(root.join("p"))
            .status()
            .unwrap();
        assert!(st.success());
        for p in ["d/f", "g", "p"] {
            assert!(hash_of(p).is_err(), "{p}");
        }
        // Listed again: the symlinks are not descended, the FIFO not a file.
        let found = regular_files(&dir, &root, &mut errors);
        let names: Vec<_> = found.keys().map(|p| p.to_string()).collect();
        assert_eq!(names, ["d.old/f"]);
    }
}
