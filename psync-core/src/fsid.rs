//! The identity of a file system as every engine of a run names it
//! (ADR 014).
//!
//! `st_dev` numbers a file system per node, and per mount: an NFS or FUSE
//! mount gets an anonymous device that differs from client to client, a
//! block device's number depends on the order a node found its disks.
//! Nothing another engine must reproduce (hard-link keys, part-file
//! names, the directories' identities in tasks) may carry it. An engine
//! names a file system instead, once per device, by:
//! - the run's roots: the source root's file system, and the target
//!   root's (one name when one file system holds both). Every engine of a
//!   run opens the same roots, so this holds on any file system, NFS and
//!   FUSE included;
//! - `statfs`'s `f_fsid`, for another file system (mounted below a root,
//!   a btrfs subvolume) of a type whose `f_fsid` comes from the file
//!   system's own identity (its UUID, the server's or cluster's), so that
//!   every client reads the same ([`shared_fsid`]);
//! - else this node's `st_dev`: the same for the engines of one node only.
//!
//! Within an engine a device has one id and an id one device: a second
//! device with the `f_fsid` of another (a cloned image, two mounts of one
//! export) is named by its `st_dev`, so that an identity check still tells
//! the two apart (a directory put in place of another, from another file
//! system, with the same inode number).
//!
//! Listings, `stat` and the [`crate::fs`] primitives stay in this node's
//! terms; the engine names a listing's devices right after listing
//! ([`FsIds::name_listing`]), and gives [`crate::Copier::remove`] and
//! [`crate::subtree`] entries in this node's terms again ([`FsIds::local`]).

use crate::entry::{Entry, Name};
use crate::fs::{Dir, Handle};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{PoisonError, RwLock};

/// ext2, ext3 and ext4: `f_fsid` is the file system's UUID, folded.
const EXT4_MAGIC: u64 = 0xEF53;
/// btrfs: the file system's UUID, folded, xor the subvolume's id.
const BTRFS_MAGIC: u64 = 0x9123_683E;
/// NFS: the server's fsid of the export where the client reports it
/// (0 in the kernels whose sources were checked: ADR 014).
const NFS_MAGIC: u64 = 0x6969;
/// Lustre: from the uuid of the file system's first metadata target,
/// the same on every client (as `st_dev` is there).
const LUSTRE_MAGIC: u64 = 0x0BD0_0BD0;
/// CephFS: the cluster's fsid, folded, and the file system's id.
const CEPH_MAGIC: u64 = 0x00C3_6400;

/// A device number that no `stat` reports: what [`FsIds::local`] gives
/// an entry of a file system this engine has not met.
const NO_DEVICE: u64 = u64::MAX;

/// What an id is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Basis {
    /// The file system of the run's source root (and of its target root,
    /// when one file system holds both).
    SrcRoot,
    /// The file system of the run's target root.
    DstRoot,
    /// A file system's `f_fsid`, of a type whose `f_fsid` every client
    /// reads alike ([`shared_fsid`]).
    Shared { magic: u64, fsid: u64 },
    /// This node's device number.
    Device(u64),
}

impl Basis {
    /// The id: a hash of the basis (`salt` tells apart ids taken again
    /// for a device whose first one another device holds).
    pub(crate) fn id(self, salt: u64) -> u64 {
        use std::hash::Hasher as _;
        let (tag, a, b): (&[u8], u64, u64) = match self {
            Basis::SrcRoot => (b"src-root", 0, 0),
            Basis::DstRoot => (b"dst-root", 0, 0),
            Basis::Shared { magic, fsid } => (b"fsid", magic, fsid),
            Basis::Device(dev) => (b"st_dev", dev, 0),
        };
        let mut h = twox_hash::XxHash3_64::new();
        h.write(b"psync file system ");
        h.write(tag);
        for v in [a, b, salt] {
            h.write(&v.to_le_bytes());
        }
        h.finish()
    }
}

/// The `f_fsid` of a file system of type `magic`, when that type derives
/// it from the file system's own identity (so every client of it reads
/// the same value) and it is set. `None` for the others: 0 (FUSE, NFS on
/// older kernels), the device number (xfs: no better than `st_dev`), one
/// made up at each mount (tmpfs, overlayfs) or not known.
pub(crate) fn shared_fsid(magic: u64, fsid: u64) -> Option<u64> {
    (shares_fsid(magic) && fsid != 0).then_some(fsid)
}

/// True for the types of [`shared_fsid`].
fn shares_fsid(magic: u64) -> bool {
    matches!(
        magic,
        EXT4_MAGIC | BTRFS_MAGIC | NFS_MAGIC | LUSTRE_MAGIC | CEPH_MAGIC
    )
}

/// One engine's names of the file systems it has met: device to id, and
/// back (one to one).
#[derive(Debug, Default)]
struct Names {
    by_dev: HashMap<u64, u64>,
    by_id: HashMap<u64, u64>,
}

/// The ids of the file systems an engine has met, by this node's device
/// number: learned with one `fstatfs` of an open directory (or entry) of
/// the device the first time the engine meets it (two for a type with a
/// shared `f_fsid`: rustix reads `f_fsid` through `fstatvfs` only), then
/// looked up. A per-engine cache: what it holds is this node's.
#[derive(Debug)]
pub(crate) struct FsIds {
    names: RwLock<Names>,
}

impl FsIds {
    /// The ids of an engine whose source root is on device `src_root` and
    /// target root (if any) on `dst_root`.
    pub(crate) fn new(src_root: u64, dst_root: Option<u64>) -> FsIds {
        let ids = FsIds {
            names: RwLock::new(Names::default()),
        };
        ids.insert(src_root, Basis::SrcRoot);
        if let Some(dst) = dst_root {
            ids.insert(dst, Basis::DstRoot);
        }
        ids
    }

    /// The id of device `dev`, if this engine has met it.
    pub(crate) fn known(&self, dev: u64) -> Option<u64> {
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
        names.by_dev.get(&dev).copied()
    }

    /// The id of the file system of `fd`, whose status says device `dev`.
    pub(crate) fn of(&self, dev: u64, fd: BorrowedFd<'_>) -> u64 {
        if let Some(id) = self.known(dev) {
            return id;
        }
        // Outside the lock: `statfs` asks the server on NFS.
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
        let shared = match rustix::fs::fstatfs(fd) {
            Ok(st) if shares_fsid(st.f_type as u64) => rustix::fs::fstatvfs(fd)
                .ok()
                .and_then(|v| shared_fsid(st.f_type as u64, v.f_fsid))
                .map(|fsid| Basis::Shared {
                    magic: st.f_type as u64,
                    fsid,
                }),
            _ => None,
        };
        self.insert(dev, shared.unwrap_or(Basis::Device(dev)))
    }

    /// The id of the entry `name` of `dir`, listed on device `dev`: looked
    /// up, or learned through a handle on it when it is still on `dev`.
    /// An entry on another device now (replaced since) gets the id of
    /// `dev` as this node's device, not kept: it matches nothing the
    /// engine learns.
    pub(crate) fn of_at(&self, dir: &Dir, name: &Name, dev: u64) -> u64 {
        if let Some(id) = self.known(dev) {
            return id;
        }
        #[allow(clippy::unnecessary_cast)]
        match dir.handle(name.as_bytes()) {
            Ok(h) if h.stat.st_dev as u64 == dev => self.of(dev, h.as_fd()),
            _ => Basis::Device(dev).id(0),
        }
    }

    /// A directory's identity: its file system's id and its inode.
    pub(crate) fn dir_id(&self, d: &Dir) -> std::io::Result<(u64, u64)> {
        let st = d.fstat()?;
        #[allow(clippy::unnecessary_cast)]
        Ok((self.of(st.st_dev as u64, d.fd()), st.st_ino as u64))
    }

    /// True when the handle holds the inode `e` was listed as (`e` named
    /// by this run's ids).
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn is(&self, h: &Handle, e: &Entry) -> bool {
        h.stat.st_ino as u64 == e.ino && self.of(h.stat.st_dev as u64, h.as_fd()) == e.dev
    }

    /// Names the devices of `entries`, a listing of `dir` in this node's
    /// terms: each entry's `dev` becomes its file system's id. Entries
    /// share their directory's device but for mount roots and btrfs
    /// subvolumes: a device not met yet costs an `fstat` of `dir` and an
    /// `fstatfs` (of `dir`, or of a handle on an entry of that device).
    pub(crate) fn name_listing(&self, dir: &Dir, entries: &mut [Entry]) {
        let mut unknown: Vec<u64> = Vec::new();
        {
            let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
            let mut last = None;
            for e in entries.iter() {
                if Some(e.dev) != last
                    && !names.by_dev.contains_key(&e.dev)
                    && !unknown.contains(&e.dev)
                {
                    unknown.push(e.dev);
                }
                last = Some(e.dev);
            }
        }
        if !unknown.is_empty() {
            #[allow(clippy::unnecessary_cast)]
            let own = dir.fstat().ok().map(|st| st.st_dev as u64);
            for dev in unknown {
                if own == Some(dev) {
                    self.of(dev, dir.fd());
                } else if let Some(e) = entries.iter().find(|e| e.dev == dev) {
                    self.of_at(dir, &e.name, dev);
                }
            }
        }
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
        for e in entries {
            e.dev = match names.by_dev.get(&e.dev) {
                Some(&id) => id,
                None => Basis::Device(e.dev).id(0),
            };
        }
    }

    /// `e` (named by this run's ids) in this node's terms, for what
    /// compares it with `stat` ([`crate::fs::Dir::remove_listed`]): its
    /// `dev` is the device of its file system here, or one that matches
    /// none when this engine has not met it.
    pub(crate) fn local(&self, e: &Entry) -> Entry {
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
        Entry {
            dev: names.by_id.get(&e.dev).copied().unwrap_or(NO_DEVICE),
            ..e.clone()
        }
    }

    /// Gives device `dev` the id of `basis`, or of its device number when
    /// another device holds that one; the id it has if it has one.
    fn insert(&self, dev: u64, basis: Basis) -> u64 {
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = names.by_dev.get(&dev) {
            return id;
        }
        let mut id = basis.id(0);
        let mut salt = 0;
        while names.by_id.contains_key(&id) {
            id = Basis::Device(dev).id(salt);
            salt += 1;
        }
        names.by_dev.insert(dev, id);
        names.by_id.insert(id, dev);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Kind, Time};

    fn entry(name: &str, dev: u64, ino: u64) -> Entry {
        Entry {
            name: Name::from(name),
            kind: Kind::File,
            size: 1 << 30,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: Time::new(1, 2),
            atime: Time::default(),
            ctime: Time::default(),
            nlink: 2,
            dev,
            ino,
            rdev: 0,
            blocks: 0,
            link: None,
            mount_root: false,
            flags: None,
            fs_data: Default::default(),
        }
    }

    /// The file systems of the roots have the same ids on engines that
    /// number them differently (two NFS clients), and so do the keys and
    /// part names made from them; a device number is only the node's.
    #[test]
    fn roots_are_named_alike_whatever_their_device_numbers() {
        let (a, b) = (FsIds::new(0x2d, Some(0x2e)), FsIds::new(0x51, Some(0x77)));
        assert_eq!(a.known(0x2d), b.known(0x51));
        assert_eq!(a.known(0x2e), b.known(0x77));
        assert_ne!(a.known(0x2d), a.known(0x2e), "source and target");
        assert_eq!(a.known(0x2d), Some(Basis::SrcRoot.id(0)));
        // One file system holding both roots: one name, the source's.
        let one = FsIds::new(0x33, Some(0x33));
        assert_eq!(one.known(0x33), Some(Basis::SrcRoot.id(0)));
        // A file listed by each engine: the same hard-link key and part.
        let named = |ids: &FsIds, dev| entry("f", ids.known(dev).unwrap(), 7);
        let (ea, eb) = (named(&a, 0x2d), named(&b, 0x51));
        use crate::engine::ident::{SourceId, part_key};
        let (ia, ib) = (SourceId::inode(&ea), SourceId::inode(&eb));
        assert_eq!(ia.key(), ib.key());
        assert_eq!(part_key(ia, &ea), part_key(ib, &eb));
        // Another file system, named by its device: only this node's.
        assert_ne!(Basis::Device(0x2f).id(0), Basis::Device(0x52).id(0));
    }

    #[test]
    fn shared_fsid_only_for_types_that_derive_it_from_the_file_system() {
        let fsid = 0x3b0c_b8b8_f86b_4ed0;
        for magic in [EXT4_MAGIC, BTRFS_MAGIC, NFS_MAGIC, LUSTRE_MAGIC, CEPH_MAGIC] {
            assert_eq!(shared_fsid(magic, fsid), Some(fsid), "{magic:#x}");
            assert_eq!(shared_fsid(magic, 0), None, "{magic:#x}: unset");
        }
        // xfs (the device), tmpfs (made up per mount), FUSE (0), overlayfs.
        for magic in [0x5846_5342, 0x0102_1994, 0x6573_5546, 0x794C_7630] {
            assert_eq!(shared_fsid(magic, fsid), None, "{magic:#x}");
        }
        // Two devices of one shared fsid (two clients' mounts): one id.
        let shared = Basis::Shared {
            magic: EXT4_MAGIC,
            fsid,
        };
        let (a, b) = (FsIds::new(1, None), FsIds::new(2, None));
        assert_eq!(a.insert(0x700, shared), b.insert(0x702, shared));
    }

    /// A second device with the shared fsid of another (a cloned image
    /// mounted beside it) gets an id of its own: ids stay one per device.
    #[test]
    fn a_second_device_with_the_same_fsid_is_told_apart() {
        let ids = FsIds::new(1, Some(2));
        let shared = Basis::Shared {
            magic: EXT4_MAGIC,
            fsid: 9,
        };
        let first = ids.insert(0x700, shared);
        let second = ids.insert(0x701, shared);
        assert_ne!(first, second);
        assert_eq!(second, Basis::Device(0x701).id(0));
        assert_eq!(ids.insert(0x700, Basis::Device(0x700)), first, "kept");
        let ids_of = |dev| ids.local(&entry("x", ids.known(dev).unwrap(), 1)).dev;
        assert_eq!((ids_of(0x700), ids_of(0x701), ids_of(1)), (0x700, 0x701, 1));
        assert_eq!(ids.local(&entry("x", 12345, 1)).dev, NO_DEVICE);
    }

    /// On a real directory: a listing's entries are named by their
    /// directory's file system (the source root's here), the same id its
    /// handle and identity give, and back in this node's terms.
    #[test]
    fn a_listing_is_named_by_its_directory_file_system() {
        let t = crate::test_dir();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        let root = Dir::open_root(t.path()).unwrap();
        #[allow(clippy::unnecessary_cast)]
        let dev = root.fstat().unwrap().st_dev as u64;
        let other = FsIds::new(dev ^ 1, None);
        let mut listing = root.list().unwrap().entries;
        let raw = listing.clone();
        other.name_listing(&root, &mut listing);
        let id = other.known(dev).expect("learned");
        assert!(listing.iter().all(|e| e.dev == id), "{listing:?}");
        assert_eq!(other.dir_id(&root).unwrap().0, id);
        let f = listing.iter().find(|e| e.name.as_bytes() == b"f").unwrap();
        assert!(other.is(&root.handle(b"f").unwrap(), f));
        assert!(!other.is(&root.handle(b"d").unwrap(), f));
        let back: Vec<Entry> = listing.iter().map(|e| other.local(e)).collect();
        assert_eq!(back, raw);
        // As the root's, its name is the run's on any node.
        let ids = FsIds::new(dev, None);
        let mut again = raw.clone();
        ids.name_listing(&root, &mut again);
        assert!(again.iter().all(|e| e.dev == Basis::SrcRoot.id(0)));
    }
}
