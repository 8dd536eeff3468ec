//! The fixture builder behind `tree!`.

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What to put at a path.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A regular file with these bytes.
    File(Vec<u8>),
    /// A regular file of this many pseudo-random bytes (seeded by the path).
    Random(u64),
    /// A directory (an existing one is kept with its contents).
    Dir,
    /// A symlink with this raw target.
    Symlink(Vec<u8>),
    /// A named pipe.
    Fifo,
    /// A Unix socket node.
    Socket,
    /// A character device (major, minor).
    CharDev(u32, u32),
    /// A hard link to the file at this path (relative to the tree's root).
    HardLink(Vec<u8>),
    /// A sparse file of this length: 4 KiB of data at the start and at
    /// the end, a hole between.
    Sparse(u64),
    /// Whatever is there already; only the attributes change.
    Keep,
    /// Nothing: remove what is there.
    Absent,
}

/// One line of a `tree!`.
#[derive(Debug, Clone)]
pub struct Node {
    path: Vec<u8>,
    kind: Kind,
    mode: Option<u32>,
    mtime: Option<(i64, u32)>,
    owner: Option<(u32, u32)>,
    xattrs: Vec<(String, Vec<u8>)>,
    acls: Vec<String>,
}

impl Node {
    /// `kind` at `path` (relative, `/`-separated, raw bytes).
    pub fn at(path: impl AsRef<[u8]>, kind: Kind) -> Node {
        Node {
            path: path.as_ref().to_vec(),
            kind,
            mode: None,
            mtime: None,
            owner: None,
            xattrs: Vec::new(),
            acls: Vec::new(),
        }
    }

    /// Permission bits, including setuid/setgid/sticky.
    pub fn mode(mut self, mode: u32) -> Node {
        self.mode = Some(mode);
        self
    }

    /// Modification time (and access time) in seconds and nanoseconds.
    pub fn mtime(mut self, sec: i64, nsec: u32) -> Node {
        self.mtime = Some((sec, nsec));
        self
    }

    /// Numeric owner and group (needs root for other ids).
    pub fn owner(mut self, uid: u32, gid: u32) -> Node {
        self.owner = Some((uid, gid));
        self
    }

    /// An extended attribute (`user.*` needs a file system that has them).
    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> Node {
        self.xattrs
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// A POSIX ACL entry, as `setfacl -m` takes it (`u:1234:r-x`).
    pub fn acl(mut self, spec: &str) -> Node {
        self.acls.push(spec.to_string());
        self
    }
}

/// A regular file with `content`.
pub fn file(content: impl AsRef<[u8]>) -> Kind {
    Kind::File(content.as_ref().to_vec())
}

/// A regular file of `len` pseudo-random bytes, different for every path.
pub fn random(len: u64) -> Kind {
    Kind::Random(len)
}

/// A directory.
pub fn dir() -> Kind {
    Kind::Dir
}

/// A symlink pointing at `target` (raw bytes, need not exist).
pub fn symlink(target: impl AsRef<[u8]>) -> Kind {
    Kind::Symlink(target.as_ref().to_vec())
}

/// A named pipe.
pub fn fifo() -> Kind {
    Kind::Fifo
}

/// A Unix socket node (made with mknod, no listener).
pub fn socket() -> Kind {
    Kind::Socket
}

/// A character device (root only).
pub fn chardev(major: u32, minor: u32) -> Kind {
    Kind::CharDev(major, minor)
}

/// A hard link to the file at `target` (a path in the same tree).
pub fn hardlink(target: impl AsRef<[u8]>) -> Kind {
    Kind::HardLink(target.as_ref().to_vec())
}

/// A sparse file of `len` bytes (data at both ends, a hole between).
pub fn sparse(len: u64) -> Kind {
    Kind::Sparse(len)
}

/// The entry already there; only the attributes given change.
pub fn keep() -> Kind {
    Kind::Keep
}

/// Remove the entry (recursively).
pub fn absent() -> Kind {
    Kind::Absent
}

/// Creates every node under `root`, then applies the attributes (after all
/// creations, so creating a child does not disturb a parent's mtime).
pub fn build(root: &Path, nodes: Vec<Node>) {
    std::fs::create_dir_all(root).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", root.display()));
    for n in &nodes {
        create(root, n);
    }
    for n in nodes.iter().rev() {
        apply_attrs(&path_of(root, &n.path), n);
    }
}

fn path_of(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

fn create(root: &Path, n: &Node) {
    let p = path_of(root, &n.path);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent.display()));
    }
    let existing = p.symlink_metadata().ok();
    match &n.kind {
        Kind::Keep => assert!(
            existing.is_some(),
            "tree!: keep() of missing {}",
            p.display()
        ),
        Kind::Dir if existing.as_ref().is_some_and(|m| m.is_dir()) => {}
        kind => {
            if existing.is_some() {
                super::remove_tree_or_file(&p);
            }
            make(root, &p, kind);
        }
    }
}

fn make(root: &Path, p: &Path, kind: &Kind) {
    let r = match kind {
        Kind::HardLink(target) => std::fs::hard_link(path_of(root, target), p),
        Kind::Sparse(len) => write_sparse(p, *len),
        Kind::File(data) => std::fs::write(p, data),
        Kind::Random(len) => std::fs::write(p, random_bytes(seed_of(p), *len)),
        Kind::Dir => std::fs::create_dir(p),
        Kind::Symlink(t) => std::os::unix::fs::symlink(OsStr::from_bytes(t), p),
        Kind::Fifo => mknod(p, FileType::Fifo, 0),
        Kind::Socket => mknod(p, FileType::Socket, 0),
        Kind::CharDev(major, minor) => mknod(
            p,
            FileType::CharacterDevice,
            rustix::fs::makedev(*major, *minor),
        ),
        Kind::Keep | Kind::Absent => Ok(()),
    };
    r.unwrap_or_else(|e| panic!("tree!: create {} as {kind:?}: {e}", p.display()));
}

fn write_sparse(p: &Path, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(p)?;
    f.set_len(len)?;
    let chunk = random_bytes(seed_of(p), 4096.min(len));
    f.write_all_at(&chunk, 0)?;
    f.write_all_at(&chunk, len - chunk.len() as u64)
}

fn mknod(p: &Path, ft: FileType, dev: rustix::fs::Dev) -> std::io::Result<()> {
    Ok(rustix::fs::mknodat(
        CWD,
        p,
        ft,
        Mode::from_raw_mode(0o644),
        dev,
    )?)
}

fn apply_attrs(p: &Path, n: &Node) {
    if let Some((uid, gid)) = n.owner {
        let (u, g) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        rustix::fs::chownat(CWD, p, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
            .unwrap_or_else(|e| panic!("tree!: chown {}: {e}", p.display()));
    }
    if let Some(mode) = n.mode {
        assert!(
            !p.symlink_metadata().unwrap().is_symlink(),
            "tree!: mode() on symlink {}",
            p.display()
        );
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("tree!: chmod {}: {e}", p.display()));
    }
    for (name, value) in &n.xattrs {
        set_xattr(p, name, value)
            .unwrap_or_else(|e| panic!("tree!: set xattr {name} on {}: {e}", p.display()));
    }
    for spec in &n.acls {
        let out = std::process::Command::new("setfacl")
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
    if let Some((sec, nsec)) = n.mtime {
        set_mtime(p, sec, nsec);
    }
}

/// Sets an extended attribute of `p` without following a symlink.
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    Ok(rustix::fs::lsetxattr(
        p,
        name,
        value,
        rustix::fs::XattrFlags::empty(),
    )?)
}

/// Sets atime and mtime of `p` without following a symlink.
pub fn set_mtime(p: &Path, sec: i64, nsec: u32) {
    let ts = Timespec {
        tv_sec: sec,
        tv_nsec: i64::from(nsec) as _,
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(CWD, p, &times, AtFlags::SYMLINK_NOFOLLOW)
        .unwrap_or_else(|e| panic!("tree!: set times of {}: {e}", p.display()));
}

/// A seed from a path's bytes (FNV-1a), so every file differs.
fn seed_of(p: &Path) -> u64 {
    p.as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

/// `len` pseudo-random bytes: one 64 KiB xorshift block, repeated with the
/// block number stamped into each copy (fast even in a debug build, and no
/// two 64 KiB blocks of one file, or of two files, are equal).
pub fn random_bytes(seed: u64, len: u64) -> Vec<u8> {
    const BLOCK: usize = 64 << 10;
    let mut x = seed | 1;
    let mut block = Vec::with_capacity(BLOCK);
    while block.len() < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        block.extend_from_slice(&x.to_le_bytes());
    }
    let len = usize::try_from(len).expect("size fits in memory");
    let mut out = Vec::with_capacity(len);
    let mut k = 0u64;
    while out.len() < len {
        let start = out.len();
        out.extend_from_slice(&block[..BLOCK.min(len - start)]);
        let stamp = (seed ^ k).to_le_bytes();
        let end = out.len().min(start + 8);
        out[start..end].copy_from_slice(&stamp[..end - start]);
        k += 1;
    }
    out
}
