//! What a file system is and can do, as psync sees it (`psync probe`):
//! its type and `statfs` magic, its mount (from `/proc/self/mountinfo`),
//! and its capabilities, each yes, no or unknown with a short reason.
//!
//! By default nothing is written: capabilities come from read-only calls
//! on the path (xattr reads, `FS_IOC_FSGETXATTR`, `statx`), from files
//! already there, and from what is known of the file system type. With
//! [`ProbeOptions::write_test`] the probe also tries each on files of its
//! own in the path's directory: unnamed (`O_TMPFILE`) where the file
//! system has them, else unlinked as soon as they are open, so nothing of
//! them stays even if the probe is killed.
//!
//! ```no_run
//! let p = psync_core::probe::FsProbe::probe("/scratch".as_ref(), Default::default())?;
//! println!("{} ({:#x}): reflink {}", p.fs_type, p.magic, p.capabilities.reflink.state);
//! # Ok::<(), std::io::Error>(())
//! ```

use serde::{Serialize, Serializer};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `statfs` `f_type` magics of file systems psync treats apart or names
/// (`<linux/magic.h>` and the file systems' own sources).
pub mod magic {
    /// ext2, ext3 and ext4 (one magic).
    pub const EXT4: u64 = 0xEF53;
    /// XFS.
    pub const XFS: u64 = 0x5846_5342;
    /// btrfs.
    pub const BTRFS: u64 = 0x9123_683E;
    /// tmpfs (and devtmpfs).
    pub const TMPFS: u64 = 0x0102_1994;
    /// ramfs.
    pub const RAMFS: u64 = 0x8584_58F6;
    /// NFS (every version).
    pub const NFS: u64 = 0x6969;
    /// FUSE (any daemon: sshfs, s3fs, ...).
    pub const FUSE: u64 = 0x6573_5546;
    /// overlayfs.
    pub const OVERLAYFS: u64 = 0x794C_7630;
    /// Lustre (`LL_SUPER_MAGIC`).
    pub const LUSTRE: u64 = 0x0BD0_0BD0;
    /// OpenZFS.
    pub const ZFS: u64 = 0x2FC1_2FC1;
    /// IBM Storage Scale (GPFS).
    pub const GPFS: u64 = 0x4750_4653;
    /// BeeGFS.
    pub const BEEGFS: u64 = 0x1983_0326;
    /// CephFS (the kernel client).
    pub const CEPHFS: u64 = 0x00C3_6400;
}

/// Known magics and their names.
const KNOWN: &[(u64, &str)] = &[
    (magic::EXT4, "ext2/ext3/ext4"),
    (magic::XFS, "xfs"),
    (magic::BTRFS, "btrfs"),
    (magic::TMPFS, "tmpfs"),
    (magic::NFS, "nfs"),
    (magic::FUSE, "fuse"),
    (magic::OVERLAYFS, "overlayfs"),
    (magic::LUSTRE, "lustre"),
    (magic::ZFS, "zfs"),
    (magic::GPFS, "gpfs"),
    (magic::BEEGFS, "beegfs"),
    (magic::CEPHFS, "cephfs"),
    (0xCA45_1A4E, "bcachefs"),
    (0xF2F5_2010, "f2fs"),
    (0x7461_636F, "ocfs2"),
    (0x0116_1970, "gfs2"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x0102_1997, "9p"),
    (0x2003_0528, "orangefs"),
    (0x5346_414F, "afs"),
    (0x8584_58F6, "ramfs"),
    (0x9584_58F6, "hugetlbfs"),
    (0x7371_7368, "squashfs"),
    (0xE0F5_E1E2, "erofs"),
    (0x9660, "iso9660"),
    (0x4D44, "vfat"),
    (0x2011_BAB0, "exfat"),
    (0x5346_544E, "ntfs"),
    (0x7366_746E, "ntfs3"),
    (0x3153_464A, "jfs"),
    (0x5265_4973, "reiserfs"),
    (0x3434, "nilfs2"),
    (0x1501_3346, "udf"),
    (0x9FA0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x6367_7270, "cgroup2"),
];

/// The name of the file system of `statfs` magic `m`, when known.
pub fn fs_name(m: u64) -> Option<&'static str> {
    KNOWN.iter().find(|(k, _)| *k == m).map(|(_, n)| *n)
}

/// `xfs (0x58465342)`, or `unknown (0x12345678)`.
pub fn fs_label(m: u64) -> String {
    format!("{} ({m:#010x})", fs_name(m).unwrap_or("unknown"))
}

/// The `statfs` magic of the file system holding `path` (followed).
///
/// # Errors
/// As `statfs`.
pub fn fs_magic_of(path: &Path) -> io::Result<u64> {
    #[allow(clippy::unnecessary_cast)]
    Ok(rustix::fs::statfs(path)?.f_type as u64)
}

/// The `statfs` magic for `path`, or, when it does not exist yet, for its
/// nearest existing ancestor (where it would be created).
///
/// # Errors
/// As `statfs`, for a reason other than a missing path.
pub fn fs_magic_or_parent(path: &Path) -> io::Result<u64> {
    let mut at = path;
    loop {
        match fs_magic_of(at) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && at != Path::new(".") => {
                at = match at.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
            }
            r => return r,
        }
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MountInfo {
    /// Where it is mounted.
    #[serde(serialize_with = "lossy")]
    pub mount_point: PathBuf,
    /// The directory of its file system mounted there (`/` unless a bind
    /// mount or a btrfs subvolume).
    #[serde(serialize_with = "lossy")]
    pub root: PathBuf,
    /// The file system type as the kernel names it (`ext4`, `fuse.sshfs`).
    pub fs_type: String,
    /// The mount source (a device, `server:/export`, `none`).
    pub source: String,
    /// Per-mount options (`rw,noatime`).
    pub mount_options: String,
    /// The file system's options (`rw,attr2,inode64`).
    pub super_options: String,
    /// `major:minor` of the file system.
    pub dev: String,
}

impl MountInfo {
    /// True when `opt` (`noacl`, `vers=4.2`) is among the mount's or the
    /// file system's options.
    pub fn has_option(&self, opt: &str) -> bool {
        let mut all = self
            .mount_options
            .split(',')
            .chain(self.super_options.split(','));
        all.any(|o| o == opt)
    }
}

/// The mounts of `/proc/self/mountinfo`'s text, in its order (later lines
/// mounted later, on top of earlier ones at the same place). Lines that do
/// not parse are left out.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_mount_line).collect()
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
/// ids, device, root, mount point, options, optional fields up to `-`,
/// then type, source and super options.
fn parse_mount_line(line: &str) -> Option<MountInfo> {
    let mut f = line.split(' ');
    let (_id, _parent, dev) = (f.next()?, f.next()?, f.next()?);
    let (root, point, opts) = (f.next()?, f.next()?, f.next()?);
    f.by_ref().find(|x| *x == "-")?;
    let (fs_type, source) = (f.next()?, f.next()?);
    let super_options = f.next().unwrap_or("");
    Some(MountInfo {
        mount_point: path_of(unescape(point)),
        root: path_of(unescape(root)),
        fs_type: String::from_utf8_lossy(&unescape(fs_type)).into_owned(),
        source: String::from_utf8_lossy(&unescape(source)).into_owned(),
        mount_options: opts.to_string(),
        super_options: super_options.to_string(),
        dev: dev.to_string(),
    })
}

fn path_of(b: Vec<u8>) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&b))
}

/// Undoes the kernel's escapes of mountinfo fields: space, tab, newline
/// and backslash are written `\040`, `\011`, `\012`, `\134` (three octal
/// digits). Anything else stays as it is.
pub fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The mount holding the resolved (absolute, symlink-free) path `path`:
/// the one whose mount point is the longest prefix of it, the latest of
/// those when several are mounted at one place.
pub fn mount_of<'a>(path: &Path, mounts: &'a [MountInfo]) -> Option<&'a MountInfo> {
    let mut best: Option<&MountInfo> = None;
    for m in mounts.iter().filter(|m| path.starts_with(&m.mount_point)) {
        let longer =
            best.is_none_or(|b| m.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len());
        if longer {
            best = Some(m);
        }
    }
    best
}

/// Whether a file system can do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Support {
    /// It can.
    Yes,
    /// It cannot.
    No,
    /// Not known without trying (see [`ProbeOptions::write_test`]).
    Unknown,
}

impl std::fmt::Display for Support {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Support::Yes => "yes",
            Support::No => "no",
            Support::Unknown => "unknown",
        })
    }
}

/// One capability: yes, no or unknown, why, and a number where one says
/// more (an alignment, a resolution in ns, a project id, a layout's size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Capability {
    /// Yes, no or unknown.
    pub state: Support,
    /// How it was found, or why it is not known.
    pub reason: String,
    /// The number behind it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
}

impl Capability {
    fn new(state: Support, reason: impl Into<String>) -> Capability {
        Capability {
            state,
            reason: reason.into(),
            value: None,
        }
    }

    fn yes(reason: impl Into<String>) -> Capability {
        Capability::new(Support::Yes, reason)
    }

    fn no(reason: impl Into<String>) -> Capability {
        Capability::new(Support::No, reason)
    }

    fn unknown(reason: impl Into<String>) -> Capability {
        Capability::new(Support::Unknown, reason)
    }

    fn with(mut self, v: u64) -> Capability {
        self.value = Some(v);
        self
    }
}

/// What psync cares about in a file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Clones (`FICLONE`): shared extents instead of copied data.
    pub reflink: Capability,
    /// `copy_file_range` offloaded (a clone, a server-side copy) rather
    /// than copied by the kernel through the page cache.
    pub copy_file_range: Capability,
    /// Direct I/O with a reported alignment (statx `STATX_DIOALIGN`, Linux
    /// 6.1): where psync writes the chunks of large files with `O_DIRECT`.
    pub direct_io: Capability,
    /// `user.*` extended attributes.
    pub xattrs: Capability,
    /// POSIX ACLs.
    pub acls: Capability,
    /// Holes found with `SEEK_HOLE`/`SEEK_DATA`.
    pub sparse: Capability,
    /// Sub-second timestamps; the value is the resolution in ns.
    pub timestamps: Capability,
    /// Project ids (`FS_IOC_FSGETXATTR`); the value is the path's.
    pub project_ids: Capability,
    /// Lustre layouts (`lustre.lov`); the value is the path's layout size.
    pub lustre_layout: Capability,
}

impl Capabilities {
    /// Each capability with its name, in a fixed order.
    pub fn list(&self) -> [(&'static str, &Capability); 9] {
        [
            ("reflink", &self.reflink),
            ("copy_file_range", &self.copy_file_range),
            ("direct_io", &self.direct_io),
            ("xattrs", &self.xattrs),
            ("acls", &self.acls),
            ("sparse", &self.sparse),
            ("timestamps", &self.timestamps),
            ("project_ids", &self.project_ids),
            ("lustre_layout", &self.lustre_layout),
        ]
    }
}

/// How to probe.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ProbeOptions {
    /// Also try each capability on two files of the probe's own in the
    /// path's directory (the path's parent for a non-directory), which
    /// needs write access there. Default: false: nothing is written.
    pub write_test: bool,
}

impl ProbeOptions {
    /// Options with `write_test` set as given.
    pub fn write_test(yes: bool) -> ProbeOptions {
        ProbeOptions { write_test: yes }
    }
}

/// What one path's file system is and can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FsProbe {
    /// The path as given.
    #[serde(serialize_with = "lossy")]
    pub path: PathBuf,
    /// The path resolved (absolute, symlinks followed).
    #[serde(serialize_with = "lossy")]
    pub resolved: PathBuf,
    /// The file system's type: the mount's when found (`ext4`,
    /// `fuse.sshfs`), else the magic's name, else `unknown`.
    pub fs_type: String,
    /// The `statfs` magic.
    pub magic: u64,
    /// The magic's name, when known ([`fs_name`]).
    pub magic_name: Option<String>,
    /// The mount holding the path, when found in mountinfo.
    pub mount: Option<MountInfo>,
    /// Whether the capabilities were also tried by writing.
    pub write_test: bool,
    /// The capabilities.
    pub capabilities: Capabilities,
}

impl FsProbe {
    /// Probes the file system holding `path` (followed if a symlink).
    ///
    /// # Errors
    /// The path cannot be resolved or `statfs`ed; with `write_test`, no
    /// file can be made in its directory.
    pub fn probe(path: &Path, opts: ProbeOptions) -> io::Result<FsProbe> {
        let resolved = std::fs::canonicalize(path)?;
        let magic = fs_magic_of(&resolved)?;
        let meta = std::fs::metadata(&resolved)?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| parse_mountinfo(&t))
            .unwrap_or_default();
        let mount = mount_of(&resolved, &mounts).cloned();
        let magic_name = fs_name(magic).map(str::to_string);
        let fs_type = mount
            .as_ref()
            .map(|m| m.fs_type.clone())
            .or_else(|| magic_name.clone())
            .unwrap_or_else(|| "unknown".into());
        let at = Site {
            path: &resolved,
            meta: &meta,
            magic,
            fs_type: &fs_type,
            mount: mount.as_ref(),
            file: open_probed(&resolved),
        };
        let capabilities = if opts.write_test {
            let dir = if meta.is_dir() {
                resolved.clone()
            } else {
                resolved.parent().unwrap_or(Path::new("/")).to_path_buf()
            };
            let scratch = Scratch::new(&dir)?;
            at.written(&scratch)
        } else {
            at.read_only()
        };
        Ok(FsProbe {
            path: path.to_path_buf(),
            resolved,
            fs_type,
            magic,
            magic_name,
            mount,
            write_test: opts.write_test,
            capabilities,
        })
    }
}

/// The probed path and what is known of it.
struct Site<'a> {
    path: &'a Path,
    meta: &'a std::fs::Metadata,
    magic: u64,
    fs_type: &'a str,
    mount: Option<&'a MountInfo>,
    file: Option<File>,
}

/// Local file systems that keep neither shared extents nor an offloaded
/// copy: `copy_file_range` copies through the page cache there.
const NO_CLONES: &[u64] = &[
    magic::EXT4,
    magic::TMPFS,
    magic::LUSTRE,
    magic::GPFS,
    magic::BEEGFS,
    magic::CEPHFS,
    0xF2F5_2010, // f2fs
    0x8584_58F6, // ramfs
    0x4D44,      // vfat
    0x2011_BAB0, // exfat
];

/// File systems with `SEEK_HOLE`/`SEEK_DATA` of their own.
const SEEKS_HOLES: &[u64] = &[
    magic::EXT4,
    magic::XFS,
    magic::BTRFS,
    magic::TMPFS,
    magic::ZFS,
    0xCA45_1A4E, // bcachefs
    0xF2F5_2010, // f2fs
    0x7461_636F, // ocfs2
];

impl Site<'_> {
    /// Every capability without writing anything.
    fn read_only(&self) -> Capabilities {
        let sample = self.sample();
        Capabilities {
            reflink: self.reflink_by_type(),
            copy_file_range: self.copy_range_by_type(),
            direct_io: match self.dio_file(&sample) {
                Some(f) => dio_align(&f),
                None => Capability::unknown(
                    "no regular file here to ask (statx STATX_DIOALIGN); --write-test makes one",
                ),
            },
            xattrs: self.xattrs_read(),
            acls: self.acls_read(),
            sparse: self.sparse_read(&sample),
            timestamps: self.timestamps_read(&sample),
            project_ids: self.project_id(),
            lustre_layout: self.lustre_layout(),
        }
    }

    /// Every capability, tried on the scratch files where writing tells more.
    fn written(&self, s: &Scratch) -> Capabilities {
        let mut c = self.read_only();
        c.reflink = match ioctl_clone(&s.a, &s.b) {
            Ok(()) => Capability::yes("FICLONE between two files of the probe succeeded"),
            Err(e) => Capability::no(format!("FICLONE between two files of the probe: {e}")),
        };
        c.direct_io = dio_align(&s.a);
        c.xattrs = match rustix::fs::fsetxattr(
            &s.b,
            "user.psync.probe",
            b"1",
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) => Capability::yes("set user.psync.probe on a file of the probe"),
            Err(e) => Capability::no(format!("setting user.psync.probe: {}", io::Error::from(e))),
        };
        c.sparse = match rustix::fs::seek(&s.a, rustix::fs::SeekFrom::Data(0)) {
            Ok(off) if off >= Scratch::HOLE => {
                Capability::yes("SEEK_DATA skipped the hole of a file of the probe")
            }
            Ok(_) => Capability::no("SEEK_DATA found data in a hole: holes are not reported"),
            Err(e) => Capability::no(format!("SEEK_DATA: {}", io::Error::from(e))),
        };
        c.timestamps = match crate::builder::measure_resolution(&s.b) {
            Some(0) => {
                Capability::yes("nanoseconds kept (set and read back a file's mtime)").with(1)
            }
            Some(ns) => Capability::new(
                if ns < 1_000_000_000 {
                    Support::Yes
                } else {
                    Support::No
                },
                format!(
                    "{} kept (set and read back a file's mtime)",
                    duration_text(ns)
                ),
            )
            .with(ns),
            None => Capability::unknown("setting a file's mtime failed"),
        };
        // Tried wherever it may be kept; a "yes" stays when only root may
        // set one.
        let tried = project_id_set(&s.b);
        if !(c.project_ids.state == Support::Yes && tried.state == Support::Unknown) {
            c.project_ids = tried;
        }
        c
    }

    /// Up to 64 entries of the directory (or the file itself), for what
    /// files already there tell.
    fn sample(&self) -> Vec<(PathBuf, std::fs::Metadata)> {
        let mut v = vec![(self.path.to_path_buf(), self.meta.clone())];
        if self.meta.is_dir()
            && let Ok(rd) = std::fs::read_dir(self.path)
        {
            v.extend(
                rd.flatten()
                    .take(64)
                    .filter_map(|e| Some((e.path(), e.metadata().ok()?))),
            );
        }
        v
    }

    /// A regular file to ask its direct-I/O alignment: the path itself or
    /// one in the directory (opened only for `statx`).
    fn dio_file(&self, sample: &[(PathBuf, std::fs::Metadata)]) -> Option<File> {
        let (p, _) = sample.iter().find(|(_, m)| m.is_file())?;
        open_listed(p)
    }

    fn reflink_by_type(&self) -> Capability {
        let t = self.fs_type;
        match self.magic {
            magic::BTRFS => Capability::yes("btrfs always shares extents"),
            0xCA45_1A4E | 0x7461_636F => Capability::yes(format!("{t} clones files")),
            magic::XFS => match self.file.as_ref().map(xfs_reflink) {
                Some(Ok(true)) => Capability::yes("XFS made with reflink=1 (its geometry says)"),
                Some(Ok(false)) => Capability::no("XFS made with reflink=0 (its geometry says)"),
                Some(Err(e)) => Capability::unknown(format!("XFS geometry: {e}")),
                None => Capability::unknown("XFS geometry: the path cannot be opened"),
            },
            magic::ZFS => Capability::unknown(
                "OpenZFS 2.2 clones blocks when zfs_bclone_enabled is set; --write-test tries",
            ),
            magic::NFS => Capability::unknown(
                "NFS 4.2 clones when the server's file system does; --write-test tries",
            ),
            m if NO_CLONES.contains(&m) => Capability::no(format!("{t} has no shared extents")),
            _ => Capability::unknown(format!("not known for {t}; --write-test tries")),
        }
    }

    fn copy_range_by_type(&self) -> Capability {
        let t = self.fs_type;
        match self.magic {
            magic::BTRFS => Capability::yes("btrfs clones the range"),
            magic::XFS => match self.file.as_ref().map(xfs_reflink) {
                Some(Ok(true)) => Capability::yes("XFS with reflink=1 clones the range"),
                Some(Ok(false)) => {
                    Capability::no("XFS without reflink: the kernel copies through the page cache")
                }
                _ => Capability::unknown("XFS: reflink unknown"),
            },
            magic::NFS => {
                let v42 = self.mount.is_some_and(|m| m.has_option("vers=4.2"));
                Capability::unknown(if v42 {
                    "NFS 4.2: a server-side copy when the server offers one"
                } else {
                    "NFS before 4.2 has no server-side copy (or the version is not known)"
                })
            }
            0xFF53_4D42 | 0xFE53_4D42 => Capability::yes("SMB3 server-side copy"),
            magic::CEPHFS if self.mount.is_some_and(|m| m.has_option("copyfrom")) => {
                Capability::yes("CephFS mounted with copyfrom: the OSDs copy")
            }
            magic::FUSE => Capability::unknown("offloaded when the FUSE daemon implements it"),
            magic::OVERLAYFS => Capability::unknown("the upper file system decides"),
            m if NO_CLONES.contains(&m) => Capability::no(format!(
                "{t}: the kernel copies through the page cache (no offload, no user-space copy)"
            )),
            _ => Capability::unknown(format!("not known for {t}")),
        }
    }

    fn xattrs_read(&self) -> Capability {
        if self.mount.is_some_and(|m| m.has_option("nouser_xattr")) {
            return Capability::no("mounted with nouser_xattr");
        }
        match getxattr_len(self.path, "user.psync.probe") {
            Ok(_) | Err(Errno(libc::ENODATA)) => {
                Capability::yes("reading a user.* xattr is answered (no such name, or its value)")
            }
            Err(Errno(libc::EOPNOTSUPP)) => Capability::no("user.* xattrs are not supported here"),
            Err(e) => Capability::unknown(format!("reading a user.* xattr: {}", e.io())),
        }
    }

    fn acls_read(&self) -> Capability {
        if self.mount.is_some_and(|m| m.has_option("noacl")) {
            return Capability::no("mounted with noacl");
        }
        match getxattr_len(self.path, "system.posix_acl_access") {
            Ok(_) => Capability::yes("system.posix_acl_access is readable (this path has an ACL)"),
            Err(Errno(libc::ENODATA)) => {
                Capability::yes("system.posix_acl_access is answered (this path has none)")
            }
            Err(Errno(libc::EOPNOTSUPP)) => Capability::no("POSIX ACLs are not supported here"),
            Err(e) => Capability::unknown(format!("reading system.posix_acl_access: {}", e.io())),
        }
    }

    fn sparse_read(&self, sample: &[(PathBuf, std::fs::Metadata)]) -> Capability {
        let holed = sample
            .iter()
            .filter(|(_, m)| m.is_file())
            .find_map(|(p, m)| {
                let f = open_listed(p)?;
                let hole = rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(0)).ok()?;
                (hole < m.size()).then(|| p.clone())
            });
        let t = self.fs_type;
        if let Some(p) = holed {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            return Capability::yes(format!("SEEK_HOLE found a hole in {name}"));
        }
        match self.magic {
            magic::NFS if self.mount.is_some_and(|m| m.has_option("vers=4.2")) => {
                Capability::yes("NFS 4.2 has SEEK_HOLE/SEEK_DATA")
            }
            magic::NFS => Capability::unknown("NFS before 4.2 reports no holes"),
            m if SEEKS_HOLES.contains(&m) => {
                Capability::yes(format!("{t} has SEEK_HOLE/SEEK_DATA"))
            }
            _ => Capability::unknown(format!("not known for {t}; --write-test tries")),
        }
    }

    fn timestamps_read(&self, sample: &[(PathBuf, std::fs::Metadata)]) -> Capability {
        let ns: Vec<u64> = sample
            .iter()
            .flat_map(|(_, m)| [m.mtime_nsec(), m.ctime_nsec()])
            .filter_map(|n| u64::try_from(n).ok())
            .filter(|n| *n != 0)
            .collect();
        if !ns.is_empty() {
            // The coarsest power of ten that divides every fraction seen.
            let res = (0..9)
                .map(|k| 10u64.pow(k))
                .take_while(|p| ns.iter().all(|n| n % p == 0))
                .last()
                .unwrap_or(1);
            return Capability::yes(format!(
                "sub-second timestamps here ({} or finer, from {} times seen)",
                duration_text(res),
                ns.len()
            ))
            .with(res);
        }
        match self.magic {
            0x4D44 => Capability::no("FAT keeps 2 s").with(2_000_000_000),
            _ => Capability::unknown("no sub-second timestamp seen here; --write-test measures it"),
        }
    }

    fn project_id(&self) -> Capability {
        let Some(f) = &self.file else {
            return Capability::unknown("the path cannot be opened for FS_IOC_FSGETXATTR");
        };
        // FS_IOC_FSGETXATTR answers (with 0) where no project id is kept:
        // tmpfs, btrfs, ext4 without its `project` feature. Only an id
        // seen, or XFS, which keeps one on every inode, says yes.
        match fsgetxattr(f) {
            Ok(x) if x.projid() != 0 => Capability::yes(format!("project id {} here", x.projid()))
                .with(u64::from(x.projid())),
            Ok(_) if [magic::XFS, magic::LUSTRE].contains(&self.magic) => Capability::yes(format!(
                "{} keeps a project id on every inode (0 here)",
                self.fs_type
            ))
            .with(0),
            Ok(_) if [magic::TMPFS, magic::BTRFS].contains(&self.magic) => Capability::no(format!(
                "{} keeps no project ids (FS_IOC_FSGETXATTR answers 0; setting one fails)",
                self.fs_type
            )),
            Ok(_) => Capability::unknown(
                "FS_IOC_FSGETXATTR answers project id 0, as it does where none is kept \
                 (ext4 without the project feature); --write-test tries setting one",
            ),
            Err(e) => Capability::no(format!("FS_IOC_FSGETXATTR: {e}")),
        }
    }

    fn lustre_layout(&self) -> Capability {
        match getxattr_len(self.path, "lustre.lov") {
            Ok(n) => Capability::yes(format!("lustre.lov: a layout of {n} bytes")).with(n as u64),
            Err(Errno(libc::ENODATA)) if self.magic == magic::LUSTRE => {
                Capability::yes("Lustre, no layout set on this path (the file system default)")
            }
            Err(Errno(libc::EOPNOTSUPP | libc::ENODATA)) => {
                Capability::no(format!("no lustre.* xattrs on {}", self.fs_type))
            }
            Err(e) => Capability::unknown(format!("reading lustre.lov: {}", e.io())),
        }
    }
}

/// Two files of the probe's own, unnamed or already unlinked: `a` has a
/// hole of [`Scratch::HOLE`] bytes then 64 KiB of data, `b` is empty.
struct Scratch {
    a: File,
    b: File,
}

impl Scratch {
    const HOLE: u64 = 1 << 20;

    fn new(dir: &Path) -> io::Result<Scratch> {
        let d = crate::fs::Dir::open_root(dir)?;
        let a = scratch_file(&d)?;
        let b = scratch_file(&d)?;
        rustix::io::pwrite(&a, &[0x5a; 64 << 10], Scratch::HOLE)?;
        Ok(Scratch { a, b })
    }
}

/// A file no one else can reach: `O_TMPFILE`, else a private name
/// unlinked as soon as it is open.
fn scratch_file(d: &crate::fs::Dir) -> io::Result<File> {
    if let Some(f) = d.create_unnamed(0o600)? {
        return Ok(f);
    }
    let name = format!("{}{:016x}.probe", crate::TEMP_PREFIX, crate::random_u64());
    let f = d.create_excl(name.as_bytes())?;
    d.unlink(name.as_bytes())?;
    Ok(f)
}

/// Opens the probed path `p` (resolved) for reading its metadata, if it
/// is a directory or a regular file: without following a symlink anywhere
/// in it (`RESOLVE_NO_SYMLINKS`, else the last one only) nor waiting on a
/// fifo, so a user who swaps one in after `p` was resolved (root probing
/// their tree) gets no open of a device or fifo it points to.
fn open_probed(p: &Path) -> Option<File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let flags = flags | OFlags::NOFOLLOW;
    let cwd = rustix::fs::CWD;
    let fd = match rustix::fs::openat2(cwd, p, flags, Mode::empty(), ResolveFlags::NO_SYMLINKS) {
        Err(rustix::io::Errno::NOSYS) => rustix::fs::openat(cwd, p, flags, Mode::empty()),
        r => r,
    };
    let f = File::from(fd.ok()?);
    f.metadata()
        .is_ok_and(|m| m.is_dir() || m.is_file())
        .then_some(f)
}

/// Opens `p`, listed as a regular file, for reading its metadata: not
/// following a symlink nor waiting on a fifo swapped in since.
fn open_listed(p: &Path) -> Option<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(p)
        .ok()
        .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
}

/// `1 ns`, `10 µs`, `1 s`, `2 s`.
fn duration_text(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000_000 && n % 1_000_000_000 == 0 => format!("{} s", n / 1_000_000_000),
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{} ms", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{} µs", n / 1_000),
        n => format!("{n} ns"),
    }
}

/// The direct-I/O alignment `statx` reports for `f`.
fn dio_align(f: &File) -> Capability {
    use rustix::fs::{AtFlags, StatxFlags};
    match rustix::fs::statx(f, c"", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN) {
        Ok(st) if st.stx_mask & StatxFlags::DIOALIGN.bits() == 0 => Capability::unknown(
            "no STATX_DIOALIGN answer (Linux before 6.1, or the file system does not say): \
             psync writes chunks through the page cache here",
        ),
        Ok(st) if st.stx_dio_offset_align == 0 => {
            Capability::no("statx: no direct I/O on this file system")
        }
        Ok(st) => Capability::yes(format!(
            "statx: offsets aligned to {} bytes, memory to {}",
            st.stx_dio_offset_align, st.stx_dio_mem_align
        ))
        .with(u64::from(st.stx_dio_offset_align)),
        Err(e) => Capability::unknown(format!("statx: {}", io::Error::from(e))),
    }
}

/// An errno from a raw call.
#[derive(Debug, Clone, Copy)]
struct Errno(i32);

impl Errno {
    fn io(self) -> io::Error {
        io::Error::from_raw_os_error(self.0)
    }
}

/// The length of xattr `name` of `path` (followed).
fn getxattr_len(path: &Path, name: &str) -> Result<usize, Errno> {
    rustix::fs::getxattr(path, name, &mut [0u8; 0][..]).map_err(|e| Errno(e.raw_os_error()))
}

/// `_IOR(ty, nr, size)`.
const fn ior(ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    (2 << 30) | ((size as libc::c_ulong) << 16) | ((ty as libc::c_ulong) << 8) | nr as libc::c_ulong
}

/// `_IOW(ty, nr, size)`.
const fn iow(ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    (1 << 30) | ((size as libc::c_ulong) << 16) | ((ty as libc::c_ulong) << 8) | nr as libc::c_ulong
}

/// `FICLONE`: `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = iow(0x94, 9, size_of::<libc::c_int>());

/// Flags and project id of the probe's open file or directory `f`
/// (`crate::fsattr`, as a sync reads them); an error where the file
/// system has none.
fn fsgetxattr(f: &File) -> io::Result<crate::fsattr::FsAttr> {
    use std::os::fd::AsFd;
    crate::fsattr::get(crate::xattr::Node::Fd(f.as_fd()))?
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOTTY))
}

/// Whether a project id can be set on `f` (a file of the probe's own):
/// sets its id one above the current one.
fn project_id_set(f: &File) -> Capability {
    use std::os::fd::AsFd;
    let x = match fsgetxattr(f) {
        Ok(x) => x,
        Err(e) => return Capability::no(format!("FS_IOC_FSGETXATTR: {e}")),
    };
    let id = x.projid().wrapping_add(1).max(1);
    let set = crate::fsattr::set_projid(crate::xattr::Node::Fd(f.as_fd()), id);
    let refused = match set {
        Ok(r) => r.dropped.into_iter().find_map(|d| match d {
            crate::fsattr::Dropped::ProjectId(_, e) => Some(e),
            crate::fsattr::Dropped::Flags(..) => None,
        }),
        Err(e) => Some(e),
    };
    let Some(e) = refused else {
        return Capability::yes("set a project id on a file of the probe").with(u64::from(id));
    };
    match e.raw_os_error() {
        Some(libc::EPERM) => Capability::unknown(format!(
            "FS_IOC_FSGETXATTR works; setting a project id needs root ({e})"
        )),
        _ => Capability::no(format!("FS_IOC_FSSETXATTR of a project id: {e}")),
    }
}

fn ioctl_clone(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its argument.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the XFS holding `f` was made with reflink: the flags of its
/// geometry (`XFS_IOC_FSGEOMETRY`, falling back to the v4 call of older
/// kernels; both have the flags at byte 92).
fn xfs_reflink(f: &File) -> io::Result<bool> {
    const FLAGS_AT: usize = 92;
    const REFLINK: u32 = 1 << 20;
    let mut geo = [0u8; 256];
    for (nr, size) in [(126u8, 256usize), (124, 112)] {
        // SAFETY: the ioctl writes `size` bytes, at most `geo`'s length.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), ior(b'X', nr, size) as _, geo.as_mut_ptr()) };
        if r == 0 {
            let b: [u8; 4] = geo[FLAGS_AT..FLAGS_AT + 4].try_into().unwrap_or_default();
            return Ok(u32::from_ne_bytes(b) & REFLINK != 0);
        }
    }
    Err(io::Error::last_os_error())
}

fn lossy<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::entry::escape(p.as_os_str().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_have_names() {
        assert_eq!(fs_name(0xEF53), Some("ext2/ext3/ext4"));
        assert_eq!(fs_name(0x5846_5342), Some("xfs"));
        assert_eq!(fs_name(0x9123_683E), Some("btrfs"));
        assert_eq!(fs_name(0x0102_1994), Some("tmpfs"));
        assert_eq!(fs_name(0x0BD0_0BD0), Some("lustre"));
        assert_eq!(fs_name(0x2FC1_2FC1), Some("zfs"));
        assert_eq!(fs_name(0x4750_4653), Some("gpfs"));
        assert_eq!(fs_name(0x00C3_6400), Some("cephfs"));
        assert_eq!(fs_name(0x1234_5678), None);
        assert_eq!(fs_label(magic::LUSTRE), "lustre (0x0bd00bd0)");
        assert_eq!(fs_label(0x1234_5678), "unknown (0x12345678)");
        // One name per magic, one magic per name.
        for (i, (m, n)) in KNOWN.iter().enumerate() {
            for (m2, n2) in &KNOWN[i + 1..] {
                assert!(m != m2 && n != n2, "{n} and {n2}");
            }
        }
    }

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:2 - ext4 /dev/sd\\134a rw,errors=continue
37 35 0:50 / /mnt/tab\\011here rw - tmpfs psync\\040test rw,size=1024k
bad line
38 35 0:51 / /x rw - nfs4 srv:/e
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[1].mount_point, Path::new("/mnt/with space"));
        assert_eq!(m[1].root, Path::new("/mnt1"));
        assert_eq!(m[1].fs_type, "ext4");
        assert_eq!(m[1].source, "/dev/sd\\a");
        assert_eq!(m[1].mount_options, "rw,noatime");
        assert_eq!(m[1].super_options, "rw,errors=continue");
        assert_eq!(m[1].dev, "98:0");
        assert!(m[1].has_option("noatime") && m[1].has_option("errors=continue"));
        assert!(!m[1].has_option("noacl"));
        assert_eq!(m[2].mount_point, Path::new("/mnt/tab\there"));
        assert_eq!(m[2].source, "psync test");
        assert_eq!(m[3].super_options, "", "no super options");
        assert_eq!(unescape("a\\012b\\\\c\\9"), b"a\nb\\\\c\\9");
    }

    #[test]
    fn the_longest_mount_point_wins_and_the_latest_at_one_place() {
        let text = "\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 0:30 / /data rw - xfs /dev/sdb rw
3 1 0:31 / /data/sub rw - btrfs /dev/sdc rw
4 1 0:32 / /data rw - tmpfs over rw
5 1 0:33 / /database rw - zfs pool rw
";
        let m = parse_mountinfo(text);
        let at = |p: &str| mount_of(Path::new(p), &m).map(|m| m.fs_type.as_str());
        assert_eq!(at("/data/x"), Some("tmpfs"), "mounted over the xfs");
        assert_eq!(at("/data/sub/y"), Some("btrfs"));
        assert_eq!(
            at("/data/subway"),
            Some("tmpfs"),
            "by component, not by string"
        );
        assert_eq!(at("/database/z"), Some("zfs"));
        assert_eq!(at("/home"), Some("ext4"));
    }

    #[test]
    fn a_missing_path_is_on_its_nearest_existing_ancestors_file_system() {
        let t = crate::test_dir();
        let here = fs_magic_of(t.path()).unwrap();
        assert_eq!(fs_magic_or_parent(&t.path().join("a/b/c")).unwrap(), here);
        assert_eq!(
            fs_magic_or_parent("/proc/no/such".as_ref()).unwrap(),
            0x9FA0
        );
        let cwd = fs_magic_of(".".as_ref()).unwrap();
        assert_eq!(fs_magic_or_parent("no-such-dir/x".as_ref()).unwrap(), cwd);
    }

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(FICLONE, 0x4004_9409);
        assert_eq!(ior(b'X', 126, 256), 0x8100_587e);
    }

    /// The probed path is opened without following a symlink nor waiting
    /// on a fifo: a user who swaps one in after it was looked at (as
    /// root probes their tree) gets no open of what it points to.
    #[test]
    fn a_symlink_swapped_in_for_the_probed_file_is_not_followed() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, mpsc};
        use std::time::{Duration, Instant};
        let t = crate::test_dir();
        let (x, y, fifo) = (
            t.path().join("x"),
            t.path().join("y"),
            t.path().join("fifo"),
        );
        std::fs::write(&x, b"data").unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::os::unix::fs::symlink(&fifo, &y).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flipper = {
            let (x, y, stop) = (x.clone(), y.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let flags = rustix::fs::RenameFlags::EXCHANGE;
                    let cwd = rustix::fs::CWD;
                    rustix::fs::renameat_with(cwd, &x, cwd, &y, flags).unwrap();
                }
            })
        };
        let (tx, rx) = mpsc::channel();
        let prober = {
            let (x, stop) = (x.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = FsProbe::probe(&x, ProbeOptions::default());
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            })
        };
        let started = Instant::now();
        let mut blocked = false;
        while started.elapsed() < Duration::from_secs(3) {
            if rx.recv_timeout(Duration::from_secs(2)).is_err() {
                blocked = true;
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        // Lets a probe stuck opening the fifo go.
        let _w = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        drop(rx);
        flipper.join().unwrap();
        prober.join().unwrap();
        assert!(
            !blocked,
            "a probe opened the fifo a swapped-in symlink points to"
        );
    }

    #[test]
    fn probing_the_unit_test_directory_writes_nothing_without_write_test() {
        let t = crate::test_dir();
        std::fs::write(t.path().join("f"), b"data").unwrap();
        let before: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        let p = FsProbe::probe(t.path(), ProbeOptions::default()).unwrap();
        assert_eq!(p.magic, fs_magic_of(t.path()).unwrap());
        assert!(p.mount.is_some(), "every path is below some mount");
        assert!(
            p.resolved
                .starts_with(&p.mount.as_ref().unwrap().mount_point)
        );
        let after: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(before, after);
        let w = FsProbe::probe(t.path(), ProbeOptions::write_test(true)).unwrap();
        assert!(w.write_test);
        assert_ne!(w.capabilities.timestamps.state, Support::Unknown, "{w:?}");
        let after: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(before, after, "the write test leaves nothing");
    }
}
