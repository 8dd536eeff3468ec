//! The entry model: what a walker reports about one directory entry.

use serde::{Deserialize, Serialize};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The type of a file system entry. Exhaustive: the file types of
/// POSIX's `S_IFMT` (ADR 013).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDev,
    /// A block device.
    BlockDev,
    /// A Unix socket.
    Socket,
}

impl Kind {
    /// From the `S_IFMT` bits of `st_mode`.
    pub fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            libc::S_IFSOCK => Kind::Socket,
            _ => Kind::File,
        }
    }

    /// rsync's one-letter type in `%i` (`f`, `d`, `L`, `D`, `S`).
    pub fn itemize_char(self) -> char {
        match self {
            Kind::File => 'f',
            Kind::Dir => 'd',
            Kind::Symlink => 'L',
            Kind::CharDev | Kind::BlockDev => 'D',
            Kind::Fifo | Kind::Socket => 'S',
        }
    }

    /// True for fifos, devices and sockets.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            Kind::Fifo | Kind::CharDev | Kind::BlockDev | Kind::Socket
        )
    }
}

/// Seconds and nanoseconds since the epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Time {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds, 0..1e9.
    pub nsec: u32,
}

impl Time {
    /// Builds a time.
    pub fn new(sec: i64, nsec: u32) -> Time {
        Time { sec, nsec }
    }

    /// True when `self` and `other` differ by at most `window_ns` nanoseconds.
    pub fn within(self, other: Time, window_ns: u64) -> bool {
        let a = i128::from(self.sec) * 1_000_000_000 + i128::from(self.nsec);
        let b = i128::from(other.sec) * 1_000_000_000 + i128::from(other.nsec);
        (a - b).unsigned_abs() <= u128::from(window_ns)
    }
}

/// The `lstat`-level metadata of one directory entry, with its raw name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Entry {
    /// The name inside its directory, raw bytes (need not be UTF-8).
    pub name: Name,
    /// File type.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (including setuid/setgid/sticky), without the type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Time,
    /// Access time.
    pub atime: Time,
    /// Status change time.
    pub ctime: Time,
    /// Number of hard links.
    pub nlink: u64,
    /// The file system holding it: its device as `stat` reports it on this
    /// node, as listed; in an engine's tasks and records, the run's id of
    /// that file system instead, the same on every node (ADR 014): the
    /// engine names a listing's devices once it is read.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Device number, for character and block devices.
    pub rdev: u64,
    /// Allocated 512-byte blocks.
    pub blocks: u64,
    /// The target of a symlink, raw bytes; `None` for other kinds.
    pub link: Option<Name>,
    /// True when the entry is the root of a mount (another file system, or
    /// a file or directory bind-mounted there), as `statx` reports it
    /// (`STATX_ATTR_MOUNT_ROOT`, Linux 5.8); false where it cannot tell.
    /// Not an attribute to sync: the engine leaves such a target alone.
    #[serde(default)]
    pub mount_root: bool,
    /// The inode flags `statx` reports with the listing: immutable,
    /// append-only and nodump, as `FS_XFLAG_*` bits
    /// ([`crate::copy::kit::fsattr`]); `None` where the file system does
    /// not report them (or the entry was read with `stat`). Compared on
    /// every run at no cost, and what tells the engine that a target
    /// entry must be unlocked before the run changes it (ADR 018).
    #[serde(default)]
    pub flags: Option<u32>,
    /// What a file-system backend keeps with a source entry (a Lustre
    /// FID, a layout's digest): set by its copier's
    /// [`crate::Copier::annotate`] when the entry is listed, carried in
    /// tasks with the entry to whichever engine runs them, and given back
    /// to the copier in every call that takes the entry. The engine
    /// neither reads nor compares it. Empty for the generic copier.
    pub fs_data: FsData,
}

/// Opaque bytes a backend keeps with an entry ([`Entry::fs_data`]), at
/// most [`FsData::MAX`] (an entry travels in every task about it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FsData(Option<Box<[u8]>>);

impl FsData {
    /// The most bytes an entry may carry.
    pub const MAX: usize = 256;

    /// `bytes` as an entry's data; `None` when longer than [`FsData::MAX`].
    pub fn new(bytes: &[u8]) -> Option<FsData> {
        (bytes.len() <= FsData::MAX).then(|| FsData((!bytes.is_empty()).then(|| bytes.into())))
    }

    /// The bytes (empty when none were set).
    pub fn bytes(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }

    /// True when no bytes are set.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl Entry {
    /// An entry `name` of type `kind`, every other field zero (no link
    /// text, not a mount root), for a walker or a test to fill in. A
    /// walker that reads `stat` or `statx` uses [`Entry::from_stat`] or
    /// [`Entry::from_statx`] instead.
    pub fn new(name: Name, kind: Kind) -> Entry {
        Entry {
            name,
            kind,
            size: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: Time::default(),
            atime: Time::default(),
            ctime: Time::default(),
            nlink: 0,
            dev: 0,
            ino: 0,
            rdev: 0,
            blocks: 0,
            link: None,
            mount_root: false,
            flags: None,
            fs_data: FsData::default(),
        }
    }

    /// Builds an entry from a `stat` result.
    pub fn from_stat(name: Name, st: &rustix::fs::Stat) -> Entry {
        #[allow(clippy::unnecessary_cast)] // field widths differ between targets
        Entry {
            name,
            kind: Kind::from_mode(st.st_mode as u32),
            size: st.st_size as u64,
            mode: (st.st_mode as u32) & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: Time::new(st.st_mtime as i64, st.st_mtime_nsec as u32),
            atime: Time::new(st.st_atime as i64, st.st_atime_nsec as u32),
            ctime: Time::new(st.st_ctime as i64, st.st_ctime_nsec as u32),
            nlink: st.st_nlink as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            rdev: st.st_rdev as u64,
            blocks: st.st_blocks as u64,
            link: None,
            mount_root: false,
            flags: None,
            fs_data: FsData::default(),
        }
    }

    /// Builds an entry from a `statx` result holding at least
    /// `STATX_BASIC_STATS`: the same fields as [`Entry::from_stat`] (`dev`
    /// and `rdev` in `st_dev`'s encoding, `makedev(major, minor)`, so
    /// hard-link keys and the source's device compare equal whichever call
    /// read them), and whether it is a mount root.
    pub fn from_statx(name: Name, st: &rustix::fs::Statx) -> Entry {
        use rustix::fs::StatxAttributes;
        let ts = |t: rustix::fs::StatxTimestamp| Time::new(t.tv_sec, t.tv_nsec);
        let root = StatxAttributes::MOUNT_ROOT;
        #[allow(clippy::useless_conversion)] // Dev is u64 on Linux, not everywhere
        Entry {
            name,
            kind: Kind::from_mode(u32::from(st.stx_mode)),
            size: st.stx_size,
            mode: u32::from(st.stx_mode) & 0o7777,
            uid: st.stx_uid,
            gid: st.stx_gid,
            mtime: ts(st.stx_mtime),
            atime: ts(st.stx_atime),
            ctime: ts(st.stx_ctime),
            nlink: u64::from(st.stx_nlink),
            dev: u64::from(rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor)),
            ino: st.stx_ino,
            rdev: u64::from(rustix::fs::makedev(st.stx_rdev_major, st.stx_rdev_minor)),
            blocks: st.stx_blocks,
            link: None,
            mount_root: st.stx_attributes_mask.contains(root) && st.stx_attributes.contains(root),
            flags: listed_flags(st),
            fs_data: FsData::default(),
        }
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    /// True when the entry is listed immutable or append-only: it (or,
    /// for a directory, the names in it) cannot be changed until those
    /// flags are lifted.
    pub fn is_protected(&self) -> bool {
        self.flags.is_some_and(|f| f & crate::fsattr::PROTECT != 0)
    }
}

/// The flags [`listed_flags`] gives for the open entry `fd` (a run's
/// root, which is opened, not listed): `None` where `statx` fails.
pub(crate) fn listed_flags_of(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    use rustix::fs::{AtFlags, StatxFlags};
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS).ok()?;
    listed_flags(&st)
}

/// The immutable, append-only and nodump flags of a `statx` result as
/// `FS_XFLAG_*` bits; `None` unless the file system reports all three
/// (and only for regular files and directories, the entries whose flags
/// psync syncs).
fn listed_flags(st: &rustix::fs::Statx) -> Option<u32> {
    use crate::fsattr::{APPEND, IMMUTABLE, NODUMP};
    use rustix::fs::StatxAttributes as A;
    let all = A::IMMUTABLE | A::APPEND | A::NODUMP;
    let kind = Kind::from_mode(u32::from(st.stx_mode));
    if !st.stx_attributes_mask.contains(all) || !matches!(kind, Kind::File | Kind::Dir) {
        return None;
    }
    let a = st.stx_attributes;
    Some(
        [
            (A::IMMUTABLE, IMMUTABLE),
            (A::APPEND, APPEND),
            (A::NODUMP, NODUMP),
        ]
        .iter()
        .filter(|(s, _)| a.contains(*s))
        .fold(0, |f, (_, x)| f | x),
    )
}

/// A raw file name or path component: bytes, not necessarily UTF-8.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Name(#[serde(with = "serde_bytes_compat")] pub Vec<u8>);

impl Name {
    /// The name as an `OsStr`.
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&OsStr> for Name {
    fn from(s: &OsStr) -> Name {
        Name(s.as_bytes().to_vec())
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name(s.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for Name {
    fn from(v: Vec<u8>) -> Name {
        Name(v)
    }
}

impl From<OsString> for Name {
    fn from(s: OsString) -> Name {
        Name(s.into_vec())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_os_str())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&self.0))
    }
}

/// Renders raw bytes as text the way rsync 3.2 does in its output: bytes
/// below 0x20 (but tab) and bytes that are not valid UTF-8 as `\#ooo`, a
/// backslash that would read as such an escape (`\#` and three digits) as
/// `\#134`, everything else as is. Lossless: distinct names print
/// distinctly.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut pos = 0;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            let tail = &bytes[pos..];
            let looks_escaped = c == '\\'
                && tail.len() >= 5
                && tail[1] == b'#'
                && tail[2..5].iter().all(u8::is_ascii_digit);
            if looks_escaped || (c < ' ' && c != '\t') {
                out.push_str(&format!("\\#{:03o}", c as u32));
            } else {
                out.push(c);
            }
            pos += c.len_utf8();
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\#{b:03o}"));
            pos += 1;
        }
    }
    out
}

/// A path relative to a run's root (source or target), as raw bytes joined
/// by `/`. The root itself is the empty path. Tasks carry these, never
/// absolute paths, so any worker on any node can resolve them.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RelPath(#[serde(with = "serde_bytes_compat")] Vec<u8>);

impl RelPath {
    /// The root of the run.
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    /// True for the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// This path with `name` appended.
    pub fn join(&self, name: &Name) -> RelPath {
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.0.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(&name.0);
        RelPath(v)
    }

    /// This path with the relative path `rest` appended.
    pub fn join_path(&self, rest: &RelPath) -> RelPath {
        if self.is_root() {
            return rest.clone();
        }
        let mut v = Vec::with_capacity(self.0.len() + 1 + rest.0.len());
        v.extend_from_slice(&self.0);
        if !rest.0.is_empty() {
            v.push(b'/');
            v.extend_from_slice(&rest.0);
        }
        RelPath(v)
    }

    /// Raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As a `Path` (relative; empty for the root).
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// The absolute path under `base`, for messages.
    pub fn under(&self, base: &Path) -> PathBuf {
        if self.is_root() {
            base.to_path_buf()
        } else {
            base.join(self.as_path())
        }
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    /// From raw bytes, as a trusted relative path.
    pub fn from_bytes(b: impl Into<Vec<u8>>) -> RelPath {
        RelPath(b.into())
    }

    /// The parent and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(RelPath, &[u8])> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (RelPath(self.0[..i].to_vec()), &self.0[i + 1..]),
            None => (RelPath::root(), &self.0[..]),
        })
    }

    /// The number of components.
    pub fn depth(&self) -> usize {
        self.components().count()
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_path())
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&self.0))
    }
}

/// Raw bytes in binary formats (postcard: lossless, for tasks) and
/// rsync-style escaped text in human-readable ones (JSON events, logs).
pub(crate) mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&super::escape(v))
        } else {
            s.serialize_bytes(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_str<E>(self, v: &str) -> Result<Vec<u8>, E> {
                Ok(v.as_bytes().to_vec())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_matches_rsync_style() {
        assert_eq!(escape(b"plain"), "plain");
        assert_eq!(escape(b"a\nb"), r"a\#012b");
        assert_eq!(escape(b"x\xffy"), r"x\#377y");
        assert_eq!(escape("é".as_bytes()), "é");
        assert_eq!(escape("é\n".as_bytes()), r"é\#012");
        assert_eq!(escape(b"tab\there\x7f"), "tab\there\x7f");
        assert_eq!(escape(br"\#012-x"), r"\#134#012-x");
        assert_eq!(escape(br"\#01"), r"\#01");
        assert_eq!(escape(br"a\b"), r"a\b");
    }

    #[test]
    fn relpath_join_and_components() {
        let p = RelPath::root()
            .join(&Name::from("a"))
            .join(&Name::from(b"b\xff".to_vec()));
        assert_eq!(p.as_bytes(), b"a/b\xff");
        assert_eq!(p.depth(), 2);
        assert!(RelPath::root().is_root());
    }

    #[test]
    fn postcard_roundtrip_keeps_raw_bytes() {
        let p = RelPath::from_bytes(b"d/\xfe\n".to_vec());
        let enc = postcard::to_allocvec(&p).unwrap();
        let dec: RelPath = postcard::from_bytes(&enc).unwrap();
        assert_eq!(p, dec);
    }

    #[test]
    fn json_shows_escaped_text() {
        let p = RelPath::from_bytes(b"d/x\xff\n".to_vec());
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""d/x\\#377\\#012""#);
    }

    #[test]
    fn time_window() {
        assert!(Time::new(10, 0).within(Time::new(10, 999), 1000));
        assert!(!Time::new(10, 0).within(Time::new(11, 0), 999_999_999));
        assert!(Time::new(10, 0).within(Time::new(11, 0), 1_000_000_000));
    }
}
